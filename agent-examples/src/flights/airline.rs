//! An airline: a contract-net participant that proposes its cheapest flight on the asked
//! route with enough free seats, holds those seats until the proposal's hold ends, and
//! turns the hold into a booking when awarded.

use std::sync::Arc;

use agent_core::Address;
use agent_protocols::contract_net::{Participant, Unperformed};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::scenario::{AirlineSpec, FlightSpec, Pricing};

/// What a traveller asks for: seats on a route, all on one flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema)]
pub struct Trip {
    /// The route ("BER-LIS").
    pub route: String,
    /// Seats, together.
    pub seats: u32,
}

/// An airline's proposal: `seats` seats on `flight` for `price` cents in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema)]
pub struct Offer {
    /// The airline.
    pub airline: String,
    /// The flight.
    pub flight: String,
    /// Seats held.
    pub seats: u32,
    /// The price of all of them, in cents.
    pub price: u64,
}

/// A booking, as the airline issues it when awarded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema)]
pub struct Ticket {
    /// The booking reference ("SK100-0003").
    pub reference: String,
    /// The flight.
    pub flight: String,
    /// The seat numbers, one per traveller in the group.
    pub seat_numbers: Vec<u32>,
    /// What was paid, in cents.
    pub price: u64,
}

/// A booking as the airline's books record it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema)]
pub struct Booking {
    /// Who booked.
    pub traveller: Address,
    /// The ticket issued.
    pub ticket: Ticket,
}

/// One flight's inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema)]
pub struct Flight {
    /// The flight.
    pub spec: FlightSpec,
    /// Seats sold.
    pub sold: u32,
    /// Seats held for proposals not yet accepted or released.
    pub held: u32,
    /// The most seats ever sold and held at one instant (never above `spec.seats`).
    pub peak_committed: u32,
    /// Bookings, in the order they were made.
    pub bookings: Vec<Booking>,
}

impl Flight {
    fn free(&self) -> u32 {
        self.spec.seats.saturating_sub(self.sold.saturating_add(self.held))
    }
}

/// An airline's state; shared with whoever reports on the market.
pub struct Airline {
    /// Its name.
    pub name: String,
    pricing: Pricing,
    hold_ms: u64,
    flights: Mutex<Vec<Flight>>,
}

impl Airline {
    /// An airline selling `spec`'s flights, holding proposed seats for `hold_ms`.
    pub fn new(spec: &AirlineSpec, hold_ms: u64) -> Arc<Airline> {
        let flights = spec
            .flights
            .iter()
            .map(|f| Flight { spec: f.clone(), sold: 0, held: 0, peak_committed: 0, bookings: Vec::new() })
            .collect();
        Arc::new(Airline { name: spec.name.clone(), pricing: spec.pricing, hold_ms, flights: Mutex::new(flights) })
    }

    /// Its flights as they stand.
    pub fn flights(&self) -> Vec<Flight> {
        self.flights.lock().clone()
    }

    /// Its books, with the wallet it is paid to.
    pub fn books(&self, wallet: agent_core::Address) -> super::summary::Books {
        super::summary::Books { airline: self.name.clone(), wallet, flights: self.flights() }
    }

    /// The price of the next `seats` seats on `flight`, by the airline's pricing policy.
    pub fn price(&self, flight: &Flight, seats: u32) -> Option<u64> {
        let base = flight.spec.price;
        let mut total: u64 = 0;
        for k in 0..seats {
            let seat = match self.pricing {
                Pricing::Fixed => base,
                Pricing::LoadFactor { percent_at_full } => {
                    let committed = u64::from(flight.sold + flight.held + k);
                    let capacity = u64::from(flight.spec.seats.max(1));
                    let markup =
                        base.checked_mul(u64::from(percent_at_full))?.checked_mul(committed)? / (100 * capacity);
                    base.checked_add(markup)?
                }
            };
            total = total.checked_add(seat)?;
        }
        Some(total)
    }
}

#[async_trait::async_trait]
impl Participant for Airline {
    type Task = Trip;
    type Proposal = Offer;
    type Result = Ticket;

    async fn evaluate(&self, _initiator: Address, trip: Trip) -> Option<(Offer, Option<u64>)> {
        let mut flights = self.flights.lock();
        let (index, price) = flights
            .iter()
            .enumerate()
            .filter(|(_, f)| f.spec.route == trip.route && trip.seats > 0 && f.free() >= trip.seats)
            .filter_map(|(i, f)| Some((i, self.price(f, trip.seats)?)))
            .min_by_key(|&(i, price)| (price, i))?;
        let flight = &mut flights[index];
        flight.held += trip.seats;
        flight.peak_committed = flight.peak_committed.max(flight.sold + flight.held);
        let offer = Offer { airline: self.name.clone(), flight: flight.spec.id.clone(), seats: trip.seats, price };
        Some((offer, Some(agent_core::envelope::unix_now_ms() + self.hold_ms)))
    }

    async fn perform(&self, initiator: Address, offer: Offer) -> Result<Ticket, Unperformed> {
        let mut flights = self.flights.lock();
        let flight = flights
            .iter_mut()
            .find(|f| f.spec.id == offer.flight)
            .ok_or_else(|| Unperformed::Failed(format!("no flight {}", offer.flight)))?;
        if flight.held < offer.seats {
            return Err(Unperformed::Failed(format!("the seats on {} are no longer held", offer.flight)));
        }
        flight.held -= offer.seats;
        let first = flight.sold;
        flight.sold += offer.seats;
        let ticket = Ticket {
            reference: format!("{}-{:04}", flight.spec.id, flight.bookings.len() + 1),
            flight: flight.spec.id.clone(),
            seat_numbers: (first + 1..=first + offer.seats).collect(),
            price: offer.price,
        };
        flight.bookings.push(Booking { traveller: initiator, ticket: ticket.clone() });
        tracing::debug!(airline = %self.name, reference = %ticket.reference, "booked");
        Ok(ticket)
    }

    fn price(&self, offer: &Offer) -> Option<u128> {
        Some(offer.price.into())
    }

    async fn release(&self, _initiator: Address, offer: Offer) {
        let mut flights = self.flights.lock();
        if let Some(flight) = flights.iter_mut().find(|f| f.spec.id == offer.flight) {
            flight.held = flight.held.saturating_sub(offer.seats);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn airline(pricing: Pricing) -> Arc<Airline> {
        let flight = FlightSpec { id: "SK1".into(), route: "A-B".into(), seats: 4, price: 10_000 };
        Airline::new(&AirlineSpec { name: "sk".into(), pricing, flights: vec![flight] }, 1_000)
    }

    #[test]
    fn load_factor_pricing_makes_later_seats_dearer() {
        let sk = airline(Pricing::LoadFactor { percent_at_full: 100 });
        let flight = sk.flights()[0].clone();
        // Seats 0 and 1 of 4 committed: mark-ups of 0% and 25%.
        assert_eq!(sk.price(&flight, 2), Some(10_000 + 12_500));
        assert_eq!(airline(Pricing::Fixed).price(&flight, 3), Some(30_000));
    }

    #[tokio::test]
    async fn holds_block_seats_until_released_and_a_booking_turns_a_hold_into_sold_seats() {
        let sk = airline(Pricing::Fixed);
        let who = agent_core::Identity::from_seed("t").address();
        let trip = |seats| Trip { route: "A-B".into(), seats };
        let (first, _) = sk.evaluate(who, trip(3)).await.unwrap();
        assert!(sk.evaluate(who, trip(2)).await.is_none(), "only one seat is free while three are held");
        sk.release(who, first.clone()).await;
        let (second, _) = sk.evaluate(who, trip(4)).await.unwrap();
        let ticket = sk.perform(who, second).await.unwrap();
        assert_eq!(ticket.seat_numbers, [1, 2, 3, 4]);
        assert!(sk.perform(who, first).await.is_err(), "a released hold cannot be booked");
        let flight = &sk.flights()[0];
        assert_eq!((flight.sold, flight.held, flight.peak_committed), (4, 0, 4));
    }
}
