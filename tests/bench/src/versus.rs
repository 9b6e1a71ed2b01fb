//! xgw against Open vSwitch doing the same Geneve work on the same kind of
//! path. Both devices under test sit between a generator and a sink, with a
//! veth on each side:
//!
//! ```text
//!   [tg]  gx ---- ul [xgw: xgw_uplink, xgw_local] p ---- eth0 [xvm]
//!   [tg]  go ---- ovsul [OVS 3.1 userspace: br-phy, br-int] vm0p ---- vm0 [ovm]
//! ```
//!
//! The generator is `xgw_redirect` run through BPF_PROG_TEST_RUN in
//! live-frames mode inside the sending namespace: every copy of the frame
//! is redirected out of one veth (decap: gx or go; encap: eth0 or vm0).
//! veth hands XDP-redirected frames only to a peer that runs an XDP
//! program, so OVS's two ports run `xgw_pass`: the frame becomes an skb
//! there, as any frame from a NIC would, and OVS reads it through its
//! AF_PACKET socket. The receiving ends (eth0, vm0 for decap; gx, go for
//! encap) drop in XDP and count. Both devices get the same frames, bytes
//! for bytes, and the same configuration: one Geneve tunnel with OVN's
//! option, one VM port, OVS matching the option as xgw does.
//!
//! OVS is asynchronous (it polls its AF_PACKET sockets from its own
//! thread), so a rate is frames arriving at the sink over a wall-clock
//! window while the generator runs continuously, after a warm-up in which
//! OVS installs its datapath flow. xgw is measured the same way. The
//! generator offers more than either forwards: these are saturation rates.
use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use nix::{
    sched::{sched_setaffinity, CpuSet},
    sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal},
};

use xgw_tests::{gateway::TestGateway, ovs::mac_str, Geneve, Netns, OvnKeys, OvsHypervisor, Veth};

use crate::{
    stats,
    veth::{self, sink, SinkCount, GENEVE_OVERHEAD, HV_MAC, REMOTE_KEY, TUNNEL, VM_KEY, VM_MAC},
    PlotPoint, Row, DECAP, ENCAP,
};

pub const XGW: &str = "xgw (veth generator, as OVS)";
const GENERATOR_CPU: usize = 0;
const OVS_CPU: usize = 1;
pub const OVS: &str = "Open vSwitch 3.1 userspace (veth generator)";
pub const BASELINE: &str = "Open vSwitch 3.1 (userspace datapath)";

pub fn decap_name(size: u32) -> String {
    format!("xgw / OVS decap, {size} B inner (veth -> DUT -> veth)")
}
pub fn encap_name(size: u32) -> String {
    format!("xgw / OVS encap, {size} B inner (veth -> DUT -> veth)")
}
pub fn row_names(sizes: &[u32], encap: bool) -> Vec<String> {
    let mut v: Vec<String> = sizes.iter().map(|&s| decap_name(s)).collect();
    if encap {
        v.extend(sizes.iter().map(|&s| encap_name(s)));
    }
    v
}

/// How long each measurement runs.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub runs: usize,
    /// Generator running before the window opens.
    pub warmup: Duration,
    pub window: Duration,
}

/// Where frames come from and where they are counted.
struct Path<'a> {
    gen_ns: &'a Netns,
    gen_if: &'static str,
    sink_ns: &'a Netns,
    sink_if: &'static str,
}

pub fn versus_ovs(sizes: &[u32], t: Timing, encap: bool) -> Vec<Row> {
    let tg = Netns::new("btg");
    let (xgw_ns, xvm, ovs_ns) = (Netns::new("bxg"), Netns::new("bxv"), Netns::new("bov"));
    for ns in [&tg, &xgw_ns, &xvm, &ovs_ns] {
        ns.disable_ipv6();
    }
    Veth::new(&tg, "gx", "", &xgw_ns, "ul", "198.51.100.1/24");
    Veth::new(&xgw_ns, "p", "", &xvm, "eth0", "");
    Veth::new(&tg, "go", "", &ovs_ns, "ovsul", "");

    let mut dut = TestGateway::load(&["xgw_uplink", "xgw_local"]);
    dut.in_netns(&xgw_ns);
    let (ul, p) = (xgw_ns.ifindex("ul"), xgw_ns.ifindex("p"));
    veth::setup(&mut dut, ul, p);
    dut.attach(&xgw_ns, "xgw_uplink", "ul");
    dut.attach(&xgw_ns, "xgw_local", "p");

    // OVS stands where xgw stands: same underlay IP and MAC, same VM MAC,
    // a tunnel to the same hypervisor with the same VNI and OVN keys.
    let ovs = OvsHypervisor::builder(ovs_ns, "ovsul")
        .ip4("198.51.100.1/24")
        .underlay_mac(veth::GW_MAC)
        .vm(VM_MAC, None, None)
        .start();
    ovs.add_geneve("gnv0", &Geneve::new("198.51.100.2", veth::VNI));
    ovs.install_ovn_option(
        "gnv0",
        OvnKeys { ingress: VM_KEY, egress: REMOTE_KEY },
        Some(OvnKeys { ingress: REMOTE_KEY, egress: VM_KEY }),
    );
    // xgw's next hop comes from its tunnel table; OVS's from its neighbour
    // cache, filled here rather than by ARP the sink would swallow.
    ovs.appctl(&["tnl/neigh/set", xgw_tests::ovs::BR_PHY, "198.51.100.2", &mac_str(HV_MAC)]);
    // OVS gets a core of its own, the generator the other: left to the
    // scheduler, OVS sometimes shared the generator's core and its rate
    // halved from one run to the next. This favours OVS: xgw's work runs in
    // the softirqs the generator raises, on the generator's core.
    let pinned = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    if pinned {
        let pid = std::fs::read_to_string(ovs.dir().join("run/ovs-vswitchd.pid")).expect("ovs-vswitchd pidfile");
        xgw_tests::sh(&["taskset", "-a", "-p", "-c", &OVS_CPU.to_string(), pid.trim()]);
    }
    let ovm = ovs.vm();

    let mut gen = TestGateway::load(&["xgw_redirect", "xgw_drop", "xgw_pass"]);
    for (ns, ifname) in [(&tg, "gx"), (&tg, "go"), (&xvm, "eth0"), (ovm, xgw_tests::ovs::VM_IF)] {
        gen.attach(ns, "xgw_drop", ifname);
    }
    for ifname in ["ovsul", xgw_tests::ovs::VM_PORT] {
        gen.attach(ovs.ns(), "xgw_pass", ifname);
    }

    let xgw_decap = Path { gen_ns: &tg, gen_if: "gx", sink_ns: &xvm, sink_if: "eth0" };
    let ovs_decap = Path { gen_ns: &tg, gen_if: "go", sink_ns: ovm, sink_if: xgw_tests::ovs::VM_IF };
    let xgw_encap = Path { gen_ns: &xvm, gen_if: "eth0", sink_ns: &tg, sink_if: "gx" };
    let ovs_encap = Path { gen_ns: ovm, gen_if: xgw_tests::ovs::VM_IF, sink_ns: &tg, sink_if: "go" };

    let (mut decap_rows, mut encap_rows) = (vec![], vec![]);
    for &size in sizes {
        let (decap_pkt, encap_pkt) = veth::frames(size);
        let mut dirs = vec![(DECAP, &decap_pkt, &xgw_decap, &ovs_decap, size)];
        if encap {
            dirs.push((ENCAP, &encap_pkt, &xgw_encap, &ovs_encap, size + GENEVE_OVERHEAD));
        }
        for (dir, pkt, xp, op, out_size) in dirs {
            let before = dut.port_stats(TUNNEL as u32);
            let (mut x, mut o) = (vec![], vec![]);
            for _ in 0..t.runs {
                x.push(rate(&mut gen, xp, pkt, out_size, t, pinned, "xgw"));
                o.push(rate(&mut gen, op, pkt, out_size, t, pinned, "OVS"));
            }
            // The xgw figure must be xgw's work: its tunnel counters moved.
            let after = dut.port_stats(TUNNEL as u32);
            let worked =
                if dir == DECAP { after.rx.packets - before.rx.packets } else { after.tx.packets - before.tx.packets };
            assert!(worked > 0, "{dir} {size} B: xgw's tunnel counters did not move");
            let (name, dir_plot) =
                if dir == DECAP { (decap_name(size), &mut decap_rows) } else { (encap_name(size), &mut encap_rows) };
            dir_plot.push(Row::new(name, "pkt/s", BASELINE, stats(x), stats(o)).plot(PlotPoint {
                panel: dir,
                size,
                value: XGW,
                base: OVS,
            }));
        }
    }
    decap_rows.extend(encap_rows);
    decap_rows
    // Drop order: the generator's and xgw's programs, OVS (its guard stops
    // the daemons and deletes its namespaces), then the other namespaces.
}

/// Frames per second arriving at the sink of `path` over `t.window` while
/// the generator runs. Checks that they did arrive and had `out_size`
/// bytes: the decapsulated or encapsulated frame, not the input.
///
/// The generator is one long BPF_PROG_TEST_RUN call, ended by a signal
/// (the kernel checks for one between batches): each call swaps the XDP
/// dispatcher and waits for an RCU grace period, so a loop of short calls
/// would idle the generator for milliseconds at a time.
fn rate(gen: &mut TestGateway, path: &Path, pkt: &[u8], out_size: u32, t: Timing, pin: bool, who: &str) -> f64 {
    install_wakeup();
    gen.in_netns(path.gen_ns);
    let out = path.gen_ns.ifindex(path.gen_if);
    gen.devmap_set(0, out);
    let md = veth::xdp_md(pkt.len(), out);
    let prog = gen.program("xgw_redirect");
    let (stop, done) = (AtomicBool::new(false), AtomicBool::new(false));
    let thread = AtomicU64::new(0);
    // Where the kernel refuses live frames, an AF_PACKET socket on the same
    // veth end sends instead (`crate::afpacket`).
    let sender = (!crate::live::permitted()).then(|| crate::afpacket::Sender::new(path.gen_ns, path.gen_if));
    let (c0, c1, secs) = std::thread::scope(|s| {
        let flood = s.spawn(|| {
            path.gen_ns.enter(|| {
                if pin {
                    let mut cpus = CpuSet::new();
                    cpus.set(GENERATOR_CPU).expect("CPU set");
                    sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus).expect("pin the generator");
                }
                // SAFETY: pthread_self has no preconditions.
                thread.store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
                match &sender {
                    None => crate::live::until_stopped(prog, pkt, &md, &stop),
                    Some(sender) => {
                        sender.send_until(pkt, &stop);
                    }
                }
            });
            done.store(true, Ordering::SeqCst);
        });
        let _stop = Stopper { stop: &stop, done: &done, thread: &thread };
        std::thread::sleep(t.warmup);
        // The counter reads take a few ms (processes); time their middle.
        let read = || {
            let t0 = Instant::now();
            let c = (sink(path.sink_ns, path.sink_if), xmit(path.gen_ns, path.gen_if));
            (c, t0 + t0.elapsed() / 2)
        };
        let (c0, t0) = read();
        std::thread::sleep(t.window);
        let (c1, t1) = read();
        drop(_stop);
        flood.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        (c0, c1, (t1 - t0).as_secs_f64())
    });
    let d = SinkCount {
        packets: c1.0.packets - c0.0.packets,
        bytes: c1.0.bytes - c0.0.bytes,
        drops: c1.0.drops - c0.0.drops,
    };
    assert!(d.drops > 0, "{who}, {} B in: nothing arrived at {}", pkt.len(), path.sink_if);
    // veth counts a frame that came as an skb (from OVS's socket) without its
    // Ethernet header, one redirected in XDP with it.
    let mean = d.bytes as f64 / d.packets as f64;
    assert!(
        (f64::from(out_size) - 14.0 - 0.5..=f64::from(out_size) + 0.5).contains(&mean),
        "{who}, {} B in: frames at {} average {mean:.1} B, expected {out_size}",
        pkt.len(),
        path.sink_if
    );
    if std::env::var_os("XGW_BENCH_VERBOSE").is_some() {
        let offered = (c1.1 - c0.1) as f64 / secs;
        eprintln!(
            "{who} {} B: offered {:.0}k/s, delivered {:.0}k/s",
            pkt.len(),
            offered / 1e3,
            d.drops as f64 / secs / 1e3
        );
    }
    d.drops as f64 / secs
}

/// Frames the generator's veth end has passed to its peer (XDP transmit).
fn xmit(ns: &Netns, ifname: &str) -> u64 {
    ns.ok(&["ethtool", "-S", ifname])
        .lines()
        .filter_map(|l| l.trim().split_once(':'))
        .filter(|(k, _)| k.starts_with("tx_queue_") && k.ends_with("_xdp_xmit"))
        .map(|(_, v)| v.trim().parse::<u64>().unwrap_or_else(|_| panic!("ethtool -S {ifname}: {v}")))
        .sum()
}

/// SIGUSR1 with a handler that does nothing and no SA_RESTART: it only
/// makes the generator's syscall return EINTR.
pub(crate) fn install_wakeup() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    extern "C" fn nothing(_: libc::c_int) {}
    ONCE.call_once(|| {
        let action = SigAction::new(SigHandler::Handler(nothing), SaFlags::empty(), SigSet::empty());
        // SAFETY: the handler touches nothing.
        unsafe { sigaction(Signal::SIGUSR1, &action) }.expect("install SIGUSR1 handler");
    });
}

/// Stops the generator when dropped, on a panic in the measuring thread too
/// (the thread scope would otherwise wait for it forever): sets `stop`,
/// then signals the generator's thread until it has left its loop (a
/// signal that lands between two calls interrupts nothing).
pub(crate) struct Stopper<'a> {
    pub stop: &'a AtomicBool,
    pub done: &'a AtomicBool,
    pub thread: &'a AtomicU64,
}

impl Drop for Stopper<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        while !self.done.load(Ordering::SeqCst) {
            let t = self.thread.load(Ordering::SeqCst);
            if t != 0 {
                // SAFETY: the thread is alive until `done` (the scope joins it later).
                unsafe { libc::pthread_kill(t as libc::pthread_t, libc::SIGUSR1) };
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
