//! The energy market under the simulation kit: every invariant holds on the built-in
//! market over a whole day, on a large generated one (500 households from 09:00 to
//! 15:00), with 5% of messages lost and the ledger down in the middle, and the
//! same seed gives the same market twice; a broken invariant is reported.

use std::time::Duration;

use agent_examples::grid::{check, run, Options, Scenario, Summary};

fn run_sim(scenario: &Scenario, seed: u64, options: Options) -> Summary {
    let summary = agent_examples::market::simulated_runtime().unwrap().block_on(run(scenario, seed, &options)).unwrap();
    assert!(summary.invariants.all_hold(), "seed {seed}:\n{}", summary.invariants.table());
    summary
}

/// Intervals from 10:00 to 14:00, when the sun is up and households trade.
fn midday(intervals: usize) -> Options {
    Options { first: 40, intervals, ..Options::default() }
}

#[test]
fn the_built_in_market_trades_through_the_day_and_the_operator_covers_the_rest() {
    let scenario = Scenario::built_in().unwrap();
    let summary = run_sim(&scenario, 1, Options::default());
    assert_eq!(summary.intervals.len(), 96);
    let (tariff, feed_in) = (u128::from(scenario.operator.tariff), u128::from(scenario.operator.feed_in));
    let prices: Vec<u128> = summary.intervals.iter().filter_map(|i| i.price).collect();
    assert!(prices.len() > 20, "{summary}");
    assert!(prices.iter().all(|p| (feed_in..=tariff).contains(p)), "{prices:?}");
    // Nothing to trade at night: the grid supplies all of it.
    let night = &summary.intervals[8];
    assert_eq!((night.price, night.traded_wh), (None, 0), "{night:?}");
    assert!(night.supplied_wh > 0);
    let battery = summary.battery.as_ref().unwrap();
    assert!(battery.bought_wh > 0 && battery.sold_wh > 0, "{battery:?}");
    assert!(summary.operator.received > 0 && summary.operator.paid > 0, "{:?}", summary.operator);
    let trades: usize = summary.intervals.iter().map(|i| i.trades).sum();
    let paid: usize = summary.intervals.iter().map(|i| i.trades_paid).sum();
    assert_eq!(paid, trades, "every trade paid");
}

#[test]
fn a_large_market_keeps_every_invariant() {
    let scenario = Scenario::generate(11, 500);
    // 09:00 to 15:00: the hours that trade (a whole day takes about 40 s in a debug build).
    let summary = run_sim(&scenario, 11, Options { first: 36, intervals: 24, ..Options::default() });
    assert_eq!(summary.intervals.len(), 24);
    assert!(summary.traded_wh() > 200_000, "{} Wh traded", summary.traded_wh());
    let sellers = summary.households.iter().filter(|h| h.sold_wh > 0).count();
    let buyers = summary.households.iter().filter(|h| h.bought_wh > 0).count();
    assert!(sellers > 100 && buyers > 20, "{sellers} sellers, {buyers} buyers");
}

#[test]
fn lost_messages_and_a_ledger_outage_break_no_invariant() {
    let mut scenario = Scenario::generate(5, 60);
    scenario.terms.bill_every = 4;
    // Three minutes without the ledger, in the middle of four hours, from the moment the
    // 11:45 round opens and the 11:00-12:00 bills go out: that round's trades are refunded,
    // and the bills are paid after it.
    let options = Options {
        loss: 0.05,
        ledger_outage: Some((Duration::from_secs(6_300), Duration::from_secs(6_480))),
        ..midday(16)
    };
    let summary = run_sim(&scenario, 5, options);
    let trades: usize = summary.intervals.iter().map(|i| i.trades).sum();
    let paid: usize = summary.intervals.iter().map(|i| i.trades_paid).sum();
    assert!(paid > 0 && trades > paid, "{paid} of {trades} trades paid: the outage refunds some");
}

#[test]
fn the_same_seed_gives_the_same_market_twice_and_another_seed_another() {
    let options = || Options { loss: 0.02, ..midday(8) };
    let scenario = Scenario::generate(8, 30);
    let first = serde_json::to_string(&run_sim(&scenario, 8, options())).unwrap();
    let second = serde_json::to_string(&run_sim(&scenario, 8, options())).unwrap();
    assert_eq!(first, second);
    let other = serde_json::to_string(&run_sim(&Scenario::generate(9, 30), 9, options())).unwrap();
    assert_ne!(first, other);
}

#[test]
fn a_broken_invariant_is_reported() {
    // The books of a small market, run for real, then tampered with.
    let scenario = Scenario::generate(2, 8);
    let options = midday(4);
    let books = agent_examples::market::simulated_runtime()
        .unwrap()
        .block_on(agent_examples::grid::run_books(&scenario, 2, &options))
        .unwrap();
    assert!(check(&books).all_hold(), "{}", check(&books).table());
    let broken = |books: &agent_examples::grid::Books| -> Vec<String> {
        check(books).broken().iter().map(|i| i.name.clone()).collect()
    };

    let mut unbalanced = books.clone();
    let traded = unbalanced.intervals.iter_mut().find(|i| !i.trades.is_empty()).expect("something traded");
    traded.trades[0].quantity += 1;
    assert!(
        broken(&unbalanced).iter().any(|n| n.starts_with("traded energy per interval balanced")),
        "{:?}",
        broken(&unbalanced)
    );

    let mut dear = books.clone();
    let interval = dear.intervals.iter_mut().find(|i| !i.trades.is_empty()).expect("something traded");
    interval.trades[0].price = u128::from(scenario.operator.tariff) + 1;
    let names = broken(&dear);
    assert!(names.iter().any(|n| n == "no buyer above its bid"), "{names:?}");

    let mut cheap = books.clone();
    let interval = cheap.intervals.iter_mut().find(|i| !i.trades.is_empty()).expect("something traded");
    interval.trades[0].price = 0;
    assert!(broken(&cheap).iter().any(|n| n == "no seller below its ask"));

    let mut minted = books.clone();
    minted.minted += 1;
    assert_eq!(broken(&minted), ["money conserved (sum of wallets = minted)"]);

    let mut overbilled = books.clone();
    overbilled.households[0].supplied[40] += 5;
    assert!(broken(&overbilled).iter().any(|n| n.starts_with("the operator covers unmatched demand")));

    let mut open = books.clone();
    open.accounts[0].open_escrows = 1;
    assert_eq!(broken(&open), ["every escrow settled at the end"]);
}
