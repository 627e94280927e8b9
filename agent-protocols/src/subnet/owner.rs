//! The subnet owner: registers members, records commitments and weights, and at each
//! epoch's close runs Yuma Consensus and pays emissions from its treasury.
//!
//! [`Owner::serve`] makes an agent the owner of one subnet. It answers [`Register`],
//! [`RosterQuery`], [`Commit`], [`Reveal`] and [`WeightsQuery`], and pushes the [`Roster`]
//! to every miner whenever it changes. Epochs close when [`Owner::close_epoch`] is called,
//! or every [`Config::with_tempo`] if a tempo is set.
//!
//! # Money
//!
//! - **Stake** stays in the validator's hands, locked: an escrow from its wallet to its own
//!   wallet, arbitrated by the owner's wallet, naming [`stake_deal`](super::stake_deal), refundable no sooner
//!   than [`Config::with_min_lock`] after registration. The owner never holds it. A stake
//!   counts while its escrow is open and not yet refundable; it is checked on the ledger at
//!   registration, at every commit and reveal, and at every close. A validator that releases
//!   or refunds its escrow has no stake from then on (its commits and reveals are refused, it
//!   has no influence in the next close, and miners stop admitting it once the roster says
//!   so). There is no slashing.
//! - **Emissions** are paid from a treasury: the owner agent's own wallet. The owner never
//!   mints; whoever funds the treasury (a mint authority, a sponsor) fixes the total, and
//!   supply is conserved exactly. Each scored epoch distributes
//!   `min(Config::with_emission, treasury balance)` tokens, split by
//!   [`yuma::epoch`](super::yuma::epoch): every uid's incentive and dividends are transferred
//!   to its wallet; the owner's cut stays in the treasury, or goes to
//!   [`Config::with_owner_payee`] if set; tokens Yuma could not allocate stay in the treasury.
//!   A transfer that fails is reported in [`EpochReport::failed`] and its tokens stay in the
//!   treasury; it is not retried.
//!
//! # Bounds and shutdown
//!
//! At most [`Config::with_max_uids`] members; commitments and reveals are kept for the open
//! and the previous epoch only; the bonds matrix is uids × uids. The record lives in memory:
//! dropping the agent (or restarting its process) forgets the subnet.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use agent_core::{Address, Agent, Context, Wallet, WalletError};
use parking_lot::Mutex;

use super::book::{check_stake, Book, StakeLock};
use super::wire::{
    Commit, Member, Register, RegisterRefusal, Registered, Reveal, Role, Roster, RosterQuery, SubnetId, Uid,
    WeightsAnswer, WeightsQuery, WeightsRefusal,
};
use super::yuma::{Outcome, Params, YumaError};

/// How an owner runs its subnet. Every setter states its default.
#[derive(Debug, Clone)]
pub struct Config {
    subnet: SubnetId,
    params: Params,
    emission: u64,
    max_uids: u16,
    min_stake: u128,
    min_lock: Duration,
    commit_reveal: bool,
    tempo: Option<Duration>,
    owner_payee: Option<Address>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            subnet: 1,
            params: Params::default(),
            emission: 1_000_000,
            max_uids: 256,
            min_stake: 1,
            min_lock: Duration::from_secs(3600),
            commit_reveal: true,
            tempo: None,
            owner_payee: None,
        }
    }
}

impl Config {
    /// The subnet's id (default 1).
    pub fn with_subnet(mut self, subnet: SubnetId) -> Self {
        self.subnet = subnet;
        self
    }

    /// Yuma Consensus parameters (default [`Params::default`], subtensor's defaults).
    pub fn with_params(mut self, params: Params) -> Self {
        self.params = params;
        self
    }

    /// Tokens distributed per scored epoch, at most the treasury's balance (default
    /// 1 000 000).
    pub fn with_emission(mut self, emission: u64) -> Self {
        self.emission = emission;
        self
    }

    /// Most members, miners and validators together (default 256); registrations beyond are
    /// refused with [`RegisterRefusal::Full`].
    pub fn with_max_uids(mut self, max_uids: u16) -> Self {
        self.max_uids = max_uids;
        self
    }

    /// The least stake a validator may register with, and below which a stake counts as
    /// none (default 1).
    pub fn with_min_stake(mut self, min_stake: u128) -> Self {
        self.min_stake = min_stake.max(1);
        self
    }

    /// How long after registering a stake escrow must stay unrefundable (default one hour).
    pub fn with_min_lock(mut self, min_lock: Duration) -> Self {
        self.min_lock = min_lock;
        self
    }

    /// Whether validators commit a hash first and reveal a whole epoch later (default on).
    /// See [`commit_reveal`](super::commit_reveal) for the timing.
    pub fn with_commit_reveal(mut self, on: bool) -> Self {
        self.commit_reveal = on;
        self
    }

    /// Closes an epoch every `tempo` on the owner agent's own timer (default none: epochs
    /// close only when [`Owner::close_epoch`] is called).
    pub fn with_tempo(mut self, tempo: Duration) -> Self {
        self.tempo = Some(tempo);
        self
    }

    /// Pays the owner's cut to `payee` (default: it stays in the treasury).
    pub fn with_owner_payee(mut self, payee: Address) -> Self {
        self.owner_payee = Some(payee);
        self
    }

    /// The subnet's id.
    pub fn subnet(&self) -> SubnetId {
        self.subnet
    }

    /// The Yuma parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }
}

/// One payment of an epoch's close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payout {
    /// The member paid.
    pub uid: Uid,
    /// Its wallet.
    pub wallet: Address,
    /// Tokens for its incentive (as a miner).
    pub incentive: u64,
    /// Tokens for its dividends (as a validator).
    pub dividends: u64,
}

impl Payout {
    /// Incentive plus dividends: the amount transferred.
    pub fn total(&self) -> u128 {
        u128::from(self.incentive) + u128::from(self.dividends)
    }
}

/// What closing an epoch did.
#[derive(Debug, Clone)]
pub struct EpochReport {
    /// The epoch closed.
    pub closed: u64,
    /// The epoch whose weights were scored and paid for (`None`: nothing to score yet).
    pub scored: Option<u64>,
    /// The members, with the stakes that counted.
    pub members: Vec<Member>,
    /// Yuma's outcome, indexed by uid (`None` when nothing was scored).
    pub outcome: Option<Outcome>,
    /// Tokens distributed (0 when nothing was scored).
    pub emission: u64,
    /// The owner's cut: transferred to the payee if one is set, else it stayed in the
    /// treasury.
    pub owner_cut: u64,
    /// Transfers made.
    pub payouts: Vec<Payout>,
    /// Transfers that failed, and why; their tokens stayed in the treasury.
    pub failed: Vec<(Payout, WalletError)>,
}

impl EpochReport {
    /// Tokens that left the treasury for members.
    pub fn paid(&self) -> u128 {
        self.payouts.iter().map(Payout::total).sum()
    }

    /// What `uid` was paid (zero if nothing).
    pub fn payout(&self, uid: Uid) -> Payout {
        let wallet = self.members.get(usize::from(uid)).map(|m| m.wallet).unwrap_or(Address::from_bytes([0; 32]));
        self.payouts.iter().find(|p| p.uid == uid).cloned().unwrap_or(Payout {
            uid,
            wallet,
            incentive: 0,
            dividends: 0,
        })
    }
}

/// Why an epoch could not be closed. The epoch stays open; nothing was paid.
#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    /// The owner has no wallet, or the ledger could not be read (treasury, stakes).
    #[error("the ledger could not be read: {0}")]
    Ledger(#[from] WalletError),
    /// Yuma Consensus refused its inputs (a bug: the owner builds them).
    #[error("yuma consensus failed: {0}")]
    Yuma(#[from] YumaError),
}

/// The owner of a subnet: a handle on the agent that serves it. Cloning is cheap.
#[derive(Clone)]
pub struct Owner {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    book: Mutex<Book>,
    /// Held for a whole close, so two closes never interleave.
    closing: tokio::sync::Mutex<()>,
}

impl Owner {
    /// Makes `agent` the owner of the subnet `config` describes.
    pub fn serve(agent: &mut Agent, config: Config) -> Owner {
        let book = Book::new(config.subnet, config.commit_reveal, config.max_uids);
        let tempo = config.tempo;
        let owner = Owner { inner: Arc::new(Inner { config, book: Mutex::new(book), closing: Default::default() }) };
        let o = owner.clone();
        agent.on_message(move |ctx: Context, from: Address, register: Register| {
            let o = o.clone();
            async move {
                let answer = match o.register(&ctx, from, &register).await {
                    Ok(uid) => Registered::Accepted { uid, epoch: o.epoch() },
                    Err(why) => {
                        tracing::debug!(subnet = o.inner.config.subnet, %from, reason = %why, "registration refused");
                        Registered::Refused(why)
                    }
                };
                ctx.reply(answer).await
            }
        });
        let o = owner.clone();
        agent.on_message(move |ctx: Context, _from: Address, _query: RosterQuery| {
            let o = o.clone();
            async move { ctx.reply(o.roster_for(&ctx)).await }
        });
        let o = owner.clone();
        agent.on_message(move |ctx: Context, from: Address, commit: Commit| {
            let o = o.clone();
            async move {
                let answer = match o.commit(&ctx, from, &commit).await {
                    Ok(()) => WeightsAnswer::Committed { epoch: commit.epoch, reveal_in: commit.epoch + 1 },
                    Err(why) => {
                        tracing::debug!(%from, epoch = commit.epoch, reason = %why, "commit refused");
                        WeightsAnswer::Refused(why)
                    }
                };
                ctx.reply(answer).await
            }
        });
        let o = owner.clone();
        agent.on_message(move |ctx: Context, from: Address, reveal: Reveal| {
            let o = o.clone();
            async move {
                let answer = match o.reveal(&ctx, from, &reveal).await {
                    Ok(()) => WeightsAnswer::Revealed { epoch: reveal.epoch },
                    Err(why) => {
                        tracing::debug!(%from, epoch = reveal.epoch, reason = %why, "reveal refused");
                        WeightsAnswer::Refused(why)
                    }
                };
                ctx.reply(answer).await
            }
        });
        let o = owner.clone();
        agent.on_message(move |ctx: Context, _from: Address, query: WeightsQuery| {
            let revealed = o.inner.book.lock().revealed(query.uid);
            async move { ctx.reply(revealed).await }
        });
        if let Some(tempo) = tempo {
            let o = owner.clone();
            agent.on_interval(tempo, move |ctx: Context| {
                let o = o.clone();
                async move {
                    if let Err(e) = o.close_epoch(&ctx).await {
                        tracing::warn!(subnet = o.inner.config.subnet, error = %e, "an epoch could not be closed");
                    }
                }
            });
        }
        owner
    }

    /// The open epoch.
    pub fn epoch(&self) -> u64 {
        self.inner.book.lock().epoch()
    }

    /// The members, by uid, with their stakes as last checked.
    pub fn members(&self) -> Vec<Member> {
        self.inner.book.lock().members()
    }

    /// The subnet's configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The roster as `ctx` (the owner's agent) would send it.
    pub fn roster_for(&self, ctx: &Context) -> Roster {
        let wallet = ctx.wallet().ok().map(|w| w.address());
        self.inner.book.lock().roster(wallet)
    }

    /// Closes the open epoch: checks every validator's stake on the ledger, scores the
    /// epoch whose weights are in (see [`commit_reveal`](super::commit_reveal) for which),
    /// pays its emission from the treasury, opens the next epoch and pushes the new roster to
    /// the miners. `ctx` must be the owner agent's context (its wallet is the treasury).
    ///
    /// Cancel safety: once the epoch has advanced, dropping the future leaves the remaining
    /// payouts unmade (their tokens stay in the treasury). Closes are serialised.
    ///
    /// # Errors
    ///
    /// [`CloseError`] if the treasury or a stake could not be read; the epoch then stays
    /// open and nothing is paid.
    pub async fn close_epoch(&self, ctx: &Context) -> Result<EpochReport, CloseError> {
        let _one_at_a_time = self.inner.closing.lock().await;
        let config = &self.inner.config;
        let wallet = ctx.wallet()?;
        let treasury = wallet.balance().await?;
        let locks = self.inner.book.lock().stake_locks();
        let mut stakes = HashMap::with_capacity(locks.len());
        for lock in &locks {
            stakes.insert(lock.uid, self.counted_stake(&wallet, lock).await?);
        }
        let emission = u64::try_from(treasury.min(u128::from(config.emission))).unwrap_or(u64::MAX);
        let closed = self.inner.book.lock().close(&stakes, emission, &config.params)?;
        let mut report = EpochReport {
            closed: closed.closed,
            scored: closed.scored,
            members: closed.members,
            outcome: closed.outcome,
            emission: 0,
            owner_cut: 0,
            payouts: Vec::new(),
            failed: Vec::new(),
        };
        if let Some(outcome) = &report.outcome {
            report.emission = emission;
            report.owner_cut = outcome.emissions.owner;
            let memo = format!("subnet {} epoch {}", config.subnet, closed.scored.unwrap_or(closed.closed));
            for member in &report.members {
                let uid = usize::from(member.uid);
                let payout = Payout {
                    uid: member.uid,
                    wallet: member.wallet,
                    incentive: outcome.emissions.miners.get(uid).copied().unwrap_or(0),
                    dividends: outcome.emissions.validators.get(uid).copied().unwrap_or(0),
                };
                if payout.total() == 0 {
                    continue;
                }
                match wallet.transfer(member.wallet, payout.total(), memo.clone()).await {
                    Ok(_) => report.payouts.push(payout),
                    Err(e) => {
                        tracing::warn!(uid = member.uid, error = %e, "an emission payout failed; its tokens stay in the treasury");
                        report.failed.push((payout, e));
                    }
                }
            }
            if let Some(payee) = config.owner_payee.filter(|p| *p != wallet.address()) {
                if report.owner_cut > 0 {
                    let cut = Payout { uid: Uid::MAX, wallet: payee, incentive: 0, dividends: report.owner_cut };
                    if let Err(e) = wallet.transfer(payee, u128::from(report.owner_cut), memo).await {
                        tracing::warn!(error = %e, "the owner's cut could not be paid; it stays in the treasury");
                        report.failed.push((cut, e));
                    }
                }
            }
        }
        tracing::info!(
            subnet = config.subnet,
            closed = report.closed,
            scored = ?report.scored,
            paid = %report.paid(),
            "epoch closed"
        );
        self.push_roster(ctx).await;
        Ok(report)
    }

    /// The stake `lock` counts for now: its escrow's amount if it is still a valid lock,
    /// else 0.
    async fn counted_stake(&self, wallet: &Wallet, lock: &StakeLock) -> Result<u128, WalletError> {
        let Some(id) = lock.escrow else { return Ok(0) };
        let escrow = wallet.escrow(id).await?;
        let now = agent_core::envelope::unix_now_ms();
        let config = &self.inner.config;
        Ok(check_stake(escrow.as_ref(), config.subnet, lock, wallet.address(), config.min_stake, now.saturating_add(1))
            .unwrap_or(0))
    }

    async fn register(&self, ctx: &Context, from: Address, register: &Register) -> Result<Uid, RegisterRefusal> {
        self.inner.book.lock().check_register(register, from)?;
        let mut stake = 0;
        if register.role == Role::Validator {
            let unavailable = |e: WalletError| RegisterRefusal::LedgerUnavailable { detail: e.to_string() };
            let wallet = ctx.wallet().map_err(unavailable)?;
            let lock = StakeLock { uid: 0, agent: register.agent, wallet: register.wallet, escrow: register.stake };
            let escrow = match register.stake {
                Some(id) => wallet.escrow(id).await.map_err(unavailable)?,
                None => None,
            };
            let config = &self.inner.config;
            let needed = agent_core::envelope::unix_now_ms().saturating_add(config.min_lock.as_millis() as u64);
            stake = check_stake(escrow.as_ref(), config.subnet, &lock, wallet.address(), config.min_stake, needed)?;
        }
        let uid = self.inner.book.lock().add(register, from, stake)?;
        tracing::debug!(subnet = self.inner.config.subnet, uid, role = ?register.role, %from, "registered");
        self.push_roster(ctx).await;
        Ok(uid)
    }

    /// Refuses with [`WeightsRefusal::NoStake`] unless the validator `from` still has stake.
    async fn check_stake_of(&self, ctx: &Context, from: Address) -> Result<(), WeightsRefusal> {
        let lock = self.inner.book.lock().stake_lock_of(from)?;
        let unavailable = |e: WalletError| WeightsRefusal::LedgerUnavailable { detail: e.to_string() };
        let wallet = ctx.wallet().map_err(unavailable)?;
        match self.counted_stake(&wallet, &lock).await.map_err(unavailable)? {
            0 => Err(WeightsRefusal::NoStake),
            _ => Ok(()),
        }
    }

    async fn commit(&self, ctx: &Context, from: Address, commit: &Commit) -> Result<(), WeightsRefusal> {
        self.inner.book.lock().check_commit(commit, from)?;
        self.check_stake_of(ctx, from).await?;
        self.inner.book.lock().commit(commit, from).map(|_| ())
    }

    async fn reveal(&self, ctx: &Context, from: Address, reveal: &Reveal) -> Result<(), WeightsRefusal> {
        self.inner.book.lock().check_reveal(reveal, from)?;
        self.check_stake_of(ctx, from).await?;
        self.inner.book.lock().reveal(reveal, from).map(|_| ())
    }

    /// Sends the roster to every miner; a miner that misses it keeps its older one (and
    /// refuses validators it does not know yet, with a typed reason).
    async fn push_roster(&self, ctx: &Context) {
        let roster = self.roster_for(ctx);
        let miners: Vec<Address> = roster.miners().map(|m| m.agent).collect();
        for miner in miners {
            if let Err(e) = ctx.send(miner, roster.clone()).await {
                tracing::warn!(%miner, error = %e.failure(), "the roster did not reach a miner");
            }
        }
    }
}
