//! The envelope codec: `Envelope::decode` on untrusted bytes, then every check a receiver
//! runs. Decoding is canonical: what decodes re-encodes to exactly the same bytes.
#![no_main]

use agent_core::{Envelope, VerifyPolicy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let policy = VerifyPolicy::default().with_max_payload(64 * 1024);
    let Ok(envelope) = Envelope::decode(data, policy.max_payload()) else { return };
    let encoded = envelope.encode();
    assert_eq!(encoded, data, "encode(decode(bytes)) != bytes");
    assert_eq!(Envelope::decode(&encoded, policy.max_payload()).as_ref(), Ok(&envelope));
    // The receiver's checks on arbitrary keys, signatures and clocks return, never panic.
    for now in [0, envelope.timestamp_ms, envelope.expires_ms, u64::MAX] {
        let _ = envelope.verify_stateless(&policy, now, |_| true);
        let _ = envelope.verify_unsigned(&policy, now, |_| true);
    }
});
