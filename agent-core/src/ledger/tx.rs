//! Signed ledger transactions and their canonical signing bytes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::{Address, Identity, PublicKey};

/// An amount in the smallest unit of the token. Money is never a float.
pub type Amount = u128;

/// Identifies an escrow: sha256 of its payer and the nonce of the locking transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EscrowId(#[serde(with = "crate::message::hex_digest")] pub [u8; 32]);

impl std::fmt::Display for EscrowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(&self.0[..12]))
    }
}

impl EscrowId {
    /// The id of the escrow locked by `payer`'s transaction with `nonce`.
    pub fn of(payer: &Address, nonce: u64) -> EscrowId {
        EscrowId(
            Sha256::new()
                .chain_update(b"agora.escrow.v1")
                .chain_update(payer.as_bytes())
                .chain_update(nonce.to_be_bytes())
                .finalize()
                .into(),
        )
    }
}

/// Names the deal an escrow settles: the conversation (for example a protocol dialogue's
/// session id) in which payer and beneficiary agreed on it. Shown in the receipts of the
/// lock and of its release or refund, so each names what it settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DealId(#[serde(with = "crate::message::hex_digest")] pub [u8; 32]);

impl DealId {
    /// The deal id derived from `name` (sha256 with a domain tag), for deals named by text.
    pub fn named(name: &str) -> DealId {
        DealId(Sha256::new().chain_update(b"agora.deal.v1").chain_update(name.as_bytes()).finalize().into())
    }
}

/// The JSON Schema of a 32-byte id written as 64 hex digits (escrow and deal ids).
fn hex_id_schema() -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "pattern": "^[0-9a-f]{64}$" })
}

impl schemars::JsonSchema for EscrowId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EscrowId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        hex_id_schema()
    }
}

impl crate::message::WireSchema for EscrowId {}

impl schemars::JsonSchema for DealId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DealId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        hex_id_schema()
    }
}

impl crate::message::WireSchema for DealId {}

impl std::fmt::Display for DealId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(&self.0[..12]))
    }
}

/// What a transaction does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// Moves `amount` from the signer to `to`.
    Transfer {
        /// The receiving account.
        to: Address,
        /// How much.
        amount: Amount,
    },
    /// Moves `amount` from the signer into an escrow, released to `beneficiary` by the
    /// signer or by `arbiter` (the condition), or refunded to the signer after `deadline_ms`.
    Lock {
        /// How much.
        amount: Amount,
        /// Who receives the funds on release.
        beneficiary: Address,
        /// After this instant (ms since the Unix epoch, by the ledger's clock) the payer
        /// may take the funds back.
        deadline_ms: u64,
        /// The account that decides the condition and may release besides the payer.
        arbiter: Address,
        /// The deal this escrow settles, if it belongs to one.
        #[serde(default)]
        deal: Option<DealId>,
    },
    /// Pays an escrow out to its beneficiary. Signer: the escrow's payer or its arbiter.
    Release {
        /// The escrow.
        escrow: EscrowId,
    },
    /// Returns an escrow to its payer. Signer: the payer or the arbiter, after the deadline;
    /// an arbiter that is not the payer may also refund before it (it decides the condition
    /// failed), a payer never.
    Refund {
        /// The escrow.
        escrow: EscrowId,
    },
    /// Creates `amount` new tokens in `to`. Signer: the ledger's mint authority only.
    Mint {
        /// The receiving account.
        to: Address,
        /// How much.
        amount: Amount,
    },
}

/// A transaction signed by its signer (the payer, for a transfer or a lock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// The signer's account.
    pub signer: Address,
    /// The signer's public key; `signer` must be its address.
    pub signer_key: PublicKey,
    /// The signer's next nonce: each is used exactly once, in order.
    pub nonce: u64,
    /// What to do.
    pub operation: Operation,
    /// Free text stored with the transaction (at most 256 bytes).
    pub memo: String,
    /// ed25519 over [`Transaction::signing_bytes`].
    #[serde(with = "crate::identity::signature_hex")]
    pub signature: [u8; 64],
}

/// The longest memo a ledger accepts, in bytes.
pub const MAX_MEMO: usize = 256;

impl Transaction {
    /// Builds and signs a transaction.
    pub fn sign(identity: &Identity, nonce: u64, operation: Operation, memo: impl Into<String>) -> Transaction {
        let mut tx = Transaction {
            signer: identity.address(),
            signer_key: identity.public_key(),
            nonce,
            operation,
            memo: memo.into(),
            signature: [0; 64],
        };
        tx.signature = identity.sign(&tx.signing_bytes());
        tx
    }

    /// The canonical bytes the signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.memo.len());
        out.extend_from_slice(b"agora.tx.v2");
        out.extend_from_slice(self.signer.as_bytes());
        out.extend_from_slice(&self.signer_key.0);
        out.extend_from_slice(&self.nonce.to_be_bytes());
        match &self.operation {
            Operation::Transfer { to, amount } => {
                out.push(1);
                out.extend_from_slice(to.as_bytes());
                out.extend_from_slice(&amount.to_be_bytes());
            }
            Operation::Lock { amount, beneficiary, deadline_ms, arbiter, deal } => {
                out.push(2);
                out.extend_from_slice(&amount.to_be_bytes());
                out.extend_from_slice(beneficiary.as_bytes());
                out.extend_from_slice(&deadline_ms.to_be_bytes());
                out.extend_from_slice(arbiter.as_bytes());
                match deal {
                    Some(deal) => {
                        out.push(1);
                        out.extend_from_slice(&deal.0);
                    }
                    None => out.push(0),
                }
            }
            Operation::Release { escrow } => {
                out.push(3);
                out.extend_from_slice(&escrow.0);
            }
            Operation::Refund { escrow } => {
                out.push(4);
                out.extend_from_slice(&escrow.0);
            }
            Operation::Mint { to, amount } => {
                out.push(5);
                out.extend_from_slice(to.as_bytes());
                out.extend_from_slice(&amount.to_be_bytes());
            }
        }
        out.extend_from_slice(&(self.memo.len() as u32).to_be_bytes());
        out.extend_from_slice(self.memo.as_bytes());
        out
    }

    /// sha256 of the signing bytes and signature: the transaction's id.
    pub fn hash(&self) -> TxHash {
        TxHash(Sha256::new().chain_update(self.signing_bytes()).chain_update(self.signature).finalize().into())
    }
}

/// A transaction's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxHash(#[serde(with = "crate::message::hex_digest")] pub [u8; 32]);

impl std::fmt::Display for TxHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// An applied transaction, as the ledger records and acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The transaction.
    pub tx: Transaction,
    /// Its id.
    pub hash: TxHash,
    /// Its position in the ledger (1, 2, …).
    pub height: u64,
    /// When it was applied, by the ledger's clock (ms since the Unix epoch).
    pub applied_ms: u64,
    /// For a lock: the escrow created.
    pub escrow: Option<EscrowId>,
    /// For a lock, release or refund of an escrow that belongs to a deal: that deal.
    #[serde(default)]
    pub deal: Option<DealId>,
}

/// Funds held in escrow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escrow {
    /// Who locked the funds.
    pub payer: Address,
    /// Who receives them on release.
    pub beneficiary: Address,
    /// Who may release besides the payer.
    pub arbiter: Address,
    /// How much.
    pub amount: Amount,
    /// After this instant the payer may take them back.
    pub deadline_ms: u64,
    /// The deal it settles, if any.
    #[serde(default)]
    pub deal: Option<DealId>,
}
