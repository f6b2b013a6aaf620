//! [`PeerSender`]: a stream of messages to one peer without a round trip
//! to the driver per message.
//!
//! [`Network::broadcast_to`](crate::Network::broadcast_to) sends one
//! command to the driver and awaits its [`SendReport`](crate::SendReport):
//! two task hand-offs per message, which bound a stream of small messages.
//! A `PeerSender` instead reserves room in a byte budget it shares with the
//! driver (an atomic, checked in the caller's task) and hands the message
//! over on a channel the driver drains once per wake-up. What
//! [`try_send`](PeerSender::try_send) accepts is sent, in order, unless the
//! peer's session ends first; those messages are counted
//! ([`dropped`](PeerSender::dropped)) and every later send fails with
//! [`PeerSendError::Closed`]. Nothing is lost without one of the two.
//!
//! Memory: the budget is [`Config::with_peer_queue_bytes`](crate::Config::with_peer_queue_bytes)
//! bytes (encoded frames, counted at their largest), on top of the peer's
//! own send queue of the same bound, so a peer's messages never hold more
//! than twice that.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

use crate::endpoint::PeerId;
use crate::wire::{Frame, Message};

/// The room a [`PeerSender`] shares with the driver.
#[derive(Debug)]
pub(crate) struct Budget {
    /// The peer, as the driver knows it.
    pub(crate) peer: PeerId,
    /// The address it was opened with (what sends name it by).
    pub(crate) addr: SocketAddr,
    limit: usize,
    /// Bytes accepted and not yet in the peer's send queue.
    used: AtomicUsize,
    /// The session ended: no more sends.
    closed: AtomicBool,
    /// Accepted messages the driver could not queue (the session ended).
    dropped: AtomicU64,
    /// Senders waiting for room (releases wake them only if there are).
    waiters: AtomicUsize,
    room: Notify,
}

impl Budget {
    pub(crate) fn new(peer: PeerId, addr: SocketAddr, limit: usize) -> Self {
        Self {
            peer,
            addr,
            limit,
            used: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            waiters: AtomicUsize::new(0),
            room: Notify::new(),
        }
    }

    /// Take `need` bytes if they fit.
    fn reserve(&self, need: usize) -> bool {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(need).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    /// Give back bytes the driver moved into the peer's queue (or dropped).
    pub(crate) fn release(&self, bytes: usize) {
        // SeqCst with the waiter's count and reservation: either it sees
        // the room or this sees it waiting.
        self.used.fetch_sub(bytes, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.room.notify_waiters();
        }
    }

    /// The session ended: refuse every later send and count what the
    /// driver held.
    pub(crate) fn close(&self, dropped: u64) {
        self.dropped.fetch_add(dropped, Ordering::AcqRel);
        self.closed.store(true, Ordering::Release);
        self.room.notify_waiters();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// A message on its way from a [`PeerSender`] to the driver.
#[derive(Debug)]
pub(crate) struct Push {
    pub(crate) budget: Arc<Budget>,
    pub(crate) msg: Message,
    /// Bytes reserved for it.
    pub(crate) need: usize,
}

/// Why a [`PeerSender`] did not accept a message. The message comes back
/// where it can be sent again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerSendError {
    /// The budget is full: the peer has not yet acknowledged enough of what
    /// was sent. [`PeerSender::send`] waits for room instead.
    #[error("the peer's send budget is full")]
    Full(Message),
    /// The peer's session ended (or the node closed): nothing more goes
    /// through this sender. Open a new one once the peer is connected again.
    #[error("the peer's session ended")]
    Closed(Message),
    /// The body is larger than the node's `max_message_size`.
    #[error("message body of {size} bytes exceeds max_message_size {max}")]
    TooLarge {
        /// The body's length.
        size: usize,
        /// The configured limit.
        max: usize,
    },
}

/// Sends a stream of messages to one connected peer with no round trip to
/// the node's driver per message; from
/// [`Network::sender`](crate::Network::sender). Cheap to clone; clones
/// share one budget and keep their order with respect to each other only as
/// their calls are ordered. Its messages keep their order among
/// themselves, not with other sends to the same peer made meanwhile
/// (`broadcast_to`, plugins): the node takes commands before pushes.
///
/// ```
/// use std::time::Duration;
/// use gladius_p2p::{Config, Filter, Message, Network};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let a = Network::new(Config::default())?;
/// let b = Network::new(Config::default())?;
/// a.listen("127.0.0.1:0").await?;
/// let b_addr = b.listen("127.0.0.1:0").await?;
/// let mut inbox = b.subscribe(Filter::type_prefix("tick")).await?;
/// a.add(b_addr).await?;
/// a.wait_connected(b_addr, Duration::from_secs(5)).await?;
///
/// let to_b = a.sender(b_addr).await?;
/// for i in 0..1000u32 {
///     // Waits only when the budget is full; no reply per message.
///     to_b.send(Message::new("tick", i.to_le_bytes().to_vec())?).await?;
/// }
/// for i in 0..1000u32 {
///     assert_eq!(inbox.next().await.unwrap().message().body()[..], i.to_le_bytes());
/// }
/// assert_eq!(to_b.dropped(), 0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PeerSender {
    budget: Arc<Budget>,
    pushes: mpsc::UnboundedSender<Push>,
    max_message_size: usize,
}

impl PeerSender {
    pub(crate) fn new(
        budget: Arc<Budget>,
        pushes: mpsc::UnboundedSender<Push>,
        max_message_size: usize,
    ) -> Self {
        Self {
            budget,
            pushes,
            max_message_size,
        }
    }

    /// The peer, by the address the sender was opened with.
    pub fn peer(&self) -> SocketAddr {
        self.budget.addr
    }

    /// Whether the peer's session ended (every send now fails with
    /// [`PeerSendError::Closed`]).
    pub fn is_closed(&self) -> bool {
        self.budget.is_closed() || self.pushes.is_closed()
    }

    /// Messages this sender (and its clones) accepted that were never
    /// queued to the peer because its session ended first.
    pub fn dropped(&self) -> u64 {
        self.budget.dropped.load(Ordering::Acquire)
    }

    /// Queue `msg` to the peer if the budget has room, without waiting.
    /// `Ok` means the driver will put it in the peer's send queue, behind
    /// what this sender accepted before, unless the session ends first
    /// (then it counts in [`dropped`](Self::dropped)).
    // The message comes back in the error so it can be sent again, as
    // tokio's `TrySendError` does; boxing would allocate on every refusal.
    #[allow(clippy::result_large_err)]
    pub fn try_send(&self, msg: Message) -> Result<(), PeerSendError> {
        let size = msg.body().len();
        if size > self.max_message_size {
            return Err(PeerSendError::TooLarge {
                size,
                max: self.max_message_size,
            });
        }
        if self.is_closed() {
            return Err(PeerSendError::Closed(msg));
        }
        let need = Frame::max_len(size);
        if !self.budget.reserve(need) {
            return Err(PeerSendError::Full(msg));
        }
        let budget = self.budget.clone();
        self.pushes
            .send(Push { budget, msg, need })
            .map_err(|back| {
                self.budget.release(need);
                PeerSendError::Closed(back.0.msg)
            })
    }

    /// [`try_send`](Self::try_send), waiting for room while the budget is
    /// full. Fails only with [`PeerSendError::Closed`] or
    /// [`PeerSendError::TooLarge`]. Cancel-safe: dropped while waiting, the
    /// message was not accepted.
    #[allow(clippy::result_large_err)]
    pub async fn send(&self, msg: Message) -> Result<(), PeerSendError> {
        let mut msg = match self.try_send(msg) {
            Err(PeerSendError::Full(back)) => back,
            done => return done,
        };
        self.budget.waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.budget);
        loop {
            // Enabled before the check, so a release between the check and
            // the wait is not missed.
            let room = self.budget.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_send(msg) {
                Err(PeerSendError::Full(back)) => msg = back,
                done => return done,
            }
            room.await;
        }
    }
}

/// One sender waiting in [`PeerSender::send`], until it returns or is
/// dropped.
struct Waiting<'a>(&'a Budget);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}
