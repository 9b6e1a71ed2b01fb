//! What one flooded frame costs against the number of copies, with real
//! traffic through veths. A VM's port floods a 64-byte broadcast into its
//! VNI's group: `xgw_local` (the live-frames generator's program, as
//! received on the port) passes it up with a `FloodMeta`, and `xgw_flood`
//! at the port's TC ingress clones it to each member (`bpf_clone_redirect`
//! in a `bpf_loop`): local members out of their veth, tunnel members
//! encapsulated out of the uplink. Every copy is counted where it arrives,
//! at an XDP sink on the far veth end (`xgw_drop`; on veth a port's peer
//! runs an XDP program, see the README). The group holds the ingress port
//! too, as OVN's `_MC_flood` does; it gets no copy.
//!
//!   [gen: xgw_local on p0] p0 (TC xgw_flood) -> p1..pN -- v1..vN [sinks]
//!                                             -> ul -- hv0 [sink] (tunnels)
//!
//! The figure is flooded frames per second: copies arriving at one
//! member's sink per second (every member gets one per frame; tunnel
//! copies all leave through the uplink, so there it is the uplink's sink
//! over the number of chassis), over a window while the generator runs
//! without pause ([`live::window_rate`]), beside the unicast rate of the
//! same program on the same path: a frame switched to one local port, or
//! encapsulated to one chassis, in XDP. All the work a frame causes runs
//! in the softirqs the generator raises, on its core. The cost per copy is
//! the slope of ns per flooded frame against copies (a least-squares fit
//! per run), beside the ns per unicast frame.
//!
//! The alternative for local members, XDP devmap broadcast
//! (`BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS`, `xgw_bcast`, bench-only), is
//! measured the same way on the same ports: it copies `xdp_frame`s, with
//! no socket buffer and no TC pass, but it can send only the frame as it is
//! (no encapsulation per chassis) and only to a devmap's entries (one map
//! per group), so it could serve local members alone.
use std::time::Duration;

use aya::maps::DevMapHash;
use xgw_common::maps::*;
use xgw_tests::{
    gateway::TestGateway,
    netns::{self, Netns, Veth},
};

use crate::{live, stats, veth, Row, Stats};

/// Local members beyond the ingress port (the most any row uses).
const MAX_LOCAL: usize = 8;
/// Ingress port p0 and members p1.. : OpenFlow numbers and keys.
const OFPORT0: u16 = 10;
const TUNNEL0: u16 = 30;
const VNI: u32 = 5001;
const VM_MAC: [u8; 6] = [0x02, 0, 0x5e, 0x30, 0, 0];
const VM_IP: [u8; 4] = [203, 0, 113, 20];
const REMOTE_MAC: [u8; 6] = [0x02, 0, 0x5e, 0x31, 0, 1];
const GW_IP: [u8; 4] = [198, 51, 100, 1];
const GW_MAC: [u8; 6] = [2, 0, 0x5e, 0x10, 0, 1];
const HV_MAC: [u8; 6] = [2, 0, 0x5e, 0x10, 0, 2];

fn member_mac(i: usize) -> [u8; 6] {
    [0x02, 0, 0x5e, 0x30, 0, i as u8]
}

/// A 64-byte UDP frame from the VM on p0 to `dst` (203.0.113.255 for broadcast).
fn frame(dst: [u8; 6], dip: [u8; 4]) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2(VM_MAC, dst)
        .ipv4(VM_IP, dip, 64)
        .udp(1000, 2000)
        .write(&mut v, &[0; 22])
        .unwrap();
    assert_eq!(v.len(), 64);
    v
}

/// Copies per flooded frame the rows measure.
pub struct Sizes {
    pub local: &'static [usize],
    pub tunnel: &'static [usize],
}
/// At most 4 tunnel copies: they all leave through the uplink, and the
/// generator's batch of 64 frames puts 64 copies per chassis into its veth
/// before the far end's NAPI runs; 8 overflow its 256-frame ring (half the
/// copies counted `flood_copy`), a limit of this path, not of the copies.
pub const FULL: Sizes = Sizes { local: &[1, 2, 4, 8], tunnel: &[1, 2, 4] };
pub const QUICK: Sizes = Sizes { local: &[1, 4], tunnel: &[1, 4] };

/// Group sizes and the generator's warm-up and window per measurement,
/// for `--quick` or not.
pub fn params(quick: bool) -> (&'static Sizes, live::Window) {
    let ms = Duration::from_millis;
    if quick {
        (&QUICK, live::Window { warmup: ms(100), window: ms(200) })
    } else {
        (&FULL, live::Window { warmup: ms(200), window: ms(1000) })
    }
}

const SWITCH: &str = "unicast switch to one local port, same path (xgw_local, XDP redirect)";
const ENCAP: &str = "unicast encap to one chassis, same path (xgw_local, XDP redirect)";
const SWITCH_NS: &str = "ns per unicast switched frame, same path";
const ENCAP_NS: &str = "ns per unicast encapsulated frame, same path";

pub fn local_name(n: usize) -> String {
    format!("flood from a port to {n} local member(s) (xgw_flood, bpf_clone_redirect), 64 B, flooded frames")
}
pub fn tunnel_name(n: usize) -> String {
    format!("flood from a port to {n} tunnel member(s) (xgw_flood, encap per copy), 64 B, flooded frames")
}
pub fn bcast_name(n: usize) -> String {
    format!("XDP devmap broadcast to {n} local port(s) (xgw_bcast, bench-only alternative), 64 B, frames")
}
pub const LOCAL_SLOPE: &str = "flood: cost of one more local copy (xgw_flood, slope)";
pub const TUNNEL_SLOPE: &str = "flood: cost of one more tunnel copy (xgw_flood, slope)";
pub const BCAST_SLOPE: &str = "XDP devmap broadcast: cost of one more local copy (xgw_bcast, slope)";

pub fn row_names(s: &Sizes) -> Vec<String> {
    let mut v: Vec<String> = s.local.iter().map(|&n| local_name(n)).collect();
    v.extend(s.tunnel.iter().map(|&n| tunnel_name(n)));
    v.extend(s.local.iter().map(|&n| bcast_name(n)));
    v.extend([LOCAL_SLOPE, TUNNEL_SLOPE, BCAST_SLOPE].map(String::from));
    v
}

/// Least-squares slope of `y` against `x`.
fn slope(x: &[usize], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let mx = x.iter().sum::<usize>() as f64 / n;
    let my = y.iter().sum::<f64>() / n;
    let sxy: f64 = x.iter().zip(y).map(|(&x, y)| (x as f64 - mx) * (y - my)).sum();
    let sxx: f64 = x.iter().map(|&x| (x as f64 - mx).powi(2)).sum();
    sxy / sxx
}

/// The flood rows: flooded frames per second for each group size in
/// `sizes`, with local members, with tunnel members, and through devmap
/// broadcast, and the per-copy slopes, each beside the unicast rate (or
/// ns per frame) of the same path, interleaved in every run.
pub fn flood(sizes: &Sizes, window: live::Window, runs: usize) -> Vec<Row> {
    assert!(sizes.local.len() >= 2 && sizes.tunnel.len() >= 2, "a slope needs two group sizes");
    if !live::permitted() {
        let slopes = [LOCAL_SLOPE, TUNNEL_SLOPE, BCAST_SLOPE].map(String::from);
        let mut rows = crate::refused(row_names(sizes).into_iter().filter(|n| !slopes.contains(n)).collect(), "pkt/s");
        rows.extend(crate::refused(slopes.to_vec(), "ns/copy"));
        return rows;
    }
    let gw_ns = Netns::new("qgw");
    let vms = Netns::new("qvm");
    let hv = Netns::new("qhv");
    for ns in [&gw_ns, &vms, &hv] {
        // No IPv6 chatter into the sinks' counts.
        ns.disable_ipv6();
    }
    Veth::new(&gw_ns, "ul", "198.51.100.1/24", &hv, "hv0", "198.51.100.2/24");
    let mut gw = TestGateway::load(&["xgw_local", "xgw_drop", "xgw_bcast", xgw::datapath::FLOOD_PROGRAM]);
    gw.in_netns(&gw_ns);
    let ul = gw_ns.ifindex("ul");
    gw.set_uplink(Uplink {
        ifindex: ul,
        mtu: 1500,
        mac: GW_MAC,
        flags: UPLINK_HAS_IP4,
        _pad: 0,
        ip4: GW_IP,
        ip6: [0; 16],
    });
    gw.set_uplink_devmap(ul);
    let mut ports = vec![];
    for i in 0..=MAX_LOCAL {
        let (p, v) = (format!("p{i}"), format!("v{i}"));
        Veth::new(&gw_ns, &p, "", &vms, &v, "");
        let ifindex = gw_ns.ifindex(&p);
        // The sender's port is secured as `xgw port add --mac M --ip I` sets it.
        let (mac, sec, ip) = if i == 0 {
            (VM_MAC, PORTSEC_ON | PORTSEC_RESTRICTED | PORTSEC_HAS_IP, ipv4_mapped(VM_IP))
        } else {
            (member_mac(i), 0, [0; 16])
        };
        let ofport = OFPORT0 + i as u16;
        gw.add_local_port(ifindex, LocalPort { vni: VNI, ofport, port_key: 1 + i as u16, mac, sec, ip, _pad: 0 });
        gw.attach(&vms, "xgw_drop", &v);
        ports.push(ifindex);
    }
    gw.attach_flood(&gw_ns, "p0");
    gw.attach(&hv, "xgw_drop", "hv0");
    let max_tunnels = *sizes.tunnel.iter().max().unwrap();
    for t in 0..max_tunnels {
        let remote = ipv4_mapped([198, 51, 100, 10 + t as u8]);
        let tunnel = Tunnel { remote, nexthop_mac: HV_MAC, flags: TUNNEL_OVN_METADATA, _pad: 0, vni: VNI };
        gw.add_tunnel((TUNNEL0 + t as u16) as u32, tunnel);
    }
    gw.add_remote(VNI, REMOTE_MAC, None, TUNNEL0, 0x40);

    let broadcast = frame([0xff; 6], [203, 0, 113, 255]);
    let to_member = frame(member_mac(1), [203, 0, 113, 21]);
    let to_remote = frame(REMOTE_MAC, [203, 0, 113, 40]);
    let p0 = ports[0];
    let member = |i: usize| veth::sink(&vms, &format!("v{i}")).drops;
    let uplink = || veth::sink(&hv, "hv0").drops;
    // Flooded frames per second: copies arriving at one member's sink (each
    // member gets one per frame), or at the uplink's over the tunnel copies.
    // Over the whole run, every member must have had its copies and (for
    // xgw_local) nearly every frame the program saw must have arrived.
    let run = |gw: &TestGateway, prog: &str, pkt: &[u8], local: usize, tunnels: usize| -> f64 {
        let all = || -> Vec<u64> { (1..=local).map(member).chain((tunnels > 0).then(uplink)).collect() };
        let (before, seen) = (all(), gw.port_stats(OFPORT0 as u32).rx.packets);
        let rate = if tunnels > 0 {
            live::window_rate(gw.program(prog), pkt, &gw_ns, p0, window, &uplink) / tunnels as f64
        } else {
            live::window_rate(gw.program(prog), pkt, &gw_ns, p0, window, &|| member(1))
        };
        std::thread::sleep(Duration::from_millis(50));
        let got: Vec<u64> = all().iter().zip(&before).map(|(a, b)| a - b).collect();
        let seen = gw.port_stats(OFPORT0 as u32).rx.packets - seen;
        let per_frame = if tunnels > 0 { got[0] / tunnels as u64 } else { got[0] };
        let ok = got.iter().all(|&g| g * 10 >= per_frame * 9) && (prog != "xgw_local" || per_frame * 10 >= seen * 9);
        assert!(
            ok,
            "{prog}, {local} local, {tunnels} tunnels: sinks got {got:?} of {seen} frames, drops {:?}",
            gw.drops()
        );
        rate
    };
    let group = |gw: &mut TestGateway, local: usize, tunnels: usize| {
        let local: Vec<u16> = (0..=local as u16).map(|i| OFPORT0 + i).collect();
        let tunnels: Vec<u16> = (0..tunnels as u16).map(|t| TUNNEL0 + t).collect();
        gw.set_group(VNI, GROUP_FLOOD, &local, &tunnels, 0);
    };
    // xgw_bcast's devmap: p0 (excluded as the ingress) and `n` members.
    let bcast_members = |gw: &mut TestGateway, n: usize| {
        let mut m = DevMapHash::try_from(gw.ebpf.map_mut("BENCH_BCAST").expect("BENCH_BCAST")).unwrap();
        for (i, &ifindex) in ports.iter().enumerate() {
            if i <= n {
                netns::enter(&gw_ns.name, || m.insert(i as u32, ifindex, None, 0)).expect("BENCH_BCAST");
            } else {
                let _ = m.remove(i as u32);
            }
        }
    };

    let (mut switch, mut encap) = (vec![], vec![]);
    let mut local = vec![vec![]; sizes.local.len()];
    let mut tunnel = vec![vec![]; sizes.tunnel.len()];
    let mut bcast = vec![vec![]; sizes.local.len()];
    let (mut local_slope, mut tunnel_slope, mut bcast_slope) = (vec![], vec![], vec![]);
    for _ in 0..runs {
        switch.push(run(&gw, "xgw_local", &to_member, 1, 0));
        encap.push(run(&gw, "xgw_local", &to_remote, 0, 1));
        let ns = |v: &mut Vec<Vec<f64>>, i: usize, rate: f64| {
            v[i].push(rate);
            1e9 / rate
        };
        let mut y = vec![];
        for (i, &n) in sizes.local.iter().enumerate() {
            group(&mut gw, n, 0);
            y.push(ns(&mut local, i, run(&gw, "xgw_local", &broadcast, n, 0)));
        }
        local_slope.push(slope(sizes.local, &y));
        y.clear();
        for (i, &n) in sizes.tunnel.iter().enumerate() {
            group(&mut gw, 0, n);
            y.push(ns(&mut tunnel, i, run(&gw, "xgw_local", &broadcast, 0, n)));
        }
        tunnel_slope.push(slope(sizes.tunnel, &y));
        y.clear();
        for (i, &n) in sizes.local.iter().enumerate() {
            bcast_members(&mut gw, n);
            y.push(ns(&mut bcast, i, run(&gw, "xgw_bcast", &broadcast, n, 0)));
        }
        bcast_slope.push(slope(sizes.local, &y));
    }
    // A copy that found its veth ring full counts `flood_copy` (now and then
    // at 4 chassis: 256 copies per batch into one 256-frame ring); the
    // arrival checks above bound those. Nothing else may have been dropped.
    let other: Vec<_> = gw.drops().into_iter().filter(|&(r, n)| n > 0 && r != "flood_copy").collect();
    assert!(other.is_empty(), "flood benchmark: drops {other:?}");
    let rate = |v: &[f64]| stats(v.to_vec());
    let per_frame = |v: &[f64]| stats(v.iter().map(|r| 1e9 / r).collect());
    let (switch_rate, encap_rate) = (rate(&switch), rate(&encap));
    let mut rows = vec![];
    for (&n, t) in sizes.local.iter().zip(&local) {
        rows.push(Row::new(local_name(n), "pkt/s", SWITCH, rate(t), switch_rate));
    }
    for (&n, t) in sizes.tunnel.iter().zip(&tunnel) {
        rows.push(Row::new(tunnel_name(n), "pkt/s", ENCAP, rate(t), encap_rate));
    }
    for (&n, t) in sizes.local.iter().zip(&bcast) {
        rows.push(Row::new(bcast_name(n), "pkt/s", SWITCH, rate(t), switch_rate));
    }
    let slope_row = |name: &str, v: Vec<f64>, base: &str, b: Stats| Row::new(name, "ns/copy", base, stats(v), b);
    rows.push(slope_row(LOCAL_SLOPE, local_slope, SWITCH_NS, per_frame(&switch)));
    rows.push(slope_row(TUNNEL_SLOPE, tunnel_slope, ENCAP_NS, per_frame(&encap)));
    rows.push(slope_row(BCAST_SLOPE, bcast_slope, SWITCH_NS, per_frame(&switch)));
    rows
}
