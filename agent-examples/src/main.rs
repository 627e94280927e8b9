//! The Agora demo: a traveller asks two airlines for quotes, books the cheaper seat, and
//! the airline keeps its bookings in persistent storage. Everything runs in one bureau.
//!
//! `cargo run -p agent-examples` (set `RUST_LOG=debug` to see every handler span).
#![allow(clippy::print_stdout)] // A demo binary talks to its user on stdout.

use std::time::Duration;

use agent_core::{Address, Agent, Bureau, Context, Message, Protocol};
use serde::{Deserialize, Serialize};

/// Asks an airline for a price.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
struct QuoteRequest {
    route: String,
    seats: u32,
}

/// An airline's offer, valid for the session.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
struct Quote {
    airline: String,
    price_cents: u64,
}

/// Books the quoted seats.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
struct Book {
    route: String,
    seats: u32,
    price_cents: u64,
}

/// The airline's confirmation.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
struct Booked {
    reference: String,
}

fn airline(name: &'static str, cents_per_seat: u64) -> anyhow::Result<Agent> {
    let protocol = Protocol::new("flight-booking", "1.0")
        .on_message(move |ctx: Context, _from: Address, req: QuoteRequest| async move {
            let quote = Quote { airline: name.to_owned(), price_cents: cents_per_seat * u64::from(req.seats) };
            ctx.reply(quote).await
        })
        .on_message(move |ctx: Context, from: Address, book: Book| async move {
            let storage = ctx.storage()?;
            let count: u64 = storage.get("bookings")?.unwrap_or(0) + 1;
            storage.set("bookings", &count)?;
            let reference = format!("{}-{count:04}", name.to_uppercase());
            storage.set(&reference, &(from.to_string(), book.route, book.seats, book.price_cents))?;
            ctx.reply(Booked { reference }).await?;
            Ok::<(), anyhow::Error>(())
        })
        .replies::<QuoteRequest, Quote>()
        .replies::<Book, Booked>();
    let mut agent = Agent::builder(name).seed(format!("{name} demo seed")).build()?;
    agent.include(protocol);
    agent.on_interval(Duration::from_millis(200), move |ctx: Context| async move {
        let bookings: u64 = ctx.storage()?.get("bookings")?.unwrap_or(0);
        tracing::info!(airline = name, bookings, "status");
        Ok::<(), agent_core::StorageError>(())
    });
    Ok(agent)
}

async fn shop(ctx: &Context, airlines: &[Address], route: &str, seats: u32) -> anyhow::Result<(Quote, Booked)> {
    let mut best: Option<(Address, Quote)> = None;
    for &airline in airlines {
        let request = QuoteRequest { route: route.to_owned(), seats };
        let quote: Quote = ctx.request(airline, request, Duration::from_secs(2)).await?;
        println!("  {} quotes {route} x{seats}: {:.2} EUR", quote.airline, quote.price_cents as f64 / 100.0);
        if best.as_ref().is_none_or(|(_, b)| quote.price_cents < b.price_cents) {
            best = Some((airline, quote));
        }
    }
    let (airline, quote) = best.ok_or_else(|| anyhow::anyhow!("no airline answered"))?;
    let book = Book { route: route.to_owned(), seats, price_cents: quote.price_cents };
    let booked: Booked = ctx.request(airline, book, None).await?;
    Ok((quote, booked))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let bureau = Bureau::new()?;
    let skyways = bureau.add(airline("skyways", 12_900)?)?;
    let jetlow = bureau.add(airline("jetlow", 9_900)?)?;
    let traveller = bureau.add(Agent::builder("traveller").seed("traveller demo seed").build()?)?;
    println!("Agora demo: one bureau, three agents");
    println!("  skyways   {skyways}");
    println!("  jetlow    {jetlow}");
    println!("  traveller {traveller}");
    let ctx = bureau.context(traveller).ok_or_else(|| anyhow::anyhow!("traveller is not running"))?;
    for (route, seats) in [("BER-LIS", 2), ("LIS-NYC", 1), ("NYC-BER", 3)] {
        let (quote, booked) = shop(&ctx, &[skyways, jetlow], route, seats).await?;
        println!("  booked {route} with {} as {}\n", quote.airline, booked.reference);
    }
    bureau.shutdown().await?;
    println!("done: 3 trips booked, storage flushed, agents shut down");
    Ok(())
}
