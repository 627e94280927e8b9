//! Resolving agent addresses through an almanac, with a cache that outlives outages.

use std::collections::HashMap;
use std::sync::Arc;

use agent_core::transport::{Endpoint, Resolver};
use agent_core::{Address, Discovery, ProtocolDigest, Unroutable};
use parking_lot::Mutex;

use crate::record::Registration;
use crate::{Almanac, AlmanacError, Page, Query, Registered, RemoteAlmanac};

/// An almanac, embedded or remote: the one API the runtime's resolver, discovery and
/// registrar use.
#[async_trait::async_trait]
pub trait Directory: Send + Sync + 'static {
    /// Stores a registration.
    async fn register(&self, record: Registration) -> Result<Registered, AlmanacError>;
    /// The registration of `address`.
    async fn lookup(&self, address: &Address) -> Result<Registration, AlmanacError>;
    /// A page of registrations.
    async fn query(&self, query: Query) -> Result<Page, AlmanacError>;
}

#[async_trait::async_trait]
impl Directory for Almanac {
    async fn register(&self, record: Registration) -> Result<Registered, AlmanacError> {
        Almanac::register(self, record).await
    }

    async fn lookup(&self, address: &Address) -> Result<Registration, AlmanacError> {
        Almanac::lookup(self, address)
    }

    async fn query(&self, query: Query) -> Result<Page, AlmanacError> {
        Ok(Almanac::query(self, &query))
    }
}

#[async_trait::async_trait]
impl Directory for RemoteAlmanac {
    async fn register(&self, record: Registration) -> Result<Registered, AlmanacError> {
        RemoteAlmanac::register(self, record).await
    }

    async fn lookup(&self, address: &Address) -> Result<Registration, AlmanacError> {
        RemoteAlmanac::lookup(self, address).await
    }

    async fn query(&self, query: Query) -> Result<Page, AlmanacError> {
        RemoteAlmanac::query(self, query).await
    }
}

/// [`Discovery`] through an almanac, for broadcasts to agents in other processes.
pub struct AlmanacDiscovery(pub Arc<dyn Directory>);

#[async_trait::async_trait]
impl Discovery for AlmanacDiscovery {
    async fn agents_speaking(&self, protocol: &ProtocolDigest, limit: usize) -> Result<Vec<Address>, String> {
        let mut found = Vec::new();
        let mut query = Query::protocol(*protocol).with_limit(limit.min(crate::MAX_LIMIT));
        while found.len() < limit {
            let page = self.0.query(query.clone()).await.map_err(|e| e.to_string())?;
            found.extend(page.records.iter().map(|r| r.address));
            match page.next {
                Some(next) => query = query.after(next),
                None => break,
            }
        }
        found.truncate(limit);
        Ok(found)
    }
}

/// A [`Resolver`] backed by an almanac. Answers from its cache while a record is within
/// its lifetime, so agents that found each other keep talking if the almanac goes down.
///
/// The cache holds at most [`with_cache_capacity`](Self::with_cache_capacity) endpoints:
/// when full, expired ones leave first, then arbitrary ones (an eighth of the capacity at
/// once, so that making room is not a scan per lookup). An agent whose endpoint left is
/// looked up again on its next message.
pub struct AlmanacResolver {
    directory: Arc<dyn Directory>,
    cache: Mutex<HashMap<Address, (Endpoint, u64)>>,
    capacity: usize,
    clock: fn() -> u64,
}

impl AlmanacResolver {
    /// The default of [`with_cache_capacity`](Self::with_cache_capacity).
    pub const DEFAULT_CACHE_CAPACITY: usize = 100_000;

    /// A resolver asking `directory`.
    pub fn new(directory: Arc<dyn Directory>) -> Self {
        AlmanacResolver {
            directory,
            cache: Mutex::new(HashMap::new()),
            capacity: Self::DEFAULT_CACHE_CAPACITY,
            clock: agent_core::envelope::unix_now_ms,
        }
    }

    /// Endpoints cached, at most (default [`DEFAULT_CACHE_CAPACITY`](Self::DEFAULT_CACHE_CAPACITY),
    /// 100,000).
    pub fn with_cache_capacity(mut self, endpoints: usize) -> Self {
        self.capacity = endpoints.max(1);
        self
    }

    /// Caches `endpoint` for `address` until `expires`, making room first if full.
    fn remember(&self, address: Address, endpoint: Endpoint, expires: u64, now: u64) {
        let mut cache = self.cache.lock();
        if cache.len() >= self.capacity && !cache.contains_key(&address) {
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= self.capacity {
                let keep = self.capacity - self.capacity.div_ceil(8);
                let evicted: Vec<Address> = cache.keys().take(cache.len() - keep).copied().collect();
                for address in evicted {
                    cache.remove(&address);
                }
            }
        }
        cache.insert(address, (endpoint, expires));
    }
}

impl AlmanacResolver {
    /// Resolves `address` for a conversation in `protocol`: fails with
    /// [`Unroutable::ProtocolMismatch`] if the agent's registration does not list it.
    pub async fn resolve_speaking(&self, address: &Address, protocol: &ProtocolDigest) -> Result<Endpoint, Unroutable> {
        match self.directory.lookup(address).await.and_then(|record| trusted(address, record)) {
            Ok(record) if !record.protocols.contains(protocol) => {
                Err(Unroutable::ProtocolMismatch { protocol: *protocol })
            }
            Ok(record) => endpoint_of(&record),
            Err(err) => Err(unroutable(err)),
        }
    }
}

/// `record`, if it is the registration of `address`, signed by that agent's key: a
/// directory (remote, or the DHT's peers) is never trusted to hand out endpoints itself.
fn trusted(address: &Address, record: Registration) -> Result<Registration, AlmanacError> {
    if record.address != *address {
        return Err(AlmanacError::BadSignature(format!("asked for {address}, got the record of {}", record.address)));
    }
    record.verify()?;
    // A directory may hand out an old record of the agent's own (a rollback): an expired
    // one is never used.
    let now = agent_core::envelope::unix_now_ms();
    if record.expires_ms <= now {
        return Err(AlmanacError::Expired { at_ms: record.expires_ms });
    }
    Ok(record)
}

fn unroutable(err: AlmanacError) -> Unroutable {
    match err {
        AlmanacError::BadSignature(reason) => Unroutable::BadRecord(reason),
        AlmanacError::NotRegistered(_) => Unroutable::UnknownAddress,
        AlmanacError::Expired { at_ms } => Unroutable::Expired { at_ms },
        other => Unroutable::ResolverUnavailable(other.to_string()),
    }
}

fn endpoint_of(record: &Registration) -> Result<Endpoint, Unroutable> {
    let peer_id = record.peer_id.parse().map_err(|_| Unroutable::NoEndpoint)?;
    let mut endpoints: Vec<_> = record.endpoints.iter().filter(|e| e.weight > 0).collect();
    endpoints.sort_by_key(|e| std::cmp::Reverse(e.weight));
    let addrs: Vec<_> = endpoints.iter().filter_map(|e| e.addr.parse().ok()).collect();
    if addrs.is_empty() {
        return Err(Unroutable::NoEndpoint);
    }
    Ok(Endpoint { peer_id, addrs })
}

#[async_trait::async_trait]
impl Resolver for AlmanacResolver {
    async fn resolve(&self, address: &Address) -> Result<Endpoint, Unroutable> {
        let now = (self.clock)();
        if let Some((endpoint, expires)) = self.cache.lock().get(address) {
            if *expires > now {
                return Ok(endpoint.clone());
            }
        }
        match self.directory.lookup(address).await.and_then(|record| trusted(address, record)) {
            Ok(record) => {
                let endpoint = endpoint_of(&record)?;
                self.remember(*address, endpoint.clone(), record.expires_ms, now);
                Ok(endpoint)
            }
            Err(err) => Err(unroutable(err)),
        }
    }
}
