//! TCP through two gateways (issue 21, item 3): one iperf3 stream from a VM
//! behind one xgw to a VM behind another, over a Geneve tunnel, beside the
//! same namespaces routed by the kernel without a tunnel.
//!
//!   tunnel: vm1 [eth0] -- [p] gw1 [ul] -- [ul] gw2 [p] -- [eth0] vm2
//!           xgw_local on p, xgw_uplink on ul, xgw_pass on the VMs' eth0
//!   routed: the same, the gateways forwarding IPv4 (no XDP on them)
//!   to OVS: vm1 [eth0] -- [p] gw1 [ul] -- [ul0] OVS 3.1 br-phy / br-int -- [vm0] vm2
//!           (OVS's default ports for its userspace datapath: AF_PACKET)
//!
//! Both have the same VM settings: checksum offload off (`tx off`, as xgw
//! needs: XDP sees a frame before a partial checksum is filled in, so TCP
//! is segmented by software GSO in the sender), MTU 1442 (room for the
//! outer IPv4 headers on the 1500-byte underlay, as OVN advertises to its
//! VMs), and `xgw_pass` on their eth0 (a veth delivers redirected frames
//! only to a peer running XDP, and it changes the receive path, so the
//! routed path gets it too).
use std::time::Duration;

use xgw_common::maps::*;
use xgw_tests::{
    gateway::TestGateway,
    netns::{Netns, Veth},
    ovs::{mac_str, VM_IF},
    Geneve, OvnKeys, OvsHypervisor,
};

use crate::{stats, Row};

const VNI: u32 = 5001;
const TUNNEL_OFPORT: u16 = 10;
const PORT_OFPORT: u16 = 3;
const VM_KEY: [u16; 2] = [0x0011, 0x0022];
const GW_MAC: [[u8; 6]; 2] = [[0x02, 0x00, 0x5e, 0x10, 0, 1], [0x02, 0x00, 0x5e, 0x10, 0, 2]];
const VM_MAC: [[u8; 6]; 2] = [[0x02, 0x00, 0x5e, 0x20, 0, 1], [0x02, 0x00, 0x5e, 0x20, 0, 2]];
const GW_IP: [[u8; 4]; 2] = [[198, 51, 100, 1], [198, 51, 100, 2]];
/// Tunnel: one logical switch. Routed: the VMs in two /28s, each behind
/// its gateway's `p` (.1 and .17).
const VM_IP: [[u8; 4]; 2] = [[203, 0, 113, 10], [203, 0, 113, 20]];
const ROUTED_GW_P: [&str; 2] = ["203.0.113.1/28", "203.0.113.17/28"];
const ROUTED_NET: [&str; 2] = ["203.0.113.0/28", "203.0.113.16/28"];
const VM_MTU: &str = "1442";

fn ip(a: [u8; 4]) -> String {
    std::net::Ipv4Addr::from(a).to_string()
}

struct Topology {
    // Drop order: datapaths detach before OVS stops and the namespaces go.
    dps: Vec<TestGateway>,
    ovs: Option<OvsHypervisor>,
    _gws: Vec<Netns>,
    vms: Vec<Netns>,
}

impl Topology {
    /// `tunnel`: xgw on both gateways; otherwise the kernel routes.
    fn new(tag: char, tunnel: bool) -> Topology {
        let gws: Vec<Netns> = (1..=2).map(|i| Netns::new(&format!("{tag}gw{i}"))).collect();
        let vms: Vec<Netns> = (1..=2).map(|i| Netns::new(&format!("{tag}vm{i}"))).collect();
        Veth::new(&gws[0], "ul", &format!("{}/24", ip(GW_IP[0])), &gws[1], "ul", &format!("{}/24", ip(GW_IP[1])));
        let mut dps = Vec::new();
        for i in 0..2 {
            let (gw, vm) = (&gws[i], &vms[i]);
            gw.ok(&["ip", "link", "set", "ul", "address", &mac_str(GW_MAC[i])]);
            let vm_addr = format!("{}/{}", ip(VM_IP[i]), if tunnel { 24 } else { 28 });
            Veth::new(gw, "p", if tunnel { "" } else { ROUTED_GW_P[i] }, vm, "eth0", &vm_addr);
            vm.ok(&["ip", "link", "set", "eth0", "address", &mac_str(VM_MAC[i])]);
            vm.ok(&["ethtool", "-K", "eth0", "tx", "off"]);
            vm.ok(&["ip", "link", "set", "eth0", "mtu", VM_MTU]);
            let other = 1 - i;
            if tunnel {
                // No flood group here: the VMs know each other's MAC.
                vm.ok(&["ip", "neigh", "replace", &ip(VM_IP[other]), "lladdr", &mac_str(VM_MAC[other]), "dev", "eth0"]);
            } else {
                let via = ROUTED_GW_P[i].split('/').next().unwrap();
                vm.ok(&["ip", "route", "add", "default", "via", via]);
                gw.ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
                gw.ok(&["ip", "route", "add", ROUTED_NET[other], "via", &ip(GW_IP[other])]);
            }
            let mut dp = TestGateway::load(&["xgw_uplink", "xgw_local", "xgw_pass"]);
            dp.in_netns(gw);
            if tunnel {
                let (up, port) = (gw.ifindex("ul"), gw.ifindex("p"));
                dp.set_uplink(Uplink {
                    ifindex: up,
                    mtu: 1500,
                    mac: GW_MAC[i],
                    flags: UPLINK_HAS_IP4,
                    _pad: 0,
                    ip4: GW_IP[i],
                    ip6: [0; 16],
                });
                dp.set_uplink_devmap(up);
                dp.add_tunnel(
                    TUNNEL_OFPORT as u32,
                    Tunnel {
                        remote: ipv4_mapped(GW_IP[other]),
                        nexthop_mac: GW_MAC[other],
                        flags: TUNNEL_OVN_METADATA,
                        _pad: 0,
                        vni: VNI,
                    },
                );
                dp.add_local_port(
                    port,
                    LocalPort {
                        vni: VNI,
                        ofport: PORT_OFPORT,
                        port_key: VM_KEY[i],
                        mac: VM_MAC[i],
                        ..Default::default()
                    },
                );
                dp.add_remote(VNI, VM_MAC[other], None, TUNNEL_OFPORT, VM_KEY[other]);
                dp.attach(gw, "xgw_uplink", "ul");
                dp.attach(gw, "xgw_local", "p");
            }
            dp.attach(vm, "xgw_pass", "eth0");
            dps.push(dp);
        }
        Topology { dps, ovs: None, _gws: gws, vms }
    }

    /// vm1 behind xgw, vm2 behind Open vSwitch: the tunnel row's first
    /// side, and OVS where its second gateway was.
    fn to_ovs(tag: char) -> Topology {
        let (gw, vm, hv) =
            (Netns::new(&format!("{tag}gw1")), Netns::new(&format!("{tag}vm1")), Netns::new(&format!("{tag}hv")));
        Veth::new(&gw, "ul", &format!("{}/24", ip(GW_IP[0])), &hv, "ul0", "");
        gw.ok(&["ip", "link", "set", "ul", "address", &mac_str(GW_MAC[0])]);
        Veth::new(&gw, "p", "", &vm, "eth0", &format!("{}/24", ip(VM_IP[0])));
        vm.ok(&["ip", "link", "set", "eth0", "address", &mac_str(VM_MAC[0])]);
        vm.ok(&["ethtool", "-K", "eth0", "tx", "off"]);
        vm.ok(&["ip", "link", "set", "eth0", "mtu", VM_MTU]);
        vm.ok(&["ip", "neigh", "replace", &ip(VM_IP[1]), "lladdr", &mac_str(VM_MAC[1]), "dev", "eth0"]);
        let ovs = OvsHypervisor::builder(hv, "ul0")
            .ip4(&format!("{}/24", ip(GW_IP[1])))
            .underlay_mac(GW_MAC[1])
            .vm(VM_MAC[1], Some(&format!("{}/24", ip(VM_IP[1]))), None)
            .start();
        let ovm = ovs.vm();
        ovm.ok(&["ip", "link", "set", VM_IF, "mtu", VM_MTU]);
        ovm.ok(&["ip", "neigh", "replace", &ip(VM_IP[0]), "lladdr", &mac_str(VM_MAC[0]), "dev", VM_IF]);
        ovs.add_geneve("gnv0", &Geneve::new(&ip(GW_IP[0]), VNI));
        ovs.install_ovn_option(
            "gnv0",
            OvnKeys { ingress: VM_KEY[1], egress: VM_KEY[0] },
            Some(OvnKeys { ingress: VM_KEY[0], egress: VM_KEY[1] }),
        );
        ovs.appctl(&["tnl/neigh/set", xgw_tests::ovs::BR_PHY, &ip(GW_IP[0]), &mac_str(GW_MAC[0])]);

        let mut dp = TestGateway::load(&["xgw_uplink", "xgw_local", "xgw_pass"]);
        dp.in_netns(&gw);
        let (up, port) = (gw.ifindex("ul"), gw.ifindex("p"));
        dp.set_uplink(Uplink {
            ifindex: up,
            mtu: 1500,
            mac: GW_MAC[0],
            flags: UPLINK_HAS_IP4,
            _pad: 0,
            ip4: GW_IP[0],
            ip6: [0; 16],
        });
        dp.set_uplink_devmap(up);
        // OVS decapsulates only frames sent to br-phy's MAC.
        let tunnel = Tunnel {
            remote: ipv4_mapped(GW_IP[1]),
            nexthop_mac: ovs.underlay_mac(),
            flags: TUNNEL_OVN_METADATA,
            _pad: 0,
            vni: VNI,
        };
        dp.add_tunnel(TUNNEL_OFPORT as u32, tunnel);
        dp.add_local_port(
            port,
            LocalPort { vni: VNI, ofport: PORT_OFPORT, port_key: VM_KEY[0], mac: VM_MAC[0], ..Default::default() },
        );
        dp.add_remote(VNI, VM_MAC[1], None, TUNNEL_OFPORT, VM_KEY[1]);
        dp.attach(&gw, "xgw_uplink", "ul");
        dp.attach(&gw, "xgw_local", "p");
        // veth delivers redirected frames only to a peer running XDP.
        dp.attach(&vm, "xgw_pass", "eth0");
        dp.attach(ovs.ns(), "xgw_pass", "ul0");
        Topology { dps: vec![dp], ovs: Some(ovs), _gws: vec![gw], vms: vec![vm] }
    }

    /// One iperf3 TCP stream vm1 -> vm2 for `secs`: bits per second received.
    fn iperf(&self, secs: u32) -> f64 {
        let server = ip(VM_IP[1]);
        let server_vm = match &self.ovs {
            Some(ovs) => ovs.vm(),
            None => &self.vms[1],
        };
        let srv = server_vm.spawn(&["iperf3", "-s", "-1", "-B", &server, "-p", "5311"]);
        std::thread::sleep(Duration::from_millis(300));
        let out = self.vms[0].exec(&["iperf3", "-c", &server, "-p", "5311", "-t", &secs.to_string(), "-J"]);
        let _ = srv.wait(Duration::from_secs(5));
        assert!(out.status.success(), "iperf3 in {}: {}", self.vms[0].name, String::from_utf8_lossy(&out.stdout));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 JSON");
        v["end"]["sum_received"]["bits_per_second"].as_f64().expect("bits_per_second")
    }

    /// Segments each gateway's xgw sent through the tunnel (0 when routed).
    fn tunnel_tx(&self) -> u64 {
        self.dps.iter().map(|d| d.port_stats(TUNNEL_OFPORT as u32).tx.packets).sum()
    }
}

pub fn row_name() -> String {
    format!("TCP, one iperf3 stream through two xgw over Geneve (IPv4 underlay, VM MTU {VM_MTU}, tx off)")
}
pub fn ovs_row_name() -> String {
    format!("TCP, one iperf3 stream from a VM behind xgw to a VM behind Open vSwitch 3.1 (AF_PACKET ports), Geneve, VM MTU {VM_MTU}, tx off")
}

/// The row names [`rows`] produces.
pub fn row_names() -> Vec<String> {
    vec![row_name(), ovs_row_name()]
}
const BASELINE: &str = "the same namespaces routed by the kernel, no tunnel, same VM settings";

/// The tunnel rows (xgw to xgw, xgw to OVS) beside the routed path, `runs`
/// transfers of `secs` each, interleaved.
pub fn rows(runs: usize, secs: u32) -> Vec<Row> {
    let tunnel = Topology::new('t', true);
    let routed = Topology::new('k', false);
    let to_ovs = Topology::to_ovs('o');
    let (mut xgw, mut base, mut ovs) = (vec![], vec![], vec![]);
    for _ in 0..runs {
        for (t, v) in [(&tunnel, &mut xgw), (&to_ovs, &mut ovs)] {
            let before = t.tunnel_tx();
            v.push(t.iperf(secs));
            // The segments really crossed the tunnel.
            assert!(t.tunnel_tx() - before > 1000, "iperf3 through the tunnel: xgw encapsulated almost nothing");
        }
        base.push(routed.iperf(secs));
    }
    if std::env::var_os("XGW_BENCH_VERBOSE").is_some() {
        eprintln!("tcp: xgw {xgw:?} bit/s, xgw to OVS {ovs:?}, routed {base:?} bit/s");
    }
    let gbit = |v: Vec<f64>| stats(v.into_iter().map(|b| b / 1e9).collect());
    let base = gbit(base);
    vec![
        Row::new(row_name(), "Gbit/s", BASELINE, gbit(xgw), base),
        Row::new(ovs_row_name(), "Gbit/s", BASELINE, gbit(ovs), base),
    ]
}
