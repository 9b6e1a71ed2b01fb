//! The chassis' session with OVN's Southbound: a tokio task that keeps the
//! OVSDB client (`xgw_ovsdb`), registers this chassis (Chassis, Encap,
//! Chassis_Private) and keeps it registered, hands each new view of the
//! Southbound to the state's owner (`Msg::Ovn`, answered by
//! `Daemon::apply_ovn`), and writes back what that did: the ports claimed
//! or released (`Port_Binding.chassis`, `encap`, `up`) and the `nb_cfg`
//! applied (`Chassis_Private.nb_cfg`, so `ovn-nbctl --wait=hv` covers xgw).
//!
//! The datapath never waits on it: with the Southbound unreachable, or
//! every raft member out of the cluster, xgw keeps forwarding what it has,
//! as ovn-controller does, and picks up where it left off (the client
//! resumes from the last transaction id).
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use xgw_ovsdb::{ops, Atom, Client, Datum, Event, MonitorSpec, Remotes, Replica, Row, TableMonitor};

use super::ovn::Outcome;
use super::Msg;
use crate::ovn::sb::{self, Sb};

pub const DATABASE: &str = "OVN_Southbound";

/// Who this chassis is in the Southbound.
#[derive(Debug, Clone)]
pub struct Identity {
    pub remotes: Remotes,
    pub chassis: String,
    pub hostname: String,
    /// The tunnel endpoint addresses: one Encap each.
    pub encap_ips: Vec<IpAddr>,
    pub encap_csum: bool,
    pub transport_zones: BTreeSet<String>,
}

/// What `show` says of the session.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Status {
    #[serde(flatten)]
    pub session: crate::api::SbSession,
    pub outcome: Option<Outcome>,
}

/// Everything xgw reads; the rows of other chassis' Chassis_Private are
/// not needed, so only its own.
fn monitor(chassis: &str) -> MonitorSpec {
    let all = TableMonitor::all;
    MonitorSpec::new()
        .table("SB_Global", all().columns(&["nb_cfg", "options"]))
        .table("Chassis", all().columns(&["name", "hostname", "encaps", "other_config", "transport_zones"]))
        .table("Chassis_Private", all().conditions(vec![ops::cond("name", "==", json!(chassis))]))
        .table("Encap", all().columns(&["type", "ip", "options", "chassis_name"]))
        .table("Datapath_Binding", all().columns(&["tunnel_key", "load_balancers", "external_ids"]))
        .table(
            "Port_Binding",
            all().columns(&[
                "logical_port",
                "type",
                "datapath",
                "tunnel_key",
                "mac",
                "port_security",
                "chassis",
                "encap",
                "requested_chassis",
                "up",
                "options",
            ]),
        )
        .table("Multicast_Group", all().columns(&["datapath", "name", "tunnel_key", "ports"]))
        .table("HA_Chassis_Group", all().columns(&["name", "ha_chassis", "ref_chassis"]))
        .table("HA_Chassis", all().columns(&["chassis", "priority"]))
        // Only the flows that say a switch has what xgw does not implement.
        .table(
            "Logical_Flow",
            all().columns(&["logical_datapath", "logical_dp_group", "priority", "match", "external_ids"]).conditions(
                sb::UNSUPPORTED_STAGES
                    .iter()
                    .map(|s| ops::cond("external_ids", "includes", json!(["map", [["stage-name", s]]])))
                    .collect(),
            ),
        )
        .table("Logical_DP_Group", all())
}

// --- Reading rows -----------------------------------------------------------

fn col<'r>(row: &'r Row, name: &str) -> Result<&'r Datum, String> {
    row.get(name).ok_or_else(|| format!("{name}: missing"))
}

fn string(row: &Row, name: &str) -> Result<String, String> {
    col(row, name)?.as_str().map(str::to_owned).ok_or_else(|| format!("{name}: not a string"))
}

fn integer(row: &Row, name: &str) -> Result<i64, String> {
    col(row, name)?.as_integer().ok_or_else(|| format!("{name}: not an integer"))
}

fn strings(row: &Row, name: &str) -> Result<Vec<String>, String> {
    let set = col(row, name)?.as_set().ok_or_else(|| format!("{name}: not a set"))?;
    set.iter().map(|a| a.as_str().map(str::to_owned).ok_or_else(|| format!("{name}: not strings"))).collect()
}

fn uuids(row: &Row, name: &str) -> Result<Vec<String>, String> {
    let set = col(row, name)?.as_set().ok_or_else(|| format!("{name}: not a set"))?;
    set.iter().map(|a| a.as_uuid().map(|u| u.to_string()).ok_or_else(|| format!("{name}: not UUIDs"))).collect()
}

fn optional_uuid(row: &Row, name: &str) -> Result<Option<String>, String> {
    Ok(uuids(row, name)?.into_iter().next())
}

fn string_map(row: &Row, name: &str) -> Result<BTreeMap<String, String>, String> {
    let map = col(row, name)?.as_map().ok_or_else(|| format!("{name}: not a map"))?;
    map.iter()
        .map(|(k, v)| match (k.as_str(), v.as_str()) {
            (Some(k), Some(v)) => Ok((k.to_owned(), v.to_owned())),
            _ => Err(format!("{name}: not a map of strings")),
        })
        .collect()
}

/// The typed view of the replica, for chassis `me`. A row that does not
/// read is left out and named in `Sb::problems`.
pub fn view(replica: &Replica, me: &str) -> Sb {
    let mut sb = Sb::default();
    let mut problems = Vec::new();
    fn each<T>(
        replica: &Replica,
        table: &str,
        problems: &mut Vec<String>,
        read: impl Fn(&Row) -> Result<T, String>,
    ) -> BTreeMap<sb::Uuid, T> {
        let mut out = BTreeMap::new();
        for (uuid, row) in replica.rows(table) {
            match read(row) {
                Ok(v) => {
                    out.insert(uuid.to_string(), v);
                }
                Err(why) => problems.push(format!("{table} {uuid}: {why}")),
            }
        }
        out
    }
    let globals = each(replica, "SB_Global", &mut problems, |r| {
        Ok(sb::SbGlobal { nb_cfg: integer(r, "nb_cfg")?, options: string_map(r, "options")? })
    });
    sb.global = globals.into_values().next().unwrap_or_default();
    sb.chassis = each(replica, "Chassis", &mut problems, |r| {
        Ok(sb::Chassis {
            name: string(r, "name")?,
            hostname: string(r, "hostname")?,
            encaps: uuids(r, "encaps")?,
            other_config: string_map(r, "other_config")?,
            transport_zones: strings(r, "transport_zones")?.into_iter().collect(),
        })
    });
    sb.encaps = each(replica, "Encap", &mut problems, |r| {
        Ok(sb::Encap {
            kind: string(r, "type")?,
            ip: string(r, "ip")?,
            options: string_map(r, "options")?,
            chassis_name: string(r, "chassis_name")?,
        })
    });
    sb.datapaths = each(replica, "Datapath_Binding", &mut problems, |r| {
        let key = integer(r, "tunnel_key")?;
        Ok(sb::Datapath {
            tunnel_key: u32::try_from(key).map_err(|_| format!("tunnel_key: {key} is out of range"))?,
            load_balancers: uuids(r, "load_balancers")?.len(),
            external_ids: string_map(r, "external_ids")?,
        })
    });
    sb.ports = each(replica, "Port_Binding", &mut problems, |r| {
        let key = integer(r, "tunnel_key")?;
        Ok(sb::PortBinding {
            logical_port: string(r, "logical_port")?,
            kind: string(r, "type")?,
            datapath: optional_uuid(r, "datapath")?.ok_or("datapath: missing")?,
            tunnel_key: u16::try_from(key).map_err(|_| format!("tunnel_key: {key} is out of range"))?,
            mac: strings(r, "mac")?,
            port_security: strings(r, "port_security")?,
            chassis: optional_uuid(r, "chassis")?,
            encap: optional_uuid(r, "encap")?,
            requested_chassis: optional_uuid(r, "requested_chassis")?,
            up: col(r, "up")?.as_set().and_then(|s| s.iter().next()).and_then(Atom::as_bool),
            options: string_map(r, "options")?,
        })
    });
    sb.groups = each(replica, "Multicast_Group", &mut problems, |r| {
        let key = integer(r, "tunnel_key")?;
        Ok(sb::MulticastGroup {
            datapath: optional_uuid(r, "datapath")?.ok_or("datapath: missing")?,
            name: string(r, "name")?,
            tunnel_key: u16::try_from(key).map_err(|_| format!("tunnel_key: {key} is out of range"))?,
            ports: uuids(r, "ports")?,
        })
    });
    sb.ha_groups = each(replica, "HA_Chassis_Group", &mut problems, |r| {
        Ok(sb::HaChassisGroup {
            name: string(r, "name")?,
            ha_chassis: uuids(r, "ha_chassis")?,
            ref_chassis: uuids(r, "ref_chassis")?,
        })
    });
    sb.ha_chassis = each(replica, "HA_Chassis", &mut problems, |r| {
        Ok(sb::HaChassis { chassis: optional_uuid(r, "chassis")?, priority: integer(r, "priority")? })
    });
    let private = each(replica, "Chassis_Private", &mut problems, |r| {
        Ok((
            string(r, "name")?,
            sb::ChassisPrivate { chassis: optional_uuid(r, "chassis")?, nb_cfg: integer(r, "nb_cfg")? },
        ))
    });
    sb.private = private.into_values().find(|(name, _)| name == me).map(|(_, p)| p);
    let groups = each(replica, "Logical_DP_Group", &mut problems, |r| uuids(r, "datapaths"));
    let flows = each(replica, "Logical_Flow", &mut problems, |r| {
        let ids = string_map(r, "external_ids")?;
        let stage = ids.get("stage-name").cloned().unwrap_or_default();
        let found =
            sb::unsupported(&stage, ids.contains_key("stage-hint"), integer(r, "priority")?, &string(r, "match")?);
        let datapaths = match (optional_uuid(r, "logical_datapath")?, optional_uuid(r, "logical_dp_group")?) {
            (Some(d), _) => vec![d],
            (None, Some(g)) => groups.get(&g).cloned().unwrap_or_default(),
            (None, None) => Vec::new(),
        };
        Ok((datapaths, found))
    });
    for (datapaths, found) in flows.into_values() {
        let Some(found) = found else { continue };
        for d in datapaths {
            let list = sb.unsupported.entry(d).or_default();
            if !list.contains(&found) {
                list.push(found.clone());
            }
        }
    }
    sb.problems = problems;
    sb
}

// --- Writing rows -----------------------------------------------------------

fn uuid_json(u: &str) -> Value {
    json!(["uuid", u])
}

fn by_uuid(u: &str) -> Vec<Value> {
    vec![ops::cond("_uuid", "==", uuid_json(u))]
}

fn string_map_json(m: &BTreeMap<String, String>) -> Value {
    ops::map(m.iter().map(|(k, v)| (json!(k), json!(v))))
}

/// The Chassis row's `other_config` as xgw means it: northd waits for
/// `Port_Binding.up` (port-up-notif), and xgw is no interconnection gateway.
fn other_config() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("datapath-type".to_owned(), "xgw".to_owned()),
        ("iface-types".to_owned(), "geneve".to_owned()),
        ("is-interconn".to_owned(), "false".to_owned()),
        ("port-up-notif".to_owned(), "true".to_owned()),
    ])
}

/// The transaction that makes the Southbound hold this chassis as
/// `id` says, or `None` when it already does.
fn registration(sb: &Sb, id: &Identity) -> Option<Vec<Value>> {
    let csum = if id.encap_csum { "true" } else { "false" };
    let want_encaps: BTreeSet<(String, String)> =
        id.encap_ips.iter().map(|ip| (ip.to_string(), csum.to_owned())).collect();
    let mine = sb.chassis_by_name(&id.chassis);
    let encaps_ok = mine.is_some_and(|(_, c)| {
        let have: BTreeSet<(String, String)> = c
            .encaps
            .iter()
            .filter_map(|e| sb.encaps.get(e))
            .filter(|e| e.kind == "geneve" && e.chassis_name == id.chassis)
            .map(|e| (e.ip.clone(), e.options.get("csum").cloned().unwrap_or_default()))
            .collect();
        have == want_encaps && have.len() == c.encaps.len()
    });
    let row_ok = mine.is_some_and(|(_, c)| {
        c.hostname == id.hostname && c.other_config == other_config() && c.transport_zones == id.transport_zones
    });
    let private = &sb.private;
    let private_ok =
        private.as_ref().is_some_and(|p| mine.is_some_and(|(u, _)| p.chassis.as_deref() == Some(u.as_str())));
    if encaps_ok && row_ok && private_ok {
        return None;
    }
    let mut txn = vec![ops::comment(&format!("xgw: registering chassis {}", id.chassis))];
    let mut row = json!({
        "name": id.chassis,
        "hostname": id.hostname,
        "other_config": string_map_json(&other_config()),
        "transport_zones": ops::set(id.transport_zones.iter().map(|z| json!(z))),
    });
    if !encaps_ok {
        // Encap is not a root table: the old rows go with the reference.
        for (i, (ip, csum)) in want_encaps.iter().enumerate() {
            let encap =
                json!({"type": "geneve", "ip": ip, "options": ["map", [["csum", csum]]], "chassis_name": id.chassis});
            txn.push(ops::insert_named("Encap", encap, &format!("encap{i}")));
        }
        row["encaps"] = ops::set((0..want_encaps.len()).map(|i| ops::named_uuid(&format!("encap{i}"))));
    }
    let chassis_ref = match mine {
        Some((u, _)) => {
            txn.push(ops::update("Chassis", by_uuid(u), row));
            uuid_json(u)
        }
        None => {
            txn.push(ops::insert_named("Chassis", row, "chassis"));
            ops::named_uuid("chassis")
        }
    };
    match private {
        Some(_) => txn.push(ops::update(
            "Chassis_Private",
            vec![ops::cond("name", "==", json!(id.chassis))],
            json!({"chassis": chassis_ref}),
        )),
        None => txn.push(ops::insert("Chassis_Private", json!({"name": id.chassis, "chassis": chassis_ref}))),
    }
    Some(txn)
}

/// The writes `outcome` asks for: claims (chassis, encap, up), releases,
/// and the `nb_cfg` acknowledgement.
fn writes(sb: &Sb, id: &Identity, outcome: &Outcome) -> Vec<Value> {
    let Some((me, c)) = sb.chassis_by_name(&id.chassis) else { return Vec::new() };
    // The Encap peers use for this chassis' ports: its first, IPv4 first.
    let mut encaps: Vec<(&String, &sb::Encap)> = c.encaps.iter().filter_map(|u| Some((u, sb.encaps.get(u)?))).collect();
    encaps.sort_by_key(|(_, e)| (e.ip.contains(':'), e.ip.clone()));
    let encap = encaps.first().map(|(u, _)| uuid_json(u));
    let mut txn = Vec::new();
    for (claim, up) in &outcome.claims {
        let row = sb.ports.get(&claim.port_binding);
        let held = claim.held && row.is_some_and(|r| r.encap.is_some());
        if !held {
            let mut set = json!({"chassis": uuid_json(me), "up": *up});
            if let Some(e) = &encap {
                set["encap"] = e.clone();
            }
            txn.push(ops::update("Port_Binding", by_uuid(&claim.port_binding), set));
        } else if row.and_then(|r| r.up) != Some(*up) {
            txn.push(ops::update("Port_Binding", by_uuid(&claim.port_binding), json!({"up": *up})));
        }
    }
    for r in &outcome.releases {
        let mut cond = by_uuid(r);
        // Only if it is still ours: another chassis may have claimed it.
        cond.push(ops::cond("chassis", "==", uuid_json(me)));
        txn.push(ops::update("Port_Binding", cond, json!({"chassis": ["set", []], "encap": ["set", []], "up": false})));
    }
    if sb.private.as_ref().is_some_and(|p| p.nb_cfg != outcome.nb_cfg) {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        txn.push(ops::update(
            "Chassis_Private",
            vec![ops::cond("name", "==", json!(id.chassis))],
            json!({"nb_cfg": outcome.nb_cfg, "nb_cfg_timestamp": now}),
        ));
    }
    if !txn.is_empty() {
        txn.insert(0, ops::comment(&format!("xgw: chassis {}", id.chassis)));
    }
    txn
}

/// A `constraint violation` on Encap: another chassis holds this IP (the
/// 2018 incident's redundant chassis, which the Southbound now refuses).
fn taken_ip(e: &xgw_ovsdb::Error) -> bool {
    matches!(e, xgw_ovsdb::Error::Transaction { error, .. } if error.kind == xgw_ovsdb::ErrorKind::ConstraintViolation)
}

/// The session: until `stop` says so. A condition that only the operator
/// can fix (the encap IP taken) is sent to `fatal` and ends it.
pub(super) async fn run(
    id: Identity,
    tx: mpsc::Sender<Msg>,
    fatal: mpsc::UnboundedSender<anyhow::Error>,
    status: watch::Sender<Status>,
    mut stop: watch::Receiver<bool>,
) {
    let mut config = xgw_ovsdb::Config::new(id.remotes.clone(), DATABASE, monitor(&id.chassis));
    config.connect_timeout = Duration::from_secs(3600);
    let (client, mut events) = Client::start(config);
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    let mut dirty = true;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                log_event(&ev);
                dirty = true;
                // One pass for whatever arrived together.
                while let Ok(ev) = events.try_recv() {
                    log_event(&ev);
                }
            }
            _ = retry.tick() => {}
        }
        let state = client.state();
        let stats = client.stats();
        status.send_modify(|s| {
            s.session.remote = state.remote.as_ref().map(|r| r.to_string());
            s.session.connected = state.monitoring;
            s.session.method = state.method.map(|m| m.name().to_owned());
            s.session.last_txn_id = (!state.last_txn_id.is_zero()).then(|| state.last_txn_id.to_string());
            s.session.last_error = state.last_error.clone();
            s.session.resumes = stats.resumes;
            s.session.full_resyncs = stats.full_resyncs;
        });
        if !dirty || !state.monitoring {
            continue;
        }
        match pass(&client, &id, &tx).await {
            Ok(outcome) => {
                dirty = false;
                status.send_modify(|s| {
                    s.session.registered = true;
                    s.session.nb_cfg = outcome.nb_cfg;
                    s.outcome = Some(outcome);
                });
            }
            Err(e) if e.downcast_ref::<xgw_ovsdb::Error>().is_some_and(taken_ip) => {
                let _ = fatal.send(anyhow!(
                    "ovn: chassis {}: the Southbound refuses its encap ({}): another chassis already registered \
                     that IP (a redundant chassis, as in the 2018 incident); fix the other chassis or --local-ip",
                    id.chassis,
                    e
                ));
                return;
            }
            Err(e) => {
                tracing::warn!("ovn: {e:#}; retrying");
                status.send_modify(|s| s.session.last_error = Some(format!("{e:#}")));
            }
        }
    }
}

/// One view of the Southbound through: registered, applied, written back.
async fn pass(client: &Client, id: &Identity, tx: &mpsc::Sender<Msg>) -> Result<Outcome> {
    let mut sb = client.read(|r| view(r, &id.chassis));
    if let Some(txn) = registration(&sb, id) {
        client.transact(txn).await?;
        tracing::info!(chassis = id.chassis, "ovn: registered in the Southbound");
        // The replica holds the transaction's rows when it returns. Rows
        // that still differ are reported, not rewritten in a loop (at most
        // one try per retry tick): a registration that never takes must
        // not become the churn it is meant to survive.
        sb = client.read(|r| view(r, &id.chassis));
        if registration(&sb, id).is_some() {
            bail!("chassis {}: the Southbound does not hold the registration as written", id.chassis);
        }
    }
    let (reply, outcome) = oneshot::channel();
    tx.send(Msg::Ovn(Box::new(sb.clone()), reply)).await.map_err(|_| anyhow!("the daemon is stopping"))?;
    let outcome = outcome.await.map_err(|_| anyhow!("the daemon is stopping"))??;
    let txn = writes(&sb, id, &outcome);
    if !txn.is_empty() {
        client.transact(txn).await?;
    }
    Ok(outcome)
}

fn log_event(ev: &Event) {
    match ev {
        Event::Connected { remote, method, resumed } => {
            tracing::info!(%remote, method = method.name(), resumed, "ovn: Southbound connected")
        }
        Event::Disconnected { remote, reason } => tracing::warn!(%remote, reason, "ovn: Southbound connection lost"),
        Event::Reset(_) | Event::Update(_) => {}
    }
}

/// On a clean stop (not `--keep-datapath`): the chassis leaves the
/// Southbound, as `ovn-appctl exit` does; its bindings' weak references to
/// it are cleared by the database.
pub async fn unregister(remotes: &Remotes, chassis: &str) -> Result<()> {
    let mut config = xgw_ovsdb::Config::new(remotes.clone(), DATABASE, MonitorSpec::new());
    config.connect_timeout = Duration::from_secs(3);
    let (client, _events) = Client::connect(config).await?;
    let by_name = || vec![ops::cond("name", "==", json!(chassis))];
    let txn = vec![ops::delete("Chassis_Private", by_name()), ops::delete("Chassis", by_name())];
    let result = tokio::time::timeout(Duration::from_secs(3), client.transact(txn)).await;
    match result {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => bail!("the Southbound did not answer within 3 s"),
    }
}
