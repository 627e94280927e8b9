//! Almanac registrations as JSON: what the almanac service, the DHT (record values) and
//! the store read. Round trip, and signature verification of whatever decodes.
#![no_main]

use agent_core::Address;
use almanac::Registration;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(record) = agora_fuzz::json_round_trip_eq::<Registration>(data) {
        let _ = record.verify();
    }
    // The DHT's index records: lists of addresses.
    agora_fuzz::json_round_trip_eq::<Vec<Address>>(data);
});
