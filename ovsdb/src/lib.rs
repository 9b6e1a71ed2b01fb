//! An OVSDB client for xgw: RFC 7047 plus the extensions of ovsdb-server(7)
//! that OVN's databases need.
pub mod framing;
pub mod remote;
mod uuid;

pub use remote::{Remote, RemoteError, Remotes};
pub use uuid::{Uuid, UuidError};
