//! Wire constants, named after the RFCs and IANA registries they come from.

/// EtherTypes (IEEE 802 numbers).
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
/// Transparent Ethernet Bridging: the Geneve protocol type of an inner Ethernet frame.
pub const ETH_P_TEB: u16 = 0x6558;

/// IP protocol numbers.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

/// UDP ports.
pub const GENEVE_PORT: u16 = 6081; // RFC 8926
pub const BFD_CONTROL_PORT: u16 = 3784; // RFC 5881
pub const BFD_ECHO_PORT: u16 = 3785; // RFC 5881

pub const ETH_HLEN: usize = 14;
pub const IPV4_HLEN_MIN: usize = 20;
pub const IPV6_HLEN: usize = 40;
pub const UDP_HLEN: usize = 8;
