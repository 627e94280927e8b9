//! The README's demo command (`cargo run -p agent-examples`) runs the built-in flight
//! market, prints its summary table and exits with success; `--json` prints the summary as
//! JSON; a bad scenario file is a clear error.

use std::process::Command;

fn flights() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flights"))
}

#[test]
fn the_demo_runs_the_built_in_flight_market_and_prints_its_summary() {
    let output = flights().output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "demo failed: {}", String::from_utf8_lossy(&output.stderr));
    for heading in ["Travellers (", "Seats sold per flight", "Revenue per airline", "Invariants"] {
        assert!(stdout.contains(heading), "no {heading:?} in:\n{stdout}");
    }
    assert!(stdout.contains("JL10-0001"), "{stdout}");
    assert!(!stdout.contains("BROKEN"), "{stdout}");
}

#[test]
fn json_output_is_the_summary_and_a_bad_scenario_names_its_cause() {
    let output = flights().args(["--travellers", "30", "--airlines", "5", "--json"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["travellers"].as_array().map(Vec::len), Some(30));
    assert!(summary["invariants"].as_array().is_some_and(|all| all.iter().all(|i| i["holds"] == true)));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("market.json");
    std::fs::write(&path, r#"{"airlines": [], "travellers": [{"name": "x"}]}"#).unwrap();
    let output = flights().arg("--scenario").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("the scenario is not valid: missing field `route`"), "{stderr}");
    let output = flights().args(["--scenario", "/no/such/market.json"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot read the scenario /no/such/market.json: No such file"), "{stderr}");
}
