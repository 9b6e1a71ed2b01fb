//! JSON-RPC 1.0 messages (RFC 7047 section 4) and the errors OVSDB puts in
//! them.
use std::fmt;

use serde_json::{json, Value};

/// One message on the stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    Request { id: Value, method: String, params: Value },
    Notification { method: String, params: Value },
    Response { id: Value, result: Result<Value, Value> },
}

impl Message {
    pub fn from_json(v: Value) -> Result<Message, String> {
        let Value::Object(mut o) = v else { return Err("message is not a JSON object".to_owned()) };
        let id = o.remove("id").unwrap_or(Value::Null);
        if let Some(method) = o.remove("method") {
            let Value::String(method) = method else { return Err("\"method\" is not a string".to_owned()) };
            let params = o.remove("params").unwrap_or(Value::Null);
            return Ok(if id.is_null() {
                Message::Notification { method, params }
            } else {
                Message::Request { id, method, params }
            });
        }
        if !o.contains_key("result") && !o.contains_key("error") {
            return Err("message has neither \"method\" nor \"result\"/\"error\"".to_owned());
        }
        let error = o.remove("error").unwrap_or(Value::Null);
        let result = if error.is_null() { Ok(o.remove("result").unwrap_or(Value::Null)) } else { Err(error) };
        Ok(Message::Response { id, result })
    }

    pub fn to_json(&self) -> Value {
        match self {
            Message::Request { id, method, params } => json!({"id": id, "method": method, "params": params}),
            Message::Notification { method, params } => json!({"id": null, "method": method, "params": params}),
            Message::Response { id, result: Ok(r) } => json!({"id": id, "result": r, "error": null}),
            Message::Response { id, result: Err(e) } => json!({"id": id, "result": null, "error": e}),
        }
    }
}

/// What an OVSDB error says, by its `error` string (RFC 7047 4.1.3 and
/// ovsdb-server(7) 3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A uniqueness index, or a column's size or value constraint.
    ConstraintViolation,
    ReferentialIntegrityViolation,
    ResourcesExhausted,
    IoError,
    DuplicateUuid,
    DomainError,
    RangeError,
    TimedOut,
    NotSupported,
    Aborted,
    NotOwner,
    PermissionError,
    SyntaxError,
    UnknownDatabase,
    UnknownMethod,
    /// Any other string (`internal error`, `ovsdb error`, raft's
    /// `not leader`, ...): see [`OvsdbError::error`].
    Other,
}

/// An error object from the server: `{"error": .., "details": ..}`, or a
/// bare string as ovsdb-server sends for `unknown method`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OvsdbError {
    pub kind: ErrorKind,
    pub error: String,
    pub details: Option<String>,
    pub syntax: Option<String>,
}

impl OvsdbError {
    pub fn from_json(v: &Value) -> OvsdbError {
        let (error, details, syntax) = match v {
            Value::String(s) => (s.clone(), None, None),
            Value::Object(o) => {
                let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
                (s("error").unwrap_or_else(|| v.to_string()), s("details"), s("syntax"))
            }
            other => (other.to_string(), None, None),
        };
        let kind = match error.as_str() {
            "constraint violation" => ErrorKind::ConstraintViolation,
            "referential integrity violation" => ErrorKind::ReferentialIntegrityViolation,
            "resources exhausted" => ErrorKind::ResourcesExhausted,
            "I/O error" => ErrorKind::IoError,
            "duplicate uuid-name" | "duplicate uuid" => ErrorKind::DuplicateUuid,
            "domain error" => ErrorKind::DomainError,
            "range error" => ErrorKind::RangeError,
            "timed out" => ErrorKind::TimedOut,
            "not supported" => ErrorKind::NotSupported,
            "aborted" => ErrorKind::Aborted,
            "not owner" => ErrorKind::NotOwner,
            "permission error" => ErrorKind::PermissionError,
            "syntax error" | "unknown column" => ErrorKind::SyntaxError,
            "unknown database" => ErrorKind::UnknownDatabase,
            "unknown method" => ErrorKind::UnknownMethod,
            _ => ErrorKind::Other,
        };
        OvsdbError { kind, error, details, syntax }
    }
}

impl fmt::Display for OvsdbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.error)?;
        if let Some(d) = &self.details {
            write!(f, ": {d}")?;
        }
        if let Some(s) = &self.syntax {
            write!(f, " (syntax: {s})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_messages() {
        let m = Message::from_json(json!({"id": "echo", "method": "echo", "params": []})).unwrap();
        assert_eq!(m, Message::Request { id: json!("echo"), method: "echo".into(), params: json!([]) });
        let m = Message::from_json(json!({"id": null, "method": "update2", "params": [1, {}]})).unwrap();
        assert!(matches!(m, Message::Notification { .. }));
        let m = Message::from_json(json!({"id": 3, "result": null, "error": "unknown method"})).unwrap();
        assert_eq!(m, Message::Response { id: json!(3), result: Err(json!("unknown method")) });
        let m = Message::from_json(json!({"id": 4, "result": {}, "error": null})).unwrap();
        assert_eq!(m, Message::Response { id: json!(4), result: Ok(json!({})) });
        assert!(Message::from_json(json!({"id": 4})).is_err());
        assert!(Message::from_json(json!([1])).is_err());
        assert!(Message::from_json(json!({"method": 1})).is_err());
        for m in [
            Message::Request { id: json!(1), method: "m".into(), params: json!([]) },
            Message::Notification { method: "m".into(), params: json!([]) },
            Message::Response { id: json!(1), result: Ok(json!(2)) },
            Message::Response { id: json!(1), result: Err(json!("x")) },
        ] {
            assert_eq!(Message::from_json(m.to_json()).unwrap(), m);
        }
    }

    #[test]
    fn error_kinds() {
        let e = OvsdbError::from_json(
            &json!({"error": "constraint violation", "details": "Transaction causes multiple rows"}),
        );
        assert_eq!(e.kind, ErrorKind::ConstraintViolation);
        assert_eq!(e.to_string(), "constraint violation: Transaction causes multiple rows");
        assert_eq!(OvsdbError::from_json(&json!("unknown method")).kind, ErrorKind::UnknownMethod);
        assert_eq!(OvsdbError::from_json(&json!({"error": "not leader"})).kind, ErrorKind::Other);
    }
}
