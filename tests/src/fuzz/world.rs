//! The configuration the fuzzer runs against: a gateway with an uplink, three
//! local ports in two VNIs, three tunnels (IPv4 with OVN's option, IPv6
//! without, and one in the second VNI) and a remote binding behind each.
//! Everything lives in one namespace so that the ifindexes test_run and the
//! devmap resolve are real interfaces.
use std::collections::BTreeMap;

use xgw_common::{
    counters::PortStats,
    maps::{ipv4_mapped, LocalPort, Tunnel, Uplink, TUNNEL_IPV6, TUNNEL_OVN_METADATA, UPLINK_HAS_IP4, UPLINK_HAS_IP6},
};

use crate::{addrs::*, gateway::TestGateway, netns::Netns};

pub const VNI_A: u32 = VNI;
pub const VNI_B: u32 = 0x00ab_cdef;
pub const MTU: u32 = 1500;

/// Every program in the datapath object. The first three are the product;
/// the last three are benchmark baselines, fuzzed all the same.
pub const PROGRAMS: [&str; 6] = ["xgw_uplink", "xgw_local", "xgw_probe", "xgw_pass", "xgw_drop", "xgw_redirect"];

#[derive(Debug, Clone)]
pub struct Port {
    pub ifname: &'static str,
    pub ifindex: u32,
    pub ofport: u16,
    pub vni: u32,
    pub key: u16,
    pub mac: [u8; 6],
    pub ip4: [u8; 4],
    pub ip6: [u8; 16],
}

#[derive(Debug, Clone)]
pub struct Tun {
    pub ofport: u16,
    pub remote: [u8; 16],
    pub v6: bool,
    pub ovn: bool,
    pub vni: u32,
}

#[derive(Debug, Clone)]
pub struct Remote {
    pub vni: u32,
    pub mac: [u8; 6],
    pub ip4: [u8; 4],
    pub tunnel: u16,
    pub key: u16,
}

pub struct World {
    pub gw: TestGateway,
    pub ns: Netns,
    pub uplink_ifindex: u32,
    pub ports: Vec<Port>,
    pub tunnels: Vec<Tun>,
    pub remotes: Vec<Remote>,
}

const fn mac(last: u8) -> [u8; 6] {
    [0x02, 0x00, 0x5e, 0x30, 0x00, last]
}
const fn ip6(last: u8) -> [u8; 16] {
    [0x20, 0x01, 0x0d, 0xb8, 0, 0x30, 0, 0, 0, 0, 0, 0, 0, 0, 0, last]
}
pub const HV2_IP4: [u8; 4] = [198, 51, 100, 3];

impl World {
    pub fn new() -> World {
        let ns = Netns::new("fz");
        ns.disable_ipv6();
        for (a, b) in [("up0", "up0p"), ("p1", "p1p"), ("p2", "p2p"), ("p3", "p3p")] {
            ns.ok(&["ip", "link", "add", a, "type", "veth", "peer", "name", b]);
            ns.ok(&["ip", "link", "set", a, "up"]);
            ns.ok(&["ip", "link", "set", b, "up"]);
        }
        let port = |ifname, ofport, vni, key, last| Port {
            ifname,
            ifindex: ns.ifindex(ifname),
            ofport,
            vni,
            key,
            mac: mac(last),
            ip4: [203, 0, 113, last],
            ip6: ip6(last),
        };
        let ports = vec![port("p1", 1, VNI_A, 0x11, 1), port("p2", 2, VNI_A, 0x12, 2), port("p3", 3, VNI_B, 0x13, 3)];
        let tunnels = vec![
            Tun { ofport: 10, remote: ipv4_mapped(HV_IP4), v6: false, ovn: true, vni: VNI_A },
            Tun { ofport: 11, remote: HV_IP6, v6: true, ovn: false, vni: VNI_A },
            Tun { ofport: 12, remote: ipv4_mapped(HV2_IP4), v6: false, ovn: true, vni: VNI_B },
        ];
        let remotes = vec![
            Remote { vni: VNI_A, mac: mac(0x21), ip4: [203, 0, 113, 0x21], tunnel: 10, key: 0x21 },
            Remote { vni: VNI_A, mac: mac(0x22), ip4: [203, 0, 113, 0x22], tunnel: 11, key: 0x22 },
            Remote { vni: VNI_B, mac: mac(0x23), ip4: [203, 0, 113, 0x23], tunnel: 12, key: 0x23 },
        ];

        let mut gw = TestGateway::load(&PROGRAMS);
        gw.in_netns(&ns);
        let uplink_ifindex = ns.ifindex("up0");
        gw.set_uplink(Uplink {
            ifindex: uplink_ifindex,
            mtu: MTU,
            mac: GW_MAC,
            flags: UPLINK_HAS_IP4 | UPLINK_HAS_IP6,
            _pad: 0,
            ip4: GW_IP4,
            ip6: GW_IP6,
        });
        gw.set_uplink_devmap(uplink_ifindex);
        for t in &tunnels {
            let flags = if t.v6 { TUNNEL_IPV6 } else { 0 } | if t.ovn { TUNNEL_OVN_METADATA } else { 0 };
            gw.add_tunnel(t.ofport as u32, Tunnel { remote: t.remote, nexthop_mac: HV_MAC, flags, _pad: 0, vni: t.vni });
        }
        for p in &ports {
            gw.add_local_port(p.ifindex, LocalPort { vni: p.vni, ofport: p.ofport, port_key: p.key, mac: p.mac, _pad: [0; 2] });
            gw.add_neigh(p.vni, ipv4_mapped(p.ip4), p.mac);
            gw.add_neigh(p.vni, p.ip6, p.mac);
        }
        for r in &remotes {
            gw.add_remote(r.vni, r.mac, Some(ipv4_mapped(r.ip4)), r.tunnel, r.key);
        }
        World { gw, ns, uplink_ifindex, ports, tunnels, remotes }
    }

    pub fn port_by_ofport(&self, ofport: u32) -> Option<&Port> {
        self.ports.iter().find(|p| p.ofport as u32 == ofport)
    }

    pub fn tunnel_by_ofport(&self, ofport: u32) -> Option<&Tun> {
        self.tunnels.iter().find(|t| t.ofport as u32 == ofport)
    }

    /// Every MAC bound in `vni`, local or remote: the only MACs an ARP or
    /// ND answer in that VNI may carry.
    pub fn macs_in(&self, vni: u32) -> Vec<[u8; 6]> {
        let local = self.ports.iter().filter(|p| p.vni == vni).map(|p| p.mac);
        local.chain(self.remotes.iter().filter(|r| r.vni == vni).map(|r| r.mac)).collect()
    }

    /// Every OpenFlow number the configuration uses.
    pub fn ofports(&self) -> Vec<u32> {
        let p = self.ports.iter().map(|p| p.ofport as u32);
        p.chain(self.tunnels.iter().map(|t| t.ofport as u32)).collect()
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            drops: self.gw.drops(),
            replies: self.gw.replies(),
            ports: self.ofports().into_iter().map(|o| (o, self.gw.port_stats(o))).collect(),
        }
    }
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

/// The datapath's counters at one moment, summed over CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub drops: BTreeMap<&'static str, u64>,
    pub replies: BTreeMap<&'static str, u64>,
    pub ports: BTreeMap<u32, PortStats>,
}

/// What one packet changed in the counters.
#[derive(Debug, Default)]
pub struct Delta {
    pub drops: Vec<(&'static str, u64)>,
    pub replies: Vec<(&'static str, u64)>,
    /// ofport -> (rx packets, tx packets) added.
    pub rx: BTreeMap<u32, u64>,
    pub tx: BTreeMap<u32, u64>,
}

impl Delta {
    pub fn between(a: &Snapshot, b: &Snapshot) -> Delta {
        let diff = |x: &BTreeMap<&'static str, u64>, y: &BTreeMap<&'static str, u64>| {
            y.iter().filter_map(|(k, v)| (*v != x[k]).then(|| (*k, v - x[k]))).collect()
        };
        let mut d = Delta { drops: diff(&a.drops, &b.drops), replies: diff(&a.replies, &b.replies), ..Delta::default() };
        for (o, s) in &b.ports {
            let before = &a.ports[o];
            if s.rx.packets != before.rx.packets {
                d.rx.insert(*o, s.rx.packets - before.rx.packets);
            }
            if s.tx.packets != before.tx.packets {
                d.tx.insert(*o, s.tx.packets - before.tx.packets);
            }
        }
        d
    }

    pub fn drop_count(&self) -> u64 {
        self.drops.iter().map(|d| d.1).sum()
    }

    pub fn reply_count(&self) -> u64 {
        self.replies.iter().map(|d| d.1).sum()
    }

    /// The one port whose tx counter rose by one, if exactly one did.
    pub fn single_tx(&self) -> Option<u32> {
        match self.tx.iter().collect::<Vec<_>>()[..] {
            [(o, 1)] => Some(*o),
            _ => None,
        }
    }
}
