//! Prometheus metrics, in the OpenMetrics text format Prometheus scrapes,
//! served on a loopback address by a deliberately small HTTP responder (tokio
//! tasks): one `GET /metrics` per connection, nothing else. Values are read from the
//! maps at scrape time, so a scrape costs nothing between scrapes.
use std::time::Duration;

use anyhow::{anyhow, Result};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
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

/// The whole exposition, from the views `show`, `stats` and `bfd show`
/// print.
pub fn render(show: &ShowView, stats: &StatsView, sessions: &[BfdSessionView]) -> Result<String> {
    let kinds: std::collections::BTreeMap<&str, PortType> =
        show.ports.iter().map(|p| (p.name.as_str(), p.kind)).collect();
    let mut registry = Registry::with_prefix("xgw");

    let packets = Family::<Labels, Counter>::default();
    let bytes = Family::<Labels, Counter>::default();
    for p in &stats.ports {
        let kind = kinds.get(p.name.as_str()).copied().unwrap_or(PortType::Local).name();
        let ofport = p.ofport.to_string();
        for (dir, n, b) in [("rx", p.rx_packets, p.rx_bytes), ("tx", p.tx_packets, p.tx_bytes)] {
            let l = labels(&[("port", &p.name), ("ofport", &ofport), ("type", kind), ("direction", dir)]);
            packets.get_or_create(&l).inc_by(n);
            bytes.get_or_create(&l).inc_by(b);
        }
    }
    registry.register("port_packets", "Packets per port and direction", packets);
    registry.register("port_bytes", "Bytes per port and direction", bytes);

    let drops = Family::<Labels, Counter>::default();
    for (reason, n) in &stats.drops {
        drops.get_or_create(&labels(&[("reason", reason)])).inc_by(*n);
    }
    registry.register("drops", "Packets the datapath dropped, by reason", drops);
    let replies = Family::<Labels, Counter>::default();
    for (kind, n) in &stats.replies {
        replies.get_or_create(&labels(&[("kind", kind)])).inc_by(*n);
    }
    registry.register("replies", "Packets the datapath answered itself, by kind", replies);

    let ofports = Family::<Labels, Gauge>::default();
    let o = &show.ofports;
    for (state, n) in [("used", o.used), ("held_down", o.held_down), ("free", o.free)] {
        ofports.get_or_create(&labels(&[("state", state)])).set(n as i64);
    }
    registry.register("ofports", "OpenFlow port numbers by state", ofports);

    let nexthop = Family::<Labels, Gauge>::default();
    let nexthop_changes = Family::<Labels, Counter>::default();
    for p in show.ports.iter().filter(|p| p.kind == PortType::Tunnel) {
        let resolved = p.nexthop.as_ref().is_some_and(|n| n.resolved);
        nexthop.get_or_create(&labels(&[("tunnel", &p.name)])).set(resolved as i64);
        let changes = p.nexthop.as_ref().map_or(0, |n| n.changes);
        nexthop_changes.get_or_create(&labels(&[("tunnel", &p.name)])).inc_by(changes);
    }
    registry.register("tunnel_nexthop_resolved", "1 when the tunnel's underlay next hop is resolved", nexthop);
    registry.register(
        "tunnel_nexthop_changes",
        "Times the tunnel's next hop MAC moved after it first resolved",
        nexthop_changes,
    );

    let bfd_state = Family::<Labels, Gauge>::default();
    let bfd_flaps = Family::<Labels, Counter>::default();
    let bfd_packets = Family::<Labels, Counter>::default();
    for v in sessions {
        let kind = v.kind.name();
        for state in crate::api::BfdState::ALL {
            let l = labels(&[("session", &v.name), ("type", kind), ("state", state.name())]);
            bfd_state.get_or_create(&l).set((v.local_state == state) as i64);
        }
        bfd_flaps.get_or_create(&labels(&[("session", &v.name), ("type", kind)])).inc_by(v.flap_count);
        for (dir, n) in [("rx", v.rx_packets), ("tx", v.tx_packets)] {
            bfd_packets.get_or_create(&labels(&[("session", &v.name), ("type", kind), ("direction", dir)])).inc_by(n);
        }
    }
    registry.register("bfd_state", "1 for the BFD session's current state", bfd_state);
    registry.register(
        "bfd_flaps",
        "Changes of the BFD session to or from up (as Open vSwitch counts flap_count)",
        bfd_flaps,
    );
    registry.register("bfd_session_packets", "BFD control packets per session and direction", bfd_packets);

    let bfd_drops = Family::<Labels, Counter>::default();
    for (reason, n) in &stats.bfd.drops {
        bfd_drops.get_or_create(&labels(&[("reason", reason)])).inc_by(*n);
    }
    registry.register("bfd_drops", "BFD packets the datapath discarded, by reason", bfd_drops);
    let bfd_rx: Counter = Counter::default();
    bfd_rx.inc_by(stats.bfd.rx);
    registry.register("bfd_rx_packets", "Valid BFD control packets received in XDP", bfd_rx);
    let bfd_echo: Counter = Counter::default();
    bfd_echo.inc_by(stats.bfd.echo_reflected);
    registry.register("bfd_echo_reflected", "BFD echo packets reflected in XDP", bfd_echo);
    let bfd_lost: Counter = Counter::default();
    bfd_lost.inc_by(stats.bfd.events_lost);
    registry.register("bfd_events_lost", "BFD state events the ring buffer could not hold", bfd_lost);

    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

/// Connections held at once (Prometheus sends one scrape at a time); beyond
/// that the one that has waited longest for its request is cut.
const MAX_CONNECTIONS: usize = 8;
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `GET /metrics` with what `scrape` renders.
pub async fn serve<F, Fut>(listener: TcpListener, scrape: F)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<String>> + Send + 'static,
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
    Fut: std::future::Future<Output = Result<String>>,
{
    let (read, mut write) = stream.into_split();
    // A request line and headers; nothing a scraper sends is larger.
    let mut reader = BufReader::new(read.take(16 * 1024));
    let mut request_line = String::new();
    let head = async {
        reader.read_line(&mut request_line).await?;
        // Drain the headers (bounded) so the client sees a clean close.
        let mut header = String::new();
        for _ in 0..100 {
            header.clear();
            if reader.read_line(&mut header).await? == 0 || header == "\r\n" || header == "\n" {
                break;
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(READ_TIMEOUT, head).await.map_err(|_| anyhow!("no request within {READ_TIMEOUT:?}"))??;
    phase.started();
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
        match scrape().await {
            Ok(b) => ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", b),
            Err(e) => ("500 Internal Server Error", "text/plain", format!("{e:#}\n")),
        }
    } else {
        ("404 Not Found", "text/plain", "only GET /metrics is served here\n".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::time::timeout(READ_TIMEOUT, write.write_all(response.as_bytes()))
        .await
        .map_err(|_| anyhow!("client too slow"))??;
    Ok(())
}
