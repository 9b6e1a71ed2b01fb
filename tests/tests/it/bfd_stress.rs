//! Two xgw gateways back to back, BFD over Geneve at 3 x 10 ms, for 60 s
//! while both cores are kept busy by ordinary-priority CPU hogs: no flap.
//! The engines' transmit threads run at SCHED_FIFO, so the hogs cannot
//! delay them; detection at 30 ms would catch any delay above ~20 ms.
//! `XGW_BFD_STRESS_SECS` shortens or lengthens the run;
//! `XGW_BFD_RT_PRIORITY=0` runs the engines at ordinary priority, to see
//! what SCHED_FIFO buys (the test then reports the flaps it fails on).
//!
//!   gw1 (XDP + engine) [ul 198.51.100.1] ---- [ul 198.51.100.2] gw2 (XDP + engine)
use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use xgw::bfd::{Config, Engine, Options, Path, Status, Uplink};
use xgw_common::maps::{self, *};
use xgw_tests::{gateway::TestGateway, require_root, Netns, Process, Veth};

const VNI: u32 = 5001;

struct Gw {
    engine: Engine,
    dp: TestGateway,
    _ns: Netns,
}

fn gateway(ns: Netns, mac: [u8; 6], ip: [u8; 4], peer_mac: [u8; 6], peer_ip: [u8; 4]) -> Gw {
    ns.ok(&["ip", "link", "set", "ul", "address", &xgw_tests::ovs::mac_str(mac)]);
    let mut dp = TestGateway::load(&["xgw_uplink"]);
    dp.set_uplink(maps::Uplink {
        ifindex: ns.ifindex("ul"),
        mtu: 1500,
        mac,
        flags: UPLINK_HAS_IP4,
        _pad: 0,
        ip4: ip,
        ip6: [0; 16],
    });
    dp.attach(&ns, "xgw_uplink", "ul");
    let engine =
        ns.enter(|| Engine::start(&mut dp.ebpf, Uplink { ifname: "ul".into(), mac }, options())).expect("bfd engine");
    engine
        .add(
            "peer",
            Path::Geneve {
                ofport: 10,
                remote_ip: IpAddr::from(peer_ip),
                local_ip: IpAddr::from(ip),
                vni: VNI,
                nexthop_mac: peer_mac,
            },
            Config { min_tx_ms: 10, min_rx_ms: 10, mult: 3, echo: false },
        )
        .expect("add");
    Gw { engine, dp, _ns: ns }
}

fn options() -> Options {
    let rt = std::env::var("XGW_BFD_RT_PRIORITY").ok().and_then(|s| s.parse().ok());
    Options { rt_priority: rt.unwrap_or(Options::default().rt_priority) }
}

impl Gw {
    fn status(&self) -> Status {
        self.engine.status(Some("peer")).pop().unwrap()
    }
}

#[test]
fn two_gateways_at_3x10ms_do_not_flap_under_cpu_hogs() {
    require_root!();
    let secs: u64 = std::env::var("XGW_BFD_STRESS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let a = Netns::new("gwa");
    let b = Netns::new("gwb");
    Veth::new(&a, "ul", "198.51.100.1/24", &b, "ul", "198.51.100.2/24");
    let (ma, mb) = ([0x02, 0x00, 0x5e, 0x10, 0, 1], [0x02, 0x00, 0x5e, 0x10, 0, 2]);
    let g1 = gateway(a, ma, [198, 51, 100, 1], mb, [198, 51, 100, 2]);
    let g2 = gateway(b, mb, [198, 51, 100, 2], ma, [198, 51, 100, 1]);
    let start = Instant::now();
    while !(g1.status().forwarding && g2.status().forwarding) {
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}\n{:?}", g1.status(), g2.status());
        std::thread::sleep(Duration::from_millis(10));
    }
    let (f1, f2) = (g1.status().flap_count, g2.status().flap_count);
    let (t1, t2) = (g1.status().tx_packets, g2.status().tx_packets);

    // One busy loop per core, ordinary priority (nice 0).
    let hogs = Process::cpu_hogs();
    let cores = hogs.len();
    let run = Duration::from_secs(secs);
    let t0 = Instant::now();
    while t0.elapsed() < run {
        std::thread::sleep(Duration::from_millis(200));
        let (s1, s2) = (g1.status(), g2.status());
        assert!(
            s1.flap_count == f1 && s2.flap_count == f2,
            "flap after {:?} under CPU hogs:\n{s1:?}\n{s2:?}",
            t0.elapsed()
        );
    }
    drop(hogs);
    let (s1, s2) = (g1.status(), g2.status());
    let sent = (s1.tx_packets - t1, s2.tx_packets - t2);
    eprintln!(
        "{secs} s at 3 x 10 ms with {cores} CPU hogs: flaps {} / {}, packets sent {} / {} ({:.0} / {:.0} per s)",
        s1.flap_count - f1,
        s2.flap_count - f2,
        sent.0,
        sent.1,
        sent.0 as f64 / secs as f64,
        sent.1 as f64 / secs as f64
    );
    assert_eq!((s1.state, s2.state), ("up", "up"));
    // 10 ms with 75-100 % jitter: 100-133 packets per second.
    for n in [sent.0, sent.1] {
        assert!(n >= 95 * secs && n <= 140 * secs, "sent {n} in {secs} s");
    }
    assert!(xgw::bfd::drops(&g1.dp.ebpf).unwrap().values().all(|&n| n == 0));
    assert!(xgw::bfd::drops(&g2.dp.ebpf).unwrap().values().all(|&n| n == 0));
}
