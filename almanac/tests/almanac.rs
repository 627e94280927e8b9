//! Registration checks, ordering, expiry, queries, sampling, subscriptions, manifests,
//! the server over libp2p, and resolution that outlives the server.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_core::transport::Resolver;
use agent_core::{Identity, Protocol, ProtocolDigest, Unroutable};
use almanac::{
    Almanac, AlmanacError, AlmanacResolver, Config, Event, Query, Registration, RemoteAlmanac, WeightedEndpoint,
};

const T0: u64 = 1_790_000_000_000;

fn clocked() -> (Almanac, Arc<AtomicU64>) {
    let clock = Arc::new(AtomicU64::new(T0));
    let read = clock.clone();
    (Almanac::new(Config::default().with_clock(move || read.load(Ordering::SeqCst))), clock)
}

fn record(
    seed: &str,
    protocols: &[ProtocolDigest],
    attrs: &[(&str, &str)],
    sequence: u64,
    expires_ms: u64,
) -> Registration {
    let peer = libp2p::identity::Keypair::ed25519_from_bytes([7u8; 32]).unwrap().public().to_peer_id();
    Registration::sign(
        &Identity::from_seed(seed),
        peer.to_string(),
        vec![WeightedEndpoint { addr: "/ip4/127.0.0.1/tcp/4001".into(), weight: 1 }],
        protocols.to_vec(),
        attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        sequence,
        expires_ms,
    )
}

const QUOTES: ProtocolDigest = ProtocolDigest::from_bytes([1; 32]);
const AUCTION: ProtocolDigest = ProtocolDigest::from_bytes([2; 32]);

#[tokio::test]
async fn signatures_sequences_and_ttls_are_checked_and_refusals_change_nothing() {
    let (almanac, _) = clocked();
    let good = record("alice", &[QUOTES], &[], 5, T0 + 60_000);
    let registered = almanac.register(good.clone()).await.unwrap();
    assert_eq!((registered.sequence, registered.expires_ms), (5, T0 + 60_000));
    assert_eq!(almanac.register(good.clone()).await.unwrap(), registered, "registering again is harmless");

    let mut forged = record("alice", &[AUCTION], &[], 6, T0 + 60_000);
    forged.attributes.insert("evil".into(), "yes".into());
    assert!(matches!(almanac.register(forged).await, Err(AlmanacError::BadSignature(_))));
    let mut stolen = record("mallory", &[AUCTION], &[], 9, T0 + 60_000);
    stolen.address = good.address;
    assert!(matches!(almanac.register(stolen).await, Err(AlmanacError::BadSignature(_))));
    let old = record("alice", &[AUCTION], &[], 4, T0 + 60_000);
    assert_eq!(almanac.register(old).await, Err(AlmanacError::StaleSequence { stored: 5, offered: 4 }));
    assert!(matches!(
        almanac.register(record("alice", &[AUCTION], &[], 7, T0 + 100)).await,
        Err(AlmanacError::TtlOutOfBounds { .. })
    ));
    assert!(matches!(
        almanac.register(record("alice", &[AUCTION], &[], 7, T0 + 48 * 3_600_000)).await,
        Err(AlmanacError::TtlOutOfBounds { .. })
    ));
    let huge = record("alice", &[AUCTION], &[("blob", &"x".repeat(20_000))], 8, T0 + 60_000);
    assert!(matches!(almanac.register(huge).await, Err(AlmanacError::Malformed(_))));
    assert_eq!(almanac.lookup(&good.address).unwrap(), good, "the stored record is untouched");

    // A newer sequence replaces it, and moves it between protocol indexes.
    almanac.register(record("alice", &[AUCTION], &[], 6, T0 + 60_000)).await.unwrap();
    assert!(almanac.query(&Query::protocol(QUOTES)).records.is_empty());
    assert_eq!(almanac.query(&Query::protocol(AUCTION)).records.len(), 1);
}

#[tokio::test]
async fn expired_records_vanish_from_every_query_and_lookups_say_when() {
    let (almanac, clock) = clocked();
    let alice = record("alice", &[QUOTES], &[("region", "eu")], 1, T0 + 10_000);
    almanac.register(alice.clone()).await.unwrap();
    almanac.register(record("bob", &[QUOTES], &[("region", "eu")], 1, T0 + 60_000)).await.unwrap();
    clock.store(T0 + 10_001, Ordering::SeqCst);
    assert_eq!(almanac.lookup(&alice.address), Err(AlmanacError::Expired { at_ms: T0 + 10_000 }));
    assert_eq!(almanac.query(&Query::protocol(QUOTES)).records.len(), 1);
    assert_eq!(almanac.query(&Query::default().with_attribute("region", "eu")).records.len(), 1);
    assert_eq!(almanac.sample(&QUOTES, 5).len(), 1);
    almanac.purge_expired();
    assert_eq!(
        almanac.lookup(&alice.address),
        Err(AlmanacError::Expired { at_ms: T0 + 10_000 }),
        "still named after purging"
    );
    let nobody = Identity::from_seed("nobody").address();
    assert_eq!(almanac.lookup(&nobody), Err(AlmanacError::NotRegistered(nobody)));
}

#[tokio::test]
async fn queries_filter_page_and_sample_by_weight() {
    let (almanac, _) = clocked();
    for i in 0..25 {
        let region = if i % 2 == 0 { "eu" } else { "us" };
        almanac
            .register(record(
                &format!("agent {i}"),
                &[QUOTES],
                &[("region", region), ("service", "flights")],
                1,
                T0 + 60_000,
            ))
            .await
            .unwrap();
    }
    almanac.register(record("auctioneer", &[AUCTION], &[("region", "eu")], 1, T0 + 60_000)).await.unwrap();
    // Paging through every quotes agent, 10 at a time.
    let mut seen = Vec::new();
    let mut query = Query::protocol(QUOTES).with_limit(10);
    loop {
        let page = almanac.query(&query);
        seen.extend(page.records.iter().map(|r| r.address));
        match page.next {
            Some(next) => query = query.after(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "address order, no repeats");
    let eu_quotes = almanac.query(&Query::protocol(QUOTES).with_attribute("region", "eu").with_limit(1000));
    assert_eq!(eu_quotes.records.len(), 13);
    let eu_all = almanac.query(&Query::default().with_attribute("region", "eu").with_limit(1000));
    assert_eq!(eu_all.records.len(), 14);

    // Weighted sampling: an agent with weight 9 is drawn far more often than one with 1.
    let (weighted, _) = clocked();
    let mut heavy = record("heavy", &[AUCTION], &[], 1, T0 + 60_000);
    heavy.endpoints[0].weight = 9;
    let heavy = Registration::sign(
        &Identity::from_seed("heavy"),
        heavy.peer_id.clone(),
        heavy.endpoints.clone(),
        vec![AUCTION],
        BTreeMap::new(),
        1,
        T0 + 60_000,
    );
    weighted.register(heavy.clone()).await.unwrap();
    weighted.register(record("light", &[AUCTION], &[], 1, T0 + 60_000)).await.unwrap();
    let heavy_first = (0..2000).filter(|_| weighted.sample(&AUCTION, 1)[0].address == heavy.address).count();
    assert!((1600..=1990).contains(&heavy_first), "heavy drawn {heavy_first} of 2000 (expected about 1800)");
    assert_eq!(weighted.sample(&AUCTION, 5).len(), 2, "distinct agents");
}

#[tokio::test]
async fn subscribers_hear_of_registrations_changes_and_expiries() {
    let (almanac, clock) = clocked();
    let mut events = almanac.subscribe(Query::protocol(QUOTES));
    almanac.register(record("alice", &[QUOTES], &[], 1, T0 + 10_000)).await.unwrap();
    almanac.register(record("bob", &[AUCTION], &[], 1, T0 + 10_000)).await.unwrap();
    almanac.register(record("alice", &[QUOTES], &[("v", "2")], 2, T0 + 10_000)).await.unwrap();
    clock.store(T0 + 10_001, Ordering::SeqCst);
    almanac.purge_expired();
    let alice = Identity::from_seed("alice").address();
    assert!(matches!(events.recv().await.unwrap(), Event::Registered(r) if r.address == alice));
    assert!(matches!(events.recv().await.unwrap(), Event::Changed(r) if r.sequence == 2));
    assert_eq!(events.recv().await.unwrap(), Event::Expired { address: alice, at_ms: T0 + 10_000 });
    assert!(events.try_recv().is_err(), "bob speaks another protocol");
}

#[tokio::test]
async fn manifests_publish_and_fetch_by_digest() {
    #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, agent_core::Message)]
    struct Ask(u64);
    #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, agent_core::Message)]
    struct Tell(u64);
    let protocol = Protocol::new("ask", "1.0").replies::<Ask, Tell>();
    let (almanac, _) = clocked();
    let digest = almanac.publish_manifest(&protocol.manifest().to_json()).await.unwrap();
    assert_eq!(digest, protocol.digest());
    assert_eq!(almanac.manifest(&digest).unwrap(), protocol.manifest());
    assert!(matches!(almanac.publish_manifest("{ not json").await, Err(AlmanacError::Malformed(_))));
    let mut lying = protocol.manifest();
    lying.messages[0].schema = "Ask(u32)".into();
    assert!(matches!(
        almanac.publish_manifest(&serde_json::to_string(&lying).unwrap()).await,
        Err(AlmanacError::Malformed(_))
    ));
}

fn live_record(
    seed: &str,
    peer: &libp2p::PeerId,
    addr: &libp2p::Multiaddr,
    sequence: u64,
    ttl_ms: u64,
) -> Registration {
    Registration::sign(
        &Identity::from_seed(seed),
        peer.to_string(),
        vec![WeightedEndpoint { addr: addr.to_string(), weight: 1 }],
        vec![QUOTES],
        BTreeMap::new(),
        sequence,
        agent_core::envelope::unix_now_ms() + ttl_ms,
    )
}

#[tokio::test]
async fn the_server_answers_over_libp2p_and_resolution_survives_its_loss() {
    let dir = tempfile::tempdir().unwrap();
    let almanac = Almanac::open(dir.path(), Config::default()).unwrap();
    let server = almanac::service::serve(
        almanac,
        libp2p::identity::Keypair::generate_ed25519(),
        &["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
    )
    .await
    .unwrap();
    let remote = Arc::new(RemoteAlmanac::new(server.peer_id(), server.listen_addrs().to_vec()).unwrap());
    let node = libp2p::PeerId::random();
    let addr: libp2p::Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
    let alice = live_record("alice", &node, &addr, 1, 60_000);
    let registered = remote.register(alice.clone()).await.unwrap();
    assert_eq!(registered.expires_ms, alice.expires_ms);
    assert_eq!(remote.lookup(&alice.address).await.unwrap(), alice);
    assert_eq!(remote.query(Query::protocol(QUOTES)).await.unwrap().records.len(), 1);
    let stale = live_record("alice", &node, &addr, 1, 30_000);
    assert!(matches!(remote.register(stale).await, Err(AlmanacError::StaleSequence { .. })));

    let resolver = AlmanacResolver::new(remote.clone());
    let endpoint = resolver.resolve(&alice.address).await.unwrap();
    assert_eq!((endpoint.peer_id, endpoint.addrs.clone()), (node, vec![addr]));
    let nobody = Identity::from_seed("nobody").address();
    assert_eq!(resolver.resolve(&nobody).await, Err(Unroutable::UnknownAddress));
    assert_eq!(resolver.resolve_speaking(&alice.address, &QUOTES).await.unwrap(), endpoint);
    assert_eq!(
        resolver.resolve_speaking(&alice.address, &AUCTION).await,
        Err(Unroutable::ProtocolMismatch { protocol: AUCTION })
    );
    let mut no_endpoint = live_record("carol", &node, &"/ip4/127.0.0.1/tcp/1".parse().unwrap(), 1, 60_000);
    no_endpoint = Registration::sign(
        &Identity::from_seed("carol"),
        no_endpoint.peer_id,
        vec![],
        vec![],
        BTreeMap::new(),
        1,
        no_endpoint.expires_ms,
    );
    remote.register(no_endpoint.clone()).await.unwrap();
    assert_eq!(resolver.resolve(&no_endpoint.address).await, Err(Unroutable::NoEndpoint));

    // The server goes away: what was resolved stays resolvable within its lifetime, and
    // the rest fails naming the registry as the cause.
    drop(server);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(resolver.resolve(&alice.address).await.unwrap(), endpoint);
    assert!(matches!(
        resolver.resolve_speaking(&alice.address, &QUOTES).await,
        Err(Unroutable::ResolverUnavailable(_))
    ));
    let bob = Identity::from_seed("bob").address();
    assert!(matches!(resolver.resolve(&bob).await, Err(Unroutable::ResolverUnavailable(_))));
}

/// An agent's record expires; an older record of it, signed to live longer, cannot be
/// registered again while it could still be valid (expiry + the longest lifetime). A newer
/// sequence is welcome.
#[tokio::test]
async fn an_expired_agent_cannot_be_replaced_by_its_older_record() {
    let (almanac, clock) = clocked();
    let newer = record("phoenix", &[QUOTES], &[], 5, T0 + 10_000);
    let older = record("phoenix", &[QUOTES], &[], 4, T0 + 60_000);
    almanac.register(newer).await.unwrap();
    clock.store(T0 + 10_001, Ordering::SeqCst);
    almanac.purge_expired();
    assert!(matches!(
        almanac.register(older.clone()).await,
        Err(AlmanacError::StaleSequence { stored: 5, offered: 4 })
    ));
    assert!(matches!(almanac.lookup(&older.address), Err(AlmanacError::Expired { at_ms }) if at_ms == T0 + 10_000));
    let next = record("phoenix", &[QUOTES], &[], 6, T0 + 20_000);
    almanac.register(next).await.unwrap();
}

#[tokio::test]
async fn tombstones_survive_a_restart_of_a_persisted_almanac() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(T0));
    let config = || {
        let read = clock.clone();
        Config::default().with_clock(move || read.load(Ordering::SeqCst))
    };
    let almanac = Almanac::open(dir.path(), config()).unwrap();
    almanac.register(record("lazarus", &[], &[], 9, T0 + 10_000)).await.unwrap();
    drop(almanac);
    clock.store(T0 + 10_001, Ordering::SeqCst);
    let almanac = Almanac::open(dir.path(), config()).unwrap();
    let stale = record("lazarus", &[], &[], 8, T0 + 50_000);
    assert!(matches!(almanac.register(stale).await, Err(AlmanacError::StaleSequence { stored: 9, offered: 8 })));
}

/// Manifests are bounded per publisher and in total; republishing one held is free; the
/// counts survive a restart of a persisted almanac.
#[tokio::test]
async fn manifests_are_bounded_per_publisher_and_in_total() {
    #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, agent_core::Message)]
    struct Ask(u64);
    #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, agent_core::Message)]
    struct Tell(u64);
    let manifest = |n: u32| Protocol::new(format!("bounded-{n}"), "1.0").replies::<Ask, Tell>().manifest().to_json();
    let dir = tempfile::tempdir().unwrap();
    let config = || Config::default().with_max_manifests(3).with_max_manifests_per_publisher(2);
    let almanac = Almanac::open(dir.path(), config()).unwrap();
    almanac.publish_manifest_from("peer-a", &manifest(1)).await.unwrap();
    almanac.publish_manifest_from("peer-a", &manifest(2)).await.unwrap();
    let refused = almanac.publish_manifest_from("peer-a", &manifest(3)).await;
    assert!(matches!(refused, Err(AlmanacError::ManifestLimit { limit: 2, per_publisher: true })), "{refused:?}");
    almanac.publish_manifest_from("peer-a", &manifest(1)).await.expect("republishing one held is free");
    drop(almanac);

    let almanac = Almanac::open(dir.path(), config()).unwrap();
    let refused = almanac.publish_manifest_from("peer-a", &manifest(3)).await;
    assert!(matches!(refused, Err(AlmanacError::ManifestLimit { per_publisher: true, .. })), "after a restart too");
    almanac.publish_manifest_from("peer-b", &manifest(3)).await.unwrap();
    let full = almanac.publish_manifest_from("peer-c", &manifest(4)).await;
    assert!(matches!(full, Err(AlmanacError::ManifestLimit { limit: 3, per_publisher: false })), "{full:?}");
    drop(almanac);

    // The server counts per requesting peer.
    let almanac = Almanac::new(Config::default().with_max_manifests_per_publisher(1));
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let server = almanac::service::serve(almanac, keypair, &["/ip4/127.0.0.1/tcp/0".parse().unwrap()]).await.unwrap();
    let remote = RemoteAlmanac::new(server.peer_id(), server.listen_addrs().to_vec()).unwrap();
    remote.publish_manifest(&manifest(5)).await.unwrap();
    let refused = remote.publish_manifest(&manifest(6)).await;
    assert!(matches!(refused, Err(AlmanacError::ManifestLimit { limit: 1, per_publisher: true })), "{refused:?}");
    let other = RemoteAlmanac::new(server.peer_id(), server.listen_addrs().to_vec()).unwrap();
    other.publish_manifest(&manifest(6)).await.expect("another peer has its own quota");
}
