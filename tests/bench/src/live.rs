//! The live-frames generator on its own: BPF_PROG_TEST_RUN runs `prog` on
//! fresh copies of one frame and performs its verdict for real (a redirect
//! is sent, XDP_PASS goes up the stack as an skb, with its metadata), and
//! the caller counts what arrived where. The work a frame causes runs in
//! the softirqs the generator raises, on its own core, before the call
//! returns, so the time of the call is what the frames cost.
use std::time::{Duration, Instant};

use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp};
use xgw_tests::netns::{self, Netns};

use crate::veth::xdp_md;

/// Why a row needs live frames, for the rows a kernel that refuses them
/// cannot measure.
pub const REFUSED: &str = "this kernel refuses live-frames BPF_PROG_TEST_RUN (EPERM), which this row's generator is";

/// Whether this kernel runs BPF_PROG_TEST_RUN in live-frames mode (some
/// refuse it with EPERM, 6.18.44-fc among them). Asked once, with
/// `xgw_drop` on one frame in the current namespace.
pub fn permitted() -> bool {
    static PERMITTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PERMITTED.get_or_init(|| {
        let gw = xgw_tests::gateway::TestGateway::load(&["xgw_drop"]);
        let pkt = [0u8; 64];
        let md = xdp_md(pkt.len(), 1);
        let opts = TestRunOptions {
            data_in: Some(&pkt),
            ctx_in: Some(&md),
            repeat: 1,
            attrs: TestRunAttrs::new().xdp_live_frames(64),
            ..TestRunOptions::new()
        };
        match gw.program("xgw_drop").test_run(opts) {
            Ok(_) => true,
            Err(aya::programs::ProgramError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EPERM) => {
                eprintln!(
                    "xgw-bench: {REFUSED}: rows with another generator use AF_PACKET, the others are not measured"
                );
                false
            }
            Err(e) => panic!("probing live-frames test_run: {e}"),
        }
    })
}

/// Generator time for `frames` copies of `pkt` run through `prog` in
/// `ns`, as if received on `ifindex` there.
pub fn generate(prog: &Xdp, pkt: &[u8], ns: &Netns, ifindex: u32, frames: u32) -> Duration {
    let md = xdp_md(pkt.len(), ifindex);
    let elapsed = netns::enter(&ns.name, || {
        let t = Instant::now();
        let opts = TestRunOptions {
            data_in: Some(pkt),
            ctx_in: Some(&md),
            repeat: frames,
            attrs: TestRunAttrs::new().xdp_live_frames(64),
            ..TestRunOptions::new()
        };
        prog.test_run(opts).unwrap_or_else(|e| panic!("live test_run in {}: {e}", ns.name));
        t.elapsed()
    });
    // Sink counters settle.
    std::thread::sleep(Duration::from_millis(50));
    elapsed
}

/// Runs `prog` as the live-frames generator on copies of `pkt` (context
/// `md`) until `stop` is set and a signal ends the call in progress: one
/// long call at a time, each ended by a signal (see [`window_rate`]).
pub fn until_stopped(prog: &Xdp, pkt: &[u8], md: &[u8], stop: &std::sync::atomic::AtomicBool) {
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let opts = TestRunOptions {
            data_in: Some(pkt),
            ctx_in: Some(md),
            repeat: u32::MAX,
            attrs: TestRunAttrs::new().xdp_live_frames(64),
            ..TestRunOptions::new()
        };
        match prog.test_run(opts) {
            Err(aya::programs::ProgramError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EINTR) => {}
            r => panic!("live test_run (generator) ended by itself: {r:?}"),
        }
    }
}

/// Warm-up and measuring window of [`window_rate`].
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub warmup: Duration,
    pub window: Duration,
}

/// How much `count` grows per second over `w.window` while `prog` runs as
/// the live-frames generator in `ns` (frames as received on `ifindex`),
/// after `w.warmup`. The generator is one BPF_PROG_TEST_RUN call ended by a
/// signal, as in [`crate::versus`]: each call swaps the XDP dispatcher and
/// waits for RCU grace periods (about 30 ms here), which would otherwise be
/// charged to the frames. `count` is read at both ends of the window,
/// timed at the middle of each read.
pub fn window_rate(prog: &Xdp, pkt: &[u8], ns: &Netns, ifindex: u32, w: Window, count: &dyn Fn() -> u64) -> f64 {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    crate::versus::install_wakeup();
    let md = xdp_md(pkt.len(), ifindex);
    let (stop, done, thread) = (AtomicBool::new(false), AtomicBool::new(false), AtomicU64::new(0));
    std::thread::scope(|s| {
        let generator = s.spawn(|| {
            ns.enter(|| {
                // SAFETY: pthread_self has no preconditions.
                thread.store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
                until_stopped(prog, pkt, &md, &stop);
            });
            done.store(true, Ordering::SeqCst);
        });
        let stopper = crate::versus::Stopper { stop: &stop, done: &done, thread: &thread };
        std::thread::sleep(w.warmup);
        let read = || {
            let t0 = Instant::now();
            let c = count();
            (c, t0 + t0.elapsed() / 2)
        };
        let (c0, t0) = read();
        std::thread::sleep(w.window);
        let (c1, t1) = read();
        drop(stopper);
        generator.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        (c1 - c0) as f64 / (t1 - t0).as_secs_f64()
    })
}
