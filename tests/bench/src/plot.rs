//! Packet rate against inner frame size as a hand-written SVG: one panel per
//! direction, one line per series (a row's value or its baseline), min-max
//! as error bars. Both axes are logarithmic: sizes roughly double, and Open
//! vSwitch runs an order of magnitude below xgw, which a linear axis would
//! flatten onto zero. Small enough not to need a plotting crate.
use std::{collections::BTreeMap, fmt::Write};

use crate::{Row, Stats};

const W: f64 = 470.0;
const H: f64 = 340.0;
const LEFT: f64 = 62.0;
const RIGHT: f64 = 26.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 130.0;
const COLOURS: [&str; 6] = ["#1f77b4", "#7f7f7f", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];

/// One line of a panel: its label and its figure at each size.
type Series<'a> = (&'a str, BTreeMap<u32, Stats>);

/// The SVG for every row that has a [`PlotPoint`](crate::PlotPoint).
pub fn pps_size(rows: &[Row]) -> String {
    // panel -> series label -> size -> stats, in first-seen order of panels and series.
    let mut panels: Vec<(&str, Vec<Series>)> = vec![];
    for r in rows {
        let Some(p) = r.plot else { continue };
        let i = panels.iter().position(|(name, _)| *name == p.panel).unwrap_or_else(|| {
            panels.push((p.panel, vec![]));
            panels.len() - 1
        });
        for (label, s) in [(p.value, r.value), (p.base, r.base)] {
            let series = &mut panels[i].1;
            let j = series.iter().position(|(l, _)| *l == label).unwrap_or_else(|| {
                series.push((label, BTreeMap::new()));
                series.len() - 1
            });
            series[j].1.insert(p.size, s);
        }
    }
    let mut labels: Vec<&str> = vec![];
    for (_, series) in &panels {
        for (l, _) in series {
            if !labels.contains(l) {
                labels.push(l);
            }
        }
    }
    let colour = |l: &str| COLOURS[labels.iter().position(|x| *x == l).unwrap() % COLOURS.len()];
    // Whole decades of Mpkt/s around every figure, the same for all panels.
    let all = || panels.iter().flat_map(|(_, series)| series.iter().flat_map(|(_, m)| m.values()));
    let ymin = 10f64.powf((all().map(|s| s.min).fold(f64::INFINITY, f64::min) / 1e6).log10().floor());
    let ymax = 10f64.powf((all().map(|s| s.max).fold(0.0, f64::max) / 1e6).log10().ceil()).max(ymin * 10.0);
    let width = W * panels.len().max(1) as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{H}" viewBox="0 0 {width} {H}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
"#
    );
    for (k, (panel, series)) in panels.iter().enumerate() {
        let x0 = k as f64 * W + LEFT;
        let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
        let sizes: Vec<u32> = {
            let mut v: Vec<u32> = series.iter().flat_map(|(_, m)| m.keys().copied()).collect();
            v.sort();
            v.dedup();
            v
        };
        let (lmin, lmax) = (f64::from(sizes[0]).ln(), f64::from(*sizes.last().unwrap()).ln());
        let x =
            |size: u32| x0 + if lmax > lmin { (f64::from(size).ln() - lmin) / (lmax - lmin) * pw } else { pw / 2.0 };
        let y = |pps: f64| TOP + ph - (pps / 1e6 / ymin).log10() / (ymax / ymin).log10() * ph;
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="20" text-anchor="middle" font-size="13">{}</text>"#,
            x0 + pw / 2.0,
            esc(panel)
        );
        let _ = writeln!(svg, r##"<rect x="{x0}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##);
        for v in y_ticks(ymin, ymax) {
            let yy = y(v * 1e6);
            let _ = writeln!(
                svg,
                r##"<line x1="{x0}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                x0 + pw,
                x0 - 5.0,
                yy + 4.0,
                trim(v)
            );
        }
        for &s in &sizes {
            let xx = x(s);
            let _ = writeln!(
                svg,
                r##"<line x1="{xx:.1}" y1="{:.1}" x2="{xx:.1}" y2="{:.1}" stroke="#333"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{s}</text>"##,
                TOP + ph,
                TOP + ph + 4.0,
                TOP + ph + 16.0
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">inner frame, bytes</text>"#,
            x0 + pw / 2.0,
            TOP + ph + 32.0
        );
        let _ = writeln!(
            svg,
            r#"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle">Mpkt/s (log; median, min-max)</text>"#,
            x0 - 42.0,
            TOP + ph / 2.0
        );
        for (i, (label, points)) in series.iter().enumerate() {
            let c = colour(label);
            let path: Vec<String> = points.iter().map(|(&s, st)| format!("{:.1},{:.1}", x(s), y(st.median))).collect();
            let _ =
                writeln!(svg, r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/>"#, path.join(" "));
            for (&s, st) in points {
                let (xx, lo, hi) = (x(s), y(st.min), y(st.max));
                let _ = writeln!(
                    svg,
                    r#"<line x1="{xx:.1}" y1="{lo:.1}" x2="{xx:.1}" y2="{hi:.1}" stroke="{c}"/><circle cx="{xx:.1}" cy="{:.1}" r="3" fill="{c}"/>"#,
                    y(st.median)
                );
            }
            let ly = TOP + ph + 50.0 + i as f64 * 16.0;
            let _ = writeln!(
                svg,
                r#"<line x1="{x0}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{c}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                x0 + 22.0,
                x0 + 28.0,
                ly + 4.0,
                esc(label)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// 1, 2 and 5 times each power of ten from `min` (a power of ten) to `max`.
fn y_ticks(min: f64, max: f64) -> Vec<f64> {
    let mut v = vec![];
    let mut d = min;
    while d <= max * 1.000001 {
        v.extend([d, 2.0 * d, 5.0 * d].into_iter().filter(|t| *t <= max * 1.000001));
        d *= 10.0;
    }
    v
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use crate::{PlotPoint, Row, Stats};

    #[test]
    fn every_series_gets_a_line_and_every_point_a_marker() {
        let s = |m: f64| Stats { median: m, min: m * 0.9, max: m * 1.1 };
        let p = |panel, size| PlotPoint { panel, size, value: "xgw", base: "redirect <trivial>" };
        let rows = vec![
            Row::new("a", "pkt/s", "b", s(4e6), s(6e6)).plot(p("decap", 64)),
            Row::new("c", "pkt/s", "b", s(3e6), s(5e6)).plot(p("decap", 1400)),
            Row::new("d", "pkt/s", "b", s(3e6), s(5e6)).plot(p("encap", 64)),
            Row::new("no plot", "ns/pkt", "b", s(1.0), s(1.0)),
        ];
        let svg = super::pps_size(&rows);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 4, "two series in each of two panels");
        assert_eq!(svg.matches("<circle").count(), 6);
        assert!(svg.contains("redirect &lt;trivial&gt;"), "labels are escaped");
        assert!(svg.contains(">decap</text>") && svg.contains(">encap</text>"));
    }

    #[test]
    fn ticks_are_1_2_5_per_decade() {
        let t: Vec<String> = super::y_ticks(0.1, 10.0).into_iter().map(super::trim).collect();
        assert_eq!(t, ["0.1", "0.2", "0.5", "1", "2", "5", "10"]);
    }
}
