//! The seller's side of a payment on delivery: the sales it awaits payment for, and the
//! handler that checks each [`Payment`] on the ledger, delivers, and releases the escrow.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use agent_core::envelope::unix_now_ms;
use agent_core::ledger::DealId;
use agent_core::{Address, Agent, Context, Wallet};
use parking_lot::Mutex;

use super::{delivered, protocol, refund_when_due, refundable_after, release_by, Delivery, Payment};

/// What a seller does once paid: hands over what was sold, or says why it cannot (then the
/// buyer's escrow is refunded to it).
#[async_trait::async_trait]
pub trait Seller: Send + Sync + 'static {
    /// Delivers `deal` to `buyer`, who has locked `price` for it.
    async fn deliver(&self, buyer: Address, deal: DealId, price: u128) -> Result<serde_json::Value, String>;
}

/// The sales a seller awaits payment for: which buyer owes what for each deal. An auction
/// records its award here; [`serve_sales`] delivers each one once, to its buyer, when its
/// escrow is on the ledger.
///
/// A winner may never pay. Made [`with_payment_window`](Self::with_payment_window), a sale
/// lapses when its window closes: a payment after it is refused (nothing is delivered, the
/// buyer's escrow goes back to it), and [`lapsed`](Self::lapsed) hands the seller what is
/// free to be offered again. Made with [`new`](Self::new), a sale waits for as long as the
/// seller keeps it.
#[derive(Clone, Default)]
pub struct Sales {
    owed: Arc<Mutex<HashMap<DealId, Owed>>>,
    window: Option<Duration>,
}

/// One sale awaiting payment.
#[derive(Debug, Clone, Copy)]
struct Owed {
    buyer: Address,
    price: u128,
    /// When the payment window closes (Unix ms); `None`: never.
    pay_by_ms: Option<u64>,
}

impl Owed {
    fn lapsed_at(&self, now_ms: u64) -> bool {
        self.pay_by_ms.is_some_and(|pay_by| now_ms >= pay_by)
    }
}

/// A sale whose payment window closed before it was paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lapsed {
    /// The deal that was not paid.
    pub deal: DealId,
    /// The buyer that did not pay.
    pub buyer: Address,
    /// The price it owed.
    pub price: u128,
}

impl Sales {
    /// No sales yet; a sale waits for payment until the seller drops it.
    pub fn new() -> Sales {
        Sales::default()
    }

    /// No sales yet; each sale must be paid within `window` of being expected, or lapses.
    pub fn with_payment_window(window: Duration) -> Sales {
        Sales { owed: Arc::default(), window: Some(window) }
    }

    /// Awaits `price` from `buyer` for `deal` (within the payment window from now, if any).
    pub fn expect(&self, deal: DealId, buyer: Address, price: u128) {
        let pay_by_ms = self.window.map(|window| unix_now_ms().saturating_add(window.as_millis() as u64));
        self.owed.lock().insert(deal, Owed { buyer, price, pay_by_ms });
    }

    /// Whether `deal` is still awaiting payment (false once its payment window closed).
    pub fn awaits(&self, deal: &DealId) -> bool {
        let now_ms = unix_now_ms();
        self.owed.lock().get(deal).is_some_and(|owed| !owed.lapsed_at(now_ms))
    }

    /// Takes out every sale whose payment window has closed unpaid, so the seller can offer
    /// the goods again (or award them to the runner-up).
    pub fn lapsed(&self) -> Vec<Lapsed> {
        let now_ms = unix_now_ms();
        let mut lapsed = Vec::new();
        self.owed.lock().retain(|deal, owed| {
            if owed.lapsed_at(now_ms) {
                lapsed.push(Lapsed { deal: *deal, buyer: owed.buyer, price: owed.price });
                false
            } else {
                true
            }
        });
        lapsed
    }
}

/// Makes `agent` answer [`Payment`]s for the sales in `sales`: the deal must be awaited from
/// the paying agent, and the escrow open on the ledger for this agent's wallet as both its
/// beneficiary and its arbiter, naming the deal, holding at least the price, and refundable
/// no earlier than [`REFUND_GRACE`](super::REFUND_GRACE) after the delivery is due (nor within a second from
/// now); then `seller` delivers, once, and this agent releases the escrow to itself (its
/// inform-done). If `seller` cannot deliver, this agent refunds the escrow to the buyer at
/// once (at its deadline if the ledger cannot be reached then; the buyer may too). (Who locked the escrow does not matter to the
/// seller: it is paid all the same.)
///
/// A delivery is recorded in the agent's storage (flushed) once `seller` has delivered, as
/// the release is submitted, and the record removed once the release is settled; each time
/// the agent starts, it releases the escrows still recorded (retried while the ledger
/// cannot be reached, until each one's deadline; tried once even past it, as the ledger
/// takes a release until the escrow is refunded).
/// So a seller that crashes after delivering, before its release reached the ledger, is
/// paid when it restarts, instead of the escrow going back to the buyer at its deadline
/// with the goods delivered; the ledger settles an escrow once, so nothing is paid twice.
/// A crash between the end of the delivery and the record's flush, or a storage that
/// cannot record it (logged), still leaves that escrow to the buyer's refund, unless the
/// release reached the ledger first.
pub fn serve_sales<S: Seller>(agent: &mut Agent, sales: Sales, seller: Arc<S>) {
    delivered::release_on_startup(agent);
    let mut served = protocol();
    let work = crate::work::Work::of(agent);
    served = served.on_message(move |ctx: Context, buyer: Address, payment: Payment| {
        let (sales, seller, work) = (sales.clone(), seller.clone(), work.clone());
        async move {
            let (owed, wallet, deadline_ms) = match check_payment(&ctx, &sales, buyer, &payment).await {
                Ok(checked) => checked,
                Err(why) => return ctx.reply(Delivery::Refused(why)).await,
            };
            let reply = ctx.defer_reply()?;
            // Delivered on a task of its own: a delivery may take long, and the seller's
            // agent goes on serving meanwhile (other payments, and an auctioneer's late bids).
            // A delivery is the seller's code, not cancel-safe: a graceful stop lets it end,
            // a crash ends it ([`Work`](crate::work::Work)).
            let task_ctx = ctx.clone();
            work.spawn(&task_ctx, async move {
                let (answer, undelivered) = match seller.deliver(buyer, payment.deal, owed.price).await {
                    Ok(goods) => {
                        // Recorded as the release goes: a crash before the release reaches the
                        // ledger finds the record on restart, and releases the escrow then. Side
                        // by side, not one after the other: a slow commit must not hold the
                        // release back past the deadline, when the buyer's refund would win.
                        let (recorded, released) = tokio::join!(
                            delivered::record(&ctx, payment.escrow, deadline_ms),
                            release_by(&wallet, payment.escrow, deadline_ms)
                        );
                        if !released {
                            tracing::warn!(escrow = %payment.escrow, "delivered, but this seller could not release the escrow; the buyer still may");
                        }
                        if let Some(storage) = recorded {
                            delivered::forget(&storage, payment.escrow);
                        }
                        (Delivery::Delivered(goods), false)
                    }
                    Err(why) => {
                        // Not delivered: the buyer may pay again for the same deal, within
                        // the same window.
                        sales.owed.lock().insert(payment.deal, owed);
                        (Delivery::Refused(why), true)
                    }
                };
                if let Err(e) = reply.send(answer).await {
                    tracing::debug!(%buyer, error = %e, "a buyer did not hear how its payment ended; its escrow decides");
                }
                // This seller is the escrow's arbiter: the buyer has its money back now rather
                // than at the deadline (after the answer, so a slow ledger does not delay it);
                // failing that, at the deadline.
                if undelivered {
                    if let Err(e) = wallet.refund(payment.escrow).await {
                        tracing::debug!(escrow = %payment.escrow, error = %e, "an undelivered payment is refunded at its deadline");
                        refund_when_due(&ctx, wallet, payment.escrow, deadline_ms);
                    }
                }
            });
            Ok(())
        }
    });
    agent.include(served);
}

/// Takes the sale out of `sales` (so it is delivered once) if the payment is good; with the
/// seller's wallet and the escrow's deadline.
async fn check_payment(
    ctx: &Context,
    sales: &Sales,
    buyer: Address,
    payment: &Payment,
) -> Result<(Owed, Wallet, u64), String> {
    let price = match sales.owed.lock().get(&payment.deal) {
        Some(owed) if owed.buyer != buyer => return Err("this deal is owed by another buyer".into()),
        Some(owed) if owed.lapsed_at(unix_now_ms()) => {
            return Err("the payment window for this deal has closed; the sale lapsed".into())
        }
        Some(owed) => owed.price,
        None => return Err("no sale awaits payment for this deal".into()),
    };
    let wallet = ctx.wallet().map_err(|e| format!("the seller has no wallet: {e}"))?;
    let escrow = match wallet.escrow(payment.escrow).await {
        Ok(Some(escrow)) => escrow,
        Ok(None) => return Err(format!("escrow {} is not open", payment.escrow)),
        Err(e) => return Err(format!("the ledger could not be read: {e}")),
    };
    if escrow.beneficiary != wallet.address() || escrow.deal != Some(payment.deal) {
        return Err(format!("escrow {} does not pay this seller for this deal", payment.escrow));
    }
    if escrow.arbiter != wallet.address() {
        return Err(format!(
            "escrow {} names {} as its arbiter: the seller must be able to release it once it has delivered",
            payment.escrow, escrow.arbiter
        ));
    }
    if escrow.deadline_ms < refundable_after(payment.deliver_by_ms) {
        return Err(format!(
            "escrow {} is refundable before the delivery is due and its grace has passed",
            payment.escrow
        ));
    }
    let now_ms = unix_now_ms();
    if now_ms >= payment.deliver_by_ms || escrow.deadline_ms < now_ms.saturating_add(1000) {
        return Err(format!("escrow {} is refundable too soon to deliver against", payment.escrow));
    }
    if escrow.amount < price {
        return Err(format!("escrow {} holds {} of the {price} owed", payment.escrow, escrow.amount));
    }
    // Taken out under the lock: a second payment for the same deal finds nothing owed.
    let mut owed = sales.owed.lock();
    match owed.remove(&payment.deal) {
        Some(taken) if taken.buyer == buyer && !taken.lapsed_at(unix_now_ms()) => {
            Ok((taken, wallet, escrow.deadline_ms))
        }
        Some(taken) => {
            // Lapsed while the escrow was being read, or owed by another: not this payment's.
            owed.insert(payment.deal, taken);
            Err("the payment window for this deal has closed; the sale lapsed".into())
        }
        None => Err("this deal was just paid".into()),
    }
}
