//! Session bindings, the body of a bind frame: decode, round trip, and verification
//! against arbitrary keys and signatures.
#![no_main]

use agent_core::fuzzing::{decode_binding, encode_binding};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(binding) = decode_binding(data) else { return };
    assert_eq!(encode_binding(&binding), data, "encode(decode(bytes)) != bytes");
    let peer = libp2p::PeerId::from_bytes(&[0, 4, 1, 2, 3, 4]).unwrap_or_else(|_| libp2p::PeerId::random());
    for now in [0, binding.expires_ms, u64::MAX] {
        let _ = binding.verify(&peer, now);
    }
});
