//! An OVSDB client for xgw: RFC 7047 plus the extensions of ovsdb-server(7)
//! that OVN's databases need.
mod conn;
pub mod datum;
mod error;
pub mod framing;
pub mod jsonrpc;
pub mod ops;
pub mod remote;
pub mod replica;
pub mod schema;
mod uuid;

pub use conn::{Connection, Options};
pub use datum::{Atom, Datum};
pub use error::Error;
pub use jsonrpc::{ErrorKind, OvsdbError};
pub use remote::{Remote, RemoteError, Remotes};
pub use replica::{Replica, Row, RowChange};
pub use schema::DatabaseSchema;
pub use uuid::{Uuid, UuidError};
