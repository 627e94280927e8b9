//! 64 wallets transferring at once through a running `ledger-node`: every transfer is
//! acknowledged, and each is in the ledger afterwards, also after a kill -9 and a restart
//! of the node. A hung store fails the test through its own deadlines.

mod common;

use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{Ledger, RemoteLedger};
use agent_core::{Identity, Wallet};
use common::{free_tcp_port, Node};

const WALLETS: usize = 64;
const ROUNDS: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_transfers_are_all_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_tcp_port();
    let mint = Identity::from_seed("stress mint");
    let args = common::args(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--listen",
        &format!("/ip4/127.0.0.1/tcp/{port}"),
        "--authority",
        &mint.address().to_string(),
        "--node-seed",
        "ledger stress node",
    ]);
    let mut node = Node::spawn(env!("CARGO_BIN_EXE_ledger-node"), &args);
    let ledger = Arc::new(RemoteLedger::new(node.peer_id, node.addrs.clone()).unwrap());
    let faucet = Wallet::new(mint, ledger.clone());
    let sink = Identity::from_seed("stress sink").address();
    let wallets: Vec<Wallet> =
        (0..WALLETS).map(|i| Wallet::new(Identity::from_seed(&format!("stress payer {i}")), ledger.clone())).collect();
    for wallet in &wallets {
        faucet.mint(wallet.address(), 1_000).await.unwrap();
    }
    for round in 0..ROUNDS {
        let transfers = wallets.iter().map(|wallet| async move {
            tokio::time::timeout(Duration::from_secs(20), wallet.transfer(sink, 10, format!("round {round}"))).await
        });
        let results = futures::future::join_all(transfers).await;
        let unanswered = results.iter().filter(|r| r.is_err()).count();
        assert_eq!(unanswered, 0, "round {round}: {unanswered} of {WALLETS} transfers got no answer in 20 s");
        for (i, result) in results.into_iter().enumerate() {
            result.unwrap().unwrap_or_else(|e| panic!("round {round}: transfer {i} refused: {e}"));
        }
    }
    check(&ledger, &wallets, sink).await;
    // Acknowledged means on disk: kill -9, restart on the same port, and it all is back.
    node.kill();
    let _restarted = Node::spawn(env!("CARGO_BIN_EXE_ledger-node"), &args);
    common::until_ledger_answers(&ledger).await;
    check(&ledger, &wallets, sink).await;
}

async fn check(ledger: &RemoteLedger, wallets: &[Wallet], sink: agent_core::Address) {
    for wallet in wallets {
        assert_eq!(ledger.balance(wallet.address()).await.unwrap(), 1_000 - 10 * u128::from(ROUNDS));
        assert_eq!(ledger.next_nonce(wallet.address()).await.unwrap(), ROUNDS);
    }
    assert_eq!(ledger.balance(sink).await.unwrap(), 10 * WALLETS as u128 * u128::from(ROUNDS));
}
