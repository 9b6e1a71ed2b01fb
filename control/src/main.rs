//! `xgw`: one binary for the operator. Subcommands grow with the daemon.
use std::{path::PathBuf, process::ExitCode};

use anyhow::Result;
use clap::{Parser, Subcommand};
use xgw::{datapath::AttachMode, probe};

#[derive(Parser)]
#[command(name = "xgw", version, about = "xgw: XDP gateway datapath for Geneve overlays")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Per-protocol packet counter on one interface (the first XDP program).
    #[command(subcommand)]
    Probe(ProbeCmd),
}

#[derive(Subcommand)]
enum ProbeCmd {
    /// Attach the probe to an interface and pin it (it keeps running after exit).
    Attach {
        /// Interface to attach to.
        #[arg(long)]
        iface: String,
        /// XDP attach mode; `skb` (generic) is slow and only for drivers without XDP.
        #[arg(long, value_enum, default_value_t = AttachMode::Native)]
        mode: AttachMode,
        /// bpffs directory under which the probe is pinned (as `probe-<iface>`).
        #[arg(long, default_value = "/sys/fs/bpf/xgw")]
        bpffs: PathBuf,
    },
    /// Print the probe's counters.
    Show {
        #[arg(long)]
        iface: String,
        #[arg(long, default_value = "/sys/fs/bpf/xgw")]
        bpffs: PathBuf,
        /// Print exactly one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Detach the probe and remove its pins.
    Detach {
        #[arg(long)]
        iface: String,
        #[arg(long, default_value = "/sys/fs/bpf/xgw")]
        bpffs: PathBuf,
    },
}

fn pins(bpffs: &std::path::Path, iface: &str) -> probe::Pins {
    probe::Pins::new(bpffs.join(format!("probe-{iface}")))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Probe(ProbeCmd::Attach { iface, mode, bpffs }) => {
            if mode == AttachMode::Skb {
                tracing::warn!("attaching in generic (skb) mode: every packet pays for an skb; use native mode in production");
            }
            probe::attach(&iface, mode, &pins(&bpffs, &iface))?;
            println!("probe attached to {iface} ({mode:?} mode), pinned at {}", pins(&bpffs, &iface).dir.display());
        }
        Command::Probe(ProbeCmd::Show { iface, bpffs, json }) => {
            let counts = probe::read_pinned(&pins(&bpffs, &iface))?;
            if json {
                println!("{}", serde_json::json!({ "iface": iface, "counters": counts }));
            } else {
                println!("{:<16} {:>14} {:>16}", "protocol", "packets", "bytes");
                for c in counts {
                    println!("{:<16} {:>14} {:>16}", c.proto, c.packets, c.bytes);
                }
            }
        }
        Command::Probe(ProbeCmd::Detach { iface, bpffs }) => {
            probe::detach(&pins(&bpffs, &iface))?;
            println!("probe detached from {iface}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("XGW_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xgw: {e:#}");
            ExitCode::FAILURE
        }
    }
}
