//! Jumbo frames: packets per second at 8000-byte inner frames on a
//! 9000-byte veth path, decap and encap beside `xgw_redirect` on the same
//! path in the same run. Every program is multi-buffer, so a frame of two
//! pages reaches XDP as a first buffer and fragments.
//!
//! The live-frames generator of the other rows cannot send a frame larger
//! than a page (the kernel refuses live mode for them), so here frames
//! come from an AF_PACKET socket ([`crate::afpacket`]) on the far end of
//! the veth: veth's receive path turns each skb into a multi-buffer
//! XDP frame for the program under test, as in [`crate::veth::pps_received`]
//! (whose topology this is), and the sink counts what arrives. A rate is
//! what reached the sink over a wall-clock window.
//!
//!   decap: [hv] hv0 -- ul [xgw_uplink] -> p -- eth0 [vm: sink]
//!          [hv] hvb -- ulb [xgw_redirect] -> p -- eth0 [vm: sink]
//!   encap: [vm] eth0 -- p [xgw_local] -> ul -- hv0 [hv: sink]
//!          [vm] eth0b -- pb [xgw_redirect] -> ul -- hv0 [hv: sink]
use std::time::{Duration, Instant};

use xgw_common::maps::*;
use xgw_tests::{gateway::TestGateway, netns::Netns};

use crate::{
    stats,
    veth::{self, frames, setup, sink, Received, GW_IP, GW_MAC, TUNNEL},
    Row,
};

/// The inner frame size of the jumbo rows.
pub const SIZE: u32 = 8000;
const MTU: &str = "9000";

pub fn row_name(what: &str) -> String {
    let (from, to) = if what == "decap" { ("uplink", "port") } else { ("port", "uplink") };
    format!("jumbo {what}, {SIZE} B inner, 9000 B MTU ({from} -> {to}), AF_PACKET generator on the veth peer")
}

pub fn row_names() -> Vec<String> {
    vec![row_name("decap"), row_name("encap")]
}

/// Rows: decap and encap of 8000-byte inner frames, each beside
/// `xgw_redirect` on the twin path; `runs` windows of `window` each.
pub fn pps(runs: usize, window: Duration) -> Vec<Row> {
    let mut t = Received::new('j', ("198.51.100.1/24", "198.51.100.2/24"), |gw, ul, p| {
        setup(gw, ul, p);
        gw.set_uplink(Uplink {
            ifindex: ul,
            mtu: 9000,
            mac: GW_MAC,
            flags: UPLINK_HAS_IP4,
            _pad: 0,
            ip4: GW_IP,
            ip6: [0; 16],
        });
    });
    let (gw_ns, hv, vm, ul, p) = (&t.gw_ns, &t.hv, &t.vm, t.ul, t.p);
    for (ns, ifs) in [
        (gw_ns, ["ul", "ulb", "p", "pb"]),
        (hv, ["hv0", "hvb", "hv0", "hvb"]),
        (vm, ["eth0", "eth0b", "eth0", "eth0b"]),
    ] {
        for i in ifs {
            ns.ok(&["ip", "link", "set", "dev", i, "mtu", MTU]);
        }
    }
    let (decap_pkt, encap_pkt) = frames(SIZE);
    // Frames that reached the sink per second of the window.
    let rate = |gen_ns: &Netns, out: &str, pkt: &[u8], (sink_ns, sink_if): (&Netns, &str)| -> f64 {
        let before = sink(sink_ns, sink_if).drops;
        let start = Instant::now();
        let sent = crate::afpacket::Sender::new(gen_ns, out).send_for(pkt, window);
        let elapsed = start.elapsed();
        // The sink's veth ring drains after the window.
        std::thread::sleep(Duration::from_millis(50));
        let got = sink(sink_ns, sink_if).drops - before;
        assert!(got * 2 >= sent && got > 0, "{}-byte frames out of {out}: {got} of {sent} arrived", pkt.len());
        got as f64 / elapsed.as_secs_f64()
    };
    let (mut decap, mut decap_base, mut encap, mut encap_base) = (vec![], vec![], vec![], vec![]);
    let tunnel = |gw: &TestGateway| gw.port_stats(TUNNEL as u32);
    let before = tunnel(&t.gw);
    for _ in 0..runs {
        t.gw.devmap_set(0, p);
        decap.push(rate(hv, "hv0", &decap_pkt, (vm, "eth0")));
        decap_base.push(rate(hv, "hvb", &decap_pkt, (vm, "eth0")));
        t.gw.devmap_set(0, ul);
        encap.push(rate(vm, "eth0", &encap_pkt, (hv, "hv0")));
        encap_base.push(rate(vm, "eth0b", &encap_pkt, (hv, "hv0")));
    }
    // The frames went through xgw whole: decapsulated and encapsulated by
    // the programs, counted by their full length.
    let after = tunnel(&t.gw);
    let (rx, tx) = (after.rx.packets - before.rx.packets, after.tx.packets - before.tx.packets);
    assert!(rx > 0 && tx > 0, "jumbo: {rx} decapsulated, {tx} encapsulated");
    let full = (SIZE + veth::GENEVE_OVERHEAD) as u64;
    assert_eq!(after.rx.bytes - before.rx.bytes, rx * full, "decap counted by the whole frame");
    assert_eq!(after.tx.bytes - before.tx.bytes, tx * full, "encap counted by the whole frame");
    // The VM namespace's own IPv6 multicast (MLD, solicitations, from its
    // interface's MAC, not the port's) is dropped by port security or as
    // flood (no group); nothing else may be.
    let drops = t.gw.drops();
    let noise = |r: &str| r == "flood" || r.starts_with("port_security_");
    assert!(drops.iter().all(|(r, &n)| n == 0 || noise(r)), "jumbo drops {drops:?}");
    vec![
        Row::new(row_name("decap"), "pkt/s", "xgw_redirect", stats(decap), stats(decap_base)),
        Row::new(row_name("encap"), "pkt/s", "xgw_redirect", stats(encap), stats(encap_base)),
    ]
}
