//! Tunnel next hops: the kernel's route toward each tunnel's remote, then
//! the neighbour entry of that route's gateway on the uplink (resolved on
//! demand with `NTF_USE`). This owner decides what to look up and when,
//! and remembers what it found; the MAC it finds reaches the TUNNELS map
//! through the port map (`PortMap::set_nexthop`), the map's one writer.
//!
//! When: at once for a new tunnel; when the kernel announces a route
//! change (every tunnel) or a neighbour on the uplink with a new MAC (the
//! tunnels that go through it); and on a periodic tick, for those still
//! unresolved and, every `RECHECK`, for the rest (in case an announcement
//! was lost).
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use super::netlink::{Event, Neighbour, Netlink, Route};
use crate::{api::Nexthop, types::MacAddr};

/// A resolved next hop is re-checked this often; an unresolved one on every
/// refresh tick.
pub const RECHECK: Duration = Duration::from_secs(10);

/// The lookups a resolution needs (rtnetlink in the daemon).
pub trait Resolver {
    fn route(&mut self, remote: IpAddr) -> Result<Route>;
    fn neighbour(&mut self, ifindex: u32, ip: IpAddr) -> Result<Option<Neighbour>>;
    /// Asks the kernel to resolve or re-confirm the neighbour.
    fn nudge(&mut self, ifindex: u32, ip: IpAddr) -> Result<()>;
}

impl Resolver for Netlink {
    fn route(&mut self, remote: IpAddr) -> Result<Route> {
        self.route_get(remote)
    }
    fn neighbour(&mut self, ifindex: u32, ip: IpAddr) -> Result<Option<Neighbour>> {
        Netlink::neighbour(self, ifindex, ip)
    }
    fn nudge(&mut self, ifindex: u32, ip: IpAddr) -> Result<()> {
        Netlink::nudge(self, ifindex, ip)
    }
}

#[derive(Debug, Clone, Default)]
struct State {
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

/// What a batch of kernel announcements asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Re-resolve every tunnel (a route changed, or announcements were lost).
    pub all: bool,
    /// Re-resolve these.
    pub tunnels: BTreeSet<String>,
    /// Look at the local ports' and the uplink's interfaces.
    pub links: bool,
}

pub struct Nexthops {
    uplink: u32,
    state: BTreeMap<String, State>,
}

impl Nexthops {
    pub fn new(uplink_ifindex: u32) -> Nexthops {
        Nexthops { uplink: uplink_ifindex, state: BTreeMap::new() }
    }

    /// Looks up the route and neighbour toward `remote` for tunnel `name`.
    /// Returns the MAC to write when it is new or moved; `None` leaves the
    /// entry as it is (an unresolved next hop keeps the MAC that worked:
    /// better than zeroes).
    pub fn resolve(&mut self, r: &mut dyn Resolver, name: &str, remote: IpAddr) -> Option<MacAddr> {
        let remote = remote.to_canonical();
        let mut via = None;
        let uplink = self.uplink;
        let result: Result<Option<[u8; 6]>> = (|| {
            let route = r.route(remote)?;
            if route.oif != uplink {
                bail!("the route to {remote} leaves through interface {}, not the uplink", route.oif);
            }
            via = Some(route.via);
            let n = r.neighbour(route.oif, route.via)?;
            if !n.is_some_and(|n| n.confirmed) {
                r.nudge(route.oif, route.via)?;
            }
            Ok(n.and_then(|n| n.mac))
        })();
        let state = self.state.entry(name.to_owned()).or_default();
        state.checked = Some(Instant::now());
        state.via = via;
        match result {
            Ok(Some(mac)) => {
                state.resolved = true;
                state.error = None;
                let old = state.mac.replace(mac);
                match old {
                    Some(old) if old == mac => None,
                    Some(old) => {
                        state.changes += 1;
                        tracing::info!(tunnel = name, nexthop = %MacAddr(mac), old = %MacAddr(old), changes = state.changes, "tunnel next hop changed");
                        Some(MacAddr(mac))
                    }
                    None => {
                        tracing::info!(tunnel = name, nexthop = %MacAddr(mac), "tunnel next hop resolved");
                        Some(MacAddr(mac))
                    }
                }
            }
            Ok(None) => {
                state.resolved = false;
                state.error = Some("neighbour not resolved yet".into());
                None
            }
            Err(e) => {
                let e = format!("{e:#}");
                if state.error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(tunnel = name, "next hop: {e}");
                }
                state.resolved = false;
                state.error = Some(e);
                None
            }
        }
    }

    /// The MAC last resolved for tunnel `name`.
    pub fn mac(&self, name: &str) -> Option<MacAddr> {
        self.state.get(name).and_then(|s| s.mac).map(MacAddr)
    }

    /// Which of `tunnels` a refresh tick should look up: never looked up,
    /// unresolved, or not re-checked for `RECHECK`; all of them with `all`.
    pub fn due<'a>(&self, tunnels: impl IntoIterator<Item = &'a str>, all: bool) -> Vec<&'a str> {
        tunnels
            .into_iter()
            .filter(|name| {
                all || self
                    .state
                    .get(*name)
                    .is_none_or(|s| !s.resolved || s.checked.is_none_or(|t| t.elapsed() >= RECHECK))
            })
            .collect()
    }

    /// What the kernel's announcements ask for. A neighbour on the uplink
    /// with the MAC a tunnel already has (the echo of our own nudge) asks
    /// for nothing.
    pub fn plan(&self, events: &[Event]) -> Plan {
        let mut plan = Plan::default();
        for e in events {
            match *e {
                Event::Neighbour { ifindex, ip, mac: Some(mac) } if ifindex == self.uplink => {
                    let ip = ip.to_canonical();
                    plan.tunnels.extend(
                        self.state
                            .iter()
                            .filter(|(_, s)| s.via == Some(ip) && s.mac != Some(mac))
                            .map(|(name, _)| name.clone()),
                    );
                }
                Event::Neighbour { .. } => {}
                Event::Route => plan.all = true,
                Event::Overrun => {
                    tracing::info!("the kernel dropped link, neighbour or route announcements (socket buffer full); re-checking every next hop and link");
                    plan.all = true;
                    plan.links = true;
                }
                Event::Link => plan.links = true,
            }
        }
        plan
    }

    pub fn forget(&mut self, name: &str) {
        self.state.remove(name);
    }

    pub fn view(&self, name: &str) -> Nexthop {
        let s = self.state.get(name).cloned().unwrap_or_default();
        Nexthop { mac: s.mac.map(|m| MacAddr(m).to_string()), resolved: s.resolved, changes: s.changes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers from tables; counts nudges.
    #[derive(Default)]
    struct Fake {
        routes: BTreeMap<IpAddr, Route>,
        neighbours: BTreeMap<IpAddr, Neighbour>,
        nudges: u32,
    }

    impl Resolver for Fake {
        fn route(&mut self, remote: IpAddr) -> Result<Route> {
            self.routes.get(&remote).copied().ok_or_else(|| anyhow::anyhow!("no route to {remote}"))
        }
        fn neighbour(&mut self, _: u32, ip: IpAddr) -> Result<Option<Neighbour>> {
            Ok(self.neighbours.get(&ip).copied())
        }
        fn nudge(&mut self, _: u32, _: IpAddr) -> Result<()> {
            self.nudges += 1;
            Ok(())
        }
    }

    const UPLINK: u32 = 3;
    const MAC1: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const MAC2: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn routed() -> Fake {
        let mut f = Fake::default();
        f.routes.insert(ip("203.0.113.7"), Route { oif: UPLINK, via: ip("198.51.100.254") });
        f
    }

    #[test]
    fn a_mac_is_written_when_it_resolves_and_when_it_moves_only() {
        let (mut n, mut f) = (Nexthops::new(UPLINK), routed());
        assert_eq!(n.resolve(&mut f, "hv2", ip("203.0.113.7")), None, "no neighbour yet");
        assert_eq!(f.nudges, 1, "an unknown neighbour is asked for");
        assert!(!n.view("hv2").resolved);
        f.neighbours.insert(ip("198.51.100.254"), Neighbour { mac: Some(MAC1), confirmed: true });
        assert_eq!(n.resolve(&mut f, "hv2", ip("203.0.113.7")), Some(MacAddr(MAC1)));
        assert_eq!(n.resolve(&mut f, "hv2", ip("203.0.113.7")), None, "unchanged: nothing to write");
        f.neighbours.insert(ip("198.51.100.254"), Neighbour { mac: Some(MAC2), confirmed: true });
        assert_eq!(n.resolve(&mut f, "hv2", ip("203.0.113.7")), Some(MacAddr(MAC2)));
        let v = n.view("hv2");
        assert_eq!((v.mac.as_deref(), v.resolved, v.changes), (Some("02:00:00:00:00:02"), true, 1));
        assert_eq!(f.nudges, 1, "a confirmed neighbour is not nudged");
    }

    #[test]
    fn a_route_off_the_uplink_is_an_unresolved_next_hop_that_keeps_the_old_mac() {
        let (mut n, mut f) = (Nexthops::new(UPLINK), routed());
        f.neighbours.insert(ip("198.51.100.254"), Neighbour { mac: Some(MAC1), confirmed: true });
        n.resolve(&mut f, "hv2", ip("203.0.113.7"));
        f.routes.insert(ip("203.0.113.7"), Route { oif: 9, via: ip("198.51.100.254") });
        assert_eq!(n.resolve(&mut f, "hv2", ip("203.0.113.7")), None);
        let v = n.view("hv2");
        assert_eq!((v.mac.as_deref(), v.resolved), (Some("02:00:00:00:00:01"), false));
        assert_eq!(n.mac("hv2"), Some(MacAddr(MAC1)));
    }

    #[test]
    fn announcements_pick_the_tunnels_they_concern() {
        let (mut n, mut f) = (Nexthops::new(UPLINK), routed());
        f.routes.insert(ip("203.0.113.8"), Route { oif: UPLINK, via: ip("203.0.113.8") });
        f.neighbours.insert(ip("198.51.100.254"), Neighbour { mac: Some(MAC1), confirmed: true });
        n.resolve(&mut f, "hv2", ip("203.0.113.7"));
        n.resolve(&mut f, "hv3", ip("203.0.113.8"));
        let router = |mac| Event::Neighbour { ifindex: UPLINK, ip: ip("198.51.100.254"), mac: Some(mac) };
        assert_eq!(n.plan(&[router(MAC1)]), Plan::default(), "the echo of a nudge asks for nothing");
        assert_eq!(n.plan(&[router(MAC2)]).tunnels, BTreeSet::from(["hv2".to_owned()]));
        let elsewhere = Event::Neighbour { ifindex: UPLINK + 1, ip: ip("198.51.100.254"), mac: Some(MAC2) };
        assert_eq!(n.plan(&[elsewhere]), Plan::default());
        assert!(n.plan(&[Event::Route]).all);
        let lost = n.plan(&[Event::Overrun]);
        assert!(lost.all && lost.links);
        assert!(n.plan(&[Event::Link]).links);
    }

    #[test]
    fn due_picks_new_and_unresolved_tunnels() {
        let (mut n, mut f) = (Nexthops::new(UPLINK), routed());
        f.neighbours.insert(ip("198.51.100.254"), Neighbour { mac: Some(MAC1), confirmed: true });
        n.resolve(&mut f, "hv2", ip("203.0.113.7"));
        n.resolve(&mut f, "gone", ip("203.0.113.99"));
        assert_eq!(n.due(["hv2", "gone", "new"], false), ["gone", "new"]);
        assert_eq!(n.due(["hv2", "gone"], true), ["hv2", "gone"]);
        n.forget("gone");
        assert_eq!(n.view("gone"), Nexthop { mac: None, resolved: false, changes: 0 });
    }
}
