//! Adaptive busy polling: after writing a frame its peer will answer soon, a stream keeps
//! its runtime polling sockets for a short while instead of letting the thread sleep.
//!
//! Waking a sleeping thread costs tens of microseconds on virtual machines, more than the
//! rest of a loopback round trip. While a stream polls, its task yields in a loop: the
//! runtime runs every other ready task, then checks its sockets without sleeping, so the
//! answer is read the moment it lands. A stream whose answers keep arriving too late to be
//! caught this way (a slow peer, a long path) stops polling and only tries again now and
//! then, so it does not burn CPU for nothing.

use std::time::{Duration, Instant};

/// Polls that ended without an answer, in a row, before a stream stops polling.
const MISSES_BEFORE_RESTING: u32 = 4;

/// While resting, one exchange in this many still polls, to notice the peer got faster.
const PROBE_EVERY: u32 = 32;

/// One stream's polling state.
///
/// Real time (`std::time::Instant`) bounds the poll, not tokio's clock: a paused test
/// clock does not advance while a task keeps yielding, and a poll must end regardless.
#[derive(Debug)]
pub(crate) struct BusyPoll {
    budget: Duration,
    until: Option<Instant>,
    misses: u32,
    resting_for: u32,
}

impl BusyPoll {
    /// Polls of at most `budget` (zero: never poll).
    pub(crate) fn new(budget: Duration) -> Self {
        BusyPoll { budget, until: None, misses: 0, resting_for: 0 }
    }

    /// A frame the peer will answer was written: start polling, unless resting.
    pub(crate) fn wrote(&mut self) {
        if self.budget.is_zero() {
            return;
        }
        if self.misses >= MISSES_BEFORE_RESTING {
            self.resting_for += 1;
            if !self.resting_for.is_multiple_of(PROBE_EVERY) {
                return;
            }
        }
        self.until = Some(Instant::now() + self.budget);
    }

    /// Something arrived: a poll running now has paid off.
    pub(crate) fn heard(&mut self) {
        if self.until.take().is_some() {
            self.misses = 0;
            self.resting_for = 0;
        }
    }

    /// Whether to keep polling now; a poll that runs out counts as a miss.
    pub(crate) fn polling(&mut self) -> bool {
        match self.until {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                self.until = None;
                self.misses = self.misses.saturating_add(1);
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lets the running poll run out (by moving its end to now, not by sleeping: a long
    /// budget keeps the test immune to a slow machine).
    fn expire(poll: &mut BusyPoll) {
        poll.until = poll.until.map(|_| Instant::now());
        assert!(!poll.polling());
    }

    #[test]
    fn polls_after_a_write_until_heard() {
        let mut poll = BusyPoll::new(Duration::from_secs(60));
        assert!(!poll.polling(), "nothing written, nothing to wait for");
        poll.wrote();
        assert!(poll.polling());
        poll.heard();
        assert!(!poll.polling());
    }

    #[test]
    fn zero_budget_never_polls() {
        let mut poll = BusyPoll::new(Duration::ZERO);
        poll.wrote();
        assert!(!poll.polling());
    }

    #[test]
    fn rests_after_repeated_misses_and_probes_now_and_then() {
        let mut poll = BusyPoll::new(Duration::from_secs(60));
        for _ in 0..MISSES_BEFORE_RESTING {
            poll.wrote();
            assert!(poll.polling());
            expire(&mut poll);
        }
        let polled: u32 = (0..PROBE_EVERY * 2)
            .map(|_| {
                poll.wrote();
                let polling = poll.polling();
                poll.until = None; // Neither a hit nor a miss: stay resting.
                u32::from(polling)
            })
            .sum();
        assert_eq!(polled, 2, "only the probes poll while resting");
        // A probe that is answered in time ends the rest.
        let probed = (0..PROBE_EVERY).any(|_| {
            poll.wrote();
            poll.polling()
        });
        assert!(probed);
        poll.heard();
        poll.wrote();
        assert!(poll.polling());
    }
}
