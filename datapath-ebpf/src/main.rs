//! xgw's XDP programs. Entry points only: each one reads top to bottom as the
//! story of one packet; the work lives in one module per concern.
#![no_std]
#![no_main]

mod decap;
mod maps;
mod outer;
mod parse;
mod probe;

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_head, macros::xdp, programs::XdpContext};
use xgw_common::counters::Drop;

/// The underlay NIC. Geneve for this gateway is decapsulated and redirected
/// to its local port; everything else goes to the kernel stack unchanged.
#[xdp]
pub fn xgw_uplink(ctx: XdpContext) -> u32 {
    let Some(uplink) = maps::UPLINK.get(0) else {
        return xdp_action::XDP_PASS;
    };
    let Some(outer) = outer::parse(&ctx, uplink) else {
        return xdp_action::XDP_PASS;
    };
    let len = ctx.data_end() - ctx.data();
    let decap = match decap::geneve(&ctx, &outer, len) {
        Ok(d) => d,
        Err(reason) => {
            maps::count_drop(reason);
            return xdp_action::XDP_DROP;
        }
    };
    maps::count_rx(decap.tunnel, len);
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, decap.inner as i32) } != 0 {
        maps::count_drop(Drop::GeneveTruncated);
        return xdp_action::XDP_DROP;
    }
    match maps::DEVMAP.redirect(decap.dest.ofport as u32, 0) {
        Ok(action) => {
            maps::count_tx(decap.dest.ofport as u32, len - decap.inner);
            action
        }
        Err(_) => {
            maps::count_drop(Drop::RedirectFailed);
            xdp_action::XDP_DROP
        }
    }
}

/// Counts every packet by protocol (and bytes), then hands it to the stack
/// unchanged. Attach it anywhere to see what crosses an interface.
#[xdp]
pub fn xgw_probe(ctx: XdpContext) -> u32 {
    let proto = probe::classify(&ctx);
    maps::count_proto(proto, ctx.data_end() - ctx.data());
    xdp_action::XDP_PASS
}

/// Does nothing: the baseline every benchmark compares against.
#[xdp]
pub fn xgw_pass(_ctx: XdpContext) -> u32 {
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
