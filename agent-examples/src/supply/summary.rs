//! The end of a supply chain: what each part cost and when it arrived, every order and
//! reassignment, the total against the optimum (by brute force, for small instances), and
//! the invariants, checked against the suppliers' books and the ledger.

use std::fmt;

use agent_core::ledger::Ledger;
use agent_core::Address;
use serde::Serialize;

use super::optimum::{brute_force_search, lead_time, Objective};
use super::procure::Procurement;
use super::scenario::Scenario;
use super::supplier::SupplierBooks;
use crate::market::{Invariants, Table};

/// The best plan for the bill of materials, found by brute force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Optimum {
    /// Its cost.
    pub cost: u64,
    /// Its lead time, in hours.
    pub lead_time_hours: u32,
}

/// How a supply chain ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The manufacturer's procurement of each part, in BOM order.
    pub parts: Vec<Procurement>,
    /// Each supplier's books.
    pub suppliers: Vec<SupplierBooks>,
    /// What the manufacturer paid in all.
    pub total_cost: u64,
    /// When the last part arrived, in market hours.
    pub lead_time_hours: f64,
    /// The cheapest plan (then the fastest among the cheapest), if the instance is small
    /// enough to search: `Err` says why not.
    pub optimum: Result<Optimum, String>,
    /// Orders that failed and were placed again.
    pub reassigned: usize,
    /// Market time the run took, in hours.
    pub market_time_hours: f64,
    /// The invariants, checked.
    pub invariants: Invariants,
}

/// Checks the invariants and sums the chain up.
pub(super) async fn check(
    scenario: &Scenario,
    parts: Vec<Procurement>,
    suppliers: Vec<SupplierBooks>,
    manufacturer: Address,
    ledger: &dyn Ledger,
    market_time: std::time::Duration,
) -> Summary {
    let mut invariants = Invariants::default();
    let purchases: Vec<&Procurement> = parts.iter().chain(suppliers.iter().flat_map(|s| &s.purchases)).collect();

    // Delivered or cleanly reassigned: every failed order unpaid, and any shortfall only
    // where no supplier was left to quote.
    let mut unclean = Vec::new();
    let mut reassigned = 0;
    for purchase in &purchases {
        for order in &purchase.orders {
            if order.delivered_at_hours.is_err() {
                reassigned += 1;
                if order.paid {
                    unclean.push(format!(
                        "{} paid {} for a failed order of {}",
                        purchase.buyer, order.supplier, purchase.part
                    ));
                }
            }
        }
        if purchase.rounds_ran_out {
            unclean.push(format!("{}: {}", purchase.buyer, purchase.short.clone().unwrap_or_default()));
        }
    }
    let short: Vec<String> = parts.iter().filter_map(|p| p.short.clone()).collect();
    invariants.check(
        "every order delivered or cleanly reassigned",
        format!(
            "{} orders, {reassigned} reassigned, {} parts short (no supplier left)",
            purchases.iter().map(|p| p.orders.len()).sum::<usize>(),
            short.len()
        ),
        unclean,
    );

    let negative: Vec<String> = suppliers
        .iter()
        .filter(|s| s.lowest_inventory < 0)
        .map(|s| format!("{}'s stock went to {}", s.supplier, s.lowest_inventory))
        .collect();
    invariants.check("inventory never negative", format!("{} suppliers' stocks", suppliers.len()), negative);

    let mut over = Vec::new();
    for supplier in &suppliers {
        for (part, capacity) in &supplier.capacity {
            if capacity.peak > capacity.capacity || capacity.committed > capacity.capacity {
                over.push(format!(
                    "{} {part}: {} committed and held of {}",
                    supplier.supplier, capacity.peak, capacity.capacity
                ));
            }
        }
    }
    invariants.check("no supplier over capacity", format!("{} suppliers", suppliers.len()), over);

    // Every payment matches a delivery: each wallet holds its start, plus what it was
    // paid for deliveries, less what it paid for deliveries to it, and no escrow is open.
    let mut mismatched = Vec::new();
    let paid_for = |buyer: &str| purchases.iter().filter(|p| p.buyer == buyer).map(|p| p.cost()).sum::<u64>();
    let earned = |supplier: &str| {
        purchases
            .iter()
            .flat_map(|p| &p.orders)
            .filter(|o| o.supplier == supplier && o.paid)
            .map(|o| o.units * o.unit_price)
            .sum::<u64>()
    };
    for order in purchases.iter().flat_map(|p| &p.orders) {
        if order.paid && order.delivered_at_hours.is_err() {
            mismatched.push(format!("{} was paid for an order it did not deliver", order.supplier));
        }
    }
    let mut wallets = vec![(super::scenario::MANUFACTURER.to_owned(), Some(manufacturer), scenario.manufacturer_funds)];
    wallets.extend(suppliers.iter().map(|s| (s.supplier.clone(), s.wallet, scenario.supplier_funds)));
    let mut held = 0u128;
    for (name, wallet, funds) in &wallets {
        let Some(wallet) = wallet else {
            mismatched.push(format!("{name} has no wallet"));
            continue;
        };
        let balance = ledger.balance(*wallet).await.unwrap_or(0);
        held += balance;
        let expected = u128::from(*funds) + u128::from(earned(name))
            - u128::from(paid_for(name)).min(u128::from(*funds) + u128::from(earned(name)));
        if balance != expected {
            mismatched.push(format!("{name} holds {balance}, its deliveries say {expected}"));
        }
        if ledger.open_escrows(*wallet, 1).await.map_or(true, |e| !e.is_empty()) {
            mismatched.push(format!("{name} still has an escrow open"));
        }
    }
    invariants.check("every payment matches a delivery", format!("{} wallets", wallets.len()), mismatched);

    let minted =
        u128::from(scenario.manufacturer_funds) + u128::from(scenario.supplier_funds) * suppliers.len() as u128;
    let conserved = match held == minted {
        true => Vec::new(),
        false => vec![format!("{minted} minted, {held} in wallets")],
    };
    invariants.check("money conserved", format!("{minted} in wallets"), conserved);

    let optimum = brute_force_search(&scenario.bom, &scenario.suppliers, Objective::CostThenLeadTime)
        .map(|(plan, cost, _)| Optimum { cost, lead_time_hours: lead_time(&plan) })
        .map_err(|e| e.to_string());
    let total_cost = parts.iter().map(Procurement::cost).sum();
    let lead_time_hours = parts.iter().map(Procurement::lead_time_hours).fold(0.0, f64::max);
    Summary {
        parts,
        suppliers,
        total_cost,
        lead_time_hours,
        optimum,
        reassigned,
        market_time_hours: scenario.terms.hours_in(market_time.as_millis() as u64),
        invariants,
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Table::new(["part", "needed", "delivered", "cost", "arrived (h)", "orders"]);
        for p in &self.parts {
            let orders: Vec<String> = p
                .orders
                .iter()
                .map(|o| {
                    let outcome = if o.delivered_at_hours.is_ok() { "" } else { " FAILED" };
                    format!("{}x{}@{}{outcome}", o.supplier, o.units, o.unit_price)
                })
                .collect();
            parts.row([
                p.part.clone(),
                p.quantity.to_string(),
                p.delivered.to_string(),
                p.cost().to_string(),
                format!("{:.1}", p.lead_time_hours()),
                orders.join(", "),
            ]);
        }
        writeln!(f, "Parts ({} orders failed and were placed again)", self.reassigned)?;
        write!(f, "{parts}")?;
        let mut suppliers = Table::new(["supplier", "delivered", "failed", "bought from tier 2"]);
        for s in &self.suppliers {
            let bought: Vec<String> = s.purchases.iter().map(|p| format!("{} {}", p.delivered, p.part)).collect();
            suppliers.row([
                s.supplier.clone(),
                s.deliveries.iter().map(|d| d.units).sum::<u64>().to_string(),
                s.failures.to_string(),
                bought.join(", "),
            ]);
        }
        writeln!(f, "\nSuppliers")?;
        write!(f, "{suppliers}")?;
        writeln!(f, "\nTotal: cost {}, lead time {:.1} h", self.total_cost, self.lead_time_hours)?;
        match &self.optimum {
            Ok(best) => writeln!(
                f,
                "Optimum (brute force, no failures): cost {}, lead time {} h; this run: {:.2}x the cost",
                best.cost,
                best.lead_time_hours,
                self.total_cost as f64 / best.cost.max(1) as f64
            )?,
            Err(why) => writeln!(f, "Optimum not computed: {why}")?,
        }
        writeln!(f, "\nInvariants (market time {:.1} h)", self.market_time_hours)?;
        write!(f, "{}", self.invariants.table())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supply::{Capacity, Order};

    #[tokio::test]
    async fn each_broken_invariant_is_reported() {
        let scenario = Scenario::built_in().unwrap();
        let mint = agent_core::Identity::from_seed("mint");
        let ledger = agent_core::ledger::MemoryLedger::new(Some(mint.address()), agent_core::envelope::unix_now_ms);
        let manufacturer = agent_core::Identity::from_seed("m").address();
        let supplier = agent_core::Identity::from_seed("s").address();
        let faucet = agent_core::Wallet::new(mint, std::sync::Arc::new(ledger.clone()));
        faucet.mint(manufacturer, 10).await.unwrap();
        let failed_but_paid = Order {
            supplier: "frameworks".into(),
            address: supplier,
            round: 1,
            units: 4,
            unit_price: 120,
            lead_time_hours: 24,
            delivered_at_hours: Err("broke down".into()),
            paid: true,
        };
        let frame = Procurement {
            buyer: super::super::MANUFACTURER.into(),
            part: "frame".into(),
            quantity: 6,
            delivered: 0,
            orders: vec![failed_but_paid],
            short: Some("6 of frame still missing after 10 rounds".into()),
            rounds_ran_out: true,
        };
        let over = Capacity { capacity: 4, committed: 4, held: 1, peak: 5 };
        let books = SupplierBooks {
            supplier: "frameworks".into(),
            wallet: Some(supplier),
            capacity: [("frame".to_owned(), over)].into(),
            lowest_inventory: -2,
            ..SupplierBooks::default()
        };
        let summary =
            check(&scenario, vec![frame], vec![books], manufacturer, &ledger, std::time::Duration::ZERO).await;
        let broken: Vec<&str> = summary.invariants.broken().iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            broken,
            [
                "every order delivered or cleanly reassigned",
                "inventory never negative",
                "no supplier over capacity",
                "every payment matches a delivery",
                "money conserved",
            ]
        );
    }
}
