//! Helpers shared by the example binaries.

use sha2::{Digest, Sha256};

/// A libp2p identity derived from a secret phrase, so a node keeps its peer id across
/// restarts.
pub fn node_keypair(seed: &str) -> anyhow::Result<libp2p::identity::Keypair> {
    let mut secret: [u8; 32] =
        Sha256::new().chain_update(b"agora.node.v1").chain_update(seed.as_bytes()).finalize().into();
    Ok(libp2p::identity::Keypair::ed25519_from_bytes(&mut secret)?)
}

/// The request of the echo node.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, agent_core::Message)]
pub struct Ping(pub u64);

/// The echo node's reply.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, agent_core::Message)]
pub struct Pong(pub u64);
