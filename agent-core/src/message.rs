//! Typed messages and their schema digests.
//!
//! Declare a message as a plain struct or enum and derive [`Message`]:
//!
//! ```
//! use agent_core::Message;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize, Message)]
//! struct Quote {
//!     flight: String,
//!     price_cents: u64,
//! }
//!
//! assert_eq!(Quote::SCHEMA, "Quote{flight:String,price_cents:u64}");
//! println!("{}", Quote::DIGEST); // 64 hex digits, fixed at compile time
//! ```
//!
//! The digest is sha256 over a canonical schema: the type's name and its fields' names and
//! types, sorted by name. Two binaries that never shared code agree on it; renaming or
//! retyping a field changes it; reordering fields or editing doc comments does not. The
//! receiving side routes by digest, so a peer that changed a type is refused with
//! [`EnvelopeError::UnknownSchema`](crate::EnvelopeError::UnknownSchema) instead of being
//! misread.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A message type an agent can send and handle. Derive it with `#[derive(Message)]`.
pub trait Message: Serialize + DeserializeOwned + Send + 'static {
    /// The type's name in the schema.
    const NAME: &'static str;
    /// The canonical schema the digest is computed from.
    const SCHEMA: &'static str;
    /// sha256 of the canonical schema.
    const DIGEST: SchemaDigest;
}

/// The sha256 digest of a message type's canonical schema: the type's identity on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SchemaDigest([u8; 32]);

impl SchemaDigest {
    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        SchemaDigest(bytes)
    }

    /// The raw digest bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for SchemaDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for SchemaDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SchemaDigest({})", &hex::encode(self.0)[..16])
    }
}

/// A digest that is (de)serialised as 64 hex digits, for manifests and records.
pub(crate) mod hex_digest {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(text.as_ref(), &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

impl serde::Serialize for SchemaDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        hex_digest::serialize(&self.0, s)
    }
}

impl<'de> serde::Deserialize<'de> for SchemaDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        hex_digest::deserialize(d).map(SchemaDigest)
    }
}

/// sha256 of a protocol's canonical manifest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProtocolDigest([u8; 32]);

impl ProtocolDigest {
    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        ProtocolDigest(bytes)
    }

    /// The raw digest bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ProtocolDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ProtocolDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProtocolDigest({})", &hex::encode(self.0)[..16])
    }
}

impl Serialize for ProtocolDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        hex_digest::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for ProtocolDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        hex_digest::deserialize(d).map(ProtocolDigest)
    }
}
