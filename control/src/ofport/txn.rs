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
use super::spec::PortSpec;
use super::store::{PortRecord, Store, StoreError};

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
}

impl TxnError {
    pub fn undo(&self) -> Option<&Undo> {
        match self {
            TxnError::Number { .. } => None,
            TxnError::Insert { undo, .. } | TxnError::Remove { undo, .. } | TxnError::Store { undo, .. } => Some(undo),
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
}

impl<D: Datapath, S: Store> Txn<'_, D, S> {
    /// Adds `spec` under `request` (or an automatic number). Policy checks
    /// (validation, duplicates) belong to the caller and must come first:
    /// this reserves a number before anything else.
    pub fn add(&mut self, spec: &PortSpec, request: Option<u16>, now: Instant) -> Result<OfPort, TxnError> {
        let reservation = self.alloc.reserve(request, now).map_err(|cause| TxnError::Number { cause })?;
        let ofport = reservation.port();
        let steps = spec.steps();
        for (done, &step) in steps.iter().enumerate() {
            if let Err(cause) = self.datapath.insert(step, spec, ofport) {
                let undo = self.abort(reservation, spec, &steps[..done]);
                return Err(TxnError::Insert { step, cause, undo });
            }
        }
        let record = PortRecord { ofport, spec: spec.clone() };
        if let Err(cause) = self.store.put(&record) {
            let undo = self.abort(reservation, spec, steps);
            return Err(TxnError::Store { cause, undo });
        }
        Ok(self.alloc.commit(reservation))
    }

    /// Deletes a committed port. On failure the port stays committed.
    pub fn delete(&mut self, record: &PortRecord, now: Instant) -> Result<(), TxnError> {
        let (spec, ofport) = (&record.spec, record.ofport);
        // Checked first so that the final release cannot fail after the
        // entries and the record are already gone.
        if self.alloc.state(ofport) != PortState::Committed {
            let cause = AllocError::NotCommitted { port: ofport };
            return Err(TxnError::Number { cause });
        }
        let steps = spec.steps();
        for (i, &step) in steps.iter().enumerate().rev() {
            if let Err(cause) = remove_entry(self.datapath, step, spec, ofport) {
                let failures = self.reinsert(spec, ofport, &steps[i + 1..]);
                let undo = Undo { failures, stranded: None };
                return Err(TxnError::Remove { step, cause, undo });
            }
        }
        if let Err(cause) = self.store.delete(spec.name()) {
            let failures = self.reinsert(spec, ofport, steps);
            let undo = Undo { failures, stranded: None };
            return Err(TxnError::Store { cause, undo });
        }
        self.alloc.release(ofport, now).map_err(|cause| TxnError::Number { cause })
    }

    /// Removes the entries of `inserted`, newest first, and gives the number
    /// back, unless an entry could not be removed: then the number is
    /// stranded rather than freed, since that entry still names it.
    fn abort(&mut self, reservation: Reservation, spec: &PortSpec, inserted: &[Step]) -> Undo {
        let ofport = reservation.port();
        let mut failures = Vec::new();
        for &step in inserted.iter().rev() {
            if let Err(cause) = remove_entry(self.datapath, step, spec, ofport) {
                failures.push(UndoFailure { step, action: UndoAction::Remove, cause });
            }
        }
        if failures.is_empty() {
            self.alloc.abort(reservation);
            Undo::default()
        } else {
            self.alloc.strand(reservation);
            Undo { failures, stranded: Some(ofport) }
        }
    }

    /// Puts back the entries of `removed` in insertion order.
    fn reinsert(&mut self, spec: &PortSpec, ofport: OfPort, removed: &[Step]) -> Vec<UndoFailure> {
        removed
            .iter()
            .filter_map(|&step| {
                let cause = self.datapath.insert(step, spec, ofport).err()?;
                Some(UndoFailure { step, action: UndoAction::Reinsert, cause })
            })
            .collect()
    }
}

/// Removes one entry; an entry already gone is what we wanted anyway.
fn remove_entry<D: Datapath>(datapath: &mut D, step: Step, spec: &PortSpec, ofport: OfPort) -> Result<(), MapError> {
    let Some(entry) = MapEntry::for_step(step, spec, ofport) else {
        return Ok(());
    };
    match datapath.remove(step, &entry) {
        Ok(()) | Err(MapError::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}
