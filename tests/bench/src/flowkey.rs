//! Flow-keyed tunnels (OVN's and OVS's `key=flow`: one tunnel per remote
//! chassis, the VNI taken from each packet) beside the fixed-key tunnel of
//! the other rows. The gateway of [`veth::setup`] gets a second chassis
//! behind a flow-keyed tunnel, written as the controller writes one
//! (`Tunnel::vni` = `TUNNEL_KEY_FLOW`, its `TUNNEL_BY_REMOTE` entry under
//! (remote, `TUNNEL_KEY_FLOW`)), with a remote VM behind it; the frames
//! are [`veth::frames`] from that chassis and for that VM.
//!
//! A flow-cache hit costs the same for both kinds (the slot holds the
//! tunnel); a miss on a flow-keyed tunnel makes one more `TUNNEL_BY_REMOTE`
//! lookup, the fixed key of the packet's VNI first, as OVS matches an exact
//! key before a flow-keyed port. The miss rows bump the generation before
//! every packet, so that each one finds its slot stale.
use std::time::Duration;

use aya::programs::{TestRun, TestRunOptions};
use xgw_common::maps::{names::GENERATION, *};
use xgw_tests::{
    gateway::TestGateway,
    netns::{Netns, Veth},
    packet::{XDP_PASS, XDP_REDIRECT},
};

use crate::{
    live, stats,
    veth::{self, TUNNEL, VNI},
    Row,
};

/// The flow-keyed chassis, its tunnel's OpenFlow number, and the VM behind it.
pub const FLOW_TUNNEL: u16 = 8;
pub const HV2_IP: [u8; 4] = [198, 51, 100, 3];
pub const HV2_MAC: [u8; 6] = [2, 0, 0x5e, 0x10, 0, 3];
pub const REMOTE2_MAC: [u8; 6] = [0x02, 0, 0x5e, 0x20, 0, 3];
const REMOTE2_KEY: u16 = 0x23;

/// On top of [`veth::setup`]: the flow-keyed tunnel and its remote VM.
pub fn setup(gw: &mut TestGateway) {
    let remote = ipv4_mapped(HV2_IP);
    let t = Tunnel { remote, nexthop_mac: HV2_MAC, flags: TUNNEL_OVN_METADATA, _pad: 0, vni: TUNNEL_KEY_FLOW };
    gw.add_tunnel(FLOW_TUNNEL as u32, t);
    gw.add_remote(VNI, REMOTE2_MAC, None, FLOW_TUNNEL, REMOTE2_KEY);
}

/// [`veth::frames`] with the Geneve frame from the flow-keyed chassis and
/// the VM's frame for the VM behind it.
pub fn frames(size: u32) -> (Vec<u8>, Vec<u8>) {
    let (mut decap, mut encap) = veth::frames(size);
    let (mut ip, _) = etherparse::Ipv4Header::from_slice(&decap[14..]).expect("outer IPv4");
    ip.source = HV2_IP;
    ip.header_checksum = ip.calc_header_checksum();
    let ip = ip.to_bytes();
    decap[14..14 + ip.len()].copy_from_slice(&ip);
    encap[..6].copy_from_slice(&REMOTE2_MAC);
    (decap, encap)
}

/// Mean ns per packet of `prog` on `pkt` through BPF_PROG_TEST_RUN, one
/// packet per call as in `xgw-bench`'s other cost rows, each ending in
/// `verdict`; `before` runs ahead of each call, outside the time the
/// kernel measures.
struct Cost<'a> {
    gw: &'a TestGateway,
    packets: u32,
}

impl Cost<'_> {
    fn ns(&self, prog: &str, pkt: &[u8], ifindex: u32, verdict: u32, before: &dyn Fn()) -> f64 {
        let p = self.gw.program(prog);
        let mut out = vec![0u8; pkt.len() + 256];
        let md = veth::xdp_md(pkt.len(), ifindex);
        let mut total = 0u128;
        for _ in 0..self.packets {
            before();
            let opts = TestRunOptions {
                data_in: Some(pkt),
                data_out: Some(&mut out),
                ctx_in: (ifindex != 0).then_some(&md[..]),
                repeat: 1,
                ..TestRunOptions::new()
            };
            let r = p.test_run(opts).expect("test_run");
            assert_eq!(r.return_value, verdict, "{prog}: verdict {} instead of {verdict}", r.return_value);
            total += r.duration.as_nanos();
        }
        total as f64 / self.packets as f64
    }
}

pub const COST_DECAP: &str = "decap, flow-keyed tunnel (key=flow), flow cache hit";
pub const COST_ENCAP: &str = "encap, flow-keyed tunnel (key=flow), flow cache hit";
pub const COST_MISS_FIXED: &str = "decap, fixed-key tunnel, flow cache miss on every packet";
pub const COST_MISS_FLOW: &str = "decap, flow-keyed tunnel (key=flow), flow cache miss on every packet";
const COST_FIXED_DECAP: &str = "decap, fixed-key tunnel, flow cache hit (this run)";
const COST_FIXED_ENCAP: &str = "encap, fixed-key tunnel, flow cache hit (this run)";

pub fn cost_row_names() -> Vec<String> {
    [COST_DECAP, COST_ENCAP, COST_MISS_FIXED, COST_MISS_FLOW].map(String::from).to_vec()
}

/// Program costs beside `xgw_pass` (BPF_PROG_TEST_RUN, interleaved runs):
/// decap and encap through the flow-keyed tunnel on a flow-cache hit, and
/// decap on a miss through either kind. With `fixed_too`, also the
/// fixed-key hits of the same runs (for `--only flowkey`).
pub fn cost(repeat: u32, runs: usize, fixed_too: bool) -> Vec<Row> {
    let mut gw = TestGateway::load(&["xgw_pass", "xgw_uplink", "xgw_local"]);
    veth::setup(&mut gw, 1, 1);
    setup(&mut gw);
    let generation = xgw::datapath::Generation::open(gw.ebpf.map(GENERATION).expect(GENERATION)).expect("mmap");
    let (fixed_decap, fixed_encap) = veth::frames(64);
    let (flow_decap, flow_encap) = frames(64);
    let c = Cost { gw: &gw, packets: repeat };
    let hit = || {};
    let miss = || generation.bump();
    let mut v: [Vec<f64>; 7] = Default::default();
    for _ in 0..runs {
        v[0].push(c.ns("xgw_pass", &fixed_decap, 0, XDP_PASS, &hit));
        v[1].push(c.ns("xgw_uplink", &flow_decap, 0, XDP_REDIRECT, &hit));
        v[2].push(c.ns("xgw_local", &flow_encap, 1, XDP_REDIRECT, &hit));
        v[3].push(c.ns("xgw_uplink", &fixed_decap, 0, XDP_REDIRECT, &miss));
        v[4].push(c.ns("xgw_uplink", &flow_decap, 0, XDP_REDIRECT, &miss));
        v[5].push(c.ns("xgw_uplink", &fixed_decap, 0, XDP_REDIRECT, &hit));
        v[6].push(c.ns("xgw_local", &fixed_encap, 1, XDP_REDIRECT, &hit));
    }
    // Every packet took the tunnel its row names.
    let n = repeat as u64 * runs as u64;
    let (fixed, flow) = (gw.port_stats(TUNNEL as u32), gw.port_stats(FLOW_TUNNEL as u32));
    assert_eq!((fixed.rx.packets, fixed.tx.packets), (2 * n, n), "fixed-key tunnel");
    assert_eq!((flow.rx.packets, flow.tx.packets), (2 * n, n), "flow-keyed tunnel");
    let [pass, rest @ ..] = v;
    let pass = stats(pass);
    let names = [COST_DECAP, COST_ENCAP, COST_MISS_FIXED, COST_MISS_FLOW, COST_FIXED_DECAP, COST_FIXED_ENCAP];
    let keep = if fixed_too { 6 } else { 4 };
    rest.into_iter()
        .zip(names)
        .take(keep)
        .map(|(v, name)| Row::new(name, "ns/pkt", "xgw_pass", stats(v), pass))
        .collect()
}

pub fn pps_name(what: &str, size: u32) -> String {
    let dir = if what == "decap" { "uplink -> port" } else { "port -> uplink" };
    format!("{what}, flow-keyed tunnel (key=flow), on the veth path, {size} B inner ({dir})")
}
pub fn pps_versus_fixed_name(what: &str, size: u32) -> String {
    format!("{what} on the veth path, {size} B inner: flow-keyed tunnel against the fixed-key one")
}
pub fn pps_row_names(size: u32) -> Vec<String> {
    ["decap", "encap"].iter().flat_map(|w| [pps_name(w, size), pps_versus_fixed_name(w, size)]).collect()
}

/// Packets per second on the veth path (the test_run generator setup of
/// [`veth::pps_by_size`]) through the flow-keyed tunnel, beside
/// `xgw_redirect` and beside the fixed-key tunnel, all interleaved in the
/// same run on the same gateway and veths.
pub fn pps(size: u32, frames_per_run: u32, runs: usize) -> Vec<Row> {
    if !live::permitted() {
        return crate::refused(pps_row_names(size), "pkt/s");
    }
    let gw_ns = Netns::new("kgw");
    let hv = Netns::new("khv");
    let vm = Netns::new("kvm");
    Veth::new(&gw_ns, "ul", "198.51.100.1/24", &hv, "hv0", "198.51.100.2/24");
    Veth::new(&gw_ns, "p", "", &vm, "eth0", "");
    let mut gw = TestGateway::load(&["xgw_uplink", "xgw_local", "xgw_redirect", "xgw_drop"]);
    gw.in_netns(&gw_ns);
    let (ul, p) = (gw_ns.ifindex("ul"), gw_ns.ifindex("p"));
    veth::setup(&mut gw, ul, p);
    setup(&mut gw);
    gw.attach(&hv, "xgw_drop", "hv0");
    gw.attach(&vm, "xgw_drop", "eth0");
    let (fixed_decap, fixed_encap) = veth::frames(size);
    let (flow_decap, flow_encap) = frames(size);

    // Frames per second delivered to the sink, at least 90 % of them.
    let rate = |gw: &TestGateway, prog: &str, pkt: &[u8], ifindex: u32, sink: (&Netns, &str)| -> f64 {
        let before = veth::sink(sink.0, sink.1).drops;
        let t: Duration = live::generate(gw.program(prog), pkt, &gw_ns, ifindex, frames_per_run);
        let got = veth::sink(sink.0, sink.1).drops - before;
        assert!(got * 10 >= frames_per_run as u64 * 9, "{prog}: {got} of {frames_per_run} arrived at {}", sink.1);
        got as f64 / t.as_secs_f64()
    };
    let mut v: [Vec<f64>; 6] = Default::default();
    for _ in 0..runs {
        v[0].push(rate(&gw, "xgw_uplink", &flow_decap, ul, (&vm, "eth0")));
        v[1].push(rate(&gw, "xgw_uplink", &fixed_decap, ul, (&vm, "eth0")));
        gw.devmap_set(0, p);
        v[2].push(rate(&gw, "xgw_redirect", &fixed_decap, ul, (&vm, "eth0")));
        v[3].push(rate(&gw, "xgw_local", &flow_encap, p, (&hv, "hv0")));
        v[4].push(rate(&gw, "xgw_local", &fixed_encap, p, (&hv, "hv0")));
        gw.devmap_set(0, ul);
        v[5].push(rate(&gw, "xgw_redirect", &fixed_encap, p, (&hv, "hv0")));
    }
    let n = frames_per_run as u64 * runs as u64;
    let (fixed, flow) = (gw.port_stats(TUNNEL as u32), gw.port_stats(FLOW_TUNNEL as u32));
    assert_eq!((fixed.rx.packets, fixed.tx.packets), (n, n), "fixed-key tunnel");
    assert_eq!((flow.rx.packets, flow.tx.packets), (n, n), "flow-keyed tunnel");
    let [flow_d, fixed_d, redirect_d, flow_e, fixed_e, redirect_e] = v.map(stats);
    vec![
        Row::new(pps_name("decap", size), "pkt/s", "xgw_redirect", flow_d, redirect_d),
        Row::new(pps_versus_fixed_name("decap", size), "pkt/s", "fixed-key tunnel, same path", flow_d, fixed_d),
        Row::new(pps_name("encap", size), "pkt/s", "xgw_redirect", flow_e, redirect_e),
        Row::new(pps_versus_fixed_name("encap", size), "pkt/s", "fixed-key tunnel, same path", flow_e, fixed_e),
    ]
}
