//! The daemon's local API: one JSON request per line on a Unix socket, one
//! JSON response line back. Shared by the daemon and the CLI so that both
//! sides agree on every field; the CLI prints `Response` payloads as they are
//! for `--json`.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::IpAddr,
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::ofport::MacAddr;

/// Requests larger than this are refused: the API carries small commands,
/// and a client must not make the daemon buffer without bound.
pub const MAX_REQUEST: u64 = 64 * 1024;

/// Default socket of the daemon.
pub const DEFAULT_SOCKET: &str = "/run/xgw/xgw.sock";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    PortAdd(PortArgs),
    PortDel { name: String },
    PortList,
    TunnelAdd(TunnelArgs),
    TunnelDel { name: String },
    TunnelList,
    BindingAdd(BindingArgs),
    BindingDel { vni: u32, mac: MacAddr },
    BindingList,
    Show,
    Stats,
}

/// A local port, as the operator names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortArgs {
    pub name: String,
    /// The interface the port's VM sits behind (the daemon attaches `xgw_local` to it).
    pub ifname: String,
    pub vni: u32,
    pub port_key: u16,
    pub mac: MacAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ofport: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelArgs {
    pub name: String,
    pub remote_ip: IpAddr,
    pub vni: u32,
    #[serde(default)]
    pub bfd: bool,
    #[serde(default)]
    pub ovn_metadata: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ofport: Option<u16>,
}

/// A MAC (and optionally an IP) of a remote logical port, behind a tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingArgs {
    pub vni: u32,
    pub mac: MacAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// Name of the tunnel the MAC is reached through.
    pub tunnel: String,
    /// The remote logical port's key (the OVN egress key).
    pub port_key: u16,
}

/// One line back: `{"ok": ...}` or `{"error": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(serde_json::Value),
    Error(String),
}

/// A port as `show`, `port list` and `tunnel list` print it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortView {
    pub name: String,
    pub ofport: u16,
    /// `local` or `tunnel`.
    #[serde(rename = "type")]
    pub kind: String,
    pub vni: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_key: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ovn_metadata: Option<bool>,
    /// Tunnels: the underlay next hop's MAC, `null` while unresolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nexthop: Option<Nexthop>,
    /// Tunnels with BFD on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BfdView>,
    /// Whether the port came from the config file (and goes with it).
    pub from_config: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nexthop {
    /// `null` while the route or the neighbour is unresolved.
    pub mac: Option<String>,
    pub resolved: bool,
}

/// BFD of one tunnel. `state` is the session state once a BFD module runs
/// sessions (`down`, `init`, `up`, `admin_down`); `null` until then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BfdView {
    pub enabled: bool,
    pub state: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingView {
    pub vni: u32,
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    pub tunnel: String,
    /// The tunnel's OpenFlow number, as written in FDB.
    pub ofport: u16,
    pub port_key: u16,
    pub from_config: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkView {
    pub ifname: String,
    pub ifindex: u32,
    pub mac: String,
    pub mtu: u32,
    pub local_ips: Vec<IpAddr>,
    /// `native` or `skb`.
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfportsView {
    pub used: usize,
    pub held_down: usize,
    pub free: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowView {
    pub uplink: UplinkView,
    pub bpffs: String,
    pub state_dir: String,
    pub ports: Vec<PortView>,
    pub bindings: Vec<BindingView>,
    pub ofports: OfportsView,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStatsView {
    pub name: String,
    pub ofport: u16,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsView {
    pub ports: Vec<PortStatsView>,
    /// Drop reason -> packets (`xgw_common::counters::Drop` names).
    pub drops: std::collections::BTreeMap<String, u64>,
    /// Reply kind -> packets.
    pub replies: std::collections::BTreeMap<String, u64>,
}

/// Sends one request and returns the daemon's answer (an error for
/// `Response::Error`, carrying the daemon's one-line message).
pub fn call(socket: &Path, request: &Request) -> Result<serde_json::Value> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!("cannot reach the xgw daemon at {} (is `xgw run` running? --socket)", socket.display())
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line).context("sending the request")?;
    let mut reply = String::new();
    BufReader::new(stream).take(64 << 20).read_line(&mut reply).context("reading the daemon's answer")?;
    if reply.is_empty() {
        bail!("the daemon closed the connection without an answer");
    }
    match serde_json::from_str(&reply).context("the daemon's answer is not JSON")? {
        Response::Ok(v) => Ok(v),
        Response::Error(e) => bail!("{e}"),
    }
}
