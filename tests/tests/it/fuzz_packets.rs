//! The bounded fuzz pass CI runs: 100,000 generated packets (plus the kept
//! corpus and a truncation sweep) through every XDP program, each judged by
//! `xgw_fuzz::check` (crate `tests/fuzz/`). `cargo xtask fuzz` runs the full million.
//! `XGW_FUZZ_SEED` / `XGW_FUZZ_PACKETS` override the defaults.
use xgw_common::maps::{BFD_CNT_ECHO_REFLECTED, BFD_CNT_RX, BFD_CNT_XDP_TX};
use xgw_fuzz::{self as fuzz, Config};
use xgw_tests::{
    packet::{XDP_DROP, XDP_REDIRECT, XDP_TX},
    require_root,
};

const DEFAULT_SEED: u64 = 0x5eed_0000_8926;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name}={v}: not a number")))
}

#[test]
fn every_program_survives_generated_and_mutated_packets() {
    require_root!();
    let cfg = Config {
        packets: env_u64("XGW_FUZZ_PACKETS", 100_000),
        seed: env_u64("XGW_FUZZ_SEED", DEFAULT_SEED),
        save_corpus: None,
    };
    let report = fuzz::run(&cfg);
    eprintln!("fuzz (seed {:#x}): {}", cfg.seed, report.summary());
    assert!(
        report.failures.is_empty(),
        "{} failures (seed {:#x}), first ones:\n{}",
        report.failures.len(),
        cfg.seed,
        report.failures.join("\n")
    );

    // The generators must reach every outcome the oracle judges; otherwise
    // a generator that broke (everything dropped early, say) would pass.
    for (prog, verdict) in [
        ("xgw_uplink", XDP_REDIRECT),
        ("xgw_uplink", XDP_DROP),
        ("xgw_uplink", XDP_TX),
        ("xgw_local", XDP_REDIRECT),
        ("xgw_local", XDP_TX),
        ("xgw_local", XDP_DROP),
    ] {
        let n = report.verdicts.get(&(prog, verdict)).copied().unwrap_or(0);
        assert!(
            n >= (cfg.packets / 1000).max(1),
            "{prog} verdict {verdict} reached only {n} times: {:?}",
            report.verdicts
        );
    }
    for reason in [
        "geneve_truncated",
        "geneve_version",
        "geneve_protocol",
        "geneve_option_length",
        "geneve_critical_option",
        "geneve_option_limit",
        "unknown_tunnel",
        "unknown_destination",
        "mtu_exceeded",
        "flood",
        "hairpin",
    ] {
        assert!(
            report.drops.get(reason).copied().unwrap_or(0) > 0,
            "drop reason {reason} never reached: {:?}",
            report.drops
        );
    }
    for reply in ["arp", "nd", "too_big"] {
        assert!(report.replies.get(reply).copied().unwrap_or(0) > 0, "reply {reply} never sent: {:?}", report.replies);
    }
    // BFD: packets consumed by a session, echoes reflected, answers sent by
    // the datapath, and the discard reasons the generators aim at.
    for (slot, what) in
        [(BFD_CNT_RX, "received"), (BFD_CNT_ECHO_REFLECTED, "echo reflected"), (BFD_CNT_XDP_TX, "answered in XDP")]
    {
        assert!(report.bfd.get(&slot).copied().unwrap_or(0) > 0, "no BFD packet {what}: {:?}", report.bfd);
    }
    for reason in [
        "truncated",
        "version",
        "length",
        "detect_mult",
        "my_discriminator",
        "unknown_session",
        "no_session_for_peer",
        "ttl",
        "encapsulation",
    ] {
        assert!(
            report.bfd_drops.get(reason).copied().unwrap_or(0) > 0,
            "BFD discard {reason} never reached: {:?}",
            report.bfd_drops
        );
    }
}
