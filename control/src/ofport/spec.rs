//! What a port is: the desired description of a local port or a tunnel,
//! and the checks it must pass before it may cost a port number.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Largest Geneve VNI (24 bits).
pub const VNI_MAX: u32 = (1 << 24) - 1;
/// Largest OVN logical port key: 15 bits in the Geneve OVN option. Key 0
/// means "no port" to OVN, so it is refused too.
pub const PORT_KEY_MAX: u16 = (1 << 15) - 1;
/// Longest Linux interface name (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PortSpec {
    Local(LocalPort),
    Tunnel(TunnelPort),
}

/// A port on this host: traffic decapsulated for `(vni, port_key)` is
/// redirected to `ifname`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalPort {
    pub name: String,
    pub ifname: String,
    pub vni: u32,
    pub port_key: u16,
    pub mac: MacAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ofport_request: Option<u16>,
}

/// A Geneve tunnel to another chassis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelPort {
    pub name: String,
    pub remote: IpAddr,
    pub vni: u32,
    pub bfd: bool,
    pub ovn_metadata: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ofport_request: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortKind {
    Local,
    Tunnel,
}

/// What the datapath looks a tunnel up by. Two tunnels with one key are
/// the 2018 "redundant chassis": the second can never carry traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TunnelKey {
    pub remote: IpAddr,
    pub vni: u32,
}

impl fmt::Display for TunnelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "remote {} VNI {}", self.remote, self.vni)
    }
}

/// Something only one port may hold: a second holder would make one of
/// the datapath's lookups ambiguous, and its map insert would fail anyway.
/// Checked before a number is reserved, so a clash costs nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Claim {
    /// (remote, VNI): two tunnels with one key are the 2018 redundant chassis.
    Tunnel(TunnelKey),
    /// LOCAL_PORTS is keyed by the interface.
    Ifname(String),
    PortKey {
        vni: u32,
        port_key: u16,
    },
    Mac {
        vni: u32,
        mac: MacAddr,
    },
    Ip {
        vni: u32,
        ip: IpAddr,
    },
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Claim::Tunnel(k) => k.fmt(f),
            Claim::Ifname(i) => write!(f, "ifname {i:?}"),
            Claim::PortKey { vni, port_key } => write!(f, "port_key {port_key} in VNI {vni}"),
            Claim::Mac { vni, mac } => write!(f, "mac {mac} in VNI {vni}"),
            Claim::Ip { vni, ip } => write!(f, "ip {ip} in VNI {vni}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpecError {
    #[error("name: must not be empty")]
    EmptyName,
    #[error("ifname: {value:?} is not a Linux interface name (1..={IFNAME_MAX} bytes, no '/', whitespace or NUL)")]
    IfName { value: String },
    #[error("vni: {value} is out of range (0..={VNI_MAX})")]
    Vni { value: u32 },
    #[error("port_key: {value} is out of range (1..={PORT_KEY_MAX})")]
    PortKey { value: u16 },
    #[error("mac: {value} is not a unicast address")]
    Mac { value: MacAddr },
    #[error("{field}: {value} is not a unicast address")]
    Ip { field: &'static str, value: IpAddr },
}

impl PortSpec {
    pub fn name(&self) -> &str {
        match self {
            PortSpec::Local(p) => &p.name,
            PortSpec::Tunnel(t) => &t.name,
        }
    }

    pub fn kind(&self) -> PortKind {
        match self {
            PortSpec::Local(_) => PortKind::Local,
            PortSpec::Tunnel(_) => PortKind::Tunnel,
        }
    }

    pub fn ofport_request(&self) -> Option<u16> {
        match self {
            PortSpec::Local(p) => p.ofport_request,
            PortSpec::Tunnel(t) => t.ofport_request,
        }
    }

    /// IPv4-mapped remotes count as IPv4: the datapath stores both the
    /// same way, so `::ffff:a.b.c.d` and `a.b.c.d` are one chassis.
    pub fn tunnel_key(&self) -> Option<TunnelKey> {
        match self {
            PortSpec::Local(_) => None,
            PortSpec::Tunnel(t) => Some(TunnelKey { remote: t.remote.to_canonical(), vni: t.vni }),
        }
    }

    /// What this port holds exclusively.
    pub fn claims(&self) -> Vec<Claim> {
        match self {
            PortSpec::Local(p) => {
                let vni = p.vni;
                let mut claims = vec![
                    Claim::Ifname(p.ifname.clone()),
                    Claim::PortKey { vni, port_key: p.port_key },
                    Claim::Mac { vni, mac: p.mac },
                ];
                if let Some(ip) = p.ip {
                    let ip = ip.to_canonical();
                    claims.push(Claim::Ip { vni, ip });
                }
                claims
            }
            PortSpec::Tunnel(_) => self.tunnel_key().map(Claim::Tunnel).into_iter().collect(),
        }
    }

    /// Field checks. `ofport_request` is left to the allocator, which owns
    /// the number space and reports it as `RequestedOutOfRange`.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.name().is_empty() {
            return Err(SpecError::EmptyName);
        }
        match self {
            PortSpec::Local(p) => {
                let bad_ifname = p.ifname.is_empty()
                    || p.ifname.len() > IFNAME_MAX
                    || p.ifname.chars().any(|c| c == '/' || c == '\0' || c.is_whitespace());
                if bad_ifname {
                    return Err(SpecError::IfName { value: p.ifname.clone() });
                }
                check_vni(p.vni)?;
                if p.port_key == 0 || p.port_key > PORT_KEY_MAX {
                    return Err(SpecError::PortKey { value: p.port_key });
                }
                if !p.mac.is_unicast() {
                    return Err(SpecError::Mac { value: p.mac });
                }
                if let Some(ip) = p.ip {
                    check_unicast("ip", ip)?;
                }
            }
            PortSpec::Tunnel(t) => {
                check_unicast("remote", t.remote)?;
                check_vni(t.vni)?;
            }
        }
        Ok(())
    }
}

fn check_vni(value: u32) -> Result<(), SpecError> {
    if value > VNI_MAX {
        return Err(SpecError::Vni { value });
    }
    Ok(())
}

fn check_unicast(field: &'static str, value: IpAddr) -> Result<(), SpecError> {
    let unicast = match value {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_multicast() || a.is_broadcast()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
    };
    if unicast {
        Ok(())
    } else {
        Err(SpecError::Ip { field, value })
    }
}

/// An Ethernet address, written and stored as `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Not a group address and not all zeroes.
    pub fn is_unicast(self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0:?} is not a MAC address (aa:bb:cc:dd:ee:ff)")]
pub struct ParseMacError(String);

impl FromStr for MacAddr {
    type Err = ParseMacError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError(s.to_owned());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

impl TryFrom<String> for MacAddr {
    type Error = ParseMacError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<MacAddr> for String {
    fn from(mac: MacAddr) -> String {
        mac.to_string()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> LocalPort {
        LocalPort {
            name: "vm1".into(),
            ifname: "veth1".into(),
            vni: 5,
            port_key: 3,
            mac: MacAddr([0x02, 0, 0, 0, 0, 1]),
            ip: None,
            ofport_request: None,
        }
    }

    fn tunnel() -> TunnelPort {
        TunnelPort {
            name: "ovn-aded97-0".into(),
            remote: "198.51.100.7".parse().expect("ip"),
            vni: 5,
            bfd: true,
            ovn_metadata: true,
            ofport_request: None,
        }
    }

    #[test]
    fn errors_name_field_and_value() {
        let mut p = local();
        p.vni = 1 << 24;
        let e = PortSpec::Local(p).validate().expect_err("vni");
        assert_eq!(e.to_string(), "vni: 16777216 is out of range (0..=16777215)");

        for key in [0, 0x8000] {
            let mut p = local();
            p.port_key = key;
            let e = PortSpec::Local(p).validate().expect_err("key");
            assert_eq!(e, SpecError::PortKey { value: key });
            assert!(e.to_string().starts_with("port_key: "));
        }

        let mut p = local();
        p.mac = MacAddr([0x01, 0, 0x5e, 0, 0, 1]);
        let e = PortSpec::Local(p).validate().expect_err("mac");
        assert_eq!(e.to_string(), "mac: 01:00:5e:00:00:01 is not a unicast address");

        let mut p = local();
        p.ifname = "a-very-long-interface".into();
        assert!(matches!(PortSpec::Local(p).validate(), Err(SpecError::IfName { .. })));

        let mut t = tunnel();
        t.remote = "224.0.0.1".parse().expect("ip");
        let e = PortSpec::Tunnel(t).validate().expect_err("remote");
        assert_eq!(e.to_string(), "remote: 224.0.0.1 is not a unicast address");

        assert_eq!(PortSpec::Local(local()).validate(), Ok(()));
        assert_eq!(PortSpec::Tunnel(tunnel()).validate(), Ok(()));
    }

    #[test]
    fn json_round_trip() {
        for spec in [PortSpec::Local(local()), PortSpec::Tunnel(tunnel())] {
            let json = serde_json::to_string(&spec).expect("serialize");
            let back: PortSpec = serde_json::from_str(&json).expect("parse");
            assert_eq!(back, spec);
        }
        let json = serde_json::to_string(&PortSpec::Local(local())).expect("serialize");
        assert!(json.contains(r#""mac":"02:00:00:00:00:01""#), "{json}");
        assert!("02:00:00:00:00".parse::<MacAddr>().is_err());
        assert!("02:00:00:00:00:01:02".parse::<MacAddr>().is_err());
    }
}
