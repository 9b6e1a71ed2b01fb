//! `xgw trace`: one packet through the live datapath, as `ovs-appctl
//! ofproto/trace` runs one through OVS's tables.
//!
//! It runs in the CLI process, not in the daemon: it needs root and the
//! daemon's bpffs directory, but no daemon, so it works exactly when it is
//! most wanted (the daemon stopped or stuck while the pinned programs keep
//! forwarding), and the daemon's single-owner state thread never runs
//! packets. It loads the programs of this binary (the same object the
//! daemon loads and attaches) against the daemon's pinned configuration
//! maps and runs one of them once with BPF_PROG_TEST_RUN. Only the
//! configuration is shared: the copy has its own counters (DROPS, REPLIES,
//! PORT_STATS), its own flow caches, storm buckets and BFD session state,
//! so the trace adds nothing to the live counters, writes no live flow-cache
//! slot and cannot move a BFD session; the counters it reports are all and
//! only what this packet touched. The flow caches start empty, so the
//! packet takes the lookups a cache miss takes (a hit answers the same
//! while its generation is current: `dump-flows`). A redirect verdict
//! transmits nothing (BPF_PROG_TEST_RUN without live frames); the target is
//! the port whose tx counter the run moved and the DEVMAP entry for it.
pub mod decode;
pub mod flow;
pub mod flows;

use std::{
    collections::BTreeMap,
    ffi::CString,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{Array, DevMapHash, HashMap, Map, MapData, PerCpuArray},
    programs::{TestRun, TestRunOptions},
    EbpfLoader,
};
use serde_json::{json, Value};
use xgw_common::{
    counters::{Drop, PortStats, Reply},
    maps::{
        names, FloodMeta, LocalPort, PortRecordCopy, Uplink, DEVMAP_UPLINK, FLOOD_ETHERTYPE, FLOOD_MAGIC, FLOOD_SHIM,
        UPLINK_HAS_IP4, UPLINK_HAS_IP6,
    },
};

use crate::{
    daemon::pins::{LOCAL_PROGRAM, UPLINK_PROGRAM},
    datapath::{self, CONFIG_MAPS},
    ofport::spec::PortSpec,
};

/// Maps the trace's copy does not share with the live datapath: a traced
/// BFD packet must not change a live session (nor queue its events).
const PRIVATE_MAPS: &[&str] = &[names::BFD_SESSIONS, names::BFD_EVENTS];

/// The packet to trace.
pub enum Input {
    Flow(flow::Flow),
    /// A pcap file's first packet.
    Pcap(PathBuf),
}

fn open_map(dir: &Path, name: &str) -> Result<Map> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path).with_context(|| format!("opening the pinned map {}", path.display()))?;
    Map::from_map_data(data).with_context(|| format!("map {name}"))
}

fn typed<T: TryFrom<Map, Error = aya::maps::MapError>>(dir: &Path, name: &str) -> Result<T> {
    T::try_from(open_map(dir, name)?).with_context(|| format!("map {name}: not the layout this xgw reads"))
}

/// Committed ports by OpenFlow number, from the pinned `PORT_RECORDS`.
pub fn port_records(dir: &Path) -> Result<BTreeMap<u32, PortSpec>> {
    let records: HashMap<MapData, u32, PortRecordCopy> = typed(dir, names::PORT_RECORDS)?;
    let mut out = BTreeMap::new();
    for row in records.iter() {
        let (ofport, copy) = row.context("reading PORT_RECORDS")?;
        if let Ok(spec) = PortSpec::from_record_copy(&copy) {
            out.insert(ofport, spec);
        }
    }
    Ok(out)
}

pub fn ifindex(ifname: &str) -> Option<u32> {
    let c = CString::new(ifname).ok()?;
    // SAFETY: a NUL-terminated name.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

pub fn ifname(ifindex: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: a buffer of IF_NAMESIZE bytes.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// The datapath pinned in `dir`, or a sentence saying there is none.
pub fn check_dir(dir: &Path) -> Result<()> {
    if !dir.join(names::UPLINK).exists() {
        bail!(
            "no xgw datapath is pinned in {} (give --bpffs DIR, or --uplink IF for {}/IF)",
            dir.display(),
            crate::daemon::DEFAULT_BPFFS_ROOT
        );
    }
    Ok(())
}

/// The first packet of a pcap file (classic format, Ethernet link type).
pub fn read_pcap(path: &Path) -> Result<Vec<u8>> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let magic = b.get(..4).ok_or_else(|| anyhow!("{}: not a pcap file", path.display()))?;
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        [0x0a, 0x0d, 0x0d, 0x0a] => {
            bail!(
                "{}: pcapng is not read; convert it (editcap -F pcap IN OUT) or write pcap (tcpdump -w)",
                path.display()
            )
        }
        _ => bail!("{}: not a pcap file", path.display()),
    };
    let u32_at = |at: usize| -> Result<u32> {
        let w: [u8; 4] = b.get(at..at + 4).ok_or_else(|| anyhow!("{}: cut short", path.display()))?.try_into()?;
        Ok(if le { u32::from_le_bytes(w) } else { u32::from_be_bytes(w) })
    };
    let linktype = u32_at(20)? & 0xffff;
    if linktype != 1 {
        bail!("{}: link type {linktype}, not Ethernet (1)", path.display());
    }
    let caplen = u32_at(24 + 8)? as usize;
    let orig = u32_at(24 + 12)? as usize;
    if caplen < orig {
        bail!("{}: the first packet was captured cut short ({caplen} of {orig} bytes)", path.display());
    }
    let data = b.get(40..40 + caplen).ok_or_else(|| anyhow!("{}: no packet in it", path.display()))?;
    Ok(data.to_vec())
}

fn sum_u64(map: &PerCpuArray<&MapData, u64>, i: u32) -> Result<u64> {
    Ok(map.get(&i, 0).with_context(|| format!("reading counter {i}"))?.iter().sum())
}

/// What the private counters hold.
#[derive(Default, PartialEq)]
struct Counters {
    drops: Vec<u64>,
    replies: Vec<u64>,
    ports: BTreeMap<u32, PortStats>,
}

fn read_counters(ebpf: &aya::Ebpf, ofports: &[u32]) -> Result<Counters> {
    let map = |n: &str| ebpf.map(n).ok_or_else(|| anyhow!("the datapath object has no map {n}"));
    let drops: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map("DROPS")?)?;
    let replies: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map("REPLIES")?)?;
    let stats: PerCpuArray<&MapData, PortStats> = PerCpuArray::try_from(map("PORT_STATS")?)?;
    let mut c = Counters::default();
    for d in Drop::ALL {
        c.drops.push(sum_u64(&drops, d as u32)?);
    }
    for r in Reply::ALL {
        c.replies.push(sum_u64(&replies, r as u32)?);
    }
    for &p in ofports {
        let s = stats.get(&p, 0).with_context(|| format!("reading PORT_STATS[{p}]"))?.iter().fold(
            PortStats::default(),
            |mut a, s| {
                a.rx.packets += s.rx.packets;
                a.rx.bytes += s.rx.bytes;
                a.tx.packets += s.tx.packets;
                a.tx.bytes += s.tx.bytes;
                a
            },
        );
        c.ports.insert(p, s);
    }
    Ok(c)
}

const VERDICTS: [&str; 5] = ["aborted", "drop", "pass", "tx", "redirect"];

/// Traces `input` arriving on `ingress` (`uplink`, a local port's name,
/// or a local port's interface) through the datapath pinned in `dir`:
/// the JSON document `xgw trace --json` prints.
pub fn trace(dir: &Path, ingress: &str, input: Input) -> Result<Value> {
    check_dir(dir)?;
    let uplink: Array<MapData, Uplink> = typed(dir, names::UPLINK)?;
    let uplink = uplink.get(&0, 0).context("reading UPLINK")?;
    let records = port_records(dir)?;
    let name_of = |ofport: u32| records.get(&ofport).map(|s| s.name().to_owned());
    let local_ports: HashMap<MapData, u32, LocalPort> = typed(dir, names::LOCAL_PORTS)?;

    let mut defaults = flow::Defaults::default();
    let (program, ifindex, ingress_name, ingress_ofport) = if ingress == "uplink" {
        if uplink.ifindex == 0 {
            bail!("the datapath has no uplink yet");
        }
        defaults.eth_dst = Some(uplink.mac);
        defaults.eth_src = Some([0x00, 0x00, 0x5e, 0x00, 0x53, 0x01]);
        if uplink.flags & UPLINK_HAS_IP4 != 0 {
            defaults.ip4_dst = Some(uplink.ip4.into());
        }
        if uplink.flags & UPLINK_HAS_IP6 != 0 {
            defaults.ip6_dst = Some(uplink.ip6.into());
        }
        (UPLINK_PROGRAM, uplink.ifindex, "uplink".to_owned(), None)
    } else {
        let ifname = records
            .values()
            .find_map(|s| match s {
                PortSpec::Local(p) if p.name.as_str() == ingress => Some(p.ifname.as_str().to_owned()),
                _ => None,
            })
            .unwrap_or_else(|| ingress.to_owned());
        let ifindex = ifindex(&ifname).ok_or_else(|| {
            anyhow!("--in {ingress}: neither `uplink`, a local port, nor an interface of this network namespace")
        })?;
        let port = local_ports.get(&ifindex, 0).map_err(|_| {
            anyhow!("--in {ingress}: interface {ifname} (ifindex {ifindex}) is no local port of this datapath")
        })?;
        defaults.eth_src = Some(port.mac);
        let name = name_of(port.ofport as u32).unwrap_or(ifname);
        (LOCAL_PROGRAM, ifindex, name, Some(port.ofport as u32))
    };
    let packet = match input {
        Input::Flow(f) => f.build(&defaults)?,
        Input::Pcap(p) => read_pcap(&p)?,
    };
    if packet.len() < xgw_common::wire::ETH_HLEN {
        bail!("the packet is {} bytes, shorter than an Ethernet header", packet.len());
    }

    // The copy: this binary's programs on the live configuration maps.
    let shared: Vec<&str> = CONFIG_MAPS.iter().copied().filter(|m| !PRIVATE_MAPS.contains(m)).collect();
    for name in &shared {
        if !dir.join(name).exists() {
            bail!("{} has no {name}: not a whole xgw datapath (another version?)", dir.display());
        }
    }
    datapath::check_pinned_layouts(shared.iter().map(|&n| (n, dir.join(n))))?;
    let mut loader = EbpfLoader::new();
    for name in &shared {
        loader.map_pin_path(name, dir.join(name));
    }
    let mut ebpf = loader.load(datapath::OBJECT).context("loading the datapath against the pinned maps")?;
    datapath::xdp_program(&mut ebpf, program)?;

    let mut ofports: Vec<u32> = records.keys().copied().collect();
    ofports.extend(ingress_ofport);
    ofports.sort_unstable();
    ofports.dedup();
    // Struct xdp_md: data, data_end, data_meta, ingress_ifindex,
    // rx_queue_index, egress_ifindex.
    let md: Vec<u8> = [0, packet.len() as u32, 0, ifindex, 0, 0].iter().flat_map(|w| w.to_ne_bytes()).collect();
    let mut md_out = vec![0u8; md.len()];
    let mut out = vec![0u8; packet.len() + 4096];
    let prog: &aya::programs::Xdp = ebpf.program(program).expect("loaded above").try_into()?;
    let before = read_counters(&ebpf, &ofports)?;
    let res = prog
        .test_run(TestRunOptions {
            data_in: Some(&packet),
            data_out: Some(&mut out),
            ctx_in: Some(&md),
            ctx_out: Some(&mut md_out),
            ..TestRunOptions::new()
        })
        .context("BPF_PROG_TEST_RUN")?;
    let after = read_counters(&ebpf, &ofports)?;
    out.truncate(res.data_size_out as usize);
    // A flood goes up with its record for xgw_flood behind the MACs
    // (`FloodMeta`); the frame shown is the one xgw_flood copies.
    let secret: Array<MapData, u64> = typed(dir, names::FLOOD_SECRET)?;
    let secret = secret.get(&0, 0).context("reading FLOOD_SECRET")?;
    let record = (res.return_value == 2).then(|| flood_record(&out, secret)).flatten();
    let frame = match record {
        Some(_) => [&out[..12], &out[12 + FLOOD_SHIM..]].concat(),
        None => out.clone(),
    };
    let frame = &frame[..];
    let verdict = VERDICTS.get(res.return_value as usize).copied().unwrap_or("unknown");

    // Counters the run moved.
    let mut counters = Vec::new();
    let mut reasons = Vec::new();
    for (i, d) in Drop::ALL.iter().enumerate() {
        let n = after.drops[i] - before.drops[i];
        if n != 0 {
            counters.push(json!({ "map": "DROPS", "name": d.name(), "packets": n }));
            reasons.push(json!({ "reason": d.name(), "description": d.description() }));
        }
    }
    for (i, r) in Reply::ALL.iter().enumerate() {
        let n = after.replies[i] - before.replies[i];
        if n != 0 {
            counters.push(json!({ "map": "REPLIES", "name": r.name(), "packets": n }));
        }
    }
    let mut tx_ports = Vec::new();
    for (&p, a) in &after.ports {
        let b = before.ports[&p];
        for (dir, a, b) in [("rx", a.rx, b.rx), ("tx", a.tx, b.tx)] {
            if a.packets != b.packets {
                counters.push(json!({
                    "map": "PORT_STATS", "ofport": p, "port": name_of(p), "direction": dir,
                    "packets": a.packets - b.packets, "bytes": a.bytes - b.bytes,
                }));
                if dir == "tx" {
                    tx_ports.push(p);
                }
            }
        }
    }

    let devmap: DevMapHash<MapData> = typed(dir, names::DEVMAP)?;
    let redirect = match (res.return_value, tx_ports.as_slice()) {
        (4, [p]) => {
            let tunnel = matches!(records.get(p), Some(PortSpec::Tunnel(_)));
            let key = if tunnel { DEVMAP_UPLINK } else { *p };
            let ifx = devmap.get(key, 0).ok().map(|v| v.if_index);
            json!({
                "ofport": p, "port": name_of(*p), "kind": if tunnel { "tunnel" } else { "local" },
                "devmap_key": key, "ifindex": ifx, "ifname": ifx.and_then(ifname),
            })
        }
        _ => Value::Null,
    };
    let flood = record.map(
        |m| json!({ "vni": m.vni, "group": m.group, "ingress_ofport": m.ingress, "from_tunnel": m.from_tunnel != 0 }),
    );
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let output = match res.return_value {
        2..=4 => json!({ "len": frame.len(), "hex": hex(frame), "decoded": decode::decode(frame) }),
        _ => Value::Null,
    };
    Ok(json!({
        "ingress": { "name": ingress_name, "ifindex": ifindex, "program": program, "ofport": ingress_ofport },
        "input": { "len": packet.len(), "hex": hex(&packet), "decoded": decode::decode(&packet) },
        "verdict": verdict,
        "redirect": redirect,
        "flood": flood,
        "output": output,
        "counters": counters,
        "drops": reasons,
        "live_counters": false,
    }))
}

/// `xgw trace`'s human form of `trace`'s document.
pub fn print(doc: &Value) {
    let i = &doc["ingress"];
    println!(
        "ingress: {} (ifindex {}, {})",
        i["name"].as_str().unwrap_or("?"),
        i["ifindex"],
        i["program"].as_str().unwrap_or("?")
    );
    let levels = |v: &Value| decode::summary(&v["decoded"]);
    for (n, l) in levels(&doc["input"]).iter().enumerate() {
        println!("{} {l}", if n == 0 { "input: " } else { "  inner:" });
    }
    let verdict = doc["verdict"].as_str().unwrap_or("?");
    let r = &doc["redirect"];
    match (verdict, r.is_null()) {
        ("redirect", false) => println!(
            "verdict: redirect to ofport {} ({}, {}) via DEVMAP key {} -> ifindex {} ({})",
            r["ofport"],
            r["port"].as_str().unwrap_or("?"),
            r["kind"].as_str().unwrap_or("?"),
            r["devmap_key"],
            r["ifindex"],
            r["ifname"].as_str().unwrap_or("?")
        ),
        ("tx", _) => println!("verdict: tx (sent back out of the ingress interface)"),
        ("pass", _) if !doc["flood"].is_null() => {
            let f = &doc["flood"];
            println!("verdict: pass to xgw_flood: group {} of VNI {}", f["group"], f["vni"]);
        }
        ("pass", _) => println!("verdict: pass (to the kernel stack)"),
        (v, _) => println!("verdict: {v}"),
    }
    if !doc["output"].is_null() {
        for (n, l) in levels(&doc["output"]).iter().enumerate() {
            println!("{} {l}", if n == 0 { "output:" } else { "  inner:" });
        }
    }
    println!("counters (this run only; the live counters are not touched):");
    for c in doc["counters"].as_array().into_iter().flatten() {
        match c["map"].as_str() {
            Some("PORT_STATS") => println!(
                "  PORT_STATS ofport {} ({}) {} +{} packets +{} bytes",
                c["ofport"],
                c["port"].as_str().unwrap_or("?"),
                c["direction"].as_str().unwrap_or("?"),
                c["packets"],
                c["bytes"]
            ),
            m => println!("  {} {} +{}", m.unwrap_or("?"), c["name"].as_str().unwrap_or("?"), c["packets"]),
        }
    }
    for d in doc["drops"].as_array().into_iter().flatten() {
        println!("why: {}: {}", d["reason"].as_str().unwrap_or("?"), d["description"].as_str().unwrap_or("?"));
    }
}

/// The `FloodMeta` record of a frame passed up for flooding, if it is
/// xgw's (the flood EtherType, the magic and the datapath's secret).
fn flood_record(out: &[u8], secret: u64) -> Option<FloodMeta> {
    let meta = out.get(xgw_common::wire::ETH_HLEN..xgw_common::wire::ETH_HLEN + std::mem::size_of::<FloodMeta>())?;
    if out.get(12..14)? != FLOOD_ETHERTYPE.to_be_bytes() || out.len() < 12 + FLOOD_SHIM + 2 {
        return None;
    }
    // SAFETY: FloodMeta is plain data; read unaligned from the bytes.
    let m: FloodMeta = unsafe { std::ptr::read_unaligned(meta.as_ptr().cast()) };
    (m.magic == FLOOD_MAGIC && secret != 0 && m.secret == secret).then_some(m)
}
