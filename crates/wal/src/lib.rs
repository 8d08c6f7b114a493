//! Durable storage for a Raft log: a segmented, checksummed write-ahead log of entries plus an
//! atomically replaced hard-state blob.
//!
//! # Contract
//!
//! * Entries are opaque payloads with consecutive indices. [`Wal::append`] may start at any
//!   index up to `last_index + 1`; entries at or after that index are replaced (a Raft
//!   follower truncating a conflicting suffix).
//! * Log compaction: once the caller has a durable snapshot covering entries up to some
//!   index, [`Wal::compact`] deletes the oldest segments whose records are all covered, and
//!   [`Wal::restart_at`] starts the log afresh after an index at or beyond its end (a snapshot
//!   received from a leader), deleting every earlier segment. The log then starts at an index
//!   above 1; [`Recovered::first_index`] says where.
//! * `append` only buffers and writes; nothing is durable until [`Wal::sync`] returns `Ok`.
//!   Call `sync` once per batch (group commit): 1000 appends followed by one `sync` cost one
//!   fsync of the segment (plus one of the directory if a segment was created).
//! * [`Wal::save_hard_state`] is durable when it returns `Ok`.
//! * Any `Err` from `append`, `sync` or `save_hard_state` other than
//!   [`WalError::InvalidAppend`] leaves durability unknown: the `Wal` is poisoned and the process
//!   must stop and recover by reopening. Never retry an fsync; after a failure the kernel may
//!   have discarded the dirty pages and a retry can report success without the data.
//! * One `Wal` per directory at a time. This crate does not lock the directory; its user must
//!   (raftkv's storage holds an advisory lock on a `LOCK` file in it).
//! * [`snapshot`] keeps the snapshot files, in the same directory.
//!
//! # On-disk format
//!
//! The directory holds:
//!
//! * `hard_state`: `[magic "RKVH"][version: u32 LE = 1][len: u32 LE][crc32c(bytes): u32 LE]
//!   [bytes]`, replaced by writing `hard_state.tmp`, fsyncing it, renaming it over
//!   `hard_state` and fsyncing the directory.
//! * Segments `00000000000000000001.wal`, `00000000000000000002.wal`, ... (20-digit sequence
//!   numbers, consecutive; from 1 until compaction deletes the oldest). Each starts with a
//!   20-byte header `[magic "RKVW"] [version: u32 LE = 1][seq: u64 LE][crc32c of those 16
//!   bytes: u32 LE]` followed by records
//!   `[len: u32 LE][crc32c(payload): u32 LE][payload]` with payload `[index: u64 LE][data]`.
//!   A new segment is started before a record once the current one has reached
//!   `segment_bytes`. Before starting it, the finished segment is fsynced, and the new one is
//!   created with its header under a `.wal.tmp` name, fsynced and renamed, so every segment but
//!   the last is always complete and every segment name has a valid header.
//! * The last segment is preallocated to `segment_bytes` where the file system can (an fsync
//!   after an append then need not record a longer file: about a third cheaper on ext4), so
//!   zeros follow its records. A finished segment is cut to its records before the next is
//!   created, and a closed `Wal` cuts its last one too.
//! * `torn-<seq>-<offset>.bin` (possibly with a `-<n>` suffix): bytes cut off a torn tail
//!   during recovery, kept for inspection; never read back.
//!
//! Truncation is not a separate operation on disk: a record whose index is at or below the last
//! index seen so far replaces that entry and everything after it during replay, so the later
//! record wins (one below the first index held restarts the log there). The first record of a
//! segment may also jump past the end of the log: [`Wal::restart_at`] starts a new segment
//! for that, and the log restarts at the jump.
//!
//! # Recovery rules
//!
//! [`Wal::open`] replays every segment in order and refuses (rather than repairs) anything that
//! could be lost committed data:
//!
//! * A gap in segment sequence numbers, or a hard state without any segment (open always
//!   creates a segment durably first, and compaction never deletes the last one) is
//!   [`WalError::MissingSegment`]. A first segment numbered above 1 is the result of
//!   compaction; whether the log still reaches back far enough is the caller's to check
//!   (against its snapshot) with [`Recovered::first_index`].
//! * A bad segment header (short, bad magic or checksum, unknown version, sequence number not
//!   matching the name) is [`WalError::Corrupt`] in any segment.
//! * Only the last segment may end in free space: all zero bytes from a record start to EOF
//!   (the preallocated space, or an append none of whose bytes reached the disk). It holds
//!   nothing, so nothing is saved; appends continue there.
//! * Only the last segment may end in a torn write, recognised as: a record header cut short
//!   by EOF; a record whose length runs past EOF; or a complete record with a bad
//!   checksum, with only zeros after it, that contains a whole 512-byte-aligned sector of
//!   zeros or is zero from its last 4096-byte block boundary to its end (an allocated but
//!   unwritten sector, or a preallocated block whose write never completed; a bit flip never
//!   zeroes a whole sector or block). The tail from
//!   that record on is copied to a `torn-*.bin` file and fsynced, then the segment is truncated
//!   at the record start and fsynced; [`Recovered::truncated`] names the copy.
//! * Everything else is [`WalError::Corrupt`] naming the file and byte offset: a checksum
//!   mismatch anywhere (including the final record, unless the zero-sector rule above applies),
//!   a length above `max_record_bytes` (never allocated) or below the 8-byte index, any damage
//!   in a segment that is not the last, an entry index of 0, or an index more than one past the
//!   last replayed index anywhere but at the start of a segment.
//! * A damaged or truncated `hard_state` is [`WalError::CorruptHardState`]; a leftover
//!   `hard_state.tmp` (a save interrupted before its rename) is removed.
//!
//! A length field damaged so that it runs past EOF in the last segment is indistinguishable from
//! a torn write and is treated as one; the records after it are not replayed but are preserved
//! in the `torn-*.bin` file.

mod error;
mod fsutil;
mod hard_state;
mod record;
mod segment;
pub mod snapshot;

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

pub use error::WalError;
pub use snapshot::{IncomingSnapshot, PreparedSnapshot, SnapshotMeta};

use error::io_err;

/// Buffered record bytes are written to the segment once they reach this size.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Tuning knobs for a [`Wal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// A new segment is started once the current one has reached this many bytes.
    pub segment_bytes: u64,
    /// Largest accepted record payload (8-byte index plus entry data). A larger length found on
    /// disk is corruption, never an allocation; a larger entry is rejected by `append`.
    pub max_record_bytes: u32,
    /// Recovery keeps the payloads of entries from this index on only: the ones before it are
    /// replayed (their positions still decide the log's shape) but come back empty, so that
    /// recovery does not hold in memory what a snapshot already covers.
    pub keep_payloads_from: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            max_record_bytes: 64 << 20,
            keep_payloads_from: 0,
        }
    }
}

/// What [`Wal::open`] found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// The last saved hard state, `None` if none was ever saved.
    pub hard_state: Option<Vec<u8>>,
    /// `(index, payload)` pairs with consecutive indices from `first_index` (or empty). The
    /// payloads of indices below [`WalOptions::keep_payloads_from`] are empty.
    pub entries: Vec<(u64, Vec<u8>)>,
    /// The index of the first entry held (1 for a log never compacted; when `entries` is
    /// empty, the index the next entry would have).
    pub first_index: u64,
    /// Where the bytes of a torn final write were saved before being cut off, if there was one.
    pub truncated: Option<PathBuf>,
}

impl Default for Recovered {
    /// An empty log: nothing saved, the first entry would be 1.
    fn default() -> Self {
        Recovered {
            hard_state: None,
            entries: Vec::new(),
            first_index: 1,
            truncated: None,
        }
    }
}

/// An open write-ahead log directory. See the crate documentation for the durability contract.
pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    /// Every segment, oldest first, with the highest index among its records (0: none); the
    /// last is the one being appended to.
    segments: VecDeque<(u64, u64)>,
    /// Sequence number of the segment being appended to.
    seq: u64,
    file: File,
    path: PathBuf,
    /// Size of the current segment including bytes still in `buf`.
    seg_len: u64,
    /// Encoded records not yet written to `file`.
    buf: Vec<u8>,
    last_index: u64,
    /// Bytes were appended since the last fsync of the current segment.
    dirty: bool,
    /// A segment was created since the last directory fsync.
    dir_dirty: bool,
    poisoned: bool,
}

impl Wal {
    /// Opens (creating if absent) the directory and recovers it.
    ///
    /// Applies the recovery rules in the crate documentation; the only change it ever makes to
    /// existing data is cutting a torn tail off the last segment (after saving a copy).
    pub fn open(dir: &Path, opts: WalOptions) -> Result<(Wal, Recovered), WalError> {
        fsutil::ensure_dir(dir)?;
        hard_state::remove_leftover(dir)?;
        let seqs = segment::list(dir)?;
        let hard_state = hard_state::load(dir)?;

        if seqs.is_empty() && hard_state.is_some() {
            return Err(WalError::MissingSegment {
                dir: dir.to_path_buf(),
                seq: 1,
            });
        }
        let first_seq = seqs.first().copied().unwrap_or(1);
        for (expected, &seq) in (first_seq..).zip(&seqs) {
            if seq != expected {
                return Err(WalError::MissingSegment {
                    dir: dir.to_path_buf(),
                    seq: expected,
                });
            }
        }

        let mut log = Replay::default();
        let mut segments = VecDeque::new();
        let mut truncated = None;
        // The last segment and where its records end, if there is one.
        let mut last = None;
        for (i, &seq) in seqs.iter().enumerate() {
            let path = dir.join(segment::file_name(seq));
            let buf = std::fs::read(&path).map_err(io_err("read segment", &path))?;
            let is_last = i + 1 == seqs.len();
            let mut max_index = 0;
            let mut first_record = true;
            let tail = segment::scan(
                &path,
                seq,
                &buf,
                is_last,
                opts.max_record_bytes,
                |offset, index, data| {
                    let data = if index < opts.keep_payloads_from {
                        &[][..]
                    } else {
                        data
                    };
                    log.replay(&path, offset, index, data, first_record)?;
                    first_record = false;
                    max_index = max_index.max(index);
                    Ok(())
                },
            )?;
            let end = match tail {
                segment::Tail::None => buf.len() as u64,
                segment::Tail::Free(offset) => offset,
                segment::Tail::Torn(offset) => {
                    let tail = &buf[offset as usize..];
                    truncated = Some(segment::cut_torn_tail(dir, &path, seq, offset, tail)?);
                    offset
                }
            };
            if is_last {
                last = Some((seq, end));
            }
            segments.push_back((seq, max_index));
        }

        let (seq, file, path, seg_len) = match last {
            Some((seq, end)) => {
                let path = dir.join(segment::file_name(seq));
                let file = segment::open_for_append(&path, end, opts.segment_bytes)?;
                (seq, file, path, end)
            }
            None => {
                let (file, path) = segment::create(dir, 1, opts.segment_bytes)?;
                fsutil::sync_dir(dir)?;
                segments.push_back((1, 0));
                (1, file, path, segment::HEADER_LEN)
            }
        };

        let last_index = log.last_index();
        let wal = Wal {
            dir: dir.to_path_buf(),
            opts,
            segments,
            seq,
            file,
            path,
            seg_len,
            buf: Vec::new(),
            last_index,
            dirty: false,
            dir_dirty: false,
            poisoned: false,
        };
        let recovered = Recovered {
            hard_state,
            first_index: log.first.max(1),
            entries: log.entries,
            truncated,
        };
        Ok((wal, recovered))
    }

    /// Replaces the hard state atomically: write a temp file, fsync it, rename over the old one,
    /// fsync the directory. Durable when it returns `Ok`.
    pub fn save_hard_state(&mut self, bytes: &[u8]) -> Result<(), WalError> {
        self.check_usable()?;
        let result = hard_state::save(&self.dir, bytes);
        self.poison_on_err(result)
    }

    /// Appends entries starting at `first_index`, which must be in `1..=last_index + 1`;
    /// entries at or after `first_index` are logically replaced.
    ///
    /// Buffers and writes but does not fsync: call [`Wal::sync`] once per batch. (When the
    /// batch crosses into a new segment, the finished segment is fsynced so that only the last
    /// segment can ever hold a torn write.) Replacing entries requires at least one new entry;
    /// an empty `payloads` at `last_index + 1` is a no-op. On `InvalidAppend` nothing is written.
    pub fn append(&mut self, first_index: u64, payloads: &[&[u8]]) -> Result<(), WalError> {
        self.check_usable()?;
        let invalid = |reason: String| WalError::InvalidAppend {
            first_index,
            last_index: self.last_index,
            reason,
        };
        if first_index == 0 {
            return Err(invalid("entry indices start at 1".to_string()));
        }
        if first_index > self.last_index + 1 {
            return Err(invalid(
                "would leave a gap after the last index".to_string(),
            ));
        }
        if payloads.is_empty() {
            if first_index <= self.last_index {
                return Err(invalid(
                    "replacing entries requires at least one new entry".to_string(),
                ));
            }
            return Ok(());
        }
        let max = u64::from(self.opts.max_record_bytes);
        if let Some((i, p)) = payloads
            .iter()
            .enumerate()
            .find(|(_, p)| record::payload_len(p.len()) > max)
        {
            return Err(invalid(format!(
                "entry {} has {} bytes, above max_record_bytes ({max}) minus the 8-byte index",
                first_index + i as u64,
                p.len()
            )));
        }
        let result = self.append_records(first_index, payloads);
        self.poison_on_err(result)
    }

    /// fsyncs everything appended so far (and the directory when a new segment was created).
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_usable()?;
        let result = self.sync_inner();
        self.poison_on_err(result)
    }

    /// Index of the last entry, 0 when the log is empty (the index before the first one after
    /// [`Wal::restart_at`]).
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// Deletes, oldest first, every segment but the current one all of whose records have
    /// indices at or below `through_index` (entries a durable snapshot covers), then fsyncs
    /// the directory. Only a prefix of the segments is ever deleted, so a crash half-way
    /// leaves a log that opens.
    pub fn compact(&mut self, through_index: u64) -> Result<(), WalError> {
        self.check_usable()?;
        let result = self.compact_inner(through_index);
        self.poison_on_err(result)
    }

    fn compact_inner(&mut self, through_index: u64) -> Result<(), WalError> {
        let covered = |&(_, max_index): &(u64, u64)| max_index <= through_index;
        if self.segments.len() < 2 || !self.segments.front().is_some_and(covered) {
            return Ok(());
        }
        // What is buffered reaches the disk first, so that a crash never leaves fewer durable
        // records than before the compaction.
        self.sync_inner()?;
        while self.segments.len() > 1 && self.segments.front().is_some_and(covered) {
            let (seq, _) = self.segments.pop_front().expect("a segment");
            let path = self.dir.join(segment::file_name(seq));
            std::fs::remove_file(&path).map_err(io_err("remove segment", &path))?;
            // One directory fsync per deletion: file systems need not persist removals in
            // order, and a later one surviving an earlier one would leave a gap that open
            // refuses as a missing segment.
            fsutil::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Starts the log afresh after `index`, which must be at or beyond its end: the next
    /// append starts at `index + 1`. For a snapshot received from a leader that covers all the
    /// log holds. Durably starts a new segment, then deletes every older one.
    pub fn restart_at(&mut self, index: u64) -> Result<(), WalError> {
        self.check_usable()?;
        if index < self.last_index {
            return Err(WalError::InvalidAppend {
                first_index: index + 1,
                last_index: self.last_index,
                reason: "restarting the log inside it would drop entries".to_string(),
            });
        }
        let result = self.restart_inner(index);
        self.poison_on_err(result)
    }

    fn restart_inner(&mut self, index: u64) -> Result<(), WalError> {
        if index == self.last_index && self.last_index > 0 {
            // The next append continues the log as it is.
            return self.compact_inner(index);
        }
        self.roll()?;
        fsutil::sync_dir(&self.dir)?;
        self.dir_dirty = false;
        self.compact_inner(u64::MAX)?;
        self.last_index = index;
        Ok(())
    }

    fn append_records(&mut self, first_index: u64, payloads: &[&[u8]]) -> Result<(), WalError> {
        for (index, data) in (first_index..).zip(payloads) {
            // A segment holding only its header is never rolled, so each gets at least one
            // record even when segment_bytes is tiny.
            if self.seg_len >= self.opts.segment_bytes && self.seg_len > segment::HEADER_LEN {
                self.roll()?;
            }
            let before = self.buf.len();
            record::encode(index, data, &mut self.buf);
            self.seg_len += (self.buf.len() - before) as u64;
            self.dirty = true;
            self.last_index = index;
            if let Some(current) = self.segments.back_mut() {
                current.1 = current.1.max(index);
            }
            if self.buf.len() >= WRITE_BUFFER_BYTES {
                self.write_buf()?;
            }
        }
        Ok(())
    }

    /// Finishes the current segment durably, cut to its records, and starts the next one.
    fn roll(&mut self) -> Result<(), WalError> {
        self.write_buf()?;
        // Cut before the next segment exists, so that only the last one has free space.
        self.file
            .set_len(self.seg_len)
            .map_err(io_err("cut segment to its records", &self.path))?;
        self.file
            .sync_all()
            .map_err(io_err("fsync segment", &self.path))?;
        self.dirty = false;
        let seq = self.seq + 1;
        let (file, path) = segment::create(&self.dir, seq, self.opts.segment_bytes)?;
        self.seq = seq;
        self.file = file;
        self.path = path;
        self.seg_len = segment::HEADER_LEN;
        self.dir_dirty = true;
        self.segments.push_back((seq, 0));
        Ok(())
    }

    /// Writes out the buffer and fsyncs the current segment if anything reached it.
    fn sync_segment(&mut self) -> Result<(), WalError> {
        self.write_buf()?;
        if self.dirty {
            self.file
                .sync_data()
                .map_err(io_err("fsync segment", &self.path))?;
            self.dirty = false;
        }
        Ok(())
    }

    fn sync_inner(&mut self) -> Result<(), WalError> {
        self.sync_segment()?;
        if self.dir_dirty {
            fsutil::sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    fn write_buf(&mut self) -> Result<(), WalError> {
        if !self.buf.is_empty() {
            self.file
                .write_all(&self.buf)
                .map_err(io_err("write segment", &self.path))?;
            self.buf.clear();
        }
        Ok(())
    }

    fn check_usable(&self) -> Result<(), WalError> {
        if self.poisoned {
            Err(WalError::Poisoned)
        } else {
            Ok(())
        }
    }

    fn poison_on_err(&mut self, result: Result<(), WalError>) -> Result<(), WalError> {
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }
}

impl std::fmt::Debug for Wal {
    // Hand-written so that buffered record bytes are not dumped.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("segment", &self.path)
            .field("last_index", &self.last_index)
            .field("buffered_bytes", &self.buf.len())
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl Drop for Wal {
    /// Hands buffered records to the OS (no fsync) so that dropping a `Wal` behaves like the
    /// process continuing to run; durability still requires `sync`. The preallocated space is
    /// given back, so a closed log's last segment ends at its last record.
    fn drop(&mut self) {
        if !self.poisoned && self.write_buf().is_ok() {
            let _ = self.file.set_len(self.seg_len);
        }
    }
}

/// The log as replayed so far.
#[derive(Default)]
struct Replay {
    /// The index of `entries[0]` (or of the next entry, when empty); 0 before any record.
    first: u64,
    entries: Vec<(u64, Vec<u8>)>,
}

impl Replay {
    fn last_index(&self) -> u64 {
        if self.first == 0 {
            0
        } else {
            self.first + self.entries.len() as u64 - 1
        }
    }

    /// Applies one record. The later record wins: it replaces entry `index` and everything
    /// after it; below the first entry held, or past the end at the start of a segment (a
    /// restart), the log starts afresh at `index`.
    fn replay(
        &mut self,
        path: &Path,
        offset: u64,
        index: u64,
        data: &[u8],
        segment_start: bool,
    ) -> Result<(), WalError> {
        let last = self.last_index();
        if index == 0 || (index > last + 1 && !segment_start && self.first != 0) {
            return Err(WalError::Corrupt {
                file: path.to_path_buf(),
                offset,
                reason: format!(
                    "record has index {index} but the log so far ends at {last}; indices must \
                     be consecutive within a segment"
                ),
            });
        }
        if self.first == 0 || index < self.first || index > last + 1 {
            self.first = index;
            self.entries.clear();
        } else {
            self.entries.truncate((index - self.first) as usize);
        }
        self.entries.push((index, data.to_vec()));
        Ok(())
    }
}
