//! The end of a DeFi market: every arbitrage (cycle, input, predicted and realised
//! profit), the pools' final reserves, the spread over time, and the invariants, checked
//! against the makers' books and the token ledgers.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::Ledger;
use agent_core::Address;
use serde::Serialize;

use super::arbitrageur::Arbitrage;
use super::maker::MakerBooks;
use super::trader::TraderLog;
use crate::market::{Invariants, Table};

/// How a DeFi market ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Every arbitrage, in the order they began.
    pub arbitrages: Vec<Arbitrage>,
    /// Each maker's pool, at the start and the end.
    pub pools: Vec<MakerBooks>,
    /// What each trader did.
    pub traders: Vec<(String, TraderLog)>,
    /// The best cycle's spread (a fraction; negative when fees outweigh it) over market
    /// time in seconds.
    pub spread: Vec<(f64, f64)>,
    /// Market time the run took, in ms.
    pub market_time_ms: u64,
    /// The invariants, checked.
    pub invariants: Invariants,
}

/// Every market agent's wallet (the same address on every token's ledger).
pub(super) fn wallets(scenario: &super::Scenario) -> Vec<Address> {
    let makers = scenario.pools.iter().map(|p| p.maker.as_str());
    let traders = scenario.traders.iter().map(|t| t.name.as_str());
    let arbitrageurs = scenario.arbitrageurs.iter().map(|a| a.name.as_str());
    makers
        .chain(traders)
        .chain(arbitrageurs)
        .map(|name| agent_core::Identity::from_seed(&super::maker::seed_of(name)).derive("wallet").address())
        .collect()
}

/// Each arbitrageur's start token and funds: where "spreads converge" looks for a gap.
pub(super) fn starts(scenario: &super::Scenario) -> Vec<(String, u128)> {
    scenario.arbitrageurs.iter().map(|a| (a.start.clone(), a.funds)).collect()
}

/// Checks the market's invariants and sums it up.
#[allow(clippy::too_many_arguments)]
pub(super) async fn check(
    ledgers: &BTreeMap<String, Arc<dyn Ledger>>,
    minted: &BTreeMap<String, u128>,
    pools: Vec<MakerBooks>,
    traders: Vec<(String, TraderLog)>,
    mut arbitrages: Vec<Arbitrage>,
    agents: &[Address],
    starts: &[(String, u128)],
    spread: Vec<(f64, f64)>,
    market_time: Duration,
) -> Summary {
    arbitrages.sort_by(|a, b| (a.at_ms, &a.arbitrageur).cmp(&(b.at_ms, &b.arbitrageur)));
    let mut invariants = Invariants::default();

    let mut k_violations = Vec::new();
    for pool in &pools {
        k_violations.extend(pool.k_decreases.iter().map(|v| format!("{}: {v}", pool.maker)));
        let k = |r: &super::Reserves| super::amm::U256::mul(r.reserve_a, r.reserve_b);
        if k(&pool.pool) < k(&pool.initial) {
            k_violations.push(format!("{}: k ended below where it began", pool.maker));
        }
    }
    let swaps: u64 = pools.iter().map(|p| p.swaps).sum();
    invariants.check("each pool's k never decreases", format!("{swaps} swaps in {} pools", pools.len()), k_violations);

    let mut conservation = Vec::new();
    for (token, ledger) in ledgers {
        let minted = minted.get(token).copied().unwrap_or(0);
        let mut held = 0u128;
        for agent in agents {
            held += ledger.balance(*agent).await.unwrap_or(0);
        }
        if held != minted {
            conservation.push(format!("{token}: {minted} minted, {held} in wallets"));
        }
    }
    invariants.check(
        "tokens conserved (pools plus agents)",
        format!("{} tokens, {} wallets", ledgers.len(), agents.len()),
        conservation,
    );

    let mut accounting = Vec::new();
    for pool in &pools {
        for (token, reserve) in [(&pool.pool.token_a, pool.pool.reserve_a), (&pool.pool.token_b, pool.pool.reserve_b)] {
            let on_ledger = match ledgers.get(token) {
                Some(ledger) => ledger.balance(pool.wallet).await.unwrap_or(0),
                None => 0,
            };
            if on_ledger != reserve {
                accounting
                    .push(format!("{}: reserve of {token} is {reserve}, the ledger holds {on_ledger}", pool.maker));
            }
        }
    }
    invariants.check(
        "every pool's reserves are what its maker holds on the ledgers (every swap paid both ways)",
        format!("{} pools", pools.len()),
        accounting,
    );

    let completed: Vec<&Arbitrage> = arbitrages.iter().filter(|a| a.completed.is_ok()).collect();
    let mismatched = completed
        .iter()
        .filter(|a| a.realised_profit != a.predicted_profit as i128)
        .map(|a| {
            format!(
                "{} at {} ms: predicted {}, realised {}",
                a.arbitrageur, a.at_ms, a.predicted_profit, a.realised_profit
            )
        })
        .collect();
    invariants.check("realised profit equals predicted", format!("{} arbitrages traded", completed.len()), mismatched);
    let losses = completed
        .iter()
        .filter(|a| a.realised_profit <= 0)
        .map(|a| format!("{} at {} ms: {}", a.arbitrageur, a.at_ms, a.realised_profit))
        .collect();
    invariants.check("no arbitrage executed at a loss", format!("{} arbitrages traded", completed.len()), losses);

    // Converged: on the final reserves no arbitrageur could trade a cycle at an integer
    // profit any more (the spread left is what rounding to base units eats), and the best
    // cycle's spread ended below its peak.
    let peak = spread.iter().map(|(_, s)| *s).fold(f64::MIN, f64::max);
    let last = spread.last().map_or(0.0, |(_, s)| *s);
    let final_pools: Vec<super::amm::Pool> = pools.iter().filter_map(|p| p.pool.pool()).collect();
    let mut open_gaps: Vec<String> = starts
        .iter()
        .filter_map(|(token, funds)| {
            let found = super::arbitrage::find_opportunity(&final_pools, &super::amm::Token::new(token), *funds)?;
            Some(format!("a cycle through {token} still pays {} on {}", found.predicted_profit, found.input))
        })
        .collect();
    if last >= peak && peak > 0.0 {
        open_gaps.push(format!("the best cycle pays {:.3}% at the end, as much as at its peak", last * 100.0));
    }
    invariants.check(
        "spreads converge",
        format!(
            "best cycle {:.3}% at the peak, {:.3}% at the end; no integer arbitrage left through {} start tokens",
            peak * 100.0,
            last * 100.0,
            starts.len()
        ),
        open_gaps,
    );
    Summary { arbitrages, pools, traders, spread, market_time_ms: market_time.as_millis() as u64, invariants }
}

impl Summary {
    /// The arbitrages traded to the end.
    pub fn traded(&self) -> usize {
        self.arbitrages.iter().filter(|a| a.completed.is_ok()).count()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 30;
        let mut arbitrages =
            Table::new(["time (s)", "arbitrageur", "cycle", "input", "predicted", "realised", "outcome"]);
        for a in self.arbitrages.iter().take(SHOWN) {
            let outcome = match &a.completed {
                Ok(()) => "traded".to_owned(),
                Err(why) => why.clone(),
            };
            arbitrages.row([
                format!("{:.1}", a.at_ms as f64 / 1000.0),
                a.arbitrageur.clone(),
                a.cycle.join(">"),
                a.input.to_string(),
                a.predicted_profit.to_string(),
                a.realised_profit.to_string(),
                outcome,
            ]);
        }
        writeln!(f, "Arbitrages ({} traded of {} tried)", self.traded(), self.arbitrages.len())?;
        write!(f, "{arbitrages}")?;
        if self.arbitrages.len() > SHOWN {
            writeln!(f, "... and {} more (--json lists all)", self.arbitrages.len() - SHOWN)?;
        }
        let mut pools = Table::new(["maker", "pair", "fee bps", "start", "end", "swaps"]);
        for p in &self.pools {
            pools.row([
                p.maker.clone(),
                format!("{}/{}", p.pool.token_a, p.pool.token_b),
                p.pool.fee_bps.to_string(),
                format!("{} / {}", p.initial.reserve_a, p.initial.reserve_b),
                format!("{} / {}", p.pool.reserve_a, p.pool.reserve_b),
                p.swaps.to_string(),
            ]);
        }
        writeln!(f, "\nPools (reserves)")?;
        write!(f, "{pools}")?;
        let mut traders = Table::new(["trader", "swaps", "refused or failed"]);
        for (name, log) in &self.traders {
            traders.row([name.clone(), log.swaps.to_string(), (log.failed + log.unreleased).to_string()]);
        }
        writeln!(f, "\nTraders")?;
        write!(f, "{traders}")?;
        writeln!(f, "\nInvariants (market time {:.1} s)", self.market_time_ms as f64 / 1000.0)?;
        write!(f, "{}", self.invariants.table())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defi::Reserves;
    use agent_core::ledger::MemoryLedger;

    fn reserves(a: u128, b: u128, wallet: Address) -> Reserves {
        Reserves { token_a: "A".into(), reserve_a: a, token_b: "B".into(), reserve_b: b, fee_bps: 30, wallet }
    }

    #[tokio::test]
    async fn each_broken_invariant_is_reported() {
        let wallet = agent_core::Identity::from_seed("maker").address();
        let mint = agent_core::Identity::from_seed("mint");
        let mut ledgers = BTreeMap::new();
        for token in ["A", "B"] {
            let ledger: Arc<dyn Ledger> =
                Arc::new(MemoryLedger::new(Some(mint.address()), agent_core::envelope::unix_now_ms));
            let faucet = agent_core::Wallet::new(mint.clone(), ledger.clone());
            faucet.mint(wallet, 1_000).await.unwrap();
            // Minted to nobody the market knows: not conserved among its agents.
            faucet.mint(agent_core::Identity::from_seed("stranger").address(), 5).await.unwrap();
            ledgers.insert(token.to_owned(), ledger);
        }
        let pool = MakerBooks {
            maker: "m".into(),
            wallet,
            // k went from 1,000,000 to 990,000, and the reserves are not what the ledger holds.
            pool: reserves(900, 1_100, wallet),
            initial: reserves(1_000, 1_000, wallet),
            swaps: 1,
            k_decreases: vec!["swap 1".into()],
        };
        let arbitrage = |predicted: u128, realised: i128| Arbitrage {
            arbitrageur: "x".into(),
            at_ms: 0,
            cycle: vec!["A".into(), "B".into(), "A".into()],
            pools: vec![0, 0],
            input: 10,
            predicted_profit: predicted,
            realised_profit: realised,
            completed: Ok(()),
        };
        let spread = vec![(0.0, 0.02), (1.0, 0.05)];
        let minted = [("A".to_owned(), 1_005), ("B".to_owned(), 1_005)].into();
        let summary = check(
            &ledgers,
            &minted,
            vec![pool],
            Vec::new(),
            vec![arbitrage(5, 4), arbitrage(3, -2)],
            &[wallet],
            &[("A".to_owned(), 1_000)],
            spread,
            Duration::ZERO,
        )
        .await;
        let broken: Vec<&str> = summary.invariants.broken().iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            broken,
            [
                "each pool's k never decreases",
                "tokens conserved (pools plus agents)",
                "every pool's reserves are what its maker holds on the ledgers (every swap paid both ways)",
                "realised profit equals predicted",
                "no arbitrage executed at a loss",
                "spreads converge",
            ]
        );
    }
}
