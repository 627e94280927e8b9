//! Registrations: what an agent publishes about itself, signed by its own key.

use std::collections::BTreeMap;

use agent_core::{Address, Identity, ProtocolDigest, PublicKey};
use serde::{Deserialize, Serialize};

/// An address an agent can be reached at, with a weight for load-spreading samples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedEndpoint {
    /// A libp2p multiaddr of the hosting node.
    pub addr: String,
    /// Relative weight (0 = never sampled).
    pub weight: u32,
}

/// A signed, expiring registration of one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The agent.
    pub address: Address,
    /// Its public key; `address` must be its address.
    pub key: PublicKey,
    /// The libp2p peer id of the node hosting it (empty for an agent reachable nowhere).
    pub peer_id: String,
    /// Where the node listens.
    pub endpoints: Vec<WeightedEndpoint>,
    /// The protocols the agent speaks.
    pub protocols: Vec<ProtocolDigest>,
    /// Free-form attributes (`service=flight-quotes`, `region=eu`).
    pub attributes: BTreeMap<String, String>,
    /// Higher than every earlier registration of this agent.
    pub sequence: u64,
    /// When the registration lapses (ms since the Unix epoch).
    pub expires_ms: u64,
    /// ed25519 by `key` over [`Registration::signing_bytes`].
    #[serde(with = "agent_core::identity::signature_hex")]
    pub signature: [u8; 64],
}

impl Registration {
    /// A registration of `identity`, signed.
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        identity: &Identity,
        peer_id: impl Into<String>,
        endpoints: Vec<WeightedEndpoint>,
        protocols: Vec<ProtocolDigest>,
        attributes: BTreeMap<String, String>,
        sequence: u64,
        expires_ms: u64,
    ) -> Registration {
        let mut record = Registration {
            address: identity.address(),
            key: identity.public_key(),
            peer_id: peer_id.into(),
            endpoints,
            protocols,
            attributes,
            sequence,
            expires_ms,
            signature: [0; 64],
        };
        record.signature = identity.sign(&record.signing_bytes());
        record
    }

    /// Checks that `key` is the agent's and signed every field. Anything that hands out
    /// registrations it did not make (a remote almanac, the DHT, a cache) is trusted only
    /// after this.
    pub fn verify(&self) -> Result<(), crate::AlmanacError> {
        if Address::from_public_key(&self.key) != self.address {
            return Err(crate::AlmanacError::BadSignature("the address does not belong to the key".into()));
        }
        self.key
            .verify(&self.signing_bytes(), &self.signature)
            .map_err(|e| crate::AlmanacError::BadSignature(e.to_string()))
    }

    /// The bytes the signature covers: a domain tag, then the JSON of every other field
    /// (deterministic: fields in declaration order, attributes sorted).
    pub fn signing_bytes(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Unsigned<'a> {
            address: &'a Address,
            key: &'a PublicKey,
            peer_id: &'a str,
            endpoints: &'a [WeightedEndpoint],
            protocols: &'a [ProtocolDigest],
            attributes: &'a BTreeMap<String, String>,
            sequence: u64,
            expires_ms: u64,
        }
        let unsigned = Unsigned {
            address: &self.address,
            key: &self.key,
            peer_id: &self.peer_id,
            endpoints: &self.endpoints,
            protocols: &self.protocols,
            attributes: &self.attributes,
            sequence: self.sequence,
            expires_ms: self.expires_ms,
        };
        let mut out = b"agora.almanac.record.v1\n".to_vec();
        // Serialising plain strings, numbers and maps cannot fail.
        out.extend(serde_json::to_vec(&unsigned).unwrap_or_default());
        out
    }
}
