//! xgw's XDP programs. Entry points only: each one reads top to bottom as the
//! story of one packet; the work lives in one module per concern.
#![no_std]
#![no_main]

mod maps;
mod parse;
mod probe;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

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
