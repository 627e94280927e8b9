//! A participant's holds end each at its own time, whatever order they were made in: one
//! made later that ends sooner is released first, one decided before its end is released
//! by the decision only, and none is released before its end. On paused time.

use std::sync::Arc;
use std::time::Duration;

use agent_core::{Address, Agent, Bureau};
use agent_protocols::contract_net::{self, Outcome, Participant, Unperformed};
use parking_lot::Mutex;
use tokio::time::Instant;

/// Proposes the hold it is asked for (the task, in ms), as its proposal too, and notes
/// when each proposal is released.
struct Holder {
    started: Instant,
    released: Mutex<Vec<(u64, Duration)>>,
}

#[async_trait::async_trait]
impl Participant for Holder {
    type Task = u64;
    type Proposal = u64;
    type Result = ();

    async fn evaluate(&self, _initiator: Address, hold_ms: u64) -> Option<(u64, Option<u64>)> {
        Some((hold_ms, Some(agent_core::envelope::unix_now_ms() + hold_ms)))
    }

    async fn perform(&self, _initiator: Address, _proposal: u64) -> Result<(), Unperformed> {
        Ok(())
    }

    async fn release(&self, _initiator: Address, hold_ms: u64) {
        self.released.lock().push((hold_ms, self.started.elapsed()));
    }
}

#[tokio::test(start_paused = true)]
async fn holds_end_in_the_order_of_their_ends_not_of_their_making() {
    let bureau = Bureau::new().unwrap();
    let holder = Arc::new(Holder { started: Instant::now(), released: Mutex::default() });
    let mut agent = Agent::builder("holder").build().unwrap();
    contract_net::serve(&mut agent, holder.clone());
    let participant = bureau.add(agent).unwrap();
    let book = contract_net::Book::default();
    let initiator = bureau.add(Agent::builder("initiator").build().unwrap()).unwrap();
    let ctx = bureau.context(initiator).unwrap();
    let call = |hold_ms: u64| {
        let (ctx, book) = (ctx.clone(), book.clone());
        async move {
            let called =
                contract_net::call::<_, u64>(&ctx, &book, &[participant], &hold_ms, Duration::from_millis(100))
                    .await
                    .unwrap();
            assert_eq!(called.proposals.len(), 1, "{hold_ms}: {called:?}");
            called
        }
    };

    // The timer first sleeps for the 3 s hold; the 1 s hold made next must wake it sooner.
    let _long = call(3_000).await;
    let _short = call(1_000).await;
    let decided = call(2_000).await;
    let outcome = contract_net::award::<u64, ()>(&ctx, &book, &decided, &[], Duration::from_secs(1)).await.unwrap();
    assert!(matches!(outcome, Outcome::NoneChosen), "{outcome:?}");

    let until = Instant::now() + Duration::from_secs(10);
    while holder.released.lock().len() < 3 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let released = holder.released.lock().clone();
    let order: Vec<u64> = released.iter().map(|(hold_ms, _)| *hold_ms).collect();
    assert_eq!(order, [2_000, 1_000, 3_000], "the rejected one at once, then by their ends: {released:?}");
    assert!(released[0].1 < Duration::from_millis(500), "released when rejected: {released:?}");
    for (hold_ms, at) in &released[1..] {
        let end = Duration::from_millis(*hold_ms);
        assert!(*at >= end && *at < end + Duration::from_millis(300), "{hold_ms} ms hold released at {at:?}");
    }
    // Nothing is released twice, and nothing more comes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(holder.released.lock().len(), 3, "{:?}", holder.released.lock());
    bureau.shutdown().await.unwrap();
}
