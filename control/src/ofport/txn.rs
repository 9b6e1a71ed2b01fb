//! One port transaction: all of a port's map entries and its record, or
//! none of them, and never a number without a port.
//!
//! Add:    reserve number -> insert each step's entry -> persist -> commit.
//! Delete: remove entries (reverse order) -> unpersist -> release number.
//! A failure undoes what the transaction already did, in reverse, and the
//! error names the step and the cause. OVS in 2018 forgot the "undo the
//! number" half of this, once per failed add.

use std::fmt;
use std::time::Instant;

use thiserror::Error;

use super::allocator::{AllocError, Allocator, PortState, Reservation};
use super::maps::{Datapath, MapEntry, MapError, Step};
use super::number::OfPort;
use super::spec::{Binding, Object, PortSpec};
use super::store::{PortRecord, Store, StoreError};

/// What a port needs outside the configuration maps, set up inside its
/// transaction: the XDP link on a local port's interface, a tunnel's BFD
/// session. `setup` runs once the entries are in and before the record is
/// written, so a refusal costs no commit, no fsync and no number; the
/// number goes straight back to free.
pub trait Effects {
    /// Sets up what `port`, numbered `ofport`, needs; an error aborts the
    /// transaction.
    fn setup(&mut self, port: &PortSpec, ofport: OfPort) -> anyhow::Result<()>;
    /// Takes down what `setup` set up: when the transaction aborts after
    /// it, and after a delete has committed. Cannot fail the transaction.
    fn teardown(&mut self, port: &PortSpec, ofport: OfPort);
    /// A committed port's record changes in place (`same_entries`): its
    /// entries stay, what lives outside the maps follows `new`. An error
    /// refuses the change before it is written.
    fn update(&mut self, _old: &PortSpec, _new: &PortSpec, _ofport: OfPort) -> anyhow::Result<()> {
        Ok(())
    }
}

/// For ports that need nothing outside the maps (and for tests).
pub struct NoEffects;

impl Effects for NoEffects {
    fn setup(&mut self, _: &PortSpec, _: OfPort) -> anyhow::Result<()> {
        Ok(())
    }
    fn teardown(&mut self, _: &PortSpec, _: OfPort) {}
}

#[derive(Debug, Error)]
pub enum TxnError {
    #[error("ofport: {cause}")]
    Number { cause: AllocError },
    #[error("{step}: {cause}{undo}")]
    Insert { step: Step, cause: MapError, undo: Undo },
    #[error("{step}: remove: {cause}{undo}")]
    Remove { step: Step, cause: MapError, undo: Undo },
    #[error("store: {cause}{undo}")]
    Store { cause: StoreError, undo: Undo },
    #[error("{cause:#}{undo}")]
    Effect { cause: anyhow::Error, undo: Undo },
}

impl TxnError {
    pub fn undo(&self) -> Option<&Undo> {
        match self {
            TxnError::Number { .. } => None,
            TxnError::Insert { undo, .. }
            | TxnError::Remove { undo, .. }
            | TxnError::Store { undo, .. }
            | TxnError::Effect { undo, .. } => Some(undo),
        }
    }
}

/// What went wrong while undoing. Empty means the transaction left no
/// trace. Otherwise the datapath differs from the store until a reconcile:
/// an aborted add leaves entries behind (its number is stranded meanwhile),
/// an aborted delete leaves a committed port with entries missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Undo {
    pub failures: Vec<UndoFailure>,
    pub stranded: Option<OfPort>,
}

impl Undo {
    pub fn is_clean(&self) -> bool {
        self.failures.is_empty()
    }
}

impl fmt::Display for Undo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_clean() {
            return Ok(());
        }
        f.write_str("; undo incomplete")?;
        for failure in &self.failures {
            write!(f, ", {failure}")?;
        }
        if let Some(port) = self.stranded {
            write!(f, "; ofport {port} held until reconcile")?;
        } else {
            f.write_str("; reconcile will restore the missing entries")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndoFailure {
    pub step: Step,
    /// What the undo tried: removing an entry an add had inserted, or
    /// re-inserting one a delete had removed.
    pub action: UndoAction,
    pub cause: MapError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UndoAction {
    Remove,
    Reinsert,
}

impl fmt::Display for UndoFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let action = match self.action {
            UndoAction::Remove => "remove",
            UndoAction::Reinsert => "re-insert",
        };
        write!(f, "{}: {action}: {}", self.step, self.cause)
    }
}

/// The three things a transaction touches, borrowed for its duration.
pub struct Txn<'a, D, S> {
    pub alloc: &'a mut Allocator,
    pub datapath: &'a mut D,
    pub store: &'a mut S,
    /// A local port's entries that need its interface (`Step::needs_interface`)
    /// wait for it instead of failing the add (`Desired::interfaces_may_wait`).
    pub interfaces_may_wait: bool,
}

impl<D: Datapath, S: Store> Txn<'_, D, S> {
    /// Adds `spec` under `request` (or an automatic number). Policy checks
    /// (validation, duplicates) belong to the caller and must come first:
    /// this reserves a number before anything else.
    pub fn add(
        &mut self,
        spec: &PortSpec,
        request: Option<u16>,
        now: Instant,
        effects: &mut dyn Effects,
    ) -> Result<OfPort, TxnError> {
        let reservation = self.alloc.reserve(request, now).map_err(|cause| TxnError::Number { cause })?;
        let ofport = reservation.port();
        let object = Object::Port(spec);
        let steps = object.steps();
        if let Err((step, cause, done)) = insert_all(self.datapath, object, ofport, self.interfaces_may_wait) {
            let undo = self.abort(reservation, object, done);
            return Err(TxnError::Insert { step, cause, undo });
        }
        if let Err(cause) = effects.setup(spec, ofport) {
            let undo = self.abort(reservation, object, steps);
            return Err(TxnError::Effect { cause, undo });
        }
        let record = PortRecord { ofport, spec: spec.clone() };
        if let Err(cause) = self.store.put(&record) {
            effects.teardown(spec, ofport);
            let undo = self.abort(reservation, object, steps);
            return Err(TxnError::Store { cause, undo });
        }
        Ok(self.alloc.commit(reservation))
    }

    /// Deletes a committed port. On failure the port stays committed, its
    /// effects untouched.
    pub fn delete(&mut self, record: &PortRecord, now: Instant, effects: &mut dyn Effects) -> Result<(), TxnError> {
        let (spec, ofport) = (&record.spec, record.ofport);
        // Checked first so that the final release cannot fail after the
        // entries and the record are already gone.
        if self.alloc.state(ofport) != PortState::Committed {
            let cause = AllocError::NotCommitted { port: ofport };
            return Err(TxnError::Number { cause });
        }
        let object = Object::Port(spec);
        remove_all(self.datapath, object, ofport)?;
        if let Err(cause) = self.store.delete(spec.name()) {
            let failures = reinsert(self.datapath, object, ofport, object.steps());
            return Err(TxnError::Store { cause, undo: Undo { failures, stranded: None } });
        }
        self.alloc.release(ofport, now).map_err(|cause| TxnError::Number { cause })?;
        effects.teardown(spec, ofport);
        Ok(())
    }

    /// Rewrites a committed port's record whose entries stay as they are
    /// (`PortSpec::same_entries`): effects first, then the record; a
    /// failed write puts the effects back.
    pub fn update(&mut self, old: &PortRecord, new: &PortSpec, effects: &mut dyn Effects) -> Result<(), TxnError> {
        // No forwarding entry changes; the record's copy in the datapath
        // follows the record, and goes back if the record cannot.
        effects
            .update(&old.spec, new, old.ofport)
            .map_err(|cause| TxnError::Effect { cause, undo: Undo::default() })?;
        let put_back_effects = |effects: &mut dyn Effects| {
            if let Err(e) = effects.update(new, &old.spec, old.ofport) {
                tracing::warn!(port = new.name(), "putting the old settings back after a failed write: {e:#}");
            }
        };
        // Effects and the copy back as they were; what could not be is said.
        let mut undo = |datapath: &mut D| {
            put_back_effects(effects);
            let failures = rewrite_record_copy(datapath, new, &old.spec, old.ofport)
                .err()
                .map(|cause| UndoFailure { step: Step::Record, action: UndoAction::Reinsert, cause })
                .into_iter()
                .collect();
            Undo { failures, stranded: None }
        };
        if let Err(cause) = rewrite_record_copy(self.datapath, &old.spec, new, old.ofport) {
            return Err(TxnError::Insert { step: Step::Record, cause, undo: undo(self.datapath) });
        }
        if let Err(cause) = self.store.put(&PortRecord { ofport: old.ofport, spec: new.clone() }) {
            return Err(TxnError::Store { cause, undo: undo(self.datapath) });
        }
        Ok(())
    }

    /// Adds a binding behind the tunnel numbered `tunnel`: its entries,
    /// then its record. Costs no number.
    pub fn add_binding(&mut self, binding: &Binding, tunnel: OfPort) -> Result<(), TxnError> {
        let object = Object::Binding(binding);
        if let Err((step, cause, done)) = insert_all(self.datapath, object, tunnel, false) {
            let failures = remove_entries(self.datapath, object, tunnel, done);
            return Err(TxnError::Insert { step, cause, undo: Undo { failures, stranded: None } });
        }
        if let Err(cause) = self.store.put_binding(binding) {
            let failures = remove_entries(self.datapath, object, tunnel, object.steps());
            return Err(TxnError::Store { cause, undo: Undo { failures, stranded: None } });
        }
        Ok(())
    }

    /// Deletes a committed binding. On failure it stays committed.
    pub fn delete_binding(&mut self, binding: &Binding, tunnel: OfPort) -> Result<(), TxnError> {
        let object = Object::Binding(binding);
        remove_all(self.datapath, object, tunnel)?;
        if let Err(cause) = self.store.delete_binding(binding.vni, binding.mac) {
            let failures = reinsert(self.datapath, object, tunnel, object.steps());
            return Err(TxnError::Store { cause, undo: Undo { failures, stranded: None } });
        }
        Ok(())
    }

    /// Removes the entries of `inserted`, newest first, and gives the number
    /// back, unless an entry could not be removed: then the number is
    /// stranded rather than freed, since that entry still names it.
    fn abort(&mut self, reservation: Reservation, object: Object<'_>, inserted: &[Step]) -> Undo {
        let ofport = reservation.port();
        let failures = remove_entries(self.datapath, object, ofport, inserted);
        if failures.is_empty() {
            self.alloc.abort(reservation);
            Undo::default()
        } else {
            self.alloc.strand(reservation);
            Undo { failures, stranded: Some(ofport) }
        }
    }
}

/// Inserts every entry of `object` in order; on a failure, which step, why,
/// and the steps already done. With `may_wait`, an entry that needs an
/// interface that does not exist is left for reconcile.
fn insert_all<'s, D: Datapath>(
    datapath: &mut D,
    object: Object<'_>,
    ofport: OfPort,
    may_wait: bool,
) -> Result<(), (Step, MapError, &'s [Step])> {
    let steps: &'static [Step] = object.steps();
    for (done, &step) in steps.iter().enumerate() {
        match datapath.insert(step, object, ofport) {
            Ok(()) => {}
            Err(MapError::NoInterface { .. }) if may_wait && step.needs_interface() => {}
            Err(cause) => return Err((step, cause, &steps[..done])),
        }
    }
    Ok(())
}

/// Removes every entry of `object`, newest first; a failure puts back the
/// ones already removed and is the error.
fn remove_all<D: Datapath>(datapath: &mut D, object: Object<'_>, ofport: OfPort) -> Result<(), TxnError> {
    let steps = object.steps();
    for (i, &step) in steps.iter().enumerate().rev() {
        if let Err(cause) = remove_entry(datapath, step, object, ofport) {
            let failures = reinsert(datapath, object, ofport, &steps[i + 1..]);
            return Err(TxnError::Remove { step, cause, undo: Undo { failures, stranded: None } });
        }
    }
    Ok(())
}

/// Removes the entries of `inserted`, newest first, collecting failures.
fn remove_entries<D: Datapath>(
    datapath: &mut D,
    object: Object<'_>,
    ofport: OfPort,
    inserted: &[Step],
) -> Vec<UndoFailure> {
    inserted
        .iter()
        .rev()
        .filter_map(|&step| {
            let cause = remove_entry(datapath, step, object, ofport).err()?;
            Some(UndoFailure { step, action: UndoAction::Remove, cause })
        })
        .collect()
}

/// Puts back the entries of `removed` in insertion order.
fn reinsert<D: Datapath>(datapath: &mut D, object: Object<'_>, ofport: OfPort, removed: &[Step]) -> Vec<UndoFailure> {
    removed
        .iter()
        .filter_map(|&step| {
            let cause = datapath.insert(step, object, ofport).err()?;
            Some(UndoFailure { step, action: UndoAction::Reinsert, cause })
        })
        .collect()
}

/// Replaces port `ofport`'s record copy (`from`'s) by `to`'s.
fn rewrite_record_copy<D: Datapath>(
    datapath: &mut D,
    from: &PortSpec,
    to: &PortSpec,
    ofport: OfPort,
) -> Result<(), MapError> {
    remove_entry(datapath, Step::Record, Object::Port(from), ofport)?;
    datapath.insert(Step::Record, Object::Port(to), ofport)
}

/// Removes one entry; an entry already gone is what we wanted anyway.
fn remove_entry<D: Datapath>(datapath: &mut D, step: Step, object: Object<'_>, ofport: OfPort) -> Result<(), MapError> {
    let Some(entry) = MapEntry::for_step(step, object, ofport) else {
        return Ok(());
    };
    match datapath.remove(step, &entry) {
        Ok(()) | Err(MapError::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}
