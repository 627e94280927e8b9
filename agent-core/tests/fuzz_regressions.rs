//! Adversarial inputs for every decoder of outside bytes in agent-core, kept in the normal
//! test suite beside the fuzz targets in `fuzz/` (see `docs/reliability.md`): empty and
//! truncated input, 4 GiB length prefixes, deeply nested JSON, invalid UTF-8 and huge
//! numbers each end in a typed error, never a panic. A crash a fuzz target finds is added
//! here as the exact bytes it found.

use agent_core::fuzzing::{decode_binding, encode_binding, read_frames, Frame};
use agent_core::ledger::service::{Request, Response};
use agent_core::ledger::{Escrow, Receipt, Transaction};
use agent_core::transport::Binding;
use agent_core::{Address, Envelope, EnvelopeError, Header, Identity, Message, SchemaDigest};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Nested {
    amount: u128,
    label: String,
    inner: Option<Box<Nested>>,
}

const NOW: u64 = 1_790_000_000_000;

fn sealed(payload: Vec<u8>) -> Envelope {
    Envelope::seal_raw(
        &Identity::from_seed("alice"),
        Identity::from_seed("bob").address(),
        Nested::digest(),
        payload,
        Header::default(),
        NOW,
        60_000,
    )
}

/// JSON nested `depth` arrays deep: `[[[…]]]`.
fn nested_json(depth: usize) -> Vec<u8> {
    let mut out = vec![b'['; depth];
    out.extend(std::iter::repeat_n(b']', depth));
    out
}

/// The JSON inputs every serde decoder here is fed.
fn adversarial_json() -> Vec<Vec<u8>> {
    vec![
        Vec::new(),
        b"{".to_vec(),
        b"{\"Submit\":".to_vec(),
        nested_json(100_000),
        b"{\"a\":".repeat(10_000),
        vec![0xff, 0xfe, b'{', 0xc3, 0x28],
        b"\"\xff\xff\"".to_vec(),
        b"{\"Balance\":\"agent1\xff\"}".to_vec(),
        b"{\"Balance\":Ok(1)}".to_vec(),
        format!("{{\"Balance\":{{\"Ok\":{}}}}}", "9".repeat(400)).into_bytes(),
        b"{\"NextNonce\":{\"Ok\":-1}}".to_vec(),
        b"{\"History\":{\"account\":\"x\",\"limit\":1e400}}".to_vec(),
        b"{\"NextNonce\":{\"Ok\":18446744073709551616}}".to_vec(),
        b"{\"Escrow\":\"zz\"}".to_vec(),
        b"null".to_vec(),
        vec![0; 1 << 16],
    ]
}

#[test]
fn envelope_refuses_adversarial_bytes() {
    let good = sealed(b"{}".to_vec()).encode();
    assert_eq!(Envelope::decode(&[], 1 << 20), Err(EnvelopeError::Truncated { needed: 3 }));
    for cut in [1, 3, 4, 100, good.len() - 65, good.len() - 1] {
        assert!(matches!(Envelope::decode(&good[..cut], 1 << 20), Err(EnvelopeError::Truncated { .. })), "cut {cut}");
    }
    // The payload length is the four bytes before the payload (and the signature).
    let size_at = good.len() - 64 - 2 - 4;
    let mut huge = good.clone();
    huge[size_at..size_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        Envelope::decode(&huge, 1 << 20),
        Err(EnvelopeError::PayloadTooLarge { size: u32::MAX as usize, limit: 1 << 20 })
    );
    // Even under a limit of usize::MAX, a 4 GiB announcement over a short input is a truncation.
    assert!(matches!(Envelope::decode(&huge, usize::MAX), Err(EnvelopeError::Truncated { .. })));
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(Envelope::decode(&trailing, 1 << 20), Err(EnvelopeError::TrailingBytes(1)));
    let mut garbage = good;
    garbage[0] = b'X';
    assert_eq!(Envelope::decode(&garbage, 1 << 20), Err(EnvelopeError::BadMagic));
}

#[test]
fn message_payloads_refuse_adversarial_json() {
    for payload in adversarial_json() {
        let envelope = sealed(payload);
        assert!(matches!(envelope.open::<Nested>(), Err(EnvelopeError::Payload { .. })));
    }
    // A valid amount one past u128::MAX, and a recursion deeper than serde_json's limit.
    let too_big = format!("{{\"amount\":{}0,\"label\":\"\",\"inner\":null}}", u128::MAX);
    assert!(matches!(sealed(too_big.into_bytes()).open::<Nested>(), Err(EnvelopeError::Payload { .. })));
    let deep = "{\"amount\":1,\"label\":\"\",\"inner\":".repeat(1000) + "null" + &"}".repeat(1000);
    assert!(matches!(sealed(deep.into_bytes()).open::<Nested>(), Err(EnvelopeError::Payload { .. })));
    // What does decode round-trips.
    let ok = br#"{"amount":340282366920938463463374607431768211455,"label":"\u00e9","inner":null}"#;
    let message = sealed(ok.to_vec()).open::<Nested>().unwrap();
    assert_eq!(message.amount, u128::MAX);
    assert_eq!(sealed(serde_json::to_vec(&message).unwrap()).open::<Nested>().unwrap(), message);
    // A payload under another schema is refused before it is read.
    let mut other = sealed(b"{}".to_vec());
    other.schema = SchemaDigest::from_bytes([0; 32]);
    assert!(matches!(other.open::<Nested>(), Err(EnvelopeError::UnknownSchema(_))));
}

#[test]
fn frames_refuse_adversarial_bytes() {
    for body in [
        &[][..],
        &[0],
        &[2],
        &[2, 0, 0, 0, 0, 0, 0, 0, 1],
        &[2, 0, 0, 0, 0, 0, 0, 0, 1, 7],
        &[3, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    ] {
        assert!(Frame::decode(body).is_err(), "{body:?}");
    }
    for tag in [1, 4, 5, 6, 255] {
        assert!(Frame::decode(&[tag, 1, 2, 3]).is_err(), "tag {tag}");
    }
    // An ack whose rejection detail is not UTF-8 decodes (lossily) and round-trips.
    let ack = Frame::decode(&[3, 0, 0, 0, 0, 0, 0, 0, 9, 1, 200, 0xff, 0xfe]).unwrap();
    assert_eq!(Frame::decode(&ack.encode()[4..]).unwrap(), ack);
    // A 4 GiB length prefix is refused before anything is buffered; a truncated frame ends
    // the stream without a frame.
    let (frames, stopped) = read_frames(&[0xff, 0xff, 0xff, 0xff, 4], 1 << 20);
    assert!(frames.is_empty());
    assert!(stopped.contains("exceeds the limit"), "{stopped}");
    let (frames, stopped) = read_frames(&[0, 0, 0, 9, 4, 0, 0], 1 << 20);
    assert!(frames.is_empty());
    assert!(stopped.contains("closed"), "{stopped}");
    let (frames, _) = read_frames(&[0, 0, 0, 9, 4, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0], 1 << 20);
    assert_eq!(frames, vec![Frame::decode(&[4, 0, 0, 0, 0, 0, 0, 0, 7]).unwrap()]);
}

#[test]
fn bindings_refuse_adversarial_bytes() {
    for len in [0, 1, 135, 137, 1 << 16] {
        assert_eq!(decode_binding(&vec![0xff; len]), None, "{len} bytes");
    }
    let peer = libp2p::PeerId::random();
    let binding = Binding::sign(&Identity::from_seed("alice"), &peer, NOW);
    assert_eq!(decode_binding(&encode_binding(&binding)), Some(binding.clone()));
    // Arbitrary bytes of the right length decode, and verification refuses them.
    let forged = decode_binding(&[0xff; 136]).unwrap();
    assert!(forged.verify(&peer, 0).is_err());
    let mut wrong_key = binding;
    wrong_key.agent_key = agent_core::PublicKey([0xff; 32]);
    wrong_key.agent = Address::from_public_key(&wrong_key.agent_key);
    assert!(wrong_key.verify(&peer, 0).is_err());
}

#[test]
fn ledger_decoders_refuse_adversarial_json() {
    for input in adversarial_json() {
        assert!(serde_json::from_slice::<Transaction>(&input).is_err());
        assert!(serde_json::from_slice::<Receipt>(&input).is_err());
        assert!(serde_json::from_slice::<Escrow>(&input).is_err());
        assert!(serde_json::from_slice::<Request>(&input).is_err());
        assert!(serde_json::from_slice::<Response>(&input).is_err());
    }
    let identity = Identity::from_seed("alice");
    let tx = Transaction::sign(
        &identity,
        1,
        agent_core::ledger::Operation::Transfer { to: identity.address(), amount: u128::MAX },
        "é",
    );
    let json = serde_json::to_string(&tx).unwrap();
    assert_eq!(serde_json::from_str::<Transaction>(&json).unwrap(), tx);
    // One past u128::MAX, a signature of the wrong length, a non-hex key: typed errors.
    let max = u128::MAX.to_string();
    assert!(serde_json::from_str::<Transaction>(&json.replace(&max, &format!("{max}0"))).is_err());
    let signature = hex::encode(tx.signature);
    assert!(serde_json::from_str::<Transaction>(&json.replace(&signature, &signature[2..])).is_err());
    let key = hex::encode(tx.signer_key.0);
    assert!(serde_json::from_str::<Transaction>(&json.replace(&key, &"zz".repeat(32))).is_err());
    let request = serde_json::to_vec(&Request::Submit(Box::new(tx))).unwrap();
    assert!(matches!(serde_json::from_slice::<Request>(&request).unwrap(), Request::Submit(_)));
    assert!(serde_json::from_slice::<Request>(&request[..request.len() - 1]).is_err());
}
