//! A frame decoded for `xgw trace`: Ethernet (one VLAN tag), IPv4 / IPv6,
//! UDP / TCP / ICMP, ARP, and Geneve on UDP 6081 with its options and the
//! inner frame, decoded the same way. Geneve's layout is
//! `xgw_common::geneve`'s, the one the datapath and the tests use.
use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{json, Map, Value};
use xgw_common::{geneve, wire};

use crate::types::MacAddr;

fn mac(b: &[u8]) -> String {
    MacAddr(b[..6].try_into().unwrap()).to_string()
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The frame as JSON, one object per header, outermost first:
/// `{"eth": .., "ipv4"|"ipv6"|"arp": .., "udp"|"tcp"|"icmp": ..,
/// "geneve": {.., "inner": {..}}, "payload_len": N}`; a header cut short
/// is `"truncated": "<header>"`.
pub fn decode(f: &[u8]) -> Value {
    let mut out = Map::new();
    if f.len() < wire::ETH_HLEN {
        out.insert("truncated".into(), "eth".into());
        return Value::Object(out);
    }
    let mut t = be16(f, 12);
    let mut at = 14;
    let mut eth = json!({ "dst": mac(&f[0..6]), "src": mac(&f[6..12]) });
    if (t == wire::ETH_P_8021Q || t == wire::ETH_P_8021AD) && f.len() >= 18 {
        eth["vlan"] = (be16(f, 14) & 0xfff).into();
        t = be16(f, 16);
        at = 18;
    }
    eth["type"] = format!("0x{t:04x}").into();
    out.insert("eth".into(), eth);
    let rest = &f[at..];
    match t {
        wire::ETH_P_IPV4 => ipv4(rest, &mut out),
        wire::ETH_P_IPV6 => ipv6(rest, &mut out),
        wire::ETH_P_ARP => arp(rest, &mut out),
        _ => {
            out.insert("payload_len".into(), rest.len().into());
        }
    }
    Value::Object(out)
}

fn ipv4(b: &[u8], out: &mut Map<String, Value>) {
    if b.len() < 20 || b[0] >> 4 != 4 || ((b[0] & 0xf) as usize) * 4 < 20 || b.len() < ((b[0] & 0xf) as usize) * 4 {
        out.insert("truncated".into(), "ipv4".into());
        return;
    }
    let hl = ((b[0] & 0xf) as usize) * 4;
    let total = be16(b, 2) as usize;
    let flags = be16(b, 6);
    out.insert(
        "ipv4".into(),
        json!({
            "src": Ipv4Addr::from(<[u8; 4]>::try_from(&b[12..16]).unwrap()).to_string(),
            "dst": Ipv4Addr::from(<[u8; 4]>::try_from(&b[16..20]).unwrap()).to_string(),
            "proto": b[9], "ttl": b[8], "tos": b[1], "len": total, "id": be16(b, 4),
            "df": flags & 0x4000 != 0, "frag": flags & 0x3fff != 0,
            "checksum_ok": crate::trace::flow::checksum(&[&b[..hl]]) == 0,
        }),
    );
    let end = total.clamp(hl, b.len());
    if flags & 0x1fff != 0 {
        out.insert("payload_len".into(), (end - hl).into());
        return;
    }
    l4(b[9], &b[hl..end], out);
}

fn ipv6(b: &[u8], out: &mut Map<String, Value>) {
    if b.len() < 40 || b[0] >> 4 != 6 {
        out.insert("truncated".into(), "ipv6".into());
        return;
    }
    let len = be16(b, 4) as usize;
    out.insert(
        "ipv6".into(),
        json!({
            "src": Ipv6Addr::from(<[u8; 16]>::try_from(&b[8..24]).unwrap()).to_string(),
            "dst": Ipv6Addr::from(<[u8; 16]>::try_from(&b[24..40]).unwrap()).to_string(),
            "next_header": b[6], "hop_limit": b[7], "payload_len": len,
            "flow_label": u32::from_be_bytes([0, b[1] & 0xf, b[2], b[3]]),
        }),
    );
    l4(b[6], &b[40..(40 + len).min(b.len())], out);
}

fn l4(proto: u8, b: &[u8], out: &mut Map<String, Value>) {
    match proto {
        wire::IPPROTO_UDP if b.len() >= 8 => {
            let (sp, dp) = (be16(b, 0), be16(b, 2));
            out.insert("udp".into(), json!({ "src": sp, "dst": dp, "len": be16(b, 4), "checksum": be16(b, 6) }));
            if dp == wire::GENEVE_PORT {
                geneve_(&b[8..], out);
            } else {
                out.insert("payload_len".into(), (b.len() - 8).into());
            }
        }
        wire::IPPROTO_TCP if b.len() >= 20 => {
            let hl = ((b[12] >> 4) as usize * 4).clamp(20, b.len());
            out.insert("tcp".into(), json!({ "src": be16(b, 0), "dst": be16(b, 2), "flags": b[13] }));
            out.insert("payload_len".into(), (b.len() - hl).into());
        }
        wire::IPPROTO_ICMP | wire::IPPROTO_ICMPV6 if b.len() >= 4 => {
            let key = if proto == wire::IPPROTO_ICMP { "icmp" } else { "icmpv6" };
            out.insert(key.into(), json!({ "type": b[0], "code": b[1] }));
            out.insert("payload_len".into(), (b.len() - 4).into());
        }
        wire::IPPROTO_UDP | wire::IPPROTO_TCP | wire::IPPROTO_ICMP | wire::IPPROTO_ICMPV6 => {
            out.insert("truncated".into(), "l4".into());
        }
        _ => {
            out.insert("payload_len".into(), b.len().into());
        }
    }
}

fn arp(b: &[u8], out: &mut Map<String, Value>) {
    if b.len() < 28 {
        out.insert("truncated".into(), "arp".into());
        return;
    }
    out.insert(
        "arp".into(),
        json!({
            "op": be16(b, 6), "sha": mac(&b[8..14]),
            "spa": Ipv4Addr::from(<[u8; 4]>::try_from(&b[14..18]).unwrap()).to_string(),
            "tha": mac(&b[18..24]),
            "tpa": Ipv4Addr::from(<[u8; 4]>::try_from(&b[24..28]).unwrap()).to_string(),
        }),
    );
}

fn geneve_(b: &[u8], out: &mut Map<String, Value>) {
    let Ok(v) = geneve::View::decode(b) else {
        out.insert("truncated".into(), "geneve".into());
        return;
    };
    let mut opts = Vec::new();
    for o in v.options() {
        let Ok(o) = o else {
            opts.push(json!({ "error": "option length runs past Opt Len" }));
            break;
        };
        let mut j = json!({
            "class": format!("0x{:04x}", o.class), "type": format!("0x{:02x}", o.typ),
            "critical": o.critical(), "data": o.data.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        });
        if let Some((ingress, egress)) = o.ovn() {
            j["ovn"] = json!({ "ingress": ingress, "egress": egress });
        }
        opts.push(j);
    }
    let inner =
        if v.protocol == wire::ETH_P_TEB { decode(v.payload) } else { json!({ "payload_len": v.payload.len() }) };
    out.insert(
        "geneve".into(),
        json!({
            "vni": v.vni, "protocol": format!("0x{:04x}", v.protocol),
            "oam": v.flags & geneve::FLAG_OAM != 0, "critical": v.flags & geneve::FLAG_CRITICAL != 0,
            "options": opts, "inner_len": v.payload.len(), "inner": inner,
        }),
    );
}

/// The decoded frame in one line per level, as `ofproto/trace` prints a
/// flow: `eth(src=..,dst=..,type=0x0800),ipv4(src=..,..),udp(..)`.
pub fn summary(v: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    let mut level = v;
    loop {
        let mut parts = Vec::new();
        for key in ["eth", "ipv4", "ipv6", "arp", "udp", "tcp", "icmp", "icmpv6", "geneve"] {
            let Some(h) = level.get(key).and_then(Value::as_object) else { continue };
            let fields: Vec<String> = h
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "inner" | "inner_len"))
                .map(|(k, v)| match (k.as_str(), v) {
                    ("options", Value::Array(o)) => format!(
                        "options=[{}]",
                        o.iter()
                            .map(|o| match o.get("ovn") {
                                Some(ovn) => format!("ovn(ingress={},egress={})", ovn["ingress"], ovn["egress"]),
                                None => format!(
                                    "{}:{}:{}",
                                    o["class"].as_str().unwrap_or("?"),
                                    o["type"].as_str().unwrap_or("?"),
                                    o["data"].as_str().unwrap_or("?")
                                ),
                            })
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                    (_, Value::String(s)) => format!("{k}={s}"),
                    _ => format!("{k}={v}"),
                })
                .collect();
            parts.push(format!("{key}({})", fields.join(",")));
        }
        if let Some(t) = level.get("truncated") {
            parts.push(format!("truncated({})", t.as_str().unwrap_or("?")));
        }
        if let Some(n) = level.get("payload_len") {
            parts.push(format!("payload({n} bytes)"));
        }
        lines.push(parts.join(","));
        match level.get("geneve").and_then(|g| g.get("inner")) {
            Some(inner) => level = inner,
            None => return lines,
        }
    }
}
