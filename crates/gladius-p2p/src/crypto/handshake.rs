//! The Noise handshake, `Noise_XX_25519_ChaChaPoly_BLAKE2s` or
//! `Noise_XX_25519_AESGCM_BLAKE2s` (the initiator's [`Cipher`]), as two
//! sans-IO state machines.
//!
//! ```text
//! Initiator                                   Responder
//!   Init      [sender_index, e, cookie]  ->
//!             <-  Response [sender_index, receiver_index, e, ee, s, es, payload]
//!   Finish    [receiver_index, s, se, payload] ->
//!   Data ...                             <->  Data ...
//! ```
//!
//! Each side picks a random local index ([`random_index`]) that the other
//! puts in every packet it sends back, so the driver finds the handshake or
//! channel a packet belongs to without trying keys. The prologue is
//! [`PROLOGUE`]. Message 1 has an empty payload (it is not encrypted);
//! messages 2 and 3 carry each side's [`HandshakePayload`], encrypted, and
//! each side's static key, so both learn who the other is (the responder
//! first, the initiator only from message 3). Whether that key is
//! acceptable is the caller's decision; [`Initiator::expect_remote`] /
//! [`Responder::expect_remote`] make a pinned key part of the handshake, so
//! that an initiator never sends its identity and payload to the wrong key.
//!
//! An initiator of [`Cipher::AesGcm`] whose `Init` goes unanswered
//! [`AES_GCM_UNANSWERED_LIMIT`] times starts over with
//! [`Cipher::ChaChaPoly`], which every node speaks
//! ([`Initiator::handle_timeout`]).
//!
//! Both machines retransmit their last datagram on [`HandshakeConfig`]'s
//! doubling timer ([`handle_timeout`](Initiator::handle_timeout)) until
//! answered or expired. A lost `Finish` is repaired by the responder
//! retransmitting its `Response`: the initiator's [`SecureChannel`] keeps the
//! `Finish` and answers an identical `Response` with it
//! ([`SecureChannel::answer_duplicate_response`]) until the first `Data` from
//! the responder proves it arrived. A lost `Response` is repaired by either
//! timer; [`Responder::answer_duplicate_init`] answers a retransmitted `Init`
//! with the same `Response` instead of a new handshake.
//!
//! A failed read of message 2 or 3 (a forged or corrupted packet) leaves the
//! machine as it was, so the genuine message can still complete it; an
//! authenticated message with an unacceptable payload, version or pinned key
//! fails the handshake for good.
//!
//! [`random_index`]: super::packet::random_index

use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;
use snow::{Builder, HandshakeState};

use super::channel::SecureChannel;
use super::cipher::{Cipher, AES_GCM_UNANSWERED_LIMIT};
use super::cookie::COOKIE_LEN;
use super::identity::{Identity, PublicKey};
use super::packet::{
    is_valid_index, FinishPacket, InitPacket, ResponsePacket, INIT_NOISE_LEN, TAG_LEN,
};

/// The Noise prologue both sides mix in: binds the handshake to this
/// protocol and version.
pub const PROLOGUE: &[u8] = b"gladius-p2p encrypted v1";
/// The [`HandshakePayload::version`] this implementation speaks.
pub const HANDSHAKE_VERSION: u8 = 1;
/// Longest application payload ([`HandshakePayload::app`]).
pub const MAX_APP_PAYLOAD: usize = 1024;
/// Shortest encoded payload (the shortest address text, `0.0.0.0:0`, is 9
/// bytes).
pub const MIN_PAYLOAD_LEN: usize = 1 + 1 + 9 + 2;
/// Longest encoded payload.
pub const MAX_PAYLOAD_LEN: usize = 1 + 1 + 255 + 2 + MAX_APP_PAYLOAD;

/// What each side tells the other inside messages 2 and 3.
///
/// Encoded as `version u8 | addr_len u8 | addr (UTF-8 text) | app_len u16 LE |
/// app`, where `addr` is the canonical `Display` text of a `SocketAddr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakePayload {
    /// Handshake version; [`HANDSHAKE_VERSION`] for this implementation.
    pub version: u8,
    /// The sender's advertised address (what its messages' `sender` will be).
    pub advertised: SocketAddr,
    /// Opaque bytes for plugins (e.g. a signature binding another key to the
    /// Noise static key), at most [`MAX_APP_PAYLOAD`].
    pub app: Bytes,
}

/// Why a handshake payload could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// Ends before its fields do.
    #[error("handshake payload is truncated")]
    Truncated,
    /// Bytes after the `app` field.
    #[error("handshake payload has trailing bytes")]
    TrailingBytes,
    /// The address is not the canonical text of a socket address.
    #[error("handshake payload has a bad advertised address")]
    BadAddress,
    /// `app` is longer than [`MAX_APP_PAYLOAD`].
    #[error("application payload of {0} bytes exceeds {MAX_APP_PAYLOAD}")]
    AppTooLong(usize),
}

impl HandshakePayload {
    /// A payload of our version.
    pub fn new(advertised: SocketAddr, app: Bytes) -> Self {
        Self {
            version: HANDSHAKE_VERSION,
            advertised,
            app,
        }
    }

    /// The encoded payload.
    pub fn encode(&self) -> Result<Vec<u8>, PayloadError> {
        if self.app.len() > MAX_APP_PAYLOAD {
            return Err(PayloadError::AppTooLong(self.app.len()));
        }
        let addr = self.advertised.to_string();
        let addr_len = u8::try_from(addr.len()).map_err(|_| PayloadError::BadAddress)?;
        let app_len =
            u16::try_from(self.app.len()).map_err(|_| PayloadError::AppTooLong(self.app.len()))?;
        let mut out = Vec::with_capacity(4 + addr.len() + self.app.len());
        out.push(self.version);
        out.push(addr_len);
        out.extend_from_slice(addr.as_bytes());
        out.extend_from_slice(&app_len.to_le_bytes());
        out.extend_from_slice(&self.app);
        Ok(out)
    }

    /// Decode an encoded payload (any version; the handshake checks it).
    pub fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        let (&version, rest) = bytes.split_first().ok_or(PayloadError::Truncated)?;
        let (&addr_len, rest) = rest.split_first().ok_or(PayloadError::Truncated)?;
        let (addr, rest) = rest
            .split_at_checked(usize::from(addr_len))
            .ok_or(PayloadError::Truncated)?;
        let (app_len, rest) = rest
            .split_first_chunk::<2>()
            .ok_or(PayloadError::Truncated)?;
        let app_len = usize::from(u16::from_le_bytes(*app_len));
        if app_len > MAX_APP_PAYLOAD {
            return Err(PayloadError::AppTooLong(app_len));
        }
        let (app, rest) = rest
            .split_at_checked(app_len)
            .ok_or(PayloadError::Truncated)?;
        if !rest.is_empty() {
            return Err(PayloadError::TrailingBytes);
        }
        let text = std::str::from_utf8(addr).map_err(|_| PayloadError::BadAddress)?;
        let advertised: SocketAddr = text.parse().map_err(|_| PayloadError::BadAddress)?;
        if advertised.to_string() != text {
            return Err(PayloadError::BadAddress);
        }
        Ok(Self {
            version,
            advertised,
            app: Bytes::copy_from_slice(app),
        })
    }
}

/// Handshake timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandshakeConfig {
    /// Delay before the first retransmission, in ms (then doubling).
    pub initial_retransmit_ms: u64,
    /// Cap on the retransmission delay, in ms.
    pub max_retransmit_ms: u64,
    /// The handshake expires this long after it started, in ms.
    pub timeout_ms: u64,
    /// The handshake expires once this many datagrams were sent (the first
    /// one included) and the last went unanswered for its delay.
    pub max_attempts: u32,
}

impl Default for HandshakeConfig {
    /// 200 ms doubling up to 1.6 s, 5 s in total, at most 8 datagrams.
    fn default() -> Self {
        Self {
            initial_retransmit_ms: 200,
            max_retransmit_ms: 1_600,
            timeout_ms: 5_000,
            max_attempts: 8,
        }
    }
}

/// Why a handshake step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The packet is addressed to another index.
    #[error("packet for index {got:#010x}, this handshake is {expected:#010x}")]
    WrongIndex {
        /// Our index.
        expected: u32,
        /// The packet's.
        got: u32,
    },
    /// A local index whose low byte is a KCP command (see
    /// [`is_valid_index`]).
    #[error("index {0:#010x} is reserved")]
    InvalidIndex(u32),
    /// The handshake message did not authenticate (forged or corrupted);
    /// the handshake is unchanged and can still complete.
    #[error("handshake message failed authentication")]
    Decrypt,
    /// Any other Noise failure.
    #[error("noise: {0}")]
    Noise(String),
    /// The peer's payload is malformed, or ours cannot be encoded.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// The peer speaks another handshake version.
    #[error("peer speaks handshake version {got}, this node speaks {expected}")]
    Version {
        /// [`HANDSHAKE_VERSION`].
        expected: u8,
        /// The peer's.
        got: u8,
    },
    /// The peer's static key is not the pinned one.
    #[error("peer key {actual} is not the pinned key {expected}")]
    PinnedKeyMismatch {
        /// The pinned key.
        expected: PublicKey,
        /// The peer's.
        actual: PublicKey,
    },
    /// The handshake already completed or failed.
    #[error("handshake is not waiting for this message")]
    WrongState,
}

fn noise_error(e: snow::Error) -> HandshakeError {
    match e {
        snow::Error::Decrypt => HandshakeError::Decrypt,
        other => HandshakeError::Noise(other.to_string()),
    }
}

/// A completed handshake.
#[derive(Debug)]
pub struct Established {
    /// The transport channel, ready to seal and open `Data`.
    pub channel: SecureChannel,
    /// The peer's static key (also [`SecureChannel::remote_static`]).
    pub remote_static: PublicKey,
    /// The peer's payload (its version is [`HANDSHAKE_VERSION`]).
    pub remote_payload: HandshakePayload,
    /// Initiator only: the `Finish` datagram to send now. (The channel keeps
    /// a copy to answer a retransmitted `Response`.) `None` for a responder.
    pub finish: Option<Bytes>,
}

/// The retransmission timer of one handshake datagram.
#[derive(Debug, Clone)]
struct Retransmit {
    config: HandshakeConfig,
    started: u64,
    next: u64,
    delay: u64,
    sent: u32,
    datagram: Bytes,
}

impl Retransmit {
    fn new(config: HandshakeConfig, datagram: Bytes, now: u64) -> Self {
        Self {
            config,
            started: now,
            next: now.saturating_add(config.initial_retransmit_ms),
            delay: config.initial_retransmit_ms,
            sent: 1,
            datagram,
        }
    }

    /// Use `config` from now on, counted from the first send.
    fn reconfigure(&mut self, config: HandshakeConfig) {
        *self = Self::new(config, self.datagram.clone(), self.started);
    }

    /// Start over with a new datagram (sent now), keeping the start time.
    fn restart(&mut self, datagram: Bytes, now: u64) {
        *self = Self {
            started: self.started,
            ..Self::new(self.config, datagram, now)
        };
    }

    fn expiry(&self) -> u64 {
        self.started.saturating_add(self.config.timeout_ms)
    }

    fn is_expired(&self, now: u64) -> bool {
        now >= self.expiry() || (self.sent >= self.config.max_attempts && now >= self.next)
    }

    fn poll(&self) -> u64 {
        self.next.min(self.expiry())
    }

    /// Whether [`fire`](Self::fire) sends now.
    fn is_due(&self, now: u64) -> bool {
        now >= self.next && !self.is_expired(now)
    }

    fn fire(&mut self, now: u64) -> Option<Bytes> {
        if !self.is_due(now) {
            return None;
        }
        self.sent = self.sent.saturating_add(1);
        self.delay = self
            .delay
            .saturating_mul(2)
            .min(self.config.max_retransmit_ms)
            .max(1);
        self.next = now.saturating_add(self.delay);
        Some(self.datagram.clone())
    }
}

/// A snow handshake state, for the given role.
fn build(
    identity: &Identity,
    initiator: bool,
    cipher: Cipher,
    fixed_ephemeral: Option<&[u8; 32]>,
) -> Result<HandshakeState, HandshakeError> {
    let params = cipher.noise_params().parse().map_err(noise_error)?;
    let mut builder = Builder::new(params)
        .local_private_key(identity.private_bytes())
        .map_err(noise_error)?
        .prologue(PROLOGUE)
        .map_err(noise_error)?;
    if let Some(e) = fixed_ephemeral {
        builder = builder.fixed_ephemeral_key_for_testing_only(e);
    }
    if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    }
    .map_err(noise_error)
}

/// Read a handshake message carrying a payload, returning the peer's static
/// key and payload. On a failed read the state is unchanged.
fn read_with_payload(
    hs: &mut HandshakeState,
    noise: &[u8],
) -> Result<(PublicKey, HandshakePayload), HandshakeError> {
    let mut buf = vec![0u8; noise.len()];
    let n = hs.read_message(noise, &mut buf).map_err(noise_error)?;
    let payload = HandshakePayload::decode(buf.get(..n).unwrap_or_default())?;
    if payload.version != HANDSHAKE_VERSION {
        return Err(HandshakeError::Version {
            expected: HANDSHAKE_VERSION,
            got: payload.version,
        });
    }
    let remote = hs
        .get_remote_static()
        .and_then(PublicKey::from_slice)
        .ok_or_else(|| HandshakeError::Noise("no remote static key".into()))?;
    Ok((remote, payload))
}

/// Write a handshake message with `payload`.
fn write(hs: &mut HandshakeState, payload: &[u8]) -> Result<Vec<u8>, HandshakeError> {
    let mut buf = vec![0u8; payload.len() + 2 * 32 + 3 * TAG_LEN];
    let n = hs.write_message(payload, &mut buf).map_err(noise_error)?;
    buf.truncate(n);
    Ok(buf)
}

/// The `Init` datagram of message 1 `noise1` under `index`.
fn init_datagram(index: u32, noise1: &[u8], cookie: [u8; COOKIE_LEN], cipher: Cipher) -> Bytes {
    InitPacket {
        sender_index: index,
        noise: noise1,
        cookie,
        cipher,
    }
    .encode()
}

/// The transport keys of a finished handshake, (sealing, opening) for
/// this side: Noise `Split()` gives the initiator's sending key first.
fn split(hs: &mut HandshakeState, initiator: bool) -> Result<([u8; 32], [u8; 32]), HandshakeError> {
    if !hs.is_handshake_finished() {
        return Err(HandshakeError::Noise("handshake not finished".into()));
    }
    let (first, second) = hs.dangerously_get_raw_split();
    Ok(if initiator {
        (first, second)
    } else {
        (second, first)
    })
}

/// Whether a read error leaves the handshake unusable: the message
/// authenticated but what it says is unacceptable. (A failed Noise read
/// leaves the state as it was.)
fn is_fatal<T>(read: &Result<T, HandshakeError>) -> bool {
    matches!(
        read,
        Err(HandshakeError::Payload(_) | HandshakeError::Version { .. })
    )
}

fn check_pin(expected: Option<PublicKey>, actual: PublicKey) -> Result<(), HandshakeError> {
    match expected {
        Some(expected) if expected != actual => {
            Err(HandshakeError::PinnedKeyMismatch { expected, actual })
        }
        _ => Ok(()),
    }
}

/// The initiator's side of a handshake.
pub struct Initiator {
    /// `None` once completed or failed.
    hs: Option<Box<HandshakeState>>,
    /// To start over with [`Cipher::ChaChaPoly`].
    identity: Identity,
    cipher: Cipher,
    /// Whether the responder was heard from (a `Cookie`, or a reason to
    /// re-send at once): it speaks our suite.
    answered: bool,
    local_index: u32,
    noise1: [u8; INIT_NOISE_LEN],
    payload: Vec<u8>,
    expected: Option<PublicKey>,
    timer: Retransmit,
}

impl fmt::Debug for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiator")
            .field("local_index", &self.local_index)
            .field("cipher", &self.cipher)
            .field("pending", &self.hs.is_some())
            .field("expected", &self.expected)
            .field("timer", &self.timer)
            .finish_non_exhaustive()
    }
}

impl Initiator {
    /// Start a handshake of suite `cipher` as `identity` under
    /// `local_index` (see [`random_index`](super::packet::random_index)), to
    /// send `payload` in message 3. Returns the machine and the `Init`
    /// datagram to send now.
    pub fn new(
        identity: &Identity,
        local_index: u32,
        payload: &HandshakePayload,
        cipher: Cipher,
        now: u64,
    ) -> Result<(Self, Bytes), HandshakeError> {
        Self::new_inner(identity, local_index, payload, cipher, now, None)
    }

    pub(crate) fn new_inner(
        identity: &Identity,
        local_index: u32,
        payload: &HandshakePayload,
        cipher: Cipher,
        now: u64,
        fixed_ephemeral: Option<&[u8; 32]>,
    ) -> Result<(Self, Bytes), HandshakeError> {
        if !is_valid_index(local_index) {
            return Err(HandshakeError::InvalidIndex(local_index));
        }
        let payload = payload.encode()?;
        let (hs, noise1) = Self::message1(identity, cipher, fixed_ephemeral)?;
        let init = init_datagram(local_index, &noise1, [0; COOKIE_LEN], cipher);
        let me = Self {
            hs: Some(Box::new(hs)),
            identity: identity.clone(),
            cipher,
            answered: false,
            local_index,
            noise1,
            payload,
            expected: None,
            timer: Retransmit::new(HandshakeConfig::default(), init.clone(), now),
        };
        Ok((me, init))
    }

    /// A fresh initiator state of suite `cipher` that wrote message 1, and
    /// message 1.
    fn message1(
        identity: &Identity,
        cipher: Cipher,
        fixed_ephemeral: Option<&[u8; 32]>,
    ) -> Result<(HandshakeState, [u8; INIT_NOISE_LEN]), HandshakeError> {
        let mut hs = build(identity, true, cipher, fixed_ephemeral)?;
        let msg1 = write(&mut hs, &[])?;
        let noise1 = <[u8; INIT_NOISE_LEN]>::try_from(msg1.as_slice())
            .map_err(|_| HandshakeError::Noise("unexpected message 1 length".into()))?;
        Ok((hs, noise1))
    }

    /// The suite of the handshake (of the `Init` sent last).
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// Use `config` for the timers (counted from the `Init` already sent).
    pub fn with_config(mut self, config: HandshakeConfig) -> Self {
        self.timer.reconfigure(config);
        self
    }

    /// Pin the responder's static key: a `Response` from any other key fails
    /// the handshake with [`HandshakeError::PinnedKeyMismatch`] before
    /// message 3 (our identity and payload) is written.
    pub fn expect_remote(mut self, key: PublicKey) -> Self {
        self.expected = Some(key);
        self
    }

    /// Our index.
    pub fn local_index(&self) -> u32 {
        self.local_index
    }

    /// The responder asked for a cookie (a `Cookie` packet addressed to our
    /// index; the caller checks the index): the `Init` datagram to send now,
    /// carrying it. Retransmissions carry it too, and the retransmission
    /// timer starts over (the total timeout does not).
    pub fn with_cookie(&mut self, cookie: [u8; COOKIE_LEN], now: u64) -> Bytes {
        self.answered = true;
        let init = init_datagram(self.local_index, &self.noise1, cookie, self.cipher);
        if self.hs.is_some() {
            self.timer.restart(init.clone(), now);
        }
        init
    }

    /// Read the responder's message 2 and write our message 3.
    ///
    /// On [`HandshakeError::Decrypt`], [`HandshakeError::Noise`] and
    /// [`HandshakeError::WrongIndex`] the initiator is unchanged (a forged
    /// `Response` cannot break the handshake); on any other error the
    /// handshake has failed and further calls return
    /// [`HandshakeError::WrongState`].
    pub fn handle_response(
        &mut self,
        response: &ResponsePacket<'_>,
        now: u64,
    ) -> Result<Established, HandshakeError> {
        let _ = now;
        if response.receiver_index != self.local_index {
            return Err(HandshakeError::WrongIndex {
                expected: self.local_index,
                got: response.receiver_index,
            });
        }
        let hs = self.hs.as_deref_mut().ok_or(HandshakeError::WrongState)?;
        let read = read_with_payload(hs, response.noise);
        if is_fatal(&read) {
            self.hs = None;
        }
        let (remote_static, remote_payload) = read?;
        let result = (|| {
            check_pin(self.expected, remote_static)?;
            let mut hs = self.hs.take().ok_or(HandshakeError::WrongState)?;
            let msg3 = write(&mut hs, &self.payload)?;
            let keys = split(&mut hs, true)?;
            let finish = FinishPacket {
                receiver_index: response.sender_index,
                noise: &msg3,
            }
            .encode();
            let channel = SecureChannel::new(
                keys,
                self.cipher,
                self.local_index,
                response.sender_index,
                remote_static,
                Some((response.encode(), finish.clone())),
            )
            .ok_or_else(|| HandshakeError::Noise("transport keys refused".into()))?;
            Ok(Established {
                channel,
                remote_static,
                remote_payload,
                finish: Some(finish),
            })
        })();
        self.hs = None;
        result
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called,
    /// or `None` once the handshake completed or failed.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.hs.as_ref().map(|_| self.timer.poll())
    }

    /// The `Init` (with its cookie, if any) to send again now, ahead of its
    /// timer: the responder was heard from and will answer. The
    /// retransmission timer starts over; the total timeout does not.
    /// `None` once the handshake completed, failed or expired.
    pub fn resend_now(&mut self, now: u64) -> Option<Bytes> {
        self.hs.as_ref()?;
        self.answered = true;
        if self.timer.is_expired(now) {
            return None;
        }
        let init = self.timer.datagram.clone();
        self.timer.restart(init.clone(), now);
        Some(init)
    }

    /// The `Init` to retransmit, if its timer is due and the handshake is
    /// neither done nor expired.
    ///
    /// After [`AES_GCM_UNANSWERED_LIMIT`] `Init`s of [`Cipher::AesGcm`]
    /// with no answer at all, the handshake starts over with
    /// [`Cipher::ChaChaPoly`] (a new ephemeral key; the index, timers and
    /// total timeout carry on): the peer may predate the AES-GCM suite.
    pub fn handle_timeout(&mut self, now: u64) -> Option<Bytes> {
        self.hs.as_ref()?;
        if self.cipher == Cipher::AesGcm
            && !self.answered
            && self.timer.sent >= AES_GCM_UNANSWERED_LIMIT
            && self.timer.is_due(now)
        {
            self.fall_back();
        }
        self.timer.fire(now)
    }

    /// Start over with [`Cipher::ChaChaPoly`]: a new message 1 under the
    /// same index, sent when the timer fires. On the (impossible) failure
    /// to build it, the AES-GCM `Init` keeps being sent.
    fn fall_back(&mut self) {
        let Ok((hs, noise1)) = Self::message1(&self.identity, Cipher::ChaChaPoly, None) else {
            return;
        };
        self.cipher = Cipher::ChaChaPoly;
        self.hs = Some(Box::new(hs));
        self.noise1 = noise1;
        self.timer.datagram =
            init_datagram(self.local_index, &self.noise1, [0; COOKIE_LEN], self.cipher);
    }

    /// Whether the handshake ran out of time or attempts (the caller drops
    /// it). A completed or failed handshake is not "expired".
    pub fn is_expired(&self, now: u64) -> bool {
        self.hs.is_some() && self.timer.is_expired(now)
    }

    /// How many `Init` datagrams were sent so far (including the first and
    /// any re-sent with a cookie).
    pub fn attempts(&self) -> u32 {
        self.timer.sent
    }
}

/// Everything needed to bring a responder's Noise state back to "message 2
/// written" (deterministic, given the ephemeral key).
#[derive(Clone)]
struct Replay {
    identity: Identity,
    cipher: Cipher,
    ephemeral: [u8; 32],
    noise1: [u8; INIT_NOISE_LEN],
    payload: Vec<u8>,
}

impl Replay {
    /// A responder state that read message 1 and wrote message 2; and
    /// message 2.
    fn run(&self) -> Result<(HandshakeState, Vec<u8>), HandshakeError> {
        let mut hs = build(&self.identity, false, self.cipher, Some(&self.ephemeral))?;
        let mut empty = [0u8; INIT_NOISE_LEN];
        let n = hs
            .read_message(&self.noise1, &mut empty)
            .map_err(noise_error)?;
        if n != 0 {
            return Err(PayloadError::TrailingBytes.into());
        }
        let msg2 = write(&mut hs, &self.payload)?;
        Ok((hs, msg2))
    }
}

/// The responder's side of a handshake.
pub struct Responder {
    hs: Option<Box<HandshakeState>>,
    /// How to rebuild `hs` after a failed read of message 3.
    replay: Replay,
    local_index: u32,
    remote_index: u32,
    remote_static: PublicKey,
    expected: Option<PublicKey>,
    timer: Retransmit,
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("pending", &self.hs.is_some())
            .field("expected", &self.expected)
            .field("timer", &self.timer)
            .finish_non_exhaustive()
    }
}

impl Responder {
    /// Answer an `Init` (whose cookie, if required, the caller verified) as
    /// `identity` under `local_index`, sending `payload` in message 2.
    /// Returns the machine and the `Response` datagram to send now.
    pub fn new(
        identity: &Identity,
        local_index: u32,
        init: &InitPacket<'_>,
        payload: &HandshakePayload,
        now: u64,
    ) -> Result<(Self, Bytes), HandshakeError> {
        Self::new_inner(identity, local_index, init, payload, now, None)
    }

    pub(crate) fn new_inner(
        identity: &Identity,
        local_index: u32,
        init: &InitPacket<'_>,
        payload: &HandshakePayload,
        now: u64,
        fixed_ephemeral: Option<&[u8; 32]>,
    ) -> Result<(Self, Bytes), HandshakeError> {
        if !is_valid_index(local_index) {
            return Err(HandshakeError::InvalidIndex(local_index));
        }
        let noise1 = <[u8; INIT_NOISE_LEN]>::try_from(init.noise)
            .map_err(|_| HandshakeError::Noise("message 1 has the wrong length".into()))?;
        let payload = payload.encode()?;
        let ephemeral = match fixed_ephemeral {
            Some(e) => *e,
            None => {
                let mut e = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut e);
                e
            }
        };
        let replay = Replay {
            identity: identity.clone(),
            cipher: init.cipher,
            ephemeral,
            noise1,
            payload,
        };
        let (hs, msg2) = replay.run()?;
        let response = ResponsePacket {
            sender_index: local_index,
            receiver_index: init.sender_index,
            noise: &msg2,
        }
        .encode();
        let me = Self {
            hs: Some(Box::new(hs)),
            replay,
            local_index,
            remote_index: init.sender_index,
            remote_static: PublicKey::from_bytes([0; 32]),
            expected: None,
            timer: Retransmit::new(HandshakeConfig::default(), response.clone(), now),
        };
        Ok((me, response))
    }

    /// Use `config` for the timers (counted from the `Response` already
    /// sent).
    pub fn with_config(mut self, config: HandshakeConfig) -> Self {
        self.timer.reconfigure(config);
        self
    }

    /// Pin the initiator's static key: a `Finish` from any other key fails
    /// with [`HandshakeError::PinnedKeyMismatch`].
    pub fn expect_remote(mut self, key: PublicKey) -> Self {
        self.expected = Some(key);
        self
    }

    /// Our index.
    pub fn local_index(&self) -> u32 {
        self.local_index
    }

    /// The initiator's index.
    pub fn remote_index(&self) -> u32 {
        self.remote_index
    }

    /// If `init` is a retransmission of the `Init` this handshake answers
    /// (same index and ephemeral key, any cookie) and the handshake is
    /// pending, the same `Response` to send again.
    pub fn answer_duplicate_init(&self, init: &InitPacket<'_>) -> Option<Bytes> {
        (self.hs.is_some()
            && init.sender_index == self.remote_index
            && init.noise == self.replay.noise1)
            .then(|| self.timer.datagram.clone())
    }

    /// Read the initiator's message 3, completing the handshake.
    ///
    /// On [`HandshakeError::Decrypt`], [`HandshakeError::Noise`] and
    /// [`HandshakeError::WrongIndex`] the responder is unchanged; on any
    /// other error the handshake has failed.
    pub fn handle_finish(
        &mut self,
        finish: &FinishPacket<'_>,
    ) -> Result<Established, HandshakeError> {
        if finish.receiver_index != self.local_index {
            return Err(HandshakeError::WrongIndex {
                expected: self.local_index,
                got: finish.receiver_index,
            });
        }
        let hs = self.hs.as_deref_mut().ok_or(HandshakeError::WrongState)?;
        let read = read_with_payload(hs, finish.noise);
        if is_fatal(&read) {
            self.hs = None;
        } else if read.is_err() {
            // snow rolls back only part of its state on a failed read: a
            // message 3 whose `s` authenticated but whose payload did not
            // leaves the cipher key advanced. Rebuild the state so that the
            // genuine message still completes the handshake.
            match self.replay.run() {
                Ok((hs, msg2)) if self.timer.datagram.ends_with(&msg2) => {
                    self.hs = Some(Box::new(hs));
                }
                _ => self.hs = None,
            }
        }
        let (remote_static, remote_payload) = read?;
        let mut hs = self.hs.take().ok_or(HandshakeError::WrongState)?;
        check_pin(self.expected, remote_static)?;
        self.remote_static = remote_static;
        let keys = split(&mut hs, false)?;
        Ok(Established {
            channel: SecureChannel::new(
                keys,
                self.replay.cipher,
                self.local_index,
                self.remote_index,
                remote_static,
                None,
            )
            .ok_or_else(|| HandshakeError::Noise("transport keys refused".into()))?,
            remote_static,
            remote_payload,
            finish: None,
        })
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called,
    /// or `None` once the handshake completed or failed.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.hs.as_ref().map(|_| self.timer.poll())
    }

    /// The `Response` to retransmit, if its timer is due and the handshake
    /// is neither done nor expired.
    pub fn handle_timeout(&mut self, now: u64) -> Option<Bytes> {
        self.hs.as_ref()?;
        self.timer.fire(now)
    }

    /// Whether the handshake ran out of time or attempts (the caller drops
    /// it and frees its half-open slot).
    pub fn is_expired(&self, now: u64) -> bool {
        self.hs.is_some() && self.timer.is_expired(now)
    }
}
