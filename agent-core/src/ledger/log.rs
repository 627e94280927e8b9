//! The ledger's log: the receipt of every applied transaction, in height order, in one
//! append-only file (`ledger.log`). It is the ledger's only durable record: the state
//! (balances, nonces, escrows) is rebuilt from it at start by applying each receipt's
//! transaction again, and history is read from it.
//!
//! The file is a sequence of records, one per group of transactions made durable together:
//!
//! ```text
//! record  = length: u32 LE, crc32 of payload: u32 LE, payload (length bytes)
//! payload = (receipt length: u32 LE, receipt as JSON)*
//! ```
//!
//! A group is one record, one write and, when durable, one `fdatasync` before the next
//! group is written. A crash can therefore tear only the last record in durable mode: at
//! start, a last record that runs past the end of the file or fails its checksum is cut
//! off. A bad record with anything after it is damage, not a tear, and opening fails
//! (leaving the file as it is) instead of dropping the acknowledged transactions after it.
//! In non-durable mode several unsynced groups may be torn at once, so the first bad
//! record ends the log and everything from it is cut off, with a warning.

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::tx::Receipt;
use super::LedgerError;
use crate::store::Faults;

/// The file's name in the ledger's directory.
pub(super) const FILE: &str = "ledger.log";
/// A record's header: length and checksum.
const HEADER: usize = 8;
/// The largest record, written or read. A group holds at most 1,024 receipts of at most
/// about 2.6 KiB each (a 256-byte memo of control characters, escaped by JSON, included),
/// so a group always fits one record.
pub(super) const MAX_RECORD: usize = 4 << 20;

/// Where one receipt's JSON lies in the log.
#[derive(Clone, Copy, Debug)]
pub(super) struct Located {
    offset: u64,
    len: u32,
}

/// The log's bytes: a file, or memory for a ledger without a directory.
#[derive(Clone)]
enum Bytes {
    File(Arc<File>),
    Memory(Arc<parking_lot::RwLock<Vec<u8>>>),
}

/// Reads receipts from the log; cheap to clone, usable while the log is appended to.
#[derive(Clone)]
pub(super) struct Reader(Bytes);

/// Appends to the log. Owned by the ledger's committer thread.
pub(super) struct Log {
    bytes: Bytes,
    path: PathBuf,
    /// Where the next record goes.
    end: u64,
    /// After a failed append, the end of the last good record: what the file must be cut
    /// back to before anything else is written.
    damaged: Option<u64>,
    faults: Option<Faults>,
}

/// Why an append failed, and what that means for the group.
#[derive(Debug)]
pub(super) enum AppendError {
    /// Nothing of the group reached the log: not applied.
    NotWritten(String),
    /// The write or sync failed part way: the group may be in the file, and a restart
    /// before the log is repaired may find it there.
    Unknown(String),
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> LedgerError {
    LedgerError::Storage(format!("cannot {what} the ledger log {}: {}", path.display(), crate::error::chain(&e)))
}

impl Log {
    /// A log held in memory.
    pub(super) fn in_memory() -> Log {
        Log {
            bytes: Bytes::Memory(Arc::default()),
            path: PathBuf::from("(memory)"),
            end: 0,
            damaged: None,
            faults: None,
        }
    }

    /// Opens (or creates) `dir/ledger.log`, calling `replay` with each group's receipts
    /// in order. `durable` says whether every group was synced before it was acknowledged,
    /// which decides how much of a bad tail may be cut off (see the module docs).
    pub(super) fn open(
        dir: &Path,
        faults: Option<Faults>,
        durable: bool,
        mut replay: impl FnMut(Vec<(Receipt, Located)>) -> Result<(), LedgerError>,
    ) -> Result<Log, LedgerError> {
        let path = dir.join(FILE);
        std::fs::create_dir_all(dir).map_err(|e| io_error("create the directory of", &path, e))?;
        let existed = path.exists();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_error("open", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LedgerError::Storage(format!(
                    "the ledger log {} is in use by another ledger (another process?)",
                    path.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error("lock", &path, e)),
        }
        if !existed {
            // The new file's name must survive a crash as well as its contents.
            File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error("sync the directory of", &path, e))?;
        }
        let len = file.metadata().map_err(|e| io_error("read the size of", &path, e))?.len();
        let mut reader = BufReader::with_capacity(1 << 20, &file);
        let mut end = 0u64;
        let bad_tail = loop {
            match read_record(&mut reader, len - end) {
                Ok(Some(payload)) => {
                    let receipts = decode(&payload, end + HEADER as u64)
                        .map_err(|why| LedgerError::Storage(format!("{} at byte {end}: {why}", path.display())))?;
                    replay(receipts)?;
                    end += (HEADER + payload.len()) as u64;
                }
                Ok(None) => break None,
                Err(bad) => break Some(bad),
            }
        };
        if let Some(bad) = bad_tail {
            let dropped = len - end;
            if durable && !bad.torn {
                return Err(LedgerError::Storage(format!(
                    "the ledger log {} is damaged at byte {end} ({}) with {dropped} bytes from there to the end: \
                     only the last record can be torn by a crash, so acknowledged transactions would be lost; \
                     the file is left as it is",
                    path.display(),
                    bad.why
                )));
            }
            tracing::warn!(log = %path.display(), at = end, dropped, why = %bad.why, "cutting off the ledger log's torn tail");
            file.set_len(end)
                .and_then(|()| file.sync_data())
                .map_err(|e| io_error("cut the torn tail of", &path, e))?;
        }
        Ok(Log { bytes: Bytes::File(Arc::new(file)), path, end, damaged: None, faults })
    }

    /// A reader of this log.
    pub(super) fn reader(&self) -> Reader {
        Reader(self.bytes.clone())
    }

    /// Appends one group's receipts as one record; with `sync`, returns once they are on
    /// disk. Returns where each receipt lies.
    pub(super) fn append<'a>(
        &mut self,
        receipts: impl IntoIterator<Item = &'a Receipt>,
        sync: bool,
    ) -> Result<Vec<Located>, AppendError> {
        if let Some(good) = self.damaged {
            self.cut_back(good).map_err(|e| {
                AppendError::NotWritten(format!(
                    "the ledger log could not be repaired after an earlier failed write: {}",
                    crate::error::chain(&e)
                ))
            })?;
        }
        let mut record = vec![0u8; HEADER];
        let mut located = Vec::new();
        for receipt in receipts {
            let json = serde_json::to_vec(receipt).map_err(|e| AppendError::NotWritten(e.to_string()))?;
            let len = u32::try_from(json.len()).map_err(|_| AppendError::NotWritten("receipt too large".into()))?;
            record.extend_from_slice(&len.to_le_bytes());
            located.push(Located { offset: self.end + record.len() as u64, len });
            record.extend_from_slice(&json);
        }
        let payload = record.len() - HEADER;
        if payload > MAX_RECORD {
            return Err(AppendError::NotWritten(format!("a group of {payload} bytes exceeds the log's {MAX_RECORD}")));
        }
        let crc = crc32fast::hash(&record[HEADER..]);
        record[..4].copy_from_slice(&(payload as u32).to_le_bytes());
        record[4..HEADER].copy_from_slice(&crc.to_le_bytes());
        if let Err(e) = self.write_at(&record, sync) {
            self.damaged = Some(self.end);
            // At once, so that a restart (even one before the next group) does not find it.
            self.repair();
            return Err(AppendError::Unknown(crate::error::chain(&e)));
        }
        self.end += record.len() as u64;
        Ok(located)
    }

    /// Cuts the log back to its last good record if a failed append left it damaged; on
    /// failure it stays marked, and the next append (or the next call) tries again.
    pub(super) fn repair(&mut self) {
        if let Some(good) = self.damaged {
            if let Err(e) = self.cut_back(good) {
                tracing::error!(log = %self.path.display(), error = %crate::error::chain(&e), "cannot repair the ledger log yet");
            }
        }
    }

    /// Makes every append so far durable.
    pub(super) fn sync(&mut self) -> std::io::Result<()> {
        match &self.bytes {
            Bytes::File(file) => {
                self.fault(|f| f.check_sync("sync"))?;
                file.sync_data()
            }
            Bytes::Memory(_) => Ok(()),
        }
    }

    fn write_at(&self, record: &[u8], sync: bool) -> std::io::Result<()> {
        match &self.bytes {
            Bytes::File(file) => {
                self.fault(|f| f.check_write("write"))?;
                file.write_all_at(record, self.end)?;
                if sync {
                    self.fault(|f| f.check_sync("sync"))?;
                    file.sync_data()?;
                }
                Ok(())
            }
            Bytes::Memory(bytes) => {
                bytes.write().extend_from_slice(record);
                Ok(())
            }
        }
    }

    /// Cuts the file back to `good` and syncs, so a group whose write failed part way is
    /// gone before the next one is written after it.
    fn cut_back(&mut self, good: u64) -> std::io::Result<()> {
        if let Bytes::File(file) = &self.bytes {
            self.fault(|f| f.check_write("resize"))?;
            file.set_len(good)?;
            self.fault(|f| f.check_sync("sync"))?;
            file.sync_data()?;
            tracing::info!(log = %self.path.display(), at = good, "ledger log repaired after a failed write");
        }
        self.end = good;
        self.damaged = None;
        Ok(())
    }

    fn fault(&self, check: impl FnOnce(&Faults) -> std::io::Result<()>) -> std::io::Result<()> {
        self.faults.as_ref().map_or(Ok(()), check)
    }
}

impl Reader {
    /// The receipt at `at`.
    pub(super) fn read(&self, at: Located) -> Result<Receipt, LedgerError> {
        let corrupt = |why: String| LedgerError::Storage(format!("the ledger log at byte {}: {why}", at.offset));
        let mut json = vec![0u8; at.len as usize];
        match &self.0 {
            Bytes::File(file) => file.read_exact_at(&mut json, at.offset).map_err(|e| corrupt(e.to_string()))?,
            Bytes::Memory(bytes) => {
                let bytes = bytes.read();
                let range = at.offset as usize..at.offset as usize + json.len();
                json.copy_from_slice(bytes.get(range).ok_or_else(|| corrupt("beyond the end".into()))?);
            }
        }
        serde_json::from_slice(&json).map_err(|e| corrupt(e.to_string()))
    }
}

/// A record that could not be read: whether a crash during its write explains it (it is
/// the last thing in the file), and what is wrong.
struct BadRecord {
    torn: bool,
    why: String,
}

/// The next record's payload; `None` at a clean end. `remaining` is the file's length
/// from the record on.
fn read_record(reader: &mut impl Read, remaining: u64) -> Result<Option<Vec<u8>>, BadRecord> {
    let bad = |torn: bool, why: String| BadRecord { torn, why };
    if remaining == 0 {
        return Ok(None);
    }
    if remaining < HEADER as u64 {
        return Err(bad(true, format!("{remaining} bytes, too few for a record header")));
    }
    let mut header = [0u8; HEADER];
    reader.read_exact(&mut header).map_err(|e| bad(false, e.to_string()))?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let extent = (HEADER + len) as u64;
    if len == 0 || len > MAX_RECORD {
        // A header lost in a crash: only possible within one record's reach of the end.
        let torn = remaining <= (HEADER + MAX_RECORD) as u64;
        return Err(bad(torn, format!("a record length of {len} bytes")));
    }
    if extent > remaining {
        return Err(bad(true, format!("a record of {len} bytes with {} left in the file", remaining - HEADER as u64)));
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).map_err(|e| bad(false, e.to_string()))?;
    if crc32fast::hash(&payload) != crc {
        return Err(bad(extent == remaining, "a record whose checksum does not match".into()));
    }
    Ok(Some(payload))
}

/// The receipts of a record whose checksum matched. `start` is the payload's offset.
fn decode(payload: &[u8], start: u64) -> Result<Vec<(Receipt, Located)>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < payload.len() {
        let len_bytes = payload.get(at..at + 4).ok_or("a receipt length cut short")?;
        let len = u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        let json = payload.get(at + 4..at + 4 + len as usize).ok_or("a receipt cut short")?;
        let receipt: Receipt = serde_json::from_slice(json).map_err(|e| format!("an unreadable receipt: {e}"))?;
        out.push((receipt, Located { offset: start + at as u64 + 4, len }));
        at += 4 + len as usize;
    }
    Ok(out)
}
