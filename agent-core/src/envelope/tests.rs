use proptest::prelude::*;

use super::*;
use crate::Message;

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema, crate::Message)]
struct TestQuote {
    flight: String,
    price_cents: u64,
}

const NOW: u64 = 1_790_000_000_000;

fn alice() -> Identity {
    Identity::from_seed("alice")
}

fn sealed(payload: &TestQuote) -> Envelope {
    let header = Header { expects_reply: false, session: 7, protocol: None, in_reply_to: None, trace_id: 9 };
    Envelope::seal(&alice(), Identity::from_seed("bob").address(), payload, header, NOW, 60_000).unwrap()
}

fn quote() -> TestQuote {
    TestQuote { flight: "LH123".into(), price_cents: 12_900 }
}

fn known(d: &SchemaDigest) -> bool {
    *d == TestQuote::digest()
}

/// The envelope of `docs/wire-format.md`'s test vector.
fn vector_envelope() -> Envelope {
    let mut envelope = Envelope {
        version: VERSION,
        sender: alice().address(),
        sender_key: alice().public_key(),
        target: Identity::from_seed("bob").address(),
        session: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
        schema: TestQuote::digest(),
        protocol: Some(ProtocolDigest::from_bytes([0xab; 32])),
        in_reply_to: Some(42),
        expects_reply: false,
        trace_id: 0xfeed_beef,
        nonce: 0x1122_3344_5566_7788,
        timestamp_ms: NOW,
        expires_ms: NOW + 60_000,
        payload: serde_json::to_vec(&quote()).unwrap(),
        signature: [0; 64],
    };
    envelope.sign(&alice());
    envelope
}

#[test]
fn wire_format_doc_test_vector_matches() {
    let doc = include_str!("../../../docs/wire-format.md");
    let start = doc.find("```hex").expect("the doc has a ```hex block") + "```hex".len();
    let end = start + doc[start..].find("```").expect("the hex block ends");
    let documented: String = doc[start..end].chars().filter(|c| c.is_ascii_hexdigit()).collect();
    let encoded = hex::encode(vector_envelope().encode());
    assert_eq!(documented, encoded, "docs/wire-format.md is out of date; encoding is:\n{encoded}");
    let decoded = Envelope::decode(&hex::decode(documented).unwrap(), 1 << 20).unwrap();
    assert_eq!(decoded, vector_envelope());
    decoded.verify_stateless(&VerifyPolicy::default(), NOW, known).unwrap();
}

#[test]
fn nonces_increase_across_threads() {
    let per_thread: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let workers: Vec<_> =
            (0..4).map(|_| scope.spawn(|| (0..10_000).map(|_| super::next_nonce()).collect::<Vec<_>>())).collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for nonces in &per_thread {
        assert!(nonces.windows(2).all(|pair| pair[0] < pair[1]), "increasing within a thread");
    }
    let mut all: Vec<u64> = per_thread.concat();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 40_000, "never handed out twice");
}

#[test]
fn the_replay_window_holds_out_of_order_nonces_and_stays_bounded() {
    use super::replay::WINDOW_PER_SENDER;
    let sender = alice().address();
    let mut guard = ReplayGuard::default();
    let expires = NOW + 60_000;
    // Out of order within the window: each accepted once.
    for nonce in [10, 5, 7, 11, 6] {
        guard.check_and_insert(sender, nonce, expires, NOW).unwrap();
    }
    assert_eq!(guard.check_and_insert(sender, 7, expires, NOW), Err(EnvelopeError::Replayed { sender, nonce: 7 }));
    // A sender far past its window: memory stays bounded, old nonces are refused.
    let many = 3 * WINDOW_PER_SENDER as u64;
    for nonce in 100..100 + many {
        guard.check_and_insert(sender, nonce, expires, NOW).unwrap();
    }
    assert_eq!(guard.len(), WINDOW_PER_SENDER);
    assert!(matches!(guard.check_and_insert(sender, 5, expires, NOW), Err(EnvelopeError::BelowWindow { .. })));
    assert!(matches!(guard.check_and_insert(sender, 150, expires, NOW), Err(EnvelopeError::BelowWindow { .. })));
    let newest = 100 + many - 1;
    assert_eq!(
        guard.check_and_insert(sender, newest, expires, NOW),
        Err(EnvelopeError::Replayed { sender, nonce: newest })
    );
    guard.check_and_insert(sender, newest + 1, expires, NOW).unwrap();
    // Everything expires, floors included: nothing is left of the sender.
    guard.prune(expires + 1);
    assert!(guard.is_empty());
    guard.check_and_insert(sender, 1, expires + 60_000, expires + 1).unwrap();
}

#[test]
fn a_full_guard_makes_a_known_sender_give_back_its_oldest() {
    let (alice, bob) = (alice().address(), Identity::from_seed("bob").address());
    let mut guard = ReplayGuard::with_capacity(3);
    let expires = NOW + 60_000;
    for nonce in 1..=3 {
        guard.check_and_insert(alice, nonce, expires, NOW).unwrap();
    }
    // Alice keeps going: her oldest nonce moves into her floor.
    guard.check_and_insert(alice, 4, expires, NOW).unwrap();
    assert_eq!(guard.len(), 3);
    assert!(matches!(guard.check_and_insert(alice, 1, expires, NOW), Err(EnvelopeError::BelowWindow { .. })));
    // Bob has nothing to give back.
    assert_eq!(guard.check_and_insert(bob, 1, expires, NOW), Err(EnvelopeError::ReplayGuardFull { capacity: 3 }));
}

#[test]
fn round_trip_and_open() {
    let envelope = sealed(&quote());
    let decoded = Envelope::decode(&envelope.encode(), 1 << 20).unwrap();
    assert_eq!(decoded, envelope);
    let mut guard = ReplayGuard::default();
    decoded.verify(&VerifyPolicy::default(), NOW + 1, &mut guard, known).unwrap();
    assert_eq!(decoded.open::<TestQuote>().unwrap(), quote());
}

#[test]
fn every_rejection_has_its_own_variant() {
    let policy = VerifyPolicy::default();
    let mut guard = ReplayGuard::default();
    let good = sealed(&quote());

    // Bad signature: a field changed after signing.
    let mut tampered = good.clone();
    tampered.payload = br#"{"flight":"LH123","price_cents":1}"#.to_vec();
    assert!(matches!(tampered.verify(&policy, NOW, &mut guard, known), Err(EnvelopeError::BadSignature(_))));

    // Signed by another key than the sender's.
    let mut forged = good.clone();
    forged.signature = Identity::from_seed("mallory").sign(&forged.signed_bytes());
    assert!(matches!(forged.verify(&policy, NOW, &mut guard, known), Err(EnvelopeError::BadSignature(_))));

    // Sender address of another key.
    let mut mismatch = good.clone();
    mismatch.sender = Identity::from_seed("mallory").address();
    assert_eq!(mismatch.verify(&policy, NOW, &mut guard, known), Err(EnvelopeError::SenderKeyMismatch));

    // Expired.
    assert!(matches!(good.verify(&policy, NOW + 60_001, &mut guard, known), Err(EnvelopeError::Expired { .. })));

    // From the future beyond the clock skew.
    let header = Header::default();
    let future = Envelope::seal(&alice(), good.target, &quote(), header, NOW + 31_000, 60_000).unwrap();
    assert!(matches!(future.verify(&policy, NOW, &mut guard, known), Err(EnvelopeError::FromTheFuture { .. })));

    // Lives longer than the replay window covers.
    let long = Envelope::seal(&alice(), good.target, &quote(), header, NOW, 3_600_000).unwrap();
    assert!(matches!(long.verify(&policy, NOW, &mut guard, known), Err(EnvelopeError::LifetimeTooLong { .. })));

    // Payload over the limit, both on decode (before allocation) and on verify.
    let small = policy.with_max_payload(8);
    assert!(matches!(good.verify(&small, NOW, &mut guard, known), Err(EnvelopeError::PayloadTooLarge { .. })));
    assert!(matches!(Envelope::decode(&good.encode(), 8), Err(EnvelopeError::PayloadTooLarge { .. })));

    // Unknown schema.
    assert_eq!(
        good.verify(&policy, NOW, &mut guard, |_| false),
        Err(EnvelopeError::UnknownSchema(TestQuote::digest()))
    );

    // None of the refusals above burned the nonce: the genuine envelope is accepted once.
    good.verify(&policy, NOW, &mut guard, known).unwrap();
    assert_eq!(
        good.verify(&policy, NOW, &mut guard, known),
        Err(EnvelopeError::Replayed { sender: good.sender, nonce: good.nonce })
    );

    // A full guard refuses a new sender rather than forget another's nonce.
    let mut tiny = ReplayGuard::with_capacity(1);
    sealed(&quote()).verify(&policy, NOW, &mut tiny, known).unwrap();
    let bob = Identity::from_seed("bob");
    assert!(matches!(
        Envelope::seal(&bob, good.target, &quote(), header, NOW, 60_000)
            .unwrap()
            .verify(&policy, NOW, &mut tiny, known),
        Err(EnvelopeError::ReplayGuardFull { .. })
    ));
    // Once the first expires it is pruned and there is room again.
    let later = Envelope::seal(&bob, good.target, &quote(), header, NOW + 60_001, 60_000).unwrap();
    later.verify(&policy, NOW + 60_001, &mut tiny, known).unwrap();
}

#[test]
fn malformed_bytes_get_structural_errors() {
    let bytes = sealed(&quote()).encode();
    assert!(matches!(Envelope::decode(&bytes[..10], 1 << 20), Err(EnvelopeError::Truncated { .. })));
    assert_eq!(Envelope::decode(b"XYZ\x01", 1 << 20), Err(EnvelopeError::BadMagic));
    let mut v2 = bytes.clone();
    v2[3] = 2;
    assert_eq!(Envelope::decode(&v2, 1 << 20), Err(EnvelopeError::UnsupportedVersion(2)));
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(Envelope::decode(&trailing, 1 << 20), Err(EnvelopeError::TrailingBytes(1)));
    let mut flags = bytes.clone();
    flags[3 + 1 + 32 + 32 + 32 + 16 + 32] = 0x80;
    assert_eq!(Envelope::decode(&flags, 1 << 20), Err(EnvelopeError::UnknownFlags(0x80)));
    assert!(Envelope::decode(&[], 1 << 20).is_err());
}

#[test]
fn open_refuses_wrong_payloads() {
    let mut envelope = sealed(&quote());
    envelope.payload = b"not json".to_vec();
    assert!(matches!(envelope.open::<TestQuote>(), Err(EnvelopeError::Payload { .. })));
}

fn arb_envelope() -> impl Strategy<Value = Envelope> {
    (
        any::<u128>(),
        proptest::option::of(any::<[u8; 32]>()),
        proptest::option::of(any::<u64>()),
        any::<u128>(),
        proptest::collection::vec(any::<u8>(), 0..256),
        0u64..600_000,
    )
        .prop_map(|(session, protocol, in_reply_to, trace_id, payload, lifetime)| {
            let header = Header {
                session,
                protocol: protocol.map(ProtocolDigest::from_bytes),
                in_reply_to,
                expects_reply: session % 2 == 0,
                trace_id,
            };
            Envelope::seal_raw(
                &alice(),
                Identity::from_seed("bob").address(),
                TestQuote::digest(),
                payload,
                header,
                NOW,
                lifetime,
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn encode_decode_round_trips(envelope in arb_envelope()) {
        let decoded = Envelope::decode(&envelope.encode(), 1 << 20).unwrap();
        prop_assert_eq!(&decoded, &envelope);
        prop_assert!(decoded.verify_stateless(&VerifyPolicy::default(), NOW, known).is_ok());
    }

    #[test]
    fn any_single_bit_flip_fails(envelope in arb_envelope(), bit in any::<prop::sample::Index>()) {
        let mut bytes = envelope.encode();
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        let outcome = Envelope::decode(&bytes, 1 << 20).and_then(|e| {
            let mut guard = ReplayGuard::default();
            e.verify(&VerifyPolicy::default(), NOW, &mut guard, known)
        });
        prop_assert!(outcome.is_err(), "bit {} flipped and the envelope still verified", bit);
    }
}
