//! From what the Southbound says to what xgw commits: tunnels to the
//! other chassis, the local ports this chassis may claim, remote bindings
//! and multicast groups of the switches those ports are on, and where BFD
//! runs, each as ovn-controller decides it (encaps.c, binding.c, bfd.c).
//! A pure function of the Southbound and the operator's local interfaces,
//! so the daemon can apply it through the port map's one transaction path
//! and tests can check it row by row.
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::sb::{PortBinding, Sb, Uuid};
use crate::ofport::{Binding, Group, LocalPort, TunnelPort};
use crate::types::{AllowedAddress, BfdOverride, IfName, MacAddr, Name, PortKey, UnicastIp, Vni};

/// What the plan needs besides the Southbound.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// This chassis' name (`Chassis.name`).
    pub me: &'a str,
    /// This chassis' transport zones (empty: none).
    pub transport_zones: &'a BTreeSet<String>,
    /// The operator's local ports: OVN logical port (`iface-id`) -> the
    /// interface its VM is on.
    pub ifaces: &'a BTreeMap<String, IfName>,
    /// Tunnel names already given, by `<chassis>@<ip>` (ovn-controller's
    /// `ovn-chassis-id`): a tunnel keeps its name, and so its number, for
    /// as long as its chassis and IP stay.
    pub tunnel_names: &'a BTreeMap<String, Name>,
    /// Claim a port even where its switch has what xgw does not implement
    /// (load balancers), with a warning, instead of refusing it.
    pub claim_unsupported: bool,
}

/// A port this chassis claims: the row, and the Encap peers must use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Claim {
    pub port_binding: Uuid,
    pub logical_port: String,
    /// Already ours, with our encap: nothing to write until `up`.
    pub held: bool,
    pub up: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OvnPlan {
    /// With the `<chassis>@<ip>` each stands for.
    pub tunnels: Vec<(String, TunnelPort)>,
    pub ports: Vec<LocalPort>,
    pub bindings: Vec<Binding>,
    pub groups: Vec<Group>,
    pub claims: Vec<Claim>,
    /// Port_Binding rows bound to this chassis that it no longer claims.
    pub releases: Vec<Uuid>,
    /// Logical ports named by a local interface that are not claimed, and why.
    pub refused: BTreeMap<String, String>,
    /// What is not done and why: rows that do not fit, roles xgw does not
    /// take, options it does not implement.
    pub warnings: Vec<String>,
    /// `SB_Global options:bfd-*`, for every OVN tunnel's session.
    pub bfd: BfdOverride,
}

/// ovn-controller's `chassis_tzones_overlap()`: no zones on either side,
/// or one zone in common.
fn zones_overlap(mine: &BTreeSet<String>, theirs: &BTreeSet<String>) -> bool {
    (mine.is_empty() && theirs.is_empty()) || mine.intersection(theirs).next().is_some()
}

/// `"MAC [IP[/len] ...]"` as OVN writes `Port_Binding.mac`: the MAC and
/// the addresses (prefix lengths dropped: a router port's are
/// `203.0.113.254/24`).
fn addresses(s: &str) -> Result<(MacAddr, Vec<UnicastIp>), String> {
    let mut words = s.split_whitespace();
    let first = words.next().ok_or("empty")?;
    if ["unknown", "router", "dynamic"].contains(&first) {
        return Err(format!("{first:?} addresses are not supported (xgw needs the port's MAC)"));
    }
    let mac: MacAddr = first.parse().map_err(|e| format!("{e}"))?;
    let mac = mac.unicast().map_err(|e| format!("{e}"))?;
    let ips = words
        .map(|w| w.split('/').next().unwrap_or(w).parse::<UnicastIp>().map_err(|e| format!("{e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((mac, ips))
}

/// The one IP xgw answers ARP/ND for: the first IPv4, else the first.
fn main_ip(ips: &[UnicastIp]) -> Option<UnicastIp> {
    ips.iter().find(|ip| ip.get().is_ipv4()).or(ips.first()).copied()
}

pub fn plan(sb: &Sb, inputs: &Inputs<'_>) -> OvnPlan {
    let mut p = OvnPlan::default();
    p.bfd = bfd_timers(sb, &mut p.warnings);
    let me = sb.chassis_by_name(inputs.me).map(|(u, c)| (u.clone(), c.clone()));
    let me_uuid = me.as_ref().map(|(u, _)| u.clone());

    // Tunnels: one per geneve Encap of every other chassis this one may
    // reach, named once and kept.
    let bfd_to = bfd_chassis(sb, me_uuid.as_deref(), &mut p.warnings);
    let mut taken: BTreeSet<String> = inputs.tunnel_names.values().map(|n| n.to_string()).collect();
    // One tunnel per remote IP. Two chassis with one IP (the 2018
    // incident's redundant rows, which a Southbound without the Encap
    // (type, ip) index still holds) get one tunnel: the one that has it
    // already, else the first by name; the other is reported, every time,
    // and costs no number. An IP of this chassis' own is no tunnel either.
    let own_ips: BTreeSet<IpAddr> = me
        .iter()
        .flat_map(|(_, c)| c.encaps.iter().filter_map(|e| sb.encaps.get(e)?.ip.parse::<IpAddr>().ok()))
        .map(|ip| ip.to_canonical())
        .collect();
    let mut ip_owner: BTreeMap<IpAddr, (bool, &str)> = BTreeMap::new();
    for c in sb.chassis.values() {
        if c.name == inputs.me || c.is_remote() || !zones_overlap(inputs.transport_zones, &c.transport_zones) {
            continue;
        }
        for e in c.encaps.iter().filter_map(|e| sb.encaps.get(e)).filter(|e| e.kind == "geneve") {
            let Ok(ip) = e.ip.parse::<IpAddr>() else { continue };
            let candidate = (!inputs.tunnel_names.contains_key(&format!("{}@{}", c.name, e.ip)), c.name.as_str());
            let best = ip_owner.entry(ip.to_canonical()).or_insert(candidate);
            if candidate < *best {
                *best = candidate;
            }
        }
    }
    let mut tunnel_of_chassis: BTreeMap<&Uuid, (Name, Uuid)> = BTreeMap::new();
    let mut tunnel_of_encap: BTreeMap<&Uuid, Name> = BTreeMap::new();
    for (cu, c) in &sb.chassis {
        if c.name == inputs.me || c.is_remote() || !zones_overlap(inputs.transport_zones, &c.transport_zones) {
            continue;
        }
        let mut geneve: Vec<(&Uuid, &super::sb::Encap)> =
            c.encaps.iter().filter_map(|e| Some((e, sb.encaps.get(e)?))).filter(|(_, e)| e.kind == "geneve").collect();
        geneve.sort_by(|a, b| a.1.ip.cmp(&b.1.ip));
        if geneve.is_empty() {
            p.warnings.push(format!("chassis {}: no geneve encap (xgw speaks geneve only): no tunnel", c.name));
            continue;
        }
        for (eu, e) in geneve {
            let remote = match e
                .ip
                .parse::<IpAddr>()
                .map_err(|e| e.to_string())
                .and_then(|ip| UnicastIp::new(ip).map_err(|e| e.to_string()))
            {
                Ok(ip) => ip,
                Err(why) => {
                    p.warnings.push(format!("Encap {eu} of chassis {}: ip: {why}: no tunnel", c.name));
                    continue;
                }
            };
            if own_ips.contains(&remote.get()) {
                p.warnings.push(format!("chassis {}: encap ip {} is this chassis' own: no tunnel", c.name, e.ip));
                continue;
            }
            if let Some((_, owner)) = ip_owner.get(&remote.get()).filter(|(_, o)| *o != c.name) {
                p.warnings.push(format!(
                    "chassis {}: encap ip {} is also chassis {owner}'s (a redundant chassis): no second tunnel",
                    c.name, e.ip
                ));
                continue;
            }
            let id = format!("{}@{}", c.name, e.ip);
            let name = match inputs.tunnel_names.get(&id) {
                Some(n) => n.clone(),
                None => {
                    let n = tunnel_name(&c.name, &taken);
                    taken.insert(n.to_string());
                    n
                }
            };
            tunnel_of_chassis.entry(cu).or_insert((name.clone(), eu.clone()));
            tunnel_of_encap.insert(eu, name.clone());
            p.tunnels.push((
                id,
                TunnelPort {
                    name,
                    remote,
                    vni: None,
                    bfd: bfd_to.contains(cu.as_str()),
                    ovn_metadata: true,
                    ofport_request: None,
                    bfd_timers: BfdOverride::default(),
                },
            ));
        }
    }

    // Local ports: only those an operator's interface names and whose
    // binding asks for this chassis.
    let mut claimed: BTreeSet<&Uuid> = BTreeSet::new();
    let by_name: BTreeMap<&str, (&Uuid, &PortBinding)> =
        sb.ports.iter().map(|(u, pb)| (pb.logical_port.as_str(), (u, pb))).collect();
    for (lport, ifname) in inputs.ifaces {
        let Some(&(pu, pb)) = by_name.get(lport.as_str()) else {
            p.refused.insert(lport.clone(), "no Port_Binding has this logical_port".into());
            continue;
        };
        match local_port(sb, inputs, me.as_ref(), pb, ifname) {
            Ok((port, warning)) => {
                if let Some(w) = warning {
                    p.warnings.push(w);
                }
                let held = me_uuid.is_some() && pb.chassis == me_uuid && pb.encap.is_some();
                p.claims.push(Claim {
                    port_binding: pu.clone(),
                    logical_port: lport.clone(),
                    held,
                    up: pb.up == Some(true),
                });
                p.ports.push(port);
                claimed.insert(pu);
            }
            Err(why) => {
                p.refused.insert(lport.clone(), why);
            }
        }
    }
    if let Some(me) = &me_uuid {
        p.releases = sb
            .ports
            .iter()
            .filter(|(u, pb)| pb.chassis.as_ref() == Some(me) && !claimed.contains(u))
            .map(|(u, _)| u.clone())
            .collect();
    }

    // What the served switches hold elsewhere.
    let served: BTreeSet<&Uuid> = claimed.iter().map(|u| &sb.ports[*u].datapath).collect();
    // A router port is reached through a chassis that has its switch
    // (OVN runs the router where the packet's switch pipeline ran): of the
    // chassis with a VM port on it, the first by name, so the choice only
    // moves when that chassis goes.
    let mut via: BTreeMap<&Uuid, &Uuid> = BTreeMap::new();
    for pb in sb.ports.values() {
        if !pb.kind.is_empty() || !served.contains(&pb.datapath) {
            continue;
        }
        let Some(c) = pb.chassis.as_ref().filter(|c| tunnel_of_chassis.contains_key(c)) else { continue };
        let name = |u: &Uuid| sb.chassis.get(u).map(|c| c.name.clone());
        let best = via.entry(&pb.datapath).or_insert(c);
        if name(c) < name(best) {
            *best = c;
        }
    }
    let mut member_tunnel: BTreeMap<&Uuid, Name> = BTreeMap::new();
    for (pu, pb) in &sb.ports {
        if claimed.contains(pu) || !served.contains(&pb.datapath) {
            continue;
        }
        let what = format!("Port_Binding {} ({pu})", pb.logical_port);
        let (chassis, mac_row) = match pb.kind.as_str() {
            "" => match &pb.chassis {
                Some(c) if Some(c) == me_uuid.as_ref() => continue,
                Some(c) => (c, pb),
                None => continue,
            },
            "patch" => {
                let Some(c) = via.get(&pb.datapath) else {
                    p.warnings.push(format!("{what}: router port unreachable: no other chassis has its switch"));
                    continue;
                };
                // The router side carries the addresses.
                let peer = pb.options.get("peer").and_then(|peer| by_name.get(peer.as_str()));
                match peer {
                    Some((_, peer)) => (*c, *peer),
                    None => {
                        p.warnings.push(format!("{what}: options:peer names no Port_Binding"));
                        continue;
                    }
                }
            }
            _ => continue,
        };
        // The binding's `encap` picks one of its chassis' IPs.
        let by_encap = mac_row.encap.as_ref().or(pb.encap.as_ref()).and_then(|e| tunnel_of_encap.get(e));
        let Some(tunnel) = by_encap.or(tunnel_of_chassis.get(chassis).map(|(t, _)| t)) else {
            let name = sb.chassis.get(chassis).map_or("?", |c| c.name.as_str());
            p.warnings.push(format!("{what}: bound to chassis {name}, which xgw has no tunnel to"));
            continue;
        };
        let (Some(dp), Ok(port_key)) = (sb.datapaths.get(&pb.datapath), PortKey::new(pb.tunnel_key)) else {
            p.warnings.push(format!("{what}: datapath or tunnel_key unusable"));
            continue;
        };
        let Some(first) = mac_row.mac.first() else { continue };
        let (mac, ips) = match addresses(first) {
            Ok(a) => a,
            Err(why) => {
                p.warnings.push(format!("{what}: mac: {why}: not reachable from xgw's ports"));
                continue;
            }
        };
        let Ok(vni) = Vni::new(dp.tunnel_key) else { continue };
        member_tunnel.insert(pu, tunnel.clone());
        p.bindings.push(Binding { vni, mac, ip: main_ip(&ips), tunnel: tunnel.clone(), port_key });
    }

    // Multicast groups of the served switches.
    let local_name: BTreeMap<&Uuid, &str> = claimed.iter().map(|u| (*u, sb.ports[*u].logical_port.as_str())).collect();
    for (gu, g) in &sb.groups {
        if !served.contains(&g.datapath) {
            continue;
        }
        let (Some(dp), true) = (sb.datapaths.get(&g.datapath), g.tunnel_key >= 0x8000) else {
            p.warnings.push(format!("Multicast_Group {} ({gu}): datapath or tunnel_key unusable", g.name));
            continue;
        };
        let ports: BTreeSet<&str> = g.ports.iter().filter_map(|m| local_name.get(m).copied()).collect();
        let tunnels: BTreeSet<&Name> = g.ports.iter().filter_map(|m| member_tunnel.get(m)).collect();
        if ports.is_empty() && tunnels.is_empty() {
            continue;
        }
        let (Ok(vni), Ok(ports)) =
            (Vni::new(dp.tunnel_key), ports.iter().map(|n| Name::new(*n)).collect::<Result<Vec<_>, _>>())
        else {
            continue;
        };
        p.groups.push(Group {
            vni,
            key: g.tunnel_key,
            ports,
            tunnels: tunnels.into_iter().cloned().collect(),
            rate_pps: crate::ofport::spec::DEFAULT_GROUP_RATE,
        });
    }
    p
}

/// The local port for `pb`, or why it is not claimed; and a warning when
/// it is claimed despite something xgw does not implement.
fn local_port(
    sb: &Sb,
    inputs: &Inputs<'_>,
    me: Option<&(Uuid, super::sb::Chassis)>,
    pb: &PortBinding,
    ifname: &IfName,
) -> Result<(LocalPort, Option<String>), String> {
    if !pb.kind.is_empty() {
        return Err(format!("type {:?}: only VM ports (type \"\") are claimed", pb.kind));
    }
    let Some((me_uuid, me_row)) = me else {
        return Err("this chassis is not registered yet".into());
    };
    let by_option = pb.options.get("requested-chassis").is_some_and(|r| {
        r.split(',').any(|n| n == me_row.name || (!me_row.hostname.is_empty() && n == me_row.hostname))
    });
    if pb.requested_chassis.as_ref() != Some(me_uuid) && !by_option {
        return Err("requested-chassis is not this chassis (xgw claims only ports that ask for it)".into());
    }
    let dp = sb.datapaths.get(&pb.datapath).ok_or("its datapath is not in the Southbound")?;
    let mut warning = None;
    let mut lacks: BTreeSet<&str> = sb
        .unsupported
        .get(&pb.datapath)
        .into_iter()
        .flatten()
        .filter(|u| u.applies_to(&pb.logical_port))
        .map(|u| u.what)
        .collect();
    if dp.load_balancers > 0 {
        lacks.insert("load balancers");
    }
    if !lacks.is_empty() {
        let what: Vec<&str> = lacks.into_iter().collect();
        let why = format!(
            "switch {} has {} for it, which xgw does not implement (they would not be enforced)",
            dp.name(),
            what.join(", ")
        );
        if !inputs.claim_unsupported {
            return Err(why);
        }
        warning = Some(format!("port {}: claimed although {why} (claim_unsupported)", pb.logical_port));
    }
    let vni = Vni::new(dp.tunnel_key).map_err(|e| format!("datapath tunnel_key: {e}"))?;
    let port_key = PortKey::new(pb.tunnel_key).map_err(|e| format!("tunnel_key: {e}"))?;
    let first = pb.mac.first().ok_or("mac: empty (xgw needs the port's MAC)")?;
    let (mac, ips) = addresses(first).map_err(|e| format!("mac: {e}"))?;
    if pb.mac.len() > 1 {
        return Err("mac: several addresses; xgw takes one MAC per port".into());
    }
    let allowed = pb
        .port_security
        .iter()
        .map(|s| s.parse::<AllowedAddress>().map_err(|e| format!("port_security: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let name = Name::new(pb.logical_port.as_str()).map_err(|e| format!("logical_port: {e}"))?;
    let port = LocalPort {
        name,
        ifname: ifname.clone(),
        vni,
        port_key,
        mac,
        ip: main_ip(&ips),
        ofport_request: None,
        // OVN's port security is on when the column lists anything.
        port_security: !allowed.is_empty(),
        allowed,
    };
    crate::ofport::PortSpec::Local(port.clone()).validate().map_err(|e| e.to_string())?;
    Ok((port, warning))
}

/// ovn-controller's tunnel name: `ovn-<first 6 characters>-<n>`, `n` the
/// first unused hex counter.
fn tunnel_name(chassis: &str, taken: &BTreeSet<String>) -> Name {
    let prefix: String = chassis.chars().filter(|c| c.is_ascii_graphic()).take(6).collect();
    (0u32..)
        .map(|n| format!("ovn-{prefix}-{n:x}"))
        .find(|n| !taken.contains(n))
        .and_then(|n| Name::new(n).ok())
        .expect("a free name")
}

/// `bfd_calculate_chassis()`: for each HA chassis group of two or more
/// members, a ref chassis runs BFD toward every member. A member would run
/// it toward the others too, and so be taken for a gateway it cannot be
/// (it implements no gateway port): xgw refuses the member role, loudly.
fn bfd_chassis<'s>(sb: &'s Sb, me: Option<&str>, warnings: &mut Vec<String>) -> BTreeSet<&'s str> {
    let mut to = BTreeSet::new();
    let Some(me) = me else { return to };
    for g in sb.ha_groups.values() {
        let members: Vec<&str> = g.ha_chassis.iter().filter_map(|h| sb.ha_chassis.get(h)?.chassis.as_deref()).collect();
        if members.len() < 2 {
            continue;
        }
        if members.contains(&me) {
            warnings.push(format!(
                "HA_Chassis_Group {}: this chassis is listed as a gateway member; xgw implements no gateway port and \
                 runs no BFD as one (remove it from the group)",
                g.name
            ));
        }
        if g.ref_chassis.iter().any(|r| r == me) {
            to.extend(members.into_iter().filter(|m| *m != me));
        }
    }
    to
}

/// `SB_Global options:bfd-min-rx, bfd-min-tx, bfd-mult`; what xgw does not
/// implement (`bfd-decay-min-rx`) is said, not ignored.
fn bfd_timers(sb: &Sb, warnings: &mut Vec<String>) -> BfdOverride {
    let o = &sb.global.options;
    let mut get = |key: &str| -> Option<u64> {
        let v = o.get(key)?;
        match v.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                warnings.push(format!("SB_Global options:{key}={v:?} is not a number: left at xgw's default"));
                None
            }
        }
    };
    let t = BfdOverride {
        min_rx_ms: get("bfd-min-rx").and_then(|n| u32::try_from(n).ok()),
        min_tx_ms: get("bfd-min-tx").and_then(|n| u32::try_from(n).ok()),
        detect_mult: get("bfd-mult").and_then(|n| u8::try_from(n).ok()),
    };
    if o.contains_key("bfd-decay-min-rx") {
        warnings.push("SB_Global options:bfd-decay-min-rx is not implemented by xgw: bfd-min-rx applies".into());
    }
    t
}
