//! The part of OVN's Southbound database a chassis reads, as typed rows.
//! `Sb` is filled from the OVSDB replica (`from_rows`), one table at a time;
//! a row this cannot read is not dropped in silence: it is left out and
//! named in `Sb::problems` (table, uuid, column, why), which `show`, the
//! log and a metric carry.
use std::collections::{BTreeMap, BTreeSet};

/// A row's `_uuid`, as OVSDB writes it.
pub type Uuid = String;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SbGlobal {
    pub nb_cfg: i64,
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chassis {
    pub name: String,
    pub hostname: String,
    pub encaps: Vec<Uuid>,
    pub other_config: BTreeMap<String, String>,
    pub transport_zones: BTreeSet<String>,
}

impl Chassis {
    /// ovn-ic's chassis of other availability zones: a tunnel to one is
    /// only for an interconnection gateway, which xgw is not.
    pub fn is_remote(&self) -> bool {
        self.other_config.get("is-remote").is_some_and(|v| v == "true")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encap {
    /// `geneve`, `stt` or `vxlan`.
    pub kind: String,
    pub ip: String,
    pub options: BTreeMap<String, String>,
    pub chassis_name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Datapath {
    /// The VNI of the switch's traffic.
    pub tunnel_key: u32,
    pub load_balancers: usize,
    pub external_ids: BTreeMap<String, String>,
}

impl Datapath {
    /// The logical switch's (or router's) name, for messages.
    pub fn name(&self) -> &str {
        self.external_ids.get("name").map(String::as_str).unwrap_or("?")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortBinding {
    pub logical_port: String,
    /// `""` for a VM's port (VIF), `patch` for a switch port toward a
    /// router, `chassisredirect`, `localnet`, `external`, ...
    pub kind: String,
    pub datapath: Uuid,
    pub tunnel_key: u16,
    /// `"MAC IP [IP ...]"` each, or `unknown`, `router`, `dynamic`.
    pub mac: Vec<String>,
    pub port_security: Vec<String>,
    pub chassis: Option<Uuid>,
    pub encap: Option<Uuid>,
    pub requested_chassis: Option<Uuid>,
    pub up: Option<bool>,
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MulticastGroup {
    pub datapath: Uuid,
    pub name: String,
    pub tunnel_key: u16,
    pub ports: Vec<Uuid>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HaChassisGroup {
    pub name: String,
    pub ha_chassis: Vec<Uuid>,
    pub ref_chassis: Vec<Uuid>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HaChassis {
    pub chassis: Option<Uuid>,
    pub priority: i64,
}

/// What a logical switch asks of the chassis that hosts one of its ports
/// and xgw does not implement, as its logical flows show it (`what`:
/// "ACLs", "DHCP options", "DNS records", "QoS", "load balancers").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    pub what: &'static str,
    /// The ports the flow's match names (`inport == "vm3"`); `None` when it
    /// names none, or a port group: the whole switch.
    pub ports: Option<Vec<String>>,
}

impl Unsupported {
    pub fn applies_to(&self, port: &str) -> bool {
        self.ports.as_ref().is_none_or(|p| p.iter().any(|n| n == port))
    }
}

/// The stages whose flows say a switch has something xgw does not do, and
/// what (OVN 23.03's northd: ACL flows carry `stage-hint` and priorities
/// 1000 + the ACL's; DHCP and QoS flows name the port).
pub const UNSUPPORTED_STAGES: &[&str] = &[
    "ls_in_acl",
    "ls_out_acl",
    "ls_in_acl_after_lb",
    "ls_in_dhcp_options",
    "ls_in_dns_lookup",
    "ls_in_qos_mark",
    "ls_in_qos_meter",
    "ls_out_qos_mark",
    "ls_out_qos_meter",
    "ls_in_lb",
];

/// What the flow of `stage` says is asked, if anything xgw lacks.
pub fn unsupported(stage: &str, hint: bool, priority: i64, matches: &str) -> Option<Unsupported> {
    let what = match stage {
        // Not the flows every switch has in these stages (priority 0, and
        // 65535 in the ACL ones), nor the DHCP/DNS replies' (34000).
        "ls_in_acl" | "ls_out_acl" | "ls_in_acl_after_lb" if hint && (1000..34000).contains(&priority) => "ACLs",
        "ls_in_dhcp_options" if hint && priority > 0 => "DHCP options",
        "ls_in_dns_lookup" if priority > 0 => "DNS records",
        "ls_in_qos_mark" | "ls_in_qos_meter" | "ls_out_qos_mark" | "ls_out_qos_meter" if hint => "QoS",
        "ls_in_lb" if hint => "load balancers",
        _ => return None,
    };
    Some(Unsupported { what, ports: port_names(matches) })
}

/// The ports `inport == "..."` / `outport == "..."` name in a match, or
/// `None` when it restricts no port by name (a port group `@pg`, a set,
/// or no port at all).
fn port_names(m: &str) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for key in ["inport == \"", "outport == \""] {
        let mut rest = m;
        while let Some(i) = rest.find(key) {
            rest = &rest[i + key.len()..];
            let end = rest.find('"')?;
            names.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    let other = ["inport == @", "outport == @", "inport == {", "outport == {", "inport != ", "outport != "];
    if names.is_empty() || other.iter().any(|o| m.contains(o)) {
        return None;
    }
    Some(names)
}

/// This chassis' own Chassis_Private row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChassisPrivate {
    pub chassis: Option<Uuid>,
    pub nb_cfg: i64,
}

/// What xgw reads of the Southbound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sb {
    pub global: SbGlobal,
    pub chassis: BTreeMap<Uuid, Chassis>,
    pub encaps: BTreeMap<Uuid, Encap>,
    pub datapaths: BTreeMap<Uuid, Datapath>,
    pub ports: BTreeMap<Uuid, PortBinding>,
    pub groups: BTreeMap<Uuid, MulticastGroup>,
    pub ha_groups: BTreeMap<Uuid, HaChassisGroup>,
    pub ha_chassis: BTreeMap<Uuid, HaChassis>,
    pub private: Option<ChassisPrivate>,
    /// Datapath -> what its logical flows ask that xgw does not implement.
    pub unsupported: BTreeMap<Uuid, Vec<Unsupported>>,
    /// Rows left out, each as "Table uuid: column: why".
    pub problems: Vec<String>,
}

impl Sb {
    pub fn chassis_by_name(&self, name: &str) -> Option<(&Uuid, &Chassis)> {
        self.chassis.iter().find(|(_, c)| c.name == name)
    }
}
