//! Segment files: naming, header, creation, scanning and torn-tail removal.
//!
//! A segment is named `<seq:020>.wal` and starts with a 20-byte header
//! `[magic "RKVW"][version: u32 LE][seq: u64 LE][crc32c of the previous 16 bytes: u32 LE]`,
//! followed by records (see `record`). The sequence number in the header must match the name,
//! so a renamed or foreign file is refused rather than replayed in the wrong place.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
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

/// Creates segment `seq` with a durable header and returns it opened for appending.
///
/// The header is written and fsynced under a temporary name before the rename, so a file with
/// a segment name always has a complete header. The caller must fsync the directory before
/// relying on the new name.
pub(crate) fn create(dir: &Path, seq: u64) -> Result<(File, PathBuf), WalError> {
    let path = dir.join(file_name(seq));
    let tmp = dir.join(format!("{seq:020}{TMP_SUFFIX}"));
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(io_err("remove", &tmp)(e)),
        _ => {}
    }
    let file = fsutil::write_new_synced(&tmp, &encode_header(seq))?;
    fs::rename(&tmp, &path).map_err(io_err("rename segment into place", &path))?;
    Ok((file, path))
}

/// Opens an existing segment for appending at its end.
pub(crate) fn open_for_append(path: &Path) -> Result<(File, u64), WalError> {
    let file = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io_err("open segment", path))?;
    let len = file.metadata().map_err(io_err("stat segment", path))?.len();
    Ok((file, len))
}

/// Walks the records of one segment, calling `visit(offset, index, data)` for each valid one.
///
/// Returns the offset of a torn tail to cut off, which is only ever allowed when `is_last`.
/// Everything else that is not a valid record is `WalError::Corrupt`.
pub(crate) fn scan(
    path: &Path,
    seq: u64,
    buf: &[u8],
    is_last: bool,
    max_record_bytes: u32,
    mut visit: impl FnMut(u64, u64, &[u8]) -> Result<(), WalError>,
) -> Result<Option<u64>, WalError> {
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
            Err(err) if is_last && is_torn(buf, off, &err) => return Ok(Some(off as u64)),
            Err(err) => {
                let mut reason = err.to_string();
                if !is_last {
                    reason.push_str(" (not the last segment, so this cannot be a torn write)");
                }
                return Err(corrupt(off, reason));
            }
        }
    }
    Ok(None)
}

/// Whether the bad record at `off` is what an interrupted append leaves behind.
///
/// Accepted as torn: a record cut short by EOF, a tail that is entirely zero (space the file
/// system allocated but never wrote), and a checksum mismatch in a record that contains a whole
/// sector-aligned run of zeros with nothing but zeros after it. A bit flip cannot zero a whole
/// sector, so that last case is an unwritten sector rather than decay. Anything else, notably a
/// plain checksum mismatch or an impossible length, is corruption.
fn is_torn(buf: &[u8], off: usize, err: &DecodeError) -> bool {
    let rest = &buf[off..];
    if rest.iter().all(|&b| b == 0) {
        return true;
    }
    match *err {
        DecodeError::Incomplete { .. } => true,
        DecodeError::Checksum { len, .. } => {
            let end = off + record::HEADER_LEN + len as usize;
            buf[end..].iter().all(|&b| b == 0) && has_zero_sector(buf, off, end)
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
