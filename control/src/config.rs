//! The daemon's TOML configuration file: ports, tunnels, remote bindings,
//! multicast groups, BFD settings, the metrics address.
//!
//! Parsing is in two steps so that every error names its field: serde reads
//! the file into loose types (numbers as i64, addresses as strings; unknown
//! keys refused), then `validate` checks each value and reports
//! `config: tunnels[2].vni: 16777216 is out of range (0..=16777215)`. A file with any error
//! changes nothing: the daemon refuses to start.
//!
//! ```toml
//! metrics = "127.0.0.1:9477"
//!
//! [bfd]
//! min_rx_ms = 1000
//! min_tx_ms = 100
//! detect_mult = 3
//!
//! [[ports]]
//! name = "vm1"
//! ifname = "tap1"
//! vni = 5001
//! port_key = 17
//! mac = "02:00:5e:20:00:01"
//! ip = "203.0.113.1"
//! # Port security (on unless port_security = false): the VM sends only
//! # from mac and ip, and from these (OVN's port_security elements).
//! allow = ["02:00:5e:20:00:09 203.0.113.9 2001:db8::9"]
//!
//! [[tunnels]]
//! name = "hv2"
//! remote_ip = "198.51.100.2"
//! vni = 5001
//! bfd = true
//! ovn_metadata = true
//! ofport = 10
//!
//! [[bindings]]
//! vni = 5001
//! mac = "02:00:5e:20:00:02"
//! ip = "203.0.113.2"
//! tunnel = "hv2"
//! port_key = 34
//!
//! # A tunnel's own BFD timers: bfd_min_tx_ms, bfd_min_rx_ms, bfd_detect_mult.
//! # Without vni a tunnel is flow-keyed (OVN's key=flow): every VNI, one
//! # tunnel per remote chassis.
//!
//! # A multicast group (OVN's Multicast_Group): 32768 floods the VNI's
//! # broadcast and multicast, 32769 its unknown unicast; members may be the
//! # file's or the API's; rate_pps is storm control per ingress port
//! # (default 1000, 0 for none).
//! [[groups]]
//! vni = 5001
//! key = 32768
//! ports = ["vm1"]
//! tunnels = ["hv2"]
//! rate_pps = 1000
//!
//! # Single-hop BFD (RFC 5881) toward an underlay router; ifname defaults
//! # to the uplink, local_ip to the daemon's IPv4 --local-ip, the timers to
//! # [bfd]'s.
//! [[bfd_peers]]
//! name = "tor1"
//! peer_ip = "198.51.100.254"
//! echo = true
//! min_tx_ms = 10
//! min_rx_ms = 10
//! detect_mult = 3
//!
//! # xgw as a chassis of OVN: it registers in the Southbound database and
//! # learns tunnels, bindings, groups and BFD from it. Each local port is an
//! # interface named by its OVN logical port (OVS's external_ids:iface-id);
//! # its MAC, IP, VNI and key come from the Southbound.
//! [ovn]
//! remote = "unix:/run/ovn/ovnsb_db.sock"   # or a comma-separated raft cluster
//! chassis = "gw1"
//! hostname = "gw1.example"                 # default: the system's
//! encap_csum = false                       # Encap options:csum for the peers
//! transport_zones = []
//! claim_unsupported = false                # claim ports on load-balanced switches
//! [ovn.interfaces]
//! vm3 = "tap3"
//! ```
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Display,
    net::{IpAddr, SocketAddr},
    path::Path,
};

use serde::Deserialize;
use thiserror::Error;

pub use crate::types::{BfdOverride, BfdSettings, BFD_MS_MAX};
use crate::{
    api::{BfdPeerArgs, Binding, Group, PortArgs, TunnelArgs},
    ofport::{spec::DEFAULT_GROUP_RATE, OfPort, TunnelKey},
    types::{IfName, InvalidValue, MacAddr, Name, PortKey, UnicastIp, Vni},
};

/// One line: the field's path and what is wrong with its value.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("config: {0}")]
pub struct ConfigError(pub String);

fn err(path: impl Display, what: impl Display) -> ConfigError {
    ConfigError(format!("{path}: {what}"))
}

/// A validated configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub metrics: Option<SocketAddr>,
    pub bfd: BfdSettings,
    pub ports: Vec<PortArgs>,
    pub tunnels: Vec<TunnelArgs>,
    pub bindings: Vec<Binding>,
    pub bfd_peers: Vec<BfdPeerArgs>,
    pub groups: Vec<Group>,
    pub ovn: Option<OvnConfig>,
}

/// The `[ovn]` section: which Southbound, as which chassis, and which
/// local interfaces stand for which OVN logical ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OvnConfig {
    /// `unix:PATH`, `tcp:IP:PORT`, or several, comma-separated (a raft cluster).
    pub remote: Option<String>,
    pub chassis: Option<Name>,
    pub hostname: Option<String>,
    pub encap_csum: bool,
    pub transport_zones: BTreeSet<String>,
    pub claim_unsupported: bool,
    /// OVN logical port (iface-id) -> the interface its VM is on.
    pub interfaces: BTreeMap<String, IfName>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    metrics: Option<String>,
    bfd: Option<RawBfd>,
    #[serde(default)]
    ports: Vec<RawPort>,
    #[serde(default)]
    tunnels: Vec<RawTunnel>,
    #[serde(default)]
    bindings: Vec<RawBinding>,
    #[serde(default)]
    bfd_peers: Vec<RawPeer>,
    #[serde(default)]
    groups: Vec<RawGroup>,
    ovn: Option<RawOvn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOvn {
    remote: Option<String>,
    chassis: Option<String>,
    hostname: Option<String>,
    #[serde(default)]
    encap_csum: bool,
    #[serde(default)]
    transport_zones: Vec<String>,
    #[serde(default)]
    claim_unsupported: bool,
    #[serde(default)]
    interfaces: BTreeMap<String, String>,
}

impl RawOvn {
    fn validate(self, ifnames: &BTreeMap<String, String>) -> Result<OvnConfig, ConfigError> {
        let remote = match self.remote {
            Some(r) if r.trim().is_empty() => return Err(err("ovn.remote", "is empty")),
            r => r,
        };
        let chassis = self.chassis.map(|c| field("ovn", "chassis", Name::new(c))).transpose()?;
        let mut transport_zones = BTreeSet::new();
        for (i, z) in self.transport_zones.into_iter().enumerate() {
            if z.is_empty() || z.contains(',') || z.chars().any(char::is_whitespace) {
                return Err(err(format!("ovn.transport_zones[{i}]"), format_args!("{z:?} is not a zone name")));
            }
            transport_zones.insert(z);
        }
        let mut interfaces = BTreeMap::new();
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (lport, ifname) in self.interfaces {
            let path = format!("ovn.interfaces.{lport:?}");
            Name::new(lport.as_str()).map_err(|e| err(&path, format_args!("the logical port name: {e}")))?;
            let i = IfName::new(ifname.as_str()).map_err(|e| err(&path, e))?;
            if let Some(first) = seen.insert(ifname.clone(), path.clone()).or_else(|| ifnames.get(&ifname).cloned()) {
                return Err(err(&path, format_args!("{ifname:?} is already used by {first}")));
            }
            interfaces.insert(lport, i);
        }
        Ok(OvnConfig {
            remote,
            chassis,
            hostname: self.hostname,
            encap_csum: self.encap_csum,
            transport_zones,
            claim_unsupported: self.claim_unsupported,
            interfaces,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    vni: i64,
    key: i64,
    #[serde(default)]
    ports: Vec<String>,
    #[serde(default)]
    tunnels: Vec<String>,
    rate_pps: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: String,
    peer_ip: String,
    ifname: Option<String>,
    local_ip: Option<String>,
    #[serde(default)]
    echo: bool,
    min_tx_ms: Option<i64>,
    min_rx_ms: Option<i64>,
    detect_mult: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBfd {
    min_rx_ms: Option<i64>,
    min_tx_ms: Option<i64>,
    detect_mult: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    name: String,
    ifname: String,
    vni: i64,
    port_key: i64,
    mac: String,
    ip: Option<String>,
    ofport: Option<i64>,
    port_security: Option<bool>,
    #[serde(default)]
    allow: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTunnel {
    name: String,
    remote_ip: String,
    /// Absent: flow-keyed.
    vni: Option<i64>,
    #[serde(default)]
    bfd: bool,
    #[serde(default)]
    ovn_metadata: bool,
    ofport: Option<i64>,
    bfd_min_tx_ms: Option<i64>,
    bfd_min_rx_ms: Option<i64>,
    bfd_detect_mult: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBinding {
    vni: i64,
    mac: String,
    ip: Option<String>,
    tunnel: String,
    port_key: i64,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| err(path.display(), e))?;
        Config::parse(&text).map_err(|ConfigError(e)| ConfigError(format!("{}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            // toml's own rendering spans several lines; keep one.
            let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().replace('\n', " ");
            match line {
                Some(line) => ConfigError(format!("line {line}: {message}")),
                None => ConfigError(message),
            }
        })?;
        raw.validate()
    }
}

/// `path.field: <what the type says>`.
fn field<T>(path: &str, field: &str, r: Result<T, InvalidValue>) -> Result<T, ConfigError> {
    r.map_err(|e| err(format!("{path}.{field}"), e))
}

fn vni(path: &str, v: i64) -> Result<Vni, ConfigError> {
    field(path, "vni", Vni::from_i64(v))
}

fn port_key(path: &str, v: i64) -> Result<PortKey, ConfigError> {
    field(path, "port_key", PortKey::from_i64(v))
}

fn ofport(path: &str, v: Option<i64>) -> Result<Option<u16>, ConfigError> {
    let Some(v) = v else { return Ok(None) };
    match u16::try_from(v).ok().and_then(|n| OfPort::new(n).ok()) {
        Some(p) => Ok(Some(p.get())),
        None => Err(err(format!("{path}.ofport"), format_args!("{v} is out of range (1..={})", OfPort::MAX.get()))),
    }
}

fn bfd_ms(field: String, v: Option<i64>) -> Result<Option<u32>, ConfigError> {
    match v {
        None => Ok(None),
        Some(v) if (1..=i64::from(BFD_MS_MAX)).contains(&v) => Ok(Some(v as u32)),
        Some(v) => Err(err(field, format_args!("{v} is out of range (1..={BFD_MS_MAX})"))),
    }
}

fn bfd_mult(field: String, v: Option<i64>) -> Result<Option<u8>, ConfigError> {
    match v {
        None => Ok(None),
        Some(v @ 1..=255) => Ok(Some(v as u8)),
        Some(v) => Err(err(field, format_args!("{v} is out of range (1..=255)"))),
    }
}

fn mac(path: &str, s: &str) -> Result<MacAddr, ConfigError> {
    field(path, "mac", s.parse::<MacAddr>().and_then(MacAddr::unicast))
}

fn ip(path: &str, name: &str, s: &str) -> Result<UnicastIp, ConfigError> {
    field(path, name, s.parse())
}

fn name(path: &str, s: &str) -> Result<Name, ConfigError> {
    field(path, "name", Name::new(s))
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let metrics = match self.metrics {
            None => None,
            Some(s) => {
                let a: SocketAddr =
                    s.parse().map_err(|_| err("metrics", format_args!("{s:?} is not an address:port")))?;
                if !a.ip().is_loopback() {
                    return Err(err(
                        "metrics",
                        format_args!("{a} is not a loopback address (metrics are served on loopback only)"),
                    ));
                }
                Some(a)
            }
        };
        let mut bfd = BfdSettings::default();
        if let Some(b) = self.bfd {
            let ms = |field: &str, v: Option<i64>, default: u32| match v {
                None => Ok(default),
                Some(v @ 1..=60_000) => Ok(v as u32),
                Some(v) => Err(err(format!("bfd.{field}"), format_args!("{v} is out of range (1..=60000)"))),
            };
            bfd.min_rx_ms = ms("min_rx_ms", b.min_rx_ms, bfd.min_rx_ms)?;
            bfd.min_tx_ms = ms("min_tx_ms", b.min_tx_ms, bfd.min_tx_ms)?;
            bfd.detect_mult = match b.detect_mult {
                None => bfd.detect_mult,
                Some(v @ 1..=255) => v as u8,
                Some(v) => return Err(err("bfd.detect_mult", format_args!("{v} is out of range (1..=255)"))),
            };
        }

        // Names are one space across ports and tunnels; numbers too.
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        let mut numbers: BTreeMap<u16, String> = BTreeMap::new();
        let mut claim = |path: &str, n: &str, number: Option<u16>| -> Result<(), ConfigError> {
            if let Some(first) = names.insert(n.to_owned(), path.to_owned()) {
                return Err(err(format!("{path}.name"), format_args!("{n:?} is already used by {first}")));
            }
            if let Some(number) = number {
                if let Some(first) = numbers.insert(number, path.to_owned()) {
                    return Err(err(
                        format!("{path}.ofport"),
                        format_args!("{number} is already requested by {first}"),
                    ));
                }
            }
            Ok(())
        };

        let mut ports = Vec::new();
        let mut ifnames: BTreeMap<String, String> = BTreeMap::new();
        for (i, p) in self.ports.into_iter().enumerate() {
            let path = format!("ports[{i}]");
            let n = name(&path, &p.name)?;
            let ifname = field(&path, "ifname", IfName::new(p.ifname.as_str()))?;
            if let Some(first) = ifnames.insert(p.ifname.clone(), path.clone()) {
                return Err(err(format!("{path}.ifname"), format_args!("{:?} is already used by {first}", p.ifname)));
            }
            let args = PortArgs {
                name: n,
                ifname,
                vni: vni(&path, p.vni)?,
                port_key: port_key(&path, p.port_key)?,
                mac: mac(&path, &p.mac)?,
                ip: p.ip.as_deref().map(|s| ip(&path, "ip", s)).transpose()?,
                ofport: ofport(&path, p.ofport)?,
                port_security: p.port_security.unwrap_or(true),
                allow: p
                    .allow
                    .iter()
                    .enumerate()
                    .map(|(j, a)| field(&path, &format!("allow[{j}]"), a.parse()))
                    .collect::<Result<_, _>>()?,
            };
            crate::ofport::PortSpec::Local(args.local_port())
                .validate()
                .map_err(|e| err(format!("{path}.{}", e.field), e.cause))?;
            claim(&path, &args.name, args.ofport)?;
            ports.push(args);
        }

        let mut tunnels = Vec::new();
        let mut keys: BTreeMap<TunnelKey, String> = BTreeMap::new();
        for (i, t) in self.tunnels.into_iter().enumerate() {
            let path = format!("tunnels[{i}]");
            let args = TunnelArgs {
                name: name(&path, &t.name)?,
                remote_ip: field(
                    &path,
                    "remote_ip",
                    t.remote_ip.parse().and_then(|ip: UnicastIp| UnicastIp::tunnel_remote(ip.get())),
                )?,
                vni: t.vni.map(|v| vni(&path, v)).transpose()?,
                bfd: t.bfd,
                ovn_metadata: t.ovn_metadata,
                ofport: ofport(&path, t.ofport)?,
                bfd_min_tx_ms: bfd_ms(format!("{path}.bfd_min_tx_ms"), t.bfd_min_tx_ms)?,
                bfd_min_rx_ms: bfd_ms(format!("{path}.bfd_min_rx_ms"), t.bfd_min_rx_ms)?,
                bfd_detect_mult: bfd_mult(format!("{path}.bfd_detect_mult"), t.bfd_detect_mult)?,
            };
            if !args.bfd {
                let set = [
                    ("bfd_min_tx_ms", t.bfd_min_tx_ms),
                    ("bfd_min_rx_ms", t.bfd_min_rx_ms),
                    ("bfd_detect_mult", t.bfd_detect_mult),
                ];
                if let Some((field, _)) = set.iter().find(|(_, v)| v.is_some()) {
                    return Err(err(format!("{path}.{field}"), "is set, but bfd is off for this tunnel"));
                }
            }
            let key = TunnelKey { remote: args.remote_ip.get(), vni: args.vni.map(Vni::get) };
            if let Some(first) = keys.insert(key, path.clone()) {
                return Err(err(
                    format!("{path}.remote_ip"),
                    format_args!("{key} duplicates {first}: a redundant tunnel can never carry traffic"),
                ));
            }
            claim(&path, &args.name, args.ofport)?;
            tunnels.push(args);
        }

        let tunnel_names: BTreeSet<&str> = tunnels.iter().map(|t| t.name.as_str()).collect();
        let mut bindings = Vec::new();
        let mut macs: BTreeMap<(u32, MacAddr), String> = BTreeMap::new();
        let mut ips: BTreeMap<(u32, IpAddr), String> = BTreeMap::new();
        for p in &ports {
            macs.insert((p.vni.get(), p.mac), format!("port {:?}", p.name.as_str()));
            if let Some(a) = p.ip {
                ips.insert((p.vni.get(), a.get()), format!("port {:?}", p.name.as_str()));
            }
        }
        for (i, b) in self.bindings.into_iter().enumerate() {
            let path = format!("bindings[{i}]");
            let args = Binding {
                vni: vni(&path, b.vni)?,
                mac: mac(&path, &b.mac)?,
                ip: b.ip.as_deref().map(|s| ip(&path, "ip", s)).transpose()?,
                tunnel: field(&path, "tunnel", Name::new(b.tunnel))?,
                port_key: port_key(&path, b.port_key)?,
            };
            if !tunnel_names.contains(args.tunnel.as_str()) {
                return Err(err(
                    format!("{path}.tunnel"),
                    format_args!("{:?} is not a tunnel of this file", args.tunnel),
                ));
            }
            if let Some(first) = macs.insert((args.vni.get(), args.mac), path.clone()) {
                return Err(err(
                    format!("{path}.mac"),
                    format_args!("{} in VNI {} is already bound by {first}", args.mac, args.vni),
                ));
            }
            if let Some(a) = args.ip {
                if let Some(first) = ips.insert((args.vni.get(), a.get()), path.clone()) {
                    return Err(err(
                        format!("{path}.ip"),
                        format_args!("{a} in VNI {} is already bound by {first}", args.vni),
                    ));
                }
            }
            bindings.push(args);
        }

        let mut bfd_peers = Vec::new();
        let mut peer_paths: BTreeMap<(Option<IfName>, UnicastIp), String> = BTreeMap::new();
        for (i, p) in self.bfd_peers.into_iter().enumerate() {
            let path = format!("bfd_peers[{i}]");
            let peer_ip = ip(&path, "peer_ip", &p.peer_ip)?;
            if !peer_ip.is_ipv4() {
                return Err(err(
                    format!("{path}.peer_ip"),
                    format_args!("{peer_ip} is not an IPv4 address (single-hop BFD runs over IPv4)"),
                ));
            }
            let local_ip = p.local_ip.as_deref().map(|s| ip(&path, "local_ip", s)).transpose()?;
            if let Some(a) = local_ip.filter(|a| !a.is_ipv4()) {
                return Err(err(format!("{path}.local_ip"), format_args!("{a} is not an IPv4 address")));
            }
            let args = BfdPeerArgs {
                name: name(&path, &p.name)?,
                peer_ip,
                ifname: p.ifname.map(|s| field(&path, "ifname", IfName::new(s))).transpose()?,
                local_ip,
                echo: p.echo,
                min_tx_ms: bfd_ms(format!("{path}.min_tx_ms"), p.min_tx_ms)?,
                min_rx_ms: bfd_ms(format!("{path}.min_rx_ms"), p.min_rx_ms)?,
                detect_mult: bfd_mult(format!("{path}.detect_mult"), p.detect_mult)?,
            };
            if let Some(first) = peer_paths.insert((args.ifname.clone(), peer_ip), path.clone()) {
                return Err(err(format!("{path}.peer_ip"), format_args!("{peer_ip} is already the peer of {first}")));
            }
            claim(&path, &args.name, None)?;
            bfd_peers.push(args);
        }
        let mut groups = Vec::new();
        let mut group_paths: BTreeMap<(u32, u16), String> = BTreeMap::new();
        for (i, g) in self.groups.into_iter().enumerate() {
            let path = format!("groups[{i}]");
            let names = |list: Vec<String>, what: &str| -> Result<Vec<Name>, ConfigError> {
                list.into_iter()
                    .enumerate()
                    .map(|(j, n)| Name::new(n).map_err(|e| err(format!("{path}.{what}[{j}]"), e)))
                    .collect()
            };
            let group = Group {
                vni: vni(&path, g.vni)?,
                key: u16::try_from(g.key).map_err(|_| {
                    err(format!("{path}.key"), format_args!("{} is not a group key (32768..=65535)", g.key))
                })?,
                ports: names(g.ports, "ports")?,
                tunnels: names(g.tunnels, "tunnels")?,
                rate_pps: match g.rate_pps {
                    None => DEFAULT_GROUP_RATE,
                    Some(r) => u32::try_from(r).map_err(|_| {
                        err(format!("{path}.rate_pps"), format_args!("{r} is out of range (0..=4294967295)"))
                    })?,
                },
            };
            group.validate().map_err(|e| err(format!("{path}.{}", e.field), e.cause))?;
            if let Some(first) = group_paths.insert((group.vni.get(), group.key), path.clone()) {
                return Err(err(
                    format!("{path}.key"),
                    format_args!("{} in VNI {} is already {first}", group.key, group.vni),
                ));
            }
            groups.push(group);
        }
        let ovn = self.ovn.map(|o| o.validate(&ifnames)).transpose()?;
        Ok(Config { metrics, bfd, ports, tunnels, bindings, bfd_peers, groups, ovn })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
metrics = "127.0.0.1:9477"
[bfd]
min_rx_ms = 300
[[ports]]
name = "vm1"
ifname = "p1"
vni = 5001
port_key = 17
mac = "02:00:5e:20:00:01"
ip = "203.0.113.1"
[[tunnels]]
name = "hv2"
remote_ip = "198.51.100.2"
vni = 5001
bfd = true
ofport = 10
[[bindings]]
vni = 5001
mac = "02:00:5e:20:00:02"
ip = "203.0.113.2"
tunnel = "hv2"
port_key = 34
"#;

    #[test]
    fn a_good_file_parses() {
        let c = Config::parse(GOOD).expect("parses");
        assert_eq!(c.metrics, Some("127.0.0.1:9477".parse().unwrap()));
        assert_eq!(c.bfd, BfdSettings { min_rx_ms: 300, min_tx_ms: 100, detect_mult: 3 });
        assert_eq!(c.ports[0].port_key.get(), 17);
        assert_eq!(c.tunnels[0].ofport, Some(10));
        assert!(c.tunnels[0].bfd && !c.tunnels[0].ovn_metadata);
        assert_eq!(c.bindings[0].tunnel, "hv2");
        assert_eq!(Config::parse("").expect("empty is fine"), Config::default());
    }

    fn error(text: &str) -> String {
        Config::parse(text).expect_err("must be refused").to_string()
    }

    #[test]
    fn groups_parse_and_their_errors_name_the_field() {
        let text = format!("{GOOD}[[groups]]\nvni = 5001\nkey = 32768\nports = [\"vm1\"]\ntunnels = [\"hv2\"]\n");
        let c = Config::parse(&text).expect("parses");
        assert_eq!((c.groups[0].key, c.groups[0].rate_pps, c.groups[0].tunnels.len()), (32768, 1000, 1));
        assert_eq!(
            error("[[groups]]\nvni = 1\nkey = 5\n"),
            "config: groups[0].key: 5 is not a group key (32768..=65535)"
        );
        assert_eq!(
            error("[[groups]]\nvni = 1\nkey = 32768\nports = [\"\"]\n"),
            "config: groups[0].ports[0]: \"\" is not a name (1..=64 printable ASCII characters, no spaces)"
        );
        let twice = "[[groups]]\nvni = 1\nkey = 32768\n[[groups]]\nvni = 1\nkey = 32768\n";
        assert_eq!(error(twice), "config: groups[1].key: 32768 in VNI 1 is already groups[0]");
    }

    #[test]
    fn port_security_parses_and_its_errors_name_the_field() {
        let c = Config::parse(GOOD).expect("parses");
        assert!(c.ports[0].port_security && c.ports[0].allow.is_empty(), "on by default");
        let allow = GOOD.replace(
            "ip = \"203.0.113.1\"",
            "ip = \"203.0.113.1\"\nallow = [\"02:00:5e:20:00:09 203.0.113.9 2001:db8::9\", \"02:00:5e:20:00:0a\"]",
        );
        let c = Config::parse(&allow).expect("parses");
        let listed: Vec<String> = c.ports[0].allow.iter().map(ToString::to_string).collect();
        assert_eq!(listed, ["02:00:5e:20:00:09 203.0.113.9 2001:db8::9", "02:00:5e:20:00:0a"]);
        let off = GOOD.replace("ip = \"203.0.113.1\"", "ip = \"203.0.113.1\"\nport_security = false");
        assert!(!Config::parse(&off).expect("parses").ports[0].port_security);

        let bad = allow.replace("203.0.113.9 ", "203.0.113.0/24 ");
        assert_eq!(
            error(&bad),
            "config: ports[0].allow[0]: \"203.0.113.0/24\": a prefix is not an address (list each address)"
        );
        let bad = allow.replace("\"02:00:5e:20:00:0a\"", "\"01:00:5e:20:00:0a\"");
        assert_eq!(error(&bad), "config: ports[0].allow[1]: 01:00:5e:20:00:0a is not a unicast address");
        let bad = allow.replace("allow =", "port_security = false\nallow =");
        assert_eq!(error(&bad), "config: ports[0].allow: more allowed addresses need port security on");
        let many: Vec<String> = (0..8).map(|i| format!("\"02:00:5e:20:01:{i:02x} 203.0.113.{i}\"")).collect();
        let bad = GOOD.replace("ip = \"203.0.113.1\"", &format!("allow = [{}]", many.join(", ")));
        assert_eq!(error(&bad), "config: ports[0].allow: 17 MACs and addresses with the port's own, at most 16");
    }

    #[test]
    fn a_tunnel_without_a_vni_is_flow_keyed_and_one_per_remote() {
        let flow = "[[tunnels]]\nname = \"hvf\"\nremote_ip = \"198.51.100.2\"\n";
        let c = Config::parse(&format!("{GOOD}{flow}")).expect("a fixed and a flow key to one chassis");
        assert_eq!((c.tunnels[0].vni.map(Vni::get), c.tunnels[1].vni), (Some(5001), None));
        let twice = format!("{flow}{}", flow.replace("hvf", "hvg"));
        assert_eq!(
            error(&twice),
            "config: tunnels[1].remote_ip: remote 198.51.100.2 key=flow duplicates tunnels[0]: \
             a redundant tunnel can never carry traffic"
        );
    }

    const BFD: &str = r#"
[[tunnels]]
name = "hv2"
remote_ip = "198.51.100.2"
vni = 5001
bfd = true
bfd_min_tx_ms = 50
bfd_detect_mult = 5
[[bfd_peers]]
name = "tor1"
peer_ip = "198.51.100.254"
echo = true
min_tx_ms = 10
"#;

    #[test]
    fn bfd_timers_and_peers_parse_and_are_checked() {
        let c = Config::parse(BFD).expect("parses");
        let t = &c.tunnels[0];
        let over = t.bfd_timers();
        assert_eq!(over, BfdOverride { min_tx_ms: Some(50), min_rx_ms: None, detect_mult: Some(5) });
        assert_eq!(over.over(&BfdSettings::default()), BfdSettings { min_tx_ms: 50, min_rx_ms: 1000, detect_mult: 5 });
        let p = &c.bfd_peers[0];
        assert_eq!(
            (p.name.as_str(), p.peer_ip, p.echo, p.min_tx_ms, p.ifname.as_deref()),
            ("tor1", "198.51.100.254".parse().unwrap(), true, Some(10), None)
        );

        assert_eq!(
            error(&BFD.replace("bfd_min_tx_ms = 50", "bfd_min_tx_ms = 0")),
            "config: tunnels[0].bfd_min_tx_ms: 0 is out of range (1..=60000)"
        );
        assert_eq!(
            error(&BFD.replace("bfd_detect_mult = 5", "bfd_detect_mult = 256")),
            "config: tunnels[0].bfd_detect_mult: 256 is out of range (1..=255)"
        );
        assert_eq!(
            error(&BFD.replace("bfd = true", "bfd = false")),
            "config: tunnels[0].bfd_min_tx_ms: is set, but bfd is off for this tunnel"
        );
        assert_eq!(
            error(&BFD.replace("198.51.100.254", "2001:db8::1")),
            "config: bfd_peers[0].peer_ip: 2001:db8::1 is not an IPv4 address (single-hop BFD runs over IPv4)"
        );
        assert_eq!(
            error(&BFD.replace("name = \"tor1\"", "name = \"hv2\"")),
            "config: bfd_peers[0].name: \"hv2\" is already used by tunnels[0]"
        );
        assert_eq!(
            error(&BFD.replace("min_tx_ms = 10", "min_tx_ms = 60001")),
            "config: bfd_peers[0].min_tx_ms: 60001 is out of range (1..=60000)"
        );
        let twice = format!("{BFD}[[bfd_peers]]\nname = \"tor2\"\npeer_ip = \"198.51.100.254\"\n");
        assert_eq!(error(&twice), "config: bfd_peers[1].peer_ip: 198.51.100.254 is already the peer of bfd_peers[0]");
        assert!(error(&BFD.replace("echo = true", "echo = true\ncolour = 1")).contains("unknown field `colour`"));
    }

    #[test]
    fn errors_name_the_field_and_value() {
        let bad_vni = GOOD.replace("vni = 5001\nbfd", "vni = 16777216\nbfd");
        assert_eq!(error(&bad_vni), "config: tunnels[0].vni: 16777216 is out of range (0..=16777215)");
        assert_eq!(
            error(&GOOD.replace("198.51.100.2", "198.51.100.300")),
            "config: tunnels[0].remote_ip: \"198.51.100.300\" is not an IP address"
        );
        assert_eq!(
            error(&GOOD.replace("ofport = 10", "ofport = 65280")),
            "config: tunnels[0].ofport: 65280 is out of range (1..=65279)"
        );
        assert_eq!(
            error(&GOOD.replace("port_key = 17", "port_key = 0")),
            "config: ports[0].port_key: 0 is out of range (1..=32767)"
        );
        assert_eq!(
            error(&GOOD.replace("02:00:5e:20:00:01", "01:00:5e:20:00:01")),
            "config: ports[0].mac: 01:00:5e:20:00:01 is not a unicast address"
        );
        assert_eq!(
            error(&GOOD.replace("name = \"hv2\"", "name = \"vm1\"")),
            "config: tunnels[0].name: \"vm1\" is already used by ports[0]"
        );
        assert_eq!(
            error(&GOOD.replace("tunnel = \"hv2\"", "tunnel = \"nope\"")),
            "config: bindings[0].tunnel: \"nope\" is not a tunnel of this file"
        );
        assert_eq!(
            error(&GOOD.replace("\"127.0.0.1:9477\"", "\"198.51.100.1:9477\"")),
            "config: metrics: 198.51.100.1:9477 is not a loopback address (metrics are served on loopback only)"
        );
        assert_eq!(
            error(&GOOD.replace("min_rx_ms = 300", "min_rx_ms = 0")),
            "config: bfd.min_rx_ms: 0 is out of range (1..=60000)"
        );
        assert_eq!(
            error(&GOOD.replace("203.0.113.2", "203.0.113.1")),
            "config: bindings[0].ip: 203.0.113.1 in VNI 5001 is already bound by port \"vm1\""
        );
    }

    #[test]
    fn malformed_files_are_one_line_errors_with_the_line() {
        let e = error(&GOOD.replace("bfd = true", "bfd = true\ncolour = \"red\""));
        assert!(e.starts_with("config: line 17: unknown field `colour`"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = error("[[ports]]\nname = \"a\"\nvni = \"five\"\n");
        assert!(e.starts_with("config: line 3: invalid type"), "{e}");
        let e = error("ports = [ 1, ");
        assert!(e.starts_with("config: line 1:"), "{e}");
    }

    #[test]
    fn the_ovn_section_names_its_fields() {
        let ovn = "\n[ovn]\nremote = \"unix:/run/ovn/sb.sock,tcp:198.51.100.5:6642\"\nchassis = \"gw1\"\n\
                   transport_zones = [\"tz1\"]\n[ovn.interfaces]\nvm3 = \"tap3\"\n";
        let c = Config::parse(&format!("{GOOD}{ovn}")).unwrap();
        let o = c.ovn.expect("[ovn]");
        assert_eq!(o.chassis.as_deref(), Some("gw1"));
        assert_eq!(o.interfaces["vm3"].as_str(), "tap3");
        assert!(!o.encap_csum && !o.claim_unsupported);
        assert_eq!(o.transport_zones.len(), 1);
        assert_eq!(
            error(&format!("{GOOD}{}", ovn.replace("\"gw1\"", "\"\""))),
            "config: ovn.chassis: \"\" is not a name (1..=64 printable ASCII characters, no spaces)"
        );
        let e = error(&format!("{GOOD}{}", ovn.replace("tap3", "p1")));
        assert_eq!(e, "config: ovn.interfaces.\"vm3\": \"p1\" is already used by ports[0]");
        let e = error(&format!("{GOOD}{}", ovn.replace("[\"tz1\"]", "[\"a b\"]")));
        assert_eq!(e, "config: ovn.transport_zones[0]: \"a b\" is not a zone name");
        let e = error(&format!("{GOOD}{}", ovn.replace("chassis", "chasis")));
        assert!(e.contains("unknown field `chasis`"), "{e}");
    }
}
