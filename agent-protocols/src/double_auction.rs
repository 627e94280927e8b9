//! A double auction over messages (a call market, as energy and IoT markets run): each
//! round, buyers' bids and sellers' asks, signed by their traders, are cleared at one
//! uniform price, and every trade is paid through escrow.
//!
//! The clearinghouse opens a round to its traders ([`RoundOpen`]). Traders send
//! [`SignedOrder`]s (buy or sell up to a quantity at a limit price per unit) before the
//! round closes. The round then clears by [`auction::double`] of the orders that counted
//! (validly signed by the agent that sent them, for this round, received before the close),
//! in arrival order. Each trade ([`Trade`]: a buyer, a seller, a quantity, at the round's
//! price) is a deal of its own: the clearinghouse tells each seller its trades first
//! ([`Cleared`], a request the seller answers once it awaits payment for them), then each
//! buyer, who pays each seller on delivery through escrow ([`settlement`]).
//!
//! Every order is checked against the round's dialogue with its trader ([`rules`]): an
//! order after the close, or naming a round its sender has no dialogue in here, is
//! refused, counts for nothing, and its sender is told why ([`Refused`]). The trader keeps
//! the same dialogue on its side, in its storage ([`serve`]), and a clearinghouse's message
//! sent by a trader is refused too.

use std::sync::Arc;
use std::time::Duration;

use agent_core::envelope::unix_now_ms;
use agent_core::identity::SignatureError;
use agent_core::ledger::DealId;
use agent_core::{Address, Agent, Context, Identity, Message, PublicKey};
use serde::{Deserialize, Serialize};

use crate::auction::{self, AuctionError, Clearing, Order, AUCTIONEER, BIDDER};
use crate::bidding::Bidding;
use crate::dialogue::{DialogueError, Refused, Rules};
use crate::inbox::{tell_all, Inbox};
use crate::settlement::{self, Sales, Settled, SettlementError};

/// A round is open for orders until `closes_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.auction.double.RoundOpen")]
pub struct RoundOpen {
    /// The round, as 32 hex digits.
    pub round: String,
    /// What is traded (a unit of energy, a lot size), as the market describes it.
    pub good: String,
    /// When the round closes (ms since the Unix epoch).
    pub closes_at_ms: u64,
}

/// Buy or sell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema)]
pub enum Side {
    /// A bid: buy up to the quantity at the price per unit or less.
    Buy,
    /// An ask: sell up to the quantity at the price per unit or more.
    Sell,
}

/// An order, signed by its trader over the round, the trader, the side, the price, the
/// quantity and the wallet it is paid to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.auction.double.SignedOrder")]
pub struct SignedOrder {
    /// The round it is for.
    pub round: String,
    /// The trader.
    pub trader: Address,
    /// The trader's public key.
    pub key: PublicKey,
    /// Buy or sell.
    pub side: Side,
    /// The limit price per unit.
    pub price: u128,
    /// How many units.
    pub quantity: u64,
    /// Where a seller is paid (its wallet); none for a buyer.
    pub pay_to: Option<Address>,
    /// ed25519 over [`SignedOrder::signing_bytes`].
    #[serde(with = "agent_core::identity::signature_hex")]
    #[schemars(with = "String")]
    pub signature: [u8; 64],
}

/// Why an order did not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// The signature does not verify.
    #[error("bad order signature: {0}")]
    Signature(#[from] SignatureError),
    /// The key is not the trader's, or the trader is not the agent that sent it.
    #[error("order signed for {claimed}, sent by {sent}")]
    NotTheTrader {
        /// Whom the order names (or whose key signed it).
        claimed: Address,
        /// The agent that sent it.
        sent: Address,
    },
    /// A sell order that names no wallet to be paid to.
    #[error("a sell order must name the wallet it is paid to")]
    NoWallet,
    /// Its dialogue refused it: after the close, or in a dialogue its sender does not have
    /// (another round's, or one it was not invited to).
    #[error("refused by its dialogue: {0}")]
    Refused(#[from] DialogueError),
}

impl SignedOrder {
    /// `identity`'s order in `round`.
    pub fn sign(
        identity: &Identity,
        round: &str,
        side: Side,
        price: u128,
        quantity: u64,
        pay_to: Option<Address>,
    ) -> SignedOrder {
        let mut order = SignedOrder {
            round: round.into(),
            trader: identity.address(),
            key: identity.public_key(),
            side,
            price,
            quantity,
            pay_to,
            signature: [0; 64],
        };
        order.signature = identity.sign(&order.signing_bytes());
        order
    }

    /// What the signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = b"agora.order.v1".to_vec();
        out.extend_from_slice(&(self.round.len() as u32).to_be_bytes());
        out.extend_from_slice(self.round.as_bytes());
        out.extend_from_slice(self.trader.as_bytes());
        out.push(match self.side {
            Side::Buy => 0,
            Side::Sell => 1,
        });
        out.extend_from_slice(&self.price.to_be_bytes());
        out.extend_from_slice(&self.quantity.to_be_bytes());
        match &self.pay_to {
            Some(wallet) => {
                out.push(1);
                out.extend_from_slice(wallet.as_bytes());
            }
            None => out.push(0),
        }
        out
    }

    /// Checks the signature, that the key is the trader's and the trader is `sent_by`, and
    /// that a sell order names its wallet.
    pub fn check(&self, sent_by: Address) -> Result<(), OrderError> {
        let signer = Address::from_public_key(&self.key);
        if signer != self.trader || self.trader != sent_by {
            return Err(OrderError::NotTheTrader { claimed: self.trader, sent: sent_by });
        }
        self.key.verify(&self.signing_bytes(), &self.signature)?;
        if self.side == Side::Sell && self.pay_to.is_none() {
            return Err(OrderError::NoWallet);
        }
        Ok(())
    }
}

/// One trade of a round: `quantity` units from `seller` to `buyer` at the round's price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema)]
pub struct Trade {
    /// The deal it settles: what the buyer's escrow names.
    pub deal: DealId,
    /// The buyer.
    pub buyer: Address,
    /// The seller.
    pub seller: Address,
    /// The seller's wallet.
    pub pay_to: Address,
    /// How many units.
    pub quantity: u64,
    /// The price per unit (the round's uniform price).
    pub price: u128,
}

impl Trade {
    /// What the buyer pays: price times quantity (saturating).
    pub fn total(&self) -> u128 {
        self.price.saturating_mul(u128::from(self.quantity))
    }
}

/// The round has cleared: the trades of the trader it is sent to (none if it traded nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.auction.double.Cleared")]
pub struct Cleared {
    /// The round.
    pub round: String,
    /// The uniform price, if anything traded.
    pub price: Option<u128>,
    /// This trader's trades.
    pub trades: Vec<Trade>,
}

/// A seller's answer to [`Cleared`]: it now awaits payment for its trades.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.auction.double.Noted")]
pub struct Noted;

/// The double auction as agents publish it: its messages, which reply answers which
/// request, and its digest. Both sides include it ([`Clearinghouse::serve`], [`serve`]).
pub fn protocol() -> agent_core::Protocol {
    // A refusal carries a typed cause (a wire code), its text only detailing it.
    // The minor version after it: the manifest publishes the dialogue's rules too.
    // The major version after that: a refusal says where its dialogue stands (typed), and
    // for a late message the deadline that passed.
    agent_core::Protocol::new("agora.auction.double", "3.0.0")
        .message::<RoundOpen>()
        .message::<SignedOrder>()
        .replies::<Cleared, Noted>()
        .message::<Refused>()
        .state_machine(rules().state_machine())
}

/// A round's dialogue between the clearinghouse (in the role
/// [`AUCTIONEER`]) and each trader
/// ([`BIDDER`]): the opening, then any number of orders from the
/// trader until the round closes, then the trader's trades (the only step allowed after the
/// close), after which nothing is accepted.
pub fn rules() -> Rules {
    Rules::builder("agora.auction.double")
        .initial("invited")
        .step::<RoundOpen>("invited", AUCTIONEER, "open")
        .step::<SignedOrder>("open", BIDDER, "open")
        .variant_step::<Cleared>(Cleared::NAME, "open", AUCTIONEER, "cleared", true)
        .terminal("cleared")
        .build()
        .unwrap_or_else(|e| unreachable!("the double auction's rules are valid: {e}"))
}

/// What one round gathered and decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    /// The round's id.
    pub round: String,
    /// The clearing: [`auction::double`] of the orders that counted, or `None`.
    pub clearing: Option<Clearing>,
    /// Every trade, with its deal.
    pub trades: Vec<Trade>,
    /// The signed orders that counted, in arrival order: the evidence.
    pub orders: Vec<SignedOrder>,
    /// Orders that did not count, and why.
    pub refused: Vec<(Address, OrderError)>,
}

impl Round {
    /// Counts an order its dialogue accepted if it is validly signed; lists it as refused
    /// otherwise.
    fn count(&mut self, from: Address, order: Result<SignedOrder, DialogueError>) {
        match order.map_err(OrderError::from).and_then(|order| order.check(from).map(|()| order)) {
            Ok(order) => self.orders.push(order),
            Err(why) => self.refused.push((from, why)),
        }
    }
}

/// The deal of the `index`th trade of `round`.
pub fn deal_of(round: &str, index: usize) -> DealId {
    DealId::named(&format!("agora.double/{round}/{index}"))
}

/// The clearinghouse's side: receives orders for the rounds it runs.
#[derive(Clone)]
pub struct Clearinghouse {
    orders: Inbox<SignedOrder>,
}

impl Clearinghouse {
    /// Makes `agent` a clearinghouse.
    pub fn serve(agent: &mut Agent) -> Clearinghouse {
        let house = Clearinghouse { orders: Inbox::serve(agent, rules) };
        let orders = &house.orders;
        agent.include(
            protocol()
                .on_message(orders.route(|order: SignedOrder| (order.round.clone(), SignedOrder::NAME, order)))
                .on_message(orders.refuse(|m: &RoundOpen| &m.round, RoundOpen::NAME))
                .on_message(orders.refuse(|m: &Cleared| &m.round, Cleared::NAME)),
        );
        house
    }

    /// This clearinghouse, with each round it runs from now on holding at most `capacity` of its
    /// traders' orders not yet counted (default 4,096, at least 1). One more arriving while that
    /// many wait is refused before its dialogue sees it, and its sender told to send it
    /// again: a larger line takes bursts, a smaller one bounds the memory a flood can use.
    pub fn with_line_capacity(mut self, capacity: usize) -> Clearinghouse {
        self.orders = self.orders.with_capacity(capacity);
        self
    }

    /// This clearinghouse's dialogues with its traders ([`rules`]), once read from its
    /// storage (at its first round, or the first order to reach it).
    pub fn dialogues(&self) -> Option<&crate::dialogue::Dialogues> {
        self.orders.loaded()
    }

    /// Runs one round of trading `good` among `traders`, open for `open_for`; returns once
    /// it has cleared and every trader has been told its trades (sellers first). Each
    /// trader's orders are checked against its dialogue in the round ([`rules`]).
    pub async fn run_round(
        &self,
        ctx: &Context,
        traders: &[Address],
        good: &str,
        open_for: Duration,
    ) -> Result<Round, AuctionError> {
        let round_id = auction::new_id();
        let closes_at_ms = unix_now_ms().saturating_add(open_for.as_millis() as u64);
        let closes = tokio::time::Instant::now() + open_for;
        let mut opened = self.orders.open(ctx, &round_id, traders, RoundOpen::NAME, closes_at_ms)?;
        let traders = opened.bidders();
        tell_all(ctx, &traders, &RoundOpen { round: round_id.clone(), good: good.into(), closes_at_ms }).await;

        let mut round = Round {
            round: round_id.clone(),
            clearing: None,
            trades: Vec::new(),
            orders: Vec::new(),
            refused: Vec::new(),
        };
        while let Some((from, order)) = opened.next_before(closes).await {
            round.count(from, order);
        }
        // The trades are the step that closes each trader's dialogue: recorded now, told
        // once the round has cleared.
        for (from, order) in opened.close(Cleared::NAME) {
            round.count(from, order);
        }

        let as_order = |(seq, o): (usize, &SignedOrder)| Order {
            trader: o.trader,
            price: o.price,
            quantity: o.quantity,
            seq: seq as u64,
        };
        let bids: Vec<Order> =
            round.orders.iter().enumerate().filter(|(_, o)| o.side == Side::Buy).map(as_order).collect();
        let asks: Vec<Order> =
            round.orders.iter().enumerate().filter(|(_, o)| o.side == Side::Sell).map(as_order).collect();
        round.clearing = auction::double(&bids, &asks);
        if let Some(clearing) = &round.clearing {
            round.trades = clearing
                .fills
                .iter()
                .enumerate()
                .map(|(index, fill)| Trade {
                    deal: deal_of(&round_id, index),
                    buyer: fill.buyer,
                    seller: fill.seller,
                    // Checked above: every counted sell order names its wallet.
                    pay_to: round
                        .orders
                        .iter()
                        .find(|o| o.trader == fill.seller && o.side == Side::Sell)
                        .and_then(|o| o.pay_to)
                        .unwrap_or(fill.seller),
                    quantity: fill.quantity,
                    price: clearing.price,
                })
                .collect();
        }
        self.tell(ctx, &traders, &round).await;
        Ok(round)
    }

    /// Tells the sellers their trades (and waits for them to note them), then everyone else.
    async fn tell(&self, ctx: &Context, traders: &[Address], round: &Round) {
        let price = round.clearing.as_ref().map(|c| c.price);
        let trades_of = |trader: Address| -> Vec<Trade> {
            round.trades.iter().filter(|t| t.buyer == trader || t.seller == trader).cloned().collect()
        };
        let mut sellers = tokio::task::JoinSet::new();
        let mut sellers_told = Vec::new();
        for &trader in traders {
            if !round.trades.iter().any(|t| t.seller == trader) {
                continue;
            }
            sellers_told.push(trader);
            let cleared = Cleared { round: round.round.clone(), price, trades: trades_of(trader) };
            let ctx = ctx.clone();
            sellers.spawn(async move {
                (trader, ctx.request::<Cleared, Noted>(trader, cleared, Some(Duration::from_secs(5))).await)
            });
        }
        while let Some(joined) = sellers.join_next().await {
            if let Ok((seller, Err(e))) = joined {
                tracing::warn!(%seller, error = %e, "a seller did not note its trades; its buyers' payments may be refused");
            }
        }
        for &trader in traders.iter().filter(|t| !sellers_told.contains(t)) {
            let cleared = Cleared { round: round.round.clone(), price, trades: trades_of(trader) };
            if let Err(e) = ctx.send(trader, cleared).await {
                tracing::debug!(%trader, error = %e, "a trader was not told its trades");
            }
        }
    }
}

/// A trader's side of the double auction.
#[async_trait::async_trait]
pub trait Trader: Send + Sync + 'static {
    /// The orders to place in a round just opened: (side, limit price per unit, quantity).
    async fn orders(&self, round: &RoundOpen) -> Vec<(Side, u128, u64)>;

    /// How paying for one bought trade ended. The default does nothing.
    async fn settled(&self, _trade: &Trade, _settled: Result<Settled, SettlementError>) {}
}

/// Makes `agent` (whose key is `identity`) trade in double auctions with `trader`'s orders,
/// signed with that key. What it sells is recorded in `sales` (serve them with
/// [`settlement::serve_sales`] to deliver and be paid); what it buys it pays for on
/// delivery (each seller has `deliver_within`).
///
/// Each round is kept as the trader's dialogue with its clearinghouse ([`rules`]) in the
/// agent's storage, with the orders it placed: every message from the clearinghouse is
/// checked against it (trades of a round the trader is not in, from anyone else, or told a
/// second time are refused and their sender told why), and every order before it is sent
/// (none after the round's close). A trader restarted with the same key and storage
/// resumes its rounds. It acts only on trades within its orders: a buyer never pays more
/// per unit than it bid nor for more units than it ordered, and a seller never awaits less
/// than it asked. An agent trades in, or clears, double auctions: not both.
pub fn serve<T: Trader>(agent: &mut Agent, identity: Identity, trader: Arc<T>, sales: Sales, deliver_within: Duration) {
    let bidding = Bidding::serve(agent, rules);
    let identity = Arc::new(identity);
    let (on_open, strategy) = (bidding.clone(), trader.clone());
    let on_open = move |ctx: Context, house: Address, open: RoundOpen| {
        let (identity, trader, bidding) = (identity.clone(), strategy.clone(), on_open.clone());
        async move {
            let round = &open.round;
            let mut placed = Placed::default();
            if !bidding.join(&ctx, round, house, RoundOpen::NAME, Some(open.closes_at_ms), &placed).await {
                return;
            }
            let pay_to = ctx.wallet().ok().map(|wallet| wallet.address());
            for (side, price, quantity) in trader.orders(&open).await {
                placed.orders.push(PlacedOrder { side, price, quantity });
                if !bidding.say(&ctx, round, SignedOrder::NAME, &placed) {
                    return;
                }
                let pay_to = (side == Side::Sell).then_some(pay_to).flatten();
                let order = SignedOrder::sign(&identity, round, side, price, quantity, pay_to);
                if let Err(e) = ctx.send(house, order).await {
                    tracing::debug!(round, error = %e, "an order was not delivered");
                }
            }
        }
    };
    let on_cleared = move |ctx: Context, house: Address, cleared: Cleared| {
        let (trader, sales, bidding) = (trader.clone(), sales.clone(), bidding.clone());
        async move {
            let me = ctx.address();
            let Some(placed) = bidding.heard::<Placed>(&ctx, &cleared.round, house, Cleared::NAME).await else {
                return;
            };
            if let Err(why) = placed.allows(me, cleared.price, &cleared.trades) {
                tracing::warn!(round = cleared.round, why, "trades beyond this trader's orders; ignored");
                return;
            }
            for trade in cleared.trades.iter().filter(|t| t.seller == me) {
                sales.expect(trade.deal, trade.buyer, trade.total());
            }
            if ctx.is_request() {
                if let Err(e) = ctx.reply(Noted).await {
                    tracing::debug!(round = cleared.round, error = %e, "the clearinghouse did not hear that trades were noted");
                }
            }
            // Paid in the background: the agent goes on serving (its own sales too) while
            // the sellers deliver. The trader's work in hand: a graceful stop lets it (and
            // the trader's `settled`, not cancel-safe) end; a crash ends it, so a crashed
            // trader pays nothing after the crash.
            let bought: Vec<Trade> = cleared.trades.into_iter().filter(|t| t.buyer == me).collect();
            let task_ctx = ctx.clone();
            bidding.work().spawn(&task_ctx, async move {
                for trade in bought {
                    let (seller, pay_to, total) = (trade.seller, trade.pay_to, trade.total());
                    let settled =
                        settlement::pay_on_delivery(&ctx, seller, pay_to, total, trade.deal, deliver_within).await;
                    trader.settled(&trade, settled).await;
                }
            });
        }
    };
    agent.include(protocol().on_message(on_open).on_message(on_cleared));
}

/// The orders a trader placed in a round, kept with its dialogue.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Placed {
    orders: Vec<PlacedOrder>,
}

/// One order placed.
#[derive(Debug, Serialize, Deserialize)]
struct PlacedOrder {
    side: Side,
    #[serde(with = "crate::bidding::amount_text")]
    price: u128,
    quantity: u64,
}

impl Placed {
    /// Whether `trades` stay within the orders: every trade at the round's one price, and
    /// per side no more units than the orders willing at that price add up to.
    fn allows(&self, me: Address, price: Option<u128>, trades: &[Trade]) -> Result<(), &'static str> {
        let Some(price) = price else {
            return if trades.is_empty() { Ok(()) } else { Err("trades without a clearing price") };
        };
        if trades.iter().any(|t| t.price != price) {
            return Err("trades at another price than the round's");
        }
        for side in [Side::Buy, Side::Sell] {
            let units: u128 = trades
                .iter()
                .filter(|t| if side == Side::Buy { t.buyer == me } else { t.seller == me })
                .map(|t| u128::from(t.quantity))
                .sum();
            let willing: u128 = self
                .orders
                .iter()
                .filter(|o| o.side == side && if side == Side::Buy { price <= o.price } else { price >= o.price })
                .map(|o| u128::from(o.quantity))
                .sum();
            if units > willing {
                return Err("more units, or at a worse price, than ordered");
            }
        }
        Ok(())
    }
}
