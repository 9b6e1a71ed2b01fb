//! The parts of a database schema (RFC 7047 section 3.2) a client needs:
//! every column's type, because a `modify` in update2/update3 means
//! "replace" for a column holding at most one value and "symmetric
//! difference" for a set or map, and the JSON alone cannot tell a
//! one-element set diff from a new scalar value.
use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AtomicType {
    Integer,
    Real,
    Boolean,
    String,
    Uuid,
}

impl AtomicType {
    fn parse(s: &str) -> Option<AtomicType> {
        Some(match s {
            "integer" => AtomicType::Integer,
            "real" => AtomicType::Real,
            "boolean" => AtomicType::Boolean,
            "string" => AtomicType::String,
            "uuid" => AtomicType::Uuid,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            AtomicType::Integer => "integer",
            AtomicType::Real => "real",
            AtomicType::Boolean => "boolean",
            AtomicType::String => "string",
            AtomicType::Uuid => "uuid",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefType {
    Strong,
    Weak,
}

/// The type of a column's keys or values. Constraints (`enum`,
/// `minInteger`, ...) are the server's to enforce and are not kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseType {
    pub atomic: AtomicType,
    pub ref_table: Option<String>,
    pub ref_type: RefType,
}

/// A column's type: a set of `min..=max` keys, or a map when `value` is set.
/// `max` is `usize::MAX` for "unlimited".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnType {
    pub key: BaseType,
    pub value: Option<BaseType>,
    pub min: usize,
    pub max: usize,
}

impl ColumnType {
    pub fn is_map(&self) -> bool {
        self.value.is_some()
    }

    /// More than one element possible: a `modify` carries a diff, not the
    /// new value (ovsdb-server's `ovsdb_type_is_composite`).
    pub fn is_composite(&self) -> bool {
        self.max > 1
    }

    /// Exactly one element, no value: an ordinary column.
    pub fn is_scalar(&self) -> bool {
        self.value.is_none() && self.min == 1 && self.max == 1
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSchema {
    pub columns: BTreeMap<String, ColumnType>,
    pub is_root: bool,
    pub indexes: Vec<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DatabaseSchema {
    pub name: String,
    pub version: Option<String>,
    pub tables: BTreeMap<String, TableSchema>,
    /// The schema as the server sent it.
    pub json: Value,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("schema {place}: {reason}")]
pub struct SchemaError {
    pub place: String,
    pub reason: String,
}

fn err<T>(place: impl Into<String>, reason: impl Into<String>) -> Result<T, SchemaError> {
    Err(SchemaError { place: place.into(), reason: reason.into() })
}

impl DatabaseSchema {
    pub fn from_json(json: &Value) -> Result<DatabaseSchema, SchemaError> {
        let Some(obj) = json.as_object() else { return err("", "not a JSON object") };
        let Some(name) = obj.get("name").and_then(Value::as_str) else {
            return err("", "missing \"name\" string");
        };
        let version = obj.get("version").and_then(Value::as_str).map(str::to_owned);
        let Some(tables_json) = obj.get("tables").and_then(Value::as_object) else {
            return err(name, "missing \"tables\" object");
        };
        let mut tables = BTreeMap::new();
        for (tname, t) in tables_json {
            let place = format!("{name} table {tname}");
            tables.insert(tname.clone(), TableSchema::from_json(&place, t)?);
        }
        Ok(DatabaseSchema { name: name.to_owned(), version, tables, json: json.clone() })
    }

    pub fn table(&self, name: &str) -> Option<&TableSchema> {
        self.tables.get(name)
    }
}

impl TableSchema {
    fn from_json(place: &str, json: &Value) -> Result<TableSchema, SchemaError> {
        let Some(obj) = json.as_object() else { return err(place, "not a JSON object") };
        let Some(cols) = obj.get("columns").and_then(Value::as_object) else {
            return err(place, "missing \"columns\" object");
        };
        let mut columns = BTreeMap::new();
        for (cname, c) in cols {
            let place = format!("{place} column {cname}");
            let Some(ty) = c.get("type") else { return err(place, "missing \"type\"") };
            columns.insert(cname.clone(), ColumnType::from_json(&place, ty)?);
        }
        let is_root = obj.get("isRoot").and_then(Value::as_bool).unwrap_or(false);
        let mut indexes = Vec::new();
        if let Some(list) = obj.get("indexes").and_then(Value::as_array) {
            for index in list {
                let cols = index.as_array().map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_owned)).collect());
                match cols {
                    Some(cols) => indexes.push(cols),
                    None => return err(place, "an index is not an array of column names"),
                }
            }
        }
        Ok(TableSchema { columns, is_root, indexes })
    }
}

impl ColumnType {
    pub fn from_json(place: &str, json: &Value) -> Result<ColumnType, SchemaError> {
        if let Some(s) = json.as_str() {
            let key = BaseType::from_json(place, json).or_else(|_| err(place, format!("unknown atomic type {s:?}")))?;
            return Ok(ColumnType { key, value: None, min: 1, max: 1 });
        }
        let Some(obj) = json.as_object() else { return err(place, "type is neither a string nor an object") };
        let Some(key) = obj.get("key") else { return err(place, "type has no \"key\"") };
        let key = BaseType::from_json(place, key)?;
        let value = obj.get("value").map(|v| BaseType::from_json(place, v)).transpose()?;
        let min = match obj.get("min") {
            None => 1,
            Some(v) => match v.as_u64() {
                Some(n @ 0..=1) => n as usize,
                _ => return err(place, format!("\"min\" must be 0 or 1, not {v}")),
            },
        };
        let max = match obj.get("max") {
            None => 1,
            Some(Value::String(s)) if s == "unlimited" => usize::MAX,
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 => usize::try_from(n).unwrap_or(usize::MAX),
                _ => return err(place, format!("\"max\" must be a positive integer or \"unlimited\", not {v}")),
            },
        };
        if min > max {
            return err(place, "\"min\" is larger than \"max\"");
        }
        Ok(ColumnType { key, value, min, max })
    }
}

impl BaseType {
    fn from_json(place: &str, json: &Value) -> Result<BaseType, SchemaError> {
        let (ty, obj) = match json {
            Value::String(s) => (s.as_str(), None),
            Value::Object(o) => match o.get("type").and_then(Value::as_str) {
                Some(t) => (t, Some(o)),
                None => return err(place, "base type has no \"type\" string"),
            },
            _ => return err(place, "base type is neither a string nor an object"),
        };
        let Some(atomic) = AtomicType::parse(ty) else { return err(place, format!("unknown atomic type {ty:?}")) };
        let ref_table = obj.and_then(|o| o.get("refTable")).and_then(Value::as_str).map(str::to_owned);
        let ref_type = match obj.and_then(|o| o.get("refType")).and_then(Value::as_str) {
            Some("weak") => RefType::Weak,
            _ => RefType::Strong,
        };
        Ok(BaseType { atomic, ref_table, ref_type })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_column_types() {
        let s = DatabaseSchema::from_json(&json!({
            "name": "T", "version": "1.0.0",
            "tables": {"A": {"isRoot": true, "indexes": [["name"]], "columns": {
                "name": {"type": "string"},
                "tag": {"type": {"key": {"type": "integer", "minInteger": 1}, "min": 0, "max": 1}},
                "macs": {"type": {"key": "string", "min": 0, "max": "unlimited"}},
                "ext": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
                "peer": {"type": {"key": {"type": "uuid", "refTable": "A", "refType": "weak"}, "min": 0, "max": 1}}
            }}}
        }))
        .unwrap();
        let a = s.table("A").unwrap();
        assert!(a.is_root);
        assert_eq!(a.indexes, vec![vec!["name".to_owned()]]);
        assert!(a.columns["name"].is_scalar());
        let tag = &a.columns["tag"];
        assert!(!tag.is_scalar() && !tag.is_composite() && (tag.min, tag.max) == (0, 1));
        assert!(a.columns["macs"].is_composite() && a.columns["macs"].max == usize::MAX);
        assert!(a.columns["ext"].is_map());
        assert_eq!(a.columns["peer"].key.ref_type, RefType::Weak);
        assert_eq!(a.columns["peer"].key.ref_table.as_deref(), Some("A"));
    }

    #[test]
    fn errors_name_table_and_column() {
        let e = DatabaseSchema::from_json(&json!({
            "name": "T", "tables": {"A": {"columns": {"x": {"type": {"key": "integer", "max": 0}}}}}
        }))
        .unwrap_err();
        assert_eq!(e.place, "T table A column x");
        let e = DatabaseSchema::from_json(&json!({
            "name": "T", "tables": {"A": {"columns": {"y": {"type": "float"}}}}
        }))
        .unwrap_err();
        assert!(e.to_string().contains("T table A column y") && e.to_string().contains("float"), "{e}");
    }

    #[test]
    fn parses_the_ovn_southbound_schema_when_installed() {
        let Ok(text) = std::fs::read_to_string("/usr/share/ovn/ovn-sb.ovsschema") else { return };
        let s = DatabaseSchema::from_json(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(s.name, "OVN_Southbound");
        let encap = s.table("Encap").unwrap();
        assert!(encap.indexes.contains(&vec!["type".to_owned(), "ip".to_owned()]));
        assert!(s.table("Chassis").unwrap().columns["other_config"].is_map());
    }
}
