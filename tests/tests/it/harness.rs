//! The namespace harness itself: what a test makes is gone after it, even
//! when the test panics, and processes are stopped by PID.
use std::{path::Path, time::Duration};

use xgw_tests::{require_root, sh, BpfFs, Netns, Veth};

fn netns_exists(name: &str) -> bool {
    Path::new("/var/run/netns").join(name).exists()
}

#[test]
fn everything_is_removed_even_after_a_panic() {
    require_root!();
    let mut names = (String::new(), String::new(), std::path::PathBuf::new());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let a = Netns::new("ha");
        let b = Netns::new("hb");
        Veth::new(&a, "x0", "203.0.113.1/24", &b, "x1", "203.0.113.2/24");
        let fs = BpfFs::new("hf");
        names = (a.name.clone(), b.name.clone(), fs.dir.clone());
        assert!(netns_exists(&a.name) && netns_exists(&b.name));
        assert!(sh(&["mount"]).contains(fs.dir.to_str().unwrap()));
        panic!("test failure inside the topology");
    }));
    assert!(result.is_err());
    assert!(!netns_exists(&names.0) && !netns_exists(&names.1), "namespaces left behind");
    assert!(!sh(&["mount"]).contains(names.2.to_str().unwrap()), "bpffs left mounted");
    assert!(!names.2.exists(), "bpffs directory left behind");
}

#[test]
fn three_namespaces_route_through_the_middle_one() {
    require_root!();
    let hv1 = Netns::new("h1");
    let gw = Netns::new("gw");
    let hv2 = Netns::new("h2");
    Veth::new(&hv1, "e0", "198.51.100.1/25", &gw, "d1", "198.51.100.126/25");
    Veth::new(&hv2, "e0", "198.51.100.129/25", &gw, "d2", "198.51.100.254/25");
    gw.ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    hv1.ok(&["ip", "route", "add", "default", "via", "198.51.100.126"]);
    hv2.ok(&["ip", "route", "add", "default", "via", "198.51.100.254"]);
    let out = hv1.ok(&["ping", "-c", "2", "-i", "0.05", "-W", "2", "198.51.100.129"]);
    assert!(out.contains("2 received"), "{out}");
}

#[test]
fn processes_are_stopped_by_pid() {
    require_root!();
    let ns = Netns::new("pr");
    let p = ns.spawn(&["sleep", "600"]);
    let pid = p.pid();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(p);
    // Reaped by the guard: the PID no longer names our sleep.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_ne!(comm.trim(), "sleep");

    let p = ns.spawn(&["sh", "-c", "echo ready; exec sleep 600"]);
    std::thread::sleep(Duration::from_millis(300));
    let (out, _) = p.stop(Duration::from_secs(2));
    assert_eq!(out.trim(), "ready");
}

#[test]
fn names_are_unique_across_parallel_tests() {
    require_root!();
    let all: Vec<Netns> = (0..8).map(|_| Netns::new("u")).collect();
    let mut names: Vec<&str> = all.iter().map(|n| n.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 8);
}
