//! Geneve decapsulation (RFC 8926): validate the header, walk the options,
//! and find the local port the inner frame is for.
use aya_ebpf::programs::XdpContext;
use network_types::eth::EthHdr;
use xgw_common::{
    bfd,
    counters::Drop,
    geneve::*,
    maps::{FdbEntry, FDB_GROUP},
    wire::ETH_P_TEB,
};

use crate::{
    flows, frame,
    outer::Outer,
    parse::{ptr_at, read},
};

/// A packet this gateway accepted.
pub enum Decap {
    /// Strip `inner` bytes of outer headers and deliver to `dest`; it
    /// arrived on tunnel `tunnel`.
    Port { inner: usize, tunnel: u32, dest: FdbEntry },
    /// For multicast group `group` of `vni` (OVN's egress keys >= 32768):
    /// strip `inner` bytes and pass the frame up for flooding to the
    /// group's local members.
    Group { inner: usize, tunnel: u32, vni: u32, group: u16 },
    /// Open vSwitch's BFD for the session of (remote, `vni`): the inner
    /// frame at `inner` goes to the BFD receive path, not to a port.
    Bfd { inner: usize, vni: u32, flags: u8 },
}

/// Version (the top two bits of byte 0) and Protocol Type (bytes 2-3) of
/// the fixed header as a little-endian word, checked in one compare.
const VERSION_PROTOCOL_MASK: u64 = u64::from_le_bytes([0xc0, 0, 0xff, 0xff, 0, 0, 0, 0]);
const VERSION_PROTOCOL: u64 = {
    let p = ETH_P_TEB.to_be_bytes();
    u64::from_le_bytes([VERSION << 6, 0, p[0], p[1], 0, 0, 0, 0])
};

/// Options walked per packet. OVN sends one; a handful covers every
/// encapsulator we know of, and a short bound keeps the verifier's work (and
/// the worst-case packet cost) small. What lies beyond is ignored when the
/// header's C bit says no option is critical, and dropped otherwise: an
/// unvetted critical option must never be forwarded (RFC 8926 section 3.5).
pub const MAX_WALK: usize = 8;

#[inline(always)]
pub fn geneve(ctx: &XdpContext, outer: &Outer, len: usize) -> Result<Decap, Drop> {
    // A frame cut short (or padded) is not what its sender meant: never
    // forward part of one. `len` is the whole frame's (`frame_len`).
    if outer.ip_end != len || outer.udp_end != len {
        return Err(Drop::OuterLength);
    }
    // The fixed header as one little-endian word: Ver and Opt Len in byte
    // 0, flags in byte 1, Protocol Type in bytes 2-3, VNI in bytes 4-6.
    let g = read::<u64>(ctx, outer.geneve).ok_or(Drop::GeneveTruncated)?;
    if g & VERSION_PROTOCOL_MASK != VERSION_PROTOCOL {
        return Err(if g & 0xc0 != (VERSION as u64) << 6 { Drop::GeneveVersion } else { Drop::GeneveProtocol });
    }
    let flags = (g >> 8) as u8;
    let opts_len = (g & 0x3f) as usize * 4;
    let vni = u32::from_be((g >> 32) as u32) >> 8;
    let opts = outer.geneve + HLEN;
    let inner = opts + opts_len;
    // Options before the inner header: had the inner header's bounds check
    // come first, LLVM would drop the options' own as implied, and the
    // verifier cannot follow that across the variable Opt Len.
    let egress = match opts_len {
        0 => 0,
        OVN_OPT_LEN => match only_ovn_option(ctx, opts)? {
            Some(egress) => egress,
            // Opaque to LLVM: knowing the length is 8, it would drop bounds
            // checks in the walk as implied by the one above, which the
            // verifier cannot follow across the walk's variable offsets.
            None => ovn_egress_key(ctx, opts, core::hint::black_box(opts_len), flags & FLAG_CRITICAL != 0)?,
        },
        _ => ovn_egress_key(ctx, opts, opts_len, flags & FLAG_CRITICAL != 0)?,
    };
    let mac = unsafe { (*ptr_at::<EthHdr>(ctx, inner).ok_or(Drop::GeneveTruncated)?).dst_addr };
    // BFD passes every check above too; its session (BFD_PATHS), not the
    // tunnel table, decides whether anyone listens.
    if mac == bfd::ovs::DST_MAC {
        return Ok(Decap::Bfd { inner, vni, flags });
    }

    let (tunnel, dest) = flows::decap(outer.remote, vni, egress, mac)?;
    if dest.kind == FDB_GROUP {
        return Ok(Decap::Group { inner, tunnel, vni, group: dest.port_key });
    }
    Ok(Decap::Port { inner, tunnel, dest })
}

/// The frame's length for `geneve`: the first buffer's, unless the outer
/// lengths disagree with it (a multi-buffer frame, or a bad one); only then
/// is the kernel asked for the whole frame's.
#[inline(always)]
pub fn frame_len(ctx: &XdpContext, outer: &Outer) -> usize {
    let len = frame::linear(ctx);
    if outer.ip_end != len || outer.udp_end != len {
        return frame::total(ctx);
    }
    len
}

/// What OVN sends, and so nearly every packet: exactly one option, its own.
/// Checked as one word instead of a walk; `None` sends anything else (in
/// those same 8 bytes) to the walk.
#[inline(always)]
fn only_ovn_option(ctx: &XdpContext, start: usize) -> Result<Option<u16>, Drop> {
    const HEADER: [u8; OPT_HLEN] = {
        let c = OVN_OPT_CLASS.to_be_bytes();
        [c[0], c[1], OVN_OPT_TYPE, (OVN_OPT_DATA_LEN / 4) as u8]
    };
    // The header's three reserved bits are ignored, as the walk ignores them.
    const MASK: u32 = u32::from_le_bytes([0xff, 0xff, 0xff, 0x1f]);
    let o = read::<u64>(ctx, start).ok_or(Drop::GeneveTruncated)?;
    if o as u32 & MASK != u32::from_le_bytes(HEADER) {
        return Ok(None);
    }
    Ok(Some(u16::from_be((o >> 48) as u16)))
}

/// Walks the options: returns OVN's egress port key (0 if absent), rejects
/// any other critical option and lengths that do not add up to Opt Len.
#[inline(always)]
fn ovn_egress_key(ctx: &XdpContext, start: usize, len: usize, critical: bool) -> Result<u16, Drop> {
    let mut off = 0;
    let mut egress = 0;
    for _ in 0..MAX_WALK {
        if off >= len {
            break;
        }
        let h = unsafe { *ptr_at::<[u8; OPT_HLEN]>(ctx, start + off).ok_or(Drop::GeneveTruncated)? };
        let data_len = (h[3] & 0x1f) as usize * 4;
        if u16::from_be_bytes([h[0], h[1]]) == OVN_OPT_CLASS && h[2] == OVN_OPT_TYPE && data_len == OVN_OPT_DATA_LEN {
            let d =
                unsafe { *ptr_at::<[u8; OVN_OPT_DATA_LEN]>(ctx, start + off + OPT_HLEN).ok_or(Drop::GeneveTruncated)? };
            egress = u16::from_be_bytes([d[2], d[3]]);
        } else if h[2] & OPT_TYPE_CRITICAL != 0 {
            return Err(Drop::GeneveCriticalOption);
        }
        off += OPT_HLEN + data_len;
    }
    if off < len && critical {
        return Err(Drop::GeneveOptionLimit);
    }
    if off > len {
        return Err(Drop::GeneveOptionLength);
    }
    Ok(egress)
}
