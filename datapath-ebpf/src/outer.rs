//! The outer headers of a packet arriving on the uplink: is it Geneve
//! addressed to this gateway? Anything else belongs to the kernel stack.
use aya_ebpf::programs::XdpContext;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
};
use xgw_common::{
    maps::{Uplink, UPLINK_HAS_IP4, UPLINK_HAS_IP6},
    wire::*,
};

use crate::parse::ptr_at;

/// A Geneve packet for us: where its Geneve header starts, who sent it (as
/// the words of its 16-byte form, IPv4 mapped), and where its IP and UDP
/// headers claim the packet ends.
pub struct Outer {
    pub geneve: usize,
    pub remote: [u64; 2],
    pub ip_end: usize,
    pub udp_end: usize,
}

const IPV4_GENEVE: usize = ETH_HLEN + IPV4_HLEN_MIN + UDP_HLEN;
const IPV6_GENEVE: usize = ETH_HLEN + IPV6_HLEN + UDP_HLEN;

/// `None` means "not Geneve for this gateway": the caller passes it on.
/// Outer IPv4 options, IPv6 extension headers and fragments are left to the
/// stack too: Open vSwitch sends none of them.
#[inline(always)]
pub fn parse(ctx: &XdpContext, up: &Uplink) -> Option<Outer> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    match u16::from_be(unsafe { (*eth).ether_type }) {
        ETH_P_IPV4 => {
            let ip = unsafe { &*ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN)? };
            if up.flags & UPLINK_HAS_IP4 == 0
                || ip.vihl != 0x45
                || ip.proto != IPPROTO_UDP
                || ip.dst_addr != up.ip4
                || u16::from_be_bytes(ip.frags) & 0x3fff != 0
            {
                return None;
            }
            let udp_len = geneve_port(ctx, ETH_HLEN + IPV4_HLEN_MIN)?;
            Some(Outer {
                geneve: IPV4_GENEVE,
                remote: mapped(ip.src_addr),
                ip_end: ETH_HLEN + u16::from_be_bytes(ip.tot_len) as usize,
                udp_end: ETH_HLEN + IPV4_HLEN_MIN + udp_len,
            })
        }
        ETH_P_IPV6 => {
            let ip = unsafe { &*ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN)? };
            if up.flags & UPLINK_HAS_IP6 == 0 || ip.vcf[0] >> 4 != 6 || ip.next_hdr != IPPROTO_UDP || ip.dst_addr != up.ip6 {
                return None;
            }
            let udp_len = geneve_port(ctx, ETH_HLEN + IPV6_HLEN)?;
            Some(Outer {
                geneve: IPV6_GENEVE,
                remote: words(&ip.src_addr),
                ip_end: ETH_HLEN + IPV6_HLEN + u16::from_be_bytes(ip.payload_len) as usize,
                udp_end: ETH_HLEN + IPV6_HLEN + udp_len,
            })
        }
        _ => None,
    }
}

/// The UDP length if the datagram goes to the Geneve port.
#[inline(always)]
fn geneve_port(ctx: &XdpContext, udp: usize) -> Option<usize> {
    let udp = unsafe { &*ptr_at::<UdpHdr>(ctx, udp)? };
    (u16::from_be_bytes(udp.dst) == GENEVE_PORT).then_some(u16::from_be_bytes(udp.len) as usize)
}

// The remote address is built as two machine words, which the flow cache's
// key is made of: built byte by byte, LLVM kept sixteen bytes on the stack
// and shifted them back together for the key, some 60 instructions per
// packet.

/// `ipv4_mapped`, as words.
#[inline(always)]
fn mapped(ip: [u8; 4]) -> [u64; 2] {
    [0, 0xffff_0000 | (u32::from_ne_bytes(ip) as u64) << 32]
}

#[inline(always)]
fn words(ip: &[u8; 16]) -> [u64; 2] {
    let [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p] = *ip;
    [u64::from_ne_bytes([a, b, c, d, e, f, g, h]), u64::from_ne_bytes([i, j, k, l, m, n, o, p])]
}

impl Outer {
    /// The remote address as the maps' 16-byte fields hold it.
    #[inline(always)]
    pub fn remote_bytes(&self) -> [u8; 16] {
        unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(self.remote) }
    }
}
