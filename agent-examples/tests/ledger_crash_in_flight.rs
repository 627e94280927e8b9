//! kill -9 of `ledger-node` with 64 submitters in flight (transfers, escrow locks and
//! releases): after a restart every acknowledged transaction is present, none is half
//! applied (each account and escrow matches the history exactly), supply is unchanged, and
//! every wallet carries on with the right nonce.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_core::ledger::{DealId, EscrowId, Ledger, Operation, RemoteLedger, TxHash};
use agent_core::{Address, Identity, Wallet};
use common::{free_tcp_port, Node};

const SUBMITTERS: usize = 64;
const FUNDS: u128 = 1_000_000;
const LOCKED: u128 = 10;

fn start(dir: &std::path::Path, port: u16, mint: &Identity) -> Node {
    let args = common::args(&[
        "--data-dir",
        dir.to_str().unwrap(),
        "--listen",
        &format!("/ip4/127.0.0.1/tcp/{port}"),
        "--node-seed",
        "in-flight crash node",
        "--authority",
        &mint.address().to_string(),
    ]);
    Node::spawn(env!("CARGO_BIN_EXE_ledger-node"), &args)
}

/// One submitter: transfer, lock, release, again, until the first failure (at most 300).
async fn submit_until_failure(
    wallet: Wallet,
    sink: Address,
    acked: Arc<Mutex<Vec<TxHash>>>,
    count: Arc<AtomicUsize>,
) -> Wallet {
    let mut open: Option<EscrowId> = None;
    for i in 0..300u32 {
        let deadline = agent_core::envelope::unix_now_ms() + 3_600_000;
        let attempt = async {
            match (i % 3, open) {
                (2, Some(id)) => wallet.release(id).await.map(|r| (r, None)),
                (1, _) => {
                    let deal = DealId::named(&format!("{} deal {i}", wallet.address()));
                    wallet.lock(LOCKED, sink, deadline, wallet.address(), Some(deal)).await.map(|(id, r)| (r, Some(id)))
                }
                _ => wallet.transfer(sink, 1 + u128::from(i % 5), "").await.map(|r| (r, None)),
            }
        };
        match tokio::time::timeout(Duration::from_secs(20), attempt).await {
            Ok(Ok((receipt, locked))) => {
                if matches!(receipt.tx.operation, Operation::Release { .. }) {
                    open = None;
                }
                if locked.is_some() {
                    open = locked;
                }
                acked.lock().unwrap().push(receipt.hash);
                count.fetch_add(1, Ordering::SeqCst);
            }
            _ => return wallet,
        }
    }
    wallet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_64_submitters_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_tcp_port();
    let mint = Identity::from_seed("in-flight mint");
    let mut node = start(dir.path(), port, &mint);
    let address: libp2p::Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let ledger = Arc::new(RemoteLedger::new(node.peer_id, vec![address]).unwrap());
    let faucet = Wallet::new(mint.clone(), ledger.clone());
    let sink = Identity::from_seed("in-flight sink").address();
    let payers: Vec<Identity> = (0..SUBMITTERS).map(|i| Identity::from_seed(&format!("in-flight payer {i}"))).collect();
    for payer in &payers {
        faucet.mint(payer.address(), FUNDS).await.unwrap();
    }

    let acked = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = payers
        .iter()
        .map(|payer| {
            let wallet = Wallet::new(payer.clone(), ledger.clone());
            tokio::spawn(submit_until_failure(wallet, sink, acked.clone(), count.clone()))
        })
        .collect();
    // Kill once 640 are acknowledged (about ten each), with all 64 still submitting.
    for _ in 0..600 {
        if count.load(Ordering::SeqCst) >= 640 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(count.load(Ordering::SeqCst) >= 640, "the submitters made progress before the kill");
    node.kill();
    let mut wallets = Vec::new();
    for task in tasks {
        wallets
            .push(tokio::time::timeout(Duration::from_secs(60), task).await.expect("every submitter stops").unwrap());
    }
    let acked: HashSet<TxHash> = acked.lock().unwrap().iter().copied().collect();

    let _node = start(dir.path(), port, &mint);
    common::until_ledger_answers(&ledger).await;

    // The history is the ground truth: every acknowledged transaction is in it, and every
    // account and escrow is exactly what the history says, so nothing was half applied.
    let mut present = HashSet::new();
    let mut sink_expected: u128 = 0;
    let mut total_open: u128 = 0;
    for payer in &payers {
        let history = ledger.history(payer.address(), 10_000).await.unwrap();
        let mut balance = FUNDS;
        let mut open: HashMap<EscrowId, u128> = HashMap::new();
        let mut sent = 0u64;
        for receipt in history.iter().rev() {
            present.insert(receipt.hash);
            if receipt.tx.signer != payer.address() {
                continue; // The mint.
            }
            sent += 1;
            match &receipt.tx.operation {
                Operation::Transfer { amount, .. } => {
                    balance -= amount;
                    sink_expected += amount;
                }
                Operation::Lock { amount, deal, .. } => {
                    balance -= amount;
                    assert_eq!(receipt.deal, *deal, "the lock's receipt names its deal");
                    open.insert(receipt.escrow.expect("a lock names its escrow"), *amount);
                }
                Operation::Release { escrow } => {
                    sink_expected += open.remove(escrow).expect("a release settles an open escrow");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(ledger.balance(payer.address()).await.unwrap(), balance, "payer balance matches its history");
        assert_eq!(ledger.next_nonce(payer.address()).await.unwrap(), sent, "nonce matches its history");
        for (id, amount) in &open {
            let escrow = ledger.escrow(*id).await.unwrap().expect("an escrow the history leaves open is open");
            assert_eq!(escrow.amount, *amount);
        }
        total_open += open.values().sum::<u128>();
    }
    for hash in &acked {
        assert!(present.contains(hash), "acknowledged transaction {hash} lost");
    }
    let sink_balance = ledger.balance(sink).await.unwrap();
    assert_eq!(sink_balance, sink_expected, "the payee got exactly what the histories say");
    let held: u128 = {
        let mut sum = sink_balance + total_open;
        for payer in &payers {
            sum += ledger.balance(payer.address()).await.unwrap();
        }
        sum
    };
    assert_eq!(held, FUNDS * SUBMITTERS as u128, "supply unchanged");

    // Every submitter's wallet carries on: it learns its nonce from the ledger after the
    // failure instead of reusing or skipping one.
    for wallet in &wallets {
        wallet.transfer(sink, 1, "after the restart").await.unwrap();
    }
    for (wallet, payer) in wallets.iter().zip(&payers) {
        assert_eq!(wallet.address(), payer.address());
    }
}
