//! Raft's [`Storage`] on the write-ahead log: entries as WAL records (term + command), the hard
//! state as the WAL's atomically replaced hard-state file.
//!
//! A failed write or fsync stops the process (exit code [`EXIT_STORAGE_FAILURE`]): after such
//! a failure we cannot know what is durable, and acknowledging anything more could lose it.

use raft::{Entry, HardState, LogIndex, Storage, Term};
use serde::{Deserialize, Serialize};
use std::path::Path;
use wal::{Wal, WalError, WalOptions};

/// Exit code when the data directory is damaged and the node refuses to start.
pub const EXIT_CORRUPT_DATA: i32 = 3;
/// Exit code when a write or fsync fails while running.
pub const EXIT_STORAGE_FAILURE: i32 = 4;

/// An entry as stored: its index is the WAL record's.
#[derive(Deserialize)]
struct StoredEntry {
    term: u64,
    command: Vec<u8>,
}

/// The same encoding as [`StoredEntry`], borrowing the command so writing copies nothing.
#[derive(Serialize)]
struct StoredEntryRef<'a> {
    term: u64,
    command: &'a [u8],
}

pub struct WalStorage {
    wal: Wal,
    recovered: Option<(HardState, Vec<Entry>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Wal(#[from] WalError),
    #[error("corrupt record in {dir}: {reason}")]
    Decode { dir: String, reason: String },
}

impl WalStorage {
    /// Opens and recovers the log in `dir`. Returns the path of any torn tail that recovery
    /// cut off (a copy is kept in the directory).
    pub fn open(dir: &Path) -> Result<(WalStorage, Option<std::path::PathBuf>), OpenError> {
        let (wal, recovered) = Wal::open(dir, WalOptions::default())?;
        let bad = |reason: String| OpenError::Decode {
            dir: dir.display().to_string(),
            reason,
        };
        let hard_state = match &recovered.hard_state {
            Some(bytes) => {
                postcard::from_bytes(bytes).map_err(|e| bad(format!("hard state: {e}")))?
            }
            None => HardState::default(),
        };
        let mut entries = Vec::with_capacity(recovered.entries.len());
        for (index, payload) in &recovered.entries {
            let stored: StoredEntry =
                postcard::from_bytes(payload).map_err(|e| bad(format!("entry {index}: {e}")))?;
            entries.push(Entry {
                term: Term(stored.term),
                index: LogIndex(*index),
                command: stored.command,
            });
        }
        let storage = WalStorage {
            wal,
            recovered: Some((hard_state, entries)),
        };
        Ok((storage, recovered.truncated))
    }

    fn write(&mut self, hard_state: Option<&HardState>, entries: &[Entry]) -> Result<(), WalError> {
        if let Some(first) = entries.first() {
            let payloads: Vec<Vec<u8>> = entries
                .iter()
                .map(|e| {
                    let stored = StoredEntryRef {
                        term: e.term.0,
                        command: &e.command,
                    };
                    postcard::to_allocvec(&stored).expect("entries always serialize")
                })
                .collect();
            let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            self.wal.append(first.index.0, &refs)?;
            // Group commit: one fsync for the whole batch.
            self.wal.sync()?;
        }
        if let Some(hs) = hard_state {
            let bytes = postcard::to_allocvec(hs).expect("hard state always serializes");
            self.wal.save_hard_state(&bytes)?;
        }
        Ok(())
    }
}

impl Storage for WalStorage {
    fn initial_state(&mut self) -> (HardState, Vec<Entry>) {
        self.recovered.take().unwrap_or_default()
    }

    fn persist(&mut self, hard_state: Option<&HardState>, entries: &[Entry]) {
        // fsync blocks; let the runtime move other tasks off this worker meanwhile.
        let result = tokio::task::block_in_place(|| self.write(hard_state, entries));
        if let Err(e) = result {
            eprintln!("raftkv: fatal storage failure, stopping: {e}");
            std::process::exit(EXIT_STORAGE_FAILURE);
        }
    }
}
