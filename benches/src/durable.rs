//! Durable stores under concurrent writers: agent storage flushes and almanac
//! registrations on disk.
//!
//! Each measurement runs for a fixed wall time on a runtime of its own and counts what
//! completed in each second, read from the calling thread. A store that hangs therefore
//! shows as seconds with nothing completed instead of hanging the report; the hung runtime
//! is then left behind rather than shut down.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_core::{Agent, Bureau, Config};

/// Completions counted second by second, and the process's resident memory at the end.
#[derive(Debug, Clone)]
pub struct Series {
    /// What completed in each second.
    pub per_second: Vec<u64>,
    /// Resident memory of this process at the end of each second, in bytes.
    pub resident_bytes: Vec<u64>,
    /// Size of the store's files at the end, in bytes.
    pub disk_bytes: u64,
    /// Whether the writers were still running normally at the end (false: the runtime
    /// had to be abandoned because it did not shut down within 30 s).
    pub shut_down: bool,
}

impl Series {
    /// Completions per second over the whole run.
    pub fn mean(&self) -> f64 {
        self.per_second.iter().sum::<u64>() as f64 / self.per_second.len().max(1) as f64
    }

    /// Completions in the last second.
    pub fn last(&self) -> u64 {
        self.per_second.last().copied().unwrap_or(0)
    }
}

/// `agents` agents of one bureau with storage in a fresh directory, each setting a key
/// and flushing it in a loop, for `seconds`. Counts completed flushes (durable writes).
pub fn storage_flushes(agents: usize, seconds: u64) -> Result<Series, Box<dyn std::error::Error>> {
    let dir = scratch_dir("storage")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bureau = runtime.block_on(async {
        let bureau = Bureau::with_config(Config::default().with_storage_dir(&dir))?;
        for i in 0..agents {
            let agent = Agent::builder(format!("writer {i}")).build()?;
            let address = bureau.add(agent)?;
            let storage = bureau.context(address).ok_or("agent missing")?.storage()?;
            let (count, stop) = (count.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    if storage.set("count", &n).is_err() || storage.flush().await.is_err() {
                        break;
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        Ok::<_, Box<dyn std::error::Error>>(bureau)
    })?;
    let (per_second, resident_bytes) = sample(&count, seconds);
    stop.store(true, Ordering::Relaxed);
    let shut_down = finish(runtime, async move { bureau.shutdown().await.is_ok() });
    let disk_bytes = dir_bytes(&dir);
    let _ = std::fs::remove_dir_all(&dir); // Scratch space; a leftover directory is harmless.
    Ok(Series { per_second, resident_bytes, disk_bytes, shut_down })
}

/// An almanac persisted in a fresh directory, with `registrants` tasks each registering
/// (and renewing, with a rising sequence) its own freshly signed record in a loop, for
/// `seconds`. Counts acknowledged registrations (each one durable before it is acknowledged).
pub fn almanac_registrations(registrants: usize, seconds: u64) -> Result<Series, Box<dyn std::error::Error>> {
    use almanac::{Almanac, Registration, WeightedEndpoint};
    let dir = scratch_dir("almanac")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let almanac = Almanac::open(&dir, almanac::Config::default())?;
    let expires = agent_core::envelope::unix_now_ms() + 3_600_000;
    for i in 0..registrants {
        let identity = agent_core::Identity::from_seed(&format!("durable almanac bench {i}"));
        let (almanac, count, stop) = (almanac.clone(), count.clone(), stop.clone());
        runtime.spawn(async move {
            let mut sequence = 0;
            while !stop.load(Ordering::Relaxed) {
                sequence += 1;
                let endpoint = vec![WeightedEndpoint { addr: "/ip4/127.0.0.1/tcp/4001".into(), weight: 1 }];
                let record = Registration::sign(
                    &identity,
                    "12D3KooWBench",
                    endpoint,
                    vec![],
                    Default::default(),
                    sequence,
                    expires,
                );
                if almanac.register(record).await.is_err() {
                    break;
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let (per_second, resident_bytes) = sample(&count, seconds);
    stop.store(true, Ordering::Relaxed);
    let shut_down = finish(runtime, async move {
        drop(almanac);
        true
    });
    let disk_bytes = dir_bytes(&dir);
    let _ = std::fs::remove_dir_all(&dir); // Scratch space; a leftover directory is harmless.
    Ok(Series { per_second, resident_bytes, disk_bytes, shut_down })
}

/// Reads `count` and the resident memory once a second for `seconds` seconds; returns
/// the increments and the memory readings.
fn sample(count: &AtomicU64, seconds: u64) -> (Vec<u64>, Vec<u64>) {
    let mut last = count.load(Ordering::Relaxed);
    let mut next = std::time::Instant::now();
    (0..seconds)
        .map(|_| {
            next += Duration::from_secs(1);
            std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
            let now = count.load(Ordering::Relaxed);
            let done = now - last;
            last = now;
            (done, crate::resident_bytes().unwrap_or(0))
        })
        .unzip()
}

/// Runs `shutdown` on `runtime` with 30 s to spare; a runtime that cannot finish (its
/// workers blocked in a hung store) is leaked instead of waited for.
fn finish(
    runtime: tokio::runtime::Runtime,
    shutdown: impl std::future::Future<Output = bool> + Send + 'static,
) -> bool {
    let (done, finished) = std::sync::mpsc::channel();
    runtime.spawn(async move {
        // The caller may have stopped waiting (and leaked the runtime): nothing to tell.
        let _ = done.send(shutdown.await);
    });
    match finished.recv_timeout(Duration::from_secs(30)) {
        Ok(ok) => {
            runtime.shutdown_timeout(Duration::from_secs(5));
            ok
        }
        Err(_) => {
            std::mem::forget(runtime);
            false
        }
    }
}

/// The total size of the files directly in `dir` (0 where unreadable).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    entries.filter_map(|entry| entry.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
}

fn scratch_dir(what: &str) -> std::io::Result<std::path::PathBuf> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("agora-{what}-bench-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
