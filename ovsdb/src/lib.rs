//! An OVSDB client: RFC 7047 plus the extensions of ovsdb-server(7) that
//! OVN's databases need (`monitor_cond`, `monitor_cond_since` with
//! `update2`/`update3`, `monitor_cond_change`, the `_Server` database of
//! raft clusters), on tokio.
//!
//! - [`Client`]: a monitored database. It keeps a [`Replica`] of the
//!   monitored tables, reports every change as an [`Event`], runs
//!   transactions, changes conditions on a live monitor, and reconnects
//!   across the members of a cluster (skipping members that are out of
//!   the cluster or behind), resuming from the last transaction id
//!   instead of reloading when the server still has it.
//! - [`Connection`]: one plain connection, for one-off requests.
//! - [`ops`]: transaction operations; [`Datum`]/[`Atom`]: typed values.
//!
//! Nothing here knows OVN: the database, tables and conditions are the
//! caller's.
//!
//! ```no_run
//! # async fn f() -> Result<(), xgw_ovsdb::Error> {
//! use xgw_ovsdb::{ops, Client, Config, MonitorSpec, TableMonitor};
//! use serde_json::json;
//! let remotes = "unix:/run/ovn/ovnsb_db.sock".parse()?;
//! let spec = MonitorSpec::new()
//!     .table("Chassis", TableMonitor::all())
//!     .table("Port_Binding", TableMonitor::all().conditions(vec![json!(false)]));
//! let (client, mut events) = Client::connect(Config::new(remotes, "OVN_Southbound", spec)).await?;
//! client.set_conditions("Port_Binding", vec![ops::cond("chassis", "==", json!(["set", []]))]).await?;
//! let n = client.read(|r| r.rows("Chassis").count());
//! while let Some(ev) = events.recv().await {
//!     // xgw_ovsdb::Event::Update(u) => reconcile u.changes ...
//! #   let _ = (ev, n);
//! }
//! # Ok(()) }
//! ```
mod client;
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

pub use client::{Client, Config, Event, MonitorMethod, MonitorSpec, State, Stats, TableMonitor, Update};
pub use conn::{Connection, Options};
pub use datum::{Atom, Datum};
pub use error::Error;
pub use jsonrpc::{ErrorKind, OvsdbError};
pub use remote::{Remote, RemoteError, Remotes};
pub use replica::{Replica, Row, RowChange};
pub use schema::DatabaseSchema;
pub use uuid::{Uuid, UuidError};
