//! Packet fuzzing through every XDP program with BPF_PROG_TEST_RUN.
//!
//! A run is deterministic from its seed: first the kept corpus
//! (`tests/fuzz/corpus.txt`, one packet a line), then every truncation of a
//! few valid frames, then generated packets (random bytes, valid Geneve /
//! local / ARP / ND frames, and those broken by `gen::mutate`). Each packet
//! goes through one program and `check::check` judges the verdict, the
//! output bytes and the counters it moved against the configuration in
//! `world`. The test runs a bounded pass; `cargo xtask fuzz` the full one.
//! `xgw-fuzz` (this crate's binary) is that full pass; the bounded one is
//! the `fuzz_packets` module of the integration tests (`tests/tests/it/`),
//! which has this crate as a dev-dependency. The namespaces and the gateway
//! under test come from the harness (`xgw_tests`).
pub mod check;
pub mod gen;
pub mod world;

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use rand::{RngExt, SeedableRng};
use xgw_tests::packet::{test_run_on, Run};

use self::{
    gen::Rand,
    world::{Delta, Ingress, World, PROGRAMS},
};

/// The run's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Generated packets (the corpus and the truncation sweep come on top).
    pub packets: u64,
    pub seed: u64,
    /// Append packets showing an outcome the corpus lacks to this file.
    pub save_corpus: Option<std::path::PathBuf>,
}

/// One packet's outcome in a form that tells runs apart: the program, its
/// verdict, and the counters that moved.
type Outcome = String;

#[derive(Debug, Default)]
pub struct Report {
    pub tried: u64,
    pub corpus: u64,
    pub sweep: u64,
    pub generated: u64,
    pub by_program: BTreeMap<&'static str, u64>,
    pub outcomes: BTreeMap<Outcome, u64>,
    /// (program, verdict) -> packets.
    pub verdicts: BTreeMap<(&'static str, u32), u64>,
    /// Drop reason -> packets.
    pub drops: BTreeMap<&'static str, u64>,
    /// Reply kind -> packets.
    pub replies: BTreeMap<&'static str, u64>,
    /// BFD discard reason -> packets.
    pub bfd_drops: BTreeMap<&'static str, u64>,
    /// `BFD_COUNTERS` slot -> total moved.
    pub bfd: BTreeMap<u32, u64>,
    pub failures: Vec<String>,
    pub new_corpus: u64,
}

impl Report {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} packets ({} corpus, {} truncation sweep, {} generated), {} distinct outcomes, {} failures, {} new corpus entries\n",
            self.tried,
            self.corpus,
            self.sweep,
            self.generated,
            self.outcomes.len(),
            self.failures.len(),
            self.new_corpus
        );
        for (p, n) in &self.by_program {
            let _ = writeln!(s, "  {p:<13} {n:>9}");
        }
        let _ = writeln!(s, "  verdicts {:?}", self.verdicts);
        let _ = writeln!(s, "  drops {:?}", self.drops);
        let _ = writeln!(s, "  replies {:?}", self.replies);
        let _ = writeln!(s, "  BFD counters (slot: n) {:?}, BFD discards {:?}", self.bfd, self.bfd_drops);
        s
    }
}

/// The kept corpus: `<program> <ingress ifname or -> <hex>` per line.
pub const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus.txt");

const MAX_FAILURES: usize = 20;

/// Sessions are put back Up this often (in packets): BFD packets move them.
const BFD_RESET_EVERY: u64 = 8;

struct Runner<'a> {
    w: &'a mut World,
    before: world::Snapshot,
    report: Report,
    seen: std::collections::BTreeSet<Outcome>,
    save: Option<std::fs::File>,
}

impl Runner<'_> {
    fn one(&mut self, program: &'static str, ingress: &Ingress, packet: &[u8]) {
        if self.report.tried.is_multiple_of(BFD_RESET_EVERY) {
            self.w.reset_bfd();
            self.before = self.w.snapshot();
        }
        let prog = self.w.gw.program(program);
        let run: Run = test_run_on(prog, packet, self.w.ingress_ifindex(ingress));
        let after = self.w.snapshot();
        let d = Delta::between(&self.before, &after);
        self.before = after;
        self.report.tried += 1;
        *self.report.by_program.entry(program).or_default() += 1;
        *self.report.verdicts.entry((program, run.verdict)).or_default() += 1;
        for (k, n) in &d.drops {
            *self.report.drops.entry(k).or_default() += n;
        }
        for (k, n) in &d.replies {
            *self.report.replies.entry(k).or_default() += n;
        }
        for (k, n) in &d.bfd_drops {
            *self.report.bfd_drops.entry(k).or_default() += n;
        }
        for (k, n) in &d.bfd {
            *self.report.bfd.entry(*k).or_default() += n;
        }
        let outcome = format!(
            "{program} v{} drops{:?} replies{:?} tx{:?} bfd{:?}{:?}",
            run.verdict,
            d.drops,
            d.replies,
            d.tx.keys().collect::<Vec<_>>(),
            d.bfd_drops,
            d.bfd.iter().map(|c| c.0).collect::<Vec<_>>()
        );
        if let Err(e) = check::check(self.w, program, ingress, packet, &run, &d) {
            if self.report.failures.len() < MAX_FAILURES {
                let line = corpus_line(program, ingress, packet);
                self.report
                    .failures
                    .push(format!("{e}\n    verdict {} counters {d:?}\n    corpus line: {line}", run.verdict));
            }
        }
        if self.seen.insert(outcome.clone()) {
            if let Some(f) = &mut self.save {
                use std::io::Write as _;
                let _ = writeln!(f, "{}", corpus_line(program, ingress, packet));
                self.report.new_corpus += 1;
            }
        }
        *self.report.outcomes.entry(outcome).or_default() += 1;
    }
}

fn corpus_line(program: &str, ingress: &Ingress, packet: &[u8]) -> String {
    let hex: String = packet.iter().map(|b| format!("{b:02x}")).collect();
    format!("{program} {} {hex}", ingress.name())
}

fn parse_corpus_line(line: &str) -> Option<(&str, &str, Vec<u8>)> {
    let mut it = line.split_whitespace();
    let (prog, ingress, hex) = (it.next()?, it.next()?, it.next()?);
    let bytes =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect::<Option<_>>()?;
    Some((prog, ingress, bytes))
}

/// Runs the fuzzer; the caller decides what failures mean (the test fails).
pub fn run(cfg: &Config) -> Report {
    let mut w = World::new();
    let ns = w.ns.name.clone();
    xgw_tests::netns::enter(&ns, || run_in(&mut w, cfg))
}

fn run_in(w: &mut World, cfg: &Config) -> Report {
    let save = cfg.save_corpus.as_ref().map(|p| {
        std::fs::OpenOptions::new().create(true).append(true).open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    });
    let before = w.snapshot();
    let mut r = Runner { w, before, report: Report::default(), seen: Default::default(), save: None };

    // 1. The kept corpus, replayed as is; it seeds the outcomes already known.
    for (n, line) in std::fs::read_to_string(Path::new(CORPUS)).unwrap_or_default().lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (prog, ingress, bytes) =
            parse_corpus_line(line).unwrap_or_else(|| panic!("{CORPUS}:{}: malformed line", n + 1));
        let prog = *PROGRAMS
            .iter()
            .find(|p| **p == prog)
            .unwrap_or_else(|| panic!("{CORPUS}:{}: unknown program {prog}", n + 1));
        let ingress = r.w.ingress_named(ingress);
        r.one(prog, &ingress, &bytes);
        r.report.corpus += 1;
    }
    r.save = save;

    let mut rng = Rand::seed_from_u64(cfg.seed);

    // 2. Every truncation of a few valid frames, through their program.
    let w = &*r.w;
    let p1 = w.ports[0].clone();
    let local = Ingress::Port(p1.clone());
    let mut templates: Vec<(&'static str, Ingress, Vec<u8>)> = Vec::new();
    for _ in 0..4 {
        templates.push(("xgw_uplink", Ingress::Uplink, gen::geneve(&mut rng, w)));
    }
    templates.push(("xgw_uplink", Ingress::Uplink, gen::bfd_geneve(&mut rng, w)));
    templates.push(("xgw_uplink", Ingress::Uplink, gen::bfd_single_hop(&mut rng, w)));
    templates.push(("xgw_uplink", Ingress::Uplink, gen::bfd_echo(&mut rng)));
    let remote = w.remotes[0].mac;
    templates.push(("xgw_local", local.clone(), gen::l2_frame(&mut rng, p1.mac, remote, 64)));
    templates.push(("xgw_local", local.clone(), xgw_tests::packet::arp_request(p1.mac, p1.ip4, w.remotes[0].ip4)));
    templates.push(("xgw_local", local, xgw_tests::packet::neighbour_solicitation(p1.mac, p1.ip6, w.ports[1].ip6)));
    for (prog, ingress, t) in &templates {
        for len in 14..=t.len() {
            r.one(prog, ingress, &t[..len]);
            r.report.sweep += 1;
        }
    }

    // 3. Generated packets.
    for _ in 0..cfg.packets {
        let w = &*r.w;
        let roll = rng.random_range(0..100);
        if roll < 45 {
            let v = match rng.random_range(0..26) {
                0..=2 => gen::random(&mut rng),
                3..=5 => gen::underlay_other(&mut rng),
                6..=9 => gen::geneve(&mut rng, w),
                10..=19 => {
                    let mut v = gen::geneve(&mut rng, w);
                    for _ in 0..rng.random_range(1..3) {
                        v = gen::mutate(&mut rng, v);
                    }
                    v
                }
                n => {
                    let mut v = match n {
                        20 | 21 => gen::bfd_geneve(&mut rng, w),
                        22 | 23 => gen::bfd_single_hop(&mut rng, w),
                        _ => gen::bfd_echo(&mut rng),
                    };
                    if rng.random_bool(0.4) {
                        v = gen::mutate(&mut rng, v);
                    }
                    v
                }
            };
            // Now and then from another interface: single-hop peers are
            // known per interface, so there nothing is theirs.
            let ingress = if rng.random_range(0..10) != 0 { Ingress::Uplink } else { Ingress::Other };
            r.one("xgw_uplink", &ingress, &v);
        } else if roll < 92 {
            let port = (rng.random_range(0..12) != 0).then(|| w.ports[rng.random_range(0..w.ports.len())].clone());
            let src = port.clone().unwrap_or_else(|| p1.clone());
            let mut v = gen::local(&mut rng, w, &src);
            if rng.random_bool(0.4) {
                v = gen::mutate(&mut rng, v);
            }
            r.one("xgw_local", &port.map_or(Ingress::Other, Ingress::Port), &v);
        } else {
            let prog = PROGRAMS[2 + rng.random_range(0..PROGRAMS.len() - 2)];
            let v = if rng.random_bool(0.5) { gen::random(&mut rng) } else { gen::geneve(&mut rng, w) };
            r.one(prog, &Ingress::Other, &v);
        }
        r.report.generated += 1;
    }
    r.report
}
