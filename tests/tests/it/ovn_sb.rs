//! xgw as an OVN chassis driven by the Southbound alone (`[ovn]`): it
//! registers, gets its tunnels, port, bindings, group and BFD from the
//! database, acknowledges `nb_cfg` (so `ovn-nbctl --wait=hv` covers it),
//! keeps every number through churn and the 2018 incident's redundant
//! chassis, and leaves OVN on a clean stop. The lab is `ovn::lab`'s: ls1
//! with vm1 on hv1, vm2 on hv2, vm3 behind xgw.
use std::time::{Duration, Instant};

use serde_json::Value;
use xgw_tests::{
    daemon::Daemon,
    ovn::{
        lab::{self, VM_IP, XGW_IP},
        OvnCentral,
    },
    require_root,
};

struct Lab {
    // Drop order: xgw stops, the rest of the lab goes, central stops.
    d: Daemon,
    /// Where xgw serves its metrics (in its namespace).
    metrics: String,
    topo: lab::Topology,
    ovn: OvnCentral,
}

/// The lab, vm3 asking for chassis `xgw`, and xgw started with `[ovn]`.
fn lab() -> Lab {
    lab_on(OvnCentral::start())
}

fn lab_on(ovn: OvnCentral) -> Lab {
    let topo = lab::topology(&ovn);
    ovn.nbctl(&["lsp-set-options", "vm3", "requested-chassis=xgw"]);
    let mut d = Daemon::new(&topo.xgw, "ul", &[XGW_IP]);
    let cfg = d.state.path.join("xgw.toml");
    std::fs::write(
        &cfg,
        // vm1 is hv1's: naming it here must not start a claim fight.
        format!(
            "[ovn]\nremote = \"{}\"\nchassis = \"xgw\"\n[ovn.interfaces]\nvm3 = \"p3\"\nvm1 = \"p1\"\nvm4 = \"p4\"\n",
            ovn.sb_remote()
        ),
    )
    .unwrap();
    let metrics = "127.0.0.1:9481".to_owned();
    d.extra = vec!["--config".into(), cfg.display().to_string(), "--metrics".into(), metrics.clone()];
    d.start();
    Lab { d, metrics, topo, ovn }
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

    fn show(&self) -> Value {
        self.d.json(&["show"])
    }

    /// Name -> OpenFlow number of every port xgw has.
    fn numbers(&self) -> std::collections::BTreeMap<String, u64> {
        let show = self.show();
        show["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap().to_owned(), p["ofport"].as_u64().unwrap()))
            .collect()
    }

    fn wait<T>(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}\n{}", self.report());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn report(&self) -> String {
        let mut s = format!("xgw show: {}\n", self.d.json(&["show"]));
        s += &format!("SB chassis: {}\n", self.ovn.sbctl(&["--columns=name,encaps,other_config", "list", "chassis"]));
        s += &format!(
            "SB port bindings: {}\n",
            self.ovn.sbctl(&["--columns=logical_port,chassis,up,requested_chassis", "list", "port_binding"])
        );
        for (i, h) in self.topo.hv.iter().enumerate() {
            s += &format!("hv{} ovn-controller:\n{}\n", i + 1, h.ovn_log_tail(6));
        }
        s
    }

    fn ovs_bfd(&self, i: usize) -> Option<String> {
        self.topo.hv[i].bfd_status("ovn-xgw-0").get("state").cloned()
    }
}

#[test]
fn xgw_registers_learns_everything_from_the_southbound_and_forwards() {
    require_root!();
    let lab = lab();
    let ovn = &lab.ovn;

    // Registered as a chassis with a geneve encap on its IP.
    let encap = lab.wait("xgw's Encap", Duration::from_secs(20), || {
        let ip = ovn.sb_find("encap", "ip", &["chassis_name=xgw"]);
        (!ip.is_empty()).then_some(ip)
    });
    assert_eq!(encap.trim(), XGW_IP);
    assert_eq!(ovn.sb_find("encap", "type", &["chassis_name=xgw"]).trim(), "geneve");
    let other = ovn.sb_find("chassis", "other_config", &["name=xgw"]);
    assert!(other.contains("port-up-notif=true"), "{other}");
    assert!(!ovn.sb_find("chassis_private", "_uuid", &["name=xgw"]).is_empty(), "Chassis_Private");

    // vm3 claimed and up once its entries are in.
    let xgw_uuid = ovn.sb_find("chassis", "_uuid", &["name=xgw"]);
    lab.wait("vm3 claimed and up", Duration::from_secs(20), || {
        let chassis = ovn.sb_find("port_binding", "chassis", &["logical_port=vm3"]);
        let up = ovn.sb_find("port_binding", "up", &["logical_port=vm3"]);
        (chassis.trim() == xgw_uuid.trim() && up.trim() == "true").then_some(())
    });
    // The peers build their tunnels to it, as to any chassis.
    for h in &lab.topo.hv {
        lab.wait("ovn-xgw-0 on each hypervisor", Duration::from_secs(20), || {
            h.vsctl(&["list-ports", "br-int"]).lines().any(|p| p == "ovn-xgw-0").then_some(())
        });
    }

    // xgw's side: one flow-keyed tunnel per chassis, named as OVN names
    // them, vm3 from its binding, vm1 and vm2 as remote bindings.
    let show = lab.wait("tunnels, vm3 and both bindings in xgw", Duration::from_secs(20), || {
        let show = lab.show();
        let names: Vec<&str> = show["ports"].as_array()?.iter().filter_map(|p| p["name"].as_str()).collect();
        let ok = names.contains(&"ovn-hv1-0") && names.contains(&"ovn-hv2-0") && names.contains(&"vm3");
        (ok && show["bindings"].as_array()?.len() == 2).then_some(show)
    });
    let vni: u64 = ovn.sb_find("datapath_binding", "tunnel_key", &["external_ids:name=ls1"]).trim().parse().unwrap();
    let key = |lsp: &str| -> u64 {
        ovn.sb_find("port_binding", "tunnel_key", &[&format!("logical_port={lsp}")]).trim().parse().unwrap()
    };
    let port = |name: &str| show["ports"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap().clone();
    let vm3 = port("vm3");
    assert_eq!((vm3["vni"].as_u64(), vm3["port_key"].as_u64()), (Some(vni), Some(key("vm3"))), "{vm3}");
    for t in ["ovn-hv1-0", "ovn-hv2-0"] {
        assert_eq!(port(t)["key"], "flow", "{}", port(t));
    }
    assert_eq!(show["ovn"]["connected"], true, "{}", show["ovn"]);
    assert_eq!(show["ovn"]["claimed"]["vm3"], true);

    for i in 0..2 {
        lab.reach(2, i);
        lab.reach(i, 2);
    }
    assert!(lab.iperf(0, 2) > 10_000_000, "{}", lab.report());
    assert!(lab.iperf(2, 1) > 10_000_000, "{}", lab.report());
    // No claim fight: vm1 asks for no chassis in particular and hv1 has it.
    let vm1 = show["ovn"]["refused"]["vm1"].as_str().unwrap_or_default().to_owned();
    assert!(vm1.contains("requested-chassis"), "{}", show["ovn"]);
    let hv1 = ovn.sb_find("chassis", "_uuid", &["name=hv1"]);
    assert_eq!(ovn.sb_find("port_binding", "chassis", &["logical_port=vm1"]).trim(), hv1.trim());

    // `--wait=hv` returns only once every chassis, xgw included, has
    // applied the change: xgw acknowledges nb_cfg.
    let out = ovn.nbctl(&["--wait=hv", "--timeout=10", "sync"]);
    let _ = out;
    let sb_cfg = ovn.sbctl(&["get", "SB_Global", ".", "nb_cfg"]);
    lab.wait("xgw's nb_cfg", Duration::from_secs(10), || {
        (ovn.sb_find("chassis_private", "nb_cfg", &["name=xgw"]).trim() == sb_cfg.trim()).then_some(())
    });

    // BFD where ovn-controller would run it: an HA router over hv1 and hv2
    // makes xgw a ref chassis; both ends come up on both tunnels.
    lab::ha_router(ovn);
    lab.wait("BFD up on both ends", Duration::from_secs(30), || {
        let sessions = lab.d.json(&["bfd", "show"]);
        let xgw_up = sessions.as_array()?.iter().filter(|s| s["local_state"] == "up").count() == 2;
        (xgw_up && (0..2).all(|i| lab.ovs_bfd(i).as_deref() == Some("up"))).then_some(())
    });

    // An underlay cut: Down on both ends of both sessions, then Up again.
    let states = |want: &str| {
        let sessions = lab.d.json(&["bfd", "show"]);
        let xgw = sessions.as_array().is_some_and(|a| a.iter().all(|s| s["local_state"] == want));
        xgw && (0..2).all(|i| lab.ovs_bfd(i).as_deref() == Some(want))
    };
    lab.topo.ul.ok(&["ip", "link", "set", "u3", "down"]);
    lab.wait("BFD down on every end", Duration::from_secs(5), || states("down").then_some(()));
    lab.topo.ul.ok(&["ip", "link", "set", "u3", "up"]);
    lab.wait("BFD up again", Duration::from_secs(20), || states("up").then_some(()));
    lab.reach(2, 0);

    // Churn: a port removed and added back, the HA group changed; the
    // tunnels keep their numbers throughout.
    let before = lab.numbers();
    for round in 0..5 {
        ovn.nbctl(&["lsp-del", "vm2"]);
        lab.wait("vm2's binding gone", Duration::from_secs(10), || {
            (lab.show()["bindings"].as_array()?.len() < 3).then_some(())
        });
        ovn.nbctl(&["lsp-add", "ls1", "vm2", "--", "lsp-set-addresses", "vm2", "02:00:5e:00:01:02 203.0.113.2"]);
        ovn.nbctl(&["--wait=hv", "--timeout=10", "sync"]);
        let _ = round;
    }
    lab.reach(2, 1);
    let after = lab.numbers();
    for t in ["ovn-hv1-0", "ovn-hv2-0", "vm3"] {
        assert_eq!(after[t], before[t], "{t} kept its number through churn");
    }

    // What xgw does not implement is not claimed: an ACL for vm3 makes
    // xgw release it (the reason in show), and removing it claims it back.
    ovn.nbctl(&["acl-add", "ls1", "to-lport", "1001", r#"outport == "vm3" && icmp4"#, "drop"]);
    let refused = lab.wait("vm3 refused for its ACL", Duration::from_secs(10), || {
        let ovn_view = lab.show()["ovn"].clone();
        ovn_view["refused"]["vm3"].as_str().map(str::to_owned)
    });
    assert!(refused.contains("ACLs"), "{refused}");
    lab.wait("vm3 released in the Southbound", Duration::from_secs(10), || {
        ovn.sb_find("port_binding", "chassis", &["logical_port=vm3"]).trim().is_empty().then_some(())
    });
    assert!(!lab.numbers().contains_key("vm3"), "xgw still forwards for a port it cannot enforce");
    let metrics = xgw_tests::daemon::scrape(&lab.d.netns, &lab.metrics);
    assert_eq!(
        metrics.get("xgw_ovn_ports{state=\"refused\"}"),
        Some(3.0),
        "vm1, vm4 (no logical port yet) and vm3: {metrics:?}"
    );
    ovn.nbctl(&["acl-del", "ls1"]);
    lab.wait("vm3 claimed again", Duration::from_secs(10), || {
        (ovn.sb_find("port_binding", "up", &["logical_port=vm3"]).trim() == "true").then_some(())
    });
    lab.reach(0, 2);
    let after = lab.numbers();

    // The 2018 incident: a redundant chassis with xgw's IP. The Southbound
    // refuses it; xgw's tunnels and numbers do not move.
    let dup = ovn.sbctl_result(&["chassis-add", "dup1", "geneve", XGW_IP]);
    assert!(dup.is_err_and(|e| e.contains("constraint violation")), "the Southbound took a duplicate encap");
    let dup = ovn.sbctl_result(&["chassis-add", "dup2", "geneve", lab::HV_IP[0]]);
    assert!(dup.is_err_and(|e| e.contains("constraint violation")));
    ovn.nbctl(&["--wait=hv", "--timeout=10", "sync"]);
    assert_eq!(lab.numbers(), after, "numbers moved after a refused redundant chassis");
    let show = lab.show();
    let refused: Vec<&String> = show["ovn"]["refused"].as_object().unwrap().keys().collect();
    assert_eq!(refused, ["vm1", "vm4"], "{}", show["ovn"]);

    eprintln!("{}", lab.d.cli(&["show"]));
    eprintln!("{}", lab.d.cli(&["bfd", "show"]));
    // A clean stop leaves OVN: the peers drop their tunnels to xgw.
    let mut lab = lab;
    lab.d.stop();
    lab.wait("xgw's Chassis gone", Duration::from_secs(10), || {
        lab.ovn.sb_find("chassis", "_uuid", &["name=xgw"]).is_empty().then_some(())
    });
}

/// An encap IP that another chassis holds is one clear error and a
/// non-zero exit, never a retry loop.
#[test]
fn a_taken_encap_ip_stops_the_daemon_with_the_reason() {
    require_root!();
    let ovn = OvnCentral::start();
    let topo = lab::topology(&ovn);
    ovn.sbctl(&["chassis-add", "squatter", "geneve", XGW_IP]);
    let d = Daemon::new(&topo.xgw, "ul", &[XGW_IP]);
    let p =
        xgw_tests::Process::spawn(d.run_command(&["--ovn-remote", &ovn.sb_remote(), "--chassis", "xgw"]), "xgw run");
    let (status, _, err) = p.wait(Duration::from_secs(20)).expect("the daemon exits instead of retrying");
    assert!(!status.success(), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains("another chassis already registered that IP") && last.contains("xgw"), "{err}");
    assert!(ovn.sb_find("chassis", "_uuid", &["name=xgw"]).is_empty(), "half registered");
}

/// A raft-clustered Southbound loses the member xgw uses, then its leader
/// while a port is being added, then every member for 30 s: xgw moves to
/// another member and resumes from its last transaction (no reload), the
/// port is claimed once, changes reach it after each loss, and traffic and
/// BFD go on undisturbed throughout, as ovn-controller's do.
#[test]
fn a_raft_southbound_losing_members_never_stops_forwarding() {
    require_root!();
    let ovn = OvnCentral::start_raft();
    let lab = lab_on(ovn);
    let ovn = &lab.ovn;
    // vm4's interface is xgw's from the start; its logical port comes later.
    let vm4 = xgw_tests::Netns::new("ov4");
    xgw_tests::Veth::new(&lab.topo.xgw, "p4", "", &vm4, "eth0", "203.0.113.4/24");
    lab.wait("vm3 claimed and up", Duration::from_secs(30), || {
        (ovn.sb_find("port_binding", "up", &["logical_port=vm3"]).trim() == "true").then_some(())
    });
    lab::ha_router(ovn);
    lab.wait("BFD up to hv1 and hv2", Duration::from_secs(30), || {
        let f = flaps(&lab);
        (f.len() == 2 && f.values().all(|(s, _)| s == "up")).then_some(())
    });
    let bfd_before = flaps(&lab);
    lab.reach(0, 2);
    let bindings = |show: &Value| show["bindings"].as_array().map_or(0, |b| b.len());
    let bound = bindings(&lab.show());
    // 10 pings a second from vm1 to vm3 through everything below.
    let ping = lab.vm(0).spawn(&["ping", "-i", "0.1", "-c", "700", "-W", "1", VM_IP[2]]);

    // (1) The member xgw is on goes.
    let member = |show: &Value| -> Option<usize> {
        let remote = show["ovn"]["remote"].as_str()?;
        (1..=3).find(|m| remote.ends_with(&format!("sb{m}.sock")))
    };
    let first = member(&lab.show()).expect("connected to a member");
    let before = lab.show()["ovn"].clone();
    ovn.kill_sb_member(first);
    let moved = lab.wait("xgw on another member", Duration::from_secs(20), || {
        let show = lab.show();
        (show["ovn"]["connected"] == true && member(&show).is_some_and(|m| m != first)).then_some(show)
    });
    assert_eq!(moved["ovn"]["full_resyncs"], before["full_resyncs"], "reloaded instead of resuming: {}", moved["ovn"]);
    assert!(moved["ovn"]["resumes"].as_u64() > before["resumes"].as_u64(), "{}", moved["ovn"]);
    ovn.start_sb_member(first);

    // (2) The leader goes while vm4 is added for xgw.
    let leader = lab.wait("a leader", Duration::from_secs(20), || ovn.sb_leader());
    let xgw_uuid = ovn.sb_find("chassis", "_uuid", &["name=xgw"]);
    ovn.kill_sb_member(leader);
    ovn.nbctl(&["lsp-add", "ls1", "vm4", "--", "lsp-set-addresses", "vm4", "02:00:5e:00:01:04 203.0.113.4"]);
    ovn.nbctl(&["lsp-set-options", "vm4", "requested-chassis=xgw"]);
    // ovn-sbctl wants the leader, which may not be elected yet: retried.
    let find = |column: &str| {
        ovn.sbctl_result(&["--bare", &format!("--columns={column}"), "find", "port_binding", "logical_port=vm4"])
            .unwrap_or_default()
    };
    lab.wait("vm4 claimed by xgw and up", Duration::from_secs(30), || {
        (find("chassis").trim() == xgw_uuid.trim() && find("up").trim() == "true").then_some(())
    });
    let ports: Vec<String> = lab.numbers().into_keys().filter(|n| n.starts_with("vm")).collect();
    assert_eq!(ports, ["vm3", "vm4"], "each claimed once");
    ovn.start_sb_member(leader);

    // (3) The whole Southbound down for 30 s: nothing changes in xgw.
    lab.wait("a leader", Duration::from_secs(30), || ovn.sb_leader());
    let numbers = lab.numbers();
    for m in 1..=3 {
        ovn.kill_sb_member(m);
    }
    std::thread::sleep(Duration::from_secs(30));
    let show = lab.show();
    assert_eq!(show["ovn"]["connected"], false, "{}", show["ovn"]);
    assert_eq!((lab.numbers(), bindings(&show)), (numbers.clone(), bound), "xgw changed with the Southbound down");
    for m in 1..=3 {
        ovn.start_sb_member(m);
    }
    lab.wait("a leader", Duration::from_secs(30), || ovn.sb_leader());
    // And changes flow again.
    ovn.nbctl(&["lsp-del", "vm2"]);
    lab.wait("vm2's binding gone", Duration::from_secs(30), || (bindings(&lab.show()) == bound - 1).then_some(()));

    let (_, out, _) = ping.wait(Duration::from_secs(120)).expect("ping ends");
    let received: u32 =
        out.split(',').find_map(|f| f.trim().strip_suffix(" received").and_then(|n| n.parse().ok())).unwrap_or(0);
    eprintln!("vm1 -> vm3 through a member loss, a leader loss and 30 s without a Southbound: {received}/700");
    assert!(received >= 693, "forwarding stopped: {received}/700 received\n{}", lab.report());
    assert_eq!(flaps(&lab), bfd_before, "BFD flapped");
}

fn flaps(lab: &Lab) -> std::collections::BTreeMap<String, (String, u64)> {
    let sessions = lab.d.json(&["bfd", "show"]);
    sessions
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let state = s["local_state"].as_str().unwrap_or_default().to_owned();
            (s["name"].as_str().unwrap().to_owned(), (state, s["flap_count"].as_u64().unwrap_or(u64::MAX)))
        })
        .collect()
}

/// The 2018 incident replayed against xgw: thousands of Southbound
/// transactions that change nothing it depends on, and a chassis deleted
/// and re-added 1,000 times. Numbers in use stay the tunnels', hold-down
/// stays bounded by the deletes, and the other tunnels' BFD never leaves Up.
#[test]
fn the_seed_replayed_idle_transactions_and_a_chassis_churned_a_thousand_times() {
    require_root!();
    use serde_json::json;
    use xgw_ovsdb::ops;
    let lab = lab();
    let ovn = &lab.ovn;
    lab::ha_router(ovn);
    lab.wait("BFD up to hv1 and hv2", Duration::from_secs(30), || {
        let f = flaps(&lab);
        (f.len() == 2 && f.values().all(|(s, _)| s == "up")).then_some(f)
    });
    let bfd_before = flaps(&lab);
    let numbers_before = lab.numbers();

    // (1) 3,000 transactions that touch only what xgw does not read.
    let t = Instant::now();
    let idle = (0..3000).map(|i| {
        vec![ops::update("SB_Global", vec![], json!({"external_ids": ["map", [["xgw-test", i.to_string()]]]}))]
    });
    assert_eq!(ovn.sb_transactions(idle), 3000);
    eprintln!("3,000 idle Southbound transactions in {:?}", t.elapsed());
    assert_eq!(lab.numbers(), numbers_before);

    // (2) chassis hv9 deleted and re-added 1,000 times, ending present.
    let add = || {
        vec![
            ops::insert_named(
                "Encap",
                json!({"type": "geneve", "ip": "198.51.100.19", "options": ["map", [["csum", "true"]]], "chassis_name": "hv9"}),
                "e",
            ),
            ops::insert("Chassis", json!({"name": "hv9", "hostname": "hv9", "encaps": ops::named_uuid("e")})),
        ]
    };
    let del = || vec![ops::delete("Chassis", vec![ops::cond("name", "==", json!("hv9"))])];
    let t = Instant::now();
    let churn = (0..1000).flat_map(|_| [add(), del()]).chain([add()]);
    assert_eq!(ovn.sb_transactions(churn), 2001);
    eprintln!("1,000 deletes and re-adds of a chassis in {:?}", t.elapsed());
    let show = lab.wait("a tunnel to hv9", Duration::from_secs(30), || {
        let show = lab.show();
        let names =
            show["ports"].as_array()?.iter().filter_map(|p| p["name"].as_str()).any(|n| n.starts_with("ovn-hv9-"));
        names.then_some(show)
    });
    let ports = show["ports"].as_array().unwrap().len() as u64;
    let (used, held) = (show["ofports"]["used"].as_u64().unwrap(), show["ofports"]["held_down"].as_u64().unwrap());
    eprintln!("after the churn: {ports} ports, {used} numbers in use, {held} held down");
    assert_eq!(used, ports, "numbers in use are exactly the ports' (no leak)");
    assert_eq!(ports, 4, "ovn-hv1-0, ovn-hv2-0, hv9's tunnel, vm3: {}", show["ports"]);
    assert!(held <= 1000, "held down {held}: more than the deletes");
    for (t, n) in &numbers_before {
        assert_eq!(lab.numbers().get(t), Some(n), "{t} moved");
    }
    // The other tunnels' BFD never left Up (no flap counted).
    assert_eq!(
        flaps(&lab)
            .into_iter()
            .filter(|(n, _)| bfd_before.contains_key(n))
            .collect::<std::collections::BTreeMap<_, _>>(),
        bfd_before
    );
    lab.reach(0, 2);
}

/// The 2018 incident's Southbound (no `Encap (type, ip)` index) holding two
/// chassis with one IP: xgw keeps exactly one tunnel to that IP, reports the
/// redundant chassis, and consumes no number, on every re-application.
#[test]
fn redundant_chassis_with_one_ip_get_one_tunnel_and_no_number_on_every_application() {
    require_root!();
    use serde_json::json;
    use xgw_ovsdb::ops;
    let lab = lab_on(OvnCentral::start_without_encap_index());
    let ovn = &lab.ovn;
    lab.wait("vm3 claimed and up", Duration::from_secs(30), || {
        (ovn.sb_find("port_binding", "up", &["logical_port=vm3"]).trim() == "true").then_some(())
    });
    lab.wait("both tunnels", Duration::from_secs(20), || {
        let n = lab.numbers();
        (n.contains_key("ovn-hv1-0") && n.contains_key("ovn-hv2-0")).then_some(())
    });
    let before = lab.numbers();
    let ofports = lab.show()["ofports"].clone();
    // The redundant rows the index now refuses.
    ovn.sbctl(&["chassis-add", "hv1-redundant", "geneve", lab::HV_IP[0]]);
    ovn.sbctl(&["chassis-add", "hv2-redundant", "geneve", lab::HV_IP[1]]);
    let warnings = lab.wait("the redundant chassis reported", Duration::from_secs(20), || {
        let w = lab.show()["ovn"]["warnings"].clone();
        let all: Vec<String> = w.as_array()?.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect();
        (all.iter().filter(|w| w.contains("redundant") && w.contains("no second tunnel")).count() == 2).then_some(all)
    });
    eprintln!("{warnings:#?}");
    // 200 re-applications (each changes SB_Global.options, which xgw reads).
    let touch = (0..200)
        .map(|i| vec![ops::update("SB_Global", vec![], json!({"options": ["map", [["xgw-test", i.to_string()]]]}))]);
    ovn.sb_transactions(touch);
    std::thread::sleep(Duration::from_secs(1));
    let show = lab.show();
    assert_eq!(lab.numbers(), before, "exactly one tunnel per IP, the same numbers");
    assert_eq!(show["ofports"], ofports, "a number was consumed");
    let to = |ip: &str| show["ports"].as_array().unwrap().iter().filter(|p| p["remote_ip"] == ip).count();
    assert_eq!((to(lab::HV_IP[0]), to(lab::HV_IP[1])), (1, 1), "{}", show["ports"]);
    lab.reach(0, 2);
    lab.reach(2, 1);
}
