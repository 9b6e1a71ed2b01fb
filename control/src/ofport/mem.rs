//! In-memory `Datapath` and `Store` with failure injection: the doubles the
//! transaction tests, property tests and benchmarks run against.

use std::collections::BTreeMap;

use std::net::IpAddr;

use super::maps::{Datapath, EntryKey, GroupEntry, MapEntry, MapError, Step};
use super::number::OfPort;
use super::spec::{Binding, Group, MacAddr, Object, Vni};
use super::store::{PortRecord, Store, StoreError};

/// Which datapath operation a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    Insert,
    Remove,
    List,
}

/// A failure to inject into `MemDatapath`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub step: Step,
    pub op: FaultOp,
    /// Only inserts for this port name or binding label (`Object::name`;
    /// inserts carry the object, removes and lists do not, so for them
    /// this must be `None`).
    pub port_name: Option<String>,
    /// How many matching operations fail; `None` is forever.
    pub remaining: Option<u32>,
    pub error: MapError,
}

impl Fault {
    /// The next matching operation on `step` fails with `error`.
    pub fn once(step: Step, op: FaultOp, error: MapError) -> Self {
        Fault { step, op, port_name: None, remaining: Some(1), error }
    }
}

/// BPF maps as ordered maps from key to owning port number, with
/// `max_entries`. Values beyond the owner are not modelled, so
/// `is_current` keeps the trait's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemDatapath {
    maps: BTreeMap<Step, BTreeMap<EntryKey, Option<OfPort>>>,
    max_entries: BTreeMap<Step, u32>,
    faults: Vec<Fault>,
    /// `set_nexthop`'s MACs by remote.
    pub nexthops: BTreeMap<IpAddr, MacAddr>,
    pub groups: BTreeMap<(u32, u16), GroupEntry>,
    /// The next `n` group writes fail.
    pub failing_group_writes: u32,
}

impl MemDatapath {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_max_entries(&mut self, step: Step, max_entries: u32) {
        self.max_entries.insert(step, max_entries);
    }

    pub fn inject(&mut self, fault: Fault) {
        self.faults.push(fault);
    }

    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    /// The contents of `step`'s map, ordered by key.
    pub fn entries(&self, step: Step) -> Vec<MapEntry> {
        self.maps
            .get(&step)
            .into_iter()
            .flatten()
            .map(|(key, ofport)| MapEntry { key: *key, ofport: *ofport })
            .collect()
    }

    /// Writes an entry behind the port map's back, as a crashed controller
    /// or a stray tool would; for reconciliation tests.
    pub fn put_raw(&mut self, step: Step, entry: MapEntry) {
        self.maps.entry(step).or_default().insert(entry.key, entry.ofport);
    }

    /// Deletes an entry behind the port map's back.
    pub fn delete_raw(&mut self, step: Step, key: &EntryKey) {
        if let Some(map) = self.maps.get_mut(&step) {
            map.remove(key);
        }
    }

    fn take_fault(&mut self, step: Step, op: FaultOp, name: Option<&str>) -> Result<(), MapError> {
        let hit = self.faults.iter_mut().position(|f| {
            f.step == step
                && f.op == op
                && f.remaining != Some(0)
                && f.port_name.as_deref().is_none_or(|n| Some(n) == name)
        });
        let Some(i) = hit else { return Ok(()) };
        let fault = &mut self.faults[i];
        let error = fault.error.clone();
        if let Some(n) = &mut fault.remaining {
            *n -= 1;
            if *n == 0 {
                self.faults.remove(i);
            }
        }
        Err(error)
    }
}

impl Datapath for MemDatapath {
    fn insert(&mut self, step: Step, object: Object<'_>, ofport: OfPort) -> Result<(), MapError> {
        let name = object.name();
        self.take_fault(step, FaultOp::Insert, Some(&name))?;
        let entry = MapEntry::for_step(step, object, ofport)
            .ok_or_else(|| MapError::Other(format!("{name} has no {step} entry")))?;
        // FDB and NEIGH are one map each, whichever step writes them.
        if let Some(twin) = twin(step) {
            if self.maps.get(&twin).is_some_and(|m| m.contains_key(&entry.key)) {
                return Err(MapError::Exists);
            }
        }
        let max = self.max_entries.get(&step).copied();
        let map = self.maps.entry(step).or_default();
        if map.contains_key(&entry.key) {
            return Err(MapError::Exists);
        }
        if let Some(max_entries) = max {
            if map.len() >= max_entries as usize {
                return Err(MapError::Full { max_entries });
            }
        }
        map.insert(entry.key, entry.ofport);
        Ok(())
    }

    fn remove(&mut self, step: Step, entry: &MapEntry) -> Result<(), MapError> {
        self.take_fault(step, FaultOp::Remove, None)?;
        match self.maps.get_mut(&step).and_then(|m| m.remove(&entry.key)) {
            Some(_) => Ok(()),
            None => Err(MapError::NotFound),
        }
    }

    fn list(&self, step: Step) -> Result<Vec<MapEntry>, MapError> {
        // `list` takes `&self`, so list faults are checked without being
        // consumed: they last until `clear_faults`.
        let fault = self.faults.iter().find(|f| f.step == step && f.op == FaultOp::List);
        if let Some(f) = fault {
            return Err(f.error.clone());
        }
        Ok(self.entries(step))
    }

    fn set_nexthop(&mut self, remote: IpAddr, mac: MacAddr, tunnels: &[OfPort]) -> Result<Vec<OfPort>, MapError> {
        let changed = self.nexthops.insert(remote, mac) != Some(mac);
        Ok(if changed { tunnels.to_vec() } else { Vec::new() })
    }

    fn set_group(&mut self, vni: u32, key: u16, entry: Option<&GroupEntry>) -> Result<(), MapError> {
        if self.failing_group_writes > 0 {
            self.failing_group_writes -= 1;
            return Err(MapError::Other("injected".into()));
        }
        match entry {
            Some(e) => self.groups.insert((vni, key), e.clone()),
            None => self.groups.remove(&(vni, key)),
        };
        Ok(())
    }

    fn groups(&self) -> Result<BTreeMap<(u32, u16), GroupEntry>, MapError> {
        Ok(self.groups.clone())
    }
}

/// The other step that writes the same BPF map.
fn twin(step: Step) -> Option<Step> {
    match step {
        Step::Fdb => Some(Step::RemoteFdb),
        Step::RemoteFdb => Some(Step::Fdb),
        Step::Neigh => Some(Step::RemoteNeigh),
        Step::RemoteNeigh => Some(Step::Neigh),
        _ => None,
    }
}

/// Records in a `BTreeMap`; writes can be made to fail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemStore {
    records: BTreeMap<String, PortRecord>,
    bindings: BTreeMap<(Vni, MacAddr), Binding>,
    groups: BTreeMap<(Vni, u16), Group>,
    failing_writes: u32,
    writes: u64,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next `n` writes (put or delete) fail with `StoreError::Injected`
    /// and change nothing.
    pub fn fail_next_writes(&mut self, n: u32) {
        self.failing_writes = n;
    }

    pub fn records(&self) -> impl Iterator<Item = &PortRecord> {
        self.records.values()
    }

    pub fn bindings(&self) -> impl Iterator<Item = &Binding> {
        self.bindings.values()
    }

    /// Writes that succeeded (each one an fsync on a real store).
    pub fn writes(&self) -> u64 {
        self.writes
    }

    fn take_fault(&mut self) -> Result<(), StoreError> {
        self.writes += 1;
        if self.failing_writes > 0 {
            self.writes -= 1;
            self.failing_writes -= 1;
            return Err(StoreError::Injected);
        }
        Ok(())
    }
}

impl Store for MemStore {
    fn load(&self) -> Result<Vec<PortRecord>, StoreError> {
        Ok(self.records.values().cloned().collect())
    }

    fn put(&mut self, record: &PortRecord) -> Result<(), StoreError> {
        self.take_fault()?;
        self.records.insert(record.name().to_owned(), record.clone());
        Ok(())
    }

    fn delete(&mut self, name: &str) -> Result<(), StoreError> {
        self.take_fault()?;
        self.records.remove(name);
        Ok(())
    }

    fn load_bindings(&self) -> Result<Vec<Binding>, StoreError> {
        Ok(self.bindings.values().cloned().collect())
    }

    fn put_binding(&mut self, binding: &Binding) -> Result<(), StoreError> {
        self.take_fault()?;
        self.bindings.insert(binding.key(), binding.clone());
        Ok(())
    }

    fn delete_binding(&mut self, vni: Vni, mac: MacAddr) -> Result<(), StoreError> {
        self.take_fault()?;
        self.bindings.remove(&(vni, mac));
        Ok(())
    }

    fn load_groups(&self) -> Result<Vec<Group>, StoreError> {
        Ok(self.groups.values().cloned().collect())
    }

    fn put_group(&mut self, group: &Group) -> Result<(), StoreError> {
        self.take_fault()?;
        self.groups.insert(group.key(), group.clone());
        Ok(())
    }

    fn delete_group(&mut self, vni: Vni, key: u16) -> Result<(), StoreError> {
        self.take_fault()?;
        self.groups.remove(&(vni, key));
        Ok(())
    }
}
