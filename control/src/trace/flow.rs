//! `xgw trace`'s packet syntax: comma-separated `key=value` fields, as in
//! `ovs-appctl ofproto/trace`, turned into the bytes of one frame.
//!
//! ```text
//! Ethernet  eth_src=MAC eth_dst=MAC [vlan=VID] [eth_type=N]
//! IPv4/IPv6 ip_src=IP ip_dst=IP (the family is the addresses') [ip_ttl=N] [ip_proto=N]
//! L4        udp_src=N udp_dst=N | tcp_src=N tcp_dst=N | icmp_type=N [icmp_code=N]
//! ARP       arp_op=1|2 arp_sha=MAC arp_spa=IPv4 arp_tha=MAC arp_tpa=IPv4
//! Geneve    vni=N [ovn_ingress=KEY ovn_egress=KEY] [geneve_opt=CLASS:TYPE:HEX ...]
//!           [geneve_oam=1] [geneve_critical=1]
//! Inner     inner_<any Ethernet, IP, L4 or ARP key above>
//! Payload   payload=HEX | payload_len=N (zeros), after the innermost header
//! ```
//!
//! `vni` makes the frame Geneve (outer UDP to 6081 unless `udp_dst` says
//! otherwise) around the inner frame; `ovn_ingress`/`ovn_egress` add OVN's
//! option (class 0x0102, type 0x80), `geneve_opt` any other one (repeatable,
//! DATA a multiple of 4 bytes). A level with IP addresses and no L4 key is an
//! ICMP echo request (ICMPv6 for IPv6); a level with neither IP nor ARP keys
//! is an Ethernet header with `eth_type` (default 0x88b5, local
//! experimental) before the payload. Defaults come from the ingress (the
//! uplink's MAC and tunnel address for the outer headers, the port's MAC as
//! the source on a local port): `Defaults`.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use anyhow::{anyhow, bail, Context, Result};
use xgw_common::{geneve, wire};

use crate::types::MacAddr;

/// Keys of one level (outer or inner).
const LEVEL_KEYS: &[&str] = &[
    "eth_src",
    "eth_dst",
    "vlan",
    "eth_type",
    "ip_src",
    "ip_dst",
    "ip_ttl",
    "ip_proto",
    "udp_src",
    "udp_dst",
    "tcp_src",
    "tcp_dst",
    "icmp_type",
    "icmp_code",
    "arp_op",
    "arp_sha",
    "arp_spa",
    "arp_tha",
    "arp_tpa",
];
const GENEVE_KEYS: &[&str] =
    &["vni", "ovn_ingress", "ovn_egress", "geneve_opt", "geneve_oam", "geneve_critical", "payload", "payload_len"];

/// What the ingress supplies for fields not given.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    pub eth_src: Option<[u8; 6]>,
    pub eth_dst: Option<[u8; 6]>,
    pub ip4_dst: Option<Ipv4Addr>,
    pub ip6_dst: Option<std::net::Ipv6Addr>,
}

/// The parsed fields: key -> values (only `geneve_opt` may repeat).
#[derive(Debug, Clone, Default)]
pub struct Flow {
    fields: BTreeMap<String, Vec<String>>,
}

impl std::str::FromStr for Flow {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Flow> {
        let mut fields: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| anyhow!("{part:?}: not key=value"))?;
            let (k, v) = (k.trim(), v.trim());
            let base = k.strip_prefix("inner_").unwrap_or(k);
            let known = LEVEL_KEYS.contains(&base) || (base == k && GENEVE_KEYS.contains(&k));
            if !known {
                bail!("{k}: unknown field (see `xgw trace --help`)");
            }
            let values = fields.entry(k.to_owned()).or_default();
            if !values.is_empty() && k != "geneve_opt" {
                bail!("{k}: given twice");
            }
            values.push(v.to_owned());
        }
        let flow = Flow { fields };
        if flow.has_inner() && !flow.fields.contains_key("vni") {
            bail!("inner_* fields need vni= (a Geneve frame)");
        }
        Ok(flow)
    }
}

fn num<T: std::str::FromStr + TryFrom<u64>>(key: &str, v: &str) -> Result<T> {
    let n = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse::<u64>().ok(),
    };
    n.and_then(|n| T::try_from(n).ok()).ok_or_else(|| anyhow!("{key}: {v:?} is not a number in range"))
}

fn hex(key: &str, v: &str) -> Result<Vec<u8>> {
    let v = v.strip_prefix("0x").unwrap_or(v);
    if !v.len().is_multiple_of(2) {
        bail!("{key}: {v:?} is not whole bytes of hex");
    }
    (0..v.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&v[i..i + 2], 16).map_err(|_| anyhow!("{key}: {v:?} is not hex")))
        .collect()
}

impl Flow {
    fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(|v| v.first()).map(String::as_str)
    }

    fn has_inner(&self) -> bool {
        self.fields.keys().any(|k| k.starts_with("inner_"))
    }

    /// Whether the frame is Geneve-encapsulated.
    pub fn is_geneve(&self) -> bool {
        self.fields.contains_key("vni")
    }

    /// The frame's bytes.
    pub fn build(&self, d: &Defaults) -> Result<Vec<u8>> {
        let payload = match (self.get("payload"), self.get("payload_len")) {
            (Some(_), Some(_)) => bail!("payload and payload_len: give one"),
            (Some(h), None) => hex("payload", h)?,
            (None, Some(n)) => vec![0; num::<usize>("payload_len", n)?],
            (None, None) => Vec::new(),
        };
        if !self.is_geneve() {
            return self.level("", d, payload);
        }
        let inner_defaults = Defaults {
            eth_src: Some([0x00, 0x00, 0x5e, 0x00, 0x53, 0x02]),
            eth_dst: Some([0x00, 0x00, 0x5e, 0x00, 0x53, 0x03]),
            ..Defaults::default()
        };
        let inner = self.level("inner_", &inner_defaults, payload)?;
        let vni: u32 = num("vni", self.get("vni").unwrap())?;
        if vni > geneve::VNI_MAX {
            bail!("vni: {vni} is out of range (0..={})", geneve::VNI_MAX);
        }
        let mut opts = Vec::new();
        let mut critical = false;
        match (self.get("ovn_ingress"), self.get("ovn_egress")) {
            (None, None) => {}
            (i, e) => {
                let i: u16 = num("ovn_ingress", i.unwrap_or("0"))?;
                let e: u16 = num("ovn_egress", e.unwrap_or("0"))?;
                opts.extend(geneve::ovn_option(i, e));
                critical = true;
            }
        }
        for o in self.fields.get("geneve_opt").into_iter().flatten() {
            let mut it = o.splitn(3, ':');
            let (Some(c), Some(t), Some(data)) = (it.next(), it.next(), it.next()) else {
                bail!("geneve_opt: {o:?} is not CLASS:TYPE:HEX");
            };
            let data = hex("geneve_opt", data)?;
            if !data.len().is_multiple_of(4) || data.len() > 124 {
                bail!("geneve_opt: data of {} bytes is not a multiple of 4 up to 124", data.len());
            }
            opts.extend(num::<u16>("geneve_opt", c)?.to_be_bytes());
            let t: u8 = num("geneve_opt", t)?;
            critical |= t & geneve::OPT_TYPE_CRITICAL != 0;
            opts.extend([t, (data.len() / 4) as u8]);
            opts.extend(data);
        }
        if opts.len() > geneve::MAX_OPTS_LEN {
            bail!("Geneve options of {} bytes: at most {}", opts.len(), geneve::MAX_OPTS_LEN);
        }
        let mut flags = 0;
        if self.get("geneve_oam").is_some_and(|v| v != "0") {
            flags |= geneve::FLAG_OAM;
        }
        if self.get("geneve_critical").is_some_and(|v| v != "0") || critical {
            flags |= geneve::FLAG_CRITICAL;
        }
        let mut body = geneve::header(vni, opts.len(), flags).to_vec();
        body.extend(opts);
        body.extend(inner);
        for k in ["tcp_src", "tcp_dst", "icmp_type", "icmp_code"].iter().chain(&["arp_op", "arp_spa", "arp_tpa"]) {
            if self.fields.contains_key(*k) {
                bail!("{k}: the outer headers of a Geneve frame are UDP");
            }
        }
        self.level_with("", d, Some(L4::Udp { default_dst: wire::GENEVE_PORT }), body)
    }

    fn level(&self, p: &str, d: &Defaults, payload: Vec<u8>) -> Result<Vec<u8>> {
        self.level_with(p, d, None, payload)
    }

    fn mac(&self, key: &str, default: Option<[u8; 6]>) -> Result<[u8; 6]> {
        match self.get(key) {
            Some(v) => Ok(v.parse::<MacAddr>().map_err(|e| anyhow!("{key}: {e}"))?.0),
            None => default.ok_or_else(|| anyhow!("{key}: required")),
        }
    }

    fn ip(&self, key: &str) -> Result<Option<IpAddr>> {
        self.get(key).map(|v| v.parse::<IpAddr>().map_err(|_| anyhow!("{key}: {v:?} is not an IP address"))).transpose()
    }

    fn level_with(&self, p: &str, d: &Defaults, forced: Option<L4>, payload: Vec<u8>) -> Result<Vec<u8>> {
        let k = |s: &str| format!("{p}{s}");
        let has = |s: &str| self.fields.contains_key(&k(s));
        let is_arp = ["arp_op", "arp_sha", "arp_spa", "arp_tha", "arp_tpa"].iter().any(|s| has(s));
        let is_ip = has("ip_src") || has("ip_dst") || forced.is_some();
        if is_arp && is_ip {
            bail!("{}: ARP and IP fields in one frame", k("arp_*"));
        }
        let eth_dst_default = if is_arp { d.eth_dst.or(Some([0xff; 6])) } else { d.eth_dst };
        let eth_src = self.mac(&k("eth_src"), d.eth_src)?;
        let eth_dst = self.mac(&k("eth_dst"), eth_dst_default)?;
        let (eth_type, body) = if is_arp {
            let op: u16 = num(&k("arp_op"), self.get(&k("arp_op")).unwrap_or("1"))?;
            let sha = self.mac(&k("arp_sha"), Some(eth_src))?;
            let tha = self.mac(&k("arp_tha"), Some([0; 6]))?;
            let v4 = |s: &str| -> Result<[u8; 4]> {
                match self.get(&k(s)) {
                    Some(v) => Ok(v.parse::<Ipv4Addr>().with_context(|| format!("{}: {v:?}", k(s)))?.octets()),
                    None => bail!("{}: required", k(s)),
                }
            };
            let mut a = vec![0, 1, 0x08, 0x00, 6, 4];
            a.extend(op.to_be_bytes());
            a.extend(sha);
            a.extend(v4("arp_spa")?);
            a.extend(tha);
            a.extend(v4("arp_tpa")?);
            a.extend(payload);
            (wire::ETH_P_ARP, a)
        } else if is_ip {
            let src = self.ip(&k("ip_src"))?.ok_or_else(|| anyhow!("{}: required", k("ip_src")))?;
            let dst = match (self.ip(&k("ip_dst"))?, src) {
                (Some(dst), _) => dst,
                (None, IpAddr::V4(_)) => IpAddr::V4(d.ip4_dst.ok_or_else(|| anyhow!("{}: required", k("ip_dst")))?),
                (None, IpAddr::V6(_)) => IpAddr::V6(d.ip6_dst.ok_or_else(|| anyhow!("{}: required", k("ip_dst")))?),
            };
            let ttl: u8 = num(&k("ip_ttl"), self.get(&k("ip_ttl")).unwrap_or("64"))?;
            let l4 = match forced {
                Some(l4) => l4,
                None if has("udp_src") || has("udp_dst") => L4::Udp { default_dst: 9 },
                None if has("tcp_src") || has("tcp_dst") => L4::Tcp,
                None if has("ip_proto") && !has("icmp_type") => {
                    L4::Raw(num(&k("ip_proto"), self.get(&k("ip_proto")).unwrap())?)
                }
                None => L4::Icmp,
            };
            let port = |s: &str, def: u16| -> Result<u16> { num(&k(s), self.get(&k(s)).unwrap_or(&def.to_string())) };
            let (proto, l4_bytes) = match l4 {
                L4::Udp { default_dst } => {
                    let (sp, dp) = (port("udp_src", 49152)?, port("udp_dst", default_dst)?);
                    let mut u = sp.to_be_bytes().to_vec();
                    u.extend(dp.to_be_bytes());
                    u.extend(((8 + payload.len()) as u16).to_be_bytes());
                    u.extend([0, 0]);
                    u.extend(payload);
                    (wire::IPPROTO_UDP, u)
                }
                L4::Tcp => {
                    let (sp, dp) = (port("tcp_src", 49152)?, port("tcp_dst", 80)?);
                    let mut t = sp.to_be_bytes().to_vec();
                    t.extend(dp.to_be_bytes());
                    t.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
                    t.extend(payload);
                    (wire::IPPROTO_TCP, t)
                }
                L4::Icmp => {
                    let v6 = src.is_ipv6();
                    let ty: u8 =
                        num(&k("icmp_type"), self.get(&k("icmp_type")).unwrap_or(if v6 { "128" } else { "8" }))?;
                    let code: u8 = num(&k("icmp_code"), self.get(&k("icmp_code")).unwrap_or("0"))?;
                    let mut c = vec![ty, code, 0, 0, 0, 1, 0, 1];
                    c.extend(payload);
                    (if v6 { wire::IPPROTO_ICMPV6 } else { wire::IPPROTO_ICMP }, c)
                }
                L4::Raw(p) => (p, payload),
            };
            ip_packet(src, dst, ttl, proto, l4_bytes, forced.is_some())?
        } else {
            let t: u16 = num(&k("eth_type"), self.get(&k("eth_type")).unwrap_or("0x88b5"))?;
            (t, payload)
        };
        let mut f = eth_dst.to_vec();
        f.extend(eth_src);
        if let Some(v) = self.get(&k("vlan")) {
            let vid: u16 = num(&k("vlan"), v)?;
            if vid > 4095 {
                bail!("{}: {vid} is out of range (0..=4095)", k("vlan"));
            }
            f.extend(wire::ETH_P_8021Q.to_be_bytes());
            f.extend(vid.to_be_bytes());
        }
        f.extend(eth_type.to_be_bytes());
        f.extend(body);
        Ok(f)
    }
}

#[derive(Clone, Copy)]
enum L4 {
    Udp { default_dst: u16 },
    Tcp,
    Icmp,
    Raw(u8),
}

/// The IP header before `l4`, with the UDP, TCP and ICMP checksums filled
/// in; but Geneve's UDP checksum over IPv4 (`geneve`) is left zero, as Open
/// vSwitch sends it.
fn ip_packet(src: IpAddr, dst: IpAddr, ttl: u8, proto: u8, mut l4: Vec<u8>, geneve: bool) -> Result<(u16, Vec<u8>)> {
    let csum_at = match proto {
        wire::IPPROTO_TCP => Some(16),
        wire::IPPROTO_ICMP | wire::IPPROTO_ICMPV6 => Some(2),
        wire::IPPROTO_UDP if src.is_ipv6() || !geneve => Some(6),
        _ => None,
    };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = u16::try_from(20 + l4.len()).map_err(|_| anyhow!("the IPv4 packet is too long"))?;
            if let Some(at) = csum_at {
                let pseudo = if proto == wire::IPPROTO_ICMP { Vec::new() } else { pseudo4(s, d, proto, l4.len()) };
                let c = checksum(&[&pseudo, &l4]);
                let c = if c == 0 && proto == wire::IPPROTO_UDP { 0xffff } else { c };
                l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
            }
            let mut h = vec![0x45, 0];
            h.extend(total.to_be_bytes());
            h.extend([0, 0, 0x40, 0, ttl, proto, 0, 0]);
            h.extend(s.octets());
            h.extend(d.octets());
            let c = checksum(&[&h]);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            h.extend(l4);
            Ok((wire::ETH_P_IPV4, h))
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let len = u16::try_from(l4.len()).map_err(|_| anyhow!("the IPv6 payload is too long"))?;
            if let Some(at) = csum_at {
                let mut pseudo = s.octets().to_vec();
                pseudo.extend(d.octets());
                pseudo.extend((l4.len() as u32).to_be_bytes());
                pseudo.extend([0, 0, 0, proto]);
                let c = checksum(&[&pseudo, &l4]);
                let c = if c == 0 && proto == wire::IPPROTO_UDP { 0xffff } else { c };
                l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
            }
            let mut h = vec![0x60, 0, 0, 0];
            h.extend(len.to_be_bytes());
            h.extend([proto, ttl]);
            h.extend(s.octets());
            h.extend(d.octets());
            h.extend(l4);
            Ok((wire::ETH_P_IPV6, h))
        }
        _ => bail!("ip_src and ip_dst are of different families"),
    }
}

fn pseudo4(s: Ipv4Addr, d: Ipv4Addr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = s.octets().to_vec();
    p.extend(d.octets());
    p.extend([0, proto]);
    p.extend((len as u16).to_be_bytes());
    p
}

/// The Internet checksum (RFC 1071) of the concatenated parts.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for b in parts.iter().flat_map(|p| p.iter().copied()) {
        match odd.take() {
            Some(hi) => sum += u16::from_be_bytes([hi, b]) as u32,
            None => odd = Some(b),
        }
    }
    if let Some(hi) = odd {
        sum += u16::from_be_bytes([hi, 0]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(s: &str) -> Vec<u8> {
        s.parse::<Flow>().unwrap().build(&Defaults::default()).unwrap()
    }

    #[test]
    fn a_geneve_frame_with_the_ovn_option() {
        let f = build(
            "eth_src=00:00:5e:00:53:01,eth_dst=00:00:5e:00:53:02,ip_src=198.51.100.2,ip_dst=198.51.100.1,vni=5001,\
             ovn_ingress=34,ovn_egress=17,inner_eth_src=02:00:00:00:00:02,inner_eth_dst=02:00:00:00:00:01,\
             inner_ip_src=203.0.113.2,inner_ip_dst=203.0.113.1,inner_udp_dst=7,payload=0102",
        );
        // Outer Ethernet, IPv4, UDP to 6081, Geneve with 8 bytes of options.
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(checksum(&[&f[14..34]]), 0, "IPv4 header checksum");
        assert_eq!(&f[36..38], &6081u16.to_be_bytes());
        assert_eq!(&f[42..50], &[0x02, 0x40, 0x65, 0x58, 0x00, 0x13, 0x89, 0]);
        assert_eq!(&f[50..58], &[0x01, 0x02, 0x80, 0x01, 0, 34, 0, 17]);
        let inner = &f[58..];
        assert_eq!(&inner[..6], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(inner.len(), 14 + 20 + 8 + 2);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]) as usize, f.len() - 14);
    }

    #[test]
    fn arp_and_errors() {
        let f = build("eth_src=02:00:00:00:00:01,arp_spa=203.0.113.1,arp_tpa=203.0.113.2");
        assert_eq!((&f[..6], &f[12..14], f.len()), (&[0xff; 6][..], &[0x08, 0x06][..], 42));
        let err = |s: &str| s.parse::<Flow>().and_then(|f| f.build(&Defaults::default())).unwrap_err().to_string();
        assert_eq!(err("bogus=1"), "bogus: unknown field (see `xgw trace --help`)");
        assert_eq!(err("inner_eth_src=02:00:00:00:00:01"), "inner_* fields need vni= (a Geneve frame)");
        assert_eq!(err("eth_src=02:00:00:00:00:01,ip_src=203.0.113.1"), "eth_dst: required");
        assert!(err(
            "vni=16777216,ip_src=198.51.100.2,ip_dst=198.51.100.1,eth_src=02:00:00:00:00:01,eth_dst=02:00:00:00:00:02"
        )
        .contains("out of range"));
    }
}
