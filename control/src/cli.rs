//! The operator commands that talk to the daemon. Each sends one request;
//! with `--json` it prints the daemon's answer as exactly one JSON document,
//! otherwise a table.
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::{
    api::{
        self, BfdPeerArgs, BfdPeerView, BfdSessionView, Binding, BindingView, Deleted, Group, GroupView, PortArgs,
        PortView, Reply, Request, ShowView, StatsView, TunnelArgs,
    },
    types::{MacAddr, Name, Vni},
};

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The daemon's API socket.
    #[arg(long, global = true, default_value = api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print exactly one JSON document.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for the daemon's answer before giving up (a daemon
    /// that is stopped or stuck answers nothing).
    #[arg(long, global = true, default_value_t = 5.0, value_parser = api::parse_timeout)]
    pub timeout: f64,
}

#[derive(Subcommand, Debug)]
pub enum PortCmd {
    /// Add a local port: traffic for (VNI, port key) or its MAC goes to IFNAME.
    Add(PortArgs),
    /// Delete a local port; its OpenFlow number enters hold-down.
    Del {
        /// The port's name.
        name: Name,
    },
    /// Every local port.
    List,
}

#[derive(Subcommand, Debug)]
pub enum TunnelCmd {
    /// Add a Geneve tunnel to another chassis.
    Add(TunnelArgs),
    /// Delete a tunnel (refused while bindings use it).
    Del {
        /// The tunnel's name.
        name: Name,
    },
    /// Every tunnel.
    List,
}

#[derive(Subcommand, Debug)]
pub enum BfdCmd {
    /// Every BFD session, or the one named (the fields of `ovs-appctl bfd/show`).
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
    /// Add a single-hop session toward a router.
    Add(BfdPeerArgs),
    /// Delete a single-hop session.
    Del {
        /// The peer's name.
        name: Name,
    },
    /// Every single-hop session.
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
    /// Bind a remote MAC (and IP) to a tunnel and the remote port's key.
    Add(Binding),
    /// Delete a binding.
    Del {
        /// The binding's VNI.
        #[arg(long)]
        vni: Vni,
        /// The binding's MAC.
        #[arg(long)]
        mac: MacAddr,
    },
    /// Every binding.
    List,
}

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    /// Add a multicast group (OVN's Multicast_Group), or change its members.
    Add(Group),
    /// Delete a group.
    Del {
        /// The group's VNI.
        #[arg(long)]
        vni: Vni,
        /// The group's key.
        #[arg(long)]
        key: u16,
    },
    /// Every group.
    List,
}

pub fn group(c: &Common, cmd: GroupCmd) -> Result<()> {
    let req = match cmd {
        GroupCmd::Add(g) => Request::GroupAdd(g),
        GroupCmd::Del { vni, key } => Request::GroupDel { vni, key },
        GroupCmd::List => Request::GroupList,
    };
    send(c, &req)
}

pub fn port(c: &Common, cmd: PortCmd) -> Result<()> {
    let req = match cmd {
        PortCmd::Add(a) => Request::PortAdd(a),
        PortCmd::Del { name } => Request::PortDel { name },
        PortCmd::List => Request::PortList,
    };
    send(c, &req)
}

pub fn tunnel(c: &Common, cmd: TunnelCmd) -> Result<()> {
    let req = match cmd {
        TunnelCmd::Add(a) => Request::TunnelAdd(a),
        TunnelCmd::Del { name } => Request::TunnelDel { name },
        TunnelCmd::List => Request::TunnelList,
    };
    send(c, &req)
}

pub fn binding(c: &Common, cmd: BindingCmd) -> Result<()> {
    let req = match cmd {
        BindingCmd::Add(b) => Request::BindingAdd(b),
        BindingCmd::Del { vni, mac } => Request::BindingDel { vni, mac },
        BindingCmd::List => Request::BindingList,
    };
    send(c, &req)
}

pub fn bfd(c: &Common, cmd: BfdCmd) -> Result<()> {
    let req = match cmd {
        BfdCmd::Show { name } => Request::BfdShow { name },
        BfdCmd::Peer(PeerCmd::Add(p)) => Request::BfdPeerAdd(p),
        BfdCmd::Peer(PeerCmd::Del { name }) => Request::BfdPeerDel { name },
        BfdCmd::Peer(PeerCmd::List) => Request::BfdPeerList,
    };
    send(c, &req)
}

pub fn log(c: &Common, cmd: LogCmd) -> Result<()> {
    let req = match cmd {
        LogCmd::Set { directives } => Request::LogSet { set: directives },
        LogCmd::Show => Request::LogShow,
    };
    send(c, &req)
}

pub fn show(c: &Common) -> Result<()> {
    send(c, &Request::Show)
}

pub fn stats(c: &Common) -> Result<()> {
    send(c, &Request::Stats)
}

fn send(c: &Common, req: &Request) -> Result<()> {
    let reply = api::call(&c.socket, req, std::time::Duration::from_secs_f64(c.timeout))?;
    if c.json {
        println!("{}", reply.document()?);
        return Ok(());
    }
    let one_session = matches!(req, Request::BfdShow { name: Some(_) });
    print!("{}", human(&reply, one_session));
    Ok(())
}

/// The reply as a person reads it. `one_session`: `bfd show NAME`, which
/// OVS prints without the header line.
fn human(reply: &Reply, one_session: bool) -> String {
    match reply {
        Reply::Port(p) => format!("{} {:?}: ofport {}\n", p.kind, p.name, p.ofport),
        Reply::Deleted(Deleted { name, ofport: Some(n) }) => format!("deleted {:?} (ofport {n})\n", name.as_str()),
        Reply::Deleted(Deleted { name, ofport: None }) => format!("deleted bfd peer {:?}\n", name.as_str()),
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
        Reply::BfdSessions(s) => bfd_show_text(s, one_session),
        Reply::BfdPeer(p) => format!("bfd peer {:?}: {} via {} from {}\n", p.name, p.peer_ip, p.ifname, p.local_ip),
        Reply::BfdPeers(p) => peers_table(p),
        Reply::Store(e) => serde_json::to_string_pretty(e).unwrap_or_default() + "\n",
        Reply::Log(v) => log_table(v),
    }
}

/// As `ovs-appctl bfd/show` lays it out (OVS prints one session without its
/// header line); what OVS reads from its timers but xgw does not track
/// (next/last TX time, flags) is left out, the path and counters are added.
fn bfd_show_text(sessions: &[BfdSessionView], one: bool) -> String {
    let mut s = String::new();
    for v in sessions {
        if !one {
            s += &format!("---- {} ----\n", v.name);
        }
        let path = match (v.ofport, v.vni, &v.ifname) {
            (Some(ofport), Some(vni), _) => {
                format!("tunnel ofport {ofport}, vni {vni}, {} -> {}", v.local_ip, v.remote_ip)
            }
            (_, _, Some(ifname)) => format!("single-hop on {ifname}, {} -> {}", v.local_ip, v.remote_ip),
            _ => format!("{} -> {}", v.local_ip, v.remote_ip),
        };
        s += &format!("\tPath: {path}{}\n", if v.echo { ", echo" } else { "" });
        if let Some(mac) = &v.nexthop_mac {
            s += &format!("\tNext Hop: {mac}\n");
        }
        s += &format!("\tForwarding: {}\n", v.forwarding);
        s += &format!("\tDetect Multiplier: {}\n", v.detect_mult);
        s += &format!("\tConcatenated Path Down: {}\n", v.concatenated_path_down);
        s += &format!("\tTX Interval: Approx {}ms\n", v.tx_interval_ms.round());
        s += &format!("\tRX Interval: Approx {}ms\n", v.rx_interval_ms.round());
        s += &format!("\tDetect Time: {}ms\n", v.detect_time_ms.round());
        if let Some(ms) = v.last_change_ms {
            s += &format!("\tLast State Change: now -{ms}ms\n");
        }
        s += &format!("\tFlap Count: {}\n", v.flap_count);
        s += &format!("\tPackets: rx {}, tx {}\n", v.rx_packets, v.tx_packets);
        if let Some(e) = &v.error {
            s += &format!("\tLast TX Error: {e}\n");
        }
        s += "\n";
        s += &format!("\tLocal Session State: {}\n", v.local_state);
        s += &format!("\tLocal Diagnostic: {}\n", v.local_diagnostic);
        s += &format!("\tLocal Discriminator: 0x{:x}\n", v.local_discriminator);
        s += &format!("\tLocal Minimum TX Interval: {}ms\n", v.local_min_tx_ms);
        s += &format!("\tLocal Minimum RX Interval: {}ms\n", v.local_min_rx_ms);
        s += "\n";
        s += &format!("\tRemote Session State: {}\n", v.remote_state);
        s += &format!("\tRemote Diagnostic: {}\n", v.remote_diagnostic);
        s += &format!("\tRemote Discriminator: 0x{:x}\n", v.remote_discriminator);
        s += &format!("\tRemote Minimum TX Interval: {}ms\n", v.remote_min_tx_ms.round());
        s += &format!("\tRemote Minimum RX Interval: {}ms\n", v.remote_min_rx_ms.round());
        s += &format!("\tRemote Detect Multiplier: {}\n", v.remote_detect_mult);
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
            "{:<16} {:<16} {:<10} {:<16} {:>6} {:>6} {:>4} {:<5} {}{}\n",
            p.name,
            p.peer_ip,
            p.ifname,
            p.local_ip,
            p.min_tx_ms,
            p.min_rx_ms,
            p.detect_mult,
            p.echo,
            p.state.map_or("(no session)", |s| s.name()),
            if p.from_config { ", from config" } else { "" }
        );
    }
    s
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
        d.push(match (&b.state, b.flaps) {
            (Some(state), Some(flaps)) => format!("bfd {state} ({flaps} flaps)"),
            _ => "bfd (no session)".into(),
        });
    }
    if p.from_config {
        d.push("from config".into());
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
    let mut s = format!(
        "uplink {} (ifindex {}, mac {}, mtu {}, {} XDP), local_ip {}\n",
        u.ifname,
        u.ifindex,
        u.mac,
        u.mtu,
        u.mode,
        ips.join(" ")
    );
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
        s += &format!(
            "    Binding vni {} mac {}{ip} -> {} (ofport {}) port_key {}\n",
            b.vni, b.mac, b.tunnel, b.ofport, b.port_key
        );
    }
    s += &format!("    ofports: {} used, {} held down, {} free\n", v.ofports.used, v.ofports.held_down, v.ofports.free);
    if let Some(o) = &v.ovn {
        let state = if o.connected { "connected" } else { "not connected" };
        s += &format!(
            "OVN chassis {}: {state} to {}{}, nb_cfg {}, {} tunnels, {} bindings, {} groups\n",
            o.chassis,
            o.remote.as_deref().unwrap_or("-"),
            o.method.as_deref().map(|m| format!(" ({m})")).unwrap_or_default(),
            o.nb_cfg,
            o.tunnels,
            o.bindings,
            o.groups
        );
        if let Some(e) = &o.last_error {
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
