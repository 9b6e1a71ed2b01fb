//! Counters the datapath keeps in per-CPU maps and the controller sums.

/// A packet and byte count. The datapath is the only writer; each CPU has its
/// own copy, so no atomics are needed on the hot path.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for Counter {}

/// Index into the per-protocol counter array of the `xgw_probe` program.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Arp = 0,
    Ipv4Icmp = 1,
    Ipv4Tcp = 2,
    Ipv4Udp = 3,
    Ipv4Other = 4,
    Ipv6Icmp = 5,
    Ipv6Tcp = 6,
    Ipv6Udp = 7,
    Ipv6Other = 8,
    /// Any other EtherType (after at most one VLAN tag).
    OtherEthertype = 9,
    /// Too short for the headers its EtherType announces, or an IPv4 IHL < 5.
    Malformed = 10,
}

impl Proto {
    pub const COUNT: u32 = 11;
    pub const ALL: [Proto; Self::COUNT as usize] = [
        Proto::Arp,
        Proto::Ipv4Icmp,
        Proto::Ipv4Tcp,
        Proto::Ipv4Udp,
        Proto::Ipv4Other,
        Proto::Ipv6Icmp,
        Proto::Ipv6Tcp,
        Proto::Ipv6Udp,
        Proto::Ipv6Other,
        Proto::OtherEthertype,
        Proto::Malformed,
    ];

    /// Stable name used in CLI output, JSON and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Proto::Arp => "arp",
            Proto::Ipv4Icmp => "ipv4_icmp",
            Proto::Ipv4Tcp => "ipv4_tcp",
            Proto::Ipv4Udp => "ipv4_udp",
            Proto::Ipv4Other => "ipv4_other",
            Proto::Ipv6Icmp => "ipv6_icmp",
            Proto::Ipv6Tcp => "ipv6_tcp",
            Proto::Ipv6Udp => "ipv6_udp",
            Proto::Ipv6Other => "ipv6_other",
            Proto::OtherEthertype => "other_ethertype",
            Proto::Malformed => "malformed",
        }
    }
}
