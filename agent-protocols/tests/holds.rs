//! A participant's holds end each at its own time, whatever order they were made in: one
//! made later that ends sooner is released first, one decided before its end is released
//! by the decision only, and none is released before its end. On paused time.

use std::sync::Arc;
use std::time::Duration;

use agent_core::sim::Sim;
use agent_core::{Address, Agent, Bureau};
use agent_protocols::contract_net::{self, Outcome, Participant, Unperformed};
use parking_lot::Mutex;
use tokio::time::Instant;

/// Proposes the hold it is asked for (the task, in ms), as its proposal too, and notes
/// when each proposal is released. Its release panics for a proposal of `panics_on` ms, and
/// takes `slow` for one of `slow_on` ms.
struct Holder {
    started: Instant,
    released: Mutex<Vec<(u64, Duration)>>,
    panics_on: Option<u64>,
    slow_on: Option<(u64, Duration)>,
}

impl Holder {
    fn new() -> Arc<Holder> {
        Arc::new(Holder { started: Instant::now(), released: Mutex::default(), panics_on: None, slow_on: None })
    }
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
        assert_ne!(self.panics_on, Some(hold_ms), "a release that panics");
        if let Some((slow_ms, takes)) = self.slow_on {
            if slow_ms == hold_ms {
                tokio::time::sleep(takes).await;
            }
        }
        self.released.lock().push((hold_ms, self.started.elapsed()));
    }
}

#[tokio::test(start_paused = true)]
async fn holds_end_in_the_order_of_their_ends_not_of_their_making() {
    let bureau = Bureau::new().unwrap();
    let holder = Holder::new();
    let mut agent = Agent::builder("holder").build().unwrap();
    contract_net::serve(&mut agent, holder.clone());
    let participant = bureau.add(agent).unwrap();
    let mut initiator = Agent::builder("initiator").build().unwrap();
    let book = contract_net::initiator(&mut initiator);
    let ctx = bureau.context(bureau.add(initiator).unwrap()).unwrap();
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
        // Ends are given in Unix milliseconds: a millisecond either way is the clocks' rounding.
        assert!(
            *at + Duration::from_millis(5) >= end && *at < end + Duration::from_millis(300),
            "{hold_ms} ms hold released at {at:?}"
        );
    }
    // Nothing is released twice, and nothing more comes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(holder.released.lock().len(), 3, "{:?}", holder.released.lock());
    bureau.shutdown().await.unwrap();
}

/// Calls `participant` from a fresh initiator for a proposal held `hold_ms`.
async fn call_for(ctx: &agent_core::Context, book: &contract_net::Book, participant: Address, hold_ms: u64) {
    let called =
        contract_net::call::<_, u64>(ctx, book, &[participant], &hold_ms, Duration::from_millis(100)).await.unwrap();
    assert_eq!(called.proposals.len(), 1, "{hold_ms}: {called:?}");
}

/// A release that panics, or takes long, holds up no other hold: each is released when it
/// ends, and the timer goes on.
#[tokio::test(start_paused = true)]
async fn a_release_that_panics_or_is_slow_holds_up_no_other() {
    let bureau = Bureau::new().unwrap();
    let holder = Arc::new(Holder {
        panics_on: Some(1_000),
        slow_on: Some((1_001, Duration::from_secs(5))),
        ..Arc::into_inner(Holder::new()).unwrap()
    });
    let mut agent = Agent::builder("holder").build().unwrap();
    contract_net::serve(&mut agent, holder.clone());
    let participant = bureau.add(agent).unwrap();
    let mut initiator = Agent::builder("initiator").build().unwrap();
    let book = contract_net::initiator(&mut initiator);
    let ctx = bureau.context(bureau.add(initiator).unwrap()).unwrap();
    for hold_ms in [1_000, 1_001, 1_002, 3_000] {
        call_for(&ctx, &book, participant, hold_ms).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let released = holder.released.lock().clone();
    let order: Vec<u64> = released.iter().map(|(hold_ms, _)| *hold_ms).collect();
    assert_eq!(order, [1_002, 3_000], "the others on time, the slow one still going: {released:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let released = holder.released.lock().clone();
    assert_eq!(released.len(), 3, "the slow one done too: {released:?}");
    bureau.shutdown().await.unwrap();
}

/// A hold that ends while its agent's storage refuses writes is not forgotten: the release
/// is tried again, and happens once storage is back.
#[tokio::test(start_paused = true)]
async fn a_hold_ending_during_a_storage_outage_is_released_once_storage_is_back() {
    let (sim, shop, holder) = held_a_second_on_a_shop(5).await;
    shop.fail_storage(true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(holder.released.lock().is_empty(), "not released while it cannot be recorded");
    shop.fail_storage(false);
    assert!(
        sim.wait_until(Duration::from_secs(5), Duration::from_millis(10), || holder.released.lock().len() == 1).await,
        "released once storage is back"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(holder.released.lock().len(), 1, "released once");
    sim.shutdown().await;
}

/// A crash ends a participant's hold timer with the rest of its host, as a real crash
/// would: nothing of the crashed agent goes on acting (its restarted self, if added again,
/// finds the hold in storage and takes over).
#[tokio::test(start_paused = true)]
async fn a_crashed_hosts_timer_releases_nothing_after_the_crash() {
    let (sim, shop, holder) = held_a_second_on_a_shop(6).await;
    sim.crash(&shop);
    // Storage is back at once: only the timer's end keeps the crashed agent from acting.
    sim.restart(&shop).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(holder.released.lock().is_empty(), "released by a crashed agent: {:?}", holder.released.lock());
    // Only this test holds the participant now: no task of the crashed agent does.
    assert_eq!(Arc::strong_count(&holder), 1, "a task of the crashed agent still runs");
    sim.shutdown().await;
}

/// A holder on host "shop", called from host "office" for a proposal held a second.
async fn held_a_second_on_a_shop(seed: u64) -> (Sim, agent_core::sim::Host, Arc<Holder>) {
    let sim = Sim::new(seed);
    let (office, shop) = (sim.add_host("office").unwrap(), sim.add_host("shop").unwrap());
    let holder = Holder::new();
    let mut agent = Agent::builder("holder").seed("holder").build().unwrap();
    contract_net::serve(&mut agent, holder.clone());
    let participant = shop.add(agent).unwrap();
    let mut initiator = Agent::builder("initiator").seed("initiator").build().unwrap();
    let book = contract_net::initiator(&mut initiator);
    let ctx = office.context(office.add(initiator).unwrap()).unwrap();
    call_for(&ctx, &book, participant, 1_000).await;
    (sim, shop, holder)
}
