//! Single-hop BFD (RFC 5881) against FRR's bfdd at 10 ms with echo mode on:
//! both sides Up, FRR's echo packets reflected by the XDP program (its
//! counter and FRR's echo receive counter rise), and detection works both
//! ways when the link is cut.
//!
//!   gw (xgw: XDP on ul, BFD engine) [ul 198.51.100.1] ---- [f0 198.51.100.2] frr (zebra + bfdd)
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use xgw::bfd::{Config, Engine, Options, Path, Status, Uplink};
use xgw_common::maps::{self, *};
use xgw_tests::{
    frr::{Frr, FrrBfd},
    gateway::TestGateway,
    require_root, Netns, Veth,
};

const GW_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0, 1];

struct Topology {
    engine: Engine,
    dp: TestGateway,
    frr: Frr,
    gw: Netns,
    _r: Netns,
}

fn topology() -> Topology {
    let gw = Netns::new("xgw");
    let r = Netns::new("frr");
    gw.disable_ipv6();
    r.disable_ipv6();
    Veth::new(&gw, "ul", "198.51.100.1/24", &r, "f0", "198.51.100.2/24");
    gw.ok(&["ip", "link", "set", "ul", "address", &xgw_tests::ovs::mac_str(GW_MAC)]);
    let mut dp = TestGateway::load(&["xgw_uplink", "xgw_pass"]);
    dp.set_uplink(maps::Uplink {
        ifindex: gw.ifindex("ul"),
        mtu: 1500,
        mac: GW_MAC,
        flags: UPLINK_HAS_IP4,
        _pad: 0,
        ip4: [198, 51, 100, 1],
        ip6: [0; 16],
    });
    dp.attach(&gw, "xgw_uplink", "ul");
    // Reflected echoes (XDP_TX) reach FRR's veth end only if it runs XDP.
    dp.attach(&r, "xgw_pass", "f0");
    let engine = gw
        .enter(|| Engine::start(&mut dp.ebpf, Uplink { ifname: "ul".into(), mac: GW_MAC }, Options::default()))
        .expect("bfd engine");
    engine
        .add(
            "r1",
            Path::SingleHop {
                ifname: "ul".into(),
                peer_ip: Ipv4Addr::new(198, 51, 100, 2),
                local_ip: Ipv4Addr::new(198, 51, 100, 1),
            },
            Config { min_tx_ms: 10, min_rx_ms: 10, mult: 3, echo: true },
        )
        .expect("add session");
    let frr = Frr::start(
        &r,
        &FrrBfd {
            peer: "198.51.100.1".into(),
            local: "198.51.100.2".into(),
            ifname: "f0".into(),
            tx_ms: 10,
            rx_ms: 10,
            mult: 3,
            echo_ms: Some(10),
        },
    );
    Topology { engine, dp, frr, gw, _r: r }
}

impl Topology {
    fn ours(&self) -> Status {
        self.engine.status(Some("r1")).pop().expect("session")
    }
    fn frr_status(&self) -> String {
        self.frr.peer("198.51.100.1")["status"].as_str().unwrap_or("").to_string()
    }
    fn echo_reflected(&self) -> u64 {
        xgw::bfd::counters(&self.dp.ebpf).unwrap().1
    }
    fn frr_echo_in(&self) -> u64 {
        self.frr.counters("198.51.100.1")["echo-packet-input"].as_u64().unwrap_or(0)
    }
    fn frr_downs(&self) -> u64 {
        self.frr.counters("198.51.100.1")["session-down"].as_u64().expect("FRR counters: session-down")
    }
    fn wait(&self, what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        while !ok() {
            assert!(
                start.elapsed() < timeout,
                "{what} not reached in {timeout:?}: ours {:?}\nFRR {}\n{}",
                self.ours(),
                self.frr.peer("198.51.100.1"),
                self.frr.log()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        start.elapsed()
    }
}

#[test]
fn xgw_and_frr_bfdd_single_hop_10ms_with_echo() {
    require_root!();
    let t = topology();
    t.wait("both Up", Duration::from_secs(15), || t.ours().forwarding && t.frr_status() == "up");
    let s = t.ours();
    assert_eq!((s.tx_interval_ms, s.detect_mult), (10.0, 3), "{s:?}");

    // FRR's echoes come back through XDP_TX and FRR counts them.
    let (r0, e0) = (t.echo_reflected(), t.frr_echo_in());
    std::thread::sleep(Duration::from_secs(1));
    let (r1, e1) = (t.echo_reflected(), t.frr_echo_in());
    eprintln!("in 1 s: xgw reflected {} echoes, FRR received {} back", r1 - r0, e1 - e0);
    assert!(r1 - r0 >= 20, "xgw reflected only {} echoes in 1 s", r1 - r0);
    assert!(e1 - e0 >= 20, "FRR got back only {} echoes in 1 s", e1 - e0);
    // Steady: the session came Up once and stayed Up on both sides. (Each
    // side sending at the pace the other advertised; a packet scheduled at
    // the slow pre-Up interval made FRR time us out right after Up, over
    // and over, and the session was only Up here by luck.)
    std::thread::sleep(Duration::from_secs(1));
    let flaps = t.ours().flap_count;
    let frr = t.frr.peer("198.51.100.1");
    assert_eq!((t.ours().state, flaps, t.frr_downs()), ("up", 1, 0), "{:?}\nFRR {frr}\n{}", t.ours(), t.frr.log());
    assert!(xgw::bfd::drops(&t.dp.ebpf).unwrap().values().all(|&n| n == 0), "{:?}", xgw::bfd::drops(&t.dp.ebpf));

    // Cut the link on FRR's side: xgw detects within 3 x 10 ms (+ slack for
    // this test's polling and the engine's wakeup), FRR within its own.
    let detect = Duration::from_millis(s.detect_time_ms as u64);
    t.gw.ok(&["ip", "link", "set", "ul", "down"]);
    let ours = t.wait("xgw Down", Duration::from_secs(2), || t.ours().state == "down");
    let frr = t.wait("FRR Down", Duration::from_secs(3), || t.frr_status() == "down");
    eprintln!("after the cut: xgw Down in {ours:?} (detect time {detect:?}), FRR Down {frr:?} later");
    assert_eq!(t.ours().diagnostic, "Control Detection Time Expired");
    assert!(ours <= detect + Duration::from_millis(25), "xgw took {ours:?}");
    assert_eq!(t.ours().flap_count, flaps + 1);

    t.gw.ok(&["ip", "link", "set", "ul", "up"]);
    t.wait("both Up again", Duration::from_secs(15), || t.ours().forwarding && t.frr_status() == "up");
}
