//! The owner's record of its subnet: members, commitments, revealed weights, bonds. Pure
//! and synchronous; [`owner`](super::owner) does the messaging and the ledger around it.

use std::collections::{BTreeMap, HashMap};

use agent_core::ledger::{Escrow, EscrowId};
use agent_core::Address;

use super::commit_reveal::{check_weights, commitment};
use super::wire::{
    stake_deal, Commit, Member, Register, RegisterRefusal, Reveal, RevealedWeights, Role, Roster, SubnetId, Uid,
    UidWeight, WeightsRefusal,
};
use super::yuma::{self, Outcome, Params, SparseRow, YumaError};

/// A member and the escrow holding its stake.
#[derive(Debug, Clone)]
struct Entry {
    member: Member,
    stake_escrow: Option<EscrowId>,
}

/// A validator's stake lock, for checking on the ledger: who it is, and what its escrow must
/// name.
#[derive(Debug, Clone)]
pub(crate) struct StakeLock {
    pub(crate) uid: Uid,
    pub(crate) agent: Address,
    pub(crate) wallet: Address,
    pub(crate) escrow: Option<EscrowId>,
}

/// What closing an epoch decided (before anything is paid).
#[derive(Debug, Clone)]
pub(crate) struct Closed {
    pub(crate) closed: u64,
    pub(crate) scored: Option<u64>,
    pub(crate) members: Vec<Member>,
    pub(crate) outcome: Option<Outcome>,
}

/// The subnet as its owner keeps it.
#[derive(Debug)]
pub(crate) struct Book {
    subnet: SubnetId,
    commit_reveal: bool,
    max_uids: u16,
    epoch: u64,
    version: u64,
    members: Vec<Entry>,
    by_agent: HashMap<Address, Uid>,
    /// Commitments of the open epoch and the one before (whose reveals are due now).
    commits: HashMap<(u64, Uid), [u8; 32]>,
    /// Revealed weights, by the epoch they count for; emptied as epochs are scored.
    reveals: BTreeMap<u64, BTreeMap<Uid, Vec<UidWeight>>>,
    last_revealed: HashMap<Uid, (u64, Vec<UidWeight>)>,
    bonds: Vec<SparseRow>,
}

impl Book {
    pub(crate) fn new(subnet: SubnetId, commit_reveal: bool, max_uids: u16) -> Book {
        Book {
            subnet,
            commit_reveal,
            max_uids,
            epoch: 0,
            version: 0,
            members: Vec::new(),
            by_agent: HashMap::new(),
            commits: HashMap::new(),
            reveals: BTreeMap::new(),
            last_revealed: HashMap::new(),
            bonds: Vec::new(),
        }
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    pub(crate) fn members(&self) -> Vec<Member> {
        self.members.iter().map(|e| e.member.clone()).collect()
    }

    pub(crate) fn roster(&self, owner_wallet: Option<Address>) -> Roster {
        Roster {
            subnet: self.subnet,
            epoch: self.epoch,
            version: self.version,
            commit_reveal: self.commit_reveal,
            owner_wallet,
            members: self.members(),
        }
    }

    /// Everything about a registration that needs no ledger.
    pub(crate) fn check_register(&self, register: &Register, from: Address) -> Result<(), RegisterRefusal> {
        if register.subnet != self.subnet {
            return Err(RegisterRefusal::WrongSubnet { expected: self.subnet, got: register.subnet });
        }
        register.check(from)?;
        if let Some(&uid) = self.by_agent.get(&register.agent) {
            return Err(RegisterRefusal::AlreadyRegistered { uid });
        }
        if self.members.len() >= usize::from(self.max_uids) {
            return Err(RegisterRefusal::Full { max: self.max_uids });
        }
        if register.role == Role::Validator && register.stake.is_none() {
            return Err(RegisterRefusal::StakeRequired);
        }
        Ok(())
    }

    /// Registers `register` (checked again: the book may have changed while the ledger was
    /// read) with `stake` tokens locked.
    pub(crate) fn add(&mut self, register: &Register, from: Address, stake: u128) -> Result<Uid, RegisterRefusal> {
        self.check_register(register, from)?;
        // check_register bounds the count by max_uids, a u16.
        let uid = Uid::try_from(self.members.len()).map_err(|_| RegisterRefusal::Full { max: self.max_uids })?;
        let (stake, stake_escrow) = match register.role {
            Role::Validator => (stake, register.stake),
            Role::Miner => (0, None),
        };
        let member = Member { uid, agent: register.agent, wallet: register.wallet, role: register.role, stake };
        self.members.push(Entry { member, stake_escrow });
        self.by_agent.insert(register.agent, uid);
        self.version += 1;
        Ok(uid)
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
        if commit.subnet != self.subnet {
            return Err(WeightsRefusal::WrongSubnet { expected: self.subnet, got: commit.subnet });
        }
        commit.check(from)?;
        let uid = self.validator(from)?.member.uid;
        if !self.commit_reveal {
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
        self.commits.insert((commit.epoch, uid), commit.commitment);
        Ok(uid)
    }

    /// Checks a reveal; the validator's uid if it may be recorded.
    pub(crate) fn check_reveal(&self, reveal: &Reveal, from: Address) -> Result<Uid, WeightsRefusal> {
        if reveal.subnet != self.subnet {
            return Err(WeightsRefusal::WrongSubnet { expected: self.subnet, got: reveal.subnet });
        }
        reveal.check(from)?;
        let uid = self.validator(from)?.member.uid;
        let epoch = reveal.epoch;
        if self.commit_reveal {
            if epoch == self.epoch {
                return Err(WeightsRefusal::RevealTooEarly { epoch, reveal_in: epoch + 1 });
            }
            if epoch > self.epoch {
                return Err(WeightsRefusal::WrongEpoch { current: self.epoch, got: epoch });
            }
            if epoch + 1 < self.epoch {
                return Err(WeightsRefusal::RevealTooLate { epoch });
            }
        } else if epoch != self.epoch {
            return Err(WeightsRefusal::WrongEpoch { current: self.epoch, got: epoch });
        }
        if self.reveals.get(&epoch).is_some_and(|r| r.contains_key(&uid)) {
            return Err(WeightsRefusal::AlreadyRevealed { epoch });
        }
        if self.commit_reveal {
            let committed = self.commits.get(&(epoch, uid)).ok_or(WeightsRefusal::CommitMissing { epoch })?;
            let opened = commitment(self.subnet, epoch, &reveal.validator, &reveal.weights, &reveal.salt);
            if *committed != opened {
                return Err(WeightsRefusal::CommitMismatch { epoch });
            }
        }
        check_weights(&reveal.weights, Some(self.members.len())).map_err(WeightsRefusal::InvalidWeights)?;
        Ok(uid)
    }

    /// Records a reveal after [`check_reveal`](Self::check_reveal) and the stake check.
    pub(crate) fn reveal(&mut self, reveal: &Reveal, from: Address) -> Result<Uid, WeightsRefusal> {
        let uid = self.check_reveal(reveal, from)?;
        self.reveals.entry(reveal.epoch).or_default().insert(uid, reveal.weights.clone());
        self.last_revealed.insert(uid, (reveal.epoch, reveal.weights.clone()));
        Ok(uid)
    }

    pub(crate) fn revealed(&self, uid: Uid) -> RevealedWeights {
        match self.last_revealed.get(&uid) {
            Some((epoch, weights)) => RevealedWeights { uid, epoch: Some(*epoch), weights: weights.clone() },
            None => RevealedWeights { uid, epoch: None, weights: Vec::new() },
        }
    }

    /// Closes the open epoch: records each validator's checked stake (`stakes`, by uid;
    /// missing means none), scores the epoch whose weights are in (the one before with
    /// commit-reveal, this one without) with Yuma Consensus over `emission` tokens, keeps the
    /// new bonds and opens the next epoch. Nothing changes on an error.
    pub(crate) fn close(
        &mut self,
        stakes: &HashMap<Uid, u128>,
        emission: u64,
        params: &Params,
    ) -> Result<Closed, YumaError> {
        let closed = self.epoch;
        let scored = if self.commit_reveal { closed.checked_sub(1) } else { Some(closed) };
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
                        Some(row) => sparse_row(row, n),
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
                Some(yuma::epoch(&inputs, params)?)
            }
            _ => None,
        };
        // Decided: apply.
        for (entry, member) in self.members.iter_mut().zip(&members) {
            entry.member.stake = member.stake;
        }
        if let Some(outcome) = &outcome {
            self.bonds = outcome.bonds.clone();
        }
        self.epoch += 1;
        self.version += 1;
        // Reveals are accepted for the epoch just closed (with commit-reveal) and no other:
        // drop the commitments and reveals of everything older.
        let keep_from = if self.commit_reveal { closed } else { self.epoch };
        self.commits.retain(|(epoch, _), _| *epoch >= keep_from);
        self.reveals.retain(|epoch, _| *epoch >= keep_from);
        Ok(Closed { closed, scored, members, outcome })
    }
}

fn lock_of(entry: &Entry) -> StakeLock {
    StakeLock {
        uid: entry.member.uid,
        agent: entry.member.agent,
        wallet: entry.member.wallet,
        escrow: entry.stake_escrow,
    }
}

/// A revealed weight row as Yuma's sparse row, without uids at or above `n` (a reveal names
/// each uid at most once: [`check_weights`] refused it otherwise).
fn sparse_row(row: &[UidWeight], n: usize) -> SparseRow {
    row.iter().map(|w| (usize::from(w.uid), f64::from(w.weight))).filter(|&(j, _)| j < n).collect()
}

/// What a stake escrow must be: from and to the validator's wallet, arbitrated by the
/// owner's wallet, naming [`stake_deal`], holding at least `min_stake`, and not refundable
/// before `locked_until_ms`. Returns the amount staked.
pub(crate) fn check_stake(
    escrow: Option<&Escrow>,
    subnet: SubnetId,
    lock: &StakeLock,
    owner_wallet: Address,
    min_stake: u128,
    locked_until_ms: u64,
) -> Result<u128, RegisterRefusal> {
    let escrow = escrow.ok_or(RegisterRefusal::StakeNotFound)?;
    let not_a_lock = |detail: &str| RegisterRefusal::StakeNotALock { detail: detail.to_owned() };
    if escrow.payer != lock.wallet || escrow.beneficiary != lock.wallet {
        return Err(not_a_lock("payer and beneficiary must both be the validator's wallet"));
    }
    if escrow.arbiter != owner_wallet {
        return Err(not_a_lock("the arbiter must be the owner's wallet"));
    }
    if escrow.deal != Some(stake_deal(subnet, &lock.agent)) {
        return Err(not_a_lock("the deal must be this validator's stake in this subnet"));
    }
    if escrow.amount < min_stake {
        return Err(RegisterRefusal::StakeTooSmall { min: min_stake, got: escrow.amount });
    }
    if escrow.deadline_ms < locked_until_ms {
        return Err(RegisterRefusal::StakeUnlocksTooSoon {
            deadline_ms: escrow.deadline_ms,
            needed_ms: locked_until_ms,
        });
    }
    Ok(escrow.amount)
}
