//! The Agora demo: a traveller asks two airlines for quotes, books the cheaper seat and
//! pays for it from its wallet; the airline checks the payment on the ledger and keeps its
//! bookings in persistent storage. Everything runs in one bureau.
//!
//! `cargo run -p agent-examples` (set `RUST_LOG=debug` to see every handler span).
#![allow(clippy::print_stdout)] // A demo binary talks to its user on stdout.

use std::time::Duration;

use std::sync::Arc;

use agent_core::error::Report;
use agent_core::ledger::{LocalLedger, LocalLedgerConfig, Operation, Units};
use agent_core::{Address, Agent, Bureau, Config, Context, Identity, Message, Protocol, Wallet};
use serde::{Deserialize, Serialize};

/// The demo's money is in euro cents: two decimals.
const CENTS: u32 = 2;

/// Asks an airline for a price.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct QuoteRequest {
    route: String,
    seats: u32,
}

/// An airline's offer, valid for the session.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Quote {
    airline: String,
    price_cents: u64,
    /// The airline's ledger account.
    pay_to: Address,
}

/// Books the quoted seats, paid by the ledger transaction at `payment_height`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Book {
    route: String,
    seats: u32,
    price_cents: u64,
    payment_height: u64,
}

/// The airline's confirmation.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Booked {
    reference: String,
}

fn airline(name: &'static str, cents_per_seat: u64) -> anyhow::Result<Agent> {
    let protocol = Protocol::new("flight-booking", "1.0")
        .on_message(move |ctx: Context, _from: Address, req: QuoteRequest| async move {
            let pay_to = ctx.wallet()?.address();
            let quote = Quote { airline: name.to_owned(), price_cents: cents_per_seat * u64::from(req.seats), pay_to };
            ctx.reply(quote).await?;
            Ok::<(), anyhow::Error>(())
        })
        .on_message(move |ctx: Context, from: Address, book: Book| async move {
            // Check the payment on the ledger before confirming.
            let wallet = ctx.wallet()?;
            let paid = wallet.history(20).await?.into_iter().any(|receipt| {
                receipt.height == book.payment_height
                    && matches!(receipt.tx.operation, Operation::Transfer { to, amount } if to == wallet.address() && amount == u128::from(book.price_cents))
            });
            anyhow::ensure!(paid, "no payment of {} cents at ledger height {}", book.price_cents, book.payment_height);
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
        println!("  {} quotes {route} x{seats}: {} EUR", quote.airline, Units::new(quote.price_cents.into(), CENTS));
        if best.as_ref().is_none_or(|(_, b)| quote.price_cents < b.price_cents) {
            best = Some((airline, quote));
        }
    }
    let (airline, quote) = best.ok_or_else(|| anyhow::anyhow!("no airline answered"))?;
    let receipt =
        ctx.wallet()?.transfer(quote.pay_to, u128::from(quote.price_cents), format!("{route} x{seats}")).await?;
    let book = Book { route: route.to_owned(), seats, price_cents: quote.price_cents, payment_height: receipt.height };
    let booked: Booked = ctx.request(airline, book, None).await?;
    Ok((quote, booked))
}

#[tokio::main]
async fn main() -> Result<(), Report> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    // One in-process ledger; the faucet (mint authority) funds the traveller.
    let mint = Identity::from_seed("demo mint authority");
    let ledger = Arc::new(LocalLedger::open(LocalLedgerConfig::default().with_authority(mint.address()))?);
    let bureau = Bureau::with_config(Config::default().with_ledger(ledger.clone()))?;
    let skyways = bureau.add(airline("skyways", 12_900)?)?;
    let jetlow = bureau.add(airline("jetlow", 9_900)?)?;
    let traveller = bureau.add(Agent::builder("traveller").seed("traveller demo seed").build()?)?;
    println!("Agora demo: one bureau, three agents");
    println!("  skyways   {skyways}");
    println!("  jetlow    {jetlow}");
    println!("  traveller {traveller}");
    let ctx = bureau.context(traveller).ok_or_else(|| anyhow::anyhow!("traveller is not running"))?;
    let faucet = Wallet::new(mint, ledger);
    let funds = 100_000;
    faucet.mint(ctx.wallet()?.address(), funds).await?;
    println!("  traveller's wallet funded with {} EUR\n", Units::new(funds, CENTS));
    for (route, seats) in [("BER-LIS", 2), ("LIS-NYC", 1), ("NYC-BER", 3)] {
        let (quote, booked) = shop(&ctx, &[skyways, jetlow], route, seats).await?;
        println!("  paid and booked {route} with {} as {}\n", quote.airline, booked.reference);
    }
    let left = Units::new(ctx.wallet()?.balance().await?, CENTS);
    println!("traveller's balance: {left} EUR");
    bureau.shutdown().await?;
    println!("done: 3 trips paid and booked, storage flushed, agents shut down");
    Ok(())
}
