//! A miner: serves the subnet's tasks to staked validators, highest stake first.
//!
//! [`Miner::serve`] makes an agent a miner with a [`Serve`] implementation: typed requests in,
//! typed responses out (carried as JSON in [`Task`] and [`TaskResult`]).
//!
//! # Admission
//!
//! By default ([`Admission::StakedValidators`]) a task is admitted only from an agent the
//! miner's roster lists as a validator with stake; others get a [`TaskRefusal`] at once
//! (`NotRegistered`, `NotAValidator`, `NoStake`). The roster is the one the owner last pushed
//! (only rosters from the configured owner, and never an older one, are taken).
//!
//! Admitted tasks wait in a queue of at most [`Config::with_capacity`] tasks and are served
//! highest stake first (first come, first served among equal stakes) by
//! [`Config::with_workers`] workers. When the queue is full, a task from a validator with
//! more stake than the least in the queue pushes that one out; otherwise it is refused.
//! Either refusal is [`TaskRefusal::Busy`], sent to the validator concerned, so nothing
//! waits forever.
//!
//! # Shutdown
//!
//! When the agent stops, the workers finish the task in hand, then stop; tasks still queued
//! are refused with [`TaskRefusal::Failed`] if the validators can still be reached.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use agent_core::{Address, Agent, Context, Identity};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Notify;

use super::admission::{Pushed, StakeQueue};
use super::client::{self, RegisterError};
use super::wire::{Role, Roster, SubnetId, Task, TaskOutcome, TaskRefusal, TaskResult, Uid};

/// What a miner does with a task. Typed: requests that do not decode as `Request` are
/// refused with [`TaskRefusal::BadRequest`] before this is called.
#[async_trait::async_trait]
pub trait Serve: Send + Sync + 'static {
    /// The subnet's request type.
    type Request: DeserializeOwned + Send + 'static;
    /// The subnet's response type.
    type Response: Serialize + Send + 'static;

    /// Answers `request` from the validator `from`, or says why not (sent back as
    /// [`TaskRefusal::Failed`]).
    async fn serve(&self, from: Address, request: Self::Request) -> Result<Self::Response, String>;
}

/// Whom a miner serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Admission {
    /// Registered validators with stake, highest stake first (the default).
    #[default]
    StakedValidators,
    /// Anyone; staked validators still go first.
    Anyone,
}

/// How a miner serves. Every setter states its default.
#[derive(Debug, Clone)]
pub struct Config {
    subnet: SubnetId,
    capacity: usize,
    workers: usize,
    admission: Admission,
}

impl Default for Config {
    fn default() -> Self {
        Config { subnet: 1, capacity: 64, workers: 1, admission: Admission::StakedValidators }
    }
}

impl Config {
    /// The subnet served (default 1).
    pub fn with_subnet(mut self, subnet: SubnetId) -> Self {
        self.subnet = subnet;
        self
    }

    /// Most tasks waiting (default 64, at least 1).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Tasks served at once (default 1, at least 1).
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Whom to serve (default [`Admission::StakedValidators`]).
    pub fn with_admission(mut self, admission: Admission) -> Self {
        self.admission = admission;
        self
    }
}

/// A task waiting to be served.
struct Job {
    from: Address,
    id: u64,
    body: serde_json::Value,
}

/// A miner: a handle on the agent that serves. Cloning is cheap.
#[derive(Clone)]
pub struct Miner {
    inner: Arc<Inner>,
}

struct Inner {
    identity: Identity,
    owner: Address,
    config: Config,
    roster: Mutex<Option<Roster>>,
    queue: Mutex<StakeQueue<Job>>,
    ready: Notify,
    closed: AtomicBool,
}

impl Miner {
    /// Makes `agent` (whose key is `identity`) a miner in `owner`'s subnet, answering tasks
    /// with `server`.
    pub fn serve<S: Serve>(
        agent: &mut Agent,
        identity: Identity,
        owner: Address,
        config: Config,
        server: Arc<S>,
    ) -> Miner {
        let inner = Arc::new(Inner {
            identity,
            owner,
            queue: Mutex::new(StakeQueue::new(config.capacity)),
            config,
            roster: Mutex::new(None),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
        });
        let miner = Miner { inner };
        let m = miner.clone();
        agent.on_message(move |_ctx: Context, from: Address, roster: Roster| {
            m.take_roster(from, roster);
            async {}
        });
        let m = miner.clone();
        agent.on_message(move |ctx: Context, from: Address, task: Task| {
            let m = m.clone();
            async move { m.admit(&ctx, from, task).await }
        });
        let m = miner.clone();
        agent.on_startup(move |ctx: Context| {
            for _ in 0..m.inner.config.workers {
                tokio::spawn(work(m.inner.clone(), ctx.clone(), server.clone()));
            }
            async {}
        });
        let m = miner.clone();
        agent.on_shutdown(move |ctx: Context| {
            let m = m.clone();
            async move {
                m.inner.closed.store(true, Ordering::SeqCst);
                m.inner.ready.notify_waiters();
                let left = m.inner.queue.lock().drain();
                for job in left {
                    let refusal = TaskRefusal::Failed { detail: "the miner stopped".into() };
                    refuse(&ctx, m.inner.config.subnet, job.from, job.id, refusal).await;
                }
            }
        });
        miner
    }

    /// Registers this miner with the owner, paying the subnet's registration fee (read
    /// from the roster) as a deposit from this agent's wallet; its uid.
    ///
    /// # Errors
    ///
    /// [`RegisterError`]: refused (with the owner's reason; the deposit is refundable after
    /// the deposit window), no answer, no wallet, or the fee could not be locked.
    pub async fn register(&self, ctx: &Context) -> Result<Uid, RegisterError> {
        let inner = &self.inner;
        let subnet = inner.config.subnet;
        let roster = client::roster(ctx, inner.owner, subnet).await?;
        let deposit =
            client::deposit(ctx, &inner.identity, &roster, roster.registration_fee, client::DEPOSIT_WINDOW).await?;
        let (uid, _) = client::register(ctx, &inner.identity, inner.owner, subnet, Role::Miner, deposit).await?;
        Ok(uid)
    }

    /// The roster the owner last pushed, if any.
    pub fn roster(&self) -> Option<Roster> {
        self.inner.roster.lock().clone()
    }

    /// How many tasks wait to be served.
    pub fn queued(&self) -> usize {
        self.inner.queue.lock().len()
    }

    fn take_roster(&self, from: Address, roster: Roster) {
        if from != self.inner.owner || roster.subnet != self.inner.config.subnet {
            tracing::debug!(%from, "a roster not from this subnet's owner was ignored");
            return;
        }
        let mut held = self.inner.roster.lock();
        if held.as_ref().is_none_or(|h| h.version <= roster.version) {
            *held = Some(roster);
        }
    }

    /// The stake `from` is served with, or why it is not served.
    fn admission(&self, from: Address) -> Result<u128, TaskRefusal> {
        let roster = self.inner.roster.lock();
        let member = roster.as_ref().and_then(|r| r.member(&from));
        let staked = match member {
            None => Err(TaskRefusal::NotRegistered),
            Some(m) if m.role != Role::Validator => Err(TaskRefusal::NotAValidator),
            Some(m) if m.stake == 0 => Err(TaskRefusal::NoStake),
            Some(m) => Ok(m.stake),
        };
        match self.inner.config.admission {
            Admission::StakedValidators => staked,
            Admission::Anyone => Ok(staked.unwrap_or(0)),
        }
    }

    async fn admit(&self, ctx: &Context, from: Address, task: Task) {
        let subnet = self.inner.config.subnet;
        if task.subnet != subnet {
            let refusal = TaskRefusal::WrongSubnet { expected: subnet, got: task.subnet };
            return refuse(ctx, subnet, from, task.id, refusal).await;
        }
        let stake = match self.admission(from) {
            Ok(stake) => stake,
            Err(refusal) => return refuse(ctx, subnet, from, task.id, refusal).await,
        };
        let job = Job { from, id: task.id, body: task.body };
        let pushed = {
            let mut queue = self.inner.queue.lock();
            let pushed = queue.push(stake, job);
            (pushed, queue.len())
        };
        match pushed {
            (Pushed::Queued, _) => self.inner.ready.notify_one(),
            (Pushed::Evicted(out), queued) => {
                self.inner.ready.notify_one();
                refuse(ctx, subnet, out.from, out.id, TaskRefusal::Busy { queued }).await;
            }
            (Pushed::Full(job), queued) => refuse(ctx, subnet, job.from, job.id, TaskRefusal::Busy { queued }).await,
        }
    }
}

/// One worker: serves the queue, highest stake first, until the agent stops.
async fn work<S: Serve>(inner: Arc<Inner>, ctx: Context, server: Arc<S>) {
    let subnet = inner.config.subnet;
    loop {
        let notified = inner.ready.notified();
        tokio::pin!(notified);
        // Registered before the queue is looked at, so a push in between is not missed.
        notified.as_mut().enable();
        if inner.closed.load(Ordering::SeqCst) {
            return;
        }
        let job = inner.queue.lock().pop();
        let Some(job) = job else {
            notified.await;
            continue;
        };
        let outcome = match serde_json::from_value::<S::Request>(job.body) {
            Err(e) => TaskOutcome::Refused(TaskRefusal::BadRequest { detail: e.to_string() }),
            Ok(request) => {
                // In its own task, so a panicking server fails this task, not the worker.
                let (server, from) = (server.clone(), job.from);
                match tokio::spawn(async move { server.serve(from, request).await }).await {
                    Ok(Ok(response)) => match serde_json::to_value(response) {
                        Ok(value) => TaskOutcome::Answer(value),
                        Err(e) => TaskOutcome::Refused(TaskRefusal::Failed { detail: format!("encoding: {e}") }),
                    },
                    Ok(Err(detail)) => TaskOutcome::Refused(TaskRefusal::Failed { detail }),
                    Err(e) => TaskOutcome::Refused(TaskRefusal::Failed { detail: format!("the server failed: {e}") }),
                }
            }
        };
        send_result(&ctx, job.from, TaskResult { subnet, id: job.id, outcome }).await;
    }
}

async fn refuse(ctx: &Context, subnet: SubnetId, to: Address, id: u64, refusal: TaskRefusal) {
    tracing::debug!(%to, id, reason = %refusal, "task refused");
    send_result(ctx, to, TaskResult { subnet, id, outcome: TaskOutcome::Refused(refusal) }).await;
}

async fn send_result(ctx: &Context, to: Address, result: TaskResult) {
    if let Err(e) = ctx.send(to, result).await {
        // The validator stopped or is unreachable; its query times out on its side.
        tracing::debug!(%to, error = %e.failure(), "a task result was not delivered");
    }
}
