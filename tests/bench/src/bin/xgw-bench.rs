//! `cargo xtask bench`: every figure beside a baseline measured in the same
//! run, as medians of several runs with their min-max spread. Writes a
//! markdown table and a JSON file under bench/results/ (the measurements
//! are in this crate's library, `xgw_bench`).
//!
//! Measured:
//! - program cost through BPF_PROG_TEST_RUN (ns per packet, timed by the
//!   kernel), decap, encap, the ARP reply, BFD receive (single-hop and
//!   inside Geneve) and BFD echo reflection beside a trivial XDP_PASS;
//! - packets per second on the veth path against inner frame size, decap
//!   and encap, beside a trivial redirect program on the same path
//!   (`bench::veth`);
//! - jumbo frames: decap and encap of 8000-byte inner frames on a
//!   9000-byte veth path beside `xgw_redirect`, frames sent by AF_PACKET
//!   (`bench::jumbo`; the live-frames generator stops at a page);
//! - xgw against Open vSwitch (userspace datapath) doing the same Geneve
//!   decap and encap between the same kind of veths (`bench::versus`).
//!
//! `--only decap|encap` runs just that veth row (64-byte frames, with its
//! baseline) and writes no results: a steady load to attach a profiler to
//! (`perf record -e cpu-clock -a -- xgw-bench --only decap`). `--only ovs`
//! runs just the Open vSwitch comparison, likewise, and `--only cost` just
//! the decap and encap program costs, `--only jumbo` the jumbo rows. With XGW_BENCH_VERBOSE
//! set, each comparison window also prints the rate the generator offered.
use std::{path::PathBuf, time::Duration};

use aya::programs::{TestRun, TestRunOptions};

use xgw_bench::{
    self as bench,
    bfd::{BfdCost, Kind},
    flood, flowkey, flows, jumbo, stats, versus, veth, Row,
};
use xgw_tests::{
    gateway::TestGateway,
    packet::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX},
};

/// Mean ns per packet of `prog` on `pkt` over `packets` runs; every run
/// must end in `verdict`, or the figure measured some other path.
///
/// One packet per BPF_PROG_TEST_RUN call: with `repeat` > 1 the kernel runs
/// the program again on the *same* buffer, so after the first decap every
/// further run sees an already stripped frame and measures nothing useful.
/// The kernel times each call around the program alone, so the syscall's
/// own cost stays out of the figure.
fn ns_per_packet(gw: &TestGateway, prog: &str, pkt: &[u8], packets: u32, ifindex: u32, verdict: u32) -> f64 {
    let p = gw.program(prog);
    let mut out = vec![0u8; pkt.len() + 256];
    let md = veth::xdp_md(pkt.len(), ifindex);
    let mut total = 0u128;
    for _ in 0..packets {
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
    total as f64 / packets as f64
}

const FULL_SIZES: [u32; 6] = [64, 128, 256, 512, 1024, 1400];
const QUICK_SIZES: [u32; 2] = [64, 1400];
const COST_ROWS: [&str; 6] = [
    "decap (Geneve+OVN option, IPv4)",
    "encap (Geneve+OVN option, IPv4)",
    "ARP reply (request for a bound IP)",
    "BFD receive, single-hop (session Up, packet Up)",
    "BFD receive inside Geneve, OVS-style (session Up, packet Up)",
    "BFD echo reflection (single-hop peer, echo on)",
];

/// `--only cost`: decap and encap through BPF_PROG_TEST_RUN beside
/// `xgw_pass`, the quickest figure to watch while changing the fast path.
fn program_cost(repeat: u32, runs: usize) {
    let mut gw = TestGateway::load(&["xgw_pass", "xgw_uplink", "xgw_local"]);
    veth::setup(&mut gw, 1, 1);
    let (decap_pkt, encap_pkt) = veth::frames(64);
    let (mut pass, mut decap, mut encap) = (vec![], vec![], vec![]);
    for _ in 0..runs {
        pass.push(ns_per_packet(&gw, "xgw_pass", &decap_pkt, repeat, 0, XDP_PASS));
        decap.push(ns_per_packet(&gw, "xgw_uplink", &decap_pkt, repeat, 0, XDP_REDIRECT));
        encap.push(ns_per_packet(&gw, "xgw_local", &encap_pkt, repeat, 1, XDP_REDIRECT));
    }
    let pass = stats(pass);
    for (name, v) in COST_ROWS.iter().zip([decap, encap]) {
        let r = Row::new(*name, "ns/pkt", "xgw_pass", stats(v), pass);
        println!(
            "{}: {:.1} ns/pkt, xgw_pass {:.1}, {:.1} ns more",
            r.name,
            r.value.median,
            r.base.median,
            r.value.median - r.base.median
        );
    }
}

/// Flow-keyed tunnels (test_run costs and 64-byte veth rates) and flooding
/// against the number of copies (`xgw_bench::{flowkey, flood}`), with the
/// names of the rows they must produce.
fn flowkey_and_flood(quick: bool, repeat: u32, runs: usize, frames: u32) -> (Vec<Row>, Vec<String>) {
    let (sizes, window) = flood::params(quick);
    let mut rows = flowkey::cost(repeat, runs, false);
    rows.extend(flowkey::pps(64, frames, runs));
    rows.extend(flood::flood(sizes, window, runs));
    let mut names = flowkey::cost_row_names();
    names.extend(flowkey::pps_row_names(64));
    names.extend(flood::row_names(sizes));
    (rows, names)
}

/// What `--only` runs instead of the whole benchmark.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Only {
    /// The decap veth row at 64 B, with its baseline and floor.
    Decap,
    /// The encap veth row at 64 B, with its baseline and floor.
    Encap,
    /// The Open vSwitch comparison.
    Ovs,
    /// The decap and encap program costs (test_run).
    Cost,
    /// The jumbo-frame rows (8000-byte inner frames).
    Jumbo,
    /// Flow-keyed tunnels: program costs and 64-byte veth rates.
    Flowkey,
    /// Flooding: flooded frames per second against copies, per-copy cost.
    Flood,
    /// Decap and encap at 1 to 65,536 active flows (64 B, receive setup).
    Flows,
    /// The decap rows of `flows` alone.
    FlowsDecap,
    /// The encap rows of `flows` alone.
    FlowsEncap,
    /// Decap and encap with a sender on each CPU beside one (receive setup).
    Cores,
    /// TCP through two xgw beside the same namespaces routed.
    Tcp,
}

/// xgw's benchmarks: program costs, veth packet rates, xgw against Open
/// vSwitch. Results go to $XGW_BENCH_OUT (default bench/results).
#[derive(clap::Parser)]
struct Args {
    /// Fewer packets and runs: checks that everything works, in seconds.
    #[arg(long)]
    quick: bool,
    /// Run only this part (a steady load to profile) and write no results.
    #[arg(long, value_enum)]
    only: Option<Only>,
}

fn main() {
    let Args { quick, only } = clap::Parser::parse();
    let (repeat, runs, frames) = if quick { (10_000u32, 3, 200_000u32) } else { (1_000_000, 7, 5_000_000) };
    let sizes: &[u32] = if quick { &QUICK_SIZES } else { &FULL_SIZES };
    // Seconds per iperf3 transfer.
    let tcp_secs = if quick { 2 } else { 5 };
    // OVS needs its warm-up (the first frames go to its slow path); short
    // windows are enough in quick mode, which checks only that it all works.
    let (ovs_sizes, timing): (&[u32], _) = if quick {
        (&[64], versus::Timing { runs: 3, warmup: Duration::from_millis(300), window: Duration::from_millis(300) })
    } else {
        (&FULL_SIZES, versus::Timing { runs, warmup: Duration::from_millis(300), window: Duration::from_secs(1) })
    };
    let out_dir = PathBuf::from(std::env::var("XGW_BENCH_OUT").unwrap_or_else(|_| "bench/results".into()));

    if let Some(only) = only {
        let rows = match only {
            Only::Cost => return program_cost(repeat, runs),
            Only::Flowkey | Only::Flood => return print_only(only, quick, repeat, runs, frames),
            Only::Ovs => versus::versus_ovs(ovs_sizes, timing, true),
            Only::Jumbo => jumbo::pps(runs, timing.window),
            Only::Flows => flows::pps(frames, runs, None),
            Only::FlowsDecap => flows::pps(frames, runs, Some("decap")),
            Only::FlowsEncap => flows::pps(frames, runs, Some("encap")),
            Only::Cores => flows::pps_cores(frames, runs, None),
            Only::Tcp => bench::tcp::rows(runs, tcp_secs),
            Only::Decap | Only::Encap => {
                let what = if only == Only::Decap { "decap" } else { "encap" };
                let mut rows = veth::pps_by_size(&[64], frames, runs, Some(what));
                rows.extend(veth::pps_received(64, frames, runs, Some(what)));
                rows
            }
        };
        for r in rows {
            if let Some(why) = &r.not_measured {
                println!("{}: not measured: {why}", r.name);
                continue;
            }
            if r.unit != "pkt/s" {
                println!(
                    "{}: {:.2} {}, {} {:.2}, ratio {:.2}",
                    r.name,
                    r.value.median,
                    r.unit,
                    r.baseline,
                    r.base.median,
                    r.ratio()
                );
                continue;
            }
            print!(
                "{}: {:.0}k pkt/s, {} {:.0}k, ratio {:.2}",
                r.name,
                r.value.median / 1e3,
                r.baseline,
                r.base.median / 1e3,
                r.ratio()
            );
            if only != Only::Ovs {
                print!(", {:.1} ns/pkt more", 1e9 / r.value.median - 1e9 / r.base.median);
            }
            println!();
        }
        return;
    }
    let mut gw = TestGateway::load(&["xgw_pass", "xgw_uplink", "xgw_local"]);
    // lo (1) stands for both interfaces: test_run only needs one that exists.
    veth::setup(&mut gw, 1, 1);
    let (decap_pkt, encap_pkt) = veth::frames(64);
    // The VM asks for its peer's MAC; xgw_local answers from NEIGH in place.
    gw.add_neigh(veth::VNI, xgw_common::maps::ipv4_mapped(veth::REMOTE_IP), veth::REMOTE_MAC);
    let arp_pkt = xgw_tests::packet::arp_request(veth::VM_MAC, veth::VM_IP, veth::REMOTE_IP);
    // BFD sessions held by the real engine (in a namespace of its own),
    // brought Up through the datapath itself.
    let bfd = BfdCost::new(&mut gw);
    // Interleave measured and baseline runs so drift on a noisy VM hits both.
    let (mut pass, mut decap, mut encap, mut arp) = (vec![], vec![], vec![], vec![]);
    let (mut bfd_rx, mut bfd_geneve, mut bfd_echo) = (vec![], vec![], vec![]);
    for _ in 0..runs {
        pass.push(ns_per_packet(&gw, "xgw_pass", &decap_pkt, repeat, 0, XDP_PASS));
        decap.push(ns_per_packet(&gw, "xgw_uplink", &decap_pkt, repeat, 0, XDP_REDIRECT));
        encap.push(ns_per_packet(&gw, "xgw_local", &encap_pkt, repeat, 1, XDP_REDIRECT));
        arp.push(ns_per_packet(&gw, "xgw_local", &arp_pkt, repeat, 1, XDP_TX));
        // Each BFD run must leave the sessions as it found them (Up) and
        // move their counters by exactly `repeat`: see `bench::bfd`.
        bfd_rx.push(
            bfd.measure(&gw, Kind::SingleHop, repeat, |pkt| ns_per_packet(&gw, "xgw_uplink", pkt, repeat, 1, XDP_DROP)),
        );
        bfd_geneve.push(
            bfd.measure(&gw, Kind::Geneve, repeat, |pkt| ns_per_packet(&gw, "xgw_uplink", pkt, repeat, 1, XDP_DROP)),
        );
        bfd_echo
            .push(bfd.measure(&gw, Kind::Echo, repeat, |pkt| ns_per_packet(&gw, "xgw_uplink", pkt, repeat, 1, XDP_TX)));
    }
    drop(bfd);
    // Every run must have done the work for real, or the figure is meaningless.
    let n = repeat as u64 * runs as u64;
    let tunnel = gw.port_stats(veth::TUNNEL as u32);
    assert_eq!(tunnel.rx.packets, n, "not every decap run decapsulated");
    assert_eq!(tunnel.tx.packets, n, "not every encap run encapsulated");
    assert_eq!(gw.replies()["arp"], n, "not every ARP request was answered");
    let pass = stats(pass);
    let mut rows: Vec<Row> = [decap, encap, arp, bfd_rx, bfd_geneve, bfd_echo]
        .into_iter()
        .zip(COST_ROWS)
        .map(|(v, name)| Row::new(name, "ns/pkt", "xgw_pass", stats(v), pass))
        .collect();
    drop(gw);
    rows.extend(veth::pps_by_size(sizes, frames, runs, None));
    rows.extend(veth::pps_received(sizes[0], frames, runs, None));
    rows.extend(flows::pps(frames, runs, None));
    rows.extend(flows::pps_cores(frames, runs, None));
    rows.extend(bench::tcp::rows(runs, tcp_secs));
    rows.extend(jumbo::pps(runs, timing.window));
    rows.extend(versus::versus_ovs(ovs_sizes, timing, true));
    let (more, more_names) = flowkey_and_flood(quick, repeat, runs, frames);
    rows.extend(more);

    let mut expected: Vec<String> = COST_ROWS.iter().map(|s| s.to_string()).collect();
    expected.extend(veth::row_names(sizes));
    expected.extend(flows::row_names());
    expected.extend(flows::cores_row_names());
    expected.extend(bench::tcp::row_names());
    expected.extend(jumbo::row_names());
    expected.extend(versus::row_names(ovs_sizes, true));
    expected.extend(more_names);
    bench::check(&rows, &expected);
    println!(
        "mode: {}, test_run: {repeat} packets per run; veth: {frames} frames per run; {runs} runs each\n\n{}",
        if quick { "quick" } else { "full" },
        bench::markdown(&rows)
    );
    let generator = if bench::live::permitted() {
        "live-frames BPF_PROG_TEST_RUN"
    } else {
        "AF_PACKET sendmmsg on the veth peer (this kernel refuses live frames)"
    };
    println!("generator of the veth rows: {generator}");
    println!("{}", bench::machine::line());
    let header = serde_json::json!({
        "machine": bench::machine::describe(),
        "generator": generator,
        "repeat": repeat, "frames": frames, "runs": runs, "sizes": sizes,
        "ovs": {"sizes": ovs_sizes, "runs": timing.runs, "warmup_s": timing.warmup.as_secs_f64(), "window_s": timing.window.as_secs_f64()},
    });
    bench::write(&out_dir, "bench", if quick { "-quick" } else { "" }, &rows, header);
}

/// `--only flowkey|flood`: those rows alone, as a table (no results
/// written); flowkey adds the fixed-key hits of the same runs.
fn print_only(only: Only, quick: bool, repeat: u32, runs: usize, frames: u32) {
    let rows = if only == Only::Flowkey {
        let mut rows = flowkey::cost(repeat, runs, true);
        rows.extend(flowkey::pps(64, frames, runs));
        rows
    } else {
        let (sizes, window) = flood::params(quick);
        flood::flood(sizes, window, runs)
    };
    println!("{}", bench::markdown(&rows));
}
