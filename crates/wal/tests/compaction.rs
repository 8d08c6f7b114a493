//! Log compaction: deleting segments a snapshot covers, restarting the log after a received
//! snapshot, and opening what that leaves on disk.

mod common;

use common::{open, seg_path, segment_count, small_segments};
use std::fs;
use wal::{Wal, WalError};

fn payload(i: u64) -> Vec<u8> {
    format!("entry {i} with some padding").into_bytes()
}

fn append(wal: &mut Wal, from: u64, to: u64) {
    let entries: Vec<Vec<u8>> = (from..=to).map(payload).collect();
    let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
    wal.append(from, &refs).unwrap();
    wal.sync().unwrap();
}

fn expected(from: u64, to: u64) -> Vec<(u64, Vec<u8>)> {
    (from..=to).map(|i| (i, payload(i))).collect()
}

#[test]
fn compaction_deletes_exactly_the_covered_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), small_segments());
    append(&mut wal, 1, 40);
    let segments = segment_count(dir.path());
    assert!(segments > 5, "{segments} segments");
    // Nothing is covered yet.
    wal.compact(0).unwrap();
    assert_eq!(segment_count(dir.path()), segments);
    wal.compact(20).unwrap();
    let left = segment_count(dir.path());
    assert!(left < segments && left > 1);
    drop(wal);
    let (_, rec) = open(dir.path(), small_segments());
    // The log still holds everything after 20, and starts at or before 21.
    assert!(rec.first_index <= 21, "first index {}", rec.first_index);
    assert!(rec.first_index > 1);
    assert_eq!(rec.entries, expected(rec.first_index, 40));
    // Segment 1 is gone; the first left starts where the log now starts.
    assert!(!seg_path(dir.path(), 1).exists());
}

#[test]
fn the_current_segment_is_never_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), small_segments());
    append(&mut wal, 1, 30);
    wal.compact(u64::MAX).unwrap();
    assert_eq!(segment_count(dir.path()), 1);
    append(&mut wal, 31, 35);
    drop(wal);
    let (_, rec) = open(dir.path(), small_segments());
    assert_eq!(rec.entries.last().map(|e| e.0), Some(35));
    assert_eq!(rec.entries[0].0, rec.first_index);
}

#[test]
fn appends_and_truncations_work_after_compaction_and_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), small_segments());
    append(&mut wal, 1, 30);
    wal.compact(25).unwrap();
    drop(wal);
    let (mut wal, rec) = open(dir.path(), small_segments());
    assert_eq!(wal.last_index(), 30);
    // A follower truncating a conflicting suffix after the compaction point.
    wal.append(28, &[b"replaced 28"]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, after) = open(dir.path(), small_segments());
    let mut want: Vec<_> = rec.entries.into_iter().filter(|(i, _)| *i < 28).collect();
    want.push((28, b"replaced 28".to_vec()));
    assert_eq!(after.entries, want);
}

#[test]
fn a_crash_half_way_through_compaction_leaves_a_log_that_opens() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), small_segments());
    append(&mut wal, 1, 40);
    drop(wal);
    // Only the first two segments made it out before the crash.
    fs::remove_file(seg_path(dir.path(), 1)).unwrap();
    fs::remove_file(seg_path(dir.path(), 2)).unwrap();
    let (_, rec) = open(dir.path(), small_segments());
    assert_eq!(rec.entries, expected(rec.first_index, 40));
}

#[test]
fn a_gap_between_retained_segments_is_still_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), small_segments());
    append(&mut wal, 1, 40);
    wal.compact(10).unwrap();
    drop(wal);
    let first = (1..100)
        .find(|&s| seg_path(dir.path(), s).exists())
        .unwrap();
    fs::remove_file(seg_path(dir.path(), first + 1)).unwrap();
    assert!(matches!(
        Wal::open(dir.path(), small_segments()),
        Err(WalError::MissingSegment { seq, .. }) if seq == first + 1
    ));
}

/// A follower far behind installs a snapshot at 100: its log restarts after it.
#[test]
fn restart_jumps_past_the_end_and_drops_older_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), small_segments());
    append(&mut wal, 1, 12);
    wal.restart_at(100).unwrap();
    assert_eq!(wal.last_index(), 100);
    assert_eq!(segment_count(dir.path()), 1);
    // Nothing appended yet: the log reopens empty.
    drop(wal);
    let (mut wal, rec) = open(dir.path(), small_segments());
    assert!(rec.entries.is_empty());
    wal.restart_at(100).unwrap();
    append(&mut wal, 101, 120);
    drop(wal);
    let (_, rec) = open(dir.path(), small_segments());
    assert_eq!(rec.first_index, 101);
    assert_eq!(rec.entries, expected(101, 120));
}

/// A crash after the new segment was created but before the old ones were deleted: the old
/// entries replay, then the jump restarts the log.
#[test]
fn a_restart_survives_a_crash_before_old_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), small_segments());
    append(&mut wal, 1, 12);
    drop(wal);
    let saved: Vec<(u64, Vec<u8>)> = (1..100)
        .filter(|&s| seg_path(dir.path(), s).exists())
        .map(|s| (s, fs::read(seg_path(dir.path(), s)).unwrap()))
        .collect();
    let (mut wal, _) = open(dir.path(), small_segments());
    wal.restart_at(50).unwrap();
    append(&mut wal, 51, 55);
    drop(wal);
    for (s, bytes) in saved {
        fs::write(seg_path(dir.path(), s), bytes).unwrap();
    }
    let (_, rec) = open(dir.path(), small_segments());
    assert_eq!(rec.first_index, 51);
    assert_eq!(rec.entries, expected(51, 55));
}

#[test]
fn restarting_inside_the_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), small_segments());
    append(&mut wal, 1, 12);
    assert!(matches!(
        wal.restart_at(5),
        Err(WalError::InvalidAppend { .. })
    ));
    // Nothing changed: the log goes on.
    append(&mut wal, 13, 14);
    drop(wal);
    let (_, rec) = open(dir.path(), small_segments());
    assert_eq!(rec.entries, expected(1, 14));
}

#[test]
fn an_index_jump_inside_a_segment_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), wal::WalOptions::default());
    append(&mut wal, 1, 3);
    drop(wal);
    // Forge a record with index 9 right after 3 in the same segment.
    let seg = seg_path(dir.path(), 1);
    let mut bytes = fs::read(&seg).unwrap();
    let mut payload = 9u64.to_le_bytes().to_vec();
    payload.extend_from_slice(b"forged");
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    fs::write(&seg, bytes).unwrap();
    assert!(matches!(
        Wal::open(dir.path(), wal::WalOptions::default()),
        Err(WalError::Corrupt { .. })
    ));
}

/// Recovery can leave out the payloads a snapshot covers: they come back empty, while the
/// log keeps its shape (positions, and a later record still replacing earlier ones).
#[test]
fn recovery_leaves_out_payloads_below_keep_payloads_from() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), small_segments());
    append(&mut wal, 1, 20);
    // A follower's truncation: 15.. replaced.
    append(&mut wal, 15, 18);
    drop(wal);
    let options = wal::WalOptions {
        keep_payloads_from: 10,
        ..small_segments()
    };
    let (_, rec) = open(dir.path(), options);
    assert_eq!(rec.first_index, 1);
    let indices: Vec<u64> = rec.entries.iter().map(|e| e.0).collect();
    assert_eq!(indices, (1..=18).collect::<Vec<_>>());
    assert!(rec.entries[..9].iter().all(|(_, p)| p.is_empty()));
    assert_eq!(rec.entries[9..].to_vec(), expected(10, 18));
}
