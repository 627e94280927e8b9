//! Many agents writing and flushing their storage at once, in one bureau, all keep making
//! progress to the end, and what each flushed is on disk afterwards. A hung store fails
//! the test through its own deadlines, not CI's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_core::{Agent, Bureau, Config, Context};

const AGENTS: usize = 64;

fn idle(index: usize) -> Agent {
    Agent::builder(format!("writer {index}")).seed(format!("storage stress {index}")).build().unwrap()
}

fn writer(index: usize, flushed: Arc<Vec<AtomicU64>>) -> Agent {
    let mut agent = idle(index);
    agent.on_interval(Duration::from_millis(1), move |ctx: Context| {
        let flushed = flushed.clone();
        async move {
            let storage = ctx.storage().expect("storage");
            let next = storage.get::<u64>("count").expect("read").unwrap_or(0) + 1;
            storage.set("count", &next).expect("write");
            storage.set(&format!("entry {}", next % 16), &vec![next; 8]).expect("write");
            storage.flush().await.expect("flush");
            flushed[index].store(next, Ordering::SeqCst);
        }
    });
    agent
}

fn snapshot(flushed: &[AtomicU64]) -> Vec<u64> {
    flushed.iter().map(|c| c.load(Ordering::SeqCst)).collect()
}

/// Runs the bureau on a runtime of its own, so that the checks below keep their own time
/// on this thread even if a hung store blocks every worker of that runtime.
#[test]
fn sixty_four_agents_flushing_all_make_progress() {
    let dir = tempfile::tempdir().unwrap();
    let flushed: Arc<Vec<AtomicU64>> = Arc::new((0..AGENTS).map(|_| AtomicU64::new(0)).collect());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let bureau = runtime.block_on(async {
        let bureau = Bureau::with_config(Config::default().with_storage_dir(dir.path())).unwrap();
        for index in 0..AGENTS {
            bureau.add(writer(index, flushed.clone())).unwrap();
        }
        bureau
    });
    // Three windows of two seconds: every agent's count must grow in each of them (two
    // seconds, not one, so a stall of a shared CI machine is not taken for a hang).
    let mut before = snapshot(&flushed);
    for window in 0..3 {
        std::thread::sleep(Duration::from_secs(2));
        let after = snapshot(&flushed);
        let stuck: Vec<usize> = (0..AGENTS).filter(|&i| after[i] <= before[i]).collect();
        if !stuck.is_empty() {
            // Leave the hung runtime behind rather than wait for it.
            std::mem::forget(runtime);
            panic!("window {window}: agents {stuck:?} made no durable write (counts {after:?})");
        }
        before = after;
    }
    let (done, finished) = std::sync::mpsc::channel();
    runtime.spawn(async move {
        let _ = done.send(bureau.shutdown().await);
    });
    match finished.recv_timeout(Duration::from_secs(20)) {
        Ok(result) => result.unwrap(),
        Err(_) => {
            std::mem::forget(runtime);
            panic!("the bureau did not shut down within 20 s");
        }
    }
    drop(runtime);
    let last = snapshot(&flushed);
    let total: u64 = last.iter().sum();
    assert!(total >= AGENTS as u64 * 3, "at least three flushes per agent: {total}");

    // What each agent saw flushed is what the reopened store holds (at least: the handler
    // that was running at shutdown may have written one more before it was stopped).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let bureau = Bureau::with_config(Config::default().with_storage_dir(dir.path())).unwrap();
        for (index, flushed) in last.iter().enumerate() {
            let address = bureau.add(idle(index)).unwrap();
            let stored = bureau.context(address).unwrap().storage().unwrap().get::<u64>("count").unwrap().unwrap_or(0);
            assert!(
                stored >= *flushed && stored <= flushed + 1,
                "agent {index}: flushed {flushed} but {stored} is stored"
            );
        }
        tokio::time::timeout(Duration::from_secs(20), bureau.shutdown()).await.expect("second shutdown").unwrap();
    });
}
