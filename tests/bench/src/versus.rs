//! xgw against Open vSwitch doing the same Geneve work on the same kind of
//! path. Both devices under test sit between a generator and a sink, with a
//! veth on each side:
//!
//! ```text
//!   [tg]  gx ---- ul [xgw: xgw_uplink, xgw_local] p ---- eth0 [xvm]
//!   [tg]  go ---- ovsul [OVS 3.1 userspace: br-phy, br-int] vm0p ---- vm0 [ovm]
//!   [tg]  ga ---- ovsul [OVS 3.1 userspace, AF_XDP ports] vm0p ---- vm0 [avm]
//! ```
//!
//! The second OVS is the strongest this machine can run: its ports are
//! AF_XDP sockets (`type=afxdp`, native XDP on the veth, OVS's own XDP
//! program redirecting into them) served by a PMD thread busy-polling on
//! its own core; the first uses OVS's default for the userspace datapath,
//! an AF_PACKET socket per port, served by the main thread.
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

use xgw_tests::{
    gateway::TestGateway,
    ovs::{mac_str, VM_IF},
    Geneve, Netns, OvnKeys, OvsHypervisor, Veth,
};

use crate::{
    stats,
    veth::{self, sink, SinkCount, GENEVE_OVERHEAD, HV_MAC, REMOTE_KEY, TUNNEL, VM_KEY, VM_MAC},
    PlotPoint, Row, DECAP, ENCAP,
};

pub const XGW: &str = "xgw (veth generator, as OVS)";
const GENERATOR_CPU: usize = 0;
const OVS_CPU: usize = 1;
/// Each OVS's underlay veth end, in its own namespace.
const OVS_UNDERLAY: &str = "ovsul";
pub const OVS: &str = "Open vSwitch 3.1 userspace (veth generator)";
pub const BASELINE: &str = "Open vSwitch 3.1 (userspace datapath)";
pub const BASELINE_AFXDP: &str = "Open vSwitch 3.1 (userspace datapath, AF_XDP ports, PMD thread)";

pub fn decap_name(size: u32) -> String {
    format!("xgw / OVS decap, {size} B inner (veth -> DUT -> veth)")
}
pub fn encap_name(size: u32) -> String {
    format!("xgw / OVS encap, {size} B inner (veth -> DUT -> veth)")
}
pub fn afxdp_name(what: &str, size: u32) -> String {
    format!("xgw / OVS AF_XDP {what}, {size} B inner (veth -> DUT -> veth)")
}
pub fn afxdp_cost_name(what: &str, size: u32) -> String {
    format!("OVS AF_XDP PMD processing per packet / xgw program per frame, {what}, {size} B inner")
}
const COST_BASELINE: &str = "xgw program, ns per frame (BPF run-time stats), same run";
pub fn row_names(sizes: &[u32], encap: bool) -> Vec<String> {
    let mut v: Vec<String> = sizes.iter().map(|&s| decap_name(s)).collect();
    if encap {
        v.extend(sizes.iter().map(|&s| encap_name(s)));
    }
    v.extend(sizes.iter().map(|&s| afxdp_name("decap", s)));
    if encap {
        v.extend(sizes.iter().map(|&s| afxdp_name("encap", s)));
    }
    v.extend(sizes.iter().map(|&s| afxdp_cost_name("decap", s)));
    if encap {
        v.extend(sizes.iter().map(|&s| afxdp_cost_name("encap", s)));
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
    let (xgw_ns, xvm, ovs_ns, afxdp_ns) = (Netns::new("bxg"), Netns::new("bxv"), Netns::new("bov"), Netns::new("boa"));
    for ns in [&tg, &xgw_ns, &xvm, &ovs_ns, &afxdp_ns] {
        ns.disable_ipv6();
    }
    Veth::new(&tg, "gx", "", &xgw_ns, "ul", "198.51.100.1/24");
    Veth::new(&xgw_ns, "p", "", &xvm, "eth0", "");
    Veth::new(&tg, "go", "", &ovs_ns, OVS_UNDERLAY, "");
    Veth::new(&tg, "ga", "", &afxdp_ns, OVS_UNDERLAY, "");

    let mut dut = TestGateway::load(&["xgw_uplink", "xgw_local"]);
    dut.in_netns(&xgw_ns);
    let (ul, p) = (xgw_ns.ifindex("ul"), xgw_ns.ifindex("p"));
    veth::setup(&mut dut, ul, p);
    dut.attach(&xgw_ns, "xgw_uplink", "ul");
    dut.attach(&xgw_ns, "xgw_local", "p");

    // OVS gets a core of its own, the generator the other: left to the
    // scheduler, OVS sometimes shared the generator's core and its rate
    // halved from one run to the next. This favours OVS: xgw's work runs in
    // the softirqs the generator raises, on the generator's core.
    let pinned = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    let ovs = start_ovs(ovs_ns, None, pinned);
    let afxdp = start_ovs(afxdp_ns, Some(OVS_CPU), pinned);
    // AF_XDP needs what some kernels or builds lack: said, not hidden.
    let afxdp_error = [OVS_UNDERLAY, xgw_tests::ovs::VM_PORT]
        .iter()
        .find_map(|port| afxdp.port_error(port).map(|e| format!("OVS could not open {port} as AF_XDP: {e}")));
    let (ovm, avm) = (ovs.vm(), afxdp.vm());

    let mut gen = TestGateway::load(&["xgw_redirect", "xgw_drop", "xgw_pass"]);
    for (ns, ifname) in [(&tg, "gx"), (&tg, "go"), (&tg, "ga"), (&xvm, "eth0"), (ovm, VM_IF), (avm, VM_IF)] {
        gen.attach(ns, "xgw_drop", ifname);
    }
    // The AF_XDP ports run OVS's own XDP program, which veth's peers need.
    for ifname in [OVS_UNDERLAY, xgw_tests::ovs::VM_PORT] {
        gen.attach(ovs.ns(), "xgw_pass", ifname);
    }

    let xgw_decap = Path { gen_ns: &tg, gen_if: "gx", sink_ns: &xvm, sink_if: "eth0" };
    let ovs_decap = Path { gen_ns: &tg, gen_if: "go", sink_ns: ovm, sink_if: VM_IF };
    let afxdp_decap = Path { gen_ns: &tg, gen_if: "ga", sink_ns: avm, sink_if: VM_IF };
    let xgw_encap = Path { gen_ns: &xvm, gen_if: "eth0", sink_ns: &tg, sink_if: "gx" };
    let ovs_encap = Path { gen_ns: ovm, gen_if: VM_IF, sink_ns: &tg, sink_if: "go" };
    let afxdp_encap = Path { gen_ns: avm, gen_if: VM_IF, sink_ns: &tg, sink_if: "ga" };

    // Per-packet cost: xgw's program time (BPF run-time statistics, on only
    // for a run of its own: they cost two clock reads per frame, which the
    // rate rows must not pay) and the AF_XDP PMD's processing cycles (OVS's
    // own count, in TSC cycles).
    let tsc_ghz = tsc_ghz();
    let (mut decap_rows, mut encap_rows, mut afxdp_rows, mut cost_rows) = (vec![], vec![], vec![], vec![]);
    for &size in sizes {
        let (decap_pkt, encap_pkt) = veth::frames(size);
        let mut dirs = vec![(DECAP, &decap_pkt, &xgw_decap, &ovs_decap, &afxdp_decap, size)];
        if encap {
            dirs.push((ENCAP, &encap_pkt, &xgw_encap, &ovs_encap, &afxdp_encap, size + GENEVE_OVERHEAD));
        }
        for (dir, pkt, xp, op, ap, out_size) in dirs {
            let before = dut.port_stats(TUNNEL as u32);
            let (mut x, mut o, mut a) = (vec![], vec![], vec![]);
            let (mut x_ns, mut a_ns) = (vec![], vec![]);
            let prog = if dir == DECAP { "xgw_uplink" } else { "xgw_local" };
            let run_time = |dut: &TestGateway| {
                let info = dut.program(prog).info().expect("program info");
                (info.run_time().as_nanos() as f64, info.run_count() as f64)
            };
            for _ in 0..t.runs {
                x.push(rate(&mut gen, xp, pkt, out_size, t, pinned, "xgw"));
                if afxdp_error.is_none() {
                    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF run-time stats");
                    let (t0, n0) = run_time(&dut);
                    rate(&mut gen, xp, pkt, out_size, t, pinned, "xgw (run-time stats on)");
                    let (t1, n1) = run_time(&dut);
                    x_ns.push((t1 - t0) / (n1 - n0).max(1.0));
                }
                o.push(rate(&mut gen, op, pkt, out_size, t, pinned, "OVS"));
                if afxdp_error.is_none() {
                    afxdp.appctl(&["dpif-netdev/pmd-stats-clear"]);
                    a.push(rate(&mut gen, ap, pkt, out_size, t, pinned, "OVS AF_XDP"));
                    a_ns.push(pmd_processing_cycles(&afxdp) / tsc_ghz);
                }
            }
            // The xgw figure must be xgw's work: its tunnel counters moved.
            let after = dut.port_stats(TUNNEL as u32);
            let worked =
                if dir == DECAP { after.rx.packets - before.rx.packets } else { after.tx.packets - before.tx.packets };
            assert!(worked > 0, "{dir} {size} B: xgw's tunnel counters did not move");
            let (name, dir_plot) =
                if dir == DECAP { (decap_name(size), &mut decap_rows) } else { (encap_name(size), &mut encap_rows) };
            let xgw = stats(x);
            dir_plot.push(Row::new(name, "pkt/s", BASELINE, xgw, stats(o)).plot(PlotPoint {
                panel: dir,
                size,
                value: XGW,
                base: OVS,
            }));
            let what = if dir == DECAP { "decap" } else { "encap" };
            afxdp_rows.push(match &afxdp_error {
                None => Row::new(afxdp_name(what, size), "pkt/s", BASELINE_AFXDP, xgw, stats(a)),
                Some(why) => Row::not_measured(afxdp_name(what, size), "pkt/s", BASELINE_AFXDP, why),
            });
            cost_rows.push(match &afxdp_error {
                None => Row::new(afxdp_cost_name(what, size), "ns/pkt", COST_BASELINE, stats(a_ns), stats(x_ns)),
                Some(why) => Row::not_measured(afxdp_cost_name(what, size), "ns/pkt", COST_BASELINE, why),
            });
        }
    }
    decap_rows.extend(encap_rows);
    // In row_names' order: every decap size, then every encap size.
    afxdp_rows.sort_by_key(|r| !r.name.contains(" decap,"));
    cost_rows.sort_by_key(|r| !r.name.contains(", decap,"));
    decap_rows.extend(afxdp_rows);
    decap_rows.extend(cost_rows);
    decap_rows
    // Drop order: the generator's and xgw's programs, OVS (its guard stops
    // the daemons and deletes its namespaces), then the other namespaces.
}

/// TSC cycles per nanosecond, timed against the monotonic clock.
fn tsc_ghz() -> f64 {
    // SAFETY: rdtsc has no preconditions on x86_64.
    let tsc = || unsafe { core::arch::x86_64::_rdtsc() };
    let (c0, t0) = (tsc(), Instant::now());
    std::thread::sleep(Duration::from_millis(200));
    (tsc() - c0) as f64 / t0.elapsed().as_nanos() as f64
}

/// The PMD threads' processing cycles per packet received since the last
/// `pmd-stats-clear` (`dpif-netdev/pmd-stats-show`): the cycles spent on
/// packets, idle polling excluded.
fn pmd_processing_cycles(ovs: &OvsHypervisor) -> f64 {
    let out = ovs.appctl(&["dpif-netdev/pmd-stats-show"]);
    let field = |name: &str| -> f64 {
        out.lines()
            .filter_map(|l| l.trim().strip_prefix(name))
            .filter_map(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .sum()
    };
    let (cycles, packets) = (field("processing cycles:"), field("packets received:"));
    assert!(packets > 0.0, "OVS AF_XDP: its PMD received nothing:\n{out}");
    cycles / packets
}

/// OVS standing where xgw stands: same underlay IP and MAC, same VM MAC,
/// a tunnel to the same hypervisor with the same VNI and OVN keys; with
/// AF_XDP ports and its PMD thread on CPU `afxdp` if given. Pinned to
/// `OVS_CPU` (all its threads) with `pin`.
fn start_ovs(ns: Netns, afxdp: Option<usize>, pin: bool) -> OvsHypervisor {
    let mut b = OvsHypervisor::builder(ns, OVS_UNDERLAY)
        .ip4("198.51.100.1/24")
        .underlay_mac(veth::GW_MAC)
        .vm(VM_MAC, None, None);
    if let Some(cpu) = afxdp {
        b = b.afxdp(cpu);
    }
    let ovs = b.start();
    ovs.add_geneve("gnv0", &Geneve::new("198.51.100.2", veth::VNI));
    ovs.install_ovn_option(
        "gnv0",
        OvnKeys { ingress: VM_KEY, egress: REMOTE_KEY },
        Some(OvnKeys { ingress: REMOTE_KEY, egress: VM_KEY }),
    );
    // xgw's next hop comes from its tunnel table; OVS's from its neighbour
    // cache, filled here rather than by ARP the sink would swallow.
    ovs.appctl(&["tnl/neigh/set", xgw_tests::ovs::BR_PHY, "198.51.100.2", &mac_str(HV_MAC)]);
    if pin {
        let pid = std::fs::read_to_string(ovs.dir().join("run/ovs-vswitchd.pid")).expect("ovs-vswitchd pidfile");
        xgw_tests::sh(&["taskset", "-a", "-p", "-c", &OVS_CPU.to_string(), pid.trim()]);
    }
    ovs
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
