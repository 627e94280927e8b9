//! A resolver never trusts a directory to hand out endpoints: only a record that is the
//! asked agent's own, signed by its key, is used.

use std::collections::BTreeMap;
use std::sync::Arc;

use agent_core::transport::Resolver;
use agent_core::{Address, Identity, Unroutable};
use almanac::{AlmanacError, AlmanacResolver, Directory, Page, Query, Registered, Registration, WeightedEndpoint};

/// A directory that answers every lookup with the record it was given.
struct Lying(Registration);

#[async_trait::async_trait]
impl Directory for Lying {
    async fn register(&self, _record: Registration) -> Result<Registered, AlmanacError> {
        Err(AlmanacError::Malformed("read-only".into()))
    }
    async fn lookup(&self, _address: &Address) -> Result<Registration, AlmanacError> {
        Ok(self.0.clone())
    }
    async fn query(&self, _query: Query) -> Result<Page, AlmanacError> {
        Err(AlmanacError::Malformed("read-only".into()))
    }
}

fn record_of(identity: &Identity, addr: &str) -> Registration {
    let peer = libp2p::PeerId::random().to_string();
    let endpoints = vec![WeightedEndpoint { addr: addr.into(), weight: 1 }];
    let expires = agent_core::envelope::unix_now_ms() + 600_000;
    Registration::sign(identity, peer, endpoints, Vec::new(), BTreeMap::new(), 1, expires)
}

#[tokio::test]
async fn a_tampered_or_foreign_record_is_not_used() {
    let victim = Identity::from_seed("resolver victim");
    let genuine = record_of(&victim, "/ip4/127.0.0.1/tcp/4001");
    let resolved = AlmanacResolver::new(Arc::new(Lying(genuine.clone()))).resolve(&victim.address()).await;
    assert!(resolved.is_ok(), "{resolved:?}");

    // The directory swapped in its own endpoint: the signature no longer covers it.
    let mut tampered = genuine.clone();
    tampered.endpoints[0].addr = "/ip4/127.0.0.1/tcp/6666".into();
    let resolved = AlmanacResolver::new(Arc::new(Lying(tampered))).resolve(&victim.address()).await;
    assert!(matches!(resolved, Err(Unroutable::BadRecord(_))), "{resolved:?}");

    // A validly signed record, but of another agent.
    let mallory = record_of(&Identity::from_seed("mallory"), "/ip4/127.0.0.1/tcp/6666");
    let resolver = AlmanacResolver::new(Arc::new(Lying(mallory)));
    let resolved = resolver.resolve(&victim.address()).await;
    assert!(matches!(resolved, Err(Unroutable::BadRecord(_))), "{resolved:?}");
    let speaking = resolver.resolve_speaking(&victim.address(), &agent_core::ProtocolDigest::from_bytes([1; 32])).await;
    assert!(matches!(speaking, Err(Unroutable::BadRecord(_))), "{speaking:?}");
}

/// A directory of signed records that can go down.
struct Outage {
    records: std::collections::HashMap<Address, Registration>,
    down: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Directory for Outage {
    async fn register(&self, _record: Registration) -> Result<Registered, AlmanacError> {
        Err(AlmanacError::Malformed("read-only".into()))
    }
    async fn lookup(&self, address: &Address) -> Result<Registration, AlmanacError> {
        if self.down.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(AlmanacError::Unavailable("down".into()));
        }
        self.records.get(address).cloned().ok_or(AlmanacError::NotRegistered(*address))
    }
    async fn query(&self, _query: Query) -> Result<Page, AlmanacError> {
        Err(AlmanacError::Malformed("read-only".into()))
    }
}

#[tokio::test]
async fn the_cache_holds_at_most_its_capacity() {
    let agents: Vec<Identity> = (0..100).map(|i| Identity::from_seed(&format!("cached agent {i}"))).collect();
    let records = agents.iter().map(|a| (a.address(), record_of(a, "/ip4/127.0.0.1/tcp/4001"))).collect();
    let directory = Arc::new(Outage { records, down: Default::default() });
    let resolver = AlmanacResolver::new(directory.clone()).with_cache_capacity(8);
    for agent in &agents {
        resolver.resolve(&agent.address()).await.unwrap();
    }
    // While the directory is down, only what the cache kept still resolves.
    directory.down.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut kept = 0;
    for agent in &agents {
        kept += usize::from(resolver.resolve(&agent.address()).await.is_ok());
    }
    assert!((1..=8).contains(&kept), "{kept} of 100 endpoints cached, at most 8");
}
