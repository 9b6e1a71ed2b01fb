//! The `xgw run` daemon started by a test inside a gateway namespace, with
//! its own state directory, bpffs and socket, and the `xgw` CLI pointed at
//! it. The daemon is a `Process` (killed by PID on drop); the bpffs and the
//! state directory are guards too, so nothing outlives the test.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Command, Output},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::{netns::Netns, ports::TempDir, process::Process, sandbox::Sandbox, xgw_bin, BpfFs};

pub struct Daemon {
    pub netns: String,
    pub uplink: String,
    pub local_ips: Vec<String>,
    pub extra: Vec<String>,
    /// Environment for `xgw run` (NOTIFY_SOCKET, WATCHDOG_USEC, ...).
    pub env: Vec<(String, String)>,
    pub state: TempDir,
    pub bpffs: BpfFs,
    pub socket: PathBuf,
    pub process: Option<Process>,
    /// Run under the systemd unit's restrictions (`sandbox.rs`) instead of
    /// plainly in the namespace. `XGW_TEST_SANDBOX=1` sets it for every
    /// daemon, so that any daemon test can be run as the unit runs it.
    pub sandbox: Option<Sandbox>,
}

impl Daemon {
    /// A daemon for `uplink` in `ns`, not started yet.
    pub fn new(ns: &Netns, uplink: &str, local_ips: &[&str]) -> Daemon {
        let state = TempDir::new("state");
        let socket = state.path.join("xgw.sock");
        Daemon {
            netns: ns.name.clone(),
            uplink: uplink.into(),
            local_ips: local_ips.iter().map(|s| s.to_string()).collect(),
            extra: Vec::new(),
            env: Vec::new(),
            state,
            bpffs: BpfFs::new("dbpf"),
            socket,
            process: None,
            sandbox: std::env::var_os("XGW_TEST_SANDBOX")
                .is_some_and(|v| v == "1")
                .then(|| Sandbox::from_unit(&crate::sandbox::Unit::load())),
        }
    }

    pub fn bpffs_dir(&self) -> PathBuf {
        self.bpffs.dir.join("gw")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.state.path.join("state")
    }

    /// The `xgw run` command line, with `extra` arguments.
    pub fn run_command(&self, extra: &[&str]) -> Command {
        let mut cmd = match &self.sandbox {
            // Writable: the state directory (socket included) and the pins.
            Some(s) => s.command(&self.netns, &[&self.state.path, &self.bpffs.dir], &xgw_bin()),
            None => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &self.netns]).arg(xgw_bin());
                c
            }
        };
        cmd.args(["run", "--uplink", &self.uplink]);
        for ip in &self.local_ips {
            cmd.args(["--local-ip", ip]);
        }
        cmd.arg("--state-dir").arg(self.state_dir());
        cmd.arg("--bpffs").arg(self.bpffs_dir());
        cmd.arg("--socket").arg(&self.socket);
        cmd.args(&self.extra).args(extra);
        cmd.env("XGW_LOG", "info");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Starts the daemon and waits until it answers `show`.
    pub fn start(&mut self) {
        self.start_command(self.run_command(&[]));
    }

    /// Starts `cmd` (`run_command`'s, maybe wrapped) as the daemon and
    /// waits until it answers `show`.
    pub fn start_command(&mut self, cmd: Command) {
        assert!(self.process.is_none(), "daemon already running");
        let p = Process::spawn(cmd, "xgw run");
        self.process = Some(p);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.try_cli(&["show", "--json"]).status.success() {
                return;
            }
            if Instant::now() > deadline {
                let (out, err) = self.process.take().unwrap().stop(Duration::from_secs(1));
                panic!("xgw run did not become ready:\n{out}{err}");
            }
            if self.process.as_mut().unwrap().has_exited() {
                let (status, out, err) = self.process.take().unwrap().wait(Duration::from_secs(1)).expect("exited");
                panic!("xgw run exited ({status}):\n{out}{err}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the daemon gets no chance to clean up.
    pub fn kill9(&mut self) {
        let p = self.process.take().expect("running");
        p.signal(Signal::SIGKILL);
        let _ = p.wait(Duration::from_secs(5));
    }

    /// SIGTERM and wait: a clean shutdown. Returns the daemon's stderr.
    pub fn stop(&mut self) -> String {
        let p = self.process.take().expect("running");
        p.signal(Signal::SIGTERM);
        let (status, _, err) = p.wait(Duration::from_secs(10)).expect("daemon stops on SIGTERM");
        assert!(status.success(), "daemon exit {status}:\n{err}");
        err
    }

    /// Runs `xgw <args> --socket S` in the namespace.
    pub fn try_cli(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(xgw_bin())
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .expect("run xgw")
    }

    /// `xgw <args>`, which must succeed; returns stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.try_cli(args);
        assert!(
            out.status.success(),
            "xgw {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `xgw <args> --json`: exactly one JSON document.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let text = self.cli(&a);
        let mut docs = serde_json::Deserializer::from_str(&text).into_iter::<Value>();
        let v = docs.next().expect("one JSON document").unwrap_or_else(|e| panic!("xgw {args:?} --json: {e}\n{text}"));
        assert!(docs.next().is_none(), "xgw {args:?} --json printed more than one document:\n{text}");
        v
    }

    /// `xgw <args>`, which must fail: returns its stderr, which must be one
    /// line (`xgw: ...`), or clap's own usage error whole (exit 2: `error:
    /// ...`, the usage if it has one, the hint), whose first paragraph is
    /// returned.
    pub fn refused(&self, args: &[&str]) -> String {
        let out = self.try_cli(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "xgw {args:?} succeeded but must not:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        if out.status.code() == Some(2) {
            assert!(
                err.starts_with("error: ") && err.trim_end().ends_with("For more information, try '--help'."),
                "xgw {args:?}: not clap's error:\n{err}"
            );
            let what: Vec<&str> = err.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
            return what.join(" ");
        }
        assert!(err.starts_with("xgw: "), "xgw {args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "xgw {args:?}: error is not one line:\n{err}");
        err.trim_end().to_owned()
    }

    pub fn pins(&self) -> PathBuf {
        self.bpffs_dir()
    }

    /// A map the running daemon holds open, by name: for maps it does not
    /// pin (the BFD session array). Found through its file descriptors
    /// (`/proc/<pid>/fdinfo` gives each map's id), opened by id.
    pub fn held_map(&self, name: &str) -> aya::maps::MapData {
        let pid = self.process.as_ref().expect("daemon running").pid();
        let fds = std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("the daemon's fdinfo");
        for fd in fds.flatten() {
            let Ok(info) = std::fs::read_to_string(fd.path()) else { continue };
            let Some(id) =
                info.lines().find_map(|l| l.strip_prefix("map_id:")).and_then(|v| v.trim().parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(map) = aya::maps::MapData::from_id(id) else { continue };
            if map.info().ok().and_then(|i| i.name_as_str().map(|n| n == name)) == Some(true) {
                return map;
            }
        }
        panic!("the daemon (pid {pid}) holds no map named {name}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // The process guard kills the daemon; the bpffs guard then unmounts,
        // which releases the pinned links and maps.
        self.process.take();
    }
}

/// GET /metrics from inside namespace `netns` (a daemon's `--metrics`
/// address) with an optional `Accept` header: the Content-Type and the body
/// of a 200 answer.
pub fn get_metrics(netns: &str, addr: &str, accept: Option<&str>) -> (String, String) {
    let text = crate::netns::enter(netns, || {
        let mut s = TcpStream::connect(addr).expect("connect to metrics");
        let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
        s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{accept}\r\n").as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.trim()))
        .expect("a Content-Type")
        .to_owned();
    (content_type, body.to_owned())
}

/// Samples by series, `name{labels}`, whatever order the labels are
/// written in (the 0.0.4 encoder sorts them, OpenMetrics keeps the
/// daemon's): a key is looked up with its labels sorted by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples(pub BTreeMap<String, f64>);

impl Samples {
    pub fn get(&self, series: &str) -> Option<f64> {
        self.0.get(&canonical(series)).copied()
    }

    pub fn contains_key(&self, series: &str) -> bool {
        self.get(series).is_some()
    }
}

impl std::ops::Index<&str> for Samples {
    type Output = f64;
    fn index(&self, series: &str) -> &f64 {
        self.0.get(&canonical(series)).unwrap_or_else(|| panic!("no series {series} in {:?}", self.0.keys()))
    }
}

impl std::ops::Index<&String> for Samples {
    type Output = f64;
    fn index(&self, series: &String) -> &f64 {
        &self[series.as_str()]
    }
}

/// A sample line's series and value: `name{a="x",b="y\"z"} 1`, label
/// values with the format's escapes (`\\`, `\"`, `\n`) kept as written.
fn split_sample(line: &str) -> (String, Vec<(String, String)>, &str) {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => panic!("metric line {line:?}"),
    };
    let mut labels = Vec::new();
    let mut rest = rest;
    if let Some(mut r) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = r.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = r.split_once("=\"").unwrap_or_else(|| panic!("label in {line:?}"));
            let mut end = None;
            let mut escaped = false;
            for (i, c) in after.char_indices() {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.unwrap_or_else(|| panic!("unterminated label value in {line:?}"));
            labels.push((key.trim_start_matches(',').to_owned(), after[..end].to_owned()));
            r = after[end + 1..].trim_start_matches(',');
        }
    }
    (name.to_owned(), labels, rest.trim())
}

fn series(name: &str, mut labels: Vec<(String, String)>) -> String {
    if labels.is_empty() {
        return name.to_owned();
    }
    labels.sort();
    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", l.join(","))
}

fn canonical(s: &str) -> String {
    let (name, labels, _) = split_sample(&format!("{s} 0"));
    series(&name, labels)
}

/// Every sample of an exposition (either format), checking that no series
/// appears twice.
pub fn parse_samples(body: &str) -> Samples {
    let mut samples = BTreeMap::new();
    for line in body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (name, labels, value) = split_sample(line);
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line:?}"));
        let key = series(&name, labels);
        assert!(samples.insert(key.clone(), value).is_none(), "series twice: {key}");
    }
    Samples(samples)
}

/// GET /metrics as a scraper that names no format gets it (the text format
/// 0.0.4), parsed by `parse_samples`.
pub fn scrape(netns: &str, addr: &str) -> Samples {
    let (content_type, body) = get_metrics(netns, addr, None);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(!body.contains("# EOF"), "the 0.0.4 text has no # EOF:\n{body}");
    parse_samples(&body)
}

/// `promtool check metrics` (Debian's `prometheus` package) on an
/// exposition: its exit status and what it printed (lint problems go to
/// stderr, with exit 3).
pub fn promtool_check(body: &str) -> (std::process::ExitStatus, String) {
    use std::process::Stdio;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; cargo xtask setup installs it)");
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status, format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// An exposition read by the Prometheus Python client's parser (Debian's
/// `python3-prometheus-client`): the 0.0.4 text parser, or the OpenMetrics
/// one. Every family as `{name, type, help, samples: [[name, {labels}, value]]}`;
/// a parse error panics with the parser's message.
pub fn python_parse(body: &str, openmetrics: bool) -> Vec<Value> {
    use std::process::Stdio;
    let module = if openmetrics { "prometheus_client.openmetrics.parser" } else { "prometheus_client.parser" };
    let script = format!(
        "import json, sys\n\
         from {module} import text_string_to_metric_families\n\
         print(json.dumps([{{'name': f.name, 'type': f.type, 'help': f.documentation,\n\
             'samples': [[s.name, s.labels, s.value] for s in f.samples]}}\n\
             for f in text_string_to_metric_families(sys.stdin.read())]))\n"
    );
    // Debian's interpreter, which the Debian package is installed for (a
    // python3 earlier in PATH, pyenv's say, would not have it).
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 (Debian package python3-prometheus-client; cargo xtask setup installs it)");
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{module} refused the exposition (python3-prometheus-client; cargo xtask setup installs it):\n{}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script's JSON")
}

/// A gateway namespace with an uplink `ul` (198.51.100.1/24) toward a peer
/// namespace (`w`, 198.51.100.2/24, which holds the next hop) and two veth
/// pairs for local ports (`p1`/`p1x`, `p2`/`p2x`), with a daemon for it,
/// not started. Field order is drop order: the daemon stops first.
pub struct Gateway {
    pub daemon: Daemon,
    pub ns: Netns,
    pub peer: Netns,
}

pub const GATEWAY_IPS: [&str; 2] = ["198.51.100.1", "198.51.100.2"];

pub fn gateway(tag: &str) -> Gateway {
    let ns = Netns::new(tag);
    let peer = Netns::new("peer");
    crate::Veth::new(&ns, "ul", &format!("{}/24", GATEWAY_IPS[0]), &peer, "w", &format!("{}/24", GATEWAY_IPS[1]));
    for p in ["p1", "p2"] {
        ns.ok(&["ip", "link", "add", p, "type", "veth", "peer", "name", &format!("{p}x")]);
        ns.ok(&["ip", "link", "set", p, "up"]);
        ns.ok(&["ip", "link", "set", &format!("{p}x"), "up"]);
    }
    let daemon = Daemon::new(&ns, "ul", &[GATEWAY_IPS[0]]);
    Gateway { daemon, ns, peer }
}
