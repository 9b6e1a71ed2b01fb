//! ARP (RFC 826) and IPv6 neighbour discovery (RFC 4861) answered in XDP for
//! every bound address, local or remote: hosts resolve each other without a
//! single broadcast leaving the gateway. The request is rewritten in place
//! into the reply and sent back out of the port it came in on.
use aya_ebpf::{helpers::bpf_xdp_adjust_tail, programs::XdpContext};
use network_types::{eth::EthHdr, ip::Ipv6Hdr};
use xgw_common::{
    counters::Reply,
    maps::{ipv4_mapped, LocalPort, NeighKey},
    wire::*,
};

use crate::{
    csum,
    maps::NEIGH,
    parse::{ptr_at, ptr_at_mut},
};

/// ARP for IPv4 over Ethernet, after the Ethernet header.
#[repr(C)]
struct Arp {
    htype: [u8; 2],
    ptype: [u8; 2],
    hlen: u8,
    plen: u8,
    op: [u8; 2],
    sha: [u8; 6],
    spa: [u8; 4],
    tha: [u8; 6],
    tpa: [u8; 4],
}

const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

/// A neighbour solicitation or advertisement with one link-layer address
/// option: exactly the advertisement this responder sends.
#[repr(C)]
struct NdFrame {
    eth: EthHdr,
    ip: Ipv6Hdr,
    icmp_type: u8,
    code: u8,
    check: [u8; 2],
    flags: [u8; 4],
    target: [u8; 16],
    opt_type: u8,
    opt_len: u8,
    lladdr: [u8; 6],
}

const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;
const ND_OPT_TARGET_LLADDR: u8 = 2;
/// Solicited and Override: the answer is authoritative (not a router).
const NA_FLAGS: [u8; 4] = [0x60, 0, 0, 0];
const NA_LEN: usize = 32;

/// Answers an ARP request or neighbour solicitation for an address bound in
/// the port's VNI. `None`: not such a request, or nothing to answer.
#[inline(always)]
pub fn answer(ctx: &XdpContext, port: &LocalPort) -> Option<Reply> {
    let eth = unsafe { &*ptr_at::<EthHdr>(ctx, 0)? };
    match u16::from_be(eth.ether_type) {
        ETH_P_ARP => arp(ctx, port.vni).then_some(Reply::Arp),
        ETH_P_IPV6 => nd(ctx, port.vni).then_some(Reply::Nd),
        _ => None,
    }
}

#[inline(always)]
fn arp(ctx: &XdpContext, vni: u32) -> bool {
    let Some(a) = ptr_at_mut::<Arp>(ctx, ETH_HLEN) else { return false };
    let a = unsafe { &mut *a };
    if u16::from_be_bytes(a.htype) != 1
        || u16::from_be_bytes(a.ptype) != ETH_P_IPV4
        || a.hlen != 6
        || a.plen != 4
        || u16::from_be_bytes(a.op) != ARP_REQUEST
    {
        return false;
    }
    let Some(n) = (unsafe { NEIGH.get(&NeighKey { vni, ip: ipv4_mapped(a.tpa) }) }) else { return false };
    // A host probing or announcing its own address (RFC 5227) must hear
    // silence, or it would think the address is taken.
    if n.mac == a.sha || a.spa == a.tpa {
        return false;
    }
    let mac = n.mac;
    let asker_mac = a.sha;
    let asker_ip = a.spa;
    a.op = ARP_REPLY.to_be_bytes();
    a.tha = asker_mac;
    a.spa = a.tpa;
    a.tpa = asker_ip;
    a.sha = mac;
    let Some(eth) = ptr_at_mut::<EthHdr>(ctx, 0) else { return false };
    let eth = unsafe { &mut *eth };
    eth.dst_addr = asker_mac;
    eth.src_addr = mac;
    true
}

#[inline(always)]
fn nd(ctx: &XdpContext, vni: u32) -> bool {
    // The smallest solicitation: no options; the reply adds one.
    const NS_MIN: usize = ETH_HLEN + IPV6_HLEN + 24;
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else { return false };
    let asker_mac = unsafe { (*eth).src_addr };
    let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN) else { return false };
    let ip = unsafe { &*ip };
    // RFC 4861 section 7.1.1: hop limit 255 proves the sender is on-link.
    if ip.vcf[0] >> 4 != 6 || ip.next_hdr != IPPROTO_ICMPV6 || ip.hop_limit != 255 {
        return false;
    }
    // A solicitation cut short is not one.
    let len = ctx.data_end() - ctx.data();
    if ETH_HLEN + IPV6_HLEN + u16::from_be_bytes(ip.payload_len) as usize > len {
        return false;
    }
    let Some(ns) = ptr_at::<[u8; 24]>(ctx, ETH_HLEN + IPV6_HLEN) else { return false };
    let ns = unsafe { *ns };
    if ns[0] != ND_NEIGHBOR_SOLICIT || ns[1] != 0 {
        return false;
    }
    let src = ip.src_addr;
    // Duplicate address detection comes from the unspecified address: the
    // asker is checking its own address, which must look free.
    if src == [0; 16] {
        return false;
    }
    let mut target = [0u8; 16];
    target.copy_from_slice(&ns[8..24]);
    let Some(n) = (unsafe { NEIGH.get(&NeighKey { vni, ip: target }) }) else { return false };
    let mac = n.mac;
    if mac == asker_mac {
        return false;
    }
    // Make the frame exactly one advertisement long.
    let want = ETH_HLEN + IPV6_HLEN + NA_LEN;
    if len < NS_MIN || unsafe { bpf_xdp_adjust_tail(ctx.ctx, want as i32 - len as i32) } != 0 {
        return false;
    }
    let Some(f) = ptr_at_mut::<NdFrame>(ctx, 0) else { return false };
    let f = unsafe { &mut *f };
    f.eth.dst_addr = asker_mac;
    f.eth.src_addr = mac;
    f.ip.vcf = [0x60, 0, 0, 0];
    f.ip.payload_len = (NA_LEN as u16).to_be_bytes();
    f.ip.next_hdr = IPPROTO_ICMPV6;
    f.ip.hop_limit = 255;
    f.ip.src_addr = target;
    f.ip.dst_addr = src;
    f.icmp_type = ND_NEIGHBOR_ADVERT;
    f.code = 0;
    f.check = [0, 0];
    f.flags = NA_FLAGS;
    f.target = target;
    f.opt_type = ND_OPT_TARGET_LLADDR;
    f.opt_len = 1;
    f.lladdr = mac;
    // ICMPv6 checksum: pseudo-header (RFC 8200 section 8.1), then the message.
    let mut sum = csum::add_words(0, &target);
    sum = csum::add_words(sum, &src);
    sum += NA_LEN as u32 + IPPROTO_ICMPV6 as u32;
    sum += (ND_NEIGHBOR_ADVERT as u32) << 8;
    sum = csum::add_words(sum, &NA_FLAGS);
    sum = csum::add_words(sum, &target);
    sum += (ND_OPT_TARGET_LLADDR as u32) << 8 | 1;
    sum = csum::add_words(sum, &mac);
    f.check = csum::finish(sum).to_be_bytes();
    true
}
