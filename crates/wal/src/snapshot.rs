//! Snapshot files: one current snapshot per directory, written atomically, and a snapshot being
//! received from a leader in chunks.
//!
//! Format of `snapshot` (and of the temporary files that become it):
//!
//! ```text
//! [magic "RKVS"][version: u32 LE = 1][index: u64 LE][term: u64 LE][len: u64 LE]
//! [crc32c of the previous 32 bytes: u32 LE][data: len bytes][crc32c(data): u32 LE]
//! ```
//!
//! `index` and `term` are opaque here (the Raft index and term of the last entry the snapshot
//! covers). A snapshot becomes current only by a rename over `snapshot` after its file is
//! complete and fsynced, followed by an fsync of the directory, so a crash at any moment leaves
//! either the old or the new snapshot current. `snapshot.tmp` (a local snapshot being written)
//! and `snapshot.incoming` (one being received) never become current by themselves; they are
//! removed when the directory is loaded.
//!
//! Memory: [`write_snapshot_tmp_with`] streams the data to the file through a 1 MiB buffer,
//! so a snapshot being written is never held whole by this module; [`load_snapshot`] returns
//! it whole; chunk reads and writes hold one chunk.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{io_err, WalError};
use crate::fsutil;

const MAGIC: [u8; 4] = *b"RKVS";
const VERSION: u32 = 1;
/// Bytes of the header's fields, before their checksum.
const FIELDS_LEN: usize = 32;
/// Bytes of the header as written: the fields, then their checksum.
pub const HEADER_LEN: u64 = FIELDS_LEN as u64 + 4;
const TRAILER_LEN: u64 = 4;
const CURRENT: &str = "snapshot";
const TMP: &str = "snapshot.tmp";
const INCOMING: &str = "snapshot.incoming";

/// What a snapshot file says of itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    pub index: u64,
    pub term: u64,
    /// Bytes of data.
    pub len: u64,
}

fn header_with_crc(meta: &SnapshotMeta) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..4].copy_from_slice(&MAGIC);
    h[4..8].copy_from_slice(&VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&meta.index.to_le_bytes());
    h[16..24].copy_from_slice(&meta.term.to_le_bytes());
    h[24..32].copy_from_slice(&meta.len.to_le_bytes());
    let crc = crc32c::crc32c(&h[..FIELDS_LEN]);
    h[32..36].copy_from_slice(&crc.to_le_bytes());
    h
}

fn corrupt(file: &Path, reason: impl Into<String>) -> WalError {
    WalError::CorruptSnapshot {
        file: file.to_path_buf(),
        reason: reason.into(),
    }
}

fn decode_header(path: &Path, buf: &[u8], max_len: u64) -> Result<SnapshotMeta, WalError> {
    let n = HEADER_LEN as usize;
    if buf.len() < n {
        return Err(corrupt(
            path,
            format!("header cut short: {} of {n} bytes", buf.len()),
        ));
    }
    if buf[0..4] != MAGIC {
        return Err(corrupt(path, "bad magic; not a snapshot file"));
    }
    let u32_at = |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
    if crc32c::crc32c(&buf[..FIELDS_LEN]) != u32_at(FIELDS_LEN) {
        return Err(corrupt(path, "header checksum mismatch"));
    }
    let version = u32_at(4);
    if version != VERSION {
        return Err(corrupt(
            path,
            format!("unsupported format version {version}"),
        ));
    }
    let len = u64_at(24);
    if len > max_len {
        return Err(corrupt(
            path,
            format!("length {len} exceeds the maximum of {max_len} bytes"),
        ));
    }
    Ok(SnapshotMeta {
        index: u64_at(8),
        term: u64_at(16),
        len,
    })
}

fn remove_if_present(path: &Path) -> Result<bool, WalError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

/// A snapshot written and fsynced under a temporary name, not yet current.
#[derive(Debug)]
pub struct PreparedSnapshot {
    dir: PathBuf,
    meta: SnapshotMeta,
}

impl PreparedSnapshot {
    pub fn meta(&self) -> SnapshotMeta {
        self.meta
    }

    /// Makes it the current snapshot: rename over `snapshot`, fsync the directory.
    pub fn commit(self) -> Result<SnapshotMeta, WalError> {
        let current = self.dir.join(CURRENT);
        fs::rename(self.dir.join(TMP), &current).map_err(io_err("rename snapshot", &current))?;
        fsutil::sync_dir(&self.dir)?;
        Ok(self.meta)
    }
}

/// Writes a snapshot to `snapshot.tmp` and fsyncs it (the slow part, which a caller may do on
/// another thread); [`PreparedSnapshot::commit`] then makes it current.
pub fn write_snapshot_tmp(
    dir: &Path,
    index: u64,
    term: u64,
    data: &[u8],
) -> Result<PreparedSnapshot, WalError> {
    write_snapshot_tmp_with(dir, index, term, u64::MAX, |out| out.write_all(data))
}

/// Like [`write_snapshot_tmp`], with data that `write` produces as it goes (a state being
/// encoded, say), so that it is never held whole in memory. More than `max_len` bytes of it
/// fail the write.
pub fn write_snapshot_tmp_with(
    dir: &Path,
    index: u64,
    term: u64,
    max_len: u64,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<PreparedSnapshot, WalError> {
    let path = dir.join(TMP);
    remove_if_present(&path)?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io_err("create", &path))?;
    // The header holds the length, known only at the end: it is written last, over a
    // placeholder. Until the rename the file is not current, so it need not be valid meanwhile.
    let mut out = DataWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        len: 0,
        crc: 0,
        max_len,
    };
    out.inner
        .write_all(&[0; HEADER_LEN as usize])
        .and_then(|()| write(&mut out))
        .map_err(io_err("write", &path))?;
    let DataWriter {
        inner, len, crc, ..
    } = out;
    let mut file = inner
        .into_inner()
        .map_err(|e| io_err("write", &path)(e.into_error()))?;
    let meta = SnapshotMeta { index, term, len };
    file.write_all(&crc.to_le_bytes())
        .and_then(|()| file.seek(SeekFrom::Start(0)).map(drop))
        .and_then(|()| file.write_all(&header_with_crc(&meta)))
        .map_err(io_err("write", &path))?;
    file.sync_all().map_err(io_err("fsync", &path))?;
    Ok(PreparedSnapshot {
        dir: dir.to_path_buf(),
        meta,
    })
}

/// Counts and checksums the data as it passes to the file.
struct DataWriter {
    inner: BufWriter<File>,
    len: u64,
    crc: u32,
    max_len: u64,
}

impl Write for DataWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.len.saturating_add(buf.len() as u64) > self.max_len {
            return Err(std::io::Error::other(format!(
                "snapshot exceeds the maximum of {} bytes",
                self.max_len
            )));
        }
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a snapshot and makes it current; durable when it returns `Ok`.
pub fn save_snapshot(
    dir: &Path,
    index: u64,
    term: u64,
    data: &[u8],
) -> Result<SnapshotMeta, WalError> {
    write_snapshot_tmp(dir, index, term, data)?.commit()
}

/// Loads the current snapshot, if there is one, checking everything: header checksum, version,
/// a length within `max_len` that matches the file's size, and the data checksum. Leftover
/// temporary and incoming files are removed first: they never became current.
pub fn load_snapshot(
    dir: &Path,
    max_len: u64,
) -> Result<Option<(SnapshotMeta, Vec<u8>)>, WalError> {
    remove_if_present(&dir.join(TMP))?;
    remove_if_present(&dir.join(INCOMING))?;
    let path = dir.join(CURRENT);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open", &path)(e)),
    };
    let size = file.metadata().map_err(io_err("stat", &path))?.len();
    let mut header = vec![0u8; HEADER_LEN.min(size) as usize];
    file.read_exact(&mut header)
        .map_err(io_err("read", &path))?;
    let meta = decode_header(&path, &header, max_len)?;
    let expected = HEADER_LEN + meta.len + TRAILER_LEN;
    if size != expected {
        return Err(corrupt(
            &path,
            format!("file has {size} bytes, its header says {expected}"),
        ));
    }
    let mut data = vec![0u8; meta.len as usize];
    file.read_exact(&mut data).map_err(io_err("read", &path))?;
    let mut trailer = [0u8; 4];
    file.read_exact(&mut trailer)
        .map_err(io_err("read", &path))?;
    if crc32c::crc32c(&data) != u32::from_le_bytes(trailer) {
        return Err(corrupt(&path, "data checksum mismatch"));
    }
    Ok(Some((meta, data)))
}

/// The current snapshot's header (cheap: the data is not read or checked).
pub fn read_snapshot_meta(dir: &Path, max_len: u64) -> Result<Option<SnapshotMeta>, WalError> {
    match open_current(dir, max_len)? {
        Some((_, _, meta)) => meta.map(Some),
        None => Ok(None),
    }
}

/// The current snapshot file, open, with what its header says; `None` if there is none.
type Current = (PathBuf, File, Result<SnapshotMeta, WalError>);

fn open_current(dir: &Path, max_len: u64) -> Result<Option<Current>, WalError> {
    let path = dir.join(CURRENT);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open", &path)(e)),
    };
    let mut header = [0u8; HEADER_LEN as usize];
    let n = read_up_to(&mut file, &mut header).map_err(io_err("read", &path))?;
    let meta = decode_header(&path, &header[..n], max_len);
    Ok(Some((path, file, meta)))
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Bytes `[offset, offset + len)` of the current snapshot's data (fewer at its end), or `None`
/// if the current snapshot is no longer `expected` (it was replaced meanwhile).
pub fn read_snapshot_chunk(
    dir: &Path,
    expected: &SnapshotMeta,
    offset: u64,
    len: u64,
) -> Result<Option<Vec<u8>>, WalError> {
    let Some((path, mut file, Ok(meta))) = open_current(dir, u64::MAX)? else {
        return Ok(None);
    };
    if meta != *expected {
        return Ok(None);
    }
    let start = offset.min(expected.len);
    let len = len.min(expected.len - start);
    file.seek(SeekFrom::Start(HEADER_LEN + start))
        .map_err(io_err("seek", &path))?;
    let mut data = vec![0u8; len as usize];
    file.read_exact(&mut data).map_err(io_err("read", &path))?;
    Ok(Some(data))
}

/// A snapshot being received in chunks, in `snapshot.incoming`. Chunks must come in order;
/// each is durable when [`IncomingSnapshot::write_chunk`] returns, so its receipt may be
/// acknowledged.
#[derive(Debug)]
pub struct IncomingSnapshot {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    meta: SnapshotMeta,
    received: u64,
    /// crc32c of the data so far.
    crc: u32,
}

impl IncomingSnapshot {
    /// Starts receiving snapshot `(index, term, len)`, discarding any other incoming one.
    pub fn begin(
        dir: &Path,
        index: u64,
        term: u64,
        len: u64,
        max_len: u64,
    ) -> Result<IncomingSnapshot, WalError> {
        let path = dir.join(INCOMING);
        if len > max_len {
            return Err(WalError::InvalidSnapshot(format!(
                "incoming snapshot of {len} bytes exceeds the maximum of {max_len}"
            )));
        }
        remove_if_present(&path)?;
        let meta = SnapshotMeta { index, term, len };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        file.write_all(&header_with_crc(&meta))
            .map_err(io_err("write", &path))?;
        Ok(IncomingSnapshot {
            dir: dir.to_path_buf(),
            path,
            file,
            meta,
            received: 0,
            crc: 0,
        })
    }

    pub fn meta(&self) -> SnapshotMeta {
        self.meta
    }

    /// Bytes of data received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Appends `data` at `offset` and fsyncs. Returns false, changing nothing, unless `offset`
    /// is exactly what was received so far and the data fits the snapshot's length.
    pub fn write_chunk(&mut self, offset: u64, data: &[u8]) -> Result<bool, WalError> {
        let fits = self
            .received
            .checked_add(data.len() as u64)
            .is_some_and(|end| end <= self.meta.len);
        if offset != self.received || !fits {
            return Ok(false);
        }
        self.file
            .write_all(data)
            .map_err(io_err("write", &self.path))?;
        self.file.sync_data().map_err(io_err("fsync", &self.path))?;
        self.received += data.len() as u64;
        self.crc = crc32c::crc32c_append(self.crc, data);
        Ok(true)
    }

    /// Completes it (every byte must have arrived) and makes it the current snapshot:
    /// checksum trailer, fsync, rename over `snapshot`, fsync the directory.
    pub fn finish(mut self) -> Result<SnapshotMeta, WalError> {
        if self.received != self.meta.len {
            return Err(WalError::InvalidSnapshot(format!(
                "incoming snapshot has {} of its {} bytes",
                self.received, self.meta.len
            )));
        }
        self.file
            .write_all(&self.crc.to_le_bytes())
            .map_err(io_err("write", &self.path))?;
        self.file.sync_all().map_err(io_err("fsync", &self.path))?;
        let current = self.dir.join(CURRENT);
        fs::rename(&self.path, &current).map_err(io_err("rename snapshot", &current))?;
        fsutil::sync_dir(&self.dir)?;
        Ok(self.meta)
    }
}
