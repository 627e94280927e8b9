//! kill -9 of the ledger process during a stream of transfers: after a restart every
//! acknowledged transaction is present, and none is half-applied.

mod common;

use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{Ledger, RemoteLedger, TxHash};
use agent_core::{Identity, Wallet, WalletError};
use common::{free_tcp_port, Node};

fn start(dir: &std::path::Path, port: u16, authority: &Identity) -> Node {
    let args = vec![
        "--data-dir".to_string(),
        dir.to_str().unwrap().to_string(),
        "--listen".into(),
        format!("/ip4/127.0.0.1/tcp/{port}"),
        "--node-seed".into(),
        "crash test node".into(),
        "--authority".into(),
        authority.address().to_string(),
    ];
    Node::spawn(env!("CARGO_BIN_EXE_ledger-node"), &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_transactions_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_tcp_port();
    let mint = Identity::from_seed("crash mint");
    let mut node = start(dir.path(), port, &mint);
    let address: libp2p::Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let ledger = Arc::new(RemoteLedger::new(node.peer_id, vec![address.clone()]).unwrap());
    let alice = Wallet::new(Identity::from_seed("crash alice"), ledger.clone());
    let bob = Identity::from_seed("crash bob").address();
    let faucet = Wallet::new(mint, ledger.clone());
    faucet.mint(alice.address(), 1_000_000).await.unwrap();

    // Stream transfers; kill the node once 40 are acknowledged, keep submitting for a while.
    let mut acknowledged: Vec<TxHash> = Vec::new();
    let mut failures = 0;
    let mut killed = false;
    for i in 0..400u32 {
        match tokio::time::timeout(Duration::from_secs(15), alice.transfer(bob, 1 + u128::from(i % 7), format!("t{i}")))
            .await
        {
            Ok(Ok(receipt)) => acknowledged.push(receipt.hash),
            Ok(Err(WalletError::Ledger(agent_core::ledger::LedgerError::Unavailable(_)))) | Err(_) => failures += 1,
            Ok(Err(other)) => panic!("unexpected refusal: {other}"),
        }
        if acknowledged.len() == 40 && !killed {
            node.kill();
            killed = true;
        }
        if killed && failures >= 3 {
            break;
        }
    }
    assert!(killed && failures >= 3, "the node was killed mid-stream and sends failed");

    let node = start(dir.path(), port, &Identity::from_seed("crash mint"));
    // The client reconnects by itself (bounded wait).
    let mut history = None;
    for _ in 0..100 {
        let attempt = ledger.history(alice.address(), 10_000).await;
        if let Ok(h) = attempt {
            history = Some(h);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let history = history.expect("the restarted node answers");
    let present: std::collections::HashSet<TxHash> = history.iter().map(|r| r.hash).collect();
    for hash in &acknowledged {
        assert!(present.contains(hash), "acknowledged transaction {hash} lost");
    }
    // No half-applied transaction: the money is all there, and moved exactly as recorded.
    let transfers: u128 = history
        .iter()
        .filter_map(|r| match r.tx.operation {
            agent_core::ledger::Operation::Transfer { amount, .. } => Some(amount),
            _ => None,
        })
        .sum();
    let alice_balance = ledger.balance(alice.address()).await.unwrap();
    let bob_balance = ledger.balance(bob).await.unwrap();
    assert_eq!(bob_balance, transfers);
    assert_eq!(alice_balance + bob_balance, 1_000_000);
    let sent = history.iter().filter(|r| r.tx.signer == alice.address()).count() as u64;
    assert_eq!(ledger.next_nonce(alice.address()).await.unwrap(), sent);
    // And the wallet carries on after the restart.
    alice.transfer(bob, 5, "after restart").await.unwrap();
    drop(node);
}
