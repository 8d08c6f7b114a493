//! Raft's [`Storage`] on the write-ahead log and snapshot files of `crates/wal`: entries as
//! WAL records (term + command), the hard state as the WAL's atomically replaced hard-state
//! file, and the snapshot as the `snapshot` file in the same directory.
//!
//! # On disk
//!
//! ```text
//! <data-dir>/hard_state                       term and vote
//! <data-dir>/00000000000000000042.wal, ...     log segments, oldest first
//! <data-dir>/snapshot                          the current snapshot
//! <data-dir>/snapshot.tmp, snapshot.incoming   one being written / received (never current)
//! ```
//!
//! Entries and the hard state are written with one fsync per `Ready` (group commit). A batch
//! of several entries goes to the *log writer*, a thread of the node's own: the driver hands
//! it the batch and awaits the answer, so that no runtime thread blocks in that fsync and the
//! Redis connections, the apply loop and the transport run meanwhile. A batch of one entry
//! (or none: a new term or vote), which is what a light load makes, is written on the
//! driver's own thread: the hand-off's two thread wake-ups would cost more than the fsync
//! (see [`INLINE_MAX_RECORDS`]). A leader first lets the AppendEntries it just queued go out,
//! so that its followers write while it does (thesis §10.2.1).
//!
//! A local snapshot encodes itself into `snapshot.tmp` (fsynced) on a background thread, so
//! that a large one stalls neither the Raft driver nor the apply loop; the rename that makes it
//! current, and the deletion of the log segments it covers, happen on the driver's thread
//! once the write is done. A snapshot received from the leader is written chunk by chunk
//! (each fsynced before it is acknowledged) and renamed into place when complete.
//!
//! Memory: a snapshot is never held whole while it is written (the service's data writes
//! itself out through a 1 MiB buffer); it is held whole only while it is read back to hand to
//! the service; chunks sent to followers are read from the file one at a time.
//!
//! # Recovery
//!
//! The node starts from the snapshot and the log after it. The log is kept after a snapshot
//! only if it holds the snapshot's last entry (same index and term) or starts right after it
//! (§7); a log that starts later than that has lost entries, and the node refuses to start.
//!
//! A failed write or fsync stops the process (exit code [`EXIT_STORAGE_FAILURE`]): after such
//! a failure we cannot know what is durable, and acknowledging anything more could lose it.

use crate::metrics::Metrics;
use prometheus_client::metrics::histogram::Histogram;
use raft::{
    Entry, HardState, InitialState, LogIndex, NodeId, SnapshotData, SnapshotMeta, Storage, Term,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use wal::snapshot::{self, IncomingSnapshot, PreparedSnapshot};
use wal::{Wal, WalError, WalOptions};

/// Exit code when the data directory is damaged and the node refuses to start.
pub const EXIT_CORRUPT_DATA: i32 = 3;
/// Exit code when a write or fsync fails while running.
pub const EXIT_STORAGE_FAILURE: i32 = 4;
/// Exit code when the data directory cannot be read or written at startup (permissions, a
/// read-only file system, no space, not a directory): nothing is damaged.
pub const EXIT_DATA_DIR_UNUSABLE: i32 = 5;
/// Exit code when another process holds the data directory.
pub const EXIT_DATA_DIR_IN_USE: i32 = 6;

/// Largest snapshot accepted, written or received (a bound on a corrupt or hostile length).
pub const MAX_SNAPSHOT_BYTES: u64 = 64 << 30;

/// Default size of a log segment. Compaction deletes whole segments, so the log kept on disk
/// is at most about the entries since the last snapshot plus one segment.
pub const DEFAULT_SEGMENT_BYTES: u64 = 8 << 20;

/// A batch of at most this many entries (and [`INLINE_MAX_BYTES`]) is written on the
/// driver's own thread rather than by the log writer. A hand-off costs two thread wake-ups
/// (to the writer and back), each some 35-50 us on a 2-core VM: most of a lone write's time
/// beyond its fsync. A light load makes one-entry batches, so it gains that; a heavy one
/// makes bigger batches, which the writer takes, keeping every runtime thread free for the
/// connections meanwhile (writing those inline too cost 5-11% at 64 clients).
const INLINE_MAX_RECORDS: usize = 1;
/// See [`INLINE_MAX_RECORDS`].
const INLINE_MAX_BYTES: usize = 64 << 10;

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
    /// Held open for the life of the process: it holds the data directory's lock.
    _lock: std::fs::File,
    /// This node's id, for log lines.
    node: NodeId,
    metrics: Metrics,
    dir: PathBuf,
    /// Shared with the log writer, which holds it only while it writes a batch; the driver
    /// waits for each batch before it touches the log again, so the two never contend.
    wal: Arc<Mutex<Wal>>,
    writer: mpsc::Sender<WriteJob>,
    recovered: Option<InitialState>,
    /// The current snapshot, and its data until the driver first asks for it (read at
    /// startup to check it anyway).
    snapshot: Option<SnapshotMeta>,
    startup_data: Option<Vec<u8>>,
    /// A local snapshot being written on a background thread.
    writing: Option<(LogIndex, mpsc::Receiver<Result<PreparedSnapshot, WalError>>)>,
    /// The newest local snapshot waiting for the one being written.
    queued: Option<(LogIndex, Term, Box<dyn SnapshotData>)>,
    saved: Option<SnapshotMeta>,
    incoming: Option<(SnapshotMeta, IncomingSnapshot)>,
}

/// What one `Ready` writes: encoded entries and hard state.
struct Batch {
    /// The index of the first record (ignored when there are none).
    first_index: u64,
    records: Vec<Vec<u8>>,
    hard_state: Option<Vec<u8>>,
}

impl Batch {
    /// Whether it is written on the driver's thread (see [`INLINE_MAX_RECORDS`]).
    fn is_small(&self) -> bool {
        self.records.len() <= INLINE_MAX_RECORDS
            && self.records.iter().map(Vec::len).sum::<usize>() <= INLINE_MAX_BYTES
    }
}

/// One batch for the log writer.
struct WriteJob {
    batch: Batch,
    fsync: Histogram,
    done: tokio::sync::oneshot::Sender<Result<(), WalError>>,
}

/// How a `persist` writes its batch.
enum Write {
    /// On the driver's own thread.
    Inline(Arc<Mutex<Wal>>, Batch, Histogram),
    /// Handed to the log writer, which answers here.
    Handed(tokio::sync::oneshot::Receiver<Result<(), WalError>>),
}

/// The log writer's loop: each batch appended, fsynced once, then the hard state replaced.
fn log_writer(wal: Arc<Mutex<Wal>>, jobs: mpsc::Receiver<WriteJob>) {
    while let Ok(job) = jobs.recv() {
        let result = write_batch(&mut lock(&wal), &job.batch, &job.fsync);
        let _ = job.done.send(result);
    }
}

fn write_batch(wal: &mut Wal, job: &Batch, fsync: &Histogram) -> Result<(), WalError> {
    if !job.records.is_empty() {
        if job.first_index > wal.last_index() + 1 {
            // The first entries after a snapshot received while the log was shorter.
            wal.restart_at(job.first_index - 1)?;
        }
        let refs: Vec<&[u8]> = job.records.iter().map(Vec::as_slice).collect();
        wal.append(job.first_index, &refs)?;
        // Group commit: one fsync for the whole batch.
        let started = std::time::Instant::now();
        wal.sync()?;
        fsync.observe(started.elapsed().as_secs_f64());
    }
    if let Some(bytes) = &job.hard_state {
        wal.save_hard_state(bytes)?;
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The writer never panics holding the log; if it did, the process stops anyway.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a data directory could not be opened. [`OpenError::exit_code`] tells them apart for
/// the operator: damage needs a repair (restore the replica), an I/O error needs the
/// directory fixed (permissions, space, a read-only mount), and a directory in use needs the
/// other process stopped.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("data directory {} is in use by {}", dir.display(), holder(*pid))]
    InUse { dir: PathBuf, pid: Option<u32> },
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("corrupt record in {dir}: {reason}")]
    Decode { dir: String, reason: String },
    #[error("the log in {dir} {reason}")]
    MissingLog { dir: String, reason: String },
}

fn holder(pid: Option<u32>) -> String {
    pid.map_or("another process".to_string(), |pid| format!("pid {pid}"))
}

impl OpenError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            OpenError::InUse { .. } => EXIT_DATA_DIR_IN_USE,
            OpenError::Wal(WalError::Io { .. }) => EXIT_DATA_DIR_UNUSABLE,
            _ => EXIT_CORRUPT_DATA,
        }
    }

    /// Whether the directory's contents are damaged (rather than unreachable or busy).
    pub fn is_damage(&self) -> bool {
        self.exit_code() == EXIT_CORRUPT_DATA
    }
}

/// The name of the lock file in a data directory.
pub const LOCK_FILE: &str = "LOCK";

/// Takes the advisory lock on `<dir>/LOCK` (creating the directory if needed) and writes our
/// pid into the file, so that a second process is told who holds it. The lock lasts as long
/// as the returned file is open, and the kernel releases it when the process dies, however it
/// dies.
pub fn lock_data_dir(dir: &Path) -> Result<std::fs::File, OpenError> {
    use std::io::{Read, Seek, Write};
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| OpenError::Wal(WalError::Io { op, path, source })
    };
    std::fs::create_dir_all(dir).map_err(io("create data directory", dir))?;
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io("open lock file", &path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(OpenError::InUse {
                dir: dir.to_path_buf(),
                pid: text.trim().parse().ok(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", &path)(e)),
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(io("write lock file", &path))?;
    Ok(file)
}

/// An error and its causes, one after the other.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn to_wal(meta: SnapshotMeta) -> wal::SnapshotMeta {
    wal::SnapshotMeta {
        index: meta.index.0,
        term: meta.term.0,
        len: meta.len,
    }
}

fn from_wal(meta: wal::SnapshotMeta) -> SnapshotMeta {
    SnapshotMeta {
        index: LogIndex(meta.index),
        term: Term(meta.term),
        len: meta.len,
    }
}

/// Stops the process after a failed write: see the module docs.
fn fatal(e: impl Into<Box<dyn std::error::Error>>) -> ! {
    eprintln!(
        "raftkv: fatal storage failure, stopping: {}",
        chain(e.into().as_ref())
    );
    std::process::exit(EXIT_STORAGE_FAILURE);
}

impl WalStorage {
    /// Locks (creating it if needed), opens and recovers the data directory. Returns the path
    /// of any torn tail that recovery cut off (a copy is kept in the directory).
    pub fn open(
        node: NodeId,
        dir: &Path,
        segment_bytes: u64,
    ) -> Result<(WalStorage, Option<PathBuf>), OpenError> {
        // Before anything else touches the directory: a second process must change nothing.
        let lock = lock_data_dir(dir)?;
        let loaded = snapshot::load_snapshot(dir, MAX_SNAPSHOT_BYTES)?;
        let snapshot = loaded.as_ref().map(|(meta, _)| from_wal(*meta));
        // The entries the snapshot covers are not kept, only its last one (whose term says
        // whether the log after it continues it).
        let keep_from = snapshot.map_or(0, |s| s.index.0);
        let options = WalOptions {
            segment_bytes,
            keep_payloads_from: keep_from,
            ..WalOptions::default()
        };
        let (wal, recovered) = Wal::open(dir, options)?;
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
        let mut entries = Vec::new();
        for (index, payload) in recovered.entries.iter().filter(|(i, _)| *i >= keep_from) {
            let stored: StoredEntry =
                postcard::from_bytes(payload).map_err(|e| bad(format!("entry {index}: {e}")))?;
            entries.push(Entry {
                term: Term(stored.term),
                index: LogIndex(*index),
                command: stored.command,
            });
        }
        drop(recovered.entries);
        let entries = log_after(snapshot, recovered.first_index, entries).map_err(|reason| {
            OpenError::MissingLog {
                dir: dir.display().to_string(),
                reason,
            }
        })?;
        let log = match (entries.first(), entries.last()) {
            (Some(first), Some(last)) => format!("log entries {}..={}", first.index, last.index),
            _ => "no log entries".to_string(),
        };
        let snapshot_text = snapshot.map_or("no snapshot".to_string(), |s| {
            format!("a snapshot at index {} ({} bytes)", s.index, s.len)
        });
        let vote = hard_state
            .vote
            .map_or("no vote".to_string(), |v| format!("voted for {v}"));
        tracing::info!(
            node,
            term = hard_state.term.0,
            "recovered {}: {snapshot_text}, {log}; term {}, {vote}",
            dir.display(),
            hard_state.term,
        );
        let wal = Arc::new(Mutex::new(wal));
        let (writer, jobs) = mpsc::channel();
        {
            let wal = wal.clone();
            std::thread::Builder::new()
                .name(format!("log-writer-{node}"))
                .spawn(move || log_writer(wal, jobs))
                .map_err(|source| {
                    OpenError::Wal(WalError::Io {
                        op: "start the log writer thread",
                        path: dir.to_path_buf(),
                        source,
                    })
                })?;
        }
        let storage = WalStorage {
            _lock: lock,
            node,
            metrics: Metrics::default(),
            dir: dir.to_path_buf(),
            wal,
            writer,
            recovered: Some(InitialState {
                hard_state,
                snapshot,
                entries,
            }),
            snapshot,
            startup_data: loaded.map(|(_, data)| data),
            writing: None,
            queued: None,
            saved: None,
            incoming: None,
        };
        Ok((storage, recovered.truncated))
    }

    /// Records fsync and snapshot timings into `metrics` from now on.
    pub fn set_metrics(&mut self, metrics: Metrics) {
        if let Some(s) = self.snapshot {
            metrics
                .snapshot_size
                .set(i64::try_from(s.len).unwrap_or(i64::MAX));
        }
        self.metrics = metrics;
    }

    /// Starts writing `data` on a background thread: it encodes itself straight into the file.
    fn start_writing(&mut self, index: LogIndex, term: Term, data: Box<dyn SnapshotData>) {
        let (tx, rx) = mpsc::channel();
        let dir = self.dir.clone();
        let node = self.node;
        let save_duration = self.metrics.snapshot_save.clone();
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let result = snapshot::write_snapshot_tmp_with(
                &dir,
                index.0,
                term.0,
                MAX_SNAPSHOT_BYTES,
                |out| data.write_to(out),
            );
            if let Ok(prepared) = &result {
                save_duration.observe(started.elapsed().as_secs_f64());
                tracing::info!(
                    node,
                    "snapshot at index {index}: {} bytes written in {:?}",
                    prepared.meta().len,
                    started.elapsed()
                );
            }
            let _ = tx.send(result);
        });
        self.writing = Some((index, rx));
    }

    /// Makes `meta` the current snapshot's and drops the log segments it covers.
    fn became_current(&mut self, meta: SnapshotMeta) -> Result<(), WalError> {
        self.snapshot = Some(meta);
        self.metrics
            .snapshot_size
            .set(i64::try_from(meta.len).unwrap_or(i64::MAX));
        self.startup_data = None;
        lock(&self.wal).compact(meta.index.0)?;
        tracing::info!(
            node = self.node,
            "snapshot at index {} (term {}, {} bytes) is durable; the log before it is compacted",
            meta.index,
            meta.term,
            meta.len
        );
        Ok(())
    }

    fn current_index(&self) -> LogIndex {
        self.snapshot.map_or(LogIndex(0), |m| m.index)
    }
}

/// §7: the stored entries that continue `snapshot` (all of them without one). A log that does
/// not reach back to the snapshot has lost entries.
fn log_after(
    snapshot: Option<SnapshotMeta>,
    first_index: u64,
    mut entries: Vec<Entry>,
) -> Result<Vec<Entry>, String> {
    let Some(snap) = snapshot else {
        if first_index != 1 && !entries.is_empty() {
            return Err(format!(
                "starts at index {first_index} with no snapshot to cover the entries before"
            ));
        }
        return Ok(entries);
    };
    let s = snap.index.0;
    let covered = entries.iter().take_while(|e| e.index.0 < s).count();
    entries.drain(..covered);
    match entries.first() {
        None => Ok(entries),
        Some(first) if first.index.0 > s + 1 => Err(format!(
            "starts at index {} but the snapshot ends at {s}: entries are missing",
            first.index
        )),
        Some(first) if first.index.0 == s + 1 => Ok(entries),
        // It holds the snapshot's last entry: what follows continues the snapshot if that
        // entry has the snapshot's term; otherwise nothing after it is known to.
        Some(first) if first.term == snap.term => {
            entries.remove(0);
            Ok(entries)
        }
        Some(_) => Ok(Vec::new()),
    }
}

impl Storage for WalStorage {
    fn initial_state(&mut self) -> InitialState {
        self.recovered.take().unwrap_or_default()
    }

    fn persist(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[Entry],
        replicating: bool,
    ) -> impl std::future::Future<Output = ()> + Send {
        // Encoded here, so the writer only writes.
        let records: Vec<Vec<u8>> = entries
            .iter()
            .map(|e| {
                let stored = StoredEntryRef {
                    term: e.term.0,
                    command: &e.command,
                };
                postcard::to_allocvec(&stored).expect("entries always serialize")
            })
            .collect();
        let batch = Batch {
            first_index: entries.first().map_or(0, |e| e.index.0),
            records,
            hard_state: hard_state
                .map(|hs| postcard::to_allocvec(hs).expect("hard state always serializes")),
        };
        let fsync = self.metrics.wal_fsync.clone();
        let write = if batch.is_small() {
            Write::Inline(Arc::clone(&self.wal), batch, fsync)
        } else {
            let (done, written) = tokio::sync::oneshot::channel();
            // If the writer is gone, `written` says so.
            let _ = self.writer.send(WriteJob { batch, fsync, done });
            Write::Handed(written)
        };
        async move {
            let result = match write {
                Write::Inline(wal, batch, fsync) => {
                    if replicating {
                        // Let the AppendEntries just queued reach the wire before this
                        // thread blocks in the fsync.
                        tokio::task::yield_now().await;
                    }
                    Ok(write_batch(&mut lock(&wal), &batch, &fsync))
                }
                Write::Handed(written) => written.await,
            };
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => fatal(e),
                Err(_) => fatal("the log writer stopped"),
            }
        }
    }

    fn save_snapshot(&mut self, index: LogIndex, term: Term, data: Box<dyn SnapshotData>) {
        if index <= self.current_index() {
            return;
        }
        if self.writing.is_some() {
            self.queued = Some((index, term, data));
        } else {
            self.start_writing(index, term, data);
        }
    }

    fn snapshot_saved(&mut self) -> Option<SnapshotMeta> {
        if let Some((_, rx)) = &self.writing {
            match rx.try_recv() {
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => fatal("the snapshot writer stopped"),
                Ok(Err(e)) => fatal(e),
                Ok(Ok(prepared)) => {
                    self.writing = None;
                    let meta = from_wal(prepared.meta());
                    if meta.len == 0 {
                        // It could never be sent to a follower.
                        fatal("the service wrote an empty snapshot");
                    }
                    // A newer snapshot from the leader may have been installed meanwhile.
                    if meta.index > self.current_index() {
                        let committed = prepared.commit().and_then(|_| self.became_current(meta));
                        if let Err(e) = committed {
                            fatal(e);
                        }
                        self.saved = Some(meta);
                    }
                    if let Some((index, term, data)) = self.queued.take() {
                        if index > self.current_index() {
                            self.start_writing(index, term, data);
                        }
                    }
                }
            }
        }
        self.saved.take()
    }

    fn persist_snapshot_chunk(&mut self, meta: SnapshotMeta, offset: u64, data: &[u8]) {
        let result = tokio::task::block_in_place(|| -> Result<bool, WalError> {
            if offset == 0 {
                let incoming = IncomingSnapshot::begin(
                    &self.dir,
                    meta.index.0,
                    meta.term.0,
                    meta.len,
                    MAX_SNAPSHOT_BYTES,
                )?;
                self.incoming = Some((meta, incoming));
            }
            match &mut self.incoming {
                Some((m, incoming)) if *m == meta => incoming.write_chunk(offset, data),
                _ => Ok(false),
            }
        });
        match result {
            Ok(true) => {}
            Ok(false) => fatal(format!(
                "a chunk of snapshot {} at offset {offset} arrived out of order",
                meta.index
            )),
            Err(e) => fatal(e),
        }
    }

    fn install_snapshot(&mut self, meta: SnapshotMeta) {
        let result = tokio::task::block_in_place(|| -> Result<(), WalError> {
            let Some((m, incoming)) = self.incoming.take() else {
                return Err(WalError::InvalidSnapshot(format!(
                    "installing snapshot {} that was never received",
                    meta.index
                )));
            };
            if m != meta {
                return Err(WalError::InvalidSnapshot(format!(
                    "installing snapshot {} while {} was received",
                    meta.index, m.index
                )));
            }
            incoming.finish()?;
            let mut wal = lock(&self.wal);
            if wal.last_index() < meta.index.0 {
                // The whole log is behind the snapshot: start it afresh after it.
                wal.restart_at(meta.index.0)?;
            }
            drop(wal);
            self.became_current(meta)
        });
        if let Err(e) = result {
            fatal(e);
        }
    }

    fn read_snapshot(&mut self) -> Option<(SnapshotMeta, Vec<u8>)> {
        let meta = self.snapshot?;
        if let Some(data) = self.startup_data.take() {
            return Some((meta, data));
        }
        match snapshot::load_snapshot(&self.dir, MAX_SNAPSHOT_BYTES) {
            Ok(Some((m, data))) if from_wal(m) == meta => Some((meta, data)),
            Ok(_) => fatal(format!(
                "snapshot {} is gone from {}",
                meta.index,
                self.dir.display()
            )),
            Err(e) => fatal(e),
        }
    }

    fn read_snapshot_chunk(
        &mut self,
        meta: SnapshotMeta,
        offset: u64,
        len: u64,
    ) -> Option<Vec<u8>> {
        match snapshot::read_snapshot_chunk(&self.dir, &to_wal(meta), offset, len) {
            Ok(chunk) => chunk,
            Err(e) => {
                // Not fatal: nothing durable depends on it; the follower asks again.
                tracing::warn!("cannot read snapshot {} for a follower: {e}", meta.index);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(from: u64, terms: &[u64]) -> Vec<Entry> {
        (from..)
            .zip(terms)
            .map(|(i, &t)| Entry {
                term: Term(t),
                index: LogIndex(i),
                command: vec![i as u8],
            })
            .collect()
    }

    fn snap(index: u64, term: u64) -> Option<SnapshotMeta> {
        Some(SnapshotMeta {
            index: LogIndex(index),
            term: Term(term),
            len: 1,
        })
    }

    /// Batches of one entry are written on the caller's thread, bigger ones by the log
    /// writer; both must be durable, in order, and a later batch must replace the suffix it
    /// overlaps, whichever path wrote what.
    #[test]
    fn batches_written_inline_and_by_the_writer_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let hard_state = HardState {
            term: Term(2),
            vote: Some(1),
        };
        {
            let (mut storage, _) = WalStorage::open(1, dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
            runtime.block_on(async {
                storage.persist(None, &entries(1, &[1]), false).await;
                storage
                    .persist(None, &entries(2, &[1, 1, 1, 1]), true)
                    .await;
                storage
                    .persist(Some(&hard_state), &entries(4, &[2]), true)
                    .await;
                storage.persist(None, &entries(5, &[2, 2]), false).await;
                storage.persist(None, &entries(6, &[3]), false).await;
            });
        }
        let (mut storage, _) = WalStorage::open(1, dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
        let state = storage.initial_state();
        assert_eq!(state.hard_state, hard_state);
        assert_eq!(state.entries, entries(1, &[1, 1, 1, 2, 2, 3]));
    }

    /// §7: the log is kept after a snapshot only if it holds the snapshot's last entry or
    /// starts right after it.
    #[test]
    fn the_log_after_a_snapshot_follows_the_retention_rule() {
        let log = entries(1, &[1, 1, 2, 2, 3]);
        // Holds entry 3 of term 2: entries 4 and 5 continue the snapshot.
        assert_eq!(log_after(snap(3, 2), 1, log.clone()), Ok(log[3..].to_vec()));
        // Entry 3 has another term: nothing after it is known to continue the snapshot.
        assert_eq!(log_after(snap(3, 3), 1, log.clone()), Ok(vec![]));
        // The log ends before the snapshot.
        assert_eq!(log_after(snap(9, 3), 1, log.clone()), Ok(vec![]));
        // Starts right after it (a log restarted after an installed snapshot).
        let tail = entries(10, &[4, 4]);
        assert_eq!(log_after(snap(9, 3), 10, tail.clone()), Ok(tail));
        // Starts later: entries are missing.
        assert!(log_after(snap(5, 3), 10, entries(10, &[4])).is_err());
        // No snapshot: the log must start at 1.
        assert!(log_after(None, 4, entries(4, &[1])).is_err());
        assert_eq!(log_after(None, 1, log.clone()), Ok(log));
    }
}
