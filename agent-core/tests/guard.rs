//! A protocol's guard checks every message of its types an agent receives (before any
//! handler of the type, however registered) and sends (by every `Context` path, from every
//! kind of handler); a refused message reaches no handler and leaves no agent, and the
//! sender gets `SendFailure::Refused` with the guard's typed cause. Agents without a guarded
//! protocol are untouched.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_core::protocol::{Guard, GuardCause, GuardFuture, Inbound, Outbound, Refusal};
use agent_core::{Address, Agent, Bureau, Context, Message, Protocol, ReplyError, RequestError, SendFailure};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Note(u32);

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Ask(u32);

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Answer(u32);

/// Outside the protocol: never checked.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Free(u32);

/// Sessions below 100 are open; every message in one at or above 100 is refused.
const CLOSED: u128 = 100;

/// Refuses every message in a closed session, in and out, and counts what it saw.
#[derive(Default)]
struct Sessions {
    checked_in: AtomicUsize,
    checked_out: AtomicUsize,
}

/// The guard attached to protocols: shares its counts with the test.
#[derive(Clone)]
struct Shared(Arc<Sessions>);

impl Guard for Shared {
    fn incoming<'a>(&'a self, _ctx: &'a Context, message: Inbound) -> GuardFuture<'a> {
        self.0.checked_in.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move { verdict(message.session) })
    }

    fn outgoing(&self, _ctx: &Context, message: Outbound) -> Result<(), Refusal> {
        self.0.checked_out.fetch_add(1, Ordering::Relaxed);
        verdict(message.session)
    }
}

fn verdict(session: u128) -> Result<(), Refusal> {
    match session >= CLOSED {
        true => Err(Refusal::new(GuardCause::Closed, format!("session {session} is closed"))),
        false => Ok(()),
    }
}

type Seen = Arc<Mutex<Vec<(&'static str, u128)>>>;

fn protocol(guard: &Arc<Sessions>) -> Protocol {
    Protocol::new("guarded", "1").message::<Note>().replies::<Ask, Answer>().guard(Shared(Arc::clone(guard)))
}

/// Whether `failure` is the guard's refusal of `message`.
fn refused(failure: &SendFailure, message: &str) -> bool {
    matches!(failure, SendFailure::Refused { protocol, message: m, refusal, .. }
        if protocol == "guarded/1" && *m == message && refusal.cause == GuardCause::Closed)
}

/// A receiver with the guarded protocol: `Note` handled by a plain `Agent::on_message`
/// registered before the protocol is included, `Ask` by the protocol's handler (answering
/// with the session's number), `Free` after it.
fn receiver(guard: &Arc<Sessions>, seen: &Seen) -> Agent {
    let mut agent = Agent::builder("receiver").build().unwrap();
    let s = seen.clone();
    agent.on_message(move |ctx: Context, _: Address, _: Note| {
        s.lock().push(("Note", ctx.session().unwrap()));
        async {}
    });
    let s = seen.clone();
    agent.include(protocol(guard).on_message(move |ctx: Context, _: Address, Ask(n): Ask| {
        s.lock().push(("Ask", ctx.session().unwrap()));
        async move { ctx.reply(Answer(n)).await }
    }));
    let s = seen.clone();
    agent.on_message(move |ctx: Context, _: Address, _: Free| {
        s.lock().push(("Free", ctx.session().unwrap()));
        async {}
    });
    agent
}

#[tokio::test(start_paused = true)]
async fn a_refused_message_reaches_no_handler_however_it_was_registered() {
    let bureau = Bureau::new().unwrap();
    let (guard, seen) = (Arc::new(Sessions::default()), Seen::default());
    let to = bureau.add(receiver(&guard, &seen)).unwrap();
    // An unguarded sender: only the receiver's guard stands in the way.
    let sender = bureau.context(bureau.add(Agent::builder("sender").build().unwrap()).unwrap()).unwrap();
    for session in [1, CLOSED, 2] {
        sender.send_in(session, to, Note(0)).await.unwrap();
        sender.send_in(session, to, Free(0)).await.unwrap();
    }
    let answered: Answer = sender.request_in(3, to, Ask(3), Duration::from_secs(5)).await.unwrap();
    assert_eq!(answered.0, 3);
    let unanswered = sender.request_in::<Ask, Answer>(CLOSED + 1, to, Ask(0), Duration::from_secs(5)).await;
    assert!(matches!(unanswered, Err(RequestError::NoReply { .. })), "{unanswered:?}");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let seen = seen.lock().clone();
    assert_eq!(seen, [("Note", 1), ("Free", 1), ("Free", CLOSED), ("Note", 2), ("Free", 2), ("Ask", 3)]);
    assert_eq!(guard.checked_in.load(Ordering::Relaxed), 5, "every Note and Ask, and no Free, was checked");
    bureau.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_refused_send_leaves_by_no_path_and_says_why() {
    let bureau = Bureau::new().unwrap();
    let seen = Seen::default();
    // A receiver without a guard: whatever reaches it was sent.
    let mut receiver = Agent::builder("receiver").build().unwrap();
    let s = seen.clone();
    receiver.on_message(move |ctx: Context, _: Address, _: Note| {
        s.lock().push(("Note", ctx.session().unwrap()));
        async {}
    });
    let s = seen.clone();
    receiver.on_message(move |ctx: Context, _: Address, _: Free| {
        s.lock().push(("Free", ctx.session().unwrap()));
        async {}
    });
    let to = bureau.add(receiver).unwrap();
    let guard = Arc::new(Sessions::default());
    let (tx, mut failures) = mpsc::unbounded_channel::<(&'static str, bool)>();
    let mut agent = Agent::builder("guarded sender").build().unwrap();
    let t = tx.clone();
    agent.on_startup(move |ctx: Context| {
        let t = t.clone();
        async move {
            let sent = ctx.send_in(CLOSED, to, Note(1)).await;
            // The test's receiver outlives the agent.
            let _ = t.send(("startup send_in", sent.is_err_and(|e| refused(e.failure(), Note::NAME))));
            let asked = ctx.request_in::<Ask, Answer>(CLOSED, to, Ask(1), Duration::from_secs(5)).await;
            let _ = t.send(("startup request", matches!(asked, Err(RequestError::Send(f)) if refused(&f, Ask::NAME))));
        }
    });
    let ticks = Arc::new(AtomicUsize::new(0));
    let t = tx.clone();
    agent.on_interval(Duration::from_secs(1), move |ctx: Context| {
        let (t, first) = (t.clone(), ticks.fetch_add(1, Ordering::Relaxed) == 0);
        async move {
            if first {
                let sent = ctx.send_in(CLOSED + 2, to, Note(2)).await;
                let _ = t.send(("interval send_in", sent.is_err_and(|e| refused(e.failure(), Note::NAME))));
            }
        }
    });
    let t = tx.clone();
    agent.include(protocol(&guard).on_message(move |ctx: Context, from: Address, Ask(n): Ask| {
        let t = t.clone();
        async move {
            // The request came in session n: n >= CLOSED is refused on the way in, so a
            // reply is tried only in open sessions; it goes out in a closed one here.
            let sent = ctx.send_in(CLOSED + 3, from, Note(n)).await;
            let _ = t.send(("handler send_in", sent.is_err_and(|e| refused(e.failure(), Note::NAME))));
            let sent = ctx.send(to, Note(n)).await;
            let _ = t.send(("handler send in its own session", sent.is_ok()));
            let deferred = ctx.defer_reply().unwrap();
            let _ = deferred.send(Answer(n)).await;
        }
    }));
    let me = bureau.add(agent).unwrap();
    let outside = bureau.context(me).unwrap();
    let sent = outside.send_in(CLOSED + 4, to, Note(4)).await;
    assert!(sent.is_err_and(|e| refused(e.failure(), Note::NAME) && e.into_message().is_some()));
    let sent = outside.send(to, Free(4)).await;
    assert!(sent.is_ok(), "a type outside the protocol is not checked");
    // A requester (unguarded) in an open session: the handler's deferred answer goes out.
    let requester = bureau.context(bureau.add(Agent::builder("requester").build().unwrap()).unwrap()).unwrap();
    let answer: Answer = requester.request_in(5, me, Ask(5), Duration::from_secs(5)).await.unwrap();
    assert_eq!(answer.0, 5);
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(tx);
    let mut shown = Vec::new();
    while let Ok(one) = failures.try_recv() {
        shown.push(one);
    }
    shown.sort();
    assert_eq!(
        shown,
        [
            ("handler send in its own session", true),
            ("handler send_in", true),
            ("interval send_in", true),
            ("startup request", true),
            ("startup send_in", true),
        ]
    );
    // Nothing refused reached the receiver: only Free, from outside the protocol, and the
    // handler's Note in the request's open session.
    let seen: Vec<_> =
        seen.lock().iter().map(|(name, session)| (*name, *session < CLOSED || *name == "Free")).collect();
    assert_eq!(seen, [("Free", true), ("Note", true)]);
    assert_eq!(guard.checked_out.load(Ordering::Relaxed), 7, "every send of the protocol's types was checked");
    bureau.shutdown().await.unwrap();
}

/// A reply to a request is checked too, and a refused one is not given: the requester is
/// told there was no reply.
#[tokio::test(start_paused = true)]
async fn a_refused_reply_is_not_given() {
    let bureau = Bureau::new().unwrap();
    let guard = Arc::new(Sessions::default());
    let (tx, mut results) = mpsc::unbounded_channel::<bool>();
    let mut agent = Agent::builder("answerer").build().unwrap();
    // Session 7's requests are answered in session CLOSED + 7, by a guard that judges the
    // answer's session: the guard refuses a reply when told its session is closed.
    struct Replies(Shared);
    impl Guard for Replies {
        fn incoming<'a>(&'a self, ctx: &'a Context, message: Inbound) -> GuardFuture<'a> {
            self.0.incoming(ctx, message)
        }
        fn outgoing(&self, ctx: &Context, message: Outbound) -> Result<(), Refusal> {
            let refused = Outbound { session: message.session + CLOSED, ..message };
            match message.message == Answer::NAME {
                true => self.0.outgoing(ctx, refused),
                false => self.0.outgoing(ctx, message),
            }
        }
    }
    let protocol = Protocol::new("guarded", "1").replies::<Ask, Answer>().guard(Replies(Shared(Arc::clone(&guard))));
    agent.include(protocol.on_message(move |ctx: Context, _: Address, Ask(n): Ask| {
        let tx = tx.clone();
        async move {
            let replied = ctx.reply(Answer(n)).await;
            let _ = tx.send(matches!(&replied, Err(ReplyError::Send(f)) if refused(f, Answer::NAME)));
        }
    }));
    let answerer = bureau.add(agent).unwrap();
    let requester = bureau.context(bureau.add(Agent::builder("requester").build().unwrap()).unwrap()).unwrap();
    let asked = requester.request_in::<Ask, Answer>(7, answerer, Ask(7), Duration::from_secs(5)).await;
    assert!(matches!(asked, Err(RequestError::NoReply { .. })), "{asked:?}");
    assert_eq!(results.recv().await, Some(true));
    bureau.shutdown().await.unwrap();
}

/// Refuses the `Answer`s that arrive in session 7, and nothing else.
struct RefusesAnswersIn7;

impl Guard for RefusesAnswersIn7 {
    fn incoming<'a>(&'a self, _ctx: &'a Context, message: Inbound) -> GuardFuture<'a> {
        Box::pin(async move {
            match message.message == Answer::NAME && message.session == 7 {
                true => Err(Refusal::new(GuardCause::OutOfOrder, "no answer expected in session 7")),
                false => Ok(()),
            }
        })
    }

    fn outgoing(&self, _ctx: &Context, _message: Outbound) -> Result<(), Refusal> {
        Ok(())
    }
}

/// An unguarded agent that answers every `Ask(n)` with `Answer(n)`.
fn answerer() -> Agent {
    let mut agent = Agent::builder("answerer").seed("guard answerer").build().unwrap();
    agent.on_message(|ctx: Context, _: Address, Ask(n): Ask| async move { ctx.reply(Answer(n)).await });
    agent
}

/// A requester whose protocol's guard refuses the `Answer`s of session 7.
fn guarded_requester() -> Agent {
    let mut agent = Agent::builder("requester").seed("guard requester").build().unwrap();
    agent.include(Protocol::new("guarded", "1").replies::<Ask, Answer>().guard(RefusesAnswersIn7));
    agent
}

/// Whether `asked` is the requester's guard refusing the answer from `to`.
fn reply_refused(asked: &Result<Answer, RequestError>, to: Address) -> bool {
    matches!(asked, Err(RequestError::ReplyRefused { to: from, protocol, reply, refusal })
        if *from == to && protocol == "guarded/1" && *reply == Answer::NAME && refusal.cause == GuardCause::OutOfOrder)
}

/// The reply that comes back to a request passes the requester's guard before the
/// requester gets it: a refused one is dropped, and the request fails saying so.
#[tokio::test(start_paused = true)]
async fn a_reply_the_requesters_guard_refuses_is_not_handed_over() {
    let bureau = Bureau::new().unwrap();
    let to = bureau.add(answerer()).unwrap();
    let requester = bureau.context(bureau.add(guarded_requester()).unwrap()).unwrap();
    let asked = requester.request_in::<Ask, Answer>(7, to, Ask(7), Duration::from_secs(5)).await;
    assert!(reply_refused(&asked, to), "{asked:?}");
    let asked = requester.request_in::<Ask, Answer>(8, to, Ask(8), Duration::from_secs(5)).await;
    assert_eq!(asked.unwrap().0, 8);
    bureau.shutdown().await.unwrap();
}

/// The same over libp2p, between two bureaus on loopback: a reply from another process is
/// checked as one from the same bureau.
#[tokio::test]
async fn a_reply_over_the_network_passes_the_requesters_guard() {
    use agent_core::transport::{Endpoint, NetworkConfig, StaticResolver};
    let resolver = Arc::new(StaticResolver::new());
    let config = || NetworkConfig::new(vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()], resolver.clone());
    let (server, client) = (Bureau::new().unwrap(), Bureau::new().unwrap());
    let to = server.add(answerer()).unwrap();
    let from = client.add(guarded_requester()).unwrap();
    for (bureau, agent) in [(&server, to), (&client, from)] {
        let info = bureau.listen(config()).await.unwrap();
        resolver.insert(agent, Endpoint { peer_id: info.peer_id, addrs: info.listen_addrs });
    }
    let requester = client.context(from).unwrap();
    let asked = requester.request_in::<Ask, Answer>(7, to, Ask(7), Duration::from_secs(10)).await;
    assert!(reply_refused(&asked, to), "{asked:?}");
    let asked = requester.request_in::<Ask, Answer>(8, to, Ask(8), Duration::from_secs(10)).await;
    assert_eq!(asked.unwrap().0, 8);
    client.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

/// An agent that includes no guarded protocol sends and receives as before, in any session.
#[tokio::test(start_paused = true)]
async fn an_agent_without_a_guard_is_not_checked() {
    let bureau = Bureau::new().unwrap();
    let seen = Seen::default();
    let mut agent = Agent::builder("plain").build().unwrap();
    let s = seen.clone();
    agent.include(Protocol::new("plain", "1").on_message(move |ctx: Context, _: Address, _: Note| {
        s.lock().push(("Note", ctx.session().unwrap()));
        async {}
    }));
    let to = bureau.add(agent).unwrap();
    let sender = bureau.context(bureau.add(Agent::builder("sender").build().unwrap()).unwrap()).unwrap();
    sender.send_in(CLOSED, to, Note(0)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(seen.lock().clone(), [("Note", CLOSED)]);
    bureau.shutdown().await.unwrap();
}
