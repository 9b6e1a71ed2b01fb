//! BFD receive fast path: control packets (RFC 5880/5881, and Open vSwitch's
//! BFD inside Geneve) are validated and applied to their session in
//! `BFD_SESSIONS`; state changes and Polls reach the controller through
//! `BFD_EVENTS`. Echo packets a configured router sends to itself through
//! us are reflected with XDP_TX. Transmission and the detection timer are
//! the controller's (XDP cannot originate packets). While the controller's
//! heartbeat is stale (it is starved or restarting), a received packet of an
//! Up session is answered here with XDP_TX, at most once per negotiated
//! interval: the peer keeps hearing us, clocked by its own packets.
//!
//! A packet only ever touches the session of the path it arrived on
//! (tunnel remote + VNI, or ingress interface + source IP): a duplicate
//! tunnel, a stray discriminator or a malformed packet cannot change
//! another session.
use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_ns, programs::XdpContext};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, udp::UdpHdr};
use xgw_common::{
    bfd::{self, Control, DecodeError, Diag, State},
    geneve::FLAG_CRITICAL,
    maps::*,
    wire::*,
};

use crate::{
    csum,
    maps::{count_bfd, count_bfd_drop, count_bfd_n, BFD_EVENTS, BFD_PATHS, BFD_SESSIONS},
    outer::Outer,
    parse::{ptr_at, ptr_at_mut},
};

const UDP_PAYLOAD: usize = ETH_HLEN + IPV4_HLEN_MIN + UDP_HLEN;

/// Geneve for this gateway, valid as decapsulation judges it, whose inner
/// frame at `inner` goes to Open vSwitch's BFD MAC: consumed here.
#[inline(always)]
pub fn geneve(ctx: &XdpContext, outer: &Outer, len: usize, inner: usize, vni: u32, gflags: u8) -> u32 {
    let path = BfdPathKey { kind: BFD_PATH_GENEVE, id: vni, peer: outer.remote_bytes() };
    let (b, payload) = match geneve_control(ctx, inner, len, gflags) {
        Ok(v) => v,
        Err(e) => return drop(e),
    };
    let Some(&slot) = (unsafe { BFD_PATHS.get(&path) }) else {
        return drop(DecodeError::NoSessionForPeer);
    };
    match receive_slot(&path, slot, &b, payload) {
        Some(reply) if outer.geneve == ETH_HLEN + IPV4_HLEN_MIN + UDP_HLEN => geneve_reply(ctx, inner, &reply),
        _ => xdp_action::XDP_DROP,
    }
}

/// Turns the received Geneve frame into ours: outer addresses swapped (the
/// UDP ports stay: its source port is the peer's flow hash, the destination
/// 6081), outer TTL 64 and UDP checksum 0 as Open vSwitch sends them; the
/// inner frame keeps its addresses (both ends send 169.254.1.1 -> .0 from
/// UDP 49152 to 3784) but carries our MAC and our control packet. IPv4 outer
/// only (an IPv6 outer needs a full UDP checksum).
#[inline(always)]
fn geneve_reply(ctx: &XdpContext, inner: usize, reply: &[u8; bfd::LEN]) -> u32 {
    // One bounds check per block, constant offsets inside: the verifier
    // follows those (separate checks of overlapping headers get merged by
    // LLVM into ones it cannot).
    let Some(o) = ptr_at_mut::<[u8; UDP_PAYLOAD]>(ctx, 0) else {
        return xdp_action::XDP_DROP;
    };
    let o = unsafe { &mut *o };
    swap_macs(o);
    let tos = o[ETH_HLEN + 1];
    swap_ip(o, 64, tos);
    // Outer UDP checksum 0; inner source MAC ours; inner UDP checksum 0.
    o[UDP_PAYLOAD - 2] = 0;
    o[UDP_PAYLOAD - 1] = 0;
    let ours = [o[6], o[7], o[8], o[9], o[10], o[11]];
    let Some(i) = ptr_at_mut::<[u8; UDP_PAYLOAD + bfd::LEN]>(ctx, inner) else {
        return xdp_action::XDP_DROP;
    };
    let i = unsafe { &mut *i };
    for k in 0..6 {
        i[6 + k] = ours[k];
    }
    i[UDP_PAYLOAD - 2] = 0;
    i[UDP_PAYLOAD - 1] = 0;
    for k in 0..bfd::LEN {
        i[UDP_PAYLOAD + k] = reply[k];
    }
    count_bfd(BFD_CNT_XDP_TX);
    xdp_action::XDP_TX
}

#[inline(always)]
fn swap_macs(f: &mut [u8; UDP_PAYLOAD]) {
    for k in 0..6 {
        let t = f[k];
        f[k] = f[6 + k];
        f[6 + k] = t;
    }
}

/// The IPv4 header after Ethernet: source and destination exchanged, TTL
/// and TOS set, checksum recomputed.
#[inline(always)]
fn swap_ip(f: &mut [u8; UDP_PAYLOAD], ttl: u8, tos: u8) {
    const IP: usize = ETH_HLEN;
    for k in 0..4 {
        let t = f[IP + 12 + k];
        f[IP + 12 + k] = f[IP + 16 + k];
        f[IP + 16 + k] = t;
    }
    f[IP + 1] = tos;
    f[IP + 8] = ttl;
    f[IP + 10] = 0;
    f[IP + 11] = 0;
    let mut sum = 0u32;
    for k in 0..IPV4_HLEN_MIN / 2 {
        sum += u16::from_be_bytes([f[IP + 2 * k], f[IP + 2 * k + 1]]) as u32;
    }
    let c = csum::finish(sum).to_be_bytes();
    f[IP + 10] = c[0];
    f[IP + 11] = c[1];
}

/// What Open vSwitch accepts inside the tunnel (see the probe results in
/// docs): IPv4 without options, unfragmented, UDP 3784, TTL 255, no
/// critical option.
#[inline(always)]
fn geneve_control(
    ctx: &XdpContext,
    inner: usize,
    len: usize,
    gflags: u8,
) -> Result<([u8; bfd::LEN], usize), DecodeError> {
    if gflags & FLAG_CRITICAL != 0 {
        return Err(DecodeError::Encapsulation);
    }
    let eth = unsafe { &*ptr_at::<EthHdr>(ctx, inner).ok_or(DecodeError::Truncated)? };
    if u16::from_be(eth.ether_type) != ETH_P_IPV4 {
        return Err(DecodeError::Encapsulation);
    }
    let ip = unsafe { &*ptr_at::<Ipv4Hdr>(ctx, inner + ETH_HLEN).ok_or(DecodeError::Truncated)? };
    // A fragment is not a whole control packet (found by the fuzzer).
    if ip.vihl != 0x45 || ip.proto != IPPROTO_UDP || u16::from_be_bytes(ip.frags) & 0x3fff != 0 {
        return Err(DecodeError::Encapsulation);
    }
    if ip.ttl != bfd::TTL {
        return Err(DecodeError::Ttl);
    }
    let udp = unsafe { &*ptr_at::<UdpHdr>(ctx, inner + ETH_HLEN + IPV4_HLEN_MIN).ok_or(DecodeError::Truncated)? };
    if u16::from_be_bytes(udp.dst) != bfd::CONTROL_PORT {
        return Err(DecodeError::Encapsulation);
    }
    let (tot_len, udp_len) = (u16::from_be_bytes(ip.tot_len) as usize, u16::from_be_bytes(udp.len) as usize);
    if inner + ETH_HLEN + tot_len > len || udp_len + IPV4_HLEN_MIN > tot_len {
        return Err(DecodeError::Truncated);
    }
    let b = unsafe { *ptr_at::<[u8; bfd::LEN]>(ctx, inner + UDP_PAYLOAD).ok_or(DecodeError::Truncated)? };
    Ok((b, udp_len.saturating_sub(UDP_HLEN)))
}

/// Traffic on the uplink that is not Geneve for this gateway: single-hop
/// control packets (UDP 3784) and echo packets (UDP 3785) from a configured
/// peer are handled; everything else goes to the kernel stack.
#[inline(always)]
pub fn underlay(ctx: &XdpContext, uplink: &Uplink) -> u32 {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return xdp_action::XDP_PASS;
    };
    if u16::from_be(unsafe { (*eth).ether_type }) != ETH_P_IPV4 {
        return xdp_action::XDP_PASS;
    }
    let Some(ip) = ptr_at_mut::<Ipv4Hdr>(ctx, ETH_HLEN) else {
        return xdp_action::XDP_PASS;
    };
    let ip = unsafe { &mut *ip };
    if ip.vihl != 0x45 || ip.proto != IPPROTO_UDP || u16::from_be_bytes(ip.frags) & 0x3fff != 0 {
        return xdp_action::XDP_PASS;
    }
    let Some(udp) = ptr_at::<UdpHdr>(ctx, ETH_HLEN + IPV4_HLEN_MIN) else {
        return xdp_action::XDP_PASS;
    };
    let (port, udp_len) = unsafe { (u16::from_be_bytes((*udp).dst), u16::from_be_bytes((*udp).len) as usize) };
    if port != bfd::CONTROL_PORT && port != bfd::ECHO_PORT {
        return xdp_action::XDP_PASS;
    }
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let path = BfdPathKey { kind: BFD_PATH_SINGLE_HOP, id: ifindex, peer: ipv4_mapped(ip.src_addr) };
    // Not a peer of ours: maybe a BFD daemon on this host wants it.
    let Some(&slot) = (unsafe { BFD_PATHS.get(&path) }) else {
        return xdp_action::XDP_PASS;
    };
    if port == bfd::ECHO_PORT {
        // An echo comes back to its sender's own address (RFC 5880 section
        // 6.4); anything else on 3785 is not for us to bounce.
        if ip.src_addr != ip.dst_addr {
            return xdp_action::XDP_PASS;
        }
        return echo(ctx, eth as *mut EthHdr, ip, slot);
    }
    // A control packet to another address is not ours to answer, even
    // from a peer (RFC 5881 section 4: sent to the neighbour's address).
    if ip.dst_addr != uplink.ip4 || uplink.flags & UPLINK_HAS_IP4 == 0 {
        return xdp_action::XDP_PASS;
    }
    if ip.ttl != bfd::TTL {
        return drop(DecodeError::Ttl);
    }
    // The answer reuses these headers: lengths that disagree with the frame
    // (or each other) would go back out as a malformed packet.
    let tot_len = u16::from_be_bytes(ip.tot_len) as usize;
    if ETH_HLEN + tot_len > ctx.data_end() - ctx.data() || udp_len + IPV4_HLEN_MIN > tot_len {
        return drop(DecodeError::Truncated);
    }
    let Some(b) = ptr_at::<[u8; bfd::LEN]>(ctx, UDP_PAYLOAD) else {
        return drop(DecodeError::Truncated);
    };
    let Some(reply) = receive_slot(&path, slot, unsafe { &*b }, udp_len.saturating_sub(UDP_HLEN)) else {
        return xdp_action::XDP_DROP;
    };
    // Answered from our session's source port (RFC 5881 section 4), TTL 255
    // and TOS CS6 (section 5), UDP checksum 0 (IPv4).
    let Some(s) = BFD_SESSIONS.get(slot) else {
        return xdp_action::XDP_DROP;
    };
    let sport = s.ctl_sport.to_be_bytes();
    let Some(f) = ptr_at_mut::<[u8; UDP_PAYLOAD + bfd::LEN]>(ctx, 0) else {
        return xdp_action::XDP_DROP;
    };
    let f = unsafe { &mut *f };
    let (h, b) = f.split_at_mut(UDP_PAYLOAD);
    let Ok(h) = <&mut [u8; UDP_PAYLOAD]>::try_from(h) else {
        return xdp_action::XDP_DROP;
    };
    swap_macs(h);
    swap_ip(h, bfd::TTL, bfd::ovs::TOS);
    const UDP: usize = ETH_HLEN + IPV4_HLEN_MIN;
    let dport = bfd::CONTROL_PORT.to_be_bytes();
    (h[UDP], h[UDP + 1], h[UDP + 2], h[UDP + 3], h[UDP + 6], h[UDP + 7]) =
        (sport[0], sport[1], dport[0], dport[1], 0, 0);
    for k in 0..bfd::LEN {
        if let Some(x) = b.get_mut(k) {
            *x = reply[k];
        }
    }
    count_bfd(BFD_CNT_XDP_TX);
    xdp_action::XDP_TX
}

/// Sends the echo back the way a router forwarding it would: to the MAC it
/// came from, TTL decremented (FRR answers TTL-255 echoes itself, as another
/// system's, and counts only its own that come back with less).
#[inline(always)]
fn echo(ctx: &XdpContext, eth: *mut EthHdr, ip: &mut Ipv4Hdr, slot: u32) -> u32 {
    let Some(s) = BFD_SESSIONS.get(slot) else {
        return xdp_action::XDP_PASS;
    };
    let _ = ctx;
    if s.ctl_flags & (BFD_ENABLED | BFD_ECHO) != BFD_ENABLED | BFD_ECHO || ip.ttl <= 1 {
        return xdp_action::XDP_PASS;
    }
    unsafe {
        let src = (*eth).src_addr;
        (*eth).src_addr = (*eth).dst_addr;
        (*eth).dst_addr = src;
    }
    ip.ttl -= 1;
    // RFC 1624 incremental update for the TTL byte (high byte of its word),
    // as the kernel's ip_decrease_ttl does.
    let mut c = u16::from_be_bytes(ip.check) as u32 + 0x0100;
    c = (c & 0xffff) + (c >> 16);
    ip.check = (c as u16).to_be_bytes();
    count_bfd(BFD_CNT_ECHO_REFLECTED);
    xdp_action::XDP_TX
}

#[inline(always)]
fn drop(e: DecodeError) -> u32 {
    count_bfd_drop(e);
    xdp_action::XDP_DROP
}

/// Counts a discarded packet; no answer.
#[inline(always)]
fn refuse(e: DecodeError) -> Option<[u8; bfd::LEN]> {
    count_bfd_drop(e);
    None
}

/// RFC 5880 section 6.8.6, after the session-independent checks of
/// `Control::decode`. The packet is consumed; `Some` is the control packet
/// to send back in its place (see `answer`).
#[inline(always)]
fn receive_slot(path: &BfdPathKey, slot: u32, b: &[u8; bfd::LEN], payload: usize) -> Option<[u8; bfd::LEN]> {
    let Some(s) = BFD_SESSIONS.get_ptr_mut(slot) else {
        return refuse(DecodeError::NoSessionForPeer);
    };
    let s = unsafe { &mut *s };
    if s.ctl_flags & BFD_ENABLED == 0 || s.ctl_path != *path {
        return refuse(DecodeError::NoSessionForPeer);
    }
    if s.ctl_flags & BFD_ADMIN_DOWN != 0 {
        return refuse(DecodeError::AdminDown);
    }
    let c = match Control::decode(b, payload) {
        Ok(c) => c,
        Err(e) => return refuse(e),
    };
    if c.your_disc != 0 && c.your_disc != s.ctl_local_disc {
        return refuse(DecodeError::UnknownSession);
    }
    let mut state = State::from_bits(s.state);
    // The controller's detection timer declared the session Down: apply it
    // before this packet, so the packet is judged against Down.
    let down_seq = s.ctl_down_seq;
    if s.down_ack != down_seq {
        s.down_ack = down_seq;
        if state != State::Down {
            state = State::Down;
            s.state = State::Down as u8;
            s.diag = Diag::ControlDetectionTimeExpired as u8;
        }
    }
    s.remote_disc = c.my_disc;
    s.remote_state = c.state as u8;
    s.remote_diag = c.diag as u8;
    s.remote_min_tx = c.desired_min_tx;
    s.remote_min_rx = c.required_min_rx;
    s.remote_min_echo_rx = c.required_min_echo_rx;
    s.remote_mult = c.detect_mult;
    s.remote_flags = c.flags;
    s.rx_packets += 1;
    let now = unsafe { bpf_ktime_get_ns() };
    s.last_rx_ns = now;
    count_bfd(BFD_CNT_RX);
    if c.flags & bfd::FLAG_FINAL != 0 {
        s.final_seq = s.final_seq.wrapping_add(1);
    }
    if let Some((next, diag)) = bfd::on_receive(state, c.state) {
        s.state = next as u8;
        // Up keeps the diagnostic of the last Down, as Open vSwitch does.
        if next == State::Down {
            s.diag = diag as u8;
        }
        s.changes = s.changes.wrapping_add(1);
        event(s, slot, BFD_EVENT_STATE, state, next);
    }
    let poll = c.flags & bfd::FLAG_POLL != 0;
    if poll {
        s.poll_seq = s.poll_seq.wrapping_add(1);
        let st = State::from_bits(s.state);
        event(s, slot, BFD_EVENT_POLL, st, st);
    }
    answer(s, poll, now)
}

/// Receive-clocked transmission: the controller sends at 75-100 % of the
/// interval, so a heartbeat older than 1.25 intervals means it missed its
/// slot. Then an Up session answers the peer's packet itself, no more often
/// than 75 % of the interval (the controller's own lower bound), except a
/// Final, which is owed at once. The controller keeps the only say on state:
/// this answers with the state the session is in, it never moves it.
#[inline(always)]
fn answer(s: &mut BfdSession, poll: bool, now: u64) -> Option<[u8; bfd::LEN]> {
    if s.state != State::Up as u8 || s.down_ack != s.ctl_down_seq || s.remote_min_rx == 0 {
        return None;
    }
    let us = if s.ctl_adv_tx_us > s.remote_min_rx { s.ctl_adv_tx_us } else { s.remote_min_rx };
    let interval = us as u64 * 1000;
    if now.saturating_sub(s.ctl_last_tx_ns) <= interval + interval / 4 {
        return None;
    }
    if !poll && now.saturating_sub(s.xdp_tx_ns) < interval - interval / 4 {
        return None;
    }
    s.xdp_tx_ns = now;
    s.xdp_tx_packets += 1;
    let echo = if s.ctl_flags & BFD_ECHO != 0 { s.ctl_adv_rx_us } else { 0 };
    Some(
        Control {
            diag: Diag::from_bits(s.diag),
            state: State::Up,
            flags: if poll { bfd::FLAG_FINAL } else { 0 },
            detect_mult: s.ctl_mult,
            my_disc: s.ctl_local_disc,
            your_disc: s.remote_disc,
            desired_min_tx: s.ctl_adv_tx_us,
            required_min_rx: s.ctl_adv_rx_us,
            required_min_echo_rx: echo,
        }
        .encode(),
    )
}

#[inline(always)]
fn event(s: &BfdSession, slot: u32, kind: u32, old: State, new: State) {
    // As four words: built field by field, LLVM merges the byte fields into
    // stores the verifier rejects as misaligned on the stack.
    let states = u32::from_le_bytes([old as u8, new as u8, s.diag, s.remote_state]);
    // SAFETY: BfdEvent is repr(C), four u32-sized words, no padding.
    let ev: BfdEvent = unsafe { core::mem::transmute([slot, s.ctl_local_disc, states, kind]) };
    if BFD_EVENTS.output(&ev, 0).is_err() {
        let n = count_bfd_n(BFD_CNT_EVENTS_LOST);
        if crate::events::worth_telling(n) {
            crate::events::xgw_event_bfd_events_full(slot, n);
        }
    }
}
