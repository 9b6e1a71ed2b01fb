//! Where BFD plugs into the daemon (`daemon::bfd::BfdHooks`, on the BFD
//! engine). The daemon tells it about every tunnel it adds, adopts on start
//! or removes, about next hops as they resolve or change, and about
//! single-hop peers; it asks it for the sessions when it prints `show`,
//! `bfd show` and the metrics. The default methods are what a daemon
//! without BFD would do.
use anyhow::{bail, Result};

use crate::{
    api::{BfdPeerArgs, BfdSessionView},
    config::BfdSettings,
    ofport::{OfPort, TunnelPort},
};

pub trait TunnelHooks: Send {
    /// A tunnel now has `ofport` in the maps: on `tunnel add`, when the
    /// config adds or changes one, and for every committed tunnel when a
    /// (re)started daemon adopts the datapath. `bfd` are the tunnel's
    /// timers, `nexthop` its underlay next hop if resolved. An error refuses
    /// the tunnel (`tunnel add` takes it out again).
    fn tunnel_added(
        &mut self,
        _tunnel: &TunnelPort,
        _ofport: OfPort,
        _bfd: &BfdSettings,
        _nexthop: Option<[u8; 6]>,
    ) -> Result<()> {
        Ok(())
    }
    /// The tunnel's map entries are gone.
    fn tunnel_removed(&mut self, _name: &str, _ofport: OfPort) {}
    /// The tunnel's next hop resolved or changed.
    fn nexthop_changed(&mut self, _name: &str, _mac: [u8; 6]) {}
    /// The uplink's MAC changed: the source of every Geneve frame.
    fn uplink_mac_changed(&mut self, _mac: [u8; 6]) {}
    /// New timers for the session `name` (a tunnel's or a peer's); nothing
    /// if they are the ones it runs with.
    fn bfd_settings_changed(&mut self, _name: &str, _bfd: &BfdSettings) -> Result<()> {
        Ok(())
    }
    /// A single-hop session toward an underlay router.
    fn peer_added(&mut self, peer: &BfdPeerArgs, _bfd: &BfdSettings) -> Result<()> {
        bail!("bfd peer {:?}: this daemon runs no BFD engine", peer.name)
    }
    fn peer_removed(&mut self, _name: &str) {}
    /// Every session, as `bfd show` prints it.
    fn bfd_sessions(&self) -> Vec<BfdSessionView> {
        Vec::new()
    }
    /// Called every `bfd::WATCH_PERIOD`: notice state changes.
    fn watch(&mut self) {}
    /// The daemon stops; `keep_datapath` says whether the datapath stays.
    fn shutdown(&mut self, _keep_datapath: bool) {}
}
