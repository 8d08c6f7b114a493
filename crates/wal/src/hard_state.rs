//! The hard-state file: an opaque blob replaced atomically.
//!
//! Layout of `hard_state`: `[magic "RKVH"][version: u32 LE][len: u32 LE][crc32c(bytes): u32 LE]
//! [bytes]`, and the file must be exactly that long. A save writes `hard_state.tmp`, fsyncs it,
//! renames it over `hard_state` and fsyncs the directory, so a crash leaves either the old or the
//! new file intact. A leftover `hard_state.tmp` is an unfinished save that was never
//! acknowledged; open removes it.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use crate::error::{io_err, WalError};
use crate::fsutil;

pub(crate) const FILE_NAME: &str = "hard_state";
pub(crate) const TMP_NAME: &str = "hard_state.tmp";

const MAGIC: [u8; 4] = *b"RKVH";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 16;

fn encode(bytes: &[u8]) -> Vec<u8> {
    let len = u32::try_from(bytes.len()).expect("hard state larger than 4 GiB");
    let mut out = Vec::with_capacity(HEADER_LEN + bytes.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(bytes).to_le_bytes());
    out.extend_from_slice(bytes);
    out
}

fn decode(buf: &[u8]) -> Result<Vec<u8>, String> {
    if buf.len() < HEADER_LEN {
        return Err(format!(
            "file is {} bytes, shorter than its {HEADER_LEN}-byte header",
            buf.len()
        ));
    }
    let word = |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
    if buf[0..4] != MAGIC {
        return Err("bad magic; not a hard state file".to_string());
    }
    if word(4) != VERSION {
        return Err(format!("unsupported format version {}", word(4)));
    }
    let len = word(8) as usize;
    let body = &buf[HEADER_LEN..];
    if body.len() != len {
        return Err(format!(
            "length field says {len} bytes but the file holds {}",
            body.len()
        ));
    }
    let computed = crc32c::crc32c(body);
    if computed != word(12) {
        return Err(format!(
            "checksum mismatch: stored {:#010x}, computed {computed:#010x}",
            word(12)
        ));
    }
    Ok(body.to_vec())
}

/// Reads the hard state, `None` if it was never saved.
pub(crate) fn load(dir: &Path) -> Result<Option<Vec<u8>>, WalError> {
    let path = dir.join(FILE_NAME);
    let buf = match fs::read(&path) {
        Ok(buf) => buf,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read hard state", &path)(e)),
    };
    decode(&buf)
        .map(Some)
        .map_err(|reason| WalError::CorruptHardState { file: path, reason })
}

/// Removes the temp file of a save that crashed before its rename.
pub(crate) fn remove_leftover(dir: &Path) -> Result<(), WalError> {
    let tmp = dir.join(TMP_NAME);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(io_err("remove", &tmp)(e)),
        _ => Ok(()),
    }
}

/// Atomically replaces the hard state and makes the replacement durable.
pub(crate) fn save(dir: &Path, bytes: &[u8]) -> Result<(), WalError> {
    remove_leftover(dir)?;
    let tmp = dir.join(TMP_NAME);
    let path = dir.join(FILE_NAME);
    fsutil::write_new_synced(&tmp, &encode(bytes))?;
    fs::rename(&tmp, &path).map_err(io_err("rename hard state into place", &path))?;
    fsutil::sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let blob = b"term=3 vote=2".to_vec();
        let enc = encode(&blob);
        assert_eq!(decode(&enc).unwrap(), blob);
        assert_eq!(decode(&encode(&[])).unwrap(), Vec::<u8>::new());
        for cut in 0..enc.len() {
            assert!(decode(&enc[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..enc.len() {
            let mut bad = enc.clone();
            bad[at] ^= 0x10;
            assert!(decode(&bad).is_err(), "flip at {at}");
        }
    }
}
