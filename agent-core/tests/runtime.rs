//! The runtime's contract: typed handlers, request/reply correlation, deadlines, protocol
//! reply rules, bounded mailboxes, intervals, failures, shutdown and storage.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_core::{
    Address, Agent, Bureau, Config, Context, MailboxConfig, Message, Protocol, ReplyError, RequestError, SendFailure,
    WhenFull,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Ask(u64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Answer(u64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Note(String);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Slow(u64);

async fn double(ctx: Context, _from: Address, Ask(n): Ask) -> Result<(), ReplyError> {
    ctx.reply(Answer(n * 2)).await
}

fn agent(name: &str) -> Agent {
    Agent::builder(name).seed(format!("{name} test seed")).build().unwrap()
}

#[tokio::test]
async fn request_reply_between_two_agents() {
    let bureau = Bureau::new().unwrap();
    let mut server = agent("server");
    server.on_message(double);
    let server = bureau.add(server).unwrap();
    let client = bureau.add(agent("client")).unwrap();
    let ctx = bureau.context(client).unwrap();
    for n in 0..100 {
        let Answer(m) = ctx.request(server, Ask(n), Duration::from_secs(5)).await.unwrap();
        assert_eq!(m, 2 * n);
    }
    bureau.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn unrelated_message_neither_completes_nor_fails_a_request() {
    // The server first sends an unrelated Note to the client, then an Answer of the same
    // type the client awaits — as a plain message, not a reply — and only then replies.
    let bureau = Bureau::new().unwrap();
    let (notes_tx, mut notes_rx) = mpsc::unbounded_channel();
    let mut client = agent("client");
    client.on_message(move |_ctx: Context, _from: Address, note: Note| {
        let notes_tx = notes_tx.clone();
        async move {
            let _ = notes_tx.send(note.0);
        }
    });
    client.on_message(|_ctx: Context, _from: Address, _stray: Answer| async {});
    let client = bureau.add(client).unwrap();
    let mut server = agent("server");
    server.on_message(move |ctx: Context, _from: Address, Ask(n): Ask| async move {
        ctx.send(client, Note("unrelated".into())).await.map_err(|e| e.to_string())?;
        ctx.send(client, Answer(999)).await.map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        ctx.reply(Answer(n + 1)).await.map_err(|e| e.to_string())
    });
    let server = bureau.add(server).unwrap();
    let ctx = bureau.context(client).unwrap();
    let answer: Answer = ctx.request(server, Ask(1), Duration::from_secs(1)).await.unwrap();
    assert_eq!(answer, Answer(2), "the reply is matched by correlation, not by type");
    assert_eq!(notes_rx.recv().await.unwrap(), "unrelated");
    bureau.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn every_request_has_a_deadline_even_without_one_given() {
    let config = Config::default().with_request_timeout(Duration::from_secs(3));
    let bureau = Bureau::with_config(config).unwrap();
    let mut silent = agent("silent");
    silent.on_message(|_ctx: Context, _from: Address, _ask: Ask| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    let silent = bureau.add(silent).unwrap();
    let ctx = bureau.context(bureau.add(agent("asker")).unwrap()).unwrap();
    let started = tokio::time::Instant::now();
    let err = ctx.request::<Ask, Answer>(silent, Ask(1), None).await.unwrap_err();
    assert_eq!(err, RequestError::Timeout { to: silent, after: Duration::from_secs(3) });
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    drop(bureau);
}

#[tokio::test]
async fn protocol_refuses_replies_it_does_not_allow() {
    let (result_tx, mut result_rx) = mpsc::unbounded_channel();
    let protocol = Protocol::new("doubling", "1.0")
        .on_message(move |ctx: Context, _from: Address, Ask(n): Ask| {
            let result_tx = result_tx.clone();
            async move {
                // Note is not an allowed reply to Ask; Answer is.
                let _ = result_tx.send(ctx.reply(Note("nope".into())).await);
                ctx.reply(Answer(n)).await
            }
        })
        .replies::<Ask, Answer>();
    let bureau = Bureau::new().unwrap();
    let mut server = agent("server");
    server.include(protocol);
    let server = bureau.add(server).unwrap();
    let ctx = bureau.context(bureau.add(agent("client")).unwrap()).unwrap();
    let answer: Answer = ctx.request(server, Ask(5), Duration::from_secs(5)).await.unwrap();
    assert_eq!(answer, Answer(5));
    match result_rx.recv().await.unwrap() {
        Err(ReplyError::NotAllowed { protocol, request, reply }) => {
            assert_eq!((protocol.as_str(), request, reply), ("doubling/1.0", "Ask", "Note"));
        }
        other => panic!("expected NotAllowed, got {other:?}"),
    }
    bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn handler_errors_and_panics_are_reported_and_the_agent_lives_on() {
    let bureau = Bureau::new().unwrap();
    let mut fragile = agent("fragile");
    fragile.on_message(|ctx: Context, _from: Address, Ask(n): Ask| async move {
        match n {
            0 => Err("zero is not allowed".to_owned()),
            1 => panic!("one makes me panic"),
            2 => Ok(()), // handled, no reply
            _ => ctx.reply(Answer(n)).await.map_err(|e| e.to_string()),
        }
    });
    let fragile = bureau.add(fragile).unwrap();
    let ctx = bureau.context(bureau.add(agent("client")).unwrap()).unwrap();
    let timeout = Duration::from_secs(5);
    assert_eq!(
        ctx.request::<Ask, Answer>(fragile, Ask(0), timeout).await,
        Err(RequestError::HandlerFailed { to: fragile, reason: "zero is not allowed".into() })
    );
    match ctx.request::<Ask, Answer>(fragile, Ask(1), timeout).await {
        Err(RequestError::HandlerFailed { reason, .. }) => {
            assert!(reason.contains("one makes me panic"), "{reason}")
        }
        other => panic!("expected HandlerFailed, got {other:?}"),
    }
    assert_eq!(ctx.request::<Ask, Answer>(fragile, Ask(2), timeout).await, Err(RequestError::NoReply { to: fragile }));
    // Asking for the wrong reply type is reported, not confused.
    match ctx.request::<Ask, Note>(fragile, Ask(3), timeout).await {
        Err(RequestError::WrongReplyType { expected: "Note", got, .. }) => assert_eq!(got, "Answer"),
        other => panic!("expected WrongReplyType, got {other:?}"),
    }
    assert_eq!(ctx.request::<Ask, Answer>(fragile, Ask(7), timeout).await, Ok(Answer(7)));
    bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn routing_failures_name_their_cause() {
    let bureau = Bureau::new().unwrap();
    let mut server = agent("server");
    server.on_message(double);
    let server = bureau.add(server).unwrap();
    let ctx = bureau.context(bureau.add(agent("client")).unwrap()).unwrap();
    let nobody = agent("nobody").address();
    let err = ctx.send(nobody, Ask(1)).await.unwrap_err();
    assert!(matches!(err.failure(), SendFailure::Unroutable { .. }));
    assert_eq!(err.into_message(), Some(Ask(1)), "a failed send hands the message back");
    let err = ctx.send(server, Note("no handler".into())).await.unwrap_err();
    match err.failure() {
        SendFailure::Rejected { rejection, .. } => {
            assert_eq!(rejection.cause, agent_core::Cause::NoHandler);
            assert!(rejection.detail.contains("Note"), "{rejection}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    bureau.shutdown().await.unwrap();
}

fn blocking_agent(name: &str, mailbox: MailboxConfig, gate: Arc<tokio::sync::Notify>) -> Agent {
    let mut agent = Agent::builder(name).mailbox(mailbox).build().unwrap();
    agent.on_message(move |_ctx: Context, _from: Address, _slow: Slow| {
        let gate = gate.clone();
        async move { gate.notified().await }
    });
    agent
}

#[tokio::test(start_paused = true)]
async fn full_mailbox_rejects_or_waits_as_configured_and_never_drops() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let config = Config::default().with_send_timeout(Duration::from_secs(2));
    let bureau = Bureau::with_config(config).unwrap();
    let reject = MailboxConfig::default().with_capacity(2).with_when_full(WhenFull::Reject);
    let rejecting = bureau.add(blocking_agent("rejecting", reject, gate.clone())).unwrap();
    let wait = MailboxConfig::default().with_capacity(2).with_when_full(WhenFull::Wait);
    let waiting = bureau.add(blocking_agent("waiting", wait, gate.clone())).unwrap();
    let ctx = bureau.context(bureau.add(agent("sender")).unwrap()).unwrap();

    // One message is taken by the (blocked) handler, two fill the mailbox.
    for target in [rejecting, waiting] {
        for n in 0..3 {
            ctx.send(target, Slow(n)).await.unwrap();
            tokio::task::yield_now().await;
        }
    }
    let err = ctx.send(rejecting, Slow(3)).await.unwrap_err();
    assert_eq!(err.failure(), &SendFailure::MailboxFull { to: rejecting });
    assert_eq!(err.into_message(), Some(Slow(3)));

    let started = tokio::time::Instant::now();
    let err = ctx.send(waiting, Slow(3)).await.unwrap_err();
    assert_eq!(err.failure(), &SendFailure::Timeout { to: waiting, after: Duration::from_secs(2) });
    assert_eq!(started.elapsed(), Duration::from_secs(2), "back-pressure waited until the deadline");

    // Back-pressure: a waiting send completes as soon as space frees up.
    let pending = {
        let ctx = ctx.clone();
        tokio::spawn(async move { ctx.send(waiting, Slow(4)).await.map_err(|e| e.to_string()) })
    };
    tokio::task::yield_now().await;
    gate.notify_one();
    gate.notify_one();
    assert_eq!(pending.await.unwrap(), Ok(()));
    drop(bureau);
}

#[tokio::test(start_paused = true)]
async fn handlers_run_one_at_a_time() {
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let bureau = Bureau::new().unwrap();
    let mut actor = agent("actor");
    {
        let (running, most, done) = (running.clone(), most.clone(), done.clone());
        actor.on_message(move |_ctx: Context, _from: Address, Slow(ms): Slow| {
            let (running, most, done) = (running.clone(), most.clone(), done.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    let actor = bureau.add(actor).unwrap();
    let senders: Vec<Address> = (0..4).map(|i| bureau.add(agent(&format!("s{i}"))).unwrap()).collect();
    for sender in senders {
        let ctx = bureau.context(sender).unwrap();
        for _ in 0..5 {
            ctx.send(actor, Slow(10)).await.unwrap();
        }
    }
    bureau.shutdown().await.unwrap();
    assert_eq!(done.load(Ordering::SeqCst), 20, "shutdown drains queued messages");
    assert_eq!(most.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn overrunning_interval_causes_no_burst_of_catch_up_ticks() {
    let ticks = Arc::new(std::sync::Mutex::new(Vec::new()));
    let bureau = Bureau::new().unwrap();
    let mut ticker = agent("ticker");
    let start = tokio::time::Instant::now();
    {
        let ticks = ticks.clone();
        ticker.on_interval(Duration::from_millis(100), move |_ctx: Context| {
            let ticks = ticks.clone();
            async move {
                let n = {
                    let mut ticks = ticks.lock().unwrap();
                    ticks.push(start.elapsed().as_millis());
                    ticks.len()
                };
                // The third run overruns by 2.5 periods.
                if n == 3 {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        });
    }
    bureau.add(ticker).unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    bureau.shutdown().await.unwrap();
    let ticks = ticks.lock().unwrap().clone();
    // 0, 100, 200 (runs until 450), then one period later: 550, 650, ...
    assert_eq!(&ticks[..6], &[0, 100, 200, 550, 650, 750], "{ticks:?}");
    for pair in ticks.windows(2) {
        assert!(pair[1] - pair[0] >= 100, "ticks closer than one period: {ticks:?}");
    }
}

#[tokio::test]
async fn ticks_interleave_with_messages() {
    let bureau = Bureau::new().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel::<&'static str>();
    let mut both = agent("both");
    let tick_tx = tx.clone();
    both.on_interval(Duration::from_millis(5), move |_ctx: Context| {
        let tick_tx = tick_tx.clone();
        async move {
            let _ = tick_tx.send("tick");
        }
    });
    both.on_message(move |_ctx: Context, _from: Address, _note: Note| {
        let tx = tx.clone();
        async move {
            let _ = tx.send("message");
        }
    });
    let both = bureau.add(both).unwrap();
    let ctx = bureau.context(bureau.add(agent("poker")).unwrap()).unwrap();
    ctx.send(both, Note("hi".into())).await.unwrap();
    let (mut ticks, mut messages) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while (ticks < 2 || messages < 1) && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            Ok(Some("tick")) => ticks += 1,
            Ok(Some(_)) => messages += 1,
            _ => break,
        }
    }
    assert!(ticks >= 2 && messages == 1, "ticks {ticks}, messages {messages}");
    bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn startup_runs_first_and_shutdown_runs_last() {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let bureau = Bureau::new().unwrap();
    let mut lifecycle = agent("lifecycle");
    let (t1, t2, t3) = (tx.clone(), tx.clone(), tx);
    lifecycle.on_startup(move |_ctx: Context| {
        let t1 = t1.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = t1.send("startup".into());
        }
    });
    lifecycle.on_message(move |_ctx: Context, _from: Address, note: Note| {
        let t2 = t2.clone();
        async move {
            let _ = t2.send(note.0);
        }
    });
    lifecycle.on_shutdown(move |_ctx: Context| {
        let t3 = t3.clone();
        async move {
            let _ = t3.send("shutdown".into());
        }
    });
    let lifecycle = bureau.add(lifecycle).unwrap();
    let ctx = bureau.context(bureau.add(agent("poker")).unwrap()).unwrap();
    ctx.send(lifecycle, Note("message".into())).await.unwrap();
    bureau.shutdown().await.unwrap();
    let mut seen = Vec::new();
    while let Ok(event) = rx.try_recv() {
        seen.push(event);
    }
    assert_eq!(seen, ["startup", "message", "shutdown"]);
}

/// A task an agent spawns runs beside its handlers, and ends with its bureau: after a
/// shutdown nothing of it is left running.
#[tokio::test(start_paused = true)]
async fn tasks_an_agent_spawns_end_with_the_bureau() {
    let bureau = Bureau::new().unwrap();
    let ticks = Arc::new(AtomicUsize::new(0));
    let mut ticker = agent("ticker");
    let counted = Arc::clone(&ticks);
    ticker.on_startup(move |ctx: Context| {
        let counted = Arc::clone(&counted);
        async move {
            ctx.spawn(async move {
                for _ in 0..1_000_000 {
                    counted.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
    });
    bureau.add(ticker).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(ticks.load(Ordering::SeqCst) >= 50, "the task runs beside the agent");
    bureau.shutdown().await.unwrap();
    let at_shutdown = ticks.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(ticks.load(Ordering::SeqCst), at_shutdown, "the task ended with the bureau");
    assert_eq!(Arc::strong_count(&ticks), 1, "and nothing of it is kept");
}

/// A bureau dropped without a shutdown ends its agents' tasks too (they hold the bureau's
/// state, which holds them); a task spawned after the bureau stopped never runs.
#[tokio::test(start_paused = true)]
async fn tasks_end_with_a_dropped_bureau_and_never_start_after_it() {
    let bureau = Bureau::new().unwrap();
    let ticks = Arc::new(AtomicUsize::new(0));
    let ctx = bureau.context(bureau.add(agent("spawner")).unwrap()).unwrap();
    let counted = Arc::clone(&ticks);
    ctx.spawn(async move {
        for _ in 0..1_000_000 {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(bureau);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(Arc::strong_count(&ticks), 1, "the task ended with the dropped bureau");
    let late = Arc::clone(&ticks);
    ctx.spawn(async move {
        late.fetch_add(1_000_000, Ordering::SeqCst);
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(ticks.load(Ordering::SeqCst) < 1_000_000, "a task spawned after the bureau stopped ran");
    assert_eq!(Arc::strong_count(&ticks), 1);
}

#[tokio::test]
async fn storage_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    for run in 1..=3u64 {
        let bureau = Bureau::with_config(Config::default().with_storage_dir(dir.path())).unwrap();
        let mut counter = agent("counter");
        counter.on_startup(|ctx: Context| async move {
            let storage = ctx.storage().map_err(|e| e.to_string())?;
            let runs: u64 = storage.get("runs").map_err(|e| e.to_string())?.unwrap_or(0);
            storage.set("runs", &(runs + 1)).map_err(|e| e.to_string())
        });
        let address = bureau.add(counter).unwrap();
        let ctx = bureau.context(address).unwrap();
        // Wait (bounded) for the startup handler to write.
        let mut seen = 0;
        for _ in 0..200 {
            seen = ctx.storage().unwrap().get::<u64>("runs").unwrap().unwrap_or(0);
            if seen == run {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(seen, run);
        bureau.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn storage_reports_type_mismatches() {
    let bureau = Bureau::new().unwrap();
    let address = bureau.add(agent("typed")).unwrap();
    let storage = bureau.context(address).unwrap().storage().unwrap();
    storage.set("name", "alice").unwrap();
    assert!(matches!(storage.get::<u64>("name"), Err(agent_core::StorageError::Decode { .. })));
    assert_eq!(storage.get::<String>("name").unwrap().as_deref(), Some("alice"), "the value is intact");
    assert_eq!(storage.keys().unwrap(), ["name"]);
    assert!(storage.remove("name").unwrap());
    bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn broadcast_reaches_every_agent_speaking_the_protocol() {
    let count = Arc::new(AtomicUsize::new(0));
    let make_protocol = |count: Arc<AtomicUsize>| {
        Protocol::new("news", "1.0").on_message(move |_ctx: Context, _from: Address, _note: Note| {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let digest = make_protocol(count.clone()).digest();
    let bureau = Bureau::new().unwrap();
    let mut listener = agent("listener-0");
    listener.include(make_protocol(count.clone()));
    for i in 0..5 {
        bureau.add(listener.sibling(format!("listener-{i}"), agent_core::Identity::generate())).unwrap();
    }
    bureau.add(agent("deaf")).unwrap();
    let ctx = bureau.context(bureau.add(agent("announcer")).unwrap()).unwrap();
    let report = ctx.broadcast(digest, Note("hello".into())).await;
    assert_eq!(report.delivered, 5);
    assert!(report.failed.is_empty());
    bureau.shutdown().await.unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn trace_and_session_follow_a_request_through_handlers() {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Option<u128>, Option<u128>)>();
    let bureau = Bureau::new().unwrap();
    let mut back = agent("back");
    back.on_message(move |ctx: Context, _from: Address, Ask(n): Ask| {
        let tx = tx.clone();
        async move {
            let _ = tx.send((ctx.trace_id(), ctx.session()));
            ctx.reply(Answer(n)).await
        }
    });
    let back = bureau.add(back).unwrap();
    let mut front = agent("front");
    let tx2 = {
        let (tx2, rx2) = mpsc::unbounded_channel::<(Option<u128>, Option<u128>)>();
        front.on_message(move |ctx: Context, _from: Address, ask: Ask| {
            let tx2 = tx2.clone();
            async move {
                let _ = tx2.send((ctx.trace_id(), ctx.session()));
                let answer: Answer = ctx.request(back, ask, None).await.map_err(|e| e.to_string())?;
                ctx.reply(answer).await.map_err(|e| e.to_string())
            }
        });
        rx2
    };
    let front = bureau.add(front).unwrap();
    let ctx = bureau.context(bureau.add(agent("client")).unwrap()).unwrap();
    let _: Answer = ctx.request(front, Ask(1), Duration::from_secs(5)).await.unwrap();
    let mut tx2 = tx2;
    let at_front = tx2.recv().await.unwrap();
    let at_back = rx.recv().await.unwrap();
    assert!(at_front.0.is_some());
    assert_eq!(at_front, at_back, "one trace id and session across both hops");
    bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn misconfigured_agents_are_refused_with_reasons() {
    let bureau = Bureau::new().unwrap();
    let mut twice = agent("twice");
    twice.on_message(double);
    twice.on_message(double);
    assert!(matches!(bureau.add(twice), Err(agent_core::BureauError::HandlerConflict { .. })));
    bureau.add(agent("same")).unwrap();
    assert!(matches!(bureau.add(agent("same")), Err(agent_core::BureauError::DuplicateAddress(_))));
    bureau.shutdown().await.unwrap();
}

#[test]
fn adding_outside_a_runtime_is_an_error_not_a_panic() {
    let bureau = Bureau::new().unwrap();
    assert!(matches!(bureau.add(agent("x")), Err(agent_core::BureauError::NoRuntime)));
}

#[tokio::test]
async fn agents_load_their_identity_from_a_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alice.key");
    let identity = agent_core::Identity::generate();
    identity.save(&path).unwrap();
    let alice = Agent::builder("alice").key_file(&path).build().unwrap();
    assert_eq!(alice.address(), identity.address());
    let missing = Agent::builder("bob").key_file(dir.path().join("missing.key")).build();
    assert!(matches!(missing, Err(agent_core::AgentError::Identity(agent_core::IdentityError::Io { .. }))));
}

/// An agent reuses one timer for the requests its handlers make (not registered anew, and
/// rearmed only when it would fire late): each request must still end at its own deadline,
/// earlier or later than the last one, after the timer fired or not, when the timer fires
/// early at an earlier request's deadline, and with another request in flight beside it. On
/// real time (`exact` false) a loaded machine may fire timers late, so only "not early" is
/// checked; the paused clock checks the deadline itself.
async fn requests_from_a_handler_keep_their_own_deadlines(exact: bool) {
    let bureau = Bureau::new().unwrap();
    let quick = bureau
        .add({
            let mut quick = agent("quick");
            quick.on_message(double);
            quick
        })
        .unwrap();
    let silent = bureau
        .add({
            let mut silent = agent("silent");
            silent.on_message(|ctx: Context, _from: Address, _ask: Ask| async move {
                let reply = ctx.defer_reply().map_err(|e| e.to_string())?;
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    drop(reply);
                });
                Ok::<(), String>(())
            });
            silent
        })
        .unwrap();
    // Answers after a while: a request to it waits on the timer, on either runtime.
    let slow = bureau
        .add({
            let mut slow = agent("slow");
            slow.on_message(|ctx: Context, _from: Address, Ask(n): Ask| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                ctx.reply(Answer(n * 2)).await
            });
            slow
        })
        .unwrap();
    let (report, mut reports) = mpsc::unbounded_channel::<(bool, Duration)>();
    let mut asker = agent("asker");
    asker.on_message(move |ctx: Context, _from: Address, _go: Note| {
        let report = report.clone();
        async move {
            // The last two: a shorter deadline after the timer was left at a longer one (by a
            // request answered while it waited on the timer) must move it earlier, or the
            // request would time out late.
            let steps: [(Address, u64); 8] = [
                (quick, 1000),
                (silent, 1000),
                (quick, 200),
                (silent, 200),
                (quick, 5000),
                (silent, 5000),
                (slow, 5000),
                (silent, 200),
            ];
            for (to, timeout_ms) in steps {
                let started = tokio::time::Instant::now();
                let answered = ctx.request::<Ask, Answer>(to, Ask(1), Duration::from_millis(timeout_ms)).await;
                let timed_out = matches!(answered, Err(RequestError::Timeout { .. }));
                assert!(timed_out || answered == Ok(Answer(2)), "unexpected outcome {answered:?}");
                let _ = report.send((timed_out, started.elapsed()));
            }
            // The timer, left at an answered request's deadline, fires while a later request
            // with a later deadline waits on it: that request keeps waiting to its own.
            let answered = ctx.request::<Ask, Answer>(slow, Ask(1), Duration::from_millis(1000)).await;
            assert_eq!(answered, Ok(Answer(2)));
            tokio::time::sleep(Duration::from_millis(600)).await;
            let started = tokio::time::Instant::now();
            let answered = ctx.request::<Ask, Answer>(silent, Ask(1), Duration::from_millis(1000)).await;
            assert!(matches!(answered, Err(RequestError::Timeout { .. })), "unexpected outcome {answered:?}");
            let _ = report.send((true, started.elapsed()));
            // Two at once: one takes the agent's timer, the other a timer of its own.
            let started = tokio::time::Instant::now();
            let (short, long) = tokio::join!(
                ctx.request::<Ask, Answer>(silent, Ask(1), Duration::from_millis(300)),
                ctx.request::<Ask, Answer>(silent, Ask(2), Duration::from_millis(700)),
            );
            for answered in [short, long] {
                assert!(matches!(answered, Err(RequestError::Timeout { .. })), "unexpected outcome {answered:?}");
            }
            let _ = report.send((true, started.elapsed()));
        }
    });
    let asker = bureau.add(asker).unwrap();
    bureau.context(asker).unwrap().send(asker, Note("go".into())).await.unwrap();
    let expected = [
        (false, 0),
        (true, 1000),
        (false, 0),
        (true, 200),
        (false, 0),
        (true, 5000),
        (false, 0),
        (true, 200),
        (true, 1000),
        (true, 700),
    ];
    for (step, (timed_out, after_ms)) in expected.into_iter().enumerate() {
        let (was_timed_out, took) =
            tokio::time::timeout(Duration::from_secs(60), reports.recv()).await.unwrap().unwrap();
        assert_eq!(was_timed_out, timed_out, "step {step}");
        if timed_out {
            let after = Duration::from_millis(after_ms);
            assert!(took >= after, "step {step} ended early, after {took:?}");
            // Timers fire on whole milliseconds, rounded up.
            assert!(!exact || took <= after + Duration::from_millis(1), "step {step} took {took:?}");
        }
    }
    bureau.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn requests_from_a_handler_keep_their_own_deadlines_on_one_thread() {
    requests_from_a_handler_keep_their_own_deadlines(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_from_a_handler_keep_their_own_deadlines_on_two_threads() {
    requests_from_a_handler_keep_their_own_deadlines(false).await;
}
