//! The addresses the datapath tests share: one gateway, one hypervisor
//! across the underlay, one VM behind the gateway. Documentation ranges only
//! (RFC 5737, RFC 3849), locally administered MACs.

/// The gateway's underlay MAC and tunnel IPs.
pub const GW_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01];
pub const GW_IP4: [u8; 4] = [198, 51, 100, 1];
pub const GW_IP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// The remote hypervisor on the underlay.
pub const HV_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x02];
pub const HV_IP4: [u8; 4] = [198, 51, 100, 2];
pub const HV_IP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
/// The VM behind the gateway's local port, and its logical switch.
pub const VM_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x20, 0x00, 0x01];
pub const VM_IP: [u8; 4] = [203, 0, 113, 1];
pub const VNI: u32 = 5001;
