//! Session bindings: an agent's signed statement that, until a deadline, envelopes from it
//! arrive over connections of one libp2p peer (whose identity noise authenticates).
//!
//! The receiver checks the binding once (signature, agent key, that the peer id is the
//! connection's, expiry) and then accepts that agent's envelopes on that stream without a
//! per-envelope signature. A binding is useless from another peer id, for another agent,
//! or after it expires.

use libp2p::PeerId;

use crate::identity::{Address, Identity, PublicKey};

/// A signed binding of `agent` to the libp2p peer `peer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The agent.
    pub agent: Address,
    /// The agent's public key.
    pub agent_key: PublicKey,
    /// Until when (ms since the Unix epoch) the binding holds.
    pub expires_ms: u64,
    /// Signature by the agent over the domain, agent, key, peer id and expiry.
    pub signature: [u8; 64],
}

/// Why a binding was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// The agent address does not belong to the key.
    #[error("binding agent address does not belong to its key")]
    KeyMismatch,
    /// The signature does not cover this peer id (a binding made for another peer), or
    /// was not made by the agent.
    #[error("binding signature does not verify for this peer")]
    BadSignature,
    /// The binding's deadline has passed.
    #[error("binding expired at {expires_ms} ms")]
    Expired {
        /// Its expiry.
        expires_ms: u64,
    },
}

fn signed_bytes(agent: &Address, key: &PublicKey, peer: &PeerId, expires_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"agora.binding.v1");
    out.extend_from_slice(agent.as_bytes());
    out.extend_from_slice(&key.0);
    out.extend_from_slice(&peer.to_bytes());
    out.extend_from_slice(&expires_ms.to_be_bytes());
    out
}

impl Binding {
    /// Binds `identity` to `peer` (the sending node's own peer id) until `expires_ms`.
    pub fn sign(identity: &Identity, peer: &PeerId, expires_ms: u64) -> Binding {
        let agent = identity.address();
        let agent_key = identity.public_key();
        let signature = identity.sign(&signed_bytes(&agent, &agent_key, peer, expires_ms));
        Binding { agent, agent_key, expires_ms, signature }
    }

    /// Checks the binding for a stream from `peer` at `now_ms`.
    pub fn verify(&self, peer: &PeerId, now_ms: u64) -> Result<(), BindingError> {
        if Address::from_public_key(&self.agent_key) != self.agent {
            return Err(BindingError::KeyMismatch);
        }
        self.agent_key
            .verify(&signed_bytes(&self.agent, &self.agent_key, peer, self.expires_ms), &self.signature)
            .map_err(|_| BindingError::BadSignature)?;
        if now_ms > self.expires_ms {
            return Err(BindingError::Expired { expires_ms: self.expires_ms });
        }
        Ok(())
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.agent.as_bytes());
        out.extend_from_slice(&self.agent_key.0);
        out.extend_from_slice(&self.expires_ms.to_be_bytes());
        out.extend_from_slice(&self.signature);
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Binding> {
        if bytes.len() != 32 + 32 + 8 + 64 {
            return None;
        }
        Some(Binding {
            agent: Address::from_bytes(bytes[..32].try_into().ok()?),
            agent_key: PublicKey(bytes[32..64].try_into().ok()?),
            expires_ms: u64::from_be_bytes(bytes[64..72].try_into().ok()?),
            signature: bytes[72..].try_into().ok()?,
        })
    }
}
