//! Adversarial inputs for the almanac's decoders of outside bytes (registrations, queries,
//! pages, events, and the service's requests and responses), kept in the normal test suite
//! beside the fuzz targets in `fuzz/` (see `docs/reliability.md`). Each ends in a typed
//! error, never a panic; a crash a fuzz target finds is added here as the exact bytes.

use std::collections::BTreeMap;

use agent_core::{Address, Identity};
use almanac::service::{Request, Response};
use almanac::{Event, Page, Query, Registration, WeightedEndpoint};

fn adversarial_json() -> Vec<Vec<u8>> {
    let mut nested = vec![b'['; 100_000];
    nested.extend(vec![b']'; 100_000]);
    vec![
        Vec::new(),
        b"{".to_vec(),
        b"{\"Register\":".to_vec(),
        nested,
        b"{\"Query\":".repeat(10_000),
        vec![0xff, 0xfe, b'{', 0xc3, 0x28],
        b"{\"Lookup\":\"agent1\xff\"}".to_vec(),
        b"{\"PublishManifest\":\"\xc3\x28\"}".to_vec(),
        format!("{{\"Query\":{{\"protocol\":null,\"attributes\":[],\"after\":null,\"limit\":{}}}}}", "9".repeat(400))
            .into_bytes(),
        b"{\"Query\":{\"protocol\":null,\"attributes\":[],\"after\":null,\"limit\":-1}}".to_vec(),
        b"{\"Query\":{\"protocol\":null,\"attributes\":[[\"a\"]],\"after\":null,\"limit\":1}}".to_vec(),
        b"{\"Manifest\":\"00\"}".to_vec(),
        b"null".to_vec(),
        vec![0; 1 << 16],
    ]
}

fn registration() -> Registration {
    let endpoints = vec![WeightedEndpoint { addr: "/ip4/127.0.0.1/tcp/1".into(), weight: u32::MAX }];
    let attributes = BTreeMap::from([("é".to_string(), "\u{0}".to_string())]);
    Registration::sign(&Identity::from_seed("alice"), "peer", endpoints, Vec::new(), attributes, u64::MAX, u64::MAX)
}

#[test]
fn almanac_decoders_refuse_adversarial_json() {
    for input in adversarial_json() {
        assert!(serde_json::from_slice::<Registration>(&input).is_err());
        assert!(serde_json::from_slice::<Query>(&input).is_err());
        assert!(serde_json::from_slice::<Page>(&input).is_err());
        assert!(serde_json::from_slice::<Event>(&input).is_err());
        assert!(serde_json::from_slice::<Vec<Address>>(&input).is_err());
        assert!(serde_json::from_slice::<Request>(&input).is_err(), "{:?}", String::from_utf8_lossy(&input));
        assert!(serde_json::from_slice::<Response>(&input).is_err());
    }
}

#[test]
fn registrations_round_trip_and_refuse_tampering() {
    let record = registration();
    let json = serde_json::to_string(&record).unwrap();
    let decoded: Registration = serde_json::from_str(&json).unwrap();
    assert_eq!(decoded, record);
    decoded.verify().unwrap();
    // One past u64::MAX, a short signature, a tampered field: typed errors.
    let max = u64::MAX.to_string();
    assert!(serde_json::from_str::<Registration>(&json.replacen(&max, &format!("{max}0"), 1)).is_err());
    let signature = hex::encode(record.signature);
    assert!(serde_json::from_str::<Registration>(&json.replace(&signature, &signature[2..])).is_err());
    let tampered: Registration = serde_json::from_str(&json.replace("\"peer\"", "\"peer2\"")).unwrap();
    assert!(tampered.verify().is_err());
    // Through the service's request type, and cut short.
    let request = serde_json::to_vec(&Request::Register(Box::new(record))).unwrap();
    assert!(matches!(serde_json::from_slice::<Request>(&request).unwrap(), Request::Register(_)));
    for cut in [1, request.len() / 2, request.len() - 1] {
        assert!(serde_json::from_slice::<Request>(&request[..cut]).is_err());
    }
    let query = Query::default().with_attribute("service", "é").with_limit(usize::MAX);
    assert_eq!(serde_json::from_slice::<Query>(&serde_json::to_vec(&query).unwrap()).unwrap(), query);
}
