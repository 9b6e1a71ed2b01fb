//! Builds the XDP datapath (datapath-ebpf/, nightly, bpfel-unknown-none) and
//! hands its object file to the controller, which embeds it. Keeping this in
//! the build script means `cargo build` / `cargo test` always embed a datapath
//! built from the same sources as the controller.
use std::{env, fs, path::PathBuf, process::Command};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let ebpf = root.join("datapath-ebpf");
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap()).join("xgw-datapath.o");
    for p in [
        "datapath-ebpf/src",
        "datapath-ebpf/Cargo.toml",
        "datapath-ebpf/Cargo.lock",
        "datapath-ebpf/.cargo/config.toml",
        "datapath-ebpf/rust-toolchain.toml",
        "common/src",
        "common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    // A prebuilt object (for example from CI artifacts) skips the nightly build.
    println!("cargo:rerun-if-env-changed=XGW_DATAPATH_OBJECT");
    if let Some(prebuilt) = env::var_os("XGW_DATAPATH_OBJECT") {
        fs::copy(&prebuilt, &out)
            .unwrap_or_else(|e| panic!("XGW_DATAPATH_OBJECT={}: {e}", PathBuf::from(&prebuilt).display()));
        return;
    }

    // A separate target directory: the outer cargo holds the lock on target/.
    let target_dir = root.join("target").join("bpf");
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        "nightly",
        "cargo",
        "build",
        "--release",
        "--locked",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--target-dir",
    ])
    .arg(&target_dir)
    .current_dir(&ebpf);
    // The outer (stable) cargo's settings must not leak into the nightly build.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTUP_TOOLCHAIN",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO",
        "RUSTDOC",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("cannot run `rustup run nightly cargo` to build the XDP datapath ({e}); run `cargo xtask setup`")
    });
    if !status.success() {
        panic!(
            "building the XDP datapath (datapath-ebpf/) failed; if nightly rust-src or \
             bpf-linker is missing, run `cargo xtask setup`"
        );
    }
    let obj = target_dir.join("bpfel-unknown-none/release/xgw-datapath");
    fs::copy(&obj, &out).unwrap_or_else(|e| panic!("copying {}: {e}", obj.display()));
}
