//! Requests made from a handler on a multi-thread runtime, where the requester arms its
//! wait before its message leaves: a message that cannot be queued at once must still end
//! as it does anywhere else (refused, waited for until there is room, or failed with its
//! cause), and a request that waited for room is answered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_core::{
    Address, Agent, Bureau, Cause, Context, MailboxConfig, Message, ReplyError, RequestError, SendFailure, WhenFull,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Semaphore};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Ask(u64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Answer(u64);

/// Holds the server's handler until its gate opens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Slow(u64);

/// Asks the asker to request `Ask(21)` from `to` with this timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Go {
    to: Address,
    timeout_ms: u64,
}

type Outcome = (Result<Answer, RequestError>, Duration);

/// A server with a one-message mailbox whose `Slow` handler waits for `gate`.
fn gated(name: &str, when_full: WhenFull, gate: Arc<Semaphore>, started: mpsc::UnboundedSender<()>) -> Agent {
    let mailbox = MailboxConfig::default().with_capacity(1).with_when_full(when_full);
    let mut server = Agent::builder(name).seed(format!("{name} test seed")).mailbox(mailbox).build().unwrap();
    server.on_message(move |_ctx: Context, _from: Address, _slow: Slow| {
        let (gate, started) = (gate.clone(), started.clone());
        async move {
            started.send(()).map_err(|e| e.to_string())?;
            gate.acquire().await.map(|permit| permit.forget()).map_err(|e| e.to_string())
        }
    });
    server.on_message(|ctx: Context, _from: Address, Ask(n): Ask| async move {
        ctx.reply(Answer(n * 2)).await.map_err(|e: ReplyError| e.to_string())
    });
    server
}

fn asker(report: mpsc::UnboundedSender<Outcome>) -> Agent {
    let mut asker = Agent::builder("asker").seed("asker test seed").build().unwrap();
    asker.on_message(move |ctx: Context, _from: Address, go: Go| {
        let report = report.clone();
        async move {
            let started = Instant::now();
            let answered = ctx.request::<Ask, Answer>(go.to, Ask(21), Duration::from_millis(go.timeout_ms)).await;
            report.send((answered, started.elapsed())).map_err(|e| e.to_string())
        }
    });
    asker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_request_that_cannot_be_queued_at_once_ends_as_anywhere_else() {
    let bureau = Bureau::new().unwrap();
    let (started, mut starts) = mpsc::unbounded_channel();
    let (rejecting_gate, waiting_gate) = (Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0)));
    let rejecting = bureau.add(gated("rejecting", WhenFull::Reject, rejecting_gate.clone(), started.clone())).unwrap();
    let waiting = bureau.add(gated("waiting", WhenFull::Wait, waiting_gate.clone(), started)).unwrap();
    let (report, mut reports) = mpsc::unbounded_channel();
    let asker = bureau.add(asker(report)).unwrap();
    let ctx = bureau.context(asker).unwrap();
    let outcome = |mut reports: mpsc::UnboundedReceiver<Outcome>| async move {
        let outcome = tokio::time::timeout(Duration::from_secs(10), reports.recv()).await.unwrap().unwrap();
        (outcome, reports)
    };

    // Each server's handler holds one message, and its mailbox holds another.
    for server in [rejecting, waiting] {
        ctx.send(server, Slow(0)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), starts.recv()).await.unwrap().unwrap();
        ctx.send(server, Slow(1)).await.unwrap();
    }

    ctx.send(asker, Go { to: rejecting, timeout_ms: 5000 }).await.unwrap();
    let ((answered, _), rest) = outcome(reports).await;
    reports = rest;
    assert_eq!(answered, Err(RequestError::Send(SendFailure::MailboxFull { to: rejecting })));

    ctx.send(asker, Go { to: waiting, timeout_ms: 300 }).await.unwrap();
    let ((answered, took), rest) = outcome(reports).await;
    reports = rest;
    let after = Duration::from_millis(300);
    assert_eq!(answered, Err(RequestError::Send(SendFailure::Timeout { to: waiting, after })));
    assert!(took >= after, "gave up after {took:?}");

    // Room is made while the request waits for it: it is queued, handled and answered.
    ctx.send(asker, Go { to: waiting, timeout_ms: 5000 }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    waiting_gate.add_permits(2);
    let ((answered, _), rest) = outcome(reports).await;
    reports = rest;
    assert_eq!(answered, Ok(Answer(42)));

    let nobody = Agent::builder("nobody").seed("nobody test seed").build().unwrap().address();
    ctx.send(asker, Go { to: nobody, timeout_ms: 5000 }).await.unwrap();
    let ((answered, _), rest) = outcome(reports).await;
    reports = rest;
    assert!(matches!(answered, Err(RequestError::Send(SendFailure::Unroutable { .. }))), "{answered:?}");

    // The asker has no handler for `Ask`.
    ctx.send(asker, Go { to: asker, timeout_ms: 5000 }).await.unwrap();
    let ((answered, _), _) = outcome(reports).await;
    match answered {
        Err(RequestError::Send(SendFailure::Rejected { rejection, .. })) => {
            assert_eq!(rejection.cause, Cause::NoHandler)
        }
        other => panic!("expected a rejection, got {other:?}"),
    }

    rejecting_gate.add_permits(2);
    bureau.shutdown().await.unwrap();
}
