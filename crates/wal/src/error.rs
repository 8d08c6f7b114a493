//! The error type shared by every fallible WAL operation.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong opening or writing the log.
///
/// `Corrupt`, `MissingSegment` and `CorruptHardState` come only from [`crate::Wal::open`]. They
/// mean the directory cannot be trusted; nothing is repaired automatically because guessing
/// could silently drop committed entries. The replica needs an operator (for example, rebuild it
/// from a peer).
///
/// An `Io` error from `append`, `sync` or `save_hard_state` means durability is unknown. The
/// `Wal` is then poisoned (later calls return [`WalError::Poisoned`]) and the process must stop
/// and recover by reopening the directory. Never retry an fsync: after a failed fsync the kernel
/// may already have dropped the dirty pages, so a second fsync can succeed without the data.
#[derive(thiserror::Error, Debug)]
pub enum WalError {
    /// An operating-system call failed. (The message leaves the cause to `source()`, so that
    /// an error chain prints it once.)
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done, e.g. "fsync segment".
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A segment holds bytes that are not a torn final write.
    #[error("corrupt WAL segment {} at offset {offset}: {reason}", file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },

    /// The segment sequence numbers have a hole, so entries are missing.
    #[error("WAL segment {} is missing", dir.join(crate::segment::file_name(*seq)).display())]
    MissingSegment { dir: PathBuf, seq: u64 },

    /// The hard-state file is damaged or truncated.
    #[error("corrupt hard state file {}: {reason}", file.display())]
    CorruptHardState { file: PathBuf, reason: String },

    /// A snapshot file is damaged or truncated.
    #[error("corrupt snapshot file {}: {reason}", file.display())]
    CorruptSnapshot { file: PathBuf, reason: String },

    /// The caller broke a snapshot contract (too large, finished before complete).
    #[error("invalid snapshot: {0}")]
    InvalidSnapshot(String),

    /// The caller broke the `append` contract; nothing was written.
    #[error("invalid append at index {first_index} (last index {last_index}): {reason}")]
    InvalidAppend {
        first_index: u64,
        last_index: u64,
        reason: String,
    },

    /// An earlier write or fsync failed; the `Wal` refuses further work.
    #[error("WAL is unusable after an earlier write or fsync failure; restart and reopen it")]
    Poisoned,
}

/// Wraps an `io::Error` with the operation and path it came from.
pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WalError {
    let path = path.to_path_buf();
    move |source| WalError::Io { op, path, source }
}
