//! `supply --distributed` runs the chain across OS processes: an almanac node, a ledger
//! node and two supplier nodes, started by the demo, with the manufacturer in its own
//! process, over libp2p on loopback; market hours pass in 100 ms. Every invariant holds,
//! checked against the books the supplier processes report and the ledger node.

use std::process::Command;

#[test]
fn the_supply_chain_runs_across_processes_and_keeps_every_invariant() {
    let output =
        Command::new(env!("CARGO_BIN_EXE_supply")).args(["--distributed", "--shards", "2", "--json"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the distributed chain failed: {stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let invariants = summary["invariants"].as_array().unwrap();
    assert_eq!(invariants.len(), 5);
    for invariant in invariants {
        assert_eq!(invariant["holds"], true, "{invariant}");
    }
    let parts = summary["parts"].as_array().unwrap();
    let delivered: u64 = parts.iter().map(|p| p["delivered"].as_u64().unwrap()).sum();
    assert!(delivered >= 24, "{delivered} of 30 units delivered across processes");
    // Tier-1 motor makers bought their coils and magnets from tier-2 processes.
    let bought: usize =
        summary["suppliers"].as_array().unwrap().iter().map(|s| s["purchases"].as_array().unwrap().len()).sum();
    assert!(bought > 0);
}
