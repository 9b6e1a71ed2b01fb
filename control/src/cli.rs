//! The operator commands that talk to the daemon. Each sends one request;
//! with `--json` it prints the daemon's answer as exactly one JSON document,
//! otherwise a table.
use std::{net::IpAddr, path::PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{
    api::{
        self, BfdPeerArgs, BfdPeerView, BfdSessionView, BindingArgs, BindingView, PortArgs, PortView, Request,
        ShowView, StatsView, TunnelArgs,
    },
    ofport::MacAddr,
};

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The daemon's API socket.
    #[arg(long, global = true, default_value = api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print exactly one JSON document.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum PortCmd {
    /// Add a local port: traffic for (VNI, port key) or its MAC goes to IFNAME.
    Add {
        name: String,
        #[arg(long)]
        ifname: String,
        #[arg(long)]
        vni: u32,
        #[arg(long)]
        port_key: u16,
        #[arg(long)]
        mac: MacAddr,
        /// Answered by the ARP/ND responder.
        #[arg(long)]
        ip: Option<IpAddr>,
        /// Ask for this OpenFlow number.
        #[arg(long)]
        ofport: Option<u16>,
    },
    Del {
        name: String,
    },
    List,
}

#[derive(Subcommand, Debug)]
pub enum TunnelCmd {
    /// Add a Geneve tunnel to another chassis.
    Add {
        name: String,
        #[arg(long)]
        remote_ip: IpAddr,
        #[arg(long)]
        vni: u32,
        /// Run BFD on the tunnel.
        #[arg(long)]
        bfd: bool,
        /// Carry OVN's Geneve option (ingress/egress port keys).
        #[arg(long)]
        ovn_metadata: bool,
        /// Ask for this OpenFlow number.
        #[arg(long)]
        ofport: Option<u16>,
        /// This tunnel's BFD Desired Min TX Interval, ms [default: the daemon's `[bfd]`].
        /// Adding the same tunnel again with other timers changes them on the running session.
        #[arg(long, requires = "bfd")]
        bfd_min_tx: Option<u32>,
        /// This tunnel's BFD Required Min RX Interval, ms.
        #[arg(long, requires = "bfd")]
        bfd_min_rx: Option<u32>,
        /// This tunnel's BFD Detect Mult.
        #[arg(long, requires = "bfd")]
        bfd_mult: Option<u8>,
    },
    Del {
        name: String,
    },
    List,
}

#[derive(Subcommand, Debug)]
pub enum BfdCmd {
    /// Every BFD session, or the one named (the fields of `ovs-appctl bfd/show`).
    Show { name: Option<String> },
    /// Single-hop BFD sessions (RFC 5881) toward underlay routers.
    #[command(subcommand)]
    Peer(PeerCmd),
}

#[derive(Subcommand, Debug)]
pub enum PeerCmd {
    /// Add a single-hop session toward a router.
    Add {
        name: String,
        /// The router's IPv4 address.
        #[arg(long)]
        peer_ip: IpAddr,
        /// The interface toward it [default: the uplink].
        #[arg(long)]
        ifname: Option<String>,
        /// Source address [default: the daemon's IPv4 --local-ip].
        #[arg(long)]
        local_ip: Option<IpAddr>,
        /// Reflect the router's echo packets in XDP (FRR's echo mode).
        #[arg(long)]
        echo: bool,
        /// Desired Min TX Interval, ms [default: the daemon's `[bfd]`].
        #[arg(long)]
        min_tx: Option<u32>,
        /// Required Min RX Interval, ms.
        #[arg(long)]
        min_rx: Option<u32>,
        /// Detect Mult.
        #[arg(long)]
        mult: Option<u8>,
    },
    Del {
        name: String,
    },
    List,
}

#[derive(Subcommand, Debug)]
pub enum BindingCmd {
    /// Bind a remote MAC (and IP) to a tunnel and the remote port's key.
    Add {
        #[arg(long)]
        vni: u32,
        #[arg(long)]
        mac: MacAddr,
        #[arg(long)]
        ip: Option<IpAddr>,
        #[arg(long)]
        tunnel: String,
        #[arg(long)]
        port_key: u16,
    },
    Del {
        #[arg(long)]
        vni: u32,
        #[arg(long)]
        mac: MacAddr,
    },
    List,
}

pub fn port(c: &Common, cmd: PortCmd) -> Result<()> {
    let req = match cmd {
        PortCmd::Add { name, ifname, vni, port_key, mac, ip, ofport } => {
            Request::PortAdd(PortArgs { name, ifname, vni, port_key, mac, ip, ofport })
        }
        PortCmd::Del { name } => Request::PortDel { name },
        PortCmd::List => Request::PortList,
    };
    send(c, &req)
}

pub fn tunnel(c: &Common, cmd: TunnelCmd) -> Result<()> {
    let req = match cmd {
        TunnelCmd::Add { name, remote_ip, vni, bfd, ovn_metadata, ofport, bfd_min_tx, bfd_min_rx, bfd_mult } => {
            Request::TunnelAdd(TunnelArgs {
                name,
                remote_ip,
                vni,
                bfd,
                ovn_metadata,
                ofport,
                bfd_min_tx_ms: bfd_min_tx,
                bfd_min_rx_ms: bfd_min_rx,
                bfd_detect_mult: bfd_mult,
            })
        }
        TunnelCmd::Del { name } => Request::TunnelDel { name },
        TunnelCmd::List => Request::TunnelList,
    };
    send(c, &req)
}

pub fn binding(c: &Common, cmd: BindingCmd) -> Result<()> {
    let req = match cmd {
        BindingCmd::Add { vni, mac, ip, tunnel, port_key } => {
            Request::BindingAdd(BindingArgs { vni, mac, ip, tunnel, port_key })
        }
        BindingCmd::Del { vni, mac } => Request::BindingDel { vni, mac },
        BindingCmd::List => Request::BindingList,
    };
    send(c, &req)
}

pub fn bfd(c: &Common, cmd: BfdCmd) -> Result<()> {
    let req = match cmd {
        BfdCmd::Show { name } => Request::BfdShow { name },
        BfdCmd::Peer(PeerCmd::Add { name, peer_ip, ifname, local_ip, echo, min_tx, min_rx, mult }) => {
            Request::BfdPeerAdd(BfdPeerArgs {
                name,
                peer_ip,
                ifname,
                local_ip,
                echo,
                min_tx_ms: min_tx,
                min_rx_ms: min_rx,
                detect_mult: mult,
            })
        }
        BfdCmd::Peer(PeerCmd::Del { name }) => Request::BfdPeerDel { name },
        BfdCmd::Peer(PeerCmd::List) => Request::BfdPeerList,
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
    let v = api::call(&c.socket, req)?;
    if c.json {
        println!("{v}");
        return Ok(());
    }
    print!("{}", human(req, v)?);
    Ok(())
}

fn parse<T: DeserializeOwned>(v: Value) -> Result<T> {
    Ok(serde_json::from_value(v)?)
}

fn human(req: &Request, v: Value) -> Result<String> {
    Ok(match req {
        Request::PortAdd(_) | Request::TunnelAdd(_) => {
            let p: PortView = parse(v)?;
            format!("{} {:?}: ofport {}\n", p.kind, p.name, p.ofport)
        }
        Request::PortDel { .. } | Request::TunnelDel { .. } => {
            format!("deleted {} (ofport {})\n", v["name"], v["ofport"])
        }
        Request::PortList | Request::TunnelList => ports_table(&parse::<Vec<PortView>>(v)?),
        Request::BindingAdd(_) => {
            let b: BindingView = parse(v)?;
            format!("binding vni {} mac {} -> tunnel {:?} (ofport {})\n", b.vni, b.mac, b.tunnel, b.ofport)
        }
        Request::BindingDel { .. } => {
            format!("deleted binding vni {} mac {}\n", v["vni"], v["mac"].as_str().unwrap_or(""))
        }
        Request::BindingList => bindings_table(&parse::<Vec<BindingView>>(v)?),
        Request::Show => show_text(&parse(v)?),
        Request::Stats => stats_text(&parse(v)?),
        Request::BfdShow { name } => bfd_show_text(&parse::<Vec<BfdSessionView>>(v)?, name.is_some()),
        Request::BfdPeerAdd(_) => {
            let p: BfdPeerView = parse(v)?;
            format!("bfd peer {:?}: {} via {} from {}\n", p.name, p.peer_ip, p.ifname, p.local_ip)
        }
        Request::BfdPeerDel { .. } => format!("deleted bfd peer {}\n", v["name"]),
        Request::BfdPeerList => peers_table(&parse::<Vec<BfdPeerView>>(v)?),
    })
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
            p.state.as_deref().unwrap_or("(no session)"),
            if p.from_config { ", from config" } else { "" }
        );
    }
    s
}

fn ports_table(ports: &[PortView]) -> String {
    let mut s = format!("{:>6}  {:<16} {:<7} {:>8}  {}\n", "ofport", "name", "type", "vni", "details");
    for p in ports {
        s += &format!("{:>6}  {:<16} {:<7} {:>8}  {}\n", p.ofport, p.name, p.kind, p.vni, details(p));
    }
    s
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
    s += &format!("    bpffs {}, state {}\n", v.bpffs, v.state_dir);
    for p in &v.ports {
        s += &format!(
            "    Port {} (ofport {})\n        type: {}, vni {}\n        {}\n",
            p.name,
            p.ofport,
            p.kind,
            p.vni,
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
