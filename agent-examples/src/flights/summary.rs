//! The end of a flight market: what each traveller got, seats sold per flight, revenue per
//! airline, and the market's invariants, checked against the airlines' books and the
//! ledger.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use agent_core::ledger::Ledger;
use agent_core::Address;
use serde::{Deserialize, Serialize};

use super::airline::Flight;
use super::scenario::Scenario;
use super::traveller::Shopping;
use crate::market::{cents, Invariants, Table};

/// How a flight market ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Each traveller's booking or why none, in scenario order.
    pub travellers: Vec<Shopping>,
    /// Each flight's sales.
    pub flights: Vec<FlightLine>,
    /// Each airline's revenue.
    pub airlines: Vec<AirlineLine>,
    /// Market time the run took, in ms.
    pub market_time_ms: u64,
    /// The invariants, checked.
    pub invariants: Invariants,
}

/// One flight's sales.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlightLine {
    /// The flight.
    pub flight: String,
    /// Its airline.
    pub airline: String,
    /// Its route.
    pub route: String,
    /// Seats for sale.
    pub seats: u32,
    /// Seats sold.
    pub sold: u32,
    /// The most seats sold and held at one instant.
    pub peak_committed: u32,
    /// Seats still held at the end (none: every hold ends released or booked).
    pub held: u32,
}

/// One airline's revenue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AirlineLine {
    /// The airline.
    pub airline: String,
    /// Bookings it issued.
    pub bookings: usize,
    /// The sum of their prices, in cents.
    pub booked: u64,
    /// Its balance on the ledger, in cents: what it was paid.
    pub balance: u128,
}

/// An airline's books at the end of a market, as it reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::Message)]
#[message(name = "agora.demo.flights.Books")]
pub struct Books {
    /// The airline.
    pub airline: String,
    /// Its wallet.
    pub wallet: Address,
    /// Its flights.
    pub flights: Vec<Flight>,
}

/// Checks the market's invariants against the airlines' books and the ledger, and sums
/// it up. `travellers` is in scenario order.
pub async fn check(
    scenario: &Scenario,
    travellers: &[Shopping],
    airlines: &[Books],
    ledger: &dyn Ledger,
    market_time: Duration,
) -> Summary {
    let mut invariants = Invariants::default();
    let mut flights = Vec::new();
    let mut airline_lines = Vec::new();
    let mut bookings = Vec::new();
    let mut seat_violations = Vec::new();
    let mut over_violations = Vec::new();
    let mut held_violations = Vec::new();
    for airline in airlines {
        let mut line = AirlineLine { airline: airline.airline.clone(), bookings: 0, booked: 0, balance: 0 };
        line.balance = ledger.balance(airline.wallet).await.unwrap_or(0);
        for flight in &airline.flights {
            let mut seats_taken = BTreeSet::new();
            for booking in &flight.bookings {
                for seat in &booking.ticket.seat_numbers {
                    if !seats_taken.insert(*seat) || *seat == 0 || *seat > flight.spec.seats {
                        seat_violations.push(format!("seat {seat} of {} sold twice or out of range", flight.spec.id));
                    }
                }
                line.bookings += 1;
                line.booked += booking.ticket.price;
                bookings.push((airline.airline.clone(), booking.clone()));
            }
            if flight.peak_committed > flight.spec.seats || flight.sold > flight.spec.seats {
                over_violations.push(format!(
                    "{}: {} seats, {} sold, {} sold and held at the peak",
                    flight.spec.id, flight.spec.seats, flight.sold, flight.peak_committed
                ));
            }
            if flight.held > 0 {
                held_violations.push(format!("{}: {} seats still held", flight.spec.id, flight.held));
            }
            flights.push(FlightLine {
                flight: flight.spec.id.clone(),
                airline: airline.airline.clone(),
                route: flight.spec.route.clone(),
                seats: flight.spec.seats,
                sold: flight.sold,
                peak_committed: flight.peak_committed,
                held: flight.held,
            });
        }
        airline_lines.push(line);
    }
    let total_seats: u32 = flights.iter().map(|f| f.seats).sum();
    invariants.check("no seat sold twice", format!("{} bookings", bookings.len()), seat_violations);
    invariants.check(
        "bookings per flight never exceed seats, holds included at every instant",
        format!("{} flights, {total_seats} seats", flights.len()),
        over_violations,
    );

    // Travellers and airlines agree on every booking, and groups are whole.
    let by_reference: BTreeMap<&str, &Shopping> =
        travellers.iter().filter_map(|t| t.booking.as_ref().map(|b| (b.ticket.reference.as_str(), t))).collect();
    let mut partial = Vec::new();
    let mut disagreements = Vec::new();
    for (airline, booking) in &bookings {
        match by_reference.get(booking.ticket.reference.as_str()) {
            Some(t) if t.address == booking.traveller => {
                if booking.ticket.seat_numbers.len() != t.seats as usize {
                    partial.push(format!("{} got {} of {} seats", t.name, booking.ticket.seat_numbers.len(), t.seats));
                }
            }
            _ => disagreements.push(format!("{airline} issued {} that no traveller holds", booking.ticket.reference)),
        }
    }
    invariants.check(
        "every hold released or booked by the end (rejected and expired holds are released)",
        format!("{} flights", flights.len()),
        held_violations,
    );
    invariants.check("no partial group booking", format!("{} group bookings", bookings.len()), partial);

    // Money: every traveller paid exactly its booking's price, or nothing.
    let mut charged_wrongly = Vec::new();
    let mut open = Vec::new();
    let mut unpaid = Vec::new();
    for (traveller, spec) in travellers.iter().zip(&scenario.travellers) {
        let Some(wallet) = traveller.wallet else {
            charged_wrongly.push(format!("{} has no wallet", traveller.name));
            continue;
        };
        let balance = ledger.balance(wallet).await.unwrap_or(0);
        let spent = u128::from(spec.funds).saturating_sub(balance);
        let owed = traveller.booking.as_ref().filter(|b| b.paid).map_or(0, |b| u128::from(b.ticket.price));
        if spent != owed || balance > u128::from(spec.funds) {
            charged_wrongly.push(format!("{} was charged {} for {}", traveller.name, cents(spent), cents(owed)));
        }
        match ledger.open_escrows(wallet, 10).await {
            Ok(escrows) if escrows.is_empty() => {}
            Ok(escrows) => open.push(format!("{} still has {} escrows locked", traveller.name, escrows.len())),
            Err(e) => open.push(format!("{}'s escrows cannot be read: {e}", traveller.name)),
        }
        if traveller.booking.as_ref().is_some_and(|b| !b.paid) {
            unpaid.push(format!("{}'s booking was never paid", traveller.name));
        }
        if traveller.booking.as_ref().is_some_and(|b| b.ticket.price > traveller.budget) {
            charged_wrongly.push(format!("{} paid above its budget", traveller.name));
        }
    }
    invariants.check(
        "no traveller charged without a booking, nor more than its price",
        format!("{} travellers", travellers.len()),
        charged_wrongly,
    );
    invariants.check("every escrow released or refunded", format!("{} travellers", travellers.len()), open);
    disagreements.extend(unpaid);
    for line in &airline_lines {
        if line.balance != u128::from(line.booked) {
            disagreements.push(format!(
                "{} booked {} but was paid {}",
                line.airline,
                cents(line.booked.into()),
                cents(line.balance)
            ));
        }
    }
    invariants.check(
        "every booking held by its traveller and paid to its airline",
        format!("{} bookings", bookings.len()),
        disagreements,
    );
    let minted: u128 = scenario.travellers.iter().map(|t| u128::from(t.funds)).sum();
    let mut held = 0u128;
    for address in travellers.iter().filter_map(|t| t.wallet).chain(airlines.iter().map(|a| a.wallet)) {
        held += ledger.balance(address).await.unwrap_or(0);
    }
    let conserved = match held == minted {
        true => Vec::new(),
        false => vec![format!("{} minted, {} held", cents(minted), cents(held))],
    };
    invariants.check("money conserved", format!("{} in wallets", cents(minted)), conserved);
    Summary {
        travellers: travellers.to_vec(),
        flights,
        airlines: airline_lines,
        market_time_ms: market_time.as_millis() as u64,
        invariants,
    }
}

impl Summary {
    /// Travellers who booked.
    pub fn booked(&self) -> usize {
        self.travellers.iter().filter(|t| t.booking.is_some()).count()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 40;
        let mut travellers =
            Table::new(["traveller", "route", "seats", "budget", "booking (or why none)", "flight", "price"]);
        for t in self.travellers.iter().take(SHOWN) {
            let (reference, flight, price) = match &t.booking {
                Some(b) => (b.ticket.reference.clone(), b.ticket.flight.clone(), cents(b.ticket.price.into())),
                None => (t.why_not.clone().unwrap_or_default(), String::new(), String::new()),
            };
            travellers.row([
                t.name.clone(),
                t.route.clone(),
                t.seats.to_string(),
                cents(t.budget.into()),
                reference,
                flight,
                price,
            ]);
        }
        writeln!(f, "Travellers ({} of {} booked)", self.booked(), self.travellers.len())?;
        write!(f, "{travellers}")?;
        if self.travellers.len() > SHOWN {
            writeln!(f, "... and {} more (--json lists all)", self.travellers.len() - SHOWN)?;
        }
        let mut flights = Table::new(["flight", "airline", "route", "seats", "sold", "peak held+sold"]);
        for line in self.flights.iter().take(SHOWN) {
            flights.row([
                line.flight.clone(),
                line.airline.clone(),
                line.route.clone(),
                line.seats.to_string(),
                line.sold.to_string(),
                line.peak_committed.to_string(),
            ]);
        }
        writeln!(f, "\nSeats sold per flight")?;
        write!(f, "{flights}")?;
        if self.flights.len() > SHOWN {
            writeln!(f, "... and {} more", self.flights.len() - SHOWN)?;
        }
        let mut airlines = Table::new(["airline", "bookings", "revenue"]);
        for line in self.airlines.iter().take(SHOWN) {
            airlines.row([line.airline.clone(), line.bookings.to_string(), cents(line.balance)]);
        }
        writeln!(f, "\nRevenue per airline")?;
        write!(f, "{airlines}")?;
        writeln!(f, "\nInvariants (market time {:.1} s)", self.market_time_ms as f64 / 1000.0)?;
        write!(f, "{}", self.invariants.table())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flights::{Booking, FlightSpec, Ticket};
    use agent_core::ledger::MemoryLedger;

    #[tokio::test]
    async fn each_broken_invariant_is_reported() {
        let scenario = Scenario::built_in().unwrap();
        let ledger = MemoryLedger::new(None, agent_core::envelope::unix_now_ms);
        let who = agent_core::Identity::from_seed("someone").address();
        let ticket = |reference: &str, seats: Vec<u32>| Ticket {
            reference: reference.into(),
            flight: "JL10".into(),
            seat_numbers: seats,
            price: 9_900,
        };
        // Seat 2 sold twice, more sold than the flight has, a hold never released, and
        // bookings no traveller holds (so the airline's balance is short of them too).
        let flight = Flight {
            spec: FlightSpec { id: "JL10".into(), route: "BER-LIS".into(), seats: 3, price: 9_900 },
            sold: 4,
            held: 1,
            peak_committed: 5,
            bookings: vec![
                Booking { traveller: who, ticket: ticket("JL10-0001", vec![1, 2]) },
                Booking { traveller: who, ticket: ticket("JL10-0002", vec![2, 3]) },
            ],
        };
        let books = vec![Books { airline: "jetlow".into(), wallet: who, flights: vec![flight] }];
        // A traveller booked 1 seat of a 2-seat group, and was charged for nothing it holds.
        let mut shopping = Shopping::closed_for_test(&scenario.travellers[0], who);
        shopping.booking = Some(crate::flights::Booked {
            airline: "jetlow".into(),
            airline_address: who,
            ticket: ticket("JL10-0003", vec![1]),
            paid: true,
        });
        let mut travellers = vec![shopping];
        travellers[0].wallet = Some(who);
        let summary = check(&scenario, &travellers, &books, &ledger, Duration::ZERO).await;
        let broken: Vec<&str> = summary.invariants.broken().iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            broken,
            [
                "no seat sold twice",
                "bookings per flight never exceed seats, holds included at every instant",
                "every hold released or booked by the end (rejected and expired holds are released)",
                "no traveller charged without a booking, nor more than its price",
                "every booking held by its traveller and paid to its airline",
                "money conserved",
            ]
        );
    }
}
