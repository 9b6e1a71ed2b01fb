//! `xgw run`: the daemon.
//!
//! Start: check the config file and flags (nothing is touched before they
//! pass), take the state directory's lock (one daemon per uplink), load the
//! datapath against the maps pinned under the bpffs directory, put
//! `xgw_uplink` on the uplink (swapping the program of a pinned link in
//! place when a previous daemon left one: forwarding never stops), write the
//! uplink's entries, reconcile the maps with the stores, apply the config
//! file, then serve the API socket and the metrics.
//!
//! Stop: SIGTERM or SIGINT removes what the daemon attached and pinned,
//! unless `--keep-datapath`; the stores stay, so the next start restores
//! every port under its number. SIGKILL leaves the datapath running; the
//! next daemon adopts it. SIGHUP re-reads the config file.
pub mod bfd;
mod desired;
mod dispatch;
mod effects;
mod links;
pub mod netlink;
mod nexthops;
mod ovn;
pub mod pins;
pub mod recovery;
mod server;
pub mod southbound;
mod uplink;
mod views;

use std::{
    ffi::CString,
    fs::{self, File, OpenOptions},
    io::{Read, Write},
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use tokio::{
    net::UnixListener,
    signal::unix::{signal, SignalKind},
    sync::{mpsc, oneshot, watch},
};

use crate::{
    api::{Reply, Request},
    config::Config,
    datapath::{self, AttachMode},
    ofport::{AllocatorConfig, BpfDatapath, PortMap, RedbStore},
};
pub use dispatch::Daemon;
use pins::{Pins, UPLINK_PROGRAM};

/// The committed ports, tunnels and bindings, on the real maps and store.
pub type Ports = PortMap<BpfDatapath, RedbStore>;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/xgw";
pub const DEFAULT_BPFFS_ROOT: &str = "/sys/fs/bpf/xgw";

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub uplink: String,
    /// Unicast, IPv4-mapped ones already IPv4 (`UnicastIp`).
    pub local_ips: Vec<crate::types::UnicastIp>,
    pub mode: AttachMode,
    pub config: Option<PathBuf>,
    pub state_dir: PathBuf,
    /// Defaults to `/sys/fs/bpf/xgw/<uplink>`.
    pub bpffs: Option<PathBuf>,
    pub socket: PathBuf,
    pub metrics: Option<SocketAddr>,
    pub keep_datapath: bool,
    /// Start although the store is missing, empty or damaged while the
    /// pinned datapath holds ports: they are removed (`recovery`).
    pub accept_store_loss: bool,
    /// xgw as a chassis of OVN (`--ovn-remote`, `--chassis`, `[ovn]`).
    pub ovn: Option<OvnOptions>,
    pub nexthop_refresh: Duration,
    /// SCHED_FIFO priority of the BFD transmit thread (0: ordinary).
    pub bfd_rt_priority: i32,
}

/// Which Southbound, as which chassis; the rest comes from `[ovn]`.
#[derive(Debug, Clone)]
pub struct OvnOptions {
    pub remote: Option<String>,
    pub chassis: Option<String>,
}

impl RunOptions {
    pub fn bpffs_dir(&self) -> PathBuf {
        self.bpffs.clone().unwrap_or_else(|| Path::new(DEFAULT_BPFFS_ROOT).join(&self.uplink))
    }
}

/// The interface index of `ifname` in this process's network namespace.
/// How often local ports' interfaces are looked up (`Daemon::watch_links`).
const LINK_WATCH_PERIOD: Duration = Duration::from_secs(1);

pub fn ifindex(ifname: &str) -> Option<u32> {
    let c = CString::new(ifname).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string for the whole call.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => None,
        i => Some(i),
    }
}

/// Holds the state directory's lock for the daemon's life; the kernel
/// drops it when the process dies, however it dies.
struct Lock {
    _file: File,
}

/// `holder`: who takes it (`uplink eth1` for a daemon, `xgw uninstall`, ...),
/// written into the lock for whoever is refused next.
fn lock(state_dir: &Path, holder: &str) -> Result<Lock> {
    fs::create_dir_all(state_dir).with_context(|| format!("state-dir: creating {}", state_dir.display()))?;
    let path = state_dir.join("lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("state-dir: opening {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut held = String::new();
        let _ = file.read_to_string(&mut held);
        let by = held.trim().replace('\n', ", ");
        bail!("another xgw ({by}) holds the state directory {}", state_dir.display());
    }
    file.set_len(0)?;
    write!(file, "pid {} {holder}", std::process::id())?;
    Ok(Lock { _file: file })
}

/// What `check_options` found: the config, the metrics address, the
/// uplink's ifindex, the tunnel endpoint addresses, and the OVN chassis.
type Checked =
    (Option<Config>, Option<SocketAddr>, Option<u32>, Option<[u8; 4]>, Option<[u8; 16]>, Option<ovn::Chassis>);

/// `--ovn-remote`/`--chassis` over `[ovn]`: both or neither.
fn check_ovn(opts: &RunOptions, config: Option<&Config>) -> Result<Option<ovn::Chassis>> {
    let file = config.and_then(|c| c.ovn.clone());
    let remote = opts.ovn.as_ref().and_then(|o| o.remote.clone()).or(file.as_ref().and_then(|f| f.remote.clone()));
    let chassis = opts
        .ovn
        .as_ref()
        .and_then(|o| o.chassis.clone())
        .or(file.as_ref().and_then(|f| f.chassis.as_ref().map(|c| c.to_string())));
    let (remote, chassis) = match (remote, chassis) {
        (None, None) if file.is_none() => return Ok(None),
        (Some(r), Some(c)) => (r, c),
        (None, _) => bail!("ovn: remote: missing (--ovn-remote, or remote in [ovn])"),
        (_, None) => bail!("ovn: chassis: missing (--chassis, or chassis in [ovn])"),
    };
    let chassis = crate::types::Name::new(chassis.as_str()).map_err(|e| anyhow!("ovn: chassis: {e}"))?;
    let remotes: xgw_ovsdb::Remotes = remote.parse().map_err(|e| anyhow!("ovn: remote: {e}"))?;
    let file = file.unwrap_or_default();
    let hostname = match &file.hostname {
        Some(h) => h.clone(),
        None => nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default(),
    };
    let identity = southbound::Identity {
        remotes,
        chassis: chassis.to_string(),
        hostname,
        encap_ips: opts.local_ips.iter().map(|ip| ip.get()).collect(),
        encap_csum: file.encap_csum,
        transport_zones: file.transport_zones.clone(),
    };
    Ok(Some(ovn::Chassis { settings: ovn::Settings::from_config(&chassis, &file), identity }))
}

/// Checks what can be checked without touching anything.
fn check_options(opts: &RunOptions) -> Result<Checked> {
    let config = opts.config.as_deref().map(Config::load).transpose()?;
    let metrics = opts.metrics.or(config.as_ref().and_then(|c| c.metrics));
    if let Some(a) = metrics {
        if !a.ip().is_loopback() {
            bail!("metrics: {a} is not a loopback address (metrics are served on loopback only)");
        }
    }
    let (mut ip4, mut ip6) = (None, None);
    for ip in &opts.local_ips {
        let duplicate = match ip.get() {
            IpAddr::V4(a) => ip4.replace(a.octets()).is_some(),
            IpAddr::V6(a) => ip6.replace(a.octets()).is_some(),
        };
        if duplicate {
            let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
            bail!("local-ip: {ip} is a second {family} address (one per family)");
        }
    }
    if opts.local_ips.is_empty() {
        bail!("local-ip: at least one tunnel endpoint address is needed");
    }
    let uplink = ifindex(&opts.uplink);
    if uplink.is_none() {
        bail!("uplink: {:?}: no such interface", opts.uplink);
    }
    let ovn = check_ovn(opts, config.as_ref())?;
    Ok((config, metrics, uplink, ip4, ip6, ovn))
}

/// The daemon's connections and timers ask the state's owner (see `own`)
/// through one channel; each request carries its own reply channel.
pub(crate) enum Msg {
    Request(Request, oneshot::Sender<Result<Reply>>),
    Metrics(oneshot::Sender<Result<crate::metrics::Exposition>>),
    RefreshNexthops,
    Netlink(Vec<netlink::Event>),
    WatchBfd,
    WatchLinks,
    /// Re-read the config file; the answer says whether it was applied.
    Reload(PathBuf, oneshot::Sender<Result<()>>),
    /// A new view of the Southbound to apply (`southbound.rs`).
    Ovn(Box<crate::ovn::sb::Sb>, oneshot::Sender<Result<ovn::Outcome>>),
    /// The watchdog asks whether the state's owner still takes messages.
    Ping(oneshot::Sender<()>),
    Stop {
        keep_datapath: bool,
        done: oneshot::Sender<Result<()>>,
    },
}

/// Runs the daemon until SIGTERM or SIGINT. The connections, the timers and
/// the signals are tokio tasks on one thread; the state (port map, stores,
/// maps, BFD sessions) has one owner, a plain thread that takes one message
/// at a time, so no lock is needed and a blocking fsync or netlink call
/// delays the requests queued behind it but never the accepting, reading
/// and timing out of other connections.
pub fn run(opts: RunOptions) -> Result<()> {
    // A panic is a bug (or a library's answer to a damaged file, which the
    // store turns into an error): either way a log line, in the log's form.
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        tracing::error!(at, "panic: {what}");
    }));
    let checked = check_options(&opts)?;
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the tokio runtime")?;
    rt.block_on(serve(opts, checked))
}

async fn serve(opts: RunOptions, checked: Checked) -> Result<()> {
    let (config, metrics, uplink_index, ip4, ip6, ovn) = checked;
    let uplink_index = uplink_index.expect("checked");
    // Handlers before anything is touched: a SIGTERM during the start then
    // waits for the start to finish and stops cleanly.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;

    let _lock =
        lock(&opts.state_dir, &format!("uplink {}", opts.uplink)).with_context(|| format!("uplink {}", opts.uplink))?;
    if opts.mode == AttachMode::Skb {
        tracing::warn!(
            "attaching in generic (skb) mode as asked: every packet pays for an skb allocation; use native mode in production"
        );
    }
    // Everything that can fail on a busy address is taken before the
    // datapath is touched.
    let listener = server::bind_socket(&opts.socket)?;
    let metrics_listener = match metrics {
        Some(addr) => match std::net::TcpListener::bind(addr) {
            Ok(l) => Some((addr, l)),
            Err(e) => {
                let _ = fs::remove_file(&opts.socket);
                bail!("metrics: binding {addr}: {e}");
            }
        },
        None => None,
    };
    let pins = Pins::new(opts.bpffs_dir());
    let fresh = !pins.uplink_link().exists();
    // The pin directory is locked before anything under it is read or
    // written: one daemon per datapath, whatever its state directory.
    let _datapath = match pins.prepare().and_then(|()| pins.lock()) {
        Ok(lock) => lock,
        Err(e) => {
            let _ = fs::remove_file(&opts.socket);
            return Err(e);
        }
    };

    // Subscribed before the start resolves anything, so that no change
    // between the first resolution and the reader's start is missed.
    let events = match netlink::Events::open() {
        Ok(e) => e,
        Err(e) => {
            let _ = fs::remove_file(&opts.socket);
            return Err(e);
        }
    };
    let (tx, rx) = mpsc::channel::<Msg>(256);
    let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel::<anyhow::Error>();
    let (ready_tx, ready_rx) = oneshot::channel::<Result<()>>();
    let (sb_status_tx, sb_status_rx) = watch::channel(southbound::Status::default());
    let owner = {
        let (opts, pins) = (opts.clone(), pins.clone());
        let ovn = ovn.as_ref().map(|c| (c.settings.clone(), sb_status_rx));
        std::thread::Builder::new().name("xgw-state".into()).spawn(move || {
            match start(&opts, &pins, config.as_ref(), uplink_index, ip4, ip6) {
                Ok(mut daemon) => {
                    daemon.set_ovn(ovn);
                    let _ = ready_tx.send(Ok(()));
                    own(daemon, rx, fatal_tx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })?
    };
    let started = ready_rx.await.unwrap_or_else(|_| Err(anyhow!("the state thread died while starting")));
    if let Err(e) = started {
        // A daemon that never ran must not leave a datapath behind; one
        // that adopted a running datapath leaves it running.
        if fresh {
            let _ = pins.remove_all();
        }
        let _ = fs::remove_file(&opts.socket);
        return Err(e);
    }

    listener.set_nonblocking(true)?;
    tokio::spawn(server::serve_api(UnixListener::from_std(listener)?, tx.clone()));
    if let Some((addr, listener)) = metrics_listener {
        tracing::info!(%addr, "serving metrics on http://{addr}/metrics");
        listener.set_nonblocking(true)?;
        let tx = tx.clone();
        let scrape = move || {
            let tx = tx.clone();
            async move {
                let (reply, rendered) = oneshot::channel();
                tx.send(Msg::Metrics(reply)).await.map_err(|_| anyhow!("the daemon is stopping"))?;
                rendered.await.map_err(|_| anyhow!("the daemon is stopping"))?
            }
        };
        tokio::spawn(crate::metrics::serve(tokio::net::TcpListener::from_std(listener)?, scrape));
    }
    {
        let tx = tx.clone();
        std::thread::Builder::new().name("xgw-netlink".into()).spawn(move || read_events(events, tx))?;
    }
    tokio::spawn(every(opts.nexthop_refresh, tx.clone(), || Msg::RefreshNexthops));
    tokio::spawn(every(bfd::WATCH_PERIOD, tx.clone(), || Msg::WatchBfd));
    tokio::spawn(every(LINK_WATCH_PERIOD, tx.clone(), || Msg::WatchLinks));
    if let Some(period) = watchdog_period() {
        tokio::spawn(watchdog(period, tx.clone()));
    }
    // The Southbound session, once the datapath forwards what it has.
    let (sb_stop_tx, sb_stop_rx) = watch::channel(false);
    let (sb_fatal_tx, mut sb_fatal_rx) = mpsc::unbounded_channel::<anyhow::Error>();
    let sb_task = ovn.as_ref().map(|c| {
        tracing::info!(chassis = c.identity.chassis, remote = %c.identity.remotes, "ovn: joining the Southbound");
        tokio::spawn(southbound::run(c.identity.clone(), tx.clone(), sb_fatal_tx.clone(), sb_status_tx, sb_stop_rx))
    });
    notify_systemd(&format!("READY=1\nSTATUS=forwarding on {}", opts.uplink));
    tracing::info!(uplink = opts.uplink, socket = %opts.socket.display(), "xgw daemon ready");

    loop {
        tokio::select! {
            _ = hup.recv() => match &opts.config {
                Some(path) => {
                    // systemd's reload protocol: `systemctl reload` waits
                    // for READY=1, and STATUS says how it ended.
                    notify_systemd(&format!("RELOADING=1\nMONOTONIC_USEC={}", crate::bfd::monotonic_ns() / 1000));
                    let (done, applied) = oneshot::channel();
                    let _ = tx.send(Msg::Reload(path.clone(), done)).await;
                    let status = match applied.await {
                        Ok(Ok(())) => format!("STATUS=forwarding on {}; config reloaded", opts.uplink),
                        Ok(Err(e)) => format!("STATUS=forwarding on {}; config refused, the previous one stays: {}", opts.uplink, format!("{e:#}").replace('\n', " ")),
                        Err(_) => "STATUS=stopping".to_owned(),
                    };
                    notify_systemd(&format!("READY=1\n{status}"));
                }
                None => tracing::info!("SIGHUP without --config: nothing to reload"),
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
            Some(e) = sb_fatal_rx.recv() => {
                // Only the operator can fix it: stop as on SIGTERM, and say why.
                tracing::error!("{e:#}");
                notify_systemd("STOPPING=1");
                let _ = fs::remove_file(&opts.socket);
                let (done, stopped) = oneshot::channel();
                let _ = tx.send(Msg::Stop { keep_datapath: opts.keep_datapath, done }).await;
                let _ = stopped.await;
                let _ = tokio::task::spawn_blocking(move || owner.join()).await;
                return Err(e);
            }
            Some(e) = fatal_rx.recv() => {
                // The state thread has stopped, leaving the datapath running.
                notify_systemd("STOPPING=1");
                let _ = fs::remove_file(&opts.socket);
                let _ = tokio::task::spawn_blocking(move || owner.join()).await;
                return Err(e);
            }
        }
    }
    notify_systemd("STOPPING=1");
    let _ = fs::remove_file(&opts.socket);
    let _ = sb_stop_tx.send(true);
    if let Some(task) = sb_task {
        let _ = task.await;
    }
    // A clean stop takes the chassis out of OVN (its peers drop their
    // tunnels to it); a stop that leaves the datapath forwarding does not.
    if let (Some(c), false) = (&ovn, opts.keep_datapath) {
        match southbound::unregister(&c.identity.remotes, &c.identity.chassis).await {
            Ok(()) => tracing::info!(chassis = c.identity.chassis, "ovn: left the Southbound"),
            Err(e) => tracing::warn!(chassis = c.identity.chassis, "ovn: could not leave the Southbound: {e:#}"),
        }
    }
    let (done, stopped) = oneshot::channel();
    tx.send(Msg::Stop { keep_datapath: opts.keep_datapath, done })
        .await
        .map_err(|_| anyhow!("the state thread has stopped"))?;
    let result = stopped.await.unwrap_or_else(|_| Err(anyhow!("the state thread died while stopping")));
    let _ = tokio::task::spawn_blocking(move || owner.join()).await;
    if opts.keep_datapath {
        tracing::info!(bpffs = %pins.dir.display(), "stopped; the datapath keeps running (--keep-datapath)");
    }
    result
}

/// Sends `msg()` every `period`. A tick the owner has not taken yet makes
/// the next one redundant, so a full queue drops it instead of waiting.
async fn every(period: Duration, tx: mpsc::Sender<Msg>, msg: fn() -> Msg) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the start has just done the work.
    interval.tick().await;
    loop {
        interval.tick().await;
        if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(msg()) {
            return;
        }
    }
}

/// Passes the kernel's link, neighbour and route announcements to the
/// state's owner until it stops. A queue full of requests holds the reader
/// back; the kernel then drops announcements and says so (`Overrun`), and
/// everything is re-checked. A failing socket leaves the periodic checks.
fn read_events(mut events: netlink::Events, tx: mpsc::Sender<Msg>) {
    loop {
        match events.wait() {
            Ok(e) if e.is_empty() => {}
            Ok(e) => {
                if tx.blocking_send(Msg::Netlink(e)).is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::error!("{e:#}; next hops and links are now only checked periodically");
                return;
            }
        }
    }
}

/// The state's owner: applies the messages in arrival order until `Stop`.
/// A condition only a restart resolves ends the loop through `fatal`: the
/// datapath stays (pins kept, BFD sessions left for adoption) and the
/// daemon exits with the error, for the service manager to restart it.
fn own(mut d: Daemon, mut rx: mpsc::Receiver<Msg>, fatal: mpsc::UnboundedSender<anyhow::Error>) {
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Request(request, reply) => {
                let is_change = !request.is_query();
                let result = d.handle(request);
                if is_change {
                    if let Err(e) = &result {
                        tracing::info!("request refused: {e:#}");
                    }
                }
                let _ = reply.send(result);
            }
            Msg::Metrics(reply) => {
                let _ = reply.send(d.metrics());
            }
            Msg::RefreshNexthops => d.refresh_nexthops(false),
            Msg::WatchBfd => d.watch_bfd(),
            Msg::WatchLinks | Msg::Netlink(_) => {
                let result = match &msg {
                    Msg::Netlink(events) => d.netlink_events(events),
                    _ => d.watch_links(),
                };
                if let Err(e) = result {
                    tracing::error!("{e:#}");
                    d.abandon();
                    let _ = fatal.send(e);
                    return;
                }
            }
            Msg::Reload(path, done) => {
                let r = Config::load(&path).map_err(anyhow::Error::from).and_then(|c| d.apply_config(&c));
                match &r {
                    Ok(()) => tracing::info!(config = %path.display(), "config reloaded"),
                    Err(e) => tracing::error!("config not reloaded: {e:#}"),
                }
                let _ = done.send(r);
            }
            Msg::Ovn(sb, reply) => {
                let _ = reply.send(d.apply_southbound(&sb));
            }
            Msg::Ping(pong) => {
                let _ = pong.send(());
            }
            Msg::Stop { keep_datapath, done } => {
                let _ = done.send(d.shutdown(keep_datapath));
                return;
            }
        }
        // Links of ports gone in this message and not taken over.
        d.settle_links();
    }
}

/// Loads the datapath against the pinned maps, writes the uplink's
/// entries, puts `xgw_uplink` on it, starts BFD, opens the store and the
/// port map, adopts what a previous daemon left, applies the config file.
fn start(
    opts: &RunOptions,
    pins: &Pins,
    config: Option<&Config>,
    uplink_index: u32,
    ip4: Option<[u8; 4]>,
    ip6: Option<[u8; 16]>,
) -> Result<Daemon> {
    // Loading checks the pinned maps' layouts and writes no entry.
    let mut ebpf = pins.load()?;
    // The store against the datapath, before anything is written.
    recovery::check_at_start(&opts.state_dir, pins, opts.accept_store_loss)?;
    start_ebpf_logger(&mut ebpf);
    for prog in [UPLINK_PROGRAM, pins::LOCAL_PROGRAM] {
        datapath::xdp_program(&mut ebpf, prog)?;
    }
    let mut netlink = netlink::Netlink::open()?;
    let link = netlink.link(uplink_index).with_context(|| format!("uplink: reading {}", opts.uplink))?;
    let uplink = uplink::Uplink::new(&opts.uplink, uplink_index, link, ip4, ip6, opts.mode);

    // The uplink's map entries before its program: a program adopted from a
    // previous daemon already reads them, a new one needs them at once.
    let mut dp = BpfDatapath::open_pinned(&pins.dir).context("opening the pinned configuration maps")?;
    uplink.write(&mut dp)?;
    let prog: &mut aya::programs::Xdp = ebpf.program_mut(UPLINK_PROGRAM).expect("loaded above").try_into()?;
    match pins::attach(prog, &opts.uplink, opts.mode, &pins.uplink_link())? {
        pins::Attached::Adopted => {
            tracing::info!(uplink = opts.uplink, "adopted the running datapath; xgw_uplink swapped in place")
        }
        pins::Attached::New => tracing::info!(uplink = opts.uplink, mode = ?opts.mode, "xgw_uplink attached"),
        pins::Attached::Renewed => {
            tracing::warn!(uplink = opts.uplink, "the pinned xgw_uplink link had lost its interface; attached anew")
        }
    }
    // The TC half of flooding (frames from tunnels to groups' local members).
    pins::attach_flood(&mut ebpf, &opts.uplink, &pins.flood_link(None)).context("uplink: flooding")?;
    // The BFD engine takes its maps out of the object and opens its sockets
    // here, in the daemon's network namespace.
    let engine = crate::bfd::Engine::start(
        &mut ebpf,
        crate::bfd::Uplink { ifname: opts.uplink.clone(), mac: link.0 },
        crate::bfd::Options { rt_priority: opts.bfd_rt_priority },
    )
    .context("starting the BFD engine")?;
    let bfd = bfd::Bfd::new(
        Some(engine),
        &opts.uplink,
        ip4.map(Into::into),
        ip6.map(Into::into),
        crate::types::BfdSettings::default(),
    );
    let store = RedbStore::open(&opts.state_dir).context("opening the store")?;
    let ports = PortMap::open(dp, store, AllocatorConfig::default()).context("opening the port map")?;
    let counters = views::Counters::open(pins)?;
    let links = links::Links::new(ebpf, pins.clone(), opts.mode);
    let mut daemon = Daemon::new(ports, uplink, links, bfd, netlink, counters, pins.clone(), &opts.state_dir)?;
    daemon.adopt()?;
    if let Some(config) = config {
        daemon.apply_config(config)?;
    }
    daemon.settle_links();
    Ok(daemon)
}

/// The kernel side's aya-log records (rare events, `datapath-ebpf/src/
/// events.rs`), into tracing through the `log` bridge `logging::init`
/// installs, under the target `xgw_datapath::events`. An object without a
/// log map (no log call at all) is fine.
fn start_ebpf_logger(ebpf: &mut aya::Ebpf) {
    let mut logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!("no kernel-side log: {e}");
            return;
        }
    };
    let spawned = std::thread::Builder::new().name("ebpf-log".into()).spawn(move || loop {
        let mut pfd = libc::pollfd { fd: logger.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 1000) };
        logger.flush();
    });
    if let Err(e) = spawned {
        tracing::warn!("kernel-side log reader not started: {e}");
    }
}

/// Half of systemd's `WatchdogSec` (`$WATCHDOG_USEC`, for this process
/// per `$WATCHDOG_PID`), as sd_watchdog_enabled(3) advises.
fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.parse::<u32>().ok()) {
        if pid != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// WATCHDOG=1 only while the state's owner answers: a daemon whose sockets
/// still accept but whose state thread is stuck (a hung netlink call, a
/// deadlock) is restarted by systemd instead of looking alive.
async fn watchdog(period: Duration, tx: mpsc::Sender<Msg>) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let (pong, answered) = oneshot::channel();
        if tx.send(Msg::Ping(pong)).await.is_err() {
            return;
        }
        match tokio::time::timeout(period, answered).await {
            Ok(Ok(())) => notify_systemd("WATCHDOG=1"),
            Ok(Err(_)) => return,
            Err(_) => tracing::warn!(
                "watchdog: the state thread has not answered for {period:?}; not telling systemd all is well"
            ),
        }
    }
}

/// sd_notify(3) without libsystemd: one datagram to `$NOTIFY_SOCKET`.
fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else { return };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name).and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), Path::new(&path))
    };
    if let Err(e) = sent {
        tracing::warn!("sd_notify {state}: {e}");
    }
}

/// `xgw uninstall`: removes the pins a daemon left (with `--keep-datapath`
/// or after SIGKILL), which detaches its programs. Refused while a daemon
/// holds the state directory.
pub fn uninstall(bpffs: &Path, state_dir: &Path) -> Result<Vec<PathBuf>> {
    if state_dir.join("lock").exists() {
        let _lock = lock(state_dir, "xgw uninstall").context("uninstall: stop the daemon first")?;
    }
    if !bpffs.exists() {
        return Ok(Vec::new());
    }
    let pins = Pins::new(bpffs);
    // Held while removing: a daemon starting meanwhile waits for nothing
    // half-removed, it is refused.
    let _datapath = pins.lock().context("uninstall")?;
    pins.remove_all()
}
