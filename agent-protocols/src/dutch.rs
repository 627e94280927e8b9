//! A Dutch (descending clock) auction over messages, with acceptances signed by their
//! bidders.
//!
//! The auctioneer calls out a falling price to its bidders, one [`Clock`] per tick: `start`
//! at tick 0, then `step` less each tick, never below `floor`. A bidder takes the item by
//! sending a [`Take`]: a [`SignedBid`] for the price of a tick the clock has reached. The
//! clock stops at the first valid take (validly signed by the agent that sent it, for this
//! auction, at a price the clock called, received before the close), and the auction
//! closes ([`Closed`]). That take is the award, at its price: the winner and price are
//! exactly [`auction::dutch`] of it. A take that reaches the auctioneer after it, even one
//! naming an earlier tick, is refused ([`BidError::ClockStopped`]): counting it would make
//! the winner depend on whether it was already waiting when the clock stopped. If the
//! clock passes the floor untaken, the item is not sold.
//!
//! Every message is checked against the auction's dialogue with its bidder ([`rules`]): a
//! take after the close, or naming an auction its sender has no dialogue in here, is
//! refused, counts for nothing, and its sender is told why ([`Refused`]). The bidder keeps
//! the same dialogue on its side, in its storage ([`serve`]), and an auctioneer's message
//! sent by a bidder is refused too.
//!
//! The winner pays as in the English auction: through escrow keyed by
//! [`auction::deal_of`] the auction, released on delivery ([`settlement`](crate::settlement)).

use std::sync::Arc;
use std::time::Duration;

use agent_core::envelope::unix_now_ms;
use agent_core::{Address, Agent, Context, Identity, Message};
use serde::{Deserialize, Serialize};

use crate::auction::{self, Acceptance, AuctionError, Award, AUCTIONEER, BIDDER};
use crate::bidding::{Bidding, Invited};
use crate::dialogue::{DialogueError, Refused, Rules};
use crate::inbox::{tell_all, Inbox};
use crate::sealed_bid::{BidError, SignedBid};
use crate::settlement::{Sales, Settled, SettlementError};

/// The clock's price at `tick`: take it now, or wait for a lower one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.auction.dutch.Clock")]
pub struct Clock {
    /// The auction, as 32 hex digits.
    pub auction: String,
    /// What is sold.
    pub item: serde_json::Value,
    /// The tick, from 0.
    pub tick: u64,
    /// The price at this tick.
    pub price: u128,
}

/// A bidder takes the item at the price it signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.auction.dutch.Take")]
pub struct Take(pub SignedBid);

/// The auction closed: who took the item at what price (none if the clock passed the floor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.auction.dutch.Closed")]
pub struct Closed {
    /// The auction.
    pub auction: String,
    /// The winner and price.
    pub award: Option<Award>,
    /// The auctioneer's wallet, which the winner pays (through escrow).
    pub pay_to: Option<Address>,
}

/// The Dutch auction as agents publish it: its messages and digest. Both sides include it
/// ([`Auctioneer::serve`], [`serve`]).
pub fn protocol() -> agent_core::Protocol {
    // A refusal carries a typed cause (a wire code), its text only detailing it.
    // The minor version after it: the manifest publishes the dialogue's rules too.
    // The major version after that: a refusal says where its dialogue stands (typed), and
    // for a late message the deadline that passed.
    agent_core::Protocol::new("agora.auction.dutch", "3.0.0")
        .message::<Clock>()
        .message::<Take>()
        .message::<Closed>()
        .message::<Refused>()
        .state_machine(rules().state_machine())
}

/// The Dutch auction's dialogue between the auctioneer and each bidder: the clock's first
/// price, then a price each tick, each standing until the tick ends; one take from the
/// bidder while a price stands; then the close, after which nothing is accepted. Each
/// price may be called after the last one's tick ended (the clock goes on), and the close
/// at any time.
pub fn rules() -> Rules {
    Rules::builder("agora.auction.dutch")
        .initial("invited")
        .step::<Clock>("invited", AUCTIONEER, "calling")
        .variant_step::<Clock>(Clock::NAME, "calling", AUCTIONEER, "calling", true)
        .step::<Take>("calling", BIDDER, "taken")
        .variant_step::<Closed>(Closed::NAME, "calling", AUCTIONEER, "closed", true)
        .variant_step::<Closed>(Closed::NAME, "taken", AUCTIONEER, "closed", true)
        .terminal("closed")
        .build()
        .unwrap_or_else(|e| unreachable!("the Dutch auction's rules are valid: {e}"))
}

/// A Dutch auction's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    /// The price at tick 0.
    pub start: u128,
    /// How much the price falls each tick (at least 1).
    pub step: u128,
    /// The lowest price the clock calls.
    pub floor: u128,
    /// How long each price stands.
    pub tick_every: Duration,
}

impl Terms {
    /// The price at `tick`, or `None` once it would be below the floor.
    pub fn price_at(&self, tick: u64) -> Option<u128> {
        self.start
            .checked_sub(self.step.max(1).checked_mul(u128::from(tick))?)
            .filter(|p| *p >= self.floor.max(auction::MIN_PRICE))
    }

    /// The tick whose price is `price`, if the clock calls it.
    fn tick_of(&self, price: u128) -> Option<u64> {
        let below = self.start.checked_sub(price)?;
        let step = self.step.max(1);
        let tick = u64::try_from(below / step).ok()?;
        (below % step == 0 && price >= self.floor.max(auction::MIN_PRICE)).then_some(tick)
    }
}

/// What a Dutch auction gathered and decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Descent {
    /// The auction's id.
    pub auction: String,
    /// The winner and price: [`auction::dutch`] of the takes that counted.
    pub award: Option<Award>,
    /// The ticks the clock called.
    pub ticks: u64,
    /// The signed take that counted (the first valid one to arrive), if any: the evidence.
    pub takes: Vec<SignedBid>,
    /// Takes that did not count, and why.
    pub refused: Vec<(Address, BidError)>,
}

/// The auctioneer's side: receives takes for the auctions it runs.
#[derive(Clone)]
pub struct Auctioneer {
    takes: Inbox<SignedBid>,
    sales: Sales,
}

impl Auctioneer {
    /// Makes `agent` a Dutch auctioneer whose sales are recorded in `sales` (serve them
    /// with [`serve_sales`](crate::settlement::serve_sales) to be paid).
    pub fn serve(agent: &mut Agent, sales: Sales) -> Auctioneer {
        let auctioneer = Auctioneer { takes: Inbox::serve(agent, rules), sales };
        let takes = &auctioneer.takes;
        agent.include(
            protocol()
                .on_message(takes.route(|Take(bid): Take| (bid.auction.clone(), Take::NAME, bid)))
                .on_message(takes.refuse(|m: &Clock| &m.auction, Clock::NAME))
                .on_message(takes.refuse(|m: &Closed| &m.auction, Closed::NAME)),
        );
        auctioneer
    }

    /// This auctioneer, with each auction it runs from now on holding at most `capacity` of its
    /// bidders' takes not yet counted (default 4,096, at least 1). One more arriving while that
    /// many wait is refused before its dialogue sees it, and its sender told to send it
    /// again: a larger line takes bursts, a smaller one bounds the memory a flood can use.
    pub fn with_line_capacity(mut self, capacity: usize) -> Auctioneer {
        self.takes = self.takes.with_capacity(capacity);
        self
    }

    /// This auctioneer's dialogues with its bidders ([`rules`]), once read from its storage
    /// (at its first auction, or the first bid to reach it).
    pub fn dialogues(&self) -> Option<&crate::dialogue::Dialogues> {
        self.takes.loaded()
    }

    /// Sells `item` to the first of `bidders` to take it on the falling clock `terms`;
    /// returns when the auction has closed and the bidders have been told.
    pub async fn run<T: Serialize>(
        &self,
        ctx: &Context,
        bidders: &[Address],
        item: &T,
        terms: Terms,
    ) -> Result<Descent, AuctionError> {
        let auction = auction::new_id();
        let item = serde_json::to_value(item)?;
        // Each tick is timed on both clocks from one moment: the dialogues' deadline (Unix
        // ms) and the wait for takes (the runtime's) end together.
        let tick_ms = terms.tick_every.as_millis() as u64;
        let mut tick_began = (tokio::time::Instant::now(), unix_now_ms());
        let mut opened = self.takes.open(ctx, &auction, bidders, Clock::NAME, tick_began.1.saturating_add(tick_ms))?;
        let mut descent =
            Descent { auction: auction.clone(), award: None, ticks: 0, takes: Vec::new(), refused: Vec::new() };
        let mut acceptances = Vec::new();
        'clock: while let Some(price) = terms.price_at(descent.ticks) {
            let tick = descent.ticks;
            descent.ticks += 1;
            let clock = Clock { auction: auction.clone(), item: item.clone(), tick, price };
            if tick == 0 {
                // Recorded when the dialogues opened.
                tell_all(ctx, &opened.bidders(), &clock).await;
            } else {
                tick_began = (tokio::time::Instant::now(), unix_now_ms());
                opened.tell(ctx, Clock::NAME, Some(tick_began.1.saturating_add(tick_ms)), &clock).await;
            }
            let next = tick_began.0 + terms.tick_every;
            while let Some((from, take)) = opened.next_before(next).await {
                if descent.take(&terms, tick, from, take, &mut acceptances) {
                    break 'clock;
                }
            }
        }
        for (from, take) in opened.close(Closed::NAME) {
            descent.take(&terms, descent.ticks.saturating_sub(1), from, take, &mut acceptances);
        }
        descent.award = auction::dutch(&acceptances, terms.start, terms.step.max(1), terms.floor);
        if let Some(award) = descent.award {
            self.sales.expect(auction::deal_of(&auction), award.winner, award.price);
        }
        let pay_to = ctx.wallet().ok().map(|wallet| wallet.address());
        opened.tell_closed(ctx, &Closed { auction, pay_to, award: descent.award }).await;
        Ok(descent)
    }
}

impl Descent {
    /// Counts a take its dialogue accepted, at a price the clock had called by `tick`, as an
    /// acceptance (true) if it is the first; lists it as refused otherwise (false).
    fn take(
        &mut self,
        terms: &Terms,
        tick: u64,
        from: Address,
        take: Result<SignedBid, DialogueError>,
        acceptances: &mut Vec<Acceptance>,
    ) -> bool {
        let bid = match take.map_err(BidError::from).and_then(|bid| bid.check(&self.auction, from).map(|()| bid)) {
            Ok(bid) => bid,
            Err(why) => {
                self.refused.push((from, why));
                return false;
            }
        };
        let Some(taken_at) = terms.tick_of(bid.amount).filter(|t| *t <= tick) else {
            self.refused.push((from, BidError::NotCalled(bid.amount)));
            return false;
        };
        // Takes that reached the line while the first was being counted are drained at the
        // close: they came after it, whatever tick they name.
        if !self.takes.is_empty() {
            self.refused.push((from, BidError::ClockStopped));
            return false;
        }
        acceptances.push(Acceptance { bidder: from, tick: taken_at, seq: self.takes.len() as u64 });
        self.takes.push(bid);
        true
    }
}

/// A bidder's side of Dutch auctions.
#[async_trait::async_trait]
pub trait Bidder: Send + Sync + 'static {
    /// Whether to take `item` at `price` now.
    async fn take(&self, item: &serde_json::Value, price: u128) -> bool;

    /// How paying for a won item ended. The default does nothing.
    async fn settled(&self, _auction: &str, _settled: Result<Settled, SettlementError>) {}
}

/// Makes `agent` (whose key is `identity`) bid in Dutch auctions with `bidder`'s strategy,
/// signing with that key, and pay for what it wins on delivery (the auctioneer has
/// `deliver_within` to deliver before the escrow becomes refundable).
///
/// Each auction is kept as the bidder's dialogue with its auctioneer ([`rules`]) in the
/// agent's storage: every price and close is checked against it (one for an auction the
/// bidder is not in, from anyone else, after its take or after the close is refused and its
/// sender told why), and a take before it is sent. A bidder restarted with the same key and
/// storage resumes its auctions, and never pays more than it took at. An agent bids in, or
/// runs, Dutch auctions: not both.
pub fn serve<B: Bidder>(agent: &mut Agent, identity: Identity, bidder: Arc<B>, deliver_within: Duration) {
    let bidding = Bidding::serve(agent, rules);
    let identity = Arc::new(identity);
    let (on_clock, strategy) = (bidding.clone(), bidder.clone());
    let on_clock = move |ctx: Context, from: Address, clock: Clock| {
        let (bidding, identity, bidder) = (on_clock.clone(), identity.clone(), strategy.clone());
        async move {
            let auction = &clock.auction;
            let invited = if bidding.knows(&ctx, auction) {
                bidding.heard::<Invited>(&ctx, auction, from, Clock::NAME).await
            } else {
                let invited = Invited::new(clock.item);
                bidding.join(&ctx, auction, from, Clock::NAME, None, &invited).await.then_some(invited)
            };
            let Some(invited) = invited else { return };
            if !bidder.take(&invited.item, clock.price).await {
                return;
            }
            if bidding.say(&ctx, auction, Take::NAME, &invited.signed(clock.price)) {
                let take = Take(SignedBid::sign(&identity, auction, clock.price));
                if let Err(e) = ctx.send(from, take).await {
                    tracing::debug!(auction, error = %e, "a take was not delivered");
                }
            }
        }
    };
    let on_closed = move |ctx: Context, from: Address, closed: Closed| {
        let (bidding, bidder) = (bidding.clone(), bidder.clone());
        async move {
            let Some(invited) = bidding.heard::<Invited>(&ctx, &closed.auction, from, Closed::NAME).await else {
                return;
            };
            if let Some(owed) = invited.owed(ctx.address(), &closed.auction, from, closed.award, closed.pay_to) {
                owed.pay(bidding.work(), ctx, deliver_within, move |auction, settled| async move {
                    bidder.settled(&auction, settled).await;
                });
            }
        }
    };
    agent.include(protocol().on_message(on_clock).on_message(on_closed));
}
