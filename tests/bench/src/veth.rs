//! Packets per second on the veth path with the gateway's own program as
//! the generator: BPF_PROG_TEST_RUN in live-frames mode runs the program on
//! fresh copies of one frame and performs its redirect for real; frames are
//! counted where they arrive, at an XDP sink on the far veth end. Beside it,
//! `xgw_redirect` forwards the same frame over the same path doing nothing
//! else.
//!
//!   [hv: sink] hv0 -- ul [gw: xgw_uplink / xgw_local] p -- eth0 [vm: sink]

use aya::programs::Xdp;
use xgw_common::maps::*;
use xgw_tests::{
    gateway::TestGateway,
    netns::{Netns, Veth},
    packet::geneve::*,
};

use crate::{stats, PlotPoint, Row, DECAP, ENCAP};

pub const GW_IP: [u8; 4] = [198, 51, 100, 1];
pub const HV_IP: [u8; 4] = [198, 51, 100, 2];
pub const GW_MAC: [u8; 6] = [2, 0, 0x5e, 0x10, 0, 1];
pub const HV_MAC: [u8; 6] = [2, 0, 0x5e, 0x10, 0, 2];
pub const VM_MAC: [u8; 6] = [0x02, 0, 0x5e, 0x20, 0, 1];
pub const REMOTE_MAC: [u8; 6] = [0x02, 0, 0x5e, 0x20, 0, 2];
pub const VM_IP: [u8; 4] = [203, 0, 113, 1];
pub const REMOTE_IP: [u8; 4] = [203, 0, 113, 2];
pub const VNI: u32 = 5001;
pub const TUNNEL: u16 = 7;
/// OVN logical port keys: the local VM's and the remote one's.
pub const VM_KEY: u16 = 0x11;
pub const REMOTE_KEY: u16 = 0x22;
/// Outer Ethernet, IPv4, UDP, Geneve and the 8-byte OVN option.
pub const GENEVE_OVERHEAD: u32 = 14 + 20 + 8 + 8 + 8;

/// struct xdp_md for test_run: the frame as received on `ifindex`.
pub fn xdp_md(len: usize, ifindex: u32) -> Vec<u8> {
    [0, len as u32, 0, ifindex, 0, 0].iter().flat_map(|w: &u32| w.to_ne_bytes()).collect()
}

/// One tunnel to the hypervisor and one local port (the VM) behind `port`,
/// with the remote VM's MAC behind the tunnel.
pub fn setup(gw: &mut TestGateway, uplink: u32, port: u32) {
    gw.set_uplink(Uplink {
        ifindex: uplink,
        mtu: 1500,
        mac: GW_MAC,
        flags: UPLINK_HAS_IP4,
        _pad: 0,
        ip4: GW_IP,
        ip6: [0; 16],
    });
    gw.set_uplink_devmap(uplink);
    gw.add_tunnel(
        TUNNEL as u32,
        Tunnel { remote: ipv4_mapped(HV_IP), nexthop_mac: HV_MAC, flags: TUNNEL_OVN_METADATA, _pad: 0, vni: VNI },
    );
    // Port security on, as `xgw port add --mac M --ip I` sets it: the encap
    // rows pay for the check every daemon-made port has.
    let sec = PORTSEC_ON | PORTSEC_RESTRICTED | PORTSEC_HAS_IP;
    let ip = ipv4_mapped(VM_IP);
    gw.add_local_port(port, LocalPort { vni: VNI, ofport: 3, port_key: VM_KEY, mac: VM_MAC, sec, ip, _pad: 0 });
    gw.add_remote(VNI, REMOTE_MAC, None, TUNNEL, REMOTE_KEY);
}

/// A UDP/IPv4 Ethernet frame of exactly `size` bytes (no FCS).
fn inner(size: u32, src: [u8; 6], dst: [u8; 6], sip: [u8; 4], dip: [u8; 4]) -> Vec<u8> {
    assert!((60..=8942).contains(&size), "inner frame size {size}: 60..=8942 bytes (a 9000-byte underlay)");
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2(src, dst)
        .ipv4(sip, dip, 64)
        .udp(1000, 2000)
        .write(&mut v, &vec![0; size as usize - 42])
        .unwrap();
    v
}

/// For inner frames of `size` bytes: the Geneve frame (OVN option) the
/// hypervisor sends to the VM, and the frame the VM sends to the remote VM.
pub fn frames(size: u32) -> (Vec<u8>, Vec<u8>) {
    let mut decap: Vec<u8> = Vec::new();
    etherparse::PacketBuilder::ethernet2(HV_MAC, GW_MAC)
        .ipv4(HV_IP, GW_IP, 64)
        .udp(50123, 6081)
        .write(
            &mut decap,
            &geneve_payload(&[ovn_option(REMOTE_KEY, VM_KEY)], VNI, &inner(size, REMOTE_MAC, VM_MAC, REMOTE_IP, VM_IP)),
        )
        .unwrap();
    assert_eq!(decap.len() as u32, size + GENEVE_OVERHEAD);
    // Outer UDP checksum 0, as OVS sends Geneve over IPv4 by default (its
    // `csum` option is off): a receiver that verifies a non-zero checksum
    // over the whole frame (OVS's userspace datapath does) is not charged
    // for work real senders do not ask for.
    decap[14 + 20 + 6..14 + 20 + 8].fill(0);
    (decap, inner(size, VM_MAC, REMOTE_MAC, VM_IP, REMOTE_IP))
}

/// XDP counters of a sink's veth end (summed over its queues): frames seen
/// by its program, their bytes, and how many it dropped.
#[derive(Clone, Copy, Debug, Default)]
pub struct SinkCount {
    pub packets: u64,
    pub bytes: u64,
    pub drops: u64,
}

pub fn sink(ns: &Netns, ifname: &str) -> SinkCount {
    queues(ns, ifname).into_iter().fold(SinkCount::default(), |a, q| SinkCount {
        packets: a.packets + q.packets,
        bytes: a.bytes + q.bytes,
        drops: a.drops + q.drops,
    })
}

/// Frames XDP saw on each receive queue of `ifname` in `ns`, by queue number.
pub fn queue_packets(ns: &Netns, ifname: &str) -> Vec<u64> {
    queues(ns, ifname).iter().map(|q| q.packets).collect()
}

/// The XDP counters of each receive queue (`ethtool -S`), by queue number.
fn queues(ns: &Netns, ifname: &str) -> Vec<SinkCount> {
    let mut q: Vec<SinkCount> = Vec::new();
    for l in ns.ok(&["ethtool", "-S", ifname]).lines() {
        let Some((k, v)) = l.trim().split_once(':') else { continue };
        let Some((n, name)) = k.strip_prefix("rx_queue_").and_then(|k| k.split_once('_')) else { continue };
        let n: usize = n.parse().unwrap_or_else(|_| panic!("ethtool -S {ifname}: {l}"));
        let v: u64 = v.trim().parse().unwrap_or_else(|_| panic!("ethtool -S {ifname}: {l}"));
        if q.len() <= n {
            q.resize(n + 1, SinkCount::default());
        }
        match name {
            "xdp_packets" => q[n].packets = v,
            "xdp_bytes" => q[n].bytes = v,
            "xdp_drops" => q[n].drops = v,
            _ => {}
        }
    }
    q
}

/// Rows of pps for each inner frame size in `sizes`, decap and encap (or
/// only one with `only`), each beside `xgw_redirect` on the same path.
pub fn pps_by_size(sizes: &[u32], frames_per_run: u32, runs: usize, only: Option<&str>) -> Vec<Row> {
    if !crate::live::permitted() {
        let mut names = vec![];
        if only != Some("encap") {
            names.extend(sizes.iter().map(|&s| decap_name(s)));
            names.push(floor_name("decap", sizes[0]));
        }
        if only != Some("decap") {
            names.extend(sizes.iter().map(|&s| encap_name(s)));
            names.push(floor_name("encap", sizes[0]));
        }
        return crate::refused(names, "pkt/s");
    }
    let gw_ns = Netns::new("bgw");
    let hv = Netns::new("bhv");
    let vm = Netns::new("bvm");
    Veth::new(&gw_ns, "ul", "198.51.100.1/24", &hv, "hv0", "198.51.100.2/24");
    Veth::new(&gw_ns, "p", "", &vm, "eth0", "");
    let mut gw = TestGateway::load(&["xgw_uplink", "xgw_local", "xgw_redirect", "xgw_drop", "xgw_strip", "xgw_push"]);
    gw.in_netns(&gw_ns);
    let (ul, p) = (gw_ns.ifindex("ul"), gw_ns.ifindex("p"));
    setup(&mut gw, ul, p);
    gw.attach(&hv, "xgw_drop", "hv0");
    gw.attach(&vm, "xgw_drop", "eth0");

    let run = |gw: &TestGateway, prog: &str, pkt: &[u8], ifindex: u32, sink_ns: &Netns, sink_if: &str| -> f64 {
        live_rate(gw.program(prog), pkt, &gw_ns, ifindex, (sink_ns, sink_if), frames_per_run, 90)
    };
    let (do_decap, do_encap) = (only != Some("encap"), only != Some("decap"));
    let (mut decap_rows, mut encap_rows) = (vec![], vec![]);
    for &size in sizes {
        let (decap_pkt, encap_pkt) = frames(size);
        let (mut decap, mut decap_base, mut encap, mut encap_base) = (vec![], vec![], vec![], vec![]);
        // The floors, at the first size only: what stripping or pushing the
        // outer headers costs on this path with no other work at all.
        let floors = size == sizes[0];
        let (mut strip, mut push) = (vec![], vec![]);
        let decap_before = gw.port_stats(TUNNEL as u32).rx.packets;
        let encap_before = gw.port_stats(TUNNEL as u32).tx.packets;
        // Interleave measured and baseline runs so drift on a noisy VM hits both.
        for _ in 0..runs {
            if do_decap {
                decap.push(run(&gw, "xgw_uplink", &decap_pkt, ul, &vm, "eth0"));
            }
            if do_encap {
                encap.push(run(&gw, "xgw_local", &encap_pkt, p, &hv, "hv0"));
            }
            if do_decap {
                gw.devmap_set(0, p);
                decap_base.push(run(&gw, "xgw_redirect", &decap_pkt, ul, &vm, "eth0"));
                if floors {
                    strip.push(run(&gw, "xgw_strip", &decap_pkt, ul, &vm, "eth0"));
                }
            }
            if do_encap {
                gw.devmap_set(0, ul);
                encap_base.push(run(&gw, "xgw_redirect", &encap_pkt, p, &hv, "hv0"));
                if floors {
                    push.push(run(&gw, "xgw_push", &encap_pkt, p, &hv, "hv0"));
                }
            }
        }
        // The rows count only if the gateway really did the work on every frame.
        let n = frames_per_run as u64 * runs as u64;
        if do_decap {
            assert_eq!(
                gw.port_stats(TUNNEL as u32).rx.packets - decap_before,
                n,
                "{size} B: not every frame decapsulated"
            );
            let base = stats(decap_base);
            decap_rows.push(Row::new(decap_name(size), "pkt/s", "xgw_redirect", stats(decap), base).plot(PlotPoint {
                panel: DECAP,
                size,
                value: XGW,
                base: REDIRECT,
            }));
            if floors {
                decap_rows.push(Row::new(floor_name("decap", size), "pkt/s", "xgw_redirect", stats(strip), base));
            }
        }
        if do_encap {
            assert_eq!(
                gw.port_stats(TUNNEL as u32).tx.packets - encap_before,
                n,
                "{size} B: not every frame encapsulated"
            );
            let base = stats(encap_base);
            encap_rows.push(Row::new(encap_name(size), "pkt/s", "xgw_redirect", stats(encap), base).plot(PlotPoint {
                panel: ENCAP,
                size,
                value: XGW,
                base: REDIRECT,
            }));
            if floors {
                encap_rows.push(Row::new(floor_name("encap", size), "pkt/s", "xgw_redirect", stats(push), base));
            }
        }
    }
    decap_rows.extend(encap_rows);
    decap_rows
}

/// Frames delivered to the sink `sink` (namespace, interface) per second of
/// generator time: `prog` run by live-frames test_run in `gen_ns` on copies
/// of `pkt`, as received on `ifindex`. At least `min_percent` of them must
/// arrive.
pub fn live_rate(
    prog: &Xdp,
    pkt: &[u8],
    gen_ns: &Netns,
    ifindex: u32,
    sink: (&Netns, &str),
    frames: u32,
    min_percent: u64,
) -> f64 {
    let (sink_ns, sink_if) = sink;
    let before = self::sink(sink_ns, sink_if).drops;
    let elapsed = crate::live::generate(prog, pkt, gen_ns, ifindex, frames);
    let delivered = self::sink(sink_ns, sink_if).drops - before;
    assert!(
        delivered * 100 >= frames as u64 * min_percent,
        "{}-byte frames from {}: only {delivered} of {frames} arrived at {sink_if}",
        pkt.len(),
        gen_ns.name
    );
    delivered as f64 / elapsed.as_secs_f64()
}

/// The receive setup's namespaces, veths and gateway (see
/// [`pps_received`]), its programs attached: `xgw_uplink` on `ul`,
/// `xgw_local` on `p`, `xgw_redirect` on the twins `ulb` and `pb`, sinks on
/// `hv0` and `eth0`. `configure` writes the gateway's maps (given `ul` and
/// `p`) before the programs attach; `underlay` addresses `ul` and `hv0`
/// ("" for none).
pub struct Received {
    // Drop order: the datapath detaches before the namespaces go.
    pub gw: TestGateway,
    pub gw_ns: Netns,
    pub hv: Netns,
    pub vm: Netns,
    pub ul: u32,
    pub p: u32,
}

impl Received {
    pub fn new(tag: char, underlay: (&str, &str), configure: impl FnOnce(&mut TestGateway, u32, u32)) -> Received {
        Received::with_queues(tag, underlay, 1, configure)
    }

    /// As `new`, every veth with `queues` queues each way (see
    /// `Veth::with_queues`).
    pub fn with_queues(
        tag: char,
        underlay: (&str, &str),
        queues: u32,
        configure: impl FnOnce(&mut TestGateway, u32, u32),
    ) -> Received {
        let gw_ns = Netns::new(&format!("{tag}gw"));
        let hv = Netns::new(&format!("{tag}hv"));
        let vm = Netns::new(&format!("{tag}vm"));
        Veth::with_queues(&gw_ns, "ul", underlay.0, &hv, "hv0", underlay.1, queues);
        Veth::with_queues(&gw_ns, "ulb", "", &hv, "hvb", "", queues);
        Veth::with_queues(&gw_ns, "p", "", &vm, "eth0", "", queues);
        Veth::with_queues(&gw_ns, "pb", "", &vm, "eth0b", "", queues);
        let mut gw = TestGateway::load(&["xgw_uplink", "xgw_local", "xgw_redirect", "xgw_drop"]);
        gw.in_netns(&gw_ns);
        let (ul, p) = (gw_ns.ifindex("ul"), gw_ns.ifindex("p"));
        configure(&mut gw, ul, p);
        gw.attach(&gw_ns, "xgw_uplink", "ul");
        gw.attach(&gw_ns, "xgw_local", "p");
        gw.attach(&gw_ns, "xgw_redirect", "ulb");
        gw.attach(&gw_ns, "xgw_redirect", "pb");
        gw.attach(&hv, "xgw_drop", "hv0");
        gw.attach(&vm, "xgw_drop", "eth0");
        Received { gw, gw_ns, hv, vm, ul, p }
    }
}

/// Frames per second through the path from `out` in `gen_ns` to the sink,
/// `frames` of `pkt` (varied as `vary` says) sent out of `out`: by `gen`'s
/// `prog` (`xgw_redirect` or `xgw_vary`, redirecting to `out`) under
/// live-frames test_run, or by an AF_PACKET socket on `out` where the
/// kernel refuses live frames (`crate::afpacket`).
#[allow(clippy::too_many_arguments)]
pub fn far_end_rate(
    gen: &mut TestGateway,
    prog: &str,
    gen_ns: &Netns,
    out: &str,
    pkt: &[u8],
    vary: Option<&BenchVary>,
    sink: (&Netns, &str),
    frames: u32,
) -> f64 {
    let ifindex = gen_ns.ifindex(out);
    if crate::live::permitted() {
        gen.in_netns(gen_ns);
        gen.devmap_set(0, ifindex);
        if let Some(v) = vary {
            let map = gen.ebpf.map_mut("BENCH_VARY").expect("the datapath object has BENCH_VARY");
            aya::maps::Array::<_, BenchVary>::try_from(map).unwrap().set(0, *v, 0).unwrap();
        }
        // Two NAPI hops on this 2-CPU VM: now and then the softirq work
        // moves to ksoftirqd while the generator keeps sending, and a veth
        // ring overflows (up to about 16 % of a run's frames). The rate is
        // what arrived, as a traffic generator's receiver counts it.
        return live_rate(gen.program(prog), pkt, gen_ns, ifindex, sink, frames, 50);
    }
    let (sink_ns, sink_if) = sink;
    let before = self::sink(sink_ns, sink_if).drops;
    let elapsed = crate::afpacket::Sender::new(gen_ns, out).send_n(pkt, vary, frames as u64);
    // The sink's veth ring drains after the sends.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let delivered = self::sink(sink_ns, sink_if).drops - before;
    assert!(
        delivered * 2 >= frames as u64,
        "{}-byte frames out of {out}: only {delivered} of {frames} arrived",
        pkt.len()
    );
    delivered as f64 / elapsed.as_secs_f64()
}

/// Packets per second with xgw where it sits on a real veth uplink, and
/// where xdp-trafficgen would put the device under test: attached to the
/// near end of a veth and run by veth's receive path, with the generator
/// (`xgw_redirect` under live-frames test_run, a gateway of its own)
/// sending the frame out of the far end. The baseline is `xgw_redirect`
/// attached in the same place on a twin pair, redirecting to the same
/// port. Unlike [`pps_by_size`], the generator's own work (and the frame
/// restore test_run does for a program that moved the frame's start) is
/// the same for both, and every frame crosses two veth pairs.
///
///   decap: gen hv0 -- ul [xgw_uplink] -> p -- eth0 [sink]
///          gen hvb -- ulb [xgw_redirect] -> p -- eth0 [sink]
///   encap: gen eth0 -- p [xgw_local] -> ul -- hv0 [sink]
///          gen eth0b -- pb [xgw_redirect] -> ul -- hv0 [sink]
pub fn pps_received(size: u32, frames_per_run: u32, runs: usize, only: Option<&str>) -> Vec<Row> {
    let mut t = Received::new('r', ("198.51.100.1/24", "198.51.100.2/24"), setup);
    let (ul, p) = (t.ul, t.p);
    let mut gen = TestGateway::load(&["xgw_redirect"]);
    let (decap_pkt, encap_pkt) = frames(size);

    let mut send = |gen_ns: &Netns, out: &str, pkt: &[u8], sink: (&Netns, &str)| -> f64 {
        far_end_rate(&mut gen, "xgw_redirect", gen_ns, out, pkt, None, sink, frames_per_run)
    };
    let (do_decap, do_encap) = (only != Some("encap"), only != Some("decap"));
    let (mut decap, mut decap_base, mut encap, mut encap_base) = (vec![], vec![], vec![], vec![]);
    let decap_before = t.gw.port_stats(TUNNEL as u32).rx.packets;
    let encap_before = t.gw.port_stats(TUNNEL as u32).tx.packets;
    for _ in 0..runs {
        if do_decap {
            decap.push(send(&t.hv, "hv0", &decap_pkt, (&t.vm, "eth0")));
            t.gw.devmap_set(0, p);
            decap_base.push(send(&t.hv, "hvb", &decap_pkt, (&t.vm, "eth0")));
        }
        if do_encap {
            encap.push(send(&t.vm, "eth0", &encap_pkt, (&t.hv, "hv0")));
            t.gw.devmap_set(0, ul);
            encap_base.push(send(&t.vm, "eth0b", &encap_pkt, (&t.hv, "hv0")));
        }
    }
    // Most of the generated frames (see `send`).
    let n = frames_per_run as u64 * runs as u64;
    let mut rows = vec![];
    if do_decap {
        let got = t.gw.port_stats(TUNNEL as u32).rx.packets - decap_before;
        assert!(got >= n / 2, "{size} B received: {got} of {n} frames decapsulated");
        rows.push(Row::new(received_name("decap", size), "pkt/s", "xgw_redirect", stats(decap), stats(decap_base)));
    }
    if do_encap {
        let got = t.gw.port_stats(TUNNEL as u32).tx.packets - encap_before;
        assert!(got >= n / 2, "{size} B received: {got} of {n} frames encapsulated");
        rows.push(Row::new(received_name("encap", size), "pkt/s", "xgw_redirect", stats(encap), stats(encap_base)));
    }
    rows
}

pub fn received_name(what: &str, size: u32) -> String {
    let (from, to) = if what == "decap" { ("uplink", "port") } else { ("port", "uplink") };
    format!("{what} run by veth receive ({from} -> {to}), generator on the veth peer, {size} B inner")
}

pub const XGW: &str = "xgw (test_run generator)";
pub const REDIRECT: &str = "xgw_redirect, same path (test_run generator)";

pub fn decap_name(size: u32) -> String {
    format!("decap on the veth path, {size} B inner (uplink -> port)")
}
pub fn encap_name(size: u32) -> String {
    format!("encap on the veth path, {size} B inner (port -> uplink)")
}
/// `xgw_strip` / `xgw_push` beside `xgw_redirect`: the part of the gap to
/// it that no decap or encap program can avoid on this path.
pub fn floor_name(what: &str, size: u32) -> String {
    let (verb, prog) = if what == "decap" { ("strip", "xgw_strip") } else { ("push", "xgw_push") };
    format!("{what} floor: {verb} {GENEVE_OVERHEAD} B and redirect, nothing else ({prog}), {size} B inner")
}
/// The row names [`pps_by_size`] produces, for the completeness check.
pub fn row_names(sizes: &[u32]) -> Vec<String> {
    let mut v: Vec<String> = sizes.iter().map(|&s| decap_name(s)).collect();
    v.push(floor_name("decap", sizes[0]));
    v.extend(sizes.iter().map(|&s| encap_name(s)));
    v.push(floor_name("encap", sizes[0]));
    v.extend(["decap", "encap"].map(|w| received_name(w, sizes[0])));
    v
}
