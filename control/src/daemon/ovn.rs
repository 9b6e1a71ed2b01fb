//! What the Southbound owns: the entries an OVN plan put in place (kept in
//! the store, so a restarted daemon knows them), and `apply_ovn`, which
//! turns one view of the Southbound into committed ports through the port
//! map's one transaction path, beside what the config file and the API
//! own. One bad row or entry is a warning and a refusal for that entry
//! alone; everything else is applied.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::dispatch::Daemon;
use crate::config::OvnConfig;
use crate::ofport::{Binding, Desired, Group, PortSpec};
use crate::ovn::plan::{self, Claim, Inputs};
use crate::ovn::sb::{Sb, Uuid};
use crate::types::{IfName, MacAddr, Name, Vni};

/// The store key of `OvnOwned`.
pub const META_KEY: &str = "ovn_owned";

/// What the Southbound put in place.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OvnOwned {
    pub ports: BTreeSet<String>,
    pub bindings: BTreeSet<(Vni, MacAddr)>,
    pub groups: BTreeSet<(Vni, u16)>,
    /// `<chassis>@<ip>` -> its tunnel's name, kept so a tunnel keeps its
    /// name (and number) while its chassis stays.
    pub tunnel_names: BTreeMap<String, Name>,
}

/// The chassis' settings, from `[ovn]` and the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub chassis: String,
    pub transport_zones: BTreeSet<String>,
    pub interfaces: BTreeMap<String, IfName>,
    pub claim_unsupported: bool,
}

impl Settings {
    pub fn from_config(chassis: &str, c: &OvnConfig) -> Settings {
        Settings {
            chassis: chassis.to_owned(),
            transport_zones: c.transport_zones.clone(),
            interfaces: c.interfaces.clone(),
            claim_unsupported: c.claim_unsupported,
        }
    }
}

/// The OVN chassis a daemon runs as: its identity in the Southbound and
/// what decides its plan.
#[derive(Debug, Clone)]
pub struct Chassis {
    pub identity: super::southbound::Identity,
    pub settings: Settings,
}

/// What applying one view of the Southbound did, for the Southbound
/// (claims, releases, the `nb_cfg` to acknowledge) and for `show`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// Claimed ports, each with whether it forwards now (every entry in,
    /// its interface present): `Port_Binding.up`.
    pub claims: Vec<(Claim, bool)>,
    pub releases: Vec<Uuid>,
    /// The `SB_Global.nb_cfg` this view carried, applied.
    pub nb_cfg: i64,
    pub refused: BTreeMap<String, String>,
    pub warnings: Vec<String>,
    pub tunnels: usize,
    pub bindings: usize,
    pub groups: usize,
}

impl Daemon {
    pub(super) fn set_ovn(&mut self, ovn: Option<(Settings, tokio::sync::watch::Receiver<super::southbound::Status>)>) {
        self.ovn = ovn;
    }

    /// `apply_ovn` with this daemon's chassis settings.
    pub(super) fn apply_southbound(&mut self, sb: &Sb) -> Result<Outcome> {
        let settings = match &self.ovn {
            Some((s, _)) => s.clone(),
            None => anyhow::bail!("this daemon is no OVN chassis"),
        };
        self.apply_ovn(&settings, sb)
    }

    /// Commits what `sb` says this chassis has: the OVN entries follow the
    /// plan, the config file's and the API's stay as they are.
    pub(super) fn apply_ovn(&mut self, settings: &Settings, sb: &Sb) -> Result<Outcome> {
        let owned = self.ovn_owned.clone();
        let mut p = plan::plan(
            sb,
            &Inputs {
                me: &settings.chassis,
                transport_zones: &settings.transport_zones,
                ifaces: &settings.interfaces,
                tunnel_names: &owned.tunnel_names,
                claim_unsupported: settings.claim_unsupported,
            },
        );
        let mut warnings = std::mem::take(&mut p.warnings);
        warnings.extend(sb.problems.iter().cloned());

        // Everything not the Southbound's stays as it is.
        let mut ports: Vec<PortSpec> =
            self.ports.ports().filter(|r| !owned.ports.contains(r.name())).map(|r| r.spec.clone()).collect();
        let kept: BTreeSet<String> = ports.iter().map(|s| s.name().to_owned()).collect();
        let mut bindings: Vec<Binding> =
            self.ports.bindings().filter(|b| !owned.bindings.contains(&b.key())).cloned().collect();
        let kept_bindings: BTreeSet<(Vni, MacAddr)> = bindings.iter().map(Binding::key).collect();
        let mut groups: Vec<Group> =
            self.ports.groups().filter(|g| !owned.groups.contains(&g.key())).cloned().collect();
        let kept_groups: BTreeSet<(Vni, u16)> = groups.iter().map(Group::key).collect();

        let mut tunnel_ids: BTreeMap<String, String> = BTreeMap::new();
        for (id, mut t) in p.tunnels {
            if kept.contains(t.name.as_str()) {
                warnings.push(format!(
                    "tunnel {:?} for {id}: the name is taken by the config file or the API",
                    t.name.as_str()
                ));
                continue;
            }
            if t.bfd {
                t.bfd_timers = p.bfd;
                let fields =
                    ["SB_Global options:bfd-min-tx", "SB_Global options:bfd-min-rx", "SB_Global options:bfd-mult"];
                if let Err(e) = self.bfd.check_tunnel(&t, fields) {
                    warnings.push(format!("tunnel {:?}: {e:#}; xgw's [bfd] timers apply", t.name.as_str()));
                    t.bfd_timers = Default::default();
                }
                if let Err(e) = self.bfd.check_tunnel(&t, fields) {
                    warnings.push(format!("tunnel {:?}: no BFD: {e:#}", t.name.as_str()));
                    t.bfd = false;
                }
            }
            if self.ports.get(&t.name).is_none() {
                self.resolve(&t.name, t.remote.get());
            }
            tunnel_ids.insert(t.name.to_string(), id);
            ports.push(PortSpec::Tunnel(t));
        }
        for l in p.ports {
            if kept.contains(l.name.as_str()) {
                p.refused.insert(l.name.to_string(), "the name is taken by the config file or the API".into());
                continue;
            }
            ports.push(PortSpec::Local(l));
        }
        for b in p.bindings {
            if kept_bindings.contains(&b.key()) {
                warnings.push(format!("{}: taken by the config file or the API", b.label()));
                continue;
            }
            bindings.push(b);
        }
        for g in p.groups {
            if kept_groups.contains(&g.key()) {
                warnings.push(format!("{}: taken by the config file or the API", g.label()));
                continue;
            }
            groups.push(g);
        }

        let desired =
            Desired { ports: &ports, bindings: Some(&bindings), groups: Some(&groups), interfaces_may_wait: true };
        let mut effects =
            super::effects::PortEffects { links: &mut self.links, bfd: &mut self.bfd, nexthops: &self.nexthops };
        let report = self.ports.apply(desired, Instant::now(), &mut effects);
        let report = match report {
            Ok(r) => r,
            Err(e) => {
                warnings.push(format!("applying the Southbound: {e}"));
                Default::default()
            }
        };
        for (name, _) in &report.deleted {
            self.nexthops.forget(name);
        }
        for (name, e) in &report.failed {
            if p.claims.iter().any(|c| c.logical_port == *name) {
                p.refused.insert(name.clone(), e.to_string());
            } else {
                warnings.push(format!("{name}: {e}"));
            }
        }

        // What is the Southbound's now: what it asked for and got.
        let mut now = OvnOwned::default();
        for s in &ports {
            let name = s.name();
            if !kept.contains(name) && self.ports.get(name).is_some_and(|r| r.spec == *s) {
                now.ports.insert(name.to_owned());
                if let Some(id) = tunnel_ids.get(name) {
                    now.tunnel_names.insert(id.clone(), Name::new(name).expect("a port name"));
                }
            }
        }
        let committed: BTreeSet<(Vni, MacAddr)> = self.ports.bindings().map(Binding::key).collect();
        now.bindings =
            bindings.iter().map(Binding::key).filter(|k| !kept_bindings.contains(k) && committed.contains(k)).collect();
        let committed: BTreeSet<(Vni, u16)> = self.ports.groups().map(Group::key).collect();
        now.groups =
            groups.iter().map(Group::key).filter(|k| !kept_groups.contains(k) && committed.contains(k)).collect();
        if now != self.ovn_owned {
            if let Err(e) = self.ports.store_mut().put_meta(META_KEY, &now) {
                warnings.push(format!("recording what the Southbound owns: {e}"));
            }
            self.ovn_owned = now;
        }

        let claims = p
            .claims
            .into_iter()
            .filter(|c| self.ovn_owned.ports.contains(&c.logical_port))
            .map(|c| {
                let ifname = settings.interfaces.get(&c.logical_port).map(IfName::as_str).unwrap_or_default();
                let up = self.links.error(&c.logical_port, ifname).is_none() && super::ifindex(ifname).is_some();
                (c, up)
            })
            .collect();
        for w in &warnings {
            tracing::warn!("ovn: {w}");
        }
        Ok(Outcome {
            claims,
            releases: p.releases,
            nb_cfg: sb.global.nb_cfg,
            refused: p.refused,
            warnings,
            tunnels: tunnel_ids.len(),
            bindings: self.ovn_owned.bindings.len(),
            groups: self.ovn_owned.groups.len(),
        })
    }
}
