//! Open vSwitch facing a peer that is not OVS: a bare kernel namespace that
//! answers ARP/ND and nothing else, the way xgw's namespace will look to OVS.
//! It shows what xgw must send to be accepted and what it will receive:
//! crafted Geneve frames go in through an AF_PACKET socket, and the VM's
//! echo reply coming back (Geneve again) proves OVS delivered them.
use std::{net::UdpSocket, time::Duration};

use etherparse::PacketBuilder;
use xgw_tests::{
    capture::inject,
    ovs::{mac_str, VM_IF},
    packet::{
        geneve::{self, geneve_payload, option, ovn_option, Outer, Parsed},
        udp_checksum,
    },
    require_root, Capture, Geneve, Netns, OvsHypervisor, Veth,
};

const VNI: u32 = 5001;
const VM_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x20, 0x00, 0x01];
const VM_IP: [u8; 4] = [203, 0, 113, 1];
/// The far end's "VM" behind the bare peer; the OVS VM knows its MAC
/// statically, so its replies never need an ARP through the tunnel.
const FAR_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x99, 0x00, 0x01];
const FAR_IP: [u8; 4] = [203, 0, 113, 99];
const HV_IP4: [u8; 4] = [198, 51, 100, 1];
const PEER_IP4: [u8; 4] = [198, 51, 100, 2];
const HV_IP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const PEER_IP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// One OVS hypervisor with Geneve ports toward the bare peer over IPv4
/// (`gnv4`) and IPv6 (`gnv6`), same VNI; the peer's underlay veth is `ul0`.
struct Topo {
    hv: OvsHypervisor,
    peer: Netns,
    peer_mac: [u8; 6],
}

fn topo() -> Topo {
    let hv_ns = Netns::new("ow");
    let peer = Netns::new("pw");
    Veth::new(&hv_ns, "ul0", "", &peer, "ul0", "198.51.100.2/24");
    peer.ok(&["ip", "addr", "add", "2001:db8::2/64", "dev", "ul0", "nodad"]);
    let hv = OvsHypervisor::builder(hv_ns, "ul0")
        .ip4("198.51.100.1/24")
        .ip6("2001:db8::1/64")
        .vm(VM_MAC, Some("203.0.113.1/24"), None)
        .start();
    hv.vm().ok(&[
        "ip",
        "neigh",
        "replace",
        "203.0.113.99",
        "lladdr",
        &mac_str(FAR_MAC),
        "dev",
        VM_IF,
        "nud",
        "permanent",
    ]);
    hv.add_geneve("gnv4", &Geneve::new("198.51.100.2", VNI));
    hv.add_geneve("gnv6", &Geneve::new("2001:db8::2", VNI));
    let peer_mac = mac(&peer.ok(&["cat", "/sys/class/net/ul0/address"]));
    Topo { hv, peer, peer_mac }
}

fn mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s.trim().split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    v.try_into().unwrap()
}

/// Sends one UDP datagram per source port from the VM to the far VM.
fn vm_udp(t: &Topo, sports: &[u16]) {
    t.hv.vm().enter(|| {
        for &sport in sports {
            let s = UdpSocket::bind(("203.0.113.1", sport)).expect("bind in VM");
            s.send_to(b"flow", "203.0.113.99:9").expect("send in VM");
            // Paced: a burst of new flows can overrun OVS's upcall path on a
            // loaded 2-core machine, and this test is about hashing, not bursts.
            std::thread::sleep(Duration::from_millis(5));
        }
    });
}

/// Waits until OVS's tunnel neighbour cache has `ip`.
fn wait_tnl_neigh(t: &Topo, ip: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let out = t.hv.appctl(&["tnl/neigh/show"]);
        if out.lines().any(|l| l.split_whitespace().next() == Some(ip)) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "OVS never resolved {ip}:\n{out}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ovs_resolves_the_remote_and_hashes_flows_onto_source_ports() {
    require_root!();
    let t = topo();
    let cap = Capture::start(&t.peer, "ul0", &[]);
    // Flooded (the far MAC is unknown to OVS), so each datagram leaves
    // through both tunnel ports: one IPv4 and one IPv6 copy. The first one
    // finds no neighbour entry for the remote.
    vm_udp(&t, &[39999]);
    wait_tnl_neigh(&t, "198.51.100.2");
    wait_tnl_neigh(&t, "2001:db8::2");
    let sports: Vec<u16> = (40000..40016).collect();
    vm_udp(&t, &sports);
    // Generous under CI load: tcpdump must have written every frame.
    std::thread::sleep(Duration::from_millis(1000));
    let frames = cap.stop();

    // OVS resolves remote_ip itself, from br-phy's MAC and IP: an ARP request
    // (and an ND solicitation for IPv6) that the peer must answer. The
    // packet that found no entry is dropped, not queued.
    let hv_mac = t.hv.underlay_mac();
    let arp = frames.iter().position(|f| f[12..14] == [0x08, 0x06] && f[6..12] == hv_mac && f[20..22] == [0, 1]);
    let arp = arp.expect("no ARP request from OVS");
    assert_eq!(frames[arp][28..32], HV_IP4, "ARP sender is br-phy's IP");
    assert_eq!(frames[arp][38..42], PEER_IP4, "ARP target is remote_ip");
    // br-phy's kernel runs duplicate address detection for its link-local
    // address at about the same time, from the same MAC: those solicitations
    // come from the unspecified address (RFC 4862 5.4.2) and are not OVS's.
    let ns = frames.iter().position(|f| {
        f[6..12] == hv_mac
            && f[12..14] == [0x86, 0xdd]
            && f[20] == 58
            && f.get(54) == Some(&135)
            && f[22..38] != [0; 16]
    });
    let ns = ns.expect("no neighbour solicitation from OVS");
    assert_eq!(frames[ns][22..38], HV_IP6, "NS source is br-phy's IP");
    assert_eq!(frames[ns][62..78], PEER_IP6, "NS target is remote_ip");

    let gnv: Vec<(usize, Parsed)> =
        frames.iter().enumerate().filter_map(|(i, f)| geneve::parse(f).map(|g| (i, g))).collect();
    let v4: Vec<&(usize, Parsed)> = gnv.iter().filter(|(_, g)| matches!(g.outer, Outer::V4 { .. })).collect();
    let v6: Vec<&(usize, Parsed)> = gnv.iter().filter(|(_, g)| matches!(g.outer, Outer::V6 { .. })).collect();
    assert!(v4.iter().all(|(i, _)| *i > arp), "Geneve sent before the ARP answer");
    assert!(v6.iter().all(|(i, _)| *i > ns), "Geneve sent before the ND answer");
    assert_eq!((v4.len(), v6.len()), (sports.len(), sports.len()), "one copy per family of each later datagram");
    for (_, g) in &gnv {
        assert_eq!((g.eth_src, g.eth_dst), (hv_mac, t.peer_mac), "outer MACs: br-phy to the ARP/ND answer");
        assert_eq!(g.vni, VNI);
        match g.outer {
            Outer::V4 { src, dst, .. } => {
                assert_eq!((src, dst), (HV_IP4, PEER_IP4));
                assert_eq!(g.udp_csum, 0);
            }
            Outer::V6 { src, dst, .. } => {
                assert_eq!((src, dst), (HV_IP6, PEER_IP6));
                assert!(g.udp_csum_ok);
            }
        }
    }
    // Source port: a hash of the inner flow (same flow, same port, whatever
    // the outer family), spread over 32768..61000.
    let inner_sport = |g: &Parsed| u16::from_be_bytes([g.inner[34], g.inner[35]]);
    let mut by_flow = std::collections::BTreeMap::<u16, std::collections::BTreeSet<u16>>::new();
    for (_, g) in &gnv {
        by_flow.entry(inner_sport(g)).or_default().insert(g.udp_src);
        assert!((32768..61000).contains(&g.udp_src), "{}", g.udp_src);
    }
    assert_eq!(by_flow.keys().copied().collect::<Vec<u16>>(), sports, "the first datagram (39999) was dropped");
    assert!(by_flow.values().all(|s| s.len() == 1), "one outer port per inner flow: {by_flow:?}");
    let distinct: std::collections::BTreeSet<u16> = by_flow.values().flatten().copied().collect();
    assert!(distinct.len() >= sports.len() - 2, "{} flows on only {} source ports", sports.len(), distinct.len());
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Csum {
    Zero,
    Right,
    Wrong,
}

/// An ICMP echo request from the far VM to the OVS VM, with ICMP id `id`,
/// in Geneve with `opts`, from the bare peer to OVS.
fn crafted(t: &Topo, v6: bool, csum: Csum, dst_mac: [u8; 6], flags: u8, opts: &[Vec<u8>], id: u16) -> Vec<u8> {
    let mut inner = Vec::new();
    PacketBuilder::ethernet2(FAR_MAC, VM_MAC)
        .ipv4(FAR_IP, VM_IP, 64)
        .icmpv4_echo_request(id, 1)
        .write(&mut inner, &[0x5a; 32])
        .unwrap();
    let mut payload = geneve_payload(opts, VNI, &inner);
    payload[1] = flags;
    let mut f = Vec::new();
    let b = PacketBuilder::ethernet2(t.peer_mac, dst_mac);
    let (udp_at, src, dst): (usize, &[u8], &[u8]) = if v6 {
        b.ipv6(PEER_IP6, HV_IP6, 64).udp(50000 + id, 6081).write(&mut f, &payload).unwrap();
        (54, &PEER_IP6, &HV_IP6)
    } else {
        b.ipv4(PEER_IP4, HV_IP4, 64).udp(50000 + id, 6081).write(&mut f, &payload).unwrap();
        (34, &PEER_IP4, &HV_IP4)
    };
    f[udp_at + 6..udp_at + 8].copy_from_slice(&[0, 0]);
    let right = udp_checksum(src, dst, &f[udp_at..]);
    let c = match csum {
        Csum::Zero => 0,
        Csum::Right => right,
        Csum::Wrong => right ^ 0x0101,
    };
    f[udp_at + 6..udp_at + 8].copy_from_slice(&c.to_be_bytes());
    f
}

/// One crafted frame: what, IPv6 outer, UDP checksum, outer destination MAC,
/// Geneve flags byte, options, and whether OVS is expected to deliver it.
type Case = (&'static str, bool, Csum, [u8; 6], u8, Vec<Vec<u8>>, bool);

/// Injects each case (ICMP id 100 + index) and returns, per case, whether
/// the VM's echo reply came back through OVS, i.e. whether OVS delivered it.
fn delivered(t: &Topo, cases: &[Case], purge: bool) -> Vec<(&'static str, bool)> {
    let cap = Capture::start(&t.peer, "ul0", &["udp", "port", "6081"]);
    for (i, (_, v6, csum, dmac, flags, opts, _)) in cases.iter().enumerate() {
        // Each case from an empty datapath flow cache: a cached flow matches
        // fewer fields than OVS checks on a miss (see the last block of
        // what_ovs_accepts_from_a_peer) and would hand one case the previous
        // case's verdict.
        if purge {
            t.hv.appctl(&["revalidator/purge"]);
        }
        inject(&t.peer, "ul0", &[crafted(t, *v6, *csum, *dmac, *flags, opts, 100 + i as u16)]);
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let frames = cap.stop();
    let br = t.hv.underlay_mac();
    let replied: std::collections::BTreeSet<u16> = frames
        .iter()
        .filter_map(|f| geneve::parse(f))
        .filter(|g| g.eth_src == br)
        .filter_map(|g| {
            let p = etherparse::SlicedPacket::from_ethernet(&g.inner).ok()?;
            match p.transport? {
                etherparse::TransportSlice::Icmpv4(icmp) if icmp.type_u8() == 0 => {
                    Some(u16::from_be_bytes([icmp.slice()[4], icmp.slice()[5]]))
                }
                _ => None,
            }
        })
        .collect();
    cases.iter().enumerate().map(|(i, c)| (c.0, replied.contains(&(100 + i as u16)))).collect()
}

fn expected(cases: &[Case]) -> Vec<(&'static str, bool)> {
    cases.iter().map(|c| (c.0, c.6)).collect()
}

#[test]
fn what_ovs_accepts_from_a_peer() {
    require_root!();
    let t = topo();
    // Let OVS resolve the peer first, so that replies are not lost to ARP/ND.
    vm_udp(&t, &[40000]);
    wait_tnl_neigh(&t, "198.51.100.2");
    wait_tnl_neigh(&t, "2001:db8::2");

    let br = t.hv.underlay_mac();
    let other = [0x02, 0x00, 0x5e, 0x77, 0x77, 0x77];
    let ovn = || vec![ovn_option(0x11, 0x22)];
    let unknown_critical = || vec![option(0xffff, 0x81, &[1, 2, 3, 4])];
    let unknown = || vec![option(0xffff, 0x01, &[1, 2, 3, 4])];
    let cases: Vec<Case> = vec![
        ("IPv4, UDP checksum 0", false, Csum::Zero, br, 0, vec![], true),
        ("IPv4, UDP checksum right", false, Csum::Right, br, 0, vec![], true),
        ("IPv4, UDP checksum wrong", false, Csum::Wrong, br, 0, vec![], false),
        ("IPv6, UDP checksum 0", true, Csum::Zero, br, 0, vec![], true),
        ("IPv6, UDP checksum right", true, Csum::Right, br, 0, vec![], true),
        ("IPv6, UDP checksum wrong", true, Csum::Wrong, br, 0, vec![], false),
        ("outer destination MAC not br-phy's", false, Csum::Zero, other, 0, vec![], false),
        ("O (OAM) flag", false, Csum::Zero, br, 0x80, vec![], true),
        // A critical option OVS has no TLV mapping for is dropped (RFC 8926
        // 3.5), OVN's included: an OVS not run by OVN drops xgw's OVN option.
        ("no TLV map: unknown non-critical option", false, Csum::Zero, br, 0, unknown(), true),
        ("no TLV map: unknown critical option", false, Csum::Zero, br, 0x40, unknown_critical(), false),
        ("no TLV map: OVN option", false, Csum::Zero, br, 0x40, ovn(), false),
    ];
    assert_eq!(delivered(&t, &cases, true), expected(&cases), "delivered by OVS (true) or dropped");

    // What OVN sets up on every chassis: the OVN option mapped. It is
    // accepted, whatever the C flag says (OVS looks at each option's type);
    // other critical options and the OVN option at another length are not.
    t.hv.ofctl(&["add-tlv-map", xgw_tests::ovs::BR_INT, xgw_tests::ovs::OVN_TLV_MAP]);
    let cases: Vec<Case> = vec![
        ("OVN TLV map: OVN option", false, Csum::Zero, br, 0x40, ovn(), true),
        ("OVN TLV map: OVN option, C flag clear", false, Csum::Zero, br, 0, ovn(), true),
        ("OVN TLV map: OVN option over IPv6", true, Csum::Right, br, 0x40, ovn(), true),
        (
            "OVN TLV map: OVN option with 8 bytes",
            false,
            Csum::Zero,
            br,
            0x40,
            vec![option(0x0102, 0x80, &[0; 8])],
            false,
        ),
        ("OVN TLV map: unknown critical option", false, Csum::Zero, br, 0x40, unknown_critical(), false),
        ("OVN TLV map: unknown critical option, C clear", false, Csum::Zero, br, 0, unknown_critical(), false),
        ("OVN TLV map: unknown non-critical option", false, Csum::Zero, br, 0, unknown(), true),
    ];
    assert_eq!(delivered(&t, &cases, true), expected(&cases), "delivered by OVS (true) or dropped");
    assert!(t.hv.coverage("drop_action_invalid_tunnel_metadata") >= 4);

    // OVS checks options only on a datapath flow miss. The flow it then
    // caches matches the options' total length, not their content, so a
    // critical option slips through behind an accepted frame of the same
    // shape. xgw must not count on OVS to drop what xgw should not send.
    let cases: Vec<Case> = vec![
        ("cached: unknown non-critical option", false, Csum::Zero, br, 0, unknown(), true),
        ("cached: then unknown critical option, same length", false, Csum::Zero, br, 0x40, unknown_critical(), true),
    ];
    t.hv.appctl(&["revalidator/purge"]);
    assert_eq!(delivered(&t, &cases, false), expected(&cases), "delivered by OVS (true) or dropped");
}

/// `options:csum=true` turns the outer UDP checksum on over IPv4. Over IPv6
/// the userspace datapath always sends one: `csum=false` does not give
/// RFC 6935 zero checksums (netdev-native-tnl.c: `is_ipv6 || FLOW_TNL_F_CSUM`).
#[test]
fn csum_option_turns_ipv4_checksums_on_and_ipv6_ones_never_off() {
    require_root!();
    let t = topo();
    t.hv.vsctl(&["set", "interface", "gnv4", "options:csum=true"]);
    t.hv.vsctl(&["set", "interface", "gnv6", "options:csum=false"]);
    vm_udp(&t, &[39999]);
    wait_tnl_neigh(&t, "198.51.100.2");
    wait_tnl_neigh(&t, "2001:db8::2");
    let cap = Capture::start(&t.peer, "ul0", &["udp", "port", "6081"]);
    vm_udp(&t, &[40000, 40001]);
    std::thread::sleep(Duration::from_millis(200));
    let gnv: Vec<Parsed> = cap.stop().iter().filter_map(|f| geneve::parse(f)).collect();
    let v4: Vec<&Parsed> = gnv.iter().filter(|g| matches!(g.outer, Outer::V4 { .. })).collect();
    let v6: Vec<&Parsed> = gnv.iter().filter(|g| matches!(g.outer, Outer::V6 { .. })).collect();
    assert_eq!((v4.len(), v6.len()), (2, 2));
    assert!(
        v4.iter().all(|g| g.udp_csum_ok),
        "csum=true over IPv4: {:?}",
        v4.iter().map(|g| g.udp_csum).collect::<Vec<_>>()
    );
    assert!(
        v6.iter().all(|g| g.udp_csum_ok),
        "csum=false over IPv6: {:?}",
        v6.iter().map(|g| g.udp_csum).collect::<Vec<_>>()
    );
}
