//! Snapshot files: atomic replacement, every kind of damage detected, chunk reads, and a
//! snapshot assembled from chunks received in order.

use proptest::prelude::*;
use std::fs;
use wal::snapshot::{
    load_snapshot, read_snapshot_chunk, read_snapshot_meta, save_snapshot, write_snapshot_tmp,
    write_snapshot_tmp_with, IncomingSnapshot, HEADER_LEN,
};
use wal::{SnapshotMeta, WalError};

const MAX: u64 = 1 << 20;

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

#[test]
fn round_trip_and_replacement() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(load_snapshot(dir.path(), MAX).unwrap(), None);
    let meta = save_snapshot(dir.path(), 10, 2, &data(100)).unwrap();
    assert_eq!(
        meta,
        SnapshotMeta {
            index: 10,
            term: 2,
            len: 100
        }
    );
    assert_eq!(
        load_snapshot(dir.path(), MAX).unwrap(),
        Some((meta, data(100)))
    );
    assert_eq!(read_snapshot_meta(dir.path(), MAX).unwrap(), Some(meta));
    // Header, data, and the data's checksum: nothing else.
    let size = fs::metadata(dir.path().join("snapshot")).unwrap().len();
    assert_eq!(size, HEADER_LEN + 100 + 4);
    let newer = save_snapshot(dir.path(), 20, 3, &data(7)).unwrap();
    assert_eq!(
        load_snapshot(dir.path(), MAX).unwrap(),
        Some((newer, data(7)))
    );
}

#[test]
fn every_bit_flip_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    save_snapshot(dir.path(), 5, 1, &data(40)).unwrap();
    let path = dir.path().join("snapshot");
    let good = fs::read(&path).unwrap();
    for byte in 0..good.len() {
        for bit in 0..8 {
            let mut bad = good.clone();
            bad[byte] ^= 1 << bit;
            fs::write(&path, &bad).unwrap();
            match load_snapshot(dir.path(), MAX) {
                Err(WalError::CorruptSnapshot { file, .. }) => assert_eq!(file, path),
                other => panic!("flip at byte {byte} bit {bit} gave {other:?}"),
            }
        }
    }
}

#[test]
fn every_truncation_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    save_snapshot(dir.path(), 5, 1, &data(40)).unwrap();
    let path = dir.path().join("snapshot");
    let good = fs::read(&path).unwrap();
    for len in 0..good.len() {
        fs::write(&path, &good[..len]).unwrap();
        assert!(
            matches!(
                load_snapshot(dir.path(), MAX),
                Err(WalError::CorruptSnapshot { .. })
            ),
            "truncated to {len} bytes"
        );
    }
    let mut longer = good.clone();
    longer.push(0);
    fs::write(&path, &longer).unwrap();
    assert!(load_snapshot(dir.path(), MAX).is_err());
}

#[test]
fn a_length_over_the_limit_is_corruption_not_an_allocation() {
    let dir = tempfile::tempdir().unwrap();
    save_snapshot(dir.path(), 5, 1, &data(400)).unwrap();
    assert!(matches!(
        load_snapshot(dir.path(), 100),
        Err(WalError::CorruptSnapshot { reason, .. }) if reason.contains("exceeds")
    ));
}

#[test]
fn leftover_temporary_and_incoming_files_never_become_current() {
    let dir = tempfile::tempdir().unwrap();
    let meta = save_snapshot(dir.path(), 5, 1, &data(10)).unwrap();
    // A save interrupted before its rename, and a half-received snapshot.
    write_snapshot_tmp(dir.path(), 9, 2, &data(30)).unwrap();
    let mut incoming = IncomingSnapshot::begin(dir.path(), 12, 3, 50, MAX).unwrap();
    assert!(incoming.write_chunk(0, &data(20)).unwrap());
    drop(incoming);
    assert_eq!(
        load_snapshot(dir.path(), MAX).unwrap(),
        Some((meta, data(10)))
    );
    assert!(!dir.path().join("snapshot.tmp").exists());
    assert!(!dir.path().join("snapshot.incoming").exists());
}

#[test]
fn chunk_reads_follow_the_current_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let meta = save_snapshot(dir.path(), 5, 1, &data(100)).unwrap();
    let chunk = read_snapshot_chunk(dir.path(), &meta, 90, 64).unwrap();
    assert_eq!(chunk, Some(data(100)[90..].to_vec()));
    assert_eq!(
        read_snapshot_chunk(dir.path(), &meta, 0, 10).unwrap(),
        Some(data(100)[..10].to_vec())
    );
    save_snapshot(dir.path(), 6, 1, &data(100)).unwrap();
    assert_eq!(read_snapshot_chunk(dir.path(), &meta, 0, 10).unwrap(), None);
}

#[test]
fn an_incoming_snapshot_takes_chunks_only_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let all = data(100);
    let mut incoming = IncomingSnapshot::begin(dir.path(), 7, 2, 100, MAX).unwrap();
    assert!(incoming.write_chunk(0, &all[..30]).unwrap());
    // Duplicate, stale, past a gap, past the end: refused, nothing changes.
    assert!(!incoming.write_chunk(0, &all[..30]).unwrap());
    assert!(!incoming.write_chunk(10, &all[10..40]).unwrap());
    assert!(!incoming.write_chunk(50, &all[50..60]).unwrap());
    assert!(!incoming.write_chunk(30, &data(80)).unwrap());
    assert_eq!(incoming.received(), 30);
    assert!(incoming.write_chunk(30, &all[30..]).unwrap());
    let meta = incoming.finish().unwrap();
    assert_eq!(load_snapshot(dir.path(), MAX).unwrap(), Some((meta, all)));
}

#[test]
fn an_incomplete_incoming_snapshot_cannot_finish() {
    let dir = tempfile::tempdir().unwrap();
    let old = save_snapshot(dir.path(), 1, 1, &data(5)).unwrap();
    let mut incoming = IncomingSnapshot::begin(dir.path(), 7, 2, 100, MAX).unwrap();
    assert!(incoming.write_chunk(0, &data(99)).unwrap());
    assert!(matches!(
        incoming.finish(),
        Err(WalError::InvalidSnapshot(_))
    ));
    assert_eq!(
        load_snapshot(dir.path(), MAX).unwrap(),
        Some((old, data(5)))
    );
    assert!(IncomingSnapshot::begin(dir.path(), 7, 2, MAX + 1, MAX).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// However the data is cut into chunks, the assembled snapshot is the saved one.
    #[test]
    fn chunked_assembly_equals_a_direct_save(
        bytes in prop::collection::vec(any::<u8>(), 1..2000),
        cuts in prop::collection::vec(1usize..300, 1..20),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut incoming =
            IncomingSnapshot::begin(dir.path(), 3, 4, bytes.len() as u64, MAX).unwrap();
        let mut at = 0;
        let mut cut = cuts.iter().cycle();
        while at < bytes.len() {
            let end = (at + cut.next().unwrap()).min(bytes.len());
            prop_assert!(incoming.write_chunk(at as u64, &bytes[at..end]).unwrap());
            at = end;
        }
        let meta = incoming.finish().unwrap();
        let assembled = fs::read(dir.path().join("snapshot")).unwrap();
        let other = tempfile::tempdir().unwrap();
        save_snapshot(other.path(), 3, 4, &bytes).unwrap();
        prop_assert_eq!(assembled, fs::read(other.path().join("snapshot")).unwrap());
        prop_assert_eq!(load_snapshot(dir.path(), MAX).unwrap(), Some((meta, bytes)));
    }
}

/// Data written as it is produced, in pieces of any size, makes the same file as the same
/// bytes written at once; past the limit the write fails and nothing becomes current.
#[test]
fn streamed_data_makes_the_same_snapshot_and_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(5000);
    let prepared = write_snapshot_tmp_with(dir.path(), 9, 2, MAX, |out| {
        for piece in bytes.chunks(333) {
            out.write_all(piece)?;
        }
        Ok(())
    })
    .unwrap();
    let meta = prepared.commit().unwrap();
    assert_eq!(meta.len, 5000);
    let streamed = fs::read(dir.path().join("snapshot")).unwrap();
    let other = tempfile::tempdir().unwrap();
    save_snapshot(other.path(), 9, 2, &bytes).unwrap();
    assert_eq!(streamed, fs::read(other.path().join("snapshot")).unwrap());

    let result = write_snapshot_tmp_with(dir.path(), 10, 2, 4096, |out| out.write_all(&bytes));
    assert!(matches!(result, Err(WalError::Io { .. })), "{result:?}");
    assert_eq!(load_snapshot(dir.path(), MAX).unwrap(), Some((meta, bytes)));
}
