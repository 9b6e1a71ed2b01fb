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

/// Why the datapath dropped a packet: one per-CPU counter each.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// Geneve header or options cut short, or no room for the inner frame.
    GeneveTruncated = 0,
    /// Geneve version other than 0.
    GeneveVersion = 1,
    /// Protocol type other than Transparent Ethernet Bridging (0x6558).
    GeneveProtocol = 2,
    /// An option's length runs past the header's Opt Len.
    GeneveOptionLength = 3,
    /// A critical option this gateway does not understand (RFC 8926 3.5).
    GeneveCriticalOption = 4,
    /// From a remote IP and VNI that no tunnel is configured for.
    UnknownTunnel = 5,
    /// No port for the destination: decap found no local port for the inner
    /// MAC or OVN egress key, or encap found no binding for the MAC in the VNI.
    UnknownDestination = 6,
    /// The kernel refused the redirect (port gone from the devmap).
    RedirectFailed = 7,
    /// Outer IP or UDP length disagrees with the frame's length.
    OuterLength = 8,
    /// More options than the datapath walks, with the C bit set: a critical
    /// option might hide among the rest.
    GeneveOptionLimit = 9,
    /// The frame would exceed the uplink MTU once encapsulated.
    MtuExceeded = 10,
    /// Broadcast or multicast the ARP/ND responder did not answer, in a VNI
    /// with no flood group (`GROUP_FLOOD`) to take it.
    Flood = 11,
    /// The destination MAC is on the port the frame came from.
    Hairpin = 12,
    /// The tunnel's address family has no address on the uplink, or no uplink.
    NoUnderlay = 13,
    /// No headroom to push the outer headers (or to build a reply, or to
    /// pass a flood up with its record).
    NoHeadroom = 14,
    /// A frame shorter than an Ethernet header.
    Runt = 15,
    /// A VNI no local port serves, on a flow-keyed tunnel (which carries
    /// any VNI) or a fixed-key one whose switch has no port here.
    UnknownVni = 16,
    /// Storm control: a flood beyond its group's rate for the ingress port.
    Storm = 17,
    /// A flood copy the kernel refused (member interface gone, no headroom).
    FloodCopy = 18,
    /// Port security: a source MAC the port may not send from.
    PortSecurityMac = 19,
    /// Port security: an IP source the port's MAC may not send from.
    PortSecurityIp = 20,
    /// Port security: ARP or neighbour discovery naming a MAC or address
    /// the port may not claim (spoofing).
    PortSecurityArpNd = 21,
    /// A multi-buffer (jumbo) frame the datapath cannot carry: its headers
    /// run past the first buffer, or it is too long for the IPv6 UDP
    /// checksum (`maps::MAX_FRAME_IPV6`). Never truncated.
    Multibuffer = 22,
}

impl Drop {
    pub const COUNT: u32 = 23;
    pub const ALL: [Drop; Self::COUNT as usize] = [
        Drop::GeneveTruncated,
        Drop::GeneveVersion,
        Drop::GeneveProtocol,
        Drop::GeneveOptionLength,
        Drop::GeneveCriticalOption,
        Drop::UnknownTunnel,
        Drop::UnknownDestination,
        Drop::RedirectFailed,
        Drop::OuterLength,
        Drop::GeneveOptionLimit,
        Drop::MtuExceeded,
        Drop::Flood,
        Drop::Hairpin,
        Drop::NoUnderlay,
        Drop::NoHeadroom,
        Drop::Runt,
        Drop::UnknownVni,
        Drop::Storm,
        Drop::FloodCopy,
        Drop::PortSecurityMac,
        Drop::PortSecurityIp,
        Drop::PortSecurityArpNd,
        Drop::Multibuffer,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Drop::GeneveTruncated => "geneve_truncated",
            Drop::GeneveVersion => "geneve_version",
            Drop::GeneveProtocol => "geneve_protocol",
            Drop::GeneveOptionLength => "geneve_option_length",
            Drop::GeneveCriticalOption => "geneve_critical_option",
            Drop::UnknownTunnel => "unknown_tunnel",
            Drop::UnknownDestination => "unknown_destination",
            Drop::RedirectFailed => "redirect_failed",
            Drop::OuterLength => "outer_length",
            Drop::GeneveOptionLimit => "geneve_option_limit",
            Drop::MtuExceeded => "mtu_exceeded",
            Drop::Flood => "flood",
            Drop::Hairpin => "hairpin",
            Drop::NoUnderlay => "no_underlay",
            Drop::NoHeadroom => "no_headroom",
            Drop::Runt => "runt",
            Drop::UnknownVni => "unknown_vni",
            Drop::Storm => "storm",
            Drop::FloodCopy => "flood_copy",
            Drop::PortSecurityMac => "port_security_mac",
            Drop::PortSecurityIp => "port_security_ip",
            Drop::PortSecurityArpNd => "port_security_arp_nd",
            Drop::Multibuffer => "multibuffer",
        }
    }
}

/// Packets the datapath answered itself instead of forwarding.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// ARP request for a bound IPv4 address, answered with its MAC.
    Arp = 0,
    /// Neighbour solicitation for a bound IPv6 address, answered.
    Nd = 1,
    /// ICMP fragmentation-needed / packet-too-big sent back for a frame
    /// that would exceed the uplink MTU once encapsulated.
    TooBig = 2,
}

impl Reply {
    pub const COUNT: u32 = 3;
    pub const ALL: [Reply; Self::COUNT as usize] = [Reply::Arp, Reply::Nd, Reply::TooBig];

    pub const fn name(self) -> &'static str {
        match self {
            Reply::Arp => "arp",
            Reply::Nd => "nd",
            Reply::TooBig => "too_big",
        }
    }
}

/// Per OpenFlow port: what it received and what it sent, indexed by ofport.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx: Counter,
    pub tx: Counter,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for PortStats {}

impl Drop {
    /// The reason in words, for `xgw trace` (the variant's documentation).
    pub const fn description(self) -> &'static str {
        match self {
            Drop::GeneveTruncated => "Geneve header or options cut short, or no room for the inner frame",
            Drop::GeneveVersion => "Geneve version other than 0",
            Drop::GeneveProtocol => "Geneve protocol type other than Transparent Ethernet Bridging (0x6558)",
            Drop::GeneveOptionLength => "a Geneve option's length runs past the header's Opt Len",
            Drop::GeneveCriticalOption => "a critical Geneve option this gateway does not understand (RFC 8926 3.5)",
            Drop::UnknownTunnel => "from a remote IP and VNI that no tunnel is configured for",
            Drop::UnknownDestination => {
                "no port for the destination: no local port for the inner MAC or OVN egress key (decap), or no \
                 binding for the MAC in the VNI (encap)"
            }
            Drop::RedirectFailed => "the kernel refused the redirect (port gone from the devmap)",
            Drop::OuterLength => "outer IP or UDP length disagrees with the frame's length",
            Drop::GeneveOptionLimit => {
                "more Geneve options than the datapath walks, with the C bit set: a critical option might hide \
                 among the rest"
            }
            Drop::MtuExceeded => "the frame would exceed the uplink MTU once encapsulated",
            Drop::Flood => "broadcast or multicast the ARP/ND responder did not answer, in a VNI with no flood group",
            Drop::Hairpin => "the destination MAC is on the port the frame came from",
            Drop::NoUnderlay => "the tunnel's address family has no address on the uplink, or no uplink",
            Drop::NoHeadroom => {
                "no headroom to push the outer headers (or to build a reply, or to pass a flood up with its record)"
            }
            Drop::Runt => "a frame shorter than an Ethernet header",
            Drop::UnknownVni => {
                "a VNI no local port serves, on a flow-keyed tunnel or a fixed-key one whose switch has no port here"
            }
            Drop::Storm => "storm control: a flood beyond its group's rate for the ingress port",
            Drop::FloodCopy => "a flood copy the kernel refused (member interface gone, no headroom)",
            Drop::PortSecurityMac => "port security: a source MAC the port may not send from",
            Drop::PortSecurityIp => "port security: an IP source the port's MAC may not send from",
            Drop::PortSecurityArpNd => {
                "port security: ARP or neighbour discovery naming a MAC or address the port may not claim"
            }
            Drop::Multibuffer => {
                "a multi-buffer (jumbo) frame the datapath cannot carry: headers past the first buffer, or too long \
                 for the IPv6 UDP checksum"
            }
        }
    }
}
