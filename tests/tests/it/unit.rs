//! The systemd unit, `scripts/xgw.service`: systemd's own checks find
//! nothing wrong with it (`systemd-analyze verify`), rate its sandbox at 4.0
//! or better (`systemd-analyze security`), and the paths it lets the daemon
//! write are the ones `ExecStart=` gives it. Then two real daemons run under
//! what of that sandbox a test can reproduce without systemd (see
//! `xgw_tests::sandbox`: the unit's capabilities, no new privileges, umask,
//! seccomp filters, read-only file system but for the daemon's directories,
//! hidden processes), with the unit's own flags: the API answers, XDP is
//! attached, BFD comes up over the tunnel between them (AF_PACKET, the
//! transmit thread at SCHED_FIFO), a ping crosses, metrics are served,
//! everything the daemon creates is private (0600 files, 0700
//! directories), and a stop and a start (the unit's `--keep-datapath`
//! upgrade path) keep forwarding.
//!
//!   vm A [eth0] -- [p1] gateway A [ul] ---- [ul] gateway B [p1] -- [eth0] vm B
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use xgw_tests::{
    daemon::{scrape, Daemon},
    gateway::TestGateway,
    ports::TempDir,
    require_root,
    sandbox::{proc_status, threads, Sandbox, Unit},
    xgw_bin, Netns, Veth,
};

const GW_IP: [&str; 2] = ["198.51.100.1", "198.51.100.2"];
const VM_IP: [&str; 2] = ["203.0.113.1", "203.0.113.2"];
const VM_MAC: [&str; 2] = ["02:00:5e:20:00:01", "02:00:5e:20:00:02"];
const PORT_KEY: [&str; 2] = ["17", "34"];
/// What the daemon logs when SCHED_FIFO is refused (`bfd::set_realtime`).
const NO_SCHED_FIFO: &str = "cannot run the transmit thread at SCHED_FIFO";
/// `xgw run --bfd-rt-priority`'s default (the unit does not set it).
const BFD_RT_PRIORITY: u32 = 50;
/// The instance the unit is checked as.
const INSTANCE: &str = "eth1";

/// The unit installed as `xgw@eth1.service` in a directory of its own, its
/// ExecStart= pointing at this build's daemon (systemd checks that it exists).
fn installed(unit: &Unit) -> (TempDir, PathBuf) {
    let dir = TempDir::new("unit");
    let file = dir.path.join(format!("xgw@{INSTANCE}.service"));
    let exe = unit.get("ExecStart").and_then(|l| l.split_whitespace().next()).expect("ExecStart=");
    assert!(unit.text.contains(&format!("ExecStart={exe} ")), "ExecStart= is one line's start");
    let text = unit.text.replace(&format!("ExecStart={exe} "), &format!("ExecStart={} ", xgw_bin().display()));
    std::fs::write(&file, text).unwrap();
    (dir, file)
}

fn systemd_analyze(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("systemd-analyze: {e} (Debian package systemd; scripts/setup.sh installs it)"));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn systemd_verifies_the_unit_without_a_word() {
    let unit = Unit::load();
    let (_dir, file) = installed(&unit);
    // verify exits 0 even on unknown keys and unparsable values; it only
    // prints them. Clean means silent.
    let (ok, out, err) = systemd_analyze(&["verify", file.to_str().unwrap()]);
    assert!(ok && out.is_empty() && err.is_empty(), "systemd-analyze verify {}:\n{out}{err}", unit.path.display());
}

#[test]
fn systemd_rates_the_sandbox_at_most_4() {
    let unit = Unit::load();
    let (_dir, file) = installed(&unit);
    let file = file.to_str().unwrap();
    let (ok, out, err) = systemd_analyze(&["security", "--offline=yes", "--no-pager", file]);
    assert!(ok, "systemd-analyze security:\n{out}{err}");
    let line = out.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| panic!("no score:\n{out}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("score in {line:?}"));
    eprintln!("systemd-analyze security: {}", line.trim_start_matches(|c: char| !c.is_ascii_alphanumeric()));
    assert!(score <= 4.0, "exposure {score} > 4.0:\n{out}");
    // systemd's own threshold (tenths) agrees.
    let (ok, out, _) = systemd_analyze(&["security", "--offline=yes", "--threshold=40", file]);
    assert!(ok, "--threshold=40 refused:\n{out}");
}

/// The directories ExecStart= has the daemon write are writable in the
/// sandbox: the state directory is StateDirectory=, the socket's is
/// RuntimeDirectory=, the pins' (`/sys/fs/bpf/xgw/<uplink>` unless
/// `--bpffs`) lie under a ReadWritePaths= entry that an ExecStartPre=+
/// creates (systemd refuses to start a unit whose ReadWritePaths= is
/// missing), and no entry is a path ProtectKernelTunables= makes read-only
/// by itself (the same path twice: read-only wins, so `/sys/fs/bpf` would
/// stay read-only).
#[test]
fn the_units_writable_paths_are_the_daemons() {
    let unit = Unit::load();
    let arg = |flag: &str| unit.exec_start_option(flag).map(|v| v.replace("%i", INSTANCE));
    let state = arg("--state-dir").expect("ExecStart= --state-dir");
    let state_dir = unit.get("StateDirectory").expect("StateDirectory=").replace("%i", INSTANCE);
    assert_eq!(state, format!("/var/lib/{state_dir}"), "--state-dir is not StateDirectory=");
    let socket = PathBuf::from(arg("--socket").expect("ExecStart= --socket"));
    let runtime = unit.get("RuntimeDirectory").expect("RuntimeDirectory=");
    assert_eq!(
        socket.parent(),
        Some(Path::new("/run").join(runtime).as_path()),
        "--socket is not in RuntimeDirectory="
    );
    assert_eq!(unit.get("StateDirectoryMode"), Some("0700"));
    assert_eq!(unit.get("RuntimeDirectoryMode"), Some("0700"));

    let pins = arg("--bpffs").unwrap_or(format!("{}/{INSTANCE}", xgw::daemon::DEFAULT_BPFFS_ROOT));
    let rw = unit.words("ReadWritePaths");
    let covering = rw.iter().find(|p| Path::new(&pins).starts_with(p.trim_start_matches('-')));
    let covering = covering.unwrap_or_else(|| panic!("no ReadWritePaths= entry covers the pins ({pins}): {rw:?}"));
    if !covering.starts_with('-') {
        let made =
            unit.all("ExecStartPre").iter().any(|c| c.starts_with('+') && c.contains(&format!("mkdir -p {covering}")));
        assert!(made, "nothing creates ReadWritePaths={covering} before the daemon starts");
    }
    if unit.yes("ProtectKernelTunables") {
        for p in &rw {
            assert!(!["/sys", "/sys/fs/bpf", "/proc/sys"].contains(p), "ReadWritePaths={p} stays read-only");
        }
    }
}

/// `bfd show NAME`: its one session.
fn bfd(d: &Daemon, name: &str) -> Value {
    let v = d.json(&["bfd", "show", name]);
    assert!(v.is_object(), "{v}");
    v
}

fn wait_bfd_up(d: &Daemon, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = bfd(d, name);
        if s["local_state"] == "up" && s["remote_state"] == "up" {
            return;
        }
        assert!(Instant::now() < deadline, "BFD {name} on {} not up: {s}", d.netns);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The unit's own `xgw run` flags, without those naming paths or addresses
/// (the test gives its own): `--keep-datapath`, ...
fn unit_flags(unit: &Unit) -> Vec<String> {
    const OWN: [&str; 7] = ["--uplink", "--config", "--state-dir", "--socket", "--bpffs", "--local-ip", "--metrics"];
    let mut flags = Vec::new();
    let mut args = unit.exec_start_args().into_iter().skip_while(|a| a == "run");
    while let Some(a) = args.next() {
        if OWN.contains(&a.as_str()) {
            args.next();
        } else {
            flags.push(a);
        }
    }
    flags
}

/// Every directory under `root` (itself included) is 0700 and every other
/// entry 0600; returns how many entries were checked.
fn all_private(root: &Path) -> usize {
    let meta = std::fs::symlink_metadata(root).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    let mode = meta.permissions().mode() & 0o7777;
    if meta.is_dir() {
        assert_eq!(mode, 0o700, "{} is {mode:o}", root.display());
        let mut n = 1;
        for e in std::fs::read_dir(root).unwrap().flatten() {
            n += all_private(&e.path());
        }
        n
    } else {
        assert_eq!(mode, 0o600, "{} is {mode:o}", root.display());
        1
    }
}

/// What the kernel says of a sandboxed daemon: the unit's capabilities and
/// nothing else, no new privileges, the filters, the umask, and the BFD
/// transmit thread at SCHED_FIFO.
fn check_process(d: &Daemon, sandbox: &Sandbox, unit: &Unit) {
    let pid = d.process.as_ref().expect("running").pid();
    let st = proc_status(pid);
    let caps = format!("{:016x}", sandbox.capabilities);
    for set in ["CapBnd", "CapPrm", "CapEff"] {
        assert_eq!(st[set], caps, "{set} of the daemon, {:?}", unit.capabilities());
    }
    assert_eq!(st["CapAmb"], format!("{:016x}", 0));
    assert_eq!(st["NoNewPrivs"], "1");
    assert_eq!(st["Seccomp"], "2", "seccomp filter mode");
    assert_eq!(st["Seccomp_filters"], "4", "one filter per option, as systemd");
    assert_eq!(st["Umask"], format!("{:04o}", unit.umask()));
    let log = d.process.as_ref().unwrap().stderr_so_far();
    assert!(!log.contains(NO_SCHED_FIFO), "{}:\n{log}", d.netns);
    let all = threads(pid);
    let bfd = all.iter().find(|t| t.0 == "xgw-bfd").unwrap_or_else(|| panic!("no xgw-bfd thread: {all:?}"));
    assert_eq!((bfd.1, bfd.2), (libc::SCHED_FIFO as u32, BFD_RT_PRIORITY), "xgw-bfd's policy and priority");
}

#[test]
fn two_daemons_forward_and_run_bfd_under_the_units_sandbox() {
    require_root!();
    let started = Instant::now();
    let unit = Unit::load();
    let sandbox = Sandbox::from_unit(&unit);
    let flags = unit_flags(&unit);
    assert!(flags.contains(&"--keep-datapath".to_owned()), "{flags:?}");

    let gw = [Netns::new("ugwa"), Netns::new("ugwb")];
    let vm = [Netns::new("uvma"), Netns::new("uvmb")];
    Veth::new(&gw[0], "ul", &format!("{}/24", GW_IP[0]), &gw[1], "ul", &format!("{}/24", GW_IP[1]));
    let mut pass = TestGateway::load(&["xgw_pass"]);
    let mut d: Vec<Daemon> = Vec::new();
    for i in 0..2 {
        Veth::new(&gw[i], "p1", "", &vm[i], "eth0", &format!("{}/24", VM_IP[i]));
        vm[i].ok(&["ip", "link", "set", "eth0", "address", VM_MAC[i], "mtu", "1422"]);
        vm[i].ok(&["ethtool", "-K", "eth0", "tx", "off"]);
        vm[i].disable_ipv6();
        // Redirected frames reach a veth only if its end runs XDP itself.
        pass.attach(&vm[i], "xgw_pass", "eth0");
        let mut daemon = Daemon::new(&gw[i], "ul", &[GW_IP[i]]);
        daemon.extra = flags.clone();
        if i == 0 {
            daemon.extra.extend(["--metrics".into(), "127.0.0.1:9477".into()]);
        }
        daemon.sandbox = Some(sandbox.clone());
        daemon.start();
        let other = 1 - i;
        daemon.cli(&["tunnel", "add", "gw", "--remote-ip", GW_IP[other], "--vni", "5001", "--bfd"]);
        let port = ["port", "add", "vm", "--ifname", "p1", "--vni", "5001", "--port-key", PORT_KEY[i]];
        daemon.cli(&[&port[..], &["--mac", VM_MAC[i], "--ip", VM_IP[i]]].concat());
        daemon.cli(&[
            "binding",
            "add",
            "--vni",
            "5001",
            "--mac",
            VM_MAC[other],
            "--ip",
            VM_IP[other],
            "--tunnel",
            "gw",
            "--port-key",
            PORT_KEY[other],
        ]);
        d.push(daemon);
    }
    for (i, daemon) in d.iter().enumerate() {
        wait_bfd_up(daemon, "gw");
        let net = gw[i].ok(&["bpftool", "net", "show"]);
        assert!(net.contains("ul(") && net.contains("p1("), "XDP on {}: {net}", gw[i].name);
        check_process(daemon, &sandbox, &unit);
    }
    vm[0].ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", VM_IP[1]]);
    let m = scrape(&gw[0].name, "127.0.0.1:9477");
    assert_eq!(m.get("xgw_ofports{state=\"used\"}"), Some(2.0), "{m:?}");
    let mut checked = 0;
    for daemon in &d {
        checked += all_private(&daemon.state_dir()) + all_private(&daemon.pins()) + all_private(&daemon.socket);
    }

    // A stop and a start with the unit's --keep-datapath: traffic crosses
    // meanwhile and after, BFD comes back.
    let first = d[0].stop();
    assert!(!first.contains(NO_SCHED_FIFO), "{first}");
    let pinger = vm[1].spawn(&["ping", "-c", "10", "-i", "0.1", "-W", "1", VM_IP[0]]);
    d[0].start();
    let (status, out, err) = pinger.wait(Duration::from_secs(10)).expect("ping ends");
    assert!(status.success() && out.contains("10 received"), "while restarting: {out}{err}");
    wait_bfd_up(&d[0], "gw");
    check_process(&d[0], &sandbox, &unit);
    vm[0].ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", VM_IP[1]]);
    for daemon in &mut d {
        let log = daemon.process.as_ref().unwrap().stderr_so_far();
        assert!(!log.contains(NO_SCHED_FIFO) && !log.contains("ERROR"), "{}:\n{log}", daemon.netns);
        daemon.stop();
    }
    eprintln!(
        "sandboxed: {} capabilities, {} system calls allowed, {checked} entries 0600/0700; {:.1} s",
        unit.capabilities().len(),
        unit.allowed_syscalls().len(),
        started.elapsed().as_secs_f64()
    );
}
