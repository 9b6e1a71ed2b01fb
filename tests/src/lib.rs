//! Namespace test harness: network namespaces joined by veth pairs on
//! documentation addresses, a private bpffs, and processes started inside a
//! namespace. Every object is a guard that removes what it made on drop, so a
//! failing (panicking) test cleans up too. Names carry the test process id and
//! a counter, so tests run in parallel without colliding.
//!
//! The integration tests that use it are one binary, `tests/tests/it/`; the
//! benchmarks (`tests/bench/`, crate `xgw-bench`) and the packet fuzzer
//! (`tests/fuzz/`, crate `xgw-fuzz`) are crates of their own on top of it.
//!
//! Privileged tests call [`require_root!`] first: outside CI, without root,
//! they print a visible SKIP line and return; in CI (`CI` set) a missing
//! privilege is a failure, never a silent pass.
pub mod addrs;
pub mod bpftool;
pub mod capture;
pub mod daemon;
pub mod frr;
pub mod gateway;
pub mod netns;
pub mod ovn;
pub mod ovs;
pub mod packet;
pub mod ports;
pub mod process;
pub mod sandbox;

pub use capture::Capture;
pub use netns::{BpfFs, Netns, Veth};
pub use ovs::{Geneve, OvnKeys, OvsBuilder, OvsHypervisor};
pub use process::Process;

/// True when the test may use namespaces, XDP and bpffs.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Returns from the calling test (with a visible message) when not root, and
/// panics instead when running in CI, where privileged tests must run.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            if std::env::var_os("CI").is_some() {
                panic!("this test needs root and CI must run it as root");
            }
            // Straight to fd 2: libtest captures eprintln! of passing tests,
            // and a skip must be visible (cargo xtask test counts these lines).
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIP {} ({}:{}): needs root (namespaces, XDP, bpffs)",
                module_path!(),
                file!(),
                line!()
            );
            return;
        }
    };
}

/// Runs a command on the host, failing the test with its output if it fails.
pub fn sh(args: &[&str]) -> String {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `xgw` binary of this build (`cargo xtask test` builds it first).
pub fn xgw_bin() -> std::path::PathBuf {
    // target/<profile>/deps/<test-exe> -> target/<profile>/xgw; a
    // benchmark binary runs from target/<profile>/ itself.
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("target dir");
    let dir = if dir.ends_with("deps") { dir.parent().expect("target dir") } else { dir };
    let bin = dir.join("xgw");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p xgw --bins; cargo xtask test does this)",
        bin.display()
    );
    bin
}
