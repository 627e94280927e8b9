//! The local ledger: state in memory, durability in an append-only log ([`log`](super::log)),
//! acknowledged only after the log is on disk (unless configured not to wait,
//! [`LocalLedgerConfig::with_durable`]).
//!
//! One committer thread applies transactions: it takes every transaction waiting (a
//! group, at most 1,024), applies them one after another to a copy-on-write view of the
//! state, appends the applied ones' receipts to the log as one record with one
//! `fdatasync` (group commit), and only then makes the changes the state and acknowledges
//! them. Signatures are checked before a transaction reaches the queue, on the submitting
//! tasks, so every core checks signatures while the committer writes. The group's time is
//! read once, before it is applied (see `apply` for why applying reads no clock).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::apply::{Account, Minting, State};
use super::log::{self, AppendError, Located, Log, Reader};
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
    /// The ledger's directory (its log is `ledger.log` inside, created if missing).
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
    /// are then written without a disk sync, and the log is synced every 500 ms. Open a
    /// ledger the way it was last run: after a crash in non-durable mode, opening it as
    /// durable refuses a log with more than one torn group rather than cut it.
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
    config: LocalLedgerConfig,
    /// The state and where each receipt lies, as of the last durable group.
    ledger: parking_lot::RwLock<Book>,
    log: Reader,
}

/// The state, and what history needs: where each receipt lies and which heights concern
/// each account.
#[derive(Default)]
struct Book {
    state: State,
    /// Where the receipt at height `h` lies, at `h - 1`.
    receipts: Vec<Located>,
    /// The heights that concern each account, oldest first.
    history: HashMap<Address, Vec<u64>>,
}

impl Book {
    /// Makes a durable group part of the book.
    fn record(&mut self, applied: super::apply::Applied, located: Vec<Located>) {
        for (receipt, parties) in applied.receipts().zip(&applied.parties) {
            for party in parties {
                self.history.entry(*party).or_default().push(receipt.height);
            }
        }
        self.receipts.extend(located);
        self.state.commit(applied.changes);
    }
}

impl LocalLedger {
    /// Opens (or creates) a ledger, replaying its log to rebuild the state: this takes
    /// time in proportion to the ledger's history (see the report for the rate).
    pub fn open(config: LocalLedgerConfig) -> Result<LocalLedger, LedgerError> {
        let mut book = Book::default();
        let log = match &config.path {
            None => Log::in_memory(),
            Some(dir) => {
                let mut log = Log::open(dir, config.faults.clone(), config.durable, |group| replay(&mut book, group))?;
                import_earlier(dir, &mut log, &mut book)?;
                log
            }
        };
        let inner = Arc::new(Inner { config, ledger: parking_lot::RwLock::new(book), log: log.reader() });
        let (commits, queue) = std::sync::mpsc::sync_channel(QUEUE);
        let state = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("ledger-committer".into())
            .spawn(move || state.commit_loop(log, queue))
            .map_err(|e| LedgerError::Storage(format!("cannot start the committer thread: {e}")))?;
        let committer = Arc::new(Committer { commits: Some(commits), thread: Some(thread) });
        Ok(LocalLedger { inner, committer })
    }

    /// All tokens in existence: minted, in accounts or in escrow.
    pub fn supply(&self) -> Result<Amount, LedgerError> {
        Ok(self.inner.ledger.read().state.supply)
    }

    /// How many transactions have been applied.
    pub fn height(&self) -> Result<u64, LedgerError> {
        Ok(self.inner.ledger.read().state.height)
    }

    /// The sum of every account balance plus every open escrow (for audits and tests).
    pub fn audit_total(&self) -> Result<Amount, LedgerError> {
        let book = self.inner.ledger.read();
        let accounts = book.state.accounts.values().map(|a| a.balance);
        let escrows = book.state.escrows.values().map(|e| e.amount);
        Ok(accounts.chain(escrows).fold(0, Amount::saturating_add))
    }

    /// Checks everything that needs no state: signature (strictly), key, memo, amounts.
    /// It runs on the submitting task, so signatures are checked on every core at once;
    /// verifying a group in one batch on the committer was measured slower (one core, and
    /// a subgroup check per distinct key).
    pub(super) fn check_stateless(tx: &Transaction) -> Result<(), LedgerError> {
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

/// The database an earlier Agora kept the ledger in, and what it is renamed to once its
/// history is in the log.
const EARLIER: &str = "ledger.redb";
const IMPORTED: &str = "ledger.redb.imported";

/// Moves the history of a ledger written by an earlier Agora (`ledger.redb`, whose
/// `receipts` table held every receipt by height) into the log, checking each receipt
/// replays, then renames the old file so it is never imported twice. Its other tables were
/// derived from the receipts.
fn import_earlier(dir: &std::path::Path, log: &mut Log, book: &mut Book) -> Result<(), LedgerError> {
    let earlier = dir.join(EARLIER);
    if !earlier.exists() {
        return Ok(());
    }
    let failed = |what: &str, e: &dyn std::error::Error| {
        LedgerError::Storage(format!("cannot {what} {}: {}", earlier.display(), crate::error::chain(e)))
    };
    let db = crate::store::Database::open(&earlier).map_err(|e| failed("open", &e))?;
    let rows = db.scan_prefix(crate::store::Table::new("receipts"), b"").map_err(|e| failed("read", &e))?;
    drop(db);
    let mut receipts = Vec::with_capacity(rows.len());
    for (_, json) in rows {
        receipts.push(serde_json::from_slice::<Receipt>(&json).map_err(|e| failed("decode a receipt of", &e))?);
    }
    if book.state.height != 0 {
        // The import finished (and the ledger may have gone on since) and only the rename is
        // left, or an import was cut short.
        let imported = receipts.last().is_none_or(|last| {
            book.receipts.get(last.height as usize - 1).and_then(|at| log.reader().read(*at).ok()).as_ref()
                == Some(last)
        });
        if book.state.height < receipts.len() as u64 || !imported {
            return Err(LedgerError::Storage(format!(
                "{} holds {} transactions and the log {}, not the same history: an import was cut short; \
                 remove {} to import again (only if nothing was applied since)",
                earlier.display(),
                receipts.len(),
                book.state.height,
                log::FILE
            )));
        }
    } else {
        // One group per run of receipts applied at the same instant, as the committer made them.
        for group in receipts.chunk_by(|a, b| a.applied_ms == b.applied_ms) {
            for group in group.chunks(BATCH) {
                let applied = book.state.apply(group.iter().map(|r| &r.tx), group[0].applied_ms, Minting::AsLogged);
                if applied.results.iter().zip(group).any(|(again, logged)| again.as_ref() != Ok(logged)) {
                    return Err(LedgerError::Storage(format!(
                        "the history in {} does not replay at height {}; remove {} to import again",
                        earlier.display(),
                        group[0].height,
                        log::FILE
                    )));
                }
                let located = log.append(group, false).map_err(|e| {
                    LedgerError::Storage(format!("cannot import {} into the log: {e:?}", earlier.display()))
                })?;
                book.record(applied, located);
            }
        }
        log.sync().map_err(|e| failed("make durable the import of", &e))?;
        tracing::info!(from = %earlier.display(), transactions = book.state.height, "imported an earlier ledger");
    }
    std::fs::rename(&earlier, dir.join(IMPORTED)).map_err(|e| failed("rename", &e))?;
    // The rename must outlast a crash, or the old file would come back beside a newer log.
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| failed("sync the directory of", &e))
}

/// Applies one group read back from the log, checking it gives the receipts logged.
fn replay(book: &mut Book, group: Vec<(Receipt, Located)>) -> Result<(), LedgerError> {
    let Some((first, _)) = group.first() else { return Ok(()) };
    let applied_ms = first.applied_ms;
    let applied = book.state.apply(group.iter().map(|(r, _)| &r.tx), applied_ms, Minting::AsLogged);
    for ((logged, _), again) in group.iter().zip(&applied.results) {
        if again.as_ref() != Ok(logged) {
            return Err(LedgerError::Storage(format!(
                "replaying the ledger log diverged at height {}: logged {:?}, replayed {:?}",
                logged.height,
                logged.hash,
                again.as_ref().map(|r| r.hash)
            )));
        }
    }
    book.record(applied, group.into_iter().map(|(_, at)| at).collect());
    Ok(())
}

impl Inner {
    /// Runs on the committer thread until every `LocalLedger` handle is dropped.
    fn commit_loop(&self, mut log: Log, queue: std::sync::mpsc::Receiver<Job>) {
        use std::sync::mpsc::RecvTimeoutError;
        let mut unsynced = false;
        let mut last_sync = std::time::Instant::now();
        let minting = Minting::Authority(self.config.authority);
        loop {
            let first = match queue.recv_timeout(IDLE_FLUSH) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    if unsynced {
                        match log.sync() {
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
            let applied = self.ledger.read().state.apply(batch.iter().map(|job| &job.tx), now_ms, minting);
            // In non-durable mode, a group is still synced every IDLE_FLUSH under steady load.
            let durable = self.config.durable || last_sync.elapsed() >= IDLE_FLUSH;
            let results = if applied.receipts().next().is_none() {
                applied.results
            } else {
                match log.append(applied.receipts(), durable) {
                    Ok(located) => {
                        if durable {
                            (unsynced, last_sync) = (false, std::time::Instant::now());
                        } else {
                            unsynced = true;
                        }
                        let results = applied.results.clone();
                        self.ledger.write().record(applied, located);
                        results
                    }
                    Err(failure) => {
                        let (reason, not_applied) = match failure {
                            AppendError::NotWritten(reason) => (reason, true),
                            AppendError::Unknown(reason) => (reason, false),
                        };
                        tracing::error!(error = %reason, "ledger log write failed");
                        // Refusals stand; the state is unchanged, but a write that failed
                        // part way may still be found in the log by a restart.
                        let failed = |result: Result<Receipt, LedgerError>| {
                            result.and_then(|_| {
                                Err(if not_applied {
                                    LedgerError::Storage(format!("the ledger's log write failed: {reason}"))
                                } else {
                                    LedgerError::Unavailable(format!("the ledger's log write failed: {reason}"))
                                })
                            })
                        };
                        applied.results.into_iter().map(failed).collect()
                    }
                }
            };
            for (job, result) in batch.into_iter().zip(results) {
                // The submitter may have given up waiting; the outcome stands regardless.
                let _ = job.done.send(result);
            }
        }
        log.repair();
        if unsynced {
            if let Err(err) = log.sync() {
                tracing::error!(error = %crate::error::chain(&err), "final ledger sync failed");
            }
        }
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
            LedgerError::Unavailable("the ledger's committer stopped; the transaction may have been applied".into())
        })?
    }

    async fn balance(&self, account: Address) -> Result<Amount, LedgerError> {
        Ok(self.account(&account).balance)
    }

    async fn next_nonce(&self, account: Address) -> Result<u64, LedgerError> {
        Ok(self.account(&account).next_nonce)
    }

    async fn history(&self, account: Address, limit: usize) -> Result<Vec<Receipt>, LedgerError> {
        let located: Vec<Located> = {
            let book = self.inner.ledger.read();
            let heights = book.history.get(&account).map_or(&[][..], Vec::as_slice);
            heights.iter().rev().take(limit).filter_map(|h| book.receipts.get(*h as usize - 1).copied()).collect()
        };
        located.into_iter().map(|at| self.inner.log.read(at)).collect()
    }

    async fn escrow(&self, id: EscrowId) -> Result<Option<Escrow>, LedgerError> {
        Ok(self.inner.ledger.read().state.escrows.get(&id).cloned())
    }

    async fn open_escrows(&self, payer: Address, limit: usize) -> Result<Vec<(EscrowId, Escrow)>, LedgerError> {
        let mut open: Vec<(EscrowId, Escrow)> = {
            let book = self.inner.ledger.read();
            book.state.escrows.iter().filter(|(_, e)| e.payer == payer).map(|(id, e)| (*id, e.clone())).collect()
        };
        open.sort_by_key(|(id, e)| (e.deadline_ms, *id));
        open.truncate(limit);
        Ok(open)
    }
}

impl LocalLedger {
    fn account(&self, who: &Address) -> Account {
        self.inner.ledger.read().state.accounts.get(who).copied().unwrap_or_default()
    }
}

impl std::fmt::Debug for LocalLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLedger").field("height", &self.height().ok()).finish_non_exhaustive()
    }
}
