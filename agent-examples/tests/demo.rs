//! The README's demo command (`cargo run -p agent-examples`) runs the built-in flight
//! market, prints its summary table and exits with success; `--json` prints the summary as
//! JSON; a bad scenario file is a clear error. The grid demo likewise, and `--plot`
//! writes its chart.

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
    // stdout is a pipe here, not a terminal: no progress bar anywhere.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("travellers [") && !stderr.contains('\r'), "{stderr}");
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

fn grid() -> Command {
    Command::new(env!("CARGO_BIN_EXE_grid"))
}

#[test]
fn the_grid_demo_prints_its_day_plots_it_and_names_a_bad_scenarios_cause() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("day.svg");
    let output = grid().arg("--plot").arg(&plot).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "demo failed: {}", String::from_utf8_lossy(&output.stderr));
    for heading in ["Per hour", "Households (tokens)", "Battery battery", "Operator grid-operator", "Invariants"] {
        assert!(stdout.contains(heading), "no {heading:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("BROKEN"), "{stdout}");
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("Clearing price"));

    let output = grid().args(["--households", "12", "--first", "44", "--intervals", "4", "--json"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["households"].as_array().map(Vec::len), Some(12));
    assert_eq!(summary["intervals"].as_array().map(Vec::len), Some(4));
    assert!(summary["invariants"].as_array().is_some_and(|all| all.iter().all(|i| i["holds"] == true)));

    let path = dir.path().join("grid.json");
    std::fs::write(&path, r#"{"seed": 1, "operator": {"name": "op", "funds": 1}, "households": [{"name": "x"}]}"#)
        .unwrap();
    let output = grid().arg("--scenario").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("the scenario is not valid: missing field `panel_kw`"), "{stderr}");
    // A household that cannot pay its bill breaks an invariant: printed, and a failure.
    let broke = r#"{"seed": 1, "operator": {"name": "op", "funds": 1000000}, "households": [
        {"name": "broke", "panel_kw": 0, "base_load_kw": 1.0, "funds": 0},
        {"name": "fine", "panel_kw": 0, "base_load_kw": 1.0, "funds": 10000000}]}"#;
    std::fs::write(&path, broke).unwrap();
    let output = grid().arg("--scenario").arg(&path).args(["--intervals", "4"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("BROKEN  broke's statement for intervals 0..4"), "{stdout}");
    let output = grid().args(["--intervals", "0"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("at least one interval"));
}

#[test]
fn a_broken_invariant_makes_the_supply_demo_exit_non_zero() {
    // A manufacturer that cannot pay for anything: no order can be placed, every round
    // fails, and the parts are still missing when the rounds run out.
    let mut scenario: serde_json::Value = serde_json::from_str(include_str!("../scenarios/supply.json")).unwrap();
    scenario["manufacturer_funds"] = 1.into();
    scenario["terms"]["rounds"] = 2.into();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.json");
    std::fs::write(&path, scenario.to_string()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_supply")).arg("--scenario").arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("BROKEN"), "{stdout}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("invariants broken"));
}
