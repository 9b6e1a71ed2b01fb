//! Programs the product never attaches. They live in the same object as
//! the product's so that tests and benchmarks load them by name from the
//! very build they measure (`TestGateway::load(&["xgw_pass", ...])`), with
//! the same maps, and so that the verifier test covers them too; the
//! daemon attaches only `xgw_uplink`, `xgw_local` (and the CLI `xgw_probe`).
//!
//! - `xgw_pass` is the no-op: the baseline of every program-cost figure
//!   (BPF_PROG_TEST_RUN's fixed overhead), and what tests and benchmarks
//!   attach to veth peers, because a veth delivers XDP-redirected frames
//!   only to a peer that runs an XDP program.
//! - `xgw_redirect`, `xgw_strip` and `xgw_push` are the packet-rate
//!   baseline and floors of `cargo xtask bench` (README, "Performance"):
//!   the least work a forwarding, decapsulating or encapsulating program
//!   can do on the same path, so that a rate is read against them.
//! - `xgw_drop` is the benchmarks' sink.
//! - `xgw_vary` is a generator: `xgw_redirect` that first makes each frame
//!   one of many flows (`BenchVary`), so that a benchmark can drive the
//!   flow caches with as many active destinations as it likes.
//! - `xgw_bcast` is the alternative to `xgw_flood` that the flood benchmark
//!   measures it against: XDP devmap broadcast to local members only.
use aya_ebpf::{
    bindings::{xdp_action, BPF_F_BROADCAST, BPF_F_EXCLUDE_INGRESS},
    btf_maps::{Array, DevMapHash, PerCpuArray},
    helpers::bpf_xdp_adjust_head,
    macros::{btf_map, xdp},
    programs::XdpContext,
};

use xgw_common::maps::BenchVary;

use crate::maps;

/// Does nothing: the baseline every benchmark compares against, and the
/// program tests attach to veth peers so that redirected frames arrive.
#[xdp(frags)]
pub fn xgw_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Benchmark baseline for forwarding: redirects every frame to DEVMAP key 0,
/// a reserved OpenFlow number no port can have (benchmarks put their target
/// there). The least work any forwarding program can do on the same path.
#[xdp(frags)]
pub fn xgw_redirect(_ctx: XdpContext) -> u32 {
    maps::DEVMAP.redirect(0, 0).unwrap_or(xdp_action::XDP_DROP)
}

/// What a benchmark frame's outer headers take: Ethernet, IPv4, UDP, Geneve
/// and OVN's option.
const BENCH_OUTER: i32 = 58;

/// Benchmark floor for decap: strips `BENCH_OUTER` bytes and redirects as
/// `xgw_redirect` does, with no parsing, lookup or counting: the cost of
/// the two helper calls every decapsulating program makes.
#[xdp(frags)]
pub fn xgw_strip(ctx: XdpContext) -> u32 {
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, BENCH_OUTER) } != 0 {
        return xdp_action::XDP_DROP;
    }
    maps::DEVMAP.redirect(0, 0).unwrap_or(xdp_action::XDP_DROP)
}

/// Benchmark floor for encap: makes room for `BENCH_OUTER` bytes (left
/// unwritten; the benchmark's sink drops the frame) and redirects.
#[xdp(frags)]
pub fn xgw_push(ctx: XdpContext) -> u32 {
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -BENCH_OUTER) } != 0 {
        return xdp_action::XDP_DROP;
    }
    maps::DEVMAP.redirect(0, 0).unwrap_or(xdp_action::XDP_DROP)
}

/// Benchmark sink: drops everything, so a generator measures the path up
/// to the receiving interface and not the receiver's stack.
#[xdp(frags)]
pub fn xgw_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// The members `xgw_bcast` copies to (the benchmark writes them).
#[btf_map]
static BENCH_BCAST: DevMapHash<64> = DevMapHash::new();

/// What flooding to local ports would cost in XDP alone: the kernel's devmap
/// broadcast (`BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS`) sends a copy of
/// the frame to every interface in `BENCH_BCAST` but the one it came in on.
/// No group lookup, no VNI, no tunnel copies: the floor of that mechanism,
/// measured beside `xgw_flood`'s copies (`cargo xtask bench`, flood rows).
#[xdp]
pub fn xgw_bcast(_ctx: XdpContext) -> u32 {
    BENCH_BCAST.redirect(0, (BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS) as u64).unwrap_or(xdp_action::XDP_DROP)
}

#[btf_map]
static BENCH_VARY: Array<BenchVary, 1> = Array::new();
/// Frames this CPU's `xgw_vary` has sent.
#[btf_map]
static BENCH_VARY_SENT: PerCpuArray<u64, 1> = PerCpuArray::new();

/// Makes the frame flow `n % flows` of this CPU's `n`th (see `BenchVary`)
/// and redirects it as `xgw_redirect` does. A per-CPU counter, so two
/// generators on two CPUs share no cache line.
#[xdp(frags)]
pub fn xgw_vary(ctx: XdpContext) -> u32 {
    let (Some(cfg), Some(sent)) = (BENCH_VARY.get(0), BENCH_VARY_SENT.get_ptr_mut(0)) else {
        return xdp_action::XDP_DROP;
    };
    let n = unsafe { *sent };
    unsafe { *sent = n + 1 };
    for (at, v) in cfg.fields(n) {
        put(&ctx, at, v);
    }
    maps::DEVMAP.redirect(0, 0).unwrap_or(xdp_action::XDP_DROP)
}

#[inline(always)]
fn put(ctx: &XdpContext, at: u32, v: u16) {
    if at == 0 {
        return;
    }
    let p = ctx.data() + (at & 0xff) as usize;
    if p + 2 > ctx.data_end() {
        return;
    }
    unsafe { core::ptr::write_unaligned(p as *mut u16, v.to_be()) };
}
