//! Queries over registrations, their pages, and subscription events.

use agent_core::{Address, ProtocolDigest};
use serde::{Deserialize, Serialize};

use crate::record::Registration;

/// The largest page a query returns.
pub const MAX_LIMIT: usize = 1000;

/// Which registrations to return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// Only agents speaking this protocol.
    pub protocol: Option<ProtocolDigest>,
    /// Only agents with all these attributes.
    pub attributes: Vec<(String, String)>,
    /// Resume after this address (the previous page's `next`).
    pub after: Option<Address>,
    /// Page size (1 to [`MAX_LIMIT`]).
    pub limit: usize,
}

impl Default for Query {
    fn default() -> Self {
        Query { protocol: None, attributes: Vec::new(), after: None, limit: 100 }
    }
}

impl Query {
    /// Agents speaking `protocol`.
    pub fn protocol(protocol: ProtocolDigest) -> Query {
        Query { protocol: Some(protocol), ..Query::default() }
    }

    /// Adds an attribute filter.
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Query {
        self.attributes.push((key.into(), value.into()));
        self
    }

    /// Sets the page size.
    pub fn with_limit(mut self, limit: usize) -> Query {
        self.limit = limit;
        self
    }

    /// Continues after `address`.
    pub fn after(mut self, address: Address) -> Query {
        self.after = Some(address);
        self
    }

    /// Whether `record` matches (ignoring paging and expiry).
    pub fn matches(&self, record: &Registration) -> bool {
        self.protocol.is_none_or(|p| record.protocols.contains(&p))
            && self.attributes.iter().all(|(k, v)| record.attributes.get(k) == Some(v))
    }
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// The registrations, in address order.
    pub records: Vec<Registration>,
    /// Where the next page starts, if there is one.
    pub next: Option<Address>,
}

/// What a subscriber is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A matching agent registered.
    Registered(Registration),
    /// A matching agent registered again with new contents.
    Changed(Registration),
    /// A matching agent's registration expired.
    Expired {
        /// The agent.
        address: Address,
        /// When it expired.
        at_ms: u64,
    },
}
