//! BFD (RFC 5880, 5881; Open vSwitch's BFD over Geneve): the engine that
//! owns every session.
//!
//! Who does what, and why:
//! - **Receive** runs in XDP (`datapath-ebpf/src/bfd.rs`): validation and
//!   the receive transitions are applied to `BFD_SESSIONS` in the kernel,
//!   so a packet costs no wakeup and no copy to userspace. State changes and
//!   Polls are pushed to the engine through the `BFD_EVENTS` ring buffer.
//! - **Transmit and detection** run here, in one thread at SCHED_FIFO
//!   priority: XDP cannot originate packets, and a bpf_timer callback cannot
//!   transmit. Ordinary-priority CPU hogs do not delay a real-time thread
//!   (see the back-to-back test under CPU stress).
//! - The session array is mmap-ed (BPF_F_MMAPABLE): the thread reads the
//!   kernel's half of each session with plain loads, no syscall per session
//!   per tick. Each field has one writer (see `xgw_common::maps::BfdSession`).
//!
//! Sockets are opened by the engine thread, so they live in the network
//! namespace `Engine::start` was called in.
pub mod frame;
pub mod session;

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap},
    io,
    net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    thread::JoinHandle,
};

use aya::{
    maps::{HashMap as BpfHashMap, IterableMap, Map, MapData, PerCpuArray, RingBuf},
    Ebpf,
};
use xgw_common::{
    bfd::{self as wire, DecodeError, Diag, State},
    maps::{names, *},
};

pub use frame::GeneveHeaders;
pub use session::{Config, ConfigError, Rx, Session};

/// Where a session runs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Path {
    /// Inside a Geneve tunnel, toward Open vSwitch (or another xgw). Frames
    /// leave through the uplink with `nexthop_mac` as destination.
    Geneve { ofport: u16, remote_ip: IpAddr, local_ip: IpAddr, vni: u32, nexthop_mac: [u8; 6] },
    /// Single-hop (RFC 5881) on an underlay interface, toward a router.
    SingleHop { ifname: String, peer_ip: Ipv4Addr, local_ip: Ipv4Addr },
}

/// The uplink the engine sends Geneve frames on.
#[derive(Clone, Debug)]
pub struct Uplink {
    pub ifname: String,
    pub mac: [u8; 6],
}

/// A session as `ovs-appctl bfd/show` reports it (and a few counters).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Status {
    pub name: String,
    pub path: Path,
    pub state: &'static str,
    pub diagnostic: &'static str,
    pub remote_state: &'static str,
    pub remote_diagnostic: &'static str,
    pub forwarding: bool,
    pub local_discriminator: u32,
    pub remote_discriminator: u32,
    pub detect_mult: u8,
    pub remote_detect_mult: u8,
    /// Negotiated: the interval we send at, and the remote's.
    pub tx_interval_ms: f64,
    pub rx_interval_ms: f64,
    pub detect_time_ms: f64,
    pub local_min_tx_ms: u32,
    pub local_min_rx_ms: u32,
    pub remote_min_tx_ms: f64,
    pub remote_min_rx_ms: f64,
    pub flap_count: u64,
    /// When the state last changed (CLOCK_MONOTONIC, `monotonic_ns`), as
    /// the engine saw it, across controller restarts.
    pub changed_ns: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub echo: bool,
    /// The last transmit error, if any.
    pub error: Option<String>,
    /// The same intervals in microseconds, as the session holds them.
    pub tx_interval_us: u32,
    pub rx_interval_us: u32,
    pub detect_time_us: u64,
    /// Desired Min TX and Required Min RX advertised now.
    pub advertised_us: (u32, u32),
    pub remote_min_tx_us: u32,
    pub remote_min_rx_us: u32,
    /// CLOCK_MONOTONIC: when detection expires (while it runs), when the
    /// next periodic packet is due, when the last one went (none before
    /// the first).
    pub detect_deadline_ns: Option<u64>,
    pub next_tx_ns: u64,
    pub last_tx_ns: Option<u64>,
    /// `FLAG_*` bits of the packet sent next, and of the last one received.
    pub local_flags: u8,
    pub remote_flags: u8,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("bfd session {0:?} already exists")]
    Exists(String),
    #[error("bfd session {name:?}: its path is already used by session {other:?} (duplicate tunnel?)")]
    DuplicatePath { name: String, other: String },
    #[error("no bfd session {0:?}")]
    NotFound(String),
    #[error("all {0} bfd session slots are in use")]
    Full(u32),
    #[error("bfd session {name:?}: echo is for single-hop sessions only")]
    EchoOnTunnel { name: String },
    #[error("bfd: the datapath has no map {0} (datapath object too old?)")]
    NoMap(&'static str),
    #[error("bfd: {what}: {source}")]
    Map { what: String, source: aya::maps::MapError },
    #[error("bfd: {what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("bfd engine thread has stopped")]
    Stopped,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of bpf_ktime_get_ns.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The mmap-ed `BFD_SESSIONS` array.
struct Slots {
    base: *mut BfdSession,
    len: usize,
    _map: MapData,
}

// The mapping is plain shared memory; every access is a volatile load or store
// of a field whose writer is fixed (see `BfdSession`).
unsafe impl Send for Slots {}

impl Slots {
    /// Maps every slot of `map`: as many as it was created with, which for
    /// a datapath adopted from an earlier xgw may be fewer than this
    /// build's `MAX_BFD_SESSIONS`.
    fn open(map: MapData) -> Result<Slots, Error> {
        let len = map
            .info()
            .map_err(|e| Error::Io { what: "reading BFD_SESSIONS' size".into(), source: io::Error::other(e) })?
            .max_entries() as usize;
        let bytes = len * std::mem::size_of::<BfdSession>();
        let fd = map.fd().as_fd_raw();
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), bytes, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if p == libc::MAP_FAILED {
            return Err(Error::Io { what: "mmap of BFD_SESSIONS".into(), source: io::Error::last_os_error() });
        }
        Ok(Slots { base: p as *mut BfdSession, len, _map: map })
    }

    fn get(&self, slot: u32) -> BfdSession {
        assert!((slot as usize) < self.len);
        unsafe { std::ptr::read_volatile(self.base.add(slot as usize)) }
    }

    fn rx(&self, slot: u32) -> Rx {
        let s = self.get(slot);
        Rx {
            state: s.state,
            diag: s.diag,
            remote_state: s.remote_state,
            remote_diag: s.remote_diag,
            remote_disc: s.remote_disc,
            remote_min_tx: s.remote_min_tx,
            remote_min_rx: s.remote_min_rx,
            remote_min_echo_rx: s.remote_min_echo_rx,
            remote_mult: s.remote_mult,
            remote_flags: s.remote_flags,
            down_ack: s.down_ack,
            poll_seq: s.poll_seq,
            final_seq: s.final_seq,
            rx_packets: s.rx_packets,
            last_rx_ns: s.last_rx_ns,
        }
    }

    /// A fresh session: the whole value is written while `ctl_flags` is 0
    /// (the datapath ignores the slot), flags last.
    fn init(&self, slot: u32, flags: u32, ctl: BfdSession) {
        assert!((slot as usize) < self.len);
        unsafe {
            let p = self.base.add(slot as usize);
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*p).ctl_flags), 0);
            std::sync::atomic::fence(Ordering::SeqCst);
            std::ptr::write_volatile(p, BfdSession { ctl_flags: 0, state: State::Down as u8, ..ctl });
            std::sync::atomic::fence(Ordering::SeqCst);
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*p).ctl_flags), flags);
        }
    }

    fn set_flags(&self, slot: u32, flags: u32) {
        assert!((slot as usize) < self.len);
        unsafe { std::ptr::write_volatile(std::ptr::addr_of_mut!((*self.base.add(slot as usize)).ctl_flags), flags) }
    }

    /// What the datapath needs to answer for the session, and the heartbeat.
    fn set_tx(&self, slot: u32, (adv_tx_us, adv_rx_us): (u32, u32), last_tx_ns: u64) {
        assert!((slot as usize) < self.len);
        unsafe {
            let p = self.base.add(slot as usize);
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*p).ctl_adv_tx_us), adv_tx_us);
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*p).ctl_adv_rx_us), adv_rx_us);
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*p).ctl_last_tx_ns), last_tx_ns);
        }
    }

    fn set_config(&self, slot: u32, config: &Config) {
        assert!((slot as usize) < self.len);
        unsafe {
            let p = self.base.add(slot as usize);
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*p).ctl_mult), config.mult);
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*p).ctl_cfg_tx_us), config.min_tx_ms * 1000);
        }
    }

    /// The controller's history of the session, for the next controller.
    fn set_history(&self, slot: u32, flaps: u64, changed_ns: u64) {
        assert!((slot as usize) < self.len);
        unsafe {
            let p = self.base.add(slot as usize);
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*p).ctl_flaps), flaps.min(u32::MAX as u64) as u32);
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*p).ctl_changed_ns), changed_ns);
        }
    }

    fn set_down_seq(&self, slot: u32, seq: u32) {
        assert!((slot as usize) < self.len);
        unsafe { std::ptr::write_volatile(std::ptr::addr_of_mut!((*self.base.add(slot as usize)).ctl_down_seq), seq) }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len * std::mem::size_of::<BfdSession>()) };
    }
}

trait RawFdOf {
    fn as_fd_raw(&self) -> RawFd;
}
impl RawFdOf for aya::maps::MapFd {
    fn as_fd_raw(&self) -> RawFd {
        use std::os::fd::AsFd;
        self.as_fd().as_raw_fd()
    }
}

enum Tx {
    Geneve(GeneveHeaders),
    SingleHop { sock: UdpSocket, peer: SocketAddrV4 },
}

struct Entry {
    name: String,
    path: Path,
    key: BfdPathKey,
    session: Session,
    tx: Tx,
    error: Option<String>,
    /// When `tick` has something to do for this session, as of its last
    /// pass over it. Only ever early: a received packet moves detection
    /// later, and what could move it earlier (a state change, a Poll with
    /// new intervals) arrives as an event, which clears it. `Inner::timers`
    /// holds it, so a pass costs O(sessions due), not O(sessions).
    due: u64,
}

struct Inner {
    slots: Slots,
    paths: BpfHashMap<MapData, BfdPathKey, u32>,
    entries: Vec<Option<Entry>>,
    by_name: BTreeMap<String, u32>,
    by_path: HashMap<BfdPathKey, u32>,
    uplink: Uplink,
    packet: Option<PacketSocket>,
    events: u64,
    /// Enabled sessions found in a pinned session map at start (a previous
    /// controller's), by path, until `add` adopts them.
    orphans: HashMap<BfdPathKey, u32>,
    /// (due, slot), earliest first: every entry's `due` is here. An entry
    /// whose `due` moved has its old pair left behind, skipped when it
    /// comes up. With thousands of sessions at OVN's timers, a scan of
    /// every entry per wake-up made the engine's CPU grow with the square
    /// of the sessions (wake-ups grow with them too).
    timers: BinaryHeap<Reverse<(u64, u32)>>,
}

enum Cmd {
    Add(String, Path, Config, mpsc::SyncSender<Result<(), Error>>),
    Remove(String, mpsc::SyncSender<Result<(), Error>>),
    Reconfigure(String, Config, mpsc::SyncSender<Result<(), Error>>),
}

struct Shared {
    inner: Mutex<Inner>,
    stop: AtomicBool,
    wake: OwnedFd,
}

impl Shared {
    fn wake(&self) {
        let one: u64 = 1;
        unsafe { libc::write(self.wake.as_raw_fd(), &one as *const u64 as *const libc::c_void, 8) };
    }
}

/// The BFD engine: `start` it on a loaded datapath, then `add` / `remove`
/// sessions and read their `status`. Dropping it stops the thread; the
/// sessions' map entries are disabled so the datapath stops answering for them.
pub struct Engine {
    shared: Arc<Shared>,
    cmds: mpsc::Sender<Cmd>,
    thread: Option<JoinHandle<()>>,
    /// `leave`: stop without disabling the sessions (a restart follows).
    keep_sessions: bool,
}

/// Options of `Engine::start`.
#[derive(Clone, Debug)]
pub struct Options {
    /// SCHED_FIFO priority of the transmit thread (1-99); 0 keeps the
    /// ordinary scheduler. If the kernel refuses (no CAP_SYS_NICE), the
    /// thread runs at ordinary priority and says so in the log.
    pub rt_priority: i32,
}

impl Default for Options {
    fn default() -> Options {
        Options { rt_priority: 50 }
    }
}

impl Engine {
    /// Takes the BFD maps out of `ebpf` and starts the transmit thread.
    /// Sockets are opened in the calling thread's network namespace.
    ///
    /// With the maps pinned (`datapath::load_with` and a pin directory),
    /// the sessions a previous controller left enabled are kept as they are
    /// (the datapath goes on receiving for them) and `add` of the same path
    /// adopts one instead of starting it from Down: same discriminator,
    /// state and remote, nothing visible to the peer. `release_unclaimed`
    /// ends those no `add` claimed.
    pub fn start(ebpf: &mut Ebpf, uplink: Uplink, options: Options) -> Result<Engine, Error> {
        let sessions = match ebpf.take_map(names::BFD_SESSIONS).ok_or(Error::NoMap(names::BFD_SESSIONS))? {
            Map::Array(m) => m,
            _ => return Err(Error::NoMap(names::BFD_SESSIONS)),
        };
        let paths: BpfHashMap<MapData, BfdPathKey, u32> =
            BpfHashMap::try_from(ebpf.take_map(names::BFD_PATHS).ok_or(Error::NoMap(names::BFD_PATHS))?)
                .map_err(|source| Error::Map { what: "BFD_PATHS".into(), source })?;
        let events = RingBuf::try_from(ebpf.take_map(names::BFD_EVENTS).ok_or(Error::NoMap(names::BFD_EVENTS))?)
            .map_err(|source| Error::Map { what: "BFD_EVENTS".into(), source })?;
        let slots = Slots::open(sessions)?;
        let orphans: HashMap<BfdPathKey, u32> = (0..slots.len as u32)
            .map(|slot| (slot, slots.get(slot)))
            .filter(|(_, s)| s.ctl_flags & BFD_ENABLED != 0)
            .map(|(slot, s)| (s.ctl_path, slot))
            .collect();
        if !orphans.is_empty() {
            tracing::info!("bfd: {} session(s) left running by a previous controller, to adopt", orphans.len());
        }
        let wake = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if wake < 0 {
            return Err(Error::Io { what: "eventfd".into(), source: io::Error::last_os_error() });
        }
        let wake = unsafe { OwnedFd::from_raw_fd(wake) };
        let packet = PacketSocket::open(&uplink.ifname)?;
        let mut entries = Vec::new();
        // As many sessions as both maps hold (BFD_PATHS may be smaller than
        // BFD_SESSIONS where an earlier xgw made them).
        let paths_len = paths
            .map()
            .info()
            .map_err(|e| Error::Io { what: "reading BFD_PATHS' size".into(), source: io::Error::other(e) })?
            .max_entries() as usize;
        entries.resize_with(slots.len.min(paths_len), || None);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                slots,
                paths,
                entries,
                by_name: BTreeMap::new(),
                by_path: HashMap::new(),
                uplink,
                packet: Some(packet),
                events: 0,
                orphans,
                timers: BinaryHeap::new(),
            }),
            stop: AtomicBool::new(false),
            wake,
        });
        let (cmds, rx) = mpsc::channel();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("xgw-bfd".into())
            .spawn(move || run(s, rx, events, options))
            .map_err(io_err("spawning the bfd thread"))?;
        Ok(Engine { shared, cmds, thread: Some(thread), keep_sessions: false })
    }

    /// Stops the engine but leaves its sessions enabled in the (pinned)
    /// maps, for the next controller to adopt: the datapath keeps receiving,
    /// and answering while the heartbeat is stale.
    pub fn leave(mut self) {
        self.keep_sessions = true;
    }

    /// Sessions of a previous controller that no `add` has adopted (by
    /// path key), e.g. removed from the configuration while no controller
    /// ran: disables them and removes their paths. Returns how many.
    pub fn release_unclaimed(&self) -> Result<usize, Error> {
        let mut inner = self.shared.inner.lock().unwrap();
        let orphans: Vec<_> = inner.orphans.drain().collect();
        for (key, slot) in &orphans {
            inner.slots.set_flags(*slot, 0);
            match inner.paths.remove(key) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(source) => {
                    return Err(Error::Map { what: "BFD_PATHS remove of an unclaimed session".into(), source })
                }
            }
        }
        Ok(orphans.len())
    }

    /// Sessions found at start and not adopted yet.
    pub fn unclaimed(&self) -> usize {
        self.shared.inner.lock().unwrap().orphans.len()
    }

    fn call(&self, make: impl FnOnce(mpsc::SyncSender<Result<(), Error>>) -> Cmd) -> Result<(), Error> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.cmds.send(make(tx)).map_err(|_| Error::Stopped)?;
        self.shared.wake();
        rx.recv().map_err(|_| Error::Stopped)?
    }

    /// Adds a session; it starts Down, sending once a second until Up, or
    /// adopts the one a previous controller left on the same path (see `start`).
    pub fn add(&self, name: &str, path: Path, config: Config) -> Result<(), Error> {
        self.call(|r| Cmd::Add(name.into(), path, config, r))
    }

    pub fn remove(&self, name: &str) -> Result<(), Error> {
        self.call(|r| Cmd::Remove(name.into(), r))
    }

    /// New intervals / multiplier for a running session (Poll Sequence if Up).
    pub fn reconfigure(&self, name: &str, config: Config) -> Result<(), Error> {
        self.call(|r| Cmd::Reconfigure(name.into(), config, r))
    }

    /// A Geneve session's underlay next hop changed (or resolved late): its
    /// frames go to `mac` from the next one on, the session keeps its state.
    pub fn set_nexthop(&self, name: &str, mac: [u8; 6]) -> Result<(), Error> {
        let mut inner = self.shared.inner.lock().unwrap();
        let slot = *inner.by_name.get(name).ok_or_else(|| Error::NotFound(name.into()))?;
        let e = inner.entries[slot as usize].as_mut().expect("indexed entry");
        if let (Tx::Geneve(h), Path::Geneve { nexthop_mac, .. }) = (&mut e.tx, &mut e.path) {
            h.dst_mac = mac;
            *nexthop_mac = mac;
        }
        Ok(())
    }

    /// The uplink's MAC changed: every Geneve session's frames carry it
    /// (outer and inner source) from the next one on.
    pub fn set_uplink_mac(&self, mac: [u8; 6]) {
        let mut inner = self.shared.inner.lock().unwrap();
        inner.uplink.mac = mac;
        for e in inner.entries.iter_mut().flatten() {
            if let Tx::Geneve(h) = &mut e.tx {
                h.src_mac = mac;
                h.inner_src_mac = mac;
            }
        }
    }

    /// All sessions, or the one named.
    pub fn status(&self, name: Option<&str>) -> Vec<Status> {
        let inner = self.shared.inner.lock().unwrap();
        inner
            .entries
            .iter()
            .enumerate()
            .filter_map(|(slot, e)| e.as_ref().map(|e| (slot as u32, e)))
            .filter(|(_, e)| name.is_none_or(|n| n == e.name))
            .map(|(slot, e)| status_of(e, &inner.slots.rx(slot)))
            .collect()
    }

    /// Ring buffer events consumed so far (state changes and Polls).
    pub fn events(&self) -> u64 {
        self.shared.inner.lock().unwrap().events
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let inner = self.shared.inner.lock().unwrap();
        for (slot, e) in inner.entries.iter().enumerate() {
            if e.is_some() && !self.keep_sessions {
                inner.slots.set_flags(slot as u32, 0);
            }
        }
    }
}

fn status_of(e: &Entry, rx: &Rx) -> Status {
    let v = e.session.view(rx);
    let ms = |us: u32| us as f64 / 1000.0;
    let s = &e.session;
    Status {
        name: e.name.clone(),
        path: e.path.clone(),
        state: v.state.name(),
        diagnostic: v.diag.name(),
        remote_state: v.remote_state.name(),
        remote_diagnostic: v.remote_diag.name(),
        forwarding: v.state == State::Up && v.remote_state == State::Up,
        local_discriminator: s.local_disc,
        remote_discriminator: v.remote_disc,
        detect_mult: s.config.mult,
        remote_detect_mult: rx.remote_mult,
        tx_interval_ms: ms(s.tx_interval_us(rx).unwrap_or(0)),
        rx_interval_ms: ms(rx.remote_min_tx.max(s.config.min_rx_ms * 1000)),
        detect_time_ms: s.detect_time_us(rx) as f64 / 1000.0,
        local_min_tx_ms: s.config.min_tx_ms,
        local_min_rx_ms: s.config.min_rx_ms,
        remote_min_tx_ms: ms(rx.remote_min_tx),
        remote_min_rx_ms: ms(rx.remote_min_rx),
        flap_count: s.flaps,
        changed_ns: s.last_state().1,
        rx_packets: rx.rx_packets,
        tx_packets: s.tx_packets,
        echo: s.config.echo,
        error: e.error.clone(),
        tx_interval_us: s.tx_interval_us(rx).unwrap_or(0),
        rx_interval_us: rx.remote_min_tx.max(s.config.min_rx_ms * 1000),
        detect_time_us: s.detect_time_us(rx),
        advertised_us: s.advertised(),
        remote_min_tx_us: rx.remote_min_tx,
        remote_min_rx_us: rx.remote_min_rx,
        detect_deadline_ns: s.detect_deadline_ns(rx),
        next_tx_ns: s.next_tx_ns(),
        last_tx_ns: (s.tx_packets > 0).then(|| s.last_tx_ns()),
        local_flags: s.flags(rx),
        remote_flags: rx.remote_flags,
    }
}

/// Discarded BFD packets by reason (`bfd::DecodeError`), summed over CPUs.
pub fn drops(ebpf: &Ebpf) -> Result<BTreeMap<&'static str, u64>, Error> {
    let m: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(ebpf.map(names::BFD_DROPS).ok_or(Error::NoMap(names::BFD_DROPS))?)
            .map_err(|source| Error::Map { what: "BFD_DROPS".into(), source })?;
    DecodeError::ALL
        .iter()
        .map(|d| {
            let v = m.get(&(*d as u32), 0).map_err(|source| Error::Map { what: "BFD_DROPS".into(), source })?;
            Ok((d.name(), v.iter().sum()))
        })
        .collect()
}

/// `BFD_COUNTERS` summed over CPUs: (valid control packets received, echo
/// packets reflected, events lost).
pub fn counters(ebpf: &Ebpf) -> Result<(u64, u64, u64), Error> {
    let m: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(ebpf.map(names::BFD_COUNTERS).ok_or(Error::NoMap(names::BFD_COUNTERS))?)
            .map_err(|source| Error::Map { what: "BFD_COUNTERS".into(), source })?;
    let get = |i: u32| -> Result<u64, Error> {
        Ok(m.get(&i, 0).map_err(|source| Error::Map { what: "BFD_COUNTERS".into(), source })?.iter().sum())
    };
    Ok((get(BFD_CNT_RX)?, get(BFD_CNT_ECHO_REFLECTED)?, get(BFD_CNT_EVENTS_LOST)?))
}

fn path_key(path: &Path) -> Result<BfdPathKey, Error> {
    Ok(match path {
        Path::Geneve { remote_ip, vni, .. } => {
            let peer = match remote_ip {
                IpAddr::V4(a) => ipv4_mapped(a.octets()),
                IpAddr::V6(a) => a.octets(),
            };
            BfdPathKey { kind: BFD_PATH_GENEVE, id: *vni, peer }
        }
        Path::SingleHop { ifname, peer_ip, .. } => {
            let c = std::ffi::CString::new(ifname.as_str()).map_err(|_| Error::Io {
                what: format!("interface name {ifname:?}"),
                source: io::ErrorKind::InvalidInput.into(),
            })?;
            let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
            if ifindex == 0 {
                return Err(Error::Io { what: format!("interface {ifname}"), source: io::Error::last_os_error() });
            }
            BfdPathKey { kind: BFD_PATH_SINGLE_HOP, id: ifindex, peer: ipv4_mapped(peer_ip.octets()) }
        }
    })
}

/// A UDP socket for single-hop control packets: TTL 255 and TOS CS6 (RFC
/// 5881 section 5), source port in 49152-65535 (section 4), bound to the
/// interface so the packets leave on the path the session watches.
fn single_hop_socket(ifname: &str, local: Ipv4Addr, disc: u32, preferred: u16) -> Result<(UdpSocket, u16), Error> {
    // An adopted session keeps its port (RFC 5881 section 4: one per session).
    let first = if preferred >= wire::SRC_PORT_MIN { preferred } else { wire::SRC_PORT_MIN + (disc % 16384) as u16 };
    let mut last_err = None;
    for i in 0..16384u16 {
        let port = wire::SRC_PORT_MIN + (first - wire::SRC_PORT_MIN).wrapping_add(i) % 16384;
        match UdpSocket::bind(SocketAddrV4::new(local, port)) {
            Ok(s) => {
                let fd = s.as_raw_fd();
                let set = |level, opt, v: libc::c_int| unsafe {
                    libc::setsockopt(fd, level, opt, &v as *const _ as *const libc::c_void, 4)
                };
                if set(libc::IPPROTO_IP, libc::IP_TTL, 255) != 0 || set(libc::IPPROTO_IP, libc::IP_TOS, 0xc0) != 0 {
                    return Err(Error::Io {
                        what: "setting TTL 255 / TOS on the bfd socket".into(),
                        source: io::Error::last_os_error(),
                    });
                }
                let r = unsafe {
                    libc::setsockopt(
                        fd,
                        libc::SOL_SOCKET,
                        libc::SO_BINDTODEVICE,
                        ifname.as_ptr() as *const libc::c_void,
                        ifname.len() as u32,
                    )
                };
                if r != 0 {
                    return Err(Error::Io {
                        what: format!("binding the bfd socket to {ifname}"),
                        source: io::Error::last_os_error(),
                    });
                }
                s.set_nonblocking(true).map_err(io_err("bfd socket"))?;
                return Ok((s, port));
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_err = Some(e),
            Err(e) => return Err(Error::Io { what: format!("binding a bfd socket to {local}:{port}"), source: e }),
        }
    }
    Err(Error::Io { what: "no free source port in 49152-65535".into(), source: last_err.unwrap() })
}

/// AF_PACKET on the uplink: Geneve frames are built whole (see `frame`).
struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    fn open(ifname: &str) -> Result<PacketSocket, Error> {
        let c = std::ffi::CString::new(ifname).unwrap_or_default();
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) } as i32;
        if ifindex == 0 {
            return Err(Error::Io { what: format!("uplink {ifname}"), source: io::Error::last_os_error() });
        }
        // Protocol 0: send only, nothing is queued to this socket.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
        if fd < 0 {
            return Err(Error::Io { what: "AF_PACKET socket for bfd".into(), source: io::Error::last_os_error() });
        }
        Ok(PacketSocket { fd: unsafe { OwnedFd::from_raw_fd(fd) }, ifindex })
    }

    /// Sends `frames` with as few system calls as the kernel allows
    /// (`sendmmsg`); returns, for each frame that did not go, its index and
    /// why. At thousands of sessions the per-packet system call was the
    /// engine's largest cost.
    fn send_batch(&self, frames: &[Vec<u8>]) -> Vec<(usize, io::Error)> {
        let mut addrs: Vec<libc::sockaddr_ll> = frames
            .iter()
            .map(|f| {
                let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_ifindex = self.ifindex;
                sll.sll_halen = 6;
                sll.sll_addr[..6].copy_from_slice(&f[..6]);
                sll
            })
            .collect();
        let mut iovs: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec { iov_base: f.as_ptr() as *mut libc::c_void, iov_len: f.len() })
            .collect();
        // SAFETY: zeroed mmsghdr is a valid empty header; each points at its
        // own address and iovec, which outlive the calls below.
        let mut msgs: Vec<libc::mmsghdr> = addrs
            .iter_mut()
            .zip(iovs.iter_mut())
            .map(|(a, iov)| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_name = (a as *mut libc::sockaddr_ll).cast();
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let mut failed = Vec::new();
        let mut at = 0;
        while at < msgs.len() {
            // SAFETY: msgs[at..] are valid headers (above).
            let n =
                unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs[at..].as_mut_ptr(), (msgs.len() - at) as u32, 0) };
            if n > 0 {
                at += n as usize;
                continue;
            }
            // The frame at `at` failed: say so for it alone, send the rest.
            failed.push((at, io::Error::last_os_error()));
            at += 1;
        }
        failed
    }
}

impl Inner {
    fn add(&mut self, name: String, path: Path, config: Config) -> Result<(), Error> {
        config.validate()?;
        if self.by_name.contains_key(&name) {
            return Err(Error::Exists(name));
        }
        if config.echo && matches!(path, Path::Geneve { .. }) {
            return Err(Error::EchoOnTunnel { name });
        }
        let key = path_key(&path)?;
        if let Some(&other) = self.by_path.get(&key) {
            let other = self.entries[other as usize].as_ref().map(|e| e.name.clone()).unwrap_or_default();
            return Err(Error::DuplicatePath { name, other });
        }
        let adopted = self.orphans.remove(&key).map(|slot| (slot, self.slots.get(slot)));
        let slot = match adopted {
            Some((slot, _)) => slot,
            None => self
                .entries
                .iter()
                .enumerate()
                .position(|(i, e)| e.is_none() && !self.orphans.values().any(|&o| o as usize == i))
                .ok_or(Error::Full(self.entries.len() as u32))? as u32,
        };
        // Random high half: a controller that starts afresh does not reuse
        // the discriminators its peers still remember.
        let disc = match adopted {
            Some((_, s)) => s.ctl_local_disc,
            None => (u32::from(fastrand::u16(1..)) << 16) | slot,
        };
        let mut sport = 0;
        let tx = match &path {
            Path::Geneve { remote_ip, local_ip, vni, nexthop_mac, .. } => Tx::Geneve(GeneveHeaders {
                src_mac: self.uplink.mac,
                dst_mac: *nexthop_mac,
                local_ip: *local_ip,
                remote_ip: *remote_ip,
                vni: *vni,
                sport: wire::SRC_PORT_MIN + (disc.wrapping_mul(2654435761) >> 18) as u16,
                inner_src_mac: self.uplink.mac,
                inner_sport: wire::SRC_PORT_MIN,
            }),
            Path::SingleHop { ifname, peer_ip, local_ip } => {
                let (sock, port) =
                    match single_hop_socket(ifname, *local_ip, disc, adopted.map_or(0, |(_, s)| s.ctl_sport)) {
                        Ok(s) => s,
                        Err(e) => {
                            if let Some((slot, _)) = adopted {
                                self.orphans.insert(key, slot);
                            }
                            return Err(e);
                        }
                    };
                sport = port;
                Tx::SingleHop { sock, peer: SocketAddrV4::new(*peer_ip, wire::CONTROL_PORT) }
            }
        };
        let flags = BFD_ENABLED | if config.echo { BFD_ECHO } else { 0 };
        let now = monotonic_ns();
        let session = match adopted {
            Some((slot, s)) => {
                // The settings the previous controller ran with; if they
                // differ from `config`, the next tick polls the change.
                let before = Config {
                    min_tx_ms: s.ctl_cfg_tx_us / 1000,
                    min_rx_ms: s.ctl_adv_rx_us / 1000,
                    mult: s.ctl_mult,
                    echo: s.ctl_flags & BFD_ECHO != 0,
                };
                let mut session = Session::adopt(
                    before,
                    disc,
                    (s.ctl_adv_tx_us, s.ctl_adv_rx_us),
                    s.ctl_down_seq,
                    (s.ctl_flaps as u64, s.ctl_changed_ns),
                    &self.slots.rx(slot),
                    now,
                );
                session.reconfigure(config);
                self.slots.set_config(slot, &config);
                self.slots.set_flags(slot, flags);
                tracing::info!(session = %name, "bfd: adopted (discriminator {disc:#x}, {})", session.view(&self.slots.rx(slot)).state.name());
                session
            }
            None => {
                let session = Session::new(config, disc, now);
                let ctl = BfdSession {
                    ctl_local_disc: disc,
                    ctl_path: key,
                    ctl_mult: config.mult,
                    ctl_sport: sport,
                    ctl_cfg_tx_us: config.min_tx_ms * 1000,
                    ctl_adv_tx_us: session.advertised().0,
                    ctl_adv_rx_us: session.advertised().1,
                    ctl_last_tx_ns: now,
                    ..BfdSession::default()
                };
                self.slots.init(slot, flags, ctl);
                session
            }
        };
        self.paths
            .insert(key, slot, 0)
            .map_err(|source| Error::Map { what: format!("BFD_PATHS insert for {name}"), source })?;
        self.by_path.insert(key, slot);
        self.by_name.insert(name.clone(), slot);
        self.entries[slot as usize] = Some(Entry { name, path, key, session, tx, error: None, due: 0 });
        self.timers.push(Reverse((0, slot)));
        Ok(())
    }

    fn remove(&mut self, name: &str) -> Result<(), Error> {
        let slot = self.by_name.remove(name).ok_or_else(|| Error::NotFound(name.into()))?;
        let e = self.entries[slot as usize].take().expect("indexed entry");
        self.slots.set_flags(slot, 0);
        self.by_path.remove(&e.key);
        self.paths.remove(&e.key).map_err(|source| Error::Map { what: format!("BFD_PATHS remove for {name}"), source })
    }

    fn reconfigure(&mut self, name: &str, config: Config) -> Result<(), Error> {
        config.validate()?;
        let slot = *self.by_name.get(name).ok_or_else(|| Error::NotFound(name.into()))?;
        let e = self.entries[slot as usize].as_mut().expect("indexed entry");
        if config.echo && matches!(e.path, Path::Geneve { .. }) {
            return Err(Error::EchoOnTunnel { name: name.into() });
        }
        e.session.reconfigure(config);
        e.due = 0;
        self.timers.push(Reverse((0, slot)));
        self.slots.set_config(slot, &config);
        self.slots.set_flags(slot, BFD_ENABLED | if config.echo { BFD_ECHO } else { 0 });
        Ok(())
    }

    /// One pass over the sessions that are due; returns the earliest next
    /// deadline.
    fn tick(&mut self, now: u64, rng: &mut fastrand::Rng) -> u64 {
        let mut batch = Vec::new();
        let next = self.pass(now, rng, &mut batch);
        if let (Some(p), false) = (&self.packet, batch.is_empty()) {
            let (slots, frames): (Vec<u32>, Vec<Vec<u8>>) = batch.into_iter().unzip();
            for (i, err) in p.send_batch(&frames) {
                if let Some(e) = self.entries[slots[i] as usize].as_mut() {
                    e.error = Some(err.to_string());
                }
            }
        }
        next
    }

    /// The due sessions' work but their Geneve frames, which go to `batch`
    /// (slot, frame); returns the earliest next deadline.
    fn pass(&mut self, now: u64, rng: &mut fastrand::Rng, batch: &mut Vec<(u32, Vec<u8>)>) -> u64 {
        let idle = now + 1_000_000_000;
        while let Some(&Reverse((due, slot))) = self.timers.peek() {
            if due > now {
                return due.min(idle);
            }
            self.timers.pop();
            let Some(e) = self.entries[slot as usize].as_mut() else { continue };
            if e.due != due {
                continue;
            }
            let rx = self.slots.rx(slot);
            let a = e.session.tick(now, &rx, rng.f64());
            if let Some(seq) = a.down_seq {
                self.slots.set_down_seq(slot, seq);
                tracing::info!(session = %e.name, "bfd: detection time expired, session down");
            }
            self.slots.set_tx(slot, e.session.advertised(), e.session.last_tx_ns());
            if a.changed {
                self.slots.set_history(slot, e.session.flaps, e.session.last_state().1);
            }
            if let Some(c) = a.send {
                let r = match &e.tx {
                    // A frame to 00:00:00:00:00:00 would only be flooded
                    // (or dropped) by the underlay: wait for the next hop.
                    Tx::Geneve(h) if h.dst_mac == [0; 6] => {
                        Err(io::Error::other("not sent: the next hop is unresolved"))
                    }
                    // Sent with the pass's other Geneve frames, below.
                    Tx::Geneve(h) if self.packet.is_some() => {
                        batch.push((slot, frame::geneve_frame(h, &c)));
                        Ok(())
                    }
                    Tx::Geneve(_) => Err(io::ErrorKind::NotConnected.into()),
                    Tx::SingleHop { sock, peer } => sock.send_to(&c.encode(), peer).map(|_| ()),
                };
                e.error = r.err().map(|err| err.to_string());
            }
            // Not before the next pass: one pass never takes a session twice.
            e.due = e.session.deadline(&rx).max(now + 1);
            self.timers.push(Reverse((e.due, slot)));
        }
        idle
    }
}

fn set_realtime(priority: i32) {
    if priority <= 0 {
        return;
    }
    let param = libc::sched_param { sched_priority: priority };
    let r = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    if r != 0 {
        tracing::warn!(
            "bfd: cannot run the transmit thread at SCHED_FIFO {priority} ({}); using the ordinary scheduler",
            io::Error::from_raw_os_error(r)
        );
    }
}

fn run(shared: Arc<Shared>, cmds: mpsc::Receiver<Cmd>, mut events: RingBuf<MapData>, options: Options) {
    set_realtime(options.rt_priority);
    let mut rng = fastrand::Rng::new();
    let ev_fd = events.as_raw_fd();
    let wake_fd = shared.wake.as_raw_fd();
    while !shared.stop.load(Ordering::SeqCst) {
        let next = {
            let mut inner = shared.inner.lock().unwrap();
            while let Ok(cmd) = cmds.try_recv() {
                let _ = match cmd {
                    Cmd::Add(name, path, config, reply) => reply.send(inner.add(name, path, config)),
                    Cmd::Remove(name, reply) => reply.send(inner.remove(&name)),
                    Cmd::Reconfigure(name, config, reply) => reply.send(inner.reconfigure(&name, config)),
                };
            }
            while let Some(item) = events.next() {
                inner.events += 1;
                if item.len() >= std::mem::size_of::<BfdEvent>() {
                    let ev: BfdEvent = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const BfdEvent) };
                    if let Some(Some(e)) = inner.entries.get_mut(ev.slot as usize) {
                        e.due = 0;
                        inner.timers.push(Reverse((0, ev.slot)));
                    }
                    if ev.kind == BFD_EVENT_STATE {
                        let name = inner.entries.get(ev.slot as usize).and_then(|e| e.as_ref()).map(|e| e.name.clone());
                        tracing::info!(
                            session = name.as_deref().unwrap_or("?"),
                            "bfd: {} -> {} ({}), remote {}",
                            State::from_bits(ev.old_state).name(),
                            State::from_bits(ev.new_state).name(),
                            Diag::from_bits(ev.diag).name(),
                            State::from_bits(ev.remote_state).name()
                        );
                    }
                }
            }
            let now = monotonic_ns();
            inner.tick(now, &mut rng)
        };
        let now = monotonic_ns();
        let wait = next.saturating_sub(now);
        let ts = libc::timespec { tv_sec: (wait / 1_000_000_000) as i64, tv_nsec: (wait % 1_000_000_000) as i64 };
        let mut fds = [
            libc::pollfd { fd: ev_fd, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: wake_fd, events: libc::POLLIN, revents: 0 },
        ];
        unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &ts, std::ptr::null()) };
        if fds[1].revents != 0 {
            let mut v: u64 = 0;
            unsafe { libc::read(wake_fd, &mut v as *mut u64 as *mut libc::c_void, 8) };
        }
    }
}
