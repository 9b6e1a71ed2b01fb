//! `Datapath` over the real BPF maps (`xgw_common::maps`), through aya.
//!
//! Every insert uses `BPF_NOEXIST`, so an existing key is `Exists`, never
//! overwritten. Interface names are resolved in the calling thread's
//! network namespace, which is also where the kernel resolves DEVMAP's
//! ifindex: use a `BpfDatapath` from a thread inside the gateway's
//! namespace.
//!
//! A tunnel's `nexthop_mac` is the one `set_nexthop` last gave for its
//! remote (zeroes before): resolving the underlay next hop (route, then
//! neighbour) belongs to the daemon, which tells this, the one writer of
//! TUNNELS, as the neighbour table changes; `is_current` ignores the field
//! so a reconcile does not undo that.

use std::cell::RefCell;
use std::collections::HashMap as StdHashMap;
use std::ffi::CString;
use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;

use aya::maps::xdp::XdpMapError;
use aya::maps::{Array, DevMapHash, HashMap, Map, MapData, MapError as AyaMapError};
use aya::Ebpf;
use thiserror::Error;
use xgw_common::maps::{
    self as wire, names, FdbEntry, FdbKey, LocalPort, Neigh, NeighKey, PortKey, Tunnel, Uplink, DEVMAP_UPLINK,
    FDB_LOCAL, FDB_REMOTE, TUNNEL_IPV6, TUNNEL_OVN_METADATA,
};

use super::maps::{Datapath, EntryKey, GroupEntry, MapEntry, MapError, Step};
use super::number::OfPort;
use super::spec::{self, ip16, Binding, MacAddr, Object, PortSpec, TunnelKey};
use crate::datapath::Generation;

/// `BPF_NOEXIST`: fail with EEXIST rather than overwrite.
const NOEXIST: u64 = 1;
/// `BPF_EXIST`: fail with ENOENT rather than create.
const EXIST: u64 = 2;

#[derive(Debug, Error)]
pub enum OpenMapsError {
    #[error("the datapath has no map {name}")]
    Missing { name: &'static str },
    #[error("map {name}: {cause}")]
    Map { name: &'static str, cause: AyaMapError },
    /// aya's error says only which syscall failed; the path and the OS
    /// error are what an operator can act on (no bpffs, not pinned yet).
    #[error("pinned map {}: {}", path.display(), with_sources(cause))]
    Pinned { path: std::path::PathBuf, cause: AyaMapError },
    #[error("map {}: {cause:#}", names::GENERATION)]
    Generation { cause: anyhow::Error },
    #[error("map {name}: rebuilding it: {cause}")]
    Derived { name: &'static str, cause: MapError },
}

/// `e` followed by its sources: "`BPF_OBJ_GET` failed: No such file or directory".
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The configuration maps: those a port or binding may have entries in,
/// and UPLINK. This is their one userspace writer, and so the one place
/// that bumps the flow caches' GENERATION after a write.
pub struct BpfDatapath {
    uplink: Array<MapData, Uplink>,
    devmap: DevMapHash<MapData>,
    local_ports: HashMap<MapData, u32, LocalPort>,
    port_keys: HashMap<MapData, PortKey, FdbEntry>,
    fdb: HashMap<MapData, FdbKey, FdbEntry>,
    neigh: HashMap<MapData, NeighKey, Neigh>,
    tunnels: HashMap<MapData, u32, Tunnel>,
    by_remote: HashMap<MapData, wire::TunnelKey, u32>,
    /// Read from the kernel (a pinned map keeps the size it was created
    /// with, whatever the object now says).
    max_entries: StdHashMap<Step, u32>,
    /// OpenFlow number (as found in LOCAL_PORTS values) -> LOCAL_PORTS
    /// keys, so that finding a local port's entry needs no scan. Entries
    /// are checked against the map before use; a miss or a stale entry
    /// rebuilds the whole cache with one scan (so a restarted controller
    /// scans once, not once per port). `list` rebuilds it too.
    ifindex_of: RefCell<StdHashMap<u32, Vec<u32>>>,
    /// Bumped after every insert and remove: the flow caches mirror most of
    /// these maps, and a bump is cheap enough not to ask which.
    generation: Generation,
    /// `set_nexthop`'s MACs by remote, for tunnels inserted later.
    nexthops: StdHashMap<IpAddr, [u8; 6]>,
    /// VNIS, derived from PORT_KEYS (one entry per local port): a VNI is
    /// served while a port has it. Counted here, and rebuilt from
    /// PORT_KEYS when the maps are opened, so a crash between the two
    /// writes heals at the next start.
    vnis: HashMap<MapData, u32, u32>,
    served: StdHashMap<u32, u32>,
    groups: HashMap<MapData, wire::GroupKey, wire::Group>,
    /// DEVMAP's ifindexes by number, for the flood program (TC cannot read
    /// a devmap): written with every DEVMAP entry of a port.
    port_ifindex: Array<MapData, u32>,
    /// A local port's port security by number, written with its
    /// LOCAL_PORTS entry (before it, so the port is never live without it)
    /// and removed after it.
    port_security: HashMap<MapData, u32, wire::PortSecurity>,
    /// Each committed port's record (`Step::Record`).
    records: HashMap<MapData, u32, wire::PortRecordCopy>,
}

impl BpfDatapath {
    /// Takes the maps out of a loaded datapath object.
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self, OpenMapsError> {
        Self::build(|name| ebpf.take_map(name).ok_or(OpenMapsError::Missing { name }))
    }

    /// Opens the maps pinned in `dir` (see `xgw::datapath::load_pinned`),
    /// as a restarted controller does.
    pub fn open_pinned(dir: &Path) -> Result<Self, OpenMapsError> {
        Self::build(|name| {
            let path = dir.join(name);
            let data = MapData::from_pin(&path).map_err(|cause| OpenMapsError::Pinned { path, cause })?;
            Map::from_map_data(data).map_err(|cause| OpenMapsError::Map { name, cause })
        })
    }

    fn build(mut take: impl FnMut(&'static str) -> Result<Map, OpenMapsError>) -> Result<Self, OpenMapsError> {
        fn typed<T: TryFrom<Map, Error = AyaMapError>>(
            take: &mut impl FnMut(&'static str) -> Result<Map, OpenMapsError>,
            name: &'static str,
        ) -> Result<T, OpenMapsError> {
            T::try_from(take(name)?).map_err(|cause| OpenMapsError::Map { name, cause })
        }
        let mut dp = BpfDatapath {
            uplink: typed(&mut take, names::UPLINK)?,
            devmap: typed(&mut take, names::DEVMAP)?,
            local_ports: typed(&mut take, names::LOCAL_PORTS)?,
            port_keys: typed(&mut take, names::PORT_KEYS)?,
            fdb: typed(&mut take, names::FDB)?,
            neigh: typed(&mut take, names::NEIGH)?,
            tunnels: typed(&mut take, names::TUNNELS)?,
            by_remote: typed(&mut take, names::TUNNEL_BY_REMOTE)?,
            max_entries: StdHashMap::new(),
            ifindex_of: RefCell::default(),
            nexthops: StdHashMap::new(),
            vnis: typed(&mut take, names::VNIS)?,
            served: StdHashMap::new(),
            groups: typed(&mut take, names::GROUPS)?,
            port_ifindex: typed(&mut take, names::PORT_IFINDEX)?,
            port_security: typed(&mut take, names::PORT_SECURITY)?,
            records: typed(&mut take, names::PORT_RECORDS)?,
            generation: Generation::open(&take(names::GENERATION)?)
                .map_err(|cause| OpenMapsError::Generation { cause })?,
        };
        for &step in Step::ALL {
            let name = step.map_name();
            let info = dp.map_data(step).info().map_err(|cause| OpenMapsError::Map { name, cause })?;
            dp.max_entries.insert(step, info.max_entries());
        }
        dp.sync_vnis().map_err(|e| OpenMapsError::Derived { name: names::VNIS, cause: e })?;
        dp.sync_port_ifindex().map_err(|e| OpenMapsError::Derived { name: names::PORT_IFINDEX, cause: e })?;
        dp.sync_port_security().map_err(|e| OpenMapsError::Derived { name: names::PORT_SECURITY, cause: e })?;
        Ok(dp)
    }

    /// Removes PORT_SECURITY entries of numbers LOCAL_PORTS has no port
    /// under (a crash between the two writes); a live port's entry is
    /// checked with its LOCAL_PORTS entry by `is_current`.
    fn sync_port_security(&mut self) -> Result<(), MapError> {
        let mut live = std::collections::HashSet::new();
        for row in self.local_ports.iter() {
            let (_, v) = row.map_err(os_error)?;
            live.insert(u32::from(v.ofport));
        }
        let stale: Vec<u32> = self.port_security.keys().filter_map(Result::ok).filter(|n| !live.contains(n)).collect();
        for n in stale {
            self.port_security.remove(&n).map_err(os_error)?;
        }
        Ok(())
    }

    /// Makes PORT_IFINDEX hold exactly DEVMAP's ports.
    fn sync_port_ifindex(&mut self) -> Result<(), MapError> {
        let mut want = vec![0u32; 0xff00];
        for row in self.devmap.iter() {
            let (key, value) = row.map_err(os_error)?;
            if let Some(slot) = want.get_mut(key as usize) {
                *slot = value.if_index;
            }
        }
        for (n, ifindex) in want.into_iter().enumerate() {
            if self.port_ifindex.get(&(n as u32), 0).map_err(os_error)? != ifindex {
                self.port_ifindex.set(n as u32, ifindex, 0).map_err(os_error)?;
            }
        }
        Ok(())
    }

    /// Makes VNIS hold exactly the VNIs PORT_KEYS has entries of.
    fn sync_vnis(&mut self) -> Result<(), MapError> {
        let mut served = StdHashMap::new();
        for row in self.port_keys.iter() {
            let (k, _) = row.map_err(os_error)?;
            *served.entry(k.vni).or_insert(0) += 1;
        }
        let stale: Vec<u32> = self.vnis.keys().filter_map(Result::ok).filter(|v| !served.contains_key(v)).collect();
        for vni in stale {
            self.vnis.remove(&vni).map_err(os_error)?;
        }
        for (&vni, &count) in &served {
            self.vnis.insert(vni, count, 0).map_err(os_error)?;
        }
        self.served = served;
        Ok(())
    }
}

/// One more (`up`) or one fewer port serves `vni`.
fn count_vni(
    served: &mut StdHashMap<u32, u32>,
    vnis: &mut HashMap<MapData, u32, u32>,
    vni: u32,
    up: bool,
) -> Result<(), AyaMapError> {
    let count = served.entry(vni).or_insert(0);
    *count = if up { *count + 1 } else { count.saturating_sub(1) };
    match *count {
        0 => {
            served.remove(&vni);
            match vnis.remove(&vni) {
                Err(AyaMapError::KeyNotFound | AyaMapError::ElementNotFound) => Ok(()),
                r => r,
            }
        }
        n => vnis.insert(vni, n, 0),
    }
}

impl BpfDatapath {
    /// The flow caches' generation, as this datapath's writes leave it.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// The uplink's entry (interface, MTU, MAC, tunnel addresses), as the
    /// datapath reads it; `None` before the first `write_uplink`.
    pub fn uplink(&self) -> Result<Option<Uplink>, MapError> {
        match self.uplink.get(&0, 0) {
            Ok(u) if u.ifindex == 0 => Ok(None),
            Ok(u) => Ok(Some(u)),
            Err(e) => Err(os_error(e)),
        }
    }

    /// Writes the uplink's entry and its DEVMAP slot (the redirect target
    /// of encapsulated frames). The encap flow-cache slots hold outer
    /// headers built from UPLINK, so the bump retires them.
    pub fn write_uplink(&mut self, value: Uplink) -> Result<(), MapError> {
        let _bump = self.generation.after_writes();
        self.uplink.set(0, value, 0).map_err(os_error)?;
        match self.devmap.insert(DEVMAP_UPLINK, value.ifindex, None, 0) {
            Ok(()) => Ok(()),
            Err(XdpMapError::MapError(e)) => Err(os_error(e)),
            Err(e) => Err(MapError::Other(e.to_string())),
        }
    }

    /// The capacity of `step`'s map, as the kernel reports it.
    pub fn max_entries(&self, step: Step) -> u32 {
        self.max_entries.get(&step).copied().unwrap_or(0)
    }

    fn map_data(&self, step: Step) -> &MapData {
        use aya::maps::IterableMap;
        match step {
            Step::Record => self.records.map(),
            Step::Devmap => self.devmap.map(),
            Step::LocalPort => self.local_ports.map(),
            Step::PortKey => self.port_keys.map(),
            Step::Fdb | Step::RemoteFdb => self.fdb.map(),
            Step::Neigh | Step::RemoteNeigh => self.neigh.map(),
            Step::TunnelPort => self.tunnels.map(),
            Step::TunnelByRemote => self.by_remote.map(),
        }
    }

    fn error(&self, step: Step, e: AyaMapError) -> MapError {
        let errno = match &e {
            AyaMapError::KeyNotFound | AyaMapError::ElementNotFound => return MapError::NotFound,
            AyaMapError::SyscallError(s) => s.io_error.raw_os_error(),
            _ => None,
        };
        match errno {
            Some(libc::E2BIG | libc::ENOSPC) => MapError::Full { max_entries: self.max_entries(step) },
            Some(libc::EEXIST) => MapError::Exists,
            Some(libc::ENOENT) => MapError::NotFound,
            Some(errno) => MapError::Os { errno },
            None => MapError::Other(e.to_string()),
        }
    }

    /// LOCAL_PORTS keys holding `ofport`: the cached one if it still does,
    /// else every key found by a scan.
    fn local_port_keys(&self, ofport: u32) -> Result<Vec<u32>, MapError> {
        let owns = |ifindex: &u32| self.local_ports.get(ifindex, 0).is_ok_and(|v| u32::from(v.ofport) == ofport);
        let cached = self.ifindex_of.borrow().get(&ofport).cloned();
        if let Some(keys) = cached.filter(|k| k.iter().all(owns)) {
            return Ok(keys);
        }
        self.rescan_local_ports()?;
        Ok(self.ifindex_of.borrow().get(&ofport).cloned().unwrap_or_default())
    }

    fn rescan_local_ports(&self) -> Result<(), MapError> {
        let mut all: StdHashMap<u32, Vec<u32>> = StdHashMap::new();
        for row in self.local_ports.iter() {
            let (ifindex, value) = row.map_err(|e| self.error(Step::LocalPort, e))?;
            all.entry(u32::from(value.ofport)).or_default().push(ifindex);
        }
        *self.ifindex_of.borrow_mut() = all;
        Ok(())
    }
}

/// An error of a map that no port step writes (UPLINK, DEVMAP's uplink
/// slot): the OS error, or aya's words.
fn os_error(e: AyaMapError) -> MapError {
    match &e {
        AyaMapError::SyscallError(s) => match s.io_error.raw_os_error() {
            Some(errno) => MapError::Os { errno },
            None => MapError::Other(e.to_string()),
        },
        _ => MapError::Other(e.to_string()),
    }
}

fn ifindex(ifname: &str) -> Result<u32, MapError> {
    let missing = || MapError::NoInterface { ifname: ifname.to_owned() };
    let c = CString::new(ifname).map_err(|_| missing())?;
    // SAFETY: `c` is a valid NUL-terminated string for the whole call.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(missing()),
        index => Ok(index),
    }
}

fn ip_from16(bytes: [u8; 16]) -> IpAddr {
    Ipv6Addr::from(bytes).to_canonical()
}

fn owner(n: u32) -> Option<OfPort> {
    u16::try_from(n).ok().and_then(|n| OfPort::new(n).ok())
}

fn local(object: Object<'_>) -> Result<&spec::LocalPort, MapError> {
    match object {
        Object::Port(PortSpec::Local(p)) => Ok(p),
        other => Err(MapError::Other(format!("{} has no local-port entry", other.name()))),
    }
}

fn tunnel(object: Object<'_>) -> Result<&spec::TunnelPort, MapError> {
    match object {
        Object::Port(PortSpec::Tunnel(t)) => Ok(t),
        other => Err(MapError::Other(format!("{} has no tunnel entry", other.name()))),
    }
}

fn record_copy(object: Object<'_>) -> Result<wire::PortRecordCopy, MapError> {
    match object {
        Object::Port(p) => p.record_copy().map_err(MapError::Other),
        other => Err(MapError::Other(format!("{} has no port record", other.name()))),
    }
}

fn binding(object: Object<'_>) -> Result<&Binding, MapError> {
    match object {
        Object::Binding(b) => Ok(b),
        other => Err(MapError::Other(format!("{} is not a remote binding", other.name()))),
    }
}

fn fdb_entry(p: &spec::LocalPort, ofport: OfPort) -> FdbEntry {
    FdbEntry { ofport: ofport.get(), port_key: p.port_key.get(), kind: FDB_LOCAL, _pad: [0; 3] }
}

/// A binding's FDB value: its tunnel's number and the remote port's key.
fn remote_fdb_entry(b: &Binding, tunnel: OfPort) -> FdbEntry {
    FdbEntry { ofport: tunnel.get(), port_key: b.port_key.get(), kind: FDB_REMOTE, _pad: [0; 3] }
}

fn local_port_value(p: &spec::LocalPort, ofport: OfPort) -> LocalPort {
    p.wire(ofport.get())
}

fn tunnel_value(t: &spec::TunnelPort, nexthop_mac: [u8; 6]) -> Tunnel {
    let remote = t.remote.get();
    let mut flags = 0;
    if remote.is_ipv6() {
        flags |= TUNNEL_IPV6;
    }
    if t.ovn_metadata {
        flags |= TUNNEL_OVN_METADATA;
    }
    let vni = t.vni.map_or(wire::TUNNEL_KEY_FLOW, |v| v.get());
    Tunnel { remote: ip16(remote), nexthop_mac, flags, _pad: 0, vni }
}

fn port_key(vni: u32, port_key: u16) -> PortKey {
    PortKey { vni, port_key, _pad: 0 }
}

fn fdb_key(vni: u32, mac: MacAddr) -> FdbKey {
    FdbKey { vni, mac: mac.0, _pad: [0; 2] }
}

fn neigh_key(vni: u32, ip: IpAddr) -> NeighKey {
    NeighKey { vni, ip: ip16(ip) }
}

fn remote_key(k: &TunnelKey) -> wire::TunnelKey {
    wire::TunnelKey { remote: ip16(k.remote), vni: k.wire_vni() }
}

fn key_mismatch(step: Step, entry: &MapEntry) -> MapError {
    MapError::Other(format!("{step} is not keyed like {entry}"))
}

impl Datapath for BpfDatapath {
    fn insert(&mut self, step: Step, port: Object<'_>, ofport: OfPort) -> Result<(), MapError> {
        let number = u32::from(ofport.get());
        let _bump = self.generation.after_writes();
        let result = match step {
            Step::Record => {
                let copy = record_copy(port)?;
                self.records.insert(number, copy, NOEXIST)
            }
            Step::Devmap => {
                let ifindex = ifindex(&local(port)?.ifname)?;
                match self.devmap.insert(number, ifindex, None, NOEXIST) {
                    Ok(()) => self.port_ifindex.set(number, ifindex, 0).inspect_err(|_| {
                        let _ = self.devmap.remove(number);
                    }),
                    Err(XdpMapError::MapError(e)) => Err(e),
                    Err(e) => return Err(MapError::Other(e.to_string())),
                }
            }
            Step::LocalPort => {
                let p = local(port)?;
                let ifindex = ifindex(&p.ifname)?;
                // The number is this port's (the allocator reserved it), so
                // an entry under it can only be a leftover: overwritten.
                self.port_security.insert(number, p.wire_security(), 0).and_then(|()| {
                    let r = self.local_ports.insert(ifindex, local_port_value(p, ofport), NOEXIST);
                    match &r {
                        Ok(()) => self.ifindex_of.borrow_mut().entry(number).or_default().push(ifindex),
                        Err(_) => {
                            let _ = self.port_security.remove(&number);
                        }
                    }
                    r
                })
            }
            Step::PortKey => {
                let p = local(port)?;
                let key = port_key(p.vni.get(), p.port_key.get());
                self.port_keys.insert(key, fdb_entry(p, ofport), NOEXIST).and_then(|()| {
                    count_vni(&mut self.served, &mut self.vnis, key.vni, true).inspect_err(|_| {
                        // Served only if VNIS says so: undo, so the step fails whole.
                        let _ = self.port_keys.remove(&key);
                        let _ = count_vni(&mut self.served, &mut self.vnis, key.vni, false);
                    })
                })
            }
            Step::Fdb => {
                let p = local(port)?;
                self.fdb.insert(fdb_key(p.vni.get(), p.mac), fdb_entry(p, ofport), NOEXIST)
            }
            Step::Neigh => {
                let p = local(port)?;
                let ip = p.ip.ok_or_else(|| MapError::Other(format!("local port {:?} has no ip", p.name.as_str())))?;
                self.neigh.insert(neigh_key(p.vni.get(), ip.get()), Neigh { mac: p.mac.0, _pad: [0; 2] }, NOEXIST)
            }
            Step::RemoteFdb => {
                let b = binding(port)?;
                self.fdb.insert(fdb_key(b.vni.get(), b.mac), remote_fdb_entry(b, ofport), NOEXIST)
            }
            Step::RemoteNeigh => {
                let b = binding(port)?;
                let ip = b.ip.ok_or_else(|| MapError::Other(format!("{} has no ip", b.label())))?;
                self.neigh.insert(neigh_key(b.vni.get(), ip.get()), Neigh { mac: b.mac.0, _pad: [0; 2] }, NOEXIST)
            }
            Step::TunnelPort => {
                let t = tunnel(port)?;
                let nexthop = self.nexthops.get(&t.remote.get()).copied().unwrap_or_default();
                self.tunnels.insert(number, tunnel_value(t, nexthop), NOEXIST)
            }
            Step::TunnelByRemote => {
                let key = tunnel(port)?;
                let key = PortSpec::Tunnel(key.clone()).tunnel_key().ok_or_else(|| {
                    key_mismatch(step, &MapEntry { key: EntryKey::Port(number), ofport: Some(ofport) })
                })?;
                self.by_remote.insert(remote_key(&key), number, NOEXIST)
            }
        };
        result.map_err(|e| self.error(step, e))
    }

    fn remove(&mut self, step: Step, entry: &MapEntry) -> Result<(), MapError> {
        // LOCAL_PORTS may lose some keys and then fail: bump however it ends.
        let _bump = self.generation.after_writes();
        let result = match (step, entry.key) {
            (Step::Devmap, EntryKey::Port(n)) => {
                self.devmap.remove(n).and_then(|()| match self.port_ifindex.set(n, 0, 0) {
                    // A number outside the array (an orphan on 0xffff) has no slot.
                    Err(AyaMapError::OutOfBounds { .. }) => Ok(()),
                    r => r,
                })
            }
            (Step::TunnelPort, EntryKey::Port(n)) => self.tunnels.remove(&n),
            (Step::Record, EntryKey::Port(n)) => self.records.remove(&n),
            (Step::LocalPort, EntryKey::Port(n)) => {
                let keys = self.local_port_keys(n)?;
                if keys.is_empty() {
                    return Err(MapError::NotFound);
                }
                for ifindex in keys {
                    self.local_ports.remove(&ifindex).map_err(|e| self.error(step, e))?;
                }
                self.ifindex_of.borrow_mut().remove(&n);
                match self.port_security.remove(&n) {
                    Err(AyaMapError::KeyNotFound | AyaMapError::ElementNotFound) => Ok(()),
                    r => r,
                }
            }
            (Step::PortKey, EntryKey::PortKey { vni, port_key: key }) => self
                .port_keys
                .remove(&port_key(vni, key))
                .and_then(|()| count_vni(&mut self.served, &mut self.vnis, vni, false)),
            (Step::Fdb | Step::RemoteFdb, EntryKey::Mac { vni, mac }) => self.fdb.remove(&fdb_key(vni, mac)),
            (Step::Neigh | Step::RemoteNeigh, EntryKey::Neigh { vni, ip }) => self.neigh.remove(&neigh_key(vni, ip)),
            (Step::TunnelByRemote, EntryKey::Tunnel(k)) => self.by_remote.remove(&remote_key(&k)),
            _ => return Err(key_mismatch(step, entry)),
        };
        result.map_err(|e| self.error(step, e))
    }

    fn list(&self, step: Step) -> Result<Vec<MapEntry>, MapError> {
        let err = |e| self.error(step, e);
        let mut out = Vec::new();
        match step {
            Step::Devmap => {
                for key in self.devmap.keys() {
                    let key = key.map_err(err)?;
                    // The uplink is not a port: no port map owns it.
                    if key != DEVMAP_UPLINK {
                        out.push(MapEntry { key: EntryKey::Port(key), ofport: owner(key) });
                    }
                }
            }
            Step::TunnelPort => {
                for key in self.tunnels.keys() {
                    let key = key.map_err(err)?;
                    out.push(MapEntry { key: EntryKey::Port(key), ofport: owner(key) });
                }
            }
            Step::Record => {
                for key in self.records.keys() {
                    let key = key.map_err(err)?;
                    out.push(MapEntry { key: EntryKey::Port(key), ofport: owner(key) });
                }
            }
            Step::LocalPort => {
                self.rescan_local_ports()?;
                for &n in self.ifindex_of.borrow().keys() {
                    out.push(MapEntry { key: EntryKey::Port(n), ofport: owner(n) });
                }
            }
            Step::PortKey => {
                for row in self.port_keys.iter() {
                    let (k, v) = row.map_err(err)?;
                    let key = EntryKey::PortKey { vni: k.vni, port_key: k.port_key };
                    out.push(MapEntry { key, ofport: owner(v.ofport.into()) });
                }
            }
            Step::Fdb | Step::RemoteFdb => {
                // Local entries are ports', remote ones bindings'.
                let kind = if step == Step::Fdb { FDB_LOCAL } else { FDB_REMOTE };
                for row in self.fdb.iter() {
                    let (k, v) = row.map_err(err)?;
                    if v.kind == kind {
                        let key = EntryKey::Mac { vni: k.vni, mac: MacAddr(k.mac) };
                        out.push(MapEntry { key, ofport: owner(v.ofport.into()) });
                    }
                }
            }
            Step::Neigh | Step::RemoteNeigh => {
                // NEIGH values carry no number: the owner is whoever owns
                // the MAC in FDB, a local port (`Neigh`) or a binding
                // (`RemoteNeigh`, under its tunnel's number). One whose MAC
                // is in no FDB entry is nobody's, and listed by `Neigh`.
                let kind = if step == Step::Neigh { FDB_LOCAL } else { FDB_REMOTE };
                for row in self.neigh.iter() {
                    let (k, v) = row.map_err(err)?;
                    let ofport = match self.fdb.get(&FdbKey { vni: k.vni, mac: v.mac, _pad: [0; 2] }, 0) {
                        Ok(f) if f.kind == kind => owner(f.ofport.into()),
                        Ok(_) => continue,
                        Err(AyaMapError::KeyNotFound) if step == Step::Neigh => None,
                        Err(AyaMapError::KeyNotFound) => continue,
                        Err(e) => return Err(self.error(Step::Fdb, e)),
                    };
                    let key = EntryKey::Neigh { vni: k.vni, ip: ip_from16(k.ip) };
                    out.push(MapEntry { key, ofport });
                }
            }
            Step::TunnelByRemote => {
                for row in self.by_remote.iter() {
                    let (k, v) = row.map_err(err)?;
                    let key = EntryKey::Tunnel(TunnelKey::from_wire(ip_from16(k.remote), k.vni));
                    out.push(MapEntry { key, ofport: owner(v) });
                }
            }
        }
        Ok(out)
    }

    fn is_current(&self, step: Step, port: Object<'_>, ofport: OfPort) -> Result<bool, MapError> {
        let number = u32::from(ofport.get());
        let found = |r: Result<bool, AyaMapError>| match r {
            Ok(same) => Ok(same),
            Err(AyaMapError::KeyNotFound) => Ok(false),
            Err(e) => Err(self.error(step, e)),
        };
        match step {
            Step::Record => {
                let want = record_copy(port)?;
                found(self.records.get(&number, 0).map(|v| v.len == want.len && v.json == want.json))
            }
            Step::Devmap => {
                let Ok(ifindex) = ifindex(&local(port)?.ifname) else {
                    return Ok(false);
                };
                found(self.devmap.get(number, 0).map(|v| v.if_index == ifindex))
            }
            Step::LocalPort => {
                let p = local(port)?;
                let Ok(ifindex) = ifindex(&p.ifname) else {
                    return Ok(false);
                };
                // Also stale: the number under another interface too.
                let only_here = self.local_port_keys(number)? == [ifindex];
                let secured = found(self.port_security.get(&number, 0).map(|v| v == p.wire_security()))?;
                found(
                    self.local_ports.get(&ifindex, 0).map(|v| secured && only_here && v == local_port_value(p, ofport)),
                )
            }
            Step::PortKey => {
                let p = local(port)?;
                found(
                    self.port_keys.get(&port_key(p.vni.get(), p.port_key.get()), 0).map(|v| v == fdb_entry(p, ofport)),
                )
            }
            Step::Fdb => {
                let p = local(port)?;
                found(self.fdb.get(&fdb_key(p.vni.get(), p.mac), 0).map(|v| v == fdb_entry(p, ofport)))
            }
            Step::Neigh => {
                let p = local(port)?;
                let Some(ip) = p.ip else { return Ok(false) };
                found(self.neigh.get(&neigh_key(p.vni.get(), ip.get()), 0).map(|v| v.mac == p.mac.0))
            }
            Step::RemoteFdb => {
                let b = binding(port)?;
                found(self.fdb.get(&fdb_key(b.vni.get(), b.mac), 0).map(|v| v == remote_fdb_entry(b, ofport)))
            }
            Step::RemoteNeigh => {
                let b = binding(port)?;
                let Some(ip) = b.ip else { return Ok(false) };
                found(self.neigh.get(&neigh_key(b.vni.get(), ip.get()), 0).map(|v| v.mac == b.mac.0))
            }
            Step::TunnelPort => {
                let want = tunnel_value(tunnel(port)?, [0; 6]);
                found(self.tunnels.get(&number, 0).map(|v| Tunnel { nexthop_mac: [0; 6], ..v } == want))
            }
            // Key and value (the number) are all there is; `list` saw both.
            Step::TunnelByRemote => Ok(true),
        }
    }

    fn set_nexthop(&mut self, remote: IpAddr, mac: MacAddr, tunnels: &[OfPort]) -> Result<Vec<OfPort>, MapError> {
        let remote = remote.to_canonical();
        self.nexthops.insert(remote, mac.0);
        let wire_remote = ip16(remote);
        let _bump = self.generation.after_writes();
        let mut changed = Vec::new();
        for &ofport in tunnels {
            let key = u32::from(ofport.get());
            let t = match self.tunnels.get(&key, 0) {
                Ok(t) => t,
                Err(AyaMapError::KeyNotFound) => continue,
                Err(e) => return Err(self.error(Step::TunnelPort, e)),
            };
            if t.remote != wire_remote || t.nexthop_mac == mac.0 {
                continue;
            }
            // BPF_EXIST: only ever rewrites an entry the port map made.
            self.tunnels
                .insert(key, Tunnel { nexthop_mac: mac.0, ..t }, EXIST)
                .map_err(|e| self.error(Step::TunnelPort, e))?;
            changed.push(ofport);
        }
        Ok(changed)
    }

    fn set_group(&mut self, vni: u32, key: u16, entry: Option<&GroupEntry>) -> Result<(), MapError> {
        let _bump = self.generation.after_writes();
        let k = wire::GroupKey { vni, key, _pad: 0 };
        let result = match entry {
            Some(e) => {
                let mut g = wire::Group {
                    local: e.local.len() as u16,
                    count: (e.local.len() + e.tunnels.len()) as u16,
                    rate_pps: e.rate_pps,
                    ..Default::default()
                };
                if g.count as usize > wire::MAX_GROUP_MEMBERS {
                    return Err(MapError::Other(format!("{} members, at most {}", g.count, wire::MAX_GROUP_MEMBERS)));
                }
                for (slot, m) in g.members.iter_mut().zip(e.local.iter().chain(&e.tunnels)) {
                    *slot = *m;
                }
                self.groups.insert(k, g, 0)
            }
            None => self.groups.remove(&k),
        };
        result.map_err(|e| match e {
            AyaMapError::KeyNotFound | AyaMapError::ElementNotFound => MapError::NotFound,
            e => os_error(e),
        })
    }

    fn groups(&self) -> Result<std::collections::BTreeMap<(u32, u16), GroupEntry>, MapError> {
        let mut out = std::collections::BTreeMap::new();
        for row in self.groups.iter() {
            let (k, g) = row.map_err(os_error)?;
            let count = (g.count as usize).min(wire::MAX_GROUP_MEMBERS);
            let local = (g.local as usize).min(count);
            let entry = GroupEntry {
                local: g.members[..local].to_vec(),
                tunnels: g.members[local..count].to_vec(),
                rate_pps: g.rate_pps,
            };
            out.insert((k.vni, k.key), entry);
        }
        Ok(out)
    }
}
