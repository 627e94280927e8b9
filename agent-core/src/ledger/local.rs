//! The local ledger: accounts, escrows and history in sled, applied one transaction at a
//! time inside a sled transaction, acknowledged only after the write is on disk.
//!
//! One committer thread applies transactions and flushes: it takes every transaction
//! waiting, applies each in its own sled transaction, flushes once (group commit), and
//! only then acknowledges them. Keeping transactions and flushes on one thread is also what
//! avoids a deadlock in sled 0.34 between a flush and a concurrent transaction, which is
//! why sled's own background flusher is turned off here.

use std::path::PathBuf;
use std::sync::Arc;

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use super::tx::{Amount, Escrow, EscrowId, Operation, Receipt, Transaction, MAX_MEMO};
use super::{Ledger, LedgerError};
use crate::identity::Address;

/// Settings of a [`LocalLedger`].
#[derive(Clone)]
pub struct LocalLedgerConfig {
    path: Option<PathBuf>,
    authority: Option<Address>,
    durable: bool,
    clock: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl Default for LocalLedgerConfig {
    fn default() -> Self {
        LocalLedgerConfig { path: None, authority: None, durable: true, clock: Arc::new(crate::envelope::unix_now_ms) }
    }
}

impl LocalLedgerConfig {
    /// Where the ledger lives (a sled directory). Without it, a temporary database.
    pub fn with_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// The only account allowed to mint (none by default: no minting).
    pub fn with_authority(mut self, authority: Address) -> Self {
        self.authority = Some(authority);
        self
    }

    /// Whether a receipt waits for the write to reach the disk (default true). Turning it
    /// off trades the last ~500 ms of acknowledged transactions on a crash for speed.
    pub fn with_durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// The clock used for escrow deadlines, in ms since the Unix epoch (default: system).
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }
}

/// A ledger kept in this process. See the [module docs](super).
#[derive(Clone)]
pub struct LocalLedger {
    inner: Arc<Inner>,
    committer: Arc<Committer>,
}

/// The committer thread's handle. When the last ledger handle goes, the queue closes, and
/// dropping waits for the committer to flush and release the database, so the ledger can
/// be reopened at once.
struct Committer {
    commits: Option<std::sync::mpsc::SyncSender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.commits.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the ledger committer thread panicked");
            }
        }
    }
}

struct Job {
    tx: Transaction,
    done: tokio::sync::oneshot::Sender<Result<Receipt, LedgerError>>,
}

/// Transactions waiting for the committer, at most.
const QUEUE: usize = 16_384;
/// Transactions applied per flush, at most.
const BATCH: usize = 1_024;
/// How often an idle committer flushes what is not yet durable (in non-durable mode).
const IDLE_FLUSH: std::time::Duration = std::time::Duration::from_millis(500);

struct Inner {
    db: sled::Db,
    accounts: sled::Tree,
    escrows: sled::Tree,
    receipts: sled::Tree,
    index: sled::Tree,
    meta: sled::Tree,
    config: LocalLedgerConfig,
}

#[derive(Clone, Copy, Default)]
struct Account {
    balance: Amount,
    next_nonce: u64,
}

impl Account {
    fn decode(bytes: Option<sled::IVec>) -> Account {
        match bytes {
            Some(b) if b.len() == 24 => {
                let mut balance = [0u8; 16];
                let mut nonce = [0u8; 8];
                balance.copy_from_slice(&b[..16]);
                nonce.copy_from_slice(&b[16..]);
                Account { balance: u128::from_be_bytes(balance), next_nonce: u64::from_be_bytes(nonce) }
            }
            _ => Account::default(),
        }
    }

    fn encode(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..16].copy_from_slice(&self.balance.to_be_bytes());
        out[16..].copy_from_slice(&self.next_nonce.to_be_bytes());
        out
    }
}

type Abort = ConflictableTransactionError<LedgerError>;

fn storage(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Storage(e.to_string())
}

impl LocalLedger {
    /// Opens (or creates) a ledger.
    pub fn open(config: LocalLedgerConfig) -> Result<LocalLedger, LedgerError> {
        let sled_config = match &config.path {
            Some(path) => sled::Config::new().path(path),
            None => sled::Config::new().temporary(true),
        };
        let db = sled_config.flush_every_ms(None).open().map_err(storage)?;
        let tree = |name: &str| db.open_tree(name).map_err(storage);
        let inner = Arc::new(Inner {
            accounts: tree("accounts")?,
            escrows: tree("escrows")?,
            receipts: tree("receipts")?,
            index: tree("index")?,
            meta: tree("meta")?,
            db,
            config,
        });
        let (commits, queue) = std::sync::mpsc::sync_channel(QUEUE);
        let state = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("ledger-committer".into())
            .spawn(move || state.commit_loop(queue))
            .map_err(storage)?;
        let committer = Arc::new(Committer { commits: Some(commits), thread: Some(thread) });
        Ok(LocalLedger { inner, committer })
    }

    /// All tokens in existence: minted, in accounts or in escrow.
    pub fn supply(&self) -> Result<Amount, LedgerError> {
        Ok(self.inner.meta.get("supply").map_err(storage)?.map(|b| be_u128(&b)).unwrap_or(0))
    }

    /// How many transactions have been applied.
    pub fn height(&self) -> Result<u64, LedgerError> {
        Ok(self.inner.meta.get("height").map_err(storage)?.map(|b| be_u64(&b)).unwrap_or(0))
    }

    /// The sum of every account balance plus every open escrow (for audits and tests).
    pub fn audit_total(&self) -> Result<Amount, LedgerError> {
        let mut total: Amount = 0;
        for entry in self.inner.accounts.iter() {
            let (_, value) = entry.map_err(storage)?;
            total = total.saturating_add(Account::decode(Some(value)).balance);
        }
        for entry in self.inner.escrows.iter() {
            let (_, value) = entry.map_err(storage)?;
            let escrow: Escrow = serde_json::from_slice(&value).map_err(storage)?;
            total = total.saturating_add(escrow.amount);
        }
        Ok(total)
    }

    /// Checks everything that needs no state: signature, key, memo, amounts.
    fn check_stateless(tx: &Transaction) -> Result<(), LedgerError> {
        if Address::from_public_key(&tx.signer_key) != tx.signer {
            return Err(LedgerError::SignerKeyMismatch);
        }
        tx.signer_key.verify(&tx.signing_bytes(), &tx.signature).map_err(|_| LedgerError::BadSignature)?;
        if tx.memo.len() > MAX_MEMO {
            return Err(LedgerError::Invalid(format!("memo of {} bytes exceeds {MAX_MEMO}", tx.memo.len())));
        }
        match tx.operation {
            Operation::Transfer { amount: 0, .. }
            | Operation::Lock { amount: 0, .. }
            | Operation::Mint { amount: 0, .. } => Err(LedgerError::Invalid("amount must be positive".into())),
            _ => Ok(()),
        }
    }
}

impl Inner {
    /// Runs on the committer thread until every `LocalLedger` handle is dropped.
    fn commit_loop(&self, queue: std::sync::mpsc::Receiver<Job>) {
        use std::sync::mpsc::RecvTimeoutError;
        let mut unflushed = false;
        loop {
            let first = match queue.recv_timeout(IDLE_FLUSH) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    if unflushed && self.db.flush().is_ok() {
                        unflushed = false;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let mut results: Vec<_> = batch.into_iter().map(|job| (job.done, self.apply(&job.tx))).collect();
            unflushed = true;
            if self.config.durable {
                match self.db.flush() {
                    Ok(_) => unflushed = false,
                    Err(err) => {
                        let reason = format!("applied but not durable, flush failed: {err}");
                        for (_, result) in &mut results {
                            if result.is_ok() {
                                *result = Err(LedgerError::Storage(reason.clone()));
                            }
                        }
                    }
                }
            }
            for (done, result) in results {
                // The submitter may have given up waiting; the outcome stands regardless.
                let _ = done.send(result);
            }
        }
        if unflushed {
            if let Err(err) = self.db.flush() {
                tracing::error!(error = %err, "final ledger flush failed");
            }
        }
    }

    fn apply(&self, tx: &Transaction) -> Result<Receipt, LedgerError> {
        let inner = self;
        let now_ms = (inner.config.clock)();
        let trees = (&inner.accounts, &inner.escrows, &inner.receipts, &inner.index, &inner.meta);
        let result = trees.transaction(|(accounts, escrows, receipts, index, meta)| {
            let mut signer = read_account(accounts, &tx.signer)?;
            if tx.nonce != signer.next_nonce {
                return abort(LedgerError::NonceMismatch {
                    account: tx.signer,
                    expected: signer.next_nonce,
                    got: tx.nonce,
                });
            }
            signer.next_nonce += 1;
            let mut parties = vec![tx.signer];
            let mut created = None;
            let mut supply_delta: Amount = 0;
            match &tx.operation {
                Operation::Transfer { to, amount } => {
                    debit(&mut signer, &tx.signer, *amount)?;
                    write_account(accounts, &tx.signer, &signer)?;
                    credit(accounts, to, *amount)?;
                    parties.push(*to);
                }
                Operation::Lock { amount, beneficiary, deadline_ms, arbiter } => {
                    debit(&mut signer, &tx.signer, *amount)?;
                    write_account(accounts, &tx.signer, &signer)?;
                    let id = EscrowId::of(&tx.signer, tx.nonce);
                    let escrow = Escrow {
                        payer: tx.signer,
                        beneficiary: *beneficiary,
                        arbiter: *arbiter,
                        amount: *amount,
                        deadline_ms: *deadline_ms,
                    };
                    escrows.insert(&id.0, json(&escrow)?)?;
                    created = Some(id);
                    parties.extend([*beneficiary, *arbiter]);
                }
                Operation::Release { escrow } | Operation::Refund { escrow } => {
                    let Some(bytes) = escrows.get(escrow.0)? else {
                        return abort(LedgerError::UnknownEscrow(*escrow));
                    };
                    let open: Escrow = serde_json::from_slice(&bytes).map_err(|e| Abort::Abort(storage(e)))?;
                    if tx.signer != open.payer && tx.signer != open.arbiter {
                        return abort(LedgerError::Unauthorized(format!(
                            "only the escrow's payer or arbiter may settle escrow {escrow}"
                        )));
                    }
                    let refund = matches!(tx.operation, Operation::Refund { .. });
                    if refund && now_ms <= open.deadline_ms {
                        return abort(LedgerError::EscrowNotExpired { deadline_ms: open.deadline_ms, now_ms });
                    }
                    write_account(accounts, &tx.signer, &signer)?;
                    let to = if refund { open.payer } else { open.beneficiary };
                    credit(accounts, &to, open.amount)?;
                    escrows.remove(&escrow.0)?;
                    parties.extend([open.payer, open.beneficiary]);
                }
                Operation::Mint { to, amount } => {
                    if inner.config.authority != Some(tx.signer) {
                        return abort(LedgerError::Unauthorized("only the mint authority may mint".into()));
                    }
                    write_account(accounts, &tx.signer, &signer)?;
                    credit(accounts, to, *amount)?;
                    supply_delta = *amount;
                    parties.push(*to);
                }
            }
            let height = meta.get("height")?.map(|b| be_u64(&b)).unwrap_or(0) + 1;
            meta.insert("height", &height.to_be_bytes())?;
            if supply_delta > 0 {
                let supply = meta.get("supply")?.map(|b| be_u128(&b)).unwrap_or(0);
                let supply = supply
                    .checked_add(supply_delta)
                    .ok_or_else(|| Abort::Abort(LedgerError::Invalid("supply would overflow".into())))?;
                meta.insert("supply", &supply.to_be_bytes())?;
            }
            let receipt = Receipt { hash: tx.hash(), tx: tx.clone(), height, applied_ms: now_ms, escrow: created };
            receipts.insert(&height.to_be_bytes(), json(&receipt)?)?;
            parties.sort();
            parties.dedup();
            for party in parties {
                let mut key = party.as_bytes().to_vec();
                key.extend_from_slice(&height.to_be_bytes());
                index.insert(key, &[])?;
            }
            Ok(receipt)
        });
        match result {
            Ok(receipt) => Ok(receipt),
            Err(TransactionError::Abort(err)) => Err(err),
            Err(TransactionError::Storage(err)) => Err(storage(err)),
        }
    }
}

fn abort<T>(err: LedgerError) -> Result<T, Abort> {
    Err(Abort::Abort(err))
}

fn json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Abort> {
    serde_json::to_vec(value).map_err(|e| Abort::Abort(storage(e)))
}

fn read_account(accounts: &TransactionalTree, who: &Address) -> Result<Account, Abort> {
    Ok(Account::decode(accounts.get(who.as_bytes())?))
}

fn write_account(accounts: &TransactionalTree, who: &Address, account: &Account) -> Result<(), Abort> {
    accounts.insert(who.as_bytes(), &account.encode())?;
    Ok(())
}

fn debit(account: &mut Account, who: &Address, amount: Amount) -> Result<(), Abort> {
    if account.balance < amount {
        return abort(LedgerError::InsufficientFunds { account: *who, needed: amount, available: account.balance });
    }
    account.balance -= amount;
    Ok(())
}

fn credit(accounts: &TransactionalTree, who: &Address, amount: Amount) -> Result<(), Abort> {
    let mut account = read_account(accounts, who)?;
    account.balance = account
        .balance
        .checked_add(amount)
        .ok_or_else(|| Abort::Abort(LedgerError::Invalid("balance would overflow".into())))?;
    write_account(accounts, who, &account)
}

fn be_u64(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

fn be_u128(bytes: &[u8]) -> u128 {
    bytes.try_into().map(u128::from_be_bytes).unwrap_or(0)
}

#[async_trait::async_trait]
impl Ledger for LocalLedger {
    async fn submit(&self, tx: Transaction) -> Result<Receipt, LedgerError> {
        Self::check_stateless(&tx)?;
        let (done, outcome) = tokio::sync::oneshot::channel();
        let mut job = Job { tx, done };
        // Back-pressure when the committer is behind: wait, but not forever.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let Some(commits) = &self.committer.commits else {
                return Err(LedgerError::Storage("the ledger is closed; not applied".into()));
            };
            match commits.try_send(job) {
                Ok(()) => break,
                Err(std::sync::mpsc::TrySendError::Full(returned)) if tokio::time::Instant::now() < deadline => {
                    job = returned;
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Err(_) => {
                    return Err(LedgerError::Storage(
                        "the ledger's commit queue is full or stopped; not applied".into(),
                    ))
                }
            }
        }
        outcome.await.map_err(|_| {
            LedgerError::Storage("the ledger's committer stopped; the transaction may have been applied".into())
        })?
    }

    async fn balance(&self, account: Address) -> Result<Amount, LedgerError> {
        Ok(Account::decode(self.inner.accounts.get(account.as_bytes()).map_err(storage)?).balance)
    }

    async fn next_nonce(&self, account: Address) -> Result<u64, LedgerError> {
        Ok(Account::decode(self.inner.accounts.get(account.as_bytes()).map_err(storage)?).next_nonce)
    }

    async fn history(&self, account: Address, limit: usize) -> Result<Vec<Receipt>, LedgerError> {
        let mut out = Vec::new();
        for entry in self.inner.index.scan_prefix(account.as_bytes()).keys().rev().take(limit) {
            let key = entry.map_err(storage)?;
            let height = &key[32..];
            if let Some(bytes) = self.inner.receipts.get(height).map_err(storage)? {
                out.push(serde_json::from_slice(&bytes).map_err(storage)?);
            }
        }
        Ok(out)
    }

    async fn escrow(&self, id: EscrowId) -> Result<Option<Escrow>, LedgerError> {
        match self.inner.escrows.get(id.0).map_err(storage)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(storage)?)),
        }
    }
}

impl std::fmt::Debug for LocalLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLedger").field("height", &self.height().ok()).finish_non_exhaustive()
    }
}
