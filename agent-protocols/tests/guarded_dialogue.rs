//! A protocol guarded by its dialogues (`dialogue::Checked::protocol`): the runtime checks
//! every step of a user's own protocol. Plain handlers never see a message out of order,
//! from the wrong role, from a stranger or late (the peer is told why, the dialogue does
//! not move); a plain send the rules refuse is not sent, from a message, startup or interval
//! handler alike; and a restarted agent's guard goes on from its stored dialogues.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_core::protocol::GuardCause;
use agent_core::{Address, Agent, Bureau, Config, Context, Message, Protocol, RequestError, SendFailure};
use agent_protocols::dialogue::{Checked, RefusalCause, Refused, Rules, Standing};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Ask;
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Quote(u64);
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Take;
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Decline;

const BUYER: &str = "buyer";
const SELLER: &str = "seller";

/// The buyer asks, the seller quotes, the buyer takes or declines within `think`.
fn rules(think: Duration) -> Rules {
    Rules::builder("quote")
        .initial("start")
        .step::<Ask>("start", BUYER, "asked")
        .step::<Quote>("asked", SELLER, "quoted")
        .step::<Take>("quoted", BUYER, "taken")
        .step::<Decline>("quoted", BUYER, "declined")
        .terminal("taken")
        .terminal("declined")
        .deadline("quoted", think)
        .build()
        .unwrap()
}

fn protocol(checked: &Checked) -> Protocol {
    checked.protocol("quote", "1").message::<Ask>().message::<Quote>().message::<Take>().message::<Decline>()
}

type Seen = Arc<Mutex<Vec<(&'static str, u128)>>>;

/// A guarded seller whose handlers are plain: it quotes every Ask it is given, and notes
/// each message its handlers see. Its Decline handler is registered on the agent, before
/// the protocol is included; its Quote handler exists so a buyer's Quote reaches the guard.
fn seller(checked: &Checked, seen: &Seen) -> Agent {
    let mut agent = Agent::builder("seller").seed("seller").build().unwrap();
    let note = |seen: &Seen, name: &'static str, ctx: &Context| seen.lock().push((name, ctx.session().unwrap()));
    let s = seen.clone();
    agent.on_message(move |ctx: Context, _: Address, _: Decline| {
        note(&s, "Decline", &ctx);
        async {}
    });
    let (s1, s2, s3) = (seen.clone(), seen.clone(), seen.clone());
    agent.include(
        protocol(checked)
            .on_message(move |ctx: Context, from: Address, _: Ask| {
                note(&s1, "Ask", &ctx);
                async move { ctx.send_in(ctx.session().unwrap(), from, Quote(5)).await }
            })
            .on_message(move |ctx: Context, _: Address, _: Take| {
                note(&s2, "Take", &ctx);
                async {}
            })
            .on_message(move |ctx: Context, _: Address, _: Quote| {
                note(&s3, "Quote", &ctx);
                async {}
            }),
    );
    agent
}

/// A peer without a guard (a buggy or hostile one): it sends whatever it is told to, and
/// passes on the quotes and refusals it gets.
fn rogue(name: &str, quotes: mpsc::UnboundedSender<u128>, refusals: mpsc::UnboundedSender<Refused>) -> Agent {
    let mut agent = Agent::builder(name).seed(name).build().unwrap();
    agent.on_message(move |ctx: Context, _: Address, _: Quote| {
        // The test's receivers outlive the agents.
        let _ = quotes.send(ctx.session().unwrap());
        async {}
    });
    agent.on_message(move |_: Context, _: Address, refused: Refused| {
        let _ = refusals.send(refused);
        async {}
    });
    agent
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap()
}

#[tokio::test]
async fn a_plain_handler_never_sees_a_message_its_dialogue_refuses() {
    let bureau = Bureau::new().unwrap();
    let (on_seller, seen) = (Checked::new(rules(Duration::from_secs(1)), SELLER), Seen::default());
    let seller_at = bureau.add(seller(&on_seller, &seen)).unwrap();
    let seller_ctx = bureau.context(seller_at).unwrap();
    let state = |id: u128| on_seller.dialogues(&seller_ctx).unwrap().get(id).map(|d| d.state.to_string());
    let (quotes_tx, mut quotes) = mpsc::unbounded_channel();
    let (refusals_tx, mut refusals) = mpsc::unbounded_channel();
    let buyer = bureau.context(bureau.add(rogue("buyer", quotes_tx.clone(), refusals_tx.clone())).unwrap()).unwrap();
    let stranger = bureau.context(bureau.add(rogue("stranger", quotes_tx, refusals_tx)).unwrap()).unwrap();

    buyer.send_in(1, seller_at, Ask).await.unwrap();
    assert_eq!(next(&mut quotes).await, 1);
    let quoted = Some("quoted".to_owned());
    assert_eq!(state(1), quoted);

    // Out of order, the wrong role's message, a stranger's: each refused, none seen.
    buyer.send_in(1, seller_at, Ask).await.unwrap();
    let refused = next(&mut refusals).await;
    assert_eq!((refused.dialogue, refused.cause), (1, RefusalCause::OutOfOrder));
    assert_eq!(refused.standing, Standing::Open { state: "quoted".into() });
    assert_eq!(refused.expected, ["Take from buyer", "Decline from buyer"]);
    buyer.send_in(1, seller_at, Quote(1)).await.unwrap();
    let refused = next(&mut refusals).await;
    assert_eq!((refused.cause, refused.state()), (RefusalCause::OutOfOrder, Some("quoted")));
    stranger.send_in(1, seller_at, Take).await.unwrap();
    let refused = next(&mut refusals).await;
    assert_eq!((refused.cause, refused.standing), (RefusalCause::NotAParty, Standing::NoSuchDialogue));
    // A Decline (handled by a handler registered on the agent) that opens nothing.
    buyer.send_in(2, seller_at, Decline).await.unwrap();
    assert_eq!(next(&mut refusals).await.cause, RefusalCause::UnknownDialogue);
    assert_eq!(state(1), quoted, "no refusal moved the dialogue");

    // Late: the buyer thought longer than the rules allow.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    buyer.send_in(1, seller_at, Take).await.unwrap();
    let refused = next(&mut refusals).await;
    assert_eq!((refused.cause, refused.state()), (RefusalCause::Late, Some("quoted")));
    assert!(refused.deadline_ms.is_some());
    assert_eq!(state(1), quoted);

    // In time, the same handlers see every step.
    buyer.send_in(3, seller_at, Ask).await.unwrap();
    assert_eq!(next(&mut quotes).await, 3);
    buyer.send_in(3, seller_at, Take).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while state(3).as_deref() != Some("taken") {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(seen.lock().clone(), [("Ask", 1), ("Ask", 3), ("Take", 3)], "the handlers saw only what counted");
    bureau.shutdown().await.unwrap();
}

/// What the guarded buyer's handlers report: which send, its outcome (the guard's cause,
/// or `None` if sent), and its dialogue's state before and after.
type Report = (&'static str, Option<GuardCause>, Option<String>, Option<String>);

fn cause_of(failure: &SendFailure) -> Option<GuardCause> {
    match failure {
        SendFailure::Refused { refusal, .. } => Some(refusal.cause),
        _ => None,
    }
}

#[tokio::test]
async fn a_plain_send_the_rules_refuse_is_not_sent() {
    let bureau = Bureau::new().unwrap();
    // The seller has no guard: whatever reaches it was sent.
    let seen = Seen::default();
    let mut agent = Agent::builder("seller").seed("seller").build().unwrap();
    let s = seen.clone();
    agent.on_message(move |ctx: Context, _: Address, _: Ask| {
        s.lock().push(("Ask", ctx.session().unwrap()));
        async {}
    });
    let s = seen.clone();
    agent.on_message(move |ctx: Context, _: Address, _: Take| {
        s.lock().push(("Take", ctx.session().unwrap()));
        async {}
    });
    let seller_at = bureau.add(agent).unwrap();

    let on_buyer = Checked::new(rules(Duration::from_secs(30)), BUYER);
    let (tx, mut reports) = mpsc::unbounded_channel::<Report>();
    let mut agent = Agent::builder("buyer").seed("buyer").build().unwrap();
    let (checked, t) = (on_buyer.clone(), tx.clone());
    agent.on_startup(move |ctx: Context| {
        let (checked, t) = (checked.clone(), t.clone());
        async move {
            let state = || checked.dialogues(&ctx).unwrap().get(1).map(|d| d.state.to_string());
            // Take opens nothing; then Ask, a plain send, opens dialogue 1.
            let (before, sent) = (state(), ctx.send_in(1, seller_at, Take).await);
            let _ = t.send(("startup Take", sent.err().and_then(|e| cause_of(e.failure())), before, state()));
            let (before, sent) = (state(), ctx.send_in(1, seller_at, Ask).await);
            let _ = t.send(("startup Ask", sent.err().and_then(|e| cause_of(e.failure())), before, state()));
        }
    });
    let (checked, t, fired) = (on_buyer.clone(), tx.clone(), Arc::new(AtomicBool::new(false)));
    agent.on_interval(Duration::from_millis(20), move |ctx: Context| {
        let (checked, t, first) = (checked.clone(), t.clone(), !fired.swap(true, Ordering::Relaxed));
        async move {
            if !first {
                return;
            }
            let state = || checked.dialogues(&ctx).unwrap().get(1).map(|d| d.state.to_string());
            // The seller's message, from the buyer.
            let (before, sent) = (state(), ctx.send_in(1, seller_at, Quote(1)).await);
            let _ = t.send(("interval Quote", sent.err().and_then(|e| cause_of(e.failure())), before, state()));
        }
    });
    let (checked, t) = (on_buyer.clone(), tx.clone());
    agent.include(protocol(&on_buyer).on_message(move |ctx: Context, from: Address, _: Quote| {
        let (checked, t) = (checked.clone(), t.clone());
        async move {
            let dialogue = ctx.session().unwrap();
            let state = || checked.dialogues(&ctx).unwrap().get(dialogue).map(|d| d.state.to_string());
            let (before, sent) = (state(), ctx.send_in(dialogue, from, Ask).await);
            let _ = t.send(("handler Ask", sent.err().and_then(|e| cause_of(e.failure())), before, state()));
            let (before, asked) = (state(), ctx.request::<Ask, Quote>(from, Ask, Duration::from_secs(1)).await);
            let cause = match asked {
                Err(RequestError::Send(failure)) => cause_of(&failure),
                _ => None,
            };
            let _ = t.send(("handler request", cause, before, state()));
            let (before, sent) = (state(), ctx.send_in(dialogue, from, Take).await);
            let _ = t.send(("handler Take", sent.err().and_then(|e| cause_of(e.failure())), before, state()));
        }
    }));
    let buyer_at = bureau.add(agent).unwrap();
    // The seller quotes (it has no guard to stop it, and the buyer's guard accepts it).
    tokio::time::sleep(Duration::from_millis(100)).await;
    bureau.context(seller_at).unwrap().send_in(1, buyer_at, Quote(5)).await.unwrap();

    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(next(&mut reports).await);
    }
    let s = |state: &str| Some(state.to_owned());
    assert_eq!(
        got,
        [
            ("startup Take", Some(GuardCause::UnknownDialogue), None, None),
            ("startup Ask", None, None, s("asked")),
            ("interval Quote", Some(GuardCause::OutOfOrder), s("asked"), s("asked")),
            ("handler Ask", Some(GuardCause::OutOfOrder), s("quoted"), s("quoted")),
            ("handler request", Some(GuardCause::OutOfOrder), s("quoted"), s("quoted")),
            ("handler Take", None, s("quoted"), s("taken")),
        ]
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(seen.lock().clone(), [("Ask", 1), ("Take", 1)], "only what the rules allowed was sent");
    bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_restarted_agents_guard_goes_on_from_its_stored_dialogues() {
    let dir = tempfile::tempdir().unwrap();
    let config = || Config::default().with_storage_dir(dir.path());
    let (quotes_tx, mut quotes) = mpsc::unbounded_channel();
    let (refusals_tx, mut refusals) = mpsc::unbounded_channel();
    {
        let bureau = Bureau::with_config(config()).unwrap();
        let checked = Checked::new(rules(Duration::from_secs(30)), SELLER);
        let seller_at = bureau.add(seller(&checked, &Seen::default())).unwrap();
        let buyer =
            bureau.context(bureau.add(rogue("buyer", quotes_tx.clone(), refusals_tx.clone())).unwrap()).unwrap();
        buyer.send_in(5, seller_at, Ask).await.unwrap();
        assert_eq!(next(&mut quotes).await, 5);
        bureau.shutdown().await.unwrap();
    }
    // Started again on the same storage, with a new guard that knows nothing yet.
    let bureau = Bureau::with_config(config()).unwrap();
    let (checked, seen) = (Checked::new(rules(Duration::from_secs(30)), SELLER), Seen::default());
    let seller_at = bureau.add(seller(&checked, &seen)).unwrap();
    let buyer = bureau.context(bureau.add(rogue("buyer", quotes_tx, refusals_tx)).unwrap()).unwrap();
    buyer.send_in(5, seller_at, Ask).await.unwrap();
    let refused = next(&mut refusals).await;
    assert_eq!((refused.dialogue, refused.cause), (5, RefusalCause::OutOfOrder));
    assert_eq!(refused.standing, Standing::Open { state: "quoted".into() }, "the stored dialogue was resumed");
    buyer.send_in(5, seller_at, Take).await.unwrap();
    let seller_ctx = bureau.context(seller_at).unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while checked.dialogues(&seller_ctx).unwrap().get(5).map(|d| d.state.to_string()).as_deref() != Some("taken") {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    // Its own sends are checked against the resumed dialogue too: it is closed.
    let sent = seller_ctx.send_in(5, buyer.address(), Quote(9)).await;
    assert_eq!(sent.err().and_then(|e| cause_of(e.failure())), Some(GuardCause::Closed));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(seen.lock().clone(), [("Take", 5)]);
    bureau.shutdown().await.unwrap();
}

/// A step that comes back as the reply to a request is checked and recorded by the
/// requester's guard as one sent to a handler: the buyer asks with `request`, and the
/// seller's `Quote`, its reply, moves the buyer's dialogue on so the buyer may take it.
/// (A refused reply is not handed over: agent-core's `guard.rs`.)
#[tokio::test]
async fn a_reply_is_a_step_of_the_requesters_dialogue() {
    let bureau = Bureau::new().unwrap();
    // An unguarded seller that answers every Ask with a Quote, as a reply.
    let mut seller = Agent::builder("seller").seed("seller").build().unwrap();
    seller.on_message(|ctx: Context, _: Address, _: Ask| async move { ctx.reply(Quote(7)).await });
    seller.on_message(|_: Context, _: Address, _: Take| async {});
    seller.on_message(|_: Context, _: Address, _: Refused| async {});
    let seller_at = bureau.add(seller).unwrap();
    let on_buyer = Checked::new(rules(Duration::from_secs(30)), BUYER);
    let mut buyer = Agent::builder("buyer").seed("buyer").build().unwrap();
    buyer.include(on_buyer.protocol("quote", "1").replies::<Ask, Quote>().message::<Take>().message::<Decline>());
    let buyer = bureau.context(bureau.add(buyer).unwrap()).unwrap();
    let state = |id: u128| on_buyer.dialogues(&buyer).unwrap().get(id).map(|d| d.state.to_string());

    let quote: Quote = buyer.request_in(1, seller_at, Ask, Duration::from_secs(5)).await.unwrap();
    assert_eq!(quote.0, 7);
    assert_eq!(state(1).as_deref(), Some("quoted"), "the reply was recorded as the seller's step");
    buyer.send_in(1, seller_at, Take).await.unwrap();
    assert_eq!(state(1).as_deref(), Some("taken"));
    bureau.shutdown().await.unwrap();
}

/// Outside the protocol: keeps the seller busy until the test lets it go.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Busy;

/// A step the guard allowed but that surely did not leave (the target unknown, its mailbox
/// full) is taken back: the dialogue stands where it stood, and the same step may be sent
/// again. Without that, the first failed Take would leave the buyer's dialogue "taken" and
/// its retry refused, and an Ask to a mistyped address would hold the dialogue's id.
#[tokio::test]
async fn a_step_that_was_not_sent_is_taken_back_and_may_be_sent_again() {
    use agent_core::{MailboxConfig, WhenFull};
    let bureau = Bureau::new().unwrap();
    let gate = Arc::new(tokio::sync::Notify::new());
    // An unguarded seller with room for one waiting message, refusing more.
    let mut seller = Agent::builder("seller")
        .seed("seller")
        .mailbox(MailboxConfig::default().with_capacity(1).with_when_full(WhenFull::Reject))
        .build()
        .unwrap();
    seller.on_message(|ctx: Context, from: Address, _: Ask| async move {
        ctx.send_in(ctx.session().unwrap(), from, Quote(3)).await.unwrap();
    });
    let g = Arc::clone(&gate);
    seller.on_message(move |_: Context, _: Address, _: Busy| {
        let g = Arc::clone(&g);
        async move { g.notified().await }
    });
    let (taken_tx, mut taken) = mpsc::unbounded_channel();
    seller.on_message(move |ctx: Context, _: Address, _: Take| {
        let _ = taken_tx.send(ctx.session().unwrap());
        async {}
    });
    let seller_at = bureau.add(seller).unwrap();
    let on_buyer = Checked::new(rules(Duration::from_secs(30)), BUYER);
    let (quotes_tx, mut quotes) = mpsc::unbounded_channel();
    let mut buyer = Agent::builder("buyer").seed("buyer").build().unwrap();
    buyer.include(protocol(&on_buyer).on_message(move |ctx: Context, _: Address, _: Quote| {
        let _ = quotes_tx.send(ctx.session().unwrap());
        async {}
    }));
    let buyer = bureau.context(bureau.add(buyer).unwrap()).unwrap();
    let state = |id: u128| on_buyer.dialogues(&buyer).unwrap().get(id).map(|d| d.state.to_string());

    // An Ask to an address nobody has opens nothing: dialogue 1 is free for the seller.
    let nobody = agent_core::Identity::from_seed("nobody").address();
    let sent = buyer.send_in(1, nobody, Ask).await;
    assert!(matches!(sent.as_ref().map_err(|e| e.failure()), Err(SendFailure::Unroutable { .. })), "{sent:?}");
    assert_eq!(state(1), None);
    buyer.send_in(1, seller_at, Ask).await.unwrap();
    assert_eq!(next(&mut quotes).await, 1);
    assert_eq!(state(1).as_deref(), Some("quoted"));

    // The seller busy and its one place taken: the Take is refused at its mailbox.
    buyer.send(seller_at, Busy).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    buyer.send(seller_at, Busy).await.unwrap();
    let sent = buyer.send_in(1, seller_at, Take).await;
    assert!(matches!(sent.as_ref().map_err(|e| e.failure()), Err(SendFailure::MailboxFull { .. })), "{sent:?}");
    assert_eq!(state(1).as_deref(), Some("quoted"), "the Take that did not leave was taken back");
    let said: Vec<String> =
        on_buyer.dialogues(&buyer).unwrap().get(1).unwrap().said.iter().map(|s| s.message.to_string()).collect();
    assert_eq!(said, ["Ask", "Quote"]);

    // Let the seller go; the same Take, sent again, counts.
    gate.notify_one();
    gate.notify_one();
    tokio::time::sleep(Duration::from_millis(20)).await;
    buyer.send_in(1, seller_at, Take).await.unwrap();
    assert_eq!(next(&mut taken).await, 1);
    assert_eq!(state(1).as_deref(), Some("taken"));
    bureau.shutdown().await.unwrap();
}
