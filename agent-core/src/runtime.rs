//! One agent's loop: startup, then messages and interval ticks one at a time, then shutdown.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::agent::Kind;
use crate::context::{AgentCell, Context, Current, PendingReply};
use crate::delivery::{Delivery, Item, ReplyTo, RequestFailure};
use crate::handler::{HandlerFuture, TaskHandler};

pub(crate) async fn run(cell: Arc<AgentCell>, mut mailbox: mpsc::Receiver<Item>) {
    if let Some(task) = tokio::task::try_id() {
        cell.request_timer.belongs_to(task);
    }
    let kind = Arc::clone(&cell.kind);
    for handler in &kind.startup {
        Box::pin(run_task(&cell, handler.as_ref(), "startup")).await;
    }
    if kind.intervals.is_empty() {
        let mut seq: u64 = 0;
        while let Some(delivery) = mailbox.recv().await {
            seq += 1;
            // Boxed: the handling future is large, and inline it would sit in every idle
            // agent's task for its whole life (memory per idle agent is a target).
            Box::pin(handle(&cell, delivery, seq)).await;
        }
    } else {
        // Boxed for the same reason: a timer is large and most agents have none.
        Box::pin(messages_and_ticks(&cell, &kind, &mut mailbox)).await;
    }
    for handler in &kind.shutdown {
        Box::pin(run_task(&cell, handler.as_ref(), "shutdown")).await;
    }
    if let Some(storage) = cell.storage.get() {
        if let Err(err) = Box::pin(storage.flush()).await {
            tracing::error!(agent = %cell.name, error = %err, "flushing storage at shutdown failed");
        }
    }
}

/// The loop of an agent with interval handlers: messages and due ticks, one at a time.
async fn messages_and_ticks(cell: &Arc<AgentCell>, kind: &Kind, mailbox: &mut mpsc::Receiver<Item>) {
    let mut next_tick: Vec<Instant> = vec![Instant::now(); kind.intervals.len()];
    let mut seq: u64 = 0;
    loop {
        let item = {
            let (due, at) = earliest(&next_tick);
            // Biased, the timer first: the same events are handled in the same order every
            // time (a simulation replays a run exactly), and a busy mailbox cannot starve a
            // due interval, which is re-armed a full period later.
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(at) => {
                    let (period, handler) = &kind.intervals[due];
                    let started = Instant::now();
                    Box::pin(run_task(cell, handler.as_ref(), "interval")).await;
                    let ended = Instant::now();
                    if ended - started > *period {
                        tracing::warn!(agent = %cell.name, period = ?period, took = ?(ended - started), "interval handler overran its period");
                    }
                    // Never schedule in the past: a late or overrunning tick is followed by
                    // one full period, not by a burst of catch-up ticks.
                    let scheduled = at + *period;
                    next_tick[due] = if scheduled <= ended { ended + *period } else { scheduled };
                    continue;
                }
                item = mailbox.recv() => item,
            }
        };
        let Some(delivery) = item else { break };
        seq += 1;
        handle(cell, delivery, seq).await;
    }
}

/// Tells the transport that a delivery was handled, when dropped.
struct Handled(tokio::sync::oneshot::Sender<()>);

impl Drop for Handled {
    fn drop(&mut self) {
        let (tell, _) = tokio::sync::oneshot::channel();
        // The transport may have stopped waiting (its stream closed): then no one is told.
        let _ = std::mem::replace(&mut self.0, tell).send(());
    }
}

fn earliest(times: &[Instant]) -> (usize, Instant) {
    let mut best = (0, times[0]);
    for (i, t) in times.iter().enumerate().skip(1) {
        if *t < best.1 {
            best = (i, *t);
        }
    }
    best
}

async fn handle(cell: &Arc<AgentCell>, delivery: Box<Delivery>, seq: u64) {
    // Taken apart at once: a whole delivery kept to the end would sit in this future across
    // the handler's await, and this future is boxed for every message. Taken in its box,
    // and out of it here: moved out before the call, the delivery (176 bytes) was copied
    // once more on its way into the boxed future.
    let Delivery { from, schema, name, session, trace_id, body, reply, handled } = *delivery;
    // Told when this function returns, however it returns: the handler has run.
    let _handled = handled.map(Handled);
    let Some(route) = cell.kind.routes.get(&schema) else {
        // The router checks handlers before queueing; this is a message from the network.
        tracing::warn!(agent = %cell.name, message = name, "no handler for message");
        return;
    };
    let is_request = reply.is_some();
    if let Some(slot) = reply {
        *cell.pending.lock() = PendingReply { seq, slot: Some(slot) };
    }
    let current = Current {
        from,
        schema,
        name: route.name,
        session,
        trace_id,
        seq,
        is_request,
        in_protocol: route.protocol.is_some(),
    };
    let ctx = Context { cell: Arc::clone(cell), current: Some(current) };
    let span = crate::trace::message_span!(
        "handle",
        agent = %cell.name,
        message = route.name,
        from = %from,
        session = %format_args!("{session:032x}"),
        trace_id = %format_args!("{trace_id:032x}"),
    );
    // Wall-clock time, read only when metrics are on: a simulation's paused clock would
    // say zero, and without a recorder the clock is not read at all.
    let timer = crate::metrics::enabled().then(std::time::Instant::now);
    let started = std::panic::catch_unwind(AssertUnwindSafe(|| route.handler.call(ctx, from, body)));
    let outcome = match started {
        Ok(Ok(future)) => crate::trace::traced!(span.clone(), guard(future)),
        Ok(Err(decode)) => Err(decode),
        Err(panic) => Err(panic_text(panic)),
    };
    if let Some(timer) = timer {
        let kind = &cell.kind.label;
        route.latency.get_or_init(|| crate::metrics::handler_latency(kind, route.name)).record(timer.elapsed());
    }
    if let Err(reason) = &outcome {
        crate::metrics::handler_failed(&cell.kind.label, route.name);
        let _entered = span.as_ref().map(tracing::Span::enter);
        tracing::error!(agent = %cell.name, message = route.name, error = %reason, "handler failed");
    }
    if is_request {
        let leftover = {
            let mut pending = cell.pending.lock();
            if pending.seq == seq {
                pending.slot.take()
            } else {
                None
            }
        };
        if let Some(slot) = leftover {
            let failure = match outcome {
                Ok(()) => RequestFailure::NoReply,
                Err(reason) => RequestFailure::HandlerFailed(reason),
            };
            match slot {
                ReplyTo::Local(slot) => {
                    // A requester that stopped waiting has nothing left to tell.
                    let _ = slot.send(Err(failure));
                }
                ReplyTo::Remote(path) => {
                    let timeout = cell.bureau.config.send_timeout;
                    path.fail(&cell.identity, failure, timeout).await;
                }
            }
        }
    }
}

async fn run_task(cell: &Arc<AgentCell>, handler: &dyn TaskHandler, what: &'static str) {
    let ctx = Context { cell: Arc::clone(cell), current: None };
    let span = crate::trace::message_span!("task", agent = %cell.name, kind = what);
    let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.call(ctx))) {
        Ok(future) => crate::trace::traced!(span.clone(), guard(future)),
        Err(panic) => Err(panic_text(panic)),
    };
    if let Err(reason) = outcome {
        let _entered = span.as_ref().map(tracing::Span::enter);
        tracing::error!(agent = %cell.name, handler = what, error = %reason, "handler failed");
    }
}

/// Runs a handler future, turning a panic into an error so the agent keeps running.
async fn guard(future: HandlerFuture) -> Result<(), String> {
    match AssertUnwindSafe(future).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(panic) => Err(panic_text(panic)),
    }
}

fn panic_text(panic: Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_owned());
    format!("panicked: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, F: std::future::Future>(_: fn(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every agent keeps its cell and its loop's future for its whole life, most of it
    /// idle: memory per idle agent (a target, 2 KiB) is mostly these two.
    #[test]
    fn an_idle_agent_keeps_its_cell_and_loop_small() {
        let (cell, task) = (std::mem::size_of::<AgentCell>(), future_size(run));
        assert!(cell <= 400 && task <= 96, "agent cell {cell} bytes, loop future {task} bytes");
    }
}
