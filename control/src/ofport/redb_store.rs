//! `Store` on redb: the daemon's one store, `xgw.redb` in the state
//! directory. One file, so that one write transaction can carry a whole
//! change: committed ports, bindings and groups (the port map's), and the daemon's
//! settings beside them (BFD timers, single-hop peers, which entries the
//! config file owns) as JSON of their domain types, under a schema version.
//!
//! A state directory of the earlier two-file layout (`ofports.redb` for
//! ports, `daemon.redb` for the rest, schema 1) is migrated on the first
//! open: the new file is built aside and renamed into place, then the old
//! files are renamed to `*.pre-v2` (kept, never read again).

use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};

use super::spec::{Binding, Group, MacAddr, PortSpec, Vni};
use super::store::{PortRecord, Store, StoreError};

/// The layout this build writes. 1 was the two-file layout.
pub const SCHEMA_VERSION: u64 = 2;

const SCHEMA: TableDefinition<&str, u64> = TableDefinition::new("schema");
/// Port name -> JSON `PortRecord`.
const PORTS: TableDefinition<&str, &str> = TableDefinition::new("ofports_v1");
/// `binding_key` -> JSON `Binding`.
const BINDINGS: TableDefinition<&str, &str> = TableDefinition::new("bindings_v1");
/// `group_key` -> JSON `Group`. Added within schema 2: a file without the
/// table has no groups.
const GROUPS: TableDefinition<&str, &str> = TableDefinition::new("groups_v1");

pub fn group_key(vni: Vni, key: u16) -> String {
    format!("{}/{key}", vni.get())
}
/// The daemon's settings: key -> JSON.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta_v1");

/// The schema-1 files and what of them moves.
const OLD_PORTS_FILE: &str = "ofports.redb";
const OLD_DAEMON_FILE: &str = "daemon.redb";
/// Schema 1 kept tunnels' own BFD timers beside their records; now they
/// are part of the record (`TunnelPort::bfd_timers`).
const OLD_META_TUNNEL_BFD: &str = "tunnel_bfd";

pub fn binding_key(vni: Vni, mac: MacAddr) -> String {
    format!("{vni}/{mac}")
}

/// A whole store as one JSON document: a backup that `import` restores.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Export {
    /// The schema version, under a name that says what the file is.
    pub xgw_store: u64,
    pub ports: Vec<PortRecord>,
    pub bindings: Vec<Binding>,
    pub groups: Vec<Group>,
    /// The daemon's settings (config ownership, BFD timers and peers).
    #[serde(default)]
    pub meta: std::collections::BTreeMap<String, serde_json::Value>,
}

pub struct RedbStore {
    /// Dropped by hand (`Drop`): closing a damaged file can panic too.
    db: std::mem::ManuallyDrop<Database>,
    path: PathBuf,
    /// Inside `defer_sync` .. `sync`: commit without fsync.
    deferred: bool,
    /// A non-durable commit happened since the last durable one.
    dirty: bool,
}

impl RedbStore {
    pub const FILE_NAME: &'static str = "xgw.redb";

    /// Opens (creating if needed, migrating a schema-1 directory) the
    /// store of `state_dir`, and reads it whole: a damaged file is an error
    /// naming it now, not a surprise later. redb panics on some damage
    /// (flipped bytes in a page it trusts); that is caught and reported as
    /// the damage it is.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let path = state_dir.join(Self::FILE_NAME);
        unpanic(&path, "open", || {
            let store = Self::open_unchecked(state_dir)?;
            // A record that does not decode names its key; the operator
            // needs the file too.
            let damaged = |e: StoreError| match e {
                StoreError::Codec { .. } | StoreError::KeyMismatch { .. } => {
                    StoreError::Invalid { path: path.clone(), what: format!("damaged: {e}") }
                }
                e => e,
            };
            store.load().map_err(damaged)?;
            store.load_bindings().map_err(damaged)?;
            store.load_groups().map_err(damaged)?;
            Ok(store)
        })
    }

    fn open_unchecked(state_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|cause| StoreError::Io { path: state_dir.to_owned(), cause })?;
        let path = state_dir.join(Self::FILE_NAME);
        if !path.exists() && (state_dir.join(OLD_PORTS_FILE).exists() || state_dir.join(OLD_DAEMON_FILE).exists()) {
            migrate_v1(state_dir, &path)?;
        }
        retire_v1(state_dir);
        let db = Database::create(&path).map_err(|e| db_err("open", &path, e))?;
        let mut store = RedbStore { db: std::mem::ManuallyDrop::new(db), path, deferred: false, dirty: false };
        let version = store.schema_version()?;
        match version {
            None => store.write("create tables", |t| {
                t.schema.insert("version", SCHEMA_VERSION)?;
                Ok(())
            })?,
            Some(SCHEMA_VERSION) => {}
            Some(v) => {
                return Err(StoreError::Invalid {
                    path: store.path.clone(),
                    what: format!(
                        "schema version {v}; this xgw reads version {SCHEMA_VERSION} (a newer xgw wrote it?)"
                    ),
                })
            }
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn schema_version(&self) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err("read schema", e))?;
        let table = match txn.open_table(SCHEMA) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.err("read schema", e)),
        };
        let v = table.get("version").map_err(|e| self.err("read schema", e))?;
        Ok(v.map(|v| v.value()))
    }

    /// A setting of the daemon's (`T::default()` if never written).
    pub fn meta<T: DeserializeOwned + Default>(&self, key: &str) -> Result<T, StoreError> {
        let op = "load";
        let txn = self.db.begin_read().map_err(|e| self.err(op, e))?;
        let table = txn.open_table(META).map_err(|e| self.err(op, e))?;
        let Some(v) = table.get(key).map_err(|e| self.err(op, e))? else { return Ok(T::default()) };
        serde_json::from_str(v.value()).map_err(|cause| StoreError::Codec { key: key.to_owned(), cause })
    }

    /// Writes a setting of the daemon's, in its own write transaction.
    pub fn put_meta<T: Serialize>(&mut self, key: &str, value: &T) -> Result<(), StoreError> {
        let json = encode(key, value)?;
        self.write("put", |t| {
            t.meta.insert(key, json.as_str())?;
            Ok(())
        })
    }

    /// Every setting, as stored (key -> JSON), for an export.
    pub fn meta_all(&self) -> Result<std::collections::BTreeMap<String, serde_json::Value>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err("load", e))?;
        let table = txn.open_table(META).map_err(|e| self.err("load", e))?;
        let mut out = std::collections::BTreeMap::new();
        for row in table.iter().map_err(|e| self.err("load", e))? {
            let (key, value) = row.map_err(|e| self.err("load", e))?;
            out.insert(key.value().to_owned(), decode(key.value(), value.value())?);
        }
        Ok(out)
    }

    /// The whole store as one document (`xgw store export`).
    pub fn export(&self) -> Result<Export, StoreError> {
        Ok(Export {
            xgw_store: SCHEMA_VERSION,
            ports: self.load()?,
            bindings: self.load_bindings()?,
            groups: self.load_groups()?,
            meta: self.meta_all()?,
        })
    }

    /// Writes `export` in one transaction (`xgw store import`, `rebuild`).
    pub fn import(&mut self, export: &Export) -> Result<(), StoreError> {
        if export.xgw_store != SCHEMA_VERSION {
            let what = format!("xgw_store: schema version {}, this xgw reads {SCHEMA_VERSION}", export.xgw_store);
            return Err(StoreError::Invalid { path: self.path.clone(), what });
        }
        let mut rows = Vec::new();
        for r in &export.ports {
            rows.push((0, r.name().to_owned(), encode(r.name(), r)?));
        }
        for b in &export.bindings {
            rows.push((1, binding_key(b.vni, b.mac), encode(&b.label(), b)?));
        }
        for g in &export.groups {
            rows.push((2, group_key(g.vni, g.key), encode(&g.label(), g)?));
        }
        for (k, v) in &export.meta {
            rows.push((3, k.clone(), encode(k, v)?));
        }
        self.write("import", |t| {
            for (table, key, json) in &rows {
                let table = match table {
                    0 => &mut t.ports,
                    1 => &mut t.bindings,
                    2 => &mut t.groups,
                    _ => &mut t.meta,
                };
                table.insert(key.as_str(), json.as_str())?;
            }
            Ok(())
        })
    }

    /// Runs `f` in its own write transaction and commits it. Outside a
    /// group the durability is redb's default, `Immediate`: `commit`
    /// returning means on disk. Inside, `None`: redb keeps the commit in
    /// memory and writes it with the next `Immediate` one (`sync`); a crash
    /// before that rolls the file back to the last durable commit.
    fn write(
        &mut self,
        op: &'static str,
        f: impl FnOnce(&mut Tables) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        unpanic(&path, op, || self.write_unchecked(op, f))
    }

    fn write_unchecked(
        &mut self,
        op: &'static str,
        f: impl FnOnce(&mut Tables) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(|e| self.err(op, e))?;
        if self.deferred {
            txn.set_durability(Durability::None).map_err(|e| self.err(op, e))?;
            self.dirty = true;
        }
        {
            let mut tables = Tables {
                schema: txn.open_table(SCHEMA).map_err(|e| self.err(op, e))?,
                ports: txn.open_table(PORTS).map_err(|e| self.err(op, e))?,
                bindings: txn.open_table(BINDINGS).map_err(|e| self.err(op, e))?,
                groups: txn.open_table(GROUPS).map_err(|e| self.err(op, e))?,
                meta: txn.open_table(META).map_err(|e| self.err(op, e))?,
            };
            f(&mut tables).map_err(|e| self.err(op, e))?;
        }
        txn.commit().map_err(|e| self.err(op, e))
    }

    fn err(&self, op: &'static str, cause: impl Into<redb::Error>) -> StoreError {
        db_err(op, &self.path, cause)
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // SAFETY: dropped once, here; `self.db` is not used after.
        let closed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
            std::mem::ManuallyDrop::drop(&mut self.db)
        }));
        if closed.is_err() {
            tracing::error!(path = %self.path.display(), "closing the store failed: the file is damaged");
        }
    }
}

/// `f`, with a panic inside redb (its answer to some damaged files) turned
/// into an error naming the file.
fn unpanic<T>(path: &Path, op: &'static str, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        Err(StoreError::Invalid {
            path: path.to_owned(),
            what: format!("damaged: the store library failed on it during {op} ({why})"),
        })
    })
}

/// Every table, open in one write transaction.
struct Tables<'t> {
    schema: redb::Table<'t, &'static str, u64>,
    ports: redb::Table<'t, &'static str, &'static str>,
    bindings: redb::Table<'t, &'static str, &'static str>,
    groups: redb::Table<'t, &'static str, &'static str>,
    meta: redb::Table<'t, &'static str, &'static str>,
}

fn db_err(op: &'static str, path: &Path, cause: impl Into<redb::Error>) -> StoreError {
    StoreError::Db { op, path: path.to_owned(), cause: Box::new(cause.into()) }
}

/// Every row of a string table of `db`, or none if it has no such table.
fn rows(db: &Database, path: &Path, table: TableDefinition<&str, &str>) -> Result<Vec<(String, String)>, StoreError> {
    let op = "migrate";
    let txn = db.begin_read().map_err(|e| db_err(op, path, e))?;
    let t = match txn.open_table(table) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(db_err(op, path, e)),
    };
    let mut out = Vec::new();
    for row in t.iter().map_err(|e| db_err(op, path, e))? {
        let (k, v) = row.map_err(|e| db_err(op, path, e))?;
        out.push((k.value().to_owned(), v.value().to_owned()));
    }
    Ok(out)
}

fn decode<T: DeserializeOwned>(key: &str, json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|cause| StoreError::Codec { key: key.to_owned(), cause })
}

/// Builds `path` from a schema-1 directory: ports from `ofports.redb`,
/// bindings and settings from `daemon.redb`, tunnels' own timers folded
/// into their records. Every record is decoded on the way, so a file that
/// does not load is refused here, naming it, before anything changes.
fn migrate_v1(state_dir: &Path, path: &Path) -> Result<(), StoreError> {
    let open = |name: &str| -> Result<Option<(Database, PathBuf)>, StoreError> {
        let p = state_dir.join(name);
        if !p.exists() {
            return Ok(None);
        }
        Ok(Some((Database::open(&p).map_err(|e| db_err("open", &p, e))?, p)))
    };
    let (mut ports, mut bindings, mut meta) = (Vec::new(), Vec::new(), Vec::new());
    if let Some((db, p)) = open(OLD_PORTS_FILE)? {
        for (key, json) in rows(&db, &p, PORTS)? {
            ports.push(decode::<PortRecord>(&key, &json)?);
        }
    }
    let mut tunnel_bfd: std::collections::BTreeMap<String, super::spec::BfdOverride> = Default::default();
    if let Some((db, p)) = open(OLD_DAEMON_FILE)? {
        for (key, json) in rows(&db, &p, BINDINGS)? {
            bindings.push(decode::<Binding>(&key, &json)?);
        }
        for (key, json) in rows(&db, &p, META)? {
            if key == OLD_META_TUNNEL_BFD {
                tunnel_bfd = decode(&key, &json)?;
            } else {
                meta.push((key, json));
            }
        }
    }
    for r in &mut ports {
        if let PortSpec::Tunnel(t) = &mut r.spec {
            t.bfd_timers = tunnel_bfd.get(t.name.as_str()).copied().unwrap_or_default();
        }
    }
    let aside = path.with_extension("redb.migrating");
    let _ = std::fs::remove_file(&aside);
    {
        let mut store = RedbStore {
            db: std::mem::ManuallyDrop::new(Database::create(&aside).map_err(|e| db_err("create", &aside, e))?),
            path: aside.clone(),
            deferred: false,
            dirty: false,
        };
        let ports: Vec<(String, String)> =
            ports.iter().map(|r| Ok((r.name().to_owned(), encode(r.name(), r)?))).collect::<Result<_, StoreError>>()?;
        let bindings: Vec<(String, String)> = bindings
            .iter()
            .map(|b| Ok((binding_key(b.vni, b.mac), encode(&b.label(), b)?)))
            .collect::<Result<_, StoreError>>()?;
        store.write("migrate", |t| {
            t.schema.insert("version", SCHEMA_VERSION)?;
            for (k, v) in &ports {
                t.ports.insert(k.as_str(), v.as_str())?;
            }
            for (k, v) in &bindings {
                t.bindings.insert(k.as_str(), v.as_str())?;
            }
            for (k, v) in &meta {
                t.meta.insert(k.as_str(), v.as_str())?;
            }
            Ok(())
        })?;
    }
    std::fs::rename(&aside, path).map_err(|cause| StoreError::Io { path: path.to_owned(), cause })?;
    sync_dir(state_dir);
    tracing::info!(
        state_dir = %state_dir.display(),
        ports = ports.len(),
        bindings = bindings.len(),
        "state directory migrated to one store ({} -> {})",
        "ofports.redb + daemon.redb",
        RedbStore::FILE_NAME
    );
    Ok(())
}

/// Renames schema-1 files that a migration has replaced, so that no later
/// start mistakes them for state.
fn retire_v1(state_dir: &Path) {
    for name in [OLD_PORTS_FILE, OLD_DAEMON_FILE] {
        let old = state_dir.join(name);
        if old.exists() {
            let kept = state_dir.join(format!("{name}.pre-v2"));
            match std::fs::rename(&old, &kept) {
                Ok(()) => tracing::info!(file = %kept.display(), "the schema-1 file is kept, and no longer read"),
                Err(e) => tracing::warn!(file = %old.display(), "renaming the migrated schema-1 file: {e}"),
            }
        }
    }
    sync_dir(state_dir);
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

fn encode<T: Serialize>(key: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|cause| StoreError::Codec { key: key.to_owned(), cause })
}

impl Store for RedbStore {
    fn load(&self) -> Result<Vec<PortRecord>, StoreError> {
        let op = "load";
        let txn = self.db.begin_read().map_err(|e| self.err(op, e))?;
        let table = txn.open_table(PORTS).map_err(|e| self.err(op, e))?;
        let mut records = Vec::new();
        for row in table.iter().map_err(|e| self.err(op, e))? {
            let (key, value) = row.map_err(|e| self.err(op, e))?;
            let key = key.value();
            let record: PortRecord = decode(key, value.value())?;
            if record.name() != key {
                return Err(StoreError::KeyMismatch { key: key.to_owned(), found: record.name().to_owned() });
            }
            records.push(record);
        }
        Ok(records)
    }

    fn put(&mut self, record: &PortRecord) -> Result<(), StoreError> {
        let json = encode(record.name(), record)?;
        self.write("put", |t| {
            t.ports.insert(record.name(), json.as_str())?;
            Ok(())
        })
    }

    fn delete(&mut self, name: &str) -> Result<(), StoreError> {
        self.write("delete", |t| {
            t.ports.remove(name)?;
            Ok(())
        })
    }

    fn load_bindings(&self) -> Result<Vec<Binding>, StoreError> {
        let op = "load";
        let txn = self.db.begin_read().map_err(|e| self.err(op, e))?;
        let table = txn.open_table(BINDINGS).map_err(|e| self.err(op, e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| self.err(op, e))? {
            let (key, value) = row.map_err(|e| self.err(op, e))?;
            let b: Binding = decode(key.value(), value.value())?;
            if binding_key(b.vni, b.mac) != key.value() {
                return Err(StoreError::KeyMismatch { key: key.value().to_owned(), found: b.label() });
            }
            out.push(b);
        }
        Ok(out)
    }

    fn put_binding(&mut self, b: &Binding) -> Result<(), StoreError> {
        let json = encode(&b.label(), b)?;
        self.write("put", |t| {
            t.bindings.insert(binding_key(b.vni, b.mac).as_str(), json.as_str())?;
            Ok(())
        })
    }

    fn delete_binding(&mut self, vni: Vni, mac: MacAddr) -> Result<(), StoreError> {
        self.write("delete", |t| {
            t.bindings.remove(binding_key(vni, mac).as_str())?;
            Ok(())
        })
    }

    fn load_groups(&self) -> Result<Vec<Group>, StoreError> {
        let op = "load";
        let txn = self.db.begin_read().map_err(|e| self.err(op, e))?;
        let table = match txn.open_table(GROUPS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.err(op, e)),
        };
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| self.err(op, e))? {
            let (key, value) = row.map_err(|e| self.err(op, e))?;
            let g: Group = decode(key.value(), value.value())?;
            if group_key(g.vni, g.key) != key.value() {
                return Err(StoreError::KeyMismatch { key: key.value().to_owned(), found: g.label() });
            }
            out.push(g);
        }
        Ok(out)
    }

    fn put_group(&mut self, g: &Group) -> Result<(), StoreError> {
        let json = encode(&g.label(), g)?;
        self.write("put", |t| {
            t.groups.insert(group_key(g.vni, g.key).as_str(), json.as_str())?;
            Ok(())
        })
    }

    fn delete_group(&mut self, vni: Vni, key: u16) -> Result<(), StoreError> {
        self.write("delete", |t| {
            t.groups.remove(group_key(vni, key).as_str())?;
            Ok(())
        })
    }

    fn defer_sync(&mut self) {
        self.deferred = true;
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.deferred = false;
        if !std::mem::take(&mut self.dirty) {
            return Ok(());
        }
        // An empty durable commit carries the deferred ones to disk.
        self.write("sync", |_| Ok(())).inspect_err(|_| self.dirty = true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ofport::number::OfPort;
    use crate::ofport::spec::{BfdOverride, Name, TunnelPort};

    fn record(name: &str, n: u16) -> PortRecord {
        PortRecord {
            ofport: OfPort::new(n).expect("valid"),
            spec: PortSpec::Tunnel(TunnelPort {
                name: Name::new(name).unwrap(),
                remote: "2001:db8::7".parse().expect("ip"),
                vni: Some(Vni::new(9).unwrap()),
                bfd: true,
                ovn_metadata: false,
                ofport_request: Some(n),
                bfd_timers: BfdOverride::default(),
            }),
        }
    }

    #[test]
    fn round_trip_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        {
            let mut store = RedbStore::open(&state).expect("open");
            assert_eq!(store.load().expect("load"), []);
            store.put(&record("a", 1)).expect("put");
            store.put(&record("b", 0xfeff)).expect("put");
            store.put(&record("c", 3)).expect("put");
            store.delete("c").expect("delete");
            store.delete("never-existed").expect("absent delete is fine");
            store.put_meta("bfd", &crate::types::BfdSettings::default()).expect("meta");
        }
        let store = RedbStore::open(&state).expect("reopen");
        assert_eq!(store.load().expect("load"), [record("a", 1), record("b", 0xfeff)]);
        assert_eq!(store.meta::<crate::types::BfdSettings>("bfd").unwrap(), crate::types::BfdSettings::default());
        assert!(store.path().ends_with(RedbStore::FILE_NAME));
    }

    /// Flipped bytes anywhere in the file: opening and reading it either
    /// works (the byte was in unused space) or fails with an error naming
    /// the file; it never panics (redb panics on some damage, which
    /// `open` turns into an error).
    #[test]
    fn a_damaged_file_is_an_error_naming_it_never_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        {
            let mut store = RedbStore::open(&state).expect("open");
            for i in 1..40u16 {
                store.put(&record(&format!("t{i}"), i)).expect("put");
            }
            store.put_meta("bfd", &crate::types::BfdSettings::default()).expect("meta");
        }
        let path = state.join(RedbStore::FILE_NAME);
        let good = std::fs::read(&path).expect("read");
        let (mut refused, mut opened) = (0, 0);
        for at in (0..good.len()).step_by(97) {
            let mut bad = good.clone();
            bad[at] ^= 0x5a;
            std::fs::write(&path, &bad).expect("write");
            let r = std::panic::catch_unwind(|| {
                RedbStore::open(&state).and_then(|s| {
                    s.load()?;
                    s.load_bindings()?;
                    s.load_groups()
                })
            });
            match r {
                Ok(Ok(_)) => opened += 1,
                Ok(Err(e)) => {
                    refused += 1;
                    assert!(e.to_string().contains(RedbStore::FILE_NAME), "byte {at}: {e}");
                }
                Err(_) => panic!("byte {at}: opening the damaged store panicked"),
            }
        }
        assert!(refused > 0, "no flipped byte was noticed ({opened} opened)");
    }

    #[test]
    fn open_error_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").expect("write");
        let e = RedbStore::open(&file).err().expect("state dir is a file");
        assert!(e.to_string().contains("not-a-dir"), "{e}");
    }

    /// The state directory a schema-1 daemon left (testdata/state-v1): one
    /// open migrates it, numbers, bindings, timers, peers and ownership
    /// included, and keeps the old files aside.
    #[test]
    fn a_schema_1_directory_is_migrated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/state-v1");
        for f in [OLD_PORTS_FILE, OLD_DAEMON_FILE] {
            std::fs::copy(fixture.join(f), dir.path().join(f)).expect("copy fixture");
        }
        let store = RedbStore::open(dir.path()).expect("migrates");
        let ports: Vec<(String, u16)> =
            store.load().unwrap().iter().map(|r| (r.name().to_owned(), r.ofport.get())).collect();
        assert_eq!(ports, [("hv2".to_owned(), 10), ("hvfile".to_owned(), 1), ("vm1".to_owned(), 2)]);
        let timers = |name: &str| match store.load().unwrap().into_iter().find(|r| r.name() == name).unwrap().spec {
            PortSpec::Tunnel(t) => t.bfd_timers,
            PortSpec::Local(_) => panic!("{name} is a tunnel"),
        };
        assert_eq!(timers("hv2"), BfdOverride { min_tx_ms: Some(150), min_rx_ms: None, detect_mult: Some(5) });
        assert_eq!(timers("hvfile"), BfdOverride { min_tx_ms: Some(200), ..BfdOverride::default() });
        let bindings: Vec<String> =
            store.load_bindings().unwrap().iter().map(|b| format!("{} {}", b.label(), b.tunnel)).collect();
        assert_eq!(
            bindings,
            ["binding vni 5001 mac 02:00:5e:20:00:02 hv2", "binding vni 5002 mac 02:00:5e:20:00:09 hvfile"]
        );
        let bfd: crate::types::BfdSettings = store.meta("bfd").unwrap();
        assert_eq!(bfd.min_rx_ms, 300);
        let peers: std::collections::BTreeMap<String, crate::api::BfdPeerArgs> = store.meta("bfd_peers").unwrap();
        assert_eq!(peers["tor1"].min_tx_ms, Some(50));
        assert!(peers["tor1"].echo);
        let owned: serde_json::Value = store.meta("config_owned").unwrap();
        assert_eq!(owned["ports"], serde_json::json!(["hvfile"]));
        drop(store);
        for f in [OLD_PORTS_FILE, OLD_DAEMON_FILE] {
            assert!(!dir.path().join(f).exists(), "{f} left where it would be read");
            assert!(dir.path().join(format!("{f}.pre-v2")).exists(), "{f} kept aside");
        }
        // Opened again: nothing to migrate, the same content.
        let again = RedbStore::open(dir.path()).expect("reopen");
        assert_eq!(again.load().unwrap().len(), 3);
        assert_eq!(again.load_bindings().unwrap().len(), 2);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = RedbStore::open(dir.path()).expect("open");
        store
            .write("test", |t| {
                t.schema.insert("version", SCHEMA_VERSION + 1)?;
                Ok(())
            })
            .unwrap();
        drop(store);
        let e = RedbStore::open(dir.path()).err().expect("refused").to_string();
        assert!(e.contains("schema version 3") && e.contains("xgw.redb"), "{e}");
    }
}
