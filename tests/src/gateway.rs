//! A datapath loaded for a test, configured by writing its maps directly.
//! (The controller's transactions write the same maps; these helpers let the
//! datapath be tested on its own.)
use std::collections::BTreeMap;

use aya::{
    maps::{Array, DevMapHash, HashMap, MapData, PerCpuArray},
    programs::Xdp,
    Ebpf,
};
use xgw_common::{
    counters::{Drop, PortStats, Reply},
    maps::{names::*, *},
};

pub struct TestGateway {
    pub ebpf: Ebpf,
    /// The namespace the gateway's interfaces live in. The kernel resolves
    /// a devmap's ifindex in the writer's namespace, so devmap writes must
    /// happen from inside it (from the host they would name host devices).
    netns: Option<String>,
    /// Every helper below that writes a map the flow caches mirror bumps it
    /// afterwards, as the controller does.
    generation: xgw::datapath::Generation,
}

/// XDP programs, and the TC flood program.
fn load_program(ebpf: &mut Ebpf, name: &str) {
    if name == xgw::datapath::FLOOD_PROGRAM {
        xgw::datapath::flood_program(ebpf).expect("load program");
    } else {
        xgw::datapath::xdp_program(ebpf, name).expect("load program");
    }
}

impl TestGateway {
    /// Loads the datapath and verifies `programs`.
    pub fn load(programs: &[&str]) -> TestGateway {
        let mut ebpf = xgw::datapath::load().expect("load datapath");
        for p in programs {
            load_program(&mut ebpf, p);
        }
        TestGateway::new(ebpf)
    }

    fn new(ebpf: Ebpf) -> TestGateway {
        let generation =
            xgw::datapath::Generation::open(ebpf.map(GENERATION).expect(GENERATION)).expect("mmap GENERATION");
        TestGateway { ebpf, netns: None, generation }
    }

    /// The flow caches' generation.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// CPU `cpu`'s encap flow slot `slot` (`FLOW_SLOTS` is the spare entry).
    pub fn encap_slot(&self, cpu: usize, slot: u32) -> EncapFlow {
        let m: PerCpuArray<&MapData, EncapFlow> = PerCpuArray::try_from(self.ebpf.map(ENCAP_FLOWS).unwrap()).unwrap();
        m.get(&slot, 0).unwrap()[cpu]
    }

    /// CPU `cpu`'s slot of the outer headers toward tunnel `ofport`.
    pub fn encap_outer(&self, cpu: usize, ofport: u16) -> EncapOuter {
        let m: PerCpuArray<&MapData, EncapOuter> = PerCpuArray::try_from(self.ebpf.map(ENCAP_OUTERS).unwrap()).unwrap();
        m.get(&(ofport as u32 % OUTER_SLOTS), 0).unwrap()[cpu]
    }

    /// As `load`, with the maps pinned in `dir` (created there, or reused:
    /// another process loading from `dir` shares them).
    pub fn load_pinned(dir: &std::path::Path, programs: &[&str]) -> TestGateway {
        let mut ebpf = xgw::datapath::load_pinned(dir).expect("load datapath");
        for p in programs {
            load_program(&mut ebpf, p);
        }
        TestGateway::new(ebpf)
    }

    /// Devmap entries written from now on resolve ifindexes in `ns`.
    pub fn in_netns(&mut self, ns: &crate::netns::Netns) {
        self.netns = Some(ns.name.clone());
    }

    /// Points DEVMAP `key` at `ifindex`, replacing what was there.
    pub fn devmap_set(&mut self, key: u32, ifindex: u32) {
        self.devmap_insert(key, ifindex);
    }

    fn devmap_insert(&mut self, key: u32, ifindex: u32) {
        let ns = self.netns.take();
        let mut dev = DevMapHash::try_from(self.ebpf.map_mut(DEVMAP).unwrap()).unwrap();
        match &ns {
            Some(ns) => crate::netns::enter(ns, || dev.insert(key, ifindex, None, 0)),
            None => dev.insert(key, ifindex, None, 0),
        }
        .unwrap_or_else(|e| panic!("devmap[{key}] = ifindex {ifindex}: {e}"));
        self.netns = ns;
    }

    /// Attaches `prog` in native mode to `ifname` inside `ns`; it stays
    /// attached until the gateway is dropped.
    pub fn attach(&mut self, ns: &crate::netns::Netns, prog: &str, ifname: &str) {
        let p: &mut Xdp = self.ebpf.program_mut(prog).expect("program").try_into().expect("xdp");
        ns.enter(|| p.attach(ifname, aya::programs::xdp::XdpMode::Driver))
            .unwrap_or_else(|e| panic!("attach {prog} to {ifname} in {}: {e}", ns.name));
    }

    /// Attaches the flood program (TC, clsact ingress) to `ifname` in `ns`;
    /// attached until the gateway is dropped.
    pub fn attach_flood(&mut self, ns: &crate::netns::Netns, ifname: &str) {
        let p: &mut aya::programs::SchedClassifier =
            self.ebpf.program_mut(xgw::datapath::FLOOD_PROGRAM).expect("program").try_into().expect("tc");
        ns.enter(|| {
            let _ = aya::programs::tc::qdisc_add_clsact(ifname);
            p.attach(ifname, aya::programs::TcAttachType::Ingress)
        })
        .unwrap_or_else(|e| panic!("attach xgw_flood to {ifname} in {}: {e}", ns.name));
    }

    /// Multicast group `key` of `vni`: `local` ports, then `tunnels`, by
    /// number; storm control at `rate_pps` (0: none).
    pub fn set_group(&mut self, vni: u32, key: u16, local: &[u16], tunnels: &[u16], rate_pps: u32) {
        let mut g = Group {
            local: local.len() as u16,
            count: (local.len() + tunnels.len()) as u16,
            rate_pps,
            ..Default::default()
        };
        for (i, m) in local.iter().chain(tunnels).enumerate() {
            g.members[i] = *m;
        }
        self.hash::<GroupKey, Group>(GROUPS).insert(GroupKey { vni, key, _pad: 0 }, g, 0).unwrap();
        self.generation.bump();
    }

    pub fn program(&self, name: &str) -> &Xdp {
        self.ebpf.program(name).expect("program").try_into().expect("xdp")
    }

    fn hash<K: aya::Pod, V: aya::Pod>(&mut self, name: &str) -> HashMap<&mut MapData, K, V> {
        HashMap::try_from(self.ebpf.map_mut(name).expect(name)).expect(name)
    }

    pub fn set_uplink(&mut self, uplink: Uplink) {
        let mut m: Array<&mut MapData, Uplink> = Array::try_from(self.ebpf.map_mut(UPLINK).unwrap()).unwrap();
        m.set(0, uplink, 0).unwrap();
        // Encap flow-cache slots hold outer headers built from it.
        self.generation.bump();
    }

    pub fn add_tunnel(&mut self, ofport: u32, tunnel: Tunnel) {
        self.hash::<u32, Tunnel>(TUNNELS).insert(ofport, tunnel, 0).unwrap();
        let key = TunnelKey { remote: tunnel.remote, vni: tunnel.vni };
        self.hash::<TunnelKey, u32>(TUNNEL_BY_REMOTE).insert(key, ofport, 0).unwrap();
        self.generation.bump();
    }

    pub fn add_local_port(&mut self, ifindex: u32, port: LocalPort) {
        let entry = FdbEntry { ofport: port.ofport, port_key: port.port_key, kind: FDB_LOCAL, _pad: [0; 3] };
        self.hash::<u32, LocalPort>(LOCAL_PORTS).insert(ifindex, port, 0).unwrap();
        self.hash::<PortKey, FdbEntry>(PORT_KEYS)
            .insert(PortKey { vni: port.vni, port_key: port.port_key, _pad: 0 }, entry, 0)
            .unwrap();
        self.hash::<FdbKey, FdbEntry>(FDB)
            .insert(FdbKey { vni: port.vni, mac: port.mac, _pad: [0; 2] }, entry, 0)
            .unwrap();
        self.serve_vni(port.vni);
        self.generation.bump();
        self.devmap_insert(port.ofport as u32, ifindex);
        let mut ifx: Array<&mut MapData, u32> = Array::try_from(self.ebpf.map_mut(PORT_IFINDEX).unwrap()).unwrap();
        ifx.set(port.ofport as u32, ifindex, 0).unwrap();
    }

    /// Port `ofport`'s PORT_SECURITY entry, replacing what was there (its
    /// LOCAL_PORTS entry says whether it is read).
    pub fn set_port_security(&mut self, ofport: u16, sec: PortSecurity) {
        self.hash::<u32, PortSecurity>(PORT_SECURITY).insert(ofport as u32, sec, 0).unwrap();
        self.generation.bump();
    }

    /// One more local port in `vni`, in VNIS, as the controller counts it.
    fn serve_vni(&mut self, vni: u32) {
        let mut vnis = self.hash::<u32, u32>(VNIS);
        let n = vnis.get(&vni, 0).unwrap_or(0);
        vnis.insert(vni, n + 1, 0).unwrap();
    }

    /// The decap-side entries of a local port (devmap, port key, FDB)
    /// without its LOCAL_PORTS entry: a second port reachable through
    /// `ifindex` while test_run packets still arrive "from" the first.
    pub fn add_local_port_entries(&mut self, ofport: u16, ifindex: u32, vni: u32, port_key: u16, mac: [u8; 6]) {
        let entry = FdbEntry { ofport, port_key, kind: FDB_LOCAL, _pad: [0; 3] };
        self.hash::<PortKey, FdbEntry>(PORT_KEYS).insert(PortKey { vni, port_key, _pad: 0 }, entry, 0).unwrap();
        self.hash::<FdbKey, FdbEntry>(FDB).insert(FdbKey { vni, mac, _pad: [0; 2] }, entry, 0).unwrap();
        self.serve_vni(vni);
        self.generation.bump();
        self.devmap_insert(ofport as u32, ifindex);
    }

    /// A MAC (and optionally an IP) in `vni` behind tunnel `tunnel_ofport`,
    /// owned by the remote logical port `port_key`.
    pub fn add_remote(&mut self, vni: u32, mac: [u8; 6], ip: Option<[u8; 16]>, tunnel_ofport: u16, port_key: u16) {
        let entry = FdbEntry { ofport: tunnel_ofport, port_key, kind: FDB_REMOTE, _pad: [0; 3] };
        self.hash::<FdbKey, FdbEntry>(FDB).insert(FdbKey { vni, mac, _pad: [0; 2] }, entry, 0).unwrap();
        self.generation.bump();
        if let Some(ip) = ip {
            self.add_neigh(vni, ip, mac);
        }
    }

    /// Binds `ip` to `mac` in `vni` for the ARP/ND responder.
    pub fn add_neigh(&mut self, vni: u32, ip: [u8; 16], mac: [u8; 6]) {
        self.hash::<NeighKey, Neigh>(NEIGH).insert(NeighKey { vni, ip }, Neigh { mac, _pad: [0; 2] }, 0).unwrap();
    }

    /// The test gateway's uplink (`addrs`: its MAC, an IPv4 and an IPv6
    /// tunnel address) on `ifindex` with `mtu`, also the redirect target of
    /// encapsulated frames.
    pub fn set_test_uplink(&mut self, ifindex: u32, mtu: u32) {
        use crate::addrs::{GW_IP4, GW_IP6, GW_MAC};
        let flags = UPLINK_HAS_IP4 | UPLINK_HAS_IP6;
        self.set_uplink(Uplink { ifindex, mtu, mac: GW_MAC, flags, _pad: 0, ip4: GW_IP4, ip6: GW_IP6 });
        self.set_uplink_devmap(ifindex);
    }

    /// The redirect target for encapsulated frames.
    pub fn set_uplink_devmap(&mut self, ifindex: u32) {
        self.devmap_insert(DEVMAP_UPLINK, ifindex);
    }

    /// Reply counters by name, summed over CPUs.
    pub fn replies(&self) -> BTreeMap<&'static str, u64> {
        let m: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(self.ebpf.map("REPLIES").unwrap()).unwrap();
        Reply::ALL.iter().map(|r| (r.name(), m.get(&(*r as u32), 0).unwrap().iter().sum())).collect()
    }

    /// Drop counters by name, summed over CPUs.
    pub fn drops(&self) -> BTreeMap<&'static str, u64> {
        let m: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(self.ebpf.map("DROPS").unwrap()).unwrap();
        Drop::ALL.iter().map(|d| (d.name(), m.get(&(*d as u32), 0).unwrap().iter().sum())).collect()
    }

    /// Zeroes DROPS and PORT_STATS on every CPU (after a test's warm-up).
    pub fn clear_counters(&mut self) {
        let cpus = aya::util::nr_cpus().expect("nr_cpus");
        let mut drops: PerCpuArray<&mut MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map_mut("DROPS").unwrap()).unwrap();
        for d in Drop::ALL {
            drops.set(d as u32, aya::maps::PerCpuValues::try_from(vec![0u64; cpus]).unwrap(), 0).unwrap();
        }
        let mut stats: PerCpuArray<&mut MapData, PortStats> =
            PerCpuArray::try_from(self.ebpf.map_mut("PORT_STATS").unwrap()).unwrap();
        for ofport in 0..0xff00 {
            stats.set(ofport, aya::maps::PerCpuValues::try_from(vec![PortStats::default(); cpus]).unwrap(), 0).unwrap();
        }
    }

    pub fn port_stats(&self, ofport: u32) -> PortStats {
        let m: PerCpuArray<&MapData, PortStats> = PerCpuArray::try_from(self.ebpf.map("PORT_STATS").unwrap()).unwrap();
        m.get(&ofport, 0).unwrap().iter().fold(PortStats::default(), |mut a, s| {
            a.rx.packets += s.rx.packets;
            a.rx.bytes += s.rx.bytes;
            a.tx.packets += s.tx.packets;
            a.tx.bytes += s.tx.bytes;
            a
        })
    }

    /// Writes BFD session `slot` whole (both halves), as a test sets one up.
    pub fn set_bfd_session(&mut self, slot: u32, session: BfdSession) {
        let mut m: Array<&mut MapData, BfdSession> = Array::try_from(self.ebpf.map_mut(BFD_SESSIONS).unwrap()).unwrap();
        m.set(slot, session, 0).unwrap();
    }

    /// Routes packets arriving on `path` to session `slot`.
    pub fn add_bfd_path(&mut self, path: BfdPathKey, slot: u32) {
        self.hash::<BfdPathKey, u32>(BFD_PATHS).insert(path, slot, 0).unwrap();
    }

    pub fn bfd_session(&self, slot: u32) -> BfdSession {
        let m: Array<&MapData, BfdSession> = Array::try_from(self.ebpf.map(BFD_SESSIONS).unwrap()).unwrap();
        m.get(&slot, 0).unwrap()
    }

    /// Discarded BFD packets by reason, summed over CPUs.
    pub fn bfd_drops(&self) -> BTreeMap<&'static str, u64> {
        xgw::bfd::drops(&self.ebpf).unwrap()
    }

    /// `BFD_COUNTERS`, each slot summed over CPUs.
    pub fn bfd_counters(&self) -> [u64; BFD_COUNTERS_LEN as usize] {
        let m: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(self.ebpf.map(BFD_COUNTERS).unwrap()).unwrap();
        core::array::from_fn(|i| m.get(&(i as u32), 0).unwrap().iter().sum())
    }
}
