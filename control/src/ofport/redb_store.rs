//! `Store` on redb: one file in the state directory, one JSON record per
//! port, one committed write transaction per change.

use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::store::{PortRecord, Store, StoreError};

/// Port name -> JSON `PortRecord`. The version is in the table name so a
/// future incompatible layout can live next to this one during migration.
const PORTS: TableDefinition<&str, &str> = TableDefinition::new("ofports_v1");

pub struct RedbStore {
    db: Database,
    path: PathBuf,
    /// Inside `defer_sync` .. `sync`: commit without fsync.
    deferred: bool,
    /// A non-durable commit happened since the last durable one.
    dirty: bool,
}

impl RedbStore {
    pub const FILE_NAME: &'static str = "ofports.redb";

    /// Opens (creating if needed) `state_dir/ofports.redb`.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|cause| StoreError::Io { path: state_dir.to_owned(), cause })?;
        let path = state_dir.join(Self::FILE_NAME);
        let db = Database::create(&path).map_err(|e| db_err("open", &path, e))?;
        let mut store = RedbStore { db, path, deferred: false, dirty: false };
        // Create the table up front so `load` on a fresh file finds it.
        store.write("create table", |_| Ok(()))?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in its own write transaction and commits it. Outside a
    /// group the durability is redb's default, `Immediate`: `commit`
    /// returning means on disk. Inside, `None`: redb keeps the commit in
    /// memory and writes it with the next `Immediate` one (`sync`); a crash
    /// before that rolls the file back to the last durable commit.
    fn write(
        &mut self,
        op: &'static str,
        f: impl FnOnce(&mut redb::Table<&str, &str>) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(|e| self.err(op, e))?;
        if self.deferred {
            txn.set_durability(Durability::None).map_err(|e| self.err(op, e))?;
            self.dirty = true;
        }
        {
            let mut table = txn.open_table(PORTS).map_err(|e| self.err(op, e))?;
            f(&mut table).map_err(|e| self.err(op, e))?;
        }
        txn.commit().map_err(|e| self.err(op, e))
    }

    fn err(&self, op: &'static str, cause: impl Into<redb::Error>) -> StoreError {
        db_err(op, &self.path, cause)
    }
}

fn db_err(op: &'static str, path: &Path, cause: impl Into<redb::Error>) -> StoreError {
    StoreError::Db { op, path: path.to_owned(), cause: Box::new(cause.into()) }
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
            let record: PortRecord = serde_json::from_str(value.value())
                .map_err(|cause| StoreError::Codec { key: key.to_owned(), cause })?;
            if record.name() != key {
                return Err(StoreError::KeyMismatch { key: key.to_owned(), found: record.name().to_owned() });
            }
            records.push(record);
        }
        Ok(records)
    }

    fn put(&mut self, record: &PortRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(record)
            .map_err(|cause| StoreError::Codec { key: record.name().to_owned(), cause })?;
        self.write("put", |table| {
            table.insert(record.name(), json.as_str())?;
            Ok(())
        })
    }

    fn delete(&mut self, name: &str) -> Result<(), StoreError> {
        self.write("delete", |table| {
            table.remove(name)?;
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
    use crate::ofport::spec::{PortSpec, TunnelPort};

    fn record(name: &str, n: u16) -> PortRecord {
        PortRecord {
            ofport: OfPort::new(n).expect("valid"),
            spec: PortSpec::Tunnel(TunnelPort {
                name: name.into(),
                remote: "2001:db8::7".parse().expect("ip"),
                vni: 9,
                bfd: true,
                ovn_metadata: false,
                ofport_request: Some(n),
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
        }
        let store = RedbStore::open(&state).expect("reopen");
        assert_eq!(store.load().expect("load"), [record("a", 1), record("b", 0xfeff)]);
        assert!(store.path().ends_with(RedbStore::FILE_NAME));
    }

    #[test]
    fn open_error_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").expect("write");
        let e = RedbStore::open(&file).err().expect("state dir is a file");
        assert!(e.to_string().contains("not-a-dir"), "{e}");
    }
}
