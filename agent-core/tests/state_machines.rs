//! A protocol's state machine is part of its manifest: the digest covers every step,
//! deadline and terminal state, a protocol without one keeps its digest, and a manifest whose
//! machine names an unknown state or message is refused.

use std::collections::BTreeMap;

use agent_core::protocol::{Manifest, ManifestError, Protocol, StateMachine, TransitionSpec};
use agent_core::Message;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, JsonSchema, Message)]
struct Quote(u64);

#[derive(Serialize, Deserialize, JsonSchema, Message)]
struct Accept;

#[derive(Serialize, Deserialize, JsonSchema, Message)]
struct Other;

fn step(from: &str, message: &str, sender: &str, to: &str) -> TransitionSpec {
    TransitionSpec {
        from: from.into(),
        message: message.into(),
        schema: None,
        sender: sender.into(),
        to: to.into(),
        after_deadline: false,
    }
}

fn machine() -> StateMachine {
    StateMachine {
        name: "quote".into(),
        initial: "start".into(),
        states: ["start", "quoted", "accepted"].map(String::from).to_vec(),
        terminal: vec!["accepted".into()],
        transitions: vec![
            TransitionSpec { schema: Some(Quote::digest()), ..step("start", Quote::NAME, "seller", "quoted") },
            step("quoted", Accept::NAME, "buyer", "accepted"),
        ],
        deadlines_ms: BTreeMap::from([("quoted".to_owned(), 5_000)]),
        max_age_ms: 86_400_000,
    }
}

fn protocol(machine: Option<StateMachine>) -> Protocol {
    let protocol = Protocol::new("quote", "1.0.0").message::<Quote>().message::<Accept>();
    match machine {
        Some(machine) => protocol.state_machine(machine),
        None => protocol,
    }
}

#[test]
fn the_state_machine_is_published_and_covered_by_the_digest() {
    let bare = protocol(None);
    assert!(!bare.manifest().to_json().contains("state_machine"), "none declared: the JSON is as before");
    let published = protocol(Some(machine()));
    let text = published.manifest().to_json();
    assert!(text.contains("\"state_machine\""), "{text}");
    assert_eq!(Manifest::from_json(&text).unwrap(), published.manifest(), "it reads back");
    assert_eq!(Manifest::from_json(&text).unwrap().digest(), published.digest());

    let mut changes: Vec<(&str, StateMachine)> = Vec::new();
    let mut m = machine();
    m.transitions[1].to = "start".into();
    changes.push(("a step's target", m));
    let mut m = machine();
    m.transitions[1].sender = "seller".into();
    changes.push(("a step's sender", m));
    let mut m = machine();
    m.transitions[1].after_deadline = true;
    changes.push(("a step allowed late", m));
    let mut m = machine();
    m.deadlines_ms.insert("quoted".into(), 6_000);
    changes.push(("a deadline", m));
    let mut m = machine();
    m.max_age_ms += 1;
    changes.push(("the maximum age", m));
    let mut m = machine();
    m.terminal.clear();
    changes.push(("the terminal states", m));
    let mut digests = vec![("none", bare.digest()), ("as declared", published.digest())];
    for (what, changed) in changes {
        let digest = protocol(Some(changed)).digest();
        assert!(digests.iter().all(|(_, d)| *d != digest), "changing {what} changes the digest");
        digests.push((what, digest));
    }

    let mut reordered = machine();
    reordered.transitions.reverse();
    reordered.states.reverse();
    assert_eq!(protocol(Some(reordered)).digest(), published.digest(), "declaration order does not matter");
}

#[test]
fn a_manifest_whose_machine_names_unknown_states_or_messages_is_refused() {
    let refused = |machine: StateMachine| Manifest::from_json(&protocol(Some(machine)).manifest().to_json());
    let mut m = machine();
    m.transitions[1].to = "nowhere".into();
    assert!(matches!(refused(m), Err(ManifestError::UnknownState { state }) if state == "nowhere"));
    let mut m = machine();
    m.initial = "limbo".into();
    assert!(matches!(refused(m), Err(ManifestError::UnknownState { state }) if state == "limbo"));
    let mut m = machine();
    m.deadlines_ms.insert("later".into(), 1);
    assert!(matches!(refused(m), Err(ManifestError::UnknownState { state }) if state == "later"));
    let mut m = machine();
    m.transitions.push(step("quoted", Other::NAME, "buyer", "accepted"));
    assert!(matches!(refused(m), Err(ManifestError::UnknownMessage { message }) if message == Other::NAME));
    let mut m = machine();
    m.transitions[1].schema = Some(Other::digest());
    assert!(
        matches!(refused(m), Err(ManifestError::UnknownMessage { message }) if message == Accept::NAME),
        "a step's schema digest must be one of the manifest's messages"
    );
    assert!(refused(machine()).is_ok());
}

#[tokio::test]
async fn an_agent_including_a_protocol_whose_machine_is_wrong_is_refused_when_added() {
    let mut wrong = machine();
    wrong.transitions[1].to = "nowhere".into();
    assert!(
        matches!(protocol(Some(wrong.clone())).check(), Err(ManifestError::UnknownState { state }) if state == "nowhere")
    );
    assert!(protocol(Some(machine())).check().is_ok() && protocol(None).check().is_ok());

    let bureau = agent_core::Bureau::new().unwrap();
    let mut agent = agent_core::Agent::builder("seller").seed("state-machines seller").build().unwrap();
    agent.include(protocol(Some(wrong)));
    let added = bureau.add(agent);
    let Err(agent_core::BureauError::InvalidProtocol { agent, protocol: name, error }) = added else {
        panic!("an agent with a wrong state machine was added: {added:?}");
    };
    assert_eq!((agent.as_str(), name.as_str()), ("seller", "quote/1.0.0"));
    assert!(matches!(&*error, ManifestError::UnknownState { state } if state == "nowhere"), "{error}");

    let mut right = agent_core::Agent::builder("seller").seed("state-machines seller").build().unwrap();
    right.include(protocol(Some(machine())));
    assert!(bureau.add(right).is_ok(), "the same agent with the right machine is added");
    bureau.shutdown().await.unwrap();
}
