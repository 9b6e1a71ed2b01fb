//! The port map: the committed ports and remote bindings, the ports'
//! numbers, and the policy that decides which transactions may run at all
//! (validation, duplicates, claims across ports and bindings, idempotence,
//! reconciliation against a desired state). It is the one way into the
//! configuration maps.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Instant;

use thiserror::Error;

use super::allocator::{AllocError, Allocator, AllocatorConfig, PortState};
use super::maps::GroupEntry;
use super::maps::{Datapath, MapError};
use super::number::OfPort;
use super::reconcile::{reconcile, ReconcileReport};
use super::spec::{Binding, Claim, Group, MacAddr, PortKind, PortSpec, SpecError, TunnelKey, TunnelPort, Vni};
use super::store::{PortRecord, Store, StoreError};
use super::txn::{Effects, NoEffects, Txn, TxnError};

/// What `add` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    Created(OfPort),
    /// The identical port already existed; nothing was allocated.
    Existing(OfPort),
    /// The port existed with other settings that no map holds (a tunnel's
    /// BFD timers); its record and effects follow, its entries stay.
    Updated(OfPort),
}

impl Added {
    pub fn ofport(self) -> OfPort {
        match self {
            Added::Created(p) | Added::Existing(p) | Added::Updated(p) => p,
        }
    }
}

#[derive(Debug, Error)]
pub enum PortError {
    /// `what`: `port` or `tunnel`, as the operator added it.
    #[error("{what} {name:?}: {cause}")]
    Invalid { what: PortKind, name: String, cause: SpecError },
    #[error("{what} {name:?} already exists with a different spec (ofport {ofport})")]
    NameTaken { what: PortKind, name: String, ofport: OfPort },
    #[error(
        "tunnel {name:?} duplicates tunnel {existing:?} ({key}): a redundant tunnel can never carry traffic, refused"
    )]
    DuplicateTunnel { name: String, existing: String, key: TunnelKey },
    /// `name` and `existing` as `Holder` shows them (`port "vm1"`,
    /// `binding vni 5 mac ...`).
    #[error("{name} conflicts with {existing}: both use {claim}")]
    Conflict { name: String, existing: String, claim: Claim },
    #[error("no port named {name:?}")]
    NotFound { name: String },
    #[error("{label}: {cause}")]
    BindingInvalid { label: String, cause: SpecError },
    #[error("{label}: tunnel: no tunnel named {tunnel:?}")]
    NoSuchTunnel { label: String, tunnel: String },
    #[error("{label}: tunnel: {tunnel:?} is a local port, not a tunnel")]
    NotATunnel { label: String, tunnel: String },
    /// A fixed-key tunnel carries its own VNI only; the remote would drop
    /// anything else it sent.
    #[error("{label}: vni: tunnel {tunnel:?} is fixed to VNI {tunnel_vni}; use a flow-keyed tunnel (no vni) to carry several")]
    BindingVni { label: String, tunnel: String, tunnel_vni: Vni },
    #[error("{label} is already bound behind tunnel {tunnel:?} with other settings; delete it first")]
    BindingTaken { label: String, tunnel: String },
    #[error("no binding for vni {vni} mac {mac}")]
    NoSuchBinding { vni: Vni, mac: MacAddr },
    #[error("tunnel {name:?} carries {count} binding(s) (first: vni {} mac {}); delete them first", first.0, first.1)]
    TunnelInUse { name: String, count: usize, first: (Vni, MacAddr) },
    #[error("{label}: {cause}")]
    BindingTxn { label: String, cause: TxnError },
    #[error("{label}: {cause}")]
    GroupInvalid { label: String, cause: SpecError },
    /// A member the group may not have: `field` is `ports` or `tunnels`.
    #[error("{label}: {field}: {reason}")]
    GroupMember { label: String, field: &'static str, reason: String },
    #[error("no group with vni {vni} key {key}")]
    NoSuchGroup { vni: Vni, key: u16 },
    #[error("port {name:?} is a member of {group}; take it out of the group first")]
    InGroup { name: String, group: String },
    #[error("{label}: {what}: {cause}{undo}")]
    GroupWrite { label: String, what: &'static str, cause: String, undo: String },
    #[error("{what} {name:?}: {cause}")]
    Txn { what: PortKind, name: Box<str>, cause: TxnError },
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
    #[error("stored {name} conflicts with {existing}: both use {claim}")]
    Conflict { name: String, existing: String, claim: Claim },
    #[error("loading committed bindings: {cause}")]
    LoadBindings { cause: StoreError },
    #[error("stored {label}: {cause}")]
    Binding { label: String, cause: Box<PortError> },
    #[error("loading committed groups: {cause}")]
    LoadGroups { cause: StoreError },
    #[error("stored {label}: {cause}")]
    Group { label: String, cause: Box<PortError> },
}

#[derive(Debug, Error)]
pub enum ApplyError {
    #[error("desired state names port {name:?} more than once")]
    DuplicateName { name: String },
    #[error("desired state names {label} more than once")]
    DuplicateBinding { label: String },
    #[error("desired state names {label} more than once")]
    DuplicateGroup { label: String },
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
    /// Bindings added and deleted (a changed binding is both).
    pub bindings_added: usize,
    pub bindings_deleted: usize,
    /// Groups added and deleted (a changed group is both).
    pub groups_added: usize,
    pub groups_deleted: usize,
    /// Ports (by name) and bindings (by label) that could not be brought
    /// to their desired state; the rest were applied regardless.
    pub failed: Vec<(String, PortError)>,
}

impl ApplyReport {
    pub fn changed(&self) -> bool {
        !(self.added.is_empty()
            && self.replaced.is_empty()
            && self.deleted.is_empty()
            && self.bindings_added == 0
            && self.bindings_deleted == 0
            && self.groups_added == 0
            && self.groups_deleted == 0)
    }
}

/// Who holds a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Holder {
    Port(String),
    Binding(Vni, MacAddr),
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Port(name) => write!(f, "port {name:?}"),
            Holder::Binding(vni, mac) => write!(f, "binding vni {vni} mac {mac}"),
        }
    }
}

/// What `apply` is asked to make committed: every port, and (when given)
/// every binding. Bindings left `None` are not touched.
#[derive(Debug, Clone, Copy)]
pub struct Desired<'a> {
    pub ports: &'a [PortSpec],
    pub bindings: Option<&'a [Binding]>,
    /// `None` leaves the groups as they are.
    pub groups: Option<&'a [Group]>,
    /// A local port whose interface does not exist yet is committed with
    /// its number, its interface's entries (DEVMAP, LOCAL_PORTS) left for
    /// the reconcile that follows the interface's arrival: a config file
    /// read at boot names taps that appear later. Otherwise (the API) it
    /// is refused.
    pub interfaces_may_wait: bool,
}

pub struct PortMap<D, S> {
    alloc: Allocator,
    ports: BTreeMap<String, PortRecord>,
    bindings: BTreeMap<(Vni, MacAddr), Binding>,
    /// Which port or binding holds each claim (tunnel key, ifname, MAC...),
    /// to refuse clashes such as redundant tunnels in O(log n) before they
    /// cost a number.
    claims: BTreeMap<Claim, Holder>,
    groups: BTreeMap<(Vni, u16), Group>,
    datapath: D,
    store: S,
    /// Inside an `apply` whose `Desired::interfaces_may_wait` is set.
    interfaces_may_wait: bool,
}

/// What `add_group` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupChange {
    Created,
    Unchanged,
    /// Its members or rate changed: the one map entry was replaced.
    Updated,
}

impl<D: Datapath, S: Store> PortMap<D, S> {
    /// Rebuilds the map from the store: committed ports keep their numbers
    /// across restarts. Does not touch the datapath; call `reconcile` next.
    pub fn open(datapath: D, store: S, config: AllocatorConfig) -> Result<Self, OpenError> {
        let records = store.load().map_err(|cause| OpenError::Load { cause })?;
        let bindings = store.load_bindings().map_err(|cause| OpenError::LoadBindings { cause })?;
        let mut map = PortMap {
            alloc: Allocator::new(config),
            ports: BTreeMap::new(),
            bindings: BTreeMap::new(),
            claims: BTreeMap::new(),
            groups: BTreeMap::new(),
            datapath,
            store,
            interfaces_may_wait: false,
        };
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
                    let (name, existing) = (Holder::Port(name).to_string(), existing.to_string());
                    return Err(OpenError::Conflict { name, existing, claim });
                }
            }
            if let Err(cause) = map.alloc.restore(record.ofport) {
                return Err(OpenError::Number { name, cause });
            }
            map.index(record);
        }
        for binding in bindings {
            if let Err(cause) = map.check_binding(&binding) {
                return Err(OpenError::Binding { label: binding.label(), cause: Box::new(cause) });
            }
            // Stored before bindings had to match a fixed key: kept, since
            // refusing to start would take the datapath down; said loudly.
            if let Some(PortSpec::Tunnel(t)) = map.ports.get(binding.tunnel.as_str()).map(|r| &r.spec) {
                if let Err(e) = check_binding_vni(&binding, t) {
                    tracing::warn!("stored {e}");
                }
            }
            map.index_binding(binding);
        }
        let groups = map.store.load_groups().map_err(|cause| OpenError::LoadGroups { cause })?;
        for group in groups {
            if let Err(cause) = map.resolve_group(&group) {
                return Err(OpenError::Group { label: group.label(), cause: Box::new(cause) });
            }
            map.groups.insert(group.key(), group);
        }
        Ok(map)
    }

    /// Adds a port. Everything that can be refused is refused before a
    /// number is reserved, so a refused request costs nothing however
    /// often it is repeated.
    pub fn add(&mut self, spec: &PortSpec, now: Instant) -> Result<Added, PortError> {
        self.add_with(spec, now, &mut NoEffects)
    }

    /// `add`, with what the port needs outside the maps set up inside its
    /// transaction (see `Effects`). The same port again is `Existing`;
    /// the same port with other settings no map holds is `Updated`.
    pub fn add_with(&mut self, spec: &PortSpec, now: Instant, effects: &mut dyn Effects) -> Result<Added, PortError> {
        let name = spec.name();
        if let Err(cause) = spec.validate() {
            let name = name.to_owned();
            return Err(PortError::Invalid { what: spec.kind(), name, cause });
        }
        if let Some(existing) = self.ports.get(name) {
            if existing.spec == *spec {
                return Ok(Added::Existing(existing.ofport));
            }
            if existing.spec.same_entries(spec) {
                let existing = existing.clone();
                self.run_update(&existing, spec, effects)?;
                return Ok(Added::Updated(existing.ofport));
            }
            let (name, ofport) = (name.to_owned(), existing.ofport);
            return Err(PortError::NameTaken { what: existing.spec.kind(), name, ofport });
        }
        self.check_claims_free(spec, None)?;
        let ofport = self.run_add(spec, spec.ofport_request(), now, effects).map_err(|cause| txn_error(spec, cause))?;
        tracing::debug!(port = name, %ofport, "port added");
        Ok(Added::Created(ofport))
    }

    /// Deletes a port: every map entry, its record, then its number, which
    /// enters hold-down.
    pub fn delete(&mut self, name: &str, now: Instant) -> Result<OfPort, PortError> {
        self.delete_with(name, now, &mut NoEffects)
    }

    /// `delete`, taking down the port's effects once it is gone. A tunnel
    /// that bindings use, and any port a group has, is refused.
    pub fn delete_with(&mut self, name: &str, now: Instant, effects: &mut dyn Effects) -> Result<OfPort, PortError> {
        self.check_unused(name)?;
        self.delete_record(name, now, effects)
    }

    /// The delete itself; a replace's (whose bindings stepped aside, and
    /// whose groups follow the new number) skips the checks.
    fn delete_record(&mut self, name: &str, now: Instant, effects: &mut dyn Effects) -> Result<OfPort, PortError> {
        let Some(record) = self.ports.get(name).cloned() else {
            let name = name.to_owned();
            return Err(PortError::NotFound { name });
        };
        self.txn()
            .delete(&record, now, effects)
            .inspect_err(|e| warn_if_dirty(record.spec.name(), e))
            .map_err(|cause| txn_error(&record.spec, cause))?;
        self.unindex(&record);
        tracing::debug!(port = name, ofport = %record.ofport, "port deleted");
        Ok(record.ofport)
    }

    /// Replaces the port named like `spec` with `spec`. The port keeps its
    /// number unless `spec` pins another: flows and controllers know the
    /// port by number, and a changed option is not a new port. If the new
    /// port cannot be added, the old one is put back under its number.
    /// Bindings behind a tunnel that moves to another number move with it.
    pub fn replace(&mut self, spec: &PortSpec, now: Instant) -> Result<OfPort, PortError> {
        self.replace_with(spec, now, &mut NoEffects)
    }

    pub fn replace_with(
        &mut self,
        spec: &PortSpec,
        now: Instant,
        effects: &mut dyn Effects,
    ) -> Result<OfPort, PortError> {
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
            return Err(PortError::Invalid { what: spec.kind(), name, cause });
        }
        if old.spec.same_entries(spec) {
            self.run_update(&old, spec, effects)?;
            return Ok(old.ofport);
        }
        self.check_claims_free(spec, Some(name))?;
        // A member keeps what made it one; its number may change (the
        // group's entry follows below).
        let profile = |p: &PortSpec| match p {
            PortSpec::Local(l) => (false, Some(l.vni), false, false),
            PortSpec::Tunnel(t) => (true, t.vni, t.ovn_metadata, t.remote.get().is_ipv4()),
        };
        if profile(&old.spec) != profile(spec) {
            if let Some(g) = self.groups.values().find(|g| g.ports.iter().chain(&g.tunnels).any(|m| m == name)) {
                return Err(PortError::InGroup { name: name.to_owned(), group: g.label() });
            }
        }
        let request = spec.ofport_request().unwrap_or(old.ofport.get());
        if request != old.ofport.get() {
            self.check_requested_free(spec, request)?;
        }
        // Bindings behind it step aside while it is replaced, and come
        // back behind whatever number it ends with.
        let riders: Vec<Binding> = self.bindings.values().filter(|b| b.tunnel == name).cloned().collect();
        if let PortSpec::Tunnel(t) = spec {
            for b in &riders {
                check_binding_vni(b, t)?;
            }
        }
        for b in &riders {
            self.run_delete_binding(b, old.ofport)?;
        }
        let result = self.replace_port(&old, spec, request, now, effects);
        if let Err(e) = self.sync_groups() {
            tracing::warn!(port = name, "groups could not follow the port's number: {e}");
        }
        let ofport = self.ports.get(name).map(|r| r.ofport);
        for b in &riders {
            let restored = match ofport {
                Some(tunnel) if matches!(self.ports[name].spec, PortSpec::Tunnel(_)) => self.run_add_binding(b, tunnel),
                _ => Err(PortError::NotATunnel { label: b.label(), tunnel: name.to_owned() }),
            };
            if let Err(e) = restored {
                tracing::warn!(binding = b.label(), "binding lost while its tunnel was replaced: {e}");
            }
        }
        result
    }

    fn replace_port(
        &mut self,
        old: &PortRecord,
        spec: &PortSpec,
        request: u16,
        now: Instant,
        effects: &mut dyn Effects,
    ) -> Result<OfPort, PortError> {
        let name = spec.name();
        self.delete_record(name, now, effects)?;
        let cause = match self.run_add(spec, Some(request), now, effects) {
            Ok(ofport) => return Ok(ofport),
            Err(cause) => txn_error(spec, cause),
        };
        // The old number was just released into hold-down; an explicit
        // request overrides that, so the old port gets its number back.
        match self.run_add(&old.spec, Some(old.ofport.get()), now, effects) {
            Ok(_) => Err(cause),
            Err(restore) => Err(PortError::ReplaceLost { name: name.to_owned(), cause: Box::new(cause), restore }),
        }
    }

    /// Adds a remote binding behind its tunnel. Refused, before anything is
    /// written, when a local port or another binding holds its MAC or IP.
    pub fn add_binding(&mut self, binding: &Binding) -> Result<Added, PortError> {
        if let Some(old) = self.bindings.get(&binding.key()) {
            let tunnel = self.tunnel_ofport(&binding.label(), old.tunnel.as_str())?;
            if old == binding {
                return Ok(Added::Existing(tunnel));
            }
            return Err(PortError::BindingTaken { label: binding.label(), tunnel: old.tunnel.to_string() });
        }
        let tunnel = self.check_binding(binding)?;
        if let Some(PortSpec::Tunnel(t)) = self.ports.get(binding.tunnel.as_str()).map(|r| &r.spec) {
            check_binding_vni(binding, t)?;
        }
        self.run_add_binding(binding, tunnel)?;
        tracing::debug!(binding = binding.label(), %tunnel, "binding added");
        Ok(Added::Created(tunnel))
    }

    /// Adds or changes a multicast group: one map entry, written before its
    /// record; a failed write puts the old entry (or none) back. Members
    /// must be committed, in the group's VNI, and tunnels of a kind the
    /// flood program can encapsulate for.
    pub fn add_group(&mut self, group: &Group) -> Result<GroupChange, PortError> {
        let label = group.label();
        group.validate().map_err(|cause| PortError::GroupInvalid { label: label.clone(), cause })?;
        let entry = self.resolve_group(group)?;
        let old = self.groups.get(&group.key()).cloned();
        if old.as_ref() == Some(group) {
            return Ok(GroupChange::Unchanged);
        }
        let old_entry = old.as_ref().map(|g| self.resolve_group(g)).transpose()?;
        self.write_group(group, Some(&entry), old_entry.as_ref(), |store| store.put_group(group))?;
        self.groups.insert(group.key(), group.clone());
        tracing::debug!(group = label, "group written");
        Ok(if old.is_some() { GroupChange::Updated } else { GroupChange::Created })
    }

    /// Deletes a group: its entry, then its record.
    pub fn delete_group(&mut self, vni: Vni, key: u16) -> Result<Group, PortError> {
        let group = self.groups.get(&(vni, key)).cloned().ok_or(PortError::NoSuchGroup { vni, key })?;
        let old = self.resolve_group(&group)?;
        self.write_group(&group, None, Some(&old), |store| store.delete_group(vni, key))?;
        self.groups.remove(&(vni, key));
        Ok(group)
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    /// The map entry first, then the record; a failed record write puts
    /// `old` back in the map.
    fn write_group(
        &mut self,
        group: &Group,
        new: Option<&GroupEntry>,
        old: Option<&GroupEntry>,
        record: impl FnOnce(&mut S) -> Result<(), StoreError>,
    ) -> Result<(), PortError> {
        let (vni, key) = (group.vni.get(), group.key);
        let fail =
            |what, cause: String, undo: String| PortError::GroupWrite { label: group.label(), what, cause, undo };
        match self.datapath.set_group(vni, key, new) {
            Ok(()) | Err(MapError::NotFound) => {}
            Err(e) => return Err(fail("map", e.to_string(), String::new())),
        }
        if let Err(cause) = record(&mut self.store) {
            let undo = match self.datapath.set_group(vni, key, old) {
                Ok(()) | Err(MapError::NotFound) => String::new(),
                Err(e) => format!("; putting the old entry back failed too: {e}"),
            };
            return Err(fail("store", cause.to_string(), undo));
        }
        Ok(())
    }

    /// The group's members by number, or why one cannot be a member.
    fn resolve_group(&self, g: &Group) -> Result<GroupEntry, PortError> {
        let label = g.label();
        let refuse = |field, reason: String| PortError::GroupMember { label: label.clone(), field, reason };
        let mut entry = GroupEntry { rate_pps: g.rate_pps, ..Default::default() };
        for name in &g.ports {
            let r = self
                .ports
                .get(name.as_str())
                .ok_or_else(|| refuse("ports", format!("no port named {:?}", name.as_str())))?;
            match &r.spec {
                PortSpec::Local(p) if p.vni == g.vni => entry.local.push(r.ofport.get()),
                PortSpec::Local(p) => {
                    return Err(refuse("ports", format!("port {:?} is in VNI {}, not {}", name.as_str(), p.vni, g.vni)))
                }
                PortSpec::Tunnel(_) => {
                    return Err(refuse("ports", format!("{:?} is a tunnel; list it under tunnels", name.as_str())))
                }
            }
        }
        for name in &g.tunnels {
            let r = self
                .ports
                .get(name.as_str())
                .ok_or_else(|| refuse("tunnels", format!("no tunnel named {:?}", name.as_str())))?;
            let PortSpec::Tunnel(t) = &r.spec else {
                return Err(refuse("tunnels", format!("{:?} is a local port; list it under ports", name.as_str())));
            };
            if let Some(v) = t.vni.filter(|v| *v != g.vni) {
                return Err(refuse("tunnels", format!("tunnel {:?} is fixed to VNI {v}", name.as_str())));
            }
            // What xgw_flood encapsulates for (one outer header size).
            if !t.ovn_metadata || !t.remote.get().is_ipv4() {
                let reason = format!("tunnel {:?}: floods go only to IPv4 tunnels with ovn_metadata", name.as_str());
                return Err(refuse("tunnels", reason));
            }
            entry.tunnels.push(r.ofport.get());
        }
        Ok(entry)
    }

    /// Rewrites every group entry that differs from its members' current
    /// numbers (after a port moved to another number) and removes entries
    /// no group has. Returns how many entries it changed.
    pub fn sync_groups(&mut self) -> Result<usize, MapError> {
        let present = self.datapath.groups()?;
        let mut changed = 0;
        let mut wanted = BTreeMap::new();
        for g in self.groups.values() {
            if let Ok(entry) = self.resolve_group(g) {
                wanted.insert((g.vni.get(), g.key), entry);
            }
        }
        for (k, entry) in &wanted {
            if present.get(k) != Some(entry) {
                self.datapath.set_group(k.0, k.1, Some(entry))?;
                changed += 1;
            }
        }
        for k in present.keys().filter(|k| !wanted.contains_key(k)) {
            match self.datapath.set_group(k.0, k.1, None) {
                Ok(()) | Err(MapError::NotFound) => changed += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(changed)
    }

    /// Deletes a remote binding: its entries, then its record.
    pub fn delete_binding(&mut self, vni: Vni, mac: MacAddr) -> Result<Binding, PortError> {
        let binding = self.bindings.get(&(vni, mac)).cloned().ok_or(PortError::NoSuchBinding { vni, mac })?;
        let tunnel = self.tunnel_ofport(&binding.label(), binding.tunnel.as_str())?;
        self.run_delete_binding(&binding, tunnel)?;
        Ok(binding)
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
        self.apply(
            Desired { ports: desired, bindings: None, groups: None, interfaces_may_wait: false },
            now,
            &mut NoEffects,
        )
    }

    /// `apply_desired` for ports and bindings, with effects. Bindings that
    /// go or change go first (they may hold a tunnel that goes), new ones
    /// last (they may need a tunnel that comes).
    pub fn apply(
        &mut self,
        desired: Desired<'_>,
        now: Instant,
        effects: &mut dyn Effects,
    ) -> Result<ApplyReport, ApplyError> {
        self.store.defer_sync();
        self.interfaces_may_wait = desired.interfaces_may_wait;
        let report = self.apply_deferred(desired, now, effects);
        self.interfaces_may_wait = false;
        let synced = self.store.sync();
        let report = report?;
        match synced {
            Ok(()) => Ok(report),
            Err(cause) => Err(ApplyError::Sync { cause, report: Box::new(report) }),
        }
    }

    fn apply_deferred(
        &mut self,
        desired: Desired<'_>,
        now: Instant,
        effects: &mut dyn Effects,
    ) -> Result<ApplyReport, ApplyError> {
        let mut wanted: BTreeMap<&str, &PortSpec> = BTreeMap::new();
        for spec in desired.ports {
            if wanted.insert(spec.name(), spec).is_some() {
                let name = spec.name().to_owned();
                return Err(ApplyError::DuplicateName { name });
            }
        }
        let mut wanted_bindings: BTreeMap<(Vni, MacAddr), &Binding> = BTreeMap::new();
        for b in desired.bindings.unwrap_or_default() {
            if wanted_bindings.insert(b.key(), b).is_some() {
                return Err(ApplyError::DuplicateBinding { label: b.label() });
            }
        }
        let mut report = ApplyReport::default();
        // Groups that go or change go first (they hold member ports that
        // may go), new ones last (they need their members): a changed
        // group floods nothing for the moment between.
        let mut wanted_groups: BTreeMap<(Vni, u16), &Group> = BTreeMap::new();
        for g in desired.groups.unwrap_or_default() {
            if wanted_groups.insert(g.key(), g).is_some() {
                return Err(ApplyError::DuplicateGroup { label: g.label() });
            }
        }
        if desired.groups.is_some() {
            let stale: Vec<Group> = self
                .groups
                .values()
                .filter(|g| wanted_groups.get(&g.key()).is_none_or(|w| *w != *g))
                .cloned()
                .collect();
            for g in stale {
                match self.delete_group(g.vni, g.key) {
                    Ok(_) => report.groups_deleted += 1,
                    Err(e) => report.failed.push((g.label(), e)),
                }
            }
        }
        if desired.bindings.is_some() {
            let stale: Vec<Binding> = self
                .bindings
                .values()
                .filter(|b| wanted_bindings.get(&b.key()).is_none_or(|w| *w != *b))
                .cloned()
                .collect();
            for b in stale {
                match self.delete_binding(b.vni, b.mac) {
                    Ok(_) => report.bindings_deleted += 1,
                    Err(e) => report.failed.push((b.label(), e)),
                }
            }
        }
        let gone: Vec<String> = self.ports.keys().filter(|name| !wanted.contains_key(name.as_str())).cloned().collect();
        let (mut changed, mut missing) = (Vec::new(), Vec::new());
        for spec in desired.ports {
            match self.ports.get(spec.name()) {
                Some(rec) if rec.spec == *spec => report.unchanged += 1,
                Some(_) => changed.push(spec),
                None => missing.push(spec),
            }
        }
        // Deletions first: they free the names, tunnel keys and pinned
        // numbers that replacements and additions may need.
        for name in gone {
            match self.delete_with(&name, now, effects) {
                Ok(ofport) => report.deleted.push((name, ofport)),
                Err(e) => report.failed.push((name, e)),
            }
        }
        for spec in changed {
            let name = spec.name().to_owned();
            match self.replace_with(spec, now, effects) {
                Ok(ofport) => report.replaced.push((name, ofport)),
                Err(e) => report.failed.push((name, e)),
            }
        }
        for spec in missing {
            let name = spec.name().to_owned();
            match self.add_with(spec, now, effects) {
                Ok(added) => report.added.push((name, added.ofport())),
                Err(e) => report.failed.push((name, e)),
            }
        }
        for b in wanted_bindings.values() {
            if self.bindings.get(&b.key()) == Some(*b) {
                continue;
            }
            match self.add_binding(b) {
                Ok(_) => report.bindings_added += 1,
                Err(e) => report.failed.push((b.label(), e)),
            }
        }
        for g in wanted_groups.values() {
            if self.groups.get(&g.key()) == Some(*g) {
                continue;
            }
            match self.add_group(g) {
                Ok(_) => report.groups_added += 1,
                Err(e) => report.failed.push((g.label(), e)),
            }
        }
        Ok(report)
    }

    /// Repairs the datapath to match the committed ports and bindings, and
    /// logs what it repaired. Numbers stranded by failed undos are freed
    /// once a reconcile has run without failures, since only then is it
    /// certain no entry still carries them.
    pub fn reconcile(&mut self) -> ReconcileReport {
        let (report, groups, freed) = self.repair();
        match groups {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "reconcile repaired the group entries"),
            Err(e) => tracing::warn!("reconcile could not repair the group entries: {e}"),
        }
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
        if !freed.is_empty() {
            tracing::info!(?freed, "stranded OpenFlow port numbers freed");
        }
        report
    }

    /// `reconcile` without a word: for a trial copy built on empty maps
    /// (a reload's dry run), where everything is "recreated" and none of
    /// it is news to an operator.
    pub fn reconcile_quietly(&mut self) -> ReconcileReport {
        self.repair().0
    }

    fn repair(&mut self) -> (ReconcileReport, Result<usize, MapError>, Vec<OfPort>) {
        let bindings: Vec<(&Binding, OfPort)> =
            self.bindings.values().filter_map(|b| Some((b, self.ports.get(b.tunnel.as_str())?.ofport))).collect();
        let report = reconcile(&mut self.datapath, self.ports.values(), bindings);
        let groups = self.sync_groups();
        let freed = if report.failed.is_empty() { self.alloc.free_stranded() } else { Vec::new() };
        (report, groups, freed)
    }

    /// The next hop of the tunnels to `remote`, into their entries (the
    /// datapath keeps it for tunnels added later).
    pub fn set_nexthop(&mut self, remote: IpAddr, mac: MacAddr) -> Result<Vec<OfPort>, MapError> {
        let remote = remote.to_canonical();
        let tunnels: Vec<OfPort> = self
            .ports
            .values()
            .filter(|r| matches!(&r.spec, PortSpec::Tunnel(t) if t.remote.get() == remote))
            .map(|r| r.ofport)
            .collect();
        self.datapath.set_nexthop(remote, mac, &tunnels)
    }

    pub fn get(&self, name: &str) -> Option<&PortRecord> {
        self.ports.get(name)
    }

    /// Committed ports, by name.
    pub fn ports(&self) -> impl Iterator<Item = &PortRecord> {
        self.ports.values()
    }

    /// Committed bindings, by VNI and MAC.
    pub fn bindings(&self) -> impl Iterator<Item = &Binding> {
        self.bindings.values()
    }

    pub fn binding(&self, vni: Vni, mac: MacAddr) -> Option<&Binding> {
        self.bindings.get(&(vni, mac))
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

    /// A transaction over this map's allocator, datapath and store.
    fn txn(&mut self) -> Txn<'_, D, S> {
        Txn {
            alloc: &mut self.alloc,
            datapath: &mut self.datapath,
            store: &mut self.store,
            interfaces_may_wait: self.interfaces_may_wait,
        }
    }

    /// Runs an add transaction and indexes the result.
    fn run_add(
        &mut self,
        spec: &PortSpec,
        request: Option<u16>,
        now: Instant,
        effects: &mut dyn Effects,
    ) -> Result<OfPort, TxnError> {
        let ofport = self.txn().add(spec, request, now, effects).inspect_err(|e| warn_if_dirty(spec.name(), e))?;
        self.index(PortRecord { ofport, spec: spec.clone() });
        Ok(ofport)
    }

    fn run_update(&mut self, old: &PortRecord, spec: &PortSpec, effects: &mut dyn Effects) -> Result<(), PortError> {
        self.txn().update(old, spec, effects).map_err(|cause| txn_error(spec, cause))?;
        self.ports.insert(spec.name().to_owned(), PortRecord { ofport: old.ofport, spec: spec.clone() });
        Ok(())
    }

    fn run_add_binding(&mut self, binding: &Binding, tunnel: OfPort) -> Result<(), PortError> {
        self.txn()
            .add_binding(binding, tunnel)
            .inspect_err(|e| warn_if_dirty(&binding.label(), e))
            .map_err(|cause| PortError::BindingTxn { label: binding.label(), cause })?;
        self.index_binding(binding.clone());
        Ok(())
    }

    fn run_delete_binding(&mut self, binding: &Binding, tunnel: OfPort) -> Result<(), PortError> {
        self.txn()
            .delete_binding(binding, tunnel)
            .inspect_err(|e| warn_if_dirty(&binding.label(), e))
            .map_err(|cause| PortError::BindingTxn { label: binding.label(), cause })?;
        for claim in binding.claims() {
            self.claims.remove(&claim);
        }
        self.bindings.remove(&binding.key());
        Ok(())
    }

    /// The number of tunnel `tunnel`, for a binding labelled `label`.
    fn tunnel_ofport(&self, label: &str, tunnel: &str) -> Result<OfPort, PortError> {
        match self.ports.get(tunnel) {
            Some(r) if matches!(r.spec, PortSpec::Tunnel(_)) => Ok(r.ofport),
            Some(_) => Err(PortError::NotATunnel { label: label.to_owned(), tunnel: tunnel.to_owned() }),
            None => Err(PortError::NoSuchTunnel { label: label.to_owned(), tunnel: tunnel.to_owned() }),
        }
    }

    /// Everything that can refuse a new binding, before anything is
    /// written: its fields, its tunnel, its claims.
    fn check_binding(&self, binding: &Binding) -> Result<OfPort, PortError> {
        let label = binding.label();
        binding.validate().map_err(|cause| PortError::BindingInvalid { label: label.clone(), cause })?;
        let tunnel = self.tunnel_ofport(&label, binding.tunnel.as_str())?;
        for claim in binding.claims() {
            if let Some(owner) = self.claims.get(&claim) {
                let existing = owner.to_string();
                return Err(PortError::Conflict { name: label, existing, claim });
            }
        }
        Ok(tunnel)
    }

    /// Refuses deleting a tunnel that bindings still use, or any port a
    /// group has.
    fn check_unused(&self, name: &str) -> Result<(), PortError> {
        if let Some(g) = self.groups.values().find(|g| g.ports.iter().chain(&g.tunnels).any(|m| m == name)) {
            return Err(PortError::InGroup { name: name.to_owned(), group: g.label() });
        }
        let mut users = self.bindings.values().filter(|b| b.tunnel == name);
        if let Some(first) = users.next() {
            let count = 1 + users.count();
            return Err(PortError::TunnelInUse { name: name.to_owned(), count, first: first.key() });
        }
        Ok(())
    }

    /// Refuses a port holding a claim another port (other than `except`)
    /// or a binding holds.
    fn check_claims_free(&self, spec: &PortSpec, except: Option<&str>) -> Result<(), PortError> {
        for claim in spec.claims() {
            let Some(owner) = self.claims.get(&claim) else {
                continue;
            };
            if let (Holder::Port(owner), Some(except)) = (owner, except) {
                if owner == except {
                    continue;
                }
            }
            let name = spec.name().to_owned();
            return Err(match (claim, owner) {
                (Claim::Tunnel(key), Holder::Port(existing)) => {
                    PortError::DuplicateTunnel { name, existing: existing.clone(), key }
                }
                (claim, owner) => {
                    PortError::Conflict { name: Holder::Port(name).to_string(), existing: owner.to_string(), claim }
                }
            });
        }
        Ok(())
    }

    /// Refuses a pinned number that is taken, before anything is undone
    /// for a replacement.
    fn check_requested_free(&self, spec: &PortSpec, request: u16) -> Result<(), PortError> {
        let cause = match OfPort::new(request) {
            Err(_) => AllocError::RequestedOutOfRange { value: request },
            Ok(port) => match self.alloc.state(port) {
                PortState::Free | PortState::HeldDown { .. } => return Ok(()),
                PortState::Reserved | PortState::Committed | PortState::Stranded => AllocError::RequestedInUse { port },
            },
        };
        Err(PortError::Txn { what: spec.kind(), name: spec.name().into(), cause: TxnError::Number { cause } })
    }

    fn index(&mut self, record: PortRecord) {
        for claim in record.spec.claims() {
            self.claims.insert(claim, Holder::Port(record.name().to_owned()));
        }
        self.ports.insert(record.name().to_owned(), record);
    }

    fn index_binding(&mut self, binding: Binding) {
        for claim in binding.claims() {
            self.claims.insert(claim, Holder::Binding(binding.vni, binding.mac));
        }
        self.bindings.insert(binding.key(), binding);
    }

    fn unindex(&mut self, record: &PortRecord) {
        for claim in record.spec.claims() {
            self.claims.remove(&claim);
        }
        self.ports.remove(record.name());
    }
}

fn txn_error(spec: &PortSpec, cause: TxnError) -> PortError {
    PortError::Txn { what: spec.kind(), name: spec.name().into(), cause }
}

/// A clean failure is the caller's to report. A failed undo leaves the
/// datapath out of line with the store until a reconcile, so it is logged
/// here, whoever the caller is and whatever it does with the error.
fn warn_if_dirty(name: &str, error: &TxnError) {
    if error.undo().is_some_and(|u| !u.is_clean()) {
        tracing::warn!(port = name, %error, "transaction failed and its undo failed");
    }
}

/// A binding behind a fixed-key tunnel must be in the tunnel's VNI.
fn check_binding_vni(binding: &Binding, tunnel: &TunnelPort) -> Result<(), PortError> {
    match tunnel.vni {
        Some(tunnel_vni) if tunnel_vni != binding.vni => {
            Err(PortError::BindingVni { label: binding.label(), tunnel: tunnel.name.to_string(), tunnel_vni })
        }
        _ => Ok(()),
    }
}
