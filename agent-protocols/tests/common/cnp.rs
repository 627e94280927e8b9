//! The contract-net tests' market: a seller of seats, and a traveller that calls for
//! them, in one bureau, on a ledger when awards are paid.

use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{Ledger, LocalLedger, LocalLedgerConfig};
use agent_core::{Address, Agent, Bureau, Config, Identity, Wallet};
use agent_protocols::contract_net::{self, Participant, Unperformed};
use parking_lot::Mutex;

/// A seller of seats at a fixed price; it holds a seat for each proposal and gives it back
/// when the proposal is rejected.
pub struct Seller {
    pub price: u64,
    pub fails: bool,
    /// How long each proposal's seat is held, if bounded.
    pub hold_ms: Option<u64>,
    pub held: Mutex<u32>,
    pub released: Mutex<u32>,
    /// Whether it states its price ([`Participant::price`]): then it is paid through
    /// escrow, and refuses an unpaid award.
    pub priced: bool,
}

impl Seller {
    /// A seller that works unpaid (awarded with `award`).
    pub fn new(price: u64) -> Arc<Seller> {
        Arc::new(Seller::unpaid(price))
    }

    /// A seller paid through escrow (awarded with `award_and_pay`).
    pub fn priced(price: u64) -> Arc<Seller> {
        Arc::new(Seller { priced: true, ..Seller::unpaid(price) })
    }

    pub fn unpaid(price: u64) -> Seller {
        Seller { price, fails: false, hold_ms: None, held: Mutex::new(0), released: Mutex::new(0), priced: false }
    }
}

#[async_trait::async_trait]
impl Participant for Seller {
    type Task = String;
    type Proposal = u64;
    type Result = String;

    async fn evaluate(&self, _initiator: Address, route: String) -> Option<(u64, Option<u64>)> {
        if route == "nowhere" {
            return None;
        }
        *self.held.lock() += 1;
        Some((self.price, self.hold_ms.map(|ms| agent_core::envelope::unix_now_ms() + ms)))
    }

    async fn perform(&self, _initiator: Address, price: u64) -> Result<String, Unperformed> {
        if self.fails {
            return Err("overbooked".into());
        }
        Ok(format!("booked at {price}"))
    }

    async fn release(&self, _initiator: Address, _price: u64) {
        *self.released.lock() += 1;
    }

    fn price(&self, price: &u64) -> Option<u128> {
        self.priced.then_some(u128::from(*price))
    }
}

pub struct Market {
    pub bureau: Bureau,
    pub initiator: Address,
    pub book: contract_net::Book,
}

pub async fn market() -> Market {
    market_in(Bureau::new().unwrap())
}

pub fn market_in(bureau: Bureau) -> Market {
    let mut agent = Agent::builder("traveller").build().unwrap();
    let book = contract_net::initiator(&mut agent);
    let initiator = bureau.add(agent).unwrap();
    Market { bureau, initiator, book }
}

/// A market on a ledger, the traveller's wallet holding `funds`: for paid awards, with
/// every balance checked.
pub async fn paid_market(funds: u128) -> (Market, Arc<LocalLedger>) {
    let mint = Identity::from_seed("contract-net mint");
    let ledger = Arc::new(LocalLedger::open(LocalLedgerConfig::default().with_authority(mint.address())).unwrap());
    let m = market_in(Bureau::with_config(Config::default().with_ledger(ledger.clone())).unwrap());
    let wallet = m.bureau.context(m.initiator).unwrap().wallet().unwrap().address();
    Wallet::new(mint, ledger.clone()).mint(wallet, funds).await.unwrap();
    (m, ledger)
}

/// The balance of `agent`'s wallet on `ledger`.
pub async fn balance(m: &Market, ledger: &LocalLedger, agent: Address) -> u128 {
    ledger.balance(m.bureau.context(agent).unwrap().wallet().unwrap().address()).await.unwrap()
}

/// Waits (bounded) until each agent's balance on `ledger` is as `expected`, and checks that
/// they (every party) hold the whole supply: nothing locked in escrow, made or lost.
pub async fn settles(m: &Market, ledger: &LocalLedger, expected: &[(Address, u128)]) {
    let wallet = |agent: Address| m.bureau.context(agent).unwrap().wallet().unwrap().address();
    let wallets: Vec<(Address, u128)> = expected.iter().map(|(agent, b)| (wallet(*agent), *b)).collect();
    super::paid::settle(ledger, &wallets).await;
}

pub fn add_seller(market: &Market, name: &str, seller: Arc<Seller>) -> Address {
    let mut agent = Agent::builder(name).build().unwrap();
    contract_net::serve(&mut agent, seller);
    market.bureau.add(agent).unwrap()
}

/// The lowest price wins; the others are rejected (and release their holds).
pub fn cheapest(called: &contract_net::Called<u64>) -> Vec<Address> {
    called.proposals.iter().min_by_key(|p| p.proposal).map(|p| vec![p.from]).unwrap_or_default()
}

/// Waits (at most 5 s) until `done` holds.
pub async fn wait_for(done: impl Fn() -> bool) {
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(tokio::time::Instant::now() < until, "timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A seller whose work takes `perform`, paid through escrow if `priced`: a test has time to
/// cancel, or to bring storage down, while it works. It counts the work it started and
/// finished, and the holds it released.
pub struct SlowSeller {
    pub perform: Duration,
    pub priced: bool,
    pub started: Mutex<u32>,
    pub performed: Mutex<u32>,
    pub released: Mutex<u32>,
    /// A ledger stalled as each work ends (so the pay collected then waits), if any.
    pub stalls: Mutex<Option<Arc<super::stalled::Stalled>>>,
}

impl SlowSeller {
    pub fn new(perform: Duration, priced: bool) -> Arc<SlowSeller> {
        Arc::new(SlowSeller {
            perform,
            priced,
            started: Mutex::new(0),
            performed: Mutex::new(0),
            released: Mutex::new(0),
            stalls: Mutex::new(None),
        })
    }
}

#[async_trait::async_trait]
impl Participant for SlowSeller {
    type Task = String;
    type Proposal = u64;
    type Result = String;

    async fn evaluate(&self, _initiator: Address, _route: String) -> Option<(u64, Option<u64>)> {
        Some((100, None))
    }

    async fn perform(&self, _initiator: Address, price: u64) -> Result<String, Unperformed> {
        *self.started.lock() += 1;
        tokio::time::sleep(self.perform).await;
        *self.performed.lock() += 1;
        if let Some(ledger) = self.stalls.lock().as_ref() {
            ledger.stall();
        }
        Ok(format!("booked at {price}"))
    }

    async fn release(&self, _initiator: Address, _price: u64) {
        *self.released.lock() += 1;
    }

    fn price(&self, price: &u64) -> Option<u128> {
        self.priced.then_some(u128::from(*price))
    }
}
