//! Records written to the almanac server survive a kill -9 of its process; agents that
//! found each other through it keep talking after it is gone.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agent_core::transport::NetworkConfig;
use agent_core::{Address, Agent, Bureau, Context, Identity, Message, ReplyError};
use almanac::{AlmanacResolver, Registration, RemoteAlmanac, WeightedEndpoint};
use common::{free_port, record, start};
use serde::{Deserialize, Serialize};

#[tokio::test]
async fn records_survive_kill_9_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = start(dir.path(), port);
    let remote = RemoteAlmanac::new(server.peer_id, vec![server.addr.clone()]).unwrap();
    let records: Vec<Registration> = (0..20).map(|i| record(&format!("survivor {i}"), 1)).collect();
    for r in &records {
        remote.register(r.clone()).await.unwrap();
    }
    let _ = server.child.kill(); // SIGKILL, right after the last acknowledgement
    let _ = server.child.wait();
    let _server = start(dir.path(), port);
    let mut found = 0;
    for r in &records {
        for _ in 0..50 {
            match remote.lookup(&r.address).await {
                Ok(stored) => {
                    assert_eq!(&stored, r);
                    found += 1;
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    assert_eq!(found, records.len(), "every acknowledged record is back");
    // Sequence ordering still holds after the restart.
    assert!(remote.register(records[0].clone()).await.is_ok(), "the same record again is harmless");
    assert!(matches!(remote.register(record("survivor 0", 1)).await, Err(almanac::AlmanacError::StaleSequence { .. })));
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Hello(u64);
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Welcome(u64);

#[tokio::test]
async fn agents_keep_talking_when_the_almanac_server_dies() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = start(dir.path(), port);
    let remote = Arc::new(RemoteAlmanac::new(server.peer_id, vec![server.addr.clone()]).unwrap());
    let resolver = Arc::new(AlmanacResolver::new(remote.clone()));
    let listen = || vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];

    let host = Bureau::new().unwrap();
    let mut greeter = Agent::builder("greeter").seed("greeter").build().unwrap();
    greeter.on_message(|ctx: Context, _from: Address, Hello(n): Hello| async move {
        ctx.reply(Welcome(n)).await.map_err(|e: ReplyError| e)
    });
    let greeter = host.add(greeter).unwrap();
    let info = host.listen(NetworkConfig::new(listen(), resolver.clone())).await.unwrap();
    let registration = Registration::sign(
        &Identity::from_seed("greeter"),
        info.peer_id.to_string(),
        info.listen_addrs.iter().map(|a| WeightedEndpoint { addr: a.to_string(), weight: 1 }).collect(),
        vec![],
        BTreeMap::new(),
        1,
        agent_core::envelope::unix_now_ms() + 600_000,
    );
    remote.register(registration).await.unwrap();

    let visitor_bureau = Bureau::new().unwrap();
    let visitor = visitor_bureau.add(Agent::builder("visitor").build().unwrap()).unwrap();
    visitor_bureau.listen(NetworkConfig::new(listen(), resolver.clone())).await.unwrap();
    let ctx = visitor_bureau.context(visitor).unwrap();
    let Welcome(n) = ctx.request(greeter, Hello(1), Duration::from_secs(10)).await.unwrap();
    assert_eq!(n, 1);
    drop(server); // kill -9 of the almanac
    for i in 2..20 {
        let Welcome(n) = ctx.request(greeter, Hello(i), Duration::from_secs(10)).await.unwrap();
        assert_eq!(n, i);
    }
    visitor_bureau.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
}
