//! Protocol classification for the packet probe: Ethernet (one optional VLAN
//! tag), then IPv4 / IPv6 / ARP, then the transport protocol.
use aya_ebpf::programs::XdpContext;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};
use xgw_common::{counters::Proto, wire::*};

use crate::parse::ptr_at;

/// ARP for IPv4 over Ethernet: 28 bytes after the Ethernet header.
const ARP_IPV4_LEN: usize = 28;
const VLAN_HLEN: usize = 4;

#[inline(always)]
pub fn classify(ctx: &XdpContext) -> Proto {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Proto::Malformed;
    };
    let mut ethertype = u16::from_be(unsafe { (*eth).ether_type });
    let mut off = ETH_HLEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        // The tag's second half carries the encapsulated EtherType.
        let Some(inner) = ptr_at::<[u8; VLAN_HLEN]>(ctx, off) else {
            return Proto::Malformed;
        };
        let inner = unsafe { *inner };
        ethertype = u16::from_be_bytes([inner[2], inner[3]]);
        off += VLAN_HLEN;
    }
    match ethertype {
        ETH_P_IPV4 => {
            let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, off) else {
                return Proto::Malformed;
            };
            let (vihl, proto) = unsafe { ((*ip).vihl, (*ip).proto) };
            if vihl >> 4 != 4 || vihl & 0x0f < 5 {
                return Proto::Malformed;
            }
            match proto {
                IPPROTO_ICMP => Proto::Ipv4Icmp,
                IPPROTO_TCP => Proto::Ipv4Tcp,
                IPPROTO_UDP => Proto::Ipv4Udp,
                _ => Proto::Ipv4Other,
            }
        }
        ETH_P_IPV6 => {
            let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, off) else {
                return Proto::Malformed;
            };
            let (vcf0, next) = unsafe { ((*ip).vcf[0], (*ip).next_hdr) };
            if vcf0 >> 4 != 6 {
                return Proto::Malformed;
            }
            match next {
                IPPROTO_ICMPV6 => Proto::Ipv6Icmp,
                IPPROTO_TCP => Proto::Ipv6Tcp,
                IPPROTO_UDP => Proto::Ipv6Udp,
                _ => Proto::Ipv6Other,
            }
        }
        ETH_P_ARP => {
            if ptr_at::<[u8; ARP_IPV4_LEN]>(ctx, off).is_none() {
                return Proto::Malformed;
            }
            Proto::Arp
        }
        _ => Proto::OtherEthertype,
    }
}
