//! `xgw dump-flows`: the flow caches of the running datapath (like
//! `ovs-appctl dpctl/dump-flows`), per CPU, decoded.
//!
//! The caches are not pinned: they belong to the programs the daemon
//! loaded and attached, and a restarted daemon's programs come with new
//! ones. So they are found the way the kernel holds them, through the
//! pinned links: `links/uplink` -> its program -> its map `DECAP_FLOWS`,
//! `links/local-*` -> `ENCAP_FLOWS` and `ENCAP_OUTERS` (the tunnels' outer
//! headers, which an encap flow is shown joined with). That needs no daemon, only root and
//! the bpffs directory. A slot counts only while its generation equals
//! `GENERATION` (`xgw_common::maps::FLOW_SLOTS`): `current` says so.
use std::path::Path;

use anyhow::{Context, Result};
use aya::{
    maps::{Map, MapData, PerCpuArray},
    programs::{
        links::{FdLink, PinnedLink},
        loaded_programs,
    },
};
use serde_json::{json, Value};
use xgw_common::maps::{
    names, DecapFlow, EncapFlow, EncapOuter, FdbEntry, FDB_GROUP, FDB_LOCAL, FDB_REMOTE, FLOW_SLOTS, OUTER_IPV4,
    OUTER_IPV6, OUTER_NONE, OUTER_NO_UNDERLAY, OUTER_SLOTS,
};

use super::{ifname, port_records};
use crate::{datapath::Generation, ofport::spec::PortSpec, types::MacAddr};

/// The map named `name` of the program behind the link pinned at `pin`.
fn map_of_link(pin: &Path, name: &str) -> Result<Option<MapData>> {
    let link: FdLink =
        PinnedLink::from_pin(pin).with_context(|| format!("opening the pinned link {}", pin.display()))?.into();
    let prog_id = link.info().with_context(|| format!("reading the link {}", pin.display()))?.program_id();
    let Some(prog) = loaded_programs().filter_map(Result::ok).find(|p| p.id() == prog_id) else {
        return Ok(None);
    };
    for id in prog.map_ids().context("reading the program's maps")?.unwrap_or_default() {
        let Ok(map) = MapData::from_id(id) else { continue };
        if map.info().ok().and_then(|i| i.name_as_str().map(|n| n == name)) == Some(true) {
            return Ok(Some(map));
        }
    }
    Ok(None)
}

fn ip(b: &[u8; 16]) -> String {
    let v6 = std::net::Ipv6Addr::from(*b);
    match v6.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None => v6.to_string(),
    }
}

fn dest(d: &FdbEntry, name: &dyn Fn(u32) -> Option<String>) -> Value {
    let kind = match d.kind {
        FDB_LOCAL => "local",
        FDB_REMOTE => "remote",
        FDB_GROUP => "group",
        _ => "?",
    };
    let port = (d.kind != FDB_GROUP).then(|| name(d.ofport as u32)).flatten();
    json!({ "kind": kind, "ofport": d.ofport, "port": port, "port_key": d.port_key })
}

/// The document `xgw dump-flows --json` prints.
pub fn dump(dir: &Path) -> Result<Value> {
    super::check_dir(dir)?;
    let records = port_records(dir)?;
    let name = |ofport: u32| records.get(&ofport).map(|s: &PortSpec| s.name().to_owned());
    let generation = Generation::open_pinned(dir)?.get();
    let links = dir.join("links");
    let decap_map = match links.join("uplink").exists() {
        true => map_of_link(&links.join("uplink"), names::DECAP_FLOWS)?,
        false => None,
    };
    let (mut encap_map, mut outer_map) = (None, None);
    if let Ok(entries) = std::fs::read_dir(&links) {
        for e in entries.flatten() {
            if e.file_name().to_str().is_some_and(|n| n.starts_with("local-")) {
                encap_map = map_of_link(&e.path(), names::ENCAP_FLOWS)?;
                outer_map = map_of_link(&e.path(), names::ENCAP_OUTERS)?;
                if encap_map.is_some() {
                    break;
                }
            }
        }
    }
    let mut decap = Vec::new();
    if let Some(m) = decap_map {
        let m: PerCpuArray<MapData, DecapFlow> = PerCpuArray::try_from(Map::from_map_data(m)?)?;
        for slot in 0..FLOW_SLOTS {
            for (cpu, f) in m.get(&slot, 0).context("reading DECAP_FLOWS")?.iter().enumerate() {
                if f.filled == 0 {
                    continue;
                }
                let k = &f.key;
                decap.push(json!({
                    "cpu": cpu, "slot": slot,
                    "key": { "remote": ip(&k.remote), "vni": k.vni, "egress": k.egress, "mac": MacAddr(k.mac).to_string() },
                    "tunnel": { "ofport": f.tunnel, "port": name(f.tunnel) },
                    "dest": dest(&f.dest, &name),
                    "generation": f.generation, "current": f.generation == generation,
                }));
            }
        }
    }
    // [cpu][slot]: the tunnels' outer headers, which encap flows share.
    let mut outers: Vec<Vec<EncapOuter>> = Vec::new();
    if let Some(m) = outer_map {
        let m: PerCpuArray<MapData, EncapOuter> = PerCpuArray::try_from(Map::from_map_data(m)?)?;
        for slot in 0..OUTER_SLOTS {
            for (cpu, o) in m.get(&slot, 0).context("reading ENCAP_OUTERS")?.iter().enumerate() {
                if outers.len() <= cpu {
                    outers.push(Vec::new());
                }
                outers[cpu].push(*o);
            }
        }
    }
    let tunnel_of = |o: &EncapOuter| {
        json!({
            "ofport": o.ofport, "port": name(o.ofport), "remote": outer_remote(o),
            "nexthop_mac": MacAddr(o.bytes()[..6].try_into().unwrap()).to_string(),
            "outer": outer_kind(o.kind), "outer_len": o.outer_len, "max_frame": o.max_frame,
            "generation": o.generation, "current": o.generation == generation,
        })
    };
    let mut tunnels = Vec::new();
    for (cpu, slots) in outers.iter().enumerate() {
        for (slot, o) in slots.iter().enumerate().filter(|(_, o)| o.ofport != 0) {
            let mut t = tunnel_of(o);
            t["cpu"] = json!(cpu);
            t["slot"] = json!(slot);
            tunnels.push(t);
        }
    }
    let mut encap = Vec::new();
    if let Some(m) = encap_map {
        let m: PerCpuArray<MapData, EncapFlow> = PerCpuArray::try_from(Map::from_map_data(m)?)?;
        for slot in 0..FLOW_SLOTS {
            for (cpu, f) in m.get(&slot, 0).context("reading ENCAP_FLOWS")?.iter().enumerate() {
                if !f.filled() {
                    continue;
                }
                let k = &f.key;
                // A remote destination is shown with its tunnel's headers as
                // this CPU holds them, if it holds them.
                let outer = (f.dest.kind == FDB_REMOTE)
                    .then(|| outers.get(cpu)?.get((f.dest.ofport as u32 % OUTER_SLOTS) as usize))
                    .flatten()
                    .filter(|o| o.ofport == f.dest.ofport as u32);
                let tunnel = (f.dest.kind == FDB_REMOTE).then(|| match outer {
                    Some(o) => tunnel_of(o),
                    None => {
                        json!({ "ofport": f.dest.ofport, "port": name(f.dest.ofport as u32), "outer": "not built" })
                    }
                });
                encap.push(json!({
                    "cpu": cpu, "slot": slot,
                    "key": { "ifindex": k.ifindex, "ifname": ifname(k.ifindex), "mac": MacAddr(k.mac).to_string() },
                    "in_port": { "ofport": f.port.ofport, "port": name(f.port.ofport as u32), "vni": f.port.vni, "port_key": f.port.port_key },
                    "dest": dest(&f.dest, &name),
                    "tunnel": tunnel,
                    "outer": outer.map_or("none", |o| outer_kind(o.kind)),
                    "generation": f.generation, "current": f.generation == generation,
                }));
            }
        }
    }
    Ok(json!({ "generation": generation, "decap": decap, "encap": encap, "tunnels": tunnels }))
}

fn outer_kind(kind: u32) -> &'static str {
    match kind {
        OUTER_NONE => "none",
        OUTER_NO_UNDERLAY => "no_underlay",
        OUTER_IPV4 => "ipv4",
        OUTER_IPV6 => "ipv6",
        _ => "?",
    }
}

/// The outer IP destination the slot's headers carry.
fn outer_remote(o: &EncapOuter) -> Option<String> {
    let b = o.bytes();
    match o.kind {
        OUTER_IPV4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(&b[14 + 16..14 + 20]).unwrap()).to_string()),
        OUTER_IPV6 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&b[14 + 24..14 + 40]).unwrap()).to_string()),
        _ => None,
    }
}

/// The human form: one line per slot, as `dpctl/dump-flows` prints one
/// per flow.
pub fn print(doc: &Value) {
    println!("generation {}", doc["generation"]);
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "?".into(),
        v => v.to_string(),
    };
    let state = |f: &Value| if f["current"] == true { "current" } else { "stale" };
    for f in doc["decap"].as_array().into_iter().flatten() {
        let (k, d) = (&f["key"], &f["dest"]);
        println!(
            "decap cpu {} slot {}: remote={},vni={},egress={},mac={} tunnel={}({}) -> {} {}({}) port_key={} generation {} {}",
            f["cpu"], f["slot"], s(&k["remote"]), k["vni"], k["egress"], s(&k["mac"]), s(&f["tunnel"]["port"]),
            f["tunnel"]["ofport"], s(&d["kind"]), s(&d["port"]), d["ofport"], d["port_key"], f["generation"], state(f)
        );
    }
    for f in doc["encap"].as_array().into_iter().flatten() {
        let (k, d) = (&f["key"], &f["dest"]);
        let via = match f["tunnel"].as_object() {
            Some(t) => format!(
                " via {}({}) remote {} vni {} nexthop {} outer {}",
                s(&t["port"]),
                t["ofport"],
                s(&t["remote"]),
                f["in_port"]["vni"],
                s(&t["nexthop_mac"]),
                s(&t["outer"])
            ),
            None => String::new(),
        };
        println!(
            "encap cpu {} slot {}: in_port={}({}),dl_dst={} -> {} {}({}) port_key={}{via} generation {} {}",
            f["cpu"],
            f["slot"],
            s(&f["in_port"]["port"]),
            s(&k["ifname"]),
            s(&k["mac"]),
            s(&d["kind"]),
            s(&d["port"]),
            d["ofport"],
            d["port_key"],
            f["generation"],
            state(f)
        );
    }
    for t in doc["tunnels"].as_array().into_iter().flatten() {
        println!(
            "tunnel cpu {} slot {}: {}({}) remote {} nexthop {} outer {} {} bytes, max_frame {} generation {} {}",
            t["cpu"],
            t["slot"],
            s(&t["port"]),
            t["ofport"],
            s(&t["remote"]),
            s(&t["nexthop_mac"]),
            s(&t["outer"]),
            t["outer_len"],
            t["max_frame"],
            t["generation"],
            state(t)
        );
    }
}
