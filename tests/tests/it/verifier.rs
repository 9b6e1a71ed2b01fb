//! Verifier headroom. The kernel refuses a program once verification
//! explores 1,000,000 instructions; a datapath close to that limit breaks on
//! the next small change (it happened: computing the frame length once per
//! packet pushed the Geneve option walk over the edge). Every program must
//! stay well inside a budget, so a regression fails here, next to its cause.
use xgw_tests::{gateway::TestGateway, require_root};

/// A quarter of the kernel's limit.
const BUDGET: u32 = 250_000;

#[test]
fn every_program_verifies_well_inside_the_limit() {
    require_root!();
    let programs = ["xgw_uplink", "xgw_local", "xgw_probe", "xgw_pass", "xgw_flood"];
    let gw = TestGateway::load(&programs);
    for name in programs {
        let info = gw.ebpf.program(name).expect("program").info().expect("program info");
        let verified = info.verified_instruction_count().expect("kernel reports verified_insns");
        let size = info.size_translated().unwrap_or(0) / 8;
        eprintln!("{name}: {size} instructions, verifier explored {verified}");
        assert!(verified <= BUDGET, "{name}: verifier explored {verified} instructions, budget {BUDGET}");
    }
}
