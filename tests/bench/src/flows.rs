//! Packet rate against the number of active destinations (issue 21, item
//! 1), in the receive setup of [`crate::veth::pps_received`]: xgw attached
//! to the near end of a veth and run by veth's receive path, the generator
//! sending out of the far end. The generator is `xgw_vary`, which makes
//! each frame one of `flows` flows (`BenchVary`) before it redirects it, so
//! the flow caches see that many destinations in turn, round robin, the
//! worst order for a cache: every flow comes back only after all others.
//!
//! - decap: flows are (remote chassis, OVN egress key) pairs, the remote
//!   spread over 1,000 flow-keyed IPv6 tunnels (2001:db8:0:1::1 up) and the
//!   egress key over as many local ports as it takes (1,000 flows each);
//! - encap: flows are destination MACs behind one local port, each bound
//!   behind one of the same 1,000 tunnels.
//!
//! Every row is read beside the one-flow rate and beside `xgw_redirect`
//! receiving the same varied frames on a twin pair, all in the same run.
//! IPv6 underlay: the documentation prefixes hold 1,000 chassis only in
//! IPv6; the outer UDP checksum is left as built for flow 0 (xgw does not
//! verify it on decap).
//!
//!   decap: xgw_vary hv0 -- ul [xgw_uplink] -> p -- eth0 [sink]
//!          xgw_vary hvb -- ulb [xgw_redirect] -> p -- eth0 [sink]
//!   encap: xgw_vary eth0 -- p [xgw_local] -> ul -- hv0 [sink]
//!          xgw_vary eth0b -- pb [xgw_redirect] -> ul -- hv0 [sink]
use xgw_common::maps::*;
use xgw_tests::{gateway::TestGateway, netns::Netns, packet::geneve::*};

use crate::{
    stats,
    veth::{far_end_rate, Received, GW_MAC, HV_MAC, VM_MAC, VNI},
    Row,
};

/// The active-destination counts the rows are measured at. The last is
/// "64k" less what FDB (65,536 entries) holds besides the encap flows'
/// bindings (the local ports' MACs).
pub const FLOWS: [u32; 6] = [1, 256, 1024, 4096, 16384, 65000];
/// Remote chassis (flow-keyed tunnels) the flows are spread over.
pub const TUNNELS: u32 = 1000;
const TUNNEL_OFPORT: u32 = 100;
const PORT_OFPORT: u16 = 2000;
/// Egress key of the first local port; the next ones follow.
const PORT_KEY: u16 = 0x100;
/// The gateway's underlay address, and the first remote chassis' (the
/// generator writes the last two bytes).
const GW_IP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const HV_IP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
/// Destination MACs of the encap flows: this prefix and the flow number.
const REMOTE_MAC: [u8; 6] = [0x02, 0, 0x5e, 0x30, 0, 0];
const VM_IP: [u8; 4] = [203, 0, 113, 1];
const REMOTE_IP: [u8; 4] = [203, 0, 113, 2];
/// Byte offsets the generator writes: the outer IPv6 source's last two
/// bytes, the OVN option's egress key, the inner destination MAC's last two.
const AT_REMOTE: u32 = 14 + 8 + 14;
const AT_EGRESS: u32 = 14 + 40 + 8 + 8 + 4 + 2;
const AT_MAC: u32 = 4;

fn tunnel_ip(t: u32) -> [u8; 16] {
    let mut ip = HV_IP6;
    ip[14..].copy_from_slice(&(t as u16 + 1).to_be_bytes());
    ip
}

/// 64-byte inner frames: the decap frame (IPv6 underlay, OVN option) as
/// flow 0 of chassis 0 sends it, and the VM's frame to destination 0.
fn frames() -> (Vec<u8>, Vec<u8>) {
    let inner = |src, dst, sip, dip| {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ethernet2(src, dst)
            .ipv4(sip, dip, 64)
            .udp(1000, 2000)
            .write(&mut v, &[0; 22])
            .unwrap();
        v
    };
    let mut decap = Vec::new();
    etherparse::PacketBuilder::ethernet2(HV_MAC, GW_MAC)
        .ipv6(tunnel_ip(0), GW_IP6, 64)
        .udp(50123, 6081)
        .write(
            &mut decap,
            &geneve_payload(&[ovn_option(0x22, PORT_KEY)], VNI, &inner(REMOTE_MAC, VM_MAC, REMOTE_IP, VM_IP)),
        )
        .unwrap();
    assert_eq!(&decap[AT_REMOTE as usize..AT_REMOTE as usize + 2], &[0, 1], "outer source");
    assert_eq!(&decap[AT_EGRESS as usize..AT_EGRESS as usize + 2], &PORT_KEY.to_be_bytes(), "egress key");
    let encap = inner(VM_MAC, REMOTE_MAC, VM_IP, REMOTE_IP);
    (decap, encap)
}

/// The gateway for every row: the uplink (IPv6), 1,000 flow-keyed tunnels,
/// the local ports the decap flows need (all on `p`), the VM's port on `p`
/// and one binding per encap flow.
fn setup(gw: &mut TestGateway, uplink: u32, port: u32) {
    let max = *FLOWS.last().unwrap();
    gw.set_uplink(Uplink {
        ifindex: uplink,
        mtu: 1500,
        mac: GW_MAC,
        flags: UPLINK_HAS_IP6,
        _pad: 0,
        ip4: [0; 4],
        ip6: GW_IP6,
    });
    gw.set_uplink_devmap(uplink);
    for t in 0..TUNNELS {
        let tunnel = Tunnel {
            remote: tunnel_ip(t),
            nexthop_mac: HV_MAC,
            flags: TUNNEL_OVN_METADATA | TUNNEL_IPV6,
            _pad: 0,
            vni: TUNNEL_KEY_FLOW,
        };
        gw.add_tunnel(TUNNEL_OFPORT + t, tunnel);
    }
    for p in 0..max.div_ceil(TUNNELS) as u16 {
        let mac = [0x02, 0, 0x5e, 0x40, 0, p as u8];
        gw.add_local_port_entries(PORT_OFPORT + p, port, VNI, PORT_KEY + p, mac);
    }
    gw.add_local_port(port, LocalPort { vni: VNI, ofport: 3, port_key: 0x11, mac: VM_MAC, ..Default::default() });
    for f in 0..max {
        let mut mac = REMOTE_MAC;
        mac[4..].copy_from_slice(&(f as u16).to_be_bytes());
        gw.add_remote(VNI, mac, None, (TUNNEL_OFPORT + f % TUNNELS) as u16, 0x22);
    }
}

/// What the generator varies for `flows` decap flows: the remote chassis
/// (the outer source's last bytes, over TUNNELS) and the egress key.
fn decap_cfg(flows: u32) -> BenchVary {
    BenchVary { flows, spread: TUNNELS, at_a: AT_REMOTE, base_a: 1, at_b: AT_EGRESS, base_b: PORT_KEY as u32 }
}

/// ... and for `flows` encap flows: the destination MAC's last bytes.
fn encap_cfg(flows: u32) -> BenchVary {
    BenchVary { flows, spread: 1 << 16, at_a: AT_MAC, base_a: 0, at_b: 0, base_b: 0 }
}

/// Rows for `what` ("decap", "encap" or both with `None`): each count of
/// [`FLOWS`] beside the one-flow rate and beside `xgw_redirect`.
pub fn pps(frames_per_run: u32, runs: usize, only: Option<&str>) -> Vec<Row> {
    let mut t = Received::new('f', ("", ""), setup);
    for ns in [&t.gw_ns, &t.hv, &t.vm] {
        // No IPv6 chatter into the sinks' counts.
        ns.disable_ipv6();
    }
    let (ul, p) = (t.ul, t.p);
    let mut gen = TestGateway::load(&["xgw_vary"]);
    let (decap_pkt, encap_pkt) = frames();
    // Each template goes through once (BPF_PROG_TEST_RUN, not live): a
    // setup that drops it would measure the drop.
    for (prog, pkt, ifindex) in [("xgw_uplink", &decap_pkt, ul), ("xgw_local", &encap_pkt, p)] {
        let run = t.gw_ns.enter(|| xgw_tests::packet::test_run_on(t.gw.program(prog), pkt, ifindex));
        assert_eq!(run.verdict, xgw_tests::packet::XDP_REDIRECT, "{prog} on the template: drops {:?}", t.gw.drops());
    }

    let mut send = |gen_ns: &Netns, out: &str, pkt: &[u8], sink: (&Netns, &str), cfg: BenchVary| -> f64 {
        far_end_rate(&mut gen, "xgw_vary", gen_ns, out, pkt, Some(&cfg), sink, frames_per_run)
    };
    // XGW_BENCH_VERBOSE: the program's own time per frame (the kernel's
    // BPF run-time statistics, on only then: they cost two clock reads per
    // run), to tell the program's share of a rate from the path's.
    let verbose = std::env::var_os("XGW_BENCH_VERBOSE").is_some();
    let _stats = verbose.then(|| aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF run-time stats"));
    let prog_time = |gw: &TestGateway, prog: &str| {
        let info = gw.program(prog).info().expect("program info");
        (info.run_time(), info.run_count())
    };
    let mut rows = Vec::new();
    for what in ["decap", "encap"] {
        if only.is_some_and(|o| o != what) {
            continue;
        }
        // [flows][run]: xgw, and xgw_redirect on the twin pair.
        let (mut xgw, mut base) = (vec![vec![]; FLOWS.len()], vec![vec![]; FLOWS.len()]);
        let before = counted(&t.gw, what);
        for _ in 0..runs {
            for (i, &flows) in FLOWS.iter().enumerate() {
                let dut = if what == "decap" { "xgw_uplink" } else { "xgw_local" };
                let (t0, n0) = prog_time(&t.gw, dut);
                if what == "decap" {
                    xgw[i].push(send(&t.hv, "hv0", &decap_pkt, (&t.vm, "eth0"), decap_cfg(flows)));
                    t.gw.devmap_set(0, p);
                    base[i].push(send(&t.hv, "hvb", &decap_pkt, (&t.vm, "eth0"), decap_cfg(flows)));
                } else {
                    xgw[i].push(send(&t.vm, "eth0", &encap_pkt, (&t.hv, "hv0"), encap_cfg(flows)));
                }
                if verbose {
                    let (t1, n1) = prog_time(&t.gw, dut);
                    let ns = (t1 - t0).as_nanos() as f64 / (n1 - n0).max(1) as f64;
                    eprintln!(
                        "{what}, {flows} flows: {:.0}k pkt/s, {dut} {ns:.0} ns/frame",
                        xgw[i].last().unwrap() / 1e3
                    );
                }
                if what == "encap" {
                    t.gw.devmap_set(0, ul);
                    base[i].push(send(&t.vm, "eth0b", &encap_pkt, (&t.hv, "hv0"), encap_cfg(flows)));
                }
            }
        }
        // Most generated frames went through xgw (see `veth::pps_received`).
        let n = frames_per_run as u64 * runs as u64 * FLOWS.len() as u64;
        let got = counted(&t.gw, what) - before;
        assert!(got >= n / 2, "{what}: {got} of {n} frames went through xgw");
        let one = stats(xgw[0].clone());
        for (i, &flows) in FLOWS.iter().enumerate() {
            let v = stats(xgw[i].clone());
            rows.push(Row::new(row_name(what, flows), "pkt/s", one_flow_name(what), v, one));
            rows.push(Row::new(
                redirect_row_name(what, flows),
                "pkt/s",
                "xgw_redirect, the same frames (twin pair)",
                v,
                stats(base[i].clone()),
            ));
        }
    }
    rows
}

/// Frames xgw decapsulated (tunnels' rx) or encapsulated (tunnels' tx).
fn counted(gw: &TestGateway, what: &str) -> u64 {
    (0..TUNNELS)
        .map(|t| {
            let s = gw.port_stats(TUNNEL_OFPORT + t);
            if what == "decap" {
                s.rx.packets
            } else {
                s.tx.packets
            }
        })
        .sum()
}

pub fn row_name(what: &str, flows: u32) -> String {
    format!(
        "{what} run by veth receive, {flows} active flows over {} tunnels (IPv6 underlay), 64 B inner",
        TUNNELS.min(flows)
    )
}
fn redirect_row_name(what: &str, flows: u32) -> String {
    format!("{} against xgw_redirect", row_name(what, flows))
}
fn one_flow_name(what: &str) -> String {
    format!("{what}, 1 active flow, same run")
}

/// The row names [`pps`] produces.
pub fn row_names() -> Vec<String> {
    ["decap", "encap"]
        .iter()
        .flat_map(|w| FLOWS.iter().flat_map(move |&f| [row_name(w, f), redirect_row_name(w, f)]))
        .collect()
}

/// Active-flow counts of the both-cores rows.
pub const CORES_FLOWS: [u32; 2] = [1, 16384];

/// Both cores (issue 21, item 2): the same receive setup with every veth
/// two queues each way, and an AF_PACKET sender pinned to each CPU. A frame
/// sent on CPU n leaves by queue n, and veth runs the peer's queue n (xgw)
/// and, after the redirect, the sink's queue n on that CPU, so each CPU
/// carries its own frames end to end and the two share only what the
/// datapath shares. Each row is the aggregate rate of both senders beside
/// one sender's on CPU 0 (same setup, same run): ideal scaling is 2.0. The
/// `xgw_redirect` rows are the path's own scaling, the ceiling for xgw's.
pub fn pps_cores(frames_per_run: u32, runs: usize, only: Option<&str>) -> Vec<Row> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        return cores_row_names().into_iter().map(|n| Row::not_measured(n, "pkt/s", "-", "one CPU")).collect();
    }
    let mut t = Received::with_queues('c', ("", ""), 2, setup);
    for ns in [&t.gw_ns, &t.hv, &t.vm] {
        ns.disable_ipv6();
    }
    let (ul, p) = (t.ul, t.p);
    let (decap_pkt, encap_pkt) = frames();
    // Frames per second delivered at `sink` with a sender on each CPU of
    // `on`, each sending `frames_per_run` frames out of `out` in `gen_ns`.
    let rate = |on: &[usize], gen_ns: &Netns, out: &str, pkt: &[u8], sink: (&Netns, &str), cfg: BenchVary| -> f64 {
        let before = crate::veth::sink(sink.0, sink.1).drops;
        let start = std::sync::Barrier::new(on.len() + 1);
        let elapsed = std::thread::scope(|s| {
            for &cpu in on {
                let start = &start;
                s.spawn(move || {
                    xgw_tests::process::pin_to(cpu);
                    let sender = crate::afpacket::Sender::new(gen_ns, out);
                    start.wait();
                    sender.send_n(pkt, Some(&cfg), frames_per_run as u64);
                });
            }
            start.wait();
            let t0 = std::time::Instant::now();
            // The scope joins the senders before it returns.
            t0
        })
        .elapsed();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let delivered = crate::veth::sink(sink.0, sink.1).drops - before;
        let sent = frames_per_run as u64 * on.len() as u64;
        assert!(delivered * 2 >= sent, "{out}: only {delivered} of {sent} frames arrived at {}", sink.1);
        delivered as f64 / elapsed.as_secs_f64()
    };
    let mut rows = Vec::new();
    for what in ["decap", "encap"] {
        if only.is_some_and(|o| o != what) {
            continue;
        }
        for flows in CORES_FLOWS {
            let (cfg, pkt) =
                if what == "decap" { (decap_cfg(flows), &decap_pkt) } else { (encap_cfg(flows), &encap_pkt) };
            let (gen_ns, sink) = if what == "decap" { (&t.hv, (&t.vm, "eth0")) } else { (&t.vm, (&t.hv, "hv0")) };
            let (out, twin, to) = if what == "decap" { ("hv0", "hvb", p) } else { ("eth0", "eth0b", ul) };
            // [one core, both]: xgw, and xgw_redirect on the twin pair.
            let (mut xgw, mut base) = ([vec![], vec![]], [vec![], vec![]]);
            let dut = if what == "decap" { "ul" } else { "p" };
            let q1 = |t: &Received| crate::veth::queue_packets(&t.gw_ns, dut).get(1).copied().unwrap_or(0);
            let before = q1(&t);
            for _ in 0..runs {
                for (i, on) in [&[0][..], &[0, 1][..]].into_iter().enumerate() {
                    xgw[i].push(rate(on, gen_ns, out, pkt, sink, cfg));
                    t.gw.devmap_set(0, to);
                    base[i].push(rate(on, gen_ns, twin, pkt, sink, cfg));
                }
            }
            // CPU 1's sender really loaded xgw's second queue (and so CPU 1).
            let second = q1(&t) - before;
            let sent = frames_per_run as u64 * runs as u64;
            assert!(second * 2 >= sent, "{what}: xgw's queue 1 saw {second} of the {sent} frames sent on CPU 1");
            let [one, both] = xgw.map(stats);
            let [base_one, base_both] = base.map(stats);
            rows.push(Row::new(cores_row_name(what, flows, "xgw"), "pkt/s", cores_baseline(what, flows), both, one));
            rows.push(Row::new(
                cores_row_name(what, flows, "xgw_redirect"),
                "pkt/s",
                cores_baseline(what, flows),
                base_both,
                base_one,
            ));
        }
    }
    rows
}

fn cores_row_name(what: &str, flows: u32, prog: &str) -> String {
    format!("{what} by {prog}, both cores (a sender pinned to each CPU), {flows} active flows, 64 B inner")
}
fn cores_baseline(what: &str, flows: u32) -> String {
    format!("{what}, one core (one sender, CPU 0), {flows} active flows, same run")
}

/// The row names [`pps_cores`] produces.
pub fn cores_row_names() -> Vec<String> {
    ["decap", "encap"]
        .iter()
        .flat_map(|w| {
            CORES_FLOWS.iter().flat_map(move |&f| [cores_row_name(w, f, "xgw"), cores_row_name(w, f, "xgw_redirect")])
        })
        .collect()
}
