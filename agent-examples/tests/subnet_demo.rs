//! The subnet demo runs to completion with small flags and reports its invariants held.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs the demo with `args`, killing it if it takes more than a minute.
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_subnet"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the demo starts");
    let started = Instant::now();
    while child.try_wait().expect("the demo can be waited for").is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().expect("the demo can be killed");
            panic!("the demo took more than a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("the demo's output")
}

#[test]
fn the_subnet_demo_clips_the_colluder_and_conserves_supply() {
    let output = run(&["--epochs", "8", "--miners", "3", "--seed", "3"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    for line in [
        "invariant supply conserved: ok",
        "invariant colluder dividends fell: ok",
        "invariant colluder clipped: ok (the colluder's validator trust at the last scored epoch is 0.",
        "invariant favoured miner unpaid: ok (m",
        "invariant best miner most incentive: ok (m2 has the best accuracy; m2 earned the most incentive)",
        "scored |    I m0    I m1    I m2 | D honest-1 D honest-2 D colluder | colluder trust",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    // The two clipping invariants print their measured values; check them here too.
    let value = |prefix: &str| -> f64 {
        let line =
            stdout.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix:?} in:\n{stdout}"));
        let after = line.split(" is ").nth(1).unwrap_or_else(|| panic!("no value in {line:?}"));
        after.split(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no value in {line:?}"))
    };
    let trust = value("invariant colluder clipped:");
    assert!(trust < 0.05, "colluder trust {trust}:\n{stdout}");
    let favoured = value("invariant favoured miner unpaid:");
    assert!(favoured < 0.01, "favoured miner's incentive {favoured}:\n{stdout}");
    // One row per scored epoch: eight closes score epochs 0 to 4 (the reveal delay is 3).
    let rows = stdout.lines().filter(|l| l.split('|').count() == 4 && l.trim_start().starts_with(char::is_numeric));
    assert_eq!(rows.count(), 5, "{stdout}");
    // The balances after each close, one row per close, and checked on the ledger.
    assert!(stdout.contains("wallet balances after each close"), "{stdout}");
    assert!(stdout.contains("(every final balance checked on the ledger)"), "{stdout}");
    let balance_rows = stdout
        .lines()
        .skip_while(|l| !l.starts_with("closed |"))
        .skip(1)
        .take_while(|l| l.split('|').count() == 2 && l.trim_start().starts_with(char::is_numeric))
        .count();
    assert_eq!(balance_rows, 8, "one balance row per close:\n{stdout}");
}

#[test]
fn the_subnet_demo_refuses_flags_it_cannot_honour() {
    let output = run(&["--miners", "1"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--miners"));
}
