//! The operator commands that talk to the daemon. Each sends one request;
//! with `--json` it prints the daemon's answer as exactly one JSON document,
//! otherwise a table.
use std::{net::IpAddr, path::PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{
    api::{self, BindingArgs, BindingView, PortArgs, PortView, Request, ShowView, StatsView, TunnelArgs},
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
        TunnelCmd::Add { name, remote_ip, vni, bfd, ovn_metadata, ofport } => {
            Request::TunnelAdd(TunnelArgs { name, remote_ip, vni, bfd, ovn_metadata, ofport })
        }
        TunnelCmd::Del { name } => Request::TunnelDel { name },
        TunnelCmd::List => Request::TunnelList,
    };
    send(c, &req)
}

pub fn binding(c: &Common, cmd: BindingCmd) -> Result<()> {
    let req = match cmd {
        BindingCmd::Add { vni, mac, ip, tunnel, port_key } => Request::BindingAdd(BindingArgs { vni, mac, ip, tunnel, port_key }),
        BindingCmd::Del { vni, mac } => Request::BindingDel { vni, mac },
        BindingCmd::List => Request::BindingList,
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
        Request::PortDel { .. } | Request::TunnelDel { .. } => format!("deleted {} (ofport {})\n", v["name"], v["ofport"]),
        Request::PortList | Request::TunnelList => ports_table(&parse::<Vec<PortView>>(v)?),
        Request::BindingAdd(_) => {
            let b: BindingView = parse(v)?;
            format!("binding vni {} mac {} -> tunnel {:?} (ofport {})\n", b.vni, b.mac, b.tunnel, b.ofport)
        }
        Request::BindingDel { .. } => format!("deleted binding vni {} mac {}\n", v["vni"], v["mac"].as_str().unwrap_or("")),
        Request::BindingList => bindings_table(&parse::<Vec<BindingView>>(v)?),
        Request::Show => show_text(&parse(v)?),
        Request::Stats => stats_text(&parse(v)?),
    })
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
    }
    if let Some(b) = &p.bfd {
        d.push(format!("bfd {}", b.state.as_deref().unwrap_or("(no session)")));
    }
    if p.from_config {
        d.push("from config".into());
    }
    d.join(", ")
}

fn bindings_table(bindings: &[BindingView]) -> String {
    let mut s = format!("{:>8}  {:<17}  {:<24} {:<16} {:>6} {:>8}\n", "vni", "mac", "ip", "tunnel", "ofport", "port_key");
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
        s += &format!("    Port {} (ofport {})\n        type: {}, vni {}\n        {}\n", p.name, p.ofport, p.kind, p.vni, details(p));
    }
    for b in &v.bindings {
        let ip = b.ip.map(|i| format!(" ip {i}")).unwrap_or_default();
        s += &format!("    Binding vni {} mac {}{ip} -> {} (ofport {}) port_key {}\n", b.vni, b.mac, b.tunnel, b.ofport, b.port_key);
    }
    s += &format!("    ofports: {} used, {} held down, {} free\n", v.ofports.used, v.ofports.held_down, v.ofports.free);
    s
}

fn stats_text(v: &StatsView) -> String {
    let mut s = format!("{:>6}  {:<16} {:>12} {:>14} {:>12} {:>14}\n", "ofport", "port", "rx_packets", "rx_bytes", "tx_packets", "tx_bytes");
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
    s + "\n"
}
