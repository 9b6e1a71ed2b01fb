//! The narrow seam between the port map and the BPF maps: which map entries
//! a port or a remote binding needs, in what order, and the trait the
//! datapath implements. Tests implement it in memory and inject a failure
//! at any step. Nothing else writes the configuration maps: whoever needs
//! an entry changed goes through the port map, and so through this trait.

use std::fmt;
use std::net::IpAddr;

use thiserror::Error;

use super::number::OfPort;
use super::spec::{Binding, MacAddr, Object, PortKind, PortSpec, TunnelKey};

/// One BPF map a port may need an entry in (`xgw_common::maps`). Adding a
/// map later means a variant here, a line in `ALL`, its place in
/// `PortKind::steps` and its key in `MapEntry::for_step`; the transaction
/// and reconciler need no change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Step {
    /// `PORT_RECORDS`: OpenFlow number -> the port's whole record, which no
    /// program reads: it lets a lost store be rebuilt from the datapath.
    Record,
    /// `DEVMAP`: OpenFlow number -> egress ifindex, the redirect target.
    Devmap,
    /// `LOCAL_PORTS`: ingress ifindex -> local port (encap side).
    LocalPort,
    /// `PORT_KEYS`: (VNI, OVN port key) -> local port (decap with the option).
    PortKey,
    /// `FDB`: (VNI, MAC) -> local port (decap without the option).
    Fdb,
    /// `NEIGH`: (VNI, IP) -> MAC, for the ARP/ND responder.
    Neigh,
    /// `TUNNELS`: OpenFlow number -> tunnel (encap parameters).
    TunnelPort,
    /// `TUNNEL_BY_REMOTE`: (remote IP, VNI) -> OpenFlow number (ingress).
    TunnelByRemote,
    /// `FDB`, remote entries: (VNI, MAC) -> the binding's tunnel and key.
    RemoteFdb,
    /// `NEIGH` for a binding's IP, for the ARP/ND responder.
    RemoteNeigh,
}

impl Step {
    /// Every map, in the order `reconcile` visits them. `Neigh` comes
    /// before `Fdb` because a NEIGH entry's owner is found through FDB:
    /// removing FDB orphans first would hide the NEIGH orphans behind them.
    pub const ALL: &'static [Step] = &[
        Step::Record,
        Step::Devmap,
        Step::LocalPort,
        Step::PortKey,
        Step::Neigh,
        Step::Fdb,
        Step::RemoteNeigh,
        Step::RemoteFdb,
        Step::TunnelPort,
        Step::TunnelByRemote,
    ];

    /// A binding's entries, in insertion order: its MAC before its IP, so
    /// the responder never answers for a MAC that forwards nowhere.
    pub const BINDING: &'static [Step] = &[Step::RemoteFdb, Step::RemoteNeigh];

    /// Written only while the port's interface exists (the kernel keys
    /// them by its index): a port whose interface is missing waits for it
    /// without them.
    pub const fn needs_interface(self) -> bool {
        matches!(self, Step::Devmap | Step::LocalPort)
    }

    /// What an operator reads in an error.
    pub const fn name(self) -> &'static str {
        match self {
            Step::Record => "port record copy",
            Step::Devmap => "devmap",
            Step::LocalPort => "local port table",
            Step::PortKey => "port key table",
            Step::Fdb => "fdb",
            Step::Neigh => "neighbour table",
            Step::TunnelPort => "tunnel table",
            Step::TunnelByRemote => "tunnel remote index",
            Step::RemoteFdb => "fdb (remote)",
            Step::RemoteNeigh => "neighbour table (remote)",
        }
    }

    /// The BPF map's name, as `bpftool map show` prints it.
    pub const fn map_name(self) -> &'static str {
        use xgw_common::maps::names;
        match self {
            Step::Record => names::PORT_RECORDS,
            Step::Devmap => names::DEVMAP,
            Step::LocalPort => names::LOCAL_PORTS,
            Step::PortKey => names::PORT_KEYS,
            Step::Fdb => names::FDB,
            Step::Neigh => names::NEIGH,
            Step::TunnelPort => names::TUNNELS,
            Step::TunnelByRemote => names::TUNNEL_BY_REMOTE,
            Step::RemoteFdb => names::FDB,
            Step::RemoteNeigh => names::NEIGH,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl PortKind {
    /// The maps a port of this kind may need, in insertion order. Each
    /// list ends with the entries that make the port reachable, so a
    /// packet never finds a half-built port; removal runs it backwards.
    pub const fn steps(self) -> &'static [Step] {
        match self {
            // The redirect target exists before any lookup can lead to it;
            // FDB and NEIGH, which make the port's MAC and IP known, last.
            // The record copy first: whatever else a port has in the maps,
            // the datapath can say whose it is.
            PortKind::Local => &[Step::Record, Step::Devmap, Step::LocalPort, Step::PortKey, Step::Fdb, Step::Neigh],
            // Ingress finds a tunnel through the remote index, which must
            // only point at a number the tunnel table already describes.
            PortKind::Tunnel => &[Step::Record, Step::TunnelPort, Step::TunnelByRemote],
        }
    }
}

impl Object<'_> {
    /// The maps this object needs an entry in, in insertion order.
    pub fn steps(&self) -> &'static [Step] {
        match self {
            Object::Port(p) => p.steps(),
            Object::Binding(b) if b.ip.is_none() => &Step::BINDING[..1],
            Object::Binding(_) => Step::BINDING,
        }
    }
}

impl PortSpec {
    /// The maps this port needs an entry in, in insertion order: its
    /// kind's steps, without NEIGH when a local port has no IP.
    pub fn steps(&self) -> &'static [Step] {
        match self {
            PortSpec::Local(p) if p.ip.is_none() => {
                let all = PortKind::Local.steps();
                &all[..all.len() - 1]
            }
            _ => self.kind().steps(),
        }
    }
}

/// The key of an entry in one map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntryKey {
    /// Maps keyed by OpenFlow number (and LOCAL_PORTS, whose ifindex key
    /// the datapath translates). Raw, so that a number no port may have
    /// (0, 65535) can still be named, and removed.
    Port(u32),
    PortKey {
        vni: u32,
        port_key: u16,
    },
    Mac {
        vni: u32,
        mac: MacAddr,
    },
    /// IPv4 as `IpAddr::V4`, never IPv4-mapped (see `IpAddr::to_canonical`).
    Neigh {
        vni: u32,
        ip: IpAddr,
    },
    Tunnel(TunnelKey),
}

/// The identity of one map entry: its key and the port number it belongs
/// to. Every map in the gateway either is keyed by the number or maps to
/// it, which is what lets the reconciler find entries no port owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MapEntry {
    pub key: EntryKey,
    /// `None`: the entry names no usable number (0 or reserved), or no
    /// owner at all, so no port can own it.
    pub ofport: Option<OfPort>,
}

impl MapEntry {
    /// The entry `object` (numbered, or behind a tunnel numbered, `ofport`)
    /// needs in `step`'s map, or `None` if it has no entry there.
    pub fn for_step(step: Step, object: Object<'_>, ofport: OfPort) -> Option<MapEntry> {
        if !object.steps().contains(&step) {
            return None;
        }
        let number = u32::from(ofport.get());
        let key = match (step, object) {
            (Step::Record | Step::Devmap | Step::LocalPort | Step::TunnelPort, _) => EntryKey::Port(number),
            (Step::PortKey, Object::Port(PortSpec::Local(p))) => {
                EntryKey::PortKey { vni: p.vni.get(), port_key: p.port_key.get() }
            }
            (Step::Fdb, Object::Port(PortSpec::Local(p))) => EntryKey::Mac { vni: p.vni.get(), mac: p.mac },
            (Step::Neigh, Object::Port(PortSpec::Local(p))) => EntryKey::Neigh { vni: p.vni.get(), ip: p.ip?.get() },
            (Step::TunnelByRemote, Object::Port(p)) => EntryKey::Tunnel(p.tunnel_key()?),
            (Step::RemoteFdb, Object::Binding(b)) => EntryKey::Mac { vni: b.vni.get(), mac: b.mac },
            (Step::RemoteNeigh, Object::Binding(b)) => EntryKey::Neigh { vni: b.vni.get(), ip: b.ip?.get() },
            _ => return None,
        };
        Some(MapEntry { key, ofport: Some(ofport) })
    }

    /// `for_step` of a port.
    pub fn of_port(step: Step, port: &PortSpec, ofport: OfPort) -> Option<MapEntry> {
        Self::for_step(step, Object::Port(port), ofport)
    }

    /// `for_step` of a binding behind tunnel `ofport`.
    pub fn of_binding(step: Step, binding: &Binding, ofport: OfPort) -> Option<MapEntry> {
        Self::for_step(step, Object::Binding(binding), ofport)
    }
}

impl fmt::Display for MapEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key {
            EntryKey::Port(p) => write!(f, "ofport {p}")?,
            EntryKey::PortKey { vni, port_key } => write!(f, "VNI {vni} port key {port_key}")?,
            EntryKey::Mac { vni, mac } => write!(f, "VNI {vni} MAC {mac}")?,
            EntryKey::Neigh { vni, ip } => write!(f, "VNI {vni} IP {ip}")?,
            EntryKey::Tunnel(k) => write!(f, "{k}")?,
        }
        match (self.key, self.ofport) {
            (EntryKey::Port(_), Some(_)) => Ok(()),
            (_, Some(p)) => write!(f, " -> ofport {p}"),
            (_, None) => f.write_str(" (no owner)"),
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
    /// A local port's `ifname` does not resolve in the gateway's namespace.
    #[error("ifname: no interface {ifname:?}")]
    NoInterface { ifname: String },
    #[error("{}", std::io::Error::from_raw_os_error(*.errno))]
    Os { errno: i32 },
    #[error("{0}")]
    Other(String),
}

/// A multicast group's entry as the datapath holds it (`GROUPS`): its
/// members by number, local ports first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupEntry {
    pub local: Vec<u16>,
    pub tunnels: Vec<u16>,
    pub rate_pps: u32,
}

/// The BPF maps, as the port map sees them.
pub trait Datapath {
    /// Adds the entry `object` needs in `step`'s map, naming `ofport` (a
    /// port's own number, a binding's tunnel's). Must not overwrite: an
    /// existing key is `MapError::Exists` (`BPF_NOEXIST`), since
    /// overwriting would silently steal another owner's entry.
    fn insert(&mut self, step: Step, object: Object<'_>, ofport: OfPort) -> Result<(), MapError>;

    /// Removes the entry with `entry.key` from `step`'s map. An absent key
    /// is `MapError::NotFound`, which callers treat as done.
    fn remove(&mut self, step: Step, entry: &MapEntry) -> Result<(), MapError>;

    /// Every entry currently in `step`'s map of the kind `step` writes
    /// (FDB's local entries for `Fdb`, its remote ones for `RemoteFdb`).
    fn list(&self, step: Step) -> Result<Vec<MapEntry>, MapError>;

    /// Whether the entry present for `object` in `step` holds the value
    /// it needs, beyond key and owner (`list` only shows those): a changed
    /// ifindex, or a crash between a replace's delete and add, leaves a
    /// right key with a wrong value. `reconcile` rewrites it.
    fn is_current(&self, _step: Step, _object: Object<'_>, _ofport: OfPort) -> Result<bool, MapError> {
        Ok(true)
    }

    /// The underlay next hop of the tunnels to `remote`: written into the
    /// TUNNELS entries of `tunnels` (the committed ones to `remote`) now,
    /// and into every entry to `remote` inserted later. Returns the
    /// tunnels whose entry changed.
    fn set_nexthop(&mut self, remote: IpAddr, mac: MacAddr, tunnels: &[OfPort]) -> Result<Vec<OfPort>, MapError>;

    /// Writes (or, with `None`, removes) the group `key` of `vni`. One map
    /// entry, replaced whole: a packet sees the old members or the new.
    fn set_group(&mut self, vni: u32, key: u16, entry: Option<&GroupEntry>) -> Result<(), MapError>;

    /// Every group entry in the datapath.
    fn groups(&self) -> Result<std::collections::BTreeMap<(u32, u16), GroupEntry>, MapError>;
}
