//! The oracle: what each program may do with a packet, given the world's
//! configuration. It never asks the datapath what it meant; it reads the
//! input bytes with its own parser (RFC 791 / 8200 / 768 / 8926 layouts),
//! the output bytes, the verdict and the counters the datapath moved.
use xgw_common::maps::{
    ipv4_mapped, BfdPathKey, BFD_CNT_ECHO_REFLECTED, BFD_CNT_RX, BFD_CNT_XDP_TX, BFD_PATH_GENEVE, BFD_PATH_SINGLE_HOP,
};
use xgw_tests::{addrs::*, packet::*};

use crate::world::{BfdPeer, Delta, Ingress, Port, World, BFD_ADV_US, BFD_MULT, MTU};

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

/// Checks one run of `program` on `input`, which arrived on `ingress`.
pub fn check(w: &World, program: &str, ingress: &Ingress, input: &[u8], run: &Run, d: &Delta) -> Result<(), String> {
    if !matches!(run.verdict, XDP_DROP | XDP_PASS | XDP_TX | XDP_REDIRECT) {
        return Err(format!("illegal verdict {}", run.verdict));
    }
    if program != "xgw_uplink" && !d.bfd_quiet() {
        return Err(format!("{program} moved BFD counters or sessions: {d:?}"));
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
        if d.drop_count() != 0 || !d.tx.is_empty() || d.reply_count() != 0 || !d.bfd_quiet() {
            return Err(format!("counters moved on a pass: {d:?}"));
        }
        Ok(())
    };
    let bfd = Bfd::classify(w, ingress, input);
    match (program, run.verdict) {
        ("xgw_uplink", XDP_PASS) => unchanged().and_then(|_| quiet()).and_then(|_| {
            if let Some(g) = parse_geneve(input, GW_IP4, GW_IP6) {
                return Err(format!("Geneve to the gateway passed to the stack: {g:?}"));
            }
            match bfd {
                Bfd::Control { .. } => Err("a control packet of a configured BFD session passed to the stack".into()),
                Bfd::Echo { .. } => Err("an echo packet of a session with echo passed to the stack".into()),
                _ => Ok(()),
            }
        }),
        ("xgw_uplink", XDP_DROP) => check_uplink_drop(&bfd, d),
        ("xgw_uplink", XDP_TX) => check_bfd_tx(&bfd, input, run, d),
        ("xgw_uplink", XDP_REDIRECT) => {
            if !d.bfd_quiet() {
                return Err(format!("decapsulated and moved BFD state: {d:?}"));
            }
            check_decap(w, input, run, d)
        }
        ("xgw_local", v) => check_local(w, ingress.port(), input, run, d, v, counted_drop, unchanged),
        ("xgw_probe" | "xgw_pass", XDP_PASS) => unchanged(),
        ("xgw_drop", XDP_DROP) => Ok(()),
        // The benchmark programs' DEVMAP slot 0 is left empty here.
        ("xgw_redirect" | "xgw_strip" | "xgw_push", XDP_DROP) => Ok(()),
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
    if inner.get(0..6) == Some(&xgw_common::bfd::ovs::DST_MAC[..]) {
        return Err("delivered Open vSwitch's BFD to a port".into());
    }
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
    if verdict != XDP_DROP && port.secured {
        sent_from_the_port(port, input)?;
    }
    match verdict {
        XDP_DROP => counted_drop(),
        XDP_PASS => Err("a frame from a local port was passed to the host stack".into()),
        XDP_TX => check_reply(w, port, input, run, d),
        _ => check_forward(w, port, input, run, d),
    }
}

/// What port security lets out of a secured port: its MAC; its IPv4
/// address (or 0.0.0.0, which only a DHCP discover may use), its IPv6
/// address, its link-local one or `::`; ARP naming its MAC and address.
fn sent_from_the_port(port: &Port, input: &[u8]) -> Result<(), String> {
    let m = port.mac;
    let lla = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, m[0] ^ 2, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]];
    let ok = input.get(6..12) == Some(&m[..])
        && match be16(input, 12) {
            Some(0x0800) => input.get(26..30).is_none_or(|s| s == port.ip4 || s == [0; 4]),
            Some(0x86dd) => input.get(22..38).is_none_or(|s| s == port.ip6 || s == lla || s == [0; 16]),
            Some(0x0806) => {
                input.get(22..28).is_none_or(|s| s == m)
                    && input.get(28..32).is_none_or(|s| s == port.ip4 || s == [0; 4])
            }
            _ => true,
        };
    if ok {
        Ok(())
    } else {
        Err(format!("port security let a frame out of {} that it does not list: {}", port.ifname, hex(input)))
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

// BFD on the uplink.

/// What the uplink program must make of a packet, as far as BFD goes,
/// decided from the bytes and the configured sessions only.
#[derive(Debug)]
enum Bfd<'w> {
    /// Not BFD for any session: the Geneve and pass rules apply.
    None,
    /// A single-hop control packet to the gateway on a session's path
    /// (RFC 5881: IPv4 to our address, UDP 3784). `valid`: it passes every
    /// session-independent check of RFC 5880 section 6.8.6 and its IP and
    /// UDP lengths agree with the frame.
    Control { peer: &'w BfdPeer, ctl: usize, valid: bool },
    /// Open vSwitch's BFD inside valid Geneve to us (inner Ethernet to
    /// 00:23:20:00:00:01). `peer`: the session on (remote, VNI), if any;
    /// `valid` as above, for the inner packet and OVS's rules.
    Geneve { peer: Option<&'w BfdPeer>, inner: usize, valid: bool, ipv4: bool },
    /// An echo packet a session with echo must reflect (RFC 5880 6.4:
    /// from the peer's address to itself, UDP 3785, TTL left to spend).
    Echo,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// An IPv4 header checksum over `h` sums to 0xffff (RFC 1071).
fn ipv4_csum_ok(h: &[u8]) -> bool {
    let mut sum: u32 = h.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]) as u32).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

/// The IPv4 / UDP headers at `ip`: (source, destination, TTL, UDP
/// destination port), if it is IPv4 without options or fragmentation and
/// carries UDP.
fn ipv4_udp(f: &[u8], ip: usize) -> Option<([u8; 4], [u8; 4], u8, u16)> {
    let h = f.get(ip..ip + 28)?;
    if h[0] != 0x45 || h[9] != 17 || u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
        return None;
    }
    Some((h[12..16].try_into().unwrap(), h[16..20].try_into().unwrap(), h[8], u16::from_be_bytes([h[22], h[23]])))
}

/// IP total length and UDP length agree with each other and with the frame
/// (IPv4 at `ip`, no options), and the datagram holds `min` bytes.
fn lengths_ok(f: &[u8], ip: usize, min: usize) -> bool {
    let (Some(tot), Some(udp)) = (be16(f, ip + 2), be16(f, ip + 24)) else { return false };
    let (tot, udp) = (tot as usize, udp as usize);
    ip + tot <= f.len() && udp + 20 <= tot && udp >= 8 + min
}

/// RFC 5880 section 6.8.6, the checks that need no session, over a
/// control packet at `at` in a datagram of `payload` bytes.
fn control_ok(f: &[u8], at: usize, payload: usize) -> bool {
    let Some(b) = f.get(at..at + 24) else { return false };
    let flags = b[1] & 0x3f;
    let len = b[3] as usize;
    b[0] >> 5 == 1
        && len >= 24
        && len <= payload
        && b[2] != 0
        && flags & 0x01 == 0 // M
        && flags & 0x30 != 0x30 // P and F
        && flags & 0x04 == 0 // A: no authentication is configured
        && be32(b, 4) != Some(0)
}

impl<'w> Bfd<'w> {
    fn classify(w: &'w World, ingress: &Ingress, f: &[u8]) -> Bfd<'w> {
        if let Some(g) = parse_geneve(f, GW_IP4, GW_IP6) {
            if f.get(g.inner..g.inner + 6) != Some(&xgw_common::bfd::ovs::DST_MAC[..]) {
                return Bfd::None;
            }
            let Some(flags) = geneve_valid(f) else { return Bfd::None };
            let peer = w.bfd_on(&BfdPathKey { kind: BFD_PATH_GENEVE, id: g.vni, peer: g.remote });
            let i = g.inner;
            let valid = flags & 0x40 == 0 // C: OVS refuses critical options
                && be16(f, i + 12) == Some(0x0800)
                && ipv4_udp(f, i + 14).is_some_and(|(_, _, ttl, dport)| ttl == 255 && dport == 3784)
                && lengths_ok(&f[i..], 14, 24)
                && control_ok(f, i + 42, be16(f, i + 38).unwrap() as usize - 8);
            return Bfd::Geneve { peer, inner: i, valid, ipv4: be16(f, 12) == Some(0x0800) };
        }
        if !matches!(ingress, Ingress::Uplink) || be16(f, 12) != Some(0x0800) {
            return Bfd::None;
        }
        let Some((src, dst, ttl, dport)) = ipv4_udp(f, 14) else { return Bfd::None };
        let path = BfdPathKey { kind: BFD_PATH_SINGLE_HOP, id: w.uplink_ifindex, peer: ipv4_mapped(src) };
        let Some(peer) = w.bfd_on(&path) else { return Bfd::None };
        match dport {
            3784 if dst == GW_IP4 => {
                let valid = ttl == 255 && lengths_ok(f, 14, 24) && control_ok(f, 42, be16(f, 38).unwrap() as usize - 8);
                Bfd::Control { peer, ctl: 42, valid }
            }
            3785 if src == dst && peer.echo && ttl > 1 => Bfd::Echo,
            _ => Bfd::None,
        }
    }
}

/// The Geneve header's flags byte if decapsulation must accept the header:
/// version 0, Ethernet payload, outer lengths exact, options adding up and
/// none critical but OVN's (within the eight the datapath walks).
fn geneve_valid(f: &[u8]) -> Option<u8> {
    let (ip_len_ok, udp) = match be16(f, 12) {
        Some(0x0800) => (be16(f, 16).map(|l| l as usize + 14) == Some(f.len()), 34),
        _ => (be16(f, 18).map(|l| l as usize + 54) == Some(f.len()), 54),
    };
    let udp_len_ok = be16(f, udp + 4).map(|l| l as usize + udp) == Some(f.len());
    let gen = udp + 8;
    let (h0, proto) = (f[gen], be16(f, gen + 2).unwrap_or(0));
    let opts_end = gen + 8 + (h0 & 0x3f) as usize * 4;
    let mut off = gen + 8;
    for _ in 0..8 {
        if off >= opts_end {
            break;
        }
        let o = f.get(off..off + 4)?;
        let ovn = o[0] == 0x01 && o[1] == 0x02 && o[2] == 0x80 && o[3] & 0x1f == 1;
        if o[2] & 0x80 != 0 && !ovn {
            return None;
        }
        off += 4 + (o[3] & 0x1f) as usize * 4;
    }
    let flags = f[gen + 1];
    // More than eight options: the rest is unread, fine unless C says one of them may be critical.
    let walked = off == opts_end || (off < opts_end && flags & 0x40 == 0);
    (ip_len_ok && udp_len_ok && h0 >> 6 == 0 && proto == 0x6558 && walked).then_some(flags)
}

/// A drop on the uplink is counted exactly once: under a Geneve reason, a
/// BFD discard reason, or as a control packet a session consumed.
fn check_uplink_drop(bfd: &Bfd, d: &Delta) -> Result<(), String> {
    let (drops, bfd_drops, rx) = (d.drop_count(), d.bfd_drop_count(), d.bfd(BFD_CNT_RX));
    if drops + bfd_drops + rx != 1 || !d.tx.is_empty() || d.reply_count() != 0 || d.bfd(BFD_CNT_XDP_TX) != 0 {
        return Err(format!("a drop must be counted once: {d:?}"));
    }
    let slot = match bfd {
        Bfd::Control { peer, valid, .. } | Bfd::Geneve { peer: Some(peer), valid, .. } => {
            if rx == 1 && !valid {
                return Err("a session consumed a packet RFC 5880 6.8.6 discards".into());
            }
            Some(peer.slot)
        }
        Bfd::Geneve { peer: None, .. } if rx == 1 => return Err("consumed BFD on a path with no session".into()),
        Bfd::Geneve { peer: None, .. } => None,
        _ if rx + bfd_drops != 0 => return Err(format!("BFD counted a packet that is not BFD for a session: {d:?}")),
        _ => None,
    };
    // Only a consumed packet may touch a session, and only its own.
    match (rx, d.sessions.as_slice()) {
        (_, []) => Ok(()),
        (1, [s]) if Some(*s) == slot => Ok(()),
        _ => Err(format!("sessions {:?} changed by a packet for slot {slot:?}", d.sessions)),
    }
}

/// XDP_TX on the uplink: an echo reflected, or a session's answer sent by
/// the datapath itself (heartbeat stale), byte for byte as RFC 5880/5881
/// and Open vSwitch lay it out.
fn check_bfd_tx(bfd: &Bfd, input: &[u8], run: &Run, d: &Delta) -> Result<(), String> {
    let out = &run.data;
    if d.drop_count() + d.bfd_drop_count() + d.reply_count() != 0 || !d.tx.is_empty() || !d.rx.is_empty() {
        return Err(format!("BFD transmit moved other counters: {d:?}"));
    }
    if out.len() != input.len() || out.get(0..6) != input.get(6..12) || out.get(6..12) != input.get(0..6) {
        return Err(format!("BFD transmit not sent back to the sender's MAC, same length: {}", hex(out)));
    }
    let swapped = |a: usize, b: usize| out[a..a + 4] == input[b..b + 4] && out[b..b + 4] == input[a..a + 4];
    match bfd {
        Bfd::Echo => {
            if d.bfd != [(BFD_CNT_ECHO_REFLECTED, 1)] || !d.sessions.is_empty() {
                return Err(format!("echo reflected but counted as {d:?}"));
            }
            // A router forwarding it back: only the TTL (and checksum) change.
            let same = out[12..22] == input[12..22] && out[23] == input[23] && out[26..] == input[26..];
            let csum = !ipv4_csum_ok(&input[14..34]) || ipv4_csum_ok(&out[14..34]);
            if !same || out[22] != input[22] - 1 || !csum {
                return Err(format!("echo reflection altered more than TTL: {}", hex(out)));
            }
            Ok(())
        }
        Bfd::Control { peer, ctl, valid: true } => {
            answered(peer, d)?;
            let ip_ok = out[12..14] == [8, 0]
                && out[14] == 0x45
                && out[15] == 0xc0 // CS6, RFC 5881 section 5
                && out[16..22] == input[16..22]
                && out[22] == 255
                && out[23] == 17
                && ipv4_csum_ok(&out[14..34])
                && swapped(26, 30);
            let udp_ok = out[34..36] == peer.sport.to_be_bytes()
                && out[36..38] == [0x0e, 0xc8]
                && out[38..40] == input[38..40]
                && out[40..42] == [0, 0];
            if !ip_ok || !udp_ok || out[66..] != input[66..] {
                return Err(format!("single-hop answer headers wrong: {}", hex(out)));
            }
            answer_body(&out[*ctl..], peer, &input[*ctl..])
        }
        Bfd::Geneve { peer: Some(peer), inner, valid: true, ipv4: true } => {
            answered(peer, d)?;
            let i = *inner;
            // Outer: as Open vSwitch sends (TTL 64, UDP checksum 0), ports kept.
            let outer_ok = out[12..22] == input[12..22]
                && out[22] == 64
                && out[23] == 17
                && ipv4_csum_ok(&out[14..34])
                && swapped(26, 30)
                && out[34..40] == input[34..40]
                && out[40..42] == [0, 0]
                && out[42..i] == input[42..i];
            // Inner: our MAC as source, addresses and ports kept, checksum 0.
            let inner_ok = out[i..i + 6] == xgw_common::bfd::ovs::DST_MAC
                && out[i + 6..i + 12] == input[0..6]
                && out[i + 12..i + 40] == input[i + 12..i + 40]
                && out[i + 40..i + 42] == [0, 0]
                && out[i + 66..] == input[i + 66..];
            if !outer_ok || !inner_ok {
                return Err(format!("Geneve BFD answer headers wrong: {}", hex(out)));
            }
            answer_body(&out[i + 42..], peer, &input[i + 42..])
        }
        b => Err(format!("XDP_TX on the uplink for a packet that is no BFD to answer ({b:?}): {}", hex(input))),
    }
}

/// An answer counts one received packet and one datapath transmit, and
/// changes only its own session.
fn answered(peer: &BfdPeer, d: &Delta) -> Result<(), String> {
    if d.bfd(BFD_CNT_RX) != 1 || d.bfd(BFD_CNT_XDP_TX) != 1 || d.sessions != [peer.slot] {
        return Err(format!("answer for slot {} counted as {d:?}", peer.slot));
    }
    Ok(())
}

/// The control packet the session must send (RFC 5880 section 4.1): Up,
/// our discriminator and the sender's, Final iff it polled, the intervals
/// and multiplier the controller configured.
fn answer_body(b: &[u8], peer: &BfdPeer, asked: &[u8]) -> Result<(), String> {
    let poll = asked[1] & 0x20 != 0;
    let echo = if peer.echo { BFD_ADV_US } else { 0 };
    let ok = b[0] >> 5 == 1
        && b[1] >> 6 == 3
        && b[1] & 0x3f == if poll { 0x10 } else { 0 }
        && b[2] == BFD_MULT
        && b[3] == 24
        && be32(b, 4) == Some(peer.local_disc)
        && be32(b, 8) == be32(asked, 4)
        && be32(b, 12) == Some(BFD_ADV_US)
        && be32(b, 16) == Some(BFD_ADV_US)
        && be32(b, 20) == Some(echo);
    if !ok {
        return Err(format!("answer is not session {}'s control packet: {}", peer.slot, hex(&b[..24])));
    }
    Ok(())
}
