//! 64 registrations at once against a running `almanac` server: every one is acknowledged
//! (stored on disk), and each can be looked up afterwards, also after a kill -9 and a
//! restart of the server. A hung store fails the test through its own deadlines.

mod common;

use std::time::Duration;

use almanac::RemoteAlmanac;
use common::{free_port, record, start};

const CONCURRENT: usize = 64;
const ROUNDS: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_registrations_are_all_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = start(dir.path(), port);
    let remote = RemoteAlmanac::new(server.peer_id, vec![server.addr.clone()]).unwrap();
    // 64 registrants at once, each renewing its registration ROUNDS times in a row, so
    // registrations keep meeting the flushes of others.
    let registrants = (0..CONCURRENT).map(|i| {
        let remote = remote.clone();
        async move {
            let mut last = None;
            for sequence in 1..=ROUNDS {
                let r = record(&format!("stress {i}"), sequence);
                let answer = tokio::time::timeout(Duration::from_secs(20), remote.register(r.clone()))
                    .await
                    .map_err(|_| format!("registrant {i}: registration {sequence} got no answer in 20 s"))?;
                let registered = answer.map_err(|e| format!("registrant {i}: registration {sequence} refused: {e}"))?;
                assert_eq!(registered.sequence, sequence);
                last = Some(r);
            }
            Ok::<_, String>(last.unwrap())
        }
    });
    let results = futures::future::join_all(registrants).await;
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {CONCURRENT} registrants failed, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    let last: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    for r in &last {
        let stored = tokio::time::timeout(Duration::from_secs(10), remote.lookup(&r.address))
            .await
            .expect("a lookup is answered")
            .unwrap();
        assert_eq!(&stored, r, "the last registration is the one stored");
    }
    // Acknowledged means on disk: kill -9, restart, and every last registration is back.
    let _ = server.child.kill();
    let _ = server.child.wait();
    let _restarted = start(dir.path(), port);
    for r in &last {
        let mut stored = None;
        for _ in 0..50 {
            match tokio::time::timeout(Duration::from_secs(10), remote.lookup(&r.address)).await {
                Ok(Ok(found)) => {
                    stored = Some(found);
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        assert_eq!(stored.as_ref(), Some(r), "after the restart, the last registration is the one stored");
    }
}
