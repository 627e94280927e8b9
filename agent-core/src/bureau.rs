//! A bureau runs many agents in one process.
//!
//! Messages between agents of one bureau stay in memory as typed values. Each agent is one
//! tokio task with a bounded mailbox, handling one message at a time. `add` must be called
//! inside a tokio runtime (current-thread or multi-thread); the agent starts at once.
//!
//! Shutdown is explicit: [`Bureau::shutdown`] closes every mailbox, lets each agent handle
//! what is already queued, runs the `on_shutdown` handlers, and flushes storage to disk.
//! Dropping a bureau without shutting it down closes the mailboxes too, but does not wait.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::agent::{Agent, MailboxConfig};
use crate::context::{AgentCell, Context, PendingReply, RequestTimer};
use crate::identity::Address;
use crate::router::{Entry, Router};

/// How long [`Bureau::shutdown`] waits for the network node's tasks to end once told to
/// stop (they end at once unless one is stuck mid-write to a peer).
const NETWORK_STOP_WAIT: Duration = Duration::from_secs(5);

/// Settings shared by every agent of a bureau.
#[derive(Clone)]
pub struct Config {
    pub(crate) request_timeout: Duration,
    pub(crate) send_timeout: Duration,
    pub(crate) mailbox: MailboxConfig,
    pub(crate) storage_dir: Option<PathBuf>,
    pub(crate) ledger: Option<Arc<dyn crate::ledger::Ledger>>,
    pub(crate) discovery: Option<Arc<dyn Discovery>>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("request_timeout", &self.request_timeout)
            .field("send_timeout", &self.send_timeout)
            .field("mailbox", &self.mailbox)
            .field("storage_dir", &self.storage_dir)
            .field("ledger", &self.ledger.is_some())
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            request_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(10),
            mailbox: MailboxConfig::default(),
            storage_dir: None,
            ledger: None,
            discovery: None,
        }
    }
}

impl Config {
    /// The deadline of a request when the caller gives none (default 30 s).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long a send may wait for space in a full mailbox (default 10 s).
    pub fn with_send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// The mailbox of agents that do not set their own (default: 1024 messages, wait).
    pub fn with_mailbox(mut self, mailbox: MailboxConfig) -> Self {
        self.mailbox = mailbox;
        self
    }

    /// The ledger agents' wallets settle on ([`Context::wallet`]). Agents start without
    /// contacting it.
    pub fn with_ledger(mut self, ledger: Arc<dyn crate::ledger::Ledger>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// Where broadcasts find agents in other processes (default: none, this bureau only).
    pub fn with_discovery(mut self, discovery: Arc<dyn Discovery>) -> Self {
        self.discovery = Some(discovery);
        self
    }

    /// The directory of agents' storage (its database is `storage.redb` inside, created if
    /// missing). Without it, storage is held in memory and gone when the bureau is dropped.
    pub fn with_storage_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.storage_dir = Some(dir.into());
        self
    }
}

pub(crate) struct Shared {
    pub(crate) network: std::sync::OnceLock<Arc<crate::transport::Network>>,
    /// The end of the network node's tasks, awaited by [`Bureau::shutdown`].
    pub(crate) network_ended: parking_lot::Mutex<Option<crate::transport::Ended>>,
    /// How agents here reach agents elsewhere: the network node, once listening.
    pub(crate) remote: std::sync::OnceLock<Arc<dyn crate::remote::RemoteSend>>,
    pub(crate) router: Arc<Router>,
    pub(crate) storage: crate::store::WriteBehind,
    pub(crate) config: Config,
    /// Tasks agents started with [`Context::spawn`](crate::Context::spawn): they end with
    /// the bureau. `None` once it has stopped: a task spawned then never runs.
    pub(crate) background: parking_lot::Mutex<Option<tokio::task::JoinSet<()>>>,
}

/// Why a bureau operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BureauError {
    /// The storage database could not be opened or flushed.
    #[error("bureau storage")]
    Storage(#[from] crate::store::StoreError),
    /// An agent with this address is already running here.
    #[error("an agent with address {0} is already in this bureau")]
    DuplicateAddress(Address),
    /// The agent's handlers are inconsistent (for example, one type handled twice).
    #[error("agent {agent}: {detail}")]
    HandlerConflict {
        /// The agent's name.
        agent: String,
        /// What conflicts.
        detail: String,
    },
    /// The agent includes a protocol whose manifest a peer would refuse (see
    /// [`Protocol::check`](crate::Protocol::check)).
    #[error("agent {agent}: protocol {protocol}")]
    InvalidProtocol {
        /// The agent's name.
        agent: String,
        /// The protocol's name and version.
        protocol: String,
        /// What is wrong with its manifest.
        #[source]
        error: Arc<crate::protocol::ManifestError>,
    },
    /// `add` was called outside a tokio runtime.
    #[error("Bureau::add must be called inside a tokio runtime")]
    NoRuntime,
}

/// An agent as listed by [`Bureau::agents`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    /// Its address.
    pub address: Address,
    /// Its name.
    pub name: String,
    /// The digests of the protocols it includes.
    pub protocols: Vec<crate::ProtocolDigest>,
}

/// Finds agents beyond this process that speak a protocol, for
/// [`Context::broadcast`](crate::Context::broadcast) (the almanac implements it).
#[async_trait::async_trait]
pub trait Discovery: Send + Sync + 'static {
    /// Up to `limit` agents speaking `protocol`.
    async fn agents_speaking(&self, protocol: &crate::ProtocolDigest, limit: usize) -> Result<Vec<Address>, String>;
}

/// Many agents in one process. See the module docs.
pub struct Bureau {
    shared: Arc<Shared>,
    tasks: parking_lot::Mutex<Vec<JoinHandle<()>>>,
}

impl Bureau {
    /// A bureau with default settings and temporary storage.
    pub fn new() -> Result<Bureau, BureauError> {
        Self::with_config(Config::default())
    }

    /// A bureau with `config`.
    pub fn with_config(config: Config) -> Result<Bureau, BureauError> {
        let db = match &config.storage_dir {
            Some(dir) => crate::store::Database::open_in(dir, "storage.redb")?,
            None => crate::store::Database::temporary()?,
        };
        Ok(Self::with_storage(config, crate::store::WriteBehind::new(db)?))
    }

    /// A bureau writing its agents' storage to `storage`: a simulated host, whose store
    /// commits on flush and outlives its crashes.
    pub(crate) fn with_storage(config: Config, storage: crate::store::WriteBehind) -> Bureau {
        let router = Arc::new(Router::new(config.send_timeout));
        crate::metrics::watch_router(&router);
        let shared = Arc::new(Shared {
            network: std::sync::OnceLock::new(),
            network_ended: parking_lot::Mutex::new(None),
            remote: std::sync::OnceLock::new(),
            router,
            storage,
            config,
            background: parking_lot::Mutex::new(Some(tokio::task::JoinSet::new())),
        });
        Bureau { shared, tasks: parking_lot::Mutex::new(Vec::new()) }
    }

    /// Starts `agent` and returns its address.
    pub fn add(&self, agent: Agent) -> Result<Address, BureauError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BureauError::NoRuntime)?;
        if let Some(detail) = agent.kind.conflicts.first() {
            return Err(BureauError::HandlerConflict { agent: agent.name.to_string(), detail: detail.clone() });
        }
        if let Some((protocol, error)) = agent.kind.invalid_protocols.first() {
            let (agent, protocol, error) = (agent.name.to_string(), protocol.clone(), Arc::clone(error));
            return Err(BureauError::InvalidProtocol { agent, protocol, error });
        }
        let address = agent.address();
        let mailbox = agent.mailbox.unwrap_or(self.shared.config.mailbox);
        let (tx, rx) = mpsc::channel(mailbox.capacity());
        let cell = Arc::new(AgentCell {
            name: agent.name,
            identity: agent.identity,
            kind: agent.kind,
            bureau: Arc::clone(&self.shared),
            when_full: mailbox.when_full(),
            acknowledge: mailbox.acknowledge(),
            multi_thread: runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread,
            storage: Default::default(),
            wallet: Default::default(),
            pending: parking_lot::Mutex::new(PendingReply::default()),
            request_timer: RequestTimer::default(),
        });
        {
            let mut agents = self.shared.router.agents.write();
            if agents.contains_key(&address) {
                return Err(BureauError::DuplicateAddress(address));
            }
            agents.insert(address, Entry { tx, cell: Arc::clone(&cell) });
        }
        {
            let mut by_protocol = self.shared.router.by_protocol.write();
            for protocol in &cell.kind.protocols {
                by_protocol.entry(protocol.digest).or_default().push(address);
            }
        }
        self.tasks.lock().push(runtime.spawn(crate::runtime::run(cell, rx)));
        Ok(address)
    }

    /// A context for acting as the local agent `address` from outside its handlers (for
    /// example, from `main` or a test). `None` if no such agent runs here.
    pub fn context(&self, address: Address) -> Option<Context> {
        let agents = self.shared.router.agents.read();
        agents.get(&address).map(|entry| Context { cell: Arc::clone(&entry.cell), current: None })
    }

    /// The agents running here, with the protocols each speaks.
    pub fn agents(&self) -> Vec<AgentInfo> {
        let agents = self.shared.router.agents.read();
        agents
            .iter()
            .map(|(address, entry)| AgentInfo {
                address: *address,
                name: entry.cell.name.to_string(),
                protocols: entry.cell.kind.protocols.iter().map(|p| p.digest).collect(),
            })
            .collect()
    }

    /// The identity (private key) of the local agent `address`, for signing on its behalf
    /// (registrations in a registry, for example). The bureau's owner created these keys;
    /// never log or send what this returns.
    pub fn identity(&self, address: &Address) -> Option<crate::Identity> {
        self.shared.router.agents.read().get(address).map(|entry| entry.cell.identity.clone())
    }

    /// How many agents run here.
    pub fn len(&self) -> usize {
        self.shared.router.agents.read().len()
    }

    /// Whether no agent runs here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes this bureau a network node: its agents become reachable from other processes
    /// and can reach agents there (see [`transport`](crate::transport)). Returns the
    /// node's peer id and bound addresses, to publish in a resolver or registry.
    pub async fn listen(
        &self,
        config: crate::transport::NetworkConfig,
    ) -> Result<crate::transport::NetworkInfo, crate::net::NetError> {
        if let Some(existing) = self.shared.network.get() {
            return Ok(existing.info.clone());
        }
        // What must survive a restart of the node is kept with the agents' storage, when
        // that is on disk.
        let state = self.shared.config.storage_dir.is_some().then(|| self.shared.storage.clone());
        let (network, incoming, stop, ended) = crate::transport::start(config, state).await?;
        let info = network.info.clone();
        crate::metrics::watch_network(&network);
        if self.shared.network.set(Arc::clone(&network)).is_err() {
            return Err(crate::net::NetError::Transport("the bureau started listening twice at once".into()));
        }
        // Set only here, after `network` was set above exactly once: it cannot be set yet.
        let _ = self.shared.remote.set(Arc::new(crate::transport::Remote(Arc::clone(&network))));
        let sink: Arc<dyn crate::transport::Sink> = self.shared.router.clone();
        *self.shared.network_ended.lock() = Some(ended);
        let accepting = crate::transport::accept_loop(sink, Arc::clone(&network), incoming, stop);
        network.tasks.spawn(accepting);
        Ok(info)
    }

    /// The network node's peer id and addresses, once [`Bureau::listen`] succeeded.
    pub fn network_info(&self) -> Option<crate::transport::NetworkInfo> {
        self.shared.network.get().map(|network| network.info.clone())
    }

    /// What the network node holds open right now (connections, links, requests awaiting
    /// a reply), once [`Bureau::listen`] succeeded: a soak test's leak check.
    pub fn network_stats(&self) -> Option<crate::transport::NetworkStats> {
        self.shared.network.get().map(|network| network.stats())
    }

    /// Sends an envelope sealed elsewhere (a relay forwarding a signed envelope, or a test
    /// replaying one) to its target through this node, with its own signature as
    /// authentication. Fails if the bureau is not a network node.
    pub async fn forward(
        &self,
        envelope: &crate::Envelope,
        timeout: Duration,
    ) -> Result<crate::transport::Outcome, crate::net::NetError> {
        let network = self.shared.network.get().ok_or(crate::net::NetError::Stopped)?;
        Ok(network.send(None, envelope.target, envelope.encode(), crate::transport::Auth::Signed, timeout).await)
    }

    /// Makes `remote` carry this bureau's messages for agents elsewhere (a simulated
    /// network). False if the bureau already has a way out.
    pub(crate) fn attach_remote(&self, remote: Arc<dyn crate::remote::RemoteSend>) -> bool {
        self.shared.remote.set(remote).is_ok()
    }

    /// Where messages from elsewhere are handed in.
    pub(crate) fn sink(&self) -> Arc<dyn crate::transport::Sink> {
        self.shared.router.clone()
    }

    /// Makes this bureau's storage refuse writes, or take them again (a simulated outage).
    pub(crate) fn refuse_writes(&self, refuse: bool) {
        self.shared.storage.refuse_writes(refuse);
    }

    /// Stops every agent at once, as a crash would: no shutdown handler runs, queued
    /// messages are lost, and so are storage writes not yet committed; what a returned
    /// flush covered is kept. Returns how many storage writes were lost.
    pub(crate) fn crash(self) -> usize {
        let lost_writes = self.shared.storage.crash();
        self.close_mailboxes();
        for task in std::mem::take(&mut *self.tasks.lock()) {
            task.abort();
        }
        if let Some(background) = self.shared.background.lock().take() {
            // Dropping the set aborts its tasks.
            drop(background);
        }
        lost_writes
    }

    /// Stops every agent gracefully (see the module docs) and flushes storage.
    pub async fn shutdown(self) -> Result<(), BureauError> {
        self.close_mailboxes();
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for task in tasks {
            if let Err(err) = task.await {
                tracing::error!(error = %err, "agent task ended abnormally");
            }
        }
        // After the agents (their shutdown handlers may still have needed them), and before
        // the last flush (what they wrote is in it).
        let background = self.shared.background.lock().take();
        if let Some(mut background) = background {
            background.abort_all();
            while let Some(ended) = background.join_next().await {
                if let Err(e) = ended {
                    if e.is_panic() {
                        tracing::error!(error = %e, "a task an agent spawned had panicked");
                    }
                }
            }
        }
        self.stop_network();
        // The node's tasks hold its state, kept in the agents' storage: once they have
        // ended, a bureau started again in this process can open that storage.
        let ended = self.shared.network_ended.lock().take();
        if let Some(ended) = ended {
            if !ended.wait(NETWORK_STOP_WAIT).await {
                tracing::warn!(waited = ?NETWORK_STOP_WAIT, "the network's tasks had not all ended at shutdown");
            }
        }
        self.shared.storage.flush().await?;
        Ok(())
    }

    fn stop_network(&self) {
        if let Some(network) = self.shared.network.get() {
            // A node already stopped has dropped its receiver: nothing is left to stop.
            let _ = network.stop.send(true);
            network.ceiling.lower_on_stop();
            network.links.lock().clear();
        }
    }

    /// Runs until Ctrl-C, then shuts down.
    pub async fn run_until_ctrl_c(self) -> Result<(), BureauError> {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C; shutting down");
        }
        self.shutdown().await
    }

    fn close_mailboxes(&self) {
        self.shared.router.stopping.store(true, Ordering::Relaxed);
        // Dropping the entries drops each mailbox's sender: each agent drains its queue,
        // runs its shutdown handlers and ends. This also breaks the cycle between the
        // router and the agents' cells.
        let entries = std::mem::take(&mut *self.shared.router.agents.write());
        drop(entries);
        self.shared.router.by_protocol.write().clear();
    }
}

impl Drop for Bureau {
    fn drop(&mut self) {
        self.close_mailboxes();
        self.stop_network();
        // The agents' tasks end with them (dropping the set aborts them): they hold the
        // bureau's state, which holds them, so nothing else would end them.
        let background = self.shared.background.lock().take();
        drop(background);
    }
}

impl std::fmt::Debug for Bureau {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bureau").field("agents", &self.len()).finish()
    }
}
