//! The flow caches (DECAP_FLOWS, ENCAP_FLOWS) in front of the hash maps:
//! a controller write reaches the very next packet although the cache held
//! the old answer, and two flows sharing a slot never get each other's.
//! The caches are per CPU, so each test pins itself to one CPU and reads
//! that CPU's slot from the real map to show the cache really was warm
//! (or really was shared) when it mattered. Expected bytes come from the
//! RFC layout (outer IPv4 destination, OVN option keys), not from the
//! datapath's code.
use std::{net::IpAddr, time::Instant};

use aya::maps::{MapData, PerCpuArray};
use etherparse::PacketBuilder;
use xgw::ofport::{AllocatorConfig, PortSpec, TunnelPort};
use xgw_common::maps::{names::*, *};
use xgw_tests::{
    addrs::*,
    gateway::TestGateway,
    packet::{geneve::*, *},
    ports::{self, PortGw},
    process::pin_to_this_cpu,
    require_root,
};

const LO: u32 = 1;
const VM_OFPORT: u16 = 3;
const VM_KEY: u16 = 0x0011;
const T1: u16 = 7;
const T2: u16 = 8;
const HV2_IP4: [u8; 4] = [198, 51, 100, 3];
const HV2_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x03];

fn encap_slot(gw: &TestGateway, cpu: usize, slot: u32) -> EncapFlow {
    gw.encap_slot(cpu, slot)
}

fn decap_slot(gw: &TestGateway, cpu: usize, slot: u32) -> DecapFlow {
    let m: PerCpuArray<&MapData, DecapFlow> = PerCpuArray::try_from(gw.ebpf.map(DECAP_FLOWS).unwrap()).unwrap();
    m.get(&slot, 0).unwrap()[cpu]
}

fn encap_key(ifindex: u32, mac: [u8; 6]) -> EncapFlowKey {
    EncapFlowKey::new(ifindex, mac)
}

fn decap_key(remote: [u8; 4], egress: u16) -> DecapFlowKey {
    DecapFlowKey { remote: ipv4_mapped(remote), vni: VNI, egress, mac: [0; 6], _pad: 0 }
}

fn uplink() -> Uplink {
    Uplink { ifindex: LO, mtu: 1500, mac: GW_MAC, flags: UPLINK_HAS_IP4, _pad: 0, ip4: GW_IP4, ip6: [0; 16] }
}

/// A UDP datagram from the local VM to the VM with MAC `dst`.
fn from_vm(dst: [u8; 6]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(VM_MAC, dst)
        .ipv4(VM_IP, [203, 0, 113, 2], 64)
        .udp(40000, 7)
        .write(&mut v, &[0x5a; 32])
        .unwrap();
    v
}

/// Geneve over IPv4 from chassis `src`, with OVN's option naming local
/// port `egress`.
fn to_port(src: [u8; 4], egress: u16) -> (Vec<u8>, Vec<u8>) {
    let mut inner = Vec::new();
    PacketBuilder::ethernet2([0x02, 0, 0x5e, 0x20, 0, 0x02], VM_MAC)
        .ipv4([203, 0, 113, 2], VM_IP, 64)
        .udp(7, 40000)
        .write(&mut inner, &[0xa5; 32])
        .unwrap();
    let payload = geneve_payload(&[ovn_option(0x0022, egress)], VNI, &inner);
    let mut v = Vec::new();
    PacketBuilder::ethernet2(HV_MAC, GW_MAC).ipv4(src, GW_IP4, 64).udp(50123, 6081).write(&mut v, &payload).unwrap();
    (v, inner)
}

/// Where an encapsulated frame goes, read at RFC offsets: outer Ethernet
/// destination, outer IPv4 destination, and the OVN option's egress key
/// (Ethernet 14 + IPv4 20 + UDP 8 + Geneve 8 + option header 4 + ingress 2).
fn encap_target(frame: &[u8]) -> ([u8; 6], [u8; 4], u16) {
    assert!(frame.len() > 58, "not an encapsulated frame: {} bytes", frame.len());
    (frame[0..6].try_into().unwrap(), frame[30..34].try_into().unwrap(), u16::from_be_bytes([frame[56], frame[57]]))
}

/// A MAC other than `than` whose encap key shares its slot.
fn colliding_mac(ifindex: u32, than: [u8; 6]) -> [u8; 6] {
    let want = encap_key(ifindex, than).slot();
    (0..=0xffffu32)
        .map(|i| [0x02, 0x00, 0x5e, 0x21, (i >> 8) as u8, i as u8])
        .find(|m| *m != than && encap_key(ifindex, *m).slot() == want)
        .expect("a colliding MAC among 65536")
}

/// `xgw_local` on lo with the uplink, tunnel T1 toward HV_IP4 (OVN option)
/// and the VM's port.
fn encap_gateway() -> TestGateway {
    let mut gw = TestGateway::load(&["xgw_local"]);
    gw.set_uplink(uplink());
    gw.set_uplink_devmap(LO);
    gw.add_tunnel(
        T1 as u32,
        Tunnel { remote: ipv4_mapped(HV_IP4), nexthop_mac: HV_MAC, flags: TUNNEL_OVN_METADATA, _pad: 0, vni: VNI },
    );
    gw.add_local_port(
        LO,
        LocalPort { vni: VNI, ofport: VM_OFPORT, port_key: VM_KEY, mac: VM_MAC, ..Default::default() },
    );
    gw
}

#[test]
fn encap_flows_sharing_a_slot_each_get_their_own_tunnel() {
    require_root!();
    let cpu = pin_to_this_cpu();
    let mut gw = encap_gateway();
    gw.add_tunnel(
        T2 as u32,
        Tunnel { remote: ipv4_mapped(HV2_IP4), nexthop_mac: HV2_MAC, flags: TUNNEL_OVN_METADATA, _pad: 0, vni: VNI },
    );
    let m1 = [0x02, 0x00, 0x5e, 0x20, 0x00, 0x02];
    let m2 = colliding_mac(LO, m1);
    gw.add_remote(VNI, m1, None, T1, 0x0022);
    gw.add_remote(VNI, m2, None, T2, 0x0023);
    let slot = encap_key(LO, m1).slot();
    let prog = gw.program("xgw_local");

    let send = |mac: [u8; 6], round: usize| {
        let want = if mac == m1 { (HV_MAC, HV_IP4, 0x0022) } else { (HV2_MAC, HV2_IP4, 0x0023) };
        let pkt = from_vm(mac);
        let run = test_run_on(prog, &pkt, LO);
        assert_eq!(run.verdict, XDP_REDIRECT, "round {round}, to {mac:02x?}");
        assert_eq!(encap_target(&run.data), want, "round {round}, to {mac:02x?}: wrong tunnel");
        assert_eq!(&run.data[58..], &pkt[..], "round {round}: the inner frame follows the option unchanged");
    };
    // Taking turns: the slot stays m1's, the first to fill it (the slot the
    // datapath filled is the one both keys hash to), and m2's answers go
    // to the spare entry; m1's hit clears m2's misses.
    for round in 0..4 {
        send(m1, round);
        let e = encap_slot(&gw, cpu, slot);
        assert_eq!((e.key, e.generation, e.dest.ofport), (encap_key(LO, m1), gw.generation(), T1), "slot {slot}");
        send(m2, round);
        let e = encap_slot(&gw, cpu, slot);
        assert_eq!((e.key.ifindex, e.key.mac, e.key.misses), (LO, m1, 1), "round {round}: m2 missed once");
        let spare = encap_slot(&gw, cpu, FLOW_SLOTS);
        assert_eq!((spare.key, spare.dest.ofport), (encap_key(LO, m2), T2), "round {round}: m2's answer");
    }
    // m2 alone: after ENCAP_EVICT_AFTER misses with no hit of m1's (one
    // of them above), the next one takes the slot, and m1 is the one that
    // misses.
    for round in 1..ENCAP_EVICT_AFTER as usize {
        send(m2, round);
    }
    assert_eq!(encap_slot(&gw, cpu, slot).key.misses, ENCAP_EVICT_AFTER);
    send(m2, 99);
    let e = encap_slot(&gw, cpu, slot);
    assert_eq!((e.key, e.dest.ofport), (encap_key(LO, m2), T2), "m2 took the slot");
    send(m1, 100);
    assert_eq!(encap_slot(&gw, cpu, slot).key.misses, 1);
}

/// Tunnels whose numbers share a slot of ENCAP_OUTERS (numbers
/// OUTER_SLOTS apart) each send with their own headers, whichever built
/// the slot last.
#[test]
fn tunnels_sharing_an_outer_slot_each_send_with_their_own_headers() {
    require_root!();
    let cpu = pin_to_this_cpu();
    let mut gw = encap_gateway();
    let t3 = T1 + OUTER_SLOTS as u16;
    gw.add_tunnel(
        t3 as u32,
        Tunnel { remote: ipv4_mapped(HV2_IP4), nexthop_mac: HV2_MAC, flags: TUNNEL_OVN_METADATA, _pad: 0, vni: VNI },
    );
    let (m1, m3) = ([0x02, 0x00, 0x5e, 0x20, 0x00, 0x02], [0x02, 0x00, 0x5e, 0x20, 0x00, 0x03]);
    gw.add_remote(VNI, m1, None, T1, 0x0022);
    gw.add_remote(VNI, m3, None, t3, 0x0023);
    let prog = gw.program("xgw_local");
    for round in 0..3 {
        for (mac, ofport, want) in [(m1, T1, (HV_MAC, HV_IP4, 0x0022)), (m3, t3, (HV2_MAC, HV2_IP4, 0x0023))] {
            let pkt = from_vm(mac);
            let run = test_run_on(prog, &pkt, LO);
            assert_eq!(run.verdict, XDP_REDIRECT, "round {round}, tunnel {ofport}");
            assert_eq!(encap_target(&run.data), want, "round {round}, tunnel {ofport}: wrong headers");
            let o = gw.encap_outer(cpu, ofport);
            assert_eq!((o.ofport, &o.bytes()[30..34]), (ofport as u32, &want.1[..]), "round {round}: the slot");
        }
    }
}

/// The tunnel's outer-header slot, built from UPLINK when it was filled: a
/// new uplink address, MAC or MTU reaches the next frame of a warm flow,
/// and an uplink without IPv4 stops it, each counted.
#[test]
fn encap_slot_headers_follow_the_uplink() {
    require_root!();
    let cpu = pin_to_this_cpu();
    let mut gw = encap_gateway();
    let m1 = [0x02, 0x00, 0x5e, 0x20, 0x00, 0x02];
    gw.add_remote(VNI, m1, None, T1, 0x0022);
    let slot = encap_key(LO, m1).slot();
    let pkt = from_vm(m1);

    let run = test_run_on(gw.program("xgw_local"), &pkt, LO);
    assert_eq!(run.verdict, XDP_REDIRECT);
    assert_eq!((&run.data[6..12], &run.data[26..30]), (&GW_MAC[..], &GW_IP4[..]), "outer source MAC and IPv4");
    // The tunnel's headers are the frame's, with the per-frame fields zero:
    // IPv4 total length (16..18) and checksum (24..26), UDP source port
    // (34..36) and length (38..40), the VNI (46..49) and the option's
    // port keys (54..58); the rest of Geneve and the option as sent.
    let e = encap_slot(&gw, cpu, slot);
    assert_eq!((e.key, e.dest.ofport, e.generation), (encap_key(LO, m1), T1, gw.generation()));
    let o = gw.encap_outer(cpu, T1);
    assert_eq!((o.ofport, o.kind, o.outer_len, o.generation), (T1 as u32, OUTER_IPV4, 58, gw.generation()));
    assert_eq!(o.max_frame, 1500 - (20 + 8 + 8 + 8), "uplink MTU less outer IPv4, UDP, Geneve and option");
    let mut want = run.data[..58].to_vec();
    for r in [16..18, 24..26, 34..36, 38..40, 46..49, 54..58] {
        want[r].fill(0);
    }
    assert_eq!(&o.bytes()[..58], &want[..]);

    // Another MAC and address, and an MTU the frame exactly fits.
    let (mac2, ip2) = ([0x02, 0x00, 0x5e, 0x10, 0x00, 0x09], [198, 51, 100, 9]);
    gw.set_uplink(Uplink { mac: mac2, ip4: ip2, mtu: (pkt.len() + 44) as u32, ..uplink() });
    let run = test_run_on(gw.program("xgw_local"), &pkt, LO);
    assert_eq!(run.verdict, XDP_REDIRECT, "a frame that exactly fits the MTU");
    assert_eq!((&run.data[6..12], &run.data[26..30]), (&mac2[..], &ip2[..]), "the new uplink's MAC and address");
    assert_eq!(u16::from_be_bytes([run.data[16], run.data[17]]) as usize, pkt.len() + 44, "outer IPv4 total length");
    assert_eq!(encap_slot(&gw, cpu, slot).generation, gw.generation(), "refilled under the new generation");
    assert_eq!(gw.encap_outer(cpu, T1).generation, gw.generation(), "rebuilt under the new generation");

    let drops = |gw: &TestGateway, r: &str| gw.drops().get(r).copied().unwrap_or(0);
    let (mtu0, under0) = (drops(&gw, "mtu_exceeded"), drops(&gw, "no_underlay"));
    gw.set_uplink(Uplink { mac: mac2, ip4: ip2, mtu: (pkt.len() + 43) as u32, ..uplink() });
    // No ICMP answer: the inner MTU it would announce (117 - 58) is below
    // IPv4's minimum of 68.
    assert_eq!(test_run_on(gw.program("xgw_local"), &pkt, LO).verdict, XDP_DROP, "one byte over the MTU");
    assert_eq!(drops(&gw, "mtu_exceeded"), mtu0 + 1);
    gw.set_uplink(Uplink { flags: UPLINK_HAS_IP6, ..uplink() });
    assert_eq!(
        test_run_on(gw.program("xgw_local"), &pkt, LO).verdict,
        XDP_DROP,
        "an IPv4 tunnel over an uplink without IPv4"
    );
    assert_eq!(drops(&gw, "no_underlay"), under0 + 1);
    assert_eq!(gw.encap_outer(cpu, T1).kind, OUTER_NO_UNDERLAY);
}

#[test]
fn decap_flows_sharing_a_slot_each_reach_their_own_port() {
    require_root!();
    let cpu = pin_to_this_cpu();
    let mut gw = TestGateway::load(&["xgw_uplink"]);
    gw.set_uplink(uplink());
    gw.add_tunnel(
        T1 as u32,
        Tunnel { remote: ipv4_mapped(HV_IP4), nexthop_mac: HV_MAC, flags: TUNNEL_OVN_METADATA, _pad: 0, vni: VNI },
    );
    gw.add_local_port(
        LO,
        LocalPort { vni: VNI, ofport: VM_OFPORT, port_key: VM_KEY, mac: VM_MAC, ..Default::default() },
    );
    let slot = decap_key(HV_IP4, VM_KEY).slot();
    let k2 =
        (1..0x8000u16).find(|k| *k != VM_KEY && decap_key(HV_IP4, *k).slot() == slot).expect("a colliding port key");
    let port2 = VM_OFPORT + 1;
    gw.add_local_port_entries(port2, LO, VNI, k2, [0x02, 0x00, 0x5e, 0x20, 0x00, 0x04]);
    let prog = gw.program("xgw_uplink");

    for round in 0..4u64 {
        for (key, ofport) in [(VM_KEY, VM_OFPORT), (k2, port2)] {
            let before = gw.port_stats(ofport as u32).tx.packets;
            let (pkt, inner) = to_port(HV_IP4, key);
            let run = test_run(prog, &pkt);
            assert_eq!(run.verdict, XDP_REDIRECT, "round {round}, key {key:#x}");
            assert_eq!(run.data, inner, "round {round}: output is exactly the inner frame");
            assert_eq!(
                gw.port_stats(ofport as u32).tx.packets,
                before + 1,
                "round {round}: key {key:#x} went to another port"
            );
            let e = decap_slot(&gw, cpu, slot);
            assert_eq!((e.filled, e.key, e.dest.ofport, e.tunnel), (1, decap_key(HV_IP4, key), ofport, T1 as u32));
        }
    }
}

/// A tunnel `name` to `remote`, as the port map writes it.
fn tunnel(name: &str, remote: [u8; 4]) -> PortSpec {
    PortSpec::Tunnel(TunnelPort {
        name: xgw::types::Name::new(name).unwrap(),
        remote: xgw::types::UnicastIp::new(IpAddr::from(remote)).unwrap(),
        vni: Some(xgw::types::Vni::new(VNI).unwrap()),
        bfd: false,
        ovn_metadata: true,
        ofport_request: None,
        bfd_timers: Default::default(),
    })
}

/// The controller (the port map on BpfDatapath, pinned maps) changes a
/// tunnel's remote in place and then deletes a local port; after each
/// change, with the old answer still in the warm cache, the very next
/// packet through the real maps shows the new configuration.
#[test]
fn controller_changes_reach_the_next_packet_past_a_warm_cache() {
    require_root!();
    let cpu = pin_to_this_cpu();
    let pgw = PortGw::new("fcache", &[]);
    let vm_if = pgw.veth("vm1");
    let uplink_if = pgw.veth("ul");
    let mut gw = TestGateway::load_pinned(pgw.pins(), &["xgw_uplink", "xgw_local"]);
    gw.in_netns(&pgw.ns);
    gw.set_uplink(Uplink { ifindex: uplink_if, ..uplink() });
    gw.set_uplink_devmap(uplink_if);
    let mut pm = pgw.open(AllocatorConfig::default());
    let now = Instant::now();
    let t = pm.add(&tunnel("hv", HV_IP4), now).expect("add tunnel").ofport();
    let vm = ports::local("vm1", "vm1", VM_KEY, None);
    let vm_mac = match &vm {
        PortSpec::Local(p) => p.mac.0,
        PortSpec::Tunnel(_) => unreachable!(),
    };
    // BpfDatapath resolves interface names in the calling thread's namespace.
    pgw.ns.enter(|| pm.add(&vm, now)).expect("add local port");
    let remote_mac = [0x02, 0x00, 0x5e, 0x20, 0x00, 0x02];
    gw.add_remote(ports::VNI, remote_mac, None, t.get(), 0x0022);

    let encap = gw.program("xgw_local");
    let decap = gw.program("xgw_uplink");
    let mut inner = Vec::new();
    PacketBuilder::ethernet2(vm_mac, remote_mac)
        .ipv4(VM_IP, [203, 0, 113, 2], 64)
        .udp(40000, 7)
        .write(&mut inner, &[1; 16])
        .unwrap();
    let send = |pkt: &[u8]| pgw.ns.enter(|| test_run_on(encap, pkt, vm_if));
    let ekey = encap_key(vm_if, remote_mac);
    let dkey =
        |remote| DecapFlowKey { remote: ipv4_mapped(remote), vni: ports::VNI, egress: VM_KEY, mac: [0; 6], _pad: 0 };
    let geneve = |src: [u8; 4]| {
        let payload = geneve_payload(&[ovn_option(0x0022, VM_KEY)], ports::VNI, &from_vm(vm_mac));
        let mut v = Vec::new();
        PacketBuilder::ethernet2(HV_MAC, GW_MAC)
            .ipv4(src, GW_IP4, 64)
            .udp(50123, 6081)
            .write(&mut v, &payload)
            .unwrap();
        v
    };

    // Warm: both directions resolved once, their slots filled on this CPU.
    let run = send(&inner);
    assert_eq!(run.verdict, XDP_REDIRECT);
    assert_eq!(encap_target(&run.data).1, HV_IP4);
    assert_eq!(test_run(decap, &geneve(HV_IP4)).verdict, XDP_REDIRECT);
    let g0 = gw.generation();
    let warm_encap = encap_slot(&gw, cpu, ekey.slot());
    assert_eq!((warm_encap.key, warm_encap.generation, warm_encap.dest.ofport), (ekey, g0, t.get()));
    let warm_outer = gw.encap_outer(cpu, t.get());
    assert_eq!((warm_outer.generation, &warm_outer.bytes()[30..34]), (g0, &HV_IP4[..]), "the tunnel's headers");
    let warm_decap = decap_slot(&gw, cpu, dkey(HV_IP4).slot());
    assert_eq!((warm_decap.filled, warm_decap.key, warm_decap.generation), (1, dkey(HV_IP4), g0));

    // The tunnel moves to another chassis under the same number.
    assert_eq!(pgw.ns.enter(|| pm.replace(&tunnel("hv", HV2_IP4), now)).expect("replace"), t);
    assert!(gw.generation() > g0, "the controller's writes must bump the generation");
    assert_eq!(encap_slot(&gw, cpu, ekey.slot()), warm_encap, "the cache still holds the flow");
    assert_eq!(gw.encap_outer(cpu, t.get()), warm_outer, "and the old tunnel's headers");
    let run = send(&inner);
    assert_eq!(run.verdict, XDP_REDIRECT);
    assert_eq!(encap_target(&run.data).1, HV2_IP4, "the first packet after the change goes to the new chassis");
    assert_eq!(&run.data[58..], &inner[..]);
    let drops = gw.drops()["unknown_tunnel"];
    assert_eq!(test_run(decap, &geneve(HV_IP4)).verdict, XDP_DROP, "the old chassis is no longer a tunnel");
    assert_eq!(gw.drops()["unknown_tunnel"], drops + 1);
    assert_eq!(test_run(decap, &geneve(HV2_IP4)).verdict, XDP_REDIRECT);

    // The local port goes: decap to its key and encap from its interface
    // stop at once, though both were just cached.
    let g1 = gw.generation();
    assert_eq!(decap_slot(&gw, cpu, dkey(HV2_IP4).slot()).generation, g1, "decap to the port is cached");
    assert_eq!(encap_slot(&gw, cpu, ekey.slot()).generation, g1, "encap from the port is cached");
    pgw.ns.enter(|| pm.delete("vm1", now)).expect("delete local port");
    assert!(gw.generation() > g1);
    // It was the VNI's only port, so the VNI is no longer served either.
    let drops = gw.drops()["unknown_vni"];
    assert_eq!(test_run(decap, &geneve(HV2_IP4)).verdict, XDP_DROP, "no port has the key any more");
    assert_eq!(gw.drops()["unknown_vni"], drops + 1);
    assert_eq!(send(&inner).verdict, XDP_PASS, "the interface is no longer a local port");
}
