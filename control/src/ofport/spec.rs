//! What a port is: the desired description of a local port or a tunnel,
//! and the checks it must pass before it may cost a port number.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use xgw_common::maps as wire;

pub use crate::types::{AllowedAddress, BfdOverride, IfName, InvalidValue, MacAddr, Name, PortKey, UnicastIp, Vni};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PortSpec {
    Local(LocalPort),
    Tunnel(TunnelPort),
}

/// A port on this host: traffic decapsulated for `(vni, port_key)` is
/// redirected to `ifname`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalPort {
    pub name: Name,
    pub ifname: IfName,
    pub vni: Vni,
    pub port_key: PortKey,
    pub mac: MacAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<UnicastIp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ofport_request: Option<u16>,
    /// Port security: the VM may send only from `mac` (and `ip`, if set)
    /// and from `allowed`. Records stored before port security existed
    /// load with it on, as a port added now would be.
    #[serde(default = "port_security_default", skip_serializing_if = "is_true")]
    pub port_security: bool,
    /// More addresses the VM may send from (OVN's `port_security` elements).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<AllowedAddress>,
}

fn port_security_default() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl LocalPort {
    /// The port's port security as OVN's column would list it: its own
    /// MAC and IP first, then `allowed`; empty when it is off.
    pub fn port_security(&self) -> Vec<AllowedAddress> {
        if !self.port_security {
            return Vec::new();
        }
        let own = AllowedAddress { mac: self.mac, ips: self.ip.into_iter().collect() };
        std::iter::once(own).chain(self.allowed.iter().cloned()).collect()
    }

    /// LOCAL_PORTS' value for the port under number `ofport`.
    pub fn wire(&self, ofport: u16) -> wire::LocalPort {
        use xgw_common::maps::*;
        let elements = self.port_security();
        let mut sec = 0;
        if !elements.is_empty() {
            sec |= PORTSEC_ON;
        }
        let own_ips: Vec<&UnicastIp> = elements.iter().filter(|e| e.mac == self.mac).flat_map(|e| &e.ips).collect();
        if !own_ips.is_empty() {
            sec |= PORTSEC_RESTRICTED;
        }
        if self.port_security && self.ip.is_some() {
            sec |= PORTSEC_HAS_IP;
        }
        if own_ips.len() > usize::from(sec & PORTSEC_HAS_IP != 0) {
            sec |= PORTSEC_MORE_IPS;
        }
        if elements.iter().any(|e| e.mac != self.mac) {
            sec |= PORTSEC_OTHER_MACS;
        }
        wire::LocalPort {
            vni: self.vni.get(),
            ofport,
            port_key: self.port_key.get(),
            mac: self.mac.0,
            sec,
            _pad: 0,
            ip: self.ip.filter(|_| self.port_security).map_or([0; 16], |ip| ip16(ip.get())),
        }
    }

    /// PORT_SECURITY's value: every element as a MAC row and its IP rows.
    /// `validate` has checked that they fit.
    pub fn wire_security(&self) -> wire::PortSecurity {
        use xgw_common::maps::*;
        let mut rows = Vec::new();
        for e in self.port_security() {
            let kind = if e.ips.is_empty() { PS_ROW_MAC } else { PS_ROW_MAC_RESTRICTED };
            rows.push(PortSecurityRow { mac: e.mac.0, kind, _pad: 0, ip: [0; 16] });
            for ip in &e.ips {
                rows.push(PortSecurityRow { mac: e.mac.0, kind: PS_ROW_IP, _pad: 0, ip: ip16(ip.get()) });
            }
        }
        let mut out = PortSecurity { count: rows.len().min(PORT_SECURITY_ROWS) as u32, ..Default::default() };
        for (slot, row) in out.rows.iter_mut().zip(rows) {
            *slot = row;
        }
        out
    }

    /// Rows `wire_security` needs.
    fn security_rows(&self) -> usize {
        self.port_security().iter().map(|e| 1 + e.ips.len()).sum()
    }
}

/// The maps' 16-byte form of an address (IPv4 mapped).
pub fn ip16(ip: IpAddr) -> [u8; 16] {
    match ip.to_canonical() {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// A Geneve tunnel to another chassis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelPort {
    pub name: Name,
    pub remote: UnicastIp,
    /// A fixed key (OVS's `options:key=N`): the tunnel carries that VNI
    /// only. `None` is flow-keyed (`options:key=flow`, what OVN builds):
    /// one tunnel per remote chassis, the VNI taken from each packet, and
    /// from the local port on encap. Records stored before flow-keyed
    /// tunnels existed all have a VNI, so they load unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<Vni>,
    /// Not in any map: turning it on or off starts or stops the session,
    /// never touches the tunnel's entries.
    pub bfd: bool,
    pub ovn_metadata: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ofport_request: Option<u16>,
    /// The tunnel's own BFD timers, where they differ from the daemon's
    /// `[bfd]`. Not in any map: changing them changes the record and the
    /// BFD session, never the tunnel's entries.
    #[serde(default, skip_serializing_if = "BfdOverride::is_empty")]
    pub bfd_timers: BfdOverride,
}

/// A remote logical port: its MAC (and IP) in a VNI, reached through a
/// tunnel, and the key the remote chassis knows it by (the egress key of
/// OVN's Geneve option). It has no number of its own: its FDB entry names
/// its tunnel's. One definition for the API's JSON, `xgw binding add` and
/// the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// The logical switch's VNI (0..=16777215).
    #[arg(long)]
    pub vni: Vni,
    /// The remote port's MAC.
    #[arg(long)]
    pub mac: MacAddr,
    /// The remote port's IP, answered by the ARP/ND responder.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<UnicastIp>,
    /// Name of the tunnel the MAC is reached through.
    #[arg(long)]
    pub tunnel: Name,
    /// The remote logical port's key (the OVN egress key, 1..=32767).
    #[arg(long)]
    pub port_key: PortKey,
}

impl Binding {
    /// What identifies a binding: one MAC per VNI.
    pub fn key(&self) -> (Vni, MacAddr) {
        (self.vni, self.mac)
    }

    /// How errors and logs name it.
    pub fn label(&self) -> String {
        format!("binding vni {} mac {}", self.vni, self.mac)
    }

    /// What it holds exclusively, in the same space as local ports' claims:
    /// a MAC or IP cannot be both here and behind a tunnel.
    pub fn claims(&self) -> Vec<Claim> {
        let vni = self.vni.get();
        let mut claims = vec![Claim::Mac { vni, mac: self.mac }];
        if let Some(ip) = self.ip {
            claims.push(Claim::Ip { vni, ip: ip.get() });
        }
        claims
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        self.mac.unicast().map(drop).map_err(|cause| SpecError { field: "mac", cause })
    }
}

/// A multicast group (OVN's `Multicast_Group`): a key at or above 32768
/// within a VNI naming a set of local ports and tunnels (remote chassis).
/// Key 32768 (`_MC_flood`) takes the VNI's broadcast and multicast, 32769
/// (`_MC_unknown`) its unknown unicast; any key arrives from tunnels as
/// OVN's egress key. One definition for the API's JSON, `xgw group add`
/// and the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// The logical switch's VNI (0..=16777215).
    #[arg(long)]
    pub vni: Vni,
    /// The group's key (OVN's `Multicast_Group.tunnel_key`, 32768..=65535).
    #[arg(long)]
    pub key: u16,
    /// A local port in the group (repeat for more); it must be in the VNI.
    #[arg(long = "port")]
    #[serde(default)]
    pub ports: Vec<Name>,
    /// A tunnel the group floods to, one per remote chassis (repeat for
    /// more): flow-keyed or fixed to the VNI, IPv4, with OVN metadata.
    #[arg(long = "tunnel")]
    #[serde(default)]
    pub tunnels: Vec<Name>,
    /// Storm control: flooded frames per second each ingress port may send
    /// into the group (counted per CPU); 0 for no limit.
    #[arg(long, default_value_t = DEFAULT_GROUP_RATE)]
    #[serde(default = "default_group_rate")]
    pub rate_pps: u32,
}

pub const DEFAULT_GROUP_RATE: u32 = 1000;

fn default_group_rate() -> u32 {
    DEFAULT_GROUP_RATE
}

impl Group {
    pub fn key(&self) -> (Vni, u16) {
        (self.vni, self.key)
    }

    pub fn label(&self) -> String {
        format!("group vni {} key {}", self.vni, self.key)
    }

    /// What the field types do not already guarantee; members against the
    /// committed ports are the port map's to check.
    pub fn validate(&self) -> Result<(), SpecError> {
        use xgw_common::maps::{GROUP_KEY_MIN, MAX_GROUP_MEMBERS};
        if self.key < GROUP_KEY_MIN {
            let cause = InvalidValue(format!("{} is not a group key ({GROUP_KEY_MIN}..=65535)", self.key));
            return Err(SpecError { field: "key", cause });
        }
        let count = self.ports.len() + self.tunnels.len();
        if count > MAX_GROUP_MEMBERS {
            let cause = InvalidValue(format!("{count} members, at most {MAX_GROUP_MEMBERS}"));
            return Err(SpecError { field: "ports", cause });
        }
        let mut seen = std::collections::BTreeSet::new();
        for (field, name) in self.ports.iter().map(|n| ("ports", n)).chain(self.tunnels.iter().map(|n| ("tunnels", n)))
        {
            if !seen.insert(name) {
                let cause = InvalidValue(format!("{:?} is named twice", name.as_str()));
                return Err(SpecError { field, cause });
            }
        }
        Ok(())
    }
}

/// What one transaction writes the entries of: a port (under its own
/// number) or a remote binding (under its tunnel's).
#[derive(Debug, Clone, Copy)]
pub enum Object<'a> {
    Port(&'a PortSpec),
    Binding(&'a Binding),
}

impl Object<'_> {
    /// A port's name, or a binding's label: what errors and faults name.
    pub fn name(&self) -> String {
        match self {
            Object::Port(p) => p.name().to_owned(),
            Object::Binding(b) => b.label(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortKind {
    Local,
    Tunnel,
}

impl PortKind {
    /// As errors name it: `port` (a local port) or `tunnel`.
    pub fn name(self) -> &'static str {
        match self {
            PortKind::Local => "port",
            PortKind::Tunnel => "tunnel",
        }
    }
}

impl std::fmt::Display for PortKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the datapath looks a tunnel up by: its remote and its key (a
/// fixed VNI, or `None` for flow-keyed). Two tunnels with one key are the
/// 2018 "redundant chassis": the second can never carry traffic. OVS
/// refuses them alike ("attempting to add tunnel port with same config");
/// one remote with two different fixed VNIs, or a fixed and a flow key, is
/// two tunnels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TunnelKey {
    pub remote: IpAddr,
    pub vni: Option<u32>,
}

impl TunnelKey {
    /// `TUNNEL_BY_REMOTE`'s spelling of the key.
    pub fn wire_vni(&self) -> u32 {
        self.vni.unwrap_or(xgw_common::maps::TUNNEL_KEY_FLOW)
    }

    pub fn from_wire(remote: IpAddr, vni: u32) -> Self {
        TunnelKey { remote, vni: (vni != xgw_common::maps::TUNNEL_KEY_FLOW).then_some(vni) }
    }
}

impl fmt::Display for TunnelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.vni {
            Some(vni) => write!(f, "remote {} VNI {vni}", self.remote),
            None => write!(f, "remote {} key=flow", self.remote),
        }
    }
}

/// Something only one port may hold: a second holder would make one of
/// the datapath's lookups ambiguous, and its map insert would fail anyway.
/// Checked before a number is reserved, so a clash costs nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Claim {
    /// (remote, VNI): two tunnels with one key are the 2018 redundant chassis.
    Tunnel(TunnelKey),
    /// LOCAL_PORTS is keyed by the interface.
    Ifname(String),
    PortKey {
        vni: u32,
        port_key: u16,
    },
    Mac {
        vni: u32,
        mac: MacAddr,
    },
    Ip {
        vni: u32,
        ip: IpAddr,
    },
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Claim::Tunnel(k) => k.fmt(f),
            Claim::Ifname(i) => write!(f, "ifname {i:?}"),
            Claim::PortKey { vni, port_key } => write!(f, "port_key {port_key} in VNI {vni}"),
            Claim::Mac { vni, mac } => write!(f, "mac {mac} in VNI {vni}"),
            Claim::Ip { vni, ip } => write!(f, "ip {ip} in VNI {vni}"),
        }
    }
}

/// A field whose value the types allow but a port may not have.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {cause}")]
pub struct SpecError {
    pub field: &'static str,
    pub cause: InvalidValue,
}

impl PortSpec {
    pub fn name(&self) -> &str {
        match self {
            PortSpec::Local(p) => &p.name,
            PortSpec::Tunnel(t) => &t.name,
        }
    }

    pub fn kind(&self) -> PortKind {
        match self {
            PortSpec::Local(_) => PortKind::Local,
            PortSpec::Tunnel(_) => PortKind::Tunnel,
        }
    }

    pub fn ofport_request(&self) -> Option<u16> {
        match self {
            PortSpec::Local(p) => p.ofport_request,
            PortSpec::Tunnel(t) => t.ofport_request,
        }
    }

    /// `UnicastIp` is canonical (IPv4-mapped remotes are IPv4), so
    /// `::ffff:a.b.c.d` and `a.b.c.d` are one chassis.
    pub fn tunnel_key(&self) -> Option<TunnelKey> {
        match self {
            PortSpec::Local(_) => None,
            PortSpec::Tunnel(t) => Some(TunnelKey { remote: t.remote.get(), vni: t.vni.map(Vni::get) }),
        }
    }

    /// What this port holds exclusively.
    pub fn claims(&self) -> Vec<Claim> {
        match self {
            PortSpec::Local(p) => {
                let vni = p.vni.get();
                let mut claims = vec![
                    Claim::Ifname(p.ifname.to_string()),
                    Claim::PortKey { vni, port_key: p.port_key.get() },
                    Claim::Mac { vni, mac: p.mac },
                ];
                if let Some(ip) = p.ip {
                    claims.push(Claim::Ip { vni, ip: ip.get() });
                }
                claims
            }
            PortSpec::Tunnel(_) => self.tunnel_key().map(Claim::Tunnel).into_iter().collect(),
        }
    }

    /// The copy of this port's record that `PORT_RECORDS` keeps (the
    /// store's JSON of the spec; the key is the number).
    pub fn record_copy(&self) -> Result<wire::PortRecordCopy, String> {
        let json = serde_json::to_vec(self).map_err(|e| e.to_string())?;
        if json.len() > wire::PORT_RECORD_BYTES {
            return Err(format!(
                "its record is {} bytes, the datapath keeps at most {}",
                json.len(),
                wire::PORT_RECORD_BYTES
            ));
        }
        let mut copy = wire::PortRecordCopy { len: json.len() as u32, json: [0; wire::PORT_RECORD_BYTES] };
        copy.json[..json.len()].copy_from_slice(&json);
        Ok(copy)
    }

    /// The port a `PORT_RECORDS` value describes, checked as the store
    /// checks its records.
    pub fn from_record_copy(copy: &wire::PortRecordCopy) -> Result<PortSpec, String> {
        let json = copy.json.get(..copy.len as usize).ok_or_else(|| format!("length {} is out of range", copy.len))?;
        let spec: PortSpec = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        spec.validate().map_err(|e| e.to_string())?;
        Ok(spec)
    }

    /// Whether `self` and `other` need the same forwarding entries: they
    /// differ, if at all, only in what no forwarding map holds (a tunnel's
    /// BFD: on or off, its timers), so one can replace the other by
    /// rewriting its record (and the record's copy) alone.
    pub fn same_entries(&self, other: &PortSpec) -> bool {
        match (self, other) {
            (PortSpec::Tunnel(a), PortSpec::Tunnel(b)) => {
                let entries =
                    |t: &TunnelPort| TunnelPort { bfd: false, bfd_timers: BfdOverride::default(), ..t.clone() };
                entries(a) == entries(b)
            }
            _ => self == other,
        }
    }

    /// What the field types do not already guarantee. `ofport_request` is
    /// left to the allocator, which owns the number space and reports it
    /// as `RequestedOutOfRange`.
    pub fn validate(&self) -> Result<(), SpecError> {
        match self {
            PortSpec::Local(p) => {
                p.mac.unicast().map_err(|cause| SpecError { field: "mac", cause })?;
                if !p.port_security && !p.allowed.is_empty() {
                    let cause = InvalidValue("more allowed addresses need port security on".into());
                    return Err(SpecError { field: "allow", cause });
                }
                let rows = p.security_rows();
                if rows > xgw_common::maps::PORT_SECURITY_ROWS {
                    let cause = InvalidValue(format!(
                        "{rows} MACs and addresses with the port's own, at most {}",
                        xgw_common::maps::PORT_SECURITY_ROWS
                    ));
                    return Err(SpecError { field: "allow", cause });
                }
                Ok(())
            }
            PortSpec::Tunnel(t) => UnicastIp::tunnel_remote(t.remote.get())
                .map(drop)
                .map_err(|cause| SpecError { field: "remote_ip", cause }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> LocalPort {
        LocalPort {
            name: Name::new("vm1").unwrap(),
            ifname: IfName::new("veth1").unwrap(),
            vni: Vni::new(5).unwrap(),
            port_key: PortKey::new(3).unwrap(),
            mac: MacAddr([0x02, 0, 0, 0, 0, 1]),
            ip: None,
            ofport_request: None,
            port_security: true,
            allowed: Vec::new(),
        }
    }

    fn tunnel() -> TunnelPort {
        TunnelPort {
            name: Name::new("ovn-aded97-0").unwrap(),
            remote: "198.51.100.7".parse().expect("ip"),
            vni: Some(Vni::new(5).unwrap()),
            bfd: true,
            ovn_metadata: true,
            ofport_request: None,
            bfd_timers: BfdOverride::default(),
        }
    }

    /// `PORT_RECORD_BYTES` holds the longest record a port can have.
    #[test]
    fn the_longest_record_fits_the_datapaths_copy() {
        // Every character of a name may need escaping in JSON.
        let name = Name::new("\\".repeat(64)).unwrap();
        let v6 = |i: u16| format!("2001:db8:ffff:ffff:ffff:ffff:ffff:{i:04x}").parse().unwrap();
        let mut p = local();
        p.name = name.clone();
        p.ifname = IfName::new("abcdefghijklmno").unwrap();
        p.ip = Some(v6(0));
        p.ofport_request = Some(65279);
        p.vni = Vni::new(Vni::MAX).unwrap();
        // The port's own MAC and IP take two of the 16 rows.
        p.allowed =
            vec![AllowedAddress { mac: MacAddr([2, 0xff, 0xff, 0xff, 0xff, 0xff]), ips: (1..=13).map(v6).collect() }];
        assert_eq!(p.security_rows(), xgw_common::maps::PORT_SECURITY_ROWS);
        let spec = PortSpec::Local(p);
        let copy = spec.record_copy().expect("fits");
        assert_eq!(PortSpec::from_record_copy(&copy).unwrap(), spec);
        let mut t = tunnel();
        t.name = name;
        t.remote = v6(1);
        t.ofport_request = Some(65279);
        t.bfd_timers = BfdOverride {
            min_tx_ms: Some(crate::types::BFD_MS_MAX),
            min_rx_ms: Some(crate::types::BFD_MS_MAX),
            detect_mult: Some(255),
        };
        let spec = PortSpec::Tunnel(t);
        assert_eq!(PortSpec::from_record_copy(&spec.record_copy().expect("fits")).unwrap(), spec);
        // And a copy that says more than it holds is an error, not a panic.
        let mut bad = spec.record_copy().unwrap();
        bad.len = u32::MAX;
        assert!(PortSpec::from_record_copy(&bad).unwrap_err().contains("out of range"));
    }

    #[test]
    fn errors_name_field_and_value() {
        let mut p = local();
        p.mac = MacAddr([0x01, 0, 0x5e, 0, 0, 1]);
        let e = PortSpec::Local(p).validate().expect_err("mac");
        assert_eq!(e.to_string(), "mac: 01:00:5e:00:00:01 is not a unicast address");

        for remote in ["127.0.0.1", "::ffff:127.0.0.1", "fe80::1"] {
            let mut t = tunnel();
            t.remote = UnicastIp::new(remote.parse().unwrap()).unwrap();
            let e = PortSpec::Tunnel(t).validate().expect_err("remote");
            assert!(e.to_string().starts_with("remote_ip: "), "{e}");
        }

        assert_eq!(PortSpec::Local(local()).validate(), Ok(()));
        assert_eq!(PortSpec::Tunnel(tunnel()).validate(), Ok(()));
    }

    #[test]
    fn a_stored_record_with_a_bad_field_does_not_load() {
        let json = serde_json::to_string(&PortSpec::Local(local())).expect("serialize");
        let bad = json.replace("\"vni\":5", "\"vni\":16777216");
        assert!(serde_json::from_str::<PortSpec>(&bad).is_err(), "{bad}");
    }

    #[test]
    fn json_round_trip() {
        for spec in [PortSpec::Local(local()), PortSpec::Tunnel(tunnel())] {
            let json = serde_json::to_string(&spec).expect("serialize");
            let back: PortSpec = serde_json::from_str(&json).expect("parse");
            assert_eq!(back, spec);
        }
        let json = serde_json::to_string(&PortSpec::Local(local())).expect("serialize");
        assert!(json.contains(r#""mac":"02:00:00:00:00:01""#), "{json}");
        assert!(json.contains(r#""vni":5,"#), "{json}");
    }
}
