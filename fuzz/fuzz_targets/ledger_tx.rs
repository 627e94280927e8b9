//! Ledger transactions (and receipts and escrows) as JSON: round trip, then the checks a
//! ledger runs before applying (signing bytes, hash, signature).
#![no_main]

use agent_core::ledger::{Escrow, Receipt, Transaction};
use agent_core::Address;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(tx) = agora_fuzz::json_round_trip_eq::<Transaction>(data) {
        let _ = tx.hash();
        let _ = Address::from_public_key(&tx.signer_key) == tx.signer;
        let _ = tx.signer_key.verify(&tx.signing_bytes(), &tx.signature);
    }
    agora_fuzz::json_round_trip_eq::<Receipt>(data);
    agora_fuzz::json_round_trip_eq::<Escrow>(data);
});
