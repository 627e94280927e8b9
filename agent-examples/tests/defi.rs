//! The DeFi market under the simulation kit: every invariant holds on the built-in market
//! and a large generated one, with lost messages and the ledgers down in the middle, and
//! the same seed gives the same market twice. (That a broken invariant is reported is
//! tested next to the checks, in `src/defi/summary.rs`.)

use std::time::Duration;

use agent_examples::defi::{run, Options, Scenario, Summary};

fn run_sim(scenario: &Scenario, seed: u64, options: Options) -> Summary {
    agent_examples::market::simulated_runtime().unwrap().block_on(run(scenario, seed, &options)).unwrap()
}

fn assert_holds(summary: &Summary, seed: u64) {
    assert!(summary.invariants.all_hold(), "seed {seed}:\n{}", summary.invariants.table());
}

#[test]
fn the_built_in_market_trades_arbitrages_at_exactly_their_predicted_profit() {
    let summary = run_sim(&Scenario::built_in().unwrap(), 1, Options::default());
    assert_holds(&summary, 1);
    assert!(summary.traded() >= 10, "{summary}");
    // The built-in pools start 2% apart on the USDC>ETH>BTC>USDC cycle: the first
    // arbitrage trades it before any trader has moved a price.
    let first = &summary.arbitrages[0];
    assert!(first.cycle.len() >= 3 && first.realised_profit > 0, "{first:?}");
    let peak = summary.spread.iter().map(|(_, s)| *s).fold(f64::MIN, f64::max);
    assert!(peak > 0.01, "traders open spreads above 1%: {peak}");
}

#[test]
fn a_large_market_keeps_every_invariant() {
    let mut scenario = Scenario::generate(21, 8, 20, 40, 8);
    scenario.terms.trading_ms = 60_000;
    let summary = run_sim(&scenario, 21, Options::default());
    assert_holds(&summary, 21);
    assert!(summary.traded() >= 20, "{} arbitrages traded", summary.traded());
}

#[test]
fn lost_messages_and_a_ledger_outage_break_no_invariant() {
    let mut scenario = Scenario::built_in().unwrap();
    scenario.terms.trading_ms = 60_000;
    // Lost holds and swaps slow the arbitrageurs down: they get longer to close the gaps.
    scenario.terms.calm_ms = 180_000;
    let options = Options {
        loss: 0.05,
        ledger_outage: Some((Duration::from_secs(20), Duration::from_secs(26))),
        ..Options::default()
    };
    let summary = run_sim(&scenario, 4, options);
    assert_holds(&summary, 4);
    let during = summary.arbitrages.iter().filter(|a| (20_000..26_000).contains(&a.at_ms)).count();
    let after = summary.arbitrages.iter().filter(|a| a.at_ms > 26_000 && a.completed.is_ok()).count();
    assert!(after > 0, "arbitrage resumes after the outage ({during} tried during it)");
}

#[test]
fn the_same_seed_gives_the_same_market_twice_and_another_seed_another() {
    let mut scenario = Scenario::generate(6, 4, 6, 8, 2);
    scenario.terms.trading_ms = 30_000;
    scenario.terms.calm_ms = 20_000;
    let options = || Options { loss: 0.02, ..Options::default() };
    let first = serde_json::to_string(&run_sim(&scenario, 6, options())).unwrap();
    let second = serde_json::to_string(&run_sim(&scenario, 6, options())).unwrap();
    assert_eq!(first, second);
    let other = serde_json::to_string(&run_sim(&scenario, 7, options())).unwrap();
    assert_ne!(first, other);
}
