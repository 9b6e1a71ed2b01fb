//! The xgw controller: loads the XDP datapath, reads its maps, and (in later
//! modules) owns the OpenFlow port-number map.
pub mod bfd;
pub mod datapath;
pub mod ofport;
pub mod probe;
