//! Keeping a bureau's agents registered: sign, register, and re-register before expiry.
//!
//! Each registration is renewed at a quarter of its lifetime, so three renewals in a row
//! can fail before it lapses; a failed renewal is retried after 1 s, doubling up to the
//! renewal period. Every renewal, failure and lapse is an [`Event`] the program can watch
//! ([`Registrar::events`]), not only a log line.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agent_core::{Address, Bureau, Identity, ProtocolDigest};

use crate::record::{Registration, WeightedEndpoint};
use crate::resolver::Directory;
use crate::{AlmanacError, Registered};

/// How agents are registered.
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    ttl: Duration,
    attributes: BTreeMap<String, String>,
    local_only: bool,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig { ttl: Duration::from_secs(600), attributes: BTreeMap::new(), local_only: false }
    }
}

impl RegistrarConfig {
    /// Lifetime of each registration (default 10 min); they are renewed at a quarter of it.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// An attribute every registration carries (`service=flight-quotes`).
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    /// Registers agents that have no network endpoint (discoverable, not reachable).
    /// Without it, registering a bureau that does not listen is an error.
    pub fn local_only(mut self) -> Self {
        self.local_only = true;
        self
    }
}

/// Re-registers the agents in the background until dropped.
#[derive(Debug)]
pub struct Registrar {
    registered: Vec<Registered>,
    events: tokio::sync::broadcast::Sender<Event>,
    task: tokio::task::JoinHandle<()>,
}

/// What happened to one agent's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Renewed: the directory stored the new registration.
    Renewed {
        /// The agent.
        agent: Address,
        /// What was stored.
        registered: Registered,
    },
    /// A renewal failed; it is retried after `retry_in`. The current registration stays
    /// valid until `expires_ms`.
    RenewalFailed {
        /// The agent.
        agent: Address,
        /// Failures in a row.
        attempt: u32,
        /// Why.
        error: AlmanacError,
        /// When the next attempt is made.
        retry_in: Duration,
        /// When the registration still held lapses.
        expires_ms: u64,
    },
    /// Renewals kept failing until the registration expired: the agent can no longer be
    /// found through the directory. Renewal attempts go on.
    Lapsed {
        /// The agent.
        agent: Address,
        /// When it expired.
        at_ms: u64,
    },
}

/// Renewals in flight at once.
const RENEWALS_AT_ONCE: usize = 32;
/// Events kept for a subscriber that does not keep up, at most; it then misses the oldest
/// (and learns how many from the receiver's `Lagged` error).
const EVENT_QUEUE: usize = 256;
/// The first wait before retrying a failed renewal.
const FIRST_RETRY: Duration = Duration::from_secs(1);

impl Registrar {
    /// What each agent's first registration stored (sequence and expiry).
    pub fn registered(&self) -> &[Registered] {
        &self.registered
    }

    /// Renewals, failures and lapses from now on, for every agent of the registrar.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

impl Drop for Registrar {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Entry {
    identity: Identity,
    protocols: Vec<ProtocolDigest>,
    /// When the registration held lapses.
    expires_ms: u64,
    /// When to try next.
    due: tokio::time::Instant,
    /// Failures in a row.
    failures: u32,
    lapsed: bool,
}

/// Registers every agent of `bureau` in `directory` now (failing if any registration
/// fails), then renews each registration at a quarter of its lifetime, retrying failures
/// (see the module docs). Agents added to the bureau later are not included: start
/// another registrar for them.
pub async fn register_bureau(
    bureau: &Bureau,
    directory: Arc<dyn Directory>,
    config: RegistrarConfig,
) -> Result<Registrar, AlmanacError> {
    let (peer_id, endpoints) = match bureau.network_info() {
        Some(info) => (
            info.peer_id.to_string(),
            info.listen_addrs.iter().map(|a| WeightedEndpoint { addr: a.to_string(), weight: 1 }).collect(),
        ),
        None if config.local_only => (String::new(), Vec::new()),
        None => {
            return Err(AlmanacError::Malformed(
                "the bureau has no network endpoint: call Bureau::listen first, or register local-only".into(),
            ))
        }
    };
    let start = tokio::time::Instant::now();
    let mut entries: Vec<Entry> = bureau
        .agents()
        .into_iter()
        .filter_map(|info| {
            let identity = bureau.identity(&info.address)?;
            Some(Entry { identity, protocols: info.protocols, expires_ms: 0, due: start, failures: 0, lapsed: false })
        })
        .collect();
    let sign = move |entry: &Entry| {
        let now = agent_core::envelope::unix_now_ms();
        // The clock gives a sequence that increases across renewals and restarts.
        Registration::sign(
            &entry.identity,
            peer_id.clone(),
            endpoints.clone(),
            entry.protocols.clone(),
            config.attributes.clone(),
            now,
            now + config.ttl.as_millis() as u64,
        )
    };
    let period = config.ttl / 4;
    let mut registered = Vec::with_capacity(entries.len());
    for entry in &mut entries {
        let stored = directory.register(sign(entry)).await?;
        (entry.expires_ms, entry.due) = (stored.expires_ms, start + period);
        registered.push(stored);
    }
    let (events, _) = tokio::sync::broadcast::channel(EVENT_QUEUE);
    let sender = events.clone();
    let task = tokio::spawn(async move {
        loop {
            let Some(next) = entries.iter().map(|e| e.due).min() else { return };
            tokio::time::sleep_until(next).await;
            let now = tokio::time::Instant::now();
            // Several at once: one agent's slow or failing directory call must not hold up
            // the others' renewals until their records lapse.
            let mut due: Vec<&mut Entry> = entries.iter_mut().filter(|e| e.due <= now).collect();
            for chunk in due.chunks_mut(RENEWALS_AT_ONCE) {
                let mut renewals = Vec::with_capacity(chunk.len());
                for entry in chunk.iter_mut() {
                    renewals.push(renew(entry, directory.as_ref(), &sign, period));
                }
                for event in futures::future::join_all(renewals).await {
                    // No subscriber is fine: the event is also logged where it matters.
                    let _ = sender.send(event);
                }
            }
        }
    });
    Ok(Registrar { registered, events, task })
}

/// One renewal attempt for `entry`; reschedules it and says what happened.
async fn renew(
    entry: &mut Entry,
    directory: &dyn Directory,
    sign: &(impl Fn(&Entry) -> Registration + Send + Sync),
    period: Duration,
) -> Event {
    let agent = entry.identity.address();
    match directory.register(sign(entry)).await {
        Ok(registered) => {
            (entry.expires_ms, entry.failures, entry.lapsed) = (registered.expires_ms, 0, false);
            entry.due = tokio::time::Instant::now() + period;
            Event::Renewed { agent, registered }
        }
        Err(error) => {
            entry.failures += 1;
            let retry_in = FIRST_RETRY.saturating_mul(1 << entry.failures.min(16).saturating_sub(1)).min(period);
            entry.due = tokio::time::Instant::now() + retry_in;
            let now_ms = agent_core::envelope::unix_now_ms();
            if now_ms >= entry.expires_ms && !entry.lapsed {
                entry.lapsed = true;
                tracing::error!(%agent, error = %error, "registration lapsed: renewals kept failing");
                return Event::Lapsed { agent, at_ms: entry.expires_ms };
            }
            tracing::warn!(%agent, error = %error, attempt = entry.failures, "renewing a registration failed; retrying");
            Event::RenewalFailed { agent, attempt: entry.failures, error, retry_in, expires_ms: entry.expires_ms }
        }
    }
}
