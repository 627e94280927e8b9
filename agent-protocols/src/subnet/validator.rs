//! A validator: stakes, queries miners, scores their answers, and commits and reveals its
//! weights.
//!
//! [`Validator::serve`] gives an agent the handler that routes [`TaskResult`]s back to the
//! queries waiting for them; everything else is methods on the [`Validator`] handle, called
//! with the agent's [`Context`] from outside its handlers (a query waits for a message the
//! agent's own loop must be free to receive). A typical epoch:
//!
//! ```text
//! let roster = validator.roster(&ctx).await?;
//! validator.reveal(&ctx, roster.epoch - 1).await?;          // last epoch's weights
//! let scores = validator.score_miners(&ctx, &roster, &request, |m, answer| ...).await;
//! validator.commit(&ctx, roster.epoch, weights_from_scores(&scores)).await?;
//! ```
//!
//! Or [`Validator::set_weights`], which commits or (with commit-reveal off) reveals at once.
//!
//! When some of its weights do not count at the close that scores them, the owner says which
//! and why ([`WeightsDropped`]): take the notices with [`Validator::take_drop_notices`] or wait
//! for the next with [`Validator::next_drop_notice`].
//!
//! # Bounds
//!
//! At most [`Config::with_max_pending`] queries wait at once (more fail with
//! [`QueryError::TooManyPending`]), each for at most [`Config::with_query_timeout`]. The
//! weights and salts of commitments not yet revealed are kept for the last 16 epochs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::EscrowId;
use agent_core::{Address, Agent, Context, Identity, RequestError, SendFailure};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

use super::client::{self, RegisterError};
use super::commit_reveal::{check_weights, commitment, new_salt, Salt, WeightsProblem};
use super::wire::{
    Commit, Member, Reveal, RevealedWeights, Role, Roster, SubnetId, Task, TaskOutcome, TaskRefusal, TaskResult, Uid,
    UidWeight, Unstake, UnstakeRefusal, Unstaked, WeightsAnswer, WeightsDropped, WeightsQuery, WeightsRefusal,
};

/// How many epochs of unrevealed commitments a validator remembers.
const KEPT_EPOCHS: usize = 16;
/// How many [`WeightsDropped`] notices a validator keeps until they are taken (the oldest go
/// first).
const KEPT_DROP_NOTICES: usize = 64;

/// How a validator works. Every setter states its default.
#[derive(Debug, Clone)]
pub struct Config {
    subnet: SubnetId,
    query_timeout: Duration,
    max_pending: usize,
    deposit_window: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            subnet: 1,
            query_timeout: Duration::from_secs(10),
            max_pending: 4096,
            deposit_window: client::DEPOSIT_WINDOW,
        }
    }
}

impl Config {
    /// The subnet validated (default 1).
    pub fn with_subnet(mut self, subnet: SubnetId) -> Self {
        self.subnet = subnet;
        self
    }

    /// How long a query waits for the miner's result (default 10 s).
    pub fn with_query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// Most queries waiting at once (default 4096, at least 1).
    pub fn with_max_pending(mut self, max: usize) -> Self {
        self.max_pending = max.max(1);
        self
    }

    /// How long the registration deposit (fee plus stake) stays refundable only by the
    /// owner taking it (default 10 minutes): if the owner refuses the registration, or never
    /// answers, this wallet may refund the deposit after that.
    pub fn with_deposit_window(mut self, window: Duration) -> Self {
        self.deposit_window = window;
        self
    }
}

/// Why a stake was not released.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnstakeError {
    /// The owner answered and refused (with `LedgerUnavailable`, the stake already no
    /// longer counts: ask again).
    #[error("refused: {0}")]
    Refused(UnstakeRefusal),
    /// No answer: the stake may or may not have been released.
    #[error("the owner did not answer: {0}")]
    Request(#[from] RequestError),
}

/// Why a query got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The miner answered with a refusal.
    #[error("refused: {0}")]
    Refused(TaskRefusal),
    /// No result within the query timeout (the task may still be served; its result is
    /// then dropped).
    #[error("no result within {0:?}")]
    Timeout(Duration),
    /// The task could not be sent; the miner never saw it.
    #[error("not sent: {0}")]
    Send(SendFailure),
    /// The request could not be encoded; nothing was sent.
    #[error("the request could not be encoded: {0}")]
    Encode(String),
    /// The answer is not the subnet's response type.
    #[error("the answer could not be decoded: {0}")]
    Decode(String),
    /// Too many queries already wait; nothing was sent.
    #[error("too many queries in flight")]
    TooManyPending,
}

/// Why weights were not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The owner answered and refused; nothing was recorded.
    #[error("refused: {0}")]
    Refused(WeightsRefusal),
    /// No answer: the commit or reveal may or may not have been recorded.
    #[error("the owner did not answer: {0}")]
    Request(#[from] RequestError),
    /// This validator committed nothing for the epoch (or forgot it); nothing was sent.
    #[error("nothing committed here for epoch {epoch}")]
    NothingCommitted {
        /// The epoch.
        epoch: u64,
    },
    /// The weights are unusable; nothing was sent.
    #[error("invalid weights: {0}")]
    Weights(#[from] WeightsProblem),
    /// The owner answered with something other than what was asked (a bug on its side).
    #[error("unexpected answer: {0:?}")]
    Unexpected(WeightsAnswer),
}

/// A validator: a handle on the agent that validates. Cloning is cheap.
#[derive(Clone)]
pub struct Validator {
    inner: Arc<Inner>,
}

type Pending = Mutex<HashMap<(Address, u64), oneshot::Sender<TaskOutcome>>>;

struct Inner {
    identity: Identity,
    owner: Address,
    config: Config,
    pending: Pending,
    next_id: AtomicU64,
    /// Committed but not yet revealed: epoch → (weights, salt).
    secrets: Mutex<BTreeMap<u64, (Vec<UidWeight>, Salt)>>,
    stake: Mutex<Option<EscrowId>>,
    /// The owner's notices of weights that did not count, not yet taken.
    drop_notices: Mutex<VecDeque<WeightsDropped>>,
    /// Woken when a notice arrives.
    drop_notice_arrived: tokio::sync::Notify,
}

/// Removes a pending query when its wait ends, however it ends.
struct PendingGuard<'a> {
    pending: &'a Pending,
    key: (Address, u64),
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.pending.lock().remove(&self.key);
    }
}

impl Validator {
    /// Makes `agent` (whose key is `identity`) a validator in `owner`'s subnet: installs
    /// the handler for miners' results. Register with [`register`](Self::register) once
    /// the agent runs.
    pub fn serve(agent: &mut Agent, identity: Identity, owner: Address, config: Config) -> Validator {
        let inner = Arc::new(Inner {
            identity,
            owner,
            config,
            pending: Mutex::new(HashMap::new()),
            // Ids start at a random point so results meant for an earlier run are not taken
            // for this one's.
            next_id: AtomicU64::new(rand::random::<u64>() >> 1),
            secrets: Mutex::new(BTreeMap::new()),
            stake: Mutex::new(None),
            drop_notices: Mutex::new(VecDeque::new()),
            drop_notice_arrived: tokio::sync::Notify::new(),
        });
        let validator = Validator { inner };
        let v = validator.clone();
        agent.on_message(move |_ctx: Context, from: Address, result: TaskResult| {
            v.route(from, result);
            async {}
        });
        let v = validator.clone();
        agent.on_message(move |_ctx: Context, from: Address, notice: WeightsDropped| {
            v.keep_drop_notice(from, notice);
            async {}
        });
        validator
    }

    /// Keeps a notice of dropped weights if it comes from this validator's owner, about its
    /// subnet.
    fn keep_drop_notice(&self, from: Address, notice: WeightsDropped) {
        if from != self.inner.owner || notice.subnet != self.subnet() {
            tracing::debug!(%from, "a notice of dropped weights not from this subnet's owner was ignored");
            return;
        }
        tracing::warn!(
            subnet = notice.subnet,
            epoch = notice.epoch,
            dropped = notice.dropped.len(),
            "some of this validator's weights did not count"
        );
        let mut notices = self.inner.drop_notices.lock();
        notices.push_back(notice);
        while notices.len() > KEPT_DROP_NOTICES {
            notices.pop_front();
        }
        drop(notices);
        self.inner.drop_notice_arrived.notify_waiters();
    }

    /// Takes the owner's notices, oldest first, of weights of this validator that did not
    /// count at the close that scored them, and why ([`WeightsDropped`]); the last 64 are
    /// kept until taken.
    pub fn take_drop_notices(&self) -> Vec<WeightsDropped> {
        self.inner.drop_notices.lock().drain(..).collect()
    }

    /// Waits for, and takes, the next notice of dropped weights (the oldest kept, if any).
    pub async fn next_drop_notice(&self) -> WeightsDropped {
        loop {
            // Registered before looking, so a notice that arrives in between still wakes it.
            let arrived = self.inner.drop_notice_arrived.notified();
            if let Some(notice) = self.inner.drop_notices.lock().pop_front() {
                return notice;
            }
            arrived.await;
        }
    }

    /// This validator's agent address.
    pub fn address(&self) -> Address {
        self.inner.identity.address()
    }

    fn subnet(&self) -> SubnetId {
        self.inner.config.subnet
    }

    fn route(&self, from: Address, result: TaskResult) {
        if result.subnet != self.subnet() {
            tracing::debug!(%from, "a task result for another subnet was ignored");
            return;
        }
        match self.inner.pending.lock().remove(&(from, result.id)) {
            // A closed receiver is a query that just gave up: nothing left to tell.
            Some(waiting) => drop(waiting.send(result.outcome)),
            None => tracing::debug!(%from, id = result.id, "a task result nobody waits for was dropped"),
        }
    }

    /// The owner's roster.
    ///
    /// # Errors
    ///
    /// [`RegisterError::Request`] if the owner does not answer; `WrongSubnet` if it serves
    /// another subnet.
    pub async fn roster(&self, ctx: &Context) -> Result<Roster, RegisterError> {
        client::roster(ctx, self.inner.owner, self.subnet()).await
    }

    /// Registers as a validator with `stake` tokens: locks a deposit of the subnet's
    /// registration fee plus `stake` from this agent's wallet for the owner, which takes it,
    /// keeps the fee and locks the stake back for this validator, in an escrow only the
    /// owner can end (see [`unstake`](Self::unstake)). Its uid.
    ///
    /// # Errors
    ///
    /// [`RegisterError`]: refused (with the owner's reason; the deposit is refundable after
    /// [`Config::with_deposit_window`]), no answer, or the deposit could not be locked.
    pub async fn register(&self, ctx: &Context, stake: u128) -> Result<Uid, RegisterError> {
        let roster = self.roster(ctx).await?;
        let amount = roster.registration_fee.saturating_add(stake);
        let window = self.inner.config.deposit_window;
        let deposit = client::deposit(ctx, &self.inner.identity, &roster, amount, window).await?;
        let (uid, escrow) =
            client::register(ctx, &self.inner.identity, self.inner.owner, self.subnet(), Role::Validator, deposit)
                .await?;
        *self.inner.stake.lock() = escrow;
        Ok(uid)
    }

    /// The escrow holding this validator's stake, once registered (and until unstaked).
    pub fn stake_escrow(&self) -> Option<EscrowId> {
        *self.inner.stake.lock()
    }

    /// Asks the owner to end this validator's stake: its weights stop counting at once and
    /// the owner releases the stake escrow to this agent's wallet. The tokens released.
    ///
    /// # Errors
    ///
    /// [`UnstakeError`]: the owner's refusal, or no answer.
    pub async fn unstake(&self, ctx: &Context) -> Result<u128, UnstakeError> {
        let unstake = Unstake::sign(&self.inner.identity, self.subnet());
        match ctx.request::<Unstake, Unstaked>(self.inner.owner, unstake, None).await? {
            Unstaked::Released { amount } => {
                *self.inner.stake.lock() = None;
                Ok(amount)
            }
            Unstaked::Refused(why) => Err(UnstakeError::Refused(why)),
        }
    }

    /// Sends `request` to `miner` as a task and waits for its typed answer.
    ///
    /// Cancel safety: dropping the future forgets the query; a later result is dropped.
    ///
    /// # Errors
    ///
    /// [`QueryError`]: refused by the miner, timed out, not sent, or not decodable.
    pub async fn query<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        ctx: &Context,
        miner: Address,
        request: &Req,
    ) -> Result<Resp, QueryError> {
        let body = serde_json::to_value(request).map_err(|e| QueryError::Encode(e.to_string()))?;
        let value = self.query_value(ctx, miner, body).await?;
        serde_json::from_value(value).map_err(|e| QueryError::Decode(e.to_string()))
    }

    async fn query_value(
        &self,
        ctx: &Context,
        miner: Address,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, QueryError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.inner.pending.lock();
            if pending.len() >= self.inner.config.max_pending {
                return Err(QueryError::TooManyPending);
            }
            pending.insert((miner, id), tx);
        }
        let _guard = PendingGuard { pending: &self.inner.pending, key: (miner, id) };
        let task = Task { subnet: self.subnet(), id, body };
        ctx.send(miner, task).await.map_err(|e| QueryError::Send(e.failure().clone()))?;
        let timeout = self.inner.config.query_timeout;
        match tokio::time::timeout(timeout, rx).await {
            Err(_) | Ok(Err(_)) => Err(QueryError::Timeout(timeout)),
            Ok(Ok(TaskOutcome::Answer(value))) => Ok(value),
            Ok(Ok(TaskOutcome::Refused(why))) => Err(QueryError::Refused(why)),
        }
    }

    /// Queries every miner in `roster` with `request`, side by side, and scores each
    /// answer (or failure) with `score`; the scores by uid, for
    /// [`weights_from_scores`](super::commit_reveal::weights_from_scores).
    pub async fn score_miners<Req, Resp, F>(
        &self,
        ctx: &Context,
        roster: &Roster,
        request: &Req,
        score: F,
    ) -> Vec<(Uid, f64)>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: Fn(&Member, Result<Resp, QueryError>) -> f64,
    {
        let body = match serde_json::to_value(request) {
            Ok(body) => body,
            Err(e) => {
                let error = QueryError::Encode(e.to_string());
                return roster.miners().map(|m| (m.uid, score(m, Err(error.clone())))).collect();
            }
        };
        let mut queries = tokio::task::JoinSet::new();
        for miner in roster.miners() {
            let (v, ctx, body, uid, agent) = (self.clone(), ctx.clone(), body.clone(), miner.uid, miner.agent);
            queries.spawn(async move { (uid, v.query_value(&ctx, agent, body).await) });
        }
        let mut answers = HashMap::new();
        while let Some(joined) = queries.join_next().await {
            if let Ok((uid, answer)) = joined {
                answers.insert(uid, answer);
            }
        }
        roster
            .miners()
            .map(|m| {
                let answer =
                    answers.remove(&m.uid).unwrap_or(Err(QueryError::Timeout(self.inner.config.query_timeout)));
                let typed =
                    answer.and_then(|v| serde_json::from_value(v).map_err(|e| QueryError::Decode(e.to_string())));
                (m.uid, score(m, typed))
            })
            .collect()
    }

    /// Commits to `weights` for `epoch` (the open one), with a fresh salt kept here until
    /// [`reveal`](Self::reveal).
    ///
    /// # Errors
    ///
    /// [`SubmitError`]: the owner's refusal, no answer, or unusable weights.
    pub async fn commit(&self, ctx: &Context, epoch: u64, weights: Vec<UidWeight>) -> Result<(), SubmitError> {
        check_weights(&weights, None)?;
        let salt = new_salt();
        let hash = commitment(self.subnet(), epoch, &self.address(), &weights, &salt);
        let commit = Commit::sign(&self.inner.identity, self.subnet(), epoch, hash);
        match ctx.request::<Commit, WeightsAnswer>(self.inner.owner, commit, None).await? {
            WeightsAnswer::Committed { .. } => {
                let mut secrets = self.inner.secrets.lock();
                secrets.insert(epoch, (weights, salt));
                while secrets.len() > KEPT_EPOCHS {
                    secrets.pop_first();
                }
                Ok(())
            }
            WeightsAnswer::Refused(why) => Err(SubmitError::Refused(why)),
            other => Err(SubmitError::Unexpected(other)),
        }
    }

    /// Reveals the weights committed for `epoch` (from the epoch after it until the close
    /// that scores it, `reveal_delay` epochs after it).
    ///
    /// # Errors
    ///
    /// [`SubmitError`]: the owner's refusal, no answer, or nothing committed here.
    pub async fn reveal(&self, ctx: &Context, epoch: u64) -> Result<(), SubmitError> {
        let (weights, salt) =
            self.inner.secrets.lock().get(&epoch).cloned().ok_or(SubmitError::NothingCommitted { epoch })?;
        let reveal = Reveal::sign(&self.inner.identity, self.subnet(), epoch, weights, salt);
        let answer = self.send_reveal(ctx, reveal).await;
        if answer.is_ok() {
            self.inner.secrets.lock().remove(&epoch);
        }
        answer
    }

    /// Sets `weights` for the open epoch of `roster`: commits them with commit-reveal on,
    /// reveals them at once with it off.
    ///
    /// # Errors
    ///
    /// As [`commit`](Self::commit).
    pub async fn set_weights(
        &self,
        ctx: &Context,
        roster: &Roster,
        weights: Vec<UidWeight>,
    ) -> Result<(), SubmitError> {
        if roster.commit_reveal {
            return self.commit(ctx, roster.epoch, weights).await;
        }
        check_weights(&weights, None)?;
        let reveal = Reveal::sign(&self.inner.identity, self.subnet(), roster.epoch, weights, [0; 32]);
        self.send_reveal(ctx, reveal).await
    }

    async fn send_reveal(&self, ctx: &Context, reveal: Reveal) -> Result<(), SubmitError> {
        match ctx.request::<Reveal, WeightsAnswer>(self.inner.owner, reveal, None).await? {
            WeightsAnswer::Revealed { .. } => Ok(()),
            WeightsAnswer::Refused(why) => Err(SubmitError::Refused(why)),
            other => Err(SubmitError::Unexpected(other)),
        }
    }

    /// The last weights of `uid` that were scored, as the owner publishes them.
    ///
    /// # Errors
    ///
    /// The request's error if the owner does not answer.
    pub async fn last_revealed(&self, ctx: &Context, uid: Uid) -> Result<RevealedWeights, RequestError> {
        ctx.request(self.inner.owner, WeightsQuery { subnet: self.subnet(), uid }, None).await
    }
}
