use std::time::Duration;

use crate::{
    framing::FramingError, jsonrpc::OvsdbError, remote::RemoteError, replica::UpdateError, schema::SchemaError,
};

/// Everything that can go wrong. Cloneable, so one connection failure can
/// be reported to every request that was waiting on it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// Connecting, reading or writing failed.
    #[error("{remote}: {reason}")]
    Io { remote: String, kind: std::io::ErrorKind, reason: String },
    #[error("{remote}: {source}")]
    Framing { remote: String, source: FramingError },
    /// The server sent something that is not the protocol.
    #[error("{remote}: protocol error: {reason}")]
    Protocol { remote: String, reason: String },
    /// The server answered a request with an error.
    #[error("{remote}: {method} failed: {error}")]
    Rpc { remote: String, method: String, error: Box<OvsdbError> },
    /// A transaction was refused: by operation `index` (`op` names it), or
    /// at commit (`index` is `None`), e.g. a `constraint violation` of a
    /// table's index or a `referential integrity violation`.
    #[error("{}", transaction_message(*.index, .op.as_deref(), .error))]
    Transaction { index: Option<usize>, op: Option<String>, error: Box<OvsdbError> },
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("{remote}: {source}")]
    Update { remote: String, source: Box<UpdateError> },
    /// A member that is not fit to serve (`_Server` says it is not in the
    /// cluster, behind, or without the database): another is tried.
    #[error("{remote}: {reason}")]
    Refused { remote: String, reason: String },
    #[error("{remote}: no reply to the inactivity probe within {after:?}")]
    ProbeTimeout { remote: String, after: Duration },
    #[error("{remote}: connection closed by the server")]
    Closed { remote: String },
    /// A request was in flight when the connection ended: whether a
    /// transaction committed is unknown.
    #[error("connection to {remote} lost with the request in flight: {reason}")]
    ConnectionLost { remote: String, reason: String },
    #[error("not connected{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    NotConnected { last_error: Option<String> },
    #[error("{what}: timed out after {after:?}{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    Timeout { what: String, after: Duration, last_error: Option<String> },
    #[error("{0}")]
    InvalidArgument(String),
    /// The client's task has ended.
    #[error("client stopped")]
    Stopped,
}

fn transaction_message(index: Option<usize>, op: Option<&str>, error: &OvsdbError) -> String {
    match (index, op) {
        (Some(i), Some(op)) => format!("transaction failed at operation {i} ({op}): {error}"),
        (Some(i), None) => format!("transaction failed at operation {i}: {error}"),
        (None, _) => format!("transaction failed at commit: {error}"),
    }
}

impl Error {
    /// The server's own error, for a refused request or transaction.
    pub fn ovsdb_error(&self) -> Option<&OvsdbError> {
        match self {
            Error::Rpc { error, .. } | Error::Transaction { error, .. } => Some(error.as_ref()),
            _ => None,
        }
    }

    pub(crate) fn io(remote: &impl ToString, e: &std::io::Error) -> Error {
        Error::Io { remote: remote.to_string(), kind: e.kind(), reason: e.to_string() }
    }
}
