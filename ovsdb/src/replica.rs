//! The client's copy of the monitored rows, kept up to date from monitor
//! replies and update notifications: `<table-updates>` of `monitor`
//! (RFC 7047 4.1.6, `old`/`new`) and `<table-updates2>` of `monitor_cond`
//! and `monitor_cond_since` (ovsdb-server(7) 4.1.14, `initial`, `insert`,
//! `modify` with diffs, `delete`).
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    sync::Arc,
};

use serde_json::{Map, Value};

use crate::{
    datum::Datum,
    schema::{DatabaseSchema, TableSchema},
    Uuid,
};

/// A row: column name to value. Every monitored column is present (the
/// server leaves default values out; they are filled in).
pub type Row = BTreeMap<String, Datum>;

/// A table's rows by UUID.
pub type TableRows = BTreeMap<Uuid, Arc<Row>>;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Replica {
    tables: BTreeMap<String, TableRows>,
}

/// One row's change: `old` is `None` for an insert, `new` is `None` for a
/// delete.
#[derive(Clone, Debug, PartialEq)]
pub struct RowChange {
    pub table: String,
    pub uuid: Uuid,
    pub old: Option<Arc<Row>>,
    pub new: Option<Arc<Row>>,
}

/// The notification format being applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateFormat {
    /// `monitor` / `update`: `{"old": row, "new": row}`.
    Update,
    /// `monitor_cond` / `update2` and `monitor_cond_since` / `update3`.
    Update2,
}

/// An update that cannot be applied. The replica is left as it was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct UpdateError {
    pub table: Option<String>,
    pub uuid: Option<Uuid>,
    pub column: Option<String>,
    pub reason: String,
}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed update")?;
        if let Some(t) = &self.table {
            write!(f, ", table {t}")?;
        }
        if let Some(u) = &self.uuid {
            write!(f, ", row {u}")?;
        }
        if let Some(c) = &self.column {
            write!(f, ", column {c}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Which tables, and which of their columns, a replica holds.
pub type Monitored = BTreeMap<String, Vec<String>>;

struct Ctx<'a> {
    table: &'a str,
    schema: &'a TableSchema,
    columns: &'a [String],
    uuid: Uuid,
}

impl Ctx<'_> {
    fn err(&self, column: Option<&str>, reason: impl Into<String>) -> UpdateError {
        UpdateError {
            table: Some(self.table.to_owned()),
            uuid: Some(self.uuid),
            column: column.map(str::to_owned),
            reason: reason.into(),
        }
    }

    /// A full row from an `initial`/`insert`/`new`, defaults filled in.
    fn full_row(&self, cols: &Map<String, Value>) -> Result<Row, UpdateError> {
        let mut row = Row::new();
        for c in self.columns {
            if let Some(ty) = self.schema.columns.get(c) {
                row.insert(c.clone(), Datum::default_for(ty));
            }
        }
        self.overwrite(&mut row, cols)?;
        Ok(row)
    }

    fn overwrite(&self, row: &mut Row, cols: &Map<String, Value>) -> Result<(), UpdateError> {
        for (c, v) in cols {
            let ty = self.schema.columns.get(c).ok_or_else(|| self.err(Some(c), "no such column in the schema"))?;
            let d = Datum::from_json(ty, v).map_err(|e| self.err(Some(c), e))?;
            row.insert(c.clone(), d);
        }
        Ok(())
    }

    fn modify(&self, old: &Row, diffs: &Map<String, Value>) -> Result<Row, UpdateError> {
        let mut row = old.clone();
        for (c, v) in diffs {
            let ty = self.schema.columns.get(c).ok_or_else(|| self.err(Some(c), "no such column in the schema"))?;
            let diff = Datum::diff_from_json(ty, v).map_err(|e| self.err(Some(c), e))?;
            let cur = row.remove(c).unwrap_or_else(|| Datum::default_for(ty));
            let new = cur.apply_diff(ty, &diff).map_err(|e| self.err(Some(c), e))?;
            row.insert(c.clone(), new);
        }
        Ok(row)
    }

    fn row_update2(&self, old: Option<&Arc<Row>>, ru: &Value) -> Result<Option<Arc<Row>>, UpdateError> {
        let obj = ru.as_object().ok_or_else(|| self.err(None, "<row-update2> is not an object"))?;
        let mut members = obj.iter();
        let (Some((op, body)), None) = (members.next(), members.next()) else {
            return Err(self.err(None, format!("<row-update2> has {} members instead of 1", obj.len())));
        };
        let cols = || body.as_object().ok_or_else(|| self.err(None, format!("\"{op}\" holds no row object")));
        match (op.as_str(), old) {
            ("initial" | "insert", None) => Ok(Some(Arc::new(self.full_row(cols()?)?))),
            ("initial" | "insert", Some(_)) => Err(self.err(None, format!("\"{op}\" of a row already present"))),
            ("modify", Some(old)) => Ok(Some(Arc::new(self.modify(old, cols()?)?))),
            ("delete", Some(_)) => Ok(None),
            ("modify" | "delete", None) => Err(self.err(None, format!("\"{op}\" of a row not present"))),
            _ => Err(self.err(None, format!("unknown <row-update2> member {op:?}"))),
        }
    }

    fn row_update1(&self, old: Option<&Arc<Row>>, ru: &Value) -> Result<Option<Arc<Row>>, UpdateError> {
        let obj = ru.as_object().ok_or_else(|| self.err(None, "<row-update> is not an object"))?;
        if let Some(k) = obj.keys().find(|k| *k != "old" && *k != "new") {
            return Err(self.err(None, format!("<row-update> has unexpected member {k:?}")));
        }
        let member = |name: &str| -> Result<Option<&Map<String, Value>>, UpdateError> {
            match obj.get(name) {
                None => Ok(None),
                Some(Value::Object(o)) => Ok(Some(o)),
                Some(_) => Err(self.err(None, format!("\"{name}\" is not a row object"))),
            }
        };
        match (member("old")?, member("new")?, old) {
            (_, None, None) => Err(self.err(None, "delete of a row not present")),
            (None, None, Some(_)) => Err(self.err(None, "<row-update> has neither \"old\" nor \"new\"")),
            (Some(_), None, Some(_)) => Ok(None),
            (_, Some(new), None) => Ok(Some(Arc::new(self.full_row(new)?))),
            // "new" of a modify holds every monitored column, so overwriting
            // the columns it names is exact.
            (_, Some(new), Some(old)) => {
                let mut row = (**old).clone();
                self.overwrite(&mut row, new)?;
                Ok(Some(Arc::new(row)))
            }
        }
    }
}

impl Replica {
    /// An empty replica holding `monitored`'s tables.
    pub fn new(monitored: &Monitored) -> Replica {
        Replica { tables: monitored.keys().map(|t| (t.clone(), TableRows::new())).collect() }
    }

    pub fn table(&self, name: &str) -> Option<&TableRows> {
        self.tables.get(name)
    }

    pub fn tables(&self) -> impl Iterator<Item = (&String, &TableRows)> {
        self.tables.iter()
    }

    pub fn row(&self, table: &str, uuid: Uuid) -> Option<&Arc<Row>> {
        self.tables.get(table)?.get(&uuid)
    }

    /// The rows of `table` (none if it is not monitored).
    pub fn rows<'a>(&'a self, table: &str) -> impl Iterator<Item = (&'a Uuid, &'a Arc<Row>)> + 'a {
        self.tables.get(table).into_iter().flatten()
    }

    /// Rows in every table.
    pub fn len(&self) -> usize {
        self.tables.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies one `<table-updates>` / `<table-updates2>` object and returns
    /// the changes it made. All or nothing: on error the replica is
    /// unchanged.
    pub fn apply(
        &mut self,
        schema: &DatabaseSchema,
        monitored: &Monitored,
        format: UpdateFormat,
        updates: &Value,
    ) -> Result<Vec<RowChange>, UpdateError> {
        let top = |reason: String| UpdateError { table: None, uuid: None, column: None, reason };
        let obj = updates.as_object().ok_or_else(|| top("<table-updates> is not an object".to_owned()))?;
        let mut staged = Vec::new();
        for (table, tu) in obj {
            let tschema =
                schema.table(table).ok_or_else(|| top(format!("update for table {table:?}, not in the schema")))?;
            let columns =
                monitored.get(table).ok_or_else(|| top(format!("update for table {table:?}, not monitored")))?;
            let rows = tu.as_object().ok_or_else(|| top(format!("<table-update> of {table} is not an object")))?;
            for (u, ru) in rows {
                let uuid = u.parse::<Uuid>().map_err(|e| UpdateError {
                    table: Some(table.clone()),
                    uuid: None,
                    column: None,
                    reason: e.to_string(),
                })?;
                let ctx = Ctx { table, schema: tschema, columns, uuid };
                let old = self.row(table, uuid);
                let new = match format {
                    UpdateFormat::Update => ctx.row_update1(old, ru)?,
                    UpdateFormat::Update2 => ctx.row_update2(old, ru)?,
                };
                staged.push(RowChange { table: table.clone(), uuid, old: old.cloned(), new });
            }
        }
        for c in &staged {
            let rows = self.tables.entry(c.table.clone()).or_default();
            match &c.new {
                Some(new) => rows.insert(c.uuid, new.clone()),
                None => rows.remove(&c.uuid),
            };
        }
        Ok(staged)
    }

    /// The changes that turn `self` into `new`, leaving out rows that are
    /// equal on both sides: what a full resync changed.
    pub fn changes_to(&self, new: &Replica) -> Vec<RowChange> {
        let names: BTreeSet<&String> = self.tables.keys().chain(new.tables.keys()).collect();
        let empty = TableRows::new();
        let mut out = Vec::new();
        for name in names {
            let a = self.tables.get(name).unwrap_or(&empty);
            let b = new.tables.get(name).unwrap_or(&empty);
            for (u, old) in a {
                match b.get(u) {
                    None => out.push(RowChange { table: name.clone(), uuid: *u, old: Some(old.clone()), new: None }),
                    Some(n) if n != old => out.push(RowChange {
                        table: name.clone(),
                        uuid: *u,
                        old: Some(old.clone()),
                        new: Some(n.clone()),
                    }),
                    Some(_) => {}
                }
            }
            for (u, n) in b {
                if !a.contains_key(u) {
                    out.push(RowChange { table: name.clone(), uuid: *u, old: None, new: Some(n.clone()) });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> DatabaseSchema {
        DatabaseSchema::from_json(&json!({"name": "T", "tables": {"A": {"columns": {
            "name": {"type": "string"},
            "n": {"type": "integer"},
            "tag": {"type": {"key": "integer", "min": 0, "max": 1}},
            "set": {"type": {"key": "string", "min": 0, "max": "unlimited"}},
            "ext": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}}
        }}}}))
        .unwrap()
    }

    fn all_columns(s: &DatabaseSchema) -> Monitored {
        s.tables.iter().map(|(t, ts)| (t.clone(), ts.columns.keys().cloned().collect())).collect()
    }

    const U1: &str = "00000000-0000-0000-0000-000000000001";

    #[test]
    fn insert_fills_defaults_and_modify_applies_diffs() {
        let s = schema();
        let m = all_columns(&s);
        let mut r = Replica::new(&m);
        let ch = r
            .apply(&s, &m, UpdateFormat::Update2, &json!({"A": {U1: {"initial": {"name": "x", "set": "a"}}}}))
            .unwrap();
        assert_eq!(ch.len(), 1);
        let row = r.row("A", U1.parse().unwrap()).unwrap();
        assert_eq!(row["n"], Datum::scalar(0));
        assert!(row["tag"].is_empty() && row["ext"].is_empty());
        assert_eq!(row["set"], Datum::set(["a"]));
        let ch = r
            .apply(
                &s,
                &m,
                UpdateFormat::Update2,
                &json!({"A": {U1: {"modify": {"set": ["set", ["a", "b"]], "tag": 7, "ext": ["map", [["k", "v"]]]}}}}),
            )
            .unwrap();
        let new = ch[0].new.as_ref().unwrap();
        assert_eq!(new["set"], Datum::set(["b"]));
        assert_eq!(new["tag"].as_integer(), Some(7));
        assert_eq!(new["ext"].get("k").and_then(|a| a.as_str()), Some("v"));
        assert_eq!(ch[0].old.as_ref().unwrap()["set"], Datum::set(["a"]));
        r.apply(&s, &m, UpdateFormat::Update2, &json!({"A": {U1: {"delete": null}}})).unwrap();
        assert!(r.is_empty());
    }

    #[test]
    fn errors_leave_the_replica_unchanged() {
        let s = schema();
        let m = all_columns(&s);
        let mut r = Replica::new(&m);
        r.apply(&s, &m, UpdateFormat::Update2, &json!({"A": {U1: {"insert": {"name": "x"}}}})).unwrap();
        let before = r.clone();
        let u2 = "00000000-0000-0000-0000-000000000002";
        let bad = [
            (json!({"A": {u2: {"insert": {}}, U1: {"modify": {"n": "seven"}}}}), "column n"),
            (json!({"A": {U1: {"insert": {}}}}), "already present"),
            (json!({"A": {u2: {"modify": {}}}}), "not present"),
            (json!({"A": {u2: {"delete": null}}}), "not present"),
            (json!({"A": {U1: {"modify": {}, "delete": null}}}), "2 members"),
            (json!({"A": {U1: {"replace": {}}}}), "unknown"),
            (json!({"A": {U1: {"modify": {"nope": 1}}}}), "column nope"),
            (json!({"A": {"not-a-uuid": {"delete": null}}}), "not a UUID"),
            (json!({"B": {}}), "not in the schema"),
            (json!({"A": {U1: {"modify": {"set": ["map", []]}}}}), "column set"),
            (json!({"A": {U1: {"modify": {"tag": ["set", [1, 2]]}}}}), "2 elements"),
            (json!([]), "not an object"),
        ];
        for (update, want) in bad {
            let e = r.apply(&s, &m, UpdateFormat::Update2, &update).unwrap_err();
            assert!(e.to_string().contains(want), "{update}: {e}");
            assert_eq!(r, before, "{update}");
        }
    }

    #[test]
    fn update_v1() {
        let s = schema();
        let m = all_columns(&s);
        let mut r = Replica::new(&m);
        r.apply(&s, &m, UpdateFormat::Update, &json!({"A": {U1: {"new": {"name": "x", "set": ["set", ["a", "b"]]}}}}))
            .unwrap();
        r.apply(
            &s,
            &m,
            UpdateFormat::Update,
            &json!({"A": {U1: {"old": {"set": ["set", ["a", "b"]]}, "new": {"name": "x", "set": "c"}}}}),
        )
        .unwrap();
        assert_eq!(r.row("A", U1.parse().unwrap()).unwrap()["set"], Datum::set(["c"]));
        r.apply(&s, &m, UpdateFormat::Update, &json!({"A": {U1: {"old": {"name": "x"}}}})).unwrap();
        assert!(r.is_empty());
    }

    #[test]
    fn changes_to_lists_only_differences() {
        let s = schema();
        let m = all_columns(&s);
        let u2 = "00000000-0000-0000-0000-000000000002";
        let u3 = "00000000-0000-0000-0000-000000000003";
        let mut a = Replica::new(&m);
        a.apply(&s, &m, UpdateFormat::Update2, &json!({"A": {U1: {"insert": {"n": 1}}, u2: {"insert": {"n": 2}}}}))
            .unwrap();
        let mut b = Replica::new(&m);
        b.apply(&s, &m, UpdateFormat::Update2, &json!({"A": {U1: {"insert": {"n": 1}}, u3: {"insert": {"n": 3}}}}))
            .unwrap();
        let ch = a.changes_to(&b);
        let kinds: Vec<(String, bool, bool)> =
            ch.iter().map(|c| (c.uuid.to_string(), c.old.is_some(), c.new.is_some())).collect();
        assert_eq!(kinds, vec![(u2.to_owned(), true, false), (u3.to_owned(), false, true)]);
    }
}
