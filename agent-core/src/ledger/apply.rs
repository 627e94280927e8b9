//! Applying ledger transactions to the state held in memory. Each transaction is checked in
//! full against the state before it changes anything, so a refused one leaves no trace in
//! its group. Applying reads no clock: the group's time is an argument, so the same group
//! applied to the same state gives the same receipts, which is what replaying the log at
//! start (and, later, replication) relies on.

use std::collections::HashMap;

use super::tx::{Amount, Escrow, EscrowId, Operation, Receipt, Transaction};
use super::LedgerError;
use crate::identity::Address;

/// An account: its balance and the nonce its next transaction must carry.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(super) struct Account {
    pub(super) balance: Amount,
    pub(super) next_nonce: u64,
}

/// Everything the ledger knows, as of `height`.
#[derive(Default, Debug)]
pub(super) struct State {
    pub(super) accounts: HashMap<Address, Account>,
    pub(super) escrows: HashMap<EscrowId, Escrow>,
    pub(super) height: u64,
    pub(super) supply: Amount,
}

/// Who may mint while applying.
#[derive(Clone, Copy, Debug)]
pub(super) enum Minting {
    /// Only this account (none: nobody).
    Authority(Option<Address>),
    /// Replaying the ledger's own log: a mint there was authorised when it was applied,
    /// whatever the authority is configured as now.
    AsLogged,
}

/// What a group changes, kept apart from the state until the group is durable.
#[derive(Default, Debug)]
pub(super) struct Changes {
    accounts: HashMap<Address, Account>,
    /// An escrow opened (`Some`) or settled (`None`).
    escrows: HashMap<EscrowId, Option<Escrow>>,
    height: u64,
    supply: Amount,
}

/// The outcome of applying a group: one result per transaction, in order, and the changes
/// of the applied ones.
pub(super) struct Applied {
    pub(super) results: Vec<Result<Receipt, LedgerError>>,
    /// For each applied transaction, in order, the accounts it concerns (its history is
    /// listed under each): signer, payee, and an escrow's payer, beneficiary and arbiter.
    pub(super) parties: Vec<Vec<Address>>,
    pub(super) changes: Changes,
}

impl Applied {
    /// The receipts of the transactions applied, in order.
    pub(super) fn receipts(&self) -> impl Iterator<Item = &Receipt> {
        self.results.iter().filter_map(|r| r.as_ref().ok())
    }
}

impl State {
    /// Applies `batch` in order on top of this state without changing it; the changes are
    /// kept in the result, for [`State::commit`] once the group is durable.
    pub(super) fn apply<'a>(
        &self,
        batch: impl IntoIterator<Item = &'a Transaction>,
        now_ms: u64,
        minting: Minting,
    ) -> Applied {
        let mut changes = Changes { height: self.height, supply: self.supply, ..Changes::default() };
        let mut parties = Vec::new();
        let results = batch
            .into_iter()
            .map(|tx| {
                let (receipt, concerned) = self.plan(&mut changes, tx, now_ms, minting)?;
                changes.height = receipt.height;
                parties.push(concerned);
                Ok(receipt)
            })
            .collect();
        Applied { results, parties, changes }
    }

    /// Makes a durable group's changes the state.
    pub(super) fn commit(&mut self, changes: Changes) {
        self.accounts.extend(changes.accounts);
        for (id, escrow) in changes.escrows {
            match escrow {
                Some(open) => self.escrows.insert(id, open),
                None => self.escrows.remove(&id),
            };
        }
        self.height = changes.height;
        self.supply = changes.supply;
    }

    /// The account as the group has changed it so far, or as the state holds it.
    fn account(&self, changes: &Changes, who: &Address) -> Account {
        changes.accounts.get(who).or_else(|| self.accounts.get(who)).copied().unwrap_or_default()
    }

    fn escrow(&self, changes: &Changes, id: &EscrowId) -> Option<Escrow> {
        match changes.escrows.get(id) {
            Some(changed) => changed.clone(),
            None => self.escrows.get(id).cloned(),
        }
    }

    /// Checks `tx` against the state as `changes` leaves it and, if it is accepted, adds
    /// what it changes to `changes`. A refusal adds nothing.
    fn plan(
        &self,
        changes: &mut Changes,
        tx: &Transaction,
        now_ms: u64,
        minting: Minting,
    ) -> Result<(Receipt, Vec<Address>), LedgerError> {
        let height = changes.height.checked_add(1).ok_or_else(|| LedgerError::Invalid("the ledger is full".into()))?;
        let mut signer = self.account(changes, &tx.signer);
        if tx.nonce != signer.next_nonce {
            return Err(LedgerError::NonceMismatch { account: tx.signer, expected: signer.next_nonce, got: tx.nonce });
        }
        signer.next_nonce = signer
            .next_nonce
            .checked_add(1)
            .ok_or_else(|| LedgerError::Invalid(format!("account {} has used every nonce", tx.signer)))?;
        // Worked out in full before anything is added to `changes`.
        let mut accounts: Vec<(Address, Account)> = Vec::with_capacity(2);
        let mut parties = vec![tx.signer];
        let mut escrow = None;
        let mut created = None;
        let mut settles = None;
        let mut supply = changes.supply;
        match &tx.operation {
            Operation::Transfer { to, amount } => {
                debit(&mut signer, &tx.signer, *amount)?;
                accounts.push((tx.signer, signer));
                accounts.push(self.credited(changes, &accounts, to, *amount)?);
                parties.push(*to);
            }
            Operation::Lock { amount, beneficiary, deadline_ms, arbiter, deal } => {
                debit(&mut signer, &tx.signer, *amount)?;
                accounts.push((tx.signer, signer));
                let id = EscrowId::of(&tx.signer, tx.nonce);
                let locked = Escrow {
                    payer: tx.signer,
                    beneficiary: *beneficiary,
                    arbiter: *arbiter,
                    amount: *amount,
                    deadline_ms: *deadline_ms,
                    deal: *deal,
                };
                escrow = Some((id, Some(locked)));
                created = Some(id);
                settles = *deal;
                parties.extend([*beneficiary, *arbiter]);
            }
            Operation::Release { escrow: id } | Operation::Refund { escrow: id } => {
                let Some(open) = self.escrow(changes, id) else {
                    return Err(LedgerError::UnknownEscrow(*id));
                };
                if tx.signer != open.payer && tx.signer != open.arbiter {
                    return Err(LedgerError::Unauthorized(format!(
                        "only the escrow's payer or arbiter may settle escrow {id}"
                    )));
                }
                let refund = matches!(tx.operation, Operation::Refund { .. });
                // Before the deadline only an arbiter other than the payer may refund: the one
                // who decides the condition may also decide it failed (a winner that could not
                // deliver gives the money back at once), but a payer may not take back what it
                // locked, even as its own arbiter.
                let early_refund_allowed = tx.signer == open.arbiter && open.arbiter != open.payer;
                if refund && now_ms <= open.deadline_ms && !early_refund_allowed {
                    return Err(LedgerError::EscrowNotExpired { deadline_ms: open.deadline_ms, now_ms });
                }
                accounts.push((tx.signer, signer));
                let to = if refund { open.payer } else { open.beneficiary };
                accounts.push(self.credited(changes, &accounts, &to, open.amount)?);
                escrow = Some((*id, None));
                settles = open.deal;
                parties.extend([open.payer, open.beneficiary, open.arbiter]);
            }
            Operation::Mint { to, amount } => {
                if let Minting::Authority(authority) = minting {
                    if authority != Some(tx.signer) {
                        return Err(LedgerError::Unauthorized("only the mint authority may mint".into()));
                    }
                }
                accounts.push((tx.signer, signer));
                accounts.push(self.credited(changes, &accounts, to, *amount)?);
                supply =
                    supply.checked_add(*amount).ok_or_else(|| LedgerError::Invalid("supply would overflow".into()))?;
                parties.push(*to);
            }
        }
        changes.accounts.extend(accounts);
        if let Some((id, escrow)) = escrow {
            changes.escrows.insert(id, escrow);
        }
        changes.supply = supply;
        parties.sort();
        parties.dedup();
        let receipt =
            Receipt { hash: tx.hash(), tx: tx.clone(), height, applied_ms: now_ms, escrow: created, deal: settles };
        Ok((receipt, parties))
    }

    /// `who` credited with `amount`, seeing this transaction's own earlier changes first.
    fn credited(
        &self,
        changes: &Changes,
        this_tx: &[(Address, Account)],
        who: &Address,
        amount: Amount,
    ) -> Result<(Address, Account), LedgerError> {
        let mut account = match this_tx.iter().rev().find(|(address, _)| address == who) {
            Some((_, account)) => *account,
            None => self.account(changes, who),
        };
        account.balance =
            account.balance.checked_add(amount).ok_or_else(|| LedgerError::Invalid("balance would overflow".into()))?;
        Ok((*who, account))
    }
}

fn debit(account: &mut Account, who: &Address, amount: Amount) -> Result<(), LedgerError> {
    if account.balance < amount {
        return Err(LedgerError::InsufficientFunds { account: *who, needed: amount, available: account.balance });
    }
    account.balance -= amount;
    Ok(())
}
