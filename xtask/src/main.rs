//! `cargo xtask`: the developer's front door. Every command is a thin,
//! visible sequence of steps; the shell work lives in scripts/.
use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
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
    /// Performance table against same-run baselines (not implemented yet).
    Bench,
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

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Setup => setup(),
        Cmd::Build => ensure_toolchain().and_then(|_| build(true)),
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
            run(cargo().args(["test", "--workspace", "--locked"]).args(&args))
        })(),
        Cmd::Bench => {
            eprintln!("xtask: no benchmarks yet: `cargo xtask bench` is filled in by the benchmark issue; nothing was measured");
            Err(anyhow::anyhow!("bench is not implemented"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
