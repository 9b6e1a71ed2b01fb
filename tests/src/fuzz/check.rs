//! The oracle: what each program may do with a packet, given the world's
//! configuration. It never asks the datapath what it meant; it reads the
//! input bytes with its own parser (RFC 791 / 8200 / 768 / 8926 layouts),
//! the output bytes, the verdict and the counters the datapath moved.
use super::world::{Delta, Port, World, MTU};
use crate::{addrs::*, packet::*};

/// The outer headers of a frame that is Geneve addressed to the gateway,
/// exactly as the datapath must accept it: no VLAN tag, IPv4 without
/// options or fragmentation, IPv6 without extension headers.
#[derive(Debug)]
pub struct GeneveIn {
    pub remote: [u8; 16],
    pub vni: u32,
    /// Offset of the inner Ethernet frame.
    pub inner: usize,
    /// OVN egress keys of every OVN option present.
    pub ovn_egress: Vec<u16>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Reads `frame` as Ethernet / IP / UDP 6081 / Geneve to `dst4`/`dst6`.
pub fn parse_geneve(frame: &[u8], dst4: [u8; 4], dst6: [u8; 16]) -> Option<GeneveIn> {
    let (remote, udp) = match be16(frame, 12)? {
        0x0800 => {
            let ip = frame.get(14..34)?;
            if ip[0] != 0x45 || ip[9] != 17 || ip[16..20] != dst4 || be16(ip, 6)? & 0x3fff != 0 {
                return None;
            }
            let mut r = [0u8; 16];
            r[10] = 0xff;
            r[11] = 0xff;
            r[12..].copy_from_slice(&ip[12..16]);
            (r, 34)
        }
        0x86dd => {
            let ip = frame.get(14..54)?;
            if ip[0] >> 4 != 6 || ip[6] != 17 || ip[24..40] != dst6 {
                return None;
            }
            (ip[8..24].try_into().unwrap(), 54)
        }
        _ => return None,
    };
    if be16(frame, udp + 2)? != 6081 {
        return None;
    }
    let g = udp + 8;
    let hdr = frame.get(g..g + 8)?;
    let opt_len = (hdr[0] & 0x3f) as usize * 4;
    let vni = u32::from_be_bytes([0, hdr[4], hdr[5], hdr[6]]);
    let mut ovn_egress = Vec::new();
    let mut off = g + 8;
    while off < g + 8 + opt_len {
        let o = frame.get(off..off + 4)?;
        let dlen = (o[3] & 0x1f) as usize * 4;
        if be16(o, 0)? == 0x0102 && o[2] == 0x80 && dlen == 4 {
            ovn_egress.push(be16(frame, off + 6)?);
        }
        off += 4 + dlen;
    }
    Some(GeneveIn { remote, vni, inner: g + 8 + opt_len, ovn_egress })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Checks one run of `program` on `input`, which arrived on `ingress` (for
/// `xgw_local`; `None` is an interface that is not a port).
pub fn check(w: &World, program: &str, ingress: Option<&Port>, input: &[u8], run: &Run, d: &Delta) -> Result<(), String> {
    if !matches!(run.verdict, XDP_DROP | XDP_PASS | XDP_TX | XDP_REDIRECT) {
        return Err(format!("illegal verdict {}", run.verdict));
    }
    let unchanged = || {
        if run.data != input {
            return Err(format!("passed but modified: out {}", hex(&run.data)));
        }
        Ok(())
    };
    let counted_drop = || match d.drop_count() {
        1 if d.tx.is_empty() => Ok(()),
        1 => Err(format!("dropped, but tx counted on {:?}", d.tx)),
        n => Err(format!("dropped with {n} drop counts {:?}", d.drops)),
    };
    let quiet = || {
        if d.drop_count() != 0 || !d.tx.is_empty() || d.reply_count() != 0 {
            return Err(format!("counters moved on a pass: {d:?}"));
        }
        Ok(())
    };
    match (program, run.verdict) {
        ("xgw_uplink", XDP_PASS) => unchanged().and_then(|_| quiet()).and_then(|_| {
            match parse_geneve(input, GW_IP4, GW_IP6) {
                Some(g) => Err(format!("Geneve to the gateway passed to the stack: {g:?}")),
                None => Ok(()),
            }
        }),
        ("xgw_uplink", XDP_DROP) => counted_drop(),
        ("xgw_uplink", XDP_REDIRECT) => check_decap(w, input, run, d),
        ("xgw_local", v) => check_local(w, ingress, input, run, d, v, counted_drop, unchanged),
        ("xgw_probe" | "xgw_pass", XDP_PASS) => unchanged(),
        ("xgw_drop", XDP_DROP) => Ok(()),
        // The redirect baseline's DEVMAP slot 0 is left empty here.
        ("xgw_redirect", XDP_DROP) => Ok(()),
        (p, v) => Err(format!("{p} may not return verdict {v}")),
    }
}

fn check_decap(w: &World, input: &[u8], run: &Run, d: &Delta) -> Result<(), String> {
    let g = parse_geneve(input, GW_IP4, GW_IP6).ok_or("redirected a frame that is not Geneve to the gateway")?;
    let tunnel = w
        .tunnels
        .iter()
        .find(|t| t.remote == g.remote && t.vni == g.vni)
        .ok_or_else(|| format!("redirected Geneve from no configured tunnel: {g:?}"))?;
    if d.rx.get(&(tunnel.ofport as u32)) != Some(&1) {
        return Err(format!("tunnel {} rx not counted: {d:?}", tunnel.ofport));
    }
    let out = d.single_tx().ok_or_else(|| format!("redirect must count tx on exactly one port: {d:?}"))?;
    let port = w.port_by_ofport(out).ok_or_else(|| format!("decap redirected to ofport {out}, not a local port"))?;
    if port.vni != g.vni {
        return Err(format!("VNI {:#x} delivered to port {} of VNI {:#x}", g.vni, port.ifname, port.vni));
    }
    let inner = input.get(g.inner..).ok_or("inner offset past the frame")?;
    let by_key = g.ovn_egress.iter().any(|&k| k != 0 && k == port.key);
    let by_mac = inner.get(0..6) == Some(&port.mac[..]);
    if !by_key && !by_mac {
        return Err(format!("delivered to {} by neither its key nor its MAC: {g:?}", port.ifname));
    }
    if run.data != inner {
        return Err(format!("decap output is not the inner frame: out {}", hex(&run.data)));
    }
    if run.data.len() < 14 {
        return Err("decap delivered a runt".into());
    }
    if d.drop_count() != 0 {
        return Err(format!("redirected and counted a drop: {:?}", d.drops));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn check_local(
    w: &World,
    ingress: Option<&Port>,
    input: &[u8],
    run: &Run,
    d: &Delta,
    verdict: u32,
    counted_drop: impl Fn() -> Result<(), String>,
    unchanged: impl Fn() -> Result<(), String>,
) -> Result<(), String> {
    let Some(port) = ingress else {
        // Not a port: the program must stay out of the way.
        return match verdict {
            XDP_PASS => unchanged(),
            v => Err(format!("frame from a non-port interface got verdict {v}")),
        };
    };
    if d.rx.get(&(port.ofport as u32)) != Some(&1) {
        return Err(format!("ingress port {} rx not counted: {d:?}", port.ifname));
    }
    match verdict {
        XDP_DROP => counted_drop(),
        XDP_PASS => Err("a frame from a local port was passed to the host stack".into()),
        XDP_TX => check_reply(w, port, input, run, d),
        _ => check_forward(w, port, input, run, d),
    }
}

/// XDP_TX from a local port: an ARP reply, a neighbour advertisement, or an
/// ICMP too-big, sent back to the frame's sender, naming only bound MACs.
fn check_reply(w: &World, port: &Port, input: &[u8], run: &Run, d: &Delta) -> Result<(), String> {
    if d.reply_count() != 1 || d.drop_count() > 1 {
        return Err(format!("reply not counted once: {d:?}"));
    }
    if d.tx.get(&(port.ofport as u32)) != Some(&1) || d.tx.len() != 1 {
        return Err(format!("reply tx not counted on the ingress port: {d:?}"));
    }
    let out = &run.data;
    // ARP answers go to the request's sender hardware address (RFC 826, as
    // Linux does); everything else to the frame's source.
    let asker = if be16(out, 12) == Some(0x0806) { input.get(22..28) } else { input.get(6..12) };
    if out.len() < 14 || asker != Some(&out[0..6]) {
        return Err(format!("reply not addressed to the sender: out {}", hex(out)));
    }
    let bound = w.macs_in(port.vni);
    match be16(out, 12) {
        Some(0x0806) => {
            // Only a well-formed Ethernet/IPv4 request is answered.
            if input.get(12..22) != Some(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1][..]) {
                return Err(format!("ARP reply to something that is not an ARP request: {}", hex(input)));
            }
            let sender: [u8; 6] = out.get(22..28).ok_or("short ARP reply")?.try_into().unwrap();
            if be16(out, 20) != Some(2) || !bound.contains(&sender) || out[6..12] != sender || d.drop_count() != 0 {
                return Err(format!("ARP reply for a MAC not bound in VNI {:#x}: {}", port.vni, hex(out)));
            }
        }
        Some(0x86dd) => match out.get(54) {
            Some(136) => {
                // RFC 4861 7.1.1: IPv6, hop limit 255, ICMPv6 type 135 code 0.
                let ns_ok = input.get(12..14) == Some(&[0x86, 0xdd][..])
                    && input.get(14).map(|b| b >> 4) == Some(6)
                    && input.get(20..22) == Some(&[58, 255][..])
                    && input.get(54..56) == Some(&[135, 0][..]);
                if !ns_ok {
                    return Err(format!("NA in answer to something that is not a valid NS: {}", hex(input)));
                }
                // Target link-layer address option after the 16-byte target.
                let tlla: [u8; 6] = out.get(80..86).ok_or("short NA")?.try_into().unwrap();
                if !bound.contains(&tlla) || out[6..12] != tlla || d.drop_count() != 0 {
                    return Err(format!("NA for a MAC not bound in VNI {:#x}: {}", port.vni, hex(out)));
                }
            }
            Some(2) if d.drops.iter().any(|x| x.0 == "mtu_exceeded") => {}
            _ => return Err(format!("IPv6 reply that is neither NA nor packet-too-big: {}", hex(out))),
        },
        Some(0x0800) if out.get(34) == Some(&3) && out.get(35) == Some(&4) => {
            if !d.drops.iter().any(|x| x.0 == "mtu_exceeded") {
                return Err("frag-needed without an mtu_exceeded count".into());
            }
        }
        _ => return Err(format!("XDP_TX of something that is not a reply: {}", hex(out))),
    }
    Ok(())
}

/// XDP_REDIRECT from a local port: switched unchanged to another port of its
/// VNI, or encapsulated toward the tunnel of the destination's binding.
fn check_forward(w: &World, port: &Port, input: &[u8], run: &Run, d: &Delta) -> Result<(), String> {
    if d.drop_count() != 0 {
        return Err(format!("forwarded and counted a drop: {:?}", d.drops));
    }
    let out = d.single_tx().ok_or_else(|| format!("redirect must count tx on exactly one port: {d:?}"))?;
    let dst = input.get(0..6).ok_or("runt redirected")?;
    if let Some(to) = w.port_by_ofport(out) {
        if to.vni != port.vni || to.ofport == port.ofport || dst != to.mac {
            return Err(format!("switched {} -> {} for dst {}", port.ifname, to.ifname, hex(dst)));
        }
        return if run.data == input { Ok(()) } else { Err(format!("switched frame modified: {}", hex(&run.data))) };
    }
    let t = w.tunnel_by_ofport(out).ok_or_else(|| format!("redirect counted on unknown ofport {out}"))?;
    let binding = w
        .remotes
        .iter()
        .find(|r| r.vni == port.vni && r.mac == dst)
        .ok_or_else(|| format!("encapsulated a frame for {} with no binding in VNI {:#x}", hex(dst), port.vni))?;
    if binding.tunnel != t.ofport {
        return Err(format!("binding is behind tunnel {}, frame sent to {}", binding.tunnel, t.ofport));
    }
    let (src4, src6) = (GW_IP4, GW_IP6);
    let remote4: [u8; 4] = t.remote[12..].try_into().unwrap();
    // Parse the output as if we were the remote chassis receiving it.
    let g = parse_geneve(&run.data, remote4, t.remote)
        .ok_or_else(|| format!("encapsulated output does not parse as Geneve to {:?}: {}", t.remote, hex(&run.data)))?;
    let expect_src = if t.v6 { src6 } else { xgw_common::maps::ipv4_mapped(src4) };
    if g.remote != expect_src || g.vni != port.vni || run.data.get(g.inner..) != Some(input) {
        return Err(format!("bad encapsulation {g:?}: {}", hex(&run.data)));
    }
    if run.data.len() > MTU as usize + 14 {
        return Err(format!("encapsulated frame of {} bytes exceeds the uplink MTU", run.data.len()));
    }
    Ok(())
}
