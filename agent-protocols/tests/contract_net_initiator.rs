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
