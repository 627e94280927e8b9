//! A sealed-bid auction over messages, with bids signed by their bidders.
//!
//! The auctioneer ([`Auctioneer`]) calls each bidder for one sealed bid ([`CallForBids`]);
//! each answers ([`BidAnswer`]) with a [`SignedBid`], signed with its own agent key, or
//! passes. Each answer is checked against its sender's dialogue in the auction ([`rules`]):
//! one after the deadline (before or after the result is out), a second answer, or one in a
//! dialogue its sender does not have is refused and its sender told why; so is an
//! auctioneer's message sent by a bidder, and the bidder keeps the same dialogue on its side,
//! in its storage ([`serve`]). Bids with a bad signature, or signed by anyone but the
//! answering agent, do not count either. The winner and price are exactly what
//! [`auction::vickrey`] (second price) or [`auction::first_price`] gives for the bids that
//! count, ties to the earlier bid. A signed bid is evidence: anyone holding it can check
//! who bid what, for which auction.
//!
//! The bidders are told the result ([`Closed`]); the winner pays through escrow keyed by
//! [`auction::deal_of`] the auction and released on delivery
//! ([`settlement`](crate::settlement)), as in the English and Dutch auctions.

use std::sync::Arc;
use std::time::Duration;

use agent_core::identity::SignatureError;
use agent_core::{Address, Agent, Context, Identity, Message, PublicKey};
use serde::{Deserialize, Serialize};

use crate::auction::{self, AuctionError, Award, Bid, AUCTIONEER, BIDDER};
use crate::bidding::{Bidding, Invited};
use crate::dialogue::{DialogueError, Refused, Rules};
use crate::inbox::{tell_all, Arrival, Inbox};
use crate::settlement::{Sales, Settled, SettlementError};

/// A call for one sealed bid on `item`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.auction.CallForBids")]
pub struct CallForBids {
    /// The auction, as 32 hex digits.
    pub auction: String,
    /// What is sold.
    pub item: serde_json::Value,
    /// Bids below this do not count.
    pub reserve: u128,
    /// Bids later than this (ms since the Unix epoch) do not count.
    pub deadline_ms: u64,
}

/// The auction closed: who won, at what price (none if no bid counted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.auction.sealed.Closed")]
pub struct Closed {
    /// The auction.
    pub auction: String,
    /// The winner and price.
    pub award: Option<Award>,
    /// The auctioneer's wallet, which the winner pays (through escrow).
    pub pay_to: Option<Address>,
}

/// A bid, signed by its bidder over the auction, the bidder and the amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema)]
pub struct SignedBid {
    /// The auction it is for.
    pub auction: String,
    /// The bidder.
    pub bidder: Address,
    /// The bidder's public key.
    pub key: PublicKey,
    /// The amount.
    pub amount: u128,
    /// ed25519 over [`SignedBid::signing_bytes`].
    #[serde(with = "agent_core::identity::signature_hex")]
    #[schemars(with = "String")]
    pub signature: [u8; 64],
}

/// A bidder's answer to a [`CallForBids`], sent back to the auctioneer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.auction.BidAnswer")]
pub enum BidAnswer {
    /// A bid.
    Bid(SignedBid),
    /// No bid.
    Pass {
        /// The auction passed on.
        auction: String,
    },
}

impl BidAnswer {
    /// The auction it answers, and its step in the bidder's dialogue.
    fn split(self) -> (String, &'static str, BidAnswer) {
        match &self {
            BidAnswer::Bid(bid) => (bid.auction.clone(), "Bid", self),
            BidAnswer::Pass { auction } => (auction.clone(), "Pass", self),
        }
    }
}

/// Why a bid did not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BidError {
    /// The signature does not verify.
    #[error("bad bid signature: {0}")]
    Signature(#[from] SignatureError),
    /// The key is not the bidder's, or the bidder is not the agent that answered.
    #[error("bid signed for {claimed}, answered by {answered}")]
    NotTheBidder {
        /// Whom the bid names (or whose key signed it).
        claimed: Address,
        /// The agent that answered.
        answered: Address,
    },
    /// The bid is for another auction.
    #[error("bid for auction {0}, not this one")]
    OtherAuction(String),
    /// It came after the deadline (or after the close).
    #[error("bid after the deadline")]
    Late,
    /// Its dialogue refused it: out of order, from the wrong role, after the close, or in a
    /// dialogue its sender does not have (another auction's, or one it was not invited to).
    #[error("refused by its dialogue: {0}")]
    Refused(DialogueError),
    /// A Dutch take at a price the clock has not called.
    #[error("take at {0}, a price the clock has not called")]
    NotCalled(u128),
    /// A Dutch take that reached the auctioneer after another bidder's take had stopped
    /// the clock: the first take is the award, whatever tick a later one names.
    #[error("take after another bidder's take stopped the clock")]
    ClockStopped,
}

impl From<DialogueError> for BidError {
    fn from(refused: DialogueError) -> BidError {
        match refused {
            DialogueError::Late { .. } => BidError::Late,
            refused => BidError::Refused(refused),
        }
    }
}

impl SignedBid {
    /// `identity`'s bid of `amount` in `auction`.
    pub fn sign(identity: &Identity, auction: &str, amount: u128) -> SignedBid {
        let mut bid = SignedBid {
            auction: auction.into(),
            bidder: identity.address(),
            key: identity.public_key(),
            amount,
            signature: [0; 64],
        };
        bid.signature = identity.sign(&bid.signing_bytes());
        bid
    }

    /// What the signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = b"agora.bid.v1".to_vec();
        out.extend_from_slice(&(self.auction.len() as u32).to_be_bytes());
        out.extend_from_slice(self.auction.as_bytes());
        out.extend_from_slice(self.bidder.as_bytes());
        out.extend_from_slice(&self.amount.to_be_bytes());
        out
    }

    /// Checks the signature, that the key is the bidder's and the bidder is `answered_by`,
    /// and that the bid is for `auction`.
    pub fn check(&self, auction: &str, answered_by: Address) -> Result<(), BidError> {
        if self.auction != auction {
            return Err(BidError::OtherAuction(self.auction.clone()));
        }
        let signer = Address::from_public_key(&self.key);
        if signer != self.bidder || self.bidder != answered_by {
            return Err(BidError::NotTheBidder { claimed: self.bidder, answered: answered_by });
        }
        self.key.verify(&self.signing_bytes(), &self.signature)?;
        Ok(())
    }
}

/// The sealed-bid auction as agents publish it: its messages and its digest. Both sides
/// include it ([`Auctioneer::serve`], [`serve`]).
pub fn protocol() -> agent_core::Protocol {
    // A refusal carries a typed cause (a wire code), its text only detailing it.
    // The minor version after it: the manifest publishes the dialogue's rules too.
    // The major version after that: a refusal says where its dialogue stands (typed), and
    // for a late message the deadline that passed.
    agent_core::Protocol::new("agora.auction.sealed", "4.0.0")
        .message::<CallForBids>()
        .message::<BidAnswer>()
        .message::<Closed>()
        .message::<Refused>()
        .state_machine(rules().state_machine())
}

/// The sealed-bid auction's dialogue between the auctioneer and each bidder: the call,
/// then one answer (a bid or a pass) before the deadline, then the close (the only step
/// allowed after the deadline), after which nothing is accepted.
pub fn rules() -> Rules {
    Rules::builder("agora.auction.sealed")
        .initial("invited")
        .step::<CallForBids>("invited", AUCTIONEER, "called")
        .variant_step::<BidAnswer>("Bid", "called", BIDDER, "sealed", false)
        .variant_step::<BidAnswer>("Pass", "called", BIDDER, "passed", false)
        .variant_step::<Closed>(Closed::NAME, "called", AUCTIONEER, "closed", true)
        .variant_step::<Closed>(Closed::NAME, "sealed", AUCTIONEER, "closed", true)
        .variant_step::<Closed>(Closed::NAME, "passed", AUCTIONEER, "closed", true)
        .terminal("closed")
        .build()
        .unwrap_or_else(|e| unreachable!("the sealed-bid auction's rules are valid: {e}"))
}

/// How the winner pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pricing {
    /// The highest bid of another bidder (Vickrey).
    SecondPrice,
    /// Its own bid.
    FirstPrice,
}

/// What a sealed-bid auction gathered and decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Sealed {
    /// The auction's id.
    pub auction: String,
    /// The winner and price, if any bid counted.
    pub award: Option<Award>,
    /// The bids that counted, in arrival order, with their signatures (the evidence).
    pub bids: Vec<SignedBid>,
    /// The bids that did not count, and why (those that came while the auction ran).
    pub refused: Vec<(Address, BidError)>,
}

impl Sealed {
    /// Counts an answer its dialogue accepted if it is a validly signed bid; lists it as
    /// refused otherwise.
    fn count(&mut self, auction: &str, (from, answer): Arrival<BidAnswer>) {
        match answer {
            Ok(BidAnswer::Bid(bid)) => match bid.check(auction, from) {
                Ok(()) => self.bids.push(bid),
                Err(why) => self.refused.push((from, why)),
            },
            Ok(BidAnswer::Pass { .. }) => {}
            Err(refused) => self.refused.push((from, refused.into())),
        }
    }
}

/// The auctioneer's side: receives the answers for the sealed-bid auctions it runs.
#[derive(Clone)]
pub struct Auctioneer {
    answers: Inbox<BidAnswer>,
    sales: Sales,
}

impl Auctioneer {
    /// Makes `agent` a sealed-bid auctioneer whose sales are recorded in `sales` (serve
    /// them with [`serve_sales`](crate::settlement::serve_sales) to be paid).
    pub fn serve(agent: &mut Agent, sales: Sales) -> Auctioneer {
        let auctioneer = Auctioneer { answers: Inbox::serve(agent, rules), sales };
        let answers = &auctioneer.answers;
        agent.include(
            protocol()
                .on_message(answers.route(BidAnswer::split))
                .on_message(answers.refuse(|m: &CallForBids| &m.auction, CallForBids::NAME))
                .on_message(answers.refuse(|m: &Closed| &m.auction, Closed::NAME)),
        );
        auctioneer
    }

    /// This auctioneer, with each auction it runs from now on holding at most `capacity` of its
    /// bidders' answers not yet counted (default 4,096, at least 1). One more arriving while that
    /// many wait is refused before its dialogue sees it, and its sender told to send it
    /// again: a larger line takes bursts, a smaller one bounds the memory a flood can use.
    pub fn with_line_capacity(mut self, capacity: usize) -> Auctioneer {
        self.answers = self.answers.with_capacity(capacity);
        self
    }

    /// This auctioneer's dialogues with its bidders ([`rules`]), once read from its storage
    /// (at its first auction, or the first bid to reach it).
    pub fn dialogues(&self) -> Option<&crate::dialogue::Dialogues> {
        self.answers.loaded()
    }

    /// Runs a sealed-bid auction of `item` among `bidders`, closing `deadline` from now;
    /// records the sale (if any) and tells the bidders the result.
    pub async fn run<T: Serialize>(
        &self,
        ctx: &Context,
        bidders: &[Address],
        item: &T,
        reserve: u128,
        deadline: Duration,
        pricing: Pricing,
    ) -> Result<Sealed, AuctionError> {
        let (auction, reserve) = (auction::new_id(), reserve.max(auction::MIN_PRICE));
        let deadline_ms = agent_core::envelope::unix_now_ms().saturating_add(deadline.as_millis() as u64);
        let until = tokio::time::Instant::now() + deadline;
        let call = CallForBids { auction: auction.clone(), item: serde_json::to_value(item)?, reserve, deadline_ms };
        let mut opened = self.answers.open(ctx, &auction, bidders, CallForBids::NAME, deadline_ms)?;
        tell_all(ctx, &opened.bidders(), &call).await;
        let mut sealed = Sealed { auction: auction.clone(), award: None, bids: Vec::new(), refused: Vec::new() };
        while let Some(arrival) = opened.next_before(until).await {
            sealed.count(&auction, arrival);
        }
        // From here on every answer is refused by its dialogue, as late.
        for arrival in opened.close(Closed::NAME) {
            sealed.count(&auction, arrival);
        }
        let counted: Vec<Bid> = sealed
            .bids
            .iter()
            .enumerate()
            .map(|(seq, b)| Bid { bidder: b.bidder, amount: b.amount, seq: seq as u64 })
            .collect();
        sealed.award = match pricing {
            Pricing::SecondPrice => auction::vickrey(&counted, reserve),
            Pricing::FirstPrice => auction::first_price(&counted, reserve),
        };
        if let Some(award) = sealed.award {
            self.sales.expect(auction::deal_of(&auction), award.winner, award.price);
        }
        let pay_to = ctx.wallet().ok().map(|wallet| wallet.address());
        opened.tell_closed(ctx, &Closed { auction, award: sealed.award, pay_to }).await;
        Ok(sealed)
    }
}

/// A bidder's side: how much to bid for an item, if anything.
#[async_trait::async_trait]
pub trait Bidder: Send + Sync + 'static {
    /// The bid for `item` with `reserve`, or `None` to pass.
    async fn bid(&self, item: serde_json::Value, reserve: u128) -> Option<u128>;

    /// How paying for a won item ended. The default does nothing.
    async fn settled(&self, _auction: &str, _settled: Result<Settled, SettlementError>) {}
}

/// Makes `agent` (whose key is `identity`) answer calls for bids with `bidder`'s bids,
/// signed with that key, and pay for what it wins on delivery (the auctioneer has
/// `deliver_within` to deliver before the escrow becomes refundable).
///
/// Each auction is kept as the bidder's dialogue with its auctioneer ([`rules`]) in the
/// agent's storage: every call and close is checked against it (one for an auction the
/// bidder is not in, from anyone else, or after the close is refused and its sender told
/// why), and the answer before it is sent (none is sent after the deadline). A bidder
/// restarted with the same key and storage resumes its auctions, and never pays more than
/// it bid. An agent bids in, or runs, sealed-bid auctions: not both.
pub fn serve<B: Bidder>(agent: &mut Agent, identity: Identity, bidder: Arc<B>, deliver_within: Duration) {
    let bidding = Bidding::serve(agent, rules);
    let identity = Arc::new(identity);
    let (on_call, strategy) = (bidding.clone(), bidder.clone());
    let on_call = move |ctx: Context, from: Address, call: CallForBids| {
        let (bidding, identity, bidder) = (on_call.clone(), identity.clone(), strategy.clone());
        async move {
            let (auction, invited) = (&call.auction, Invited::new(call.item));
            if !bidding.join(&ctx, auction, from, CallForBids::NAME, Some(call.deadline_ms), &invited).await {
                return;
            }
            let answer = match bidder.bid(invited.item.clone(), call.reserve).await {
                Some(amount) if bidding.say(&ctx, auction, "Bid", &invited.signed(amount)) => {
                    BidAnswer::Bid(SignedBid::sign(&identity, auction, amount))
                }
                Some(_) => return,
                None if bidding.say(&ctx, auction, "Pass", &invited) => BidAnswer::Pass { auction: auction.clone() },
                None => return,
            };
            if let Err(e) = ctx.send(from, answer).await {
                tracing::debug!(auction, error = %e, "a sealed bid was not delivered");
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
    agent.include(protocol().on_message(on_call).on_message(on_closed));
}
