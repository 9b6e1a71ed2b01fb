//! One connection to one server: the stream, framing, request ids, the
//! server's `echo` answered, and our own inactivity probe.
use std::{collections::VecDeque, time::Duration};

use serde_json::{json, Value};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpStream, UnixStream},
    time::{sleep_until, timeout, Instant},
};

use crate::{
    framing::{Decoder, DEFAULT_MAX_MESSAGE},
    jsonrpc::{Message, OvsdbError},
    ops,
    schema::DatabaseSchema,
    Error, Remote,
};

#[derive(Clone, Debug)]
pub struct Options {
    /// After this long with nothing received, send an `echo`; when another
    /// interval passes with still nothing received, drop the connection.
    /// `None` turns the probe off. Over TCP this is the only way a dead
    /// peer is noticed. Default 5 s, ovn-controller's default.
    pub probe_interval: Option<Duration>,
    /// The largest message accepted from the server.
    pub max_message: usize,
    /// Bound on establishing the stream.
    pub connect_timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            probe_interval: Some(Duration::from_secs(5)),
            max_message: DEFAULT_MAX_MESSAGE,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// The id of our inactivity probe, as OVS's own clients use.
const ECHO_ID: &str = "echo";

pub(crate) struct Conn {
    pub(crate) remote: Remote,
    name: String,
    reader: Box<dyn AsyncRead + Send + Unpin>,
    writer: Box<dyn AsyncWrite + Send + Unpin>,
    decoder: Decoder,
    queue: VecDeque<Message>,
    chunk: Box<[u8]>,
    last_rx: Instant,
    echo_sent: Option<Instant>,
    probe: Option<Duration>,
    next_id: u64,
}

impl Conn {
    pub(crate) async fn open(remote: &Remote, opts: &Options) -> Result<Conn, Error> {
        let name = remote.to_string();
        let connect = async {
            let halves: (Box<dyn AsyncRead + Send + Unpin>, Box<dyn AsyncWrite + Send + Unpin>) = match remote {
                Remote::Unix(p) => {
                    let (r, w) = UnixStream::connect(p).await?.into_split();
                    (Box::new(r), Box::new(w))
                }
                Remote::Tcp(a) => {
                    let s = TcpStream::connect(a).await?;
                    s.set_nodelay(true)?;
                    let (r, w) = s.into_split();
                    (Box::new(r), Box::new(w))
                }
            };
            Ok::<_, std::io::Error>(halves)
        };
        let (reader, writer) = match timeout(opts.connect_timeout, connect).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return Err(Error::io(&name, &e)),
            Err(_) => {
                return Err(Error::Io {
                    remote: name,
                    kind: std::io::ErrorKind::TimedOut,
                    reason: format!("connect timed out after {:?}", opts.connect_timeout),
                })
            }
        };
        Ok(Conn {
            remote: remote.clone(),
            name,
            reader,
            writer,
            decoder: Decoder::new(opts.max_message),
            queue: VecDeque::new(),
            chunk: vec![0; 64 << 10].into_boxed_slice(),
            last_rx: Instant::now(),
            echo_sent: None,
            probe: opts.probe_interval,
            next_id: 0,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The next message. Cancel-safe: the only await is the socket read,
    /// and nothing is lost if it is dropped (the main loops select on it).
    pub(crate) async fn recv(&mut self) -> Result<Message, Error> {
        loop {
            if let Some(m) = self.queue.pop_front() {
                return Ok(m);
            }
            let n = self.reader.read(&mut self.chunk).await.map_err(|e| Error::io(&self.name, &e))?;
            if n == 0 {
                return Err(Error::Closed { remote: self.name.clone() });
            }
            // Any byte is proof of life, as in OVS's reconnect FSM.
            self.last_rx = Instant::now();
            self.echo_sent = None;
            let mut values = Vec::new();
            self.decoder
                .feed(&self.chunk[..n], &mut values)
                .map_err(|source| Error::Framing { remote: self.name.clone(), source })?;
            for v in values {
                let m =
                    Message::from_json(v).map_err(|reason| Error::Protocol { remote: self.name.clone(), reason })?;
                self.queue.push_back(m);
            }
        }
    }

    pub(crate) async fn send(&mut self, m: &Message) -> Result<(), Error> {
        let bytes = serde_json::to_vec(&m.to_json()).map_err(|e| Error::Protocol {
            remote: self.name.clone(),
            reason: format!("cannot encode a request: {e}"),
        })?;
        let write = async {
            self.writer.write_all(&bytes).await?;
            self.writer.flush().await
        };
        // A server that stopped reading must not hang us forever: it gets
        // the time the probe would give it.
        let res = match self.probe {
            Some(p) => timeout(p * 2, write).await.unwrap_or_else(|_| {
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("write blocked for {:?}", p * 2)))
            }),
            None => write.await,
        };
        res.map_err(|e| Error::io(&self.name, &e))
    }

    /// Sends a request and returns its id.
    pub(crate) async fn request(&mut self, method: &str, params: Value) -> Result<Value, Error> {
        self.next_id += 1;
        let id = json!(self.next_id);
        self.send(&Message::Request { id: id.clone(), method: method.to_owned(), params }).await?;
        Ok(id)
    }

    /// When the probe must next act, if it is on.
    pub(crate) fn probe_deadline(&self) -> Option<Instant> {
        let p = self.probe?;
        Some(self.echo_sent.map_or(self.last_rx, |t| t) + p)
    }

    /// The probe's deadline passed: send an echo, or give up if one was
    /// already sent and nothing came since.
    pub(crate) async fn probe_expired(&mut self) -> Result<(), Error> {
        let p = self.probe.unwrap_or_default();
        if self.echo_sent.is_some() {
            return Err(Error::ProbeTimeout { remote: self.name.clone(), after: p });
        }
        self.echo_sent = Some(Instant::now());
        self.send(&Message::Request { id: json!(ECHO_ID), method: "echo".to_owned(), params: json!([]) }).await
    }

    /// The next message, keeping the inactivity probe going meanwhile (an
    /// echo when the line goes quiet, an error when the echo goes unheard).
    pub(crate) async fn recv_probed(&mut self) -> Result<Message, Error> {
        loop {
            let deadline = self.probe_deadline();
            tokio::select! {
                m = self.recv() => return m,
                _ = sleep_opt(deadline) => self.probe_expired().await?,
            }
        }
    }

    /// Answers a request from the server: `echo` (its inactivity probe) is
    /// the only one OVSDB defines. Returns whether it was an echo.
    pub(crate) async fn answer(&mut self, id: Value, method: &str, params: Value) -> Result<bool, Error> {
        let (result, echo) = if method == "echo" { (Ok(params), true) } else { (Err(json!("unknown method")), false) };
        self.send(&Message::Response { id, result }).await?;
        Ok(echo)
    }

    pub(crate) fn rpc_error(&self, method: &str, e: &Value) -> Error {
        Error::Rpc { remote: self.name.clone(), method: method.to_owned(), error: Box::new(OvsdbError::from_json(e)) }
    }
}

/// Sleeps until `deadline`, or forever without one (a disabled probe).
pub(crate) async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A plain connection to one server, for one-off requests (`list_dbs`,
/// `get_schema`, `transact`) without a replica: requests are sent one at a
/// time, the server's echo is answered while waiting, and notifications
/// are kept for [`Connection::next_notification`]. Between calls nothing
/// reads the socket, so a server that probes (TCP, or a probing
/// `Connection` row) drops a connection left idle for two of its
/// intervals. A monitored, reconnecting replica is [`crate::Client`].
pub struct Connection {
    conn: Conn,
    notifications: VecDeque<(String, Value)>,
    echoes_answered: u64,
}

impl Connection {
    pub async fn connect(remote: &Remote, options: &Options) -> Result<Connection, Error> {
        Ok(Connection { conn: Conn::open(remote, options).await?, notifications: VecDeque::new(), echoes_answered: 0 })
    }

    pub fn remote(&self) -> &Remote {
        &self.conn.remote
    }

    /// Echo requests from the server answered so far.
    pub fn echoes_answered(&self) -> u64 {
        self.echoes_answered
    }

    /// Handles one incoming message that is not the awaited reply.
    async fn other(&mut self, m: Message) -> Result<(), Error> {
        match m {
            Message::Request { id, method, params } => {
                if self.conn.answer(id, &method, params).await? {
                    self.echoes_answered += 1;
                }
            }
            Message::Notification { method, params } => self.notifications.push_back((method, params)),
            // A late reply (our probe's, or a request given up on).
            Message::Response { .. } => {}
        }
        Ok(())
    }

    /// Sends any request and waits for its reply; an error reply is
    /// [`Error::Rpc`].
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, Error> {
        let id = self.conn.request(method, params).await?;
        loop {
            let m = self.conn.recv_probed().await?;
            match m {
                Message::Response { id: rid, result } if rid == id => {
                    return result.map_err(|e| self.conn.rpc_error(method, &e));
                }
                other => self.other(other).await?,
            }
        }
    }

    pub async fn list_dbs(&mut self) -> Result<Vec<String>, Error> {
        let v = self.call("list_dbs", json!([])).await?;
        let names = v.as_array().map(|a| a.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect());
        names.ok_or_else(|| Error::Protocol {
            remote: self.conn.name().to_owned(),
            reason: "list_dbs result is not an array".into(),
        })
    }

    pub async fn get_schema(&mut self, db: &str) -> Result<DatabaseSchema, Error> {
        let v = self.call("get_schema", json!([db])).await?;
        Ok(DatabaseSchema::from_json(&v)?)
    }

    /// Runs `ops` (see [`crate::ops`]) as one transaction on `db`; the
    /// results, one per operation, or [`Error::Transaction`].
    pub async fn transact(&mut self, db: &str, ops: Vec<Value>) -> Result<Vec<Value>, Error> {
        let mut params = vec![json!(db)];
        params.extend(ops.iter().cloned());
        let r = self.call("transact", Value::Array(params)).await?;
        ops::check_results(&ops, r, self.conn.name())
    }

    pub async fn echo(&mut self) -> Result<(), Error> {
        self.call("echo", json!(["xgw-ovsdb"])).await.map(drop)
    }

    /// The next notification (`method`, `params`), answering echoes while
    /// waiting.
    pub async fn next_notification(&mut self) -> Result<(String, Value), Error> {
        loop {
            if let Some(n) = self.notifications.pop_front() {
                return Ok(n);
            }
            let m = self.conn.recv_probed().await?;
            self.other(m).await?;
        }
    }
}
