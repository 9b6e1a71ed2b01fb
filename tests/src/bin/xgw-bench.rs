//! `cargo xtask bench`: every figure beside a baseline measured in the same
//! run, as medians of several runs with their min-max spread. Writes a
//! markdown table and a JSON file under bench/results/.
//!
//! Measured:
//! - program cost through BPF_PROG_TEST_RUN (ns per packet, timed by the
//!   kernel), decap, encap and the ARP reply beside a trivial XDP_PASS;
//! - packets per second on the veth path: BPF_PROG_TEST_RUN in live-frames
//!   mode is the generator (the kernel runs the program on fresh copies of
//!   one frame and performs its redirect for real), frames are counted where
//!   they arrive (a sink dropping them in XDP on the far veth end), beside
//!   a trivial redirect program on the same path.
//!
//! `--only decap|encap` runs just that veth row (with its baseline) and
//! writes no results: a steady load to attach a profiler to
//! (`perf record -e cpu-clock -a -- xgw-bench --only decap`).
use std::{
    fs,
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp};

use xgw_tests::{
    gateway::TestGateway,
    netns::{self, Netns, Veth},
    packet::geneve::*,
};

const VM_MAC: [u8; 6] = [0x02, 0, 0x5e, 0x20, 0, 1];
const REMOTE_MAC: [u8; 6] = [0x02, 0, 0x5e, 0x20, 0, 2];

struct Row {
    name: &'static str,
    unit: &'static str,
    baseline: &'static str,
    value: Stats,
    base: Stats,
}

#[derive(Clone, Copy)]
struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Stats { median: v[v.len() / 2], min: v[0], max: v[v.len() - 1] }
}

/// Mean ns per packet of `prog` on `pkt` over `packets` runs.
///
/// One packet per BPF_PROG_TEST_RUN call: with `repeat` > 1 the kernel runs
/// the program again on the *same* buffer, so after the first decap every
/// further run sees an already stripped frame and measures nothing useful.
/// The kernel times each call around the program alone, so the syscall's
/// own cost stays out of the figure.
fn ns_per_packet(gw: &TestGateway, prog: &str, pkt: &[u8], packets: u32, ifindex: u32) -> f64 {
    let p = gw.program(prog);
    let mut out = vec![0u8; pkt.len() + 256];
    let md = xdp_md(pkt.len(), ifindex);
    let mut total = 0u128;
    for _ in 0..packets {
        let opts = TestRunOptions {
            data_in: Some(pkt),
            data_out: Some(&mut out),
            ctx_in: (ifindex != 0).then_some(&md[..]),
            repeat: 1,
            ..TestRunOptions::new()
        };
        total += p.test_run(opts).expect("test_run").duration.as_nanos();
    }
    total as f64 / packets as f64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = args.iter().position(|a| a == "--only").map(|i| args.get(i + 1).cloned().expect("--only decap|encap"));
    let (repeat, runs, frames) = if quick { (10_000u32, 3, 200_000u32) } else { (1_000_000, 7, 5_000_000) };
    let out_dir = PathBuf::from(std::env::var("XGW_BENCH_OUT").unwrap_or_else(|_| "bench/results".into()));

    if let Some(only) = &only {
        assert!(only == "decap" || only == "encap", "--only decap|encap, not {only}");
        for r in veth_pps(frames, runs, Some(only)) {
            println!("{}: {:.0}k pkt/s, {} {:.0}k, ratio {:.2}, {:.1} ns/pkt more", r.name, r.value.median / 1e3,
                     r.baseline, r.base.median / 1e3, r.value.median / r.base.median, 1e9 / r.value.median - 1e9 / r.base.median);
        }
        return;
    }
    let mut gw = TestGateway::load(&["xgw_pass", "xgw_uplink", "xgw_local"]);
    let (decap_pkt, encap_pkt) = bench_setup(&mut gw);
    // The VM asks for its peer's MAC; xgw_local answers from NEIGH in place.
    let (vm_ip, peer_ip) = ([203, 0, 113, 1], [203, 0, 113, 2]);
    gw.add_neigh(5001, xgw_common::maps::ipv4_mapped(peer_ip), REMOTE_MAC);
    let arp_pkt = xgw_tests::packet::arp_request(VM_MAC, vm_ip, peer_ip);
    // Interleave measured and baseline runs so drift on a noisy VM hits both.
    let (mut pass, mut decap, mut encap, mut arp) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        pass.push(ns_per_packet(&gw, "xgw_pass", &decap_pkt, repeat, 0));
        decap.push(ns_per_packet(&gw, "xgw_uplink", &decap_pkt, repeat, 0));
        encap.push(ns_per_packet(&gw, "xgw_local", &encap_pkt, repeat, 1));
        arp.push(ns_per_packet(&gw, "xgw_local", &arp_pkt, repeat, 1));
    }
    // Every run must have done the work for real, or the figure is meaningless.
    let n = repeat as u64 * runs as u64;
    assert_eq!(gw.port_stats(7).rx.packets, n, "not every decap run decapsulated");
    assert_eq!(gw.port_stats(7).tx.packets, n, "not every encap run encapsulated");
    assert_eq!(gw.replies()["arp"], n, "not every ARP request was answered");
    let pass = stats(pass);
    let mut rows = vec![
        Row { name: "decap (Geneve+OVN option, IPv4)", unit: "ns/pkt", baseline: "xgw_pass", value: stats(decap), base: pass },
        Row { name: "encap (Geneve+OVN option, IPv4)", unit: "ns/pkt", baseline: "xgw_pass", value: stats(encap), base: pass },
        Row { name: "ARP reply (request for a bound IP)", unit: "ns/pkt", baseline: "xgw_pass", value: stats(arp), base: pass },
    ];
    drop(gw);
    rows.extend(veth_pps(frames, runs, None));

    let mut md = format!(
        "| benchmark | unit | value (median, min-max) | baseline | baseline value | ratio |\n|---|---|---|---|---|---|\n"
    );
    let mut json = vec![];
    for r in &rows {
        let ratio = r.value.median / r.base.median;
        let f = |s: Stats| {
            if r.unit == "pkt/s" {
                format!("{:.0}k ({:.0}k-{:.0}k)", s.median / 1e3, s.min / 1e3, s.max / 1e3)
            } else {
                format!("{:.1} ({:.1}-{:.1})", s.median, s.min, s.max)
            }
        };
        md += &format!("| {} | {} | {} | {} | {} | {:.2} |\n", r.name, r.unit, f(r.value), r.baseline, f(r.base), ratio);
        json.push(serde_json::json!({
            "name": r.name, "unit": r.unit,
            "value": {"median": r.value.median, "min": r.value.min, "max": r.value.max},
            "baseline": {"name": r.baseline, "median": r.base.median, "min": r.base.min, "max": r.base.max},
            "ratio": ratio,
        }));
        assert!(r.value.median > 0.0 && r.base.median > 0.0, "{}: a zero figure means nothing was measured", r.name);
    }
    println!(
        "mode: {}, test_run: {repeat} packets per run; veth: {frames} frames per run; {runs} runs each\n\n{md}",
        if quick { "quick" } else { "full" }
    );
    fs::create_dir_all(&out_dir).expect("create bench/results");
    let suffix = if quick { "-quick" } else { "" };
    fs::write(out_dir.join(format!("bench{suffix}.md")), &md).unwrap();
    fs::write(
        out_dir.join(format!("bench{suffix}.json")),
        serde_json::to_string_pretty(&serde_json::json!({"repeat": repeat, "frames": frames, "runs": runs, "rows": json}))
            .unwrap(),
    )
    .unwrap();
}

/// struct xdp_md for test_run: the frame as received on `ifindex`.
fn xdp_md(len: usize, ifindex: u32) -> Vec<u8> {
    [0, len as u32, 0, ifindex, 0, 0].iter().flat_map(|w: &u32| w.to_ne_bytes()).collect()
}

/// Packets per second through the real veth path, decap and encap, each
/// beside `xgw_redirect` (redirect to DEVMAP[0], nothing else) forwarding
/// the same frame from the same interface to the same destination.
///
///   [hv: sink] hv0 -- ul [gw: xgw_uplink / xgw_local] p -- eth0 [vm: sink]
fn veth_pps(frames: u32, runs: usize, only: Option<&str>) -> Vec<Row> {
    let gw_ns = Netns::new("bgw");
    let hv = Netns::new("bhv");
    let vm = Netns::new("bvm");
    Veth::new(&gw_ns, "ul", "198.51.100.1/24", &hv, "hv0", "198.51.100.2/24");
    Veth::new(&gw_ns, "p", "", &vm, "eth0", "");
    let mut gw = TestGateway::load(&["xgw_uplink", "xgw_local", "xgw_redirect", "xgw_drop"]);
    gw.in_netns(&gw_ns);
    let (ul, p) = (gw_ns.ifindex("ul"), gw_ns.ifindex("p"));
    let (decap_pkt, encap_pkt) = bench_setup_on(&mut gw, ul, p);
    gw.attach(&hv, "xgw_drop", "hv0");
    gw.attach(&vm, "xgw_drop", "eth0");

    let sink = |ns: &Netns, ifname: &str| -> u64 {
        let out = ns.ok(&["ethtool", "-S", ifname]);
        out.lines()
            .filter(|l| l.trim_start().starts_with("rx_queue_") && l.contains("_xdp_drops:"))
            .map(|l| l.rsplit(':').next().unwrap().trim().parse::<u64>().unwrap())
            .sum()
    };
    // Frames delivered to the sink per second of generator time.
    let run = |gw: &TestGateway, prog: &str, pkt: &[u8], ifindex: u32, sink_ns: &Netns, sink_if: &str| -> f64 {
        let before = sink(sink_ns, sink_if);
        let md = xdp_md(pkt.len(), ifindex);
        let p: &Xdp = gw.program(prog);
        let elapsed = netns::enter(&gw_ns.name, || {
            let t = Instant::now();
            let opts = TestRunOptions {
                data_in: Some(pkt),
                ctx_in: Some(&md),
                repeat: frames,
                attrs: TestRunAttrs::new().xdp_live_frames(64),
                ..TestRunOptions::new()
            };
            p.test_run(opts).unwrap_or_else(|e| panic!("live test_run of {prog}: {e}"));
            t.elapsed()
        });
        std::thread::sleep(Duration::from_millis(50));
        let delivered = sink(sink_ns, sink_if) - before;
        assert!(delivered * 10 >= frames as u64 * 9, "{prog}: only {delivered} of {frames} frames arrived");
        delivered as f64 / elapsed.as_secs_f64()
    };
    let (mut decap, mut decap_base, mut encap, mut encap_base) = (vec![], vec![], vec![], vec![]);
    let (do_decap, do_encap) = (only != Some("encap"), only != Some("decap"));
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
        }
        if do_encap {
            gw.devmap_set(0, ul);
            encap_base.push(run(&gw, "xgw_redirect", &encap_pkt, p, &hv, "hv0"));
        }
    }
    let mut rows = vec![];
    if do_decap {
        rows.push(Row { name: "decap on the veth path (uplink -> port)", unit: "pkt/s", baseline: "xgw_redirect", value: stats(decap), base: stats(decap_base) });
    }
    if do_encap {
        rows.push(Row { name: "encap on the veth path (port -> uplink)", unit: "pkt/s", baseline: "xgw_redirect", value: stats(encap), base: stats(encap_base) });
    }
    rows
}

/// Configures one tunnel and one local port on lo (test_run only needs an
/// interface that exists); returns a Geneve frame that decapsulates to the
/// port and an inner frame the port encapsulates toward the tunnel.
fn bench_setup(gw: &mut TestGateway) -> (Vec<u8>, Vec<u8>) {
    bench_setup_on(gw, 1, 1)
}

fn bench_setup_on(gw: &mut TestGateway, uplink: u32, port: u32) -> (Vec<u8>, Vec<u8>) {
    use xgw_common::maps::*;
    let (gw_ip, hv_ip) = ([198, 51, 100, 1], [198, 51, 100, 2]);
    let (vm_mac, remote_mac) = (VM_MAC, REMOTE_MAC);
    let (gw_mac, hv_mac) = ([2, 0, 0x5e, 0x10, 0, 1], [2, 0, 0x5e, 0x10, 0, 2]);
    gw.set_uplink(Uplink { ifindex: uplink, mtu: 1500, mac: gw_mac, flags: UPLINK_HAS_IP4, _pad: 0, ip4: gw_ip, ip6: [0; 16] });
    gw.set_uplink_devmap(uplink);
    gw.add_tunnel(7, Tunnel { remote: ipv4_mapped(hv_ip), nexthop_mac: hv_mac, flags: TUNNEL_OVN_METADATA, _pad: 0, vni: 5001 });
    gw.add_local_port(port, LocalPort { vni: 5001, ofport: 3, port_key: 0x11, mac: vm_mac, _pad: [0; 2] });
    gw.add_remote(5001, remote_mac, None, 7, 0x22);
    // 64-byte inner frames, both ways.
    let inner = |src, dst, sip, dip| {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ethernet2(src, dst).ipv4(sip, dip, 64).udp(1000, 2000).write(&mut v, &[0; 22]).unwrap();
        v
    };
    let mut decap = Vec::new();
    etherparse::PacketBuilder::ethernet2(hv_mac, gw_mac)
        .ipv4(hv_ip, gw_ip, 64)
        .udp(50123, 6081)
        .write(&mut decap, &geneve_payload(&[ovn_option(0x22, 0x11)], 5001, &inner(remote_mac, vm_mac, [203, 0, 113, 2], [203, 0, 113, 1])))
        .unwrap();
    (decap, inner(vm_mac, remote_mac, [203, 0, 113, 1], [203, 0, 113, 2]))
}
