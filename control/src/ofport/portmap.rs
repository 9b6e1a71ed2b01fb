//! The port map: the committed ports, their numbers, and the policy that
//! decides which transactions may run at all (validation, duplicates,
//! idempotence, reconciliation against a desired state).

use std::collections::BTreeMap;
use std::time::Instant;

use thiserror::Error;

use super::allocator::{AllocError, Allocator, AllocatorConfig, PortState};
use super::maps::Datapath;
use super::number::OfPort;
use super::reconcile::{reconcile, ReconcileReport};
use super::spec::{Claim, PortSpec, SpecError, TunnelKey};
use super::store::{PortRecord, Store, StoreError};
use super::txn::{Txn, TxnError};

/// What `add` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    Created(OfPort),
    /// The identical port already existed; nothing was allocated.
    Existing(OfPort),
}

impl Added {
    pub fn ofport(self) -> OfPort {
        match self {
            Added::Created(p) | Added::Existing(p) => p,
        }
    }
}

#[derive(Debug, Error)]
pub enum PortError {
    #[error("port {name:?}: {cause}")]
    Invalid { name: String, cause: SpecError },
    #[error("port {name:?} already exists with a different spec (ofport {ofport})")]
    NameTaken { name: String, ofport: OfPort },
    #[error(
        "tunnel {name:?} duplicates tunnel {existing:?} ({key}): a redundant tunnel can never carry traffic, refused"
    )]
    DuplicateTunnel { name: String, existing: String, key: TunnelKey },
    #[error("port {name:?} conflicts with port {existing:?}: both use {claim}")]
    Conflict { name: String, existing: String, claim: Claim },
    #[error("no port named {name:?}")]
    NotFound { name: String },
    #[error("port {name:?}: {cause}")]
    Txn { name: String, cause: TxnError },
    #[error("port {name:?}: replacement failed ({cause}) and restoring the old port failed too ({restore}); the port is gone")]
    ReplaceLost { name: String, cause: Box<PortError>, restore: TxnError },
}

#[derive(Debug, Error)]
pub enum OpenError {
    #[error("loading committed ports: {cause}")]
    Load { cause: StoreError },
    #[error("stored port {name:?}: {cause}")]
    Invalid { name: String, cause: SpecError },
    #[error("stored port {name:?}: {cause}")]
    Number { name: String, cause: AllocError },
    #[error("stored port {name:?} appears twice")]
    DuplicateName { name: String },
    #[error("stored port {name:?} conflicts with port {existing:?}: both use {claim}")]
    Conflict { name: String, existing: String, claim: Claim },
}

#[derive(Debug, Error)]
pub enum ApplyError {
    #[error("desired state names port {name:?} more than once")]
    DuplicateName { name: String },
    /// The changes are applied (maps and memory) but not durable: a crash
    /// before the next successful write would lose them, and the next
    /// start would reconcile the maps back to the stored ports.
    #[error("applied, but making the changes durable failed: {cause}")]
    Sync { cause: StoreError, report: Box<ApplyReport> },
}

/// What `apply_desired` changed. Re-applying the same desired state gives
/// a report with nothing added, replaced or deleted.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub added: Vec<(String, OfPort)>,
    pub replaced: Vec<(String, OfPort)>,
    pub deleted: Vec<(String, OfPort)>,
    pub unchanged: usize,
    /// Ports that could not be brought to their desired state; the rest
    /// were applied regardless.
    pub failed: Vec<(String, PortError)>,
}

impl ApplyReport {
    pub fn changed(&self) -> bool {
        !(self.added.is_empty() && self.replaced.is_empty() && self.deleted.is_empty())
    }
}

pub struct PortMap<D, S> {
    alloc: Allocator,
    ports: BTreeMap<String, PortRecord>,
    /// Which port holds each claim (tunnel key, ifname, MAC...), to refuse
    /// clashes such as redundant tunnels in O(log n) before they cost a
    /// number.
    claims: BTreeMap<Claim, String>,
    datapath: D,
    store: S,
}

impl<D: Datapath, S: Store> PortMap<D, S> {
    /// Rebuilds the map from the store: committed ports keep their numbers
    /// across restarts. Does not touch the datapath; call `reconcile` next.
    pub fn open(datapath: D, store: S, config: AllocatorConfig) -> Result<Self, OpenError> {
        let records = store.load().map_err(|cause| OpenError::Load { cause })?;
        let mut map =
            PortMap { alloc: Allocator::new(config), ports: BTreeMap::new(), claims: BTreeMap::new(), datapath, store };
        for record in records {
            let name = record.name().to_owned();
            if let Err(cause) = record.spec.validate() {
                return Err(OpenError::Invalid { name, cause });
            }
            if map.ports.contains_key(&name) {
                return Err(OpenError::DuplicateName { name });
            }
            for claim in record.spec.claims() {
                if let Some(existing) = map.claims.get(&claim) {
                    let existing = existing.clone();
                    return Err(OpenError::Conflict { name, existing, claim });
                }
            }
            if let Err(cause) = map.alloc.restore(record.ofport) {
                return Err(OpenError::Number { name, cause });
            }
            map.index(record);
        }
        Ok(map)
    }

    /// Adds a port. Everything that can be refused is refused before a
    /// number is reserved, so a refused request costs nothing however
    /// often it is repeated.
    pub fn add(&mut self, spec: &PortSpec, now: Instant) -> Result<Added, PortError> {
        let name = spec.name();
        if let Err(cause) = spec.validate() {
            let name = name.to_owned();
            return Err(PortError::Invalid { name, cause });
        }
        if let Some(existing) = self.ports.get(name) {
            if existing.spec == *spec {
                return Ok(Added::Existing(existing.ofport));
            }
            let (name, ofport) = (name.to_owned(), existing.ofport);
            return Err(PortError::NameTaken { name, ofport });
        }
        self.check_claims_free(spec, None)?;
        let ofport = self.run_add(spec, spec.ofport_request(), now).map_err(|cause| txn_error(spec, cause))?;
        tracing::debug!(port = name, %ofport, "port added");
        Ok(Added::Created(ofport))
    }

    /// Deletes a port: every map entry, its record, then its number, which
    /// enters hold-down.
    pub fn delete(&mut self, name: &str, now: Instant) -> Result<OfPort, PortError> {
        let Some(record) = self.ports.get(name).cloned() else {
            let name = name.to_owned();
            return Err(PortError::NotFound { name });
        };
        Txn { alloc: &mut self.alloc, datapath: &mut self.datapath, store: &mut self.store }
            .delete(&record, now)
            .inspect_err(|e| warn_if_dirty(&record.spec, e))
            .map_err(|cause| txn_error(&record.spec, cause))?;
        self.unindex(&record);
        tracing::debug!(port = name, ofport = %record.ofport, "port deleted");
        Ok(record.ofport)
    }

    /// Replaces the port named like `spec` with `spec`. The port keeps its
    /// number unless `spec` pins another: flows and controllers know the
    /// port by number, and a changed option is not a new port. If the new
    /// port cannot be added, the old one is put back under its number.
    pub fn replace(&mut self, spec: &PortSpec, now: Instant) -> Result<OfPort, PortError> {
        let name = spec.name();
        let Some(old) = self.ports.get(name).cloned() else {
            let name = name.to_owned();
            return Err(PortError::NotFound { name });
        };
        if old.spec == *spec {
            return Ok(old.ofport);
        }
        if let Err(cause) = spec.validate() {
            let name = name.to_owned();
            return Err(PortError::Invalid { name, cause });
        }
        self.check_claims_free(spec, Some(name))?;
        let request = spec.ofport_request().unwrap_or(old.ofport.get());
        if request != old.ofport.get() {
            self.check_requested_free(name, request)?;
        }
        self.delete(name, now)?;
        let cause = match self.run_add(spec, Some(request), now) {
            Ok(ofport) => return Ok(ofport),
            Err(cause) => txn_error(spec, cause),
        };
        // The old number was just released into hold-down; an explicit
        // request overrides that, so the old port gets its number back.
        match self.run_add(&old.spec, Some(old.ofport.get()), now) {
            Ok(_) => Err(cause),
            Err(restore) => Err(PortError::ReplaceLost { name: name.to_owned(), cause: Box::new(cause), restore }),
        }
    }

    /// Makes the committed ports equal `desired`: deletes ports not named,
    /// replaces changed ones, adds missing ones. Unchanged ports are not
    /// touched, so re-applying the same state allocates nothing. Per-port
    /// failures are collected and do not stop the others.
    ///
    /// Group commit: the store makes the whole batch durable once, at the
    /// end (one fsync instead of one per change), and the report is the
    /// acknowledgement, so nothing is acknowledged before it is durable.
    /// A crash mid-batch loses the batch's store writes; the next start
    /// reconciles the maps back to the last durable state.
    pub fn apply_desired(&mut self, desired: &[PortSpec], now: Instant) -> Result<ApplyReport, ApplyError> {
        self.store.defer_sync();
        let report = self.apply_desired_deferred(desired, now);
        let synced = self.store.sync();
        let report = report?;
        match synced {
            Ok(()) => Ok(report),
            Err(cause) => Err(ApplyError::Sync { cause, report: Box::new(report) }),
        }
    }

    fn apply_desired_deferred(&mut self, desired: &[PortSpec], now: Instant) -> Result<ApplyReport, ApplyError> {
        let mut wanted: BTreeMap<&str, &PortSpec> = BTreeMap::new();
        for spec in desired {
            if wanted.insert(spec.name(), spec).is_some() {
                let name = spec.name().to_owned();
                return Err(ApplyError::DuplicateName { name });
            }
        }
        let mut report = ApplyReport::default();
        let gone: Vec<String> = self.ports.keys().filter(|name| !wanted.contains_key(name.as_str())).cloned().collect();
        let (mut changed, mut missing) = (Vec::new(), Vec::new());
        for spec in desired {
            match self.ports.get(spec.name()) {
                Some(rec) if rec.spec == *spec => report.unchanged += 1,
                Some(_) => changed.push(spec),
                None => missing.push(spec),
            }
        }
        // Deletions first: they free the names, tunnel keys and pinned
        // numbers that replacements and additions may need.
        for name in gone {
            match self.delete(&name, now) {
                Ok(ofport) => report.deleted.push((name, ofport)),
                Err(e) => report.failed.push((name, e)),
            }
        }
        for spec in changed {
            let name = spec.name().to_owned();
            match self.replace(spec, now) {
                Ok(ofport) => report.replaced.push((name, ofport)),
                Err(e) => report.failed.push((name, e)),
            }
        }
        for spec in missing {
            let name = spec.name().to_owned();
            match self.add(spec, now) {
                Ok(added) => report.added.push((name, added.ofport())),
                Err(e) => report.failed.push((name, e)),
            }
        }
        Ok(report)
    }

    /// Repairs the datapath to match the committed ports. Numbers stranded
    /// by failed undos are freed once a reconcile has run without failures,
    /// since only then is it certain no entry still carries them.
    pub fn reconcile(&mut self) -> ReconcileReport {
        let report = reconcile(&mut self.datapath, self.ports.values());
        for failure in &report.failed {
            tracing::warn!(%failure, "reconcile could not repair an entry");
        }
        if !(report.recreated.is_empty() && report.removed.is_empty() && report.rewritten.is_empty()) {
            tracing::info!(
                recreated = report.recreated.len(),
                removed = report.removed.len(),
                rewritten = report.rewritten.len(),
                "reconcile repaired the datapath"
            );
        }
        if report.failed.is_empty() {
            let freed = self.alloc.free_stranded();
            if !freed.is_empty() {
                tracing::info!(?freed, "stranded OpenFlow port numbers freed");
            }
        }
        report
    }

    pub fn get(&self, name: &str) -> Option<&PortRecord> {
        self.ports.get(name)
    }

    /// Committed ports, by name.
    pub fn ports(&self) -> impl Iterator<Item = &PortRecord> {
        self.ports.values()
    }

    pub fn allocator(&self) -> &Allocator {
        &self.alloc
    }

    pub fn datapath(&self) -> &D {
        &self.datapath
    }

    /// Direct access, for fault injection; changing map contents behind
    /// the port map's back is what `reconcile` exists to repair.
    pub fn datapath_mut(&mut self) -> &mut D {
        &mut self.datapath
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Takes the map apart, e.g. to reopen it as after a restart.
    pub fn into_parts(self) -> (D, S) {
        (self.datapath, self.store)
    }

    /// Runs an add transaction and indexes the result.
    fn run_add(&mut self, spec: &PortSpec, request: Option<u16>, now: Instant) -> Result<OfPort, TxnError> {
        let ofport = Txn { alloc: &mut self.alloc, datapath: &mut self.datapath, store: &mut self.store }
            .add(spec, request, now)
            .inspect_err(|e| warn_if_dirty(spec, e))?;
        self.index(PortRecord { ofport, spec: spec.clone() });
        Ok(ofport)
    }

    /// Refuses a port holding a claim another port (other than `except`)
    /// holds.
    fn check_claims_free(&self, spec: &PortSpec, except: Option<&str>) -> Result<(), PortError> {
        for claim in spec.claims() {
            let Some(owner) = self.claims.get(&claim) else {
                continue;
            };
            if Some(owner.as_str()) == except {
                continue;
            }
            let (name, existing) = (spec.name().to_owned(), owner.clone());
            return Err(match claim {
                Claim::Tunnel(key) => PortError::DuplicateTunnel { name, existing, key },
                claim => PortError::Conflict { name, existing, claim },
            });
        }
        Ok(())
    }

    /// Refuses a pinned number that is taken, before anything is undone
    /// for a replacement.
    fn check_requested_free(&self, name: &str, request: u16) -> Result<(), PortError> {
        let cause = match OfPort::new(request) {
            Err(_) => AllocError::RequestedOutOfRange { value: request },
            Ok(port) => match self.alloc.state(port) {
                PortState::Free | PortState::HeldDown { .. } => return Ok(()),
                PortState::Reserved | PortState::Committed | PortState::Stranded => AllocError::RequestedInUse { port },
            },
        };
        Err(PortError::Txn { name: name.to_owned(), cause: TxnError::Number { cause } })
    }

    fn index(&mut self, record: PortRecord) {
        for claim in record.spec.claims() {
            self.claims.insert(claim, record.name().to_owned());
        }
        self.ports.insert(record.name().to_owned(), record);
    }

    fn unindex(&mut self, record: &PortRecord) {
        for claim in record.spec.claims() {
            self.claims.remove(&claim);
        }
        self.ports.remove(record.name());
    }
}

fn txn_error(spec: &PortSpec, cause: TxnError) -> PortError {
    PortError::Txn { name: spec.name().to_owned(), cause }
}

/// A clean failure is the caller's to report. A failed undo leaves the
/// datapath out of line with the store until a reconcile, so it is logged
/// here, whoever the caller is and whatever it does with the error.
fn warn_if_dirty(spec: &PortSpec, error: &TxnError) {
    if error.undo().is_some_and(|u| !u.is_clean()) {
        tracing::warn!(port = spec.name(), %error, "transaction failed and its undo failed");
    }
}
