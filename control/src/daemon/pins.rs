//! The daemon's objects on bpffs, under one directory per uplink:
//!
//! ```text
//! <bpffs>/<MAP NAME>            configuration and counter maps
//! <bpffs>/links/uplink          xgw_uplink on the uplink
//! <bpffs>/links/local-<ifname>  xgw_local on each local port's interface
//! <bpffs>/links/flood-uplink    xgw_flood (TC ingress) on the uplink
//! <bpffs>/links/flood-<ifname>  xgw_flood on each local port's interface
//! ```
//!
//! Pinned links keep the programs attached and pinned maps keep their
//! contents while no daemon runs: forwarding does not depend on the daemon.
//! A new daemon loads the (possibly upgraded) object against the same maps
//! and swaps each link's program atomically (`bpf_link_update`); it never
//! detaches and reattaches, which would drop packets.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
        ProgramError, TcAttachType, Xdp,
    },
    sys::SyscallError,
    Ebpf, EbpfLoader,
};

use crate::datapath::{self, AttachMode, CONFIG_MAPS};

/// Counters the datapath writes; pinned too, so they survive a restart.
pub const COUNTER_MAPS: &[&str] = &["DROPS", "REPLIES", "PORT_STATS"];

pub const UPLINK_PROGRAM: &str = "xgw_uplink";
pub const LOCAL_PROGRAM: &str = "xgw_local";

/// The datapath's lock (`Pins::lock`), released when dropped or when the
/// process ends.
#[derive(Debug)]
pub struct DatapathLock {
    _dir: fs::File,
}

/// Who holds the `flock` on `file`: `/proc/locks` lists each lock with its
/// holder's PID and the inode as `major:minor:inode` (hex device numbers).
fn lock_holder(file: &fs::File) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().ok()?;
    let (dev, ino) = (meta.dev(), meta.ino());
    let want = format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev));
    let locks = fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&want.as_str())).then(|| f.get(4)?.parse().ok())?
    })
}

/// A process's command line, for naming it in an error.
fn command_line(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> =
        raw.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into()).collect();
    (!args.is_empty()).then(|| args.join(" "))
}

#[derive(Debug, Clone)]
pub struct Pins {
    pub dir: PathBuf,
}

impl Pins {
    pub fn new(dir: impl Into<PathBuf>) -> Pins {
        Pins { dir: dir.into() }
    }

    pub fn links(&self) -> PathBuf {
        self.dir.join("links")
    }

    pub fn uplink_link(&self) -> PathBuf {
        self.links().join("uplink")
    }

    pub fn local_link(&self, ifname: &str) -> PathBuf {
        self.links().join(format!("local-{ifname}"))
    }

    /// `xgw_flood` on a local port's interface, or on the uplink (`None`).
    pub fn flood_link(&self, ifname: Option<&str>) -> PathBuf {
        self.links().join(match ifname {
            Some(i) => format!("flood-{i}"),
            None => "flood-uplink".to_owned(),
        })
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Interfaces with a pinned `xgw_local` link.
    pub fn local_links(&self) -> Vec<String> {
        let Ok(dir) = fs::read_dir(self.links()) else { return Vec::new() };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("local-").map(str::to_owned)).collect()
    }

    /// Takes the datapath for this process: an exclusive `flock` on the pin
    /// directory itself, held until the process ends (the kernel drops it
    /// on any exit, SIGKILL included, so a dead owner never blocks a
    /// successor). Whatever state directory a second daemon or `uninstall`
    /// is given, they meet here, and are refused with the owner's PID.
    pub fn lock(&self) -> Result<DatapathLock> {
        let dir = fs::File::open(&self.dir).with_context(|| format!("bpffs: opening {}", self.dir.display()))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&dir), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                bail!("bpffs: locking {}: {err}", self.dir.display());
            }
            let owner = match lock_holder(&dir) {
                Some(pid) => format!("pid {pid}{}", command_line(pid).map(|c| format!(", `{c}`")).unwrap_or_default()),
                None => "a process this one cannot see".to_owned(),
            };
            bail!(
                "bpffs: the datapath pinned in {} is owned by another xgw daemon ({owner}); one daemon per datapath: \
                 stop that one first",
                self.dir.display()
            );
        }
        Ok(DatapathLock { _dir: dir })
    }

    /// Creates the directories; the parent of `dir` must be on bpffs (or be
    /// bpffs itself).
    pub fn prepare(&self) -> Result<()> {
        let mount = self.dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
        if !is_bpffs(mount) {
            bail!(
                "bpffs: {} is not on a bpffs mount; mount one (mount -t bpf bpf /sys/fs/bpf) or pass --bpffs",
                self.dir.display()
            );
        }
        fs::create_dir_all(self.links()).with_context(|| format!("bpffs: creating {}", self.links().display()))
    }

    /// Loads the datapath object with every configuration and counter map
    /// pinned here, reusing the maps already pinned (a restart or an
    /// upgrade keeps their contents).
    pub fn load(&self) -> Result<Ebpf> {
        datapath::check_pinned_layouts(CONFIG_MAPS.iter().chain(COUNTER_MAPS).map(|&name| (name, self.map(name))))?;
        let mut loader = EbpfLoader::new();
        for &name in CONFIG_MAPS.iter().chain(COUNTER_MAPS) {
            loader.map_pin_path(name, self.map(name));
        }
        // The datapath's aya-log calls of levels the log does not show are
        // pruned by the verifier: the level is a constant of the programs.
        let level = crate::logging::datapath_level();
        if let Some(level) = &level {
            loader.override_global(aya_log::LEVEL, level, false);
        }
        let mut ebpf = loader
            .load(datapath::OBJECT)
            .with_context(|| format!("loading the xgw datapath with its maps pinned in {}", self.dir.display()))?;
        datapath::seal_floods(&mut ebpf)?;
        Ok(ebpf)
    }

    /// Removes every pin: links first (which detaches the programs), then
    /// maps, then the directories. Returns what was removed.
    pub fn remove_all(&self) -> Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        if let Ok(dir) = fs::read_dir(self.links()) {
            for e in dir.flatten() {
                fs::remove_file(e.path()).with_context(|| format!("removing {}", e.path().display()))?;
                removed.push(e.path());
            }
        }
        let _ = fs::remove_dir(self.links());
        if let Ok(dir) = fs::read_dir(&self.dir) {
            for e in dir.flatten() {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    fs::remove_file(e.path()).with_context(|| format!("removing {}", e.path().display()))?;
                    removed.push(e.path());
                }
            }
        }
        if self.dir.exists() {
            fs::remove_dir(&self.dir).with_context(|| format!("removing {}", self.dir.display()))?;
        }
        Ok(removed)
    }
}

/// What `attach` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    /// A pinned link existed: its program was swapped in place.
    Adopted,
    /// Attached now and pinned.
    New,
    /// The pinned link had lost its interface (deleted, maybe recreated
    /// since): replaced by a new one.
    Renewed,
}

/// Puts `prog` on `ifname` through the link pinned at `pin`: swaps the
/// program of an existing pinned link atomically, or attaches and pins a new
/// link.
/// A pinned link whose interface was deleted is defunct: its update fails
/// with ENOLINK, and it is replaced by a new link on the interface now
/// bearing the name (`Attached::Renewed`).
/// How long an interface may stay busy with a link being released.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

pub fn attach(prog: &mut Xdp, ifname: &str, mode: AttachMode, pin: &Path) -> Result<Attached> {
    let mut renewed = false;
    if pin.exists() {
        let link: FdLink =
            PinnedLink::from_pin(pin).with_context(|| format!("opening the pinned link {}", pin.display()))?.into();
        let link = XdpLink::try_from(link).with_context(|| format!("{} is not an XDP link", pin.display()))?;
        match prog.attach_to_link(link) {
            Ok(id) => {
                // The pin holds the link; this process's handle can go.
                let _ = prog.take_link(id)?;
                return Ok(Attached::Adopted);
            }
            Err(ProgramError::SyscallError(SyscallError { io_error, .. }))
                if io_error.raw_os_error() == Some(libc::ENOLINK) =>
            {
                detach(pin)?;
                renewed = true;
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("updating the program of the XDP link on {ifname} ({})", pin.display()))
            }
        }
    }
    // A link whose pin was just removed (a port replaced on the same
    // interface) is released by the kernel a moment later, not at once:
    // until then the interface is busy. A program someone else attached
    // stays busy, and is reported after the wait.
    let mut busy_until = None;
    let id = loop {
        match prog.attach(ifname, mode.xdp_mode()) {
            Ok(id) => break id,
            Err(ProgramError::SyscallError(SyscallError { ref io_error, .. }))
                if io_error.raw_os_error() == Some(libc::EBUSY)
                    && *busy_until.get_or_insert_with(|| std::time::Instant::now() + RELEASE_WAIT)
                        > std::time::Instant::now() =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(datapath::explain_attach_error(ifname, mode, e)),
        }
    };
    let link: FdLink = prog
        .take_link(id)?
        .try_into()
        .with_context(|| format!("the kernel attached XDP to {ifname} without a bpf_link; cannot pin it"))?;
    link.pin(pin).with_context(|| format!("pinning the XDP link of {ifname} at {}", pin.display()))?;
    Ok(if renewed { Attached::Renewed } else { Attached::New })
}

/// `xgw_flood` at TC ingress of `ifname` through the link pinned at `pin`,
/// as `attach` does for XDP: the frames the XDP program there passes up
/// for flooding need it, so it comes with every XDP link of the daemon's.
/// A TCX link (kernel 6.6 and later) is a bpf_link, so it pins the same way.
pub fn attach_flood(ebpf: &mut Ebpf, ifname: &str, pin: &Path) -> Result<Attached> {
    let prog = datapath::flood_program(ebpf)?;
    let mut renewed = false;
    if pin.exists() {
        let link: FdLink =
            PinnedLink::from_pin(pin).with_context(|| format!("opening the pinned link {}", pin.display()))?.into();
        let link =
            SchedClassifierLink::try_from(link).with_context(|| format!("{} is not a TC link", pin.display()))?;
        match prog.attach_to_link(link) {
            Ok(id) => {
                let _ = prog.take_link(id)?;
                return Ok(Attached::Adopted);
            }
            Err(ProgramError::SyscallError(SyscallError { io_error, .. }))
                if io_error.raw_os_error() == Some(libc::ENOLINK) =>
            {
                detach(pin)?;
                renewed = true;
            }
            Err(e) => return Err(e).with_context(|| format!("updating the program of the TC link on {ifname}")),
        }
    }
    let id = prog
        .attach(ifname, TcAttachType::Ingress)
        .with_context(|| format!("attaching {} to {ifname} (TC ingress)", datapath::FLOOD_PROGRAM))?;
    let link: FdLink = prog
        .take_link(id)?
        .try_into()
        .with_context(|| format!("the kernel attached TC to {ifname} without a bpf_link (TCX needs Linux 6.6)"))?;
    link.pin(pin).with_context(|| format!("pinning the TC link of {ifname} at {}", pin.display()))?;
    Ok(if renewed { Attached::Renewed } else { Attached::New })
}

/// Detaches by removing the pin (the last reference to the link).
pub fn detach(pin: &Path) -> Result<()> {
    match fs::remove_file(pin) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", pin.display())),
    }
}

pub fn is_bpffs(dir: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: a zeroed statfs is a valid out-parameter; `c` outlives the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0) && st.f_type as i64 == BPF_FS_MAGIC
}
