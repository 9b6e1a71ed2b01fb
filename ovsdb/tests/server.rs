//! The client against real ovsdb-servers (Debian's openvswitch, OVN's
//! Southbound schema): replica and diff semantics compared with what
//! `ovsdb-client query` reads, transactions, conditions, echoes both ways,
//! and raft clusters losing members.
#[macro_use]
mod harness;

use std::{
    collections::BTreeMap,
    path::Path,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use harness::{bin, query_rows, run, wait_until, Cluster, Standalone, SB, SB_SCHEMA};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;
use xgw_ovsdb::{
    ops::{self, cond, mutation, named_uuid},
    Client, Config, Connection, DatabaseSchema, Datum, ErrorKind, Event, MonitorMethod, MonitorSpec, Options, Remote,
    Row, TableMonitor, Uuid,
};

/// The rows ovsdb-client reads, in the replica's terms.
fn server_rows(remote: &str, db: &str, table: &str, schema: &DatabaseSchema) -> BTreeMap<Uuid, Row> {
    let ts = schema.table(table).unwrap();
    query_rows(remote, db, table)
        .into_iter()
        .map(|r| {
            let obj = r.as_object().unwrap();
            let uuid: Uuid = obj["_uuid"][1].as_str().unwrap().parse().unwrap();
            let row = obj
                .iter()
                .filter(|(c, _)| !c.starts_with('_'))
                .map(|(c, v)| (c.clone(), Datum::from_json(&ts.columns[c], v).unwrap()))
                .collect();
            (uuid, row)
        })
        .collect()
}

fn replica_rows(client: &Client, table: &str) -> BTreeMap<Uuid, Row> {
    client.read(|r| r.rows(table).map(|(u, row)| (*u, (**row).clone())).collect())
}

/// The replica equals what ovsdb-client reads (retried: another
/// connection's writes reach the monitor a moment later).
async fn assert_same_as_server(client: &Client, remote: &str, db: &str, table: &str) {
    let schema = client.schema().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let want = server_rows(remote, db, table, &schema);
        let got = replica_rows(client, table);
        if got == want {
            return;
        }
        if Instant::now() > deadline {
            for (u, w) in &want {
                match got.get(u) {
                    None => eprintln!("missing {u}: {w:?}"),
                    Some(g) if g != w => {
                        for (c, wv) in w {
                            if g.get(c) != Some(wv) {
                                eprintln!("{u} column {c}: replica {:?}, server {wv:?}", g.get(c));
                            }
                        }
                    }
                    _ => {}
                }
            }
            for u in got.keys().filter(|u| !want.contains_key(u)) {
                eprintln!("extra {u}");
            }
            panic!("replica of {table} differs from the server");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A mirror of the replica built from the events alone, checking that each
/// change's `old` is what the mirror held.
#[derive(Default)]
struct Mirror {
    rows: BTreeMap<(String, Uuid), Arc<Row>>,
    resets: usize,
    resumed: Vec<bool>,
    disconnects: Vec<String>,
}

impl Mirror {
    fn drain(&mut self, events: &mut UnboundedReceiver<Event>) {
        while let Ok(ev) = events.try_recv() {
            let u = match ev {
                Event::Connected { resumed, .. } => {
                    self.resumed.push(resumed);
                    continue;
                }
                Event::Disconnected { reason, .. } => {
                    self.disconnects.push(reason);
                    continue;
                }
                Event::Reset(u) => {
                    self.resets += 1;
                    u
                }
                Event::Update(u) => u,
            };
            for c in u.changes {
                let key = (c.table.clone(), c.uuid);
                assert_eq!(self.rows.get(&key), c.old.as_ref(), "old value of {key:?}");
                match c.new {
                    Some(n) => self.rows.insert(key, n),
                    None => self.rows.remove(&key),
                };
            }
        }
    }

    fn table(&self, table: &str) -> BTreeMap<Uuid, Row> {
        self.rows.iter().filter(|((t, _), _)| t == table).map(|((_, u), r)| (*u, (**r).clone())).collect()
    }
}

/// xorshift64*: reproducible transactions without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

const STRINGS: [&str; 7] = ["", "a", "b", "c", "d e", "é", "\"q\"}"];

/// A random value for column `c` of diff.ovsschema's table T; `rows` are
/// the existing rows (targets of the weak references).
fn random_value(rng: &mut Rng, c: &str, rows: &[Uuid]) -> Value {
    let int = |rng: &mut Rng| json!(rng.below(6) as i64 - 1);
    let string = |rng: &mut Rng| json!(rng.pick(&STRINGS));
    let some = |rng: &mut Rng, max: usize, f: &mut dyn FnMut(&mut Rng) -> Value| -> Vec<Value> {
        let n = rng.below(max + 1);
        let mut out: Vec<Value> = Vec::new();
        for _ in 0..n {
            let v = f(rng);
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out
    };
    let pairs =
        |rng: &mut Rng, max: usize, k: &mut dyn FnMut(&mut Rng) -> Value, v: &mut dyn FnMut(&mut Rng) -> Value| {
            let keys = some(rng, max, k);
            ops::map(keys.into_iter().map(|key| (key, v(rng))))
        };
    let row_ref = |rng: &mut Rng| {
        if rows.is_empty() {
            ops::uuid(Uuid::from_u128(7))
        } else {
            ops::uuid(*rng.pick(rows))
        }
    };
    match c {
        "i" => int(rng),
        "r" => json!(rng.pick(&[0.0, 1.5, -2.25, 3.0, 1e10])),
        "b" => json!(rng.below(2) == 1),
        "s" => string(rng),
        "u" => ops::uuid(Uuid::from_u128(rng.below(3) as u128 + 1)),
        "e" => json!(rng.pick(&["red", "green", "blue"])),
        "oi" => ops::set(some(rng, 1, &mut |r| int(r))),
        "os" => ops::set(some(rng, 1, &mut |r| string(r))),
        "si" => ops::set(some(rng, 5, &mut |r| int(r))),
        "ss" => ops::set(some(rng, 5, &mut |r| string(r))),
        "s2" => ops::set(some(rng, 2, &mut |r| string(r))),
        "s1n" => {
            let mut v = some(rng, 3, &mut |r| string(r));
            if v.is_empty() {
                v.push(json!("x"));
            }
            ops::set(v)
        }
        "m" => pairs(rng, 4, &mut |r| string(r), &mut |r| string(r)),
        "mi" => pairs(rng, 4, &mut |r| int(r), &mut |r| int(r)),
        "mr" => pairs(rng, 3, &mut |r| string(r), &mut |r| json!(rng_real(r))),
        "mb" => pairs(rng, 3, &mut |r| string(r), &mut |r| json!(r.below(2) == 1)),
        "m1" => pairs(rng, 1, &mut |r| string(r), &mut |r| string(r)),
        "refs" => ops::set(some(rng, 3, &mut |r| row_ref(r))),
        "mref" => pairs(rng, 3, &mut |r| string(r), &mut |r| row_ref(r)),
        _ => unreachable!("{c}"),
    }
}

fn rng_real(r: &mut Rng) -> f64 {
    *r.pick(&[0.5, -1.0, 2.0])
}

const COLUMNS: [&str; 19] =
    ["i", "r", "b", "s", "u", "e", "oi", "os", "si", "ss", "s2", "s1n", "m", "mi", "mr", "mb", "m1", "refs", "mref"];
const SETS: [&str; 4] = ["si", "ss", "s2", "s1n"];
const MAPS: [&str; 6] = ["m", "mi", "mr", "mb", "m1", "mref"];

fn random_op(rng: &mut Rng, rows: &[Uuid]) -> Value {
    let by_uuid = |u: &Uuid| vec![cond("_uuid", "==", ops::uuid(*u))];
    let kind = if rows.len() < 4 { 0 } else { rng.below(10) };
    match kind {
        // Insert with a random subset of the columns.
        0 | 1 => {
            let mut row = serde_json::Map::new();
            for c in COLUMNS {
                // s1n needs an element, e one of its enum: their
                // defaults are not valid values.
                if c == "s1n" || c == "e" || rng.below(2) == 0 {
                    row.insert(c.to_owned(), random_value(rng, c, rows));
                }
            }
            ops::insert("T", Value::Object(row))
        }
        // Replace whole values: maps keep some keys with other values.
        2..=4 => {
            let mut row = serde_json::Map::new();
            for _ in 0..1 + rng.below(3) {
                let c = *rng.pick(&COLUMNS);
                row.insert(c.to_owned(), random_value(rng, c, rows));
            }
            ops::update("T", by_uuid(rng.pick(rows)), Value::Object(row))
        }
        // Mutations: elements added to and removed from sets and maps.
        5..=8 => {
            let target = *rng.pick(rows);
            let mut muts = Vec::new();
            for _ in 0..1 + rng.below(2) {
                if rng.below(2) == 0 {
                    let c = *rng.pick(&SETS);
                    let m = *rng.pick(&["insert", "delete"]);
                    muts.push(mutation(c, m, random_value(rng, c, rows)));
                } else {
                    let c = *rng.pick(&MAPS);
                    match rng.below(3) {
                        0 => muts.push(mutation(c, "insert", random_value(rng, c, rows))),
                        // Delete by pairs: only where the value matches.
                        1 => muts.push(mutation(c, "delete", random_value(rng, c, rows))),
                        // Delete by keys.
                        _ => {
                            let Value::Array(m) = random_value(rng, c, rows) else { unreachable!() };
                            let keys = m[1].as_array().unwrap().iter().map(|p| p[0].clone());
                            muts.push(mutation(c, "delete", ops::set(keys)));
                        }
                    }
                }
            }
            if rng.below(4) == 0 {
                muts.push(mutation("i", "+=", json!(1)));
            }
            ops::mutate("T", by_uuid(&target), muts)
        }
        // Deleting a row also drops the weak references to it elsewhere:
        // modifications the server makes on its own.
        _ => ops::delete("T", by_uuid(rng.pick(rows))),
    }
}

fn start_client(cfg: Config) -> (Client, UnboundedReceiver<Event>) {
    Client::start(cfg)
}

async fn connected(cfg: Config) -> (Client, UnboundedReceiver<Event>) {
    let (c, ev) = start_client(cfg);
    if let Err(e) = c.wait_monitoring(Duration::from_secs(10)).await {
        panic!("client did not connect: {e}");
    }
    (c, ev)
}

fn remote(s: &str) -> Remote {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_matches_the_server_through_set_and_map_changes() {
    require_ovsdb!();
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/diff.ovsschema");
    let s = Standalone::start("diff", &schema, &[]);
    let addr = s.server.unix_remote();
    let (client, mut events) = connected(Config::new(addr.parse().unwrap(), "Diff", MonitorSpec::all_tables())).await;
    assert_eq!(client.state().method, Some(MonitorMethod::MonitorCondSince));
    // A second writer: updates that are not the client's own.
    let mut other = Connection::connect(&remote(&addr), &Options::default()).await.unwrap();
    let mut mirror = Mirror::default();
    let seed = 0x05ee_d0f0_d5db;
    let mut rng = Rng(seed);
    let (mut ok, mut refused) = (0, 0);
    for step in 0..400 {
        let rows: Vec<Uuid> = client.read(|r| r.rows("T").map(|(u, _)| *u).collect());
        let txn: Vec<Value> = (0..1 + rng.below(3)).map(|_| random_op(&mut rng, &rows)).collect();
        let r =
            if step % 2 == 0 { client.transact(txn.clone()).await } else { other.transact("Diff", txn.clone()).await };
        match r {
            Ok(_) => ok += 1,
            // A set of at most 2 overflowing, a set of at least 1 emptied.
            Err(e) if e.ovsdb_error().is_some_and(|o| o.kind == ErrorKind::ConstraintViolation) => refused += 1,
            Err(e) => panic!("step {step} (seed {seed:#x}): {e}\n{txn:?}"),
        }
        if step % 50 == 49 {
            assert_same_as_server(&client, &addr, "Diff", "T").await;
            mirror.drain(&mut events);
            assert_eq!(mirror.table("T"), replica_rows(&client, "T"), "events and replica disagree at step {step}");
        }
    }
    assert_same_as_server(&client, &addr, "Diff", "T").await;
    mirror.drain(&mut events);
    assert_eq!(mirror.table("T"), replica_rows(&client, "T"));
    // Refusals are the schema's bounds at work (a set of at most 2 grown
    // past it, a map of at most one pair given two, ...).
    assert!(ok > 250 && refused > 0, "{ok} transactions applied, {refused} refused");
    // The whole run is one monitor.
    let st = client.stats();
    assert_eq!((st.connections, st.full_resyncs, mirror.resets), (1, 1, 1), "{st:?}");
    // Not one per transaction: one that changes nothing sends nothing.
    assert!(st.updates > ok / 2, "{st:?}");
}

/// The cases ovsdb-server(7) 4.1.14 spells out, one by one, each checked
/// against the server and against the change event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_cases_from_the_spec() {
    require_ovsdb!();
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/diff.ovsschema");
    let s = Standalone::start("spec", &schema, &[]);
    let addr = s.server.unix_remote();
    let (client, mut events) = connected(Config::new(addr.parse().unwrap(), "Diff", MonitorSpec::all_tables())).await;
    let set = |v: &[&str]| ops::set(v.iter().map(|s| json!(s)));
    let map = |v: &[(&str, &str)]| ops::map(v.iter().map(|(k, v)| (json!(k), json!(v))));
    let r = client
        .transact(vec![ops::insert(
            "T",
            json!({"s1n": set(&["x"]), "e": "red", "s2": set(&["a", "b"]), "ss": set(&["a"]), "oi": 5,
                   "m": map(&[("k1", "v1"), ("k2", "v2")]), "mb": ops::map([(json!("x"), json!(true))])}),
        )])
        .await
        .unwrap();
    let row = ops::inserted_uuid(&r[0]).unwrap();
    let by_uuid = vec![cond("_uuid", "==", ops::uuid(row))];
    let steps: Vec<(&str, Value, &str, Datum)> = vec![
        // Both elements of a set of at most 2 replaced: a 4-element diff.
        (
            "replace a bounded set",
            ops::update("T", by_uuid.clone(), json!({"s2": set(&["c", "d"])})),
            "s2",
            Datum::set(["c", "d"]),
        ),
        // Same key same value stays, a changed value is replaced, a new key added.
        (
            "map: keep, change, add",
            ops::update("T", by_uuid.clone(), json!({"m": map(&[("k1", "v1"), ("k2", "v3"), ("k3", "v4")])})),
            "m",
            Datum::map([("k1", "v1"), ("k2", "v3"), ("k3", "v4")]),
        ),
        (
            "map: remove keys",
            ops::update("T", by_uuid.clone(), json!({"m": map(&[("k2", "v3")])})),
            "m",
            Datum::map([("k2", "v3")]),
        ),
        (
            "map: delete by key",
            ops::mutate("T", by_uuid.clone(), vec![mutation("m", "delete", set(&["k2"]))]),
            "m",
            Datum::Map(Default::default()),
        ),
        (
            "map of booleans: a value flips",
            ops::update("T", by_uuid.clone(), json!({"mb": ops::map([(json!("x"), json!(false))])})),
            "mb",
            Datum::map([("x", false)]),
        ),
        (
            "set: one in, one out",
            ops::mutate(
                "T",
                by_uuid.clone(),
                vec![mutation("ss", "insert", set(&["b"])), mutation("ss", "delete", set(&["a"]))],
            ),
            "ss",
            Datum::set(["b"]),
        ),
        (
            "optional cleared",
            ops::update("T", by_uuid.clone(), json!({"oi": set(&[])})),
            "oi",
            Datum::Set(Default::default()),
        ),
        ("optional set", ops::update("T", by_uuid.clone(), json!({"oi": 7})), "oi", Datum::scalar(7)),
        ("scalar", ops::update("T", by_uuid.clone(), json!({"e": "blue"})), "e", Datum::scalar("blue")),
    ];
    let mut mirror = Mirror::default();
    mirror.drain(&mut events);
    for (what, op, column, want) in steps {
        client.transact(vec![op]).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let got = client.read(|r| r.row("T", row).unwrap()[column].clone());
        assert_eq!(got, want, "{what}");
        assert_same_as_server(&client, &addr, "Diff", "T").await;
        mirror.drain(&mut events);
        assert_eq!(mirror.table("T"), replica_rows(&client, "T"), "{what}");
    }
    client.transact(vec![ops::delete("T", by_uuid)]).await.unwrap();
    assert!(client.read(|r| r.row("T", row).is_none()));
}

async fn sb_client(addr: &str, spec: MonitorSpec) -> (Client, UnboundedReceiver<Event>) {
    connected(Config::new(addr.parse().unwrap(), SB, spec)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_uuids_and_typed_errors() {
    require_ovsdb!();
    let s = Standalone::start("txn", Path::new(SB_SCHEMA), &[]);
    let addr = s.server.unix_remote();
    let spec = MonitorSpec::new()
        .table("Chassis", TableMonitor::all())
        .table("Encap", TableMonitor::all())
        .table("Chassis_Private", TableMonitor::all().columns(&["name", "chassis"]));
    let (client, _events) = sb_client(&addr, spec).await;

    // Three rows referring to each other by name in one transaction.
    let chassis = |name: &str, ip: &str| {
        vec![
            ops::insert_named(
                "Encap",
                json!({"type": "geneve", "ip": ip, "chassis_name": name, "options": ops::map([(json!("csum"), json!("false"))])}),
                "e",
            ),
            ops::insert_named("Chassis", json!({"name": name, "hostname": name, "encaps": named_uuid("e")}), "c"),
            ops::insert("Chassis_Private", json!({"name": name, "chassis": named_uuid("c")})),
        ]
    };
    let r = client.transact(chassis("gw1", "198.51.100.13")).await.unwrap();
    let uuids: Vec<Uuid> = r.iter().map(|x| ops::inserted_uuid(x).unwrap()).collect();
    // Already in the replica when transact returns.
    client.read(|rep| {
        let c = rep.row("Chassis", uuids[1]).unwrap();
        assert_eq!(c["encaps"], Datum::scalar(uuids[0]));
        assert_eq!(rep.row("Encap", uuids[0]).unwrap()["options"].get("csum").unwrap().as_str(), Some("false"));
        let p = rep.row("Chassis_Private", uuids[2]).unwrap();
        assert_eq!(p["chassis"].as_uuid(), Some(uuids[1]));
        assert_eq!(p.keys().collect::<Vec<_>>(), ["chassis", "name"]);
    });

    // The 2018 incident's guard: one Encap per (type, ip).
    let e = client.transact(chassis("gw2", "198.51.100.13")).await.unwrap_err();
    match &e {
        xgw_ovsdb::Error::Transaction { index: None, error, .. } => {
            assert_eq!(error.kind, ErrorKind::ConstraintViolation);
            let d = error.details.as_deref().unwrap_or_default();
            assert!(d.contains("Encap") && d.contains("198.51.100.13"), "{d}");
        }
        other => panic!("expected a commit-time constraint violation, got {other:?}"),
    }
    assert_eq!(client.read(|r| r.rows("Chassis").count()), 1);

    // An operation's own error names it.
    let e = client
        .transact(vec![
            ops::comment("xgw-ovsdb test"),
            ops::wait(
                "Chassis",
                vec![cond("name", "==", json!("gw1"))],
                &["hostname"],
                "==",
                vec![json!({"hostname": "x"})],
                Some(0),
            ),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, xgw_ovsdb::Error::Transaction { index: Some(1), op: Some(op), error } if op == "wait" && error.kind == ErrorKind::TimedOut),
        "{e:?}"
    );
    // A request the server refuses as a whole.
    let e = client.call("transact", json!(["No_Such_Db", ops::comment("x")])).await.unwrap_err();
    assert_eq!(e.ovsdb_error().map(|o| o.kind), Some(ErrorKind::UnknownDatabase), "{e}");

    // The plain connection's requests.
    let mut conn = Connection::connect(&remote(&addr), &Options::default()).await.unwrap();
    let mut dbs = conn.list_dbs().await.unwrap();
    dbs.sort();
    assert_eq!(dbs, ["OVN_Southbound", "_Server"]);
    assert!(client.list_dbs().await.unwrap().contains(&SB.to_owned()));
    conn.echo().await.unwrap();
    let schema = conn.get_schema(SB).await.unwrap();
    assert_eq!(&schema, &*client.schema().unwrap());
    let sel = conn.transact(SB, vec![ops::select("Chassis", vec![], Some(&["name"]))]).await.unwrap();
    assert_eq!(ops::rows(&sel[0]).unwrap(), &vec![json!({"name": "gw1"})]);
}

fn names(client: &Client, table: &str) -> Vec<String> {
    let mut v: Vec<String> =
        client.read(|r| r.rows(table).map(|(_, row)| row["name"].as_str().unwrap().to_owned()).collect());
    v.sort();
    v
}

/// Inserts and deletes an event stream says happened in `table`, by name.
fn inserted_deleted(events: &mut UnboundedReceiver<Event>, table: &str) -> (Vec<String>, Vec<String>) {
    let (mut ins, mut del) = (Vec::new(), Vec::new());
    while let Ok(ev) = events.try_recv() {
        if let Event::Update(u) | Event::Reset(u) = ev {
            for c in u.changes.iter().filter(|c| c.table == table) {
                let name = |r: &Arc<Row>| r["name"].as_str().unwrap().to_owned();
                match (&c.old, &c.new) {
                    (None, Some(n)) => ins.push(name(n)),
                    (Some(o), None) => del.push(name(o)),
                    (Some(o), Some(_)) => ins.push(format!("~{}", name(o))),
                    (None, None) => {}
                }
            }
        }
    }
    ins.sort();
    del.sort();
    (ins, del)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_narrow_and_widen_on_a_live_monitor() {
    require_ovsdb!();
    let s = Standalone::start("cond", Path::new(SB_SCHEMA), &[]);
    let addr = s.server.unix_remote();
    let mut w = Connection::connect(&remote(&addr), &Options::default()).await.unwrap();
    let set = |n: &str| ops::insert("Address_Set", json!({"name": n, "addresses": ops::set([json!("198.51.100.1")])}));
    w.transact(SB, vec![set("a"), set("b"), set("c")]).await.unwrap();
    let by_name = |n: &str| cond("name", "==", json!(n));

    let spec = MonitorSpec::new().table("Address_Set", TableMonitor::all().conditions(vec![by_name("a")]));
    let (client, mut ev) = sb_client(&addr, spec).await;
    assert_eq!(names(&client, "Address_Set"), ["a"]);
    inserted_deleted(&mut ev, "Address_Set");

    // Widen: b comes in.
    client.set_conditions("Address_Set", vec![by_name("a"), by_name("b")]).await.unwrap();
    assert_eq!(names(&client, "Address_Set"), ["a", "b"]);
    assert_eq!(inserted_deleted(&mut ev, "Address_Set"), (vec!["b".into()], vec![]));
    // Move: a and b leave, c comes.
    client.set_conditions("Address_Set", vec![by_name("c")]).await.unwrap();
    assert_eq!(names(&client, "Address_Set"), ["c"]);
    assert_eq!(inserted_deleted(&mut ev, "Address_Set"), (vec!["c".into()], vec!["a".into(), "b".into()]));
    // Nothing, then everything.
    client.set_conditions("Address_Set", vec![json!(false)]).await.unwrap();
    assert!(names(&client, "Address_Set").is_empty());
    client.set_conditions("Address_Set", vec![]).await.unwrap();
    assert_eq!(names(&client, "Address_Set"), ["a", "b", "c"]);
    inserted_deleted(&mut ev, "Address_Set");

    // Changes outside the conditions are not seen; a row that stops
    // matching is deleted from the replica.
    client.set_conditions("Address_Set", vec![by_name("a")]).await.unwrap();
    inserted_deleted(&mut ev, "Address_Set");
    let add = |n: &str, a: &str| {
        ops::mutate("Address_Set", vec![by_name(n)], vec![mutation("addresses", "insert", ops::set([json!(a)]))])
    };
    w.transact(SB, vec![add("b", "198.51.100.2")]).await.unwrap();
    w.transact(SB, vec![add("a", "198.51.100.3")]).await.unwrap();
    wait_until("a's new address", Duration::from_secs(5), || {
        client.read(|r| r.rows("Address_Set").any(|(_, row)| row["addresses"].len() == 2))
    })
    .await;
    assert_eq!(inserted_deleted(&mut ev, "Address_Set"), (vec!["~a".into()], vec![]));
    w.transact(SB, vec![ops::update("Address_Set", vec![by_name("a")], json!({"name": "z"}))]).await.unwrap();
    wait_until("a renamed away", Duration::from_secs(5), || names(&client, "Address_Set").is_empty()).await;
    assert_eq!(inserted_deleted(&mut ev, "Address_Set"), (vec![], vec!["a".into()]));

    // Conditions the server refuses come back as its error; the monitor
    // keeps the previous ones.
    let e = client.set_conditions("Address_Set", vec![json!(["nope", "==", 1])]).await.unwrap_err();
    assert!(e.ovsdb_error().is_some(), "{e}");
    let e = client.set_conditions("Nope", vec![]).await.unwrap_err();
    assert!(e.to_string().contains("not monitored"), "{e}");
    client.set_conditions("Address_Set", vec![by_name("c")]).await.unwrap();
    assert_eq!(names(&client, "Address_Set"), ["c"]);
    assert_eq!(client.stats().connections, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_echo_is_answered() {
    require_ovsdb!();
    let s = Standalone::start("echo", Path::new(SB_SCHEMA), &[format!("--remote=db:{SB},SB_Global,connections")]);
    // A listener whose inactivity probe is the shortest ovsdb-server allows
    // (1 s): it sends echo after 1 s of silence and drops a client that
    // stays silent another second.
    let probe_sock = s.dir.path("probe.sock");
    let txn = json!([SB,
        {"op": "insert", "table": "Connection", "uuid-name": "c",
         "row": {"target": format!("punix:{}", probe_sock.display()), "inactivity_probe": 1000}},
        {"op": "insert", "table": "SB_Global", "row": {"connections": ["named-uuid", "c"]}}]);
    run(Command::new(bin("ovsdb-client")).args(["transact", &s.server.unix_remote(), &txn.to_string()]));
    wait_until("the probe listener", Duration::from_secs(10), || probe_sock.exists()).await;

    let mut cfg = Config::new(
        format!("unix:{}", probe_sock.display()).parse().unwrap(),
        SB,
        MonitorSpec::new().table("SB_Global", TableMonitor::all()),
    );
    // Our own probe off: only the server's echoes keep the link alive.
    cfg.options.probe_interval = None;
    let (client, _ev) = connected(cfg).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let st = client.stats();
    assert!(st.echoes_answered >= 2, "{st:?}");
    assert_eq!(st.connections, 1, "{st:?}");
    assert!(client.state().monitoring);
    // The plain connection answers them too while it waits.
    let mut conn = Connection::connect(
        &remote(&format!("unix:{}", probe_sock.display())),
        &Options { probe_interval: None, ..Options::default() },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    conn.echo().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    conn.list_dbs().await.unwrap();
    assert!(conn.echoes_answered() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_drops_a_silent_server_and_reconnects() {
    require_ovsdb!();
    let s = Standalone::start("probe", Path::new(SB_SCHEMA), &[]);
    let addr = s.server.unix_remote();
    let mut cfg = Config::new(addr.parse().unwrap(), SB, MonitorSpec::new().table("Address_Set", TableMonitor::all()));
    cfg.options.probe_interval = Some(Duration::from_millis(200));
    cfg.backoff_min = Duration::from_millis(50);
    cfg.backoff_max = Duration::from_millis(400);
    let (client, mut ev) = connected(cfg).await;
    client.transact(vec![ops::insert("Address_Set", json!({"name": "a"}))]).await.unwrap();

    s.server.signal(nix::sys::signal::Signal::SIGSTOP);
    let t = Instant::now();
    wait_until("the probe to drop the stopped server", Duration::from_secs(5), || !client.state().monitoring).await;
    // Two silent intervals, give or take the scheduler.
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(client.stats().probe_timeouts >= 1);
    let e = client.transact(vec![ops::comment("x")]).await.unwrap_err();
    assert!(matches!(e, xgw_ovsdb::Error::NotConnected { .. }), "{e:?}");
    // The replica is kept while disconnected.
    assert_eq!(names(&client, "Address_Set"), ["a"]);

    s.server.signal(nix::sys::signal::Signal::SIGCONT);
    wait_until("reconnected", Duration::from_secs(10), || client.state().monitoring).await;
    assert_eq!(names(&client, "Address_Set"), ["a"]);
    let mut m = Mirror::default();
    m.drain(&mut ev);
    assert!(m.disconnects.iter().any(|r| r.contains("inactivity probe")), "{:?}", m.disconnects);
}

/// A clustered Southbound: the client's member is killed, the client moves
/// to another and resumes from its last transaction (no full reload), and
/// keeps receiving updates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_member_killed_client_resumes_elsewhere() {
    require_ovsdb!();
    let mut cluster = Cluster::start("raft", 3);
    let mut cfg = Config::new(
        cluster.remotes_tcp().parse().unwrap(),
        SB,
        MonitorSpec::new().table("Address_Set", TableMonitor::all()),
    );
    cfg.backoff_max = Duration::from_secs(1);
    let (client, mut ev) = connected(cfg).await;
    let mut mirror = Mirror::default();
    assert_eq!(client.state().model.as_deref(), Some("clustered"));
    for n in ["a", "b"] {
        client.transact(vec![ops::insert("Address_Set", json!({"name": n}))]).await.unwrap();
    }
    let before = client.state();
    assert!(!before.last_txn_id.is_zero(), "a clustered server gives transaction ids");
    let victim = cluster.index_of(&before.remote.unwrap().to_string());
    // A writer on a member that survives.
    let survivor = (victim + 1) % 3;
    let mut w =
        Connection::connect(&remote(&cluster.members[survivor].unix_remote()), &Options::default()).await.unwrap();

    cluster.members[victim].kill();
    w.transact(SB, vec![ops::insert("Address_Set", json!({"name": "while-moving"}))]).await.unwrap();
    wait_until("the client on another member", Duration::from_secs(20), || {
        client.state().remote.is_some_and(|r| cluster.index_of(&r.to_string()) != victim)
    })
    .await;
    let st = client.stats();
    assert_eq!((st.full_resyncs, st.resumes), (1, 1), "{st:?}");
    mirror.drain(&mut ev);
    assert_eq!(mirror.resumed, [false, true]);
    assert_eq!(mirror.resets, 1);

    // Updates keep coming, from others and from the client's own writes
    // (forwarded to the leader by a follower).
    w.transact(SB, vec![ops::insert("Address_Set", json!({"name": "after"}))]).await.unwrap();
    client.transact(vec![ops::insert("Address_Set", json!({"name": "mine"}))]).await.unwrap();
    wait_until("every row", Duration::from_secs(10), || names(&client, "Address_Set").len() == 5).await;
    assert_eq!(names(&client, "Address_Set"), ["a", "after", "b", "mine", "while-moving"]);
    let now = client.state().remote.unwrap().to_string();
    assert_same_as_server(&client, &now, SB, "Address_Set").await;
    mirror.drain(&mut ev);
    assert_eq!(mirror.table("Address_Set"), replica_rows(&client, "Address_Set"));
    assert_eq!(client.stats().full_resyncs, 1);
}

/// A member cut off from its cluster (the two others stopped) says
/// connected=false in `_Server`: the client leaves it and does not come
/// back until it is in a quorum again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_member_out_of_the_cluster_is_skipped() {
    require_ovsdb!();
    let mut cluster = Cluster::start("quorum", 3);
    // Member 0 first, member 1 second: deterministic order.
    let remotes = format!("{},{}", cluster.members[0].tcp_remote(), cluster.members[1].tcp_remote());
    let mut cfg =
        Config::new(remotes.parse().unwrap(), SB, MonitorSpec::new().table("Address_Set", TableMonitor::all()));
    cfg.shuffle = false;
    cfg.backoff_min = Duration::from_millis(50);
    cfg.backoff_max = Duration::from_millis(500);
    let (client, mut ev) = connected(cfg).await;
    assert_eq!(client.state().remote.unwrap().to_string(), cluster.members[0].tcp_remote());
    client.transact(vec![ops::insert("Address_Set", json!({"name": "a"}))]).await.unwrap();

    cluster.members[1].kill();
    cluster.members[2].kill();
    cluster.wait_member(0, false);
    wait_until("the client to leave member 0", Duration::from_secs(10), || !client.state().monitoring).await;
    // Member 0 keeps being refused, member 1 keeps being down.
    let refused = client.stats().refused;
    wait_until("more refusals", Duration::from_secs(10), || client.stats().refused >= refused + 2).await;
    assert!(!client.state().monitoring);
    let mut m = Mirror::default();
    m.drain(&mut ev);
    assert!(m.disconnects.iter().any(|r| r.contains("disconnected from the cluster")), "{:?}", m.disconnects);
    assert!(client.state().last_error.is_some());

    // Member 1 back: a quorum again, and the client monitors again, with
    // its replica resumed rather than reloaded.
    cluster.members[1].restart();
    wait_until("monitoring again", Duration::from_secs(20), || client.state().monitoring).await;
    assert_eq!(names(&client, "Address_Set"), ["a"]);
    let st = client.stats();
    assert_eq!((st.full_resyncs, st.resumes), (1, 1), "{st:?}");
}
