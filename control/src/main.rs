//! `xgw`: one binary for the operator. Subcommands grow with the daemon.
use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Result;
use clap::{Parser, Subcommand};
use xgw::{
    cli::{self, BfdCmd, BindingCmd, Common, GroupCmd, PortCmd, TunnelCmd},
    daemon::{self, RunOptions},
    datapath::AttachMode,
    probe,
};

#[derive(Parser)]
#[command(name = "xgw", version, about = "xgw: XDP gateway datapath for Geneve overlays")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway daemon on an uplink.
    Run(RunArgs),
    /// Local ports (through the daemon).
    Port {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        cmd: PortCmd,
    },
    /// Geneve tunnels (through the daemon).
    Tunnel {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        cmd: TunnelCmd,
    },
    /// Remote MACs behind tunnels (through the daemon).
    Binding {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        cmd: BindingCmd,
    },
    /// Multicast groups: where broadcast, multicast and unknown unicast of a
    /// VNI are flooded, and what OVN's group keys reach (through the daemon).
    Group {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        cmd: GroupCmd,
    },
    /// BFD sessions: `show` (like `ovs-appctl bfd/show`), single-hop `peer`s.
    Bfd {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        cmd: BfdCmd,
    },
    /// Overview of the gateway: uplink, ports with OpenFlow numbers, bindings.
    Show {
        #[command(flatten)]
        common: Common,
    },
    /// Per-port packets and bytes, drops by reason, replies.
    Stats {
        #[command(flatten)]
        common: Common,
    },
    /// Remove the pinned programs, links and maps a daemon left behind.
    Uninstall {
        /// The daemon's bpffs directory.
        #[arg(long)]
        bpffs: Option<PathBuf>,
        /// With --uplink: the default bpffs directory of that uplink.
        #[arg(long)]
        uplink: Option<String>,
        #[arg(long, default_value = daemon::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Per-protocol packet counter on one interface (the first XDP program).
    #[command(subcommand)]
    Probe(ProbeCmd),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The underlay interface (Geneve arrives and leaves here).
    #[arg(long)]
    uplink: String,
    /// The gateway's tunnel endpoint address on the uplink; once per family
    /// (repeat, or comma-separated: `198.51.100.1,2001:db8::1`).
    #[arg(long = "local-ip", required = true, env = "XGW_LOCAL_IP", value_delimiter = ',')]
    local_ip: Vec<xgw::types::UnicastIp>,
    /// TOML file with ports, tunnels, bindings and BFD settings.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the committed ports and bindings live.
    #[arg(long, default_value = daemon::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// bpffs directory for pinned maps and links [default: /sys/fs/bpf/xgw/<uplink>].
    #[arg(long)]
    bpffs: Option<PathBuf>,
    /// The API socket (mode 0600, root only).
    #[arg(long, default_value = xgw::api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Serve Prometheus metrics on this loopback address:port (overrides the config file's).
    #[arg(long, env = "XGW_METRICS")]
    metrics: Option<SocketAddr>,
    /// XDP attach mode; `skb` (generic) is slow and only for drivers without XDP.
    #[arg(long, value_enum, default_value_t = AttachMode::Native)]
    mode: AttachMode,
    /// On SIGTERM/SIGINT leave the datapath running (for an upgrade).
    #[arg(long)]
    keep_datapath: bool,
    /// How often tunnel next hops are re-resolved, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    nexthop_refresh_ms: u64,
    /// SCHED_FIFO priority of the BFD transmit thread (1-99; 0 for the ordinary scheduler, see docs/bfd.md).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i32).range(0..=99))]
    bfd_rt_priority: i32,
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
        Command::Run(a) => {
            let opts = RunOptions {
                uplink: a.uplink,
                local_ips: a.local_ip,
                mode: a.mode,
                config: a.config,
                state_dir: a.state_dir,
                bpffs: a.bpffs,
                socket: a.socket,
                metrics: a.metrics,
                keep_datapath: a.keep_datapath,
                nexthop_refresh: Duration::from_millis(a.nexthop_refresh_ms.max(10)),
                bfd_rt_priority: a.bfd_rt_priority,
            };
            daemon::run(opts)?;
        }
        Command::Port { common, cmd } => cli::port(&common, cmd)?,
        Command::Tunnel { common, cmd } => cli::tunnel(&common, cmd)?,
        Command::Binding { common, cmd } => cli::binding(&common, cmd)?,
        Command::Group { common, cmd } => cli::group(&common, cmd)?,
        Command::Bfd { common, cmd } => cli::bfd(&common, cmd)?,
        Command::Show { common } => cli::show(&common)?,
        Command::Stats { common } => cli::stats(&common)?,
        Command::Uninstall { bpffs, uplink, state_dir } => {
            let dir = match (bpffs, uplink) {
                (Some(d), _) => d,
                (None, Some(u)) => PathBuf::from(daemon::DEFAULT_BPFFS_ROOT).join(u),
                (None, None) => anyhow::bail!("uninstall: give --bpffs DIR or --uplink IF"),
            };
            let removed = daemon::uninstall(&dir, &state_dir)?;
            println!("removed {} pins under {}", removed.len(), dir.display());
        }
        Command::Probe(ProbeCmd::Attach { iface, mode, bpffs }) => {
            if mode == AttachMode::Skb {
                tracing::warn!(
                    "attaching in generic (skb) mode: every packet pays for an skb; use native mode in production"
                );
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

/// `s` with control characters escaped: an argument's raw value (clap
/// quotes it) must not reach the operator's terminal as an escape sequence.
fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("XGW_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp
                    | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                    | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            // One line naming the argument and the value, like every other error.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
            eprintln!("xgw: {}", printable(first));
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: scripts and tests read it whole.
            eprintln!("xgw: {}", printable(&format!("{e:#}").replace('\n', " ")));
            ExitCode::FAILURE
        }
    }
}
