//! xgw as a chassis of a real OVN 23.03 (Debian `ovn-central`, `ovn-host`,
//! every OVS on the userspace datapath), registered and configured by hand
//! from what the Southbound says, as an operator would before xgw reads the
//! Southbound itself: one flow-keyed tunnel per OVN chassis, VNI = the
//! switch's `tunnel_key`, port keys = the bindings' `tunnel_key`.
//!
//!   ovs VM vm1 -- hv1 (ovn-controller) --\
//!   ovs VM vm2 -- hv2 (ovn-controller) ---- bridge (underlay) -- xgw -- vm3
//!
//! OVN runs BFD toward xgw only once an HA chassis group relates them: a
//! router whose gateway port is HA over hv1 and hv2 serves ls1, where xgw
//! has vm3, so xgw is a ref chassis and both hypervisors enable BFD on
//! `ovn-xgw-0` (`check_tnl_key=true`: key 0 only).
use std::time::{Duration, Instant};

use serde_json::Value;
use xgw_tests::{
    daemon::Daemon, gateway::TestGateway, ovn::OvnCentral, ovs::mac_str, require_root, Capture, Netns, OvsHypervisor,
    Veth,
};

const XGW_IP: &str = "198.51.100.13";
const HV_IP: [&str; 2] = ["198.51.100.11", "198.51.100.12"];
const VM_IP: [&str; 3] = ["203.0.113.1", "203.0.113.2", "203.0.113.3"];
const VM_MAC: [[u8; 6]; 3] = [[2, 0, 0x5e, 0, 1, 1], [2, 0, 0x5e, 0, 1, 2], [2, 0, 0x5e, 0, 1, 3]];

struct Lab {
    // Drop order: xgw stops, probes detach, hypervisors stop, central stops,
    // namespaces go.
    d: Daemon,
    _probes: TestGateway,
    hv: Vec<OvsHypervisor>,
    ovn: OvnCentral,
    vm3: Netns,
    xgw: Netns,
    ul: Netns,
}

fn lab() -> Lab {
    let ovn = OvnCentral::start();
    // Fast BFD for the test (ovn-controller reads SB_Global, which northd
    // copies from NB_Global).
    ovn.nbctl(&["set", "NB_Global", ".", "options:bfd-min-rx=100", "options:bfd-min-tx=100", "options:bfd-mult=3"]);
    ovn.nbctl(&["ls-add", "ls1"]);
    for i in 0..3 {
        let name = format!("vm{}", i + 1);
        ovn.nbctl(&[
            "lsp-add",
            "ls1",
            &name,
            "--",
            "lsp-set-addresses",
            &name,
            &format!("{} {}", mac_str(VM_MAC[i]), VM_IP[i]),
        ]);
    }

    let ul = Netns::new("ovu");
    ul.ok(&["ip", "link", "add", "br0", "type", "bridge"]);
    ul.ok(&["ip", "link", "set", "br0", "up"]);
    let mut hv = Vec::new();
    for (i, ip) in HV_IP.iter().enumerate() {
        let ns = Netns::new("ovh");
        let port = format!("u{}", i + 1);
        Veth::new(&ul, &port, "", &ns, "ul0", "");
        ul.ok(&["ip", "link", "set", &port, "master", "br0"]);
        ul.ok(&["ethtool", "-K", &port, "tx", "off"]);
        let mut h = OvsHypervisor::builder(ns, "ul0")
            .ip4(&format!("{ip}/24"))
            .vm(VM_MAC[i], Some(&format!("{}/24", VM_IP[i])), None)
            .start();
        h.start_ovn_controller(&format!("hv{}", i + 1), &ovn.sb_remote(), ip);
        h.vsctl(&["set", "interface", xgw_tests::ovs::VM_PORT, &format!("external_ids:iface-id=vm{}", i + 1)]);
        hv.push(h);
    }

    let xgw = Netns::new("ovx");
    Veth::new(&ul, "u3", "", &xgw, "ul", &format!("{XGW_IP}/24"));
    ul.ok(&["ip", "link", "set", "u3", "master", "br0"]);
    ul.ok(&["ethtool", "-K", "u3", "tx", "off"]);
    xgw.ok(&["ethtool", "-K", "ul", "tx", "off"]);
    let vm3 = Netns::new("ovv");
    Veth::new(&xgw, "p3", "", &vm3, "eth0", &format!("{}/24", VM_IP[2]));
    vm3.ok(&["ip", "link", "set", "eth0", "address", &mac_str(VM_MAC[2]), "mtu", "1400"]);
    vm3.ok(&["ethtool", "-K", "eth0", "tx", "off"]);
    // veth delivers XDP-redirected frames only to a peer running XDP.
    let mut probes = TestGateway::load(&["xgw_pass"]);
    probes.attach(&ul, "xgw_pass", "u3");
    probes.attach(&vm3, "xgw_pass", "eth0");

    // What `ovn-sbctl chassis-add` writes is all any chassis needs to build
    // a tunnel; vm3 is bound to xgw by hand.
    ovn.sbctl(&["chassis-add", "xgw", "geneve", XGW_IP]);
    ovn.wait("vm3's port binding", Duration::from_secs(20), || {
        (!ovn.sb_find("port_binding", "tunnel_key", &["logical_port=vm3"]).is_empty()).then_some(())
    });
    ovn.sbctl(&["lsp-bind", "vm3", "xgw"]);
    let vni = ovn.sb_find("datapath_binding", "tunnel_key", &["external_ids:name=ls1"]);
    let key = |lsp: &str| ovn.sb_find("port_binding", "tunnel_key", &[&format!("logical_port={lsp}")]);

    let mut d = Daemon::new(&xgw, "ul", &[XGW_IP]);
    d.start();
    d.json(&[
        "port",
        "add",
        "vm3",
        "--ifname",
        "p3",
        "--vni",
        &vni,
        "--port-key",
        &key("vm3"),
        "--mac",
        &mac_str(VM_MAC[2]),
        "--ip",
        VM_IP[2],
    ]);
    for i in 0..2 {
        let (tunnel, vm) = (format!("hv{}", i + 1), format!("vm{}", i + 1));
        // One tunnel per chassis, as OVN builds them: key=flow.
        d.json(&[
            "tunnel",
            "add",
            &tunnel,
            "--remote-ip",
            HV_IP[i],
            "--ovn-metadata",
            "--bfd",
            "--bfd-min-tx-ms",
            "100",
            "--bfd-min-rx-ms",
            "100",
        ]);
        d.json(&[
            "binding",
            "add",
            "--vni",
            &vni,
            "--mac",
            &mac_str(VM_MAC[i]),
            "--ip",
            VM_IP[i],
            "--tunnel",
            &tunnel,
            "--port-key",
            &key(&vm),
        ]);
    }
    let lab = Lab { d, _probes: probes, hv, ovn, vm3, xgw, ul };
    for h in &lab.hv {
        lab.ovn.wait("ovn-xgw-0 on each hypervisor", Duration::from_secs(20), || {
            let ports = h.vsctl(&["list-ports", "br-int"]);
            ports.lines().any(|p| p == "ovn-xgw-0").then_some(())
        });
    }
    lab
}

impl Lab {
    fn vm(&self, i: usize) -> &Netns {
        if i == 2 {
            &self.vm3
        } else {
            self.hv[i].vm()
        }
    }

    fn received(&self, from: usize, to: usize, count: u32) -> u32 {
        let out = self.vm(from).exec(&["ping", "-c", &count.to_string(), "-i", "0.2", "-W", "1", VM_IP[to]]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.split(',').find_map(|f| f.trim().strip_suffix(" received").and_then(|n| n.parse().ok())).unwrap_or(0)
    }

    fn reach(&self, from: usize, to: usize) {
        // OVS drops the packet that triggers its underlay ARP.
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.received(from, to, 1) == 0 {
            assert!(Instant::now() < deadline, "vm{} never reached vm{}\n{}", from + 1, to + 1, self.report());
        }
        assert_eq!(self.received(from, to, 4), 4, "vm{} -> vm{}\n{}", from + 1, to + 1, self.report());
    }

    fn iperf(&self, client: usize, server: usize) -> u64 {
        let srv = self.vm(server).spawn(&["iperf3", "-s", "-1", "-B", VM_IP[server]]);
        std::thread::sleep(Duration::from_millis(400));
        let out = self.vm(client).exec(&["iperf3", "-c", VM_IP[server], "-t", "2", "-J"]);
        let _ = srv.wait(Duration::from_secs(5));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let bytes = v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
        let bps = v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0);
        eprintln!("iperf3 vm{} -> vm{}: {:.0} Mbit/s", client + 1, server + 1, bps / 1e6);
        bytes
    }

    /// `ovs-vsctl get interface ovn-xgw-0 bfd_status` on hypervisor `i`.
    fn ovs_bfd(&self, i: usize) -> Option<String> {
        self.hv[i].bfd_status("ovn-xgw-0").get("state").cloned()
    }

    fn xgw_bfd(&self, tunnel: &str) -> Option<String> {
        self.d.json(&["bfd", "show", tunnel])["local_state"].as_str().map(str::to_owned)
    }

    /// Waits until both ends of both chassis' sessions say `state`; returns how long it took.
    fn wait_bfd(&self, state: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let all = (0..2).all(|i| {
                self.ovs_bfd(i).as_deref() == Some(state)
                    && self.xgw_bfd(&format!("hv{}", i + 1)).as_deref() == Some(state)
            });
            if all {
                return start.elapsed();
            }
            assert!(start.elapsed() < timeout, "BFD not {state} after {timeout:?}\n{}", self.report());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn report(&self) -> String {
        let mut s = format!("xgw stats: {}\nxgw bfd: {}\n", self.d.json(&["stats"]), self.d.json(&["bfd", "show"]));
        for (i, h) in self.hv.iter().enumerate() {
            s += &format!(
                "hv{} ovn-xgw-0 bfd={} bfd_status={:?} options={}\novn-controller:\n{}\n",
                i + 1,
                h.vsctl(&["get", "interface", "ovn-xgw-0", "bfd"]).trim(),
                h.bfd_status("ovn-xgw-0"),
                h.vsctl(&["get", "interface", "ovn-xgw-0", "options"]).trim(),
                h.ovn_log_tail(8)
            );
        }
        s
    }
}

#[test]
fn xgw_is_a_chassis_of_real_ovn_ping_iperf_and_bfd_through_an_ha_group() {
    require_root!();
    let lab = lab();
    // OVN's own tunnels to xgw are flow-keyed; xgw has one per chassis.
    for h in &lab.hv {
        let options = h.vsctl(&["get", "interface", "ovn-xgw-0", "options"]);
        assert!(options.contains("key=flow") && options.contains(XGW_IP), "{options}");
    }
    let tunnels = lab.d.json(&["tunnel", "list"]);
    assert_eq!(tunnels.as_array().unwrap().len(), 2, "{tunnels}");
    assert!(tunnels.as_array().unwrap().iter().all(|t| t["key"] == "flow"), "{tunnels}");

    for i in 0..2 {
        lab.reach(2, i);
        lab.reach(i, 2);
    }
    assert!(lab.iperf(0, 2) > 10_000_000, "{}", lab.report());
    assert!(lab.iperf(2, 1) > 10_000_000, "{}", lab.report());

    // No HA group yet: OVN runs no BFD toward xgw.
    assert_eq!(lab.hv[0].vsctl(&["get", "interface", "ovn-xgw-0", "bfd"]).trim(), "{}");
    lab.ovn.nbctl(&[
        "lr-add",
        "lr1",
        "--",
        "lrp-add",
        "lr1",
        "lr1-ls1",
        "02:00:5e:00:02:01",
        "203.0.113.254/24",
        "--",
        "lsp-add",
        "ls1",
        "ls1-lr1",
        "--",
        "lsp-set-type",
        "ls1-lr1",
        "router",
        "--",
        "lsp-set-addresses",
        "ls1-lr1",
        "router",
        "--",
        "lsp-set-options",
        "ls1-lr1",
        "router-port=lr1-ls1",
        "--",
        "lrp-add",
        "lr1",
        "lr1-pub",
        "02:00:5e:00:02:02",
        "198.51.100.254/24",
        "--",
        "lrp-set-gateway-chassis",
        "lr1-pub",
        "hv1",
        "20",
        "--",
        "lrp-set-gateway-chassis",
        "lr1-pub",
        "hv2",
        "15",
    ]);
    let took = lab.wait_bfd("up", Duration::from_secs(30));
    eprintln!("BFD up on both ends of both chassis {took:?} after the HA group");
    let bfd = lab.hv[0].vsctl(&["get", "interface", "ovn-xgw-0", "bfd"]);
    assert!(bfd.contains("check_tnl_key=\"true\"") || bfd.contains("check_tnl_key=true"), "{bfd}");
    let refs = lab.ovn.sbctl(&["--bare", "--columns=ref_chassis", "list", "ha_chassis_group"]);
    let xgw_uuid = lab.ovn.sb_find("chassis", "_uuid", &["name=xgw"]);
    assert!(refs.contains(&xgw_uuid), "xgw is a ref chassis: {refs} / {xgw_uuid}");

    // Cut xgw's underlay: Down on every end within the detect time (3 x
    // 100 ms, plus polling), Up again once it is back, and traffic with it.
    lab.ul.ok(&["ip", "link", "set", "u3", "down"]);
    let down = lab.wait_bfd("down", Duration::from_secs(5));
    eprintln!("BFD down on every end {down:?} after the cut");
    assert!(down < Duration::from_millis(1500), "detection took {down:?}");
    lab.ul.ok(&["ip", "link", "set", "u3", "up"]);
    let up = lab.wait_bfd("up", Duration::from_secs(20));
    eprintln!("BFD up again {up:?} after the repair");
    lab.reach(2, 0);
    lab.reach(1, 2);
    let stats = lab.d.json(&["stats"]);
    for reason in ["unknown_tunnel", "unknown_vni"] {
        assert_eq!(stats["drops"][reason], 0, "{reason}: {stats}");
    }
    let _ = &lab.xgw;
}

/// An ARP for an address nobody has, broadcast from a VM behind xgw, from
/// xgw's VM, reaches the VMs on the OVN chassis, and theirs reaches xgw's:
/// OVN floods with `_MC_flood` (egress key 32768), xgw with its group of
/// the same key.
#[test]
fn broadcasts_cross_between_ovn_and_xgw_through_the_flood_group() {
    require_root!();
    let lab = lab();
    let vni = lab.ovn.sb_find("datapath_binding", "tunnel_key", &["external_ids:name=ls1"]);
    // OVN's own _MC_flood of ls1 carries the same key.
    let mc = lab.ovn.sb_find("multicast_group", "tunnel_key", &["name=_MC_flood"]);
    assert!(mc.lines().any(|k| k.trim() == "32768"), "{mc}");
    for i in 0..2 {
        lab.reach(2, i);
    }
    let g = lab.d.json(&[
        "group", "add", "--vni", &vni, "--key", "32768", "--port", "vm3", "--tunnel", "hv1", "--tunnel", "hv2",
    ]);
    assert_eq!(g["change"], "created", "{g}");
    // Before the group, the VNI's broadcasts were dropped as `flood`.
    let flood_before = lab.d.json(&["stats"])["drops"]["flood"].as_u64().unwrap();

    fn arp_for(target: &str) -> [&str; 5] {
        ["arp", "and", "dst", "host", target]
    }
    let ovs_if = xgw_tests::ovs::VM_IF;
    // From vm1 (OVN): to vm3 behind xgw.
    let cap = Capture::start(&lab.vm3, "eth0", &arp_for("203.0.113.99"));
    let _ = lab.vm(0).exec(&["ping", "-c", "2", "-i", "0.3", "-W", "1", "203.0.113.99"]);
    let got = cap.stop();
    assert!(!got.is_empty(), "vm1's ARP never reached vm3\n{}", lab.report());
    assert!(got.iter().all(|f| f[..6] == [0xff; 6]), "a broadcast, as sent");
    // From vm3 (xgw): to vm1 and vm2 on both OVN chassis.
    let caps: Vec<Capture> = (0..2).map(|i| Capture::start(lab.vm(i), ovs_if, &arp_for("203.0.113.98"))).collect();
    let _ = lab.vm(2).exec(&["ping", "-c", "2", "-i", "0.3", "-W", "1", "203.0.113.98"]);
    for (i, cap) in caps.into_iter().enumerate() {
        let got = cap.stop();
        assert!(!got.is_empty(), "vm3's ARP never reached vm{}\n{}", i + 1, lab.report());
    }
    let stats = lab.d.json(&["stats"]);
    assert_eq!(stats["drops"]["flood"], flood_before, "{stats}");
    assert_eq!(stats["drops"]["flood_copy"], 0, "{stats}");
    let tunnels: u64 = stats["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] != "vm3")
        .map(|p| p["tx_packets"].as_u64().unwrap())
        .sum();
    assert!(tunnels > 0, "{stats}");
}
