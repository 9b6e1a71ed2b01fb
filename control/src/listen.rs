//! Accept loops with a bound on the connections served at once: the API
//! socket's and the metrics endpoint's.
use std::{sync::Arc, time::Duration};

use tokio::sync::Semaphore;

/// Accepts connections for ever, serving at most `max` at once (the rest
/// wait in the kernel's backlog): the API socket's loop and the metrics
/// endpoint's.
pub async fn accept_loop<S, A, AF, H, HF>(what: &str, max: usize, mut accept: A, serve: H)
where
    A: FnMut() -> AF,
    AF: std::future::Future<Output = std::io::Result<S>>,
    H: Fn(S) -> HF,
    HF: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max));
    loop {
        let permit = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
        let stream = match accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and the like: wait rather than spin.
                tracing::warn!("{what}: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let served = serve(stream);
        tokio::spawn(async move {
            served.await;
            drop(permit);
        });
    }
}
