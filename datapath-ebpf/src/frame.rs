//! Frames larger than one buffer (multi-buffer XDP: every program is
//! `#[xdp(frags)]`, loaded with BPF_F_XDP_HAS_FRAGS). Headers are read from
//! the first buffer, which `ctx.data()..ctx.data_end()` spans; the rest of
//! the frame lies in fragments the datapath never touches, only measures
//! (`bpf_xdp_get_buff_len`) and, for the IPv6 UDP checksum, sums
//! (`bpf_xdp_load_bytes`, `sum_frags`).
//!
//! The fast path pays no helper call for this: a frame whose IP length
//! fills the first buffer exactly is taken as a single buffer, and only
//! another frame (a multi-buffer one, a padded one, a non-IP one) asks the
//! kernel for its length.
use aya_ebpf::{
    bindings::xdp_md,
    helpers::{bpf_csum_diff, bpf_xdp_get_buff_len, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use xgw_common::wire::{ETH_HLEN, ETH_P_IPV4, ETH_P_IPV6, IPV6_HLEN};

use crate::{csum, maps::FRAG_SCRATCH, parse::read};

/// Bytes in the first buffer.
#[inline(always)]
pub fn linear(ctx: &XdpContext) -> usize {
    ctx.data_end() - ctx.data()
}

/// The whole frame, fragments included (a helper call).
#[inline(always)]
pub fn total(ctx: &XdpContext) -> usize {
    unsafe { bpf_xdp_get_buff_len(ctx.ctx) as usize }
}

/// The frame's length, for a frame from a local port (an Ethernet frame
/// that is nearly always IP): its first buffer's if its IPv4 or IPv6
/// length says the packet ends exactly there, else the kernel's.
#[inline(always)]
pub fn len(ctx: &XdpContext) -> usize {
    let linear = linear(ctx);
    // EtherType and the first 6 bytes of the IP header, little-endian: the
    // IPv4 total length in bytes 4-5, the IPv6 payload length in bytes 6-7.
    const IPV4: u64 = ETH_P_IPV4.to_be() as u64;
    const IPV6: u64 = ETH_P_IPV6.to_be() as u64;
    if let Some(w) = read::<u64>(ctx, ETH_HLEN - 2) {
        let ip = match w & 0xffff {
            IPV4 => ETH_HLEN + u16::from_be((w >> 32) as u16) as usize,
            IPV6 => ETH_HLEN + IPV6_HLEN + u16::from_be((w >> 48) as u16) as usize,
            _ => 0,
        };
        if ip == linear {
            return linear;
        }
    }
    total(ctx)
}

/// The largest block `bpf_csum_diff` sums in one call, and the scratch
/// buffer's size (`FRAG_SCRATCH`, 4 bytes more for zero padding).
pub const CHUNK: usize = 512;
/// Fragment bytes the IPv6 UDP checksum can sum: 32 chunks of 512. Every
/// frame up to `xgw_common::maps::MAX_FRAME_IPV6` bytes fits, whatever the
/// first buffer holds; a longer multi-buffer frame is dropped
/// (`Drop::Multibuffer`), never sent with a wrong checksum.
pub const MAX_FRAG_CHUNKS: usize = 32;
const _: () = assert!(CHUNK * MAX_FRAG_CHUNKS == xgw_common::maps::MAX_FRAME_IPV6 as usize);

/// One's-complement sum (16-bit, network order, as `csum::sum_to_end`) of
/// the bytes `from..to` beyond the first buffer, or `None` if there are
/// more than `MAX_FRAG_CHUNKS` chunks of them or the kernel refused a read.
/// A subprogram: the loop is verified and laid out once, off the path of
/// single-buffer frames.
#[inline(never)]
pub fn sum_frags(md: *mut xdp_md, from: u32, to: u32) -> Option<u32> {
    let buf = FRAG_SCRATCH.get_ptr_mut(0)? as *mut u8;
    let mut off = from;
    let mut sum: u64 = 0;
    for _ in 0..MAX_FRAG_CHUNKS {
        let left = to.saturating_sub(off);
        if left == 0 {
            return Some(csum::fold64(sum));
        }
        // 1..=CHUNK in a form the verifier can bound (it must not be 0).
        let n = if left as usize >= CHUNK { CHUNK as u32 } else { ((left - 1) & (CHUNK as u32 - 1)) + 1 };
        if unsafe { bpf_xdp_load_bytes(md, off, buf as *mut _, n) } != 0 {
            return None;
        }
        // Zero up to the next 4-byte boundary: `bpf_csum_diff` sums whole
        // words, and a trailing odd byte is the high half of a zero-padded
        // 16-bit word (RFC 1071).
        unsafe { (buf.add(n as usize) as *mut u32).write_unaligned(0) };
        let words = (n + 3) & !3;
        let s = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, buf as *mut u32, words, 0) };
        sum += csum::network_order(s as u64) as u64;
        off += n;
    }
    (to <= off).then(|| csum::fold64(sum))
}
