//! OpenFlow port-number allocator: pure bookkeeping, no I/O, no clock.
//!
//! A number's life: free -> reserved -> committed -> held down -> free.
//! A reservation is tentative; the transaction that made it either commits
//! it or aborts it. The caller passes the time in, so tests own the clock.
//!
//! Every operation is O(log n) in the numbers tracked, and the structures
//! are bounded by the 16-bit number space, so memory stays flat however
//! long the controller churns.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::number::OfPort;

/// How long OVS keeps a freed number out of automatic reuse, so that flows
/// and controllers still naming the old port do not hit the new one.
pub const DEFAULT_HOLD_DOWN: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocatorConfig {
    /// How long a released number stays out of automatic reuse, unless
    /// nothing else is free.
    pub hold_down: Duration,
}

impl Default for AllocatorConfig {
    fn default() -> Self {
        AllocatorConfig { hold_down: DEFAULT_HOLD_DOWN }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AllocError {
    #[error("no OpenFlow port number left: all automatic numbers 1..={} are in use", OfPort::AUTO_MAX)]
    Exhausted,
    #[error("requested OpenFlow port {port} is already in use")]
    RequestedInUse { port: OfPort },
    #[error("requested OpenFlow port {value} is out of range (1..={})", OfPort::MAX)]
    RequestedOutOfRange { value: u16 },
    /// Restoring a number twice means the persisted state is corrupt.
    #[error("OpenFlow port {port} restored twice")]
    AlreadyRestored { port: OfPort },
    #[error("OpenFlow port {port} is not committed")]
    NotCommitted { port: OfPort },
}

/// What the allocator knows about one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortState {
    Free,
    Reserved,
    Committed,
    HeldDown {
        since: Instant,
    },
    /// Out of use until the datapath is known clean; see `strand`.
    Stranded,
}

/// A tentatively allocated number. Only the allocator can make one, and
/// only `commit` or `abort` consume it: dropping it is the one way to leak,
/// hence `must_use`.
#[must_use = "commit or abort a reservation, or its number leaks"]
#[derive(Debug, PartialEq, Eq)]
pub struct Reservation {
    port: OfPort,
    /// The hold-down an explicit request took the number out of: an abort
    /// puts it back, so a failed pinned add does not shorten it.
    held_since: Option<Instant>,
}

impl Reservation {
    pub fn port(&self) -> OfPort {
        self.port
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Reserved,
    Committed,
    Held(Instant),
    Stranded,
}

#[derive(Debug, Clone)]
pub struct Allocator {
    hold_down: Duration,
    /// Every number that is not free.
    slots: BTreeMap<OfPort, Slot>,
    /// Automatic-range numbers that are free and past their hold-down.
    /// Lowest first: numbers stay dense and allocation is deterministic.
    free_auto: BTreeSet<OfPort>,
    /// Automatic-range numbers in hold-down, least recently freed first.
    /// Upper-range numbers never enter: they are only ever handed out on
    /// explicit request, which overrides hold-down anyway.
    held: BTreeSet<(Instant, OfPort)>,
    stranded: BTreeSet<OfPort>,
}

impl Allocator {
    pub fn new(config: AllocatorConfig) -> Self {
        let free_auto = (OfPort::MIN.get()..=OfPort::AUTO_MAX.get()).filter_map(|n| OfPort::new(n).ok()).collect();
        Allocator {
            hold_down: config.hold_down,
            slots: BTreeMap::new(),
            free_auto,
            held: BTreeSet::new(),
            stranded: BTreeSet::new(),
        }
    }

    /// Reserves `request` if given, else the next automatic number.
    pub fn reserve(&mut self, request: Option<u16>, now: Instant) -> Result<Reservation, AllocError> {
        match request {
            Some(value) => self.reserve_requested(value),
            None => self.reserve_auto(now),
        }
    }

    /// Lowest free automatic number past hold-down; failing that, the least
    /// recently freed held-down one (as OVS does: an old number is better
    /// than no number); failing that, `Exhausted`.
    pub fn reserve_auto(&mut self, now: Instant) -> Result<Reservation, AllocError> {
        self.expire(now);
        let port = match self.free_auto.pop_first() {
            Some(port) => port,
            None => match self.held.pop_first() {
                Some((_, port)) => port,
                None => return Err(AllocError::Exhausted),
            },
        };
        self.slots.insert(port, Slot::Reserved);
        Ok(Reservation { port, held_since: None })
    }

    /// Reserves a specific number (`ofport_request`), 1..=0xfeff.
    ///
    /// A held-down number is granted: hold-down protects against *implicit*
    /// reuse, while an explicit request states intent, and replacing a port
    /// that pins its number must be able to take that number straight back.
    pub fn reserve_requested(&mut self, value: u16) -> Result<Reservation, AllocError> {
        let port = OfPort::new(value).map_err(|_| AllocError::RequestedOutOfRange { value })?;
        let held_since = match self.slots.get(&port).copied() {
            Some(Slot::Reserved | Slot::Committed | Slot::Stranded) => {
                return Err(AllocError::RequestedInUse { port });
            }
            Some(Slot::Held(since)) => {
                self.held.remove(&(since, port));
                Some(since)
            }
            None => {
                self.free_auto.remove(&port);
                None
            }
        };
        self.slots.insert(port, Slot::Reserved);
        Ok(Reservation { port, held_since })
    }

    /// Makes a reservation permanent.
    pub fn commit(&mut self, reservation: Reservation) -> OfPort {
        let port = reservation.port;
        let slot = self.slots.get_mut(&port);
        debug_assert_eq!(slot.as_deref(), Some(&Slot::Reserved), "commit of {port}");
        if let Some(slot) = slot {
            *slot = Slot::Committed;
        }
        port
    }

    /// Undoes a reservation. The number goes straight back to the free pool
    /// without hold-down: an aborted reservation was never visible outside
    /// the transaction (never persisted, never acknowledged), so nothing can
    /// still refer to it. Holding it down would only make every failed
    /// attempt cost a number for an hour, the 2018 leak in slow motion.
    pub fn abort(&mut self, reservation: Reservation) {
        let port = reservation.port;
        let removed = self.slots.remove(&port);
        debug_assert_eq!(removed, Some(Slot::Reserved), "abort of {port}");
        match reservation.held_since {
            // Taken out of hold-down by an explicit request: back in it,
            // with its original clock (others saw the number before).
            Some(since) => {
                self.slots.insert(port, Slot::Held(since));
                self.held.insert((since, port));
            }
            None if port.is_auto() => {
                self.free_auto.insert(port);
            }
            None => {}
        }
    }

    /// Parks a reservation whose undo failed: some map entry may still
    /// carry the number. Handing it out again would let a new port collide
    /// with that leftover, so it stays out of use until a reconcile has
    /// cleaned the datapath and calls `free_stranded`.
    pub fn strand(&mut self, reservation: Reservation) {
        let port = reservation.port;
        let slot = self.slots.insert(port, Slot::Stranded);
        debug_assert_eq!(slot, Some(Slot::Reserved), "strand of {port}");
        self.stranded.insert(port);
    }

    /// Returns stranded numbers to the free pool, without hold-down (they
    /// were never committed). Call only once the datapath holds no entry
    /// for them.
    pub fn free_stranded(&mut self) -> Vec<OfPort> {
        let ports: Vec<OfPort> = std::mem::take(&mut self.stranded).into_iter().collect();
        for port in &ports {
            self.slots.remove(port);
            if port.is_auto() {
                self.free_auto.insert(*port);
            }
        }
        ports
    }

    /// Numbers parked by `strand`.
    pub fn stranded(&self) -> impl Iterator<Item = OfPort> + '_ {
        self.stranded.iter().copied()
    }

    /// Frees a committed number. It was visible, so it enters hold-down.
    pub fn release(&mut self, port: OfPort, now: Instant) -> Result<(), AllocError> {
        if self.slots.get(&port) != Some(&Slot::Committed) {
            return Err(AllocError::NotCommitted { port });
        }
        if port.is_auto() {
            self.slots.insert(port, Slot::Held(now));
            self.held.insert((now, port));
        } else {
            self.slots.remove(&port);
        }
        Ok(())
    }

    /// Marks a number committed at start-up, from persisted state.
    pub fn restore(&mut self, port: OfPort) -> Result<(), AllocError> {
        match self.slots.get(&port).copied() {
            Some(Slot::Held(since)) => {
                self.held.remove(&(since, port));
            }
            Some(Slot::Reserved | Slot::Committed) => {
                return Err(AllocError::AlreadyRestored { port });
            }
            Some(Slot::Stranded) => {
                self.stranded.remove(&port);
            }
            None => {
                self.free_auto.remove(&port);
            }
        }
        self.slots.insert(port, Slot::Committed);
        Ok(())
    }

    pub fn state(&self, port: OfPort) -> PortState {
        match self.slots.get(&port) {
            None => PortState::Free,
            Some(Slot::Reserved) => PortState::Reserved,
            Some(Slot::Committed) => PortState::Committed,
            Some(Slot::Held(since)) => PortState::HeldDown { since: *since },
            Some(Slot::Stranded) => PortState::Stranded,
        }
    }

    /// Numbers reserved, committed or stranded.
    pub fn in_use(&self) -> usize {
        self.slots.len() - self.held.len()
    }

    /// Numbers in hold-down (as of the last allocation).
    /// Numbers still in hold-down at `now` (those past it are free, even
    /// before the next reservation notices).
    pub fn held_down_at(&self, now: Instant) -> usize {
        self.held.iter().filter(|(since, _)| now.saturating_duration_since(*since) < self.hold_down).count()
    }

    pub fn held_down(&self) -> usize {
        self.held.len()
    }

    /// Committed numbers, ascending.
    pub fn committed(&self) -> impl Iterator<Item = OfPort> + '_ {
        self.slots.iter().filter(|(_, slot)| **slot == Slot::Committed).map(|(port, _)| *port)
    }

    /// Moves numbers whose hold-down has run out back to the free pool.
    /// Amortised O(log n): each release is expired at most once.
    fn expire(&mut self, now: Instant) {
        while let Some(&(since, port)) = self.held.first() {
            // saturating: a caller clock that steps back must not panic.
            if now.saturating_duration_since(since) < self.hold_down {
                break;
            }
            self.held.pop_first();
            self.slots.remove(&port);
            self.free_auto.insert(port);
        }
    }

    /// Checks the internal indexes agree; tests call it after every step.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        // O(used), not O(number space): the free pool lies within the
        // automatic range, is disjoint from the used numbers, and together
        // with them covers the range exactly.
        if let Some(last) = self.free_auto.last() {
            assert!(last.is_auto(), "{last} in free pool is not automatic");
        }
        for port in self.slots.keys() {
            assert!(!self.free_auto.contains(port), "{port} both free and used");
        }
        for (since, port) in &self.held {
            assert!(port.is_auto(), "held {port} is not automatic");
            assert_eq!(self.slots.get(port), Some(&Slot::Held(*since)));
        }
        let held_slots = self.slots.values().filter(|s| matches!(s, Slot::Held(_))).count();
        assert_eq!(held_slots, self.held.len());
        for port in &self.stranded {
            assert_eq!(self.slots.get(port), Some(&Slot::Stranded));
        }
        let stranded_slots = self.slots.values().filter(|s| **s == Slot::Stranded).count();
        assert_eq!(stranded_slots, self.stranded.len());
        let auto_used = self.slots.keys().filter(|p| p.is_auto()).count();
        assert_eq!(
            auto_used + self.free_auto.len(),
            usize::from(OfPort::AUTO_MAX.get()),
            "automatic numbers lost or duplicated"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(n: u16) -> OfPort {
        OfPort::new(n).expect("valid test port")
    }

    fn alloc(hold: u64) -> Allocator {
        Allocator::new(AllocatorConfig { hold_down: Duration::from_secs(hold) })
    }

    #[test]
    fn auto_numbers_start_at_one_and_stay_in_lower_half() {
        let mut a = alloc(3600);
        let t = Instant::now();
        let r = a.reserve_auto(t).expect("free");
        assert_eq!(r.port(), port(1));
        assert_eq!(a.commit(r), port(1));
        let r = a.reserve_auto(t).expect("free");
        assert_eq!(r.port(), port(2));
        a.abort(r);
        a.check_invariants();
    }

    #[test]
    fn exhaustion_is_an_error_and_requests_still_work() {
        let mut a = alloc(3600);
        let t = Instant::now();
        for n in 1..=0x7fff {
            let r = a.reserve_auto(t).expect("free");
            assert_eq!(r.port().get(), n);
            a.commit(r);
        }
        assert_eq!(a.reserve_auto(t), Err(AllocError::Exhausted));
        let r = a.reserve_requested(0x8000).expect("upper half is free");
        a.commit(r);
        assert_eq!(a.reserve_requested(0x8000), Err(AllocError::RequestedInUse { port: port(0x8000) }));
        assert_eq!(a.reserve_requested(5), Err(AllocError::RequestedInUse { port: port(5) }));
        assert_eq!(a.in_use(), 0x8000);
        a.check_invariants();
    }

    #[test]
    fn requested_out_of_range() {
        let mut a = alloc(3600);
        for value in [0, 0xff00, 0xfffe, 0xffff] {
            assert_eq!(a.reserve_requested(value), Err(AllocError::RequestedOutOfRange { value }));
        }
        let r = a.reserve_requested(0xfeff).expect("highest usable");
        a.abort(r);
        assert_eq!(a.in_use(), 0);
    }

    #[test]
    fn freed_number_waits_out_hold_down() {
        let mut a = alloc(60);
        let t0 = Instant::now();
        let ports: Vec<_> = (0..10)
            .map(|_| {
                let r = a.reserve_auto(t0).expect("free");
                a.commit(r)
            })
            .collect();
        a.release(ports[4], t0).expect("committed");
        assert_eq!(a.state(ports[4]), PortState::HeldDown { since: t0 });

        let r = a.reserve_auto(t0 + Duration::from_secs(59)).expect("free");
        assert_eq!(r.port(), port(11), "held number must not be reused early");
        a.commit(r);

        let r = a.reserve_auto(t0 + Duration::from_secs(60)).expect("free");
        assert_eq!(r.port(), ports[4], "expired number is the lowest free");
        a.commit(r);
        a.check_invariants();
    }

    #[test]
    fn when_all_held_down_least_recently_freed_is_taken() {
        let mut a = alloc(3600);
        let t0 = Instant::now();
        for _ in 1..=0x7fff {
            let r = a.reserve_auto(t0).expect("free");
            a.commit(r);
        }
        a.release(port(200), t0 + Duration::from_secs(1)).expect("c");
        a.release(port(100), t0 + Duration::from_secs(2)).expect("c");
        a.release(port(300), t0 + Duration::from_secs(3)).expect("c");
        let later = t0 + Duration::from_secs(4);
        for expect in [200, 100, 300] {
            let r = a.reserve_auto(later).expect("held number");
            assert_eq!(r.port(), port(expect));
            a.commit(r);
        }
        assert_eq!(a.reserve_auto(later), Err(AllocError::Exhausted));
        a.check_invariants();
    }

    #[test]
    fn abort_skips_hold_down_release_does_not() {
        let mut a = alloc(3600);
        let t = Instant::now();
        let r = a.reserve_auto(t).expect("free");
        a.abort(r);
        assert_eq!(a.state(port(1)), PortState::Free);
        let r = a.reserve_auto(t).expect("free");
        assert_eq!(r.port(), port(1), "aborted number is immediately reusable");
        let p = a.commit(r);
        a.release(p, t).expect("committed");
        assert_eq!(a.reserve_auto(t).map(|r| a.commit(r)), Ok(port(2)));
        assert_eq!(a.release(p, t), Err(AllocError::NotCommitted { port: p }));
        a.check_invariants();
    }

    #[test]
    fn explicit_request_overrides_hold_down() {
        let mut a = alloc(3600);
        let t = Instant::now();
        let p = a.reserve_requested(7).map(|r| a.commit(r)).expect("free");
        a.release(p, t).expect("committed");
        let r = a.reserve_requested(7).expect("held, but explicitly requested");
        assert_eq!(a.commit(r), p);
        assert_eq!(a.held_down(), 0);
        // Upper-half numbers skip hold-down: only requests can take them.
        let q = a.reserve_requested(0x9000).map(|r| a.commit(r)).expect("free");
        a.release(q, t).expect("committed");
        assert_eq!(a.state(q), PortState::Free);
        a.check_invariants();
    }

    #[test]
    fn stranded_numbers_stay_out_until_freed() {
        let mut a = alloc(3600);
        let t = Instant::now();
        let r = a.reserve_auto(t).expect("free");
        let p = r.port();
        a.strand(r);
        assert_eq!(a.state(p), PortState::Stranded);
        assert_eq!(a.reserve_requested(p.get()), Err(AllocError::RequestedInUse { port: p }));
        let r = a.reserve_auto(t).expect("free");
        assert_ne!(r.port(), p);
        a.abort(r);
        assert_eq!(a.free_stranded(), [p]);
        assert_eq!(a.state(p), PortState::Free);
        assert_eq!(a.reserve_auto(t).map(|r| a.commit(r)), Ok(p));
        a.check_invariants();
    }

    #[test]
    fn restore_marks_committed_once() {
        let mut a = alloc(3600);
        a.restore(port(1)).expect("fresh");
        a.restore(port(0x9000)).expect("fresh");
        assert_eq!(a.restore(port(1)), Err(AllocError::AlreadyRestored { port: port(1) }));
        let r = a.reserve_auto(Instant::now()).expect("free");
        assert_eq!(r.port(), port(2));
        a.abort(r);
        assert_eq!(a.committed().collect::<Vec<_>>(), [port(1), port(0x9000)]);
        a.check_invariants();
    }

    #[test]
    fn churn_keeps_structures_bounded() {
        // 200,000 reserve/commit/release cycles with a short hold-down: what
        // is tracked is bounded by live plus held numbers, not by history.
        let mut a = alloc(1);
        let t0 = Instant::now();
        let mut live = std::collections::VecDeque::new();
        for i in 0..200_000u64 {
            let now = t0 + Duration::from_millis(i);
            let p = a.reserve_auto(now).map(|r| a.commit(r)).expect("free");
            live.push_back(p);
            if live.len() > 1000 {
                let old = live.pop_front().expect("non-empty");
                a.release(old, now).expect("committed");
            }
            assert!(a.slots.len() <= 1000 + 1 + 1000);
        }
        a.check_invariants();
    }
}
