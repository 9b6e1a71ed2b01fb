//! Geneve (RFC 8926) and the OVN option carried in it.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Ver|  Opt Len  |O|C|    Rsvd.  |          Protocol Type        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |        Virtual Network Identifier (VNI)       |    Reserved   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Variable-Length Options                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! Option:
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Option Class         |      Type     |R|R|R| Length  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Variable-Length Option Data                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! Opt Len and Length count 4-byte words, excluding the header itself.
//! The high bit of an option's Type marks it critical: a receiver that does
//! not understand a critical option must drop the packet.

/// Fixed Geneve header length.
pub const HLEN: usize = 8;
pub const VERSION: u8 = 0;
/// Flags byte (second byte of the header).
pub const FLAG_OAM: u8 = 0x80;
pub const FLAG_CRITICAL: u8 = 0x40;
/// Opt Len is 6 bits of 4-byte words: at most 252 bytes of options.
pub const MAX_OPTS_LEN: usize = 63 * 4;
pub const OPT_HLEN: usize = 4;
pub const OPT_TYPE_CRITICAL: u8 = 0x80;

/// OVN's option: class 0x0102 (Open Virtual Networking), type 0x80 (critical),
/// 4 bytes of data: 1 reserved bit, 15-bit logical ingress port key, 16-bit
/// logical egress port key.
pub const OVN_OPT_CLASS: u16 = 0x0102;
pub const OVN_OPT_TYPE: u8 = 0x80;
pub const OVN_OPT_DATA_LEN: usize = 4;
/// The whole OVN option (header and data) in bytes.
pub const OVN_OPT_LEN: usize = OPT_HLEN + OVN_OPT_DATA_LEN;
/// OVN logical port keys are 15 bits on the ingress side.
pub const OVN_PORT_KEY_MAX: u16 = 0x7fff;
pub const VNI_MAX: u32 = (1 << 24) - 1;

/// Builds the fixed header: `opts_len` in bytes (a multiple of 4).
pub const fn header(vni: u32, opts_len: usize, flags: u8) -> [u8; HLEN] {
    let p = crate::wire::ETH_P_TEB.to_be_bytes();
    [
        (VERSION << 6) | ((opts_len / 4) as u8 & 0x3f),
        flags,
        p[0],
        p[1],
        (vni >> 16) as u8,
        (vni >> 8) as u8,
        vni as u8,
        0,
    ]
}

/// Builds the OVN option carrying `ingress` and `egress` logical port keys.
pub const fn ovn_option(ingress: u16, egress: u16) -> [u8; OVN_OPT_LEN] {
    let c = OVN_OPT_CLASS.to_be_bytes();
    let i = (ingress & OVN_PORT_KEY_MAX).to_be_bytes();
    let e = egress.to_be_bytes();
    [c[0], c[1], OVN_OPT_TYPE, (OVN_OPT_DATA_LEN / 4) as u8, i[0], i[1], e[0], e[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_matches_rfc_8926_layout() {
        // Ver 0, Opt Len 2 words, no flags, protocol 0x6558, VNI 5001 (0x001389).
        assert_eq!(header(5001, 8, 0), [0x02, 0x00, 0x65, 0x58, 0x00, 0x13, 0x89, 0x00]);
        assert_eq!(header(VNI_MAX, 0, FLAG_OAM | FLAG_CRITICAL), [0x00, 0xc0, 0x65, 0x58, 0xff, 0xff, 0xff, 0x00]);
    }

    #[test]
    fn ovn_option_matches_ovn_layout() {
        // Class 0x0102, type 0x80 (critical), length 1 word, ingress 0x0123, egress 0x8001.
        assert_eq!(ovn_option(0x0123, 0x8001), [0x01, 0x02, 0x80, 0x01, 0x01, 0x23, 0x80, 0x01]);
        // The reserved top bit of the ingress key is never set.
        assert_eq!(ovn_option(0xffff, 0)[4], 0x7f);
    }
}
