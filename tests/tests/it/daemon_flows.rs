//! The daemon's own map writes against the flow cache: a binding moved to
//! another tunnel, then deleted, through `xgw binding`; a tunnel's next hop
//! moved by the kernel (its neighbour entry, then its route); the uplink's
//! MTU and MAC changed. Each reaches the very next packet although the
//! cache held the old answer.
//! Packets go through this test's own `xgw_local` on the daemon's pinned
//! maps, pinned to one CPU whose cache slot is read back from the map.
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use xgw::ofport::MacAddr;
use xgw_common::maps::{EncapFlow, EncapFlowKey};
use xgw_tests::{
    capture::Capture,
    daemon::Daemon,
    gateway::TestGateway,
    netns::{Netns, Veth},
    packet::*,
    process::pin_to_this_cpu,
    require_root,
};

const VM_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x20, 0, 1];
const REMOTE_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x20, 0, 2];

/// The daemon's gateway namespace: uplink `ul` (198.51.100.1) to the peer's
/// `w` (198.51.100.2), tunnels hv2 (on link) and hv3 (198.51.100.3, nobody
/// there), local port vm1 on `p1`.
fn gateway() -> (Netns, Netns, Daemon) {
    let ns = Netns::new("dflow");
    let peer = Netns::new("peer");
    Veth::new(&ns, "ul", "198.51.100.1/24", &peer, "w", "198.51.100.2/24");
    ns.ok(&["ip", "link", "add", "p1", "type", "veth", "peer", "name", "p1x"]);
    ns.ok(&["ip", "link", "set", "p1", "up"]);
    ns.ok(&["ip", "link", "set", "p1x", "up"]);
    let mut d = Daemon::new(&ns, "ul", &["198.51.100.1"]);
    d.start();
    d.cli(&["tunnel", "add", "hv2", "--remote-ip", "198.51.100.2", "--vni", "5001", "--ovn-metadata"]);
    d.cli(&["tunnel", "add", "hv3", "--remote-ip", "198.51.100.3", "--vni", "5001", "--ovn-metadata"]);
    d.cli(&[
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
        &MacAddr(VM_MAC).to_string(),
    ]);
    (ns, peer, d)
}

fn bind(d: &Daemon, tunnel: &str) {
    d.cli(&[
        "binding",
        "add",
        "--vni",
        "5001",
        "--mac",
        &MacAddr(REMOTE_MAC).to_string(),
        "--tunnel",
        tunnel,
        "--port-key",
        "34",
    ]);
}

/// A UDP frame from the local VM to the remote MAC.
fn vm_frame() -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(VM_MAC, REMOTE_MAC)
        .ipv4([203, 0, 113, 1], [203, 0, 113, 2], 64)
        .udp(40000, 7)
        .write(&mut frame, &[7; 16])
        .unwrap();
    frame
}

/// This CPU's encap cache slot for the remote MAC from `p1`.
fn encap_slot(gw: &TestGateway, key: &EncapFlowKey, cpu: usize) -> EncapFlow {
    gw.encap_slot(cpu, key.slot())
}

#[test]
fn binding_changes_reach_the_next_packet_past_a_warm_cache() {
    require_root!();
    let cpu = pin_to_this_cpu();
    let (ns, _peer, mut d) = gateway();
    let unbind = || d.cli(&["binding", "del", "--vni", "5001", "--mac", &MacAddr(REMOTE_MAC).to_string()]);
    bind(&d, "hv2");

    let gw = TestGateway::load_pinned(&d.pins(), &["xgw_local"]);
    let prog = gw.program("xgw_local");
    let p1 = ns.ifindex("p1");
    let frame = vm_frame();
    let send = || ns.enter(|| test_run_on(prog, &frame, p1));
    // Outer IPv4 destination: Ethernet 14 + IPv4 header bytes 16..20.
    let outer_dst = |run: &Run| -> [u8; 4] { run.data[30..34].try_into().unwrap() };
    let key = EncapFlowKey::new(p1, REMOTE_MAC);
    let slot = || encap_slot(&gw, &key, cpu);

    let run = send();
    assert_eq!(run.verdict, XDP_REDIRECT);
    assert_eq!(outer_dst(&run), [198, 51, 100, 2]);
    let warm = slot();
    assert_eq!((warm.filled(), warm.key, warm.generation), (true, key, gw.generation()), "the flow is cached");

    unbind();
    bind(&d, "hv3");
    assert!(gw.generation() > warm.generation, "the daemon's writes must bump the generation");
    assert_eq!(slot(), warm, "the cache still holds the old tunnel");
    let run = send();
    assert_eq!(run.verdict, XDP_REDIRECT);
    assert_eq!(outer_dst(&run), [198, 51, 100, 3], "the first packet after the move goes to the new tunnel");
    assert_eq!(&run.data[run.data.len() - frame.len()..], &frame[..]);

    let cached = slot();
    let outer = gw.encap_outer(cpu, cached.dest.ofport);
    assert_eq!((cached.generation, outer.generation), (gw.generation(), gw.generation()));
    assert_eq!(&outer.bytes()[30..34], &[198u8, 51, 100, 3][..], "the new tunnel's headers");
    unbind();
    let drops = gw.drops()["unknown_destination"];
    assert_eq!(send().verdict, XDP_DROP, "a deleted binding is unknown on the next packet");
    assert_eq!(gw.drops()["unknown_destination"], drops + 1);
    d.stop();
}

/// `xgw show --json`: the next hop MAC of `tunnel`, once resolved.
fn shown_nexthop(d: &Daemon, tunnel: &str) -> Option<String> {
    let t = shown_tunnel(d, tunnel);
    (t["nexthop"]["resolved"] == true).then(|| t["nexthop"]["mac"].as_str().unwrap().to_owned())
}

/// `xgw show --json`: the tunnel's entry.
fn shown_tunnel(d: &Daemon, tunnel: &str) -> serde_json::Value {
    let show = d.json(&["show"]);
    show["ports"].as_array().unwrap().iter().find(|p| p["name"] == tunnel).cloned().expect("tunnel shown")
}

fn nexthop_changes(d: &Daemon, tunnel: &str) -> u64 {
    let t = shown_tunnel(d, tunnel);
    t["nexthop"]["changes"].as_u64().unwrap_or_else(|| panic!("nexthop.changes: {t}"))
}

/// Waits until hv2's next hop is the peer's `w`; returns that MAC.
fn wait_nexthop_is_peer(d: &Daemon, peer: &Netns) -> MacAddr {
    let peer_mac = peer.ok(&["cat", "/sys/class/net/w/address"]).trim().parse::<MacAddr>().unwrap();
    let start = Instant::now();
    while shown_nexthop(d, "hv2") != Some(peer_mac.to_string()) {
        assert!(start.elapsed() < Duration::from_secs(10), "hv2's next hop never resolved to the peer");
        std::thread::sleep(Duration::from_millis(50));
    }
    peer_mac
}

/// Waits for the generation to move past `before`, that is for the daemon
/// to rewrite a tunnel entry after a change made at `start`. The deadline
/// is well under the daemon's periodic re-check of resolved next hops
/// (10 s), so only the kernel's announcement can have triggered it.
fn wait_rewritten(gw: &TestGateway, before: u64, start: Instant, what: &str) -> Duration {
    while gw.generation() == before {
        assert!(start.elapsed() < Duration::from_secs(3), "{what}: the tunnel entry was not rewritten within 3 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    start.elapsed()
}

#[test]
fn next_hop_changes_reach_the_next_packet_past_a_warm_cache() {
    require_root!();
    let cpu = pin_to_this_cpu();
    let (ns, peer, mut d) = gateway();
    bind(&d, "hv2");
    let peer_mac = wait_nexthop_is_peer(&d, &peer);

    let gw = TestGateway::load_pinned(&d.pins(), &["xgw_local"]);
    let prog = gw.program("xgw_local");
    let p1 = ns.ifindex("p1");
    let frame = vm_frame();
    let send = || ns.enter(|| test_run_on(prog, &frame, p1));
    let key = EncapFlowKey::new(p1, REMOTE_MAC);
    let outer_dst_mac = |run: &Run| -> [u8; 6] { run.data[0..6].try_into().unwrap() };
    let run = send();
    assert_eq!((run.verdict, outer_dst_mac(&run)), (XDP_REDIRECT, peer_mac.0));
    let warm = encap_slot(&gw, &key, cpu);
    assert_eq!((warm.filled(), warm.generation), (true, gw.generation()), "the flow is cached");

    // The router's MAC moves (a failover): the kernel's neighbour entry
    // changes, and nothing else.
    let moved = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x53, 0x02]);
    let start = Instant::now();
    ns.ok(&["ip", "neigh", "replace", "198.51.100.2", "lladdr", &moved.to_string(), "dev", "ul", "nud", "permanent"]);
    let took = wait_rewritten(&gw, warm.generation, start, "neighbour change");
    eprintln!("neighbour change reached the tunnel map after {took:?}");
    assert_eq!(encap_slot(&gw, &key, cpu), warm, "the cache still holds the old next hop");
    let run = send();
    assert_eq!((run.verdict, outer_dst_mac(&run)), (XDP_REDIRECT, moved.0), "the first packet after the change");
    assert_eq!(&run.data[run.data.len() - frame.len()..], &frame[..]);
    assert_eq!(shown_nexthop(&d, "hv2"), Some(moved.to_string()), "xgw show follows");
    assert_eq!(nexthop_changes(&d, "hv2"), 1);

    // A neighbour nobody's route goes through changes nothing.
    let before = gw.generation();
    ns.ok(&["ip", "neigh", "replace", "198.51.100.4", "lladdr", "00:00:5e:00:53:04", "dev", "ul", "nud", "permanent"]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(gw.generation(), before, "an unrelated neighbour rewrote a tunnel entry");

    // Then the route to the remote moves behind that neighbour.
    let start = Instant::now();
    ns.ok(&["ip", "route", "add", "198.51.100.2/32", "via", "198.51.100.4", "dev", "ul"]);
    let took = wait_rewritten(&gw, before, start, "route change");
    eprintln!("route change reached the tunnel map after {took:?}");
    let run = send();
    assert_eq!(
        (run.verdict, outer_dst_mac(&run)),
        (XDP_REDIRECT, [0x00, 0x00, 0x5e, 0x00, 0x53, 0x04]),
        "after the route change"
    );
    assert_eq!(shown_nexthop(&d, "hv2").as_deref(), Some("00:00:5e:00:53:04"));
    assert_eq!(nexthop_changes(&d, "hv2"), 2);
    let human = d.cli(&["show"]);
    assert!(human.contains("nexthop 00:00:5e:00:53:04") && human.contains("nexthop_changes 2"), "{human}");
    d.stop();
}

/// The uplink's MTU raised or lowered, and its MAC changed, under the
/// running daemon: encap's frame limit and outer source MAC follow at the
/// next packet, past a warm cache, and so do `xgw show` and the BFD
/// engine's Geneve frames (outer and inner source MAC).
#[test]
fn uplink_mtu_and_mac_changes_reach_the_next_packet_past_a_warm_cache() {
    require_root!();
    let cpu = pin_to_this_cpu();
    let (ns, peer, mut d) = gateway();
    bind(&d, "hv2");
    d.cli(&["tunnel", "add", "hvb", "--remote-ip", "198.51.100.2", "--vni", "5002", "--bfd"]);
    wait_nexthop_is_peer(&d, &peer);
    let ul_mac = ns.ok(&["cat", "/sys/class/net/ul/address"]).trim().parse::<MacAddr>().unwrap();

    let gw = TestGateway::load_pinned(&d.pins(), &["xgw_local"]);
    let prog = gw.program("xgw_local");
    let p1 = ns.ifindex("p1");
    // Outer IPv4 length 20 + 8 + 8 + 8 (OVN option) + the inner frame:
    // exactly 1500 with this one.
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(VM_MAC, REMOTE_MAC)
        .ipv4([203, 0, 113, 1], [203, 0, 113, 2], 64)
        .udp(40000, 7)
        .write(&mut frame, &vec![7; 1456 - 42])
        .unwrap();
    let send = || ns.enter(|| test_run_on(prog, &frame, p1));
    let key = EncapFlowKey::new(p1, REMOTE_MAC);
    let run = send();
    assert_eq!((run.verdict, run.data.len()), (XDP_REDIRECT, 1514), "a 1500-byte outer packet fits MTU 1500");
    assert_eq!(run.data[6..12], ul_mac.0, "outer source is the uplink's MAC");
    let warm = encap_slot(&gw, &key, cpu);
    assert_eq!((warm.filled(), warm.generation), (true, gw.generation()), "the flow is cached");
    let shown = |field: &str| d.json(&["show"])["uplink"][field].clone();

    let start = Instant::now();
    ns.ok(&["ip", "link", "set", "ul", "mtu", "1400"]);
    let took = wait_rewritten(&gw, warm.generation, start, "uplink MTU 1500 -> 1400");
    eprintln!("uplink MTU change reached UPLINK after {took:?}");
    assert_eq!(encap_slot(&gw, &key, cpu), warm, "the cache still holds the old limit");
    assert_eq!(send().verdict, XDP_TX, "too big for MTU 1400: ICMP fragmentation needed, not a frame the NIC drops");
    assert_eq!(shown("mtu"), 1400);

    let before = gw.generation();
    let start = Instant::now();
    ns.ok(&["ip", "link", "set", "ul", "mtu", "9000"]);
    wait_rewritten(&gw, before, start, "uplink MTU 1400 -> 9000");
    assert_eq!(send().verdict, XDP_REDIRECT, "jumbo underlay: the frame fits again");
    assert_eq!(shown("mtu"), 9000);

    let moved = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x53, 0x01]);
    let before = gw.generation();
    let start = Instant::now();
    ns.ok(&["ip", "link", "set", "ul", "address", &moved.to_string()]);
    let took = wait_rewritten(&gw, before, start, "uplink MAC change");
    eprintln!("uplink MAC change reached UPLINK after {took:?}");
    let run = send();
    assert_eq!(
        (run.verdict, run.data[6..12].to_vec()),
        (XDP_REDIRECT, moved.0.to_vec()),
        "outer source after the MAC change"
    );
    assert_eq!(shown("mac"), moved.to_string().as_str());

    // hvb's session is Down (nobody answers) and sends once a second.
    let cap = Capture::start(&peer, "w", &["udp", "port", "6081"]);
    std::thread::sleep(Duration::from_millis(2500));
    let bfd: Vec<geneve::Parsed> =
        cap.stop().iter().filter_map(|f| geneve::parse(f)).filter(|g| g.vni == 5002).collect();
    assert!(!bfd.is_empty(), "no BFD frame from hvb in 2.5 s");
    for g in &bfd {
        assert_eq!(
            (g.eth_src, g.inner[6..12].to_vec()),
            (moved.0, moved.0.to_vec()),
            "BFD frame's outer and inner source"
        );
    }
    d.stop();
}

/// A neighbour storm on the uplink: 20,000 changes to 200 neighbours no
/// tunnel uses, with hv2's router moved twice in the middle of it. The
/// daemon keeps answering, does not rewrite tunnel entries for the noise,
/// and ends on the router's last MAC (if the kernel dropped announcements,
/// the overrun makes it re-check everything).
#[test]
fn a_neighbour_storm_leaves_the_right_next_hop_and_a_responsive_daemon() {
    require_root!();
    let (ns, peer, mut d) = gateway();
    bind(&d, "hv2");
    wait_nexthop_is_peer(&d, &peer);
    let gw = TestGateway::load_pinned(&d.pins(), &["xgw_local"]);
    let batch = std::env::temp_dir().join(format!("xgw-storm-{}", std::process::id()));
    let mut lines = String::new();
    for round in 0..100u32 {
        for host in 10..210u32 {
            lines += &format!(
                "neigh replace 198.51.100.{host} lladdr 00:00:5e:00:53:{:02x} dev ul nud permanent\n",
                (round + host) % 256
            );
        }
        match round {
            30 => lines += "neigh replace 198.51.100.2 lladdr 00:00:5e:00:53:aa dev ul nud permanent\n",
            60 => lines += "neigh replace 198.51.100.2 lladdr 00:00:5e:00:53:bb dev ul nud permanent\n",
            _ => {}
        }
    }
    std::fs::write(&batch, lines).unwrap();
    let before = gw.generation();
    let mut storm = ns.spawn(&["ip", "-batch", batch.to_str().unwrap()]);
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut shows = 0;
    while !storm.has_exited() {
        let t = Instant::now();
        d.json(&["show"]);
        slowest = slowest.max(t.elapsed());
        shows += 1;
        assert!(start.elapsed() < Duration::from_secs(30), "the storm did not end");
    }
    let (status, _, err) = storm.wait(Duration::from_secs(1)).unwrap();
    let _ = std::fs::remove_file(&batch);
    assert!(status.success(), "ip -batch: {err}");
    eprintln!("storm took {:?}; {shows} show requests, slowest {slowest:?}", start.elapsed());
    assert!(slowest < Duration::from_secs(1), "show took {slowest:?} during the storm");
    let settle = Instant::now();
    while shown_nexthop(&d, "hv2").as_deref() != Some("00:00:5e:00:53:bb") {
        assert!(
            settle.elapsed() < Duration::from_secs(3),
            "hv2 not on the router's last MAC: {:?}",
            shown_nexthop(&d, "hv2")
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Two moves, at most a bump each (an overrun's full re-check adds none
    // when nothing changed).
    let bumps = gw.generation() - before;
    assert!((1..=2).contains(&bumps), "{bumps} tunnel rewrites for 2 router moves");
    assert_eq!(nexthop_changes(&d, "hv2"), bumps, "each rewrite was a move");
    let log = d.stop();
    assert!(!log.contains("only checked periodically"), "{log}");
    eprintln!(
        "announcements dropped by the kernel: {}",
        log.contains("dropped link, neighbour or route announcements")
    );
}
