//! Keeping a bureau's agents registered: sign, register, and re-register before expiry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agent_core::{Bureau, Identity, ProtocolDigest};

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
    /// Lifetime of each registration (default 10 min); they are renewed at half of it.
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
    task: tokio::task::JoinHandle<()>,
}

impl Registrar {
    /// What each agent's first registration stored (sequence and expiry).
    pub fn registered(&self) -> &[Registered] {
        &self.registered
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
}

/// Registers every agent of `bureau` in `directory` now (failing if any registration
/// fails), then renews each registration at half its lifetime. Agents added to the bureau
/// later are not included: start another registrar for them.
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
    let entries: Vec<Entry> = bureau
        .agents()
        .into_iter()
        .filter_map(|info| bureau.identity(&info.address).map(|identity| Entry { identity, protocols: info.protocols }))
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
    let mut registered = Vec::with_capacity(entries.len());
    for entry in &entries {
        registered.push(directory.register(sign(entry)).await?);
    }
    let period = config.ttl / 2;
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            for entry in &entries {
                if let Err(err) = directory.register(sign(entry)).await {
                    tracing::warn!(agent = %entry.identity.address(), error = %err, "renewing a registration failed; retrying next period");
                }
            }
        }
    });
    Ok(Registrar { registered, task })
}
