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

const PINNED: &str = "\
contract-net <String, u64, String> agora.contract-net 4.0.0 759c378d4ec8fe504d7746e3e01094ca347bcce6966cbc06b101e1040b4f10ce
english agora.auction.english 2.0.0 c6bc0e29dca9fcc5172c867805807e53d4e23c7a2c2c7a24de5180f6fef81216
dutch agora.auction.dutch 2.0.0 9b9ec464d93a3537349d9ebc81640c98abd85bf6dc943865fed6f14c4160df85
sealed-bid agora.auction.sealed 3.0.0 65e845bc453ae84d4f28f1a8409c744aeacedb55e51c5f27018cbcb2dff0d130
double auction agora.auction.double 2.0.0 e19c90c7af9db2041b8e8ac1b7d1005796ce902d8048bcd7b6db64e494236dba
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
