//! The embedded XDP object and the few operations every program shares:
//! loading, attaching in a chosen XDP mode, and summing per-CPU counters.
use anyhow::{Context, Result};
use aya::{
    maps::{MapData, PerCpuArray},
    programs::{ProgramError, Xdp, XdpMode},
    Ebpf,
};
use xgw_common::counters::Counter;

/// The datapath object built from `datapath-ebpf/` by `build.rs`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xgw-datapath.o"));

/// How an XDP program is attached. Native (driver) mode is the product; generic
/// (skb) mode exists for interfaces without driver support and is slow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    Native,
    Skb,
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
    Ebpf::load(OBJECT).context("loading the xgw datapath into the kernel (are you root, with BPF enabled?)")
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
        && (inner == Some(Some(libc::EOPNOTSUPP)) || text.contains("not supported") || text.contains("Operation not supported"))
    {
        return anyhow::anyhow!(
            "interface {iface} does not support native XDP (driver mode); use a driver with XDP support, or --mode skb for the slow generic mode"
        );
    }
    if inner == Some(Some(libc::EBUSY)) || text.contains("busy") {
        return anyhow::anyhow!("interface {iface} already has an XDP program attached; detach it first (bpftool net show dev {iface})");
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
