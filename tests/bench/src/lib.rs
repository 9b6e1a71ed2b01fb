//! The benchmark harness behind `cargo xtask bench` (`xgw-bench`): rows of
//! measured figures beside a baseline from the same run, their statistics,
//! the markdown table and JSON under bench/results/, the checks that every
//! figure was really produced, and the plot of packet rate against size.
//! Its binaries are `xgw-bench` (XDP program cost, packet rates, xgw against
//! Open vSwitch), `xgw-portbench` (the port map on real maps and redb),
//! `xgw-bfdbench` (BFD at scale) and `xgw-ovnbench` (xgw as an OVN chassis,
//! beside ovn-controller); the namespaces, veths, gateways, OVN and
//! processes they use are the test harness's (`xgw_tests`).
pub mod afpacket;
pub mod bfd;
pub mod flood;
pub mod flowkey;
pub mod flows;
pub mod jumbo;
pub mod live;
pub mod machine;
pub mod ovn;
pub mod plot;
pub mod tcp;
pub mod versus;
pub mod veth;

use std::{fs, path::Path};

/// The plot's panels.
pub const DECAP: &str = "decap: Geneve in, VM frame out";
pub const ENCAP: &str = "encap: VM frame in, Geneve out";

/// Median and min-max of several runs.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// Panics on an empty set: a row without runs is a harness bug.
pub fn stats(mut v: Vec<f64>) -> Stats {
    assert!(!v.is_empty(), "statistics of no runs");
    v.sort_by(|a, b| a.total_cmp(b));
    Stats { median: v[v.len() / 2], min: v[0], max: v[v.len() - 1] }
}

/// Where a row goes in the packet-size plot: the panel, the x value, and
/// the series its value and its baseline belong to.
#[derive(Clone, Copy, Debug)]
pub struct PlotPoint {
    pub panel: &'static str,
    pub size: u32,
    pub value: &'static str,
    pub base: &'static str,
}

pub struct Row {
    pub name: String,
    pub unit: &'static str,
    pub baseline: String,
    pub value: Stats,
    pub base: Stats,
    pub plot: Option<PlotPoint>,
    /// Why this row has no figure on this machine (the kernel refuses
    /// what it needs); listed so, never left out or filled in.
    pub not_measured: Option<String>,
}

impl Row {
    pub fn new(
        name: impl Into<String>,
        unit: &'static str,
        baseline: impl Into<String>,
        value: Stats,
        base: Stats,
    ) -> Row {
        Row { name: name.into(), unit, baseline: baseline.into(), value, base, plot: None, not_measured: None }
    }
    /// A row this machine cannot measure, and why.
    pub fn not_measured(name: impl Into<String>, unit: &'static str, baseline: impl Into<String>, why: &str) -> Row {
        let none = Stats { median: f64::NAN, min: f64::NAN, max: f64::NAN };
        Row { not_measured: Some(why.into()), ..Row::new(name, unit, baseline, none, none) }
    }
    pub fn plot(mut self, p: PlotPoint) -> Row {
        self.plot = Some(p);
        self
    }
    pub fn ratio(&self) -> f64 {
        self.value.median / self.base.median
    }
}

/// Fails (naming the row) unless every expected row is there exactly once
/// and each of its figures is finite, positive and ordered min <= median <=
/// max: a harness that stopped measuring must not produce a table.
pub fn check(rows: &[Row], expected: &[String]) {
    for name in expected {
        let n = rows.iter().filter(|r| &r.name == name).count();
        assert_eq!(n, 1, "row {name:?}: expected once, found {n} times");
    }
    assert_eq!(rows.len(), expected.len(), "unexpected rows beside {expected:?}");
    for r in rows.iter().filter(|r| r.not_measured.is_none()) {
        for (what, s) in [("value", r.value), (r.baseline.as_str(), r.base)] {
            let ok = [s.min, s.median, s.max].iter().all(|x| x.is_finite() && *x > 0.0)
                && s.min <= s.median
                && s.median <= s.max;
            assert!(ok, "{}: {what} is not a measured figure: {s:?}", r.name);
        }
        assert!(r.ratio().is_finite() && r.ratio() > 0.0, "{}: ratio {}", r.name, r.ratio());
    }
}

/// Rows `names` this kernel cannot measure: their generator is
/// live-frames test_run, which it refuses (`live::permitted`).
pub fn refused(names: Vec<String>, unit: &'static str) -> Vec<Row> {
    names.into_iter().map(|n| Row::not_measured(n, unit, "-", live::REFUSED)).collect()
}

fn fmt(unit: &str, s: Stats) -> String {
    if unit == "pkt/s" {
        format!("{:.0}k ({:.0}k-{:.0}k)", s.median / 1e3, s.min / 1e3, s.max / 1e3)
    } else {
        format!("{:.1} ({:.1}-{:.1})", s.median, s.min, s.max)
    }
}

/// Two decimals, or two significant digits below 0.1 (a figure hundreds
/// of times its baseline's must not print as 0.00).
fn ratio(r: f64) -> String {
    if r >= 0.1 || r == 0.0 {
        format!("{r:.2}")
    } else {
        let decimals = (1.0 - r.log10().floor()).max(2.0) as usize;
        format!("{r:.decimals$}")
    }
}

pub fn markdown(rows: &[Row]) -> String {
    let mut md = "| benchmark | unit | value (median, min-max) | baseline | baseline value | ratio |\n|---|---|---|---|---|---|\n".to_string();
    for r in rows {
        if let Some(why) = &r.not_measured {
            md += &format!("| {} | {} | not measured: {why} | {} | - | - |\n", r.name, r.unit, r.baseline);
            continue;
        }
        md += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.name,
            r.unit,
            fmt(r.unit, r.value),
            r.baseline,
            fmt(r.unit, r.base),
            ratio(r.ratio())
        );
    }
    md
}

pub fn json(rows: &[Row], header: serde_json::Value) -> serde_json::Value {
    let rows: Vec<_> = rows
        .iter()
        .map(|r| {
            if let Some(why) = &r.not_measured {
                return serde_json::json!({ "name": r.name, "unit": r.unit, "baseline": {"name": r.baseline}, "not_measured": why });
            }
            let mut j = serde_json::json!({
                "name": r.name, "unit": r.unit,
                "value": {"median": r.value.median, "min": r.value.min, "max": r.value.max},
                "baseline": {"name": r.baseline, "median": r.base.median, "min": r.base.min, "max": r.base.max},
                "ratio": r.ratio(),
            });
            if let Some(p) = r.plot {
                j["direction"] = p.panel.into();
                j["inner_frame_bytes"] = p.size.into();
            }
            j
        })
        .collect();
    let mut j = header;
    j["rows"] = rows.into();
    j
}

/// Writes `<stem><suffix>.md`, `<stem><suffix>.json` and, when any row
/// has a packet size, `pps-size<suffix>.svg` into `dir`.
pub fn write(dir: &Path, stem: &str, suffix: &str, rows: &[Row], header: serde_json::Value) {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let put = |name: String, text: String| {
        let path = dir.join(name);
        fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    };
    put(format!("{stem}{suffix}.md"), markdown(rows));
    put(format!("{stem}{suffix}.json"), serde_json::to_string_pretty(&json(rows, header)).unwrap());
    if rows.iter().any(|r| r.plot.is_some()) {
        put(format!("pps-size{suffix}.svg"), plot::pps_size(rows));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(median: f64) -> Stats {
        Stats { median, min: median * 0.9, max: median * 1.1 }
    }

    #[test]
    fn stats_are_median_and_range() {
        let st = stats(vec![5.0, 1.0, 3.0, 4.0, 2.0]);
        assert_eq!((st.median, st.min, st.max), (3.0, 1.0, 5.0));
    }

    #[test]
    fn check_refuses_missing_zero_and_non_finite_figures() {
        let ok = || vec![Row::new("a", "pkt/s", "b", s(10.0), s(20.0))];
        check(&ok(), &["a".into()]);
        let fails =
            |rows: Vec<Row>, expected: Vec<String>| std::panic::catch_unwind(move || check(&rows, &expected)).is_err();
        assert!(fails(ok(), vec!["a".into(), "c".into()]), "a missing row passed");
        assert!(fails(vec![Row::new("a", "pkt/s", "b", s(0.0), s(20.0))], vec!["a".into()]), "zero passed");
        assert!(fails(vec![Row::new("a", "pkt/s", "b", s(f64::NAN), s(20.0))], vec!["a".into()]), "NaN passed");
        assert!(fails(vec![Row::new("a", "pkt/s", "b", s(10.0), s(f64::INFINITY))], vec!["a".into()]), "inf passed");
    }

    #[test]
    fn a_row_not_measured_says_why_and_carries_no_figure() {
        let rows = vec![Row::not_measured("a", "pkt/s", "b", "the kernel refuses it")];
        check(&rows, &["a".into()]);
        assert!(markdown(&rows).contains("| a | pkt/s | not measured: the kernel refuses it | b | - | - |"));
        let j = json(&rows, serde_json::json!({}));
        assert_eq!(j["rows"][0]["not_measured"], "the kernel refuses it");
        assert!(j["rows"][0].get("value").is_none() && j["rows"][0].get("ratio").is_none());
    }

    #[test]
    fn small_ratios_keep_two_significant_digits() {
        assert_eq!(ratio(0.5), "0.50");
        assert_eq!(ratio(13.91), "13.91");
        assert_eq!(ratio(0.0044), "0.0044");
        assert_eq!(ratio(0.043), "0.043");
    }

    #[test]
    fn table_and_json_carry_ratio_and_size() {
        let p = PlotPoint { panel: "decap", size: 128, value: "xgw", base: "xgw_redirect" };
        let rows = vec![Row::new("a", "pkt/s", "b", s(10.0), s(20.0)).plot(p)];
        assert!(markdown(&rows).contains("| a | pkt/s | 0k (0k-0k) | b | 0k (0k-0k) | 0.50 |"));
        let j = json(&rows, serde_json::json!({"runs": 1}));
        assert_eq!(j["rows"][0]["inner_frame_bytes"], 128);
        assert_eq!(j["rows"][0]["ratio"], 0.5);
        assert_eq!(j["runs"], 1);
    }
}
