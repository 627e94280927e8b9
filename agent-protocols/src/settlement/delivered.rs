//! What a seller delivered and has not yet released the escrow for, kept in its storage so
//! that a seller that crashes between the two is paid when it starts again.
//!
//! A delivery is done once the seller's [`Seller::deliver`](super::Seller::deliver) returns;
//! the seller's pay is its release of the buyer's escrow, a submission to the ledger that a
//! crash may cut short. Its record is written, and flushed, after the delivery, as the
//! release is submitted (a slow commit must not hold the release back past the escrow's
//! deadline), and removed once the release is settled; [`serve_sales`](super::serve_sales)
//! releases every escrow still recorded when the agent starts. Without it, the restarted
//! seller knew nothing of the sale (the [`Sales`](super::Sales) awaited are in memory), and
//! the buyer's escrow went back to it at its deadline: the goods delivered and unpaid.
//!
//! What stays open is the time between the end of a delivery and the record's flush (a
//! storage commit): a crash within it leaves the escrow to the buyer's refund, unless the
//! release reached the ledger first. A delivery
//! recorded before it is done could not tell a crash after the goods were handed over from
//! one before, and would have the seller paid for goods it never delivered.

use agent_core::ledger::EscrowId;
use agent_core::{Agent, Context, Storage, Wallet};
use serde::{Deserialize, Serialize};

use super::release_by;

/// Where a seller keeps each escrow it delivered against and has not released yet
/// (`agora.settlement.delivered/` and the escrow's id, in hex).
const DELIVERED_KEY: &str = "agora.settlement.delivered/";

fn delivered_key(escrow: &EscrowId) -> String {
    format!("{DELIVERED_KEY}{}", hex::encode(escrow.0))
}

/// An escrow delivered against and not yet released, as kept in the seller's storage.
#[derive(Serialize, Deserialize)]
struct Unreleased {
    escrow: EscrowId,
    deadline_ms: u64,
}

/// Records durably that this seller delivered against `escrow` (refundable after
/// `deadline_ms`) and is to release it. Returns the storage to forget the record in once
/// the release is settled, or `None` if it could not be recorded (logged): then a crash
/// before the release leaves the escrow to the buyer's refund, as before there was a record.
/// A record whose commit failed is still forgotten after the release: its write stays
/// queued, and may reach the disk later.
pub(super) async fn record(ctx: &Context, escrow: EscrowId, deadline_ms: u64) -> Option<Storage> {
    let unrecorded = "a delivery could not be recorded: a crash before its release leaves the seller unpaid";
    let storage = match ctx.storage() {
        Ok(storage) => storage,
        Err(e) => {
            tracing::warn!(%escrow, error = %e, "{unrecorded}");
            return None;
        }
    };
    if let Err(e) = storage.set(&delivered_key(&escrow), &Unreleased { escrow, deadline_ms }) {
        tracing::warn!(%escrow, error = %e, "{unrecorded}");
        return None;
    }
    if let Err(e) = storage.flush().await {
        tracing::warn!(%escrow, error = %e, "{unrecorded}");
    }
    Some(storage)
}

/// Forgets the record of `escrow`, whose release is settled (released, or past its deadline
/// and so the refund's). A record left behind is harmless: the next start's release finds
/// the escrow settled.
pub(super) fn forget(storage: &Storage, escrow: EscrowId) {
    if let Err(e) = storage.remove(&delivered_key(&escrow)) {
        tracing::warn!(%escrow, error = %e, "a settled delivery's record could not be removed");
    }
}

/// Has `agent`, each time it starts, release every escrow it recorded as delivered against
/// and not released (a crash came between), each on a task of its own, retried while the
/// ledger cannot be reached until the escrow's deadline and tried once even past it
/// ([`release_by`]), then forget its record. An escrow settled meanwhile is left
/// as it is: the ledger settles an escrow once, so nothing is paid twice. The tasks end
/// with the agent's bureau; a crash before a release leaves its record for the next start.
pub(super) fn release_on_startup(agent: &mut Agent) {
    agent.on_startup(|ctx: Context| async move {
        let (storage, wallet) = match (ctx.storage(), ctx.wallet()) {
            (Ok(storage), Ok(wallet)) => (storage, wallet),
            // No storage, or no wallet to have been paid into: nothing was recorded.
            _ => return,
        };
        for unreleased in recorded(&storage) {
            let (storage, wallet) = (storage.clone(), wallet.clone());
            ctx.spawn(async move { release(&storage, &wallet, unreleased).await });
        }
    });
}

/// Every delivery recorded in `storage` whose escrow was not released. A record that cannot
/// be read is logged, at every start, and left in place: it is the agent's data, not this
/// function's to delete, and whoever wrote it may read it again.
fn recorded(storage: &Storage) -> Vec<Unreleased> {
    let keys = match storage.keys_starting_with(DELIVERED_KEY) {
        Ok(keys) => keys,
        Err(e) => {
            tracing::error!(error = %e, "the deliveries made before a restart cannot be read: their escrows go back to the buyers");
            return Vec::new();
        }
    };
    let mut recorded = Vec::new();
    for key in &keys {
        match storage.get::<Unreleased>(key) {
            Ok(Some(unreleased)) => recorded.push(unreleased),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(%key, error = %e, "a delivery's record cannot be read: left in place, its escrow not released")
            }
        }
    }
    if !recorded.is_empty() {
        tracing::info!(escrows = recorded.len(), "releasing the escrows delivered against before a restart");
    }
    recorded
}

async fn release(storage: &Storage, wallet: &Wallet, Unreleased { escrow, deadline_ms }: Unreleased) {
    if !release_by(wallet, escrow, deadline_ms).await {
        tracing::warn!(%escrow, "delivered before a restart, but this seller did not release the escrow: refunded meanwhile, or the ledger did not take the release");
    }
    forget(storage, escrow);
}
