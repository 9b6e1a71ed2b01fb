//! xgw's integration tests, one binary (one link instead of one per file).
//! Each module is one subject; a test's name is `module::test`, so
//! `cargo test -p xgw-tests --test it -- daemon_flows::` runs one module.
//! Helpers more than one module uses live in the harness library
//! (`tests/src/`, crate `xgw_tests`).
mod bfd_frr;
mod bfd_ovs;
mod bfd_restart;
mod bfd_stress;
mod bfd_xdp;
mod cli;
mod daemon;
mod daemon_bfd;
mod daemon_flows;
mod daemon_log;
mod e2e_geneve;
mod faults;
mod flood;
mod flow_cache;
mod fuzz_packets;
mod geneve_decap;
mod geneve_encap;
mod harness;
mod jumbo;
mod ofport_maps;
mod ovn_chassis;
mod ovn_sb;
mod ovs_flow_key;
mod ovs_interop;
mod ovs_peer;
mod ovs_wire;
mod port_security;
mod probe;
mod trace;
mod unit;
mod verifier;
