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

/// The `T` at byte `off` of `p`, which a bounds check through `ptr_at` has
/// already shown to lie in the packet. One load whatever the alignment (the
/// datapath is built with `allows-misaligned-mem-access`), so headers are
/// read and checked a word at a time rather than field by field.
///
/// # Safety
/// `p + off .. p + off + size_of::<T>()` must be inside the checked range.
#[inline(always)]
pub unsafe fn load<T: Copy>(p: *const u8, off: usize) -> T {
    unsafe { (p.add(off) as *const T).read_unaligned() }
}

/// The `T` at `offset` as one load (see `load`), or `None` if the packet is
/// too short.
#[inline(always)]
pub fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    ptr_at::<T>(ctx, offset).map(|p| unsafe { p.read_unaligned() })
}
