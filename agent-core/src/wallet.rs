//! Wallets: an agent's key for money, its nonces, and its view of a ledger.
//!
//! A [`Wallet`] signs transactions with its own key (by default derived from the agent's
//! identity), numbers them with the account's nonces, and checks funds before signing. It
//! serialises its own submissions, so concurrent transfers from one wallet never collide
//! on a nonce. Creating a wallet contacts nobody: the ledger is first used by the first call.
//!
//! ```
//! use std::sync::Arc;
//! use agent_core::ledger::{LocalLedger, LocalLedgerConfig};
//! use agent_core::{Identity, Wallet};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mint = Identity::from_seed("mint authority");
//! let ledger = Arc::new(LocalLedger::open(LocalLedgerConfig::default().with_authority(mint.address()))?);
//! let faucet = Wallet::new(mint, ledger.clone());
//! let alice = Wallet::new(Identity::from_seed("alice").derive("wallet"), ledger.clone());
//! let bob = Wallet::new(Identity::from_seed("bob").derive("wallet"), ledger.clone());
//! faucet.mint(alice.address(), 1_000).await?;
//! alice.transfer(bob.address(), 250, "coffee").await?;
//! assert_eq!(bob.balance().await?, 250);
//! assert_eq!(alice.history(10).await?.len(), 2);
//! # Ok(()) }
//! ```

use std::sync::Arc;

use crate::identity::{Address, Identity};
use crate::ledger::{Amount, DealId, Escrow, EscrowId, Ledger, LedgerError, Operation, Receipt, Transaction};

/// Why a wallet operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    /// Nothing signed: the account holds less than needed.
    #[error("insufficient funds: needed {needed}, available {available}")]
    InsufficientFunds {
        /// What the operation needs.
        needed: Amount,
        /// What the account holds.
        available: Amount,
    },
    /// The ledger refused or could not apply the transaction (see the variant).
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The bureau has no ledger configured.
    #[error("no ledger is configured for this agent (Config::with_ledger)")]
    NoLedger,
}

/// A wallet. Cloning is cheap; clones share nonces.
#[derive(Clone)]
pub struct Wallet {
    inner: Arc<Inner>,
}

struct Inner {
    identity: Identity,
    ledger: Arc<dyn Ledger>,
    /// The next nonce, once learned from the ledger; `None` when unknown (at start, or
    /// after a submission whose fate is unknown). Held across the submission on purpose:
    /// it is what serialises this wallet's transactions.
    next_nonce: tokio::sync::Mutex<Option<u64>>,
}

impl Wallet {
    /// A wallet for `identity` on `ledger`.
    pub fn new(identity: Identity, ledger: Arc<dyn Ledger>) -> Wallet {
        Wallet { inner: Arc::new(Inner { identity, ledger, next_nonce: tokio::sync::Mutex::new(None) }) }
    }

    /// The wallet's ledger account.
    pub fn address(&self) -> Address {
        self.inner.identity.address()
    }

    /// The account's balance.
    pub async fn balance(&self) -> Result<Amount, WalletError> {
        Ok(self.inner.ledger.balance(self.address()).await?)
    }

    /// Pays `amount` to `to`.
    pub async fn transfer(&self, to: Address, amount: Amount, memo: impl Into<String>) -> Result<Receipt, WalletError> {
        self.submit(Operation::Transfer { to, amount }, Some(amount), memo.into()).await
    }

    /// Locks `amount` in escrow for `beneficiary`; `arbiter` (the condition) or this wallet
    /// may release it, and after `deadline_ms` this wallet may refund it. `deal` names the
    /// deal it settles (shown in the receipts of the lock and of its release or refund).
    pub async fn lock(
        &self,
        amount: Amount,
        beneficiary: Address,
        deadline_ms: u64,
        arbiter: Address,
        deal: Option<DealId>,
    ) -> Result<(EscrowId, Receipt), WalletError> {
        let operation = Operation::Lock { amount, beneficiary, deadline_ms, arbiter, deal };
        let receipt = self.submit(operation, Some(amount), String::new()).await?;
        let id = receipt
            .escrow
            .ok_or_else(|| WalletError::Ledger(LedgerError::Invalid("the ledger returned no escrow id".into())))?;
        Ok((id, receipt))
    }

    /// Pays an escrow out to its beneficiary (as its payer or arbiter).
    pub async fn release(&self, escrow: EscrowId) -> Result<Receipt, WalletError> {
        self.submit(Operation::Release { escrow }, None, String::new()).await
    }

    /// Returns an escrow to its payer: after its deadline as its payer or arbiter, or before
    /// it as an arbiter that is not the payer.
    pub async fn refund(&self, escrow: EscrowId) -> Result<Receipt, WalletError> {
        self.submit(Operation::Refund { escrow }, None, String::new()).await
    }

    /// Creates tokens in `to`: the faucet. Only the ledger's mint authority may.
    pub async fn mint(&self, to: Address, amount: Amount) -> Result<Receipt, WalletError> {
        self.submit(Operation::Mint { to, amount }, None, String::new()).await
    }

    /// An open escrow (`None` once settled, or if it never existed): what a beneficiary
    /// reads to check it was paid before it delivers.
    pub async fn escrow(&self, id: EscrowId) -> Result<Option<Escrow>, WalletError> {
        Ok(self.inner.ledger.escrow(id).await?)
    }

    /// The escrows this wallet locked that are still open, soonest deadline first, at most
    /// `limit`.
    pub async fn open_escrows(&self, limit: usize) -> Result<Vec<(EscrowId, Escrow)>, WalletError> {
        Ok(self.inner.ledger.open_escrows(self.address(), limit).await?)
    }

    /// The account's transactions, newest first.
    pub async fn history(&self, limit: usize) -> Result<Vec<Receipt>, WalletError> {
        Ok(self.inner.ledger.history(self.address(), limit).await?)
    }

    async fn submit(&self, operation: Operation, spends: Option<Amount>, memo: String) -> Result<Receipt, WalletError> {
        let ledger = &self.inner.ledger;
        let mut next_nonce = self.inner.next_nonce.lock().await;
        if let Some(needed) = spends {
            let available = ledger.balance(self.address()).await?;
            if available < needed {
                return Err(WalletError::InsufficientFunds { needed, available });
            }
        }
        // One retry: another holder of this key may have used the nonce we knew.
        for _ in 0..2 {
            let nonce = match *next_nonce {
                Some(nonce) => nonce,
                None => ledger.next_nonce(self.address()).await?,
            };
            let tx = Transaction::sign(&self.inner.identity, nonce, operation.clone(), memo.clone());
            match ledger.submit(tx).await {
                Ok(receipt) => {
                    *next_nonce = Some(nonce + 1);
                    return Ok(receipt);
                }
                Err(LedgerError::NonceMismatch { expected, .. }) => *next_nonce = Some(expected),
                Err(err @ LedgerError::Unavailable(_)) => {
                    // Applied or not: learn the nonce from the ledger next time.
                    *next_nonce = None;
                    return Err(err.into());
                }
                Err(err) => {
                    *next_nonce = Some(nonce);
                    return Err(err.into());
                }
            }
        }
        let expected = ledger.next_nonce(self.address()).await?;
        Err(LedgerError::NonceMismatch { account: self.address(), expected, got: next_nonce.unwrap_or(expected) }
            .into())
    }
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet").field("address", &self.address()).finish_non_exhaustive()
    }
}
