//! A real OVN control plane (Debian `ovn-central`, OVN 23.03) for tests:
//! the Northbound and Southbound ovsdb-servers and ovn-northd in a
//! namespace of their own, on unix sockets in a private directory (sockets
//! are file-system objects, so clients in other namespaces reach them).
//! Hypervisors are `OvsHypervisor`s made chassis with
//! `start_ovn_controller`. Everything is stopped, by its pidfile, on drop.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use crate::{netns::unique_name, ovs::stop_pidfile, Netns};

const SCHEMA_NB: &str = "/usr/share/ovn/ovn-nb.ovsschema";
const SCHEMA_SB: &str = "/usr/share/ovn/ovn-sb.ovsschema";

pub struct OvnCentral {
    dir: PathBuf,
    ns: Netns,
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

impl OvnCentral {
    /// NB, SB and northd, running; panics (after cleaning up) on failure.
    pub fn start() -> OvnCentral {
        let dir = std::env::temp_dir().join(unique_name("ovn"));
        fs::create_dir_all(&dir).expect("OVN dir");
        let c = OvnCentral { dir, ns: Netns::new("ovc") };
        for (name, schema, table) in
            [("nb", SCHEMA_NB, "OVN_Northbound,NB_Global"), ("sb", SCHEMA_SB, "OVN_Southbound,SB_Global")]
        {
            let db = c.dir.join(format!("{name}.db"));
            crate::sh(&["ovsdb-tool", "create", db.to_str().unwrap(), schema]);
            c.daemon(&[
                "ovsdb-server",
                db.to_str().unwrap(),
                &format!("--remote=punix:{}", c.path(&format!("{name}.sock"))),
                &format!("--remote=db:{table},connections"),
                &format!("--unixctl={}", c.path(&format!("{name}.ctl"))),
                &format!("--pidfile={}", c.path(&format!("{name}.pid"))),
                "--detach",
                &format!("--log-file={}", c.path(&format!("{name}.log"))),
                "-vconsole:off",
            ]);
        }
        c.nbctl(&["--no-wait", "init"]);
        c.sbctl(&["init"]);
        c.daemon(&[
            "ovn-northd",
            &format!("--ovnnb-db={}", c.nb_remote()),
            &format!("--ovnsb-db={}", c.sb_remote()),
            &format!("--unixctl={}", c.path("northd.ctl")),
            &format!("--pidfile={}", c.path("northd.pid")),
            "--detach",
            &format!("--log-file={}", c.path("northd.log")),
            "-vconsole:off",
        ]);
        c
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).to_str().unwrap().to_owned()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns.name]).args(args);
        for var in ["OVS_RUNDIR", "OVN_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVN_LOGDIR"] {
            cmd.env(var, &self.dir);
        }
        cmd
    }

    fn daemon(&self, args: &[&str]) {
        let out = self.command(args).output().unwrap_or_else(|e| panic!("{}: {e}", args[0]));
        assert!(out.status.success(), "{}: {}", args[0], text(&out));
    }

    fn tool(&self, tool: &str, db: &str, args: &[&str]) -> String {
        let db = format!("--db={db}");
        let mut all = vec![tool, &db, "--timeout=20"];
        all.extend_from_slice(args);
        let out = self.command(&all).output().unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(out.status.success(), "{tool} {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn nb_remote(&self) -> String {
        format!("unix:{}", self.path("nb.sock"))
    }

    pub fn sb_remote(&self) -> String {
        format!("unix:{}", self.path("sb.sock"))
    }

    pub fn nbctl(&self, args: &[&str]) -> String {
        self.tool("ovn-nbctl", &self.nb_remote(), args)
    }

    pub fn sbctl(&self, args: &[&str]) -> String {
        self.tool("ovn-sbctl", &self.sb_remote(), args)
    }

    /// One column of the rows of `table` matching `conditions`, `--bare`.
    pub fn sb_find(&self, table: &str, column: &str, conditions: &[&str]) -> String {
        let columns = format!("--columns={column}");
        let mut args = vec!["--bare", &columns, "find", table];
        args.extend_from_slice(conditions);
        self.sbctl(&args)
    }

    /// Polls `f` until it returns `Some`, or panics with `what` and the logs.
    pub fn wait<T>(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\nnorthd:\n{}",
                self.log_tail("northd", 10)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_tail(&self, name: &str, n: usize) -> String {
        let log = fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for OvnCentral {
    fn drop(&mut self) {
        for name in ["northd", "sb", "nb"] {
            stop_pidfile(&self.dir.join(format!("{name}.pid")));
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
