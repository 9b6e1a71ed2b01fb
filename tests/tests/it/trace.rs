//! `xgw trace` and `xgw dump-flows` through the real binary, against a
//! running daemon's pinned datapath: a Geneve packet on the uplink traced to
//! its local port (the redirect and the inner frame, byte for byte), an
//! unknown VNI traced to its drop (the reason by name and in words, the
//! counter it moved), a local port's frame traced to its encapsulation
//! (outer headers toward the tunnel's remote, VNI, OVN option), the same
//! from a pcap file; the live counters never move. `dump-flows` after real
//! traffic shows the slots it filled, current, and after a map change the
//! same slots no longer current.
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use serde_json::Value;
use xgw::ofport::MacAddr;
use xgw_tests::{
    capture::inject,
    daemon::{gateway, Gateway},
    packet::geneve::{geneve_payload, ovn_option},
    require_root,
};

const VM_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x20, 0, 1];
const REMOTE_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x20, 0, 2];
const PAYLOAD: [u8; 16] = [7; 16];

fn mac(m: [u8; 6]) -> String {
    MacAddr(m).to_string()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The daemon with tunnel hv2 (198.51.100.2, VNI 5001, OVN option), a
/// flow-keyed tunnel hv4 (198.51.100.4), port vm1 on `p1` (VNI 5001, key
/// 17) and the remote MAC bound behind hv2 (key 34).
fn setup(tag: &str) -> Gateway {
    let mut g = gateway(tag);
    let d = &mut g.daemon;
    d.start();
    d.cli(&["tunnel", "add", "hv2", "--remote-ip", "198.51.100.2", "--vni", "5001", "--ovn-metadata"]);
    d.cli(&["tunnel", "add", "hv4", "--remote-ip", "198.51.100.4", "--ovn-metadata"]);
    d.cli(&["port", "add", "vm1", "--ifname", "p1", "--vni", "5001", "--port-key", "17", "--mac", &mac(VM_MAC)]);
    d.cli(&["binding", "add", "--vni", "5001", "--mac", &mac(REMOTE_MAC), "--tunnel", "hv2", "--port-key", "34"]);
    g
}

fn ofport(g: &Gateway, name: &str) -> u64 {
    let ports = g.daemon.json(&["port", "list"]);
    let tunnels = g.daemon.json(&["tunnel", "list"]);
    ports.as_array().unwrap().iter().chain(tunnels.as_array().unwrap()).find(|p| p["name"] == name).unwrap()["ofport"]
        .as_u64()
        .unwrap()
}

/// The live counters a trace of these tests would move, if it moved any:
/// the tunnels' rx and tx, vm1's tx, the drops for unknown VNIs and
/// tunnels. (Not vm1's rx nor `port_security_mac`: the kernel on `p1x`
/// sends its own IPv6 frames into vm1 meanwhile.)
fn live(g: &Gateway) -> Vec<u64> {
    let stats = g.daemon.json(&["stats"]);
    let port = |name: &str, f: &str| {
        stats["ports"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()[f].as_u64().unwrap()
    };
    vec![
        port("hv2", "rx_packets"),
        port("hv2", "tx_packets"),
        port("hv4", "rx_packets"),
        port("vm1", "tx_packets"),
        stats["drops"]["unknown_vni"].as_u64().unwrap(),
        stats["drops"]["unknown_tunnel"].as_u64().unwrap(),
    ]
}

fn trace(g: &Gateway, args: &[&str]) -> Value {
    let dir = g.daemon.pins();
    let mut a = vec!["trace", "--bpffs", dir.to_str().unwrap()];
    a.extend(args);
    g.daemon.json(&a)
}

fn trace_human(g: &Gateway, args: &[&str]) -> String {
    let dir = g.daemon.pins();
    let mut a = vec!["trace", "--bpffs", dir.to_str().unwrap()];
    a.extend(args);
    g.daemon.cli(&a)
}

/// The inner frame of the tests: the remote VM to vm1, UDP, built by
/// etherparse (not by the trace's own syntax).
fn to_vm() -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(REMOTE_MAC, VM_MAC)
        .ipv4([203, 0, 113, 2], [203, 0, 113, 1], 64)
        .udp(40000, 7)
        .write(&mut f, &PAYLOAD)
        .unwrap();
    f
}

fn from_vm() -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(VM_MAC, REMOTE_MAC)
        .ipv4([203, 0, 113, 1], [203, 0, 113, 2], 64)
        .udp(40000, 7)
        .write(&mut f, &PAYLOAD)
        .unwrap();
    f
}

const TO_VM_INNER: &str = "inner_eth_src=02:00:5e:20:00:02,inner_eth_dst=02:00:5e:20:00:01,inner_ip_src=203.0.113.2,\
                           inner_ip_dst=203.0.113.1,inner_udp_src=40000,inner_udp_dst=7,\
                           payload=07070707070707070707070707070707";

/// The counters a trace reports, as (map, name or port/direction, packets).
fn moved(doc: &Value) -> Vec<(String, String, u64)> {
    doc["counters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let what = match c["map"].as_str().unwrap() {
                "PORT_STATS" => format!("{}/{}", c["port"].as_str().unwrap(), c["direction"].as_str().unwrap()),
                _ => c["name"].as_str().unwrap().to_owned(),
            };
            (c["map"].as_str().unwrap().to_owned(), what, c["packets"].as_u64().unwrap())
        })
        .collect()
}

fn s(a: &str, b: &str, n: u64) -> (String, String, u64) {
    (a.to_owned(), b.to_owned(), n)
}

fn assert_decap_to_vm1(g: &Gateway, doc: &Value) {
    assert_eq!(doc["verdict"], "redirect", "{doc:#}");
    let r = &doc["redirect"];
    assert_eq!(
        (r["ofport"].as_u64(), r["port"].as_str(), r["kind"].as_str()),
        (Some(ofport(g, "vm1")), Some("vm1"), Some("local")),
        "{doc:#}"
    );
    assert_eq!(r["devmap_key"].as_u64(), Some(ofport(g, "vm1")));
    assert_eq!(r["ifname"], "p1");
    assert_eq!(doc["output"]["hex"].as_str().unwrap(), hex(&to_vm()), "the decapsulated inner frame, byte for byte");
    assert_eq!(moved(doc), vec![s("PORT_STATS", "hv2/rx", 1), s("PORT_STATS", "vm1/tx", 1)], "{doc:#}");
    assert!(doc["drops"].as_array().unwrap().is_empty());
}

#[test]
fn a_geneve_packet_on_the_uplink_is_traced_to_its_local_port() {
    require_root!();
    let g = setup("trace");
    let stats = live(&g);
    let flow = format!("ip_src=198.51.100.2,vni=5001,ovn_ingress=34,ovn_egress=17,{TO_VM_INNER}");
    let doc = trace(&g, &["--in", "uplink", &flow]);
    assert_decap_to_vm1(&g, &doc);
    let geneve = &doc["input"]["decoded"]["geneve"];
    assert_eq!((geneve["vni"].as_u64(), &geneve["options"][0]["ovn"]["egress"]), (Some(5001), &Value::from(17)));
    assert_eq!(doc["input"]["decoded"]["ipv4"]["dst"], "198.51.100.1", "the uplink's address by default");
    assert_eq!(doc["output"]["decoded"]["eth"]["dst"], mac(VM_MAC));

    // Without the OVN option the inner MAC decides: the same port.
    let flow = format!("ip_src=198.51.100.2,vni=5001,{TO_VM_INNER}");
    assert_decap_to_vm1(&g, &trace(&g, &["--in", "uplink", &flow]));

    let human = trace_human(&g, &["--in", "uplink", &flow]);
    let want = format!("verdict: redirect to ofport {} (vm1, local) via DEVMAP key", ofport(&g, "vm1"));
    assert!(human.contains(&want), "{human}");
    assert!(human.contains("geneve(") && human.contains("vni=5001)"), "{human}");
    assert_eq!(live(&g), stats, "a trace moves no live counter");
}

#[test]
fn an_unknown_vni_is_traced_to_its_drop_and_reason() {
    require_root!();
    let g = setup("trace");
    let stats = live(&g);
    // hv4 is flow-keyed: any VNI arrives, but no local port serves 7777.
    let flow = "ip_src=198.51.100.4,vni=7777,ovn_ingress=34,ovn_egress=17,inner_eth_dst=02:00:5e:20:00:01";
    let doc = trace(&g, &["--in", "uplink", flow]);
    assert_eq!(doc["verdict"], "drop", "{doc:#}");
    assert_eq!(moved(&doc), vec![s("DROPS", "unknown_vni", 1)], "{doc:#}");
    assert_eq!(doc["drops"][0]["reason"], "unknown_vni");
    assert!(doc["output"].is_null() && doc["redirect"].is_null());
    let human = trace_human(&g, &["--in", "uplink", flow]);
    assert!(human.contains("verdict: drop"), "{human}");
    assert!(human.contains("DROPS unknown_vni +1"), "{human}");
    assert!(human.contains("why: unknown_vni: a VNI no local port serves"), "{human}");
    // From a remote no tunnel is configured for: another reason.
    let doc = trace(&g, &["--in", "uplink", "ip_src=198.51.100.9,vni=5001,inner_eth_dst=02:00:5e:20:00:01"]);
    assert_eq!(moved(&doc), vec![s("DROPS", "unknown_tunnel", 1)], "{doc:#}");
    assert_eq!(live(&g), stats, "a trace moves no live counter");
}

/// Waits until hv2's next hop is resolved (the peer's `w`): its MAC.
fn wait_nexthop(g: &Gateway) -> String {
    let start = Instant::now();
    loop {
        let show = g.daemon.json(&["show"]);
        let t = show["ports"].as_array().unwrap().iter().find(|p| p["name"] == "hv2").cloned().unwrap();
        if t["nexthop"]["resolved"] == true {
            return t["nexthop"]["mac"].as_str().unwrap().to_owned();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "hv2's next hop never resolved");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_frame_from_a_local_port_is_traced_to_its_encapsulation() {
    require_root!();
    let g = setup("trace");
    let nexthop = wait_nexthop(&g);
    let stats = live(&g);
    let flow = format!(
        "eth_dst={},ip_src=203.0.113.1,ip_dst=203.0.113.2,udp_src=40000,udp_dst=7,payload={}",
        mac(REMOTE_MAC),
        hex(&PAYLOAD)
    );
    for ingress in ["vm1", "p1"] {
        let doc = trace(&g, &["--in", ingress, &flow]);
        assert_eq!(doc["input"]["hex"].as_str().unwrap(), hex(&from_vm()), "eth_src is the port's MAC by default");
        assert_eq!(doc["verdict"], "redirect", "{doc:#}");
        let r = &doc["redirect"];
        assert_eq!(
            (r["port"].as_str(), r["kind"].as_str(), r["ifname"].as_str()),
            (Some("hv2"), Some("tunnel"), Some("ul"))
        );
        assert_eq!(r["devmap_key"], 0xfffe);
        let out = &doc["output"]["decoded"];
        assert_eq!(out["eth"]["dst"], nexthop.as_str(), "{doc:#}");
        assert_eq!((&out["ipv4"]["src"], &out["ipv4"]["dst"]), (&"198.51.100.1".into(), &"198.51.100.2".into()));
        assert_eq!(out["ipv4"]["checksum_ok"], true);
        assert_eq!(out["udp"]["dst"], 6081);
        assert_eq!(out["geneve"]["vni"], 5001);
        assert_eq!(out["geneve"]["options"][0]["ovn"], serde_json::json!({ "ingress": 17, "egress": 34 }));
        let bytes = doc["output"]["hex"].as_str().unwrap();
        assert!(bytes.ends_with(&hex(&from_vm())), "the inner frame whole at the end");
        assert_eq!(moved(&doc), vec![s("PORT_STATS", "hv2/tx", 1), s("PORT_STATS", "vm1/rx", 1)], "{doc:#}");
    }
    // A source MAC the port may not send from.
    let doc = trace(&g, &["--in", "vm1", &format!("eth_src=02:00:5e:20:00:09,{flow}")]);
    assert_eq!(
        (doc["verdict"].as_str(), doc["drops"][0]["reason"].as_str()),
        (Some("drop"), Some("port_security_mac"))
    );
    assert_eq!(live(&g), stats, "a trace moves no live counter");
}

/// A classic pcap file (tcpdump -w) holding `frames`.
fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut v = Vec::new();
    for w in [0xa1b2c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        v.extend(w.to_le_bytes());
    }
    for f in frames {
        for w in [0u32, 0, f.len() as u32, f.len() as u32] {
            v.extend(w.to_le_bytes());
        }
        v.extend(f);
    }
    v
}

/// The Geneve frame from the peer `w` to the uplink, as the peer sends it.
fn geneve_frame(g: &Gateway) -> Vec<u8> {
    let ul = g.ns.ok(&["cat", "/sys/class/net/ul/address"]).trim().parse::<MacAddr>().unwrap();
    let w = g.peer.ok(&["cat", "/sys/class/net/w/address"]).trim().parse::<MacAddr>().unwrap();
    let body = geneve_payload(&[ovn_option(34, 17)], 5001, &to_vm());
    let mut f = Vec::new();
    PacketBuilder::ethernet2(w.0, ul.0)
        .ipv4([198, 51, 100, 2], [198, 51, 100, 1], 64)
        .udp(50000, 6081)
        .write(&mut f, &body)
        .unwrap();
    f
}

#[test]
fn a_pcap_file_is_traced_from_its_first_packet() {
    require_root!();
    let g = setup("trace");
    let frame = geneve_frame(&g);
    let file = g.daemon.state.path.join("in.pcap");
    std::fs::write(&file, pcap(&[frame.clone(), from_vm()])).unwrap();
    let doc = trace(&g, &["--in", "uplink", "--pcap", file.to_str().unwrap()]);
    assert_eq!(doc["input"]["hex"].as_str().unwrap(), hex(&frame), "the first packet");
    assert_decap_to_vm1(&g, &doc);
    std::fs::write(&file, b"\x0a\x0d\x0d\x0a not a classic pcap").unwrap();
    let err = g.daemon.refused(&[
        "trace",
        "--bpffs",
        g.daemon.pins().to_str().unwrap(),
        "--in",
        "uplink",
        "--pcap",
        file.to_str().unwrap(),
    ]);
    assert!(err.contains("pcapng is not read"), "{err}");
}

fn dump_flows(g: &Gateway) -> Value {
    g.daemon.json(&["dump-flows", "--bpffs", g.daemon.pins().to_str().unwrap()])
}

/// The slots of `doc[table]` whose key is `key`.
fn slots<'a>(doc: &'a Value, table: &str, key: &Value) -> Vec<&'a Value> {
    doc[table].as_array().unwrap().iter().filter(|f| &f["key"] == key).collect()
}

#[test]
fn dump_flows_shows_the_slots_real_traffic_filled_and_when_they_go_stale() {
    require_root!();
    let g = setup("dflows");
    wait_nexthop(&g);
    let empty = dump_flows(&g);
    assert!(empty["decap"].as_array().unwrap().is_empty(), "{empty:#}");
    // Real frames through the attached programs: Geneve from the peer to
    // the uplink, and the VM's frame into vm1's interface.
    inject(&g.peer, "w", &[geneve_frame(&g)]);
    inject(&g.ns, "p1x", &[from_vm()]);
    let decap_key =
        serde_json::json!({ "remote": "198.51.100.2", "vni": 5001, "egress": 17, "mac": "00:00:00:00:00:00" });
    let encap_key = serde_json::json!({ "ifindex": g.ns.ifindex("p1"), "ifname": "p1", "mac": mac(REMOTE_MAC) });
    let start = Instant::now();
    let doc = loop {
        let doc = dump_flows(&g);
        if !slots(&doc, "decap", &decap_key).is_empty() && !slots(&doc, "encap", &encap_key).is_empty() {
            break doc;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the traffic filled no slot with the expected keys:\n{doc:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let generation = doc["generation"].as_u64().unwrap();
    let d = slots(&doc, "decap", &decap_key)[0];
    assert_eq!((d["current"].as_bool(), d["generation"].as_u64()), (Some(true), Some(generation)), "{doc:#}");
    assert_eq!(
        d["dest"],
        serde_json::json!({ "kind": "local", "ofport": ofport(&g, "vm1"), "port": "vm1", "port_key": 17 })
    );
    assert_eq!(d["tunnel"]["port"], "hv2");
    let e = slots(&doc, "encap", &encap_key)[0];
    assert_eq!((e["current"].as_bool(), e["generation"].as_u64()), (Some(true), Some(generation)), "{doc:#}");
    assert_eq!(
        e["dest"],
        serde_json::json!({ "kind": "remote", "ofport": ofport(&g, "hv2"), "port": "hv2", "port_key": 34 })
    );
    assert_eq!((e["in_port"]["port"].as_str(), e["outer"].as_str()), (Some("vm1"), Some("ipv4")));
    assert_eq!(e["tunnel"]["remote"], "198.51.100.2");
    // The tunnel's headers, shared by every flow to it, in a slot of their
    // own on the CPU that built them: the one the encap flow went through.
    let hv2 = ofport(&g, "hv2");
    let t = doc["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["ofport"].as_u64() == Some(hv2) && t["cpu"] == e["cpu"])
        .unwrap_or_else(|| panic!("no tunnel slot for hv2 on the encap flow's CPU:\n{doc:#}"));
    assert_eq!(
        (t["port"].as_str(), t["remote"].as_str(), t["outer"].as_str(), t["outer_len"].as_u64()),
        (Some("hv2"), Some("198.51.100.2"), Some("ipv4"), Some(58)),
        "{doc:#}"
    );
    assert_eq!((t["current"].as_bool(), &e["tunnel"]["nexthop_mac"]), (Some(true), &t["nexthop_mac"]), "{doc:#}");
    let human = g.daemon.cli(&["dump-flows", "--bpffs", g.daemon.pins().to_str().unwrap()]);
    assert!(human.contains("remote=198.51.100.2,vni=5001,egress=17") && human.contains("current"), "{human}");
    assert!(human.contains("tunnel cpu") && human.contains("hv2(") && human.contains("outer ipv4 58 bytes"), "{human}");

    // A map change (another binding) retires every slot filled before it.
    g.daemon.cli(&[
        "binding",
        "add",
        "--vni",
        "5001",
        "--mac",
        "02:00:5e:20:00:03",
        "--tunnel",
        "hv2",
        "--port-key",
        "35",
    ]);
    let after = dump_flows(&g);
    assert!(after["generation"].as_u64().unwrap() > generation, "{after:#}");
    for (table, key, was) in [("decap", &decap_key, d), ("encap", &encap_key, e)] {
        let now = slots(&after, table, key);
        let same =
            now.iter().find(|f| f["cpu"] == was["cpu"] && f["slot"] == was["slot"]).expect("the slot is still filled");
        assert_eq!((same["current"].as_bool(), &same["generation"]), (Some(false), &was["generation"]), "{after:#}");
    }
    assert!(g.daemon.cli(&["dump-flows", "--bpffs", g.daemon.pins().to_str().unwrap()]).contains("stale"));
}

/// `bpftool -j map dump` of a running daemon's pinned maps: the maps carry
/// BTF (`.maps` definitions), so bpftool prints each entry formatted with
/// the key's and value's field names, not only hex.
#[test]
fn bpftool_dumps_the_pinned_maps_with_field_names() {
    require_root!();
    let g = setup("trbtf");
    let dump = |map: &str| -> Value {
        let path = g.daemon.pins().join(map);
        let out = std::process::Command::new("bpftool")
            .args(["-j", "map", "dump", "pinned"])
            .arg(&path)
            .output()
            .expect("bpftool (scripts/setup.sh installs it)");
        assert!(out.status.success(), "bpftool map dump {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("bpftool -j prints JSON")
    };
    let hv2 = ofport(&g, "hv2");
    let tunnels = dump("TUNNELS");
    let entry = tunnels
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["formatted"]["key"] == hv2)
        .unwrap_or_else(|| panic!("hv2 ({hv2}) not formatted in {tunnels:#}"));
    let value = &entry["formatted"]["value"];
    assert_eq!(value["vni"], 5001, "{value:#}");
    // 198.51.100.2 IPv4-mapped.
    let remote: Vec<u64> = value["remote"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap()).collect();
    assert_eq!(remote, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 51, 100, 2], "{value:#}");
    for field in ["nexthop_mac", "flags"] {
        assert!(value.get(field).is_some(), "{field} in {value:#}");
    }

    let ports = dump("LOCAL_PORTS");
    let vm1 = ports.as_array().unwrap().iter().map(|e| &e["formatted"]["value"]).find(|v| v["port_key"] == 17);
    let vm1 = vm1.unwrap_or_else(|| panic!("vm1 not formatted in {ports:#}"));
    assert_eq!(vm1["vni"], 5001);
    assert_eq!(vm1["ofport"], ofport(&g, "vm1"));
    let mac: Vec<u64> = vm1["mac"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap()).collect();
    assert_eq!(mac, VM_MAC.map(u64::from));
}

/// A broadcast from vm1 into its VNI's flood group: `xgw_local` passes it
/// up with the record `xgw_flood` takes (in the frame, behind the MACs);
/// the trace decodes the record (group, ingress) and shows the frame as
/// `xgw_flood` copies it, the one that came in, byte for byte.
#[test]
fn a_broadcast_is_traced_to_its_flood_group() {
    require_root!();
    let g = setup("trfl");
    g.daemon.cli(&["group", "add", "--vni", "5001", "--key", "32768", "--port", "vm1", "--tunnel", "hv2"]);
    let stats = live(&g);
    let flow = "eth_dst=ff:ff:ff:ff:ff:ff,ip_src=203.0.113.1,ip_dst=203.0.113.255,udp_src=40000,udp_dst=7";
    let doc = trace(&g, &["--in", "vm1", flow]);
    assert_eq!(doc["verdict"], "pass", "{doc:#}");
    let want =
        serde_json::json!({ "vni": 5001, "group": 32768, "ingress_ofport": ofport(&g, "vm1"), "from_tunnel": false });
    assert_eq!(doc["flood"], want, "{doc:#}");
    assert_eq!(doc["output"]["hex"], doc["input"]["hex"], "the frame xgw_flood copies is the one that came in");
    let human = trace_human(&g, &["--in", "vm1", flow]);
    assert!(human.contains("verdict: pass to xgw_flood: group 32768 of VNI 5001"), "{human}");
    assert_eq!(live(&g), stats, "a trace moves no live counter");
}
