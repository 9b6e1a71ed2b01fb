//! `xgw`: one binary for the operator. Subcommands grow with the daemon.
use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};
use xgw::{
    cli::{self, BfdCmd, BindingCmd, Global, GroupCmd, LogCmd, PortCmd, TunnelCmd},
    daemon::{self, RunOptions},
    datapath::AttachMode,
    probe,
};

#[derive(Parser)]
#[command(
    name = "xgw",
    version,
    about = "xgw: XDP gateway datapath for Geneve overlays",
    long_about = "xgw: XDP gateway datapath for Geneve overlays.\n\n`xgw run` is the daemon (one per uplink); the \
                  other commands talk to it through its socket, or read the pinned datapath. Options marked global \
                  go before or after the subcommand, as ovs-vsctl's."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway daemon on an uplink (--uplink); it serves its API
    /// on --socket [default: /run/xgw/<UPLINK>.sock].
    Run(RunArgs),
    /// Local ports (through the daemon).
    #[command(subcommand)]
    Port(PortCmd),
    /// Geneve tunnels (through the daemon).
    #[command(subcommand)]
    Tunnel(TunnelCmd),
    /// Remote MACs behind tunnels (through the daemon).
    #[command(subcommand)]
    Binding(BindingCmd),
    /// Multicast groups: where broadcast, multicast and unknown unicast of a
    /// VNI are flooded, and what OVN's group keys reach (through the daemon).
    #[command(subcommand)]
    Group(GroupCmd),
    /// BFD sessions: `show` (like `ovs-appctl bfd/show`), single-hop `peer`s.
    #[command(subcommand)]
    Bfd(BfdCmd),
    /// Overview of the gateway, like `ovs-vsctl show`: version, uptime,
    /// uplink, ports and tunnels with OpenFlow numbers, bindings, groups,
    /// BFD peers, and every error.
    Show,
    /// Per-port packets and bytes, drops by reason, replies.
    Stats,
    /// The daemon's log levels: `set TARGET=LEVEL`, `show` (like `ovs-appctl vlog/...`).
    #[command(subcommand)]
    Log(LogCmd),
    /// Remove the pinned programs, links and maps a daemon left behind
    /// (with --uplink: the default bpffs directory of that uplink).
    Uninstall {
        /// The daemon's bpffs directory.
        #[arg(long)]
        bpffs: Option<PathBuf>,
        /// The daemon's state directory (refused while a daemon holds it).
        #[arg(long, default_value = daemon::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Run one packet through the live datapath (like `ovs-appctl
    /// ofproto/trace`): the verdict, where it goes, the frame that comes
    /// out, decoded, and the counters it moved, with the drop reason in
    /// words. Needs root and the daemon's bpffs directory (--bpffs, or the
    /// default one of --uplink), not the daemon: it loads this binary's
    /// programs against the pinned configuration maps, with counters,
    /// flow caches and BFD state of its own, so it changes nothing live.
    #[command(after_long_help = TRACE_SYNTAX)]
    Trace(TraceArgs),
    /// The running datapath's flow caches (like `ovs-appctl
    /// dpctl/dump-flows`): every filled slot of DECAP_FLOWS and ENCAP_FLOWS,
    /// per CPU, its key, the cached answer, its generation and whether it
    /// is current (a stale slot is refilled by its next packet). Reads
    /// through the pinned links: root and the bpffs directory, no daemon.
    DumpFlows {
        /// The daemon's bpffs directory [default: /sys/fs/bpf/xgw/<UPLINK> with --uplink].
        #[arg(long, env = "XGW_BPFFS")]
        bpffs: Option<PathBuf>,
    },
    /// The store (`xgw.redb`): check it against the datapath, back it up,
    /// restore it, or rebuild it from the pinned maps.
    #[command(subcommand)]
    Store(StoreCmd),
    /// Per-protocol packet counter on one interface (the first XDP program).
    #[command(subcommand)]
    Probe(ProbeCmd),
    /// Print a shell completion script for xgw's commands and options
    /// (install: README, "Completions and man pages").
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages for xgw and each of its commands (xgw.1,
    /// xgw-port-add.1, ...) into a directory.
    Man {
        /// Where to write them (created if missing).
        dir: PathBuf,
    },
}

/// `xgw trace --help`: the packet syntax (`xgw::trace::flow`).
const TRACE_SYNTAX: &str = "Packet fields (FLOW), comma-separated key=value, as ofproto/trace's:
  eth_src=MAC eth_dst=MAC [vlan=VID] [eth_type=N]
  ip_src=IP ip_dst=IP [ip_ttl=N] [ip_proto=N]      (IPv4 or IPv6, by the addresses)
  udp_src=N udp_dst=N | tcp_src=N tcp_dst=N | icmp_type=N [icmp_code=N]
  arp_op=1|2 arp_sha=MAC arp_spa=IPv4 [arp_tha=MAC] arp_tpa=IPv4
  vni=N [ovn_ingress=KEY] [ovn_egress=KEY] [geneve_opt=CLASS:TYPE:HEX]... [geneve_oam=1] [geneve_critical=1]
  inner_<any Ethernet, IP, L4 or ARP field>        (the frame inside Geneve; needs vni=)
  payload=HEX | payload_len=N                      (after the innermost header)
vni= makes the frame Geneve (outer UDP to 6081); ovn_ingress/ovn_egress add OVN's option.
IP without L4 fields is an ICMP echo request. Defaults: on the uplink the outer eth_dst and ip_dst
are the uplink's MAC and tunnel address; on a local port eth_src is the port's MAC.

Examples:
  xgw trace --in uplink 'ip_src=198.51.100.2,vni=5001,ovn_ingress=34,ovn_egress=17,\\
      inner_eth_src=02:00:5e:20:00:02,inner_eth_dst=02:00:5e:20:00:01,inner_ip_src=203.0.113.2,inner_ip_dst=203.0.113.1'
  xgw trace --in vm1 'eth_dst=02:00:5e:20:00:02,ip_src=203.0.113.1,ip_dst=203.0.113.2,udp_dst=53'
  xgw trace --in uplink --pcap capture.pcap";

#[derive(clap::Args)]
struct TraceArgs {
    /// Where the packet arrives: `uplink`, or a local port (its name or its
    /// interface).
    #[arg(long = "in", value_name = "uplink|PORT")]
    ingress: String,
    /// The first packet of this pcap file (tcpdump -w), instead of FLOW.
    #[arg(long, value_name = "FILE", conflicts_with = "flow")]
    pcap: Option<PathBuf>,
    /// The packet's fields (see below).
    #[arg(value_name = "FLOW", required_unless_present = "pcap")]
    flow: Option<xgw::trace::flow::Flow>,
    /// The daemon's bpffs directory [default: /sys/fs/bpf/xgw/<UPLINK> with --uplink].
    #[arg(long, env = "XGW_BPFFS")]
    bpffs: Option<PathBuf>,
}

/// The pinned datapath a reading command looks at.
fn bpffs_dir(bpffs: Option<PathBuf>, uplink: Option<&String>) -> Result<PathBuf> {
    match (bpffs, uplink) {
        (Some(d), _) => Ok(d),
        (None, Some(u)) => Ok(PathBuf::from(daemon::DEFAULT_BPFFS_ROOT).join(u)),
        (None, None) => anyhow::bail!("give --bpffs DIR or --uplink IF (where the datapath is pinned)"),
    }
}

#[derive(clap::Args)]
struct RunArgs {
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

/// Where a store command looks: the state directory, and the datapath
/// (--bpffs, or the default directory of --uplink).
#[derive(clap::Args)]
struct StoreAt {
    /// The daemon's state directory (the store is `xgw.redb` in it).
    #[arg(long, default_value = daemon::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// The daemon's bpffs directory.
    #[arg(long)]
    bpffs: Option<PathBuf>,
}

impl StoreAt {
    fn pins(&self, uplink: Option<&String>) -> Result<daemon::pins::Pins> {
        match (&self.bpffs, uplink) {
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
    },
    /// Print the whole store as one JSON document (a backup for `import`).
    /// With the daemon running, it is asked for it through its socket.
    Export {
        /// The daemon's state directory (the store is `xgw.redb` in it).
        #[arg(long, default_value = daemon::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Restore a backup made by `export` into a store that is missing,
    /// empty or damaged (moved aside, never deleted). The daemon must be
    /// stopped.
    Import {
        /// The daemon's state directory (the store is `xgw.redb` in it).
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
        /// The interface the probe is attached to.
        #[arg(long)]
        iface: String,
        /// bpffs directory under which the probe is pinned (as `probe-<iface>`).
        #[arg(long, default_value = "/sys/fs/bpf/xgw")]
        bpffs: PathBuf,
    },
    /// Detach the probe and remove its pins.
    Detach {
        /// The interface the probe is attached to.
        #[arg(long)]
        iface: String,
        /// bpffs directory under which the probe is pinned (as `probe-<iface>`).
        #[arg(long, default_value = "/sys/fs/bpf/xgw")]
        bpffs: PathBuf,
    },
}

fn store(g: &Global, cmd: StoreCmd) -> Result<()> {
    use daemon::recovery;
    match cmd {
        StoreCmd::Check { at } => {
            let report = recovery::check(&at.state_dir, &at.pins(g.uplink.as_ref())?)?;
            if g.json {
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
                // The report is the document; the error goes to stderr only.
                return Err(Reported(anyhow::anyhow!(
                    "store check: {} differences with the datapath",
                    report.differences.len()
                ))
                .into());
            }
        }
        StoreCmd::Export { state_dir } => {
            let export = match recovery::export(&state_dir) {
                Ok(e) => e,
                // The daemon holds the store: it answers for it.
                Err(e) if format!("{e:#}").contains("stop the daemon first") => {
                    let socket = g.socket()?;
                    let timeout = Duration::from_secs_f64(g.timeout.max(30.0));
                    match xgw::api::call(&socket, &xgw::api::Request::StoreExport {}, timeout)? {
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
            print_written(g, "imported", &written, "");
        }
        StoreCmd::Rebuild { at } => {
            let written = recovery::rebuild(&at.state_dir, &at.pins(g.uplink.as_ref())?)?;
            print_written(
                g,
                "rebuilt from the datapath",
                &written,
                "not in the datapath, so not restored: which entries the config file owns (it claims them again at \
                 the next start), the [bfd] timers and single-hop BFD peers added through the API",
            );
        }
    }
    Ok(())
}

fn print_written(g: &Global, what: &str, w: &daemon::recovery::Written, note: &str) {
    if g.json {
        let ports: Vec<_> =
            w.ports.iter().map(|r| serde_json::json!({ "name": r.name(), "ofport": r.ofport.get() })).collect();
        println!(
            "{}",
            serde_json::json!({
                "moved_aside": w.moved_aside.as_ref().map(|p| p.display().to_string()),
                "ports": ports,
                "bindings": w.bindings,
                "groups": w.groups,
            })
        );
        return;
    }
    if let Some(aside) = &w.moved_aside {
        println!("the unusable store was kept as {}", aside.display());
    }
    println!("{what}: {} ports, {} bindings, {} groups", w.ports.len(), w.bindings, w.groups);
    for r in &w.ports {
        println!("  ofport {:>5}  {}", r.ofport, r.name());
    }
    if !note.is_empty() {
        println!("{note}");
    }
}

fn pins(bpffs: &std::path::Path, iface: &str) -> probe::Pins {
    probe::Pins::new(bpffs.join(format!("probe-{iface}")))
}

/// An error whose command already printed its JSON document: under
/// `--json` only stderr hears of it.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
struct Reported(anyhow::Error);

/// A usage error found after parsing, reported the way clap reports its own.
fn usage_error(subcommand: &str, kind: clap::error::ErrorKind, message: &str) -> clap::Error {
    let mut cmd = Cli::command();
    cmd.build();
    let cmd = cmd.find_subcommand_mut(subcommand).expect("a subcommand of xgw");
    cmd.error(kind, message)
}

fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    let no_json = |what: &str| {
        if g.json {
            Err(usage_error(
                what,
                clap::error::ErrorKind::ArgumentConflict,
                &format!("`xgw {what}` prints no JSON; drop --json"),
            ))
        } else {
            Ok(())
        }
    };
    match cli.command {
        Command::Run(a) => {
            no_json("run")?;
            let Some(uplink) = g.uplink.clone() else {
                return Err(usage_error(
                    "run",
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "the following required arguments were not provided:\n  --uplink <IF> (or XGW_UPLINK)",
                )
                .into());
            };
            let socket = g.socket.clone().unwrap_or_else(|| xgw::api::uplink_socket(&uplink));
            let opts = RunOptions {
                uplink,
                local_ips: a.local_ip,
                mode: a.mode,
                config: a.config,
                state_dir: a.state_dir,
                bpffs: a.bpffs,
                socket,
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
        Command::Port(cmd) => cli::port(g, cmd)?,
        Command::Tunnel(cmd) => cli::tunnel(g, cmd)?,
        Command::Binding(cmd) => cli::binding(g, cmd)?,
        Command::Group(cmd) => cli::group(g, cmd)?,
        Command::Bfd(cmd) => cli::bfd(g, cmd)?,
        Command::Show => cli::show(g)?,
        Command::Stats => cli::stats(g)?,
        Command::Log(cmd) => cli::log(g, cmd)?,
        Command::Uninstall { bpffs, state_dir } => {
            let dir = match (bpffs, &g.uplink) {
                (Some(d), _) => d,
                (None, Some(u)) => PathBuf::from(daemon::DEFAULT_BPFFS_ROOT).join(u),
                (None, None) => anyhow::bail!("uninstall: give --bpffs DIR or --uplink IF"),
            };
            let removed = daemon::uninstall(&dir, &state_dir)?;
            if g.json {
                let removed: Vec<String> = removed.iter().map(|p| p.display().to_string()).collect();
                println!("{}", serde_json::json!({ "bpffs": dir.display().to_string(), "removed": removed }));
            } else {
                for pin in &removed {
                    println!("removed {}", pin.display());
                }
                println!("removed {} pins under {}", removed.len(), dir.display());
            }
        }
        Command::Trace(a) => {
            let dir = bpffs_dir(a.bpffs, g.uplink.as_ref())?;
            let input = match (a.flow, a.pcap) {
                (_, Some(p)) => xgw::trace::Input::Pcap(p),
                (Some(f), None) => xgw::trace::Input::Flow(f),
                (None, None) => unreachable!("clap requires one"),
            };
            let doc = xgw::trace::trace(&dir, &a.ingress, input)?;
            if g.json {
                println!("{doc}");
            } else {
                xgw::trace::print(&doc);
            }
        }
        Command::DumpFlows { bpffs } => {
            let doc = xgw::trace::flows::dump(&bpffs_dir(bpffs, g.uplink.as_ref())?)?;
            if g.json {
                println!("{doc}");
            } else {
                xgw::trace::flows::print(&doc);
            }
        }
        Command::Store(cmd) => store(g, cmd)?,
        Command::Probe(ProbeCmd::Attach { iface, mode, bpffs }) => {
            if mode == AttachMode::Skb {
                tracing::warn!(
                    "attaching in generic (skb) mode: every packet pays for an skb; use native mode in production"
                );
            }
            let at = pins(&bpffs, &iface);
            probe::attach(&iface, mode, &at)?;
            if g.json {
                println!(
                    "{}",
                    serde_json::json!({ "iface": iface, "mode": mode, "pinned": at.dir.display().to_string() })
                );
            } else {
                println!("probe attached to {iface} ({mode:?} mode), pinned at {}", at.dir.display());
            }
        }
        Command::Probe(ProbeCmd::Show { iface, bpffs }) => {
            let counts = probe::read_pinned(&pins(&bpffs, &iface))?;
            if g.json {
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
            if g.json {
                println!("{}", serde_json::json!({ "iface": iface, "detached": true }));
            } else {
                println!("probe detached from {iface}");
            }
        }
        Command::Completions { shell } => {
            no_json("completions")?;
            clap_complete::generate(shell, &mut Cli::command(), "xgw", &mut std::io::stdout());
        }
        Command::Man { dir } => {
            no_json("man")?;
            std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
            let mut cmd = Cli::command();
            cmd.build();
            let written = write_man_pages(&cmd, &dir)?;
            println!("wrote {written} man pages into {}", dir.display());
        }
    }
    Ok(())
}

/// `xgw.1`, then `xgw-<command>.1` for each subcommand, depth first (as
/// `git-<command>` pages are named).
fn write_man_pages(cmd: &clap::Command, dir: &std::path::Path) -> Result<usize> {
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name()).to_owned();
    let page = dir.join(format!("{name}.1"));
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone()).title(name.clone()).render(&mut out)?;
    std::fs::write(&page, out).map_err(|e| anyhow::anyhow!("{}: {e}", page.display()))?;
    let mut written = 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        let sub = sub.clone().display_name(format!("{name}-{}", sub.get_name()));
        written += write_man_pages(&sub, dir)?;
    }
    Ok(written)
}

/// `s` with control characters escaped, line breaks kept: an argument's
/// raw value (clap quotes it) must not reach the operator's terminal as an
/// escape sequence.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\n' { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

/// Under `--json` an error is a document on stdout too.
fn json_error(message: &str) {
    println!("{}", serde_json::json!({ "error": message }));
}

fn main() -> ExitCode {
    // XGW_LOG; a value that does not parse is refused, by name.
    if let Err(e) = xgw::logging::init() {
        eprintln!("xgw: {}", printable(&format!("{e:#}")));
        return ExitCode::from(2);
    }
    // Known before parsing, for an error in parsing itself.
    let json = std::env::args_os().skip(1).take_while(|a| a != "--").any(|a| a == "--json");
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
        Err(e) => return clap_error(&e, json),
    };
    let json = cli.global.json;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(e) = e.downcast_ref::<clap::Error>() {
                return clap_error(e, json);
            }
            let reported = e.downcast_ref::<Reported>().is_some();
            // One line: scripts and tests read it whole.
            let text = printable(&xgw::api::error_text(&e).replace('\n', " "));
            if json && !reported {
                json_error(&text);
            }
            eprintln!("xgw: {text}");
            ExitCode::FAILURE
        }
    }
}

/// clap's message whole (what is wrong, the usage, the hint), plain and
/// with control characters escaped; exit status 2, as clap's own.
fn clap_error(e: &clap::Error, json: bool) -> ExitCode {
    let text = printable(&e.render().to_string());
    if json {
        // Its first paragraph (what is wrong, and the arguments it names).
        let what: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
        json_error(what.join(" ").trim_start_matches("error: "));
    }
    eprint!("{text}");
    if !text.ends_with('\n') {
        eprintln!();
    }
    ExitCode::from(2)
}
