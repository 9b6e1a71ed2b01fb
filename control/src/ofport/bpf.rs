//! `Datapath` over the real BPF maps (`xgw_common::maps`), through aya.
//!
//! Every insert uses `BPF_NOEXIST`, so an existing key is `Exists`, never
//! overwritten. Interface names are resolved in the calling thread's
//! network namespace, which is also where the kernel resolves DEVMAP's
//! ifindex: use a `BpfDatapath` from a thread inside the gateway's
//! namespace.
//!
//! Tunnels are written with a zero `nexthop_mac`: resolving the underlay
//! next hop (route, then neighbour) belongs to the datapath's owner, which
//! keeps it current as the neighbour table changes; `is_current` ignores
//! the field so a reconcile does not undo that.

use std::cell::RefCell;
use std::collections::HashMap as StdHashMap;
use std::ffi::CString;
use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;

use aya::maps::xdp::XdpMapError;
use aya::maps::{DevMapHash, HashMap, Map, MapData, MapError as AyaMapError};
use aya::Ebpf;
use thiserror::Error;
use xgw_common::maps::{
    self as wire, names, FdbEntry, FdbKey, LocalPort, Neigh, NeighKey, PortKey, Tunnel, DEVMAP_UPLINK, FDB_LOCAL,
    TUNNEL_BFD, TUNNEL_IPV6, TUNNEL_OVN_METADATA,
};

use super::maps::{Datapath, EntryKey, MapEntry, MapError, Step};
use super::number::OfPort;
use super::spec::{self, MacAddr, PortSpec, TunnelKey};
use crate::datapath::Generation;

/// `BPF_NOEXIST`: fail with EEXIST rather than overwrite.
const NOEXIST: u64 = 1;

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

/// The configuration maps a port may have entries in.
pub struct BpfDatapath {
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
            devmap: typed(&mut take, names::DEVMAP)?,
            local_ports: typed(&mut take, names::LOCAL_PORTS)?,
            port_keys: typed(&mut take, names::PORT_KEYS)?,
            fdb: typed(&mut take, names::FDB)?,
            neigh: typed(&mut take, names::NEIGH)?,
            tunnels: typed(&mut take, names::TUNNELS)?,
            by_remote: typed(&mut take, names::TUNNEL_BY_REMOTE)?,
            max_entries: StdHashMap::new(),
            ifindex_of: RefCell::default(),
            generation: Generation::open(&take(names::GENERATION)?)
                .map_err(|cause| OpenMapsError::Generation { cause })?,
        };
        for &step in Step::ALL {
            let name = step.map_name();
            let info = dp.map_data(step).info().map_err(|cause| OpenMapsError::Map { name, cause })?;
            dp.max_entries.insert(step, info.max_entries());
        }
        Ok(dp)
    }

    /// The flow caches' generation, as this datapath's writes leave it.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// The capacity of `step`'s map, as the kernel reports it.
    pub fn max_entries(&self, step: Step) -> u32 {
        self.max_entries.get(&step).copied().unwrap_or(0)
    }

    fn map_data(&self, step: Step) -> &MapData {
        use aya::maps::IterableMap;
        match step {
            Step::Devmap => self.devmap.map(),
            Step::LocalPort => self.local_ports.map(),
            Step::PortKey => self.port_keys.map(),
            Step::Fdb => self.fdb.map(),
            Step::Neigh => self.neigh.map(),
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

fn ifindex(ifname: &str) -> Result<u32, MapError> {
    let missing = || MapError::NoInterface { ifname: ifname.to_owned() };
    let c = CString::new(ifname).map_err(|_| missing())?;
    // SAFETY: `c` is a valid NUL-terminated string for the whole call.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(missing()),
        index => Ok(index),
    }
}

fn ip16(ip: IpAddr) -> [u8; 16] {
    match ip.to_canonical() {
        IpAddr::V4(a) => wire::ipv4_mapped(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

fn ip_from16(bytes: [u8; 16]) -> IpAddr {
    Ipv6Addr::from(bytes).to_canonical()
}

fn owner(n: u32) -> Option<OfPort> {
    u16::try_from(n).ok().and_then(|n| OfPort::new(n).ok())
}

fn local(port: &PortSpec) -> Result<&spec::LocalPort, MapError> {
    match port {
        PortSpec::Local(p) => Ok(p),
        PortSpec::Tunnel(t) => Err(MapError::Other(format!("tunnel {:?} has no local-port entry", t.name))),
    }
}

fn tunnel(port: &PortSpec) -> Result<&spec::TunnelPort, MapError> {
    match port {
        PortSpec::Tunnel(t) => Ok(t),
        PortSpec::Local(p) => Err(MapError::Other(format!("local port {:?} has no tunnel entry", p.name))),
    }
}

fn fdb_entry(p: &spec::LocalPort, ofport: OfPort) -> FdbEntry {
    FdbEntry { ofport: ofport.get(), port_key: p.port_key, kind: FDB_LOCAL, _pad: [0; 3] }
}

fn local_port_value(p: &spec::LocalPort, ofport: OfPort) -> LocalPort {
    LocalPort { vni: p.vni, ofport: ofport.get(), port_key: p.port_key, mac: p.mac.0, _pad: [0; 2] }
}

fn tunnel_value(t: &spec::TunnelPort) -> Tunnel {
    let remote = t.remote.to_canonical();
    let mut flags = 0;
    if remote.is_ipv6() {
        flags |= TUNNEL_IPV6;
    }
    if t.ovn_metadata {
        flags |= TUNNEL_OVN_METADATA;
    }
    if t.bfd {
        flags |= TUNNEL_BFD;
    }
    Tunnel { remote: ip16(remote), nexthop_mac: [0; 6], flags, _pad: 0, vni: t.vni }
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
    wire::TunnelKey { remote: ip16(k.remote), vni: k.vni }
}

fn key_mismatch(step: Step, entry: &MapEntry) -> MapError {
    MapError::Other(format!("{step} is not keyed like {entry}"))
}

impl Datapath for BpfDatapath {
    fn insert(&mut self, step: Step, port: &PortSpec, ofport: OfPort) -> Result<(), MapError> {
        let number = u32::from(ofport.get());
        let _bump = self.generation.after_writes();
        let result = match step {
            Step::Devmap => {
                let ifindex = ifindex(&local(port)?.ifname)?;
                match self.devmap.insert(number, ifindex, None, NOEXIST) {
                    Ok(()) => Ok(()),
                    Err(XdpMapError::MapError(e)) => Err(e),
                    Err(e) => return Err(MapError::Other(e.to_string())),
                }
            }
            Step::LocalPort => {
                let p = local(port)?;
                let ifindex = ifindex(&p.ifname)?;
                let r = self.local_ports.insert(ifindex, local_port_value(p, ofport), NOEXIST);
                if r.is_ok() {
                    let mut cache = self.ifindex_of.borrow_mut();
                    cache.entry(number).or_default().push(ifindex);
                }
                r
            }
            Step::PortKey => {
                let p = local(port)?;
                self.port_keys.insert(port_key(p.vni, p.port_key), fdb_entry(p, ofport), NOEXIST)
            }
            Step::Fdb => {
                let p = local(port)?;
                self.fdb.insert(fdb_key(p.vni, p.mac), fdb_entry(p, ofport), NOEXIST)
            }
            Step::Neigh => {
                let p = local(port)?;
                let ip = p.ip.ok_or_else(|| MapError::Other(format!("local port {:?} has no ip", p.name)))?;
                self.neigh.insert(neigh_key(p.vni, ip), Neigh { mac: p.mac.0, _pad: [0; 2] }, NOEXIST)
            }
            Step::TunnelPort => self.tunnels.insert(number, tunnel_value(tunnel(port)?), NOEXIST),
            Step::TunnelByRemote => {
                let key = port.tunnel_key().ok_or_else(|| {
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
            (Step::Devmap, EntryKey::Port(n)) => self.devmap.remove(n),
            (Step::TunnelPort, EntryKey::Port(n)) => self.tunnels.remove(&n),
            (Step::LocalPort, EntryKey::Port(n)) => {
                let keys = self.local_port_keys(n)?;
                if keys.is_empty() {
                    return Err(MapError::NotFound);
                }
                for ifindex in keys {
                    self.local_ports.remove(&ifindex).map_err(|e| self.error(step, e))?;
                }
                self.ifindex_of.borrow_mut().remove(&n);
                Ok(())
            }
            (Step::PortKey, EntryKey::PortKey { vni, port_key: key }) => self.port_keys.remove(&port_key(vni, key)),
            (Step::Fdb, EntryKey::Mac { vni, mac }) => self.fdb.remove(&fdb_key(vni, mac)),
            (Step::Neigh, EntryKey::Neigh { vni, ip }) => self.neigh.remove(&neigh_key(vni, ip)),
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
            Step::Fdb => {
                for row in self.fdb.iter() {
                    let (k, v) = row.map_err(err)?;
                    // Remote MACs (behind tunnels) have another owner.
                    if v.kind == FDB_LOCAL {
                        let key = EntryKey::Mac { vni: k.vni, mac: MacAddr(k.mac) };
                        out.push(MapEntry { key, ofport: owner(v.ofport.into()) });
                    }
                }
            }
            Step::Neigh => {
                // NEIGH values carry no number: the owner is whoever owns
                // the MAC in FDB. Neighbours of remote MACs are not ours;
                // one whose MAC is in no FDB entry is nobody's.
                for row in self.neigh.iter() {
                    let (k, v) = row.map_err(err)?;
                    let ofport = match self.fdb.get(&FdbKey { vni: k.vni, mac: v.mac, _pad: [0; 2] }, 0) {
                        Ok(f) if f.kind == FDB_LOCAL => owner(f.ofport.into()),
                        Ok(_) => continue,
                        Err(AyaMapError::KeyNotFound) => None,
                        Err(e) => return Err(self.error(Step::Fdb, e)),
                    };
                    let key = EntryKey::Neigh { vni: k.vni, ip: ip_from16(k.ip) };
                    out.push(MapEntry { key, ofport });
                }
            }
            Step::TunnelByRemote => {
                for row in self.by_remote.iter() {
                    let (k, v) = row.map_err(err)?;
                    let key = EntryKey::Tunnel(TunnelKey { remote: ip_from16(k.remote), vni: k.vni });
                    out.push(MapEntry { key, ofport: owner(v) });
                }
            }
        }
        Ok(out)
    }

    fn is_current(&self, step: Step, port: &PortSpec, ofport: OfPort) -> Result<bool, MapError> {
        let number = u32::from(ofport.get());
        let found = |r: Result<bool, AyaMapError>| match r {
            Ok(same) => Ok(same),
            Err(AyaMapError::KeyNotFound) => Ok(false),
            Err(e) => Err(self.error(step, e)),
        };
        match step {
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
                found(self.local_ports.get(&ifindex, 0).map(|v| only_here && v == local_port_value(p, ofport)))
            }
            Step::PortKey => {
                let p = local(port)?;
                found(self.port_keys.get(&port_key(p.vni, p.port_key), 0).map(|v| v == fdb_entry(p, ofport)))
            }
            Step::Fdb => {
                let p = local(port)?;
                found(self.fdb.get(&fdb_key(p.vni, p.mac), 0).map(|v| v == fdb_entry(p, ofport)))
            }
            Step::Neigh => {
                let p = local(port)?;
                let Some(ip) = p.ip else { return Ok(false) };
                found(self.neigh.get(&neigh_key(p.vni, ip), 0).map(|v| v.mac == p.mac.0))
            }
            Step::TunnelPort => {
                let want = tunnel_value(tunnel(port)?);
                found(self.tunnels.get(&number, 0).map(|v| Tunnel { nexthop_mac: [0; 6], ..v } == want))
            }
            // Key and value (the number) are all there is; `list` saw both.
            Step::TunnelByRemote => Ok(true),
        }
    }
}
