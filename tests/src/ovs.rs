//! An Open vSwitch "hypervisor" peer: ovsdb-server and ovs-vswitchd
//! (userspace datapath) running inside a test namespace with private run, db,
//! log and config directories, a VM namespace plugged into `br-int`, and
//! Geneve tunnel ports toward whatever sits on the underlay (another
//! hypervisor, xgw, or a bare kernel).
//!
//! ```text
//!   <vm ns>   vm0 (VM MAC/IPs) ──veth── vm0p
//!   <hv ns>   br-int (netdev): vm0p, Geneve ports
//!             br-phy (netdev): <underlay veth>;  LOCAL port br-phy = underlay IPs
//!                 │
//!             the underlay veth (made by the caller, peer end anywhere)
//! ```
//!
//! Why it is built this way (each point was tried; see also
//! `tests/tests/it/ovs_peer.rs`):
//! - The userspace datapath routes tunnel traffic with its own table, filled
//!   from the kernel's routes: the underlay IP must be on `br-phy`'s LOCAL
//!   port with the veth inside `br-phy`. With the IP on the bare veth OVS logs
//!   "native tunnel routing failed" and sends nothing.
//! - OVS reads and writes its ports through AF_PACKET sockets, which neither
//!   complete partial checksums nor mark them: TX checksum offload must be off
//!   on every veth end that sends toward OVS, or TCP across the tunnel stalls.
//! - `arp_ignore=1`: otherwise the kernel also answers ARP for br-phy's IP on
//!   the raw underlay veth, with the veth's MAC, and peers learn the wrong MAC.
//!
//! The guard stops both daemons by the PID in their pidfiles (after checking
//! that the PID still runs our command line), then deletes the namespaces and
//! directories, on panic too. Names come from [`unique_name`], so tests can
//! run in parallel.
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU8, Ordering},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crate::{netns::unique_name, Netns, Veth};

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
/// Interface names inside the namespaces (private to them, so fixed).
pub const VM_IF: &str = "vm0";
pub const VM_PORT: &str = "vm0p";
pub const BR_INT: &str = "br-int";
pub const BR_PHY: &str = "br-phy";

static NEXT_MAC: AtomicU8 = AtomicU8::new(1);

/// OVN's Geneve option as OVS matches and sets it: one 32-bit field,
/// `tun_metadata0`, holding ingress key << 16 | egress key.
pub const OVN_TLV_MAP: &str = "{class=0x102,type=0x80,len=4}->tun_metadata0";

/// The OVN option's payload: 15-bit logical ingress port, 16-bit egress port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OvnKeys {
    pub ingress: u16,
    pub egress: u16,
}

impl OvnKeys {
    pub fn metadata(self) -> u32 {
        u32::from(self.ingress & 0x7fff) << 16 | u32::from(self.egress)
    }
}

/// BFD on a tunnel port (milliseconds; OVS defaults are 1000/1000/3).
#[derive(Debug, Clone, Copy)]
pub struct Bfd {
    pub min_rx: u32,
    pub min_tx: u32,
    pub mult: u32,
    /// `bfd:check_tnl_key=true`: accept BFD only with tunnel key 0 (what
    /// OVN sets on every tunnel it enables BFD on).
    pub check_tnl_key: bool,
}

/// A Geneve tunnel port on `br-int`.
#[derive(Debug, Clone)]
pub struct Geneve {
    pub remote_ip: String,
    /// `options:key`: a fixed VNI, or `None` for `key=flow` (set per packet
    /// by the flow table's `set_field:N->tun_id`).
    pub key: Option<u32>,
    pub local_ip: Option<String>,
    pub bfd: Option<Bfd>,
    /// `options:csum`; None leaves OVS's default.
    pub csum: Option<bool>,
    pub ofport_request: Option<u16>,
}

impl Geneve {
    pub fn new(remote_ip: &str, key: u32) -> Geneve {
        Geneve {
            remote_ip: remote_ip.into(),
            key: Some(key),
            local_ip: None,
            bfd: None,
            csum: None,
            ofport_request: None,
        }
    }
    /// OVN's tunnel: `options:key=flow`.
    pub fn flow_keyed(remote_ip: &str) -> Geneve {
        Geneve { key: None, ..Geneve::new(remote_ip, 0) }
    }
    pub fn bfd(mut self, min_rx: u32, min_tx: u32, mult: u32) -> Geneve {
        self.bfd = Some(Bfd { min_rx, min_tx, mult, check_tnl_key: false });
        self
    }
    pub fn check_tnl_key(mut self) -> Geneve {
        self.bfd.as_mut().expect("bfd() first").check_tnl_key = true;
        self
    }
    pub fn local_ip(mut self, ip: &str) -> Geneve {
        self.local_ip = Some(ip.into());
        self
    }
    pub fn csum(mut self, on: bool) -> Geneve {
        self.csum = Some(on);
        self
    }
    pub fn ofport_request(mut self, ofport: u16) -> Geneve {
        self.ofport_request = Some(ofport);
        self
    }
}

/// OpenFlow port counters from `ovs-ofctl dump-ports` (None where OVS prints `?`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCounters {
    pub rx_packets: Option<u64>,
    pub rx_bytes: Option<u64>,
    pub rx_dropped: Option<u64>,
    pub tx_packets: Option<u64>,
    pub tx_bytes: Option<u64>,
    pub tx_dropped: Option<u64>,
}

/// The VM plugged into `br-int`.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub mac: [u8; 6],
    /// With prefix length, e.g. `203.0.113.1/24`.
    pub ip4: Option<String>,
    pub ip6: Option<String>,
    /// Leaves room for the Geneve overhead on a 1500-byte underlay.
    pub mtu: u32,
}

/// Configuration of one hypervisor; [`OvsBuilder::start`] makes it real.
#[derive(Debug)]
pub struct OvsBuilder {
    ns: Netns,
    underlay: String,
    ip4: Option<String>,
    ip6: Option<String>,
    underlay_mac: [u8; 6],
    vm: Option<VmConfig>,
    afxdp: Option<usize>,
}

impl OvsBuilder {
    /// `ns` becomes the hypervisor's namespace (the guard owns and deletes
    /// it); `underlay` is an interface already in it, typically one end of a
    /// [`Veth`] made with no address.
    pub fn new(ns: Netns, underlay: &str) -> OvsBuilder {
        let n = NEXT_MAC.fetch_add(1, Ordering::Relaxed);
        OvsBuilder {
            ns,
            underlay: underlay.into(),
            ip4: None,
            ip6: None,
            underlay_mac: [0x02, 0x00, 0x5e, 0x0f, n, 0x01],
            vm: None,
            afxdp: None,
        }
    }
    /// IPv4 underlay address with prefix, e.g. `198.51.100.1/24`.
    pub fn ip4(mut self, addr: &str) -> Self {
        self.ip4 = Some(addr.into());
        self
    }
    /// IPv6 underlay address with prefix, e.g. `2001:db8::1/64`.
    pub fn ip6(mut self, addr: &str) -> Self {
        self.ip6 = Some(addr.into());
        self
    }
    /// The MAC of br-phy's LOCAL port, the underlay MAC peers talk to.
    pub fn underlay_mac(mut self, mac: [u8; 6]) -> Self {
        self.underlay_mac = mac;
        self
    }
    /// A VM namespace with one interface in br-int.
    pub fn vm(mut self, mac: [u8; 6], ip4: Option<&str>, ip6: Option<&str>) -> Self {
        self.vm = Some(VmConfig { mac, ip4: ip4.map(Into::into), ip6: ip6.map(Into::into), mtu: 1400 });
        self
    }

    /// The underlay and the VM's port as AF_XDP ports (`type=afxdp`, native
    /// XDP on the veth, OVS's own XDP program and socket per port) served by
    /// a PMD thread on CPU `pmd_cpu`: OVS's fastest datapath without DPDK.
    /// Without it, ports are OVS's default for the userspace datapath, an
    /// AF_PACKET socket each.
    pub fn afxdp(mut self, pmd_cpu: usize) -> Self {
        self.afxdp = Some(pmd_cpu);
        self
    }

    /// Starts OVS and builds the bridges. Panics (after cleaning up) on any failure.
    pub fn start(self) -> OvsHypervisor {
        let dir = std::env::temp_dir().join(unique_name("ovs"));
        // The guard exists before anything runs, so a failure half-way
        // through still stops what was started.
        let mut hv = OvsHypervisor {
            dir,
            underlay: self.underlay,
            underlay_mac: self.underlay_mac,
            ip4: self.ip4,
            ip6: self.ip6,
            vm_config: self.vm,
            afxdp: self.afxdp,
            vm: None,
            extra_vms: Vec::new(),
            ovn_controller: false,
            ns: self.ns,
        };
        hv.setup();
        hv
    }
}

/// A running Open vSwitch hypervisor; everything it made is removed on drop.
#[derive(Debug)]
pub struct OvsHypervisor {
    dir: PathBuf,
    underlay: String,
    underlay_mac: [u8; 6],
    ip4: Option<String>,
    ip6: Option<String>,
    vm_config: Option<VmConfig>,
    /// AF_XDP ports, PMD on this CPU (`OvsBuilder::afxdp`).
    afxdp: Option<usize>,
    // Dropped in this order, after Drop::drop stopped the daemons.
    vm: Option<Netns>,
    extra_vms: Vec<Netns>,
    ovn_controller: bool,
    ns: Netns,
}

/// Formats a MAC as OVS and iproute2 write it.
pub fn mac_str(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

impl OvsHypervisor {
    /// Shorthand for `OvsBuilder::new`.
    pub fn builder(ns: Netns, underlay: &str) -> OvsBuilder {
        OvsBuilder::new(ns, underlay)
    }

    fn setup(&mut self) {
        for sub in ["run", "db", "log", "etc"] {
            fs::create_dir_all(self.dir.join(sub)).expect("OVS dirs");
        }
        let ns = &self.ns;
        ns.ok(&["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1"]);
        // The raw underlay veth belongs to OVS: no kernel IPv6 (link-local,
        // router solicitations) on it. br-phy, created later by OVS, keeps it.
        ns.ok(&["sysctl", "-qw", &format!("net.ipv6.conf.{}.disable_ipv6=1", self.underlay)]);
        ns.ok(&["ethtool", "-K", &self.underlay, "tx", "off"]);
        ns.ok(&["ip", "link", "set", &self.underlay, "up"]);

        let db = self.dir.join("db/conf.db");
        crate::sh(&["ovsdb-tool", "create", db.to_str().unwrap(), SCHEMA]);
        let run = self.dir.join("run");
        let log = self.dir.join("log");
        self.ovs_ok(&[
            "ovsdb-server",
            db.to_str().unwrap(),
            &format!("--remote=punix:{}", run.join("db.sock").display()),
            &format!("--pidfile={}", run.join("ovsdb-server.pid").display()),
            "--detach",
            &format!("--log-file={}", log.join("ovsdb-server.log").display()),
            "-vconsole:off",
        ]);
        self.vsctl(&["--no-wait", "init"]);
        self.vsctl(&["--no-wait", "set", "Open_vSwitch", ".", "other_config:hw-offload=false"]);
        if let Some(cpu) = self.afxdp {
            let mask = format!("other_config:pmd-cpu-mask={:#x}", 1u64 << cpu);
            self.vsctl(&["--no-wait", "set", "Open_vSwitch", ".", &mask]);
        }
        // --detach returns once the daemon is ready, with its pidfile written.
        self.ovs_ok(&[
            "ovs-vswitchd",
            &format!("unix:{}", run.join("db.sock").display()),
            &format!("--pidfile={}", run.join("ovs-vswitchd.pid").display()),
            "--detach",
            &format!("--log-file={}", log.join("ovs-vswitchd.log").display()),
            "-vconsole:off",
        ]);

        let hwaddr = format!("other_config:hwaddr={}", mac_str(self.underlay_mac));
        self.vsctl(&["add-br", BR_PHY, "--", "set", "bridge", BR_PHY, "datapath_type=netdev", &hwaddr]);
        self.add_port(BR_PHY, &self.underlay);
        self.vsctl(&["add-br", BR_INT, "--", "set", "bridge", BR_INT, "datapath_type=netdev"]);
        // br-int's LOCAL port stays down: nothing of the host should leak
        // into the overlay.
        let ns = &self.ns;
        if let Some(a) = &self.ip4 {
            ns.ok(&["ip", "addr", "add", a, "dev", BR_PHY]);
        }
        if let Some(a) = &self.ip6 {
            // nodad: the address is usable at once, no 1-2 s wait.
            ns.ok(&["ip", "addr", "add", a, "dev", BR_PHY, "nodad"]);
        }
        ns.ok(&["ip", "link", "set", BR_PHY, "up"]);

        if let Some(vm) = self.vm_config.clone() {
            self.vm = Some(self.plug_vm(VM_PORT, &vm));
        }
    }

    /// A VM namespace whose `VM_IF` is plugged into br-int as `port`.
    fn plug_vm(&self, port: &str, vm: &VmConfig) -> Netns {
        let vns = Netns::new("vm");
        if vm.ip6.is_none() {
            vns.disable_ipv6();
        }
        Veth::new(&vns, VM_IF, "", &self.ns, port, "");
        self.ns.ok(&["sysctl", "-qw", &format!("net.ipv6.conf.{port}.disable_ipv6=1")]);
        vns.ok(&["ip", "link", "set", VM_IF, "address", &mac_str(vm.mac), "mtu", &vm.mtu.to_string()]);
        for a in vm.ip4.iter() {
            vns.ok(&["ip", "addr", "add", a, "dev", VM_IF]);
        }
        for a in vm.ip6.iter() {
            vns.ok(&["ip", "addr", "add", a, "dev", VM_IF, "nodad"]);
        }
        vns.ok(&["ethtool", "-K", VM_IF, "tx", "off"]);
        self.ns.ok(&["ethtool", "-K", port, "tx", "off"]);
        self.add_port(BR_INT, port);
        vns
    }

    fn add_port(&self, bridge: &str, port: &str) {
        match self.afxdp {
            None => self.vsctl(&["add-port", bridge, port]),
            Some(_) => self.vsctl(&[
                "add-port",
                bridge,
                port,
                "--",
                "set",
                "interface",
                port,
                "type=afxdp",
                "options:xdp-mode=native",
            ]),
        };
    }

    /// Another VM, on br-int port `port` (the builder's VM is on `VM_PORT`);
    /// its namespace lives as long as the hypervisor.
    pub fn add_vm(&mut self, port: &str, mac: [u8; 6], ip4: &str) -> &Netns {
        let vm = VmConfig { mac, ip4: Some(ip4.into()), ip6: None, mtu: 1400 };
        let vns = self.plug_vm(port, &vm);
        self.extra_vms.push(vns);
        self.extra_vms.last().unwrap()
    }

    pub fn extra_vm(&self, i: usize) -> &Netns {
        &self.extra_vms[i]
    }

    fn ovs_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns.name]).args(args);
        for (var, sub) in [("OVS_RUNDIR", "run"), ("OVS_DBDIR", "db"), ("OVS_LOGDIR", "log"), ("OVS_SYSCONFDIR", "etc")]
        {
            cmd.env(var, self.dir.join(sub));
        }
        cmd
    }

    /// Runs an OVS tool in the namespace with this instance's directories.
    pub fn ovs_exec(&self, args: &[&str]) -> Output {
        self.ovs_command(args).output().unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
    }

    /// As [`ovs_exec`](Self::ovs_exec), failing the test (with the vswitchd
    /// log tail) if the command fails.
    pub fn ovs_ok(&self, args: &[&str]) -> String {
        let out = self.ovs_exec(args);
        assert!(
            out.status.success(),
            "in {}: {args:?} failed ({}):\n{}\n--- ovs-vswitchd.log (tail):\n{}",
            self.ns.name,
            out.status,
            text(&out),
            self.log_tail(20)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Why OVS could not open `port` (its Interface's `error`, or an
    /// OpenFlow number of -1), or `None` if it did.
    pub fn port_error(&self, port: &str) -> Option<String> {
        let ofport = self.vsctl(&["get", "interface", port, "ofport"]);
        let error = self.vsctl(&["get", "interface", port, "error"]);
        let error = error.trim().trim_matches(|c| c == '[' || c == ']').trim_matches('"');
        (ofport.trim() == "-1" || !error.is_empty()).then(|| format!("ofport {}, {error}", ofport.trim()))
    }

    pub fn vsctl(&self, args: &[&str]) -> String {
        let mut a = vec!["ovs-vsctl", "--timeout=10"];
        a.extend_from_slice(args);
        self.ovs_ok(&a)
    }
    pub fn ofctl(&self, args: &[&str]) -> String {
        let mut a = vec!["ovs-ofctl"];
        a.extend_from_slice(args);
        self.ovs_ok(&a)
    }
    pub fn appctl(&self, args: &[&str]) -> String {
        let mut a = vec!["ovs-appctl", "-t", "ovs-vswitchd"];
        a.extend_from_slice(args);
        self.ovs_ok(&a)
    }

    /// The hypervisor's namespace.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }
    /// The VM's namespace (panics if the builder configured no VM).
    pub fn vm(&self) -> &Netns {
        self.vm.as_ref().expect("this hypervisor has no VM")
    }
    pub fn vm_config(&self) -> &VmConfig {
        self.vm_config.as_ref().expect("this hypervisor has no VM")
    }
    pub fn underlay(&self) -> &str {
        &self.underlay
    }
    pub fn underlay_mac(&self) -> [u8; 6] {
        self.underlay_mac
    }
    /// The underlay IPv4 address without prefix.
    pub fn ip4(&self) -> Option<&str> {
        self.ip4.as_deref().map(|a| a.split('/').next().unwrap())
    }
    pub fn ip6(&self) -> Option<&str> {
        self.ip6.as_deref().map(|a| a.split('/').next().unwrap())
    }
    /// The directory holding run/, db/, log/, etc/ of this instance.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds Geneve port `name` to br-int and returns its OpenFlow port number.
    pub fn add_geneve(&self, name: &str, g: &Geneve) -> u32 {
        let mut set = vec![
            "type=geneve".to_string(),
            format!("options:remote_ip={}", g.remote_ip),
            format!("options:key={}", g.key.map_or_else(|| "flow".to_owned(), |k| k.to_string())),
        ];
        if let Some(ip) = &g.local_ip {
            set.push(format!("options:local_ip={ip}"));
        }
        if let Some(c) = g.csum {
            set.push(format!("options:csum={c}"));
        }
        if let Some(p) = g.ofport_request {
            set.push(format!("ofport_request={p}"));
        }
        if let Some(b) = g.bfd {
            set.push("bfd:enable=true".into());
            set.push(format!("bfd:min_rx={}", b.min_rx));
            set.push(format!("bfd:min_tx={}", b.min_tx));
            set.push(format!("bfd:mult={}", b.mult));
            if b.check_tnl_key {
                set.push("bfd:check_tnl_key=true".into());
            }
        }
        let mut args = vec!["add-port", BR_INT, name, "--", "set", "interface", name];
        args.extend(set.iter().map(String::as_str));
        self.vsctl(&args);
        self.ofport(name)
    }

    /// The OpenFlow port number of interface `name` (waits until assigned).
    pub fn ofport(&self, name: &str) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.vsctl(&["get", "interface", name, "ofport"]);
            match v.trim().parse::<i64>() {
                Ok(n) if n > 0 => return n as u32,
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => panic!("interface {name} has no OpenFlow port: {v}\n{}", self.log_tail(20)),
            }
        }
    }

    /// Maps OVN's option to `tun_metadata0` (once per switch) and steers the
    /// VM's traffic into `tunnel` carrying `send` in that option. Traffic from
    /// `tunnel` goes to the VM: only when it carries `expect`, if given (the
    /// rest is dropped, so a test sees whether OVS understood the keys).
    pub fn install_ovn_option(&self, tunnel: &str, send: OvnKeys, expect: Option<OvnKeys>) {
        if !self.ofctl(&["dump-tlv-map", BR_INT]).contains("tun_metadata0") {
            self.ofctl(&["add-tlv-map", BR_INT, OVN_TLV_MAP]);
        }
        let flows = [
            Some(format!(
                "priority=100,in_port={VM_PORT},actions=set_field:{:#x}->tun_metadata0,output:{tunnel}",
                send.metadata()
            )),
            Some(match expect {
                Some(k) => {
                    format!("priority=100,in_port={tunnel},tun_metadata0={:#x},actions=output:{VM_PORT}", k.metadata())
                }
                None => format!("priority=100,in_port={tunnel},actions=output:{VM_PORT}"),
            }),
            expect.map(|_| format!("priority=90,in_port={tunnel},actions=drop")),
        ];
        for f in flows.iter().flatten() {
            self.ofctl(&["add-flow", BR_INT, f]);
        }
    }

    /// `ovs-appctl bfd/show [iface]`.
    pub fn bfd_show(&self, iface: Option<&str>) -> String {
        match iface {
            Some(i) => self.appctl(&["bfd/show", i]),
            None => self.appctl(&["bfd/show"]),
        }
    }

    /// The `bfd_status` column of interface `name`, as a map
    /// (`state`, `forwarding`, `remote_state`, `diagnostic`, ...).
    pub fn bfd_status(&self, name: &str) -> BTreeMap<String, String> {
        parse_ovsdb_map(&self.vsctl(&["get", "interface", name, "bfd_status"]))
    }

    /// The live BFD session states of `name` from `bfd/show`: (local, remote).
    /// (The `bfd_status` column lags: OVS writes it to the database lazily.)
    pub fn bfd_states(&self, name: &str) -> (String, String) {
        let show = self.bfd_show(Some(name));
        let field = |key: &str| {
            show.lines().find_map(|l| l.trim().strip_prefix(key)).map(|v| v.trim().to_string()).unwrap_or_default()
        };
        (field("Local Session State:"), field("Remote Session State:"))
    }

    /// Waits until both ends of BFD on `name` are `state` (e.g. "up") as
    /// `bfd/show` reports them; returns how long it took.
    pub fn wait_bfd_state(&self, name: &str, state: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let (local, remote) = self.bfd_states(name);
            if local == state && remote == state {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "BFD on {name} not {state} after {timeout:?}:\n{}",
                self.bfd_show(Some(name))
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ovs-ofctl dump-ports <bridge> [port]`, raw.
    pub fn dump_ports(&self, bridge: &str, port: Option<&str>) -> String {
        match port {
            Some(p) => self.ofctl(&["dump-ports", bridge, p]),
            None => self.ofctl(&["dump-ports", bridge]),
        }
    }

    /// Counters of one port of `bridge`.
    pub fn port_counters(&self, bridge: &str, port: &str) -> PortCounters {
        parse_dump_ports(&self.dump_ports(bridge, Some(port)))
    }

    /// The datapath's coverage counter `name` (e.g.
    /// `drop_action_invalid_tunnel_metadata`), 0 if it never fired.
    pub fn coverage(&self, name: &str) -> u64 {
        let out = self.appctl(&["coverage/read-counter", name]);
        out.trim().parse().unwrap_or_else(|_| panic!("coverage/read-counter {name}: {out}"))
    }

    /// Pings `dst` from the VM; true when every echo was answered.
    /// Pings `dst` from the VM, one request at a time, until one is answered
    /// or `timeout` passes: the first packets toward a new peer wait on ARP
    /// and on OVS's slow path, and a loaded machine can lose them.
    pub fn vm_reachable(&self, dst: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.vm_ping(dst, 1) {
                return true;
            }
        }
        false
    }

    pub fn vm_ping(&self, dst: &str, count: u32) -> bool {
        let out = self.vm().exec(&["ping", "-c", &count.to_string(), "-i", "0.1", "-W", "1", dst]);
        out.status.success() && text(&out).contains(&format!("{count} received"))
    }

    /// The last `n` lines of ovs-vswitchd's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = fs::read_to_string(self.dir.join("log/ovs-vswitchd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Stops the daemon whose pidfile is `run/<name>.pid`, by that PID, after
    /// checking that the PID still runs our command line (pidfile path in it).
    fn stop_daemon(&self, name: &str) {
        stop_pidfile(&self.dir.join("run").join(format!("{name}.pid")));
    }

    /// Makes this hypervisor an OVN chassis: br-int as ovn-controller
    /// wants it, the local `Open_vSwitch` keys it reads, and ovn-controller
    /// itself (stopped first on drop). ovn-controller finds OpenFlow at
    /// `$OVN_RUNDIR/br-int.mgmt`, so it shares OVS's run directory.
    pub fn start_ovn_controller(&mut self, system_id: &str, sb_remote: &str, encap_ip: &str) {
        self.vsctl(&["set", "bridge", BR_INT, "fail-mode=secure", "other-config:disable-in-band=true"]);
        self.vsctl(&[
            "set",
            "Open_vSwitch",
            ".",
            &format!("external_ids:system-id={system_id}"),
            &format!("external_ids:hostname={system_id}"),
            &format!("external_ids:ovn-remote={sb_remote}"),
            "external_ids:ovn-encap-type=geneve",
            &format!("external_ids:ovn-encap-ip={encap_ip}"),
            &format!("external_ids:ovn-bridge={BR_INT}"),
            "external_ids:ovn-bridge-datapath-type=netdev",
        ]);
        let run = self.dir.join("run");
        let log = self.dir.join("log");
        let mut cmd = self.ovs_command(&[
            "ovn-controller",
            &format!("unix:{}", run.join("db.sock").display()),
            &format!("--pidfile={}", run.join("ovn-controller.pid").display()),
            "--detach",
            &format!("--log-file={}", log.join("ovn-controller.log").display()),
            "-vconsole:off",
        ]);
        for (var, sub) in [("OVN_RUNDIR", "run"), ("OVN_LOGDIR", "log"), ("OVN_DBDIR", "db")] {
            cmd.env(var, self.dir.join(sub));
        }
        let out = cmd.output().expect("run ovn-controller");
        assert!(out.status.success(), "ovn-controller: {}", text(&out));
        self.ovn_controller = true;
    }

    /// ovn-controller's log, for failure messages.
    pub fn ovn_log_tail(&self, n: usize) -> String {
        let log = self.ovn_log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// ovn-controller's whole log.
    pub fn ovn_log(&self) -> String {
        fs::read_to_string(self.dir.join("log/ovn-controller.log")).unwrap_or_default()
    }

    /// ovn-controller's PID (from its pidfile).
    pub fn ovn_controller_pid(&self) -> u32 {
        let pidfile = self.dir.join("run/ovn-controller.pid");
        let pid = fs::read_to_string(&pidfile).unwrap_or_else(|e| panic!("{}: {e}", pidfile.display()));
        pid.trim().parse().unwrap_or_else(|_| panic!("{}: {pid:?}", pidfile.display()))
    }

    /// `ovn-appctl` on this hypervisor's ovn-controller (`vlog/set ...`,
    /// `connection-status`); its output, which must be a success.
    pub fn ovn_appctl(&self, args: &[&str]) -> String {
        let ctl = self.dir.join(format!("run/ovn-controller.{}.ctl", self.ovn_controller_pid()));
        let ctl = ctl.to_str().unwrap().to_owned();
        let mut a = vec!["ovn-appctl", "-t", &ctl];
        a.extend_from_slice(args);
        self.ovs_ok(&a)
    }
}

/// Stops the daemon whose pidfile is `pidfile`, if that PID still runs a
/// command line naming the pidfile (so never someone else's process):
/// SIGTERM, then SIGKILL after 5 s.
pub fn stop_pidfile(pidfile: &Path) {
    let Ok(pid) = fs::read_to_string(pidfile).map(|s| s.trim().parse::<i32>().unwrap_or(0)) else {
        return;
    };
    if pid <= 0 {
        return;
    }
    let ours = |pid: i32| {
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        // A zombie has an empty cmdline: gone for our purposes.
        String::from_utf8_lossy(&cmdline).contains(pidfile.to_str().unwrap())
    };
    if !ours(pid) {
        return;
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while ours(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if ours(pid) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

impl Drop for OvsHypervisor {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The daemon's own account is the first thing one needs after a failure.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "--- {} ovs-vswitchd.log (tail):\n{}", self.ns.name, self.log_tail(30));
        }
        if self.ovn_controller {
            self.stop_daemon("ovn-controller");
        }
        self.stop_daemon("ovs-vswitchd");
        self.stop_daemon("ovsdb-server");
        let _ = fs::remove_dir_all(&self.dir);
        // The namespaces go with the fields (vm first, then ns).
    }
}

/// Parses an OVSDB map as ovs-vsctl prints it: `{a=b, c="d e"}`.
pub fn parse_ovsdb_map(s: &str) -> BTreeMap<String, String> {
    let s = s.trim().trim_start_matches('{').trim_end_matches('}');
    let mut map = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars
            .by_ref()
            .take_while(|&c| c != '=')
            .collect::<String>()
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_string();
        if key.is_empty() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => val.extend(chars.next()),
                    '"' => break,
                    c => val.push(c),
                }
            }
            chars.by_ref().take_while(|&c| c != ',').for_each(drop);
        } else {
            val = chars.by_ref().take_while(|&c| c != ',').collect::<String>().trim().to_string();
        }
        map.insert(key.trim_matches('"').to_string(), val);
    }
    map
}

/// Parses the counters of the (first) port in `ovs-ofctl dump-ports` output.
pub fn parse_dump_ports(s: &str) -> PortCounters {
    let field = |line: &str, name: &str| -> Option<u64> {
        let v = line.split([',', ':']).map(str::trim).find_map(|kv| {
            let kv = kv.trim_start_matches("rx ").trim_start_matches("tx ");
            kv.strip_prefix(name).and_then(|r| r.strip_prefix('='))
        })?;
        v.parse().ok()
    };
    let mut c = PortCounters::default();
    for line in s.lines() {
        if line.contains("rx pkts=") && c.rx_packets.is_none() {
            c.rx_packets = field(line, "pkts");
            c.rx_bytes = field(line, "bytes");
            c.rx_dropped = field(line, "drop");
        } else if line.contains("tx pkts=") && c.tx_packets.is_none() {
            c.tx_packets = field(line, "pkts");
            c.tx_bytes = field(line, "bytes");
            c.tx_dropped = field(line, "drop");
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ovsdb_maps_parse_as_ovs_vsctl_prints_them() {
        let m = parse_ovsdb_map(
            r#"{diagnostic="No Diagnostic", flap_count="1", forwarding="true", remote_diagnostic="No Diagnostic", remote_state=up, state=up}"#,
        );
        assert_eq!(m["diagnostic"], "No Diagnostic");
        assert_eq!(m["flap_count"], "1");
        assert_eq!(m["forwarding"], "true");
        assert_eq!(m["state"], "up");
        assert_eq!(m.len(), 6);
        assert!(parse_ovsdb_map("{}").is_empty());
    }

    #[test]
    fn dump_ports_output_parses() {
        let s = "OFPST_PORT reply (xid=0x4): 1 ports\n  port  \"gnv0\": rx pkts=12, bytes=1176, drop=?, errs=?, frame=?, over=?, crc=?\n           tx pkts=10, bytes=980, drop=0, errs=?, coll=?\n";
        let c = parse_dump_ports(s);
        assert_eq!(
            c,
            PortCounters {
                rx_packets: Some(12),
                rx_bytes: Some(1176),
                rx_dropped: None,
                tx_packets: Some(10),
                tx_bytes: Some(980),
                tx_dropped: Some(0)
            }
        );
    }

    #[test]
    fn ovn_metadata_packs_ingress_over_egress() {
        assert_eq!(OvnKeys { ingress: 0x11, egress: 0x22 }.metadata(), 0x0011_0022);
        assert_eq!(OvnKeys { ingress: 0xffff, egress: 1 }.metadata(), 0x7fff_0001);
    }
}
