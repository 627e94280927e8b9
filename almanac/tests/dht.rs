//! Three almanac DHT nodes on loopback: a registration stored through one is found through
//! another, and after its lifetime through none.

use std::collections::BTreeMap;
use std::time::Duration;

use agent_core::Identity;
use almanac::{AlmanacError, DhtAlmanac, Registration, WeightedEndpoint};

async fn node() -> DhtAlmanac {
    DhtAlmanac::start(
        libp2p::identity::Keypair::generate_ed25519(),
        &["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        &[],
        1_000_000,
        almanac::dht::DEFAULT_QUERY_TIMEOUT,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_stored_through_one_node_is_found_through_another_until_it_expires() {
    let nodes = [node().await, node().await, node().await];
    for a in &nodes {
        for b in &nodes {
            if a.peer_id() != b.peer_id() {
                a.add_peer(b.peer_id(), b.listen_addrs()[0].clone()).await.unwrap();
            }
        }
    }
    let alice = Identity::from_seed("dht alice");
    let expires = agent_core::envelope::unix_now_ms() + 2_500;
    let record = |sequence: u64, expires_ms: u64| {
        Registration::sign(
            &alice,
            libp2p::PeerId::random().to_string(),
            vec![WeightedEndpoint { addr: "/ip4/127.0.0.1/tcp/4001".into(), weight: 1 }],
            vec![],
            BTreeMap::new(),
            sequence,
            expires_ms,
        )
    };
    let registered = nodes[0].register(record(1, expires)).await.unwrap();
    assert_eq!(registered.expires_ms, expires);
    for node in &nodes[1..] {
        assert_eq!(node.lookup(&alice.address()).await.unwrap().sequence, 1);
    }
    // A newer registration through another node wins everywhere.
    nodes[2].register(record(2, expires)).await.unwrap();
    assert_eq!(nodes[0].lookup(&alice.address()).await.unwrap().sequence, 2);
    // Never registered: a finished lookup that found nothing.
    let nobody = Identity::from_seed("dht nobody").address();
    assert_eq!(nodes[1].lookup(&nobody).await, Err(AlmanacError::NotRegistered(nobody)));
    // A forged record is refused before it is stored.
    let mut forged = record(3, expires);
    forged.attributes.insert("evil".into(), "yes".into());
    assert!(matches!(nodes[0].register(forged).await, Err(AlmanacError::BadSignature(_))));

    // By protocol: provider records lead to each node's index, then to the registrations.
    let quotes = agent_core::ProtocolDigest::from_bytes([9; 32]);
    let sellers: Vec<Identity> = (0..4).map(|i| Identity::from_seed(&format!("dht seller {i}"))).collect();
    for (i, seller) in sellers.iter().enumerate() {
        let registration = Registration::sign(
            seller,
            libp2p::PeerId::random().to_string(),
            vec![WeightedEndpoint { addr: "/ip4/127.0.0.1/tcp/4001".into(), weight: 1 }],
            vec![quotes],
            BTreeMap::new(),
            1,
            expires,
        );
        nodes[i % 2].register(registration).await.unwrap();
    }
    let mut found = Vec::new();
    for _ in 0..50 {
        found = nodes[2].agents_speaking(&quotes, 100).await.unwrap();
        if found.len() == sellers.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut found: Vec<_> = found.iter().map(|r| r.address).collect();
    found.sort();
    let mut expected: Vec<_> = sellers.iter().map(|s| s.address()).collect();
    expected.sort();
    assert_eq!(found, expected, "every seller found through the third node");
    // The same through the Directory API, two to a page.
    let mut paged = Vec::new();
    let mut query = almanac::Query::protocol(quotes).with_limit(2);
    for _ in 0..4 {
        let page = almanac::Directory::query(&nodes[2], query.clone()).await.unwrap();
        paged.extend(page.records.iter().map(|r| r.address));
        match page.next {
            Some(next) => query = query.after(next),
            None => break,
        }
    }
    assert_eq!(paged, expected, "pages of two cover every seller once, in order");

    tokio::time::sleep(Duration::from_millis(2_600)).await;
    assert!(nodes[2].agents_speaking(&quotes, 100).await.unwrap().is_empty(), "expired sellers are not listed");
    for node in &nodes {
        match node.lookup(&alice.address()).await {
            Err(AlmanacError::Expired { .. }) | Err(AlmanacError::NotRegistered(_)) => {}
            other => panic!("found after expiry: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_lookup_that_does_not_finish_is_not_reported_as_not_found() {
    // The only known peer accepts TCP connections and then says nothing.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut connections = Vec::new();
        for connection in silent.incoming().take(4).flatten() {
            connections.push(connection);
        }
        std::thread::sleep(Duration::from_secs(5));
    });
    let lonely = DhtAlmanac::start(
        libp2p::identity::Keypair::generate_ed25519(),
        &["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        &[(libp2p::PeerId::random(), format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap())],
        1_000,
        Duration::from_millis(800),
    )
    .await
    .unwrap();
    let someone = Identity::from_seed("dht someone").address();
    match lonely.lookup(&someone).await {
        Err(AlmanacError::Unavailable(_)) => {}
        other => panic!("an unfinished lookup must say the registry is unavailable, got {other:?}"),
    }
    // A query whose provider search ends early is not an empty (shorter) page.
    let protocol = agent_core::ProtocolDigest::from_bytes([9; 32]);
    match lonely.agents_speaking(&protocol, 10).await {
        Err(AlmanacError::Unavailable(reason)) => assert!(reason.contains("partial answer"), "{reason}"),
        other => panic!("an unfinished provider search must be marked partial, got {other:?}"),
    }
    drop(held);
}

async fn node_holding(max_records: usize) -> DhtAlmanac {
    DhtAlmanac::start(
        libp2p::identity::Keypair::generate_ed25519(),
        &["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        &[],
        max_records,
        Duration::from_secs(3),
    )
    .await
    .unwrap()
}

fn registration_of(identity: &Identity, sequence: u64, lifetime_ms: u64) -> Registration {
    Registration::sign(
        identity,
        libp2p::PeerId::random().to_string(),
        vec![WeightedEndpoint { addr: "/ip4/127.0.0.1/tcp/4001".into(), weight: 1 }],
        vec![],
        BTreeMap::new(),
        sequence,
        agent_core::envelope::unix_now_ms() + lifetime_ms,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_no_other_node_stored_is_not_acknowledged() {
    // The only other node stores nothing (its store holds no records at all).
    let (registering, refusing) = (node_holding(1_000).await, node_holding(0).await);
    registering.add_peer(refusing.peer_id(), refusing.listen_addrs()[0].clone()).await.unwrap();
    refusing.add_peer(registering.peer_id(), registering.listen_addrs()[0].clone()).await.unwrap();
    let bob = Identity::from_seed("dht bob");
    match registering.register(registration_of(&bob, 1, 60_000)).await {
        Err(AlmanacError::Unavailable(reason)) => assert!(reason.contains("accepted"), "{reason}"),
        other => panic!("acknowledged though no other node stored it: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dht_refuses_older_sequences_and_overlong_lifetimes_like_the_store() {
    let (a, b) = (node_holding(1_000).await, node_holding(1_000).await);
    a.add_peer(b.peer_id(), b.listen_addrs()[0].clone()).await.unwrap();
    b.add_peer(a.peer_id(), a.listen_addrs()[0].clone()).await.unwrap();
    let carol = Identity::from_seed("dht carol");
    a.register(registration_of(&carol, 5, 60_000)).await.unwrap();
    // An older record, with a longer lifetime, through the same node: refused.
    match a.register(registration_of(&carol, 4, 3_600_000)).await {
        Err(AlmanacError::StaleSequence { stored: 5, offered: 4 }) => {}
        other => panic!("an older sequence was taken: {other:?}"),
    }
    // Through the other node (which stored sequence 5): refused too, and 5 stays.
    assert!(matches!(b.register(registration_of(&carol, 4, 60_000)).await, Err(AlmanacError::StaleSequence { .. })));
    assert_eq!(a.lookup(&carol.address()).await.unwrap().sequence, 5);
    // A lifetime beyond the cap.
    let forever = registration_of(&carol, 6, 48 * 3_600_000);
    assert!(matches!(a.register(forever).await, Err(AlmanacError::TtlOutOfBounds { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_agents_of_one_protocol_on_one_node_are_all_found() {
    use futures::StreamExt;
    let (home, other) = (node_holding(100_000).await, node_holding(100_000).await);
    home.add_peer(other.peer_id(), other.listen_addrs()[0].clone()).await.unwrap();
    other.add_peer(home.peer_id(), home.listen_addrs()[0].clone()).await.unwrap();
    let crowded = agent_core::ProtocolDigest::from_bytes([42; 32]);
    let expires = agent_core::envelope::unix_now_ms() + 600_000;
    let agents: Vec<Identity> = (0..10_000).map(|i| Identity::from_seed(&format!("crowd {i}"))).collect();
    let registered = futures::stream::iter(&agents)
        .map(|agent| {
            let home = home.clone();
            let record = Registration::sign(
                agent,
                libp2p::PeerId::random().to_string(),
                vec![WeightedEndpoint { addr: "/ip4/127.0.0.1/tcp/4001".into(), weight: 1 }],
                vec![crowded],
                BTreeMap::new(),
                1,
                expires,
            );
            async move { home.register(record).await.is_ok() }
        })
        .buffer_unordered(64)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    assert_eq!(registered, agents.len());
    let mut found = Vec::new();
    for _ in 0..20 {
        found = other.agents_speaking(&crowded, 20_000).await.unwrap();
        if found.len() == agents.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut expected: Vec<_> = agents.iter().map(|a| a.address()).collect();
    expected.sort();
    let found: Vec<_> = found.iter().map(|r| r.address).collect();
    assert_eq!(found.len(), expected.len(), "every agent found through the other node");
    assert_eq!(found, expected);
}

/// A node's protocol index outlives its first lifetime (each node republishes it every
/// quarter of it), and forgets an agent once its registration has expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_index_outlives_its_lifetime_and_forgets_expired_agents() {
    let lifetime = Duration::from_millis(1_200);
    let loopback: [libp2p::Multiaddr; 1] = ["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    let start = || {
        let key = libp2p::identity::Keypair::generate_ed25519();
        DhtAlmanac::start_with_index_lifetime(key, &loopback, &[], 1_000, Duration::from_secs(3), lifetime)
    };
    let (home, other) = (start().await.unwrap(), start().await.unwrap());
    home.add_peer(other.peer_id(), other.listen_addrs()[0].clone()).await.unwrap();
    other.add_peer(home.peer_id(), home.listen_addrs()[0].clone()).await.unwrap();
    let protocol = agent_core::ProtocolDigest::from_bytes([7; 32]);
    let speaker = |seed: &str, lifetime_ms: u64| {
        Registration::sign(
            &Identity::from_seed(seed),
            libp2p::PeerId::random().to_string(),
            vec![WeightedEndpoint { addr: "/ip4/127.0.0.1/tcp/4001".into(), weight: 1 }],
            vec![protocol],
            BTreeMap::new(),
            1,
            agent_core::envelope::unix_now_ms() + lifetime_ms,
        )
    };
    let staying = Identity::from_seed("index stays").address();
    home.register(speaker("index stays", 120_000)).await.unwrap();
    home.register(speaker("index leaves", 1_500)).await.unwrap();
    assert_eq!(other.agents_speaking(&protocol, 10).await.unwrap().len(), 2);

    // Three lifetimes later the index is still there, without the agent that left.
    tokio::time::sleep(lifetime * 3).await;
    let found = other.agents_speaking(&protocol, 10).await.unwrap();
    assert_eq!(found.iter().map(|r| r.address).collect::<Vec<_>>(), [staying]);
    let index = home.held_index(&protocol, 0).await.unwrap();
    assert_eq!(index, [staying], "the expired agent is no longer listed");
}
