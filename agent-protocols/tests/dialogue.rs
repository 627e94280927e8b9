//! Dialogues: rules checked when declared; every message in and out checked against them;
//! refusals change nothing and tell the peer what was expected; terminal states close for
//! good; deadlines expire; a restarted agent resumes its dialogues.

use std::sync::Arc;
use std::time::Duration;

use agent_core::{Address, Agent, Bureau, Config, Context, Identity, Message};
use agent_protocols::dialogue::{DialogueError, Dialogues, RefusalCause, Refused, Rules, RulesError, Step, EXPIRED};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Offer(u64);
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Counter(u64);
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Accept;
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Decline;

fn haggle() -> Rules {
    haggle_rules().unwrap()
}

// ANCHOR: haggle
/// buyer: Offer; seller: Counter (buyer may Offer again), Accept or Decline. A seller may
/// take 5 s to answer.
fn haggle_rules() -> Result<Rules, RulesError> {
    let rules = Rules::builder("haggle")
        .initial("start")
        .step::<Offer>("start", "buyer", "offered")
        .step::<Counter>("offered", "seller", "countered")
        .step::<Accept>("offered", "seller", "accepted")
        .step::<Decline>("offered", "seller", "declined")
        .step::<Offer>("countered", "buyer", "offered")
        .step::<Decline>("countered", "buyer", "declined")
        .terminal("accepted")
        .terminal("declined")
        .deadline("offered", Duration::from_secs(5))
        .build()?;
    Ok(rules)
}
// ANCHOR_END: haggle

/// docs/protocols.md shows the rules above as they are built here.
#[test]
fn the_docs_show_the_haggle_rules_as_built() {
    let source = include_str!("dialogue.rs");
    let (start, end) = ("// ANCHOR: haggle\n", "// ANCHOR_END: haggle\n");
    let code = &source[source.find(start).unwrap() + start.len()..source.find(end).unwrap()];
    let docs = include_str!("../../docs/protocols.md");
    assert!(docs.contains(&format!("```rust\n{code}```\n")), "docs/protocols.md must show the haggle rules as built");
}

const T0: u64 = 1_790_000_000_000;

async fn storage_of(bureau: &Bureau, name: &str) -> (Address, agent_core::storage::Storage) {
    let address = bureau.add(Agent::builder(name).seed(name).build().unwrap()).unwrap();
    (address, bureau.context(address).unwrap().storage().unwrap())
}

#[test]
fn rules_that_could_hang_mislead_or_never_be_reached_are_refused() {
    let base = || Rules::builder("r").initial("a").step::<Offer>("a", "x", "b").terminal("b");
    assert!(base().build().is_ok());
    assert!(matches!(Rules::builder("r").step::<Offer>("a", "x", "b").build(), Err(RulesError::NoInitial(_))));
    assert!(matches!(base().step::<Offer>("a", "x", "c").terminal("c").build(), Err(RulesError::Ambiguous { .. })));
    assert!(matches!(base().step::<Accept>("b", "x", "a").build(), Err(RulesError::TerminalHasExit { .. })));
    assert!(
        matches!(base().step::<Accept>("a", "x", "c").build(), Err(RulesError::DeadEnd { state, .. }) if state == "c")
    );
    assert!(
        matches!(base().terminal("island").build(), Err(RulesError::Unreachable { state, .. }) if state == "island")
    );
}

#[tokio::test]
async fn each_misbehaviour_is_refused_with_its_cause_and_changes_nothing() {
    let bureau = Bureau::new().unwrap();
    let (buyer, _) = storage_of(&bureau, "buyer").await;
    let (_, storage) = storage_of(&bureau, "seller").await;
    let stranger = Identity::from_seed("stranger").address();
    let seller = Dialogues::load(haggle(), "seller", storage).unwrap();

    // Only a buyer's Offer opens a haggle here.
    assert!(matches!(seller.incoming::<Counter>(1, buyer, T0), Err(DialogueError::Unknown { .. })));
    seller.incoming::<Offer>(1, buyer, T0).unwrap();
    let before = seller.get(1).unwrap();
    assert_eq!(before.state, "offered");

    // The buyer sends what only the seller may send: refused, with what may follow.
    match seller.incoming::<Accept>(1, buyer, T0) {
        Err(DialogueError::OutOfOrder { state, sender, expected, .. }) => {
            assert_eq!((state.as_str(), sender.as_str()), ("offered", "buyer"));
            assert_eq!(expected, ["Counter from seller", "Accept from seller", "Decline from seller"]);
        }
        other => panic!("a wrong role must be refused: {other:?}"),
    }
    // The buyer offers twice in a row.
    assert!(matches!(seller.incoming::<Offer>(1, buyer, T0), Err(DialogueError::OutOfOrder { .. })));
    // Someone else speaks in the dialogue.
    assert!(matches!(seller.incoming::<Offer>(1, stranger, T0), Err(DialogueError::NotAParty { .. })));
    // The seller itself may not send what is the buyer's to send.
    assert!(matches!(seller.outgoing::<Offer>(1, T0), Err(DialogueError::OutOfOrder { .. })));
    assert_eq!(seller.get(1).unwrap(), before, "refusals change nothing");

    // Too late: the seller had 5 s to answer.
    let late = seller.outgoing::<Counter>(1, T0 + 5_001);
    assert!(matches!(late, Err(DialogueError::Late { deadline_ms, .. }) if deadline_ms == T0 + 5_000), "{late:?}");
    assert_eq!(seller.get(1).unwrap(), before);

    // In time: a counter, another offer, and a decline closes it for good.
    seller.outgoing::<Counter>(1, T0 + 1_000).unwrap();
    seller.incoming::<Offer>(1, buyer, T0 + 2_000).unwrap();
    seller.outgoing::<Decline>(1, T0 + 3_000).unwrap();
    for late in [seller.outgoing::<Accept>(1, T0 + 3_001), seller.incoming::<Offer>(1, buyer, T0 + 3_001)] {
        match late {
            Err(error @ DialogueError::Closed { .. }) => {
                let told = error.refusal().unwrap();
                assert_eq!((told.dialogue, told.state()), (1, Some("declined")));
            }
            other => panic!("nothing is accepted after a decline: {other:?}"),
        }
    }
    let said: Vec<String> = seller.get(1).unwrap().said.iter().map(|s| format!("{} {}", s.sender, s.message)).collect();
    assert_eq!(said, ["buyer Offer", "seller Counter", "buyer Offer", "seller Decline"]);
    bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn deadlines_expire_dialogues_and_old_ones_are_forgotten() {
    let bureau = Bureau::new().unwrap();
    let (buyer, _) = storage_of(&bureau, "buyer").await;
    let (_, storage) = storage_of(&bureau, "seller").await;
    let rules = Rules::builder("haggle-short")
        .initial("start")
        .step::<Offer>("start", "buyer", "offered")
        .step::<Accept>("offered", "seller", "accepted")
        .terminal("accepted")
        .deadline("offered", Duration::from_secs(5))
        .max_age(Duration::from_secs(60))
        .build()
        .unwrap();
    let seller = Dialogues::load(rules, "seller", storage).unwrap();
    seller.incoming::<Offer>(1, buyer, T0).unwrap();
    seller.incoming::<Offer>(2, buyer, T0).unwrap();
    seller.outgoing::<Accept>(2, T0 + 1_000).unwrap();

    assert!(seller.expire(T0 + 5_000).unwrap().is_empty(), "not before the deadline");
    let grace = Duration::from_secs(1);
    assert!(seller.expire_after(T0 + 6_000, grace).unwrap().is_empty(), "spared within the grace");
    let expired = seller.expire(T0 + 5_001).unwrap();
    assert_eq!(expired.iter().map(|d| (d.id, d.state.as_str())).collect::<Vec<_>>(), [(1, EXPIRED)]);
    assert!(matches!(seller.outgoing::<Accept>(1, T0 + 5_002), Err(DialogueError::Closed { .. })));
    assert_eq!(seller.get(2).unwrap().state, "accepted", "a closed dialogue does not expire");

    seller.expire(T0 + 60_000).unwrap();
    assert!(seller.all().is_empty(), "forgotten after the maximum age");
    bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_restarted_agent_resumes_its_dialogues() {
    let dir = tempfile::tempdir().unwrap();
    let config = || Config::default().with_storage_dir(dir.path());
    let buyer = Identity::from_seed("buyer").address();
    {
        let bureau = Bureau::with_config(config()).unwrap();
        let (_, storage) = storage_of(&bureau, "seller").await;
        let seller = Dialogues::load(haggle(), "seller", storage.clone()).unwrap();
        seller.incoming::<Offer>(9, buyer, T0).unwrap();
        let counter = Step::default().keeping(serde_json::json!({ "price": 120 }));
        seller.outgoing_with(Counter::NAME, 9, T0 + 100, counter).unwrap();
        storage.flush().await.unwrap();
        bureau.shutdown().await.unwrap();
    }
    let bureau = Bureau::with_config(config()).unwrap();
    let (_, storage) = storage_of(&bureau, "seller").await;
    let seller = Dialogues::load(haggle(), "seller", storage).unwrap();
    let resumed = seller.get(9).expect("the dialogue is back");
    assert_eq!((resumed.state.as_str(), resumed.peer), ("countered", buyer));
    let kept = resumed.data.map(|data| data.decode::<serde_json::Value>().unwrap());
    assert_eq!(kept, Some(serde_json::json!({ "price": 120 })), "what the step kept is back");
    let said: Vec<(&str, &str, u64)> =
        resumed.said.iter().map(|s| (s.message.as_str(), s.sender.as_str(), s.at_ms)).collect();
    assert_eq!(said, [("Offer", "buyer", T0), ("Counter", "seller", T0 + 100)]);
    // It goes on from where it was, and keeps refusing what it refused before.
    assert!(matches!(seller.outgoing::<Counter>(9, T0 + 200), Err(DialogueError::OutOfOrder { .. })));
    assert!(seller.get(9).unwrap().data.is_some(), "a refused step keeps what was kept");
    let replaced = seller.incoming::<Offer>(9, buyer, T0 + 300).unwrap();
    let replaced = replaced.map(|data| data.decode::<serde_json::Value>().unwrap());
    assert_eq!(replaced, Some(serde_json::json!({ "price": 120 })), "a step hands back what it replaced");
    assert_eq!(seller.get(9).unwrap().data, None);
    bureau.shutdown().await.unwrap();
}

/// A dialogue written whole (with its id and rules, what was said as named fields), as
/// before steps were written compactly, still loads.
#[tokio::test]
async fn a_dialogue_written_in_the_earlier_form_still_loads() {
    let bureau = Bureau::new().unwrap();
    let (_, storage) = storage_of(&bureau, "seller").await;
    let buyer = Identity::from_seed("buyer").address();
    let earlier = serde_json::json!({
        "id": format!("{:032x}", 5),
        "rules": "haggle",
        "me": "seller",
        "peer": hex::encode(buyer.as_bytes()),
        "peer_role": "buyer",
        "state": "offered",
        "deadline_ms": T0 + 5_000,
        "opened_ms": T0,
        "said": [{ "message": "Offer", "sender": "buyer", "at_ms": T0 }],
    });
    storage.set(&format!("agora.dialogue/haggle/{:032x}", 5), &earlier).unwrap();
    let seller = Dialogues::load(haggle(), "seller", storage).unwrap();
    let loaded = seller.get(5).expect("loaded");
    assert_eq!((loaded.state.as_str(), loaded.peer, loaded.said.len(), loaded.data), ("offered", buyer, 1, None));
    seller.outgoing::<Accept>(5, T0 + 1_000).unwrap();
    bureau.shutdown().await.unwrap();
}

/// Two agents haggling through a bureau: the seller checks each message against the
/// dialogue, and a buyer that offers twice in a row is told which dialogue and state were
/// expected.
#[tokio::test]
async fn a_refused_peer_is_told_the_dialogue_state_and_what_was_expected() {
    let bureau = Bureau::new().unwrap();
    let refusals: Arc<parking_lot::Mutex<Vec<Refused>>> = Arc::default();

    let mut seller = Agent::builder("seller").seed("seller").build().unwrap();
    let seller_address = seller.address();
    seller.on_message(|ctx: Context, from: Address, Offer(_price): Offer| async move {
        let dialogues = ctx.storage().ok().and_then(|s| Dialogues::load(haggle(), "seller", s).ok());
        let (Some(dialogues), Some(session)) = (dialogues, ctx.session()) else { return };
        // The seller thinks it over (no answer yet); a second offer now is out of order.
        if let Err(refused) = dialogues.incoming::<Offer>(session, from, agent_core::envelope::unix_now_ms()) {
            if let Some(told) = refused.refusal() {
                let _ = ctx.send_in(session, from, told).await;
            }
        }
    });
    let mut buyer = Agent::builder("buyer").seed("buyer").build().unwrap();
    let told = refusals.clone();
    buyer.on_message(move |_ctx: Context, _from: Address, refused: Refused| {
        let told = told.clone();
        async move { told.lock().push(refused) }
    });
    bureau.add(seller).unwrap();
    let buyer = bureau.add(buyer).unwrap();
    let ctx = bureau.context(buyer).unwrap();
    let session = 0xd1a1_09e5;
    ctx.send_in(session, seller_address, Offer(100)).await.unwrap();
    ctx.send_in(session, seller_address, Offer(95)).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while refusals.lock().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refusals = refusals.lock().clone();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0].dialogue, session);
    assert_eq!(refusals[0].state(), Some("offered"));
    assert_eq!(refusals[0].expected, ["Counter from seller", "Accept from seller", "Decline from seller"]);
    bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn one_peer_cannot_open_more_dialogues_than_its_bound_and_others_still_can() {
    let bureau = Bureau::new().unwrap();
    let (flooder, _) = storage_of(&bureau, "flooder").await;
    let (_, storage) = storage_of(&bureau, "bounded seller").await;
    let honest = Identity::from_seed("honest buyer").address();
    let seller = Dialogues::load(haggle(), "seller", storage).unwrap().with_max_open_per_peer(3);

    for id in 1..=3 {
        seller.incoming::<Offer>(id, flooder, T0).unwrap();
    }
    // A fourth is refused, says why, and is not recorded.
    match seller.incoming::<Offer>(4, flooder, T0) {
        Err(e @ DialogueError::TooManyOpen { dialogue: 4, open: 3, .. }) => {
            let refusal = e.refusal().expect("the peer is told");
            assert_eq!(refusal.cause, RefusalCause::TooManyOpen, "{refusal:?}");
            assert!(refusal.detail.contains("3 dialogues open"), "{}", refusal.detail);
        }
        other => panic!("a fourth dialogue from one peer was not refused: {other:?}"),
    }
    assert!(seller.get(4).is_none(), "a refused opening changes nothing");
    // Another peer is not held back by the flooder.
    seller.incoming::<Offer>(5, honest, T0).unwrap();
    // Once one of the flooder's dialogues ends, it may open another.
    seller.outgoing::<Decline>(1, T0).unwrap();
    seller.incoming::<Offer>(6, flooder, T0).unwrap();
    assert!(matches!(seller.incoming::<Offer>(7, flooder, T0), Err(DialogueError::TooManyOpen { .. })));
    // Continuing an open dialogue is never refused for the bound.
    seller.outgoing::<Counter>(2, T0).unwrap();
    seller.incoming::<Offer>(2, flooder, T0).unwrap();
    bureau.shutdown().await.unwrap();
}

/// A user protocol's dialogues are swept like the shipped ones ([`Checked::sweep`]): one
/// left open past its deadline expires, on the simulated clock.
#[tokio::test(start_paused = true)]
async fn checked_dialogues_past_their_deadline_expire_with_the_sweep() {
    use agent_protocols::dialogue::Checked;
    let sim = agent_core::sim::Sim::new(41);
    let host = sim.add_host("market").unwrap();
    let on_seller = Checked::new(haggle(), "seller");
    let mut seller = Agent::builder("seller").seed("seller").build().unwrap();
    // The seller never answers: the offer's 5 s pass.
    let protocol = on_seller.protocol("haggle", "1").message::<Counter>().message::<Accept>().message::<Decline>();
    seller.include(protocol.on_message(|_: Context, _: Address, _: Offer| async {}));
    on_seller.sweep(&mut seller, Duration::from_secs(1));
    let seller = host.add(seller).unwrap();
    let buyer = host.context(host.add(Agent::builder("buyer").seed("buyer").build().unwrap()).unwrap()).unwrap();
    buyer.send_in(1, seller, Offer(90)).await.unwrap();
    let seller_ctx = host.context(seller).unwrap();
    let state = || on_seller.dialogues(&seller_ctx).unwrap().get(1).map(|d| d.state.to_string());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(state().as_deref(), Some("offered"));
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(state().as_deref(), Some(EXPIRED), "expired by the sweep");
    sim.shutdown().await;
}
