//! Jumbo frames (multi-buffer XDP): frames larger than a page, which the
//! kernel hands to XDP as a first buffer and fragments. Through
//! BPF_PROG_TEST_RUN (which builds such a frame from any input longer than
//! a page, for a program loaded with BPF_F_XDP_HAS_FRAGS): decap and encap
//! of an 8000-byte frame byte for byte at RFC 8926's offsets, the IPv6 UDP
//! checksum over every fragment, counters by whole-frame length, ICMP
//! too-big for a frame beyond the uplink MTU; in namespaces: a 9000-byte
//! underlay in native mode between two gateways, DF pings of 8000 bytes
//! across it both ways. Expected bytes are built here with etherparse and
//! by hand from the RFCs, never from the datapath's definitions.
use std::time::Duration;

use etherparse::{
    icmpv4::DestUnreachableHeader, Icmpv4Type, IpNumber, Ipv4HeaderSlice, Ipv6FlowLabel, Ipv6Header, PacketBuilder,
    UdpHeader,
};
use xgw_common::maps::*;
use xgw_tests::{
    addrs::*,
    gateway::TestGateway,
    netns::{Netns, Veth},
    ovs::mac_str,
    packet::{geneve::*, *},
    require_root,
};

const REMOTE_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x20, 0x00, 0x02];
const REMOTE_IP: [u8; 4] = [203, 0, 113, 2];
const REMOTE_IP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const VM_IP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const REMOTE6_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x20, 0x00, 0x06];
/// IPv4 tunnel with OVN's option; IPv6 tunnel without.
const T4: u16 = 7;
const T6: u16 = 8;
const VM_OFPORT: u16 = 3;
const VM_KEY: u16 = 0x0011;
const REMOTE_KEY: u16 = 0x0022;
const REMOTE6_KEY: u16 = 0x0026;
/// lo: present in every namespace, as test_run's ingress needs.
const LO: u32 = 1;
/// The jumbo frame: 8000 bytes, about two pages.
const JUMBO: usize = 8000;

fn gateway(mtu: u32) -> TestGateway {
    let mut gw = TestGateway::load(&["xgw_uplink", "xgw_local"]);
    gw.set_test_uplink(LO, mtu);
    gw.add_tunnel(
        T4 as u32,
        Tunnel { remote: ipv4_mapped(HV_IP4), nexthop_mac: HV_MAC, flags: TUNNEL_OVN_METADATA, _pad: 0, vni: VNI },
    );
    gw.add_tunnel(T6 as u32, Tunnel { remote: HV_IP6, nexthop_mac: HV_MAC, flags: TUNNEL_IPV6, _pad: 0, vni: VNI });
    gw.add_local_port(
        LO,
        LocalPort { vni: VNI, ofport: VM_OFPORT, port_key: VM_KEY, mac: VM_MAC, ..Default::default() },
    );
    gw.add_remote(VNI, REMOTE_MAC, Some(ipv4_mapped(REMOTE_IP)), T4, REMOTE_KEY);
    gw.add_remote(VNI, REMOTE6_MAC, Some(REMOTE_IP6), T6, REMOTE6_KEY);
    gw
}

/// Bytes that differ at every offset, so that a byte moved, lost or
/// repeated across a buffer boundary shows.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// A UDP datagram of `len` bytes (Ethernet header included) from the local
/// VM to the IPv4 remote, DF set.
fn frame4(len: usize) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(VM_MAC, REMOTE_MAC)
        .ipv4(VM_IP, REMOTE_IP, 64)
        .udp(4000, 7)
        .write(&mut v, &pattern(len - 14 - 20 - 8))
        .unwrap();
    v
}

fn frame6(len: usize) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(VM_MAC, REMOTE6_MAC)
        .ipv6(VM_IP6, REMOTE_IP6, 64)
        .udp(5555, 7)
        .write(&mut v, &pattern(len - 14 - 40 - 8))
        .unwrap();
    v
}

/// What OVS sends over IPv4, with our key as ingress and theirs as egress.
fn expected_ipv4(inner: &[u8], sport: u16) -> Vec<u8> {
    ovs_ipv4_frame(inner, sport, VM_KEY, REMOTE_KEY)
}

#[test]
fn encap_of_a_multi_buffer_frame_is_byte_exact() {
    require_root!();
    let gw = gateway(9000);
    let inner = frame4(JUMBO);
    let run = test_run_on(gw.program("xgw_local"), &inner, LO);
    assert_eq!(run.verdict, XDP_REDIRECT, "drops {:?}", gw.drops());
    let sport = u16::from_be_bytes([run.data[34], run.data[35]]);
    assert!(sport >= 49152);
    // Outer IP total length at offset 16, UDP length at 38: the whole frame.
    assert_eq!(u16::from_be_bytes([run.data[16], run.data[17]]) as usize, 20 + 8 + 16 + JUMBO);
    assert_eq!(u16::from_be_bytes([run.data[38], run.data[39]]) as usize, 8 + 16 + JUMBO);
    assert!(run.data == expected_ipv4(&inner, sport), "encapsulated jumbo frame differs");
    // Counted by the whole frame, fragments included.
    let (port, tunnel) = (gw.port_stats(VM_OFPORT as u32), gw.port_stats(T4 as u32));
    assert_eq!((port.rx.packets, port.rx.bytes), (1, JUMBO as u64));
    assert_eq!((tunnel.tx.packets, tunnel.tx.bytes), (1, (JUMBO + 58) as u64));
    assert!(gw.drops().values().all(|&n| n == 0), "{:?}", gw.drops());
}

#[test]
fn encap_ipv6_sums_the_udp_checksum_over_every_fragment() {
    require_root!();
    let gw = gateway(MAX_FRAME_IPV6 - 14);
    // Across the first buffer's end (about 3.5 KiB in test_run) and up to
    // the largest frame the datapath sums.
    let longest = MAX_FRAME_IPV6 as usize - (14 + 40 + 8 + 8);
    for len in [3400, 3500, 3521, 3600, 4095, 4096, 4097, 5000, 7999, JUMBO, 9001, 12345, longest] {
        let inner = frame6(len);
        let run = test_run_on(gw.program("xgw_local"), &inner, LO);
        assert_eq!(run.verdict, XDP_REDIRECT, "frame {len}: drops {:?}", gw.drops());
        let out = &run.data;
        let sport = u16::from_be_bytes([out[54], out[55]]);
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
        assert_eq!(out.len(), want.len(), "frame {len}");
        assert!(out == &want, "frame {len}: checksum {:02x?} want {:04x}", &out[60..62], udp.checksum);
    }
    assert!(gw.drops().values().all(|&n| n == 0), "{:?}", gw.drops());
}

#[test]
fn a_frame_beyond_what_the_ipv6_checksum_sums_is_dropped_and_counted() {
    require_root!();
    let gw = gateway(30000);
    // Beyond what the first buffer (at most a page) and the summed
    // fragments hold together.
    let inner = frame6(MAX_FRAME_IPV6 as usize + 4096 + 100);
    let run = test_run_on(gw.program("xgw_local"), &inner, LO);
    assert_eq!(run.verdict, XDP_DROP);
    assert_eq!(gw.drops()["multibuffer"], 1, "{:?} {:?}", gw.drops(), gw.port_stats(VM_OFPORT as u32));
    // IPv4 has no such limit: its UDP checksum is zero.
    let run = test_run_on(gw.program("xgw_local"), &frame4(MAX_FRAME_IPV6 as usize + 4096 + 100), LO);
    assert_eq!(run.verdict, XDP_REDIRECT, "{:?}", gw.drops());
}

#[test]
fn decap_of_a_multi_buffer_frame_is_byte_exact() {
    require_root!();
    let gw = gateway(9000);
    let mut inner = Vec::new();
    PacketBuilder::ethernet2(REMOTE_MAC, VM_MAC)
        .ipv4(REMOTE_IP, VM_IP, 64)
        .udp(7, 4000)
        .write(&mut inner, &pattern(JUMBO - 42))
        .unwrap();
    let payload = geneve_payload(&[ovn_option(REMOTE_KEY, VM_KEY)], VNI, &inner);
    let mut outer = Vec::new();
    PacketBuilder::ethernet2(HV_MAC, GW_MAC)
        .ipv4(HV_IP4, GW_IP4, 64)
        .udp(50123, 6081)
        .write(&mut outer, &payload)
        .unwrap();
    assert_eq!(outer.len(), JUMBO + 58);
    let run = test_run(gw.program("xgw_uplink"), &outer);
    assert_eq!(run.verdict, XDP_REDIRECT, "drops {:?}", gw.drops());
    // Everything from the inner Ethernet header (offset 14 + 20 + 8 + 16)
    // on, and nothing else.
    assert!(run.data == inner, "decapsulated jumbo frame differs ({} bytes out)", run.data.len());
    let (tunnel, port) = (gw.port_stats(T4 as u32), gw.port_stats(VM_OFPORT as u32));
    assert_eq!((tunnel.rx.packets, tunnel.rx.bytes), (1, (JUMBO + 58) as u64));
    assert_eq!((port.tx.packets, port.tx.bytes), (1, JUMBO as u64));

    // Lengths checked against the whole frame: one byte claimed beyond it,
    // or one byte less than it, is not forwarded.
    for delta in [1i32, -1] {
        let mut bad = outer.clone();
        let ip_len = (u16::from_be_bytes([bad[16], bad[17]]) as i32 + delta) as u16;
        bad[16..18].copy_from_slice(&ip_len.to_be_bytes());
        let mut ip = Ipv4HeaderSlice::from_slice(&bad[14..]).unwrap().to_header();
        ip.header_checksum = ip.calc_header_checksum();
        ip.write(&mut &mut bad[14..34]).unwrap();
        assert_eq!(test_run(gw.program("xgw_uplink"), &bad).verdict, XDP_DROP, "IP length {delta:+}");
    }
    assert_eq!(gw.drops()["outer_length"], 2, "{:?}", gw.drops());
}

#[test]
fn a_jumbo_frame_beyond_the_uplink_mtu_is_answered_with_icmp_and_counted() {
    require_root!();
    // A VM with a 9000-byte MTU behind a 1500-byte underlay.
    let gw = gateway(1500);
    let big = frame4(JUMBO);
    let run = test_run_on(gw.program("xgw_local"), &big, LO);
    assert_eq!(run.verdict, XDP_TX);
    let next_hop_mtu = (1500 - 58) as u16;
    let mut want = Vec::new();
    PacketBuilder::ethernet2(REMOTE_MAC, VM_MAC)
        .ipv4(REMOTE_IP, VM_IP, 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded { next_hop_mtu }))
        .write(&mut want, &big[14..14 + 512])
        .unwrap();
    let mut ip = Ipv4HeaderSlice::from_slice(&want[14..]).unwrap().to_header();
    ip.dont_fragment = false;
    ip.header_checksum = ip.calc_header_checksum();
    let mut fixed = want[..14].to_vec();
    ip.write(&mut fixed).unwrap();
    fixed.extend_from_slice(&want[34..]);
    // The fragments are gone: the reply is the 554-byte error alone.
    assert_eq!(run.data, fixed);
    assert_eq!(gw.drops()["mtu_exceeded"], 1, "{:?}", gw.drops());
    assert_eq!(gw.replies()["too_big"], 1);
    let port = gw.port_stats(VM_OFPORT as u32);
    assert_eq!((port.rx.bytes, port.tx.bytes), (JUMBO as u64, fixed.len() as u64));
}

/// Two gateways on a 9000-byte underlay, native XDP everywhere; the VMs
/// have MTU 8900 (9000 less the IPv4 Geneve overhead with OVN's option,
/// 58, rounded down).
///
///   vm1 [eth0] -- [p] gw1 [ul] -- [ul] gw2 [p] -- [eth0] vm2
struct Jumbo {
    dps: Vec<TestGateway>,
    gws: Vec<Netns>,
    vms: Vec<Netns>,
}

const GWS_MAC: [[u8; 6]; 2] = [[0x02, 0x00, 0x5e, 0x10, 0, 0x11], [0x02, 0x00, 0x5e, 0x10, 0, 0x12]];
const GWS_IP: [[u8; 4]; 2] = [[198, 51, 100, 11], [198, 51, 100, 12]];
const VMS_MAC: [[u8; 6]; 2] = [[0x02, 0x00, 0x5e, 0x20, 0, 0x11], [0x02, 0x00, 0x5e, 0x20, 0, 0x12]];
const VMS_IP: [[u8; 4]; 2] = [[203, 0, 113, 11], [203, 0, 113, 12]];
const KEYS: [u16; 2] = [0x0031, 0x0032];

fn ip4(a: [u8; 4]) -> String {
    std::net::Ipv4Addr::from(a).to_string()
}

impl Jumbo {
    fn new() -> Jumbo {
        let gws = vec![Netns::new("jgw1"), Netns::new("jgw2")];
        let vms = vec![Netns::new("jvm1"), Netns::new("jvm2")];
        Veth::new(&gws[0], "ul", &format!("{}/24", ip4(GWS_IP[0])), &gws[1], "ul", &format!("{}/24", ip4(GWS_IP[1])));
        let mut dps = Vec::new();
        for i in 0..2 {
            let (gw, vm) = (&gws[i], &vms[i]);
            gw.ok(&["ip", "link", "set", "ul", "address", &mac_str(GWS_MAC[i])]);
            Veth::new(gw, "p", "", vm, "eth0", &format!("{}/24", ip4(VMS_IP[i])));
            vm.ok(&["ip", "link", "set", "eth0", "address", &mac_str(VMS_MAC[i])]);
            vm.ok(&["ethtool", "-K", "eth0", "tx", "off"]);
            let mut dp = TestGateway::load(&["xgw_uplink", "xgw_local", "xgw_pass"]);
            dp.in_netns(gw);
            // Native XDP first, then the jumbo MTU: what a single-buffer
            // program refused (the veth peer capped at 3506).
            dp.attach(gw, "xgw_uplink", "ul");
            dp.attach(gw, "xgw_local", "p");
            dp.attach(vm, "xgw_pass", "eth0");
            dps.push(dp);
        }
        for i in 0..2 {
            let (gw, vm) = (&gws[i], &vms[i]);
            for (ns, dev, mtu) in [(gw, "ul", "9000"), (gw, "p", "9000"), (vm, "eth0", "8900")] {
                let out = ns.exec(&["ip", "link", "set", "dev", dev, "mtu", mtu]);
                assert!(
                    out.status.success(),
                    "{}: mtu {mtu} on {dev}: {}",
                    ns.name,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        for i in 0..2 {
            let (gw, other) = (&gws[i], 1 - i);
            let dp = &mut dps[i];
            let up = gw.ifindex("ul");
            dp.set_uplink(Uplink {
                ifindex: up,
                mtu: 9000,
                mac: GWS_MAC[i],
                flags: UPLINK_HAS_IP4,
                _pad: 0,
                ip4: GWS_IP[i],
                ip6: [0; 16],
            });
            dp.set_uplink_devmap(up);
            dp.add_tunnel(
                T4 as u32,
                Tunnel {
                    remote: ipv4_mapped(GWS_IP[other]),
                    nexthop_mac: GWS_MAC[other],
                    flags: TUNNEL_OVN_METADATA,
                    _pad: 0,
                    vni: VNI,
                },
            );
            dp.add_local_port(
                gw.ifindex("p"),
                LocalPort { vni: VNI, ofport: VM_OFPORT, port_key: KEYS[i], mac: VMS_MAC[i], ..Default::default() },
            );
            dp.add_neigh(VNI, ipv4_mapped(VMS_IP[i]), VMS_MAC[i]);
            dp.add_remote(VNI, VMS_MAC[other], Some(ipv4_mapped(VMS_IP[other])), T4, KEYS[other]);
        }
        Jumbo { dps, gws, vms }
    }

    fn counters(&self) -> String {
        (0..2)
            .map(|i| {
                let dp = &self.dps[i];
                format!(
                    "{}: drops {:?} replies {:?} port {:?} tunnel {:?}\n",
                    self.gws[i].name,
                    dp.drops().into_iter().filter(|(_, n)| *n > 0).collect::<Vec<_>>(),
                    dp.replies(),
                    dp.port_stats(VM_OFPORT as u32),
                    dp.port_stats(T4 as u32)
                )
            })
            .collect()
    }
}

#[test]
fn an_8000_byte_df_ping_crosses_a_9000_byte_native_underlay_both_ways() {
    require_root!();
    let t = Jumbo::new();
    for (from, to) in [(0, 1), (1, 0)] {
        let before = t.dps[from].port_stats(T4 as u32).tx;
        let out =
            t.vms[from].exec(&["ping", "-M", "do", "-s", "8000", "-c", "3", "-i", "0.2", "-W", "2", &ip4(VMS_IP[to])]);
        assert!(
            out.status.success(),
            "ping -M do -s 8000 from vm{} to vm{}: {}{}\n{}",
            from + 1,
            to + 1,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            t.counters()
        );
        // The echoes crossed as jumbo Geneve frames: 8000 bytes of ICMP
        // data, 8042 of inner frame, 8100 on the underlay.
        let after = t.dps[from].port_stats(T4 as u32).tx;
        let (n, bytes) = (after.packets - before.packets, after.bytes - before.bytes);
        assert!(n >= 3 && bytes >= 3 * 8100, "{n} frames, {bytes} bytes encapsulated\n{}", t.counters());
    }
    // One byte more than the VM's MTU allows with DF: refused by the VM
    // itself, as it should be, not by the gateway.
    let out = t.vms[0].exec(&["ping", "-M", "do", "-s", "8873", "-c", "1", "-W", "1", &ip4(VMS_IP[1])]);
    assert!(!out.status.success());
    std::thread::sleep(Duration::from_millis(100));
    for dp in &t.dps {
        let drops = dp.drops();
        assert!(drops.iter().all(|(r, &n)| n == 0 || *r == "flood"), "drops {drops:?}");
    }
}

/// The largest MTU `dev` in `ns` accepts now (bisection with `ip link`).
fn largest_mtu(ns: &Netns, dev: &str) -> u32 {
    let (mut ok, mut bad) = (68u32, 65536u32);
    while bad - ok > 1 {
        let mid = (ok + bad) / 2;
        if ns.exec(&["ip", "link", "set", "dev", dev, "mtu", &mid.to_string()]).status.success() {
            ok = mid;
        } else {
            bad = mid;
        }
    }
    ok
}

#[test]
fn native_xdp_on_a_veth_leaves_both_ends_free_to_take_a_jumbo_mtu() {
    require_root!();
    let (a, b) = (Netns::new("jmtua"), Netns::new("jmtub"));
    Veth::new(&a, "ul", "198.51.100.21/24", &b, "peer", "198.51.100.22/24");
    let mut dp = TestGateway::load(&["xgw_uplink", "xgw_local", "xgw_pass"]);
    dp.attach(&a, "xgw_uplink", "ul");
    let (ul, peer) = (largest_mtu(&a, "ul"), largest_mtu(&b, "peer"));
    eprintln!("native xgw_uplink on a veth: largest MTU {ul} on its end, {peer} on the peer");
    // A single-buffer program capped the peer at 3506 (a page less
    // headroom and skb_shared_info): no Geneve jumbo underlay.
    assert!(ul >= 9000 && peer >= 9000, "ul {ul}, peer {peer}");
    // Both ends running XDP, as the tests' veth peers do.
    dp.attach(&b, "xgw_pass", "peer");
    let (ul, peer) = (largest_mtu(&a, "ul"), largest_mtu(&b, "peer"));
    eprintln!("with xgw_pass on the peer too: {ul} and {peer}");
    assert!(ul >= 9000 && peer >= 9000, "ul {ul}, peer {peer}");
}

#[test]
fn show_and_the_log_report_an_uplink_mtu_the_datapath_cannot_carry() {
    require_root!();
    let (ns, peer) = (Netns::new("jshow"), Netns::new("jshowp"));
    Veth::new(&ns, "ul", "198.51.100.31/24", &peer, "w", "198.51.100.32/24");
    ns.ok(&["ip", "addr", "add", "2001:db8::31/64", "dev", "ul", "nodad"]);
    ns.ok(&["ip", "link", "set", "dev", "ul", "mtu", "9000"]);
    let mut d = xgw_tests::daemon::Daemon::new(&ns, "ul", &["198.51.100.31", "2001:db8::31"]);
    d.start();
    // A jumbo underlay of 9000 in native mode: carried, nothing to say.
    let u = &d.json(&["show"])["uplink"];
    assert_eq!(
        (u["mtu"].as_u64(), u["max_mtu"].as_u64(), u["mode"].as_str()),
        (Some(9000), Some(16370), Some("native"))
    );
    assert!(u.get("mtu_warning").is_none(), "{u}");
    assert!(!d.cli(&["show"]).contains("mtu warning"));
    // Beyond what IPv6 encap sums: followed, and said.
    ns.ok(&["ip", "link", "set", "dev", "ul", "mtu", "20000"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let u = loop {
        let u = d.json(&["show"])["uplink"].clone();
        if u["mtu"].as_u64() == Some(20000) || std::time::Instant::now() > deadline {
            break u;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(u["mtu"].as_u64(), Some(20000), "the daemon did not follow the MTU: {u}");
    let w = u["mtu_warning"].as_str().unwrap_or_else(|| panic!("no mtu_warning: {u}"));
    assert!(w.contains("mtu 20000 exceeds the 16370") && w.contains("multibuffer"), "{w}");
    let human = d.cli(&["show"]);
    assert!(human.contains(&format!("mtu warning: {w}")), "{human}");
    let log = d.stop();
    assert!(log.contains("mtu 20000 exceeds the 16370"), "log:\n{log}");
}
