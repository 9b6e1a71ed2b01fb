//! BFD (RFC 5880) control packets and the receive half of the state machine,
//! written once for the XDP datapath (no_std, no allocation, fixed-size
//! buffers the verifier can follow), the controller and the tests.
//!
//! Generic BFD control packet (RFC 5880 section 4.1), without authentication:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       My Discriminator                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      Your Discriminator                       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Desired Min TX Interval                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                   Required Min RX Interval                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Required Min Echo RX Interval                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! Intervals are in microseconds. xgw never sets A (authentication), D
//! (demand) or M (multipoint), and rejects packets that carry A or M.

/// The only protocol version (RFC 5880 section 4.1).
pub const VERSION: u8 = 1;
/// A control packet without authentication section.
pub const LEN: usize = 24;
/// RFC 5881 section 5 / RFC 5880 section 6.8.6: single-hop packets must be
/// sent with TTL 255 and received with TTL 255 (GTSM). Open vSwitch applies
/// the same rule to BFD inside tunnels.
pub const TTL: u8 = 255;
/// RFC 5881 section 4: the source port of control packets.
pub const SRC_PORT_MIN: u16 = 49152;

/// Open vSwitch's BFD over tunnels (`lib/bfd.c`): the inner frame it sends
/// and the one it recognises. Only TTL 255 and UDP 3784 are checked by OVS on
/// receive; xgw sends exactly these values so either side can match on them.
pub mod ovs {
    /// `bfd_dst_mac` default: Nicira's OUI, the MAC OVS steers to its BFD code.
    pub const DST_MAC: [u8; 6] = [0x00, 0x23, 0x20, 0x00, 0x00, 0x01];
    /// `bfd_src_ip` / `bfd_dst_ip` defaults; both ends send the same pair.
    pub const SRC_IP: [u8; 4] = [169, 254, 1, 1];
    pub const DST_IP: [u8; 4] = [169, 254, 1, 0];
    /// Inner IPv4 TOS: CS6 (network control), as OVS sets it.
    pub const TOS: u8 = 0xc0;
    /// OVS defaults (`vswitchd/vswitch.xml`): milliseconds, multiplier.
    pub const MIN_TX_MS: u32 = 100;
    pub const MIN_RX_MS: u32 = 1000;
    pub const MULT: u8 = 3;
}

/// RFC 5880 section 6.8.3: while a session is not Up, Desired Min TX must be
/// at least one second.
pub const SLOW_TX_US: u32 = 1_000_000;

/// Session states (RFC 5880 section 4.1, `Sta`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    AdminDown = 0,
    Down = 1,
    Init = 2,
    Up = 3,
}

impl State {
    pub const ALL: [State; 4] = [State::AdminDown, State::Down, State::Init, State::Up];

    pub const fn from_bits(b: u8) -> State {
        match b & 3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }

    /// As `ovs-appctl bfd/show` prints it.
    pub const fn name(self) -> &'static str {
        match self {
            State::AdminDown => "admin_down",
            State::Down => "down",
            State::Init => "init",
            State::Up => "up",
        }
    }
}

/// Diagnostic codes (RFC 5880 section 4.1, `Diag`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Diag {
    None = 0,
    ControlDetectionTimeExpired = 1,
    EchoFunctionFailed = 2,
    NeighborSignaledSessionDown = 3,
    ForwardingPlaneReset = 4,
    PathDown = 5,
    ConcatenatedPathDown = 6,
    AdministrativelyDown = 7,
    ReverseConcatenatedPathDown = 8,
    /// Codes 9-31 are reserved; kept rather than rejected (a newer peer may
    /// send them), shown as a number.
    Reserved = 31,
}

impl Diag {
    pub const fn from_bits(b: u8) -> Diag {
        match b & 0x1f {
            0 => Diag::None,
            1 => Diag::ControlDetectionTimeExpired,
            2 => Diag::EchoFunctionFailed,
            3 => Diag::NeighborSignaledSessionDown,
            4 => Diag::ForwardingPlaneReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdministrativelyDown,
            8 => Diag::ReverseConcatenatedPathDown,
            _ => Diag::Reserved,
        }
    }

    /// As `ovs-appctl bfd/show` prints it.
    pub const fn name(self) -> &'static str {
        match self {
            Diag::None => "No Diagnostic",
            Diag::ControlDetectionTimeExpired => "Control Detection Time Expired",
            Diag::EchoFunctionFailed => "Echo Function Failed",
            Diag::NeighborSignaledSessionDown => "Neighbor Signaled Session Down",
            Diag::ForwardingPlaneReset => "Forwarding Plane Reset",
            Diag::PathDown => "Path Down",
            Diag::ConcatenatedPathDown => "Concatenated Path Down",
            Diag::AdministrativelyDown => "Administratively Down",
            Diag::ReverseConcatenatedPathDown => "Reverse Concatenated Path Down",
            Diag::Reserved => "Reserved",
        }
    }
}

/// Flag bits of the second byte, below the two state bits.
pub const FLAG_POLL: u8 = 0x20;
pub const FLAG_FINAL: u8 = 0x10;
pub const FLAG_CPI: u8 = 0x08;
pub const FLAG_AUTH: u8 = 0x04;
pub const FLAG_DEMAND: u8 = 0x02;
pub const FLAG_MULTIPOINT: u8 = 0x01;

/// A decoded control packet (host byte order, intervals in microseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Control {
    pub diag: Diag,
    pub state: State,
    /// `FLAG_*` bits.
    pub flags: u8,
    pub detect_mult: u8,
    pub my_disc: u32,
    pub your_disc: u32,
    pub desired_min_tx: u32,
    pub required_min_rx: u32,
    pub required_min_echo_rx: u32,
}

/// Why a received control packet was discarded (RFC 5880 section 6.8.6).
/// One counter each in the datapath's `BFD_DROPS` map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than 24 bytes, or the Length field runs past the datagram.
    Truncated = 0,
    /// Version other than 1.
    Version = 1,
    /// Length field below 24 (26 with authentication).
    Length = 2,
    /// Detect Mult is zero.
    DetectMult = 3,
    /// Multipoint bit set.
    Multipoint = 4,
    /// My Discriminator is zero.
    MyDiscriminator = 5,
    /// Poll and Final both set.
    PollFinal = 6,
    /// Authentication present: xgw configures none, so it must discard.
    Auth = 7,
    /// Your Discriminator zero while the session is neither Down nor AdminDown.
    YourDiscriminatorZero = 8,
    /// Your Discriminator names no session (or one on another path).
    UnknownSession = 9,
    /// TTL (or hop limit) other than 255.
    Ttl = 10,
    /// Your Discriminator zero and no session configured for the sender.
    NoSessionForPeer = 11,
    /// The session is AdminDown: received packets are discarded (6.8.6).
    AdminDown = 12,
    /// A Geneve-carried BFD frame that OVS would not accept (critical
    /// option, not IPv4/UDP 3784).
    Encapsulation = 13,
}

impl DecodeError {
    pub const COUNT: u32 = 14;
    pub const ALL: [DecodeError; Self::COUNT as usize] = [
        DecodeError::Truncated,
        DecodeError::Version,
        DecodeError::Length,
        DecodeError::DetectMult,
        DecodeError::Multipoint,
        DecodeError::MyDiscriminator,
        DecodeError::PollFinal,
        DecodeError::Auth,
        DecodeError::YourDiscriminatorZero,
        DecodeError::UnknownSession,
        DecodeError::Ttl,
        DecodeError::NoSessionForPeer,
        DecodeError::AdminDown,
        DecodeError::Encapsulation,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            DecodeError::Truncated => "truncated",
            DecodeError::Version => "version",
            DecodeError::Length => "length",
            DecodeError::DetectMult => "detect_mult",
            DecodeError::Multipoint => "multipoint",
            DecodeError::MyDiscriminator => "my_discriminator",
            DecodeError::PollFinal => "poll_and_final",
            DecodeError::Auth => "authentication",
            DecodeError::YourDiscriminatorZero => "your_discriminator_zero",
            DecodeError::UnknownSession => "unknown_session",
            DecodeError::Ttl => "ttl",
            DecodeError::NoSessionForPeer => "no_session_for_peer",
            DecodeError::AdminDown => "admin_down",
            DecodeError::Encapsulation => "encapsulation",
        }
    }
}

#[inline(always)]
const fn be32(b: &[u8; LEN], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Control {
    /// Decodes and checks the session-independent rules of RFC 5880 section
    /// 6.8.6. `udp_payload` is the datagram's payload length as its UDP
    /// header states it; the first 24 bytes are in `b`.
    #[inline(always)]
    pub fn decode(b: &[u8; LEN], udp_payload: usize) -> Result<Control, DecodeError> {
        if udp_payload < LEN {
            return Err(DecodeError::Truncated);
        }
        if b[0] >> 5 != VERSION {
            return Err(DecodeError::Version);
        }
        let flags = b[1] & 0x3f;
        let len = b[3] as usize;
        let min = if flags & FLAG_AUTH != 0 { LEN + 2 } else { LEN };
        if len < min {
            return Err(DecodeError::Length);
        }
        if len > udp_payload {
            return Err(DecodeError::Truncated);
        }
        if b[2] == 0 {
            return Err(DecodeError::DetectMult);
        }
        if flags & FLAG_MULTIPOINT != 0 {
            return Err(DecodeError::Multipoint);
        }
        let my_disc = be32(b, 4);
        if my_disc == 0 {
            return Err(DecodeError::MyDiscriminator);
        }
        if flags & (FLAG_POLL | FLAG_FINAL) == FLAG_POLL | FLAG_FINAL {
            return Err(DecodeError::PollFinal);
        }
        if flags & FLAG_AUTH != 0 {
            return Err(DecodeError::Auth);
        }
        let c = Control {
            diag: Diag::from_bits(b[0]),
            state: State::from_bits(b[1] >> 6),
            flags,
            detect_mult: b[2],
            my_disc,
            your_disc: be32(b, 8),
            desired_min_tx: be32(b, 12),
            required_min_rx: be32(b, 16),
            required_min_echo_rx: be32(b, 20),
        };
        if c.your_disc == 0 && !matches!(c.state, State::Down | State::AdminDown) {
            return Err(DecodeError::YourDiscriminatorZero);
        }
        Ok(c)
    }

    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = (VERSION << 5) | (self.diag as u8 & 0x1f);
        b[1] = ((self.state as u8) << 6) | (self.flags & 0x3f);
        b[2] = self.detect_mult;
        b[3] = LEN as u8;
        b[4..8].copy_from_slice(&self.my_disc.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_disc.to_be_bytes());
        b[12..16].copy_from_slice(&self.desired_min_tx.to_be_bytes());
        b[16..20].copy_from_slice(&self.required_min_rx.to_be_bytes());
        b[20..24].copy_from_slice(&self.required_min_echo_rx.to_be_bytes());
        b
    }
}

/// The reception half of the state machine (RFC 5880 section 6.2 diagram,
/// section 6.8.6 last steps): the local state after a valid packet whose
/// sender is in `remote`, and the diagnostic to set with it. `None`: no
/// change. AdminDown is the local operator's choice and is left to the
/// caller (packets are discarded in it).
#[inline(always)]
pub const fn on_receive(local: State, remote: State) -> Option<(State, Diag)> {
    match (local, remote) {
        (State::AdminDown, _) => None,
        // "If received state is AdminDown: if bfd.SessionState is not Down,
        // set bfd.LocalDiag to 3 and bfd.SessionState to Down."
        (State::Down, State::AdminDown) => None,
        (_, State::AdminDown) => Some((State::Down, Diag::NeighborSignaledSessionDown)),
        (State::Down, State::Down) => Some((State::Init, Diag::None)),
        (State::Down, State::Init) => Some((State::Up, Diag::None)),
        (State::Down, State::Up) => None,
        (State::Init, State::Init | State::Up) => Some((State::Up, Diag::None)),
        (State::Init, State::Down) => None,
        (State::Up, State::Down) => Some((State::Down, Diag::NeighborSignaledSessionDown)),
        (State::Up, State::Init | State::Up) => None,
    }
}

/// Detection time on the receiving side (RFC 5880 section 6.8.4, asynchronous
/// mode): the remote's Detect Mult times the agreed interval at which it
/// sends, the larger of our Required Min RX and its Desired Min TX. In
/// microseconds.
pub const fn detection_time_us(remote_mult: u8, local_required_min_rx: u32, remote_desired_min_tx: u32) -> u64 {
    let i = if local_required_min_rx > remote_desired_min_tx { local_required_min_rx } else { remote_desired_min_tx };
    remote_mult as u64 * i as u64
}

/// The interval at which we send (RFC 5880 section 6.8.7): the larger of our
/// Desired Min TX and the remote's Required Min RX. A remote Required Min RX
/// of zero means "send me nothing" (returns `None`).
pub const fn tx_interval_us(local_desired_min_tx: u32, remote_required_min_rx: u32) -> Option<u32> {
    if remote_required_min_rx == 0 {
        return None;
    }
    Some(if local_desired_min_tx > remote_required_min_rx { local_desired_min_tx } else { remote_required_min_rx })
}

/// Echo packets as FRR's bfdd sends them (and any RFC 5880 echo): opaque to
/// the reflector. The echo port, reflected by xgw in XDP.
pub const ECHO_PORT: u16 = crate::wire::BFD_ECHO_PORT;
pub const CONTROL_PORT: u16 = crate::wire::BFD_CONTROL_PORT;

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt() -> Control {
        Control {
            diag: Diag::None,
            state: State::Up,
            flags: 0,
            detect_mult: 3,
            my_disc: 0xba7c945f,
            your_disc: 0xf76d73e9,
            desired_min_tx: 100_000,
            required_min_rx: 100_000,
            required_min_echo_rx: 0,
        }
    }

    /// The BFD payload of an Up packet Open vSwitch 3.1 sent inside Geneve
    /// (userspace datapath), from a capture of its BFD on a tunnel
    /// (docs/ovs-geneve.md, "BFD from OVS"): the frame's bytes 0x5e-0x75.
    const OVS_UP: [u8; LEN] = [
        0x20, 0xc0, 0x03, 0x18, 0xba, 0x7c, 0x94, 0x5f, 0xf7, 0x6d, 0x73, 0xe9, 0x00, 0x01, 0x86, 0xa0, 0x00, 0x01,
        0x86, 0xa0, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn encode_matches_rfc_layout_and_ovs_capture() {
        assert_eq!(pkt().encode(), OVS_UP);
        assert_eq!(Control::decode(&OVS_UP, 24), Ok(pkt()));
    }

    #[test]
    // The binary literals are grouped by the RFC's fields, not by nibbles.
    #[allow(clippy::unusual_byte_groupings)]
    fn every_field_lands_in_its_rfc_bits() {
        let c = Control {
            diag: Diag::ReverseConcatenatedPathDown,
            state: State::Init,
            flags: FLAG_POLL | FLAG_CPI | FLAG_DEMAND,
            detect_mult: 0xfe,
            my_disc: 0x01020304,
            your_disc: 0x05060708,
            desired_min_tx: 0x090a0b0c,
            required_min_rx: 0x0d0e0f10,
            required_min_echo_rx: 0x11121314,
        };
        let b = c.encode();
        // Vers 001, Diag 01000 | Sta 10, P 1, F 0, C 1, A 0, D 1, M 0.
        assert_eq!(b[0], 0b001_01000);
        assert_eq!(b[1], 0b10_1_0_1_0_1_0);
        assert_eq!(&b[2..], &[0xfe, 24, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
        assert_eq!(Control::decode(&b, 24), Ok(c));
        for s in State::ALL {
            assert_eq!(State::from_bits(s as u8), s);
        }
        for d in 0..32u8 {
            let diag = Diag::from_bits(d);
            assert!(d > 8 && diag == Diag::Reserved || diag as u8 == d);
        }
    }

    #[test]
    fn malformed_packets_are_rejected_with_their_reason() {
        let ok = OVS_UP;
        let with = |i: usize, v: u8| {
            let mut b = ok;
            b[i] = v;
            b
        };
        assert_eq!(Control::decode(&ok, 23), Err(DecodeError::Truncated));
        assert_eq!(Control::decode(&with(0, 0x40), 24), Err(DecodeError::Version));
        assert_eq!(Control::decode(&with(0, 0x00), 24), Err(DecodeError::Version));
        assert_eq!(Control::decode(&with(3, 23), 24), Err(DecodeError::Length));
        assert_eq!(Control::decode(&with(3, 25), 24), Err(DecodeError::Truncated));
        // A longer Length within the datagram is fine (trailing bytes ignored).
        assert!(Control::decode(&with(3, 28), 28).is_ok());
        assert_eq!(Control::decode(&with(2, 0), 24), Err(DecodeError::DetectMult));
        assert_eq!(Control::decode(&with(1, 0xc1), 24), Err(DecodeError::Multipoint));
        let mut b = ok;
        b[4..8].copy_from_slice(&[0; 4]);
        assert_eq!(Control::decode(&b, 24), Err(DecodeError::MyDiscriminator));
        assert_eq!(Control::decode(&with(1, 0xc0 | FLAG_POLL | FLAG_FINAL), 24), Err(DecodeError::PollFinal));
        assert_eq!(Control::decode(&with(1, 0xc0 | FLAG_AUTH), 24), Err(DecodeError::Length));
        assert_eq!(Control::decode(&with(3, 26), 26).and(Ok(())), Ok(()));
        let mut a = with(1, 0xc0 | FLAG_AUTH);
        a[3] = 26;
        assert_eq!(Control::decode(&a, 26), Err(DecodeError::Auth));
        // Your Discriminator zero: only from a sender that is Down or AdminDown.
        let mut z = ok;
        z[8..12].copy_from_slice(&[0; 4]);
        for (bits, ok) in [(0x00, true), (0x40, true), (0x80, false), (0xc0, false)] {
            z[1] = bits;
            assert_eq!(Control::decode(&z, 24).is_ok(), ok, "state bits {bits:#x}");
            if !ok {
                assert_eq!(Control::decode(&z, 24), Err(DecodeError::YourDiscriminatorZero));
            }
        }
        let names: std::collections::BTreeSet<_> = DecodeError::ALL.iter().map(|e| e.name()).collect();
        assert_eq!(names.len(), DecodeError::COUNT as usize);
        for (i, e) in DecodeError::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i);
        }
    }

    extern crate std;

    /// Every (local, remote) pair of the RFC 5880 section 6.2 diagram.
    #[test]
    fn every_receive_transition_of_the_rfc_diagram() {
        use State::*;
        let n = Some((Down, Diag::NeighborSignaledSessionDown));
        let table = [
            (AdminDown, AdminDown, None),
            (AdminDown, Down, None),
            (AdminDown, Init, None),
            (AdminDown, Up, None),
            (Down, AdminDown, None),
            (Down, Down, Some((Init, Diag::None))),
            (Down, Init, Some((Up, Diag::None))),
            (Down, Up, None),
            (Init, AdminDown, n),
            (Init, Down, None),
            (Init, Init, Some((Up, Diag::None))),
            (Init, Up, Some((Up, Diag::None))),
            (Up, AdminDown, n),
            (Up, Down, n),
            (Up, Init, None),
            (Up, Up, None),
        ];
        for (local, remote, want) in table {
            assert_eq!(on_receive(local, remote), want, "local {local:?} remote {remote:?}");
        }
    }

    #[test]
    fn negotiated_intervals() {
        assert_eq!(tx_interval_us(10_000, 300_000), Some(300_000));
        assert_eq!(tx_interval_us(1_000_000, 10_000), Some(1_000_000));
        assert_eq!(tx_interval_us(10_000, 0), None);
        assert_eq!(detection_time_us(3, 10_000, 20_000), 60_000);
        assert_eq!(detection_time_us(5, 1_000_000, 100_000), 5_000_000);
    }
}
