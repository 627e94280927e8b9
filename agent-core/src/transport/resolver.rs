//! Resolving an agent address to the libp2p peer and addresses that host it.

use std::collections::HashMap;
use std::fmt;

use libp2p::{Multiaddr, PeerId};
use parking_lot::RwLock;

use crate::error::Unroutable;
use crate::identity::Address;

/// Where an agent can be reached: its node's peer id and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The hosting node.
    pub peer_id: PeerId,
    /// Its addresses (TCP and/or QUIC multiaddrs).
    pub addrs: Vec<Multiaddr>,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addrs.first() {
            Some(addr) => write!(f, "{addr}/p2p/{}", self.peer_id),
            None => write!(f, "/p2p/{}", self.peer_id),
        }
    }
}

/// Maps agent addresses to endpoints. Errors name the cause (see [`Unroutable`]).
#[async_trait::async_trait]
pub trait Resolver: Send + Sync + 'static {
    /// The endpoint of `address`.
    async fn resolve(&self, address: &Address) -> Result<Endpoint, Unroutable>;
}

/// A fixed map, for tests and small deployments.
#[derive(Debug, Default)]
pub struct StaticResolver {
    map: RwLock<HashMap<Address, Endpoint>>,
}

impl StaticResolver {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes `address` to `endpoint` (replacing any earlier entry).
    pub fn insert(&self, address: Address, endpoint: Endpoint) {
        self.map.write().insert(address, endpoint);
    }
}

#[async_trait::async_trait]
impl Resolver for StaticResolver {
    async fn resolve(&self, address: &Address) -> Result<Endpoint, Unroutable> {
        match self.map.read().get(address) {
            None => Err(Unroutable::UnknownAddress),
            Some(endpoint) if endpoint.addrs.is_empty() => Err(Unroutable::NoEndpoint),
            Some(endpoint) => Ok(endpoint.clone()),
        }
    }
}
