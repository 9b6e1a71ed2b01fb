//! Reading maps through bpftool, as an operator would: an independent check
//! of what the controller reads through aya.
use std::path::Path;

use crate::sh;

/// `bpftool -j map dump pinned PATH` of a per-CPU map whose values start with
/// little-endian u64 fields: returns, per key (as u32), the fields summed
/// over CPUs.
pub fn dump_percpu_u64(path: &Path, fields: usize) -> Vec<(u32, Vec<u64>)> {
    let out = sh(&["bpftool", "-j", "map", "dump", "pinned", path.to_str().unwrap()]);
    let entries: serde_json::Value = serde_json::from_str(&out).expect("bpftool JSON");
    entries
        .as_array()
        .expect("array of entries")
        .iter()
        .map(|e| {
            let key = hex_bytes(&e["key"]);
            let key = u32::from_le_bytes(key[..4].try_into().unwrap());
            let mut sums = vec![0u64; fields];
            for cpu in e["values"].as_array().expect("per-CPU values") {
                let bytes = hex_bytes(&cpu["value"]);
                for (i, s) in sums.iter_mut().enumerate() {
                    *s += u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
                }
            }
            (key, sums)
        })
        .collect()
}

fn hex_bytes(v: &serde_json::Value) -> Vec<u8> {
    v.as_array()
        .expect("byte array")
        .iter()
        .map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
        .collect()
}

/// The XDP program attached to `ifname` inside `ns`, as bpftool reports it:
/// `(program name, mode)`, where mode is `driver`, `generic` or `offload`.
pub fn xdp_attached(ns: &crate::Netns, ifname: &str) -> Option<(String, String)> {
    let net: serde_json::Value = serde_json::from_str(&ns.ok(&["bpftool", "-j", "net", "show", "dev", ifname])).ok()?;
    let xdp = net.as_array()?.first()?["xdp"].as_array()?.first()?.clone();
    let id = xdp["id"].as_u64()?.to_string();
    let prog: serde_json::Value = serde_json::from_str(&sh(&["bpftool", "-j", "prog", "show", "id", &id])).ok()?;
    Some((prog["name"].as_str()?.to_string(), xdp["mode"].as_str()?.to_string()))
}
