//! Helpers shared by every plugins integration test: waits with deadlines
//! (never fixed sleeps as assertions) and closing many nodes at once.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::future::Future;
use std::time::Duration;

use gladius_p2p::Network;

/// Poll `cond` every 5 ms until it holds or `within` passes; panics with
/// `what`. Returns the time it took.
pub async fn wait_for<F, Fut>(within: Duration, what: &str, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if cond().await {
            return start.elapsed();
        }
        if start.elapsed() >= within {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Close every node concurrently (a node whose peers already closed waits
/// out its close timeout).
pub async fn close_all(nets: impl IntoIterator<Item = Network>) {
    let tasks: Vec<_> = nets
        .into_iter()
        .map(|n| tokio::spawn(async move { n.close().await }))
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}
