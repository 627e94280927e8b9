//! A protocol of your own, declared the way the shipped ones are: a two-role quote
//! negotiation (the buyer asks, the seller quotes, the buyer accepts or declines) with typed
//! messages, its dialogue rules published in its manifest, and handlers whose every message
//! in and out is checked against those rules. A buyer that sends out of turn is refused
//! with a typed refusal, and the seller's dialogue does not move.
//!
//! Run it with `cargo run -p agent-protocols --example own_protocol`;
//! `tests/own_protocol.rs` runs it too, and checks that docs/protocols.md shows it as it is.

// ANCHOR: protocol
use std::time::Duration;

use agent_core::{Address, Agent, Bureau, Context, Message, Protocol};
use agent_protocols::dialogue::{
    Checked, CheckedSendError, DialogueError, RefusalCause, Refused, Rules, Standing, Turn,
};
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

/// The protocol as both sides publish it: its messages and its rules, all in its digest.
pub fn protocol() -> Protocol {
    Protocol::new("example.quote", "1.0.0")
        .message::<Ask>()
        .message::<Quote>()
        .message::<Take>()
        .message::<Decline>()
        .message::<Refused>()
        .state_machine(rules().state_machine())
}

/// The seller's side, over its dialogues `checked`: every Ask is checked before the handler
/// sees it, and its Quote is checked before it goes out.
pub fn seller(checked: &Checked) -> Protocol {
    protocol()
        .on_message(checked.handle(|turn: Turn, ask: Ask| async move {
            let price = 100 * ask.item.len() as u64;
            if let Err(e) = turn.send(Quote { price }).await {
                tracing::warn!(error = %e, "the quote was not sent");
            }
        }))
        // The check records the buyer's answer, which closes the dialogue: nothing else to do.
        .on_message(checked.handle(|_turn: Turn, _: Take| async {}))
        .on_message(checked.handle(|_turn: Turn, _: Decline| async {}))
}

/// The buyer's side: quotes (checked) and refusals (not a step: they go to `refusals`) are
/// passed on to whoever drives the buyer.
pub fn buyer(checked: &Checked, quotes: mpsc::Sender<(u128, Quote)>, refusals: mpsc::Sender<Refused>) -> Protocol {
    protocol()
        .on_message(checked.handle(move |turn: Turn, quote: Quote| {
            let quotes = quotes.clone();
            async move {
                // The receiver outlives the agents in `run`; if not, nobody waits for it.
                let _ = quotes.send((turn.dialogue(), quote)).await;
            }
        }))
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
    /// The refusal the seller sent for an Ask out of turn.
    pub refused: Refused,
    /// The seller's dialogue: its state before and after the refused Ask, and at the end.
    pub seller_states: [String; 3],
    /// The buyer's own attempt to send a Quote, refused before it went out.
    pub own_wrong_send: String,
}

/// A buyer asks a seller, is quoted, sends an Ask again out of turn (refused, the seller's
/// dialogue unchanged), tries to send a Quote itself (refused locally), and then takes the
/// quote.
pub async fn run() -> Result<Shown, Box<dyn std::error::Error>> {
    let bureau = Bureau::new()?;
    let on_seller = Checked::new(rules(), SELLER);
    let mut agent = Agent::builder("seller").seed("example seller").build()?;
    agent.include(seller(&on_seller));
    let seller_at = bureau.add(agent)?;
    let (quotes_tx, mut quotes) = mpsc::channel(4);
    let (refusals_tx, mut refusals) = mpsc::channel(4);
    let on_buyer = Checked::new(rules(), BUYER);
    let mut agent = Agent::builder("buyer").seed("example buyer").build()?;
    agent.include(buyer(&on_buyer, quotes_tx, refusals_tx));
    let ctx = bureau.context(bureau.add(agent)?).ok_or("the buyer is not in the bureau")?;
    let seller_ctx = bureau.context(seller_at).ok_or("the seller is not in the bureau")?;
    let seller_state = |id: u128| -> Result<String, DialogueError> {
        Ok(on_seller.dialogues(&seller_ctx)?.get(id).map(|d| d.state.to_string()).unwrap_or_default())
    };
    let wait = Duration::from_secs(5);

    let dialogue = 7;
    on_buyer.open(&ctx, dialogue, seller_at, SELLER, Ask { item: "kettle".into() }).await?;
    let (quoted, quote) = tokio::time::timeout(wait, quotes.recv()).await?.ok_or("no quote")?;
    assert_eq!((quoted, quote.price), (dialogue, 600));
    let before = seller_state(dialogue)?;

    // Out of turn, past the buyer's own check (as a buggy or hostile peer would send it).
    ctx.send_in(dialogue, seller_at, Ask { item: "again".into() }).await?;
    let refused = tokio::time::timeout(wait, refusals.recv()).await?.ok_or("no refusal")?;
    assert_eq!((refused.dialogue, refused.cause), (dialogue, RefusalCause::OutOfOrder));
    assert_eq!(refused.standing, Standing::Open { state: "quoted".into() });
    let after = seller_state(dialogue)?;

    // The buyer's own check refuses what is the seller's to send: nothing goes out.
    let own_wrong_send = match on_buyer.send(&ctx, dialogue, Quote { price: 1 }).await {
        Err(CheckedSendError::Refused(refused)) => refused.to_string(),
        other => return Err(format!("a buyer's Quote was not refused: {other:?}").into()),
    };

    on_buyer.send(&ctx, dialogue, Take).await?;
    let taken = async {
        while seller_state(dialogue).ok().as_deref() != Some("taken") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(wait, taken).await?;
    let end = seller_state(dialogue)?;
    bureau.shutdown().await?;
    Ok(Shown { refused, seller_states: [before, after, end], own_wrong_send })
}

// Run by `cargo run` (the test calls `run` instead), it talks to its user on stdout.
#[allow(dead_code, clippy::print_stdout)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let shown = run().await?;
    println!("refused: {:?}, {}; expected {:?}", shown.refused.cause, shown.refused.standing, shown.refused.expected);
    println!("the seller's dialogue: {:?}", shown.seller_states);
    println!("the buyer's own Quote: {}", shown.own_wrong_send);
    Ok(())
}
