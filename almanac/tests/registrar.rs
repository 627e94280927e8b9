//! Bureaus registering their agents, renewing before expiry, and broadcasting to agents
//! of another process found through the almanac.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_core::transport::NetworkConfig;
use agent_core::{Address, Agent, Bureau, Config, Context, Identity, Message, Protocol};
use almanac::{register_bureau, Almanac, AlmanacDiscovery, AlmanacResolver, Directory, RegistrarConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Message)]
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

/// A directory that refuses registrations while `failing` is set.
struct Flaky {
    inner: Almanac,
    failing: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Directory for Flaky {
    async fn register(&self, record: almanac::Registration) -> Result<almanac::Registered, almanac::AlmanacError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(almanac::AlmanacError::Unavailable("switched off by the test".into()));
        }
        self.inner.register(record).await
    }
    async fn lookup(&self, address: &Address) -> Result<almanac::Registration, almanac::AlmanacError> {
        self.inner.lookup(address)
    }
    async fn query(&self, query: almanac::Query) -> Result<almanac::Page, almanac::AlmanacError> {
        Ok(self.inner.query(&query))
    }
}

/// Renewals come at a quarter of the lifetime; failed ones are retried with backoff and
/// reported as events; a directory that comes back gets the registration renewed.
#[tokio::test(start_paused = true)]
async fn failed_renewals_are_retried_and_reported() {
    use almanac::registrar::Event;
    let flaky = Arc::new(Flaky { inner: Almanac::new(almanac::Config::default()), failing: false.into() });
    let bureau = Bureau::new().unwrap();
    let agent = bureau.add(Agent::builder("steady").build().unwrap()).unwrap();
    let config = RegistrarConfig::default().local_only().with_ttl(Duration::from_secs(400));
    let registrar = register_bureau(&bureau, flaky.clone(), config).await.unwrap();
    let mut events = registrar.events();
    // Renewed at a quarter of the lifetime.
    let started = tokio::time::Instant::now();
    let first = tokio::time::timeout(Duration::from_secs(200), events.recv()).await.unwrap().unwrap();
    assert!(matches!(first, Event::Renewed { agent: a, .. } if a == agent), "{first:?}");
    assert_eq!(started.elapsed().as_secs(), 100);

    // The directory fails: retries after 1, 2, 4 s ..., each reported with its cause.
    flaky.failing.store(true, Ordering::SeqCst);
    let mut retries = Vec::new();
    for _ in 0..4 {
        match tokio::time::timeout(Duration::from_secs(200), events.recv()).await.unwrap().unwrap() {
            Event::RenewalFailed { agent: a, attempt, error, retry_in, .. } => {
                assert_eq!(a, agent);
                assert!(error.to_string().contains("switched off"), "{error}");
                retries.push((attempt, retry_in.as_secs()));
            }
            other => panic!("expected a failed renewal, got {other:?}"),
        }
    }
    assert_eq!(retries, vec![(1, 1), (2, 2), (3, 4), (4, 8)]);

    // It comes back: the next attempt renews, and the count starts again.
    flaky.failing.store(false, Ordering::SeqCst);
    let back = tokio::time::timeout(Duration::from_secs(200), events.recv()).await.unwrap().unwrap();
    assert!(matches!(back, Event::Renewed { .. }), "{back:?}");
    drop(registrar);
    bureau.shutdown().await.unwrap();
}

/// Renewals that keep failing until the registration expires end in one `Lapsed` event.
#[tokio::test]
async fn a_registration_whose_renewals_all_fail_lapses_and_says_so() {
    use almanac::registrar::Event;
    let flaky = Arc::new(Flaky { inner: Almanac::new(almanac::Config::default()), failing: false.into() });
    let bureau = Bureau::new().unwrap();
    let agent = bureau.add(Agent::builder("fading").build().unwrap()).unwrap();
    let config = RegistrarConfig::default().local_only().with_ttl(Duration::from_millis(1600));
    let registrar = register_bureau(&bureau, flaky.clone(), config).await.unwrap();
    let expires_ms = registrar.registered()[0].expires_ms;
    let mut events = registrar.events();
    flaky.failing.store(true, Ordering::SeqCst);
    let lapsed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Event::Lapsed { agent: a, at_ms } = events.recv().await.unwrap() {
                return (a, at_ms);
            }
        }
    })
    .await
    .expect("the lapse is reported");
    assert_eq!(lapsed, (agent, expires_ms));
    assert!(agent_core::envelope::unix_now_ms() >= expires_ms);
    drop(registrar);
    bureau.shutdown().await.unwrap();
}

/// A directory whose every renewal takes a minute to answer.
struct Slow {
    inner: Almanac,
    calls: std::sync::Mutex<std::collections::HashMap<Address, u32>>,
    /// When each renewal's minute was over.
    answered: std::sync::Mutex<Vec<tokio::time::Instant>>,
}

#[async_trait::async_trait]
impl Directory for Slow {
    async fn register(&self, record: almanac::Registration) -> Result<almanac::Registered, almanac::AlmanacError> {
        let renewal = {
            let mut calls = self.calls.lock().unwrap();
            let count = calls.entry(record.address).or_default();
            *count += 1;
            *count > 1
        };
        if renewal {
            tokio::time::sleep(Duration::from_secs(60)).await;
            self.answered.lock().unwrap().push(tokio::time::Instant::now());
        }
        self.inner.register(record).await
    }
    async fn lookup(&self, address: &Address) -> Result<almanac::Registration, almanac::AlmanacError> {
        self.inner.lookup(address)
    }
    async fn query(&self, query: almanac::Query) -> Result<almanac::Page, almanac::AlmanacError> {
        Ok(self.inner.query(&query))
    }
}

/// Renewals run side by side: three agents whose directory takes a minute per renewal are
/// all renewed a minute after they fall due, not one after another (which would leave the
/// last one waiting three minutes, and with more agents, past its record's lifetime).
#[tokio::test(start_paused = true)]
async fn renewals_do_not_wait_for_each_other() {
    use almanac::registrar::Event;
    let slow = Arc::new(Slow {
        inner: Almanac::new(almanac::Config::default()),
        calls: Default::default(),
        answered: Default::default(),
    });
    let bureau = Bureau::new().unwrap();
    for i in 0..3 {
        bureau.add(Agent::builder(format!("slow {i}")).build().unwrap()).unwrap();
    }
    let config = RegistrarConfig::default().local_only().with_ttl(Duration::from_secs(400));
    let started = tokio::time::Instant::now();
    let registrar = register_bureau(&bureau, slow.clone(), config).await.unwrap();
    let mut events = registrar.events();
    for _ in 0..3 {
        let event = tokio::time::timeout(Duration::from_secs(1_000), events.recv()).await.unwrap().unwrap();
        assert!(matches!(event, Event::Renewed { .. }), "{event:?}");
    }
    // Due at 100 s; each renewal answers 60 s after it was asked.
    let answered: Vec<u64> = slow.answered.lock().unwrap().iter().map(|at| (*at - started).as_secs()).collect();
    assert_eq!(answered, [160, 160, 160], "side by side, not one after another");
    drop(registrar);
    bureau.shutdown().await.unwrap();
}
