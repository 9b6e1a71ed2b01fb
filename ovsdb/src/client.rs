//! A monitored, self-healing connection to one database: the replica kept
//! up to date, transactions, conditions changed on the fly, and
//! reconnects across the members of a raft cluster that resume from the
//! last transaction seen (`monitor_cond_since`) instead of reloading
//! everything. The sequence follows OVS's `lib/ovsdb-cs.c` (what
//! ovn-controller runs, with `leader_only` false):
//!
//! 1. `get_schema _Server`, `monitor_cond _Server Database`: the member
//!    must have the database and, if clustered, be connected to the
//!    cluster and not behind the highest `index` this client has seen.
//!    A server without `_Server` (before OVS 2.9) skips this step.
//! 2. The database's schema (from `_Server`, else `get_schema`).
//! 3. `monitor_cond_since` with the last transaction id; if the server
//!    does not know the method, `monitor_cond`, then `monitor`.
//! 4. Updates, `monitor_cond_change`, transactions, echoes both ways; a
//!    `_Server` change that makes the member unfit drops the connection.
use std::{
    collections::{hash_map::RandomState, BTreeMap, HashMap, VecDeque},
    hash::{BuildHasher, Hasher},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use serde_json::{json, Value};
use tokio::{
    sync::{mpsc, oneshot, watch},
    time::{sleep_until, Instant},
};
use tracing::{debug, info, warn};

use crate::{
    conn::{sleep_opt, Conn, Options},
    jsonrpc::{ErrorKind, Message, OvsdbError},
    ops,
    replica::{Monitored, Replica, RowChange, UpdateFormat},
    schema::DatabaseSchema,
    Error, Remote, Remotes, Uuid,
};

/// What to replicate of one table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableMonitor {
    /// `None`: every column of the server's schema.
    pub columns: Option<Vec<String>>,
    /// `<condition>`s, any of which a row must match (they are ORed, unlike
    /// a transaction's `where`); empty for every row, `[false]` for none.
    pub conditions: Vec<Value>,
}

impl TableMonitor {
    pub fn all() -> TableMonitor {
        TableMonitor::default()
    }

    pub fn columns(mut self, columns: &[&str]) -> TableMonitor {
        self.columns = Some(columns.iter().map(|c| (*c).to_owned()).collect());
        self
    }

    pub fn conditions(mut self, conditions: Vec<Value>) -> TableMonitor {
        self.conditions = conditions;
        self
    }
}

/// The tables to replicate. A table or column the server's schema lacks is
/// skipped with a warning, as OVS's IDL does for an older server.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MonitorSpec {
    all_tables: bool,
    tables: BTreeMap<String, TableMonitor>,
}

impl MonitorSpec {
    pub fn new() -> MonitorSpec {
        MonitorSpec::default()
    }

    /// Every table and column of the server's schema, every row (tables
    /// also given with [`MonitorSpec::table`] use their own settings).
    pub fn all_tables() -> MonitorSpec {
        MonitorSpec { all_tables: true, tables: BTreeMap::new() }
    }

    pub fn table(mut self, name: &str, monitor: TableMonitor) -> MonitorSpec {
        self.tables.insert(name.to_owned(), monitor);
        self
    }

    /// The tables and columns actually monitored on a server with `schema`.
    fn resolve(&self, schema: &DatabaseSchema) -> Monitored {
        let mut out = Monitored::new();
        let names: Vec<&String> = if self.all_tables {
            schema.tables.keys().chain(self.tables.keys()).collect()
        } else {
            self.tables.keys().collect()
        };
        for name in names {
            let Some(ts) = schema.table(name) else {
                warn!(table = %name, db = %schema.name, "table not in the server's schema; not monitored");
                continue;
            };
            let cols = match self.tables.get(name).and_then(|t| t.columns.as_ref()) {
                None => ts.columns.keys().cloned().collect(),
                Some(cols) => cols
                    .iter()
                    .filter(|c| {
                        let known = ts.columns.contains_key(*c);
                        if !known {
                            warn!(table = %name, column = %c, "column not in the server's schema; not monitored");
                        }
                        known
                    })
                    .cloned()
                    .collect(),
            };
            out.insert(name.clone(), cols);
        }
        out
    }

    fn knows(&self, table: &str) -> bool {
        self.all_tables || self.tables.contains_key(table)
    }
}

/// The monitor request a server accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MonitorMethod {
    /// `monitor_cond_since` / `update3` (OVS 2.12+): resumable.
    MonitorCondSince,
    /// `monitor_cond` / `update2` (OVS 2.6+): conditions, full resync on
    /// every reconnect.
    MonitorCond,
    /// `monitor` / `update` (RFC 7047): no conditions, so every row of the
    /// monitored tables is replicated whatever the conditions say.
    Monitor,
}

impl MonitorMethod {
    pub fn name(self) -> &'static str {
        match self {
            MonitorMethod::MonitorCondSince => "monitor_cond_since",
            MonitorMethod::MonitorCond => "monitor_cond",
            MonitorMethod::Monitor => "monitor",
        }
    }

    fn fallback(self) -> Option<MonitorMethod> {
        match self {
            MonitorMethod::MonitorCondSince => Some(MonitorMethod::MonitorCond),
            MonitorMethod::MonitorCond => Some(MonitorMethod::Monitor),
            MonitorMethod::Monitor => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub remotes: Remotes,
    pub database: String,
    pub monitor: MonitorSpec,
    pub options: Options,
    /// Delay before the first retry after a failed attempt, doubled on each
    /// further failure up to `backoff_max`. After an established connection
    /// drops, the next member is tried at once.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Try the remotes in a random order (then round-robin), so that many
    /// clients spread over the members.
    pub shuffle: bool,
    /// Accept only the raft leader. ovn-controller does not (followers
    /// forward transactions); ovn-northd does.
    pub leader_only: bool,
    /// The first monitor method tried (later ones are fallbacks).
    pub monitor_method: MonitorMethod,
    /// How long [`Client::connect`] waits for the first complete replica.
    pub connect_timeout: Duration,
}

impl Config {
    pub fn new(remotes: Remotes, database: &str, monitor: MonitorSpec) -> Config {
        Config {
            remotes,
            database: database.to_owned(),
            monitor,
            options: Options::default(),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(8),
            shuffle: true,
            leader_only: false,
            monitor_method: MonitorMethod::MonitorCondSince,
            connect_timeout: Duration::from_secs(30),
        }
    }
}

/// The changes of one update: one transaction's (update2/update3), a
/// condition change's, or what a resumed monitor's reply carried.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    pub changes: Vec<RowChange>,
    /// The transaction id after this update (`monitor_cond_since` only).
    pub txn_id: Option<Uuid>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Monitoring on `remote`; `resumed` when the server had our last
    /// transaction and sent only what came after it.
    Connected {
        remote: Remote,
        method: MonitorMethod,
        resumed: bool,
    },
    /// An established connection ended (failed attempts are only counted
    /// in [`Stats`] and reported in [`State::last_error`]).
    Disconnected {
        remote: Remote,
        reason: String,
    },
    /// The replica was reloaded in full (first connection, or a server
    /// that could not resume); `changes` turn the previous replica into
    /// the new one, rows that did not change left out.
    Reset(Update),
    Update(Update),
}

/// Where the client is. A snapshot; see [`Client::state`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    /// The member monitored, while monitoring.
    pub remote: Option<Remote>,
    pub monitoring: bool,
    pub method: Option<MonitorMethod>,
    /// The last transaction id received (zero until a
    /// `monitor_cond_since` server sends one).
    pub last_txn_id: Uuid,
    /// The member's `_Server` model (`standalone`, `clustered`, `relay`).
    pub model: Option<String>,
    /// The highest raft index seen; a member behind it is refused.
    pub min_index: Option<u64>,
    pub last_error: Option<String>,
}

/// Counters since the client started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections tried.
    pub attempts: u64,
    /// Monitors established.
    pub connections: u64,
    /// Monitor replies that replaced the whole replica.
    pub full_resyncs: u64,
    /// `monitor_cond_since` replies with found=true: only the delta.
    pub resumes: u64,
    /// Members refused after reading their `_Server` row.
    pub refused: u64,
    /// Connections dropped because the probe went unanswered.
    pub probe_timeouts: u64,
    /// The server's echo requests answered.
    pub echoes_answered: u64,
    /// Update notifications applied.
    pub updates: u64,
    /// Monitor methods the server did not know (fell back to an older one).
    pub fallbacks: u64,
    /// Updates that could not be applied (the connection was dropped and
    /// the next one reloads everything).
    pub malformed_updates: u64,
}

enum Command {
    Transact { ops: Vec<Value>, reply: oneshot::Sender<Result<Vec<Value>, Error>> },
    Call { method: String, params: Value, reply: oneshot::Sender<Result<Value, Error>> },
    SetConditions { table: String, conditions: Vec<Value>, reply: oneshot::Sender<Result<(), Error>> },
    Reconnect,
}

struct Shared {
    replica: RwLock<Replica>,
    schema: RwLock<Option<Arc<DatabaseSchema>>>,
    state: Mutex<State>,
    stats: Mutex<Stats>,
    monitoring: watch::Sender<bool>,
}

// A poisoned lock only means a reader panicked; the data is still whole
// (every writer here finishes its update before releasing).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn stats(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut lock(&self.stats));
    }

    fn state(&self, f: impl FnOnce(&mut State)) {
        f(&mut lock(&self.state));
    }
}

/// A handle on the client's task. Clones share it; the task (and its
/// connection) ends when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    cmds: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
}

impl Client {
    /// Starts the client's task (on the current tokio runtime) and returns
    /// at once; it connects, and keeps reconnecting, in the background.
    /// Events come in order on the receiver, which may be dropped if they
    /// are not wanted; it is unbounded, so a consumer must keep reading.
    pub fn start(config: Config) -> (Client, mpsc::UnboundedReceiver<Event>) {
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            replica: RwLock::new(Replica::default()),
            schema: RwLock::new(None),
            state: Mutex::new(State::default()),
            stats: Mutex::new(Stats::default()),
            monitoring: watch::channel(false).0,
        });
        let session = Session::new(config, shared.clone(), ev_tx, cmd_rx);
        tokio::spawn(session.run());
        (Client { cmds: cmd_tx, shared }, ev_rx)
    }

    /// [`Client::start`], then waits until the replica is complete, at
    /// most `config.connect_timeout`.
    pub async fn connect(config: Config) -> Result<(Client, mpsc::UnboundedReceiver<Event>), Error> {
        let t = config.connect_timeout;
        let (c, ev) = Client::start(config);
        c.wait_monitoring(t).await?;
        Ok((c, ev))
    }

    /// Waits until a monitor is established and the replica complete.
    pub async fn wait_monitoring(&self, timeout: Duration) -> Result<(), Error> {
        let mut rx = self.shared.monitoring.subscribe();
        let waited = tokio::time::timeout(timeout, async { rx.wait_for(|m| *m).await.map(drop) }).await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => Err(Error::Timeout {
                what: "waiting for a monitored connection".to_owned(),
                after: timeout,
                last_error: self.state().last_error,
            }),
        }
    }

    async fn command<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Command) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(make(tx)).map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Runs `ops` (see [`crate::ops`]) as one transaction. When it returns,
    /// the replica already holds the transaction's own changes (the server
    /// sends the update before the reply). Fails with
    /// [`Error::NotConnected`] between connections (a transaction sent
    /// while a connection is being set up waits for it), and with
    /// [`Error::ConnectionLost`] if the connection ends before the reply:
    /// the transaction may or may not have committed.
    pub async fn transact(&self, ops: Vec<Value>) -> Result<Vec<Value>, Error> {
        self.command(|reply| Command::Transact { ops, reply }).await
    }

    /// Any request on the live connection, e.g. `list_dbs`.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, Error> {
        self.command(|reply| Command::Call { method: method.to_owned(), params, reply }).await
    }

    pub async fn list_dbs(&self) -> Result<Vec<String>, Error> {
        let v = self.call("list_dbs", json!([])).await?;
        let names = v.as_array().map(|a| a.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect());
        names.ok_or_else(|| Error::Protocol { remote: "list_dbs".into(), reason: "result is not an array".into() })
    }

    /// Replaces the conditions of a monitored table (`monitor_cond_change`)
    /// and returns once the replica matches them: rows newly matching were
    /// inserted, rows no longer matching deleted. Across a reconnect the
    /// new conditions are kept and applied on the next connection. With a
    /// plain `monitor` (servers before OVS 2.6) conditions cannot apply
    /// and every row stays replicated.
    pub async fn set_conditions(&self, table: &str, conditions: Vec<Value>) -> Result<(), Error> {
        self.command(|reply| Command::SetConditions { table: table.to_owned(), conditions, reply }).await
    }

    /// Reads the replica under its lock (do not block in `f`).
    pub fn read<R>(&self, f: impl FnOnce(&Replica) -> R) -> R {
        f(&self.shared.replica.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// A copy of the replica (rows are shared, not copied).
    pub fn replica(&self) -> Replica {
        self.read(Replica::clone)
    }

    /// The database's schema, once connected.
    pub fn schema(&self) -> Option<Arc<DatabaseSchema>> {
        self.shared.schema.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn state(&self) -> State {
        lock(&self.shared.state).clone()
    }

    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    /// Drops the current connection; the client moves to the next member
    /// and resumes.
    pub fn reconnect(&self) {
        let _ = self.cmds.send(Command::Reconnect);
    }
}

/// Why a connection ended.
enum Stop {
    /// Every [`Client`] was dropped.
    Shutdown,
    Fail(Error),
}

impl From<crate::schema::SchemaError> for Stop {
    fn from(e: crate::schema::SchemaError) -> Stop {
        Stop::Fail(e.into())
    }
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Fail(e)
    }
}

enum Pending {
    Transact { ops: Vec<Value>, reply: oneshot::Sender<Result<Vec<Value>, Error>> },
    Call { method: String, reply: oneshot::Sender<Result<Value, Error>> },
    CondChange,
}

/// A table's conditions, as in ovsdb-cs: acknowledged by the server (what
/// the replica reflects), requested (a `monitor_cond_change` in flight),
/// and wanted but not sent yet.
#[derive(Default)]
struct Conditions {
    ack: Vec<Value>,
    req: Option<Vec<Value>>,
    new: Option<Vec<Value>>,
}

/// The `_Server` database of the member being used.
struct ServerDb {
    schema: DatabaseSchema,
    monitored: Monitored,
    replica: Replica,
}

/// One connection's state.
struct Link {
    conn: Conn,
    pending: HashMap<String, Pending>,
    server: Option<ServerDb>,
    schema: Option<Arc<DatabaseSchema>>,
    monitored: Monitored,
    method: Option<MonitorMethod>,
}

const SERVER_DB: &str = "_Server";
const SERVER_COLUMNS: [&str; 7] = ["name", "model", "connected", "leader", "schema", "cid", "index"];

fn server_monitor_id() -> Value {
    json!(["monid", SERVER_DB])
}

struct Session {
    cfg: Config,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<Event>,
    cmds: mpsc::UnboundedReceiver<Command>,
    /// Commands that came while a connection was being set up.
    deferred: VecDeque<Command>,
    order: Vec<Remote>,
    next: usize,
    backoff: Duration,
    monitor_id: Value,
    last_id: Uuid,
    min_index: Option<u64>,
    schema_json: Option<Value>,
    conds: BTreeMap<String, Conditions>,
    /// Sequence numbers of condition changes: the latest asked for, the
    /// latest in flight, the latest in effect; waiters are answered once
    /// theirs is in effect.
    cond_seq: u64,
    req_seq: u64,
    ack_seq: u64,
    waiters: Vec<(u64, oneshot::Sender<Result<(), Error>>)>,
}

/// A seed that differs per process and per call, without a dependency.
fn random_seed() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish() | 1
}

impl Session {
    fn new(
        cfg: Config,
        shared: Arc<Shared>,
        events: mpsc::UnboundedSender<Event>,
        cmds: mpsc::UnboundedReceiver<Command>,
    ) -> Session {
        let mut order = cfg.remotes.as_slice().to_vec();
        if cfg.shuffle {
            let mut x = random_seed();
            for i in (1..order.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
        }
        let conds = cfg
            .monitor
            .tables
            .iter()
            .map(|(t, m)| (t.clone(), Conditions { ack: m.conditions.clone(), ..Conditions::default() }))
            .collect();
        Session {
            monitor_id: json!(["monid", cfg.database]),
            backoff: cfg.backoff_min,
            cfg,
            shared,
            events,
            cmds,
            deferred: VecDeque::new(),
            order,
            next: 0,
            last_id: Uuid::ZERO,
            min_index: None,
            schema_json: None,
            conds,
            cond_seq: 0,
            req_seq: 0,
            ack_seq: 0,
            waiters: Vec::new(),
        }
    }

    fn emit(&self, e: Event) {
        // Nobody listening is fine: the replica and state are still kept.
        let _ = self.events.send(e);
    }

    async fn run(mut self) {
        loop {
            let remote = self.order[self.next % self.order.len()].clone();
            self.next += 1;
            self.shared.stats(|s| s.attempts += 1);
            let (err, established) = match self.connection(&remote).await {
                (Stop::Shutdown, _) => return,
                (Stop::Fail(e), est) => (e, est),
            };
            let reason = err.to_string();
            match &err {
                Error::Refused { .. } => {
                    info!(%remote, %reason, "member refused; trying another");
                    self.shared.stats(|s| s.refused += 1);
                }
                Error::ProbeTimeout { .. } => self.shared.stats(|s| s.probe_timeouts += 1),
                Error::Update { .. } => {
                    warn!(%remote, %reason, "dropping the connection; the replica will be reloaded");
                    self.shared.stats(|s| s.malformed_updates += 1);
                    self.last_id = Uuid::ZERO;
                }
                // A stream out of step may have carried anything: trust
                // nothing of it, reload.
                Error::Framing { .. } | Error::Protocol { .. } => {
                    warn!(%remote, %reason, "dropping the connection; the replica will be reloaded");
                    self.last_id = Uuid::ZERO;
                }
                _ => {}
            }
            self.shared.state(|s| {
                s.remote = None;
                s.monitoring = false;
                s.last_error = Some(reason.clone());
            });
            self.shared.monitoring.send_replace(false);
            let delay = match established {
                Some(since) => {
                    info!(%remote, %reason, "disconnected");
                    self.emit(Event::Disconnected { remote: remote.clone(), reason: reason.clone() });
                    // A connection that lived a while earns an immediate
                    // retry elsewhere; one that dies at once must not make
                    // us spin.
                    if since.elapsed() >= Duration::from_secs(1) {
                        self.backoff = self.cfg.backoff_min;
                        Duration::ZERO
                    } else {
                        self.next_backoff()
                    }
                }
                None => {
                    debug!(%remote, %reason, "connection attempt failed");
                    self.next_backoff()
                }
            };
            if !self.idle(delay, &reason).await {
                return;
            }
        }
    }

    fn next_backoff(&mut self) -> Duration {
        let d = self.backoff;
        self.backoff = (self.backoff * 2).min(self.cfg.backoff_max);
        d
    }

    /// Between connections: commands that need a server fail at once.
    /// False once every client handle is gone.
    async fn idle(&mut self, delay: Duration, reason: &str) -> bool {
        let deadline = Instant::now() + delay;
        while let Some(c) = self.deferred.pop_front() {
            self.idle_command(c, reason);
        }
        loop {
            tokio::select! {
                _ = sleep_until(deadline) => return true,
                c = self.cmds.recv() => match c {
                    None => return false,
                    Some(c) => self.idle_command(c, reason),
                },
            }
        }
    }

    fn idle_command(&mut self, c: Command, reason: &str) {
        let not_connected = || Error::NotConnected { last_error: Some(reason.to_owned()) };
        match c {
            Command::Transact { reply, .. } => drop(reply.send(Err(not_connected()))),
            Command::Call { reply, .. } => drop(reply.send(Err(not_connected()))),
            Command::SetConditions { table, conditions, reply } => self.want_conditions(table, conditions, reply, None),
            Command::Reconnect => {}
        }
    }

    /// Records new conditions for `table`; `link` is the live monitor, if
    /// any (the change is then sent by the caller).
    fn want_conditions(
        &mut self,
        table: String,
        conditions: Vec<Value>,
        reply: oneshot::Sender<Result<(), Error>>,
        link: Option<&Link>,
    ) {
        let known = match link {
            Some(l) if l.schema.is_some() => l.monitored.contains_key(&table),
            _ => self.cfg.monitor.knows(&table),
        };
        if !known {
            let _ = reply.send(Err(Error::InvalidArgument(format!("table {table:?} is not monitored"))));
            return;
        }
        self.cond_seq += 1;
        self.conds.entry(table).or_default().new = Some(conditions);
        self.waiters.push((self.cond_seq, reply));
    }

    fn complete_waiters(&mut self) {
        let acked = self.ack_seq;
        let (done, keep): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.waiters).into_iter().partition(|(s, _)| *s <= acked);
        self.waiters = keep;
        for (_, w) in done {
            let _ = w.send(Ok(()));
        }
    }

    /// Runs one connection to its end; also says when its monitor was
    /// established, if it was.
    async fn connection(&mut self, remote: &Remote) -> (Stop, Option<Instant>) {
        let conn = match Conn::open(remote, &self.cfg.options).await {
            Ok(c) => c,
            Err(e) => return (Stop::Fail(e), None),
        };
        let mut link = Link {
            conn,
            pending: HashMap::new(),
            server: None,
            schema: None,
            monitored: Monitored::new(),
            method: None,
        };
        let (stop, established) = match self.handshake(&mut link).await {
            Err(stop) => (stop, None),
            Ok(()) => {
                let since = Instant::now();
                let stop = match self.deferred_commands(&mut link).await {
                    Err(stop) => stop,
                    Ok(()) => self.monitoring(&mut link).await,
                };
                (stop, Some(since))
            }
        };
        let reason = match &stop {
            Stop::Shutdown => "client stopped".to_owned(),
            Stop::Fail(e) => e.to_string(),
        };
        for (_, p) in link.pending.drain() {
            let lost = || Error::ConnectionLost { remote: remote.to_string(), reason: reason.clone() };
            match p {
                Pending::Transact { reply, .. } => drop(reply.send(Err(lost()))),
                Pending::Call { reply, .. } => drop(reply.send(Err(lost()))),
                // Stays requested: the next connection cannot know whether
                // the server applied it, so it reloads (see sync_conditions).
                Pending::CondChange => {}
            }
        }
        (stop, established)
    }

    async fn deferred_commands(&mut self, link: &mut Link) -> Result<(), Stop> {
        while let Some(c) = self.deferred.pop_front() {
            self.on_command(link, c).await?;
        }
        Ok(())
    }

    /// Sends a request during the handshake and waits for its reply,
    /// answering echoes, applying `_Server` updates and keeping commands for
    /// later meanwhile.
    async fn call(&mut self, link: &mut Link, method: &str, params: Value) -> Result<Result<Value, Value>, Stop> {
        let id = link.conn.request(method, params).await?;
        loop {
            let deadline = link.conn.probe_deadline();
            let m = tokio::select! {
                m = link.conn.recv() => m?,
                c = self.cmds.recv() => match c {
                    None => return Err(Stop::Shutdown),
                    Some(c) => {
                        self.deferred.push_back(c);
                        continue;
                    }
                },
                _ = sleep_opt(deadline) => {
                    link.conn.probe_expired().await?;
                    continue;
                }
            };
            match m {
                Message::Response { id: rid, result } if rid == id => return Ok(result),
                other => self.on_message(link, other).await?,
            }
        }
    }

    async fn handshake(&mut self, link: &mut Link) -> Result<(), Stop> {
        let db = self.cfg.database.clone();
        let schema_json = match self.server_db(link).await? {
            Some(text) => serde_json::from_str::<Value>(&text).map_err(|e| Error::Protocol {
                remote: link.conn.name().to_owned(),
                reason: format!("_Server's schema of {db} is not JSON: {e}"),
            })?,
            None => match self.call(link, "get_schema", json!([db])).await? {
                Ok(v) => v,
                Err(e) => return Err(link.conn.rpc_error("get_schema", &e).into()),
            },
        };
        let schema = Arc::new(DatabaseSchema::from_json(&schema_json)?);
        if self.schema_json.as_ref() != Some(&schema_json) {
            if self.schema_json.is_some() {
                info!(remote = %link.conn.name(), %db, "schema changed; reloading the replica");
            }
            self.last_id = Uuid::ZERO;
            self.schema_json = Some(schema_json);
        }
        link.monitored = self.cfg.monitor.resolve(&schema);
        link.schema = Some(schema.clone());
        *self.shared.schema.write().unwrap_or_else(|e| e.into_inner()) = Some(schema);

        let covered = self.sync_conditions();
        let mut method = self.cfg.monitor_method;
        let result = loop {
            let params = self.monitor_params(link, method);
            match self.call(link, method.name(), params).await? {
                Ok(r) => break r,
                Err(e) => {
                    let err = OvsdbError::from_json(&e);
                    match method.fallback() {
                        Some(next) if err.kind == ErrorKind::UnknownMethod => {
                            info!(remote = %link.conn.name(), "server does not know {}; trying {}", method.name(), next.name());
                            self.shared.stats(|s| s.fallbacks += 1);
                            method = next;
                        }
                        _ => return Err(link.conn.rpc_error(method.name(), &e).into()),
                    }
                }
            }
        };
        link.method = Some(method);
        self.monitor_reply(link, method, result)?;

        if method == MonitorMethod::Monitor {
            // Conditions cannot apply: whatever was asked is "in effect".
            for c in self.conds.values_mut() {
                if let Some(n) = c.new.take() {
                    c.ack = n;
                }
            }
            self.ack_seq = self.cond_seq;
        } else {
            self.ack_seq = self.ack_seq.max(covered);
            self.send_cond_change(link).await?;
        }
        self.complete_waiters();
        Ok(())
    }

    /// Reads the member's `_Server` row for the database and checks it;
    /// returns the database's schema text, or `None` for a server without
    /// `_Server`.
    async fn server_db(&mut self, link: &mut Link) -> Result<Option<String>, Stop> {
        let sv = match self.call(link, "get_schema", json!([SERVER_DB])).await? {
            Ok(v) => v,
            Err(_) => return Ok(None),
        };
        let schema = DatabaseSchema::from_json(&sv)?;
        let Some(table) = schema.table("Database") else {
            warn!(remote = %link.conn.name(), "_Server has no Database table; not checking the member");
            return Ok(None);
        };
        let cols: Vec<String> =
            SERVER_COLUMNS.iter().filter(|c| table.columns.contains_key(**c)).map(|c| (*c).to_owned()).collect();
        let monitored = Monitored::from([("Database".to_owned(), cols.clone())]);
        link.server = Some(ServerDb { schema, replica: Replica::new(&monitored), monitored });
        let req = json!({"Database": [{"columns": cols}]});
        let updates = match self.call(link, "monitor_cond", json!([SERVER_DB, server_monitor_id(), req])).await? {
            Ok(u) => u,
            Err(e) => {
                debug!(remote = %link.conn.name(), error = %e, "no _Server monitor");
                link.server = None;
                return Ok(None);
            }
        };
        self.server_update(link, &updates).map(Some).map_err(Stop::Fail)
    }

    /// Applies a `_Server` update and checks the member (ovsdb-cs's
    /// `ovsdb_cs_check_server_db__`); returns the schema text.
    fn server_update(&mut self, link: &mut Link, updates: &Value) -> Result<String, Error> {
        let remote = link.conn.name().to_owned();
        let Some(sdb) = link.server.as_mut() else {
            return Err(Error::Protocol { remote, reason: "_Server update without a _Server monitor".into() });
        };
        sdb.replica
            .apply(&sdb.schema, &sdb.monitored, UpdateFormat::Update2, updates)
            .map_err(|source| Error::Update { remote: remote.clone(), source: Box::new(source) })?;
        let db = &self.cfg.database;
        let refuse = |reason: String| Error::Refused { remote: remote.clone(), reason };
        let row = sdb
            .replica
            .rows("Database")
            .map(|(_, r)| r)
            .find(|r| r.get("name").and_then(|n| n.as_str()) == Some(db.as_str()))
            .ok_or_else(|| refuse(format!("server does not have database {db}")))?;
        let text = |c: &str| row.get(c).and_then(|d| d.as_str()).map(str::to_owned);
        let flag = |c: &str| row.get(c).and_then(|d| d.as_bool()).unwrap_or(false);
        let model = text("model").unwrap_or_default();
        let schema = text("schema");
        let connected = flag("connected");
        let index = row.get("index").and_then(|d| d.as_integer()).map(|i| i.max(0) as u64);
        let schema = match model.as_str() {
            "clustered" => {
                let Some(schema) = schema else {
                    return Err(refuse("clustered database server has not yet joined the cluster".into()));
                };
                if !connected {
                    return Err(refuse("clustered database server is disconnected from the cluster".into()));
                }
                if self.cfg.leader_only && !flag("leader") {
                    return Err(refuse("clustered database server is not the cluster leader".into()));
                }
                let index = index.unwrap_or(0);
                if let Some(min) = self.min_index.filter(|m| index < *m) {
                    return Err(refuse(format!(
                        "clustered database server has stale data (index {index}, seen {min})"
                    )));
                }
                self.min_index = Some(index);
                schema
            }
            "relay" => {
                let Some(schema) = schema else {
                    return Err(refuse("relay database server has not yet connected to its source".into()));
                };
                if !connected {
                    return Err(refuse("relay database server is disconnected from its source".into()));
                }
                if self.cfg.leader_only {
                    return Err(refuse("relay database server cannot be a leader".into()));
                }
                schema
            }
            _ => schema.ok_or_else(|| refuse("missing database schema".into()))?,
        };
        let min_index = self.min_index;
        self.shared.state(|s| {
            s.model = Some(model);
            s.min_index = min_index;
        });
        Ok(schema)
    }

    /// ovsdb-cs's `ovsdb_cs_db_sync_condition`: a condition change in
    /// flight when the last connection ended may or may not have been
    /// applied, so the replica cannot be trusted to resume; without a
    /// transaction id to resume from, the newest conditions go straight
    /// into the monitor request. Returns the condition sequence number the
    /// monitor request covers.
    fn sync_conditions(&mut self) -> u64 {
        if self.conds.values().any(|c| c.req.is_some()) {
            self.last_id = Uuid::ZERO;
        }
        if self.last_id.is_zero() {
            for c in self.conds.values_mut() {
                if let Some(n) = c.new.take() {
                    c.req = Some(n);
                }
                if let Some(r) = c.req.take() {
                    c.ack = r;
                }
            }
            self.cond_seq
        } else {
            self.ack_seq
        }
    }

    fn monitor_params(&self, link: &Link, method: MonitorMethod) -> Value {
        let mut requests = serde_json::Map::new();
        for (table, cols) in &link.monitored {
            let mut req = json!({"columns": cols});
            if method != MonitorMethod::Monitor {
                if let Some(c) = self.conds.get(table).filter(|c| !c.ack.is_empty()) {
                    req["where"] = json!(c.ack);
                }
            }
            requests.insert(table.clone(), json!([req]));
        }
        let mut params = vec![json!(self.cfg.database), self.monitor_id.clone(), Value::Object(requests)];
        if method == MonitorMethod::MonitorCondSince {
            params.push(json!(self.last_id.to_string()));
        }
        Value::Array(params)
    }

    fn protocol(link: &Link, reason: impl Into<String>) -> Error {
        Error::Protocol { remote: link.conn.name().to_owned(), reason: reason.into() }
    }

    fn monitor_reply(&mut self, link: &mut Link, method: MonitorMethod, result: Value) -> Result<(), Stop> {
        let (found, txn, updates) = match method {
            MonitorMethod::MonitorCondSince => {
                let parsed = match result.as_array().map(Vec::as_slice) {
                    Some([Value::Bool(found), Value::String(id), updates]) => {
                        id.parse::<Uuid>().ok().map(|id| (*found, Some(id), updates.clone()))
                    }
                    _ => None,
                };
                parsed.ok_or_else(|| Self::protocol(link, "malformed monitor_cond_since reply"))?
            }
            _ => (false, None, result),
        };
        let schema = link.schema.clone().ok_or_else(|| Self::protocol(link, "monitor reply before the schema"))?;
        let format = format_of(method);
        let remote = link.conn.remote.clone();
        let resumed = found && !self.last_id.is_zero();
        let fail = |s: &mut Self, source| {
            s.last_id = Uuid::ZERO;
            Stop::Fail(Error::Update { remote: remote.to_string(), source: Box::new(source) })
        };
        let data_event = if resumed {
            let changes = {
                let mut r = self.shared.replica.write().unwrap_or_else(|e| e.into_inner());
                r.apply(&schema, &link.monitored, format, &updates)
            };
            let changes = changes.map_err(|e| fail(self, e))?;
            self.shared.stats(|s| s.resumes += 1);
            (!changes.is_empty()).then_some(Event::Update(Update { changes, txn_id: txn }))
        } else {
            let mut fresh = Replica::new(&link.monitored);
            fresh.apply(&schema, &link.monitored, format, &updates).map_err(|e| fail(self, e))?;
            let changes = {
                let mut r = self.shared.replica.write().unwrap_or_else(|e| e.into_inner());
                let changes = r.changes_to(&fresh);
                *r = fresh;
                changes
            };
            self.shared.stats(|s| s.full_resyncs += 1);
            Some(Event::Reset(Update { changes, txn_id: txn }))
        };
        self.last_id = txn.unwrap_or(Uuid::ZERO);
        let last_id = self.last_id;
        info!(%remote, method = method.name(), resumed, "monitoring");
        self.shared.stats(|s| s.connections += 1);
        self.shared.state(|s| {
            s.remote = Some(remote.clone());
            s.monitoring = true;
            s.method = Some(method);
            s.last_txn_id = last_id;
            s.last_error = None;
        });
        self.emit(Event::Connected { remote, method, resumed });
        if let Some(e) = data_event {
            self.emit(e);
        }
        // After the events: a waiter woken by this sees them queued.
        self.shared.monitoring.send_replace(true);
        Ok(())
    }

    async fn monitoring(&mut self, link: &mut Link) -> Stop {
        loop {
            let deadline = link.conn.probe_deadline();
            let r = tokio::select! {
                m = link.conn.recv() => match m {
                    Ok(m) => self.on_message(link, m).await,
                    Err(e) => Err(e.into()),
                },
                c = self.cmds.recv() => match c {
                    None => Err(Stop::Shutdown),
                    Some(c) => self.on_command(link, c).await,
                },
                _ = sleep_opt(deadline) => link.conn.probe_expired().await.map_err(Stop::from),
            };
            if let Err(stop) = r {
                return stop;
            }
        }
    }

    async fn on_message(&mut self, link: &mut Link, m: Message) -> Result<(), Stop> {
        match m {
            Message::Request { id, method, params } => {
                if link.conn.answer(id, &method, params).await? {
                    self.shared.stats(|s| s.echoes_answered += 1);
                }
            }
            Message::Notification { method, params } => self.on_notification(link, &method, params)?,
            Message::Response { id, result } => {
                let Some(p) = link.pending.remove(&id.to_string()) else {
                    // Our probe's echo, or a reply to nothing we track.
                    return Ok(());
                };
                match p {
                    Pending::Transact { ops, reply } => {
                        let r = match result {
                            Ok(v) => ops::check_results(&ops, v, link.conn.name()),
                            Err(e) => Err(link.conn.rpc_error("transact", &e)),
                        };
                        let _ = reply.send(r);
                    }
                    Pending::Call { method, reply } => {
                        let _ = reply.send(result.map_err(|e| link.conn.rpc_error(&method, &e)));
                    }
                    Pending::CondChange => self.cond_change_reply(link, result).await?,
                }
            }
        }
        Ok(())
    }

    fn on_notification(&mut self, link: &mut Link, method: &str, params: Value) -> Result<(), Stop> {
        let (format, n) = match method {
            "update" => (UpdateFormat::Update, 2),
            "update2" => (UpdateFormat::Update2, 2),
            "update3" => (UpdateFormat::Update2, 3),
            "monitor_canceled" => return Err(Self::protocol(link, "the server canceled the monitor").into()),
            _ => {
                debug!(remote = %link.conn.name(), method, "notification ignored");
                return Ok(());
            }
        };
        let Value::Array(p) = params else {
            return Err(Self::protocol(link, format!("{method} params are not an array")).into());
        };
        if p.len() != n {
            return Err(Self::protocol(link, format!("{method} has {} params instead of {n}", p.len())).into());
        }
        if p[0] == server_monitor_id() {
            // The member's status changed: refuse it as at connect time if
            // it left the cluster (ovn-controller moves on the same way).
            return self.server_update(link, &p[1]).map(drop).map_err(Stop::Fail);
        }
        if p[0] != self.monitor_id || link.method.is_none() {
            debug!(remote = %link.conn.name(), method, "update for an unknown monitor ignored");
            return Ok(());
        }
        let txn = if n == 3 {
            let id = p[1].as_str().and_then(|s| s.parse::<Uuid>().ok());
            Some(id.ok_or_else(|| Self::protocol(link, "update3 transaction id is not a UUID"))?)
        } else {
            None
        };
        let schema = link.schema.clone().ok_or_else(|| Self::protocol(link, "update before the schema"))?;
        let changes = {
            let mut r = self.shared.replica.write().unwrap_or_else(|e| e.into_inner());
            r.apply(&schema, &link.monitored, format, &p[n - 1])
        };
        let changes = match changes {
            Ok(c) => c,
            Err(source) => {
                self.last_id = Uuid::ZERO;
                return Err(Error::Update { remote: link.conn.name().to_owned(), source: Box::new(source) }.into());
            }
        };
        if let Some(t) = txn {
            self.last_id = t;
        }
        self.shared.stats(|s| s.updates += 1);
        self.shared.state(|s| s.last_txn_id = txn.unwrap_or(s.last_txn_id));
        self.emit(Event::Update(Update { changes, txn_id: txn }));
        Ok(())
    }

    async fn on_command(&mut self, link: &mut Link, c: Command) -> Result<(), Stop> {
        match c {
            Command::Transact { ops, reply } => {
                let mut params = vec![json!(self.cfg.database)];
                params.extend(ops.iter().cloned());
                let id = link.conn.request("transact", Value::Array(params)).await;
                match id {
                    Ok(id) => drop(link.pending.insert(id.to_string(), Pending::Transact { ops, reply })),
                    Err(e) => {
                        let _ = reply.send(Err(e.clone()));
                        return Err(e.into());
                    }
                }
            }
            Command::Call { method, params, reply } => match link.conn.request(&method, params).await {
                Ok(id) => drop(link.pending.insert(id.to_string(), Pending::Call { method, reply })),
                Err(e) => {
                    let _ = reply.send(Err(e.clone()));
                    return Err(e.into());
                }
            },
            Command::SetConditions { table, conditions, reply } => {
                self.want_conditions(table, conditions, reply, Some(link));
                if link.method == Some(MonitorMethod::Monitor) {
                    for c in self.conds.values_mut() {
                        if let Some(n) = c.new.take() {
                            c.ack = n;
                        }
                    }
                    self.ack_seq = self.cond_seq;
                    self.complete_waiters();
                } else {
                    self.send_cond_change(link).await?;
                }
            }
            Command::Reconnect => {
                return Err(Error::ConnectionLost {
                    remote: link.conn.name().to_owned(),
                    reason: "reconnect requested".into(),
                }
                .into())
            }
        }
        Ok(())
    }

    /// Sends the wanted conditions, unless a change is already in flight
    /// (it is sent when that one is answered, as ovsdb-cs does).
    async fn send_cond_change(&mut self, link: &mut Link) -> Result<(), Stop> {
        if self.conds.values().any(|c| c.req.is_some()) {
            return Ok(());
        }
        let mut requests = serde_json::Map::new();
        for (table, c) in self.conds.iter_mut() {
            let Some(n) = c.new.take() else { continue };
            if !link.monitored.contains_key(table) {
                // Not on this server: nothing to ask for.
                c.ack = n;
                continue;
            }
            requests.insert(table.clone(), json!([{"where": n}]));
            c.req = Some(n);
        }
        if requests.is_empty() {
            self.ack_seq = self.cond_seq;
            self.complete_waiters();
            return Ok(());
        }
        self.req_seq = self.cond_seq;
        let params = json!([self.monitor_id, self.monitor_id, requests]);
        let id = link.conn.request("monitor_cond_change", params).await?;
        link.pending.insert(id.to_string(), Pending::CondChange);
        Ok(())
    }

    async fn cond_change_reply(&mut self, link: &mut Link, result: Result<Value, Value>) -> Result<(), Stop> {
        match result {
            Ok(_) => {
                for c in self.conds.values_mut() {
                    if let Some(r) = c.req.take() {
                        c.ack = r;
                    }
                }
                self.ack_seq = self.req_seq;
                self.complete_waiters();
            }
            Err(e) => {
                // The server kept the old conditions; those who asked for
                // the refused ones hear why.
                let err = link.conn.rpc_error("monitor_cond_change", &e);
                warn!(remote = %link.conn.name(), error = %err, "condition change refused");
                for c in self.conds.values_mut() {
                    c.req = None;
                }
                let upto = self.req_seq;
                let (failed, keep): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut self.waiters).into_iter().partition(|(s, _)| *s <= upto);
                self.waiters = keep;
                for (_, w) in failed {
                    let _ = w.send(Err(err.clone()));
                }
            }
        }
        self.send_cond_change(link).await
    }
}

fn format_of(method: MonitorMethod) -> UpdateFormat {
    match method {
        MonitorMethod::Monitor => UpdateFormat::Update,
        _ => UpdateFormat::Update2,
    }
}
