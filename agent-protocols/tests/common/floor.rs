//! A floor of auctions on one ledger, shared by the tests of misbehaving bidders: an
//! auctioneer of each kind in one agent, an honest bidder, a rogue bidder that sends by
//! hand, and a second English auctioneer (and a double-auction seller, for a test that
//! asks); with ears for what the rogue is told, and every balance checked.

use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{DealId, Ledger, LocalLedger, LocalLedgerConfig};
use agent_core::{Address, Agent, Bureau, Config, Context, Identity, Message, Wallet};
use agent_protocols::dialogue::{Dialogue, Dialogues, Refused};
use agent_protocols::double_auction::{self, Clearinghouse, RoundOpen};
use agent_protocols::sealed_bid::{self, CallForBids};
use agent_protocols::settlement::{self, Sales, Settled};
use agent_protocols::{dutch, english};
use parking_lot::Mutex;

use super::UpTo;

pub const DELIVER_WITHIN: Duration = Duration::from_millis(500);
pub const FUNDS: u128 = 1_000;
pub const ROGUE: &str = "rogue bidder";
const MINT: &str = "auction roles mint";

pub struct Lots;

#[async_trait::async_trait]
impl settlement::Seller for Lots {
    async fn deliver(&self, _buyer: Address, _deal: DealId, price: u128) -> Result<serde_json::Value, String> {
        Ok(serde_json::json!({ "paid": price.to_string() }))
    }
}

/// Sells one unit at the price or more, in each round.
pub struct Sells(pub u128);

#[async_trait::async_trait]
impl double_auction::Trader for Sells {
    async fn orders(&self, _round: &RoundOpen) -> Vec<(double_auction::Side, u128, u64)> {
        vec![(double_auction::Side::Sell, self.0, 1)]
    }
}

/// Refusals an agent was told, and the auctions it heard open.
#[derive(Clone, Default)]
pub struct Ears {
    pub refusals: Arc<Mutex<Vec<Refused>>>,
    pub auctions: Arc<Mutex<Vec<String>>>,
}

impl Ears {
    pub fn listen(&self, agent: &mut Agent) {
        let told = self.refusals.clone();
        agent.on_message(move |_: Context, _: Address, refused: Refused| {
            told.lock().push(refused);
            std::future::ready(())
        });
    }

    /// Notes that `auction` opened; a handler's whole work.
    pub fn heard(&self, auction: &str) -> std::future::Ready<()> {
        let mut auctions = self.auctions.lock();
        if !auctions.iter().any(|a| a == auction) {
            auctions.push(auction.to_owned());
        }
        std::future::ready(())
    }

    /// Waits (bounded) for the refusal told for `dialogue`.
    pub async fn refusal(&self, dialogue: u128) -> Refused {
        for _ in 0..300 {
            if let Some(refused) = self.refusals.lock().iter().find(|r| r.dialogue == dialogue) {
                return refused.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no refusal told for dialogue {dialogue:032x}: {:?}", self.refusals.lock());
    }

    /// Waits (bounded) for an auction to open.
    pub async fn opened(&self) -> String {
        for _ in 0..300 {
            if let Some(auction) = self.auctions.lock().last() {
                return auction.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no auction opened");
    }
}

/// An auctioneer of each kind in one agent, an honest bidder, a rogue bidder that sends by
/// hand, and a second English auctioneer; all funded on one ledger.
pub struct Floor {
    pub bureau: Bureau,
    pub ledger: Arc<LocalLedger>,
    pub auctioneer: Address,
    pub english: english::Auctioneer,
    pub dutch: dutch::Auctioneer,
    pub sealed: sealed_bid::Auctioneer,
    pub house: Clearinghouse,
    pub honest: Address,
    pub strategy: Arc<UpTo>,
    pub rogue: Address,
    pub rogue_ears: Ears,
    pub other: Address,
    pub other_english: english::Auctioneer,
    pub other_ears: Ears,
}

impl Floor {
    pub async fn new() -> Floor {
        let mint = Identity::from_seed(MINT);
        let ledger = Arc::new(LocalLedger::open(LocalLedgerConfig::default().with_authority(mint.address())).unwrap());
        let bureau = Bureau::with_config(Config::default().with_ledger(ledger.clone())).unwrap();

        let mut agent = Agent::builder("auctioneer").seed("roles auctioneer").build().unwrap();
        let sales = Sales::new();
        let english = english::Auctioneer::serve(&mut agent, sales.clone());
        let dutch = dutch::Auctioneer::serve(&mut agent, sales.clone());
        let sealed = sealed_bid::Auctioneer::serve(&mut agent, sales.clone());
        let house = Clearinghouse::serve(&mut agent);
        settlement::serve_sales(&mut agent, sales, Arc::new(Lots));
        let auctioneer = bureau.add(agent).unwrap();

        let mut honest = Agent::builder("honest bidder").seed("roles honest").build().unwrap();
        let strategy = Arc::new(UpTo { max: 100, settled: Mutex::default() });
        let identity = || Identity::from_seed("roles honest");
        english::serve(&mut honest, identity(), strategy.clone(), DELIVER_WITHIN);
        dutch::serve(&mut honest, identity(), strategy.clone(), DELIVER_WITHIN);
        sealed_bid::serve(&mut honest, identity(), strategy.clone(), DELIVER_WITHIN);
        double_auction::serve(&mut honest, identity(), strategy.clone(), Sales::new(), DELIVER_WITHIN);
        let honest = bureau.add(honest).unwrap();

        // The rogue hears every opening, answers nothing on its own, and records refusals.
        let mut rogue = Agent::builder(ROGUE).seed(ROGUE).build().unwrap();
        let rogue_ears = Ears::default();
        rogue_ears.listen(&mut rogue);
        let ears = rogue_ears.clone();
        rogue.on_message(move |_: Context, _: Address, m: english::Opening| ears.heard(&m.auction));
        let ears = rogue_ears.clone();
        rogue.on_message(move |_: Context, _: Address, m: dutch::Clock| ears.heard(&m.auction));
        let ears = rogue_ears.clone();
        rogue.on_message(move |_: Context, _: Address, m: CallForBids| ears.heard(&m.auction));
        let ears = rogue_ears.clone();
        rogue.on_message(move |_: Context, _: Address, m: RoundOpen| ears.heard(&m.round));
        rogue.on_message(|_: Context, _: Address, _: english::Standing| std::future::ready(()));
        rogue.on_message(|_: Context, _: Address, _: english::Closed| std::future::ready(()));
        rogue.on_message(|_: Context, _: Address, _: dutch::Closed| std::future::ready(()));
        rogue.on_message(|_: Context, _: Address, _: sealed_bid::Closed| std::future::ready(()));
        rogue.on_message(|_: Context, _: Address, _: double_auction::Cleared| std::future::ready(()));
        let rogue = bureau.add(rogue).unwrap();

        let mut other = Agent::builder("other auctioneer").seed("roles other auctioneer").build().unwrap();
        let other_english = english::Auctioneer::serve(&mut other, Sales::new());
        let other_ears = Ears::default();
        other_ears.listen(&mut other);
        let other = bureau.add(other).unwrap();

        let floor = Floor {
            bureau,
            ledger,
            auctioneer,
            english,
            dutch,
            sealed,
            house,
            honest,
            strategy,
            rogue,
            rogue_ears,
            other,
            other_english,
            other_ears,
        };
        let mint = Wallet::new(mint, floor.ledger.clone());
        for agent in [honest, rogue, auctioneer, other] {
            mint.mint(floor.wallet(agent), FUNDS).await.unwrap();
        }
        floor
    }

    pub fn ctx(&self, agent: Address) -> Context {
        self.bureau.context(agent).unwrap()
    }

    pub fn wallet(&self, agent: Address) -> Address {
        self.ctx(agent).wallet().unwrap().address()
    }

    pub async fn balance(&self, agent: Address) -> u128 {
        self.ledger.balance(self.wallet(agent)).await.unwrap()
    }

    /// Waits (bounded) until each agent's balance is as `expected`, and checks that they
    /// (every party on the floor) hold the whole supply: nothing locked, made or lost.
    pub async fn settles(&self, expected: &[(Address, u128)]) {
        let wallets: Vec<(Address, u128)> = expected.iter().map(|(agent, b)| (self.wallet(*agent), *b)).collect();
        super::paid::settle(&self.ledger, &wallets).await;
    }

    /// A trader that asks `price` or more for one unit in each double-auction round, and
    /// delivers what it sells; funded like the others.
    pub async fn seller(&self, price: u128) -> Address {
        let mut agent = Agent::builder("seller").seed("roles seller").build().unwrap();
        let sales = Sales::new();
        let trader = Arc::new(Sells(price));
        double_auction::serve(&mut agent, Identity::from_seed("roles seller"), trader, sales.clone(), DELIVER_WITHIN);
        settlement::serve_sales(&mut agent, sales, Arc::new(Lots));
        let seller = self.bureau.add(agent).unwrap();
        let mint = Wallet::new(Identity::from_seed(MINT), self.ledger.clone());
        mint.mint(self.wallet(seller), FUNDS).await.unwrap();
        seller
    }

    /// The rogue sends `message` to `to`, and is told it was refused in `dialogue`, which is
    /// unchanged in `dialogues` (the dialogues it names, at the receiver).
    pub async fn refused<M: Message>(&self, to: Address, message: M, dialogue: u128, dialogues: &Dialogues) -> Refused {
        self.refused_in(to, message, dialogue, || dialogues.get(dialogue)).await
    }

    /// [`refused`](Self::refused), with the dialogue as `read` gives it.
    pub async fn refused_in<M: Message>(
        &self,
        to: Address,
        message: M,
        dialogue: u128,
        read: impl Fn() -> Option<Dialogue>,
    ) -> Refused {
        let before = read();
        self.rogue_ears.refusals.lock().clear();
        self.ctx(self.rogue).send(to, message).await.unwrap();
        let refused = self.rogue_ears.refusal(dialogue).await;
        assert_eq!(read(), before, "{} refused, and nothing changed", M::NAME);
        refused
    }
}

/// Waits (bounded) for the honest bidder's payments, then checks that it paid `total` to
/// the auctioneer, that no one else's balance moved, and that nothing is locked.
pub async fn paid_once(f: &Floor, total: u128) {
    let expected = [(f.auctioneer, FUNDS + total), (f.honest, FUNDS - total), (f.rogue, FUNDS), (f.other, FUNDS)];
    f.settles(&expected).await;
    assert!(
        f.strategy.settled.lock().iter().all(|s| matches!(s, Ok(Settled::Paid { .. }))),
        "{:?}",
        f.strategy.settled.lock()
    );
}
