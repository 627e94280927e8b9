use std::sync::Arc;
use std::time::Duration;

use super::{Database, StoreError, Table, WriteBehind};

const ITEMS: Table = Table::new("items");
const OTHER: Table = Table::new("other");

#[test]
fn a_failed_write_commits_nothing() {
    let db = Database::temporary().unwrap();
    db.write(true, |txn| super::put(txn, ITEMS, b"a", Some(b"1"))).unwrap().unwrap();
    let outcome = db
        .write(true, |txn| {
            super::put(txn, ITEMS, b"a", Some(b"2"))?;
            super::put(txn, ITEMS, b"b", Some(b"2"))?;
            Err::<(), StoreError>(StoreError::Closed)
        })
        .unwrap();
    assert!(outcome.is_err());
    assert_eq!(db.get(ITEMS, b"a").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(db.get(ITEMS, b"b").unwrap(), None);
    assert_eq!(db.get(OTHER, b"a").unwrap(), None, "a table never written reads as empty");
}

#[test]
fn prefix_scans_stop_at_the_prefix() {
    let db = Database::temporary().unwrap();
    db.write(true, |txn| {
        for key in [&b"aa"[..], b"ab", b"b", b"a"] {
            super::put(txn, ITEMS, key, Some(key))?;
        }
        Ok::<_, StoreError>(())
    })
    .unwrap()
    .unwrap();
    let keys: Vec<Vec<u8>> = db.scan_prefix(ITEMS, b"a").unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec![b"a".to_vec(), b"aa".to_vec(), b"ab".to_vec()]);
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
    let clone = Arc::new(store.clone());
    store.put(ITEMS, b"late".to_vec(), Some(b"kept".to_vec())).unwrap();
    drop(store);
    drop(clone);
    let reopened = Database::open(&file).unwrap();
    assert_eq!(reopened.get(ITEMS, b"late").unwrap().as_deref(), Some(&b"kept"[..]));
}
