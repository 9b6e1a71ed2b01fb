//! Geneve encapsulation (RFC 8926) of a frame from a local port toward the
//! chassis that hosts its destination: push outer Ethernet / IP / UDP /
//! Geneve, plus OVN's option when the tunnel carries OVN metadata.
//!
//! The outer headers toward a tunnel are the same for every frame but for
//! a few fields, so they are built once per tunnel, when its slot of
//! `ENCAP_OUTERS` is filled (`template`), and each frame copies them and
//! patches in its VNI, OVN port keys, UDP source port, lengths and checksum
//! (`geneve`).
use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
};
use xgw_common::{
    counters::Drop,
    geneve::{self, FLAG_CRITICAL, OPT_HLEN, OVN_OPT_LEN, OVN_PORT_KEY_MAX},
    maps::*,
    wire::*,
};

use crate::{
    csum, frame,
    maps::UPLINK,
    parse::{ptr_at, ptr_at_mut},
};

/// The outer headers as they lie in front of the inner frame. The OVN
/// option's bytes are sent only when the tunnel carries it; without it the
/// inner frame starts where the option would.
#[repr(C)]
struct Outer<Ip> {
    eth: EthHdr,
    ip: Ip,
    udp: UdpHdr,
    geneve: [u8; geneve::HLEN],
    opt: [u8; OVN_OPT_LEN],
}

/// Outer headers up to UDP: the part patched per frame.
#[repr(C)]
struct Head<Ip> {
    eth: EthHdr,
    ip: Ip,
    udp: UdpHdr,
}

const V4: usize = ETH_HLEN + IPV4_HLEN_MIN + UDP_HLEN + geneve::HLEN;
const V6: usize = ETH_HLEN + IPV6_HLEN + UDP_HLEN + geneve::HLEN;
const _: () = assert!(V6 + OVN_OPT_LEN <= OUTER_WORDS * 8);

/// Outer IPv4 as Open vSwitch sends it: DF set, TTL 64, ID 0 (RFC 6864
/// allows any ID on an atomic datagram).
const IP4_FLAGS_DF: u16 = 0x4000;
const OUTER_TTL: u8 = 64;

/// Fills the outer-header fields of `o`, the slot of `tunnel`, from UPLINK.
/// Runs on a miss only; the controller bumps GENERATION after writing
/// UPLINK, as after the other maps, so a slot never outlives the uplink it
/// was built from.
#[inline(always)]
pub fn template(o: &mut EncapOuter, tunnel: &Tunnel) {
    o.kind = OUTER_NO_UNDERLAY;
    let Some(up) = UPLINK.get(0) else { return };
    let (opts, flags) = if tunnel.flags & TUNNEL_OVN_METADATA != 0 { (OVN_OPT_LEN, FLAG_CRITICAL) } else { (0, 0) };
    let v6 = tunnel.flags & TUNNEL_IPV6 != 0;
    if up.flags & if v6 { UPLINK_HAS_IP6 } else { UPLINK_HAS_IP4 } == 0 {
        return;
    }
    let len = if v6 { V6 } else { V4 } + opts;
    // What the IP header's length counts besides the frame.
    let overhead = len - ETH_HLEN;
    o.max_frame = (up.mtu as usize).saturating_sub(overhead) as u32;
    o.outer_len = len as u32;
    // VNI and port keys zero: they are the frame's port's, written per frame.
    let gnv = geneve::header(0, opts, flags);
    let opt = geneve::ovn_option(0, 0);
    let outer = &mut o.outer as *mut [u64; OUTER_WORDS];
    if v6 {
        let h = unsafe { &mut *(outer as *mut Outer<Ipv6Hdr>) };
        fill(h, ETH_P_IPV6, tunnel.nexthop_mac, up.mac, gnv, opt);
        h.ip.vcf = 0x6000_0000u32.to_be_bytes();
        h.ip.payload_len = [0, 0];
        h.ip.next_hdr = IPPROTO_UDP;
        h.ip.hop_limit = OUTER_TTL;
        h.ip.src_addr = up.ip6;
        h.ip.dst_addr = tunnel.remote;
        // The UDP pseudo-header but for its length.
        let sum = csum::add_words(csum::add_words(IPPROTO_UDP as u32, &up.ip6), &tunnel.remote);
        o.ip_sum = sum;
        o.kind = OUTER_IPV6;
    } else {
        let h = unsafe { &mut *(outer as *mut Outer<Ipv4Hdr>) };
        fill(h, ETH_P_IPV4, tunnel.nexthop_mac, up.mac, gnv, opt);
        let dst: [u8; 4] = [tunnel.remote[12], tunnel.remote[13], tunnel.remote[14], tunnel.remote[15]];
        h.ip.vihl = 0x45;
        h.ip.tos = 0;
        h.ip.tot_len = [0, 0];
        h.ip.id = [0, 0];
        h.ip.frags = IP4_FLAGS_DF.to_be_bytes();
        h.ip.ttl = OUTER_TTL;
        h.ip.proto = IPPROTO_UDP;
        h.ip.check = [0, 0];
        h.ip.src_addr = up.ip4;
        h.ip.dst_addr = dst;
        // 0x45 00 | len | 0 | DF | TTL proto | csum | src | dst, but len.
        let sum = 0x4500 + IP4_FLAGS_DF as u32 + ((OUTER_TTL as u32) << 8 | IPPROTO_UDP as u32);
        o.ip_sum = csum::add_words(csum::add_words(sum, &up.ip4), &dst);
        o.kind = OUTER_IPV4;
    }
}

/// Writes the VNI into the Geneve header at `at` and, with OVN's option
/// (`with_opt`), the ingress and egress port keys into its data: the
/// fields of a tunnel's template that are the frame's port's. In 2-byte
/// stores: `at` is 2-aligned, and on the stack (a flood's headers) the
/// verifier wants every access aligned to its size.
///
/// # Safety
/// `at` must have `geneve::HLEN` bytes, and `OVN_OPT_LEN` more with `with_opt`.
#[inline(always)]
pub unsafe fn stamp(at: *mut u8, vni: u32, with_opt: bool, ingress: u16, egress: u16) {
    let put = |off: usize, v: u16| core::ptr::write_unaligned(at.add(off) as *mut [u8; 2], v.to_be_bytes());
    // VNI and the reserved byte: bytes 4-7 of the header.
    put(4, (vni >> 8) as u16);
    put(6, (vni as u16) << 8);
    if with_opt {
        put(geneve::HLEN + OPT_HLEN, ingress & OVN_PORT_KEY_MAX);
        put(geneve::HLEN + OPT_HLEN + 2, egress);
    }
}

/// Ethernet, UDP (source port, length and checksum zero until the frame's
/// own are known), Geneve and the option.
#[inline(always)]
fn fill<Ip>(
    h: &mut Outer<Ip>,
    ether_type: u16,
    nexthop: [u8; 6],
    src_mac: [u8; 6],
    gnv: [u8; geneve::HLEN],
    opt: [u8; OVN_OPT_LEN],
) {
    h.eth.dst_addr = nexthop;
    h.eth.src_addr = src_mac;
    h.eth.ether_type = ether_type.to_be();
    h.udp.src = [0, 0];
    h.udp.dst = GENEVE_PORT.to_be_bytes();
    h.udp.len = [0, 0];
    h.udp.check = [0, 0];
    h.geneve = gnv;
    h.opt = opt;
}

/// Encapsulates the frame of `f` (its port and destination) in place with
/// the tunnel's headers `o`; the caller redirects it to the uplink.
#[inline(always)]
pub fn geneve(ctx: &XdpContext, f: &EncapFlow, o: &EncapOuter, len: usize) -> Result<(), Drop> {
    let v6 = match o.kind {
        OUTER_IPV4 => false,
        OUTER_IPV6 => true,
        _ => return Err(Drop::NoUnderlay),
    };
    if len > o.max_frame as usize {
        return Err(Drop::MtuExceeded);
    }
    let hash = flow_hash(ctx);
    // RFC 8926 section 3.3: source port from the inner flow, in the dynamic
    // range, so the underlay's ECMP spreads flows but keeps each in order.
    let sport = (0xc000 | (hash >> 18)) as u16;
    let outer_len = o.outer_len as usize;
    push(ctx, outer_len)?;
    let with_opt = outer_len == if v6 { V6 } else { V4 } + OVN_OPT_LEN;
    let (vni, ingress, egress) = (f.port.vni, f.port.port_key, f.dest.port_key);
    if !v6 {
        // Copies of a constant size each: one load and store per word.
        let to = if with_opt { copy::<{ V4 + OVN_OPT_LEN }>(ctx, o) } else { copy::<V4>(ctx, o) }?;
        unsafe { stamp(to.add(V4 - geneve::HLEN), vni, with_opt, ingress, egress) };
        let h = unsafe { &mut *ptr_at_mut::<Head<Ipv4Hdr>>(ctx, 0).ok_or(Drop::NoHeadroom)? };
        let ip_len = outer_len - ETH_HLEN + len;
        h.ip.tot_len = (ip_len as u16).to_be_bytes();
        h.ip.check = csum::finish(o.ip_sum + ip_len as u32).to_be_bytes();
        h.udp.src = sport.to_be_bytes();
        // IPv4: a zero UDP checksum, as RFC 8926 section 3.3 allows and Open
        // vSwitch sends; the inner frame carries its own checksums.
        h.udp.len = ((ip_len - IPV4_HLEN_MIN) as u16).to_be_bytes();
    } else {
        let to = if with_opt { copy::<{ V6 + OVN_OPT_LEN }>(ctx, o) } else { copy::<V6>(ctx, o) }?;
        unsafe { stamp(to.add(V6 - geneve::HLEN), vni, with_opt, ingress, egress) };
        let h = unsafe { &mut *ptr_at_mut::<Head<Ipv6Hdr>>(ctx, 0).ok_or(Drop::NoHeadroom)? };
        let udp_len = outer_len - ETH_HLEN - IPV6_HLEN + len;
        // Flow label from the same hash (RFC 6438): ECMP on the IPv6 underlay.
        h.ip.vcf = (0x6000_0000 | (hash >> 12)).to_be_bytes();
        h.ip.payload_len = (udp_len as u16).to_be_bytes();
        h.udp.src = sport.to_be_bytes();
        h.udp.len = (udp_len as u16).to_be_bytes();
        // IPv6: a real UDP checksum. RFC 6935 permits zero for tunnels, but
        // Linux (and so the Open vSwitch kernel datapath) drops zero-checksum
        // Geneve over IPv6 unless told otherwise.
        let mut body = csum::sum_to_end(ctx, ETH_HLEN + IPV6_HLEN).ok_or(Drop::MtuExceeded)?;
        let linear = frame::linear(ctx);
        let total = outer_len + len;
        if total != linear {
            // Fragments: summed from the kernel's copy, at most
            // MAX_FRAME_IPV6 bytes of them; a byte-swapped sum if they start
            // at an odd offset of the datagram (RFC 1071 1.2(B)).
            let s = frame::sum_frags(ctx.ctx, linear as u32, total as u32).ok_or(Drop::Multibuffer)?;
            body += if (linear - ETH_HLEN - IPV6_HLEN) & 1 != 0 { (s as u16).swap_bytes() as u32 } else { s };
        }
        let c = csum::finish(o.ip_sum + udp_len as u32 + body);
        // Zero means "no checksum" in UDP: send its one's-complement twin.
        let c = if c == 0 { 0xffff } else { c };
        let udp = unsafe { &mut *ptr_at_mut::<UdpHdr>(ctx, ETH_HLEN + IPV6_HLEN).ok_or(Drop::NoHeadroom)? };
        udp.check = c.to_be_bytes();
    }
    Ok(())
}

/// The slot's first `N` outer bytes to the front of the packet, a word at a
/// time: as one `[u8; N]` assignment LLVM calls a byte-by-byte memcpy.
/// Returns where they went, `N` bytes checked against the packet's end.
#[inline(always)]
fn copy<const N: usize>(ctx: &XdpContext, o: &EncapOuter) -> Result<*mut u8, Drop> {
    let to = ptr_at_mut::<[u8; N]>(ctx, 0).ok_or(Drop::NoHeadroom)? as *mut u8;
    let from = o.outer.as_ptr() as *const u8;
    let mut i = 0;
    // SAFETY: `to` has N bytes (checked above), `from` OUTER_WORDS * 8 >= N;
    // the packet may be misaligned (see .cargo/config.toml), the slot not.
    unsafe {
        while i + 8 <= N {
            core::ptr::write_unaligned(to.add(i) as *mut u64, *(from.add(i) as *const u64));
            i += 8;
        }
        if i + 4 <= N {
            core::ptr::write_unaligned(to.add(i) as *mut u32, *(from.add(i) as *const u32));
            i += 4;
        }
        if i + 2 <= N {
            core::ptr::write_unaligned(to.add(i) as *mut u16, *(from.add(i) as *const u16));
        }
    }
    Ok(to)
}

#[inline(always)]
fn push(ctx: &XdpContext, bytes: usize) -> Result<(), Drop> {
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(bytes as i32)) } != 0 {
        return Err(Drop::NoHeadroom);
    }
    Ok(())
}

/// A hash of the inner flow: addresses, protocol and (for TCP and UDP
/// without IP options) ports; MAC addresses for anything else. The callers
/// use the top bits of one multiply, which every lower input bit reaches;
/// folding the high half down first lets the high input bits reach them
/// too.
#[inline(always)]
fn flow_hash(ctx: &XdpContext) -> u32 {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else { return 0 };
    let eth = unsafe { &*eth };
    let h: u32 = match u16::from_be(eth.ether_type) {
        ETH_P_IPV4 => match ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN) {
            Some(ip) => {
                let ip = unsafe { &*ip };
                let mut h =
                    u32::from_ne_bytes(ip.src_addr) ^ u32::from_ne_bytes(ip.dst_addr).rotate_left(16) ^ ip.proto as u32;
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
    (h ^ (h >> 16)).wrapping_mul(0x9e37_79b1)
}

#[inline(always)]
fn fold16(a: &[u8; 16]) -> u32 {
    u32::from_ne_bytes([a[0], a[1], a[2], a[3]])
        ^ u32::from_ne_bytes([a[4], a[5], a[6], a[7]])
        ^ u32::from_ne_bytes([a[8], a[9], a[10], a[11]])
        ^ u32::from_ne_bytes([a[12], a[13], a[14], a[15]])
}
