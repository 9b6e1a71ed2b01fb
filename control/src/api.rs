//! The daemon's local API: one JSON request per line on a Unix socket, one
//! JSON response line back. Shared by the daemon and the CLI so that both
//! sides agree on every field; the CLI prints `Response` payloads as they are
//! for `--json`.
use std::{
    io::{Read, Write},
    net::IpAddr,
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use crate::datapath::AttachMode;
pub use crate::ofport::{Binding, Group};
use crate::types::{AllowedAddress, BfdOverride, IfName, MacAddr, Name, PortKey, UnicastIp, Vni};

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
        name: Name,
    },
    PortList,
    TunnelAdd(TunnelArgs),
    TunnelDel {
        name: Name,
    },
    TunnelList,
    BindingAdd(Binding),
    BindingDel {
        vni: Vni,
        mac: MacAddr,
    },
    BindingList,
    GroupAdd(Group),
    GroupDel {
        vni: Vni,
        key: u16,
    },
    GroupList,
    Show,
    Stats,
    /// Every BFD session, or the one named.
    BfdShow {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<Name>,
    },
    BfdPeerAdd(BfdPeerArgs),
    BfdPeerDel {
        name: Name,
    },
    BfdPeerList,
    /// The whole store, as `xgw store export` prints it.
    StoreExport,
    /// Change log levels at run time (`xgw log set`, like `ovs-appctl
    /// vlog/set`): `["aya=debug", "info"]`, all or none.
    LogSet {
        set: Vec<crate::logging::Directive>,
    },
    /// The log levels in force.
    LogShow,
}

impl Request {
    /// Reads nothing but state: a refusal of one is not worth a log line.
    pub fn is_query(&self) -> bool {
        matches!(
            self,
            Request::PortList
                | Request::TunnelList
                | Request::BindingList
                | Request::GroupList
                | Request::Show
                | Request::Stats
                | Request::BfdShow { .. }
                | Request::BfdPeerList
                | Request::StoreExport
                | Request::LogShow
        )
    }
}

/// A local port, as the operator names it. One definition for the API's
/// JSON and `xgw port add`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct PortArgs {
    /// The port's name (unique among ports, tunnels and BFD peers).
    pub name: Name,
    /// The interface the port's VM sits behind (the daemon attaches `xgw_local` to it).
    #[arg(long)]
    pub ifname: IfName,
    /// The logical switch's VNI (0..=16777215).
    #[arg(long)]
    pub vni: Vni,
    /// The port's OVN logical port key (1..=32767): the egress key of the Geneve option.
    #[arg(long)]
    pub port_key: PortKey,
    /// The VM's MAC: frames to it are switched or decapsulated to this port.
    #[arg(long)]
    pub mac: MacAddr,
    /// The VM's IP, answered by the ARP/ND responder.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<UnicastIp>,
    /// Ask for this OpenFlow number (1..=65279).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ofport: Option<u16>,
    /// Turn port security off: the VM may send from any MAC and IP. By
    /// default it may send only from `--mac` (and `--ip`) and `--allow`,
    /// and its ARP and neighbour discovery may claim only those.
    #[arg(long = "no-port-security", action = clap::ArgAction::SetFalse)]
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub port_security: bool,
    /// Another address the VM may send from, as an element of OVN's
    /// `port_security`: "MAC [IP ...]" (a MAC listed with IPs may send
    /// only from those). Repeat for more.
    #[arg(long = "allow", value_name = "MAC [IP ...]")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<AllowedAddress>,
}

impl PortArgs {
    /// The port as the port map holds it.
    pub fn local_port(&self) -> crate::ofport::LocalPort {
        crate::ofport::LocalPort {
            name: self.name.clone(),
            ifname: self.ifname.clone(),
            vni: self.vni,
            port_key: self.port_key,
            mac: self.mac,
            ip: self.ip,
            ofport_request: self.ofport,
            port_security: self.port_security,
            allowed: self.allow.clone(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// A Geneve tunnel to another chassis (API and `xgw tunnel add`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct TunnelArgs {
    /// The tunnel's name (unique among ports, tunnels and BFD peers).
    pub name: Name,
    /// The remote chassis' tunnel endpoint address.
    #[arg(long)]
    pub remote_ip: UnicastIp,
    /// A fixed key: the one VNI the tunnel carries (0..=16777215; OVS's
    /// `options:key=N`). Without it the tunnel is flow-keyed (`key=flow`, what
    /// OVN builds): one tunnel per remote chassis, carrying every VNI.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<Vni>,
    /// Run BFD on the tunnel (on tunnel key 0 if it is flow-keyed, as OVN's
    /// `check_tnl_key=true` expects). Adding the same tunnel again with it
    /// on or off starts or stops the session in place.
    #[arg(long)]
    #[serde(default)]
    pub bfd: bool,
    /// Carry OVN's Geneve option (ingress/egress port keys).
    #[arg(long)]
    #[serde(default)]
    pub ovn_metadata: bool,
    /// Ask for this OpenFlow number (1..=65279).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ofport: Option<u16>,
    /// This tunnel's BFD Desired Min TX Interval, ms [default: the daemon's `[bfd]`].
    /// Adding the same tunnel again with other timers changes them on the running session.
    #[arg(long = "bfd-min-tx", requires = "bfd")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_min_tx_ms: Option<u32>,
    /// This tunnel's BFD Required Min RX Interval, ms.
    #[arg(long = "bfd-min-rx", requires = "bfd")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_min_rx_ms: Option<u32>,
    /// This tunnel's BFD Detect Mult.
    #[arg(long = "bfd-mult", requires = "bfd")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_detect_mult: Option<u8>,
}

impl TunnelArgs {
    /// The tunnel's own BFD timers (none set: `[bfd]`'s).
    pub fn bfd_timers(&self) -> BfdOverride {
        BfdOverride { min_tx_ms: self.bfd_min_tx_ms, min_rx_ms: self.bfd_min_rx_ms, detect_mult: self.bfd_detect_mult }
    }
}

/// A single-hop BFD session (RFC 5881) toward a router on the underlay
/// (API and `xgw bfd peer add`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct BfdPeerArgs {
    /// The session's name (unique among ports, tunnels and BFD peers).
    pub name: Name,
    /// The router's address (IPv4).
    #[arg(long)]
    pub peer_ip: UnicastIp,
    /// The interface toward it [default: the uplink].
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<IfName>,
    /// The source address [default: the daemon's IPv4 --local-ip].
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ip: Option<UnicastIp>,
    /// Reflect the router's echo packets in XDP (FRR's echo mode).
    #[arg(long)]
    #[serde(default)]
    pub echo: bool,
    /// Desired Min TX Interval, ms [default: the daemon's `[bfd]`].
    #[arg(long = "min-tx")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tx_ms: Option<u32>,
    /// Required Min RX Interval, ms.
    #[arg(long = "min-rx")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rx_ms: Option<u32>,
    /// Detect Mult.
    #[arg(long = "mult")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect_mult: Option<u8>,
}

impl BfdPeerArgs {
    /// The peer's own BFD timers (none set: `[bfd]`'s).
    pub fn timers(&self) -> BfdOverride {
        BfdOverride { min_tx_ms: self.min_tx_ms, min_rx_ms: self.min_rx_ms, detect_mult: self.detect_mult }
    }
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
    pub state: Option<BfdState>,
    pub from_config: bool,
}

/// One BFD session: the fields of `ovs-appctl bfd/show`, plus where it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BfdSessionView {
    pub name: String,
    /// `tunnel` (Geneve, toward Open vSwitch or another xgw) or `peer`
    /// (single-hop on the underlay).
    #[serde(rename = "type")]
    pub kind: SessionType,
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
    pub local_state: BfdState,
    pub local_diagnostic: String,
    pub local_discriminator: u32,
    pub local_min_tx_ms: u32,
    pub local_min_rx_ms: u32,
    pub remote_state: BfdState,
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

/// One line back: `{"ok": {"<reply kind>": ...}}` or `{"error": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    // Boxed: a reply is large and an error a string.
    Ok(Box<Reply>),
    Error(String),
}

/// What each request is answered with; `--json` prints the inner document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// `port add`, `tunnel add`.
    Port(PortView),
    /// `port list`, `tunnel list`.
    Ports(Vec<PortView>),
    /// `port del`, `tunnel del`, `bfd peer del`.
    Deleted(Deleted),
    Binding(BindingView),
    BindingDeleted(BindingView),
    Bindings(Vec<BindingView>),
    Group(GroupView),
    GroupDeleted(GroupView),
    Groups(Vec<GroupView>),
    Show(Box<ShowView>),
    Stats(StatsView),
    /// `bfd show` (one session or all).
    BfdSessions(Vec<BfdSessionView>),
    BfdPeer(BfdPeerView),
    BfdPeers(Vec<BfdPeerView>),
    Store(crate::ofport::redb_store::Export),
    /// `log set`, `log show`.
    Log(crate::logging::LogView),
}

impl Reply {
    /// The reply's document, as `--json` prints it.
    pub fn document(&self) -> serde_json::Result<serde_json::Value> {
        match self {
            Reply::Port(v) => serde_json::to_value(v),
            Reply::Ports(v) => serde_json::to_value(v),
            Reply::Deleted(v) => serde_json::to_value(v),
            Reply::Binding(v) | Reply::BindingDeleted(v) => serde_json::to_value(v),
            Reply::Bindings(v) => serde_json::to_value(v),
            Reply::Group(v) | Reply::GroupDeleted(v) => serde_json::to_value(v),
            Reply::Groups(v) => serde_json::to_value(v),
            Reply::Show(v) => serde_json::to_value(v),
            Reply::Stats(v) => serde_json::to_value(v),
            Reply::BfdSessions(v) => serde_json::to_value(v),
            Reply::BfdPeer(v) => serde_json::to_value(v),
            Reply::BfdPeers(v) => serde_json::to_value(v),
            Reply::Store(v) => serde_json::to_value(v),
            Reply::Log(v) => serde_json::to_value(v),
        }
    }
}

/// What a delete removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub name: Name,
    /// The number it had (ports and tunnels), now in hold-down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ofport: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortType {
    Local,
    Tunnel,
}

impl PortType {
    pub fn name(self) -> &'static str {
        match self {
            PortType::Local => "local",
            PortType::Tunnel => "tunnel",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionType {
    /// Inside a Geneve tunnel.
    Tunnel,
    /// Single-hop on the underlay.
    Peer,
}

impl std::fmt::Display for PortType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl SessionType {
    pub fn name(self) -> &'static str {
        match self {
            SessionType::Tunnel => "tunnel",
            SessionType::Peer => "peer",
        }
    }
}

/// RFC 5880's session states, as `ovs-appctl bfd/show` spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BfdState {
    AdminDown,
    Down,
    Init,
    Up,
}

impl BfdState {
    pub const ALL: [BfdState; 4] = [BfdState::AdminDown, BfdState::Down, BfdState::Init, BfdState::Up];

    pub fn name(self) -> &'static str {
        match self {
            BfdState::AdminDown => "admin_down",
            BfdState::Down => "down",
            BfdState::Init => "init",
            BfdState::Up => "up",
        }
    }

    /// From the engine's `State::name()`; anything else is Down.
    pub fn from_name(s: &str) -> BfdState {
        BfdState::ALL.into_iter().find(|b| b.name() == s).unwrap_or(BfdState::Down)
    }
}

impl std::fmt::Display for BfdState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A port as `show`, `port list` and `tunnel list` print it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortView {
    pub name: String,
    pub ofport: u16,
    #[serde(rename = "type")]
    pub kind: PortType,
    /// A local port's VNI, a fixed-key tunnel's; absent for a flow-keyed tunnel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// A tunnel's key as OVS spells `options:key`: `flow`, or the VNI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_key: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// Local ports: what the VM may send from, as OVN's `port_security`
    /// lists it ("MAC [IP ...]" each); empty when port security is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_security: Option<Vec<String>>,
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
    pub state: Option<BfdState>,
    #[serde(default)]
    pub flaps: Option<u64>,
    /// Local and remote both Up.
    #[serde(default)]
    pub forwarding: bool,
    pub min_tx_ms: u32,
    pub min_rx_ms: u32,
    pub detect_mult: u8,
}

/// A multicast group as `group list` and `show` print it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    pub vni: u32,
    pub key: u16,
    pub ports: Vec<String>,
    pub tunnels: Vec<String>,
    /// The members' OpenFlow numbers as the datapath holds them, local
    /// ports first.
    pub ofports: Vec<u16>,
    pub rate_pps: u32,
    /// What `group add` did: `created`, `updated` or `unchanged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
    pub from_config: bool,
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
    pub mode: AttachMode,
    /// The largest uplink MTU the datapath carries in full in this mode
    /// (`datapath::max_mtu`).
    #[serde(default)]
    pub max_mtu: u32,
    /// Set when `mtu` exceeds `max_mtu`: what happens to the larger frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu_warning: Option<String>,
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
    /// The OVN chassis this gateway is, if it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ovn: Option<OvnView>,
}

/// The chassis' session with the Southbound and what the last view of it
/// did: as `ovn-appctl connection-status` and `ovn-sbctl show` would.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OvnView {
    pub chassis: String,
    /// The raft member (or server) in use.
    pub remote: Option<String>,
    pub connected: bool,
    pub method: Option<String>,
    pub last_txn_id: Option<String>,
    pub registered: bool,
    /// The `SB_Global.nb_cfg` applied and acknowledged.
    pub nb_cfg: i64,
    pub last_error: Option<String>,
    pub resumes: u64,
    pub full_resyncs: u64,
    /// Claimed logical port -> whether it forwards (`Port_Binding.up`).
    pub claimed: std::collections::BTreeMap<String, bool>,
    /// Logical port -> why it is not claimed.
    pub refused: std::collections::BTreeMap<String, String>,
    pub warnings: Vec<String>,
    pub tunnels: usize,
    pub bindings: usize,
    pub groups: usize,
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

/// `--timeout`: seconds, more than 0 and at most a day.
pub fn parse_timeout(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(t) if t > 0.0 && t <= 86400.0 => Ok(t),
        _ => Err(format!("{s:?} is not a number of seconds (0 < timeout <= 86400)")),
    }
}

/// Sends one request and returns the daemon's reply (an error for
/// `Response::Error`, carrying the daemon's one-line message).
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Reply> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!("cannot reach the xgw daemon at {} (is `xgw run` running? --socket)", socket.display())
    })?;
    let silent = || {
        anyhow!(
            "the xgw daemon at {} did not answer within {} s (stopped, or stuck; --timeout to wait longer)",
            socket.display(),
            timeout.as_secs_f64()
        )
    };
    let timed_out =
        |e: &std::io::Error| matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
    // One deadline for the whole exchange, not one per read.
    let deadline = std::time::Instant::now() + timeout;
    stream.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line).map_err(|e| {
        if timed_out(&e) {
            silent()
        } else {
            anyhow!(e).context("sending the request")
        }
    })?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    while !reply.ends_with(b"\n") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(silent());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if reply.len() + n > 64 << 20 => bail!("the daemon's answer is larger than 64 MiB"),
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if timed_out(&e) => return Err(silent()),
            Err(e) => return Err(anyhow!(e).context("reading the daemon's answer")),
        }
    }
    let reply = String::from_utf8(reply).context("the daemon's answer is not UTF-8")?;
    if reply.is_empty() {
        bail!("the daemon closed the connection without an answer");
    }
    match serde_json::from_str(&reply).context("the daemon's answer is not a reply of this xgw's API")? {
        Response::Ok(v) => Ok(*v),
        Response::Error(e) => bail!("{e}"),
    }
}
