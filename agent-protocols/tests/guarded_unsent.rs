//! A guarded step the agent tried to send but that did not leave is taken back, and only
//! then: a reply to a request answered already records nothing, a reply its requester no
//! longer waits for is taken back, as is a request to an unknown address; a step cannot be
//! taken back once something else changed its dialogue (it expired).

use std::time::Duration;

use agent_core::{Address, Agent, Bureau, Context, Message, RequestError, SendFailure};
use agent_protocols::dialogue::{Checked, Rules};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Ask;
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Quote(u64);
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Take;

fn rules() -> Rules {
    Rules::builder("quote")
        .initial("start")
        .step::<Ask>("start", "buyer", "asked")
        .step::<Quote>("asked", "seller", "quoted")
        .step::<Take>("quoted", "buyer", "taken")
        .terminal("taken")
        .build()
        .unwrap()
}

/// A guarded seller that defers the reply to Ask, then (mistakenly, or from another path)
/// calls `ctx.reply`: `AlreadyAnswered`, and its Quote is not recorded; the deferred reply
/// then goes out as the step.
#[tokio::test]
async fn a_reply_to_a_request_answered_already_records_no_step() {
    let bureau = Bureau::new().unwrap();
    let on_seller = Checked::new(rules(), "seller");
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Option<String>)>();
    let mut seller = Agent::builder("seller").seed("seller").build().unwrap();
    let c = on_seller.clone();
    seller.include(on_seller.protocol("quote", "1").replies::<Ask, Quote>().message::<Take>().on_message(
        move |ctx: Context, _: Address, _: Ask| {
            let (c, tx) = (c.clone(), tx.clone());
            async move {
                let deferred = ctx.defer_reply().unwrap();
                let r = ctx.reply(Quote(1)).await;
                let st = c.dialogues(&ctx).unwrap().get(ctx.session().unwrap()).map(|d| d.state.to_string());
                let _ = tx.send((format!("{r:?}"), st));
                let r2 = deferred.send(Quote(1)).await;
                let _ = tx.send((format!("{r2:?}"), None));
            }
        },
    ));
    let seller_at = bureau.add(seller).unwrap();
    let buyer = bureau.context(bureau.add(Agent::builder("buyer").seed("buyer").build().unwrap()).unwrap()).unwrap();
    let asked = buyer.request_in::<Ask, Quote>(1, seller_at, Ask, Duration::from_secs(2)).await;
    let (r, st) = rx.recv().await.unwrap();
    let (r2, _) = rx.recv().await.unwrap();
    assert!(r.contains("AlreadyAnswered"), "{r}");
    assert_eq!(st.as_deref(), Some("asked"), "a reply that failed with AlreadyAnswered left a recorded Quote step");
    assert_eq!(r2, "Ok(())", "the deferred reply is the step");
    assert_eq!(asked.unwrap().0, 1);
    bureau.shutdown().await.unwrap();
}

/// A guarded seller whose reply finds its (local) requester gone, timed out: nothing reached
/// it, and the seller's dialogue is back where it stood.
#[tokio::test]
async fn a_reply_its_requester_no_longer_awaits_is_taken_back() {
    let bureau = Bureau::new().unwrap();
    let on_seller = Checked::new(rules(), "seller");
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Option<String>)>();
    let mut seller = Agent::builder("seller").seed("seller").build().unwrap();
    let c = on_seller.clone();
    seller.include(on_seller.protocol("quote", "1").replies::<Ask, Quote>().message::<Take>().on_message(
        move |ctx: Context, _: Address, _: Ask| {
            let (c, tx) = (c.clone(), tx.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let r = ctx.reply(Quote(1)).await;
                let st = c.dialogues(&ctx).unwrap().get(ctx.session().unwrap()).map(|d| d.state.to_string());
                let _ = tx.send((format!("{r:?}"), st));
            }
        },
    ));
    let seller_at = bureau.add(seller).unwrap();
    let buyer = bureau.context(bureau.add(Agent::builder("buyer").seed("buyer").build().unwrap()).unwrap()).unwrap();
    let asked = buyer.request_in::<Ask, Quote>(1, seller_at, Ask, Duration::from_millis(50)).await;
    assert!(matches!(asked, Err(RequestError::Timeout { .. })), "{asked:?}");
    let (r, st) = rx.recv().await.unwrap();
    assert!(r.contains("RequesterGone"), "{r}");
    assert_eq!(st.as_deref(), Some("asked"), "a reply that surely did not arrive stays recorded");
    bureau.shutdown().await.unwrap();
}

/// The request path takes its step back when the target is unknown (positive check).
#[tokio::test]
async fn a_request_to_nobody_is_taken_back() {
    let bureau = Bureau::new().unwrap();
    let on_buyer = Checked::new(rules(), "buyer");
    let mut buyer = Agent::builder("buyer").seed("buyer").build().unwrap();
    buyer.include(on_buyer.protocol("quote", "1").replies::<Ask, Quote>().message::<Take>());
    let buyer = bureau.context(bureau.add(buyer).unwrap()).unwrap();
    let nobody = agent_core::Identity::from_seed("nobody").address();
    let asked = buyer.request_in::<Ask, Quote>(1, nobody, Ask, Duration::from_secs(1)).await;
    assert!(matches!(asked, Err(RequestError::Send(SendFailure::Unroutable { .. }))), "{asked:?}");
    assert!(on_buyer.dialogues(&buyer).unwrap().get(1).is_none());
    bureau.shutdown().await.unwrap();
}

/// A step that failed after its dialogue expired meanwhile (a sweep while the send waited
/// for mailbox space) is not taken back: the dialogue stays expired.
#[tokio::test]
async fn a_step_is_not_taken_back_once_its_dialogue_expired() {
    let bureau = Bureau::new().unwrap();
    let checked = Checked::new(rules(), "seller");
    let mut seller = Agent::builder("seller").seed("seller").build().unwrap();
    seller.include(checked.protocol("quote", "1").message::<Ask>().message::<Quote>().message::<Take>());
    let ctx = bureau.context(bureau.add(seller).unwrap()).unwrap();
    let buyer = agent_core::Identity::from_seed("buyer").address();
    let d = checked.dialogues(&ctx).unwrap();
    let now = agent_core::envelope::unix_now_ms();
    d.incoming_named("Ask", 1, buyer, now).unwrap();
    d.outgoing_named("Quote", 1, now).unwrap();
    let expired = d.expire_now(1).unwrap().map(|x| x.state.to_string());
    let undone = d.unsay("Quote", 1);
    let after = d.get(1).map(|x| (x.state.to_string(), x.is_closed(d.rules())));
    assert_eq!(expired.as_deref(), Some("expired"));
    assert!(matches!(undone, Ok(false)), "{undone:?}");
    assert_eq!(d.open_count(), 0);
    assert_eq!(after.map(|a| a.0).as_deref(), Some("expired"), "unsay undid the expiry");
    bureau.shutdown().await.unwrap();
}

/// A peer that sends out of turn and then takes no messages (its mailbox full) cannot hold
/// up the guarded agent: the refusals it is told wait beside the agent's handlers, and the
/// agent goes on answering others at once.
#[tokio::test(start_paused = true)]
async fn a_peer_slow_to_take_its_refusals_does_not_hold_the_agent_up() {
    use agent_core::{MailboxConfig, WhenFull};
    let bureau = Bureau::new().unwrap();
    let checked = Checked::new(rules(), "seller");
    let mut seller = Agent::builder("seller").seed("seller").build().unwrap();
    seller.include(checked.protocol("quote", "1").message::<Quote>().message::<Take>().on_message(
        |ctx: Context, from: Address, _: Ask| async move {
            let _ = ctx.send_in(ctx.session().unwrap(), from, Quote(2)).await;
        },
    ));
    // Handled, so that a Take reaches the guard (which refuses these, out of any dialogue).
    seller.on_message(|_: Context, _: Address, _: Take| std::future::ready(()));
    let seller_at = bureau.add(seller).unwrap();
    // Room for one message, waited for when full; its handler never returns.
    let mut rogue = Agent::builder("rogue")
        .seed("rogue")
        .mailbox(MailboxConfig::default().with_capacity(1).with_when_full(WhenFull::Wait))
        .build()
        .unwrap();
    rogue.on_message(|_: Context, _: Address, _: agent_protocols::dialogue::Refused| std::future::pending::<()>());
    let rogue = bureau.context(bureau.add(rogue).unwrap()).unwrap();
    for session in 10..16 {
        rogue.send_in(session, seller_at, Take).await.unwrap();
    }
    let (quotes_tx, mut quotes) = mpsc::unbounded_channel();
    let mut buyer = Agent::builder("buyer").seed("buyer").build().unwrap();
    buyer.on_message(move |ctx: Context, _: Address, Quote(n): Quote| {
        let _ = quotes_tx.send((ctx.session().unwrap(), n));
        std::future::ready(())
    });
    let buyer = bureau.context(bureau.add(buyer).unwrap()).unwrap();
    buyer.send_in(1, seller_at, Ask).await.unwrap();
    // Well within the send timeout a refusal told in line would wait for.
    let quoted = tokio::time::timeout(Duration::from_secs(1), quotes.recv()).await;
    assert_eq!(quoted.ok().flatten(), Some((1, 2)), "the seller was held up by the rogue's full mailbox");
    // The rogue's handler never returns on its own: the bureau is dropped, which ends its
    // tasks, rather than shut down gracefully, which would wait for that handler.
    drop(bureau);
}
