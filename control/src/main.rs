//! `xgw`: one binary for the operator. Subcommands grow with the daemon.
use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Result;
use clap::{Parser, Subcommand};
use xgw::{
    cli::{self, BfdCmd, BindingCmd, Common, GroupCmd, LogCmd, PortCmd, TunnelCmd},
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
    /// The daemon's log levels: `set TARGET=LEVEL`, `show` (like `ovs-appctl vlog/...`).
    Log {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        cmd: LogCmd,
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
    /// The store (`xgw.redb`): check it against the datapath, back it up,
    /// restore it, or rebuild it from the pinned maps.
    #[command(subcommand)]
    Store(StoreCmd),
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
    /// Start although the store is missing, empty or damaged while the
    /// pinned datapath holds ports: those ports are removed (a damaged file
    /// is moved aside). Without it such a start is refused; see `xgw store
    /// rebuild` for the way that keeps them.
    #[arg(long)]
    accept_store_loss: bool,
    /// Join OVN as a chassis: the Southbound database (`unix:PATH`,
    /// `tcp:IP:PORT`, or a comma-separated raft cluster). Overrides
    /// `remote` in the config file's [ovn].
    #[arg(long, env = "XGW_OVN_REMOTE")]
    ovn_remote: Option<String>,
    /// This gateway's OVN chassis name (`Chassis.name`). Overrides
    /// `chassis` in [ovn].
    #[arg(long, env = "XGW_CHASSIS")]
    chassis: Option<String>,
    /// How often tunnel next hops are re-resolved, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    nexthop_refresh_ms: u64,
    /// SCHED_FIFO priority of the BFD transmit thread (1-99; 0 for the ordinary scheduler, see docs/bfd.md).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i32).range(0..=99))]
    bfd_rt_priority: i32,
}

/// Where a store command looks: the state directory, and the datapath.
#[derive(clap::Args)]
struct StoreAt {
    /// The daemon's state directory (the store is `xgw.redb` in it).
    #[arg(long, default_value = daemon::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// The daemon's bpffs directory.
    #[arg(long)]
    bpffs: Option<PathBuf>,
    /// With --uplink: the default bpffs directory of that uplink.
    #[arg(long)]
    uplink: Option<String>,
}

impl StoreAt {
    fn pins(&self) -> Result<daemon::pins::Pins> {
        match (&self.bpffs, &self.uplink) {
            (Some(d), _) => Ok(daemon::pins::Pins::new(d)),
            (None, Some(u)) => Ok(daemon::pins::Pins::new(PathBuf::from(daemon::DEFAULT_BPFFS_ROOT).join(u))),
            (None, None) => anyhow::bail!("give --bpffs DIR or --uplink IF (where the datapath is pinned)"),
        }
    }
}

#[derive(Subcommand)]
enum StoreCmd {
    /// Read the store whole, load it as the daemon would, and compare it
    /// with the pinned datapath (exit 1 on any difference). The daemon must
    /// be stopped.
    Check {
        #[command(flatten)]
        at: StoreAt,
        /// Print exactly one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Print the whole store as one JSON document (a backup for `import`).
    /// With the daemon running, it is asked for it through its socket.
    Export {
        #[arg(long, default_value = daemon::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// The running daemon's API socket.
        #[arg(long, default_value = xgw::api::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Restore a backup made by `export` into a store that is missing,
    /// empty or damaged (moved aside, never deleted). The daemon must be
    /// stopped.
    Import {
        #[arg(long, default_value = daemon::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// The backup (`-` for standard input).
        file: PathBuf,
    },
    /// Rebuild a missing, empty or damaged store (moved aside) from the
    /// pinned datapath: every port keeps its name, number and settings,
    /// every binding and group comes back. The daemon must be stopped.
    Rebuild {
        #[command(flatten)]
        at: StoreAt,
    },
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

fn store(cmd: StoreCmd) -> Result<()> {
    use daemon::recovery;
    match cmd {
        StoreCmd::Check { at, json } => {
            let report = recovery::check(&at.state_dir, &at.pins()?)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "store {}: readable, {} ports, {} bindings, {} groups",
                    report.store, report.ports, report.bindings, report.groups
                );
                match &report.datapath {
                    None => println!("no datapath is pinned"),
                    Some(d) if report.differences.is_empty() => println!("the datapath pinned in {d} agrees"),
                    Some(d) => {
                        println!("the datapath pinned in {d} differs:");
                        for line in &report.differences {
                            println!("  {line}");
                        }
                    }
                }
            }
            if !report.differences.is_empty() {
                anyhow::bail!("store check: {} differences with the datapath", report.differences.len());
            }
        }
        StoreCmd::Export { state_dir, socket } => {
            let export = match recovery::export(&state_dir) {
                Ok(e) => e,
                // The daemon holds the store: it answers for it.
                Err(e) if format!("{e:#}").contains("stop the daemon first") => {
                    match xgw::api::call(&socket, &xgw::api::Request::StoreExport, Duration::from_secs(30))? {
                        xgw::api::Reply::Store(e) => e,
                        other => anyhow::bail!("the daemon answered {other:?} to an export"),
                    }
                }
                Err(e) => return Err(e),
            };
            println!("{}", serde_json::to_string_pretty(&export)?);
        }
        StoreCmd::Import { state_dir, file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
            };
            let export: xgw::ofport::redb_store::Export =
                serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let written = recovery::import(&state_dir, &export)?;
            print_written("imported", &written);
        }
        StoreCmd::Rebuild { at } => {
            let written = recovery::rebuild(&at.state_dir, &at.pins()?)?;
            print_written("rebuilt from the datapath", &written);
            println!(
                "not in the datapath, so not restored: which entries the config file owns (it claims them again at \
                 the next start), the [bfd] timers and single-hop BFD peers added through the API"
            );
        }
    }
    Ok(())
}

fn print_written(what: &str, w: &daemon::recovery::Written) {
    if let Some(aside) = &w.moved_aside {
        println!("the unusable store was kept as {}", aside.display());
    }
    println!("{what}: {} ports, {} bindings, {} groups", w.ports.len(), w.bindings, w.groups);
    for r in &w.ports {
        println!("  ofport {:>5}  {}", r.ofport, r.name());
    }
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
                accept_store_loss: a.accept_store_loss,
                ovn: (a.ovn_remote.is_some() || a.chassis.is_some())
                    .then_some(daemon::OvnOptions { remote: a.ovn_remote, chassis: a.chassis }),
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
        Command::Log { common, cmd } => cli::log(&common, cmd)?,
        Command::Uninstall { bpffs, uplink, state_dir } => {
            let dir = match (bpffs, uplink) {
                (Some(d), _) => d,
                (None, Some(u)) => PathBuf::from(daemon::DEFAULT_BPFFS_ROOT).join(u),
                (None, None) => anyhow::bail!("uninstall: give --bpffs DIR or --uplink IF"),
            };
            let removed = daemon::uninstall(&dir, &state_dir)?;
            for pin in &removed {
                println!("removed {}", pin.display());
            }
            println!("removed {} pins under {}", removed.len(), dir.display());
        }
        Command::Store(cmd) => store(cmd)?,
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
    // XGW_LOG; a value that does not parse is refused, by name.
    if let Err(e) = xgw::logging::init() {
        eprintln!("xgw: {}", printable(&format!("{e:#}")));
        return ExitCode::from(2);
    }
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
