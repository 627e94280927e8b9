//! Applying ledger transactions: each is checked in full against the state before it
//! writes anything ([`Plan`]), so a refused one leaves no trace in its group. Applying reads
//! no clock: the group's time is an argument, so the same group applied to the same state
//! gives the same result.

use std::collections::HashMap;

use super::tx::{Amount, Escrow, EscrowId, Operation, Receipt, Transaction};
use super::LedgerError;
use crate::identity::Address;
use crate::store::{Table, Tables};

/// Account records by address: balance (16 bytes) and next nonce (8 bytes), big-endian.
pub(super) const ACCOUNTS: Table = Table::new("accounts");
/// Open escrows by id, as JSON.
pub(super) const ESCROWS: Table = Table::new("escrows");
/// Receipts by height (8 bytes, big-endian), as JSON.
pub(super) const RECEIPTS: Table = Table::new("receipts");
/// One empty entry per party of each transaction: address followed by height.
pub(super) const INDEX: Table = Table::new("index");
/// `height` and `supply`.
pub(super) const META: Table = Table::new("meta");

#[derive(Clone, Copy, Default)]
pub(super) struct Account {
    pub(super) balance: Amount,
    pub(super) next_nonce: u64,
}

impl Account {
    /// The stored account (a fresh one if none is stored). A record of the wrong size is
    /// refused as corrupt, never read as an empty account: that would let old nonces
    /// be replayed.
    pub(super) fn decode(bytes: Option<Vec<u8>>) -> Result<Account, LedgerError> {
        match bytes {
            None => Ok(Account::default()),
            Some(b) => Ok(Account {
                balance: be_u128(b.get(..16).unwrap_or_default(), "account balance")?,
                next_nonce: be_u64(b.get(16..).unwrap_or_default(), "account nonce")?,
            }),
        }
    }

    fn encode(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..16].copy_from_slice(&self.balance.to_be_bytes());
        out[16..].copy_from_slice(&self.next_nonce.to_be_bytes());
        out
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

/// Applies `batch` in order to the tables of one write transaction. A refused transaction changes nothing and
/// gets its refusal; a storage failure fails the whole group (nothing is committed).
pub(super) fn apply_group<'a>(
    t: &mut Tables<'_>,
    batch: impl IntoIterator<Item = &'a Transaction>,
    now_ms: u64,
    authority: Option<Address>,
) -> Result<Vec<Result<Receipt, LedgerError>>, LedgerError> {
    let mut height = read(t, META, b"height")?.map(|b| be_u64(&b, "height")).transpose()?.unwrap_or(0);
    let supply = read(t, META, b"supply")?.map(|b| be_u128(&b, "supply")).transpose()?.unwrap_or(0);
    let start = (height, supply);
    let mut supply = start.1;
    let mut results = Vec::new();
    for tx in batch {
        let next = height.checked_add(1).ok_or_else(|| corrupt("height", 8))?;
        match plan(t, tx, now_ms, next, supply, authority) {
            Ok(plan) => {
                write(t, &plan)?;
                height = plan.receipt.height;
                supply = plan.supply;
                results.push(Ok(plan.receipt));
            }
            Err(err @ LedgerError::Storage(_)) => return Err(err),
            Err(refused) => results.push(Err(refused)),
        }
    }
    if height != start.0 {
        put(t, META, b"height", Some(&height.to_be_bytes()))?;
    }
    if supply != start.1 {
        put(t, META, b"supply", Some(&supply.to_be_bytes()))?;
    }
    Ok(results)
}

/// Checks `tx` against the state in `t` and works out what it changes.
fn plan(
    t: &mut Tables<'_>,
    tx: &Transaction,
    now_ms: u64,
    height: u64,
    supply: Amount,
    authority: Option<Address>,
) -> Result<Plan, LedgerError> {
    let mut signer = account(t, &HashMap::new(), &tx.signer)?;
    if tx.nonce != signer.next_nonce {
        return Err(LedgerError::NonceMismatch { account: tx.signer, expected: signer.next_nonce, got: tx.nonce });
    }
    signer.next_nonce = signer
        .next_nonce
        .checked_add(1)
        .ok_or_else(|| LedgerError::Invalid(format!("account {} has used every nonce", tx.signer)))?;
    let mut accounts = HashMap::new();
    let mut parties = vec![tx.signer];
    let mut escrow = None;
    let mut created = None;
    let mut settles = None;
    let mut supply = supply;
    match &tx.operation {
        Operation::Transfer { to, amount } => {
            debit(&mut signer, &tx.signer, *amount)?;
            accounts.insert(tx.signer, signer);
            credit(t, &mut accounts, to, *amount)?;
            parties.push(*to);
        }
        Operation::Lock { amount, beneficiary, deadline_ms, arbiter, deal } => {
            debit(&mut signer, &tx.signer, *amount)?;
            accounts.insert(tx.signer, signer);
            let id = EscrowId::of(&tx.signer, tx.nonce);
            let locked = Escrow {
                payer: tx.signer,
                beneficiary: *beneficiary,
                arbiter: *arbiter,
                amount: *amount,
                deadline_ms: *deadline_ms,
                deal: *deal,
            };
            escrow = Some((id, Some(locked)));
            created = Some(id);
            settles = *deal;
            parties.extend([*beneficiary, *arbiter]);
        }
        Operation::Release { escrow: id } | Operation::Refund { escrow: id } => {
            let Some(bytes) = read(t, ESCROWS, &id.0)? else {
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
            credit(t, &mut accounts, &to, open.amount)?;
            escrow = Some((*id, None));
            settles = open.deal;
            parties.extend([open.payer, open.beneficiary]);
        }
        Operation::Mint { to, amount } => {
            if authority != Some(tx.signer) {
                return Err(LedgerError::Unauthorized("only the mint authority may mint".into()));
            }
            accounts.insert(tx.signer, signer);
            credit(t, &mut accounts, to, *amount)?;
            supply = supply.checked_add(*amount).ok_or_else(|| LedgerError::Invalid("supply would overflow".into()))?;
            parties.push(*to);
        }
    }
    parties.sort();
    parties.dedup();
    let receipt =
        Receipt { hash: tx.hash(), tx: tx.clone(), height, applied_ms: now_ms, escrow: created, deal: settles };
    Ok(Plan { accounts, escrow, receipt, parties, supply })
}

/// Writes what `plan` changes.
fn write(t: &mut Tables<'_>, plan: &Plan) -> Result<(), LedgerError> {
    for (who, account) in &plan.accounts {
        put(t, ACCOUNTS, who.as_bytes(), Some(&account.encode()))?;
    }
    if let Some((id, escrow)) = &plan.escrow {
        match escrow {
            Some(escrow) => put(t, ESCROWS, &id.0, Some(&json(escrow)?))?,
            None => put(t, ESCROWS, &id.0, None)?,
        }
    }
    let height = plan.receipt.height.to_be_bytes();
    put(t, RECEIPTS, &height, Some(&json(&plan.receipt)?))?;
    for party in &plan.parties {
        let mut key = party.as_bytes().to_vec();
        key.extend_from_slice(&height);
        put(t, INDEX, &key, Some(&[]))?;
    }
    Ok(())
}

fn read(t: &mut Tables<'_>, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, LedgerError> {
    t.get(table, key).map_err(storage)
}

fn put(t: &mut Tables<'_>, table: Table, key: &[u8], value: Option<&[u8]>) -> Result<(), LedgerError> {
    t.put(table, key, value).map_err(storage)
}

fn json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, LedgerError> {
    serde_json::to_vec(value).map_err(storage)
}

/// `who`'s account as this transaction has changed it so far, or as stored.
fn account(t: &mut Tables<'_>, changed: &HashMap<Address, Account>, who: &Address) -> Result<Account, LedgerError> {
    match changed.get(who) {
        Some(account) => Ok(*account),
        None => Account::decode(read(t, ACCOUNTS, who.as_bytes())?),
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
    t: &mut Tables<'_>,
    changed: &mut HashMap<Address, Account>,
    who: &Address,
    amount: Amount,
) -> Result<(), LedgerError> {
    let mut credited = account(t, changed, who)?;
    credited.balance =
        credited.balance.checked_add(amount).ok_or_else(|| LedgerError::Invalid("balance would overflow".into()))?;
    changed.insert(*who, credited);
    Ok(())
}

/// A stored big-endian `u64`; a value of the wrong size is reported as corrupt.
pub(super) fn be_u64(bytes: &[u8], what: &str) -> Result<u64, LedgerError> {
    bytes.try_into().map(u64::from_be_bytes).map_err(|_| corrupt(what, bytes.len()))
}

/// A stored big-endian `u128`; a value of the wrong size is reported as corrupt.
pub(super) fn be_u128(bytes: &[u8], what: &str) -> Result<u128, LedgerError> {
    bytes.try_into().map(u128::from_be_bytes).map_err(|_| corrupt(what, bytes.len()))
}

fn corrupt(what: &str, size: usize) -> LedgerError {
    LedgerError::Storage(format!("the stored {what} is corrupt ({size} bytes)"))
}

fn storage(e: impl std::error::Error) -> LedgerError {
    LedgerError::Storage(crate::error::chain(&e))
}
