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
    PortDel {
        name: String,
    },
    PortList,
    TunnelAdd(TunnelArgs),
    TunnelDel {
        name: String,
    },
    TunnelList,
    BindingAdd(BindingArgs),
    BindingDel {
        vni: u32,
        mac: MacAddr,
    },
    BindingList,
    Show,
    Stats,
    /// Every BFD session, or the one named.
    BfdShow {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    BfdPeerAdd(BfdPeerArgs),
    BfdPeerDel {
        name: String,
    },
    BfdPeerList,
}

impl Request {
    /// Reads nothing but state: a refusal of one is not worth a log line.
    pub fn is_query(&self) -> bool {
        matches!(
            self,
            Request::PortList
                | Request::TunnelList
                | Request::BindingList
                | Request::Show
                | Request::Stats
                | Request::BfdShow { .. }
                | Request::BfdPeerList
        )
    }
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
    /// This tunnel's BFD timers where they differ from the daemon's `[bfd]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_min_tx_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_min_rx_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_detect_mult: Option<u8>,
}

/// A single-hop BFD session (RFC 5881) toward a router on the underlay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BfdPeerArgs {
    pub name: String,
    /// The router's address (IPv4).
    pub peer_ip: IpAddr,
    /// The interface toward it; the uplink by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// The source address; the daemon's IPv4 `--local-ip` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ip: Option<IpAddr>,
    /// Reflect the router's echo packets in XDP (FRR's echo mode).
    #[serde(default)]
    pub echo: bool,
    /// Timers where they differ from the daemon's `[bfd]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tx_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rx_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect_mult: Option<u8>,
}

/// A peer as `bfd peer list` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BfdPeerView {
    pub name: String,
    pub peer_ip: IpAddr,
    pub ifname: String,
    pub local_ip: IpAddr,
    pub echo: bool,
    pub min_tx_ms: u32,
    pub min_rx_ms: u32,
    pub detect_mult: u8,
    /// The session's state, `null` if it is not running.
    pub state: Option<String>,
    pub from_config: bool,
}

/// One BFD session: the fields of `ovs-appctl bfd/show`, plus where it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BfdSessionView {
    pub name: String,
    /// `tunnel` (Geneve, toward Open vSwitch or another xgw) or `peer`
    /// (single-hop on the underlay).
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ofport: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// The tunnel's remote, or the peer's address.
    pub remote_ip: IpAddr,
    pub local_ip: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// Where the tunnel's BFD frames go on the underlay (zeroes until resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nexthop_mac: Option<String>,
    pub echo: bool,
    /// Both sides Up (OVS: `forwarding`).
    pub forwarding: bool,
    pub detect_mult: u8,
    pub concatenated_path_down: bool,
    /// Negotiated: the interval we send at, the remote's.
    pub tx_interval_ms: f64,
    pub rx_interval_ms: f64,
    pub detect_time_ms: f64,
    pub local_state: String,
    pub local_diagnostic: String,
    pub local_discriminator: u32,
    pub local_min_tx_ms: u32,
    pub local_min_rx_ms: u32,
    pub remote_state: String,
    pub remote_diagnostic: String,
    pub remote_discriminator: u32,
    pub remote_min_tx_ms: f64,
    pub remote_min_rx_ms: f64,
    pub remote_detect_mult: u8,
    /// Changes to or from Up (as Open vSwitch counts `flap_count`).
    pub flap_count: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Milliseconds since the daemon saw the local or remote state change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change_ms: Option<u64>,
    /// The last transmit error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    /// Why the port does not forward now (a local port whose interface is
    /// gone), as Open vSwitch's Interface `error` column says it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nexthop {
    /// `null` while the route or the neighbour is unresolved.
    pub mac: Option<String>,
    pub resolved: bool,
    /// Times the MAC moved after it first resolved (a router failover, or
    /// an address answered from two places when it keeps climbing).
    #[serde(default)]
    pub changes: u64,
}

/// BFD of one tunnel: the session's state (`down`, `init`, `up`,
/// `admin_down`) and flap count; `null` if no session runs (which the log
/// explains).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BfdView {
    pub enabled: bool,
    pub state: Option<String>,
    #[serde(default)]
    pub flaps: Option<u64>,
    /// Local and remote both Up.
    #[serde(default)]
    pub forwarding: bool,
    pub min_tx_ms: u32,
    pub min_rx_ms: u32,
    pub detect_mult: u8,
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
    /// Set while the uplink interface is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    pub bfd: BfdCountersView,
}

/// The datapath's BFD counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BfdCountersView {
    /// Valid control packets received (all sessions).
    pub rx: u64,
    /// Echo packets reflected in XDP.
    pub echo_reflected: u64,
    /// State-change events the ring buffer could not hold.
    pub events_lost: u64,
    /// Discarded packets by reason (`bfd::DecodeError` names).
    pub drops: std::collections::BTreeMap<String, u64>,
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
