//! The initiator cancels an award while its winner performs it ([`contract_net::cancel`]):
//! the winner finishes the work in hand (a perform is not interrupted halfway), reports
//! nothing and refunds the escrow at once, long before its deadline; the award gives
//! [`AwardFailure::Cancelled`] for it, and every balance is as before the award.

use std::time::Duration;

use agent_core::sim::{Link, Sim};
use agent_core::Agent;
use agent_protocols::contract_net::{self, AwardFailure, Outcome, Paid};

mod common;

use common::cnp::{balance, paid_market, wait_for, SlowSeller};

const PERFORM: Duration = Duration::from_secs(2);

#[tokio::test]
async fn an_award_in_progress_is_cancelled_stopped_and_refunded() {
    let (m, ledger) = paid_market(1_000).await;
    let seller = SlowSeller::new(PERFORM, true);
    let mut agent = Agent::builder("slow seller").build().unwrap();
    contract_net::serve(&mut agent, seller.clone());
    let winner = m.bureau.add(agent).unwrap();
    let ctx = m.bureau.context(m.initiator).unwrap();
    let called =
        contract_net::call::<_, u64>(&ctx, &m.book, &[winner], &"LHR-JFK", Duration::from_secs(1)).await.unwrap();
    assert_eq!(called.proposals.len(), 1);
    let awarding = {
        let (ctx, book, called) = (ctx.clone(), m.book.clone(), called.clone());
        tokio::spawn(async move {
            let price = |p: &u64| u128::from(*p);
            contract_net::award_and_pay::<u64, String>(&ctx, &book, &called, &[winner], price, Duration::from_secs(30))
                .await
        })
    };
    wait_for(|| *seller.started.lock() == 1).await;
    assert_eq!(balance(&m, &ledger, m.initiator).await, 900, "the price is locked while the winner works");

    let outcome = contract_net::cancel::<u64, String>(&ctx, &m.book, &called, Some("trip called off")).await.unwrap();
    assert_eq!(outcome, Outcome::Cancelled { cancelled: vec![winner] }, "the winner at work is told");
    // When the work in hand ends: far sooner than the 30 s the award would wait for a report.
    let paid = tokio::time::timeout(Duration::from_secs(5), awarding).await.expect("the award ends").unwrap().unwrap();
    let Paid::Settled(settlements) = paid else { panic!("{paid:?}") };
    assert_eq!(settlements.len(), 1);
    assert_eq!(settlements[0].result, Err(AwardFailure::Cancelled), "{settlements:?}");
    assert!(!settlements[0].paid, "{settlements:?}");
    assert_eq!(*seller.performed.lock(), 1, "the work in hand was not interrupted");
    assert_eq!(*seller.released.lock(), 0, "what it held went into the work");
    assert_eq!(balance(&m, &ledger, m.initiator).await, 1_000, "refunded at once, 30 s before the deadline");
    assert_eq!(balance(&m, &ledger, winner).await, 0);
    assert!(ctx.wallet().unwrap().open_escrows(10).await.unwrap().is_empty(), "nothing locked");
    assert_eq!(ledger.audit_total().unwrap(), 1_000);
    m.bureau.shutdown().await.unwrap();
}

/// The winner's report of done and the initiator's cancel cross on the way (each side
/// sent its message before the other's came): the winner did the work before it heard of
/// the cancel, so the award's result is the report, and the dialogue's refusal of a late
/// report is not taken for a failure. On a network with 200 ms of latency each way.
#[tokio::test(start_paused = true)]
async fn a_report_that_crossed_the_cancel_stands() {
    let sim = Sim::new(31);
    sim.set_default_link(Link::with_latency(Duration::from_millis(200)));
    let (office, shop) = (sim.add_host("office").unwrap(), sim.add_host("shop").unwrap());
    let seller = SlowSeller::new(PERFORM, false);
    let mut agent = Agent::builder("slow seller").seed("slow seller").build().unwrap();
    contract_net::serve(&mut agent, seller.clone());
    let winner = shop.add(agent).unwrap();
    let mut traveller = Agent::builder("traveller").seed("traveller").build().unwrap();
    let book = contract_net::initiator(&mut traveller);
    let ctx = office.context(office.add(traveller).unwrap()).unwrap();
    let called =
        contract_net::call::<_, u64>(&ctx, &book, &[winner], &"LHR-JFK", Duration::from_secs(1)).await.unwrap();
    let awarding = {
        let (ctx, book, called) = (ctx.clone(), book.clone(), called.clone());
        tokio::spawn(async move {
            contract_net::award::<u64, String>(&ctx, &book, &called, &[winner], Duration::from_secs(30)).await
        })
    };
    // The award reaches the winner 200 ms after it leaves; its work ends, and its report
    // leaves, `PERFORM` later. The cancel leaves 100 ms before that, and reaches the
    // winner 100 ms after the report left it.
    tokio::time::sleep(PERFORM + Duration::from_millis(100)).await;
    assert_eq!(*seller.started.lock(), 1, "the winner is at work");
    let outcome = contract_net::cancel::<u64, String>(&ctx, &book, &called, None).await.unwrap();
    assert_eq!(outcome, Outcome::Cancelled { cancelled: vec![winner] });
    let awarded = tokio::time::timeout(Duration::from_secs(5), awarding).await.expect("the award ends").unwrap();
    assert_eq!(awarded.unwrap(), Outcome::Awarded(vec![(winner, Ok("booked at 100".into()))]));
    assert_eq!((*seller.performed.lock(), *seller.released.lock()), (1, 0), "done once, nothing released");
    sim.shutdown().await;
}
