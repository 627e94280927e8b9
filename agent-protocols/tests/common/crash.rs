//! Contract-net across crashes: a priced seller whose work takes a set time on host "shop",
//! a traveller that calls for it on host "office", one ledger on the simulated clock, and
//! the balances checked on it (paused time).

use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{Ledger, MemoryLedger};
use agent_core::sim::{Host, Sim};
use agent_core::{Address, Agent, Config, Context, Identity, Wallet};
use agent_protocols::contract_net;

use super::cnp::SlowSeller;
use super::stalled::Stalled;

pub const FUNDS: u128 = 1_000;
/// What [`SlowSeller`] asks.
pub const PRICE: u128 = 100;
pub const SECOND: Duration = Duration::from_secs(1);

pub struct Market {
    pub sim: Sim,
    pub office: Host,
    pub shop: Host,
    pub ledger: Arc<MemoryLedger>,
    pub traveller: Address,
    pub ctx: Context,
    pub book: contract_net::Book,
    pub proposer: Address,
    /// The seller's book, as first started (a restart makes another).
    pub seller_book: contract_net::Book,
}

/// A seller, priced, whose work takes `perform`, on host "shop"; a traveller holding
/// [`FUNDS`] on host "office"; one ledger.
pub async fn market(seed: u64, perform: Duration) -> (Market, Arc<SlowSeller>) {
    market_on(seed, perform, |_, ledger| ledger).await
}

/// [`market`] with a seller that works unpaid (awarded with `award`).
pub async fn unpaid_market(seed: u64, perform: Duration) -> (Market, Arc<SlowSeller>) {
    built(seed, SlowSeller::new(perform, false), |_, ledger| ledger, |ledger| ledger).await
}

/// [`market`] with the shop on a ledger that its seller stalls as each work ends: the pay
/// it collects then waits an hour, until [`Stalled::resume`].
pub async fn stalling_market(seed: u64, perform: Duration) -> (Market, Arc<SlowSeller>, Arc<Stalled>) {
    let mut stalled = None;
    let shop_ledger = |ledger| stalled.insert(Stalled::new(ledger)).clone();
    let (m, seller) = built(seed, SlowSeller::new(perform, true), |_, ledger| ledger, shop_ledger).await;
    let stalled = stalled.unwrap();
    *seller.stalls.lock() = Some(stalled.clone());
    (m, seller, stalled)
}

/// [`market`], the office reaching the ledger through what `office_ledger` makes of it.
pub async fn market_on(
    seed: u64,
    perform: Duration,
    office_ledger: impl FnOnce(&Sim, Arc<MemoryLedger>) -> Arc<dyn Ledger>,
) -> (Market, Arc<SlowSeller>) {
    built(seed, SlowSeller::new(perform, true), office_ledger, |ledger| ledger).await
}

async fn built<S: Ledger + 'static>(
    seed: u64,
    seller: Arc<SlowSeller>,
    office_ledger: impl FnOnce(&Sim, Arc<MemoryLedger>) -> Arc<dyn Ledger>,
    shop_ledger: impl FnOnce(Arc<MemoryLedger>) -> Arc<S>,
) -> (Market, Arc<SlowSeller>) {
    let sim = Sim::new(seed);
    let mint = Identity::from_seed("crash mint");
    let ledger = Arc::new(MemoryLedger::new(Some(mint.address()), sim.clock()));
    let config = Config::default().with_ledger(shop_ledger(ledger.clone()));
    let office_config = Config::default().with_ledger(office_ledger(&sim, ledger.clone()));
    let office = sim.add_host_with("office", office_config).unwrap();
    let shop = sim.add_host_with("shop", config).unwrap();
    let (proposer, seller_book) = add_seller(&shop, &seller);
    let (traveller, book) = add_traveller(&office);
    let ctx = office.context(traveller).unwrap();
    Wallet::new(mint, ledger.clone()).mint(wallet_of("traveller"), FUNDS).await.unwrap();
    (Market { sim, office, shop, ledger, traveller, ctx, book, proposer, seller_book }, seller)
}

/// The seller agent (the same key, so the same storage, at each restart) played by `seller`.
pub fn add_seller(shop: &Host, seller: &Arc<SlowSeller>) -> (Address, contract_net::Book) {
    let mut agent = Agent::builder("seller").seed("seller").build().unwrap();
    let book = contract_net::serve(&mut agent, seller.clone());
    (shop.add(agent).unwrap(), book)
}

/// The traveller agent (the same key, so the same storage, at each restart).
pub fn add_traveller(office: &Host) -> (Address, contract_net::Book) {
    let mut agent = Agent::builder("traveller").seed("traveller").build().unwrap();
    let book = contract_net::initiator(&mut agent);
    (office.add(agent).unwrap(), book)
}

/// The wallet of the agent whose seed is `seed`: known whether its host is up or down.
pub fn wallet_of(seed: &str) -> Address {
    Identity::from_seed(seed).derive("wallet").address()
}

impl Market {
    pub async fn call(&self) -> contract_net::Called<u64> {
        let called =
            contract_net::call::<_, u64>(&self.ctx, &self.book, &[self.proposer], &"LHR-JFK", SECOND).await.unwrap();
        assert_eq!(called.proposals.len(), 1, "{called:?}");
        called
    }

    /// Awards the call to the seller and pays, on a task of the test (not of the traveller's
    /// agent: it outlives a crash of the office), waiting `perform_timeout` for the report.
    pub fn award(
        &self,
        called: contract_net::Called<u64>,
        perform_timeout: Duration,
    ) -> tokio::task::JoinHandle<Result<contract_net::Paid<String>, contract_net::ContractNetError>> {
        let (ctx, book, winner) = (self.ctx.clone(), self.book.clone(), self.proposer);
        tokio::spawn(async move {
            contract_net::award_and_pay::<u64, String>(
                &ctx,
                &book,
                &called,
                &[winner],
                |p| u128::from(*p),
                perform_timeout,
            )
            .await
        })
    }

    /// Awards the call to the seller, paying through escrow or not, on a task of the
    /// traveller's agent, as a handler would: the task ends with a crash of the office, and
    /// its result is dropped (a crash ends it before it settles).
    pub fn award_from_the_traveller(&self, called: contract_net::Called<u64>, paying: bool, perform_timeout: Duration) {
        let (ctx, book, winner) = (self.ctx.clone(), self.book.clone(), self.proposer);
        self.ctx.spawn(async move {
            let winners = [winner];
            if paying {
                let price = |p: &u64| u128::from(*p);
                drop(
                    contract_net::award_and_pay::<u64, String>(&ctx, &book, &called, &winners, price, perform_timeout)
                        .await,
                );
            } else {
                drop(contract_net::award::<u64, String>(&ctx, &book, &called, &winners, perform_timeout).await);
            }
        });
    }

    pub async fn balances(&self) -> [u128; 2] {
        let (traveller, seller) = (wallet_of("traveller"), wallet_of("seller"));
        [self.ledger.balance(traveller).await.unwrap(), self.ledger.balance(seller).await.unwrap()]
    }

    /// Waits (at most 2 s) until the traveller and the seller hold `traveller` and `seller`,
    /// then checks they hold the whole supply: nothing locked in escrow, made or lost.
    pub async fn settles(&self, traveller: u128, seller: u128) {
        for _ in 0..100 {
            if self.balances().await == [traveller, seller] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(self.balances().await, [traveller, seller], "the traveller's and the seller's balances");
        assert_eq!(self.ledger.audit_total(), self.ledger.supply(), "accounts and escrows add up to the supply");
        assert_eq!(traveller + seller, self.ledger.supply(), "nothing stays locked in escrow");
    }

    /// The state of dialogue `id` in `book`, if it has it.
    pub fn state(book: &contract_net::Book, id: u128) -> Option<String> {
        book.dialogues().and_then(|d| d.get(id)).map(|d| d.state.to_string())
    }
}
