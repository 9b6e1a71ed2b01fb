//! A real OVN control plane (Debian `ovn-central`, OVN 23.03) for tests:
//! the Northbound and Southbound ovsdb-servers and ovn-northd (or the
//! Southbound alone, `start_southbound_only`) in a namespace of their
//! own, on unix sockets in a private directory (sockets are file-system
//! objects, so clients in other namespaces reach them).
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Schema {
    Ovn,
    Raft,
    WithoutEncapIndex,
    SouthboundOnly,
}

pub struct OvnCentral {
    dir: PathBuf,
    ns: Netns,
    /// The Southbound is a 3-member raft cluster (`start_raft`).
    raft: bool,
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

impl OvnCentral {
    /// NB, SB and northd, running; panics (after cleaning up) on failure.
    pub fn start() -> OvnCentral {
        OvnCentral::start_with(Schema::Ovn)
    }

    /// `start`, with the Southbound made from a copy of OVN's schema
    /// without the `Encap (type, ip)` index (added 2018-12, after the
    /// incident): it holds redundant chassis with one IP, as the incident's
    /// Southbound did.
    pub fn start_without_encap_index() -> OvnCentral {
        OvnCentral::start_with(Schema::WithoutEncapIndex)
    }

    /// `start`, with the Southbound a 3-member raft cluster (raft on the
    /// central namespace's loopback, clients on unix sockets sb1..sb3), as
    /// `../shared/peers/ovn/ovn-lab.sh` runs it with `OVL_SB_RAFT=1`.
    pub fn start_raft() -> OvnCentral {
        OvnCentral::start_with(Schema::Raft)
    }

    /// The Southbound alone: no Northbound, no ovn-northd, so rows written
    /// straight into the Southbound (Datapath_Binding, Port_Binding, which
    /// northd owns and would rewrite or delete) stay as written. For
    /// benchmarks that fill it with thousands of rows in one transaction.
    pub fn start_southbound_only() -> OvnCentral {
        OvnCentral::start_with(Schema::SouthboundOnly)
    }

    fn start_with(schema: Schema) -> OvnCentral {
        let dir = std::env::temp_dir().join(unique_name("ovn"));
        fs::create_dir_all(&dir).expect("OVN dir");
        let raft = schema == Schema::Raft;
        let c = OvnCentral { dir, ns: Netns::new("ovc"), raft };
        let sb_schema = match schema {
            Schema::WithoutEncapIndex => {
                let mut v: serde_json::Value = serde_json::from_str(&fs::read_to_string(SCHEMA_SB).unwrap()).unwrap();
                let encap = v["tables"]["Encap"].as_object_mut().expect("Encap in the schema");
                assert!(encap.remove("indexes").is_some(), "OVN's schema has the Encap index");
                let path = c.dir.join("sb-without-encap-index.ovsschema");
                fs::write(&path, v.to_string()).unwrap();
                path.to_str().unwrap().to_owned()
            }
            _ => SCHEMA_SB.to_owned(),
        };
        c.ns.ok(&["ip", "link", "set", "lo", "up"]);
        let northd = schema != Schema::SouthboundOnly;
        if northd {
            let nb = c.dir.join("nb.db");
            crate::sh(&["ovsdb-tool", "create", nb.to_str().unwrap(), SCHEMA_NB]);
            c.start_db("nb", "OVN_Northbound,NB_Global");
        }
        if raft {
            let db = |m: usize| c.dir.join(format!("sb{m}.db")).to_str().unwrap().to_owned();
            let raft = |m: usize| format!("tcp:127.0.0.1:{}", 6643 + m);
            crate::sh(&["ovsdb-tool", "create-cluster", &db(1), &sb_schema, &raft(1)]);
            for m in [2, 3] {
                crate::sh(&["ovsdb-tool", "join-cluster", &db(m), "OVN_Southbound", &raft(m), &raft(1)]);
            }
            for m in 1..=3 {
                c.start_sb_member(m);
            }
            c.wait("a Southbound leader", Duration::from_secs(30), || c.sb_leader());
        } else {
            let db = c.dir.join("sb.db");
            crate::sh(&["ovsdb-tool", "create", db.to_str().unwrap(), &sb_schema]);
            c.start_db("sb", "OVN_Southbound,SB_Global");
        }
        c.sbctl(&["init"]);
        if !northd {
            return c;
        }
        c.nbctl(&["--no-wait", "init"]);
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

    /// An ovsdb-server for `<name>.db` on `<name>.sock`.
    fn start_db(&self, name: &str, table: &str) {
        let db = self.dir.join(format!("{name}.db"));
        self.daemon(&[
            "ovsdb-server",
            db.to_str().unwrap(),
            &format!("--remote=punix:{}", self.path(&format!("{name}.sock"))),
            &format!("--remote=db:{table},connections"),
            &format!("--unixctl={}", self.path(&format!("{name}.ctl"))),
            &format!("--pidfile={}", self.path(&format!("{name}.pid"))),
            "--detach",
            &format!("--log-file={}", self.path(&format!("{name}.log"))),
            "-vconsole:off",
        ]);
    }

    /// (Re)starts raft member `m` (1..=3) from its database file.
    pub fn start_sb_member(&self, m: usize) {
        self.start_db(&format!("sb{m}"), "OVN_Southbound,SB_Global");
    }

    /// SIGKILLs raft member `m`, by its pidfile.
    pub fn kill_sb_member(&self, m: usize) {
        let pid: i32 = fs::read_to_string(self.dir.join(format!("sb{m}.pid"))).unwrap().trim().parse().unwrap();
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        let _ = fs::remove_file(self.dir.join(format!("sb{m}.pid")));
    }

    /// `ovs-appctl` on raft member `m`'s ovsdb-server (`cluster/status
    /// OVN_Southbound`, `cluster/failure-test transfer-leadership`, ...).
    pub fn sb_appctl(&self, m: usize, args: &[&str]) -> Result<String, String> {
        let ctl = self.path(&format!("sb{m}.ctl"));
        let mut all = vec!["ovs-appctl", "-t", &ctl];
        all.extend_from_slice(args);
        let out = self.command(&all).output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(text(&out))
        }
    }

    /// Member `m`'s client socket, as it appears in a remote
    /// (`unix:<this>`).
    pub fn sb_member_socket(&self, m: usize) -> String {
        self.path(&format!("sb{m}.sock"))
    }

    /// Member `m`'s raft role (`leader`, `follower`, `candidate`), or
    /// `None` if it does not answer.
    pub fn sb_role(&self, m: usize) -> Option<String> {
        let ctl = self.path(&format!("sb{m}.ctl"));
        let out = self.command(&["ovs-appctl", "-t", &ctl, "cluster/status", "OVN_Southbound"]).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().find_map(|l| l.strip_prefix("Role: ").map(|r| r.trim().to_owned()))
    }

    /// The leader's member number.
    pub fn sb_leader(&self) -> Option<usize> {
        (1..=3).find(|&m| self.sb_role(m).as_deref() == Some("leader"))
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

    /// The Southbound's remote: one socket, or the three members'.
    pub fn sb_remote(&self) -> String {
        if self.raft {
            (1..=3).map(|m| format!("unix:{}", self.path(&format!("sb{m}.sock")))).collect::<Vec<_>>().join(",")
        } else {
            format!("unix:{}", self.path("sb.sock"))
        }
    }

    pub fn nbctl(&self, args: &[&str]) -> String {
        self.tool("ovn-nbctl", &self.nb_remote(), args)
    }

    /// `ovn-sbctl`, which may fail: its stdout, or its output on failure.
    pub fn sbctl_result(&self, args: &[&str]) -> Result<String, String> {
        let db = format!("--db={}", self.sb_remote());
        let mut all = vec!["ovn-sbctl", &db, "--timeout=20"];
        all.extend_from_slice(args);
        let out = self.command(&all).output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(text(&out))
        }
    }

    pub fn sbctl(&self, args: &[&str]) -> String {
        self.tool("ovn-sbctl", &self.sb_remote(), args)
    }

    /// Runs `txns` against the Southbound one after the other, each its own
    /// transaction, on one connection (to the leader of a cluster); returns
    /// how many committed. A transaction the server refuses panics.
    pub fn sb_transactions(&self, txns: impl IntoIterator<Item = Vec<serde_json::Value>>) -> usize {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let remote: xgw_ovsdb::Remote = if self.raft {
            let leader = self.sb_leader().expect("a Southbound leader");
            format!("unix:{}", self.path(&format!("sb{leader}.sock"))).parse().unwrap()
        } else {
            self.sb_remote().parse().unwrap()
        };
        rt.block_on(async {
            let mut c = xgw_ovsdb::Connection::connect(&remote, &xgw_ovsdb::Options::default()).await.expect("connect");
            let mut n = 0;
            for ops in txns {
                c.transact("OVN_Southbound", ops).await.unwrap_or_else(|e| panic!("transaction {n}: {e}"));
                n += 1;
            }
            n
        })
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
        for name in ["northd", "sb", "sb1", "sb2", "sb3", "nb"] {
            stop_pidfile(&self.dir.join(format!("{name}.pid")));
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The OVN lab of `../shared/peers/ovn` (and of the tests that put xgw in
/// it): switch ls1 with vm1 and vm2 on two OVN hypervisors (hv1, hv2) and
/// vm3 behind xgw, all chassis on one underlay bridge.
///
///   ovs VM vm1 -- hv1 (ovn-controller) --\
///   ovs VM vm2 -- hv2 (ovn-controller) ---- br0 in `ul` -- xgw [ul] -- [p3] vm3
pub mod lab {
    use std::time::{Duration, Instant};

    use super::OvnCentral;
    use crate::{gateway::TestGateway, ovs::mac_str, Netns, OvsHypervisor, Veth};

    pub const XGW_IP: &str = "198.51.100.13";
    pub const HV_IP: [&str; 2] = ["198.51.100.11", "198.51.100.12"];
    pub const VM_IP: [&str; 3] = ["203.0.113.1", "203.0.113.2", "203.0.113.3"];
    pub const VM_MAC: [[u8; 6]; 3] = [[2, 0, 0x5e, 0, 1, 1], [2, 0, 0x5e, 0, 1, 2], [2, 0, 0x5e, 0, 1, 3]];

    /// Everything but xgw. Field order is drop order: probes detach,
    /// hypervisors stop, namespaces go.
    pub struct Topology {
        pub probes: TestGateway,
        pub hv: Vec<OvsHypervisor>,
        pub vm3: Netns,
        /// xgw's namespace: its uplink `ul`, vm3's port `p3`.
        pub xgw: Netns,
        pub ul: Netns,
    }

    impl Topology {
        /// VM `i` (0: vm1 on hv1, 1: vm2 on hv2, 2: vm3 behind xgw).
        pub fn vm(&self, i: usize) -> &Netns {
            if i == 2 {
                &self.vm3
            } else {
                self.hv[i].vm()
            }
        }

        /// Of `count` pings from VM `from` to VM `to`, how many came back.
        pub fn received(&self, from: usize, to: usize, count: u32) -> u32 {
            let out = self.vm(from).exec(&["ping", "-c", &count.to_string(), "-i", "0.2", "-W", "1", VM_IP[to]]);
            let text = String::from_utf8_lossy(&out.stdout);
            text.split(',').find_map(|f| f.trim().strip_suffix(" received").and_then(|n| n.parse().ok())).unwrap_or(0)
        }

        /// VM `from` reaches VM `to`: one ping gets through within 15 s (OVS
        /// drops the packet that triggers its underlay ARP), then 4 of 4.
        pub fn reach(&self, from: usize, to: usize, report: impl Fn() -> String) {
            let deadline = Instant::now() + Duration::from_secs(15);
            while self.received(from, to, 1) == 0 {
                assert!(Instant::now() < deadline, "vm{} never reached vm{}\n{}", from + 1, to + 1, report());
            }
            assert_eq!(self.received(from, to, 4), 4, "vm{} -> vm{}\n{}", from + 1, to + 1, report());
        }

        /// Bytes a 2 s iperf3 TCP stream from VM `client` to VM `server` moved.
        pub fn iperf(&self, client: usize, server: usize) -> u64 {
            let srv = self.vm(server).spawn(&["iperf3", "-s", "-1", "-B", VM_IP[server]]);
            std::thread::sleep(Duration::from_millis(400));
            let out = self.vm(client).exec(&["iperf3", "-c", VM_IP[server], "-t", "2", "-J"]);
            let _ = srv.wait(Duration::from_secs(5));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let bps = v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0);
            eprintln!("iperf3 vm{} -> vm{}: {:.0} Mbit/s", client + 1, server + 1, bps / 1e6);
            v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0)
        }
    }

    /// ls1 with vm1..vm3 in the Northbound (fast BFD timers in NB_Global),
    /// hv1 and hv2 running, xgw's and vm3's namespaces wired.
    pub fn topology(ovn: &OvnCentral) -> Topology {
        // ovn-controller reads SB_Global, which northd copies from NB_Global.
        ovn.nbctl(&["set", "NB_Global", ".", "options:bfd-min-rx=100", "options:bfd-min-tx=100", "options:bfd-mult=3"]);
        ovn.nbctl(&["ls-add", "ls1"]);
        for i in 0..3 {
            let name = format!("vm{}", i + 1);
            let addresses = format!("{} {}", mac_str(VM_MAC[i]), VM_IP[i]);
            ovn.nbctl(&["lsp-add", "ls1", &name, "--", "lsp-set-addresses", &name, &addresses]);
        }
        let ul = Netns::new("ovu");
        ul.ok(&["ip", "link", "add", "br0", "type", "bridge"]);
        ul.ok(&["ip", "link", "set", "br0", "up"]);
        let mut hv = Vec::new();
        for (i, ip) in HV_IP.iter().enumerate() {
            let ns = Netns::new("ovh");
            let port = format!("u{}", i + 1);
            Veth::new(&ul, &port, "", &ns, "ul0", "");
            ul.ok(&["ip", "link", "set", &port, "master", "br0"]);
            ul.ok(&["ethtool", "-K", &port, "tx", "off"]);
            let mut h = OvsHypervisor::builder(ns, "ul0")
                .ip4(&format!("{ip}/24"))
                .vm(VM_MAC[i], Some(&format!("{}/24", VM_IP[i])), None)
                .start();
            h.start_ovn_controller(&format!("hv{}", i + 1), &ovn.sb_remote(), ip);
            h.vsctl(&["set", "interface", crate::ovs::VM_PORT, &format!("external_ids:iface-id=vm{}", i + 1)]);
            hv.push(h);
        }
        let xgw = Netns::new("ovx");
        Veth::new(&ul, "u3", "", &xgw, "ul", &format!("{XGW_IP}/24"));
        ul.ok(&["ip", "link", "set", "u3", "master", "br0"]);
        ul.ok(&["ethtool", "-K", "u3", "tx", "off"]);
        xgw.ok(&["ethtool", "-K", "ul", "tx", "off"]);
        let vm3 = Netns::new("ovv");
        Veth::new(&xgw, "p3", "", &vm3, "eth0", &format!("{}/24", VM_IP[2]));
        vm3.ok(&["ip", "link", "set", "eth0", "address", &mac_str(VM_MAC[2]), "mtu", "1400"]);
        vm3.ok(&["ethtool", "-K", "eth0", "tx", "off"]);
        // veth delivers XDP-redirected frames only to a peer running XDP.
        let mut probes = TestGateway::load(&["xgw_pass"]);
        probes.attach(&ul, "xgw_pass", "u3");
        probes.attach(&vm3, "xgw_pass", "eth0");
        Topology { probes, hv, vm3, xgw, ul }
    }

    /// Router lr1 on ls1 (`ls1-lr1`, 203.0.113.254) whose gateway port
    /// `lr1-pub` is HA over hv1 (20) and hv2 (15): northd makes every
    /// chassis with a port on ls1 a ref chassis of the group, and OVN runs
    /// BFD from the members to them.
    pub fn ha_router(ovn: &OvnCentral) {
        ovn.nbctl(&[
            "lr-add",
            "lr1",
            "--",
            "lrp-add",
            "lr1",
            "lr1-ls1",
            "02:00:5e:00:02:01",
            "203.0.113.254/24",
            "--",
            "lsp-add",
            "ls1",
            "ls1-lr1",
            "--",
            "lsp-set-type",
            "ls1-lr1",
            "router",
            "--",
            "lsp-set-addresses",
            "ls1-lr1",
            "router",
            "--",
            "lsp-set-options",
            "ls1-lr1",
            "router-port=lr1-ls1",
            "--",
            "lrp-add",
            "lr1",
            "lr1-pub",
            "02:00:5e:00:02:02",
            "198.51.100.254/24",
            "--",
            "lrp-set-gateway-chassis",
            "lr1-pub",
            "hv1",
            "20",
            "--",
            "lrp-set-gateway-chassis",
            "lr1-pub",
            "hv2",
            "15",
        ]);
    }
}
