//! Accept loops with a bound on the connections held at once: the API
//! socket's and the metrics endpoint's.
//!
//! A connection is held in two phases: waiting for its request, then being
//! answered. The first costs the daemon nothing but a slot, and is what a
//! client that connects and stalls (or a flood of them) occupies; the
//! second is real work, one request at a time. So when every slot is taken,
//! the connection that has waited longest for its request is cut to make
//! room, and a client that sends its request when it connects is served at
//! once however many stalled ones there are, instead of queueing behind
//! them in the backlog until they time out.
use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{sync::Semaphore, task::AbortHandle};

/// Handed to each connection: `started` marks the end of its waiting phase,
/// after which it is no longer cut to make room.
#[derive(Clone, Debug, Default)]
pub struct Phase(Arc<AtomicBool>);

impl Phase {
    /// The request is in: from now on the connection is being answered.
    pub fn started(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn is_started(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Held connections, oldest first.
type Held = Arc<Mutex<VecDeque<(u64, Phase, AbortHandle)>>>;

/// Accepts connections for ever, holding at most `max` at once: when all
/// are held, the oldest one still waiting for its request is cut; only if
/// every held connection is being answered does the next one wait.
pub async fn accept_loop<S, A, AF, H, HF>(what: &str, max: usize, mut accept: A, serve: H)
where
    A: FnMut() -> AF,
    AF: std::future::Future<Output = std::io::Result<S>>,
    H: Fn(S, Phase) -> HF,
    HF: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max));
    let held: Held = Arc::default();
    let mut next_id = 0u64;
    loop {
        let stream = match accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and the like: wait rather than spin.
                tracing::warn!("{what}: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let victim = {
                    let mut h = held.lock().expect("never poisoned");
                    let i = h.iter().position(|(_, phase, _)| !phase.is_started());
                    i.and_then(|i| h.remove(i))
                };
                if let Some((_, _, task)) = victim {
                    // Aborting drops the task, and with it its permit.
                    task.abort();
                    tracing::debug!("{what}: all {max} connections held; cut the longest-waiting one");
                }
                slots.clone().acquire_owned().await.expect("the semaphore is never closed")
            }
        };
        let phase = Phase::default();
        let served = serve(stream, phase.clone());
        let id = next_id;
        next_id += 1;
        let h = held.clone();
        let task = tokio::spawn(async move {
            let _permit = permit;
            served.await;
            h.lock().expect("never poisoned").retain(|(i, _, _)| *i != id);
        });
        let mut h = held.lock().expect("never poisoned");
        // A task that already finished has removed nothing yet: add it
        // only if it is still running, or it would stay listed for ever.
        if !task.is_finished() {
            h.push_back((id, phase, task.abort_handle()));
        }
    }
}
