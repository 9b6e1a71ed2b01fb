//! The embedded XDP object and the few operations every program shares:
//! loading, attaching in a chosen XDP mode, and summing per-CPU counters.
use std::{
    os::fd::{AsFd, AsRawFd},
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{Context, Result};
use aya::{
    maps::{Array, Map, MapData, PerCpuArray},
    programs::{ProgramError, SchedClassifier, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use xgw_common::{counters::Counter, maps::names};

/// The datapath object built from `datapath-ebpf/` by `build.rs`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xgw-datapath.o"));

/// How an XDP program is attached. Native (driver) mode is the product; generic
/// (skb) mode exists for interfaces without driver support and is slow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachMode {
    Native,
    Skb,
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttachMode::Native => "native",
            AttachMode::Skb => "skb",
        })
    }
}

/// The largest uplink MTU the datapath carries in full when attached in
/// `mode`, with or without an IPv6 tunnel address.
///
/// Every program is multi-buffer (`#[xdp(frags)]`), so neither mode caps
/// the MTU at a page any more: in native mode the driver must support
/// multi-buffer XDP, and the kernel refuses an MTU it cannot take (veth
/// takes 65535 with a frags program on either end, where a single-buffer
/// one capped its peer at 3506). What is left is the datapath's own limit:
/// encap toward an IPv6 tunnel sums the outer UDP checksum over at most
/// `MAX_FRAME_IPV6` bytes of a multi-buffer frame, and drops a longer one
/// (`multibuffer`); IPv4 sends a zero checksum and carries any frame its
/// 16-bit lengths can describe.
pub fn max_mtu(mode: AttachMode, ipv6: bool) -> u32 {
    const ETH_MAX_MTU: u32 = 65535;
    match mode {
        AttachMode::Native | AttachMode::Skb if ipv6 => {
            xgw_common::maps::MAX_FRAME_IPV6 - xgw_common::wire::ETH_HLEN as u32
        }
        AttachMode::Native | AttachMode::Skb => ETH_MAX_MTU,
    }
}

impl AttachMode {
    pub fn xdp_mode(self) -> XdpMode {
        match self {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
        }
    }
}

/// Loads the whole datapath object (all programs and maps) into the kernel.
pub fn load() -> Result<Ebpf> {
    load_with(LoadOptions::default())
}

/// Gives a datapath whose `FLOOD_SECRET` is still unset (a new map) its
/// random secret; one already set (a pinned map adopted) keeps it, so the
/// programs left attached and the new ones agree. Every load goes through
/// here: with the secret unset, `xgw_flood` takes no trailer as xgw's and
/// floods go nowhere.
pub fn seal_floods(ebpf: &mut Ebpf) -> Result<()> {
    let map = ebpf.map_mut(names::FLOOD_SECRET).context("the datapath object has no map FLOOD_SECRET")?;
    let mut secret: Array<&mut MapData, u64> = Array::try_from(map)?;
    if secret.get(&0, 0).context("reading FLOOD_SECRET")? != 0 {
        return Ok(());
    }
    let mut value = 0u64;
    while value == 0 {
        let mut bytes = [0u8; 8];
        // SAFETY: getrandom writes at most `bytes.len()` bytes into `bytes`.
        let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        if n != bytes.len() as isize {
            return Err(std::io::Error::last_os_error()).context("getrandom for FLOOD_SECRET");
        }
        value = u64::from_ne_bytes(bytes);
    }
    secret.set(0, value, 0).context("writing FLOOD_SECRET")
}

/// The maps the controller writes. Pinned, they outlive the controller:
/// a restart reopens them (`ofport::BpfDatapath::open_pinned`) and
/// reconciles, instead of starting the datapath from empty maps.
pub const CONFIG_MAPS: &[&str] = &[
    names::UPLINK,
    // Kept across restarts like the rest: a flood in flight between the
    // old programs and the new must still be taken as xgw's.
    names::FLOOD_SECRET,
    names::DEVMAP,
    names::LOCAL_PORTS,
    names::PORT_KEYS,
    names::FDB,
    names::NEIGH,
    names::TUNNELS,
    names::TUNNEL_BY_REMOTE,
    names::VNIS,
    names::GROUPS,
    names::PORT_IFINDEX,
    names::PORT_SECURITY,
    names::PORT_RECORDS,
    // The flow caches' generation: a restarted controller must bump the
    // counter that the programs left attached read.
    names::GENERATION,
    // BFD: the sessions' shared state (both halves) and the datapath's
    // events, so that a restarted controller adopts running sessions
    // (`bfd::Engine::start`) and the program left attached meanwhile keeps
    // writing where the new controller reads.
    names::BFD_SESSIONS,
    names::BFD_PATHS,
    names::BFD_EVENTS,
];

/// How to load the datapath object.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadOptions<'a> {
    /// Pin the configuration maps as `<dir>/<MAP NAME>`, reusing maps
    /// already pinned there (with the size they were created with).
    pub pin_dir: Option<&'a Path>,
    /// `max_entries` overrides by map name, for maps not yet pinned.
    pub max_entries: &'a [(&'a str, u32)],
}

/// Loads the datapath object with `options`.
pub fn load_with(options: LoadOptions<'_>) -> Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    for &(name, size) in options.max_entries {
        loader.map_max_entries(name, size);
    }
    if let Some(dir) = options.pin_dir {
        check_pinned_layouts(CONFIG_MAPS.iter().map(|&name| (name, dir.join(name))))?;
        for &name in CONFIG_MAPS {
            loader.map_pin_path(name, dir.join(name));
        }
    }
    let mut ebpf = loader.load(OBJECT).with_context(|| match options.pin_dir {
        Some(dir) => format!("loading the xgw datapath with its maps pinned in {}", dir.display()),
        None => "loading the xgw datapath into the kernel (are you root, with BPF enabled?)".into(),
    })?;
    seal_floods(&mut ebpf)?;
    Ok(ebpf)
}

/// Refuses pinned maps (name, path) that this build's object declares
/// otherwise: key or value size, or the length of an array (whose index
/// space is an enum's, as DROPS' is the drop reasons'). They were made by
/// another xgw version (a map's layout changed, e.g. LOCAL_PORTS when port
/// security came), and the new programs would misread them, or fail the
/// verifier. This says what happened and what to do instead.
pub fn check_pinned_layouts(maps: impl IntoIterator<Item = (&'static str, std::path::PathBuf)>) -> Result<()> {
    use aya_obj::generated::bpf_map_type::{BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PERCPU_ARRAY};
    let obj = aya_obj::Object::parse(OBJECT).context("parsing the embedded datapath object")?;
    for (name, path) in maps {
        if !path.exists() {
            continue;
        }
        let want = obj.maps.get(name).with_context(|| format!("the datapath object has no map {name}"))?;
        let pinned = aya::maps::MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        let info = pinned.info().with_context(|| format!("reading {}", path.display()))?;
        let (key, value) = (info.key_size(), info.value_size());
        if (key, value) != (want.key_size(), want.value_size()) {
            anyhow::bail!(
                "{} was made by another xgw version (key {key} and value {value} bytes, this one needs {} and \
                 {}): {FOREIGN_DATAPATH}",
                path.display(),
                want.key_size(),
                want.value_size()
            );
        }
        let array = [BPF_MAP_TYPE_ARRAY as u32, BPF_MAP_TYPE_PERCPU_ARRAY as u32].contains(&want.map_type());
        // BFD_SESSIONS' length is a capacity, not an index space: the engine
        // uses as many slots as the pinned map has (an earlier xgw made it
        // with fewer), so adopting it keeps its sessions running.
        let capacity = name == names::BFD_SESSIONS;
        if array && !capacity && info.max_entries() != want.max_entries() {
            anyhow::bail!(
                "{} was made by another xgw version ({} entries, this one needs {}): {FOREIGN_DATAPATH}",
                path.display(),
                info.max_entries(),
                want.max_entries()
            );
        }
    }
    Ok(())
}

const FOREIGN_DATAPATH: &str = "the running datapath cannot be adopted; remove it with `xgw uninstall` for this \
                                uplink (traffic stops until the next start) and start again";

/// Loads the datapath with its configuration maps pinned in `dir` (a
/// bpffs directory), creating them there on first use.
pub fn load_pinned(dir: &Path) -> Result<Ebpf> {
    load_with(LoadOptions { pin_dir: Some(dir), ..LoadOptions::default() })
}

/// Loads (verifies) one XDP program of `ebpf` and returns it.
pub fn xdp_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .with_context(|| format!("the datapath object has no program {name}"))?
        .try_into()
        .with_context(|| format!("program {name} is not an XDP program"))?;
    prog.load().with_context(|| format!("the kernel rejected XDP program {name}"))?;
    Ok(prog)
}

/// The flood program (`xgw_flood`, TC ingress): loads (verifies) it.
pub const FLOOD_PROGRAM: &str = "xgw_flood";

pub fn flood_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(FLOOD_PROGRAM)
        .with_context(|| format!("the datapath object has no program {FLOOD_PROGRAM}"))?
        .try_into()
        .with_context(|| format!("program {FLOOD_PROGRAM} is not a TC program"))?;
    if prog.fd().is_err() {
        prog.load().with_context(|| format!("the kernel rejected TC program {FLOOD_PROGRAM}"))?;
    }
    Ok(prog)
}

/// Turns an attach failure into one sentence an operator can act on.
pub fn explain_attach_error(iface: &str, mode: AttachMode, err: ProgramError) -> anyhow::Error {
    let text = format!("{err}");
    let inner = match &err {
        ProgramError::UnknownInterface { .. } => {
            return anyhow::anyhow!("interface {iface} does not exist (check `ip link`)")
        }
        ProgramError::SyscallError(e) => Some(e.io_error.raw_os_error()),
        _ => None,
    };
    if mode == AttachMode::Native
        && (inner == Some(Some(libc::EOPNOTSUPP))
            || text.contains("not supported")
            || text.contains("Operation not supported"))
    {
        return anyhow::anyhow!(
            "interface {iface} does not support native XDP (driver mode); use a driver with XDP support, or --mode skb for the slow generic mode"
        );
    }
    if inner == Some(Some(libc::EBUSY)) || text.contains("busy") {
        return anyhow::anyhow!(
            "interface {iface} already has an XDP program attached; detach it first (bpftool net show dev {iface})"
        );
    }
    anyhow::anyhow!("attaching XDP ({mode:?} mode) to {iface} failed: {text}")
}

/// Per-CPU counters summed over all CPUs, one per index `0..len`.
pub fn sum_percpu(map: &PerCpuArray<MapData, Counter>, len: u32) -> Result<Vec<Counter>> {
    (0..len)
        .map(|i| {
            let per_cpu = map.get(&i, 0).with_context(|| format!("reading counter {i}"))?;
            Ok(per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
                packets: acc.packets + c.packets,
                bytes: acc.bytes + c.bytes,
            }))
        })
        .collect()
}

/// The flow caches' generation counter (`GENERATION`, see
/// `xgw_common::maps::FLOW_SLOTS`), mapped into this process. Every writer of
/// LOCAL_PORTS, PORT_KEYS, FDB, TUNNELS, TUNNEL_BY_REMOTE or UPLINK calls
/// `bump` after its write, so that no packet after it uses a cached copy of what
/// the maps held before.
///
/// The add is atomic on the shared mapping: writers in several threads or
/// processes (a controller and a test, a restarted daemon) never lose a
/// bump, so the counter never returns to a value a cache entry was tagged
/// with.
pub struct Generation {
    counter: *const AtomicU64,
}

// The mapping is plain shared memory, accessed only atomically.
unsafe impl Send for Generation {}
unsafe impl Sync for Generation {}

impl Generation {
    /// Maps the GENERATION array of `map`. The mapping holds its own
    /// reference to the map: `map` may be closed afterwards.
    pub fn open(map: &Map) -> Result<Generation> {
        let Map::Array(data) = map else { anyhow::bail!("{} is not an array map", names::GENERATION) };
        let fd = data.fd().as_fd().as_raw_fd();
        // SAFETY: a shared mapping of the map's one page-rounded value.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                GENERATION_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error())
                .context("mmap of the GENERATION map (created without BPF_F_MMAPABLE?)");
        }
        Ok(Generation { counter: p as *const AtomicU64 })
    }

    /// Opens `<dir>/GENERATION`, as pinned by `load_pinned`.
    pub fn open_pinned(dir: &Path) -> Result<Generation> {
        let path = dir.join(names::GENERATION);
        let data = MapData::from_pin(&path).with_context(|| format!("opening pinned map {}", path.display()))?;
        Generation::open(&Map::from_map_data(data)?)
    }

    /// Invalidates every flow cache entry filled before now.
    pub fn bump(&self) {
        // SAFETY: `counter` points into a live mapping of at least 8 bytes.
        unsafe { &*self.counter }.fetch_add(1, Ordering::SeqCst);
    }

    /// Bumps when dropped: at the end of a scope of writes, however it ends.
    pub fn after_writes(&self) -> BumpOnDrop<'_> {
        BumpOnDrop(self)
    }

    pub fn get(&self) -> u64 {
        unsafe { &*self.counter }.load(Ordering::SeqCst)
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.counter as *mut libc::c_void, GENERATION_BYTES) };
    }
}

pub struct BumpOnDrop<'a>(&'a Generation);

impl Drop for BumpOnDrop<'_> {
    fn drop(&mut self) {
        self.0.bump();
    }
}

/// One u64 (the kernel maps the whole page).
const GENERATION_BYTES: usize = 8;
