//! The narrow seam between the port map and the BPF maps: which map entries
//! a port needs, in what order, and the trait the datapath implements.
//! Tests implement it in memory and inject a failure at any step.

use std::fmt;

use thiserror::Error;

use super::number::OfPort;
use super::spec::{PortKind, PortSpec, TunnelKey};

/// One BPF map a port may need an entry in. Adding a map later means a
/// variant here, a line in `ALL`, its place in `PortKind::steps` and its
/// key in `MapEntry::for_step`; the transaction and reconciler need no
/// change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Step {
    /// OpenFlow number -> port description (encap parameters, ifindex).
    PortTable,
    /// OpenFlow number -> egress interface, the `bpf_redirect_map` target.
    Devmap,
    /// (remote IP, VNI) -> OpenFlow number: Geneve ingress lookup.
    TunnelTable,
}

impl Step {
    pub const ALL: &'static [Step] = &[Step::PortTable, Step::Devmap, Step::TunnelTable];

    pub const fn name(self) -> &'static str {
        match self {
            Step::PortTable => "port table",
            Step::Devmap => "devmap",
            Step::TunnelTable => "tunnel table",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl PortKind {
    /// The entries a port of this kind needs, in insertion order. Each
    /// list ends with the entry that makes the port reachable, so a packet
    /// never finds a half-built port; removal runs the list backwards.
    pub const fn steps(self) -> &'static [Step] {
        match self {
            // The redirect target must exist before the port table names it.
            PortKind::Local => &[Step::Devmap, Step::PortTable],
            // Ingress finds a tunnel through the tunnel table, which must
            // only point at a port the port table already describes.
            PortKind::Tunnel => &[Step::PortTable, Step::TunnelTable],
        }
    }
}

impl PortSpec {
    pub fn steps(&self) -> &'static [Step] {
        self.kind().steps()
    }
}

/// The key of an entry in one map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntryKey {
    Port(OfPort),
    Tunnel(TunnelKey),
}

/// The identity of one map entry: its key and the port number it belongs
/// to. Every map in the gateway either is keyed by the number or maps to
/// it, which is what lets the reconciler find entries no port owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MapEntry {
    pub key: EntryKey,
    pub ofport: OfPort,
}

impl MapEntry {
    /// The entry `port` numbered `ofport` needs in `step`'s map, or `None`
    /// if ports of its kind have no entry there.
    pub fn for_step(step: Step, port: &PortSpec, ofport: OfPort) -> Option<MapEntry> {
        if !port.steps().contains(&step) {
            return None;
        }
        let key = match step {
            Step::PortTable | Step::Devmap => EntryKey::Port(ofport),
            Step::TunnelTable => EntryKey::Tunnel(port.tunnel_key()?),
        };
        Some(MapEntry { key, ofport })
    }
}

impl fmt::Display for MapEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key {
            EntryKey::Port(p) => write!(f, "ofport {p}"),
            EntryKey::Tunnel(k) => write!(f, "{k} -> ofport {}", self.ofport),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MapError {
    #[error("map full (max_entries {max_entries})")]
    Full { max_entries: u32 },
    #[error("entry already exists")]
    Exists,
    #[error("no such entry")]
    NotFound,
    #[error("{}", std::io::Error::from_raw_os_error(*.errno))]
    Os { errno: i32 },
    #[error("{0}")]
    Other(String),
}

/// The BPF maps, as the port map sees them.
pub trait Datapath {
    /// Adds the entry `port` numbered `ofport` needs in `step`'s map.
    /// Must not overwrite: an existing key is `MapError::Exists`
    /// (`BPF_NOEXIST`), since overwriting would silently steal another
    /// port's entry.
    fn insert(&mut self, step: Step, port: &PortSpec, ofport: OfPort) -> Result<(), MapError>;

    /// Removes the entry with `entry.key` from `step`'s map. An absent key
    /// is `MapError::NotFound`, which callers treat as done.
    fn remove(&mut self, step: Step, entry: &MapEntry) -> Result<(), MapError>;

    /// Every entry currently in `step`'s map.
    fn list(&self, step: Step) -> Result<Vec<MapEntry>, MapError>;
}
