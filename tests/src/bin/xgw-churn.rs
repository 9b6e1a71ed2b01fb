//! Churns ports through the product's port map (PortMap + BpfDatapath +
//! RedbStore) against pinned maps and a state directory, until killed, so
//! a test can SIGKILL it mid-transaction and check what a restart finds.
//!
//! usage: xgw-churn PIN_DIR STATE_DIR JOURNAL LOCALS [SEED]
//!
//! Local ports `vm0..vm{LOCALS-1}` use interfaces of the same names, which
//! must exist in the namespace it runs in. Every operation is journalled
//! before (`begin add NAME`) and after (`ok add NAME OFPORT`, `ok del NAME
//! OFPORT`, `err ...`) it runs, with one unbuffered write per line, so the
//! journal survives the kill and says which ports were acknowledged.
use std::{fs::OpenOptions, io::Write, path::PathBuf, time::Instant};

use anyhow::{Context, Result};
use xgw::ofport::{AllocatorConfig, BpfDatapath, PortMap, RedbStore};
use xgw_tests::ports::{local, tunnel_n};

/// Names drawn from a small pool, so adds and deletes of the same port
/// alternate and numbers are freed and reused.
const POOL: u32 = 200;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [pins, state, journal, locals, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: xgw-churn PIN_DIR STATE_DIR JOURNAL LOCALS [SEED]");
    };
    let locals: u32 = locals.parse().context("LOCALS")?;
    let mut rng: u64 = rest.first().map_or(Ok(0x9e37_79b9_7f4a_7c15), |s| s.parse()).context("SEED")?;
    let pins = PathBuf::from(pins);

    // The maps were pinned by whoever loaded the datapath; reopening them is
    // what a restarted controller does first, and skips parsing the object.
    let dp = BpfDatapath::open_pinned(&pins)?;
    let store = RedbStore::open(state.as_ref())?;
    // Hold-down short enough that numbers come back within a run.
    let config = AllocatorConfig { hold_down: std::time::Duration::from_millis(50) };
    let mut pm = PortMap::open(dp, store, config)?;
    let report = pm.reconcile();
    anyhow::ensure!(report.failed.is_empty(), "reconcile failed: {:?}", report.failed);
    let mut journal = OpenOptions::new().create(true).append(true).open(journal).context("journal")?;
    let mut log = |line: String| journal.write_all(format!("{line}\n").as_bytes());
    log(format!(
        "start ports={} reconcile recreated={} removed={} rewritten={}",
        pm.ports().count(),
        report.recreated.len(),
        report.removed.len(),
        report.rewritten.len()
    ))?;

    loop {
        // xorshift64: no dependency, and reproducible from SEED.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let i = (rng % u64::from(POOL)) as u32;
        let spec =
            if i < locals { local(&format!("vm{i}"), &format!("vm{i}"), i as u16 + 1, None) } else { tunnel_n(i) };
        let name = spec.name().to_owned();
        let now = Instant::now();
        if pm.get(&name).is_some() {
            log(format!("begin del {name}"))?;
            match pm.delete(&name, now) {
                Ok(n) => log(format!("ok del {name} {n}"))?,
                Err(e) => log(format!("err del {name}: {e}"))?,
            }
        } else {
            log(format!("begin add {name}"))?;
            match pm.add(&spec, now) {
                Ok(a) => log(format!("ok add {name} {}", a.ofport()))?,
                Err(e) => log(format!("err add {name}: {e}"))?,
            }
        }
    }
}
