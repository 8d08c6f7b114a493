//! Segment files: naming, header, creation, scanning and torn-tail removal.
//!
//! A segment is named `<seq:020>.wal` and starts with a 20-byte header
//! `[magic "RKVW"][version: u32 LE][seq: u64 LE][crc32c of the previous 16 bytes: u32 LE]`,
//! followed by records (see `record`). The sequence number in the header must match the name,
//! so a renamed or foreign file is refused rather than replayed in the wrong place.
//!
//! The segment being appended to is preallocated to the segment size, so that an fsync after
//! an append need not also record a longer file (on ext4 that makes a small write's fdatasync
//! about a third cheaper). Its records are followed by zeros up to the preallocated end; a
//! finished segment is cut to its records before the next one is created, so only the last
//! segment ever has such free space.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{io_err, WalError};
use crate::fsutil;
use crate::record::{self, DecodeError};

/// Length of the segment header in bytes.
pub(crate) const HEADER_LEN: u64 = 20;

const MAGIC: [u8; 4] = *b"RKVW";
const VERSION: u32 = 1;
const SUFFIX: &str = ".wal";
const TMP_SUFFIX: &str = ".wal.tmp";
const SEQ_DIGITS: usize = 20;
/// Granularity at which a crashed write may leave never-written (zero) data behind.
const SECTOR: usize = 512;
/// A file-system block: a crash before a write into preallocated space completes leaves the
/// whole block reading as zeros (the space is still marked unwritten).
const BLOCK: usize = 4096;

pub(crate) fn file_name(seq: u64) -> String {
    format!("{seq:020}{SUFFIX}")
}

fn parse_seq(stem: &str) -> Option<u64> {
    if stem.len() == SEQ_DIGITS && stem.bytes().all(|b| b.is_ascii_digit()) {
        stem.parse().ok()
    } else {
        None
    }
}

/// The sequence number of a segment file name, `None` for any other name.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    parse_seq(name.strip_suffix(SUFFIX)?)
}

fn encode_header(seq: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..4].copy_from_slice(&MAGIC);
    h[4..8].copy_from_slice(&VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

fn check_header(buf: &[u8], seq: u64) -> Result<(), String> {
    let n = HEADER_LEN as usize;
    if buf.len() < n {
        return Err(format!(
            "segment header cut short: {} of {n} bytes present",
            buf.len()
        ));
    }
    if buf[0..4] != MAGIC {
        return Err("bad magic; not a WAL segment".to_string());
    }
    let stored = u32::from_le_bytes(buf[16..20].try_into().expect("4 bytes"));
    if crc32c::crc32c(&buf[0..16]) != stored {
        return Err("segment header checksum mismatch".to_string());
    }
    let version = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(format!("unsupported segment format version {version}"));
    }
    let found = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
    if found != seq {
        return Err(format!(
            "header carries sequence number {found} but the file name says {seq}"
        ));
    }
    Ok(())
}

/// Lists segment sequence numbers in ascending order, removing leftover temp segments.
pub(crate) fn list(dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut seqs = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list directory", dir))? {
        let entry = entry.map_err(io_err("list directory", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = parse_file_name(name) {
            seqs.push(seq);
        } else if name.strip_suffix(TMP_SUFFIX).and_then(parse_seq).is_some() {
            // A segment whose creation crashed before the rename: it holds only a header.
            let path = entry.path();
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Creates segment `seq` with a durable header, preallocated to `prealloc` bytes, and returns
/// it opened for appending after the header.
///
/// The header is written and fsynced under a temporary name before the rename, so a file with
/// a segment name always has a complete header. The caller must fsync the directory before
/// relying on the new name.
pub(crate) fn create(dir: &Path, seq: u64, prealloc: u64) -> Result<(File, PathBuf), WalError> {
    let path = dir.join(file_name(seq));
    let tmp = dir.join(format!("{seq:020}{TMP_SUFFIX}"));
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(io_err("remove", &tmp)(e)),
        _ => {}
    }
    let file = fsutil::write_new_synced(&tmp, &encode_header(seq))?;
    if preallocate(&file, prealloc) {
        file.sync_all().map_err(io_err("fsync segment", &tmp))?;
    }
    fs::rename(&tmp, &path).map_err(io_err("rename segment into place", &path))?;
    Ok((file, path))
}

/// Opens the last segment for appending after its records, which end at `end`, preallocated
/// to `prealloc` bytes.
pub(crate) fn open_for_append(path: &Path, end: u64, prealloc: u64) -> Result<File, WalError> {
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("open segment", path))?;
    if preallocate(&file, prealloc) {
        file.sync_all().map_err(io_err("fsync segment", path))?;
    }
    file.seek(SeekFrom::Start(end))
        .map_err(io_err("seek segment", path))?;
    Ok(file)
}

/// Makes `file` at least `len` bytes long with space allocated (reading as zeros), where the
/// file system supports it; returns whether it grew. Preallocation only saves time, so a file
/// system without it, or one too full for it, just goes on without.
fn preallocate(file: &File, len: u64) -> bool {
    let Ok(current) = file.metadata().map(|m| m.len()) else {
        return false;
    };
    if current >= len {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let Ok(len) = libc::off_t::try_from(len) else {
            return false;
        };
        // SAFETY: a plain system call on a descriptor `file` owns for the whole call.
        unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Where a segment's records end.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Tail {
    /// The records fill the file.
    None,
    /// Only zeros follow from this offset: space preallocated for appends (or an append none
    /// of whose bytes reached the disk). Nothing there to keep; appends continue here.
    Free(u64),
    /// A torn write starts at this offset: its bytes must be saved before it is cut off.
    Torn(u64),
}

/// Walks the records of one segment, calling `visit(offset, index, data)` for each valid one.
///
/// Returns where the records end. Free space and a torn tail are only ever allowed when
/// `is_last`; everything else that is not a valid record is `WalError::Corrupt`.
pub(crate) fn scan(
    path: &Path,
    seq: u64,
    buf: &[u8],
    is_last: bool,
    max_record_bytes: u32,
    mut visit: impl FnMut(u64, u64, &[u8]) -> Result<(), WalError>,
) -> Result<Tail, WalError> {
    let corrupt = |offset: usize, reason: String| WalError::Corrupt {
        file: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    check_header(buf, seq).map_err(|reason| corrupt(0, reason))?;
    let mut off = HEADER_LEN as usize;
    while off < buf.len() {
        match record::decode(&buf[off..], max_record_bytes) {
            Ok(rec) => {
                visit(off as u64, rec.index, rec.data)?;
                off += rec.encoded_len;
            }
            Err(_) if is_last && buf[off..].iter().all(|&b| b == 0) => {
                return Ok(Tail::Free(off as u64))
            }
            Err(err) if is_last && is_torn(buf, off, &err) => return Ok(Tail::Torn(off as u64)),
            Err(err) => {
                let mut reason = err.to_string();
                if !is_last {
                    reason.push_str(" (not the last segment, so this cannot be a torn write)");
                }
                return Err(corrupt(off, reason));
            }
        }
    }
    Ok(Tail::None)
}

/// Whether the bad record at `off` is what an interrupted append leaves behind.
///
/// Accepted as torn (a tail that is entirely zero is free space, not a torn write): a record
/// cut short by EOF, and a checksum mismatch in a record, with nothing but zeros after it, that
/// contains a whole sector-aligned run of zeros or is zero from its last block boundary to its
/// end (its last block, in preallocated space, never written). A bit flip cannot zero a
/// whole sector or block, so those are unwritten space rather than decay. Anything else,
/// notably a plain checksum mismatch or an impossible length, is corruption.
fn is_torn(buf: &[u8], off: usize, err: &DecodeError) -> bool {
    match *err {
        DecodeError::Incomplete { .. } => true,
        DecodeError::Checksum { len, .. } => {
            let end = off + record::HEADER_LEN + len as usize;
            // The record's last block boundary: zeros from an earlier one also cover this.
            let last_block = (end - 1) / BLOCK * BLOCK;
            buf[end..].iter().all(|&b| b == 0)
                && (has_zero_sector(buf, off, end)
                    || (last_block > off && buf[last_block..end].iter().all(|&b| b == 0)))
        }
        DecodeError::TooLong { .. } | DecodeError::TooShort { .. } => false,
    }
}

/// Whether `buf[start..end]` contains a whole `SECTOR`-aligned sector of zeros.
fn has_zero_sector(buf: &[u8], start: usize, end: usize) -> bool {
    let mut at = start.div_ceil(SECTOR) * SECTOR;
    while at + SECTOR <= end {
        if buf[at..at + SECTOR].iter().all(|&b| b == 0) {
            return true;
        }
        at += SECTOR;
    }
    false
}

/// Saves `buf[offset..]` of a torn segment to a new `torn-<seq>-<offset>[-n].bin` file in `dir`,
/// then truncates the segment at `offset`. The copy is durable before the cut, so a crash in
/// between at worst repeats the recovery.
pub(crate) fn cut_torn_tail(
    dir: &Path,
    path: &Path,
    seq: u64,
    offset: u64,
    tail: &[u8],
) -> Result<PathBuf, WalError> {
    let base = format!("torn-{seq:020}-{offset}");
    let mut attempt = 0u32;
    let saved = loop {
        let name = if attempt == 0 {
            format!("{base}.bin")
        } else {
            format!("{base}-{attempt}.bin")
        };
        let candidate = dir.join(name);
        match fsutil::write_new_synced(&candidate, tail) {
            Ok(_) => break candidate,
            // An earlier recovery may have saved a different tail at the same spot; keep it.
            Err(WalError::Io { source, .. }) if source.kind() == ErrorKind::AlreadyExists => {
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    };
    fsutil::sync_dir(dir)?;
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("open segment", path))?;
    file.set_len(offset)
        .map_err(io_err("truncate torn segment", path))?;
    file.sync_all().map_err(io_err("fsync segment", path))?;
    Ok(saved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(file_name(1), "00000000000000000001.wal");
        assert_eq!(parse_file_name("00000000000000000042.wal"), Some(42));
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("42.wal"), None);
        assert_eq!(parse_file_name("0000000000000000004x.wal"), None);
        assert_eq!(parse_file_name("00000000000000000042.wal.tmp"), None);
        assert_eq!(parse_file_name("hard_state"), None);
    }

    #[test]
    fn header_checks() {
        let h = encode_header(5);
        assert_eq!(check_header(&h, 5), Ok(()));
        assert!(check_header(&h, 6)
            .unwrap_err()
            .contains("sequence number 5"));
        assert!(check_header(&h[..19], 5).is_err());
        for at in 0..h.len() {
            let mut bad = h;
            bad[at] ^= 1;
            assert!(check_header(&bad, 5).is_err(), "flip at {at}");
        }
    }

    #[test]
    fn zero_sector_detection_is_aligned() {
        let mut buf = vec![1u8; 2048];
        // 512 zeros that straddle a sector boundary do not count.
        buf[700..1212].fill(0);
        assert!(!has_zero_sector(&buf, 100, 2048));
        buf[1024..1536].fill(0);
        assert!(has_zero_sector(&buf, 100, 2048));
        // The sector must lie inside the range.
        assert!(!has_zero_sector(&buf, 100, 1500));
        assert!(!has_zero_sector(&buf, 1025, 2048));
    }
}
