//! The full packet fuzz run behind `cargo xtask fuzz` (root): a million
//! generated packets by default, seeded, optionally growing the corpus.
use std::process::ExitCode;

use clap::Parser;
use xgw_fuzz::{self as fuzz, Config, CORPUS};

#[derive(Parser)]
#[command(about = "Fuzz every xgw XDP program through BPF_PROG_TEST_RUN")]
struct Args {
    /// Generated packets (the corpus and the truncation sweep come on top).
    #[arg(long, default_value_t = 1_000_000)]
    packets: u64,
    /// Seed of the generator; the same seed replays the same packets.
    #[arg(long, default_value_t = 0x5eed_0000_8926)]
    seed: u64,
    /// Append packets with outcomes the corpus lacks to tests/fuzz/corpus.txt.
    #[arg(long)]
    save_corpus: bool,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let cfg = Config { packets: a.packets, seed: a.seed, save_corpus: a.save_corpus.then(|| CORPUS.into()) };
    let report = fuzz::run(&cfg);
    print!("seed {:#x}: {}", cfg.seed, report.summary());
    println!("drops: {:?}", report.drops);
    println!("replies: {:?}", report.replies);
    if report.failures.is_empty() {
        return ExitCode::SUCCESS;
    }
    for f in &report.failures {
        eprintln!("FAIL {f}");
    }
    ExitCode::FAILURE
}
