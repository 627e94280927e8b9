//! What every demo market shares: the invariants checked at the end of a run, the
//! summary printed as a table or as JSON, a progress line, and the simulated runtime a
//! market runs on in one process.
//!
//! A market runs by default on the simulation kit ([`agent_core::sim`]): every agent is
//! real (handlers, mailboxes, storage, protocols, wallets), the network between hosts is
//! simulated, and the clock is tokio's paused clock, so an hour of market time takes as
//! long as the work in it and the same seed gives the same market, event for event.

pub mod distributed;
mod progress;
pub mod scenario;
mod table;

pub use progress::Progress;
pub use scenario::ScenarioError;
pub use table::Table;

use serde::Serialize;

/// One invariant of a market, checked at the end of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invariant {
    /// What must hold ("no seat sold twice").
    pub name: String,
    /// Whether it held.
    pub holds: bool,
    /// The first violations found, if any, or what was checked.
    pub detail: String,
}

/// The invariants of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Invariants(pub Vec<Invariant>);

impl Invariants {
    /// Records `name`: it holds when `violations` is empty; otherwise the first few
    /// violations are kept as its detail. `checked` says what was looked at.
    pub fn check(&mut self, name: &str, checked: impl Into<String>, violations: Vec<String>) {
        let holds = violations.is_empty();
        let detail = match holds {
            true => checked.into(),
            false => {
                let shown: Vec<&str> = violations.iter().take(5).map(String::as_str).collect();
                let more = violations.len().saturating_sub(shown.len());
                let more = if more > 0 { format!(" (and {more} more)") } else { String::new() };
                format!("{}{more}", shown.join("; "))
            }
        };
        self.0.push(Invariant { name: name.into(), holds, detail });
    }

    /// Whether every invariant held.
    pub fn all_hold(&self) -> bool {
        self.0.iter().all(|i| i.holds)
    }

    /// The ones that did not hold.
    pub fn broken(&self) -> Vec<&Invariant> {
        self.0.iter().filter(|i| !i.holds).collect()
    }

    /// The invariants as a table: each with `ok` or `BROKEN` and its detail.
    pub fn table(&self) -> Table {
        let mut table = Table::new(["invariant", "", "checked"]);
        for invariant in &self.0 {
            let verdict = if invariant.holds { "ok" } else { "BROKEN" };
            table.row([invariant.name.clone(), verdict.into(), invariant.detail.clone()]);
        }
        table
    }
}

/// A current-thread runtime with the clock paused, for a market on the simulation kit.
pub fn simulated_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build()
}

/// Waits until none of `wallets` has an open escrow (each released, or refunded at its
/// deadline), or until `limit` has passed, looking every `every`.
pub async fn await_settled(
    ledger: &dyn agent_core::ledger::Ledger,
    wallets: &[agent_core::Address],
    limit: std::time::Duration,
    every: std::time::Duration,
) {
    let until = tokio::time::Instant::now() + limit;
    loop {
        let mut open = false;
        for wallet in wallets {
            open = ledger.open_escrows(*wallet, 1).await.map_or(true, |e| !e.is_empty());
            if open {
                break;
            }
        }
        if !open || tokio::time::Instant::now() >= until {
            return;
        }
        tokio::time::sleep(every).await;
    }
}

/// Writes `text` to stdout. A reader that went away (`demo | head`) is not an error:
/// the demo's result no longer has anywhere to go.
pub fn write_stdout(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Money in the demos: integer cents, printed with two decimals.
pub fn cents(amount: u128) -> String {
    format!("{}.{:02}", amount / 100, amount % 100)
}
