//! BPF maps. The datapath is the only writer of counters; the controller only
//! reads them (and owns every configuration map).
use aya_ebpf::{macros::map, maps::PerCpuArray};
use xgw_common::counters::{Counter, Proto};

/// Packets and bytes per protocol seen by `xgw_probe`, one slot per `Proto`.
#[map(name = "PROBE_COUNTERS")]
static PROBE_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Proto::COUNT, 0);

#[inline(always)]
pub fn count_proto(proto: Proto, len: usize) {
    if let Some(c) = PROBE_COUNTERS.get_ptr_mut(proto as u32) {
        // Per-CPU slot: no other CPU writes it, plain adds are safe.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len as u64;
        }
    }
}
