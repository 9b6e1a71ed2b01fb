//! Server behaviours a real ovsdb-server of this OVS version does not show
//! on demand: servers older than `monitor_cond_since` (before OVS 2.12) or
//! `monitor_cond` (before 2.6) or `_Server` (before 2.9), a raft member
//! behind the others, malformed updates, oversized messages. A scripted
//! server task speaks the protocol on a unix socket.
#[macro_use]
#[allow(unused_macros)]
mod harness;

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use harness::{wait_until, TempDir};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixListener,
};
use xgw_ovsdb::{
    framing::Decoder, ops, Client, Config, Datum, Error, Event, MonitorMethod, MonitorSpec, TableMonitor, Uuid,
};

/// What the fake does about one request.
enum Act {
    Reply(Value),
    Error(Value),
    Notify(&'static str, Value),
    Raw(Vec<u8>),
}

type Handler = dyn Fn(usize, &str, &Value) -> Vec<Act> + Send + Sync;

struct Fake {
    path: PathBuf,
    /// (connection number, method, params) of every request received.
    requests: Arc<Mutex<Vec<(usize, String, Value)>>>,
    _dir: TempDir,
}

impl Fake {
    fn start(tag: &str, handler: impl Fn(usize, &str, &Value) -> Vec<Act> + Send + Sync + 'static) -> Fake {
        let dir = TempDir::new(tag);
        let path = dir.path("fake.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let reqs = requests.clone();
        tokio::spawn(async move {
            let conns = AtomicUsize::new(0);
            while let Ok((stream, _)) = listener.accept().await {
                let n = conns.fetch_add(1, Ordering::Relaxed);
                let (handler, reqs) = (handler.clone(), reqs.clone());
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.into_split();
                    let mut dec = Decoder::new(1 << 20);
                    let mut buf = vec![0u8; 65536];
                    loop {
                        let Ok(k) = r.read(&mut buf).await else { return };
                        if k == 0 {
                            return;
                        }
                        let mut msgs = Vec::new();
                        if dec.feed(&buf[..k], &mut msgs).is_err() {
                            return;
                        }
                        for m in msgs {
                            let Some(method) = m["method"].as_str() else { continue };
                            reqs.lock().unwrap().push((n, method.to_owned(), m["params"].clone()));
                            let acts = if method == "echo" {
                                vec![Act::Reply(m["params"].clone())]
                            } else {
                                handler(n, method, &m["params"])
                            };
                            for a in acts {
                                let out = match a {
                                    Act::Reply(v) => {
                                        json!({"id": m["id"], "result": v, "error": null}).to_string().into_bytes()
                                    }
                                    Act::Error(e) => {
                                        json!({"id": m["id"], "result": null, "error": e}).to_string().into_bytes()
                                    }
                                    Act::Notify(method, params) => {
                                        json!({"id": null, "method": method, "params": params}).to_string().into_bytes()
                                    }
                                    Act::Raw(b) => b,
                                };
                                if w.write_all(&out).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Fake { path, requests, _dir: dir }
    }

    fn remote(&self) -> String {
        format!("unix:{}", self.path.display())
    }

    fn methods(&self, conn: usize) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, m, _)| *n == conn && m != "echo")
            .map(|(_, m, _)| m.clone())
            .collect()
    }

    fn params(&self, method: &str) -> Vec<Value> {
        self.requests.lock().unwrap().iter().filter(|(_, m, _)| m == method).map(|(_, _, p)| p.clone()).collect()
    }
}

const U1: &str = "00000000-0000-0000-0000-0000000000a1";
const U2: &str = "00000000-0000-0000-0000-0000000000a2";
const TXN1: &str = "10000000-0000-0000-0000-000000000001";
const TXN2: &str = "10000000-0000-0000-0000-000000000002";

fn schema() -> Value {
    json!({"name": "Fake", "version": "1.0.0", "tables": {"T": {"columns": {
        "name": {"type": "string"},
        "tags": {"type": {"key": "string", "min": 0, "max": "unlimited"}},
        "ext": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}}
    }}}})
}

fn unknown_method() -> Act {
    Act::Error(json!("unknown method"))
}

fn unknown_database() -> Act {
    Act::Error(json!({"error": "unknown database", "details": "_Server is not a valid database name"}))
}

fn monid() -> Value {
    json!(["monid", "Fake"])
}

fn config(remotes: &str) -> Config {
    let mut c = Config::new(remotes.parse().unwrap(), "Fake", MonitorSpec::new().table("T", TableMonitor::all()));
    c.shuffle = false;
    c.backoff_min = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c.connect_timeout = Duration::from_secs(5);
    c
}

fn row(client: &Client, u: &str) -> Option<xgw_ovsdb::Row> {
    client.read(|r| r.row("T", u.parse().unwrap()).map(|r| (**r).clone()))
}

/// A server of OVS 2.6 to 2.11: no `_Server`, no `monitor_cond_since`.
#[tokio::test]
async fn falls_back_to_monitor_cond() {
    let fake = Fake::start("cond", |_, method, params| match method {
        "get_schema" if params[0] == "Fake" => vec![Act::Reply(schema())],
        "get_schema" => vec![unknown_database()],
        "monitor_cond_since" => vec![unknown_method()],
        "monitor_cond" => {
            vec![Act::Reply(
                json!({"T": {U1: {"initial": {"name": "a", "tags": ["set", ["x", "y"]]}}, U2: {"initial": {"name": "b"}}}}),
            )]
        }
        // Updates before the reply, as ovsdb-server sends them.
        "transact" => vec![
            Act::Notify(
                "update2",
                json!([monid(), {"T": {U1: {"modify": {"tags": "x", "ext": ["map", [["k", "v"]]]}}}}]),
            ),
            Act::Reply(json!([{}])),
        ],
        "monitor_cond_change" => {
            assert_eq!(params[2], json!({"T": [{"where": [["name", "==", "a"]]}]}));
            vec![Act::Notify("update2", json!([monid(), {"T": {U2: {"delete": null}}}])), Act::Reply(json!({}))]
        }
        _ => vec![Act::Error(json!({"error": "unexpected", "details": method}))],
    });
    let (client, mut ev) = Client::connect(config(&fake.remote())).await.unwrap();
    let st = client.state();
    assert_eq!(st.method, Some(MonitorMethod::MonitorCond));
    assert!(st.last_txn_id.is_zero());
    assert_eq!(client.stats().fallbacks, 1);
    assert_eq!(
        fake.methods(0),
        ["get_schema", "get_schema", "monitor_cond_since", "monitor_cond"],
        "schema of _Server refused, then the database's"
    );
    assert_eq!(row(&client, U1).unwrap()["tags"], Datum::set(["x", "y"]));

    client.transact(vec![ops::comment("x")]).await.unwrap();
    let r = row(&client, U1).unwrap();
    assert_eq!(r["tags"], Datum::set(["y"]));
    assert_eq!(r["ext"], Datum::map([("k", "v")]));

    client.set_conditions("T", vec![ops::cond("name", "==", json!("a"))]).await.unwrap();
    assert!(row(&client, U2).is_none());
    let mut kinds = Vec::new();
    while let Ok(e) = ev.try_recv() {
        kinds.push(match e {
            Event::Connected { resumed, method, .. } => format!("connected {} {resumed}", method.name()),
            Event::Reset(u) => format!("reset {}", u.changes.len()),
            Event::Update(u) => format!("update {}", u.changes.len()),
            Event::Disconnected { .. } => "disconnected".into(),
        });
    }
    assert_eq!(kinds, ["connected monitor_cond false", "reset 2", "update 1", "update 1"]);
}

/// A server before OVS 2.6: plain `monitor`, `update` with old/new rows,
/// and no conditions (asked-for conditions are accepted; every row stays).
#[tokio::test]
async fn falls_back_to_plain_monitor() {
    let fake = Fake::start("plain", |_, method, params| match method {
        "get_schema" if params[0] == "Fake" => vec![Act::Reply(schema())],
        "get_schema" => vec![unknown_database()],
        "monitor_cond_since" | "monitor_cond" => vec![unknown_method()],
        "monitor" => {
            // No "where" may reach a server that does not know it.
            assert!(params[2]["T"][0].get("where").is_none(), "{params}");
            vec![Act::Reply(
                json!({"T": {U1: {"new": {"name": "a", "tags": ["set", ["x", "y"]], "ext": ["map", []]}}}}),
            )]
        }
        "transact" => vec![
            Act::Notify(
                "update",
                json!([monid(), {"T": {
                    U1: {"old": {"tags": ["set", ["x", "y"]]}, "new": {"name": "a", "tags": "z", "ext": ["map", []]}},
                    U2: {"new": {"name": "b"}}}}]),
            ),
            Act::Reply(json!([{}])),
        ],
        _ => vec![Act::Error(json!({"error": "unexpected", "details": method}))],
    });
    let mut cfg = config(&fake.remote());
    cfg.monitor = MonitorSpec::new().table("T", TableMonitor::all().conditions(vec![json!(false)]));
    let (client, _ev) = Client::connect(cfg).await.unwrap();
    assert_eq!(client.state().method, Some(MonitorMethod::Monitor));
    assert_eq!(client.stats().fallbacks, 2);
    client.transact(vec![ops::comment("x")]).await.unwrap();
    assert_eq!(row(&client, U1).unwrap()["tags"], Datum::set(["z"]));
    assert_eq!(row(&client, U2).unwrap()["tags"], Datum::Set(Default::default()));
    client.set_conditions("T", vec![ops::cond("name", "==", json!("a"))]).await.unwrap();
    assert!(fake.params("monitor_cond_change").is_empty());
}

fn server_schema() -> Value {
    json!({"name": "_Server", "version": "1.2.0", "tables": {"Database": {"columns": {
        "name": {"type": "string"},
        "model": {"type": {"key": {"type": "string", "enum": ["set", ["standalone", "clustered", "relay"]]}}},
        "connected": {"type": "boolean"},
        "leader": {"type": "boolean"},
        "schema": {"type": {"key": "string", "min": 0, "max": 1}},
        "cid": {"type": {"key": "uuid", "min": 0, "max": 1}},
        "sid": {"type": {"key": "uuid", "min": 0, "max": 1}},
        "index": {"type": {"key": "integer", "min": 0, "max": 1}}
    }}}})
}

/// A raft member whose `_Server` row has `index`.
fn member(index: i64) -> impl Fn(usize, &str, &Value) -> Vec<Act> + Send + Sync + 'static {
    move |_, method, params| match method {
        "get_schema" if params[0] == "_Server" => vec![Act::Reply(server_schema())],
        "monitor_cond" if params[0] == "_Server" => vec![Act::Reply(json!({"Database": {U1: {"initial": {
            "name": "Fake", "model": "clustered", "connected": true, "leader": false,
            "schema": schema().to_string(), "index": index}}}}))],
        "monitor_cond_since" => {
            if params[3] == json!(TXN1) {
                vec![Act::Reply(json!([true, TXN2, {"T": {U2: {"insert": {"name": "b"}}}}]))]
            } else {
                vec![Act::Reply(json!([false, TXN1, {"T": {U1: {"initial": {"name": "a"}}}}]))]
            }
        }
        _ => vec![Act::Error(json!({"error": "unexpected", "details": method}))],
    }
}

/// A member whose raft index is lower than one already seen is behind:
/// refused, and the client goes on to the next member.
#[tokio::test]
async fn stale_member_is_refused() {
    let ahead = Fake::start("ahead", member(10));
    let behind = Fake::start("behind", member(5));
    let (client, _ev) = Client::connect(config(&format!("{},{}", ahead.remote(), behind.remote()))).await.unwrap();
    assert_eq!(client.state().min_index, Some(10));
    assert_eq!(client.state().last_txn_id, TXN1.parse::<Uuid>().unwrap());
    // Away from `ahead`: `behind` is next, and must be refused; `ahead`
    // again after it, where the monitor resumes.
    client.reconnect();
    wait_until("back on the member ahead", Duration::from_secs(5), || {
        client.stats().connections == 2 && client.state().monitoring
    })
    .await;
    let st = client.stats();
    assert_eq!((st.refused, st.full_resyncs, st.resumes), (1, 1, 1), "{st:?}");
    assert_eq!(client.state().remote.unwrap().to_string(), ahead.remote());
    assert!(behind.methods(0).iter().all(|m| m != "monitor_cond_since"), "{:?}", behind.methods(0));
    assert!(row(&client, U1).is_some() && row(&client, U2).is_some());
    assert_eq!(client.state().last_txn_id, TXN2.parse::<Uuid>().unwrap());
    // The resume asked for the transaction the first monitor ended at.
    assert_eq!(ahead.params("monitor_cond_since")[1][3], json!(TXN1));
}

/// Malformed input never panics: the connection is dropped and the next
/// one reloads everything (the transaction id is forgotten).
#[tokio::test]
async fn malformed_update_drops_the_connection_and_resyncs() {
    let fake = Fake::start("bad", |conn, method, params| match method {
        "get_schema" if params[0] == "Fake" => vec![Act::Reply(schema())],
        "get_schema" => vec![unknown_database()],
        "monitor_cond_since" => vec![Act::Reply(json!([false, TXN1, {"T": {U1: {"initial": {"name": "a"}}}}]))],
        "transact" => match conn {
            // A modify of a row that does not exist.
            0 => vec![
                Act::Notify("update3", json!([monid(), TXN2, {"T": {U2: {"modify": {"name": "x"}}}}])),
                Act::Reply(json!([{}])),
            ],
            // A set where the column holds a map.
            1 => vec![Act::Notify("update3", json!([monid(), TXN2, {"T": {U1: {"modify": {"ext": ["set", ["k"]]}}}}]))],
            // Not JSON at all.
            2 => vec![Act::Raw(b"{\"id\":null,\"method\":\"update3\",\"params\":[}".to_vec())],
            // Larger than the client accepts.
            3 => vec![Act::Notify(
                "update3",
                json!([monid(), TXN2, {"T": {U1: {"modify": {"name": "y".repeat(10_000)}}}}]),
            )],
            // Not an update3's shape.
            4 => vec![Act::Notify("update3", json!([monid(), "not-a-uuid", {}]))],
            _ => vec![Act::Reply(json!([{}]))],
        },
        _ => vec![Act::Error(json!({"error": "unexpected", "details": method}))],
    });
    let mut cfg = config(&fake.remote());
    cfg.options.max_message = 4096;
    let (client, _ev) = Client::connect(cfg).await.unwrap();
    let mut reasons = Vec::new();
    for round in 1..=5u64 {
        // Bounded: a bad message that went unnoticed would leave the
        // request waiting for a reply the fake never sends.
        let e = tokio::time::timeout(Duration::from_secs(5), client.transact(vec![ops::comment("x")]))
            .await
            .unwrap_or_else(|_| panic!("round {round}: the bad message went unnoticed"))
            .unwrap_err();
        assert!(matches!(e, Error::ConnectionLost { .. }), "{e:?}");
        reasons.push(e.to_string());
        wait_until("reconnected", Duration::from_secs(5), || client.stats().connections == round + 1).await;
    }
    client.transact(vec![ops::comment("x")]).await.unwrap();
    assert!(reasons[0].contains("not present") && reasons[1].contains("column ext"), "{reasons:?}");
    assert!(reasons[2].contains("malformed JSON") && reasons[3].contains("larger than 4096"), "{reasons:?}");
    assert!(reasons[4].contains("not a UUID"), "{reasons:?}");
    let st = client.stats();
    assert_eq!((st.malformed_updates, st.full_resyncs, st.resumes), (2, 6, 0), "{st:?}");
    // Every reconnect asked for everything: the id was dropped with the
    // replica's trust.
    for p in &fake.params("monitor_cond_since")[1..] {
        assert_eq!(p[3], json!(Uuid::ZERO.to_string()));
    }
    assert_eq!(row(&client, U1).unwrap()["name"].as_str(), Some("a"));
}
