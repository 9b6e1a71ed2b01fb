//! Open vSwitch as a real Geneve peer: two OVS hypervisors (userspace
//! datapath, each in its own namespace) joined by a veth underlay, and one
//! OVS facing a bare kernel namespace. What crosses the underlay is captured
//! and taken apart here, so the bytes xgw must produce and accept are those
//! of a real OVS, not of our reading of the RFC.
use xgw_common::geneve as wire;
use xgw_tests::{
    ovs::{BR_INT, VM_PORT},
    packet::geneve::{self, Outer, Parsed},
    require_root, Capture, Geneve, Netns, OvnKeys, OvsHypervisor, Veth,
};

const VNI: u32 = 5001;
const VM1_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x20, 0x00, 0x01];
const VM2_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x20, 0x00, 0x02];
const HV1_KEYS: OvnKeys = OvnKeys { ingress: 0x0011, egress: 0x0022 };
const HV2_KEYS: OvnKeys = OvnKeys { ingress: 0x0022, egress: 0x0011 };

/// Two hypervisors on one veth underlay, each with a VM and a Geneve port
/// `gnv0` toward the other over IPv4 or IPv6.
struct Pair {
    hv1: OvsHypervisor,
    hv2: OvsHypervisor,
}

fn pair(ipv6_underlay: bool, ovn_option: bool) -> Pair {
    let ns1 = Netns::new("o1");
    let ns2 = Netns::new("o2");
    Veth::new(&ns1, "ul0", "", &ns2, "ul0", "");
    let hv = |ns, n: u8, mac| {
        OvsHypervisor::builder(ns, "ul0")
            .ip4(&format!("198.51.100.{n}/24"))
            .ip6(&format!("2001:db8::{n}/64"))
            .vm(mac, Some(&format!("203.0.113.{n}/24")), None)
            .start()
    };
    let hv1 = hv(ns1, 1, VM1_MAC);
    let hv2 = hv(ns2, 2, VM2_MAC);
    for (a, b) in [(&hv1, &hv2), (&hv2, &hv1)] {
        let remote = if ipv6_underlay { b.ip6() } else { b.ip4() }.unwrap();
        a.add_geneve("gnv0", &Geneve::new(remote, VNI));
    }
    if ovn_option {
        // Each side sends its keys and forwards to its VM only what carries
        // the other side's: the option must survive the trip and be parsed.
        hv1.install_ovn_option("gnv0", HV1_KEYS, Some(HV2_KEYS));
        hv2.install_ovn_option("gnv0", HV2_KEYS, Some(HV1_KEYS));
    }
    Pair { hv1, hv2 }
}

fn icmp_echo(inner: &[u8]) -> Option<(u8, [u8; 4], [u8; 4])> {
    let p = etherparse::SlicedPacket::from_ethernet(inner).ok()?;
    let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
        return None;
    };
    let Some(etherparse::TransportSlice::Icmpv4(icmp)) = &p.transport else {
        return None;
    };
    Some((icmp.type_u8(), ip.header().source(), ip.header().destination()))
}

/// Pings VM2 from VM1 while capturing on hv1's underlay veth; returns the
/// Geneve frames carrying ICMP echo (request or reply).
fn ping_and_capture(p: &Pair, count: u32) -> Vec<Parsed> {
    let cap = Capture::start(p.hv1.ns(), "ul0", &["udp"]);
    assert!(p.hv1.vm_ping("203.0.113.2", count), "VM1 cannot ping VM2 across OVS Geneve");
    let frames = cap.stop();
    let udp_frames = frames.len();
    let parsed: Vec<Parsed> = frames.iter().filter_map(|f| geneve::parse(f)).collect();
    assert_eq!(parsed.len(), udp_frames, "UDP on the underlay that is not to port 6081");
    parsed.into_iter().filter(|g| icmp_echo(&g.inner).is_some()).collect()
}

/// What every OVS Geneve data frame has, whatever the underlay.
fn check_geneve(g: &Parsed, with_option: bool) {
    assert_eq!(g.udp_dst, 6081);
    assert_eq!(g.version, 0);
    assert_eq!(g.protocol, 0x6558, "Transparent Ethernet Bridging");
    assert_eq!(g.vni, VNI);
    assert_eq!(g.reserved, 0);
    // OVS hashes the inner flow into the ephemeral range (netdev-native-tnl.c:
    // tnl_udp_port_min/max = 32768..61000).
    assert!((32768..61000).contains(&g.udp_src), "UDP source port {}", g.udp_src);
    let (inner_type, src, _) = icmp_echo(&g.inner).unwrap();
    let from_hv1 = src == [203, 0, 113, 1];
    assert_eq!(inner_type, if from_hv1 { 8 } else { 0 });
    if with_option {
        let keys = if from_hv1 { HV1_KEYS } else { HV2_KEYS };
        assert_eq!(g.options.len(), 1, "{:?}", g.options);
        let o = &g.options[0];
        assert_eq!((o.class, o.typ, o.data.len()), (0x0102, 0x80, 4));
        assert_eq!(o.data, keys.metadata().to_be_bytes());
        // OVS sets C when any option is critical (RFC 8926 3.4), and the
        // header and option bytes are exactly what xgw's own builders make.
        assert_eq!(g.flags, wire::FLAG_CRITICAL);
        assert_eq!(g.header, wire::header(VNI, wire::OVN_OPT_LEN, wire::FLAG_CRITICAL));
        let raw: Vec<u8> = [&o.class.to_be_bytes()[..], &[o.typ, 1], &o.data].concat();
        assert_eq!(raw, wire::ovn_option(keys.ingress, keys.egress));
    } else {
        assert!(g.options.is_empty());
        assert_eq!(g.flags, 0);
        assert_eq!(g.header, wire::header(VNI, 0, 0));
    }
}

#[test]
fn ovs_geneve_over_ipv4_underlay_with_ovn_option() {
    require_root!();
    let p = pair(false, true);
    let frames = ping_and_capture(&p, 3);
    assert!(frames.len() >= 6, "expected 3 requests and 3 replies, got {}", frames.len());
    for g in &frames {
        check_geneve(g, true);
        let Outer::V4 { ttl, df, id, tos, .. } = g.outer else { panic!("IPv6 outer on an IPv4 tunnel") };
        // OVS IPv4 defaults: no UDP checksum, DF set, TTL 64, TOS 0, and an
        // IP ID of 0 (DF makes it meaningless, RFC 6864).
        assert_eq!(g.udp_csum, 0, "OVS sends no UDP checksum over IPv4 by default");
        assert!(df);
        assert_eq!((ttl, tos, id), (64, 0, 0));
        let from_hv1 = icmp_echo(&g.inner).unwrap().1 == [203, 0, 113, 1];
        let (hv_from, hv_to) = if from_hv1 { (&p.hv1, &p.hv2) } else { (&p.hv2, &p.hv1) };
        assert_eq!(g.eth_src, hv_from.underlay_mac(), "outer source is br-phy's MAC");
        assert_eq!(g.eth_dst, hv_to.underlay_mac(), "outer destination is the peer's br-phy MAC");
    }
    // One flow, one source port per direction.
    let mut sports: Vec<u16> = frames.iter().map(|g| g.udp_src).collect();
    sports.sort();
    sports.dedup();
    assert_eq!(sports.len(), 2, "{sports:?}");
    // The receiving flows matched the keys: OVS parsed the option we checked.
    let c = p.hv2.port_counters(BR_INT, VM_PORT);
    assert!(c.tx_packets.unwrap() >= 3, "{c:?}");
}

#[test]
fn ovs_geneve_over_ipv6_underlay() {
    require_root!();
    let p = pair(true, true);
    let frames = ping_and_capture(&p, 3);
    assert!(frames.len() >= 6, "expected 3 requests and 3 replies, got {}", frames.len());
    for g in &frames {
        check_geneve(g, true);
        let Outer::V6 { hop_limit, tclass, flow_label, .. } = g.outer else { panic!("IPv4 outer on an IPv6 tunnel") };
        // IPv6 has no header checksum: OVS computes the UDP one by default.
        assert!(g.udp_csum != 0 && g.udp_csum_ok, "UDP checksum {:#06x}", g.udp_csum);
        assert_eq!((hop_limit, tclass, flow_label), (64, 0, 0));
    }
}

#[test]
fn ovs_geneve_without_options_is_the_bare_header() {
    require_root!();
    let p = pair(false, false);
    let frames = ping_and_capture(&p, 2);
    assert!(frames.len() >= 4);
    for g in &frames {
        check_geneve(g, false);
    }
}
