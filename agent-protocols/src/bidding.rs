//! What a bidder keeps of the auctions it follows, and how it pays for what it wins; shared
//! by the English and Dutch auctions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use agent_core::{Address, Context};
use parking_lot::Mutex;

use crate::auction::{self, Award};
use crate::settlement::{self, Settled, SettlementError};

/// At most this many auctions a bidder follows at once; further openings are ignored.
const MAX_FOLLOWED: usize = 1024;

/// An auction a bidder was invited to.
struct Invited {
    auctioneer: Address,
    item: serde_json::Value,
    /// The highest amount it signed: it never pays more.
    highest: u128,
    /// When it was invited.
    since: tokio::time::Instant,
}

/// The auctions a bidder follows, by id.
#[derive(Clone, Default)]
pub(crate) struct Followed {
    auctions: Arc<Mutex<HashMap<String, Invited>>>,
}

impl Followed {
    /// Follows `auction`, run by `auctioneer`, selling `item`. False (and logged) when
    /// following too many already.
    pub(crate) fn follow(&self, auction: &str, auctioneer: Address, item: serde_json::Value) -> bool {
        let mut auctions = self.auctions.lock();
        if auctions.len() >= MAX_FOLLOWED && !auctions.contains_key(auction) {
            // Full (auctions never closed, or a flood of invitations): the oldest invitation
            // with no bid in it makes room, so no one can shut this bidder out for good.
            let oldest =
                auctions.iter().filter(|(_, a)| a.highest == 0).min_by_key(|(_, a)| a.since).map(|(id, _)| id.clone());
            match oldest {
                Some(oldest) => {
                    auctions.remove(&oldest);
                }
                None => {
                    tracing::warn!(auction, "bidding in too many auctions; this one is ignored");
                    return false;
                }
            }
        }
        let since = tokio::time::Instant::now();
        auctions.entry(auction.to_owned()).or_insert(Invited { auctioneer, item, highest: 0, since });
        true
    }

    /// The item of `auction`, if it is followed and `from` runs it.
    pub(crate) fn item(&self, auction: &str, from: Address) -> Option<serde_json::Value> {
        self.auctions.lock().get(auction).filter(|a| a.auctioneer == from).map(|a| a.item.clone())
    }

    /// Notes that the bidder signed `amount` in `auction`.
    pub(crate) fn signed(&self, auction: &str, amount: u128) {
        if let Some(invited) = self.auctions.lock().get_mut(auction) {
            invited.highest = invited.highest.max(amount);
        }
    }

    /// Stops following `auction`, closed by `from` with `award`. What this bidder (`me`)
    /// owes, if it won at no more than it bid and was told whom to pay.
    pub(crate) fn close(
        &self,
        me: Address,
        auction: &str,
        from: Address,
        award: Option<Award>,
        pay_to: Option<Address>,
    ) -> Option<Owed> {
        let invited = {
            let mut auctions = self.auctions.lock();
            match auctions.get(auction) {
                Some(invited) if invited.auctioneer == from => auctions.remove(auction)?,
                _ => return None,
            }
        };
        let award = award.filter(|a| a.winner == me)?;
        if award.price > invited.highest {
            tracing::warn!(auction, price = award.price, "asked to pay more than bid; not paying");
            return None;
        }
        let Some(pay_to) = pay_to else {
            tracing::warn!(auction, "won, but the auctioneer named no wallet to pay; not paying");
            return None;
        };
        Some(Owed { auction: auction.to_owned(), seller: from, pay_to, price: award.price })
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
    /// the seller delivers, and hands the result to `settled`.
    pub(crate) fn pay<F, Fut>(self, ctx: Context, deliver_within: Duration, settled: F)
    where
        F: FnOnce(String, Result<Settled, SettlementError>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(async move {
            let deal = auction::deal_of(&self.auction);
            let result =
                settlement::pay_on_delivery(&ctx, self.seller, self.pay_to, self.price, deal, deliver_within).await;
            settled(self.auction, result).await;
        });
    }
}
