//! An OVSDB client for xgw: RFC 7047 plus the extensions of ovsdb-server(7)
//! that OVN's databases need.
pub mod datum;
pub mod framing;
pub mod remote;
pub mod replica;
pub mod schema;
mod uuid;

pub use datum::{Atom, Datum};
pub use remote::{Remote, RemoteError, Remotes};
pub use replica::{Replica, Row, RowChange};
pub use schema::DatabaseSchema;
pub use uuid::{Uuid, UuidError};
