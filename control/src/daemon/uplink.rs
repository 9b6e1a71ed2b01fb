//! The uplink: the underlay interface Geneve arrives on and leaves by, and
//! what the datapath knows of it (the UPLINK map: ifindex, MTU, MAC, the
//! gateway's tunnel addresses). The kernel's MTU and MAC are followed, so
//! that a jumbo MTU or a new MAC needs no restart; an uplink that is
//! recreated (a new ifindex) needs one, which is said as an error.
use std::net::IpAddr;

use anyhow::{bail, Result};
use xgw_common::maps::{Uplink as UplinkEntry, UPLINK_HAS_IP4, UPLINK_HAS_IP6};

use crate::{
    api::UplinkView,
    datapath::{self, AttachMode},
    ofport::BpfDatapath,
    types::MacAddr,
};

/// What the kernel says of the uplink now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// `None`: no interface of that name.
    pub ifindex: Option<u32>,
    pub mac: [u8; 6],
    pub mtu: u32,
}

/// What changed at a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Changes {
    /// A new MAC: the source of every Geneve frame, BFD's included.
    pub mac: Option<[u8; 6]>,
    pub mtu: bool,
}

pub struct Uplink {
    ifname: String,
    ifindex: u32,
    mac: [u8; 6],
    mtu: u32,
    ip4: Option<[u8; 4]>,
    ip6: Option<[u8; 16]>,
    mode: AttachMode,
    /// Set while the interface is missing.
    error: Option<String>,
}

impl Uplink {
    pub fn new(
        ifname: &str,
        ifindex: u32,
        (mac, mtu): ([u8; 6], u32),
        ip4: Option<[u8; 4]>,
        ip6: Option<[u8; 16]>,
        mode: AttachMode,
    ) -> Uplink {
        let u = Uplink { ifname: ifname.to_owned(), ifindex, mac, mtu, ip4, ip6, mode, error: None };
        u.warn_mtu();
        u
    }

    /// The largest MTU the datapath carries in full here.
    pub fn max_mtu(&self) -> u32 {
        datapath::max_mtu(self.mode, self.ip6.is_some())
    }

    /// What happens to frames the MTU allows but the datapath cannot carry,
    /// if any.
    pub fn mtu_warning(&self) -> Option<String> {
        let max = self.max_mtu();
        (self.mtu > max).then(|| {
            format!(
                "mtu {} exceeds the {max} the datapath carries in {} mode with an IPv6 tunnel address: \
                 longer multi-buffer frames toward IPv6 tunnels are dropped (drop reason multibuffer)",
                self.mtu, self.mode
            )
        })
    }

    fn warn_mtu(&self) {
        if let Some(w) = self.mtu_warning() {
            tracing::warn!(uplink = self.ifname, mtu = self.mtu, max_mtu = self.max_mtu(), "{w}");
        }
    }

    /// The UPLINK entry for what is known now.
    fn entry(&self) -> UplinkEntry {
        let mut flags = 0;
        if self.ip4.is_some() {
            flags |= UPLINK_HAS_IP4;
        }
        if self.ip6.is_some() {
            flags |= UPLINK_HAS_IP6;
        }
        UplinkEntry {
            ifindex: self.ifindex,
            mtu: self.mtu,
            mac: self.mac,
            flags,
            _pad: 0,
            ip4: self.ip4.unwrap_or_default(),
            ip6: self.ip6.unwrap_or_default(),
        }
    }

    /// Writes the uplink's entries: before its program is attached (a new
    /// one reads them at once, an adopted one already does).
    pub fn write(&self, dp: &mut BpfDatapath) -> Result<()> {
        dp.write_uplink(self.entry()).map_err(|e| anyhow::anyhow!("writing the UPLINK map: {e}"))
    }

    /// Compares the kernel's view with ours. A recreated uplink is an
    /// error (everything bound to its ifindex must be set up anew, which
    /// is what a start does); a missing one is noted, once; a new MAC or
    /// MTU is what the caller writes with `follow`.
    pub fn look(&mut self, now: Link) -> Result<Changes> {
        match now.ifindex {
            Some(i) if i != self.ifindex => bail!(
                "uplink {} was recreated (ifindex {} -> {i}); exiting so that the service manager restarts xgw on it (the datapath keeps running)",
                self.ifname,
                self.ifindex
            ),
            Some(_) => {
                self.error = None;
                Ok(Changes {
                    mac: (now.mac != self.mac).then_some(now.mac),
                    mtu: now.mtu != self.mtu,
                })
            }
            None => {
                if self.error.is_none() {
                    tracing::warn!(uplink = self.ifname, "uplink interface is gone: no Geneve in or out until it returns");
                    self.error = Some(format!("uplink interface {} is gone", self.ifname));
                }
                Ok(Changes::default())
            }
        }
    }

    /// Takes the kernel's MAC and MTU into UPLINK (encap's outer source
    /// and frame limit change at the next packet). A failed write keeps
    /// the old values, to be tried again at the next look.
    pub fn follow(&mut self, now: Link, dp: &mut BpfDatapath) -> Result<()> {
        let old = (self.mac, self.mtu);
        (self.mac, self.mtu) = (now.mac, now.mtu);
        if let Err(e) = self.write(dp) {
            (self.mac, self.mtu) = old;
            return Err(e);
        }
        tracing::info!(
            uplink = self.ifname,
            mac = %MacAddr(self.mac),
            mtu = self.mtu,
            old_mac = %MacAddr(old.0),
            old_mtu = old.1,
            "uplink changed; encap follows"
        );
        self.warn_mtu();
        Ok(())
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn ip4(&self) -> Option<std::net::Ipv4Addr> {
        self.ip4.map(Into::into)
    }

    pub fn local_ips(&self) -> Vec<IpAddr> {
        self.ip4.map(IpAddr::from).into_iter().chain(self.ip6.map(IpAddr::from)).collect()
    }

    pub fn view(&self) -> UplinkView {
        UplinkView {
            ifname: self.ifname.clone(),
            ifindex: self.ifindex,
            mac: MacAddr(self.mac).to_string(),
            mtu: self.mtu,
            local_ips: self.local_ips(),
            mode: self.mode,
            max_mtu: self.max_mtu(),
            mtu_warning: self.mtu_warning(),
            error: self.error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uplink() -> Uplink {
        Uplink::new("ul", 7, ([2, 0, 0, 0, 0, 1], 1500), Some([198, 51, 100, 1]), None, AttachMode::Native)
    }

    #[test]
    fn a_look_reports_what_moved() {
        let mut u = uplink();
        let same = Link { ifindex: Some(7), mac: [2, 0, 0, 0, 0, 1], mtu: 1500 };
        assert_eq!(u.look(same).unwrap(), Changes::default());
        let jumbo = Link { mtu: 9000, ..same };
        assert_eq!(u.look(jumbo).unwrap(), Changes { mac: None, mtu: true });
        let moved = Link { mac: [2, 0, 0, 0, 0, 9], ..same };
        assert_eq!(u.look(moved).unwrap().mac, Some([2, 0, 0, 0, 0, 9]));
    }

    #[test]
    fn a_gone_uplink_is_shown_and_a_recreated_one_is_an_error() {
        let mut u = uplink();
        let gone = Link { ifindex: None, mac: [0; 6], mtu: 0 };
        assert_eq!(u.look(gone).unwrap(), Changes::default());
        assert_eq!(u.view().error.as_deref(), Some("uplink interface ul is gone"));
        let back = Link { ifindex: Some(7), mac: [2, 0, 0, 0, 0, 1], mtu: 1500 };
        u.look(back).unwrap();
        assert_eq!(u.view().error, None);
        let e = u.look(Link { ifindex: Some(8), ..back }).unwrap_err().to_string();
        assert!(e.contains("recreated (ifindex 7 -> 8)"), "{e}");
    }

    #[test]
    fn an_mtu_beyond_what_the_datapath_carries_is_reported() {
        let mut u = uplink();
        u.mtu = 65535;
        assert_eq!((u.view().max_mtu, u.view().mtu_warning), (65535, None), "IPv4: any MTU");
        u.ip6 = Some([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        u.mtu = 9000;
        assert_eq!((u.view().max_mtu, u.view().mtu_warning), (16370, None), "a jumbo MTU of 9000 is carried");
        u.mtu = 16371;
        let w = u.view().mtu_warning.expect("reported");
        assert!(w.contains("mtu 16371 exceeds the 16370") && w.contains("multibuffer"), "{w}");
    }

    #[test]
    fn the_entry_carries_the_families_present() {
        let u = uplink();
        let e = u.entry();
        assert_eq!((e.ifindex, e.mtu, e.flags, e.ip4), (7, 1500, UPLINK_HAS_IP4, [198, 51, 100, 1]));
        assert_eq!(u.local_ips(), ["198.51.100.1".parse::<IpAddr>().unwrap()]);
    }
}
