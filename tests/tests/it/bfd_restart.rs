//! BFD sessions survive a controller restart (issue 6). Gateway A's engine
//! runs alone in a child process (`xgw-bfd-engine`) on pinned maps; its XDP
//! program stays attached (held by this test, as the daemon's pinned link
//! holds it). A has two sessions over Geneve:
//!
//! - with Open vSwitch, 100 ms tx / 1000 ms rx / mult 3 (OVS's detection
//!   time for A is then 3 s);
//! - with a second xgw B at 3 x 100 ms (B's detection time for A: 300 ms).
//!
//! The child is killed with SIGKILL and started again: the new engine adopts
//! both sessions from the pinned maps (same discriminators, still Up) and
//! neither OVS (`bfd_status:flap_count`) nor B nor A (the datapath's state
//! changes and the detection timer's Down declarations, read from the map)
//! records a flap. A second, longer gap (1.5 s, five times B's detection
//! time) is bridged by the datapath answering B's packets itself while the
//! heartbeat is stale (receive-clocked transmission).
//!
//!   A (XDP, engine in a child) [ul .1] --+
//!                                        +-- br0 (ns sw) --+-- [ul0 .2] OVS gnv0
//!                                                          +-- [ul .3] B (XDP + engine)
use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use aya::maps::{Array, MapData};
use nix::sys::signal::Signal;
use xgw::bfd::{Config, Engine, Options, Path, Status, Uplink};
use xgw_common::{
    bfd::State,
    maps::{self, *},
};
use xgw_tests::{gateway::TestGateway, require_root, BpfFs, Geneve, Netns, OvsHypervisor, Process, Veth};

const VNI: u32 = 5001;
const A_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0, 1];
const OVS_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0, 2];
const B_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0, 3];
const A_IP: [u8; 4] = [198, 51, 100, 1];
const OVS_IP: [u8; 4] = [198, 51, 100, 2];
const B_IP: [u8; 4] = [198, 51, 100, 3];

struct Topology {
    // Drop order: engines, datapaths, OVS, namespaces, bpffs.
    child: Option<Process>,
    b_engine: Engine,
    _b_dp: TestGateway,
    a_dp: TestGateway,
    ovs: OvsHypervisor,
    a: Netns,
    _b: Netns,
    _sw: Netns,
    pins: BpfFs,
}

/// A's sessions as the child is told them: OVS in slot 0, B in slot 1.
fn a_sessions() -> String {
    let ovs = Path::Geneve {
        ofport: 10,
        remote_ip: IpAddr::from(OVS_IP),
        local_ip: IpAddr::from(A_IP),
        vni: VNI,
        nexthop_mac: OVS_MAC,
    };
    let b = Path::Geneve {
        ofport: 11,
        remote_ip: IpAddr::from(B_IP),
        local_ip: IpAddr::from(A_IP),
        vni: VNI,
        nexthop_mac: B_MAC,
    };
    serde_json::json!([
        ["ovs", ovs, Config { min_tx_ms: 100, min_rx_ms: 1000, mult: 3, echo: false }],
        ["b", b, Config { min_tx_ms: 100, min_rx_ms: 100, mult: 3, echo: false }],
    ])
    .to_string()
}

fn topology() -> Topology {
    let sw = Netns::new("sw");
    let a = Netns::new("gwa");
    let hv = Netns::new("ovs");
    let b = Netns::new("gwb");
    Veth::new(&a, "ul", "198.51.100.1/24", &sw, "pa", "");
    Veth::new(&hv, "ul0", "", &sw, "po", "");
    Veth::new(&b, "ul", "198.51.100.3/24", &sw, "pb", "");
    sw.ok(&["ip", "link", "add", "br0", "type", "bridge"]);
    for p in ["pa", "po", "pb"] {
        sw.ok(&["ip", "link", "set", p, "master", "br0"]);
    }
    sw.ok(&["ip", "link", "set", "br0", "up"]);
    a.ok(&["ip", "link", "set", "ul", "address", &xgw_tests::ovs::mac_str(A_MAC)]);
    b.ok(&["ip", "link", "set", "ul", "address", &xgw_tests::ovs::mac_str(B_MAC)]);

    let ovs = OvsHypervisor::builder(hv, "ul0").ip4("198.51.100.2/24").underlay_mac(OVS_MAC).start();
    ovs.add_geneve("gnv0", &Geneve::new("198.51.100.1", VNI).bfd(1000, 100, 3));

    let pins = BpfFs::new("bfdpin");
    let mut a_dp = TestGateway::load_pinned(&pins.dir, &["xgw_uplink", "xgw_pass"]);
    a_dp.set_uplink(maps::Uplink {
        ifindex: a.ifindex("ul"),
        mtu: 1500,
        mac: A_MAC,
        flags: UPLINK_HAS_IP4,
        _pad: 0,
        ip4: A_IP,
        ip6: [0; 16],
    });
    a_dp.attach(&a, "xgw_uplink", "ul");
    // A's XDP_TX answers reach the bridge only if its veth end runs XDP.
    a_dp.attach(&sw, "xgw_pass", "pa");

    let mut b_dp = TestGateway::load(&["xgw_uplink"]);
    b_dp.set_uplink(maps::Uplink {
        ifindex: b.ifindex("ul"),
        mtu: 1500,
        mac: B_MAC,
        flags: UPLINK_HAS_IP4,
        _pad: 0,
        ip4: B_IP,
        ip6: [0; 16],
    });
    b_dp.attach(&b, "xgw_uplink", "ul");
    let b_engine = b
        .enter(|| Engine::start(&mut b_dp.ebpf, Uplink { ifname: "ul".into(), mac: B_MAC }, Options::default()))
        .expect("engine B");
    b_engine
        .add(
            "a",
            Path::Geneve {
                ofport: 10,
                remote_ip: IpAddr::from(A_IP),
                local_ip: IpAddr::from(B_IP),
                vni: VNI,
                nexthop_mac: A_MAC,
            },
            Config { min_tx_ms: 100, min_rx_ms: 100, mult: 3, echo: false },
        )
        .expect("add on B");
    let mut t = Topology { child: None, b_engine, _b_dp: b_dp, a_dp, ovs, a, _b: b, _sw: sw, pins };
    t.start_child();
    t
}

/// What A's datapath holds for one session (read from the pinned map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kernel {
    disc: u32,
    state: u8,
    remote_state: u8,
    changes: u32,
    down_seq: u32,
    last_tx_ns: u64,
    xdp_tx: u64,
}

impl Topology {
    fn start_child(&mut self) {
        let bin = env!("CARGO_BIN_EXE_xgw-bfd-engine");
        let pins = self.pins.dir.to_str().unwrap().to_string();
        self.child = Some(self.a.spawn(&[bin, &pins, "ul", &xgw_tests::ovs::mac_str(A_MAC), &a_sessions()]));
    }

    fn kill_child(&mut self) {
        let child = self.child.take().expect("child running");
        child.signal(Signal::SIGKILL);
        assert!(child.wait(Duration::from_secs(5)).is_some(), "the engine did not die");
    }

    fn kernel(&self, slot: u32) -> Kernel {
        let m: Array<&MapData, BfdSession> = Array::try_from(self.a_dp.ebpf.map(names::BFD_SESSIONS).unwrap()).unwrap();
        let s = m.get(&slot, 0).unwrap();
        Kernel {
            disc: s.ctl_local_disc,
            state: s.state,
            remote_state: s.remote_state,
            changes: s.changes,
            down_seq: s.ctl_down_seq,
            last_tx_ns: s.ctl_last_tx_ns,
            xdp_tx: s.xdp_tx_packets,
        }
    }

    fn b(&self) -> Status {
        self.b_engine.status(Some("a")).pop().unwrap()
    }

    fn ovs_flaps(&self) -> (String, u64) {
        let st = self.ovs.bfd_status("gnv0");
        (
            st.get("state").cloned().unwrap_or_default(),
            st.get("flap_count").and_then(|f| f.parse().ok()).unwrap_or(u64::MAX),
        )
    }

    fn all_up(&self) -> bool {
        let up = State::Up as u8;
        let (k0, k1) = (self.kernel(0), self.kernel(1));
        k0.state == up
            && k0.remote_state == up
            && k1.state == up
            && k1.remote_state == up
            && self.b().forwarding
            && self.ovs_flaps().0 == "up"
    }

    /// Everything that moves on a flap, on all three sides.
    fn flap_marks(&self) -> (Kernel, Kernel, u64, u64) {
        let (k0, k1) = (self.kernel(0), self.kernel(1));
        (
            Kernel { last_tx_ns: 0, xdp_tx: 0, ..k0 },
            Kernel { last_tx_ns: 0, xdp_tx: 0, ..k1 },
            self.b().flap_count,
            self.ovs_flaps().1,
        )
    }

    /// Restarts A's engine after `gap`; returns how long A sent nothing
    /// itself on the B session (the heartbeat's gap).
    fn restart(&mut self, gap: Duration) -> Duration {
        let before = self.kernel(1).last_tx_ns;
        self.kill_child();
        let killed = Instant::now();
        // The engine may have sent once more between the read and the kill.
        let last = self.kernel(1).last_tx_ns.max(before);
        std::thread::sleep(gap.saturating_sub(killed.elapsed()));
        self.start_child();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.kernel(1).last_tx_ns == last {
            assert!(Instant::now() < deadline, "the new engine sends nothing");
            std::thread::sleep(Duration::from_millis(1));
        }
        Duration::from_nanos(self.kernel(1).last_tx_ns - last)
    }
}

#[test]
fn sessions_survive_a_sigkill_restart_of_the_engine() {
    require_root!();
    let mut t = topology();
    let start = Instant::now();
    while !t.all_up() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not Up: {:?} {:?}\nB {:?}\n{}",
            t.kernel(0),
            t.kernel(1),
            t.b(),
            t.ovs.bfd_show(None)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // OVS writes bfd_status lazily; let every side settle at its pace.
    std::thread::sleep(Duration::from_secs(2));
    assert!(t.all_up());
    let marks = t.flap_marks();
    let ovs_up_flaps = marks.3;
    assert_eq!(t.kernel(0).xdp_tx + t.kernel(1).xdp_tx, 0, "the datapath answered while the engine was alive");
    // (Packets of a peer that came up before the child added its session
    // are dropped as no_session_for_peer: counted from here on.)
    let drops = xgw::bfd::drops(&t.a_dp.ebpf).unwrap();

    // 1. Killed and started again at once: adopted, nothing changes.
    let gap = t.restart(Duration::ZERO);
    std::thread::sleep(Duration::from_secs(2));
    let after = t.flap_marks();
    eprintln!(
        "restart: A silent on the B session for {gap:?}; kernel {:?} / {:?}, B flaps {}, OVS flaps {}",
        after.0, after.1, after.2, after.3
    );
    assert_eq!(after, marks, "a flap across the restart:\nB {:?}\n{}", t.b(), t.ovs.bfd_show(None));
    assert!(t.all_up());

    // 2. A gap five times B's detection time: the datapath answers B.
    let xdp_before = t.kernel(1).xdp_tx;
    let gap = t.restart(Duration::from_millis(1500));
    let answered = t.kernel(1).xdp_tx - xdp_before;
    std::thread::sleep(Duration::from_secs(2));
    let after = t.flap_marks();
    eprintln!("1.5 s without an engine: A's datapath answered B {answered} times (heartbeat gap {gap:?}); B flaps {}, OVS flaps {}", after.2, after.3);
    assert_eq!(after, marks, "a flap across the long gap:\nB {:?}\n{}", t.b(), t.ovs.bfd_show(None));
    // B sends every 75-100 ms; the datapath starts answering once the
    // heartbeat is 125 ms old and answers at most every 75 ms. The gap is
    // the one measured (a loaded machine restarts the engine later than
    // asked): 8..=22 answers for exactly 1.5 s.
    let g = gap.as_secs_f64();
    let expected = (((g - 0.125) / 0.1 * 0.8) as u64)..=((g / 0.075).ceil() as u64 + 2);
    assert!(expected.contains(&answered), "answered {answered} times in a {g:.2} s gap, expected {expected:?}");
    assert_eq!(t.ovs_flaps().1, ovs_up_flaps);
    // The engine is back: the datapath stops answering.
    let x = t.kernel(1).xdp_tx;
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(t.kernel(1).xdp_tx, x, "the datapath still answers with the engine running");
    assert_eq!(xgw::bfd::drops(&t.a_dp.ebpf).unwrap(), drops, "packets dropped across the restarts");
}
