//! One simulated host on paused time, with a ledger on the simulated clock, for property
//! tests that run an auction many times and check money: fund the agents, run, then check
//! that every party ends with what it should and that together they hold the whole supply.
//! Paused time lets a case's auction run its deadlines in no real time; the simulated clock
//! keeps the dialogues' and escrows' Unix deadlines in step with it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{Ledger, MemoryLedger};
use agent_core::sim::{Host, Sim};
use agent_core::{Address, Agent, Config, Context, Identity, Wallet};

pub struct SimPaid {
    pub sim: Sim,
    pub floor: Host,
    pub ledger: Arc<MemoryLedger>,
    mint: Wallet,
}

impl SimPaid {
    /// A host "floor" whose agents pay on one ledger, minted by `seed`'s key.
    pub fn new(seed: &str) -> SimPaid {
        let sim = Sim::new(1).without_trace();
        let mint = Identity::from_seed(seed);
        let ledger = Arc::new(MemoryLedger::new(Some(mint.address()), sim.clock()));
        let floor = sim.add_host_with("floor", Config::default().with_ledger(ledger.clone())).unwrap();
        SimPaid { sim, floor, mint: Wallet::new(mint, ledger.clone()), ledger }
    }

    pub fn add(&self, agent: Agent) -> Address {
        self.floor.add(agent).unwrap()
    }

    pub fn context(&self, agent: Address) -> Context {
        self.floor.context(agent).unwrap()
    }

    pub fn wallet(&self, agent: Address) -> Address {
        self.context(agent).wallet().unwrap().address()
    }

    /// Mints `amount` to `agent`'s wallet.
    pub async fn fund(&self, agent: Address, amount: u128) {
        self.mint.mint(self.wallet(agent), amount).await.unwrap();
    }

    /// Waits (at most 5 s of simulated time) until each agent's balance is as `expected`,
    /// then checks that these agents hold the whole supply: nothing is locked in escrow,
    /// and no token was made or lost. The balances it ended with, if not as expected.
    pub async fn settles(&self, expected: &[(Address, u128)]) -> Result<(), String> {
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut now = Vec::new();
        while tokio::time::Instant::now() < until {
            now.clear();
            for (agent, _) in expected {
                now.push(self.ledger.balance(self.wallet(*agent)).await.unwrap());
            }
            if now.iter().zip(expected).all(|(has, (_, wants))| has == wants) {
                let held: u128 = now.iter().sum();
                let (supply, total) = (self.ledger.supply(), self.ledger.audit_total());
                if (held, total) != (supply, supply) {
                    return Err(format!("supply {supply}, accounts and escrows {total}, the parties hold {held}"));
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!("balances {now:?}, expected {:?}", expected.iter().map(|(_, b)| b).collect::<Vec<_>>()))
    }

    pub async fn shutdown(self) {
        self.sim.shutdown().await;
    }
}

/// Runs `case` on a current-thread runtime with the clock paused, as a simulation needs.
pub fn paused<F: Future>(case: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    runtime.block_on(case)
}
