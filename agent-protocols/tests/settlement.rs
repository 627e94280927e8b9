//! Contract-net awards paid through escrow keyed by the dialogue, with the winner as its
//! arbiter: released by the winner on done (so the payer cannot take it back once the work
//! is done), refunded after the deadline on failure, cancel or silence, never paid twice,
//! and nothing awarded that cannot be paid. Balances are checked on the ledger.

use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{Ledger, LocalLedger, LocalLedgerConfig, MemoryLedger, Operation};
use agent_core::sim::{Host, Sim};
use agent_core::{Address, Agent, Bureau, Config, Identity, Wallet};
use agent_protocols::contract_net::{
    self, AwardFailure, Failure, Outcome, Paid, Participant, PaymentRefused, Unperformed, Withdrawal,
};

struct Seller {
    price: u128,
    fails: bool,
}

#[async_trait::async_trait]
impl Participant for Seller {
    type Task = String;
    type Proposal = u128;
    type Result = String;

    fn price(&self, price: &u128) -> Option<u128> {
        Some(*price)
    }

    async fn evaluate(&self, _initiator: Address, _task: String) -> Option<(u128, Option<u64>)> {
        Some((self.price, None))
    }

    async fn perform(&self, _initiator: Address, price: u128) -> Result<String, Unperformed> {
        if self.fails {
            return Err("out of stock".into());
        }
        Ok(format!("delivered for {price}"))
    }
}

struct Setup {
    bureau: Bureau,
    ledger: Arc<LocalLedger>,
    buyer: Address,
    buyer_wallet: Wallet,
    book: contract_net::Book,
}

async fn setup(funds: u128) -> Setup {
    let mint = Identity::from_seed("settlement mint");
    let ledger = Arc::new(LocalLedger::open(LocalLedgerConfig::default().with_authority(mint.address())).unwrap());
    let bureau = Bureau::with_config(Config::default().with_ledger(ledger.clone())).unwrap();
    let mut buyer = Agent::builder("buyer").build().unwrap();
    let book = contract_net::initiator(&mut buyer);
    let buyer = bureau.add(buyer).unwrap();
    let buyer_wallet = bureau.context(buyer).unwrap().wallet().unwrap();
    Wallet::new(mint, ledger.clone()).mint(buyer_wallet.address(), funds).await.unwrap();
    Setup { bureau, ledger, buyer, buyer_wallet, book }
}

impl Setup {
    /// Calls `sellers` for parts and awards each of them, paid through escrow, giving each
    /// `perform_timeout` to report.
    async fn call_and_pay(&self, sellers: &[Address], perform_timeout: Duration) -> Paid<String> {
        let ctx = self.bureau.context(self.buyer).unwrap();
        let called =
            contract_net::call::<_, u128>(&ctx, &self.book, sellers, &"parts", Duration::from_secs(2)).await.unwrap();
        contract_net::award_and_pay::<u128, String>(&ctx, &self.book, &called, sellers, |p| *p, perform_timeout)
            .await
            .unwrap()
    }
}

fn add_seller(s: &Setup, name: &str, seller: Seller) -> (Address, Address) {
    let mut agent = Agent::builder(name).build().unwrap();
    contract_net::serve(&mut agent, Arc::new(seller));
    let address = s.bureau.add(agent).unwrap();
    (address, s.bureau.context(address).unwrap().wallet().unwrap().address())
}

#[tokio::test]
async fn the_winner_is_paid_once_through_escrow_keyed_by_the_dialogue() {
    let s = setup(1_000).await;
    let (cheap, cheap_wallet) = add_seller(&s, "cheap", Seller { price: 90, fails: false });
    let (dear, dear_wallet) = add_seller(&s, "dear", Seller { price: 150, fails: false });
    let ctx = s.bureau.context(s.buyer).unwrap();
    let called =
        contract_net::call::<_, u128>(&ctx, &s.book, &[cheap, dear], &"parts", Duration::from_secs(2)).await.unwrap();
    let paid =
        contract_net::award_and_pay::<u128, String>(&ctx, &s.book, &called, &[cheap], |p| *p, Duration::from_secs(2))
            .await
            .unwrap();
    let Paid::Settled(settled) = paid else { panic!("{paid:?}") };
    assert_eq!(settled.len(), 1);
    assert_eq!((settled[0].winner, settled[0].paid), (cheap, true));
    assert_eq!(settled[0].result, Ok("delivered for 90".into()));
    let escrow = settled[0].escrow.unwrap();

    assert_eq!(s.ledger.balance(s.buyer_wallet.address()).await.unwrap(), 910);
    assert_eq!(s.ledger.balance(cheap_wallet).await.unwrap(), 90);
    assert_eq!(s.ledger.balance(dear_wallet).await.unwrap(), 0);
    assert_eq!(s.ledger.escrow(escrow).await.unwrap(), None, "settled");
    assert_eq!(s.ledger.audit_total().unwrap(), s.ledger.supply().unwrap());
    // The receipts name the dialogue's deal; a second release is refused by the ledger.
    let dialogue = called.proposals.iter().find(|p| p.from == cheap).unwrap().dialogue;
    let history = s.buyer_wallet.history(10).await.unwrap();
    assert!(
        history.iter().filter(|r| r.deal == Some(contract_net::deal_of(dialogue))).count() == 2,
        "lock and release"
    );
    assert!(s.buyer_wallet.release(escrow).await.is_err(), "never paid twice");
    assert_eq!(s.ledger.balance(cheap_wallet).await.unwrap(), 90);
    // The winner was the escrow's arbiter, and released it itself on doing the work.
    let lock = history.iter().find(|r| r.escrow == Some(escrow)).expect("the lock");
    assert!(matches!(lock.tx.operation, Operation::Lock { arbiter, .. } if arbiter == cheap_wallet), "{lock:?}");
    let release = history.iter().find(|r| matches!(r.tx.operation, Operation::Release { escrow: e } if e == escrow));
    assert_eq!(release.map(|r| r.tx.signer), Some(cheap_wallet), "released by the winner");
    s.bureau.shutdown().await.unwrap();
}

/// Proposes `price` and performs after `takes`: within the award's time or past it.
struct Paced {
    price: u128,
    takes: Duration,
    result: &'static str,
}

#[async_trait::async_trait]
impl Participant for Paced {
    type Task = String;
    type Proposal = u128;
    type Result = String;

    fn price(&self, price: &u128) -> Option<u128> {
        Some(*price)
    }

    async fn evaluate(&self, _initiator: Address, _task: String) -> Option<(u128, Option<u64>)> {
        Some((self.price, None))
    }

    async fn perform(&self, _initiator: Address, _price: u128) -> Result<String, Unperformed> {
        tokio::time::sleep(self.takes).await;
        Ok(self.result.into())
    }
}

/// Performs after a pause, well within the award's time.
const QUICK: Paced = Paced { price: 60, takes: Duration::from_millis(300), result: "done" };

/// The payer stops waiting once the work has started (its award dropped: it never releases
/// and could refund after the deadline): the winner, the escrow's arbiter, releases it on
/// doing the work, so it is paid, and the payer's refund after the deadline finds nothing.
#[tokio::test]
async fn a_winner_that_did_the_work_is_paid_even_if_the_payer_never_releases() {
    let s = setup(1_000).await;
    let mut agent = Agent::builder("quick").build().unwrap();
    contract_net::serve(&mut agent, Arc::new(QUICK));
    let quick = s.bureau.add(agent).unwrap();
    let quick_wallet = s.bureau.context(quick).unwrap().wallet().unwrap().address();
    let ctx = s.bureau.context(s.buyer).unwrap();
    let called =
        contract_net::call::<_, u128>(&ctx, &s.book, &[quick], &"parts", Duration::from_secs(2)).await.unwrap();
    let winners = [quick];
    let award =
        contract_net::award_and_pay::<u128, String>(&ctx, &s.book, &called, &winners, |p| *p, Duration::from_secs(1));
    assert!(tokio::time::timeout(Duration::from_millis(100), award).await.is_err(), "abandoned while it works");
    let open = s.buyer_wallet.open_escrows(10).await.unwrap();
    assert_eq!(open.len(), 1, "locked");
    let (escrow, terms) = open[0].clone();
    assert_eq!((terms.beneficiary, terms.arbiter), (quick_wallet, quick_wallet));

    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while s.ledger.balance(quick_wallet).await.unwrap() != 60 {
        assert!(tokio::time::Instant::now() < until, "the winner was never paid");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Past the deadline (1 s and the grace), the payer's refund is refused: paid once.
    let past = terms.deadline_ms.saturating_sub(agent_core::envelope::unix_now_ms()) + 100;
    tokio::time::sleep(Duration::from_millis(past)).await;
    assert!(s.buyer_wallet.refund(escrow).await.is_err(), "the payer cannot take back what was earned");
    assert_eq!(s.ledger.balance(s.buyer_wallet.address()).await.unwrap(), 940);
    assert_eq!(s.ledger.balance(quick_wallet).await.unwrap(), 60);
    assert_eq!(s.ledger.audit_total().unwrap(), 1_000);
    s.bureau.shutdown().await.unwrap();
}

/// Accepts the award and never reports.
struct Silent;

#[async_trait::async_trait]
impl Participant for Silent {
    type Task = String;
    type Proposal = u128;
    type Result = String;

    fn price(&self, price: &u128) -> Option<u128> {
        Some(*price)
    }

    async fn evaluate(&self, _initiator: Address, _task: String) -> Option<(u128, Option<u64>)> {
        Some((75, None))
    }

    async fn perform(&self, _initiator: Address, _price: u128) -> Result<String, Unperformed> {
        std::future::pending().await
    }
}

/// A winner that never reports is not paid: the award is withdrawn and the escrow refunded
/// to the payer after its deadline.
#[tokio::test]
async fn a_winner_that_never_reports_is_not_paid_and_the_escrow_is_refunded() {
    let s = setup(1_000).await;
    let mut agent = Agent::builder("silent").build().unwrap();
    contract_net::serve(&mut agent, Arc::new(Silent));
    let silent = s.bureau.add(agent).unwrap();
    let silent_wallet = s.bureau.context(silent).unwrap().wallet().unwrap().address();
    let paid = s.call_and_pay(&[silent], Duration::from_millis(200)).await;
    let Paid::Settled(settled) = paid else { panic!("{paid:?}") };
    assert!(matches!(settled[0].result, Err(AwardFailure::NoReport(_))), "{:?}", settled[0].result);
    assert!(!settled[0].paid);
    // Settled from the ledger: with no report, the settlement waited for the refund.
    assert_eq!(s.ledger.escrow(settled[0].escrow.unwrap()).await.unwrap(), None, "refunded");
    assert_eq!(s.ledger.balance(s.buyer_wallet.address()).await.unwrap(), 1_000);
    assert_eq!(s.ledger.balance(silent_wallet).await.unwrap(), 0);
    assert_eq!(s.ledger.audit_total().unwrap(), 1_000);
    s.bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_failed_winner_refunds_its_escrow_at_once() {
    let s = setup(1_000).await;
    let (failing, failing_wallet) = add_seller(&s, "failing", Seller { price: 90, fails: true });
    // A deadline a minute away: a refund seen within seconds came before it.
    let paid = s.call_and_pay(&[failing], Duration::from_secs(60)).await;
    let Paid::Settled(settled) = paid else { panic!("{paid:?}") };
    assert_eq!(settled[0].result, Err(AwardFailure::Failed("out of stock".into())));
    assert!(!settled[0].paid);
    let escrow = settled[0].escrow.unwrap();
    // The winner, the escrow's arbiter, refunds it as it reports the failure: the money is
    // back at once (within 5 s), not at the escrow's deadline.
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while s.ledger.escrow(escrow).await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < until, "not refunded before its deadline");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.ledger.balance(s.buyer_wallet.address()).await.unwrap(), 1_000, "refunded at once");
    assert_eq!(s.ledger.balance(failing_wallet).await.unwrap(), 0);
    assert_eq!(s.ledger.audit_total().unwrap(), 1_000);
    s.bureau.shutdown().await.unwrap();
}

/// Proposes, and withdraws when awarded.
struct Withdraws;

#[async_trait::async_trait]
impl Participant for Withdraws {
    type Task = String;
    type Proposal = u128;
    type Result = String;

    fn price(&self, price: &u128) -> Option<u128> {
        Some(*price)
    }

    async fn evaluate(&self, _initiator: Address, _task: String) -> Option<(u128, Option<u64>)> {
        Some((80, None))
    }

    async fn perform(&self, _initiator: Address, _price: u128) -> Result<String, Unperformed> {
        Err(Unperformed::Cancelled { cause: Withdrawal::Unable, detail: Some("the truck broke down".into()) })
    }
}

#[tokio::test]
async fn a_winner_that_cancels_is_not_paid_and_the_dialogue_ends_cancelled_on_both_sides() {
    let s = setup(1_000).await;
    let mut agent = Agent::builder("withdraws").build().unwrap();
    let participant_book = contract_net::serve(&mut agent, Arc::new(Withdraws));
    let winner = s.bureau.add(agent).unwrap();
    let ctx = s.bureau.context(s.buyer).unwrap();
    let called =
        contract_net::call::<_, u128>(&ctx, &s.book, &[winner], &"parts", Duration::from_secs(2)).await.unwrap();
    let paid = contract_net::award_and_pay::<u128, String>(
        &ctx,
        &s.book,
        &called,
        &[winner],
        |p| *p,
        Duration::from_millis(200),
    )
    .await
    .unwrap();
    let Paid::Settled(settled) = paid else { panic!("{paid:?}") };
    assert_eq!(
        settled[0].result,
        Err(AwardFailure::Withdrawn { cause: Withdrawal::Unable, detail: Some("the truck broke down".into()) })
    );
    assert!(!settled[0].paid);
    let dialogue = called.proposals[0].dialogue;
    assert_eq!(s.book.dialogues().unwrap().get(dialogue).unwrap().state, "cancelled");
    assert_eq!(participant_book.dialogues().unwrap().get(dialogue).unwrap().state, "cancelled");

    let escrow = settled[0].escrow.unwrap();
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while s.ledger.escrow(escrow).await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < until, "never refunded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.ledger.balance(s.buyer_wallet.address()).await.unwrap(), 1_000);
    assert_eq!(s.ledger.audit_total().unwrap(), 1_000);
    s.bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_price_that_cannot_be_locked_is_not_awarded() {
    let s = setup(50).await;
    let (seller, seller_wallet) = add_seller(&s, "seller", Seller { price: 90, fails: false });
    let ctx = s.bureau.context(s.buyer).unwrap();
    let called =
        contract_net::call::<_, u128>(&ctx, &s.book, &[seller], &"parts", Duration::from_secs(2)).await.unwrap();
    let paid =
        contract_net::award_and_pay::<u128, String>(&ctx, &s.book, &called, &[seller], |p| *p, Duration::from_secs(1))
            .await
            .unwrap();
    let Paid::Settled(settled) = paid else { panic!("{paid:?}") };
    assert_eq!(settled[0].escrow, None);
    assert!(matches!(settled[0].result, Err(AwardFailure::NotLocked(_))), "{:?}", settled[0].result);
    assert_eq!(s.ledger.balance(s.buyer_wallet.address()).await.unwrap(), 50);
    assert_eq!(s.ledger.balance(seller_wallet).await.unwrap(), 0);
    let dialogue = called.proposals[0].dialogue;
    assert_eq!(s.book.dialogues().unwrap().get(dialogue).unwrap().state, "rejected", "told it was not chosen");
    s.bureau.shutdown().await.unwrap();
}

/// A slow seller, to drop the award half way.
const SLOW: Paced = Paced { price: 70, takes: Duration::from_secs(2), result: "too late" };

/// The initiator gives up on the award after the price was locked (its future dropped):
/// the escrow is still refunded once due, never left locked.
#[tokio::test]
async fn an_award_abandoned_after_the_lock_is_still_refunded() {
    let s = setup(1_000).await;
    let mut agent = Agent::builder("slow").build().unwrap();
    contract_net::serve(&mut agent, Arc::new(SLOW));
    let slow = s.bureau.add(agent).unwrap();
    let winners = [slow];
    let ctx = s.bureau.context(s.buyer).unwrap();
    let called =
        contract_net::call::<_, u128>(&ctx, &s.book, &winners, &"parts", Duration::from_secs(2)).await.unwrap();
    let award = contract_net::award_and_pay::<u128, String>(
        &ctx,
        &s.book,
        &called,
        &winners,
        |p| *p,
        Duration::from_millis(200),
    );
    assert!(tokio::time::timeout(Duration::from_millis(100), award).await.is_err(), "abandoned while the seller works");
    assert_eq!(s.ledger.balance(s.buyer_wallet.address()).await.unwrap(), 930, "locked");

    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while s.ledger.balance(s.buyer_wallet.address()).await.unwrap() != 1_000 {
        assert!(tokio::time::Instant::now() < until, "the escrow was left locked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.ledger.audit_total().unwrap(), 1_000);
    s.bureau.shutdown().await.unwrap();
}

/// A winner that reports after its deadline: the award is withdrawn, its late report is
/// refused, it is never paid, and the escrow goes back to the initiator.
#[tokio::test]
async fn a_winner_that_reports_too_late_is_not_paid_and_the_escrow_is_refunded() {
    let s = setup(1_000).await;
    let mut agent = Agent::builder("slow").build().unwrap();
    let participant_book = contract_net::serve(&mut agent, Arc::new(SLOW));
    let slow = s.bureau.add(agent).unwrap();
    let slow_wallet = s.bureau.context(slow).unwrap().wallet().unwrap().address();
    let ctx = s.bureau.context(s.buyer).unwrap();
    let called = contract_net::call::<_, u128>(&ctx, &s.book, &[slow], &"parts", Duration::from_secs(2)).await.unwrap();
    let paid = contract_net::award_and_pay::<u128, String>(
        &ctx,
        &s.book,
        &called,
        &[slow],
        |p| *p,
        Duration::from_millis(200),
    )
    .await
    .unwrap();
    let Paid::Settled(settled) = paid else { panic!("{paid:?}") };
    assert!(matches!(settled[0].result, Err(AwardFailure::NoReport(_))), "{:?}", settled[0].result);
    assert!(!settled[0].paid);
    let dialogue = called.proposals[0].dialogue;
    assert_eq!(s.book.dialogues().unwrap().get(dialogue).unwrap().state, "cancelled");

    // The seller finishes at 2 s and reports; the report finds the award withdrawn.
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while s.ledger.balance(s.buyer_wallet.address()).await.unwrap() != 1_000 {
        assert!(tokio::time::Instant::now() < until, "the escrow was left locked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    // The seller was busy performing when the withdrawal came, so it finished and reported
    // ("done" on its side) before it read the Cancel, which its dialogue then refused. Its
    // late report reached no one: it is not paid.
    let seller_side = participant_book.dialogues().unwrap().get(dialogue).unwrap().state;
    assert!(seller_side == "done" || seller_side == "cancelled", "{seller_side}");
    assert_eq!(s.ledger.balance(slow_wallet).await.unwrap(), 0, "never paid");
    assert_eq!(s.ledger.balance(s.buyer_wallet.address()).await.unwrap(), 1_000);
    assert_eq!(s.ledger.audit_total().unwrap(), 1_000);
    s.bureau.shutdown().await.unwrap();
}

/// A call awarded twice locks the price once: the second award finds the dialogue awarded
/// already, locks nothing, and says so; the winner is paid once.
#[tokio::test]
async fn a_second_award_of_the_same_call_locks_nothing() {
    let s = setup(1_000).await;
    let (seller, seller_wallet) = add_seller(&s, "awarded twice", Seller { price: 90, fails: false });
    let ctx = s.bureau.context(s.buyer).unwrap();
    let called =
        contract_net::call::<_, u128>(&ctx, &s.book, &[seller], &"parts", Duration::from_secs(2)).await.unwrap();
    let winners = [seller];
    let award = || {
        contract_net::award_and_pay::<u128, String>(&ctx, &s.book, &called, &winners, |p| *p, Duration::from_secs(2))
    };
    let Paid::Settled(first) = award().await.unwrap() else { panic!("the first award settles") };
    assert_eq!((first.len(), first[0].paid), (1, true));
    let Paid::Settled(second) = award().await.unwrap() else { panic!("the second award is reported") };
    assert_eq!(second.len(), 1);
    assert_eq!((second[0].escrow, second[0].paid), (None, false), "{second:?}");
    assert!(
        matches!(&second[0].result, Err(AwardFailure::NotAwardable { state }) if state == "done"),
        "{:?}",
        second[0].result
    );
    assert_eq!(s.ledger.balance(s.buyer_wallet.address()).await.unwrap(), 910, "one price locked and paid");
    assert_eq!(s.ledger.balance(seller_wallet).await.unwrap(), 90);
    s.bureau.shutdown().await.unwrap();
}

/// Counts what it performs: proposes 80 and is paid through escrow.
#[derive(Default)]
struct Counted {
    performed: std::sync::atomic::AtomicUsize,
    released: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Participant for Counted {
    type Task = String;
    type Proposal = u128;
    type Result = String;

    fn price(&self, price: &u128) -> Option<u128> {
        Some(*price)
    }

    async fn evaluate(&self, _initiator: Address, _task: String) -> Option<(u128, Option<u64>)> {
        Some((80, None))
    }

    async fn perform(&self, _initiator: Address, _price: u128) -> Result<String, Unperformed> {
        self.performed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok("done".into())
    }

    async fn release(&self, _initiator: Address, _price: u128) {
        self.released.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A winner reads its payment on the ledger before it performs, and refuses (a failure
/// naming the cause, nothing performed, its proposal released) an escrow that is not open,
/// locked by another wallet than the awarding initiator's, not its own to release, holding
/// another amount than its price, for another deal, or refundable too soon. A good payment
/// is performed and paid. The initiator is written by hand, to send each bad payment.
#[tokio::test]
async fn a_winner_checks_its_payment_on_the_ledger_before_it_performs() {
    use agent_core::ledger::{DealId, EscrowId};
    use agent_protocols::contract_net::{Accept, Answer, Cfp, Report};
    use agent_protocols::settlement::Payment;
    use std::sync::atomic::Ordering;

    let s = setup(10_000).await;
    let counted = Arc::new(Counted::default());
    let mut agent = Agent::builder("checks").build().unwrap();
    contract_net::serve(&mut agent, counted.clone());
    let winner = s.bureau.add(agent).unwrap();
    let winner_wallet = s.bureau.context(winner).unwrap().wallet().unwrap().address();
    let other = s.bureau.add(Agent::builder("another payer").build().unwrap()).unwrap();
    let other_wallet = s.bureau.context(other).unwrap().wallet().unwrap();
    Wallet::new(Identity::from_seed("settlement mint"), s.ledger.clone())
        .mint(other_wallet.address(), 1_000)
        .await
        .unwrap();
    let ctx = s.bureau.context(s.buyer).unwrap();
    let now = agent_core::envelope::unix_now_ms;

    // Each case: a fresh proposal, an escrow locked by `lock` for it, and the award.
    #[derive(Debug)]
    enum Bad {
        NotOpen,
        OtherPayer,
        BuyerArbiter,
        Cheaper,
        OtherDeal,
        TooSoon,
    }
    let cases = [
        // The check that fails, by its variant's name.
        (Some(Bad::NotOpen), "NotOpen"),
        (Some(Bad::OtherPayer), "Payer"),
        (Some(Bad::BuyerArbiter), "NotMine"),
        (Some(Bad::Cheaper), "Amount"),
        (Some(Bad::OtherDeal), "Deal"),
        (Some(Bad::TooSoon), "Deadline"),
        (None, ""),
    ];
    let mut refused_escrows: Vec<(EscrowId, Option<Bad>)> = Vec::new();
    for (bad, cause) in cases {
        let dialogue: u128 = rand::random();
        let cfp = Cfp { task: serde_json::json!("parts"), deadline_ms: now() + 2_000 };
        let answer = ctx.request_in::<Cfp, Answer>(dialogue, winner, cfp, Some(Duration::from_secs(2))).await.unwrap();
        assert!(matches!(answer, Answer::Propose { .. }), "{answer:?}");
        let deliver_by_ms = now() + 2_000;
        let deadline_ms = deliver_by_ms + 1_000;
        let deal = contract_net::deal_of(dialogue);
        let (payer, amount, arbiter, deal, deadline_ms) = match bad {
            Some(Bad::OtherPayer) => (&other_wallet, 80, winner_wallet, deal, deadline_ms),
            Some(Bad::BuyerArbiter) => (&s.buyer_wallet, 80, s.buyer_wallet.address(), deal, deadline_ms),
            Some(Bad::Cheaper) => (&s.buyer_wallet, 79, winner_wallet, deal, deadline_ms),
            Some(Bad::OtherDeal) => (&s.buyer_wallet, 80, winner_wallet, DealId::named("another"), deadline_ms),
            Some(Bad::TooSoon) => (&s.buyer_wallet, 80, winner_wallet, deal, now() + 500),
            Some(Bad::NotOpen) | None => (&s.buyer_wallet, 80, winner_wallet, deal, deadline_ms),
        };
        let (escrow, _) = payer.lock(amount, winner_wallet, deadline_ms, arbiter, Some(deal)).await.unwrap();
        if matches!(bad, Some(Bad::NotOpen)) {
            // Released by its payer before the award comes: settled, no longer open.
            s.buyer_wallet.release(escrow).await.unwrap();
        }
        let payment = Payment { deal: contract_net::deal_of(dialogue), escrow, price: 80, deliver_by_ms };
        let accept = Accept { payment: Some(payment), payer: Some(s.buyer_wallet.address()) };
        let report =
            ctx.request_in::<Accept, Report>(dialogue, winner, accept, Some(Duration::from_secs(2))).await.unwrap();
        match bad {
            Some(_) => {
                assert!(
                    matches!(&report, Report::Failure { cause: Failure::PaymentRefused { refused } }
                        if format!("{refused:?}").starts_with(cause)),
                    "expected a failure naming {cause:?}: {report:?}"
                );
                assert_eq!(counted.performed.load(Ordering::SeqCst), 0, "performed against a bad payment: {cause}");
                refused_escrows.push((escrow, bad));
            }
            None => assert_eq!(report, Report::Done { result: serde_json::json!("done") }),
        }
    }
    assert_eq!(counted.performed.load(Ordering::SeqCst), 1, "the good payment alone");
    assert_eq!(counted.released.load(Ordering::SeqCst), 6, "each refused award's proposal released");
    // The released escrow went to the winner (80, by the buyer, before the award) and the
    // good one (80); none of the refused ones were released by the winner.
    assert_eq!(s.ledger.balance(winner_wallet).await.unwrap(), 160);
    // A refused escrow that names this award with the winner as its arbiter is refunded by
    // the winner at once; one the winner may not decide (another deal, the buyer as
    // arbiter) stays for its payer's refund at the deadline.
    // (The winner refunds after it reports: each is waited for, at most 5 s.)
    for (escrow, bad) in &refused_escrows {
        let refunded = matches!(bad, Some(Bad::OtherPayer | Bad::Cheaper | Bad::TooSoon));
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        while refunded && s.ledger.escrow(*escrow).await.unwrap().is_some() && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let open = s.ledger.escrow(*escrow).await.unwrap().is_some();
        match bad {
            Some(Bad::OtherDeal | Bad::BuyerArbiter) => assert!(open, "{bad:?}: left to its deadline"),
            _ => assert!(!open, "{bad:?}: refunded by the winner (or settled before)"),
        }
    }
    assert_eq!(s.ledger.balance(other_wallet.address()).await.unwrap(), 1_000, "the other payer's 80 back");
    assert_eq!(s.ledger.audit_total().unwrap(), 11_000);
    s.bureau.shutdown().await.unwrap();
}

/// A participant that states a price does not work for free: an award without payment
/// (`award`, not `award_and_pay`) is refused with the typed cause `Unpaid`, nothing is
/// performed, its proposal is released, and no money moves on the ledger.
#[tokio::test]
async fn a_priced_participant_refuses_an_unpaid_award() {
    use std::sync::atomic::Ordering;

    let s = setup(1_000).await;
    let counted = Arc::new(Counted::default());
    let mut agent = Agent::builder("priced").build().unwrap();
    contract_net::serve(&mut agent, counted.clone());
    let winner = s.bureau.add(agent).unwrap();
    let winner_wallet = s.bureau.context(winner).unwrap().wallet().unwrap().address();
    let ctx = s.bureau.context(s.buyer).unwrap();
    let called =
        contract_net::call::<_, u128>(&ctx, &s.book, &[winner], &"parts", Duration::from_secs(2)).await.unwrap();
    let outcome =
        contract_net::award::<u128, String>(&ctx, &s.book, &called, &[winner], Duration::from_secs(2)).await.unwrap();
    let unpaid = AwardFailure::PaymentRefused(PaymentRefused::Unpaid { price: 80 });
    assert_eq!(outcome, Outcome::AllFailed(vec![(winner, unpaid)]));
    assert_eq!(counted.performed.load(Ordering::SeqCst), 0, "not performed unpaid");
    assert_eq!(counted.released.load(Ordering::SeqCst), 1, "its proposal released");
    assert_eq!(s.book.dialogues().unwrap().get(called.proposals[0].dialogue).unwrap().state, "failed");
    assert_eq!(s.ledger.balance(s.buyer_wallet.address()).await.unwrap(), 1_000);
    assert_eq!(s.ledger.balance(winner_wallet).await.unwrap(), 0);
    assert!(s.buyer_wallet.open_escrows(10).await.unwrap().is_empty(), "nothing locked");
    assert_eq!(s.ledger.audit_total().unwrap(), 1_000);
    s.bureau.shutdown().await.unwrap();
}

/// The initiator's host crashes (its agent, with the refund tasks it scheduled, gone)
/// while one winner has done its work and another never will. Restarted on the same
/// storage, its first `recall` finds the escrows it had locked and refunds the open one at
/// its deadline, and one it locked without a record (stopped in between) too: nothing stays
/// locked, the winner that released its escrow keeps it, nothing is paid twice. Simulated
/// hosts on paused time, the ledger on the simulated clock: every deadline is met or
/// missed the same way however loaded the machine is.
#[tokio::test(start_paused = true)]
async fn escrows_locked_before_an_initiator_restart_are_refunded_when_due() {
    let sim = Sim::new(71);
    let mint = Identity::from_seed("settlement mint");
    let ledger = Arc::new(MemoryLedger::new(Some(mint.address()), sim.clock()));
    let config = Config::default().with_ledger(ledger.clone());
    // The sellers on a host of their own, which does not crash: the silent one never
    // releases nor refunds, so what comes back is the initiator's doing. (Restarted with the
    // initiator, the silent winner would refund at once the award it finds cut short, and
    // when this test ran in real time, that raced its check that nothing is refunded early:
    // 3 failures in 20 runs at a load of 4.)
    let (floor, shop) =
        (sim.add_host_with("floor", config.clone()).unwrap(), sim.add_host_with("shop", config).unwrap());
    let mut quick = Agent::builder("quick").seed("quick").build().unwrap();
    contract_net::serve(&mut quick, Arc::new(QUICK));
    let mut silent = Agent::builder("silent").seed("silent").build().unwrap();
    contract_net::serve(&mut silent, Arc::new(Silent));
    let sellers = vec![shop.add(quick).unwrap(), shop.add(silent).unwrap()];
    let agents = |floor: &Host| {
        let mut buyer = Agent::builder("buyer").seed("buyer").build().unwrap();
        let book = contract_net::initiator(&mut buyer);
        (floor.add(buyer).unwrap(), book)
    };
    let wallet_of = |seed: &str| Identity::from_seed(seed).derive("wallet").address();
    let (buyer_wallet, quick_wallet, silent_wallet) = (wallet_of("buyer"), wallet_of("quick"), wallet_of("silent"));

    // Before: the award is sent, the quick winner paid, the silent one's escrow open.
    let (buyer, book) = agents(&floor);
    Wallet::new(mint, ledger.clone()).mint(buyer_wallet, 1_000).await.unwrap();
    let ctx = floor.context(buyer).unwrap();
    let called = contract_net::call::<_, u128>(&ctx, &book, &sellers, &"parts", Duration::from_secs(2)).await.unwrap();
    assert_eq!(called.proposals.len(), 2);
    {
        // Awarded from a task of the buyer's agent, as a handler would: it ends with the crash.
        let (ctx, book) = (ctx.clone(), book.clone());
        floor.context(buyer).unwrap().spawn(async move {
            let paid = contract_net::award_and_pay::<u128, String>(
                &ctx,
                &book,
                &called,
                &sellers,
                |p| *p,
                Duration::from_secs(2),
            )
            .await;
            // The crash ends it before it settles; a result would be the test's to read.
            drop(paid);
        });
    }
    let paid = || async { ledger.balance(quick_wallet).await.unwrap() == 60 };
    for _ in 0..100 {
        if paid().await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(paid().await, "the quick winner was never paid");
    let open = ledger.open_escrows(buyer_wallet, 10).await.unwrap();
    assert_eq!(open.len(), 1, "the silent winner's escrow is open: {open:?}");
    assert_eq!(open[0].1.beneficiary, silent_wallet);
    let (silent_escrow, deadline_ms) = (open[0].0, open[0].1.deadline_ms);
    // A lock the agent made just before its host crashed, before any record of it was
    // written: on the ledger alone.
    let unrecorded_deadline = sim.unix_ms() + 2_500;
    let buyer_wallet_handle = ctx.wallet().unwrap();
    let (unrecorded, _) =
        buyer_wallet_handle.lock(25, silent_wallet, unrecorded_deadline, silent_wallet, None).await.unwrap();
    // What the agent stored is committed, as a stop would have it (the awards are
    // recorded, not only the escrows); then the host crashes, its tasks ending at once.
    ctx.storage().unwrap().flush().await.unwrap();
    sim.crash(&floor);
    assert!(sim.unix_ms() < deadline_ms.min(unrecorded_deadline), "restarted before the deadlines");

    // After: the same storage, the agents added again.
    sim.restart(&floor).unwrap();
    let (buyer, book) = agents(&floor);
    let ctx = floor.context(buyer).unwrap();
    let waiting = contract_net::recall::<u128>(&ctx, &book).unwrap();
    assert!(waiting.iter().all(|c| c.proposals.is_empty()), "both were awarded: {waiting:?}");
    assert_eq!(ledger.escrow(silent_escrow).await.unwrap().map(|e| e.amount), Some(75), "not refunded early");
    assert_eq!(ledger.escrow(unrecorded).await.unwrap().map(|e| e.amount), Some(25), "not refunded early");

    let until = tokio::time::Instant::now() + Duration::from_secs(15);
    for escrow in [silent_escrow, unrecorded] {
        while ledger.escrow(escrow).await.unwrap().is_some() {
            assert!(tokio::time::Instant::now() < until, "an escrow locked before the restart was never refunded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Refunded when due, not before: the deadlines had not passed when the wait began.
    assert!(sim.unix_ms() > deadline_ms.max(unrecorded_deadline), "refunded before a deadline");
    // Past both deadlines: the quick winner's escrow, released, is not refunded again.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(ledger.balance(buyer_wallet).await.unwrap(), 940, "the silent winner's 75 back, the 60 paid");
    assert_eq!(ledger.balance(quick_wallet).await.unwrap(), 60, "paid once");
    assert_eq!(ledger.balance(silent_wallet).await.unwrap(), 0);
    assert!(ledger.open_escrows(buyer_wallet, 10).await.unwrap().is_empty(), "nothing locked");
    assert_eq!(ledger.audit_total(), 1_000);
    let history = ledger.history(buyer_wallet, 10).await.unwrap();
    let refunds = history.iter().filter(|r| matches!(r.tx.operation, Operation::Refund { .. })).count();
    assert_eq!(refunds, 2, "two refunds: the silent winner's escrow and the unrecorded lock");
    // Settled escrows are forgotten: a later restart has nothing to refund.
    let storage = ctx.storage().unwrap();
    assert!(
        !storage.keys().unwrap().iter().any(|k| k.starts_with("agora.cnp.escrow/")),
        "settled escrows still recorded"
    );
    sim.shutdown().await;
}

/// A cancel crossing a done: the winner (written by hand) does the task and releases the
/// escrow to itself, but its report comes after the initiator stopped waiting and withdrew
/// the award. The settlement says paid, as the ledger does, and nothing is refunded.
#[tokio::test]
async fn a_done_that_crosses_the_withdrawal_is_settled_as_paid_from_the_ledger() {
    use agent_protocols::contract_net::{Accept, Answer, Cfp, Report};

    let s = setup(1_000).await;
    let mut agent = Agent::builder("crosses").build().unwrap();
    agent.on_message(|ctx: agent_core::Context, _from: Address, _cfp: Cfp| async move {
        let pay_to = Some(ctx.wallet().unwrap().address());
        let _ = ctx.reply(Answer::Propose { proposal: serde_json::json!(65), hold_until_ms: None, pay_to }).await;
    });
    agent.on_message(|ctx: agent_core::Context, _from: Address, accept: Accept| async move {
        let escrow = accept.payment.unwrap().escrow;
        ctx.wallet().unwrap().release(escrow).await.unwrap();
        // Done, but said after the initiator's wait (300 ms) has ended.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = ctx.reply(Report::Done { result: serde_json::json!("done") }).await;
    });
    let winner = s.bureau.add(agent).unwrap();
    let winner_wallet = s.bureau.context(winner).unwrap().wallet().unwrap().address();
    let paid = s.call_and_pay(&[winner], Duration::from_millis(300)).await;
    let Paid::Settled(settled) = paid else { panic!("{paid:?}") };
    assert!(matches!(settled[0].result, Err(AwardFailure::NoReport(_))), "{:?}", settled[0].result);
    assert!(settled[0].paid, "the ledger shows the escrow released to the winner: {settled:?}");
    assert_eq!(s.ledger.escrow(settled[0].escrow.unwrap()).await.unwrap(), None);
    assert_eq!(s.ledger.balance(winner_wallet).await.unwrap(), 65);
    assert_eq!(s.ledger.balance(s.buyer_wallet.address()).await.unwrap(), 935, "paid once, not refunded");
    assert_eq!(s.ledger.audit_total().unwrap(), 1_000);
    s.bureau.shutdown().await.unwrap();
}
