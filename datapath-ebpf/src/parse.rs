//! Bounds-checked access to packet bytes: the one place the datapath proves to
//! the verifier that a header lies inside the packet.
use aya_ebpf::programs::XdpContext;

/// A pointer to a `T` at `offset`, or `None` if the packet is too short.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

/// As `ptr_at`, for headers the datapath rewrites.
#[inline(always)]
pub fn ptr_at_mut<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    ptr_at::<T>(ctx, offset).map(|p| p as *mut T)
}
