//! `grid --distributed` runs the energy market across OS processes over libp2p on
//! loopback: an almanac node, a ledger node and two household nodes, started by the demo,
//! with the operator and the battery in its own process; an interval lasts half a second.
//! Every invariant holds, checked against the books the household processes report, the
//! operator's rounds and the ledger node.

use std::process::Command;

use agent_examples::grid::Scenario;

#[test]
fn the_energy_market_runs_across_processes_and_keeps_every_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let mut scenario = Scenario::generate(3, 8);
    // Bills every hour: three rounds of statements and their payments across processes.
    scenario.terms.bill_every = 4;
    let path = dir.path().join("market.json");
    std::fs::write(&path, serde_json::to_string(&scenario).unwrap()).unwrap();
    let started = std::time::Instant::now();
    // 10:00 to 13:00, when the sun is up and households trade.
    let output = Command::new(env!("CARGO_BIN_EXE_grid"))
        .args(["--distributed", "--shards", "2", "--first", "40", "--intervals", "12"])
        .args(["--ms-per-interval", "500", "--json", "--scenario"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the distributed market failed: {stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let invariants = summary["invariants"].as_array().unwrap();
    assert_eq!(invariants.len(), 7);
    for invariant in invariants {
        assert_eq!(invariant["holds"], true, "{invariant}");
    }
    let intervals = summary["intervals"].as_array().unwrap();
    assert_eq!(intervals.len(), 12);
    let traded: u64 = intervals.iter().map(|i| i["traded_wh"].as_u64().unwrap()).sum();
    let paid: u64 = intervals.iter().map(|i| i["trades_paid"].as_u64().unwrap()).sum();
    assert!(traded > 0 && paid > 0, "{traded} Wh traded, {paid} trades paid across processes");
    let sellers = summary["households"].as_array().unwrap().iter().filter(|h| h["sold_wh"].as_u64() > Some(0)).count();
    assert!(sellers > 0);
    // Feed-in credits: the operator paid households in other processes through the ledger node.
    assert!(summary["operator"]["paid"].as_u64().unwrap() > 0, "{}", summary["operator"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "{:?}", started.elapsed());
}
