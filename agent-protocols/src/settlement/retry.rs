//! Trying a ledger call again until an escrow's deadline.
//!
//! Who may release an escrow must do it before its deadline, after which the escrow is the
//! payer's refund; a ledger that cannot be reached for a while must not cost the seller its
//! pay. [`retry_until`] is that rule for one call. A refund has the opposite timing (it
//! starts at the deadline and keeps trying for an hour: [`refund_at`](super::refund_at)),
//! and does not use it.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use agent_core::ledger::EscrowId;

use super::unix_now_ms;

/// The pause after the first failed try; each later pause doubles, up to [`LAST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);

/// The longest pause between two tries.
const LAST_PAUSE: Duration = Duration::from_secs(2);

/// Runs `attempt`, a call to the ledger about `escrow`, until it gives `Ok`, pausing 100 ms
/// after the first failure, doubling to 2 s, as long as the try after the pause would start
/// before `deadline_ms` (ms since the Unix epoch); then gives back the last error. Tries
/// once even if the deadline has passed. Each failure tried again is logged as a warning,
/// `what` followed by "; trying again"; the last one is the caller's to log.
///
/// For a call that is worth making only before an escrow's deadline, and that failing
/// until then costs someone their pay: a seller's release, a winner's read of the escrow
/// it is to release. An `attempt` that has an answer worth stopping on besides success
/// (an escrow already settled) maps it to `Ok`.
pub(crate) async fn retry_until<T, E, F, Fut>(
    deadline_ms: u64,
    escrow: EscrowId,
    what: &str,
    mut attempt: F,
) -> Result<T, E>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut pause = FIRST_PAUSE;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if unix_now_ms().saturating_add(pause.as_millis() as u64) < deadline_ms => {
                tracing::warn!(%escrow, error = %e, "{what}; trying again");
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LAST_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::time::Duration;

    use agent_core::ledger::EscrowId;
    use agent_core::sim::Sim;

    use super::retry_until;

    /// Runs `retry_until` with a deadline `deadline_after_ms` from now, on an attempt that
    /// fails `failures` times and then gives `Ok(7)`; returns what it gave and when each
    /// attempt was made (ms after the start), on the simulation's paused clock.
    async fn run(deadline_after_ms: i64, failures: usize) -> (Result<u32, String>, Vec<u64>) {
        let sim = Sim::new(1);
        let start = sim.unix_ms();
        let tries = RefCell::new(Vec::new());
        let attempt = || {
            tries.borrow_mut().push(sim.unix_ms() - start);
            let failed = tries.borrow().len() <= failures;
            async move {
                if failed {
                    Err("down".to_owned())
                } else {
                    Ok(7)
                }
            }
        };
        let deadline_ms = start.saturating_add_signed(deadline_after_ms);
        let bounded =
            tokio::time::timeout(Duration::from_secs(60), retry_until(deadline_ms, EscrowId([0; 32]), "test", attempt));
        let outcome = bounded.await.expect("gave up within a minute");
        (outcome, tries.into_inner())
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_double_to_two_seconds_until_the_next_try_would_pass_the_deadline() {
        let (outcome, tries) = run(7_000, usize::MAX).await;
        assert_eq!(outcome, Err("down".to_owned()));
        // Pauses of 100, 200, 400, 800, 1600, 2000 ms; then 5100 + 2000 would pass 7000.
        assert_eq!(tries, [0, 100, 300, 700, 1_500, 3_100, 5_100]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_success_is_returned_and_ends_the_tries() {
        let (outcome, tries) = run(7_000, 2).await;
        assert_eq!(outcome, Ok(7));
        assert_eq!(tries, [0, 100, 300]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_already_passed_gets_one_try() {
        let (outcome, tries) = run(-1, usize::MAX).await;
        assert_eq!(outcome, Err("down".to_owned()));
        assert_eq!(tries, [0]);
    }
}
