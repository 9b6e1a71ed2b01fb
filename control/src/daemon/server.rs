//! The API socket: one JSON request per line from a root client, one JSON
//! response line back, each request passed to the state's owner and
//! answered with its typed reply.
use std::{fs, os::unix::fs::PermissionsExt, path::Path, time::Duration};

use anyhow::{anyhow, bail, Context, Result};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use super::Msg;
use crate::api::{self, Reply, Request, Response};

/// API connections held at once; beyond that the one that has waited
/// longest for its request is cut (`listen::accept_loop`).
const MAX_CONNECTIONS: usize = 64;
/// A client has this long to send its request line, and again to take the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the API socket: owned by the daemon's user (root), mode 0600. A
/// socket file no one answers on is a leftover of a killed daemon.
pub(super) fn bind_socket(path: &Path) -> Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("socket: creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("socket: {} is served by another daemon", path.display());
        }
        fs::remove_file(path).with_context(|| format!("socket: removing the stale {}", path.display()))?;
    }
    // SAFETY: umask only changes this process's file creation mask; the
    // socket is created 0600 with no window where others could connect.
    let old = unsafe { libc::umask(0o177) };
    let bound = std::os::unix::net::UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let listener = bound.with_context(|| format!("socket: binding {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

pub(super) async fn serve_api(listener: UnixListener, tx: mpsc::Sender<Msg>) {
    let l = &listener;
    crate::listen::accept_loop(
        "api",
        MAX_CONNECTIONS,
        || async move { l.accept().await.map(|(s, _)| s) },
        |stream, phase| connection(stream, phase, tx.clone()),
    )
    .await
}

async fn connection(mut stream: UnixStream, phase: crate::listen::Phase, tx: mpsc::Sender<Msg>) {
    let response = match answer(&mut stream, &phase, &tx).await {
        Ok(reply) => Response::Ok(Box::new(reply)),
        Err(e) => Response::Error(api::error_text(&e)),
    };
    let mut line = serde_json::to_vec(&response).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    line.push(b'\n');
    let _ = tokio::time::timeout(CLIENT_TIMEOUT, stream.write_all(&line)).await;
}

async fn answer(stream: &mut UnixStream, phase: &crate::listen::Phase, tx: &mpsc::Sender<Msg>) -> Result<Reply> {
    match stream.peer_cred().ok().map(|c| c.uid()) {
        Some(0) => {}
        Some(uid) => bail!("permission denied: the xgw API serves root only (the client runs as uid {uid})"),
        None => bail!("permission denied: the xgw API serves root only (the client's uid is unknown)"),
    }
    let mut line = Vec::new();
    let mut reader = AsyncBufReader::new(AsyncReadExt::take(&mut *stream, api::MAX_REQUEST + 1));
    tokio::time::timeout(CLIENT_TIMEOUT, reader.read_until(b'\n', &mut line))
        .await
        .map_err(|_| anyhow!("no complete request line within {} s", CLIENT_TIMEOUT.as_secs()))??;
    phase.started();
    if line.len() as u64 > api::MAX_REQUEST {
        bail!("request larger than {} bytes refused", api::MAX_REQUEST);
    }
    let request: Request = serde_json::from_slice(&line).map_err(|e| anyhow!("bad request: {e}"))?;
    let (reply, answer) = oneshot::channel();
    tx.send(Msg::Request(request, reply)).await.map_err(|_| anyhow!("the daemon is stopping"))?;
    answer.await.map_err(|_| anyhow!("the daemon is stopping"))?
}
