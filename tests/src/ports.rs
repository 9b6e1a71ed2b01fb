//! Port-map tests on the real maps: port specs, a state directory guard,
//! and the maps read back byte for byte, beside the bytes the committed
//! ports should have produced. The expected bytes are written out here
//! from `xgw_common::maps` (the kernel contract), not with the
//! controller's own encoder, so an encoding mistake shows up as a diff.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv6Addr},
    path::{Path, PathBuf},
};

use aya::{
    maps::{DevMapHash, HashMap, Map, MapData},
    Pod,
};
use xgw::ofport::{LocalPort, MacAddr, PortRecord, PortSpec, TunnelPort};
use xgw::types::{IfName, Name, PortKey, UnicastIp, Vni};
use xgw_common::maps::{self as wire, names::*};

use crate::netns::unique_name;

/// Key bytes -> value bytes.
pub type Raw = BTreeMap<Vec<u8>, Vec<u8>>;
/// Map name -> contents.
pub type Maps = BTreeMap<&'static str, Raw>;

/// The maps a port can have entries in.
/// VNIS is derived from PORT_KEYS (how many local ports serve each VNI).
pub const PORT_MAPS: [&str; 9] =
    [DEVMAP, LOCAL_PORTS, PORT_SECURITY, PORT_KEYS, FDB, NEIGH, TUNNELS, TUNNEL_BY_REMOTE, VNIS];

pub const VNI: u32 = 5001;

pub fn tunnel(name: &str, remote: IpAddr, vni: u32) -> PortSpec {
    PortSpec::Tunnel(TunnelPort {
        name: Name::new(name).expect("test name"),
        remote: UnicastIp::new(remote).expect("test address"),
        vni: Some(Vni::new(vni).expect("test vni")),
        bfd: true,
        ovn_metadata: true,
        ofport_request: None,
        bfd_timers: Default::default(),
    })
}

/// Tunnel `i`, to a distinct chassis in 2001:db8::/32.
pub fn tunnel_n(i: u32) -> PortSpec {
    let remote = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16);
    tunnel(&format!("t{i}"), remote.into(), VNI)
}

pub fn local(name: &str, ifname: &str, port_key: u16, ip: Option<IpAddr>) -> PortSpec {
    PortSpec::Local(LocalPort {
        name: Name::new(name).expect("test name"),
        ifname: IfName::new(ifname).expect("test ifname"),
        vni: Vni::new(VNI).expect("test vni"),
        port_key: PortKey::new(port_key).expect("test key"),
        mac: MacAddr([0x02, 0, 0x5e, 0x30, (port_key >> 8) as u8, port_key as u8]),
        ip: ip.map(|ip| UnicastIp::new(ip).expect("test address")),
        ofport_request: None,
        port_security: true,
        allowed: Vec::new(),
    })
}

/// A directory removed (with its contents) on drop.
#[derive(Debug)]
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique_name(tag));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub fn bytes<T: Pod>(t: &T) -> Vec<u8> {
    // SAFETY: Pod types are plain bytes with no padding left uninitialised
    // (the common crate spells out every pad field).
    unsafe { std::slice::from_raw_parts((t as *const T).cast::<u8>(), std::mem::size_of::<T>()) }.to_vec()
}

fn open(dir: &Path, name: &str) -> Map {
    let data = MapData::from_pin(dir.join(name)).unwrap_or_else(|e| panic!("open pinned {name}: {e}"));
    Map::from_map_data(data).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A pinned hash map, typed.
pub fn hash<K: Pod, V: Pod>(dir: &Path, name: &str) -> HashMap<MapData, K, V> {
    HashMap::try_from(open(dir, name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub fn devmap(dir: &Path) -> DevMapHash<MapData> {
    DevMapHash::try_from(open(dir, DEVMAP)).expect("DEVMAP")
}

fn read_hash<K: Pod, V: Pod>(dir: &Path, name: &str) -> Raw {
    hash::<K, V>(dir, name)
        .iter()
        .map(|r| r.map(|(k, v)| (bytes(&k), bytes(&v))).unwrap_or_else(|e| panic!("{name}: {e}")))
        .collect()
}

/// Every port map pinned in `dir`, read through aya. DEVMAP values are the
/// ifindex (4 bytes).
pub fn read_maps(dir: &Path) -> Maps {
    let devmap = devmap(dir).iter().map(|r| r.map(|(k, v)| (bytes(&k), bytes(&v.if_index))).expect("DEVMAP")).collect();
    BTreeMap::from([
        (DEVMAP, devmap),
        (LOCAL_PORTS, read_hash::<u32, wire::LocalPort>(dir, LOCAL_PORTS)),
        (PORT_SECURITY, read_hash::<u32, wire::PortSecurity>(dir, PORT_SECURITY)),
        (PORT_KEYS, read_hash::<wire::PortKey, wire::FdbEntry>(dir, PORT_KEYS)),
        (FDB, read_hash::<wire::FdbKey, wire::FdbEntry>(dir, FDB)),
        (NEIGH, read_hash::<wire::NeighKey, wire::Neigh>(dir, NEIGH)),
        (TUNNELS, read_hash::<u32, wire::Tunnel>(dir, TUNNELS)),
        (TUNNEL_BY_REMOTE, read_hash::<wire::TunnelKey, u32>(dir, TUNNEL_BY_REMOTE)),
        (VNIS, read_hash::<u32, u32>(dir, VNIS)),
    ])
}

/// `PORT_RECORDS`: each port's record copy, decoded as a rebuild decodes it.
pub fn read_records(dir: &Path) -> BTreeMap<u32, PortSpec> {
    hash::<u32, wire::PortRecordCopy>(dir, PORT_RECORDS)
        .iter()
        .map(|r| {
            let (k, v) = r.expect("PORT_RECORDS");
            (k, PortSpec::from_record_copy(&v).expect("a record copy decodes"))
        })
        .collect()
}

/// `bpftool -j map dump pinned`, as raw key/value bytes: the operator's
/// view, independent of aya.
pub fn bpftool_dump(dir: &Path, name: &str) -> Raw {
    let path = dir.join(name);
    let out = crate::sh(&["bpftool", "-j", "map", "dump", "pinned", path.to_str().unwrap()]);
    let entries: serde_json::Value = serde_json::from_str(&out).expect("bpftool JSON");
    let hex = |v: &serde_json::Value| -> Vec<u8> {
        v.as_array()
            .expect("byte array")
            .iter()
            .map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
            .collect()
    };
    entries.as_array().expect("entries").iter().map(|e| (hex(&e["key"]), hex(&e["value"]))).collect()
}

fn ip16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => wire::ipv4_mapped(a.octets()),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => wire::ipv4_mapped(v4.octets()),
            None => a.octets(),
        },
    }
}

/// What the maps must hold for `records` and nothing else; `ifindex`
/// resolves a local port's interface. `extra` entries (the uplink) are
/// added as given.
pub fn expected_maps<'a>(records: impl IntoIterator<Item = &'a PortRecord>, ifindex: impl Fn(&str) -> u32) -> Maps {
    let mut m: Maps = PORT_MAPS.iter().map(|n| (*n, Raw::new())).collect();
    let mut put = |name: &'static str, k: Vec<u8>, v: Vec<u8>| {
        assert!(m.get_mut(name).unwrap().insert(k, v).is_none(), "two ports share a {name} key");
    };
    let mut served: BTreeMap<u32, u32> = BTreeMap::new();
    for r in records {
        let n = r.ofport.get();
        match &r.spec {
            PortSpec::Local(p) => {
                let ifx = ifindex(&p.ifname);
                let (vni, port_key) = (p.vni.get(), p.port_key.get());
                *served.entry(vni).or_default() += 1;
                let fdb = wire::FdbEntry { ofport: n, port_key, kind: wire::FDB_LOCAL, _pad: [0; 3] };
                put(DEVMAP, bytes(&u32::from(n)), bytes(&ifx));
                // Port security, written out for what the tests' ports
                // have: on, the port's own MAC and IP, nothing more.
                assert!(p.port_security && p.allowed.is_empty(), "expected_maps knows plain ports only");
                let ip = p.ip.map(|ip| ip16(ip.get()));
                let sec = wire::PORTSEC_ON | ip.map_or(0, |_| wire::PORTSEC_RESTRICTED | wire::PORTSEC_HAS_IP);
                let lp = wire::LocalPort {
                    vni,
                    ofport: n,
                    port_key,
                    mac: p.mac.0,
                    sec,
                    _pad: 0,
                    ip: ip.unwrap_or_default(),
                };
                put(LOCAL_PORTS, bytes(&ifx), bytes(&lp));
                let mut ps = wire::PortSecurity::default();
                let kind = if ip.is_some() { wire::PS_ROW_MAC_RESTRICTED } else { wire::PS_ROW_MAC };
                ps.rows[0] = wire::PortSecurityRow { mac: p.mac.0, kind, _pad: 0, ip: [0; 16] };
                ps.count = 1;
                if let Some(ip) = ip {
                    ps.rows[1] = wire::PortSecurityRow { mac: p.mac.0, kind: wire::PS_ROW_IP, _pad: 0, ip };
                    ps.count = 2;
                }
                put(PORT_SECURITY, bytes(&u32::from(n)), bytes(&ps));
                put(PORT_KEYS, bytes(&wire::PortKey { vni, port_key, _pad: 0 }), bytes(&fdb));
                put(FDB, bytes(&wire::FdbKey { vni, mac: p.mac.0, _pad: [0; 2] }), bytes(&fdb));
                if let Some(ip) = p.ip {
                    put(
                        NEIGH,
                        bytes(&wire::NeighKey { vni, ip: ip16(ip.get()) }),
                        bytes(&wire::Neigh { mac: p.mac.0, _pad: [0; 2] }),
                    );
                }
            }
            PortSpec::Tunnel(t) => {
                let remote = ip16(t.remote.get());
                let v6 = remote[..12] != wire::ipv4_mapped([0; 4])[..12];
                let flags = (v6 as u8 * wire::TUNNEL_IPV6) | (t.ovn_metadata as u8 * wire::TUNNEL_OVN_METADATA);
                let vni = t.vni.map_or(wire::TUNNEL_KEY_FLOW, |v| v.get());
                let tunnel = wire::Tunnel { remote, nexthop_mac: [0; 6], flags, _pad: 0, vni };
                put(TUNNELS, bytes(&u32::from(n)), bytes(&tunnel));
                put(TUNNEL_BY_REMOTE, bytes(&wire::TunnelKey { remote, vni }), bytes(&u32::from(n)));
            }
        }
    }
    for (vni, count) in served {
        put(VNIS, bytes(&vni), bytes(&count));
    }
    m
}

/// Every OpenFlow number anywhere in `maps` (keys of number-keyed maps,
/// numbers inside values), except the uplink's DEVMAP slot.
pub fn numbers_in(maps: &Maps) -> Vec<(&'static str, u32)> {
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let u16_at = |b: &[u8], at: usize| u32::from(u16::from_le_bytes(b[at..at + 2].try_into().unwrap()));
    let mut out = Vec::new();
    for (&name, raw) in maps {
        for (k, v) in raw {
            let n = match name {
                DEVMAP if u32_at(k, 0) == wire::DEVMAP_UPLINK => continue,
                DEVMAP | TUNNELS => u32_at(k, 0),
                LOCAL_PORTS => u16_at(v, 4),
                PORT_KEYS | FDB => u16_at(v, 0),
                TUNNEL_BY_REMOTE => u32_at(v, 0),
                _ => continue,
            };
            out.push((name, n));
        }
    }
    out
}

/// Panics if a map or a record carries 0, 65535 or anything from 0xff00.
pub fn assert_no_reserved_numbers<'a>(maps: &Maps, records: impl IntoIterator<Item = &'a PortRecord>) {
    for (name, n) in numbers_in(maps) {
        assert!((1..0xff00).contains(&n), "{name} holds OpenFlow number {n}");
    }
    for r in records {
        assert!((1..0xff00).contains(&r.ofport.get()), "store holds {} on {}", r.name(), r.ofport);
    }
}

/// The port map as the controller runs it on real maps.
pub type Pm = xgw::ofport::PortMap<xgw::ofport::BpfDatapath, xgw::ofport::RedbStore>;

/// A gateway namespace with its own bpffs (the pinned maps) and state
/// directory (redb), all removed on drop.
pub struct PortGw {
    pub ns: crate::Netns,
    pub bpffs: crate::BpfFs,
    pub state: TempDir,
}

impl PortGw {
    pub fn new(tag: &str, max_entries: &[(&str, u32)]) -> PortGw {
        let gw = PortGw { ns: crate::Netns::new(tag), bpffs: crate::BpfFs::new(tag), state: TempDir::new(tag) };
        // Creates and pins the maps; the controller below reopens them.
        xgw::datapath::load_with(xgw::datapath::LoadOptions { pin_dir: Some(&gw.bpffs.dir), max_entries })
            .expect("load datapath");
        gw
    }

    pub fn pins(&self) -> &Path {
        &self.bpffs.dir
    }

    /// The port map as a (re)started controller opens it: pinned maps,
    /// durable store in `state_dir` (normally `self.state`).
    pub fn open_in(&self, state_dir: &Path, config: xgw::ofport::AllocatorConfig) -> Pm {
        let dp = xgw::ofport::BpfDatapath::open_pinned(self.pins()).expect("open pinned maps");
        let store = xgw::ofport::RedbStore::open(state_dir).expect("open store");
        xgw::ofport::PortMap::open(dp, store, config).expect("open port map")
    }

    pub fn open(&self, config: xgw::ofport::AllocatorConfig) -> Pm {
        self.open_in(&self.state.path, config)
    }

    /// A veth pair inside the namespace; returns the ifindex of `name`.
    pub fn veth(&self, name: &str) -> u32 {
        let peer = format!("{name}p");
        self.ns.ok(&["ip", "link", "add", name, "type", "veth", "peer", "name", &peer]);
        self.ns.ifindex(name)
    }
}

/// What `xgw-churn`'s journal says happened, across its restarts.
#[derive(Debug, Default)]
pub struct Journal {
    /// Port name -> its number if the last acknowledged operation added
    /// it, `None` if it deleted it.
    pub want: BTreeMap<String, Option<u16>>,
    /// Ports whose operation was begun but not acknowledged when a kill
    /// came (it may or may not have happened), until a later acknowledged
    /// operation on that port settles it.
    pub uncertain: std::collections::BTreeSet<String>,
    /// The `start` line of each run (its reconcile report).
    pub restarts: Vec<String>,
    /// Acknowledged operations.
    pub acked: usize,
    /// The operation begun and not yet answered, if the journal ends there.
    pub inflight: Option<String>,
}

impl Journal {
    /// The whole journal, after the last kill.
    pub fn replay(text: &str) -> Journal {
        let mut j = Journal::default();
        j.feed(text);
        j.uncertain.extend(j.inflight.take());
        j
    }

    /// Takes more complete lines of the journal.
    pub fn feed(&mut self, text: &str) {
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["start", rest @ ..] => {
                    self.uncertain.extend(self.inflight.take());
                    self.restarts.push(rest.join(" "));
                }
                ["begin", _, name] => self.inflight = Some(name.to_string()),
                ["ok", op, name, n] => {
                    let n: u16 = n.parse().expect("number");
                    self.want.insert(name.to_string(), (*op == "add").then_some(n));
                    self.uncertain.remove(*name);
                    self.inflight = None;
                    self.acked += 1;
                }
                // Refused: nothing changed, the outcome is known.
                ["err", ..] => self.inflight = None,
                _ => panic!("unexpected journal line {line:?}"),
            }
        }
    }

    /// Whether `name`'s last operation may or may not have happened.
    pub fn is_uncertain(&self, name: &str) -> bool {
        self.uncertain.contains(name) || self.inflight.as_deref() == Some(name)
    }
}

/// Reads a growing file's complete lines, from where the last call stopped.
#[derive(Debug, Default)]
pub struct Tail {
    offset: u64,
}

impl Tail {
    pub fn read(&mut self, path: &Path) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(path) else { return String::new() };
        let mut buf = String::new();
        f.seek(SeekFrom::Start(self.offset)).expect("seek");
        f.read_to_string(&mut buf).expect("read");
        // A line still being written stays for the next call.
        let complete = buf.rfind('\n').map_or(0, |i| i + 1);
        buf.truncate(complete);
        self.offset += complete as u64;
        buf
    }
}
