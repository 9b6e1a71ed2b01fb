//! Row and transaction identifiers, in RFC 4122 text form on the wire.
use std::{fmt, str::FromStr};

/// A UUID as OVSDB writes it (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`).
/// A small type of our own: the crate needs parsing, printing and ordering,
/// nothing that would justify another dependency.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Uuid(u128);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a UUID: {0:?}")]
pub struct UuidError(pub String);

impl Uuid {
    /// The all-zero UUID: in `monitor_cond_since` it means "no transaction".
    pub const ZERO: Uuid = Uuid(0);

    pub const fn from_u128(v: u128) -> Uuid {
        Uuid(v)
    }

    pub const fn as_u128(self) -> u128 {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl FromStr for Uuid {
    type Err = UuidError;

    fn from_str(s: &str) -> Result<Uuid, UuidError> {
        let bad = || UuidError(s.to_owned());
        let b = s.as_bytes();
        if b.len() != 36 {
            return Err(bad());
        }
        let mut v: u128 = 0;
        for (i, &c) in b.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if c != b'-' {
                    return Err(bad());
                }
                continue;
            }
            let d = (c as char).to_digit(16).ok_or_else(bad)?;
            v = (v << 4) | d as u128;
        }
        Ok(Uuid(v))
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (v >> 96) as u32,
            (v >> 80) as u16,
            (v >> 64) as u16,
            (v >> 48) as u16,
            v & 0xffff_ffff_ffff
        )
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = "0b8a1c2d-3e4f-4a5b-8c6d-7e8f90a1b2c3";
        let u: Uuid = s.parse().unwrap();
        assert_eq!(u.to_string(), s);
        assert_eq!("0B8A1C2D-3E4F-4A5B-8C6D-7E8F90A1B2C3".parse::<Uuid>().unwrap(), u);
        assert!(Uuid::ZERO.is_zero());
        assert_eq!(Uuid::ZERO.to_string(), "00000000-0000-0000-0000-000000000000");
    }

    #[test]
    fn refuses_malformed() {
        for s in [
            "",
            "0b8a1c2d3e4f4a5b8c6d7e8f90a1b2c3",
            "0b8a1c2d-3e4f-4a5b-8c6d-7e8f90a1b2c",
            "0b8a1c2d-3e4f-4a5b-8c6d-7e8f90a1b2cg",
            "0b8a1c2d+3e4f-4a5b-8c6d-7e8f90a1b2c3",
            "0b8a1c2d-3e4f-4a5b-8c6d-7e8f90a1b2c3 ",
        ] {
            assert!(s.parse::<Uuid>().is_err(), "{s:?}");
        }
    }
}
