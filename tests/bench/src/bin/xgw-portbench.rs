//! `cargo xtask bench`, port half: the OpenFlow port map on the real BPF
//! maps and a redb state directory. Prints a markdown table and writes
//! bench/results/ports[-quick].md and .json.
//!
//! - durable add / delete: `PortMap::add` / `delete`, one fsync each (the
//!   acknowledgement waits for the disk), one port at a time;
//! - batched add / delete: `apply_desired` of 10,000 tunnels, then of none:
//!   group commit, one fsync per call;
//! - baseline for both: the same operations on the in-memory datapath and
//!   store, i.e. the port map's own cost;
//! - resident memory before and after a long add/delete churn (batches of
//!   1,000 changes around 4,096 live tunnels).
use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use xgw::ofport::{AllocatorConfig, BpfDatapath, Datapath, MemDatapath, MemStore, PortMap, PortSpec, RedbStore, Store};
use xgw_tests::ports::{tunnel_n, TempDir};

struct Row {
    name: String,
    value: f64,
    unit: &'static str,
    baseline: Option<f64>,
    note: String,
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn bpf() -> BpfDatapath {
    let mut ebpf = xgw::datapath::load().expect("load datapath (root?)");
    BpfDatapath::from_ebpf(&mut ebpf).expect("datapath maps")
}

fn open<D: Datapath, S: Store>(dp: D, store: S) -> PortMap<D, S> {
    PortMap::open(dp, store, AllocatorConfig::default()).expect("open port map")
}

/// Seconds for `n` single durable adds, then for the `n` deletes.
fn single<D: Datapath, S: Store>(pm: &mut PortMap<D, S>, specs: &[PortSpec]) -> (f64, f64) {
    let now = Instant::now();
    let t = Instant::now();
    for s in specs {
        pm.add(s, now).expect("add");
    }
    let add = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for s in specs {
        pm.delete(s.name(), now).expect("delete");
    }
    (add, t.elapsed().as_secs_f64())
}

/// Seconds for one `apply_desired` adding `specs`, then one removing them.
fn batched<D: Datapath, S: Store>(pm: &mut PortMap<D, S>, specs: &[PortSpec]) -> (f64, f64) {
    let now = Instant::now();
    let t = Instant::now();
    let r = pm.apply_desired(specs, now).expect("apply");
    let add = t.elapsed().as_secs_f64();
    assert!(r.failed.is_empty() && r.added.len() == specs.len(), "{:?}", r.failed.first());
    let t = Instant::now();
    let r = pm.apply_desired(&[], now).expect("apply");
    assert!(r.failed.is_empty() && r.deleted.len() == specs.len());
    (add, t.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The port map under load: durable single adds, batches and churn, on real maps and redb. Results go to $XGW_BENCH_OUT (default bench/results).
#[derive(clap::Parser)]
struct Args {
    /// Fewer and shorter runs: checks that everything works.
    #[arg(long)]
    quick: bool,
}

fn main() {
    let Args { quick } = clap::Parser::parse();
    let (singles, runs, churn_ops) = if quick { (300, 1, 100_000u64) } else { (2_000, 3, 1_000_000) };
    let batch = 10_000u32;
    let out_dir = PathBuf::from(std::env::var("XGW_BENCH_OUT").unwrap_or_else(|_| "bench/results".into()));
    let tmp = TempDir::new("portbench");
    let fresh_state = |i: usize| -> PathBuf { tmp.path.join(format!("s{i}")) };
    let mut rows = Vec::new();
    let rate = |n: usize, secs: f64| n as f64 / secs;

    // Durable, one port at a time.
    let specs: Vec<PortSpec> = (0..singles).map(tunnel_n).collect();
    let (mut adds, mut dels, mut mem_adds, mut mem_dels) = (vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        let mut pm = open(bpf(), RedbStore::open(&fresh_state(run)).expect("store"));
        let (a, d) = single(&mut pm, &specs);
        adds.push(rate(specs.len(), a));
        dels.push(rate(specs.len(), d));
        let mut pm = open(MemDatapath::new(), MemStore::new());
        let (a, d) = single(&mut pm, &specs);
        mem_adds.push(rate(specs.len(), a));
        mem_dels.push(rate(specs.len(), d));
    }
    let fs = filesystem_of(&tmp.path);
    rows.push(Row {
        name: "durable add (fsync each), tunnels/s".into(),
        value: median(adds),
        unit: "1/s",
        baseline: Some(median(mem_adds)),
        note: format!("{singles} single adds, redb on {fs}"),
    });
    rows.push(Row {
        name: "durable delete (fsync each), tunnels/s".into(),
        value: median(dels),
        unit: "1/s",
        baseline: Some(median(mem_dels)),
        note: format!("{singles} single deletes"),
    });

    // Batched: apply_desired, one fsync per call.
    let specs: Vec<PortSpec> = (0..batch).map(tunnel_n).collect();
    let (mut loads, mut unloads, mut mem_loads, mut mem_unloads) = (vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        let mut pm = open(bpf(), RedbStore::open(&fresh_state(100 + run)).expect("store"));
        let (a, d) = batched(&mut pm, &specs);
        loads.push(a);
        unloads.push(d);
        let mut pm = open(MemDatapath::new(), MemStore::new());
        let (a, d) = batched(&mut pm, &specs);
        mem_loads.push(a);
        mem_unloads.push(d);
    }
    let (load, unload) = (median(loads), median(unloads));
    rows.push(Row {
        name: format!("time to load {batch} tunnels (one apply_desired), ms"),
        value: load * 1e3,
        unit: "ms",
        baseline: Some(median(mem_loads.clone()) * 1e3),
        note: "maps + redb, one fsync".into(),
    });
    rows.push(Row {
        name: "batched add (group commit), tunnels/s".into(),
        value: f64::from(batch) / load,
        unit: "1/s",
        baseline: Some(f64::from(batch) / median(mem_loads)),
        note: format!("{batch} per apply_desired"),
    });
    rows.push(Row {
        name: "batched delete (group commit), tunnels/s".into(),
        value: f64::from(batch) / unload,
        unit: "1/s",
        baseline: Some(f64::from(batch) / median(mem_unloads)),
        note: format!("{batch} per apply_desired"),
    });

    // Memory under churn: 4,096 live tunnels, each apply_desired retires
    // the 500 oldest and adds 500 new ones (1,000 operations).
    let (live, step) = (4_096u32, 500u32);
    let mut pm = open(bpf(), RedbStore::open(&fresh_state(200)).expect("store"));
    let mut first = 0u32;
    let window = |first: u32| -> Vec<PortSpec> { (first..first + live).map(tunnel_n).collect() };
    pm.apply_desired(&window(first), Instant::now()).expect("apply");
    // Warm up (allocator pools, redb pages, hold-down queue filling) before
    // the first reading: what must stay flat is the steady state.
    let warmup = churn_ops / 10;
    let (mut ops, mut rss_before) = (0u64, 0);
    let mut t_steady = Instant::now();
    while ops < churn_ops + warmup {
        if ops >= warmup && rss_before == 0 {
            rss_before = rss_kib();
            t_steady = Instant::now();
        }
        first += step;
        let r = pm.apply_desired(&window(first), Instant::now()).expect("apply");
        assert!(r.failed.is_empty(), "{:?}", r.failed.first());
        assert_eq!((r.added.len(), r.deleted.len()), (step as usize, step as usize));
        ops += 2 * u64::from(step);
    }
    let churn_secs = t_steady.elapsed().as_secs_f64();
    let rss_after = rss_kib();
    assert_eq!(pm.allocator().in_use(), live as usize);
    let held = pm.allocator().held_down();
    drop(pm);
    rows.push(Row {
        name: format!("VmRSS before {churn_ops} churn operations, KiB"),
        value: rss_before as f64,
        unit: "KiB",
        baseline: None,
        note: format!("after {warmup} warm-up operations, {live} live tunnels"),
    });
    rows.push(Row {
        name: format!("VmRSS after {churn_ops} churn operations, KiB"),
        value: rss_after as f64,
        unit: "KiB",
        baseline: None,
        note: format!("{:+} KiB; {held} numbers in hold-down", rss_after as i64 - rss_before as i64),
    });
    rows.push(Row {
        name: "churn (batched add+delete), operations/s".into(),
        value: churn_ops as f64 / churn_secs,
        unit: "1/s",
        baseline: None,
        note: "1,000 changes per apply_desired".into(),
    });

    let mut md = String::from("| benchmark | value | in-memory baseline | note |\n|---|---|---|---|\n");
    let mut json = vec![];
    for r in &rows {
        let base = r.baseline.map_or("-".into(), |b| format!("{b:.0}"));
        md += &format!("| {} | {:.0} | {base} | {} |\n", r.name, r.value, r.note);
        json.push(serde_json::json!({"name": r.name, "unit": r.unit, "value": r.value, "baseline": r.baseline, "note": r.note}));
        assert!(r.value > 0.0, "{}: nothing measured", r.name);
    }
    println!("mode: {}, {runs} run(s) each, medians\n\n{md}", if quick { "quick" } else { "full" });
    std::fs::create_dir_all(&out_dir).expect("create bench/results");
    let suffix = if quick { "-quick" } else { "" };
    std::fs::write(out_dir.join(format!("ports{suffix}.md")), &md).expect("write md");
    let doc = serde_json::json!({"runs": runs, "quick": quick, "rows": json});
    std::fs::write(out_dir.join(format!("ports{suffix}.json")), serde_json::to_string_pretty(&doc).unwrap())
        .expect("write json");
}

/// The filesystem type under `path` (fsync on tmpfs is free, which would
/// make the durable figures meaningless).
fn filesystem_of(path: &Path) -> String {
    let out = std::process::Command::new("findmnt").args(["-n", "-o", "FSTYPE", "-T"]).arg(path).output();
    out.ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".into())
}
