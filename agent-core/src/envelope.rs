//! The envelope: what every transport carries between processes.
//!
//! Inside one process a message travels as its typed value and is never put in an envelope.
//! When it leaves the process, it is serialised (JSON payload), wrapped in an [`Envelope`]
//! and signed by the sender's key over a canonical binary encoding of every other field.
//! `docs/wire-format.md` specifies the encoding byte by byte, with a test vector.
//!
//! [`Envelope::verify`] is what a receiver runs on untrusted bytes. Each way an envelope can
//! be wrong has its own [`EnvelopeError`] variant; none panics.

mod codec;
pub(crate) use codec::MAX_OVERHEAD;
mod replay;

pub use replay::{FirstCopy, ReplayGuard, WINDOW_PER_SENDER};

use crate::identity::{Address, Identity, PublicKey, SignatureError};
use crate::message::ProtocolDigest;
use crate::message::{Message, SchemaDigest};

/// The envelope format version this build writes and reads.
pub const VERSION: u8 = 1;

/// A signed message on the wire. Fields are public for inspection; construct with
/// [`Envelope::seal`] so the signature covers them.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Format version ([`VERSION`]).
    pub version: u8,
    /// The sending agent.
    pub sender: Address,
    /// The sender's public key; `sender` must be its address.
    pub sender_key: PublicKey,
    /// The receiving agent.
    pub target: Address,
    /// The conversation this message belongs to (shared by a request and its reply).
    pub session: u128,
    /// The digest of the payload's message type.
    pub schema: SchemaDigest,
    /// The protocol the message is sent under, if any.
    pub protocol: Option<ProtocolDigest>,
    /// For a reply: the nonce of the request it answers (the correlation id).
    pub in_reply_to: Option<u64>,
    /// Whether the sender waits for a reply (a request).
    pub expects_reply: bool,
    /// The trace this message belongs to, for following one request through every hop.
    pub trace_id: u128,
    /// Random per envelope; (sender, nonce) is remembered until expiry to refuse replays.
    pub nonce: u64,
    /// When the envelope was sealed, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// After this instant (ms since the Unix epoch) the envelope is refused.
    pub expires_ms: u64,
    /// The message, serialised as JSON.
    pub payload: Vec<u8>,
    /// ed25519 signature by `sender_key` over the canonical encoding of all fields above.
    pub signature: [u8; 64],
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("sender", &self.sender)
            .field("target", &self.target)
            .field("schema", &self.schema)
            .field("nonce", &self.nonce)
            .field("payload_len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

/// The routing fields of an envelope about to be sealed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Header {
    /// The conversation id.
    pub session: u128,
    /// The protocol, if any.
    pub protocol: Option<ProtocolDigest>,
    /// The request this answers, if it is a reply.
    pub in_reply_to: Option<u64>,
    /// Whether the sender waits for a reply.
    pub expects_reply: bool,
    /// The trace id.
    pub trace_id: u128,
}

/// What a receiver accepts. Defaults: 1 MiB payloads, 30 s clock skew, 10 min lifetime.
#[derive(Debug, Clone, Copy)]
pub struct VerifyPolicy {
    max_payload: usize,
    max_clock_skew_ms: u64,
    max_lifetime_ms: u64,
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        VerifyPolicy { max_payload: 1 << 20, max_clock_skew_ms: 30_000, max_lifetime_ms: 600_000 }
    }
}

impl VerifyPolicy {
    /// Largest payload accepted, in bytes (default 1 MiB). Larger envelopes are refused
    /// before their payload is read into memory.
    pub fn with_max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// How far in the future a timestamp may be (default 30 s), for clock differences.
    pub fn with_max_clock_skew_ms(mut self, ms: u64) -> Self {
        self.max_clock_skew_ms = ms;
        self
    }

    /// The longest lifetime (expiry minus timestamp) accepted (default 10 min). The replay
    /// guard remembers each nonce this long at most, so this bounds its memory per sender.
    pub fn with_max_lifetime_ms(mut self, ms: u64) -> Self {
        self.max_lifetime_ms = ms;
        self
    }

    /// The largest payload accepted, in bytes.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }
}

/// Why an envelope was refused. Every variant means: not delivered to any handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The bytes end before the envelope does.
    #[error("envelope truncated: needed {needed} more bytes")]
    Truncated {
        /// How many more bytes the field being read needed.
        needed: usize,
    },
    /// The bytes do not start with the envelope magic `AGE`.
    #[error("not an agora envelope (bad magic)")]
    BadMagic,
    /// A version this build does not read.
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u8),
    /// Bytes follow the signature.
    #[error("{0} unexpected bytes after the envelope")]
    TrailingBytes(usize),
    /// A flags byte with bits this version does not define.
    #[error("unknown envelope flags {0:#04x}")]
    UnknownFlags(u8),
    /// The payload is larger than the receiver's limit.
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Declared payload size.
        size: usize,
        /// The receiver's limit.
        limit: usize,
    },
    /// `sender` is not the address of `sender_key`.
    #[error("sender address does not belong to the envelope's sender key")]
    SenderKeyMismatch,
    /// The signature does not verify (tampered with, or signed by another key).
    #[error("bad envelope signature: {0}")]
    BadSignature(SignatureError),
    /// The envelope's expiry has passed.
    #[error("envelope expired at {expires_ms} ms, now {now_ms} ms")]
    Expired {
        /// The envelope's expiry.
        expires_ms: u64,
        /// The receiver's clock.
        now_ms: u64,
    },
    /// The timestamp is further in the future than the allowed clock skew.
    #[error("envelope timestamp {timestamp_ms} ms is too far ahead of now ({now_ms} ms)")]
    FromTheFuture {
        /// The envelope's timestamp.
        timestamp_ms: u64,
        /// The receiver's clock.
        now_ms: u64,
    },
    /// The envelope asks to live longer than the receiver's maximum lifetime.
    #[error("envelope lifetime of {lifetime_ms} ms exceeds the maximum of {max_ms} ms")]
    LifetimeTooLong {
        /// Expiry minus timestamp.
        lifetime_ms: u64,
        /// The receiver's limit.
        max_ms: u64,
    },
    /// The same (sender, nonce) was accepted before, within its expiry window.
    #[error("replayed envelope (sender {sender}, nonce {nonce})")]
    Replayed {
        /// The sender.
        sender: Address,
        /// The repeated nonce.
        nonce: u64,
    },
    /// The nonce is older than the window of recent nonces the receiver keeps for this
    /// sender; it may be a replay, so it is refused.
    #[error(
        "nonce {nonce} of {sender} is at or below the replay window's floor {floor}; refused as a possible replay"
    )]
    BelowWindow {
        /// The sender.
        sender: Address,
        /// The nonce refused.
        nonce: u64,
        /// The highest nonce the window no longer holds exactly.
        floor: u64,
    },
    /// The replay guard is full of unexpired nonces; refusing is safer than forgetting.
    #[error("replay guard full ({capacity} unexpired nonces); try again later")]
    ReplayGuardFull {
        /// The guard's capacity.
        capacity: usize,
    },
    /// The receiver has no handler for this message type.
    #[error("unknown message schema {0}")]
    UnknownSchema(SchemaDigest),
    /// The payload is not valid JSON for the message type.
    #[error("payload does not decode as {type_name}: {reason}")]
    Payload {
        /// The message type expected.
        type_name: &'static str,
        /// serde_json's explanation.
        reason: String,
    },
}

impl EnvelopeError {
    /// The rejection this error is answered with on the wire.
    pub fn rejection(&self) -> crate::error::Rejection {
        use crate::error::Cause;
        let cause = match self {
            EnvelopeError::Truncated { .. }
            | EnvelopeError::BadMagic
            | EnvelopeError::UnsupportedVersion(_)
            | EnvelopeError::TrailingBytes(_)
            | EnvelopeError::UnknownFlags(_)
            | EnvelopeError::Payload { .. } => Cause::Malformed,
            EnvelopeError::PayloadTooLarge { .. } => Cause::TooLarge,
            EnvelopeError::SenderKeyMismatch | EnvelopeError::BadSignature(_) => Cause::BadSignature,
            EnvelopeError::Expired { .. } | EnvelopeError::LifetimeTooLong { .. } => Cause::Expired,
            EnvelopeError::FromTheFuture { .. } => Cause::ClockSkew,
            EnvelopeError::Replayed { .. } | EnvelopeError::BelowWindow { .. } => Cause::Replayed,
            EnvelopeError::ReplayGuardFull { .. } => Cause::QuotaExceeded,
            EnvelopeError::UnknownSchema(_) => Cause::NoHandler,
        };
        crate::error::Rejection::new(cause, self.to_string())
    }
}

impl Envelope {
    /// Serialises `message` and signs a new envelope from `identity` to `target`, valid
    /// for `lifetime_ms` from `now_ms`.
    pub fn seal<M: Message>(
        identity: &Identity,
        target: Address,
        message: &M,
        header: Header,
        now_ms: u64,
        lifetime_ms: u64,
    ) -> Result<Envelope, serde_json::Error> {
        let payload = serde_json::to_vec(message)?;
        Ok(Self::seal_raw(identity, target, M::digest(), payload, header, now_ms, lifetime_ms))
    }

    /// Signs a new envelope around an already serialised payload.
    pub fn seal_raw(
        identity: &Identity,
        target: Address,
        schema: SchemaDigest,
        payload: Vec<u8>,
        header: Header,
        now_ms: u64,
        lifetime_ms: u64,
    ) -> Envelope {
        let mut envelope = Self::unsigned(identity, target, schema, payload, header, now_ms, lifetime_ms);
        envelope.sign(identity);
        envelope
    }

    /// Like [`Envelope::seal_raw`] but without a signature, for a connection on which the
    /// sender is authenticated by a session binding. Never store or forward it.
    pub fn unsigned(
        identity: &Identity,
        target: Address,
        schema: SchemaDigest,
        payload: Vec<u8>,
        header: Header,
        now_ms: u64,
        lifetime_ms: u64,
    ) -> Envelope {
        Envelope {
            version: VERSION,
            sender: identity.address(),
            sender_key: identity.public_key(),
            target,
            session: header.session,
            schema,
            protocol: header.protocol,
            in_reply_to: header.in_reply_to,
            expects_reply: header.expects_reply,
            trace_id: header.trace_id,
            nonce: next_nonce(),
            timestamp_ms: now_ms,
            expires_ms: now_ms.saturating_add(lifetime_ms),
            payload,
            signature: [0; 64],
        }
    }

    /// Sets the sender fields to `identity` and signs every other field as it stands.
    /// For building envelopes field by field (test vectors, relays re-sealing their own).
    pub fn sign(&mut self, identity: &Identity) {
        self.sender = identity.address();
        self.sender_key = identity.public_key();
        self.signature = identity.sign(&self.signed_bytes());
    }

    /// The canonical bytes the signature covers: the encoding without the signature.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(codec::FIXED_LEN + self.payload.len());
        codec::write_unsigned(self, &mut out);
        out
    }

    /// Encodes the envelope for the wire (see `docs/wire-format.md`).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(codec::FIXED_LEN + self.payload.len() + 64);
        codec::write_unsigned(self, &mut out);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes untrusted bytes. Checks structure and the payload size limit only; call
    /// [`Envelope::verify`] before trusting any field.
    pub fn decode(bytes: &[u8], max_payload: usize) -> Result<Envelope, EnvelopeError> {
        codec::decode(bytes, max_payload)
    }

    /// Checks everything a receiver must check before handing the envelope to a handler:
    /// size, known schema, sender key, signature, lifetime, clock, and replay. Records the
    /// nonce in `replay` only if every other check passed, so a forged envelope cannot
    /// burn a legitimate nonce.
    pub fn verify(
        &self,
        policy: &VerifyPolicy,
        now_ms: u64,
        replay: &mut ReplayGuard,
        is_known_schema: impl Fn(&SchemaDigest) -> bool,
    ) -> Result<(), EnvelopeError> {
        self.verify_stateless(policy, now_ms, is_known_schema)?;
        replay.check_and_insert(self.sender, self.nonce, self.expires_ms, now_ms)
    }

    /// Every check of [`Envelope::verify`] except the replay guard.
    pub fn verify_stateless(
        &self,
        policy: &VerifyPolicy,
        now_ms: u64,
        is_known_schema: impl Fn(&SchemaDigest) -> bool,
    ) -> Result<(), EnvelopeError> {
        if self.payload.len() > policy.max_payload {
            return Err(EnvelopeError::PayloadTooLarge { size: self.payload.len(), limit: policy.max_payload });
        }
        if !is_known_schema(&self.schema) {
            return Err(EnvelopeError::UnknownSchema(self.schema));
        }
        if Address::from_public_key(&self.sender_key) != self.sender {
            return Err(EnvelopeError::SenderKeyMismatch);
        }
        self.sender_key.verify(&self.signed_bytes(), &self.signature).map_err(EnvelopeError::BadSignature)?;
        self.check_times(policy, now_ms)
    }

    /// The checks that need no signature: size, schema, sender key, clock and lifetime.
    /// For envelopes whose sender is authenticated otherwise (a session binding).
    pub fn verify_unsigned(
        &self,
        policy: &VerifyPolicy,
        now_ms: u64,
        is_known_schema: impl Fn(&SchemaDigest) -> bool,
    ) -> Result<(), EnvelopeError> {
        if self.payload.len() > policy.max_payload {
            return Err(EnvelopeError::PayloadTooLarge { size: self.payload.len(), limit: policy.max_payload });
        }
        if !is_known_schema(&self.schema) {
            return Err(EnvelopeError::UnknownSchema(self.schema));
        }
        if Address::from_public_key(&self.sender_key) != self.sender {
            return Err(EnvelopeError::SenderKeyMismatch);
        }
        self.check_times(policy, now_ms)
    }

    fn check_times(&self, policy: &VerifyPolicy, now_ms: u64) -> Result<(), EnvelopeError> {
        if now_ms > self.expires_ms {
            return Err(EnvelopeError::Expired { expires_ms: self.expires_ms, now_ms });
        }
        if self.timestamp_ms > now_ms.saturating_add(policy.max_clock_skew_ms) {
            return Err(EnvelopeError::FromTheFuture { timestamp_ms: self.timestamp_ms, now_ms });
        }
        let lifetime_ms = self.expires_ms.saturating_sub(self.timestamp_ms);
        if lifetime_ms > policy.max_lifetime_ms {
            return Err(EnvelopeError::LifetimeTooLong { lifetime_ms, max_ms: policy.max_lifetime_ms });
        }
        Ok(())
    }

    /// Decodes the payload as `M`. Fails if the schema is not `M`'s or the JSON does not fit.
    pub fn open<M: Message>(&self) -> Result<M, EnvelopeError> {
        if self.schema != M::digest() {
            return Err(EnvelopeError::UnknownSchema(self.schema));
        }
        serde_json::from_slice(&self.payload)
            .map_err(|e| EnvelopeError::Payload { type_name: M::NAME, reason: e.to_string() })
    }
}

/// Milliseconds since the Unix epoch: by the system clock, or, on a thread where a
/// simulation ([`crate::sim::Sim`]) lives, by the simulated clock, so that envelope
/// timestamps, protocol deadlines and escrow deadlines follow simulated time there.
pub fn unix_now_ms() -> u64 {
    if let Some((_, started)) = SIMULATED_CLOCK.get() {
        return crate::sim::EPOCH_UNIX_MS.saturating_add(started.elapsed().as_millis() as u64);
    }
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

thread_local! {
    /// The simulation living on this thread (an id, and when its clock started). A
    /// simulation runs on a current-thread runtime, so every agent task it drives reads
    /// the clock on this thread.
    static SIMULATED_CLOCK: std::cell::Cell<Option<(u64, tokio::time::Instant)>> = const { std::cell::Cell::new(None) };
}

/// Makes [`unix_now_ms`] follow a simulation's clock on this thread, until
/// [`unfollow_simulated_clock`] is called with the same `id`.
pub(crate) fn follow_simulated_clock(id: u64, started: tokio::time::Instant) {
    SIMULATED_CLOCK.set(Some((id, started)));
}

/// Gives this thread the system clock back, if simulation `id` is the one it follows.
pub(crate) fn unfollow_simulated_clock(id: u64) {
    if SIMULATED_CLOCK.get().is_some_and(|(current, _)| current == id) {
        SIMULATED_CLOCK.set(None);
    }
}

/// A fresh nonce: larger than every nonce this process handed out before, and, being
/// derived from the clock (microseconds, times 4096), larger than those of its earlier runs
/// too. Receivers rely on nonces increasing per sender to keep a bounded window of them
/// ([`ReplayGuard`]).
pub fn next_nonce() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let micros = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
    let from_clock = u64::try_from(micros).unwrap_or(u64::MAX).min(u64::MAX >> 12) << 12;
    let next = |last: u64| from_clock.max(last.saturating_add(1));
    match LAST.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(next(last))) {
        Ok(last) | Err(last) => next(last),
    }
}

#[cfg(test)]
mod tests;
