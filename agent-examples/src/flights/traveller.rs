//! A traveller's shopping: find the airlines flying its route in the almanac, call them
//! for proposals (contract-net), accept the cheapest within budget, pay it through escrow
//! keyed by the dialogue, and keep the ticket. A round that fails for want of answers or
//! of the ledger is tried again after a pause, a few times.

use std::time::Duration;

use agent_core::{Address, Context};
use agent_protocols::contract_net::{self, Book, Called, Paid};
use serde::Serialize;

use super::airline::{Offer, Ticket, Trip};
use super::scenario::{Terms, TravellerSpec};

/// The almanac attribute an airline flying `route` registers with.
pub fn route_attribute(route: &str) -> String {
    format!("route.{route}")
}

/// How a traveller's shopping ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shopping {
    /// The traveller.
    pub name: String,
    /// Its agent.
    pub address: Address,
    /// Its wallet.
    pub wallet: Option<Address>,
    /// What it wanted.
    pub route: String,
    /// Seats wanted.
    pub seats: u32,
    /// Its budget, in cents.
    pub budget: u64,
    /// The booking, if it got one.
    pub booking: Option<Booked>,
    /// Why it has none.
    pub why_not: Option<String>,
    /// Rounds of contract-net it ran.
    pub rounds: u32,
}

impl Shopping {
    /// A traveller that got nothing, and why.
    pub fn closed(traveller: &TravellerSpec, ctx: &Context, why: &str) -> Shopping {
        Shopping {
            name: traveller.name.clone(),
            address: ctx.address(),
            wallet: ctx.wallet().ok().map(|w| w.address()),
            route: traveller.route.clone(),
            seats: traveller.seats,
            budget: traveller.budget,
            booking: None,
            why_not: Some(why.into()),
            rounds: 0,
        }
    }
}

#[cfg(test)]
impl Shopping {
    /// A traveller with no booking, for tests of the checks.
    pub(crate) fn closed_for_test(traveller: &TravellerSpec, address: Address) -> Shopping {
        Shopping {
            name: traveller.name.clone(),
            address,
            wallet: None,
            route: traveller.route.clone(),
            seats: traveller.seats,
            budget: traveller.budget,
            booking: None,
            why_not: None,
            rounds: 0,
        }
    }
}

/// A traveller's booking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Booked {
    /// The airline.
    pub airline: String,
    /// Its agent.
    pub airline_address: Address,
    /// The ticket.
    pub ticket: Ticket,
    /// Whether the escrow was released to the airline (paid).
    pub paid: bool,
}

/// Shops for `traveller`'s trip from the agent behind `ctx`. Never fails: what went
/// wrong is the [`Shopping::why_not`].
pub async fn shop(
    ctx: &Context,
    book: &Book,
    directory: &dyn almanac::Directory,
    traveller: &TravellerSpec,
    terms: &Terms,
) -> Shopping {
    let mut shopping = Shopping::closed(traveller, ctx, "");
    for attempt in 0..terms.attempts {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(terms.retry_ms)).await;
        }
        shopping.rounds += 1;
        match round(ctx, book, directory, traveller, terms).await {
            Round::Booked(booked) => {
                shopping.booking = Some(booked);
                shopping.why_not = None;
                return shopping;
            }
            Round::Final(why) => {
                shopping.why_not = Some(why);
                return shopping;
            }
            Round::Retry(why) => shopping.why_not = Some(why),
        }
    }
    shopping
}

enum Round {
    Booked(Booked),
    /// Trying again will not help.
    Final(String),
    Retry(String),
}

async fn round(
    ctx: &Context,
    book: &Book,
    directory: &dyn almanac::Directory,
    traveller: &TravellerSpec,
    terms: &Terms,
) -> Round {
    let attribute = route_attribute(&traveller.route);
    let speaking = contract_net::protocol::<Trip, Offer, Ticket>().digest();
    let airlines = match contract_net::find_participants(directory, speaking, &[(&attribute, "yes")], 1_000).await {
        Ok(airlines) if airlines.is_empty() => return Round::Final(format!("no airline flies {}", traveller.route)),
        Ok(airlines) => airlines,
        Err(e) => return Round::Retry(format!("the almanac could not be asked: {}", agent_core::error::chain(&e))),
    };
    let trip = Trip { route: traveller.route.clone(), seats: traveller.seats };
    let call_for = Duration::from_millis(terms.call_ms);
    let called: Called<Offer> = match contract_net::call(ctx, book, &airlines, &trip, call_for).await {
        Ok(called) => called,
        Err(e) => return Round::Retry(format!("the call failed: {}", agent_core::error::chain(&e))),
    };
    // Whole groups only, within budget, cheapest first (the earlier proposal on a tie).
    let best = called
        .proposals
        .iter()
        .filter(|p| p.proposal.seats == traveller.seats && p.proposal.price <= traveller.budget)
        .min_by_key(|p| p.proposal.price);
    let winners: Vec<Address> = best.map(|p| p.from).into_iter().collect();
    let perform = Duration::from_millis(terms.perform_ms);
    let paid =
        contract_net::award_and_pay::<Offer, Ticket>(ctx, book, &called, &winners, |o| o.price.into(), perform).await;
    let cheapest = called.proposals.iter().map(|p| p.proposal.price).min();
    match paid {
        Err(e) => Round::Retry(format!("the award failed: {}", agent_core::error::chain(&e))),
        Ok(Paid::NoProposals) if !called.silent.is_empty() => {
            Round::Retry(format!("{} airlines did not answer", called.silent.len()))
        }
        Ok(Paid::NoProposals) => Round::Retry(format!("no seats free on {}", traveller.route)),
        Ok(Paid::NoneChosen) => {
            let cheapest = cheapest.map(|c| crate::market::cents(c.into())).unwrap_or_default();
            Round::Final(format!("no offer within budget (cheapest {cheapest})"))
        }
        Ok(Paid::Settled(settlements)) => {
            let Some(settlement) = settlements.into_iter().next() else {
                return Round::Retry("the award was not settled".into());
            };
            let airline = best.map(|p| p.proposal.airline.clone()).unwrap_or_default();
            match settlement.result {
                Ok(ticket) => {
                    Round::Booked(Booked { airline, airline_address: settlement.winner, ticket, paid: settlement.paid })
                }
                Err(why) => Round::Retry(format!("{airline} did not book: {why}")),
            }
        }
    }
}
