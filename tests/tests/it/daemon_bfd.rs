//! BFD as an operator runs it: real `xgw run` daemons in their own
//! namespaces, tunnels added with `--bfd` through the CLI, state read with
//! `xgw bfd show --json` and checked against the session array in the
//! kernel (the map the XDP receive path writes), the metrics and `show`.
//!
//!   gateway A (xgw run) [ul] ---- [ul] gateway B (xgw run)
//!   gateway (xgw run)   [ul] ---- [ul0] Open vSwitch br-phy / br-int gnv0
use std::time::{Duration, Instant};

use aya::maps::{Array, Map, MapData};
use serde_json::Value;
use xgw_common::{
    bfd::State,
    maps::{BfdSession, BFD_SLOT_MASK},
};
use xgw_tests::{
    daemon::{scrape, Daemon},
    ovs::mac_str,
    require_root, Geneve, Netns, OvsHypervisor, Veth,
};

const VNI: &str = "5001";
const IP: [&str; 2] = ["198.51.100.1", "198.51.100.2"];
const DETECT_EXPIRED: &str = "Control Detection Time Expired";

/// `xgw bfd show NAME --json`: the one session, as one object.
fn session(d: &Daemon, name: &str) -> Value {
    let v = d.json(&["bfd", "show", name]);
    assert!(v.is_object() && v["name"] == name, "bfd show NAME --json is that session's object: {v}");
    v
}

/// Polls `bfd show` until `done`; returns the session and how long it took.
fn wait(d: &Daemon, name: &str, what: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> (Value, Duration) {
    let start = Instant::now();
    loop {
        let s = session(d, name);
        if done(&s) {
            return (s, start.elapsed());
        }
        assert!(start.elapsed() < timeout, "{name} on {}: not {what} after {timeout:?}: {s}", d.netns);
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn up(s: &Value) -> bool {
    s["local_state"] == "up" && s["remote_state"] == "up" && s["forwarding"] == true
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// What `bfd show` says equals the kernel's half of the session: the slot
/// named by the local discriminator's low bits, as XDP last wrote it.
fn matches_the_session_map(d: &Daemon, s: &Value) {
    let map: Array<MapData, BfdSession> = Array::try_from(Map::from_map_data(d.held_map("BFD_SESSIONS")).unwrap())
        .expect("BFD_SESSIONS is an array of BfdSession");
    let disc = num(&s["local_discriminator"]) as u32;
    let m = map.get(&(disc & BFD_SLOT_MASK), 0).expect("the session's slot");
    assert_eq!(m.ctl_local_disc, disc, "{s}");
    assert_eq!((m.state, m.remote_state), (State::Up as u8, State::Up as u8), "{m:?}");
    assert_eq!(u64::from(m.remote_disc), num(&s["remote_discriminator"]), "{m:?} {s}");
    assert_eq!(u64::from(m.remote_mult), num(&s["remote_detect_mult"]));
    // Whole milliseconds, as Open vSwitch keeps them.
    assert_eq!(u64::from(m.remote_min_tx) / 1000, num(&s["remote_min_tx_ms"]), "{m:?} {s}");
    assert_eq!(u64::from(m.remote_min_rx) / 1000, num(&s["remote_min_rx_ms"]), "{m:?} {s}");
    // The map is read after `bfd show`; packets keep arriving.
    assert!(m.rx_packets >= num(&s["rx_packets"]) && m.rx_packets > 0, "{m:?} {s}");
}

/// Two gateways back to back, each with a tunnel to the other.
struct Pair {
    // Daemons go before their namespaces.
    a: Daemon,
    b: Daemon,
    na: Netns,
    nb: Netns,
}

fn pair() -> Pair {
    let na = Netns::new("bfa");
    let nb = Netns::new("bfb");
    Veth::new(&na, "ul", &format!("{}/24", IP[0]), &nb, "ul", &format!("{}/24", IP[1]));
    let mut a = Daemon::new(&na, "ul", &[IP[0]]);
    a.extra = vec!["--metrics".into(), "127.0.0.1:9477".into()];
    a.start();
    let mut b = Daemon::new(&nb, "ul", &[IP[1]]);
    b.start();
    Pair { a, b, na, nb }
}

/// `tunnel add` with BFD at `ms` x `mult`.
fn tunnel(d: &Daemon, remote: &str, ms: u32, mult: u8) -> Value {
    let (ms, mult) = (ms.to_string(), mult.to_string());
    d.json(&[
        "tunnel",
        "add",
        "gw",
        "--remote-ip",
        remote,
        "--vni",
        VNI,
        "--bfd",
        "--bfd-min-tx-ms",
        &ms,
        "--bfd-min-rx-ms",
        &ms,
        "--bfd-detect-mult",
        &mult,
    ])
}

/// `tunnel set`: the running tunnel's BFD at `ms` x `mult`.
fn retime(d: &Daemon, ms: u32, mult: u8) -> Value {
    let (ms, mult) = (ms.to_string(), mult.to_string());
    d.json(&["tunnel", "set", "gw", "--bfd-min-tx-ms", &ms, "--bfd-min-rx-ms", &ms, "--bfd-detect-mult", &mult])
}

#[test]
fn two_daemons_bring_bfd_up_detect_a_cut_within_the_detect_time_and_recover() {
    require_root!();
    let t = pair();
    let t0 = Instant::now();
    tunnel(&t.a, IP[1], 100, 3);
    tunnel(&t.b, IP[0], 100, 3);
    let (_, took) = wait(&t.a, "gw", "up", Duration::from_secs(10), up);
    wait(&t.b, "gw", "up", Duration::from_secs(5), up);
    eprintln!("Up on both {:?} after the tunnels were added (A: {took:?})", t0.elapsed());
    // Up begins with each side's Poll Sequence to its faster interval
    // (`poll` in OVS's flags), which the other's Final ends.
    let settled = |s: &Value| up(s) && s["local_flags"] == "none" && s["remote_flags"] == "none";
    let (sa, _) = wait(&t.a, "gw", "done polling", Duration::from_secs(3), settled);
    let (sb, _) = wait(&t.b, "gw", "done polling", Duration::from_secs(3), settled);
    for s in [&sa, &sb] {
        assert_eq!(
            (s["type"].as_str(), s["ofport"].as_u64(), s["vni"].as_u64()),
            (Some("tunnel"), Some(1), Some(5001)),
            "{s}"
        );
        assert_eq!((s["tx_interval_ms"].as_u64(), s["detect_interval_ms"].as_u64()), (Some(100), Some(300)), "{s}");
        // Detection runs: its deadline lies within the detect interval.
        let deadline = s["detect_time_ms"].as_i64().unwrap_or_else(|| panic!("detect_time_ms: {s}"));
        assert!((-50..=300).contains(&deadline), "{s}");
        assert!((-200..=100).contains(&s["next_tx_time_ms"].as_i64().unwrap()), "{s}");
        assert!((-200..=0).contains(&s["last_tx_time_ms"].as_i64().unwrap()), "{s}");
        assert_eq!(
            (s["detect_mult"].as_u64(), s["local_min_tx_ms"].as_u64(), s["local_min_rx_ms"].as_u64()),
            (Some(3), Some(100), Some(100))
        );
        // Open vSwitch's flap count: every change of forwarding, the first Up included.
        assert_eq!((s["local_diagnostic"].as_str(), s["flap_count"].as_u64()), (Some("No Diagnostic"), Some(1)), "{s}");
    }
    // Each side knows the other's discriminator, and the kernel agrees.
    assert_eq!(sa["remote_discriminator"], sb["local_discriminator"]);
    assert_eq!(sb["remote_discriminator"], sa["local_discriminator"]);
    matches_the_session_map(&t.a, &sa);
    matches_the_session_map(&t.b, &sb);
    // The frames follow the next hop once it resolves: the other gateway's
    // uplink (XDP takes a frame whatever its destination MAC, so the
    // session may come up before).
    let b_mac = t.nb.ok(&["cat", "/sys/class/net/ul/address"]).trim().to_owned();
    wait(&t.a, "gw", "following the next hop", Duration::from_secs(5), |s| s["nexthop_mac"] == b_mac.as_str());

    // show, the human view and the metrics carry the same session.
    let show = t.a.json(&["show"]);
    let port = show["ports"].as_array().unwrap().iter().find(|p| p["name"] == "gw").cloned().unwrap();
    assert_eq!((port["bfd"]["state"].as_str(), port["bfd"]["flap_count"].as_u64()), (Some("up"), Some(1)), "{port}");
    let human = t.a.cli(&["bfd", "show"]);
    for line in [
        "---- gw ----",
        "  Forwarding: true",
        "  Detect Multiplier: 3",
        "  Local Session State: up",
        "  Remote Session State: up",
    ] {
        assert!(human.contains(line), "{line:?} missing from:\n{human}");
    }
    assert!(human.contains(&format!("  Local Discriminator: 0x{:x}\n", num(&sa["local_discriminator"]))), "{human}");
    let m = scrape(&t.na.name, "127.0.0.1:9477");
    assert_eq!(m["xgw_bfd_state{session=\"gw\",type=\"tunnel\",state=\"up\"}"], 1.0);
    assert_eq!(m["xgw_bfd_state{session=\"gw\",type=\"tunnel\",state=\"down\"}"], 0.0);
    assert_eq!(m["xgw_bfd_flaps_total{session=\"gw\",type=\"tunnel\"}"], 1.0);
    assert!(m["xgw_bfd_rx_packets_total"] >= sa["rx_packets"].as_f64().unwrap(), "{m:?}");
    assert_eq!(m["xgw_bfd_drops_total{reason=\"unknown_session\"}"], 0.0);

    // Faster timers on a running session: a Poll Sequence, no flap.
    retime(&t.a, 30, 3);
    retime(&t.b, 30, 3);
    let fast = |s: &Value| up(s) && s["tx_interval_ms"] == 30 && s["detect_interval_ms"] == 90;
    let (sa, took) = wait(&t.a, "gw", "at 3 x 30 ms", Duration::from_secs(5), fast);
    let (sb, _) = wait(&t.b, "gw", "at 3 x 30 ms", Duration::from_secs(5), fast);
    eprintln!("3 x 30 ms negotiated in {took:?}");
    assert_eq!((sa["flap_count"].as_u64(), sb["flap_count"].as_u64()), (Some(1), Some(1)));
    matches_the_session_map(&t.a, &sa);
    let show = t.a.json(&["show"]);
    let port = show["ports"].as_array().unwrap().iter().find(|p| p["name"] == "gw").cloned().unwrap();
    assert_eq!((port["bfd"]["min_tx_ms"].as_u64(), port["bfd"]["detect_mult"].as_u64()), (Some(30), Some(3)), "{port}");

    // Cut the underlay: both sides Down by detection (diagnostic 1).
    let cut = Instant::now();
    t.na.ok(&["ip", "link", "set", "ul", "down"]);
    let down = |s: &Value| s["local_state"] == "down";
    let (da, a_took) = wait(&t.a, "gw", "down", Duration::from_secs(3), down);
    let (db, _) = wait(&t.b, "gw", "down", Duration::from_secs(3), down);
    let b_took = cut.elapsed();
    eprintln!("after the cut (detect time 90 ms): A Down seen {a_took:?} after, B by {b_took:?}");
    assert_eq!(da["local_diagnostic"], DETECT_EXPIRED, "{da}");
    assert_eq!(db["local_diagnostic"], DETECT_EXPIRED, "{db}");
    // The last packet came at most one interval before the cut; a CLI round
    // trip (`ip netns exec xgw ...`) adds some tens of ms to what is seen.
    assert!(a_took <= Duration::from_millis(90 + 150), "A took {a_took:?}");
    assert_eq!((da["flap_count"].as_u64(), db["flap_count"].as_u64()), (Some(2), Some(2)));

    // Restore: Up again on both sides.
    t.na.ok(&["ip", "link", "set", "ul", "up"]);
    let (sa, took) = wait(&t.a, "gw", "up again", Duration::from_secs(10), up);
    let (sb, _) = wait(&t.b, "gw", "up again", Duration::from_secs(5), up);
    eprintln!("Up again {took:?} after the link came back");
    assert_eq!((sa["flap_count"].as_u64(), sb["flap_count"].as_u64()), (Some(3), Some(3)));
    assert_eq!(sa["remote_discriminator"], sb["local_discriminator"]);
    matches_the_session_map(&t.b, &sb);
    let m = scrape(&t.na.name, "127.0.0.1:9477");
    assert_eq!(m["xgw_bfd_flaps_total{session=\"gw\",type=\"tunnel\"}"], 3.0);

    // Deleting the tunnel ends the session.
    t.a.json(&["tunnel", "del", "gw"]);
    assert_eq!(t.a.json(&["bfd", "show"]), Value::Array(vec![]));
    let err = t.a.refused(&["bfd", "show", "gw"]);
    assert!(err.contains("no bfd session named \"gw\""), "{err}");
}

#[test]
fn a_daemon_and_open_vswitch_both_report_bfd_up() {
    require_root!();
    const HV_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0, 2];
    let gw = Netns::new("bfg");
    let hv = Netns::new("bfo");
    Veth::new(&gw, "ul", &format!("{}/24", IP[0]), &hv, "ul0", "");
    let ovs = OvsHypervisor::builder(hv, "ul0").ip4(&format!("{}/24", IP[1])).underlay_mac(HV_MAC).start();
    ovs.add_geneve("gnv0", &Geneve::new(IP[0], 5001).bfd(100, 100, 3));
    let mut d = Daemon::new(&gw, "ul", &[IP[0]]);
    d.start();
    // Added before its next hop is known: the session's frames must follow
    // once it resolves, or OVS never hears from us.
    d.json(&[
        "tunnel",
        "add",
        "gnv0",
        "--remote-ip",
        IP[1],
        "--vni",
        VNI,
        "--bfd",
        "--bfd-min-tx-ms",
        "100",
        "--bfd-min-rx-ms",
        "100",
    ]);

    ovs.wait_bfd_state("gnv0", "up", Duration::from_secs(15));
    let (s, _) = wait(&d, "gnv0", "up", Duration::from_secs(5), up);
    assert_eq!(s["nexthop_mac"], mac_str(HV_MAC).as_str());
    // The database column OVS users read (written lazily).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = ovs.bfd_status("gnv0");
        if st.get("state").map(String::as_str) == Some("up") && st.get("remote_state").map(String::as_str) == Some("up")
        {
            break;
        }
        assert!(Instant::now() < deadline, "bfd_status: {st:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Each side names the other's discriminator.
    let show = ovs.bfd_show(Some("gnv0"));
    let field = |key: &str| {
        show.lines().find_map(|l| l.trim().strip_prefix(key)).map(|v| v.trim().to_owned()).unwrap_or_default()
    };
    assert_eq!(field("Remote Discriminator:"), format!("0x{:x}", num(&s["local_discriminator"])), "{show}");
    assert_eq!(field("Local Discriminator:"), format!("0x{:x}", num(&s["remote_discriminator"])), "{show}");
    assert_eq!((s["tx_interval_ms"].as_u64(), s["detect_interval_ms"].as_u64()), (Some(100), Some(300)), "{s}");
    matches_the_session_map(&d, &s);
    let show = d.json(&["show"]);
    assert_eq!(show["ports"][0]["bfd"]["state"], "up", "{show}");
}

#[test]
fn single_hop_peers_from_the_api_and_the_config_file() {
    require_root!();
    let na = Netns::new("bsa");
    let nb = Netns::new("bsb");
    Veth::new(&na, "ul", &format!("{}/24", IP[0]), &nb, "ul", &format!("{}/24", IP[1]));
    let mut a = Daemon::new(&na, "ul", &[IP[0]]);
    a.start();
    // B's peer comes from its config file.
    let mut b = Daemon::new(&nb, "ul", &[IP[1]]);
    let config = b.state.path.join("xgw.toml");
    let file = |ms: u32| {
        format!("[[bfd_peers]]\nname = \"tor\"\npeer_ip = \"{}\"\nmin_tx_ms = {ms}\nmin_rx_ms = {ms}\n", IP[0])
    };
    std::fs::write(&config, file(50)).unwrap();
    b.extra = vec!["--config".into(), config.display().to_string()];
    b.start();
    let p = a.json(&["bfd", "peer", "add", "tor", "--peer-ip", IP[1], "--min-tx-ms", "50", "--min-rx-ms", "50"]);
    assert_eq!(
        (p["ifname"].as_str(), p["local_ip"].as_str(), p["from_config"].as_bool()),
        (Some("ul"), Some(IP[0]), Some(false)),
        "{p}"
    );

    let (sa, took) = wait(&a, "tor", "up", Duration::from_secs(10), up);
    let (sb, _) = wait(&b, "tor", "up", Duration::from_secs(5), up);
    eprintln!("single-hop Up in {took:?}");
    assert_eq!(
        (sa["type"].as_str(), sa["ifname"].as_str(), sa["remote_ip"].as_str()),
        (Some("peer"), Some("ul"), Some(IP[1])),
        "{sa}"
    );
    assert_eq!((sa["tx_interval_ms"].as_u64(), sa["detect_interval_ms"].as_u64()), (Some(50), Some(150)), "{sa}");
    assert_eq!(sa["remote_discriminator"], sb["local_discriminator"]);
    matches_the_session_map(&a, &sa);
    matches_the_session_map(&b, &sb);
    let list = b.json(&["bfd", "peer", "list"]);
    assert_eq!(
        (list[0]["name"].as_str(), list[0]["from_config"].as_bool(), list[0]["state"].as_str()),
        (Some("tor"), Some(true), Some("up")),
        "{list}"
    );

    // Bad input: one line naming the field, no session or tunnel more.
    let sessions = |d: &Daemon| -> Vec<String> {
        d.json(&["bfd", "show"]).as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect()
    };
    let cases: &[(&[&str], &str)] = &[
        (&["bfd", "peer", "add", "r6", "--peer-ip", "2001:db8::1"], "peer_ip: 2001:db8::1"),
        (&["bfd", "peer", "add", "tor", "--peer-ip", "198.51.100.9"], "\"tor\" already exists"),
        (&["bfd", "peer", "add", "r2", "--peer-ip", "198.51.100.9", "--min-tx-ms", "0"], "min_tx_ms: 0"),
        (&["bfd", "peer", "add", "r2", "--peer-ip", "198.51.100.9", "--ifname", "nope0"], "\"nope0\""),
        (
            &["tunnel", "add", "t9", "--remote-ip", "198.51.100.9", "--vni", "7", "--bfd", "--bfd-detect-mult", "0"],
            "bfd_detect_mult: 0",
        ),
        (&["tunnel", "add", "t9", "--remote-ip", "2001:db8::9", "--vni", "7", "--bfd"], "no --local-ip"),
        (&["tunnel", "add", "tor", "--remote-ip", "198.51.100.9", "--vni", "7", "--bfd"], "\"tor\""),
        (&["bfd", "peer", "del", "nope"], "\"nope\""),
        (&["bfd", "show", "nope"], "\"nope\""),
    ];
    for (args, names) in cases {
        let err = a.refused(args);
        assert!(err.contains(names), "xgw {args:?}: {err:?} does not name {names:?}");
    }
    assert_eq!(sessions(&a), ["tor"]);
    assert_eq!(a.json(&["tunnel", "list"]), Value::Array(vec![]));

    // The file changes the timers; SIGHUP applies them to the running session.
    std::fs::write(&config, file(20)).unwrap();
    b.process.as_ref().unwrap().signal(nix::sys::signal::Signal::SIGHUP);
    let (sb, _) = wait(&b, "tor", "at min_tx 20 ms", Duration::from_secs(5), |s| up(s) && s["local_min_tx_ms"] == 20);
    assert_eq!(sb["flap_count"], 1, "{sb}");

    // A restarted daemon runs its stored peer again.
    a.kill9();
    a.start();
    let (sa, took) = wait(&a, "tor", "up after a restart", Duration::from_secs(10), up);
    eprintln!("single-hop Up again {took:?} after the restart");
    assert_eq!(sa["local_min_tx_ms"], 50);

    // Deleting the peer stops its packets: B declares the session Down.
    a.json(&["bfd", "peer", "del", "tor"]);
    assert!(sessions(&a).is_empty());
    let (sb, _) = wait(&b, "tor", "down", Duration::from_secs(3), |s| s["local_state"] == "down");
    assert_eq!(sb["local_diagnostic"], DETECT_EXPIRED, "{sb}");
}

/// Issue 6's hitless restart, BFD included: a SIGKILLed daemon's sessions
/// stay in the pinned maps (the kernel keeps answering the peer while no
/// controller transmits), and the next daemon adopts them: same
/// discriminators, still Up, and no flap on either side.
#[test]
fn a_sigkilled_daemon_adopts_its_bfd_sessions_without_a_flap() {
    require_root!();
    let mut t = pair();
    tunnel(&t.a, IP[1], 100, 3);
    tunnel(&t.b, IP[0], 100, 3);
    let (sa, _) = wait(&t.a, "gw", "up", Duration::from_secs(10), up);
    let (sb, _) = wait(&t.b, "gw", "up", Duration::from_secs(5), up);
    for round in 0..3 {
        t.a.kill9();
        // Longer than B's detect time (300 ms): without the kernel's
        // answers B would declare the session down.
        std::thread::sleep(Duration::from_millis(500));
        t.a.start();
        let (now_a, took) = wait(&t.a, "gw", "up", Duration::from_secs(5), up);
        let now_b = session(&t.b, "gw");
        eprintln!("round {round}: restarted daemon reports Up {took:?} after start");
        assert_eq!(now_a["local_discriminator"], sa["local_discriminator"], "A's session was not adopted: {now_a}");
        assert_eq!(now_b["remote_discriminator"], sa["local_discriminator"], "{now_b}");
        assert_eq!(num(&now_b["flap_count"]), num(&sb["flap_count"]), "B saw a flap across A's restart: {now_b}");
        // The history comes along (kept beside the session in the pinned
        // map): the same flap count, Up since before the kill, and no
        // state change in the new daemon's log.
        assert_eq!(num(&now_a["flap_count"]), num(&sa["flap_count"]), "A's adopted session flapped: {now_a}");
        let up_for = now_a["last_change_ms"].as_u64().expect("last_change_ms");
        assert!(up_for >= 500 * (round + 1), "Up for {up_for} ms only: the change was reset on adoption");
        let log = t.a.process.as_ref().unwrap().stderr_so_far();
        assert!(!log.contains("bfd session state changed"), "adoption logged a change:\n{log}");
        assert!(up(&now_b), "{now_b}");
    }
}
