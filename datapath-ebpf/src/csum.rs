//! Internet checksums (RFC 1071): 16-bit one's-complement sums, folded.
use aya_ebpf::{helpers::bpf_csum_diff, programs::XdpContext};

/// Adds big-endian 16-bit words of `b` to `sum`.
#[inline(always)]
pub fn add_words<const N: usize>(mut sum: u32, b: &[u8; N]) -> u32 {
    let mut i = 0;
    while i + 1 < N {
        sum += u16::from_be_bytes([b[i], b[i + 1]]) as u32;
        i += 2;
    }
    sum
}

/// Folds a 32-bit sum to 16 bits and complements it: the checksum field.
#[inline(always)]
pub fn finish(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The largest block `bpf_csum_diff` sums in one call.
const CHUNK: usize = 512;
/// Frames up to this long can be summed (XDP on a single buffer never
/// carries more than a page).
const MAX_CHUNKS: usize = 8;

/// One's-complement sum of the packet bytes from `off` to its end, or `None`
/// if the packet is longer than `MAX_CHUNKS` chunks. Whole 512-byte chunks,
/// then the remainder in power-of-two blocks: every helper call gets a
/// constant size the verifier can check against the packet bounds.
#[inline(always)]
pub fn sum_to_end(ctx: &XdpContext, mut off: usize) -> Option<u32> {
    let mut sum: u64 = 0;
    for _ in 0..MAX_CHUNKS {
        if ctx.data() + off + CHUNK > ctx.data_end() {
            break;
        }
        sum += block::<CHUNK>(ctx, off)? as u64;
        off += CHUNK;
    }
    if ctx.data() + off + CHUNK <= ctx.data_end() {
        return None;
    }
    sum += tail_block::<256>(ctx, &mut off) as u64;
    sum += tail_block::<128>(ctx, &mut off) as u64;
    sum += tail_block::<64>(ctx, &mut off) as u64;
    sum += tail_block::<32>(ctx, &mut off) as u64;
    sum += tail_block::<16>(ctx, &mut off) as u64;
    sum += tail_block::<8>(ctx, &mut off) as u64;
    sum += tail_block::<4>(ctx, &mut off) as u64;
    // 0-3 bytes left: pad with zeros to a 16-bit boundary (RFC 1071).
    if let Some(b) = crate::parse::ptr_at::<[u8; 2]>(ctx, off) {
        let b = unsafe { *b };
        sum += u16::from_be_bytes(b) as u64;
        off += 2;
    }
    if let Some(b) = crate::parse::ptr_at::<u8>(ctx, off) {
        sum += (unsafe { *b } as u64) << 8;
    }
    // bpf_csum_diff sums 32-bit words in host order; fold to 16 bits and
    // bring the word sum back to network order.
    Some(fold64(sum))
}

#[inline(always)]
fn tail_block<const N: usize>(ctx: &XdpContext, off: &mut usize) -> u32 {
    match block::<N>(ctx, *off) {
        Some(s) => {
            *off += N;
            s
        }
        None => 0,
    }
}

/// `bpf_csum_diff` over `N` packet bytes at `off`, as a 16-bit
/// network-order partial sum.
#[inline(always)]
fn block<const N: usize>(ctx: &XdpContext, off: usize) -> Option<u32> {
    let p = crate::parse::ptr_at::<[u8; N]>(ctx, off)? as *mut u32;
    let s = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p, N as u32, 0) };
    Some(network_order(s as u64))
}

/// A `bpf_csum_diff` result as a 16-bit sum of big-endian words. The helper
/// sums 32-bit loads in host (little-endian) order: folding to 16 bits and
/// swapping the bytes gives the network-order sum (RFC 1071 1.2(B)).
#[inline(always)]
pub fn network_order(s: u64) -> u32 {
    (fold64(s) as u16).swap_bytes() as u32
}

#[inline(always)]
pub fn fold64(mut s: u64) -> u32 {
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u32
}
