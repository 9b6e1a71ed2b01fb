//! `cargo xtask bench`, BFD half. Writes bench/results/bfd[-quick].md and
//! .json, and the detection-time histogram bfd-detect[-quick].svg.
//!
//! - detection time after a link cut at 3 x 10 ms: two xgw over Geneve, and
//!   xgw against FRR bfdd (single-hop, echo on) where bfdd's own detection of
//!   the same cut is the baseline. The cut is one SIOCSIFFLAGS in-process
//!   (timestamped around the call); xgw's Down is seen by polling its status
//!   every 100 us, bfdd's is read from its log (microsecond timestamps).
//!   The expected value is between 2 and 3 intervals: the last packet came
//!   0-1 interval before the cut.
//! - sessions sustained at 3 x 10 ms between two xgw on this machine's cores:
//!   N grows until a flap, a bring-up that does not complete, or an engine
//!   thread above 90 % of a core; the engines' CPU is their threads' time.
//!   The same ramp for two FRR bfdd (the baseline): IPv6 single-hop
//!   sessions on one veth, bfdd's CPU from /proc/<pid>/stat.
//! - flaps in 30 s under one ordinary-priority busy loop per core, two xgw
//!   and two FRR bfdd (both at 3 x 10 ms, control packets only) in the same
//!   run, under the same hogs.
use std::{
    fmt::Write as _,
    fs,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use xgw::bfd::{Config, Engine, Options, Path, Status, Uplink};
use xgw_bench::machine;
use xgw_common::maps::{self, UPLINK_HAS_IP4};
use xgw_tests::{
    frr::{Frr, FrrBfd},
    gateway::TestGateway,
    Netns, Process, Veth,
};

const FAST: Config = Config { min_tx_ms: 10, min_rx_ms: 10, mult: 3, echo: false };
/// OVN's defaults (`SB_Global options:bfd-min-tx` 100 ms, `bfd-min-rx`
/// 1000 ms, `bfd-mult` 3), what every HA chassis pair runs.
const OVN: Config = Config { min_tx_ms: 100, min_rx_ms: 1000, mult: 3, echo: false };

struct Gw {
    engine: Engine,
    _dp: TestGateway,
}

fn xgw(ns: &Netns, mac: [u8; 6], ip: [u8; 4], extra_programs: &[(&Netns, &str)]) -> Gw {
    ns.ok(&["ip", "link", "set", "ul", "address", &xgw_tests::ovs::mac_str(mac)]);
    let mut dp = TestGateway::load(&["xgw_uplink", "xgw_pass"]);
    dp.set_uplink(maps::Uplink {
        ifindex: ns.ifindex("ul"),
        mtu: 1500,
        mac,
        flags: UPLINK_HAS_IP4,
        _pad: 0,
        ip4: ip,
        ip6: [0; 16],
    });
    dp.attach(ns, "xgw_uplink", "ul");
    for (other, ifname) in extra_programs {
        dp.attach(other, "xgw_pass", ifname);
    }
    let engine = ns
        .enter(|| Engine::start(&mut dp.ebpf, Uplink { ifname: "ul".into(), mac }, Options::default()))
        .expect("engine");
    Gw { engine, _dp: dp }
}

fn geneve(vni: u32, local: [u8; 4], remote: [u8; 4], nexthop_mac: [u8; 6]) -> Path {
    Path::Geneve { ofport: 10, remote_ip: IpAddr::from(remote), local_ip: IpAddr::from(local), vni, nexthop_mac }
}

impl Gw {
    fn status(&self, name: &str) -> Status {
        self.engine.status(Some(name)).pop().expect("session")
    }
}

const MAC_A: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0, 1];
const MAC_B: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0, 2];
const IP_A: [u8; 4] = [198, 51, 100, 1];
const IP_B: [u8; 4] = [198, 51, 100, 2];

/// Two xgw back to back over a veth pair, no sessions yet.
fn xgw_pair() -> (Gw, Gw, Netns, Netns) {
    let a = Netns::new("bfa");
    let b = Netns::new("bfb");
    Veth::new(&a, "ul", "198.51.100.1/24", &b, "ul", "198.51.100.2/24");
    let ga = xgw(&a, MAC_A, IP_A, &[]);
    let gb = xgw(&b, MAC_B, IP_B, &[]);
    (ga, gb, a, b)
}

fn add_pair(ga: &Gw, gb: &Gw, name: &str, vni: u32, timers: Config) {
    ga.engine.add(name, geneve(vni, IP_A, IP_B, MAC_B), timers).expect("add on A");
    gb.engine.add(name, geneve(vni, IP_B, IP_A, MAC_A), timers).expect("add on B");
}

/// Sets `ifname` in `ns` up or down with one ioctl; returns when it was
/// issued (monotonic, and seconds since midnight UTC).
fn set_link(ns: &Netns, ifname: &str, up: bool) -> (Instant, f64) {
    ns.enter(|| unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in ifname.bytes().enumerate() {
            req.ifr_name[i] = b as libc::c_char;
        }
        assert_eq!(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req), 0, "SIOCGIFFLAGS {ifname}");
        let flags = req.ifr_ifru.ifru_flags;
        req.ifr_ifru.ifru_flags = if up { flags | libc::IFF_UP as i16 } else { flags & !(libc::IFF_UP as i16) };
        let (t, tod) = (Instant::now(), time_of_day());
        assert_eq!(libc::ioctl(fd, libc::SIOCSIFFLAGS, &req), 0, "SIOCSIFFLAGS {ifname}");
        libc::close(fd);
        (t, tod)
    })
}

fn time_of_day() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() % 86400.0
}

fn wait(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > timeout {
            eprintln!("  {what}: not reached in {timeout:?}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Polls `down` every 100 us; the time from `cut` until it holds.
fn time_to(cut: Instant, timeout: Duration, mut down: impl FnMut() -> bool) -> Option<f64> {
    loop {
        if down() {
            return Some(cut.elapsed().as_secs_f64() * 1000.0);
        }
        if cut.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// A random phase between the peer's packets and the cut.
fn jitter_sleep(i: usize) {
    std::thread::sleep(Duration::from_micros(200_000 + (i as u64 * 7919) % 10_000));
}

/// Where one detection's time went, in ms, adding up to the detection
/// time: the last packet's arrival before the cut (negative), the detection
/// time the peers agreed, the engine's lateness past its deadline (timer
/// wake-up and its pass), and the observer's lateness seeing it (this
/// process polling `status` every 100 us).
#[derive(Clone, Copy, Debug)]
struct Split {
    last_rx: f64,
    detect_time: f64,
    engine: f64,
    observer: f64,
}

fn detect_xgw_pair(cuts: usize) -> (Vec<f64>, Vec<Split>) {
    let (ga, gb, _a, b) = xgw_pair();
    add_pair(&ga, &gb, "p", 7001, FAST);
    let (mut out, mut splits) = (vec![], vec![]);
    for i in 0..cuts {
        if !wait("xgw pair Up", Duration::from_secs(15), || ga.status("p").forwarding && gb.status("p").forwarding) {
            break;
        }
        jitter_sleep(i);
        let cut_ns = xgw::bfd::monotonic_ns();
        let (cut, _) = set_link(&b, "ul", false);
        // The deadline as last seen while Up: after the cut, the one the
        // last packet set.
        let (mut deadline, mut down) = (None, None);
        let ms = time_to(cut, Duration::from_secs(2), || {
            let s = ga.status("p");
            if s.state != "down" {
                deadline = s.detect_deadline_ns.or(deadline);
                return false;
            }
            down = Some((s, xgw::bfd::monotonic_ns()));
            true
        });
        if let (Some(ms), Some((down, seen_ns)), Some(deadline)) = (ms, down, deadline) {
            out.push(ms);
            // On one clock, from just before the cut's ioctl: the parts add
            // up to the detection within the ioctl's own time.
            let d = |a: u64, b: u64| (a as f64 - b as f64) / 1e6;
            let detect_time = down.detect_time_us as f64 / 1e3;
            let last_rx = d(deadline, cut_ns) - detect_time;
            let (engine, observer) = (d(down.changed_ns, deadline), d(seen_ns, down.changed_ns));
            splits.push(Split { last_rx, detect_time, engine, observer });
        }
        set_link(&b, "ul", true);
    }
    (out, splits)
}

/// xgw's and bfdd's detection times after cuts of the link between them.
fn detect_frr(cuts: usize) -> (Vec<f64>, Vec<f64>, Vec<String>) {
    let gw = Netns::new("bfx");
    let r = Netns::new("bff");
    gw.disable_ipv6();
    r.disable_ipv6();
    Veth::new(&gw, "ul", "198.51.100.1/24", &r, "f0", "198.51.100.2/24");
    let g = xgw(&gw, MAC_A, IP_A, &[(&r, "f0")]);
    let peer = Path::SingleHop {
        ifname: "ul".into(),
        peer_ip: Ipv4Addr::new(198, 51, 100, 2),
        local_ip: Ipv4Addr::new(198, 51, 100, 1),
    };
    g.engine.add("r", peer, Config { echo: true, ..FAST }).expect("add");
    let frr = Frr::start(
        &r,
        &FrrBfd {
            peer: "198.51.100.1".into(),
            local: "198.51.100.2".into(),
            ifname: "f0".into(),
            tx_ms: 10,
            rx_ms: 10,
            mult: 3,
            echo_ms: Some(10),
        },
    );
    let frr_up = || frr.peer("198.51.100.1")["status"].as_str() == Some("up");
    let (mut ours, mut theirs, mut reasons) = (vec![], vec![], vec![]);
    for i in 0..cuts {
        if !wait("xgw and FRR Up", Duration::from_secs(15), || g.status("r").forwarding && frr_up()) {
            break;
        }
        jitter_sleep(i);
        let seen = frr.downs().len();
        let (cut, tod) = set_link(&gw, "ul", false);
        if let Some(ms) = time_to(cut, Duration::from_secs(2), || g.status("r").state == "down") {
            ours.push(ms);
        }
        // bfdd logs the change when its timer fires.
        if wait("FRR Down", Duration::from_secs(2), || frr.downs().len() > seen) {
            let (at, why) = frr.downs()[seen].clone();
            theirs.push((at - tod) * 1000.0);
            reasons.push(why);
        }
        set_link(&gw, "ul", true);
    }
    (ours, theirs, reasons)
}

/// utime + stime of this process's threads named `name`, in seconds, each.
fn thread_cpu(name: &str) -> Vec<f64> {
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut out = vec![];
    for e in fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let f: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let (u, s): (f64, f64) = (f[11].parse().unwrap_or(0.0), f[12].parse().unwrap_or(0.0));
        out.push((u + s) / tck);
    }
    out
}

/// utime + stime of process `pid` (all its threads), in seconds.
fn process_cpu(pid: u32) -> f64 {
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    let f: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / tck
}

struct Scale {
    n: usize,
    flaps: u64,
    cpu: Vec<f64>,
    up: bool,
}

fn scale(steps: &[usize], hold: Duration, timers: Config) -> Vec<Scale> {
    let (ga, gb, _a, _b) = xgw_pair();
    let mut added = 0;
    let mut out = vec![];
    for &n in steps {
        while added < n {
            add_pair(&ga, &gb, &format!("s{added}"), 10_000 + added as u32, timers);
            added += 1;
        }
        let all_up = || ga.engine.status(None).iter().chain(gb.engine.status(None).iter()).all(|s| s.forwarding);
        let up = wait(&format!("{n} sessions Up"), Duration::from_secs(30), all_up);
        let flaps = |g: &Gw| g.engine.status(None).iter().map(|s| s.flap_count).sum::<u64>();
        let (f0, c0, t0) = (flaps(&ga) + flaps(&gb), thread_cpu("xgw-bfd"), Instant::now());
        std::thread::sleep(hold);
        let (f1, c1, secs) = (flaps(&ga) + flaps(&gb), thread_cpu("xgw-bfd"), t0.elapsed().as_secs_f64());
        let cpu: Vec<f64> = c1.iter().zip(&c0).map(|(b, a)| 100.0 * (b - a) / secs).collect();
        let s = Scale { n, flaps: f1 - f0, cpu, up };
        eprintln!(
            "  {n} sessions: up {}, flaps {}, engine CPU {:?} %",
            s.up,
            s.flaps,
            s.cpu.iter().map(|c| (c * 10.0).round() / 10.0).collect::<Vec<_>>()
        );
        let stop = !s.up || s.flaps > 0 || s.cpu.iter().any(|&c| c > 90.0);
        out.push(s);
        if stop {
            break;
        }
    }
    out
}

/// `scale` for two FRR bfdd peering with each other, as two xgw do there:
/// IPv6 single-hop sessions on one veth, session k between 2001:db8::1:k
/// and 2001:db8::2:k (bfdd keys a single-hop session by peer, local address
/// and interface, so each session has an address of its own on each side).
/// Flaps are the `up -> down` lines in bfdd's log (reading it costs bfdd
/// nothing, while a vtysh query over thousands of peers runs in bfdd's only
/// event loop); Up is checked through vtysh once a second during bring-up
/// only. The CPU is each bfdd process's utime + stime. bfdd runs at its
/// default priority (nice 0, as Debian starts it); xgw's engine runs at
/// SCHED_FIFO 50, its default.
fn frr_scale(steps: &[usize], hold: Duration) -> Vec<Scale> {
    const SETTLE: Duration = Duration::from_secs(3);
    let a = Netns::new("bfsa");
    let b = Netns::new("bfsb");
    Veth::new(&a, "f0", "", &b, "f0", "");
    let mac = |ns: &Netns| ns.ok(&["cat", "/sys/class/net/f0/address"]).trim().to_string();
    let (mac_a, mac_b) = (mac(&a), mac(&b));
    let addr = |side: u8, k: usize| format!("2001:db8::{side}:{k:x}");
    // Session k's address on this side, and the peer's as a permanent
    // neighbour: resolved ones would count against the kernel's neighbour
    // table limit (gc_thresh3, 1024 by default, host-wide), permanent
    // entries do not.
    let add_addrs = |ns: &Netns, side: u8, peer_mac: &str, ks: std::ops::RangeInclusive<usize>| {
        let file = std::env::temp_dir().join(xgw_tests::netns::unique_name("addrs"));
        let batch: String = ks
            .map(|k| {
                format!(
                    "addr add {}/64 dev f0 nodad\nneigh add {} lladdr {peer_mac} dev f0 nud permanent\n",
                    addr(side, k),
                    addr(3 - side, k)
                )
            })
            .collect();
        fs::write(&file, batch).unwrap();
        ns.ok(&["ip", "-6", "-batch", file.to_str().unwrap()]);
        let _ = fs::remove_file(&file);
    };
    let cfg = |mine: u8, theirs: u8, k: usize| FrrBfd {
        peer: addr(theirs, k),
        local: addr(mine, k),
        ifname: "f0".into(),
        tx_ms: 10,
        rx_ms: 10,
        mult: 3,
        echo_ms: None,
    };
    add_addrs(&a, 1, &mac_b, 1..=1);
    add_addrs(&b, 2, &mac_a, 1..=1);
    let fa = Frr::start(&a, &cfg(1, 2, 1));
    let fb = Frr::start(&b, &cfg(2, 1, 1));
    let pids = [fa.bfdd_pid(), fb.bfdd_pid()];
    for pid in pids {
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert_eq!(comm.trim(), "bfdd", "pid {pid} is not the bfdd we started");
    }
    let mut added = 1;
    let mut out = vec![];
    for &n in steps {
        if added < n {
            add_addrs(&a, 1, &mac_b, added + 1..=n);
            add_addrs(&b, 2, &mac_a, added + 1..=n);
            fa.add_peers(&(added + 1..=n).map(|k| cfg(1, 2, k)).collect::<Vec<_>>());
            fb.add_peers(&(added + 1..=n).map(|k| cfg(2, 1, k)).collect::<Vec<_>>());
            added = n;
        }
        let start = Instant::now();
        let up = loop {
            let (ua, ub) = (fa.peers_up(), fb.peers_up());
            if ua == n && ub == n {
                break true;
            }
            if start.elapsed() > Duration::from_secs(30) {
                eprintln!("  {n} FRR sessions Up: not reached in 30 s ({ua} / {ub} up)");
                break false;
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        // bfdd comes Up at the slow rate (1 s) and then moves to 10 ms
        // through a Poll Sequence: let those end before the hold counts.
        std::thread::sleep(SETTLE);
        let downs = || fa.downs().len() + fb.downs().len();
        let cpu = || pids.map(process_cpu);
        let (d0, c0, t0) = (downs(), cpu(), Instant::now());
        std::thread::sleep(hold);
        let (d1, c1, secs) = (downs(), cpu(), t0.elapsed().as_secs_f64());
        let cpu: Vec<f64> = c1.iter().zip(&c0).map(|(b, a)| 100.0 * (b - a) / secs).collect();
        let s = Scale { n, flaps: (d1 - d0) as u64, cpu, up };
        eprintln!(
            "  {n} FRR sessions: up {}, flaps {}, bfdd CPU {:?} %",
            s.up,
            s.flaps,
            s.cpu.iter().map(|c| c.round()).collect::<Vec<_>>()
        );
        let stop = !s.up || s.flaps > 0 || s.cpu.iter().any(|&c| c > 90.0);
        out.push(s);
        if stop {
            break;
        }
    }
    out
}

/// Flaps in `secs` under one busy loop per core: two xgw, and two bfdd.
fn stress(secs: u64) -> (u64, u64, u64, u64) {
    let (ga, gb, _a, _b) = xgw_pair();
    add_pair(&ga, &gb, "p", 7002, FAST);
    let r1 = Netns::new("bfr1");
    let r2 = Netns::new("bfr2");
    Veth::new(&r1, "f0", "203.0.113.1/24", &r2, "f0", "203.0.113.2/24");
    let cfg = |peer: &str, local: &str| FrrBfd {
        peer: peer.into(),
        local: local.into(),
        ifname: "f0".into(),
        tx_ms: 10,
        rx_ms: 10,
        mult: 3,
        echo_ms: None,
    };
    let f1 = Frr::start(&r1, &cfg("203.0.113.2", "203.0.113.1"));
    let f2 = Frr::start(&r2, &cfg("203.0.113.1", "203.0.113.2"));
    let frr_up = || {
        f1.peer("203.0.113.2")["status"].as_str() == Some("up")
            && f2.peer("203.0.113.1")["status"].as_str() == Some("up")
    };
    wait("xgw pair Up", Duration::from_secs(15), || ga.status("p").forwarding && gb.status("p").forwarding);
    wait("FRR pair Up", Duration::from_secs(15), frr_up);
    std::thread::sleep(Duration::from_secs(1));
    let downs = |f: &Frr, p: &str| f.counters(p)["session-down"].as_u64().unwrap_or(0);
    let x0 = ga.status("p").flap_count + gb.status("p").flap_count;
    let r0 = downs(&f1, "203.0.113.2") + downs(&f2, "203.0.113.1");
    let hogs = Process::cpu_hogs();
    let hogs_n = hogs.len();
    std::thread::sleep(Duration::from_secs(secs));
    drop(hogs);
    // A flap is one Up -> Down; each side of a pair counts it.
    let x = (ga.status("p").flap_count + gb.status("p").flap_count - x0) / 2;
    let r = downs(&f1, "203.0.113.2") + downs(&f2, "203.0.113.1") - r0;
    (x, r, hogs_n as u64, secs)
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    s[((p / 100.0) * (s.len() - 1) as f64).round() as usize]
}

/// Detection-time histogram, 1 ms bins: xgw pair, xgw vs FRR, bfdd.
fn svg(series: &[(&str, &str, &[f64])], title: &str) -> String {
    let (w, h, left, bottom, top) = (760.0, 360.0, 50.0, 40.0, 40.0);
    let max_ms = series.iter().flat_map(|s| s.2.iter()).fold(35.0f64, |m, &v| m.max(v)).ceil().min(120.0) as usize + 1;
    let bins: Vec<Vec<usize>> = series
        .iter()
        .map(|s| {
            let mut b = vec![0usize; max_ms];
            for &v in s.2 {
                b[(v.max(0.0) as usize).min(max_ms - 1)] += 1;
            }
            b
        })
        .collect();
    let peak = bins.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let (pw, ph) = (w - left - 20.0, h - top - bottom);
    let bw = pw / max_ms as f64;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        o,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{left}" y="20" font-size="13">{title}</text>"#
    );
    for (k, (b, (label, color, _))) in bins.iter().zip(series).enumerate() {
        let sub = bw / series.len() as f64;
        for (i, &c) in b.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let bh = ph * c as f64 / peak;
            let x = left + i as f64 * bw + k as f64 * sub;
            let _ = writeln!(
                o,
                r#"<rect x="{x:.1}" y="{:.1}" width="{sub:.1}" height="{bh:.1}" fill="{color}"><title>{label}: {c} at {i}-{} ms</title></rect>"#,
                top + ph - bh,
                i + 1
            );
        }
        let _ = writeln!(
            o,
            r#"<rect x="{}" y="{}" width="10" height="10" fill="{color}"/><text x="{}" y="{}">{label} (n={})</text>"#,
            w - 260.0,
            top + 14.0 * k as f64,
            w - 245.0,
            top + 9.0 + 14.0 * k as f64,
            series[k].2.len()
        );
    }
    let _ = writeln!(o, r#"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#, top + ph, left + pw, top + ph);
    for i in (0..=max_ms).step_by(5) {
        let x = left + i as f64 * bw;
        let _ = writeln!(
            o,
            r#"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="black"/><text x="{x:.1}" y="{}" text-anchor="middle">{i}</text>"#,
            top + ph,
            top + ph + 4.0,
            top + ph + 16.0
        );
    }
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle">ms from the link cut to Down (detection time 3 x 10 ms)</text>"#,
        left + pw / 2.0,
        h - 6.0
    );
    let _ = writeln!(
        o,
        r#"<text x="12" y="{}" transform="rotate(-90 12 {})" text-anchor="middle">cuts</text>"#,
        top + ph / 2.0,
        top + ph / 2.0
    );
    o + "</svg>\n"
}

/// BFD at scale: sessions sustained at 3 x 10 ms by xgw and by FRR bfdd, and detection under CPU load. Results go to $XGW_BENCH_OUT (default bench/results).
#[derive(clap::Parser)]
struct Args {
    /// Fewer and shorter runs: checks that everything works.
    #[arg(long)]
    quick: bool,
    /// Only the ramp at OVN's default timers, printed (no results written).
    #[arg(long)]
    only_ovn_timers: bool,
    /// Only the ramp at 3 x 10 ms, printed (no results written).
    #[arg(long)]
    only_fast_timers: bool,
    /// Only the two-xgw detection runs and where their time went, printed
    /// (no results written).
    #[arg(long)]
    only_detect: bool,
}

fn main() {
    let Args { quick, only_ovn_timers, only_fast_timers, only_detect } = clap::Parser::parse();
    let out_dir = PathBuf::from(std::env::var("XGW_BENCH_OUT").unwrap_or_else(|_| "bench/results".into()));
    // OVN's timers, up to the goal of 10,000 on each gateway of the pair.
    let ovn_steps: &[usize] = if quick { &[200] } else { &[1000, 2000, 4000, 8000, 10_000] };
    let (cuts, steps, frr_steps, hold, stress_secs): (usize, &[usize], &[usize], _, u64) = if quick {
        (10, &[50, 200], &[20], Duration::from_secs(2), 5)
    } else {
        (
            100,
            &[50, 100, 200, 400, 800, 1200, 1600, 2400, 3200, 4000],
            // bfdd polls every socket on each wakeup (per-session sockets):
            // its limit is far below xgw's, so the ramp starts finer.
            &[5, 10, 25, 50, 100, 150, 200, 300, 400, 600, 800, 1200, 1600],
            Duration::from_secs(10),
            30,
        )
    };

    if only_ovn_timers || only_fast_timers {
        eprintln!("{}", machine::line());
        scale(if only_ovn_timers { ovn_steps } else { steps }, hold, if only_ovn_timers { OVN } else { FAST });
        return;
    }
    if only_detect {
        eprintln!("{}", machine::line());
        let t0 = machine::Sample::now();
        let (pair, splits) = detect_xgw_pair(cuts);
        eprintln!("during the run: {}", machine::Sample::now().since(&t0));
        let mut order: Vec<usize> = (0..pair.len()).collect();
        order.sort_by(|&a, &b| pair[b].total_cmp(&pair[a]));
        eprintln!(
            "the latest detections (ms): total = last packet before the cut + detection time + engine + observer"
        );
        for &i in order.iter().take(10) {
            let s = splits[i];
            eprintln!(
                "  {:.2} = {:.2} + {:.2} + {:.2} + {:.2}",
                pair[i], s.last_rx, s.detect_time, s.engine, s.observer
            );
        }
        for (p, label) in [(50.0, "p50"), (99.0, "p99"), (100.0, "max")] {
            let part = |f: fn(&Split) -> f64| pct(&splits.iter().map(f).collect::<Vec<_>>(), p);
            eprintln!(
                "{label}: detection {:.2}, last packet {:.2}, engine {:.2}, observer {:.2}",
                pct(&pair, p),
                part(|s| s.last_rx),
                part(|s| s.engine),
                part(|s| s.observer)
            );
        }
        return;
    }
    eprintln!("detection, two xgw, {cuts} cuts");
    let t0 = machine::Sample::now();
    let (pair, splits) = detect_xgw_pair(cuts);
    let pair_load = machine::Sample::now().since(&t0);
    eprintln!("detection, xgw and FRR bfdd, {cuts} cuts");
    let t0 = machine::Sample::now();
    let (ours, frr, reasons) = detect_frr(cuts);
    let frr_load = machine::Sample::now().since(&t0);
    eprintln!("sessions at 3 x 10 ms");
    let scaled = scale(steps, hold, FAST);
    eprintln!("sessions at OVN's default timers");
    let ovn_scaled = scale(ovn_steps, hold, OVN);
    eprintln!("FRR bfdd sessions at 3 x 10 ms");
    let frr_scaled = frr_scale(frr_steps, hold);
    eprintln!("flaps under CPU hogs, {stress_secs} s");
    let (xflaps, rflaps, cores, secs) = stress(stress_secs);

    let mut md = String::from("| benchmark | xgw | FRR bfdd (baseline) | note |\n|---|---|---|---|\n");
    let mut rows = vec![];
    let mut row = |name: String, x: f64, f: Option<f64>, unit: &str, note: String| {
        // Small figures (CPU per session) keep three decimals; none measured is "-".
        let num = |v: f64| {
            if v.is_nan() {
                "-".to_string()
            } else if v != 0.0 && v.abs() < 1.0 {
                format!("{v:.3}")
            } else {
                format!("{v:.1}")
            }
        };
        let (xs, fs) = (num(x), f.map_or("-".into(), num));
        let _ = writeln!(md, "| {name} | {xs} | {fs} | {note} |");
        rows.push(serde_json::json!({"name": name, "unit": unit, "value": x, "baseline": f, "note": note}));
    };
    for (p, label) in [(50.0, "p50"), (99.0, "p99"), (100.0, "max")] {
        row(
            format!("detection after a cut, two xgw, {label}, ms"),
            pct(&pair, p),
            None,
            "ms",
            format!("{} cuts, 3 x 10 ms over Geneve", pair.len()),
        );
    }
    // Where the two-xgw detections' time went (see `Split`): the p99 of
    // each part, p50 and max beside it.
    type Part = fn(&Split) -> f64;
    let parts: [(&str, Part); 4] = [
        ("the last packet's arrival after the cut (negative: before)", |s| s.last_rx),
        ("the detection time the peers agreed", |s| s.detect_time),
        ("the engine's lateness past its deadline (timer wake-up and pass)", |s| s.engine),
        ("the observer's lateness (status polled every 100 us)", |s| s.observer),
    ];
    for (what, part) in parts {
        let v: Vec<f64> = splits.iter().map(part).collect();
        row(
            format!("detection split, two xgw: {what}, p99, ms"),
            pct(&v, 99.0),
            None,
            "ms",
            format!("p50 {:.2}, max {:.2}, {} cuts", pct(&v, 50.0), pct(&v, 100.0), v.len()),
        );
    }
    for (p, label) in [(50.0, "p50"), (99.0, "p99"), (100.0, "max")] {
        row(
            format!("detection after a cut, xgw vs FRR, {label}, ms"),
            pct(&ours, p),
            Some(pct(&frr, p)),
            "ms",
            format!(
                "{} / {} cuts, single-hop 3 x 10 ms, FRR echo on; each side's own detection",
                ours.len(),
                frr.len()
            ),
        );
    }
    // The largest count held Up with no flap, why the ramp stopped, and
    // the busier daemon's CPU there (% of one core).
    let sustained = |scaled: &[Scale], what: &str| {
        let ok = scaled.iter().rfind(|s| s.up && s.flaps == 0);
        let first_bad = scaled.iter().find(|s| !s.up || s.flaps > 0 || s.cpu.iter().any(|&c| c > 90.0));
        let why = first_bad.map_or("largest N tried".into(), |s| {
            let max = s.cpu.iter().cloned().fold(0.0, f64::max);
            format!(
                "at {}: {}",
                s.n,
                if !s.up {
                    "not all Up in 30 s".to_string()
                } else if s.flaps > 0 {
                    format!("{} flaps", s.flaps)
                } else {
                    format!("{what} CPU {max:.0} %")
                }
            )
        });
        (ok.map(|s| (s.n, s.cpu.iter().cloned().fold(0.0, f64::max))), why)
    };
    let (xgw_cap, why) = sustained(&scaled, "engine");
    let (frr_cap, frr_why) = sustained(&frr_scaled, "bfdd");
    let tried = |s: &[Scale]| s.iter().map(|s| s.n.to_string()).collect::<Vec<_>>().join(", ");
    let (xn, xcpu) = xgw_cap.map_or((f64::NAN, f64::NAN), |(n, c)| (n as f64, c));
    let (fnn, fcpu) = frr_cap.map_or((None, None), |(n, c)| (Some(n as f64), Some(c)));
    row(
        "sessions sustained at 3 x 10 ms, two peers on 2 cores".into(),
        xn,
        fnn,
        "sessions",
        format!(
            "held {}s Up with 0 flaps; xgw: two xgw over Geneve, engine at SCHED_FIFO 50, stopped {why}; FRR: two bfdd at nice 0, IPv6 single-hop on one veth, held after 3 s for their Poll Sequences, stopped {frr_why} (tried {})",
            hold.as_secs(),
            tried(&frr_scaled)
        ),
    );
    row(
        "CPU at the sustained count, % of one core".into(),
        xcpu,
        fcpu,
        "%",
        "the busier of the two: xgw's engine thread (transmit + detection; XDP receive is softirq time, not counted), bfdd's whole process (utime + stime, its receive syscalls included)".into(),
    );
    row(
        "CPU per session at the sustained count, % of one core".into(),
        xcpu / xn,
        frr_cap.map(|(n, c)| c / n as f64),
        "%",
        "the row above divided by the session count".into(),
    );
    let (ovn_cap, ovn_why) = sustained(&ovn_scaled, "engine");
    row(
        "sessions held at OVN's default timers (min_tx 100 ms, min_rx 1000 ms, x 3), each of two xgw on 2 cores".into(),
        ovn_cap.map_or(f64::NAN, |(n, _)| n as f64),
        None,
        "sessions",
        format!(
            "held {}s Up with 0 flaps, stopped {ovn_why} (tried {}); a datapath holds {}",
            hold.as_secs(),
            tried(&ovn_scaled),
            maps::MAX_BFD_SESSIONS
        ),
    );
    row(
        "CPU at that count, OVN's timers, % of one core".into(),
        ovn_cap.map_or(f64::NAN, |(_, c)| c),
        None,
        "%",
        "the busier engine thread (transmit + detection; the XDP receive is softirq time, not counted: \
         /proc/stat, tick-sampled, misreads a thread that wakes in step with the tick)"
            .into(),
    );
    row(
        format!("flaps in {secs} s under {cores} CPU hogs"),
        xflaps as f64,
        Some(rflaps as f64),
        "flaps",
        "a pair of each at 3 x 10 ms, same run, same hogs (nice 0 busy loops)".into(),
    );

    let reasons: std::collections::BTreeMap<&str, usize> = reasons.iter().fold(Default::default(), |mut m, r| {
        *m.entry(r.as_str()).or_default() += 1;
        m
    });
    let _ = writeln!(
        md,
        "\nbfdd's reasons for Down after the cuts: {reasons:?}. Histogram: bfd-detect{}.svg",
        if quick { "-quick" } else { "" }
    );
    let _ = writeln!(
        md,
        "\n{}. During the detection runs: two xgw {pair_load}, xgw and FRR {frr_load} (CPU time stolen by the \
         hypervisor, percent of all CPUs; 1-minute load average at the end).",
        machine::line()
    );
    println!("mode: {}\n\n{md}", if quick { "quick" } else { "full" });
    fs::create_dir_all(&out_dir).expect("create bench/results");
    let suffix = if quick { "-quick" } else { "" };
    fs::write(out_dir.join(format!("bfd{suffix}.md")), &md).unwrap();
    let scale_json: Vec<_> = scaled
        .iter()
        .map(|s| serde_json::json!({"sessions": s.n, "up": s.up, "flaps": s.flaps, "engine_cpu_pct": s.cpu}))
        .collect();
    let frr_scale_json: Vec<_> = frr_scaled
        .iter()
        .map(|s| serde_json::json!({"sessions": s.n, "up": s.up, "flaps": s.flaps, "bfdd_cpu_pct": s.cpu}))
        .collect();
    let doc = serde_json::json!({
        "quick": quick,
        "machine": machine::describe(),
        "detect_load": {"xgw_pair": pair_load, "xgw_vs_frr": frr_load},
        "detect_split_xgw_pair": splits.iter().map(|s| serde_json::json!({
            "last_rx_ms": s.last_rx, "detect_time_ms": s.detect_time, "engine_ms": s.engine, "observer_ms": s.observer,
        })).collect::<Vec<_>>(),
        "rows": rows,
        "detect_ms": {"xgw_pair": pair, "xgw_vs_frr": ours, "frr": frr},
        "frr_down_reasons": reasons,
        "scale": scale_json,
        "frr_scale": frr_scale_json,
        "ovn_timers_scale": ovn_scaled
            .iter()
            .map(|s| serde_json::json!({"sessions": s.n, "up": s.up, "flaps": s.flaps, "engine_cpu_pct": s.cpu}))
            .collect::<Vec<_>>(),
    });
    fs::write(out_dir.join(format!("bfd{suffix}.json")), serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let title = format!("BFD detection time after a link cut, 3 x 10 ms ({} cuts each)", pair.len().max(ours.len()));
    let series: [(&str, &str, &[f64]); 3] =
        [("two xgw", "#1f77b4", &pair), ("xgw, peer FRR", "#2ca02c", &ours), ("FRR bfdd, peer xgw", "#d62728", &frr)];
    fs::write(out_dir.join(format!("bfd-detect{suffix}.svg")), svg(&series, &title)).unwrap();
    assert!(!pair.is_empty() && !ours.is_empty(), "no detection measured");
    let first = ovn_scaled.first().expect("OVN-timer ramp ran no step");
    assert!(
        first.up && first.cpu.len() == 2 && first.cpu.iter().all(|c| c.is_finite()),
        "OVN-timer ramp: {} sessions not Up or no CPU read",
        first.n
    );
    // The FRR ramp must at least have brought its first step Up and read
    // bfdd's CPU, or its row measured nothing.
    let first = frr_scaled.first().expect("FRR ramp ran no step");
    assert!(
        first.up && first.cpu.len() == 2 && first.cpu.iter().all(|c| c.is_finite() && *c > 0.0),
        "FRR ramp: {} sessions not Up or no CPU read",
        first.n
    );
}
