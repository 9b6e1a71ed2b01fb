//! The first XDP program, `xgw_probe`: per-protocol packet counts in a per-CPU
//! map, checked on crafted packets (BPF_PROG_TEST_RUN) and on real traffic
//! crossing a veth between namespaces (read through aya and through bpftool).
use std::collections::BTreeMap;

use aya::maps::{MapData, PerCpuArray};
use xgw::{datapath, probe};
use xgw_common::counters::{Counter, Proto};
use xgw_tests::{bpftool, packet::*, require_root, xgw_bin, BpfFs, Netns, Veth};

fn counts(map: &PerCpuArray<MapData, Counter>) -> BTreeMap<&'static str, (u64, u64)> {
    probe::read(map).unwrap().into_iter().map(|c| (c.proto, (c.packets, c.bytes))).collect()
}

#[test]
fn test_run_classifies_crafted_packets_and_passes_them_unchanged() {
    require_root!();
    let mut ebpf = datapath::load().unwrap();
    let prog = datapath::xdp_program(&mut ebpf, probe::PROGRAM).unwrap();

    let mut ipv4_bad_ihl = ipv4_udp(1, 2, b"x");
    ipv4_bad_ihl[14] = 0x44; // version 4, IHL 4 (< 5 words)
    let mut ipv6_bad_version = ipv6_udp(1, 2, b"x");
    ipv6_bad_version[14] = 0x40;
    let cases: Vec<(Proto, Vec<u8>)> = vec![
        (Proto::Arp, arp_request(MAC_A, IP4_A, IP4_B)),
        (Proto::Ipv4Icmp, ipv4_icmp_echo(&[7; 56])),
        (Proto::Ipv4Tcp, ipv4_tcp(b"hello")),
        (Proto::Ipv4Udp, ipv4_udp(5000, 6081, &[0; 32])),
        (Proto::Ipv4Udp, ipv4_udp_vlan(100, &[0; 8])),
        (Proto::Ipv4Other, ipv4_proto(47, &[0; 8])), // GRE
        (Proto::Ipv6Icmp, ipv6_icmp_echo(&[1; 8])),
        (Proto::Ipv6Tcp, ipv6_tcp(b"x")),
        (Proto::Ipv6Udp, ipv6_udp(49152, 3784, &[0; 24])),
        (Proto::Ipv6Other, ipv6_proto(59, &[])),             // No Next Header
        (Proto::OtherEthertype, ethernet(0x88cc, &[0; 46])), // LLDP
        (Proto::Malformed, ethernet(0x0800, &[0x45; 19])),   // IPv4 header cut short
        (Proto::Malformed, ethernet(0x86dd, &[0x60; 39])),   // IPv6 header cut short
        (Proto::Malformed, ethernet(0x0806, &[0; 27])),      // ARP cut short
        (Proto::Malformed, ethernet(0x8100, &[0; 3])),       // VLAN tag cut short
        (Proto::Malformed, ipv4_bad_ihl),
        (Proto::Malformed, ipv6_bad_version),
    ];
    let mut expected: BTreeMap<&str, (u64, u64)> = Proto::ALL.iter().map(|p| (p.name(), (0, 0))).collect();
    for (proto, pkt) in &cases {
        let run = test_run(prog, pkt);
        assert_eq!(run.verdict, XDP_PASS, "{proto:?}: verdict");
        assert_eq!(&run.data, pkt, "{proto:?}: the probe must not modify packets");
        let e = expected.get_mut(proto.name()).unwrap();
        e.0 += 1;
        e.1 += pkt.len() as u64;
    }
    let map: PerCpuArray<MapData, Counter> = ebpf.take_map(probe::COUNTERS_MAP).unwrap().try_into().unwrap();
    assert_eq!(counts(&map), expected);
}

#[test]
fn ping_across_veth_is_counted_in_aya_and_bpftool() {
    require_root!();
    let a = Netns::new("pa");
    let b = Netns::new("pb");
    a.disable_ipv6();
    b.disable_ipv6();
    let link = Veth::new(&a, "va", "198.51.100.1/24", &b, "vb", "198.51.100.2/24");
    let fs = BpfFs::new("pf");
    let pin = fs.dir.join("counters");

    // Load and attach from a thread inside `b`; keep the Ebpf (and with it the
    // link) alive for the rest of the test.
    let ebpf = b.enter(|| {
        let mut ebpf = datapath::load().unwrap();
        let prog = datapath::xdp_program(&mut ebpf, probe::PROGRAM).unwrap();
        prog.attach(&link.b.ifname, datapath::AttachMode::Native.xdp_mode()).unwrap();
        ebpf.map(probe::COUNTERS_MAP).unwrap().pin(&pin).unwrap();
        ebpf
    });
    assert_eq!(bpftool::xdp_attached(&b, "vb"), Some(("xgw_probe".into(), "driver".into())));

    a.ok(&["ping", "-c", "5", "-i", "0.05", "-W", "2", link.b.ip()]);

    let map: PerCpuArray<MapData, Counter> = {
        let data = MapData::from_pin(&pin).unwrap();
        aya::maps::Map::PerCpuArray(data).try_into().unwrap()
    };
    let got = counts(&map);
    // ICMP echo request: 14 Ethernet + 20 IPv4 + 8 ICMP + 56 data = 98 bytes.
    assert_eq!(got["ipv4_icmp"], (5, 5 * 98), "{got:?}");
    assert!(got["arp"].0 >= 1 && got["arp"].1 == got["arp"].0 * 42, "{got:?}");
    for (name, c) in &got {
        if *name != "ipv4_icmp" && *name != "arp" {
            assert_eq!(*c, (0, 0), "{name} should be zero: {got:?}");
        }
    }

    // bpftool reads the same map from bpffs and must agree, key by key.
    let dumped = bpftool::dump_percpu_u64(&pin, 2);
    assert_eq!(dumped.len(), Proto::COUNT as usize);
    for (key, sums) in dumped {
        let name = Proto::ALL[key as usize].name();
        assert_eq!((sums[0], sums[1]), got[name], "bpftool disagrees on {name}");
    }
    drop(ebpf);
}

#[test]
fn cli_attach_show_detach_through_pins() {
    require_root!();
    let a = Netns::new("ca");
    let b = Netns::new("cb");
    a.disable_ipv6();
    b.disable_ipv6();
    let link = Veth::new(&a, "va", "198.51.100.1/24", &b, "vb", "198.51.100.2/24");
    let fs = BpfFs::new("cf");
    let bpffs = fs.dir.to_str().unwrap();
    let xgw = xgw_bin();
    let xgw = xgw.to_str().unwrap();

    b.ok(&[xgw, "probe", "attach", "--iface", "vb", "--bpffs", bpffs]);
    assert_eq!(bpftool::xdp_attached(&b, "vb"), Some(("xgw_probe".into(), "driver".into())));
    // The CLI has exited: the pinned link keeps the program attached.
    a.ok(&["ping", "-c", "3", "-i", "0.05", "-W", "2", link.b.ip()]);
    let shown: serde_json::Value =
        serde_json::from_str(&b.ok(&[xgw, "probe", "show", "--iface", "vb", "--bpffs", bpffs, "--json"])).unwrap();
    let icmp = shown["counters"].as_array().unwrap().iter().find(|c| c["proto"] == "ipv4_icmp").unwrap().clone();
    assert_eq!((icmp["packets"].as_u64(), icmp["bytes"].as_u64()), (Some(3), Some(3 * 98)), "{shown}");
    let dumped = bpftool::dump_percpu_u64(&fs.dir.join("probe-vb/counters"), 2);
    assert_eq!(dumped[Proto::Ipv4Icmp as usize].1, vec![3, 3 * 98]);

    // A second attach on the same interface is refused and changes nothing.
    let again = b.exec(&[xgw, "probe", "attach", "--iface", "vb", "--bpffs", bpffs]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already pinned"), "{again:?}");

    b.ok(&[xgw, "probe", "detach", "--iface", "vb", "--bpffs", bpffs]);
    assert_eq!(bpftool::xdp_attached(&b, "vb"), None, "still attached after detach");
    assert!(!fs.dir.join("probe-vb").exists());
}

#[test]
fn cli_bad_input_is_one_clear_sentence_and_changes_nothing() {
    require_root!();
    let ns = Netns::new("bi");
    let fs = BpfFs::new("bf");
    let bpffs = fs.dir.to_str().unwrap();
    let xgw = xgw_bin();
    let xgw = xgw.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["probe", "attach", "--iface", "lo", "--bpffs", bpffs], "does not support native XDP"),
        (&["probe", "attach", "--iface", "nosuch0", "--bpffs", bpffs], "interface nosuch0 does not exist"),
        (&["probe", "attach", "--iface", "lo", "--bpffs", "/tmp"], "is not on a bpffs mount"),
        (&["probe", "attach", "--iface", "lo", "--mode", "turbo", "--bpffs", bpffs], "invalid value 'turbo'"),
    ];
    for (args, message) in cases {
        let mut cmd = vec![xgw];
        cmd.extend_from_slice(args);
        let out = ns.exec(&cmd);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(message), "{args:?}: expected '{message}' in: {stderr}");
        let leftovers: Vec<_> = std::fs::read_dir(&fs.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.ends_with(".debug"))
            .collect();
        assert!(leftovers.is_empty(), "{args:?} left pins behind: {leftovers:?}");
    }
    assert_eq!(bpftool::xdp_attached(&ns, "lo"), None);
}
