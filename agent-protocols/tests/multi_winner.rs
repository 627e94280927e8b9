//! Contract-net with two winners: the initiator "accepts one or more proposals". Both
//! winners perform and are reported in the outcome, the proposal not chosen is rejected and
//! its hold released, and, paid through escrow, each winner is paid its own price once,
//! with every balance checked on the ledger.

use std::time::Duration;

use agent_core::ledger::Ledger;
use agent_core::Address;
use agent_protocols::contract_net::{self, Outcome, Paid};

mod common;

use common::cnp::{add_seller, balance, market, paid_market, wait_for, Seller};

/// The two cheapest proposals win.
fn two_cheapest(called: &contract_net::Called<u64>) -> Vec<Address> {
    let mut proposals: Vec<_> = called.proposals.iter().collect();
    proposals.sort_by_key(|p| p.proposal);
    proposals.iter().take(2).map(|p| p.from).collect()
}

#[tokio::test]
async fn two_winners_both_perform_and_are_reported_and_the_third_is_released() {
    let m = market().await;
    let sellers = [Seller::new(120), Seller::new(90), Seller::new(150)];
    let addresses: Vec<Address> =
        sellers.iter().enumerate().map(|(i, s)| add_seller(&m, &format!("seller {i}"), s.clone())).collect();
    let ctx = m.bureau.context(m.initiator).unwrap();
    let called =
        contract_net::call::<_, u64>(&ctx, &m.book, &addresses, &"LHR-JFK", Duration::from_secs(2)).await.unwrap();
    assert_eq!(called.proposals.len(), 3, "{called:?}");
    let winners = two_cheapest(&called);
    assert_eq!(winners.len(), 2);

    let outcome =
        contract_net::award::<u64, String>(&ctx, &m.book, &called, &winners, Duration::from_secs(2)).await.unwrap();
    let Outcome::Awarded(mut won) = outcome else { panic!("{outcome:?}") };
    won.sort_by_key(|(who, _)| *who);
    let mut expected =
        vec![(addresses[0], Ok("booked at 120".to_string())), (addresses[1], Ok("booked at 90".to_string()))];
    expected.sort_by_key(|(who, _)| *who);
    assert_eq!(won, expected, "both winners performed and are reported");

    wait_for(|| *sellers[2].released.lock() == 1).await;
    assert_eq!((*sellers[0].released.lock(), *sellers[1].released.lock()), (0, 0), "the winners keep their seats");
    let mut states: Vec<String> = m.book.dialogues().unwrap().all().iter().map(|d| d.state.to_string()).collect();
    states.sort();
    assert_eq!(states, ["done", "done", "rejected"]);
    m.bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn two_paid_winners_are_each_paid_their_price_once_and_the_third_nothing() {
    let (m, ledger) = paid_market(1_000).await;
    let sellers = [Seller::priced(120), Seller::priced(90), Seller::priced(150)];
    let addresses: Vec<Address> =
        sellers.iter().enumerate().map(|(i, s)| add_seller(&m, &format!("seller {i}"), s.clone())).collect();
    let ctx = m.bureau.context(m.initiator).unwrap();
    let called =
        contract_net::call::<_, u64>(&ctx, &m.book, &addresses, &"LHR-JFK", Duration::from_secs(2)).await.unwrap();
    let winners = two_cheapest(&called);

    let paid = contract_net::award_and_pay::<u64, String>(
        &ctx,
        &m.book,
        &called,
        &winners,
        |p| u128::from(*p),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    let Paid::Settled(mut settled) = paid else { panic!("{paid:?}") };
    settled.sort_by_key(|s| s.winner);
    let got: Vec<_> = settled.iter().map(|s| (s.winner, s.result.clone(), s.paid, s.escrow.is_some())).collect();
    let mut expected = vec![
        (addresses[0], Ok("booked at 120".to_string()), true, true),
        (addresses[1], Ok("booked at 90".to_string()), true, true),
    ];
    expected.sort_by_key(|(who, ..)| *who);
    assert_eq!(got, expected, "each winner performed and was paid: {settled:?}");
    assert_ne!(settled[0].escrow, settled[1].escrow, "an escrow of its own each");

    wait_for(|| *sellers[2].released.lock() == 1).await;
    assert_eq!(balance(&m, &ledger, m.initiator).await, 1_000 - 120 - 90, "both prices paid, once");
    assert_eq!(balance(&m, &ledger, addresses[0]).await, 120);
    assert_eq!(balance(&m, &ledger, addresses[1]).await, 90);
    assert_eq!(balance(&m, &ledger, addresses[2]).await, 0, "the rejected seller is paid nothing");
    for escrow in settled.iter().filter_map(|s| s.escrow) {
        assert_eq!(ledger.escrow(escrow).await.unwrap(), None, "settled");
    }
    assert_eq!(ledger.audit_total().unwrap(), 1_000);
    m.bureau.shutdown().await.unwrap();
}
