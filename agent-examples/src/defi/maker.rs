//! A market maker: holds one constant-product pool, quotes its reserves, lets one
//! arbitrageur at a time hold it while it trades a cycle, and swaps against escrow: the
//! trader locks what it sells on that token's ledger for the maker, the maker checks the
//! escrow, pays out the other token on its ledger, and the trader releases the escrow.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use agent_core::ledger::{EscrowId, Ledger};
use agent_core::{Address, Agent, Context, Identity, Message, Protocol, Wallet};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::amm::{Pool, Token};
use super::scenario::PoolSpec;

/// Asks a maker for its pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.demo.defi.GetReserves")]
pub struct GetReserves;

/// A pool as its maker shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.demo.defi.Reserves")]
pub struct Reserves {
    /// One token.
    pub token_a: String,
    /// Its reserve.
    pub reserve_a: u128,
    /// The other.
    pub token_b: String,
    /// Its reserve.
    pub reserve_b: u128,
    /// The fee, in basis points.
    pub fee_bps: u32,
    /// The maker's wallet (the same address on every token's ledger).
    pub wallet: Address,
}

impl Reserves {
    /// The pool these reserves describe.
    pub fn pool(&self) -> Option<Pool> {
        Pool::new(Token::new(&self.token_a), self.reserve_a, Token::new(&self.token_b), self.reserve_b, self.fee_bps)
            .ok()
    }
}

/// Holds the pool for the sender for `for_ms`: nobody else may swap until it is released
/// or the hold ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.demo.defi.Hold")]
pub struct Hold {
    /// How long, in ms.
    pub for_ms: u64,
}

/// The answer to a [`Hold`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.demo.defi.HoldAnswer")]
pub enum HoldAnswer {
    /// Held, with the reserves as they are.
    Held(Reserves),
    /// Someone else holds it.
    Busy,
}

/// Ends the sender's hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.demo.defi.Unhold")]
pub struct Unhold;

/// The answer to an [`Unhold`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.demo.defi.Unheld")]
pub struct Unheld;

/// Sells `amount_in` of `token_in`, locked for the maker in `escrow`, for at least
/// `min_out` of the other token, paid to `pay_to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.demo.defi.Swap")]
pub struct Swap {
    /// What is sold.
    pub token_in: String,
    /// How much.
    pub amount_in: u128,
    /// The least the seller accepts.
    pub min_out: u128,
    /// The escrow holding `amount_in` for the maker.
    pub escrow: EscrowId,
    /// Where the other token goes.
    pub pay_to: Address,
}

/// The answer to a [`Swap`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.demo.defi.Swapped")]
pub enum Swapped {
    /// Paid out.
    Done {
        /// How much of the other token was paid.
        amount_out: u128,
    },
    /// Not swapped; the escrow goes back to the seller at its deadline.
    Refused {
        /// Why.
        reason: String,
    },
}

/// Asks a maker or a trader for its books.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.demo.defi.BooksRequest")]
pub struct BooksRequest;

/// The pool protocol as makers publish it: its messages, which reply answers which
/// request, and its digest, by which traders find the pools in the almanac.
pub fn protocol() -> Protocol {
    Protocol::new("agora.demo.defi-pool", "1.0")
        .message::<GetReserves>()
        .message::<Hold>()
        .message::<Unhold>()
        .message::<Swap>()
        .replies::<GetReserves, Reserves>()
        .replies::<Hold, HoldAnswer>()
        .replies::<Unhold, Unheld>()
        .replies::<Swap, Swapped>()
}

/// The pools' makers as the almanac lists them (by address), found once and kept.
pub struct Makers {
    directory: Arc<dyn almanac::Directory>,
    found: Mutex<Arc<Vec<Address>>>,
}

impl Makers {
    /// Makers found in `directory`.
    pub fn new(directory: Arc<dyn almanac::Directory>) -> Arc<Makers> {
        Arc::new(Makers { directory, found: Mutex::new(Arc::new(Vec::new())) })
    }

    /// The makers: asked of the almanac until some are found (an empty list while it
    /// cannot be reached).
    pub async fn list(&self) -> Arc<Vec<Address>> {
        let known = self.found.lock().clone();
        if !known.is_empty() {
            return known;
        }
        let mut found = Vec::new();
        let mut query = almanac::Query::protocol(protocol().digest());
        loop {
            let Ok(page) = self.directory.query(query.clone()).await else { return known };
            found.extend(page.records.iter().map(|r| r.address));
            match page.next {
                Some(next) if found.len() < 10_000 => query = query.after(next),
                _ => break,
            }
        }
        found.sort();
        let found = Arc::new(found);
        *self.found.lock() = found.clone();
        found
    }
}

/// What a maker's books show at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.demo.defi.MakerBooks")]
pub struct MakerBooks {
    /// The maker.
    pub maker: String,
    /// Its wallet.
    pub wallet: Address,
    /// The pool now.
    pub pool: Reserves,
    /// The pool at the start.
    pub initial: Reserves,
    /// Swaps done.
    pub swaps: u64,
    /// Swaps after which k was lower than before (must be none).
    pub k_decreases: Vec<String>,
}

struct State {
    pool: Pool,
    held_by: Option<(Address, u64)>,
    /// Escrows that paid for a swap, by token (each token's ledger numbers its own).
    used_escrows: BTreeSet<(String, EscrowId)>,
    swaps: u64,
    k_decreases: Vec<String>,
}

/// A market maker's pool, shared with whoever reports on the market.
pub struct Maker {
    name: String,
    wallet: Address,
    wallets: BTreeMap<String, Wallet>,
    initial: Reserves,
    state: Mutex<State>,
}

impl Maker {
    fn reserves(&self, pool: &Pool) -> Reserves {
        Reserves {
            token_a: pool.token_a().to_string(),
            reserve_a: pool.reserve_a(),
            token_b: pool.token_b().to_string(),
            reserve_b: pool.reserve_b(),
            fee_bps: pool.fee_bps(),
            wallet: self.wallet,
        }
    }

    /// The pool as it stands.
    pub fn pool(&self) -> Pool {
        self.state.lock().pool.clone()
    }

    /// Its books.
    pub fn books(&self) -> MakerBooks {
        let state = self.state.lock();
        MakerBooks {
            maker: self.name.clone(),
            wallet: self.wallet,
            pool: self.reserves(&state.pool),
            initial: self.initial.clone(),
            swaps: state.swaps,
            k_decreases: state.k_decreases.clone(),
        }
    }
}

/// Every token's ledger.
pub type Ledgers = Arc<BTreeMap<String, Arc<dyn Ledger>>>;

/// The key seed of a DeFi agent called `name`.
pub fn seed_of(name: &str) -> String {
    format!("defi demo agent {name}")
}

/// An agent's wallets, one per token's ledger (the same address on every ledger). Made
/// once per agent: a wallet keeps the account's next nonce.
pub fn wallets(ledgers: &Ledgers, name: &str) -> BTreeMap<String, Wallet> {
    let identity = Identity::from_seed(&seed_of(name)).derive("wallet");
    ledgers.iter().map(|(token, ledger)| (token.clone(), Wallet::new(identity.clone(), ledger.clone()))).collect()
}

/// The almanac registration of the maker of `spec`: the pool protocol, and the pair as an
/// attribute, signed with its key, for a day.
pub fn registration(
    spec: &PoolSpec,
    peer_id: String,
    endpoints: Vec<almanac::WeightedEndpoint>,
) -> almanac::Registration {
    let attributes = [("pool".to_owned(), format!("{}/{}", spec.token_a, spec.token_b))].into();
    let now = agent_core::envelope::unix_now_ms();
    let identity = Identity::from_seed(&seed_of(&spec.maker));
    almanac::Registration::sign(
        &identity,
        peer_id,
        endpoints,
        vec![protocol().digest()],
        attributes,
        now,
        now + 23 * 3_600_000,
    )
}

/// The maker agent of `spec`; its pool's reserves must be minted into its wallets.
pub fn maker_agent(spec: &PoolSpec, ledgers: Ledgers) -> Result<(Agent, Arc<Maker>), super::MarketError> {
    let pool =
        Pool::new(Token::new(&spec.token_a), spec.reserve_a, Token::new(&spec.token_b), spec.reserve_b, spec.fee_bps)
            .map_err(|e| super::MarketError::Pool(format!("{}: {e}", spec.maker)))?;
    let identity = Identity::from_seed(&seed_of(&spec.maker));
    let wallet = identity.derive("wallet").address();
    let maker = Arc::new(Maker {
        name: spec.maker.clone(),
        wallet,
        wallets: wallets(&ledgers, &spec.maker),
        initial: Reserves {
            token_a: spec.token_a.clone(),
            reserve_a: spec.reserve_a,
            token_b: spec.token_b.clone(),
            reserve_b: spec.reserve_b,
            fee_bps: spec.fee_bps,
            wallet,
        },
        state: Mutex::new(State {
            pool,
            held_by: None,
            used_escrows: BTreeSet::new(),
            swaps: 0,
            k_decreases: Vec::new(),
        }),
    });
    let mut agent = Agent::builder(spec.maker.clone()).identity(identity).build()?;
    let (quoting, holding, unholding, swapping) = (maker.clone(), maker.clone(), maker.clone(), maker.clone());
    let shown = maker.clone();
    agent.include(
        Protocol::new("agora.demo.defi-books", "1.0")
            .on_message(move |ctx: Context, _from: Address, _: BooksRequest| {
                let books = shown.books();
                async move { ctx.reply(books).await }
            })
            .replies::<BooksRequest, MakerBooks>(),
    );
    agent.include(
        protocol()
            .on_message(move |ctx: Context, _from: Address, _: GetReserves| {
                let maker = quoting.clone();
                async move {
                    let reserves = maker.reserves(&maker.state.lock().pool);
                    ctx.reply(reserves).await
                }
            })
            .on_message(move |ctx: Context, from: Address, hold: Hold| {
                let maker = holding.clone();
                async move {
                    let now = agent_core::envelope::unix_now_ms();
                    let answer = {
                        let mut state = maker.state.lock();
                        match state.held_by {
                            Some((holder, until)) if holder != from && until > now => HoldAnswer::Busy,
                            _ => {
                                state.held_by = Some((from, now.saturating_add(hold.for_ms.min(60_000))));
                                HoldAnswer::Held(maker.reserves(&state.pool))
                            }
                        }
                    };
                    ctx.reply(answer).await
                }
            })
            .on_message(move |ctx: Context, from: Address, _: Unhold| {
                let maker = unholding.clone();
                async move {
                    {
                        let mut state = maker.state.lock();
                        if state.held_by.is_some_and(|(holder, _)| holder == from) {
                            state.held_by = None;
                        }
                    }
                    ctx.reply(Unheld).await
                }
            })
            .on_message(move |ctx: Context, from: Address, swap: Swap| {
                let (maker, ledgers) = (swapping.clone(), ledgers.clone());
                async move {
                    let answer = match swap_for(&maker, &ledgers, from, &swap).await {
                        Ok(amount_out) => Swapped::Done { amount_out },
                        Err(reason) => Swapped::Refused { reason },
                    };
                    ctx.reply(answer).await
                }
            }),
    );
    Ok((agent, maker))
}

/// The escrow must still have this long to run when the maker pays out, so the seller has
/// time to release it.
const ESCROW_MARGIN_MS: u64 = 2_000;

async fn swap_for(maker: &Maker, ledgers: &Ledgers, from: Address, swap: &Swap) -> Result<u128, String> {
    let now = agent_core::envelope::unix_now_ms();
    let token_in = Token::new(&swap.token_in);
    let (token_out, amount_out) = {
        let state = maker.state.lock();
        if let Some((holder, until)) = state.held_by {
            if holder != from && until > now {
                return Err("the pool is held by another trader".into());
            }
        }
        if state.used_escrows.contains(&(swap.token_in.clone(), swap.escrow)) {
            return Err("that escrow already paid for a swap".into());
        }
        let token_out =
            state.pool.other(&token_in).ok_or_else(|| format!("the pool does not trade {token_in}"))?.clone();
        let amount_out = state.pool.quote(&token_in, swap.amount_in).ok_or("the swap cannot be priced")?;
        (token_out, amount_out)
    };
    if amount_out < swap.min_out || amount_out == 0 {
        return Err(format!("the pool pays {amount_out}, less than the {} asked", swap.min_out));
    }
    let ledger_in = ledgers.get(&swap.token_in).ok_or("no ledger for the token sold")?;
    let escrow = ledger_in.escrow(swap.escrow).await.map_err(|e| format!("the escrow cannot be read: {e}"))?;
    match escrow {
        Some(e)
            if e.amount == swap.amount_in
                && e.beneficiary == maker.wallet
                && e.deadline_ms >= now.saturating_add(ESCROW_MARGIN_MS) => {}
        _ => return Err("no matching escrow locked for the pool".into()),
    }
    let wallet_out = maker.wallets.get(token_out.as_str()).ok_or("no ledger for the token bought")?;
    wallet_out
        .transfer(swap.pay_to, amount_out, String::new())
        .await
        .map_err(|e| format!("the pay-out failed: {}", agent_core::error::chain(&e)))?;
    // The agent handles one message at a time, so the pool cannot have moved during the
    // awaits above: the swap applied is the one quoted and paid.
    let mut state = maker.state.lock();
    state.used_escrows.insert((swap.token_in.clone(), swap.escrow));
    let k_before = state.pool.k();
    if state.pool.swap(&token_in, swap.amount_in) != Some(amount_out) {
        let note = format!("swap {} paid {amount_out}, not what the pool gives", state.swaps + 1);
        state.k_decreases.push(note);
    }
    if state.pool.k() < k_before {
        let note = format!("swap {} of {} {}", state.swaps + 1, swap.amount_in, swap.token_in);
        state.k_decreases.push(note);
    }
    state.swaps += 1;
    Ok(amount_out)
}
