//! A cancelled award and a crash (simulated hosts, paused time, balances checked on the
//! ledger): the escrow comes back exactly once and the winner's award ends once, whether
//! the winner or the initiator crashes, and whether the cancel was committed before the
//! crash or lost with it.

use std::sync::Arc;
use std::time::Duration;

use agent_protocols::contract_net::{self, AwardFailure, Outcome, Paid, Settlement};

mod common;

use common::cnp::SlowSeller;
use common::crash::{add_seller, add_traveller, market, Market, FUNDS, PRICE, SECOND};

const PERFORM: Duration = Duration::from_secs(10);
/// How long the initiator waits for the report: its escrow is refundable after 21 s.
const REPORT_WITHIN: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(10);

/// The winner records the initiator's cancel of its award in progress, has it committed,
/// and crashes before its work ends. Restarted, it finds the award it had in hand though
/// the dialogue is closed: it releases the proposal once and refunds the escrow at once,
/// long before its deadline; the cancel stands.
#[tokio::test(start_paused = true)]
async fn a_winner_that_crashed_after_committing_a_cancel_releases_and_refunds_once() {
    winner_crashes_after_a_cancel(41, true).await;
}

/// The same, the cancel lost with the crash (never committed): restarted, the winner finds
/// the award still in hand, records it as failed, releases the proposal once and refunds.
#[tokio::test(start_paused = true)]
async fn a_winner_that_crashed_before_committing_a_cancel_releases_and_refunds_once() {
    winner_crashes_after_a_cancel(42, false).await;
}

async fn winner_crashes_after_a_cancel(seed: u64, committed: bool) {
    let (m, crashed) = market(seed, PERFORM).await;
    let called = m.call().await;
    let dialogue = called.proposals[0].dialogue;
    let awarding = m.award(called.clone(), REPORT_WITHIN);
    assert!(m.sim.wait_until(5 * SECOND, POLL, || *crashed.started.lock() == 1).await);
    assert_eq!(m.balances().await, [FUNDS - PRICE, 0], "the price is locked");

    let cancelled = contract_net::cancel::<u64, String>(&m.ctx, &m.book, &called, None).await.unwrap();
    assert_eq!(cancelled, Outcome::Cancelled { cancelled: vec![m.proposer] });
    let cancel_arrived = || Market::state(&m.seller_book, dialogue).as_deref() == Some("cancelled");
    assert!(m.sim.wait_until(5 * SECOND, POLL, cancel_arrived).await, "the winner took the cancel");
    if committed {
        m.shop.context(m.proposer).unwrap().storage().unwrap().flush().await.unwrap();
    }
    m.sim.crash(&m.shop);
    m.sim.restart(&m.shop).unwrap();
    let restarted = SlowSeller::new(PERFORM, true);
    let (_, book) = add_seller(&m.shop, &restarted);

    assert!(
        m.sim.wait_until(5 * SECOND, POLL, || *restarted.released.lock() == 1).await,
        "the restarted winner released the proposal of the award cut short"
    );
    // Refunded by the winner, the escrow's arbiter, well before its deadline.
    m.settles(FUNDS, 0).await;
    assert!(m.sim.elapsed() < 10 * SECOND, "refunded at {:?}", m.sim.elapsed());
    let ended = if committed { "cancelled" } else { "failed" };
    assert_eq!(Market::state(&book, dialogue).as_deref(), Some(ended));

    let paid = tokio::time::timeout(30 * SECOND, awarding).await.expect("the award ends").unwrap().unwrap();
    let Paid::Settled(settled) = paid else { panic!("{paid:?}") };
    let [Settlement { result: Err(AwardFailure::Cancelled), paid: false, .. }] = settled.as_slice() else {
        panic!("a cancelled award is neither reported nor paid: {settled:?}")
    };
    // Past every deadline: nothing more moves, nothing is released again.
    tokio::time::sleep(30 * SECOND).await;
    assert_eq!(
        (*crashed.performed.lock(), *crashed.released.lock()),
        (0, 0),
        "the crashed agent acted after its crash"
    );
    assert_eq!((*restarted.started.lock(), *restarted.released.lock()), (0, 1), "performed again, or released twice");
    assert_eq!(Arc::strong_count(&crashed), 1, "a task of the crashed agent still runs");
    m.settles(FUNDS, 0).await;
    m.sim.shutdown().await;
}

/// The initiator cancels its award while the winner works, has the cancel committed, and
/// crashes. The winner honours the cancel: its work ends, nothing is reported, and it
/// refunds the escrow at once, though the initiator is down. The restarted initiator's
/// refund of its recorded escrow finds it settled: refunded once.
#[tokio::test(start_paused = true)]
async fn an_initiator_that_crashed_after_committing_a_cancel_is_refunded_once() {
    initiator_crashes_after_a_cancel(43, true).await;
}

/// The same, the cancel lost with the initiator's crash (never committed): the winner heard
/// it all the same, and the money comes back once.
#[tokio::test(start_paused = true)]
async fn an_initiator_that_crashed_before_committing_a_cancel_is_refunded_once() {
    initiator_crashes_after_a_cancel(44, false).await;
}

async fn initiator_crashes_after_a_cancel(seed: u64, committed: bool) {
    let (m, seller) = market(seed, PERFORM).await;
    let called = m.call().await;
    let dialogue = called.proposals[0].dialogue;
    m.award_from_the_traveller(called.clone(), true, REPORT_WITHIN);
    assert!(m.sim.wait_until(5 * SECOND, POLL, || *seller.started.lock() == 1).await);
    assert_eq!(m.balances().await, [FUNDS - PRICE, 0], "the price is locked");
    let cancelled = contract_net::cancel::<u64, String>(&m.ctx, &m.book, &called, None).await.unwrap();
    assert_eq!(cancelled, Outcome::Cancelled { cancelled: vec![m.proposer] });
    if committed {
        m.ctx.storage().unwrap().flush().await.unwrap();
    }
    m.sim.crash(&m.office);

    // The winner's work ends (10 s), and it refunds at once, not at the deadline (21 s).
    assert!(m.sim.wait_until(15 * SECOND, POLL, || *seller.performed.lock() == 1).await, "the work in hand ended");
    m.settles(FUNDS, 0).await;
    assert!(m.sim.elapsed() < 15 * SECOND, "refunded at {:?}", m.sim.elapsed());
    assert_eq!(Market::state(&m.seller_book, dialogue).as_deref(), Some("cancelled"));

    m.sim.restart(&m.office).unwrap();
    let (traveller, book) = add_traveller(&m.office);
    assert_eq!(traveller, m.traveller);
    // The restarted initiator refunds what it recorded once the deadline passes: settled.
    tokio::time::sleep(30 * SECOND).await;
    // Uncommitted, the cancel's step was lost: the record shows the award, on disk before it
    // went out (as its escrow was).
    let state = Market::state(&book, dialogue);
    let expected = if committed { "cancelled" } else { "awarded" };
    assert_eq!(state.as_deref(), Some(expected), "the initiator's record of the award");
    assert_eq!(
        (*seller.started.lock(), *seller.performed.lock(), *seller.released.lock()),
        (1, 1, 0),
        "the award's work ended once; it holds no proposal to release"
    );
    m.settles(FUNDS, 0).await;
    m.sim.shutdown().await;
}

/// The winner records the cancel (committed) and performs the work to its end, but cannot
/// record that end at once (storage is down just then). Storage comes back, and the end
/// is recorded on a retry: a later crash and restart does not take the work for one cut
/// short, and releases nothing whose work was done.
#[tokio::test(start_paused = true)]
async fn a_cancelled_award_performed_to_its_end_during_an_outage_is_not_released_after_a_restart() {
    let (m, crashed) = market(61, PERFORM).await;
    let called = m.call().await;
    let dialogue = called.proposals[0].dialogue;
    let _awarding = m.award(called.clone(), REPORT_WITHIN);
    assert!(m.sim.wait_until(5 * SECOND, POLL, || *crashed.started.lock() == 1).await);
    let cancelled = contract_net::cancel::<u64, String>(&m.ctx, &m.book, &called, None).await.unwrap();
    assert_eq!(cancelled, Outcome::Cancelled { cancelled: vec![m.proposer] });
    let cancel_arrived = || Market::state(&m.seller_book, dialogue).as_deref() == Some("cancelled");
    assert!(m.sim.wait_until(5 * SECOND, POLL, cancel_arrived).await, "the winner took the cancel");
    m.shop.context(m.proposer).unwrap().storage().unwrap().flush().await.unwrap();
    m.shop.fail_storage(true);
    assert!(m.sim.wait_until(20 * SECOND, POLL, || *crashed.performed.lock() == 1).await, "the work ended");
    tokio::time::sleep(SECOND).await;
    m.shop.fail_storage(false);
    // A retry records the end; then it is committed.
    tokio::time::sleep(3 * SECOND).await;
    m.shop.context(m.proposer).unwrap().storage().unwrap().flush().await.unwrap();
    tokio::time::sleep(60 * SECOND).await;
    m.sim.crash(&m.shop);
    m.sim.restart(&m.shop).unwrap();
    let restarted = SlowSeller::new(PERFORM, true);
    let (_, _book) = add_seller(&m.shop, &restarted);
    tokio::time::sleep(30 * SECOND).await;
    m.settles(FUNDS, 0).await;
    assert_eq!(*crashed.released.lock(), 0);
    assert_eq!(*restarted.released.lock(), 0, "a proposal whose work was done is released on a later restart");
    m.sim.shutdown().await;
}
