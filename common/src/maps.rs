//! Keys and values of the datapath's configuration maps. The controller is the
//! only writer of these maps; the datapath only reads them. Layouts are
//! `#[repr(C)]` with explicit padding so both sides agree byte for byte.
//!
//! IP addresses are 16 bytes; IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`)
//! so one key type serves both families.

/// Map names, one spelling for the datapath, the controller and bpftool.
pub mod names {
    pub const UPLINK: &str = "UPLINK";
    pub const LOCAL_PORTS: &str = "LOCAL_PORTS";
    pub const PORT_KEYS: &str = "PORT_KEYS";
    pub const FDB: &str = "FDB";
    pub const TUNNELS: &str = "TUNNELS";
    pub const TUNNEL_BY_REMOTE: &str = "TUNNEL_BY_REMOTE";
    pub const DEVMAP: &str = "DEVMAP";
    pub const NEIGH: &str = "NEIGH";
}

/// Capacities. The OpenFlow number space has 65279 usable numbers; the maps
/// are sized for the configurations a gateway carries, and a full map is a
/// clear error in the controller, never a silent failure.
pub const MAX_LOCAL_PORTS: u32 = 4096;
pub const MAX_TUNNELS: u32 = 16384;
pub const MAX_FDB: u32 = 65536;
pub const MAX_NEIGH: u32 = 65536;

/// DEVMAP is keyed by OpenFlow number. The uplink sits under OFPP_LOCAL, a
/// reserved number the allocator never hands out, so no port can take it.
pub const DEVMAP_UPLINK: u32 = 0xfffe;

/// The underlay: one per gateway, at index 0 of an array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Uplink {
    pub ifindex: u32,
    /// The uplink's IP MTU; inner frames that would exceed it once
    /// encapsulated are not forwarded.
    pub mtu: u32,
    pub mac: [u8; 6],
    /// `UPLINK_*` flags.
    pub flags: u8,
    pub _pad: u8,
    pub ip4: [u8; 4],
    pub ip6: [u8; 16],
}
pub const UPLINK_HAS_IP4: u8 = 1;
pub const UPLINK_HAS_IP6: u8 = 2;

/// A local port, keyed by its interface index: the encap side learns only
/// the ingress ifindex from the packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalPort {
    pub vni: u32,
    pub ofport: u16,
    /// OVN logical port key (15 bits).
    pub port_key: u16,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// (VNI, logical port key) -> the local port's `FdbEntry`: decap with the OVN option.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortKey {
    pub vni: u32,
    pub port_key: u16,
    pub _pad: u16,
}

/// Forwarding database key: a MAC within a logical switch.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FdbKey {
    pub vni: u32,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

pub const FDB_LOCAL: u8 = 1;
pub const FDB_REMOTE: u8 = 2;

/// Where a MAC lives: on a local port, or behind a tunnel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdbEntry {
    /// The local port's or the tunnel's OpenFlow number; for a local port
    /// also its DEVMAP key.
    pub ofport: u16,
    /// The logical port key of the MAC's port (the OVN egress key).
    pub port_key: u16,
    /// `FDB_LOCAL` or `FDB_REMOTE`.
    pub kind: u8,
    pub _pad: [u8; 3],
}

pub const TUNNEL_IPV6: u8 = 1;
pub const TUNNEL_OVN_METADATA: u8 = 2;
pub const TUNNEL_BFD: u8 = 4;

/// A tunnel, keyed by its OpenFlow number (u32).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tunnel {
    pub remote: [u8; 16],
    /// Next hop on the underlay toward `remote` (resolved by the controller).
    pub nexthop_mac: [u8; 6],
    /// `TUNNEL_*` flags.
    pub flags: u8,
    pub _pad: u8,
    pub vni: u32,
}

/// (remote IP, VNI) -> tunnel OpenFlow number: which tunnel a Geneve packet
/// arrived on. Two tunnels with the same key are the seed's redundant chassis.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TunnelKey {
    pub remote: [u8; 16],
    pub vni: u32,
}

/// ARP / neighbour discovery responder: an IP within a logical switch.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NeighKey {
    pub vni: u32,
    pub ip: [u8; 16],
}

/// The MAC bound to a `NeighKey`, local or remote.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Neigh {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// An IPv4 address as stored in 16-byte fields.
pub const fn ipv4_mapped(ip: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ip[0], ip[1], ip[2], ip[3]]
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for Uplink {}
    unsafe impl aya::Pod for LocalPort {}
    unsafe impl aya::Pod for PortKey {}
    unsafe impl aya::Pod for FdbKey {}
    unsafe impl aya::Pod for FdbEntry {}
    unsafe impl aya::Pod for Tunnel {}
    unsafe impl aya::Pod for TunnelKey {}
    unsafe impl aya::Pod for NeighKey {}
    unsafe impl aya::Pod for Neigh {}
}

// Layouts are part of the kernel/userspace contract: fail the build if one
// changes by accident.
const _: () = {
    assert!(core::mem::size_of::<Uplink>() == 36);
    assert!(core::mem::size_of::<LocalPort>() == 16);
    assert!(core::mem::size_of::<PortKey>() == 8);
    assert!(core::mem::size_of::<FdbKey>() == 12);
    assert!(core::mem::size_of::<FdbEntry>() == 8);
    assert!(core::mem::size_of::<Tunnel>() == 28);
    assert!(core::mem::size_of::<TunnelKey>() == 20);
    assert!(core::mem::size_of::<NeighKey>() == 20);
    assert!(core::mem::size_of::<Neigh>() == 8);
};
