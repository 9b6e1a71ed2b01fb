//! BFD over Geneve against a real Open vSwitch (Debian openvswitch-switch,
//! userspace datapath, `bfd:enable=true` on its Geneve port): both sides
//! come Up; when the underlay link is cut both sides go Down within the
//! detection time (diagnostic 1); when it is restored both come Up again.
//!
//!   gw (xgw: XDP on ul, BFD engine) [ul] ---- [ul0] OVS br-phy / br-int gnv0
use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use xgw::bfd::{Config, Engine, Options, Path, Status, Uplink};
use xgw_common::maps::{self, *};
use xgw_tests::{gateway::TestGateway, require_root, Geneve, Netns, OvsHypervisor, Veth};

const VNI: u32 = 5001;
const TUNNEL: u16 = 10;
const GW_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0, 1];
const HV_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0, 2];
/// OVS: min_rx, min_tx, mult (ms). Detection time 3 x 100 ms on both sides.
const INTERVAL_MS: u32 = 100;
const MULT: u8 = 3;

struct Topology {
    // Drop order: the engine stops, the datapath detaches, OVS stops, namespaces go.
    engine: Engine,
    dp: TestGateway,
    ovs: OvsHypervisor,
    gw: Netns,
}

fn topology() -> Topology {
    let gw = Netns::new("xgw");
    let hv = Netns::new("ovs");
    Veth::new(&gw, "ul", "198.51.100.1/24", &hv, "ul0", "");
    gw.ok(&["ip", "link", "set", "ul", "address", &xgw_tests::ovs::mac_str(GW_MAC)]);
    let ovs = OvsHypervisor::builder(hv, "ul0").ip4("198.51.100.2/24").underlay_mac(HV_MAC).start();
    ovs.add_geneve("gnv0", &Geneve::new("198.51.100.1", VNI).bfd(INTERVAL_MS, INTERVAL_MS, MULT as u32));

    let mut dp = TestGateway::load(&["xgw_uplink", "xgw_pass"]);
    dp.in_netns(&gw);
    let ul = gw.ifindex("ul");
    dp.set_uplink(maps::Uplink {
        ifindex: ul,
        mtu: 1500,
        mac: GW_MAC,
        flags: UPLINK_HAS_IP4,
        _pad: 0,
        ip4: [198, 51, 100, 1],
        ip6: [0; 16],
    });
    dp.add_tunnel(
        TUNNEL as u32,
        Tunnel { remote: ipv4_mapped([198, 51, 100, 2]), nexthop_mac: HV_MAC, flags: 0, _pad: 0, vni: VNI },
    );
    dp.attach(&gw, "xgw_uplink", "ul");
    // OVS reads its port through AF_PACKET: nothing needed on ul0.
    let engine = gw
        .enter(|| Engine::start(&mut dp.ebpf, Uplink { ifname: "ul".into(), mac: GW_MAC }, Options::default()))
        .expect("bfd engine");
    engine
        .add(
            "gnv0",
            Path::Geneve {
                ofport: TUNNEL,
                remote_ip: IpAddr::from([198, 51, 100, 2]),
                local_ip: IpAddr::from([198, 51, 100, 1]),
                vni: VNI,
                nexthop_mac: ovs.underlay_mac(),
            },
            Config { min_tx_ms: INTERVAL_MS, min_rx_ms: INTERVAL_MS, mult: MULT, echo: false },
        )
        .expect("add session");
    Topology { engine, dp, ovs, gw }
}

impl Topology {
    fn ours(&self) -> Status {
        self.engine.status(Some("gnv0")).pop().expect("session")
    }

    fn wait_ours(&self, state: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.ours().state == state {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "xgw not {state} after {timeout:?}: {:?}\n{}",
                self.ours(),
                self.ovs.bfd_show(Some("gnv0"))
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn wait_ovs_local(&self, state: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.ovs.bfd_states("gnv0").0 == state {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "OVS not {state} after {timeout:?}:\n{}",
                self.ovs.bfd_show(Some("gnv0"))
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn wait_both_up(&self) {
        self.ovs.wait_bfd_state("gnv0", "up", Duration::from_secs(15));
        self.wait_ours("up", Duration::from_secs(5));
        // The database column OVS users read, too (written lazily).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = self.ovs.bfd_status("gnv0");
            if st.get("state").map(String::as_str) == Some("up")
                && st.get("remote_state").map(String::as_str) == Some("up")
            {
                break;
            }
            assert!(Instant::now() < deadline, "bfd_status: {st:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Our view of the remote catches up with its next packet.
        let deadline = Instant::now() + Duration::from_secs(3);
        while !self.ours().forwarding {
            assert!(Instant::now() < deadline, "{:?}", self.ours());
            std::thread::sleep(Duration::from_millis(10));
        }
        let s = self.ours();
        assert_eq!((s.tx_interval_ms, s.detect_time_ms), (100.0, 300.0), "{s:?}");
    }
}

#[test]
fn xgw_and_open_vswitch_bfd_up_down_up_over_geneve() {
    require_root!();
    let t = topology();
    t.wait_both_up();
    let show = t.ovs.bfd_show(Some("gnv0"));
    let ours = t.ours();
    assert!(
        show.contains(&format!("Remote Discriminator: 0x{:x}", ours.local_discriminator))
            || show.contains(&format!("Remote Discriminator: {}", ours.local_discriminator)),
        "OVS does not know our discriminator {:#x}:\n{show}",
        ours.local_discriminator
    );
    // Steady state: packets keep flowing at the negotiated 100 ms, no flap.
    let before = t.ours();
    std::thread::sleep(Duration::from_secs(2));
    let after = t.ours();
    assert_eq!((after.state, after.flap_count), ("up", before.flap_count), "{after:?}");
    let (rx, tx) = (after.rx_packets - before.rx_packets, after.tx_packets - before.tx_packets);
    eprintln!("2 s Up at 100 ms: xgw received {rx}, sent {tx}");
    assert!((16..=30).contains(&rx) && (16..=30).contains(&tx), "rx {rx} tx {tx} in 2 s");
    assert!(xgw::bfd::drops(&t.dp.ebpf).unwrap().values().all(|&n| n == 0), "{:?}", xgw::bfd::drops(&t.dp.ebpf));

    // Cut the underlay.
    let cut = Instant::now();
    t.gw.ok(&["ip", "link", "set", "ul", "down"]);
    let ours_down = t.wait_ours("down", Duration::from_secs(2));
    let ovs_down = t.wait_ovs_local("down", Duration::from_secs(3));
    let s = t.ours();
    eprintln!("after the cut: xgw Down in {ours_down:?}, OVS Down in {ovs_down:?} (detect time 300 ms); {s:?}");
    assert_eq!((s.diagnostic, s.remote_state), ("Control Detection Time Expired", "down"));
    // Within mult x interval after the last packet received: the last one came
    // at most one interval before the cut; 50 ms of slack for polling here.
    assert!(ours_down <= Duration::from_millis(300 + 50), "xgw took {ours_down:?}");
    assert!(cut.elapsed() < Duration::from_secs(3));
    let flaps = s.flap_count;

    // Restore: Up again on both sides.
    t.gw.ok(&["ip", "link", "set", "ul", "up"]);
    t.wait_both_up();
    assert_eq!(t.ours().flap_count, flaps + 1);
    let _ = &t.gw;
}
