//! Waiting for peers without polling: [`Network::wait_connected`] and
//! [`Network::wait_peers`] listen to the node's [peer events](Network::events)
//! and look at `network_state` only when one arrives.
//!
//! The event stream is opened *before* the first look, so a peer that
//! connects in between is seen either in the snapshot or as an event.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::network::resolve;
use crate::{ConnectionState, Network, NetworkError, NetworkState, ToPeerAddr};

impl Network {
    /// Wait until `peer` has a connected session (handshake and hello
    /// done, messages flow). Returns at once if it has one now.
    ///
    /// Errors: [`NetworkError::Timeout`] after `timeout`,
    /// [`NetworkError::Closed`] if the node closes first.
    ///
    /// ```
    /// use std::time::Duration;
    /// use gladius_p2p::{Config, Network, NetworkError};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (a, b) = (Network::new(Config::default())?, Network::new(Config::default())?);
    /// a.listen("127.0.0.1:0").await?;
    /// let b_addr = b.listen("127.0.0.1:0").await?;
    /// a.add(b_addr).await?;
    /// a.wait_connected(b_addr, Duration::from_secs(5)).await?;
    /// // Nobody listens on port 1: no session, a typed timeout.
    /// let nobody = a.wait_connected("127.0.0.1:1", Duration::from_millis(50)).await;
    /// assert!(matches!(nobody, Err(NetworkError::Timeout(_))));
    /// # Ok(()) }
    /// ```
    pub async fn wait_connected(
        &self,
        peer: impl ToPeerAddr,
        timeout: Duration,
    ) -> Result<(), NetworkError> {
        let addr = resolve(peer).await?;
        self.wait_until(timeout, |state| {
            state
                .peer(addr)
                .is_some_and(|p| p.connection == ConnectionState::Connected)
                .then_some(())
        })
        .await
    }

    /// Wait until at least `n` peers are connected **and writable** (so a
    /// [`broadcast`](Self::broadcast) reaches them) and return them, sorted
    /// by address. Returns at once if there are enough now.
    ///
    /// The count is checked again on every peer event (added, deleted,
    /// connected, disconnected); [`set_writable`](Self::set_writable) makes
    /// no event, so a promotion by it alone is seen at the next one.
    ///
    /// Errors: [`NetworkError::Timeout`] after `timeout`,
    /// [`NetworkError::Closed`] if the node closes first.
    pub async fn wait_peers(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<SocketAddr>, NetworkError> {
        self.wait_until(timeout, |state| {
            let ready: Vec<SocketAddr> = state
                .peers
                .iter()
                .filter(|p| p.writable && p.connection == ConnectionState::Connected)
                .map(|p| p.addr)
                .collect();
            (ready.len() >= n).then_some(ready)
        })
        .await
    }

    /// Look at the node's state now and after every peer event until
    /// `done` gives an answer or `timeout` passes.
    async fn wait_until<T>(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&NetworkState) -> Option<T>,
    ) -> Result<T, NetworkError> {
        let deadline = Instant::now() + timeout;
        let mut events = self.events().await?;
        loop {
            if let Some(answer) = done(&self.network_state().await?) {
                return Ok(answer);
            }
            match tokio::time::timeout_at(deadline, events.next()).await {
                Err(_) => return Err(NetworkError::Timeout(timeout)),
                Ok(None) => return Err(NetworkError::Closed),
                Ok(Some(_)) => {}
            }
        }
    }
}
