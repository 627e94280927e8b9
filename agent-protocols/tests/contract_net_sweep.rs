//! Contract-net's sweep, on simulated time: a call left unanswered expires on both sides once
//! its deadline and the grace after it have passed, and every dialogue, answered or not, is
//! forgotten on both sides after the rules' maximum age.

use std::sync::Arc;
use std::time::Duration;

use agent_core::sim::Sim;
use agent_core::{Address, Agent};
use agent_protocols::contract_net::{self, Participant, Unperformed, MAX_AWARD_AGE};
use agent_protocols::dialogue::EXPIRED;

/// Proposes its price, held for a second, after thinking `think`.
struct Quoter {
    think: Duration,
}

#[async_trait::async_trait]
impl Participant for Quoter {
    type Task = String;
    type Proposal = u64;
    type Result = ();

    async fn evaluate(&self, _initiator: Address, _task: String) -> Option<(u64, Option<u64>)> {
        tokio::time::sleep(self.think).await;
        Some((70, Some(agent_core::envelope::unix_now_ms() + 1_000)))
    }

    async fn perform(&self, _initiator: Address, _proposal: u64) -> Result<(), Unperformed> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_call_expires_on_both_sides_and_every_call_is_forgotten_after_the_maximum_age() {
    let sim = Sim::new(Sim::seed_from_env(3)).without_trace();
    let (office, shop) = (sim.add_host("office").unwrap(), sim.add_host("shop").unwrap());
    let serve = |name: &str, think: Duration| {
        let mut agent = Agent::builder(name).seed(name).build().unwrap();
        let book = contract_net::serve(&mut agent, Arc::new(Quoter { think }));
        (shop.add(agent).unwrap(), book)
    };
    let (quick, quick_book) = serve("quick", Duration::ZERO);
    // Answers after the call's deadline: its own dialogue refuses the late proposal.
    let (slow, slow_book) = serve("slow", Duration::from_secs(5));
    let mut initiator = Agent::builder("initiator").seed("initiator").build().unwrap();
    let book = contract_net::initiator(&mut initiator);
    let ctx = office.context(office.add(initiator).unwrap()).unwrap();

    let task = "a part".to_owned();
    let called =
        contract_net::call::<_, u64>(&ctx, &book, &[quick, slow], &task, Duration::from_secs(1)).await.unwrap();
    assert_eq!((called.proposals.len(), called.silent.as_slice()), (1, [slow].as_slice()), "{called:?}");
    let answered = called.proposals[0].dialogue;
    let unanswered = book.dialogues().unwrap().all().into_iter().find(|d| d.peer == slow).unwrap().id;
    let state =
        |book: &contract_net::Book, id: u128| book.dialogues().and_then(|d| d.get(id)).map(|d| d.state.to_string());

    // Past the call's deadline, the grace and a sweep: the unanswered call has expired on
    // both sides; the proposal waits for its decision (its hold ends it for the participant).
    tokio::time::sleep(Duration::from_secs(10 * 60)).await;
    let expired = Some(EXPIRED.to_owned());
    assert_eq!((state(&book, unanswered), state(&slow_book, unanswered)), (expired.clone(), expired));
    let proposed = Some("proposed".to_owned());
    assert_eq!((state(&book, answered), state(&quick_book, answered)), (proposed.clone(), proposed));

    // Past the maximum age and one more sweep: every dialogue forgotten on both sides.
    tokio::time::sleep(MAX_AWARD_AGE).await;
    let forgotten = [(&book, unanswered), (&slow_book, unanswered), (&book, answered), (&quick_book, answered)];
    for (book, id) in forgotten {
        assert_eq!(state(book, id), None, "forgotten after {MAX_AWARD_AGE:?}");
    }
    sim.shutdown().await;
}
