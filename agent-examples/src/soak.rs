//! The soak test's agents (`soak --role receiver|sender`, driven by
//! `agent-examples/tests/soak.rs`): receivers that record every request they handle in
//! their bureau's storage on disk before answering, so that exactly-once can be checked
//! after kill -9 and restarts, and senders that request work from receivers found through
//! the almanac and pay into the ledger, remembering what was acknowledged.
//!
//! Every identity is derived from a fixed seed, so a restarted receiver is the same agents
//! on the same libp2p peer, and the driver can name every agent and wallet without asking.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{RemoteLedger, TxHash};
use agent_core::transport::NetworkConfig;
use agent_core::{Address, Agent, Bureau, Config, Context, Identity, MailboxConfig, RequestError};
use almanac::{AlmanacResolver, RemoteAlmanac};
use libp2p::Multiaddr;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use crate::market::distributed::NodeAddress;

/// A unit of work a sender asks a receiver to do; `id` is unique across the whole run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema, agent_core::Message)]
pub struct Work {
    /// Sender node, agent and sequence, packed by [`message_id`].
    pub id: u64,
}

/// A receiver's answer: the work with this id is recorded on disk.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema, agent_core::Message)]
pub struct Done {
    /// The id of the [`Work`] answered.
    pub id: u64,
}

/// The id of the `sequence`th request of agent `agent` of sender node `node`.
pub fn message_id(node: usize, agent: usize, sequence: u64) -> u64 {
    ((node as u64 & 0xffff) << 48) | ((agent as u64 & 0xffff) << 32) | (sequence & 0xffff_ffff)
}

/// The agent `agent` of receiver node `node`.
pub fn receiver_identity(node: usize, agent: usize) -> Identity {
    Identity::from_seed(&format!("soak receiver {node}.{agent}"))
}

/// The agent `agent` of sender node `node`.
pub fn sender_identity(node: usize, agent: usize) -> Identity {
    Identity::from_seed(&format!("soak sender {node}.{agent}"))
}

/// The wallet of a sender agent (what [`Context::wallet`] uses for it).
pub fn sender_wallet(node: usize, agent: usize) -> Address {
    sender_identity(node, agent).derive("wallet").address()
}

/// The only account that may mint on the soak's ledger.
pub fn mint() -> Identity {
    Identity::from_seed("soak mint")
}

/// Where every sender's transfers go.
pub fn sink() -> Address {
    Identity::from_seed("soak sink").address()
}

/// The seed of receiver node `node`'s libp2p key: the same peer id after each restart.
pub fn receiver_node_seed(node: usize) -> String {
    format!("soak receiver node {node}")
}

/// The storage key under which a receiver counts how often it handled `id`.
fn handled_key(id: u64) -> String {
    format!("handled/{id:016x}")
}

/// How long receivers' registrations last: short, so senders go back to the almanac
/// while it is being killed and restarted.
pub const REGISTERED_FOR: Duration = Duration::from_secs(20);

/// Why a soak node could not start, run or be read.
#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    /// An agent could not be built.
    #[error("cannot build the agent")]
    Agent(#[from] agent_core::AgentError),
    /// The bureau failed.
    #[error(transparent)]
    Bureau(#[from] agent_core::BureauError),
    /// The network failed.
    #[error(transparent)]
    Net(#[from] agent_core::net::NetError),
    /// The almanac refused or did not answer.
    #[error("the almanac failed")]
    Almanac(#[from] almanac::AlmanacError),
    /// A receiver's storage could not be read.
    #[error("cannot read the receivers' storage")]
    Storage(#[from] agent_core::StorageError),
    /// An agent of this node stopped.
    #[error("{0} stopped")]
    Stopped(String),
    /// A sender's journal could not be written or read.
    #[error("cannot write or read the journal {path}")]
    Journal {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The options do not describe a soak that can run.
    #[error("{0}")]
    Invalid(String),
}

/// Why a receiver could not record a request.
#[derive(Debug, thiserror::Error)]
enum HandleError {
    #[error("cannot record the work")]
    Storage(#[from] agent_core::StorageError),
    #[error("cannot answer")]
    Reply(#[from] agent_core::ReplyError),
}

/// A receiver node, serving until dropped.
pub struct Receivers {
    /// Its agents' bureau.
    pub bureau: Bureau,
    /// Where it listens.
    pub address: NodeAddress,
    /// Keeps the agents registered in the almanac.
    pub registrar: almanac::Registrar,
}

/// Starts receiver node `node` with `agents` agents, its storage in `data_dir`, listening on
/// `listen` as the peer of [`receiver_node_seed`], and registers its agents in `almanac`
/// (retrying for up to 30 s: the almanac may be restarting). Each agent handles [`Work`]
/// by counting it in its storage, waiting until that is on disk, and only then answering
/// [`Done`]: an answered request is a handled one, and a second handling would show as a
/// count of two.
pub async fn serve_receivers(
    node: usize,
    agents: usize,
    data_dir: &Path,
    listen: Multiaddr,
    almanac: &NodeAddress,
) -> Result<Receivers, SoakError> {
    let bureau = Bureau::with_config(Config::default().with_storage_dir(data_dir))?;
    for agent in 0..agents {
        let mut receiver = Agent::builder(format!("receiver {node}.{agent}"))
            .identity(receiver_identity(node, agent))
            .mailbox(MailboxConfig::default().with_acknowledge(agent_core::Acknowledge::WhenHandled))
            .build()?;
        receiver.on_message(|ctx: Context, _from: Address, Work { id }: Work| async move {
            let storage = ctx.storage()?;
            let key = handled_key(id);
            let times = storage.get::<u32>(&key)?.unwrap_or(0) + 1;
            storage.set(&key, &times)?;
            storage.flush().await?;
            if times > 1 {
                tracing::error!(id, times, "work handled more than once");
            }
            ctx.reply(Done { id }).await?;
            Ok::<(), HandleError>(())
        });
        bureau.add(receiver)?;
    }
    let directory = Arc::new(RemoteAlmanac::new(almanac.peer_id, almanac.addrs.clone())?);
    let resolver = Arc::new(AlmanacResolver::new(directory.clone()));
    let config = NetworkConfig::new(vec![listen], resolver)
        .with_keypair(agent_core::net::node_keypair(&receiver_node_seed(node)));
    let info = bureau.listen(config).await?;
    let registrar_config =
        almanac::RegistrarConfig::default().with_ttl(REGISTERED_FOR).with_attribute("soak", "receiver");
    let mut attempts = 0;
    let registrar = loop {
        match almanac::register_bureau(&bureau, directory.clone(), registrar_config.clone()).await {
            Ok(registrar) => break registrar,
            Err(error) if attempts < 60 => {
                attempts += 1;
                tracing::debug!(%error, attempts, "the almanac is not answering yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error.into()),
        }
    };
    let address = NodeAddress { peer_id: info.peer_id, addrs: info.listen_addrs };
    Ok(Receivers { bureau, address, registrar })
}

/// How many times each receiver agent of node `node` handled each work id, read from the
/// node's storage in `data_dir` (the node must be stopped: the store is opened here).
pub async fn read_handled(node: usize, agents: usize, data_dir: &Path) -> Result<BTreeMap<u64, u32>, SoakError> {
    let bureau = Bureau::with_config(Config::default().with_storage_dir(data_dir))?;
    let mut handled = BTreeMap::new();
    for agent in 0..agents {
        let receiver =
            Agent::builder(format!("receiver {node}.{agent}")).identity(receiver_identity(node, agent)).build()?;
        let address = bureau.add(receiver)?;
        let ctx = bureau.context(address).ok_or_else(|| SoakError::Stopped(format!("receiver {node}.{agent}")))?;
        let storage = ctx.storage()?;
        for key in storage.keys()? {
            let Some(id) = key.strip_prefix("handled/").and_then(|hex| u64::from_str_radix(hex, 16).ok()) else {
                continue;
            };
            let times = storage.get::<u32>(&key)?.unwrap_or(0);
            *handled.entry(id).or_insert(0) += times;
        }
    }
    bureau.shutdown().await?;
    Ok(handled)
}

/// What a sender node was told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Send requests and transfers.
    Run,
    /// Start nothing new.
    Pause,
}

/// How a sender node's agents behave.
#[derive(Debug, Clone)]
pub struct SenderPlan {
    /// This node's index.
    pub node: usize,
    /// Agents on this node.
    pub agents: usize,
    /// Receiver nodes, and agents on each.
    pub receivers: (usize, usize),
    /// Wait between two requests of one agent.
    pub pace: Duration,
    /// A transfer after every this many requests.
    pub transfer_every: u64,
    /// How long one request or transfer may take.
    pub timeout: Duration,
    /// Seeds the choice of receivers.
    pub seed: u64,
    /// Where every acknowledged request and transfer is appended ([`read_journal`]).
    pub journal: std::path::PathBuf,
}

/// What a sender node saw fail, and how much it saw acknowledged (what exactly is in its
/// [journal](read_journal)).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct SenderReport {
    /// Requests answered with the matching [`Done`].
    pub acknowledged: u64,
    /// Requests without an answer, by cause.
    pub failed: BTreeMap<String, u64>,
    /// Answers that did not match their request (must stay empty).
    pub mismatched: Vec<u64>,
    /// Transfers the ledger acknowledged.
    pub transactions: u64,
    /// Transfers that failed or were not answered in time.
    pub transactions_failed: u64,
}

/// One line of a sender's journal.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Acknowledged {
    /// The request with this id was answered.
    Request(u64),
    /// The ledger acknowledged this transfer from this wallet.
    Transfer(Address, TxHash),
}

/// Appends what is acknowledged to a file as it happens, so that a sender's memory does
/// not grow with the length of the run (the soak measures that memory).
struct Journal {
    file: Mutex<std::io::BufWriter<std::fs::File>>,
}

impl Journal {
    fn create(path: &Path) -> Result<Journal, SoakError> {
        let file =
            std::fs::File::create(path).map_err(|source| SoakError::Journal { path: path.to_owned(), source })?;
        Ok(Journal { file: Mutex::new(std::io::BufWriter::new(file)) })
    }

    fn append(&self, entry: &Acknowledged) {
        use std::io::Write;
        let mut file = self.file.lock();
        let written =
            serde_json::to_writer(&mut *file, entry).map_err(std::io::Error::from).and_then(|()| file.write_all(b"\n"));
        if let Err(error) = written {
            // The driver then finds the entry missing and fails the run, naming it.
            tracing::error!(%error, ?entry, "cannot write the journal");
        }
    }

    fn flush(&self) -> std::io::Result<()> {
        use std::io::Write;
        self.file.lock().flush()
    }
}

/// Reads a sender's journal (see [`SenderPlan::journal`]).
pub fn read_journal(path: &Path) -> Result<Vec<Acknowledged>, SoakError> {
    let text = std::fs::read_to_string(path).map_err(|source| SoakError::Journal { path: path.to_owned(), source })?;
    text.lines()
        .map(|line| {
            serde_json::from_str(line).map_err(|e| SoakError::Journal { path: path.to_owned(), source: e.into() })
        })
        .collect()
}

/// A running sender node: its agents loop while the phase is [`Phase::Run`].
pub struct Senders {
    /// Their bureau.
    pub bureau: Bureau,
    phase: watch::Sender<Phase>,
    busy: Arc<AtomicUsize>,
    report: Arc<Mutex<SenderReport>>,
    journal: Arc<Journal>,
    journal_path: std::path::PathBuf,
    requests: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts sender node `plan.node`: a bureau on loopback that finds receivers through
/// `almanac` and pays through `ledger`. Its agents start paused.
pub async fn start_senders(
    plan: SenderPlan,
    almanac: &NodeAddress,
    ledger: &NodeAddress,
) -> Result<Senders, SoakError> {
    let ledger = Arc::new(RemoteLedger::new(ledger.peer_id, ledger.addrs.clone())?);
    let bureau = Bureau::with_config(Config::default().with_ledger(ledger))?;
    let mut contexts = Vec::new();
    for agent in 0..plan.agents {
        let sender = Agent::builder(format!("sender {}.{agent}", plan.node))
            .identity(sender_identity(plan.node, agent))
            .build()?;
        let address = bureau.add(sender)?;
        contexts.push(bureau.context(address).ok_or_else(|| SoakError::Stopped(format!("sender {agent}")))?);
    }
    let directory = Arc::new(RemoteAlmanac::new(almanac.peer_id, almanac.addrs.clone())?);
    bureau
        .listen(NetworkConfig::new(crate::market::distributed::loopback(), Arc::new(AlmanacResolver::new(directory))))
        .await?;
    let (phase, _) = watch::channel(Phase::Pause);
    let busy = Arc::new(AtomicUsize::new(0));
    let report = Arc::new(Mutex::new(SenderReport::default()));
    let journal = Arc::new(Journal::create(&plan.journal)?);
    let requests = Arc::new(AtomicU64::new(0));
    let receivers: Vec<Address> = (0..plan.receivers.0)
        .flat_map(|node| (0..plan.receivers.1).map(move |agent| receiver_identity(node, agent).address()))
        .collect();
    if receivers.is_empty() {
        return Err(SoakError::Invalid("the soak needs at least one receiver".into()));
    }
    let receivers = Arc::new(receivers);
    let tasks = contexts
        .into_iter()
        .enumerate()
        .map(|(agent, ctx)| {
            let looping = SenderLoop {
                ctx,
                plan: plan.clone(),
                agent,
                receivers: receivers.clone(),
                phase: phase.subscribe(),
                busy: busy.clone(),
                report: report.clone(),
                journal: journal.clone(),
                requests: requests.clone(),
            };
            tokio::spawn(looping.run())
        })
        .collect();
    Ok(Senders { bureau, phase, busy, report, journal, journal_path: plan.journal.clone(), requests, tasks })
}

impl Senders {
    /// Lets the agents send, or stops them starting anything new; on a pause, waits (at
    /// most `within`) until nothing is in flight and says whether that happened.
    pub async fn set_phase(&self, phase: Phase, within: Duration) -> bool {
        self.phase.send_replace(phase);
        if phase == Phase::Run {
            return true;
        }
        let deadline = tokio::time::Instant::now() + within;
        while self.busy.load(Ordering::SeqCst) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Requests started so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// What was acknowledged and what failed so far; the journal is flushed first.
    pub fn report(&self) -> Result<SenderReport, SoakError> {
        self.journal.flush().map_err(|source| SoakError::Journal { path: self.journal_path.clone(), source })?;
        Ok(self.report.lock().clone())
    }

    /// How many requests were answered so far.
    pub fn acknowledged(&self) -> u64 {
        self.report.lock().acknowledged
    }

    /// Stops the agents and the bureau.
    pub async fn shutdown(self) -> Result<(), SoakError> {
        for task in &self.tasks {
            task.abort();
        }
        self.bureau.shutdown().await?;
        Ok(())
    }
}

/// One sender agent's loop.
struct SenderLoop {
    ctx: Context,
    plan: SenderPlan,
    agent: usize,
    receivers: Arc<Vec<Address>>,
    phase: watch::Receiver<Phase>,
    busy: Arc<AtomicUsize>,
    report: Arc<Mutex<SenderReport>>,
    journal: Arc<Journal>,
    requests: Arc<AtomicU64>,
}

impl SenderLoop {
    async fn run(mut self) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.plan.seed ^ message_id(self.plan.node, self.agent, 0));
        let wallet = self.ctx.wallet().ok();
        let mut sequence = 0u64;
        loop {
            if self.phase.wait_for(|phase| *phase == Phase::Run).await.is_err() {
                return;
            }
            // Counted busy before the phase is read again: a pause that sees no one busy
            // knows no one will start.
            self.busy.fetch_add(1, Ordering::SeqCst);
            if *self.phase.borrow() != Phase::Run {
                self.busy.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            sequence += 1;
            self.requests.fetch_add(1, Ordering::Relaxed);
            let id = message_id(self.plan.node, self.agent, sequence);
            let target = self.receivers[rng.gen_range(0..self.receivers.len())];
            let answer = self.ctx.request::<Work, Done>(target, Work { id }, self.plan.timeout).await;
            {
                let mut report = self.report.lock();
                match answer {
                    Ok(Done { id: answered }) if answered == id => {
                        report.acknowledged += 1;
                        self.journal.append(&Acknowledged::Request(id));
                    }
                    Ok(_) => report.mismatched.push(id),
                    Err(error) => *report.failed.entry(failure_kind(&error).to_owned()).or_insert(0) += 1,
                }
            }
            if let Some(wallet) = wallet.as_ref().filter(|_| sequence.is_multiple_of(self.plan.transfer_every.max(1))) {
                let paid =
                    tokio::time::timeout(self.plan.timeout, wallet.transfer(sink(), 1, format!("soak {id}"))).await;
                let mut report = self.report.lock();
                match paid {
                    Ok(Ok(receipt)) => {
                        report.transactions += 1;
                        self.journal.append(&Acknowledged::Transfer(wallet.address(), receipt.hash));
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "a transfer failed");
                        report.transactions_failed += 1;
                    }
                    Err(_) => report.transactions_failed += 1,
                }
            }
            self.busy.fetch_sub(1, Ordering::SeqCst);
            tokio::time::sleep(self.plan.pace).await;
        }
    }
}

/// A short name for why a request got no answer, for the report.
fn failure_kind(error: &RequestError) -> &'static str {
    match error {
        RequestError::Send(failure) if failure.may_have_been_delivered() => "maybe delivered",
        RequestError::Send(_) => "not delivered",
        RequestError::Timeout { .. } => "timeout",
        RequestError::NoReply { .. } => "no reply",
        RequestError::HandlerFailed { .. } => "handler failed",
        RequestError::WrongReplyType { .. } => "wrong reply type",
        RequestError::Stopped { .. } => "stopped",
        RequestError::ReplyRefused { .. } => "reply refused",
        _ => "other",
    }
}
