//! A supplier: a contract-net participant quoting what it can make of a part from its
//! free capacity (held while the quote stands), and, when awarded, buying the sub-parts
//! of an assembly from tier-2 suppliers, working its lead time, and delivering, or
//! failing at random (seeded) so the buyer places the order elsewhere.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use agent_core::{Address, Context};
use agent_protocols::contract_net::{Book, Participant, Unperformed};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::bom::{effective_lead_time, SupplierSpec};
use super::procure::{procure, Delivery, PartOrder, Prefer, Procurement, Quote};
use super::scenario::Scenario;

/// One part's capacity at a supplier.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema,
)]
pub struct Capacity {
    /// Units it can make in all.
    pub capacity: u64,
    /// Units awarded (made, being made, or failed and given back).
    pub committed: u64,
    /// Units held for quotes not yet accepted or released.
    pub held: u64,
    /// The most units committed and held at one instant.
    pub peak: u64,
}

/// What a supplier's books show at the end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema, agent_core::Message)]
#[message(name = "agora.demo.supply.SupplierBooks")]
pub struct SupplierBooks {
    /// The supplier.
    pub supplier: String,
    /// Its wallet.
    pub wallet: Option<Address>,
    /// Capacity per part.
    pub capacity: BTreeMap<String, Capacity>,
    /// Sub-parts in stock per part (bought, less used or wasted).
    pub inventory: BTreeMap<String, i128>,
    /// The lowest stock any sub-part ever had (never below zero).
    pub lowest_inventory: i128,
    /// What it delivered.
    pub deliveries: Vec<Delivery>,
    /// Orders it failed.
    pub failures: u64,
    /// What it bought from tier 2.
    pub purchases: Vec<Procurement>,
    /// Whether it was still working on an award when the books were read.
    pub working: bool,
}

/// Asks a supplier for its books.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::Message)]
#[message(name = "agora.demo.supply.BooksRequest")]
pub struct BooksRequest;

/// A supplier's state, shared with whoever reports on the market.
pub struct Supplier {
    spec: SupplierSpec,
    scenario: Arc<Scenario>,
    rng: Mutex<rand::rngs::StdRng>,
    started_ms: u64,
    /// The agent's context once it runs, to buy sub-parts from its own address.
    pub(super) context: OnceLock<Context>,
    /// Its book as a buyer of sub-parts.
    pub(super) buying: Book,
    directory: Arc<dyn almanac::Directory>,
    books: Mutex<SupplierBooks>,
    /// Awards being worked on (a supplier may still be buying sub-parts after its buyer
    /// gave up waiting).
    working: std::sync::atomic::AtomicUsize,
}

impl Supplier {
    /// A supplier of `spec`, drawing its failures from `rng`.
    pub fn new(
        spec: &SupplierSpec,
        scenario: Arc<Scenario>,
        rng: rand::rngs::StdRng,
        directory: Arc<dyn almanac::Directory>,
        started_ms: u64,
    ) -> Arc<Supplier> {
        let capacity = spec
            .offers
            .iter()
            .map(|o| (o.part.clone(), Capacity { capacity: o.capacity, ..Capacity::default() }))
            .collect();
        let books = SupplierBooks { supplier: spec.name.clone(), capacity, ..SupplierBooks::default() };
        Arc::new(Supplier {
            spec: spec.clone(),
            scenario,
            rng: Mutex::new(rng),
            started_ms,
            context: OnceLock::new(),
            buying: Book::default(),
            directory,
            books: Mutex::new(books),
            working: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Whether it is working on an award.
    pub fn is_working(&self) -> bool {
        self.working.load(std::sync::atomic::Ordering::SeqCst) > 0
    }

    /// Its books as they stand.
    pub fn books(&self) -> SupplierBooks {
        let mut books = self.books.lock().clone();
        books.working = self.is_working();
        books.wallet = self.context.get().and_then(|ctx| ctx.wallet().ok()).map(|w| w.address());
        books
    }

    fn stock(&self, part: &str, change: i128) {
        let mut books = self.books.lock();
        let stock = books.inventory.entry(part.to_owned()).or_default();
        *stock += change;
        let now = *stock;
        books.lowest_inventory = books.lowest_inventory.min(now);
    }

    fn give_back(&self, part: &str, units: u64) {
        if let Some(capacity) = self.books.lock().capacity.get_mut(part) {
            capacity.committed = capacity.committed.saturating_sub(units);
        }
    }

    async fn make(&self, quote: &Quote) -> Result<Delivery, Unperformed> {
        let part = self
            .scenario
            .part(&quote.part)
            .ok_or_else(|| Unperformed::Failed(format!("unknown part {}", quote.part)))?;
        let offer = self.spec.offer(&quote.part).ok_or_else(|| Unperformed::Failed("not offered".into()))?;
        // Sub-parts first, from tier 2, all at once.
        if !part.sub_parts.is_empty() {
            let ctx = self.context.get().ok_or_else(|| Unperformed::Failed("not running".into()))?;
            let buys = part.sub_parts.iter().map(|sub| {
                let units = quote.units.saturating_mul(sub.quantity);
                procure(
                    ctx,
                    &self.buying,
                    self.directory.as_ref(),
                    &sub.name,
                    units,
                    Prefer::Fastest,
                    &self.scenario.terms,
                )
            });
            let bought = futures::future::join_all(buys).await;
            let mut missing = None;
            for purchase in &bought {
                self.stock(&purchase.part, i128::from(purchase.delivered));
                if purchase.delivered < purchase.quantity {
                    missing = Some(format!(
                        "no {} to build with: {}",
                        purchase.part,
                        purchase.short.clone().unwrap_or_default()
                    ));
                }
            }
            self.books.lock().purchases.extend(bought);
            if let Some(why) = missing {
                return Err(Unperformed::Failed(why));
            }
        }
        tokio::time::sleep(self.scenario.terms.hours(u64::from(offer.lead_time_hours))).await;
        // The sub-parts are used up whether the work succeeds or fails.
        for sub in &part.sub_parts {
            self.stock(&sub.name, -i128::from(quote.units.saturating_mul(sub.quantity)));
        }
        let fails = self.spec.fails(&mut *self.rng.lock());
        if fails {
            return Err(Unperformed::Failed(format!(
                "{} could not make {} {}",
                self.spec.name, quote.units, quote.part
            )));
        }
        let at_hours =
            self.scenario.terms.hours_in(agent_core::envelope::unix_now_ms().saturating_sub(self.started_ms));
        Ok(Delivery { part: quote.part.clone(), units: quote.units, unit_price: quote.unit_price, at_hours })
    }
}

#[async_trait::async_trait]
impl Participant for Supplier {
    type Task = PartOrder;
    type Proposal = Quote;
    type Result = Delivery;

    async fn evaluate(&self, _initiator: Address, order: PartOrder) -> Option<(Quote, Option<u64>)> {
        let offer = self.spec.offer(&order.part)?;
        let part = self.scenario.part(&order.part)?;
        let lead_time_hours = effective_lead_time(part, offer.lead_time_hours, &self.scenario.suppliers)?;
        let mut books = self.books.lock();
        let capacity = books.capacity.get_mut(&order.part)?;
        let free = capacity.capacity.saturating_sub(capacity.committed.saturating_add(capacity.held));
        let units = order.units.min(free);
        if units == 0 {
            return None;
        }
        capacity.held += units;
        capacity.peak = capacity.peak.max(capacity.committed + capacity.held);
        let quote = Quote {
            supplier: self.spec.name.clone(),
            part: order.part,
            units,
            unit_price: offer.price_per_unit,
            lead_time_hours,
        };
        Some((quote, None))
    }

    /// What the manufacturer locks for it (`procure`'s price of a quote).
    fn price(&self, quote: &Quote) -> Option<u128> {
        Some(u128::from(quote.units.saturating_mul(quote.unit_price)))
    }

    async fn perform(&self, _initiator: Address, quote: Quote) -> Result<Delivery, Unperformed> {
        {
            let mut books = self.books.lock();
            let Some(capacity) = books.capacity.get_mut(&quote.part) else {
                return Err(Unperformed::Failed("not offered".into()));
            };
            capacity.held = capacity.held.saturating_sub(quote.units);
            capacity.committed += quote.units;
            capacity.peak = capacity.peak.max(capacity.committed + capacity.held);
        }
        self.working.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let made = self.make(&quote).await;
        self.working.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        match made {
            Ok(delivery) => {
                self.books.lock().deliveries.push(delivery.clone());
                Ok(delivery)
            }
            Err(why) => {
                // What it could not make can be quoted again.
                self.give_back(&quote.part, quote.units);
                self.books.lock().failures += 1;
                Err(why)
            }
        }
    }

    async fn release(&self, _initiator: Address, quote: Quote) {
        if let Some(capacity) = self.books.lock().capacity.get_mut(&quote.part) {
            capacity.held = capacity.held.saturating_sub(quote.units);
        }
    }
}
