//! A bidder's side of the auctions it is in, kept as dialogues in its agent's storage, and
//! how it pays for what it wins; shared by the English, Dutch, sealed-bid and double
//! auctions.
//!
//! Each auction a bidder is invited to is its dialogue with the auctioneer
//! ([`auction::dialogue_of`] the auction and the bidder, the id the auctioneer uses too),
//! under the auction's declared rules, with the bidder in the role [`BIDDER`]. Every message
//! from the auctioneer is checked against it before the bidder acts on it, and every bid
//! before it is signed and sent: one out of order, from anyone but the auctioneer that
//! opened it, after the close, or for an auction the bidder never joined is refused, changes
//! nothing, and its sender is told which dialogue and state it hit. What the bidder needs to
//! go on (the item, the most it signed) is kept with each step, so a restarted bidder
//! resumes its auctions: it bids on the stored item and pays only up to what it signed.
//!
//! A bidder follows at most [`MAX_FOLLOWED`] open auctions. Its dialogues are swept as an
//! auctioneer's are: those whose close never came expire a minute after their deadline, and
//! every dialogue is forgotten a day after it opened.

use std::time::Duration;

use agent_core::envelope::unix_now_ms as now_ms;
use agent_core::{Address, Agent, Context};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::auction::{self, Award, BIDDER};
use crate::dialogue::{Data, Dialogues, Rules, Step};
use crate::inbox::{tell, Book};
use crate::settlement::{self, Settled, SettlementError};
use crate::work::Work;

/// At most this many auctions a bidder follows at once (open dialogues of one auction kind):
/// when full, the oldest it has not bid in expires to make room for a new one, so no one
/// can shut it out for good; if it has bid in every one, the new one is not joined.
pub(crate) const MAX_FOLLOWED: usize = 1024;

/// A bidder's auctions of one kind.
#[derive(Clone)]
pub(crate) struct Bidding {
    book: Book,
    /// The payments in hand ([`Owed::pay`]).
    work: Work,
}

impl Bidding {
    /// Makes `agent` keep its auctions under `rules` as dialogues, swept on the agent.
    pub(crate) fn serve(agent: &mut Agent, rules: fn() -> Rules) -> Bidding {
        settlement::refund_open_escrows_on_startup(agent);
        Bidding { book: Book::serve(agent, rules, BIDDER), work: Work::of(agent) }
    }

    /// The bidder's work in hand: its payments for what it won.
    pub(crate) fn work(&self) -> &Work {
        &self.work
    }

    /// Whether this bidder has a dialogue (open or closed) in `auction`.
    pub(crate) fn knows(&self, ctx: &Context, auction: &str) -> bool {
        let id = auction::dialogue_of(auction, &ctx.address());
        self.book.get(ctx).is_ok_and(|dialogues| dialogues.get(id).is_some())
    }

    /// Joins `auction`, opened by `auctioneer` with its message `step`, keeping `kept` with
    /// it; its state lasts until `deadline_ms` if given (the auction's close). False if the
    /// dialogue refused the opening (its sender is told) or this bidder follows too many.
    pub(crate) async fn join<K: Serialize>(
        &self,
        ctx: &Context,
        auction: &str,
        auctioneer: Address,
        step: &str,
        deadline_ms: Option<u64>,
        kept: &K,
    ) -> bool {
        let id = auction::dialogue_of(auction, &ctx.address());
        let Some((dialogues, kept)) = self.ready(ctx, auction, kept) else { return false };
        if dialogues.get(id).is_none() && !make_room(dialogues, auction) {
            return false;
        }
        let step_taken = match deadline_ms {
            Some(deadline_ms) => Step::default().until(deadline_ms).keeping(kept),
            None => Step::default().keeping(kept),
        };
        match dialogues.incoming_with(step, id, auctioneer, now_ms(), step_taken) {
            Ok(_) => true,
            Err(refused) => {
                tell(ctx, id, auctioneer, refused).await;
                false
            }
        }
    }

    /// Checks the auctioneer's `step` in `auction`, from `from`, and records it; what the
    /// dialogue keeps stays. Returns what it keeps, if the step was accepted; otherwise
    /// `from` is told why, and nothing changes.
    pub(crate) async fn heard<K: DeserializeOwned>(
        &self,
        ctx: &Context,
        auction: &str,
        from: Address,
        step: &str,
    ) -> Option<K> {
        let id = auction::dialogue_of(auction, &ctx.address());
        let dialogues = self.dialogues(ctx, auction)?;
        let (kept, deadline_ms) = dialogues.get(id).map(|d| (d.data, d.deadline_ms)).unwrap_or_default();
        let kept = kept.unwrap_or_else(|| Data::from(serde_json::Value::Null));
        match dialogues.incoming_with(step, id, from, now_ms(), keeping(kept.clone(), deadline_ms)) {
            Ok(_) => decode(auction, kept),
            Err(refused) => {
                tell(ctx, id, from, refused).await;
                None
            }
        }
    }

    /// Checks that this bidder may send its `step` in `auction` now and records it, keeping
    /// `kept` with it from now on: call it before signing and sending. False (and logged) if
    /// the dialogue refused it (the auction closed, its deadline passed, or one answer only):
    /// then send nothing.
    pub(crate) fn say<K: Serialize>(&self, ctx: &Context, auction: &str, step: &str, kept: &K) -> bool {
        let id = auction::dialogue_of(auction, &ctx.address());
        let Some((dialogues, kept)) = self.ready(ctx, auction, kept) else { return false };
        let deadline_ms = dialogues.get(id).and_then(|d| d.deadline_ms);
        match dialogues.outgoing_with(step, id, now_ms(), keeping(kept, deadline_ms)) {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(auction, step, error = %e, "a bid not sent: its dialogue refused it");
                false
            }
        }
    }

    /// The dialogues, and `kept` as it is stored; `None` (logged) if either fails.
    fn ready<K: Serialize>(&self, ctx: &Context, auction: &str, kept: &K) -> Option<(&Dialogues, Data)> {
        let dialogues = self.dialogues(ctx, auction)?;
        match Data::encode(kept) {
            Ok(kept) => Some((dialogues, kept)),
            Err(e) => {
                tracing::warn!(auction, error = %e, "what a bidder keeps of an auction could not be written");
                None
            }
        }
    }

    fn dialogues(&self, ctx: &Context, auction: &str) -> Option<&Dialogues> {
        match self.book.get(ctx) {
            Ok(dialogues) => Some(dialogues),
            Err(e) => {
                tracing::warn!(auction, error = %e, "a bidder's dialogues could not be read");
                None
            }
        }
    }
}

/// A step that keeps `kept`, and the deadline the dialogue has (the auction's close)
/// instead of the rules', so every state a bid leads to closes with the auction.
fn keeping(kept: Data, deadline_ms: Option<u64>) -> Step {
    match deadline_ms {
        Some(deadline_ms) => Step::default().until(deadline_ms).keeping(kept),
        None => Step::default().keeping(kept),
    }
}

/// Makes room for one more open dialogue if `dialogues` holds [`MAX_FOLLOWED`]: the oldest
/// open one this bidder has not bid in expires. False (logged) if every one has a bid.
fn make_room(dialogues: &Dialogues, auction: &str) -> bool {
    if dialogues.open_count() < MAX_FOLLOWED {
        return true;
    }
    let oldest = dialogues
        .all()
        .into_iter()
        .filter(|d| !d.is_closed(dialogues.rules()) && d.said.iter().all(|said| said.sender != BIDDER))
        .min_by_key(|d| d.opened_ms);
    let Some(oldest) = oldest else {
        tracing::warn!(auction, "bidding in too many auctions; this one is not joined");
        return false;
    };
    match dialogues.expire_now(oldest.id) {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(auction, error = %e, "no room made for an auction; it is not joined");
            false
        }
    }
}

fn decode<K: DeserializeOwned>(auction: &str, kept: Data) -> Option<K> {
    match kept.decode() {
        Ok(kept) => Some(kept),
        Err(e) => {
            tracing::warn!(auction, error = %e, "what a bidder kept of an auction is unreadable; ignored");
            None
        }
    }
}

/// What a bidder keeps of an auction it was invited to (English, Dutch, sealed-bid).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Invited {
    /// What is sold.
    pub(crate) item: serde_json::Value,
    /// The most it signed: it never pays more.
    #[serde(with = "amount_text")]
    highest: u128,
}

impl Invited {
    /// Invited to buy `item`, having signed nothing yet.
    pub(crate) fn new(item: serde_json::Value) -> Invited {
        Invited { item, highest: 0 }
    }

    /// As kept once the bidder signed `amount` too.
    pub(crate) fn signed(&self, amount: u128) -> Invited {
        Invited { item: self.item.clone(), highest: self.highest.max(amount) }
    }

    /// What this bidder (`me`) owes for `auction`, closed by `auctioneer` with `award`, if it
    /// won at no more than it signed and was told whom to pay.
    pub(crate) fn owed(
        &self,
        me: Address,
        auction: &str,
        auctioneer: Address,
        award: Option<Award>,
        pay_to: Option<Address>,
    ) -> Option<Owed> {
        let award = award.filter(|a| a.winner == me)?;
        if award.price > self.highest {
            tracing::warn!(
                auction,
                price = award.price,
                highest = self.highest,
                "asked to pay more than bid; not paying"
            );
            return None;
        }
        let Some(pay_to) = pay_to else {
            tracing::warn!(auction, "won, but the auctioneer named no wallet to pay; not paying");
            return None;
        };
        Some(Owed { auction: auction.to_owned(), seller: auctioneer, pay_to, price: award.price })
    }
}

/// An amount as decimal text in what a bidder keeps: JSON numbers past 2^64 do not fit
/// serde_json's values.
pub(crate) mod amount_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(amount: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(amount)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What a winner owes for an auction.
pub(crate) struct Owed {
    /// The auction won.
    pub(crate) auction: String,
    seller: Address,
    pay_to: Address,
    price: u128,
}

impl Owed {
    /// Pays on delivery, in the background so the bidder's agent goes on serving while
    /// the seller delivers, and hands the result to `settled`. The bidder's `work`: a
    /// graceful stop lets the payment and `settled` (the user's code, not cancel-safe)
    /// end; a crash ends them, so a crashed bidder pays nothing after the crash.
    pub(crate) fn pay<F, Fut>(self, work: &Work, ctx: Context, deliver_within: Duration, settled: F)
    where
        F: FnOnce(String, Result<Settled, SettlementError>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let task_ctx = ctx.clone();
        work.spawn(&task_ctx, async move {
            let deal = auction::deal_of(&self.auction);
            let result =
                settlement::pay_on_delivery(&ctx, self.seller, self.pay_to, self.price, deal, deliver_within).await;
            settled(self.auction, result).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use agent_core::{Agent, Bureau, Message};

    use super::*;
    use crate::english::{self, Opening, Raise};

    /// A bidder following [`MAX_FOLLOWED`] English auctions: room is made by expiring the
    /// oldest it has not bid in, and none is made once it has bid in every one.
    #[tokio::test]
    async fn when_full_the_oldest_auction_without_a_bid_makes_room_and_none_with_bids_does() {
        let bureau = Bureau::new().unwrap();
        let auctioneer = bureau.add(Agent::builder("auctioneer").build().unwrap()).unwrap();
        let bidder = bureau.add(Agent::builder("bidder").build().unwrap()).unwrap();
        let storage = bureau.context(bidder).unwrap().storage().unwrap();
        let dialogues = Dialogues::load(english::rules(), BIDDER, storage).unwrap().with_max_open_per_peer(usize::MAX);
        let now = 1_790_000_000_000;
        let ids: Vec<u128> = (0..MAX_FOLLOWED as u128).collect();
        for &id in &ids {
            dialogues.incoming_named(Opening::NAME, id, auctioneer, now + id as u64).unwrap();
        }
        // It bid in the oldest: the next oldest makes room.
        dialogues.outgoing_named(Raise::NAME, ids[0], now + 2_000).unwrap();
        assert!(make_room(&dialogues, "one more"));
        let state = |id: u128| dialogues.get(id).map(|d| d.state);
        assert_eq!(
            (state(ids[0]).as_deref(), state(ids[1]).as_deref()),
            (Some("open"), Some(crate::dialogue::EXPIRED))
        );
        assert_eq!(dialogues.open_count(), MAX_FOLLOWED - 1);
        assert!(make_room(&dialogues, "room already"), "below the bound, nothing expires");
        assert_eq!(dialogues.open_count(), MAX_FOLLOWED - 1);

        // Full again, with a bid in every open auction: no room, and nothing expires.
        dialogues.incoming_named(Opening::NAME, u128::MAX, auctioneer, now + 3_000).unwrap();
        for id in ids[2..].iter().copied().chain([u128::MAX]) {
            dialogues.outgoing_named(Raise::NAME, id, now + 4_000).unwrap();
        }
        assert!(!make_room(&dialogues, "one too many"));
        assert_eq!(dialogues.open_count(), MAX_FOLLOWED);
        bureau.shutdown().await.unwrap();
    }
}
