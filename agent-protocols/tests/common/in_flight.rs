//! A ledger at the end of a slow network, for crash tests: a submission may still land
//! after its sender crashed (and restarted), as one already on the wire does.

use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{Amount, Escrow, EscrowId, Ledger, LedgerError, MemoryLedger, Receipt, Transaction};
use agent_core::sim::Sim;
use agent_core::Address;

/// A ledger reached over a slow network: a submission sent in `window` (Unix ms) takes
/// `delay` to land, and lands whether or not its sender is still there to hear the answer.
pub struct InFlight {
    inner: Arc<MemoryLedger>,
    window: (u64, u64),
    delay: Duration,
    clock: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl InFlight {
    /// `inner`, its submissions sent from `from` until `until` (simulated time since the start)
    /// landing `delay` later.
    pub fn new(sim: &Sim, inner: Arc<MemoryLedger>, (from, until): (Duration, Duration), delay: Duration) -> InFlight {
        let start = sim.unix_ms() - sim.elapsed().as_millis() as u64;
        let window = (start + from.as_millis() as u64, start + until.as_millis() as u64);
        InFlight { inner, window, delay, clock: Box::new(sim.clock()) }
    }
}

#[async_trait::async_trait]
impl Ledger for InFlight {
    async fn submit(&self, tx: Transaction) -> Result<Receipt, LedgerError> {
        let now = (self.clock)();
        if now < self.window.0 || now >= self.window.1 {
            return self.inner.submit(tx).await;
        }
        let (inner, delay) = (self.inner.clone(), self.delay);
        // On the network, not in the sender's process: a crash of the sender does not stop it.
        let landing = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            inner.submit(tx).await
        });
        landing.await.map_err(|e| LedgerError::Unavailable(e.to_string()))?
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
        self.inner.escrow(id).await
    }

    async fn open_escrows(&self, payer: Address, limit: usize) -> Result<Vec<(EscrowId, Escrow)>, LedgerError> {
        self.inner.open_escrows(payer, limit).await
    }
}
