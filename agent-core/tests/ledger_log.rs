//! The local ledger's log on disk: a torn last write is cut off, damage is refused rather
//! than silently dropping acknowledged transactions, a failed write never resurfaces after
//! a restart, and reopening rebuilds exactly the state that was acknowledged.

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

/// Where each record (group) of a log starts: records are a length, a checksum, a payload.
fn record_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        starts.push(at);
        at += 8 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    }
    starts
}

/// A durable ledger of `n` transactions, each acknowledged (so each its own group).
async fn durable_ledger(dir: &std::path::Path, n: u64) -> (Identity, LedgerConfig) {
    let mint = Identity::from_seed("damage mint");
    let config = LedgerConfig { dir: dir.to_path_buf(), authority: mint.address() };
    let ledger = LocalLedger::open(config.open()).unwrap();
    let payee = Identity::from_seed("damage payee").address();
    for nonce in 0..n {
        ledger.submit(Transaction::sign(&mint, nonce, Operation::Mint { to: payee, amount: 1 }, "")).await.unwrap();
    }
    (mint, config)
}

struct LedgerConfig {
    dir: std::path::PathBuf,
    authority: agent_core::Address,
}

impl LedgerConfig {
    fn open(&self) -> LocalLedgerConfig {
        LocalLedgerConfig::default().with_path(&self.dir).with_authority(self.authority)
    }
}

/// Damage anywhere but in the last record (which only a crash during its write could tear)
/// is refused with an error naming the file, and the file is left as it was: the
/// transactions after it were acknowledged and must not be dropped. Damage in the last
/// record is a torn write, cut off.
#[tokio::test]
async fn damage_before_the_last_record_is_refused_and_a_bad_last_record_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = durable_ledger(dir.path(), 10).await;
    let path = dir.path().join(LOG);
    let original = std::fs::read(&path).unwrap();
    let starts = record_starts(&original);
    assert_eq!(starts.len(), 10, "one record per acknowledged group");

    for damaged in [0, 4, 8] {
        let mut bytes = original.clone();
        bytes[starts[damaged] + 20] ^= 0x40; // Inside the record's payload.
        std::fs::write(&path, &bytes).unwrap();
        match LocalLedger::open(config.open()) {
            Err(LedgerError::Storage(why)) => assert!(why.contains("damaged") && why.contains(LOG), "{why}"),
            other => panic!("damage in record {damaged} of 10 must be refused, got {other:?}"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "the file is left as it was");
    }

    let mut bytes = original.clone();
    bytes[starts[9] + 20] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let reopened = LocalLedger::open(config.open()).unwrap();
    assert_eq!(reopened.height().unwrap(), 9, "a bad last record is a torn write: cut off");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), starts[9] as u64);
}

/// A ledger on `dir` whose disk can be made to fail, with alice holding 100 and bob
/// holding nothing.
struct Faulty {
    ledger: LocalLedger,
    faults: Faults,
    alice: Identity,
    bob: agent_core::Address,
    config: LocalLedgerConfig,
}

async fn faulty(dir: &std::path::Path) -> Faulty {
    let mint = Identity::from_seed("faulty log mint");
    let config = LocalLedgerConfig::default().with_path(dir).with_authority(mint.address());
    let faults = Faults::new();
    let ledger = LocalLedger::open(config.clone().with_faults(faults.clone())).unwrap();
    let alice = Identity::from_seed("faulty log alice");
    ledger.submit(Transaction::sign(&mint, 0, Operation::Mint { to: alice.address(), amount: 100 }, "")).await.unwrap();
    Faulty { ledger, faults, alice, bob: Identity::from_seed("faulty log bob").address(), config }
}

/// A group whose sync failed is reported as maybe applied and is not in the state; before
/// the next group is written the log is cut back, so a restart never finds the failed group
/// (which would replay a transfer the live ledger said nothing about, and diverge).
#[tokio::test]
async fn a_group_whose_sync_failed_never_resurfaces_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let Faulty { ledger, faults, alice, bob, config } = faulty(dir.path()).await;

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

    let reopened = LocalLedger::open(config).unwrap();
    assert_eq!(reopened.history(alice.address(), 10).await.unwrap(), live);
    assert_eq!(reopened.balance(bob).await.unwrap(), 30, "paid once");
    assert_eq!(reopened.next_nonce(alice.address()).await.unwrap(), 1);
}

/// A group whose sync failed is cut back at once: a restart right after (before any other
/// group is written) does not find it either.
#[tokio::test]
async fn a_group_whose_sync_failed_is_gone_even_if_the_ledger_stops_right_after() {
    let dir = tempfile::tempdir().unwrap();
    let Faulty { ledger, faults, alice, bob, config } = faulty(dir.path()).await;
    faults.fail_syncs(true);
    let failed = ledger.submit(Transaction::sign(&alice, 0, Operation::Transfer { to: bob, amount: 30 }, "")).await;
    assert!(matches!(failed, Err(LedgerError::Unavailable(_))), "{failed:?}");
    faults.fail_syncs(false);
    drop(ledger);

    let reopened = LocalLedger::open(config).unwrap();
    assert_eq!(reopened.height().unwrap(), 1);
    assert_eq!(reopened.balance(bob).await.unwrap(), 0, "what the live ledger said was not applied stays so");
    assert_eq!(reopened.next_nonce(alice.address()).await.unwrap(), 0);
}

/// An escrow's arbiter sees its settlement in its history, as it saw the lock.
#[tokio::test]
async fn the_arbiter_sees_the_settlement_in_its_history() {
    let mint = Identity::from_seed("arbiter mint");
    let (alice, bob, carol) =
        (Identity::from_seed("arb alice"), Identity::from_seed("arb bob"), Identity::from_seed("arb carol"));
    let ledger = LocalLedger::open(LocalLedgerConfig::default().with_authority(mint.address())).unwrap();
    ledger.submit(Transaction::sign(&mint, 0, Operation::Mint { to: alice.address(), amount: 100 }, "")).await.unwrap();
    let lock = Operation::Lock {
        amount: 40,
        beneficiary: bob.address(),
        deadline_ms: u64::MAX,
        arbiter: carol.address(),
        deal: None,
    };
    let escrow = ledger.submit(Transaction::sign(&alice, 0, lock, "")).await.unwrap().escrow.unwrap();
    ledger.submit(Transaction::sign(&alice, 1, Operation::Release { escrow }, "")).await.unwrap();
    let seen = ledger.history(carol.address(), 10).await.unwrap();
    assert_eq!(seen.iter().map(|r| r.height).collect::<Vec<_>>(), [3, 2], "the release and the lock");
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
    use agent_core::store::{Database, Table};
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
        .write(true, |tables| {
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
