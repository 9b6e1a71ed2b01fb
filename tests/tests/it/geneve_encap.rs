//! The local-port program (`xgw_local`) through BPF_PROG_TEST_RUN: Geneve
//! encapsulation toward a remote chassis, switching between local ports,
//! the ARP / ND responder and every drop reason. Expected bytes are built
//! here with etherparse and by hand from RFC 8926 / RFC 826 / RFC 4861,
//! never from the datapath's definitions.
use etherparse::{
    icmpv4::DestUnreachableHeader, Icmpv4Type, Icmpv6Header, Icmpv6Type, IpNumber, Ipv4HeaderSlice, Ipv6FlowLabel,
    Ipv6Header, PacketBuilder, UdpHeader,
};
use xgw_common::maps::*;
use xgw_tests::{
    addrs::*,
    gateway::TestGateway,
    packet::{geneve::*, *},
    require_root,
};

const VM2_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x20, 0x00, 0x03];
const REMOTE_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x20, 0x00, 0x02];
const REMOTE_IP: [u8; 4] = [203, 0, 113, 2];
const REMOTE_IP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const REMOTE6_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x20, 0x00, 0x06];
const MTU: u32 = 1500;
/// Tunnel over IPv4 with the OVN option; tunnel over IPv6 without.
const T4: u16 = 7;
const T6: u16 = 8;
const VM_OFPORT: u16 = 3;
const VM2_OFPORT: u16 = 4;
const VM_KEY: u16 = 0x0011;
const REMOTE_KEY: u16 = 0x0022;
const REMOTE6_KEY: u16 = 0x0026;
/// The ingress port: lo exists in every namespace, as test_run requires.
const LO: u32 = 1;

fn gateway() -> TestGateway {
    let mut gw = TestGateway::load(&["xgw_local"]);
    gw.set_test_uplink(LO, MTU);
    gw.add_tunnel(
        T4 as u32,
        Tunnel { remote: ipv4_mapped(HV_IP4), nexthop_mac: HV_MAC, flags: TUNNEL_OVN_METADATA, _pad: 0, vni: VNI },
    );
    gw.add_tunnel(T6 as u32, Tunnel { remote: HV_IP6, nexthop_mac: HV_MAC, flags: TUNNEL_IPV6, _pad: 0, vni: VNI });
    gw.add_local_port(
        LO,
        LocalPort { vni: VNI, ofport: VM_OFPORT, port_key: VM_KEY, mac: VM_MAC, ..Default::default() },
    );
    gw.add_neigh(VNI, ipv4_mapped(VM_IP), VM_MAC);
    gw.add_remote(VNI, REMOTE_MAC, Some(ipv4_mapped(REMOTE_IP)), T4, REMOTE_KEY);
    gw.add_remote(VNI, REMOTE6_MAC, Some(REMOTE_IP6), T6, REMOTE6_KEY);
    gw
}

/// A UDP datagram from the local VM to `dst` with `payload`.
fn frame(dst: [u8; 6], sport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(VM_MAC, dst).ipv4(VM_IP, REMOTE_IP, 64).udp(sport, 7).write(&mut v, payload).unwrap();
    v
}

fn udp_sport(outer: &[u8], ip_hlen: usize) -> u16 {
    u16::from_be_bytes([outer[14 + ip_hlen], outer[15 + ip_hlen]])
}

/// What OVS sends over IPv4, with our key as ingress and theirs as egress.
fn expected_ipv4(inner: &[u8], sport: u16) -> Vec<u8> {
    ovs_ipv4_frame(inner, sport, VM_KEY, REMOTE_KEY)
}

#[test]
fn encap_ipv4_with_ovn_option_matches_the_rfc_layout() {
    require_root!();
    let gw = gateway();
    for len in [0, 1, 2, 3, 18, 100, 1400] {
        let inner = frame(REMOTE_MAC, 4000, &vec![0x5a; len]);
        let run = test_run_on(gw.program("xgw_local"), &inner, LO);
        assert_eq!(run.verdict, XDP_REDIRECT, "payload {len}");
        let sport = udp_sport(&run.data, 20);
        assert!(sport >= 49152, "source port {sport} outside the dynamic range (RFC 8926 3.3)");
        assert_eq!(run.data, expected_ipv4(&inner, sport), "payload {len}");
    }
    assert_eq!(gw.port_stats(VM_OFPORT as u32).rx.packets, 7);
    assert_eq!(gw.port_stats(T4 as u32).tx.packets, 7);
    assert!(gw.drops().values().all(|&n| n == 0), "{:?}", gw.drops());
}

#[test]
fn encap_ipv6_carries_a_valid_udp_checksum_at_every_length() {
    require_root!();
    let gw = gateway();
    // Lengths around every block size the checksum is summed in, up to the
    // largest frame the 1500-byte uplink takes (1382 bytes of UDP payload).
    for len in (0..=80).chain([200, 255, 256, 257, 480, 511, 512, 513, 1000, 1023, 1024, 1025, 1300, 1382]) {
        let mut inner = Vec::new();
        PacketBuilder::ethernet2(VM_MAC, REMOTE6_MAC)
            .ipv6([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], REMOTE_IP6, 64)
            .udp(5555, 7)
            .write(&mut inner, &(0..len).map(|i| (i * 7 + 3) as u8).collect::<Vec<_>>())
            .unwrap();
        let run = test_run_on(gw.program("xgw_local"), &inner, LO);
        assert_eq!(run.verdict, XDP_REDIRECT, "payload {len}");
        let out = &run.data;
        let sport = udp_sport(out, 40);
        let flow = u32::from_be_bytes([out[14], out[15], out[16], out[17]]) & 0xfffff;
        let mut geneve = geneve_hdr(0, 0, 0, 0x6558, VNI);
        geneve.extend_from_slice(&inner);
        let ip = Ipv6Header {
            traffic_class: 0,
            flow_label: Ipv6FlowLabel::try_new(flow).unwrap(),
            payload_length: (8 + geneve.len()) as u16,
            next_header: IpNumber::UDP,
            hop_limit: 64,
            source: GW_IP6,
            destination: HV_IP6,
        };
        let udp = UdpHeader::with_ipv6_checksum(sport, 6081, &ip, &geneve).unwrap();
        let mut want = Vec::new();
        want.extend_from_slice(&HV_MAC);
        want.extend_from_slice(&GW_MAC);
        want.extend_from_slice(&0x86ddu16.to_be_bytes());
        ip.write(&mut want).unwrap();
        udp.write(&mut want).unwrap();
        want.extend(geneve);
        assert_eq!(out, &want, "payload {len}");
    }
}

#[test]
fn source_port_follows_the_inner_flow() {
    require_root!();
    let gw = gateway();
    let sport_of = |inner_sport: u16| {
        let run = test_run_on(gw.program("xgw_local"), &frame(REMOTE_MAC, inner_sport, b"x"), LO);
        udp_sport(&run.data, 20)
    };
    let ports: std::collections::BTreeSet<u16> = (1000..1064).map(sport_of).collect();
    assert!(ports.iter().all(|&p| p >= 49152));
    assert!(ports.len() >= 48, "64 flows spread over only {} source ports", ports.len());
    // One flow, one port: the underlay must not reorder a flow.
    assert_eq!(sport_of(1000), sport_of(1000));
}

#[test]
fn frames_too_big_for_the_tunnel_are_answered_with_icmp_never_truncated() {
    require_root!();
    let gw = gateway();
    // Outer IPv4 length = 20 + 8 + 8 + 8 (OVN option) + inner frame.
    let fits = MTU as usize - 44;
    let payload = |frame_len: usize| vec![0x11u8; frame_len - 14 - 20 - 8];
    let run = test_run_on(gw.program("xgw_local"), &frame(REMOTE_MAC, 1, &payload(fits)), LO);
    assert_eq!(run.verdict, XDP_REDIRECT);
    assert_eq!(run.data.len(), 14 + MTU as usize);

    // One byte more, DF set (etherparse's default): ICMP fragmentation
    // needed, from the destination, quoting the first 512 bytes.
    let big = frame(REMOTE_MAC, 1, &payload(fits + 1));
    let run = test_run_on(gw.program("xgw_local"), &big, LO);
    assert_eq!(run.verdict, XDP_TX);
    let next_hop_mtu = (MTU - 58) as u16;
    let quote = &big[14..14 + 512];
    let mut want = Vec::new();
    PacketBuilder::ethernet2(REMOTE_MAC, VM_MAC)
        .ipv4(REMOTE_IP, VM_IP, 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded { next_hop_mtu }))
        .write(&mut want, quote)
        .unwrap();
    // RFC 792 leaves DF on an ICMP error to the sender; we send it without.
    let mut ip = Ipv4HeaderSlice::from_slice(&want[14..]).unwrap().to_header();
    ip.dont_fragment = false;
    ip.header_checksum = ip.calc_header_checksum();
    let mut fixed = want[..14].to_vec();
    ip.write(&mut fixed).unwrap();
    fixed.extend_from_slice(&want[34..]);
    assert_eq!(run.data, fixed);

    // Without DF the sender allows fragmenting, which XDP cannot do: dropped.
    let mut no_df = big.clone();
    no_df[20] &= !0x40;
    let mut ip = Ipv4HeaderSlice::from_slice(&no_df[14..]).unwrap().to_header();
    ip.header_checksum = ip.calc_header_checksum();
    let mut hdr = Vec::new();
    ip.write(&mut hdr).unwrap();
    no_df[14..34].copy_from_slice(&hdr);
    assert_eq!(test_run_on(gw.program("xgw_local"), &no_df, LO).verdict, XDP_DROP);

    // IPv6 through the IPv6 tunnel (no option): the outer IPv6, UDP and
    // Geneve headers and the inner Ethernet header leave 1500 - 70 bytes.
    let src6 = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let mut big6 = Vec::new();
    PacketBuilder::ethernet2(VM_MAC, REMOTE6_MAC)
        .ipv6(src6, REMOTE_IP6, 64)
        .udp(1, 7)
        .write(&mut big6, &vec![0x22; MTU as usize - 70 - 40 - 8 + 1])
        .unwrap();
    let run = test_run_on(gw.program("xgw_local"), &big6, LO);
    assert_eq!(run.verdict, XDP_TX);
    let mut want = Vec::new();
    PacketBuilder::ethernet2(REMOTE6_MAC, VM_MAC)
        .ipv6(REMOTE_IP6, src6, 64)
        .icmpv6(Icmpv6Type::PacketTooBig { mtu: MTU - 70 })
        .write(&mut want, &big6[14..14 + 512])
        .unwrap();
    assert_eq!(run.data, want);

    // An ICMPv6 error is never answered with another.
    let mut err6 = Vec::new();
    PacketBuilder::ethernet2(VM_MAC, REMOTE6_MAC)
        .ipv6(src6, REMOTE_IP6, 64)
        .icmpv6(Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::Port))
        .write(&mut err6, &vec![0; 1400])
        .unwrap();
    assert_eq!(test_run_on(gw.program("xgw_local"), &err6, LO).verdict, XDP_DROP);

    assert_eq!(gw.drops()["mtu_exceeded"], 4, "{:?}", gw.drops());
    assert_eq!(gw.replies()["too_big"], 2);
}

#[test]
fn local_ports_of_one_vni_are_switched_directly() {
    require_root!();
    let mut gw = gateway();
    gw.add_local_port_entries(VM2_OFPORT, LO, VNI, 0x0033, VM2_MAC);
    let inner = frame(VM2_MAC, 1, b"hello");
    let run = test_run_on(gw.program("xgw_local"), &inner, LO);
    assert_eq!((run.verdict, &run.data), (XDP_REDIRECT, &inner));
    assert_eq!(gw.port_stats(VM2_OFPORT as u32).tx.packets, 1);
    // To itself: a hairpin, dropped.
    let run = test_run_on(gw.program("xgw_local"), &frame(VM_MAC, 1, b"x"), LO);
    assert_eq!(run.verdict, XDP_DROP);
    assert_eq!(gw.drops()["hairpin"], 1);
}

#[test]
fn arp_for_a_bound_address_is_answered_in_place() {
    require_root!();
    let gw = gateway();
    let req = arp_request(VM_MAC, VM_IP, REMOTE_IP);
    let run = test_run_on(gw.program("xgw_local"), &req, LO);
    assert_eq!(run.verdict, XDP_TX);
    // RFC 826 reply: to the asker, from the bound MAC, op 2, addresses swapped.
    let mut want = Vec::new();
    want.extend_from_slice(&VM_MAC);
    want.extend_from_slice(&REMOTE_MAC);
    want.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]);
    want.extend_from_slice(&REMOTE_MAC);
    want.extend_from_slice(&REMOTE_IP);
    want.extend_from_slice(&VM_MAC);
    want.extend_from_slice(&VM_IP);
    assert_eq!(run.data, want);
    assert_eq!(gw.replies()["arp"], 1);
}

#[test]
fn broadcast_that_is_not_answered_is_dropped_never_flooded() {
    require_root!();
    let gw = gateway();
    let cases = [
        // Nobody has this address.
        arp_request(VM_MAC, VM_IP, [203, 0, 113, 99]),
        // A host probing for its own address must not be answered (RFC 5227).
        arp_request(VM_MAC, [0, 0, 0, 0], VM_IP),
        // Gratuitous ARP announcing the asker's own address.
        arp_request(VM_MAC, VM_IP, VM_IP),
        // Any other broadcast.
        {
            let mut f = frame([0xff; 6], 68, b"dhcp");
            f[0..6].copy_from_slice(&[0xff; 6]);
            f
        },
    ];
    for pkt in &cases {
        let run = test_run_on(gw.program("xgw_local"), pkt, LO);
        assert_eq!(run.verdict, XDP_DROP);
    }
    assert_eq!(gw.drops()["flood"], cases.len() as u64);
    assert_eq!(gw.replies()["arp"], 0);
}

#[test]
fn neighbour_solicitation_for_a_bound_address_is_answered() {
    require_root!();
    let gw = gateway();
    let me = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    for ns in [neighbour_solicitation(VM_MAC, me, REMOTE_IP6), {
        // Without the source link-layer option: the reply grows the frame.
        let mut f = neighbour_solicitation(VM_MAC, me, REMOTE_IP6);
        f.truncate(f.len() - 8);
        f[18..20].copy_from_slice(&24u16.to_be_bytes());
        let sum = Icmpv6Type::Unknown { type_u8: 135, code_u8: 0, bytes5to8: [0; 4] }
            .calc_checksum(me, f[38..54].try_into().unwrap(), &REMOTE_IP6)
            .unwrap();
        f[56..58].copy_from_slice(&sum.to_be_bytes());
        f
    }] {
        let run = test_run_on(gw.program("xgw_local"), &ns, LO);
        assert_eq!(run.verdict, XDP_TX);
        // RFC 4861 4.4: NA, Solicited + Override, target link-layer option.
        let mut body = REMOTE_IP6.to_vec();
        body.extend([2, 1]);
        body.extend(REMOTE6_MAC);
        let icmp = Icmpv6Header::with_checksum(
            Icmpv6Type::Unknown { type_u8: 136, code_u8: 0, bytes5to8: [0x60, 0, 0, 0] },
            REMOTE_IP6,
            me,
            &body,
        )
        .unwrap();
        let mut want = Vec::new();
        want.extend_from_slice(&VM_MAC);
        want.extend_from_slice(&REMOTE6_MAC);
        want.extend_from_slice(&0x86ddu16.to_be_bytes());
        Ipv6Header {
            traffic_class: 0,
            flow_label: Ipv6FlowLabel::ZERO,
            payload_length: 32,
            next_header: IpNumber::IPV6_ICMP,
            hop_limit: 255,
            source: REMOTE_IP6,
            destination: me,
        }
        .write(&mut want)
        .unwrap();
        icmp.write(&mut want).unwrap();
        want.extend(body);
        assert_eq!(run.data, want);
    }
    // Duplicate address detection (from ::) is never answered.
    let run = test_run_on(gw.program("xgw_local"), &neighbour_solicitation(VM_MAC, [0; 16], REMOTE_IP6), LO);
    assert_eq!(run.verdict, XDP_DROP);
    assert_eq!(gw.replies()["nd"], 2);
}

#[test]
fn truncated_requests_are_never_answered_with_garbage() {
    require_root!();
    let gw = gateway();
    let me = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    for pkt in [arp_request(VM_MAC, VM_IP, REMOTE_IP), neighbour_solicitation(VM_MAC, me, REMOTE_IP6)] {
        for cut in 14..pkt.len() {
            let run = test_run_on(gw.program("xgw_local"), &pkt[..cut], LO);
            assert_eq!(run.verdict, XDP_DROP, "cut at {cut}");
        }
    }
    assert_eq!(gw.replies().values().sum::<u64>(), 0);
}

#[test]
fn unknown_destinations_and_missing_underlay_are_counted() {
    require_root!();
    let mut gw = gateway();
    let run = test_run_on(gw.program("xgw_local"), &frame([0x02, 0, 0, 0, 0, 0x99], 1, b"x"), LO);
    assert_eq!(run.verdict, XDP_DROP);
    assert_eq!(gw.drops()["unknown_destination"], 1);
    // The uplink loses its IPv6 address: IPv6 tunnels cannot send.
    gw.set_uplink(Uplink {
        ifindex: LO,
        mtu: MTU,
        mac: GW_MAC,
        flags: UPLINK_HAS_IP4,
        _pad: 0,
        ip4: GW_IP4,
        ip6: [0; 16],
    });
    let mut inner = Vec::new();
    PacketBuilder::ethernet2(VM_MAC, REMOTE6_MAC)
        .ipv6(GW_IP6, REMOTE_IP6, 64)
        .udp(1, 7)
        .write(&mut inner, b"x")
        .unwrap();
    let run = test_run_on(gw.program("xgw_local"), &inner, LO);
    assert_eq!(run.verdict, XDP_DROP);
    assert_eq!(gw.drops()["no_underlay"], 1);
}

#[test]
fn frames_from_an_unconfigured_interface_pass_to_the_stack() {
    require_root!();
    let gw = TestGateway::load(&["xgw_local"]);
    let f = frame(REMOTE_MAC, 1, b"x");
    let run = test_run_on(gw.program("xgw_local"), &f, LO);
    assert_eq!((run.verdict, &run.data), (XDP_PASS, &f));
}
