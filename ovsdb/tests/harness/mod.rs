//! Real ovsdb-servers for the tests: standalone, or the members of a raft
//! cluster, each in a private temporary directory with unix sockets there
//! and TCP only on 127.0.0.1. Every process is the test's own child,
//! stopped by its PID when its guard drops; directories are removed on
//! drop, on failure too.
#![allow(dead_code)]

use std::{
    fs,
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use serde_json::{json, Value};

pub const SB_SCHEMA: &str = "/usr/share/ovn/ovn-sb.ovsschema";
pub const SB: &str = "OVN_Southbound";

fn find(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

pub fn bin(name: &str) -> PathBuf {
    find(name).unwrap_or_else(|| panic!("{name} not found"))
}

/// What is missing for the tests against a real server, if anything.
pub fn missing() -> Option<String> {
    for b in ["ovsdb-server", "ovsdb-tool", "ovsdb-client"] {
        if find(b).is_none() {
            return Some(format!("{b} not installed (Debian: openvswitch-switch)"));
        }
    }
    if !Path::new(SB_SCHEMA).is_file() {
        return Some(format!("{SB_SCHEMA} not installed (Debian: ovn-common)"));
    }
    None
}

/// Returns from the calling test with a visible SKIP line when ovsdb-server
/// and OVN's schema are not installed, and fails instead in CI, where the
/// tests must run (as `xgw_tests::require_root!` does for root).
#[macro_export]
macro_rules! require_ovsdb {
    () => {
        if let Some(what) = $crate::harness::missing() {
            if std::env::var_os("CI").is_some() {
                panic!("this test needs a real ovsdb-server and CI must run it: {what}");
            }
            // Straight to fd 2: libtest captures eprintln! of passing tests,
            // and a skip must be visible (cargo xtask test counts these lines).
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "SKIP {} ({}:{}): {what}", module_path!(), file!(), line!());
            return;
        }
    };
}

/// A directory removed with everything in it on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // Short: unix socket paths are limited to 107 bytes.
        let p = std::env::temp_dir().join(format!(
            "xo{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `n` TCP ports on 127.0.0.1 that were free a moment ago (all held at once
/// while picking, so they differ).
pub fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    ls.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One ovsdb-server process.
pub struct Server {
    pub name: String,
    pub sock: PathBuf,
    pub tcp: Option<u16>,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Server {
    /// Starts `ovsdb-server` on `db_files` in `dir`, listening on
    /// `<name>.sock` (and on 127.0.0.1:`tcp` if given), plus `extra` args.
    pub fn start(dir: &TempDir, name: &str, db_files: &[PathBuf], tcp: Option<u16>, extra: &[String]) -> Server {
        let sock = dir.path(&format!("{name}.sock"));
        let log = dir.path(&format!("{name}.log"));
        let mut args: Vec<String> = db_files.iter().map(|p| p.display().to_string()).collect();
        args.push(format!("--remote=punix:{}", sock.display()));
        if let Some(p) = tcp {
            args.push(format!("--remote=ptcp:{p}:127.0.0.1"));
        }
        args.extend([
            format!("--unixctl={}", dir.path(&format!("{name}.ctl")).display()),
            format!("--log-file={}", log.display()),
            "--no-chdir".to_owned(),
            "-vconsole:off".to_owned(),
            "-vfile:info".to_owned(),
        ]);
        args.extend_from_slice(extra);
        let mut s = Server { name: name.to_owned(), sock, tcp, args, log, child: None };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(bin("ovsdb-server"));
        cmd.args(&self.args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        // If the test process is killed (a timeout) no guard runs: the
        // kernel then stops the server.
        // SAFETY: prctl is async-signal-safe and touches no parent state.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("ovsdb-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&self.sock).is_err() {
            assert!(Instant::now() < deadline, "{} did not start: {}", self.name, self.log_text());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn unix_remote(&self) -> String {
        format!("unix:{}", self.sock.display())
    }

    pub fn tcp_remote(&self) -> String {
        format!("tcp:127.0.0.1:{}", self.tcp.expect("a tcp remote"))
    }

    /// SIGKILL, by PID, and reaped.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_file(&self.sock);
    }

    /// Starts it again with the same files and addresses.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        self.spawn();
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `ovsdb-client` against `remote`.
pub fn ovsdb_client(args: &[&str]) -> String {
    run(Command::new(bin("ovsdb-client")).arg("--timeout=10").args(args))
}

/// Every row of `table` as ovsdb-client reads it (the independent truth
/// the replica is compared with).
pub fn query_rows(remote: &str, db: &str, table: &str) -> Vec<Value> {
    let q = json!([db, {"op": "select", "table": table, "where": []}]).to_string();
    let out = ovsdb_client(&["query", remote, &q]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("ovsdb-client query output {out:?}: {e}"));
    v[0]["rows"].as_array().cloned().unwrap_or_else(|| panic!("query result {v}"))
}

/// A standalone server with one database made from `schema`.
pub struct Standalone {
    pub server: Server,
    pub dir: TempDir,
}

impl Standalone {
    pub fn start(tag: &str, schema: &Path, extra: &[String]) -> Standalone {
        let dir = TempDir::new(tag);
        let db = dir.path("db");
        run(Command::new(bin("ovsdb-tool")).arg("create").arg(&db).arg(schema));
        let server = Server::start(&dir, tag, &[db], None, extra);
        Standalone { server, dir }
    }
}

/// A raft cluster of `members` ovsdb-servers of the Southbound schema,
/// raft and clients on 127.0.0.1 TCP ports, clients also on unix sockets.
pub struct Cluster {
    pub members: Vec<Server>,
    pub dir: TempDir,
}

impl Cluster {
    pub fn start(tag: &str, n: usize) -> Cluster {
        let dir = TempDir::new(tag);
        let ports = free_ports(2 * n);
        let raft = |i: usize| format!("tcp:127.0.0.1:{}", ports[i]);
        let mut members = Vec::new();
        for i in 0..n {
            let db = dir.path(&format!("m{i}.db"));
            let mut tool = Command::new(bin("ovsdb-tool"));
            if i == 0 {
                tool.arg("create-cluster").arg(&db).arg(SB_SCHEMA).arg(raft(0));
            } else {
                tool.arg("join-cluster").arg(&db).arg(SB).arg(raft(i)).arg(raft(0));
            }
            run(&mut tool);
            members.push(Server::start(&dir, &format!("m{i}"), &[db], Some(ports[n + i]), &[]));
        }
        let c = Cluster { members, dir };
        for i in 0..n {
            c.wait_member(i, true);
        }
        c
    }

    /// The member's `_Server` row for the Southbound database.
    pub fn server_row(&self, i: usize) -> Option<Value> {
        let q = json!(["_Server", {"op": "select", "table": "Database", "where": [["name", "==", SB]]}]).to_string();
        let out = Command::new(bin("ovsdb-client"))
            .arg("--timeout=5")
            .args(["query", &self.members[i].unix_remote(), &q])
            .output()
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v[0]["rows"].get(0).cloned()
    }

    /// Waits until member `i`'s `_Server` says connected (or not).
    pub fn wait_member(&self, i: usize, connected: bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let row = self.server_row(i);
            let is = row.as_ref().map(|r| r["connected"] == json!(true) && r["schema"].is_string());
            if is == Some(connected) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "member {i} never became connected={connected}: {row:?}\n{}",
                self.members[i].log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn remotes_tcp(&self) -> String {
        self.members.iter().map(Server::tcp_remote).collect::<Vec<_>>().join(",")
    }

    /// The member listening on `remote`.
    pub fn index_of(&self, remote: &str) -> usize {
        self.members
            .iter()
            .position(|m| m.tcp.map(|_| m.tcp_remote()).as_deref() == Some(remote) || m.unix_remote() == remote)
            .unwrap_or_else(|| panic!("no member at {remote}"))
    }
}

/// Polls `f` every 20 ms until it is true, or panics naming `what`.
pub async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
