//! A BFD engine on pinned maps, alone in its process, until killed: what
//! the controller's BFD half does across a restart, for a test to SIGKILL
//! and start again (`tests/tests/it/bfd_restart.rs`).
//!
//! usage: xgw-bfd-engine PIN_DIR UPLINK MAC SESSIONS_JSON
//!
//! Run inside the gateway's network namespace. SESSIONS_JSON is an array of
//! `[name, path, config]` (`xgw::bfd::Path`, `xgw::bfd::Config` as serde
//! writes them). Sessions found running in the pinned maps are adopted.
//! Prints `ready adopted=N` on stderr once every session is added.
use std::io::Write;

use anyhow::{Context, Result};
use xgw::bfd::{Config, Engine, Options, Path, Uplink};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [pins, uplink, mac, sessions] = args.as_slice() else {
        anyhow::bail!("usage: xgw-bfd-engine PIN_DIR UPLINK MAC SESSIONS_JSON");
    };
    let mac: Vec<u8> = mac.split(':').map(|b| u8::from_str_radix(b, 16)).collect::<Result<_, _>>().context("MAC")?;
    let mac: [u8; 6] = mac.try_into().map_err(|_| anyhow::anyhow!("MAC: six bytes"))?;
    let sessions: Vec<(String, Path, Config)> = serde_json::from_str(sessions).context("SESSIONS_JSON")?;
    let mut ebpf = xgw::datapath::load_pinned(std::path::Path::new(pins))?;
    let engine = Engine::start(&mut ebpf, Uplink { ifname: uplink.clone(), mac }, Options::default())?;
    let found = engine.unclaimed();
    for (name, path, config) in sessions {
        engine.add(&name, path, config).with_context(|| format!("adding {name}"))?;
    }
    let adopted = found - engine.unclaimed();
    writeln!(std::io::stderr(), "ready adopted={adopted}")?;
    loop {
        std::thread::park();
    }
}
