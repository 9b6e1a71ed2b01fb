//! The store against the datapath it describes. The store is the truth a
//! starting daemon reconciles the maps to, so a store that is missing,
//! empty or damaged while the pinned datapath still forwards for ports
//! would silently take every one of them down: the start is refused
//! instead (`check_at_start`), and the operator has two ways out, both
//! explicit: rebuild the store from the pinned maps (`rebuild`: they hold
//! every port whole in `PORT_RECORDS`, every binding in FDB and NEIGH,
//! every group in GROUPS), or accept the loss (`--accept-store-loss`).
//! `export` and `import` make and restore a backup of the whole store.
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use aya::maps::{HashMap, Map, MapData};
use xgw_common::maps::{self as wire, names, FDB_REMOTE};

use super::pins::Pins;
use crate::ofport::redb_store::Export;
use crate::ofport::{
    AllocatorConfig, Binding, Group, MemDatapath, OfPort, PortMap, PortRecord, PortSpec, RedbStore, Store,
};
use crate::types::{MacAddr, Name, PortKey, UnicastIp, Vni};

/// What the pinned configuration maps hold.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Population {
    /// `PORT_RECORDS`: committed ports.
    pub ports: usize,
    pub tunnels: usize,
    pub local_ports: usize,
    /// FDB entries, local ports' and bindings'.
    pub fdb: usize,
}

impl Population {
    pub fn is_empty(&self) -> bool {
        *self == Population::default()
    }
}

impl std::fmt::Display for Population {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ports ({} tunnel entries, {} local port entries) and {} FDB entries",
            self.ports, self.tunnels, self.local_ports, self.fdb
        )
    }
}

/// The pinned maps a rebuild reads, opened read-only: nothing here writes.
struct Pinned {
    records: Option<HashMap<MapData, u32, wire::PortRecordCopy>>,
    tunnels: HashMap<MapData, u32, wire::Tunnel>,
    local_ports: HashMap<MapData, u32, wire::LocalPort>,
    fdb: HashMap<MapData, wire::FdbKey, wire::FdbEntry>,
    neigh: HashMap<MapData, wire::NeighKey, wire::Neigh>,
    groups: HashMap<MapData, wire::GroupKey, wire::Group>,
}

impl Pinned {
    /// `None` when no datapath is pinned in `dir` (a fresh machine, or
    /// after `xgw uninstall`).
    fn open(dir: &Path) -> Result<Option<Pinned>> {
        if !dir.join(names::TUNNELS).exists() {
            return Ok(None);
        }
        fn typed<T: TryFrom<Map, Error = aya::maps::MapError>>(dir: &Path, name: &str) -> Result<T> {
            let path = dir.join(name);
            let data =
                MapData::from_pin(&path).with_context(|| format!("opening the pinned map {}", path.display()))?;
            let map = Map::from_map_data(data).with_context(|| format!("map {name}"))?;
            T::try_from(map).with_context(|| format!("map {name}: not the layout this xgw reads"))
        }
        // A datapath made before record copies existed has none.
        let records =
            if dir.join(names::PORT_RECORDS).exists() { Some(typed(dir, names::PORT_RECORDS)?) } else { None };
        Ok(Some(Pinned {
            records,
            tunnels: typed(dir, names::TUNNELS)?,
            local_ports: typed(dir, names::LOCAL_PORTS)?,
            fdb: typed(dir, names::FDB)?,
            neigh: typed(dir, names::NEIGH)?,
            groups: typed(dir, names::GROUPS)?,
        }))
    }

    fn population(&self) -> Population {
        Population {
            ports: self.records.as_ref().map_or(0, |m| m.keys().count()),
            tunnels: self.tunnels.keys().count(),
            local_ports: self.local_ports.keys().count(),
            fdb: self.fdb.keys().count(),
        }
    }

    /// The whole store the maps describe. Settings (which entries the
    /// config file owns, `[bfd]`, single-hop peers) live only in the store:
    /// the rebuilt store has none, and the next start's config file
    /// claims its entries again.
    fn export(&self) -> Result<Export> {
        let Some(records) = &self.records else {
            bail!(
                "the pinned datapath has no {} map (an xgw before record copies made it): the ports' names and \
                 settings are not in it",
                names::PORT_RECORDS
            );
        };
        let mut ports = Vec::new();
        for row in records.iter() {
            let (number, copy) = row.context("reading PORT_RECORDS")?;
            let ofport = u16::try_from(number)
                .ok()
                .and_then(|n| OfPort::new(n).ok())
                .with_context(|| format!("PORT_RECORDS: key {number} is no usable OpenFlow number"))?;
            let spec =
                PortSpec::from_record_copy(&copy).map_err(|e| anyhow::anyhow!("PORT_RECORDS ofport {ofport}: {e}"))?;
            ports.push(PortRecord { ofport, spec });
        }
        ports.sort_by_key(|r| r.ofport);
        let name_of: BTreeMap<u16, &Name> = ports
            .iter()
            .map(|r| {
                let name = match &r.spec {
                    PortSpec::Local(p) => &p.name,
                    PortSpec::Tunnel(t) => &t.name,
                };
                (r.ofport.get(), name)
            })
            .collect();
        let name = |n: u16, what: &str| {
            name_of.get(&n).map(|&n| n.clone()).with_context(|| format!("{what}: ofport {n} has no port record"))
        };
        // A binding's IP is the NEIGH entry that maps to its MAC.
        let mut ips: BTreeMap<(u32, [u8; 6]), [u8; 16]> = BTreeMap::new();
        for row in self.neigh.iter() {
            let (k, v) = row.context("reading NEIGH")?;
            ips.insert((k.vni, v.mac), k.ip);
        }
        let mut bindings = Vec::new();
        for row in self.fdb.iter() {
            let (k, v) = row.context("reading FDB")?;
            if v.kind != FDB_REMOTE {
                continue;
            }
            let mac = MacAddr(k.mac);
            let what = format!("FDB VNI {} MAC {mac}", k.vni);
            let ip = ips
                .get(&(k.vni, k.mac))
                .map(|ip| UnicastIp::new(std::net::Ipv6Addr::from(*ip).to_canonical()))
                .transpose()
                .map_err(|e| anyhow::anyhow!("{what}: ip: {e}"))?;
            bindings.push(Binding {
                vni: Vni::new(k.vni).map_err(|e| anyhow::anyhow!("{what}: vni: {e}"))?,
                mac,
                ip,
                tunnel: name(v.ofport, &what)?,
                port_key: PortKey::new(v.port_key).map_err(|e| anyhow::anyhow!("{what}: port key: {e}"))?,
            });
        }
        let mut groups = Vec::new();
        for row in self.groups.iter() {
            let (k, g) = row.context("reading GROUPS")?;
            let what = format!("GROUPS VNI {} key {}", k.vni, k.key);
            let members =
                g.members.get(..usize::from(g.count)).with_context(|| format!("{what}: count {}", g.count))?;
            let (local, tunnels) = members.split_at(usize::from(g.local).min(members.len()));
            groups.push(Group {
                vni: Vni::new(k.vni).map_err(|e| anyhow::anyhow!("{what}: vni: {e}"))?,
                key: k.key,
                ports: local.iter().map(|&n| name(n, &what)).collect::<Result<_>>()?,
                tunnels: tunnels.iter().map(|&n| name(n, &what)).collect::<Result<_>>()?,
                rate_pps: g.rate_pps,
            });
        }
        Ok(Export {
            xgw_store: crate::ofport::redb_store::SCHEMA_VERSION,
            ports,
            bindings,
            groups,
            meta: BTreeMap::new(),
        })
    }
}

/// The store file's state, found without creating it.
enum StoreState {
    Missing,
    Empty,
    Damaged(anyhow::Error),
    /// Readable, with this many ports, bindings and groups.
    Readable(usize),
}

fn store_state(state_dir: &Path) -> StoreState {
    let path = state_dir.join(RedbStore::FILE_NAME);
    match fs::metadata(&path) {
        // A schema-1 directory is not missing: `open` migrates it.
        Err(_) if !state_dir.join("ofports.redb").exists() && !state_dir.join("daemon.redb").exists() => {
            return StoreState::Missing
        }
        Ok(m) if m.len() == 0 => return StoreState::Empty,
        _ => {}
    }
    let store = match RedbStore::open(state_dir) {
        Ok(s) => s,
        Err(e) => return StoreState::Damaged(e.into()),
    };
    let count =
        || -> Result<usize> { Ok(store.load()?.len() + store.load_bindings()?.len() + store.load_groups()?.len()) };
    match count() {
        Ok(n) => StoreState::Readable(n),
        Err(e) => StoreState::Damaged(e),
    }
}

/// Before a starting daemon writes anything: a store that is missing,
/// empty or damaged while the datapath pinned in `pins` holds ports is
/// refused, in one line naming the file and both ways out, unless
/// `accept_loss` says to start without them (a damaged file is then moved
/// aside, never deleted).
pub fn check_at_start(state_dir: &Path, pins: &Pins, accept_loss: bool) -> Result<()> {
    let path = state_dir.join(RedbStore::FILE_NAME);
    let population = match Pinned::open(&pins.dir)? {
        Some(p) => p.population(),
        None => Population::default(),
    };
    let problem = match store_state(state_dir) {
        StoreState::Readable(n) if n > 0 => return Ok(()),
        StoreState::Readable(_) => "holds no ports".to_owned(),
        StoreState::Missing => "is missing".to_owned(),
        StoreState::Empty => "is empty (0 bytes)".to_owned(),
        StoreState::Damaged(e) if population.is_empty() => {
            return Err(e.context(format!(
                "store {} is damaged; restore a backup (`xgw store import`) or move the file away to start with \
                 no ports",
                path.display()
            )))
        }
        StoreState::Damaged(e) => format!("is damaged ({e:#})"),
    };
    if population.is_empty() {
        return Ok(());
    }
    if !accept_loss {
        bail!(
            "store {} {problem} but the datapath pinned in {} holds {population}; starting would remove them all. \
             Rebuild the store from the datapath (`xgw store rebuild --state-dir {} --bpffs {}`), restore a backup \
             (`xgw store import`), or start with --accept-store-loss to remove them",
            path.display(),
            pins.dir.display(),
            state_dir.display(),
            pins.dir.display()
        );
    }
    if path.exists() {
        let aside = move_aside(&path)?;
        tracing::warn!(file = %aside.display(), "--accept-store-loss: the store was moved aside");
    }
    tracing::warn!(
        store = %path.display(),
        "--accept-store-loss: the store {problem}; the datapath's {population} will be removed"
    );
    Ok(())
}

/// Renames `path` to `path.damaged-<unix seconds>`, and says where.
fn move_aside(path: &Path) -> Result<PathBuf> {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let aside = PathBuf::from(format!("{}.damaged-{secs}", path.display()));
    fs::rename(path, &aside).with_context(|| format!("moving {} aside", path.display()))?;
    Ok(aside)
}

/// Holds what an offline store command needs: the state directory's lock
/// and the datapath's, so no daemon runs (or starts) meanwhile.
struct Offline {
    _state: super::Lock,
    _datapath: Option<super::pins::DatapathLock>,
}

fn offline(state_dir: &Path, pins: Option<&Pins>) -> Result<Offline> {
    let state = super::lock(state_dir, "xgw store").context("the store is in use: stop the daemon first")?;
    let datapath = match pins {
        Some(p) if p.dir.exists() => Some(p.lock()?),
        _ => None,
    };
    Ok(Offline { _state: state, _datapath: datapath })
}

/// Checks `export` as a starting daemon would (numbers, names, claims,
/// bindings' tunnels), then writes it as the store of `state_dir`: built
/// aside and renamed into place, so a failure leaves no half store.
fn install(state_dir: &Path, export: &Export) -> Result<()> {
    let aside = state_dir.join(".xgw-store-new");
    let _ = fs::remove_dir_all(&aside);
    let built = (|| -> Result<()> {
        let mut store = RedbStore::open(&aside)?;
        store.import(export)?;
        store.sync()?;
        drop(store);
        let check = RedbStore::open(&aside)?;
        PortMap::open(MemDatapath::new(), check, AllocatorConfig::default()).context("the result does not load")?;
        Ok(())
    })();
    if let Err(e) = built {
        let _ = fs::remove_dir_all(&aside);
        return Err(e);
    }
    let target = state_dir.join(RedbStore::FILE_NAME);
    fs::rename(aside.join(RedbStore::FILE_NAME), &target).with_context(|| format!("writing {}", target.display()))?;
    let _ = fs::remove_dir_all(&aside);
    if let Ok(dir) = fs::File::open(state_dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// What `rebuild` or `import` wrote.
#[derive(Debug)]
pub struct Written {
    pub ports: Vec<PortRecord>,
    pub bindings: usize,
    pub groups: usize,
    /// The unusable store, kept under this name.
    pub moved_aside: Option<PathBuf>,
}

/// Where the store of `state_dir` can be replaced: a missing, empty or
/// damaged file (moved aside), or one holding nothing. A store with
/// records is never overwritten.
fn replaceable(state_dir: &Path) -> Result<Option<PathBuf>> {
    let path = state_dir.join(RedbStore::FILE_NAME);
    match store_state(state_dir) {
        StoreState::Missing => Ok(None),
        StoreState::Readable(0) | StoreState::Empty | StoreState::Damaged(_) => move_aside(&path).map(Some),
        StoreState::Readable(n) => bail!(
            "store {} is readable and holds {n} ports, bindings and groups: it is not replaced (`xgw store check` \
             compares it with the datapath; move it away first to replace it)",
            path.display()
        ),
    }
}

/// `xgw store rebuild`: the store of `state_dir` from the datapath pinned
/// in `pins`, every port under the number it has there.
pub fn rebuild(state_dir: &Path, pins: &Pins) -> Result<Written> {
    fs::create_dir_all(state_dir).with_context(|| format!("state-dir: creating {}", state_dir.display()))?;
    let _offline = offline(state_dir, Some(pins))?;
    let pinned =
        Pinned::open(&pins.dir)?.with_context(|| format!("no datapath is pinned in {}", pins.dir.display()))?;
    let export = pinned.export()?;
    let moved_aside = replaceable(state_dir)?;
    install(state_dir, &export)?;
    Ok(Written { bindings: export.bindings.len(), groups: export.groups.len(), ports: export.ports, moved_aside })
}

/// `xgw store import`: a backup (`export`'s document) as the store of
/// `state_dir`, which must be missing, empty, damaged or hold nothing.
pub fn import(state_dir: &Path, export: &Export) -> Result<Written> {
    fs::create_dir_all(state_dir).with_context(|| format!("state-dir: creating {}", state_dir.display()))?;
    let _offline = offline(state_dir, None)?;
    let moved_aside = replaceable(state_dir)?;
    install(state_dir, export)?;
    Ok(Written {
        ports: export.ports.clone(),
        bindings: export.bindings.len(),
        groups: export.groups.len(),
        moved_aside,
    })
}

/// `xgw store export` with no daemon running: the file, read whole.
pub fn export(state_dir: &Path) -> Result<Export> {
    let _offline = offline(state_dir, None)?;
    let path = state_dir.join(RedbStore::FILE_NAME);
    if !path.exists() {
        bail!("store {}: no such file", path.display());
    }
    Ok(RedbStore::open(state_dir)?.export()?)
}

/// `xgw store check`: the store read whole and loaded as a daemon would,
/// then compared with the pinned datapath, if one is pinned.
#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub store: String,
    pub ports: usize,
    pub bindings: usize,
    pub groups: usize,
    /// Absent when no datapath is pinned.
    pub datapath: Option<String>,
    /// Each difference, in words; empty when the two agree.
    pub differences: Vec<String>,
}

pub fn check(state_dir: &Path, pins: &Pins) -> Result<CheckReport> {
    let _offline = offline(state_dir, Some(pins))?;
    let path = state_dir.join(RedbStore::FILE_NAME);
    if !path.exists() {
        bail!("store {}: no such file", path.display());
    }
    let store = RedbStore::open(state_dir)?.export()?;
    let mut report = CheckReport {
        store: path.display().to_string(),
        ports: store.ports.len(),
        bindings: store.bindings.len(),
        groups: store.groups.len(),
        ..Default::default()
    };
    PortMap::open(MemDatapath::new(), RedbStore::open(state_dir)?, AllocatorConfig::default())
        .with_context(|| format!("store {}", path.display()))?;
    let Some(pinned) = Pinned::open(&pins.dir)? else { return Ok(report) };
    report.datapath = Some(pins.dir.display().to_string());
    let maps = pinned.export()?;
    let by_number = |e: &Export| e.ports.iter().map(|r| (r.ofport, r.spec.clone())).collect::<BTreeMap<_, _>>();
    let (want, have) = (by_number(&store), by_number(&maps));
    for (n, spec) in &want {
        match have.get(n) {
            None => report.differences.push(format!("port {:?} (ofport {n}) is not in the datapath", spec.name())),
            Some(s) if s != spec => {
                report.differences.push(format!("port {:?} (ofport {n}) differs in the datapath", spec.name()))
            }
            Some(_) => {}
        }
    }
    for (n, spec) in have.iter().filter(|(n, _)| !want.contains_key(n)) {
        report.differences.push(format!("the datapath has port {:?} (ofport {n}), the store does not", spec.name()));
    }
    let keys = |e: &Export| e.bindings.iter().map(|b| (b.label(), b.clone())).collect::<BTreeMap<_, _>>();
    let (want, have) = (keys(&store), keys(&maps));
    let all: BTreeSet<&String> = want.keys().chain(have.keys()).collect();
    for label in all {
        match (want.get(label), have.get(label)) {
            (Some(_), None) => report.differences.push(format!("{label} is not in the datapath")),
            (None, Some(_)) => report.differences.push(format!("the datapath has {label}, the store does not")),
            (Some(a), Some(b)) if a != b => report.differences.push(format!("{label} differs in the datapath")),
            _ => {}
        }
    }
    Ok(report)
}
