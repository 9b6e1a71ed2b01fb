//! The OpenFlow port-number map: which port has which number, and the
//! guarantee that a number is never leaked, never 0, never >= 0xff00; and
//! the one transaction path into the configuration maps, for ports and
//! remote bindings alike.
//!
//! In 2018 Open vSwitch leaked a number each time adding a redundant tunnel
//! failed; when the space ran out its allocator returned OFPP_NONE (65535)
//! and nobody checked (see DESIGN.md). Here:
//! - `number`: `OfPort`, a type that cannot hold 0 or a reserved number;
//! - `allocator`: pure bookkeeping of numbers, with hold-down, where
//!   running out is an error;
//! - `spec`: what a port is, and validation;
//! - `maps`: the BPF maps a port needs, behind the `Datapath` trait;
//! - `store`, `redb_store`: durable committed ports and bindings (and,
//!   in the same redb file, the daemon's settings);
//! - `txn`: one all-or-nothing add or delete, with the `Effects` a port
//!   needs outside the maps (XDP link, BFD session) set up before commit;
//! - `portmap`: policy (duplicates, idempotence, desired state);
//! - `reconcile`: repairing the maps from the committed ports;
//! - `mem`: in-memory datapath and store with failure injection.
//!
//! Typical use: `PortMap::open(datapath, RedbStore::open(dir)?, config)`,
//! then `reconcile()` once, then `apply_desired` / `add` / `delete`.
//!
//! Decisions worth knowing:
//! - When every automatic number is in use or held down, the least
//!   recently freed held number is taken (as OVS does); `Exhausted` means
//!   all 32767 automatic numbers belong to live or stranded ports.
//! - An explicit `ofport_request` is granted even if the number is held
//!   down; only implicit reuse waits.
//! - Hold-down lives in memory only: a restart forgets it, as OVS does.
//!   Committed numbers do survive, from the store.
//! - `add`, `delete`, `replace`: one redb write transaction with an fsync
//!   each, so their rate is bounded by the disk's fsync rate.
//!   `apply_desired` group-commits: one fsync per call, whatever the
//!   number of changes, and its report is sent only after it.
//! - `bpf`: the real maps. LOCAL_PORTS is keyed by ifindex; the port map
//!   knows a local port's entry there by its number (the value carries
//!   it) and `BpfDatapath` translates. NEIGH values carry no number: an
//!   entry belongs to whoever owns its MAC in FDB (a local port, or a
//!   binding under its tunnel's number). DEVMAP's uplink slot
//!   (`DEVMAP_UPLINK`) is not a port and is never listed.
//! - A tunnel's `nexthop_mac` is the last one `set_nexthop` gave for its
//!   remote (see `bpf`).
//! - A number that was never committed (a refused effect, a failed
//!   write) goes straight back to free, never to hold-down: nobody saw it.

pub mod allocator;
pub mod bpf;
pub mod maps;
pub mod mem;
pub mod number;
pub mod portmap;
pub mod reconcile;
pub mod redb_store;
pub mod spec;
pub mod store;
pub mod txn;

#[cfg(test)]
mod tests;

pub use crate::types::MacAddr;
pub use allocator::{AllocError, Allocator, AllocatorConfig, PortState, Reservation};
pub use bpf::{BpfDatapath, OpenMapsError};
pub use maps::{Datapath, EntryKey, GroupEntry, MapEntry, MapError, Step};
pub use mem::{Fault, FaultOp, MemDatapath, MemStore};
pub use number::{InvalidOfPort, OfPort};
pub use portmap::{Added, ApplyError, ApplyReport, Desired, GroupChange, OpenError, PortError, PortMap};
pub use reconcile::{reconcile, ReconcileReport, RepairAction, RepairFailure};
pub use redb_store::RedbStore;
pub use spec::{Binding, Claim, Group, LocalPort, Object, PortKind, PortSpec, SpecError, TunnelKey, TunnelPort};
pub use store::{PortRecord, Store, StoreError};
pub use txn::{Effects, NoEffects, Txn, TxnError, Undo, UndoAction, UndoFailure};
