//! BFD receive fast path: control packets (RFC 5880/5881, and Open vSwitch's
//! BFD inside Geneve) are validated and applied to their session in
//! `BFD_SESSIONS`; state changes and Polls reach the controller through
//! `BFD_EVENTS`. Echo packets a configured router sends to itself through
//! us are reflected with XDP_TX. Transmission and the detection timer are
//! the controller's (XDP cannot originate packets).
//!
//! A packet only ever touches the session of the path it arrived on
//! (tunnel remote + VNI, or ingress interface + source IP): a duplicate
//! tunnel, a stray discriminator or a malformed packet cannot change
//! another session.
use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_ns, programs::XdpContext};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, udp::UdpHdr};
use xgw_common::{
    bfd::{self, Control, DecodeError, Diag, State},
    geneve::{FLAG_CRITICAL, HLEN},
    maps::*,
    wire::*,
};

use crate::{
    maps::{count_bfd, count_bfd_drop, BFD_EVENTS, BFD_PATHS, BFD_SESSIONS},
    outer::Outer,
    parse::{ptr_at, ptr_at_mut},
};

const UDP_PAYLOAD: usize = ETH_HLEN + IPV4_HLEN_MIN + UDP_HLEN;

/// Geneve for this gateway whose inner frame goes to Open vSwitch's BFD MAC:
/// consumed here (`Some`). Any other Geneve packet: `None`, decapsulation
/// proceeds. Only the inner destination MAC is read for those.
#[inline(always)]
pub fn geneve(ctx: &XdpContext, outer: &Outer, len: usize) -> Option<u32> {
    let g = unsafe { *ptr_at::<[u8; HLEN]>(ctx, outer.geneve)? };
    let inner = outer.geneve + HLEN + (g[0] & 0x3f) as usize * 4;
    let dst = unsafe { *ptr_at::<[u8; 6]>(ctx, inner)? };
    if dst != bfd::ovs::DST_MAC {
        return None;
    }
    let path = BfdPathKey { kind: BFD_PATH_GENEVE, id: u32::from_be_bytes([0, g[4], g[5], g[6]]), peer: outer.remote };
    Some(match geneve_control(ctx, outer, len, inner, g[1]) {
        Ok((b, payload)) => receive(&path, &b, payload),
        Err(e) => drop(e),
    })
}

/// What Open vSwitch accepts inside the tunnel (see the probe results in
/// docs): IPv4 without options, UDP 3784, TTL 255, no critical option.
#[inline(always)]
fn geneve_control(ctx: &XdpContext, outer: &Outer, len: usize, inner: usize, gflags: u8) -> Result<([u8; bfd::LEN], usize), DecodeError> {
    if outer.ip_end != len || outer.udp_end != len {
        return Err(DecodeError::Truncated);
    }
    if gflags & FLAG_CRITICAL != 0 {
        return Err(DecodeError::Encapsulation);
    }
    let eth = unsafe { &*ptr_at::<EthHdr>(ctx, inner).ok_or(DecodeError::Truncated)? };
    if u16::from_be(eth.ether_type) != ETH_P_IPV4 {
        return Err(DecodeError::Encapsulation);
    }
    let ip = unsafe { &*ptr_at::<Ipv4Hdr>(ctx, inner + ETH_HLEN).ok_or(DecodeError::Truncated)? };
    if ip.vihl != 0x45 || ip.proto != IPPROTO_UDP {
        return Err(DecodeError::Encapsulation);
    }
    if ip.ttl != bfd::TTL {
        return Err(DecodeError::Ttl);
    }
    let udp = unsafe { &*ptr_at::<UdpHdr>(ctx, inner + ETH_HLEN + IPV4_HLEN_MIN).ok_or(DecodeError::Truncated)? };
    if u16::from_be_bytes(udp.dst) != bfd::CONTROL_PORT {
        return Err(DecodeError::Encapsulation);
    }
    let b = unsafe { *ptr_at::<[u8; bfd::LEN]>(ctx, inner + UDP_PAYLOAD).ok_or(DecodeError::Truncated)? };
    Ok((b, (u16::from_be_bytes(udp.len) as usize).saturating_sub(UDP_HLEN)))
}

/// Traffic on the uplink that is not Geneve for this gateway: single-hop
/// control packets (UDP 3784) and echo packets (UDP 3785) from a configured
/// peer are handled; everything else goes to the kernel stack.
#[inline(always)]
pub fn underlay(ctx: &XdpContext) -> u32 {
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
    if ip.ttl != bfd::TTL {
        return drop(DecodeError::Ttl);
    }
    let Some(b) = ptr_at::<[u8; bfd::LEN]>(ctx, UDP_PAYLOAD) else {
        return drop(DecodeError::Truncated);
    };
    receive_slot(&path, slot, unsafe { &*b }, udp_len.saturating_sub(UDP_HLEN))
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

#[inline(always)]
fn receive(path: &BfdPathKey, b: &[u8; bfd::LEN], payload: usize) -> u32 {
    match unsafe { BFD_PATHS.get(path) } {
        Some(&slot) => receive_slot(path, slot, b, payload),
        None => drop(DecodeError::NoSessionForPeer),
    }
}

/// RFC 5880 section 6.8.6, after the session-independent checks of
/// `Control::decode`. Always consumes the packet.
#[inline(always)]
fn receive_slot(path: &BfdPathKey, slot: u32, b: &[u8; bfd::LEN], payload: usize) -> u32 {
    let Some(s) = BFD_SESSIONS.get_ptr_mut(slot) else {
        return drop(DecodeError::NoSessionForPeer);
    };
    let s = unsafe { &mut *s };
    if s.ctl_flags & BFD_ENABLED == 0 || s.ctl_path != *path {
        return drop(DecodeError::NoSessionForPeer);
    }
    if s.ctl_flags & BFD_ADMIN_DOWN != 0 {
        return drop(DecodeError::AdminDown);
    }
    let c = match Control::decode(b, payload) {
        Ok(c) => c,
        Err(e) => return drop(e),
    };
    if c.your_disc != 0 && c.your_disc != s.ctl_local_disc {
        return drop(DecodeError::UnknownSession);
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
    s.last_rx_ns = unsafe { bpf_ktime_get_ns() };
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
    if c.flags & bfd::FLAG_POLL != 0 {
        s.poll_seq = s.poll_seq.wrapping_add(1);
        let st = State::from_bits(s.state);
        event(s, slot, BFD_EVENT_POLL, st, st);
    }
    xdp_action::XDP_DROP
}

#[inline(always)]
fn event(s: &BfdSession, slot: u32, kind: u32, old: State, new: State) {
    let ev = BfdEvent {
        slot,
        local_disc: s.ctl_local_disc,
        old_state: old as u8,
        new_state: new as u8,
        diag: s.diag,
        remote_state: s.remote_state,
        kind,
    };
    if BFD_EVENTS.output::<BfdEvent>(&ev, 0).is_err() {
        count_bfd(BFD_CNT_EVENTS_LOST);
    }
}
