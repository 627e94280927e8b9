//! Only an agent that answers late proposals may call for proposals: its book must come
//! from [`contract_net::initiator`] on that agent (FIPA requires a late proposal to be
//! rejected as late, and only the agent's handlers can answer one that comes after the
//! call stopped waiting; `contract_net.rs` tests that answer).

use std::time::Duration;

use agent_core::{Agent, Bureau};
use agent_protocols::contract_net::{self, ContractNetError};

mod common;

use common::cnp::Seller;

#[tokio::test]
async fn a_call_with_a_book_no_handler_answers_is_refused() {
    let bureau = Bureau::new().unwrap();
    let mut serving = Agent::builder("seller").build().unwrap();
    contract_net::serve(&mut serving, Seller::new(100));
    let seller = bureau.add(serving).unwrap();

    // A book made by hand: nobody answers its late proposals.
    let bare = bureau.add(Agent::builder("bare").build().unwrap()).unwrap();
    let ctx = bureau.context(bare).unwrap();
    let refused =
        contract_net::call::<_, u64>(&ctx, &contract_net::Book::default(), &[seller], &"LHR-JFK", SECOND).await;
    assert!(matches!(refused, Err(ContractNetError::NotAnInitiator { agent }) if agent == bare), "{refused:?}");

    // Another agent's initiator book: its handlers would answer, not this agent's.
    let mut other = Agent::builder("other").build().unwrap();
    let others = contract_net::initiator(&mut other);
    bureau.add(other).unwrap();
    let refused = contract_net::call::<_, u64>(&ctx, &others, &[seller], &"LHR-JFK", SECOND).await;
    assert!(matches!(refused, Err(ContractNetError::NotAnInitiator { .. })), "{refused:?}");
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("contract_net::initiator"), "the error says what to do: {message}");

    // Its own: the call goes out.
    let mut caller = Agent::builder("caller").build().unwrap();
    let book = contract_net::initiator(&mut caller);
    let ctx = bureau.context(bureau.add(caller).unwrap()).unwrap();
    let called = contract_net::call::<_, u64>(&ctx, &book, &[seller], &"LHR-JFK", SECOND).await.unwrap();
    assert_eq!(called.proposals.len(), 1);
    bureau.shutdown().await.unwrap();
}

const SECOND: Duration = Duration::from_secs(1);

/// An agent that is also a participant must join its two sides (`refuse_strays_serving`):
/// `initiator` after `serve` adds no handler of its own (the participant side's are there),
/// and nothing would pass it the late proposals, so its calls are refused.
#[tokio::test]
async fn a_participant_made_initiator_without_joining_its_sides_may_not_call() {
    let bureau = Bureau::new().unwrap();
    let mut serving = Agent::builder("seller").build().unwrap();
    contract_net::serve(&mut serving, Seller::new(100));
    let seller = bureau.add(serving).unwrap();

    let mut unjoined = Agent::builder("unjoined").build().unwrap();
    contract_net::serve(&mut unjoined, Seller::new(120));
    let book = contract_net::initiator(&mut unjoined);
    let ctx = bureau.context(bureau.add(unjoined).unwrap()).unwrap();
    let refused = contract_net::call::<_, u64>(&ctx, &book, &[seller], &"LHR-JFK", SECOND).await;
    assert!(matches!(refused, Err(ContractNetError::NotAnInitiator { .. })), "{refused:?}");

    let mut joined = Agent::builder("joined").build().unwrap();
    let selling = contract_net::serve(&mut joined, Seller::new(120));
    let buying = contract_net::Book::default();
    contract_net::refuse_strays_serving(&mut joined, &buying, &selling);
    let ctx = bureau.context(bureau.add(joined).unwrap()).unwrap();
    let called = contract_net::call::<_, u64>(&ctx, &buying, &[seller], &"LHR-JFK", SECOND).await.unwrap();
    assert_eq!(called.proposals.len(), 1);
    bureau.shutdown().await.unwrap();
}
