//! xgw as an OVN chassis (issue 18), against the real OVN 23.03 of the
//! tests' lab (`xgw_tests::ovn`), each figure beside ovn-controller's or
//! xgw's own in the same run:
//!
//! - `nb_cfg`: time from a Northbound change (the transaction `ovn-nbctl
//!   --wait=hv` makes, and `ovn-nbctl --wait=hv` itself) to each chassis'
//!   acknowledgement (`Chassis_Private.nb_cfg` reaching the change's
//!   `nb_cfg`, what `--wait=hv` waits for), xgw beside the two
//!   hypervisors' ovn-controller;
//! - `scale`: convergence after one Southbound transaction adding N
//!   chassis (IPv6 geneve encaps) and M port bindings on the switch xgw's
//!   port is on, beside the same tunnels and bindings from xgw's config
//!   file (SIGHUP); xgw's resident memory beside its own with an empty
//!   Southbound;
//! - `reconnect`: SIGKILL of the raft leader a client is connected to,
//!   to that client's monitor resumed on another member, xgw beside
//!   ovn-controller.
//!
//! A change starts when this process sends it (or runs the command that
//! makes it); a row's time is when a monitor of our own (`Watch`, an
//! `xgw_ovsdb` client at SCHED_FIFO) receives it, the same way for every
//! chassis' row.
use std::{
    os::unix::net::UnixDatagram,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::{json, Value};
use xgw_ovsdb::{ops, Client, Config, Event, MonitorSpec, TableMonitor};
use xgw_tests::{
    daemon::Daemon,
    netns::unique_name,
    ovn::{
        lab::{self, XGW_IP},
        OvnCentral,
    },
    Netns, Veth,
};

/// One version of a row, as our monitor received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub table: String,
    pub name: Option<String>,
    pub nb_cfg: Option<i64>,
}

/// A monitor of some columns of some tables, recording every new row
/// version with the instant its update arrived. On a thread of its own
/// (its own tokio runtime), stopped on drop.
pub struct Watch {
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    pub fn start(remote: &str, database: &str, tables: &[(&str, &[&str])]) -> Watch {
        let remotes: xgw_ovsdb::Remotes = remote.parse().unwrap_or_else(|e| panic!("{remote}: {e}"));
        let mut spec = MonitorSpec::new();
        for (t, columns) in tables {
            spec = spec.table(t, TableMonitor::all().columns(columns));
        }
        let config = Config::new(remotes, database, spec);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let out = seen.clone();
        let thread = std::thread::spawn(move || {
            realtime();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let (client, mut events) = Client::start(config);
                let ready = client.wait_monitoring(Duration::from_secs(20)).await;
                let _ = ready_tx.send(ready.map_err(|e| e.to_string()));
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        ev = events.recv() => {
                            let Some(ev) = ev else { break };
                            let at = Instant::now();
                            let (Event::Update(u) | Event::Reset(u)) = ev else { continue };
                            let mut out = out.lock().unwrap();
                            for c in u.changes {
                                let Some(row) = c.new else { continue };
                                out.push(Seen {
                                    at,
                                    table: c.table.clone(),
                                    name: row.get("name").and_then(|d| d.as_str()).map(str::to_owned),
                                    nb_cfg: row.get("nb_cfg").and_then(|d| d.as_integer()),
                                });
                            }
                        }
                    }
                }
                drop(client);
            });
        });
        ready_rx.recv().expect("the watch's thread").unwrap_or_else(|e| panic!("monitoring {database}: {e}"));
        Watch { seen, stop: Some(stop), thread: Some(thread) }
    }

    /// The latest `nb_cfg` of `table`'s row named `name` (or its only row).
    pub fn latest(&self, table: &str, name: Option<&str>) -> Option<i64> {
        let seen = self.seen.lock().unwrap();
        seen.iter().rev().find(|s| s.table == table && name.is_none_or(|n| s.name.as_deref() == Some(n)))?.nb_cfg
    }

    /// When `table`'s row named `name` (or its only row) first had an
    /// `nb_cfg` of at least `target`, waiting up to `timeout` for it.
    pub fn reached(&self, table: &str, name: Option<&str>, target: i64, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = {
                let seen = self.seen.lock().unwrap();
                seen.iter()
                    .find(|s| {
                        s.table == table
                            && name.is_none_or(|n| s.name.as_deref() == Some(n))
                            && s.nb_cfg.is_some_and(|c| c >= target)
                    })
                    .map(|s| s.at)
            };
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Puts the calling thread at SCHED_FIFO 10: a watch stamps each update
/// when it arrives, even on a machine busy with the chassis it measures
/// (a watch wakes only for updates: a few per change).
fn realtime() {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: plain syscall wrapper on this thread, with a valid parameter.
    let r = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    assert_eq!(r, 0, "SCHED_FIFO for the watch thread (root?)");
}

/// The `p`th percentile (nearest rank) of `v`.
pub fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    s[((p / 100.0) * (s.len() - 1) as f64).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `d`'s resident set (`VmRSS` of its process), in KiB.
pub fn rss_kib(d: &Daemon) -> u64 {
    let pid = d.process.as_ref().expect("daemon running").pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the daemon's status");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "xgw", "pid {pid} is not the daemon");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A daemon in `ns` on uplink `ul` as OVN chassis `xgw` of `sb_remote`,
/// with `interfaces` (logical port, interface), started.
fn chassis_daemon(ns: &Netns, local_ips: &[&str], sb_remote: &str, interfaces: &[(&str, &str)]) -> Daemon {
    let mut d = Daemon::new(ns, "ul", local_ips);
    let cfg = d.state.path.join("xgw.toml");
    let mut text = format!("[ovn]\nremote = \"{sb_remote}\"\nchassis = \"xgw\"\n[ovn.interfaces]\n");
    for (lport, ifname) in interfaces {
        text += &format!("{lport} = \"{ifname}\"\n");
    }
    std::fs::write(&cfg, text).unwrap();
    d.extra = vec!["--config".into(), cfg.display().to_string()];
    d.start();
    d
}

// --- nb_cfg -------------------------------------------------------------------

/// Milliseconds from a change's start to each chassis' acknowledgement,
/// by how the change was made.
#[derive(Debug, Default)]
pub struct Acks {
    pub xgw: Vec<f64>,
    /// hv1's and hv2's, two per change.
    pub ovn_controller: Vec<f64>,
    /// To `SB_Global.nb_cfg` (the Northbound transaction, northd): the
    /// part every chassis' figure shares.
    pub southbound: Vec<f64>,
}

#[derive(Debug, Default)]
pub struct NbCfg {
    /// The transaction `ovn-nbctl --wait=hv` makes, sent by the bench on
    /// an open connection: from its sending.
    pub transaction: Acks,
    /// `ovn-nbctl --wait=hv` itself: from its process started.
    pub nbctl: Acks,
    /// `ovn-nbctl --wait=hv` as its caller sees it (started to exited).
    pub wait_hv: Vec<f64>,
}

/// A connection to the Northbound on a runtime of its own, for the
/// changes the bench makes itself.
struct Northbound {
    rt: tokio::runtime::Runtime,
    conn: xgw_ovsdb::Connection,
}

impl Northbound {
    fn open(remote: &str) -> Northbound {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let remote: xgw_ovsdb::Remote = remote.parse().unwrap();
        let conn = rt
            .block_on(xgw_ovsdb::Connection::connect(&remote, &xgw_ovsdb::Options::default()))
            .expect("connect to the Northbound");
        Northbound { rt, conn }
    }

    /// Runs `txn`; the instant before it was sent, and its results.
    fn transact(&mut self, txn: Vec<Value>) -> (Instant, Vec<Value>) {
        let sent = Instant::now();
        let result = self.rt.block_on(self.conn.transact("OVN_Northbound", txn)).expect("Northbound transaction");
        if let Some(e) = result.iter().find(|r| r.get("error").is_some()) {
            panic!("the Northbound refused the transaction: {e}");
        }
        (sent, result)
    }
}

/// `changes` changes on ls1 in the lab of the tests: xgw (vm3 on ls1)
/// and two hypervisors (vm1, vm2 on ls1) on one standalone Southbound.
/// Each change moves vm1 (bound to hv1) to another MAC and back, so that
/// every chassis has work before it acknowledges: xgw replaces vm1's
/// remote binding in its maps and store, hv1 and hv2 rewrite their flows
/// for vm1. Pairs of changes alternate between the transaction
/// `ovn-nbctl --wait=hv lsp-set-addresses` makes (the port's addresses,
/// `NB_Global.nb_cfg` raised by one), sent by the bench on an open
/// connection, and `ovn-nbctl --wait=hv` itself.
///
/// The acknowledgements are stamped by one monitor of the Southbound, the
/// start by this process just before it sends the transaction or runs
/// `ovn-nbctl`. (A monitor of the Northbound could not stamp commits: on
/// a busy machine it received some after northd had already copied them
/// into the Southbound, and ovsdb-server may send a chassis'
/// acknowledgement in the same update as the SB_Global change it answers,
/// so the chassis' own part, SB_Global to Chassis_Private, is below what a
/// monitor resolves here.)
pub fn nb_cfg(changes: usize) -> NbCfg {
    let ovn = OvnCentral::start();
    let topo = lab::topology(&ovn);
    ovn.nbctl(&["lsp-set-options", "vm3", "requested-chassis=xgw"]);
    let d = chassis_daemon(&topo.xgw, &[XGW_IP], &ovn.sb_remote(), &[("vm3", "p3")]);
    // Everything so far applied by every chassis, xgw included.
    ovn.nbctl(&["--wait=hv", "--timeout=60", "sync"]);
    let sb = Watch::start(
        &ovn.sb_remote(),
        "OVN_Southbound",
        &[("SB_Global", &["nb_cfg"]), ("Chassis_Private", &["name", "nb_cfg"])],
    );
    let mut nb = Northbound::open(&ovn.nb_remote());
    let nb_cfg_before: i64 = ovn.nbctl(&["get", "NB_Global", ".", "nb_cfg"]).trim().parse().expect("nb_cfg");
    let vm1 = vec![ops::cond("name", "==", json!("vm1"))];
    let raise = || ops::mutate("NB_Global", vec![], vec![ops::mutation("nb_cfg", "+=", json!(1))]);
    const WARMUP: usize = 4;
    let addresses = [
        format!("02:00:5e:00:10:01 {}", lab::VM_IP[0]),
        format!("{} {}", xgw_tests::ovs::mac_str(lab::VM_MAC[0]), lab::VM_IP[0]),
    ];
    let mut out = NbCfg::default();
    let timeout = Duration::from_secs(30);
    for i in 0..changes + WARMUP {
        let by_nbctl = (i / 2) % 2 == 1;
        let set = &addresses[i % 2];
        let (started, wait_hv) = if by_nbctl {
            let started = Instant::now();
            ovn.nbctl(&["--wait=hv", "--timeout=30", "lsp-set-addresses", "vm1", set]);
            (started, Some(ms(started.elapsed())))
        } else {
            let update = ops::update("Logical_Switch_Port", vm1.clone(), json!({ "addresses": set }));
            (nb.transact(vec![update, raise()]).0, None)
        };
        // Each change raises it by one.
        let nb_cfg = nb_cfg_before + i as i64 + 1;
        let seen = |table: &str, name: Option<&str>| -> f64 {
            let at = sb
                .reached(table, name, nb_cfg, timeout)
                .unwrap_or_else(|| panic!("change {i}: {table} {name:?} never reached nb_cfg {nb_cfg}"));
            ms(at - started)
        };
        let southbound = seen("SB_Global", None);
        let acks: Vec<f64> = ["xgw", "hv1", "hv2"].iter().map(|c| seen("Chassis_Private", Some(c))).collect();
        if i < WARMUP {
            continue;
        }
        let to = if by_nbctl { &mut out.nbctl } else { &mut out.transaction };
        to.southbound.push(southbound);
        to.xgw.push(acks[0]);
        to.ovn_controller.extend(&acks[1..]);
        out.wait_hv.extend(wait_hv);
    }
    // xgw followed: vm1's binding has its MAC back, its port and tunnels
    // are as they were.
    let show = d.json(&["show"]);
    assert_eq!(show["ovn"]["claimed"]["vm3"], true, "{}", show["ovn"]);
    assert_eq!(show["ovn"]["tunnels"], 2, "{}", show["ovn"]);
    let macs: Vec<&str> = show["bindings"].as_array().unwrap().iter().filter_map(|b| b["mac"].as_str()).collect();
    let vm1_mac = xgw_tests::ovs::mac_str(lab::VM_MAC[0]);
    assert!(macs.contains(&vm1_mac.as_str()) && !macs.contains(&"02:00:5e:00:10:01"), "{}", show["bindings"]);
    out
}

// --- scale --------------------------------------------------------------------

/// A gateway namespace for the scale runs: uplink `ul` (198.51.100.13/24,
/// 2001:db8:ffff::13/64) toward a router namespace, 2001:db8::/48 routed
/// through the router (one permanent neighbour, so a thousand IPv6
/// tunnels resolve their next hop at once, and add nothing to the host's
/// neighbour tables), and a port `p0` toward a VM namespace.
struct GatewayNs {
    ns: Netns,
    _router: Netns,
    _vm: Netns,
}

const LOCAL_IPS: [&str; 2] = ["198.51.100.13", "2001:db8:ffff::13"];

fn gateway_ns() -> GatewayNs {
    let ns = Netns::new("obg");
    let router = Netns::new("obr");
    let vm = Netns::new("obv");
    Veth::new(&ns, "ul", "198.51.100.13/24", &router, "r0", "198.51.100.1/24");
    ns.ok(&["ip", "-6", "addr", "add", "2001:db8:ffff::13/64", "dev", "ul", "nodad"]);
    router.ok(&["ip", "-6", "addr", "add", "2001:db8:ffff::1/64", "dev", "r0", "nodad"]);
    let mac = router.ok(&["cat", "/sys/class/net/r0/address"]).trim().to_owned();
    ns.ok(&["ip", "-6", "neigh", "replace", "2001:db8:ffff::1", "lladdr", &mac, "dev", "ul", "nud", "permanent"]);
    ns.ok(&["ip", "-6", "route", "add", "2001:db8::/48", "via", "2001:db8:ffff::1", "dev", "ul"]);
    Veth::new(&ns, "p0", "", &vm, "eth0", "");
    GatewayNs { ns, _router: router, _vm: vm }
}

const LOCAL_MAC: &str = "02:00:5e:00:00:01";
const LOCAL_IP: &str = "2001:db8:1::1";

fn chassis_name(i: usize) -> String {
    format!("hv{i:04}")
}

fn encap_ip(i: usize) -> String {
    format!("2001:db8::{:x}", i + 1)
}

/// VM `j`'s MAC and IPv6 address (port key j + 2; xgw's port is 1).
fn vm_addr(j: usize) -> (String, String) {
    let k = j + 2;
    (
        format!("02:00:5e:{:02x}:{:02x}:{:02x}", (k >> 16) & 0xff, (k >> 8) & 0xff, k & 0xff),
        format!("2001:db8:1::{k:x}"),
    )
}

/// The operations adding `chassis` chassis (one geneve Encap each) and
/// `bindings` VM ports on datapath `dp`, bound round-robin to them, with
/// `SB_Global.nb_cfg` raised by one.
fn load_ops(dp: &str, chassis: usize, bindings: usize) -> Vec<Value> {
    let mut txn = Vec::with_capacity(2 * chassis + bindings + 1);
    for i in 0..chassis {
        let name = chassis_name(i);
        txn.push(ops::insert_named(
            "Encap",
            json!({"type": "geneve", "ip": encap_ip(i), "options": ["map", [["csum", "true"]]], "chassis_name": name}),
            &format!("e{i}"),
        ));
        txn.push(ops::insert_named(
            "Chassis",
            json!({"name": name, "hostname": name, "encaps": ops::named_uuid(&format!("e{i}"))}),
            &format!("c{i}"),
        ));
    }
    for j in 0..bindings {
        let (mac, ip) = vm_addr(j);
        txn.push(ops::insert(
            "Port_Binding",
            json!({
                "logical_port": format!("vm{j:05}"),
                "datapath": ["uuid", dp],
                "tunnel_key": j + 2,
                "mac": format!("{mac} {ip}"),
                "chassis": ops::named_uuid(&format!("c{}", j % chassis)),
            }),
        ));
    }
    txn.push(bump_nb_cfg());
    txn
}

/// The operations deleting what `load_ops` added, `nb_cfg` raised by one.
fn unload_ops() -> Vec<Value> {
    vec![
        ops::delete("Port_Binding", vec![ops::cond("logical_port", "!=", json!("lp-xgw"))]),
        ops::delete("Chassis", vec![ops::cond("name", "!=", json!("xgw"))]),
        bump_nb_cfg(),
    ]
}

fn bump_nb_cfg() -> Value {
    ops::mutate("SB_Global", vec![], vec![ops::mutation("nb_cfg", "+=", json!(1))])
}

/// Runs `txn` on one connection (opened first, not timed): the instant
/// the reply came, i.e. the transaction committed.
fn transact_at(remote: &str, txn: Vec<Value>) -> (Instant, Duration) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let remote: xgw_ovsdb::Remote = remote.parse().unwrap();
    rt.block_on(async {
        let mut c = xgw_ovsdb::Connection::connect(&remote, &xgw_ovsdb::Options::default()).await.expect("connect");
        let sent = Instant::now();
        let result = c.transact("OVN_Southbound", txn).await.expect("the transaction");
        let at = Instant::now();
        if let Some(e) = result.iter().find(|r| r.get("error").is_some()) {
            panic!("the Southbound refused the transaction: {e}");
        }
        (at, at - sent)
    })
}

/// The same tunnels and bindings as xgw's config file would have them,
/// with the local port (`with_load` false: the local port only).
fn config_file(chassis: usize, bindings: usize, with_load: bool) -> String {
    let mut t = format!(
        "[[ports]]\nname = \"lp-xgw\"\nifname = \"p0\"\nvni = 1\nport_key = 1\nmac = \"{LOCAL_MAC}\"\nip = \"{LOCAL_IP}\"\n"
    );
    if !with_load {
        return t;
    }
    let tunnel = |i: usize| format!("ovn-{}-0", chassis_name(i));
    for i in 0..chassis {
        t += &format!("[[tunnels]]\nname = \"{}\"\nremote_ip = \"{}\"\novn_metadata = true\n", tunnel(i), encap_ip(i));
    }
    for j in 0..bindings {
        let (mac, ip) = vm_addr(j);
        t += &format!(
            "[[bindings]]\nvni = 1\nmac = \"{mac}\"\nip = \"{ip}\"\ntunnel = \"{}\"\nport_key = {}\n",
            tunnel(j % chassis),
            j + 2
        );
    }
    t
}

/// sd_notify's socket, for the config-file daemon: a reload is done when
/// READY=1 follows it.
struct Notify {
    sock: UnixDatagram,
    path: PathBuf,
}

impl Notify {
    fn new() -> Notify {
        let path = std::env::temp_dir().join(unique_name("notify"));
        let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
        Notify { sock, path }
    }

    /// Waits for READY=1; the instant it came and its whole message.
    fn ready(&self, timeout: Duration) -> (Instant, String) {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no READY=1 from the daemon in {timeout:?}");
            self.sock.set_read_timeout(Some(left)).unwrap();
            let Ok(n) = self.sock.recv(&mut buf) else { continue };
            let at = Instant::now();
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.lines().any(|l| l == "READY=1") {
                return (at, text);
            }
        }
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A reload of the config file now holding `text`: milliseconds from the
/// SIGHUP to READY=1 (the reload applied).
fn reload(d: &Daemon, notify: &Notify, text: &str) -> f64 {
    let cfg = d.state.path.join("xgw.toml");
    std::fs::write(&cfg, text).unwrap();
    let t = Instant::now();
    d.process.as_ref().unwrap().signal(nix::sys::signal::Signal::SIGHUP);
    let (at, status) = notify.ready(Duration::from_secs(120));
    assert!(status.contains("config reloaded"), "the reload was refused: {status}");
    ms(at - t)
}

/// (tunnels from OVN or the file, bindings) in `show`.
fn counts(d: &Daemon) -> (usize, usize) {
    let show = d.json(&["show"]);
    let tunnels = show["ports"].as_array().unwrap().iter().filter(|p| p["remote_ip"].is_string()).count();
    (tunnels, show["bindings"].as_array().unwrap().len())
}

#[derive(Debug, Default)]
pub struct Scale {
    pub chassis: usize,
    pub bindings: usize,
    /// ms from the loading transaction's commit to xgw's acknowledgement.
    pub load: Vec<f64>,
    /// The same entries from the config file: ms from SIGHUP to READY=1.
    pub load_config: Vec<f64>,
    pub unload: Vec<f64>,
    pub unload_config: Vec<f64>,
    /// The loading transaction itself (sent to committed).
    pub commit: Vec<f64>,
    /// A fresh monitor of Chassis, Encap, Datapath_Binding and
    /// Port_Binding: connect to complete replica.
    pub read: Vec<f64>,
    pub rss_empty_kib: f64,
    pub rss_kib: Vec<f64>,
    pub peak_kib: f64,
    pub rss_config_empty_kib: f64,
    pub rss_config_kib: Vec<f64>,
}

/// `runs` loads of `chassis` chassis and `bindings` bindings into a
/// Southbound without northd, each measured, then deleted; and the same
/// through xgw's config file on a second daemon, interleaved.
pub fn scale(chassis: usize, bindings: usize, runs: usize) -> Scale {
    assert!(bindings + 1 < 32768, "port keys run out");
    let sb = OvnCentral::start_southbound_only();
    let gw = gateway_ns();
    let d = chassis_daemon(&gw.ns, &LOCAL_IPS, &sb.sb_remote(), &[("lp-xgw", "p0")]);
    let watch = Watch::start(
        &sb.sb_remote(),
        "OVN_Southbound",
        &[("SB_Global", &["nb_cfg"]), ("Chassis_Private", &["name", "nb_cfg"])],
    );
    let timeout = Duration::from_secs(300);
    let xgw = sb.wait("xgw registered", Duration::from_secs(20), || {
        let u = sb.sb_find("chassis", "_uuid", &["name=xgw"]);
        (!u.is_empty()).then_some(u)
    });
    // ls1 and xgw's port on it, which it claims.
    let mut nb_cfg = watch.latest("SB_Global", None).expect("SB_Global");
    let (mac_ip, req) = (format!("{LOCAL_MAC} {LOCAL_IP}"), json!(["uuid", xgw.trim()]));
    transact_at(
        &sb.sb_remote(),
        vec![
            ops::insert_named(
                "Datapath_Binding",
                json!({"tunnel_key": 1, "external_ids": ["map", [["name", "ls1"]]]}),
                "dp",
            ),
            ops::insert(
                "Port_Binding",
                json!({"logical_port": "lp-xgw", "datapath": ops::named_uuid("dp"), "tunnel_key": 1,
                       "mac": mac_ip, "requested_chassis": req}),
            ),
            bump_nb_cfg(),
        ],
    );
    nb_cfg += 1;
    watch.reached("Chassis_Private", Some("xgw"), nb_cfg, timeout).expect("xgw's acknowledgement");
    sb.wait("lp-xgw claimed and up", Duration::from_secs(20), || {
        (sb.sb_find("port_binding", "up", &["logical_port=lp-xgw"]).trim() == "true").then_some(())
    });
    let dp = sb.sb_find("datapath_binding", "_uuid", &[]).trim().to_owned();

    // The config-file daemon, with the same local port.
    let gw_config = gateway_ns();
    let notify = Notify::new();
    let mut dc = Daemon::new(&gw_config.ns, "ul", &LOCAL_IPS);
    let cfg = dc.state.path.join("xgw.toml");
    std::fs::write(&cfg, config_file(chassis, bindings, false)).unwrap();
    dc.extra = vec!["--config".into(), cfg.display().to_string()];
    dc.env = vec![("NOTIFY_SOCKET".into(), notify.path.display().to_string())];
    dc.start();
    notify.ready(Duration::from_secs(20));

    // Settled: the daemons' resident memory with nothing loaded.
    std::thread::sleep(Duration::from_millis(500));
    let mut out = Scale {
        chassis,
        bindings,
        rss_empty_kib: rss_kib(&d) as f64,
        rss_config_empty_kib: rss_kib(&dc) as f64,
        ..Default::default()
    };
    for run in 0..runs {
        // OVN: one transaction, then xgw's acknowledgement of its nb_cfg.
        let txn = load_ops(&dp, chassis, bindings);
        let (committed, took) = transact_at(&sb.sb_remote(), txn);
        nb_cfg += 1;
        let acked = watch.reached("Chassis_Private", Some("xgw"), nb_cfg, timeout).expect("xgw's acknowledgement");
        out.load.push(ms(acked - committed));
        out.commit.push(ms(took));
        assert_eq!(counts(&d), (chassis, bindings), "run {run}: acknowledged before everything was in");
        out.rss_kib.push(rss_kib(&d) as f64);
        out.read.push(read_southbound(&sb.sb_remote(), chassis + 1, bindings + 1));
        let (committed, _) = transact_at(&sb.sb_remote(), unload_ops());
        nb_cfg += 1;
        let acked = watch.reached("Chassis_Private", Some("xgw"), nb_cfg, timeout).expect("xgw's acknowledgement");
        out.unload.push(ms(acked - committed));
        assert_eq!(counts(&d), (0, 0), "run {run}: acknowledged before everything was out");

        // The config file.
        out.load_config.push(reload(&dc, &notify, &config_file(chassis, bindings, true)));
        assert_eq!(counts(&dc), (chassis, bindings), "run {run}: the config file's entries");
        out.rss_config_kib.push(rss_kib(&dc) as f64);
        out.unload_config.push(reload(&dc, &notify, &config_file(chassis, bindings, false)));
        assert_eq!(counts(&dc), (0, 0), "run {run}: the config file's entries removed");
        eprintln!(
            "  run {run}: OVN {:.0} ms (commit {:.0} ms), config file {:.0} ms; removal {:.0} / {:.0} ms",
            out.load[run], out.commit[run], out.load_config[run], out.unload[run], out.unload_config[run]
        );
    }
    out.peak_kib = peak_kib(&d) as f64;
    out
}

/// `VmHWM`: the daemon's peak resident set.
fn peak_kib(d: &Daemon) -> u64 {
    let pid = d.process.as_ref().expect("daemon running").pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the daemon's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Milliseconds for a fresh monitor of the tables the plan reads most of
/// (Chassis, Encap, Datapath_Binding, Port_Binding, all columns) to hold
/// the whole Southbound: what any chassis pays to read it.
fn read_southbound(remote: &str, chassis: usize, bindings: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let spec = MonitorSpec::new()
        .table("Chassis", TableMonitor::all())
        .table("Encap", TableMonitor::all())
        .table("Datapath_Binding", TableMonitor::all())
        .table("Port_Binding", TableMonitor::all());
    let config = Config::new(remote.parse().unwrap(), "OVN_Southbound", spec);
    rt.block_on(async {
        let t = Instant::now();
        let (client, _events) = Client::connect(config).await.expect("monitor");
        let took = t.elapsed();
        let (c, p) = client.read(|r| (r.rows("Chassis").count(), r.rows("Port_Binding").count()));
        assert_eq!((c, p), (chassis, bindings), "the fresh monitor's replica");
        ms(took)
    })
}

// --- reconnect ----------------------------------------------------------------

/// Seconds since midnight UTC of a log line's leading timestamp:
/// `2026-01-02T03:04:05.123456Z` (xgw's tracing) or
/// `2026-01-02T03:04:05.123Z|...` (OVS's vlog).
fn line_time(line: &str) -> Option<f64> {
    let t = line.split_once('T')?.1;
    let end = t.find('Z')?;
    let mut parts = t[..end].split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

fn time_of_day() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() % 86400.0
}

/// Milliseconds from `t0` to `t`, both seconds since midnight.
fn since_tod(t0: f64, t: f64) -> f64 {
    (t - t0).rem_euclid(86400.0) * 1e3
}

#[derive(Debug, Default)]
pub struct Reconnect {
    /// ms from the SIGKILL of the member it was on (the leader) to
    /// monitoring resumed on another member.
    pub xgw: Vec<f64>,
    /// The same for ovn-controller: after its 1 s minimum backoff, or at
    /// once when it has a backoff-free try left.
    pub ovn_controller: Vec<f64>,
    /// ovn-controller's backoff-free reconnections, used up before the
    /// kills by dropping its connection (`ovsdb-server/reconnect` on its
    /// member): ms from that command started to its monitor resumed.
    pub ovn_controller_free: Vec<f64>,
    /// Moves of the leader onto the client's member before each kill (0:
    /// it was there).
    pub leader_moves: Vec<usize>,
}

/// The member (1..=3) a client's remote names.
fn member_of(ovn: &OvnCentral, remote: &str) -> Option<usize> {
    (1..=3).find(|&m| remote.ends_with(&ovn.sb_member_socket(m)))
}

/// The member ovn-controller last connected to, from its log
/// (`reconnect|INFO|unix:<sock>: connected`).
fn ovn_controller_member(ovn: &OvnCentral, log: &str) -> Option<usize> {
    log.lines()
        .rev()
        .filter(|l| l.contains("|reconnect|") && l.ends_with(": connected"))
        .find_map(|l| (1..=3).find(|&m| l.contains(&format!("{}: connected", ovn.sb_member_socket(m)))))
}

/// How many times ovn-controller lost its Southbound connection, from
/// its log.
fn ovn_controller_losses(ovn: &OvnCentral, log: &str) -> usize {
    log.lines()
        .filter(|l| {
            l.contains("|reconnect|") && (l.contains(": connection closed") || l.contains(": connection dropped"))
        })
        .filter(|l| (1..=3).any(|m| l.contains(&ovn.sb_member_socket(m))))
        .count()
}

/// When, in `log` after byte `from`, ovn-controller's monitor was resumed
/// (`monitor_cond_since` answered with found=true) by one of `members`:
/// seconds since midnight, in the middle of the millisecond vlog stamps.
fn ovn_controller_resumed(log: &str, from: usize, members: &[String]) -> Option<f64> {
    let line = log[from..].lines().find(|l| {
        l.contains("|jsonrpc|")
            && l.contains("received reply, result=[true,")
            && members.iter().any(|s| l.contains(s.as_str()))
    })?;
    line_time(line).map(|t| t + 0.0005)
}

/// Whether every member has the leader's whole log (`match_index` of all
/// three equal in the leader's `cluster/status`): a leadership transfer
/// goes only to a member that does.
fn caught_up(ovn: &OvnCentral) -> bool {
    let Some(leader) = ovn.sb_leader() else { return false };
    let Ok(status) = ovn.sb_appctl(leader, &["cluster/status", "OVN_Southbound"]) else { return false };
    let matched: Vec<&str> =
        status.lines().filter_map(|l| l.split("match_index=").nth(1)?.split_whitespace().next()).collect();
    matched.len() == 3 && matched.iter().all(|m| *m == matched[0])
}

/// `trials` SIGKILLs of the raft leader, each placed on the member one
/// client is on: xgw for even trials, hv1's and hv2's ovn-controller in
/// turn for odd ones. Every client on the killed member is measured: from
/// the SIGKILL to its monitor resumed elsewhere (`monitor_cond_since`
/// answered with found=true), read from each client's own log.
///
/// Both clients wait before reconnecting after some losses, and the
/// bench puts each in the state a long-running one is in:
/// - xgw's client retries a connection that lived less than 1 s after a
///   backoff (100 ms): no connection is killed younger than 2 s;
/// - ovn-controller (OVS lib/reconnect.c) reconnects without a backoff
///   only for its first n - 1 losses (n remotes, here 2; its ovsdb-cs
///   hands free tries back when it forces a reconnection itself,
///   `jsonrpc_session_reset_backoff`), and otherwise waits min_backoff
///   (1 s), doubled up to 8 s for each loss of a connection that had no
///   traffic at least one backoff after it was made. Its first free
///   reconnections are used up before the kills (its connection dropped
///   by `ovsdb-server/reconnect`, measured apart), and every client gets
///   an update (an SB_Global option) 1.2 s after the last one moved, as a
///   Southbound in use gives them, so its backoff stays 1 s.
pub fn reconnect(trials: usize) -> Reconnect {
    let ovn = OvnCentral::start_raft();
    let topo = lab::topology(&ovn);
    ovn.nbctl(&["lsp-set-options", "vm3", "requested-chassis=xgw"]);
    let d = chassis_daemon(&topo.xgw, &[XGW_IP], &ovn.sb_remote(), &[("vm3", "p3")]);
    ovn.nbctl(&["--wait=hv", "--timeout=60", "sync"]);
    // ovn-controller logs the replies it receives at debug level only.
    for h in &topo.hv {
        h.ovn_appctl(&["vlog/set", "jsonrpc:file:dbg"]);
    }
    let xgw_member = || {
        let show = d.json(&["show"]);
        let ovn_view = &show["ovn"];
        (ovn_view["connected"] == true).then(|| member_of(&ovn, ovn_view["remote"].as_str()?)).flatten()
    };
    // Every client connected (xgw monitoring, each ovn-controller
    // connected), all three members in the cluster with one leader: the
    // members xgw and each ovn-controller are on.
    let settled = || {
        ovn.wait("every client on a member, every member in the cluster", Duration::from_secs(60), || {
            let x = xgw_member()?;
            let hv: Vec<usize> = topo
                .hv
                .iter()
                .map(|h| {
                    let connected = h.ovn_appctl(&["connection-status"]).trim() == "connected";
                    connected.then(|| ovn_controller_member(&ovn, &h.ovn_log())).flatten()
                })
                .collect::<Option<_>>()?;
            let roles_ok = (1..=3).all(|m| matches!(ovn.sb_role(m).as_deref(), Some("leader" | "follower")));
            (roles_ok && caught_up(&ovn)).then_some((x, hv))
        })
    };
    let mut out = Reconnect::default();

    // ovn-controller's backoff-free reconnections, used up.
    let free = 3 - 1;
    loop {
        let (_, hv_members) = settled();
        let Some(i) = topo.hv.iter().position(|h| ovn_controller_losses(&ovn, &h.ovn_log()) < free) else { break };
        let member = hv_members[i];
        let from = topo.hv[i].ovn_log().len();
        let t0 = time_of_day();
        ovn.sb_appctl(member, &["ovsdb-server/reconnect"]).expect("ovsdb-server/reconnect");
        let others: Vec<String> = (1..=3).filter(|&m| m != member).map(|m| ovn.sb_member_socket(m)).collect();
        let all: Vec<String> = (1..=3).map(|m| ovn.sb_member_socket(m)).collect();
        let t = ovn.wait("ovn-controller resumed", Duration::from_secs(30), || {
            ovn_controller_resumed(&topo.hv[i].ovn_log(), from, &all)
        });
        // Measured only when it moved, as after a kill.
        if ovn_controller_resumed(&topo.hv[i].ovn_log(), from, &others).is_some() {
            out.ovn_controller_free.push(since_tod(t0, t));
        }
    }

    let mut touches = 0;
    for trial in 0..trials {
        let (x_member, hv_members) = settled();
        let mut moved = Instant::now();
        let target = if trial % 2 == 0 { x_member } else { hv_members[(trial / 2) % 2] };
        // The leader moved onto that member. A leadership transfer is
        // cheap, but OVS 3.1 always sends it to the same member (here 1
        // and 3 hand it to each other): first one transfer, then the
        // leader killed with the third member's elections delayed
        // (`cluster/failure-test delay-election`), so that the target wins.
        let mut attempts = 0;
        loop {
            let leader = ovn.wait("a leader", Duration::from_secs(30), || ovn.sb_leader());
            if leader == target {
                break;
            }
            attempts += 1;
            assert!(attempts <= 6, "the leader never moved to member {target}");
            ovn.wait("every member caught up", Duration::from_secs(30), || caught_up(&ovn).then_some(()));
            if attempts == 1 {
                ovn.sb_appctl(leader, &["cluster/failure-test", "transfer-leadership"]).expect("transfer-leadership");
                ovn.wait("the leadership moved", Duration::from_secs(30), || {
                    ovn.sb_leader().filter(|&l| l != leader).map(|_| ())
                });
                continue;
            }
            let third = (1..=3).find(|&m| m != leader && m != target).unwrap();
            ovn.sb_appctl(third, &["cluster/failure-test", "delay-election"]).expect("delay-election");
            // Its election timer is reset (delayed) at the next heartbeat.
            std::thread::sleep(Duration::from_millis(300));
            ovn.kill_sb_member(leader);
            ovn.wait("a new leader", Duration::from_secs(30), || ovn.sb_leader());
            ovn.sb_appctl(third, &["cluster/failure-test", "clear"]).expect("clear the failure test");
            ovn.start_sb_member(leader);
            // The clients that were on it are elsewhere now.
            settled();
            moved = Instant::now();
        }
        out.leader_moves.push(attempts);
        // Traffic on every connection 1.2 s after the last move, then the
        // kill at 2 s.
        std::thread::sleep(Duration::from_millis(1200).saturating_sub(moved.elapsed()));
        let logs: Vec<usize> = topo.hv.iter().map(|h| h.ovn_log().len()).collect();
        touches += 1;
        let touch = json!(["map", [["xgw-bench", touches.to_string()]]]);
        ovn.sb_transactions([vec![ops::update("SB_Global", vec![], json!({ "options": touch }))]]);
        ovn.wait("the update at every ovn-controller", Duration::from_secs(10), || {
            topo.hv
                .iter()
                .zip(&logs)
                .all(|(h, &from)| h.ovn_log()[from..].contains("received notification, method=\"update3\""))
                .then_some(())
        });
        std::thread::sleep(Duration::from_secs(2).saturating_sub(moved.elapsed()));

        // Who is on it (placing the leader moved no client onto it).
        let x_on = xgw_member() == Some(target);
        let hv_on: Vec<bool> =
            topo.hv.iter().map(|h| ovn_controller_member(&ovn, &h.ovn_log()) == Some(target)).collect();
        let before = d.json(&["show"])["ovn"].clone();
        let x_log = d.process.as_ref().unwrap().stderr_so_far().len();
        let hv_log: Vec<usize> = topo.hv.iter().map(|h| h.ovn_log().len()).collect();

        let t0 = time_of_day();
        ovn.kill_sb_member(target);

        let others: Vec<String> = (1..=3).filter(|&m| m != target).map(|m| ovn.sb_member_socket(m)).collect();
        if x_on {
            let t = ovn.wait("xgw resumed", Duration::from_secs(30), || {
                let err = d.process.as_ref().unwrap().stderr_so_far();
                let line = err[x_log..]
                    .lines()
                    .find(|l| l.contains("ovn: Southbound connected") && l.contains("resumed=true"))?;
                line_time(line)
            });
            let show = ovn.wait("xgw showing it", Duration::from_secs(10), || {
                let s = d.json(&["show"])["ovn"].clone();
                (s["connected"] == true && s["resumes"].as_u64() > before["resumes"].as_u64()).then_some(s)
            });
            assert_eq!(show["full_resyncs"], before["full_resyncs"], "xgw reloaded instead of resuming: {show}");
            out.xgw.push(since_tod(t0, t));
        }
        let mut hv_ms = Vec::new();
        for (i, h) in topo.hv.iter().enumerate().filter(|(i, _)| hv_on[*i]) {
            let t = ovn.wait("ovn-controller resumed", Duration::from_secs(30), || {
                ovn_controller_resumed(&h.ovn_log(), hv_log[i], &others)
            });
            hv_ms.push(format!("hv{} {:.1} ms", i + 1, since_tod(t0, t)));
            out.ovn_controller.push(since_tod(t0, t));
        }
        eprintln!(
            "  kill {trial}: member {target} (the leader after {attempts} moves): xgw {}, ovn-controller {}",
            if x_on { format!("{:.1} ms", out.xgw.last().unwrap()) } else { "elsewhere".into() },
            if hv_ms.is_empty() { "elsewhere".into() } else { hv_ms.join(", ") }
        );
        ovn.start_sb_member(target);
    }
    for h in &topo.hv {
        h.ovn_appctl(&["vlog/set", "jsonrpc:file:info"]);
    }
    out
}
