//! Buying a part by contract-net, as the manufacturer buys parts and tier-1 suppliers buy
//! sub-parts: find the part's suppliers in the almanac, call them for quotes, accept the
//! cheapest that fit what is still needed, pay each through escrow on delivery, and place
//! what failed again with the others, round after round.

use std::collections::BTreeSet;
use std::time::Duration;

use agent_core::{Address, Context};
use agent_protocols::contract_net::{self, Book, Paid};
use serde::{Deserialize, Serialize};

use super::scenario::Terms;

/// A call for quotes: `units` of `part`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema)]
pub struct PartOrder {
    /// The part.
    pub part: String,
    /// Units still needed.
    pub units: u64,
}

/// A supplier's quote, binding if accepted: it holds the capacity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema)]
pub struct Quote {
    /// The supplier.
    pub supplier: String,
    /// The part.
    pub part: String,
    /// Units it will make (at most what was asked).
    pub units: u64,
    /// Price per unit.
    pub unit_price: u64,
    /// Hours from the award to delivery, sub-parts included.
    pub lead_time_hours: u32,
}

/// What a supplier reports when it delivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema)]
pub struct Delivery {
    /// The part.
    pub part: String,
    /// Units delivered.
    pub units: u64,
    /// Price per unit.
    pub unit_price: u64,
    /// Market hours since the start when it was delivered.
    pub at_hours: f64,
}

/// One order placed with a supplier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema)]
pub struct Order {
    /// The supplier.
    pub supplier: String,
    /// Its agent.
    pub address: Address,
    /// The round it was placed in (from 1).
    pub round: u32,
    /// Units ordered.
    pub units: u64,
    /// Price per unit.
    pub unit_price: u64,
    /// Quoted lead time.
    pub lead_time_hours: u32,
    /// When it was delivered (market hours), or why not.
    pub delivered_at_hours: Result<f64, String>,
    /// Whether the escrow was released to the supplier.
    pub paid: bool,
}

/// How buying one part went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema)]
pub struct Procurement {
    /// The buyer.
    pub buyer: String,
    /// The part.
    pub part: String,
    /// Units needed.
    pub quantity: u64,
    /// Units delivered.
    pub delivered: u64,
    /// Every order placed, in order.
    pub orders: Vec<Order>,
    /// Why some units are missing, if they are.
    pub short: Option<String>,
    /// Whether the rounds ran out while suppliers were still quoting (a shortfall the
    /// buyer could have avoided with more rounds).
    pub rounds_ran_out: bool,
}

impl Procurement {
    /// What was paid for it.
    pub fn cost(&self) -> u64 {
        self.orders.iter().filter(|o| o.paid).map(|o| o.units.saturating_mul(o.unit_price)).sum()
    }

    /// When its last unit arrived, in market hours.
    pub fn lead_time_hours(&self) -> f64 {
        self.orders.iter().filter_map(|o| o.delivered_at_hours.as_ref().ok().copied()).fold(0.0, f64::max)
    }
}

/// The almanac attribute of suppliers of `part`.
pub fn part_attribute(part: &str) -> String {
    format!("part.{part}")
}

/// Which quotes a buyer takes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefer {
    /// The cheapest, then the fastest: the manufacturer.
    Cheapest,
    /// The fastest, then the cheapest: a supplier buying sub-parts for a lead time it
    /// has promised.
    Fastest,
}

/// Buys `quantity` of `part` for the agent behind `ctx`. Never fails: what went wrong is
/// in the [`Procurement`].
pub async fn procure(
    ctx: &Context,
    book: &Book,
    directory: &dyn almanac::Directory,
    part: &str,
    quantity: u64,
    prefer: Prefer,
    terms: &Terms,
) -> Procurement {
    let mut procurement = Procurement {
        buyer: ctx.name().to_owned(),
        part: part.to_owned(),
        quantity,
        delivered: 0,
        orders: Vec::new(),
        short: None,
        rounds_ran_out: false,
    };
    let mut failed: BTreeSet<Address> = BTreeSet::new();
    for round in 1..=terms.rounds {
        let remaining = quantity.saturating_sub(procurement.delivered);
        if remaining == 0 {
            return procurement;
        }
        if terms.closes_at_ms.is_some_and(|closes| agent_core::envelope::unix_now_ms() >= closes) {
            procurement.short = Some(format!("the market closed with {remaining} of {part} missing"));
            return procurement;
        }
        let attribute = part_attribute(part);
        let speaking = contract_net::protocol::<PartOrder, Quote, Delivery>().digest();
        let suppliers = match contract_net::find_participants(directory, speaking, &[(&attribute, "yes")], 1_000).await
        {
            Ok(found) => found.into_iter().filter(|s| !failed.contains(s)).collect::<Vec<_>>(),
            Err(e) => {
                procurement.short = Some(format!("the almanac could not be asked: {}", agent_core::error::chain(&e)));
                tokio::time::sleep(terms.hours(1)).await;
                continue;
            }
        };
        if suppliers.is_empty() {
            procurement.short = Some(format!("no supplier of {part} is left"));
            return procurement;
        }
        let order = PartOrder { part: part.to_owned(), units: remaining };
        let called =
            match contract_net::call::<_, Quote>(ctx, book, &suppliers, &order, Duration::from_millis(terms.call_ms))
                .await
            {
                Ok(called) => called,
                Err(e) => {
                    procurement.short = Some(format!("the call failed: {}", agent_core::error::chain(&e)));
                    continue;
                }
            };
        // Best first (then by name), as long as they fit what is needed: a quote too big
        // for the rest is asked again next round for exactly the rest.
        let mut quotes: Vec<_> =
            called.proposals.iter().filter(|p| p.proposal.part == part && p.proposal.units > 0).collect();
        quotes.sort_by(|a, b| {
            let key = |p: &&contract_net::Proposal<Quote>| {
                let (price, lead) = (p.proposal.unit_price, u64::from(p.proposal.lead_time_hours));
                let rank = match prefer {
                    Prefer::Cheapest => (price, lead),
                    Prefer::Fastest => (lead, price),
                };
                (rank, p.proposal.supplier.clone())
            };
            key(a).cmp(&key(b))
        });
        let mut covered = 0u64;
        let mut winners = Vec::new();
        for quote in quotes {
            if covered.saturating_add(quote.proposal.units) <= remaining {
                covered += quote.proposal.units;
                winners.push(quote.from);
            }
        }
        if winners.is_empty() {
            if called.proposals.is_empty() {
                procurement.short = Some(format!("no supplier quoted for the last {remaining} of {part}"));
                // Nobody has capacity now; those who failed are out for good.
                return procurement;
            }
            continue;
        }
        let longest = called
            .proposals
            .iter()
            .filter(|p| winners.contains(&p.from))
            .map(|p| p.proposal.lead_time_hours)
            .max()
            .unwrap_or(0);
        let perform = terms.hours(u64::from(longest.saturating_add(terms.grace_hours)));
        let price_of = |q: &Quote| u128::from(q.units.saturating_mul(q.unit_price));
        let settled =
            match contract_net::award_and_pay::<Quote, Delivery>(ctx, book, &called, &winners, price_of, perform).await
            {
                Ok(Paid::Settled(settled)) => settled,
                Ok(_) => continue,
                Err(e) => {
                    procurement.short = Some(format!("the award failed: {}", agent_core::error::chain(&e)));
                    continue;
                }
            };
        for settlement in settled {
            let Some(quote) = called.proposals.iter().find(|p| p.from == settlement.winner).map(|p| &p.proposal) else {
                continue;
            };
            let delivered_at_hours = match settlement.result {
                Ok(delivery) if delivery.units == quote.units && delivery.part == part => {
                    procurement.delivered += delivery.units;
                    Ok(delivery.at_hours)
                }
                Ok(delivery) => {
                    failed.insert(settlement.winner);
                    Err(format!(
                        "delivered {} of {} instead of {} of {part}",
                        delivery.units, delivery.part, quote.units
                    ))
                }
                Err(why) => {
                    failed.insert(settlement.winner);
                    Err(why.to_string())
                }
            };
            procurement.orders.push(Order {
                supplier: quote.supplier.clone(),
                address: settlement.winner,
                round,
                units: quote.units,
                unit_price: quote.unit_price,
                lead_time_hours: quote.lead_time_hours,
                delivered_at_hours,
                paid: settlement.paid,
            });
        }
    }
    let remaining = quantity.saturating_sub(procurement.delivered);
    if remaining > 0 {
        procurement.rounds_ran_out = true;
        procurement.short = Some(format!("{remaining} of {part} still missing after {} rounds", terms.rounds));
    }
    procurement
}
