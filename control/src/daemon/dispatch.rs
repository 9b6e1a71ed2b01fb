//! The running daemon: one owner per resource, and the sequence each
//! request and each event runs through them. Nothing here writes a map or
//! the store by itself: ports, tunnels and bindings go through the port
//! map's transactions (which set up what a port needs outside the maps,
//! through `effects`), next hops through `PortMap::set_nexthop`, the uplink
//! through `Uplink`.
//!
//! | owner      | file          | holds                                               |
//! |------------|---------------|-----------------------------------------------------|
//! | `ports`    | `ofport/`     | committed ports, tunnels, bindings; the config maps  |
//! | `uplink`   | `uplink.rs`   | the underlay interface and the UPLINK map's value    |
//! | `links`    | `links.rs`    | `xgw_local` on local ports' interfaces, their watch  |
//! | `nexthops` | `nexthops.rs` | each tunnel's route and neighbour                    |
//! | `bfd`      | `bfd.rs`      | sessions, single-hop peers, `[bfd]` timers           |
//! | `owned`    | `desired.rs`  | what the config file owns                            |
//! | views      | `views.rs`    | show, stats, metrics (read-only)                     |
use crate::ofport::{Group, GroupChange};
use std::{collections::BTreeMap, net::IpAddr, time::Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::{
    bfd::Bfd,
    desired::{self, Ownership},
    effects::PortEffects,
    links::{Links, Watched},
    netlink::{Event, Netlink},
    nexthops::Nexthops,
    pins::Pins,
    uplink::{Link, Uplink},
    views::{Counters, Views},
    Ports,
};
use crate::{
    api::{Absent, BfdPeerArgs, Binding, Deleted, PortArgs, PortType, Reply, Request, TunnelArgs, TunnelSet},
    config::Config,
    ofport::{AllocatorConfig, Desired, MemDatapath, MemStore, PortMap, PortSpec, Store},
    types::{MacAddr, Name, Vni},
};

/// What a port transaction sets up outside the maps, borrowing the owners
/// of those things (and not the port map, which runs the transaction).
macro_rules! effects {
    ($d:ident) => {
        PortEffects { links: &mut $d.links, bfd: &mut $d.bfd, nexthops: &$d.nexthops }
    };
}

/// Store keys of what `bfd` owns.
const META_BFD: &str = "bfd";
const META_BFD_PEERS: &str = "bfd_peers";

pub struct Daemon {
    pub(super) ports: Ports,
    pub(super) uplink: Uplink,
    pub(super) links: Links,
    pub(super) nexthops: Nexthops,
    pub(super) bfd: Bfd,
    pub(super) owned: Ownership,
    /// What the Southbound owns (`ovn.rs`).
    pub(super) ovn_owned: super::ovn::OvnOwned,
    /// The chassis' settings and the session's status, when an OVN chassis.
    pub(super) ovn: Option<(super::ovn::Settings, tokio::sync::watch::Receiver<super::southbound::Status>)>,
    netlink: Netlink,
    counters: Counters,
    pub(super) pins: Pins,
    state_dir: String,
    started: Instant,
}

impl Daemon {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        ports: Ports,
        uplink: Uplink,
        links: Links,
        mut bfd: Bfd,
        netlink: Netlink,
        counters: Counters,
        pins: Pins,
        state_dir: &std::path::Path,
    ) -> Result<Daemon> {
        let store = ports.store();
        let owned: Ownership = store.meta(desired::META_KEY).context("the store's config ownership")?;
        let ovn_owned = store.meta(super::ovn::META_KEY).context("the store's Southbound ownership")?;
        let defaults = store.meta(META_BFD).context("the store's [bfd] timers")?;
        let peers: BTreeMap<Name, BfdPeerArgs> = store.meta(META_BFD_PEERS).context("the store's bfd peers")?;
        bfd.set_defaults(defaults, |_| Default::default());
        for p in peers.into_values() {
            bfd.restore_peer(p);
        }
        let nexthops = Nexthops::new(uplink.ifindex());
        Ok(Daemon {
            ports,
            uplink,
            links,
            nexthops,
            bfd,
            owned,
            ovn_owned,
            ovn: None,
            netlink,
            counters,
            pins,
            state_dir: state_dir.display().to_string(),
            started: Instant::now(),
        })
    }

    fn views(&self) -> Views<'_> {
        Views {
            ports: &self.ports,
            uplink: &self.uplink,
            links: &self.links,
            nexthops: &self.nexthops,
            bfd: &self.bfd,
            owned: &self.owned,
            counters: &self.counters,
            pins: &self.pins,
            state_dir: &self.state_dir,
            ovn: self.ovn.as_ref().map(|(settings, status)| (settings.chassis.as_str(), status.borrow().clone())),
            started: self.started,
        }
    }

    /// Brings the maps and links in line with the store, as a (re)started
    /// daemon must before it serves anything: the port map's reconcile, an
    /// XDP link on exactly the local ports' interfaces, the tunnels' and
    /// peers' BFD sessions (the engine adopts running ones), next hops.
    pub(super) fn adopt(&mut self) -> Result<()> {
        let report = self.ports.reconcile();
        tracing::info!(
            ports = self.ports.ports().count(),
            bindings = self.ports.bindings().count(),
            recreated = report.recreated.len(),
            removed = report.removed.len(),
            rewritten = report.rewritten.len(),
            failed = report.failed.len(),
            "reconciled the maps with the store"
        );
        self.links.sync(&self.local_ifnames());
        let tunnels: Vec<_> = self.tunnels().map(|(t, ofport)| (t.clone(), ofport)).collect();
        for (t, ofport) in &tunnels {
            if let Err(e) = self.bfd.add_tunnel(t, *ofport, None) {
                tracing::warn!("{e:#}");
            }
        }
        self.bfd.start_peers();
        self.refresh_nexthops(true);
        self.watch_links()
    }

    /// Local port -> its interface.
    fn local_ifnames(&self) -> BTreeMap<String, String> {
        self.ports
            .ports()
            .filter_map(|r| match &r.spec {
                PortSpec::Local(p) => Some((p.name.to_string(), p.ifname.to_string())),
                PortSpec::Tunnel(_) => None,
            })
            .collect()
    }

    fn tunnels(&self) -> impl Iterator<Item = (&crate::ofport::TunnelPort, crate::ofport::OfPort)> {
        self.ports.ports().filter_map(|r| match &r.spec {
            PortSpec::Tunnel(t) => Some((t, r.ofport)),
            PortSpec::Local(_) => None,
        })
    }

    pub fn handle(&mut self, req: Request) -> Result<Reply> {
        match req {
            Request::PortAdd(a) => self.port_add(&a.item, a.may_exist),
            Request::PortDel { name, if_exists } => self.port_del(&name, PortType::Local, if_exists),
            Request::PortList {} => Ok(Reply::Ports(self.views().ports(Some(PortType::Local)))),
            Request::TunnelAdd(a) => self.tunnel_add(&a.item, a.may_exist),
            Request::TunnelSet(s) => self.tunnel_set(&s),
            Request::TunnelDel { name, if_exists } => self.port_del(&name, PortType::Tunnel, if_exists),
            Request::TunnelList {} => Ok(Reply::Ports(self.views().ports(Some(PortType::Tunnel)))),
            Request::BindingAdd(b) => self.binding_add(&b.item, b.may_exist),
            Request::BindingDel { vni, mac, if_exists } => self.binding_del(vni, mac, if_exists),
            Request::BindingList {} => Ok(Reply::Bindings(self.views().bindings())),
            Request::GroupAdd(g) => self.group_add(&g.item, g.may_exist),
            Request::GroupSet(g) => self.group_set(&g),
            Request::GroupDel { vni, key, if_exists } => self.group_del(vni, key, if_exists),
            Request::GroupList {} => Ok(Reply::Groups(self.views().groups())),
            Request::Show {} => Ok(Reply::Show(Box::new(self.views().show()))),
            Request::Stats {} => Ok(Reply::Stats(self.views().stats()?)),
            Request::BfdShow { name: None } => Ok(Reply::BfdSessions(self.bfd.sessions())),
            Request::BfdShow { name: Some(name) } => {
                let session = self.bfd.sessions().into_iter().find(|s| s.name == name.as_str());
                Ok(Reply::BfdSession(session.ok_or_else(|| anyhow!("no bfd session named {:?}", name.as_str()))?))
            }
            Request::BfdPeerAdd(p) => self.peer_add(&p.item, p.may_exist),
            Request::BfdPeerDel { name, if_exists } => self.peer_del(&name, if_exists),
            Request::BfdPeerList {} => Ok(Reply::BfdPeers(self.views().peers())),
            Request::StoreExport {} => Ok(Reply::Store(self.ports.store().export()?)),
            Request::LogSet { set } => {
                let view = crate::logging::set(&set)?;
                // At warn: seen whatever the new levels are.
                tracing::warn!(filter = view.filter, "log levels changed");
                Ok(Reply::Log(view))
            }
            Request::LogShow {} => Ok(Reply::Log(crate::logging::show()?)),
        }
    }

    /// An add of a port or tunnel whose name is taken: ovs-vsctl's answer.
    /// The same object again is accepted with `--may-exist` (nothing
    /// changes); anything else is refused, naming what differs.
    fn existing_port(&self, what: &str, name: &Name, new: &PortSpec, may_exist: bool) -> Result<Option<Reply>> {
        let Some(r) = self.ports.get(name) else { return Ok(None) };
        if r.spec.kind() != new.kind() {
            bail!("{what} {:?}: name: already a {}", name.as_str(), r.spec.kind().name());
        }
        let ofport = r.ofport.get();
        let differs = match (&r.spec, new) {
            (PortSpec::Local(old), PortSpec::Local(_)) => differing(&port_args(old, r.ofport), &PortSpecArgs(new)),
            (PortSpec::Tunnel(old), PortSpec::Tunnel(_)) => differing(&tunnel_args(old, r.ofport), &PortSpecArgs(new)),
            _ => unreachable!("kinds checked above"),
        };
        if !differs.is_empty() {
            let how = if what == "tunnel" {
                "change it with `xgw tunnel set`, or delete it first"
            } else {
                "delete it first"
            };
            bail!(
                "{what} {:?} already exists (ofport {ofport}) with other settings ({}); {how}",
                name.as_str(),
                differs.join(", ")
            );
        }
        if !may_exist {
            bail!("{what} {:?} already exists (ofport {ofport}); --may-exist accepts an identical one", name.as_str());
        }
        Ok(Some(Reply::Port(self.views().port(name).expect("it exists"))))
    }

    /// A local port: one transaction (entries, `xgw_local` on its
    /// interface, record). The port map refuses a MAC, IP, key or
    /// interface another port or a binding holds, before any number.
    fn port_add(&mut self, a: &PortArgs, may_exist: bool) -> Result<Reply> {
        self.not_the_southbounds(
            self.ovn_owned.ports.contains(a.name.as_str()),
            &format!("port {:?}", a.name.as_str()),
        )?;
        if self.bfd.peer(&a.name).is_some() {
            bail!("port {:?}: name: already a bfd peer", a.name.as_str());
        }
        let spec = desired::local_spec(a);
        if let Some(reply) = self.existing_port("port", &a.name, &spec, may_exist)? {
            return Ok(reply);
        }
        let added = self.ports.add_with(&spec, Instant::now(), &mut effects!(self))?;
        tracing::info!(port = %a.name, ofport = added.ofport().get(), "local port added");
        Ok(Reply::Port(self.views().port(&a.name).expect("just added")))
    }

    fn tunnel_add(&mut self, a: &TunnelArgs, may_exist: bool) -> Result<Reply> {
        if self.bfd.peer(&a.name).is_some() {
            bail!("tunnel {:?}: name: already a bfd peer", a.name.as_str());
        }
        if let Some(reply) = self.existing_port("tunnel", &a.name, &desired::tunnel_spec(a), may_exist)? {
            return Ok(reply);
        }
        self.tunnel_commit(a)
    }

    /// `tunnel set`: the tunnel as it is, with what the request changes
    /// (BFD on or off, its timers; what is not given stays), committed in
    /// place: the running session moves to new timers by a Poll Sequence.
    fn tunnel_set(&mut self, s: &TunnelSet) -> Result<Reply> {
        let name = s.name.as_str();
        let (old, ofport) = match self.ports.get(name).map(|r| (&r.spec, r.ofport)) {
            Some((PortSpec::Tunnel(t), ofport)) => (t, ofport),
            Some((PortSpec::Local(_), _)) => bail!("{name:?} is a local port, not a tunnel"),
            None => bail!("no tunnel named {name:?}"),
        };
        let mut new = s.apply(&tunnel_args(old, ofport));
        // The number stays as it was asked for (or not).
        new.ofport = old.ofport_request;
        self.tunnel_commit(&new)
    }

    /// A tunnel: what BFD would refuse is refused first; its next hop is
    /// looked up before the transaction, so that its first entry already
    /// carries it; then one transaction (entries, BFD session, record).
    /// An existing tunnel with other BFD settings is changed in place
    /// (a Poll Sequence moves the running session to new timers, no flap).
    fn tunnel_commit(&mut self, a: &TunnelArgs) -> Result<Reply> {
        self.not_the_southbounds(
            self.ovn_owned.ports.contains(a.name.as_str()),
            &format!("tunnel {:?}", a.name.as_str()),
        )?;
        let spec = desired::tunnel_spec(a);
        let PortSpec::Tunnel(t) = &spec else { unreachable!("a tunnel spec") };
        let what = format!("tunnel {:?}", a.name.as_str());
        self.check_remote(a.remote_ip.get(), &format!("{what}: remote_ip"))?;
        let timers = ["bfd_min_tx_ms", "bfd_min_rx_ms", "bfd_detect_mult"].map(|f| format!("{what}: {f}"));
        self.bfd.check_tunnel(t, [&timers[0], &timers[1], &timers[2]])?;
        let known = self.ports.get(&a.name).is_some();
        if !known {
            self.resolve(&a.name, a.remote_ip.get());
        }
        let added = self.ports.add_with(&spec, Instant::now(), &mut effects!(self));
        let added = match added {
            Ok(added) => added,
            Err(e) => {
                if !known {
                    self.nexthops.forget(&a.name);
                }
                return Err(e.into());
            }
        };
        tracing::info!(tunnel = %a.name, ofport = added.ofport().get(), how = ?added, "tunnel added");
        Ok(Reply::Port(self.views().port(&a.name).expect("just added")))
    }

    /// A tunnel to the gateway itself would loop every frame back in.
    fn check_remote(&self, remote: IpAddr, field: &str) -> Result<()> {
        if self.uplink.local_ips().contains(&remote.to_canonical()) {
            bail!("{field}: {remote} is this gateway's own --local-ip, not another chassis");
        }
        Ok(())
    }

    fn port_del(&mut self, name: &Name, kind: PortType, if_exists: bool) -> Result<Reply> {
        self.not_the_southbounds(
            self.ovn_owned.ports.contains(name.as_str()),
            &format!("{} {:?}", kind.name(), name.as_str()),
        )?;
        let what = kind.name();
        let noun = if kind == PortType::Local { "port" } else { "tunnel" };
        let Some(record) = self.ports.get(name).cloned() else {
            if if_exists {
                return Ok(Reply::Absent(Absent { absent: format!("{noun} {:?}", name.as_str()) }));
            }
            bail!("no {noun} named {:?}", name.as_str());
        };
        match (&record.spec, kind) {
            (PortSpec::Tunnel(_), PortType::Local) => {
                bail!("{:?} is a tunnel; delete it with `xgw tunnel del`", name.as_str())
            }
            (PortSpec::Local(_), PortType::Tunnel) => {
                bail!("{:?} is a local port; delete it with `xgw port del`", name.as_str())
            }
            _ => {}
        }
        let ofport = self.ports.delete_with(name, Instant::now(), &mut effects!(self))?;
        self.nexthops.forget(name);
        tracing::info!(name = %name, ofport = ofport.get(), "{what} deleted");
        Ok(Reply::Deleted(Deleted { name: name.clone(), ofport: Some(ofport.get()) }))
    }

    /// A remote binding: one transaction (FDB, then NEIGH, then record),
    /// refused first if a local port or binding holds its MAC or IP.
    fn binding_add(&mut self, b: &Binding, may_exist: bool) -> Result<Reply> {
        self.not_the_southbounds(self.ovn_owned.bindings.contains(&b.key()), &b.label())?;
        if let Some(old) = self.ports.bindings().find(|o| o.key() == b.key()) {
            let differs = differing(old, b);
            if !differs.is_empty() {
                bail!("{} already exists with other settings ({}); delete it first", b.label(), differs.join(", "));
            }
            if !may_exist {
                bail!("{} already exists; --may-exist accepts an identical one", b.label());
            }
            return Ok(Reply::Binding(self.views().binding(b)));
        }
        self.ports.add_binding(b)?;
        tracing::info!(vni = %b.vni, mac = %b.mac, tunnel = %b.tunnel, "binding added");
        Ok(Reply::Binding(self.views().binding(b)))
    }

    fn binding_del(&mut self, vni: Vni, mac: MacAddr, if_exists: bool) -> Result<Reply> {
        self.not_the_southbounds(
            self.ovn_owned.bindings.contains(&(vni, mac)),
            &format!("binding vni {vni} mac {mac}"),
        )?;
        if if_exists && !self.ports.bindings().any(|b| b.key() == (vni, mac)) {
            return Ok(Reply::Absent(Absent { absent: format!("binding vni {vni} mac {mac}") }));
        }
        let b = self.ports.delete_binding(vni, mac)?;
        tracing::info!(%vni, %mac, "binding deleted");
        Ok(Reply::BindingDeleted(self.views().binding(&b)))
    }

    /// A new multicast group: its one map entry, then its record.
    fn group_add(&mut self, g: &Group, may_exist: bool) -> Result<Reply> {
        if let Some(old) = self.ports.groups().find(|o| o.key() == g.key()) {
            let differs = differing(old, g);
            if !differs.is_empty() {
                bail!(
                    "{} already exists with other settings ({}); change it with `xgw group set`, or delete it first",
                    g.label(),
                    differs.join(", ")
                );
            }
            if !may_exist {
                bail!("{} already exists; --may-exist accepts an identical one", g.label());
            }
        }
        self.group_write(g)
    }

    /// `group set`: an existing group's members and rate replaced.
    fn group_set(&mut self, g: &Group) -> Result<Reply> {
        if !self.ports.groups().any(|o| o.key() == g.key()) {
            bail!("no group vni {} key {}; add it with `xgw group add`", g.vni, g.key);
        }
        self.group_write(g)
    }

    fn group_write(&mut self, g: &Group) -> Result<Reply> {
        self.not_the_southbounds(self.ovn_owned.groups.contains(&g.key()), &g.label())?;
        let change = self.ports.add_group(g)?;
        let change = match change {
            GroupChange::Created => "created",
            GroupChange::Updated => "updated",
            GroupChange::Unchanged => "unchanged",
        };
        if change != "unchanged" {
            tracing::info!(vni = %g.vni, key = g.key, members = g.ports.len() + g.tunnels.len(), "group {change}");
        }
        let mut view = self.views().group(g);
        view.change = Some(change.to_owned());
        Ok(Reply::Group(view))
    }

    fn group_del(&mut self, vni: Vni, key: u16, if_exists: bool) -> Result<Reply> {
        self.not_the_southbounds(self.ovn_owned.groups.contains(&(vni, key)), &format!("group vni {vni} key {key}"))?;
        if if_exists && !self.ports.groups().any(|g| g.key() == (vni, key)) {
            return Ok(Reply::Absent(Absent { absent: format!("group vni {vni} key {key}") }));
        }
        let g = self.ports.delete_group(vni, key)?;
        tracing::info!(%vni, key, "group deleted");
        Ok(Reply::GroupDeleted(self.views().group(&g)))
    }

    /// Entries the Southbound put in place follow it alone: an API change
    /// would be undone by the next update, or undo it.
    fn not_the_southbounds(&self, owned: bool, what: &str) -> Result<()> {
        if owned {
            bail!("{what} is the OVN Southbound's (this gateway is an OVN chassis): change it there");
        }
        Ok(())
    }

    /// A single-hop peer: checked, started, then stored; a failed write
    /// stops it again.
    fn peer_add(&mut self, p: &BfdPeerArgs, may_exist: bool) -> Result<Reply> {
        let what = format!("bfd peer {:?}", p.name.as_str());
        self.bfd.check_peer(p, &format!("{what}: "))?;
        if let Some(old) = self.bfd.peer(&p.name) {
            let differs = differing(old, p);
            if !differs.is_empty() {
                bail!("{what} already exists with other settings ({}); delete it first", differs.join(", "));
            }
            if !may_exist {
                bail!("{what} already exists; --may-exist accepts an identical one");
            }
            return Ok(Reply::BfdPeer(self.views().peer(p)));
        }
        if let Some(r) = self.ports.get(&p.name) {
            bail!("{what}: name: already a {}", r.spec.kind().name());
        }
        self.bfd.add_peer(p)?;
        if let Err(e) = self.store_peers() {
            self.bfd.remove_peer(&p.name);
            return Err(e.context("bfd peer: storing it"));
        }
        tracing::info!(peer = %p.name, ip = %p.peer_ip, "bfd peer added");
        Ok(Reply::BfdPeer(self.views().peer(p)))
    }

    fn peer_del(&mut self, name: &Name, if_exists: bool) -> Result<Reply> {
        if if_exists && self.bfd.peer(name).is_none() {
            return Ok(Reply::Absent(Absent { absent: format!("bfd peer {:?}", name.as_str()) }));
        }
        let p = self.bfd.remove_peer(name).ok_or_else(|| anyhow!("no bfd peer named {:?}", name.as_str()))?;
        if let Err(e) = self.store_peers() {
            self.bfd.restore_peer(p);
            self.bfd.start_peers();
            return Err(e.context("bfd peer: storing the deletion"));
        }
        tracing::info!(peer = %name, "bfd peer deleted");
        Ok(Reply::Deleted(Deleted { name: name.clone(), ofport: None }))
    }

    fn store_peers(&mut self) -> Result<()> {
        let peers = self.bfd.peers().clone();
        Ok(self.ports.store_mut().put_meta(META_BFD_PEERS, &peers)?)
    }

    // --- Next hops ----------------------------------------------------------

    /// Looks up tunnel `name`'s next hop and, when it resolved or moved,
    /// writes it (TUNNELS through the port map, the BFD session's frames).
    pub(super) fn resolve(&mut self, name: &str, remote: IpAddr) {
        let Some(mac) = self.nexthops.resolve(&mut self.netlink, name, remote) else { return };
        if let Err(e) = self.ports.set_nexthop(remote, mac) {
            tracing::warn!(tunnel = name, "writing the next hop: {e}");
        }
        self.bfd.set_nexthop(name, mac);
    }

    /// Resolves the next hops not yet resolved, and (with `all`, or once
    /// `nexthops::RECHECK` has passed) re-checks the others.
    pub(super) fn refresh_nexthops(&mut self, all: bool) {
        let tunnels: BTreeMap<String, IpAddr> =
            self.tunnels().map(|(t, _)| (t.name.to_string(), t.remote.get())).collect();
        let due: Vec<String> =
            self.nexthops.due(tunnels.keys().map(String::as_str), all).into_iter().map(str::to_owned).collect();
        for name in due {
            self.resolve(&name, tunnels[&name]);
        }
    }

    /// Acts on the kernel's announcements: next hops they concern, and the
    /// link watch at once for a link change.
    pub(super) fn netlink_events(&mut self, events: &[Event]) -> Result<()> {
        let plan = self.nexthops.plan(events);
        if plan.all {
            self.refresh_nexthops(true);
        } else {
            let tunnels: Vec<(String, IpAddr)> = self
                .tunnels()
                .filter(|(t, _)| plan.tunnels.contains(t.name.as_str()))
                .map(|(t, _)| (t.name.to_string(), t.remote.get()))
                .collect();
            for (name, remote) in tunnels {
                self.resolve(&name, remote);
            }
        }
        if plan.links {
            self.watch_links()?;
        }
        Ok(())
    }

    // --- Links ----------------------------------------------------------------

    /// The uplink (gone, back, new MAC or MTU, recreated: an error that
    /// asks for a restart) and the local ports' interfaces (gone or
    /// recreated: their entries follow through a reconcile).
    pub(super) fn watch_links(&mut self) -> Result<()> {
        let ifindex = super::ifindex(self.uplink.ifname());
        let now = match ifindex {
            Some(i) => match self.netlink.link(i) {
                Ok((mac, mtu)) => Some(Link { ifindex: Some(i), mac, mtu }),
                Err(e) => {
                    tracing::warn!(uplink = self.uplink.ifname(), "reading the uplink: {e:#}");
                    None
                }
            },
            None => Some(Link { ifindex: None, mac: [0; 6], mtu: 0 }),
        };
        if let Some(now) = now {
            let changes = self.uplink.look(now)?;
            if changes.mac.is_some() || changes.mtu {
                match self.uplink.follow(now, self.ports.datapath_mut()) {
                    Ok(()) => {
                        if let Some(mac) = changes.mac {
                            self.bfd.set_uplink_mac(mac);
                        }
                    }
                    Err(e) => tracing::warn!(uplink = self.uplink.ifname(), "{e:#}"),
                }
            }
        }
        let locals: Vec<(String, String, u16)> = self
            .ports
            .ports()
            .filter_map(|r| match &r.spec {
                PortSpec::Local(p) => Some((p.name.to_string(), p.ifname.to_string(), r.ofport.get())),
                PortSpec::Tunnel(_) => None,
            })
            .collect();
        let watched: Vec<Watched<'_>> =
            locals.iter().map(|(port, ifname, ofport)| Watched { port, ifname, ofport: *ofport }).collect();
        if self.links.watch(&watched, super::ifindex) {
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
            self.links.sync(&self.local_ifnames());
        }
        Ok(())
    }

    /// Notices BFD state changes (every `bfd::WATCH_PERIOD`).
    pub(super) fn watch_bfd(&mut self) {
        self.bfd.watch();
    }

    pub(super) fn metrics(&self) -> Result<crate::metrics::Exposition> {
        self.views().metrics()
    }

    // --- The config file ------------------------------------------------------

    /// Makes the config file's ports, tunnels, bindings and peers the
    /// committed ones, leaving what the API added alone (unless the file
    /// names it). Everything is checked first, against a copy of the port
    /// map in memory: a file that cannot be applied whole changes nothing.
    pub(super) fn apply_config(&mut self, config: &Config) -> Result<()> {
        let plan = desired::plan(
            config,
            &self.owned,
            self.ports.ports(),
            self.ports.bindings(),
            self.ports.groups(),
            self.bfd.peers(),
        )?;
        for (i, t) in config.tunnels.iter().enumerate() {
            let PortSpec::Tunnel(spec) = desired::tunnel_spec(t) else { unreachable!("a tunnel spec") };
            let f = |k: &str| format!("tunnels[{i}].{k}");
            self.check_remote(t.remote_ip.get(), &format!("config: {}", f("remote_ip")))?;
            self.bfd
                .check_tunnel(&spec, [&f("bfd_min_tx_ms"), &f("bfd_min_rx_ms"), &f("bfd_detect_mult")])
                .map_err(|e| anyhow!("config: {e:#}"))?;
        }
        for (i, p) in config.bfd_peers.iter().enumerate() {
            self.bfd.check_peer(p, &format!("bfd_peers[{i}].")).map_err(|e| anyhow!("config: {e:#}"))?;
        }
        if let Some((name, path)) = plan.paths.iter().find(|(n, _)| self.ovn_owned.ports.contains(n.as_str())) {
            bail!("config: {path}.name: {name:?} is the OVN Southbound's");
        }
        self.dry_run(&plan)?;

        // `[bfd]` first: the tunnels added below start with it.
        let own: BTreeMap<String, crate::types::BfdOverride> = plan
            .ports
            .iter()
            .filter_map(|s| match s {
                PortSpec::Tunnel(t) => Some((t.name.to_string(), t.bfd_timers)),
                _ => None,
            })
            .collect();
        self.bfd.set_defaults(config.bfd, |name| own.get(name).copied().unwrap_or_default());
        for spec in &plan.ports {
            if let PortSpec::Tunnel(t) = spec {
                if self.ports.get(&t.name).is_none() {
                    self.resolve(&t.name, t.remote.get());
                }
            }
        }
        // A port's interface may appear after the daemon (VM taps at
        // boot): the port waits for it, as one whose interface went does.
        let desired = Desired {
            ports: &plan.ports,
            bindings: Some(&plan.bindings),
            groups: Some(&plan.groups),
            interfaces_may_wait: true,
        };
        let report = self.ports.apply(desired, Instant::now(), &mut effects!(self))?;
        for (name, _) in &report.deleted {
            self.nexthops.forget(name);
        }
        if let Some((name, e)) = report.failed.first() {
            let path = plan.paths.get(name).cloned().unwrap_or_else(|| name.clone());
            bail!("config: applying {path}: {e}");
        }
        self.apply_peers(&plan.peers)?;
        self.owned = plan.owned;
        let store = self.ports.store_mut();
        store.defer_sync();
        let written = store
            .put_meta(desired::META_KEY, &self.owned)
            .and_then(|()| store.put_meta(META_BFD, &config.bfd))
            .and_then(|()| store.put_meta(META_BFD_PEERS, self.bfd.peers()));
        let synced = store.sync();
        written.and(synced).context("config: storing what the file owns")?;
        tracing::info!(
            added = report.added.len(),
            replaced = report.replaced.len(),
            deleted = report.deleted.len(),
            unchanged = report.unchanged,
            bindings_added = report.bindings_added,
            bindings_deleted = report.bindings_deleted,
            groups_added = report.groups_added,
            groups_deleted = report.groups_deleted,
            "config applied"
        );
        Ok(())
    }

    /// The plan on a copy of the port map, in memory: what it would refuse
    /// is refused now, naming the file's path.
    fn dry_run(&self, plan: &desired::Plan) -> Result<()> {
        let mut store = MemStore::new();
        for r in self.ports.ports() {
            store.put(r).map_err(|e| anyhow!("{e}"))?;
        }
        for b in self.ports.bindings() {
            store.put_binding(b).map_err(|e| anyhow!("{e}"))?;
        }
        for g in self.ports.groups() {
            store.put_group(g).map_err(|e| anyhow!("{e}"))?;
        }
        let mut trial = PortMap::open(MemDatapath::new(), store, AllocatorConfig::default())?;
        trial.reconcile_quietly();
        let desired = Desired {
            ports: &plan.ports,
            bindings: Some(&plan.bindings),
            groups: Some(&plan.groups),
            interfaces_may_wait: true,
        };
        let report = trial.apply(desired, Instant::now(), &mut crate::ofport::NoEffects)?;
        if let Some((name, e)) = report.failed.first() {
            let path = plan.paths.get(name).cloned().unwrap_or_else(|| format!("port {name:?}"));
            bail!("config: {path}: {e}");
        }
        Ok(())
    }

    /// The plan's peers become the sessions; those that stay follow new
    /// timers.
    fn apply_peers(&mut self, wanted: &[(BfdPeerArgs, String)]) -> Result<()> {
        let gone: Vec<Name> = self
            .bfd
            .peers()
            .iter()
            .filter(|(n, p)| !wanted.iter().any(|(w, _)| w.name == **n && w == *p))
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            self.bfd.remove_peer(&name);
        }
        for (p, path) in wanted {
            if self.bfd.peer(&p.name).is_some() {
                if let Err(e) = self.bfd.retime_peer(&p.name) {
                    tracing::warn!("{e:#}");
                }
                continue;
            }
            self.bfd.add_peer(p).map_err(|e| anyhow!("{path}: {e:#}"))?;
        }
        Ok(())
    }

    /// The daemon stops: BFD first (its sessions are disabled in the map),
    /// then, unless the datapath stays, every pin.
    pub(super) fn shutdown(&mut self, keep_datapath: bool) -> Result<()> {
        self.bfd.shutdown();
        if keep_datapath {
            return Ok(());
        }
        let removed = self.pins.remove_all()?;
        tracing::info!(pins = removed.len(), "stopped; XDP programs detached and maps unpinned");
        Ok(())
    }

    /// Stops BFD only: the datapath stays, pins kept and sessions left for
    /// the next daemon to adopt.
    pub(super) fn settle_links(&mut self) {
        self.links.settle();
    }

    pub(super) fn abandon(&mut self) {
        self.bfd.shutdown();
    }
}

/// A committed tunnel as `tunnel add` would have asked for it.
fn tunnel_args(t: &crate::ofport::TunnelPort, ofport: crate::ofport::OfPort) -> TunnelArgs {
    TunnelArgs {
        name: t.name.clone(),
        remote_ip: t.remote,
        vni: t.vni,
        bfd: t.bfd,
        ovn_metadata: t.ovn_metadata,
        ofport: t.ofport_request.or(Some(ofport.get())),
        bfd_min_tx_ms: t.bfd_timers.min_tx_ms,
        bfd_min_rx_ms: t.bfd_timers.min_rx_ms,
        bfd_detect_mult: t.bfd_timers.detect_mult,
    }
}

/// A committed local port as `port add` would have asked for it.
fn port_args(p: &crate::ofport::LocalPort, ofport: crate::ofport::OfPort) -> PortArgs {
    PortArgs {
        name: p.name.clone(),
        ifname: p.ifname.clone(),
        vni: p.vni,
        port_key: p.port_key,
        mac: p.mac,
        ip: p.ip,
        ofport: p.ofport_request.or(Some(ofport.get())),
        port_security: p.port_security,
        allow: p.allowed.clone(),
    }
}

/// A requested port or tunnel in the API's terms.
struct PortSpecArgs<'a>(&'a PortSpec);

impl serde::Serialize for PortSpecArgs<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0 {
            PortSpec::Local(p) => {
                let mut a = port_args(p, crate::ofport::OfPort::MAX);
                a.ofport = p.ofport_request;
                a.serialize(s)
            }
            PortSpec::Tunnel(t) => {
                let mut a = tunnel_args(t, crate::ofport::OfPort::MAX);
                a.ofport = t.ofport_request;
                a.serialize(s)
            }
        }
    }
}

/// The fields in which `new` differs from `old`, as `field: old -> new`
/// (`none` where one has no value). A field `new` leaves out that only
/// numbers the object (`ofport`) is not a difference: any number will do.
fn differing(old: &impl serde::Serialize, new: &impl serde::Serialize) -> Vec<String> {
    let (Ok(serde_json::Value::Object(old)), Ok(serde_json::Value::Object(new))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return vec!["(not comparable)".into()];
    };
    let show = |v: Option<&serde_json::Value>| match v {
        None | Some(serde_json::Value::Null) => "none".to_owned(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| !(k.as_str() == "ofport" && new.get(*k).is_none()))
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| format!("{k}: {} -> {}", show(old.get(k)), show(new.get(k))))
        .collect()
}
