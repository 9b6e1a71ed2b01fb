//! BFD control packet decode (RFC 5880 4.1 / 6.8.6), the code XDP and the
//! controller share: never panics, and what it accepts encodes back to a
//! packet that decodes to the same thing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use xgw_common::bfd::{Control, LEN};

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<2>() else { return };
    let udp_payload = u16::from_be_bytes(*len) as usize;
    let mut b = [0u8; LEN];
    let n = rest.len().min(LEN);
    b[..n].copy_from_slice(&rest[..n]);
    if let Ok(c) = Control::decode(&b, udp_payload) {
        let again = Control::decode(&c.encode(), LEN).expect("an accepted packet re-encodes to an accepted packet");
        assert_eq!(again, c);
    }
});
