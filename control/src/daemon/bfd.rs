//! The daemon's BFD: one `bfd::Engine` (receive in XDP, transmit and
//! detection in its own SCHED_FIFO thread; see docs/bfd.md) runs a Geneve
//! session for every tunnel with `bfd` on and a single-hop session (RFC 5881)
//! for every configured underlay peer.
//!
//! The engine's thread never waits for the daemon, and the daemon reaches
//! it only through its API: `add`/`remove`/`reconfigure` are answered by the
//! engine thread within one of its loop turns, `status` reads the mmap-ed
//! session array. State changes are seen by `watch`, which the daemon's
//! tokio side triggers every `WATCH_PERIOD`: the datapath's ring-buffer
//! events stay the engine's, and a Down from detection (the engine's own
//! timer) comes through the same view.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Result};

use super::hooks::TunnelHooks;
use crate::{
    api::{BfdPeerArgs, BfdSessionView},
    bfd::{self, Engine, Path, Status},
    config::BfdSettings,
    ofport::{MacAddr, OfPort, TunnelPort},
};

/// How often the daemon looks for state changes: a log line and the
/// "last change" of `bfd show` are this late at most.
pub const WATCH_PERIOD: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tunnel,
    Peer,
}

struct Known {
    kind: Kind,
    config: bfd::Config,
    /// (local state, remote state) when last watched, and since when.
    seen: (&'static str, &'static str),
    since: Instant,
}

pub struct BfdHooks {
    /// `None` once shut down.
    engine: Option<Engine>,
    ip4: Option<Ipv4Addr>,
    ip6: Option<Ipv6Addr>,
    uplink: String,
    sessions: BTreeMap<String, Known>,
}

/// The engine's settings from the daemon's.
pub fn engine_config(s: &BfdSettings, echo: bool) -> bfd::Config {
    bfd::Config { min_tx_ms: s.min_tx_ms, min_rx_ms: s.min_rx_ms, mult: s.detect_mult, echo }
}

impl BfdHooks {
    pub fn new(engine: Engine, uplink: &str, ip4: Option<[u8; 4]>, ip6: Option<[u8; 16]>) -> BfdHooks {
        BfdHooks {
            engine: Some(engine),
            ip4: ip4.map(Ipv4Addr::from),
            ip6: ip6.map(Ipv6Addr::from),
            uplink: uplink.to_owned(),
            sessions: BTreeMap::new(),
        }
    }

    fn engine(&self) -> Result<&Engine> {
        self.engine.as_ref().ok_or_else(|| anyhow!("bfd: the engine has stopped"))
    }

    fn add(&mut self, name: &str, kind: Kind, path: Path, config: bfd::Config) -> Result<()> {
        self.engine()?.add(name, path, config)?;
        self.sessions.insert(name.to_owned(), Known { kind, config, seen: ("down", "down"), since: Instant::now() });
        Ok(())
    }

    fn remove(&mut self, name: &str) {
        if self.sessions.remove(name).is_none() {
            return;
        }
        if let Some(engine) = &self.engine {
            if let Err(e) = engine.remove(name) {
                tracing::warn!(session = name, "bfd: removing the session: {e}");
            }
        }
    }

    /// The single-hop path of `p`: the uplink unless it names another
    /// interface, and the daemon's IPv4 address unless it gives one.
    pub fn peer_path(&self, p: &BfdPeerArgs) -> Result<Path> {
        let IpAddr::V4(peer_ip) = p.peer_ip.to_canonical() else {
            bail!("bfd peer {:?}: peer_ip: {}: single-hop BFD runs over IPv4 only", p.name, p.peer_ip)
        };
        let local_ip = match p.local_ip.map(|a| a.to_canonical()) {
            Some(IpAddr::V4(a)) => a,
            Some(a) => bail!("bfd peer {:?}: local_ip: {a} is not an IPv4 address", p.name),
            None => self.ip4.ok_or_else(|| {
                anyhow!("bfd peer {:?}: local_ip: the daemon has no IPv4 --local-ip; give one", p.name)
            })?,
        };
        Ok(Path::SingleHop { ifname: p.ifname.clone().unwrap_or_else(|| self.uplink.clone()), peer_ip, local_ip })
    }

    /// The daemon's address of `remote`'s family, the source of the
    /// tunnel's Geneve packets.
    pub fn local_ip_for(&self, remote: IpAddr) -> Option<IpAddr> {
        match remote.to_canonical() {
            IpAddr::V4(_) => self.ip4.map(IpAddr::V4),
            IpAddr::V6(_) => self.ip6.map(IpAddr::V6),
        }
    }

    fn view(&self, s: Status) -> BfdSessionView {
        let known = self.sessions.get(&s.name);
        let (kind, ofport, vni, remote_ip, local_ip, ifname, nexthop_mac) = match &s.path {
            Path::Geneve { ofport, remote_ip, local_ip, vni, nexthop_mac } => (
                "tunnel",
                Some(*ofport),
                Some(*vni),
                *remote_ip,
                *local_ip,
                None,
                Some(MacAddr(*nexthop_mac).to_string()),
            ),
            Path::SingleHop { ifname, peer_ip, local_ip } => {
                ("peer", None, None, IpAddr::V4(*peer_ip), IpAddr::V4(*local_ip), Some(ifname.clone()), None)
            }
        };
        BfdSessionView {
            name: s.name,
            kind: kind.into(),
            ofport,
            vni,
            remote_ip,
            local_ip,
            ifname,
            nexthop_mac,
            echo: s.echo,
            forwarding: s.forwarding,
            detect_mult: s.detect_mult,
            // xgw has no concatenated path to report (OVS: `bfd:cpath_down`).
            concatenated_path_down: false,
            tx_interval_ms: s.tx_interval_ms,
            rx_interval_ms: s.rx_interval_ms,
            detect_time_ms: s.detect_time_ms,
            local_state: s.state.into(),
            local_diagnostic: s.diagnostic.into(),
            local_discriminator: s.local_discriminator,
            local_min_tx_ms: s.local_min_tx_ms,
            local_min_rx_ms: s.local_min_rx_ms,
            remote_state: s.remote_state.into(),
            remote_diagnostic: s.remote_diagnostic.into(),
            remote_discriminator: s.remote_discriminator,
            remote_min_tx_ms: s.remote_min_tx_ms,
            remote_min_rx_ms: s.remote_min_rx_ms,
            remote_detect_mult: s.remote_detect_mult,
            flap_count: s.flap_count,
            rx_packets: s.rx_packets,
            tx_packets: s.tx_packets,
            last_change_ms: known.map(|k| k.since.elapsed().as_millis() as u64),
            error: s.error,
        }
    }
}

impl TunnelHooks for BfdHooks {
    fn tunnel_added(
        &mut self,
        t: &TunnelPort,
        ofport: OfPort,
        bfd: &BfdSettings,
        nexthop: Option<[u8; 6]>,
    ) -> Result<()> {
        if !t.bfd {
            return Ok(());
        }
        let local_ip = self.local_ip_for(t.remote).ok_or_else(|| {
            anyhow!("tunnel {:?}: bfd: the daemon has no --local-ip of {}'s family to send from", t.name, t.remote)
        })?;
        let path = Path::Geneve {
            ofport: ofport.get(),
            remote_ip: t.remote.to_canonical(),
            local_ip,
            vni: t.vni,
            // Zeroes until the next hop resolves; `nexthop_changed` follows.
            nexthop_mac: nexthop.unwrap_or_default(),
        };
        self.add(&t.name, Kind::Tunnel, path, engine_config(bfd, false))
            .map_err(|e| anyhow!("tunnel {:?}: bfd: {e:#}", t.name))?;
        tracing::info!(
            tunnel = t.name,
            min_tx_ms = bfd.min_tx_ms,
            min_rx_ms = bfd.min_rx_ms,
            mult = bfd.detect_mult,
            "bfd session added"
        );
        Ok(())
    }

    fn tunnel_removed(&mut self, name: &str, _ofport: OfPort) {
        if self.sessions.get(name).is_some_and(|k| k.kind == Kind::Tunnel) {
            self.remove(name);
        }
    }

    fn nexthop_changed(&mut self, name: &str, mac: [u8; 6]) {
        if !self.sessions.get(name).is_some_and(|k| k.kind == Kind::Tunnel) {
            return;
        }
        let Ok(engine) = self.engine() else { return };
        if let Err(e) = engine.set_nexthop(name, mac) {
            tracing::warn!(tunnel = name, "bfd: following the next hop: {e}");
        }
    }

    fn uplink_mac_changed(&mut self, mac: [u8; 6]) {
        if let Ok(engine) = self.engine() {
            engine.set_uplink_mac(mac);
        }
    }

    fn bfd_settings_changed(&mut self, name: &str, bfd: &BfdSettings) -> Result<()> {
        let Some(known) = self.sessions.get(name) else { return Ok(()) };
        let config = engine_config(bfd, known.config.echo);
        if config == known.config {
            return Ok(());
        }
        self.engine()?.reconfigure(name, config).map_err(|e| anyhow!("bfd session {name:?}: {e}"))?;
        tracing::info!(
            session = name,
            min_tx_ms = bfd.min_tx_ms,
            min_rx_ms = bfd.min_rx_ms,
            mult = bfd.detect_mult,
            "bfd session reconfigured"
        );
        if let Some(k) = self.sessions.get_mut(name) {
            k.config = config;
        }
        Ok(())
    }

    fn peer_added(&mut self, p: &BfdPeerArgs, bfd: &BfdSettings) -> Result<()> {
        let path = self.peer_path(p)?;
        self.add(&p.name, Kind::Peer, path, engine_config(bfd, p.echo))
            .map_err(|e| anyhow!("bfd peer {:?}: {e:#}", p.name))?;
        tracing::info!(peer = p.name, ip = %p.peer_ip, echo = p.echo, "bfd single-hop session added");
        Ok(())
    }

    fn peer_removed(&mut self, name: &str) {
        if self.sessions.get(name).is_some_and(|k| k.kind == Kind::Peer) {
            self.remove(name);
        }
    }

    fn bfd_sessions(&self) -> Vec<BfdSessionView> {
        let Ok(engine) = self.engine() else { return Vec::new() };
        engine.status(None).into_iter().map(|s| self.view(s)).collect()
    }

    fn watch(&mut self) {
        let Ok(engine) = self.engine() else { return };
        for s in engine.status(None) {
            let Some(known) = self.sessions.get_mut(&s.name) else { continue };
            let now = (s.state, s.remote_state);
            if known.seen == now {
                continue;
            }
            if known.seen.0 != now.0 {
                tracing::info!(
                    session = s.name,
                    from = known.seen.0,
                    to = s.state,
                    diagnostic = s.diagnostic,
                    remote = s.remote_state,
                    flaps = s.flap_count,
                    "bfd session state changed"
                );
            }
            known.seen = now;
            known.since = Instant::now();
        }
    }

    fn shutdown(&mut self, _keep_datapath: bool) {
        // The engine's thread stops and its sessions are disabled in the
        // map before the daemon removes (or leaves) the datapath.
        self.engine.take();
        self.sessions.clear();
    }
}
