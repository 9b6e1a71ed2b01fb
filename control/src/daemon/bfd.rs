//! The daemon's BFD: one `bfd::Engine` (receive in XDP, transmit and
//! detection in its own SCHED_FIFO thread; see docs/bfd.md) runs a Geneve
//! session for every tunnel with `bfd` on and a single-hop session (RFC
//! 5881) for every configured underlay peer. This owner holds the peers,
//! the daemon's `[bfd]` timers and what it told the engine.
//!
//! A tunnel's session is set up inside the tunnel's transaction (see
//! `daemon::effects`): `check_tunnel` refuses before any number is taken,
//! `add_tunnel` runs before the record is written.
//!
//! The engine's thread never waits for the daemon, and the daemon reaches
//! it only through its API: `add`/`remove`/`reconfigure` are answered by the
//! engine thread within one of its loop turns, `status` reads the mmap-ed
//! session array. State changes are seen by `watch`, which the daemon's
//! tokio side triggers every `WATCH_PERIOD`.
use crate::types::Vni;
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Result};

use crate::{
    api::{BfdPeerArgs, BfdSessionView, BfdState, SessionType},
    bfd::{self, Engine, Path, Status},
    ofport::{OfPort, TunnelPort},
    types::{BfdOverride, BfdSettings, MacAddr, Name},
};

/// How often the daemon looks for state changes: a log line and the
/// "last change" of `bfd show` are this late at most.
pub const WATCH_PERIOD: Duration = Duration::from_millis(100);

/// The `Instant` of a CLOCK_MONOTONIC reading (both count from boot).
fn since(monotonic_ns: u64) -> Instant {
    let ago = Duration::from_nanos(bfd::monotonic_ns().saturating_sub(monotonic_ns));
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

struct Known {
    kind: SessionType,
    config: bfd::Config,
    /// (local state, remote state) when last watched, and since when.
    seen: (&'static str, &'static str),
    since: Instant,
}

pub struct Bfd {
    /// `None` once shut down (or in tests, without a kernel).
    engine: Option<Engine>,
    ip4: Option<Ipv4Addr>,
    ip6: Option<Ipv6Addr>,
    uplink: String,
    /// `[bfd]`: the timers of every session that does not set its own.
    defaults: BfdSettings,
    peers: BTreeMap<Name, BfdPeerArgs>,
    sessions: BTreeMap<String, Known>,
    /// Why a tunnel's or peer's session could not start, by name (`show`
    /// says it; the log said it once).
    failed: BTreeMap<String, String>,
}

/// The engine's settings from the daemon's.
fn engine_config(s: &BfdSettings, echo: bool) -> bfd::Config {
    bfd::Config { min_tx_ms: s.min_tx_ms, min_rx_ms: s.min_rx_ms, mult: s.detect_mult, echo }
}

impl Bfd {
    pub fn new(
        engine: Option<Engine>,
        uplink: &str,
        ip4: Option<Ipv4Addr>,
        ip6: Option<Ipv6Addr>,
        defaults: BfdSettings,
    ) -> Bfd {
        Bfd {
            engine,
            ip4,
            ip6,
            uplink: uplink.to_owned(),
            defaults,
            peers: BTreeMap::new(),
            sessions: BTreeMap::new(),
            failed: BTreeMap::new(),
        }
    }

    fn engine(&self) -> Result<&Engine> {
        self.engine.as_ref().ok_or_else(|| anyhow!("bfd: the engine is not running"))
    }

    pub fn defaults(&self) -> BfdSettings {
        self.defaults
    }

    /// The timers a session with `own` runs with.
    pub fn timers(&self, own: &BfdOverride) -> BfdSettings {
        own.over(&self.defaults)
    }

    fn local_ip_for(&self, remote: IpAddr) -> Option<IpAddr> {
        match remote.to_canonical() {
            IpAddr::V4(_) => self.ip4.map(IpAddr::V4),
            IpAddr::V6(_) => self.ip6.map(IpAddr::V6),
        }
    }

    /// Why tunnel `t` cannot have the session it asks for, before anything
    /// is written. `fields` name its timers where the caller has them.
    pub fn check_tunnel(&self, t: &TunnelPort, fields: [&str; 3]) -> Result<()> {
        t.bfd_timers.check(fields)?;
        if !t.bfd {
            if !t.bfd_timers.is_empty() {
                bail!("{}: set, but bfd is off for this tunnel", fields[0]);
            }
            return Ok(());
        }
        if self.local_ip_for(t.remote.get()).is_none() {
            bail!(
                "tunnel {:?}: bfd: the gateway has no --local-ip of {}'s family to send from",
                t.name.as_str(),
                t.remote
            );
        }
        self.engine()?;
        Ok(())
    }

    fn add(&mut self, name: &str, kind: SessionType, path: Path, config: bfd::Config) -> Result<()> {
        let engine = self.engine()?;
        engine.add(name, path, config)?;
        // An adopted session starts from where it is, not from Down: its
        // first watch must not report a change the peer never saw.
        let (seen, since) = match engine.status(Some(name)).first() {
            Some(s) => ((s.state, s.remote_state), since(s.changed_ns)),
            None => (("down", "down"), Instant::now()),
        };
        self.sessions.insert(name.to_owned(), Known { kind, config, seen, since });
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

    /// Starts tunnel `t`'s session (if `bfd` is on), numbered `ofport`;
    /// frames go to `nexthop` (zeroes until it resolves; `set_nexthop`
    /// follows).
    pub fn add_tunnel(&mut self, t: &TunnelPort, ofport: OfPort, nexthop: Option<MacAddr>) -> Result<()> {
        let started = self.start_tunnel(t, ofport, nexthop);
        self.note(&t.name, &started);
        started
    }

    /// Remembers why session `name` did not start, or forgets it.
    fn note(&mut self, name: &str, started: &Result<()>) {
        match started {
            Ok(()) => self.failed.remove(name),
            Err(e) => self.failed.insert(name.to_owned(), format!("{e:#}")),
        };
    }

    /// Why the session of tunnel or peer `name` does not run, if it failed to start.
    pub fn failure(&self, name: &str) -> Option<String> {
        self.failed.get(name).cloned()
    }

    fn start_tunnel(&mut self, t: &TunnelPort, ofport: OfPort, nexthop: Option<MacAddr>) -> Result<()> {
        if !t.bfd {
            return Ok(());
        }
        let local_ip = self.local_ip_for(t.remote.get()).ok_or_else(|| {
            anyhow!(
                "tunnel {:?}: bfd: the daemon has no --local-ip of {}'s family to send from",
                t.name.as_str(),
                t.remote
            )
        })?;
        let path = Path::Geneve {
            ofport: ofport.get(),
            remote_ip: t.remote.get(),
            local_ip,
            // A flow-keyed tunnel's session runs on key 0 and accepts only
            // key 0 (its path), as OVS does with `bfd:check_tnl_key=true`.
            vni: t.vni.map_or(0, Vni::get),
            nexthop_mac: nexthop.map(|m| m.0).unwrap_or_default(),
        };
        let timers = self.timers(&t.bfd_timers);
        self.add(&t.name, SessionType::Tunnel, path, engine_config(&timers, false))
            .map_err(|e| anyhow!("tunnel {:?}: bfd: {e:#}", t.name.as_str()))?;
        tracing::info!(tunnel = %t.name, min_tx_ms = timers.min_tx_ms, min_rx_ms = timers.min_rx_ms, mult = timers.detect_mult, "bfd session added");
        Ok(())
    }

    pub fn remove_tunnel(&mut self, name: &str) {
        self.failed.remove(name);
        if self.sessions.get(name).is_some_and(|k| k.kind == SessionType::Tunnel) {
            self.remove(name);
        }
    }

    /// Moves session `name` to new timers by a Poll Sequence (no flap);
    /// nothing if they are the ones it runs with.
    pub fn retime(&mut self, name: &str, timers: &BfdSettings) -> Result<()> {
        let Some(known) = self.sessions.get(name) else { return Ok(()) };
        let config = engine_config(timers, known.config.echo);
        if config == known.config {
            return Ok(());
        }
        self.engine()?.reconfigure(name, config).map_err(|e| anyhow!("bfd session {name:?}: {e}"))?;
        tracing::info!(
            session = name,
            min_tx_ms = timers.min_tx_ms,
            min_rx_ms = timers.min_rx_ms,
            mult = timers.detect_mult,
            "bfd session reconfigured"
        );
        if let Some(k) = self.sessions.get_mut(name) {
            k.config = config;
        }
        Ok(())
    }

    /// New `[bfd]` timers: every running session that does not set its own
    /// follows (`own` gives a tunnel's own timers).
    pub fn set_defaults(&mut self, defaults: BfdSettings, own: impl Fn(&str) -> BfdOverride) {
        self.defaults = defaults;
        let names: Vec<String> = self.sessions.keys().cloned().collect();
        for name in names {
            let timers = match self.peers.get(name.as_str()) {
                Some(p) => self.timers(&p.timers()),
                None => self.timers(&own(&name)),
            };
            if let Err(e) = self.retime(&name, &timers) {
                tracing::warn!("{e:#}");
            }
        }
    }

    pub fn set_nexthop(&mut self, name: &str, mac: MacAddr) {
        if !self.sessions.get(name).is_some_and(|k| k.kind == SessionType::Tunnel) {
            return;
        }
        let Ok(engine) = self.engine() else { return };
        if let Err(e) = engine.set_nexthop(name, mac.0) {
            tracing::warn!(tunnel = name, "bfd: following the next hop: {e}");
        }
    }

    /// The uplink's MAC changed: the source of every Geneve frame.
    pub fn set_uplink_mac(&mut self, mac: [u8; 6]) {
        if let Ok(engine) = self.engine() {
            engine.set_uplink_mac(mac);
        }
    }

    // --- Single-hop peers -------------------------------------------------

    /// Why peer `p` cannot run, before anything is started; `prefix` names
    /// it before the field (`bfd peer "tor1": `, `bfd_peers[0].`).
    pub fn check_peer(&self, p: &BfdPeerArgs, prefix: &str) -> Result<()> {
        let fields = [format!("{prefix}min_tx_ms"), format!("{prefix}min_rx_ms"), format!("{prefix}detect_mult")];
        p.timers().check([&fields[0], &fields[1], &fields[2]])?;
        if !p.peer_ip.is_ipv4() {
            bail!("{prefix}peer_ip: {} is not an IPv4 address (single-hop BFD runs over IPv4)", p.peer_ip);
        }
        match p.local_ip {
            Some(a) if !a.is_ipv4() => bail!("{prefix}local_ip: {a} is not an IPv4 address"),
            None if self.ip4.is_none() => bail!("{prefix}local_ip: the gateway has no IPv4 --local-ip; give one"),
            _ => {}
        }
        if let Some(ifname) = &p.ifname {
            if super::ifindex(ifname).is_none() {
                bail!("{prefix}ifname: {:?}: no such interface", ifname.as_str());
            }
        }
        Ok(())
    }

    /// The single-hop path of `p`: the uplink unless it names another
    /// interface, and the daemon's IPv4 address unless it gives one.
    fn peer_path(&self, p: &BfdPeerArgs) -> Result<Path> {
        let Some(peer_ip) = p.peer_ip.v4() else {
            bail!("bfd peer {:?}: peer_ip: {}: single-hop BFD runs over IPv4 only", p.name.as_str(), p.peer_ip)
        };
        let local_ip = match p.local_ip {
            Some(a) => {
                a.v4().ok_or_else(|| anyhow!("bfd peer {:?}: local_ip: {a} is not an IPv4 address", p.name.as_str()))?
            }
            None => self.ip4.ok_or_else(|| {
                anyhow!("bfd peer {:?}: local_ip: the daemon has no IPv4 --local-ip; give one", p.name.as_str())
            })?,
        };
        let ifname = p.ifname.as_ref().map(|i| i.to_string()).unwrap_or_else(|| self.uplink.clone());
        Ok(Path::SingleHop { ifname, peer_ip, local_ip })
    }

    /// Starts peer `p`'s session.
    pub fn add_peer(&mut self, p: &BfdPeerArgs) -> Result<()> {
        self.start_peer(p).map_err(|e| anyhow!("bfd peer {:?}: {e:#}", p.name.as_str()))?;
        self.peers.insert(p.name.clone(), p.clone());
        tracing::info!(peer = %p.name, ip = %p.peer_ip, echo = p.echo, "bfd single-hop session added");
        Ok(())
    }

    /// Knows peer `p` (from the store) without starting it: `start_peers`
    /// does, and a peer whose session cannot start now is still kept.
    pub fn restore_peer(&mut self, p: BfdPeerArgs) {
        self.peers.insert(p.name.clone(), p);
    }

    /// Starts every known peer that has no session (warning for those that
    /// cannot start).
    pub fn start_peers(&mut self) {
        let idle: Vec<BfdPeerArgs> =
            self.peers.values().filter(|p| !self.sessions.contains_key(p.name.as_str())).cloned().collect();
        for p in idle {
            let started = self.start_peer(&p);
            if let Err(e) = &started {
                tracing::warn!(peer = %p.name, "bfd: {e:#}");
            }
            self.note(&p.name, &started);
        }
    }

    /// Peer `p`'s session, with its timers over `[bfd]`'s.
    fn start_peer(&mut self, p: &BfdPeerArgs) -> Result<()> {
        let path = self.peer_path(p)?;
        let timers = self.timers(&p.timers());
        self.add(&p.name, SessionType::Peer, path, engine_config(&timers, p.echo))
    }

    pub fn remove_peer(&mut self, name: &str) -> Option<BfdPeerArgs> {
        self.failed.remove(name);
        let p = self.peers.remove(name)?;
        if self.sessions.get(name).is_some_and(|k| k.kind == SessionType::Peer) {
            self.remove(name);
        }
        Some(p)
    }

    pub fn peers(&self) -> &BTreeMap<Name, BfdPeerArgs> {
        &self.peers
    }

    pub fn peer(&self, name: &str) -> Option<&BfdPeerArgs> {
        self.peers.get(name)
    }

    /// Moves peer `name` to `[bfd]`'s or its own current timers.
    pub fn retime_peer(&mut self, name: &str) -> Result<()> {
        let Some(p) = self.peers.get(name) else { return Ok(()) };
        let timers = self.timers(&p.timers());
        self.retime(name, &timers)
    }

    // --- Views --------------------------------------------------------------

    fn view(&self, s: Status, now_ns: u64) -> BfdSessionView {
        let known = self.sessions.get(&s.name);
        let (kind, ofport, vni, remote_ip, local_ip, ifname, nexthop_mac) = match &s.path {
            Path::Geneve { ofport, remote_ip, local_ip, vni, nexthop_mac } => (
                SessionType::Tunnel,
                Some(*ofport),
                Some(*vni),
                *remote_ip,
                *local_ip,
                None,
                Some(MacAddr(*nexthop_mac).to_string()),
            ),
            Path::SingleHop { ifname, peer_ip, local_ip } => {
                (SessionType::Peer, None, None, IpAddr::V4(*peer_ip), IpAddr::V4(*local_ip), Some(ifname.clone()), None)
            }
        };
        // Milliseconds as Open vSwitch keeps them: whole, truncated.
        let ms = |us: u32| u64::from(us) / 1000;
        let from_now = |ns: u64| ((i128::from(ns) - i128::from(now_ns)) / 1_000_000) as i64;
        BfdSessionView {
            name: s.name,
            kind,
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
            tx_interval_ms: ms(s.tx_interval_us),
            rx_interval_ms: ms(s.rx_interval_us),
            detect_time_ms: s.detect_deadline_ns.map(from_now),
            detect_interval_ms: s.detect_time_us / 1000,
            next_tx_time_ms: from_now(s.next_tx_ns),
            last_tx_time_ms: s.last_tx_ns.map(from_now),
            local_flags: crate::api::bfd_flags(s.local_flags),
            local_state: BfdState::from_name(s.state),
            local_diagnostic: s.diagnostic.into(),
            local_discriminator: s.local_discriminator,
            local_min_tx_ms: ms(s.advertised_us.0),
            local_min_rx_ms: ms(s.advertised_us.1),
            remote_flags: crate::api::bfd_flags(s.remote_flags),
            remote_state: BfdState::from_name(s.remote_state),
            remote_diagnostic: s.remote_diagnostic.into(),
            remote_discriminator: s.remote_discriminator,
            remote_min_tx_ms: ms(s.remote_min_tx_us),
            remote_min_rx_ms: ms(s.remote_min_rx_us),
            remote_detect_mult: s.remote_detect_mult,
            flap_count: s.flap_count,
            rx_packets: s.rx_packets,
            tx_packets: s.tx_packets,
            last_change_ms: known.map(|k| k.since.elapsed().as_millis() as u64),
            error: s.error,
        }
    }

    /// Every session, as `bfd show` prints it.
    pub fn sessions(&self) -> Vec<BfdSessionView> {
        let Ok(engine) = self.engine() else { return Vec::new() };
        let now = crate::bfd::monotonic_ns();
        engine.status(None).into_iter().map(|s| self.view(s, now)).collect()
    }

    /// Notices state changes (every `WATCH_PERIOD`).
    pub fn watch(&mut self) {
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
            known.since = if known.seen.0 != now.0 { since(s.changed_ns) } else { Instant::now() };
            known.seen = now;
        }
    }

    /// The engine's thread stops and its sessions are disabled in the map
    /// before the daemon removes (or leaves) the datapath.
    pub fn shutdown(&mut self) {
        self.engine.take();
        self.sessions.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Vni;

    fn bfd() -> Bfd {
        Bfd::new(None, "ul", Some(Ipv4Addr::new(198, 51, 100, 1)), None, BfdSettings::default())
    }

    fn tunnel(remote: &str, bfd: bool, own: BfdOverride) -> TunnelPort {
        TunnelPort {
            name: Name::new("hv2").unwrap(),
            remote: remote.parse().unwrap(),
            vni: Some(Vni::new(5001).unwrap()),
            bfd,
            ovn_metadata: true,
            ofport_request: None,
            bfd_timers: own,
        }
    }

    const FIELDS: [&str; 3] = ["bfd_min_tx_ms", "bfd_min_rx_ms", "bfd_detect_mult"];

    #[test]
    fn a_tunnel_session_is_refused_before_anything_is_written() {
        let b = bfd();
        let e = b.check_tunnel(&tunnel("2001:db8::2", true, BfdOverride::default()), FIELDS).unwrap_err();
        assert!(e.to_string().contains("no --local-ip of 2001:db8::2's family"), "{e}");
        let timers = BfdOverride { min_tx_ms: Some(50), ..BfdOverride::default() };
        let e = b.check_tunnel(&tunnel("203.0.113.2", false, timers), FIELDS).unwrap_err();
        assert!(e.to_string().contains("bfd is off"), "{e}");
        let zero = BfdOverride { detect_mult: Some(0), ..BfdOverride::default() };
        let e = b.check_tunnel(&tunnel("203.0.113.2", true, zero), FIELDS).unwrap_err();
        assert_eq!(e.to_string(), "bfd_detect_mult: 0 is out of range (1..=255)");
        assert!(b.check_tunnel(&tunnel("203.0.113.2", false, BfdOverride::default()), FIELDS).is_ok());
        let e = b.check_tunnel(&tunnel("203.0.113.2", true, BfdOverride::default()), FIELDS).unwrap_err();
        assert!(e.to_string().contains("engine is not running"), "{e}");
    }

    #[test]
    fn timers_fall_back_to_the_defaults_field_by_field() {
        let b = bfd();
        let own = BfdOverride { min_tx_ms: Some(30), min_rx_ms: None, detect_mult: Some(5) };
        assert_eq!(b.timers(&own), BfdSettings { min_tx_ms: 30, min_rx_ms: 1000, detect_mult: 5 });
    }

    #[test]
    fn a_peer_must_be_single_hop_ipv4() {
        let b = bfd();
        let peer = |ip: &str| BfdPeerArgs {
            name: Name::new("tor1").unwrap(),
            peer_ip: ip.parse().unwrap(),
            ifname: None,
            local_ip: None,
            echo: true,
            min_tx_ms: None,
            min_rx_ms: None,
            detect_mult: None,
        };
        assert!(b.check_peer(&peer("198.51.100.254"), "bfd peer \"p\": ").is_ok());
        let e = b.check_peer(&peer("2001:db8::fe"), "bfd_peers[0].").unwrap_err().to_string();
        assert_eq!(e, "bfd_peers[0].peer_ip: 2001:db8::fe is not an IPv4 address (single-hop BFD runs over IPv4)");
        let v6 = Bfd::new(None, "ul", None, Some(Ipv6Addr::LOCALHOST), BfdSettings::default());
        let e = v6.check_peer(&peer("198.51.100.254"), "bfd peer \"p\": ").unwrap_err().to_string();
        assert!(e.contains("no IPv4 --local-ip"), "{e}");
    }
}
