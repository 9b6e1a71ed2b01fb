//! The plan against a Southbound written row by row as OVN writes it (the
//! lab in `../shared/peers/ovn`: ls1 with vm1 on hv1, vm2 on hv2, vm3 on
//! xgw, a router behind `ls1-lr1`, an HA gateway over hv1 and hv2).
use std::collections::{BTreeMap, BTreeSet};

use super::plan::{plan, Inputs, OvnPlan};
use super::sb::*;
use crate::types::{IfName, Name};

fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn chassis(sb: &mut Sb, name: &str, ips: &[&str]) {
    let mut encaps = Vec::new();
    for ip in ips {
        let u = format!("encap-{name}-{ip}");
        sb.encaps.insert(
            u.clone(),
            Encap {
                kind: "geneve".into(),
                ip: ip.to_string(),
                options: map(&[("csum", "true")]),
                chassis_name: name.into(),
            },
        );
        encaps.push(u);
    }
    sb.chassis.insert(format!("ch-{name}"), Chassis { name: name.into(), encaps, ..Default::default() });
}

fn port(sb: &mut Sb, name: &str, key: u16, mac: &str, chassis: Option<&str>) {
    sb.ports.insert(
        format!("pb-{name}"),
        PortBinding {
            logical_port: name.into(),
            datapath: "dp-ls1".into(),
            tunnel_key: key,
            mac: vec![mac.into()],
            chassis: chassis.map(|c| format!("ch-{c}")),
            ..Default::default()
        },
    );
}

fn lab() -> Sb {
    let mut sb = Sb::default();
    chassis(&mut sb, "xgw", &["198.51.100.13"]);
    chassis(&mut sb, "hv1", &["198.51.100.11"]);
    chassis(&mut sb, "hv2", &["198.51.100.12", "2001:db8::12"]);
    sb.datapaths
        .insert("dp-ls1".into(), Datapath { tunnel_key: 1, load_balancers: 0, external_ids: map(&[("name", "ls1")]) });
    port(&mut sb, "vm1", 1, "02:00:5e:00:01:01 203.0.113.1", Some("hv1"));
    port(&mut sb, "vm2", 2, "02:00:5e:00:01:02 203.0.113.2 2001:db8::2", Some("hv2"));
    port(&mut sb, "vm3", 3, "02:00:5e:00:01:03 203.0.113.3", None);
    let vm3 = sb.ports.get_mut("pb-vm3").unwrap();
    vm3.requested_chassis = Some("ch-xgw".into());
    vm3.port_security = vec!["02:00:5e:00:01:03 203.0.113.3".into()];
    port(&mut sb, "ls1-lr1", 4, "router", None);
    let lsp = sb.ports.get_mut("pb-ls1-lr1").unwrap();
    lsp.kind = "patch".into();
    lsp.options = map(&[("peer", "lr1-ls1")]);
    // The router's side, on the router's datapath.
    sb.ports.insert(
        "pb-lr1-ls1".into(),
        PortBinding {
            logical_port: "lr1-ls1".into(),
            kind: "patch".into(),
            datapath: "dp-lr1".into(),
            tunnel_key: 1,
            mac: vec!["02:00:5e:00:02:01 203.0.113.254/24".into()],
            options: map(&[("peer", "ls1-lr1")]),
            ..Default::default()
        },
    );
    sb.groups.insert(
        "mg-flood".into(),
        MulticastGroup {
            datapath: "dp-ls1".into(),
            name: "_MC_flood".into(),
            tunnel_key: 32768,
            ports: ["pb-vm1", "pb-vm2", "pb-vm3", "pb-ls1-lr1"].map(String::from).to_vec(),
        },
    );
    sb.ha_chassis.insert("ha-1".into(), HaChassis { chassis: Some("ch-hv1".into()), priority: 20 });
    sb.ha_chassis.insert("ha-2".into(), HaChassis { chassis: Some("ch-hv2".into()), priority: 15 });
    sb.ha_groups.insert(
        "hg".into(),
        HaChassisGroup {
            name: "lr1-pub".into(),
            ha_chassis: vec!["ha-1".into(), "ha-2".into()],
            ref_chassis: vec!["ch-xgw".into(), "ch-hv1".into()],
        },
    );
    sb.global.options = map(&[("bfd-min-rx", "100"), ("bfd-min-tx", "100"), ("bfd-mult", "3")]);
    sb
}

struct Run {
    ifaces: BTreeMap<String, IfName>,
    names: BTreeMap<String, Name>,
    zones: BTreeSet<String>,
}

impl Run {
    fn new(ifaces: &[(&str, &str)]) -> Run {
        Run {
            ifaces: ifaces.iter().map(|(l, i)| (l.to_string(), IfName::new(*i).unwrap())).collect(),
            names: BTreeMap::new(),
            zones: BTreeSet::new(),
        }
    }

    fn plan(&self, sb: &Sb) -> OvnPlan {
        plan(
            sb,
            &Inputs {
                me: "xgw",
                transport_zones: &self.zones,
                ifaces: &self.ifaces,
                tunnel_names: &self.names,
                claim_unsupported: false,
            },
        )
    }
}

fn tunnels(p: &OvnPlan) -> Vec<(String, String, String, bool)> {
    p.tunnels.iter().map(|(id, t)| (id.clone(), t.name.to_string(), t.remote.to_string(), t.bfd)).collect()
}

#[test]
fn the_lab_becomes_tunnels_a_port_bindings_a_group_and_bfd_where_ovn_runs_it() {
    let sb = lab();
    let p = Run::new(&[("vm3", "tap3")]).plan(&sb);
    assert_eq!(
        tunnels(&p),
        [
            ("hv1@198.51.100.11".into(), "ovn-hv1-0".into(), "198.51.100.11".into(), true),
            ("hv2@198.51.100.12".into(), "ovn-hv2-0".into(), "198.51.100.12".into(), true),
            ("hv2@2001:db8::12".into(), "ovn-hv2-1".into(), "2001:db8::12".into(), true),
        ]
    );
    assert!(p.tunnels.iter().all(|(_, t)| t.vni.is_none() && t.ovn_metadata), "flow-keyed, with OVN's option");
    assert_eq!(p.ports.len(), 1);
    let vm3 = &p.ports[0];
    assert_eq!((vm3.name.as_str(), vm3.ifname.as_str(), vm3.vni.get(), vm3.port_key.get()), ("vm3", "tap3", 1, 3));
    assert_eq!(
        (vm3.mac.to_string(), vm3.ip.map(|i| i.to_string())),
        ("02:00:5e:00:01:03".into(), Some("203.0.113.3".into()))
    );
    assert!(vm3.port_security && vm3.allowed.len() == 1);
    assert_eq!(p.claims.len(), 1);
    assert!(!p.claims[0].held && p.claims[0].port_binding == "pb-vm3");
    let bindings: Vec<(String, Option<String>, String, u16)> = p
        .bindings
        .iter()
        .map(|b| (b.mac.to_string(), b.ip.map(|i| i.to_string()), b.tunnel.to_string(), b.port_key.get()))
        .collect();
    assert_eq!(
        bindings,
        [
            // The router port through hv1, the first chassis by name on ls1.
            ("02:00:5e:00:02:01".into(), Some("203.0.113.254".into()), "ovn-hv1-0".into(), 4),
            ("02:00:5e:00:01:01".into(), Some("203.0.113.1".into()), "ovn-hv1-0".into(), 1),
            ("02:00:5e:00:01:02".into(), Some("203.0.113.2".into()), "ovn-hv2-0".into(), 2),
        ]
    );
    assert_eq!(p.groups.len(), 1);
    let g = &p.groups[0];
    assert_eq!((g.vni.get(), g.key), (1, 32768));
    assert_eq!(g.ports.iter().map(|n| n.as_str()).collect::<Vec<_>>(), ["vm3"]);
    assert_eq!(g.tunnels.iter().map(|n| n.as_str()).collect::<Vec<_>>(), ["ovn-hv1-0", "ovn-hv2-0"]);
    assert_eq!((p.bfd.min_rx_ms, p.bfd.min_tx_ms, p.bfd.detect_mult), (Some(100), Some(100), Some(3)));
    assert!(p.refused.is_empty() && p.releases.is_empty() && p.warnings.is_empty(), "{p:?}");
}

#[test]
fn a_bindings_encap_picks_its_chassis_ip() {
    let mut sb = lab();
    sb.ports.get_mut("pb-vm2").unwrap().encap = Some("encap-hv2-2001:db8::12".into());
    let p = Run::new(&[("vm3", "tap3")]).plan(&sb);
    let vm2 = p.bindings.iter().find(|b| b.port_key.get() == 2).unwrap();
    assert_eq!(vm2.tunnel.as_str(), "ovn-hv2-1");
}

#[test]
fn names_stay_and_new_ones_take_the_first_free_counter() {
    let sb = lab();
    let mut run = Run::new(&[]);
    run.names.insert("hv2@198.51.100.12".into(), Name::new("ovn-hv2-7").unwrap());
    run.names.insert("gone@198.51.100.99".into(), Name::new("ovn-hv1-0").unwrap());
    let t = tunnels(&run.plan(&sb));
    assert_eq!(t[0].1, "ovn-hv1-1", "ovn-hv1-0 is still taken");
    assert_eq!(t[1].1, "ovn-hv2-7", "kept");
    assert_eq!(t[2].1, "ovn-hv2-0");
}

#[test]
fn no_bfd_without_a_group_and_none_as_a_gateway_member() {
    let mut sb = lab();
    sb.ha_groups.get_mut("hg").unwrap().ref_chassis.clear();
    assert!(Run::new(&[]).plan(&sb).tunnels.iter().all(|(_, t)| !t.bfd), "not a ref chassis: no BFD");
    sb.ha_chassis.insert("ha-3".into(), HaChassis { chassis: Some("ch-xgw".into()), priority: 30 });
    sb.ha_groups.get_mut("hg").unwrap().ha_chassis.push("ha-3".into());
    let p = Run::new(&[]).plan(&sb);
    assert!(p.tunnels.iter().all(|(_, t)| !t.bfd), "a member runs no BFD");
    assert!(p.warnings.iter().any(|w| w.contains("lr1-pub") && w.contains("gateway member")), "{:?}", p.warnings);
}

#[test]
fn remote_zoned_and_non_geneve_chassis_get_no_tunnel() {
    let mut sb = lab();
    sb.chassis.get_mut("ch-hv1").unwrap().other_config = map(&[("is-remote", "true")]);
    sb.chassis.get_mut("ch-hv2").unwrap().transport_zones.insert("tz1".into());
    chassis(&mut sb, "vx", &["198.51.100.20"]);
    sb.encaps.get_mut("encap-vx-198.51.100.20").unwrap().kind = "vxlan".into();
    let mut run = Run::new(&[("vm3", "tap3")]);
    let p = run.plan(&sb);
    assert!(p.tunnels.is_empty(), "{:?}", tunnels(&p));
    assert!(p.warnings.iter().any(|w| w.contains("chassis vx") && w.contains("geneve")), "{:?}", p.warnings);
    // vm1 and vm2 live where xgw has no tunnel: said, not dropped silently.
    assert!(p.bindings.is_empty());
    assert!(p.warnings.iter().any(|w| w.contains("vm1") && w.contains("no tunnel")), "{:?}", p.warnings);
    run.zones.insert("tz1".into());
    assert_eq!(tunnels(&run.plan(&sb)).iter().map(|t| t.1.as_str()).collect::<Vec<_>>(), ["ovn-hv2-0", "ovn-hv2-1"]);
}

#[test]
fn only_ports_that_ask_for_this_chassis_are_claimed_and_each_refusal_says_why() {
    let mut sb = lab();
    port(&mut sb, "vm4", 5, "02:00:5e:00:01:04 203.0.113.4", Some("hv1"));
    port(&mut sb, "vm5", 6, "unknown", None);
    sb.ports.get_mut("pb-vm5").unwrap().options = map(&[("requested-chassis", "hv9,xgw")]);
    port(&mut sb, "vm6", 7, "02:00:5e:00:01:06", Some("xgw"));
    let p = Run::new(&[("vm3", "tap3"), ("vm4", "tap4"), ("vm5", "tap5"), ("nosuch", "tap9"), ("ls1-lr1", "tap8")])
        .plan(&sb);
    assert_eq!(p.ports.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["vm3"]);
    let why = |l: &str| p.refused.get(l).cloned().unwrap_or_default();
    assert!(why("vm4").contains("requested-chassis"), "{}", why("vm4"));
    assert!(
        why("vm5").contains("mac") && why("vm5").contains("unknown"),
        "asked for by option, unusable: {}",
        why("vm5")
    );
    assert!(why("nosuch").contains("no Port_Binding"));
    assert!(why("ls1-lr1").contains("patch"));
    // vm6 is bound to xgw but no interface names it: released.
    assert_eq!(p.releases, ["pb-vm6"]);
    // A switch with load balancers: refused unless the operator says so.
    sb.datapaths.get_mut("dp-ls1").unwrap().load_balancers = 1;
    let p = Run::new(&[("vm3", "tap3")]).plan(&sb);
    assert!(p.ports.is_empty() && p.refused["vm3"].contains("load balancers"), "{:?}", p.refused);
    let run = Run::new(&[("vm3", "tap3")]);
    let p = plan(
        &sb,
        &Inputs {
            me: "xgw",
            transport_zones: &run.zones,
            ifaces: &run.ifaces,
            tunnel_names: &run.names,
            claim_unsupported: true,
        },
    );
    assert_eq!(p.ports.len(), 1);
    assert!(p.warnings.iter().any(|w| w.contains("load balancers")));
}

#[test]
fn a_port_already_ours_is_held_and_bfd_options_are_checked() {
    let mut sb = lab();
    let vm3 = sb.ports.get_mut("pb-vm3").unwrap();
    vm3.chassis = Some("ch-xgw".into());
    vm3.encap = Some("encap-xgw-198.51.100.13".into());
    vm3.up = Some(true);
    sb.global.options = map(&[("bfd-min-rx", "fast"), ("bfd-decay-min-rx", "1000")]);
    let p = Run::new(&[("vm3", "tap3")]).plan(&sb);
    assert!(p.claims[0].held && p.claims[0].up);
    assert!(p.releases.is_empty());
    assert_eq!(p.bfd.min_rx_ms, None);
    assert!(p.warnings.iter().any(|w| w.contains("bfd-min-rx") && w.contains("not a number")));
    assert!(p.warnings.iter().any(|w| w.contains("bfd-decay-min-rx")));
}

#[test]
fn logical_flows_say_what_a_switch_has_that_xgw_does_not_do() {
    // Flows as OVN 23.03's northd writes them (`ovn-sbctl list Logical_Flow`).
    let acl = unsupported("ls_out_acl", true, 2001, r#"outport == "vm3" && icmp4"#).unwrap();
    assert_eq!((acl.what, acl.ports.clone()), ("ACLs", Some(vec!["vm3".to_owned()])));
    assert!(acl.applies_to("vm3") && !acl.applies_to("vm1"));
    // Every switch's own ACL-stage flows, and the DHCP reply's, are no ACL.
    assert_eq!(unsupported("ls_in_acl", false, 65535, "1"), None);
    assert_eq!(unsupported("ls_out_acl", true, 34000, r#"outport == "vm3" && udp.src == 67"#), None);
    let pg = unsupported("ls_in_acl", true, 1100, "inport == @pg1 && ip4").unwrap();
    assert!(pg.ports.is_none() && pg.applies_to("vm3"), "a port group: the whole switch");
    let all = unsupported("ls_in_acl", true, 1001, "ip4.dst == 203.0.113.9").unwrap();
    assert!(all.applies_to("vm3"));
    let dhcp = unsupported("ls_in_dhcp_options", true, 100, r#"inport == "vm3" && udp.dst == 67"#).unwrap();
    assert_eq!(dhcp.what, "DHCP options");
    assert_eq!(unsupported("ls_in_dns_lookup", false, 100, "udp.dst == 53").unwrap().what, "DNS records");
    // Every switch has a priority-0 flow in each stage.
    for stage in super::sb::UNSUPPORTED_STAGES {
        assert_eq!(unsupported(stage, false, 0, "1"), None, "{stage}");
    }
    assert_eq!(unsupported("ls_in_qos_meter", true, 100, r#"inport == "vm3""#).unwrap().what, "QoS");
    assert_eq!(
        unsupported("ls_in_lb", true, 120, "ct.new && ip4.dst == 203.0.113.100").unwrap().what,
        "load balancers"
    );
    assert_eq!(unsupported("ls_in_lb", false, 0, "1"), None);

    // The plan: an ACL for vm1 leaves vm3 alone; one for vm3 refuses it.
    let mut sb = lab();
    sb.unsupported.insert("dp-ls1".into(), vec![unsupported("ls_out_acl", true, 2001, r#"outport == "vm1""#).unwrap()]);
    assert_eq!(Run::new(&[("vm3", "tap3")]).plan(&sb).ports.len(), 1);
    sb.unsupported.get_mut("dp-ls1").unwrap().push(dhcp);
    let p = Run::new(&[("vm3", "tap3")]).plan(&sb);
    assert!(p.ports.is_empty());
    assert_eq!(
        p.refused["vm3"],
        "switch ls1 has DHCP options for it, which xgw does not implement (they would not be enforced)"
    );
}

#[test]
fn two_chassis_with_one_ip_get_one_tunnel_and_the_other_is_reported() {
    let mut sb = lab();
    // A Southbound without the Encap (type, ip) index: hv1's IP twice.
    chassis(&mut sb, "hv0", &["198.51.100.11"]);
    let run = Run::new(&[("vm3", "tap3")]);
    let p = run.plan(&sb);
    let names: Vec<String> = tunnels(&p).into_iter().map(|t| t.1).collect();
    assert_eq!(names, ["ovn-hv0-0", "ovn-hv2-0", "ovn-hv2-1"], "the first by name, once");
    assert!(p.warnings.iter().any(|w| w.contains("chassis hv1") && w.contains("also chassis hv0")), "{:?}", p.warnings);
    // The one that has the tunnel keeps it, whatever the names say.
    let mut run = run;
    run.names.insert("hv1@198.51.100.11".into(), Name::new("ovn-hv1-0").unwrap());
    let p = run.plan(&sb);
    let names: Vec<String> = tunnels(&p).into_iter().map(|t| t.1).collect();
    assert_eq!(names, ["ovn-hv1-0", "ovn-hv2-0", "ovn-hv2-1"]);
    assert!(p.warnings.iter().any(|w| w.contains("chassis hv0") && w.contains("also chassis hv1")), "{:?}", p.warnings);
    // A chassis claiming this chassis' own IP gets none.
    chassis(&mut sb, "imposter", &["198.51.100.13"]);
    let p = run.plan(&sb);
    assert!(p.warnings.iter().any(|w| w.contains("imposter") && w.contains("own")), "{:?}", p.warnings);
    assert!(tunnels(&p).iter().all(|t| t.2 != "198.51.100.13"));
}
