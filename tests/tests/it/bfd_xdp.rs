//! BFD receive in XDP (`xgw_uplink`) through BPF_PROG_TEST_RUN, with the
//! engine owning the sessions: control packets built here byte by byte from
//! the RFC 5880 layout (inside Geneve as Open vSwitch sends them, or bare
//! single-hop) move the session state that the engine reads from the real
//! map; every malformed packet is dropped under its own counter and changes
//! nothing; a packet on one path never touches another session; echo
//! packets from a configured peer come back with XDP_TX.
use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use etherparse::PacketBuilder;
use xgw::bfd::{Config, Engine, Options, Path, Status, Uplink};
use xgw_common::maps::*;
use xgw_tests::{
    addrs::*,
    gateway::TestGateway,
    packet::{geneve::*, *},
    require_root, Netns,
};

const BFD_MAC: [u8; 6] = [0x00, 0x23, 0x20, 0x00, 0x00, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x09];
const ROUTER_IP: [u8; 4] = [203, 0, 113, 2];

/// A control packet per RFC 5880 section 4.1, field by field.
#[allow(clippy::too_many_arguments)]
fn ctrl(vers: u8, diag: u8, state: u8, flags: u8, mult: u8, len: u8, my: u32, your: u32) -> Vec<u8> {
    let mut v = vec![(vers << 5) | diag, (state << 6) | flags, mult, len];
    v.extend(my.to_be_bytes());
    v.extend(your.to_be_bytes());
    v.extend(10_000u32.to_be_bytes()); // Desired Min TX 10 ms
    v.extend(10_000u32.to_be_bytes()); // Required Min RX 10 ms
    v.extend(0u32.to_be_bytes());
    v
}

const DOWN: u8 = 1;
const INIT: u8 = 2;
const UP: u8 = 3;
const PEER_DISC: u32 = 0x0bad_cafe;

/// OVS's BFD inside Geneve: inner Ethernet to 00:23:20:00:00:01, IPv4
/// 169.254.1.1 -> 169.254.1.0, UDP 49152 -> 3784.
fn in_geneve(vni: u32, gflags: u8, ttl: u8, bfd: &[u8]) -> Vec<u8> {
    in_geneve_hdr(geneve_hdr(0, 0, gflags, 0x6558, vni), ttl, bfd)
}

/// The same inside any Geneve header (with its options).
fn in_geneve_hdr(mut g: Vec<u8>, ttl: u8, bfd: &[u8]) -> Vec<u8> {
    let mut inner = Vec::new();
    PacketBuilder::ethernet2(PEER_MAC, BFD_MAC)
        .ipv4([169, 254, 1, 1], [169, 254, 1, 0], ttl)
        .udp(49152, 3784)
        .write(&mut inner, bfd)
        .unwrap();
    g.extend(inner);
    let mut v = Vec::new();
    PacketBuilder::ethernet2(HV_MAC, GW_MAC).ipv4(HV_IP4, GW_IP4, 64).udp(59437, 6081).write(&mut v, &g).unwrap();
    v
}

fn single_hop(dst: [u8; 4], sport: u16, dport: u16, ttl: u8, payload: &[u8], src: [u8; 4]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(PEER_MAC, GW_MAC).ipv4(src, dst, ttl).udp(sport, dport).write(&mut v, payload).unwrap();
    v
}

struct Fixture {
    engine: Engine,
    gw: TestGateway,
    _ns: Netns,
}

/// The datapath plus an engine whose sockets live in a private namespace
/// (its `lo` is the "uplink": test_run packets never leave anyway).
fn fixture() -> Fixture {
    let ns = Netns::new("bfdx");
    ns.ok(&["ip", "addr", "add", "198.51.100.1/32", "dev", "lo"]);
    let mut gw = TestGateway::load(&["xgw_uplink"]);
    gw.set_uplink(uplink());
    let engine = ns
        .enter(|| Engine::start(&mut gw.ebpf, Uplink { ifname: "lo".into(), mac: GW_MAC }, Options { rt_priority: 0 }))
        .expect("engine");
    Fixture { engine, gw, _ns: ns }
}

#[allow(non_camel_case_types)]
type Uplink_ = xgw_common::maps::Uplink;

fn uplink() -> Uplink_ {
    Uplink_ { ifindex: 1, mtu: 1500, mac: GW_MAC, flags: UPLINK_HAS_IP4, _pad: 0, ip4: GW_IP4, ip6: [0; 16] }
}

fn tunnel(vni: u32) -> Path {
    Path::Geneve {
        ofport: 7,
        remote_ip: IpAddr::V4(Ipv4Addr::from(HV_IP4)),
        local_ip: IpAddr::V4(Ipv4Addr::from(GW_IP4)),
        vni,
        nexthop_mac: HV_MAC,
    }
}

const FAST: Config = Config { min_tx_ms: 1000, min_rx_ms: 1000, mult: 3, echo: false };

impl Fixture {
    fn status(&self, name: &str) -> Status {
        self.engine.status(Some(name)).pop().expect("session")
    }
    fn run(&self, pkt: &[u8]) -> u32 {
        test_run_on(self.gw.program("xgw_uplink"), pkt, 1).verdict
    }
    fn drops(&self) -> std::collections::BTreeMap<&'static str, u64> {
        xgw::bfd::drops(&self.gw.ebpf).unwrap()
    }
}

#[test]
fn ovs_geneve_bfd_completes_the_three_way_handshake_in_the_kernel() {
    require_root!();
    let f = fixture();
    f.engine.add("t1", tunnel(VNI), FAST).unwrap();
    let s = f.status("t1");
    assert_eq!((s.state, s.rx_packets), ("down", 0));
    let me = s.local_discriminator;
    assert_ne!(me, 0);

    // Peer Down (Your Discriminator 0) -> we go Init and learn its discriminator.
    assert_eq!(f.run(&in_geneve(VNI, 0, 255, &ctrl(1, 0, DOWN, 0, 3, 24, PEER_DISC, 0))), XDP_DROP);
    let s = f.status("t1");
    assert_eq!((s.state, s.remote_state, s.remote_discriminator, s.rx_packets), ("init", "down", PEER_DISC, 1));
    // Peer Up naming us -> Up. The OAM bit is accepted as Open vSwitch does.
    assert_eq!(f.run(&in_geneve(VNI, 0x80, 255, &ctrl(1, 0, UP, 0, 3, 24, PEER_DISC, me))), XDP_DROP);
    let s = f.status("t1");
    assert_eq!((s.state, s.remote_state, s.forwarding), ("up", "up", true));
    assert_eq!((s.remote_min_tx_ms, s.remote_min_rx_ms, s.remote_detect_mult), (10.0, 10.0, 3));
    // Peer signals Down -> Down, diagnostic 3.
    f.run(&in_geneve(VNI, 0, 255, &ctrl(1, 1, DOWN, 0, 3, 24, PEER_DISC, me)));
    let s = f.status("t1");
    assert_eq!(
        (s.state, s.diagnostic, s.remote_diagnostic),
        ("down", "Neighbor Signaled Session Down", "Control Detection Time Expired")
    );
    assert!(f.drops().values().all(|&n| n == 0), "{:?}", f.drops());
    // The kernel pushed each change through the ring buffer.
    let deadline = Instant::now() + Duration::from_secs(2);
    while f.engine.events() < 3 {
        assert!(Instant::now() < deadline, "events seen: {}", f.engine.events());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(xgw::bfd::counters(&f.gw.ebpf).unwrap().0, 3);
}

#[test]
fn malformed_control_packets_are_dropped_counted_and_change_nothing() {
    require_root!();
    let f = fixture();
    f.engine.add("t1", tunnel(VNI), FAST).unwrap();
    f.run(&in_geneve(VNI, 0, 255, &ctrl(1, 0, DOWN, 0, 3, 24, PEER_DISC, 0)));
    let me = f.status("t1").local_discriminator;
    let before = f.status("t1");
    assert_eq!(before.state, "init");
    let up = |flags: u8| ctrl(1, 0, UP, flags, 3, 24, PEER_DISC, me);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("version", in_geneve(VNI, 0, 255, &ctrl(2, 0, UP, 0, 3, 24, PEER_DISC, me))),
        ("length", in_geneve(VNI, 0, 255, &ctrl(1, 0, UP, 0, 3, 20, PEER_DISC, me))),
        ("truncated", in_geneve(VNI, 0, 255, &ctrl(1, 0, UP, 0, 3, 40, PEER_DISC, me))),
        ("truncated", in_geneve(VNI, 0, 255, &up(0)[..20])),
        ("detect_mult", in_geneve(VNI, 0, 255, &ctrl(1, 0, UP, 0, 0, 24, PEER_DISC, me))),
        ("multipoint", in_geneve(VNI, 0, 255, &up(0x01))),
        ("my_discriminator", in_geneve(VNI, 0, 255, &ctrl(1, 0, UP, 0, 3, 24, 0, me))),
        ("poll_and_final", in_geneve(VNI, 0, 255, &up(0x30))),
        ("your_discriminator_zero", in_geneve(VNI, 0, 255, &ctrl(1, 0, UP, 0, 3, 24, PEER_DISC, 0))),
        ("unknown_session", in_geneve(VNI, 0, 255, &ctrl(1, 0, UP, 0, 3, 24, PEER_DISC, me ^ 0x10000))),
        ("ttl", in_geneve(VNI, 0, 254, &up(0))),
        // A critical option present (C bit): Open vSwitch rejects it too.
        ("encapsulation", in_geneve(VNI, 0x40, 255, &up(0))),
        ("no_session_for_peer", in_geneve(VNI + 1, 0, 255, &up(0))),
    ];
    let mut auth = ctrl(1, 0, UP, 0x04, 3, 26, PEER_DISC, me);
    auth.extend([1, 2]);
    cases.push(("authentication", in_geneve(VNI, 0, 255, &auth)));
    for (reason, pkt) in &cases {
        let was = f.drops()[reason];
        assert_eq!(f.run(pkt), XDP_DROP, "{reason}");
        assert_eq!(f.drops()[reason], was + 1, "{reason}: {:?}", f.drops());
        let now = f.status("t1");
        assert_eq!(
            (now.state, now.rx_packets, now.remote_state),
            (before.state, before.rx_packets, before.remote_state),
            "{reason}"
        );
    }
    // Unchanged, the session still comes up on the next valid packet (Init + remote Init -> Up).
    f.run(&in_geneve(VNI, 0, 255, &ctrl(1, 0, INIT, 0, 3, 24, PEER_DISC, me)));
    assert_eq!(f.status("t1").state, "up");
}

/// The Geneve header around OVS's BFD is held to what decapsulation demands
/// of every packet (RFC 8926): a version we do not speak, another payload
/// protocol or an unknown critical option is dropped under the Geneve
/// reason before BFD reads a byte, and the session is untouched.
#[test]
fn bfd_inside_bad_geneve_is_dropped_by_the_geneve_checks() {
    require_root!();
    let f = fixture();
    f.engine.add("t1", tunnel(VNI), FAST).unwrap();
    f.run(&in_geneve(VNI, 0, 255, &ctrl(1, 0, DOWN, 0, 3, 24, PEER_DISC, 0)));
    let before = f.status("t1");
    let me = before.local_discriminator;
    let init = ctrl(1, 0, INIT, 0, 3, 24, PEER_DISC, me);
    let version = in_geneve_hdr(geneve_hdr(1, 0, 0, 0x6558, VNI), 255, &init);
    let protocol = in_geneve_hdr(geneve_hdr(0, 0, 0, 0x0800, VNI), 255, &init);
    let mut g = geneve_hdr(0, 2, 0, 0x6558, VNI);
    g.extend(option(0xffff, 0x80, &[0; 4]));
    let critical = in_geneve_hdr(g, 255, &init);
    for (reason, pkt) in
        [("geneve_version", &version), ("geneve_protocol", &protocol), ("geneve_critical_option", &critical)]
    {
        let was = f.gw.drops()[reason];
        assert_eq!(f.run(pkt), XDP_DROP, "{reason}");
        assert_eq!(f.gw.drops()[reason], was + 1, "{reason}: {:?}", f.gw.drops());
        let now = f.status("t1");
        assert_eq!((now.state, now.rx_packets), (before.state, before.rx_packets), "{reason}");
    }
    // The same packet in a valid header still brings the session up.
    f.run(&in_geneve(VNI, 0, 255, &init));
    assert_eq!(f.status("t1").state, "up");
}

#[test]
fn a_packet_on_one_path_never_touches_another_session() {
    require_root!();
    let f = fixture();
    f.engine.add("a", tunnel(VNI), FAST).unwrap();
    f.engine.add("b", tunnel(VNI + 1), FAST).unwrap();
    // The seed's redundant tunnel: same remote, same VNI. Refused, and "a" stays.
    let err = f.engine.add("dup", tunnel(VNI), FAST).unwrap_err().to_string();
    assert!(err.contains("\"a\""), "{err}");
    let a = f.status("a").local_discriminator;
    // B's path, A's discriminator: dropped, A untouched.
    assert_eq!(f.run(&in_geneve(VNI + 1, 0, 255, &ctrl(1, 0, UP, 0, 3, 24, PEER_DISC, a))), XDP_DROP);
    assert_eq!(f.drops()["unknown_session"], 1);
    let (sa, sb) = (f.status("a"), f.status("b"));
    assert_eq!((sa.rx_packets, sb.rx_packets, sa.state, sb.state), (0, 0, "down", "down"));
    // A flapping on its own path leaves B alone.
    f.run(&in_geneve(VNI, 0, 255, &ctrl(1, 0, DOWN, 0, 3, 24, PEER_DISC, 0)));
    assert_eq!((f.status("a").state, f.status("b").state), ("init", "down"));
    f.engine.remove("a").unwrap();
    assert!(f.engine.status(Some("a")).is_empty());
    // Removed: its packets are no one's now.
    assert_eq!(f.run(&in_geneve(VNI, 0, 255, &ctrl(1, 0, DOWN, 0, 3, 24, PEER_DISC, 0))), XDP_DROP);
    assert_eq!(f.drops()["no_session_for_peer"], 1);
}

#[test]
fn single_hop_control_needs_ttl_255_and_echo_is_reflected_for_configured_peers() {
    require_root!();
    let f = fixture();
    let path =
        Path::SingleHop { ifname: "lo".into(), peer_ip: Ipv4Addr::from(ROUTER_IP), local_ip: Ipv4Addr::from(GW_IP4) };
    f.engine.add("r", path.clone(), Config { echo: true, ..FAST }).unwrap();
    let down = ctrl(1, 0, DOWN, 0, 3, 24, PEER_DISC, 0);
    assert_eq!(f.run(&single_hop(GW_IP4, 49152, 3784, 254, &down, ROUTER_IP)), XDP_DROP);
    assert_eq!(f.drops()["ttl"], 1);
    assert_eq!(f.status("r").rx_packets, 0);
    assert_eq!(f.run(&single_hop(GW_IP4, 49152, 3784, 255, &down, ROUTER_IP)), XDP_DROP);
    assert_eq!(f.status("r").state, "init");
    // BFD from a router we have no session with is left to the kernel.
    assert_eq!(f.run(&single_hop(GW_IP4, 49152, 3784, 255, &down, [203, 0, 113, 3])), XDP_PASS);

    // FRR's echo: from its own address to its own address, UDP 3785.
    let payload = [0x01, 0x18, 0, 0, 0x10, 0xea, 0xcb, 0xce, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let echo = single_hop(ROUTER_IP, 3785, 3785, 255, &payload, ROUTER_IP);
    let run = test_run_on(f.gw.program("xgw_uplink"), &echo, 1);
    assert_eq!(run.verdict, XDP_TX);
    // Back to the router's MAC, from ours, TTL 254 with a valid checksum,
    // everything else untouched.
    let mut want = Vec::new();
    PacketBuilder::ethernet2(GW_MAC, PEER_MAC)
        .ipv4(ROUTER_IP, ROUTER_IP, 254)
        .udp(3785, 3785)
        .write(&mut want, &payload)
        .unwrap();
    assert_eq!(run.data, want);
    assert_eq!(xgw::bfd::counters(&f.gw.ebpf).unwrap().1, 1);
    // Not an echo coming home (to someone else's address): not ours to bounce.
    assert_eq!(f.run(&single_hop(GW_IP4, 3785, 3785, 255, &payload, ROUTER_IP)), XDP_PASS);
    // Echo off for the session: not reflected.
    f.engine.reconfigure("r", FAST).unwrap();
    assert_eq!(f.run(&echo), XDP_PASS);
    assert_eq!(xgw::bfd::counters(&f.gw.ebpf).unwrap().1, 1);
    // Echo on a tunnel is refused with the field named.
    let err = f.engine.add("t", tunnel(VNI), Config { echo: true, ..FAST }).unwrap_err().to_string();
    assert!(err.contains("echo"), "{err}");
}

/// Receive-clocked transmission: with the engine gone (its heartbeat
/// stale), the datapath answers an Up session's peer itself: the Geneve
/// frame comes back as Open vSwitch would send ours (outer addresses
/// swapped, TTL 64, UDP checksums 0, our MAC inside, our control packet),
/// at most once per 0.75 interval, and a Poll gets its Final at once.
#[test]
fn with_the_engine_gone_the_datapath_answers_an_up_peer_itself() {
    require_root!();
    let Fixture { engine, gw, _ns } = fixture();
    let fast = Config { min_tx_ms: 10, min_rx_ms: 10, mult: 3, echo: false };
    engine.add("t1", tunnel(VNI), fast).unwrap();
    let me = engine.status(Some("t1")).pop().unwrap().local_discriminator;
    let run = |pkt: &[u8]| test_run_on(gw.program("xgw_uplink"), pkt, 1);
    assert_eq!(run(&in_geneve(VNI, 0, 255, &ctrl(1, 0, DOWN, 0, 3, 24, PEER_DISC, 0))).verdict, XDP_DROP);
    let up = in_geneve(VNI, 0, 255, &ctrl(1, 0, UP, 0, 3, 24, PEER_DISC, me));
    assert_eq!(run(&up).verdict, XDP_DROP, "the engine is alive: it answers, not the datapath");
    // The engine advertises 10 ms once Up; then it leaves, sessions kept.
    let start = Instant::now();
    while engine.status(Some("t1")).pop().unwrap().tx_interval_ms != 10.0 {
        assert!(start.elapsed() < Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(run(&up).verdict, XDP_DROP);
    engine.leave();
    std::thread::sleep(Duration::from_millis(30));

    let answer = |flags: u8| {
        let mut inner = Vec::new();
        PacketBuilder::ethernet2(GW_MAC, BFD_MAC)
            .ipv4([169, 254, 1, 1], [169, 254, 1, 0], 255)
            .udp(49152, 3784)
            .write(&mut inner, &ctrl(1, 0, UP, flags, 3, 24, me, PEER_DISC))
            .unwrap();
        let mut g = geneve_hdr(0, 0, 0, 0x6558, VNI);
        g.extend(inner);
        let mut v = Vec::new();
        PacketBuilder::ethernet2(GW_MAC, HV_MAC).ipv4(GW_IP4, HV_IP4, 64).udp(59437, 6081).write(&mut v, &g).unwrap();
        // UDP checksums 0, outer and inner, as Open vSwitch sends them.
        let inner_udp = 14 + 20 + 8 + 8 + 14 + 20;
        for i in [14 + 20 + 6, 14 + 20 + 7, inner_udp + 6, inner_udp + 7] {
            v[i] = 0;
        }
        v
    };
    let r = run(&up);
    assert_eq!(r.verdict, XDP_TX);
    assert_eq!(r.data, answer(0));
    // Within 0.75 x 10 ms of that answer: nothing more, except a Final.
    assert_eq!(run(&up).verdict, XDP_DROP);
    let poll = in_geneve(VNI, 0, 255, &ctrl(1, 0, UP, 0x20, 3, 24, PEER_DISC, me));
    let r = run(&poll);
    assert_eq!((r.verdict, &r.data), (XDP_TX, &answer(0x10)));
    std::thread::sleep(Duration::from_millis(8));
    assert_eq!(run(&up).verdict, XDP_TX);
    // A peer saying Down is applied (the session goes Down), not answered.
    assert_eq!(run(&in_geneve(VNI, 0, 255, &ctrl(1, 1, DOWN, 0, 3, 24, PEER_DISC, me))).verdict, XDP_DROP);
    std::thread::sleep(Duration::from_millis(8));
    assert_eq!(run(&up).verdict, XDP_DROP, "the session is no longer Up");
}

/// Until the tunnel's next hop resolves there is no one to send to: the
/// engine sends nothing (a frame to 00:00:00:00:00:00 would be flooded by
/// the underlay) and says why; once the next hop is known it sends.
#[test]
fn no_frame_leaves_before_the_next_hop_resolves() {
    require_root!();
    let f = fixture();
    let Path::Geneve { ofport, remote_ip, local_ip, vni, .. } = tunnel(VNI) else { unreachable!() };
    let unresolved = Path::Geneve { ofport, remote_ip, local_ip, vni, nexthop_mac: [0; 6] };
    f.engine.add("t1", unresolved, Config { min_tx_ms: 10, min_rx_ms: 10, mult: 3, echo: false }).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let s = f.status("t1");
    assert!(s.error.as_deref().is_some_and(|e| e.contains("next hop is unresolved")), "{s:?}");
    f.engine.set_nexthop("t1", HV_MAC).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(f.status("t1").error, None);
}
