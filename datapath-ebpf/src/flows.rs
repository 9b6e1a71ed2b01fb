//! The flow caches (`xgw_common::maps::FLOW_SLOTS`): a packet of a flow seen
//! before is resolved by one probe of a per-CPU array, which the verifier
//! inlines, instead of two or three hash lookups, which are helper calls.
//! A miss makes the lookups as before and fills the slot; what the lookups
//! do not find is not cached, so an unknown destination costs its lookups
//! every time, as it did before, and cannot push a live flow out of a slot.
//!
//! One writer per slot: the maps are per CPU, and XDP runs with bottom
//! halves disabled (in NAPI, and under BPF_PROG_TEST_RUN), so no other
//! program on this CPU runs between a probe and its fill.
use xgw_common::{counters::Drop, maps::*};

use crate::maps::{
    DECAP_FLOWS, ENCAP_FLOWS, ENCAP_OUTERS, FDB, GENERATION, GROUPS, LOCAL_PORTS, PORT_KEYS, TUNNELS, TUNNEL_BY_REMOTE,
    VNIS,
};

/// Read once per packet, before any lookup whose answer may be cached.
///
/// The controller writes a map and then bumps the generation. A packet whose
/// lookups race that write may see the old value (or, as an RCU reader of a
/// preallocated hash map, a value in the middle of being reused), but it
/// read the generation before the bump, so it caches that value under the
/// old generation, which no packet after the bump accepts. A packet that
/// read the bumped generation looks up after the write completed.
#[inline(always)]
fn generation() -> u64 {
    match GENERATION.get_ptr(GENERATION_INDEX) {
        Some(g) => unsafe { core::ptr::read_volatile(g) },
        None => 0,
    }
}

/// Word by word, without a branch per word.
#[inline(always)]
fn same<const N: usize>(a: &[u64; N], b: &[u64; N]) -> bool {
    let mut diff = 0;
    let mut i = 0;
    while i < N {
        diff |= a[i] ^ b[i];
        i += 1;
    }
    diff == 0
}

/// Decap: the tunnel a Geneve packet arrived on (TUNNEL_BY_REMOTE: a
/// fixed-key tunnel of the packet's VNI, else the remote's flow-keyed one)
/// and the local port it is for, by OVN egress key (PORT_KEYS) or else by
/// inner destination MAC (a local FDB entry), both within the packet's VNI.
#[inline(always)]
pub fn decap(remote: [u64; 2], vni: u32, egress: u16, mac: [u8; 6]) -> Result<(u32, FdbEntry), Drop> {
    let generation = generation();
    // Key 0 is "no port" in OVN: without a key, the inner MAC decides.
    let mac = if egress != 0 { [0; 6] } else { mac };
    let key = DecapFlowKey::pack(remote, vni, egress, mac);
    let slot = DECAP_FLOWS.get_ptr_mut(flow_slot(&key));
    if let Some(e) = slot {
        let e = unsafe { &*e };
        if e.filled != 0 && e.generation == generation && same(&e.key.words(), &key) {
            return Ok((e.tunnel, e.dest));
        }
    }

    let remote = unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(remote) };
    let tunnel = match unsafe { TUNNEL_BY_REMOTE.get(&TunnelKey { remote, vni }) } {
        Some(t) => *t,
        None => {
            *unsafe { TUNNEL_BY_REMOTE.get(&TunnelKey { remote, vni: TUNNEL_KEY_FLOW }) }.ok_or(Drop::UnknownTunnel)?
        }
    };
    let dest = if egress >= GROUP_KEY_MIN {
        // A group's key: the entry only says "group"; its members are read
        // when the frame is flooded. Built as one word: field by field, the
        // struct's padding bytes become stores the verifier finds misaligned.
        unsafe { GROUPS.get(&GroupKey { vni, key: egress, _pad: 0 }) }.map(|_| {
            // SAFETY: FdbEntry is 8 bytes of plain fields, laid out as the word.
            unsafe { core::mem::transmute::<u64, FdbEntry>((egress as u64) << 16 | (FDB_GROUP as u64) << 32) }
        })
    } else if egress != 0 {
        unsafe { PORT_KEYS.get(&PortKey { vni, port_key: egress, _pad: 0 }) }.copied()
    } else {
        unsafe { FDB.get(&FdbKey { vni, mac, _pad: [0; 2] }) }.filter(|e| e.kind == FDB_LOCAL).copied()
    };
    // Only a drop pays for naming its reason.
    let Some(dest) = dest else {
        return Err(if unsafe { VNIS.get(&vni) }.is_none() { Drop::UnknownVni } else { Drop::UnknownDestination });
    };
    if let Some(e) = slot {
        unsafe { *e = DecapFlow { key: DecapFlowKey::from_words(key), generation, tunnel, filled: 1, dest } };
    }
    Ok((tunnel, dest))
}

/// Encap: the local port a frame arrived on (LOCAL_PORTS by ifindex; `None`
/// if the interface is not one) and, for a unicast destination MAC `dst`,
/// where it lives in the port's VNI: the flow's slot, holding the port and
/// the FDB entry (`None` if FDB has none). `dst` is `None` for a frame too
/// short to have one. A remote destination's outer headers are its
/// tunnel's: `outer`.
///
/// The destination is always read from the slot, filled first on a miss:
/// one pointer type on every path, so the verifier walks what follows once.
/// The slot's index is below FLOW_SLOTS by construction, so its lookup
/// cannot fail; if it did, the destination would count as unknown, never
/// as another flow's.
#[inline(always)]
pub fn local(ifindex: u32, dst: Option<[u8; 6]>) -> Option<(LocalPort, Option<&'static EncapFlow>)> {
    let generation = generation();
    let unicast = dst.filter(|d| d[0] & 1 == 0);
    // Built on every path: a key left undefined where there is no
    // destination becomes a register the verifier sees read uninitialized.
    let key = EncapFlowKey::pack(ifindex, unicast.unwrap_or([0; 6]));
    // Likewise a null pointer, not an `Option` whose `None` leaves it undefined.
    let mut e: *mut EncapFlow = core::ptr::null_mut();
    if unicast.is_some() {
        if let Some(p) = ENCAP_FLOWS.get_ptr_mut(flow_slot(&key)) {
            let f = unsafe { &mut *p };
            let [w0, w1] = f.key.words();
            let live = f.generation == generation;
            // The slot's miss count is no part of its key.
            if live && same(&[w0, w1 & 0xffff_ffff], &key) {
                if f.key.misses != 0 {
                    f.key.misses = 0;
                }
                return Some((f.port, Some(f)));
            }
            e = p;
            if live && f.filled() && f.key.misses < ENCAP_EVICT_AFTER {
                f.key.misses += 1;
                // The answer goes to the spare entry, the slot stays.
                e = ENCAP_FLOWS.get_ptr_mut(FLOW_SLOTS).unwrap_or(core::ptr::null_mut());
            }
        }
    }

    let port = *unsafe { LOCAL_PORTS.get(&ifindex) }?;
    let Some(mac) = unicast.filter(|_| !e.is_null()) else { return Some((port, None)) };
    let Some(dest) = (unsafe { FDB.get(&FdbKey { vni: port.vni, mac, _pad: [0; 2] }) }).copied() else {
        return Some((port, None));
    };
    let f = unsafe { &mut *e };
    *f = EncapFlow { key: EncapFlowKey::from_words(key), generation, port, dest };
    Some((port, Some(f)))
}

/// The outer headers toward tunnel `ofport` (`EncapOuter`): its slot, filled
/// on a miss from TUNNELS and UPLINK. `None` if TUNNELS has no such tunnel.
#[inline(always)]
pub fn outer(ofport: u16) -> Option<&'static EncapOuter> {
    let generation = generation();
    let p = ENCAP_OUTERS.get_ptr_mut(ofport as u32 % OUTER_SLOTS)?;
    let o = unsafe { &mut *p };
    if o.generation == generation && o.ofport == ofport as u32 {
        return Some(o);
    }
    let tunnel = unsafe { TUNNELS.get(&(ofport as u32)) }?;
    o.ofport = ofport as u32;
    o.generation = generation;
    crate::encap::template(o, tunnel);
    Some(o)
}
