//! # almanac: how Agora agents find each other
//!
//! Agents publish signed, expiring [`Registration`]s: their address, the libp2p endpoints
//! of their node (with weights), the digests of the protocols they speak, and free-form
//! attributes. The almanac accepts a record only if its signature is valid, its sequence
//! number is higher than the stored one, and its time to live is within bounds; expired
//! records disappear from every query. Protocol manifests can be published and fetched by
//! digest.
//!
//! The same API runs embedded ([`Almanac`], in-process, the default for tests) or as a
//! server ([`service`] and the `almanac` binary) reached through a [`RemoteAlmanac`]. An
//! [`AlmanacResolver`] plugs either into the runtime's transport, caching what it
//! resolved for the records' lifetime so agents keep talking when the almanac goes down.
//!
//! ## What each backend offers
//!
//! [`Directory`] is what every backend offers; the rest is backend-specific, by design:
//!
//! | | [`Almanac`] (embedded) | [`RemoteAlmanac`] (server) | [`DhtAlmanac`] |
//! |---|---|---|---|
//! | `register`, `lookup` | yes | yes | yes (acknowledged once another node returns the record) |
//! | `query` | pages, any filter | pages, any filter | pages, a protocol is required |
//! | `sample` (by endpoint weight) | [`Almanac::sample`] | no: query a page and draw from it | no: same |
//! | `subscribe` (events) | [`Almanac::subscribe`] | no: poll `query` | no: poll `query` |
//!
//! Subscriptions need one node that sees every registration, which the DHT has not, and
//! over the network they would hold a stream per subscriber; polling a query page is the
//! documented equivalent for both.
//!
//! ```
//! use std::collections::BTreeMap;
//! use almanac::{Almanac, Config, Query, Registration, WeightedEndpoint};
//! use agent_core::{Identity, ProtocolDigest};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let almanac = Almanac::new(Config::default());
//! let alice = Identity::from_seed("alice");
//! let quotes = ProtocolDigest::from_bytes([7; 32]);
//! let now = agent_core::envelope::unix_now_ms();
//! let record = Registration::sign(
//!     &alice,
//!     "12D3KooWExample",
//!     vec![WeightedEndpoint { addr: "/ip4/127.0.0.1/tcp/4001".into(), weight: 1 }],
//!     vec![quotes],
//!     BTreeMap::from([("region".to_string(), "eu".to_string())]),
//!     1,
//!     now + 60_000,
//! );
//! let registered = almanac.register(record).await?;
//! assert_eq!(registered.expires_ms, now + 60_000);
//! let page = almanac.query(&Query::protocol(quotes).with_attribute("region", "eu"));
//! assert_eq!(page.records[0].address, alice.address());
//! # Ok(()) }
//! ```

pub mod dht;
mod query;
mod record;
pub mod registrar;
mod resolver;
pub mod service;
mod store;

pub use dht::DhtAlmanac;
pub use query::{Event, Page, Query, MAX_LIMIT};
pub use record::{Registration, WeightedEndpoint};
pub use registrar::{register_bureau, Registrar, RegistrarConfig};
pub use resolver::{AlmanacDiscovery, AlmanacResolver, Directory};
pub use service::RemoteAlmanac;
pub use store::{Almanac, Config};

use agent_core::Address;
use serde::{Deserialize, Serialize};

/// A stored registration's sequence and expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// The sequence number stored.
    pub sequence: u64,
    /// When the registration lapses (ms since the Unix epoch): re-register before then.
    pub expires_ms: u64,
}

/// Why the almanac refused or could not answer. Refusals leave stored records untouched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum AlmanacError {
    /// The signature or key does not match the record.
    #[error("bad registration signature: {0}")]
    BadSignature(String),
    /// An older (or equal) sequence than the stored one, with different contents: a
    /// replayed or out-of-date record.
    #[error("stale registration: sequence {offered} is not above the stored {stored}")]
    StaleSequence {
        /// The stored sequence.
        stored: u64,
        /// The offered one.
        offered: u64,
    },
    /// The time to live is outside the almanac's bounds (or already over).
    #[error("time to live of {ttl_ms} ms is outside {min_ms}..={max_ms} ms")]
    TtlOutOfBounds {
        /// The record's remaining lifetime.
        ttl_ms: u64,
        /// The shortest accepted.
        min_ms: u64,
        /// The longest accepted.
        max_ms: u64,
    },
    /// The record or manifest is oversized or does not parse.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The almanac holds as many records as it may.
    #[error("the almanac is full ({capacity} records)")]
    Full {
        /// Its capacity.
        capacity: usize,
    },
    /// The manifest was refused: the almanac holds as many as it may, or its publisher
    /// has published as many as one may (`per_publisher`).
    #[error("manifest refused: at most {limit} manifests{}", if *per_publisher { " per publisher" } else { "" })]
    ManifestLimit {
        /// The limit reached.
        limit: usize,
        /// Whether it is the publisher's quota (otherwise the almanac's total).
        per_publisher: bool,
    },
    /// No registration for this address.
    #[error("{0} is not registered")]
    NotRegistered(Address),
    /// The registration lapsed.
    #[error("the registration expired at {at_ms} ms")]
    Expired {
        /// When.
        at_ms: u64,
    },
    /// The almanac could not be reached or did not answer.
    #[error("almanac unavailable: {0}")]
    Unavailable(String),
    /// The almanac's storage failed. A registration that gets this answer may still be
    /// stored, and is visible to lookups until the almanac restarts: registering the same
    /// record again is harmless and tells which.
    #[error("almanac storage failed: {0}")]
    Storage(String),
}
