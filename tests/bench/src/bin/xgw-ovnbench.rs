//! `cargo xtask bench`, OVN half (issue 18): xgw as a chassis of a real
//! OVN 23.03, beside ovn-controller on the same Southbound or beside xgw's
//! own config file. Writes bench/results/ovn[-quick].md and .json.
//!
//! - `nb_cfg` acknowledgement: a Northbound change (vm1's MAC, on ls1,
//!   the switch every chassis of the lab has a port on), made by the
//!   transaction `ovn-nbctl --wait=hv` makes and by `ovn-nbctl` itself,
//!   to each chassis' Chassis_Private.nb_cfg, p50 and p99, xgw beside the
//!   two hypervisors' ovn-controller;
//! - convergence and resident memory at scale: N chassis (IPv6 geneve
//!   encaps) and M VM ports bound to them on xgw's switch, added in one
//!   transaction to a Southbound without northd, from the commit to xgw's
//!   acknowledgement of the transaction's nb_cfg (its maps written),
//!   beside the same tunnels and bindings through xgw's config file
//!   (SIGHUP to READY=1); the daemon's VmRSS beside its VmRSS with an empty
//!   Southbound;
//! - a raft leader SIGKILLed under a client: to its monitor resumed on
//!   another member, xgw beside ovn-controller.
//!
//! The measurements are `xgw_bench::ovn`'s. `--only nb-cfg|scale|reconnect`
//! runs one part and writes nothing.
use std::{fmt::Write as _, path::PathBuf, time::Instant};

use xgw_bench::{
    self as bench,
    ovn::{self, pct},
    Row, Stats,
};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Only {
    NbCfg,
    Scale,
    Reconnect,
}

/// xgw as an OVN chassis: nb_cfg acknowledgement, convergence and memory with thousands of chassis and bindings, reconnection after a raft leader loss. Results go to $XGW_BENCH_OUT (default bench/results).
#[derive(clap::Parser)]
struct Args {
    /// Smaller sizes and fewer runs: checks that everything works.
    #[arg(long)]
    quick: bool,
    /// Run only this part and write no results.
    #[arg(long, value_enum)]
    only: Option<Only>,
}

/// The `p`th percentile of `v`, with its min-max.
fn at(v: &[f64], p: f64) -> Stats {
    let s = bench::stats(v.to_vec());
    Stats { median: pct(v, p), min: s.min, max: s.max }
}

fn one(v: f64) -> Stats {
    Stats { median: v, min: v, max: v }
}

struct Sizes {
    changes: usize,
    chassis: usize,
    bindings: usize,
    runs: usize,
    kills: usize,
}

const NB_CFG_P50: &str = "nb_cfg acknowledged: Northbound change (ovn-nbctl's transaction) to Chassis_Private, p50";
const NB_CFG_P99: &str = "nb_cfg acknowledged: Northbound change (ovn-nbctl's transaction) to Chassis_Private, p99";
const NBCTL_P50: &str = "nb_cfg acknowledged: `ovn-nbctl --wait=hv` started to Chassis_Private, p50";
const NBCTL_P99: &str = "nb_cfg acknowledged: `ovn-nbctl --wait=hv` started to Chassis_Private, p99";
const RECONNECT: &str = "raft leader SIGKILLed under the client: to its monitor resumed on another member, p50";

fn scale_names(s: &Sizes) -> [String; 3] {
    [
        format!(
            "convergence: {} chassis + {} port bindings added in one Southbound transaction",
            s.chassis, s.bindings
        ),
        "removal: the same rows deleted in one Southbound transaction".to_owned(),
        format!("VmRSS with {} chassis + {} port bindings", s.chassis, s.bindings),
    ]
}

fn main() {
    let Args { quick, only } = clap::Parser::parse();
    let sizes = if quick {
        Sizes { changes: 20, chassis: 100, bindings: 1_000, runs: 1, kills: 2 }
    } else {
        Sizes { changes: 200, chassis: 1_000, bindings: 10_000, runs: 3, kills: 8 }
    };
    let out_dir = PathBuf::from(std::env::var("XGW_BENCH_OUT").unwrap_or_else(|_| "bench/results".into()));
    let want = |part: Only| only.is_none_or(|o| o == part);
    let mut rows = Vec::new();
    let mut expected: Vec<String> = Vec::new();
    let mut notes = String::new();
    let mut detail = serde_json::json!({"quick": quick});
    let mut took = serde_json::Map::new();

    if want(Only::NbCfg) {
        eprintln!("nb_cfg: {} Northbound changes, acknowledged by xgw and two ovn-controller", sizes.changes);
        let t = Instant::now();
        let r = ovn::nb_cfg(sizes.changes);
        took.insert("nb_cfg_s".into(), t.elapsed().as_secs_f64().into());
        let base = "ovn-controller (hv1, hv2)";
        let (t, n) = (&r.transaction, &r.nbctl);
        rows.push(Row::new(NB_CFG_P50, "ms", base, at(&t.xgw, 50.0), at(&t.ovn_controller, 50.0)));
        rows.push(Row::new(NB_CFG_P99, "ms", base, at(&t.xgw, 99.0), at(&t.ovn_controller, 99.0)));
        rows.push(Row::new(NBCTL_P50, "ms", base, at(&n.xgw, 50.0), at(&n.ovn_controller, 50.0)));
        rows.push(Row::new(NBCTL_P99, "ms", base, at(&n.xgw, 99.0), at(&n.ovn_controller, 99.0)));
        expected.extend([NB_CFG_P50, NB_CFG_P99, NBCTL_P50, NBCTL_P99].map(str::to_owned));
        let _ = writeln!(
            notes,
            "- nb_cfg: {} + {} changes (vm1, bound to hv1, to another MAC and back: xgw rewrites its binding, the \
             hypervisors their flows; pairs alternate between the bench's transaction and `ovn-nbctl --wait=hv \
             lsp-set-addresses`), 2 ovn-controller acks per change; the part every chassis shares, to \
             SB_Global.nb_cfg (the Northbound commit, northd): p50 {:.1} ms from the transaction, {:.1} ms from \
             ovn-nbctl started; `ovn-nbctl --wait=hv` as its caller sees it (started to exited) p50 {:.1} ms",
            t.xgw.len(),
            n.xgw.len(),
            pct(&t.southbound, 50.0),
            pct(&n.southbound, 50.0),
            pct(&r.wait_hv, 50.0)
        );
        let acks = |a: &ovn::Acks| serde_json::json!({"xgw_ms": a.xgw, "ovn_controller_ms": a.ovn_controller, "sb_global_ms": a.southbound});
        detail["nb_cfg"] = serde_json::json!({"transaction": acks(t), "ovn_nbctl": acks(n), "wait_hv_ms": r.wait_hv});
    }

    if want(Only::Scale) {
        eprintln!("scale: {} chassis, {} port bindings, {} runs", sizes.chassis, sizes.bindings, sizes.runs);
        let t = Instant::now();
        let r = ovn::scale(sizes.chassis, sizes.bindings, sizes.runs);
        took.insert("scale_s".into(), t.elapsed().as_secs_f64().into());
        let [load, unload, rss] = scale_names(&sizes);
        let mib = |v: &[f64]| bench::stats(v.iter().map(|k| k / 1024.0).collect());
        rows.push(Row::new(
            &load,
            "ms",
            "the same tunnels + bindings from xgw's config file (SIGHUP to READY=1)",
            bench::stats(r.load.clone()),
            bench::stats(r.load_config.clone()),
        ));
        rows.push(Row::new(
            &unload,
            "ms",
            "the config file emptied (SIGHUP to READY=1)",
            bench::stats(r.unload.clone()),
            bench::stats(r.unload_config.clone()),
        ));
        rows.push(Row::new(
            &rss,
            "MiB",
            "xgw with an empty Southbound",
            mib(&r.rss_kib),
            one(r.rss_empty_kib / 1024.0),
        ));
        expected.extend([load, unload, rss]);
        let _ = writeln!(
            notes,
            "- scale: {} run(s); the loading transaction took {:.0} ms to commit (median); a fresh monitor of \
             Chassis, Encap, Datapath_Binding and Port_Binding reads the loaded Southbound in {:.0} ms (median); \
             xgw's peak VmRSS (VmHWM) {:.1} MiB; the config-file daemon's VmRSS {:.1} MiB loaded, {:.1} MiB empty",
            sizes.runs,
            pct(&r.commit, 50.0),
            pct(&r.read, 50.0),
            r.peak_kib / 1024.0,
            pct(&r.rss_config_kib, 50.0) / 1024.0,
            r.rss_config_empty_kib / 1024.0
        );
        detail["scale"] = serde_json::json!({
            "chassis": r.chassis, "bindings": r.bindings, "runs": sizes.runs,
            "load_ms": r.load, "load_config_ms": r.load_config, "unload_ms": r.unload,
            "unload_config_ms": r.unload_config, "commit_ms": r.commit, "fresh_monitor_read_ms": r.read,
            "rss_empty_kib": r.rss_empty_kib, "rss_kib": r.rss_kib, "peak_kib": r.peak_kib,
            "config_rss_empty_kib": r.rss_config_empty_kib, "config_rss_kib": r.rss_config_kib,
        });
    }

    if want(Only::Reconnect) {
        eprintln!("reconnect: {} raft leader kills", sizes.kills);
        let t = Instant::now();
        let r = ovn::reconnect(sizes.kills);
        took.insert("reconnect_s".into(), t.elapsed().as_secs_f64().into());
        assert!(!r.xgw.is_empty() && !r.ovn_controller.is_empty(), "a client was never measured: {r:?}");
        let base = "ovn-controller (every reconnection of the run: after its 1 s backoff, or without one)";
        rows.push(Row::new(RECONNECT, "ms", base, at(&r.xgw, 50.0), at(&r.ovn_controller, 50.0)));
        expected.push(RECONNECT.to_owned());
        // ovn-controller either waits its minimum backoff (1 s) or, with a
        // backoff-free try left, reconnects at once: two groups 1 s apart.
        let (waited, at_once): (Vec<f64>, Vec<f64>) = r.ovn_controller.iter().partition(|&&t| t >= 500.0);
        let list = |v: &[f64]| {
            if v.is_empty() {
                return "none".to_owned();
            }
            v.iter().map(|t| format!("{t:.1} ms")).collect::<Vec<_>>().join(", ")
        };
        let _ = writeln!(
            notes,
            "- reconnect: {} kills of the leader, {} xgw and {} ovn-controller samples; ovn-controller reconnected \
             after its 1 s minimum backoff {} times ({}) and at once {} times ({}; a backoff-free try, which \
             OVS's ovsdb-cs hands back when it forces a reconnection itself); before the kills, its \
             first n - 1 backoff-free tries (n = 3 remotes) were used up by dropping its connection \
             (`ovsdb-server/reconnect`, timed from the command started: {}); moves to place the leader under \
             the client (a transfer, or the leader killed with the third member's election delayed) per kill: {:?}",
            sizes.kills,
            r.xgw.len(),
            r.ovn_controller.len(),
            waited.len(),
            list(&waited),
            at_once.len(),
            list(&at_once),
            list(&r.ovn_controller_free),
            r.leader_moves
        );
        detail["reconnect"] = serde_json::json!({
            "kills": sizes.kills, "xgw_ms": r.xgw, "ovn_controller_ms": r.ovn_controller,
            "ovn_controller_backoff_free_ms": r.ovn_controller_free, "leader_moves": r.leader_moves,
        });
    }

    bench::check(&rows, &expected);
    let parts: Vec<String> = took.iter().map(|(k, v)| format!("{} {:.1}", k, v.as_f64().unwrap_or(0.0))).collect();
    let _ = writeln!(notes, "- seconds per part, setup included: {}", parts.join(", "));
    detail["seconds"] = took.into();
    let md = format!("{}\n{notes}", bench::markdown(&rows));
    println!("mode: {}\n\n{md}", if quick { "quick" } else { "full" });
    if only.is_some() {
        return;
    }
    std::fs::create_dir_all(&out_dir).expect("create bench/results");
    let suffix = if quick { "-quick" } else { "" };
    std::fs::write(out_dir.join(format!("ovn{suffix}.md")), &md).expect("write md");
    let doc = bench::json(&rows, detail);
    std::fs::write(out_dir.join(format!("ovn{suffix}.json")), serde_json::to_string_pretty(&doc).unwrap())
        .expect("write json");
}
