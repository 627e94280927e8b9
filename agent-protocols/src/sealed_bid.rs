//! A sealed-bid auction over messages, with bids signed by their bidders.
//!
//! The auctioneer calls each bidder for one sealed bid ([`CallForBids`], a request); each
//! answers with a [`SignedBid`], signed with its own agent key, or passes. Bids that come
//! after the deadline, carry a bad signature, or are signed by anyone but the answering
//! agent do not count. The winner and price are exactly what [`auction::vickrey`] (second
//! price) or [`auction::first_price`] gives for the bids that count, ties to the earlier
//! bid. A signed bid is evidence: anyone holding it can check who bid what, for which
//! auction.
//!
//! The bidders are told the result ([`Closed`]); the winner pays through escrow keyed by
//! [`auction::deal_of`] the auction and released on delivery
//! ([`settlement`](crate::settlement)), as in the English and Dutch auctions.

use std::sync::Arc;
use std::time::Duration;

use agent_core::identity::SignatureError;
use agent_core::{Address, Agent, Context, Identity, Message, PublicKey};
use serde::{Deserialize, Serialize};

use crate::auction::{self, Award, Bid};
use crate::bidding::Followed;
use crate::inbox::tell_all;
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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

/// A bidder's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.auction.BidAnswer")]
pub enum BidAnswer {
    /// A bid.
    Bid(SignedBid),
    /// No bid.
    Pass,
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
    /// It came after the deadline.
    #[error("bid after the deadline")]
    Late,
    /// A Dutch take at a price the clock has not called.
    #[error("take at {0}, a price the clock has not called")]
    NotCalled(u128),
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

/// The sealed-bid auction as agents publish it: its messages, which reply answers which
/// request, and its digest. Bidders include it ([`serve`]).
pub fn protocol() -> agent_core::Protocol {
    agent_core::Protocol::new("agora.auction.sealed", "1.0.0").replies::<CallForBids, BidAnswer>().message::<Closed>()
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
    /// The winner and price, if any bid counted.
    pub award: Option<Award>,
    /// The bids that counted, in arrival order, with their signatures (the evidence).
    pub bids: Vec<SignedBid>,
    /// The bids that did not count, and why.
    pub refused: Vec<(Address, BidError)>,
}

/// Runs a sealed-bid auction of `item` among `bidders`, closing at `deadline`; records the
/// sale in `sales` (serve them with [`serve_sales`](crate::settlement::serve_sales) to be
/// paid) and tells the bidders the result.
pub async fn run<T: Serialize>(
    ctx: &Context,
    sales: &Sales,
    bidders: &[Address],
    item: &T,
    reserve: u128,
    deadline: Duration,
    pricing: Pricing,
) -> Result<Sealed, serde_json::Error> {
    let auction = auction::new_id();
    let deadline_ms = agent_core::envelope::unix_now_ms().saturating_add(deadline.as_millis() as u64);
    let until = tokio::time::Instant::now() + deadline;
    let call = CallForBids { auction: auction.clone(), item: serde_json::to_value(item)?, reserve, deadline_ms };
    let mut answers = tokio::task::JoinSet::new();
    for &bidder in bidders {
        let (ctx, call) = (ctx.clone(), call.clone());
        answers.spawn(async move { (bidder, ctx.request::<CallForBids, BidAnswer>(bidder, call, deadline).await) });
    }
    let mut sealed = Sealed { award: None, bids: Vec::new(), refused: Vec::new() };
    while let Ok(Some(joined)) = tokio::time::timeout_at(until, answers.join_next()).await {
        let Ok((from, Ok(BidAnswer::Bid(bid)))) = joined else { continue };
        if agent_core::envelope::unix_now_ms() > deadline_ms {
            sealed.refused.push((from, BidError::Late));
            continue;
        }
        match bid.check(&auction, from) {
            Ok(()) => sealed.bids.push(bid),
            Err(why) => sealed.refused.push((from, why)),
        }
    }
    // Bids still on their way are late by construction: the auction is closed.
    answers.abort_all();
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
        sales.expect(auction::deal_of(&auction), award.winner, award.price);
    }
    let pay_to = ctx.wallet().ok().map(|wallet| wallet.address());
    tell_all(ctx, bidders, &Closed { auction, award: sealed.award, pay_to }).await;
    Ok(sealed)
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
pub fn serve<B: Bidder>(agent: &mut Agent, identity: Identity, bidder: Arc<B>, deliver_within: Duration) {
    let mut served = protocol();
    let identity = Arc::new(identity);
    let followed = Followed::default();
    let (on_call, strategy) = (followed.clone(), bidder.clone());
    served = served.on_message(move |ctx: Context, from: Address, call: CallForBids| {
        let (followed, identity, bidder) = (on_call.clone(), identity.clone(), strategy.clone());
        async move {
            let answer = match bidder.bid(call.item.clone(), call.reserve).await {
                Some(amount) if followed.follow(&call.auction, from, call.item) => {
                    followed.signed(&call.auction, amount);
                    BidAnswer::Bid(SignedBid::sign(&identity, &call.auction, amount))
                }
                _ => BidAnswer::Pass,
            };
            ctx.reply(answer).await
        }
    });
    served = served.on_message(move |ctx: Context, from: Address, closed: Closed| {
        let (followed, bidder) = (followed.clone(), bidder.clone());
        async move {
            if let Some(owed) = followed.close(ctx.address(), &closed.auction, from, closed.award, closed.pay_to) {
                owed.pay(ctx, deliver_within, move |auction, settled| async move {
                    bidder.settled(&auction, settled).await;
                });
            }
        }
    });
    agent.include(served);
}
