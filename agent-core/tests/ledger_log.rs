//! The local ledger's log on disk: a torn last write is cut off, damage is refused rather
//! than silently dropping acknowledged transactions, a failed write never resurfaces after
//! a restart, and reopening rebuilds exactly the state that was acknowledged.

use std::sync::Arc;

use agent_core::ledger::{DealId, Escrow, Ledger, LedgerError, LocalLedger, LocalLedgerConfig, Operation, Transaction};
use agent_core::store::Faults;
use agent_core::Identity;

const LOG: &str = "ledger.log";

/// Everything a user can read of a ledger, for comparing two openings of it.
#[derive(Debug, PartialEq)]
struct Seen {
    height: u64,
    supply: u128,
    total: u128,
    accounts: Vec<(u128, u64, Vec<agent_core::ledger::Receipt>)>,
    escrow: Option<Escrow>,
}

async fn seen(ledger: &LocalLedger, people: &[&Identity], escrow: agent_core::ledger::EscrowId) -> Seen {
    let mut accounts = Vec::new();
    for who in people {
        let address = who.address();
        accounts.push((
            ledger.balance(address).await.unwrap(),
            ledger.next_nonce(address).await.unwrap(),
            ledger.history(address, 1_000).await.unwrap(),
        ));
    }
    Seen {
        height: ledger.height().unwrap(),
        supply: ledger.supply().unwrap(),
        total: ledger.audit_total().unwrap(),
        accounts,
        escrow: ledger.escrow(escrow).await.unwrap(),
    }
}

/// A reopened ledger holds exactly what was acknowledged; a torn last write (a crash in the
/// middle of writing a group nobody was told about) is cut off; and mints replay even
/// when the ledger is reopened with another mint authority.
#[tokio::test]
async fn a_torn_last_write_is_cut_off_and_every_acknowledged_transaction_replays() {
    let dir = tempfile::tempdir().unwrap();
    let mint = Identity::from_seed("log mint");
    let (alice, bob, carol) =
        (Identity::from_seed("log alice"), Identity::from_seed("log bob"), Identity::from_seed("log carol"));
    let ledger =
        LocalLedger::open(LocalLedgerConfig::default().with_path(dir.path()).with_authority(mint.address())).unwrap();
    let submit = |tx| ledger.submit(tx);
    submit(Transaction::sign(&mint, 0, Operation::Mint { to: alice.address(), amount: 1_000 }, "")).await.unwrap();
    submit(Transaction::sign(&alice, 0, Operation::Transfer { to: bob.address(), amount: 100 }, "rent")).await.unwrap();
    let deal = DealId::named("log deal");
    let lock = Operation::Lock {
        amount: 300,
        beneficiary: bob.address(),
        deadline_ms: u64::MAX,
        arbiter: carol.address(),
        deal: Some(deal),
    };
    let locked = submit(Transaction::sign(&alice, 1, lock, "")).await.unwrap();
    let open_escrow = locked.escrow.unwrap();
    let second_lock = Operation::Lock {
        amount: 50,
        beneficiary: carol.address(),
        deadline_ms: 0,
        arbiter: bob.address(),
        deal: None,
    };
    let second = submit(Transaction::sign(&alice, 2, second_lock, "")).await.unwrap().escrow.unwrap();
    submit(Transaction::sign(&bob, 0, Operation::Release { escrow: second }, "")).await.unwrap();
    let refused = submit(Transaction::sign(&bob, 0, Operation::Transfer { to: carol.address(), amount: 1 }, "")).await;
    assert!(matches!(refused, Err(LedgerError::NonceMismatch { .. })));
    let people = [&mint, &alice, &bob, &carol];
    let before = seen(&ledger, &people, open_escrow).await;
    assert_eq!(before.height, 5);
    assert_eq!(before.escrow.as_ref().map(|e| e.deal), Some(Some(deal)));
    drop(ledger);

    // A crash while writing the next group: its header made it to disk, most of it did not.
    let path = dir.path().join(LOG);
    let acknowledged = std::fs::metadata(&path).unwrap().len();
    let mut torn = Vec::new();
    torn.extend_from_slice(&4_000u32.to_le_bytes());
    torn.extend_from_slice(&7u32.to_le_bytes());
    torn.extend_from_slice(&[b'{'; 900]);
    append(&path, &torn);

    // Reopened without a mint authority: the logged mint still counts.
    let reopened = LocalLedger::open(LocalLedgerConfig::default().with_path(dir.path())).unwrap();
    assert_eq!(seen(&reopened, &people, open_escrow).await, before);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), acknowledged, "the torn write is cut off");
    // And it carries on where it stopped.
    let next = reopened
        .submit(Transaction::sign(&bob, 1, Operation::Transfer { to: carol.address(), amount: 1 }, ""))
        .await
        .unwrap();
    assert_eq!(next.height, 6);
}

/// Damage in the middle of the log (more bytes after it than one unsynced write could
/// leave) is refused with an error naming the file, and the file is left as it was: the
/// transactions after it were acknowledged and must not be dropped.
#[tokio::test]
async fn a_damaged_log_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let mint = Identity::from_seed("damage mint");
    let config = || LocalLedgerConfig::default().with_path(dir.path()).with_authority(mint.address());
    {
        let ledger = Arc::new(LocalLedger::open(config().with_durable(false)).unwrap());
        let payee = Identity::from_seed("damage payee").address();
        // Each transaction its own group, until the log holds well over one group's limit.
        for nonce in 0..4_000u64 {
            let memo = "x".repeat(200);
            ledger
                .submit(Transaction::sign(&mint, nonce, Operation::Mint { to: payee, amount: 1 }, memo))
                .await
                .unwrap();
        }
    }
    let path = dir.path().join(LOG);
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 3 << 20, "the log is {} bytes", bytes.len());
    bytes[20] ^= 0x40; // Inside the first record's payload.
    std::fs::write(&path, &bytes).unwrap();

    match LocalLedger::open(config()) {
        Err(LedgerError::Storage(why)) => {
            assert!(why.contains("damaged") && why.contains(LOG), "{why}");
        }
        other => panic!("a damaged log must be refused, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "the file is left as it was");
}

/// A group whose sync failed is reported as maybe applied and is not in the state; before
/// the next group is written the log is cut back, so a restart never finds the failed group
/// (which would replay a transfer the live ledger said nothing about, and diverge).
#[tokio::test]
async fn a_group_whose_sync_failed_never_resurfaces_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mint = Identity::from_seed("sync mint");
    let alice = Identity::from_seed("sync alice");
    let bob = Identity::from_seed("sync bob").address();
    let faults = Faults::new();
    let config = || LocalLedgerConfig::default().with_path(dir.path()).with_authority(mint.address());
    let ledger = LocalLedger::open(config().with_faults(faults.clone())).unwrap();
    ledger.submit(Transaction::sign(&mint, 0, Operation::Mint { to: alice.address(), amount: 100 }, "")).await.unwrap();

    faults.fail_syncs(true);
    let failed = ledger.submit(Transaction::sign(&alice, 0, Operation::Transfer { to: bob, amount: 30 }, "")).await;
    assert!(matches!(failed, Err(LedgerError::Unavailable(_))), "{failed:?}");
    assert_eq!(ledger.next_nonce(alice.address()).await.unwrap(), 0, "not in the state");

    // While the disk still fails, the log cannot be repaired: the next group is not
    // written at all, and says so.
    let not_written = ledger.submit(Transaction::sign(&alice, 0, Operation::Transfer { to: bob, amount: 5 }, "")).await;
    assert!(matches!(not_written, Err(LedgerError::Storage(_))), "{not_written:?}");

    faults.fail_syncs(false);
    let retried = ledger.submit(Transaction::sign(&alice, 0, Operation::Transfer { to: bob, amount: 30 }, "")).await;
    assert_eq!(retried.unwrap().height, 2);
    let live = ledger.history(alice.address(), 10).await.unwrap();
    drop(ledger);

    let reopened = LocalLedger::open(config()).unwrap();
    assert_eq!(reopened.history(alice.address(), 10).await.unwrap(), live);
    assert_eq!(reopened.balance(bob).await.unwrap(), 30, "paid once");
    assert_eq!(reopened.next_nonce(alice.address()).await.unwrap(), 1);
}

/// Two ledgers on one directory would interleave their logs: the second is refused.
#[tokio::test]
async fn a_ledger_directory_is_used_by_one_ledger_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let first = LocalLedger::open(LocalLedgerConfig::default().with_path(dir.path())).unwrap();
    match LocalLedger::open(LocalLedgerConfig::default().with_path(dir.path())) {
        Err(LedgerError::Storage(why)) => assert!(why.contains("in use"), "{why}"),
        other => panic!("a second ledger on the same log must be refused, got {other:?}"),
    }
    drop(first);
    LocalLedger::open(LocalLedgerConfig::default().with_path(dir.path())).unwrap();
}

fn append(path: &std::path::Path, bytes: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(bytes).unwrap();
}

/// A ledger written by an earlier Agora (`ledger.redb`, receipts by height) is imported
/// into the log on first open, with every receipt checked, and the old file is renamed so
/// it is never imported twice: nothing stored is lost by upgrading.
#[tokio::test]
async fn an_earlier_ledger_database_is_imported_once() {
    use agent_core::store::{Database, Table, Tables};
    let mint = Identity::from_seed("import mint");
    let (alice, bob) = (Identity::from_seed("import alice"), Identity::from_seed("import bob"));
    let source = LocalLedger::open(LocalLedgerConfig::default().with_authority(mint.address())).unwrap();
    let mut receipts = vec![source
        .submit(Transaction::sign(&mint, 0, Operation::Mint { to: alice.address(), amount: 500 }, ""))
        .await
        .unwrap()];
    for nonce in 0..3 {
        let pay = Operation::Transfer { to: bob.address(), amount: 10 + nonce as u128 };
        receipts.push(source.submit(Transaction::sign(&alice, nonce, pay, "")).await.unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let earlier = Database::open(dir.path().join("ledger.redb")).unwrap();
    earlier
        .write(true, |txn| {
            let mut tables = Tables::new(txn);
            receipts.iter().try_for_each(|r| {
                tables.put(Table::new("receipts"), &r.height.to_be_bytes(), Some(&serde_json::to_vec(r).unwrap()))
            })
        })
        .unwrap()
        .unwrap();
    drop(earlier);

    for _ in 0..2 {
        let ledger = LocalLedger::open(LocalLedgerConfig::default().with_path(dir.path())).unwrap();
        assert_eq!(ledger.height().unwrap(), 4);
        assert_eq!(ledger.balance(bob.address()).await.unwrap(), 33);
        assert_eq!(ledger.next_nonce(alice.address()).await.unwrap(), 3);
        let mut history = ledger.history(alice.address(), 10).await.unwrap();
        history.reverse();
        assert_eq!(history, receipts);
        assert!(!dir.path().join("ledger.redb").exists() && dir.path().join("ledger.redb.imported").exists());
    }
}
