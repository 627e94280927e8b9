//! A ledger held in memory and applied on the submitting task: the same rules as
//! [`LocalLedger`](super::LocalLedger), with nothing written anywhere. For tests and
//! simulations, where a run must repeat exactly: no thread, no disk, and the clock is the
//! caller's (the simulated clock in [`sim`](crate::sim)).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::apply::{Minting, State};
use super::{Amount, Escrow, EscrowId, Ledger, LedgerError, Receipt, Transaction};
use crate::identity::Address;

/// A ledger in memory. See the module docs.
#[derive(Clone)]
pub struct MemoryLedger {
    inner: Arc<Inner>,
}

struct Inner {
    authority: Option<Address>,
    clock: Box<dyn Fn() -> u64 + Send + Sync>,
    book: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    state: State,
    receipts: Vec<Receipt>,
    /// Indexes into `receipts` of the receipts that concern each account, oldest first.
    history: HashMap<Address, Vec<usize>>,
}

impl MemoryLedger {
    /// An empty ledger where only `authority` may mint, reading the time (ms since the
    /// Unix epoch) from `clock` when it applies a transaction.
    pub fn new(authority: Option<Address>, clock: impl Fn() -> u64 + Send + Sync + 'static) -> MemoryLedger {
        MemoryLedger { inner: Arc::new(Inner { authority, clock: Box::new(clock), book: Mutex::default() }) }
    }

    /// Every token in existence: what was minted.
    pub fn supply(&self) -> Amount {
        self.inner.book.lock().state.supply
    }

    /// The balances plus what is locked in escrow: equal to [`supply`](Self::supply) unless
    /// tokens were lost.
    pub fn audit_total(&self) -> Amount {
        let book = self.inner.book.lock();
        let balances: Amount = book.state.accounts.values().map(|a| a.balance).sum();
        balances + book.state.escrows.values().map(|e| e.amount).sum::<Amount>()
    }
}

#[async_trait::async_trait]
impl Ledger for MemoryLedger {
    async fn submit(&self, tx: Transaction) -> Result<Receipt, LedgerError> {
        super::LocalLedger::check_stateless(&tx)?;
        let now_ms = (self.inner.clock)();
        let mut book = self.inner.book.lock();
        let applied = book.state.apply([&tx], now_ms, Minting::Authority(self.inner.authority));
        let result = applied.results[0].clone();
        if let Ok(receipt) = &result {
            let at = book.receipts.len();
            for party in applied.parties.iter().flatten() {
                book.history.entry(*party).or_default().push(at);
            }
            book.receipts.push(receipt.clone());
            book.state.commit(applied.changes);
        }
        result
    }

    async fn balance(&self, account: Address) -> Result<Amount, LedgerError> {
        Ok(self.inner.book.lock().state.accounts.get(&account).map_or(0, |a| a.balance))
    }

    async fn next_nonce(&self, account: Address) -> Result<u64, LedgerError> {
        Ok(self.inner.book.lock().state.accounts.get(&account).map_or(0, |a| a.next_nonce))
    }

    async fn history(&self, account: Address, limit: usize) -> Result<Vec<Receipt>, LedgerError> {
        let book = self.inner.book.lock();
        let indexes = book.history.get(&account).map_or(&[][..], Vec::as_slice);
        Ok(indexes.iter().rev().take(limit).map(|i| book.receipts[*i].clone()).collect())
    }

    async fn escrow(&self, id: EscrowId) -> Result<Option<Escrow>, LedgerError> {
        Ok(self.inner.book.lock().state.escrows.get(&id).cloned())
    }

    async fn open_escrows(&self, payer: Address, limit: usize) -> Result<Vec<(EscrowId, Escrow)>, LedgerError> {
        let mut open: Vec<(EscrowId, Escrow)> = {
            let book = self.inner.book.lock();
            book.state.escrows.iter().filter(|(_, e)| e.payer == payer).map(|(id, e)| (*id, e.clone())).collect()
        };
        open.sort_by_key(|(id, e)| (e.deadline_ms, *id));
        open.truncate(limit);
        Ok(open)
    }
}

impl std::fmt::Debug for MemoryLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLedger").field("authority", &self.inner.authority).finish_non_exhaustive()
    }
}
