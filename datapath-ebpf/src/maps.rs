//! BPF maps. The controller owns every configuration map (it is their only
//! writer); the datapath owns the counters (it is their only writer).
use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, PerCpuArray, RingBuf},
};
use xgw_common::{
    bfd::DecodeError,
    counters::{Counter, Drop, PortStats, Proto, Reply},
    maps::*,
};

/// Packets and bytes per protocol seen by `xgw_probe`, one slot per `Proto`.
#[map(name = "PROBE_COUNTERS")]
static PROBE_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Proto::COUNT, 0);

#[map(name = "UPLINK")]
pub static UPLINK: Array<Uplink> = Array::with_max_entries(1, 0);
/// The secret that makes a flood's trailer xgw's (see `FloodMeta`): random,
/// written by the controller when it creates the map.
#[map(name = "FLOOD_SECRET")]
pub static FLOOD_SECRET: Array<u64> = Array::with_max_entries(1, 0);
#[map(name = "LOCAL_PORTS")]
pub static LOCAL_PORTS: HashMap<u32, LocalPort> = HashMap::with_max_entries(MAX_LOCAL_PORTS, 0);
#[map(name = "PORT_KEYS")]
pub static PORT_KEYS: HashMap<PortKey, FdbEntry> = HashMap::with_max_entries(MAX_LOCAL_PORTS, 0);
#[map(name = "FDB")]
pub static FDB: HashMap<FdbKey, FdbEntry> = HashMap::with_max_entries(MAX_FDB, 0);
#[map(name = "TUNNELS")]
pub static TUNNELS: HashMap<u32, Tunnel> = HashMap::with_max_entries(MAX_TUNNELS, 0);
#[map(name = "TUNNEL_BY_REMOTE")]
pub static TUNNEL_BY_REMOTE: HashMap<TunnelKey, u32> = HashMap::with_max_entries(MAX_TUNNELS, 0);
#[map(name = "NEIGH")]
pub static NEIGH: HashMap<NeighKey, Neigh> = HashMap::with_max_entries(MAX_NEIGH, 0);
/// The VNIs local ports serve (value: how many ports). Read only to name a
/// drop: a packet's destination lookup already scopes it by VNI.
#[map(name = "VNIS")]
pub static VNIS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_VNIS, 0);
#[map(name = "GROUPS")]
pub static GROUPS: HashMap<GroupKey, Group> = HashMap::with_max_entries(MAX_GROUPS, 0);
/// A local port's interface by OpenFlow number, as DEVMAP has it (which a
/// TC program cannot read): where `xgw_flood` sends a local member's copy.
#[map(name = "PORT_IFINDEX")]
pub static PORT_IFINDEX: Array<u32> = Array::with_max_entries(0xff00, 0);
/// A local port's port security by OpenFlow number: read only for a frame
/// that its `LocalPort` (own MAC and IP) does not settle.
#[map(name = "PORT_SECURITY")]
pub static PORT_SECURITY: HashMap<u32, PortSecurity> = HashMap::with_max_entries(MAX_LOCAL_PORTS, 0);
/// The controller's copy of each committed port's record (see
/// `PortRecordCopy`); no program reads it. Not preallocated: a slot costs
/// memory only while a port holds it.
#[map(name = "PORT_RECORDS")]
pub static PORT_RECORDS: HashMap<u32, PortRecordCopy> = HashMap::with_max_entries(MAX_PORT_RECORDS, BPF_F_NO_PREALLOC);
#[map(name = "STORM")]
pub static STORM: PerCpuArray<StormBucket> = PerCpuArray::with_max_entries(0xff00, 0);
/// `xgw_flood`'s scratch slot for a tunnel copy's outer headers (too big
/// for the stack), built by `encap::template` as a flow slot's are.
#[map(name = "FLOOD_SCRATCH")]
pub static FLOOD_SCRATCH: PerCpuArray<EncapFlow> = PerCpuArray::with_max_entries(1, 0);
/// Bumped by the controller after each write to a map the flow caches
/// mirror (see `xgw_common::maps::FLOW_SLOTS`); mmap-able so that it can do
/// so with one atomic add.
#[map(name = "GENERATION")]
pub static GENERATION: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);
/// `frame::sum_frags`' buffer for fragment bytes (a chunk and its padding).
#[map(name = "FRAG_SCRATCH")]
pub static FRAG_SCRATCH: PerCpuArray<[u8; crate::frame::CHUNK + 4]> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "DECAP_FLOWS")]
pub static DECAP_FLOWS: PerCpuArray<DecapFlow> = PerCpuArray::with_max_entries(FLOW_SLOTS, 0);
#[map(name = "ENCAP_FLOWS")]
pub static ENCAP_FLOWS: PerCpuArray<EncapFlow> = PerCpuArray::with_max_entries(FLOW_SLOTS, 0);
/// Redirect targets keyed by OpenFlow number: local ports, and the uplink
/// under `DEVMAP_UPLINK`.
#[map(name = "DEVMAP")]
pub static DEVMAP: DevMapHash = DevMapHash::with_max_entries(MAX_LOCAL_PORTS + 1, 0);

#[map(name = "REPLIES")]
static REPLIES: PerCpuArray<u64> = PerCpuArray::with_max_entries(Reply::COUNT, 0);
#[map(name = "DROPS")]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Drop::COUNT, 0);
/// Indexed by OpenFlow number (0..0xff00).
#[map(name = "PORT_STATS")]
static PORT_STATS: PerCpuArray<PortStats> = PerCpuArray::with_max_entries(0xff00, 0);

/// BFD sessions, shared with the controller by mmap (BPF_F_MMAPABLE): it
/// reads state and writes its own fields without a syscall per access.
#[map(name = "BFD_SESSIONS")]
pub static BFD_SESSIONS: Array<BfdSession> = Array::with_max_entries(MAX_BFD_SESSIONS, BPF_F_MMAPABLE);
#[map(name = "BFD_PATHS")]
pub static BFD_PATHS: HashMap<BfdPathKey, u32> = HashMap::with_max_entries(MAX_BFD_SESSIONS, 0);
#[map(name = "BFD_EVENTS")]
pub static BFD_EVENTS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);
/// Discarded BFD packets, one slot per `bfd::DecodeError`.
#[map(name = "BFD_DROPS")]
static BFD_DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DecodeError::COUNT, 0);
#[map(name = "BFD_COUNTERS")]
static BFD_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(BFD_COUNTERS_LEN, 0);
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
