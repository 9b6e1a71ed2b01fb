//! Where committed ports live across restarts. A port is acknowledged only
//! after its record is durably written, so the store, not memory or the
//! BPF maps, is the truth the controller rebuilds from.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::number::OfPort;
use super::spec::{Binding, Group, MacAddr, PortSpec, Vni};

/// One committed port: its number and the spec it was created from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRecord {
    pub ofport: OfPort,
    pub spec: PortSpec,
}

impl PortRecord {
    pub fn name(&self) -> &str {
        self.spec.name()
    }
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: std::io::Error },
    #[error("{op} {}: {cause}", path.display())]
    Db {
        op: &'static str,
        path: PathBuf,
        // Boxed: redb's error is large and would bloat every Result.
        cause: Box<redb::Error>,
    },
    #[error("record {key:?}: {cause}")]
    Codec { key: String, cause: serde_json::Error },
    #[error("record {key:?} holds port {found:?}")]
    KeyMismatch { key: String, found: String },
    #[error("injected write failure")]
    Injected,
    #[error("{}: {what}", path.display())]
    Invalid { path: PathBuf, what: String },
}

/// Durable storage of committed ports (keyed by name) and bindings (keyed
/// by VNI and MAC).
pub trait Store {
    /// Every committed port.
    fn load(&self) -> Result<Vec<PortRecord>, StoreError>;
    /// Writes (or overwrites) one record; durable when this returns `Ok`.
    fn put(&mut self, record: &PortRecord) -> Result<(), StoreError>;
    /// Removes one record; removing an absent name is not an error.
    fn delete(&mut self, name: &str) -> Result<(), StoreError>;
    /// Every committed binding.
    fn load_bindings(&self) -> Result<Vec<Binding>, StoreError>;
    /// Writes (or overwrites) one binding; durable when this returns `Ok`.
    fn put_binding(&mut self, binding: &Binding) -> Result<(), StoreError>;
    /// Removes one binding; an absent one is not an error.
    fn delete_binding(&mut self, vni: Vni, mac: MacAddr) -> Result<(), StoreError>;
    /// Every committed multicast group.
    fn load_groups(&self) -> Result<Vec<Group>, StoreError>;
    /// Writes (or overwrites) one group; durable when this returns `Ok`.
    fn put_group(&mut self, group: &Group) -> Result<(), StoreError>;
    /// Removes one group; an absent one is not an error.
    fn delete_group(&mut self, vni: Vni, key: u16) -> Result<(), StoreError>;

    /// Group commit: until the next `sync`, `put` and `delete` need only
    /// be visible, not durable, and a crash may lose them (all of them
    /// since the last durable write, never a torn one). Whoever calls this
    /// must not acknowledge those changes before `sync` returns `Ok`.
    fn defer_sync(&mut self) {}

    /// Makes every change since `defer_sync` durable, and ends deferring.
    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}
