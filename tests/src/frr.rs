//! An FRR router (Debian frr: zebra + bfdd) in a test namespace with private
//! config, run and log directories, one single-hop BFD peer. Both daemons run
//! in the foreground under `Process` guards, so they are stopped by PID.
//!
//! bfdd's echo mode sends packets from its own address to its own address,
//! to the peer's MAC, and counts those that come back: the peer must route
//! them back (here xgw's XDP program reflects them).
use std::{
    fs,
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::{netns::unique_name, Netns, Process};

/// Single-hop BFD settings, milliseconds.
#[derive(Debug, Clone)]
pub struct FrrBfd {
    pub peer: String,
    pub local: String,
    pub ifname: String,
    pub tx_ms: u32,
    pub rx_ms: u32,
    pub mult: u8,
    pub echo_ms: Option<u32>,
}

pub struct Frr {
    // Drop order: daemons first, then files.
    bfdd: Option<Process>,
    zebra: Option<Process>,
    dir: PathBuf,
    ns_name: String,
}

impl Frr {
    pub fn start(ns: &Netns, cfg: &FrrBfd) -> Frr {
        let dir = std::env::temp_dir().join(unique_name("frr"));
        for d in ["etc", "run", "log"] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
        let p = |s: &str| dir.join(s).to_str().unwrap().to_string();
        fs::write(dir.join("etc/vtysh.conf"), "service integrated-vtysh-config\n").unwrap();
        fs::write(dir.join("etc/zebra.conf"), format!("hostname frr\nlog file {}\n", p("log/zebra.log"))).unwrap();
        // Microsecond log timestamps and state-change lines: when bfdd
        // declared a peer Down, for the benchmark's detection times.
        let mut conf = format!(
            "hostname frr\nlog file {}\nlog timestamp precision 6\ndebug bfd peer\nbfd\n peer {} interface {} local-address {}\n  detect-multiplier {}\n  receive-interval {}\n  transmit-interval {}\n",
            p("log/bfdd.log"),
            cfg.peer,
            cfg.ifname,
            cfg.local,
            cfg.mult,
            cfg.rx_ms,
            cfg.tx_ms
        );
        if let Some(e) = cfg.echo_ms {
            conf += &format!("  echo-mode\n  echo transmit-interval {e}\n  echo receive-interval {e}\n");
        }
        conf += "  no shutdown\n exit\nexit\n";
        fs::write(dir.join("etc/bfdd.conf"), conf).unwrap();
        crate::sh(&["chown", "-R", "frr:frr", dir.to_str().unwrap()]);
        let mut frr = Frr { bfdd: None, zebra: None, dir: dir.clone(), ns_name: ns.name.clone() };
        // UTC: the log's timestamps are compared with the system clock.
        frr.zebra = Some(ns.spawn(&[
            "env",
            "TZ=UTC",
            "/usr/lib/frr/zebra",
            "-u",
            "frr",
            "-g",
            "frr",
            "-P",
            "0",
            "-f",
            &p("etc/zebra.conf"),
            "-i",
            &p("run/zebra.pid"),
            "-z",
            &p("run/zserv.api"),
            "--vty_socket",
            &p("run"),
        ]));
        frr.wait_file("run/zserv.api");
        frr.bfdd = Some(ns.spawn(&[
            "env",
            "TZ=UTC",
            "/usr/lib/frr/bfdd",
            "-u",
            "frr",
            "-g",
            "frr",
            "-P",
            "0",
            "-f",
            &p("etc/bfdd.conf"),
            "-i",
            &p("run/bfdd.pid"),
            "-z",
            &p("run/zserv.api"),
            "--vty_socket",
            &p("run"),
            "--bfdctl",
            &p("run/bfdd.sock"),
        ]));
        frr.wait_file("run/bfdd.vty");
        frr
    }

    fn wait_file(&self, rel: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.dir.join(rel).exists() {
            assert!(Instant::now() < deadline, "FRR did not create {rel}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `vtysh -c <cmd>` against this instance.
    pub fn vtysh(&self, cmd: &str) -> String {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns_name, "vtysh", "--vty_socket"])
            .arg(self.dir.join("run"))
            .arg("--config_dir")
            .arg(self.dir.join("etc"))
            .args(["-c", cmd])
            .output()
            .expect("vtysh");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `show bfd peer <ip> json`.
    pub fn peer(&self, ip: &str) -> serde_json::Value {
        serde_json::from_str(&self.vtysh(&format!("show bfd peer {ip} json"))).unwrap_or_default()
    }

    /// `show bfd peer <ip> counters json`.
    pub fn counters(&self, ip: &str) -> serde_json::Value {
        serde_json::from_str(&self.vtysh(&format!("show bfd peer {ip} counters json"))).unwrap_or_default()
    }

    /// bfdd's `up -> down` state changes: (seconds since midnight UTC, as
    /// logged to the microsecond, the reason).
    pub fn downs(&self) -> Vec<(f64, String)> {
        let t = fs::read_to_string(self.dir.join("log/bfdd.log")).unwrap_or_default();
        t.lines()
            .filter(|l| l.contains("state-change:") && l.contains(" up -> down"))
            .filter_map(|l| {
                // "2026/11/24 03:27:29.347123 BFD: ... reason:control-expired"
                let time = l.split_whitespace().nth(1)?;
                let mut hms = time.split(':');
                let (h, m, s): (f64, f64, f64) =
                    (hms.next()?.parse().ok()?, hms.next()?.parse().ok()?, hms.next()?.parse().ok()?);
                let reason = l.rsplit("reason:").next().unwrap_or("").trim().to_string();
                Some((h * 3600.0 + m * 60.0 + s, reason))
            })
            .collect()
    }

    /// Adds single-hop peers to the running bfdd through vtysh, a batch of
    /// them per call (the argument list stays bounded); fails naming
    /// vtysh's complaint if a peer is refused.
    pub fn add_peers(&self, peers: &[FrrBfd]) {
        for batch in peers.chunks(200) {
            let mut cmd = std::process::Command::new("ip");
            cmd.args(["netns", "exec", &self.ns_name, "vtysh", "--vty_socket"])
                .arg(self.dir.join("run"))
                .arg("--config_dir")
                .arg(self.dir.join("etc"))
                .args(["-c", "configure terminal", "-c", "bfd"]);
            for p in batch {
                cmd.args(["-c", &format!("peer {} interface {} local-address {}", p.peer, p.ifname, p.local)]);
                cmd.args(["-c", &format!("detect-multiplier {}", p.mult)]);
                cmd.args(["-c", &format!("receive-interval {}", p.rx_ms)]);
                cmd.args(["-c", &format!("transmit-interval {}", p.tx_ms)]);
                if let Some(e) = p.echo_ms {
                    cmd.args([
                        "-c",
                        "echo-mode",
                        "-c",
                        &format!("echo transmit-interval {e}"),
                        "-c",
                        &format!("echo receive-interval {e}"),
                    ]);
                }
                cmd.args(["-c", "exit"]);
            }
            let out = cmd.output().expect("vtysh");
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success() && !text.contains('%'), "vtysh refused a bfd peer ({}): {text}", out.status);
        }
    }

    /// Sessions whose status is up, from `show bfd peers brief` (the plain
    /// table: much less work for bfdd than the JSON of every peer).
    pub fn peers_up(&self) -> usize {
        self.vtysh("show bfd peers brief").lines().filter(|l| l.split_whitespace().last() == Some("up")).count()
    }

    /// The bfdd process (its CPU time is in /proc/<pid>/stat).
    pub fn bfdd_pid(&self) -> u32 {
        self.bfdd.as_ref().expect("bfdd running").pid()
    }

    pub fn log(&self) -> String {
        let t = fs::read_to_string(self.dir.join("log/bfdd.log")).unwrap_or_default();
        t.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        self.bfdd.take();
        self.zebra.take();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
