//! Building `transact` operations (RFC 7047 section 5.2) and reading their
//! results. Operations are plain JSON values; these helpers spell the
//! common ones so that a typo in a member name cannot slip through.
//!
//! ```
//! use xgw_ovsdb::ops::{self, cond, named_uuid, set};
//! use serde_json::json;
//! let txn = vec![
//!     ops::insert_named("Encap", json!({"type": "geneve", "ip": "198.51.100.1", "chassis_name": "gw1"}), "e"),
//!     ops::insert("Chassis", json!({"name": "gw1", "encaps": set([named_uuid("e")])})),
//!     ops::update("SB_Global", vec![], json!({"options": ["map", []]})),
//!     ops::delete("Port_Binding", vec![cond("logical_port", "==", json!("lp0"))]),
//! ];
//! ```
use serde_json::{json, Map, Value};

use crate::{jsonrpc::OvsdbError, Error, Uuid};

/// `insert` of `row` (an object of column values).
pub fn insert(table: &str, row: Value) -> Value {
    json!({"op": "insert", "table": table, "row": row})
}

/// `insert` naming the new row `uuid_name`, so that later operations of the
/// same transaction can refer to it as [`named_uuid`]`(uuid_name)`.
pub fn insert_named(table: &str, row: Value, uuid_name: &str) -> Value {
    json!({"op": "insert", "table": table, "row": row, "uuid-name": uuid_name})
}

pub fn update(table: &str, conditions: Vec<Value>, row: Value) -> Value {
    json!({"op": "update", "table": table, "where": conditions, "row": row})
}

/// `mutate` with [`mutation`]s.
pub fn mutate(table: &str, conditions: Vec<Value>, mutations: Vec<Value>) -> Value {
    json!({"op": "mutate", "table": table, "where": conditions, "mutations": mutations})
}

pub fn delete(table: &str, conditions: Vec<Value>) -> Value {
    json!({"op": "delete", "table": table, "where": conditions})
}

/// `select`; `columns` `None` for all of them.
pub fn select(table: &str, conditions: Vec<Value>, columns: Option<&[&str]>) -> Value {
    let mut op = json!({"op": "select", "table": table, "where": conditions});
    if let Some(c) = columns {
        op["columns"] = json!(c);
    }
    op
}

/// `wait` until the rows matching `conditions`, projected on `columns`, are
/// (`until` "==") or are not ("!=") exactly `rows`: the precondition of an
/// optimistic transaction (RFC 7047 5.2.6).
pub fn wait(
    table: &str,
    conditions: Vec<Value>,
    columns: &[&str],
    until: &str,
    rows: Vec<Value>,
    timeout_ms: Option<u64>,
) -> Value {
    let mut op =
        json!({"op": "wait", "table": table, "where": conditions, "columns": columns, "until": until, "rows": rows});
    if let Some(t) = timeout_ms {
        op["timeout"] = json!(t);
    }
    op
}

pub fn comment(text: &str) -> Value {
    json!({"op": "comment", "comment": text})
}

pub fn abort() -> Value {
    json!({"op": "abort"})
}

/// A `<condition>`: `[column, function, value]`, e.g. `cond("name", "==", json!("gw1"))`.
pub fn cond(column: &str, function: &str, value: Value) -> Value {
    json!([column, function, value])
}

/// A `<mutation>`: `[column, mutator, value]`, e.g.
/// `mutation("external_ids", "insert", map([(json!("k"), json!("v"))]))`.
pub fn mutation(column: &str, mutator: &str, value: Value) -> Value {
    json!([column, mutator, value])
}

/// A reference to a row inserted earlier in the same transaction.
pub fn named_uuid(name: &str) -> Value {
    json!(["named-uuid", name])
}

pub fn uuid(u: Uuid) -> Value {
    json!(["uuid", u.to_string()])
}

/// `["set", [...]]`.
pub fn set(items: impl IntoIterator<Item = Value>) -> Value {
    json!(["set", items.into_iter().collect::<Vec<_>>()])
}

/// `["map", [[k, v], ...]]`.
pub fn map(pairs: impl IntoIterator<Item = (Value, Value)>) -> Value {
    json!(["map", pairs.into_iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>()])
}

/// The UUID an `insert`'s result carries.
pub fn inserted_uuid(result: &Value) -> Option<Uuid> {
    match result.get("uuid")?.as_array()?.as_slice() {
        [Value::String(t), Value::String(u)] if t == "uuid" => u.parse().ok(),
        _ => None,
    }
}

/// The `count` of an `update`, `mutate` or `delete` result.
pub fn count(result: &Value) -> Option<u64> {
    result.get("count")?.as_u64()
}

/// The `rows` of a `select` result.
pub fn rows(result: &Value) -> Option<&Vec<Value>> {
    result.get("rows")?.as_array()
}

/// Checks a `transact` reply against the operations sent: one result per
/// operation, or an error object in the place of the operation that
/// failed, or one extra element when the commit itself failed.
pub(crate) fn check_results(ops: &[Value], result: Value, remote: &str) -> Result<Vec<Value>, Error> {
    let Value::Array(results) = result else {
        return Err(Error::Protocol {
            remote: remote.to_owned(),
            reason: "transact result is not an array".to_owned(),
        });
    };
    if results.len() < ops.len() {
        return Err(Error::Protocol {
            remote: remote.to_owned(),
            reason: format!("transact returned {} results for {} operations", results.len(), ops.len()),
        });
    }
    for (i, r) in results.iter().enumerate() {
        if let Some(e) = r.as_object().and_then(|o: &Map<String, Value>| o.get("error")) {
            if e.is_null() {
                continue;
            }
            let in_op = i < ops.len();
            return Err(Error::Transaction {
                index: in_op.then_some(i),
                op: ops.get(i).and_then(|o| o.get("op")).and_then(Value::as_str).map(str::to_owned),
                error: Box::new(OvsdbError::from_json(r)),
            });
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn results() {
        let ops = vec![insert("A", json!({})), delete("A", vec![])];
        let ok =
            check_results(&ops, json!([{"uuid": ["uuid", "00000000-0000-0000-0000-000000000001"]}, {"count": 0}]), "r")
                .unwrap();
        assert_eq!(inserted_uuid(&ok[0]), Some(Uuid::from_u128(1)));
        assert_eq!(count(&ok[1]), Some(0));
        let e = check_results(&ops, json!([{"uuid": ["uuid", "00000000-0000-0000-0000-000000000001"]}, {"error": "constraint violation", "details": "d"}]), "r")
            .unwrap_err();
        assert!(
            matches!(&e, Error::Transaction { index: Some(1), op: Some(op), error } if op == "delete" && error.kind == ErrorKind::ConstraintViolation),
            "{e:?}"
        );
        let e = check_results(&ops, json!([{}, {}, {"error": "referential integrity violation", "details": "d"}]), "r")
            .unwrap_err();
        assert!(
            matches!(&e, Error::Transaction { index: None, op: None, error } if error.kind == ErrorKind::ReferentialIntegrityViolation),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "transaction failed at commit: referential integrity violation: d");
        assert!(check_results(&ops, json!([{}]), "r").is_err());
        assert!(check_results(&ops, json!({}), "r").is_err());
    }
}
