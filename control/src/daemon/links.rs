//! Local ports' XDP links: `xgw_local` on exactly the interfaces of the
//! committed local ports (pinned, so that they outlive the daemon and a
//! restarted one swaps the program in place), and the watch that notices
//! an interface deleted or recreated under a port. The port keeps its
//! number and record through that; its map entries follow the interface
//! through the port map's reconcile, which the watch asks for.
use std::collections::{BTreeMap, BTreeSet};

use anyhow::{anyhow, Result};
use aya::{programs::Xdp, Ebpf};

use super::pins::{self, Pins, LOCAL_PROGRAM};
use crate::datapath::AttachMode;

/// A local port as the watch sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched<'a> {
    pub port: &'a str,
    pub ifname: &'a str,
    pub ofport: u16,
}

pub struct Links {
    /// The loaded datapath object: its `xgw_local` is what gets attached
    /// (and the BFD and counter maps the views read live in it too).
    ebpf: Ebpf,
    pins: Pins,
    mode: AttachMode,
    /// Local port -> the ifindex its interface had when last looked at
    /// (`None`: no such interface).
    seen: BTreeMap<String, Option<u32>>,
    /// Interfaces whose port went in this message: their links stay until
    /// `settle`, so a port replaced on the same interface (a new VNI, a
    /// Southbound change) takes the link over in place, never detached.
    released: BTreeSet<String>,
    /// Local port -> why `xgw_local` is not on its interface (an attach
    /// that failed in `sync`; `show` says it).
    failed: BTreeMap<String, String>,
}

impl Links {
    pub fn new(ebpf: Ebpf, pins: Pins, mode: AttachMode) -> Links {
        Links { ebpf, pins, mode, seen: BTreeMap::new(), released: BTreeSet::new(), failed: BTreeMap::new() }
    }

    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// Attaches (or adopts, when pinned) `xgw_local` on `ifname`, and
    /// remembers the interface it was attached for as port `port`'s.
    pub fn attach(&mut self, port: &str, ifname: &str) -> Result<pins::Attached> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(LOCAL_PROGRAM)
            .ok_or_else(|| anyhow!("the datapath has no program {LOCAL_PROGRAM}"))?
            .try_into()?;
        // A link released earlier in this message is still pinned: the
        // attach below swaps its program in place.
        self.released.remove(ifname);
        let how = pins::attach(prog, ifname, self.mode, &self.pins.local_link(ifname))?;
        if let Err(e) = pins::attach_flood(&mut self.ebpf, ifname, &self.pins.flood_link(Some(ifname))) {
            // Without it the port's floods would reach the gateway's own
            // stack: no XDP link without its TC link.
            let _ = pins::detach(&self.pins.local_link(ifname));
            return Err(e);
        }
        // Recorded now, so that the interface's deletion before the next
        // watch is still seen as a change.
        self.seen.insert(port.to_owned(), super::ifindex(ifname));
        self.failed.remove(port);
        Ok(how)
    }

    /// Port `port`'s interface does not exist yet: its appearance is a
    /// change the watch reports, which attaches the link.
    pub fn wait(&mut self, port: &str) {
        self.seen.insert(port.to_owned(), None);
    }

    /// Port `port` on `ifname` goes: its links are removed at the next
    /// `settle`, unless a port takes the interface over before.
    pub fn detach(&mut self, port: &str, ifname: &str) {
        self.seen.remove(port);
        self.failed.remove(port);
        self.released.insert(ifname.to_owned());
    }

    /// Removes the links released and not taken over: called once each
    /// message is handled.
    pub fn settle(&mut self) {
        for ifname in std::mem::take(&mut self.released) {
            for pin in [self.pins.local_link(&ifname), self.pins.flood_link(Some(&ifname))] {
                if let Err(e) = pins::detach(&pin) {
                    tracing::warn!(ifname, "detaching from an interface that is no longer a port: {e:#}");
                }
            }
        }
    }

    /// An `xgw_local` link on exactly `wanted` (local port -> interface):
    /// as a (re)started daemon must before it serves anything.
    pub fn sync(&mut self, wanted: &BTreeMap<String, String>) {
        let ifnames: BTreeSet<&String> = wanted.values().collect();
        for ifname in self.pins.local_links() {
            if !ifnames.contains(&ifname) {
                tracing::info!(ifname, "detaching xgw_local from an interface that is no longer a port");
                for pin in [self.pins.local_link(&ifname), self.pins.flood_link(Some(&ifname))] {
                    if let Err(e) = pins::detach(&pin) {
                        tracing::warn!("{e:#}");
                    }
                }
            }
        }
        for (port, ifname) in wanted {
            match self.attach(port, ifname) {
                Ok(how) => tracing::info!(ifname, ?how, "xgw_local attached"),
                Err(e) => {
                    tracing::warn!(ifname, "cannot attach xgw_local: {e:#}");
                    self.failed.insert(port.clone(), format!("xgw_local is not attached to {ifname}: {e:#}"));
                }
            }
        }
    }

    /// Looks at every local port's interface (`lookup`: its ifindex now).
    /// True when one went, came back or was recreated: the port map must
    /// reconcile (a deleted device's DEVMAP entry the kernel drops itself;
    /// a stale LOCAL_PORTS entry must go; a recreated interface needs its
    /// entries and link anew), and then `sync` again.
    pub fn watch(&mut self, ports: &[Watched<'_>], lookup: impl Fn(&str) -> Option<u32>) -> bool {
        watch(&mut self.seen, ports, lookup)
    }

    /// Why port `port` does not forward now, as `show` says it.
    pub fn error(&self, port: &str, ifname: &str) -> Option<String> {
        if self.seen.get(port).is_some_and(Option::is_none) {
            return Some(format!("interface {ifname} does not exist; the port forwards once it does"));
        }
        self.failed.get(port).cloned()
    }
}

fn watch(
    seen: &mut BTreeMap<String, Option<u32>>,
    ports: &[Watched<'_>],
    lookup: impl Fn(&str) -> Option<u32>,
) -> bool {
    let mut changed = false;
    let mut now = BTreeMap::new();
    for w in ports {
        let ifindex = lookup(w.ifname);
        let (port, ifname, ofport) = (w.port, w.ifname, w.ofport);
        match (seen.get(w.port), ifindex) {
            (Some(before), now) if *before == now => {}
            (None, Some(_)) => {}
            (None, None) => {
                tracing::warn!(port, ifname, ofport, "interface does not exist; the port keeps its OpenFlow number and forwards once the interface appears");
                // Its entries may have been written for an interface that
                // went between the write and now.
                changed = true;
            }
            (Some(_), None) => {
                tracing::warn!(port, ifname, ofport, "interface is gone; the port keeps its OpenFlow number and forwards again when the interface returns");
                changed = true;
            }
            (Some(_), Some(i)) => {
                tracing::info!(
                    port,
                    ifname,
                    ifindex = i,
                    "interface is back (or was recreated); repairing its map entries and XDP link"
                );
                changed = true;
            }
        }
        now.insert(w.port.to_owned(), ifindex);
    }
    *seen = now;
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(seen: &mut BTreeMap<String, Option<u32>>, now: &[(&str, u32)]) -> bool {
        let ports = [Watched { port: "vm1", ifname: "tap1", ofport: 3 }];
        let table: BTreeMap<&str, u32> = now.iter().copied().collect();
        watch(seen, &ports, |ifname| table.get(ifname).copied())
    }

    #[test]
    fn the_watch_asks_for_repair_when_an_interface_goes_or_comes_back() {
        let mut seen = BTreeMap::from([("vm1".to_owned(), Some(10))]);
        assert!(!look(&mut seen, &[("tap1", 10)]), "unchanged");
        assert!(look(&mut seen, &[]), "gone");
        assert_eq!(seen["vm1"], None);
        assert!(!look(&mut seen, &[]), "still gone: asked once");
        assert!(look(&mut seen, &[("tap1", 11)]), "back, recreated");
        assert!(look(&mut seen, &[("tap1", 12)]), "recreated again");
        let mut fresh = BTreeMap::new();
        assert!(look(&mut fresh, &[]), "a port whose interface never existed is reconciled once");
        assert!(!look(&mut fresh, &[]));
        assert!(!look(&mut BTreeMap::new(), &[("tap1", 5)]), "a first look at a present interface");
    }
}
