//! Ledgers: where agents' tokens live, and how payments and escrows settle.
//!
//! [`Ledger`] is the seam: [`LocalLedger`] keeps accounts in memory and its history in an
//! append-only log on disk, inside this process (tests, simulations, a single node); [`RemoteLedger`] talks over libp2p to a
//! [`service`] that hosts a `LocalLedger`, so agents in different processes settle on one
//! shared ledger. Every transaction is signed by its signer, carries the signer's next
//! nonce (used exactly once, in order), and is applied atomically and durably before it is
//! acknowledged.
//!
//! Agents normally use a [`Wallet`](crate::wallet::Wallet), which signs, numbers and
//! checks transactions for them.

mod apply;
mod local;
mod log;
mod memory;
pub mod service;
mod tx;
mod units;

pub use local::{LocalLedger, LocalLedgerConfig};
pub use memory::MemoryLedger;
pub use service::RemoteLedger;
pub use tx::{Amount, DealId, Escrow, EscrowId, Operation, Receipt, Transaction, TxHash, MAX_MEMO};
pub use units::Units;

use crate::identity::Address;

/// Why a ledger refused or could not apply a transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum LedgerError {
    /// Not applied: the signature does not match the transaction and key.
    #[error("bad transaction signature")]
    BadSignature,
    /// Not applied: `signer` is not the address of `signer_key`.
    #[error("signer address does not belong to the signer key")]
    SignerKeyMismatch,
    /// Not applied: the nonce is not the account's next one (a replay if lower, out of
    /// order if higher).
    #[error("nonce {got} for {account} refused: the next nonce is {expected}")]
    NonceMismatch {
        /// The signer.
        account: Address,
        /// The account's next nonce.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// Not applied: the account holds less than the transaction needs.
    #[error("insufficient funds in {account}: needed {needed}, available {available}")]
    InsufficientFunds {
        /// The paying account.
        account: Address,
        /// What the transaction needs.
        needed: Amount,
        /// What the account holds.
        available: Amount,
    },
    /// Not applied: the signer may not do this (mint without authority, release or refund
    /// by someone other than the escrow's payer or arbiter).
    #[error("unauthorised: {0}")]
    Unauthorized(String),
    /// Not applied: no such escrow (never locked, or already settled).
    #[error("no open escrow {0}")]
    UnknownEscrow(EscrowId),
    /// Not applied: a refund before the escrow's deadline.
    #[error("escrow refundable only after {deadline_ms} ms (now {now_ms} ms)")]
    EscrowNotExpired {
        /// The deadline.
        deadline_ms: u64,
        /// The ledger's clock.
        now_ms: u64,
    },
    /// Not applied: a zero amount, an oversized memo, or an amount that would overflow.
    #[error("invalid transaction: {0}")]
    Invalid(String),
    /// Not applied: the ledger's storage failed; nothing was changed.
    #[error("ledger storage failed: {0}")]
    Storage(String),
    /// Maybe applied: the ledger could not be reached or did not answer in time. Query the
    /// account's nonce or history to learn whether the transaction was applied.
    #[error("ledger unavailable ({0}); the transaction may or may not have been applied")]
    Unavailable(String),
}

/// A ledger agents can settle on. See the module docs.
#[async_trait::async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Verifies and applies `tx` atomically; the receipt is returned only once durable.
    async fn submit(&self, tx: Transaction) -> Result<Receipt, LedgerError>;
    /// The account's balance (0 for an unknown account).
    async fn balance(&self, account: Address) -> Result<Amount, LedgerError>;
    /// The nonce the account's next transaction must carry.
    async fn next_nonce(&self, account: Address) -> Result<u64, LedgerError>;
    /// The account's transactions (signed by it or paying it), newest first, at most `limit`.
    async fn history(&self, account: Address, limit: usize) -> Result<Vec<Receipt>, LedgerError>;
    /// An open escrow.
    async fn escrow(&self, id: EscrowId) -> Result<Option<Escrow>, LedgerError>;
    /// The escrows `payer` locked that are still open, soonest deadline first, at most
    /// `limit`. What a payer restarted with no memory of its deals reads to take back what
    /// it is owed.
    async fn open_escrows(&self, payer: Address, limit: usize) -> Result<Vec<(EscrowId, Escrow)>, LedgerError>;
}
