//! The example of a protocol of one's own (examples/own_protocol.rs) runs as documented, and
//! docs/protocols.md shows its code as it is built.

#[path = "../examples/own_protocol.rs"]
mod own_protocol;

/// A rogue's Ask out of turn is refused with a typed refusal naming the dialogue and its
/// state, the seller's dialogue does not move, the buyer's own Ask out of turn (a plain
/// send) is not sent, and the negotiation, opened with a plain send, ends as its rules say.
#[tokio::test]
async fn a_protocol_of_ones_own_checks_every_message_in_and_out() {
    let shown = own_protocol::run().await.unwrap();
    assert_eq!(shown.refused.expected, ["example.quote.Take from buyer", "example.quote.Decline from buyer"]);
    assert_eq!(shown.seller_states, ["quoted", "quoted"].map(String::from), "the refusal moved nothing");
    assert_eq!(shown.own_wrong_send, agent_core::protocol::GuardCause::OutOfOrder);
    assert_eq!(shown.end, "taken");
    let manifest = own_protocol::protocol(&own_protocol_checked()).manifest();
    let machine = manifest.state_machine.as_ref().unwrap();
    assert_eq!(machine.transitions.len(), 4, "its rules are in its manifest");
    assert_eq!(agent_core::Manifest::from_json(&manifest.to_json()).unwrap(), manifest);
}

fn own_protocol_checked() -> agent_protocols::dialogue::Checked {
    agent_protocols::dialogue::Checked::new(own_protocol::rules(), own_protocol::SELLER)
}

/// The docs show the example's protocol code exactly as it is compiled here.
#[test]
fn the_docs_show_the_example_as_it_is_built() {
    let example = include_str!("../examples/own_protocol.rs");
    let docs = include_str!("../../docs/protocols.md");
    let (start, end) = ("// ANCHOR: protocol\n", "// ANCHOR_END: protocol\n");
    let code = &example[example.find(start).unwrap() + start.len()..example.find(end).unwrap()];
    assert!(
        docs.contains(&format!("```rust\n{code}```\n")),
        "docs/protocols.md must show examples/own_protocol.rs's protocol code as it is"
    );
}
