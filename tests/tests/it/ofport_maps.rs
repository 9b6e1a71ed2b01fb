//! The OpenFlow port map on the real BPF maps: the 2018 seed scenario,
//! exhaustion, a full map, a missing interface, reconcile repairs and a
//! controller SIGKILLed mid-churn. Every check reads the pinned maps back
//! (through aya, once through bpftool) and compares them with what the
//! durable store says, byte for byte.
use std::{
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use xgw::ofport::*;
use xgw_common::maps::{self as wire, names::*};
use xgw_tests::{
    ports::{PortGw as Gw, *},
    require_root,
};

type Pm = PortMap<BpfDatapath, RedbStore>;

const HOLD: Duration = Duration::from_millis(300);

fn config() -> AllocatorConfig {
    AllocatorConfig { hold_down: HOLD }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn records(pm: &Pm) -> Vec<PortRecord> {
    pm.store().load().expect("load store")
}

/// The maps hold exactly what the store's ports need (plus the uplink's
/// DEVMAP slot, if given), and no number outside 1..0xff00 appears anywhere.
fn assert_maps_match_store(gw: &Gw, pm: &Pm, ifindex: &dyn Fn(&str) -> u32, uplink: Option<u32>) {
    let stored = records(pm);
    let mut in_memory: Vec<PortRecord> = pm.ports().cloned().collect();
    in_memory.sort_by(|a, b| a.name().cmp(b.name()));
    assert_eq!(stored, in_memory, "store vs committed ports");
    let maps = read_maps(gw.pins());
    let mut want = expected_maps(&stored, ifindex);
    if let Some(ifindex) = uplink {
        want.get_mut(DEVMAP).unwrap().insert(bytes(&wire::DEVMAP_UPLINK), bytes(&ifindex));
    }
    assert_eq!(maps, want, "maps vs store");
    assert_no_reserved_numbers(&maps, &stored);
}

fn no_locals(name: &str) -> u32 {
    panic!("no local port expected, got {name}")
}

fn three_healthy_tunnels() -> Vec<PortSpec> {
    (1..=3).map(|i| tunnel(&format!("ovn-hv{i}-0"), ip(&format!("198.51.100.{i}")), 5)).collect()
}

/// The 2018 outage, variant (a): OVN re-creates a tunnel to a redundant
/// chassis (same remote IP and VNI as a healthy one) on every database
/// change. The port map refuses it before a number or a map is touched.
#[test]
fn seed_redundant_chassis_refused_before_any_map_100k_times() {
    require_root!();
    let gw = Gw::new("seeda", &[]);
    let mut pm = gw.open(config());
    let t0 = Instant::now();
    let mut desired = three_healthy_tunnels();
    let report = pm.apply_desired(&desired, t0).expect("apply");
    assert_eq!(report.added.len(), 3);
    let maps_before = read_maps(gw.pins());
    let store_before = records(&pm);
    let in_use = pm.allocator().in_use();

    desired.push(tunnel("ovn-aded97-0", ip("198.51.100.2"), 5));
    for i in 0..100_000u64 {
        let report = pm.apply_desired(&desired, t0 + Duration::from_millis(i)).expect("apply");
        assert!(!report.changed() && report.unchanged == 3);
        let [(name, err)] = report.failed.as_slice() else { panic!("{:?}", report.failed) };
        assert_eq!(name, "ovn-aded97-0");
        if i == 0 {
            assert_eq!(
                err.to_string(),
                "tunnel \"ovn-aded97-0\" duplicates tunnel \"ovn-hv2-0\" (remote 198.51.100.2 VNI 5): \
                 a redundant tunnel can never carry traffic, refused"
            );
        }
        assert_eq!(pm.allocator().in_use(), in_use);
    }
    assert_eq!(pm.allocator().held_down(), 0);
    assert_eq!(read_maps(gw.pins()), maps_before, "the healthy tunnels' entries, byte for byte");
    assert_eq!(records(&pm), store_before);
    assert_maps_match_store(&gw, &pm, &no_locals, None);
    assert!(pm.reconcile().is_noop());
}

/// Variant (b): the insert genuinely fails in the kernel, every time. A
/// rogue entry already holds the new tunnel's (remote, VNI) in
/// TUNNEL_BY_REMOTE, so BPF_NOEXIST fails with EEXIST ("Device or
/// resource busy" in 2018). OVS leaked a number per attempt until it
/// handed out 65535; here each attempt gives its number back.
#[test]
fn seed_failing_map_insert_retried_100k_times_leaks_nothing() {
    require_root!();
    let gw = Gw::new("seedb", &[]);
    let mut pm = gw.open(config());
    let t0 = Instant::now();
    pm.apply_desired(&three_healthy_tunnels(), t0).expect("apply");

    let rogue_key = wire::TunnelKey { remote: wire::ipv4_mapped([198, 51, 100, 9]), vni: 5 };
    hash::<wire::TunnelKey, u32>(gw.pins(), TUNNEL_BY_REMOTE).insert(rogue_key, 4000, 1).expect("plant rogue entry");
    let maps_before = read_maps(gw.pins());
    let bpftool_before: Vec<Raw> = [TUNNELS, TUNNEL_BY_REMOTE].iter().map(|m| bpftool_dump(gw.pins(), m)).collect();
    let store_before = records(&pm);
    let four = OfPort::new(4).unwrap();

    let doomed = tunnel("ovn-aded97-0", ip("198.51.100.9"), 5);
    for i in 0..100_000u64 {
        let err = pm.add(&doomed, t0 + Duration::from_millis(i)).expect_err("the kernel refuses");
        let PortError::Txn { cause: TxnError::Insert { step, undo, .. }, .. } = &err else { panic!("{err}") };
        assert_eq!(*step, Step::TunnelByRemote);
        assert!(undo.is_clean(), "{err}");
        assert_eq!(pm.allocator().in_use(), 3);
        assert_eq!(pm.allocator().state(four), PortState::Free);
        if i == 0 {
            assert_eq!(err.to_string(), "tunnel \"ovn-aded97-0\": tunnel remote index: entry already exists");
        }
    }
    assert_eq!(pm.allocator().held_down(), 0, "aborts skip hold-down");
    let maps_after = read_maps(gw.pins());
    assert_eq!(maps_after, maps_before, "nothing left behind, healthy tunnels untouched byte for byte");
    for (m, before) in [TUNNELS, TUNNEL_BY_REMOTE].iter().zip(&bpftool_before) {
        let now = bpftool_dump(gw.pins(), m);
        assert_eq!(&now, before, "{m} through bpftool");
        assert_eq!(now, maps_after[m], "{m}: bpftool and aya disagree");
    }
    assert_eq!(records(&pm), store_before);
    assert_no_reserved_numbers(&maps_after, &store_before);

    // The rogue entry belongs to no port: reconcile removes it, and the
    // tunnel then gets number 4. None of the 100,000 attempts used one up.
    let report = pm.reconcile();
    let rogue = MapEntry {
        key: EntryKey::Tunnel(TunnelKey { remote: ip("198.51.100.9"), vni: Some(5) }),
        ofport: OfPort::new(4000).ok(),
    };
    assert_eq!(report.removed, [(Step::TunnelByRemote, rogue)]);
    assert!(report.recreated.is_empty() && report.rewritten.is_empty() && report.failed.is_empty());
    assert_eq!(pm.add(&doomed, t0).expect("add"), Added::Created(four));
    assert_maps_match_store(&gw, &pm, &no_locals, None);
}

/// A full map fails the insert with the map's real max_entries, and the
/// add is rolled back: no entry in any map, the number free, the store
/// unchanged.
#[test]
fn full_map_is_reported_and_rolled_back() {
    require_root!();
    let gw = Gw::new("full", &[(TUNNEL_BY_REMOTE, 16)]);
    let mut pm = gw.open(config());
    let t0 = Instant::now();
    assert_eq!(pm.datapath().max_entries(Step::TunnelByRemote), 16);
    for i in 0..16 {
        pm.add(&tunnel_n(i), t0).expect("room");
    }
    let maps_before = read_maps(gw.pins());
    let store_before = records(&pm);

    let err = pm.add(&tunnel_n(16), t0).expect_err("TUNNEL_BY_REMOTE is full");
    assert_eq!(err.to_string(), "tunnel \"t16\": tunnel remote index: map full (max_entries 16)");
    let seventeen = OfPort::new(17).unwrap();
    assert_eq!(pm.allocator().state(seventeen), PortState::Free);
    assert_eq!(read_maps(gw.pins()), maps_before, "the TUNNELS entry made before the failing step is gone");
    assert_eq!(records(&pm), store_before);

    // Room again: the tunnel gets 17, the number the failed add had held
    // (1 is in hold-down).
    pm.delete("t0", t0).expect("delete");
    assert_eq!(pm.add(&tunnel_n(16), t0).expect("add"), Added::Created(seventeen));
    assert_maps_match_store(&gw, &pm, &no_locals, None);
}

/// A local port on an interface that does not exist: the error names the
/// field and the interface, and no number or entry is used up.
#[test]
fn missing_interface_is_named_and_costs_nothing() {
    require_root!();
    let gw = Gw::new("noif", &[]);
    let vm1 = gw.veth("vm1");
    gw.ns.enter(|| {
        let mut pm = gw.open(config());
        let t0 = Instant::now();
        let err = pm.add(&local("vm9", "nosuch0", 9, None), t0).expect_err("no such interface");
        assert_eq!(err.to_string(), "port \"vm9\": devmap: ifname: no interface \"nosuch0\"");
        assert_eq!(pm.allocator().in_use(), 0);
        assert!(read_maps(gw.pins()).values().all(|m| m.is_empty()));
        let added = pm.add(&local("vm1", "vm1", 1, Some(ip("203.0.113.1"))), t0).expect("add");
        assert_eq!(added, Added::Created(OfPort::MIN));
        assert_maps_match_store(&gw, &pm, &|n| if n == "vm1" { vm1 } else { panic!("{n}") }, None);
    });
}

/// Exhaustion on real maps (sized for it): the automatic range 1..=32767
/// fills, the next add is the typed error, existing entries are untouched,
/// and a freed number is handed out again once its hold-down is over.
#[test]
fn exhaustion_on_real_maps() {
    require_root!();
    let gw = Gw::new("exh", &[(TUNNELS, 40_000), (TUNNEL_BY_REMOTE, 40_000), (PORT_RECORDS, 40_000)]);
    let mut pm = gw.open(config());
    let t0 = Instant::now();
    let auto = u32::from(OfPort::AUTO_MAX.get());
    let desired: Vec<PortSpec> = (0..auto - 1).map(tunnel_n).collect();
    let report = pm.apply_desired(&desired, t0).expect("apply");
    assert!(report.failed.is_empty(), "{:?}", report.failed.first());
    assert_eq!(report.added.len() as u32, auto - 1);

    // 100 is freed, and held down: the next add takes 32767 instead.
    let freed = pm.delete("t99", t0).expect("delete");
    assert_eq!(freed.get(), 100);
    let x = pm.add(&tunnel_n(auto), t0 + HOLD / 2).expect("add");
    assert_eq!(x, Added::Created(OfPort::AUTO_MAX), "a held-down number is not reused early");
    // Once the hold-down is over, 100 is usable again.
    let y = pm.add(&tunnel_n(auto + 1), t0 + HOLD).expect("add");
    assert_eq!(y, Added::Created(freed));

    let maps_before = read_maps(gw.pins());
    assert_eq!(maps_before[TUNNELS].len() as u32, auto);
    let err = pm.add(&tunnel_n(auto + 2), t0 + HOLD).expect_err("exhausted");
    assert!(matches!(err, PortError::Txn { cause: TxnError::Number { cause: AllocError::Exhausted }, .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "tunnel \"t32769\": ofport: no OpenFlow port number left: all automatic numbers 1..=32767 are in use"
    );
    let maps_after = read_maps(gw.pins());
    assert_eq!(maps_after, maps_before, "existing entries unaffected");
    let max = numbers_in(&maps_after).into_iter().map(|(_, n)| n).max();
    assert_eq!(max, Some(auto));
    assert_maps_match_store(&gw, &pm, &no_locals, None);
}

/// Reconcile after entries were changed behind the controller's back: a
/// committed entry deleted, orphans added (one on OFPP_NONE), values made
/// stale. It reports each repair, the maps end equal to the store, the
/// uplink's DEVMAP slot is left alone, and a second pass has nothing to do.
#[test]
fn reconcile_repairs_missing_orphan_and_stale_entries() {
    require_root!();
    let gw = Gw::new("recon", &[]);
    let ifx: Vec<u32> = ["vm1", "vm2", "upl"].iter().map(|n| gw.veth(n)).collect();
    let ifindex = |n: &str| match n {
        "vm1" => ifx[0],
        "vm2" => ifx[1],
        _ => panic!("{n}"),
    };
    gw.ns.enter(|| {
        let t0 = Instant::now();
        let mut pm = gw.open(config());
        let mut desired: Vec<PortSpec> = (0..3).map(tunnel_n).collect();
        desired.push(local("vm1", "vm1", 1, None));
        desired.push(local("vm2", "vm2", 2, Some(ip("2001:db8:5::2"))));
        pm.apply_desired(&desired, t0).expect("apply");
        let mut dev = devmap(gw.pins());
        dev.insert(wire::DEVMAP_UPLINK, ifx[2], None, 1).expect("uplink");
        assert!(pm.reconcile().is_noop(), "the uplink is no port's garbage");
        assert_maps_match_store(&gw, &pm, &|n| ifindex(n), Some(ifx[2]));
        let n = |name: &str| u32::from(pm.get(name).expect(name).ofport.get());
        let (t1, t2, vm1) = (n("t1"), n("t2"), n("vm1"));
        drop(pm);

        // Behind the (stopped) controller's back.
        let k1 = wire::TunnelKey { remote: ip16_of(&tunnel_n(1)), vni: VNI };
        hash::<wire::TunnelKey, u32>(gw.pins(), TUNNEL_BY_REMOTE).remove(&k1).expect("delete committed entry");
        dev.remove(vm1).expect("delete committed devmap entry");
        let mut tunnels = hash::<u32, wire::Tunnel>(gw.pins(), TUNNELS);
        let orphan = wire::Tunnel { remote: wire::ipv4_mapped([203, 0, 113, 7]), vni: 9, ..Default::default() };
        tunnels.insert(4000, orphan, 1).expect("orphan");
        tunnels.insert(0xffff, orphan, 1).expect("OFPP_NONE");
        let mut stale = tunnels.get(&t2, 0).expect("t2");
        stale.flags ^= wire::TUNNEL_OVN_METADATA;
        tunnels.insert(t2, stale, 2).expect("stale value");
        let mut neigh = hash::<wire::NeighKey, wire::Neigh>(gw.pins(), NEIGH);
        let (nk, _) = neigh.iter().next().expect("vm2's neighbour").expect("read");
        // A NEIGH value is only a MAC, and the MAC's FDB entry names the
        // owner: a MAC nobody has makes the entry nobody's.
        neigh.insert(nk, wire::Neigh { mac: [0x02, 0, 0, 0, 0, 0x99], _pad: [0; 2] }, 2).expect("stale neighbour");
        let mut locals = hash::<u32, wire::LocalPort>(gw.pins(), LOCAL_PORTS);
        let mut lp = locals.get(&ifx[0], 0).expect("vm1");
        lp.port_key = 77;
        locals.insert(ifx[0], lp, 2).expect("stale local port");

        let mut pm = gw.open(config());
        let report = pm.reconcile();
        let set = |v: &[(Step, MapEntry)]| -> Vec<(Step, String)> {
            let mut v: Vec<_> = v.iter().map(|(s, e)| (*s, e.to_string())).collect();
            v.sort();
            v
        };
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        let vm2 = n_of(&pm, "vm2");
        assert_eq!(
            set(&report.recreated),
            [
                (Step::Devmap, format!("ofport {vm1}")),
                (Step::Neigh, format!("VNI {VNI} IP 2001:db8:5::2 -> ofport {vm2}")),
                (Step::TunnelByRemote, format!("remote 2001:db8::1 VNI {VNI} -> ofport {t1}")),
            ]
        );
        assert_eq!(
            set(&report.removed),
            [
                (Step::Neigh, format!("VNI {VNI} IP 2001:db8:5::2 (no owner)")),
                (Step::TunnelPort, "ofport 4000".into()),
                (Step::TunnelPort, "ofport 65535 (no owner)".into()),
            ]
        );
        assert_eq!(
            set(&report.rewritten),
            [(Step::LocalPort, format!("ofport {vm1}")), (Step::TunnelPort, format!("ofport {t2}"))]
        );
        assert_maps_match_store(&gw, &pm, &|n| ifindex(n), Some(ifx[2]));
        assert_eq!(devmap(gw.pins()).get(wire::DEVMAP_UPLINK, 0).expect("uplink kept").if_index, ifx[2]);
        assert!(pm.reconcile().is_noop());
    });
}

fn n_of(pm: &Pm, name: &str) -> u16 {
    pm.get(name).expect(name).ofport.get()
}

fn ip16_of(spec: &PortSpec) -> [u8; 16] {
    match spec.tunnel_key().expect("tunnel").remote {
        IpAddr::V4(a) => wire::ipv4_mapped(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

/// A controller SIGKILLed mid-churn, three times over: `xgw-churn` (the
/// product's PortMap, BpfDatapath and RedbStore) adds and deletes ports
/// against the pinned maps and journals what it acknowledged. After the
/// last kill, a restart (reopen the store and the pinned maps, reconcile)
/// must find every acknowledged port under the number it was given, no
/// port that was acknowledged deleted, and maps equal to the store.
#[test]
fn sigkill_mid_churn_then_restart_keeps_every_committed_number() {
    use std::collections::BTreeMap;
    use std::os::unix::process::ExitStatusExt;
    require_root!();
    let gw = Gw::new("kill", &[]);
    let ifx: BTreeMap<String, u32> = (0..4).map(|i| format!("vm{i}")).map(|n| (n.clone(), gw.veth(&n))).collect();
    let journal = gw.state.path.join("journal");
    let state = gw.state.path.join("db");
    let acked =
        |j: &Path| std::fs::read_to_string(j).unwrap_or_default().lines().filter(|l| l.starts_with("ok ")).count();
    let churn = env!("CARGO_BIN_EXE_xgw-churn");
    for round in 0..3u64 {
        let target = acked(&journal) + 150;
        let seed = (round + 1).to_string();
        let args = [churn, gw.pins().to_str().unwrap(), state.to_str().unwrap(), journal.to_str().unwrap(), "4", &seed];
        let p = gw.ns.spawn(&args);
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked(&journal) < target {
            assert!(Instant::now() < deadline, "xgw-churn made no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Somewhere inside a transaction, most likely in the store's fsync.
        std::thread::sleep(Duration::from_micros(1 + round * 3_331));
        p.signal(nix::sys::signal::Signal::SIGKILL);
        let (status, _, stderr) = p.wait(Duration::from_secs(10)).expect("xgw-churn exits");
        assert_eq!(status.signal(), Some(9), "xgw-churn died on its own: {stderr}");
    }

    let Journal { want, uncertain, restarts, .. } =
        Journal::replay(&std::fs::read_to_string(&journal).expect("journal"));
    eprintln!("xgw-churn restarts: {restarts:?}; uncertain at the last kill: {uncertain:?}");

    gw.ns.enter(|| {
        let dp = BpfDatapath::open_pinned(gw.pins()).expect("open pinned maps");
        let store = RedbStore::open(&state).expect("open store");
        let mut pm = PortMap::open(dp, store, config()).expect("open port map");
        let report = pm.reconcile();
        eprintln!("reconcile after the last kill: recreated {:?}, removed {:?}", report.recreated, report.removed);
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        let mut checked = 0;
        for (name, outcome) in &want {
            if uncertain.contains(name) {
                continue;
            }
            let got = pm.get(name).map(|r| r.ofport.get());
            assert_eq!(got, *outcome, "port {name}: acknowledged {outcome:?}, store says {got:?}");
            checked += outcome.is_some() as usize;
        }
        for r in pm.ports() {
            assert!(want.contains_key(r.name()) || uncertain.contains(r.name()), "{} was never added", r.name());
        }
        assert!(checked > 20, "only {checked} live ports checked");
        let stored = records(&pm);
        let maps = read_maps(gw.pins());
        assert_eq!(maps, expected_maps(&stored, |n| ifx[n]), "maps vs store after restart");
        assert_no_reserved_numbers(&maps, &stored);
        assert!(pm.reconcile().is_noop());
    });
}
