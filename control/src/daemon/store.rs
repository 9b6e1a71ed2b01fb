//! What the daemon keeps beside the port map's own store (`ofports.redb`),
//! in `daemon.redb` in the same state directory: remote bindings, BFD timers
//! and single-hop peers, and which ports, bindings and peers came from the
//! config file (so that removing one from the file removes it, while what
//! the API added stays).
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::{
    api::{BfdPeerArgs, BindingArgs},
    config::{BfdOverride, BfdSettings},
    ofport::MacAddr,
};

/// "<vni>/<mac>" -> JSON `BindingArgs`.
const BINDINGS: TableDefinition<&str, &str> = TableDefinition::new("bindings_v1");
/// Key -> JSON value.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta_v1");
const META_CONFIG_OWNED: &str = "config_owned";
const META_BFD: &str = "bfd";
/// Tunnel name -> its own BFD timers (`BfdOverride`).
const META_TUNNEL_BFD: &str = "tunnel_bfd";
/// Peer name -> `BfdPeerArgs`.
const META_BFD_PEERS: &str = "bfd_peers";

/// What the config file put in place at the last start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigOwned {
    pub ports: BTreeSet<String>,
    pub bindings: BTreeSet<(u32, MacAddr)>,
    #[serde(default)]
    pub bfd_peers: BTreeSet<String>,
}

pub struct DaemonStore {
    db: Database,
    path: PathBuf,
}

pub fn binding_key(vni: u32, mac: MacAddr) -> String {
    format!("{vni}/{mac}")
}

impl DaemonStore {
    pub const FILE_NAME: &'static str = "daemon.redb";

    pub fn open(state_dir: &Path) -> Result<DaemonStore> {
        let path = state_dir.join(Self::FILE_NAME);
        let db = Database::create(&path).with_context(|| format!("opening {}", path.display()))?;
        let store = DaemonStore { db, path };
        store.write(|_, _| Ok(()))?;
        Ok(store)
    }

    /// One durable write transaction (redb's default durability: on disk
    /// when `commit` returns).
    fn write(
        &self,
        f: impl FnOnce(&mut redb::Table<&str, &str>, &mut redb::Table<&str, &str>) -> Result<()>,
    ) -> Result<()> {
        let txn = self.db.begin_write().with_context(|| format!("writing {}", self.path.display()))?;
        {
            let mut bindings = txn.open_table(BINDINGS)?;
            let mut meta = txn.open_table(META)?;
            f(&mut bindings, &mut meta)?;
        }
        txn.commit().with_context(|| format!("committing to {}", self.path.display()))?;
        Ok(())
    }

    pub fn bindings(&self) -> Result<Vec<BindingArgs>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BINDINGS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let b: BindingArgs =
                serde_json::from_str(v.value()).with_context(|| format!("stored binding {:?}", k.value()))?;
            out.push(b);
        }
        Ok(out)
    }

    pub fn put_binding(&self, b: &BindingArgs) -> Result<()> {
        let json = serde_json::to_string(b)?;
        self.write(|t, _| {
            t.insert(binding_key(b.vni, b.mac).as_str(), json.as_str())?;
            Ok(())
        })
    }

    pub fn delete_binding(&self, vni: u32, mac: MacAddr) -> Result<()> {
        self.write(|t, _| {
            t.remove(binding_key(vni, mac).as_str())?;
            Ok(())
        })
    }

    fn meta<T: for<'de> Deserialize<'de> + Default>(&self, key: &str) -> Result<T> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        let Some(v) = table.get(key)? else { return Ok(T::default()) };
        serde_json::from_str(v.value()).with_context(|| format!("stored {key}"))
    }

    fn put_meta<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let json = serde_json::to_string(value)?;
        self.write(|_, m| {
            m.insert(key, json.as_str())?;
            Ok(())
        })
    }

    pub fn config_owned(&self) -> Result<ConfigOwned> {
        self.meta(META_CONFIG_OWNED)
    }

    pub fn set_config_owned(&self, owned: &ConfigOwned) -> Result<()> {
        self.put_meta(META_CONFIG_OWNED, owned)
    }

    /// The BFD timers last configured (for the BFD module, which runs the
    /// sessions of tunnels flagged `bfd`).
    pub fn bfd(&self) -> Result<BfdSettings> {
        self.meta(META_BFD)
    }

    pub fn set_bfd(&self, bfd: &BfdSettings) -> Result<()> {
        self.put_meta(META_BFD, bfd)
    }

    pub fn tunnel_bfd(&self) -> Result<BTreeMap<String, BfdOverride>> {
        self.meta(META_TUNNEL_BFD)
    }

    pub fn set_tunnel_bfd(&self, overrides: &BTreeMap<String, BfdOverride>) -> Result<()> {
        self.put_meta(META_TUNNEL_BFD, overrides)
    }

    pub fn bfd_peers(&self) -> Result<BTreeMap<String, BfdPeerArgs>> {
        self.meta(META_BFD_PEERS)
    }

    pub fn set_bfd_peers(&self, peers: &BTreeMap<String, BfdPeerArgs>) -> Result<()> {
        self.put_meta(META_BFD_PEERS, peers)
    }
}
