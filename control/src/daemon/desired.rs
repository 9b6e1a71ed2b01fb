//! Desired state: the config file against what the API added. What the file
//! names it owns (removing an entry from the file removes it at the next
//! start or SIGHUP); what the API added stays, unless the file names it.
//! This owner remembers which is which (`Ownership`, in the store) and
//! turns a config file into the whole desired state (`plan`), refusing a
//! file that would take away something the API's entries still need.
use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::{
    api::{BfdPeerArgs, PortArgs, TunnelArgs},
    config::Config,
    ofport::{Binding, Group, PortRecord, PortSpec, TunnelPort},
    types::{MacAddr, Name, Vni},
};

/// The store key of `Ownership`.
pub const META_KEY: &str = "config_owned";

/// What the config file put in place at the last start or reload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ownership {
    pub ports: BTreeSet<String>,
    pub bindings: BTreeSet<(Vni, MacAddr)>,
    #[serde(default)]
    pub bfd_peers: BTreeSet<String>,
    #[serde(default)]
    pub groups: BTreeSet<(Vni, u16)>,
}

/// Everything that should be committed once a config file is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub ports: Vec<PortSpec>,
    pub bindings: Vec<Binding>,
    pub groups: Vec<Group>,
    /// Peers and where each comes from (`config: bfd_peers[0]`, or the API).
    pub peers: Vec<(BfdPeerArgs, String)>,
    /// The file's path of each port, tunnel and peer it names, for errors.
    pub paths: BTreeMap<String, String>,
    pub owned: Ownership,
}

pub fn local_spec(a: &PortArgs) -> PortSpec {
    PortSpec::Local(a.local_port())
}

pub fn tunnel_spec(a: &TunnelArgs) -> PortSpec {
    PortSpec::Tunnel(TunnelPort {
        name: a.name.clone(),
        remote: a.remote_ip,
        vni: a.vni,
        bfd: a.bfd,
        ovn_metadata: a.ovn_metadata,
        ofport_request: a.ofport,
        bfd_timers: a.bfd_timers(),
    })
}

/// The desired state once `config` is applied over what is committed
/// (`ports`, `bindings`, `peers`), given what the file owned before.
pub fn plan<'a>(
    config: &Config,
    owned: &Ownership,
    ports: impl Iterator<Item = &'a PortRecord>,
    bindings: impl Iterator<Item = &'a Binding>,
    groups: impl Iterator<Item = &'a Group>,
    peers: &BTreeMap<Name, BfdPeerArgs>,
) -> Result<Plan> {
    let mut paths: BTreeMap<String, String> = BTreeMap::new();
    for (i, p) in config.ports.iter().enumerate() {
        paths.insert(p.name.to_string(), format!("ports[{i}]"));
    }
    for (i, t) in config.tunnels.iter().enumerate() {
        paths.insert(t.name.to_string(), format!("tunnels[{i}]"));
    }
    let file_peers: BTreeSet<&str> = config.bfd_peers.iter().map(|p| p.name.as_str()).collect();

    // The API's: committed, not owned by the file before, not named by it now.
    let api_ports: Vec<&PortRecord> =
        ports.filter(|r| !owned.ports.contains(r.name()) && !paths.contains_key(r.name())).collect();
    let api_peers: Vec<&BfdPeerArgs> = peers
        .values()
        .filter(|p| !owned.bfd_peers.contains(p.name.as_str()) && !file_peers.contains(p.name.as_str()))
        .collect();

    for (i, p) in config.bfd_peers.iter().enumerate() {
        if let Some(r) = api_ports.iter().find(|r| r.name() == p.name.as_str()) {
            bail!("config: bfd_peers[{i}].name: {:?} is already a port or tunnel (added through the API)", r.name());
        }
    }
    for p in &api_peers {
        if let Some(path) = paths.get(p.name.as_str()) {
            bail!("config: {path}.name: {:?} is already a bfd peer (added through the API)", p.name.as_str());
        }
    }

    let mut desired: Vec<PortSpec> = api_ports.iter().map(|r| r.spec.clone()).collect();
    desired.extend(config.ports.iter().map(local_spec));
    desired.extend(config.tunnels.iter().map(tunnel_spec));

    // Bindings kept from the API must still find their tunnel.
    let file_bindings: BTreeSet<(Vni, MacAddr)> = config.bindings.iter().map(Binding::key).collect();
    let tunnels: BTreeSet<&str> =
        desired.iter().filter(|s| matches!(s, PortSpec::Tunnel(_))).map(|s| s.name()).collect();
    let mut wanted_bindings = config.bindings.clone();
    for b in bindings {
        let kept = !owned.bindings.contains(&b.key()) && !file_bindings.contains(&b.key());
        if !kept {
            continue;
        }
        if !tunnels.contains(b.tunnel.as_str()) {
            bail!(
                "config: the file removes tunnel {:?}, which binding vni {} mac {} (added through the API) uses",
                b.tunnel.as_str(),
                b.vni,
                b.mac
            );
        }
        wanted_bindings.push(b.clone());
    }

    // Groups kept from the API must still find their members.
    let file_groups: BTreeSet<(Vni, u16)> = config.groups.iter().map(Group::key).collect();
    let names: BTreeSet<&str> = desired.iter().map(PortSpec::name).collect();
    let mut wanted_groups = config.groups.clone();
    for g in groups {
        if owned.groups.contains(&g.key()) || file_groups.contains(&g.key()) {
            continue;
        }
        if let Some(m) = g.ports.iter().chain(&g.tunnels).find(|m| !names.contains(m.as_str())) {
            bail!("config: the file removes {:?}, which {} (added through the API) has", m.as_str(), g.label());
        }
        wanted_groups.push(g.clone());
    }

    let mut wanted_peers: Vec<(BfdPeerArgs, String)> =
        api_peers.into_iter().map(|p| (p.clone(), "bfd peer".to_owned())).collect();
    for (i, p) in config.bfd_peers.iter().enumerate() {
        wanted_peers.push((p.clone(), format!("config: bfd_peers[{i}]")));
    }
    let owned = Ownership {
        ports: paths.keys().cloned().collect(),
        bindings: file_bindings,
        bfd_peers: file_peers.iter().map(|n| n.to_string()).collect(),
        groups: file_groups,
    };
    Ok(Plan { ports: desired, bindings: wanted_bindings, groups: wanted_groups, peers: wanted_peers, paths, owned })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ofport::OfPort;

    const FILE: &str = r#"
[[ports]]
name = "vm1"
ifname = "p1"
vni = 5001
port_key = 17
mac = "02:00:5e:20:00:01"
[[tunnels]]
name = "hv2"
remote_ip = "198.51.100.2"
vni = 5001
[[bindings]]
vni = 5001
mac = "02:00:5e:20:00:02"
tunnel = "hv2"
port_key = 34
"#;

    fn record(spec: PortSpec, n: u16) -> PortRecord {
        PortRecord { ofport: OfPort::new(n).unwrap(), spec }
    }

    fn api_tunnel(name: &str, remote: &str) -> PortSpec {
        let a: TunnelArgs = serde_json::from_value(serde_json::json!({ "name": name, "remote_ip": remote, "vni": 7 }))
            .expect("tunnel args");
        tunnel_spec(&a)
    }

    fn api_binding(tunnel: &str) -> Binding {
        serde_json::from_value(
            serde_json::json!({ "vni": 7, "mac": "02:00:00:00:07:01", "tunnel": tunnel, "port_key": 3 }),
        )
        .expect("binding")
    }

    #[test]
    fn the_file_owns_what_it_names_and_the_api_keeps_the_rest() {
        let config = Config::parse(FILE).unwrap();
        let api = record(api_tunnel("t9", "203.0.113.9"), 9);
        let gone = record(api_tunnel("old", "203.0.113.8"), 8);
        let before = Ownership { ports: BTreeSet::from(["old".to_owned()]), ..Ownership::default() };
        let b = api_binding("t9");
        let p =
            plan(&config, &before, [&api, &gone].into_iter(), [&b].into_iter(), std::iter::empty(), &BTreeMap::new())
                .unwrap();
        let names: Vec<&str> = p.ports.iter().map(PortSpec::name).collect();
        assert_eq!(names, ["t9", "vm1", "hv2"], "the API's t9 stays, the file's old one goes");
        assert_eq!(p.bindings.len(), 2, "the file's binding and the API's");
        assert_eq!(p.owned.ports, BTreeSet::from(["vm1".to_owned(), "hv2".to_owned()]));
        assert_eq!(p.owned.bindings.len(), 1);
        assert_eq!(p.paths["hv2"], "tunnels[0]");
    }

    #[test]
    fn the_file_may_not_take_a_tunnel_an_api_binding_uses() {
        let config = Config::parse(FILE).unwrap();
        let owned_by_file = record(api_tunnel("t9", "203.0.113.9"), 9);
        let before = Ownership { ports: BTreeSet::from(["t9".to_owned()]), ..Ownership::default() };
        let b = api_binding("t9");
        let e = plan(
            &config,
            &before,
            [&owned_by_file].into_iter(),
            [&b].into_iter(),
            std::iter::empty(),
            &BTreeMap::new(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "config: the file removes tunnel \"t9\", which binding vni 7 mac 02:00:00:00:07:01 (added through the API) uses"
        );
    }

    #[test]
    fn peer_names_may_not_cross_between_the_file_and_the_api() {
        let config =
            Config::parse(&format!("{FILE}[[bfd_peers]]\nname = \"t9\"\npeer_ip = \"198.51.100.254\"\n")).unwrap();
        let api = record(api_tunnel("t9", "203.0.113.9"), 9);
        let e = plan(
            &config,
            &Ownership::default(),
            [&api].into_iter(),
            std::iter::empty(),
            std::iter::empty(),
            &BTreeMap::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bfd_peers[0].name: \"t9\" is already a port or tunnel"), "{e}");
    }
}
