//! A ledger that stalls from a moment a test picks, for crash tests: a submission sent
//! once it has stalled waits an hour in its sender's task before it is applied, so a crash
//! of the sender in the meantime ends it unapplied, as a request never sent would be.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{Amount, Escrow, EscrowId, Ledger, LedgerError, MemoryLedger, Receipt, Transaction};
use agent_core::Address;

/// How long a submission sent while the ledger is stalled waits before it is applied.
pub const STALL: Duration = Duration::from_secs(3600);

/// `inner`, whose submissions wait [`STALL`] while it is stalled ([`stall`](Self::stall)
/// until [`resume`](Self::resume)); reads are served at once throughout, but for escrow
/// reads made to fail ([`fail_escrow_reads`](Self::fail_escrow_reads)); submissions may be
/// made to fail too ([`fail_submissions`](Self::fail_submissions)).
pub struct Stalled {
    inner: Arc<MemoryLedger>,
    stalled: AtomicBool,
    failing_escrow_reads: AtomicU32,
    failing_submissions: AtomicU32,
}

impl Stalled {
    pub fn new(inner: Arc<MemoryLedger>) -> Arc<Stalled> {
        Arc::new(Stalled {
            inner,
            stalled: AtomicBool::new(false),
            failing_escrow_reads: AtomicU32::new(0),
            failing_submissions: AtomicU32::new(0),
        })
    }

    /// The next `reads` reads of an escrow fail, as from a ledger that cannot be reached.
    pub fn fail_escrow_reads(&self, reads: u32) {
        self.failing_escrow_reads.store(reads, Ordering::SeqCst);
    }

    /// The next `submissions` submissions fail unapplied, as to a ledger that cannot be
    /// reached.
    pub fn fail_submissions(&self, submissions: u32) {
        self.failing_submissions.store(submissions, Ordering::SeqCst);
    }

    /// How many of the submissions made to fail are still to come.
    pub fn submissions_still_to_fail(&self) -> u32 {
        self.failing_submissions.load(Ordering::SeqCst)
    }

    /// Submissions sent from now on wait [`STALL`].
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    /// Submissions sent from now on are applied at once (those already waiting still wait).
    pub fn resume(&self) {
        self.stalled.store(false, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Ledger for Stalled {
    async fn submit(&self, tx: Transaction) -> Result<Receipt, LedgerError> {
        if self.failing_submissions.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(LedgerError::Unavailable("the ledger cannot be reached (a test's fault)".into()));
        }
        if self.stalled.load(Ordering::SeqCst) {
            // In the sender's task: a crash of the sender ends the wait, and the submission.
            tokio::time::sleep(STALL).await;
        }
        self.inner.submit(tx).await
    }

    async fn balance(&self, account: Address) -> Result<Amount, LedgerError> {
        self.inner.balance(account).await
    }

    async fn next_nonce(&self, account: Address) -> Result<u64, LedgerError> {
        self.inner.next_nonce(account).await
    }

    async fn history(&self, account: Address, limit: usize) -> Result<Vec<Receipt>, LedgerError> {
        self.inner.history(account, limit).await
    }

    async fn escrow(&self, id: EscrowId) -> Result<Option<Escrow>, LedgerError> {
        let failing = self.failing_escrow_reads.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(LedgerError::Unavailable("the ledger cannot be reached (a test's fault)".into()));
        }
        self.inner.escrow(id).await
    }

    async fn open_escrows(&self, payer: Address, limit: usize) -> Result<Vec<(EscrowId, Escrow)>, LedgerError> {
        self.inner.open_escrows(payer, limit).await
    }
}
