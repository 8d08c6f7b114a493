//! Helpers shared by the integration tests. They read segments using the documented on-disk
//! format, independently of the crate's own codec.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use wal::{Recovered, Wal, WalOptions};

pub const SEGMENT_HEADER_LEN: u64 = 20;

pub fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

/// `(start, end)` byte ranges of the records in a segment, found by following length fields.
pub fn record_spans(path: &Path) -> Vec<(u64, u64)> {
    let buf = std::fs::read(path).unwrap();
    let mut spans = Vec::new();
    let mut off = SEGMENT_HEADER_LEN as usize;
    while off + 8 <= buf.len() {
        let len = u32::from_le_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
        let end = off + 8 + len;
        assert!(end <= buf.len(), "helper expects a well-formed segment");
        spans.push((off as u64, end as u64));
        off = end;
    }
    spans
}

/// Number of segment files in `dir`.
pub fn segment_count(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_str().unwrap().to_string();
            name.ends_with(".wal") && name.len() == 24
        })
        .count() as u64
}

pub fn payload(i: u64) -> Vec<u8> {
    format!("entry-{i}-{}", "x".repeat((i % 7) as usize)).into_bytes()
}

/// Writes entries 1..=n in one batch, syncs, and closes the log.
pub fn write_entries(dir: &Path, opts: WalOptions, n: u64) -> Vec<(u64, Vec<u8>)> {
    let (mut wal, rec) = Wal::open(dir, opts).unwrap();
    assert!(rec.entries.is_empty());
    let entries: Vec<(u64, Vec<u8>)> = (1..=n).map(|i| (i, payload(i))).collect();
    let refs: Vec<&[u8]> = entries.iter().map(|(_, p)| p.as_slice()).collect();
    wal.append(1, &refs).unwrap();
    wal.sync().unwrap();
    entries
}

pub fn open(dir: &Path, opts: WalOptions) -> (Wal, Recovered) {
    Wal::open(dir, opts).unwrap()
}

pub fn flip_bit(path: &Path, offset: u64, bit: u8) {
    let mut buf = std::fs::read(path).unwrap();
    buf[offset as usize] ^= 1 << bit;
    std::fs::write(path, buf).unwrap();
}

pub fn small_segments() -> WalOptions {
    WalOptions {
        segment_bytes: 128,
        ..WalOptions::default()
    }
}
