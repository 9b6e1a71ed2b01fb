#!/usr/bin/env bash
# Installs what xgw needs on a Debian machine, idempotently: quick when nothing
# is missing. Called by `cargo xtask setup` (and by build/demo/test/bench).
#
# Every failure is one sentence naming what is missing and how to fix it, and a
# non-zero exit. Steps are ordered so that nothing is left half-installed: each
# one either completes or leaves the previous state untouched.
set -euo pipefail

# Debian packages: build and inspection tools, then the real peers used by the
# interoperability tests (Open vSwitch userspace datapath, FRR bfdd, OVN), then
# what the unit's test reads: systemd-analyze (systemd, not running) and the
# system call numbers (linux-libc-dev), and the metrics checkers: promtool
# (only in Debian's `prometheus`, ~19 MB to download, ~96 MB installed; its
# server is not wanted, see below) and the Prometheus Python client's parsers.
PACKAGES=(bpftool iproute2 iputils-ping tcpdump ethtool iperf3 procps
          openvswitch-switch frr ovn-central ovn-host
          systemd linux-libc-dev
          prometheus python3-prometheus-client)
BPF_LINKER_VERSION=0.13.0
BPFFS=${XGW_BPFFS:-/sys/fs/bpf}
LLVM_PREFIX_ROOT=${XGW_LLVM_PREFIX_ROOT:-/var/lib/xgw/toolchain}

die() { echo "xgw setup: $*" >&2; exit 1; }
say() { echo "xgw setup: $*"; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs Debian packages and mounts bpffs); run it again with sudo."
command -v rustup >/dev/null || die "rustup is missing; install the Rust toolchain (rustup) first."

# --- Debian packages ---------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || die "apt-get is missing, cannot install: ${missing[*]}."
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq >/dev/null || die "apt-get update failed; check the package mirror."
    # Debian starts no services here, but keep package scripts from trying to.
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/tmp/xgw-apt.log 2>&1; then
        tail -5 /tmp/xgw-apt.log >&2
        die "apt-get could not install ${missing[*]} (log: /tmp/xgw-apt.log)."
    fi
    # Installing `prometheus` for promtool enables and, under systemd, starts
    # a Prometheus server; one this script installed is stopped again.
    if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
        systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    fi
fi

# --- nightly + rust-src ------------------------------------------------------
rustc +nightly -vV >/dev/null 2>&1 \
    || die "the Rust nightly toolchain is missing; the eBPF crate needs it (rustup toolchain install nightly)."
if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
    say "adding rust-src to nightly"
    rustup component add rust-src --toolchain nightly >/dev/null 2>&1 \
        || die "could not add rust-src to the nightly toolchain (rustup component add rust-src --toolchain nightly)."
fi

# --- bpf-linker, built against the nightly's own LLVM ------------------------
llvm_major=$(rustc +nightly -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
[ -n "$llvm_major" ] || die "cannot read the LLVM version from 'rustc +nightly -vV'."
stamp="$LLVM_PREFIX_ROOT/bpf-linker.stamp"
want="bpf-linker $BPF_LINKER_VERSION llvm-$llvm_major $(rustc +nightly -vV | sed -n 's/^commit-hash: //p')"
if ! command -v bpf-linker >/dev/null || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] \
        || ! bpf-linker --version >/dev/null 2>&1; then
    say "building $want (about a minute)"
    sysroot=$(rustc +nightly --print sysroot)
    prefix="$LLVM_PREFIX_ROOT/llvm-$llvm_major"
    rm -rf "$prefix"; mkdir -p "$prefix/lib"
    compgen -G "$sysroot/lib/libLLVM*" >/dev/null \
        || die "the nightly toolchain has no libLLVM in $sysroot/lib; bpf-linker cannot be built against it."
    for f in "$sysroot"/lib/libLLVM*; do ln -sf "$f" "$prefix/lib/"; done
    ln -sf "$(basename "$(ls "$sysroot"/lib/libLLVM.so.* | head -1)")" "$prefix/lib/libLLVM.so"
    if ! LLVM_PREFIX="$prefix" cargo +stable install --locked --force bpf-linker \
            --version "$BPF_LINKER_VERSION" --no-default-features --features "llvm-$llvm_major" \
            >/tmp/xgw-bpf-linker.log 2>&1; then
        tail -5 /tmp/xgw-bpf-linker.log >&2
        die "building bpf-linker against LLVM $llvm_major failed (log: /tmp/xgw-bpf-linker.log)."
    fi
    bpf-linker --version >/dev/null 2>&1 || die "bpf-linker was installed but does not run (missing libLLVM?)."
    echo "$want" > "$stamp"
fi

# --- bpffs where xgw pins ----------------------------------------------------
if ! mountpoint -q "$BPFFS" 2>/dev/null; then
    mkdir -p "$BPFFS"
    mount -t bpf bpf "$BPFFS" || die "cannot mount bpffs on $BPFFS (is BPF enabled in this kernel?)."
fi

say "ok (packages, nightly rust-src, bpf-linker for LLVM $llvm_major, bpffs on $BPFFS)"
