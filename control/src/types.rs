//! The validated values that every way into the gateway shares: the config
//! file, the API (and so the CLI) and the port map all hold these types, so
//! a value is checked once, in one place, with one message, and a value of
//! one of these types is valid wherever it travels (a stored record that
//! fails its check does not load).
//!
//! Each error says what is wrong with the value but not which field held
//! it: the caller knows the field (`config: tunnels[2].vni: ...`, clap's
//! `--vni`, the API's field path) and prefixes it.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use xgw_common::geneve::{OVN_PORT_KEY_MAX, VNI_MAX};

/// What is wrong with a value, without the field's name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

fn invalid(what: impl fmt::Display) -> InvalidValue {
    InvalidValue(what.to_string())
}

/// Implements the conversions every newtype here has: `FromStr` (clap),
/// serde through the raw type (validating on the way in), `Display`.
macro_rules! newtype_conversions {
    ($t:ident, $raw:ty) => {
        impl TryFrom<$raw> for $t {
            type Error = InvalidValue;
            fn try_from(v: $raw) -> Result<Self, InvalidValue> {
                $t::new(v)
            }
        }
        impl From<$t> for $raw {
            fn from(v: $t) -> $raw {
                v.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

/// `{:?}` of a name is the quoted string, as of a `String`: what errors
/// have always shown.
macro_rules! debug_as_inner {
    ($t:ident) => {
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}
debug_as_inner!(Name);
debug_as_inner!(IfName);

/// A Geneve Virtual Network Identifier: 24 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
// Read through i64, so that a JSON number beyond u32 gets the VNI's range
// in its message, not u32's.
#[serde(try_from = "i64", into = "u32")]
pub struct Vni(u32);

impl Vni {
    pub const MAX: u32 = VNI_MAX;

    pub fn new(v: u32) -> Result<Vni, InvalidValue> {
        if v > VNI_MAX {
            return Err(invalid(format_args!("{v} is out of range (0..={VNI_MAX})")));
        }
        Ok(Vni(v))
    }

    /// From any integer (the config file's TOML integers, clap's input).
    pub fn from_i64(v: i64) -> Result<Vni, InvalidValue> {
        u32::try_from(v).map_err(|_| invalid(format_args!("{v} is out of range (0..={VNI_MAX})"))).and_then(Vni::new)
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}
newtype_conversions!(Vni, u32);

impl TryFrom<i64> for Vni {
    type Error = InvalidValue;
    fn try_from(v: i64) -> Result<Vni, InvalidValue> {
        Vni::from_i64(v)
    }
}

impl FromStr for Vni {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Vni, InvalidValue> {
        let v: i64 = s.trim().parse().map_err(|_| invalid(format_args!("{s:?} is not a number")))?;
        Vni::from_i64(v)
    }
}

/// An OVN logical port key: 15 bits in OVN's Geneve option; 0 means "no
/// port" to OVN, so it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u16")]
pub struct PortKey(u16);

impl PortKey {
    pub const MAX: u16 = OVN_PORT_KEY_MAX;

    pub fn new(v: u16) -> Result<PortKey, InvalidValue> {
        if v == 0 || v > OVN_PORT_KEY_MAX {
            return Err(invalid(format_args!("{v} is out of range (1..={OVN_PORT_KEY_MAX})")));
        }
        Ok(PortKey(v))
    }

    pub fn from_i64(v: i64) -> Result<PortKey, InvalidValue> {
        u16::try_from(v)
            .map_err(|_| invalid(format_args!("{v} is out of range (1..={OVN_PORT_KEY_MAX})")))
            .and_then(PortKey::new)
    }

    pub const fn get(self) -> u16 {
        self.0
    }
}
newtype_conversions!(PortKey, u16);

impl TryFrom<i64> for PortKey {
    type Error = InvalidValue;
    fn try_from(v: i64) -> Result<PortKey, InvalidValue> {
        PortKey::from_i64(v)
    }
}

impl FromStr for PortKey {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<PortKey, InvalidValue> {
        let v: i64 = s.trim().parse().map_err(|_| invalid(format_args!("{s:?} is not a number")))?;
        PortKey::from_i64(v)
    }
}

/// Shows a string the way an error should: quoted, with anything that is
/// not printable ASCII escaped, so a hostile value cannot reach the
/// operator's terminal raw.
fn quoted(s: &str) -> String {
    let shown: String = s.chars().take(80).collect();
    let more = if s.chars().count() > 80 { "..." } else { "" };
    format!("{}{more}", shown.escape_default())
}

/// A Linux interface name, as the kernel accepts it (`dev_valid_name`:
/// 1..=15 bytes, not `.` or `..`, no `/`, `:` or whitespace), restricted
/// to printable ASCII.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IfName(String);

impl IfName {
    /// IFNAMSIZ - 1.
    pub const MAX_LEN: usize = 15;

    pub fn new(s: impl Into<String>) -> Result<IfName, InvalidValue> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s != "."
            && s != ".."
            && s.chars().all(|c| c.is_ascii_graphic() && c != '/' && c != ':');
        if !ok {
            return Err(invalid(format_args!(
                "\"{}\" is not a Linux interface name (1..={} printable ASCII characters, no '/', ':' or spaces)",
                quoted(&s),
                Self::MAX_LEN
            )));
        }
        Ok(IfName(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
newtype_conversions!(IfName, String);

impl FromStr for IfName {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<IfName, InvalidValue> {
        IfName::new(s)
    }
}

impl std::ops::Deref for IfName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// The name of a port, tunnel or BFD peer: what the operator types, what
/// `show` prints, and the key of its record. 1..=64 printable ASCII
/// characters: no spaces, no control characters (a newline or ESC would
/// reach the operator's terminal), nothing a terminal could render as
/// something else (U+202E reverses the text after it).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    pub const MAX_LEN: usize = 64;

    pub fn new(s: impl Into<String>) -> Result<Name, InvalidValue> {
        let s = s.into();
        if s.is_empty() || s.len() > Self::MAX_LEN || !s.chars().all(|c| c.is_ascii_graphic()) {
            return Err(invalid(format_args!(
                "\"{}\" is not a name (1..={} printable ASCII characters, no spaces)",
                quoted(&s),
                Self::MAX_LEN
            )));
        }
        Ok(Name(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
newtype_conversions!(Name, String);

impl FromStr for Name {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Name, InvalidValue> {
        Name::new(s)
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// A unicast IP address, IPv4-mapped IPv6 (`::ffff:a.b.c.d`) turned into
/// the IPv4 address it is before any check: the datapath stores both the
/// same way, so `::ffff:224.0.0.1` is a multicast address and
/// `::ffff:198.51.100.2` the same chassis as `198.51.100.2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "IpAddr", into = "IpAddr")]
pub struct UnicastIp(IpAddr);

impl UnicastIp {
    pub fn new(ip: IpAddr) -> Result<UnicastIp, InvalidValue> {
        let ip = ip.to_canonical();
        let unicast = match ip {
            IpAddr::V4(a) => !(a.is_unspecified() || a.is_multicast() || a.is_broadcast()),
            IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
        };
        if !unicast {
            return Err(invalid(format_args!("{ip} is not a unicast address")));
        }
        Ok(UnicastIp(ip))
    }

    /// A tunnel endpoint on the underlay: also not loopback or link-local,
    /// which no other chassis can have.
    pub fn tunnel_remote(ip: IpAddr) -> Result<UnicastIp, InvalidValue> {
        let ip = UnicastIp::new(ip)?;
        let local_only = match ip.0 {
            IpAddr::V4(a) => a.is_loopback() || a.is_link_local(),
            IpAddr::V6(a) => a.is_loopback() || (a.segments()[0] & 0xffc0) == 0xfe80,
        };
        if local_only {
            return Err(invalid(format_args!("{ip} is a loopback or link-local address, not another chassis")));
        }
        Ok(ip)
    }

    pub const fn get(self) -> IpAddr {
        self.0
    }

    pub fn is_ipv4(self) -> bool {
        self.0.is_ipv4()
    }

    pub fn v4(self) -> Option<Ipv4Addr> {
        match self.0 {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }
    }

    pub fn v6(self) -> Option<Ipv6Addr> {
        match self.0 {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        }
    }
}
newtype_conversions!(UnicastIp, IpAddr);

impl FromStr for UnicastIp {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<UnicastIp, InvalidValue> {
        let ip: IpAddr =
            s.trim().parse().map_err(|_| invalid(format_args!("\"{}\" is not an IP address", quoted(s))))?;
        UnicastIp::new(ip)
    }
}

impl PartialEq<IpAddr> for UnicastIp {
    fn eq(&self, other: &IpAddr) -> bool {
        self.0 == other.to_canonical()
    }
}

/// One element of a port's port security (OVN's `port_security` column):
/// a MAC the port's VM may send from and, if any are listed, the only IP
/// addresses it may send from with that MAC. Written as OVN writes it,
/// `"MAC [IP ...]"`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AllowedAddress {
    pub mac: MacAddr,
    pub ips: Vec<UnicastIp>,
}

impl FromStr for AllowedAddress {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut words = s.split_whitespace();
        let Some(mac) = words.next() else {
            return Err(invalid(format_args!("\"{}\" is not \"MAC [IP ...]\"", quoted(s))));
        };
        let mac = mac.parse::<MacAddr>()?.unicast()?;
        let mut ips = Vec::new();
        for w in words {
            if w.contains('/') {
                return Err(invalid(format_args!("\"{}\": a prefix is not an address (list each address)", quoted(w))));
            }
            let ip: UnicastIp = w.parse()?;
            if ips.contains(&ip) {
                return Err(invalid(format_args!("\"{}\" is listed twice", quoted(w))));
            }
            ips.push(ip);
        }
        Ok(AllowedAddress { mac, ips })
    }
}

impl TryFrom<String> for AllowedAddress {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<AllowedAddress> for String {
    fn from(a: AllowedAddress) -> String {
        a.to_string()
    }
}

impl fmt::Display for AllowedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.mac)?;
        for ip in &self.ips {
            write!(f, " {ip}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for AllowedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
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

    /// `self`, if it may be a port's or a binding's address.
    pub fn unicast(self) -> Result<MacAddr, InvalidValue> {
        if !self.is_unicast() {
            return Err(invalid(format_args!("{self} is not a unicast address")));
        }
        Ok(self)
    }
}

impl FromStr for MacAddr {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || invalid(format_args!("\"{}\" is not a MAC address (aa:bb:cc:dd:ee:ff)", quoted(s)));
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
    type Error = InvalidValue;
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

/// BFD timers for every tunnel with `bfd = true` (RFC 5880 terms; defaults
/// as Open vSwitch's `bfd:min_rx`, `bfd:min_tx`, `bfd:mult`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BfdSettings {
    pub min_rx_ms: u32,
    pub min_tx_ms: u32,
    pub detect_mult: u8,
}

impl Default for BfdSettings {
    fn default() -> Self {
        BfdSettings { min_rx_ms: 1000, min_tx_ms: 100, detect_mult: 3 }
    }
}

/// The timers of one tunnel or peer, where they differ from `[bfd]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BfdOverride {
    pub min_tx_ms: Option<u32>,
    pub min_rx_ms: Option<u32>,
    pub detect_mult: Option<u8>,
}

pub const BFD_MS_MAX: u32 = 60_000;

impl BfdOverride {
    pub fn is_empty(&self) -> bool {
        *self == BfdOverride::default()
    }

    pub fn over(&self, base: &BfdSettings) -> BfdSettings {
        BfdSettings {
            min_tx_ms: self.min_tx_ms.unwrap_or(base.min_tx_ms),
            min_rx_ms: self.min_rx_ms.unwrap_or(base.min_rx_ms),
            detect_mult: self.detect_mult.unwrap_or(base.detect_mult),
        }
    }

    /// Range checks; `fields` name the three values where the caller has
    /// them (`tunnels[0].bfd_min_tx_ms`, ...).
    pub fn check(&self, fields: [&str; 3]) -> Result<(), InvalidValue> {
        for (field, v) in [(fields[0], self.min_tx_ms), (fields[1], self.min_rx_ms)] {
            if let Some(v) = v.filter(|v| !(1..=BFD_MS_MAX).contains(v)) {
                return Err(invalid(format_args!("{field}: {v} is out of range (1..={BFD_MS_MAX})")));
            }
        }
        if self.detect_mult == Some(0) {
            return Err(invalid(format_args!("{}: 0 is out of range (1..=255)", fields[2])));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vni_and_port_key_ranges_have_one_message() {
        assert_eq!(Vni::new(VNI_MAX).map(Vni::get), Ok(VNI_MAX));
        assert_eq!(Vni::new(1 << 24).unwrap_err().to_string(), "16777216 is out of range (0..=16777215)");
        assert_eq!(Vni::from_i64(4294967296).unwrap_err().to_string(), "4294967296 is out of range (0..=16777215)");
        assert_eq!("-1".parse::<Vni>().unwrap_err().to_string(), "-1 is out of range (0..=16777215)");
        assert!(serde_json::from_str::<Vni>("16777216")
            .unwrap_err()
            .to_string()
            .contains("out of range (0..=16777215)"));
        assert_eq!(serde_json::to_string(&Vni::new(5001).unwrap()).unwrap(), "5001");
        // The API's JSON: beyond u32 still the VNI's range, not u32's.
        let e = serde_json::from_str::<Vni>("4294967296").unwrap_err().to_string();
        assert!(e.contains("4294967296 is out of range (0..=16777215)"), "{e}");
        let e = serde_json::from_str::<PortKey>("70000").unwrap_err().to_string();
        assert!(e.contains("70000 is out of range (1..=32767)"), "{e}");
        for bad in [0, 0x8000] {
            assert_eq!(PortKey::new(bad).unwrap_err().to_string(), format!("{bad} is out of range (1..=32767)"));
        }
        assert_eq!(PortKey::from_i64(70000).unwrap_err().to_string(), "70000 is out of range (1..=32767)");
    }

    #[test]
    fn hostile_names_are_refused_and_shown_escaped() {
        for good in ["vm1", "ovn-aded97-0", "hv2.example", &"x".repeat(64)] {
            assert!(Name::new(good).is_ok(), "{good}");
        }
        let long = "x".repeat(1000);
        for bad in ["", "a b", "a\nb", "a\u{1b}[2Jb", "evil\u{202e}txt", "tab\t", &long, "ünï"] {
            let e = Name::new(bad).unwrap_err().to_string();
            assert!(e.contains("is not a name"), "{e}");
            assert!(e.chars().all(|c| c.is_ascii_graphic() || c == ' '), "raw character in {e:?}");
            assert!(e.len() < 200, "{e}");
        }
        assert!(serde_json::from_str::<Name>("\"a\\nb\"").is_err());
    }

    #[test]
    fn interface_names_follow_the_kernel() {
        for good in ["eth0", "veth-a.1", "x".repeat(15).as_str()] {
            assert!(IfName::new(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "x".repeat(16).as_str(), "é"] {
            assert!(IfName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ipv4_mapped_addresses_are_checked_as_ipv4() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(UnicastIp::new(ip("::ffff:198.51.100.2")).unwrap().get(), ip("198.51.100.2"));
        for bad in ["::ffff:224.0.0.1", "::ffff:0.0.0.0", "::ffff:255.255.255.255", "224.0.0.1", "::", "ff02::1"] {
            assert!(UnicastIp::new(ip(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            UnicastIp::new(ip("::ffff:224.0.0.1")).unwrap_err().to_string(),
            "224.0.0.1 is not a unicast address"
        );
        for bad in ["127.0.0.1", "::ffff:127.0.0.1", "::1", "169.254.1.1", "fe80::1"] {
            assert!(UnicastIp::tunnel_remote(ip(bad)).is_err(), "{bad}");
            assert!(UnicastIp::new(ip(bad)).is_ok(), "{bad} is unicast");
        }
        assert!(UnicastIp::tunnel_remote(ip("2001:db8::7")).is_ok());
        let parsed: UnicastIp = serde_json::from_str("\"::ffff:198.51.100.9\"").unwrap();
        assert_eq!(serde_json::to_string(&parsed).unwrap(), "\"198.51.100.9\"");
    }

    #[test]
    fn macs_parse_strictly() {
        assert_eq!("02:00:5e:00:00:01".parse::<MacAddr>().unwrap().0, [2, 0, 0x5e, 0, 0, 1]);
        for bad in ["02:00:00:00:00", "02:00:00:00:00:01:02", "0200.5e00.0001", "02:00:00:00:00:0g"] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert!("01:00:5e:00:00:01".parse::<MacAddr>().unwrap().unicast().is_err());
        assert!(MacAddr([0; 6]).unicast().is_err());
    }
}
