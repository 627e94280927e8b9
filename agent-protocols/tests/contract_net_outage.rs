//! Contract-net steps while an agent's storage refuses writes (an outage on its host: the
//! agent keeps running and sending). A step the rules allow but storage cannot record is
//! not mistaken for one the rules refused: an award that cannot be recorded is not made
//! and the winner is told no; a report that cannot be recorded, by the winner or by the
//! initiator, is still sent and heard; a rejection that cannot be recorded is sent, and the
//! proposal is never awarded after it; one the participant cannot record is released once
//! storage records it.

use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{Ledger, MemoryLedger};
use agent_core::sim::{FaultyLedger, Host, Outage, Outages, Sim};
use agent_core::{Address, Agent, Config, Context, Identity, Wallet};
use agent_protocols::contract_net::{self, AwardFailure, Outcome, Paid, Settlement};

mod common;

use common::cnp::SlowSeller;

const PERFORM: Duration = Duration::from_secs(1);

struct Market {
    sim: Sim,
    office: Host,
    shop: Host,
    seller: Arc<SlowSeller>,
    proposer: Address,
    ctx: Context,
    book: contract_net::Book,
}

fn market(seed: u64) -> Market {
    let sim = Sim::new(seed);
    let (office, shop) = (sim.add_host("office").unwrap(), sim.add_host("shop").unwrap());
    let seller = SlowSeller::new(PERFORM, false);
    let mut serving = Agent::builder("seller").seed("seller").build().unwrap();
    contract_net::serve(&mut serving, seller.clone());
    let proposer = shop.add(serving).unwrap();
    let mut traveller = Agent::builder("traveller").seed("traveller").build().unwrap();
    let book = contract_net::initiator(&mut traveller);
    let ctx = office.context(office.add(traveller).unwrap()).unwrap();
    Market { sim, office, shop, seller, proposer, ctx, book }
}

/// The initiator cannot record its award: the award is not made (a restarted initiator
/// would not know of it), the outcome says why, and the winner is rejected, so it lets go
/// of what it held at once and performs nothing.
#[tokio::test(start_paused = true)]
async fn an_award_storage_cannot_record_is_not_made_and_the_winner_is_told() {
    let m = market(21);
    let called =
        contract_net::call::<_, u64>(&m.ctx, &m.book, &[m.proposer], &"LHR-JFK", Duration::from_secs(1)).await.unwrap();
    assert_eq!(called.proposals.len(), 1);
    m.office.fail_storage(true);
    let outcome = contract_net::award::<u64, String>(&m.ctx, &m.book, &called, &[m.proposer], Duration::from_secs(5))
        .await
        .unwrap();
    let Outcome::AllFailed(failed) = outcome else { panic!("an unrecorded award is a failed one: {outcome:?}") };
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, m.proposer);
    assert!(matches!(failed[0].1, AwardFailure::NotRecorded(_)), "{failed:?}");
    let seller = m.seller.clone();
    assert!(
        m.sim.wait_until(Duration::from_secs(5), Duration::from_millis(10), || *seller.released.lock() == 1).await,
        "the winner was told no and released its hold"
    );
    assert_eq!(*m.seller.performed.lock(), 0, "nothing performed");
    m.sim.shutdown().await;
}

/// The winner's storage goes down while it performs: its report cannot be recorded, yet it
/// is sent, and the initiator has the result instead of waiting for a report that never
/// comes.
#[tokio::test(start_paused = true)]
async fn a_winners_report_storage_cannot_record_is_still_sent() {
    let m = market(22);
    let outcome = award_with_storage_down_midway(&m, &m.shop).await;
    assert_eq!(outcome, Outcome::Awarded(vec![(m.proposer, Ok("booked at 100".into()))]));
    m.sim.shutdown().await;
}

/// The initiator's storage goes down while the winner performs: the report it cannot
/// record is still the winner's result, not a report its dialogue refused.
#[tokio::test(start_paused = true)]
async fn a_report_the_initiator_cannot_record_is_still_its_result() {
    let m = market(23);
    let outcome = award_with_storage_down_midway(&m, &m.office).await;
    assert_eq!(outcome, Outcome::Awarded(vec![(m.proposer, Ok("booked at 100".into()))]));
    m.sim.shutdown().await;
}

/// Calls the seller, awards it, and brings `down`'s storage down halfway through its work.
async fn award_with_storage_down_midway(m: &Market, down: &Host) -> Outcome<String> {
    let called =
        contract_net::call::<_, u64>(&m.ctx, &m.book, &[m.proposer], &"LHR-JFK", Duration::from_secs(1)).await.unwrap();
    let down = down.clone();
    tokio::spawn(async move {
        tokio::time::sleep(PERFORM / 2).await;
        down.fail_storage(true);
    });
    contract_net::award::<u64, String>(&m.ctx, &m.book, &called, &[m.proposer], Duration::from_secs(5)).await.unwrap()
}

/// The initiator cancels an award while the winner's storage is down: the winner cannot
/// record the cancel, yet it honours it, rather than reporting (and being paid for) a task
/// the initiator withdrew.
#[tokio::test(start_paused = true)]
async fn a_cancel_the_winner_cannot_record_is_still_honoured() {
    let m = market(24);
    let called =
        contract_net::call::<_, u64>(&m.ctx, &m.book, &[m.proposer], &"LHR-JFK", Duration::from_secs(1)).await.unwrap();
    let awarding = {
        let (ctx, book, called, winner) = (m.ctx.clone(), m.book.clone(), called.clone(), m.proposer);
        tokio::spawn(async move {
            contract_net::award::<u64, String>(&ctx, &book, &called, &[winner], Duration::from_secs(5)).await
        })
    };
    tokio::time::sleep(PERFORM / 2).await;
    m.shop.fail_storage(true);
    let cancelled = contract_net::cancel::<u64, String>(&m.ctx, &m.book, &called, None).await.unwrap();
    assert_eq!(cancelled, Outcome::Cancelled { cancelled: vec![m.proposer] });
    let awarded = tokio::time::timeout(Duration::from_secs(5), awarding).await.expect("the award ends").unwrap();
    assert_eq!(awarded.unwrap(), Outcome::AllFailed(vec![(m.proposer, AwardFailure::Cancelled)]));
    tokio::time::sleep(PERFORM).await;
    assert_eq!(*m.seller.performed.lock(), 1, "the work in hand ended");
    m.sim.shutdown().await;
}

/// The initiator rejects a proposal while its storage is down: the rejection is sent (the
/// participant lets go of what it held) though not recorded, so the initiator's record still
/// shows the proposal open. Storage back, an award of it is not made: nothing is sent, the
/// winner performs nothing, and the rejection is recorded now.
#[tokio::test(start_paused = true)]
async fn a_proposal_rejected_unrecorded_is_never_awarded_after() {
    let m = market(25);
    let called =
        contract_net::call::<_, u64>(&m.ctx, &m.book, &[m.proposer], &"LHR-JFK", Duration::from_secs(1)).await.unwrap();
    assert_eq!(called.proposals.len(), 1);
    let dialogue = called.proposals[0].dialogue;
    let state = || m.book.dialogues().and_then(|d| d.get(dialogue)).map(|d| d.state.to_string());
    m.office.fail_storage(true);
    let rejected = contract_net::award::<u64, String>(&m.ctx, &m.book, &called, &[], Duration::from_secs(5)).await;
    assert_eq!(rejected.unwrap(), Outcome::NoneChosen);
    let seller = m.seller.clone();
    assert!(
        m.sim.wait_until(Duration::from_secs(5), Duration::from_millis(10), || *seller.released.lock() == 1).await,
        "the rejection was sent, and the seller let go"
    );
    assert_eq!(state().as_deref(), Some("proposed"), "the rejection is not recorded");

    m.office.fail_storage(false);
    let awarded =
        contract_net::award::<u64, String>(&m.ctx, &m.book, &called, &[m.proposer], Duration::from_secs(5)).await;
    let rejected = AwardFailure::NotAwardable { state: "rejected".into() };
    assert_eq!(awarded.unwrap(), Outcome::AllFailed(vec![(m.proposer, rejected)]), "a rejected proposal was awarded");
    assert_eq!(state().as_deref(), Some("rejected"), "recorded once storage took it");
    tokio::time::sleep(PERFORM).await;
    assert_eq!((*m.seller.started.lock(), *m.seller.released.lock()), (0, 1), "nothing performed, released once");
    m.sim.shutdown().await;
}

/// A traveller on its office host, with 1,000 in its wallet on `ledger` (slowed by
/// `outages`), that has called a priced seller on the shop host and got its proposal.
struct PaidMarket {
    sim: Sim,
    office: Host,
    ledger: Arc<MemoryLedger>,
    seller: Arc<SlowSeller>,
    proposer: Address,
    ctx: Context,
    book: contract_net::Book,
    wallet: Address,
    called: contract_net::Called<u64>,
}

async fn paid_market(seed: u64, outages: Outages) -> PaidMarket {
    let sim = Sim::new(seed);
    let mint = Identity::from_seed("outage mint");
    let ledger = Arc::new(MemoryLedger::new(Some(mint.address()), sim.clock()));
    let faulty: Arc<dyn Ledger> = Arc::new(FaultyLedger::new(&sim, ledger.clone(), outages));
    let config = Config::default().with_ledger(faulty);
    let (office, shop) =
        (sim.add_host_with("office", config.clone()).unwrap(), sim.add_host_with("shop", config).unwrap());
    let seller = SlowSeller::new(PERFORM, true);
    let mut serving = Agent::builder("seller").seed("seller").build().unwrap();
    contract_net::serve(&mut serving, seller.clone());
    let proposer = shop.add(serving).unwrap();
    let mut traveller = Agent::builder("traveller").seed("traveller").build().unwrap();
    let book = contract_net::initiator(&mut traveller);
    let ctx = office.context(office.add(traveller).unwrap()).unwrap();
    let wallet = ctx.wallet().unwrap().address();
    Wallet::new(mint, ledger.clone()).mint(wallet, 1_000).await.unwrap();
    let called =
        contract_net::call::<_, u64>(&ctx, &book, &[proposer], &"LHR-JFK", Duration::from_secs(1)).await.unwrap();
    assert_eq!(called.proposals.len(), 1);
    PaidMarket { sim, office, ledger, seller, proposer, ctx, book, wallet, called }
}

fn price(proposal: &u64) -> u128 {
    u128::from(*proposal)
}

/// The same, paid through escrow: storage back, `award_and_pay` locks nothing for the
/// proposal it rejected unrecorded, and says it is not awardable, as rejected.
#[tokio::test(start_paused = true)]
async fn a_proposal_rejected_unrecorded_is_never_paid_for_after() {
    let PaidMarket { sim, office, ledger, seller, proposer, ctx, book, wallet, called } =
        paid_market(26, Outages::none()).await;

    office.fail_storage(true);
    let rejected = contract_net::award_and_pay::<u64, String>(&ctx, &book, &called, &[], price, Duration::from_secs(5));
    assert_eq!(rejected.await.unwrap(), Paid::NoneChosen);
    let told = seller.clone();
    assert!(sim.wait_until(Duration::from_secs(5), Duration::from_millis(10), || *told.released.lock() == 1).await);

    office.fail_storage(false);
    let winners = [proposer];
    let paid =
        contract_net::award_and_pay::<u64, String>(&ctx, &book, &called, &winners, price, Duration::from_secs(5));
    let Paid::Settled(settled) = paid.await.unwrap() else { panic!("not settled") };
    let [Settlement { winner, result: Err(AwardFailure::NotAwardable { state }), escrow: None, paid: false }] =
        settled.as_slice()
    else {
        panic!("a rejected proposal was paid for: {settled:?}")
    };
    assert_eq!((*winner, state.as_str()), (proposer, "rejected"));
    assert_eq!(ledger.balance(wallet).await.unwrap(), 1_000, "nothing locked");
    assert_eq!(*seller.started.lock(), 0, "nothing performed");
    sim.shutdown().await;
}

/// The price is being locked (the ledger is slow) when the initiator rejects the proposal
/// with its storage down: the rejection goes out unrecorded, and the dialogue still shows
/// the proposal open when the lock returns. The award is not made after all: nothing is
/// sent, the winner performs nothing, and the escrow goes back to the initiator when due.
#[tokio::test(start_paused = true)]
async fn a_proposal_rejected_while_its_price_is_locked_is_not_awarded() {
    let slow = Outages::none().add(Duration::ZERO, Duration::from_secs(3600), Outage::Slow(Duration::from_secs(2)));
    let PaidMarket { sim, office, ledger, seller, proposer, ctx, book, wallet, called } = paid_market(27, slow).await;
    let perform_timeout = Duration::from_secs(5);
    let paying = {
        let (ctx, book, called) = (ctx.clone(), book.clone(), called.clone());
        tokio::spawn(async move {
            contract_net::award_and_pay::<u64, String>(&ctx, &book, &called, &[proposer], price, perform_timeout).await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    office.fail_storage(true);
    let rejected = contract_net::award::<u64, String>(&ctx, &book, &called, &[], perform_timeout).await;
    assert_eq!(rejected.unwrap(), Outcome::NoneChosen);
    office.fail_storage(false);
    let Paid::Settled(settled) = paying.await.unwrap().unwrap() else { panic!("not settled") };
    let [Settlement { winner, result: Err(AwardFailure::NotAwardable { state }), escrow: Some(_), paid: false }] =
        settled.as_slice()
    else {
        panic!("a proposal rejected during the lock was awarded: {settled:?}")
    };
    assert_eq!((*winner, state.as_str()), (proposer, "rejected"));
    let refunded = || async { ledger.balance(wallet).await.unwrap() == 1_000 };
    let deadline = perform_timeout + agent_protocols::settlement::REFUND_GRACE + Duration::from_secs(30);
    let mut waited = Duration::ZERO;
    while !refunded().await && waited < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        waited += Duration::from_secs(1);
    }
    assert!(refunded().await, "the escrow was refunded when due");
    assert_eq!(*seller.started.lock(), 0, "nothing performed");
    sim.shutdown().await;
}

/// The initiator rejects a proposal while the participant's storage refuses writes: the
/// participant cannot record that its proposal is decided, so it keeps it held (a crash
/// now would restart with it held, and release it again) and releases it, once, as soon
/// as storage records it.
#[tokio::test(start_paused = true)]
async fn a_rejection_the_participant_cannot_record_releases_once_storage_records_it() {
    let m = market(28);
    let called =
        contract_net::call::<_, u64>(&m.ctx, &m.book, &[m.proposer], &"LHR-JFK", Duration::from_secs(1)).await.unwrap();
    assert_eq!(called.proposals.len(), 1);
    m.shop.fail_storage(true);
    let rejected = contract_net::award::<u64, String>(&m.ctx, &m.book, &called, &[], Duration::from_secs(5)).await;
    assert_eq!(rejected.unwrap(), Outcome::NoneChosen);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(*m.seller.released.lock(), 0, "released before storage recorded it");
    m.shop.fail_storage(false);
    let seller = m.seller.clone();
    assert!(
        m.sim.wait_until(Duration::from_secs(5), Duration::from_millis(10), || *seller.released.lock() == 1).await,
        "released once storage took it"
    );
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!((*m.seller.started.lock(), *m.seller.released.lock()), (0, 1), "nothing performed, released once");
    m.sim.shutdown().await;
}
