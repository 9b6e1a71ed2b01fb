//! The `xgw run` daemon in a gateway namespace, driven through the `xgw` CLI
//! as an operator would: every command's `--json` output is compared with
//! the pinned BPF maps read back through aya (byte for byte, against the
//! bytes `xgw_common::maps` says the ports need); bad input is refused with
//! one line and leaves the maps and the stores as they were; a second
//! daemon is refused; the metrics endpoint is scraped and parsed; and
//! traffic across a tunnel does not lose a packet while the daemon is
//! SIGKILLed and restarted.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::IpAddr,
    time::{Duration, Instant},
};

use serde_json::Value;
use xgw::{
    ofport::{LocalPort, MacAddr, OfPort, PortRecord, PortSpec, RedbStore, Store, TunnelPort},
    types::{IfName, Name, PortKey, Vni},
};
use xgw_common::maps::{self as wire, names::*, *};
use xgw_tests::{
    daemon::{gateway, get_metrics, parse_samples, promtool_check, python_parse, scrape, Daemon, GATEWAY_IPS as GW_IP},
    gateway::TestGateway,
    netns::{Netns, Veth},
    ports::{bytes, expected_maps, read_maps, read_records, Maps, TempDir},
    process::Process,
    require_root,
};

const VNI: u32 = 5001;
const GW_MAC: [[u8; 6]; 2] = [[0x02, 0x00, 0x5e, 0x10, 0, 1], [0x02, 0x00, 0x5e, 0x10, 0, 2]];
const VM_MAC: [[u8; 6]; 2] = [[0x02, 0x00, 0x5e, 0x20, 0, 1], [0x02, 0x00, 0x5e, 0x20, 0, 2]];
const VM_IP: [&str; 2] = ["203.0.113.1", "203.0.113.2"];
const VM_KEY: [u16; 2] = [0x0011, 0x0022];

fn mac(m: [u8; 6]) -> String {
    MacAddr(m).to_string()
}

/// The maps as the daemon's `show --json` says they must be: the ports'
/// entries (from the map contract), each tunnel's resolved next hop, each
/// binding's FDB_REMOTE and NEIGH entries, and the uplink's DEVMAP slot.
fn maps_from_show(ns: &Netns, show: &Value) -> Maps {
    let mut records = Vec::new();
    let mut nexthops = Vec::new();
    for p in show["ports"].as_array().expect("ports array") {
        let name = p["name"].as_str().unwrap().to_owned();
        let ofport = OfPort::new(p["ofport"].as_u64().unwrap() as u16).expect("usable number");
        // Absent for a flow-keyed tunnel.
        let vni = p["vni"].as_u64().map(|v| Vni::new(v as u32).unwrap());
        let spec = match p["type"].as_str().unwrap() {
            "local" => PortSpec::Local(LocalPort {
                name: Name::new(name).unwrap(),
                ifname: IfName::new(p["ifname"].as_str().unwrap()).unwrap(),
                vni: vni.expect("a local port's vni"),
                port_key: PortKey::new(p["port_key"].as_u64().unwrap() as u16).unwrap(),
                mac: p["mac"].as_str().unwrap().parse().unwrap(),
                ip: p["ip"].as_str().map(|s| s.parse().unwrap()),
                ofport_request: None,
                port_security: p["port_security"].as_array().is_none_or(|l| !l.is_empty()),
                allowed: p["port_security"]
                    .as_array()
                    .map(|l| l.iter().skip(1).map(|e| e.as_str().unwrap().parse().unwrap()).collect())
                    .unwrap_or_default(),
            }),
            "tunnel" => {
                if let Some(m) = p["nexthop"]["mac"].as_str() {
                    nexthops.push((ofport, m.parse::<MacAddr>().unwrap()));
                }
                PortSpec::Tunnel(TunnelPort {
                    name: Name::new(name).unwrap(),
                    remote: p["remote_ip"].as_str().unwrap().parse().unwrap(),
                    vni,
                    bfd: p["bfd"]["enabled"].as_bool() == Some(true),
                    ovn_metadata: p["ovn_metadata"].as_bool().unwrap(),
                    ofport_request: None,
                    bfd_timers: Default::default(),
                })
            }
            other => panic!("port type {other}"),
        };
        records.push(PortRecord { ofport, spec });
    }
    let mut m = expected_maps(&records, |ifname| ns.ifindex(ifname));
    for (ofport, nh) in nexthops {
        let v = m.get_mut(TUNNELS).unwrap().get_mut(&bytes(&u32::from(ofport.get()))).expect("tunnel entry");
        v[16..22].copy_from_slice(&nh.0);
    }
    for b in show["bindings"].as_array().unwrap() {
        let vni = b["vni"].as_u64().unwrap() as u32;
        let bmac: MacAddr = b["mac"].as_str().unwrap().parse().unwrap();
        let entry = FdbEntry {
            ofport: b["ofport"].as_u64().unwrap() as u16,
            port_key: b["port_key"].as_u64().unwrap() as u16,
            kind: FDB_REMOTE,
            _pad: [0; 3],
        };
        m.get_mut(FDB).unwrap().insert(bytes(&FdbKey { vni, mac: bmac.0, _pad: [0; 2] }), bytes(&entry));
        if let Some(ip) = b["ip"].as_str() {
            let ip = match ip.parse::<IpAddr>().unwrap() {
                IpAddr::V4(a) => wire::ipv4_mapped(a.octets()),
                IpAddr::V6(a) => a.octets(),
            };
            m.get_mut(NEIGH).unwrap().insert(bytes(&NeighKey { vni, ip }), bytes(&Neigh { mac: bmac.0, _pad: [0; 2] }));
        }
    }
    let up = show["uplink"]["ifindex"].as_u64().unwrap() as u32;
    assert_eq!(up, ns.ifindex("ul"));
    m.get_mut(DEVMAP).unwrap().insert(bytes(&DEVMAP_UPLINK), bytes(&up));
    m
}

fn wait_resolved(d: &Daemon, tunnel: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let show = d.json(&["show"]);
        let t = show["ports"].as_array().unwrap().iter().find(|p| p["name"] == tunnel).cloned().expect("tunnel shown");
        if t["nexthop"]["resolved"] == true {
            return show;
        }
        assert!(Instant::now() < deadline, "next hop of {tunnel} never resolved: {t}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_command_goes_through_the_daemon_and_matches_the_maps() {
    require_root!();
    let mut gw = gateway("dcmd");
    gw.daemon.extra = vec!["--metrics".into(), "127.0.0.1:9477".into()];
    gw.daemon.start();
    let d = &gw.daemon;

    let t = d.json(&[
        "tunnel",
        "add",
        "hv2",
        "--remote-ip",
        GW_IP[1],
        "--vni",
        "5001",
        "--bfd",
        "--ovn-metadata",
        "--ofport",
        "10",
    ]);
    assert_eq!((t["name"].as_str(), t["ofport"].as_u64(), t["type"].as_str()), (Some("hv2"), Some(10), Some("tunnel")));
    let p = d.json(&[
        "port",
        "add",
        "vm1",
        "--ifname",
        "p1",
        "--vni",
        "5001",
        "--port-key",
        "17",
        "--mac",
        &mac(VM_MAC[0]),
        "--ip",
        VM_IP[0],
    ]);
    assert_eq!(p["type"], "local");
    d.cli(&[
        "port",
        "add",
        "vm3",
        "--ifname",
        "p2",
        "--vni",
        "5001",
        "--port-key",
        "19",
        "--mac",
        "02:00:5e:20:00:03",
        "--ofport",
        "65024",
    ]);
    let b = d.json(&[
        "binding",
        "add",
        "--vni",
        "5001",
        "--mac",
        &mac(VM_MAC[1]),
        "--ip",
        VM_IP[1],
        "--tunnel",
        "hv2",
        "--port-key",
        "34",
    ]);
    assert_eq!(b["ofport"], 10);
    // Adding the identical port again is refused, as ovs-vsctl's add-port;
    // with --may-exist it is a no-op that costs no number.
    let vm1 = mac(VM_MAC[0]);
    let same =
        ["port", "add", "vm1", "--ifname", "p1", "--vni", "5001", "--port-key", "17", "--mac", &vm1, "--ip", VM_IP[0]];
    let err = d.refused(&same);
    assert!(err.contains("port \"vm1\" already exists (ofport 1); --may-exist"), "{err}");
    let again = d.json(&[&same[..], &["--may-exist"]].concat());
    assert_eq!(again["ofport"], p["ofport"]);

    let show = wait_resolved(d, "hv2");
    let ports = show["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 3);
    let hv2 = ports.iter().find(|p| p["name"] == "hv2").unwrap();
    assert_eq!(hv2["remote_ip"], GW_IP[1]);
    assert_eq!(hv2["vni"], 5001);
    assert_eq!(hv2["bfd"]["enabled"], true);
    assert!(hv2["bfd"].get("state").is_some(), "bfd.state is present when BFD is on");
    // The next hop is the peer's MAC, as the kernel's neighbour table has it.
    let peer_mac = gw.peer.ok(&["cat", "/sys/class/net/w/address"]).trim().to_owned();
    assert_eq!(hv2["nexthop"]["mac"], peer_mac.as_str());
    let vm3 = ports.iter().find(|p| p["name"] == "vm3").unwrap();
    assert_eq!(vm3["ofport"], 65024, "a requested number is granted");
    assert_eq!(show["ofports"]["used"], 3);
    assert_eq!(show["ofports"]["free"], 65279 - 3);

    // The maps hold exactly what `show` describes, and nothing else.
    assert_eq!(read_maps(&d.pins()), maps_from_show(&gw.ns, &show));
    // xgw_local is on both local ports' interfaces, xgw_uplink on the uplink.
    let net = gw.ns.ok(&["bpftool", "-j", "net", "show"]);
    let net: Value = serde_json::from_str(&net).unwrap();
    let xdp: BTreeMap<String, String> = net[0]["xdp"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["devname"].as_str().unwrap().to_owned(), e["mode"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert_eq!(xdp.keys().collect::<Vec<_>>(), ["p1", "p2", "ul"], "{net}");
    assert!(xdp.values().all(|m| m == "driver"), "native mode: {xdp:?}");

    // Lists agree with show.
    let tunnels = d.json(&["tunnel", "list"]);
    assert_eq!(tunnels.as_array().unwrap(), &vec![hv2.clone()]);
    let locals = d.json(&["port", "list"]);
    assert_eq!(locals.as_array().unwrap().len(), 2);
    assert!(locals.as_array().unwrap().iter().all(|p| p["type"] == "local"));
    let bindings = d.json(&["binding", "list"]);
    assert_eq!(bindings, show["bindings"]);
    let human = d.cli(&["show"]);
    assert!(human.contains("Port hv2 (ofport 10)") && human.contains(&format!("nexthop {peer_mac}")), "{human}");

    // Stats are the PORT_STATS, DROPS and REPLIES counters. Traffic: an ARP
    // request from the VM side for the remote binding's IP is answered in XDP.
    let vmns = &gw.ns;
    vmns.ok(&["ip", "link", "set", "p1x", "address", &mac(VM_MAC[0])]);
    vmns.ok(&["ip", "addr", "add", &format!("{}/24", VM_IP[0]), "dev", "p1x"]);
    let _ = vmns.exec(&["ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", "p1x", VM_IP[1]]);
    let stats = d.json(&["stats"]);
    let per_cpu: aya::maps::PerCpuArray<aya::maps::MapData, xgw_common::counters::PortStats> =
        aya::maps::PerCpuArray::try_from(
            aya::maps::Map::from_map_data(aya::maps::MapData::from_pin(d.pins().join("PORT_STATS")).unwrap()).unwrap(),
        )
        .unwrap();
    for s in stats["ports"].as_array().unwrap() {
        let n = s["ofport"].as_u64().unwrap() as u32;
        let rx: u64 = per_cpu.get(&n, 0).unwrap().iter().map(|c| c.rx.packets).sum();
        assert_eq!(s["rx_packets"].as_u64().unwrap(), rx, "{s}");
    }
    let drops = stats["drops"].as_object().unwrap();
    assert_eq!(drops.len(), xgw_common::counters::Drop::COUNT as usize);
    assert!(stats["replies"]["arp"].as_u64().unwrap() >= 1, "the ARP responder answered: {stats}");

    // Metrics agree with stats and show. The ports' far ends send now and
    // then (IPv6 router solicitations, dropped by port security), so a
    // counter is checked to lie between stats read before and after.
    let early = d.json(&["stats"]);
    let m = scrape(&gw.ns.name, "127.0.0.1:9477");
    assert_eq!(m["xgw_ofports{state=\"used\"}"], 3.0);
    assert_eq!(m["xgw_ofports{state=\"free\"}"], 65276.0);
    assert_eq!(m["xgw_tunnel_nexthop_resolved{tunnel=\"hv2\"}"], 1.0);
    assert_eq!(m["xgw_tunnel_nexthop_changes_total{tunnel=\"hv2\"}"], 0.0, "resolving is not a change");
    let stats = d.json(&["stats"]);
    for s in stats["ports"].as_array().unwrap() {
        let kind = if s["name"] == "hv2" { "tunnel" } else { "local" };
        let key = format!(
            "xgw_port_packets_total{{port=\"{}\",ofport=\"{}\",type=\"{kind}\",direction=\"rx\"}}",
            s["name"].as_str().unwrap(),
            s["ofport"]
        );
        let first = early["ports"].as_array().unwrap().iter().find(|e| e["name"] == s["name"]).unwrap();
        let range = first["rx_packets"].as_u64().unwrap() as f64..=s["rx_packets"].as_u64().unwrap() as f64;
        assert!(range.contains(&m[&key]), "{key}: {} not in {range:?}", m[&key]);
    }
    for (reason, n) in stats["drops"].as_object().unwrap() {
        let range = early["drops"][reason].as_u64().unwrap() as f64..=n.as_u64().unwrap() as f64;
        let metric = m[&format!("xgw_drops_total{{reason=\"{reason}\"}}")];
        assert!(range.contains(&metric), "drops {reason}: {metric} not in {range:?}");
    }

    // Deletions take every entry with them.
    d.json(&["binding", "del", "--vni", "5001", "--mac", &mac(VM_MAC[1])]);
    d.json(&["port", "del", "vm3"]);
    d.json(&["tunnel", "del", "hv2"]);
    let show = d.json(&["show"]);
    assert_eq!(show["ports"].as_array().unwrap().len(), 1);
    assert_eq!(read_maps(&d.pins()), maps_from_show(&gw.ns, &show));
    let net = gw.ns.ok(&["bpftool", "net", "show"]);
    assert!(!net.contains("p2("), "xgw_local left p2 with its port: {net}");

    // A clean stop removes what the daemon attached and pinned.
    let pins = d.pins();
    gw.daemon.stop();
    assert!(!pins.exists(), "pins left after a clean stop");
    let net = gw.ns.ok(&["bpftool", "net", "show"]);
    assert!(!net.contains("ul(") && !net.contains("p1("), "{net}");
}

/// `show` less what changes by itself (the uptime): the daemon's state.
fn state(mut show: Value) -> Value {
    show.as_object_mut().expect("show is an object").remove("uptime_s");
    show
}

/// The store's ports and bindings, read while no daemon runs.
fn stored(d: &Daemon) -> (Vec<PortRecord>, Vec<String>) {
    let store = RedbStore::open(&d.state_dir()).unwrap();
    let (ports, bindings) = (store.load().unwrap(), store.load_bindings().unwrap());
    (ports, bindings.iter().map(|b| serde_json::to_string(b).unwrap()).collect())
}

#[test]
fn bad_input_is_refused_in_one_line_and_changes_nothing() {
    require_root!();
    let mut gw = gateway("dbad");
    gw.daemon.start();
    let d = &gw.daemon;
    d.cli(&["tunnel", "add", "hv2", "--remote-ip", GW_IP[1], "--vni", "5001", "--ofport", "10"]);
    d.cli(&["port", "add", "vm1", "--ifname", "p1", "--vni", "5001", "--port-key", "17", "--mac", &mac(VM_MAC[0])]);
    d.cli(&["binding", "add", "--vni", "5001", "--mac", &mac(VM_MAC[1]), "--tunnel", "hv2", "--port-key", "34"]);
    // The same chassis flow-keyed: another key, so another tunnel (as in OVS).
    d.cli(&["tunnel", "add", "hvf", "--remote-ip", GW_IP[1]]);
    // Once the next hop is in, nothing changes the maps but requests.
    let show = wait_resolved(d, "hv2");
    let maps = read_maps(&d.pins());

    let cases: &[(&[&str], &str)] = &[
        (&["tunnel", "add", "t2", "--remote-ip", "198.51.100.300", "--vni", "1"], "198.51.100.300"),
        (
            &["tunnel", "add", "t2", "--remote-ip", "198.51.100.3", "--vni", "16777216"],
            "'--vni <VNI>': 16777216 is out of range (0..=16777215)",
        ),
        (
            &[
                "port",
                "add",
                "vm2",
                "--ifname",
                "nope0",
                "--vni",
                "5001",
                "--port-key",
                "18",
                "--mac",
                "02:00:5e:20:00:09",
            ],
            "\"nope0\"",
        ),
        (&["tunnel", "add", "vm1", "--remote-ip", "198.51.100.3", "--vni", "1"], "\"vm1\""),
        (&["tunnel", "add", "t2", "--remote-ip", "198.51.100.3", "--vni", "1", "--ofport", "65280"], "65280"),
        (&["tunnel", "add", "t2", "--remote-ip", "198.51.100.3", "--vni", "1", "--ofport", "10"], "10"),
        (&["tunnel", "add", "t2", "--remote-ip", GW_IP[1], "--vni", "5001"], "duplicates tunnel \"hv2\""),
        (&["tunnel", "add", "t2", "--remote-ip", GW_IP[1]], "duplicates tunnel \"hvf\" (remote 198.51.100.2 key=flow)"),
        (
            &["binding", "add", "--vni", "7", "--mac", "02:00:5e:20:00:07", "--tunnel", "hv2", "--port-key", "3"],
            "vni: tunnel \"hv2\" is fixed to VNI 5001",
        ),
        (
            &[
                "port",
                "add",
                "vm2",
                "--ifname",
                "p2",
                "--vni",
                "5001",
                "--port-key",
                "17",
                "--mac",
                "02:00:5e:20:00:09",
            ],
            "port_key 17",
        ),
        (
            &["port", "add", "vm2", "--ifname", "p2", "--vni", "5001", "--port-key", "18", "--mac", &mac(VM_MAC[1])],
            &mac(VM_MAC[1]),
        ),
        (
            &["binding", "add", "--vni", "5001", "--mac", "02:00:5e:20:00:07", "--tunnel", "nope", "--port-key", "3"],
            "\"nope\"",
        ),
        (
            &[
                "binding",
                "add",
                "--vni",
                "5001",
                "--mac",
                "02:00:5e:20:00:07",
                "--tunnel",
                "hv2",
                "--port-key",
                "40000",
            ],
            "40000",
        ),
        (
            &["binding", "add", "--vni", "5001", "--mac", &mac(VM_MAC[0]), "--tunnel", "hv2", "--port-key", "3"],
            &mac(VM_MAC[0]),
        ),
        (&["tunnel", "del", "hv2"], "binding"),
        (&["port", "del", "hv2"], "\"hv2\""),
        (&["tunnel", "del", "nope"], "\"nope\""),
        // Tunnel remotes that are no other chassis, IPv4-mapped forms
        // checked as the IPv4 address they are.
        (&["tunnel", "add", "t2", "--remote-ip", GW_IP[0], "--vni", "1"], "own --local-ip"),
        (&["tunnel", "add", "t2", "--remote-ip", "::ffff:198.51.100.1", "--vni", "1"], "own --local-ip"),
        (&["tunnel", "add", "t2", "--remote-ip", "127.0.0.1", "--vni", "1"], "loopback"),
        (&["tunnel", "add", "t2", "--remote-ip", "fe80::1", "--vni", "1"], "link-local"),
        (&["tunnel", "add", "t2", "--remote-ip", "::ffff:224.0.0.1", "--vni", "1"], "224.0.0.1 is not a unicast"),
        (&["tunnel", "add", "t2", "--remote-ip", "::ffff:0.0.0.0", "--vni", "1"], "0.0.0.0 is not a unicast"),
        (&["tunnel", "add", &"t".repeat(65), "--remote-ip", "198.51.100.3", "--vni", "1"], "is not a name"),
        (&["tunnel", "add", "a\u{1b}[2Jb", "--remote-ip", "198.51.100.3", "--vni", "1"], "a\\u{1b}[2Jb"),
    ];
    for (args, names) in cases {
        let err = d.refused(args);
        assert!(err.contains(names), "xgw {args:?}: {err:?} does not name {names:?}");
        assert_eq!(read_maps(&d.pins()), maps, "xgw {args:?} changed the maps");
    }
    assert_eq!(state(d.json(&["show"])), state(show.clone()), "refused commands changed the daemon's state");

    // The socket itself: root only, bounded requests, JSON or nothing.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!((meta.permissions().mode() & 0o777, meta.uid()), (0o600, 0), "socket mode and owner");
    let raw = |bytes: &[u8]| -> String {
        let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
        let _ = s.write_all(bytes);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let mut big = vec![b' '; 70_000];
    big.push(b'\n');
    assert!(raw(&big).contains("request larger than 65536 bytes refused"));
    assert!(raw(b"{\"op\":\"port_add\",\"name\":1}\n").contains("bad request"));
    // Names that would reach an operator's terminal raw are refused, and
    // the refusal shows them escaped.
    for name in ["evil\\u202etxt", "a\\nb", "x\\u001b[2J"] {
        let req = format!("{{\"op\":\"tunnel_add\",\"name\":\"{name}\",\"remote_ip\":\"198.51.100.3\",\"vni\":1}}\n");
        let out = raw(req.as_bytes());
        assert!(out.contains("bad request") && out.contains("is not a name"), "{out}");
        let text: String = serde_json::from_str::<Value>(&out).unwrap()["error"].as_str().unwrap().to_owned();
        assert!(text.chars().all(|c| c.is_ascii_graphic() || c == ' '), "raw character in {text:?}");
    }
    let long = format!("{{\"op\":\"port_del\",\"name\":\"{}\"}}\n", "x".repeat(1000));
    assert!(raw(long.as_bytes()).contains("is not a name"));
    assert_eq!(read_maps(&d.pins()), maps);

    // A client that connects and stalls mid-request holds no one up: others
    // are answered at once, and the stalled one is told off after 5 s.
    let mut stalled = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    stalled.write_all(b"{\"op\":\"show\"").unwrap();
    let t0 = Instant::now();
    for _ in 0..5 {
        assert_eq!(state(d.json(&["show"])), state(show.clone()));
    }
    assert!(t0.elapsed() < Duration::from_secs(2), "5 requests behind a stalled client took {:?}", t0.elapsed());
    stalled.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = String::new();
    stalled.read_to_string(&mut out).unwrap();
    assert!(out.contains("no complete request line within 5 s"), "{out}");
    assert!(t0.elapsed() >= Duration::from_secs(4), "the stalled client was cut after {:?}", t0.elapsed());

    // A second daemon on the same uplink is refused, in one line; the first
    // keeps running untouched.
    let out = d.run_command(&[]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("another xgw (pid") && err.contains("uplink ul"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let other = TempDir::new("other");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &gw.ns.name])
        .arg(xgw_tests::xgw_bin())
        .args(["run", "--uplink", "ul", "--local-ip", GW_IP[0], "--socket"])
        .arg(other.path.join("s"))
        .arg("--state-dir")
        .arg(other.path.join("state"))
        .arg("--bpffs")
        .arg(d.bpffs.dir.join("other"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("ul") && err.contains("already has an XDP program"), "{err}");
    assert!(!d.bpffs.dir.join("other").join("links").exists(), "the refused daemon left pins behind");
    assert_eq!(read_maps(&d.pins()), maps);
    assert_eq!(state(d.json(&["show"])), state(show.clone()));

    // Stores after a SIGKILL: what was acknowledged, nothing refused.
    gw.daemon.kill9();
    let (ports, bindings) = stored(&gw.daemon);
    assert_eq!(ports.len(), 3);
    assert_eq!(bindings.len(), 1);

    // A malformed config file: one line naming the field, nothing changed.
    let bad = gw.daemon.state.path.join("bad.toml");
    std::fs::write(&bad, "[[tunnels]]\nname = \"t9\"\nremote_ip = \"198.51.100.9\"\nvni = 16777216\n").unwrap();
    let out = gw.daemon.run_command(&["--config", bad.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.starts_with("xgw: config: ")
            && err.trim_end().ends_with(": tunnels[0].vni: 16777216 is out of range (0..=16777215)"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    std::fs::write(&bad, "[[tunnels]]\nname = \"t9\"\ncolour = 1\n").unwrap();
    let out = gw.daemon.run_command(&["--config", bad.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("line 3: unknown field `colour`"), "{err}");
    assert_eq!(read_maps(&gw.daemon.pins()), maps);
    assert_eq!(stored(&gw.daemon), (ports, bindings));
}

/// A port whose interface refuses `xgw_local` (`lo` has no native XDP)
/// fails inside its transaction, before its record is written: the number
/// it held never existed for anyone, so it is free again, not held down.
#[test]
fn a_thousand_failed_port_adds_cost_no_number() {
    require_root!();
    let mut gw = gateway("dheld");
    gw.daemon.start();
    let d = &gw.daemon;
    d.cli(&["tunnel", "add", "hv2", "--remote-ip", GW_IP[1], "--vni", "5001"]);
    d.cli(&["tunnel", "add", "hv3", "--remote-ip", "198.51.100.3", "--vni", "5001"]);
    d.cli(&["tunnel", "del", "hv2"]);
    let show = d.json(&["show"]);
    assert_eq!(show["ofports"]["held_down"], 1, "{}", show["ofports"]);
    let maps = read_maps(&d.pins());
    let lo: xgw::api::PortArgs = serde_json::from_value(serde_json::json!({
        "name": "vm9", "ifname": "lo", "vni": 5001, "port_key": 9, "mac": "02:00:5e:20:00:09"
    }))
    .unwrap();
    let request = xgw::api::Request::PortAdd(xgw::api::Add::new(lo));
    let t0 = Instant::now();
    for i in 0..1000 {
        let e = xgw::api::call(&d.socket, &request, Duration::from_secs(10)).expect_err("lo has no native XDP");
        if i == 0 {
            assert!(e.to_string().contains("port \"vm9\"") && e.to_string().contains("lo"), "{e}");
        }
    }
    eprintln!("1000 refused adds in {:?}", t0.elapsed());
    let after = d.json(&["show"]);
    assert_eq!(after["ofports"], show["ofports"], "refused adds moved the number space");
    assert_eq!(after["ports"], show["ports"]);
    assert_eq!(read_maps(&d.pins()), maps, "a refused add left an entry");
    // The next port gets the number it would have had: 3 (1 is held down,
    // 2 is hv3's).
    let added = d.json(&[
        "port",
        "add",
        "vm1",
        "--ifname",
        "p1",
        "--vni",
        "5001",
        "--port-key",
        "17",
        "--mac",
        &mac(VM_MAC[0]),
    ]);
    assert_eq!(added["ofport"], 3, "{added}");
}

#[test]
fn the_config_file_owns_its_entries_and_the_api_keeps_its_own() {
    require_root!();
    let mut gw = gateway("dcfg");
    let cfg = gw.daemon.state.path.join("xgw.toml");
    let full = format!(
        "[bfd]\nmin_rx_ms = 300\n\n[[ports]]\nname = \"vm1\"\nifname = \"p1\"\nvni = {VNI}\nport_key = 17\nmac = \"{}\"\nip = \"{}\"\n\n\
         [[tunnels]]\nname = \"hv2\"\nremote_ip = \"{}\"\nvni = {VNI}\nbfd = true\novn_metadata = true\nofport = 10\n\n\
         [[bindings]]\nvni = {VNI}\nmac = \"{}\"\nip = \"{}\"\ntunnel = \"hv2\"\nport_key = 34\n\n\
         [[groups]]\nvni = {VNI}\nkey = 32768\nports = [\"vm1\"]\ntunnels = [\"hv2\"]\nrate_pps = 50\n",
        mac(VM_MAC[0]),
        VM_IP[0],
        GW_IP[1],
        mac(VM_MAC[1]),
        VM_IP[1]
    );
    std::fs::write(&cfg, &full).unwrap();
    gw.daemon.extra = vec!["--config".into(), cfg.to_str().unwrap().into()];
    gw.daemon.start();
    let show = wait_resolved(&gw.daemon, "hv2");
    assert!(show["ports"].as_array().unwrap().iter().all(|p| p["from_config"] == true));
    assert_eq!(show["bindings"][0]["from_config"], true);
    assert_eq!(read_maps(&gw.daemon.pins()), maps_from_show(&gw.ns, &show));
    // A SIGHUP with the file unchanged changes nothing, and says nothing
    // was repaired (the reload's dry run works on a copy of its own).
    let maps = read_maps(&gw.daemon.pins());
    gw.daemon.process.as_ref().unwrap().signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gw.daemon.process.as_ref().unwrap().stderr_so_far().contains("config reloaded") {
        assert!(Instant::now() < deadline, "no reload logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = gw.daemon.process.as_ref().unwrap().stderr_so_far();
    assert!(!log.contains("repaired"), "an unchanged reload reported repairs:\n{log}");
    assert_eq!(read_maps(&gw.daemon.pins()), maps);
    // The file's group: its entry in GROUPS holds the members' numbers.
    let groups = gw.daemon.json(&["group", "list"]);
    assert_eq!(
        (groups[0]["from_config"].as_bool(), groups[0]["rate_pps"].as_u64()),
        (Some(true), Some(50)),
        "{groups}"
    );
    let number = |name: &str| {
        show["ports"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()["ofport"].as_u64().unwrap() as u16
    };
    let groups_pin = gw.daemon.pins().join("GROUPS");
    let entries = || -> Vec<(wire::GroupKey, wire::Group)> {
        let m: aya::maps::HashMap<_, wire::GroupKey, wire::Group> = aya::maps::HashMap::try_from(
            aya::maps::Map::from_map_data(aya::maps::MapData::from_pin(&groups_pin).unwrap()).unwrap(),
        )
        .unwrap();
        m.iter().map(|r| r.unwrap()).collect()
    };
    let e = entries();
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].0.vni, e[0].0.key, e[0].1.local, e[0].1.count, e[0].1.rate_pps), (VNI, 32768, 1, 2, 50));
    assert_eq!(&e[0].1.members[..2], &[number("vm1"), number("hv2")]);
    gw.daemon.cli(&["tunnel", "add", "api1", "--remote-ip", "198.51.100.7", "--vni", "7"]);
    let numbers: BTreeMap<String, u64> = show["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().into(), p["ofport"].as_u64().unwrap()))
        .collect();

    // Restart with the binding and the local port gone from the file: they
    // go, the tunnel keeps its number, the API's tunnel stays.
    gw.daemon.stop();
    let short = full.split("[[ports]]").next().unwrap().to_owned()
        + "[[tunnels]]"
        + full.split("[[tunnels]]").nth(1).unwrap().split("[[bindings]]").next().unwrap();
    std::fs::write(&cfg, short).unwrap();
    gw.daemon.start();
    let show = wait_resolved(&gw.daemon, "hv2");
    let names: Vec<&str> = show["ports"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["api1", "hv2"], "{show}");
    let hv2 = show["ports"].as_array().unwrap().iter().find(|p| p["name"] == "hv2").unwrap();
    assert_eq!(hv2["ofport"].as_u64(), numbers.get("hv2").copied());
    assert!(show["bindings"].as_array().unwrap().is_empty());
    assert_eq!(read_maps(&gw.daemon.pins()), maps_from_show(&gw.ns, &show));
    // The group went with the file's entry (before its member port could).
    assert_eq!(gw.daemon.json(&["group", "list"]), Value::Array(vec![]));
    assert!(entries().is_empty());
}

/// gw1 is driven by the daemon; gw2, the other end of the tunnel, is a
/// datapath configured by hand as in `e2e_geneve.rs`.
///
///   vm1 [eth0] -- [p1] gw1 [ul] -- w1 [br0 in wire] w2 -- [ul] gw2 [p2] -- [eth0] vm2
struct TwoGateways {
    // Field order is drop order: datapaths go before namespaces.
    daemon: Daemon,
    gw2: TestGateway,
    vm: [Netns; 2],
    gw: [Netns; 2],
    _wire: Netns,
}

fn two_gateways() -> TwoGateways {
    let wire = Netns::new("wire");
    wire.ok(&["ip", "link", "add", "br0", "type", "bridge"]);
    wire.ok(&["ip", "link", "set", "br0", "up"]);
    let gw = [Netns::new("hgw1"), Netns::new("hgw2")];
    let vm = [Netns::new("hvm1"), Netns::new("hvm2")];
    let mut pass = TestGateway::load(&["xgw_uplink", "xgw_local", "xgw_pass"]);
    for i in 0..2 {
        let w = format!("w{}", i + 1);
        Veth::new(&gw[i], "ul", &format!("{}/24", GW_IP[i]), &wire, &w, "");
        gw[i].ok(&["ip", "link", "set", "ul", "address", &mac(GW_MAC[i])]);
        wire.ok(&["ip", "link", "set", &w, "master", "br0"]);
        Veth::new(&gw[i], &format!("p{}", i + 1), "", &vm[i], "eth0", &format!("{}/24", VM_IP[i]));
        vm[i].ok(&["ip", "link", "set", "eth0", "address", &mac(VM_MAC[i])]);
        vm[i].ok(&["ethtool", "-K", "eth0", "tx", "off"]);
        vm[i].ok(&["ip", "link", "set", "eth0", "mtu", "1422"]);
        vm[i].disable_ipv6();
        // Redirected frames reach a veth peer only if it runs XDP itself.
        pass.attach(&vm[i], "xgw_pass", "eth0");
        pass.attach(&wire, "xgw_pass", &w);
    }
    // gw2 by hand.
    let gw2 = &gw[1];
    pass.in_netns(gw2);
    let up = gw2.ifindex("ul");
    let ip4 = [198, 51, 100, 2];
    pass.set_uplink(Uplink {
        ifindex: up,
        mtu: 1500,
        mac: GW_MAC[1],
        flags: UPLINK_HAS_IP4,
        _pad: 0,
        ip4,
        ip6: [0; 16],
    });
    pass.set_uplink_devmap(up);
    let tunnel = Tunnel {
        remote: ipv4_mapped([198, 51, 100, 1]),
        nexthop_mac: GW_MAC[0],
        flags: TUNNEL_OVN_METADATA,
        _pad: 0,
        vni: VNI,
    };
    pass.add_tunnel(10, tunnel);
    let port = LocalPortWire { vni: VNI, ofport: 3, port_key: VM_KEY[1], mac: VM_MAC[1], ..Default::default() };
    pass.add_local_port(gw2.ifindex("p2"), port);
    pass.add_neigh(VNI, ipv4_mapped([203, 0, 113, 2]), VM_MAC[1]);
    pass.add_remote(VNI, VM_MAC[0], Some(ipv4_mapped([203, 0, 113, 1])), 10, VM_KEY[0]);
    pass.attach(gw2, "xgw_uplink", "ul");
    pass.attach(gw2, "xgw_local", "p2");

    // gw1 through the daemon.
    let mut daemon = Daemon::new(&gw[0], "ul", &[GW_IP[0]]);
    daemon.start();
    daemon.cli(&["tunnel", "add", "hv2", "--remote-ip", GW_IP[1], "--vni", "5001", "--ovn-metadata", "--ofport", "10"]);
    add_vm1(&daemon, &[]);
    let key = VM_KEY[1].to_string();
    daemon.cli(&[
        "binding",
        "add",
        "--vni",
        "5001",
        "--mac",
        &mac(VM_MAC[1]),
        "--ip",
        VM_IP[1],
        "--tunnel",
        "hv2",
        "--port-key",
        &key,
    ]);
    TwoGateways { daemon, gw2: pass, vm, gw, _wire: wire }
}

/// gw1's local port `vm1` (on p1), with `extra` options.
fn add_vm1(d: &Daemon, extra: &[&str]) {
    let key = VM_KEY[0].to_string();
    let mac = mac(VM_MAC[0]);
    let base = ["port", "add", "vm1", "--ifname", "p1", "--vni", "5001", "--port-key", &key, "--mac", &mac];
    let args: Vec<&str> = base.iter().chain(&["--ip", VM_IP[0]]).chain(extra).copied().collect();
    d.cli(&args);
}

use xgw_common::maps::LocalPort as LocalPortWire;

#[test]
fn forwarding_survives_a_sigkilled_daemon_without_losing_a_packet() {
    require_root!();
    let mut t = two_gateways();
    let before = wait_resolved(&t.daemon, "hv2");
    assert_eq!(
        before["ports"].as_array().unwrap().iter().find(|p| p["name"] == "hv2").unwrap()["nexthop"]["mac"],
        mac(GW_MAC[1])
    );
    t.vm[0].ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", VM_IP[1]]);

    // Continuous ping (100/s) and an iperf3 transfer while the daemon is
    // SIGKILLed and restarted.
    let srv = t.vm[1].spawn(&["iperf3", "-s", "-1", "-p", "5302"]);
    std::thread::sleep(Duration::from_millis(300));
    let ping = t.vm[0].spawn(&["ping", "-i", "0.01", "-c", "500", "-W", "1", VM_IP[1]]);
    // Paced below the path's capacity: a saturating stream drops pings in
    // the veth queues whether or not the daemon restarts, and this test is
    // about the restart.
    let iperf = t.vm[0].spawn(&["iperf3", "-c", VM_IP[1], "-p", "5302", "-t", "5", "-b", "300M", "-J"]);
    std::thread::sleep(Duration::from_millis(1500));
    let killed = Instant::now();
    t.daemon.kill9();
    // Nothing runs the control plane now; the pinned datapath forwards.
    std::thread::sleep(Duration::from_millis(300));
    t.daemon.start();
    let gap = killed.elapsed();
    let after = t.daemon.json(&["show"]);

    let (status, out, err) = ping.wait(Duration::from_secs(20)).expect("ping finishes");
    assert!(status.success(), "ping: {out}{err}");
    let summary = out.lines().find(|l| l.contains("packets transmitted")).expect("ping summary").to_owned();
    assert!(summary.starts_with("500 packets transmitted, 500 received"), "{summary}");
    let (status, out, _) = iperf.wait(Duration::from_secs(20)).expect("iperf3 finishes");
    assert!(status.success(), "iperf3: {out}");
    let v: Value = serde_json::from_str(&out).expect("iperf3 JSON");
    let bps = v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap();
    assert!(bps > 1e6, "iperf3 only {bps} bit/s");
    let _ = srv.wait(Duration::from_secs(5));
    eprintln!("daemon down for {:.0} ms; {summary}; iperf3 {:.2} Gbit/s", gap.as_secs_f64() * 1e3, bps / 1e9);

    // Same ports, same numbers, same next hop; the maps still match.
    assert_eq!(after["ports"], before["ports"]);
    assert_eq!(after["bindings"], before["bindings"]);
    assert_eq!(read_maps(&t.daemon.pins()), maps_from_show(&t.gw[0], &after));
    let stats = t.daemon.json(&["stats"]);
    let tunnel = stats["ports"].as_array().unwrap().iter().find(|p| p["name"] == "hv2").unwrap();
    assert!(tunnel["tx_packets"].as_u64().unwrap() >= 500 && tunnel["rx_packets"].as_u64().unwrap() >= 500, "{stats}");
    let _ = &t.gw2;
}

#[test]
fn keep_datapath_leaves_forwarding_running_and_uninstall_removes_it() {
    require_root!();
    let mut gw = gateway("dkeep");
    gw.daemon.extra = vec!["--keep-datapath".into()];
    gw.daemon.start();
    gw.daemon.cli(&["tunnel", "add", "hv2", "--remote-ip", GW_IP[1], "--vni", "5001"]);
    gw.daemon.cli(&[
        "port",
        "add",
        "vm1",
        "--ifname",
        "p1",
        "--vni",
        "5001",
        "--port-key",
        "17",
        "--mac",
        &mac(VM_MAC[0]),
    ]);
    wait_resolved(&gw.daemon, "hv2");
    let maps = read_maps(&gw.daemon.pins());
    gw.daemon.stop();
    // Stopped with --keep-datapath: programs attached, maps as they were.
    let net = gw.ns.ok(&["bpftool", "net", "show"]);
    assert!(net.contains("ul(") && net.contains("p1("), "{net}");
    assert_eq!(read_maps(&gw.daemon.pins()), maps);

    let pins = gw.daemon.pins();
    let out = std::process::Command::new(xgw_tests::xgw_bin())
        .args(["uninstall", "--bpffs", pins.to_str().unwrap(), "--state-dir", gw.daemon.state_dir().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!pins.exists());
    let net = gw.ns.ok(&["bpftool", "net", "show"]);
    assert!(!net.contains("ul(") && !net.contains("p1("), "uninstall left programs attached: {net}");

    // The stores stayed: a new daemon restores both ports under their numbers.
    gw.daemon.extra.clear();
    gw.daemon.start();
    let show = wait_resolved(&gw.daemon, "hv2");
    assert_eq!(show["ports"].as_array().unwrap().len(), 2);
    assert_eq!(read_maps(&gw.daemon.pins()), maps_from_show(&gw.ns, &show));
}

/// A VM's interface deleted under the running daemon (the hypervisor tore
/// the VM down), then created again with a new ifindex: the daemon lives on
/// and says so in `show` and its log, the port keeps its OpenFlow number
/// and its store record, nothing of it lingers in DEVMAP or LOCAL_PORTS
/// while the interface is gone, the other ports are untouched and new ones
/// can be added; when the interface returns, the maps follow the new
/// ifindex, xgw_local is attached to it, and traffic crosses again.
#[test]
fn a_port_interface_deleted_under_the_daemon_keeps_its_number_and_comes_back() {
    require_root!();
    let mut t = two_gateways();
    wait_resolved(&t.daemon, "hv2");
    t.vm[0].ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", VM_IP[1]]);
    let before = t.daemon.json(&["show"]);
    let port = |show: &Value| show["ports"].as_array().unwrap().iter().find(|p| p["name"] == "vm1").unwrap().clone();
    let ofport = port(&before)["ofport"].as_u64().unwrap();
    let old_ifindex = t.gw[0].ifindex("p1");

    // The veth pair goes (p1 in the gateway, eth0 in the VM).
    t.gw[0].ok(&["ip", "link", "del", "p1"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let gone = loop {
        let show = t.daemon.json(&["show"]);
        if port(&show)["error"].is_string() {
            break show;
        }
        assert!(Instant::now() < deadline, "show never reported the missing interface: {show}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let vm1 = port(&gone);
    assert!(vm1["error"].as_str().unwrap().contains("p1"), "{vm1}");
    assert_eq!(vm1["ofport"].as_u64(), Some(ofport), "the port keeps its number");
    assert_eq!(gone["ofports"], before["ofports"], "no number freed or taken");
    let maps = read_maps(&t.daemon.pins());
    assert!(!maps[DEVMAP].contains_key(&bytes(&(ofport as u32))), "DEVMAP still has the deleted interface's port");
    assert!(!maps[LOCAL_PORTS].contains_key(&bytes(&old_ifindex)), "LOCAL_PORTS still has the old ifindex");
    // The tunnel and its binding are untouched, and the daemon still
    // changes things: a new tunnel gets a fresh number, then goes.
    let hv2 = |show: &Value| show["ports"].as_array().unwrap().iter().find(|p| p["name"] == "hv2").unwrap().clone();
    assert_eq!(hv2(&gone), hv2(&before));
    assert_eq!(gone["bindings"], before["bindings"]);
    let t3 = t.daemon.json(&["tunnel", "add", "hv3", "--remote-ip", "198.51.100.3", "--vni", "5002"]);
    assert_ne!(t3["ofport"].as_u64(), Some(ofport));
    t.daemon.cli(&["tunnel", "del", "hv3"]);

    // The VM comes back: same names, new ifindex.
    Veth::new(&t.gw[0], "p1", "", &t.vm[0], "eth0", &format!("{}/24", VM_IP[0]));
    t.vm[0].ok(&["ip", "link", "set", "eth0", "address", &mac(VM_MAC[0])]);
    t.vm[0].ok(&["ethtool", "-K", "eth0", "tx", "off"]);
    t.vm[0].ok(&["ip", "link", "set", "eth0", "mtu", "1422"]);
    t.gw2.attach(&t.vm[0], "xgw_pass", "eth0");
    let new_ifindex = t.gw[0].ifindex("p1");
    assert_ne!(new_ifindex, old_ifindex);
    let deadline = Instant::now() + Duration::from_secs(5);
    let back = loop {
        let show = t.daemon.json(&["show"]);
        if port(&show).get("error").is_none() {
            break show;
        }
        assert!(Instant::now() < deadline, "the port never recovered: {show}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(back["ports"], before["ports"], "same ports, same numbers");
    assert_eq!(read_maps(&t.daemon.pins()), maps_from_show(&t.gw[0], &back), "the maps follow the new ifindex");
    let net = t.gw[0].ok(&["bpftool", "-j", "net", "show"]);
    let xdp: Value = serde_json::from_str(&net).unwrap();
    let on_p1 = xdp[0]["xdp"].as_array().unwrap().iter().any(|e| e["devname"] == "p1" && e["ifindex"] == new_ifindex);
    assert!(on_p1, "xgw_local is not on the new p1: {net}");
    t.vm[0].ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", VM_IP[1]]);

    let log = t.daemon.stop();
    assert!(log.contains("interface is gone"), "{log}");
    assert!(log.contains("interface is back"), "{log}");
}

/// Boot order: the config file names a port whose interface does not exist
/// yet (a VM's tap appears after the gateway daemon). The daemon starts,
/// commits the port with its number and says it waits; when the interface
/// appears the port's entries and `xgw_local` follow, and traffic flows.
#[test]
fn a_config_port_whose_interface_appears_later_waits_with_its_number() {
    require_root!();
    let mut t = two_gateways();
    t.daemon.cli(&["port", "del", "vm1"]);
    t.gw[0].ok(&["ip", "link", "del", "p1"]);
    t.daemon.stop();
    let cfg = t.daemon.state.path.join("xgw.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[ports]]\nname = \"vm1\"\nifname = \"p1\"\nvni = {VNI}\nport_key = {}\nmac = \"{}\"\nip = \"{}\"\nofport = 42\n",
            VM_KEY[0],
            mac(VM_MAC[0]),
            VM_IP[0]
        ),
    )
    .unwrap();
    t.daemon.extra = vec!["--config".into(), cfg.display().to_string()];
    t.daemon.start();
    let port = |show: &Value| show["ports"].as_array().unwrap().iter().find(|p| p["name"] == "vm1").unwrap().clone();
    let waiting = t.daemon.json(&["show"]);
    let vm1 = port(&waiting);
    assert_eq!(vm1["ofport"].as_u64(), Some(42), "committed with its number: {vm1}");
    assert!(vm1["error"].as_str().is_some_and(|e| e.contains("p1") && e.contains("does not exist")), "{vm1}");
    let maps = read_maps(&t.daemon.pins());
    assert!(!maps[DEVMAP].contains_key(&bytes(&42u32)), "no DEVMAP entry without the interface");
    assert!(maps[FDB].contains_key(&bytes(&FdbKey { vni: VNI, mac: VM_MAC[0], _pad: [0; 2] })), "the rest is in");
    assert!(read_records(&t.daemon.pins()).contains_key(&42));

    // The tap appears.
    Veth::new(&t.gw[0], "p1", "", &t.vm[0], "eth0", &format!("{}/24", VM_IP[0]));
    t.vm[0].ok(&["ip", "link", "set", "eth0", "address", &mac(VM_MAC[0])]);
    t.vm[0].ok(&["ethtool", "-K", "eth0", "tx", "off"]);
    t.vm[0].ok(&["ip", "link", "set", "eth0", "mtu", "1422"]);
    t.gw2.attach(&t.vm[0], "xgw_pass", "eth0");
    let deadline = Instant::now() + Duration::from_secs(5);
    let ready = loop {
        let show = t.daemon.json(&["show"]);
        if port(&show).get("error").is_none() {
            break show;
        }
        assert!(Instant::now() < deadline, "the port never came up: {show}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(port(&ready)["ofport"].as_u64(), Some(42));
    assert_eq!(read_maps(&t.daemon.pins()), maps_from_show(&t.gw[0], &ready), "the maps follow the interface");
    let net = t.gw[0].ok(&["bpftool", "-j", "net", "show"]);
    let on_p1 =
        serde_json::from_str::<Value>(&net).unwrap()[0]["xdp"].as_array().unwrap().iter().any(|e| e["devname"] == "p1");
    assert!(on_p1, "xgw_local is not on p1: {net}");
    wait_resolved(&t.daemon, "hv2");
    t.vm[0].ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", VM_IP[1]]);
    let log = t.daemon.stop();
    assert!(log.contains("does not exist yet"), "{log}");
}

/// The uplink itself deleted under the daemon: it keeps running, says so
/// in `show` and its log, and still takes changes. Recreated (a new
/// ifindex), it exits non-zero with the reason, leaving the datapath and
/// its pins in place, so that the service manager's restart sets up the
/// new uplink: the restarted daemon has the same ports and numbers, its
/// xgw_uplink on the new interface and the next hop resolved again.
#[test]
fn the_uplink_deleted_under_the_daemon_is_reported_and_its_return_restarts_it() {
    require_root!();
    let mut gw = gateway("dupl");
    gw.daemon.start();
    gw.daemon.cli(&["tunnel", "add", "hv2", "--remote-ip", GW_IP[1], "--vni", "5001", "--bfd"]);
    gw.daemon.cli(&[
        "port",
        "add",
        "vm1",
        "--ifname",
        "p1",
        "--vni",
        "5001",
        "--port-key",
        "17",
        "--mac",
        &mac(VM_MAC[0]),
    ]);
    let before = wait_resolved(&gw.daemon, "hv2");

    gw.ns.ok(&["ip", "link", "del", "ul"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let gone = loop {
        let show = gw.daemon.json(&["show"]);
        if show["uplink"]["error"].is_string() {
            break show;
        }
        assert!(Instant::now() < deadline, "show never reported the missing uplink: {show}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(gone["ports"].as_array().unwrap().len(), 2);
    assert_eq!(gone["ofports"], before["ofports"]);
    gw.daemon.cli(&[
        "port",
        "add",
        "vm2",
        "--ifname",
        "p2",
        "--vni",
        "5001",
        "--port-key",
        "18",
        "--mac",
        "02:00:5e:20:00:09",
    ]);

    Veth::new(&gw.ns, "ul", &format!("{}/24", GW_IP[0]), &gw.peer, "w2", &format!("{}/24", GW_IP[1]));
    let p = gw.daemon.process.take().expect("running");
    let (status, _, log) = p.wait(Duration::from_secs(10)).expect("the daemon exits once the uplink is back");
    assert!(!status.success(), "exit {status}");
    assert!(log.contains("uplink interface is gone") && log.contains("was recreated"), "{log}");
    let pins = gw.daemon.pins();
    assert!(pins.join("links/uplink").exists() && pins.join(FDB).exists(), "the datapath's pins must stay");

    gw.daemon.start();
    let after = wait_resolved(&gw.daemon, "hv2");
    let numbers = |v: &Value| {
        v["ports"].as_array().unwrap().iter().map(|p| (p["name"].clone(), p["ofport"].clone())).collect::<Vec<_>>()
    };
    assert_eq!(numbers(&after).len(), 3);
    assert!(numbers(&before).iter().all(|n| numbers(&after).contains(n)), "numbers kept: {after}");
    assert_eq!(after["uplink"]["ifindex"].as_u64(), Some(gw.ns.ifindex("ul") as u64));
    assert!(after["uplink"].get("error").is_none());
    let peer_mac = gw.peer.ok(&["cat", "/sys/class/net/w2/address"]).trim().to_owned();
    let hv2 = after["ports"].as_array().unwrap().iter().find(|p| p["name"] == "hv2").unwrap().clone();
    assert_eq!(hv2["nexthop"]["mac"], peer_mac.as_str());
    assert_eq!(read_maps(&gw.daemon.pins()), maps_from_show(&gw.ns, &after));
    let net: Value = serde_json::from_str(&gw.ns.ok(&["bpftool", "-j", "net", "show"])).unwrap();
    let on_ul = net[0]["xdp"].as_array().unwrap().iter().any(|e| e["devname"] == "ul");
    assert!(on_ul, "xgw_uplink is not on the new uplink: {net}");
}

#[test]
fn port_security_drops_a_spoofed_source_until_the_port_allows_it() {
    require_root!();
    let mut t = two_gateways();
    wait_resolved(&t.daemon, "hv2");
    let shown = t.daemon.json(&["port", "list"]);
    let vm1 = shown.as_array().unwrap().iter().find(|p| p["name"] == "vm1").unwrap().clone();
    assert_eq!(vm1["port_security"], serde_json::json!([format!("{} {}", mac(VM_MAC[0]), VM_IP[0])]), "{vm1}");
    t.vm[0].ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", VM_IP[1]]);

    // vm1 takes a second address that its port does not list; gw2 answers
    // vm2's ARP for it, so only port security stands in the way.
    let spoofed = "203.0.113.5";
    t.vm[0].ok(&["ip", "addr", "add", &format!("{spoofed}/32"), "dev", "eth0"]);
    t.gw2.add_neigh(VNI, ipv4_mapped([203, 0, 113, 5]), VM_MAC[0]);
    let drops = |d: &Daemon| t_drops(d, "port_security_ip");
    let before = drops(&t.daemon);
    let out = t.vm[0].exec(&["ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", spoofed, VM_IP[1]]);
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("3 packets transmitted, 0 received"), "{out}");
    assert!(drops(&t.daemon) >= before + 3, "port_security_ip {} -> {}", before, drops(&t.daemon));
    // Its own address still works meanwhile.
    t.vm[0].ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "-I", VM_IP[0], VM_IP[1]]);

    // Refused, naming the field, changing nothing.
    fn vm9<'a>(more: &[&'a str]) -> Vec<&'a str> {
        let base = ["port", "add", "vm9", "--ifname", "p1", "--vni", "5001", "--port-key", "99"];
        base.iter().chain(&["--mac", "02:00:5e:20:00:99"]).chain(more).copied().collect()
    }
    let err = t.daemon.refused(&vm9(&["--no-port-security", "--allow", "02:00:5e:20:00:99 203.0.113.99"]));
    assert!(err.contains("allow: more allowed addresses need port security on"), "{err}");
    let err = t.daemon.refused(&vm9(&["--allow", "02:00:5e:20:00:99 203.0.113.0/24"]));
    assert!(err.contains("--allow") && err.contains("a prefix is not an address"), "{err}");

    // The port lists the address: the same pings cross.
    t.daemon.cli(&["port", "del", "vm1"]);
    let allow = format!("{} {spoofed}", mac(VM_MAC[0]));
    add_vm1(&t.daemon, &["--allow", &allow]);
    let shown = t.daemon.json(&["port", "list"]);
    let vm1 = shown.as_array().unwrap().iter().find(|p| p["name"] == "vm1").unwrap().clone();
    assert_eq!(vm1["port_security"][1], allow, "{vm1}");
    assert!(t.daemon.cli(&["show"]).contains(&format!("port_security [{} {}, {allow}]", mac(VM_MAC[0]), VM_IP[0])));
    let before = drops(&t.daemon);
    t.vm[0].ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", spoofed, VM_IP[1]]);
    assert_eq!(drops(&t.daemon), before);
    // PORT_SECURITY holds both elements, row by row (the layout of
    // xgw_common::maps::PortSecurity: count, then MAC, kind, address).
    let ofport = vm1["ofport"].as_u64().unwrap() as u32;
    let entry = read_maps(&t.daemon.pins())[PORT_SECURITY][&bytes(&ofport)].clone();
    let row = |kind: u8, ip: Option<[u8; 4]>| {
        let mut r = VM_MAC[0].to_vec();
        r.extend([kind, 0]);
        r.extend(ip.map_or([0; 16], wire::ipv4_mapped));
        r
    };
    let mut want = [4u32.to_ne_bytes(), [0; 4]].concat();
    for ip in [[203, 0, 113, 1], [203, 0, 113, 5]] {
        want.extend(row(2, None));
        want.extend(row(3, Some(ip)));
    }
    want.resize(entry.len(), 0);
    assert_eq!(entry, want);
}

fn t_drops(d: &Daemon, reason: &str) -> u64 {
    d.json(&["stats"])["drops"][reason].as_u64().unwrap_or_else(|| panic!("no drop counter {reason}"))
}

#[test]
fn a_datapath_pinned_by_another_version_is_refused_by_name() {
    require_root!();
    let gw = gateway("dlay");
    // LOCAL_PORTS as the release before port security made it: 16-byte values.
    let dir = gw.daemon.bpffs_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let old = dir.join("LOCAL_PORTS");
    let path = old.to_str().unwrap();
    let made = std::process::Command::new("bpftool")
        .args([
            "map",
            "create",
            path,
            "type",
            "hash",
            "key",
            "4",
            "value",
            "16",
            "entries",
            "4096",
            "name",
            "LOCAL_PORTS",
        ])
        .status()
        .unwrap();
    assert!(made.success());
    let out = gw.daemon.run_command(&[]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a foreign datapath:\n{err}");
    assert!(
        err.contains(&format!(
            "{path} was made by another xgw version (key 4 and value 16 bytes, this one needs 4 and 32)"
        )),
        "{err}"
    );
    // No datapath ran here (no uplink link was pinned), so the failed start
    // cleared what it found, as any failed first start does; the next one
    // makes its own maps.
    assert!(!old.exists());
    let mut d = gw.daemon;
    d.start();
    d.stop();
}

/// A map pinned by an xgw from before BTF-defined maps (no BTF, the same
/// layout) is adopted as it is: the same map, so its contents and the
/// programs left attached carry on; bpftool prints it in hex until the
/// datapath is made anew (`xgw uninstall`), and the maps this start
/// creates with field names.
#[test]
fn a_map_pinned_without_btf_is_adopted_as_it_is() {
    require_root!();
    let gw = gateway("dbtf");
    let dir = gw.daemon.bpffs_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let old = dir.join("LOCAL_PORTS");
    let path = old.to_str().unwrap();
    let args =
        ["map", "create", path, "type", "hash", "key", "4", "value", "32", "entries", "4096", "name", "LOCAL_PORTS"];
    assert!(std::process::Command::new("bpftool").args(args).status().unwrap().success());
    let show = |p: &str| -> serde_json::Value {
        let out = std::process::Command::new("bpftool").args(["-j", "map", "show", "pinned", p]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let before = show(path);
    assert!(before.get("btf_id").is_none(), "bpftool made it with BTF: {before}");

    let mut d = gw.daemon;
    d.start();
    d.cli(&["port", "add", "vm1", "--ifname", "p1", "--vni", "5001", "--port-key", "17", "--mac", "02:00:5e:20:00:01"]);
    let after = show(path);
    assert_eq!(after["id"], before["id"], "adopted, not replaced");
    assert!(after.get("btf_id").is_none());
    let tunnels = show(d.pins().join("TUNNELS").to_str().unwrap());
    assert!(tunnels["btf_id"].as_u64().is_some_and(|id| id > 0), "a map this start made has BTF: {tunnels}");
    let out = std::process::Command::new("bpftool").args(["-j", "map", "dump", "pinned", path]).output().unwrap();
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(dump.as_array().map(Vec::len), Some(1), "vm1's entry in the adopted map: {dump}");
    d.stop();
}

/// BFD_SESSIONS and BFD_PATHS pinned by an xgw that held 4,096 sessions
/// (this one holds 16,384) are adopted, not refused as another version's:
/// their length is a capacity, and the engine uses the slots they have.
#[test]
fn bfd_maps_pinned_with_fewer_sessions_are_adopted_and_used() {
    require_root!();
    let gw = gateway("dbfc");
    let dir = gw.daemon.bpffs_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let create = |name: &str, kind: &str, key: &str, value: &str, flags: &str| {
        let path = dir.join(name);
        let mut args = vec!["map", "create", path.to_str().unwrap(), "type", kind, "key", key, "value", value];
        args.extend(["entries", "4096", "name", name, "flags", flags]);
        assert!(std::process::Command::new("bpftool").args(&args).status().unwrap().success(), "{name}");
        path
    };
    // BPF_F_MMAPABLE (1024): the engine maps the sessions.
    let sessions = create("BFD_SESSIONS", "array", "4", "144", "1024");
    create("BFD_PATHS", "hash", "24", "4", "0");
    let id = |p: &std::path::Path| -> serde_json::Value {
        let out = std::process::Command::new("bpftool").args(["-j", "map", "show", "pinned"]).arg(p).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["max_entries"], 4096, "{v}");
        v["id"].clone()
    };
    let before = id(&sessions);

    let mut d = gw.daemon;
    d.start();
    d.cli(&["bfd", "peer", "add", "tor", "--peer-ip", "198.51.100.2"]);
    let peer = d.json(&["bfd", "show", "tor"]);
    let disc = peer["local_discriminator"].as_u64().unwrap_or_else(|| panic!("{peer}"));
    assert!((disc & u64::from(xgw_common::maps::BFD_SLOT_MASK)) < 4096, "{peer}");
    assert_eq!(id(&sessions), before, "adopted, not replaced");
    d.stop();
}

#[test]
fn a_second_daemon_and_uninstall_are_refused_while_the_first_runs() {
    require_root!();
    let t = two_gateways();
    wait_resolved(&t.daemon, "hv2");
    let ping = |n: &str| t.vm[0].ok(&["ping", "-c", n, "-i", "0.1", "-W", "2", VM_IP[1]]);
    ping("3");
    let owner = t.daemon.process.as_ref().unwrap().pid();
    let pins = t.daemon.pins();
    let before = read_maps(&pins);

    // The same datapath, another state directory (and socket): refused
    // before it reads or writes anything, naming the owner.
    let other = TempDir::new("dsecond");
    let mut second = std::process::Command::new("ip");
    second
        .args(["netns", "exec", &t.gw[0].name])
        .arg(xgw_tests::xgw_bin())
        .args(["run", "--uplink", "ul", "--local-ip", GW_IP[0], "--state-dir"])
        .arg(other.path.join("state"))
        .arg("--bpffs")
        .arg(&pins)
        .arg("--socket")
        .arg(other.path.join("s.sock"));
    let Some((status, _, err)) = Process::spawn(second, "second xgw run").wait(Duration::from_secs(20)) else {
        panic!("a second daemon is running on the first one's datapath");
    };
    assert!(!status.success(), "a second daemon started:\n{err}");
    let want = format!("bpffs: the datapath pinned in {} is owned by another xgw daemon (pid {owner}", pins.display());
    assert!(err.contains(&want), "{err}");

    // uninstall, with the first daemon's bpffs and the default (other) state directory.
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &t.gw[0].name])
        .arg(xgw_tests::xgw_bin())
        .args(["uninstall", "--state-dir"])
        .arg(other.path.join("state"))
        .arg("--bpffs")
        .arg(&pins)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "uninstall removed a running daemon's datapath:\n{err}");
    assert!(err.contains(&want), "{err}");

    // Nothing moved: the maps, the daemon, the traffic.
    assert_eq!(read_maps(&pins), before);
    ping("5");
    t.daemon.json(&["show"]);
}

#[test]
fn stalled_connections_hold_up_no_one() {
    require_root!();
    let mut gw = gateway("dstall");
    gw.daemon.extra = vec!["--metrics".into(), "127.0.0.1:9477".into()];
    gw.daemon.start();
    // 200 API clients that connect and never send a request, and 50 metrics
    // clients that send one byte and stall (what any local user can do to
    // a loopback port; the daemon cannot tell them from a slow scraper).
    let stalled_api: Vec<std::os::unix::net::UnixStream> =
        (0..200).map(|_| std::os::unix::net::UnixStream::connect(&gw.daemon.socket).expect("connect")).collect();
    let stalled_metrics: Vec<std::net::TcpStream> = xgw_tests::netns::enter(&gw.ns.name, || {
        (0..50)
            .map(|_| {
                let mut s = std::net::TcpStream::connect("127.0.0.1:9477").expect("connect to metrics");
                s.write_all(b"G").unwrap();
                s
            })
            .collect()
    });
    std::thread::sleep(Duration::from_millis(200));

    // A client that sends its request at once is answered at once: a
    // scrape (first, while the stalled ones are within their 2 s), then
    // API requests.
    let start = Instant::now();
    let m = scrape(&gw.ns.name, "127.0.0.1:9477");
    let scraped = start.elapsed();
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let start = Instant::now();
        let mut s = std::os::unix::net::UnixStream::connect(&gw.daemon.socket).expect("connect");
        s.write_all(b"{\"op\":\"show\"}\n").unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&s), &mut line).unwrap();
        slowest = slowest.max(start.elapsed());
        let v: Value = serde_json::from_str(&line).expect("a JSON answer");
        assert!(v.get("error").is_none(), "{line}");
    }
    eprintln!(
        "with 200 stalled API and 50 stalled metrics connections: show {slowest:?} (slowest of 5), scrape {scraped:?}"
    );
    assert!(m.contains_key("xgw_ofports{state=\"used\"}"));
    assert!(slowest < Duration::from_millis(100), "show took {slowest:?}");
    assert!(scraped < Duration::from_secs(1), "scrape took {scraped:?}");
    // The CLI too, and the daemon is still whole.
    gw.daemon.json(&["show"]);
    drop((stalled_api, stalled_metrics));
    gw.daemon.stop();
}

#[test]
fn a_stopped_daemon_is_reported_not_waited_for() {
    require_root!();
    let mut gw = gateway("dsigstop");
    gw.daemon.start();
    let p = gw.daemon.process.as_ref().unwrap();
    p.signal(nix::sys::signal::Signal::SIGSTOP);
    let start = Instant::now();
    let out = gw.daemon.try_cli(&["show", "--timeout", "1"]);
    let took = start.elapsed();
    p.signal(nix::sys::signal::Signal::SIGCONT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "show answered a stopped daemon?");
    assert!(err.contains("did not answer within 1 s"), "{err}");
    assert!(took < Duration::from_secs(3), "gave up after {took:?}");
    // The default is a few seconds, not for ever; and bad values are refused.
    let err = gw.daemon.refused(&["show", "--timeout", "0"]);
    assert!(err.contains("--timeout") && err.contains("0 < timeout <= 86400"), "{err}");
    gw.daemon.json(&["show"]);
    gw.daemon.stop();
}

#[test]
fn systemd_hears_ready_the_watchdog_and_how_each_reload_ended() {
    require_root!();
    let mut gw = gateway("dnotify");
    let dir = TempDir::new("dnotify");
    let path = dir.path.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let heard = |for_: Duration| {
        let (mut got, end) = (Vec::new(), Instant::now() + for_);
        let mut buf = [0u8; 4096];
        while Instant::now() < end {
            if let Ok(n) = sock.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        got
    };
    // Until the reload's READY=1 (a replaced port may wait up to 1 s for
    // the kernel to release its old XDP link), watchdog pings left out.
    let reload = || {
        let (mut got, end) = (Vec::new(), Instant::now() + Duration::from_secs(5));
        let mut buf = [0u8; 4096];
        while Instant::now() < end && !got.iter().any(|m: &String| m.starts_with("READY=1")) {
            if let Ok(n) = sock.recv(&mut buf) {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                if m != "WATCHDOG=1" {
                    got.push(m);
                }
            }
        }
        got
    };
    let port = |vni: u32| {
        format!(
            "[[ports]]\nname = \"vm1\"\nifname = \"p1\"\nvni = {vni}\nport_key = 17\nmac = \"{}\"\n",
            mac(VM_MAC[0])
        )
    };
    let cfg = gw.daemon.state.path.join("xgw.toml");
    std::fs::write(&cfg, port(VNI)).unwrap();
    gw.daemon.extra = vec!["--config".into(), cfg.to_str().unwrap().into()];
    gw.daemon.env = vec![
        ("NOTIFY_SOCKET".into(), path.to_str().unwrap().into()),
        // WatchdogSec=200ms: a WATCHDOG=1 every 100 ms.
        ("WATCHDOG_USEC".into(), "200000".into()),
    ];
    gw.daemon.start();
    let got = heard(Duration::from_secs(1));
    assert_eq!(got.first().map(String::as_str), Some("READY=1\nSTATUS=forwarding on ul"), "{got:?}");
    let pings = got.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(pings >= 5, "{pings} watchdog pings in 1 s: {got:?}");

    // A refused file: systemd hears the reload begin and end, and why.
    std::fs::write(&cfg, port(16_777_216)).unwrap();
    gw.daemon.process.as_ref().unwrap().signal(nix::sys::signal::Signal::SIGHUP);
    let got = reload();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].starts_with("RELOADING=1\nMONOTONIC_USEC="), "{got:?}");
    let why = format!("config: {}: ports[0].vni: 16777216 is out of range (0..=16777215)", cfg.display());
    assert_eq!(got[1], format!("READY=1\nSTATUS=forwarding on ul; config refused, the previous one stays: {why}"));
    // A good one. It replaces the port on the same interface: the XDP
    // link is taken over in place, never detached (no moment without it).
    let pin = gw.daemon.pins().join("links/local-p1");
    let xdp_link = || -> u64 {
        let link: Value =
            serde_json::from_str(&xgw_tests::sh(&["bpftool", "-j", "link", "show", "pinned", pin.to_str().unwrap()]))
                .unwrap();
        link["id"].as_u64().expect("a link id")
    };
    let before = xdp_link();
    std::fs::write(&cfg, port(VNI + 1)).unwrap();
    gw.daemon.process.as_ref().unwrap().signal(nix::sys::signal::Signal::SIGHUP);
    let got = reload();
    assert_eq!(got.get(1).map(String::as_str), Some("READY=1\nSTATUS=forwarding on ul; config reloaded"), "{got:?}");
    assert_eq!(gw.daemon.json(&["port", "list"])[0]["vni"], VNI + 1);
    assert_eq!(xdp_link(), before, "the port's XDP link was replaced, not kept");
    gw.daemon.stop();
}

#[test]
fn the_environment_gives_both_local_ips_and_the_metrics_address() {
    require_root!();
    let ns = Netns::new("denv");
    let peer = Netns::new("peer");
    Veth::new(&ns, "ul", &format!("{}/24", GW_IP[0]), &peer, "w", &format!("{}/24", GW_IP[1]));
    ns.ok(&["ip", "addr", "add", "2001:db8::1/64", "dev", "ul", "nodad"]);
    // No --local-ip on the command line: what a unit's environment file gives.
    let mut d = Daemon::new(&ns, "ul", &[]);
    d.env = vec![
        ("XGW_LOCAL_IP".into(), format!("{},2001:db8::1", GW_IP[0])),
        ("XGW_METRICS".into(), "127.0.0.1:9478".into()),
    ];
    d.start();
    let show = d.json(&["show"]);
    assert_eq!(show["uplink"]["local_ips"], serde_json::json!([GW_IP[0], "2001:db8::1"]), "{show}");
    let m = scrape(&ns.name, "127.0.0.1:9478");
    assert!(m.contains_key("xgw_ofports{state=\"used\"}"));
    d.stop();
}

/// What Prometheus 2.x sends when it scrapes.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                                 version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// Every family the daemon exports, by the name its samples carry.
const FAMILIES: [&str; 15] = [
    "xgw_build_info",
    "xgw_port_packets_total",
    "xgw_port_bytes_total",
    "xgw_drops_total",
    "xgw_replies_total",
    "xgw_ofports",
    "xgw_tunnel_nexthop_resolved",
    "xgw_tunnel_nexthop_changes_total",
    "xgw_bfd_state",
    "xgw_bfd_flaps_total",
    "xgw_bfd_session_packets_total",
    "xgw_bfd_drops_total",
    "xgw_bfd_rx_packets_total",
    "xgw_bfd_echo_reflected_total",
    "xgw_bfd_events_lost_total",
];

#[test]
fn metrics_pass_promtool_and_the_python_parser_and_are_openmetrics_when_asked() {
    require_root!();
    let mut gw = gateway("dprom");
    gw.daemon.extra = vec!["--metrics".into(), "127.0.0.1:9477".into()];
    gw.daemon.start();
    let d = &gw.daemon;
    // A sample in every family: a tunnel with BFD, a local port. The
    // tunnel's name holds a quote and a backslash, which each format must
    // escape in its label values.
    let odd = "hv\"2\\";
    d.cli(&["tunnel", "add", odd, "--remote-ip", GW_IP[1], "--bfd"]);
    d.cli(&["port", "add", "vm1", "--ifname", "p1", "--vni", "5001", "--port-key", "17", "--mac", &mac(VM_MAC[0])]);
    let version = std::process::Command::new(xgw_tests::xgw_bin()).arg("--version").output().unwrap().stdout;
    let version = String::from_utf8(version).unwrap().trim().trim_start_matches("xgw ").to_owned();

    // No Accept header: the text format 0.0.4, which promtool checks clean.
    let (content_type, text) = get_metrics(&gw.ns.name, "127.0.0.1:9477", None);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let (status, said) = promtool_check(&text);
    assert!(status.success() && said.trim().is_empty(), "promtool check metrics: {status}: {said}\n{text}");
    let samples = parse_samples(&text);
    let names: std::collections::BTreeSet<&str> = samples.0.keys().map(|k| k.split('{').next().unwrap()).collect();
    assert_eq!(names, FAMILIES.into_iter().collect(), "{text}");
    let build = samples.0.iter().find(|(k, _)| k.starts_with("xgw_build_info{")).expect("build info");
    assert!(build.0.contains(&format!("version=\"{version}\"")) && build.0.contains("datapath=\""), "{build:?}");
    assert_eq!(*build.1, 1.0);

    // The Python client's classic parser reads every family, typed, with
    // its help text and all of its samples, the escaped name unescaped.
    let families = python_parse(&text, false);
    let mut read = 0;
    for f in &families {
        assert!(matches!(f["type"].as_str(), Some("counter" | "gauge")), "untyped family: {f}");
        assert!(!f["help"].as_str().unwrap_or("").is_empty(), "no help: {f}");
        let got = f["samples"].as_array().unwrap();
        assert!(!got.is_empty(), "a family without its samples: {f}");
        read += got.len();
    }
    assert_eq!(read, samples.0.len(), "the parser read {read} of {} samples: {families:?}", samples.0.len());
    let tunnel = families.iter().find(|f| f["name"] == "xgw_tunnel_nexthop_resolved").expect("nexthop family");
    assert_eq!(tunnel["samples"][0][1]["tunnel"], odd, "{tunnel}");

    // Prometheus's own Accept header: OpenMetrics, the same series, which
    // the Python client's strict OpenMetrics parser reads (it insists on the
    // final # EOF).
    let (content_type, om) = get_metrics(&gw.ns.name, "127.0.0.1:9477", Some(PROMETHEUS_ACCEPT));
    assert_eq!(content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    assert!(om.ends_with("# EOF\n"), "{om}");
    let om_samples = parse_samples(&om);
    assert_eq!(om_samples.0.keys().collect::<Vec<_>>(), samples.0.keys().collect::<Vec<_>>());
    let om_families = python_parse(&om, true);
    assert!(om_families.iter().any(|f| f["name"] == "xgw_build" && f["type"] == "info"), "{om_families:?}");
    assert!(om_families.iter().all(|f| !f["help"].as_str().unwrap_or("").is_empty()), "{om_families:?}");
    let om_read: usize = om_families.iter().map(|f| f["samples"].as_array().unwrap().len()).sum();
    assert_eq!(om_read, samples.0.len());
    // Asking for the text format by name is answered in it.
    let (content_type, _) = get_metrics(&gw.ns.name, "127.0.0.1:9477", Some("text/plain;version=0.0.4"));
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    gw.daemon.stop();
}

/// `xgw store ...` outside the namespace (the store and the pins are files).
fn store_cmd(d: &Daemon, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(xgw_tests::xgw_bin());
    cmd.arg("store").args(args).arg("--state-dir").arg(d.state_dir());
    if args[0] != "export" && args[0] != "import" {
        cmd.arg("--bpffs").arg(d.bpffs_dir());
    }
    cmd.output().unwrap()
}

/// The numbers, bindings and groups an operator sees.
fn committed(d: &Daemon) -> (BTreeMap<String, u64>, Value, Value) {
    let show = d.json(&["show"]);
    let ports = show["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["ofport"].as_u64().unwrap()));
    (ports.collect(), d.json(&["binding", "list"]), d.json(&["group", "list"]))
}

#[test]
fn a_lost_or_damaged_store_is_refused_and_rebuilt_from_the_datapath_with_every_number() {
    require_root!();
    let mut gw = gateway("dstore");
    gw.daemon.extra = vec!["--keep-datapath".into()];
    gw.daemon.start();
    let d = &gw.daemon;
    // Numbers that are not simply 1, 2, 3: a deleted port leaves a gap.
    d.cli(&["tunnel", "add", "gone", "--remote-ip", "198.51.100.9", "--vni", "5001"]);
    d.cli(&["tunnel", "add", "hv2", "--remote-ip", GW_IP[1], "--vni", "5001", "--ofport", "700", "--ovn-metadata"]);
    d.cli(&[
        "tunnel",
        "add",
        "hv3",
        "--remote-ip",
        "198.51.100.3",
        "--bfd",
        "--bfd-min-tx-ms",
        "300",
        "--bfd-detect-mult",
        "5",
    ]);
    d.cli(&["tunnel", "del", "gone"]);
    add_vm1(d, &["--allow", "02:00:5e:20:00:99 203.0.113.99"]);
    for i in 0..20u8 {
        let m = format!("02:00:5e:20:01:{i:02x}");
        let ip = format!("203.0.113.{}", 100 + i);
        let key = (100 + i as u16).to_string();
        let mut args = vec!["binding", "add", "--vni", "5001", "--mac", &m, "--tunnel", "hv2", "--port-key", &key];
        if i % 2 == 0 {
            args.extend(["--ip", ip.as_str()]);
        }
        d.cli(&args);
    }
    d.cli(&[
        "group",
        "add",
        "--vni",
        "5001",
        "--key",
        "32768",
        "--port",
        "vm1",
        "--tunnel",
        "hv2",
        "--rate-pps",
        "500",
    ]);
    let before = committed(d);
    assert_eq!(before.0.get("hv2"), Some(&700));
    // A backup, taken from the running daemon (it holds the store).
    let backup = store_cmd(d, &["export", "--socket", d.socket.to_str().unwrap()]);
    assert!(backup.status.success(), "{}", String::from_utf8_lossy(&backup.stderr));
    gw.daemon.stop();
    let d = &gw.daemon;
    let ok = store_cmd(d, &["check"]);
    assert!(ok.status.success(), "{}{}", String::from_utf8_lossy(&ok.stdout), String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("agrees"));
    let maps = read_maps(&d.pins());
    let records = read_records(&d.pins());
    let numbers: BTreeMap<String, u64> = records.iter().map(|(n, s)| (s.name().to_owned(), u64::from(*n))).collect();
    assert_eq!(numbers, before.0, "one record copy per port, under its number");
    let exported: xgw::ofport::redb_store::Export = serde_json::from_slice(&backup.stdout).unwrap();
    let stored: BTreeMap<u32, PortSpec> =
        exported.ports.into_iter().map(|r| (u32::from(r.ofport.get()), r.spec)).collect();
    assert_eq!(records, stored, "each copy is its port's record in the store");
    let file = d.state_dir().join("xgw.redb");
    let good = std::fs::read(&file).unwrap();
    let scratch = TempDir::new("dscratch");
    // A flipped byte the store library notices (found by trying, in a copy),
    // past the header (whose magic number is the easy case).
    let flipped = (4096..good.len())
        .step_by(61)
        .find_map(|at| {
            let mut bad = good.clone();
            bad[at] ^= 0x5a;
            std::fs::write(scratch.path.join("xgw.redb"), &bad).unwrap();
            RedbStore::open(&scratch.path).is_err().then_some(bad)
        })
        .expect("some flipped byte is noticed");
    let fresh = {
        let dir = TempDir::new("dfresh");
        drop(RedbStore::open(&dir.path).unwrap());
        std::fs::read(dir.path.join("xgw.redb")).unwrap()
    };
    let cases: [(&str, Option<Vec<u8>>); 5] = [
        ("missing", None),
        ("empty", Some(Vec::new())),
        ("truncated", Some(good[..good.len() / 2].to_vec())),
        ("flipped", Some(flipped)),
        ("no records", Some(fresh)),
    ];
    for (case, bytes) in cases {
        let _ = std::fs::remove_file(&file);
        if let Some(b) = &bytes {
            std::fs::write(&file, b).unwrap();
        }
        let out = gw.daemon.run_command(&[]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{case}: started:\n{err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.contains(&file.display().to_string())
                && last.contains("xgw store rebuild")
                && last.contains("3 ports"),
            "{case}: {err}"
        );
        assert_eq!(read_maps(&gw.daemon.pins()), maps, "{case}: the kept datapath changed");
        assert_eq!(read_records(&gw.daemon.pins()), records, "{case}: the record copies changed");
        // (redb rewrites a readable file's header when it opens it.)
        if case != "no records" {
            assert_eq!(std::fs::read(&file).ok(), bytes, "{case}: the store was touched");
        }

        // The documented way out.
        let out = store_cmd(&gw.daemon, &["rebuild"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{case}: rebuild: {text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("3 ports, 20 bindings, 1 groups"), "{case}: {text}");
        if bytes.is_some() {
            assert!(text.contains("kept as"), "{case}: the unusable file is kept: {text}");
        }
        gw.daemon.start();
        assert_eq!(committed(&gw.daemon), before, "{case}: numbers, bindings or groups changed");
        gw.daemon.stop();
        assert_eq!(read_maps(&gw.daemon.pins()), maps, "{case}: the datapath changed");
        assert_eq!(read_records(&gw.daemon.pins()), records, "{case}: the record copies changed");
    }

    // A rebuild never overwrites a readable store that holds something.
    let out = store_cmd(&gw.daemon, &["rebuild"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("is not replaced"));
    // The backup restores the same (settings too), and the datapath agrees.
    std::fs::remove_file(&file).unwrap();
    let saved = scratch.path.join("backup.json");
    std::fs::write(&saved, &backup.stdout).unwrap();
    let out = store_cmd(&gw.daemon, &["import", saved.to_str().unwrap()]);
    assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
    gw.daemon.start();
    assert_eq!(committed(&gw.daemon), before, "import: numbers, bindings or groups changed");
    // While a daemon runs, the offline commands are refused.
    let out = store_cmd(&gw.daemon, &["rebuild"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("stop the daemon first"));
    gw.daemon.stop();

    // Accepting the loss is explicit, and does what it says.
    std::fs::write(&file, b"").unwrap();
    let p = Process::spawn(gw.daemon.run_command(&["--accept-store-loss"]), "xgw run --accept-store-loss");
    gw.daemon.process = Some(p);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !gw.daemon.try_cli(&["show", "--json"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "--accept-store-loss did not start: {}",
            gw.daemon.process.as_ref().unwrap().stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(committed(&gw.daemon).0.is_empty());
    let err = gw.daemon.stop();
    assert!(err.contains("--accept-store-loss"), "{err}");
    assert!(read_records(&gw.daemon.pins()).is_empty(), "the lost ports' record copies stay");
    assert!(read_maps(&gw.daemon.pins())[TUNNELS].is_empty(), "the lost ports' entries stay");
}
