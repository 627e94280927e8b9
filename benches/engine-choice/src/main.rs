//! sled 0.34 and redb, each written by one committer thread that takes every queued write,
//! commits them together and syncs once (the design Agora uses), measured side by side:
//! durable writes/s with 1 and 64 writer threads, resident memory, and kill -9 safety (a
//! child process acknowledges writes on stdout and is killed; every acknowledged write
//! must be found after reopening).
#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

type Ack = mpsc::SyncSender<()>;

trait Engine: Send + 'static {
    fn open(dir: &std::path::Path) -> Self;
    fn insert(&mut self, key: &[u8], value: &[u8]);
    fn sync(&mut self);
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
}

struct Sled(sled::Db);
impl Engine for Sled {
    fn open(dir: &std::path::Path) -> Self {
        // One committer syncs; sled's own background flusher is off.
        Sled(sled::Config::new().path(dir.join("sled")).flush_every_ms(None).open().unwrap())
    }
    fn insert(&mut self, key: &[u8], value: &[u8]) {
        self.0.insert(key, value).unwrap();
    }
    fn sync(&mut self) {
        self.0.flush().unwrap();
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(key).unwrap().map(|v| v.to_vec())
    }
}

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("t");
struct Redb(redb::Database, Vec<(Vec<u8>, Vec<u8>)>);
impl Engine for Redb {
    fn open(dir: &std::path::Path) -> Self {
        Redb(redb::Database::create(dir.join("redb")).unwrap(), Vec::new())
    }
    fn insert(&mut self, key: &[u8], value: &[u8]) {
        self.1.push((key.to_vec(), value.to_vec()));
    }
    fn sync(&mut self) {
        let txn = self.0.begin_write().unwrap();
        {
            let mut table = txn.open_table(TABLE).unwrap();
            for (k, v) in self.1.drain(..) {
                table.insert(k.as_slice(), v.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        use redb::ReadableDatabase;
        let txn = self.0.begin_read().unwrap();
        let table = txn.open_table(TABLE).ok()?;
        table.get(key).unwrap().map(|v| v.value().to_vec())
    }
}

/// Starts the committer; returns the queue writers send to.
fn committer<E: Engine>(mut engine: E) -> mpsc::SyncSender<(Vec<u8>, Vec<u8>, Ack)> {
    let (tx, rx) = mpsc::sync_channel::<(Vec<u8>, Vec<u8>, Ack)>(4096);
    std::thread::spawn(move || {
        while let Ok(first) = rx.recv() {
            let mut acks = Vec::new();
            for (key, value, ack) in std::iter::once(first).chain(rx.try_iter()) {
                engine.insert(&key, &value);
                acks.push(ack);
            }
            engine.sync();
            for ack in acks {
                // A writer that timed out no longer listens; its write is committed regardless.
                let _ = ack.send(());
            }
        }
    });
    tx
}

fn durable_writes<E: Engine>(writers: usize, seconds: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let queue = committer(E::open(dir.path()));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let queue = queue.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let (ack, acked) = mpsc::sync_channel(1);
                    queue.send((format!("{w}/{}", n % 64).into_bytes(), n.to_be_bytes().to_vec(), ack)).unwrap();
                    // A hang shows as a writer that never finishes its write.
                    if acked.recv_timeout(Duration::from_secs(10)).is_err() {
                        return u64::MAX;
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    let counts: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    if counts.contains(&u64::MAX) {
        return 0.0;
    }
    counts.iter().sum::<u64>() as f64 / seconds as f64
}

fn resident_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

/// Child: writes key i and prints "ack i" once durable, forever.
fn child<E: Engine>(dir: &str) {
    let queue = committer(E::open(std::path::Path::new(dir)));
    let writers: Vec<_> = (0..8u64)
        .map(|w| {
            let queue = queue.clone();
            std::thread::spawn(move || {
                for i in 0.. {
                    let key = w * 1_000_000_000 + i;
                    let (ack, acked) = mpsc::sync_channel(1);
                    queue.send((key.to_be_bytes().to_vec(), vec![7; 100], ack)).unwrap();
                    acked.recv().unwrap();
                    println!("ack {key}");
                }
            })
        })
        .collect();
    for w in writers {
        // The writers loop until the parent kills this process; a join never returns.
        let _ = w.join();
    }
}

/// Kills a writing child after `acks` acknowledgements; counts acknowledged keys missing
/// after reopening.
fn crash<E: Engine>(name: &str, acks: usize) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["child", name, dir.path().to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let Ok(line) = line else { break };
        if let Some(key) = line.strip_prefix("ack ").and_then(|k| k.parse::<u64>().ok()) {
            acked.push(key);
        }
        if acked.len() >= acks {
            child.kill().unwrap();
            break;
        }
    }
    // Only reaps the killed child; its exit status says nothing the check needs.
    let _ = child.wait();
    let engine = E::open(dir.path());
    let missing = acked.iter().filter(|k| engine.get(&k.to_be_bytes()).is_none()).count();
    (acked.len(), missing)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        match args[2].as_str() {
            "sled" => child::<Sled>(&args[3]),
            _ => child::<Redb>(&args[3]),
        }
        return;
    }
    let seconds = 5;
    println!(
        "{:<8} {:>16} {:>17} {:>9} {:>26}",
        "engine", "1 writer /s", "64 writers /s", "RSS MiB", "kill -9: acked / missing"
    );
    for name in ["sled", "redb"] {
        let before = resident_mib();
        let (one, many) = match name {
            "sled" => (durable_writes::<Sled>(1, seconds), durable_writes::<Sled>(64, seconds)),
            _ => (durable_writes::<Redb>(1, seconds), durable_writes::<Redb>(64, seconds)),
        };
        let rss = resident_mib() - before;
        let mut total = (0, 0);
        for _ in 0..5 {
            let (acked, missing) = match name {
                "sled" => crash::<Sled>(name, 2_000),
                _ => crash::<Redb>(name, 2_000),
            };
            total = (total.0 + acked, total.1 + missing);
        }
        println!("{name:<8} {one:>16.0} {many:>17.0} {rss:>9.1} {:>19} / {}", total.0, total.1);
        std::io::stdout().flush().unwrap();
    }
}
