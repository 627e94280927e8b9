//! The subnet owner: registers members, records commitments and weights, and at each
//! epoch's close runs Yuma Consensus and pays emissions from its treasury.
//!
//! [`Owner::serve`] makes an agent the owner of one subnet. It answers [`Register`],
//! [`RosterQuery`], [`Commit`], [`Reveal`], [`Unstake`] and [`WeightsQuery`], and pushes the
//! [`Roster`] to every miner, side by side, whenever it changes. Epochs close when
//! [`Owner::close_epoch`] is called, or every [`Config::with_tempo`] if a tempo is set.
//!
//! # Money
//!
//! - **Registration** costs [`Config::with_registration_fee`]: the agent locks a deposit
//!   from its wallet to the owner's wallet, arbitrated by the owner's wallet, naming
//!   [`deposit_deal`](super::deposit_deal), and the owner takes it into its treasury.
//! - **Stake** is paid in with the same deposit (fee plus stake) and locked straight back
//!   for the validator: an escrow from the owner's wallet to the validator's wallet,
//!   arbitrated by the owner's wallet, naming [`stake_deal`], with a
//!   deadline that never passes. The ledger lets only an escrow's payer or arbiter settle
//!   it, so the validator cannot take its stake back by itself, and the owner cannot refund
//!   it to itself: the only way out is a release, which pays the validator. Unstaking is an
//!   [`Unstake`] request: the stake stops counting at once (weights refused, no influence,
//!   no bonds at the next close), then the owner releases the escrow. There is no
//!   slashing.
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
//! At most [`Config::with_max_uids`] members (a full subnet prunes its weakest non-immune
//! miner for a newcomer); commitments and reveals are kept for the epochs whose reveals are
//! still accepted (the reveal delay); the bonds matrix is uids × uids. Roster pushes wait at
//! most [`Config::with_push_timeout`]. The record lives in memory:
//! dropping the agent (or restarting its process) forgets the subnet.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use agent_core::{Address, Agent, Context, Wallet, WalletError};
use parking_lot::Mutex;

use agent_core::ledger::{EscrowId, LedgerError};

use super::book::{check_deposit, counted_stake, Book, Rules, StakeLock};
use super::wire::{
    stake_deal, Commit, Member, Register, RegisterRefusal, Registered, Reveal, Role, Roster, RosterQuery, SubnetId,
    Uid, Unstake, UnstakeRefusal, Unstaked, WeightsAnswer, WeightsDropped, WeightsQuery, WeightsRefusal,
};
use super::yuma::{Outcome, Params, YumaError};

/// How an owner runs its subnet. Every setter states its default.
#[derive(Debug, Clone)]
pub struct Config {
    subnet: SubnetId,
    params: Params,
    emission: u64,
    max_uids: u16,
    immunity_epochs: u64,
    registration_fee: u128,
    min_stake: u128,
    commit_reveal: bool,
    reveal_delay: u64,
    tempo: Option<Duration>,
    push_timeout: Duration,
    owner_payee: Option<Address>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            subnet: 1,
            params: Params::default(),
            emission: 1_000_000,
            max_uids: 256,
            immunity_epochs: 12,
            registration_fee: 1_000,
            min_stake: 1,
            commit_reveal: true,
            reveal_delay: 3,
            tempo: None,
            push_timeout: Duration::from_secs(1),
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

    /// Most members, miners and validators together (default 256, at least 1). When every
    /// uid is taken, a registration prunes the miner with the lowest incentive at the last
    /// scored close among those past their immunity period (ties: the earliest registered),
    /// and takes its uid; if every miner is immune, it is refused with
    /// [`RegisterRefusal::Full`]. Validators are never pruned.
    pub fn with_max_uids(mut self, max_uids: u16) -> Self {
        self.max_uids = max_uids.max(1);
        self
    }

    /// How many epochs after registering a miner cannot be pruned (default 12, about
    /// subtensor's 4 096 blocks at its default tempo of 360). Keep it above the reveal delay
    /// plus one: a miner's first weights are scored that many epochs after it registers,
    /// and until then its incentive is zero.
    pub fn with_immunity_epochs(mut self, epochs: u64) -> Self {
        self.immunity_epochs = epochs;
        self
    }

    /// What a registration costs, miner or validator (default 1 000): the registering
    /// agent deposits it in an escrow to the owner's wallet, which the owner takes into its
    /// treasury, so it is recycled into later emissions. Zero makes miners' registration
    /// free. Throwaway identities that would fill the subnet each pay it.
    pub fn with_registration_fee(mut self, fee: u128) -> Self {
        self.registration_fee = fee;
        self
    }

    /// The least stake a validator may register with, and below which a stake counts as
    /// none (default 1).
    pub fn with_min_stake(mut self, min_stake: u128) -> Self {
        self.min_stake = min_stake.max(1);
        self
    }

    /// Whether validators commit a hash first and reveal it later (default on). See
    /// [`commit_reveal`](super::commit_reveal) for the timing.
    pub fn with_commit_reveal(mut self, on: bool) -> Self {
        self.commit_reveal = on;
        self
    }

    /// With commit-reveal, how many epochs after the epoch they are committed in weights
    /// are scored and published (default 3, at least 1): weights committed in epoch `e`
    /// count, and become public, at the close of epoch `e + delay`. A copier can then only
    /// replay weights `delay + 1` epochs old.
    pub fn with_reveal_delay(mut self, epochs: u64) -> Self {
        self.reveal_delay = epochs.max(1);
        self
    }

    /// Closes an epoch every `tempo` on the owner agent's own timer (default none: epochs
    /// close only when [`Owner::close_epoch`] is called).
    pub fn with_tempo(mut self, tempo: Duration) -> Self {
        self.tempo = Some(tempo);
        self
    }

    /// How long the owner waits for the roster to reach the miners after a registration,
    /// an unstake or a close (default 1 s). The roster is sent to every miner side by side;
    /// a miner that has not taken it by then misses this version and gets the next.
    pub fn with_push_timeout(mut self, timeout: Duration) -> Self {
        self.push_timeout = timeout;
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

    /// Whether validators commit first and reveal later.
    pub fn commit_reveal(&self) -> bool {
        self.commit_reveal
    }

    /// What a registration costs.
    pub fn registration_fee(&self) -> u128 {
        self.registration_fee
    }

    /// With commit-reveal, how many epochs after their own weights are scored.
    pub fn reveal_delay(&self) -> u64 {
        self.reveal_delay
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
    /// Yuma's outcome, indexed by uid (`None` when nothing was scored). Shared with the owner,
    /// which reuses its memory for a later epoch once every report holding it is dropped.
    pub outcome: Option<Arc<Outcome>>,
    /// Tokens distributed (0 when nothing was scored).
    pub emission: u64,
    /// The owner's cut: transferred to the payee if one is set, else it stayed in the
    /// treasury.
    pub owner_cut: u64,
    /// Transfers made.
    pub payouts: Vec<Payout>,
    /// Transfers that failed, and why; their tokens stayed in the treasury.
    pub failed: Vec<(Payout, WalletError)>,
    /// The validators some of whose scored weights did not count, and which: each was sent
    /// its [`WeightsDropped`].
    pub dropped: Vec<WeightsDropped>,
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
        let book = Book::new(Rules {
            subnet: config.subnet,
            commit_reveal: config.commit_reveal,
            reveal_delay: config.reveal_delay,
            max_uids: config.max_uids,
            immunity_epochs: config.immunity_epochs,
            registration_fee: config.registration_fee,
            min_stake: config.min_stake,
        });
        let tempo = config.tempo;
        let owner = Owner { inner: Arc::new(Inner { config, book: Mutex::new(book), closing: Default::default() }) };
        let o = owner.clone();
        agent.on_message(move |ctx: Context, from: Address, register: Register| {
            let o = o.clone();
            async move {
                let answer = match o.register(&ctx, from, &register).await {
                    Ok((uid, stake)) => Registered::Accepted { uid, epoch: o.epoch(), stake },
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
                    Ok(()) => WeightsAnswer::Committed {
                        epoch: commit.epoch,
                        reveal_in: commit.epoch + 1,
                        scored_at: commit.epoch + o.inner.config.reveal_delay,
                    },
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
        agent.on_message(move |ctx: Context, from: Address, unstake: Unstake| {
            let o = o.clone();
            async move {
                let answer = match o.unstake(&ctx, from, &unstake).await {
                    Ok(amount) => Unstaked::Released { amount },
                    Err(why) => {
                        tracing::debug!(%from, reason = %why, "unstake refused");
                        Unstaked::Refused(why)
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
            dropped: Vec::new(),
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
        report.dropped = self.tell_dropped(ctx, closed.dropped).await;
        self.push_roster(ctx).await;
        Ok(report)
    }

    /// Tells each validator which of its scored weights did not count, side by side, waiting
    /// at most [`Config::with_push_timeout`] for each to take the message (as the roster
    /// push); the notices, for the report.
    async fn tell_dropped(&self, ctx: &Context, dropped: Vec<(Address, WeightsDropped)>) -> Vec<WeightsDropped> {
        let timeout = self.inner.config.push_timeout;
        let mut sends = tokio::task::JoinSet::new();
        for (validator, notice) in &dropped {
            tracing::info!(
                subnet = notice.subnet,
                uid = notice.uid,
                epoch = notice.epoch,
                dropped = notice.dropped.len(),
                "revealed weights did not count; telling the validator"
            );
            let (ctx, validator, notice) = (ctx.clone(), *validator, notice.clone());
            sends.spawn(async move {
                match tokio::time::timeout(timeout, ctx.send(validator, notice)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(%validator, error = %e.failure(), "a validator was not told of its dropped weights"),
                    Err(_) => tracing::warn!(%validator, ?timeout, "a validator did not take the news of its dropped weights in time"),
                }
            });
        }
        // Each send ends by its own timeout, so this wait does too.
        while sends.join_next().await.is_some() {}
        dropped.into_iter().map(|(_, notice)| notice).collect()
    }

    /// The stake `lock` counts for now: its escrow's amount if it is still open and still
    /// the owner's lock for this validator, else 0.
    async fn counted_stake(&self, wallet: &Wallet, lock: &StakeLock) -> Result<u128, WalletError> {
        let Some(id) = lock.escrow else { return Ok(0) };
        let escrow = wallet.escrow(id).await?;
        let config = &self.inner.config;
        Ok(counted_stake(escrow.as_ref(), config.subnet, lock, wallet.address(), config.min_stake))
    }

    /// Registers `register`: takes its deposit, locks a validator's stake back for it, and
    /// records the member (pruning a miner if the subnet is full). Its uid and stake escrow.
    async fn register(
        &self,
        ctx: &Context,
        from: Address,
        register: &Register,
    ) -> Result<(Uid, Option<EscrowId>), RegisterRefusal> {
        self.inner.book.lock().check_register(register, from)?;
        let config = &self.inner.config;
        let mut paid = None;
        let mut stake = 0;
        let mut stake_escrow = None;
        if let Some(deposit) = register.deposit {
            let unavailable = |e: WalletError| RegisterRefusal::LedgerUnavailable { detail: e.to_string() };
            let wallet = ctx.wallet().map_err(unavailable)?;
            let escrow = wallet.escrow(deposit).await.map_err(unavailable)?;
            let min = self.inner.book.lock().rules().min_deposit(register.role);
            let amount = check_deposit(escrow.as_ref(), config.subnet, register, wallet.address(), min)?;
            // Taking it: the release pays the owner's wallet. Refunded or taken since it was
            // read, it is gone, and the ledger says so.
            wallet.release(deposit).await.map_err(|e| match e {
                WalletError::Ledger(LedgerError::UnknownEscrow(_)) => RegisterRefusal::DepositNotFound,
                other => unavailable(other),
            })?;
            paid = Some(amount);
            if register.role == Role::Validator {
                stake = amount.saturating_sub(config.registration_fee);
                // Locked by the owner for the validator: the ledger lets only an escrow's
                // payer or arbiter settle it, so the validator cannot end it; a release is
                // the only way out (the deadline never passes, so the owner cannot refund it
                // to itself), and it pays the validator.
                let deal = Some(stake_deal(config.subnet, &register.agent));
                match wallet.lock(stake, register.wallet, u64::MAX, wallet.address(), deal).await {
                    Ok((id, _)) => stake_escrow = Some(id),
                    Err(e) => {
                        self.give_back(&wallet, register.wallet, amount, None).await;
                        return Err(unavailable(e));
                    }
                }
            }
        }
        let added = self.inner.book.lock().add(register, from, stake, stake_escrow);
        let (uid, pruned) = match added {
            Ok(added) => added,
            Err(why) => {
                // The book changed while the ledger was busy (a close, say): undo.
                if let (Some(amount), Ok(wallet)) = (paid, ctx.wallet()) {
                    self.give_back(&wallet, register.wallet, amount.saturating_sub(stake), stake_escrow).await;
                }
                return Err(why);
            }
        };
        if let Some(old) = pruned {
            tracing::info!(subnet = config.subnet, uid, pruned = %old.agent, "a miner was pruned to make room");
        }
        tracing::debug!(subnet = config.subnet, uid, role = ?register.role, %from, "registered");
        self.push_roster(ctx).await;
        Ok((uid, stake_escrow))
    }

    /// Returns a deposit that could not be used: `amount` by transfer, and a stake escrow by
    /// release. Best effort: a failure is logged.
    async fn give_back(&self, wallet: &Wallet, to: Address, amount: u128, stake: Option<EscrowId>) {
        if let Some(id) = stake {
            if let Err(e) = wallet.release(id).await {
                tracing::warn!(%to, error = %e, "a stake escrow for a refused registration could not be released");
            }
        }
        if amount > 0 {
            if let Err(e) = wallet.transfer(to, amount, "subnet deposit returned").await {
                tracing::warn!(%to, error = %e, "a deposit for a refused registration could not be returned");
            }
        }
    }

    /// Ends a validator's stake: it stops counting at once, then the escrow is released to
    /// the validator's wallet. The amount released.
    async fn unstake(&self, ctx: &Context, from: Address, unstake: &Unstake) -> Result<u128, UnstakeRefusal> {
        let subnet = self.inner.config.subnet;
        if unstake.subnet != subnet {
            return Err(UnstakeRefusal::WrongSubnet { expected: subnet, got: unstake.subnet });
        }
        unstake.check(from)?;
        let (uid, escrow, amount) = self.inner.book.lock().unstake(from)?;
        let unavailable = |e: WalletError| UnstakeRefusal::LedgerUnavailable { detail: e.to_string() };
        let wallet = ctx.wallet().map_err(unavailable)?;
        wallet.release(escrow).await.map_err(unavailable)?;
        self.inner.book.lock().unstaked(uid);
        tracing::debug!(subnet, uid, amount = %amount, "unstaked");
        self.push_roster(ctx).await;
        Ok(amount)
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

    /// Sends the roster to every miner, side by side, and waits at most
    /// [`Config::with_push_timeout`] for them to take it; a miner that does not (offline, or
    /// its mailbox full) keeps its older roster until a later push, and refuses validators
    /// it does not know yet with a typed reason.
    async fn push_roster(&self, ctx: &Context) {
        let roster = self.roster_for(ctx);
        let timeout = self.inner.config.push_timeout;
        let mut pushes = tokio::task::JoinSet::new();
        for miner in roster.miners().map(|m| m.agent) {
            let (ctx, roster) = (ctx.clone(), roster.clone());
            pushes.spawn(async move {
                match tokio::time::timeout(timeout, ctx.send(miner, roster)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(%miner, error = %e.failure(), "the roster did not reach a miner"),
                    Err(_) => tracing::warn!(%miner, ?timeout, "a miner did not take the roster in time"),
                }
            });
        }
        // Each push ends by its own timeout, so this wait does too; dropping the set (if
        // this future is dropped) aborts what is left.
        while pushes.join_next().await.is_some() {}
    }
}
