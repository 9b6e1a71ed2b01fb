//! Prometheus metrics, served on a loopback address by a deliberately small
//! HTTP responder (tokio tasks): one `GET /metrics` per connection, nothing
//! else. Values are read from the maps at scrape time, so a scrape costs
//! nothing between scrapes.
//!
//! Two formats, chosen by the scraper's `Accept` header as Prometheus's own
//! clients choose (`negotiate`): the classic text format 0.0.4 by default
//! (what `promtool check metrics`, the Python client's parser and any scraper
//! that names no format read), and OpenMetrics 1.0 when `Accept` asks for
//! `application/openmetrics-text`. Neither is written by hand here: the
//! daemon describes its metrics once (`Exposition`, names, help, types,
//! labels, values), and each format comes from a maintained encoder of it:
//! OpenMetrics from `prometheus-client` (the Prometheus project's Rust
//! client, which encodes OpenMetrics only), the 0.0.4 text from the
//! `prometheus` crate's `TextEncoder` (TiKV's client, the one Rust encoder of
//! that format in wide use). Rewriting one format into the other would mean
//! owning the escaping, the `_total` suffixes and the `# EOF` rules of both;
//! the encoders already do, and are tested against Prometheus's parsers.
use std::{sync::OnceLock, time::Duration};

use anyhow::{anyhow, Context, Result};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
};

use crate::api::{BfdSessionView, PortType, ShowView, StatsView};

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Every metric name starts with it.
const PREFIX: &str = "xgw";

/// What a metric counts, as both formats type it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only ever grows (until the datapath is reloaded); the sample is
    /// `<name>_total`.
    Counter,
    Gauge,
    /// Constant labels and the value 1 (OpenMetrics `info`, a gauge in the
    /// 0.0.4 format); the sample is `<name>_info`.
    Info,
}

/// One metric family: its name without the `xgw_` prefix and without the
/// suffix its kind adds, its help text and its samples.
#[derive(Debug, Clone)]
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    /// Every sample has the same label names, in the same order.
    pub samples: Vec<(Labels, u64)>,
}

/// What `/metrics` serves, before it is encoded in either format.
#[derive(Debug, Clone, Default)]
pub struct Exposition(pub Vec<Metric>);

impl Exposition {
    fn add(&mut self, name: &'static str, help: &'static str, kind: Kind, samples: Vec<(Labels, u64)>) {
        self.0.push(Metric { name, help, kind, samples });
    }

    /// The sample names each family carries, as a scraper sees them
    /// (`xgw_drops_total`, `xgw_build_info`, `xgw_ofports`).
    pub fn sample_name(m: &Metric) -> String {
        match m.kind {
            Kind::Counter => format!("{PREFIX}_{}_total", m.name),
            Kind::Gauge => format!("{PREFIX}_{}", m.name),
            Kind::Info => format!("{PREFIX}_{}_info", m.name),
        }
    }
}

/// The format a scrape is answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The format an `Accept` header asks for, as Prometheus's clients read it
/// (client_golang's `expfmt.Negotiate`): the acceptable media range with the
/// highest `q` that this server speaks wins, an explicit type before a
/// wildcard of the same `q`, then the first listed; OpenMetrics only when it
/// wins; anything else (no header, `*/*`, only unknown types) is the 0.0.4
/// text, which every scraper reads.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else { return Format::Text };
    let mut best: Option<(f32, bool, Format)> = None;
    for range in accept.split(',') {
        let mut params = range.split(';').map(str::trim);
        let media = params.next().unwrap_or("").to_ascii_lowercase();
        let mut q = 1.0f32;
        for p in params {
            if let Some((k, v)) = p.split_once('=') {
                if k.trim().eq_ignore_ascii_case("q") {
                    q = v.trim().parse().unwrap_or(0.0);
                }
            }
        }
        let (format, explicit) = match media.as_str() {
            "application/openmetrics-text" => (Format::OpenMetrics, true),
            "text/plain" => (Format::Text, true),
            "text/*" | "*/*" => (Format::Text, false),
            _ => continue,
        };
        if q <= 0.0 {
            continue;
        }
        let better = match best {
            None => true,
            Some((bq, bexplicit, _)) => q > bq || (q == bq && explicit && !bexplicit),
        };
        if better {
            best = Some((q, explicit, format));
        }
    }
    best.map_or(Format::Text, |(_, _, f)| f)
}

/// The `xgw_build_info` labels: this binary's version and the datapath
/// object it carries (a hash: two daemons with the same one run the same
/// programs).
fn build_labels() -> Labels {
    static DATAPATH: OnceLock<String> = OnceLock::new();
    let datapath = DATAPATH.get_or_init(|| {
        // FNV-1a, 64 bits: identifies, no more is asked of it.
        let h = crate::datapath::OBJECT
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
        format!("{h:016x}")
    });
    labels(&[("version", env!("CARGO_PKG_VERSION")), ("datapath", datapath)])
}

/// Every metric, from the views `show`, `stats` and `bfd show` print.
pub fn collect(show: &ShowView, stats: &StatsView, sessions: &[BfdSessionView]) -> Exposition {
    let kinds: std::collections::BTreeMap<&str, PortType> =
        show.ports.iter().map(|p| (p.name.as_str(), p.kind)).collect();
    let mut e = Exposition::default();
    e.add("build", "The xgw version and the datapath object this daemon runs", Kind::Info, vec![(build_labels(), 1)]);

    let (mut packets, mut bytes) = (Vec::new(), Vec::new());
    for p in &stats.ports {
        let kind = kinds.get(p.name.as_str()).copied().unwrap_or(PortType::Local).name();
        let ofport = p.ofport.to_string();
        for (dir, n, b) in [("rx", p.rx_packets, p.rx_bytes), ("tx", p.tx_packets, p.tx_bytes)] {
            let l = labels(&[("port", &p.name), ("ofport", &ofport), ("type", kind), ("direction", dir)]);
            packets.push((l.clone(), n));
            bytes.push((l, b));
        }
    }
    e.add("port_packets", "Packets per port and direction", Kind::Counter, packets);
    e.add("port_bytes", "Bytes per port and direction", Kind::Counter, bytes);

    let drops = stats.drops.iter().map(|(reason, n)| (labels(&[("reason", reason)]), *n)).collect();
    e.add("drops", "Packets the datapath dropped, by reason", Kind::Counter, drops);
    let replies = stats.replies.iter().map(|(kind, n)| (labels(&[("kind", kind)]), *n)).collect();
    e.add("replies", "Packets the datapath answered itself, by kind", Kind::Counter, replies);

    let o = &show.ofports;
    let ofports = [("used", o.used), ("held_down", o.held_down), ("free", o.free)]
        .into_iter()
        .map(|(state, n)| (labels(&[("state", state)]), n as u64))
        .collect();
    e.add("ofports", "OpenFlow port numbers by state", Kind::Gauge, ofports);

    if let Some(o) = &show.ovn {
        e.add(
            "ovn_connected",
            "1 while the Southbound session is up",
            Kind::Gauge,
            vec![(labels(&[]), o.session.connected as u64)],
        );
        let up = o.claimed.values().filter(|u| **u).count();
        let ports = [("up", up), ("down", o.claimed.len() - up), ("refused", o.refused.len())]
            .into_iter()
            .map(|(state, n)| (labels(&[("state", state)]), n as u64))
            .collect();
        e.add("ovn_ports", "OVN logical ports named by a local interface, by state", Kind::Gauge, ports);
        let warnings = vec![(labels(&[]), o.warnings.len() as u64)];
        e.add("ovn_warnings", "What the last Southbound view asked that xgw did not do", Kind::Gauge, warnings);
        let nb_cfg = vec![(labels(&[]), u64::try_from(o.session.nb_cfg).unwrap_or(0))];
        e.add("ovn_nb_cfg", "The SB_Global nb_cfg applied and acknowledged", Kind::Gauge, nb_cfg);
    }

    let (mut resolved, mut changes) = (Vec::new(), Vec::new());
    for p in show.ports.iter().filter(|p| p.kind == PortType::Tunnel) {
        let l = labels(&[("tunnel", &p.name)]);
        resolved.push((l.clone(), p.nexthop.as_ref().is_some_and(|n| n.resolved) as u64));
        changes.push((l, p.nexthop.as_ref().map_or(0, |n| n.changes)));
    }
    e.add("tunnel_nexthop_resolved", "1 when the tunnel's underlay next hop is resolved", Kind::Gauge, resolved);
    e.add(
        "tunnel_nexthop_changes",
        "Times the tunnel's next hop MAC moved after it first resolved",
        Kind::Counter,
        changes,
    );

    let (mut state, mut flaps, mut packets) = (Vec::new(), Vec::new(), Vec::new());
    for v in sessions {
        let kind = v.kind.name();
        for s in crate::api::BfdState::ALL {
            let l = labels(&[("session", &v.name), ("type", kind), ("state", s.name())]);
            state.push((l, (v.local_state == s) as u64));
        }
        flaps.push((labels(&[("session", &v.name), ("type", kind)]), v.flap_count));
        for (dir, n) in [("rx", v.rx_packets), ("tx", v.tx_packets)] {
            packets.push((labels(&[("session", &v.name), ("type", kind), ("direction", dir)]), n));
        }
    }
    e.add("bfd_state", "1 for the BFD session's current state", Kind::Gauge, state);
    e.add(
        "bfd_flaps",
        "Changes of the BFD session to or from up (as Open vSwitch counts flap_count)",
        Kind::Counter,
        flaps,
    );
    e.add("bfd_session_packets", "BFD control packets per session and direction", Kind::Counter, packets);

    let bfd_drops = stats.bfd.drops.iter().map(|(reason, n)| (labels(&[("reason", reason)]), *n)).collect();
    e.add("bfd_drops", "BFD packets the datapath discarded, by reason", Kind::Counter, bfd_drops);
    let one = |n: u64| vec![(Labels::new(), n)];
    e.add("bfd_rx_packets", "Valid BFD control packets received in XDP", Kind::Counter, one(stats.bfd.rx));
    e.add("bfd_echo_reflected", "BFD echo packets reflected in XDP", Kind::Counter, one(stats.bfd.echo_reflected));
    e.add(
        "bfd_events_lost",
        "BFD state events the ring buffer could not hold",
        Kind::Counter,
        one(stats.bfd.events_lost),
    );
    e
}

/// The exposition in `format`. Help texts end with a period in both.
pub fn encode_as(e: &Exposition, format: Format) -> Result<String> {
    // `promtool check metrics` asks for help on every metric, and so do we.
    if let Some(m) = e.0.iter().find(|m| m.help.trim().is_empty()) {
        anyhow::bail!("metric {} has no help text", Exposition::sample_name(m));
    }
    match format {
        Format::Text => text(e),
        Format::OpenMetrics => openmetrics(e),
    }
}

/// OpenMetrics 1.0.0, by prometheus-client (which adds `_total`, `_info`
/// and `# EOF`).
fn openmetrics(e: &Exposition) -> Result<String> {
    let mut registry = Registry::with_prefix(PREFIX);
    for m in &e.0 {
        match m.kind {
            // One sample without labels: a plain metric (`name 3`, not `name{} 3`).
            Kind::Counter if m.samples.len() == 1 && m.samples[0].0.is_empty() => {
                let c: Counter = Counter::default();
                c.inc_by(m.samples[0].1);
                registry.register(m.name, m.help, c);
            }
            Kind::Counter => {
                let family = Family::<Labels, Counter>::default();
                for (l, n) in &m.samples {
                    family.get_or_create(l).inc_by(*n);
                }
                registry.register(m.name, m.help, family);
            }
            Kind::Gauge => {
                let family = Family::<Labels, Gauge>::default();
                for (l, n) in &m.samples {
                    family.get_or_create(l).set(i64::try_from(*n).unwrap_or(i64::MAX));
                }
                registry.register(m.name, m.help, family);
            }
            Kind::Info => {
                // An info metric is one label set; a second would be a
                // second family of the same name.
                let (l, _) = m.samples.first().cloned().unwrap_or_default();
                registry.register(m.name, m.help, Info::new(l));
            }
        }
    }
    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

/// The text format 0.0.4, by the `prometheus` crate's `TextEncoder`, where a
/// counter's family is named with its `_total` and an info metric is a gauge.
fn text(e: &Exposition) -> Result<String> {
    fn values(l: &Labels) -> Vec<&str> {
        l.iter().map(|(_, v)| v.as_str()).collect()
    }
    use prometheus::{IntCounterVec, IntGaugeVec, Opts};
    let registry = prometheus::Registry::new();
    for m in &e.0 {
        let name = Exposition::sample_name(m);
        let label_names: Vec<&str> =
            m.samples.first().map(|(l, _)| l.iter().map(|(k, _)| k.as_str()).collect()).unwrap_or_default();
        // prometheus-client ends every help text with a period: so does this.
        let opts = Opts::new(name.clone(), format!("{}.", m.help));
        let collector: Box<dyn prometheus::core::Collector> = match m.kind {
            Kind::Counter => {
                let vec = IntCounterVec::new(opts, &label_names).with_context(|| name.clone())?;
                for (l, n) in &m.samples {
                    vec.get_metric_with_label_values(&values(l)).with_context(|| name.clone())?.inc_by(*n);
                }
                Box::new(vec)
            }
            Kind::Gauge | Kind::Info => {
                let vec = IntGaugeVec::new(opts, &label_names).with_context(|| name.clone())?;
                for (l, n) in &m.samples {
                    let v = i64::try_from(*n).unwrap_or(i64::MAX);
                    vec.get_metric_with_label_values(&values(l)).with_context(|| name.clone())?.set(v);
                }
                Box::new(vec)
            }
        };
        registry.register(collector).with_context(|| name.clone())?;
    }
    let mut out = String::new();
    prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut out)?;
    Ok(out)
}

/// Connections held at once (Prometheus sends one scrape at a time); beyond
/// that the one that has waited longest for its request is cut.
const MAX_CONNECTIONS: usize = 8;
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `GET /metrics` with what `scrape` collects, in the format the
/// request's `Accept` asks for.
pub async fn serve<F, Fut>(listener: TcpListener, scrape: F)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Exposition>> + Send + 'static,
{
    let l = &listener;
    let accept = || async move { l.accept().await.map(|(s, _)| s) };
    crate::listen::accept_loop("metrics", MAX_CONNECTIONS, accept, |stream, phase| {
        let scrape = scrape.clone();
        async move {
            if let Err(e) = respond(stream, phase, scrape).await {
                tracing::debug!("metrics request: {e:#}");
            }
        }
    })
    .await
}

async fn respond<F, Fut>(stream: TcpStream, phase: crate::listen::Phase, scrape: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Exposition>>,
{
    let (read, mut write) = stream.into_split();
    // A request line and headers; nothing a scraper sends is larger.
    let mut reader = BufReader::new(read.take(16 * 1024));
    let mut request_line = String::new();
    // Every `Accept` header, joined as one list (RFC 9110, 5.3).
    let mut accept: Option<String> = None;
    let head = async {
        reader.read_line(&mut request_line).await?;
        // Read the headers (bounded), so the client also sees a clean close.
        let mut header = String::new();
        for _ in 0..100 {
            header.clear();
            if reader.read_line(&mut header).await? == 0 || header == "\r\n" || header == "\n" {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.trim().eq_ignore_ascii_case("accept") {
                    let value = value.trim();
                    accept = Some(match accept.take() {
                        Some(a) => format!("{a},{value}"),
                        None => value.to_owned(),
                    });
                }
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(READ_TIMEOUT, head).await.map_err(|_| anyhow!("no request within {READ_TIMEOUT:?}"))??;
    phase.started();
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
        let format = negotiate(accept.as_deref());
        match scrape().await.and_then(|e| encode_as(&e, format)) {
            Ok(b) => ("200 OK", format.content_type(), b),
            Err(e) => ("500 Internal Server Error", "text/plain; charset=utf-8", format!("{e:#}\n")),
        }
    } else {
        ("404 Not Found", "text/plain; charset=utf-8", "only GET /metrics is served here\n".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nVary: Accept\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::time::timeout(READ_TIMEOUT, write.write_all(response.as_bytes()))
        .await
        .map_err(|_| anyhow!("client too slow"))??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prometheus 2.x's scrape header, and 3.x's with its escaping parameter.
    const PROMETHEUS_2: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                                version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    const PROMETHEUS_3: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,\
                                application/openmetrics-text;version=0.0.1;q=0.5,\
                                text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,\
                                text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    /// Prometheus with `scrape_protocols: [PrometheusText0.0.4]`.
    const PROMETHEUS_TEXT_ONLY: &str = "text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    #[test]
    fn openmetrics_only_when_accept_prefers_it() {
        assert_eq!(negotiate(None), Format::Text);
        assert_eq!(negotiate(Some("")), Format::Text);
        assert_eq!(negotiate(Some("*/*")), Format::Text);
        assert_eq!(negotiate(Some("application/json")), Format::Text);
        assert_eq!(negotiate(Some(PROMETHEUS_2)), Format::OpenMetrics);
        assert_eq!(negotiate(Some(PROMETHEUS_3)), Format::OpenMetrics);
        assert_eq!(negotiate(Some(PROMETHEUS_TEXT_ONLY)), Format::Text);
        assert_eq!(negotiate(Some("Application/OpenMetrics-Text")), Format::OpenMetrics);
        assert_eq!(negotiate(Some("text/plain;q=0.9, application/openmetrics-text;q=0.8")), Format::Text);
        assert_eq!(negotiate(Some("application/openmetrics-text;q=0")), Format::Text);
        // Same q: the explicit type before the wildcard, then the first listed.
        assert_eq!(negotiate(Some("*/*, application/openmetrics-text")), Format::OpenMetrics);
        assert_eq!(negotiate(Some("text/plain, application/openmetrics-text")), Format::Text);
    }

    fn sample() -> Exposition {
        let mut e = Exposition::default();
        e.add("build", "Build", Kind::Info, vec![(labels(&[("version", "1.2.3")]), 1)]);
        // A port name may hold any printable ASCII: quotes and backslashes too.
        let odd = labels(&[("port", "a\"b\\c"), ("direction", "rx")]);
        e.add("port_packets", "Packets per port", Kind::Counter, vec![(odd, 7)]);
        e.add("ofports", "Numbers by state", Kind::Gauge, vec![(labels(&[("state", "free")]), 65279)]);
        e.add("bfd_rx_packets", "Valid BFD packets", Kind::Counter, vec![(Labels::new(), 3)]);
        e
    }

    #[test]
    fn the_text_format_names_each_family_as_its_samples_with_help_and_type() {
        let t = encode_as(&sample(), Format::Text).unwrap();
        for line in [
            "# HELP xgw_build_info Build.",
            "# TYPE xgw_build_info gauge",
            "xgw_build_info{version=\"1.2.3\"} 1",
            "# HELP xgw_port_packets_total Packets per port.",
            "# TYPE xgw_port_packets_total counter",
            // This encoder sorts the labels by name.
            "xgw_port_packets_total{direction=\"rx\",port=\"a\\\"b\\\\c\"} 7",
            "# TYPE xgw_ofports gauge",
            "xgw_ofports{state=\"free\"} 65279",
            "# TYPE xgw_bfd_rx_packets_total counter",
            "xgw_bfd_rx_packets_total 3",
        ] {
            assert!(t.lines().any(|l| l == line), "no line {line:?} in\n{t}");
        }
        assert!(!t.contains("# EOF"), "{t}");
    }

    #[test]
    fn openmetrics_names_families_without_suffixes_and_ends_with_eof() {
        let t = encode_as(&sample(), Format::OpenMetrics).unwrap();
        for line in [
            "# TYPE xgw_build info",
            "xgw_build_info{version=\"1.2.3\"} 1",
            "# TYPE xgw_port_packets counter",
            "xgw_port_packets_total{port=\"a\\\"b\\\\c\",direction=\"rx\"} 7",
            "# TYPE xgw_ofports gauge",
            "xgw_bfd_rx_packets_total 3",
        ] {
            assert!(t.lines().any(|l| l == line), "no line {line:?} in\n{t}");
        }
        assert_eq!(t.lines().last(), Some("# EOF"));
    }

    #[test]
    fn a_metric_without_help_is_refused() {
        let mut e = Exposition::default();
        e.add("x", " ", Kind::Counter, vec![(Labels::new(), 1)]);
        for f in [Format::Text, Format::OpenMetrics] {
            assert_eq!(encode_as(&e, f).unwrap_err().to_string(), "metric xgw_x_total has no help text");
        }
    }
}
