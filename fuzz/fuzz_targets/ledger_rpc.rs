//! The ledger service's request and response, as its JSON request/response codec
//! (`agent_core::net::rpc`, libp2p's json codec: `serde_json::from_slice`) reads them.
#![no_main]

use agent_core::ledger::service::{Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    agora_fuzz::json_round_trip::<Request>(data);
    agora_fuzz::json_round_trip::<Response>(data);
});
