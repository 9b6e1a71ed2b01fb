//! BPF maps. The controller owns every configuration map (it is their only
//! writer); the datapath owns the counters (it is their only writer).
//!
//! BTF-defined (`.maps`), so the kernel knows each key's and value's type
//! and `bpftool map dump` prints field names instead of hex.
use aya_ebpf::{
    btf_maps::{Array, DevMapHash, HashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use xgw_common::{
    bfd::DecodeError,
    counters::{Counter, Drop, PortStats, Proto, Reply},
    maps::*,
};

/// Packets and bytes per protocol seen by `xgw_probe`, one slot per `Proto`.
#[btf_map]
static PROBE_COUNTERS: PerCpuArray<Counter, { Proto::COUNT as usize }> = PerCpuArray::new();

#[btf_map]
pub static UPLINK: Array<Uplink, 1> = Array::new();
/// The secret that makes a flood's record xgw's (see `FloodMeta`): random,
/// written by the loader when it creates the map.
#[btf_map]
pub static FLOOD_SECRET: Array<u64, 1> = Array::new();
#[btf_map]
pub static LOCAL_PORTS: HashMap<u32, LocalPort, { MAX_LOCAL_PORTS as usize }> = HashMap::new();
#[btf_map]
pub static PORT_KEYS: HashMap<PortKey, FdbEntry, { MAX_LOCAL_PORTS as usize }> = HashMap::new();
#[btf_map]
pub static FDB: HashMap<FdbKey, FdbEntry, { MAX_FDB as usize }> = HashMap::new();
#[btf_map]
pub static TUNNELS: HashMap<u32, Tunnel, { MAX_TUNNELS as usize }> = HashMap::new();
#[btf_map]
pub static TUNNEL_BY_REMOTE: HashMap<TunnelKey, u32, { MAX_TUNNELS as usize }> = HashMap::new();
#[btf_map]
pub static NEIGH: HashMap<NeighKey, Neigh, { MAX_NEIGH as usize }> = HashMap::new();
/// The VNIs local ports serve (value: how many ports). Read only to name a
/// drop: a packet's destination lookup already scopes it by VNI.
#[btf_map]
pub static VNIS: HashMap<u32, u32, { MAX_VNIS as usize }> = HashMap::new();
#[btf_map]
pub static GROUPS: HashMap<GroupKey, Group, { MAX_GROUPS as usize }> = HashMap::new();
/// A local port's interface by OpenFlow number, as DEVMAP has it (which a
/// TC program cannot read): where `xgw_flood` sends a local member's copy.
#[btf_map]
pub static PORT_IFINDEX: Array<u32, 0xff00> = Array::new();
/// A local port's port security by OpenFlow number: read only for a frame
/// that its `LocalPort` (own MAC and IP) does not settle.
#[btf_map]
pub static PORT_SECURITY: HashMap<u32, PortSecurity, { MAX_LOCAL_PORTS as usize }> = HashMap::new();
/// The controller's copy of each committed port's record (see
/// `PortRecordCopy`); no program reads it. Not preallocated: a slot costs
/// memory only while a port holds it.
#[btf_map]
pub static PORT_RECORDS: HashMap<u32, PortRecordCopy, { MAX_PORT_RECORDS as usize }, { BPF_F_NO_PREALLOC as usize }> =
    HashMap::new();
#[btf_map]
pub static STORM: PerCpuArray<StormBucket, 0xff00> = PerCpuArray::new();
/// `xgw_flood`'s scratch slot for a tunnel copy's outer headers (too big
/// for the stack), built by `encap::template` as a tunnel's slot is.
#[btf_map]
pub static FLOOD_SCRATCH: PerCpuArray<EncapOuter, 1> = PerCpuArray::new();
/// Bumped by the controller after each write to a map the flow caches
/// mirror (see `xgw_common::maps::FLOW_SLOTS`); mmap-able so that it can do
/// so with one atomic add.
#[btf_map]
pub static GENERATION: Array<u64, 1, { BPF_F_MMAPABLE as usize }> = Array::new();
/// `frame::sum_frags`' buffer for fragment bytes (a chunk and its padding).
#[btf_map]
pub static FRAG_SCRATCH: PerCpuArray<[u8; crate::frame::CHUNK + 4], 1> = PerCpuArray::new();
#[btf_map]
pub static DECAP_FLOWS: PerCpuArray<DecapFlow, { FLOW_SLOTS as usize }> = PerCpuArray::new();
/// One more than FLOW_SLOTS: entry FLOW_SLOTS, which no key hashes to,
/// holds a miss's answer when its slot is kept for another flow.
#[btf_map]
pub static ENCAP_FLOWS: PerCpuArray<EncapFlow, { FLOW_SLOTS as usize + 1 }> = PerCpuArray::new();
#[btf_map]
pub static ENCAP_OUTERS: PerCpuArray<EncapOuter, { OUTER_SLOTS as usize }> = PerCpuArray::new();
/// Redirect targets keyed by OpenFlow number: local ports, and the uplink
/// under `DEVMAP_UPLINK`.
#[btf_map]
pub static DEVMAP: DevMapHash<{ MAX_LOCAL_PORTS as usize + 1 }> = DevMapHash::new();

#[btf_map]
static REPLIES: PerCpuArray<u64, { Reply::COUNT as usize }> = PerCpuArray::new();
#[btf_map]
static DROPS: PerCpuArray<u64, { Drop::COUNT as usize }> = PerCpuArray::new();
/// Indexed by OpenFlow number (0..0xff00).
#[btf_map]
static PORT_STATS: PerCpuArray<PortStats, 0xff00> = PerCpuArray::new();

/// BFD sessions, shared with the controller by mmap (BPF_F_MMAPABLE): it
/// reads state and writes its own fields without a syscall per access.
#[btf_map]
pub static BFD_SESSIONS: Array<BfdSession, { MAX_BFD_SESSIONS as usize }, { BPF_F_MMAPABLE as usize }> = Array::new();
#[btf_map]
pub static BFD_PATHS: HashMap<BfdPathKey, u32, { MAX_BFD_SESSIONS as usize }> = HashMap::new();
#[btf_map]
pub static BFD_EVENTS: RingBuf<BfdEvent, { 64 * 1024 }> = RingBuf::new();
/// Discarded BFD packets, one slot per `bfd::DecodeError`.
#[btf_map]
static BFD_DROPS: PerCpuArray<u64, { DecodeError::COUNT as usize }> = PerCpuArray::new();
#[btf_map]
static BFD_COUNTERS: PerCpuArray<u64, { BFD_COUNTERS_LEN as usize }> = PerCpuArray::new();
const BPF_F_MMAPABLE: u32 = 1 << 10;
const BPF_F_NO_PREALLOC: u32 = 1;

// Counter slots are per CPU: no other CPU writes them, plain adds are safe.

#[inline(always)]
pub fn bump(c: &mut Counter, len: usize) {
    c.packets += 1;
    c.bytes += len as u64;
}

#[inline(always)]
pub fn count_proto(proto: Proto, len: usize) {
    if let Some(c) = PROBE_COUNTERS.get_ptr_mut(proto as u32) {
        bump(unsafe { &mut *c }, len);
    }
}

#[inline(always)]
pub fn count_drop(reason: Drop) {
    if let Some(c) = DROPS.get_ptr_mut(reason as u32) {
        unsafe { *c += 1 };
    }
}

/// `count_drop`, returning this CPU's count after it (0 if not counted).
#[inline(always)]
pub fn count_drop_n(reason: Drop) -> u64 {
    match DROPS.get_ptr_mut(reason as u32) {
        Some(c) => unsafe {
            *c += 1;
            *c
        },
        None => 0,
    }
}

#[inline(always)]
pub fn count_reply(reply: Reply) {
    if let Some(c) = REPLIES.get_ptr_mut(reply as u32) {
        unsafe { *c += 1 };
    }
}

#[inline(always)]
pub fn count_rx(ofport: u32, len: usize) {
    if let Some(s) = PORT_STATS.get_ptr_mut(ofport) {
        bump(unsafe { &mut (*s).rx }, len);
    }
}

/// This CPU's counters of port `ofport`.
#[inline(always)]
pub fn port_stats(ofport: u32) -> Option<&'static mut PortStats> {
    PORT_STATS.get_ptr_mut(ofport).map(|s| unsafe { &mut *s })
}

#[inline(always)]
pub fn count_tx(ofport: u32, len: usize) {
    if let Some(s) = PORT_STATS.get_ptr_mut(ofport) {
        bump(unsafe { &mut (*s).tx }, len);
    }
}

#[inline(always)]
pub fn count_bfd_drop(reason: DecodeError) {
    if let Some(c) = BFD_DROPS.get_ptr_mut(reason as u32) {
        unsafe { *c += 1 };
    }
}

/// `count_bfd`, returning this CPU's count after it (0 if not counted).
#[inline(always)]
pub fn count_bfd_n(slot: u32) -> u64 {
    match BFD_COUNTERS.get_ptr_mut(slot) {
        Some(c) => unsafe {
            *c += 1;
            *c
        },
        None => 0,
    }
}

#[inline(always)]
pub fn count_bfd(slot: u32) {
    if let Some(c) = BFD_COUNTERS.get_ptr_mut(slot) {
        unsafe { *c += 1 };
    }
}
