//! Packet generators: valid frames of every kind the datapath handles, then
//! broken on purpose (truncated, mutated, lengths that lie, option lengths
//! that loop or overrun, IPv4 options, IPv6 extension headers, VLAN tags).
//! Built here from the RFC layouts, with etherparse for the plain parts.
use etherparse::PacketBuilder;
use rand::{Rng, RngExt};
use xgw_tests::{addrs::*, packet::geneve::*};

use crate::world::{Port, World, ROUTER2_IP4, ROUTER_IP4, VNI_A};

pub type Rand = rand_xorshift::XorShiftRng;

fn pick<'a, T>(r: &mut Rand, v: &'a [T]) -> &'a T {
    &v[r.random_range(0..v.len())]
}

fn bytes(r: &mut Rand, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    r.fill_bytes(&mut v);
    v
}

/// An inner (or local) Ethernet frame from `src` to `dst`: IPv4 or IPv6,
/// UDP, TCP or ICMP, with a payload of `len` bytes.
pub fn l2_frame(r: &mut Rand, src: [u8; 6], dst: [u8; 6], len: usize) -> Vec<u8> {
    let payload = bytes(r, len);
    let b = PacketBuilder::ethernet2(src, dst);
    let mut v = Vec::new();
    let (s4, d4) = ([203, 0, 113, r.random()], [203, 0, 113, r.random()]);
    let s6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0x30, 0, 0, 0, 0, 0, 0, 0, 0, 0, r.random()];
    let d6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0x30, 0, 0, 0, 0, 0, 0, 0, 0, 0, r.random()];
    let (sp, dp) = (r.random(), r.random());
    match r.random_range(0..6) {
        0 => b.ipv4(s4, d4, 64).udp(sp, dp).write(&mut v, &payload),
        1 => b.ipv4(s4, d4, 64).tcp(sp, dp, r.random(), 1024).write(&mut v, &payload),
        2 => b.ipv4(s4, d4, 64).icmpv4_echo_request(1, 1).write(&mut v, &payload),
        3 => b.ipv6(s6, d6, 64).udp(sp, dp).write(&mut v, &payload),
        4 => b.ipv6(s6, d6, 64).tcp(sp, dp, r.random(), 1024).write(&mut v, &payload),
        _ => b.ipv6(s6, d6, 64).icmpv6_echo_request(1, 1).write(&mut v, &payload),
    }
    .unwrap();
    v
}

/// Geneve options: OVN's (with a real, zero or random egress key) and
/// others of random class, type (critical or not) and length.
fn options(r: &mut Rand, w: &World, vni: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for _ in 0..*pick(r, &[0, 0, 1, 1, 1, 2, 3, 8, 9, 12]) {
        if r.random_bool(0.5) {
            let keys: Vec<u16> = w.ports.iter().filter(|p| p.vni == vni).map(|p| p.key).collect();
            let egress = match r.random_range(0..4) {
                0 => 0,
                1 => r.random(),
                _ if keys.is_empty() => r.random(),
                _ => *pick(r, &keys),
            };
            v.extend(ovn_option(r.random::<u16>() & 0x7fff, egress));
        } else {
            let words = r.random_range(0..4);
            let any = r.random();
            let class = *pick(r, &[0x0102, 0x0000, 0xffff, any]);
            let typ = if r.random_bool(0.3) { r.random::<u8>() | 0x80 } else { r.random::<u8>() & 0x7f };
            v.extend(option(class, typ, &bytes(r, words * 4)));
        }
    }
    v
}

/// A Geneve frame to the gateway's uplink, valid unless chance says
/// otherwise (unknown remote, wrong VNI, random inner destination).
pub fn geneve(r: &mut Rand, w: &World) -> Vec<u8> {
    let t = pick(r, &w.tunnels).clone();
    let any = r.random::<u32>() & 0xff_ffff;
    let vni = if r.random_bool(0.9) { t.vni } else { *pick(r, &[VNI, 0x00ab_cdef, any]) };
    let opts = options(r, w, vni);
    let mut flags = 0u8;
    if r.random_bool(0.5) {
        flags |= 0x40; // C: a critical option is present (or claimed)
    }
    if r.random_bool(0.05) {
        flags |= 0x80; // O: control packet
    }
    let mut g = geneve_hdr(0, (opts.len() / 4) as u8, flags, 0x6558, vni);
    g.extend(opts);
    let dst = match r.random_range(0..6) {
        0 | 1 => pick(r, &w.ports).mac,
        2 => pick(r, &w.remotes).mac,
        3 => [0xff; 6],
        4 => [0x33, 0x33, 0, 0, 0, 1],
        _ => {
            let mut m: [u8; 6] = r.random();
            m[0] &= 0xfe;
            m
        }
    };
    let inner_len = *pick(r, &[0, 1, 18, 64, 200, 1400]);
    let src = pick(r, &w.remotes).mac;
    g.extend(l2_frame(r, src, dst, inner_len));
    let sport = 49152 + r.random_range(0..16384);
    let mut v = Vec::new();
    let b = PacketBuilder::ethernet2(HV_MAC, GW_MAC);
    if t.v6 {
        let src = if r.random_bool(0.95) { t.remote } else { r.random() };
        b.ipv6(src, GW_IP6, 64).udp(sport, 6081).write(&mut v, &g).unwrap();
    } else {
        let src: [u8; 4] = if r.random_bool(0.95) { t.remote[12..].try_into().unwrap() } else { r.random() };
        let dst = if r.random_bool(0.97) { GW_IP4 } else { r.random() };
        b.ipv4(src, dst, 64).udp(sport, 6081).write(&mut v, &g).unwrap();
    }
    v
}

/// A BFD control packet (RFC 5880 section 4.1), mostly valid: every state,
/// Poll, our discriminators or others, small intervals; sometimes a field
/// that must be refused (version, Length, Detect Mult, M, P+F, A).
fn bfd_control(r: &mut Rand, w: &World) -> Vec<u8> {
    let mut vers_diag = (1 << 5) | r.random_range(0..9);
    let mut flags = if r.random_bool(0.2) { 0x20 } else { 0 };
    let (mut mult, mut len) = (r.random_range(1..6), 24u8);
    match r.random_range(0..16) {
        0 => vers_diag = r.random(),
        1 => len = *pick(r, &[0, 23, 25, 26, 255]),
        2 => mult = 0,
        3 => flags = r.random::<u8>() & 0x3f,
        _ => {}
    }
    let state = *pick(r, &[0u8, 1, 2, 3, 3, 3]);
    let mine = if r.random_bool(0.95) { r.random_range(1..u32::MAX) } else { 0 };
    let yours = match r.random_range(0..4) {
        0 => 0,
        1 => r.random(),
        _ => pick(r, &w.bfd).local_disc,
    };
    let mut v = vec![vers_diag, (state << 6) | flags, mult, len];
    v.extend(mine.to_be_bytes());
    v.extend(yours.to_be_bytes());
    for _ in 0..3 {
        let any = r.random();
        v.extend(pick(r, &[0u32, 1, 10, 1000, 10_000, any]).to_be_bytes());
    }
    if r.random_bool(0.05) {
        let n = r.random_range(1..8);
        v.extend(bytes(r, n)); // more than Length says
    }
    v
}

/// Open vSwitch's BFD inside Geneve (inner Ethernet to 00:23:20:00:00:01,
/// IPv4 169.254.1.1 -> .0, UDP 3784, TTL 255), from a tunnel with a session
/// mostly; options and flags as `geneve` draws them, now and then.
pub fn bfd_geneve(r: &mut Rand, w: &World) -> Vec<u8> {
    let t = pick(r, &w.tunnels).clone();
    let any = r.random::<u32>() & 0xff_ffff;
    let vni = if r.random_bool(0.9) { t.vni } else { *pick(r, &[VNI_A, any]) };
    let opts = if r.random_bool(0.2) { options(r, w, vni) } else { Vec::new() };
    let flags = *pick(r, &[0u8, 0, 0, 0x80, 0x40]);
    let mut g = geneve_hdr(0, (opts.len() / 4) as u8, flags, 0x6558, vni);
    g.extend(opts);
    let ttl = if r.random_bool(0.9) { 255 } else { r.random() };
    let (dport, ctl) = (if r.random_bool(0.95) { 3784 } else { 3785 }, bfd_control(r, w));
    PacketBuilder::ethernet2(HV_MAC, xgw_common::bfd::ovs::DST_MAC)
        .ipv4(xgw_common::bfd::ovs::SRC_IP, xgw_common::bfd::ovs::DST_IP, ttl)
        .udp(49152, dport)
        .write(&mut g, &ctl)
        .unwrap();
    let sport = 49152 + r.random_range(0..16384);
    let mut v = Vec::new();
    let b = PacketBuilder::ethernet2(HV_MAC, GW_MAC);
    if t.v6 {
        b.ipv6(t.remote, GW_IP6, 64).udp(sport, 6081).write(&mut v, &g).unwrap();
    } else {
        b.ipv4(t.remote[12..].try_into().unwrap(), GW_IP4, 64).udp(sport, 6081).write(&mut v, &g).unwrap();
    }
    v
}

/// A single-hop control packet (RFC 5881) to the gateway on UDP 3784,
/// from a configured peer mostly, TTL 255 mostly.
pub fn bfd_single_hop(r: &mut Rand, w: &World) -> Vec<u8> {
    let any = r.random();
    let src = *pick(r, &[ROUTER_IP4, ROUTER_IP4, ROUTER2_IP4, any]);
    let dst = if r.random_bool(0.95) { GW_IP4 } else { r.random() };
    let any = r.random();
    let ttl = if r.random_bool(0.9) { 255 } else { *pick(r, &[254, 1, 0, any]) };
    let mut v = Vec::new();
    let ctl = bfd_control(r, w);
    PacketBuilder::ethernet2(HV_MAC, GW_MAC)
        .ipv4(src, dst, ttl)
        .udp(49152 + r.random_range(0..16384), 3784)
        .write(&mut v, &ctl)
        .unwrap();
    v
}

/// A BFD echo packet (UDP 3785): a router's own address to itself (RFC 5880
/// section 6.4), with whatever payload it likes; sometimes not to itself.
pub fn bfd_echo(r: &mut Rand) -> Vec<u8> {
    let any = r.random();
    let src = *pick(r, &[ROUTER_IP4, ROUTER_IP4, ROUTER2_IP4, any]);
    let dst = if r.random_bool(0.9) { src } else { GW_IP4 };
    let ttl = *pick(r, &[255, 255, 64, 2, 1, 0]);
    let n = r.random_range(0..48);
    let payload = bytes(r, n);
    let mut v = Vec::new();
    PacketBuilder::ethernet2(HV_MAC, GW_MAC).ipv4(src, dst, ttl).udp(3785, 3785).write(&mut v, &payload).unwrap();
    v
}

/// Other traffic an uplink sees: ARP, ping, UDP and TCP to other ports,
/// BFD control and echo ports, IPv6, VLAN-tagged frames.
pub fn underlay_other(r: &mut Rand) -> Vec<u8> {
    let any = r.random();
    let dport = *pick(r, &[3784, 3785, 4789, 53, 6080, 6082, any]);
    let mut v = Vec::new();
    let b = PacketBuilder::ethernet2(HV_MAC, GW_MAC);
    let n = r.random_range(0..100);
    let payload = bytes(r, n);
    match r.random_range(0..5) {
        0 => b.ipv4(HV_IP4, GW_IP4, 255).udp(49152, dport).write(&mut v, &payload),
        1 => b.ipv6(HV_IP6, GW_IP6, 255).udp(49152, dport).write(&mut v, &payload),
        2 => b.ipv4(HV_IP4, GW_IP4, 64).tcp(40000, dport, 1, 1024).write(&mut v, &payload),
        3 => b.ipv4(HV_IP4, GW_IP4, 64).icmpv4_echo_request(1, 1).write(&mut v, &payload),
        _ => return xgw_tests::packet::arp_request(HV_MAC, HV_IP4, GW_IP4),
    }
    .unwrap();
    v
}

/// A frame a VM behind local port `p` sends: to a remote binding, to
/// another local port (its VNI or not), unknown unicast, broadcast, ARP
/// and neighbour solicitations for bound and unbound addresses, jumbo.
pub fn local(r: &mut Rand, w: &World, p: &Port) -> Vec<u8> {
    match r.random_range(0..10) {
        0..=3 => {
            let dst = match r.random_range(0..4) {
                0 | 1 => pick(r, &w.remotes).mac,
                2 => pick(r, &w.ports).mac,
                _ => r.random(),
            };
            let len = *pick(r, &[0, 10, 64, 512, 1300, 1400, 1430, 1450, 1480, 1600, 3000]);
            let mut v = l2_frame(r, p.mac, dst, len);
            // Mostly from the port's own address, which port security lets through.
            if r.random_bool(0.8) {
                match v[12..14] {
                    [0x08, 0x00] => v[26..30].copy_from_slice(&p.ip4),
                    _ => v[22..38].copy_from_slice(&p.ip6),
                }
            }
            v
        }
        4 | 5 => {
            let target = match r.random_range(0..3) {
                0 => pick(r, &w.remotes).ip4,
                1 => pick(r, &w.ports).ip4,
                _ => r.random(),
            };
            let sender = if r.random_bool(0.1) { [0; 4] } else { p.ip4 };
            xgw_tests::packet::arp_request(p.mac, sender, target)
        }
        6 | 7 => {
            let target = if r.random_bool(0.7) { pick(r, &w.ports).ip6 } else { r.random() };
            let src = if r.random_bool(0.1) { [0; 16] } else { p.ip6 };
            xgw_tests::packet::neighbour_solicitation(p.mac, src, target)
        }
        8 => {
            let n = r.random_range(0..64);
            let mut v = l2_frame(r, p.mac, [0xff; 6], n);
            if r.random_bool(0.5) {
                v[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
            }
            v
        }
        _ => {
            let n = r.random_range(14..200);
            bytes(r, n)
        }
    }
}

/// Breaks a valid frame. Offsets assume Ethernet at 0 and the network
/// header at 14, which is where the valid frames put them.
pub fn mutate(r: &mut Rand, mut v: Vec<u8>) -> Vec<u8> {
    match r.random_range(0..11) {
        0 => {
            let n = r.random_range(14.min(v.len())..=v.len());
            v.truncate(n);
        }
        1 => {
            for _ in 0..r.random_range(1..5) {
                let i = r.random_range(0..v.len());
                v[i] = r.random();
            }
        }
        2 => {
            let i = r.random_range(0..v.len());
            v[i] ^= 1 << r.random_range(0..8);
        }
        // IPv4 total length or IPv6 payload length that lies.
        3 => {
            let at = if ethertype(&v) == 0x86dd { 18 } else { 16 };
            set16(&mut v, at, r.random())
        }
        // UDP length that lies.
        4 => {
            let (at, any) = (udp_at(&v) + 4, r.random());
            set16(&mut v, at, *pick(r, &[0, 7, 8, 9, 16, 17, any]))
        }
        // Geneve Opt Len: anything in 6 bits.
        5 => {
            let g = udp_at(&v) + 8;
            if let Some(b) = v.get_mut(g) {
                *b = (*b & 0xc0) | r.random_range(0..64);
            }
        }
        // The first option's length: 0 (a loop, if the walker forgot the
        // header) up to 31 words (past everything).
        6 => {
            let o = udp_at(&v) + 8 + 8 + 3;
            let any = r.random::<u8>() & 0x1f;
            let len = *pick(r, &[0, 1, 2, 0x1f, any]);
            if let Some(b) = v.get_mut(o) {
                *b = (*b & 0xe0) | len;
            }
        }
        // IPv4 options: IHL 6..15 with the option bytes really inserted.
        7 if ethertype(&v) == 0x0800 && v.len() >= 34 => {
            let words = r.random_range(1..11);
            let opts = bytes(r, words * 4);
            v.splice(34..34, opts);
            v[14] = 0x40 | (5 + words as u8);
        }
        // IPv6 hop-by-hop options header between IPv6 and its payload.
        8 if ethertype(&v) == 0x86dd && v.len() >= 54 => {
            let next = v[20];
            v.splice(54..54, [next, 0, 1, 4, 0, 0, 0, 0]);
            v[20] = 0;
        }
        // An 802.1Q tag (or two).
        9 => {
            for _ in 0..r.random_range(1..3) {
                let vid = r.random::<u16>() & 0x0fff;
                v.splice(12..12, [0x81, 0x00, (vid >> 8) as u8, vid as u8]);
            }
        }
        // IPv4 fragment: MF or an offset.
        _ if ethertype(&v) == 0x0800 && v.len() >= 34 => {
            let any = r.random();
            set16(&mut v, 20, *pick(r, &[0x2000, 0x0001, 0x2010, any]))
        }
        _ => {
            let n = r.random_range(0..=v.len()).max(14);
            v.truncate(n)
        }
    }
    v
}

fn ethertype(v: &[u8]) -> u16 {
    u16::from_be_bytes([v[12], v[13]])
}

fn udp_at(v: &[u8]) -> usize {
    if ethertype(v) == 0x86dd {
        54
    } else {
        34
    }
}

fn set16(v: &mut [u8], at: usize, x: u16) {
    if at + 2 <= v.len() {
        v[at..at + 2].copy_from_slice(&x.to_be_bytes());
    }
}

/// Random bytes: an Ethernet header's worth at least (test_run refuses less).
pub fn random(r: &mut Rand) -> Vec<u8> {
    let n = *pick(r, &[14, 15, 20, 34, 42, 54, 60, 64, 100, 300]);
    let mut v = bytes(r, n);
    if r.random_bool(0.5) {
        // A plausible EtherType makes the parsers go further.
        let et = *pick(r, &[0x0800u16, 0x86dd, 0x0806, 0x8100]);
        v[12..14].copy_from_slice(&et.to_be_bytes());
    }
    v
}
