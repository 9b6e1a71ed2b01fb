//! The daemon's own map writes (remote bindings) against the flow cache: a
//! binding moved to another tunnel, then deleted, through `xgw binding`,
//! reaches the very next packet although the cache held the old answer.
//! Packets go through this test's own `xgw_local` on the daemon's pinned
//! maps, pinned to one CPU whose cache slot is read back from the map.
use aya::maps::{MapData, PerCpuArray};
use etherparse::PacketBuilder;
use xgw::ofport::MacAddr;
use xgw_common::maps::{names::ENCAP_FLOWS, EncapFlow, EncapFlowKey};
use xgw_tests::{
    process::pin_to_this_cpu,
    daemon::Daemon,
    gateway::TestGateway,
    netns::{Netns, Veth},
    packet::*,
    require_root,
};

const XDP_DROP: u32 = 1;
const VM_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x20, 0, 1];
const REMOTE_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x20, 0, 2];

#[test]
fn binding_changes_reach_the_next_packet_past_a_warm_cache() {
    require_root!();
    let cpu = pin_to_this_cpu();
    let ns = Netns::new("dflow");
    let peer = Netns::new("peer");
    Veth::new(&ns, "ul", "198.51.100.1/24", &peer, "w", "198.51.100.2/24");
    ns.ok(&["ip", "link", "add", "p1", "type", "veth", "peer", "name", "p1x"]);
    ns.ok(&["ip", "link", "set", "p1", "up"]);
    ns.ok(&["ip", "link", "set", "p1x", "up"]);
    let mut d = Daemon::new(&ns, "ul", &["198.51.100.1"]);
    d.start();
    d.cli(&["tunnel", "add", "hv2", "--remote-ip", "198.51.100.2", "--vni", "5001", "--ovn-metadata"]);
    d.cli(&["tunnel", "add", "hv3", "--remote-ip", "198.51.100.3", "--vni", "5001", "--ovn-metadata"]);
    d.cli(&["port", "add", "vm1", "--ifname", "p1", "--vni", "5001", "--port-key", "17", "--mac", &MacAddr(VM_MAC).to_string()]);
    let bind = |tunnel: &str| {
        d.cli(&["binding", "add", "--vni", "5001", "--mac", &MacAddr(REMOTE_MAC).to_string(), "--tunnel", tunnel, "--port-key", "34"])
    };
    let unbind = || d.cli(&["binding", "del", "--vni", "5001", "--mac", &MacAddr(REMOTE_MAC).to_string()]);
    bind("hv2");

    let gw = TestGateway::load_pinned(&d.pins(), &["xgw_local"]);
    let prog = gw.program("xgw_local");
    let p1 = ns.ifindex("p1");
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(VM_MAC, REMOTE_MAC).ipv4([203, 0, 113, 1], [203, 0, 113, 2], 64).udp(40000, 7).write(&mut frame, &[7; 16]).unwrap();
    let send = || ns.enter(|| test_run_on(prog, &frame, p1));
    // Outer IPv4 destination: Ethernet 14 + IPv4 header bytes 16..20.
    let outer_dst = |run: &Run| -> [u8; 4] { run.data[30..34].try_into().unwrap() };
    let key = EncapFlowKey { ifindex: p1, mac: REMOTE_MAC, _pad0: 0, _pad1: 0 };
    let slot = || -> EncapFlow {
        let m: PerCpuArray<&MapData, EncapFlow> = PerCpuArray::try_from(gw.ebpf.map(ENCAP_FLOWS).unwrap()).unwrap();
        m.get(&key.slot(), 0).unwrap()[cpu]
    };

    let run = send();
    assert_eq!(run.verdict, XDP_REDIRECT);
    assert_eq!(outer_dst(&run), [198, 51, 100, 2]);
    let warm = slot();
    assert_eq!((warm.filled, warm.key, warm.generation), (1, key, gw.generation()), "the flow is cached");

    unbind();
    bind("hv3");
    assert!(gw.generation() > warm.generation, "the daemon's writes must bump the generation");
    assert_eq!(slot(), warm, "the cache still holds the old tunnel");
    let run = send();
    assert_eq!(run.verdict, XDP_REDIRECT);
    assert_eq!(outer_dst(&run), [198, 51, 100, 3], "the first packet after the move goes to the new tunnel");
    assert_eq!(&run.data[run.data.len() - frame.len()..], &frame[..]);

    let cached = slot();
    assert_eq!((cached.generation, &cached.tunnel.remote[12..]), (gw.generation(), &[198u8, 51, 100, 3][..]));
    unbind();
    let drops = gw.drops()["unknown_destination"];
    assert_eq!(send().verdict, XDP_DROP, "a deleted binding is unknown on the next packet");
    assert_eq!(gw.drops()["unknown_destination"], drops + 1);
    d.stop();
}
