//! JSON payloads decoded into derived messages, through `Envelope::open` (what a receiver
//! runs before handing a remote message to its handler): a message declared here that
//! uses every shape the derive supports, and protocol messages that travel between nodes.
#![no_main]

use std::collections::BTreeMap;

use agent_core::{Address, Envelope, Message, SchemaDigest};
use agent_protocols::{contract_net, double_auction, settlement, subnet};
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema)]
enum Shape {
    Unit,
    Tuple(u8, i64),
    Named { x: u128, label: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema)]
struct Tree {
    value: u32,
    children: Vec<Tree>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
enum Tagged {
    Text(String),
    Count { n: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Everything {
    to: Address,
    amount: u128,
    bytes: Vec<u8>,
    shape: Shape,
    tagged: Tagged,
    tree: Option<Tree>,
    attributes: BTreeMap<String, i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

fn envelope(schema: SchemaDigest, payload: &[u8]) -> Envelope {
    Envelope {
        version: agent_core::envelope::VERSION,
        sender: Address::from_bytes([1; 32]),
        sender_key: agent_core::PublicKey([2; 32]),
        target: Address::from_bytes([3; 32]),
        session: 0,
        schema,
        protocol: None,
        in_reply_to: None,
        expects_reply: false,
        trace_id: 0,
        nonce: 0,
        timestamp_ms: 0,
        expires_ms: 0,
        payload: payload.to_vec(),
        signature: [0; 64],
    }
}

/// Opens `payload` as `M` as a receiver does; what opens must survive the round trip.
fn open<M: Message + PartialEq + std::fmt::Debug>(payload: &[u8]) {
    let Ok(message) = envelope(M::digest(), payload).open::<M>() else { return };
    let encoded = serde_json::to_vec(&message).expect("a decoded message encodes");
    let again = envelope(M::digest(), &encoded).open::<M>().expect("an encoded message opens");
    assert_eq!(again, message, "decode(encode(m)) != m for {}", M::NAME);
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the message type, so each input reaches one decoder deeply.
    let Some((&pick, payload)) = data.split_first() else { return };
    match pick % 8 {
        0 => open::<Everything>(payload),
        1 => open::<contract_net::Cfp>(payload),
        2 => open::<contract_net::Answer>(payload),
        3 => open::<double_auction::SignedOrder>(payload),
        4 => open::<settlement::Payment>(payload),
        5 => open::<subnet::Register>(payload),
        6 => open::<subnet::Reveal>(payload),
        _ => open::<subnet::Commit>(payload),
    }
});
