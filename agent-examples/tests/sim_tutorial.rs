//! The tutorial of docs/simulation.md, run: two agents on a simulated network, then a
//! market of 1,000 agents on ten hosts, then the same market through a partition and a
//! ledger outage, and the same seed twice. The docs show the code between the `ANCHOR`
//! lines, and the last test checks that every Rust block of the chapter is one of them.

// ANCHOR: messages
use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{Ledger, LedgerError, MemoryLedger};
use agent_core::sim::{FaultyLedger, Host, Link, Outage, Outages, Sim};
use agent_core::{Address, Agent, Config, Context, Identity, Message, Wallet, WalletError};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// A buyer asks a seller its price for an item.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Ask {
    item: String,
}

/// The seller's price, and the wallet to pay it to.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Quote {
    price: u128,
    pay_to: Address,
}

/// An order, paid with a transfer whose memo is `payment`.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Order {
    item: String,
    payment: String,
}
// ANCHOR_END: messages

// ANCHOR: seller
/// A seller quotes `price` for anything and keeps each order in its storage, keyed by its
/// payment: an order sent twice (its first acknowledgement lost) is kept once.
fn seller(name: &str, price: u128) -> Agent {
    let mut agent = Agent::builder(name).seed(name).build().expect("a seller");
    agent.on_message(move |ctx: Context, _from: Address, _ask: Ask| async move {
        let pay_to = ctx.wallet().map_err(|e| e.to_string())?.address();
        ctx.reply(Quote { price, pay_to }).await.map_err(|e| e.to_string())
    });
    agent.on_message(|ctx: Context, _from: Address, order: Order| async move {
        ctx.storage()?.set(&format!("order/{}", order.payment), &order.item)
    });
    agent
}

/// The orders `seller` has kept.
fn orders(host: &Host, seller: Address) -> usize {
    let storage = host.context(seller).expect("a seller").storage().expect("its storage");
    storage.keys().expect("its keys").iter().filter(|key| key.starts_with("order/")).count()
}
// ANCHOR_END: seller

// ANCHOR: two_agents
#[tokio::test(start_paused = true)] // a current-thread runtime on a paused clock
async fn a_buyer_gets_a_quote_across_a_slow_lossy_link() {
    let sim = Sim::new(Sim::seed_from_env(1));
    sim.set_default_link(Link::with_latency(Duration::from_millis(40)).loss(0.05));
    // The seller names its wallet in its quotes: its host has a ledger.
    let ledger = Arc::new(MemoryLedger::new(None, sim.clock()));
    let east = sim.add_host_with("east", Config::default().with_ledger(ledger)).unwrap();
    let west = sim.add_host("west").unwrap();
    let shop = east.add(seller("shop", 120)).unwrap();
    let buyer = west.add(Agent::builder("buyer").seed("buyer").build().unwrap()).unwrap();

    let ctx = west.context(buyer).unwrap();
    let quote: Quote = ctx.request(shop, Ask { item: "tea".into() }, Duration::from_secs(2)).await.unwrap();
    assert_eq!(quote.price, 120);
    // 80 ms there and back at the least, in simulated time: the test took far less.
    assert!(sim.elapsed() >= Duration::from_millis(80));
    assert!(sim.trace().iter().any(|line| line.contains("buyer -> shop") && line.contains("delivered")));
    sim.shutdown().await;
}
// ANCHOR_END: two_agents

// ANCHOR: buyer
/// What one buyer went through.
#[derive(Debug, Default, Clone, PartialEq)]
struct Purchase {
    /// The seller it bought from and the price paid; `None` if it gave up.
    bought: Option<(Address, u128)>,
    /// Requests for quotes that failed (an unreachable seller, or no answer in time).
    asks_failed: u32,
    /// Payments whose outcome the ledger could not tell at once ("may have been applied").
    payments_unknown: u32,
}

/// A buyer's whole errand, driven from its own context: ask three sellers for a price, pay
/// the cheapest through the ledger, and send it the order. Every step is retried a bounded
/// number of times, with pauses in simulated time; a payment whose outcome is unknown is
/// looked up on the ledger by its memo before it is paid again, so it is never paid twice.
async fn buy(ctx: Context, sellers: Vec<Address>, mut rng: rand::rngs::StdRng) -> Purchase {
    let mut purchase = Purchase::default();
    let payment = format!("order of {}", ctx.address());
    for _ in 0..20 {
        let mut best: Option<(Address, Quote)> = None;
        for &seller in sellers.choose_multiple(&mut rng, 3) {
            match ctx.request::<Ask, Quote>(seller, Ask { item: "tea".into() }, Duration::from_secs(1)).await {
                Ok(quote) if best.as_ref().is_none_or(|(_, b)| quote.price < b.price) => best = Some((seller, quote)),
                Ok(_) => {}
                Err(_) => purchase.asks_failed += 1,
            }
        }
        let Some((seller, quote)) = best else {
            tokio::time::sleep(Duration::from_secs(rng.gen_range(2..5))).await;
            continue;
        };
        if !pay(&ctx, &quote, &payment, &mut purchase).await {
            tokio::time::sleep(Duration::from_secs(rng.gen_range(2..5))).await;
            continue;
        }
        for _ in 0..20 {
            // Sent again if it may not have arrived: the seller keeps an order once.
            if ctx.send(seller, Order { item: "tea".into(), payment: payment.clone() }).await.is_ok() {
                purchase.bought = Some((seller, quote.price));
                return purchase;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        return purchase;
    }
    purchase
}

/// Pays `quote` with a transfer whose memo is `payment`, unless one already landed. True
/// once the ledger holds it.
async fn pay(ctx: &Context, quote: &Quote, payment: &str, purchase: &mut Purchase) -> bool {
    let wallet = ctx.wallet().expect("a wallet");
    for _ in 0..20 {
        match wallet.transfer(quote.pay_to, quote.price, payment).await {
            Ok(_) => return true,
            Err(WalletError::Ledger(LedgerError::Unavailable(_))) => {
                purchase.payments_unknown += 1;
                // Applied or not: look it up once the ledger answers reads again.
                tokio::time::sleep(Duration::from_secs(2)).await;
                match wallet.history(100).await {
                    Ok(receipts) if receipts.iter().any(|r| r.tx.memo == payment) => return true,
                    _ => continue,
                }
            }
            Err(_) => return false,
        }
    }
    false
}
// ANCHOR_END: buyer

// ANCHOR: market
/// What goes wrong while the market trades.
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    /// The first half of the hosts cut off from the second, from 5 s to 20 s.
    partition: bool,
    /// The ledger unreachable from 10 s to 25 s, then applying payments whose answers are
    /// lost until 30 s.
    ledger_outage: bool,
}

/// A market on `hosts` hosts of 100 agents each, 10 sellers and 90 buyers per host, every
/// buyer funded with 1,000 on a ledger that fails as `faults` says, and the network cut as
/// they say.
async fn market(sim: &Sim, hosts: usize, faults: Faults) -> Market {
    sim.set_default_link(Link::with_latency(Duration::from_millis(5)).jitter(Duration::from_millis(20)).loss(0.01));
    let mint = Identity::from_seed("market mint");
    let ledger = Arc::new(MemoryLedger::new(Some(mint.address()), sim.clock()));
    let mut outages = Outages::none();
    if faults.ledger_outage {
        outages = outages.add(Duration::from_secs(10), Duration::from_secs(25), Outage::Unavailable).add(
            Duration::from_secs(25),
            Duration::from_secs(30),
            Outage::LostAnswers,
        );
    }
    let faulty: Arc<dyn Ledger> = Arc::new(FaultyLedger::new(sim, ledger.clone(), outages));
    let mut market = Market { ledger, hosts: Vec::new(), sellers: Vec::new(), buyers: Vec::new() };
    for h in 0..hosts {
        let host = sim.add_host_with(&format!("host {h}"), Config::default().with_ledger(faulty.clone())).unwrap();
        for s in 0..10 {
            let price = 100 + (h as u128 * 10 + s) % 37;
            market.sellers.push((host.clone(), host.add(seller(&format!("seller {h}.{s}"), price)).unwrap()));
        }
        for b in 0..90 {
            let name = format!("buyer {h}.{b}");
            market.buyers.push((host.clone(), host.add(Agent::builder(&name).seed(&name).build().unwrap()).unwrap()));
        }
        market.hosts.push(host);
    }
    let bank = Wallet::new(mint, market.ledger.clone());
    for (host, buyer) in &market.buyers {
        bank.mint(host.context(*buyer).unwrap().wallet().unwrap().address(), 1_000).await.unwrap();
    }
    if faults.partition {
        let (first, second) = market.hosts.split_at(hosts / 2);
        let (first, second): (Vec<&Host>, Vec<&Host>) = (first.iter().collect(), second.iter().collect());
        sim.partition(&first, &second, Duration::from_secs(5), Duration::from_secs(20));
    }
    market
}

/// The market's parts a test reads after trading.
struct Market {
    ledger: Arc<MemoryLedger>,
    hosts: Vec<Host>,
    sellers: Vec<(Host, Address)>,
    buyers: Vec<(Host, Address)>,
}

impl Market {
    /// Runs every buyer's errand at once, each from a random moment of the first 30 s.
    async fn trade(&self, sim: &Sim) -> Vec<Purchase> {
        let sellers: Vec<Address> = self.sellers.iter().map(|(_, seller)| *seller).collect();
        let mut errands = tokio::task::JoinSet::new();
        for (i, (host, buyer)) in self.buyers.iter().enumerate() {
            let (ctx, sellers) = (host.context(*buyer).unwrap(), sellers.clone());
            let mut rng = sim.rng(&format!("buyer {i}"));
            let start = Duration::from_millis(rng.gen_range(0..30_000));
            errands.spawn(async move {
                tokio::time::sleep(start).await;
                (i, buy(ctx, sellers, rng).await)
            });
        }
        let mut purchases = vec![Purchase::default(); self.buyers.len()];
        while let Some(done) = errands.join_next().await {
            let (i, purchase) = done.expect("an errand panicked");
            purchases[i] = purchase;
        }
        purchases
    }

    /// Checks the books: every buyer bought once and paid once, each seller kept one order
    /// per sale and was paid for each, and no token was made or lost.
    async fn check_the_books(&self, purchases: &[Purchase]) {
        for ((host, buyer), purchase) in self.buyers.iter().zip(purchases) {
            let (_, price) = purchase.bought.unwrap_or_else(|| panic!("{buyer} bought nothing: {purchase:?}"));
            let balance = host.context(*buyer).unwrap().wallet().unwrap().balance().await.unwrap();
            assert_eq!(balance, 1_000 - price, "{buyer} paid once");
        }
        for (host, seller) in &self.sellers {
            let sold: Vec<u128> = purchases
                .iter()
                .filter_map(|p| p.bought.filter(|(to, _)| to == seller).map(|(_, price)| price))
                .collect();
            assert_eq!(orders(host, *seller), sold.len(), "{seller} kept one order per sale");
            let earned = host.context(*seller).unwrap().wallet().unwrap().balance().await.unwrap();
            assert_eq!(earned, sold.iter().sum::<u128>(), "{seller} was paid for each");
        }
        assert_eq!(self.ledger.audit_total(), self.ledger.supply(), "nothing made or lost");
    }
}
// ANCHOR_END: market

// ANCHOR: thousand
#[tokio::test(start_paused = true)]
async fn a_thousand_agents_trade_and_the_books_balance() {
    let sim = Sim::new(Sim::seed_from_env(7)).without_trace();
    let market = market(&sim, 10, Faults::default()).await;
    let purchases = market.trade(&sim).await;
    market.check_the_books(&purchases).await;
    assert_eq!(purchases.iter().map(|p| p.payments_unknown).sum::<u32>(), 0, "the ledger was up");
    sim.shutdown().await;
}
// ANCHOR_END: thousand

// ANCHOR: faults
#[tokio::test(start_paused = true)]
async fn the_market_survives_a_partition_and_a_ledger_outage() {
    let sim = Sim::new(Sim::seed_from_env(7)).without_trace();
    let market = market(&sim, 10, Faults { partition: true, ledger_outage: true }).await;
    let purchases = market.trade(&sim).await;
    market.check_the_books(&purchases).await;
    // The faults were felt: asks across the cut failed, payments were left in doubt; and
    // still every buyer bought once, paid once, and the sellers kept their orders once.
    assert!(purchases.iter().map(|p| p.asks_failed).sum::<u32>() > 100);
    assert!(purchases.iter().map(|p| p.payments_unknown).sum::<u32>() > 100);
    let stats = sim.stats();
    assert!(stats.blocked > 0 && stats.lost > 0, "{stats:?}");
    sim.shutdown().await;
}
// ANCHOR_END: faults

// ANCHOR: same_seed
#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_market_event_for_event() {
    async fn run(seed: u64) -> (Vec<String>, Vec<Purchase>) {
        let sim = Sim::new(seed);
        let market = market(&sim, 4, Faults { partition: true, ledger_outage: true }).await;
        let purchases = market.trade(&sim).await;
        let trace = sim.trace();
        sim.shutdown().await;
        (trace, purchases)
    }
    let seed = Sim::seed_from_env(11);
    let (first, second) = (run(seed).await, run(seed).await);
    assert_eq!(first.0.join("\n"), second.0.join("\n"), "the same deliveries and outcomes, byte for byte");
    assert_eq!(first.1, second.1, "the same purchases");
    assert_ne!(first.0, run(seed + 1).await.0, "another seed, another run");
}
// ANCHOR_END: same_seed

/// Every Rust block of docs/simulation.md is one of the anchored parts of this file, as it
/// is compiled and run here.
#[test]
fn every_rust_block_of_the_chapter_is_compiled_here() {
    let source = include_str!("sim_tutorial.rs");
    let docs = include_str!("../../docs/simulation.md");
    let parts: Vec<&str> = source
        .split("// ANCHOR: ")
        .skip(1)
        .map(|part| {
            let code = &part[part.find('\n').unwrap() + 1..];
            &code[..code.find("// ANCHOR_END: ").unwrap()]
        })
        .collect();
    let blocks: Vec<&str> = docs.split("```rust\n").skip(1).map(|b| &b[..b.find("```").unwrap()]).collect();
    assert!(blocks.len() >= 5, "the tutorial's blocks: {}", blocks.len());
    for block in blocks {
        assert!(parts.contains(&block), "docs/simulation.md shows code not compiled here:\n{block}");
    }
}
