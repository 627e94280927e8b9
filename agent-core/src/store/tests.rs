use std::time::Duration;

use super::{Database, StoreError, Table, WriteBehind};

const ITEMS: Table = Table::new("items");
const OTHER: Table = Table::new("other");

/// Each test of a database runs on both engines: a file, and the map in memory.
fn both_engines(test: impl Fn(&Database)) {
    let dir = tempfile::tempdir().unwrap();
    test(&Database::open(dir.path().join("test.redb")).unwrap());
    test(&Database::temporary().unwrap());
}

#[test]
fn a_failed_write_commits_nothing() {
    both_engines(|db| {
        db.write(true, |tables| tables.put(ITEMS, b"a", Some(b"1"))).unwrap().unwrap();
        let outcome = db
            .write(true, |tables| {
                tables.put(ITEMS, b"a", Some(b"2"))?;
                tables.put(ITEMS, b"b", Some(b"2"))?;
                tables.put(OTHER, b"c", Some(b"2"))?;
                Err::<(), StoreError>(StoreError::Closed)
            })
            .unwrap();
        assert!(outcome.is_err());
        assert_eq!(db.get(ITEMS, b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(db.get(ITEMS, b"b").unwrap(), None);
        assert_eq!(db.get(OTHER, b"c").unwrap(), None);
        assert_eq!(db.get(OTHER, b"a").unwrap(), None, "a table never written reads as empty");
    });
}

#[test]
fn a_transaction_reads_its_own_writes_and_removals() {
    both_engines(|db| {
        db.write(true, |tables| {
            tables.put(ITEMS, b"kept", Some(b"1"))?;
            tables.put(ITEMS, b"old", Some(b"0"))
        })
        .unwrap()
        .unwrap();
        let read = db
            .write(true, |tables| {
                tables.put(ITEMS, b"new", Some(b"2"))?;
                tables.put(ITEMS, b"kept", None)?;
                Ok::<_, StoreError>((
                    tables.get(ITEMS, b"new")?,
                    tables.get(ITEMS, b"kept")?,
                    tables.get(ITEMS, b"old")?,
                ))
            })
            .unwrap()
            .unwrap();
        assert_eq!(read, (Some(b"2".to_vec()), None, Some(b"0".to_vec())), "staged, removed, committed before");
        assert_eq!(db.get(ITEMS, b"kept").unwrap(), None, "the removal is committed");
        assert_eq!(db.get(ITEMS, b"new").unwrap().as_deref(), Some(&b"2"[..]));
    });
}

#[test]
fn prefix_scans_stop_at_the_prefix() {
    both_engines(|db| {
        db.write(true, |tables| {
            for key in [&b"aa"[..], b"ab", b"b", b"a", b"a\xff", b"\xff\xff"] {
                tables.put(ITEMS, key, Some(key))?;
            }
            tables.put(OTHER, b"ac", Some(b"other table"))
        })
        .unwrap()
        .unwrap();
        let keys = |entries: Vec<(Vec<u8>, Vec<u8>)>| entries.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        let a: Vec<Vec<u8>> = vec![b"a".to_vec(), b"a\xff".to_vec(), b"aa".to_vec(), b"ab".to_vec()];
        let mut a_sorted = a.clone();
        a_sorted.sort();
        assert_eq!(keys(db.scan_prefix(ITEMS, b"a").unwrap()), a_sorted);
        let newest: Vec<Vec<u8>> = a_sorted.iter().rev().take(2).cloned().collect();
        assert_eq!(keys(db.last_with_prefix(ITEMS, b"a", 2).unwrap()), newest);
        assert_eq!(keys(db.scan_prefix(ITEMS, b"\xff").unwrap()), vec![b"\xff\xff".to_vec()], "no successor");
        assert_eq!(db.scan_prefix(ITEMS, b"").unwrap().len(), 6, "the empty prefix is every key");
        assert!(db.scan_prefix(Table::new("never"), b"").unwrap().is_empty());
        assert_eq!(db.get(OTHER, b"ac").unwrap().as_deref(), Some(&b"other table"[..]), "both tables committed");
        assert_eq!(keys(db.last_with_prefix(ITEMS, b"", 100).unwrap()).len(), 6, "a limit above the count");
        assert!(db.last_with_prefix(ITEMS, b"a", 0).unwrap().is_empty());
        assert_eq!(keys(db.last_with_prefix(ITEMS, b"\xff", 1).unwrap()), vec![b"\xff\xff".to_vec()]);
        assert_eq!(db.scan_keys(ITEMS, b"a").unwrap(), a_sorted, "the keys alone");
        assert!(db.contains(ITEMS, b"ab").unwrap() && !db.contains(ITEMS, b"ac").unwrap());
    });
}

/// Readers never see half a transaction: a writer sets two keys to the same number in each
/// of its transactions while readers scan both, on both engines.
#[test]
fn readers_never_see_half_a_transaction() {
    both_engines(|db| {
        let written = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|threads| {
            let writer = threads.spawn(|| {
                for i in 0u32..300 {
                    let value = i.to_be_bytes();
                    db.write(false, |tables| {
                        tables.put(ITEMS, b"a", Some(&value))?;
                        tables.put(ITEMS, b"b", Some(&value))
                    })
                    .unwrap()
                    .unwrap();
                }
                written.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    threads.spawn(|| {
                        // Until the writer is done, and at most a million reads.
                        for _ in 0..1_000_000 {
                            if written.load(std::sync::atomic::Ordering::SeqCst) {
                                break;
                            }
                            let entries = db.scan_prefix(ITEMS, b"").unwrap();
                            if let [(_, a), (_, b)] = entries.as_slice() {
                                assert_eq!(a, b, "a reader saw half a transaction");
                            }
                        }
                    })
                })
                .collect();
            writer.join().unwrap();
            readers.into_iter().for_each(|reader| reader.join().unwrap());
        });
    });
}

#[tokio::test]
async fn queued_writes_are_read_back_before_and_after_their_commit() {
    let store = WriteBehind::new(Database::temporary().unwrap()).unwrap();
    store.put(ITEMS, b"k1".to_vec(), Some(b"one".to_vec())).unwrap();
    store.put(ITEMS, b"k2".to_vec(), Some(b"two".to_vec())).unwrap();
    store.put(ITEMS, b"k2".to_vec(), None).unwrap();
    assert_eq!(store.get(ITEMS, b"k1").unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(store.get(ITEMS, b"k2").unwrap(), None);
    store.flush().await.unwrap();
    assert_eq!(store.database().get(ITEMS, b"k1").unwrap().as_deref(), Some(&b"one"[..]));
    store.put(ITEMS, b"k1".to_vec(), None).unwrap();
    store.put(ITEMS, b"k3".to_vec(), Some(b"three".to_vec())).unwrap();
    let keys: Vec<Vec<u8>> = store.scan_prefix(ITEMS, b"k").unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec![b"k3".to_vec()], "a queued removal hides the committed entry");
    assert_eq!(store.scan_keys(ITEMS, b"k").unwrap(), keys, "the keys alone are the same");
    assert!(!store.contains(ITEMS, b"k1").unwrap(), "removed, though committed");
    assert!(store.contains(ITEMS, b"k3").unwrap(), "queued, not yet committed");
}

/// A value queued to be encoded later reads back (encoded) before its commit, is encoded
/// once more by the commit, and a key rewritten before the commit has only its last value
/// encoded: the ones it replaced never are.
#[tokio::test]
async fn a_value_encoded_later_is_encoded_only_when_read_or_committed() {
    let dir = tempfile::tempdir().unwrap();
    // A file's commit encodes the value once, and reads of it then read bytes; memory keeps
    // it as queued, and each reader encodes it.
    encoded_when_read_or_committed(Database::open(dir.path().join("later.redb")).unwrap(), false).await;
    encoded_when_read_or_committed(Database::temporary().unwrap(), true).await;
}

async fn encoded_when_read_or_committed(db: Database, in_memory: bool) {
    let (by_the_commit, by_two_reads) = if in_memory { (0, 2) } else { (1, 0) };
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let store = WriteBehind::new(db).unwrap();
    let encoded: Arc<[AtomicUsize; 3]> = Arc::default();
    for version in 0..3 {
        let encoded = Arc::clone(&encoded);
        let encode = move || {
            encoded[version].fetch_add(1, Ordering::SeqCst);
            format!("v{version}").into_bytes()
        };
        store.put_encoded_later(ITEMS, b"k".to_vec(), Arc::new(encode)).unwrap();
    }
    let counts = |encoded: &[AtomicUsize; 3]| encoded.iter().map(|n| n.load(Ordering::SeqCst)).collect::<Vec<_>>();
    assert_eq!(counts(&encoded), [0, 0, 0], "nothing encoded when written");
    assert!(store.contains(ITEMS, b"k").unwrap());
    assert_eq!(store.scan_keys(ITEMS, b"k").unwrap(), vec![b"k".to_vec()]);
    assert_eq!(counts(&encoded), [0, 0, 0], "nor to say it is there");
    assert_eq!(store.get(ITEMS, b"k").unwrap().as_deref(), Some(&b"v2"[..]));
    let scanned = store.scan_prefix(ITEMS, b"k").unwrap();
    assert_eq!(scanned, vec![(b"k".to_vec(), b"v2".to_vec())]);
    assert_eq!(counts(&encoded), [0, 0, 2], "the last value, once per read");
    store.flush().await.unwrap();
    assert_eq!(counts(&encoded), [0, 0, 2 + by_the_commit], "the replaced ones never");
    assert!(store.contains(ITEMS, b"k").unwrap());
    assert_eq!(store.scan_keys(ITEMS, b"k").unwrap(), vec![b"k".to_vec()]);
    assert_eq!(counts(&encoded), [0, 0, 2 + by_the_commit], "nor to say a committed value is there");
    assert_eq!(store.database().get(ITEMS, b"k").unwrap().as_deref(), Some(&b"v2"[..]));
    assert_eq!(store.database().scan_prefix(ITEMS, b"").unwrap(), vec![(b"k".to_vec(), b"v2".to_vec())]);
    assert_eq!(counts(&encoded), [0, 0, 2 + by_the_commit + by_two_reads], "read back once committed");
}

/// Many threads writing and flushing one file at once: every flush returns, and every
/// flushed write is in the file when it is reopened.
#[test]
fn many_concurrent_flushers_never_hang_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stress.redb");
    let store = WriteBehind::new(Database::open(&file).unwrap()).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let writers: Vec<_> = (0..64u32)
        .map(|writer| {
            let store = store.clone();
            runtime.spawn(async move {
                for round in 0..50u32 {
                    let key = format!("{writer:02}/{round:03}").into_bytes();
                    store.put(ITEMS, key, Some(round.to_be_bytes().to_vec())).unwrap();
                    store.flush().await.unwrap();
                }
            })
        })
        .collect();
    runtime.block_on(async {
        let all = futures::future::join_all(writers);
        let results = tokio::time::timeout(Duration::from_secs(60), all).await.expect("every writer finished in 60 s");
        assert!(results.iter().all(Result::is_ok));
    });
    drop(store);
    let reopened = Database::open(&file).unwrap();
    assert_eq!(reopened.scan_prefix(ITEMS, b"").unwrap().len(), 64 * 50);
}

#[tokio::test]
async fn dropping_the_last_handle_commits_what_was_queued() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("drop.redb");
    let store = WriteBehind::new(Database::open(&file).unwrap()).unwrap();
    let clone = store.clone();
    // Far more writes than one commit takes in the time it takes to queue them, so some
    // are still queued when the handles go.
    for i in 0..20_000u32 {
        store.put(ITEMS, i.to_be_bytes().to_vec(), Some(b"kept".to_vec())).unwrap();
    }
    drop(store);
    drop(clone);
    let reopened = Database::open(&file).unwrap();
    assert_eq!(reopened.scan_prefix(ITEMS, b"").unwrap().len(), 20_000);
}

/// A file whose syncs fail: flushes say the writes are not durable, and why; readers still
/// see them; once the disk recovers, the store reopens the file and commits them, without a
/// restart.
#[tokio::test]
async fn a_failing_disk_is_reported_and_recovered_from() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("faulty.redb");
    let faults = super::Faults::new();
    let store = WriteBehind::new(Database::open_with_faults(&file, faults.clone()).unwrap()).unwrap();
    store.put(ITEMS, b"before".to_vec(), Some(b"1".to_vec())).unwrap();
    store.flush().await.unwrap();

    faults.fail_syncs(true);
    store.put(ITEMS, b"during".to_vec(), Some(b"2".to_vec())).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), store.flush()).await.unwrap().unwrap_err();
    assert!(matches!(err, StoreError::NotDurable(_)), "{err:?}");
    assert!(crate::error::chain(&err).contains("injected fault"), "the cause is named: {}", crate::error::chain(&err));
    assert_eq!(store.get(ITEMS, b"during").unwrap().as_deref(), Some(&b"2"[..]), "still readable");

    faults.fail_syncs(false);
    store.put(ITEMS, b"after".to_vec(), Some(b"3".to_vec())).unwrap();
    tokio::time::timeout(Duration::from_secs(30), store.flush()).await.expect("retried in time").unwrap();
    drop(store);
    let reopened = Database::open(&file).unwrap();
    for (key, value) in [(&b"before"[..], &b"1"[..]), (b"during", b"2"), (b"after", b"3")] {
        assert_eq!(reopened.get(ITEMS, key).unwrap().as_deref(), Some(value));
    }
}

#[tokio::test]
async fn writes_are_refused_once_a_failing_disk_has_a_full_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let faults = super::Faults::new();
    let store =
        WriteBehind::new(Database::open_with_faults(dir.path().join("full.redb"), faults.clone()).unwrap()).unwrap();
    faults.fail_syncs(true);
    store.put(ITEMS, b"first".to_vec(), Some(vec![])).unwrap();
    assert!(store.flush().await.is_err());
    let mut refused = None;
    for i in 0..super::write_behind::MAX_BACKLOG as u64 + 10 {
        if let Err(err) = store.put(ITEMS, i.to_be_bytes().to_vec(), Some(vec![])) {
            refused = Some(err);
            break;
        }
    }
    assert!(matches!(refused, Some(StoreError::Backlog { .. })), "{refused:?}");
    faults.fail_syncs(false);
}

#[test]
fn a_file_is_opened_once_and_an_old_sled_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Database::open_in(dir.path(), "one.redb").unwrap();
    assert!(matches!(Database::open_in(dir.path(), "one.redb"), Err(StoreError::Open { .. })));
    drop(first);
    Database::open_in(dir.path(), "one.redb").unwrap();

    let old = tempfile::tempdir().unwrap();
    std::fs::write(old.path().join("conf"), b"segment_size: 524288").unwrap();
    std::fs::write(old.path().join("db"), b"sled data").unwrap();
    let err = Database::open_in(old.path(), "storage.redb").unwrap_err();
    assert!(matches!(err, StoreError::LegacyDatabase { .. }), "{err:?}");
    assert!(!old.path().join("storage.redb").exists(), "nothing created beside the old data");
}

#[tokio::test]
async fn of_two_concurrent_removals_one_finds_the_value() {
    let store = WriteBehind::new(Database::temporary().unwrap()).unwrap();
    for round in 0..200u32 {
        let key = round.to_be_bytes().to_vec();
        store.put(ITEMS, key.clone(), Some(vec![1])).unwrap();
        if round % 2 == 0 {
            store.flush().await.unwrap(); // Half the time from the database, half from the queue.
        }
        let (a, b) = (store.clone(), store.clone());
        let (k1, k2) = (key.clone(), key.clone());
        let first = std::thread::spawn(move || a.remove(ITEMS, k1).unwrap());
        let second = std::thread::spawn(move || b.remove(ITEMS, k2).unwrap());
        let found = [first.join().unwrap(), second.join().unwrap()];
        assert_eq!(found.iter().filter(|f| **f).count(), 1, "round {round}: {found:?}");
    }
}

#[tokio::test]
async fn a_store_committing_on_flush_commits_nothing_until_flushed_and_everything_left_when_dropped() {
    let db = Database::temporary().unwrap();
    let store = WriteBehind::on_flush(db.clone());
    store.put(ITEMS, b"a".to_vec(), Some(b"1".to_vec())).unwrap();
    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(db.get(ITEMS, b"a").unwrap(), None, "no timer commits it");
    store.flush().await.unwrap();
    assert_eq!(db.get(ITEMS, b"a").unwrap().as_deref(), Some(&b"1"[..]));
    store.put(ITEMS, b"b".to_vec(), Some(b"2".to_vec())).unwrap();
    drop(store);
    assert_eq!(db.get(ITEMS, b"b").unwrap().as_deref(), Some(&b"2"[..]), "committed by the last handle's drop");
}

#[tokio::test]
async fn a_crash_keeps_flushed_writes_and_drops_the_rest() {
    let db = Database::temporary().unwrap();
    let store = WriteBehind::on_flush(db.clone());
    store.put(ITEMS, b"a".to_vec(), Some(b"1".to_vec())).unwrap();
    store.flush().await.unwrap();
    store.put(ITEMS, b"a".to_vec(), Some(b"changed".to_vec())).unwrap();
    store.put(ITEMS, b"b".to_vec(), Some(b"2".to_vec())).unwrap();
    assert_eq!(store.crash(), 2, "two writes pending");
    assert!(matches!(store.put(ITEMS, b"c".to_vec(), None), Err(StoreError::Closed)));
    assert!(store.flush().await.is_err(), "nothing to commit after a crash");
    drop(store);
    assert_eq!(db.get(ITEMS, b"a").unwrap().as_deref(), Some(&b"1"[..]), "the flushed value");
    assert_eq!(db.get(ITEMS, b"b").unwrap(), None, "not even the last handle's drop commits after a crash");
}

/// With a committer thread, a write not yet committed when the crash comes is lost; one
/// whose commit had already begun lands. Either way the count of dropped writes says which.
#[tokio::test]
async fn a_crash_of_a_threaded_store_keeps_flushed_writes_and_reports_what_it_dropped() {
    let db = Database::temporary().unwrap();
    let store = WriteBehind::new(db.clone()).unwrap();
    store.put(ITEMS, b"a".to_vec(), Some(b"1".to_vec())).unwrap();
    store.flush().await.unwrap();
    store.put(ITEMS, b"b".to_vec(), Some(b"2".to_vec())).unwrap();
    let dropped = store.crash();
    drop(store);
    assert_eq!(db.get(ITEMS, b"a").unwrap().as_deref(), Some(&b"1"[..]));
    let landed = db.get(ITEMS, b"b").unwrap().is_some();
    assert_eq!(dropped, usize::from(!landed), "dropped {dropped}, landed {landed}");
}
