//! A bureau's shutdown lets go of its storage even with an envelope still trying to reach
//! a peer that never answers: the link ends with the node instead of at the envelope's
//! deadline, so a bureau started again at once on the same directory opens it.

use std::sync::Arc;
use std::time::Duration;

use agent_core::transport::{Endpoint, NetworkConfig, StaticResolver};
use agent_core::{Agent, Bureau, Config, Identity, Message};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Note(u32);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_an_envelope_stuck_in_flight_shuts_down_and_starts_again_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = || Config::default().with_storage_dir(dir.path());
    let resolver = Arc::new(StaticResolver::new());
    // A peer nobody listens for: the link keeps trying until the envelope's deadline.
    let far = Identity::from_seed("far away").address();
    let nowhere = vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()];
    resolver.insert(far, Endpoint { peer_id: libp2p::PeerId::random(), addrs: nowhere });
    let bureau = Bureau::with_config(config()).unwrap();
    let network = NetworkConfig::new(vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()], resolver.clone())
        .with_delivery_timeout(Duration::from_secs(30));
    bureau.listen(network).await.unwrap();
    let ctx = bureau.context(bureau.add(Agent::builder("me").seed("me").build().unwrap()).unwrap()).unwrap();
    let sending = tokio::spawn(async move { ctx.send(far, Note(1)).await.is_ok() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let began = tokio::time::Instant::now();
    bureau.shutdown().await.unwrap();
    // Well under the shutdown's five-second bound on waiting for the network's tasks.
    assert!(began.elapsed() < Duration::from_secs(3), "shutdown waited {:?} for the link", began.elapsed());
    let sent = tokio::time::timeout(Duration::from_secs(5), sending).await.unwrap().unwrap();
    assert!(!sent, "the envelope to a peer that never answered was not reported delivered");
    let again = Bureau::with_config(config()).unwrap_or_else(|e| panic!("the storage is still held: {e}"));
    again.shutdown().await.unwrap();
}
