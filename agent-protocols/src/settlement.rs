//! Paying for what was won, through escrow, so that no path leaves money locked forever or
//! pays it twice.
//!
//! The buyer locks the price in escrow for the seller, keyed by the deal (the dialogue or
//! auction it was agreed in), and tells the seller with a [`Payment`] that carries when the
//! delivery is due. The escrow's terms, on the ledger, are the rule both sides hold to:
//!
//! - its deal and its deadline, the delivery's due time plus [`REFUND_GRACE`];
//! - the seller's wallet as its beneficiary and its arbiter: the seller's inform-done is a
//!   release it signs on the ledger once it has delivered, so the buyer does not decide
//!   alone whether the delivery happened;
//! - without that release by the deadline, the ledger lets either side refund it to the
//!   buyer, and neither before.
//!
//! The buyer signs those terms when it locks; the seller reads them on the ledger and
//! delivers only if they hold (the deal, its wallet as beneficiary and arbiter, at least the
//! price, and a deadline no earlier than the grace after the delivery is due), then
//! releases the escrow and answers with a [`Delivery`]. The buyer releases too on
//! [`Delivery::Delivered`] (in case the seller's release failed), and schedules the refund
//! for the deadline ([`refund_when_due`]), as the seller does when it cannot deliver. The
//! ledger settles an escrow once, so it is paid out or refunded, never both, and a second
//! settlement is refused. A buyer restarted with escrows still open calls
//! [`refund_open_escrows`] (contract-net's initiator needs not: it records each escrow it
//! locks in its storage, and its book refunds them when it is loaded again).
//!
//! A seller that crashes after a delivery, before its release reaches the ledger, releases
//! the escrow when it starts again: [`serve_sales`] records each delivery in the seller's
//! storage before releasing its escrow, and releases what is recorded on startup.
//!
//! What the ledger cannot check is the delivery itself: a seller's release is its signed
//! word that it delivered, as inform-done is in FIPA.
//!
//! Contract-net's [`award_and_pay`](crate::contract_net::award_and_pay) locks on the same
//! terms (the winner's wallet as beneficiary and arbiter), and the award carries the
//! [`Payment`]: the winner releases the escrow once it has done the task; the auctions use
//! [`pay_on_delivery`] and [`serve_sales`].

use std::time::Duration;

use agent_core::envelope::unix_now_ms;
use agent_core::ledger::{DealId, EscrowId, LedgerError, Operation};
use agent_core::{Address, Agent, Context, Message, RequestError, Wallet, WalletError};
use serde::{Deserialize, Serialize};

mod delivered;
mod retry;
mod seller;

pub(crate) use retry::retry_until;
pub use seller::{serve_sales, Lapsed, Sales, Seller};

/// How long after a delivery was due its escrow may be refunded: the time the seller has to
/// release it once it has delivered (and the buyer, if the seller's release fails).
pub const REFUND_GRACE: Duration = Duration::from_secs(1);

/// The buyer's word that it has paid: `escrow` holds `price` for the seller, who is to
/// deliver by `deliver_by_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.settlement.Payment")]
pub struct Payment {
    /// The deal paid for.
    pub deal: DealId,
    /// The escrow holding the price.
    pub escrow: EscrowId,
    /// The price, in the ledger's smallest unit.
    pub price: u128,
    /// When the delivery is due (ms since the Unix epoch). The escrow may not be refunded
    /// before this plus [`REFUND_GRACE`]: the time the seller has to release it once it has
    /// delivered.
    pub deliver_by_ms: u64,
}

/// The seller's answer to a [`Payment`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.settlement.Delivery")]
pub enum Delivery {
    /// Delivered: what the buyer gets (a booking reference, a lot number).
    Delivered(serde_json::Value),
    /// Not delivered, and why; the seller refunds the escrow to the buyer at once (at its
    /// deadline if it cannot then).
    Refused(String),
}

/// Payment on delivery as agents publish it: its messages, which reply answers which
/// request, and its digest. Sellers include it ([`serve_sales`]).
pub fn protocol() -> agent_core::Protocol {
    agent_core::Protocol::new("agora.settlement", "2.0.0").replies::<Payment, Delivery>()
}

/// How a payment on delivery ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    /// Delivered, and the escrow released to the seller.
    Paid {
        /// The escrow released.
        escrow: EscrowId,
        /// What was delivered.
        delivery: serde_json::Value,
    },
    /// No delivery heard of: the escrow is refunded to the buyer once its deadline has
    /// passed, unless the seller releases it first (a seller that delivered and crashed
    /// before its answer releases it when it restarts).
    Refunding {
        /// The escrow to be refunded.
        escrow: EscrowId,
        /// Why there was no delivery.
        reason: String,
    },
}

/// Why a payment could not even start.
#[derive(Debug, thiserror::Error)]
pub enum SettlementError {
    /// The buyer's agent has no wallet.
    #[error("the buyer has no wallet: {0}")]
    NoWallet(#[source] WalletError),
    /// The price could not be locked (not enough funds, ledger down): nothing was paid,
    /// unless the error says the lock may have been applied.
    #[error("locking the price failed: {0}")]
    Lock(#[source] WalletError),
}

/// Pays the agent `seller` `price` for `deal` on delivery, due within `deliver_within`:
/// locks the price in escrow for the seller's wallet `pay_to`, which is also the escrow's
/// arbiter, refundable after the delivery is due plus [`REFUND_GRACE`]; sends the
/// [`Payment`]; and once the seller answers [`Delivery::Delivered`] makes sure the escrow is
/// released (the seller releases it itself). Any other end leaves the escrow to be refunded
/// to the buyer when due (scheduled here, in the background), unless the seller released it
/// before its deadline: then the seller is paid, and the refund finds nothing to take back.
pub async fn pay_on_delivery(
    ctx: &Context,
    seller: Address,
    pay_to: Address,
    price: u128,
    deal: DealId,
    deliver_within: Duration,
) -> Result<Settled, SettlementError> {
    let wallet = ctx.wallet().map_err(SettlementError::NoWallet)?;
    let deliver_by_ms = unix_now_ms().saturating_add(deliver_within.as_millis() as u64);
    let deadline_ms = refundable_after(deliver_by_ms);
    let (escrow, _) =
        wallet.lock(price, pay_to, deadline_ms, pay_to, Some(deal)).await.map_err(SettlementError::Lock)?;
    refund_when_due(ctx, wallet.clone(), escrow, deadline_ms);
    let payment = Payment { deal, escrow, price, deliver_by_ms };
    // The seller answers once it has released the escrow, which it may do until the deadline.
    let answer = ctx.request::<Payment, Delivery>(seller, payment, Some(deliver_within + REFUND_GRACE)).await;
    let reason = match answer {
        Ok(Delivery::Delivered(delivery)) => {
            if release_by(&wallet, escrow, deadline_ms).await {
                return Ok(Settled::Paid { escrow, delivery });
            }
            "delivered, but the escrow could not be released before its deadline; it goes back to the buyer".into()
        }
        Ok(Delivery::Refused(reason)) => reason,
        Err(e) => no_delivery(&e),
    };
    Ok(Settled::Refunding { escrow, reason })
}

/// The deadline of an escrow for a delivery due at `deliver_by_ms`: the grace after it.
pub(crate) fn refundable_after(deliver_by_ms: u64) -> u64 {
    deliver_by_ms.saturating_add(REFUND_GRACE.as_millis() as u64)
}

fn no_delivery(e: &RequestError) -> String {
    format!("no delivery: {e}")
}

/// Releases `escrow` from `wallet`, trying again (every 100 ms, doubling to 2 s) while the
/// ledger cannot be reached, until `deadline_ms`, after which the escrow belongs to the
/// refund. True once released (or already settled by a release).
pub async fn release_by(wallet: &Wallet, escrow: EscrowId, deadline_ms: u64) -> bool {
    let release = || async move {
        match wallet.release(escrow).await {
            Ok(_) => Ok(true),
            // Settled already: by an earlier try whose answer was lost, or by the refund.
            Err(WalletError::Ledger(LedgerError::UnknownEscrow(_))) => Ok(released(wallet, escrow).await),
            Err(e) => Err(e),
        }
    };
    match retry_until(deadline_ms, escrow, "release not yet possible", release).await {
        Ok(settled_by_a_release) => settled_by_a_release,
        Err(e) => {
            tracing::error!(%escrow, error = %e, "the escrow could not be released before its deadline");
            false
        }
    }
}

/// Whether the wallet's recent history shows `escrow` released.
pub(crate) async fn released(wallet: &Wallet, escrow: EscrowId) -> bool {
    let history = wallet.history(1000).await.unwrap_or_default();
    history.iter().any(|r| matches!(r.tx.operation, Operation::Release { escrow: e } if e == escrow))
}

/// Refunds `escrow` to `wallet` once its deadline has passed, in the background: tries
/// just after the deadline, then again with backoff (1 s doubling to a minute, for about an
/// hour) while the ledger is unreachable. An escrow already settled (released, or refunded)
/// is left alone. The task is `ctx`'s agent's ([`Context::spawn`]): it ends with the
/// agent's bureau (a stopped or crashed agent refunds nothing after it stopped), so a
/// restarted payer calls [`refund_open_escrows`].
pub fn refund_when_due(ctx: &Context, wallet: Wallet, escrow: EscrowId, deadline_ms: u64) {
    ctx.spawn(async move {
        // Settled or not (then it was logged), there is nothing more to do here.
        refund_at(&wallet, escrow, deadline_ms).await;
    });
}

/// What [`refund_when_due`] runs: waits for the deadline, then refunds. True once the
/// escrow is settled (refunded now, or released or refunded before); false if the ledger
/// could not be reached for an hour.
pub(crate) async fn refund_at(wallet: &Wallet, escrow: EscrowId, deadline_ms: u64) -> bool {
    let wait = deadline_ms.saturating_sub(unix_now_ms()).saturating_add(1);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let mut pause = Duration::from_secs(1);
    for _ in 0..70 {
        match wallet.refund(escrow).await {
            Ok(_) => return true,
            Err(WalletError::Ledger(LedgerError::UnknownEscrow(_))) => return true,
            Err(e) => tracing::warn!(%escrow, error = %e, "refund not yet possible; trying again"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(60));
    }
    tracing::error!(%escrow, "an escrow could not be refunded for an hour; its payer may refund it later");
    false
}

/// Has `agent`, each time it starts, refund the escrows its wallet left open when due
/// ([`refund_open_escrows`], in the background): a payer stopped between locking a price
/// and its settlement (its refund tasks ended with it) gets back what no one released by
/// the deadline. The auctions' bidders and traders are served with it; an agent with no
/// wallet skips it. An agent serving several of those roles schedules each refund once per
/// role: harmless, as the ledger settles an escrow once and a settled one is left alone.
///
/// A lock sent just before a crash may land on the ledger after this look (a submission on
/// its way to a remote ledger is not stopped by the crash of its sender), and then no task
/// of the restarted agent knows of it: so every [`OVERDUE_SWEEP`] the wallet's open
/// escrows are looked at again, and those past their deadline refunded
/// ([`refund_overdue`]). While the agent runs, nothing it locked stays locked longer than
/// a sweep past its deadline.
pub(crate) fn refund_open_escrows_on_startup(agent: &mut Agent) {
    agent.on_startup(|ctx: Context| async move {
        let Ok(wallet) = ctx.wallet() else { return };
        let task_ctx = ctx.clone();
        ctx.spawn(async move {
            if let Err(e) = refund_open_escrows(&task_ctx, &wallet).await {
                tracing::warn!(error = %e, "the escrows left open before this start could not be read; they stay open until the next");
            }
        });
    });
    agent.on_interval(OVERDUE_SWEEP, |ctx: Context| async move {
        let Ok(wallet) = ctx.wallet() else { return };
        // On a task of its own: a slow ledger does not hold up the agent's messages.
        ctx.spawn(async move { refund_overdue(&wallet).await });
    });
}

/// How often an agent that pays through escrow looks for escrows of its wallet left open
/// past their deadline ([`refund_overdue`]).
pub(crate) const OVERDUE_SWEEP: Duration = Duration::from_secs(300);

/// Refunds every escrow `wallet` has open (at most 1,000, soonest deadline first) whose
/// deadline has passed: no one released it in time, so it goes back to its payer, the
/// ledger's rule for every escrow, whoever locked it and for what. Errors are logged; the
/// next sweep tries again.
pub(crate) async fn refund_overdue(wallet: &Wallet) {
    let open = match wallet.open_escrows(1000).await {
        Ok(open) => open,
        Err(e) => {
            return tracing::warn!(error = %e, "the wallet's open escrows could not be read; looked at again later")
        }
    };
    let now_ms = unix_now_ms();
    for (escrow, _) in open.into_iter().filter(|(_, terms)| terms.deadline_ms < now_ms) {
        match wallet.refund(escrow).await {
            Ok(_) => tracing::info!(%escrow, "an escrow left open past its deadline is refunded"),
            // Settled meanwhile (released, or refunded by a task that knew of it).
            Err(WalletError::Ledger(LedgerError::UnknownEscrow(_))) => {}
            Err(e) => tracing::warn!(%escrow, error = %e, "an overdue escrow could not be refunded; tried again later"),
        }
    }
}

/// Schedules a refund ([`refund_when_due`], as a task of `ctx`'s agent) of every escrow
/// `wallet` locked that is still open (at most 1,000, soonest deadline first), and returns
/// how many. For a payer that restarted with deals in flight: what it locked before is
/// refunded at each escrow's deadline unless it is released first. Call it again for more
/// than 1,000.
pub async fn refund_open_escrows(ctx: &Context, wallet: &Wallet) -> Result<usize, WalletError> {
    let open = wallet.open_escrows(1000).await?;
    for (id, escrow) in &open {
        refund_when_due(ctx, wallet.clone(), *id, escrow.deadline_ms);
    }
    Ok(open.len())
}
