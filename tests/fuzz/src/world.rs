//! The configuration the fuzzer runs against: a gateway with an uplink, three
//! local ports in two VNIs, three tunnels (IPv4 with OVN's option, IPv6
//! without, and one in the second VNI) and a remote binding behind each.
//! BFD sessions listen on two of the tunnels (OVS-style, inside Geneve) and
//! for two single-hop peers on the uplink, one of them with echo.
//! Everything lives in one namespace so that the ifindexes test_run and the
//! devmap resolve are real interfaces.
use std::collections::BTreeMap;

use xgw_common::{bfd::State, counters::PortStats, maps::*};
use xgw_tests::{addrs::*, gateway::TestGateway, netns::Netns};

pub const VNI_A: u32 = VNI;
pub const VNI_B: u32 = 0x00ab_cdef;
pub const MTU: u32 = 1500;

/// Every program in the datapath object. The first three are the product;
/// the last three are benchmark baselines, fuzzed all the same.
pub const PROGRAMS: [&str; 8] =
    ["xgw_uplink", "xgw_local", "xgw_probe", "xgw_pass", "xgw_drop", "xgw_redirect", "xgw_strip", "xgw_push"];

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
    /// Port security on: the VM may send only from `mac`, `ip4` and `ip6`.
    pub secured: bool,
}

/// Where a packet enters the program under test (its ingress ifindex).
#[derive(Debug, Clone)]
pub enum Ingress {
    Port(Port),
    Uplink,
    /// An interface that is neither (`lo`).
    Other,
}

impl Ingress {
    pub fn port(&self) -> Option<&Port> {
        match self {
            Ingress::Port(p) => Some(p),
            _ => None,
        }
    }

    /// The corpus's name for it.
    pub fn name(&self) -> &'static str {
        match self {
            Ingress::Port(p) => p.ifname,
            Ingress::Uplink => "up0",
            Ingress::Other => "-",
        }
    }
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

/// A BFD session of the gateway: its slot, the path its packets arrive on,
/// and what the controller configured (what answers must carry).
#[derive(Debug, Clone)]
pub struct BfdPeer {
    pub slot: u32,
    pub path: BfdPathKey,
    pub local_disc: u32,
    pub sport: u16,
    pub echo: bool,
}

/// Desired Min TX and Required Min RX the sessions advertise (µs): tiny, so
/// that the datapath's own answers (rate-limited to 3/4 of the interval)
/// are not all suppressed at fuzzing speed.
pub const BFD_ADV_US: u32 = 1;
pub const BFD_MULT: u8 = 3;

pub struct World {
    pub gw: TestGateway,
    pub ns: Netns,
    pub uplink_ifindex: u32,
    pub ports: Vec<Port>,
    pub tunnels: Vec<Tun>,
    pub remotes: Vec<Remote>,
    pub bfd: Vec<BfdPeer>,
}

const fn mac(last: u8) -> [u8; 6] {
    [0x02, 0x00, 0x5e, 0x30, 0x00, last]
}
const fn ip6(last: u8) -> [u8; 16] {
    [0x20, 0x01, 0x0d, 0xb8, 0, 0x30, 0, 0, 0, 0, 0, 0, 0, 0, 0, last]
}
pub const HV2_IP4: [u8; 4] = [198, 51, 100, 3];
/// Single-hop BFD peers on the uplink: a router with echo, one without.
pub const ROUTER_IP4: [u8; 4] = HV_IP4;
pub const ROUTER2_IP4: [u8; 4] = [198, 51, 100, 4];

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
            // p2 without, so that both paths are fuzzed.
            secured: last != 2,
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
            gw.add_tunnel(
                t.ofport as u32,
                Tunnel { remote: t.remote, nexthop_mac: HV_MAC, flags, _pad: 0, vni: t.vni },
            );
        }
        for p in &ports {
            let mut lp = LocalPort { vni: p.vni, ofport: p.ofport, port_key: p.key, mac: p.mac, ..Default::default() };
            if p.secured {
                lp.sec = PORTSEC_ON | PORTSEC_RESTRICTED | PORTSEC_HAS_IP | PORTSEC_MORE_IPS;
                lp.ip = ipv4_mapped(p.ip4);
                let mut ps = PortSecurity { count: 3, ..Default::default() };
                let row = |kind, ip| PortSecurityRow { mac: p.mac, kind, _pad: 0, ip };
                ps.rows[0] = row(PS_ROW_MAC_RESTRICTED, [0; 16]);
                ps.rows[1] = row(PS_ROW_IP, ipv4_mapped(p.ip4));
                ps.rows[2] = row(PS_ROW_IP, p.ip6);
                gw.set_port_security(p.ofport, ps);
            }
            gw.add_local_port(p.ifindex, lp);
            gw.add_neigh(p.vni, ipv4_mapped(p.ip4), p.mac);
            gw.add_neigh(p.vni, p.ip6, p.mac);
        }
        for r in &remotes {
            gw.add_remote(r.vni, r.mac, Some(ipv4_mapped(r.ip4)), r.tunnel, r.key);
        }
        let geneve = |vni, peer| BfdPathKey { kind: BFD_PATH_GENEVE, id: vni, peer };
        let single = |ip| BfdPathKey { kind: BFD_PATH_SINGLE_HOP, id: uplink_ifindex, peer: ipv4_mapped(ip) };
        let bfd = [
            (geneve(VNI_A, tunnels[0].remote), false),
            (geneve(VNI_A, tunnels[1].remote), false),
            (single(ROUTER_IP4), true),
            (single(ROUTER2_IP4), false),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (path, echo))| BfdPeer {
            slot: i as u32,
            path,
            local_disc: 0x5eed_0000 | i as u32,
            sport: 49152 + i as u16,
            echo,
        })
        .collect();
        let mut w = World { gw, ns, uplink_ifindex, ports, tunnels, remotes, bfd };
        for b in w.bfd.clone() {
            w.gw.add_bfd_path(b.path, b.slot);
        }
        w.reset_bfd();
        w
    }

    /// Every session Up with a stale controller heartbeat, as after a
    /// controller crash: the state in which the datapath answers peers
    /// itself. The fuzzer calls it now and then, since its packets move the
    /// sessions' state.
    pub fn reset_bfd(&mut self) {
        for b in self.bfd.clone() {
            let echo = if b.echo { BFD_ECHO } else { 0 };
            self.gw.set_bfd_session(
                b.slot,
                BfdSession {
                    ctl_local_disc: b.local_disc,
                    ctl_flags: BFD_ENABLED | echo,
                    ctl_path: b.path,
                    ctl_mult: BFD_MULT,
                    ctl_sport: b.sport,
                    ctl_cfg_tx_us: BFD_ADV_US,
                    ctl_adv_tx_us: BFD_ADV_US,
                    ctl_adv_rx_us: BFD_ADV_US,
                    state: State::Up as u8,
                    remote_state: State::Up as u8,
                    remote_disc: 0x0bad_cafe,
                    remote_min_rx: BFD_ADV_US,
                    remote_min_tx: BFD_ADV_US,
                    remote_mult: BFD_MULT,
                    ..BfdSession::default()
                },
            );
        }
    }

    /// The session listening on `path`, if any.
    pub fn bfd_on(&self, path: &BfdPathKey) -> Option<&BfdPeer> {
        self.bfd.iter().find(|b| b.path == *path)
    }

    pub fn ingress_ifindex(&self, i: &Ingress) -> u32 {
        match i {
            Ingress::Port(p) => p.ifindex,
            Ingress::Uplink => self.uplink_ifindex,
            Ingress::Other => 1,
        }
    }

    pub fn ingress_named(&self, name: &str) -> Ingress {
        match self.ports.iter().find(|p| p.ifname == name) {
            Some(p) => Ingress::Port(p.clone()),
            None if name == "up0" => Ingress::Uplink,
            None => Ingress::Other,
        }
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
            bfd_drops: self.gw.bfd_drops(),
            bfd: self.gw.bfd_counters(),
            sessions: self.bfd.iter().map(|b| self.gw.bfd_session(b.slot)).collect(),
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
    pub bfd_drops: BTreeMap<&'static str, u64>,
    pub bfd: [u64; BFD_COUNTERS_LEN as usize],
    /// Each BFD session, by slot.
    pub sessions: Vec<BfdSession>,
}

/// What one packet changed in the counters.
#[derive(Debug, Default)]
pub struct Delta {
    pub drops: Vec<(&'static str, u64)>,
    pub replies: Vec<(&'static str, u64)>,
    /// ofport -> (rx packets, tx packets) added.
    pub rx: BTreeMap<u32, u64>,
    pub tx: BTreeMap<u32, u64>,
    pub bfd_drops: Vec<(&'static str, u64)>,
    /// `BFD_COUNTERS` slots that moved: (slot, added).
    pub bfd: Vec<(u32, u64)>,
    /// Slots of the BFD sessions whose value changed.
    pub sessions: Vec<u32>,
}

impl Delta {
    pub fn between(a: &Snapshot, b: &Snapshot) -> Delta {
        let diff = |x: &BTreeMap<&'static str, u64>, y: &BTreeMap<&'static str, u64>| {
            y.iter().filter(|&(k, v)| *v != x[k]).map(|(k, v)| (*k, v - x[k])).collect()
        };
        let mut d = Delta {
            drops: diff(&a.drops, &b.drops),
            replies: diff(&a.replies, &b.replies),
            bfd_drops: diff(&a.bfd_drops, &b.bfd_drops),
            bfd: (0..a.bfd.len()).filter(|&i| a.bfd[i] != b.bfd[i]).map(|i| (i as u32, b.bfd[i] - a.bfd[i])).collect(),
            sessions: (0..a.sessions.len()).filter(|&i| a.sessions[i] != b.sessions[i]).map(|i| i as u32).collect(),
            ..Delta::default()
        };
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

    pub fn bfd_drop_count(&self) -> u64 {
        self.bfd_drops.iter().map(|d| d.1).sum()
    }

    /// How much `BFD_COUNTERS` slot `slot` moved.
    pub fn bfd(&self, slot: u32) -> u64 {
        self.bfd.iter().find(|c| c.0 == slot).map_or(0, |c| c.1)
    }

    /// Nothing BFD moved: no counter, no drop, no session.
    pub fn bfd_quiet(&self) -> bool {
        self.bfd.is_empty() && self.bfd_drops.is_empty() && self.sessions.is_empty()
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
