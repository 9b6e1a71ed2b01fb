//! Program cost of BFD receive in `xgw_uplink`: the sessions are the real
//! engine's (its sockets in a namespace of its own), brought Up through the
//! datapath by a three-way handshake of test_run packets.
//!
//! Every timed call gets the same input, so the session must be in a state
//! where the same packet takes the same, full path each time: the session
//! is Up and the packet says Up naming us (no state change, no event), and
//! the engine's heartbeat is fresh, so the datapath does not answer in the
//! controller's place (that answer is rate-limited to one per interval, so
//! a loop would time mostly the cheaper refusal). The intervals are 60 s
//! so that neither the engine's detection timer (3 x 60 s) nor a stale
//! heartbeat (1.25 x 60 s) can fire between or during runs; the receive
//! path does the same work whatever the numbers. `measure` checks around
//! every run that this held: still Up, counters moved by exactly the
//! packets sent, nothing dropped.
use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use etherparse::PacketBuilder;
use xgw::bfd::{Config, Engine, Options, Path, Status, Uplink};
use xgw_tests::{
    gateway::TestGateway,
    netns::Netns,
    packet::{geneve::geneve_hdr, test_run_on, XDP_DROP},
};

use crate::veth::{GW_IP, GW_MAC, HV_IP, HV_MAC, TUNNEL, VNI};

/// The single-hop peer (a router on the uplink's segment).
const ROUTER_IP: [u8; 4] = [198, 51, 100, 3];
const ROUTER_MAC: [u8; 6] = [0x02, 0, 0x5e, 0x10, 0, 3];
/// Open vSwitch's BFD destination MAC inside Geneve.
const OVS_BFD_MAC: [u8; 6] = [0x00, 0x23, 0x20, 0x00, 0x00, 0x01];
const PEER_DISC: u32 = 0x0bad_cafe;
const INTERVAL_US: u32 = 60_000_000;
const SLOW: Config = Config { min_tx_ms: 60_000, min_rx_ms: 60_000, mult: 3, echo: false };

/// Which receive path a row measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// RFC 5881 control packet, UDP 3784, TTL 255, from the router.
    SingleHop,
    /// Open vSwitch's BFD inside Geneve on the bench's tunnel.
    Geneve,
    /// The router's echo (UDP 3785, its own address to itself): XDP_TX.
    Echo,
}

/// A control packet per RFC 5880 section 4.1: version 1, no diagnostic,
/// detect multiplier 3, 60 s intervals, no echo.
fn control(state: u8, my: u32, your: u32) -> Vec<u8> {
    let mut v = vec![1 << 5, state << 6, 3, 24];
    v.extend(my.to_be_bytes());
    v.extend(your.to_be_bytes());
    v.extend(INTERVAL_US.to_be_bytes());
    v.extend(INTERVAL_US.to_be_bytes());
    v.extend(0u32.to_be_bytes());
    v
}

fn single_hop(sport: u16, dport: u16, dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(ROUTER_MAC, GW_MAC)
        .ipv4(ROUTER_IP, dst, 255)
        .udp(sport, dport)
        .write(&mut v, payload)
        .unwrap();
    v
}

/// As Open vSwitch sends it: inner 169.254.1.1 -> .0, UDP 49152 -> 3784,
/// outer UDP checksum 0.
fn in_geneve(payload: &[u8]) -> Vec<u8> {
    let mut inner = Vec::new();
    PacketBuilder::ethernet2(HV_MAC, OVS_BFD_MAC)
        .ipv4([169, 254, 1, 1], [169, 254, 1, 0], 255)
        .udp(49152, 3784)
        .write(&mut inner, payload)
        .unwrap();
    let mut g = geneve_hdr(0, 0, 0, 0x6558, VNI);
    g.extend(inner);
    let mut v = Vec::new();
    PacketBuilder::ethernet2(HV_MAC, GW_MAC).ipv4(HV_IP, GW_IP, 64).udp(50123, 6081).write(&mut v, &g).unwrap();
    v[14 + 20 + 6..14 + 20 + 8].fill(0);
    v
}

pub struct BfdCost {
    engine: Engine,
    _ns: Netns,
    /// The timed packets, by `Kind`.
    single_hop: Vec<u8>,
    geneve: Vec<u8>,
    echo: Vec<u8>,
}

const DOWN: u8 = 1;
const UP: u8 = 3;

impl BfdCost {
    /// Starts the engine on `gw`'s BFD maps with two sessions, "r" (the
    /// router, single-hop, echo on) and "t" (the tunnel to the hypervisor),
    /// and brings both Up. `gw` must have the bench's uplink and tunnel
    /// (`veth::setup`) and program `xgw_uplink`.
    pub fn new(gw: &mut TestGateway) -> BfdCost {
        let ns = Netns::new("bcost");
        ns.ok(&["ip", "addr", "add", &format!("{}/32", Ipv4Addr::from(GW_IP)), "dev", "lo"]);
        let engine = ns
            .enter(|| {
                Engine::start(&mut gw.ebpf, Uplink { ifname: "lo".into(), mac: GW_MAC }, Options { rt_priority: 0 })
            })
            .expect("bfd engine");
        let router = Path::SingleHop {
            ifname: "lo".into(),
            peer_ip: Ipv4Addr::from(ROUTER_IP),
            local_ip: Ipv4Addr::from(GW_IP),
        };
        engine.add("r", router, Config { echo: true, ..SLOW }).expect("add the single-hop session");
        let tunnel = Path::Geneve {
            ofport: TUNNEL,
            remote_ip: IpAddr::from(HV_IP),
            local_ip: IpAddr::from(GW_IP),
            vni: VNI,
            nexthop_mac: HV_MAC,
        };
        engine.add("t", tunnel, SLOW).expect("add the Geneve session");
        let status = |name: &str| engine.status(Some(name)).pop().expect("session");
        let (r, t) = (status("r").local_discriminator, status("t").local_discriminator);
        let prog = gw.program("xgw_uplink");
        // Peer Down -> we go Init; peer Up naming us -> Up (RFC 5880 6.8.6).
        for (state, r_your, t_your) in [(DOWN, 0, 0), (UP, r, t)] {
            let sh = single_hop(49152, 3784, GW_IP, &control(state, PEER_DISC, r_your));
            assert_eq!(test_run_on(prog, &sh, 1).verdict, XDP_DROP, "single-hop handshake");
            assert_eq!(
                test_run_on(prog, &in_geneve(&control(state, PEER_DISC, t_your)), 1).verdict,
                XDP_DROP,
                "Geneve handshake"
            );
        }
        let start = Instant::now();
        while !(status("r").forwarding && status("t").forwarding) {
            assert!(start.elapsed() < Duration::from_secs(5), "BFD sessions not Up: {:?}", engine.status(None));
            std::thread::sleep(Duration::from_millis(10));
        }
        // FRR's echo payload: its own control header, sent to itself.
        let echo_payload = control(UP, PEER_DISC, 0);
        BfdCost {
            single_hop: single_hop(49152, 3784, GW_IP, &control(UP, PEER_DISC, r)),
            geneve: in_geneve(&control(UP, PEER_DISC, t)),
            echo: single_hop(3785, 3785, ROUTER_IP, &echo_payload),
            engine,
            _ns: ns,
        }
    }

    fn status(&self, name: &str) -> Status {
        self.engine.status(Some(name)).pop().expect("session")
    }

    /// Runs `run` (which sends `packets` copies of the packet it is given)
    /// on the packet for `kind` and returns its figure, after checking that
    /// every packet took the measured path: the session still Up, the
    /// datapath's counter and the session's own moved by exactly `packets`,
    /// no BFD drop.
    pub fn measure(&self, gw: &TestGateway, kind: Kind, packets: u32, run: impl FnOnce(&[u8]) -> f64) -> f64 {
        let (name, pkt) = match kind {
            Kind::SingleHop => ("r", &self.single_hop),
            Kind::Geneve => ("t", &self.geneve),
            Kind::Echo => ("r", &self.echo),
        };
        let counters = || xgw::bfd::counters(&gw.ebpf).expect("BFD_COUNTERS");
        let drops = || xgw::bfd::drops(&gw.ebpf).expect("BFD_DROPS").values().sum::<u64>();
        let before = self.status(name);
        assert_eq!(before.state, "up", "{kind:?}: session not Up before the run: {before:?}");
        let ((rx0, echo0, _), drops0) = (counters(), drops());
        let figure = run(pkt);
        let after = self.status(name);
        let ((rx1, echo1, _), drops1) = (counters(), drops());
        assert_eq!(
            (after.state, after.flap_count),
            ("up", before.flap_count),
            "{kind:?}: the session left Up: {after:?}"
        );
        assert_eq!(drops1, drops0, "{kind:?}: BFD packets dropped as invalid");
        let n = packets as u64;
        let (rx, session_rx, echo) = (rx1 - rx0, after.rx_packets - before.rx_packets, echo1 - echo0);
        let want = if kind == Kind::Echo { (0, 0, n) } else { (n, n, 0) };
        assert_eq!(
            (rx, session_rx, echo),
            want,
            "{kind:?}: (BFD rx, session rx, echo reflected) did not move by the packets sent"
        );
        figure
    }
}
