//! A protocol of your own, declared the way the shipped ones are: a two-role quote
//! negotiation (the buyer asks, the seller quotes, the buyer accepts or declines) with typed
//! messages, its dialogue rules published in its manifest, and plain handlers and sends,
//! every one of which the runtime checks against those rules. A peer that sends out of turn
//! is refused with a typed refusal, and the seller's dialogue does not move; a send out of
//! turn is not sent.
//!
//! Run it with `cargo run -p agent-protocols --example own_protocol`;
//! `tests/own_protocol.rs` runs it too, and checks that docs/protocols.md shows it as it is.

// ANCHOR: protocol
use std::time::Duration;

use agent_core::protocol::GuardCause;
use agent_core::{Address, Agent, Bureau, Context, Message, Protocol, SendFailure};
use agent_protocols::dialogue::{Checked, DialogueError, RefusalCause, Refused, Rules, Standing};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// The buyer asks for a price for `item`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "example.quote.Ask")]
pub struct Ask {
    /// What the buyer wants.
    pub item: String,
}

/// The seller's price.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "example.quote.Quote")]
pub struct Quote {
    /// In cents.
    pub price: u64,
}

/// The buyer takes the quote.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "example.quote.Take")]
pub struct Take;

/// The buyer turns it down.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "example.quote.Decline")]
pub struct Decline;

/// The roles.
pub const BUYER: &str = "buyer";
/// The roles.
pub const SELLER: &str = "seller";

/// Which message may follow which, who may send it, where it ends, and how long the buyer
/// may think about a quote.
pub fn rules() -> Rules {
    Rules::builder("example.quote")
        .initial("start")
        .step::<Ask>("start", BUYER, "asked")
        .step::<Quote>("asked", SELLER, "quoted")
        .step::<Take>("quoted", BUYER, "taken")
        .step::<Decline>("quoted", BUYER, "declined")
        .terminal("taken")
        .terminal("declined")
        .deadline("quoted", Duration::from_secs(30))
        .build()
        .expect("the quote rules are valid")
}

/// The protocol as both sides publish it, guarded by `checked` (one side's dialogues): its
/// messages and its rules, all in its digest, and every step in and out checked.
pub fn protocol(checked: &Checked) -> Protocol {
    checked
        .protocol("example.quote", "1.0.0")
        .message::<Ask>()
        .message::<Quote>()
        .message::<Take>()
        .message::<Decline>()
}

/// The seller's side. Its handlers are plain: an Ask reaches `on_ask` only if its dialogue
/// accepts it, and the Quote is checked on its way out.
pub fn seller(checked: &Checked) -> Protocol {
    protocol(checked).on_message(on_ask).on_message(on_answer::<Take>).on_message(on_answer::<Decline>)
}

async fn on_ask(ctx: Context, from: Address, ask: Ask) -> Result<(), agent_core::SendError<Quote>> {
    let dialogue = ctx.session().unwrap_or_default();
    ctx.send_in(dialogue, from, Quote { price: 100 * ask.item.len() as u64 }).await
}

/// The check records the buyer's answer, which closes the dialogue: nothing else to do.
async fn on_answer<M: Message>(_ctx: Context, _from: Address, _answer: M) {}

/// The buyer's side: quotes (checked) and refusals (not a step) are passed on to whoever
/// drives the buyer.
pub fn buyer(checked: &Checked, quotes: mpsc::Sender<(u128, Quote)>, refusals: mpsc::Sender<Refused>) -> Protocol {
    buying(protocol(checked), quotes, refusals)
}

/// The buyer's handlers, on `protocol`.
pub fn buying(protocol: Protocol, quotes: mpsc::Sender<(u128, Quote)>, refusals: mpsc::Sender<Refused>) -> Protocol {
    protocol
        .on_message(move |ctx: Context, _from: Address, quote: Quote| {
            let quotes = quotes.clone();
            async move {
                // The receiver outlives the agents in `run`; if not, nobody waits for it.
                let _ = quotes.send((ctx.session().unwrap_or_default(), quote)).await;
            }
        })
        .on_message(move |_ctx: Context, _from: Address, refused: Refused| {
            let refusals = refusals.clone();
            async move {
                // As above: nobody waits for it once the receiver is gone.
                let _ = refusals.send(refused).await;
            }
        })
}
// ANCHOR_END: protocol

/// What the run showed.
#[derive(Debug)]
pub struct Shown {
    /// The refusal the seller sent for an Ask out of turn (from an unguarded peer).
    pub refused: Refused,
    /// The seller's dialogue with that peer: its state before and after the refused Ask.
    pub seller_states: [String; 2],
    /// Why the buyer's own Ask out of turn was not sent.
    pub own_wrong_send: GuardCause,
    /// The seller's dialogue with the buyer, at the end.
    pub end: String,
}

/// A buyer asks a seller with a plain send (which opens the dialogue) and is quoted; its
/// second Ask, out of turn, is not sent. A peer without the guard does the same, and the
/// seller refuses its second Ask, its dialogue unchanged. The buyer then takes the quote.
pub async fn run() -> Result<Shown, Box<dyn std::error::Error>> {
    let bureau = Bureau::new()?;
    let on_seller = Checked::new(rules(), SELLER);
    let mut agent = Agent::builder("seller").seed("example seller").build()?;
    agent.include(seller(&on_seller));
    let seller_at = bureau.add(agent)?;
    let (quotes_tx, mut quotes) = mpsc::channel(4);
    let (refusals_tx, mut refusals) = mpsc::channel(4);
    let mut agent = Agent::builder("buyer").seed("example buyer").build()?;
    agent.include(buyer(&Checked::new(rules(), BUYER), quotes_tx.clone(), refusals_tx.clone()));
    let ctx = bureau.context(bureau.add(agent)?).ok_or("the buyer is not in the bureau")?;
    // A buggy or hostile peer: the same messages, with no guard of its own.
    let mut agent = Agent::builder("rogue").seed("example rogue").build()?;
    agent.include(buying(Protocol::new("example.quote", "1.0.0"), quotes_tx, refusals_tx));
    let rogue = bureau.context(bureau.add(agent)?).ok_or("the rogue is not in the bureau")?;
    let seller_ctx = bureau.context(seller_at).ok_or("the seller is not in the bureau")?;
    let seller_state = |id: u128| -> Result<String, DialogueError> {
        Ok(on_seller.dialogues(&seller_ctx)?.get(id).map(|d| d.state.to_string()).unwrap_or_default())
    };
    let wait = Duration::from_secs(5);

    let dialogue = 7;
    ctx.send_in(dialogue, seller_at, Ask { item: "kettle".into() }).await?;
    let (quoted, quote) = tokio::time::timeout(wait, quotes.recv()).await?.ok_or("no quote")?;
    assert_eq!((quoted, quote.price), (dialogue, 600));

    // The buyer's own Ask out of turn: refused before it goes out.
    let own_wrong_send = match ctx.send_in(dialogue, seller_at, Ask { item: "again".into() }).await {
        Err(e) => match e.failure() {
            SendFailure::Refused { refusal, .. } => refusal.cause,
            other => return Err(format!("the Ask failed otherwise: {other}").into()),
        },
        Ok(()) => return Err("a buyer's Ask out of turn was sent".into()),
    };

    // The rogue's, in a dialogue of its own: the seller refuses it and its dialogue stays.
    let theirs = 8;
    rogue.send_in(theirs, seller_at, Ask { item: "pan".into() }).await?;
    tokio::time::timeout(wait, quotes.recv()).await?.ok_or("no quote")?;
    let before = seller_state(theirs)?;
    rogue.send_in(theirs, seller_at, Ask { item: "again".into() }).await?;
    let refused = tokio::time::timeout(wait, refusals.recv()).await?.ok_or("no refusal")?;
    assert_eq!((refused.dialogue, refused.cause), (theirs, RefusalCause::OutOfOrder));
    assert_eq!(refused.standing, Standing::Open { state: "quoted".into() });
    let after = seller_state(theirs)?;

    ctx.send_in(dialogue, seller_at, Take).await?;
    let taken = async {
        while seller_state(dialogue).ok().as_deref() != Some("taken") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(wait, taken).await?;
    let end = seller_state(dialogue)?;
    bureau.shutdown().await?;
    Ok(Shown { refused, seller_states: [before, after], own_wrong_send, end })
}

// Run by `cargo run` (the test calls `run` instead), it talks to its user on stdout.
#[allow(dead_code, clippy::print_stdout)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let shown = run().await?;
    println!("refused: {:?}, {}; expected {:?}", shown.refused.cause, shown.refused.standing, shown.refused.expected);
    println!("the seller's dialogue with the rogue: {:?}", shown.seller_states);
    println!("the buyer's own Ask out of turn: {}", shown.own_wrong_send);
    println!("the seller's dialogue with the buyer: {}", shown.end);
    Ok(())
}
