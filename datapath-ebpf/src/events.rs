//! Rare events, told to the daemon's log through aya-log (its `AYA_LOGS`
//! ring buffer, which the daemon relays into its own log under the target
//! `xgw_datapath::events`). Never per packet: each kind is counted anyway
//! (`DROPS`, `BFD_COUNTERS`), and told only when its count on this CPU
//! reaches a power of two (the 1st, 2nd, 4th, 8th... time), so a storm of
//! them costs at most 64 lines per CPU, ever, and the counters say the rest.
//!
//! The calls sit behind that test, off the paths a forwarded packet takes,
//! in global functions (`no_mangle`, `extern "C"`: BTF_FUNC_GLOBAL), which
//! the verifier checks once, on their own, instead of once per state of
//! every path that reaches them: as static subprograms (`inline(never)`
//! alone), the two calls in `xgw_uplink` took its verification from 80,000
//! instructions explored to 390,000; as global functions, to 90,000. The daemon sets `AYA_LOG_LEVEL`
//! when it loads the programs (the level of `xgw_datapath` in `XGW_LOG`):
//! the verifier then sees the disabled levels' calls as dead code and
//! prunes them.
use aya_log_ebpf::warn;

/// Whether the `n`th occurrence of an event on this CPU is told.
#[inline(always)]
pub fn worth_telling(n: u64) -> bool {
    n != 0 && n & (n - 1) == 0
}

/// A redirect found no `DEVMAP` entry for its port (a port whose
/// interface went, or a map the daemon did not finish writing).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn xgw_event_redirect_failed(program: u32, ofport: u32, n: u64) -> u32 {
    if program == UPLINK {
        warn!((), "xgw_uplink: no DEVMAP entry for ofport {}; dropped (count {} on this CPU)", ofport, n);
    } else {
        warn!((), "xgw_local: no DEVMAP entry for ofport {}; dropped (count {} on this CPU)", ofport, n);
    }
    0
}

pub const UPLINK: u32 = 0;
pub const LOCAL: u32 = 1;

/// `BFD_EVENTS` was full: a session's state change did not reach the
/// daemon's engine thread (the daemon's watch still reads the sessions'
/// states every 100 ms).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn xgw_event_bfd_events_full(slot: u32, n: u64) -> u32 {
    warn!((), "BFD_EVENTS full: a state change of session slot {} was lost (count {} on this CPU)", slot, n);
    0
}
