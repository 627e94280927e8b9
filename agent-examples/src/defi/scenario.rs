//! The DeFi market's scenario: tokens, constant-product pools (each held by a market
//! maker), traders that move prices, and arbitrageurs. Loaded from JSON
//! (`agent-examples/scenarios/defi.json` is the built-in market; `docs/markets.md` gives
//! the format) or generated from a seed.

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

pub use crate::market::ScenarioError;

/// The built-in market, as shipped in `agent-examples/scenarios/defi.json`.
pub const BUILT_IN: &str = include_str!("../../scenarios/defi.json");

/// A DeFi market.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The tokens (each a ledger of its own).
    pub tokens: Vec<String>,
    /// The pools, each held by a market-maker agent.
    pub pools: Vec<PoolSpec>,
    /// Traders swapping at random, which moves prices.
    pub traders: Vec<TraderSpec>,
    /// Arbitrageurs looking for profitable cycles.
    pub arbitrageurs: Vec<ArbitrageurSpec>,
    /// The market's timing.
    #[serde(default)]
    pub terms: Terms,
}

/// A constant-product pool and the market maker holding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// The market maker's name.
    pub maker: String,
    /// One token.
    pub token_a: String,
    /// Its reserve, in base units.
    pub reserve_a: u128,
    /// The other token.
    pub token_b: String,
    /// Its reserve.
    pub reserve_b: u128,
    /// The fee, in basis points (30 = 0.3%, Uniswap v2's).
    pub fee_bps: u32,
}

/// A trader: every `every_ms` it swaps a random share (up to `max_share_bps` of the
/// pool's reserve) of one token for the other in a random pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraderSpec {
    /// Its name.
    pub name: String,
    /// What it holds of each token at the start.
    pub funds: u128,
    /// How often it trades, in ms of market time.
    pub every_ms: u64,
    /// The largest trade, in basis points of the pool's input reserve.
    pub max_share_bps: u32,
}

/// An arbitrageur: every `every_ms` it reads every pool, looks for a profitable cycle
/// through `start`, sizes it, and trades it if it still pays once the pools are held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArbitrageurSpec {
    /// Its name.
    pub name: String,
    /// The token it starts and ends cycles in.
    pub start: String,
    /// What it holds of `start` at the start.
    pub funds: u128,
    /// How often it looks, in ms of market time.
    pub every_ms: u64,
}

/// The market's timing, in ms of market time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Terms {
    /// How long traders trade.
    pub trading_ms: u64,
    /// How long the market runs after the traders stop (the arbitrageurs go on).
    pub calm_ms: u64,
    /// How often the spread is sampled for the summary and the plot.
    pub sample_ms: u64,
    /// How long an arbitrageur may hold pools while it trades a cycle.
    pub hold_ms: u64,
    /// The deadline of each swap's escrow, from its lock.
    pub escrow_ms: u64,
}

impl Default for Terms {
    fn default() -> Terms {
        Terms { trading_ms: 120_000, calm_ms: 60_000, sample_ms: 1_000, hold_ms: 5_000, escrow_ms: 15_000 }
    }
}

/// The largest reserve or fund a scenario may give: far below where the pool arithmetic
/// could overflow.
pub const MAX_AMOUNT: u128 = 1 << 96;

impl Scenario {
    /// The built-in market.
    pub fn built_in() -> Result<Scenario, ScenarioError> {
        Scenario::from_json(BUILT_IN)
    }

    /// A market read from a JSON file.
    pub fn load(path: &std::path::Path) -> Result<Scenario, ScenarioError> {
        crate::market::scenario::load(path, Scenario::validate)
    }

    /// A market from JSON text, checked.
    pub fn from_json(text: &str) -> Result<Scenario, ScenarioError> {
        crate::market::scenario::from_json(text, Scenario::validate)
    }

    /// Checks what JSON cannot.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |what: String| Err(ScenarioError::Inconsistent(what));
        let token = |t: &str| self.tokens.iter().any(|known| known == t);
        let mut names = std::collections::BTreeSet::new();
        for pool in &self.pools {
            if !names.insert(pool.maker.as_str()) {
                return bad(format!("two agents are called {:?}", pool.maker));
            }
            if !token(&pool.token_a) || !token(&pool.token_b) || pool.token_a == pool.token_b {
                return bad(format!("pool of {} needs two different listed tokens", pool.maker));
            }
            if pool.reserve_a == 0 || pool.reserve_b == 0 || pool.reserve_a > MAX_AMOUNT || pool.reserve_b > MAX_AMOUNT
            {
                return bad(format!("pool of {} needs reserves between 1 and 2^96", pool.maker));
            }
            if pool.fee_bps >= 10_000 {
                return bad(format!("pool of {} has a fee of 100% or more", pool.maker));
            }
        }
        for trader in &self.traders {
            if !names.insert(trader.name.as_str()) {
                return bad(format!("two agents are called {:?}", trader.name));
            }
            if trader.funds > MAX_AMOUNT || trader.every_ms == 0 || trader.max_share_bps > 10_000 {
                return bad(format!("trader {} needs funds up to 2^96, a period, and a share up to 100%", trader.name));
            }
        }
        for arbitrageur in &self.arbitrageurs {
            if !names.insert(arbitrageur.name.as_str()) {
                return bad(format!("two agents are called {:?}", arbitrageur.name));
            }
            if !token(&arbitrageur.start) || arbitrageur.funds > MAX_AMOUNT || arbitrageur.every_ms == 0 {
                return bad(format!(
                    "arbitrageur {} needs a listed token, funds up to 2^96 and a period",
                    arbitrageur.name
                ));
            }
        }
        if self.terms.sample_ms == 0 {
            return bad("terms.sample_ms must be positive".into());
        }
        Ok(())
    }

    /// What is minted of each token at the start: the pools' reserves, every trader's
    /// funds in every token, and each arbitrageur's funds in its start token.
    pub fn minted(&self) -> std::collections::BTreeMap<String, u128> {
        let mut minted: std::collections::BTreeMap<String, u128> = self.tokens.iter().map(|t| (t.clone(), 0)).collect();
        let mut add = |token: &str, amount: u128| {
            if let Some(total) = minted.get_mut(token) {
                *total = total.saturating_add(amount);
            }
        };
        for pool in &self.pools {
            add(&pool.token_a, pool.reserve_a);
            add(&pool.token_b, pool.reserve_b);
        }
        for trader in &self.traders {
            for token in &self.tokens {
                add(token, trader.funds);
            }
        }
        for arbitrageur in &self.arbitrageurs {
            add(&arbitrageur.start, arbitrageur.funds);
        }
        minted
    }

    /// A market of `tokens` tokens (at most 8), `pools` pools between random pairs (every
    /// token in at least one), `traders` traders and `arbitrageurs` arbitrageurs, drawn
    /// from `seed`. Pools start at the same fair prices, give or take 2%.
    pub fn generate(seed: u64, tokens: usize, pools: usize, traders: usize, arbitrageurs: usize) -> Scenario {
        const NAMES: [&str; 8] = ["USDC", "ETH", "BTC", "DAI", "SOL", "LINK", "UNI", "AAVE"];
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let tokens: Vec<String> = NAMES.iter().take(tokens.clamp(2, NAMES.len())).map(|t| t.to_string()).collect();
        // Fair value of one base unit of each token, in the first token's units.
        let fair: Vec<f64> =
            tokens.iter().enumerate().map(|(i, _)| if i == 0 { 1.0 } else { rng.gen_range(0.2..5.0) }).collect();
        let mut pool_specs = Vec::new();
        for i in 0..pools.max(tokens.len() - 1) {
            // The first pools chain every token to the previous one; the rest are random.
            let (a, b) = match i < tokens.len() - 1 {
                true => (i, i + 1),
                false => {
                    let a = rng.gen_range(0..tokens.len());
                    let b = (a + rng.gen_range(1..tokens.len())) % tokens.len();
                    (a, b)
                }
            };
            let value = rng.gen_range(2_000_000.0..20_000_000.0);
            let noise = |rng: &mut rand::rngs::StdRng| rng.gen_range(0.98..1.02);
            pool_specs.push(PoolSpec {
                maker: format!("maker-{i:02}"),
                token_a: tokens[a].clone(),
                reserve_a: (value / fair[a] * noise(&mut rng)) as u128,
                token_b: tokens[b].clone(),
                reserve_b: (value / fair[b] * noise(&mut rng)) as u128,
                fee_bps: [5, 30, 30, 100][rng.gen_range(0..4)],
            });
        }
        let trader_specs = (0..traders)
            .map(|i| TraderSpec {
                name: format!("trader-{i:03}"),
                funds: 50_000_000,
                every_ms: rng.gen_range(2_000..8_000),
                max_share_bps: 300,
            })
            .collect();
        let arbitrageur_specs = (0..arbitrageurs)
            .map(|i| ArbitrageurSpec {
                name: format!("arbitrageur-{i:02}"),
                start: tokens[i % tokens.len()].clone(),
                funds: 5_000_000,
                every_ms: rng.gen_range(1_000..3_000),
            })
            .collect();
        Scenario {
            tokens,
            pools: pool_specs,
            traders: trader_specs,
            arbitrageurs: arbitrageur_specs,
            terms: Terms::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_market_is_valid_and_generated_ones_repeat_from_their_seed() {
        Scenario::built_in().unwrap();
        assert_eq!(Scenario::generate(3, 4, 6, 5, 2), Scenario::generate(3, 4, 6, 5, 2));
        assert_ne!(Scenario::generate(3, 4, 6, 5, 2), Scenario::generate(4, 4, 6, 5, 2));
        Scenario::generate(3, 8, 20, 50, 8).validate().unwrap();
    }

    #[test]
    fn a_bad_scenario_is_a_clear_error() {
        let text = r#"{"tokens": ["A"], "pools": [{"maker": "m", "token_a": "A", "reserve_a": 1,
            "token_b": "B", "reserve_b": 1, "fee_bps": 30}], "traders": [], "arbitrageurs": []}"#;
        let error = Scenario::from_json(text).unwrap_err().to_string();
        assert!(error.contains("two different listed tokens"), "{error}");
        assert!(Scenario::from_json("[]").unwrap_err().to_string().contains("not valid"));
    }
}
