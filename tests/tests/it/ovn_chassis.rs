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

use xgw_tests::{daemon::Daemon, ovn::OvnCentral, ovs::mac_str, require_root, Capture};

use xgw_tests::ovn::lab::{self, HV_IP, VM_IP, VM_MAC, XGW_IP};

struct Lab {
    // Drop order: xgw stops, the rest of the lab goes, central stops.
    d: Daemon,
    topo: lab::Topology,
    ovn: OvnCentral,
}

fn lab() -> Lab {
    let ovn = OvnCentral::start();
    let topo = lab::topology(&ovn);
    // What `ovn-sbctl chassis-add` writes is all any chassis needs to build
    // a tunnel; vm3 is bound to xgw by hand.
    ovn.sbctl(&["chassis-add", "xgw", "geneve", XGW_IP]);
    ovn.wait("vm3's port binding", Duration::from_secs(20), || {
        (!ovn.sb_find("port_binding", "tunnel_key", &["logical_port=vm3"]).is_empty()).then_some(())
    });
    ovn.sbctl(&["lsp-bind", "vm3", "xgw"]);
    let vni = ovn.sb_find("datapath_binding", "tunnel_key", &["external_ids:name=ls1"]);
    let key = |lsp: &str| ovn.sb_find("port_binding", "tunnel_key", &[&format!("logical_port={lsp}")]);

    let mut d = Daemon::new(&topo.xgw, "ul", &[XGW_IP]);
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
    let lab = Lab { d, topo, ovn };
    for h in &lab.topo.hv {
        lab.ovn.wait("ovn-xgw-0 on each hypervisor", Duration::from_secs(20), || {
            let ports = h.vsctl(&["list-ports", "br-int"]);
            ports.lines().any(|p| p == "ovn-xgw-0").then_some(())
        });
    }
    lab
}

impl Lab {
    fn vm(&self, i: usize) -> &xgw_tests::Netns {
        self.topo.vm(i)
    }

    fn reach(&self, from: usize, to: usize) {
        self.topo.reach(from, to, || self.report())
    }

    fn iperf(&self, client: usize, server: usize) -> u64 {
        self.topo.iperf(client, server)
    }

    /// `ovs-vsctl get interface ovn-xgw-0 bfd_status` on hypervisor `i`.
    fn ovs_bfd(&self, i: usize) -> Option<String> {
        self.topo.hv[i].bfd_status("ovn-xgw-0").get("state").cloned()
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
        for (i, h) in self.topo.hv.iter().enumerate() {
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
    for h in &lab.topo.hv {
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
    assert_eq!(lab.topo.hv[0].vsctl(&["get", "interface", "ovn-xgw-0", "bfd"]).trim(), "{}");
    lab::ha_router(&lab.ovn);
    let took = lab.wait_bfd("up", Duration::from_secs(30));
    eprintln!("BFD up on both ends of both chassis {took:?} after the HA group");
    let bfd = lab.topo.hv[0].vsctl(&["get", "interface", "ovn-xgw-0", "bfd"]);
    assert!(bfd.contains("check_tnl_key=\"true\"") || bfd.contains("check_tnl_key=true"), "{bfd}");
    let refs = lab.ovn.sbctl(&["--bare", "--columns=ref_chassis", "list", "ha_chassis_group"]);
    let xgw_uuid = lab.ovn.sb_find("chassis", "_uuid", &["name=xgw"]);
    assert!(refs.contains(&xgw_uuid), "xgw is a ref chassis: {refs} / {xgw_uuid}");

    // Cut xgw's underlay: Down on every end within the detect time (3 x
    // 100 ms, plus polling), Up again once it is back, and traffic with it.
    lab.topo.ul.ok(&["ip", "link", "set", "u3", "down"]);
    let down = lab.wait_bfd("down", Duration::from_secs(5));
    eprintln!("BFD down on every end {down:?} after the cut");
    assert!(down < Duration::from_millis(1500), "detection took {down:?}");
    lab.topo.ul.ok(&["ip", "link", "set", "u3", "up"]);
    let up = lab.wait_bfd("up", Duration::from_secs(20));
    eprintln!("BFD up again {up:?} after the repair");
    lab.reach(2, 0);
    lab.reach(1, 2);
    let stats = lab.d.json(&["stats"]);
    for reason in ["unknown_tunnel", "unknown_vni"] {
        assert_eq!(stats["drops"][reason], 0, "{reason}: {stats}");
    }
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
    let cap = Capture::start(&lab.topo.vm3, "eth0", &arp_for("203.0.113.99"));
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
