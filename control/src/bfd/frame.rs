//! The frames the engine sends: BFD inside Geneve exactly as Open vSwitch's
//! `lib/bfd.c` and its tunnel code put it on the wire (checked byte for byte
//! against a capture below), and nothing else: single-hop packets go through
//! a kernel UDP socket.
use std::net::IpAddr;

use xgw_common::{
    bfd::{self, Control},
    geneve,
    wire::{ETH_P_IPV4, ETH_P_IPV6, GENEVE_PORT, IPPROTO_UDP},
};

/// One tunnel's addressing, as the engine sends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeneveHeaders {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub local_ip: IpAddr,
    pub remote_ip: IpAddr,
    pub vni: u32,
    /// Outer UDP source port; OVS derives it from the inner flow, constant
    /// for a session.
    pub sport: u16,
    /// Inner source MAC (OVS uses a random one per start; any is accepted).
    pub inner_src_mac: [u8; 6],
    /// Inner UDP source port: 49152, as OVS.
    pub inner_sport: u16,
}

fn csum_fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn csum_add(sum: u32, b: &[u8]) -> u32 {
    b.chunks(2).fold(sum, |s, c| s + u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
}

fn ipv4_header(out: &mut Vec<u8>, tos: u8, total: usize, flags_frag: u16, ttl: u8, src: [u8; 4], dst: [u8; 4]) {
    let start = out.len();
    out.extend_from_slice(&[0x45, tos]);
    out.extend_from_slice(&(total as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&flags_frag.to_be_bytes());
    out.extend_from_slice(&[ttl, IPPROTO_UDP, 0, 0]);
    out.extend_from_slice(&src);
    out.extend_from_slice(&dst);
    let c = csum_fold(csum_add(0, &out[start..start + 20]));
    out[start + 10..start + 12].copy_from_slice(&c.to_be_bytes());
}

/// The inner frame: Ethernet to OVS's BFD MAC, IPv4 169.254.1.1 ->
/// 169.254.1.0, TOS 0xc0, TTL 255, no DF, ID 0, UDP 49152 -> 3784 with
/// checksum 0, the control packet.
pub fn inner_frame(src_mac: [u8; 6], sport: u16, c: &Control) -> Vec<u8> {
    let mut f = Vec::with_capacity(66);
    f.extend_from_slice(&bfd::ovs::DST_MAC);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
    ipv4_header(&mut f, bfd::ovs::TOS, 20 + 8 + bfd::LEN, 0, bfd::TTL, bfd::ovs::SRC_IP, bfd::ovs::DST_IP);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&bfd::CONTROL_PORT.to_be_bytes());
    f.extend_from_slice(&((8 + bfd::LEN) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&c.encode());
    f
}

/// The whole frame for the uplink: outer IPv4 as OVS sends it (DF, TTL 64,
/// ID 0, UDP checksum 0) or IPv6 (hop limit 64, full UDP checksum, which
/// Linux requires over IPv6); Geneve with no options and the O bit clear.
pub fn geneve_frame(h: &GeneveHeaders, c: &Control) -> Vec<u8> {
    let inner = inner_frame(h.inner_src_mac, h.inner_sport, c);
    let udp_len = 8 + geneve::HLEN + inner.len();
    let mut f = Vec::with_capacity(14 + 40 + udp_len);
    f.extend_from_slice(&h.dst_mac);
    f.extend_from_slice(&h.src_mac);
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&h.sport.to_be_bytes());
    udp.extend_from_slice(&GENEVE_PORT.to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&geneve::header(h.vni, 0, 0));
    udp.extend_from_slice(&inner);
    match (h.local_ip, h.remote_ip) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            f.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
            ipv4_header(&mut f, 0, 20 + udp_len, 0x4000, 64, src.octets(), dst.octets());
        }
        (src, dst) => {
            let (src, dst) = (v6(src), v6(dst));
            f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(udp_len as u16).to_be_bytes());
            f.extend_from_slice(&[IPPROTO_UDP, 64]);
            f.extend_from_slice(&src);
            f.extend_from_slice(&dst);
            let mut sum = csum_add(0, &src);
            sum = csum_add(sum, &dst);
            sum += udp_len as u32 + u32::from(IPPROTO_UDP);
            let c = match csum_fold(csum_add(sum, &udp)) {
                0 => 0xffff,
                c => c,
            };
            udp[6..8].copy_from_slice(&c.to_be_bytes());
        }
    }
    f.extend_from_slice(&udp);
    f
}

fn v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xgw_common::bfd::{Diag, State};

    /// Open vSwitch 3.1's BFD Up packet inside Geneve, as captured on its
    /// underlay (docs/ovs-geneve.md, "BFD from OVS").
    const OVS_FRAME: &str = "\
        02 00 00 00 01 01 02 00 00 00 02 01 08 00 45 00 00 66 00 00 40 00 40 11 e6 1c c6 33 64 02 c6 33 \
        64 01 e8 2d 17 c1 00 52 00 00 00 00 65 58 00 13 89 00 00 23 20 00 00 01 52 e4 91 a0 9e 81 08 00 \
        45 c0 00 34 00 00 00 00 ff 11 64 fb a9 fe 01 01 a9 fe 01 00 c0 00 0e c8 00 20 00 00 20 c0 03 18 \
        ba 7c 94 5f f7 6d 73 e9 00 01 86 a0 00 01 86 a0 00 00 00 00";

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect()
    }

    #[test]
    fn geneve_frame_is_byte_for_byte_what_open_vswitch_sends() {
        let h = GeneveHeaders {
            src_mac: [2, 0, 0, 0, 2, 1],
            dst_mac: [2, 0, 0, 0, 1, 1],
            local_ip: "198.51.100.2".parse().unwrap(),
            remote_ip: "198.51.100.1".parse().unwrap(),
            vni: 5001,
            sport: 59437,
            inner_src_mac: [0x52, 0xe4, 0x91, 0xa0, 0x9e, 0x81],
            inner_sport: 49152,
        };
        let c = Control {
            diag: Diag::None,
            state: State::Up,
            flags: 0,
            detect_mult: 3,
            my_disc: 0xba7c945f,
            your_disc: 0xf76d73e9,
            desired_min_tx: 100_000,
            required_min_rx: 100_000,
            required_min_echo_rx: 0,
        };
        assert_eq!(geneve_frame(&h, &c), hex(OVS_FRAME));
    }

    #[test]
    fn ipv6_outer_carries_a_valid_udp_checksum() {
        let h = GeneveHeaders {
            src_mac: [2, 0, 0, 0, 2, 1],
            dst_mac: [2, 0, 0, 0, 1, 1],
            local_ip: "2001:db8::1".parse().unwrap(),
            remote_ip: "2001:db8::2".parse().unwrap(),
            vni: 5001,
            sport: 50000,
            inner_src_mac: [2, 0, 0, 0, 2, 1],
            inner_sport: 49152,
        };
        let ovs = hex(OVS_FRAME);
        let c = Control::decode(&ovs[ovs.len() - 24..].try_into().unwrap(), 24).unwrap();
        let f = geneve_frame(&h, &c);
        assert_eq!(f.len(), 14 + 40 + 8 + 8 + 66);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        // Verify: the one's-complement sum over pseudo-header and datagram is 0xffff.
        let udp = &f[54..];
        let mut sum = csum_add(0, &f[22..54]);
        sum += udp.len() as u32 + 17;
        assert_eq!(csum_fold(csum_add(sum, udp)), 0);
        assert_ne!(&udp[6..8], &[0, 0]);
    }
}
