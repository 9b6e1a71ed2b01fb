//! The packet probe: `xgw_probe` attached to one interface, counting packets
//! and bytes per protocol. Its program, link and counters are pinned under one
//! bpffs directory, so it keeps running after the CLI exits and any process
//! (or bpftool) can read it.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{Map, MapData, PerCpuArray},
    programs::links::FdLink,
};
use serde::Serialize;
use xgw_common::counters::{Counter, Proto};

use crate::datapath::{self, AttachMode};

pub const PROGRAM: &str = "xgw_probe";
pub const COUNTERS_MAP: &str = "PROBE_COUNTERS";

/// Where one probe's objects are pinned.
pub struct Pins {
    pub dir: PathBuf,
}

impl Pins {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Pins { dir: dir.into() }
    }
    pub fn link(&self) -> PathBuf {
        self.dir.join("link")
    }
    pub fn program(&self) -> PathBuf {
        self.dir.join("prog")
    }
    pub fn counters(&self) -> PathBuf {
        self.dir.join("counters")
    }
}

/// Attaches the probe to `iface` and pins it. All or nothing: on any failure
/// the pins already made are removed, which also detaches the program.
pub fn attach(iface: &str, mode: AttachMode, pins: &Pins) -> Result<()> {
    if pins.link().exists() {
        bail!("a probe is already pinned at {}; detach it first (xgw probe detach)", pins.dir.display());
    }
    let bpffs = pins.dir.parent().unwrap_or(Path::new("/"));
    // The directory may be missing under a bpffs mount (it is created), or
    // missing altogether: each said as it is.
    let mount = bpffs.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    if !is_bpffs(mount) {
        if mount == bpffs {
            bail!(
                "{} is not on a bpffs mount; mount one (mount -t bpf bpf {}) or pass --bpffs",
                bpffs.display(),
                bpffs.display()
            );
        }
        bail!(
            "{} does not exist, and {} is not a bpffs mount; mount one (mkdir -p {}; mount -t bpf bpf {}) or pass \
             --bpffs",
            bpffs.display(),
            mount.display(),
            bpffs.display(),
            bpffs.display()
        );
    }
    fs::create_dir_all(&pins.dir).with_context(|| format!("creating {}", pins.dir.display()))?;
    let attached = (|| -> Result<()> {
        let mut ebpf = datapath::load()?;
        ebpf.map(COUNTERS_MAP)
            .context("the datapath object has no probe counters")?
            .pin(pins.counters())
            .context("pinning the counters")?;
        let prog = datapath::xdp_program(&mut ebpf, PROGRAM)?;
        prog.pin(pins.program()).context("pinning the program")?;
        let link_id =
            prog.attach(iface, mode.xdp_mode()).map_err(|e| datapath::explain_attach_error(iface, mode, e))?;
        let link: FdLink =
            prog.take_link(link_id)?.try_into().context("the kernel attached XDP without a bpf_link; cannot pin it")?;
        link.pin(pins.link()).context("pinning the XDP link")?;
        Ok(())
    })();
    if let Err(e) = attached {
        remove_pins(pins);
        return Err(e);
    }
    Ok(())
}

/// Detaches the probe: unpinning the link drops the last reference to it.
pub fn detach(pins: &Pins) -> Result<()> {
    if !pins.dir.exists() {
        bail!("no probe is pinned at {}", pins.dir.display());
    }
    remove_pins(pins);
    Ok(())
}

fn remove_pins(pins: &Pins) {
    for p in [pins.link(), pins.counters(), pins.program()] {
        let _ = fs::remove_file(p);
    }
    let _ = fs::remove_dir(&pins.dir);
}

/// One protocol's counts, as printed by `xgw probe show`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProtoCount {
    pub proto: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

/// Reads a counters map (pinned or loaded) and sums it across CPUs.
pub fn read(map: &PerCpuArray<MapData, Counter>) -> Result<Vec<ProtoCount>> {
    let sums = datapath::sum_percpu(map, Proto::COUNT)?;
    Ok(Proto::ALL
        .iter()
        .zip(sums)
        .map(|(p, c)| ProtoCount { proto: p.name(), packets: c.packets, bytes: c.bytes })
        .collect())
}

pub fn read_pinned(pins: &Pins) -> Result<Vec<ProtoCount>> {
    let path = pins.counters();
    let data = MapData::from_pin(&path)
        .with_context(|| format!("no probe counters pinned at {} (is the probe attached?)", path.display()))?;
    let map: PerCpuArray<MapData, Counter> = Map::PerCpuArray(data).try_into()?;
    read(&map)
}

fn is_bpffs(dir: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else { return false };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0) && st.f_type as i64 == BPF_FS_MAGIC
}
