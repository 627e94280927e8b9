//! An almanac on disk writes first and publishes after: a registration is served and
//! announced only once it is on disk, and concurrent registrations of one agent leave the
//! newest sequence on disk.

use std::collections::BTreeMap;
use std::time::Duration;

use agent_core::store::{Database, Faults};
use agent_core::Identity;
use almanac::{Almanac, AlmanacError, Config, Query, Registration, WeightedEndpoint};

fn record(seed: &str, sequence: u64) -> Registration {
    Registration::sign(
        &Identity::from_seed(seed),
        "12D3KooWPersisted",
        vec![WeightedEndpoint { addr: "/ip4/127.0.0.1/tcp/4001".into(), weight: 1 }],
        vec![],
        BTreeMap::new(),
        sequence,
        agent_core::envelope::unix_now_ms() + 600_000,
    )
}

#[tokio::test]
async fn a_registration_that_is_not_on_disk_is_neither_served_nor_announced() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let db = Database::open_with_faults(dir.path().join("almanac.redb"), faults.clone()).unwrap();
    let almanac = Almanac::with_database(db, Config::default()).unwrap();
    let mut events = almanac.subscribe(Query::default());
    let stored = record("persisted agent", 1);
    almanac.register(stored.clone()).await.unwrap();
    assert_eq!(almanac.lookup(&stored.address).unwrap(), stored);
    assert!(events.try_recv().is_ok(), "the stored registration was announced");

    faults.fail_syncs(true);
    let unsaved = record("unsaved agent", 1);
    let err = almanac.register(unsaved.clone()).await.unwrap_err();
    assert!(matches!(err, AlmanacError::Storage(ref reason) if reason.contains("injected fault")), "{err:?}");
    assert!(matches!(almanac.lookup(&unsaved.address), Err(AlmanacError::NotRegistered(_))), "not served");
    assert!(events.try_recv().is_err(), "not announced");
    let renewal = record("persisted agent", 2);
    assert!(almanac.register(renewal).await.is_err());
    assert_eq!(almanac.lookup(&stored.address).unwrap(), stored, "the served record is the stored one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_agent_leave_the_newest_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..5u64 {
        let almanac = Almanac::open(dir.path(), Config::default()).unwrap();
        let base = round * 100;
        let registrations = (1..=40u64).map(|n| {
            let almanac = almanac.clone();
            tokio::spawn(async move { almanac.register(record("racing agent", base + n)).await.map(|r| r.sequence) })
        });
        let mut acknowledged = Vec::new();
        for handle in registrations {
            match tokio::time::timeout(Duration::from_secs(20), handle).await.expect("answered").unwrap() {
                Ok(sequence) => acknowledged.push(sequence),
                Err(AlmanacError::StaleSequence { .. }) => {}
                Err(other) => panic!("unexpected refusal: {other}"),
            }
        }
        let newest = *acknowledged.iter().max().expect("at least one registration acknowledged");
        let address = record("racing agent", 1).address;
        assert_eq!(almanac.lookup(&address).unwrap().sequence, newest, "round {round}: served");
        drop(almanac);
        let reopened = Almanac::open(dir.path(), Config::default()).unwrap();
        assert_eq!(reopened.lookup(&address).unwrap().sequence, newest, "round {round}: on disk");
    }
}
