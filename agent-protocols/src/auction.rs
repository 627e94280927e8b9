//! Auction rules as pure functions: given the bids received before the deadline, who wins
//! and what they pay. The networked auctions (signed bids, deadlines, settlement) are built
//! on these, and a user can call them directly to check a result.
//!
//! Ties are broken by arrival: each bid carries `seq`, its position in the order the
//! auctioneer received it, and the earlier bid wins a tie.

use agent_core::ledger::DealId;
use agent_core::Address;
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// The deal an auction's sale settles: what the winner's escrow names.
pub fn deal_of(auction: &str) -> DealId {
    DealId::named(&format!("agora.auction/{auction}"))
}

/// The role of the agent that runs an auction, in its dialogues.
pub const AUCTIONEER: &str = "auctioneer";
/// The role of an invited bidder (a trader, in a double auction), in its dialogue with the
/// auctioneer.
pub const BIDDER: &str = "bidder";

/// The dialogue between `auction` and one of its bidders: each invited bidder has its own,
/// so a bid is checked against the state of its sender's dialogue in the auction it names,
/// and no one can speak in another's.
pub fn dialogue_of(auction: &str, bidder: &Address) -> u128 {
    let digest = sha2::Sha256::new()
        .chain_update(b"agora.auction.dialogue.v1")
        .chain_update((auction.len() as u64).to_be_bytes())
        .chain_update(auction.as_bytes())
        .chain_update(bidder.as_bytes())
        .finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(id)
}

/// Why an auction over messages could not run.
#[derive(Debug, thiserror::Error)]
pub enum AuctionError {
    /// The item could not be written as JSON: nothing was sent.
    #[error("the item could not be described: {0}")]
    Item(#[from] serde_json::Error),
    /// The auctioneer's dialogues could not be read from its storage: nothing was sent.
    #[error("the auction's dialogues could not be opened: {0}")]
    Dialogues(#[from] crate::dialogue::DialogueError),
}

/// A new auction id: 32 hex digits.
pub(crate) fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A bid: who, how much, and when it arrived (lower `seq` = earlier).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bid {
    /// The bidder.
    pub bidder: Address,
    /// The amount, in the ledger's smallest unit.
    pub amount: u128,
    /// Arrival order.
    pub seq: u64,
}

/// The lowest price anything trades at: the ledger moves positive amounts only, so an
/// award at 0 could never be paid. Every auction's rules take a reserve or floor below it as
/// this, a bid below it does not count, and a double auction's ask below it is an ask at it.
pub const MIN_PRICE: u128 = 1;

/// Who won and what they pay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema)]
pub struct Award {
    /// The winner.
    pub winner: Address,
    /// What the winner pays.
    pub price: u128,
}

/// English (ascending) auction. Bids are taken in arrival order; a bid counts only if it
/// reaches `reserve` (at least [`MIN_PRICE`]) and, after the first counted bid, beats the standing bid by at least
/// `increment` (at least 1). The last bid counted wins and pays its amount. `None`: no bid
/// counted.
pub fn english(bids: &[Bid], reserve: u128, increment: u128) -> Option<Award> {
    let (increment, reserve) = (increment.max(1), reserve.max(MIN_PRICE));
    let mut arrived: Vec<&Bid> = bids.iter().collect();
    arrived.sort_by_key(|b| b.seq);
    let mut standing: Option<&Bid> = None;
    for bid in arrived {
        let needed = standing.map_or(reserve, |s| s.amount.saturating_add(increment).max(reserve));
        if bid.amount >= needed {
            standing = Some(bid);
        }
    }
    standing.map(|b| Award { winner: b.bidder, price: b.amount })
}

/// A bidder's acceptance in a Dutch auction: at clock tick `tick`, when it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acceptance {
    /// The bidder.
    pub bidder: Address,
    /// The tick at which it accepted the clock price.
    pub tick: u64,
    /// Arrival order.
    pub seq: u64,
}

/// Dutch (descending clock) auction. The price starts at `start` and falls by `step` each
/// tick, never below `floor` (at least [`MIN_PRICE`]); the clock stops at the first tick where the price would fall
/// below `floor`. The first acceptance to arrive (lowest `seq`) at a tick the clock reached
/// wins at that tick's price: it stops the clock, so one arriving later does not count,
/// even at an earlier tick (a take that crossed the clock's next call).
pub fn dutch(acceptances: &[Acceptance], start: u128, step: u128, floor: u128) -> Option<Award> {
    let floor = floor.max(MIN_PRICE);
    let price_at = |tick: u64| start.checked_sub(step.checked_mul(u128::from(tick))?).filter(|p| *p >= floor);
    acceptances
        .iter()
        .filter(|a| price_at(a.tick).is_some())
        .min_by_key(|a| a.seq)
        .and_then(|a| price_at(a.tick).map(|price| Award { winner: a.bidder, price }))
}

/// Sealed-bid second-price (Vickrey) auction. Bids below `reserve` (at least
/// [`MIN_PRICE`]) do not count. The
/// highest bid wins (the earliest among equal highest); it pays the highest counted bid of
/// any *other* bidder (a bidder's own lower bids never set its price), or `reserve` if
/// there is none.
pub fn vickrey(bids: &[Bid], reserve: u128) -> Option<Award> {
    let reserve = reserve.max(MIN_PRICE);
    let counted = || bids.iter().filter(|b| b.amount >= reserve);
    let winner = counted().max_by_key(|b| (b.amount, std::cmp::Reverse(b.seq)))?;
    let price = counted().filter(|b| b.bidder != winner.bidder).map(|b| b.amount).max().unwrap_or(reserve);
    Some(Award { winner: winner.bidder, price: price.max(reserve) })
}

/// Sealed-bid first-price auction. Bids below `reserve` (at least [`MIN_PRICE`]) do not
/// count. The highest bid wins
/// (the earliest among equal highest) and pays its own amount.
pub fn first_price(bids: &[Bid], reserve: u128) -> Option<Award> {
    let reserve = reserve.max(MIN_PRICE);
    let winner = bids.iter().filter(|b| b.amount >= reserve).max_by_key(|b| (b.amount, std::cmp::Reverse(b.seq)))?;
    Some(Award { winner: winner.bidder, price: winner.amount })
}

/// An order in a double auction: buy (a bid) or sell (an ask) up to `quantity` units at
/// `price` per unit or better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Who.
    pub trader: Address,
    /// The limit price per unit.
    pub price: u128,
    /// How many units.
    pub quantity: u64,
    /// Arrival order.
    pub seq: u64,
}

/// Units traded between one buyer and one seller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fill {
    /// The buyer.
    pub buyer: Address,
    /// The seller.
    pub seller: Address,
    /// How many units.
    pub quantity: u64,
}

/// The result of clearing one round of a double auction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clearing {
    /// The uniform price every unit trades at.
    pub price: u128,
    /// The trades, in matching order.
    pub fills: Vec<Fill>,
}

impl Clearing {
    /// Units traded in all.
    pub fn volume(&self) -> u64 {
        self.fills.iter().map(|f| f.quantity).sum()
    }
}

/// Clears one round of a double auction (a call market) at a uniform price. Bids are ranked
/// by price, highest first, asks lowest first, earlier first at equal prices. Units are
/// matched while the best remaining bid is at least the best remaining ask, which trades
/// the most units possible. Every unit trades at one price: the midpoint (rounded down) of
/// the range from the higher of the last matched ask and the best unmatched bid, to the
/// lower of the last matched bid and the best unmatched ask. At that price every matched
/// buyer and seller is willing, and no unmatched one would trade. Bids below [`MIN_PRICE`]
/// do not count, and asks below it are asks at it, so nothing trades at 0. `None`: no bid
/// meets any ask.
pub fn double(bids: &[Order], asks: &[Order]) -> Option<Clearing> {
    let mut bids: Vec<Order> = bids.iter().filter(|o| o.quantity > 0 && o.price >= MIN_PRICE).copied().collect();
    let mut asks: Vec<Order> =
        asks.iter().filter(|o| o.quantity > 0).map(|o| Order { price: o.price.max(MIN_PRICE), ..*o }).collect();
    bids.sort_by_key(|o| (std::cmp::Reverse(o.price), o.seq));
    asks.sort_by_key(|o| (o.price, o.seq));
    let (mut b, mut a) = (0, 0);
    let mut fills: Vec<Fill> = Vec::new();
    let mut last = None;
    while b < bids.len() && a < asks.len() && bids[b].price >= asks[a].price {
        let quantity = bids[b].quantity.min(asks[a].quantity);
        fills.push(Fill { buyer: bids[b].trader, seller: asks[a].trader, quantity });
        last = Some((bids[b].price, asks[a].price));
        bids[b].quantity -= quantity;
        asks[a].quantity -= quantity;
        if bids[b].quantity == 0 {
            b += 1;
        }
        if asks[a].quantity == 0 {
            a += 1;
        }
    }
    let (last_bid, last_ask) = last?;
    // The price lies between what the matched units need and what the unmatched ones
    // refuse: at it, every matched buyer and seller is willing, and no unmatched one
    // would trade.
    let low = bids.get(b).map_or(last_ask, |next| last_ask.max(next.price));
    let high = asks.get(a).map_or(last_bid, |next| last_bid.min(next.price));
    Some(Clearing { price: low + (high - low) / 2, fills })
}
