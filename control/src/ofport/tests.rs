//! Whole-map tests: the port map over the in-memory datapath and store,
//! with failures injected at every step, plus the 2018 seed scenario.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::types::{IfName, Name, PortKey, UnicastIp, Vni};

const HOLD: Duration = Duration::from_secs(10);

type MemMap = PortMap<MemDatapath, MemStore>;

fn config() -> AllocatorConfig {
    AllocatorConfig { hold_down: HOLD }
}

fn new_map() -> MemMap {
    PortMap::open(MemDatapath::new(), MemStore::new(), config()).expect("empty store opens")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn port(n: u16) -> OfPort {
    OfPort::new(n).expect("valid test port")
}

fn name(s: &str) -> Name {
    Name::new(s).expect("test name")
}

fn vni(v: u32) -> Vni {
    Vni::new(v).expect("test vni")
}

fn unicast(ip: IpAddr) -> UnicastIp {
    UnicastIp::new(ip).expect("test address")
}

fn tunnel(n: &str, remote: IpAddr, v: u32) -> PortSpec {
    PortSpec::Tunnel(TunnelPort {
        name: name(n),
        remote: unicast(remote),
        vni: Some(vni(v)),
        bfd: true,
        ovn_metadata: true,
        ofport_request: None,
        bfd_timers: Default::default(),
    })
}

fn local(n: &str, port_key: u16) -> PortSpec {
    PortSpec::Local(LocalPort {
        name: name(n),
        ifname: IfName::new(format!("veth{port_key}")).expect("test ifname"),
        vni: vni(7),
        port_key: PortKey::new(port_key).expect("test key"),
        mac: MacAddr([0x02, 0, 0, 0, (port_key >> 8) as u8, port_key as u8]),
        ip: None,
        ofport_request: None,
        port_security: true,
        allowed: Vec::new(),
    })
}

/// A binding in VNI 7 (local ports' VNI) behind `tunnel`.
fn binding(n: u16, tunnel: &str, ip: Option<IpAddr>) -> Binding {
    Binding {
        vni: vni(7),
        mac: MacAddr([0x02, 0, 0, 0x99, (n >> 8) as u8, n as u8]),
        ip: ip.map(unicast),
        tunnel: name(tunnel),
        port_key: PortKey::new(n).expect("test key"),
    }
}

fn with_request(mut spec: PortSpec, request: u16) -> PortSpec {
    match &mut spec {
        PortSpec::Local(p) => p.ofport_request = Some(request),
        PortSpec::Tunnel(t) => t.ofport_request = Some(request),
    }
    spec
}

/// Everything observable about a port map, except hold-down timers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    ports: Vec<PortRecord>,
    bindings: Vec<Binding>,
    committed: Vec<OfPort>,
    in_use: usize,
    /// A failed transaction must not park its number in hold-down.
    held_down: usize,
    stranded: Vec<OfPort>,
    store: Vec<PortRecord>,
    stored_bindings: Vec<Binding>,
    maps: Vec<(Step, Vec<MapEntry>)>,
}

fn snapshot(pm: &MemMap) -> Snapshot {
    snapshot_at(pm, Instant::now())
}

fn snapshot_at(pm: &MemMap, now: Instant) -> Snapshot {
    Snapshot {
        ports: pm.ports().cloned().collect(),
        bindings: pm.bindings().cloned().collect(),
        committed: pm.allocator().committed().collect(),
        in_use: pm.allocator().in_use(),
        held_down: pm.allocator().held_down_at(now),
        stranded: pm.allocator().stranded().collect(),
        store: pm.store().records().cloned().collect(),
        stored_bindings: pm.store().bindings().cloned().collect(),
        maps: Step::ALL.iter().map(|&s| (s, pm.datapath().entries(s))).collect(),
    }
}

/// The invariant: numbers in use == committed ports == store records ==
/// the entries in every map, and no number outside 1..0xff00.
fn check_consistent(pm: &MemMap) {
    pm.allocator().check_invariants();
    let ports: Vec<&PortRecord> = pm.ports().collect();
    let mut numbers: Vec<OfPort> = ports.iter().map(|r| r.ofport).collect();
    numbers.sort();
    let committed: Vec<OfPort> = pm.allocator().committed().collect();
    assert_eq!(committed, numbers, "allocator vs committed ports");
    assert_eq!(pm.allocator().in_use(), ports.len(), "a number is reserved or stranded without a port");
    let store: Vec<&PortRecord> = pm.store().records().collect();
    assert_eq!(store, ports, "store vs committed ports");
    let bindings: Vec<&Binding> = pm.bindings().collect();
    let stored: Vec<&Binding> = pm.store().bindings().collect();
    assert_eq!(stored, bindings, "store vs committed bindings");
    for &step in Step::ALL {
        let want: BTreeSet<MapEntry> = ports
            .iter()
            .filter_map(|r| MapEntry::of_port(step, &r.spec, r.ofport))
            .chain(bindings.iter().filter_map(|b| {
                let tunnel = pm.get(&b.tunnel).expect("a binding's tunnel is committed").ofport;
                MapEntry::of_binding(step, b, tunnel)
            }))
            .collect();
        let have: BTreeSet<MapEntry> = pm.datapath().entries(step).into_iter().collect();
        assert_eq!(have, want, "{step} vs committed ports");
        for e in &have {
            let owner = e.ofport.expect("every entry has an owner");
            assert!((1..0xff00).contains(&owner.get()));
            if let EntryKey::Port(p) = e.key {
                assert!((1..0xff00).contains(&p));
            }
        }
    }
}

fn fill_tunnels(pm: &mut MemMap, n: u32, now: Instant) {
    for i in 0..n {
        let remote = IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16]);
        let spec = tunnel(&format!("t{i}"), remote, 1);
        pm.add(&spec, now).expect("room for it");
    }
}

#[test]
fn exhaustion_is_typed_and_harmless() {
    let t0 = Instant::now();
    let mut pm = new_map();
    fill_tunnels(&mut pm, 0x7fff, t0);
    assert_eq!(pm.allocator().in_use(), 0x7fff);
    let max = pm.ports().map(|r| r.ofport).max();
    assert_eq!(max, Some(OfPort::AUTO_MAX));

    let before = snapshot(&pm);
    let extra = tunnel("one-too-many", ip("198.51.100.1"), 1);
    let err = pm.add(&extra, t0).expect_err("exhausted");
    assert!(matches!(err, PortError::Txn { cause: TxnError::Number { cause: AllocError::Exhausted }, .. }), "{err}");
    assert_eq!(snapshot(&pm), before, "existing ports unaffected");

    // The upper half is for requests and still available.
    let pinned = with_request(extra.clone(), 0x8000);
    let got = pm.add(&pinned, t0).expect("requested number is free");
    assert_eq!(got, Added::Created(port(0x8000)));
    let pinned = with_request(tunnel("top", ip("198.51.100.2"), 1), 0xfeff);
    let got = pm.add(&pinned, t0).expect("highest usable number");
    assert_eq!(got, Added::Created(OfPort::MAX));
    check_consistent(&pm);

    // With every automatic number in use, deleting two makes them the
    // only candidates: hold-down cannot be honoured, so the least recently
    // freed is taken (as OVS does) rather than failing.
    pm.delete("t199", t0 + Duration::from_secs(1)).expect("delete");
    pm.delete("t99", t0 + Duration::from_secs(2)).expect("delete");
    let soon = t0 + Duration::from_secs(3);
    let a = pm.add(&tunnel("a", ip("198.51.100.3"), 1), soon).expect("held number");
    let b = pm.add(&tunnel("b", ip("198.51.100.4"), 1), soon).expect("held number");
    assert_eq!((a.ofport(), b.ofport()), (port(200), port(100)));
    let err = pm.add(&tunnel("c", ip("198.51.100.5"), 1), soon).expect_err("full again");
    assert!(err.to_string().contains("no OpenFlow port number left"), "{err}");
    check_consistent(&pm);
}

#[test]
fn freed_number_returns_only_after_hold_down() {
    let t0 = Instant::now();
    let mut pm = new_map();
    for key in 1..=3 {
        pm.add(&local(&format!("vm{key}"), key), t0).expect("add");
    }
    let freed = pm.delete("vm2", t0).expect("delete");
    assert_eq!(freed, port(2));
    assert_eq!(pm.allocator().state(freed), PortState::HeldDown { since: t0 });

    let early = pm.add(&local("vm4", 4), t0 + HOLD - Duration::from_millis(1));
    assert_eq!(early.expect("add").ofport(), port(4), "2 is still held down");
    let late = pm.add(&local("vm5", 5), t0 + HOLD);
    assert_eq!(late.expect("add").ofport(), port(2), "hold-down is over");
    check_consistent(&pm);
}

/// The 2018 outage, first half: OVN kept re-creating a tunnel to a
/// redundant chassis (same IP, same VNI) on every database change.
#[test]
fn seed_redundant_chassis_costs_nothing() {
    let t0 = Instant::now();
    let mut pm = new_map();
    let mut desired: Vec<PortSpec> =
        (0..8).map(|i| tunnel(&format!("ovn-hv{i}-0"), IpAddr::from([198, 51, 100, i]), 5)).collect();
    desired.push(local("vm1", 1));
    desired.push(local("vm2", 2));
    let report = pm.apply_desired(&desired, t0).expect("apply");
    assert_eq!(report.added.len(), 10);
    let before = snapshot(&pm);

    // Same remote and VNI as ovn-hv3-0, different name.
    desired.push(tunnel("ovn-aded97-0", IpAddr::from([198, 51, 100, 3]), 5));
    for i in 0..100_000u64 {
        let now = t0 + Duration::from_millis(i);
        let report = pm.apply_desired(&desired, now).expect("apply");
        assert!(!report.changed());
        assert_eq!(report.unchanged, 10);
        assert!(matches!(
            report.failed.as_slice(),
            [(_, PortError::DuplicateTunnel { existing, .. })] if existing == "ovn-hv3-0"
        ));
        assert_eq!(pm.allocator().in_use(), 10);
    }
    assert_eq!(snapshot(&pm), before, "the other tunnels are untouched");
    assert_eq!(pm.allocator().held_down(), 0);
    check_consistent(&pm);
}

/// The outage, second half: the datapath refuses a tunnel ("Device or
/// resource busy") and the add is retried forever. OVS leaked a number per
/// attempt until it handed out 65535; here each attempt gives it back.
#[test]
fn seed_failing_insert_retried_100k_times_leaks_nothing() {
    const EBUSY: i32 = 16;
    let t0 = Instant::now();
    let mut pm = new_map();
    for i in 0..8u8 {
        let spec = tunnel(&format!("ovn-hv{i}-0"), IpAddr::from([198, 51, 100, i]), 5);
        pm.add(&spec, t0).expect("add");
    }
    let before = snapshot(&pm);
    pm.datapath_mut().inject(Fault {
        step: Step::TunnelByRemote,
        op: FaultOp::Insert,
        port_name: Some("ovn-aded97-0".into()),
        remaining: None,
        error: MapError::Os { errno: EBUSY },
    });
    let doomed = tunnel("ovn-aded97-0", ip("198.51.100.9"), 5);
    for i in 0..100_000u64 {
        let now = t0 + Duration::from_millis(i);
        let err = pm.add(&doomed, now).expect_err("datapath refuses");
        let PortError::Txn { cause: TxnError::Insert { step, undo, .. }, .. } = &err else {
            panic!("unexpected error {err}");
        };
        assert_eq!(*step, Step::TunnelByRemote);
        assert!(undo.is_clean());
        assert_eq!(pm.allocator().in_use(), 8);
        if i == 0 {
            assert!(
                err.to_string().starts_with("tunnel \"ovn-aded97-0\": tunnel remote index: Device or resource busy"),
                "{err}"
            );
        }
    }
    assert_eq!(snapshot(&pm), before, "nothing left behind, others untouched");
    assert_eq!(pm.allocator().held_down(), 0, "aborts skip hold-down");

    // Once the datapath relents the tunnel gets the next number, 9: none
    // of the 100,000 attempts consumed one.
    pm.datapath_mut().clear_faults();
    let added = pm.add(&doomed, t0).expect("add");
    assert_eq!(added, Added::Created(port(9)));
    check_consistent(&pm);
}

#[test]
fn map_full_mid_transaction_rolls_back() {
    let t0 = Instant::now();
    let mut pm = new_map();
    pm.datapath_mut().set_max_entries(Step::TunnelByRemote, 4);
    fill_tunnels(&mut pm, 4, t0);
    let before = snapshot(&pm);

    let err = pm.add(&tunnel("t4", ip("198.51.100.99"), 1), t0).expect_err("tunnel table is full");
    assert_eq!(err.to_string(), "tunnel \"t4\": tunnel remote index: map full (max_entries 4)");
    // The tunnel-table entry inserted before the failing step is gone again,
    // and number 5 was not consumed.
    assert_eq!(snapshot(&pm), before);
    let added = pm.add(&local("vm1", 1), t0).expect("local ports need no tunnel entry");
    assert_eq!(added.ofport(), port(5));
    check_consistent(&pm);

    pm.datapath_mut().inject(Fault::once(Step::TunnelPort, FaultOp::Insert, MapError::Full { max_entries: 4096 }));
    pm.delete("t0", t0).expect("make room");
    let err = pm.add(&tunnel("t5", ip("198.51.100.98"), 1), t0).expect_err("injected");
    let PortError::Txn { cause, .. } = &err else {
        panic!("unexpected error {err}");
    };
    assert_eq!(cause.to_string(), "tunnel table: map full (max_entries 4096)");
    check_consistent(&pm);
}

#[test]
fn store_failure_undoes_every_insert() {
    let t0 = Instant::now();
    let mut pm = new_map();
    pm.add(&local("vm1", 1), t0).expect("add");
    let before = snapshot(&pm);
    pm.store_mut().fail_next_writes(1);
    let err = pm.add(&tunnel("t", ip("198.51.100.1"), 1), t0).expect_err("store fails");
    assert_eq!(err.to_string(), "tunnel \"t\": store: injected write failure");
    assert_eq!(snapshot(&pm), before);

    pm.store_mut().fail_next_writes(1);
    let err = pm.delete("vm1", t0).expect_err("store fails");
    assert!(matches!(err, PortError::Txn { cause: TxnError::Store { .. }, .. }));
    assert_eq!(snapshot(&pm), before, "failed delete restores the entries");
    check_consistent(&pm);
}

#[test]
fn failed_undo_strands_the_number_until_reconcile() {
    let t0 = Instant::now();
    let mut pm = new_map();
    let dp = pm.datapath_mut();
    dp.inject(Fault::once(Step::TunnelByRemote, FaultOp::Insert, MapError::Exists));
    dp.inject(Fault::once(Step::TunnelPort, FaultOp::Remove, MapError::Os { errno: 1 }));
    let err = pm.add(&tunnel("t", ip("198.51.100.1"), 1), t0).expect_err("insert fails, then its undo");
    let undo = match &err {
        PortError::Txn { cause, .. } => cause.undo().cloned(),
        _ => None,
    };
    assert_eq!(undo.and_then(|u| u.stranded), Some(port(1)), "{err}");
    assert!(err.to_string().contains("tunnel table: remove: Operation not permitted"));
    assert_eq!(pm.allocator().state(port(1)), PortState::Stranded);
    // The leftover tunnel-table entry still names 1, so 1 is not handed out.
    let added = pm.add(&local("vm1", 1), t0).expect("add");
    assert_eq!(added.ofport(), port(2));

    let report = pm.reconcile();
    assert_eq!(report.removed.len(), 1);
    assert!(report.recreated.is_empty() && report.failed.is_empty());
    assert_eq!(pm.allocator().state(port(1)), PortState::Free);
    check_consistent(&pm);
}

#[test]
fn failed_delete_keeps_the_port() {
    let t0 = Instant::now();
    let mut pm = new_map();
    pm.add(&local("vm1", 1), t0).expect("add");
    pm.add(&tunnel("t", ip("198.51.100.1"), 1), t0).expect("add");
    let before = snapshot(&pm);
    for &step in Step::ALL {
        for name in ["vm1", "t"] {
            pm.datapath_mut().inject(Fault::once(step, FaultOp::Remove, MapError::Os { errno: 9 }));
            let result = pm.delete(name, t0);
            pm.datapath_mut().clear_faults();
            let applies = pm.get(name).is_some_and(|r| r.spec.steps().contains(&step));
            if applies {
                let err = result.expect_err("remove fails");
                assert!(err.to_string().contains(&format!("{step}: remove: ")), "{err}");
                assert_eq!(snapshot(&pm), before);
            } else {
                // The fault was for a map this port has no entry in.
                result.expect("delete");
                let spec = before.ports.iter().find(|r| r.name() == name).map(|r| r.spec.clone()).expect("was there");
                let requested = with_request(spec.clone(), before_number(&before, name));
                pm.add(&requested, t0 + HOLD).expect("put back");
                pm.replace(&spec, t0 + HOLD).expect("drop the request");
                assert_eq!(snapshot(&pm), before);
            }
        }
    }
    check_consistent(&pm);
}

fn before_number(s: &Snapshot, name: &str) -> u16 {
    s.ports.iter().find(|r| r.name() == name).map_or(0, |r| r.ofport.get())
}

#[test]
fn duplicates_and_idempotent_repeats() {
    let t0 = Instant::now();
    let mut pm = new_map();
    let t = tunnel("hv1", ip("2001:db8::1"), 5);
    let first = pm.add(&t, t0).expect("add");
    assert_eq!(first, Added::Created(port(1)));
    assert_eq!(pm.add(&t, t0).expect("repeat"), Added::Existing(port(1)));

    let before = snapshot(&pm);
    let err = pm.add(&tunnel("hv1-again", ip("2001:db8::1"), 5), t0).expect_err("redundant chassis");
    assert_eq!(
        err.to_string(),
        "tunnel \"hv1-again\" duplicates tunnel \"hv1\" (remote 2001:db8::1 VNI 5): \
         a redundant tunnel can never carry traffic, refused"
    );
    let err = pm.add(&tunnel("hv1", ip("2001:db8::2"), 5), t0).expect_err("same name, other spec");
    assert!(matches!(err, PortError::NameTaken { ofport, .. } if ofport == port(1)));
    let err = pm.add(&with_request(local("vm", 1), 1), t0).expect_err("pinned number taken");
    assert!(err.to_string().contains("requested OpenFlow port 1 is already in use"));
    let err = pm.add(&with_request(local("vm", 1), 0xff00), t0).expect_err("reserved number");
    assert!(err.to_string().contains("requested OpenFlow port 65280 is out of range"));
    let bad = tunnel("bad", ip("::ffff:127.0.0.1"), 5);
    let err = pm.add(&bad, t0).expect_err("invalid");
    assert_eq!(
        err.to_string(),
        "tunnel \"bad\": remote_ip: 127.0.0.1 is a loopback or link-local address, not another chassis"
    );
    assert_eq!(snapshot(&pm), before, "refusals cost nothing");
    // Same VNI to another remote, or another VNI to the same remote, is fine.
    pm.add(&tunnel("hv2", ip("2001:db8::1"), 6), t0).expect("other vni");
    pm.add(&tunnel("hv3", ip("2001:db8::2"), 5), t0).expect("other remote");
    check_consistent(&pm);
}

#[test]
fn local_port_clashes_are_refused_before_a_number() {
    let t0 = Instant::now();
    let mut pm = new_map();
    let mut vm1 = local("vm1", 1);
    if let PortSpec::Local(p) = &mut vm1 {
        p.ip = Some(unicast(ip("203.0.113.10")));
    }
    pm.add(&vm1, t0).expect("add");
    let before = snapshot(&pm);
    let clash = |f: &dyn Fn(&mut LocalPort)| {
        let mut spec = local("vm2", 2);
        if let PortSpec::Local(p) = &mut spec {
            f(p);
        }
        spec
    };
    type Change<'a> = &'a dyn Fn(&mut LocalPort);
    let cases: [(Change, &str); 4] = [
        (&|p| p.ifname = IfName::new("veth1").unwrap(), "ifname \"veth1\""),
        (&|p| p.port_key = PortKey::new(1).unwrap(), "port_key 1 in VNI 7"),
        (&|p| p.mac = MacAddr([2, 0, 0, 0, 0, 1]), "mac 02:00:00:00:00:01 in VNI 7"),
        // IPv4-mapped is the same address to the datapath.
        (&|p| p.ip = Some(unicast(ip("::ffff:203.0.113.10"))), "ip 203.0.113.10 in VNI 7"),
    ];
    for (change, what) in cases {
        let err = pm.add(&clash(change), t0).expect_err("clash");
        assert_eq!(err.to_string(), format!("port \"vm2\" conflicts with port \"vm1\": both use {what}"));
        assert_eq!(snapshot(&pm), before, "a refused clash costs nothing");
    }
    // The same MAC in another VNI is another logical switch: fine.
    let other_vni = clash(&|p| {
        p.vni = vni(8);
        p.mac = MacAddr([2, 0, 0, 0, 0, 1]);
    });
    assert_eq!(pm.add(&other_vni, t0).expect("add").ofport(), port(2));
    assert_eq!(pm.datapath().entries(Step::Neigh).len(), 1);
    check_consistent(&pm);
}

#[test]
fn apply_desired_group_commits_to_redb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = Instant::now();
    let store = RedbStore::open(dir.path()).expect("store");
    let mut pm = PortMap::open(MemDatapath::new(), store, config()).expect("open");
    let desired: Vec<PortSpec> =
        (0..200u16).map(|i| tunnel(&format!("t{i}"), IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, i + 1]), 1)).collect();
    let report = pm.apply_desired(&desired, t0).expect("apply");
    assert_eq!(report.added.len(), 200);
    let before: Vec<PortRecord> = pm.ports().cloned().collect();
    drop(pm);
    // Durable: a fresh open of the file sees the whole batch.
    let store = RedbStore::open(dir.path()).expect("reopen");
    let pm = PortMap::open(MemDatapath::new(), store, config()).expect("open");
    assert_eq!(pm.ports().cloned().collect::<Vec<_>>(), before);
}

#[test]
fn apply_desired_diffs_and_is_idempotent() {
    let t0 = Instant::now();
    let mut pm = new_map();
    let mut desired = vec![tunnel("a", ip("198.51.100.1"), 1), tunnel("b", ip("198.51.100.2"), 1), local("vm1", 1)];
    let report = pm.apply_desired(&desired, t0).expect("apply");
    assert_eq!(report.added.len(), 3);
    let before = snapshot(&pm);
    let again = pm.apply_desired(&desired, t0).expect("apply");
    assert!(!again.changed() && again.failed.is_empty());
    assert_eq!(again.unchanged, 3);
    assert_eq!(snapshot(&pm), before, "re-applying allocates nothing");

    // Change a's options (keeps its number), drop b, add c.
    if let PortSpec::Tunnel(t) = &mut desired[0] {
        t.bfd = false;
    }
    desired.remove(1);
    desired.push(tunnel("c", ip("198.51.100.3"), 1));
    let report = pm.apply_desired(&desired, t0).expect("apply");
    assert_eq!(report.replaced, [("a".to_owned(), port(1))]);
    assert_eq!(report.deleted, [("b".to_owned(), port(2))]);
    assert_eq!(report.added, [("c".to_owned(), port(4))], "2 is held down");
    assert!(report.failed.is_empty());
    assert_eq!(pm.get("a").map(|r| &r.spec), Some(&desired[0]));
    check_consistent(&pm);

    let dup = [local("x", 1), local("x", 2)];
    assert!(matches!(
        pm.apply_desired(&dup, t0),
        Err(ApplyError::DuplicateName { name }) if name == "x"
    ));
    check_consistent(&pm);
}

#[test]
fn failed_replace_restores_the_old_port() {
    let t0 = Instant::now();
    let mut pm = new_map();
    pm.add(&local("vm0", 9), t0).expect("add");
    pm.add(&tunnel("a", ip("198.51.100.1"), 1), t0).expect("add");
    let before = snapshot(&pm);
    pm.datapath_mut().inject(Fault::once(Step::TunnelByRemote, FaultOp::Insert, MapError::Full { max_entries: 1 }));
    let changed = tunnel("a", ip("198.51.100.77"), 1);
    let report = pm.apply_desired(&[local("vm0", 9), changed.clone()], t0);
    let report = report.expect("apply");
    assert!(!report.changed());
    assert_eq!(report.failed.len(), 1);
    assert_eq!(snapshot(&pm), before, "old port back under its number");
    // And the retry succeeds, keeping number 2.
    let report = pm.apply_desired(&[local("vm0", 9), changed], t0).expect("apply");
    assert_eq!(report.replaced, [("a".to_owned(), port(2))]);
    check_consistent(&pm);
}

#[test]
fn reconcile_repairs_missing_stale_and_orphan_entries() {
    let t0 = Instant::now();
    let mut pm = new_map();
    pm.add(&local("vm1", 1), t0).expect("add");
    pm.add(&tunnel("a", ip("198.51.100.1"), 1), t0).expect("add");
    let healthy = snapshot(&pm);
    assert!(pm.reconcile().is_noop());

    let dp = pm.datapath_mut();
    dp.delete_raw(Step::Devmap, &EntryKey::Port(1));
    let orphan = MapEntry { key: EntryKey::Port(77), ofport: Some(port(77)) };
    dp.put_raw(Step::TunnelPort, orphan);
    // What OVS did in 2018: a port on OFPP_NONE. No port can own it.
    let ofpp_none = MapEntry { key: EntryKey::Port(0xffff), ofport: None };
    dp.put_raw(Step::TunnelPort, ofpp_none);
    let key = EntryKey::Tunnel(TunnelKey { remote: ip("198.51.100.1"), vni: Some(1) });
    let stale = MapEntry { key, ofport: Some(port(1)) };
    dp.put_raw(Step::TunnelByRemote, stale);

    let report = pm.reconcile();
    assert!(report.failed.is_empty());
    let removed: BTreeSet<_> = report.removed.iter().copied().collect();
    let want: BTreeSet<_> =
        [(Step::TunnelPort, orphan), (Step::TunnelPort, ofpp_none), (Step::TunnelByRemote, stale)].into();
    assert_eq!(removed, want);
    let recreated: BTreeSet<_> = report.recreated.iter().map(|(s, _)| *s).collect();
    assert_eq!(recreated, [Step::Devmap, Step::TunnelByRemote].into());
    assert_eq!(snapshot(&pm), healthy);
    assert!(pm.reconcile().is_noop());

    pm.datapath_mut().inject(Fault {
        step: Step::Devmap,
        op: FaultOp::List,
        port_name: None,
        remaining: None,
        error: MapError::Os { errno: 13 },
    });
    let report = pm.reconcile();
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].to_string(), "devmap: list: Permission denied (os error 13)");
}

#[test]
fn redb_restart_preserves_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = Instant::now();
    let open = |dp: MemDatapath| {
        let store = RedbStore::open(dir.path()).expect("store");
        PortMap::open(dp, store, config()).expect("open")
    };
    let mut pm = open(MemDatapath::new());
    for i in 0..5u8 {
        let spec = tunnel(&format!("t{i}"), IpAddr::from([198, 51, 100, i]), 1);
        pm.add(&spec, t0).expect("add");
    }
    pm.add(&with_request(local("vm", 1), 0x9000), t0).expect("add");
    pm.delete("t1", t0).expect("delete");
    let before: Vec<PortRecord> = pm.ports().cloned().collect();
    let (dp, store) = pm.into_parts();
    drop(store);

    let mut pm = open(dp);
    let after: Vec<PortRecord> = pm.ports().cloned().collect();
    assert_eq!(after, before);
    assert!(pm.reconcile().is_noop(), "datapath already matches");
    let numbers: Vec<u16> = after.iter().map(|r| r.ofport.get()).collect();
    assert_eq!(numbers, [1, 3, 4, 5, 0x9000]);
    // Hold-down is not persisted (see the module notes): after a restart
    // the lowest free number, 2, is available again.
    let added = pm.add(&local("vm2", 2), t0).expect("add");
    assert_eq!(added.ofport(), port(2));
    assert_eq!(pm.store().load().expect("load").len(), 6);
}

#[test]
fn open_refuses_corrupt_state() {
    let mut store = MemStore::new();
    for (name, n) in [("a", 1), ("b", 2)] {
        let record = PortRecord { ofport: port(n), spec: tunnel(name, ip("198.51.100.1"), 1) };
        store.put(&record).expect("put");
    }
    let err = PortMap::open(MemDatapath::new(), store.clone(), config()).err().expect("duplicate tunnel");
    assert!(matches!(&err, OpenError::Conflict { claim: Claim::Tunnel(_), .. }), "{err}");

    let mut store = MemStore::new();
    for (name, key) in [("a", 1), ("b", 2)] {
        let record = PortRecord { ofport: port(1), spec: local(name, key) };
        store.put(&record).expect("put");
    }
    let err = PortMap::open(MemDatapath::new(), store, config()).err().expect("duplicate number");
    assert_eq!(err.to_string(), "stored port \"b\": OpenFlow port 1 restored twice");
}

/// Refuses every setup, as an XDP attach on `lo` or a BFD session the
/// engine will not take does.
struct Refuse;

impl Effects for Refuse {
    fn setup(&mut self, port: &PortSpec, _: OfPort) -> anyhow::Result<()> {
        anyhow::bail!("{}: cannot attach xgw_local (refused)", port.name())
    }
    fn teardown(&mut self, port: &PortSpec, _: OfPort) {
        panic!("{} torn down, but it was never set up", port.name());
    }
}

#[test]
fn refused_adds_leave_hold_down_and_the_next_number_alone() {
    let t0 = Instant::now();
    let mut pm = new_map();
    fill_tunnels(&mut pm, 10, t0);
    for i in 0..5 {
        pm.delete(&format!("t{i}"), t0).expect("delete");
    }
    let (held, writes) = (pm.allocator().held_down(), pm.store().writes());
    assert_eq!(held, 5);
    let before = snapshot(&pm);
    for _ in 0..1000 {
        let e = pm.add_with(&local("vm", 1), t0, &mut Refuse).expect_err("refused");
        assert_eq!(e.to_string(), "port \"vm\": vm: cannot attach xgw_local (refused)");
    }
    assert_eq!(snapshot(&pm), before, "1,000 refusals left a trace");
    assert_eq!(pm.allocator().held_down(), held, "a number nobody saw went to hold-down");
    assert_eq!(pm.store().writes(), writes, "a refused effect cost a store write");
    // The next number is the one it would have been: the lowest free one
    // past hold-down, 11.
    assert_eq!(pm.add(&local("vm", 1), t0).expect("add").ofport(), port(11));
    check_consistent(&pm);
}

#[test]
fn binding_faults_at_every_step_leave_no_trace() {
    let t0 = Instant::now();
    let mut pm = new_map();
    pm.add(&tunnel("hv1", ip("198.51.100.7"), 7), t0).expect("tunnel");
    let b = binding(5, "hv1", Some(ip("203.0.113.5")));
    let error = MapError::Os { errno: 16 };
    for &step in Step::BINDING {
        let before = snapshot(&pm);
        pm.datapath_mut().inject(Fault::once(step, FaultOp::Insert, error.clone()));
        let e = pm.add_binding(&b).expect_err("insert fault");
        assert!(e.to_string().starts_with("binding vni 7 mac 02:00:00:99:00:05: "), "{e}");
        assert_eq!(snapshot(&pm), before, "a failed binding insert at {step} left a trace");
    }
    let before = snapshot(&pm);
    pm.store_mut().fail_next_writes(1);
    pm.add_binding(&b).expect_err("store fault");
    assert_eq!(snapshot(&pm), before, "a failed binding write left entries");

    assert_eq!(pm.add_binding(&b).expect("add"), Added::Created(port(1)));
    assert_eq!(pm.add_binding(&b).expect("again"), Added::Existing(port(1)), "idempotent");
    check_consistent(&pm);
    for &step in Step::BINDING {
        let before = snapshot(&pm);
        pm.datapath_mut().inject(Fault::once(step, FaultOp::Remove, error.clone()));
        pm.delete_binding(b.vni, b.mac).expect_err("remove fault");
        assert_eq!(snapshot(&pm), before, "a failed binding delete at {step} lost something");
    }
    let before = snapshot(&pm);
    pm.store_mut().fail_next_writes(1);
    pm.delete_binding(b.vni, b.mac).expect_err("store fault");
    assert_eq!(snapshot(&pm), before, "a failed binding unpersist removed entries");
    pm.delete_binding(b.vni, b.mac).expect("delete");
    assert!(pm.datapath().entries(Step::RemoteFdb).is_empty() && pm.datapath().entries(Step::RemoteNeigh).is_empty());

    // An undo that fails too leaves entries no binding owns; the next
    // reconcile removes them.
    pm.datapath_mut().inject(Fault::once(Step::RemoteNeigh, FaultOp::Insert, error.clone()));
    pm.datapath_mut().inject(Fault::once(Step::RemoteFdb, FaultOp::Remove, error));
    let e = pm.add_binding(&b).expect_err("insert and undo fail");
    assert!(e.to_string().contains("undo incomplete"), "{e}");
    assert_eq!(pm.datapath().entries(Step::RemoteFdb).len(), 1);
    let report = pm.reconcile();
    assert_eq!(report.removed.len(), 1, "{report:?}");
    check_consistent(&pm);
}

#[test]
fn ports_and_bindings_share_one_claim_space() {
    let t0 = Instant::now();
    let mut pm = new_map();
    pm.add(&tunnel("hv1", ip("198.51.100.7"), 7), t0).expect("tunnel");
    let mut vm1 = local("vm1", 1);
    if let PortSpec::Local(p) = &mut vm1 {
        p.ip = Some(unicast(ip("203.0.113.10")));
    }
    pm.add(&vm1, t0).expect("port");
    let before = snapshot(&pm);
    let mut same_mac = binding(5, "hv1", None);
    same_mac.mac = MacAddr([2, 0, 0, 0, 0, 1]);
    assert_eq!(
        pm.add_binding(&same_mac).expect_err("mac clash").to_string(),
        "binding vni 7 mac 02:00:00:00:00:01 conflicts with port \"vm1\": both use mac 02:00:00:00:00:01 in VNI 7"
    );
    let same_ip = binding(5, "hv1", Some(ip("::ffff:203.0.113.10")));
    assert!(pm.add_binding(&same_ip).expect_err("ip clash").to_string().contains("both use ip 203.0.113.10 in VNI 7"));
    assert_eq!(
        pm.add_binding(&binding(5, "vm1", None)).expect_err("not a tunnel").to_string(),
        "binding vni 7 mac 02:00:00:99:00:05: tunnel: \"vm1\" is a local port, not a tunnel"
    );
    assert!(matches!(pm.add_binding(&binding(5, "hv9", None)), Err(PortError::NoSuchTunnel { .. })));
    assert_eq!(snapshot(&pm), before, "refused bindings cost nothing");

    let b = binding(5, "hv1", Some(ip("203.0.113.5")));
    pm.add_binding(&b).expect("binding");
    let mut vm2 = local("vm2", 2);
    if let PortSpec::Local(p) = &mut vm2 {
        p.mac = b.mac;
    }
    let before = snapshot(&pm);
    assert_eq!(
        pm.add(&vm2, t0).expect_err("port on a bound mac").to_string(),
        "port \"vm2\" conflicts with binding vni 7 mac 02:00:00:99:00:05: both use mac 02:00:00:99:00:05 in VNI 7"
    );
    assert_eq!(
        pm.delete("hv1", t0).expect_err("in use").to_string(),
        "tunnel \"hv1\" carries 1 binding(s) (first: vni 7 mac 02:00:00:99:00:05); delete them first"
    );
    assert_eq!(snapshot(&pm), before);
    check_consistent(&pm);
}

#[test]
fn a_tunnel_that_moves_to_another_number_takes_its_bindings() {
    let t0 = Instant::now();
    let mut pm = new_map();
    pm.add(&tunnel("hv1", ip("198.51.100.7"), 7), t0).expect("tunnel");
    pm.add_binding(&binding(5, "hv1", Some(ip("203.0.113.5")))).expect("binding");
    pm.replace(&with_request(tunnel("hv1", ip("198.51.100.7"), 7), 40), t0).expect("moved");
    let owners: Vec<Option<OfPort>> = pm.datapath().entries(Step::RemoteFdb).iter().map(|e| e.ofport).collect();
    assert_eq!(owners, [Some(port(40))]);
    check_consistent(&pm);
    // And across a restart, from the store.
    let (dp, store) = pm.into_parts();
    let mut pm = PortMap::open(dp, store, config()).expect("reopen");
    assert!(pm.reconcile().is_noop());
    check_consistent(&pm);
}

#[test]
fn bfd_timers_change_in_place() {
    #[derive(Default)]
    struct Count {
        setups: u32,
        updates: u32,
    }
    impl Effects for Count {
        fn setup(&mut self, _: &PortSpec, _: OfPort) -> anyhow::Result<()> {
            self.setups += 1;
            Ok(())
        }
        fn teardown(&mut self, _: &PortSpec, _: OfPort) {}
        fn update(&mut self, _: &PortSpec, _: &PortSpec, _: OfPort) -> anyhow::Result<()> {
            self.updates += 1;
            Ok(())
        }
    }
    let t0 = Instant::now();
    let mut pm = new_map();
    let mut fx = Count::default();
    let t = tunnel("hv1", ip("198.51.100.7"), 7);
    assert_eq!(pm.add_with(&t, t0, &mut fx).expect("add"), Added::Created(port(1)));
    let maps = snapshot(&pm).maps;
    let mut faster = t.clone();
    if let PortSpec::Tunnel(t) = &mut faster {
        t.bfd_timers.min_tx_ms = Some(30);
    }
    assert_eq!(pm.add_with(&faster, t0, &mut fx).expect("update"), Added::Updated(port(1)));
    assert_eq!(snapshot(&pm).maps, maps, "the entries stay");
    assert_eq!(pm.get("hv1").map(|r| &r.spec), Some(&faster));
    assert_eq!(pm.store().records().next().map(|r| &r.spec), Some(&faster), "and the record follows");
    assert_eq!((fx.setups, fx.updates), (1, 1), "no new session, one retiming");
}

// ---------------------------------------------------------------------
// Property test: random operation sequences with injected failures.
// ---------------------------------------------------------------------

/// Few names and few tunnel keys, so that duplicates, name clashes and
/// pinned-number collisions are common rather than rare.
const NAMES: [&str; 6] = ["p0", "p1", "p2", "p3", "p4", "p5"];

#[derive(Debug, Clone, Copy)]
enum Inject {
    Insert(Step),
    Remove(Step),
    StoreWrite,
    /// The port's effect (XDP link, BFD session) refuses.
    Effect,
}

#[derive(Debug, Clone)]
enum Op {
    Add(PortSpec, Option<Inject>),
    Delete(usize, Option<Inject>),
    /// Re-add an existing port exactly as it was added.
    Repeat(prop::sample::Index),
    Apply(Vec<PortSpec>, Option<Inject>),
    AddBinding(Binding, Option<Inject>),
    DeleteBinding(usize, Option<Inject>),
    Restart,
    Advance(u64),
}

fn arb_request() -> impl Strategy<Value = Option<u16>> {
    prop_oneof![
        10 => Just(None),
        1 => Just(Some(1)),
        1 => Just(Some(2)),
        1 => Just(Some(0x7fff)),
        1 => Just(Some(0x9000)),
        1 => Just(Some(0)),
        1 => Just(Some(0xff00)),
        1 => Just(Some(0xffff)),
    ]
}

fn arb_spec() -> impl Strategy<Value = PortSpec> {
    // Out-of-range VNIs and keys cannot be built (`types` tests them);
    // a loopback remote is the spec that `validate` refuses.
    let name = (0..NAMES.len()).prop_map(|i| name(NAMES[i]));
    let vni = prop_oneof![
        10 => Just(vni(1)),
        10 => Just(vni(2)),
        1 => Just(vni(Vni::MAX)),
    ];
    let key = prop_oneof![
        10 => Just(PortKey::new(1).unwrap()),
        10 => Just(PortKey::new(2).unwrap()),
        1 => Just(PortKey::new(PortKey::MAX).unwrap()),
    ];
    let remote = prop_oneof![
        10 => Just(unicast(ip("198.51.100.1"))),
        10 => Just(unicast(ip("2001:db8::1"))),
        1 => Just(unicast(ip("127.0.0.1"))),
    ];
    let local = (name.clone(), vni.clone(), key, any::<bool>(), arb_request()).prop_map(
        |(name, vni, port_key, with_ip, ofport_request)| {
            PortSpec::Local(LocalPort {
                name,
                ifname: IfName::new("veth0").unwrap(),
                vni,
                port_key,
                mac: MacAddr([2, 0, 0, 0, 0, 1]),
                ip: with_ip.then(|| unicast(ip("203.0.113.1"))),
                ofport_request,
                port_security: true,
                allowed: Vec::new(),
            })
        },
    );
    // Flow-keyed (no VNI) beside fixed keys: one remote may have both.
    let key = prop_oneof![3 => vni.prop_map(Some), 1 => Just(None)];
    let tunnel =
        (name, remote, key, any::<bool>(), arb_request()).prop_map(|(name, remote, vni, bfd, ofport_request)| {
            let bfd_timers = Default::default();
            PortSpec::Tunnel(TunnelPort { name, remote, vni, bfd, ovn_metadata: true, ofport_request, bfd_timers })
        });
    prop_oneof![local, tunnel]
}

fn arb_inject() -> impl Strategy<Value = Option<Inject>> {
    let step = prop::sample::select(Step::ALL);
    prop_oneof![
        4 => Just(None),
        2 => step.clone().prop_map(|s| Some(Inject::Insert(s))),
        1 => step.prop_map(|s| Some(Inject::Remove(s))),
        2 => Just(Some(Inject::StoreWrite)),
        1 => Just(Some(Inject::Effect)),
    ]
}

/// Bindings whose MACs and IPs clash with the local ports `arb_spec` makes
/// (02:00:00:00:00:01, 203.0.113.1, VNI 1) or with each other.
const BINDING_MACS: [[u8; 6]; 3] = [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 3]];

fn arb_binding() -> impl Strategy<Value = Binding> {
    (0..BINDING_MACS.len(), 0..NAMES.len(), any::<bool>(), 1..3u16).prop_map(|(m, t, with_ip, key)| Binding {
        vni: vni(1),
        mac: MacAddr(BINDING_MACS[m]),
        ip: with_ip.then(|| unicast(ip("203.0.113.1"))),
        tunnel: name(NAMES[t]),
        port_key: PortKey::new(key).unwrap(),
    })
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (arb_spec(), arb_inject()).prop_map(|(s, i)| Op::Add(s, i)),
        2 => (0..NAMES.len(), arb_inject()).prop_map(|(n, i)| Op::Delete(n, i)),
        2 => any::<prop::sample::Index>().prop_map(Op::Repeat),
        1 => (prop::collection::vec(arb_spec(), 0..7), arb_inject())
            .prop_map(|(s, i)| Op::Apply(s, i)),
        3 => (arb_binding(), arb_inject()).prop_map(|(b, i)| Op::AddBinding(b, i)),
        1 => (0..BINDING_MACS.len(), arb_inject()).prop_map(|(m, i)| Op::DeleteBinding(m, i)),
        1 => Just(Op::Restart),
        1 => (0..15u64).prop_map(Op::Advance),
    ]
}

fn arm(pm: &mut MemMap, inject: Option<Inject>) {
    let error = MapError::Os { errno: 16 };
    match inject {
        None => {}
        Some(Inject::Insert(step)) => {
            let fault = Fault::once(step, FaultOp::Insert, error);
            pm.datapath_mut().inject(fault);
        }
        Some(Inject::Remove(step)) => {
            let fault = Fault::once(step, FaultOp::Remove, error);
            pm.datapath_mut().inject(fault);
        }
        Some(Inject::StoreWrite) => pm.store_mut().fail_next_writes(1),
        Some(Inject::Effect) => {}
    }
}

/// Effects that refuse when told to, and record what they set up: after
/// every operation exactly the committed ports have theirs.
#[derive(Debug, Default)]
struct TestEffects {
    live: BTreeSet<String>,
    refuse_next: bool,
}

impl Effects for TestEffects {
    fn setup(&mut self, port: &PortSpec, _: OfPort) -> anyhow::Result<()> {
        if std::mem::take(&mut self.refuse_next) {
            anyhow::bail!("injected effect failure");
        }
        assert!(self.live.insert(port.name().to_owned()), "{} set up twice", port.name());
        Ok(())
    }

    fn teardown(&mut self, port: &PortSpec, _: OfPort) {
        assert!(self.live.remove(port.name()), "{} torn down without a setup", port.name());
    }

    fn update(&mut self, old: &PortSpec, _: &PortSpec, _: OfPort) -> anyhow::Result<()> {
        if std::mem::take(&mut self.refuse_next) {
            anyhow::bail!("injected effect failure");
        }
        assert!(self.live.contains(old.name()), "{} updated without a setup", old.name());
        Ok(())
    }
}

fn disarm(pm: &mut MemMap) {
    pm.datapath_mut().clear_faults();
    pm.store_mut().fail_next_writes(0);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Created,
    Existing(OfPort),
    /// Changed in place (`same_entries`): the number and the entries stay.
    Updated(OfPort),
    Fail(&'static str),
}

fn classify(e: &PortError) -> &'static str {
    match e {
        PortError::Invalid { .. } => "invalid",
        PortError::NameTaken { .. } => "name",
        PortError::DuplicateTunnel { .. } => "tunnel",
        PortError::Conflict { .. } => "conflict",
        PortError::NotFound { .. } => "not found",
        PortError::Txn { cause: TxnError::Number { .. }, .. } => "number",
        PortError::Txn { .. } => "txn",
        PortError::ReplaceLost { .. } => "replace lost",
        PortError::BindingInvalid { .. } => "invalid",
        PortError::NoSuchTunnel { .. } => "no tunnel",
        PortError::NotATunnel { .. } => "not a tunnel",
        PortError::BindingVni { .. } => "binding vni",
        PortError::BindingTaken { .. } => "binding taken",
        PortError::NoSuchBinding { .. } => "not found",
        PortError::TunnelInUse { .. } => "in use",
        PortError::BindingTxn { .. } => "txn",
        PortError::InGroup { .. } => "in group",
        PortError::GroupInvalid { .. }
        | PortError::GroupMember { .. }
        | PortError::NoSuchGroup { .. }
        | PortError::GroupWrite { .. } => "group",
    }
}

/// The outcome `add` must have, derived from the committed ports alone,
/// in the order the port map checks.
fn predict_add(pm: &MemMap, spec: &PortSpec, inject: Option<Inject>) -> Expect {
    if spec.validate().is_err() {
        return Expect::Fail("invalid");
    }
    if let Some(existing) = pm.get(spec.name()) {
        if existing.spec == *spec {
            return Expect::Existing(existing.ofport);
        }
        if !existing.spec.same_entries(spec) {
            return Expect::Fail("name");
        }
        // An update rewrites the record's copy (`Step::Record`) and the record.
        return match inject {
            Some(Inject::StoreWrite | Inject::Effect) => Expect::Fail("txn"),
            Some(Inject::Insert(Step::Record) | Inject::Remove(Step::Record)) => Expect::Fail("txn"),
            _ => Expect::Updated(existing.ofport),
        };
    }
    if spec.tunnel_key().is_some() && pm.ports().any(|r| r.spec.tunnel_key() == spec.tunnel_key()) {
        return Expect::Fail("tunnel");
    }
    let claims: BTreeSet<Claim> = spec.claims().into_iter().collect();
    let clash = pm.ports().any(|r| r.spec.claims().iter().any(|c| claims.contains(c)))
        || pm.bindings().any(|b| b.claims().iter().any(|c| claims.contains(c)));
    if clash {
        return Expect::Fail("conflict");
    }
    if let Some(request) = spec.ofport_request() {
        let taken = pm.ports().any(|r| r.ofport.get() == request);
        if OfPort::new(request).is_err() || taken {
            return Expect::Fail("number");
        }
    }
    match inject {
        Some(Inject::Insert(step)) if spec.steps().contains(&step) => Expect::Fail("txn"),
        Some(Inject::StoreWrite | Inject::Effect) => Expect::Fail("txn"),
        _ => Expect::Created,
    }
}

/// The outcome `add_binding` must have.
fn predict_binding(pm: &MemMap, b: &Binding, inject: Option<Inject>) -> Expect {
    if let Some(old) = pm.binding(b.vni, b.mac) {
        let tunnel = pm.get(&old.tunnel).expect("a binding's tunnel is committed").ofport;
        return if old == b { Expect::Existing(tunnel) } else { Expect::Fail("binding taken") };
    }
    match pm.get(&b.tunnel) {
        Some(r) if matches!(r.spec, PortSpec::Tunnel(_)) => {}
        Some(_) => return Expect::Fail("not a tunnel"),
        None => return Expect::Fail("no tunnel"),
    }
    let claims: BTreeSet<Claim> = b.claims().into_iter().collect();
    let clash = pm.ports().any(|r| r.spec.claims().iter().any(|c| claims.contains(c)))
        || pm.bindings().any(|o| o.claims().iter().any(|c| claims.contains(c)));
    if clash {
        return Expect::Fail("conflict");
    }
    if let Some(PortSpec::Tunnel(TunnelPort { vni: Some(v), .. })) = pm.get(&b.tunnel).map(|r| &r.spec) {
        if *v != b.vni {
            return Expect::Fail("binding vni");
        }
    }
    match inject {
        Some(Inject::Insert(step)) if Object::Binding(b).steps().contains(&step) => Expect::Fail("txn"),
        Some(Inject::StoreWrite) => Expect::Fail("txn"),
        _ => Expect::Created,
    }
}

fn run_ops(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let t0 = Instant::now();
    let mut now = t0;
    let mut pm = new_map();
    let mut fx = TestEffects::default();
    for op in ops {
        let before = snapshot_at(&pm, now);
        fx.refuse_next = matches!(&op, Op::Add(_, Some(Inject::Effect)) | Op::Apply(_, Some(Inject::Effect)));
        match op {
            Op::Add(spec, inject) => {
                let expect = predict_add(&pm, &spec, inject);
                arm(&mut pm, inject);
                let result = pm.add_with(&spec, now, &mut fx);
                disarm(&mut pm);
                match (expect, result) {
                    (Expect::Created, Ok(Added::Created(p))) => {
                        prop_assert!(!before.committed.contains(&p));
                        match spec.ofport_request() {
                            Some(r) => prop_assert_eq!(p.get(), r),
                            None => prop_assert!(p.is_auto()),
                        }
                    }
                    (Expect::Existing(p), Ok(Added::Existing(q))) => {
                        prop_assert_eq!(p, q);
                        prop_assert_eq!(&snapshot_at(&pm, now), &before);
                    }
                    (Expect::Updated(p), Ok(Added::Updated(q))) => {
                        prop_assert_eq!(p, q);
                        prop_assert_eq!(pm.get(spec.name()).map(|r| &r.spec), Some(&spec));
                        let after = snapshot_at(&pm, now);
                        prop_assert_eq!(&after.committed, &before.committed, "an update costs no number");
                        prop_assert_eq!(&after.maps, &before.maps, "an update writes no entry");
                    }
                    (Expect::Fail(kind), Err(e)) => {
                        prop_assert_eq!(kind, classify(&e), "{}", e);
                        prop_assert_eq!(&snapshot_at(&pm, now), &before, "failed add left a trace");
                    }
                    (expect, result) => {
                        prop_assert!(false, "expected {:?}, got {:?}", expect, result);
                    }
                }
            }
            Op::Delete(i, inject) => {
                let name = NAMES[i];
                let existing = pm.get(name).cloned();
                let used = pm.bindings().any(|b| b.tunnel == name);
                arm(&mut pm, inject);
                let result = pm.delete_with(name, now, &mut fx);
                disarm(&mut pm);
                let fails = match (&existing, inject) {
                    (None, _) => Some("not found"),
                    (Some(_), _) if used => Some("in use"),
                    (Some(r), Some(Inject::Remove(step))) if r.spec.steps().contains(&step) => Some("txn"),
                    (Some(_), Some(Inject::StoreWrite)) => Some("txn"),
                    _ => None,
                };
                match (fails, result, existing) {
                    (None, Ok(p), Some(r)) => {
                        prop_assert_eq!(p, r.ofport);
                        let state = pm.allocator().state(p);
                        if p.is_auto() {
                            prop_assert_eq!(state, PortState::HeldDown { since: now });
                        } else {
                            prop_assert_eq!(state, PortState::Free);
                        }
                    }
                    (Some(kind), Err(e), _) => {
                        prop_assert_eq!(kind, classify(&e), "{}", e);
                        prop_assert_eq!(&snapshot_at(&pm, now), &before, "failed delete left a trace");
                    }
                    (fails, result, _) => {
                        prop_assert!(false, "expected {:?}, got {:?}", fails, result);
                    }
                }
            }
            Op::Repeat(pick) => {
                if before.ports.is_empty() {
                    continue;
                }
                let record = before.ports[pick.index(before.ports.len())].clone();
                let added = pm.add_with(&record.spec, now, &mut fx);
                prop_assert_eq!(added.ok(), Some(Added::Existing(record.ofport)));
                prop_assert_eq!(&snapshot_at(&pm, now), &before);
            }
            Op::Apply(desired, inject) => {
                let names: BTreeSet<&str> = desired.iter().map(PortSpec::name).collect();
                arm(&mut pm, inject);
                let result = pm.apply(
                    Desired { ports: &desired, bindings: None, groups: None, interfaces_may_wait: false },
                    now,
                    &mut fx,
                );
                disarm(&mut pm);
                fx.refuse_next = false;
                if names.len() < desired.len() {
                    let duplicate = matches!(result, Err(ApplyError::DuplicateName { .. }));
                    prop_assert!(duplicate, "duplicate names accepted");
                    prop_assert_eq!(&snapshot_at(&pm, now), &before);
                } else {
                    let report = result.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    check_applied(&pm, &desired, &report, inject.is_some())?;
                    check_converges(&mut pm, &desired, now, &mut fx)?;
                }
            }
            Op::AddBinding(b, inject) => {
                let expect = predict_binding(&pm, &b, inject);
                arm(&mut pm, inject);
                let result = pm.add_binding(&b);
                disarm(&mut pm);
                match (expect, result) {
                    (Expect::Created, Ok(Added::Created(_))) => {
                        prop_assert_eq!(pm.binding(b.vni, b.mac), Some(&b));
                        prop_assert_eq!(
                            &snapshot_at(&pm, now).committed,
                            &before.committed,
                            "a binding costs no number"
                        );
                    }
                    (Expect::Existing(p), Ok(Added::Existing(q))) => {
                        prop_assert_eq!(p, q);
                        prop_assert_eq!(&snapshot_at(&pm, now), &before);
                    }
                    (Expect::Fail(kind), Err(e)) => {
                        prop_assert_eq!(kind, classify(&e), "{}", e);
                        prop_assert_eq!(&snapshot_at(&pm, now), &before, "failed binding add left a trace");
                    }
                    (expect, result) => prop_assert!(false, "expected {:?}, got {:?}", expect, result),
                }
            }
            Op::DeleteBinding(m, inject) => {
                let (v, mac) = (vni(1), MacAddr(BINDING_MACS[m]));
                let existing = pm.binding(v, mac).cloned();
                arm(&mut pm, inject);
                let result = pm.delete_binding(v, mac);
                disarm(&mut pm);
                let fails = match (&existing, inject) {
                    (None, _) => Some("not found"),
                    (Some(b), Some(Inject::Remove(step))) if Object::Binding(b).steps().contains(&step) => Some("txn"),
                    (Some(_), Some(Inject::StoreWrite)) => Some("txn"),
                    _ => None,
                };
                match (fails, result) {
                    (None, Ok(b)) => {
                        prop_assert_eq!(Some(b), existing);
                        prop_assert!(pm.binding(v, mac).is_none());
                    }
                    (Some(kind), Err(e)) => {
                        prop_assert_eq!(kind, classify(&e), "{}", e);
                        prop_assert_eq!(&snapshot_at(&pm, now), &before, "failed binding delete left a trace");
                    }
                    (fails, result) => prop_assert!(false, "expected {:?}, got {:?}", fails, result),
                }
            }
            Op::Restart => {
                let (dp, store) = pm.into_parts();
                pm = PortMap::open(dp, store, config()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                // Hold-down lives in memory only (see the module notes).
                let after = Snapshot { held_down: before.held_down, ..snapshot_at(&pm, now) };
                prop_assert_eq!(&after, &before, "restart changed state");
                prop_assert!(pm.reconcile().is_noop());
            }
            Op::Advance(secs) => now += Duration::from_secs(secs),
        }
        check_consistent(&pm);
        let committed: BTreeSet<String> = pm.ports().map(|r| r.name().to_owned()).collect();
        prop_assert_eq!(&fx.live, &committed, "effects set up for exactly the committed ports");
    }
    Ok(())
}

/// After an apply: nothing undesired survives (deletes cannot fail without
/// an injected fault), and every desired port not reported as failed is
/// committed exactly as desired.
fn check_applied(pm: &MemMap, desired: &[PortSpec], report: &ApplyReport, faulty: bool) -> Result<(), TestCaseError> {
    let failed: BTreeSet<&str> = report.failed.iter().map(|(n, _)| n.as_str()).collect();
    for r in pm.ports() {
        let wanted = desired.iter().any(|s| s.name() == r.name());
        let in_use = report.failed.iter().any(|(n, e)| n == r.name() && matches!(e, PortError::TunnelInUse { .. }));
        prop_assert!(wanted || in_use || (faulty && failed.contains(r.name())), "{} kept", r.name());
    }
    for spec in desired.iter().filter(|s| !failed.contains(s.name())) {
        prop_assert_eq!(pm.get(spec.name()).map(|r| &r.spec), Some(spec));
    }
    Ok(())
}

/// Re-applying reaches a fixed point within a few rounds (a pinned number
/// freed late in one round is only taken in the next), after which
/// re-applying changes and allocates nothing.
fn check_converges(
    pm: &mut MemMap,
    desired: &[PortSpec],
    now: Instant,
    fx: &mut TestEffects,
) -> Result<(), TestCaseError> {
    let ports_only = Desired { ports: desired, bindings: None, groups: None, interfaces_may_wait: false };
    for _ in 0..3 {
        let report = pm.apply(ports_only, now, fx).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if !report.changed() {
            let fixed = snapshot_at(pm, now);
            let again = pm.apply(ports_only, now, fx).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(!again.changed());
            prop_assert_eq!(again.failed.len(), report.failed.len());
            prop_assert_eq!(&snapshot_at(pm, now), &fixed, "re-apply changed state");
            return Ok(());
        }
    }
    prop_assert!(false, "apply_desired did not converge");
    Ok(())
}

proptest! {
    // Failing cases are saved next to this file (tests.regressions), inside
    // the module, rather than in a crate-level proptest-regressions/.
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_operations_keep_every_invariant(ops in prop::collection::vec(arb_op(), 1..50)) {
        run_ops(ops)?;
    }
}

/// Throughput and memory under churn, for the benchmark to come:
/// `cargo test -p xgw --release --lib ofport::tests::churn -- --ignored --nocapture`.
/// In-memory datapath and store, so this measures the allocator, the
/// transaction and the policy checks, not redb's fsync.
#[test]
#[ignore = "benchmark; run explicitly, preferably with --release"]
fn churn_throughput_and_flat_memory() {
    fn rss_kib() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        pages * 4
    }
    const LIVE: u32 = 4096;
    const OPS: u32 = 1_000_000;
    let t0 = Instant::now();
    let mut pm = PortMap::open(MemDatapath::new(), MemStore::new(), AllocatorConfig::default()).expect("open");
    let spec = |i: u32| {
        let remote = IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16]);
        tunnel(&format!("t{i}"), remote, 1 + i % 7)
    };
    let mut rss_warm = 0;
    let started = Instant::now();
    for i in 0..OPS {
        // Simulated clock: 50 µs per operation, so hold-down (an hour)
        // never expires and the allocator lives on least-recently-freed.
        let now = t0 + Duration::from_micros(50 * u64::from(i));
        pm.add(&spec(i), now).expect("add");
        if i >= LIVE {
            pm.delete(&format!("t{}", i - LIVE), now).expect("delete");
        }
        if i == OPS / 10 {
            rss_warm = rss_kib();
        }
    }
    let elapsed = started.elapsed();
    let rss_end = rss_kib();
    eprintln!(
        "{OPS} adds + {} deletes in {elapsed:?}: {:.0} adds/s; in use {}, held {}; RSS {rss_warm} KiB at 10%, {rss_end} KiB at end",
        OPS - LIVE,
        f64::from(OPS) / elapsed.as_secs_f64(),
        pm.allocator().in_use(),
        pm.allocator().held_down(),
    );
    assert_eq!(pm.allocator().in_use(), LIVE as usize);
    assert!(pm.allocator().held_down() <= usize::from(OfPort::AUTO_MAX.get()));
    assert!(rss_end <= rss_warm + 8 * 1024, "memory grew from {rss_warm} KiB to {rss_end} KiB");
    check_consistent(&pm);
}

fn group(ports: &[&str], tunnels: &[&str]) -> Group {
    Group {
        vni: vni(7),
        key: xgw_common::maps::GROUP_FLOOD,
        ports: ports.iter().map(|p| name(p)).collect(),
        tunnels: tunnels.iter().map(|t| name(t)).collect(),
        rate_pps: 100,
    }
}

#[test]
fn a_group_holds_its_members_numbers_and_follows_them() {
    let t0 = Instant::now();
    let mut pm = new_map();
    let a = pm.add(&local("a", 1), t0).unwrap().ofport().get();
    let b = pm.add(&local("b", 2), t0).unwrap().ofport().get();
    let mut hv = tunnel("hv", ip("198.51.100.2"), 7);
    let PortSpec::Tunnel(t) = &mut hv else { unreachable!() };
    t.vni = None;
    let h = pm.add(&hv, t0).unwrap().ofport().get();
    let g = group(&["a", "b"], &["hv"]);
    assert_eq!(pm.add_group(&g).unwrap(), GroupChange::Created);
    assert_eq!(pm.add_group(&g).unwrap(), GroupChange::Unchanged);
    let want = GroupEntry { local: vec![a, b], tunnels: vec![h], rate_pps: 100 };
    assert_eq!(pm.datapath().groups().unwrap()[&(7, 32768)], want);
    assert_eq!(pm.store().load_groups().unwrap(), vec![g.clone()]);

    // A member cannot go while the group has it.
    let e = pm.delete("a", t0).unwrap_err();
    assert_eq!(e.to_string(), "port \"a\" is a member of group vni 7 key 32768; take it out of the group first");
    // A tunnel moving to another number takes the group's entry along.
    let PortSpec::Tunnel(t) = &mut hv else { unreachable!() };
    t.ofport_request = Some(4000);
    pm.replace(&hv, t0).unwrap();
    assert_eq!(pm.datapath().groups().unwrap()[&(7, 32768)].tunnels, vec![4000]);

    // Fewer members: one entry rewritten; then the group goes.
    assert_eq!(pm.add_group(&group(&["a"], &[])).unwrap(), GroupChange::Updated);
    assert_eq!(pm.datapath().groups().unwrap()[&(7, 32768)].local, vec![a]);
    pm.delete("b", t0).unwrap();
    pm.delete_group(vni(7), 32768).unwrap();
    assert!(pm.datapath().groups().unwrap().is_empty());
    assert!(pm.store().load_groups().unwrap().is_empty());

    // Reconcile puts a lost entry back and removes one nobody has.
    pm.add_group(&group(&["a"], &["hv"])).unwrap();
    let dp = pm.datapath_mut();
    dp.groups.clear();
    dp.groups.insert((9, 40000), GroupEntry::default());
    pm.reconcile();
    let entries = pm.datapath().groups().unwrap();
    assert_eq!(entries.keys().copied().collect::<Vec<_>>(), vec![(7, 32768)]);
}

#[test]
fn a_group_member_outside_the_rules_is_refused_and_a_failed_write_changes_nothing() {
    let t0 = Instant::now();
    let mut pm = new_map();
    pm.add(&local("a", 1), t0).unwrap();
    pm.add(&tunnel("hv5", ip("198.51.100.2"), 5), t0).unwrap();
    pm.add(&tunnel("hv6", ip("2001:db8::2"), 7), t0).unwrap();
    let cases = [
        (Group { key: 100, ..group(&["a"], &[]) }, "group vni 7 key 100: key: 100 is not a group key (32768..=65535)"),
        (group(&["nope"], &[]), "group vni 7 key 32768: ports: no port named \"nope\""),
        (group(&["hv5"], &[]), "group vni 7 key 32768: ports: \"hv5\" is a tunnel; list it under tunnels"),
        (group(&[], &["a"]), "group vni 7 key 32768: tunnels: \"a\" is a local port; list it under ports"),
        (group(&[], &["hv5"]), "group vni 7 key 32768: tunnels: tunnel \"hv5\" is fixed to VNI 5"),
        (
            group(&[], &["hv6"]),
            "group vni 7 key 32768: tunnels: tunnel \"hv6\": floods go only to IPv4 tunnels with ovn_metadata",
        ),
        (group(&["a", "a"], &[]), "group vni 7 key 32768: ports: \"a\" is named twice"),
    ];
    for (g, want) in cases {
        assert_eq!(pm.add_group(&g).unwrap_err().to_string(), want);
    }
    assert!(pm.datapath().groups().unwrap().is_empty());

    // The store refuses the record: the map entry goes back to what it was.
    pm.store_mut().fail_next_writes(1);
    assert!(pm.add_group(&group(&["a"], &[])).is_err());
    assert!(pm.datapath().groups().unwrap().is_empty());
    assert_eq!(pm.groups().count(), 0);
    // The map refuses the entry: nothing is stored.
    pm.datapath_mut().failing_group_writes = 1;
    assert!(pm.add_group(&group(&["a"], &[])).is_err());
    assert!(pm.store().load_groups().unwrap().is_empty());
}
