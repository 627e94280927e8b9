//! A sealed-bid winner that never answers the close and never pays, written by hand: the
//! auctioneer's outcome is the rule's (it won), its sale waits for the payment through the
//! payment window and then lapses, and no funds move or are lost (balances on the ledger).

use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{DealId, Ledger, LocalLedger, LocalLedgerConfig};
use agent_core::{Address, Agent, Bureau, Config, Context, Identity, Wallet};
use agent_protocols::auction::{self, Award};
use agent_protocols::sealed_bid::{self, BidAnswer, CallForBids, Pricing, SignedBid};
use agent_protocols::settlement::{self, Sales};

mod common;
use common::UpTo;

/// Hands over a lot.
struct Lots;

#[async_trait::async_trait]
impl settlement::Seller for Lots {
    async fn deliver(&self, _buyer: Address, _deal: DealId, price: u128) -> Result<serde_json::Value, String> {
        Ok(serde_json::json!({ "lot": 1, "paid": price.to_string() }))
    }
}

#[tokio::test]
async fn a_sealed_winner_that_never_answers_nor_pays_lapses_and_no_funds_move() {
    const SILENT: &str = "silent winner";
    let mint = Identity::from_seed("silent winner mint");
    let ledger = Arc::new(LocalLedger::open(LocalLedgerConfig::default().with_authority(mint.address())).unwrap());
    let mint = Wallet::new(mint, ledger.clone());
    let bureau = Bureau::with_config(Config::default().with_ledger(ledger.clone())).unwrap();
    let wallet = |agent: Address| bureau.context(agent).unwrap().wallet().unwrap().address();

    let sales = Sales::with_payment_window(Duration::from_millis(600));
    let mut agent = Agent::builder("auctioneer").build().unwrap();
    let house = sealed_bid::Auctioneer::serve(&mut agent, sales.clone());
    settlement::serve_sales(&mut agent, sales.clone(), Arc::new(Lots));
    let auctioneer = bureau.add(agent).unwrap();

    // It bids, signed, and then hears nothing: no handler for the close, no payment.
    let mut silent = Agent::builder(SILENT).seed(SILENT).build().unwrap();
    silent.on_message(|ctx: Context, from: Address, call: CallForBids| async move {
        let bid = BidAnswer::Bid(SignedBid::sign(&Identity::from_seed(SILENT), &call.auction, 120));
        assert!(ctx.send(from, bid).await.is_ok());
    });
    let silent = bureau.add(silent).unwrap();
    let mut rival = Agent::builder("honest rival").seed("honest rival").build().unwrap();
    let rival_strategy = UpTo::new(100);
    sealed_bid::serve(&mut rival, Identity::from_seed("honest rival"), rival_strategy.clone(), Duration::from_secs(1));
    let rival = bureau.add(rival).unwrap();
    for agent in [silent, rival] {
        mint.mint(wallet(agent), 1_000).await.unwrap();
    }

    let ctx = bureau.context(auctioneer).unwrap();
    let sealed = house
        .run(&ctx, &[silent, rival], &"lot 1", 10, Duration::from_millis(300), Pricing::SecondPrice)
        .await
        .unwrap();
    assert_eq!(sealed.award, Some(Award { winner: silent, price: 100 }), "the rule's outcome: {sealed:?}");
    let deal = auction::deal_of(&sealed.auction);
    assert!(sales.awaits(&deal), "within its window the sale waits for the winner");

    // The window closes (bounded wait): the sale lapses, handed back to the seller once.
    let mut lapsed = Vec::new();
    for _ in 0..60 {
        lapsed = sales.lapsed();
        if !lapsed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(lapsed, vec![settlement::Lapsed { deal, buyer: silent, price: 100 }]);
    assert!(!sales.awaits(&deal));
    assert!(rival_strategy.settled.lock().is_empty(), "the loser was asked for nothing");

    // Nothing moved: the seller was not paid, the bidders kept what they had, nothing is
    // locked, and no token was made or lost.
    assert_eq!(ledger.balance(wallet(auctioneer)).await.unwrap(), 0);
    assert_eq!(ledger.balance(wallet(silent)).await.unwrap(), 1_000);
    assert_eq!(ledger.balance(wallet(rival)).await.unwrap(), 1_000);
    let silent_wallet = bureau.context(silent).unwrap().wallet().unwrap();
    assert!(silent_wallet.open_escrows(10).await.unwrap().is_empty(), "nothing locked");
    assert_eq!(ledger.audit_total().unwrap(), 2_000);
    bureau.shutdown().await.unwrap();
}
