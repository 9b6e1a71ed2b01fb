//! Test packets, built with etherparse (independent of the datapath code) or
//! by hand from the RFC layout, and a BPF_PROG_TEST_RUN wrapper for XDP.
use aya::programs::{TestRun, TestRunOptions, Xdp};
use etherparse::{IpNumber, PacketBuilder};

pub const MAC_A: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x0a];
pub const MAC_B: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x0b];
pub const IP4_A: [u8; 4] = [198, 51, 100, 1];
pub const IP4_B: [u8; 4] = [198, 51, 100, 2];
pub const IP6_A: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const IP6_B: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// XDP verdicts (linux/bpf.h `enum xdp_action`).
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

fn build(b: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = Vec::new();
    b(&mut v);
    v
}

pub fn ipv4_icmp_echo(payload: &[u8]) -> Vec<u8> {
    build(|v| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(IP4_A, IP4_B, 64)
            .icmpv4_echo_request(1, 1)
            .write(v, payload)
            .unwrap()
    })
}
pub fn ipv4_udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    build(|v| {
        PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(IP4_A, IP4_B, 64).udp(sport, dport).write(v, payload).unwrap()
    })
}
pub fn ipv4_tcp(payload: &[u8]) -> Vec<u8> {
    build(|v| {
        PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(IP4_A, IP4_B, 64).tcp(40000, 80, 1, 1024).write(v, payload).unwrap()
    })
}
pub fn ipv4_proto(proto: u8, payload: &[u8]) -> Vec<u8> {
    build(|v| PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(IP4_A, IP4_B, 64).write(v, IpNumber(proto), payload).unwrap())
}
pub fn ipv4_udp_vlan(vid: u16, payload: &[u8]) -> Vec<u8> {
    build(|v| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .single_vlan(etherparse::VlanId::try_new(vid).unwrap())
            .ipv4(IP4_A, IP4_B, 64)
            .udp(1000, 2000)
            .write(v, payload)
            .unwrap()
    })
}
pub fn ipv6_icmp_echo(payload: &[u8]) -> Vec<u8> {
    build(|v| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv6(IP6_A, IP6_B, 64)
            .icmpv6_echo_request(1, 1)
            .write(v, payload)
            .unwrap()
    })
}
pub fn ipv6_udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    build(|v| {
        PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6(IP6_A, IP6_B, 64).udp(sport, dport).write(v, payload).unwrap()
    })
}
pub fn ipv6_tcp(payload: &[u8]) -> Vec<u8> {
    build(|v| {
        PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6(IP6_A, IP6_B, 64).tcp(40000, 80, 1, 1024).write(v, payload).unwrap()
    })
}
pub fn ipv6_proto(proto: u8, payload: &[u8]) -> Vec<u8> {
    build(|v| PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6(IP6_A, IP6_B, 64).write(v, IpNumber(proto), payload).unwrap())
}

/// An ARP request (RFC 826) for IPv4 over Ethernet, broadcast.
pub fn arp_request(sender_mac: [u8; 6], sender_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    let mut v = Vec::with_capacity(42);
    v.extend_from_slice(&[0xff; 6]);
    v.extend_from_slice(&sender_mac);
    v.extend_from_slice(&0x0806u16.to_be_bytes());
    v.extend_from_slice(&1u16.to_be_bytes()); // htype Ethernet
    v.extend_from_slice(&0x0800u16.to_be_bytes()); // ptype IPv4
    v.extend_from_slice(&[6, 4]); // hlen, plen
    v.extend_from_slice(&1u16.to_be_bytes()); // op request
    v.extend_from_slice(&sender_mac);
    v.extend_from_slice(&sender_ip);
    v.extend_from_slice(&[0; 6]);
    v.extend_from_slice(&target_ip);
    v
}

/// A neighbour solicitation (RFC 4861 4.3) for `target` from `src` (MAC
/// `mac`), with a source link-layer address option unless `src` is
/// unspecified (duplicate address detection).
pub fn neighbour_solicitation(mac: [u8; 6], src: [u8; 16], target: [u8; 16]) -> Vec<u8> {
    let snm = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, target[13], target[14], target[15]];
    let mut body = target.to_vec();
    if src != [0; 16] {
        body.extend([1, 1]);
        body.extend(mac);
    }
    let icmp = etherparse::Icmpv6Header::with_checksum(
        etherparse::Icmpv6Type::Unknown { type_u8: 135, code_u8: 0, bytes5to8: [0; 4] },
        src,
        snm,
        &body,
    )
    .unwrap();
    let mut v = Vec::new();
    v.extend_from_slice(&[0x33, 0x33, 0xff, target[13], target[14], target[15]]);
    v.extend_from_slice(&mac);
    v.extend_from_slice(&0x86ddu16.to_be_bytes());
    let ip = etherparse::Ipv6Header {
        traffic_class: 0,
        flow_label: etherparse::Ipv6FlowLabel::ZERO,
        payload_length: (8 + body.len()) as u16,
        next_header: IpNumber::IPV6_ICMP,
        hop_limit: 255,
        source: src,
        destination: snm,
    };
    ip.write(&mut v).unwrap();
    icmp.write(&mut v).unwrap();
    v.extend(body);
    v
}

/// An Ethernet header with `ethertype` followed by `payload`.
pub fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(14 + payload.len());
    v.extend_from_slice(&MAC_B);
    v.extend_from_slice(&MAC_A);
    v.extend_from_slice(&ethertype.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// The result of running an XDP program once on one packet.
#[derive(Debug)]
pub struct Run {
    pub verdict: u32,
    pub data: Vec<u8>,
}

/// Runs `prog` once on `packet` through BPF_PROG_TEST_RUN.
pub fn test_run(prog: &Xdp, packet: &[u8]) -> Run {
    test_run_on(prog, packet, 0)
}

/// As `test_run`, as if the packet arrived on interface `ingress_ifindex`
/// (0: unspecified; otherwise it must exist in the caller's namespace).
pub fn test_run_on(prog: &Xdp, packet: &[u8], ingress_ifindex: u32) -> Run {
    // Room for encapsulation headers the program may push.
    let mut out = vec![0u8; packet.len() + 512];
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
    // rx_queue_index, egress_ifindex.
    let md: Vec<u8> = [0, packet.len() as u32, 0, ingress_ifindex, 0, 0].iter().flat_map(|w| w.to_ne_bytes()).collect();
    let opts = TestRunOptions {
        data_in: Some(packet),
        data_out: Some(&mut out),
        ctx_in: (ingress_ifindex != 0).then_some(&md[..]),
        ..TestRunOptions::new()
    };
    let res = prog.test_run(opts).unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN failed: {e}"));
    out.truncate(res.data_size_out as usize);
    Run { verdict: res.return_value, data: out }
}

/// Geneve built by hand from RFC 8926 (and OVN's option layout), never from
/// the datapath's own definitions.
pub mod geneve {
    /// A Geneve header per RFC 8926 figure 2, written out byte by byte.
    pub fn geneve_hdr(ver: u8, opt_words: u8, flags: u8, proto: u16, vni: u32) -> Vec<u8> {
        let p = proto.to_be_bytes();
        vec![(ver << 6) | opt_words, flags, p[0], p[1], (vni >> 16) as u8, (vni >> 8) as u8, vni as u8, 0]
    }

    /// One option: class, type, data (a multiple of 4 bytes).
    pub fn option(class: u16, typ: u8, data: &[u8]) -> Vec<u8> {
        let mut v = class.to_be_bytes().to_vec();
        v.extend([typ, (data.len() / 4) as u8]);
        v.extend_from_slice(data);
        v
    }

    pub fn ovn_option(ingress: u16, egress: u16) -> Vec<u8> {
        let mut d = ingress.to_be_bytes().to_vec();
        d.extend(egress.to_be_bytes());
        option(0x0102, 0x80, &d)
    }

    /// `inner` encapsulated from the gateway to the hypervisor as Open
    /// vSwitch sends it over IPv4 (RFC 8926 section 3.1 layout): DF, TTL 64,
    /// UDP checksum 0, Geneve with the C bit and OVN's option (`ingress`,
    /// `egress`), in the test VNI. The UDP source port comes from the
    /// datapath's flow hash, so the caller passes what the output carries.
    pub fn ovs_ipv4_frame(inner: &[u8], sport: u16, ingress: u16, egress: u16) -> Vec<u8> {
        use crate::addrs::*;
        use etherparse::{IpNumber, Ipv4Header, UdpHeader};
        let mut geneve = geneve_hdr(0, 2, 0x40, 0x6558, VNI);
        geneve.extend(ovn_option(ingress, egress));
        geneve.extend_from_slice(inner);
        let udp =
            UdpHeader { source_port: sport, destination_port: 6081, length: (8 + geneve.len()) as u16, checksum: 0 };
        let mut ip = Ipv4Header::new(udp.length, 64, IpNumber::UDP, GW_IP4, HV_IP4).unwrap();
        ip.dont_fragment = true;
        ip.header_checksum = ip.calc_header_checksum();
        let mut v = Vec::new();
        v.extend_from_slice(&HV_MAC);
        v.extend_from_slice(&GW_MAC);
        v.extend_from_slice(&0x0800u16.to_be_bytes());
        ip.write(&mut v).unwrap();
        udp.write(&mut v).unwrap();
        v.extend(geneve);
        v
    }

    pub fn geneve_payload(opts: &[Vec<u8>], vni: u32, inner: &[u8]) -> Vec<u8> {
        let opts: Vec<u8> = opts.concat();
        let mut v = geneve_hdr(0, (opts.len() / 4) as u8, 0, 0x6558, vni);
        v.extend(opts);
        v.extend_from_slice(inner);
        v
    }

    /// One Geneve option as found on the wire.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Opt {
        pub class: u16,
        pub typ: u8,
        pub data: Vec<u8>,
    }

    /// The outer network header of a Geneve frame.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Outer {
        V4 { src: [u8; 4], dst: [u8; 4], ttl: u8, tos: u8, id: u16, df: bool },
        V6 { src: [u8; 16], dst: [u8; 16], hop_limit: u8, tclass: u8, flow_label: u32 },
    }

    /// A Geneve frame taken apart (RFC 8926 figures 1-3), outer headers included.
    #[derive(Debug, Clone)]
    pub struct Parsed {
        pub eth_dst: [u8; 6],
        pub eth_src: [u8; 6],
        pub outer: Outer,
        pub udp_src: u16,
        pub udp_dst: u16,
        pub udp_csum: u16,
        /// The UDP checksum verifies (false when it is 0, i.e. not sent).
        pub udp_csum_ok: bool,
        /// The 8-byte fixed header as sent.
        pub header: [u8; 8],
        pub version: u8,
        pub flags: u8,
        pub protocol: u16,
        pub vni: u32,
        /// The VNI word's last byte (reserved, must be 0 on send).
        pub reserved: u8,
        pub options: Vec<Opt>,
        pub inner: Vec<u8>,
    }

    /// Parses an Ethernet frame carrying UDP to port 6081. None for anything
    /// else; panics on a Geneve frame whose lengths do not add up (or whose
    /// version is not 0).
    pub fn parse(frame: &[u8]) -> Option<Parsed> {
        use etherparse::{NetSlice, SlicedPacket, TransportSlice};
        let p = SlicedPacket::from_ethernet(frame).ok()?;
        let Some(TransportSlice::Udp(udp)) = &p.transport else { return None };
        if udp.destination_port() != 6081 {
            return None;
        }
        let (outer, udp_csum_ok) = match p.net.as_ref()? {
            NetSlice::Ipv4(ip) => {
                let h = ip.header();
                let outer = Outer::V4 {
                    src: h.source(),
                    dst: h.destination(),
                    ttl: h.ttl(),
                    tos: (h.dcp().value() << 2) | h.ecn().value(),
                    id: h.identification(),
                    df: h.dont_fragment(),
                };
                (outer, udp.checksum() != 0 && super::udp_checksum_verifies(&h.source(), &h.destination(), udp.slice()))
            }
            NetSlice::Ipv6(ip) => {
                let h = ip.header();
                let outer = Outer::V6 {
                    src: h.source(),
                    dst: h.destination(),
                    hop_limit: h.hop_limit(),
                    tclass: h.traffic_class(),
                    flow_label: h.flow_label().value(),
                };
                (outer, udp.checksum() != 0 && super::udp_checksum_verifies(&h.source(), &h.destination(), udp.slice()))
            }
        };
        let g = udp.payload();
        let v = xgw_common::geneve::View::decode(g).unwrap_or_else(|e| panic!("Geneve header {g:02x?}: {e:?}"));
        let options = v
            .options()
            .map(|o| o.map(|o| Opt { class: o.class, typ: o.typ, data: o.data.to_vec() }))
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|e| panic!("Geneve options {:02x?}: {e:?}", v.options));
        Some(Parsed {
            eth_dst: frame[0..6].try_into().unwrap(),
            eth_src: frame[6..12].try_into().unwrap(),
            outer,
            udp_src: udp.source_port(),
            udp_dst: udp.destination_port(),
            udp_csum: udp.checksum(),
            udp_csum_ok,
            header: g[..8].try_into().unwrap(),
            version: g[0] >> 6,
            flags: v.flags,
            protocol: v.protocol,
            vni: v.vni,
            reserved: v.reserved,
            options,
            inner: v.payload.to_vec(),
        })
    }
}

/// The UDP checksum (RFC 768 over the RFC 791 or RFC 8200 pseudo-header) for
/// `udp`, a whole UDP header and payload carrying 0 in its checksum field.
/// A computed 0 is sent as 0xffff.
pub fn udp_checksum(src: &[u8], dst: &[u8], udp: &[u8]) -> u16 {
    match !fold(pseudo_sum(src, dst, udp)) {
        0 => 0xffff,
        c => c,
    }
}

/// True when the checksum field already in `udp` is right.
pub fn udp_checksum_verifies(src: &[u8], dst: &[u8], udp: &[u8]) -> bool {
    fold(pseudo_sum(src, dst, udp)) == 0xffff
}

fn pseudo_sum(src: &[u8], dst: &[u8], udp: &[u8]) -> u64 {
    let words =
        |b: &[u8]| b.chunks(2).map(|c| (u64::from(c[0]) << 8) | u64::from(*c.get(1).unwrap_or(&0))).sum::<u64>();
    // Both pseudo-headers add up to: addresses + protocol 17 + UDP length.
    words(src) + words(dst) + 17 + udp.len() as u64 + words(udp)
}

fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}
