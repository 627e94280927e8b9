//! The owner's record of its subnet: members, commitments, revealed weights, bonds. Pure
//! and synchronous; [`owner`](super::owner) does the messaging and the ledger around it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use agent_core::ledger::{Escrow, EscrowId};
use agent_core::Address;

use super::commit_reveal::{check_weights, commitment};
use super::wire::{
    deposit_deal, stake_deal, Commit, DropReason, DroppedWeight, Member, Register, RegisterRefusal, Reveal,
    RevealedWeights, Role, Roster, SubnetId, Uid, UidWeight, UnstakeRefusal, WeightsDropped, WeightsRefusal,
};
use super::yuma::{self, Outcome, Params, SparseRow, YumaError};

/// A member, the escrow holding its stake, and what pruning needs to know about it.
#[derive(Debug, Clone)]
struct Entry {
    member: Member,
    /// The stake escrow the owner locked for a validator; `None` once released.
    stake_escrow: Option<EscrowId>,
    /// Tokens in that escrow.
    locked: u128,
    /// Set when the validator asked to unstake: its stake counts for nothing from then on,
    /// even while the release is still to be made.
    unstaked: bool,
    /// The epoch open when it registered (for the immunity period).
    registered_epoch: u64,
    /// When it registered, on the book's clock (the tie-break among equal pruning scores).
    registered_at: u64,
    /// Its incentive at the last close that scored anything: the lowest is pruned first.
    pruning_score: f64,
}

/// A validator's stake lock, for checking on the ledger: who it is, and what its escrow must
/// name.
#[derive(Debug, Clone)]
pub(crate) struct StakeLock {
    pub(crate) uid: Uid,
    pub(crate) agent: Address,
    pub(crate) wallet: Address,
    /// `None` once the validator has unstaked: nothing counts.
    pub(crate) escrow: Option<EscrowId>,
}

/// What closing an epoch decided (before anything is paid).
#[derive(Debug, Clone)]
pub(crate) struct Closed {
    pub(crate) closed: u64,
    pub(crate) scored: Option<u64>,
    pub(crate) members: Vec<Member>,
    pub(crate) outcome: Option<Arc<Outcome>>,
    /// For each validator some of whose revealed weights did not count: its agent, and what
    /// to tell it.
    pub(crate) dropped: Vec<(Address, WeightsDropped)>,
}

/// The rules the book enforces, from the owner's configuration.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub(crate) subnet: SubnetId,
    pub(crate) commit_reveal: bool,
    pub(crate) reveal_delay: u64,
    pub(crate) max_uids: u16,
    pub(crate) immunity_epochs: u64,
    pub(crate) registration_fee: u128,
    pub(crate) min_stake: u128,
}

impl Rules {
    /// The least deposit a registration as `role` must bring.
    pub(crate) fn min_deposit(&self, role: Role) -> u128 {
        match role {
            Role::Miner => self.registration_fee,
            Role::Validator => self.registration_fee.saturating_add(self.min_stake),
        }
    }
}

/// A registration's place: a fresh uid, or a pruned miner's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Fresh(Uid),
    Pruning(Uid),
}

/// Weights as recorded: the vector, and when (on the book's clock) they were fixed: at the
/// commit with commit-reveal, at the reveal without.
type Recorded = (Vec<UidWeight>, u64);

/// The subnet as its owner keeps it.
#[derive(Debug)]
pub(crate) struct Book {
    rules: Rules,
    epoch: u64,
    version: u64,
    /// Counts registrations and weight settings, to order them: weights fixed before a uid
    /// was given to a new member do not count for it.
    clock: u64,
    members: Vec<Entry>,
    by_agent: HashMap<Address, Uid>,
    /// Commitments of the epochs whose reveals are still accepted, with when they were made.
    commits: HashMap<(u64, Uid), ([u8; 32], u64)>,
    /// Revealed weights, by the epoch they count for; emptied as epochs are scored.
    reveals: BTreeMap<u64, BTreeMap<Uid, Recorded>>,
    /// The weights published for each validator: the last that were scored (with
    /// commit-reveal), or the last set (without).
    published: HashMap<Uid, (u64, Vec<UidWeight>)>,
    /// When each uid was last given to a new member after pruning (0: never).
    reassigned_at: Vec<u64>,
    bonds: Vec<SparseRow>,
    /// Runs the epochs, reusing the memory of the last outcome once nobody holds it.
    yuma: yuma::Yuma,
    /// The last outcome, shared with the report that gave it out: handed back to `yuma` at
    /// the next close if that report has been dropped by then.
    last: Option<Arc<Outcome>>,
}

impl Book {
    pub(crate) fn new(rules: Rules) -> Book {
        Book {
            rules,
            epoch: 0,
            version: 0,
            clock: 0,
            members: Vec::new(),
            by_agent: HashMap::new(),
            commits: HashMap::new(),
            reveals: BTreeMap::new(),
            published: HashMap::new(),
            reassigned_at: Vec::new(),
            bonds: Vec::new(),
            yuma: yuma::Yuma::new(),
            last: None,
        }
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    pub(crate) fn rules(&self) -> &Rules {
        &self.rules
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    pub(crate) fn members(&self) -> Vec<Member> {
        self.members.iter().map(|e| e.member.clone()).collect()
    }

    pub(crate) fn roster(&self, owner_wallet: Option<Address>) -> Roster {
        Roster {
            subnet: self.rules.subnet,
            epoch: self.epoch,
            version: self.version,
            commit_reveal: self.rules.commit_reveal,
            reveal_delay: self.rules.reveal_delay,
            registration_fee: self.rules.registration_fee,
            owner_wallet,
            members: self.members(),
        }
    }

    /// The miner to prune for a newcomer when the subnet is full: among miners past their
    /// immunity period, the lowest pruning score, then the earliest registered, then the
    /// lowest uid. `None` if every miner is still immune (or there are none).
    fn prunable(&self) -> Option<Uid> {
        self.members
            .iter()
            .filter(|e| e.member.role == Role::Miner)
            .filter(|e| e.registered_epoch.saturating_add(self.rules.immunity_epochs) <= self.epoch)
            .min_by(|a, b| {
                a.pruning_score
                    .total_cmp(&b.pruning_score)
                    .then(a.registered_at.cmp(&b.registered_at))
                    .then(a.member.uid.cmp(&b.member.uid))
            })
            .map(|e| e.member.uid)
    }

    /// Everything about a registration that needs no ledger: where it would go.
    pub(crate) fn check_register(&self, register: &Register, from: Address) -> Result<Slot, RegisterRefusal> {
        if register.subnet != self.rules.subnet {
            return Err(RegisterRefusal::WrongSubnet { expected: self.rules.subnet, got: register.subnet });
        }
        register.check(from)?;
        if let Some(&uid) = self.by_agent.get(&register.agent) {
            return Err(RegisterRefusal::AlreadyRegistered { uid });
        }
        let slot = if self.members.len() < usize::from(self.rules.max_uids) {
            // Below max_uids, a u16, so the count fits.
            let uid =
                Uid::try_from(self.members.len()).map_err(|_| RegisterRefusal::Full { max: self.rules.max_uids })?;
            Slot::Fresh(uid)
        } else {
            self.prunable().map(Slot::Pruning).ok_or(RegisterRefusal::Full { max: self.rules.max_uids })?
        };
        let min = self.rules.min_deposit(register.role);
        if min > 0 && register.deposit.is_none() {
            return Err(RegisterRefusal::DepositRequired { min });
        }
        Ok(slot)
    }

    /// Registers `register` (checked again: the book may have changed while the ledger was
    /// read) with `locked` tokens of stake in `stake_escrow`; its uid, and the member pruned
    /// to make room, if any.
    pub(crate) fn add(
        &mut self,
        register: &Register,
        from: Address,
        locked: u128,
        stake_escrow: Option<EscrowId>,
    ) -> Result<(Uid, Option<Member>), RegisterRefusal> {
        let slot = self.check_register(register, from)?;
        let (stake, stake_escrow) = match register.role {
            Role::Validator => (locked, stake_escrow),
            Role::Miner => (0, None),
        };
        let registered_at = self.tick();
        let (uid, pruned) = match slot {
            Slot::Fresh(uid) => (uid, None),
            Slot::Pruning(uid) => (uid, Some(usize::from(uid))),
        };
        let member = Member { uid, agent: register.agent, wallet: register.wallet, role: register.role, stake };
        let entry = Entry {
            member,
            stake_escrow,
            locked: stake,
            unstaked: false,
            registered_epoch: self.epoch,
            registered_at,
            pruning_score: 0.0,
        };
        let pruned = match pruned {
            None => {
                self.members.push(entry);
                self.reassigned_at.push(0);
                None
            }
            Some(i) => {
                let old = std::mem::replace(&mut self.members[i], entry);
                self.by_agent.remove(&old.member.agent);
                self.reassigned_at[i] = registered_at;
                // The new member inherits nothing: no bonds held in it, none held by it.
                if let Some(row) = self.bonds.get_mut(i) {
                    row.clear();
                }
                for row in &mut self.bonds {
                    row.retain(|&(j, _)| j != i);
                }
                self.published.remove(&uid);
                Some(old.member)
            }
        };
        self.by_agent.insert(register.agent, uid);
        self.version += 1;
        Ok((uid, pruned))
    }

    /// Starts the validator `from`'s unstaking: from now on its stake counts for nothing.
    /// The escrow to release, its amount and where it goes.
    pub(crate) fn unstake(&mut self, from: Address) -> Result<(Uid, EscrowId, u128), UnstakeRefusal> {
        let uid = *self.by_agent.get(&from).ok_or(UnstakeRefusal::NotAValidator)?;
        let entry = &mut self.members[usize::from(uid)];
        if entry.member.role != Role::Validator {
            return Err(UnstakeRefusal::NotAValidator);
        }
        let escrow = entry.stake_escrow.ok_or(UnstakeRefusal::NoStake)?;
        if !entry.unstaked {
            entry.unstaked = true;
            entry.member.stake = 0;
            self.version += 1;
        }
        Ok((uid, escrow, entry.locked))
    }

    /// Records that `uid`'s stake escrow was released.
    pub(crate) fn unstaked(&mut self, uid: Uid) {
        if let Some(entry) = self.members.get_mut(usize::from(uid)) {
            entry.stake_escrow = None;
        }
    }

    /// The validator `from`, and where its stake is locked.
    fn validator(&self, from: Address) -> Result<&Entry, WeightsRefusal> {
        let uid = *self.by_agent.get(&from).ok_or(WeightsRefusal::NotAValidator)?;
        let entry = &self.members[usize::from(uid)];
        if entry.member.role != Role::Validator {
            return Err(WeightsRefusal::NotAValidator);
        }
        Ok(entry)
    }

    /// The stake lock of the validator `from`, to check on the ledger before a commit or
    /// reveal.
    pub(crate) fn stake_lock_of(&self, from: Address) -> Result<StakeLock, WeightsRefusal> {
        let entry = self.validator(from)?;
        Ok(lock_of(entry))
    }

    /// Every validator's stake lock, to check at an epoch's close.
    pub(crate) fn stake_locks(&self) -> Vec<StakeLock> {
        self.members.iter().filter(|e| e.member.role == Role::Validator).map(lock_of).collect()
    }

    /// Checks a commit; the validator's uid if it may be recorded.
    pub(crate) fn check_commit(&self, commit: &Commit, from: Address) -> Result<Uid, WeightsRefusal> {
        let subnet = self.rules.subnet;
        if commit.subnet != subnet {
            return Err(WeightsRefusal::WrongSubnet { expected: subnet, got: commit.subnet });
        }
        commit.check(from)?;
        let uid = self.validator(from)?.member.uid;
        if !self.rules.commit_reveal {
            return Err(WeightsRefusal::CommitRevealOff);
        }
        if commit.epoch != self.epoch {
            return Err(WeightsRefusal::WrongEpoch { current: self.epoch, got: commit.epoch });
        }
        if self.commits.contains_key(&(commit.epoch, uid)) {
            return Err(WeightsRefusal::AlreadyCommitted { epoch: commit.epoch });
        }
        Ok(uid)
    }

    /// Records a commit after [`check_commit`](Self::check_commit) and the stake check.
    pub(crate) fn commit(&mut self, commit: &Commit, from: Address) -> Result<Uid, WeightsRefusal> {
        let uid = self.check_commit(commit, from)?;
        let at = self.tick();
        self.commits.insert((commit.epoch, uid), (commit.commitment, at));
        Ok(uid)
    }

    /// Checks a reveal; the validator's uid if it may be recorded.
    pub(crate) fn check_reveal(&self, reveal: &Reveal, from: Address) -> Result<Uid, WeightsRefusal> {
        let subnet = self.rules.subnet;
        if reveal.subnet != subnet {
            return Err(WeightsRefusal::WrongSubnet { expected: subnet, got: reveal.subnet });
        }
        reveal.check(from)?;
        let uid = self.validator(from)?.member.uid;
        let epoch = reveal.epoch;
        if self.rules.commit_reveal {
            if epoch == self.epoch {
                return Err(WeightsRefusal::RevealTooEarly { epoch, reveal_in: epoch + 1 });
            }
            if epoch > self.epoch {
                return Err(WeightsRefusal::WrongEpoch { current: self.epoch, got: epoch });
            }
            // Accepted up to the close of epoch + reveal_delay, which scores it.
            if epoch.saturating_add(self.rules.reveal_delay) < self.epoch {
                return Err(WeightsRefusal::RevealTooLate { epoch });
            }
        } else if epoch != self.epoch {
            return Err(WeightsRefusal::WrongEpoch { current: self.epoch, got: epoch });
        }
        if self.reveals.get(&epoch).is_some_and(|r| r.contains_key(&uid)) {
            return Err(WeightsRefusal::AlreadyRevealed { epoch });
        }
        if self.rules.commit_reveal {
            let (committed, _) = self.commits.get(&(epoch, uid)).ok_or(WeightsRefusal::CommitMissing { epoch })?;
            let opened = commitment(subnet, epoch, &reveal.validator, &reveal.weights, &reveal.salt);
            if *committed != opened {
                return Err(WeightsRefusal::CommitMismatch { epoch });
            }
        }
        check_weights(&reveal.weights, Some(self.members.len())).map_err(WeightsRefusal::InvalidWeights)?;
        Ok(uid)
    }

    /// Records a reveal after [`check_reveal`](Self::check_reveal) and the stake check.
    /// With commit-reveal it stays unpublished until scored; without, it is published now.
    pub(crate) fn reveal(&mut self, reveal: &Reveal, from: Address) -> Result<Uid, WeightsRefusal> {
        let uid = self.check_reveal(reveal, from)?;
        let fixed_at = match self.commits.get(&(reveal.epoch, uid)) {
            Some(&(_, at)) if self.rules.commit_reveal => at,
            _ => self.tick(),
        };
        self.reveals.entry(reveal.epoch).or_default().insert(uid, (reveal.weights.clone(), fixed_at));
        if !self.rules.commit_reveal {
            self.published.insert(uid, (reveal.epoch, reveal.weights.clone()));
        }
        Ok(uid)
    }

    pub(crate) fn revealed(&self, uid: Uid) -> RevealedWeights {
        match self.published.get(&uid) {
            Some((epoch, weights)) => RevealedWeights { uid, epoch: Some(*epoch), weights: weights.clone() },
            None => RevealedWeights { uid, epoch: None, weights: Vec::new() },
        }
    }

    /// Closes the open epoch: records each validator's checked stake (`stakes`, by uid;
    /// missing means none), scores the epoch whose weights are in (the one `reveal_delay`
    /// before with commit-reveal, this one without) with Yuma Consensus over `emission`
    /// tokens, publishes those weights, keeps the new bonds and pruning scores, and opens
    /// the next epoch. Nothing changes on an error.
    pub(crate) fn close(
        &mut self,
        stakes: &HashMap<Uid, u128>,
        emission: u64,
        params: &Params,
    ) -> Result<Closed, YumaError> {
        let closed = self.epoch;
        let scored = if self.rules.commit_reveal { closed.checked_sub(self.rules.reveal_delay) } else { Some(closed) };
        let n = self.members.len();
        let mut members = self.members();
        for m in members.iter_mut().filter(|m| m.role == Role::Validator) {
            m.stake = stakes.get(&m.uid).copied().unwrap_or(0);
        }
        let outcome = match scored {
            Some(epoch) if n > 0 => {
                let stake_vector: Vec<u64> =
                    members.iter().map(|m| u64::try_from(m.stake).unwrap_or(u64::MAX)).collect();
                let revealed = self.reveals.get(&epoch);
                let weights: Vec<SparseRow> = (0..n)
                    .map(|i| match Uid::try_from(i).ok().and_then(|uid| revealed?.get(&uid)) {
                        Some((row, fixed_at)) => self.current_row(row, *fixed_at),
                        None => Vec::new(),
                    })
                    .collect();
                // A validator without stake now keeps no bonds: subtensor would still pay it
                // dividends on them this epoch, so stake released just before a close would
                // be paid as if it were still there.
                let bonds: Vec<SparseRow> = (0..n)
                    .map(|i| match self.bonds.get(i) {
                        Some(row) if stake_vector[i] > 0 => row.iter().copied().filter(|&(j, _)| j < n).collect(),
                        _ => Vec::new(),
                    })
                    .collect();
                let inputs = yuma::Inputs { stakes: &stake_vector, weights: &weights, bonds: &bonds, emission };
                if let Some(unshared) = self.last.take().and_then(|last| Arc::try_unwrap(last).ok()) {
                    self.yuma.recycle(unshared);
                }
                self.yuma.run(&inputs, params)?;
                self.yuma.take_outcome().map(Arc::new)
            }
            _ => None,
        };
        let dropped = match (&outcome, scored) {
            (Some(outcome), Some(epoch)) => self.dropped_weights(epoch, closed, &members, outcome),
            _ => Vec::new(),
        };
        // Decided: apply.
        for (entry, member) in self.members.iter_mut().zip(&members) {
            entry.member.stake = member.stake;
        }
        if let (Some(outcome), Some(epoch)) = (&outcome, scored) {
            // Into the rows the book already has, so they keep their memory too.
            self.bonds.clone_from(&outcome.bonds);
            self.last = Some(Arc::clone(outcome));
            for (entry, incentive) in self.members.iter_mut().zip(&outcome.incentive) {
                entry.pruning_score = *incentive;
            }
            // Scored, so now public: a copier gets them reveal_delay epochs after they were
            // committed, when they are that much out of date.
            if self.rules.commit_reveal {
                for (&uid, (weights, _)) in self.reveals.get(&epoch).into_iter().flatten() {
                    self.published.insert(uid, (epoch, weights.clone()));
                }
            }
        }
        self.epoch += 1;
        self.version += 1;
        // Reveals are accepted for the epochs that reveal_delay still covers and no other:
        // drop the commitments and reveals of everything older.
        let keep_from =
            if self.rules.commit_reveal { self.epoch.saturating_sub(self.rules.reveal_delay) } else { self.epoch };
        self.commits.retain(|(epoch, _), _| *epoch >= keep_from);
        self.reveals.retain(|epoch, _| *epoch >= keep_from);
        Ok(Closed { closed, scored, members, outcome, dropped })
    }

    /// The revealed weights for `epoch` that did not count in `outcome` (scored at the close
    /// of `closed`, with `members`' stakes as counted then), by validator: whole rows of
    /// validators without stake or without a permit, which Yuma ignores; weights on uids
    /// reassigned since they were fixed, or out of range, which [`current_row`](Self::current_row)
    /// leaves out; and weights on the validator itself, which Yuma masks.
    fn dropped_weights(
        &self,
        epoch: u64,
        closed: u64,
        members: &[Member],
        outcome: &Outcome,
    ) -> Vec<(Address, WeightsDropped)> {
        let n = self.members.len();
        let Some(revealed) = self.reveals.get(&epoch) else { return Vec::new() };
        revealed
            .iter()
            .filter_map(|(&uid, (row, fixed_at))| {
                let i = usize::from(uid);
                let member = members.get(i)?;
                let whole_row = if member.stake == 0 {
                    Some(DropReason::NoStake)
                } else if !outcome.validator_permits.get(i).copied().unwrap_or(false) {
                    Some(DropReason::NoValidatorPermit)
                } else {
                    None
                };
                let dropped: Vec<DroppedWeight> = row
                    .iter()
                    .filter(|w| w.weight > 0)
                    .filter_map(|w| {
                        let j = usize::from(w.uid);
                        let reason = whole_row.or(if j >= n {
                            Some(DropReason::UnknownUid)
                        } else if self.reassigned_at[j] >= *fixed_at {
                            Some(DropReason::UidReassigned)
                        } else if j == i {
                            Some(DropReason::OwnUid)
                        } else {
                            None
                        })?;
                        Some(DroppedWeight { uid: w.uid, weight: w.weight, reason })
                    })
                    .collect();
                let notice = WeightsDropped { subnet: self.rules.subnet, epoch, closed, uid, dropped };
                (!notice.dropped.is_empty()).then_some((member.agent, notice))
            })
            .collect()
    }

    /// A recorded weight row as Yuma's sparse row, without the weights on uids given to a
    /// new member after the weights were fixed (they were meant for the pruned one, as
    /// subtensor ignores weights set before their target registered) and without uids out
    /// of range (a reveal names each uid at most once: [`check_weights`] refused it
    /// otherwise).
    fn current_row(&self, row: &[UidWeight], fixed_at: u64) -> SparseRow {
        let n = self.members.len();
        row.iter()
            .map(|w| (usize::from(w.uid), f64::from(w.weight)))
            .filter(|&(j, _)| j < n && self.reassigned_at[j] < fixed_at)
            .collect()
    }
}

fn lock_of(entry: &Entry) -> StakeLock {
    StakeLock {
        uid: entry.member.uid,
        agent: entry.member.agent,
        wallet: entry.member.wallet,
        escrow: if entry.unstaked { None } else { entry.stake_escrow },
    }
}

/// What a registration deposit must be: from the registering agent's wallet to the
/// owner's wallet, arbitrated by the owner's wallet, naming [`deposit_deal`], holding at
/// least `min`. Returns its amount.
pub(crate) fn check_deposit(
    escrow: Option<&Escrow>,
    subnet: SubnetId,
    register: &Register,
    owner_wallet: Address,
    min: u128,
) -> Result<u128, RegisterRefusal> {
    let escrow = escrow.ok_or(RegisterRefusal::DepositNotFound)?;
    let not_a_payment = |detail: &str| RegisterRefusal::DepositNotAPayment { detail: detail.to_owned() };
    if escrow.payer != register.wallet {
        return Err(not_a_payment("the payer must be the registering agent's wallet"));
    }
    if escrow.beneficiary != owner_wallet || escrow.arbiter != owner_wallet {
        return Err(not_a_payment("the beneficiary and the arbiter must both be the owner's wallet"));
    }
    if escrow.deal != Some(deposit_deal(subnet, &register.agent)) {
        return Err(not_a_payment("the deal must be this agent's deposit in this subnet"));
    }
    if escrow.amount < min {
        return Err(RegisterRefusal::DepositTooSmall { min, got: escrow.amount });
    }
    Ok(escrow.amount)
}

/// Whether `escrow` is still `lock`'s stake: locked by the owner's wallet for the
/// validator's wallet, arbitrated by the owner's wallet, naming [`stake_deal`], holding at
/// least `min_stake`. The amount staked, or 0.
pub(crate) fn counted_stake(
    escrow: Option<&Escrow>,
    subnet: SubnetId,
    lock: &StakeLock,
    owner_wallet: Address,
    min_stake: u128,
) -> u128 {
    match escrow {
        Some(e)
            if e.payer == owner_wallet
                && e.arbiter == owner_wallet
                && e.beneficiary == lock.wallet
                && e.deal == Some(stake_deal(subnet, &lock.agent))
                && e.amount >= min_stake =>
        {
            e.amount
        }
        _ => 0,
    }
}
