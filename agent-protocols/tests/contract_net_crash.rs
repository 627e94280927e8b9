//! Contract-net across a crash (simulated hosts, paused time, balances checked on the
//! ledger): a winner that crashes while it performs does not hold its award for good once
//! it restarts, and the crashed agent's work does not go on after the crash; a crashed
//! initiator refunds nothing after its crash, and its restart refunds what it locked, once,
//! even a lock that reached the ledger only after the restart.

use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::Ledger;
use agent_protocols::contract_net::{self, AwardFailure, Paid, Settlement};

mod common;

use common::cnp::SlowSeller;
use common::crash::{
    add_seller, add_traveller, market, market_on, stalling_market, unpaid_market, wallet_of, FUNDS, PRICE, SECOND,
};
use common::in_flight::InFlight;

/// The winner crashes while it performs a paid award and restarts at once. On startup it
/// releases what the award held, records the award as failed (the initiator's late cancel
/// is refused) and refunds the escrow at once, long before its deadline. The crashed
/// agent's work ends with the crash: it never finishes, reports or collects.
#[tokio::test(start_paused = true)]
async fn a_winner_that_crashed_while_performing_releases_its_award_when_it_restarts() {
    let perform = Duration::from_secs(10);
    let (m, crashed) = market(31, perform).await;
    let called = m.call().await;
    let dialogue = called.proposals[0].dialogue;
    let awarding = {
        let (ctx, book, winner) = (m.ctx.clone(), m.book.clone(), m.proposer);
        // The initiator waits 20 s for the report: its escrow is refundable only after 21 s.
        tokio::spawn(async move {
            contract_net::award_and_pay::<u64, String>(&ctx, &book, &called, &[winner], |p| u128::from(*p), 20 * SECOND)
                .await
        })
    };
    assert!(m.sim.wait_until(5 * SECOND, Duration::from_millis(10), || *crashed.started.lock() == 1).await);
    m.sim.crash(&m.shop);
    m.sim.restart(&m.shop).unwrap();
    let restarted = SlowSeller::new(perform, true);
    let (_, book) = add_seller(&m.shop, &restarted);

    assert!(
        m.sim.wait_until(5 * SECOND, Duration::from_millis(10), || *restarted.released.lock() == 1).await,
        "the restarted winner released what the interrupted award held"
    );
    // Refunded at once by the winner, the escrow's arbiter: well before its deadline.
    m.settles(FUNDS, 0).await;
    assert!(m.sim.elapsed() < 10 * SECOND, "refunded at {:?}", m.sim.elapsed());
    let state = || book.dialogues().and_then(|d| d.get(dialogue)).map(|d| d.state.to_string());
    assert_eq!(state().as_deref(), Some("failed"));

    let settled = tokio::time::timeout(30 * SECOND, awarding).await.expect("the award ends").unwrap().unwrap();
    let Paid::Settled(settled) = settled else { panic!("{settled:?}") };
    let [Settlement { winner, result: Err(AwardFailure::NoReport(_)), paid: false, .. }] = settled.as_slice() else {
        panic!("the award stopped short is not reported, nor paid: {settled:?}")
    };
    assert_eq!(*winner, m.proposer);
    // The initiator's cancel of the award that gave no report came late: refused.
    assert_eq!(state().as_deref(), Some("failed"), "the late cancel was refused");
    assert_eq!(
        (*crashed.performed.lock(), *crashed.released.lock()),
        (0, 0),
        "the crashed agent acted after its crash"
    );
    assert_eq!((*restarted.started.lock(), *restarted.released.lock()), (0, 1), "performed again, or released twice");
    // Only this test holds the crashed participant now: no task of the crashed agent does.
    assert_eq!(Arc::strong_count(&crashed), 1, "a task of the crashed agent still runs");
    m.settles(FUNDS, 0).await;
    m.sim.shutdown().await;
}

/// The initiator crashes while its winner works (an hour), after locking the price: the
/// escrow's deadline passes while it is down, and nothing refunds it (its refund task ended
/// with the crash). Restarted, it refunds the escrow from its record, once.
#[tokio::test(start_paused = true)]
async fn a_crashed_initiator_refunds_nothing_until_it_restarts() {
    let (m, seller) = market(32, Duration::from_secs(3600)).await;
    let called = m.call().await;
    m.award_from_the_traveller(called, true, SECOND);
    assert!(m.sim.wait_until(5 * SECOND, Duration::from_millis(10), || *seller.started.lock() == 1).await);
    let wallet = wallet_of("traveller");
    assert_eq!(m.ledger.balance(wallet).await.unwrap(), FUNDS - PRICE, "the price is locked");
    m.sim.crash(&m.office);

    // The escrow is refundable after 2 s; the crashed initiator does not refund it.
    tokio::time::sleep(5 * SECOND).await;
    assert_eq!(m.ledger.balance(wallet).await.unwrap(), FUNDS - PRICE, "refunded by a crashed initiator");
    assert_eq!(m.ledger.open_escrows(wallet, 10).await.unwrap().len(), 1);

    m.sim.restart(&m.office).unwrap();
    let (traveller, book) = add_traveller(&m.office);
    assert_eq!(traveller, m.traveller);
    // The book's first use schedules the refund of what was locked before the crash.
    let ctx = m.office.context(traveller).unwrap();
    contract_net::recall::<u64>(&ctx, &book).unwrap();
    m.settles(FUNDS, 0).await;
    m.sim.shutdown().await;
}

/// The initiator sends the lock of its award's price to a ledger that takes 3 s to apply
/// it, and crashes meanwhile; restarted at once, it finds nothing recorded and nothing open
/// on the ledger. The lock lands after that, for an award never sent: the restarted
/// initiator refunds it once it is due, and nothing stays locked.
#[tokio::test(start_paused = true)]
async fn a_lock_that_lands_after_the_initiator_restarted_is_refunded() {
    let late = |sim: &agent_core::sim::Sim, ledger| -> Arc<dyn Ledger> {
        Arc::new(InFlight::new(sim, ledger, (Duration::ZERO, 60 * SECOND), 3 * SECOND))
    };
    let (m, seller) = market_on(33, SECOND, late).await;
    let called = m.call().await;
    assert_eq!(m.balances().await, [FUNDS, 0], "the traveller is funded");
    m.award_from_the_traveller(called, true, SECOND);
    tokio::time::sleep(SECOND).await;
    assert_eq!(m.balances().await, [FUNDS, 0], "the lock is still on its way");
    m.sim.crash(&m.office);
    m.sim.restart(&m.office).unwrap();
    let (traveller, book) = add_traveller(&m.office);
    let ctx = m.office.context(traveller).unwrap();
    contract_net::recall::<u64>(&ctx, &book).unwrap();
    tokio::time::sleep(5 * SECOND).await;
    assert_eq!(m.balances().await, [FUNDS - PRICE, 0], "the lock landed after the restart");

    tokio::time::sleep(3600 * SECOND).await;
    m.settles(FUNDS, 0).await;
    assert_eq!(*seller.started.lock(), 0, "performed unpaid");
    m.sim.shutdown().await;
}

/// The initiator awards, paying or not, and crashes while its winner works (an hour). The
/// award was committed as it went out: restarted, the initiator recalls no call still
/// waiting on that proposal, so it cannot award the task (and pay for it) a second time.
#[tokio::test(start_paused = true)]
async fn a_restarted_initiator_knows_the_award_it_sent_before_its_crash() {
    for (seed, paying) in [(33, true), (34, false)] {
        let perform = Duration::from_secs(3600);
        let (m, seller) = if paying { market(seed, perform).await } else { unpaid_market(seed, perform).await };
        let called = m.call().await;
        let dialogue = called.proposals[0].dialogue;
        // The proposal on disk: a restart before the award would recall it.
        m.ctx.storage().unwrap().flush().await.unwrap();
        m.award_from_the_traveller(called, paying, 2 * 3600 * SECOND);
        assert!(m.sim.wait_until(5 * SECOND, Duration::from_millis(10), || *seller.started.lock() == 1).await);
        m.sim.crash(&m.office);
        m.sim.restart(&m.office).unwrap();
        let (traveller, book) = add_traveller(&m.office);
        let ctx = m.office.context(traveller).unwrap();

        let waiting = contract_net::recall::<u64>(&ctx, &book).unwrap();
        let offered = waiting
            .iter()
            .any(|call| call.proposals.iter().any(|p| p.dialogue == dialogue) || call.silent.contains(&m.proposer));
        assert!(!offered, "paying {paying}: the award was lost in the crash: {waiting:?}");
        assert_eq!(common::crash::Market::state(&book, dialogue).as_deref(), Some("awarded"), "paying {paying}");
        m.sim.shutdown().await;
    }
}

/// The winner performs a paid award, records its report done (committed), and crashes while
/// it collects its pay (the shop's ledger stalls as the work ends). Restarted at once, it
/// collects the pay it was owed, though the ledger cannot be read at first: the escrow is
/// released to it once and never refunded, though the initiator never heard the report.
#[tokio::test(start_paused = true)]
async fn a_winner_that_crashed_while_collecting_its_pay_is_paid_when_it_restarts() {
    let (m, seller, stalled) = stalling_market(35, SECOND).await;
    let called = m.call().await;
    let dialogue = called.proposals[0].dialogue;
    let awarding = m.award(called, 20 * SECOND);
    assert!(m.sim.wait_until(5 * SECOND, Duration::from_millis(10), || *seller.performed.lock() == 1).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(m.balances().await, [FUNDS - PRICE, 0], "the pay is still on its way");
    m.sim.crash(&m.shop);
    stalled.resume();
    // The ledger cannot be read at first: the restarted winner reads again.
    stalled.fail_escrow_reads(3);
    m.sim.restart(&m.shop).unwrap();
    let restarted = SlowSeller::new(SECOND, true);
    let (_, book) = add_seller(&m.shop, &restarted);

    m.settles(FUNDS - PRICE, PRICE).await;
    let settled = tokio::time::timeout(60 * SECOND, awarding).await.expect("the award ends").unwrap().unwrap();
    let Paid::Settled(settled) = settled else { panic!("{settled:?}") };
    let [Settlement { result: Err(AwardFailure::NoReport(_)), paid: true, .. }] = settled.as_slice() else {
        panic!("unreported, and paid as the ledger says: {settled:?}")
    };
    // Past the escrow's deadline, and every sweep of overdue escrows: nothing more moves.
    tokio::time::sleep(3600 * SECOND).await;
    m.settles(FUNDS - PRICE, PRICE).await;
    let kept = book.dialogues().and_then(|d| d.get(dialogue)).map(|d| (d.state.to_string(), d.data.is_some()));
    assert_eq!(kept, Some(("done".to_owned(), false)), "the pay collected is no longer noted as owed");
    assert_eq!(*restarted.started.lock(), 0, "performed again");
    m.sim.shutdown().await;
}
