//! An arbitrageur: reads every pool, finds the most profitable cycle through its start
//! token (a negative cycle of -log rates, `arbitrage.rs`), sizes the integer input that
//! maximises profit after fees, holds the cycle's pools (in pool order, so two
//! arbitrageurs never wait on each other), sizes again on the held reserves, trades the
//! hops, and lets the pools go. Holding the pools makes the realised profit exactly the
//! predicted one: nobody else can move them in between.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agent_core::{Address, Agent, Context, Identity, Wallet};
use parking_lot::Mutex;
use serde::Serialize;

use super::amm::{Pool, Token};
use super::arbitrage::{optimise, Opportunity};
use super::maker::{seed_of, wallets, Hold, HoldAnswer, Ledgers, Makers, Unheld, Unhold};
use super::scenario::ArbitrageurSpec;
use super::trader::{read_pools, swap, SwapFailure};

/// One arbitrage, traded or abandoned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Arbitrage {
    /// Who traded it.
    pub arbitrageur: String,
    /// Market time when it began, in ms.
    pub at_ms: u64,
    /// The cycle's tokens, start first and last.
    pub cycle: Vec<String>,
    /// The pools, by index in the almanac's listing of makers (by address).
    pub pools: Vec<usize>,
    /// What went in.
    pub input: u128,
    /// The predicted profit.
    pub predicted_profit: u128,
    /// The profit realised: the change in the arbitrageur's balance of the start token on
    /// its ledger (negative if it lost).
    pub realised_profit: i128,
    /// Whether every hop was traded; if not, why not.
    pub completed: Result<(), String>,
}

/// An arbitrageur's arbitrages, as it logs them.
pub type ArbitrageLog = Arc<Mutex<Vec<Arbitrage>>>;

/// The arbitrageur's agent, looking from `open.0` until `open.1` (Unix ms; the first is
/// also where the log's times count from).
pub fn arbitrageur_agent(
    spec: &ArbitrageurSpec,
    ledgers: Ledgers,
    makers: Arc<Makers>,
    (started_ms, closes_ms): (u64, u64),
    hold_ms: u64,
    escrow_ms: u64,
) -> Result<(Agent, ArbitrageLog), super::MarketError> {
    let mut agent = Agent::builder(spec.name.clone()).identity(Identity::from_seed(&seed_of(&spec.name))).build()?;
    let log = Arc::new(Mutex::new(Vec::new()));
    let wallets = Arc::new(wallets(&ledgers, &spec.name));
    let (name, start) = (spec.name.clone(), Token::new(&spec.start));
    let logged = log.clone();
    agent.on_interval(Duration::from_millis(spec.every_ms), move |ctx: Context| {
        let (wallets, makers, log, name, start) =
            (wallets.clone(), makers.clone(), logged.clone(), name.clone(), start.clone());
        async move {
            if agent_core::envelope::unix_now_ms() >= closes_ms {
                return;
            }
            let makers = makers.list().await;
            let look = Look { ctx: &ctx, wallets: &wallets, makers: &makers, start: &start, hold_ms, escrow_ms };
            if let Some(mut arbitrage) = look.once().await {
                arbitrage.arbitrageur = name;
                arbitrage.at_ms = agent_core::envelope::unix_now_ms().saturating_sub(started_ms);
                log.lock().push(arbitrage);
            }
        }
    });
    Ok((agent, log))
}

struct Look<'a> {
    ctx: &'a Context,
    wallets: &'a BTreeMap<String, Wallet>,
    makers: &'a [Address],
    start: &'a Token,
    hold_ms: u64,
    escrow_ms: u64,
}

impl Look<'_> {
    /// One look at the market: an arbitrage traded or abandoned, or none worth trying.
    async fn once(&self) -> Option<Arbitrage> {
        let wallet = self.wallets.get(self.start.as_str())?;
        let balance = wallet.balance().await.ok()?;
        if self.makers.is_empty() {
            return None;
        }
        let read = read_pools(self.ctx, self.makers).await;
        let pools: Vec<Pool> = read.iter().map(|r| r.as_ref().and_then(|r| r.pool())).collect::<Option<_>>()?;
        let found = super::arbitrage::find_opportunity(&pools, self.start, balance)?;
        // Hold the cycle's pools in pool order, then size again on what is held.
        let mut order = found.cycle.pools.clone();
        order.sort_unstable();
        order.dedup();
        let mut held = BTreeMap::new();
        for &index in &order {
            let answer = self
                .ctx
                .request::<Hold, HoldAnswer>(self.makers[index], Hold { for_ms: self.hold_ms }, Duration::from_secs(2))
                .await;
            match answer {
                Ok(HoldAnswer::Held(reserves)) => {
                    held.insert(index, reserves);
                }
                _ => {
                    self.let_go(held.keys().copied()).await;
                    return None;
                }
            }
        }
        let mut now = pools.clone();
        for (index, reserves) in &held {
            now[*index] = reserves.pool()?;
        }
        let Some(opportunity) = optimise(&found.cycle, &now, balance) else {
            self.let_go(held.keys().copied()).await;
            return None;
        };
        let maker_wallets: BTreeMap<usize, Address> = held.iter().map(|(i, r)| (*i, r.wallet)).collect();
        let arbitrage = self.trade(&opportunity, &now, &maker_wallets, balance).await;
        self.let_go(held.keys().copied()).await;
        Some(arbitrage)
    }

    async fn trade(
        &self,
        opportunity: &Opportunity,
        pools: &[Pool],
        maker_wallets: &BTreeMap<usize, Address>,
        balance_before: u128,
    ) -> Arbitrage {
        let cycle = &opportunity.cycle;
        let mut amount = opportunity.input;
        let mut completed = Ok(());
        let mut simulated = pools.to_vec();
        for (hop, &index) in cycle.pools.iter().enumerate() {
            let token_in = &cycle.tokens[hop];
            // What this hop gives on the held reserves: asked for exactly.
            let Some(expected) = simulated[index].swap(token_in, amount) else {
                completed = Err(format!("hop {} cannot be priced", hop + 1));
                break;
            };
            let maker_wallet = maker_wallets.get(&index).copied().unwrap_or(self.makers[index]);
            let result = swap(
                self.ctx,
                self.wallets,
                self.makers[index],
                maker_wallet,
                token_in.as_str(),
                amount,
                expected,
                self.escrow_ms,
            )
            .await;
            match result {
                Ok(out) => amount = out,
                Err(SwapFailure::NotSwapped(why)) => {
                    completed = Err(format!("hop {} not swapped: {why}", hop + 1));
                    break;
                }
                Err(SwapFailure::NotReleased { .. }) => {
                    completed = Err(format!("hop {}'s escrow could not be released", hop + 1));
                    break;
                }
            }
        }
        let after = match self.wallets.get(self.start.as_str()) {
            Some(wallet) => wallet.balance().await.unwrap_or(0),
            None => 0,
        };
        Arbitrage {
            arbitrageur: String::new(),
            at_ms: 0,
            cycle: cycle.tokens.iter().map(|t| t.to_string()).collect(),
            pools: cycle.pools.clone(),
            input: opportunity.input,
            predicted_profit: opportunity.predicted_profit,
            realised_profit: after as i128 - balance_before as i128,
            completed,
        }
    }

    async fn let_go(&self, pools: impl Iterator<Item = usize>) {
        for index in pools {
            let answer = self.ctx.request::<Unhold, Unheld>(self.makers[index], Unhold, Duration::from_secs(2)).await;
            if let Err(e) = answer {
                tracing::debug!(error = %e, pool = index, "a pool was not let go; its hold runs out");
            }
        }
    }
}
