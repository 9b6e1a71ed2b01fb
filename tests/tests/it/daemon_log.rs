//! The daemon's log as an operator meets it: `XGW_LOG` checked at start,
//! dependencies quiet unless named, levels changed at run time with `xgw
//! log set` (like `ovs-appctl vlog/set`), syslog priorities for journald
//! under systemd, and the datapath's own aya-log records in the same log.
use std::{
    process::Command,
    time::{Duration, Instant},
};

use serde_json::json;
use xgw_tests::{
    daemon::{gateway, Daemon},
    require_root,
};

fn port_add(d: &Daemon, name: &str, key: &str, mac: &str) {
    d.cli(&["port", "add", name, "--ifname", "p1", "--vni", "5001", "--port-key", key, "--mac", mac]);
}

fn port_del(d: &Daemon, name: &str) {
    d.cli(&["port", "del", name]);
}

/// The daemon's stderr so far.
fn log(d: &Daemon) -> String {
    d.process.as_ref().expect("running").stderr_so_far()
}

/// Waits until the daemon's stderr has a line containing `what`, and
/// returns that line.
fn wait_line(d: &Daemon, what: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(l) = log(d).lines().find(|l| l.contains(what)) {
            return l.to_owned();
        }
        assert!(Instant::now() < deadline, "no log line with {what:?} within {timeout:?}:\n{}", log(d));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lines whose target is one of aya's crates (`aya::`, `aya_obj::`, ...),
/// as tracing-subscriber's format writes it: `LEVEL target: message`.
fn aya_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.split_whitespace().any(|w| w.starts_with("aya") && w.ends_with(':') && w.contains("::")))
        .collect()
}

#[test]
fn an_invalid_xgw_log_stops_the_start_naming_the_value() {
    require_root!();
    let gw = gateway("lbad");
    let mut cmd = gw.daemon.run_command(&[]);
    cmd.env("XGW_LOG", "info,aya=loud");
    let started = xgw_tests::process::Process::spawn(cmd, "xgw run");
    let (status, _, err) = started.wait(Duration::from_secs(10)).expect("xgw run with a bad XGW_LOG exits");
    assert_eq!(status.code(), Some(2), "{err}");
    assert_eq!(
        err.trim_end(),
        "xgw: XGW_LOG=\"info,aya=loud\": \"loud\" is not a level (off, error, warn, info, debug, trace)"
    );
    // Nothing was touched: no pins, no socket.
    assert!(!gw.daemon.bpffs_dir().exists(), "the datapath was loaded");
    assert!(!gw.daemon.socket.exists());
    // The CLI says the same.
    let out = Command::new(xgw_tests::xgw_bin()).args(["show"]).env("XGW_LOG", "xgw=").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("xgw: XGW_LOG=\"xgw=\": \"\" is not a level"));
}

#[test]
fn dependencies_stay_quiet_at_debug_unless_named() {
    require_root!();
    let mut gw = gateway("lnoise");
    // xgw at debug: its own debug lines, none of aya's BTF detail.
    gw.daemon.env = vec![("XGW_LOG".into(), "debug".into())];
    gw.daemon.start();
    port_add(&gw.daemon, "vm1", "17", "02:00:5e:20:00:01");
    wait_line(&gw.daemon, "xgw_local attached", Duration::from_secs(5));
    let text = gw.daemon.stop();
    assert!(text.lines().any(|l| l.contains("DEBUG xgw::")), "no debug line of xgw's own:\n{text}");
    let aya = aya_lines(&text);
    assert!(aya.is_empty(), "{} lines of aya's at XGW_LOG=debug, such as {:?}", aya.len(), &aya[..aya.len().min(3)]);

    // Named, aya's target is heard.
    gw.daemon.env = vec![("XGW_LOG".into(), "debug,aya=debug".into())];
    gw.daemon.start();
    let text = gw.daemon.stop();
    assert!(aya_lines(&text).len() > 10, "aya named at debug, but few of its lines:\n{text}");
    let _ = &gw.ns;
}

#[test]
fn log_set_changes_levels_in_the_running_daemon() {
    require_root!();
    let mut gw = gateway("lset");
    gw.daemon.start();
    let d = &gw.daemon;
    let show = d.json(&["log", "show"]);
    assert_eq!(show, json!({"filter": "warn,xgw=info", "others": "warn", "targets": {"xgw": "info"}}));

    // At info (the default), a port's XDP attachment (debug) is not logged.
    port_add(d, "vm1", "17", "02:00:5e:20:00:01");
    wait_line(d, "local port added", Duration::from_secs(5));
    assert!(!log(d).contains("xgw_local attached"), "{}", log(d));
    port_del(d, "vm1");

    // One module at debug: it is.
    let set = d.json(&["log", "set", "xgw::daemon::effects=debug"]);
    assert_eq!(set["targets"]["xgw::daemon::effects"], "debug", "{set}");
    assert_eq!(set["filter"], "warn,xgw=info,xgw::daemon::effects=debug");
    wait_line(d, "log levels changed", Duration::from_secs(5));
    port_add(d, "vm2", "18", "02:00:5e:20:00:02");
    let attached = wait_line(d, "xgw_local attached", Duration::from_secs(5));
    assert!(attached.contains("vm2"), "{attached}");
    port_del(d, "vm2");

    // xgw at warn: not even the info lines.
    d.cli(&["log", "set", "xgw=warn", "xgw::daemon::effects=warn"]);
    port_add(d, "vm3", "19", "02:00:5e:20:00:03");
    std::thread::sleep(Duration::from_millis(200));
    assert!(!log(d).contains("port=vm3"), "an info line at warn:\n{}", log(d));
    // A bare level is xgw's; the table lists every target.
    d.cli(&["log", "set", "info"]);
    let table = d.cli(&["log", "show"]);
    assert_eq!(
        table,
        "target                level\nxgw                   info\nxgw::daemon::effects  warn\n(others)              warn\n"
    );

    // A bad directive changes nothing and is refused in one line.
    let err = d.refused(&["log", "set", "aya=debug", "xgw=loud"]);
    assert!(err.contains("\"loud\" is not a level"), "{err}");
    assert_eq!(d.json(&["log", "show"])["filter"], "warn,xgw=info,xgw::daemon::effects=warn");
    gw.daemon.stop();
}

#[test]
fn under_systemd_each_line_carries_its_syslog_priority() {
    require_root!();
    let mut gw = gateway("ljournal");
    // What systemd does for StandardError=journal: JOURNAL_STREAM names the
    // stream (device:inode) the daemon's stderr is. Here stderr is the
    // test's pipe, named the same way.
    let run = gw.daemon.run_command(&["--mode", "skb"]);
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec \"$@\"", "sh"])
        .arg(run.get_program())
        .args(run.get_args())
        .envs(run.get_envs().filter_map(|(k, v)| Some((k, v?))));
    gw.daemon.start_command(cmd);
    let text = gw.daemon.stop();
    let line = |what: &str| text.lines().find(|l| l.contains(what)).unwrap_or_else(|| panic!("{what}:\n{text}"));
    // Info, warning; no timestamp (journald keeps its own).
    assert!(line("xgw daemon ready").starts_with("<6> INFO xgw::daemon:"), "{text}");
    assert!(line("generic (skb) mode").starts_with("<4> WARN xgw::daemon:"), "{text}");
    assert!(text.lines().all(|l| l.starts_with('<')), "a line without its priority:\n{text}");

    // Not under systemd (or stderr redirected elsewhere): no prefixes.
    gw.daemon.env = vec![("JOURNAL_STREAM".into(), "1:1".into())];
    gw.daemon.start();
    let text = gw.daemon.stop();
    assert!(text.lines().any(|l| l.contains("xgw daemon ready")), "{text}");
    assert!(!text.lines().any(|l| l.starts_with('<')), "{text}");
}

/// How many instructions the verifier explored for the program of the XDP
/// link pinned at `pin`.
fn verified(pin: &std::path::Path) -> u32 {
    let link: serde_json::Value = serde_json::from_slice(
        &Command::new("bpftool").args(["-j", "link", "show", "pinned"]).arg(pin).output().unwrap().stdout,
    )
    .expect("bpftool link show");
    let id = link["prog_id"].as_u64().expect("prog_id") as u32;
    let prog = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .unwrap_or_else(|| panic!("no program {id}"));
    prog.verified_instruction_count().expect("the kernel reports verified_insns")
}

#[test]
fn the_datapath_tells_a_failed_redirect_in_the_daemons_log_not_per_packet() {
    require_root!();
    let mut gw = gateway("ldp");
    gw.daemon.start();
    let d = &gw.daemon;
    let (vm1, vm2) = ("02:00:5e:20:00:01", "02:00:5e:20:00:02");
    d.cli(&[
        "port",
        "add",
        "vm1",
        "--ifname",
        "p1",
        "--vni",
        "5001",
        "--port-key",
        "17",
        "--mac",
        vm1,
        "--ip",
        "203.0.113.1",
    ]);
    let p2 = d.json(&["port", "add", "vm2", "--ifname", "p2", "--vni", "5001", "--port-key", "18", "--mac", vm2]);
    let ofport = p2["ofport"].as_u64().unwrap() as u32;
    // vm2's DEVMAP slot goes missing (as if the daemon had not finished
    // writing it): vm1's frames to vm2 are switched to a port with no
    // interface to redirect to.
    let devmap = aya::maps::MapData::from_pin(d.pins().join("DEVMAP")).unwrap();
    let mut devmap = aya::maps::DevMapHash::try_from(aya::maps::Map::DevMapHash(devmap)).unwrap();
    devmap.remove(ofport).expect("vm2's DEVMAP entry");
    let ns = &gw.ns;
    ns.ok(&["ip", "link", "set", "p1x", "address", vm1]);
    ns.ok(&["ip", "addr", "add", "203.0.113.1/24", "dev", "p1x"]);
    ns.ok(&["ip", "neigh", "replace", "203.0.113.2", "lladdr", vm2, "dev", "p1x", "nud", "permanent"]);
    let sent = 40;
    let _ = ns.exec(&["ping", "-c", &sent.to_string(), "-i", "0.01", "-W", "1", "-I", "p1x", "203.0.113.2"]);

    let what = format!("xgw_local: no DEVMAP entry for ofport {ofport}; dropped");
    let first = wait_line(d, &what, Duration::from_secs(5));
    assert!(first.contains("WARN xgw_datapath::events:"), "{first}");
    let dropped = d.json(&["stats"])["drops"]["redirect_failed"].as_u64().unwrap();
    assert!(dropped >= sent, "{dropped} redirect failures counted for {sent} pings");
    // Told at the 1st, 2nd, 4th, 8th... failure on each CPU: a handful of
    // lines for every CPU together, not one per packet.
    std::thread::sleep(Duration::from_millis(1500));
    let told = log(d).lines().filter(|l| l.contains(&what)).count();
    eprintln!("{told} lines for {dropped} failures, the first: {first}");
    let cpus = std::thread::available_parallelism().unwrap().get();
    let most = cpus * (64 - dropped.leading_zeros() as usize);
    assert!(told <= most && (told as u64) < dropped, "{told} lines for {dropped} failures ({cpus} CPUs)");
    let with_logs = verified(&d.pins().join("links/uplink"));
    gw.daemon.stop();

    // With the datapath's target below warn at load, the verifier prunes
    // its aya-log calls: fewer instructions explored, and nothing told.
    gw.daemon.env = vec![("XGW_LOG".into(), "info,xgw_datapath=error".into())];
    gw.daemon.start();
    let without = verified(&gw.daemon.pins().join("links/uplink"));
    assert!(without < with_logs, "xgw_uplink verified {without} instructions without its warn calls, {with_logs} with");
    eprintln!("xgw_uplink: the verifier explored {with_logs} instructions with its warn calls, {without} without");
    gw.daemon.stop();
}
