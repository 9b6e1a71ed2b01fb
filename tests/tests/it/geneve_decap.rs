//! Geneve decapsulation on the uplink (`xgw_uplink`) through BPF_PROG_TEST_RUN:
//! crafted packets give exactly the expected output bytes and verdict, and
//! every drop is counted under its reason. Expected bytes are built here from
//! the RFC 8926 layout and etherparse, independently of the datapath code.
use etherparse::{IpFragOffset, IpHeaders, IpNumber, Ipv4Header, PacketBuilder};
use xgw_common::maps::*;
use xgw_tests::{
    addrs::*,
    gateway::TestGateway,
    packet::{geneve::*, *},
    require_root,
};

const REMOTE_VM_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x20, 0x00, 0x02];
const TUNNEL_OFPORT: u32 = 7;
const VM_OFPORT: u16 = 3;
const VM_KEY: u16 = 0x0011;
const VM_IFINDEX: u32 = 1; // lo: present in every namespace, fine for test_run

fn gateway() -> TestGateway {
    let mut gw = TestGateway::load(&["xgw_uplink"]);
    gw.set_uplink(Uplink {
        ifindex: 1,
        mtu: 1500,
        mac: GW_MAC,
        flags: UPLINK_HAS_IP4 | UPLINK_HAS_IP6,
        _pad: 0,
        ip4: GW_IP4,
        ip6: GW_IP6,
    });
    for remote in [ipv4_mapped(HV_IP4), HV_IP6] {
        let ofport = if remote == HV_IP6 { TUNNEL_OFPORT + 1 } else { TUNNEL_OFPORT };
        gw.add_tunnel(ofport, Tunnel { remote, nexthop_mac: HV_MAC, flags: TUNNEL_OVN_METADATA, _pad: 0, vni: VNI });
    }
    gw.add_local_port(
        VM_IFINDEX,
        LocalPort { vni: VNI, ofport: VM_OFPORT, port_key: VM_KEY, mac: VM_MAC, ..Default::default() },
    );
    gw
}

/// The inner frame: an ICMP echo from the remote VM to the local VM.
fn inner(dst: [u8; 6]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(REMOTE_VM_MAC, dst)
        .ipv4([203, 0, 113, 2], [203, 0, 113, 1], 64)
        .icmpv4_echo_request(9, 1)
        .write(&mut v, &[0xab; 56])
        .unwrap();
    v
}

fn over_ipv4(src: [u8; 4], dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(HV_MAC, GW_MAC).ipv4(src, dst, 64).udp(50123, dport).write(&mut v, payload).unwrap();
    v
}

fn over_ipv6(src: [u8; 16], dst: [u8; 16], payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(HV_MAC, GW_MAC).ipv6(src, dst, 64).udp(50123, 6081).write(&mut v, payload).unwrap();
    v
}

fn geneve4(opts: &[Vec<u8>], inner: &[u8]) -> Vec<u8> {
    over_ipv4(HV_IP4, GW_IP4, 6081, &geneve_payload(opts, VNI, inner))
}

#[test]
fn decap_without_options_by_inner_mac() {
    require_root!();
    let gw = gateway();
    let inner = inner(VM_MAC);
    let pkt = geneve4(&[], &inner);
    let run = test_run(gw.program("xgw_uplink"), &pkt);
    assert_eq!(run.verdict, XDP_REDIRECT);
    assert_eq!(run.data, inner, "output must be exactly the inner frame");
    let tunnel = gw.port_stats(TUNNEL_OFPORT);
    let vm = gw.port_stats(VM_OFPORT as u32);
    assert_eq!((tunnel.rx.packets, tunnel.rx.bytes), (1, pkt.len() as u64));
    assert_eq!((vm.tx.packets, vm.tx.bytes), (1, inner.len() as u64));
    assert!(gw.drops().values().all(|&n| n == 0));
}

#[test]
fn decap_with_ovn_option_uses_the_egress_key() {
    require_root!();
    let gw = gateway();
    // The inner destination MAC is unknown: the OVN egress key alone decides.
    let inner = inner([0x02, 0, 0, 0, 0, 0x99]);
    let pkt = geneve4(&[ovn_option(0x0005, VM_KEY)], &inner);
    let run = test_run(gw.program("xgw_uplink"), &pkt);
    assert_eq!((run.verdict, &run.data), (XDP_REDIRECT, &inner));
}

#[test]
fn decap_ipv6_with_non_critical_options_before_and_after_ovn() {
    require_root!();
    let gw = gateway();
    let inner = inner(VM_MAC);
    let opts = [option(0xffff, 0x01, &[1, 2, 3, 4, 5, 6, 7, 8]), ovn_option(1, VM_KEY), option(0x0103, 0x7f, &[])];
    let pkt = over_ipv6(HV_IP6, GW_IP6, &geneve_payload(&opts, VNI, &inner));
    let run = test_run(gw.program("xgw_uplink"), &pkt);
    assert_eq!((run.verdict, &run.data), (XDP_REDIRECT, &inner));
    assert_eq!(gw.port_stats(TUNNEL_OFPORT + 1).rx.packets, 1);
}

#[test]
fn bad_geneve_is_dropped_and_counted_by_reason() {
    require_root!();
    let gw = gateway();
    let inner = inner(VM_MAC);
    let with_hdr = |hdr: Vec<u8>, opts: Vec<u8>| {
        let mut p = hdr;
        p.extend(opts);
        p.extend_from_slice(&inner);
        over_ipv4(HV_IP4, GW_IP4, 6081, &p)
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("geneve_version", with_hdr(geneve_hdr(1, 0, 0, 0x6558, VNI), vec![])),
        ("geneve_protocol", with_hdr(geneve_hdr(0, 0, 0, 0x0800, VNI), vec![])),
        // Critical option of an unknown class (type high bit set).
        ("geneve_critical_option", geneve4(&[option(0xffff, 0x81, &[0; 4])], &inner)),
        // OVN's class and type but a length OVN never sends: not understood, critical.
        ("geneve_critical_option", geneve4(&[option(0x0102, 0x80, &[0; 8])], &inner)),
        // Opt Len says 1 word, the option claims 2 words of data.
        ("geneve_option_length", with_hdr(geneve_hdr(0, 1, 0, 0x6558, VNI), option(0xffff, 1, &[0; 8]))),
        ("unknown_tunnel", over_ipv4([198, 51, 100, 77], GW_IP4, 6081, &geneve_payload(&[], VNI, &inner))),
        ("unknown_tunnel", over_ipv4(HV_IP4, GW_IP4, 6081, &geneve_payload(&[], VNI + 1, &inner))),
        ("unknown_destination", geneve4(&[], &self::inner([0x02, 0, 0, 0, 0, 0x99]))),
        ("unknown_destination", geneve4(&[ovn_option(1, 0x0fff)], &inner)),
    ];
    let mut expected = std::collections::BTreeMap::new();
    for (reason, pkt) in &cases {
        let run = test_run(gw.program("xgw_uplink"), pkt);
        assert_eq!(run.verdict, XDP_DROP, "{reason}");
        *expected.entry(*reason).or_insert(0u64) += 1;
    }
    let drops = gw.drops();
    for (reason, n) in drops {
        assert_eq!(n, expected.get(reason).copied().unwrap_or(0), "drop counter {reason}");
    }
    assert_eq!(gw.port_stats(VM_OFPORT as u32).tx.packets, 0);
}

#[test]
fn traffic_not_for_the_gateway_passes_unchanged() {
    require_root!();
    let gw = gateway();
    let g = geneve_payload(&[], VNI, &inner(VM_MAC));
    let cases = [
        over_ipv4(HV_IP4, GW_IP4, 4789, &g),            // VXLAN port, not Geneve
        over_ipv4(HV_IP4, [198, 51, 100, 9], 6081, &g), // Geneve for another host
        arp_request(HV_MAC, HV_IP4, GW_IP4),
        ipv4_icmp_echo(&[0; 8]),
        ipv6_udp(1000, 6081, &g[..20]), // to another IPv6 host
    ];
    for pkt in &cases {
        let run = test_run(gw.program("xgw_uplink"), pkt);
        assert_eq!((run.verdict, &run.data), (XDP_PASS, pkt));
    }
    assert!(gw.drops().values().all(|&n| n == 0));
}

/// One case of the outer-IPv4 test: its name and the change to the header.
type Edit<'a> = (&'a str, &'a dyn Fn(&mut Ipv4Header));

/// The outer IPv4 header's own fields, which the datapath checks a word at
/// a time: DF (Open vSwitch sets it) and the reserved bit are ignored;
/// options, fragments and other protocols are the stack's.
#[test]
fn outer_ipv4_flags_options_and_fragments() {
    require_root!();
    let gw = gateway();
    let inner = inner(VM_MAC);
    let g = geneve_payload(&[ovn_option(1, VM_KEY)], VNI, &inner);
    let outer = |edit: &dyn Fn(&mut Ipv4Header)| {
        let mut ip = Ipv4Header::new(0, 64, IpNumber::UDP, HV_IP4, GW_IP4).unwrap();
        ip.dont_fragment = false;
        edit(&mut ip);
        let mut v = Vec::new();
        PacketBuilder::ethernet2(HV_MAC, GW_MAC)
            .ip(IpHeaders::Ipv4(ip, Default::default()))
            .udp(50123, 6081)
            .write(&mut v, &g)
            .unwrap();
        v
    };
    let decapped: [Edit; 3] = [
        ("plain", &|_| {}),
        ("DF", &|ip| ip.dont_fragment = true),
        ("TOS, ID and TTL", &|ip| {
            ip.dscp = etherparse::Ipv4Dscp::try_new(46).unwrap();
            ip.identification = 0xffff;
            ip.time_to_live = 1;
        }),
    ];
    for (what, edit) in decapped {
        let run = test_run(gw.program("xgw_uplink"), &outer(edit));
        assert_eq!((run.verdict, &run.data), (XDP_REDIRECT, &inner), "{what}");
    }
    let passed: [Edit; 4] = [
        ("MF", &|ip| ip.more_fragments = true),
        ("fragment offset 8", &|ip| ip.fragment_offset = IpFragOffset::try_new(1).unwrap()),
        ("highest offset bit", &|ip| ip.fragment_offset = IpFragOffset::try_new(0x1000).unwrap()),
        ("IPv4 options (IHL 6)", &|ip| ip.options = [1u8, 1, 1, 0][..].try_into().unwrap()),
    ];
    // The builder takes the protocol from its UDP step: TCP is patched in.
    let tcp = {
        let mut pkt = outer(&|_| {});
        let (mut ip, _) = Ipv4Header::from_slice(&pkt[14..]).unwrap();
        ip.protocol = IpNumber::TCP;
        ip.header_checksum = ip.calc_header_checksum();
        pkt[14..34].copy_from_slice(&ip.to_bytes());
        pkt
    };
    for (what, pkt) in passed.into_iter().map(|(what, edit)| (what, outer(edit))).chain([("protocol TCP", tcp)]) {
        let run = test_run(gw.program("xgw_uplink"), &pkt);
        assert_eq!((run.verdict, &run.data), (XDP_PASS, &pkt), "{what}");
    }
    assert!(gw.drops().values().all(|&n| n == 0), "{:?}", gw.drops());
    assert_eq!(gw.port_stats(VM_OFPORT as u32).tx.packets, decapped.len() as u64);
}

#[test]
fn truncated_at_every_byte_is_never_forwarded() {
    require_root!();
    let gw = gateway();
    for pkt in [
        geneve4(&[ovn_option(1, VM_KEY)], &inner(VM_MAC)),
        over_ipv6(HV_IP6, GW_IP6, &geneve_payload(&[ovn_option(1, VM_KEY)], VNI, &inner(VM_MAC))),
    ] {
        let full = test_run(gw.program("xgw_uplink"), &pkt);
        assert_eq!(full.verdict, XDP_REDIRECT);
        // BPF_PROG_TEST_RUN refuses XDP input shorter than an Ethernet header.
        for cut in 14..pkt.len() {
            let run = test_run(gw.program("xgw_uplink"), &pkt[..cut]);
            match run.verdict {
                XDP_PASS => assert_eq!(run.data, &pkt[..cut], "cut at {cut}: PASS must be unchanged"),
                XDP_DROP => {}
                v => panic!("cut at {cut}: verdict {v}, a truncated frame must never be forwarded"),
            }
        }
    }
    let drops = gw.drops();
    let counted: u64 = drops.values().sum();
    assert!(counted > 0 && drops["outer_length"] == counted, "{drops:?}");
}

#[test]
fn options_beyond_the_walk_limit_are_ignored_only_without_the_c_bit() {
    require_root!();
    let gw = gateway();
    let inner = inner(VM_MAC);
    // Twelve non-critical options: more than the datapath walks.
    let opts: Vec<u8> = (0..12).flat_map(|i| option(0xffff, i, &[i; 4])).collect();
    let with_flags = |flags: u8| {
        let mut p = geneve_hdr(0, (opts.len() / 4) as u8, flags, 0x6558, VNI);
        p.extend(&opts);
        p.extend_from_slice(&inner);
        over_ipv4(HV_IP4, GW_IP4, 6081, &p)
    };
    // C=0: the sender says no option is critical; the rest can be skipped.
    let run = test_run(gw.program("xgw_uplink"), &with_flags(0));
    assert_eq!((run.verdict, &run.data), (XDP_REDIRECT, &inner));
    // C=1: an unvetted option might be critical, so the packet is dropped.
    let run = test_run(gw.program("xgw_uplink"), &with_flags(0x40));
    assert_eq!(run.verdict, XDP_DROP);
    assert_eq!(gw.drops()["geneve_option_limit"], 1);
}

/// A flow-keyed tunnel (OVN's `key=flow`) is one tunnel per remote chassis
/// carrying every VNI the gateway serves; a fixed key to the same remote
/// wins for its own VNI, as in OVS; a VNI no local port serves is counted
/// as such, and a fixed-key tunnel carries nothing but its VNI.
#[test]
fn a_flow_keyed_tunnel_carries_every_served_vni() {
    require_root!();
    const FLOW_OFPORT: u32 = 9;
    const HV3_IP4: [u8; 4] = [198, 51, 100, 3];
    const VM2_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x20, 0x00, 0x03];
    const VM2_OFPORT: u16 = 4;
    const VM2_KEY: u16 = 0x0012;
    let mut gw = gateway();
    let flow =
        |remote| Tunnel { remote, nexthop_mac: HV_MAC, flags: TUNNEL_OVN_METADATA, _pad: 0, vni: TUNNEL_KEY_FLOW };
    // HV_IP4 has a fixed-key tunnel for VNI (ofport 7) and a flow-keyed one;
    // HV3 only a flow-keyed one.
    gw.add_tunnel(FLOW_OFPORT, flow(ipv4_mapped(HV_IP4)));
    gw.add_tunnel(FLOW_OFPORT + 1, flow(ipv4_mapped(HV3_IP4)));
    gw.add_local_port_entries(VM2_OFPORT, VM_IFINDEX, VNI + 1, VM2_KEY, VM2_MAC);

    let from = |src, vni, egress| {
        let inner = inner(if egress == VM2_KEY { VM2_MAC } else { VM_MAC });
        (over_ipv4(src, GW_IP4, 6081, &geneve_payload(&[ovn_option(1, egress)], vni, &inner)), inner)
    };
    let cases = [
        (HV3_IP4, VNI, VM_KEY, FLOW_OFPORT + 1, VM_OFPORT),
        (HV3_IP4, VNI + 1, VM2_KEY, FLOW_OFPORT + 1, VM2_OFPORT),
        (HV_IP4, VNI, VM_KEY, TUNNEL_OFPORT, VM_OFPORT),
        (HV_IP4, VNI + 1, VM2_KEY, FLOW_OFPORT, VM2_OFPORT),
    ];
    for (src, vni, egress, tunnel, port) in cases {
        let (before_rx, before_tx) = (gw.port_stats(tunnel).rx.packets, gw.port_stats(port as u32).tx.packets);
        let (pkt, inner) = from(src, vni, egress);
        let run = test_run(gw.program("xgw_uplink"), &pkt);
        assert_eq!((run.verdict, &run.data), (XDP_REDIRECT, &inner), "from {src:?} VNI {vni}");
        assert_eq!(
            gw.port_stats(tunnel).rx.packets,
            before_rx + 1,
            "from {src:?} VNI {vni}: arrived on ofport {tunnel}"
        );
        assert_eq!(gw.port_stats(port as u32).tx.packets, before_tx + 1, "from {src:?} VNI {vni}: to ofport {port}");
    }
    assert!(gw.drops().values().all(|&n| n == 0), "{:?}", gw.drops());

    // VNI 1's key in VNI 2 names no port there: never delivered across VNIs.
    let (cross, _) = from(HV3_IP4, VNI + 1, VM_KEY);
    assert_eq!(test_run(gw.program("xgw_uplink"), &cross).verdict, XDP_DROP);
    assert_eq!(gw.drops()["unknown_destination"], 1);
    let (unserved, _) = from(HV3_IP4, VNI + 2, VM_KEY);
    assert_eq!(test_run(gw.program("xgw_uplink"), &unserved).verdict, XDP_DROP);
    assert_eq!(gw.drops()["unknown_vni"], 1);
    // HV_IP6 has only a fixed key: any other VNI is no tunnel of it.
    let v6 = over_ipv6(HV_IP6, GW_IP6, &geneve_payload(&[ovn_option(1, VM2_KEY)], VNI + 1, &inner(VM2_MAC)));
    assert_eq!(test_run(gw.program("xgw_uplink"), &v6).verdict, XDP_DROP);
    assert_eq!(gw.drops()["unknown_tunnel"], 1);
    let total: u64 = gw.drops().values().sum();
    assert_eq!(total, 3, "{:?}", gw.drops());
}
