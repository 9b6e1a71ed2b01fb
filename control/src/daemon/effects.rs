//! What a port needs outside the configuration maps, set up inside the
//! port's own transaction (`ofport::Effects`): `xgw_local` on a local port's
//! interface, a BFD session on a tunnel with `bfd`. A refusal from either
//! aborts the add before its record is written, so it costs no commit and
//! no number.
use anyhow::Result;

use super::{bfd::Bfd, links::Links, nexthops::Nexthops};
use crate::ofport::{Effects, OfPort, PortSpec};

pub struct PortEffects<'a> {
    pub links: &'a mut Links,
    pub bfd: &'a mut Bfd,
    pub nexthops: &'a Nexthops,
}

impl Effects for PortEffects<'_> {
    fn setup(&mut self, port: &PortSpec, ofport: OfPort) -> Result<()> {
        match port {
            // Reached with no interface only when the port may wait for it
            // (the port map let its entries wait): the link watch attaches
            // `xgw_local` once the interface appears.
            PortSpec::Local(p) if super::ifindex(&p.ifname).is_none() => {
                self.links.wait(&p.name);
                tracing::warn!(port = %p.name, ifname = %p.ifname, ofport = %ofport, "interface does not exist yet; the port keeps its OpenFlow number and forwards once it appears");
                Ok(())
            }
            PortSpec::Local(p) => {
                // The transaction's error names the port.
                let how = self.links.attach(&p.name, &p.ifname)?;
                tracing::debug!(port = %p.name, ifname = %p.ifname, ?how, "xgw_local attached");
                Ok(())
            }
            PortSpec::Tunnel(t) => self.bfd.add_tunnel(t, ofport, self.nexthops.mac(&t.name)),
        }
    }

    fn teardown(&mut self, port: &PortSpec, _ofport: OfPort) {
        match port {
            PortSpec::Local(p) => self.links.detach(&p.name, &p.ifname),
            PortSpec::Tunnel(t) => self.bfd.remove_tunnel(&t.name),
        }
    }

    /// A tunnel's BFD is no map entry: turning it on starts the session,
    /// off stops it, new timers move the running one by a Poll Sequence.
    fn update(&mut self, old: &PortSpec, new: &PortSpec, ofport: OfPort) -> Result<()> {
        let (PortSpec::Tunnel(old), PortSpec::Tunnel(t)) = (old, new) else { return Ok(()) };
        match (old.bfd, t.bfd) {
            (false, true) => self.bfd.add_tunnel(t, ofport, self.nexthops.mac(&t.name)),
            (true, false) => {
                self.bfd.remove_tunnel(&t.name);
                Ok(())
            }
            (true, true) => {
                let timers = self.bfd.timers(&t.bfd_timers);
                self.bfd.retime(&t.name, &timers)
            }
            (false, false) => Ok(()),
        }
    }
}
