//! What a refused peer is told, cause by cause: the dialogue, where it stands (open or
//! closed in a state, or no such dialogue, as a typed field), what was expected, and for a
//! late message the deadline that passed. The refusal changes nothing.

use std::time::Duration;

use agent_core::{Address, Agent, Bureau, Identity, Message};
use agent_protocols::dialogue::{DialogueError, Dialogues, RefusalCause, Refused, Rules, Standing};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Offer(u64);
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Counter(u64);
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Decline;

const T0: u64 = 1_790_000_000_000;

/// buyer: Offer; seller: Counter within 5 s, or Decline (also after the 5 s).
fn haggle() -> Rules {
    Rules::builder("haggle")
        .initial("start")
        .step::<Offer>("start", "buyer", "offered")
        .step::<Counter>("offered", "seller", "countered")
        .variant_step::<Decline>(Decline::NAME, "offered", "seller", "declined", true)
        .step::<Offer>("countered", "buyer", "offered")
        .terminal("declined")
        .deadline("offered", Duration::from_secs(5))
        .build()
        .unwrap()
}

/// The refusal told for `refused`, after checking it reads back from the wire as sent.
fn told(refused: Result<impl std::fmt::Debug, DialogueError>) -> Refused {
    let error = refused.expect_err("refused");
    let told = error.refusal().unwrap_or_else(|| panic!("a peer's doing is told: {error}"));
    let wire = serde_json::to_string(&told).unwrap();
    assert_eq!(serde_json::from_str::<Refused>(&wire).unwrap(), told, "{wire}");
    told
}

fn open(state: &str) -> Standing {
    Standing::Open { state: state.into() }
}

#[tokio::test]
async fn every_refusal_names_the_dialogue_where_it_stands_and_what_was_expected() {
    let bureau = Bureau::new().unwrap();
    let buyer: Address = bureau.add(Agent::builder("buyer").seed("buyer").build().unwrap()).unwrap();
    let seller_address = bureau.add(Agent::builder("seller").seed("seller").build().unwrap()).unwrap();
    let storage = bureau.context(seller_address).unwrap().storage().unwrap();
    let seller = Dialogues::load(haggle(), "seller", storage).unwrap().with_max_open_per_peer(1);
    let stranger = Identity::from_seed("stranger").address();

    // No such dialogue, and a counter does not open one.
    let unknown = told(seller.incoming::<Counter>(1, buyer, T0));
    assert_eq!((unknown.dialogue, &unknown.standing), (1, &Standing::NoSuchDialogue), "{unknown:?}");
    assert_eq!((unknown.cause, unknown.deadline_ms), (RefusalCause::UnknownDialogue, None), "{unknown:?}");
    assert!(seller.get(1).is_none(), "nothing opened");

    seller.incoming::<Offer>(1, buyer, T0).unwrap();
    let before = seller.get(1).unwrap();

    // Out of order: the state, and what may follow there.
    let out_of_order = told(seller.incoming::<Offer>(1, buyer, T0));
    assert_eq!((out_of_order.cause, &out_of_order.standing), (RefusalCause::OutOfOrder, &open("offered")));
    assert_eq!(out_of_order.expected, ["agora.test.Counter from seller", "Decline from seller"].map(expected));

    // Not a party: the dialogue as it stands, and nothing this sender may send.
    let not_a_party = told(seller.incoming::<Counter>(1, stranger, T0));
    // Told nothing of a dialogue it is no party to, in the standing or in the detail.
    assert_eq!((not_a_party.cause, &not_a_party.standing), (RefusalCause::NotAParty, &Standing::NoSuchDialogue));
    assert!(!not_a_party.detail.contains("offered"), "{not_a_party:?}");
    assert!(not_a_party.expected.is_empty(), "{not_a_party:?}");

    // Too many open: the dialogue it would open, which there is not.
    let too_many = told(seller.incoming::<Offer>(2, buyer, T0));
    assert_eq!((too_many.dialogue, &too_many.standing), (2, &Standing::NoSuchDialogue), "{too_many:?}");
    assert_eq!(too_many.cause, RefusalCause::TooManyOpen);
    assert!(seller.get(2).is_none(), "nothing opened");

    // Late: the deadline that passed, and what may still follow after it.
    let late = told(seller.outgoing::<Counter>(1, T0 + 5_001));
    assert_eq!((late.cause, &late.standing), (RefusalCause::Late, &open("offered")), "{late:?}");
    assert_eq!(
        (late.deadline_ms, late.expected.as_slice()),
        (Some(T0 + 5_000), ["Decline from seller".to_owned()].as_slice())
    );
    assert_eq!(seller.get(1).unwrap(), before, "no refusal changed the dialogue");

    // Exists: the id is taken, by a dialogue open in its state.
    match seller.open(1, buyer, "buyer", T0) {
        Err(DialogueError::Exists { dialogue: 1, standing }) => assert_eq!(standing, open("offered")),
        other => panic!("the id is taken: {other:?}"),
    }

    // Closed: the terminal state it closed in; nothing may follow.
    seller.outgoing_named(Decline::NAME, 1, T0 + 6_000).unwrap();
    let closed = told(seller.incoming::<Offer>(1, buyer, T0 + 6_001));
    let in_declined = Standing::Closed { state: "declined".into() };
    assert_eq!((closed.cause, &closed.standing), (RefusalCause::Closed, &in_declined), "{closed:?}");
    assert!(closed.expected.is_empty() && closed.deadline_ms.is_none(), "{closed:?}");
    // A non-party is not told it is closed.
    let stranger_told = told(seller.incoming::<Offer>(1, stranger, T0 + 6_001));
    assert_eq!(stranger_told.standing, Standing::NoSuchDialogue, "{stranger_told:?}");
    assert!(!stranger_told.detail.contains("declined"), "{stranger_told:?}");
    bureau.shutdown().await.unwrap();
}

/// The names the rules give what may follow: a step declared with its type is named by the
/// type's message name.
fn expected(text: &str) -> String {
    text.replace("agora.test.Counter", Counter::NAME)
}
