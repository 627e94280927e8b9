//! The README's demo command runs to completion and books, pays for, every trip.

#[test]
fn the_demo_books_and_pays_for_three_trips() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_agent-examples")).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "demo failed: {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(stdout.lines().filter(|l| l.trim_start().starts_with("paid and booked")).count(), 3, "{stdout}");
    assert!(stdout.contains("traveller's balance: 406.00 EUR"), "{stdout}");
}
