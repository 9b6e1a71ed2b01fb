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

use crate::{netns::Netns, ports::TempDir, process::Process, xgw_bin, BpfFs};

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
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns]).arg(xgw_bin()).args(["run", "--uplink", &self.uplink]);
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
        assert!(self.process.is_none(), "daemon already running");
        let p = Process::spawn(self.run_command(&[]), "xgw run");
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
                let (out, err) = self.process.take().unwrap().stop(Duration::from_secs(1));
                panic!("xgw run exited:\n{out}{err}");
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
/// address); returns `name{labels}` -> value, checking that the answer is
/// OpenMetrics (ends with `# EOF`) and names no series twice.
pub fn scrape(netns: &str, addr: &str) -> BTreeMap<String, f64> {
    let text = crate::netns::enter(netns, || {
        let mut s = TcpStream::connect(addr).expect("connect to metrics");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.trim_end().ends_with("# EOF"), "OpenMetrics ends with # EOF");
    let mut samples = BTreeMap::new();
    for line in body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("metric line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line:?}"));
        assert!(samples.insert(series.to_owned(), value).is_none(), "series twice: {series}");
    }
    samples
}
