//! Geneve encapsulation (RFC 8926) of a frame from a local port toward the
//! chassis that hosts its destination: push outer Ethernet / IP / UDP /
//! Geneve, plus OVN's option when the tunnel carries OVN metadata.
use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
};
use xgw_common::{
    counters::Drop,
    geneve::{self, FLAG_CRITICAL, OVN_OPT_LEN},
    maps::*,
    wire::*,
};

use crate::{
    csum,
    maps::UPLINK,
    parse::{ptr_at, ptr_at_mut},
};

/// The headers pushed in front of the inner frame. The OVN option's bytes
/// are written only when the tunnel carries it; without it the inner frame
/// starts where the option would.
#[repr(C)]
struct Outer<Ip> {
    eth: EthHdr,
    ip: Ip,
    udp: UdpHdr,
    geneve: [u8; geneve::HLEN],
    opt: [u8; OVN_OPT_LEN],
}

/// What both address families share around their IP header.
struct Common {
    nexthop: [u8; 6],
    src_mac: [u8; 6],
    sport: u16,
    udp_len: usize,
    gnv: [u8; geneve::HLEN],
    opt: Option<[u8; OVN_OPT_LEN]>,
}

impl<Ip> Outer<Ip> {
    /// Ethernet, UDP (checksum 0 for now), Geneve and the option if any.
    #[inline(always)]
    fn fill(&mut self, ether_type: u16, c: &Common) {
        self.eth.dst_addr = c.nexthop;
        self.eth.src_addr = c.src_mac;
        self.eth.ether_type = ether_type.to_be();
        self.udp.src = c.sport.to_be_bytes();
        self.udp.dst = GENEVE_PORT.to_be_bytes();
        self.udp.len = (c.udp_len as u16).to_be_bytes();
        self.udp.check = [0, 0];
        self.geneve = c.gnv;
        if let Some(opt) = c.opt {
            self.opt = opt;
        }
    }
}

/// Outer IPv4 as Open vSwitch sends it: DF set, TTL 64, ID 0 (RFC 6864
/// allows any ID on an atomic datagram).
const IP4_FLAGS_DF: u16 = 0x4000;
const OUTER_TTL: u8 = 64;

/// The frame is encapsulated in place; the caller redirects it to the uplink.
/// `dest` is the FDB entry of a remote binding (its remote key), `tunnel`
/// the tunnel it names.
#[inline(always)]
pub fn geneve(ctx: &XdpContext, port: &LocalPort, dest: &FdbEntry, tunnel: &Tunnel, len: usize) -> Result<(), Drop> {
    let up = UPLINK.get(0).ok_or(Drop::NoUnderlay)?;
    let (opts, flags) = if tunnel.flags & TUNNEL_OVN_METADATA != 0 { (OVN_OPT_LEN, FLAG_CRITICAL) } else { (0, 0) };
    // Everything after the outer IP header: UDP, Geneve, options, frame.
    let udp_len = UDP_HLEN + geneve::HLEN + opts + len;
    let hash = flow_hash(ctx);
    // RFC 8926 section 3.3: source port from the inner flow, in the dynamic
    // range, so the underlay's ECMP spreads flows but keeps each in order.
    let sport = (0xc000 | (hash & 0x3fff)) as u16;
    let common = Common {
        nexthop: tunnel.nexthop_mac,
        src_mac: up.mac,
        sport,
        udp_len,
        gnv: geneve::header(port.vni, opts, flags),
        opt: (opts != 0).then(|| geneve::ovn_option(port.port_key, dest.port_key)),
    };

    if tunnel.flags & TUNNEL_IPV6 == 0 {
        if up.flags & UPLINK_HAS_IP4 == 0 {
            return Err(Drop::NoUnderlay);
        }
        let ip_len = IPV4_HLEN_MIN + udp_len;
        if ip_len > up.mtu as usize {
            return Err(Drop::MtuExceeded);
        }
        push(ctx, ETH_HLEN + IPV4_HLEN_MIN + UDP_HLEN + geneve::HLEN + opts)?;
        let h = unsafe { &mut *ptr_at_mut::<Outer<Ipv4Hdr>>(ctx, 0).ok_or(Drop::NoHeadroom)? };
        // IPv4: a zero UDP checksum, as RFC 8926 section 3.3 allows and Open
        // vSwitch sends; the inner frame carries its own checksums.
        h.fill(ETH_P_IPV4, &common);
        let dst: [u8; 4] = [tunnel.remote[12], tunnel.remote[13], tunnel.remote[14], tunnel.remote[15]];
        let tot_len = (ip_len as u16).to_be_bytes();
        h.ip.vihl = 0x45;
        h.ip.tos = 0;
        h.ip.tot_len = tot_len;
        h.ip.id = [0, 0];
        h.ip.frags = IP4_FLAGS_DF.to_be_bytes();
        h.ip.ttl = OUTER_TTL;
        h.ip.proto = IPPROTO_UDP;
        h.ip.src_addr = up.ip4;
        h.ip.dst_addr = dst;
        // The header is 0x45 00 | len | 0 | DF | TTL proto | csum | src | dst.
        let mut sum = 0x4500 + IP4_FLAGS_DF as u32 + ((OUTER_TTL as u32) << 8 | IPPROTO_UDP as u32);
        sum += ip_len as u32;
        sum = csum::add_words(sum, &up.ip4);
        sum = csum::add_words(sum, &dst);
        h.ip.check = csum::finish(sum).to_be_bytes();
    } else {
        if up.flags & UPLINK_HAS_IP6 == 0 {
            return Err(Drop::NoUnderlay);
        }
        if IPV6_HLEN + udp_len > up.mtu as usize {
            return Err(Drop::MtuExceeded);
        }
        push(ctx, ETH_HLEN + IPV6_HLEN + UDP_HLEN + geneve::HLEN + opts)?;
        let h = unsafe { &mut *ptr_at_mut::<Outer<Ipv6Hdr>>(ctx, 0).ok_or(Drop::NoHeadroom)? };
        h.fill(ETH_P_IPV6, &common);
        // Flow label from the same hash (RFC 6438): ECMP on the IPv6 underlay.
        h.ip.vcf = (0x6000_0000 | (hash & 0x000f_ffff)).to_be_bytes();
        h.ip.payload_len = (udp_len as u16).to_be_bytes();
        h.ip.next_hdr = IPPROTO_UDP;
        h.ip.hop_limit = OUTER_TTL;
        h.ip.src_addr = up.ip6;
        h.ip.dst_addr = tunnel.remote;
        // IPv6: a real UDP checksum. RFC 6935 permits zero for tunnels, but
        // Linux (and so the Open vSwitch kernel datapath) drops zero-checksum
        // Geneve over IPv6 unless told otherwise.
        let mut sum = 0u32;
        sum = csum::add_words(sum, &up.ip6);
        sum = csum::add_words(sum, &tunnel.remote);
        sum += udp_len as u32 + IPPROTO_UDP as u32;
        let body = csum::sum_to_end(ctx, ETH_HLEN + IPV6_HLEN).ok_or(Drop::MtuExceeded)?;
        let c = csum::finish(sum + body);
        // Zero means "no checksum" in UDP: send its one's-complement twin.
        let c = if c == 0 { 0xffff } else { c };
        let udp = unsafe { &mut *ptr_at_mut::<UdpHdr>(ctx, ETH_HLEN + IPV6_HLEN).ok_or(Drop::NoHeadroom)? };
        udp.check = c.to_be_bytes();
    }
    Ok(())
}

#[inline(always)]
fn push(ctx: &XdpContext, bytes: usize) -> Result<(), Drop> {
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(bytes as i32)) } != 0 {
        return Err(Drop::NoHeadroom);
    }
    Ok(())
}

/// A hash of the inner flow: addresses, protocol and (for TCP and UDP
/// without IP options) ports; MAC addresses for anything else.
#[inline(always)]
fn flow_hash(ctx: &XdpContext) -> u32 {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else { return 0 };
    let eth = unsafe { &*eth };
    let mut h: u32 = match u16::from_be(eth.ether_type) {
        ETH_P_IPV4 => match ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN) {
            Some(ip) => {
                let ip = unsafe { &*ip };
                let mut h = u32::from_ne_bytes(ip.src_addr) ^ u32::from_ne_bytes(ip.dst_addr).rotate_left(16) ^ ip.proto as u32;
                if ip.vihl == 0x45 && (ip.proto == IPPROTO_TCP || ip.proto == IPPROTO_UDP) {
                    if let Some(p) = ptr_at::<[u8; 4]>(ctx, ETH_HLEN + IPV4_HLEN_MIN) {
                        h ^= u32::from_ne_bytes(unsafe { *p }).rotate_left(8);
                    }
                }
                h
            }
            None => 0,
        },
        ETH_P_IPV6 => match ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN) {
            Some(ip) => {
                let ip = unsafe { &*ip };
                let mut h = fold16(&ip.src_addr) ^ fold16(&ip.dst_addr).rotate_left(16) ^ ip.next_hdr as u32;
                if ip.next_hdr == IPPROTO_TCP || ip.next_hdr == IPPROTO_UDP {
                    if let Some(p) = ptr_at::<[u8; 4]>(ctx, ETH_HLEN + IPV6_HLEN) {
                        h ^= u32::from_ne_bytes(unsafe { *p }).rotate_left(8);
                    }
                }
                h
            }
            None => 0,
        },
        _ => {
            let d = eth.dst_addr;
            let s = eth.src_addr;
            u32::from_ne_bytes([d[2], d[3], d[4], d[5]]) ^ u32::from_ne_bytes([s[2], s[3], s[4], s[5]]).rotate_left(16)
        }
    };
    // murmur3's finalizer: every input bit reaches the low bits used above.
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[inline(always)]
fn fold16(a: &[u8; 16]) -> u32 {
    u32::from_ne_bytes([a[0], a[1], a[2], a[3]])
        ^ u32::from_ne_bytes([a[4], a[5], a[6], a[7]])
        ^ u32::from_ne_bytes([a[8], a[9], a[10], a[11]])
        ^ u32::from_ne_bytes([a[12], a[13], a[14], a[15]])
}
