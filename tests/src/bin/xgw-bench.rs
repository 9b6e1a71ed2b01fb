//! `cargo xtask bench`: every figure beside a baseline measured in the same
//! run, as medians of several runs with their min-max spread. Writes a
//! markdown table and a JSON file under bench/results/.
//!
//! Measured so far: program cost through BPF_PROG_TEST_RUN (ns per packet,
//! averaged by the kernel over `repeat` runs), decap beside a trivial XDP_PASS.
use std::{fs, path::PathBuf};

use aya::programs::{TestRun, TestRunOptions};

use xgw_tests::{gateway::TestGateway, packet::geneve::*};

struct Row {
    name: &'static str,
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
fn ns_per_packet(gw: &TestGateway, prog: &str, pkt: &[u8], packets: u32) -> f64 {
    let p = gw.program(prog);
    let mut out = vec![0u8; pkt.len() + 256];
    let mut total = 0u128;
    for _ in 0..packets {
        let opts = TestRunOptions { data_in: Some(pkt), data_out: Some(&mut out), repeat: 1, ..TestRunOptions::new() };
        total += p.test_run(opts).expect("test_run").duration.as_nanos();
    }
    total as f64 / packets as f64
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (repeat, runs) = if quick { (10_000u32, 3) } else { (1_000_000, 7) };
    let out_dir = PathBuf::from(std::env::var("XGW_BENCH_OUT").unwrap_or_else(|_| "bench/results".into()));

    let mut gw = TestGateway::load(&["xgw_pass", "xgw_uplink"]);
    let decap_pkt = bench_setup(&mut gw);
    // Interleave measured and baseline runs so drift on a noisy VM hits both.
    let (mut pass, mut decap) = (vec![], vec![]);
    for _ in 0..runs {
        pass.push(ns_per_packet(&gw, "xgw_pass", &decap_pkt, repeat));
        decap.push(ns_per_packet(&gw, "xgw_uplink", &decap_pkt, repeat));
    }
    // Every run must have decapsulated for real, or the figure is meaningless.
    let decapped = gw.port_stats(7).rx.packets;
    assert_eq!(decapped, repeat as u64 * runs as u64, "not every decap run decapsulated");
    let rows = [Row { name: "decap (Geneve+OVN option, IPv4), ns/pkt", baseline: "xgw_pass, ns/pkt", value: stats(decap), base: stats(pass) }];

    let mut md = format!(
        "| benchmark | value (median, min-max) | baseline | baseline value | ratio |\n|---|---|---|---|---|\n"
    );
    let mut json = vec![];
    for r in &rows {
        let ratio = r.value.median / r.base.median;
        md += &format!(
            "| {} | {:.1} ({:.1}-{:.1}) | {} | {:.1} ({:.1}-{:.1}) | {:.2} |\n",
            r.name, r.value.median, r.value.min, r.value.max, r.baseline, r.base.median, r.base.min, r.base.max, ratio
        );
        json.push(serde_json::json!({
            "name": r.name, "unit": "ns/pkt",
            "value": {"median": r.value.median, "min": r.value.min, "max": r.value.max},
            "baseline": {"name": r.baseline, "median": r.base.median, "min": r.base.min, "max": r.base.max},
            "ratio": ratio,
        }));
        assert!(r.value.median > 0.0 && r.base.median > 0.0, "{}: a zero timing means nothing was measured", r.name);
    }
    println!("mode: {}, {repeat} packets per run, {runs} runs each\n\n{md}", if quick { "quick" } else { "full" });
    fs::create_dir_all(&out_dir).expect("create bench/results");
    let suffix = if quick { "-quick" } else { "" };
    fs::write(out_dir.join(format!("bench{suffix}.md")), &md).unwrap();
    fs::write(
        out_dir.join(format!("bench{suffix}.json")),
        serde_json::to_string_pretty(&serde_json::json!({"repeat": repeat, "runs": runs, "rows": json})).unwrap(),
    )
    .unwrap();
}

/// Configures one tunnel and one local port; returns a Geneve packet that
/// decapsulates to that port.
fn bench_setup(gw: &mut TestGateway) -> Vec<u8> {
    use xgw_common::maps::*;
    let (gw_ip, hv_ip) = ([198, 51, 100, 1], [198, 51, 100, 2]);
    let vm_mac = [0x02, 0, 0x5e, 0x20, 0, 1];
    gw.set_uplink(Uplink { ifindex: 1, mtu: 1500, mac: [2, 0, 0x5e, 0x10, 0, 1], flags: UPLINK_HAS_IP4, _pad: 0, ip4: gw_ip, ip6: [0; 16] });
    gw.add_tunnel(7, Tunnel { remote: ipv4_mapped(hv_ip), nexthop_mac: [2, 0, 0x5e, 0x10, 0, 2], flags: 0, _pad: 0, vni: 5001 });
    gw.add_local_port(1, LocalPort { vni: 5001, ofport: 3, port_key: 0x11, mac: vm_mac, _pad: [0; 2] });
    // 64-byte inner frame.
    let mut inner = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0x5e, 0x20, 0, 2], vm_mac)
        .ipv4([203, 0, 113, 2], [203, 0, 113, 1], 64)
        .udp(1000, 2000)
        .write(&mut inner, &[0; 22])
        .unwrap();
    let mut pkt = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0x5e, 0x10, 0, 2], [2, 0, 0x5e, 0x10, 0, 1])
        .ipv4(hv_ip, gw_ip, 64)
        .udp(50123, 6081)
        .write(&mut pkt, &geneve_payload(&[ovn_option(1, 0x11)], 5001, &inner))
        .unwrap();
    pkt
}
