//! What the protocol tests share: a bidder that goes up to a limit in every kind of auction,
//! ears for the refusals an agent is sent, contract-net's test market (`cnp`) and the same
//! across crashes (`crash`), a ledger whose submissions land late (`in_flight`) and one
//! whose submissions stall from a moment a test picks, or whose first submissions and escrow
//! reads fail (`stalled`), a floor of
//! auctions with a rogue bidder on one ledger (`floor`), a bureau on a ledger whose
//! balances and supply a test checks (`paid`), and the same on a simulated host on paused
//! time, for property tests (`sim_paid`).

// Each test binary uses part of it.
#![allow(dead_code)]

pub mod cnp;
pub mod crash;
pub mod floor;
pub mod in_flight;
pub mod paid;
pub mod sim_paid;
pub mod stalled;

use std::sync::Arc;
use std::time::Duration;

use agent_core::{Address, Agent, Context};
use agent_protocols::dialogue::Refused;
use agent_protocols::double_auction::{self, RoundOpen, Side, Trade};
use agent_protocols::settlement::{Settled, SettlementError};
use agent_protocols::{dutch, english, sealed_bid};
use parking_lot::Mutex;

/// Keeps every [`Refused`] sent to `agent`, in the order it came, for the test to read.
pub fn hear_refusals(agent: &mut Agent) -> Arc<Mutex<Vec<Refused>>> {
    let heard: Arc<Mutex<Vec<Refused>>> = Arc::default();
    let told = heard.clone();
    agent.on_message(move |_: Context, _: Address, refused: Refused| {
        told.lock().push(refused);
        std::future::ready(())
    });
    heard
}

/// What [`hear_refusals`] heard, once something was (waiting at most a second).
pub async fn once_told(heard: &Mutex<Vec<Refused>>) -> Vec<Refused> {
    for _ in 0..100 {
        if !heard.lock().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    heard.lock().clone()
}

/// Raises to the minimum up to `max`, takes a Dutch price at or below it, bids `max` sealed,
/// buys one unit at up to `max`; and records how each payment ended.
pub struct UpTo {
    pub max: u128,
    pub settled: Mutex<Vec<Result<Settled, String>>>,
}

impl UpTo {
    pub fn new(max: u128) -> Arc<UpTo> {
        Arc::new(UpTo { max, settled: Mutex::default() })
    }

    pub fn record(&self, settled: Result<Settled, SettlementError>) {
        self.settled.lock().push(settled.map_err(|e| e.to_string()));
    }

    /// Waits (bounded) until a payment has ended.
    pub async fn paid(&self) -> Result<Settled, String> {
        for _ in 0..500 {
            if let Some(settled) = self.settled.lock().first() {
                return settled.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the winner never paid");
    }
}

#[async_trait::async_trait]
impl english::Bidder for UpTo {
    async fn raise(&self, _item: &serde_json::Value, minimum: u128) -> Option<u128> {
        (minimum <= self.max).then_some(minimum)
    }

    async fn settled(&self, _auction: &str, settled: Result<Settled, SettlementError>) {
        self.record(settled);
    }
}

#[async_trait::async_trait]
impl dutch::Bidder for UpTo {
    async fn take(&self, _item: &serde_json::Value, price: u128) -> bool {
        price <= self.max
    }

    async fn settled(&self, _auction: &str, settled: Result<Settled, SettlementError>) {
        self.record(settled);
    }
}

#[async_trait::async_trait]
impl sealed_bid::Bidder for UpTo {
    async fn bid(&self, _item: serde_json::Value, _reserve: u128) -> Option<u128> {
        Some(self.max)
    }

    async fn settled(&self, _auction: &str, settled: Result<Settled, SettlementError>) {
        self.record(settled);
    }
}

#[async_trait::async_trait]
impl double_auction::Trader for UpTo {
    async fn orders(&self, _round: &RoundOpen) -> Vec<(Side, u128, u64)> {
        vec![(Side::Buy, self.max, 1)]
    }

    async fn settled(&self, _trade: &Trade, settled: Result<Settled, SettlementError>) {
        self.record(settled);
    }
}
