//! The xgw controller: loads the XDP datapath, reads its maps, and (in later
//! modules) owns the OpenFlow port-number map.
pub mod api;
pub mod bfd;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod datapath;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod ofport;
pub mod ovn;
pub mod probe;
pub mod trace;
pub mod types;
