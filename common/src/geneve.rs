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

/// Why a Geneve header could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the fixed header plus Opt Len.
    Truncated,
    /// A version other than 0: RFC 8926 section 3.4 says drop.
    Version(u8),
    /// An option whose length runs past Opt Len.
    OptionLength,
}

/// A Geneve header read from a UDP payload, without copying: what the
/// controller's tools and the tests decode. (The XDP decap walks the same
/// layout itself, under the verifier's bounds rules.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View<'a> {
    pub flags: u8,
    pub protocol: u16,
    pub vni: u32,
    /// The VNI word's last byte (reserved: sent as 0, ignored on receipt).
    pub reserved: u8,
    /// The options, Opt Len bytes.
    pub options: &'a [u8],
    /// What follows the options (for protocol 0x6558, an Ethernet frame).
    pub payload: &'a [u8],
}

/// One option (its data is a multiple of 4 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opt<'a> {
    pub class: u16,
    pub typ: u8,
    pub data: &'a [u8],
}

impl Opt<'_> {
    pub fn critical(&self) -> bool {
        self.typ & OPT_TYPE_CRITICAL != 0
    }

    /// OVN's (ingress, egress) logical port keys, if this is its option.
    pub fn ovn(&self) -> Option<(u16, u16)> {
        if self.class != OVN_OPT_CLASS || self.typ != OVN_OPT_TYPE || self.data.len() != OVN_OPT_DATA_LEN {
            return None;
        }
        let d = self.data;
        Some((u16::from_be_bytes([d[0], d[1]]) & OVN_PORT_KEY_MAX, u16::from_be_bytes([d[2], d[3]])))
    }
}

impl<'a> View<'a> {
    pub fn decode(b: &'a [u8]) -> Result<View<'a>, DecodeError> {
        let h: &[u8; HLEN] = b.first_chunk().ok_or(DecodeError::Truncated)?;
        if h[0] >> 6 != VERSION {
            return Err(DecodeError::Version(h[0] >> 6));
        }
        let opts_len = (h[0] & 0x3f) as usize * 4;
        let (options, payload) = b[HLEN..].split_at_checked(opts_len).ok_or(DecodeError::Truncated)?;
        Ok(View {
            flags: h[1],
            protocol: u16::from_be_bytes([h[2], h[3]]),
            vni: u32::from_be_bytes([0, h[4], h[5], h[6]]),
            reserved: h[7],
            options,
            payload,
        })
    }

    /// The options in order; an option that overruns Opt Len ends the walk
    /// with `Err(OptionLength)`.
    pub fn options(&self) -> Options<'a> {
        Options { rest: self.options }
    }

    /// OVN's option (ingress, egress), the first if several.
    pub fn ovn(&self) -> Option<(u16, u16)> {
        self.options().map_while(Result::ok).find_map(|o| o.ovn())
    }

    /// Whether a receiver that knows only OVN's option must drop this
    /// packet (RFC 8926 section 3.5): an unknown critical option, or
    /// options that do not add up.
    pub fn must_drop(&self) -> bool {
        self.options().any(|o| o.map_or(true, |o| o.critical() && o.ovn().is_none()))
    }
}

pub struct Options<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<Opt<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let parsed = (|| {
            let h: &[u8; OPT_HLEN] = self.rest.first_chunk()?;
            let len = (h[3] & 0x1f) as usize * 4;
            let data = self.rest.get(OPT_HLEN..OPT_HLEN + len)?;
            Some((Opt { class: u16::from_be_bytes([h[0], h[1]]), typ: h[2], data }, OPT_HLEN + len))
        })();
        match parsed {
            Some((o, n)) => {
                self.rest = &self.rest[n..];
                Some(Ok(o))
            }
            None => {
                self.rest = &[];
                Some(Err(DecodeError::OptionLength))
            }
        }
    }
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

    #[test]
    fn view_reads_what_header_and_ovn_option_build() {
        let mut b = header(0xabcdef, 12, FLAG_CRITICAL).to_vec();
        b.extend(ovn_option(0x11, 0x22));
        b.extend([0x00, 0x00, 0x01, 0x00]); // class 0, type 1, no data
        b.extend([0xaa; 14]);
        let v = View::decode(&b).unwrap();
        assert_eq!(
            (v.flags, v.protocol, v.vni, v.options.len(), v.payload),
            (FLAG_CRITICAL, 0x6558, 0xabcdef, 12, &[0xaa; 14][..])
        );
        assert_eq!(v.ovn(), Some((0x11, 0x22)));
        assert!(!v.must_drop());
        assert_eq!(v.options().count(), 2);
    }

    #[test]
    fn view_refuses_what_rfc_8926_refuses() {
        assert_eq!(View::decode(&[0; 7]), Err(DecodeError::Truncated));
        let mut v1 = header(1, 0, 0);
        v1[0] |= 1 << 6;
        assert_eq!(View::decode(&v1), Err(DecodeError::Version(1)));
        // Opt Len 1 word, no option bytes.
        assert_eq!(View::decode(&header(1, 4, 0)), Err(DecodeError::Truncated));
        // An option claiming 2 words of data inside 1 word of options.
        let mut b = header(1, 4, 0).to_vec();
        b.extend([0x01, 0x02, 0x80, 0x02]);
        let v = View::decode(&b).unwrap();
        let mut o = v.options();
        assert_eq!((o.next(), o.next()), (Some(Err(DecodeError::OptionLength)), None));
        assert!(v.must_drop());
        // An unknown critical option.
        let mut b = header(1, 4, FLAG_CRITICAL).to_vec();
        b.extend([0xff, 0xff, 0x80, 0x00]);
        assert!(View::decode(&b).unwrap().must_drop());
    }
}
