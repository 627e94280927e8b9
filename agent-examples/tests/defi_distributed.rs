//! `defi --distributed` runs the market across OS processes over libp2p on loopback: an
//! almanac node, one ledger node per token, a node of market makers and a node of traders,
//! started by the demo, with the arbitrageurs in its own process. Every invariant holds,
//! checked against the books the maker and trader processes report and the ledger nodes.

use std::process::Command;

#[test]
fn the_defi_market_runs_across_processes_and_keeps_every_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let mut scenario: serde_json::Value = serde_json::from_str(include_str!("../scenarios/defi.json")).unwrap();
    // Real time: a short market, short holds and escrows.
    scenario["terms"] =
        serde_json::json!({"trading_ms": 8000, "calm_ms": 6000, "sample_ms": 500, "hold_ms": 2000, "escrow_ms": 5000});
    let path = dir.path().join("market.json");
    std::fs::write(&path, scenario.to_string()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_defi"))
        .args(["--distributed", "--json", "--plot"])
        .arg(dir.path().join("spread.svg"))
        .arg("--scenario")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the distributed market failed: {stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let invariants = summary["invariants"].as_array().unwrap();
    assert_eq!(invariants.len(), 6);
    for invariant in invariants {
        assert_eq!(invariant["holds"], true, "{invariant}");
    }
    let traded =
        summary["arbitrages"].as_array().unwrap().iter().filter(|a| a["completed"].get("Ok").is_some()).count();
    assert!(traded > 0, "the built-in pools start 2% apart: an arbitrage is traded across processes");
    let swaps: u64 = summary["pools"].as_array().unwrap().iter().map(|p| p["swaps"].as_u64().unwrap()).sum();
    assert!(swaps > 0);
    assert!(std::fs::read_to_string(dir.path().join("spread.svg")).unwrap().starts_with("<svg"));
}
