//! Where the BFD module plugs in. The daemon tells it about every tunnel it
//! adds, adopts on start or removes, and asks it for session state when it
//! prints `show` and the metrics. Without BFD, `NoBfd` knows nothing and
//! `bfd.state` is shown as `null`.
use crate::{config::BfdSettings, ofport::{OfPort, TunnelPort}};

/// A BFD session's state as `show` and the metrics print it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BfdStatus {
    /// `admin_down`, `down`, `init` or `up` (RFC 5880 6.2).
    pub state: String,
    /// Times the session left `up`.
    pub flaps: u64,
}

pub trait TunnelHooks: Send {
    /// A tunnel now has `ofport` in the maps: on `tunnel add`, when the
    /// config adds or changes one, and for every committed tunnel when a
    /// (re)started daemon adopts the datapath.
    fn tunnel_added(&mut self, _tunnel: &TunnelPort, _ofport: OfPort, _bfd: &BfdSettings) {}
    /// The tunnel's map entries are gone.
    fn tunnel_removed(&mut self, _name: &str, _ofport: OfPort) {}
    /// The session of tunnel `name`, if one runs.
    fn bfd_status(&self, _name: &str) -> Option<BfdStatus> {
        None
    }
    /// The daemon stops; `keep_datapath` says whether the datapath stays.
    fn shutdown(&mut self, _keep_datapath: bool) {}
}

/// No BFD module.
pub struct NoBfd;

impl TunnelHooks for NoBfd {}
