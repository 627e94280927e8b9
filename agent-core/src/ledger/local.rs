//! The local ledger: accounts, escrows and history in an embedded database
//! ([`Database`]), acknowledged only after the write is on disk.
//!
//! One committer thread applies transactions: it takes every transaction waiting (a
//! group), applies them one after another inside one database transaction, commits that
//! once (group commit: one disk sync for the group), and only then acknowledges them. Each
//! ledger transaction is checked in full before it writes anything, so a refused one
//! leaves no trace in the group. The group's time is read once, before it is applied, and
//! handed to every transaction in it: applying never reads a clock, so the same group
//! applied to the same state gives the same result.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::store::{Database, StoreError, Table, WriteTransaction};

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
    faults: Option<crate::store::Faults>,
}

impl Default for LocalLedgerConfig {
    fn default() -> Self {
        LocalLedgerConfig {
            path: None,
            authority: None,
            durable: true,
            clock: Arc::new(crate::envelope::unix_now_ms),
            faults: None,
        }
    }
}

impl LocalLedgerConfig {
    /// The ledger's directory (its database is `ledger.redb` inside, created if missing).
    /// Without it, the ledger is held in memory.
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
    /// off trades the last ~500 ms of acknowledged transactions on a crash for speed: groups
    /// are then committed without a disk sync, and an idle committer syncs every 500 ms.
    pub fn with_durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Disk faults on demand, for tests and simulations of a failing disk (default: none).
    /// They apply to a ledger with a path; one without a path is held in memory.
    pub fn with_faults(mut self, faults: crate::store::Faults) -> Self {
        self.faults = Some(faults);
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

/// Account records by address: balance (16 bytes) and next nonce (8 bytes), big-endian.
const ACCOUNTS: Table = Table::new("accounts");
/// Open escrows by id, as JSON.
const ESCROWS: Table = Table::new("escrows");
/// Receipts by height (8 bytes, big-endian), as JSON.
const RECEIPTS: Table = Table::new("receipts");
/// One empty entry per party of each transaction: address followed by height.
const INDEX: Table = Table::new("index");
/// `height` and `supply`.
const META: Table = Table::new("meta");

struct Inner {
    db: Database,
    config: LocalLedgerConfig,
}

#[derive(Clone, Copy, Default)]
struct Account {
    balance: Amount,
    next_nonce: u64,
}

impl Account {
    fn decode(bytes: Option<Vec<u8>>) -> Account {
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

fn storage(e: impl std::error::Error) -> LedgerError {
    LedgerError::Storage(crate::error::chain(&e))
}

impl LocalLedger {
    /// Opens (or creates) a ledger.
    pub fn open(config: LocalLedgerConfig) -> Result<LocalLedger, LedgerError> {
        let db = match (&config.path, &config.faults) {
            (Some(dir), Some(faults)) => Database::open_with_faults(dir.join("ledger.redb"), faults.clone()),
            (Some(dir), None) => Database::open_in(dir, "ledger.redb"),
            (None, _) => Database::temporary(),
        }
        .map_err(storage)?;
        let inner = Arc::new(Inner { db, config });
        let (commits, queue) = std::sync::mpsc::sync_channel(QUEUE);
        let state = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("ledger-committer".into())
            .spawn(move || state.commit_loop(queue))
            .map_err(|e| LedgerError::Storage(format!("cannot start the committer thread: {e}")))?;
        let committer = Arc::new(Committer { commits: Some(commits), thread: Some(thread) });
        Ok(LocalLedger { inner, committer })
    }

    /// All tokens in existence: minted, in accounts or in escrow.
    pub fn supply(&self) -> Result<Amount, LedgerError> {
        Ok(self.inner.db.get(META, b"supply").map_err(storage)?.map(|b| be_u128(&b)).unwrap_or(0))
    }

    /// How many transactions have been applied.
    pub fn height(&self) -> Result<u64, LedgerError> {
        Ok(self.inner.db.get(META, b"height").map_err(storage)?.map(|b| be_u64(&b)).unwrap_or(0))
    }

    /// The sum of every account balance plus every open escrow (for audits and tests).
    pub fn audit_total(&self) -> Result<Amount, LedgerError> {
        let mut total: Amount = 0;
        for (_, value) in self.inner.db.scan_prefix(ACCOUNTS, b"").map_err(storage)? {
            total = total.saturating_add(Account::decode(Some(value)).balance);
        }
        for (_, value) in self.inner.db.scan_prefix(ESCROWS, b"").map_err(storage)? {
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

/// What one ledger transaction changes, worked out in full before anything is written.
struct Plan {
    accounts: HashMap<Address, Account>,
    /// An escrow opened (`Some`) or settled (`None`).
    escrow: Option<(EscrowId, Option<Escrow>)>,
    receipt: Receipt,
    parties: Vec<Address>,
    supply: Amount,
}

impl Inner {
    /// Runs on the committer thread until every `LocalLedger` handle is dropped.
    fn commit_loop(&self, queue: std::sync::mpsc::Receiver<Job>) {
        use std::sync::mpsc::RecvTimeoutError;
        let mut unsynced = false;
        let mut last_sync = std::time::Instant::now();
        loop {
            let first = match queue.recv_timeout(IDLE_FLUSH) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    if unsynced {
                        match self.sync() {
                            Ok(()) => (unsynced, last_sync) = (false, std::time::Instant::now()),
                            Err(err) => tracing::error!(error = %crate::error::chain(&err), "ledger sync failed"),
                        }
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
            let now_ms = (self.config.clock)();
            // In non-durable mode, a group is still synced every IDLE_FLUSH under steady load.
            let durable = self.config.durable || last_sync.elapsed() >= IDLE_FLUSH;
            let mut applied = Vec::new();
            let outcome = self.db.write(durable, |txn| {
                applied = self.apply_group(txn, &batch, now_ms)?;
                Ok::<(), LedgerError>(())
            });
            let results = match outcome {
                Ok(Ok(())) => {
                    if durable {
                        (unsynced, last_sync) = (false, std::time::Instant::now());
                    } else {
                        unsynced = true;
                    }
                    applied
                }
                // Nothing of the group was committed.
                Ok(Err(err)) => vec![Err(err); batch.len()],
                Err(StoreError::Commit(err)) => {
                    let reason = crate::error::chain(&err);
                    tracing::error!(error = %reason, "ledger commit failed");
                    // Refusals stand; what was applied may or may not have reached the disk.
                    let maybe = |result: Result<Receipt, LedgerError>| {
                        result.and_then(|_| {
                            Err(LedgerError::Unavailable(format!("the ledger's commit failed: {reason}")))
                        })
                    };
                    applied.into_iter().map(maybe).collect()
                }
                Err(err) => vec![Err(storage(err)); batch.len()],
            };
            for (job, result) in batch.into_iter().zip(results) {
                // The submitter may have given up waiting; the outcome stands regardless.
                let _ = job.done.send(result);
            }
        }
        if unsynced {
            if let Err(err) = self.sync() {
                tracing::error!(error = %crate::error::chain(&err), "final ledger sync failed");
            }
        }
    }

    /// Makes every commit so far durable.
    fn sync(&self) -> Result<(), StoreError> {
        self.db.write(true, |_| Ok::<(), StoreError>(())).and_then(|done| done)
    }

    /// Applies `batch` in order inside `txn`. A refused transaction changes nothing and
    /// gets its refusal; a storage failure fails the whole group (nothing is committed).
    fn apply_group(
        &self,
        txn: &WriteTransaction,
        batch: &[Job],
        now_ms: u64,
    ) -> Result<Vec<Result<Receipt, LedgerError>>, LedgerError> {
        let mut height = read(txn, META, b"height")?.map(|b| be_u64(&b)).unwrap_or(0);
        let start = (height, read(txn, META, b"supply")?.map(|b| be_u128(&b)).unwrap_or(0));
        let mut supply = start.1;
        let mut results = Vec::with_capacity(batch.len());
        for job in batch {
            match self.plan(txn, &job.tx, now_ms, height + 1, supply) {
                Ok(plan) => {
                    write(txn, &plan)?;
                    height = plan.receipt.height;
                    supply = plan.supply;
                    results.push(Ok(plan.receipt));
                }
                Err(err @ LedgerError::Storage(_)) => return Err(err),
                Err(refused) => results.push(Err(refused)),
            }
        }
        if height != start.0 {
            put(txn, META, b"height", Some(&height.to_be_bytes()))?;
        }
        if supply != start.1 {
            put(txn, META, b"supply", Some(&supply.to_be_bytes()))?;
        }
        Ok(results)
    }

    /// Checks `tx` against the state in `txn` and works out what it changes.
    fn plan(
        &self,
        txn: &WriteTransaction,
        tx: &Transaction,
        now_ms: u64,
        height: u64,
        supply: Amount,
    ) -> Result<Plan, LedgerError> {
        let mut signer = account(txn, &HashMap::new(), &tx.signer)?;
        if tx.nonce != signer.next_nonce {
            return Err(LedgerError::NonceMismatch { account: tx.signer, expected: signer.next_nonce, got: tx.nonce });
        }
        signer.next_nonce += 1;
        let mut accounts = HashMap::new();
        let mut parties = vec![tx.signer];
        let mut escrow = None;
        let mut created = None;
        let mut supply = supply;
        match &tx.operation {
            Operation::Transfer { to, amount } => {
                debit(&mut signer, &tx.signer, *amount)?;
                accounts.insert(tx.signer, signer);
                credit(txn, &mut accounts, to, *amount)?;
                parties.push(*to);
            }
            Operation::Lock { amount, beneficiary, deadline_ms, arbiter } => {
                debit(&mut signer, &tx.signer, *amount)?;
                accounts.insert(tx.signer, signer);
                let id = EscrowId::of(&tx.signer, tx.nonce);
                let locked = Escrow {
                    payer: tx.signer,
                    beneficiary: *beneficiary,
                    arbiter: *arbiter,
                    amount: *amount,
                    deadline_ms: *deadline_ms,
                };
                escrow = Some((id, Some(locked)));
                created = Some(id);
                parties.extend([*beneficiary, *arbiter]);
            }
            Operation::Release { escrow: id } | Operation::Refund { escrow: id } => {
                let Some(bytes) = read(txn, ESCROWS, &id.0)? else {
                    return Err(LedgerError::UnknownEscrow(*id));
                };
                let open: Escrow = serde_json::from_slice(&bytes).map_err(storage)?;
                if tx.signer != open.payer && tx.signer != open.arbiter {
                    return Err(LedgerError::Unauthorized(format!(
                        "only the escrow's payer or arbiter may settle escrow {id}"
                    )));
                }
                let refund = matches!(tx.operation, Operation::Refund { .. });
                if refund && now_ms <= open.deadline_ms {
                    return Err(LedgerError::EscrowNotExpired { deadline_ms: open.deadline_ms, now_ms });
                }
                accounts.insert(tx.signer, signer);
                let to = if refund { open.payer } else { open.beneficiary };
                credit(txn, &mut accounts, &to, open.amount)?;
                escrow = Some((*id, None));
                parties.extend([open.payer, open.beneficiary]);
            }
            Operation::Mint { to, amount } => {
                if self.config.authority != Some(tx.signer) {
                    return Err(LedgerError::Unauthorized("only the mint authority may mint".into()));
                }
                accounts.insert(tx.signer, signer);
                credit(txn, &mut accounts, to, *amount)?;
                supply =
                    supply.checked_add(*amount).ok_or_else(|| LedgerError::Invalid("supply would overflow".into()))?;
                parties.push(*to);
            }
        }
        parties.sort();
        parties.dedup();
        let receipt = Receipt { hash: tx.hash(), tx: tx.clone(), height, applied_ms: now_ms, escrow: created };
        Ok(Plan { accounts, escrow, receipt, parties, supply })
    }
}

/// Writes what `plan` changes.
fn write(txn: &WriteTransaction, plan: &Plan) -> Result<(), LedgerError> {
    for (who, account) in &plan.accounts {
        put(txn, ACCOUNTS, who.as_bytes(), Some(&account.encode()))?;
    }
    if let Some((id, escrow)) = &plan.escrow {
        match escrow {
            Some(escrow) => put(txn, ESCROWS, &id.0, Some(&json(escrow)?))?,
            None => put(txn, ESCROWS, &id.0, None)?,
        }
    }
    let height = plan.receipt.height.to_be_bytes();
    put(txn, RECEIPTS, &height, Some(&json(&plan.receipt)?))?;
    for party in &plan.parties {
        let mut key = party.as_bytes().to_vec();
        key.extend_from_slice(&height);
        put(txn, INDEX, &key, Some(&[]))?;
    }
    Ok(())
}

fn read(txn: &WriteTransaction, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, LedgerError> {
    crate::store::get_in(txn, table, key).map_err(storage)
}

fn put(txn: &WriteTransaction, table: Table, key: &[u8], value: Option<&[u8]>) -> Result<(), LedgerError> {
    crate::store::put(txn, table, key, value).map_err(storage)
}

fn json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, LedgerError> {
    serde_json::to_vec(value).map_err(storage)
}

/// `who`'s account as this transaction has changed it so far, or as stored.
fn account(txn: &WriteTransaction, changed: &HashMap<Address, Account>, who: &Address) -> Result<Account, LedgerError> {
    match changed.get(who) {
        Some(account) => Ok(*account),
        None => Ok(Account::decode(read(txn, ACCOUNTS, who.as_bytes())?)),
    }
}

fn debit(account: &mut Account, who: &Address, amount: Amount) -> Result<(), LedgerError> {
    if account.balance < amount {
        return Err(LedgerError::InsufficientFunds { account: *who, needed: amount, available: account.balance });
    }
    account.balance -= amount;
    Ok(())
}

fn credit(
    txn: &WriteTransaction,
    changed: &mut HashMap<Address, Account>,
    who: &Address,
    amount: Amount,
) -> Result<(), LedgerError> {
    let mut credited = account(txn, changed, who)?;
    credited.balance =
        credited.balance.checked_add(amount).ok_or_else(|| LedgerError::Invalid("balance would overflow".into()))?;
    changed.insert(*who, credited);
    Ok(())
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
        Ok(Account::decode(self.inner.db.get(ACCOUNTS, account.as_bytes()).map_err(storage)?).balance)
    }

    async fn next_nonce(&self, account: Address) -> Result<u64, LedgerError> {
        Ok(Account::decode(self.inner.db.get(ACCOUNTS, account.as_bytes()).map_err(storage)?).next_nonce)
    }

    async fn history(&self, account: Address, limit: usize) -> Result<Vec<Receipt>, LedgerError> {
        let mut out = Vec::new();
        for (key, _) in self.inner.db.last_with_prefix(INDEX, account.as_bytes(), limit).map_err(storage)? {
            let height = &key[32..];
            if let Some(bytes) = self.inner.db.get(RECEIPTS, height).map_err(storage)? {
                out.push(serde_json::from_slice(&bytes).map_err(storage)?);
            }
        }
        Ok(out)
    }

    async fn escrow(&self, id: EscrowId) -> Result<Option<Escrow>, LedgerError> {
        match self.inner.db.get(ESCROWS, &id.0).map_err(storage)? {
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
