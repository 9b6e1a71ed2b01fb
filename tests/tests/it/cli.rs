//! The CLI as an operator who knows ovs-vsctl and ovs-appctl uses it,
//! through the real binary: every command and option documented, clap's
//! errors whole, global options before or after the subcommand, the
//! daemon's socket found as the systemd unit places it, `--may-exist` and
//! `--if-exists` with ovs-vsctl's meaning, errors as JSON under `--json`,
//! `show` saying every error its JSON carries, `bfd show` with every field
//! of `ovs-appctl bfd/show`, and completions and man pages generated from
//! the same definitions.
use std::{
    collections::BTreeSet,
    process::{Command, Output},
    time::{Duration, Instant},
};

use serde_json::Value;
use xgw_tests::{daemon::Daemon, ports::TempDir, process::Process, require_root, xgw_bin, Netns, Veth};

const GW_IP: [&str; 2] = ["198.51.100.1", "198.51.100.2"];

fn xgw(args: &[&str]) -> Output {
    Command::new(xgw_bin()).args(args).env_remove("XGW_SOCKET").env_remove("XGW_UPLINK").output().expect("run xgw")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Entries of a `-h` page without a description: `(section, entry)`, and
/// the subcommands it lists. An entry is a line of `Commands:`,
/// `Arguments:`, `Options:` or `Global options:` indented by at most six
/// spaces (`  -h, --help`, `      --vni <VNI>`); its description follows on
/// the same line (two spaces on) or, in clap's next-line layout, on the
/// lines below, indented further.
fn undocumented(page: &str) -> (Vec<(String, String)>, Vec<String>) {
    let (mut section, mut entries, mut subcommands) = (String::new(), Vec::<(String, String, bool)>::new(), Vec::new());
    for line in page.lines() {
        if let Some(name) = line.strip_suffix(':').filter(|l| !l.starts_with(' ') && !l.contains("  ")) {
            section = name.to_owned();
            continue;
        }
        if !["Commands", "Arguments", "Options", "Global options"].contains(&section.as_str()) || line.is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent <= 6 {
            let mut parts = line.trim().splitn(2, "  ");
            let entry = parts.next().unwrap_or_default().to_owned();
            let described = parts.next().is_some_and(|d| !d.trim().is_empty());
            if section == "Commands" && entry != "help" {
                subcommands.push(entry.clone());
            }
            entries.push((section.clone(), entry, described));
        } else {
            if let Some(last) = entries.last_mut() {
                last.2 = true;
            }
        }
    }
    (entries.into_iter().filter(|e| !e.2).map(|(s, e, _)| (s, e)).collect(), subcommands)
}

#[test]
fn every_command_and_option_has_a_description() {
    // The checker finds what it is for: an option without a description,
    // in either layout.
    let bad = "Usage: x\n\nArguments:\n  <NAME>\n\nOptions:\n      --vni <VNI>\n      --mac <MAC>  The MAC\n  -h, --help\n          Print help\n";
    let expected = [("Arguments", "<NAME>"), ("Options", "--vni <VNI>")].map(|(s, e)| (s.to_owned(), e.to_owned()));
    assert_eq!(undocumented(bad).0, expected);
    assert_eq!(undocumented("Commands:\n  run   Run it\n  port\n  help  Print\n").1, ["run", "port"]);

    let mut todo = vec![Vec::<String>::new()];
    let (mut pages, mut missing) = (0, Vec::new());
    while let Some(path) = todo.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("-h");
        let out = xgw(&args);
        assert!(out.status.success(), "xgw {args:?}: {}", text(&out.stderr));
        let page = text(&out.stdout);
        let (bad, subs) = undocumented(&page);
        missing.extend(bad.into_iter().map(|(s, e)| format!("xgw {}: {s}: {e}", path.join(" "))));
        // The full page (`--help`) works too.
        args.pop();
        args.push("--help");
        assert!(xgw(&args).status.success(), "xgw {args:?}");
        todo.extend(subs.into_iter().map(|s| [path.clone(), vec![s]].concat()));
        pages += 1;
    }
    assert!(pages >= 40, "walked only {pages} help pages");
    assert!(missing.is_empty(), "without a description:\n{}", missing.join("\n"));
}

#[test]
fn clap_errors_are_whole_named_and_escaped_and_json_under_json() {
    // A missing argument: clap's message whole, naming it, with the usage.
    let out = xgw(&["port", "del"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.starts_with("error: the following required arguments were not provided:\n  <NAME>\n"), "{err}");
    assert!(err.contains("Usage: xgw port del <NAME>"), "{err}");
    assert!(out.stdout.is_empty());
    // Under --json the same error is a document on stdout too.
    let out = xgw(&["--json", "port", "del"]);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["error"], "the following required arguments were not provided: <NAME>", "{doc}");
    assert_eq!(out.status.code(), Some(2));

    // A VNI beyond u32 gets the VNI's range, not the integer type's.
    let out = xgw(&["tunnel", "add", "t", "--remote-ip", GW_IP[1], "--vni", "4294967296"]);
    let err = text(&out.stderr);
    assert!(err.contains("'--vni <VNI>': 4294967296 is out of range (0..=16777215)"), "{err}");
    // The same in the file's and the API's JSON, through the daemon's own type.
    let e = serde_json::from_str::<xgw::types::Vni>("4294967296").unwrap_err().to_string();
    assert!(e.contains("4294967296 is out of range (0..=16777215)"), "{e}");

    // A raw control character in a value never reaches the terminal.
    for raw in ["\u{7}", "a\u{1b}[2Jb", "x\u{9b}31m"] {
        let out = xgw(&["tunnel", "add", raw, "--remote-ip", GW_IP[1]]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(!err.chars().any(|c| c.is_control() && c != '\n'), "raw control character in {err:?}");
        assert!(err.contains("is not a name"), "{err}");
    }

    // Global options before or after the subcommand, and from the
    // environment; the socket named in the error is the one asked for.
    for args in [
        vec!["--socket", "/nonexistent/a.sock", "show"],
        vec!["show", "--socket", "/nonexistent/a.sock"],
        vec!["--timeout", "1", "bfd", "--socket", "/nonexistent/a.sock", "show"],
    ] {
        let out = xgw(&args);
        assert!(text(&out.stderr).contains("/nonexistent/a.sock"), "xgw {args:?}: {}", text(&out.stderr));
    }
    let out = Command::new(xgw_bin()).args(["show"]).env("XGW_SOCKET", "/nonexistent/b.sock").output().unwrap();
    assert!(text(&out.stderr).contains("/nonexistent/b.sock"), "{}", text(&out.stderr));
    let out = Command::new(xgw_bin()).args(["show"]).env("XGW_UPLINK", "eth9").output().unwrap();
    assert!(text(&out.stderr).contains("/run/xgw/eth9.sock"), "{}", text(&out.stderr));
    let out = xgw(&["--uplink", "eth9", "stats"]);
    assert!(text(&out.stderr).contains("/run/xgw/eth9.sock"), "{}", text(&out.stderr));
    // An error of the command itself: one line on stderr, one document on stdout.
    let out = xgw(&["--json", "--socket", "/nonexistent/a.sock", "port", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert!(doc["error"].as_str().unwrap().contains("cannot reach the xgw daemon at /nonexistent/a.sock"), "{doc}");
    assert_eq!(text(&out.stderr).lines().count(), 1, "{}", text(&out.stderr));
    // `run` needs its uplink, said as clap says it.
    let out = xgw(&["run", "--local-ip", GW_IP[0]]);
    let err = text(&out.stderr);
    assert!(out.status.code() == Some(2) && err.contains("--uplink <IF>") && err.contains("Usage: xgw run"), "{err}");
}

#[test]
fn completions_and_man_pages_come_from_the_clap_definitions() {
    for (shell, marks) in [
        ("bash", &["xgw__subcmd__tunnel__subcmd__set", "--may-exist", "--if-exists"][..]),
        ("zsh", &["#compdef xgw", "--may-exist", "--if-exists"]),
        ("fish", &["complete -c xgw", "may-exist", "if-exists"]),
    ] {
        let out = xgw(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        for mark in marks {
            assert!(script.contains(mark), "{shell} completions lack {mark:?}");
        }
    }
    let dir = TempDir::new("man");
    let out = xgw(&["man", dir.path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pages: BTreeSet<String> =
        std::fs::read_dir(&dir.path).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    for page in ["xgw.1", "xgw-run.1", "xgw-port-add.1", "xgw-tunnel-set.1", "xgw-bfd-peer-del.1", "xgw-completions.1"]
    {
        assert!(pages.contains(page), "{page} missing from {pages:?}");
    }
    let add = std::fs::read_to_string(dir.path.join("xgw-tunnel-add.1")).unwrap();
    assert!(add.starts_with(".ie") || add.contains(".TH xgw-tunnel-add"), "not a man page:\n{add}");
    assert!(add.contains("may\\-exist") && add.contains("remote\\-ip"), "{add}");
    // man(1) reads it, if it is installed.
    if let Ok(out) = Command::new("man").arg("-l").arg(dir.path.join("xgw-port-del.1")).env("MANPAGER", "cat").output()
    {
        if out.status.success() {
            assert!(text(&out.stdout).contains("if-exists"), "{}", text(&out.stdout));
        }
    }
}

/// A gateway namespace with an uplink toward a peer namespace and one veth
/// pair for a local port (`p1`), and a daemon for it (not started).
struct Gw {
    daemon: Daemon,
    ns: Netns,
    _peer: Netns,
}

fn gateway(tag: &str) -> Gw {
    let ns = Netns::new(tag);
    let peer = Netns::new("peer");
    Veth::new(&ns, "ul", &format!("{}/24", GW_IP[0]), &peer, "w", &format!("{}/24", GW_IP[1]));
    for p in ["p1", "p2"] {
        ns.ok(&["ip", "link", "add", p, "type", "veth", "peer", "name", &format!("{p}x")]);
        ns.ok(&["ip", "link", "set", p, "up"]);
        ns.ok(&["ip", "link", "set", &format!("{p}x"), "up"]);
    }
    let daemon = Daemon::new(&ns, "ul", &[GW_IP[0]]);
    Gw { daemon, ns, _peer: peer }
}

/// `xgw <args>` inside the mount and network namespaces of process `pid`.
fn xgw_in(pid: u32, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "-n"])
        .arg(xgw_bin())
        .args(args)
        .env_remove("XGW_SOCKET")
        .env_remove("XGW_UPLINK")
        .envs(env.iter().copied())
        .output()
        .expect("nsenter xgw")
}

/// The daemon's socket where the systemd unit puts it, `/run/xgw/<uplink>.sock`,
/// and the CLI finding it: by `--uplink` or `XGW_UPLINK`, by `--socket` or
/// `XGW_SOCKET`, or as the only one there; several and none named is an
/// error listing them. The daemon runs in a mount namespace of its own
/// with a private `/run`, so the host's `/run/xgw` is never touched.
#[test]
fn the_daemon_socket_is_where_the_unit_puts_it_and_the_cli_finds_it() {
    require_root!();
    let gw = gateway("csock");
    let d = &gw.daemon;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &gw.ns.name, "unshare", "-m", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs xgw-test /run && exec \"$0\" \"$@\"")
        .arg(xgw_bin())
        .args(["run", "--local-ip", GW_IP[0], "--state-dir"])
        .arg(d.state_dir())
        .arg("--bpffs")
        .arg(d.bpffs_dir())
        .env("XGW_UPLINK", "ul")
        .env_remove("XGW_SOCKET")
        .env("XGW_LOG", "info");
    let mut daemon = Process::spawn(cmd, "xgw run (private /run)");
    let pid = daemon.pid();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !xgw_in(pid, &[], &["--uplink", "ul", "show"]).status.success() {
        assert!(!daemon.has_exited(), "xgw run exited:\n{}", daemon.stderr_so_far());
        assert!(Instant::now() < deadline, "xgw run did not serve /run/xgw/ul.sock:\n{}", daemon.stderr_so_far());
        std::thread::sleep(Duration::from_millis(50));
    }
    let show = |env: &[(&str, &str)], args: &[&str]| {
        let out = xgw_in(pid, env, args);
        assert!(out.status.success(), "xgw {args:?} {env:?}: {}", text(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
        assert_eq!(v["uplink"]["ifname"], "ul", "{v}");
    };
    show(&[], &["show", "--json"]); // the only socket in /run/xgw
    show(&[], &["--uplink", "ul", "show", "--json"]);
    show(&[], &["show", "--json", "--uplink", "ul"]);
    show(&[("XGW_UPLINK", "ul")], &["show", "--json"]);
    show(&[], &["--socket", "/run/xgw/ul.sock", "--json", "show"]);
    show(&[("XGW_SOCKET", "/run/xgw/ul.sock")], &["show", "--json"]);

    // A second daemon's socket (a listener in the same /run): naming one is
    // required, and the error lists both.
    let listener = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "python3", "-c"])
        .arg("import socket; socket.socket(socket.AF_UNIX).bind('/run/xgw/eth9.sock')")
        .status()
        .expect("python3");
    assert!(listener.success());
    let out = xgw_in(pid, &[], &["show"]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "show picked a daemon among two");
    assert!(
        err.contains("2 daemons have sockets in /run/xgw (/run/xgw/eth9.sock, /run/xgw/ul.sock)")
            && err.contains("--uplink IF or --socket PATH"),
        "{err}"
    );
    show(&[], &["--uplink", "ul", "show", "--json"]);
    // The host's /run/xgw never saw any of it.
    assert!(!std::path::Path::new("/run/xgw/eth9.sock").exists());
    daemon.stop(Duration::from_secs(10));
}

/// ovs-vsctl's `--may-exist` and `--if-exists`, for every kind of object,
/// and a repeated `tunnel add --bfd` that would have reset the tunnel's
/// own timers is refused (its timers stay); `tunnel set` changes only what
/// it is given.
#[test]
fn may_exist_and_if_exists_mean_what_they_mean_in_ovs_vsctl() {
    require_root!();
    let mut gw = gateway("cexist");
    gw.daemon.start();
    let d = &gw.daemon;
    let port =
        ["port", "add", "vm1", "--ifname", "p1", "--vni", "5001", "--port-key", "17", "--mac", "02:00:5e:20:00:01"];
    let tunnel = ["tunnel", "add", "hv2", "--remote-ip", GW_IP[1], "--ovn-metadata", "--bfd", "--bfd-min-tx-ms", "300"];
    let binding =
        ["binding", "add", "--vni", "5001", "--mac", "02:00:5e:20:00:02", "--tunnel", "hv2", "--port-key", "34"];
    let group = ["group", "add", "--vni", "5001", "--key", "32768", "--port", "vm1"];
    let peer = ["bfd", "peer", "add", "tor", "--peer-ip", "198.51.100.254"];
    let adds: [(&[&str], &str, &[&str]); 5] = [
        (&port, "port \"vm1\" already exists (ofport 2)", &["--ip", "203.0.113.1"]),
        (&tunnel, "tunnel \"hv2\" already exists (ofport 1)", &["--bfd-detect-mult", "5"]),
        (&binding, "binding vni 5001 mac 02:00:5e:20:00:02 already exists", &["--ip", "203.0.113.2"]),
        (&group, "group vni 5001 key 32768 already exists", &["--rate-pps", "10"]),
        (&peer, "bfd peer \"tor\" already exists", &["--echo"]),
    ];
    // The tunnel first: the binding rides it.
    let order = [1, 0, 2, 3, 4];
    let mut first = Vec::new();
    for i in order {
        let (add, _, _) = adds[i];
        first.push(d.json(add));
    }
    let show = d.json(&["show"]);
    // An object less what lives on its own: a session's state, a next hop,
    // what the add did.
    let stable = |v: &Value| {
        let mut v = v.clone();
        for k in ["change", "state", "flap_count", "error", "nexthop", "bfd"] {
            v.as_object_mut().unwrap().remove(k);
        }
        v
    };
    for (n, i) in order.into_iter().enumerate() {
        let (add, exists, other) = adds[i];
        // Again: refused, nothing changed.
        let err = d.refused(add);
        assert!(err.contains(exists) && err.contains("--may-exist accepts an identical one"), "{add:?}: {err}");
        // --may-exist, identical: accepted, the same object back (but for
        // what lives: a session's state, what the add did).
        let again = d.json(&[add, &["--may-exist"]].concat());
        assert_eq!(stable(&again), stable(&first[n]), "{add:?} --may-exist");
        // --may-exist, different: still refused, naming what differs.
        let err = d.refused(&[add, other, &["--may-exist"]].concat());
        let field = other[0].trim_start_matches("--").replace('-', "_");
        assert!(err.contains("with other settings") && err.contains(&field), "{add:?} {other:?}: {err}");
    }
    let ports = |show: &Value| -> Vec<Value> { show["ports"].as_array().unwrap().iter().map(stable).collect() };
    assert_eq!(ports(&d.json(&["show"])), ports(&show), "refused adds changed the ports");

    // The tunnel's own timers survive a repeated `--bfd` without them: the
    // add is refused (ovs-vsctl's add-port would be), naming the timer.
    let err = d.refused(&["tunnel", "add", "hv2", "--remote-ip", GW_IP[1], "--ovn-metadata", "--bfd", "--may-exist"]);
    assert!(err.contains("bfd_min_tx_ms: 300 -> none"), "{err}");
    let timers = |d: &Daemon| {
        let show = d.json(&["show"]);
        let t = show["ports"].as_array().unwrap().iter().find(|p| p["name"] == "hv2").unwrap().clone();
        (t["bfd"]["min_tx_ms"].as_u64(), t["bfd"]["detect_mult"].as_u64())
    };
    assert_eq!(timers(d), (Some(300), Some(3)));
    // `tunnel set` changes what it is given and keeps the rest.
    let set = d.json(&["tunnel", "set", "hv2", "--bfd-detect-mult", "5"]);
    assert_eq!(set["ofport"], 1, "{set}");
    assert_eq!(timers(d), (Some(300), Some(5)));
    d.json(&["tunnel", "set", "hv2", "--bfd-default-timers"]);
    assert_eq!(timers(d), (Some(100), Some(3)), "[bfd]'s defaults");
    let err = d.refused(&["tunnel", "set", "nope", "--bfd", "false"]);
    assert!(err.contains("no tunnel named \"nope\""), "{err}");
    let err = d.refused(&["tunnel", "set", "vm1", "--bfd", "false"]);
    assert!(err.contains("\"vm1\" is a local port"), "{err}");
    // `group set` changes an existing group's members; one that is not
    // there is refused.
    let g = d.json(&["group", "set", "--vni", "5001", "--key", "32768", "--port", "vm1", "--tunnel", "hv2"]);
    assert_eq!((g["change"].as_str(), g["tunnels"][0].as_str()), (Some("updated"), Some("hv2")), "{g}");
    let err = d.refused(&["group", "set", "--vni", "5001", "--key", "32769", "--port", "vm1"]);
    assert!(err.contains("no group vni 5001 key 32769"), "{err}");

    // Deletes: a missing object is an error, unless --if-exists.
    let dels: [&[&str]; 5] = [
        &["group", "del", "--vni", "5001", "--key", "32768"],
        &["binding", "del", "--vni", "5001", "--mac", "02:00:5e:20:00:02"],
        &["port", "del", "vm1"],
        &["tunnel", "del", "hv2"],
        &["bfd", "peer", "del", "tor"],
    ];
    for del in dels {
        d.json(del);
        let err = d.refused(del);
        assert!(err.starts_with("xgw: no "), "{del:?}: {err}");
        let gone = d.json(&[del, &["--if-exists"]].concat());
        assert!(gone["absent"].as_str().is_some(), "{del:?} --if-exists: {gone}");
        let human = d.cli(&[del, &["--if-exists"]].concat());
        assert!(human.ends_with("does not exist: nothing deleted\n"), "{human}");
    }
    // --if-exists does not make a wrong kind right.
    d.json(&tunnel);
    let err = d.refused(&["port", "del", "hv2", "--if-exists"]);
    assert!(err.contains("is a tunnel"), "{err}");

    // Requests carry no unknown field, whatever the op.
    for line in [r#"{"op":"show","x":1}"#, r#"{"op":"port_list","x":1}"#, r#"{"op":"port_del","name":"a","x":1}"#] {
        let out = raw(d, line);
        assert!(out.contains("bad request") && out.contains("unknown field `x`"), "{line}: {out}");
    }
    // An error under --json: one document on stdout, one line on stderr.
    let out = d.try_cli(&["tunnel", "del", "nope", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["error"], "no tunnel named \"nope\"", "{doc}");
    assert_eq!(text(&out.stderr).trim_end(), "xgw: no tunnel named \"nope\"");
    gw.daemon.stop();
}

/// One request line on the daemon's socket; its answer.
fn raw(d: &Daemon, line: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Every string under an `error` or `mtu_warning` key, anywhere in `v`.
fn errors(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("error" | "mtu_warning", Value::String(s)) => out.push(s.clone()),
                    _ => errors(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| errors(v, out)),
        _ => {}
    }
}

/// Every number in `v` is an integer.
fn floats(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Number(n) if n.is_f64() => out.push(format!("{path} = {n}")),
        Value::Object(m) => m.iter().for_each(|(k, v)| floats(v, &format!("{path}.{k}"), out)),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| floats(v, &format!("{path}[{i}]"), out)),
        _ => {}
    }
}

/// `show` carries the version, the uptime, every object (single-hop BFD
/// peers and groups included) and, in its human form, every error and
/// warning its JSON carries: a port whose interface went, and a BFD peer
/// whose session cannot start after a restart (its interface went while
/// the daemon was down). `bfd show` has every field `ovs-appctl bfd/show`
/// prints, named alike in the JSON, `bfd show NAME --json` is one object,
/// and every number is an integer.
#[test]
fn show_says_every_error_its_json_carries_and_bfd_show_every_ovs_field() {
    require_root!();
    let mut gw = gateway("cshow");
    gw.daemon.start();
    let d = &gw.daemon;
    d.json(&[
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
        "02:00:5e:20:00:01",
    ]);
    d.json(&[
        "port",
        "add",
        "vm2",
        "--ifname",
        "p2",
        "--vni",
        "5001",
        "--port-key",
        "18",
        "--mac",
        "02:00:5e:20:00:02",
    ]);
    d.json(&["tunnel", "add", "hv2", "--remote-ip", GW_IP[1], "--ovn-metadata", "--bfd"]);
    d.json(&["group", "add", "--vni", "5001", "--key", "32768", "--port", "vm1", "--tunnel", "hv2"]);
    d.json(&["bfd", "peer", "add", "tor", "--peer-ip", GW_IP[1], "--echo"]);
    d.json(&["bfd", "peer", "add", "tor2", "--peer-ip", "198.51.100.253", "--ifname", "p2x"]);

    let show = d.json(&["show"]);
    let version = text(&xgw(&["--version"]).stdout);
    assert_eq!(version.trim(), format!("xgw {}", show["version"].as_str().unwrap()));
    assert!(show["uptime_s"].as_u64().is_some(), "{show}");
    assert_eq!(show["groups"][0]["key"], 32768, "{show}");
    let peers: Vec<&str> = show["bfd_peers"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(peers, ["tor", "tor2"], "{show}");
    let human = d.cli(&["show"]);
    for line in [
        &format!("xgw_version: \"{}\", uptime ", show["version"].as_str().unwrap()),
        "    Group vni 5001 key 32768 rate_pps 1000: vm1 hv2\n",
        "    BFD peer tor 198.51.100.2 via ul from 198.51.100.1, echo: ",
        "    BFD peer tor2 198.51.100.253 via p2x from 198.51.100.1: ",
    ] {
        assert!(human.contains(line), "{line:?} missing from:\n{human}");
    }

    // Errors: vm1's interface goes under the daemon; tor2's goes while the
    // daemon is down, so its session cannot start again.
    gw.daemon.kill9();
    gw.ns.ok(&["ip", "link", "del", "p2"]);
    gw.daemon.start();
    let d = &gw.daemon;
    gw.ns.ok(&["ip", "link", "del", "p1"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (show, human) = loop {
        let show = d.json(&["show"]);
        let mut found = Vec::new();
        errors(&show, &mut found);
        if found.len() >= 3 {
            break (show, d.cli(&["show"]));
        }
        assert!(Instant::now() < deadline, "not every error shows: {found:?}\n{show}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut found = Vec::new();
    errors(&show, &mut found);
    let vm1 = show["ports"].as_array().unwrap().iter().find(|p| p["name"] == "vm1").unwrap();
    assert!(vm1["error"].as_str().unwrap().contains("interface p1 does not exist"), "{vm1}");
    let tor2 = show["bfd_peers"].as_array().unwrap().iter().find(|p| p["name"] == "tor2").unwrap();
    assert!(tor2["error"].as_str().unwrap().contains("p2x"), "{tor2}");
    for e in &found {
        assert!(human.contains(e.as_str()), "the human show lacks {e:?}:\n{human}");
    }

    // bfd show: OVS's fields, in OVS's words, in the human form; the same
    // fields in the JSON; one object for one session; integers only.
    let one = d.json(&["bfd", "show", "tor"]);
    assert!(one.is_object() && one["name"] == "tor", "{one}");
    let all = d.json(&["bfd", "show"]);
    assert!(all.as_array().is_some_and(|a| a.contains(&one) || a.iter().any(|s| s["name"] == "tor")), "{all}");
    let human = d.cli(&["bfd", "show", "tor"]);
    let ovs_fields = [
        ("Forwarding", "forwarding"),
        ("Detect Multiplier", "detect_mult"),
        ("Concatenated Path Down", "concatenated_path_down"),
        ("TX Interval", "tx_interval_ms"),
        ("RX Interval", "rx_interval_ms"),
        ("Detect Time", "detect_time_ms"),
        ("Next TX Time", "next_tx_time_ms"),
        ("Last TX Time", "last_tx_time_ms"),
        ("Local Flags", "local_flags"),
        ("Local Session State", "local_state"),
        ("Local Diagnostic", "local_diagnostic"),
        ("Local Discriminator", "local_discriminator"),
        ("Local Minimum TX Interval", "local_min_tx_ms"),
        ("Local Minimum RX Interval", "local_min_rx_ms"),
        ("Remote Flags", "remote_flags"),
        ("Remote Session State", "remote_state"),
        ("Remote Diagnostic", "remote_diagnostic"),
        ("Remote Discriminator", "remote_discriminator"),
        ("Remote Minimum TX Interval", "remote_min_tx_ms"),
        ("Remote Minimum RX Interval", "remote_min_rx_ms"),
        ("Remote Detect Multiplier", "remote_detect_mult"),
    ];
    let labels: Vec<&str> = human.lines().filter_map(|l| l.strip_prefix("  ")?.split(':').next()).collect();
    let mut at = 0;
    for (label, key) in ovs_fields {
        let i = labels[at..]
            .iter()
            .position(|l| *l == label)
            .unwrap_or_else(|| panic!("{label} missing or out of OVS's order:\n{human}"));
        at += i + 1;
        assert!(one.get(key).is_some(), "bfd show --json lacks {key}: {one}");
    }
    assert!(human.contains("  Next TX Time: now +") || human.contains("  Next TX Time: now -"), "{human}");
    assert!(human.contains("  Flap Count: 0\n") && one["flap_count"] == 0, "OVS's flap_count: {human}\n{one}");
    assert!(one.get("flaps").is_none() && show["ports"][2]["bfd"].get("flaps").is_none(), "one spelling: flap_count");
    let mut f = Vec::new();
    floats(&all, "bfd", &mut f);
    floats(&show, "show", &mut f);
    assert!(f.is_empty(), "floats: {f:?}");
    gw.daemon.stop();
}
