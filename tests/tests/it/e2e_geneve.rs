//! End to end in namespaces: two gateways running the real datapath (one
//! standing in for a second hypervisor), each with a VM namespace behind a
//! local port, joined by an underlay bridge. Ping and an iperf3 TCP transfer
//! cross the tunnel in both directions, over an IPv4 and an IPv6 underlay,
//! and a capture on the underlay decodes as the Geneve we meant to send.
//!
//!   vm1 [eth0] -- [p1] gw1 [ul] -- w1 [br0 in wire] w2 -- [ul] gw2 [p2] -- [eth0] vm2
use std::{path::Path, time::Duration};

use etherparse::{NetSlice, SlicedPacket, TransportSlice, UdpHeader};
use xgw_common::maps::*;
use xgw_tests::{
    gateway::TestGateway,
    netns::{unique_name, Netns, Veth},
    ovs::mac_str,
    require_root,
};

const VNI: u32 = 5001;
const TUNNEL_OFPORT: u16 = 10;
const PORT_OFPORT: u16 = 3;
const GW_MAC: [[u8; 6]; 2] = [[0x02, 0x00, 0x5e, 0x10, 0, 1], [0x02, 0x00, 0x5e, 0x10, 0, 2]];
const VM_MAC: [[u8; 6]; 2] = [[0x02, 0x00, 0x5e, 0x20, 0, 1], [0x02, 0x00, 0x5e, 0x20, 0, 2]];
const GW_IP4: [[u8; 4]; 2] = [[198, 51, 100, 1], [198, 51, 100, 2]];
const GW_IP6: [[u8; 16]; 2] = [
    [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
];
const VM_IP4: [[u8; 4]; 2] = [[203, 0, 113, 1], [203, 0, 113, 2]];
const VM_IP6: [[u8; 16]; 2] = [
    [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
];
/// Logical port keys of the two VMs (OVN style, 15 bits).
const VM_KEY: [u16; 2] = [0x0011, 0x0022];

fn ip4(a: [u8; 4]) -> String {
    std::net::Ipv4Addr::from(a).to_string()
}

fn ip6(a: [u8; 16]) -> String {
    std::net::Ipv6Addr::from(a).to_string()
}

struct Side {
    gw: Netns,
    vm: Netns,
    dp: TestGateway,
}

struct Topology {
    // Field order is drop order: datapaths detach before namespaces go.
    sides: Vec<Side>,
    wire: Netns,
}

impl Topology {
    fn new(v6_underlay: bool) -> Topology {
        let wire = Netns::new("wire");
        wire.ok(&["ip", "link", "add", "br0", "type", "bridge"]);
        wire.ok(&["ip", "link", "set", "br0", "up"]);
        let mut sides = Vec::new();
        for i in 0..2 {
            let gw = Netns::new(&format!("gw{}", i + 1));
            let vm = Netns::new(&format!("vm{}", i + 1));
            let w = format!("w{}", i + 1);
            Veth::new(&gw, "ul", &format!("{}/24", ip4(GW_IP4[i])), &wire, &w, "");
            gw.ok(&["ip", "addr", "add", &format!("{}/64", ip6(GW_IP6[i])), "dev", "ul", "nodad"]);
            gw.ok(&["ip", "link", "set", "ul", "address", &mac_str(GW_MAC[i])]);
            wire.ok(&["ip", "link", "set", &w, "master", "br0"]);
            Veth::new(&gw, "p", "", &vm, "eth0", &format!("{}/24", ip4(VM_IP4[i])));
            vm.ok(&["ip", "link", "set", "eth0", "address", &mac_str(VM_MAC[i])]);
            vm.ok(&["ip", "addr", "add", &format!("{}/64", ip6(VM_IP6[i])), "dev", "eth0", "nodad"]);
            // XDP sees the frame before a partial checksum would be filled
            // in: the VM must hand over complete checksums.
            vm.ok(&["ethtool", "-K", "eth0", "tx", "off"]);
            // Room for the outer headers on a 1500-byte underlay, as OVN
            // advertises to its VMs: 1500 - (14 + 40 + 8 + 8 + 8).
            vm.ok(&["ip", "link", "set", "eth0", "mtu", "1422"]);

            let mut dp = TestGateway::load(&["xgw_uplink", "xgw_local", "xgw_pass"]);
            dp.in_netns(&gw);
            let up = gw.ifindex("ul");
            let port = gw.ifindex("p");
            dp.set_uplink(Uplink {
                ifindex: up,
                mtu: 1500,
                mac: GW_MAC[i],
                flags: UPLINK_HAS_IP4 | UPLINK_HAS_IP6,
                _pad: 0,
                ip4: GW_IP4[i],
                ip6: GW_IP6[i],
            });
            dp.set_uplink_devmap(up);
            let other = 1 - i;
            let (remote, flags) = if v6_underlay {
                (GW_IP6[other], TUNNEL_OVN_METADATA | TUNNEL_IPV6)
            } else {
                (ipv4_mapped(GW_IP4[other]), TUNNEL_OVN_METADATA)
            };
            dp.add_tunnel(
                TUNNEL_OFPORT as u32,
                Tunnel { remote, nexthop_mac: GW_MAC[other], flags, _pad: 0, vni: VNI },
            );
            dp.add_local_port(
                port,
                LocalPort { vni: VNI, ofport: PORT_OFPORT, port_key: VM_KEY[i], mac: VM_MAC[i], ..Default::default() },
            );
            dp.add_neigh(VNI, ipv4_mapped(VM_IP4[i]), VM_MAC[i]);
            dp.add_neigh(VNI, VM_IP6[i], VM_MAC[i]);
            dp.add_remote(VNI, VM_MAC[other], Some(ipv4_mapped(VM_IP4[other])), TUNNEL_OFPORT, VM_KEY[other]);
            dp.add_neigh(VNI, VM_IP6[other], VM_MAC[other]);
            dp.attach(&gw, "xgw_uplink", "ul");
            dp.attach(&gw, "xgw_local", "p");
            // A veth delivers XDP-redirected (and XDP_TX) frames only to a
            // peer that runs an XDP program itself; GRO alone did not do it
            // on this kernel. Real NICs have no such need.
            dp.attach(&vm, "xgw_pass", "eth0");
            dp.attach(&wire, "xgw_pass", &w);
            sides.push(Side { gw, vm, dp });
        }
        Topology { sides, wire }
    }
}

impl Topology {
    /// What each datapath counted: the first thing to read when traffic fails.
    fn counters(&self) -> String {
        self.sides
            .iter()
            .map(|s| {
                let st = |o: u16| s.dp.port_stats(o as u32);
                format!(
                    "{}: drops {:?} replies {:?} port {:?} tunnel {:?}\n",
                    s.gw.name,
                    s.dp.drops().into_iter().filter(|(_, n)| *n > 0).collect::<Vec<_>>(),
                    s.dp.replies(),
                    st(PORT_OFPORT),
                    st(TUNNEL_OFPORT)
                )
            })
            .collect()
    }

    fn ping(&self, from: usize, to: &str) {
        let ns = &self.sides[from].vm;
        let out = ns.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", to]);
        if !out.status.success() {
            // XGW_E2E_HOLD=<seconds> keeps the topology up for inspection.
            if let Some(s) = std::env::var("XGW_E2E_HOLD").ok().and_then(|s| s.parse().ok()) {
                eprintln!("holding the topology for {s} s: ip netns list");
                std::thread::sleep(Duration::from_secs(s));
            }
        }
        assert!(
            out.status.success(),
            "ping {to} from {}: {}\n{}",
            ns.name,
            String::from_utf8_lossy(&out.stdout),
            self.counters() + &ns.ok(&["ip", "neigh"])
        );
    }
}

/// iperf3 TCP for 2 s from `client` to `server`; returns bits per second.
fn iperf(t: &Topology, client: &Netns, server: &Netns, server_ip: &str) -> f64 {
    let port = "5301";
    let srv = server.spawn(&["iperf3", "-s", "-1", "-p", port]);
    std::thread::sleep(Duration::from_millis(300));
    let out = client.exec(&["iperf3", "-c", server_ip, "-p", port, "-t", "2", "-J"]);
    let _ = srv.wait(Duration::from_secs(5));
    assert!(out.status.success(), "iperf3 to {server_ip}: {}", String::from_utf8_lossy(&out.stdout));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 JSON");
    let bps = v["end"]["sum_received"]["bits_per_second"].as_f64().expect("bits_per_second");
    assert!(bps > 1e6, "iperf3 to {server_ip}: only {bps} bit/s\n{}", t.counters());
    bps
}

/// Every Geneve frame in the capture, checked against RFC 8926 and OVN's
/// option layout; returns how many there were.
fn check_capture(pcap: &Path, v6_underlay: bool) -> usize {
    let data = std::fs::read(pcap).expect("read capture");
    let mut reader = pcap_file::pcap::PcapReader::new(&data[..]).expect("pcap header");
    let mut n = 0;
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.expect("pcap record");
        let s = SlicedPacket::from_ethernet(&pkt.data).expect("frame parses");
        let Some(TransportSlice::Udp(udp)) = &s.transport else { continue };
        if udp.destination_port() != 6081 {
            continue;
        }
        let (src, dst) = match &s.net {
            Some(NetSlice::Ipv4(ip)) => {
                assert!(!v6_underlay, "IPv4 underlay frame in an IPv6 test");
                assert!(ip.header().dont_fragment());
                assert_eq!(udp.checksum(), 0, "IPv4: zero UDP checksum, as OVS sends");
                (ipv4_mapped(ip.header().source()), ipv4_mapped(ip.header().destination()))
            }
            Some(NetSlice::Ipv6(ip)) => {
                assert!(v6_underlay, "IPv6 underlay frame in an IPv4 test");
                let hdr = ip.header().to_header();
                let want = UdpHeader::with_ipv6_checksum(udp.source_port(), 6081, &hdr, udp.payload()).unwrap();
                assert_eq!(udp.checksum(), want.checksum, "IPv6 UDP checksum");
                (hdr.source, hdr.destination)
            }
            _ => panic!("UDP without IP"),
        };
        let g = udp.payload();
        assert_eq!(g[0] >> 6, 0, "Geneve version");
        assert_eq!(g[0] & 0x3f, 2, "Opt Len: one OVN option");
        assert_eq!(g[1], 0x40, "C bit set: OVN's option is critical");
        assert_eq!(u16::from_be_bytes([g[2], g[3]]), 0x6558);
        assert_eq!(u32::from_be_bytes([0, g[4], g[5], g[6]]), VNI);
        assert_eq!(&g[8..12], &[0x01, 0x02, 0x80, 0x01], "OVN option class/type/length");
        // From gw1 the ingress key is VM 1's and the egress VM 2's; back the other way.
        let from_gw1 = src == ipv4_mapped(GW_IP4[0]) || src == GW_IP6[0];
        let (i, e) = if from_gw1 { (0, 1) } else { (1, 0) };
        assert!(dst == ipv4_mapped(GW_IP4[e]) || dst == GW_IP6[e]);
        assert_eq!(u16::from_be_bytes([g[12], g[13]]), VM_KEY[i], "ingress key");
        assert_eq!(u16::from_be_bytes([g[14], g[15]]), VM_KEY[e], "egress key");
        let inner = SlicedPacket::from_ethernet(&g[16..]).expect("inner frame parses");
        let eth = inner.link.expect("inner Ethernet").to_header().unwrap();
        let eth = match eth {
            etherparse::LinkHeader::Ethernet2(h) => h,
            other => panic!("inner link {other:?}"),
        };
        assert_eq!((eth.source, eth.destination), (VM_MAC[i], VM_MAC[e]));
        n += 1;
    }
    n
}

fn cross_the_tunnel(v6_underlay: bool) {
    let t = Topology::new(v6_underlay);
    let (vm1, vm2) = (&t.sides[0].vm, &t.sides[1].vm);
    let pcap = std::env::temp_dir().join(format!("{}.pcap", unique_name("underlay")));
    let cap = t.wire.spawn(&["tcpdump", "-i", "br0", "-n", "-U", "-w", pcap.to_str().unwrap(), "udp port 6081"]);
    std::thread::sleep(Duration::from_millis(500));

    t.ping(0, &ip4(VM_IP4[1]));
    t.ping(1, &ip4(VM_IP4[0]));
    t.ping(0, &ip6(VM_IP6[1]));
    t.ping(1, &ip6(VM_IP6[0]));
    let up = iperf(&t, vm1, vm2, &ip4(VM_IP4[1]));
    let down = iperf(&t, vm2, vm1, &ip4(VM_IP4[0]));
    eprintln!(
        "iperf3 TCP over {} underlay: {:.2} / {:.2} Gbit/s",
        if v6_underlay { "IPv6" } else { "IPv4" },
        up / 1e9,
        down / 1e9
    );

    // A VM that does not know about the tunnel (MTU 1500): its full-size
    // frames are answered with ICMP too-big, path MTU discovery shrinks the
    // flow, and TCP still flows instead of black-holing.
    vm1.ok(&["ip", "link", "set", "eth0", "mtu", "1500"]);
    vm2.ok(&["ip", "link", "set", "eth0", "mtu", "1500"]);
    let pmtud = iperf(&t, vm1, vm2, &ip4(VM_IP4[1]));
    assert!(t.sides[0].dp.replies()["too_big"] >= 1, "{}", t.counters());
    eprintln!("iperf3 TCP after path MTU discovery: {:.2} Gbit/s", pmtud / 1e9);

    std::thread::sleep(Duration::from_millis(300));
    let _ = cap.stop(Duration::from_secs(2));
    let frames = check_capture(&pcap, v6_underlay);
    // tcpdump's own Geneve decoder must agree with ours.
    let text = xgw_tests::sh(&["tcpdump", "-r", pcap.to_str().unwrap(), "-nv", "-c", "1"]);
    let _ = std::fs::remove_file(&pcap);
    assert!(frames >= 12, "only {frames} Geneve frames captured");
    assert!(text.contains("Geneve") && text.contains("vni 0x1389"), "tcpdump decode: {text}");

    for s in &t.sides {
        let drops = s.dp.drops();
        // VMs send IPv6 multicast (MLD, router solicitations): dropped as
        // flood by design; oversized frames were answered. Nothing else.
        assert!(
            drops.iter().all(|(r, &n)| n == 0 || *r == "flood" || *r == "mtu_exceeded"),
            "{}: drops {drops:?}",
            s.gw.name
        );
        assert!(s.dp.replies()["arp"] >= 1 && s.dp.replies()["nd"] >= 1, "{}: {:?}", s.gw.name, s.dp.replies());
        let port = s.dp.port_stats(PORT_OFPORT as u32);
        let tunnel = s.dp.port_stats(TUNNEL_OFPORT as u32);
        assert!(port.rx.packets > 0 && tunnel.tx.packets > 0 && tunnel.rx.packets > 0 && port.tx.packets > 0);
    }
}

#[test]
fn vms_talk_across_the_tunnel_over_an_ipv4_underlay() {
    require_root!();
    cross_the_tunnel(false);
}

#[test]
fn vms_talk_across_the_tunnel_over_an_ipv6_underlay() {
    require_root!();
    cross_the_tunnel(true);
}
