//! Port security on a local port (`xgw_local` through BPF_PROG_TEST_RUN):
//! what a VM may send, as OVN's `port_security` column says. The port's
//! entries are the controller's own (`LocalPort::wire`, `wire_security`),
//! so the contract between the two is what is tested; the frames are built
//! here with etherparse and by hand from RFC 826 / RFC 4861, and each one's
//! fate is read from the drop counters.
use etherparse::{Icmpv6Header, Icmpv6Type, IpNumber, Ipv6FlowLabel, Ipv6Header, PacketBuilder};
use xgw::{
    ofport::LocalPort as PortSpec,
    types::{AllowedAddress, IfName, MacAddr, Name, PortKey, UnicastIp, Vni},
};
use xgw_common::maps::*;
use xgw_tests::{
    addrs::*,
    gateway::TestGateway,
    packet::{arp_request, test_run_on, XDP_DROP, XDP_REDIRECT},
    require_root,
};

const LO: u32 = 1;
const OFPORT: u16 = 3;
const KEY: u16 = 0x11;
const T4: u16 = 7;
/// A second MAC the VM may use with one IPv4 address, and a third with any.
const MAC2: [u8; 6] = [0x02, 0x00, 0x5e, 0x20, 0x00, 0x09];
const MAC3: [u8; 6] = [0x02, 0x00, 0x5e, 0x20, 0x00, 0x0a];
/// Listed nowhere.
const ROGUE: [u8; 6] = [0x02, 0x00, 0x5e, 0x20, 0x00, 0x66];
const REMOTE_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x20, 0x00, 0x02];
const REMOTE_IP: [u8; 4] = [203, 0, 113, 2];
const IP2: [u8; 4] = [203, 0, 113, 9];
const OTHER_IP: [u8; 4] = [203, 0, 113, 50];
const VM_IP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const OTHER_IP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x55];
const REMOTE_IP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

fn spec(ip: Option<[u8; 4]>, port_security: bool, allowed: &[&str]) -> PortSpec {
    PortSpec {
        name: Name::new("vm").unwrap(),
        ifname: IfName::new("lo").unwrap(),
        vni: Vni::new(VNI).unwrap(),
        port_key: PortKey::new(KEY).unwrap(),
        mac: MacAddr(VM_MAC),
        ip: ip.map(|ip| UnicastIp::new(ip.into()).unwrap()),
        ofport_request: None,
        port_security,
        allowed: allowed.iter().map(|a| a.parse::<AllowedAddress>().unwrap()).collect(),
    }
}

fn gateway() -> TestGateway {
    let mut gw = TestGateway::load(&["xgw_local"]);
    gw.set_test_uplink(LO, 1500);
    gw.add_tunnel(
        T4 as u32,
        Tunnel { remote: ipv4_mapped(HV_IP4), nexthop_mac: HV_MAC, flags: TUNNEL_OVN_METADATA, _pad: 0, vni: VNI },
    );
    gw.add_remote(VNI, REMOTE_MAC, Some(ipv4_mapped(REMOTE_IP)), T4, 0x22);
    gw
}

/// Makes the test_run port (ingress `lo`) the port `p` describes.
fn configure(gw: &mut TestGateway, p: &PortSpec) {
    gw.set_port_security(OFPORT, p.wire_security());
    gw.add_local_port(LO, p.wire(OFPORT));
}

fn udp4(src_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(src_mac, REMOTE_MAC).ipv4(src, dst, 64).udp(sport, dport).write(&mut v, &[7; 18]).unwrap();
    v
}

fn udp6(src_mac: [u8; 6], src: [u8; 16]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(src_mac, REMOTE_MAC)
        .ipv6(src, REMOTE_IP6, 64)
        .udp(5000, 7)
        .write(&mut v, &[7; 18])
        .unwrap();
    v
}

/// fe80::/64 with the modified EUI-64 of `mac` (RFC 4291 appendix A).
fn link_local(mac: [u8; 6]) -> [u8; 16] {
    [0xfe, 0x80, 0, 0, 0, 0, 0, 0, mac[0] ^ 2, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]]
}

/// A neighbour solicitation (135) or advertisement (136) from `src_mac` /
/// `src` about `target`, with a link-layer address option naming `lladdr`
/// (source for a solicitation, target for an advertisement), if given.
fn nd(
    icmp_type: u8,
    src_mac: [u8; 6],
    src: [u8; 16],
    dst: [u8; 16],
    target: [u8; 16],
    lladdr: Option<[u8; 6]>,
) -> Vec<u8> {
    let mut body = target.to_vec();
    if let Some(mac) = lladdr {
        body.extend([if icmp_type == 135 { 1 } else { 2 }, 1]);
        body.extend(mac);
    }
    let flags = if icmp_type == 136 { [0x60, 0, 0, 0] } else { [0; 4] };
    let icmp = Icmpv6Header::with_checksum(
        Icmpv6Type::Unknown { type_u8: icmp_type, code_u8: 0, bytes5to8: flags },
        src,
        dst,
        &body,
    )
    .unwrap();
    let mut v = Vec::new();
    v.extend_from_slice(&[0x33, 0x33, dst[12], dst[13], dst[14], dst[15]]);
    v.extend_from_slice(&src_mac);
    v.extend_from_slice(&0x86ddu16.to_be_bytes());
    let ip = Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::ZERO,
        payload_length: (8 + body.len()) as u16,
        next_header: IpNumber::IPV6_ICMP,
        hop_limit: 255,
        source: src,
        destination: dst,
    };
    ip.write(&mut v).unwrap();
    icmp.write(&mut v).unwrap();
    v.extend(body);
    v
}

const ALL_NODES: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

fn solicited_node(target: [u8; 16]) -> [u8; 16] {
    [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, target[13], target[14], target[15]]
}

/// What port security did with `frame`: `None` if it let it through (and
/// whatever came next happened), or the drop reason it counted.
fn verdict(gw: &TestGateway, frame: &[u8]) -> Option<&'static str> {
    const REASONS: [&str; 3] = ["port_security_mac", "port_security_ip", "port_security_arp_nd"];
    let before = gw.drops();
    let run = test_run_on(gw.program("xgw_local"), frame, LO);
    let after = gw.drops();
    let hit: Vec<&'static str> = REASONS.into_iter().filter(|r| after[r] != before[r]).collect();
    match hit[..] {
        [] => None,
        [reason] => {
            assert_eq!(run.verdict, XDP_DROP, "{reason} counted but the frame was not dropped");
            assert_eq!(after[reason], before[reason] + 1, "{reason} counted twice");
            Some(reason)
        }
        _ => panic!("one frame, several reasons: {hit:?}"),
    }
}

fn arp(eth_src: [u8; 6], sha: [u8; 6], spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    let mut f = arp_request(sha, spa, tpa);
    f[6..12].copy_from_slice(&eth_src);
    f
}

#[test]
fn a_vm_sends_only_from_the_addresses_its_port_lists() {
    require_root!();
    let mut gw = gateway();
    // As OVN would list it: the port's own MAC with its IPv4 and an IPv6
    // address, a second MAC with one IPv4 address, a third with any.
    let own6 = "2001:db8:1::1";
    let p = spec(
        Some(VM_IP),
        true,
        &[
            &format!("{} {own6}", MacAddr(VM_MAC)),
            &format!("{} 203.0.113.9", MacAddr(MAC2)),
            &MacAddr(MAC3).to_string(),
        ],
    );
    let lp = p.wire(OFPORT);
    assert_eq!(
        lp.sec,
        PORTSEC_ON | PORTSEC_RESTRICTED | PORTSEC_HAS_IP | PORTSEC_MORE_IPS | PORTSEC_OTHER_MACS,
        "{lp:?}"
    );
    configure(&mut gw, &p);
    let ip_drop = Some("port_security_ip");
    let nd_drop = Some("port_security_arp_nd");

    // Unicast IPv4: the port's own address goes on to the tunnel.
    let own = udp4(VM_MAC, VM_IP, REMOTE_IP, 4000, 7);
    assert_eq!(verdict(&gw, &own), None);
    assert_eq!(test_run_on(gw.program("xgw_local"), &own, LO).verdict, XDP_REDIRECT);
    assert_eq!(verdict(&gw, &udp4(VM_MAC, OTHER_IP, REMOTE_IP, 4000, 7)), ip_drop, "own MAC, unlisted IP");
    assert_eq!(verdict(&gw, &udp4(VM_MAC, IP2, REMOTE_IP, 4000, 7)), ip_drop, "own MAC, the second MAC's IP");
    assert_eq!(verdict(&gw, &udp4(ROGUE, VM_IP, REMOTE_IP, 4000, 7)), Some("port_security_mac"), "unlisted MAC");
    assert_eq!(verdict(&gw, &udp4(MAC2, IP2, REMOTE_IP, 4000, 7)), None, "second MAC, its IP");
    assert_eq!(verdict(&gw, &udp4(MAC2, VM_IP, REMOTE_IP, 4000, 7)), ip_drop, "second MAC, the port's IP");
    assert_eq!(verdict(&gw, &udp4(MAC3, OTHER_IP, REMOTE_IP, 4000, 7)), None, "a MAC listed without IPs");
    // DHCP discover is the one IPv4 frame from 0.0.0.0 a restricted MAC sends.
    assert_eq!(verdict(&gw, &udp4(VM_MAC, [0; 4], [255; 4], 68, 67)), None, "DHCP discover");
    assert_eq!(verdict(&gw, &udp4(VM_MAC, [0; 4], [255; 4], 68, 68)), ip_drop, "0.0.0.0, not DHCP");
    assert_eq!(verdict(&gw, &udp4(VM_MAC, [0; 4], REMOTE_IP, 68, 67)), ip_drop, "0.0.0.0, not broadcast");

    // ARP: the sender MAC must be the frame's, the sender IP a listed one.
    assert_eq!(verdict(&gw, &arp(VM_MAC, VM_MAC, VM_IP, REMOTE_IP)), None);
    assert_eq!(verdict(&gw, &arp(VM_MAC, ROGUE, VM_IP, REMOTE_IP)), nd_drop, "sender MAC not the frame's");
    assert_eq!(verdict(&gw, &arp(VM_MAC, VM_MAC, OTHER_IP, REMOTE_IP)), nd_drop, "sender IP not listed");
    assert_eq!(verdict(&gw, &arp(VM_MAC, VM_MAC, [0; 4], OTHER_IP)), None, "an RFC 5227 probe claims nothing");
    assert_eq!(verdict(&gw, &arp(MAC2, MAC2, IP2, REMOTE_IP)), None);
    assert_eq!(verdict(&gw, &arp(MAC3, MAC3, OTHER_IP, REMOTE_IP)), None, "a MAC listed without IPs");
    assert_eq!(verdict(&gw, &arp(ROGUE, ROGUE, VM_IP, REMOTE_IP)), Some("port_security_mac"));
    // Cut short: nothing to check it against, so it is not let through.
    let arp_short = arp(VM_MAC, VM_MAC, VM_IP, REMOTE_IP);
    assert_eq!(verdict(&gw, &arp_short[..30]), nd_drop, "ARP cut short");

    // IPv6: listed addresses, the MAC's own link-local one, and DAD / MLD
    // from the unspecified address.
    let own6: [u8; 16] = own6.parse::<std::net::Ipv6Addr>().unwrap().octets();
    assert_eq!(own6, VM_IP6);
    assert_eq!(verdict(&gw, &udp6(VM_MAC, VM_IP6)), None);
    assert_eq!(verdict(&gw, &udp6(VM_MAC, link_local(VM_MAC))), None, "own link-local address");
    assert_eq!(verdict(&gw, &udp6(VM_MAC, link_local(MAC2))), ip_drop, "another MAC's link-local address");
    assert_eq!(verdict(&gw, &udp6(VM_MAC, OTHER_IP6)), ip_drop, "unlisted IPv6");
    assert_eq!(verdict(&gw, &udp6(MAC2, VM_IP6)), ip_drop, "second MAC has no IPv6 address");
    assert_eq!(verdict(&gw, &udp6(MAC3, OTHER_IP6)), None, "a MAC listed without IPs");
    assert_eq!(verdict(&gw, &udp6(VM_MAC, [0; 16])), ip_drop, ":: outside DAD and MLD");
    let dad = nd(135, VM_MAC, [0; 16], solicited_node(OTHER_IP6), OTHER_IP6, None);
    assert_eq!(verdict(&gw, &dad), None, "duplicate address detection");

    // Neighbour discovery: the link-layer address option must be the
    // sender's MAC, an advertisement's target an address it may claim.
    let ns = |ll| nd(135, VM_MAC, VM_IP6, solicited_node(REMOTE_IP6), REMOTE_IP6, ll);
    assert_eq!(verdict(&gw, &ns(Some(VM_MAC))), None);
    assert_eq!(verdict(&gw, &ns(None)), None);
    assert_eq!(verdict(&gw, &ns(Some(ROGUE))), nd_drop, "NS naming another MAC");
    let na = |target, ll| nd(136, VM_MAC, VM_IP6, ALL_NODES, target, ll);
    assert_eq!(verdict(&gw, &na(VM_IP6, Some(VM_MAC))), None);
    assert_eq!(verdict(&gw, &na(link_local(VM_MAC), Some(VM_MAC))), None, "NA for own link-local address");
    assert_eq!(verdict(&gw, &na(OTHER_IP6, Some(VM_MAC))), nd_drop, "NA for an unlisted address");
    assert_eq!(verdict(&gw, &na(REMOTE_IP6, None)), nd_drop, "NA for another port's address");
    assert_eq!(verdict(&gw, &na(VM_IP6, Some(ROGUE))), nd_drop, "NA naming another MAC");
    assert_eq!(verdict(&gw, &nd(136, MAC3, link_local(MAC3), ALL_NODES, OTHER_IP6, Some(MAC3))), None, "MAC3: any");
    assert_eq!(verdict(&gw, &nd(136, MAC3, link_local(MAC3), ALL_NODES, OTHER_IP6, Some(ROGUE))), nd_drop);

    // Other EtherTypes from a listed MAC are not port security's business.
    let mut lldp = udp4(VM_MAC, VM_IP, REMOTE_IP, 4000, 7);
    lldp[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
    assert_eq!(verdict(&gw, &lldp), None);
    lldp[6..12].copy_from_slice(&ROGUE);
    assert_eq!(verdict(&gw, &lldp), Some("port_security_mac"));
}

#[test]
fn a_port_without_ip_checks_the_mac_and_one_without_port_security_nothing() {
    require_root!();
    let mut gw = gateway();

    // Only the port's MAC, any IP.
    let p = spec(None, true, &[]);
    assert_eq!(p.wire(OFPORT).sec, PORTSEC_ON);
    configure(&mut gw, &p);
    assert_eq!(verdict(&gw, &udp4(VM_MAC, OTHER_IP, REMOTE_IP, 4000, 7)), None);
    assert_eq!(verdict(&gw, &udp6(VM_MAC, OTHER_IP6)), None);
    assert_eq!(verdict(&gw, &arp(VM_MAC, VM_MAC, OTHER_IP, REMOTE_IP)), None);
    assert_eq!(verdict(&gw, &udp4(ROGUE, VM_IP, REMOTE_IP, 4000, 7)), Some("port_security_mac"));
    assert_eq!(verdict(&gw, &arp(VM_MAC, ROGUE, VM_IP, REMOTE_IP)), Some("port_security_arp_nd"));

    // The port's own MAC and IP only: nothing to read beyond LOCAL_PORTS,
    // and a stale PORT_SECURITY entry that allowed more changes nothing.
    let p = spec(Some(VM_IP), true, &[]);
    assert_eq!(p.wire(OFPORT).sec, PORTSEC_ON | PORTSEC_RESTRICTED | PORTSEC_HAS_IP);
    configure(&mut gw, &p);
    gw.set_port_security(OFPORT, spec(Some(VM_IP), true, &["02:00:5e:20:00:66 203.0.113.50"]).wire_security());
    assert_eq!(verdict(&gw, &udp4(VM_MAC, VM_IP, REMOTE_IP, 4000, 7)), None);
    assert_eq!(verdict(&gw, &udp4(VM_MAC, OTHER_IP, REMOTE_IP, 4000, 7)), Some("port_security_ip"));
    assert_eq!(verdict(&gw, &udp4(ROGUE, OTHER_IP, REMOTE_IP, 4000, 7)), Some("port_security_mac"));

    // Off: anything goes (and is forwarded as before).
    let p = spec(Some(VM_IP), false, &[]);
    assert_eq!(p.wire(OFPORT).sec, 0);
    configure(&mut gw, &p);
    let spoofed = udp4(ROGUE, OTHER_IP, REMOTE_IP, 4000, 7);
    assert_eq!(verdict(&gw, &spoofed), None);
    assert_eq!(test_run_on(gw.program("xgw_local"), &spoofed, LO).verdict, XDP_REDIRECT);
    assert_eq!(verdict(&gw, &arp(ROGUE, MAC2, OTHER_IP, REMOTE_IP)), None);
}
