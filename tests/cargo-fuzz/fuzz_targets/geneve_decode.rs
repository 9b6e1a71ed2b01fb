//! Geneve header and option decode (RFC 8926), the reader the tests and
//! tools share: never panics, accounts for every byte, and what it reads
//! re-encodes (with the builders the gateway's tests use) to the input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use xgw_common::geneve::{header, ovn_option, DecodeError, View, HLEN, OPT_HLEN};

fuzz_target!(|data: &[u8]| {
    let v = match View::decode(data) {
        Ok(v) => v,
        Err(DecodeError::Truncated) => {
            return assert!(data.len() < HLEN || data.len() < HLEN + (data[0] & 0x3f) as usize * 4)
        }
        Err(DecodeError::Version(n)) => return assert_eq!(n, data[0] >> 6),
        Err(e) => panic!("decode itself never reports {e:?}"),
    };
    assert_eq!(HLEN + v.options.len() + v.payload.len(), data.len());
    let h = header(v.vni, v.options.len(), v.flags);
    assert_eq!((&h[..2], &h[4..7]), (&data[..2], &data[4..7]), "fixed header re-encodes, protocol aside");
    assert_eq!(u16::from_be_bytes([data[2], data[3]]), v.protocol);

    // The options tile Opt Len exactly, or the walk ends on OptionLength.
    let mut used = 0;
    let mut broken = false;
    for o in v.options() {
        match o {
            Ok(o) => {
                assert_eq!(o.data.len() % 4, 0);
                let at = used;
                used += OPT_HLEN + o.data.len();
                assert_eq!(&v.options[at + OPT_HLEN..used], o.data);
                if let Some((ingress, egress)) = o.ovn() {
                    let mut want = ovn_option(ingress, egress);
                    // Reserved bits (R R R of the length byte, the key's
                    // top bit) are ignored on receipt (RFC 8926 3.5).
                    want[3] |= v.options[at + 3] & 0xe0;
                    want[4] |= v.options[at + 4] & 0x80;
                    assert_eq!(want[..], v.options[at..used]);
                }
            }
            Err(e) => {
                assert_eq!(e, DecodeError::OptionLength);
                broken = true;
            }
        }
    }
    assert!(broken || used == v.options.len());
    if broken {
        assert!(v.must_drop(), "options that do not add up must be dropped");
    }
});
