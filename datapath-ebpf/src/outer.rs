//! The outer headers of a packet arriving on the uplink: is it Geneve
//! addressed to this gateway? Anything else belongs to the kernel stack.
use aya_ebpf::programs::XdpContext;
use network_types::{eth::EthHdr, ip::Ipv6Hdr, udp::UdpHdr};
use xgw_common::{
    maps::{Uplink, UPLINK_HAS_IP4, UPLINK_HAS_IP6},
    wire::*,
};

use crate::parse::{load, ptr_at};

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

/// The first word of an IPv4 header: version 4 and IHL 5 (no options) in
/// byte 0, and no fragment (MF clear, offset 0; DF allowed) in bytes 6-7.
const V4_VIHL_FRAGS_MASK: u64 = u64::from_le_bytes([0xff, 0, 0, 0, 0, 0, 0x3f, 0xff]);
const V4_VIHL_FRAGS: u64 = 0x45;

/// `None` means "not Geneve for this gateway": the caller passes it on.
/// Outer IPv4 options, IPv6 extension headers and fragments are left to the
/// stack too: Open vSwitch sends none of them.
#[inline(always)]
pub fn parse(ctx: &XdpContext, up: &Uplink) -> Option<Outer> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // Compared as it lies in the packet (big-endian): no byte swap.
    const IPV4: u16 = ETH_P_IPV4.to_be();
    const IPV6: u16 = ETH_P_IPV6.to_be();
    match unsafe { (*eth).ether_type } {
        IPV4 => {
            // IPv4 without options and UDP, 28 bytes read as three words
            // and a half, little-endian: a field is a byte range of a word.
            let p = ptr_at::<[u8; IPV4_HLEN_MIN + UDP_HLEN]>(ctx, ETH_HLEN)? as *const u8;
            let (w0, w1, w2, w3) =
                unsafe { (load::<u64>(p, 0), load::<u64>(p, 8), load::<u64>(p, 16), load::<u32>(p, 24)) };
            if up.flags & UPLINK_HAS_IP4 == 0
                || w0 & V4_VIHL_FRAGS_MASK != V4_VIHL_FRAGS
                || (w1 >> 8) as u8 != IPPROTO_UDP
                || w2 as u32 != u32::from_ne_bytes(up.ip4)
                || (w2 >> 48) as u16 != GENEVE_PORT.to_be()
            {
                return None;
            }
            Some(Outer {
                geneve: IPV4_GENEVE,
                // ipv4_mapped: the source address is the top half of w1.
                remote: [0, (w1 & 0xffff_ffff_0000_0000) | 0xffff_0000],
                ip_end: ETH_HLEN + u16::from_be((w0 >> 16) as u16) as usize,
                udp_end: ETH_HLEN + IPV4_HLEN_MIN + u16::from_be(w3 as u16) as usize,
            })
        }
        IPV6 => {
            let ip = unsafe { &*ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN)? };
            if up.flags & UPLINK_HAS_IP6 == 0
                || ip.vcf[0] >> 4 != 6
                || ip.next_hdr != IPPROTO_UDP
                || ip.dst_addr != up.ip6
            {
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
