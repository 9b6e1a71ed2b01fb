//! What the operator sees: `show`, the lists, `stats`, and (from the same
//! views) the metrics. Read-only: the views borrow every owner and change
//! none, and the counters are read from the datapath's per-CPU maps, which
//! only the datapath writes.
use crate::types::Vni;
use crate::{api::GroupView, ofport::Group};
use std::collections::BTreeMap;

use anyhow::{Context, Result};
use aya::maps::{Map, MapData, PerCpuArray};
use xgw_common::counters::{Drop, PortStats, Reply as ReplyKind};

use super::{bfd::Bfd, desired::Ownership, links::Links, nexthops::Nexthops, pins::Pins, uplink::Uplink, Ports};
use crate::{
    api::{
        BfdCountersView, BfdPeerArgs, BfdPeerView, BfdSessionView, BfdView, BindingView, OfportsView, PortStatsView,
        PortType, PortView, SessionType, ShowView, StatsView,
    },
    ofport::{Binding, OfPort, PortRecord, PortSpec},
};

/// The datapath's counters.
pub struct Counters {
    drops: PerCpuArray<MapData, u64>,
    replies: PerCpuArray<MapData, u64>,
    port_stats: PerCpuArray<MapData, PortStats>,
}

fn open_counter<V: aya::Pod>(pins: &Pins, name: &str) -> Result<PerCpuArray<MapData, V>> {
    let path = pins.map(name);
    let data = MapData::from_pin(&path).with_context(|| format!("opening pinned map {}", path.display()))?;
    PerCpuArray::try_from(Map::from_map_data(data)?).with_context(|| format!("map {name}"))
}

impl Counters {
    pub fn open(pins: &Pins) -> Result<Counters> {
        Ok(Counters {
            drops: open_counter(pins, "DROPS")?,
            replies: open_counter(pins, "REPLIES")?,
            port_stats: open_counter(pins, "PORT_STATS")?,
        })
    }
}

/// Everything a view reads, borrowed for one request.
pub struct Views<'a> {
    pub ports: &'a Ports,
    pub uplink: &'a Uplink,
    pub links: &'a Links,
    pub nexthops: &'a Nexthops,
    pub bfd: &'a Bfd,
    pub owned: &'a Ownership,
    pub counters: &'a Counters,
    pub pins: &'a Pins,
    pub state_dir: &'a str,
    pub ovn: Option<(&'a str, super::southbound::Status)>,
    /// When the daemon started (`show`'s uptime).
    pub started: std::time::Instant,
}

impl Views<'_> {
    fn sessions(&self) -> BTreeMap<String, BfdSessionView> {
        self.bfd.sessions().into_iter().map(|s| (s.name.clone(), s)).collect()
    }

    /// One port; `sessions` read once for a whole view.
    fn port_with(&self, r: &PortRecord, sessions: &BTreeMap<String, BfdSessionView>) -> PortView {
        let from_config = self.owned.ports.contains(r.name());
        match &r.spec {
            PortSpec::Local(p) => PortView {
                error: self.links.error(&p.name, &p.ifname),
                name: p.name.to_string(),
                ofport: r.ofport.get(),
                kind: PortType::Local,
                vni: Some(p.vni.get()),
                key: None,
                ifname: Some(p.ifname.to_string()),
                port_key: Some(p.port_key.get()),
                mac: Some(p.mac.to_string()),
                ip: p.ip.map(|i| i.get()),
                port_security: Some(p.port_security().iter().map(ToString::to_string).collect()),
                remote_ip: None,
                ovn_metadata: None,
                nexthop: None,
                bfd: None,
                from_config,
            },
            PortSpec::Tunnel(t) => PortView {
                name: t.name.to_string(),
                ofport: r.ofport.get(),
                kind: PortType::Tunnel,
                vni: t.vni.map(Vni::get),
                key: Some(t.vni.map_or_else(|| "flow".to_owned(), |v| v.to_string())),
                ifname: None,
                port_key: None,
                mac: None,
                ip: None,
                port_security: None,
                remote_ip: Some(t.remote.get()),
                ovn_metadata: Some(t.ovn_metadata),
                nexthop: Some(self.nexthops.view(&t.name)),
                error: t.bfd.then(|| self.bfd.failure(&t.name)).flatten().map(|e| format!("no BFD session: {e}")),
                bfd: t.bfd.then(|| {
                    let s = sessions.get(t.name.as_str()).filter(|s| s.kind == SessionType::Tunnel);
                    let timers = self.bfd.timers(&t.bfd_timers);
                    BfdView {
                        enabled: true,
                        state: s.map(|s| s.local_state),
                        flap_count: s.map(|s| s.flap_count),
                        forwarding: s.is_some_and(|s| s.forwarding),
                        min_tx_ms: timers.min_tx_ms,
                        min_rx_ms: timers.min_rx_ms,
                        detect_mult: timers.detect_mult,
                    }
                }),
                from_config,
            },
        }
    }

    pub fn port(&self, name: &str) -> Option<PortView> {
        let r = self.ports.get(name)?;
        Some(self.port_with(r, &self.sessions()))
    }

    /// Ports of `kind` (all with `None`), by OpenFlow number.
    pub fn ports(&self, kind: Option<PortType>) -> Vec<PortView> {
        let sessions = self.sessions();
        let mut v: Vec<PortView> = self
            .ports
            .ports()
            .map(|r| self.port_with(r, &sessions))
            .filter(|v| kind.is_none_or(|k| v.kind == k))
            .collect();
        v.sort_by_key(|p| p.ofport);
        v
    }

    pub fn binding(&self, b: &Binding) -> BindingView {
        BindingView {
            vni: b.vni.get(),
            mac: b.mac.to_string(),
            ip: b.ip.map(|i| i.get()),
            tunnel: b.tunnel.to_string(),
            ofport: self.ports.get(&b.tunnel).map(|r| r.ofport.get()).unwrap_or(0),
            port_key: b.port_key.get(),
            from_config: self.owned.bindings.contains(&b.key()),
        }
    }

    pub fn group(&self, g: &Group) -> GroupView {
        let number = |n: &crate::types::Name| self.ports.get(n.as_str()).map(|r| r.ofport.get());
        GroupView {
            vni: g.vni.get(),
            key: g.key,
            ports: g.ports.iter().map(|n| n.to_string()).collect(),
            tunnels: g.tunnels.iter().map(|n| n.to_string()).collect(),
            ofports: g.ports.iter().chain(&g.tunnels).filter_map(number).collect(),
            rate_pps: g.rate_pps,
            change: None,
            from_config: self.owned.groups.contains(&g.key()),
        }
    }

    pub fn groups(&self) -> Vec<GroupView> {
        self.ports.groups().map(|g| self.group(g)).collect()
    }

    pub fn bindings(&self) -> Vec<BindingView> {
        self.ports.bindings().map(|b| self.binding(b)).collect()
    }

    pub fn peer(&self, p: &BfdPeerArgs) -> BfdPeerView {
        let s = self.bfd.timers(&p.timers());
        let session =
            self.bfd.sessions().into_iter().find(|v| v.name == p.name.as_str() && v.kind == SessionType::Peer);
        BfdPeerView {
            name: p.name.to_string(),
            peer_ip: p.peer_ip.get(),
            ifname: p.ifname.as_ref().map(|i| i.to_string()).unwrap_or_else(|| self.uplink.ifname().to_owned()),
            local_ip: p
                .local_ip
                .map(|a| a.get())
                .or_else(|| self.uplink.ip4().map(Into::into))
                .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
            echo: p.echo,
            min_tx_ms: s.min_tx_ms,
            min_rx_ms: s.min_rx_ms,
            detect_mult: s.detect_mult,
            state: session.as_ref().map(|v| v.local_state),
            flap_count: session.as_ref().map(|v| v.flap_count),
            from_config: self.owned.bfd_peers.contains(p.name.as_str()),
            error: match session {
                Some(s) => s.error,
                None => Some(self.bfd.failure(&p.name).unwrap_or_else(|| "no session runs".to_owned())),
            },
        }
    }

    pub fn peers(&self) -> Vec<BfdPeerView> {
        self.bfd.peers().values().map(|p| self.peer(p)).collect()
    }

    pub fn ofports(&self) -> OfportsView {
        let a = self.ports.allocator();
        let (used, held_down) = (a.in_use(), a.held_down());
        OfportsView { used, held_down, free: usize::from(OfPort::MAX.get()) - used - held_down }
    }

    pub fn show(&self) -> ShowView {
        ShowView {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_s: self.started.elapsed().as_secs(),
            uplink: self.uplink.view(),
            bpffs: self.pins.dir.display().to_string(),
            state_dir: self.state_dir.to_owned(),
            ports: self.ports(None),
            bindings: self.bindings(),
            groups: self.groups(),
            bfd_peers: self.peers(),
            ofports: self.ofports(),
            ovn: self.ovn.as_ref().map(|(chassis, st)| {
                let outcome = st.outcome.clone().unwrap_or_default();
                crate::api::OvnView {
                    chassis: chassis.to_string(),
                    session: st.session.clone(),
                    claimed: outcome.claims.iter().map(|(c, up)| (c.logical_port.clone(), *up)).collect(),
                    refused: outcome.refused,
                    warnings: outcome.warnings,
                    tunnels: outcome.tunnels,
                    bindings: outcome.bindings,
                    groups: outcome.groups,
                }
            }),
        }
    }

    pub fn stats(&self) -> Result<StatsView> {
        let c = self.counters;
        let sum = |m: &PerCpuArray<MapData, u64>, i: u32| -> Result<u64> { Ok(m.get(&i, 0)?.iter().sum()) };
        let mut ports = Vec::new();
        for v in self.ports(None) {
            let per_cpu = c.port_stats.get(&u32::from(v.ofport), 0)?;
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
            drops.insert(d.name().to_owned(), sum(&c.drops, d as u32)?);
        }
        let mut replies = BTreeMap::new();
        for r in ReplyKind::ALL {
            replies.insert(r.name().to_owned(), sum(&c.replies, r as u32)?);
        }
        let ebpf = self.links.ebpf();
        let (rx, echo_reflected, events_lost) = crate::bfd::counters(ebpf)?;
        let bfd_drops = crate::bfd::drops(ebpf)?.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        Ok(StatsView {
            ports,
            drops,
            replies,
            bfd: BfdCountersView { rx, echo_reflected, events_lost, drops: bfd_drops },
        })
    }

    /// What `/metrics` serves (encoded by the metrics task, off the state's owner).
    pub fn metrics(&self) -> Result<crate::metrics::Exposition> {
        Ok(crate::metrics::collect(&self.show(), &self.stats()?, &self.bfd.sessions()))
    }
}
