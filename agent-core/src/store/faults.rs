//! Disk faults on demand, for tests and simulations: a database file (or the ledger's log)
//! whose writes or syncs fail while a switch is on, so a test can show what a store promises when the disk
//! fails under it.

use std::io;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// Switches that make a [`Database`](super::Database) opened with
/// [`Database::open_with_faults`](super::Database::open_with_faults) fail. Cheap to clone;
/// clones share the switches. All are off at first.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    switches: Arc<Switches>,
}

#[derive(Debug, Default)]
struct Switches {
    syncs: AtomicBool,
    writes: AtomicBool,
}

impl Faults {
    /// No faults until a switch is turned on.
    pub fn new() -> Faults {
        Faults::default()
    }

    /// While on, every sync to disk fails (as a full or failing disk would): commits that
    /// must be durable fail.
    pub fn fail_syncs(&self, on: bool) {
        self.switches.syncs.store(on, Ordering::SeqCst);
    }

    /// While on, every write to the file fails.
    pub fn fail_writes(&self, on: bool) {
        self.switches.writes.store(on, Ordering::SeqCst);
    }

    /// Fails if writes are switched off; `what` names the operation in the error.
    pub(crate) fn check_write(&self, what: &str) -> io::Result<()> {
        self.check(&self.switches.writes, what)
    }

    /// Fails if syncs are switched off; `what` names the operation in the error.
    pub(crate) fn check_sync(&self, what: &str) -> io::Result<()> {
        self.check(&self.switches.syncs, what)
    }

    fn check(&self, switch: &AtomicBool, what: &str) -> io::Result<()> {
        if switch.load(Ordering::SeqCst) {
            return Err(io::Error::other(format!("injected fault: {what} failed")));
        }
        Ok(())
    }
}

/// A file whose writes and syncs consult [`Faults`] first.
#[derive(Debug)]
pub(super) struct FaultyFile {
    file: FileBackend,
    faults: Faults,
}

impl FaultyFile {
    pub(super) fn new(file: std::fs::File, faults: Faults) -> Result<FaultyFile, redb::DatabaseError> {
        Ok(FaultyFile { file: FileBackend::new(file)?, faults })
    }
}

impl StorageBackend for FaultyFile {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.faults.check(&self.faults.switches.writes, "resize")?;
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.faults.check(&self.faults.switches.syncs, "sync")?;
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.faults.check(&self.faults.switches.writes, "write")?;
        self.file.write(offset, data)
    }

    fn close(&self) -> io::Result<()> {
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}
