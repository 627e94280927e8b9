//! Services that fail on a schedule: a ledger and an address resolver (the almanac's seam)
//! made slow, unavailable or failing for windows of simulated time.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Unroutable;
use crate::identity::Address;
use crate::ledger::{Amount, Escrow, EscrowId, Ledger, LedgerError, Receipt, Transaction};
use crate::transport::{Endpoint, Resolver};

/// What goes wrong with a service during an outage.
#[derive(Debug, Clone, PartialEq)]
pub enum Outage {
    /// Every call takes this long more.
    Slow(Duration),
    /// Calls fail as if the service could not be reached (nothing is applied; a ledger
    /// submission still answers "may have been applied": the caller cannot know).
    Unavailable,
    /// The service works, but its answers to submissions are lost on the way back: each
    /// submission is applied and answered "may have been applied".
    LostAnswers,
    /// Calls reach the service, which refuses them (a ledger whose storage fails: "not
    /// applied").
    Failing,
}

/// Windows of simulated time (since the simulation began) in which a service misbehaves.
#[derive(Debug, Clone, Default)]
pub struct Outages {
    windows: Vec<(Duration, Duration, Outage)>,
}

impl Outages {
    /// No outage.
    pub fn none() -> Outages {
        Outages::default()
    }

    /// Adds `outage` from `from` until `until`.
    pub fn add(mut self, from: Duration, until: Duration, outage: Outage) -> Outages {
        self.windows.push((from, until, outage));
        self
    }

    fn at(&self, now: Duration) -> Option<&Outage> {
        self.windows.iter().find(|(from, until, _)| now >= *from && now < *until).map(|(_, _, o)| o)
    }
}

/// The simulation's clock and random choices, as the fault wrappers need them.
#[derive(Clone)]
struct Clock {
    net: Arc<super::net::Net>,
}

/// A ledger that misbehaves on a schedule; between outages it is `inner`.
pub struct FaultyLedger {
    inner: Arc<dyn Ledger>,
    outages: Outages,
    clock: Clock,
}

impl FaultyLedger {
    /// `inner`, misbehaving during `outages` of `sim`'s time.
    pub fn new(sim: &super::Sim, inner: Arc<dyn Ledger>, outages: Outages) -> FaultyLedger {
        FaultyLedger { inner, outages, clock: Clock { net: Arc::clone(&sim.net) } }
    }

    /// The outage now, after waiting out a slow one.
    async fn outage(&self) -> Option<Outage> {
        match self.outages.at(self.clock.net.elapsed()).cloned() {
            Some(Outage::Slow(extra)) => {
                tokio::time::sleep(extra).await;
                None
            }
            other => other,
        }
    }

    /// The outage now as reads see it: answers lost only to submissions.
    async fn read_outage(&self) -> Option<Outage> {
        self.outage().await.filter(|o| *o != Outage::LostAnswers)
    }

    fn read_error(&self, outage: &Outage) -> LedgerError {
        match outage {
            Outage::Failing => LedgerError::Storage("simulated storage failure".into()),
            _ => LedgerError::Unavailable("simulated outage".into()),
        }
    }
}

#[async_trait::async_trait]
impl Ledger for FaultyLedger {
    async fn submit(&self, tx: Transaction) -> Result<Receipt, LedgerError> {
        match self.outage().await {
            None => self.inner.submit(tx).await,
            Some(Outage::Failing) => {
                Err(LedgerError::Storage("simulated storage failure; the transaction was not applied".into()))
            }
            Some(Outage::Unavailable) => Err(LedgerError::Unavailable("simulated outage".into())),
            Some(Outage::LostAnswers) => {
                // Applied (or refused), but the answer never comes back.
                let _ = self.inner.submit(tx).await;
                Err(LedgerError::Unavailable("simulated lost answer".into()))
            }
            Some(Outage::Slow(_)) => unreachable!("a slow outage is waited out in `outage`"),
        }
    }

    async fn balance(&self, account: Address) -> Result<Amount, LedgerError> {
        match self.read_outage().await {
            None => self.inner.balance(account).await,
            Some(outage) => Err(self.read_error(&outage)),
        }
    }

    async fn next_nonce(&self, account: Address) -> Result<u64, LedgerError> {
        match self.read_outage().await {
            None => self.inner.next_nonce(account).await,
            Some(outage) => Err(self.read_error(&outage)),
        }
    }

    async fn history(&self, account: Address, limit: usize) -> Result<Vec<Receipt>, LedgerError> {
        match self.read_outage().await {
            None => self.inner.history(account, limit).await,
            Some(outage) => Err(self.read_error(&outage)),
        }
    }

    async fn escrow(&self, id: EscrowId) -> Result<Option<Escrow>, LedgerError> {
        match self.read_outage().await {
            None => self.inner.escrow(id).await,
            Some(outage) => Err(self.read_error(&outage)),
        }
    }

    async fn open_escrows(&self, payer: Address, limit: usize) -> Result<Vec<(EscrowId, Escrow)>, LedgerError> {
        match self.read_outage().await {
            None => self.inner.open_escrows(payer, limit).await,
            Some(outage) => Err(self.read_error(&outage)),
        }
    }
}

/// An address resolver (the almanac's seam) that misbehaves on a schedule; between
/// outages it is `inner`. During an outage it answers the typed
/// [`Unroutable::ResolverUnavailable`].
pub struct FaultyResolver {
    inner: Arc<dyn Resolver>,
    outages: Outages,
    clock: Clock,
}

impl FaultyResolver {
    /// `inner`, misbehaving during `outages` of `sim`'s time.
    pub fn new(sim: &super::Sim, inner: Arc<dyn Resolver>, outages: Outages) -> FaultyResolver {
        FaultyResolver { inner, outages, clock: Clock { net: Arc::clone(&sim.net) } }
    }
}

#[async_trait::async_trait]
impl Resolver for FaultyResolver {
    async fn resolve(&self, address: &Address) -> Result<Endpoint, Unroutable> {
        match self.outages.at(self.clock.net.elapsed()) {
            None => self.inner.resolve(address).await,
            Some(Outage::Slow(extra)) => {
                tokio::time::sleep(*extra).await;
                self.inner.resolve(address).await
            }
            Some(Outage::Unavailable | Outage::LostAnswers) => {
                Err(Unroutable::ResolverUnavailable("the resolver is down (simulated outage)".into()))
            }
            Some(Outage::Failing) => Err(Unroutable::ResolverUnavailable("the resolver failed (simulated)".into())),
        }
    }
}
