//! An English (ascending) auction over messages, with bids signed by their bidders.
//!
//! The auctioneer opens the auction to its bidders ([`Opening`]: the item, the reserve, the
//! increment and the closing time). Bidders raise ([`Raise`], a [`SignedBid`]); each raise
//! that meets the reserve and beats the standing bid by the increment becomes the standing
//! bid and is announced to every bidder ([`Standing`]). At the closing time the auction
//! closes ([`Closed`]): the standing bid wins and pays its amount. The winner and price are
//! exactly [`auction::english`] of the bids that counted (validly signed by the agent that
//! sent them, for this auction, received before the close), in arrival order.
//!
//! Every message is checked against the auction's dialogue with its bidder ([`rules`]): a
//! raise after the close, or naming an auction its sender has no dialogue in here, is
//! refused, counts for nothing, and its sender is told why ([`Refused`]). The bidder keeps
//! the same dialogue on its side, in its storage ([`serve`]), and an auctioneer's message
//! sent by a bidder is refused too.
//!
//! The winner pays through escrow ([`settlement`](crate::settlement)): it locks the price for the auctioneer,
//! keyed by [`auction::deal_of`] the auction, and releases it on delivery. The auctioneer
//! records the sale in its [`Sales`] and delivers through
//! [`serve_sales`](crate::settlement::serve_sales).

use std::sync::Arc;
use std::time::Duration;

use agent_core::envelope::unix_now_ms;
use agent_core::{Address, Agent, Context, Identity, Message};
use serde::{Deserialize, Serialize};

use crate::auction::{self, AuctionError, Award, Bid, AUCTIONEER, BIDDER};
use crate::bidding::{Bidding, Invited};
use crate::dialogue::{DialogueError, Refused, Rules};
use crate::inbox::{tell_all, Inbox};
use crate::sealed_bid::{BidError, SignedBid};
use crate::settlement::{Sales, Settled, SettlementError};

/// The auction is open: raise at least `minimum` before `closes_at_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.auction.english.Opening")]
pub struct Opening {
    /// The auction, as 32 hex digits.
    pub auction: String,
    /// What is sold.
    pub item: serde_json::Value,
    /// The lowest first bid.
    pub reserve: u128,
    /// How much a raise must beat the standing bid by.
    pub increment: u128,
    /// When the auction closes (ms since the Unix epoch).
    pub closes_at_ms: u64,
}

/// A bidder's raise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.auction.english.Raise")]
pub struct Raise(pub SignedBid);

/// A new standing bid: the next raise must be at least `minimum`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.auction.english.Standing")]
pub struct Standing {
    /// The auction.
    pub auction: String,
    /// Who leads.
    pub leader: Address,
    /// With how much.
    pub amount: u128,
    /// The lowest raise that counts now.
    pub minimum: u128,
}

/// The auction closed: who won, at what price (none if no bid counted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.auction.english.Closed")]
pub struct Closed {
    /// The auction.
    pub auction: String,
    /// The winner and price.
    pub award: Option<Award>,
    /// The auctioneer's wallet, which the winner pays (through escrow).
    pub pay_to: Option<Address>,
}

/// The English auction as agents publish it: its messages and digest. Both sides include
/// it ([`Auctioneer::serve`], [`serve`]), so bidders and auctioneers can be found in the
/// almanac by its digest.
pub fn protocol() -> agent_core::Protocol {
    // A refusal carries a typed cause (a wire code), its text only detailing it.
    // The minor version after it: the manifest publishes the dialogue's rules too.
    // The major version after that: a refusal says where its dialogue stands (typed), and
    // for a late message the deadline that passed.
    agent_core::Protocol::new("agora.auction.english", "3.0.0")
        .message::<Opening>()
        .message::<Raise>()
        .message::<Standing>()
        .message::<Closed>()
        .message::<Refused>()
        .state_machine(rules().state_machine())
}

/// The English auction's dialogue between the auctioneer and each bidder: the opening,
/// then raises from the bidder and standing bids from the auctioneer until the close time,
/// then the close (the only step allowed after it), after which nothing is accepted.
pub fn rules() -> Rules {
    Rules::builder("agora.auction.english")
        .initial("invited")
        .step::<Opening>("invited", AUCTIONEER, "open")
        .step::<Raise>("open", BIDDER, "open")
        .step::<Standing>("open", AUCTIONEER, "open")
        .variant_step::<Closed>(Closed::NAME, "open", AUCTIONEER, "closed", true)
        .terminal("closed")
        .build()
        .unwrap_or_else(|e| unreachable!("the English auction's rules are valid: {e}"))
}

/// An English auction's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    /// The lowest first bid.
    pub reserve: u128,
    /// How much a raise must beat the standing bid by (at least 1).
    pub increment: u128,
    /// How long the auction is open.
    pub open_for: Duration,
}

/// What an English auction gathered and decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcry {
    /// The auction's id.
    pub auction: String,
    /// The winner and price: [`auction::english`] of `bids`.
    pub award: Option<Award>,
    /// The signed bids received in time, in arrival order (including those too low to
    /// stand): the evidence.
    pub bids: Vec<SignedBid>,
    /// Bids that did not count, and why.
    pub refused: Vec<(Address, BidError)>,
}

/// The auctioneer's side: receives raises for the auctions it runs.
#[derive(Clone)]
pub struct Auctioneer {
    raises: Inbox<SignedBid>,
    sales: Sales,
}

impl Auctioneer {
    /// Makes `agent` an English auctioneer whose sales are recorded in `sales` (serve them
    /// with [`serve_sales`](crate::settlement::serve_sales) to be paid).
    pub fn serve(agent: &mut Agent, sales: Sales) -> Auctioneer {
        let auctioneer = Auctioneer { raises: Inbox::serve(agent, rules), sales };
        let raises = &auctioneer.raises;
        agent.include(
            protocol()
                .on_message(raises.route(|Raise(bid): Raise| (bid.auction.clone(), Raise::NAME, bid)))
                .on_message(raises.refuse(|m: &Opening| &m.auction, Opening::NAME))
                .on_message(raises.refuse(|m: &Standing| &m.auction, Standing::NAME))
                .on_message(raises.refuse(|m: &Closed| &m.auction, Closed::NAME)),
        );
        auctioneer
    }

    /// This auctioneer, with each auction it runs from now on holding at most `capacity` of its
    /// bidders' raises not yet counted (default 4,096, at least 1). One more arriving while that
    /// many wait is refused before its dialogue sees it, and its sender told to send it
    /// again: a larger line takes bursts, a smaller one bounds the memory a flood can use.
    pub fn with_line_capacity(mut self, capacity: usize) -> Auctioneer {
        self.raises = self.raises.with_capacity(capacity);
        self
    }

    /// This auctioneer's dialogues with its bidders ([`rules`]), once read from its storage
    /// (at its first auction, or the first bid to reach it).
    pub fn dialogues(&self) -> Option<&crate::dialogue::Dialogues> {
        self.raises.loaded()
    }

    /// Sells `item` to the highest of `bidders` by English auction on `terms`; returns when
    /// it has closed and the bidders have been told. Each bidder's messages are checked
    /// against its dialogue ([`rules`]); those refused are listed in [`Outcry::refused`]
    /// while the auction runs, and their senders told why.
    pub async fn run<T: Serialize>(
        &self,
        ctx: &Context,
        bidders: &[Address],
        item: &T,
        terms: Terms,
    ) -> Result<Outcry, AuctionError> {
        let auction = auction::new_id();
        let (increment, reserve) = (terms.increment.max(1), terms.reserve.max(auction::MIN_PRICE));
        let closes_at_ms = unix_now_ms().saturating_add(terms.open_for.as_millis() as u64);
        let closes = tokio::time::Instant::now() + terms.open_for;
        let opening =
            Opening { auction: auction.clone(), item: serde_json::to_value(item)?, reserve, increment, closes_at_ms };
        let mut opened = self.raises.open(ctx, &auction, bidders, Opening::NAME, closes_at_ms)?;
        tell_all(ctx, &opened.bidders(), &opening).await;

        let mut outcry = Outcry { auction: auction.clone(), award: None, bids: Vec::new(), refused: Vec::new() };
        let mut standing: Option<(Address, u128)> = None;
        while let Some((from, bid)) = opened.next_before(closes).await {
            let Some(amount) = outcry.count(&auction, from, bid) else { continue };
            let needed = standing.map_or(reserve, |(_, amount)| amount.saturating_add(increment).max(reserve));
            if amount >= needed {
                standing = Some((from, amount));
                let minimum = amount.saturating_add(increment);
                let standing = Standing { auction: auction.clone(), leader: from, amount, minimum };
                opened.tell(ctx, Standing::NAME, None, &standing).await;
            }
        }
        // Accepted before the close, taken after it: they count, but no one hears of them
        // standing (the auction is over).
        for (from, bid) in opened.close(Closed::NAME) {
            outcry.count(&auction, from, bid);
        }
        let counted: Vec<Bid> = outcry
            .bids
            .iter()
            .enumerate()
            .map(|(seq, b)| Bid { bidder: b.bidder, amount: b.amount, seq: seq as u64 })
            .collect();
        outcry.award = auction::english(&counted, reserve, increment);
        if let Some(award) = outcry.award {
            self.sales.expect(auction::deal_of(&auction), award.winner, award.price);
        }
        let pay_to = ctx.wallet().ok().map(|wallet| wallet.address());
        opened.tell_closed(ctx, &Closed { auction, pay_to, award: outcry.award }).await;
        Ok(outcry)
    }
}

impl Outcry {
    /// Adds a raise its dialogue accepted to the bids if it is validly signed, and returns
    /// its amount; lists it as refused otherwise.
    fn count(&mut self, auction: &str, from: Address, bid: Result<SignedBid, DialogueError>) -> Option<u128> {
        match bid.map_err(BidError::from).and_then(|bid| bid.check(auction, from).map(|()| bid)) {
            Ok(bid) => {
                let amount = bid.amount;
                self.bids.push(bid);
                Some(amount)
            }
            Err(why) => {
                self.refused.push((from, why));
                None
            }
        }
    }
}

/// A bidder's side of English auctions.
#[async_trait::async_trait]
pub trait Bidder: Send + Sync + 'static {
    /// The raise to make on `item` when the lowest that counts is `minimum` (at opening,
    /// and each time another bidder leads), or `None` to stay out for now.
    async fn raise(&self, item: &serde_json::Value, minimum: u128) -> Option<u128>;

    /// How paying for a won item ended. The default does nothing.
    async fn settled(&self, _auction: &str, _settled: Result<Settled, SettlementError>) {}
}

/// Makes `agent` (whose key is `identity`) bid in English auctions with `bidder`'s
/// strategy, signing with that key, and pay for what it wins on delivery (the auctioneer
/// has `deliver_within` to deliver before the escrow becomes refundable).
///
/// Each auction is kept as the bidder's dialogue with its auctioneer ([`rules`]) in the
/// agent's storage: every message from the auctioneer is checked against it (one for an
/// auction the bidder is not in, from anyone else, or after the close is refused and its
/// sender told why), and every raise before it is sent. A bidder restarted with the same key
/// and storage resumes its auctions, and never pays more than it signed. An agent bids in,
/// or runs, English auctions: not both.
pub fn serve<B: Bidder>(agent: &mut Agent, identity: Identity, bidder: Arc<B>, deliver_within: Duration) {
    let side = Arc::new(Side { bidding: Bidding::serve(agent, rules), identity, bidder });
    let on_open = side.clone();
    let on_standing = side.clone();
    agent.include(
        protocol()
            .on_message(move |ctx: Context, from: Address, opening: Opening| {
                let side = on_open.clone();
                async move {
                    let invited = Invited::new(opening.item);
                    let (auction, closes_at_ms) = (opening.auction, Some(opening.closes_at_ms));
                    if side.bidding.join(&ctx, &auction, from, Opening::NAME, closes_at_ms, &invited).await {
                        side.raise(&ctx, &auction, from, invited, opening.reserve).await;
                    }
                }
            })
            .on_message(move |ctx: Context, from: Address, standing: Standing| {
                let side = on_standing.clone();
                async move {
                    let heard = side.bidding.heard::<Invited>(&ctx, &standing.auction, from, Standing::NAME).await;
                    if let Some(invited) = heard.filter(|_| standing.leader != ctx.address()) {
                        side.raise(&ctx, &standing.auction, from, invited, standing.minimum).await;
                    }
                }
            })
            .on_message(move |ctx: Context, from: Address, closed: Closed| {
                let side = side.clone();
                async move {
                    let Some(invited) = side.bidding.heard::<Invited>(&ctx, &closed.auction, from, Closed::NAME).await
                    else {
                        return;
                    };
                    if let Some(owed) = invited.owed(ctx.address(), &closed.auction, from, closed.award, closed.pay_to)
                    {
                        let bidder = side.bidder.clone();
                        owed.pay(side.bidding.work(), ctx, deliver_within, move |auction, settled| async move {
                            bidder.settled(&auction, settled).await;
                        });
                    }
                }
            }),
    );
}

/// A bidder's side of English auctions: its auctions, its key and its strategy.
struct Side<B> {
    bidding: Bidding,
    identity: Identity,
    bidder: Arc<B>,
}

impl<B: Bidder> Side<B> {
    /// Asks the strategy for a raise in `auction` on the item `invited` to, and sends it to
    /// `auctioneer` if its dialogue lets it (the auction has not closed).
    async fn raise(&self, ctx: &Context, auction: &str, auctioneer: Address, invited: Invited, minimum: u128) {
        let Some(amount) = self.bidder.raise(&invited.item, minimum).await else { return };
        if !self.bidding.say(ctx, auction, Raise::NAME, &invited.signed(amount)) {
            return;
        }
        let bid = SignedBid::sign(&self.identity, auction, amount);
        if let Err(e) = ctx.send(auctioneer, Raise(bid)).await {
            tracing::debug!(auction, error = %e, "a raise was not delivered");
        }
    }
}
