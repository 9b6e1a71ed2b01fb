//! Interop with a real Open vSwitch hypervisor (Debian openvswitch-switch,
//! userspace datapath): a VM behind xgw and a VM behind OVS talk across a
//! Geneve tunnel carrying OVN's option, both directions, ping and TCP, over
//! an IPv4 and an IPv6 underlay. OVS forwards to its VM only frames whose
//! OVN option carries the keys xgw must send, so a delivered packet proves
//! OVS parsed xgw's option; xgw's counters prove it parsed OVS's.
//!
//!   vm [eth0] -- [p] gw (xgw) [ul] ---- [ul0] OVS br-phy / br-int -- vm0
use std::time::Duration;

use xgw_common::maps::*;
use xgw_tests::{gateway::TestGateway, require_root, Geneve, Netns, OvnKeys, OvsHypervisor, Veth};

const VNI: u32 = 5001;
const TUNNEL: u16 = 10;
const PORT: u16 = 3;
const GW_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0, 1];
const HV_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0, 2];
const VM_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x20, 0, 1];
const OVS_VM_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x20, 0, 2];
const VM_KEY: u16 = 0x0011;
const OVS_VM_KEY: u16 = 0x0022;

struct Topology {
    // Drop order: the datapath detaches first, then OVS stops, then namespaces go.
    dp: TestGateway,
    ovs: OvsHypervisor,
    vm: Netns,
    gw: Netns,
}

fn topology(v6: bool) -> Topology {
    let gw = Netns::new("xgw");
    let hv = Netns::new("ovs");
    let vm = Netns::new("xvm");
    Veth::new(&gw, "ul", "198.51.100.1/24", &hv, "ul0", "");
    gw.ok(&["ip", "addr", "add", "2001:db8::1/64", "dev", "ul", "nodad"]);
    gw.ok(&["ip", "link", "set", "ul", "address", &xgw_tests::ovs::mac_str(GW_MAC)]);
    Veth::new(&gw, "p", "", &vm, "eth0", "203.0.113.1/24");
    vm.ok(&["ip", "link", "set", "eth0", "address", &xgw_tests::ovs::mac_str(VM_MAC)]);
    vm.ok(&["ethtool", "-K", "eth0", "tx", "off"]);
    vm.ok(&["ip", "link", "set", "eth0", "mtu", "1422"]);

    let ovs = OvsHypervisor::builder(hv, "ul0")
        .ip4("198.51.100.2/24")
        .ip6("2001:db8::2/64")
        .underlay_mac(HV_MAC)
        .vm(OVS_VM_MAC, Some("203.0.113.2/24"), None)
        .start();
    ovs.vm().ok(&["ip", "link", "set", "vm0", "mtu", "1422"]);
    let (remote, local) = if v6 { ("2001:db8::1", "2001:db8::2") } else { ("198.51.100.1", "198.51.100.2") };
    ovs.add_geneve("gnv0", &Geneve::new(remote, VNI).local_ip(local));
    // OVS sends its VM's keys and delivers only frames carrying xgw's.
    ovs.install_ovn_option(
        "gnv0",
        OvnKeys { ingress: OVS_VM_KEY, egress: VM_KEY },
        Some(OvnKeys { ingress: VM_KEY, egress: OVS_VM_KEY }),
    );

    let mut dp = TestGateway::load(&["xgw_uplink", "xgw_local", "xgw_pass"]);
    dp.in_netns(&gw);
    let ul = gw.ifindex("ul");
    dp.set_uplink(Uplink {
        ifindex: ul,
        mtu: 1500,
        mac: GW_MAC,
        flags: UPLINK_HAS_IP4 | UPLINK_HAS_IP6,
        _pad: 0,
        ip4: [198, 51, 100, 1],
        ip6: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    });
    dp.set_uplink_devmap(ul);
    let (remote, flags) = if v6 {
        ([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], TUNNEL_OVN_METADATA | TUNNEL_IPV6)
    } else {
        (ipv4_mapped([198, 51, 100, 2]), TUNNEL_OVN_METADATA)
    };
    // OVS decapsulates only frames sent to br-phy's MAC.
    dp.add_tunnel(TUNNEL as u32, Tunnel { remote, nexthop_mac: ovs.underlay_mac(), flags, _pad: 0, vni: VNI });
    dp.add_local_port(
        gw.ifindex("p"),
        LocalPort { vni: VNI, ofport: PORT, port_key: VM_KEY, mac: VM_MAC, ..Default::default() },
    );
    dp.add_neigh(VNI, ipv4_mapped([203, 0, 113, 1]), VM_MAC);
    dp.add_remote(VNI, OVS_VM_MAC, Some(ipv4_mapped([203, 0, 113, 2])), TUNNEL, OVS_VM_KEY);
    dp.attach(&gw, "xgw_uplink", "ul");
    dp.attach(&gw, "xgw_local", "p");
    // veth delivers redirected frames only to a peer running XDP.
    dp.attach(&vm, "xgw_pass", "eth0");
    dp.attach(ovs.ns(), "xgw_pass", "ul0");
    Topology { dp, ovs, vm, gw }
}

impl Topology {
    fn counters(&self) -> String {
        format!(
            "xgw drops {:?} replies {:?} port {:?} tunnel {:?}\nOVS log:\n{}",
            self.dp.drops().into_iter().filter(|(_, n)| *n > 0).collect::<Vec<_>>(),
            self.dp.replies(),
            self.dp.port_stats(PORT as u32),
            self.dp.port_stats(TUNNEL as u32),
            self.ovs.log_tail(15)
        )
    }

    fn ping(&self, from: &Netns, to: &str) {
        // OVS drops the packet that triggers its ARP for the remote: the
        // first echo of a fresh tunnel may be lost, so allow retries.
        let out = from.exec(&["ping", "-c", "4", "-i", "0.3", "-W", "2", to]);
        let text = String::from_utf8_lossy(&out.stdout);
        let received: u32 =
            text.split(',').find_map(|f| f.trim().strip_suffix(" received").and_then(|n| n.parse().ok())).unwrap_or(0);
        assert!(received >= 3, "ping {to} from {}: {text}\n{}", from.name, self.counters());
    }

    fn iperf(&self, client: &Netns, server: &Netns, server_ip: &str) -> f64 {
        let srv = server.spawn(&["iperf3", "-s", "-1", "-B", server_ip]);
        std::thread::sleep(Duration::from_millis(400));
        let out = client.exec(&["iperf3", "-c", server_ip, "-t", "2", "-J"]);
        let _ = srv.wait(Duration::from_secs(5));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let bytes = v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
        assert!(bytes > 10_000_000, "iperf3 to {server_ip}: only {bytes} bytes in 2 s\n{}", self.counters());
        v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0)
    }
}

fn xgw_and_ovs_talk(v6: bool) {
    let t = topology(v6);
    t.ping(&t.vm, "203.0.113.2");
    t.ping(t.ovs.vm(), "203.0.113.1");
    let to_ovs = t.iperf(&t.vm, t.ovs.vm(), "203.0.113.2");
    let from_ovs = t.iperf(t.ovs.vm(), &t.vm, "203.0.113.1");
    eprintln!(
        "iperf3 TCP xgw <-> OVS over {} underlay: {:.0} / {:.0} Mbit/s",
        if v6 { "IPv6" } else { "IPv4" },
        to_ovs / 1e6,
        from_ovs / 1e6
    );
    // Both directions went through xgw's datapath, not around it.
    let tunnel = t.dp.port_stats(TUNNEL as u32);
    let port = t.dp.port_stats(PORT as u32);
    assert!(tunnel.rx.packets > 1000 && tunnel.tx.packets > 1000, "{}", t.counters());
    assert!(port.rx.packets > 1000 && port.tx.packets > 1000, "{}", t.counters());
    let drops = t.dp.drops();
    // OVS floods its VM's broadcasts (ARP) with the egress key of xgw's VM,
    // so they are delivered; IPv6 multicast from the local VM is dropped by
    // design. Nothing else may be dropped.
    assert!(drops.iter().all(|(r, &n)| n == 0 || *r == "flood"), "{}", t.counters());
    let _ = &t.gw;
}

#[test]
fn xgw_and_ovs_vms_talk_over_an_ipv4_underlay() {
    require_root!();
    xgw_and_ovs_talk(false);
}

#[test]
fn xgw_and_ovs_vms_talk_over_an_ipv6_underlay() {
    require_root!();
    xgw_and_ovs_talk(true);
}
