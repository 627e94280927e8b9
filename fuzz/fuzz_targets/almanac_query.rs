//! Almanac queries, pages and subscription events as JSON.
#![no_main]

use almanac::{Event, Page, Query};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    agora_fuzz::json_round_trip_eq::<Query>(data);
    agora_fuzz::json_round_trip_eq::<Page>(data);
    agora_fuzz::json_round_trip_eq::<Event>(data);
});
