//! `cargo xtask`: the developer's front door. Every command is a thin,
//! visible sequence of steps; the shell work lives in scripts/.
use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", bin_name = "cargo xtask", about = "Build, demo, test and benchmark xgw")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing (Debian packages, nightly rust-src, bpf-linker
    /// for the nightly's LLVM) and mount bpffs. Idempotent; needs root.
    Setup,
    /// Build the XDP datapath (nightly, bpfel-unknown-none) and the userspace
    /// binaries (stable), release mode.
    Build,
    /// The main job: set up, build, and run the demo topology in network
    /// namespaces (a gateway and two hypervisors) with real traffic.
    Demo,
    /// Run every test, the privileged namespace/XDP tests included (as root;
    /// without root those skip with a visible message, and fail in CI).
    Test {
        /// Extra arguments passed to `cargo test` (after `--` for the harness).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Formatting and clippy, everywhere: `cargo fmt --check` for the
    /// workspace, datapath-ebpf and tests/cargo-fuzz (one rustfmt.toml), and
    /// clippy with warnings denied for the workspace (all targets) and for
    /// the datapath (nightly, bpfel-unknown-none).
    Lint,
    /// Performance table, every figure beside a baseline from the same run
    /// (bench/results/): XDP program cost through BPF_PROG_TEST_RUN, packet
    /// rate on the veth path against frame size, xgw against Open vSwitch,
    /// the plot pps-size.svg (xgw-bench); the port map on real maps and redb
    /// (xgw-portbench); BFD at scale (xgw-bfdbench); xgw as an OVN chassis
    /// beside ovn-controller (xgw-ovnbench). --quick (what CI runs) takes
    /// seconds and fails unless every figure was produced.
    Bench {
        /// Seconds instead of minutes: checks the harness, not the goals.
        #[arg(long)]
        quick: bool,
    },
    /// Hostile input and faults, the full pass (CI runs bounded versions as
    /// tests): packets through every XDP program (BPF_PROG_TEST_RUN), the
    /// controller SIGKILLed at random points, and the cargo-fuzz (libFuzzer)
    /// targets for the userspace parsers (tests/cargo-fuzz).
    Fuzz {
        /// Generated packets.
        #[arg(long, default_value_t = 1_000_000)]
        packets: u64,
        /// Generator seed (the same seed replays the same packets).
        #[arg(long)]
        seed: Option<u64>,
        /// Append packets with outcomes not yet in tests/fuzz/corpus.txt to it.
        #[arg(long)]
        save_corpus: bool,
        /// SIGKILLs of the port-map controller at random points (0: skip).
        #[arg(long, default_value_t = 10_000)]
        kills: u64,
        /// Seconds per cargo-fuzz target (0: skip; needs cargo-fuzz, installed if missing).
        #[arg(long, default_value_t = 60)]
        target_seconds: u64,
    },
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn run(cmd: &mut Command) -> Result<()> {
    let what = format!("{cmd:?}");
    let status = cmd.current_dir(root()).status().with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn setup() -> Result<()> {
    if !is_root() {
        bail!("setup must run as root (it installs Debian packages and mounts bpffs); run `sudo -E cargo xtask setup`");
    }
    run(Command::new("bash").arg("scripts/setup.sh")).context("setup failed (see the message above)")
}

/// Setup when we can (root), otherwise only check that the toolchain is there.
fn ensure_toolchain() -> Result<()> {
    if is_root() {
        return setup();
    }
    let linker = Command::new("bpf-linker").arg("--version").output();
    if !matches!(linker, Ok(o) if o.status.success()) {
        bail!("bpf-linker is missing and installing it needs root; run `sudo -E cargo xtask setup` once");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn build(release: bool) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "--workspace", "--bins", "--locked"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)
}

/// Runs `cargo test`, relaying its output, and ends with one summary line
/// (`summary: P passed, F failed, S skipped`) over all test binaries, where
/// skipped counts the privileged tests that printed a SKIP line.
fn test(args: &[String]) -> Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let mut child = cargo()
        .args(["test", "--workspace", "--locked"])
        .args(args)
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run cargo test")?;
    let stderr = child.stderr.take().unwrap();
    let skips = std::thread::spawn(move || {
        let mut skipped = 0u64;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            skipped += line.starts_with("SKIP ") as u64;
            let _ = writeln!(std::io::stderr(), "{line}");
        }
        skipped
    });
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok) {
        println!("{line}");
        // "test result: ok. 4 passed; 0 failed; 0 ignored; ..."
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(what), Some(n)) = (words.next(), words.next()) else { continue };
                let n: u64 = n.parse().unwrap_or(0);
                match what {
                    "passed" => passed += n,
                    "failed" => failed += n,
                    _ => {}
                }
            }
        }
    }
    let status = child.wait()?;
    let skipped = skips.join().unwrap_or(0);
    println!("summary: {} passed, {failed} failed, {skipped} skipped", passed - skipped.min(passed));
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    if passed == 0 {
        bail!("cargo test ran no test");
    }
    Ok(())
}

/// `cargo xtask lint`: every check runs, and it fails if any failed.
fn lint() -> Result<()> {
    let nightly = || {
        let mut c = Command::new("rustup");
        c.args(["run", "nightly", "cargo"]);
        // The stable cargo's settings must not leak into the nightly one.
        for var in ["RUSTC", "RUSTDOC", "RUSTUP_TOOLCHAIN", "CARGO", "CARGO_TARGET_DIR"] {
            c.env_remove(var);
        }
        c
    };
    // Beside the one control/build.rs builds the datapath in (target/bpf).
    let bpf_target = root().join("target/bpf-clippy");
    let mut checks: Vec<(&str, Command)> = Vec::new();
    let mut c = cargo();
    c.args(["fmt", "--all", "--check"]);
    checks.push(("fmt (workspace)", c));
    let mut c = nightly();
    c.args(["fmt", "--check"]).current_dir(root().join("datapath-ebpf"));
    checks.push(("fmt (datapath-ebpf)", c));
    let mut c = cargo();
    c.args(["fmt", "--check", "--manifest-path", "tests/cargo-fuzz/Cargo.toml"]);
    checks.push(("fmt (tests/cargo-fuzz)", c));
    let mut c = cargo();
    c.args(["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"]);
    checks.push(("clippy (workspace)", c));
    let mut c = nightly();
    c.args(["clippy", "--release", "--locked", "--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&bpf_target)
        .args(["--", "-D", "warnings"])
        .current_dir(root().join("datapath-ebpf"));
    checks.push(("clippy (datapath-ebpf)", c));
    let mut failed = Vec::new();
    for (what, mut cmd) in checks {
        println!("xtask: {what}");
        if cmd.get_current_dir().is_none() {
            cmd.current_dir(root());
        }
        let ok = cmd.status().map(|s| s.success()).unwrap_or(false);
        if !ok {
            failed.push(what);
        }
    }
    if !failed.is_empty() {
        bail!("lint failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Runs every cargo-fuzz target in tests/cargo-fuzz for `seconds` each.
fn fuzz_targets(seconds: u64) -> Result<()> {
    let have = Command::new("cargo").args(["+nightly", "fuzz", "--version"]).output();
    if !matches!(have, Ok(o) if o.status.success()) {
        println!("xtask: installing cargo-fuzz (once)");
        run(Command::new("cargo").args(["install", "--locked", "cargo-fuzz"]))?;
    }
    let dir = "tests/cargo-fuzz";
    let list =
        Command::new("cargo").args(["+nightly", "fuzz", "list", "--fuzz-dir", dir]).current_dir(root()).output()?;
    let targets = String::from_utf8(list.stdout)?;
    for t in targets.lines().filter(|l| !l.is_empty()) {
        println!("xtask: cargo-fuzz target {t}, {seconds} s");
        run(Command::new("cargo")
            .args(["+nightly", "fuzz", "run", "--fuzz-dir", dir, t, "--"])
            .arg(format!("-max_total_time={seconds}")))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Setup => setup(),
        Cmd::Build => ensure_toolchain().and_then(|_| build(true)),
        Cmd::Lint => ensure_toolchain().and_then(|_| lint()),
        Cmd::Demo => (|| {
            if !is_root() {
                bail!("the demo creates network namespaces and attaches XDP programs, which needs root; run `sudo -E cargo xtask demo`");
            }
            setup()?;
            build(true)?;
            run(Command::new("bash").arg("scripts/demo.sh").env("XGW", root().join("target/release/xgw")))
        })(),
        Cmd::Test { args } => (|| {
            ensure_toolchain()?;
            if !is_root() {
                eprintln!("xtask: not root: privileged tests (namespaces, XDP) will SKIP; run as root to run them");
            }
            // The integration tests run the `xgw` binary of the same profile.
            build(false)?;
            test(&args)
        })(),
        Cmd::Bench { quick } => (|| {
            if !is_root() {
                bail!("benchmarks load XDP programs, which needs root; run `sudo -E cargo xtask bench`");
            }
            setup()?;
            let mut cmd = cargo();
            cmd.args(["run", "--release", "--locked", "-p", "xgw-bench", "--bin", "xgw-bench", "--"]);
            if quick {
                cmd.arg("--quick");
            }
            run(&mut cmd)?;
            // The port map on real maps and redb: rates, load time, memory.
            let mut cmd = cargo();
            cmd.args(["run", "--release", "--locked", "-p", "xgw-bench", "--bin", "xgw-portbench", "--"]);
            if quick {
                cmd.arg("--quick");
            }
            run(&mut cmd)?;
            // BFD: detection after link cuts (xgw and FRR bfdd), sessions
            // sustained at 10 ms and their CPU, flaps under CPU hogs.
            let mut cmd = cargo();
            cmd.args(["run", "--release", "--locked", "-p", "xgw-bench", "--bin", "xgw-bfdbench", "--"]);
            if quick {
                cmd.arg("--quick");
            }
            run(&mut cmd)?;
            // xgw as an OVN chassis beside ovn-controller: nb_cfg
            // acknowledgement, convergence and memory at scale, reconnection
            // after a raft leader loss. It runs the `xgw` daemon itself.
            run(cargo().args(["build", "--release", "--locked", "-p", "xgw", "--bin", "xgw"]))?;
            let mut cmd = cargo();
            cmd.args(["run", "--release", "--locked", "-p", "xgw-bench", "--bin", "xgw-ovnbench", "--"]);
            if quick {
                cmd.arg("--quick");
            }
            run(&mut cmd)
        })(),
        Cmd::Fuzz { packets, seed, save_corpus, kills, target_seconds } => (|| {
            if !is_root() {
                bail!("fuzzing loads XDP programs, which needs root; run `sudo -E cargo xtask fuzz`");
            }
            setup()?;
            if packets > 0 {
                let mut cmd = cargo();
                cmd.args(["run", "--release", "--locked", "-p", "xgw-fuzz", "--bin", "xgw-fuzz", "--"]);
                cmd.args(["--packets", &packets.to_string()]);
                if let Some(seed) = seed {
                    cmd.args(["--seed", &seed.to_string()]);
                }
                if save_corpus {
                    cmd.arg("--save-corpus");
                }
                run(&mut cmd)?;
            }
            if kills > 0 {
                let mut cmd = cargo();
                cmd.args(["test", "--release", "--locked", "-p", "xgw-tests", "--test", "it", "--"]);
                cmd.args(["--exact", "faults::killed_at_random_points_loses_and_leaks_nothing", "--nocapture"]);
                run(cmd.env("XGW_KILLS", kills.to_string()))?;
            }
            if target_seconds > 0 {
                fuzz_targets(target_seconds)?;
            }
            Ok(())
        })(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
