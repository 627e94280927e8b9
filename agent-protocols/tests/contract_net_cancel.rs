//! Withdrawing a contract-net call ([`contract_net::cancel`]): every proposer and every
//! participant that has not answered is told, and the outcome names them; when the
//! initiator's storage cannot record a cancel, the outcome says so and no one is told.

use std::sync::Arc;
use std::time::Duration;

use agent_core::sim::Sim;
use agent_core::{Address, Agent, Context};
use agent_protocols::contract_net::{self, AwardFailure, Cancel, CancelCause, ContractNetError, Outcome};
use agent_protocols::dialogue::DialogueError;
use parking_lot::Mutex;

mod common;

use common::cnp::{add_seller, balance, market, paid_market, wait_for, Seller};

/// The initiator withdraws its call: every proposer is told and releases its hold, and a
/// late award of a withdrawn call is refused by the dialogue.
#[tokio::test]
async fn a_withdrawn_call_is_cancelled_for_every_proposer() {
    let m = market().await;
    let sellers = [Seller::new(100), Seller::new(120)];
    let addresses: Vec<Address> =
        sellers.iter().enumerate().map(|(i, s)| add_seller(&m, &format!("cancelled {i}"), s.clone())).collect();
    let ctx = m.bureau.context(m.initiator).unwrap();
    let called =
        contract_net::call::<_, u64>(&ctx, &m.book, &addresses, &"LHR-JFK", Duration::from_secs(2)).await.unwrap();
    let outcome = contract_net::cancel::<u64, String>(&ctx, &m.book, &called, Some("trip called off")).await.unwrap();
    let Outcome::Cancelled { mut cancelled } = outcome else { panic!("not cancelled: {outcome:?}") };
    cancelled.sort();
    let mut proposers = addresses.clone();
    proposers.sort();
    assert_eq!(cancelled, proposers, "every proposer told");
    wait_for(|| sellers.iter().all(|s| *s.released.lock() == 1)).await;
    let outcome =
        contract_net::award::<u64, String>(&ctx, &m.book, &called, &addresses, Duration::from_secs(1)).await.unwrap();
    // Each winner named is not awardable, and says why.
    let Outcome::AllFailed(mut failed) = outcome else { panic!("awarded after a cancel: {outcome:?}") };
    failed.sort_by_key(|(winner, _)| *winner);
    let cancelled_state = AwardFailure::NotAwardable { state: "cancelled".into() };
    assert_eq!(failed, proposers.iter().map(|p| (*p, cancelled_state.clone())).collect::<Vec<_>>());
    // Nothing is left to cancel: a second cancel says so rather than claim it cancelled.
    let again = contract_net::cancel::<u64, String>(&ctx, &m.book, &called, None).await;
    assert!(matches!(again, Err(ContractNetError::NothingToCancel)), "{again:?}");
    m.bureau.shutdown().await.unwrap();
}

/// An agent that is called but never answers, and keeps every [`Cancel`] it is sent.
fn never_answers(name: &str) -> (Agent, Arc<Mutex<Vec<Cancel>>>) {
    let heard: Arc<Mutex<Vec<Cancel>>> = Arc::default();
    let mut agent = Agent::builder(name).seed(name).build().unwrap();
    agent.on_message(|_ctx: Context, _from: Address, _cfp: contract_net::Cfp| async {});
    let told = heard.clone();
    agent.on_message(move |_ctx: Context, _from: Address, cancel: Cancel| {
        told.lock().push(cancel);
        std::future::ready(())
    });
    (agent, heard)
}

/// A participant that never answered the call is still told when the call is withdrawn,
/// and named in the outcome with the proposer; the call was on a ledger, and no funds
/// moved or stay locked.
#[tokio::test]
async fn a_participant_that_never_answered_is_told_of_the_cancel_and_named() {
    let (m, ledger) = paid_market(1_000).await;
    let seller = Seller::priced(100);
    let proposer = add_seller(&m, "proposer", seller.clone());
    let (silent, heard) = never_answers("never answers");
    let silent = m.bureau.add(silent).unwrap();
    let ctx = m.bureau.context(m.initiator).unwrap();
    let called =
        contract_net::call::<_, u64>(&ctx, &m.book, &[proposer, silent], &"LHR-JFK", Duration::from_millis(300))
            .await
            .unwrap();
    assert_eq!((called.proposals.len(), called.silent.as_slice()), (1, [silent].as_slice()));

    let outcome = contract_net::cancel::<u64, String>(&ctx, &m.book, &called, None).await.unwrap();
    let Outcome::Cancelled { mut cancelled } = outcome else { panic!("not cancelled: {outcome:?}") };
    cancelled.sort();
    let mut everyone = vec![proposer, silent];
    everyone.sort();
    assert_eq!(cancelled, everyone, "the silent participant is named with the proposer");
    wait_for(|| heard.lock().len() == 1 && *seller.released.lock() == 1).await;
    let told = heard.lock()[0].clone();
    assert_eq!((told.cause, told.detail), (CancelCause::CallWithdrawn, None), "told why, by its code");
    assert_eq!(balance(&m, &ledger, m.initiator).await, 1_000, "nothing paid");
    for participant in [proposer, silent] {
        assert_eq!(balance(&m, &ledger, participant).await, 0, "nothing paid to a participant");
    }
    assert!(ctx.wallet().unwrap().open_escrows(10).await.unwrap().is_empty(), "nothing locked");
    assert_eq!(ledger.audit_total().unwrap(), 1_000);
    m.bureau.shutdown().await.unwrap();
}

/// The initiator's storage refuses writes (an outage on its host: the agent keeps running
/// and sending). The cancel says storage failed and names everyone as not told, rather than
/// claiming there was nothing to cancel; no participant hears a cancel it could not record,
/// and the proposer still holds its seat. Once storage is back, the same cancel goes out.
#[tokio::test(start_paused = true)]
async fn a_cancel_that_storage_cannot_record_says_so_and_tells_no_one() {
    let sim = Sim::new(12);
    let (office, shop) = (sim.add_host("office").unwrap(), sim.add_host("shop").unwrap());
    let seller = Seller::new(100);
    let mut serving = Agent::builder("seller").seed("seller").build().unwrap();
    contract_net::serve(&mut serving, seller.clone());
    let proposer = shop.add(serving).unwrap();
    let (silent, heard) = never_answers("silent");
    let silent = shop.add(silent).unwrap();
    let mut traveller = Agent::builder("traveller").seed("traveller").build().unwrap();
    let book = contract_net::initiator(&mut traveller);
    let ctx = office.context(office.add(traveller).unwrap()).unwrap();

    let called = contract_net::call::<_, u64>(&ctx, &book, &[proposer, silent], &"LHR-JFK", Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!((called.proposals.len(), called.silent.as_slice()), (1, [silent].as_slice()));
    office.fail_storage(true);
    let cancelled = contract_net::cancel::<u64, String>(&ctx, &book, &called, Some("trip called off")).await;
    let Err(ContractNetError::CancelNotRecorded { cancelled, mut unrecorded, error }) = cancelled else {
        panic!("a cancel storage could not record must say so: {cancelled:?}")
    };
    unrecorded.sort();
    let mut everyone = vec![proposer, silent];
    everyone.sort();
    assert_eq!((cancelled, unrecorded), (vec![], everyone.clone()), "no one told, everyone named");
    assert!(matches!(*error, DialogueError::Storage { .. }), "{error:?}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(heard.lock().is_empty(), "the silent participant was told nothing");
    assert_eq!(*seller.released.lock(), 0, "the proposer was told nothing, and still holds its seat");

    // Storage back: the dialogues were left as they were, so the same cancel now goes out.
    office.fail_storage(false);
    let outcome = contract_net::cancel::<u64, String>(&ctx, &book, &called, None).await.unwrap();
    let Outcome::Cancelled { mut cancelled } = outcome else { panic!("not cancelled: {outcome:?}") };
    cancelled.sort();
    assert_eq!(cancelled, everyone, "everyone told once storage is back");
    assert!(sim.wait_until(Duration::from_secs(5), Duration::from_millis(10), || heard.lock().len() == 1).await);
    assert!(sim.wait_until(Duration::from_secs(5), Duration::from_millis(10), || *seller.released.lock() == 1).await);
    sim.shutdown().await;
}
