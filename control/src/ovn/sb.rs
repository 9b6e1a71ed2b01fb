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
    /// Rows left out, each as "Table uuid: column: why".
    pub problems: Vec<String>,
}

impl Sb {
    pub fn chassis_by_name(&self, name: &str) -> Option<(&Uuid, &Chassis)> {
        self.chassis.iter().find(|(_, c)| c.name == name)
    }
}
