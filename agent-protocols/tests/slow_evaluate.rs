//! A participant whose `evaluate` takes long (an hour, on the paused clock) goes on with
//! its other dialogues meanwhile, and evaluates at most `MAX_EVALUATING` calls at once.

use std::sync::Arc;
use std::time::Duration;

use agent_core::{Address, Agent, Bureau};
use agent_protocols::contract_net::{self, Declined, NoProposal, Outcome, Participant, Unperformed, MAX_EVALUATING};
use parking_lot::Mutex;

mod common;

use common::cnp::{market, wait_for, Market};

const HOUR: Duration = Duration::from_secs(3600);

/// Proposes 50 at once for a "quick" task, 100 after an hour's thought for any other.
#[derive(Default)]
struct Ponderer {
    /// Evaluations running now, and the most that ever ran at once.
    evaluating: Mutex<(usize, usize)>,
    performed: Mutex<u32>,
}

struct Running<'a>(&'a Mutex<(usize, usize)>);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.lock().0 -= 1;
    }
}

#[async_trait::async_trait]
impl Participant for Ponderer {
    type Task = String;
    type Proposal = u64;
    type Result = u64;

    async fn evaluate(&self, _initiator: Address, task: String) -> Option<(u64, Option<u64>)> {
        if task == "quick" {
            return Some((50, None));
        }
        {
            let mut evaluating = self.evaluating.lock();
            evaluating.0 += 1;
            evaluating.1 = evaluating.1.max(evaluating.0);
        }
        // Counted out however it ends: thought through, or dropped at its deadline.
        let _running = Running(&self.evaluating);
        tokio::time::sleep(HOUR).await;
        Some((100, None))
    }

    async fn perform(&self, _initiator: Address, price: u64) -> Result<u64, Unperformed> {
        *self.performed.lock() += 1;
        Ok(price)
    }
}

/// A market (its initiator, the traveller) with one participant, a [`Ponderer`].
async fn ponderer_market() -> (Market, Arc<Ponderer>, Address) {
    let m = market().await;
    let ponderer = Arc::new(Ponderer::default());
    let mut agent = Agent::builder("ponderer").build().unwrap();
    contract_net::serve(&mut agent, ponderer.clone());
    let participant = m.bureau.add(agent).unwrap();
    (m, ponderer, participant)
}

fn add_initiator(bureau: &Bureau, name: &str) -> (Address, contract_net::Book) {
    let mut agent = Agent::builder(name).build().unwrap();
    let book = contract_net::initiator(&mut agent);
    (bureau.add(agent).unwrap(), book)
}

#[tokio::test(start_paused = true)]
async fn a_slow_evaluation_does_not_hold_up_the_participants_other_calls() {
    let (m, ponderer, participant) = ponderer_market().await;

    let slow_ctx = m.bureau.context(m.initiator).unwrap();
    let slow_book = m.book.clone();
    let slow = tokio::spawn(async move {
        contract_net::call::<_, u64>(&slow_ctx, &slow_book, &[participant], &"think", 2 * HOUR).await.unwrap()
    });
    wait_for(|| ponderer.evaluating.lock().0 == 1).await;

    // Another initiator's call, made while the first is being thought over, is answered
    // and awarded in seconds, not after the hour.
    let (quick, quick_book) = add_initiator(&m.bureau, "hurried");
    let ctx = m.bureau.context(quick).unwrap();
    let started = tokio::time::Instant::now();
    let called = contract_net::call::<_, u64>(&ctx, &quick_book, &[participant], &"quick", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(called.proposals.len(), 1, "the quick call was answered: {called:?}");
    let outcome = contract_net::award::<u64, u64>(&ctx, &quick_book, &called, &[participant], Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Awarded(vec![(participant, Ok(50))]));
    assert!(started.elapsed() < Duration::from_secs(60), "the quick call took {:?}", started.elapsed());
    assert_eq!(ponderer.evaluating.lock().0, 1, "the slow evaluation still runs");

    // The slow call gets its proposal once the hour is thought through.
    let slowly = slow.await.unwrap();
    assert_eq!(slowly.proposals.len(), 1, "{slowly:?}");
    assert_eq!(slowly.proposals[0].proposal, 100);
    assert_eq!(*ponderer.performed.lock(), 1);
    m.bureau.shutdown().await.unwrap();
}

/// Calls beyond `MAX_EVALUATING` are refused as busy at once, not waited for: the
/// participant meanwhile answers the rest of its mail.
#[tokio::test(start_paused = true)]
async fn calls_beyond_max_evaluating_are_refused_as_busy_at_once() {
    let (m, ponderer, participant) = ponderer_market().await;

    // From three initiators: each may have at most 256 dialogues open with one participant.
    let calls = MAX_EVALUATING + 44;
    let initiators: Vec<_> = (0..3).map(|i| add_initiator(&m.bureau, &format!("initiator {i}"))).collect();
    let mut called = tokio::task::JoinSet::new();
    for i in 0..calls {
        let (initiator, book) = &initiators[i % initiators.len()];
        let (ctx, book) = (m.bureau.context(*initiator).unwrap(), book.clone());
        called.spawn(async move {
            let started = tokio::time::Instant::now();
            let called = contract_net::call::<_, u64>(&ctx, &book, &[participant], &"think", 3 * HOUR).await.unwrap();
            (called, started.elapsed())
        });
    }
    let (mut proposals, mut busy) = (0, 0);
    while let Some(joined) = called.join_next().await {
        let (called, took) = joined.unwrap();
        proposals += called.proposals.len();
        for (_, refused) in &called.refused {
            assert!(matches!(refused, NoProposal::Refused { cause: Declined::Busy, .. }), "{refused:?}");
            assert!(took < Duration::from_secs(60), "a busy refusal came after {took:?}");
            busy += 1;
        }
    }
    assert_eq!((proposals, busy), (MAX_EVALUATING, calls - MAX_EVALUATING));
    assert_eq!(ponderer.evaluating.lock().1, MAX_EVALUATING, "never more at once");
    m.bureau.shutdown().await.unwrap();
}

/// An evaluation still running at its call's deadline is dropped, freeing its place: one
/// initiator's calls that never end cannot keep the participant busy for good.
#[tokio::test(start_paused = true)]
async fn evaluations_past_their_calls_deadline_free_their_places() {
    let (m, ponderer, participant) = ponderer_market().await;

    let mut called = tokio::task::JoinSet::new();
    for _ in 0..MAX_EVALUATING {
        let (ctx, book) = (m.bureau.context(m.initiator).unwrap(), m.book.clone());
        called.spawn(async move {
            contract_net::call::<_, u64>(&ctx, &book, &[participant], &"think", Duration::from_secs(10)).await.unwrap()
        });
    }
    while let Some(joined) = called.join_next().await {
        assert!(joined.unwrap().proposals.is_empty(), "an hour's thought cannot answer a 10 s call");
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(ponderer.evaluating.lock().0, 0, "the evaluations past their deadline were dropped");

    let (quick, quick_book) = add_initiator(&m.bureau, "hurried");
    let ctx = m.bureau.context(quick).unwrap();
    let called = contract_net::call::<_, u64>(&ctx, &quick_book, &[participant], &"quick", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(called.proposals.len(), 1, "the quick call was answered: {called:?}");
    m.bureau.shutdown().await.unwrap();
}
