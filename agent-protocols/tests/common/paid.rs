//! A bureau on a ledger of its own, for misbehaviour tests that check money: fund the
//! agents, then check that every party ends with what it should and that together they
//! hold the whole supply (nothing locked in escrow, nothing made or lost).

use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{Ledger, LocalLedger, LocalLedgerConfig};
use agent_core::{Address, Bureau, Config, Identity, Wallet};

pub struct Paid {
    pub bureau: Bureau,
    pub ledger: Arc<LocalLedger>,
    mint: Wallet,
}

impl Paid {
    /// A bureau whose ledger's mint is `seed`'s key; no one funded yet.
    pub fn new(seed: &str) -> Paid {
        let mint = Identity::from_seed(seed);
        let ledger = Arc::new(LocalLedger::open(LocalLedgerConfig::default().with_authority(mint.address())).unwrap());
        let bureau = Bureau::with_config(Config::default().with_ledger(ledger.clone())).unwrap();
        Paid { bureau, mint: Wallet::new(mint, ledger.clone()), ledger }
    }

    /// Mints `amount` to `agent`'s wallet.
    pub async fn fund(&self, agent: Address, amount: u128) {
        self.mint.mint(self.wallet(agent), amount).await.unwrap();
    }

    pub fn wallet(&self, agent: Address) -> Address {
        self.bureau.context(agent).unwrap().wallet().unwrap().address()
    }

    pub async fn balance(&self, agent: Address) -> u128 {
        self.ledger.balance(self.wallet(agent)).await.unwrap()
    }

    /// Waits (at most 5 s) until each agent's balance is as `expected`, then checks it, and
    /// that these agents (every party) hold the whole supply: nothing is locked in escrow,
    /// and no token was made or lost.
    pub async fn settles(&self, expected: &[(Address, u128)]) {
        let wallets: Vec<(Address, u128)> = expected.iter().map(|(agent, b)| (self.wallet(*agent), *b)).collect();
        settle(&self.ledger, &wallets).await;
    }
}

/// Waits (at most 5 s) until each wallet's balance on `ledger` is as `expected`, then checks
/// that these wallets hold the whole supply, which the accounts and escrows add up to:
/// nothing is locked in escrow, and no token was made or lost.
pub async fn settle(ledger: &LocalLedger, expected: &[(Address, u128)]) {
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut now = Vec::new();
        for (wallet, _) in expected {
            now.push(ledger.balance(*wallet).await.unwrap());
        }
        if now.iter().zip(expected).all(|(has, (_, wants))| has == wants) {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "balances {now:?}, expected {expected:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let supply = ledger.supply().unwrap();
    assert_eq!(ledger.audit_total().unwrap(), supply, "accounts and escrows add up to the supply");
    let held: u128 = expected.iter().map(|(_, balance)| balance).sum();
    assert_eq!(held, supply, "the parties hold the whole supply: nothing stays locked in escrow");
}
