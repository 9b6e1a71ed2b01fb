//! The daemon's local API: one JSON request per line on a Unix socket, one
//! JSON response line back. Shared by the daemon and the CLI so that both
//! sides agree on every field; the CLI prints `Response` payloads as they are
//! for `--json`.
use std::{
    io::{Read, Write},
    net::IpAddr,
    os::unix::{fs::FileTypeExt, net::UnixStream},
    path::{Path, PathBuf},
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

/// Where daemons put their sockets: the systemd unit's `RuntimeDirectory`,
/// one socket per uplink (`/run/xgw/<uplink>.sock`).
pub const SOCKET_DIR: &str = "/run/xgw";

/// The socket of the daemon on `uplink`, where the unit puts it.
pub fn uplink_socket(uplink: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{uplink}.sock"))
}

/// Which daemon a command talks to: `--socket` (or `XGW_SOCKET`) if given;
/// else `--uplink` (or `XGW_UPLINK`)'s socket; else the one socket in
/// `/run/xgw`. Several sockets and none named is an error that lists them.
pub fn resolve_socket(socket: Option<&Path>, uplink: Option<&str>) -> Result<PathBuf> {
    if let Some(s) = socket {
        return Ok(s.to_owned());
    }
    if let Some(u) = uplink {
        return Ok(uplink_socket(u));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(SOCKET_DIR)
        .map(|dir| {
            dir.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "sock"))
                .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket()))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!(
            "no xgw daemon socket in {SOCKET_DIR} (is `xgw run` running?); name the daemon with --uplink IF or \
             --socket PATH"
        ),
        _ => {
            let list: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
            bail!(
                "{} daemons have sockets in {SOCKET_DIR} ({}); name one with --uplink IF or --socket PATH",
                found.len(),
                list.join(", ")
            )
        }
    }
}

/// A request line: `{"op": "<request>", ...fields}`. Unknown fields are
/// refused, in every request (none is a unit variant, which serde would
/// let carry anything).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    PortAdd(Add<PortArgs>),
    PortDel {
        name: Name,
        #[serde(default, skip_serializing_if = "is_false")]
        if_exists: bool,
    },
    PortList {},
    TunnelAdd(Add<TunnelArgs>),
    /// Changes a tunnel's BFD in place (ovs-vsctl's `set Interface`).
    TunnelSet(TunnelSet),
    TunnelDel {
        name: Name,
        #[serde(default, skip_serializing_if = "is_false")]
        if_exists: bool,
    },
    TunnelList {},
    BindingAdd(Add<Binding>),
    BindingDel {
        vni: Vni,
        mac: MacAddr,
        #[serde(default, skip_serializing_if = "is_false")]
        if_exists: bool,
    },
    BindingList {},
    GroupAdd(Add<Group>),
    /// Replaces an existing group's members and rate.
    GroupSet(Group),
    GroupDel {
        vni: Vni,
        key: u16,
        #[serde(default, skip_serializing_if = "is_false")]
        if_exists: bool,
    },
    GroupList {},
    Show {},
    Stats {},
    /// Every BFD session, or the one named.
    BfdShow {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<Name>,
    },
    BfdPeerAdd(Add<BfdPeerArgs>),
    BfdPeerDel {
        name: Name,
        #[serde(default, skip_serializing_if = "is_false")]
        if_exists: bool,
    },
    BfdPeerList {},
    /// The whole store, as `xgw store export` prints it.
    StoreExport {},
    /// Change log levels at run time (`xgw log set`, like `ovs-appctl
    /// vlog/set`): `["aya=debug", "info"]`, all or none.
    LogSet {
        set: Vec<crate::logging::Directive>,
    },
    /// The log levels in force.
    LogShow {},
}

impl Request {
    /// Reads nothing but state: a refusal of one is not worth a log line.
    pub fn is_query(&self) -> bool {
        matches!(
            self,
            Request::PortList {}
                | Request::TunnelList {}
                | Request::BindingList {}
                | Request::GroupList {}
                | Request::Show {}
                | Request::Stats {}
                | Request::BfdShow { .. }
                | Request::BfdPeerList {}
                | Request::StoreExport {}
                | Request::LogShow {}
        )
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// An add request: the object, and ovs-vsctl's `--may-exist`. Without it an
/// object of that name (or key) that exists already is an error; with it an
/// identical one is not (nothing changes), a different one still is. On the
/// wire `may_exist` sits beside the object's own fields.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct Add<T: clap::Args> {
    #[command(flatten)]
    pub item: T,
    /// An identical existing one is not an error (nothing changes); one with
    /// other settings still is (ovs-vsctl's --may-exist).
    #[arg(long)]
    pub may_exist: bool,
}

impl<T: clap::Args> Add<T> {
    pub fn new(item: T) -> Add<T> {
        Add { item, may_exist: false }
    }
}

impl<T: clap::Args + Serialize> Serialize for Add<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let mut v = serde_json::to_value(&self.item).map_err(S::Error::custom)?;
        if self.may_exist {
            v.as_object_mut()
                .ok_or_else(|| S::Error::custom("an add request's object is not a JSON object"))?
                .insert("may_exist".into(), true.into());
        }
        v.serialize(s)
    }
}

impl<'de, T: clap::Args + serde::de::DeserializeOwned> Deserialize<'de> for Add<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Add<T>, D::Error> {
        use serde::de::Error;
        let mut fields = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let may_exist = match fields.remove("may_exist") {
            None => false,
            Some(serde_json::Value::Bool(b)) => b,
            Some(other) => return Err(D::Error::custom(format!("may_exist: {other} is not true or false"))),
        };
        // The object's own type refuses what it does not know.
        let item = T::deserialize(serde_json::Value::Object(fields)).map_err(D::Error::custom)?;
        Ok(Add { item, may_exist })
    }
}

/// `tunnel set`: what changes on an existing tunnel; what is not given stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct TunnelSet {
    /// The tunnel's name.
    pub name: Name,
    /// Run BFD on the tunnel (true) or stop it (false; its own timers go too).
    #[arg(long, value_name = "true|false")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<bool>,
    /// BFD Desired Min TX Interval, ms.
    #[arg(long = "bfd-min-tx-ms", value_name = "MS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_min_tx_ms: Option<u32>,
    /// BFD Required Min RX Interval, ms.
    #[arg(long = "bfd-min-rx-ms", value_name = "MS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_min_rx_ms: Option<u32>,
    /// BFD Detect Mult.
    #[arg(long = "bfd-detect-mult", value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_detect_mult: Option<u8>,
    /// Drop the tunnel's own BFD timers first: those not given return to
    /// the daemon's `[bfd]`.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "is_false")]
    pub bfd_default_timers: bool,
}

impl TunnelSet {
    /// `old` with this change applied.
    pub fn apply(&self, old: &TunnelArgs) -> TunnelArgs {
        let mut t = old.clone();
        if self.bfd_default_timers {
            (t.bfd_min_tx_ms, t.bfd_min_rx_ms, t.bfd_detect_mult) = (None, None, None);
        }
        if let Some(b) = self.bfd {
            t.bfd = b;
        }
        // BFD off takes the tunnel's own timers with it (OVS would keep
        // `bfd:min_tx` beside `bfd:enable=false`; a tunnel here has timers
        // only with BFD on, as in the config file).
        if self.bfd == Some(false) {
            (t.bfd_min_tx_ms, t.bfd_min_rx_ms, t.bfd_detect_mult) = (None, None, None);
        }
        t.bfd_min_tx_ms = self.bfd_min_tx_ms.or(t.bfd_min_tx_ms);
        t.bfd_min_rx_ms = self.bfd_min_rx_ms.or(t.bfd_min_rx_ms);
        t.bfd_detect_mult = self.bfd_detect_mult.or(t.bfd_detect_mult);
        t
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
    /// `check_tnl_key=true` expects). `xgw tunnel set NAME --bfd false|true`
    /// stops or starts the session in place.
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
    /// `xgw tunnel set` changes them on the running session.
    #[arg(long = "bfd-min-tx-ms", alias = "bfd-min-tx", value_name = "MS", requires = "bfd")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_min_tx_ms: Option<u32>,
    /// This tunnel's BFD Required Min RX Interval, ms.
    #[arg(long = "bfd-min-rx-ms", alias = "bfd-min-rx", value_name = "MS", requires = "bfd")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_min_rx_ms: Option<u32>,
    /// This tunnel's BFD Detect Mult.
    #[arg(long = "bfd-detect-mult", alias = "bfd-mult", value_name = "N", requires = "bfd")]
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
    #[arg(long = "min-tx-ms", alias = "min-tx", value_name = "MS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tx_ms: Option<u32>,
    /// Required Min RX Interval, ms [default: the daemon's `[bfd]`].
    #[arg(long = "min-rx-ms", alias = "min-rx", value_name = "MS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rx_ms: Option<u32>,
    /// Detect Mult [default: the daemon's `[bfd]`].
    #[arg(long = "detect-mult", alias = "mult", value_name = "N")]
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
    /// Changes to or from Up, `null` if it is not running.
    #[serde(default)]
    pub flap_count: Option<u64>,
    pub from_config: bool,
    /// Why the session does not run, or its last transmit error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One BFD session: every field of `ovs-appctl bfd/show`, named as OVS
/// labels it (snake_case, `_ms` for milliseconds; every number an integer),
/// plus where it runs and its counters. Times are relative to now, as OVS
/// prints them (`Detect Time: now +250ms`): positive ahead, negative past.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Both sides Up (OVS: `Forwarding`).
    pub forwarding: bool,
    pub detect_mult: u8,
    pub concatenated_path_down: bool,
    /// Negotiated: the interval we send at, and the remote's.
    pub tx_interval_ms: u64,
    pub rx_interval_ms: u64,
    /// When detection expires unless a packet arrives (a deadline, as
    /// OVS's `Detect Time`); `null` while it does not run (the remote
    /// unheard, or the session Down).
    pub detect_time_ms: Option<i64>,
    /// How long detection waits: the remote's Detect Mult times the
    /// negotiated receive interval (RFC 5880 6.8.4).
    pub detect_interval_ms: u64,
    /// When the next periodic packet goes out.
    pub next_tx_time_ms: i64,
    /// When the last periodic packet went out; `null` before the first.
    pub last_tx_time_ms: Option<i64>,
    /// The flags of the packet we send next (OVS's words: `none`, or
    /// `poll`, `final`, ...).
    pub local_flags: String,
    pub local_state: BfdState,
    pub local_diagnostic: String,
    pub local_discriminator: u32,
    /// Advertised now (a session not Up advertises at least 1000 ms TX).
    pub local_min_tx_ms: u64,
    pub local_min_rx_ms: u64,
    /// The flags of the last packet received.
    pub remote_flags: String,
    pub remote_state: BfdState,
    pub remote_diagnostic: String,
    pub remote_discriminator: u32,
    pub remote_min_tx_ms: u64,
    pub remote_min_rx_ms: u64,
    pub remote_detect_mult: u8,
    /// Changes to or from Up (Open vSwitch's `flap_count`).
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

/// RFC 5880's flag bits in Open vSwitch's words (`bfd_flag_str`).
pub fn bfd_flags(flags: u8) -> String {
    use xgw_common::bfd::{FLAG_AUTH, FLAG_CPI, FLAG_DEMAND, FLAG_FINAL, FLAG_MULTIPOINT, FLAG_POLL};
    let names = [
        (FLAG_MULTIPOINT, "multipoint"),
        (FLAG_DEMAND, "demand"),
        (FLAG_AUTH, "auth"),
        (FLAG_CPI, "ctl"),
        (FLAG_FINAL, "final"),
        (FLAG_POLL, "poll"),
    ];
    let set: Vec<&str> = names.iter().filter(|(bit, _)| flags & bit != 0).map(|(_, n)| *n).collect();
    if set.is_empty() {
        "none".to_owned()
    } else {
        set.join(" ")
    }
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
    /// `bfd show`: every session.
    BfdSessions(Vec<BfdSessionView>),
    /// `bfd show NAME`: that one.
    BfdSession(BfdSessionView),
    /// A `del --if-exists` of something that does not exist.
    Absent(Absent),
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
            Reply::BfdSession(v) => serde_json::to_value(v),
            Reply::Absent(v) => serde_json::to_value(v),
            Reply::BfdPeer(v) => serde_json::to_value(v),
            Reply::BfdPeers(v) => serde_json::to_value(v),
            Reply::Store(v) => serde_json::to_value(v),
            Reply::Log(v) => serde_json::to_value(v),
        }
    }
}

/// What a `del --if-exists` found missing: nothing was deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Absent {
    /// The object as errors name it (`port "vm9"`, `binding vni 5 mac ...`).
    pub absent: String,
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
    pub flap_count: Option<u64>,
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
    /// The daemon's version (`xgw --version`), as OVS's `ovs_version`.
    pub version: String,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
    pub uplink: UplinkView,
    pub bpffs: String,
    pub state_dir: String,
    pub ports: Vec<PortView>,
    pub bindings: Vec<BindingView>,
    pub groups: Vec<GroupView>,
    /// Single-hop BFD sessions toward underlay routers.
    pub bfd_peers: Vec<BfdPeerView>,
    pub ofports: OfportsView,
    /// The OVN chassis this gateway is, if it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ovn: Option<OvnView>,
}

/// The chassis' session with the Southbound: what the daemon's Southbound
/// task keeps and `show` prints as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SbSession {
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
}

/// The chassis' session with the Southbound and what the last view of it
/// did: as `ovn-appctl connection-status` and `ovn-sbctl show` would.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OvnView {
    pub chassis: String,
    #[serde(flatten)]
    pub session: SbSession,
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

/// An error and its causes on one line, as `{:#}` prints them, less a
/// cause its parent already quoted: aya's `EbpfError::MapError` prints
/// "map error: {0}" and is also the source of its own `MapError`, which
/// `{:#}` would print twice (`failed to create map X: failed to create map X`).
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    let mut last = String::new();
    for cause in e.chain() {
        let shown = cause.to_string();
        if !last.is_empty() && last.contains(shown.as_str()) {
            last = shown;
            continue;
        }
        if !text.is_empty() {
            text += ": ";
        }
        text += &shown;
        last = shown;
    }
    text.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_refused_in_every_request() {
        for line in [
            r#"{"op":"show","x":1}"#,
            r#"{"op":"port_list","x":1}"#,
            r#"{"op":"port_del","name":"a","x":1}"#,
            r#"{"op":"tunnel_add","name":"t","remote_ip":"198.51.100.2","x":1}"#,
            r#"{"op":"tunnel_add","name":"t","remote_ip":"198.51.100.2","may_exist":1}"#,
        ] {
            assert!(serde_json::from_str::<Request>(line).is_err(), "{line} accepted");
        }
        let ok: Request = serde_json::from_str(r#"{"op":"show"}"#).unwrap();
        assert_eq!(ok, Request::Show {});
    }

    #[test]
    fn may_exist_sits_beside_the_objects_fields_and_round_trips() {
        let line = r#"{"op":"tunnel_add","name":"t","remote_ip":"198.51.100.2","may_exist":true}"#;
        let Request::TunnelAdd(add) = serde_json::from_str(line).unwrap() else { panic!("a tunnel add") };
        assert!(add.may_exist);
        assert_eq!(add.item.name.as_str(), "t");
        let text = serde_json::to_string(&Request::TunnelAdd(add.clone())).unwrap();
        assert!(text.contains(r#""may_exist":true"#), "{text}");
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), Request::TunnelAdd(add));
        let plain = r#"{"op":"tunnel_add","name":"t","remote_ip":"198.51.100.2"}"#;
        let Request::TunnelAdd(add) = serde_json::from_str(plain).unwrap() else { panic!("a tunnel add") };
        assert!(!add.may_exist);
    }

    #[test]
    fn tunnel_set_changes_what_it_is_given_and_keeps_the_rest() {
        let old: TunnelArgs = serde_json::from_str(
            r#"{"name":"t","remote_ip":"198.51.100.2","bfd":true,"bfd_min_tx_ms":300,"bfd_detect_mult":5}"#,
        )
        .unwrap();
        let set = |json: &str| -> TunnelSet { serde_json::from_str(json).unwrap() };
        let t = set(r#"{"name":"t","bfd_min_rx_ms":50}"#).apply(&old);
        assert_eq!((t.bfd, t.bfd_min_tx_ms, t.bfd_min_rx_ms, t.bfd_detect_mult), (true, Some(300), Some(50), Some(5)));
        let t = set(r#"{"name":"t","bfd_default_timers":true,"bfd_detect_mult":4}"#).apply(&old);
        assert_eq!((t.bfd_min_tx_ms, t.bfd_min_rx_ms, t.bfd_detect_mult), (None, None, Some(4)));
        let t = set(r#"{"name":"t","bfd":false}"#).apply(&old);
        assert_eq!((t.bfd, t.bfd_min_tx_ms, t.bfd_detect_mult), (false, None, None));
        assert_eq!((t.remote_ip, t.name), (old.remote_ip, old.name.clone()));
    }

    #[test]
    fn error_text_says_a_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("failed to create map `X`")]
        struct Inner(#[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("map error: {0}")]
        struct Outer(#[from] Inner);
        let e =
            anyhow::Error::new(Outer(Inner(std::io::Error::from_raw_os_error(1)))).context("loading the xgw datapath");
        assert_eq!(
            error_text(&e),
            "loading the xgw datapath: map error: failed to create map `X`: Operation not permitted (os error 1)"
        );
    }

    #[test]
    fn flags_read_as_ovs_prints_them() {
        assert_eq!(bfd_flags(0), "none");
        assert_eq!(bfd_flags(xgw_common::bfd::FLAG_POLL), "poll");
        assert_eq!(bfd_flags(xgw_common::bfd::FLAG_FINAL | xgw_common::bfd::FLAG_CPI), "ctl final");
    }
}
