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
use xgw_common::maps::{self as wire, names::*};

use crate::netns::unique_name;

/// Key bytes -> value bytes.
pub type Raw = BTreeMap<Vec<u8>, Vec<u8>>;
/// Map name -> contents.
pub type Maps = BTreeMap<&'static str, Raw>;

/// The maps a port can have entries in.
pub const PORT_MAPS: [&str; 7] = [DEVMAP, LOCAL_PORTS, PORT_KEYS, FDB, NEIGH, TUNNELS, TUNNEL_BY_REMOTE];

pub const VNI: u32 = 5001;

pub fn tunnel(name: &str, remote: IpAddr, vni: u32) -> PortSpec {
    PortSpec::Tunnel(TunnelPort { name: name.into(), remote, vni, bfd: true, ovn_metadata: true, ofport_request: None })
}

/// Tunnel `i`, to a distinct chassis in 2001:db8::/32.
pub fn tunnel_n(i: u32) -> PortSpec {
    let remote = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16);
    tunnel(&format!("t{i}"), remote.into(), VNI)
}

pub fn local(name: &str, ifname: &str, port_key: u16, ip: Option<IpAddr>) -> PortSpec {
    PortSpec::Local(LocalPort {
        name: name.into(),
        ifname: ifname.into(),
        vni: VNI,
        port_key,
        mac: MacAddr([0x02, 0, 0x5e, 0x30, (port_key >> 8) as u8, port_key as u8]),
        ip,
        ofport_request: None,
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
    let devmap = devmap(dir)
        .iter()
        .map(|r| r.map(|(k, v)| (bytes(&k), bytes(&v.if_index))).expect("DEVMAP"))
        .collect();
    BTreeMap::from([
        (DEVMAP, devmap),
        (LOCAL_PORTS, read_hash::<u32, wire::LocalPort>(dir, LOCAL_PORTS)),
        (PORT_KEYS, read_hash::<wire::PortKey, wire::FdbEntry>(dir, PORT_KEYS)),
        (FDB, read_hash::<wire::FdbKey, wire::FdbEntry>(dir, FDB)),
        (NEIGH, read_hash::<wire::NeighKey, wire::Neigh>(dir, NEIGH)),
        (TUNNELS, read_hash::<u32, wire::Tunnel>(dir, TUNNELS)),
        (TUNNEL_BY_REMOTE, read_hash::<wire::TunnelKey, u32>(dir, TUNNEL_BY_REMOTE)),
    ])
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
    for r in records {
        let n = r.ofport.get();
        match &r.spec {
            PortSpec::Local(p) => {
                let ifx = ifindex(&p.ifname);
                let fdb = wire::FdbEntry { ofport: n, port_key: p.port_key, kind: wire::FDB_LOCAL, _pad: [0; 3] };
                put(DEVMAP, bytes(&u32::from(n)), bytes(&ifx));
                let lp = wire::LocalPort { vni: p.vni, ofport: n, port_key: p.port_key, mac: p.mac.0, _pad: [0; 2] };
                put(LOCAL_PORTS, bytes(&ifx), bytes(&lp));
                put(PORT_KEYS, bytes(&wire::PortKey { vni: p.vni, port_key: p.port_key, _pad: 0 }), bytes(&fdb));
                put(FDB, bytes(&wire::FdbKey { vni: p.vni, mac: p.mac.0, _pad: [0; 2] }), bytes(&fdb));
                if let Some(ip) = p.ip {
                    put(NEIGH, bytes(&wire::NeighKey { vni: p.vni, ip: ip16(ip) }), bytes(&wire::Neigh { mac: p.mac.0, _pad: [0; 2] }));
                }
            }
            PortSpec::Tunnel(t) => {
                let remote = ip16(t.remote);
                let v6 = remote[..12] != wire::ipv4_mapped([0; 4])[..12];
                let flags = (v6 as u8 * wire::TUNNEL_IPV6)
                    | (t.ovn_metadata as u8 * wire::TUNNEL_OVN_METADATA)
                    | (t.bfd as u8 * wire::TUNNEL_BFD);
                let tunnel = wire::Tunnel { remote, nexthop_mac: [0; 6], flags, _pad: 0, vni: t.vni };
                put(TUNNELS, bytes(&u32::from(n)), bytes(&tunnel));
                put(TUNNEL_BY_REMOTE, bytes(&wire::TunnelKey { remote, vni: t.vni }), bytes(&u32::from(n)));
            }
        }
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
