//! The digests of the protocols this crate ships, pinned. Agents find each other by these
//! digests and check each message's schema digest on arrival: a change to any message of
//! a protocol (a field renamed in `Payment`, a variant added to `RejectReason`, a change in
//! how `Address` is described) changes them, and every deployed peer would stop finding
//! or understanding the new build. Such a change must be deliberate: a new version in the
//! protocol's name, and these pins updated with it.

use agent_protocols::{contract_net, double_auction, dutch, english, sealed_bid, settlement};

#[test]
fn shipped_protocol_digests_change_only_deliberately() {
    let shipped = [
        ("contract-net <String, u64, String>", contract_net::protocol::<String, u64, String>()),
        ("english", english::protocol()),
        ("dutch", dutch::protocol()),
        ("sealed-bid", sealed_bid::protocol()),
        ("double auction", double_auction::protocol()),
        ("settlement", settlement::protocol()),
    ];
    let mut printed = String::new();
    for (name, protocol) in &shipped {
        let manifest = protocol.manifest();
        printed += &format!("{name} {} {} {}\n", manifest.name, manifest.version, protocol.digest());
    }
    assert_eq!(printed, PINNED, "a shipped protocol's wire form changed; if deliberate, bump its version and pin anew");
}

/// Every shipped protocol that runs dialogues publishes their rules in its manifest, and
/// the manifest reads back (each step names one of its states and one of its messages).
#[test]
fn shipped_protocols_publish_their_dialogue_rules() {
    use agent_core::Manifest;
    let with_rules = [
        (contract_net::protocol::<String, u64, String>(), contract_net::rules()),
        (english::protocol(), english::rules()),
        (dutch::protocol(), dutch::rules()),
        (sealed_bid::protocol(), sealed_bid::rules()),
        (double_auction::protocol(), double_auction::rules()),
    ];
    for (protocol, rules) in with_rules {
        let manifest = protocol.manifest();
        let machine = manifest.state_machine.clone().unwrap_or_else(|| panic!("{}: no rules", manifest.name));
        assert_eq!(machine.transitions.len(), rules.transitions().len(), "{}: every step", manifest.name);
        assert!(machine.transitions.iter().all(|t| t.schema.is_some()), "{}: each step names its type", manifest.name);
        let read = Manifest::from_json(&manifest.to_json()).unwrap_or_else(|e| panic!("{}: {e}", manifest.name));
        assert_eq!(read.digest(), protocol.digest(), "{}", manifest.name);
    }
    assert!(settlement::protocol().manifest().state_machine.is_none(), "settlement has no dialogue rules");
}

/// Changing one step or one deadline of a protocol's rules changes its digest: peers that
/// disagree on the state machine do not find each other by it.
#[test]
fn a_changed_step_or_deadline_changes_the_digest() {
    use agent_core::Message;
    use agent_protocols::dialogue::Rules;
    use agent_protocols::sealed_bid::{BidAnswer, CallForBids, Closed};
    use std::time::Duration;
    let rules = |bidder: &str, late: bool, limit: u64| {
        Rules::builder("r")
            .initial("invited")
            .step::<CallForBids>("invited", "auctioneer", "called")
            .variant_step::<BidAnswer>("Bid", "called", bidder, "sealed", false)
            .variant_step::<Closed>(Closed::NAME, "called", "auctioneer", "closed", late)
            .variant_step::<Closed>(Closed::NAME, "sealed", "auctioneer", "closed", true)
            .terminal("closed")
            .deadline("called", Duration::from_millis(limit))
            .build()
            .unwrap()
    };
    let digest = |rules: Rules| sealed_bid::protocol().state_machine(rules.state_machine()).digest();
    let digests = [
        digest(rules("bidder", true, 1_000)),
        digest(rules("bidder", true, 1_001)),
        digest(rules("bidder", false, 1_000)),
        digest(rules("auctioneer", true, 1_000)),
    ];
    for (i, d) in digests.iter().enumerate() {
        assert!(!digests[..i].contains(d), "change {i} changes the digest");
    }
    assert_eq!(digest(rules("bidder", true, 1_000)), digests[0], "the same rules, the same digest");
}

const PINNED: &str = "\
contract-net <String, u64, String> agora.contract-net 5.1.0 a4c0c15b52c52981e94ae19a113f63117877fcd39d6d2839a4224d94c58efa66
english agora.auction.english 3.0.0 ec3e69207f17a9888033c1f4edc38c4de12fca34eaa43a6b161f58e601acab19
dutch agora.auction.dutch 3.0.0 2f74f45be1ee70d4d179464e773a7259429fbd782f4dd8c5b1f05d2107ed2e8e
sealed-bid agora.auction.sealed 4.0.0 9794ad87b9032087a642d4370baf7ff8f4ca460a205525510cb0cf0eeb131c4d
double auction agora.auction.double 3.0.0 beae2407e461e48819ff0c601bae3a918dfe0573215900efc37c104f4e013d72
settlement agora.settlement 2.0.0 60f5cc8d9a65c8b20ab6ea537cb0d2f7951522131d895d3c9b0f6439c191b5d3
";

/// The wire codes of a winner's failure and of its payment refusals are a contract with
/// peers built from other versions, as the refusal causes are: each variant's serde name,
/// pinned here, not only through the protocol's digest.
#[test]
fn failure_and_payment_refusal_codes_are_pinned() {
    use agent_core::ledger::EscrowId;
    use agent_protocols::contract_net::{Failure, PaymentRefused};
    let code = |value: serde_json::Value| match value {
        serde_json::Value::String(code) => code,
        serde_json::Value::Object(tagged) => tagged.keys().next().cloned().unwrap_or_default(),
        other => panic!("not an enum's wire form: {other}"),
    };
    let escrow = EscrowId([7; 32]);
    let someone = agent_core::Identity::from_seed("someone").address();
    let refusals = [
        (PaymentRefused::Unpaid { price: 1 }, "unpaid"),
        (PaymentRefused::NoPrice, "no_price"),
        (PaymentRefused::NoWallet("x".into()), "no_wallet"),
        (PaymentRefused::Ledger("x".into()), "ledger"),
        (PaymentRefused::NotOpen(escrow), "not_open"),
        (PaymentRefused::Payer { escrow, locked_by: someone, payer: None }, "payer"),
        (PaymentRefused::NotMine(escrow), "not_mine"),
        (PaymentRefused::Amount { escrow, holds: 1, says: 1, price: 2 }, "amount"),
        (PaymentRefused::Deal(escrow), "deal"),
        (PaymentRefused::Deadline(escrow), "deadline"),
    ];
    for (refused, expected) in refusals {
        let wire = serde_json::to_value(&refused).unwrap();
        assert_eq!(code(wire.clone()), expected, "{refused:?}");
        assert_eq!(serde_json::from_value::<PaymentRefused>(wire).ok(), Some(refused), "round trip");
    }
    let failures = [
        (Failure::Failed { detail: "x".into() }, "failed"),
        (Failure::PaymentRefused { refused: PaymentRefused::NoPrice }, "payment_refused"),
        (Failure::HoldEnded, "hold_ended"),
        (Failure::Unencodable { detail: "x".into() }, "unencodable"),
    ];
    for (failure, expected) in failures {
        let wire = serde_json::to_value(&failure).unwrap();
        assert_eq!(code(wire.clone()), expected, "{failure:?}");
        assert_eq!(serde_json::from_value::<Failure>(wire).ok(), Some(failure), "round trip");
    }
}

/// The wire codes of a participant's refusal, the initiator's cancel and a winner's
/// withdrawal, pinned as the failures' are: each variant's serde name, and its round trip
/// inside the message that carries it, with and without a detail.
#[test]
fn refusal_cancel_and_withdrawal_codes_are_pinned() {
    use agent_protocols::contract_net::{Answer, Cancel, CancelCause, Declined, Report, Withdrawal};
    let code = |value: serde_json::Value| value.as_str().map(str::to_owned);
    let declined = [
        (Declined::NoProposal, "no_proposal"),
        (Declined::UnreadableTask, "unreadable_task"),
        (Declined::Unencodable, "unencodable"),
        (Declined::Busy, "busy"),
    ];
    for (cause, expected) in declined {
        assert_eq!(code(serde_json::to_value(cause).unwrap()).as_deref(), Some(expected), "{cause:?}");
        for detail in [None, Some("x".to_owned())] {
            let refuse = Answer::Refuse { cause, detail };
            let wire = serde_json::to_value(&refuse).unwrap();
            assert_eq!(serde_json::from_value::<Answer>(wire).ok(), Some(refuse), "round trip");
        }
    }
    let cancels = [(CancelCause::CallWithdrawn, "call_withdrawn"), (CancelCause::NoReport, "no_report")];
    for (cause, expected) in cancels {
        assert_eq!(code(serde_json::to_value(cause).unwrap()).as_deref(), Some(expected), "{cause:?}");
        for detail in [None, Some("x".to_owned())] {
            let cancel = Cancel { cause, detail };
            let wire = serde_json::to_value(&cancel).unwrap();
            assert_eq!(serde_json::from_value::<Cancel>(wire).ok(), Some(cancel), "round trip");
        }
    }
    for (cause, expected) in [(Withdrawal::Unable, "unable")] {
        assert_eq!(code(serde_json::to_value(cause).unwrap()).as_deref(), Some(expected), "{cause:?}");
        for detail in [None, Some("x".to_owned())] {
            let withdrawn = Report::Cancelled { cause, detail };
            let wire = serde_json::to_value(&withdrawn).unwrap();
            assert_eq!(serde_json::from_value::<Report>(wire).ok(), Some(withdrawn), "round trip");
        }
    }
    // A detail left out on the wire (a peer that has none to give) reads as none.
    let bare = serde_json::json!({ "cause": "call_withdrawn" });
    assert_eq!(
        serde_json::from_value::<Cancel>(bare).ok(),
        Some(Cancel { cause: CancelCause::CallWithdrawn, detail: None })
    );
}
