//! Messages in flight: one queue of timed events for the whole network, and one task (the
//! driver) that runs each event when the simulated clock reaches it.
//!
//! A send is a [`Flight`] that moves from event to event: an attempt draws the copy's fate
//! (lost, blocked, or arriving at some instant), an arrival hands the message over, the
//! acknowledgement's arrival ends the send. The sender only waits for the outcome, so a
//! message in flight costs one entry in a queue, not a timer and a wake-up of the sender's
//! task per copy (with thousands of agents, each wake-up touched the sender's cold future).
//! Events are due by the millisecond, the resolution of tokio's timers that drive the paused
//! clock; those due in the same millisecond run in the order they were scheduled, so a seed
//! gives the same run every time. A hand-over that must wait (a full mailbox whose agent
//! waits, an agent that acknowledges once handled) waits in a task of its own.
//!
//! Bounds: one entry per message in flight, each ended by its deadline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::net::{hand_over, HandOver, Net, Way};
use crate::error::SendFailure;
use crate::identity::Address;
use crate::remote::{Outgoing, ReplyPath};

/// One send on its way, from its first attempt to its outcome.
pub(super) struct Flight {
    src: usize,
    /// The receiver's host (the sender's until [`Net::carry`] finds it).
    dst: usize,
    from: Address,
    to: Address,
    message: Outgoing,
    /// The payload's size: the payload itself goes with the first copy handed over.
    size: usize,
    /// Goes with the first copy handed over, for a request.
    reply: Option<Box<dyn ReplyPath>>,
    /// Whether the receiver acknowledges once its handler ran (found with its host).
    when_handled: bool,
    deadline: Instant,
    timeout: Duration,
    /// The receiver's answer to the first copy handed over; later copies get the same.
    verdict: Option<Result<(), SendFailure>>,
    /// Whether any copy got through the partitions (to tell unreachable from unanswered).
    reached: bool,
    /// When the copy on its way arrives (to let go of its ordering entry then).
    arrives: Instant,
    /// Where the outcome goes: the receiver's host, or why the send failed.
    done: oneshot::Sender<Result<usize, SendFailure>>,
}

/// What a flight does when its event comes due.
enum Step {
    /// Sends a copy (again).
    Attempt,
    /// The copy arrives at the receiver's host.
    Arrive,
    /// The acknowledgement arrives back at the sender's host.
    Acknowledged,
    /// The deadline passed.
    Fail,
}

struct Event {
    step: Step,
    flight: Box<Flight>,
}

/// The events to come, by the millisecond they are due in (tokio's timers, which drive the
/// paused clock, have millisecond resolution): within one millisecond, events run in the
/// order they were scheduled. A copy's arrival is due in the millisecond that contains its
/// exact arrival instant, or the first one after it.
#[derive(Default)]
pub(super) struct Flights {
    due: BTreeMap<u64, Vec<Event>>,
    /// The millisecond the driver wakes in next by itself; none while it runs events (it
    /// looks at the queue again before it sleeps) or has nothing to wait for.
    armed: Option<u64>,
    /// Whether the driver is running events now.
    running: bool,
}

/// Where a send's outcome arrives: the receiver's host, or why the send failed.
pub(super) type Outcome = oneshot::Receiver<Result<usize, SendFailure>>;

impl Flight {
    /// A send from `from` on host `src` to `to`; [`Net::carry`] finds `to`'s host.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        src: usize,
        from: Address,
        to: Address,
        message: Outgoing,
        reply: Option<Box<dyn ReplyPath>>,
        deadline: Instant,
        timeout: Duration,
    ) -> (Box<Flight>, Outcome) {
        let size = message.payload.len();
        // Set when a copy is on its way; until then nothing reads it.
        let arrives = deadline;
        let (done, outcome) = oneshot::channel();
        let flight = Flight {
            src,
            dst: src,
            from,
            to,
            message,
            size,
            reply,
            when_handled: false,
            deadline,
            timeout,
            verdict: None,
            reached: false,
            arrives,
            done,
        };
        (Box::new(flight), outcome)
    }

    pub(super) fn to(&self) -> Address {
        self.to
    }

    pub(super) fn from(&self) -> Address {
        self.from
    }

    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The receiver is on host `dst`, and acknowledges once handled if `when_handled`.
    pub(super) fn set_destination(&mut self, dst: usize, when_handled: bool) {
        self.dst = dst;
        self.when_handled = when_handled;
    }

    fn names(&self, net: &Net) -> (String, String) {
        (net.name_of(&self.from), net.name_of(&self.to))
    }
}

impl Net {
    /// Puts `flight` in the queue for `step` at `at`, and starts or wakes the driver if it
    /// would sleep past `at`.
    fn schedule(self: &Arc<Self>, at: Instant, step: Step, flight: Box<Flight>) {
        let since = at.saturating_duration_since(self.started());
        // The millisecond containing `at` or the first after it, in whole numbers: whole
        // seconds are whole milliseconds, so only the fraction rounds up (no u128 division).
        let millisecond = since.as_secs() * 1000 + u64::from(since.subsec_nanos().div_ceil(1_000_000));
        let wake = {
            let mut wire = self.wire.lock();
            let flights = &mut wire.flights;
            flights.due.entry(millisecond).or_default().push(Event { step, flight });
            let wake = !flights.running && flights.armed.is_none_or(|armed| millisecond < armed);
            if wake {
                flights.armed = Some(millisecond);
            }
            wake
        };
        if wake {
            let mut driver = self.driver.lock();
            if driver.is_none() {
                *driver = Some(tokio::spawn(drive(Arc::clone(self))).abort_handle());
            }
            drop(driver);
            self.wake.notify_one();
        }
    }

    /// Sends a copy of the flight's message at `now`, unless its deadline has passed.
    pub(super) fn attempt(self: &Arc<Self>, mut flight: Box<Flight>, now: Instant) {
        if now >= flight.deadline {
            return self.fail(flight);
        }
        let (way, pause) = {
            let mut wire = self.wire.lock();
            let pair = Some((flight.from, flight.to));
            let way = wire.way(now, now - self.started(), flight.src, flight.dst, flight.size, pair);
            let pause = wire.pause_after(&way, flight.src, flight.dst);
            (way, pause)
        };
        let what = flight.message.name;
        match way {
            Way::Blocked => {
                self.record(|| {
                    let (sender, receiver) = flight.names(self);
                    format!("blocked {sender} -> {receiver} {what}")
                });
                self.schedule((now + pause).min(flight.deadline), Step::Attempt, flight);
            }
            Way::Lost => {
                flight.reached = true;
                self.record(|| {
                    let (sender, receiver) = flight.names(self);
                    format!("lost {sender} -> {receiver} {what}")
                });
                self.schedule((now + pause).min(flight.deadline), Step::Attempt, flight);
            }
            Way::Arrives(at) => {
                flight.reached = true;
                if at > flight.deadline {
                    let deadline = flight.deadline;
                    self.schedule(deadline, Step::Fail, flight);
                } else {
                    flight.arrives = at;
                    self.schedule(at, Step::Arrive, flight);
                }
            }
        }
    }

    /// The copy reached the receiver's host: hand it over, or answer it with the first
    /// copy's verdict.
    fn arrive(self: &Arc<Self>, mut flight: Box<Flight>, now: Instant) {
        let sink = {
            let mut wire = self.wire.lock();
            wire.arrived((flight.from, flight.to), flight.arrives);
            wire.sink(flight.dst)
        };
        // The host went down while the copy was on its way: the next attempt finds it cut.
        let Some(sink) = sink else { return self.attempt(flight, now) };
        let what = flight.message.name;
        if flight.verdict.is_some() {
            self.wire.lock().stats.duplicates += 1;
            self.record(|| {
                let (sender, receiver) = flight.names(self);
                format!("again {sender} -> {receiver} {what}")
            });
            return self.acknowledge(flight, now);
        }
        let payload = std::mem::take(&mut flight.message.payload);
        let reply = flight.reply.take();
        let (from, to, deadline, timeout) = (flight.from, flight.to, flight.deadline, flight.timeout);
        let message = &flight.message;
        match hand_over(&sink, from, to, message, payload, reply, flight.when_handled, deadline, timeout) {
            HandOver::Done(outcome) => self.handed_over(flight, outcome, now),
            HandOver::Waits(waiting) => {
                let net = Arc::clone(self);
                tokio::spawn(async move {
                    let outcome = waiting.await;
                    // Handed over later than it arrived: the clock moved on meanwhile.
                    net.handed_over(flight, outcome, Instant::now());
                });
            }
        }
    }

    /// The receiver took the first copy (or refused it): its verdict goes back, and answers
    /// every later copy.
    fn handed_over(self: &Arc<Self>, mut flight: Box<Flight>, outcome: Result<(), SendFailure>, now: Instant) {
        let what = flight.message.name;
        match &outcome {
            Ok(()) => {
                self.wire.lock().stats.delivered += 1;
                self.record(|| {
                    let (sender, receiver) = flight.names(self);
                    format!("delivered {sender} -> {receiver} {what}")
                });
            }
            Err(e) => self.record(|| {
                let (sender, receiver) = flight.names(self);
                format!("refused {sender} -> {receiver} {what}: {e}")
            }),
        }
        flight.verdict = Some(outcome);
        self.acknowledge(flight, now);
    }

    /// Sends the acknowledgement, at `now`, of a copy handed over (maybe duplicated on the
    /// way in).
    fn acknowledge(self: &Arc<Self>, flight: Box<Flight>, now: Instant) {
        let what = flight.message.name;
        let (duplicated, way, pause) = {
            let mut wire = self.wire.lock();
            let duplicated = wire.duplicates(flight.src, flight.dst);
            if duplicated {
                wire.stats.duplicates += 1;
            }
            // The acknowledgement travels back, and may be lost too.
            let way = wire.way(now, now - self.started(), flight.dst, flight.src, 16, None);
            let pause = wire.pause_after(&way, flight.src, flight.dst);
            (duplicated, way, pause)
        };
        if duplicated {
            self.record(|| {
                let (sender, receiver) = flight.names(self);
                format!("duplicate {sender} -> {receiver} {what}")
            });
        }
        match way {
            Way::Arrives(at) if at <= flight.deadline => self.schedule(at, Step::Acknowledged, flight),
            Way::Arrives(_) => self.fail(flight),
            Way::Lost | Way::Blocked => {
                self.record(|| {
                    let (sender, receiver) = flight.names(self);
                    format!("ack lost {receiver} -> {sender} {what}")
                });
                self.schedule((now + pause).min(flight.deadline), Step::Attempt, flight);
            }
        }
    }

    /// The acknowledgement is back: the send ends with the receiver's verdict.
    fn acknowledged(&self, flight: Box<Flight>) {
        let Flight { dst, verdict, done, to, timeout, .. } = *flight;
        let outcome = match verdict {
            Some(verdict) => verdict.map(|()| dst),
            // Not reached: an acknowledgement is only sent once there is a verdict.
            None => Err(SendFailure::NotAcknowledged { to, after: timeout, endpoint: self.endpoint(dst) }),
        };
        // A sender that stopped waiting (its future dropped) has nothing left to learn.
        let _ = done.send(outcome);
    }

    /// The deadline passed: the send ends as not acknowledged, or unreachable if no copy
    /// ever got through.
    fn fail(&self, flight: Box<Flight>) {
        let what = flight.message.name;
        self.wire.lock().stats.failed += 1;
        self.record(|| {
            let (sender, receiver) = flight.names(self);
            format!("failed {sender} -> {receiver} {what}")
        });
        let Flight { dst, to, timeout, reached, done, .. } = *flight;
        let endpoint = self.endpoint(dst);
        let failure = if reached {
            SendFailure::NotAcknowledged { to, after: timeout, endpoint }
        } else {
            let reason = "no route to the host (partitioned or down)".to_owned();
            SendFailure::Unreachable { to, after: timeout, endpoint, reason }
        };
        // A sender that stopped waiting (its future dropped) has nothing left to learn.
        let _ = done.send(Err(failure));
    }

    /// Runs `event`, due at `now`.
    fn run(self: &Arc<Self>, event: Event, now: Instant) {
        match event.step {
            Step::Attempt => self.attempt(event.flight, now),
            Step::Arrive => self.arrive(event.flight, now),
            Step::Acknowledged => self.acknowledged(event.flight),
            Step::Fail => self.fail(event.flight),
        }
    }
}

/// The driver: runs every due event in order, then sleeps until the next one (or until a
/// sender schedules an earlier one). Aborted when the simulation is dropped.
async fn drive(net: Arc<Net>) {
    let sleep = tokio::time::sleep_until(Instant::now());
    tokio::pin!(sleep);
    loop {
        // Read once for every event run now: the paused clock stands still while they run.
        let now = Instant::now();
        let elapsed = now - net.started();
        net.wire.lock().flights.running = true;
        let next = loop {
            let batch = {
                let mut wire = net.wire.lock();
                let flights = &mut wire.flights;
                match flights.due.first_entry() {
                    Some(first) if Duration::from_millis(*first.key()) <= elapsed => Some(first.remove()),
                    next => {
                        let next = next.map(|first| *first.key());
                        flights.running = false;
                        flights.armed = next;
                        break next;
                    }
                }
            };
            // Events this batch schedules for the current millisecond (on links without
            // latency) form the next batch.
            for event in batch.into_iter().flatten() {
                net.run(event, now);
            }
        };
        match next {
            Some(millisecond) => {
                sleep.as_mut().reset(net.started() + Duration::from_millis(millisecond));
                tokio::select! {
                    biased;
                    () = &mut sleep => {}
                    () = net.wake.notified() => {}
                }
            }
            None => net.wake.notified().await,
        }
    }
}
