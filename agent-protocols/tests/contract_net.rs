//! Contract-net in one bureau: the happy path, and each misbehaviour of a participant
//! (silent, late, proposing twice, informing without an award, speaking in another's
//! dialogue, failing; a stranger accepting in another's dialogue) with the outcome right in
//! each case, and, for paid awards, balances checked on the ledger.

use std::sync::Arc;
use std::time::Duration;

use agent_core::{Address, Agent, Bureau, Context};
use agent_protocols::contract_net::{
    self, Answer, AwardFailure, Declined, NoProposal, Outcome, Paid, Participant, Reject, RejectReason, Report,
    Unperformed,
};
use agent_protocols::dialogue::{RefusalCause, Refused};
use parking_lot::Mutex;

mod common;

use common::cnp::{add_seller, balance, cheapest, market, paid_market, settles, wait_for, Seller};

#[tokio::test]
async fn the_cheapest_proposal_wins_and_the_others_are_released() {
    let m = market().await;
    let sellers = [Seller::new(120), Seller::new(90), Seller::new(150)];
    let addresses: Vec<Address> =
        sellers.iter().enumerate().map(|(i, s)| add_seller(&m, &format!("seller {i}"), s.clone())).collect();
    let ctx = m.bureau.context(m.initiator).unwrap();
    // Listed twice, called once: one dialogue, one proposal, one seat held.
    let listed = [addresses.clone(), vec![addresses[1]]].concat();
    let called =
        contract_net::call::<_, u64>(&ctx, &m.book, &listed, &"LHR-JFK", Duration::from_secs(2)).await.unwrap();
    assert_eq!(called.proposals.len(), 3, "everyone answered before the deadline, once: {called:?}");
    assert_eq!(m.book.dialogues().unwrap().all().len(), 3);
    assert_eq!(*sellers[1].held.lock(), 1);
    let outcome =
        contract_net::award::<u64, String>(&ctx, &m.book, &called, &cheapest(&called), Duration::from_secs(2))
            .await
            .unwrap();
    assert_eq!(outcome, Outcome::Awarded(vec![(addresses[1], Ok("booked at 90".into()))]));
    wait_for(|| *sellers[0].released.lock() == 1 && *sellers[2].released.lock() == 1).await;
    assert_eq!(*sellers[1].released.lock(), 0, "the winner keeps its seat");
    let states: Vec<String> = m
        .book
        .dialogues()
        .unwrap()
        .all()
        .iter()
        .map(|d| d.state.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(states, ["done", "rejected"]);
    m.bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn no_proposals_and_failed_winners_are_outcomes_of_their_own() {
    let m = market().await;
    let seller = add_seller(&m, "seller", Seller::new(100));
    let failing = Arc::new(Seller {
        price: 80,
        fails: true,
        hold_ms: None,
        held: Mutex::new(0),
        released: Mutex::new(0),
        priced: false,
    });
    let failing = add_seller(&m, "failing", failing);
    let ctx = m.bureau.context(m.initiator).unwrap();

    let called =
        contract_net::call::<_, u64>(&ctx, &m.book, &[seller], &"nowhere", Duration::from_secs(2)).await.unwrap();
    assert_eq!(called.refused, [(seller, NoProposal::Refused { cause: Declined::NoProposal, detail: None })]);
    // A task the seller cannot read as its own (a number, not a route) is refused as such.
    let unreadable = contract_net::call::<_, u64>(&ctx, &m.book, &[seller], &42, Duration::from_secs(2)).await.unwrap();
    assert!(
        matches!(
            unreadable.refused.as_slice(),
            [(from, NoProposal::Refused { cause: Declined::UnreadableTask, detail: Some(_) })] if *from == seller
        ),
        "{:?}",
        unreadable.refused
    );
    let outcome =
        contract_net::award::<u64, String>(&ctx, &m.book, &called, &[], Duration::from_secs(1)).await.unwrap();
    assert_eq!(outcome, Outcome::NoProposals);

    let called =
        contract_net::call::<_, u64>(&ctx, &m.book, &[failing], &"LHR-JFK", Duration::from_secs(2)).await.unwrap();
    let outcome =
        contract_net::award::<u64, String>(&ctx, &m.book, &called, &[failing], Duration::from_secs(2)).await.unwrap();
    assert_eq!(outcome, Outcome::AllFailed(vec![(failing, AwardFailure::Failed("overbooked".into()))]));
    m.bureau.shutdown().await.unwrap();
}

/// Misbehaving participants, written by hand: one never answers, one answers after the
/// deadline, one proposes and then proposes again and reports without an award, one
/// speaks in another participant's dialogue. The honest one still wins and is paid through
/// escrow; each misbehaviour is refused or rejected, and told so; on the ledger the honest
/// one is paid once, the others nothing, and nothing stays locked.
#[tokio::test]
async fn misbehaving_participants_do_not_change_the_outcome_and_are_told() {
    let (m, ledger) = paid_market(1_000).await;
    let honest = Seller::priced(100);
    let honest_address = add_seller(&m, "honest", honest.clone());
    let told: Arc<Mutex<Vec<(String, RefusalCause)>>> = Arc::default();
    let record = |who: &'static str| {
        let told = told.clone();
        move |_ctx: Context, _from: Address, refused: Refused| {
            let told = told.clone();
            async move { told.lock().push((who.to_string(), refused.cause)) }
        }
    };
    let rejections: Arc<Mutex<Vec<(String, RejectReason)>>> = Arc::default();
    let rejected = |who: &'static str| {
        let rejections = rejections.clone();
        move |_ctx: Context, _from: Address, reject: Reject| {
            let rejections = rejections.clone();
            async move { rejections.lock().push((who.to_string(), reject.reason)) }
        }
    };

    // Never answers.
    let mut silent = Agent::builder("silent").build().unwrap();
    silent.on_message(|_ctx: Context, _from: Address, _cfp: contract_net::Cfp| async {});
    let silent = m.bureau.add(silent).unwrap();

    // Answers after the deadline (the initiator waits 300 ms).
    let mut late = Agent::builder("late").build().unwrap();
    late.on_message(|ctx: Context, _from: Address, _cfp: contract_net::Cfp| async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let _ = ctx.reply(Answer::Propose { proposal: serde_json::json!(1), hold_until_ms: None, pay_to: None }).await;
    });
    late.on_message(rejected("late"));
    late.on_message(record("late"));
    let late = m.bureau.add(late).unwrap();

    // Proposes, proposes again outside the reply, and reports without an award.
    let mut pushy = Agent::builder("pushy").build().unwrap();
    pushy.on_message(|ctx: Context, from: Address, _cfp: contract_net::Cfp| async move {
        let session = ctx.session().unwrap();
        let _ =
            ctx.reply(Answer::Propose { proposal: serde_json::json!(500), hold_until_ms: None, pay_to: None }).await;
        let _ = ctx
            .send_in(
                session,
                from,
                Answer::Propose { proposal: serde_json::json!(1), hold_until_ms: None, pay_to: None },
            )
            .await;
        let _ = ctx.send_in(session, from, Report::Done { result: serde_json::json!("never awarded") }).await;
    });
    pushy.on_message(rejected("pushy"));
    pushy.on_message(record("pushy"));
    let pushy = m.bureau.add(pushy).unwrap();

    let ctx = m.bureau.context(m.initiator).unwrap();
    let participants = [honest_address, silent, late, pushy];
    let called = contract_net::call::<_, u64>(&ctx, &m.book, &participants, &"LHR-JFK", Duration::from_millis(300))
        .await
        .unwrap();
    let mut proposers: Vec<Address> = called.proposals.iter().map(|p| p.from).collect();
    proposers.sort();
    let mut expected = vec![honest_address, pushy];
    expected.sort();
    assert_eq!(proposers, expected, "one proposal each, in time");
    let mut silent_ones = called.silent.clone();
    silent_ones.sort();
    let mut expected_silent = vec![silent, late];
    expected_silent.sort();
    assert_eq!(silent_ones, expected_silent);

    // A stranger reports in the honest seller's dialogue.
    let honest_dialogue = called.proposals.iter().find(|p| p.from == honest_address).unwrap().dialogue;
    let pushy_ctx = m.bureau.context(pushy).unwrap();
    pushy_ctx
        .send_in(honest_dialogue, m.initiator, Report::Done { result: serde_json::json!("not mine") })
        .await
        .unwrap();

    let paid = contract_net::award_and_pay::<u64, String>(
        &ctx,
        &m.book,
        &called,
        &cheapest(&called),
        |p| u128::from(*p),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    let Paid::Settled(settled) = paid else { panic!("{paid:?}") };
    assert_eq!(settled.len(), 1, "{settled:?}");
    assert_eq!(
        (settled[0].winner, &settled[0].result, settled[0].paid),
        (honest_address, &Ok("booked at 100".into()), true)
    );

    wait_for(|| rejections.lock().len() == 2 && told.lock().len() == 3).await;
    let initiator_wallet = ctx.wallet().unwrap();
    assert_eq!(balance(&m, &ledger, m.initiator).await, 900, "the honest price paid, once");
    assert_eq!(balance(&m, &ledger, honest_address).await, 100);
    for misbehaving in [silent, late, pushy] {
        assert_eq!(balance(&m, &ledger, misbehaving).await, 0, "nothing paid to a misbehaving participant");
    }
    assert!(initiator_wallet.open_escrows(10).await.unwrap().is_empty(), "nothing locked");
    assert_eq!(ledger.audit_total().unwrap(), 1_000);
    let mut rejections = rejections.lock().clone();
    rejections.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(rejections, [("late".into(), RejectReason::Late), ("pushy".into(), RejectReason::NotChosen)]);
    let told = told.lock().clone();
    assert!(told.iter().all(|(who, _)| who == "pushy"), "{told:?}");
    let causes: Vec<RefusalCause> = told.iter().map(|(_, cause)| *cause).collect();
    assert!(causes.contains(&RefusalCause::NotAParty), "{causes:?}");
    assert_eq!(causes.iter().filter(|c| **c == RefusalCause::OutOfOrder).count(), 2, "{causes:?}");
    m.bureau.shutdown().await.unwrap();
}

/// A participant that answers long after the deadline, after the call stopped waiting for
/// its reply (so the reply is not taken), and then sends its proposal in the dialogue: the
/// initiator answers it with a rejection whose reason is `Late`, as FIPA requires.
#[tokio::test]
async fn a_proposal_long_after_the_call_stopped_waiting_is_rejected_as_late() {
    let m = market().await;
    let rejections: Arc<Mutex<Vec<RejectReason>>> = Arc::default();
    let reply_taken: Arc<Mutex<Option<bool>>> = Arc::default();
    let mut very_late = Agent::builder("very late").build().unwrap();
    {
        let reply_taken = reply_taken.clone();
        very_late.on_message(move |ctx: Context, from: Address, _cfp: contract_net::Cfp| {
            let reply_taken = reply_taken.clone();
            async move {
                // The call waits 200 ms, and one more second for late replies.
                tokio::time::sleep(Duration::from_millis(1_800)).await;
                let proposal = Answer::Propose { proposal: serde_json::json!(1), hold_until_ms: None, pay_to: None };
                let taken = ctx.reply(proposal.clone()).await.is_ok();
                *reply_taken.lock() = Some(taken);
                if !taken {
                    ctx.send_in(ctx.session().unwrap(), from, proposal).await.unwrap();
                }
            }
        });
    }
    {
        let rejections = rejections.clone();
        very_late.on_message(move |_ctx: Context, _from: Address, reject: Reject| {
            let rejections = rejections.clone();
            async move { rejections.lock().push(reject.reason) }
        });
    }
    let very_late = m.bureau.add(very_late).unwrap();
    let ctx = m.bureau.context(m.initiator).unwrap();
    let called = contract_net::call::<_, u64>(&ctx, &m.book, &[very_late], &"LHR-JFK", Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(called.silent, [very_late]);
    wait_for(|| !rejections.lock().is_empty()).await;
    assert_eq!(*reply_taken.lock(), Some(false), "the call had stopped waiting for the reply");
    assert_eq!(*rejections.lock(), [RejectReason::Late]);
    let states: Vec<String> = m.book.dialogues().unwrap().all().into_iter().map(|d| d.state.into()).collect();
    assert_eq!(states, ["rejected"], "the rejection is recorded in the dialogue");
    m.bureau.shutdown().await.unwrap();
}

/// A participant's proposal that its initiator no longer takes as the reply (here an
/// initiator that waits 100 ms for a call whose deadline is 10 s away) is sent in the
/// dialogue instead, so the initiator hears it and can answer it.
#[tokio::test]
async fn a_proposal_not_taken_as_the_reply_is_sent_in_its_dialogue() {
    let m = market().await;
    let slow = Arc::new(Seller {
        price: 60,
        fails: false,
        hold_ms: None,
        held: Mutex::new(0),
        released: Mutex::new(0),
        priced: false,
    });
    struct Slow(Arc<Seller>);
    #[async_trait::async_trait]
    impl Participant for Slow {
        type Task = String;
        type Proposal = u64;
        type Result = String;
        async fn evaluate(&self, initiator: Address, task: String) -> Option<(u64, Option<u64>)> {
            tokio::time::sleep(Duration::from_millis(500)).await;
            self.0.evaluate(initiator, task).await
        }
        async fn perform(&self, initiator: Address, price: u64) -> Result<String, Unperformed> {
            self.0.perform(initiator, price).await
        }
    }
    let mut agent = Agent::builder("slow seller").build().unwrap();
    contract_net::serve(&mut agent, Arc::new(Slow(slow)));
    let seller = m.bureau.add(agent).unwrap();

    let heard: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let mut asker = Agent::builder("impatient").build().unwrap();
    {
        let heard = heard.clone();
        asker.on_message(move |_ctx: Context, _from: Address, answer: Answer| {
            let heard = heard.clone();
            async move { heard.lock().push(answer) }
        });
    }
    let asker = m.bureau.add(asker).unwrap();
    let ctx = m.bureau.context(asker).unwrap();
    let cfp = contract_net::Cfp {
        task: serde_json::json!("LHR-JFK"),
        deadline_ms: agent_core::envelope::unix_now_ms() + 10_000,
    };
    let waited = ctx.request_in::<_, Answer>(77, seller, cfp, Some(Duration::from_millis(100))).await;
    assert!(waited.is_err(), "the reply came after 100 ms: {waited:?}");
    wait_for(|| !heard.lock().is_empty()).await;
    assert!(matches!(heard.lock()[0], Answer::Propose { ref proposal, .. } if *proposal == serde_json::json!(60)));
    m.bureau.shutdown().await.unwrap();
}

/// Participants are found through the almanac by the contract-net protocol's digest and an
/// attribute, and the round runs with just them.
#[tokio::test]
async fn participants_are_found_through_the_almanac_by_protocol_and_attribute() {
    use std::collections::BTreeMap;
    let m = market().await;
    let almanac = almanac::Almanac::new(almanac::Config::default());
    let mut on_route = Vec::new();
    for (name, route, price) in [("lhr-a", "LHR-JFK", 110), ("lhr-b", "LHR-JFK", 95), ("cdg", "CDG-JFK", 10)] {
        let mut agent = Agent::builder(name).seed(name).build().unwrap();
        contract_net::serve(&mut agent, Seller::new(price));
        let address = m.bureau.add(agent).unwrap();
        let registration = almanac::Registration::sign(
            &agent_core::Identity::from_seed(name),
            libp2p_free_peer_id(),
            vec![],
            vec![contract_net::protocol_of::<Seller>().digest()],
            BTreeMap::from([("route".to_string(), route.to_string())]),
            1,
            agent_core::envelope::unix_now_ms() + 60_000,
        );
        almanac.register(registration).await.unwrap();
        if route == "LHR-JFK" {
            on_route.push(address);
        }
    }
    // Agents on the route that do not speak contract-net, or speak it about tasks of
    // another type (numbers, not route names), are not participants.
    let other_tasks = contract_net::protocol::<u64, u64, String>().digest();
    assert_ne!(other_tasks, contract_net::protocol_of::<Seller>().digest());
    for (name, protocols) in [("bystander", vec![]), ("numbers", vec![other_tasks])] {
        let attributes = BTreeMap::from([("route".to_string(), "LHR-JFK".to_string())]);
        let record = almanac::Registration::sign(
            &agent_core::Identity::from_seed(name),
            libp2p_free_peer_id(),
            vec![],
            protocols,
            attributes,
            1,
            agent_core::envelope::unix_now_ms() + 60_000,
        );
        almanac.register(record).await.unwrap();
    }

    let speaking = contract_net::protocol::<String, u64, String>().digest();
    let mut found = contract_net::find_participants(&almanac, speaking, &[("route", "LHR-JFK")], 100).await.unwrap();
    found.sort();
    on_route.sort();
    assert_eq!(found, on_route);

    let ctx = m.bureau.context(m.initiator).unwrap();
    let called = contract_net::call::<_, u64>(&ctx, &m.book, &found, &"LHR-JFK", Duration::from_secs(2)).await.unwrap();
    let outcome =
        contract_net::award::<u64, String>(&ctx, &m.book, &called, &cheapest(&called), Duration::from_secs(2))
            .await
            .unwrap();
    assert!(matches!(&outcome, Outcome::Awarded(won) if won[0].1 == Ok("booked at 95".to_string())), "{outcome:?}");
    m.bureau.shutdown().await.unwrap();
}

/// A registration names a libp2p peer id; these agents are reached in-process, so any
/// well-formed one does.
fn libp2p_free_peer_id() -> String {
    "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".to_string()
}

/// A proposal holds a seat until its hold ends: with no decision by then the seat is
/// released, and a later award is answered with a failure instead of a booking.
#[tokio::test]
async fn a_hold_that_ends_without_a_decision_is_released() {
    let m = market().await;
    let seller = Arc::new(Seller {
        price: 70,
        fails: false,
        hold_ms: Some(200),
        held: Mutex::new(0),
        released: Mutex::new(0),
        priced: false,
    });
    let address = add_seller(&m, "holding", seller.clone());
    let ctx = m.bureau.context(m.initiator).unwrap();
    let called =
        contract_net::call::<_, u64>(&ctx, &m.book, &[address], &"LHR-JFK", Duration::from_secs(2)).await.unwrap();
    assert_eq!(called.proposals[0].proposal, 70);
    wait_for(|| *seller.released.lock() == 1).await;
    let outcome =
        contract_net::award::<u64, String>(&ctx, &m.book, &called, &[address], Duration::from_secs(2)).await.unwrap();
    match outcome {
        Outcome::AllFailed(failed) => assert_eq!(failed[0].1, AwardFailure::HoldEnded, "{failed:?}"),
        other => panic!("an award after the hold ended must fail: {other:?}"),
    }
    assert_eq!(*seller.released.lock(), 1, "released once");
    m.bureau.shutdown().await.unwrap();
}

/// A proposal made without a hold of its own is not held forever: it is held until
/// `DEFAULT_HOLD_AFTER_DEADLINE` past the call's deadline (as its answer tells the
/// initiator), then released, and a later award fails.
#[tokio::test(start_paused = true)]
async fn a_proposal_without_a_hold_of_its_own_is_released_a_bounded_time_after_the_deadline() {
    let m = market().await;
    let seller = Seller::new(80);
    let address = add_seller(&m, "no hold given", seller.clone());
    let ctx = m.bureau.context(m.initiator).unwrap();
    let deadline = Duration::from_millis(300);
    let called_at = agent_core::envelope::unix_now_ms();
    let called = contract_net::call::<_, u64>(&ctx, &m.book, &[address], &"LHR-JFK", deadline).await.unwrap();
    let margin = contract_net::DEFAULT_HOLD_AFTER_DEADLINE;
    let held_for = called.proposals[0].hold_until_ms.expect("the answer says until when it is held") - called_at;
    let expected = (deadline + margin).as_millis() as u64;
    assert!((expected..expected + 1_000).contains(&held_for), "held for {held_for} ms, not {expected}");

    tokio::time::sleep(margin - Duration::from_secs(5)).await;
    assert_eq!(*seller.released.lock(), 0, "still held before the hold ends");
    tokio::time::sleep(Duration::from_secs(10)).await;
    wait_for(|| *seller.released.lock() == 1).await;
    let outcome =
        contract_net::award::<u64, String>(&ctx, &m.book, &called, &[address], Duration::from_secs(2)).await.unwrap();
    match outcome {
        Outcome::AllFailed(failed) => assert_eq!(failed[0].1, AwardFailure::HoldEnded, "{failed:?}"),
        other => panic!("an award after the default hold ended must fail: {other:?}"),
    }
    assert_eq!(*seller.released.lock(), 1, "released once");
    m.bureau.shutdown().await.unwrap();
}

/// The initiator chooses the call's deadline: one ten years away does not hold a proposal
/// given no hold of its own for ten years, only for the bounded default.
#[tokio::test]
async fn a_call_with_a_far_deadline_holds_a_proposal_for_the_bounded_default_only() {
    let m = market().await;
    let address = add_seller(&m, "far deadline", Seller::new(80));
    let ctx = m.bureau.context(m.initiator).unwrap();
    let ten_years = Duration::from_secs(10 * 365 * 24 * 3600);
    let called_at = agent_core::envelope::unix_now_ms();
    // The one participant answers at once, so the call returns long before its deadline.
    let called = contract_net::call::<_, u64>(&ctx, &m.book, &[address], &"LHR-JFK", ten_years).await.unwrap();
    let held_for = called.proposals[0].hold_until_ms.expect("the answer says until when it is held") - called_at;
    let cap = contract_net::MAX_DEFAULT_HOLD.as_millis() as u64;
    assert!((cap - 1_000..=cap + 1_000).contains(&held_for), "held for {held_for} ms, not about {cap}");
    m.bureau.shutdown().await.unwrap();
}

/// A seller that meets a lower budget down to its floor, and refuses below it.
struct Haggler {
    price: u64,
    floor: u64,
    released: Mutex<u32>,
}

#[async_trait::async_trait]
impl Participant for Haggler {
    type Task = u64;
    type Proposal = u64;
    type Result = String;

    async fn evaluate(&self, _initiator: Address, budget: u64) -> Option<(u64, Option<u64>)> {
        (self.floor <= budget).then(|| (self.price.min(budget).max(self.floor), None))
    }

    async fn perform(&self, _initiator: Address, price: u64) -> Result<String, Unperformed> {
        Ok(format!("booked at {price}"))
    }

    async fn release(&self, _initiator: Address, _price: u64) {
        *self.released.lock() += 1;
    }
}

/// The iterated variant: a revised call to the proposers, in the same dialogues, gets
/// counter-proposals (or refusals); the earlier proposals are void and released, and the
/// earlier round can no longer be awarded.
#[tokio::test]
async fn a_revised_call_gets_counter_proposals_in_the_same_dialogues() {
    let m = market().await;
    let a = Arc::new(Haggler { price: 100, floor: 85, released: Mutex::new(0) });
    let b = Arc::new(Haggler { price: 120, floor: 95, released: Mutex::new(0) });
    let mut addresses = Vec::new();
    for (name, seller) in [("haggler a", a.clone()), ("haggler b", b.clone())] {
        let mut agent = Agent::builder(name).build().unwrap();
        contract_net::serve(&mut agent, seller);
        addresses.push(m.bureau.add(agent).unwrap());
    }
    let ctx = m.bureau.context(m.initiator).unwrap();
    let first =
        contract_net::call::<_, u64>(&ctx, &m.book, &addresses, &1_000u64, Duration::from_secs(2)).await.unwrap();
    let mut prices: Vec<u64> = first.proposals.iter().map(|p| p.proposal).collect();
    prices.sort();
    assert_eq!(prices, [100, 120]);

    let revised =
        contract_net::call_again::<_, u64, u64>(&ctx, &m.book, &first, &90u64, Duration::from_secs(2)).await.unwrap();
    assert_eq!(revised.proposals.iter().map(|p| (p.from, p.proposal)).collect::<Vec<_>>(), [(addresses[0], 90)]);
    assert_eq!(revised.refused.iter().map(|(who, _)| *who).collect::<Vec<_>>(), [addresses[1]]);
    assert_eq!(
        revised.proposals[0].dialogue,
        first.proposals.iter().find(|p| p.from == addresses[0]).unwrap().dialogue,
        "the same dialogue"
    );
    wait_for(|| *a.released.lock() == 1 && *b.released.lock() == 1).await;
    assert_eq!((first.round, revised.round), (0, 1));

    // The first round is superseded: deciding on it would hold a to 100, which it no longer
    // proposes (its counter-proposal is 90). Its proposals are neither accepted nor rejected.
    let stale = contract_net::award::<u64, String>(&ctx, &m.book, &first, &[addresses[0]], Duration::from_secs(2))
        .await
        .unwrap();
    let superseded = AwardFailure::NotAwardable { state: "superseded".into() };
    assert_eq!(stale, Outcome::AllFailed(vec![(addresses[0], superseded)]));
    let dialogue = revised.proposals[0].dialogue;
    let state = m.book.dialogues().unwrap().get(dialogue).unwrap().state.to_string();
    assert_eq!(state, "proposed", "the counter-proposal still waits for its decision");

    let outcome =
        contract_net::award::<u64, String>(&ctx, &m.book, &revised, &cheapest(&revised), Duration::from_secs(2))
            .await
            .unwrap();
    assert_eq!(outcome, Outcome::Awarded(vec![(addresses[0], Ok("booked at 90".into()))]));
    m.bureau.shutdown().await.unwrap();
}

/// Both sides restart between the call and the award: the participant still holds its
/// proposal (kept in its storage), performs the award, and a hold that ends while it is
/// down is released when it is back.
#[tokio::test]
async fn a_restarted_participant_honours_its_proposals_and_releases_ended_holds() {
    let dir = tempfile::tempdir().unwrap();
    let config = || agent_core::Config::default().with_storage_dir(dir.path());
    let start = |seller: Arc<Seller>, held: Arc<Seller>| {
        let bureau = Bureau::with_config(config()).unwrap();
        let mut traveller = Agent::builder("traveller").seed("traveller").build().unwrap();
        let book = contract_net::initiator(&mut traveller);
        let traveller = bureau.add(traveller).unwrap();
        let mut agent = Agent::builder("seller").seed("seller").build().unwrap();
        contract_net::serve(&mut agent, seller);
        let seller = bureau.add(agent).unwrap();
        let mut agent = Agent::builder("short hold").seed("short hold").build().unwrap();
        contract_net::serve(&mut agent, held);
        let short = bureau.add(agent).unwrap();
        (bureau, traveller, seller, short, book)
    };
    let short_hold = || {
        Arc::new(Seller {
            price: 95,
            fails: false,
            hold_ms: Some(1_500),
            held: Mutex::new(0),
            released: Mutex::new(0),
            priced: false,
        })
    };

    let (bureau, traveller, seller, short, book) = start(Seller::new(90), short_hold());
    let ctx = bureau.context(traveller).unwrap();
    let called =
        contract_net::call::<_, u64>(&ctx, &book, &[seller, short], &"LHR-JFK", Duration::from_secs(2)).await.unwrap();
    assert_eq!(called.proposals.len(), 2);
    // Everything holding the store goes: the context, and the book with its dialogues.
    drop((ctx, book));
    bureau.shutdown().await.unwrap();

    // Back up after the short hold ended: it is released at start; the other still holds.
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    let (again, short_again) = (Seller::new(90), short_hold());
    let (bureau, traveller, seller_again, _, book) = start(again.clone(), short_again.clone());
    assert_eq!(seller_again, seller, "the same agent");
    wait_for(|| *short_again.released.lock() == 1).await;
    let ctx = bureau.context(traveller).unwrap();
    let outcome =
        contract_net::award::<u64, String>(&ctx, &book, &called, &[seller], Duration::from_secs(2)).await.unwrap();
    assert_eq!(outcome, Outcome::Awarded(vec![(seller, Ok("booked at 90".into()))]));
    assert_eq!(*again.released.lock(), 0, "the winner's proposal was performed, not released");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(*short_again.released.lock(), 1, "released once, not again on its rejection");
    bureau.shutdown().await.unwrap();
}

/// The initiator restarts between its call and its award, with nothing carried over but its
/// storage: it finds the call there (the proposals it received, the participant that had
/// not answered) and awards it; once decided, the call is no longer waiting.
#[tokio::test]
async fn a_restarted_initiator_awards_a_call_it_made_before_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let bureau = Bureau::with_config(agent_core::Config::default().with_storage_dir(dir.path())).unwrap();
        let mut traveller = Agent::builder("traveller").seed("traveller").build().unwrap();
        let book = contract_net::Book::default();
        contract_net::refuse_strays(&mut traveller, &book);
        let traveller = bureau.add(traveller).unwrap();
        let mut sellers = Vec::new();
        for (name, price) in [("cheap", 90), ("dear", 130)] {
            let mut agent = Agent::builder(name).seed(name).build().unwrap();
            contract_net::serve(&mut agent, Seller::new(price));
            sellers.push(bureau.add(agent).unwrap());
        }
        let mut silent = Agent::builder("silent").seed("silent").build().unwrap();
        silent.on_message(|_ctx: Context, _from: Address, _cfp: contract_net::Cfp| async {});
        sellers.push(bureau.add(silent).unwrap());
        (bureau, traveller, book, sellers)
    };

    let (bureau, traveller, book, sellers) = start();
    let ctx = bureau.context(traveller).unwrap();
    let called =
        contract_net::call::<_, u64>(&ctx, &book, &sellers, &"LHR-JFK", Duration::from_millis(300)).await.unwrap();
    assert_eq!(called.proposals.len(), 2);
    let call = called.call;
    drop((ctx, book, called));
    bureau.shutdown().await.unwrap();

    let (bureau, traveller, book, sellers) = start();
    let ctx = bureau.context(traveller).unwrap();
    let waiting = contract_net::recall::<u64>(&ctx, &book).unwrap();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    let recalled = &waiting[0];
    assert_eq!(recalled.call, call);
    let mut offers: Vec<(Address, u64)> = recalled.proposals.iter().map(|p| (p.from, p.proposal)).collect();
    offers.sort();
    let mut expected = vec![(sellers[0], 90), (sellers[1], 130)];
    expected.sort();
    assert_eq!(offers, expected, "the proposals received before the restart");
    assert!(recalled.proposals.iter().all(|p| p.hold_until_ms.is_some()));
    assert_eq!(recalled.silent, [sellers[2]]);

    let outcome =
        contract_net::award::<u64, String>(&ctx, &book, recalled, &cheapest(recalled), Duration::from_secs(2))
            .await
            .unwrap();
    assert_eq!(outcome, Outcome::Awarded(vec![(sellers[0], Ok("booked at 90".into()))]));
    let waiting = contract_net::recall::<u64>(&ctx, &book).unwrap();
    assert!(waiting.iter().all(|c| c.proposals.is_empty()), "no proposal waits once awarded: {waiting:?}");
    bureau.shutdown().await.unwrap();
}

/// A workshop whose work takes an hour.
struct SlowWorkshop;

#[async_trait::async_trait]
impl Participant for SlowWorkshop {
    type Task = String;
    type Proposal = u64;
    type Result = String;

    async fn evaluate(&self, _initiator: Address, _task: String) -> Option<(u64, Option<u64>)> {
        Some((10, None))
    }

    async fn perform(&self, _initiator: Address, _price: u64) -> Result<String, Unperformed> {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok("built".into())
    }
}

#[tokio::test(start_paused = true)]
async fn a_participant_at_work_still_answers_other_calls() {
    let m = market().await;
    let mut agent = Agent::builder("workshop").build().unwrap();
    contract_net::serve(&mut agent, Arc::new(SlowWorkshop));
    let workshop = m.bureau.add(agent).unwrap();
    let ctx = m.bureau.context(m.initiator).unwrap();
    let first =
        contract_net::call::<_, u64>(&ctx, &m.book, &[workshop], &"a shed", Duration::from_secs(2)).await.unwrap();
    let award = {
        let (ctx, book) = (ctx.clone(), m.book.clone());
        tokio::spawn(async move {
            contract_net::award::<u64, String>(&ctx, &book, &first, &[workshop], Duration::from_secs(7200)).await
        })
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    let started = tokio::time::Instant::now();
    let second =
        contract_net::call::<_, u64>(&ctx, &m.book, &[workshop], &"a barn", Duration::from_secs(2)).await.unwrap();
    assert_eq!(second.proposals.len(), 1, "the workshop proposed while building: {second:?}");
    assert!(started.elapsed() <= Duration::from_secs(2));
    let outcome = award.await.unwrap().unwrap();
    assert_eq!(outcome, Outcome::Awarded(vec![(workshop, Ok("built".into()))]));
    m.bureau.shutdown().await.unwrap();
}

/// A stranger that accepts a proposal made to another initiator, in that initiator's
/// dialogue, is refused as not a party: nothing is performed for it, and the proposal is
/// still there for its initiator to award.
#[tokio::test]
async fn an_accept_from_a_stranger_in_anothers_dialogue_is_refused_and_nothing_is_performed() {
    let (m, ledger) = paid_market(1_000).await;
    let honest = Seller::priced(100);
    let seller = add_seller(&m, "accepted by a stranger", honest.clone());
    let heard: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut stranger = Agent::builder("stranger").build().unwrap();
    {
        let heard = heard.clone();
        stranger.on_message(move |_ctx: Context, _from: Address, refused: Refused| {
            let heard = heard.clone();
            async move { heard.lock().push(format!("refused: {:?}", refused.cause)) }
        });
    }
    {
        let heard = heard.clone();
        stranger.on_message(move |_ctx: Context, _from: Address, report: Report| {
            let heard = heard.clone();
            async move { heard.lock().push(format!("report: {report:?}")) }
        });
    }
    let stranger = m.bureau.add(stranger).unwrap();

    let ctx = m.bureau.context(m.initiator).unwrap();
    let called =
        contract_net::call::<_, u64>(&ctx, &m.book, &[seller], &"LHR-JFK", Duration::from_millis(300)).await.unwrap();
    let dialogue = called.proposals[0].dialogue;

    let stranger_ctx = m.bureau.context(stranger).unwrap();
    stranger_ctx.send_in(dialogue, seller, contract_net::Accept::default()).await.unwrap();
    wait_for(|| !heard.lock().is_empty()).await;
    let heard_now = heard.lock().clone();
    assert_eq!(heard_now.len(), 1, "{heard_now:?}");
    assert_eq!(heard_now, ["refused: NotAParty"]);

    // The proposal is untouched: its own initiator awards it, pays, and gets the work done.
    let paid = contract_net::award_and_pay::<u64, String>(
        &ctx,
        &m.book,
        &called,
        &[seller],
        |p| u128::from(*p),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    let Paid::Settled(settled) = paid else { panic!("{paid:?}") };
    assert_eq!((&settled[0].result, settled[0].paid), (&Ok("booked at 100".into()), true), "{settled:?}");
    assert_eq!(balance(&m, &ledger, m.initiator).await, 900);
    assert_eq!(balance(&m, &ledger, seller).await, 100, "paid once, by its own initiator");
    assert_eq!(balance(&m, &ledger, stranger).await, 0);
    assert!(ctx.wallet().unwrap().open_escrows(10).await.unwrap().is_empty(), "nothing locked");
    assert!(heard.lock().iter().all(|h| !h.starts_with("report")), "the stranger got no report: {:?}", heard.lock());
    assert_eq!(*honest.released.lock(), 0, "the held seat was neither released nor taken by the stranger");
    m.bureau.shutdown().await.unwrap();
}

/// A participant that sends the initiator's own messages (a call, an award, a rejection) in
/// its dialogue is refused as the wrong role, told the dialogue, its state and what it may
/// send, like any other stray; the initiator's dialogue does not move. The initiator then
/// awards and pays an honest seller: the rogue's award to itself moved no money, and the
/// seller is paid once (balances and supply on the ledger).
#[tokio::test]
async fn initiator_messages_from_a_participant_are_refused_as_the_wrong_role() {
    let (m, ledger) = paid_market(1_000).await;
    let honest = add_seller(&m, "honest seller", Seller::priced(90));
    let mut rogue = Agent::builder("rogue").build().unwrap();
    rogue.on_message(|ctx: Context, _from: Address, _cfp: contract_net::Cfp| async move {
        // Whether the rogue's proposal is delivered is what the test reads from the initiator.
        let _ = ctx.reply(Answer::Propose { proposal: serde_json::json!(70), hold_until_ms: None, pay_to: None }).await;
    });
    let told = common::hear_refusals(&mut rogue);
    let rejected: Arc<Mutex<Vec<RejectReason>>> = Arc::default();
    let heard = rejected.clone();
    rogue.on_message(move |_ctx: Context, _from: Address, reject: Reject| {
        heard.lock().push(reject.reason);
        std::future::ready(())
    });
    let rogue = m.bureau.add(rogue).unwrap();
    let ctx = m.bureau.context(m.initiator).unwrap();
    let called = contract_net::call::<_, u64>(&ctx, &m.book, &[rogue, honest], &"LHR-JFK", Duration::from_millis(300))
        .await
        .unwrap();
    let dialogue = called.proposals.iter().find(|p| p.from == rogue).unwrap().dialogue;

    let rogue_ctx = m.bureau.context(rogue).unwrap();
    let cfp = contract_net::Cfp { task: serde_json::json!("LHR-JFK"), deadline_ms: u64::MAX };
    rogue_ctx.send_in(dialogue, m.initiator, cfp).await.unwrap();
    rogue_ctx.send_in(dialogue, m.initiator, contract_net::Accept::default()).await.unwrap();
    rogue_ctx.send_in(dialogue, m.initiator, Reject { reason: RejectReason::NotChosen }).await.unwrap();
    wait_for(|| told.lock().len() == 3).await;
    for refused in told.lock().iter() {
        assert_eq!(refused.dialogue, dialogue);
        assert_eq!(refused.state(), Some("proposed"), "{refused:?}");
        assert_eq!(refused.cause, RefusalCause::OutOfOrder, "{refused:?}");
        assert!(refused.detail.contains("from participant may not follow"), "{refused:?}");
        assert!(refused.expected.iter().all(|e| e.contains("from participant")), "{refused:?}");
    }
    assert_eq!(m.book.dialogues().unwrap().get(dialogue).unwrap().state, "proposed", "unmoved");
    let paid = contract_net::award_and_pay::<u64, String>(
        &ctx,
        &m.book,
        &called,
        &[honest],
        |p| u128::from(*p),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    let Paid::Settled(settled) = paid else { panic!("{paid:?}") };
    assert_eq!(settled.len(), 1, "{settled:?}");
    assert_eq!((&settled[0].result, settled[0].paid), (&Ok("booked at 90".into()), true), "{settled:?}");
    wait_for(|| !rejected.lock().is_empty()).await;
    assert_eq!(*rejected.lock(), [RejectReason::NotChosen], "the rogue's own proposal was rejected");
    settles(&m, &ledger, &[(m.initiator, 910), (honest, 90), (rogue, 0)]).await;
    m.bureau.shutdown().await.unwrap();
}

/// The mirror for a participant: an answer or a report (a participant's own messages) sent
/// to a participant served by `serve` is refused, with a typed cause, as the wrong role in
/// its dialogue (which does not move), or as no dialogue. On an agent that is also an
/// initiator (`serve`, then `refuse_strays`), one in the initiator side's dialogue is the
/// initiator's to refuse: a second proposal is out of order there, not unknown. The rogue's
/// report of work done moves no money: the participant is then paid once, by an initiator
/// that awards it (balances and supply on the ledger).
#[tokio::test]
async fn participant_messages_sent_to_a_participant_are_refused_as_the_wrong_role() {
    let (m, ledger) = paid_market(1_000).await;
    let pure = add_seller(&m, "pure participant", Seller::priced(90));
    let mut both = Agent::builder("both roles").build().unwrap();
    let both_participant = contract_net::serve(&mut both, Seller::new(80));
    let both_initiator = contract_net::Book::default();
    contract_net::refuse_strays_serving(&mut both, &both_initiator, &both_participant);
    let both = m.bureau.add(both).unwrap();

    let mut rogue = Agent::builder("rogue initiator").build().unwrap();
    rogue.on_message(|ctx: Context, _from: Address, _cfp: contract_net::Cfp| async move {
        // Whether the rogue's proposal is delivered is what the test reads from the initiator.
        let _ = ctx.reply(Answer::Propose { proposal: serde_json::json!(70), hold_until_ms: None, pay_to: None }).await;
    });
    let told = common::hear_refusals(&mut rogue);
    let rogue = m.bureau.add(rogue).unwrap();
    let rogue_ctx = m.bureau.context(rogue).unwrap();
    let propose = || Answer::Propose { proposal: serde_json::json!(1), hold_until_ms: None, pay_to: None };
    let done = || Report::Done { result: serde_json::json!("done") };

    // The rogue calls both participants, and gets a proposal from each.
    let cfp = contract_net::Cfp { task: serde_json::json!("LHR-JFK"), deadline_ms: u64::MAX };
    let (to_pure, to_both, nowhere): (u128, u128, u128) = (rand::random(), rand::random(), rand::random());
    for (id, to) in [(to_pure, pure), (to_both, both)] {
        let answer = rogue_ctx.request_in::<_, Answer>(id, to, cfp.clone(), Some(Duration::from_secs(2))).await;
        assert!(matches!(answer, Ok(Answer::Propose { .. })), "{answer:?}");
    }
    // Then it answers and reports to them, as if it were their participant.
    rogue_ctx.send_in(to_pure, pure, propose()).await.unwrap();
    rogue_ctx.send_in(to_pure, pure, done()).await.unwrap();
    rogue_ctx.send_in(to_both, both, propose()).await.unwrap();
    rogue_ctx.send_in(nowhere, pure, done()).await.unwrap();
    wait_for(|| told.lock().len() == 4).await;

    // The initiator side of the agent with both roles calls the rogue, which proposes twice.
    let ctx = m.bureau.context(both).unwrap();
    let called =
        contract_net::call::<_, u64>(&ctx, &both_initiator, &[rogue], &"LHR-JFK", Duration::from_millis(300)).await;
    let to_rogue = called.unwrap().proposals[0].dialogue;
    rogue_ctx.send_in(to_rogue, both, propose()).await.unwrap();
    wait_for(|| told.lock().len() == 5).await;

    let told = told.lock().clone();
    let of = |id: u128| {
        told.iter().filter(|r| r.dialogue == id).map(|r| (r.cause, r.state().map(str::to_owned))).collect::<Vec<_>>()
    };
    let proposed = || (RefusalCause::OutOfOrder, Some("proposed".to_owned()));
    assert_eq!(of(to_pure), [proposed(), proposed()], "{told:?}");
    assert_eq!(of(to_both), [proposed()], "{told:?}");
    assert_eq!(of(nowhere), [(RefusalCause::UnknownDialogue, None)], "{told:?}");
    assert_eq!(of(to_rogue), [proposed()], "the initiator side's dialogue: {told:?}");
    let expected = &told.iter().find(|r| r.dialogue == to_pure).unwrap().expected;
    assert!(expected.iter().all(|e| e.contains("from initiator")), "what the rogue may send: {expected:?}");
    assert_eq!(both_participant.dialogues().unwrap().get(to_both).unwrap().state, "proposed", "unmoved");
    assert_eq!(both_initiator.dialogues().unwrap().get(to_rogue).unwrap().state, "proposed", "unmoved");

    let traveller = m.bureau.context(m.initiator).unwrap();
    let called =
        contract_net::call::<_, u64>(&traveller, &m.book, &[pure], &"LHR-JFK", Duration::from_millis(300)).await;
    let called = called.unwrap();
    let paid = contract_net::award_and_pay::<u64, String>(
        &traveller,
        &m.book,
        &called,
        &[pure],
        |p| u128::from(*p),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    let Paid::Settled(settled) = paid else { panic!("{paid:?}") };
    assert_eq!(settled.len(), 1, "{settled:?}");
    assert_eq!((&settled[0].result, settled[0].paid), (&Ok("booked at 90".into()), true), "{settled:?}");
    settles(&m, &ledger, &[(m.initiator, 910), (pure, 90), (both, 0), (rogue, 0)]).await;
    m.bureau.shutdown().await.unwrap();
}
