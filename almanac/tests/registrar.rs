//! Bureaus registering their agents, renewing before expiry, and broadcasting to agents
//! of another process found through the almanac.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_core::transport::NetworkConfig;
use agent_core::{Address, Agent, Bureau, Config, Context, Identity, Message, Protocol};
use almanac::{register_bureau, Almanac, AlmanacDiscovery, AlmanacResolver, Directory, RegistrarConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
struct News(String);

fn news(count: Arc<AtomicUsize>) -> Protocol {
    Protocol::new("news", "1.0").on_message(move |_ctx: Context, _from: Address, _n: News| {
        let count = count.clone();
        async move {
            count.fetch_add(1, Ordering::SeqCst);
        }
    })
}

async fn networked(almanac: &Almanac) -> Bureau {
    let directory: Arc<dyn Directory> = Arc::new(almanac.clone());
    let config = Config::default().with_discovery(Arc::new(AlmanacDiscovery(directory.clone())));
    let bureau = Bureau::with_config(config).unwrap();
    let resolver = Arc::new(AlmanacResolver::new(directory));
    bureau.listen(NetworkConfig::new(vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()], resolver)).await.unwrap();
    bureau
}

#[tokio::test]
async fn registered_agents_are_found_renewed_and_reached_by_broadcast() {
    let almanac = Almanac::new(almanac::Config::default());
    let directory: Arc<dyn Directory> = Arc::new(almanac.clone());
    let count = Arc::new(AtomicUsize::new(0));

    let listeners = networked(&almanac).await;
    let mut template = Agent::builder("listener").build().unwrap();
    template.include(news(count.clone()));
    for i in 0..3 {
        listeners.add(template.sibling(format!("listener-{i}"), Identity::generate())).unwrap();
    }
    let config = RegistrarConfig::default().with_ttl(Duration::from_millis(1200)).with_attribute("role", "listener");
    let registrar = register_bureau(&listeners, directory.clone(), config).await.unwrap();
    assert_eq!(registrar.registered().len(), 3);
    let first = registrar.registered()[0];
    assert!(first.expires_ms > agent_core::envelope::unix_now_ms());

    let announcers = networked(&almanac).await;
    let announcer = announcers.add(Agent::builder("announcer").build().unwrap()).unwrap();
    let _announcer_registration =
        register_bureau(&announcers, directory.clone(), RegistrarConfig::default()).await.unwrap();
    let ctx = announcers.context(announcer).unwrap();
    let report = ctx.broadcast(news(count.clone()).digest(), News("hello".into())).await;
    assert_eq!((report.delivered, report.failed.len(), report.discovery_error.clone()), (3, 0, None), "{report:?}");

    // Renewal: after more than a lifetime, the listeners are still registered, with newer
    // sequences.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let page = almanac.query(&almanac::Query::default().with_attribute("role", "listener"));
    assert_eq!(page.records.len(), 3, "renewed before expiry");
    assert!(page.records.iter().all(|r| r.sequence > first.sequence));
    // Stopping the registrar lets them lapse.
    drop(registrar);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(almanac.query(&almanac::Query::default().with_attribute("role", "listener")).records.is_empty());

    announcers.shutdown().await.unwrap();
    listeners.shutdown().await.unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_agent_without_an_endpoint_is_an_error_unless_local_only() {
    let almanac = Almanac::new(almanac::Config::default());
    let directory: Arc<dyn Directory> = Arc::new(almanac.clone());
    let bureau = Bureau::new().unwrap();
    let agent = bureau.add(Agent::builder("hermit").build().unwrap()).unwrap();
    assert!(register_bureau(&bureau, directory.clone(), RegistrarConfig::default()).await.is_err());
    register_bureau(&bureau, directory, RegistrarConfig::default().local_only()).await.unwrap();
    assert_eq!(almanac.lookup(&agent).unwrap().endpoints.len(), 0);
    bureau.shutdown().await.unwrap();
}
