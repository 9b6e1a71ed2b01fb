//! xgw's XDP programs. The product's entry points only: each one reads top
//! to bottom as the story of one packet; the work lives in one module per
//! concern. The programs only tests and benchmarks attach (baselines, floors,
//! the sink, `xgw_pass` for veth peers) are in `bench.rs`, in the same object.
#![no_std]
#![no_main]
// What clippy would rewrite here changes what LLVM emits for BPF, where the
// verifier's verdict and the per-packet cost (README, "Performance") depend
// on it: a map key passed by value instead of by reference moves stack slots
// and registers (checked: the object differs); `copy_from_slice` and `swap`
// can bring bounds checks and `memcpy` calls (a byte-by-byte subprogram on
// BPF) where the loops are plain unrolled loads and stores.
#![allow(
    clippy::needless_borrows_for_generic_args,
    clippy::manual_memcpy,
    clippy::needless_range_loop,
    clippy::manual_swap
)]

mod bench;
mod bfd;
mod csum;
mod decap;
mod encap;
mod events;
mod flood;
mod flows;
mod frame;
mod maps;
mod outer;
mod parse;
mod portsec;
mod probe;
mod responder;
mod toobig;

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_head, macros::xdp, programs::XdpContext};
use xgw_common::{
    counters::{Drop, Reply},
    maps::{DEVMAP_UPLINK, FDB_LOCAL, GROUP_FLOOD, GROUP_UNKNOWN, PORTSEC_ON},
};

/// The underlay NIC. Geneve for this gateway is decapsulated and redirected
/// to its local port; everything else goes to the kernel stack unchanged.
#[xdp(frags)]
pub fn xgw_uplink(ctx: XdpContext) -> u32 {
    let Some(uplink) = maps::UPLINK.get(0) else {
        return xdp_action::XDP_PASS;
    };
    let Some(outer) = outer::parse(&ctx, uplink) else {
        return bfd::underlay(&ctx, uplink);
    };
    let len = decap::frame_len(&ctx, &outer);
    let (inner, tunnel, dest) = match decap::geneve(&ctx, &outer, len) {
        Ok(decap::Decap::Port { inner, tunnel, dest }) => (inner, tunnel, dest),
        Ok(decap::Decap::Group { inner, tunnel, vni, group }) => {
            maps::count_rx(tunnel, len);
            return flood::from_tunnel(&ctx, inner, tunnel, vni, group);
        }
        Ok(decap::Decap::Bfd { inner, vni, flags }) => return bfd::geneve(&ctx, &outer, len, inner, vni, flags),
        Err(reason) => {
            // Headers past the first buffer of a multi-buffer frame.
            let split = reason == Drop::GeneveTruncated && len != frame::linear(&ctx);
            maps::count_drop(if split { Drop::Multibuffer } else { reason });
            return xdp_action::XDP_DROP;
        }
    };
    maps::count_rx(tunnel, len);
    // Found before the helper calls, counted after: the lookup overlaps the
    // work before the calls instead of waiting behind them.
    let tx = maps::port_stats(dest.ofport as u32);
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, inner as i32) } != 0 {
        maps::count_drop(Drop::GeneveTruncated);
        return xdp_action::XDP_DROP;
    }
    match maps::DEVMAP.redirect(dest.ofport as u32, 0) {
        Ok(action) => {
            if let Some(s) = tx {
                maps::bump(&mut s.tx, len - inner);
            }
            action
        }
        Err(_) => {
            let n = maps::count_drop_n(Drop::RedirectFailed);
            if events::worth_telling(n) {
                events::xgw_event_redirect_failed(events::UPLINK, dest.ofport as u32, n);
            }
            xdp_action::XDP_DROP
        }
    }
}

/// Each local port (the host side of a VM's interface). Frames for another
/// port of the same VNI are switched directly, frames for a remote binding
/// are encapsulated toward its chassis, and ARP / neighbour solicitations
/// for bound addresses are answered here. Broadcast, multicast and unknown
/// unicast go to the VNI's flood group, if it has one (`flood`). Port
/// security comes first: a frame the port may not send goes nowhere.
#[xdp(frags)]
pub fn xgw_local(ctx: XdpContext) -> u32 {
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let len = frame::len(&ctx);
    let dst = parse::ptr_at::<network_types::eth::EthHdr>(&ctx, 0).map(|eth| unsafe { (*eth).dst_addr });
    let Some((port, flow)) = flows::local(ifindex, dst) else {
        return xdp_action::XDP_PASS;
    };
    maps::count_rx(port.ofport as u32, len);
    let Some(dst) = dst else {
        return drop(Drop::Runt);
    };
    // What the VM may send from, before anything answers or forwards it.
    if port.sec & PORTSEC_ON != 0 {
        if let Err(reason) = portsec::check(&ctx, &port) {
            return drop(reason);
        }
    }
    if dst[0] & 1 != 0 {
        return match responder::answer(&ctx, &port) {
            Some(reply) => {
                maps::count_reply(reply);
                maps::count_tx(port.ofport as u32, ctx.data_end() - ctx.data());
                xdp_action::XDP_TX
            }
            None => flood::from_port(&ctx, &port, GROUP_FLOOD, Drop::Flood),
        };
    }
    let Some(flow) = flow else {
        return flood::from_port(&ctx, &port, GROUP_UNKNOWN, Drop::UnknownDestination);
    };
    let dest = &flow.dest;
    // As in xgw_uplink: found before the helper calls, counted after.
    let tx = maps::port_stats(dest.ofport as u32);
    let (out, pushed) = if dest.kind == FDB_LOCAL {
        if dest.ofport == port.ofport {
            return drop(Drop::Hairpin);
        }
        (dest.ofport as u32, 0)
    } else {
        let Some(outer) = flows::outer(dest.ofport) else {
            return flood::from_port(&ctx, &port, GROUP_UNKNOWN, Drop::UnknownDestination);
        };
        if let Err(reason) = encap::geneve(&ctx, flow, outer, len) {
            maps::count_drop(reason);
            if reason == Drop::MtuExceeded && toobig::reply(&ctx, outer.max_frame, len) {
                maps::count_reply(Reply::TooBig);
                maps::count_tx(port.ofport as u32, ctx.data_end() - ctx.data());
                return xdp_action::XDP_TX;
            }
            return xdp_action::XDP_DROP;
        }
        (DEVMAP_UPLINK, outer.outer_len as usize)
    };
    match maps::DEVMAP.redirect(out, 0) {
        Ok(action) => {
            if let Some(s) = tx {
                maps::bump(&mut s.tx, len + pushed);
            }
            action
        }
        Err(_) => {
            let n = maps::count_drop_n(Drop::RedirectFailed);
            if events::worth_telling(n) {
                events::xgw_event_redirect_failed(events::LOCAL, out, n);
            }
            xdp_action::XDP_DROP
        }
    }
}

#[inline(always)]
fn drop(reason: Drop) -> u32 {
    maps::count_drop(reason);
    xdp_action::XDP_DROP
}

/// Counts every packet by protocol (and bytes), then hands it to the stack
/// unchanged. Attach it anywhere to see what crosses an interface.
#[xdp(frags)]
pub fn xgw_probe(ctx: XdpContext) -> u32 {
    let proto = probe::classify(&ctx);
    maps::count_proto(proto, frame::total(&ctx));
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic; this is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
