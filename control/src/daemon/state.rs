//! The running daemon's state and what each request does to it.
//!
//! Ports and tunnels go through the port map (`ofport::PortMap`), which
//! refuses bad input before it costs a number and rolls back a failed
//! insert; the daemon adds what the port map does not own: the XDP link on a
//! local port's interface, remote bindings (FDB_REMOTE and their NEIGH
//! entries), tunnel next hops, and which entries the config file owns.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{Array, HashMap, Map, MapData, MapError as AyaMapError, PerCpuArray},
    programs::Xdp,
    Ebpf,
};
use serde_json::{json, Value};
use xgw_common::{
    counters::{Drop, PortStats, Reply},
    maps::{self as wire, names, FdbEntry, FdbKey, Neigh, NeighKey, Tunnel, Uplink, FDB_LOCAL, FDB_REMOTE},
};

use super::{
    hooks::TunnelHooks,
    netlink::{Event, Netlink},
    pins::{self, Pins, LOCAL_PROGRAM},
    store::{ConfigOwned, DaemonStore},
};
use crate::{
    api::*,
    config::{BfdOverride, BfdSettings, Config},
    datapath::{AttachMode, Generation},
    ofport::{
        spec::{PORT_KEY_MAX, VNI_MAX},
        Added, AllocatorConfig, BpfDatapath, LocalPort, MacAddr, MemDatapath, MemStore, OfPort, PortMap, PortRecord,
        PortSpec, RedbStore, Store, TunnelPort,
    },
};

/// `BPF_NOEXIST` / `BPF_EXIST`.
const NOEXIST: u64 = 1;
const EXIST: u64 = 2;

/// A resolved next hop is re-checked this often; an unresolved one on every
/// refresh tick.
const NEXTHOP_RECHECK: Duration = Duration::from_secs(10);

pub type Ports = PortMap<BpfDatapath, RedbStore>;

#[derive(Debug, Clone, Default)]
struct NexthopState {
    mac: Option<[u8; 6]>,
    resolved: bool,
    checked: Option<Instant>,
    error: Option<String>,
    /// Times `mac` moved after it first resolved.
    changes: u64,
    /// The neighbour the route to the remote goes through, as last seen:
    /// the address whose neighbour events concern this tunnel.
    via: Option<IpAddr>,
}

pub struct Daemon {
    pub(super) ebpf: Ebpf,
    pub(super) pins: Pins,
    pub(super) mode: AttachMode,
    pub(super) uplink: UplinkView,
    pub(super) state_dir: String,
    ports: Ports,
    store: DaemonStore,
    bindings: BTreeMap<(u32, MacAddr), BindingArgs>,
    owned: ConfigOwned,
    /// `[bfd]`: the timers of every session that does not set its own.
    bfd: BfdSettings,
    /// Tunnels' own BFD timers.
    tunnel_bfd: BTreeMap<String, BfdOverride>,
    /// Single-hop BFD peers.
    peers: BTreeMap<String, BfdPeerArgs>,
    fdb: HashMap<MapData, FdbKey, FdbEntry>,
    neigh: HashMap<MapData, NeighKey, Neigh>,
    tunnels: HashMap<MapData, u32, Tunnel>,
    uplink_map: Array<MapData, Uplink>,
    /// Bumped after each write to `fdb`, `tunnels` or `uplink_map` (see
    /// `Generation`).
    generation: Generation,
    drops: PerCpuArray<MapData, u64>,
    replies: PerCpuArray<MapData, u64>,
    port_stats: PerCpuArray<MapData, PortStats>,
    netlink: Netlink,
    nexthops: BTreeMap<String, NexthopState>,
    /// Local port name -> the ifindex its interface had when last looked at
    /// (`None`: no such interface). See `watch_links`.
    links: BTreeMap<String, Option<u32>>,
    pub(super) hooks: Box<dyn TunnelHooks>,
}

fn open_map<T: TryFrom<Map, Error = AyaMapError>>(pins: &Pins, name: &str) -> Result<T> {
    let path = pins.map(name);
    let data = MapData::from_pin(&path).with_context(|| format!("opening pinned map {}", path.display()))?;
    T::try_from(Map::from_map_data(data)?).with_context(|| format!("map {name}"))
}

fn ip16(ip: IpAddr) -> [u8; 16] {
    match ip.to_canonical() {
        IpAddr::V4(a) => wire::ipv4_mapped(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

fn mac_str(m: [u8; 6]) -> String {
    MacAddr(m).to_string()
}

fn local_spec(a: &PortArgs) -> PortSpec {
    PortSpec::Local(LocalPort {
        name: a.name.clone(),
        ifname: a.ifname.clone(),
        vni: a.vni,
        port_key: a.port_key,
        mac: a.mac,
        ip: a.ip,
        ofport_request: a.ofport,
    })
}

fn tunnel_spec(a: &TunnelArgs) -> PortSpec {
    PortSpec::Tunnel(TunnelPort {
        name: a.name.clone(),
        remote: a.remote_ip,
        vni: a.vni,
        bfd: a.bfd,
        ovn_metadata: a.ovn_metadata,
        ofport_request: a.ofport,
    })
}

/// Attaches (or adopts) `xgw_local` on `ifname`.
fn attach_local(ebpf: &mut Ebpf, pins: &Pins, mode: AttachMode, ifname: &str) -> Result<pins::Attached> {
    let prog: &mut Xdp = ebpf
        .program_mut(LOCAL_PROGRAM)
        .ok_or_else(|| anyhow!("the datapath has no program {LOCAL_PROGRAM}"))?
        .try_into()?;
    pins::attach(prog, ifname, mode, &pins.local_link(ifname))
}

impl Daemon {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open(
        ebpf: Ebpf,
        pins: Pins,
        mode: AttachMode,
        uplink: UplinkView,
        state_dir: &std::path::Path,
        hooks: Box<dyn TunnelHooks>,
    ) -> Result<Daemon> {
        let dp = BpfDatapath::open_pinned(&pins.dir).context("opening the pinned configuration maps")?;
        let store = RedbStore::open(state_dir).context("opening the port store")?;
        let ports = PortMap::open(dp, store, AllocatorConfig::default()).context("opening the port map")?;
        let dstore = DaemonStore::open(state_dir)?;
        let bindings = dstore.bindings()?.into_iter().map(|b| ((b.vni, b.mac), b)).collect();
        let owned = dstore.config_owned()?;
        let bfd = dstore.bfd()?;
        let tunnel_bfd = dstore.tunnel_bfd()?;
        let peers = dstore.bfd_peers()?;
        Ok(Daemon {
            fdb: open_map(&pins, names::FDB)?,
            neigh: open_map(&pins, names::NEIGH)?,
            tunnels: open_map(&pins, names::TUNNELS)?,
            uplink_map: open_map(&pins, names::UPLINK)?,
            generation: Generation::open_pinned(&pins.dir)?,
            drops: open_map(&pins, "DROPS")?,
            replies: open_map(&pins, "REPLIES")?,
            port_stats: open_map(&pins, "PORT_STATS")?,
            netlink: Netlink::open()?,
            ebpf,
            pins,
            mode,
            uplink,
            state_dir: state_dir.display().to_string(),
            ports,
            store: dstore,
            bindings,
            owned,
            bfd,
            tunnel_bfd,
            peers,
            nexthops: BTreeMap::new(),
            links: BTreeMap::new(),
            hooks,
        })
    }

    /// Brings the maps and links in line with the stores, as a (re)started
    /// daemon must before it serves anything: the port map's reconcile, the
    /// bindings, an XDP link on every local port's interface (adopted when
    /// pinned), none on interfaces that are no longer ports, and next hops.
    pub(super) fn adopt(&mut self) -> Result<()> {
        let report = self.ports.reconcile();
        tracing::info!(
            ports = self.ports.ports().count(),
            recreated = report.recreated.len(),
            removed = report.removed.len(),
            rewritten = report.rewritten.len(),
            failed = report.failed.len(),
            "reconciled the port maps with the store"
        );
        self.reconcile_bindings();
        self.sync_local_links();
        let tunnels: Vec<PortRecord> = self.tunnel_records().cloned().collect();
        for r in &tunnels {
            if let PortSpec::Tunnel(t) = &r.spec {
                if let Err(e) = self.hooks.tunnel_added(t, r.ofport, &self.bfd_of(&t.name), None) {
                    tracing::warn!("{e:#}");
                }
            }
        }
        let peers: Vec<BfdPeerArgs> = self.peers.values().cloned().collect();
        for p in &peers {
            if let Err(e) = self.hooks.peer_added(p, &BfdOverride::of_peer(p).over(&self.bfd)) {
                tracing::warn!("{e:#}");
            }
        }
        self.refresh_nexthops(true);
        self.watch_links()
    }

    /// The BFD timers of tunnel `name`.
    fn bfd_of(&self, name: &str) -> BfdSettings {
        self.tunnel_bfd.get(name).copied().unwrap_or_default().over(&self.bfd)
    }

    /// The gateway's address of `remote`'s family.
    fn local_ip_for(&self, remote: IpAddr) -> Option<IpAddr> {
        let v4 = remote.to_canonical().is_ipv4();
        self.uplink.local_ips.iter().copied().find(|a| a.is_ipv4() == v4)
    }

    /// Records a tunnel's own timers (none: `[bfd]`'s), durably.
    fn set_tunnel_bfd(&mut self, name: &str, over: BfdOverride) -> Result<()> {
        let old = self.tunnel_bfd.get(name).copied();
        if old.unwrap_or_default() == over {
            return Ok(());
        }
        if over.is_empty() {
            self.tunnel_bfd.remove(name);
        } else {
            self.tunnel_bfd.insert(name.to_owned(), over);
        }
        self.store.set_tunnel_bfd(&self.tunnel_bfd).inspect_err(|_| {
            match old {
                Some(o) => self.tunnel_bfd.insert(name.to_owned(), o),
                None => self.tunnel_bfd.remove(name),
            };
        })
    }

    /// Why tunnel `a` cannot run BFD, checked before anything changes.
    fn check_tunnel_bfd(&self, a: &TunnelArgs, fields: [&str; 3]) -> Result<()> {
        let over = BfdOverride::of_tunnel(a);
        over.check(fields).map_err(|e| anyhow!("{}", e.0))?;
        if !a.bfd {
            if !over.is_empty() {
                bail!("{}: BFD timers given, but bfd is off for tunnel {:?}", fields[0], a.name);
            }
            return Ok(());
        }
        if self.local_ip_for(a.remote_ip).is_none() {
            bail!("tunnel {:?}: bfd: the gateway has no --local-ip of {}'s family to send from", a.name, a.remote_ip);
        }
        Ok(())
    }

    fn tunnel_records(&self) -> impl Iterator<Item = &PortRecord> {
        self.ports.ports().filter(|r| matches!(r.spec, PortSpec::Tunnel(_)))
    }

    /// An `xgw_local` link on exactly the local ports' interfaces.
    fn sync_local_links(&mut self) {
        let wanted: BTreeSet<String> = self
            .ports
            .ports()
            .filter_map(|r| match &r.spec {
                PortSpec::Local(p) => Some(p.ifname.clone()),
                PortSpec::Tunnel(_) => None,
            })
            .collect();
        for ifname in self.pins.local_links() {
            if !wanted.contains(&ifname) {
                tracing::info!(ifname, "detaching xgw_local from an interface that is no longer a port");
                if let Err(e) = pins::detach(&self.pins.local_link(&ifname)) {
                    tracing::warn!("{e:#}");
                }
            }
        }
        for ifname in wanted {
            match attach_local(&mut self.ebpf, &self.pins, self.mode, &ifname) {
                Ok(how) => tracing::info!(ifname, ?how, "xgw_local attached"),
                Err(e) => tracing::warn!(ifname, "cannot attach xgw_local: {e:#}"),
            }
        }
    }

    /// Interfaces of local ports that vanished or came back (a VM's veth
    /// deleted and recreated, with a new ifindex): the port keeps its
    /// OpenFlow number and its store record; its DEVMAP and LOCAL_PORTS
    /// entries follow the interface through `reconcile` (the kernel drops
    /// a deleted device's DEVMAP entry itself; a stale LOCAL_PORTS entry is
    /// removed), and `xgw_local` is attached to the new interface. Called
    /// every `LINK_WATCH_PERIOD`: one if_nametoindex per local port.
    ///
    /// The uplink too: gone, it is logged and shown; back as a new
    /// interface, everything bound to its ifindex (the UPLINK map, the
    /// uplink's XDP link, the BFD engine's sockets) must be set up anew,
    /// which is what a start does: the error asks for a restart.
    pub(super) fn watch_links(&mut self) -> Result<()> {
        let up = super::ifindex(&self.uplink.ifname);
        match up {
            Some(i) if i != self.uplink.ifindex => bail!(
                "uplink {} was recreated (ifindex {} -> {i}); exiting so that the service manager restarts xgw on it (the datapath keeps running)",
                self.uplink.ifname,
                self.uplink.ifindex
            ),
            Some(_) => {
                self.uplink.error = None;
                self.follow_uplink();
            }
            None if self.uplink.error.is_none() => {
                tracing::warn!(uplink = self.uplink.ifname, "uplink interface is gone: no Geneve in or out until it returns");
                self.uplink.error = Some(format!("uplink interface {} is gone", self.uplink.ifname));
            }
            None => {}
        }
        let now: BTreeMap<String, (String, OfPort, Option<u32>)> = self
            .ports
            .ports()
            .filter_map(|r| match &r.spec {
                PortSpec::Local(p) => Some((p.name.clone(), (p.ifname.clone(), r.ofport, super::ifindex(&p.ifname)))),
                PortSpec::Tunnel(_) => None,
            })
            .collect();
        let mut changed = false;
        for (name, (ifname, ofport, ifindex)) in &now {
            match (self.links.get(name), ifindex) {
                (Some(before), now) if before == now => continue,
                (None, Some(_)) => {}
                (None, None) => {
                    tracing::warn!(port = name, ifname, ofport = ofport.get(), "interface does not exist; the port keeps its OpenFlow number and forwards once the interface appears");
                    // Its entries may have been written for an interface
                    // that went between the write and now.
                    changed = true;
                }
                (Some(_), None) => {
                    tracing::warn!(port = name, ifname, ofport = ofport.get(), "interface is gone; the port keeps its OpenFlow number and forwards again when the interface returns");
                    changed = true;
                }
                (Some(_), Some(i)) => {
                    tracing::info!(
                        port = name,
                        ifname,
                        ifindex = i,
                        "interface is back (or was recreated); repairing its map entries and XDP link"
                    );
                    changed = true;
                }
            }
        }
        self.links = now.into_iter().map(|(name, (_, _, i))| (name, i)).collect();
        if changed {
            let report = self.ports.reconcile();
            // A missing interface cannot be written into DEVMAP: expected
            // until it returns, so not worth more than a debug line.
            tracing::info!(
                recreated = report.recreated.len(),
                removed = report.removed.len(),
                rewritten = report.rewritten.len(),
                pending = report.failed.len(),
                "port maps reconciled after an interface change"
            );
            for f in &report.failed {
                tracing::debug!("{f}");
            }
            self.sync_local_links();
        }
        Ok(())
    }

    /// The uplink's MAC and MTU as the kernel has them now, into UPLINK
    /// (encap's outer source MAC and its frame limit), the view and the
    /// BFD engine's Geneve frames. Raising the MTU for jumbo frames, or a
    /// new MAC, must not need a restart. A failed read or write is logged
    /// and tried again at the next link change or watch.
    fn follow_uplink(&mut self) {
        let (mac, mtu) = match self.netlink.link(self.uplink.ifindex) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(uplink = self.uplink.ifname, "reading the uplink: {e:#}");
                return;
            }
        };
        let shown = MacAddr(mac).to_string();
        if shown == self.uplink.mac && mtu == self.uplink.mtu {
            return;
        }
        let written = self.uplink_map.get(&0, 0).and_then(|u| self.uplink_map.set(0, Uplink { mac, mtu, ..u }, 0));
        if let Err(e) = written {
            tracing::warn!(uplink = self.uplink.ifname, "writing the UPLINK map: {e}");
            return;
        }
        tracing::info!(
            uplink = self.uplink.ifname,
            mac = shown,
            mtu,
            old_mac = self.uplink.mac,
            old_mtu = self.uplink.mtu,
            "uplink changed; encap follows"
        );
        if shown != self.uplink.mac {
            self.hooks.uplink_mac_changed(mac);
        }
        self.uplink.mac = shown;
        self.uplink.mtu = mtu;
        self.generation.bump();
    }

    pub fn handle(&mut self, req: Request) -> Result<Value> {
        match req {
            Request::PortAdd(a) => self.port_add(&a),
            Request::PortDel { name } => self.port_del(&name),
            Request::PortList => Ok(json!(self.port_views(Some("local")))),
            Request::TunnelAdd(a) => self.tunnel_add(&a),
            Request::TunnelDel { name } => self.tunnel_del(&name),
            Request::TunnelList => Ok(json!(self.port_views(Some("tunnel")))),
            Request::BindingAdd(b) => self.binding_add(&b),
            Request::BindingDel { vni, mac } => self.binding_del(vni, mac),
            Request::BindingList => Ok(json!(self.binding_views())),
            Request::Show => Ok(serde_json::to_value(self.show())?),
            Request::Stats => Ok(serde_json::to_value(self.stats()?)?),
            Request::BfdShow { name } => {
                let mut sessions = self.hooks.bfd_sessions();
                if let Some(name) = &name {
                    sessions.retain(|s| &s.name == name);
                    if sessions.is_empty() {
                        bail!("no bfd session named {name:?}");
                    }
                }
                Ok(serde_json::to_value(sessions)?)
            }
            Request::BfdPeerAdd(p) => self.peer_add(&p),
            Request::BfdPeerDel { name } => self.peer_del(&name),
            Request::BfdPeerList => Ok(json!(self.peer_views())),
        }
    }

    /// Notices BFD state changes (called every `bfd::WATCH_PERIOD`).
    pub(super) fn watch_bfd(&mut self) {
        self.hooks.watch();
    }

    // --- Single-hop BFD peers --------------------------------------------

    fn check_peer(&self, p: &BfdPeerArgs, field: &str) -> Result<()> {
        if p.name.is_empty() || p.name.len() > 64 || p.name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!("{field}.name: {:?} is not a session name (1..=64 characters, no whitespace)", p.name);
        }
        let fields = [format!("{field}.min_tx_ms"), format!("{field}.min_rx_ms"), format!("{field}.detect_mult")];
        BfdOverride::of_peer(p).check([&fields[0], &fields[1], &fields[2]]).map_err(|e| anyhow!("{}", e.0))?;
        if !p.peer_ip.to_canonical().is_ipv4() {
            bail!("{field}.peer_ip: {} is not an IPv4 address (single-hop BFD runs over IPv4)", p.peer_ip);
        }
        match p.local_ip {
            Some(a) if !a.to_canonical().is_ipv4() => bail!("{field}.local_ip: {a} is not an IPv4 address"),
            None if !self.uplink.local_ips.iter().any(|a| a.is_ipv4()) => {
                bail!("{field}.local_ip: the gateway has no IPv4 --local-ip; give one")
            }
            _ => {}
        }
        if let Some(ifname) = &p.ifname {
            if super::ifindex(ifname).is_none() {
                bail!("{field}.ifname: {ifname:?}: no such interface");
            }
        }
        Ok(())
    }

    fn peer_add(&mut self, p: &BfdPeerArgs) -> Result<Value> {
        self.check_peer(p, "bfd peer")?;
        if let Some(old) = self.peers.get(&p.name) {
            if old == p {
                return Ok(json!(self.peer_view(old)));
            }
            bail!("bfd peer {:?} already exists with other settings; delete it first", p.name);
        }
        if self.ports.get(&p.name).is_some() {
            bail!("bfd peer: name: {:?} is already a port or tunnel", p.name);
        }
        self.hooks.peer_added(p, &BfdOverride::of_peer(p).over(&self.bfd))?;
        self.peers.insert(p.name.clone(), p.clone());
        if let Err(e) = self.store.set_bfd_peers(&self.peers) {
            self.peers.remove(&p.name);
            self.hooks.peer_removed(&p.name);
            return Err(e.context("bfd peer: storing it"));
        }
        tracing::info!(peer = p.name, ip = %p.peer_ip, "bfd peer added");
        Ok(json!(self.peer_view(p)))
    }

    fn peer_del(&mut self, name: &str) -> Result<Value> {
        let p = self.peers.remove(name).ok_or_else(|| anyhow!("no bfd peer named {name:?}"))?;
        if let Err(e) = self.store.set_bfd_peers(&self.peers) {
            self.peers.insert(name.to_owned(), p);
            return Err(e.context("bfd peer: storing the deletion"));
        }
        self.hooks.peer_removed(name);
        tracing::info!(peer = name, "bfd peer deleted");
        Ok(json!({ "name": name }))
    }

    fn peer_view(&self, p: &BfdPeerArgs) -> BfdPeerView {
        let s = BfdOverride::of_peer(p).over(&self.bfd);
        let session = self.hooks.bfd_sessions().into_iter().find(|v| v.name == p.name && v.kind == "peer");
        BfdPeerView {
            name: p.name.clone(),
            peer_ip: p.peer_ip,
            ifname: p.ifname.clone().unwrap_or_else(|| self.uplink.ifname.clone()),
            local_ip: p
                .local_ip
                .or_else(|| self.uplink.local_ips.iter().copied().find(|a| a.is_ipv4()))
                .unwrap_or(IpAddr::from([0, 0, 0, 0])),
            echo: p.echo,
            min_tx_ms: s.min_tx_ms,
            min_rx_ms: s.min_rx_ms,
            detect_mult: s.detect_mult,
            state: session.map(|v| v.local_state),
            from_config: self.owned.bfd_peers.contains(&p.name),
        }
    }

    fn peer_views(&self) -> Vec<BfdPeerView> {
        self.peers.values().map(|p| self.peer_view(p)).collect()
    }

    fn port_add(&mut self, a: &PortArgs) -> Result<Value> {
        self.check_port_vs_bindings(a)?;
        let spec = local_spec(a);
        let added = self.ports.add(&spec, Instant::now())?;
        if let Added::Created(_) = added {
            if let Err(e) = attach_local(&mut self.ebpf, &self.pins, self.mode, &a.ifname) {
                // All or nothing: the port goes again, its entries with it.
                if let Err(undo) = self.ports.delete(&a.name, Instant::now()) {
                    tracing::warn!("undoing port {:?} after the attach failed: {undo}", a.name);
                }
                return Err(e.context(format!("port {:?}", a.name)));
            }
        }
        self.note_new_links();
        tracing::info!(port = a.name, ofport = added.ofport().get(), "local port added");
        Ok(json!(self.view(self.ports.get(&a.name).expect("just added"), &BTreeMap::new())))
    }

    /// A local port may not take a MAC or IP a remote binding holds.
    fn check_port_vs_bindings(&self, a: &PortArgs) -> Result<()> {
        if let Some(b) = self.bindings.get(&(a.vni, a.mac)) {
            bail!(
                "port {:?}: mac {} in VNI {} is bound to a remote port behind tunnel {:?}",
                a.name,
                a.mac,
                a.vni,
                b.tunnel
            );
        }
        if let Some(ip) = a.ip {
            if let Some(b) = self
                .bindings
                .values()
                .find(|b| b.vni == a.vni && b.ip.map(|i| i.to_canonical()) == Some(ip.to_canonical()))
            {
                bail!(
                    "port {:?}: ip {ip} in VNI {} is bound to a remote port behind tunnel {:?}",
                    a.name,
                    a.vni,
                    b.tunnel
                );
            }
        }
        Ok(())
    }

    fn port_del(&mut self, name: &str) -> Result<Value> {
        let record = self.ports.get(name).cloned().ok_or_else(|| anyhow!("no port named {name:?}"))?;
        let PortSpec::Local(p) = &record.spec else {
            bail!("{name:?} is a tunnel; delete it with `xgw tunnel del`");
        };
        self.ports.delete(name, Instant::now())?;
        pins::detach(&self.pins.local_link(&p.ifname))?;
        tracing::info!(port = name, ofport = record.ofport.get(), "local port deleted");
        Ok(json!({ "name": name, "ofport": record.ofport.get() }))
    }

    fn tunnel_add(&mut self, a: &TunnelArgs) -> Result<Value> {
        self.check_tunnel_bfd(a, ["tunnel: bfd_min_tx_ms", "tunnel: bfd_min_rx_ms", "tunnel: bfd_detect_mult"])?;
        if a.bfd && self.peers.contains_key(&a.name) {
            bail!("tunnel: name: {:?} is already a bfd peer", a.name);
        }
        let over = BfdOverride::of_tunnel(a);
        let spec = tunnel_spec(a);
        let added = self.ports.add(&spec, Instant::now())?;
        match (added, &spec) {
            (Added::Created(ofport), PortSpec::Tunnel(t)) => {
                self.resolve_nexthop(&a.name, ofport, a.remote_ip);
                let nexthop = self.nexthops.get(&a.name).and_then(|n| n.mac);
                let mut hooked = false;
                let done = self.set_tunnel_bfd(&a.name, over).and_then(|()| {
                    hooked = true;
                    self.hooks.tunnel_added(t, ofport, &over.over(&self.bfd), nexthop)
                });
                if let Err(e) = done {
                    // All or nothing: the tunnel goes again, its entries with it.
                    if hooked {
                        let _ = self.set_tunnel_bfd(&a.name, BfdOverride::default());
                    }
                    if let Err(undo) = self.ports.delete(&a.name, Instant::now()) {
                        tracing::warn!("undoing tunnel {:?} after BFD refused it: {undo}", a.name);
                    }
                    self.nexthops.remove(&a.name);
                    return Err(e);
                }
                tracing::info!(tunnel = a.name, ofport = ofport.get(), "tunnel added");
            }
            // The same tunnel again: its BFD timers may be new (a Poll
            // Sequence moves a running session to them).
            (Added::Existing(_), _) if a.bfd && self.tunnel_bfd.get(&a.name).copied().unwrap_or_default() != over => {
                self.hooks.bfd_settings_changed(&a.name, &over.over(&self.bfd))?;
                self.set_tunnel_bfd(&a.name, over)?;
                tracing::info!(tunnel = a.name, "tunnel's bfd timers changed");
            }
            _ => {}
        }
        Ok(json!(self.view(self.ports.get(&a.name).expect("just added"), &self.bfd_map())))
    }

    fn tunnel_del(&mut self, name: &str) -> Result<Value> {
        let record = self.ports.get(name).cloned().ok_or_else(|| anyhow!("no tunnel named {name:?}"))?;
        if !matches!(record.spec, PortSpec::Tunnel(_)) {
            bail!("{name:?} is a local port; delete it with `xgw port del`");
        }
        let users: Vec<&BindingArgs> = self.bindings.values().filter(|b| b.tunnel == name).collect();
        if let Some(b) = users.first() {
            bail!(
                "tunnel {name:?} carries {} binding(s) (first: vni {} mac {}); delete them first",
                users.len(),
                b.vni,
                b.mac
            );
        }
        self.ports.delete(name, Instant::now())?;
        self.hooks.tunnel_removed(name, record.ofport);
        self.nexthops.remove(name);
        if let Err(e) = self.set_tunnel_bfd(name, BfdOverride::default()) {
            tracing::warn!(tunnel = name, "forgetting its bfd timers: {e:#}");
        }
        tracing::info!(tunnel = name, ofport = record.ofport.get(), "tunnel deleted");
        Ok(json!({ "name": name, "ofport": record.ofport.get() }))
    }

    // --- Remote bindings -------------------------------------------------

    fn tunnel_ofport(&self, tunnel: &str) -> Result<OfPort> {
        match self.ports.get(tunnel) {
            Some(r) if matches!(r.spec, PortSpec::Tunnel(_)) => Ok(r.ofport),
            Some(_) => bail!("binding: tunnel: {tunnel:?} is a local port, not a tunnel"),
            None => bail!("binding: tunnel: no tunnel named {tunnel:?}"),
        }
    }

    fn check_binding(&self, b: &BindingArgs) -> Result<OfPort> {
        if b.vni > VNI_MAX {
            bail!("binding: vni: {} is above 2^24-1", b.vni);
        }
        if !b.mac.is_unicast() {
            bail!("binding: mac: {} is not a unicast address", b.mac);
        }
        if b.port_key == 0 || b.port_key > PORT_KEY_MAX {
            bail!("binding: port_key: {} is out of range (1..={PORT_KEY_MAX})", b.port_key);
        }
        if let Some(ip) = b.ip {
            let ok = match ip {
                IpAddr::V4(a) => !(a.is_unspecified() || a.is_multicast() || a.is_broadcast()),
                IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
            };
            if !ok {
                bail!("binding: ip: {ip} is not a unicast address");
            }
        }
        let ofport = self.tunnel_ofport(&b.tunnel)?;
        for r in self.ports.ports() {
            if let PortSpec::Local(p) = &r.spec {
                if p.vni == b.vni && p.mac == b.mac {
                    bail!("binding: mac: {} in VNI {} belongs to local port {:?}", b.mac, b.vni, p.name);
                }
                if let (Some(mine), Some(theirs)) = (b.ip, p.ip) {
                    if p.vni == b.vni && mine.to_canonical() == theirs.to_canonical() {
                        bail!("binding: ip: {mine} in VNI {} belongs to local port {:?}", b.vni, p.name);
                    }
                }
            }
        }
        if let Some(ip) = b.ip {
            let clash = self.bindings.values().find(|o| {
                (o.vni, o.mac) != (b.vni, b.mac)
                    && o.vni == b.vni
                    && o.ip.map(|i| i.to_canonical()) == Some(ip.to_canonical())
            });
            if let Some(o) = clash {
                bail!("binding: ip: {ip} in VNI {} is already bound to mac {}", b.vni, o.mac);
            }
        }
        Ok(ofport)
    }

    fn fdb_remote(b: &BindingArgs, ofport: OfPort) -> (FdbKey, FdbEntry) {
        (
            FdbKey { vni: b.vni, mac: b.mac.0, _pad: [0; 2] },
            FdbEntry { ofport: ofport.get(), port_key: b.port_key, kind: FDB_REMOTE, _pad: [0; 3] },
        )
    }

    fn binding_add(&mut self, b: &BindingArgs) -> Result<Value> {
        if let Some(old) = self.bindings.get(&(b.vni, b.mac)) {
            if old == b {
                return Ok(json!(self.binding_view(old)));
            }
            bail!("binding: vni {} mac {} is already bound (tunnel {:?}); delete it first", b.vni, b.mac, old.tunnel);
        }
        let ofport = self.check_binding(b)?;
        let (key, entry) = Self::fdb_remote(b, ofport);
        self.fdb.insert(key, entry, NOEXIST).map_err(|e| anyhow!("binding: fdb insert: {e}"))?;
        self.generation.bump();
        if let Some(ip) = b.ip {
            let nk = NeighKey { vni: b.vni, ip: ip16(ip) };
            if let Err(e) = self.neigh.insert(nk, Neigh { mac: b.mac.0, _pad: [0; 2] }, NOEXIST) {
                let _ = self.fdb.remove(&key);
                self.generation.bump();
                bail!("binding: neighbour insert for {ip}: {e}");
            }
        }
        if let Err(e) = self.store.put_binding(b) {
            self.remove_binding_entries(b);
            return Err(e.context("binding: storing it"));
        }
        self.bindings.insert((b.vni, b.mac), b.clone());
        tracing::info!(vni = b.vni, mac = %b.mac, tunnel = b.tunnel, "binding added");
        Ok(json!(self.binding_view(b)))
    }

    fn remove_binding_entries(&mut self, b: &BindingArgs) {
        let _ = self.fdb.remove(&FdbKey { vni: b.vni, mac: b.mac.0, _pad: [0; 2] });
        self.generation.bump();
        if let Some(ip) = b.ip {
            let _ = self.neigh.remove(&NeighKey { vni: b.vni, ip: ip16(ip) });
        }
    }

    fn binding_del(&mut self, vni: u32, mac: MacAddr) -> Result<Value> {
        let b = self.bindings.get(&(vni, mac)).cloned().ok_or_else(|| anyhow!("no binding for vni {vni} mac {mac}"))?;
        self.store.delete_binding(vni, mac)?;
        self.remove_binding_entries(&b);
        self.bindings.remove(&(vni, mac));
        tracing::info!(vni, %mac, "binding deleted");
        Ok(json!(self.binding_view(&b)))
    }

    /// FDB_REMOTE and their NEIGH entries equal to the stored bindings, with
    /// each tunnel's current number.
    fn reconcile_bindings(&mut self) {
        let mut want_neigh: BTreeSet<(u32, [u8; 16])> = BTreeSet::new();
        let bindings: Vec<BindingArgs> = self.bindings.values().cloned().collect();
        for b in &bindings {
            let ofport = match self.tunnel_ofport(&b.tunnel) {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(vni = b.vni, mac = %b.mac, "stored binding not applied: {e}");
                    continue;
                }
            };
            let (key, entry) = Self::fdb_remote(b, ofport);
            if self.fdb.get(&key, 0).ok() != Some(entry) {
                tracing::info!(vni = b.vni, mac = %b.mac, "restoring the binding's fdb entry");
                if let Err(e) = self.fdb.insert(key, entry, 0) {
                    tracing::warn!(vni = b.vni, mac = %b.mac, "fdb: {e}");
                }
            }
            if let Some(ip) = b.ip {
                let nk = NeighKey { vni: b.vni, ip: ip16(ip) };
                want_neigh.insert((b.vni, nk.ip));
                let value = Neigh { mac: b.mac.0, _pad: [0; 2] };
                if self.neigh.get(&nk, 0).ok() != Some(value) {
                    if let Err(e) = self.neigh.insert(nk, value, 0) {
                        tracing::warn!(vni = b.vni, %ip, "neighbour: {e}");
                    }
                }
            }
        }
        let stale_fdb: Vec<FdbKey> = self
            .fdb
            .iter()
            .filter_map(|r| r.ok())
            .filter(|(k, v)| v.kind == FDB_REMOTE && !self.bindings.contains_key(&(k.vni, MacAddr(k.mac))))
            .map(|(k, _)| k)
            .collect();
        let stale_neigh: Vec<NeighKey> = self
            .neigh
            .iter()
            .filter_map(|r| r.ok())
            .filter(|(k, v)| {
                let remote = self
                    .fdb
                    .get(&FdbKey { vni: k.vni, mac: v.mac, _pad: [0; 2] }, 0)
                    .map(|f| f.kind != FDB_LOCAL)
                    .unwrap_or(false);
                remote && !want_neigh.contains(&(k.vni, k.ip))
            })
            .map(|(k, _)| k)
            .collect();
        for k in &stale_neigh {
            let _ = self.neigh.remove(k);
        }
        for k in &stale_fdb {
            let _ = self.fdb.remove(k);
        }
        if !(stale_fdb.is_empty() && stale_neigh.is_empty()) {
            tracing::info!(fdb = stale_fdb.len(), neigh = stale_neigh.len(), "removed remote entries no binding owns");
        }
        self.generation.bump();
    }

    // --- The config file ------------------------------------------------

    /// Makes the config file's ports, tunnels and bindings the committed
    /// ones, leaving what the API added alone (unless the file names it).
    /// Everything is checked first, against a copy of the port map in
    /// memory: a file that cannot be applied whole changes nothing.
    pub(super) fn apply_config(&mut self, config: &Config) -> Result<()> {
        let names: BTreeMap<&str, String> = config
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), format!("ports[{i}]")))
            .chain(config.tunnels.iter().enumerate().map(|(i, t)| (t.name.as_str(), format!("tunnels[{i}]"))))
            .collect();
        for (i, p) in config.ports.iter().enumerate() {
            if super::ifindex(&p.ifname).is_none() {
                bail!("config: ports[{i}].ifname: {:?}: no such interface", p.ifname);
            }
        }
        for (i, t) in config.tunnels.iter().enumerate() {
            let f = |k: &str| format!("tunnels[{i}].{k}");
            self.check_tunnel_bfd(t, [&f("bfd_min_tx_ms"), &f("bfd_min_rx_ms"), &f("bfd_detect_mult")])
                .map_err(|e| anyhow!("config: {e:#}"))?;
        }
        // Peers the API added stay, unless the file names them.
        let file_peers: BTreeSet<&str> = config.bfd_peers.iter().map(|p| p.name.as_str()).collect();
        let kept_peers: Vec<BfdPeerArgs> = self
            .peers
            .values()
            .filter(|p| !self.owned.bfd_peers.contains(&p.name) && !file_peers.contains(p.name.as_str()))
            .cloned()
            .collect();
        for (i, p) in config.bfd_peers.iter().enumerate() {
            self.check_peer(p, &format!("bfd_peers[{i}]")).map_err(|e| anyhow!("config: {e:#}"))?;
            if let Some(r) = self
                .ports
                .get(&p.name)
                .filter(|r| !names.contains_key(r.name()) && !self.owned.ports.contains(r.name()))
            {
                bail!(
                    "config: bfd_peers[{i}].name: {:?} is already a port or tunnel (added through the API)",
                    r.name()
                );
            }
        }
        for p in &kept_peers {
            if names.contains_key(p.name.as_str()) {
                bail!(
                    "config: {}.name: {:?} is already a bfd peer (added through the API)",
                    names[p.name.as_str()],
                    p.name
                );
            }
        }
        let mut desired: Vec<PortSpec> = self
            .ports
            .ports()
            .filter(|r| !self.owned.ports.contains(r.name()) && !names.contains_key(r.name()))
            .map(|r| r.spec.clone())
            .collect();
        desired.extend(config.ports.iter().map(local_spec));
        desired.extend(config.tunnels.iter().map(tunnel_spec));

        // Bindings kept from the API must still find their tunnel.
        let config_bindings: BTreeSet<(u32, MacAddr)> = config.bindings.iter().map(|b| (b.vni, b.mac)).collect();
        let desired_tunnels: BTreeSet<&str> =
            desired.iter().filter(|s| matches!(s, PortSpec::Tunnel(_))).map(|s| s.name()).collect();
        for b in self.bindings.values() {
            let kept = !self.owned.bindings.contains(&(b.vni, b.mac)) && !config_bindings.contains(&(b.vni, b.mac));
            if kept && !desired_tunnels.contains(b.tunnel.as_str()) {
                bail!(
                    "config: the file removes tunnel {:?}, which binding vni {} mac {} (added through the API) uses",
                    b.tunnel,
                    b.vni,
                    b.mac
                );
            }
        }

        // Dry run on copies.
        let mut store = MemStore::new();
        for r in self.ports.ports() {
            store.put(r).map_err(|e| anyhow!("{e}"))?;
        }
        let mut trial = PortMap::open(MemDatapath::new(), store, AllocatorConfig::default())?;
        trial.reconcile();
        let report = trial.apply_desired(&desired, Instant::now())?;
        if let Some((name, e)) = report.failed.first() {
            let path = names.get(name.as_str()).cloned().unwrap_or_else(|| format!("port {name:?}"));
            bail!("config: {path}: {e}");
        }

        // Bindings the file drops or changes go first: they may hold a
        // tunnel the file removes.
        let old_owned = self.owned.bindings.clone();
        for key in old_owned {
            let changed = match (self.bindings.get(&key), config.bindings.iter().find(|b| (b.vni, b.mac) == key)) {
                (Some(old), Some(new)) => old != new,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if changed {
                self.binding_del(key.0, key.1)?;
            }
        }
        for b in &config.bindings {
            if self.bindings.get(&(b.vni, b.mac)).is_some_and(|old| old != b) {
                self.binding_del(b.vni, b.mac)?;
            }
        }

        // BFD timers first: the tunnels added below start with them.
        self.bfd = config.bfd;
        for t in &config.tunnels {
            self.tunnel_bfd.remove(&t.name);
            let over = BfdOverride::of_tunnel(t);
            if !over.is_empty() {
                self.tunnel_bfd.insert(t.name.clone(), over);
            }
        }

        let before: BTreeMap<String, PortRecord> =
            self.ports.ports().map(|r| (r.name().to_owned(), r.clone())).collect();
        let report = self.ports.apply_desired(&desired, Instant::now())?;
        if let Some((name, e)) = report.failed.first() {
            bail!("config: applying port {name:?}: {e}");
        }
        self.after_ports_changed(&before);
        let tunnels: BTreeSet<String> = self.tunnel_records().map(|r| r.name().to_owned()).collect();
        self.tunnel_bfd.retain(|name, _| tunnels.contains(name));
        // Sessions that stayed: new `[bfd]` or own timers by Poll Sequence.
        for name in &tunnels {
            if let Err(e) = self.hooks.bfd_settings_changed(name, &self.bfd_of(name)) {
                tracing::warn!("{e:#}");
            }
        }
        self.apply_config_peers(config, kept_peers)?;

        for b in &config.bindings {
            self.binding_add(b).map_err(|e| anyhow!("config: {e:#}"))?;
        }
        self.reconcile_bindings();
        self.owned = ConfigOwned {
            ports: names.keys().map(|n| n.to_string()).collect(),
            bindings: config_bindings,
            bfd_peers: file_peers.iter().map(|n| n.to_string()).collect(),
        };
        self.store.set_config_owned(&self.owned)?;
        self.store.set_bfd(&self.bfd)?;
        self.store.set_tunnel_bfd(&self.tunnel_bfd)?;
        self.store.set_bfd_peers(&self.peers)?;
        tracing::info!(
            added = report.added.len(),
            replaced = report.replaced.len(),
            deleted = report.deleted.len(),
            unchanged = report.unchanged,
            bindings = config.bindings.len(),
            "config applied"
        );
        Ok(())
    }

    /// The file's peers and the API's kept ones become the sessions; those
    /// that stay follow new timers.
    fn apply_config_peers(&mut self, config: &Config, kept: Vec<BfdPeerArgs>) -> Result<()> {
        let mut wanted: BTreeMap<String, (BfdPeerArgs, String)> =
            kept.into_iter().map(|p| (p.name.clone(), (p, "bfd peer".to_owned()))).collect();
        for (i, p) in config.bfd_peers.iter().enumerate() {
            wanted.insert(p.name.clone(), (p.clone(), format!("config: bfd_peers[{i}]")));
        }
        let gone: Vec<String> = self
            .peers
            .iter()
            .filter(|(n, p)| wanted.get(*n).is_none_or(|(w, _)| w != *p))
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            self.peers.remove(&name);
            self.hooks.peer_removed(&name);
        }
        for (name, (p, path)) in wanted {
            let settings = BfdOverride::of_peer(&p).over(&self.bfd);
            if self.peers.contains_key(&name) {
                if let Err(e) = self.hooks.bfd_settings_changed(&name, &settings) {
                    tracing::warn!("{e:#}");
                }
                continue;
            }
            self.hooks.peer_added(&p, &settings).map_err(|e| anyhow!("{path}: {e:#}"))?;
            self.peers.insert(name, p);
        }
        Ok(())
    }

    /// Links, BFD hooks and next hops follow a batch of port changes.
    fn after_ports_changed(&mut self, before: &BTreeMap<String, PortRecord>) {
        let after: BTreeMap<String, PortRecord> =
            self.ports.ports().map(|r| (r.name().to_owned(), r.clone())).collect();
        for (name, old) in before {
            if after.get(name) != Some(old) {
                if let PortSpec::Tunnel(_) = old.spec {
                    self.hooks.tunnel_removed(name, old.ofport);
                    self.nexthops.remove(name);
                }
            }
        }
        for (name, new) in &after {
            if before.get(name) != Some(new) {
                if let PortSpec::Tunnel(t) = &new.spec {
                    self.resolve_nexthop(name, new.ofport, t.remote);
                    let nexthop = self.nexthops.get(name).and_then(|n| n.mac);
                    if let Err(e) = self.hooks.tunnel_added(t, new.ofport, &self.bfd_of(name), nexthop) {
                        tracing::warn!("{e:#}");
                    }
                }
            }
        }
        self.note_new_links();
        self.sync_local_links();
    }

    /// Records the interface a new local port's entries were just written
    /// for, so that the link watch sees its deletion as a change even when
    /// it comes before the watch's next run.
    fn note_new_links(&mut self) {
        for r in self.ports.ports() {
            if let PortSpec::Local(p) = &r.spec {
                if !self.links.contains_key(&p.name) {
                    self.links.insert(p.name.clone(), super::ifindex(&p.ifname));
                }
            }
        }
    }

    // --- Next hops --------------------------------------------------------

    /// Resolves the next hops not yet resolved, and (with `all`, or once
    /// `NEXTHOP_RECHECK` has passed) re-checks the others.
    pub(super) fn refresh_nexthops(&mut self, all: bool) {
        for (name, ofport, remote) in self.tunnel_remotes() {
            let due = match self.nexthops.get(&name) {
                Some(s) => !s.resolved || s.checked.is_none_or(|t| t.elapsed() >= NEXTHOP_RECHECK),
                None => true,
            };
            if all || due {
                self.resolve_nexthop(&name, ofport, remote);
            }
        }
    }

    /// Every tunnel's name, OpenFlow number and remote.
    fn tunnel_remotes(&self) -> Vec<(String, OfPort, IpAddr)> {
        self.tunnel_records()
            .filter_map(|r| match &r.spec {
                PortSpec::Tunnel(t) => Some((t.name.clone(), r.ofport, t.remote)),
                PortSpec::Local(_) => None,
            })
            .collect()
    }

    /// Acts on the kernel's announcements: a route change re-resolves every
    /// next hop; a neighbour on the uplink with a new usable MAC re-resolves
    /// the tunnels that go through it (an unchanged MAC, the echo of a
    /// nudge, costs nothing); a link change runs the link watch at once.
    pub(super) fn netlink_events(&mut self, events: &[Event]) -> Result<()> {
        let mut all = false;
        let mut links = false;
        let mut redo = BTreeSet::new();
        for e in events {
            match *e {
                Event::Neighbour { ifindex, ip, mac: Some(mac) } if ifindex == self.uplink.ifindex => {
                    let ip = ip.to_canonical();
                    redo.extend(
                        self.nexthops
                            .iter()
                            .filter(|(_, s)| s.via == Some(ip) && s.mac != Some(mac))
                            .map(|(name, _)| name.clone()),
                    );
                }
                Event::Neighbour { .. } => {}
                Event::Route => all = true,
                Event::Overrun => {
                    tracing::info!("the kernel dropped link, neighbour or route announcements (socket buffer full); re-checking every next hop and link");
                    all = true;
                    links = true;
                }
                Event::Link => links = true,
            }
        }
        if all {
            self.refresh_nexthops(true);
        } else if !redo.is_empty() {
            for (name, ofport, remote) in self.tunnel_remotes() {
                if redo.contains(&name) {
                    self.resolve_nexthop(&name, ofport, remote);
                }
            }
        }
        if links {
            self.watch_links()?;
        }
        Ok(())
    }

    /// Looks up the route and neighbour toward `remote` and writes the MAC
    /// into the tunnel's entry when it changed. An unresolved next hop
    /// leaves the entry as it is: a MAC that worked is better than zeroes.
    fn resolve_nexthop(&mut self, name: &str, ofport: OfPort, remote: IpAddr) {
        let remote = remote.to_canonical();
        let mut via = None;
        let result: Result<Option<[u8; 6]>> = (|| {
            let route = self.netlink.route_get(remote)?;
            if route.oif != self.uplink.ifindex {
                bail!("the route to {remote} leaves through interface {}, not the uplink", route.oif);
            }
            via = Some(route.via);
            let n = self.netlink.neighbour(route.oif, route.via)?;
            if !n.is_some_and(|n| n.confirmed) {
                self.netlink.nudge(route.oif, route.via)?;
            }
            Ok(n.and_then(|n| n.mac))
        })();
        let state = self.nexthops.entry(name.to_owned()).or_default();
        state.checked = Some(Instant::now());
        state.via = via;
        let mut changed = false;
        match result {
            Ok(Some(mac)) => {
                state.resolved = true;
                state.error = None;
                match state.mac {
                    Some(old) if old != mac => {
                        state.changes += 1;
                        tracing::info!(tunnel = name, nexthop = %MacAddr(mac), old = %MacAddr(old), changes = state.changes, "tunnel next hop changed");
                        changed = true;
                    }
                    Some(_) => {}
                    None => {
                        tracing::info!(tunnel = name, nexthop = %MacAddr(mac), "tunnel next hop resolved");
                        changed = true;
                    }
                }
                state.mac = Some(mac);
            }
            Ok(None) => {
                state.resolved = false;
                state.error = Some("neighbour not resolved yet".into());
            }
            Err(e) => {
                if state.error.as_deref() != Some(&format!("{e:#}")) {
                    tracing::warn!(tunnel = name, "next hop: {e:#}");
                }
                state.resolved = false;
                state.error = Some(format!("{e:#}"));
            }
        }
        let Some(mac) = state.mac else { return };
        if changed {
            self.hooks.nexthop_changed(name, mac);
        }
        let key = u32::from(ofport.get());
        match self.tunnels.get(&key, 0) {
            Ok(t) if t.nexthop_mac != mac => {
                if let Err(e) = self.tunnels.insert(key, Tunnel { nexthop_mac: mac, ..t }, EXIST) {
                    tracing::warn!(tunnel = name, "writing the next hop: {e}");
                }
                self.generation.bump();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(tunnel = name, "reading the tunnel entry: {e}"),
        }
    }

    // --- Views --------------------------------------------------------------

    /// The BFD sessions by name, read once for a whole view.
    fn bfd_map(&self) -> BTreeMap<String, BfdSessionView> {
        self.hooks.bfd_sessions().into_iter().map(|s| (s.name.clone(), s)).collect()
    }

    fn view(&self, r: &PortRecord, bfd: &BTreeMap<String, BfdSessionView>) -> PortView {
        let from_config = self.owned.ports.contains(r.name());
        match &r.spec {
            PortSpec::Local(p) => PortView {
                error: self
                    .links
                    .get(&p.name)
                    .is_some_and(Option::is_none)
                    .then(|| format!("interface {} is gone; forwarding resumes when it returns", p.ifname)),
                name: p.name.clone(),
                ofport: r.ofport.get(),
                kind: "local".into(),
                vni: p.vni,
                ifname: Some(p.ifname.clone()),
                port_key: Some(p.port_key),
                mac: Some(p.mac.to_string()),
                ip: p.ip,
                remote_ip: None,
                ovn_metadata: None,
                nexthop: None,
                bfd: None,
                from_config,
            },
            PortSpec::Tunnel(t) => {
                let nh = self.nexthops.get(&t.name).cloned().unwrap_or_default();
                PortView {
                    name: t.name.clone(),
                    ofport: r.ofport.get(),
                    kind: "tunnel".into(),
                    vni: t.vni,
                    ifname: None,
                    port_key: None,
                    mac: None,
                    ip: None,
                    remote_ip: Some(t.remote),
                    ovn_metadata: Some(t.ovn_metadata),
                    nexthop: Some(Nexthop { mac: nh.mac.map(mac_str), resolved: nh.resolved, changes: nh.changes }),
                    error: None,
                    bfd: t.bfd.then(|| {
                        let s = bfd.get(&t.name).filter(|s| s.kind == "tunnel");
                        let timers = self.bfd_of(&t.name);
                        BfdView {
                            enabled: true,
                            state: s.map(|s| s.local_state.clone()),
                            flaps: s.map(|s| s.flap_count),
                            forwarding: s.is_some_and(|s| s.forwarding),
                            min_tx_ms: timers.min_tx_ms,
                            min_rx_ms: timers.min_rx_ms,
                            detect_mult: timers.detect_mult,
                        }
                    }),
                    from_config,
                }
            }
        }
    }

    fn port_views(&self, kind: Option<&str>) -> Vec<PortView> {
        let bfd = self.bfd_map();
        let mut v: Vec<PortView> =
            self.ports.ports().map(|r| self.view(r, &bfd)).filter(|v| kind.is_none_or(|k| v.kind == k)).collect();
        v.sort_by_key(|p| p.ofport);
        v
    }

    fn binding_view(&self, b: &BindingArgs) -> BindingView {
        BindingView {
            vni: b.vni,
            mac: b.mac.to_string(),
            ip: b.ip,
            tunnel: b.tunnel.clone(),
            ofport: self.ports.get(&b.tunnel).map(|r| r.ofport.get()).unwrap_or(0),
            port_key: b.port_key,
            from_config: self.owned.bindings.contains(&(b.vni, b.mac)),
        }
    }

    fn binding_views(&self) -> Vec<BindingView> {
        self.bindings.values().map(|b| self.binding_view(b)).collect()
    }

    pub fn ofports(&self) -> OfportsView {
        let a = self.ports.allocator();
        let (used, held_down) = (a.in_use(), a.held_down());
        OfportsView { used, held_down, free: usize::from(OfPort::MAX.get()) - used - held_down }
    }

    pub fn show(&self) -> ShowView {
        ShowView {
            uplink: self.uplink.clone(),
            bpffs: self.pins.dir.display().to_string(),
            state_dir: self.state_dir.clone(),
            ports: self.port_views(None),
            bindings: self.binding_views(),
            ofports: self.ofports(),
        }
    }

    pub fn stats(&self) -> Result<StatsView> {
        let sum = |m: &PerCpuArray<MapData, u64>, i: u32| -> Result<u64> { Ok(m.get(&i, 0)?.iter().sum()) };
        let mut ports = Vec::new();
        for v in self.port_views(None) {
            let per_cpu = self.port_stats.get(&u32::from(v.ofport), 0)?;
            let s = per_cpu.iter().fold(PortStats::default(), |mut a, s| {
                a.rx.packets += s.rx.packets;
                a.rx.bytes += s.rx.bytes;
                a.tx.packets += s.tx.packets;
                a.tx.bytes += s.tx.bytes;
                a
            });
            ports.push(PortStatsView {
                name: v.name,
                ofport: v.ofport,
                rx_packets: s.rx.packets,
                rx_bytes: s.rx.bytes,
                tx_packets: s.tx.packets,
                tx_bytes: s.tx.bytes,
            });
        }
        let mut drops = BTreeMap::new();
        for d in Drop::ALL {
            drops.insert(d.name().to_owned(), sum(&self.drops, d as u32)?);
        }
        let mut replies = BTreeMap::new();
        for r in Reply::ALL {
            replies.insert(r.name().to_owned(), sum(&self.replies, r as u32)?);
        }
        let (rx, echo_reflected, events_lost) = crate::bfd::counters(&self.ebpf)?;
        let bfd_drops = crate::bfd::drops(&self.ebpf)?.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        Ok(StatsView {
            ports,
            drops,
            replies,
            bfd: BfdCountersView { rx, echo_reflected, events_lost, drops: bfd_drops },
        })
    }

    /// Every BFD session (for the metrics).
    pub fn bfd_sessions(&self) -> Vec<BfdSessionView> {
        self.hooks.bfd_sessions()
    }

    /// Counts per port kind, for the metrics.
    pub fn port_kinds(&self) -> BTreeMap<String, String> {
        self.ports
            .ports()
            .map(|r| {
                (r.name().to_owned(), if matches!(r.spec, PortSpec::Local(_)) { "local" } else { "tunnel" }.to_owned())
            })
            .collect()
    }
}
