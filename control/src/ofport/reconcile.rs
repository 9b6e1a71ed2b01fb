//! Bringing the BPF maps back in line with the committed ports and
//! bindings, after a crash mid-transaction, a failed undo, or someone else
//! touching the maps. What is committed is the truth; the maps are
//! repaired to match.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::maps::{Datapath, MapEntry, MapError, Step};
use super::number::OfPort;
use super::spec::{Binding, Object};
use super::store::PortRecord;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Entries a committed port needed and the map lacked.
    pub recreated: Vec<(Step, MapEntry)>,
    /// Entries no committed port owns.
    pub removed: Vec<(Step, MapEntry)>,
    /// Entries with the right key and owner but a wrong value, written anew.
    pub rewritten: Vec<(Step, MapEntry)>,
    pub failed: Vec<RepairFailure>,
}

impl ReconcileReport {
    /// Nothing needed repair and nothing failed.
    pub fn is_noop(&self) -> bool {
        self.recreated.is_empty() && self.removed.is_empty() && self.rewritten.is_empty() && self.failed.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairFailure {
    pub step: Step,
    pub action: RepairAction,
    pub cause: MapError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairAction {
    List,
    Recreate(MapEntry),
    Remove(MapEntry),
    /// Checking or rewriting the value of a present entry.
    Rewrite(MapEntry),
}

impl fmt::Display for RepairFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.action {
            RepairAction::List => write!(f, "{}: list: {}", self.step, self.cause),
            RepairAction::Recreate(e) => write!(f, "{}: recreate {e}: {}", self.step, self.cause),
            RepairAction::Remove(e) => write!(f, "{}: remove {e}: {}", self.step, self.cause),
            RepairAction::Rewrite(e) => write!(f, "{}: rewrite {e}: {}", self.step, self.cause),
        }
    }
}

/// Makes every map hold exactly the entries the `committed` ports and the
/// `bindings` (each with its tunnel's number) need.
///
/// An entry counts as correct when its key and its port number match and
/// the datapath says its value is current; one with the right key but a
/// stale number is removed and recreated, one with a stale value rewritten.
/// Removals run before insertions so a stale entry frees its key first.
/// Best effort: a failure is recorded and the rest still repaired.
pub fn reconcile<'a, D: Datapath>(
    datapath: &mut D,
    committed: impl IntoIterator<Item = &'a PortRecord> + Clone,
    bindings: impl IntoIterator<Item = (&'a Binding, OfPort)> + Clone,
) -> ReconcileReport {
    let objects: Vec<(Object<'a>, OfPort)> = committed
        .into_iter()
        .map(|r| (Object::Port(&r.spec), r.ofport))
        .chain(bindings.into_iter().map(|(b, tunnel)| (Object::Binding(b), tunnel)))
        .collect();
    let mut report = ReconcileReport::default();
    for &step in Step::ALL {
        let wanted: BTreeMap<MapEntry, (Object<'a>, OfPort)> = objects
            .iter()
            .filter_map(|&(object, ofport)| Some((MapEntry::for_step(step, object, ofport)?, (object, ofport))))
            .collect();
        let present: BTreeSet<MapEntry> = match datapath.list(step) {
            Ok(entries) => entries.into_iter().collect(),
            Err(cause) => {
                report.failed.push(RepairFailure { step, action: RepairAction::List, cause });
                continue;
            }
        };
        for entry in present.iter().filter(|e| !wanted.contains_key(e)) {
            match datapath.remove(step, entry) {
                Ok(()) | Err(MapError::NotFound) => report.removed.push((step, *entry)),
                Err(cause) => report.failed.push(RepairFailure { step, action: RepairAction::Remove(*entry), cause }),
            }
        }
        for (entry, &(object, ofport)) in wanted.iter().filter(|(e, _)| present.contains(e)) {
            let fail = |cause| RepairFailure { step, action: RepairAction::Rewrite(*entry), cause };
            match datapath.is_current(step, object, ofport) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(cause) => {
                    report.failed.push(fail(cause));
                    continue;
                }
            }
            let rewrite = match datapath.remove(step, entry) {
                Ok(()) | Err(MapError::NotFound) => datapath.insert(step, object, ofport),
                Err(e) => Err(e),
            };
            match rewrite {
                Ok(()) => report.rewritten.push((step, *entry)),
                Err(cause) => report.failed.push(fail(cause)),
            }
        }
        for (entry, &(object, ofport)) in wanted.iter().filter(|(e, _)| !present.contains(e)) {
            match datapath.insert(step, object, ofport) {
                Ok(()) => report.recreated.push((step, *entry)),
                Err(cause) => report.failed.push(RepairFailure { step, action: RepairAction::Recreate(*entry), cause }),
            }
        }
    }
    report
}
