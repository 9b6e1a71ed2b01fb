//! Keys and values of the datapath's configuration maps. The controller is the
//! only writer of these maps; the datapath only reads them. Layouts are
//! `#[repr(C)]` with explicit padding so both sides agree byte for byte.
//!
//! IP addresses are 16 bytes; IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`)
//! so one key type serves both families.

/// Map names, one spelling for the datapath, the controller and bpftool.
pub mod names {
    pub const UPLINK: &str = "UPLINK";
    pub const FLOOD_SECRET: &str = "FLOOD_SECRET";
    pub const LOCAL_PORTS: &str = "LOCAL_PORTS";
    pub const PORT_KEYS: &str = "PORT_KEYS";
    pub const FDB: &str = "FDB";
    pub const TUNNELS: &str = "TUNNELS";
    pub const TUNNEL_BY_REMOTE: &str = "TUNNEL_BY_REMOTE";
    pub const DEVMAP: &str = "DEVMAP";
    pub const NEIGH: &str = "NEIGH";
    pub const BFD_SESSIONS: &str = "BFD_SESSIONS";
    pub const BFD_PATHS: &str = "BFD_PATHS";
    pub const BFD_EVENTS: &str = "BFD_EVENTS";
    pub const BFD_DROPS: &str = "BFD_DROPS";
    pub const BFD_COUNTERS: &str = "BFD_COUNTERS";
    pub const GENERATION: &str = "GENERATION";
    pub const DECAP_FLOWS: &str = "DECAP_FLOWS";
    pub const ENCAP_FLOWS: &str = "ENCAP_FLOWS";
    pub const ENCAP_OUTERS: &str = "ENCAP_OUTERS";
    pub const VNIS: &str = "VNIS";
    pub const GROUPS: &str = "GROUPS";
    pub const PORT_IFINDEX: &str = "PORT_IFINDEX";
    pub const STORM: &str = "STORM";
    pub const PORT_SECURITY: &str = "PORT_SECURITY";
    pub const PORT_RECORDS: &str = "PORT_RECORDS";
}

/// Capacities. The OpenFlow number space has 65279 usable numbers; the maps
/// are sized for the configurations a gateway carries, and a full map is a
/// clear error in the controller, never a silent failure.
pub const MAX_LOCAL_PORTS: u32 = 4096;
pub const MAX_TUNNELS: u32 = 16384;
pub const MAX_FDB: u32 = 65536;
pub const MAX_NEIGH: u32 = 65536;
/// VNIS: one entry per VNI a local port serves, at most one per port.
pub const MAX_VNIS: u32 = MAX_LOCAL_PORTS;
pub const MAX_GROUPS: u32 = 2048;

/// DEVMAP is keyed by OpenFlow number. The uplink sits under OFPP_LOCAL, a
/// reserved number the allocator never hands out, so no port can take it.
pub const DEVMAP_UPLINK: u32 = 0xfffe;

/// The longest frame (Ethernet header included) the datapath encapsulates
/// toward an IPv6 tunnel when it spans more than one buffer: the outer UDP
/// checksum must cover the whole payload, and the datapath sums at most
/// this many bytes beyond the first buffer (32 chunks of 512). Longer
/// multi-buffer frames are dropped (`multibuffer`); an uplink MTU above
/// `MAX_FRAME_IPV6 - ETH_HLEN` with an IPv6 tunnel address is reported.
/// IPv4 has no such limit (its outer UDP checksum is zero).
pub const MAX_FRAME_IPV6: u32 = 16384;

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
    /// `PORTSEC_*`: what the port's own MAC and IP settle without reading
    /// `PORT_SECURITY`.
    pub sec: u8,
    pub _pad: u8,
    /// The port's own IP (IPv4-mapped), with `PORTSEC_HAS_IP`.
    pub ip: [u8; 16],
}

/// `LocalPort::sec`. Port security (OVN's `port_security`) checks what a VM
/// sends: its source MAC, and for a MAC listed with IP addresses, the
/// source IP and the addresses in its ARP and neighbour discovery. The port's
/// own MAC and IP are in `LocalPort`, which the encap flow cache holds, so
/// the usual frame is checked without a lookup; the full list is the
/// port's `PORT_SECURITY` entry, read only for anything else.
pub const PORTSEC_ON: u8 = 1;
/// IP sources of the port's own MAC are restricted to the listed ones.
pub const PORTSEC_RESTRICTED: u8 = 2;
/// `LocalPort::ip` is one of them.
pub const PORTSEC_HAS_IP: u8 = 4;
/// The port's own MAC has more addresses than `LocalPort::ip` (in `PORT_SECURITY`).
pub const PORTSEC_MORE_IPS: u8 = 8;
/// Other MACs are allowed too (in `PORT_SECURITY`).
pub const PORTSEC_OTHER_MACS: u8 = 16;

/// Rows of one port's `PORT_SECURITY` entry: an element of OVN's
/// `port_security` column ("MAC [IP ...]") is one MAC row and one row per IP.
pub const PORT_SECURITY_ROWS: usize = 16;

/// `PortSecurityRow::kind`.
pub const PS_ROW_MAC: u8 = 1;
/// A MAC whose IP sources are restricted to its IP rows.
pub const PS_ROW_MAC_RESTRICTED: u8 = 2;
/// An IP address (IPv4-mapped) `mac` may send from.
pub const PS_ROW_IP: u8 = 3;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortSecurityRow {
    pub mac: [u8; 6],
    pub kind: u8,
    pub _pad: u8,
    pub ip: [u8; 16],
}

/// `PORT_SECURITY`, keyed by the port's OpenFlow number: every address the
/// port's VM may send from, `count` rows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortSecurity {
    pub count: u32,
    pub _pad: u32,
    pub rows: [PortSecurityRow; PORT_SECURITY_ROWS],
}

/// `PORT_RECORDS`, keyed by OpenFlow number: the committed port's record as
/// the store encodes it (JSON), `len` bytes. The datapath never reads it:
/// it is there so that the pinned maps describe every port whole (name,
/// number and every setting, an absent interface's too), and a lost or
/// damaged store can be rebuilt from them (`xgw store rebuild`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRecordCopy {
    pub len: u32,
    pub json: [u8; PORT_RECORD_BYTES],
}

/// Room for the longest record a port can have (its name, 16 port-security
/// rows of IPv6 addresses, BFD timers): a unit test in the controller
/// keeps this true.
pub const PORT_RECORD_BYTES: usize = 2044;

/// Committed ports of both kinds.
pub const MAX_PORT_RECORDS: u32 = MAX_LOCAL_PORTS + MAX_TUNNELS;

/// (VNI, logical port key) -> the local port's `FdbEntry`: decap with the OVN option.
// align(8) adds no padding here; it keeps the key's stack slot
// word-aligned (see datapath-ebpf/.cargo/config.toml).
#[repr(C, align(8))]
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
/// Only in decap flow-cache slots: the egress key named a multicast group
/// (`port_key` is the group's key), not a port.
pub const FDB_GROUP: u8 = 3;

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

/// `TunnelKey::vni` (and `Tunnel::vni`) of a flow-keyed tunnel (OVS's and
/// OVN's `options:key=flow`): one tunnel per remote chassis, the VNI taken
/// from each packet. Outside the 24-bit VNI space, so no fixed key equals it.
pub const TUNNEL_KEY_FLOW: u32 = u32::MAX;

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
/// A fixed-key tunnel is found under its VNI, a flow-keyed one under
/// `TUNNEL_KEY_FLOW`; decap tries the packet's VNI first, as OVS matches an
/// exact key before a flow-keyed port.
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

/// The flow caches (`DECAP_FLOWS`, `ENCAP_FLOWS`): per-CPU, direct-mapped
/// copies of what the hash maps above answered for recent packets, so that a
/// packet of a known flow makes no hash lookup (each one is a helper call,
/// ~30 ns on a CPU with return-stack mitigations). A slot holds the full key,
/// so two keys sharing a slot only evict each other; it holds the value of
/// `GENERATION` read before the lookups that filled it, and is used only
/// while `GENERATION` still has that value. The controller bumps
/// `GENERATION` after every write to LOCAL_PORTS, PORT_KEYS, FDB, TUNNELS,
/// TUNNEL_BY_REMOTE or UPLINK (the tunnels' outer-header slots,
/// `EncapOuter`, are built from it), so the packet after a write never
/// sees an older value.
///
/// 16,384 slots: a gateway's active destinations run to thousands, and a
/// slot per destination keeps a miss (an FDB lookup in memory, not cache)
/// off most frames. 56 and 64 bytes a slot, 1.9 MB per CPU for both caches
/// (measured in `cargo xtask bench`'s active-flow rows; see
/// docs/performance.md).
pub const FLOW_SLOTS_LOG2: u32 = 14;
pub const FLOW_SLOTS: u32 = 1 << FLOW_SLOTS_LOG2;

/// `GENERATION` is an mmap-able array of one `u64`: the controller adds to
/// it atomically through the mapping, without a syscall.
pub const GENERATION_INDEX: u32 = 0;

/// Decap: (remote IP, VNI, OVN egress key, inner destination MAC). The MAC
/// is zero when the egress key (non-zero) chooses the port, so every MAC
/// behind one port key shares the entry.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecapFlowKey {
    pub remote: [u8; 16],
    pub vni: u32,
    pub egress: u16,
    pub mac: [u8; 6],
    pub _pad: u32,
}

/// What TUNNEL_BY_REMOTE and then PORT_KEYS (or FDB) said for the key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecapFlow {
    pub key: DecapFlowKey,
    pub generation: u64,
    /// The tunnel's OpenFlow number.
    pub tunnel: u32,
    /// Non-zero once filled: a slot never written is all zeros, which must
    /// not pass for a flow.
    pub filled: u32,
    pub dest: FdbEntry,
}

/// Encap: (ingress ifindex, destination MAC) of a unicast frame.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncapFlowKey {
    pub ifindex: u32,
    pub mac: [u8; 6],
    // Scalars, not a byte array: LLVM zeroes a 6-byte array with a call to
    // a memset subprogram, a call and return per packet.
    pub _pad0: u16,
    /// Zero in a key. In a slot, the misses since its flow's last hit: the
    /// slot is given to another flow only after `ENCAP_EVICT_AFTER` of them.
    pub misses: u32,
}

/// A live encap slot goes to another flow only after this many misses
/// since its own flow's last hit. Filling on every miss, as the decap
/// cache does, lets two flows sharing a slot evict each other on every
/// frame, and with more active flows than slots almost every frame
/// misses; kept this way a slot serves one of its flows (OVS's exact match
/// cache has the same cure: it inserts only one miss in a hundred). A
/// flow that stops is evicted by the next ones within this many frames.
pub const ENCAP_EVICT_AFTER: u32 = 16;

/// What LOCAL_PORTS and FDB said for the key: one cache line, so that a
/// slot costs one line of the CPU's cache however many flows are active.
/// A remote destination's outer headers are its tunnel's (`EncapOuter`),
/// cached once per tunnel, not once per flow. A slot never written is all
/// zeros; its key's ifindex 0 is no interface's, so no frame matches it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncapFlow {
    pub key: EncapFlowKey,
    pub generation: u64,
    pub port: LocalPort,
    pub dest: FdbEntry,
}

impl EncapFlow {
    pub fn filled(&self) -> bool {
        self.key.ifindex != 0
    }
}

impl EncapOuter {
    /// `outer`'s bytes, as they are pushed in front of a frame.
    pub fn bytes(&self) -> [u8; OUTER_WORDS * 8] {
        // SAFETY: plain words to plain bytes, same size.
        unsafe { core::mem::transmute(self.outer) }
    }
}

/// Tunnel outer headers, per CPU (`ENCAP_OUTERS`), slot `ofport % OUTER_SLOTS`.
/// The flows of a gateway outnumber its tunnels (every port behind a
/// chassis shares its headers), so these stay few and hot where per-flow
/// copies would fill the CPU's cache. Like a flow slot, one is used only
/// while `GENERATION` holds the value read before its TUNNELS and UPLINK
/// lookups.
pub const OUTER_SLOTS: u32 = 2048;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncapOuter {
    /// The tunnel's OpenFlow number; 0 (no tunnel's) in a slot never written.
    pub ofport: u32,
    /// `OUTER_*`: which headers `outer` holds, if any.
    pub kind: u32,
    pub generation: u64,
    /// Bytes of `outer` pushed in front of the frame.
    pub outer_len: u32,
    /// The longest inner frame that fits the uplink's MTU once encapsulated.
    pub max_frame: u32,
    /// IPv4: the outer header's 16-bit words summed, all but the total
    /// length (and the zero checksum and ID), not yet folded. IPv6: the
    /// UDP pseudo-header's, all but the length.
    pub ip_sum: u32,
    pub _pad: u32,
    /// Outer Ethernet, IP, UDP, Geneve and the OVN option if the tunnel
    /// carries it, as sent, but for what changes per frame: the UDP source
    /// port, the lengths, the IPv4 checksum, the IPv6 flow label and UDP
    /// checksum, the VNI and the option's port keys (all zero here).
    pub outer: [u64; OUTER_WORDS],
}

/// `EncapOuter::kind`: a local destination (or none) needs no headers;
/// `OUTER_NO_UNDERLAY`: the uplink has no address of the tunnel's family.
pub const OUTER_NONE: u32 = 0;
pub const OUTER_NO_UNDERLAY: u32 = 1;
pub const OUTER_IPV4: u32 = 2;
pub const OUTER_IPV6: u32 = 3;
/// Ethernet + IPv6 + UDP + Geneve + the OVN option, 78 bytes, in words.
pub const OUTER_WORDS: usize = 10;

// The datapath builds flow keys as machine words in registers, hashes and
// compares those, and stores the struct only to fill a slot: a key written to
// the stack field by field and read back a word at a time stalls store
// forwarding on every packet.

impl DecapFlowKey {
    /// The key's words, laid out as the struct (little-endian): `remote` as
    /// two words, then `vni | egress << 32 | mac[0..2] << 48`, then
    /// `mac[2..6]`.
    #[inline(always)]
    pub fn pack(remote: [u64; 2], vni: u32, egress: u16, mac: [u8; 6]) -> [u64; 4] {
        let [a, b, c, d, e, f] = mac;
        let w2 = vni as u64 | (egress as u64) << 32 | (u16::from_le_bytes([a, b]) as u64) << 48;
        let w3 = u32::from_le_bytes([c, d, e, f]) as u64;
        [remote[0], remote[1], w2, w3]
    }

    #[inline(always)]
    pub fn from_words(w: [u64; 4]) -> Self {
        // SAFETY: repr(C) with every byte a field (no padding), 32 bytes;
        // every bit pattern is a valid key.
        unsafe { core::mem::transmute(w) }
    }

    #[inline(always)]
    pub fn words(&self) -> [u64; 4] {
        // SAFETY: as above.
        unsafe { core::mem::transmute(*self) }
    }

    #[inline(always)]
    pub fn slot(&self) -> u32 {
        flow_slot(&self.words())
    }
}
impl EncapFlowKey {
    pub fn new(ifindex: u32, mac: [u8; 6]) -> Self {
        Self { ifindex, mac, _pad0: 0, misses: 0 }
    }

    /// `ifindex | mac[0..4] << 32`, then `mac[4..6]`; `misses` zero.
    #[inline(always)]
    pub fn pack(ifindex: u32, mac: [u8; 6]) -> [u64; 2] {
        let [a, b, c, d, e, f] = mac;
        [ifindex as u64 | (u32::from_le_bytes([a, b, c, d]) as u64) << 32, u16::from_le_bytes([e, f]) as u64]
    }

    #[inline(always)]
    pub fn from_words(w: [u64; 2]) -> Self {
        // SAFETY: repr(C) with every byte a field (no padding), 16 bytes;
        // every bit pattern is a valid key.
        unsafe { core::mem::transmute(w) }
    }

    #[inline(always)]
    pub fn words(&self) -> [u64; 2] {
        // SAFETY: as above.
        unsafe { core::mem::transmute(*self) }
    }

    #[inline(always)]
    pub fn slot(&self) -> u32 {
        flow_slot(&self.words())
    }
}

/// Multiplicative hashing, the slot from the product's top bits. Words are
/// paired by XOR and the pairs multiplied independently, so the hash costs
/// one multiply's latency, not one per word: it sits between the packet's
/// headers and the slot's load. A poor spread only costs evictions; the slot
/// holds the full key.
#[inline(always)]
pub fn flow_slot<const N: usize>(words: &[u64; N]) -> u32 {
    let (mut even, mut odd) = (0u64, 0u64);
    let mut i = 0;
    while i < N {
        if i % 2 == 0 {
            even ^= words[i];
        } else {
            odd ^= words[i];
        }
        i += 1;
    }
    let h = even.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ odd.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    (h >> (64 - FLOW_SLOTS_LOG2)) as u32
}

/// BFD sessions: slots of the `BFD_SESSIONS` array. A session's local
/// discriminator carries its slot in the low 16 bits, so a packet's Your
/// Discriminator finds its session without a hash lookup. OVN's HA chassis
/// groups put a session on every tunnel of a gateway, hence 16,384; a
/// datapath pinned by an earlier xgw keeps the capacity it was made with
/// (4,096), which the engine reads from the map.
pub const MAX_BFD_SESSIONS: u32 = 16384;
pub const BFD_SLOT_MASK: u32 = 0xffff;

pub const BFD_PATH_GENEVE: u32 = 1;
pub const BFD_PATH_SINGLE_HOP: u32 = 2;

/// `BfdSession::ctl_flags`.
pub const BFD_ENABLED: u32 = 1;
pub const BFD_ADMIN_DOWN: u32 = 2;
/// Reflect this peer's echo packets (UDP 3785) in XDP.
pub const BFD_ECHO: u32 = 4;

/// Where a session's packets arrive: a Geneve tunnel (id = VNI, peer = the
/// tunnel's remote IP), or an underlay interface (id = ifindex, peer = the
/// router's IP). Looks up the session of packets whose Your Discriminator is
/// still zero, and is checked against every packet, so a packet naming one
/// session's discriminator on another session's path changes nothing.
// align(8) adds no padding here; it keeps the key's stack slot
// word-aligned (see datapath-ebpf/.cargo/config.toml).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BfdPathKey {
    /// `BFD_PATH_*`.
    pub kind: u32,
    pub id: u32,
    pub peer: [u8; 16],
}

/// One BFD session, shared by the controller and the datapath in an
/// mmap-able array. Each field has one writer: the `ctl_*` half is the
/// controller's, the rest the datapath's (written on every valid packet).
/// Neither side ever rewrites the whole value while the session is live, so
/// no lock is needed (BPF spin locks need BTF-defined maps, which aya 0.14's
/// legacy map sections cannot express).
///
/// Detection runs in the controller; it cannot write `state`. It declares
/// the session Down by bumping `ctl_down_seq`; the datapath, on the next
/// packet, sees `down_ack != ctl_down_seq`, applies Down with diagnostic 1
/// (Control Detection Time Expired) and only then the packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BfdSession {
    // Controller-written.
    pub ctl_local_disc: u32,
    /// `BFD_ENABLED | BFD_ADMIN_DOWN | BFD_ECHO`.
    pub ctl_flags: u32,
    pub ctl_path: BfdPathKey,
    pub ctl_down_seq: u32,
    /// Detect Mult we send.
    pub ctl_mult: u8,
    pub _ctl_pad: u8,
    /// UDP source port of single-hop packets (RFC 5881 section 4: one per
    /// session), so the datapath can answer from it.
    pub ctl_sport: u16,
    /// The configured Desired Min TX once Up (microseconds): with the
    /// advertised values below, what a restarted controller adopts.
    pub ctl_cfg_tx_us: u32,
    /// Desired Min TX and Required Min RX advertised now (microseconds).
    pub ctl_adv_tx_us: u32,
    pub ctl_adv_rx_us: u32,
    /// The session's flap count (Open vSwitch's: every change to or from
    /// Up), and below when its state last changed (CLOCK_MONOTONIC): kept
    /// here so that a restarted controller adopts the history too.
    pub ctl_flaps: u32,
    /// CLOCK_MONOTONIC of the controller's last periodic packet: the
    /// heartbeat the datapath watches. While it is stale (the controller is
    /// starved or restarting) the datapath answers received packets itself.
    pub ctl_last_tx_ns: u64,
    pub ctl_changed_ns: u64,
    // Datapath-written.
    pub state: u8,
    pub diag: u8,
    pub remote_state: u8,
    pub remote_diag: u8,
    pub remote_disc: u32,
    pub remote_min_tx: u32,
    pub remote_min_rx: u32,
    pub remote_min_echo_rx: u32,
    pub remote_mult: u8,
    /// The flag bits of the last packet received (`bfd::FLAG_*`).
    pub remote_flags: u8,
    pub _pad: [u8; 2],
    /// The `ctl_down_seq` last applied.
    pub down_ack: u32,
    /// Bumped on every received Poll: the controller owes a Final.
    pub poll_seq: u32,
    /// Bumped on every received Final: the peer acknowledged our Poll.
    pub final_seq: u32,
    /// Bumped on every state change the datapath makes.
    pub changes: u32,
    pub rx_packets: u64,
    /// CLOCK_MONOTONIC (bpf_ktime_get_ns) of the last valid packet.
    pub last_rx_ns: u64,
    /// Packets the datapath answered itself (XDP_TX) while the controller's
    /// heartbeat was stale, and when it last did.
    pub xdp_tx_packets: u64,
    pub xdp_tx_ns: u64,
}

/// A state change made by the datapath, or a Poll to answer: one ring
/// buffer record, so the controller wakes at once instead of polling.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BfdEvent {
    pub slot: u32,
    pub local_disc: u32,
    pub old_state: u8,
    pub new_state: u8,
    pub diag: u8,
    pub remote_state: u8,
    /// `BFD_EVENT_*`.
    pub kind: u32,
}
pub const BFD_EVENT_STATE: u32 = 1;
pub const BFD_EVENT_POLL: u32 = 2;

/// `BFD_COUNTERS` slots (per CPU).
pub const BFD_CNT_RX: u32 = 0;
pub const BFD_CNT_ECHO_REFLECTED: u32 = 1;
pub const BFD_CNT_EVENTS_LOST: u32 = 2;
/// Control packets the datapath answered itself (XDP_TX, receive-clocked).
pub const BFD_CNT_XDP_TX: u32 = 3;
pub const BFD_COUNTERS_LEN: u32 = 4;

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
    unsafe impl aya::Pod for GroupKey {}
    unsafe impl aya::Pod for Group {}
    unsafe impl aya::Pod for StormBucket {}
    unsafe impl aya::Pod for PortSecurity {}
    unsafe impl aya::Pod for PortRecordCopy {}
    unsafe impl aya::Pod for BfdPathKey {}
    unsafe impl aya::Pod for BfdSession {}
    unsafe impl aya::Pod for BfdEvent {}
    unsafe impl aya::Pod for DecapFlow {}
    unsafe impl aya::Pod for EncapFlow {}
    unsafe impl aya::Pod for EncapOuter {}
    unsafe impl aya::Pod for BenchVary {}
}

// Layouts are part of the kernel/userspace contract: fail the build if one
// changes by accident.
const _: () = {
    assert!(core::mem::size_of::<Uplink>() == 36);
    assert!(core::mem::size_of::<LocalPort>() == 32);
    assert!(core::mem::size_of::<PortSecurity>() == 8 + 24 * PORT_SECURITY_ROWS);
    assert!(core::mem::size_of::<PortKey>() == 8);
    assert!(core::mem::size_of::<FdbKey>() == 12);
    assert!(core::mem::size_of::<FdbEntry>() == 8);
    assert!(core::mem::size_of::<Tunnel>() == 28);
    assert!(core::mem::size_of::<TunnelKey>() == 20);
    assert!(core::mem::size_of::<NeighKey>() == 20);
    assert!(core::mem::size_of::<Neigh>() == 8);
    assert!(core::mem::size_of::<BfdPathKey>() == 24);
    assert!(core::mem::size_of::<BfdSession>() == 144);
    assert!(core::mem::size_of::<BfdEvent>() == 16);
    assert!(core::mem::size_of::<DecapFlowKey>() == 32);
    assert!(core::mem::size_of::<DecapFlow>() == 56);
    assert!(core::mem::size_of::<EncapFlowKey>() == 16);
    assert!(core::mem::size_of::<EncapFlow>() == 64);
    assert!(core::mem::size_of::<EncapOuter>() == 112);
};

/// Multicast groups (OVN's `Multicast_Group`): an egress key at or above
/// `GROUP_KEY_MIN` names a set of ports in a VNI instead of one port. OVN
/// floods broadcast and multicast with `_MC_flood` (32768) and unknown
/// unicast with `_MC_unknown` (32769).
pub const GROUP_KEY_MIN: u16 = 0x8000;
pub const GROUP_FLOOD: u16 = 32768;
pub const GROUP_UNKNOWN: u16 = 32769;
/// Members per group: the flood program copies a frame once per member, in
/// a `bpf_loop` (the verifier checks the body once, whatever the count).
pub const MAX_GROUP_MEMBERS: usize = 1024;

/// `GROUPS` key: a group within a VNI.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GroupKey {
    pub vni: u32,
    pub key: u16,
    pub _pad: u16,
}

/// A group's members as OpenFlow numbers: `local` local ports first, then
/// tunnels (remote chassis), `count` in all. Copies to local members go
/// out on their interface (PORT_IFINDEX), copies to tunnels encapsulated
/// with egress = the group's key.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Group {
    pub local: u16,
    pub count: u16,
    /// Storm control: flooded frames each ingress port may send into the
    /// group per second (on each CPU); 0 = no limit.
    pub rate_pps: u32,
    pub members: [u16; MAX_GROUP_MEMBERS],
}

impl Default for Group {
    fn default() -> Self {
        Group { local: 0, count: 0, rate_pps: 0, members: [0; MAX_GROUP_MEMBERS] }
    }
}

/// What the XDP programs put into a frame they pass up for flooding
/// (`xgw_flood`, TC ingress on the same interface, reads and removes it):
/// which group, and where the frame came from. The frame goes up as
/// `[MACs | FLOOD_ETHERTYPE | FloodMeta | its own EtherType, payload]`:
/// `FLOOD_SHIM` bytes more, the MACs moved to the front, the rest in place.
///
/// In the frame, not XDP metadata: some kernels refuse `bpf_xdp_adjust_meta`
/// to every XDP program (6.18.44-fc: "program of this type cannot use
/// helper"). Behind the MACs, not in front: a frame's headroom is always
/// there (its tailroom is not, on veth), and TC can take bytes out only
/// behind the MACs, of a frame typed IPv4 or IPv6 (`bpf_skb_adjust_room`),
/// hence the IPv4 EtherType; the record's first byte (the magic's low
/// byte, 0x31) is not an IPv4 header's, so GRO lets the frame through
/// alone and the IP stack, should it ever see one, drops it. Being in the
/// frame, a record could be forged by whoever sends a frame the programs
/// pass up unchanged: `secret` (`FLOOD_SECRET`, random per datapath, never
/// on the wire) is what makes it xgw's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloodMeta {
    /// `FLOOD_MAGIC`: a record of xgw's, not something else's.
    pub magic: u32,
    pub vni: u32,
    pub group: u16,
    /// The OpenFlow number the frame arrived on (local port or tunnel),
    /// never sent a copy.
    pub ingress: u16,
    /// The ingress local port's key, for the copies' OVN option.
    pub ingress_key: u16,
    /// Non-zero: from a tunnel, so copies go to local members only (the
    /// sender flooded the other chassis itself).
    pub from_tunnel: u16,
    /// `FLOOD_SECRET[0]` when the record was written.
    pub secret: u64,
}
pub const FLOOD_MAGIC: u32 = 0x7867_6631;
pub const FLOOD_ETHERTYPE: u16 = 0x0800;
pub const FLOOD_SHIM: usize = core::mem::size_of::<FloodMeta>() + 2;

/// Storm control: one token bucket per ingress OpenFlow number, per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StormBucket {
    /// Tokens in thousandths of a frame.
    pub milli_tokens: u64,
    pub last_ns: u64,
}

/// `xgw_vary`'s settings (benchmarks only): frame `n` of a CPU is flow
/// `f = n % flows`, written into the frame as two big-endian 16-bit fields,
/// `base_a + f % spread` at byte `at_a` and `base_b + f / spread` at byte
/// `at_b` (an offset of 0: not written). So `spread` remote addresses times
/// `flows / spread` port keys, or `flows` destination MACs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BenchVary {
    pub flows: u32,
    pub spread: u32,
    pub at_a: u32,
    pub base_a: u32,
    pub at_b: u32,
    pub base_b: u32,
}

impl BenchVary {
    /// The two fields of frame `n`: (byte offset, value); offset 0 is not
    /// written.
    #[inline(always)]
    pub fn fields(&self, n: u64) -> [(u32, u16); 2] {
        let f = n % self.flows.max(1) as u64;
        let spread = self.spread.max(1) as u64;
        [(self.at_a, (self.base_a as u64 + f % spread) as u16), (self.at_b, (self.base_b as u64 + f / spread) as u16)]
    }

    /// Writes frame `n`'s fields into `frame`, as `xgw_vary` does.
    pub fn apply(&self, n: u64, frame: &mut [u8]) {
        for (at, v) in self.fields(n) {
            let at = at as usize;
            if at != 0 && at + 2 <= frame.len() {
                frame[at..at + 2].copy_from_slice(&v.to_be_bytes());
            }
        }
    }
}
