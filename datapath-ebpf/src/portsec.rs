//! Port security (OVN's `port_security`): what a VM may send. A frame from
//! a local port must come from a MAC the port lists; for a MAC listed with
//! IP addresses, its IPv4 and IPv6 sources must be among them, and so must
//! the addresses its ARP and neighbour advertisements claim. As OVN also
//! allows: a DHCP discover from 0.0.0.0, the IPv6 link-local address made
//! from the MAC, and duplicate address detection and MLD from `::`.
//!
//! The port's own MAC and IP come with its `LocalPort` (`PORTSEC_*`), so
//! the usual frame is settled by a few compares; only other addresses read
//! the port's `PORT_SECURITY` entry.
use aya_ebpf::{cty::c_void, helpers::bpf_loop, programs::XdpContext};
use xgw_common::{counters::Drop, maps::*, wire::*};

use crate::{maps::PORT_SECURITY, parse::read};

/// What the port's list says of a source MAC, and of one address.
#[derive(Default)]
struct Listed {
    mac: bool,
    restricted: bool,
    ip: bool,
}

const ICMPV6_MLD_REPORT: u8 = 131;
const ICMPV6_NS: u8 = 135;
const ICMPV6_NA: u8 = 136;
const ICMPV6_MLD2_REPORT: u8 = 143;
const IPPROTO_HOPOPTS: u8 = 0;
const ND_OPT_SOURCE_LLADDR: u8 = 1;
const ND_OPT_TARGET_LLADDR: u8 = 2;

/// `Ok` if the frame may leave port `port`; the caller has seen its
/// Ethernet header.
#[inline(always)]
pub fn check(ctx: &XdpContext, port: &LocalPort) -> Result<(), Drop> {
    // Source MAC and EtherType as one word: bytes 6..14.
    let w = read::<u64>(ctx, 6).ok_or(Drop::Runt)?;
    let src = w & 0xffff_ffff_ffff;
    let own = src == mac_word(&port.mac);
    let mut restricted = port.sec & PORTSEC_RESTRICTED != 0;
    if !own {
        if port.sec & PORTSEC_OTHER_MACS == 0 {
            return Err(Drop::PortSecurityMac);
        }
        let l = scan(port.ofport, src, None);
        if !l.mac {
            return Err(Drop::PortSecurityMac);
        }
        restricted = l.restricted;
    }
    let sec = Sec { port, src, own };
    const IPV4: u16 = ETH_P_IPV4.to_be();
    const IPV6: u16 = ETH_P_IPV6.to_be();
    const ARP: u16 = ETH_P_ARP.to_be();
    match (w >> 48) as u16 {
        IPV4 if restricted => ipv4(ctx, &sec),
        IPV6 => ipv6(ctx, &sec, restricted),
        ARP => arp(ctx, &sec, restricted),
        _ => Ok(()),
    }
}

/// The port and the frame's source MAC (`own`: the port's own).
struct Sec<'a> {
    port: &'a LocalPort,
    src: u64,
    own: bool,
}

impl Sec<'_> {
    /// Whether the source MAC may send from `ip` (16-byte form).
    #[inline(always)]
    fn allows(&self, ip: [u64; 2]) -> bool {
        let p = self.port;
        if self.own && p.sec & PORTSEC_HAS_IP != 0 && ip == words(&p.ip) {
            return true;
        }
        if self.own && p.sec & PORTSEC_MORE_IPS == 0 {
            return false;
        }
        scan(p.ofport, self.src, Some(ip)).ip
    }
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, s: &Sec) -> Result<(), Drop> {
    // Version/IHL .. protocol, checksum and source, destination.
    let h = read::<[u64; 2]>(ctx, ETH_HLEN).ok_or(Drop::PortSecurityIp)?;
    let dst = read::<u32>(ctx, ETH_HLEN + 16).ok_or(Drop::PortSecurityIp)?;
    let ip_src = (h[1] >> 32) as u32;
    if s.allows(mapped(ip_src)) {
        return Ok(());
    }
    // DHCP discover: 0.0.0.0:68 -> 255.255.255.255:67 over UDP, no options.
    if ip_src == 0 && dst == u32::MAX && h[0] as u8 == 0x45 && (h[1] >> 8) as u8 == IPPROTO_UDP {
        let ports = read::<u32>(ctx, ETH_HLEN + IPV4_HLEN_MIN).ok_or(Drop::PortSecurityIp)?;
        if ports == u32::from_ne_bytes([0, 68, 0, 67]) {
            return Ok(());
        }
    }
    Err(Drop::PortSecurityIp)
}

#[inline(always)]
fn arp(ctx: &XdpContext, s: &Sec, restricted: bool) -> Result<(), Drop> {
    // Ethernet/IPv4 ARP: sender MAC at 8, sender IP at 14 of the message.
    let sha = read::<u64>(ctx, ETH_HLEN + 8).ok_or(Drop::PortSecurityArpNd)? & 0xffff_ffff_ffff;
    let spa = read::<u32>(ctx, ETH_HLEN + 14).ok_or(Drop::PortSecurityArpNd)?;
    if sha != s.src {
        return Err(Drop::PortSecurityArpNd);
    }
    // A probe (RFC 5227) from 0.0.0.0 claims no address.
    if restricted && spa != 0 && !s.allows(mapped(spa)) {
        return Err(Drop::PortSecurityArpNd);
    }
    Ok(())
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, s: &Sec, restricted: bool) -> Result<(), Drop> {
    let h = read::<[u64; 4]>(ctx, ETH_HLEN + 8).ok_or(Drop::PortSecurityIp)?;
    let (src, dst) = ([h[0], h[1]], [h[2], h[3]]);
    let hdr = read::<[u8; 8]>(ctx, ETH_HLEN).ok_or(Drop::PortSecurityIp)?;
    let (next, hops) = (hdr[6], hdr[7]);
    // ICMPv6 right after the header, or after one hop-by-hop header (MLD
    // reports carry a router alert there).
    let icmp = match next {
        IPPROTO_ICMPV6 => Some(ETH_HLEN + IPV6_HLEN),
        IPPROTO_HOPOPTS => match read::<[u8; 2]>(ctx, ETH_HLEN + IPV6_HLEN) {
            Some([IPPROTO_ICMPV6, len]) => Some(ETH_HLEN + IPV6_HLEN + (len as usize + 1) * 8),
            _ => None,
        },
        _ => None,
    };
    let icmp_type = match icmp {
        Some(off) => read::<u8>(ctx, off),
        None => None,
    };
    // Neighbour discovery (RFC 4861: hop limit 255, no extension header):
    // the link-layer address it announces must be the sender's, and an
    // advertisement's target an address it may claim.
    if next == IPPROTO_ICMPV6 && hops == 255 && matches!(icmp_type, Some(ICMPV6_NS | ICMPV6_NA)) {
        nd(ctx, s, restricted, icmp_type == Some(ICMPV6_NA))?;
    }
    if !restricted || src == link_local(s.src) || s.allows(src) {
        return Ok(());
    }
    // Duplicate address detection and MLD from the unspecified address, to
    // a link-scope multicast group (ff02::/16).
    let to_link_multicast = dst[0] as u16 == u16::from_ne_bytes([0xff, 0x02]);
    if src == [0, 0]
        && to_link_multicast
        && matches!(icmp_type, Some(ICMPV6_NS | ICMPV6_MLD_REPORT | ICMPV6_MLD2_REPORT))
    {
        return Ok(());
    }
    Err(Drop::PortSecurityIp)
}

/// A solicitation or advertisement: its first option, if it is the
/// link-layer address one, must name the sender's MAC.
#[inline(always)]
fn nd(ctx: &XdpContext, s: &Sec, restricted: bool, advert: bool) -> Result<(), Drop> {
    const MSG: usize = ETH_HLEN + IPV6_HLEN;
    if advert && restricted {
        let target = read::<[u64; 2]>(ctx, MSG + 8).ok_or(Drop::PortSecurityArpNd)?;
        if target != link_local(s.src) && !s.allows(target) {
            return Err(Drop::PortSecurityArpNd);
        }
    }
    let want = if advert { ND_OPT_TARGET_LLADDR } else { ND_OPT_SOURCE_LLADDR };
    if let Some(opt) = read::<u64>(ctx, MSG + 24) {
        if opt as u8 == want && (opt >> 8) as u8 == 1 && opt >> 16 != s.src {
            return Err(Drop::PortSecurityArpNd);
        }
    }
    Ok(())
}

/// The rows of port `ofport`'s list about MAC `src`, and whether one lists
/// `ip`. An entry the controller has not written lists nothing. The rows
/// are walked by `bpf_loop`, so the verifier checks the row once, not once
/// per row at every place a frame may need the list.
#[inline(always)]
fn scan(ofport: u16, src: u64, ip: Option<[u64; 2]>) -> Listed {
    let Some(rec) = (unsafe { PORT_SECURITY.get(&(ofport as u32)) }) else {
        return Listed::default();
    };
    let mut s = Scan { rec, src, want: ip.unwrap_or([u64::MAX; 2]), check_ip: ip.is_some() as u32, found: 0 };
    let rows = rec.count.min(PORT_SECURITY_ROWS as u32);
    unsafe { bpf_loop(rows, scan_row as *mut c_void, &mut s as *mut Scan as *mut c_void, 0) };
    Listed { mac: s.found & FOUND_MAC != 0, restricted: s.found & FOUND_RESTRICTED != 0, ip: s.found & FOUND_IP != 0 }
}

/// `scan`'s loop state, on its stack.
#[repr(C)]
struct Scan {
    rec: *const PortSecurity,
    src: u64,
    want: [u64; 2],
    check_ip: u32,
    /// `FOUND_*`, one word: fields set together would be merged into one
    /// store the verifier finds misaligned on the stack.
    found: u32,
}

const FOUND_MAC: u32 = 1;
const FOUND_RESTRICTED: u32 = 2;
const FOUND_IP: u32 = 4;

#[inline(never)]
extern "C" fn scan_row(i: u64, cx: *mut c_void) -> i64 {
    let s = unsafe { &mut *(cx as *mut Scan) };
    let rows = unsafe { &(*s.rec).rows };
    let Some(row) = rows.get(i as usize) else { return 1 };
    if mac_word(&row.mac) != s.src {
        return 0;
    }
    s.found |= match row.kind {
        PS_ROW_MAC => FOUND_MAC,
        PS_ROW_MAC_RESTRICTED => FOUND_MAC | FOUND_RESTRICTED,
        PS_ROW_IP if s.check_ip != 0 && words(&row.ip) == s.want => FOUND_IP,
        _ => 0,
    };
    0
}

/// A MAC as the low 48 bits of a little-endian word, as `check` reads it.
#[inline(always)]
fn mac_word(m: &[u8; 6]) -> u64 {
    u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0])
}

#[inline(always)]
fn words(ip: &[u8; 16]) -> [u64; 2] {
    unsafe { core::mem::transmute::<[u8; 16], [u64; 2]>(*ip) }
}

/// An IPv4 address as it lies in the packet, in the maps' 16-byte form.
#[inline(always)]
fn mapped(ip: u32) -> [u64; 2] {
    [0, 0xffff_0000 | (ip as u64) << 32]
}

/// fe80::/64 with the modified EUI-64 of `mac` (RFC 4291 appendix A).
#[inline(always)]
fn link_local(mac: u64) -> [u64; 2] {
    let m = mac.to_le_bytes();
    [
        u64::from_le_bytes([0xfe, 0x80, 0, 0, 0, 0, 0, 0]),
        u64::from_le_bytes([m[0] ^ 2, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]),
    ]
}
