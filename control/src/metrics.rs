//! Prometheus metrics, in the OpenMetrics text format Prometheus scrapes,
//! served on a loopback address by a deliberately small HTTP responder: one
//! `GET /metrics` per connection, nothing else. Values are read from the
//! maps at scrape time, so a scrape costs nothing between scrapes.
use std::{
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Result;
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::daemon::Daemon;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The whole exposition, as of now.
pub fn render(d: &Daemon) -> Result<String> {
    let stats = d.stats()?;
    let kinds = d.port_kinds();
    let mut registry = Registry::with_prefix("xgw");

    let packets = Family::<Labels, Counter>::default();
    let bytes = Family::<Labels, Counter>::default();
    for p in &stats.ports {
        let kind = kinds.get(&p.name).map(String::as_str).unwrap_or("local");
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
    let o = d.ofports();
    for (state, n) in [("used", o.used), ("held_down", o.held_down), ("free", o.free)] {
        ofports.get_or_create(&labels(&[("state", state)])).set(n as i64);
    }
    registry.register("ofports", "OpenFlow port numbers by state", ofports);

    let show = d.show();
    let nexthop = Family::<Labels, Gauge>::default();
    for p in show.ports.iter().filter(|p| p.kind == "tunnel") {
        let resolved = p.nexthop.as_ref().is_some_and(|n| n.resolved);
        nexthop.get_or_create(&labels(&[("tunnel", &p.name)])).set(resolved as i64);
    }
    registry.register("tunnel_nexthop_resolved", "1 when the tunnel's underlay next hop is resolved", nexthop);

    let bfd_state = Family::<Labels, Gauge>::default();
    let bfd_flaps = Family::<Labels, Counter>::default();
    for (tunnel, status) in d.bfd_sessions() {
        let Some(s) = status else { continue };
        for state in ["admin_down", "down", "init", "up"] {
            bfd_state.get_or_create(&labels(&[("tunnel", &tunnel), ("state", state)])).set((s.state == state) as i64);
        }
        bfd_flaps.get_or_create(&labels(&[("tunnel", &tunnel)])).inc_by(s.flaps);
    }
    registry.register("bfd_state", "1 for the BFD session's current state", bfd_state);
    registry.register("bfd_flaps", "Times the BFD session left up", bfd_flaps);

    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

pub fn serve(listener: TcpListener, daemon: Arc<Mutex<Daemon>>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if let Err(e) = respond(stream, &daemon) {
            tracing::debug!("metrics request: {e:#}");
        }
    }
}

fn respond(mut stream: TcpStream, daemon: &Mutex<Daemon>) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers (bounded) so the client sees a clean close.
    let mut header = String::new();
    for _ in 0..100 {
        header.clear();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
        let body = render(&daemon.lock().unwrap_or_else(|p| p.into_inner()));
        match body {
            Ok(b) => ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", b),
            Err(e) => ("500 Internal Server Error", "text/plain", format!("{e:#}\n")),
        }
    } else {
        ("404 Not Found", "text/plain", "only GET /metrics is served here\n".to_owned())
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}
