//! Flooding through multicast groups (OVN's `Multicast_Group`): broadcast,
//! multicast and unknown unicast from a local port to the other local
//! members of its VNI's group and to every chassis in it; a group's frame
//! from a tunnel to the group's local members.
//!
//! XDP cannot copy a frame, so the XDP programs only decide: they put a
//! `FloodMeta` into the frame behind its MACs (see there for the layout,
//! and why not XDP metadata) and pass it up, and `xgw_flood`, a TC ingress
//! program on the same interface, checks and removes it and makes the
//! copies with `bpf_clone_redirect`: local members' unchanged, then the
//! tunnels' with outer headers pushed once and rewritten per chassis.
//! Floods are rare next to unicast (ARP, DHCP, router advertisements), so
//! the copy path may cost a socket buffer per copy; unicast never leaves XDP.
//! Every copy stays within the group's VNI (members are checked against it
//! when the group is written), never goes back to the ingress port, and a
//! frame from a tunnel never goes to another tunnel (its sender flooded the
//! other chassis itself, as OVN does).
use aya_ebpf::{
    bindings::__sk_buff,
    bindings::{bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, xdp_action, TC_ACT_OK, TC_ACT_SHOT},
    cty::c_void,
    helpers::{
        bpf_clone_redirect, bpf_ktime_get_ns, bpf_loop, bpf_skb_adjust_room, bpf_skb_change_head, bpf_skb_load_bytes,
        bpf_skb_store_bytes, bpf_xdp_adjust_head,
    },
    macros::classifier,
    programs::{TcContext, XdpContext},
};
use xgw_common::{
    counters::Drop,
    geneve::{HLEN as GENEVE_HLEN, OVN_OPT_LEN},
    maps::*,
    wire::{ETH_HLEN, IPV4_HLEN_MIN, UDP_HLEN},
};

use crate::{
    csum, encap,
    maps::{self, FLOOD_SCRATCH, FLOOD_SECRET, GROUPS, PORT_IFINDEX, STORM, TUNNELS, UPLINK},
};

const META: usize = core::mem::size_of::<FloodMeta>();
/// What the XDP programs insert: the record and the room for the frame's
/// own EtherType, which stays where it was (see `FloodMeta`).
const SHIM: usize = FLOOD_SHIM;
/// What a tunnel copy's outer headers take: IPv4 with OVN's option, the
/// only kind a group may flood to (checked when the group is written).
const OUTER: usize = ETH_HLEN + IPV4_HLEN_MIN + UDP_HLEN + GENEVE_HLEN + OVN_OPT_LEN;
const OUTER_WORDS_USED: usize = OUTER.div_ceil(8);

/// From local port `port`: into its VNI's group `group`, or dropped as
/// `otherwise` when the VNI has none.
#[inline(always)]
pub fn from_port(ctx: &XdpContext, port: &LocalPort, group: u16, otherwise: Drop) -> u32 {
    if unsafe { GROUPS.get(&GroupKey { vni: port.vni, key: group, _pad: 0 }) }.is_none() {
        maps::count_drop(otherwise);
        return xdp_action::XDP_DROP;
    }
    let meta = FloodMeta {
        magic: FLOOD_MAGIC,
        vni: port.vni,
        group,
        ingress: port.ofport,
        ingress_key: port.port_key,
        from_tunnel: 0,
        secret: 0,
    };
    pass(ctx, meta)
}

/// A group's frame from tunnel `tunnel`: the outer `inner` bytes go, the
/// inner frame goes up to the group's local members.
#[inline(always)]
pub fn from_tunnel(ctx: &XdpContext, inner: usize, tunnel: u32, vni: u32, group: u16) -> u32 {
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, inner as i32) } != 0 {
        maps::count_drop(Drop::GeneveTruncated);
        return xdp_action::XDP_DROP;
    }
    let meta =
        FloodMeta { magic: FLOOD_MAGIC, vni, group, ingress: tunnel as u16, ingress_key: 0, from_tunnel: 1, secret: 0 };
    pass(ctx, meta)
}

#[inline(always)]
fn pass(ctx: &XdpContext, mut meta: FloodMeta) -> u32 {
    let Some(&secret) = FLOOD_SECRET.get(0) else {
        maps::count_drop(Drop::Flood);
        return xdp_action::XDP_DROP;
    };
    meta.secret = secret;
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(SHIM as i32)) } != 0 {
        maps::count_drop(Drop::NoHeadroom);
        return xdp_action::XDP_DROP;
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + SHIM + ETH_HLEN > end {
        maps::count_drop(Drop::NoHeadroom);
        return xdp_action::XDP_DROP;
    }
    // [MACs | FLOOD_ETHERTYPE | record | the frame's EtherType, payload]:
    // the MACs move to the front, the rest stays in place.
    unsafe {
        let macs = core::ptr::read_unaligned((data + SHIM) as *const [u8; 12]);
        core::ptr::write_unaligned(data as *mut [u8; 12], macs);
        core::ptr::write_unaligned((data + 12) as *mut u16, FLOOD_ETHERTYPE.to_be());
        core::ptr::write_unaligned((data + ETH_HLEN) as *mut FloodMeta, meta);
    }
    xdp_action::XDP_PASS
}

/// TC ingress of local ports and the uplink: copies the frames the XDP
/// programs passed up with a `FloodMeta`; anything else goes on untouched.
#[classifier]
pub fn xgw_flood(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    let Ok(meta) = record(&ctx) else {
        return TC_ACT_OK;
    };
    // The frame's own EtherType, behind the record; then the record goes
    // (with the 2 bytes after it) and the EtherType takes the flood's place.
    let Ok(ethertype) = ctx.load::<u16>(ETH_HLEN + META) else {
        return TC_ACT_OK;
    };
    if unsafe { bpf_skb_adjust_room(skb, -(SHIM as i32), BPF_ADJ_ROOM_MAC, 0) } != 0
        || ctx.store(12, &ethertype, 0).is_err()
    {
        maps::count_drop(Drop::NoHeadroom);
        return TC_ACT_SHOT;
    }
    if let Err(reason) = copies(&ctx, &meta) {
        maps::count_drop(reason);
    }
    // The original never goes on: it was the group's, not the host's.
    TC_ACT_SHOT
}

/// The frame's `FloodMeta`, if it carries one of xgw's: the flood
/// EtherType, the magic and this datapath's secret (an unset secret, 0,
/// matches nothing), so a frame that only looks like one goes on untouched.
#[inline(always)]
fn record(ctx: &TcContext) -> Result<FloodMeta, ()> {
    if ctx.load::<u16>(12).map_err(|_| ())? != FLOOD_ETHERTYPE.to_be() {
        return Err(());
    }
    let mut meta = FloodMeta::default();
    let at = (&raw mut meta).cast::<c_void>();
    if unsafe { bpf_skb_load_bytes(ctx.skb.skb as *const c_void, ETH_HLEN as u32, at, META as u32) } != 0 {
        return Err(());
    }
    let secret = FLOOD_SECRET.get(0).copied().unwrap_or(0);
    if meta.magic != FLOOD_MAGIC || secret == 0 || meta.secret != secret {
        return Err(());
    }
    Ok(meta)
}

/// What both copy loops' bodies read: `bpf_loop` callbacks, so that the
/// verifier checks each body once instead of once per member.
#[repr(C)]
struct Copies {
    skb: *mut __sk_buff,
    group: *const Group,
    /// The outer headers being rewritten per chassis.
    outer: [u64; OUTER_WORDS_USED],
    base_sum: u32,
    len: u32,
    uplink: u32,
    /// The loop's index 0 is member `first` (tunnels follow local ports).
    first: u32,
    ingress: u16,
    _pad: u16,
}

#[inline(always)]
fn copies(ctx: &TcContext, meta: &FloodMeta) -> Result<(), Drop> {
    let group = unsafe { GROUPS.get(&GroupKey { vni: meta.vni, key: meta.group, _pad: 0 }) }.ok_or(Drop::Flood)?;
    if !storm_allows(meta.ingress, group.rate_pps) {
        return Err(Drop::Storm);
    }
    let len = ctx.len() as usize;
    let mut c = Copies {
        skb: ctx.skb.skb,
        group,
        outer: [0; OUTER_WORDS_USED],
        base_sum: 0,
        len: len as u32,
        uplink: 0,
        first: 0,
        ingress: meta.ingress,
        _pad: 0,
    };
    let local = (group.local as u32).min(MAX_GROUP_MEMBERS as u32);
    let count = (group.count as u32).min(MAX_GROUP_MEMBERS as u32);
    unsafe { bpf_loop(local, local_copy as *mut c_void, &mut c as *mut Copies as *mut c_void, 0) };
    if meta.from_tunnel != 0 || count <= local {
        return Ok(());
    }
    c.uplink = UPLINK.get(0).ok_or(Drop::NoUnderlay)?.ifindex;
    let scratch = FLOOD_SCRATCH.get_ptr_mut(0).ok_or(Drop::NoHeadroom)?;
    c.base_sum = headers(unsafe { &mut *scratch }, meta, len, &mut c.outer)?;
    if unsafe { bpf_skb_change_head(ctx.skb.skb, OUTER as u32, 0) } != 0 {
        return Err(Drop::NoHeadroom);
    }
    c.first = local;
    unsafe { bpf_loop(count - local, tunnel_copy as *mut c_void, &mut c as *mut Copies as *mut c_void, 0) };
    Ok(())
}

/// Member `i`, a local port: the frame as it is, out of its interface.
#[inline(never)]
extern "C" fn local_copy(i: u64, cx: *mut c_void) -> i64 {
    let c = unsafe { &*(cx as *const Copies) };
    let Some(member) = member(c, i) else { return 1 };
    if member == c.ingress {
        return 0;
    }
    let ifindex = PORT_IFINDEX.get(member as u32).copied().unwrap_or(0);
    if ifindex != 0 && unsafe { bpf_clone_redirect(c.skb, ifindex, 0) } == 0 {
        maps::count_tx(member as u32, c.len as usize);
    } else {
        maps::count_drop(Drop::FloodCopy);
    }
    0
}

/// Member `i` of the tunnels: per chassis only the destination differs
/// (next-hop MAC, IP and so the IP checksum).
#[inline(never)]
extern "C" fn tunnel_copy(i: u64, cx: *mut c_void) -> i64 {
    let c = unsafe { &mut *(cx as *mut Copies) };
    let Some(member) = member(c, i) else { return 1 };
    let Some(t) = (unsafe { TUNNELS.get(&(member as u32)) }) else {
        maps::count_drop(Drop::FloodCopy);
        return 0;
    };
    if t.flags & (TUNNEL_IPV6 | TUNNEL_OVN_METADATA) != TUNNEL_OVN_METADATA {
        maps::count_drop(Drop::FloodCopy);
        return 0;
    }
    let dst = [t.remote[12], t.remote[13], t.remote[14], t.remote[15]];
    let mac = t.nexthop_mac;
    let h = c.outer.as_mut_ptr() as *mut u8;
    unsafe {
        core::ptr::write_unaligned(h as *mut [u8; 6], mac);
        // Two halves: the stack must be accessed at aligned offsets, and
        // the address sits at byte 30.
        core::ptr::write_unaligned(h.add(ETH_HLEN + 16) as *mut [u8; 2], [dst[0], dst[1]]);
        core::ptr::write_unaligned(h.add(ETH_HLEN + 18) as *mut [u8; 2], [dst[2], dst[3]]);
        let check = csum::finish(csum::add_words(c.base_sum, &dst));
        core::ptr::write_unaligned(h.add(ETH_HLEN + 10) as *mut [u8; 2], check.to_be_bytes());
    }
    if unsafe { bpf_skb_store_bytes(c.skb, 0, h as *const c_void, OUTER as u32, 0) } != 0 {
        maps::count_drop(Drop::FloodCopy);
        return 0;
    }
    if unsafe { bpf_clone_redirect(c.skb, c.uplink, 0) } == 0 {
        maps::count_tx(member as u32, c.len as usize + OUTER);
    } else {
        maps::count_drop(Drop::FloodCopy);
    }
    0
}

/// The loop's member `i`.
#[inline(always)]
fn member(c: &Copies, i: u64) -> Option<u16> {
    let members = unsafe { &(*c.group).members };
    members.get(c.first as usize + i as usize).copied()
}

/// The tunnel copies' outer headers but for the destination (left zero):
/// a tunnel's template (`encap::template`, here for an IPv4 chassis with
/// OVN's option) stamped with the VNI, ingress = the port's key and egress
/// = the group's, and this frame's lengths and UDP source port. Returns the
/// IP header's checksum sum without the destination.
#[inline(always)]
fn headers(o: &mut EncapOuter, meta: &FloodMeta, len: usize, out: &mut [u64; OUTER_WORDS_USED]) -> Result<u32, Drop> {
    // IPv4-mapped 0.0.0.0: the checksum sum leaves the destination out.
    let mut remote = [0; 16];
    remote[10] = 0xff;
    remote[11] = 0xff;
    let tunnel = Tunnel { remote, nexthop_mac: [0; 6], flags: TUNNEL_OVN_METADATA, _pad: 0, vni: 0 };
    encap::template(o, &tunnel);
    if o.kind != OUTER_IPV4 || o.outer_len as usize != OUTER {
        return Err(Drop::NoUnderlay);
    }
    if len > o.max_frame as usize {
        return Err(Drop::MtuExceeded);
    }
    for w in 0..OUTER_WORDS_USED {
        out[w] = o.outer[w];
    }
    let h = out.as_mut_ptr() as *mut u8;
    // SAFETY: `out` holds OUTER bytes, the Geneve header and option last.
    unsafe { encap::stamp(h.add(OUTER - OVN_OPT_LEN - GENEVE_HLEN), meta.vni, true, meta.ingress_key, meta.group) };
    let ip_len = OUTER - ETH_HLEN + len;
    // RFC 8926 section 3.3: a source port in the dynamic range; one per
    // ingress port and group keeps each flood in order on the underlay.
    let sport = 0xc000 | ((meta.ingress ^ meta.group.rotate_left(7)) & 0x3fff);
    let put = |off: usize, v: u16| unsafe { core::ptr::write_unaligned(h.add(off) as *mut [u8; 2], v.to_be_bytes()) };
    put(ETH_HLEN + 2, ip_len as u16);
    put(ETH_HLEN + IPV4_HLEN_MIN, sport);
    put(ETH_HLEN + IPV4_HLEN_MIN + 4, (ip_len - IPV4_HLEN_MIN) as u16);
    Ok(o.ip_sum + ip_len as u32)
}

/// Storm control: a token bucket per ingress port on this CPU, refilled at
/// `rate` frames per second, holding at most a second's worth.
#[inline(always)]
fn storm_allows(ingress: u16, rate: u32) -> bool {
    if rate == 0 {
        return true;
    }
    let Some(b) = STORM.get_ptr_mut(ingress as u32) else { return false };
    let b = unsafe { &mut *b };
    let now = unsafe { bpf_ktime_get_ns() };
    let full = rate as u64 * 1000;
    let elapsed = now.saturating_sub(b.last_ns).min(1_000_000_000);
    let tokens = if b.last_ns == 0 { full } else { (b.milli_tokens + elapsed * rate as u64 / 1_000_000).min(full) };
    b.last_ns = now;
    if tokens < 1000 {
        b.milli_tokens = tokens;
        return false;
    }
    b.milli_tokens = tokens - 1000;
    true
}
