//! Wallets and ledgers: transfers, escrow, nonces, authority, history, invariants, and the
//! ledger served over libp2p.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use agent_core::ledger::{
    DealId, Ledger, LedgerError, LocalLedger, LocalLedgerConfig, Operation, RemoteLedger, Transaction,
};
use agent_core::{Agent, Bureau, Config, Identity, Wallet, WalletError};
use proptest::prelude::*;

const T0: u64 = 1_790_000_000_000;

struct Setup {
    ledger: Arc<LocalLedger>,
    faucet: Wallet,
    clock: Arc<AtomicU64>,
}

fn setup() -> Setup {
    let mint = Identity::from_seed("mint");
    let clock = Arc::new(AtomicU64::new(T0));
    let read = clock.clone();
    let config = LocalLedgerConfig::default()
        .with_authority(mint.address())
        .with_durable(false)
        .with_clock(move || read.load(Ordering::SeqCst));
    let ledger = Arc::new(LocalLedger::open(config).unwrap());
    let faucet = Wallet::new(mint, ledger.clone());
    Setup { ledger, faucet, clock }
}

fn wallet(s: &Setup, name: &str) -> Wallet {
    Wallet::new(Identity::from_seed(name).derive("wallet"), s.ledger.clone())
}

#[tokio::test]
async fn transfers_move_money_and_history_lists_them() {
    let s = setup();
    let (alice, bob) = (wallet(&s, "alice"), wallet(&s, "bob"));
    s.faucet.mint(alice.address(), 1_000).await.unwrap();
    alice.transfer(bob.address(), 300, "rent").await.unwrap();
    bob.transfer(alice.address(), 50, "change").await.unwrap();
    assert_eq!(alice.balance().await.unwrap(), 750);
    assert_eq!(bob.balance().await.unwrap(), 250);
    let history = alice.history(10).await.unwrap();
    let memos: Vec<&str> = history.iter().map(|r| r.tx.memo.as_str()).collect();
    assert_eq!(memos, ["change", "rent", ""], "newest first, including the mint");
    assert_eq!(s.ledger.supply().unwrap(), 1_000);
    assert_eq!(s.ledger.audit_total().unwrap(), 1_000);
}

#[tokio::test]
async fn insufficient_funds_is_typed_and_nothing_is_signed() {
    let s = setup();
    let (alice, bob) = (wallet(&s, "alice"), wallet(&s, "bob"));
    s.faucet.mint(alice.address(), 100).await.unwrap();
    let height = s.ledger.height().unwrap();
    let err = alice.transfer(bob.address(), 101, "").await.unwrap_err();
    assert_eq!(err, WalletError::InsufficientFunds { needed: 101, available: 100 });
    assert_eq!(s.ledger.height().unwrap(), height, "nothing reached the ledger");
    assert_eq!(s.ledger.next_nonce(alice.address()).await.unwrap(), 0, "no nonce consumed");
    // The ledger enforces it too, for transactions that bypass the wallet's check.
    let tx = Transaction::sign(
        &Identity::from_seed("alice").derive("wallet"),
        0,
        Operation::Transfer { to: bob.address(), amount: 500 },
        "",
    );
    assert!(matches!(
        s.ledger.submit(tx).await,
        Err(LedgerError::InsufficientFunds { needed: 500, available: 100, .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_transfers_from_one_wallet_all_apply() {
    let s = setup();
    let (alice, bob) = (wallet(&s, "alice"), wallet(&s, "bob"));
    s.faucet.mint(alice.address(), 20_000).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (alice, to) = (alice.clone(), bob.address());
            tokio::spawn(async move { alice.transfer(to, 100 + i, format!("t{i}")).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(bob.balance().await.unwrap(), (0..20).map(|i| 100 + i).sum::<u128>());
    assert_eq!(s.ledger.next_nonce(alice.address()).await.unwrap(), 20);
}

#[tokio::test]
async fn forged_replayed_and_unauthorised_transactions_fail() {
    let s = setup();
    let alice_id = Identity::from_seed("alice").derive("wallet");
    let (alice, bob, carol) = (wallet(&s, "alice"), wallet(&s, "bob"), wallet(&s, "carol"));
    s.faucet.mint(alice.address(), 1_000).await.unwrap();

    // Signed by the wrong key: mallory claims to be alice.
    let mallory = Identity::from_seed("mallory");
    let mut forged = Transaction::sign(&mallory, 0, Operation::Transfer { to: mallory.address(), amount: 10 }, "");
    forged.signer = alice.address();
    assert_eq!(s.ledger.submit(forged.clone()).await, Err(LedgerError::SignerKeyMismatch));
    forged.signer_key = alice_id.public_key();
    assert_eq!(s.ledger.submit(forged).await, Err(LedgerError::BadSignature));

    // Tampered after signing.
    let mut tampered = Transaction::sign(&alice_id, 0, Operation::Transfer { to: bob.address(), amount: 1 }, "");
    tampered.operation = Operation::Transfer { to: bob.address(), amount: 999 };
    assert_eq!(s.ledger.submit(tampered).await, Err(LedgerError::BadSignature));
    let lock = |deal| Operation::Lock {
        amount: 1,
        beneficiary: bob.address(),
        deadline_ms: T0 + 1,
        arbiter: bob.address(),
        deal: Some(DealId::named(deal)),
    };
    let mut moved = Transaction::sign(&alice_id, 0, lock("the deal agreed"), "");
    moved.operation = lock("another deal");
    assert_eq!(s.ledger.submit(moved).await, Err(LedgerError::BadSignature), "the deal is signed");

    // Replayed and reordered.
    let first = Transaction::sign(&alice_id, 0, Operation::Transfer { to: bob.address(), amount: 1 }, "");
    s.ledger.submit(first.clone()).await.unwrap();
    assert!(matches!(s.ledger.submit(first).await, Err(LedgerError::NonceMismatch { expected: 1, got: 0, .. })));
    let ahead = Transaction::sign(&alice_id, 5, Operation::Transfer { to: bob.address(), amount: 1 }, "");
    assert!(matches!(s.ledger.submit(ahead).await, Err(LedgerError::NonceMismatch { expected: 1, got: 5, .. })));

    // Mint without authority.
    assert!(matches!(alice.mint(alice.address(), 1).await, Err(WalletError::Ledger(LedgerError::Unauthorized(_)))));

    // Release and refund by a third party.
    let arbiter = wallet(&s, "arbiter");
    let (escrow, _) = alice.lock(100, bob.address(), T0 + 1_000, arbiter.address(), None).await.unwrap();
    assert!(matches!(carol.release(escrow).await, Err(WalletError::Ledger(LedgerError::Unauthorized(_)))));
    s.clock.store(T0 + 2_000, Ordering::SeqCst);
    assert!(matches!(carol.refund(escrow).await, Err(WalletError::Ledger(LedgerError::Unauthorized(_)))));
    assert_eq!(s.ledger.audit_total().unwrap(), 1_000);
}

#[tokio::test]
async fn escrow_releases_to_the_beneficiary_or_refunds_after_the_deadline() {
    let s = setup();
    let (alice, bob, arbiter) = (wallet(&s, "alice"), wallet(&s, "bob"), wallet(&s, "arbiter"));
    s.faucet.mint(alice.address(), 1_000).await.unwrap();

    // Released by the arbiter (the condition); the deal it settles is named in the escrow,
    // in the receipts of the lock and the release, and so in the history.
    let deal = DealId::named("flight BER-LIS, booking 7");
    let (first, locked) = alice.lock(300, bob.address(), T0 + 1_000, arbiter.address(), Some(deal)).await.unwrap();
    assert_eq!(alice.balance().await.unwrap(), 700);
    let open = s.ledger.escrow(first).await.unwrap().unwrap();
    assert_eq!((open.amount, open.deal), (300, Some(deal)));
    assert_eq!(locked.deal, Some(deal));
    let released = arbiter.release(first).await.unwrap();
    assert_eq!(released.deal, Some(deal), "the release names what it settles");
    assert_eq!(bob.balance().await.unwrap(), 300);
    let history = bob.history(10).await.unwrap();
    assert_eq!(history.iter().filter(|r| r.deal == Some(deal)).count(), 2, "lock and release, in bob's history");
    assert!(
        matches!(alice.release(first).await, Err(WalletError::Ledger(LedgerError::UnknownEscrow(_)))),
        "settled once"
    );

    // Refunded by the payer only after the deadline; by an arbiter other than the payer at
    // any time (it decides the condition failed); by a payer that is its own arbiter only
    // after the deadline too.
    let (second, _) = alice.lock(200, bob.address(), T0 + 1_000, arbiter.address(), None).await.unwrap();
    assert!(matches!(alice.refund(second).await, Err(WalletError::Ledger(LedgerError::EscrowNotExpired { .. }))));
    let (third, _) = alice.lock(100, bob.address(), T0 + 1_000, arbiter.address(), None).await.unwrap();
    arbiter.refund(third).await.expect("the arbiter refunds before the deadline");
    assert_eq!(alice.balance().await.unwrap(), 500, "300 released to bob, 200 locked, 100 locked and back");
    assert!(matches!(bob.refund(second).await, Err(WalletError::Ledger(LedgerError::Unauthorized(_)))));
    let (own, _) = alice.lock(50, bob.address(), T0 + 1_000, alice.address(), None).await.unwrap();
    assert!(
        matches!(alice.refund(own).await, Err(WalletError::Ledger(LedgerError::EscrowNotExpired { .. }))),
        "a payer that is its own arbiter cannot take it back early"
    );
    s.clock.store(T0 + 1_001, Ordering::SeqCst);
    alice.refund(second).await.unwrap();
    alice.refund(own).await.unwrap();
    assert_eq!(alice.balance().await.unwrap(), 700);
    assert_eq!(s.ledger.audit_total().unwrap(), 1_000);
}

#[tokio::test]
async fn a_ledger_persists_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let mint = Identity::from_seed("mint");
    let config = || LocalLedgerConfig::default().with_path(dir.path()).with_authority(mint.address());
    let alice = Identity::from_seed("alice").address();
    {
        let ledger = Arc::new(LocalLedger::open(config()).unwrap());
        Wallet::new(mint.clone(), ledger).mint(alice, 42).await.unwrap();
    }
    let ledger = LocalLedger::open(config()).unwrap();
    assert_eq!(ledger.balance(alice).await.unwrap(), 42);
    assert_eq!(ledger.history(alice, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn agents_get_wallets_from_their_bureau_without_contacting_the_ledger() {
    let s = setup();
    // A bureau whose ledger is unreachable still starts its agents.
    let unreachable =
        RemoteLedger::new(libp2p::PeerId::random(), vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()]).unwrap();
    let offline = Bureau::with_config(Config::default().with_ledger(Arc::new(unreachable))).unwrap();
    let agent = offline.add(Agent::builder("offline").build().unwrap()).unwrap();
    let wallet = offline.context(agent).unwrap().wallet().unwrap();
    assert!(matches!(wallet.balance().await, Err(WalletError::Ledger(LedgerError::Unavailable(_)))));
    offline.shutdown().await.unwrap();

    let bureau = Bureau::with_config(Config::default().with_ledger(s.ledger.clone())).unwrap();
    let buyer = bureau.add(Agent::builder("buyer").seed("buyer").build().unwrap()).unwrap();
    let ctx = bureau.context(buyer).unwrap();
    let wallet = ctx.wallet().unwrap();
    assert_eq!(wallet.address(), Identity::from_seed("buyer").derive("wallet").address());
    s.faucet.mint(wallet.address(), 5).await.unwrap();
    assert_eq!(ctx.wallet().unwrap().balance().await.unwrap(), 5);
    bureau.shutdown().await.unwrap();
    let no_ledger = Bureau::new().unwrap();
    let agent = no_ledger.add(Agent::builder("x").build().unwrap()).unwrap();
    assert!(matches!(no_ledger.context(agent).unwrap().wallet(), Err(WalletError::NoLedger)));
}

#[tokio::test]
async fn wallets_settle_on_a_ledger_served_over_libp2p() {
    let s = setup();
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let server =
        agent_core::ledger::service::serve(s.ledger.clone(), keypair, &["/ip4/127.0.0.1/tcp/0".parse().unwrap()])
            .await
            .unwrap();
    let remote = Arc::new(RemoteLedger::new(server.peer_id(), server.listen_addrs().to_vec()).unwrap());
    let alice = Wallet::new(Identity::from_seed("alice").derive("wallet"), remote.clone());
    let bob = Wallet::new(Identity::from_seed("bob").derive("wallet"), remote.clone());
    s.faucet.mint(alice.address(), 100).await.unwrap();
    alice.transfer(bob.address(), 40, "over the network").await.unwrap();
    assert_eq!(bob.balance().await.unwrap(), 40);
    assert_eq!(s.ledger.balance(bob.address()).await.unwrap(), 40, "the hosting ledger has it");
    assert!(matches!(
        alice.transfer(bob.address(), 1_000, "").await,
        Err(WalletError::InsufficientFunds { needed: 1_000, available: 60 })
    ));
    let replay = alice.history(1).await.unwrap().remove(0).tx;
    assert!(matches!(remote.submit(replay).await, Err(LedgerError::NonceMismatch { .. })));
}

#[derive(Debug, Clone)]
enum Op {
    Transfer { from: usize, to: usize, amount: u128 },
    Lock { from: usize, to: usize, amount: u128, deadline_offset: u64 },
    Release { by: usize, lock: usize },
    Refund { by: usize, lock: usize },
    Tick(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..6usize, 0..6usize, 1..400u128).prop_map(|(from, to, amount)| Op::Transfer { from, to, amount }),
        2 => (0..6usize, 0..6usize, 1..400u128, 0..50u64).prop_map(|(from, to, amount, deadline_offset)| Op::Lock { from, to, amount, deadline_offset }),
        1 => (0..6usize, 0..20usize).prop_map(|(by, lock)| Op::Release { by, lock }),
        1 => (0..6usize, 0..20usize).prop_map(|(by, lock)| Op::Refund { by, lock }),
        1 => (1..40u64).prop_map(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn supply_is_conserved_balances_stay_whole_and_nonces_are_used_once(
        batches in proptest::collection::vec(proptest::collection::vec(op(), 1..6), 1..8)
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let s = setup();
            let wallets: Vec<Wallet> = (0..6).map(|i| wallet(&s, &format!("w{i}"))).collect();
            for w in &wallets {
                s.faucet.mint(w.address(), 1_000).await.unwrap();
            }
            let locks = Arc::new(parking_lot::Mutex::new(Vec::new()));
            for batch in batches {
                // Each batch runs concurrently; failures (funds, deadlines, authority) are fine.
                let tasks: Vec<_> = batch.into_iter().map(|op| {
                    let (wallets, locks, clock) = (wallets.clone(), locks.clone(), s.clock.clone());
                    tokio::spawn(async move {
                        match op {
                            Op::Transfer { from, to, amount } => { let _ = wallets[from].transfer(wallets[to].address(), amount, "").await; }
                            Op::Lock { from, to, amount, deadline_offset } => {
                                let deadline = clock.load(Ordering::SeqCst) + deadline_offset;
                                if let Ok((id, _)) = wallets[from].lock(amount, wallets[to].address(), deadline, wallets[(from + 1) % 6].address(), None).await {
                                    locks.lock().push(id);
                                }
                            }
                            Op::Release { by, lock } => { let id = locks.lock().get(lock).copied(); if let Some(id) = id { let _ = wallets[by].release(id).await; } }
                            Op::Refund { by, lock } => { let id = locks.lock().get(lock).copied(); if let Some(id) = id { let _ = wallets[by].refund(id).await; } }
                            Op::Tick(ms) => { clock.fetch_add(ms, Ordering::SeqCst); }
                        }
                    })
                }).collect();
                for task in tasks {
                    task.await.unwrap();
                }
                assert_eq!(s.ledger.audit_total().unwrap(), 6_000, "total supply conserved");
                assert_eq!(s.ledger.supply().unwrap(), 6_000);
            }
            let mint_address = Identity::from_seed("mint").address();
            for account in wallets.iter().map(|w| w.address()).chain([mint_address]) {
                let next = s.ledger.next_nonce(account).await.unwrap();
                let mut nonces: Vec<u64> = s.ledger.history(account, 10_000).await.unwrap()
                    .into_iter().filter(|r| r.tx.signer == account).map(|r| r.tx.nonce).collect();
                nonces.sort_unstable();
                let expected: Vec<u64> = (0..next).collect();
                assert_eq!(nonces, expected, "each nonce used exactly once, none skipped");
            }
        });
    }
}

/// A ledger on disk whose disk fails on demand, with 100 tokens minted to alice.
async fn faulty_ledger(dir: &std::path::Path) -> (LocalLedger, agent_core::store::Faults, Identity) {
    let mint = Identity::from_seed("faulty mint");
    let faults = agent_core::store::Faults::new();
    let config = LocalLedgerConfig::default().with_path(dir).with_authority(mint.address());
    let ledger = LocalLedger::open(config.with_faults(faults.clone())).unwrap();
    let alice = Identity::from_seed("faulty alice");
    ledger.submit(Transaction::sign(&mint, 0, Operation::Mint { to: alice.address(), amount: 100 }, "")).await.unwrap();
    (ledger, faults, alice)
}

/// The disk fails under the ledger: a transaction that was applied but whose commit failed
/// is reported as maybe applied (never as "nothing changed"), a refusal stays a refusal,
/// and after reopening the books balance and every nonce matches the history.
#[tokio::test]
async fn a_failed_commit_is_reported_as_maybe_applied() {
    let bob = Identity::from_seed("faulty bob").address();

    let refused_dir = tempfile::tempdir().unwrap();
    let (ledger, faults, alice) = faulty_ledger(refused_dir.path()).await;
    faults.fail_syncs(true);
    let replay = Transaction::sign(&alice, 7, Operation::Transfer { to: bob, amount: 1 }, "");
    let refused = ledger.submit(replay).await;
    assert!(matches!(refused, Err(LedgerError::NonceMismatch { .. })), "a refusal stays a refusal: {refused:?}");

    let dir = tempfile::tempdir().unwrap();
    let (ledger, faults, alice) = faulty_ledger(dir.path()).await;
    let ledger = Arc::new(ledger);
    let wallet = Wallet::new(alice.clone(), ledger.clone());
    faults.fail_syncs(true);
    match wallet.transfer(bob, 30, "during the fault").await {
        Err(WalletError::Ledger(LedgerError::Unavailable(reason))) => {
            assert!(reason.contains("injected fault"), "{reason}")
        }
        other => panic!("a failed commit must be 'may have been applied', got {other:?}"),
    }
    // The disk recovers: the ledger reopens its file by itself, and the wallet learns from
    // the ledger whether the first transfer counted before it signs the next one.
    faults.fail_syncs(false);
    wallet.transfer(bob, 30, "after the fault").await.unwrap();
    let check = |ledger: &LocalLedger| {
        let ledger = ledger.clone();
        let alice = alice.address();
        async move {
            assert_eq!(ledger.supply().unwrap(), 100);
            assert_eq!(ledger.audit_total().unwrap(), 100, "nothing half applied");
            let history = ledger.history(alice, 100).await.unwrap();
            let sent = history.iter().filter(|r| r.tx.signer == alice).count() as u64;
            assert!(sent == 1 || sent == 2, "{sent} transfers recorded");
            assert_eq!(ledger.next_nonce(alice).await.unwrap(), sent);
            assert_eq!(ledger.balance(bob).await.unwrap(), 30 * u128::from(sent), "each recorded transfer paid once");
        }
    };
    check(&ledger).await;
    drop(wallet);
    drop(ledger);
    let reopened = LocalLedger::open(LocalLedgerConfig::default().with_path(dir.path())).unwrap();
    check(&reopened).await;
}
