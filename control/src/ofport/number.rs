//! The OpenFlow port number as a type that cannot hold an invalid value.
//!
//! OpenFlow 1.0 ports are 16 bits. 0 is not a port, and everything from
//! `OFPP_MAX` (0xff00) up is reserved: `OFPP_IN_PORT` .. `OFPP_NONE` (0xffff).
//! In 2018 OVS's allocator returned `OFPP_NONE` when it ran dry and nobody
//! checked; here no such value can be constructed, so no caller can forget.

use std::fmt;
use std::num::NonZeroU16;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A usable OpenFlow port number: 1..=0xfeff.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct OfPort(NonZeroU16);

/// `OFPP_MAX`: the first reserved number.
pub const OFPP_MAX: u16 = 0xff00;

/// Returned when a raw value is not a usable OpenFlow port number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{value} is not a usable OpenFlow port number (1..={max})", max = OfPort::MAX.get())]
pub struct InvalidOfPort {
    pub value: u16,
}

impl OfPort {
    /// Lowest usable number.
    pub const MIN: OfPort = OfPort(NonZeroU16::MIN);
    /// Highest usable number, `OFPP_MAX - 1`.
    pub const MAX: OfPort = match NonZeroU16::new(OFPP_MAX - 1) {
        Some(n) => OfPort(n),
        None => unreachable!(),
    };
    /// Highest number handed out automatically. As in OVS, the upper half
    /// stays free for operators who pin numbers with `ofport_request`, so a
    /// pinned number never collides with one the allocator chose on its own.
    pub const AUTO_MAX: OfPort = match NonZeroU16::new(0x7fff) {
        Some(n) => OfPort(n),
        None => unreachable!(),
    };

    /// Checks a raw number; rejects 0 and the reserved range 0xff00..=0xffff.
    pub const fn new(value: u16) -> Result<Self, InvalidOfPort> {
        match NonZeroU16::new(value) {
            Some(n) if value < OFPP_MAX => Ok(OfPort(n)),
            _ => Err(InvalidOfPort { value }),
        }
    }

    pub const fn get(self) -> u16 {
        self.0.get()
    }

    /// Whether the allocator may choose this number on its own.
    pub const fn is_auto(self) -> bool {
        self.get() <= Self::AUTO_MAX.get()
    }
}

impl TryFrom<u16> for OfPort {
    type Error = InvalidOfPort;
    fn try_from(value: u16) -> Result<Self, Self::Error> {
        OfPort::new(value)
    }
}

impl From<OfPort> for u16 {
    fn from(port: OfPort) -> u16 {
        port.get()
    }
}

impl fmt::Display for OfPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

impl fmt::Debug for OfPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OfPort({})", self.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_zero_and_reserved_range() {
        assert_eq!(OfPort::new(0), Err(InvalidOfPort { value: 0 }));
        for v in [0xff00, 0xfff8, 0xfffe, 0xffff] {
            assert_eq!(OfPort::new(v), Err(InvalidOfPort { value: v }));
        }
        assert_eq!(OfPort::new(1).map(OfPort::get), Ok(1));
        assert_eq!(OfPort::new(0xfeff).map(OfPort::get), Ok(0xfeff));
        assert!(OfPort::AUTO_MAX.is_auto());
        assert!(!OfPort::new(0x8000).is_ok_and(OfPort::is_auto));
    }

    #[test]
    fn serde_refuses_invalid_numbers() {
        assert!(serde_json::from_str::<OfPort>("65535").is_err());
        assert!(serde_json::from_str::<OfPort>("0").is_err());
        let p: OfPort = serde_json::from_str("42").expect("valid");
        assert_eq!(serde_json::to_string(&p).expect("serialize"), "42");
    }
}
