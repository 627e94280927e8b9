//! A storage outage and then a crash (simulated hosts, paused time, balances checked on the
//! ledger): a step taken while storage refused writes, done in memory but never recorded,
//! does not leave money locked for good, nor pay it twice, once the host crashed and
//! restarted with its storage working.

use std::time::Duration;

use agent_core::ledger::Ledger;
use agent_protocols::contract_net::{AwardFailure, Paid, Settlement};

mod common;

use common::cnp::SlowSeller;
use common::crash::{add_seller, add_traveller, market, wallet_of, Market, FUNDS, PRICE, SECOND};

const PERFORM: Duration = Duration::from_secs(2);
/// How long the initiator waits for the report: its escrow is refundable after 21 s.
const REPORT_WITHIN: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(10);

/// The initiator locks the price while its storage refuses writes: the escrow cannot be
/// recorded, so the award is not made and the winner is told no; the refund scheduled in
/// memory dies with the crash that follows. Restarted with storage working, and never
/// asked to call again, the initiator refunds the escrow the ledger alone knows of, once
/// it is due.
#[tokio::test(start_paused = true)]
async fn an_escrow_locked_unrecorded_before_a_crash_is_refunded_after_the_restart() {
    let (m, seller) = market(51, PERFORM).await;
    let called = m.call().await;
    m.office.fail_storage(true);
    let paid = m.award(called, REPORT_WITHIN).await.unwrap().unwrap();
    let Paid::Settled(settled) = paid else { panic!("{paid:?}") };
    let [Settlement { result: Err(AwardFailure::NotRecorded(_)), escrow: Some(_), paid: false, .. }] =
        settled.as_slice()
    else {
        panic!("an award whose escrow storage cannot record is not made: {settled:?}")
    };
    assert!(m.sim.wait_until(5 * SECOND, POLL, || *seller.released.lock() == 1).await, "the winner was told no");
    assert_eq!(m.balances().await, [FUNDS - PRICE, 0], "locked, on the ledger alone");
    m.sim.crash(&m.office);
    m.office.fail_storage(false);
    m.sim.restart(&m.office).unwrap();
    let (traveller, _book) = add_traveller(&m.office);
    assert_eq!(traveller, m.traveller);

    // Not before its deadline (21 s after the lock): the ledger refuses it then.
    tokio::time::sleep(10 * SECOND).await;
    assert_eq!(m.balances().await, [FUNDS - PRICE, 0], "refunded before its deadline");
    tokio::time::sleep(15 * SECOND).await;
    m.settles(FUNDS, 0).await;
    let history = m.ledger.history(wallet_of("traveller"), 10).await.unwrap();
    let refunds = history.iter().filter(|r| matches!(r.tx.operation, agent_core::ledger::Operation::Refund { .. }));
    assert_eq!(refunds.count(), 1, "refunded once");
    assert_eq!(*seller.started.lock(), 0, "nothing performed");
    m.sim.shutdown().await;
}

/// The winner's storage refuses writes while it performs: its report of done cannot be
/// recorded, yet it is sent and the winner collects its pay. It crashes, and restarts with
/// storage working: its record still shows the award in hand, so it ends it as cut short
/// (the proposal released once), but the pay collected stays collected, and the initiator
/// refunds nothing: paid once.
#[tokio::test(start_paused = true)]
async fn a_report_storage_could_not_record_is_paid_once_across_a_crash() {
    let (m, crashed) = market(52, PERFORM).await;
    let called = m.call().await;
    let dialogue = called.proposals[0].dialogue;
    let awarding = m.award(called, REPORT_WITHIN);
    assert!(m.sim.wait_until(5 * SECOND, POLL, || *crashed.started.lock() == 1).await);
    m.shop.fail_storage(true);
    let paid = tokio::time::timeout(30 * SECOND, awarding).await.expect("the award ends").unwrap().unwrap();
    let Paid::Settled(settled) = paid else { panic!("{paid:?}") };
    let [Settlement { result: Ok(_), paid: true, .. }] = settled.as_slice() else {
        panic!("a report storage could not record is still heard and paid: {settled:?}")
    };
    m.settles(FUNDS - PRICE, PRICE).await;
    assert_eq!(Market::state(&m.seller_book, dialogue).as_deref(), Some("awarded"), "the report went unrecorded");

    m.sim.crash(&m.shop);
    m.shop.fail_storage(false);
    m.sim.restart(&m.shop).unwrap();
    let restarted = SlowSeller::new(PERFORM, true);
    let (_, book) = add_seller(&m.shop, &restarted);
    assert!(
        m.sim.wait_until(5 * SECOND, POLL, || *restarted.released.lock() == 1).await,
        "the restarted winner ended the award it found in hand"
    );
    assert_eq!(Market::state(&book, dialogue).as_deref(), Some("failed"));
    // Past every deadline: the pay stays with the winner, nothing is refunded or released again.
    tokio::time::sleep(30 * SECOND).await;
    assert_eq!((*crashed.performed.lock(), *crashed.released.lock()), (1, 0));
    assert_eq!((*restarted.started.lock(), *restarted.released.lock()), (0, 1), "performed again, or released twice");
    m.settles(FUNDS - PRICE, PRICE).await;
    m.sim.shutdown().await;
}

/// The winner's storage refuses writes when the award comes: it cannot record the award, so
/// it does not perform it (restarted, it would not know of it), and the initiator's cancel
/// that follows cannot be recorded either: the proposal is not released then, as its
/// dialogue still holds it. The host crashes and restarts with storage working: the winner
/// still holds the proposal, and releases it once, when its hold ends (before the fix, it
/// was released on the unrecorded cancel and again after the restart). Nothing is
/// performed, and the initiator, hearing no report, has its escrow back at its deadline,
/// once.
#[tokio::test(start_paused = true)]
async fn an_award_the_winner_could_not_record_is_neither_performed_nor_paid_across_a_crash() {
    let (m, crashed) = market(53, PERFORM).await;
    let called = m.call().await;
    // The proposal was committed before the outage, as a bureau's committer does within
    // moments (a simulated host commits only on a flush).
    m.shop.context(m.proposer).unwrap().storage().unwrap().flush().await.unwrap();
    m.shop.fail_storage(true);
    let awarding = m.award(called, REPORT_WITHIN);
    tokio::time::sleep(SECOND).await;
    assert_eq!(m.balances().await, [FUNDS - PRICE, 0], "the price is locked");
    assert_eq!(*crashed.started.lock(), 0, "an award not recorded was performed");
    m.sim.crash(&m.shop);
    m.shop.fail_storage(false);
    m.sim.restart(&m.shop).unwrap();
    let restarted = SlowSeller::new(PERFORM, true);
    add_seller(&m.shop, &restarted);

    let paid = tokio::time::timeout(60 * SECOND, awarding).await.expect("the award ends").unwrap().unwrap();
    let Paid::Settled(settled) = paid else { panic!("{paid:?}") };
    let [Settlement { result: Err(AwardFailure::NoReport(_)), paid: false, .. }] = settled.as_slice() else {
        panic!("an award the winner could not record is neither reported nor paid: {settled:?}")
    };
    m.settles(FUNDS, 0).await;
    // The proposal's hold ends a minute after the call's deadline.
    assert!(
        m.sim.wait_until(120 * SECOND, POLL, || *restarted.released.lock() == 1).await,
        "the restarted winner released the proposal it held"
    );
    tokio::time::sleep(3600 * SECOND).await;
    assert_eq!((*crashed.started.lock(), *crashed.released.lock()), (0, 0));
    assert_eq!((*restarted.started.lock(), *restarted.released.lock()), (0, 1), "performed, or released twice");
    let history = m.ledger.history(wallet_of("traveller"), 10).await.unwrap();
    let refunds = history.iter().filter(|r| matches!(r.tx.operation, agent_core::ledger::Operation::Refund { .. }));
    assert_eq!(refunds.count(), 1, "refunded once");
    m.settles(FUNDS, 0).await;
    m.sim.shutdown().await;
}
