//! OVN's tunnel model against a real Open vSwitch: one flow-keyed Geneve
//! port per remote chassis (`options:key=flow`, the VNI set per packet by
//! the flow table, as ovn-controller programs it), carrying two logical
//! switches to the xgw daemon's one flow-keyed tunnel, with BFD as OVN
//! enables it (`bfd:check_tnl_key=true`: key 0 only).
//!
//!   xvm1 [eth0] -- [p1] gw (xgw daemon) [ul] ---- [ul0] OVS -- vm0 (VNI 5001)
//!   xvm2 [eth0] -- [p2]                                    \-- vm1 (VNI 5002)
//!
//! Both switches use the same port keys (1 for xgw's VM, 2 for OVS's), so a
//! frame delivered into the wrong VNI would reach a VM: only the VNI keeps
//! them apart.
use std::time::{Duration, Instant};

use serde_json::Value;
use xgw_tests::{
    daemon::Daemon,
    gateway::TestGateway,
    ovs::{mac_str, BR_INT, VM_PORT},
    packet::geneve,
    require_root, Capture, Geneve, Netns, OvnKeys, OvsHypervisor, Veth,
};

const GW_IP: &str = "198.51.100.1";
const HV_IP: &str = "198.51.100.2";
const HV_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0, 2];
/// (VNI, xgw VM MAC, xgw VM IP, OVS VM MAC, OVS VM IP)
type Switch = (u32, [u8; 6], &'static str, [u8; 6], &'static str);
const SWITCHES: [Switch; 2] = [
    (5001, [0x02, 0x00, 0x5e, 0x20, 0, 1], "203.0.113.1", [0x02, 0x00, 0x5e, 0x20, 0, 2], "203.0.113.2"),
    (5002, [0x02, 0x00, 0x5e, 0x20, 0, 3], "203.0.113.3", [0x02, 0x00, 0x5e, 0x20, 0, 4], "203.0.113.4"),
];
const XGW_KEY: u16 = 1;
const OVS_KEY: u16 = 2;

struct Topology {
    // Drop order: the daemon stops, the probes detach, OVS stops, namespaces go.
    d: Daemon,
    _probes: TestGateway,
    ovs: OvsHypervisor,
    vms: Vec<Netns>,
    _gw: Netns,
}

fn topology() -> Topology {
    let gw = Netns::new("fkg");
    let hv = Netns::new("fko");
    Veth::new(&gw, "ul", &format!("{GW_IP}/24"), &hv, "ul0", "");
    let mut ovs = OvsHypervisor::builder(hv, "ul0")
        .ip4(&format!("{HV_IP}/24"))
        .underlay_mac(HV_MAC)
        .vm(SWITCHES[0].3, Some(&format!("{}/24", SWITCHES[0].4)), None)
        .start();
    ovs.add_vm("vm1", SWITCHES[1].3, &format!("{}/24", SWITCHES[1].4));
    ovs.add_geneve("gnv0", &Geneve::flow_keyed(GW_IP).bfd(100, 100, 3).check_tnl_key());
    // ovn-controller's tables, reduced to one hop: a VM's frames leave with
    // its switch's VNI and keys; from the tunnel only that VNI with xgw's
    // keys reaches the VM, anything else is dropped.
    ovs.ofctl(&["add-tlv-map", BR_INT, "{class=0x102,type=0x80,len=4}->tun_metadata0"]);
    for (i, (vni, ..)) in SWITCHES.iter().enumerate() {
        let port = if i == 0 { VM_PORT } else { "vm1" };
        let send = OvnKeys { ingress: OVS_KEY, egress: XGW_KEY }.metadata();
        let expect = OvnKeys { ingress: XGW_KEY, egress: OVS_KEY }.metadata();
        ovs.ofctl(&[
            "add-flow",
            BR_INT,
            &format!("priority=100,in_port={port},actions=set_field:{vni}->tun_id,set_field:{send:#x}->tun_metadata0,output:gnv0"),
        ]);
        ovs.ofctl(&[
            "add-flow",
            BR_INT,
            &format!("priority=100,in_port=gnv0,tun_id={vni},tun_metadata0={expect:#x},actions=output:{port}"),
        ]);
    }
    ovs.ofctl(&["add-flow", BR_INT, "priority=90,in_port=gnv0,actions=drop"]);

    let mut vms = Vec::new();
    for (i, (_, mac, ip, ..)) in SWITCHES.iter().enumerate() {
        let vm = Netns::new("fkv");
        Veth::new(&gw, &format!("p{}", i + 1), "", &vm, "eth0", &format!("{ip}/24"));
        vm.ok(&["ip", "link", "set", "eth0", "address", &mac_str(*mac), "mtu", "1400"]);
        vm.ok(&["ethtool", "-K", "eth0", "tx", "off"]);
        vms.push(vm);
    }
    // veth delivers redirected frames only to a peer running XDP.
    let mut probes = TestGateway::load(&["xgw_pass"]);
    for vm in &vms {
        probes.attach(vm, "xgw_pass", "eth0");
    }
    probes.attach(ovs.ns(), "xgw_pass", "ul0");

    let mut d = Daemon::new(&gw, "ul", &[GW_IP]);
    d.start();
    d.json(&[
        "tunnel",
        "add",
        "hv",
        "--remote-ip",
        HV_IP,
        "--ovn-metadata",
        "--bfd",
        "--bfd-min-tx-ms",
        "100",
        "--bfd-min-rx-ms",
        "100",
    ]);
    for (i, (vni, mac, ip, ovs_mac, ovs_ip)) in SWITCHES.iter().enumerate() {
        let (vni, name, ifname) = (vni.to_string(), format!("vm{}", i + 1), format!("p{}", i + 1));
        let (xk, ok) = (XGW_KEY.to_string(), OVS_KEY.to_string());
        d.json(&[
            "port",
            "add",
            &name,
            "--ifname",
            &ifname,
            "--vni",
            &vni,
            "--port-key",
            &xk,
            "--mac",
            &mac_str(*mac),
            "--ip",
            ip,
        ]);
        d.json(&[
            "binding",
            "add",
            "--vni",
            &vni,
            "--mac",
            &mac_str(*ovs_mac),
            "--ip",
            ovs_ip,
            "--tunnel",
            "hv",
            "--port-key",
            &ok,
        ]);
    }
    Topology { d, _probes: probes, ovs, vms, _gw: gw }
}

impl Topology {
    fn ovs_vm(&self, i: usize) -> &Netns {
        if i == 0 {
            self.ovs.vm()
        } else {
            self.ovs.extra_vm(i - 1)
        }
    }

    /// Pings received of `count`.
    fn ping(&self, from: &Netns, to: &str, count: u32) -> u32 {
        let out = from.exec(&["ping", "-c", &count.to_string(), "-i", "0.2", "-W", "1", to]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.split(',').find_map(|f| f.trim().strip_suffix(" received").and_then(|n| n.parse().ok())).unwrap_or(0)
    }

    fn reach(&self, from: &Netns, to: &str) {
        // OVS drops the packet that triggers its underlay ARP.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ping(from, to, 1) == 0 {
            assert!(Instant::now() < deadline, "{} never reached {to}\n{}", from.name, self.counters());
        }
        assert_eq!(self.ping(from, to, 4), 4, "{} -> {to}\n{}", from.name, self.counters());
    }

    fn counters(&self) -> String {
        format!("xgw stats: {}\nOVS log:\n{}", self.d.json(&["stats"]), self.ovs.log_tail(15))
    }

    fn session(&self) -> Value {
        self.d.json(&["bfd", "show", "hv"])
    }

    fn wait_bfd(&self, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ours = self.session()["local_state"].as_str().map(str::to_owned);
            let theirs = self.ovs.bfd_status("gnv0").get("state").cloned();
            if ours.as_deref() == Some(state) && theirs.as_deref() == Some(state) {
                return;
            }
            assert!(Instant::now() < deadline, "BFD not {state}: xgw {ours:?}, OVS {theirs:?}\n{}", self.counters());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn one_flow_keyed_tunnel_carries_two_switches_to_open_vswitch_with_bfd_on_key_0() {
    require_root!();
    let t = topology();
    t.wait_bfd("up");
    // OVS's packets before the session existed found none; from Up on, all do.
    let no_session = |t: &Topology| t.d.json(&["stats"])["bfd"]["drops"]["no_session_for_peer"].as_u64().unwrap();
    let no_session_at_up = no_session(&t);

    let cap = Capture::start(t.ovs.ns(), "ul0", &["udp"]);
    for (i, (_, _, ip, _, ovs_ip)) in SWITCHES.iter().enumerate() {
        t.reach(&t.vms[i], ovs_ip);
        t.reach(t.ovs_vm(i), ip);
    }
    std::thread::sleep(Duration::from_millis(300));
    let frames: Vec<_> = cap.stop().iter().filter_map(|f| geneve::parse(f)).collect();

    // One tunnel, one number, one session.
    let show = t.d.json(&["show"]);
    let tunnels: Vec<&Value> = show["ports"].as_array().unwrap().iter().filter(|p| p["type"] == "tunnel").collect();
    assert_eq!(tunnels.len(), 1, "{show}");
    assert_eq!((tunnels[0]["key"].as_str(), tunnels[0].get("vni")), (Some("flow"), None), "{show}");
    assert_eq!(t.d.json(&["bfd", "show"]).as_array().unwrap().len(), 1);

    // Each switch's traffic crossed in its own VNI, both ways; BFD only on
    // key 0, both ways, and never with an OVN option.
    let to_gw = |g: &geneve::Parsed| matches!(g.outer, geneve::Outer::V4 { dst, .. } if dst == [198, 51, 100, 1]);
    let is_bfd = |g: &geneve::Parsed| g.inner.len() > 14 && g.inner[..6] == xgw_common::bfd::ovs::DST_MAC;
    for (vni, ..) in SWITCHES {
        for dir in [true, false] {
            let n = frames.iter().filter(|g| g.vni == vni && to_gw(g) == dir && !is_bfd(g)).count();
            assert!(n >= 8, "VNI {vni} {}: {n} frames", if dir { "to xgw" } else { "from xgw" });
        }
    }
    let bfd: Vec<_> = frames.iter().filter(|g| is_bfd(g)).collect();
    assert!(bfd.iter().any(|g| to_gw(g)) && bfd.iter().any(|g| !to_gw(g)), "BFD both ways");
    assert!(bfd.iter().all(|g| g.vni == 0 && g.options.is_empty()), "BFD off key 0");
    let others = frames.iter().filter(|g| !is_bfd(g) && !SWITCHES.iter().any(|s| s.0 == g.vni)).count();
    assert_eq!(others, 0, "frames in a VNI neither switch has");

    // Across switches nothing answers: .3 is not in VNI 5001.
    assert_eq!(t.ping(&t.vms[0], SWITCHES[1].4, 2), 0);
    assert_eq!(t.ping(t.ovs_vm(0), SWITCHES[1].2, 2), 0);

    let stats = t.d.json(&["stats"]);
    let drops = &stats["drops"];
    for reason in ["unknown_tunnel", "unknown_vni", "unknown_destination"] {
        assert_eq!(drops[reason], 0, "{reason}: {stats}");
    }
    assert_eq!(no_session(&t), no_session_at_up, "OVS's BFD on key 0 finds the session: {stats}");
}

#[test]
fn bfd_on_a_flow_keyed_tunnel_turns_off_and_on_in_place() {
    require_root!();
    let t = topology();
    t.wait_bfd("up");
    let ofport = t.d.json(&["tunnel", "list"])[0]["ofport"].clone();

    // Off: the tunnel keeps its number and its entries, traffic keeps
    // flowing, the session goes and OVS sees the remote stop talking.
    let off = t.d.json(&["tunnel", "set", "hv", "--bfd", "false"]);
    assert_eq!(off["ofport"], ofport, "{off}");
    assert_eq!(t.d.json(&["bfd", "show"]), Value::Array(vec![]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.ovs.bfd_status("gnv0").get("state").map(String::as_str) == Some("up") {
        assert!(Instant::now() < deadline, "OVS still up: {:?}", t.ovs.bfd_status("gnv0"));
        std::thread::sleep(Duration::from_millis(50));
    }
    t.reach(&t.vms[1], SWITCHES[1].4);

    // On again: same number, Up on both ends.
    let on = t.d.json(&["tunnel", "set", "hv", "--bfd", "true", "--bfd-min-tx-ms", "100", "--bfd-min-rx-ms", "100"]);
    assert_eq!(on["ofport"], ofport, "{on}");
    t.wait_bfd("up");
    t.reach(&t.vms[0], SWITCHES[0].4);
    assert_eq!(t.d.json(&["tunnel", "list"]).as_array().unwrap().len(), 1);
}
