//! The local ledger: accounts, escrows and history in an embedded database
//! ([`Database`]), acknowledged only after the write is on disk (unless configured not to
//! wait, [`LocalLedgerConfig::with_durable`]).
//!
//! One committer thread applies transactions: it takes every transaction waiting (a
//! group), applies them one after another inside one database transaction, commits that
//! once (group commit: one disk sync for the group), and only then acknowledges them. The
//! group's time is read once, before it is applied (see `apply` for why applying reads no
//! clock).

use std::path::PathBuf;
use std::sync::Arc;

use super::apply::{self, be_u128, be_u64, Account, ACCOUNTS, ESCROWS, INDEX, META, RECEIPTS};
use super::tx::{Amount, Escrow, EscrowId, Operation, Receipt, Transaction, MAX_MEMO};
use super::{Ledger, LedgerError};
use crate::identity::Address;
use crate::store::{Database, StoreError};

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

struct Inner {
    db: Database,
    config: LocalLedgerConfig,
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
        Ok(self
            .inner
            .db
            .get(META, b"supply")
            .map_err(storage)?
            .map(|b| be_u128(&b, "supply"))
            .transpose()?
            .unwrap_or(0))
    }

    /// How many transactions have been applied.
    pub fn height(&self) -> Result<u64, LedgerError> {
        Ok(self.inner.db.get(META, b"height").map_err(storage)?.map(|b| be_u64(&b, "height")).transpose()?.unwrap_or(0))
    }

    /// The sum of every account balance plus every open escrow (for audits and tests).
    pub fn audit_total(&self) -> Result<Amount, LedgerError> {
        let mut total: Amount = 0;
        for (_, value) in self.inner.db.scan_prefix(ACCOUNTS, b"").map_err(storage)? {
            total = total.saturating_add(Account::decode(Some(value))?.balance);
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
                let mut tables = crate::store::Tables::new(txn);
                applied =
                    apply::apply_group(&mut tables, batch.iter().map(|job| &job.tx), now_ms, self.config.authority)?;
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
        Ok(Account::decode(self.inner.db.get(ACCOUNTS, account.as_bytes()).map_err(storage)?)?.balance)
    }

    async fn next_nonce(&self, account: Address) -> Result<u64, LedgerError> {
        Ok(Account::decode(self.inner.db.get(ACCOUNTS, account.as_bytes()).map_err(storage)?)?.next_nonce)
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
