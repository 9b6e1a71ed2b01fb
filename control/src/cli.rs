//! The operator commands that talk to the daemon. Each sends one request;
//! with `--json` it prints the daemon's answer as exactly one JSON document,
//! otherwise a table. The human forms carry everything the JSON does that
//! an operator acts on: every `error` and warning field is printed.
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::{
    api::{
        self, Add, BfdPeerArgs, BfdPeerView, BfdSessionView, Binding, BindingView, Deleted, Group, GroupView, PortArgs,
        PortView, Reply, Request, ShowView, StatsView, TunnelArgs, TunnelSet,
    },
    types::{MacAddr, Name, Vni},
};

/// Options of every command, before or after the subcommand (`xgw
/// --socket S show` and `xgw show --socket S` alike), as ovs-vsctl's.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// The daemon's API socket [default: /run/xgw/<UPLINK>.sock with
    /// --uplink, else the only socket in /run/xgw].
    #[arg(long, global = true, env = "XGW_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The uplink interface: the one `run` serves, or the daemon a command
    /// talks to (its socket /run/xgw/<UPLINK>.sock, as the systemd unit
    /// `xgw@<UPLINK>` puts it).
    #[arg(long, global = true, env = "XGW_UPLINK", value_name = "IF")]
    pub uplink: Option<String>,
    /// Print exactly one JSON document, an error too (`{"error": "..."}`,
    /// with a non-zero exit).
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for the daemon's answer before giving up (a daemon
    /// that is stopped or stuck answers nothing).
    #[arg(long, global = true, default_value_t = 5.0, value_parser = api::parse_timeout, value_name = "SECONDS")]
    pub timeout: f64,
}

impl Global {
    /// The socket of the daemon this command talks to (`api::resolve_socket`).
    pub fn socket(&self) -> Result<PathBuf> {
        api::resolve_socket(self.socket.as_deref(), self.uplink.as_deref())
    }
}

/// ovs-vsctl's `--if-exists` for the `del` commands.
#[derive(Args, Debug, Clone, Copy)]
pub struct IfExists {
    /// Deleting something that does not exist is not an error (ovs-vsctl's
    /// --if-exists).
    #[arg(long)]
    pub if_exists: bool,
}

#[derive(Subcommand, Debug)]
pub enum PortCmd {
    /// Add a local port: traffic for (VNI, port key) or its MAC goes to IFNAME.
    /// A port of that name that exists already is an error (see --may-exist).
    Add(Add<PortArgs>),
    /// Delete a local port; its OpenFlow number enters hold-down.
    Del {
        /// The port's name.
        name: Name,
        #[command(flatten)]
        if_exists: IfExists,
    },
    /// List every local port, by OpenFlow number.
    List,
}

#[derive(Subcommand, Debug)]
pub enum TunnelCmd {
    /// Add a Geneve tunnel to another chassis. A tunnel of that name that
    /// exists already is an error (see --may-exist; `set` changes its BFD).
    Add(Add<TunnelArgs>),
    /// Change an existing tunnel's BFD in place (ovs-vsctl's `set
    /// Interface`): what is not given stays as it is; new timers reach the
    /// running session by a Poll Sequence, without a flap.
    Set(TunnelSet),
    /// Delete a tunnel (refused while bindings or groups use it).
    Del {
        /// The tunnel's name.
        name: Name,
        #[command(flatten)]
        if_exists: IfExists,
    },
    /// List every tunnel, by OpenFlow number.
    List,
}

#[derive(Subcommand, Debug)]
pub enum BfdCmd {
    /// Every BFD session, or the one named, with the fields of `ovs-appctl
    /// bfd/show` (`--json`: an array, or the one session's object).
    Show {
        /// A tunnel's or peer's name.
        name: Option<Name>,
    },
    /// Single-hop BFD sessions (RFC 5881) toward underlay routers.
    #[command(subcommand)]
    Peer(PeerCmd),
}

#[derive(Subcommand, Debug)]
pub enum PeerCmd {
    /// Add a single-hop session toward a router. A peer of that name that
    /// exists already is an error (see --may-exist).
    Add(Add<BfdPeerArgs>),
    /// Delete a single-hop session.
    Del {
        /// The peer's name.
        name: Name,
        #[command(flatten)]
        if_exists: IfExists,
    },
    /// List every single-hop session.
    List,
}

#[derive(Subcommand, Debug)]
pub enum LogCmd {
    /// Change log levels in the running daemon (like `ovs-appctl
    /// vlog/set`); they last until it stops (`XGW_LOG` sets them at start).
    Set {
        /// `TARGET=LEVEL` (a crate or module path: `aya=debug`,
        /// `xgw::daemon::bfd=trace`, `xgw_datapath=warn`) or a bare LEVEL
        /// for xgw's own; levels: off, error, warn, info, debug, trace.
        #[arg(required = true, value_name = "TARGET=LEVEL")]
        directives: Vec<crate::logging::Directive>,
    },
    /// The levels in force: xgw's, each target named, every other target's.
    Show,
}

#[derive(Subcommand, Debug)]
pub enum BindingCmd {
    /// Bind a remote MAC (and IP) to a tunnel and the remote port's key. A
    /// binding of that VNI and MAC that exists already is an error (see
    /// --may-exist).
    Add(Add<Binding>),
    /// Delete a binding.
    Del {
        /// The binding's VNI.
        #[arg(long)]
        vni: Vni,
        /// The binding's MAC.
        #[arg(long)]
        mac: MacAddr,
        #[command(flatten)]
        if_exists: IfExists,
    },
    /// List every binding.
    List,
}

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    /// Add a multicast group (OVN's Multicast_Group). A group of that VNI
    /// and key that exists already is an error (see --may-exist; `set`
    /// changes its members).
    Add(Add<Group>),
    /// Replace an existing group's members and rate.
    Set(Group),
    /// Delete a group.
    Del {
        /// The group's VNI.
        #[arg(long)]
        vni: Vni,
        /// The group's key.
        #[arg(long)]
        key: u16,
        #[command(flatten)]
        if_exists: IfExists,
    },
    /// List every group.
    List,
}

pub fn group(g: &Global, cmd: GroupCmd) -> Result<()> {
    let req = match cmd {
        GroupCmd::Add(a) => Request::GroupAdd(a),
        GroupCmd::Set(s) => Request::GroupSet(s),
        GroupCmd::Del { vni, key, if_exists } => Request::GroupDel { vni, key, if_exists: if_exists.if_exists },
        GroupCmd::List => Request::GroupList {},
    };
    send(g, &req)
}

pub fn port(g: &Global, cmd: PortCmd) -> Result<()> {
    let req = match cmd {
        PortCmd::Add(a) => Request::PortAdd(a),
        PortCmd::Del { name, if_exists } => Request::PortDel { name, if_exists: if_exists.if_exists },
        PortCmd::List => Request::PortList {},
    };
    send(g, &req)
}

pub fn tunnel(g: &Global, cmd: TunnelCmd) -> Result<()> {
    let req = match cmd {
        TunnelCmd::Add(a) => Request::TunnelAdd(a),
        TunnelCmd::Set(s) => Request::TunnelSet(s),
        TunnelCmd::Del { name, if_exists } => Request::TunnelDel { name, if_exists: if_exists.if_exists },
        TunnelCmd::List => Request::TunnelList {},
    };
    send(g, &req)
}

pub fn binding(g: &Global, cmd: BindingCmd) -> Result<()> {
    let req = match cmd {
        BindingCmd::Add(b) => Request::BindingAdd(b),
        BindingCmd::Del { vni, mac, if_exists } => Request::BindingDel { vni, mac, if_exists: if_exists.if_exists },
        BindingCmd::List => Request::BindingList {},
    };
    send(g, &req)
}

pub fn bfd(g: &Global, cmd: BfdCmd) -> Result<()> {
    let req = match cmd {
        BfdCmd::Show { name } => Request::BfdShow { name },
        BfdCmd::Peer(PeerCmd::Add(p)) => Request::BfdPeerAdd(p),
        BfdCmd::Peer(PeerCmd::Del { name, if_exists }) => Request::BfdPeerDel { name, if_exists: if_exists.if_exists },
        BfdCmd::Peer(PeerCmd::List) => Request::BfdPeerList {},
    };
    send(g, &req)
}

pub fn log(g: &Global, cmd: LogCmd) -> Result<()> {
    let req = match cmd {
        LogCmd::Set { directives } => Request::LogSet { set: directives },
        LogCmd::Show => Request::LogShow {},
    };
    send(g, &req)
}

pub fn show(g: &Global) -> Result<()> {
    send(g, &Request::Show {})
}

pub fn stats(g: &Global) -> Result<()> {
    send(g, &Request::Stats {})
}

fn send(g: &Global, req: &Request) -> Result<()> {
    let reply = api::call(&g.socket()?, req, std::time::Duration::from_secs_f64(g.timeout))?;
    if g.json {
        println!("{}", reply.document()?);
        return Ok(());
    }
    print!("{}", human(&reply));
    Ok(())
}

/// The reply as a person reads it.
fn human(reply: &Reply) -> String {
    match reply {
        Reply::Port(p) => format!("{} {:?}: ofport {}\n", p.kind, p.name, p.ofport),
        Reply::Deleted(Deleted { name, ofport: Some(n) }) => format!("deleted {:?} (ofport {n})\n", name.as_str()),
        Reply::Deleted(Deleted { name, ofport: None }) => format!("deleted bfd peer {:?}\n", name.as_str()),
        Reply::Absent(a) => format!("{} does not exist: nothing deleted\n", a.absent),
        Reply::Ports(ports) => ports_table(ports),
        Reply::Binding(b) => {
            format!("binding vni {} mac {} -> tunnel {:?} (ofport {})\n", b.vni, b.mac, b.tunnel, b.ofport)
        }
        Reply::BindingDeleted(b) => format!("deleted binding vni {} mac {}\n", b.vni, b.mac),
        Reply::Bindings(b) => bindings_table(b),
        Reply::Group(g) => format!(
            "group vni {} key {}: {} ({} members)\n",
            g.vni,
            g.key,
            g.change.as_deref().unwrap_or("ok"),
            g.ofports.len()
        ),
        Reply::GroupDeleted(g) => format!("deleted group vni {} key {}\n", g.vni, g.key),
        Reply::Groups(g) => groups_table(g),
        Reply::Show(v) => show_text(v),
        Reply::Stats(v) => stats_text(v),
        Reply::BfdSessions(s) => s.iter().map(|v| format!("---- {} ----\n{}", v.name, bfd_details(v))).collect(),
        // OVS prints one session without its header line.
        Reply::BfdSession(v) => bfd_details(v),
        Reply::BfdPeer(p) => format!("bfd peer {:?}: {} via {} from {}\n", p.name, p.peer_ip, p.ifname, p.local_ip),
        Reply::BfdPeers(p) => peers_table(p),
        Reply::Store(e) => serde_json::to_string_pretty(e).unwrap_or_default() + "\n",
        Reply::Log(v) => log_table(v),
    }
}

/// `now +250ms`, as OVS prints a time relative to now.
fn from_now(ms: i64) -> String {
    format!("now {ms:+}ms")
}

/// One session as `ovs-appctl bfd/show` lays it out (`bfd_put_details`),
/// every one of its fields in its order; then what xgw adds: the path,
/// the detection interval, flaps, packets and errors.
fn bfd_details(v: &BfdSessionView) -> String {
    let mut s = String::new();
    s += &format!("  Forwarding: {}\n", v.forwarding);
    s += &format!("  Detect Multiplier: {}\n", v.detect_mult);
    s += &format!("  Concatenated Path Down: {}\n", v.concatenated_path_down);
    s += &format!("  TX Interval: Approx {}ms\n", v.tx_interval_ms);
    s += &format!("  RX Interval: Approx {}ms\n", v.rx_interval_ms);
    s += &format!("  Detect Time: {}\n", v.detect_time_ms.map_or_else(|| "none (not detecting)".to_owned(), from_now));
    s += &format!("  Next TX Time: {}\n", from_now(v.next_tx_time_ms));
    s += &format!("  Last TX Time: {}\n", v.last_tx_time_ms.map_or_else(|| "none".to_owned(), from_now));
    s += "\n";
    s += &format!("  Local Flags: {}\n", v.local_flags);
    s += &format!("  Local Session State: {}\n", v.local_state);
    s += &format!("  Local Diagnostic: {}\n", v.local_diagnostic);
    s += &format!("  Local Discriminator: 0x{:x}\n", v.local_discriminator);
    s += &format!("  Local Minimum TX Interval: {}ms\n", v.local_min_tx_ms);
    s += &format!("  Local Minimum RX Interval: {}ms\n", v.local_min_rx_ms);
    s += "\n";
    s += &format!("  Remote Flags: {}\n", v.remote_flags);
    s += &format!("  Remote Session State: {}\n", v.remote_state);
    s += &format!("  Remote Diagnostic: {}\n", v.remote_diagnostic);
    s += &format!("  Remote Discriminator: 0x{:x}\n", v.remote_discriminator);
    s += &format!("  Remote Minimum TX Interval: {}ms\n", v.remote_min_tx_ms);
    s += &format!("  Remote Minimum RX Interval: {}ms\n", v.remote_min_rx_ms);
    s += &format!("  Remote Detect Multiplier: {}\n", v.remote_detect_mult);
    s += "\n";
    let path = match (v.ofport, v.vni, &v.ifname) {
        (Some(ofport), Some(vni), _) => format!("tunnel ofport {ofport}, vni {vni}, {} -> {}", v.local_ip, v.remote_ip),
        (_, _, Some(ifname)) => format!("single-hop on {ifname}, {} -> {}", v.local_ip, v.remote_ip),
        _ => format!("{} -> {}", v.local_ip, v.remote_ip),
    };
    s += &format!("  Path: {path}{}\n", if v.echo { ", echo" } else { "" });
    if let Some(mac) = &v.nexthop_mac {
        s += &format!("  Next Hop: {mac}\n");
    }
    s += &format!("  Detect Interval: {}ms\n", v.detect_interval_ms);
    if let Some(ms) = v.last_change_ms {
        s += &format!("  Last State Change: {}\n", from_now(-(ms as i64)));
    }
    s += &format!("  Flap Count: {}\n", v.flap_count);
    s += &format!("  Packets: rx {}, tx {}\n", v.rx_packets, v.tx_packets);
    if let Some(e) = &v.error {
        s += &format!("  Error: {e}\n");
    }
    s
}

fn peers_table(peers: &[BfdPeerView]) -> String {
    let mut s = format!(
        "{:<16} {:<16} {:<10} {:<16} {:>6} {:>6} {:>4} {:<5} {}\n",
        "name", "peer_ip", "ifname", "local_ip", "min_tx", "min_rx", "mult", "echo", "state"
    );
    for p in peers {
        s += &format!(
            "{:<16} {:<16} {:<10} {:<16} {:>6} {:>6} {:>4} {:<5} {}\n",
            p.name,
            p.peer_ip,
            p.ifname,
            p.local_ip,
            p.min_tx_ms,
            p.min_rx_ms,
            p.detect_mult,
            p.echo,
            peer_state(p)
        );
    }
    s
}

/// A peer's state, flaps, origin and error, as one column.
fn peer_state(p: &BfdPeerView) -> String {
    let mut d = vec![match (p.state, p.flap_count) {
        (Some(state), Some(flaps)) => format!("{state} ({flaps} flaps)"),
        (Some(state), None) => state.to_string(),
        _ => "(no session)".to_owned(),
    }];
    if p.from_config {
        d.push("from config".into());
    }
    if let Some(e) = &p.error {
        d.push(format!("error: {e}"));
    }
    d.join(", ")
}

fn ports_table(ports: &[PortView]) -> String {
    let mut s = format!("{:>6}  {:<16} {:<7} {:>8}  {}\n", "ofport", "name", "type", "vni", "details");
    for p in ports {
        s += &format!("{:>6}  {:<16} {:<7} {:>8}  {}\n", p.ofport, p.name, p.kind, vni_column(p), details(p));
    }
    s
}

/// A flow-keyed tunnel has no VNI of its own: OVS prints `key=flow`.
fn vni_column(p: &PortView) -> String {
    p.vni.map_or_else(|| "flow".to_owned(), |v| v.to_string())
}

fn details(p: &PortView) -> String {
    let mut d = Vec::new();
    if let Some(i) = &p.ifname {
        d.push(format!("interface {i}"));
    }
    if let Some(k) = p.port_key {
        d.push(format!("port_key {k}"));
    }
    if let Some(m) = &p.mac {
        d.push(format!("mac {m}"));
    }
    if let Some(ip) = p.ip {
        d.push(format!("ip {ip}"));
    }
    match p.port_security.as_deref() {
        Some([]) => d.push("port_security off".into()),
        // More than the port's own MAC and IP: show the whole list.
        Some(list) if list.len() > 1 => d.push(format!("port_security [{}]", list.join(", "))),
        _ => {}
    }
    if let Some(r) = p.remote_ip {
        d.push(format!("remote_ip {r}"));
    }
    if p.ovn_metadata == Some(true) {
        d.push("ovn_metadata".into());
    }
    if let Some(n) = &p.nexthop {
        d.push(match (&n.mac, n.resolved) {
            (Some(m), true) => format!("nexthop {m}"),
            (Some(m), false) => format!("nexthop {m} (unresolved now)"),
            (None, _) => "nexthop unresolved".into(),
        });
        if n.changes > 0 {
            d.push(format!("nexthop_changes {}", n.changes));
        }
    }
    if let Some(b) = &p.bfd {
        d.push(match (&b.state, b.flap_count) {
            (Some(state), Some(flaps)) => format!("bfd {state} ({flaps} flaps)"),
            _ => "bfd (no session)".into(),
        });
    }
    if p.from_config {
        d.push("from config".into());
    }
    if let Some(e) = &p.error {
        d.push(format!("error: {e}"));
    }
    d.join(", ")
}

fn groups_table(groups: &[GroupView]) -> String {
    let mut s = format!("{:>8}  {:>5}  {:>8}  {}\n", "vni", "key", "rate_pps", "members");
    for g in groups {
        let members: Vec<&str> = g.ports.iter().chain(&g.tunnels).map(String::as_str).collect();
        s += &format!("{:>8}  {:>5}  {:>8}  {}\n", g.vni, g.key, g.rate_pps, members.join(" "));
    }
    s
}

fn bindings_table(bindings: &[BindingView]) -> String {
    let mut s =
        format!("{:>8}  {:<17}  {:<24} {:<16} {:>6} {:>8}\n", "vni", "mac", "ip", "tunnel", "ofport", "port_key");
    for b in bindings {
        let ip = b.ip.map(|i| i.to_string()).unwrap_or_default();
        s += &format!("{:>8}  {:<17}  {:<24} {:<16} {:>6} {:>8}\n", b.vni, b.mac, ip, b.tunnel, b.ofport, b.port_key);
    }
    s
}

fn show_text(v: &ShowView) -> String {
    let u = &v.uplink;
    let ips: Vec<String> = u.local_ips.iter().map(|i| i.to_string()).collect();
    let mut s = format!("xgw_version: \"{}\", uptime {}\n", v.version, uptime(v.uptime_s));
    s += &format!(
        "uplink {} (ifindex {}, mac {}, mtu {}, {} XDP), local_ip {}\n",
        u.ifname,
        u.ifindex,
        u.mac,
        u.mtu,
        u.mode,
        ips.join(" ")
    );
    if let Some(e) = &u.error {
        s += &format!("    error: {e}\n");
    }
    if let Some(w) = &u.mtu_warning {
        s += &format!("    mtu warning: {w}\n");
    }
    s += &format!("    bpffs {}, state {}\n", v.bpffs, v.state_dir);
    for p in &v.ports {
        s += &format!(
            "    Port {} (ofport {})\n        type: {}, {}\n        {}\n",
            p.name,
            p.ofport,
            p.kind,
            p.vni.map_or_else(|| "key=flow".to_owned(), |v| format!("vni {v}")),
            details(p)
        );
    }
    for b in &v.bindings {
        let ip = b.ip.map(|i| format!(" ip {i}")).unwrap_or_default();
        let from = if b.from_config { ", from config" } else { "" };
        s += &format!(
            "    Binding vni {} mac {}{ip} -> {} (ofport {}) port_key {}{from}\n",
            b.vni, b.mac, b.tunnel, b.ofport, b.port_key
        );
    }
    for g in &v.groups {
        let members: Vec<&str> = g.ports.iter().chain(&g.tunnels).map(String::as_str).collect();
        let from = if g.from_config { ", from config" } else { "" };
        s += &format!(
            "    Group vni {} key {} rate_pps {}: {}{from}\n",
            g.vni,
            g.key,
            g.rate_pps,
            if members.is_empty() { "(no members)".to_owned() } else { members.join(" ") }
        );
    }
    for p in &v.bfd_peers {
        s += &format!(
            "    BFD peer {} {} via {} from {}{}: {}\n",
            p.name,
            p.peer_ip,
            p.ifname,
            p.local_ip,
            if p.echo { ", echo" } else { "" },
            peer_state(p)
        );
    }
    s += &format!("    ofports: {} used, {} held down, {} free\n", v.ofports.used, v.ofports.held_down, v.ofports.free);
    if let Some(o) = &v.ovn {
        let state = if o.session.connected { "connected" } else { "not connected" };
        s += &format!(
            "OVN chassis {}: {state} to {}{}, nb_cfg {}, {} tunnels, {} bindings, {} groups\n",
            o.chassis,
            o.session.remote.as_deref().unwrap_or("-"),
            o.session.method.as_deref().map(|m| format!(" ({m})")).unwrap_or_default(),
            o.session.nb_cfg,
            o.tunnels,
            o.bindings,
            o.groups
        );
        if let Some(e) = &o.session.last_error {
            s += &format!("    last error: {e}\n");
        }
        for (port, up) in &o.claimed {
            s += &format!(
                "    claimed {port}: {}\n",
                if *up { "up" } else { "down (waiting for its interface or entries)" }
            );
        }
        for (port, why) in &o.refused {
            s += &format!("    refused {port}: {why}\n");
        }
        for w in &o.warnings {
            s += &format!("    warning: {w}\n");
        }
    }
    s
}

/// `3d 04:05:06`, `04:05:06`.
fn uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

fn stats_text(v: &StatsView) -> String {
    let mut s = format!(
        "{:>6}  {:<16} {:>12} {:>14} {:>12} {:>14}\n",
        "ofport", "port", "rx_packets", "rx_bytes", "tx_packets", "tx_bytes"
    );
    for p in &v.ports {
        s += &format!(
            "{:>6}  {:<16} {:>12} {:>14} {:>12} {:>14}\n",
            p.ofport, p.name, p.rx_packets, p.rx_bytes, p.tx_packets, p.tx_bytes
        );
    }
    s += "drops:";
    for (k, n) in v.drops.iter().filter(|(_, n)| **n > 0) {
        s += &format!(" {k}={n}");
    }
    s += "\nreplies:";
    for (k, n) in &v.replies {
        s += &format!(" {k}={n}");
    }
    let b = &v.bfd;
    s += &format!("\nbfd: rx={} echo_reflected={} events_lost={}", b.rx, b.echo_reflected, b.events_lost);
    for (k, n) in b.drops.iter().filter(|(_, n)| **n > 0) {
        s += &format!(" drop_{k}={n}");
    }
    s + "\n"
}

/// As `ovs-appctl vlog/list` lays it out: a target per line, then the rest.
fn log_table(v: &crate::logging::LogView) -> String {
    let width = v.targets.keys().map(String::len).max().unwrap_or(0).max("(others)".len());
    let mut out = format!("{:<width$}  level\n", "target");
    for (t, l) in &v.targets {
        out += &format!("{t:<width$}  {l}\n");
    }
    out + &format!("{:<width$}  {}\n", "(others)", v.others)
}
