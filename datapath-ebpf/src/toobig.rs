//! A frame too big for the tunnel is answered, not silently lost: ICMP
//! fragmentation-needed (RFC 792 / RFC 1191) for IPv4 with DF set, ICMPv6
//! packet-too-big (RFC 4443 / RFC 8201) for IPv6, sent back to the VM so its
//! path MTU discovery shrinks the flow. As Linux does for bridged tunnels,
//! the error comes from the original destination (there is no router in a
//! logical switch), with the Ethernet addresses swapped.
use aya_ebpf::{
    helpers::{bpf_csum_diff, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};
use xgw_common::wire::*;

use crate::{
    csum,
    parse::{ptr_at, ptr_at_mut},
};

/// Bytes of the offending packet quoted back: its headers and then some,
/// within the 576 bytes every IPv4 host accepts, and one csum_diff call.
const QUOTE: usize = 512;
const ICMP_HLEN: usize = 8;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMPV6_PKT_TOOBIG: u8 = 2;
/// ICMPv6 types below this are errors: never answer an error with one.
const ICMPV6_INFO_MIN: u8 = 128;
const ICMP_ECHOREPLY: u8 = 0;
const ICMP_ECHO: u8 = 8;

#[repr(C)]
struct Reply4 {
    eth: EthHdr,
    ip: Ipv4Hdr,
    icmp: [u8; ICMP_HLEN],
    quote: [u8; QUOTE],
}

#[repr(C)]
struct Reply6 {
    eth: EthHdr,
    ip: Ipv6Hdr,
    icmp: [u8; ICMP_HLEN],
    quote: [u8; QUOTE],
}

/// Rewrites the frame into the ICMP error for it; `true` if the caller
/// should send it back out of the ingress port. `max_frame` is the longest
/// inner frame the tunnel carries (`EncapOuter::max_frame`); `len` is the
/// whole frame's (fragments included): they are cut off too.
#[inline(always)]
pub fn reply(ctx: &XdpContext, max_frame: u32, len: usize) -> bool {
    // The largest inner IP packet.
    let Some(mtu) = max_frame.checked_sub(ETH_HLEN as u32) else { return false };
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else { return false };
    let eth = unsafe { &*eth };
    let (src_mac, dst_mac) = (eth.src_addr, eth.dst_addr);
    match u16::from_be(eth.ether_type) {
        ETH_P_IPV4 => reply4(ctx, src_mac, dst_mac, mtu, len),
        ETH_P_IPV6 => reply6(ctx, src_mac, dst_mac, mtu, len),
        _ => false,
    }
}

/// Cuts the frame to its Ethernet header plus `QUOTE` bytes, then makes
/// room in front for the new IP and ICMP headers.
#[inline(always)]
fn reshape(ctx: &XdpContext, ip_hlen: usize, len: usize) -> bool {
    if len < ETH_HLEN + QUOTE {
        return false;
    }
    // Relative to the whole frame: the kernel drops fragments first.
    let cut = (ETH_HLEN + QUOTE) as i32 - len as i32;
    unsafe {
        bpf_xdp_adjust_tail(ctx.ctx, cut) == 0 && bpf_xdp_adjust_head(ctx.ctx, -((ip_hlen + ICMP_HLEN) as i32)) == 0
    }
}

#[inline(always)]
fn quote_sum(q: &mut [u8; QUOTE]) -> u32 {
    let s = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, q as *mut _ as *mut u32, QUOTE as u32, 0) };
    csum::network_order(s as u64)
}

#[inline(always)]
fn reply4(ctx: &XdpContext, src_mac: [u8; 6], dst_mac: [u8; 6], mtu: u32, len: usize) -> bool {
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN) else { return false };
    let ip = unsafe { &*ip };
    // Without DF the sender allows fragmentation, which a tunnel endpoint in
    // XDP cannot do: that frame is only counted.
    if u16::from_be_bytes(ip.frags) & 0x4000 == 0 {
        return false;
    }
    let (src, dst) = (ip.src_addr, ip.dst_addr);
    if ip.proto == IPPROTO_ICMP {
        // RFC 1122 3.2.2: no ICMP error about an ICMP error.
        let ihl = (ip.vihl & 0x0f) as usize * 4;
        // Type and code: a one-byte read lets LLVM turn the bounds check
        // into `p >= end`, from which the verifier learns no range.
        let Some(t) = ptr_at::<[u8; 2]>(ctx, ETH_HLEN + (ihl & 0x3c)) else { return false };
        let t = unsafe { (*t)[0] };
        if t != ICMP_ECHO && t != ICMP_ECHOREPLY {
            return false;
        }
    }
    if !reshape(ctx, IPV4_HLEN_MIN, len) {
        return false;
    }
    let Some(r) = ptr_at_mut::<Reply4>(ctx, 0) else { return false };
    let r = unsafe { &mut *r };
    r.eth.dst_addr = src_mac;
    r.eth.src_addr = dst_mac;
    r.eth.ether_type = ETH_P_IPV4.to_be();
    let tot_len = (IPV4_HLEN_MIN + ICMP_HLEN + QUOTE) as u16;
    r.ip.vihl = 0x45;
    r.ip.tos = 0;
    r.ip.tot_len = tot_len.to_be_bytes();
    r.ip.id = [0, 0];
    r.ip.frags = [0, 0];
    r.ip.ttl = 64;
    r.ip.proto = IPPROTO_ICMP;
    r.ip.src_addr = dst;
    r.ip.dst_addr = src;
    let mut sum = 0x4500 + tot_len as u32 + (64 << 8 | IPPROTO_ICMP as u32);
    sum = csum::add_words(sum, &dst);
    sum = csum::add_words(sum, &src);
    r.ip.check = csum::finish(sum).to_be_bytes();
    let m = (mtu as u16).to_be_bytes();
    r.icmp = [ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, 0, 0, 0, 0, m[0], m[1]];
    let sum = csum::add_words(quote_sum(&mut r.quote), &r.icmp);
    let c = csum::finish(sum).to_be_bytes();
    r.icmp[2] = c[0];
    r.icmp[3] = c[1];
    true
}

#[inline(always)]
fn reply6(ctx: &XdpContext, src_mac: [u8; 6], dst_mac: [u8; 6], mtu: u32, len: usize) -> bool {
    let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN) else { return false };
    let ip = unsafe { &*ip };
    let (src, dst) = (ip.src_addr, ip.dst_addr);
    if ip.next_hdr == IPPROTO_ICMPV6 {
        let Some(t) = ptr_at::<[u8; 2]>(ctx, ETH_HLEN + IPV6_HLEN) else { return false };
        if unsafe { (*t)[0] } < ICMPV6_INFO_MIN {
            return false;
        }
    }
    if !reshape(ctx, IPV6_HLEN, len) {
        return false;
    }
    let Some(r) = ptr_at_mut::<Reply6>(ctx, 0) else { return false };
    let r = unsafe { &mut *r };
    r.eth.dst_addr = src_mac;
    r.eth.src_addr = dst_mac;
    r.eth.ether_type = ETH_P_IPV6.to_be();
    let plen = (ICMP_HLEN + QUOTE) as u16;
    r.ip.vcf = [0x60, 0, 0, 0];
    r.ip.payload_len = plen.to_be_bytes();
    r.ip.next_hdr = IPPROTO_ICMPV6;
    r.ip.hop_limit = 64;
    r.ip.src_addr = dst;
    r.ip.dst_addr = src;
    // RFC 8201: never advertise less than the IPv6 minimum link MTU.
    let m = mtu.max(1280).to_be_bytes();
    r.icmp = [ICMPV6_PKT_TOOBIG, 0, 0, 0, m[0], m[1], m[2], m[3]];
    let mut sum = csum::add_words(quote_sum(&mut r.quote), &r.icmp);
    sum = csum::add_words(sum, &dst);
    sum = csum::add_words(sum, &src);
    sum += plen as u32 + IPPROTO_ICMPV6 as u32;
    let c = csum::finish(sum).to_be_bytes();
    r.icmp[2] = c[0];
    r.icmp[3] = c[1];
    true
}
