//! Fault injection in the controller's port map on the real maps: a full
//! disk under the state directory, a state directory turned read-only, a
//! missing bpffs, and the controller killed at random points inside its
//! transactions, many times over. After each fault the store, the maps and
//! the allocator must agree, and no number may leak.
//! (Map-insert failures at every step of every transaction are covered by
//! the port map's property tests, `control/src/ofport/tests.rs`.)
use std::{
    os::unix::process::ExitStatusExt,
    path::Path,
    time::{Duration, Instant},
};

use xgw::ofport::*;
use xgw_tests::{
    ports::{PortGw as Gw, *},
    require_root, sh,
};

fn config() -> AllocatorConfig {
    AllocatorConfig { hold_down: Duration::from_millis(50) }
}

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop.
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    fn new(tag: &str, size: &str) -> Tmpfs {
        let dir = TempDir::new(tag);
        sh(&["mount", "-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", dir.path.to_str().unwrap()]);
        Tmpfs { dir }
    }

    fn remount(&self, opts: &str) {
        sh(&["mount", "-o", &format!("remount,{opts}"), self.dir.path.to_str().unwrap()]);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir.path).output();
    }
}

/// Fills the file system holding `dir` with a file, until ENOSPC.
fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    // Whatever is left is smaller than a block: take it byte-sized.
    while f.write_all(&block[..512]).is_ok() {}
    while f.write_all(&block[..1]).is_ok() {}
    let _ = f.sync_all();
    path
}

/// The maps hold exactly the committed ports, and the allocator holds
/// exactly their numbers: nothing half-applied, nothing leaked.
fn assert_consistent(gw: &Gw, pm: &Pm, what: &str) {
    let stored = pm.store().load().expect("load store");
    let maps = read_maps(gw.pins());
    assert_eq!(maps, expected_maps(&stored, |n| panic!("no local port expected, got {n}")), "{what}: maps vs store");
    assert_no_reserved_numbers(&maps, &stored);
    let mut committed: Vec<u16> = pm.allocator().committed().map(|p| p.get()).collect();
    let mut numbers: Vec<u16> = stored.iter().map(|r| r.ofport.get()).collect();
    committed.sort_unstable();
    numbers.sort_unstable();
    assert_eq!(committed, numbers, "{what}: allocator vs store");
    assert_eq!(pm.allocator().stranded().count(), 0, "{what}: stranded numbers");
}

/// The disk under the state directory fills up: every add fails with an
/// error naming the store, rolls its map entries back and gives its number
/// back; once space is freed, adds succeed again and survive a restart.
#[test]
fn full_disk_fails_cleanly_and_recovers() {
    require_root!();
    let gw = Gw::new("full", &[]);
    let fs = Tmpfs::new("fullfs", "4m");
    let t0 = Instant::now();
    let mut pm = gw.open_in(&fs.dir.path, config());
    for i in 0..20 {
        pm.add(&tunnel_n(i), t0).expect("add before the disk fills");
    }
    let filler = fill(&fs.dir.path);
    let store_before = pm.store().load().unwrap();

    let mut failures = 0;
    for i in 20..120 {
        // An add may succeed: redb may still find room in pages it already owns.
        if let Err(e) = pm.add(&tunnel_n(i), t0) {
            failures += 1;
            let msg = e.to_string();
            assert!(msg.contains("xgw.redb"), "error does not name the store: {msg}");
        }
        assert_consistent(&gw, &pm, &format!("disk full, add t{i}"));
    }
    assert!(failures > 0, "the disk never filled up");
    eprintln!("disk full: {failures} of 100 adds refused");
    assert!(pm.store().load().unwrap().len() >= store_before.len());

    std::fs::remove_file(&filler).unwrap();
    // After an I/O error redb may refuse the handle until it is reopened:
    // the controller's answer is a restart, which must find a clean state.
    drop(pm);
    let mut pm = gw.open_in(&fs.dir.path, config());
    assert!(pm.reconcile().failed.is_empty());
    assert_consistent(&gw, &pm, "reopened after the disk was freed");
    let before: Vec<(String, u16)> = pm.ports().map(|r| (r.name().to_owned(), r.ofport.get())).collect();
    for i in 200..210 {
        pm.add(&tunnel_n(i), t0).expect("add after space was freed");
    }
    drop(pm);
    let pm = gw.open_in(&fs.dir.path, config());
    for (name, n) in before {
        assert_eq!(pm.get(&name).map(|r| r.ofport.get()), Some(n), "{name} changed number across the restart");
    }
    assert_consistent(&gw, &pm, "restart after recovery");
}

/// A read-only state directory (the kernel refuses to remount a file
/// system read-only while the store is open for writing, so this is the
/// restart case): the controller refuses to start with an error naming the
/// store, and the maps and the committed ports are untouched.
#[test]
fn read_only_state_dir_is_refused_and_changes_nothing() {
    require_root!();
    let gw = Gw::new("ro", &[]);
    let fs = Tmpfs::new("rofs", "16m");
    let t0 = Instant::now();
    let mut pm = gw.open_in(&fs.dir.path, config());
    for i in 0..10 {
        pm.add(&tunnel_n(i), t0).expect("add");
    }
    let (maps, store) = (read_maps(gw.pins()), pm.store().load().unwrap());
    drop(pm);
    fs.remount("ro");
    let err = RedbStore::open(&fs.dir.path).err().expect("a read-only store cannot be opened for writing");
    assert!(err.to_string().contains("xgw.redb"), "error does not name the store: {err}");
    assert_eq!(read_maps(gw.pins()), maps, "maps changed");
    fs.remount("rw");
    let mut pm = gw.open_in(&fs.dir.path, config());
    assert_eq!(pm.store().load().unwrap(), store, "committed ports changed");
    assert!(pm.reconcile().is_noop());
    pm.add(&tunnel_n(10), t0).expect("writable again");
    assert_consistent(&gw, &pm, "writable again");
}

/// No bpffs where the maps should be pinned: a clear error naming the
/// directory, nothing created.
#[test]
fn missing_bpffs_is_a_clear_error() {
    require_root!();
    let plain = TempDir::new("nobpffs");
    let err = xgw::datapath::load_with(xgw::datapath::LoadOptions { pin_dir: Some(&plain.path), max_entries: &[] })
        .expect_err("pinning outside bpffs must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains(plain.path.to_str().unwrap()), "error does not name the directory: {msg}");
    assert_eq!(std::fs::read_dir(&plain.path).unwrap().count(), 0, "something was created in {}", plain.path.display());

    let gone = plain.path.join("nosuch");
    let err = BpfDatapath::open_pinned(&gone).err().expect("no pinned maps there");
    assert!(err.to_string().contains("nosuch"), "{err}");
}

/// The controller (`xgw-churn`: the product's PortMap, BpfDatapath and
/// RedbStore) SIGKILLed at random points, `XGW_KILLS` times (100 in CI;
/// `XGW_KILLS=10000` for the full run). After every kill a restart must
/// find each acknowledged port under its number, the maps equal to the
/// store, and the allocator holding exactly the committed numbers.
#[test]
fn killed_at_random_points_loses_and_leaks_nothing() {
    require_root!();
    let kills: u64 = std::env::var("XGW_KILLS").map_or(100, |v| v.parse().expect("XGW_KILLS"));
    let gw = Gw::new("kills", &[]);
    let journal = gw.state.path.join("journal");
    let state = gw.state.path.join("db");
    let churn = env!("CARGO_BIN_EXE_xgw-churn");
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut j, mut tail) = (Journal::default(), Tail::default());
    let (mut mid_txn, mut checked) = (0u64, 0usize);
    for round in 0..kills {
        let target = j.acked + 1 + (next() % 8) as usize;
        let seed = next().to_string();
        // Tunnels only, so no namespace is needed: spawned directly, it
        // starts faster than through `ip netns exec`.
        let mut cmd = std::process::Command::new(churn);
        cmd.args([gw.pins().to_str().unwrap(), state.to_str().unwrap(), journal.to_str().unwrap(), "0", &seed]);
        let p = xgw_tests::Process::spawn(cmd, "xgw-churn");
        let deadline = Instant::now() + Duration::from_secs(30);
        while j.acked < target {
            assert!(Instant::now() < deadline, "round {round}: xgw-churn made no progress");
            std::thread::sleep(Duration::from_micros(200));
            j.feed(&tail.read(&journal));
        }
        std::thread::sleep(Duration::from_micros(next() % 3000));
        p.signal(nix::sys::signal::Signal::SIGKILL);
        let (status, _, stderr) = p.wait(Duration::from_secs(10)).expect("xgw-churn exits");
        assert_eq!(status.signal(), Some(9), "round {round}: xgw-churn died on its own: {stderr}");
        j.feed(&tail.read(&journal));
        mid_txn += j.inflight.is_some() as u64;

        let mut pm = gw.open_in(&state, config());
        let report = pm.reconcile();
        assert!(report.failed.is_empty(), "round {round}: {:?}", report.failed);
        for (name, outcome) in j.want.iter().filter(|(n, _)| !j.is_uncertain(n)) {
            let got = pm.get(name).map(|r| r.ofport.get());
            assert_eq!(got, *outcome, "round {round}: port {name} acknowledged {outcome:?}, store says {got:?}");
            checked += 1;
        }
        for r in pm.ports() {
            assert!(
                j.want.contains_key(r.name()) || j.is_uncertain(r.name()),
                "round {round}: {} never added",
                r.name()
            );
        }
        assert_consistent(&gw, &pm, &format!("after kill {round}"));
    }
    eprintln!(
        "{kills} kills, {mid_txn} inside a transaction (journal ended on `begin`), {checked} port outcomes checked"
    );
    assert!(mid_txn > 0, "no kill landed inside a transaction");
}
