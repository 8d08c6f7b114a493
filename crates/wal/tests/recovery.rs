//! Crash and damage scenarios: what `Wal::open` must accept as a torn write and what it must
//! refuse.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use common::*;
use wal::{Wal, WalError, WalOptions};

fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

fn encode_record(index: u64, data: &[u8]) -> Vec<u8> {
    let mut payload = index.to_le_bytes().to_vec();
    payload.extend_from_slice(data);
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

fn expect_corrupt(dir: &Path, opts: WalOptions, file: &Path, offset: u64) -> String {
    match Wal::open(dir, opts) {
        Err(
            ref e @ WalError::Corrupt {
                file: ref f,
                offset: o,
                ..
            },
        ) => {
            assert_eq!(f, file);
            assert_eq!(o, offset);
            let msg = e.to_string();
            assert!(msg.contains(&file.display().to_string()), "{msg}");
            assert!(msg.contains(&format!("offset {offset}")), "{msg}");
            msg
        }
        other => panic!(
            "expected Corrupt at {} offset {offset}, got {other:?}",
            file.display()
        ),
    }
}

fn torn_tail_at_every_offset(opts: WalOptions, n: u64, expect_multi_segment: bool) {
    let pristine = tempfile::tempdir().unwrap();
    let entries = write_entries(pristine.path(), opts.clone(), n);
    let last_seq = segment_count(pristine.path());
    assert_eq!(last_seq > 1, expect_multi_segment);
    let pristine_last = seg_path(pristine.path(), last_seq);
    let (start, end) = *record_spans(&pristine_last).last().unwrap();
    let bytes = fs::read(&pristine_last).unwrap();

    for cut in start..end {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), dir.path());
        let last = seg_path(dir.path(), last_seq);
        set_len(&last, cut);

        let (mut wal, rec) = open(dir.path(), opts.clone());
        assert_eq!(rec.entries, entries[..n as usize - 1], "cut at {cut}");
        assert_eq!(wal.last_index(), n - 1);
        if cut == start {
            assert_eq!(rec.truncated, None, "nothing to cut at a record boundary");
        } else {
            let saved = rec.truncated.expect("torn bytes saved");
            assert_eq!(saved.parent().unwrap(), dir.path());
            assert_eq!(
                fs::read(&saved).unwrap(),
                &bytes[start as usize..cut as usize]
            );
        }
        // The cut bytes are gone; the space after the records is free (zeros) while it is open.
        let now = fs::read(&last).unwrap();
        assert_eq!(now[..start as usize], bytes[..start as usize]);
        assert!(
            now[start as usize..].iter().all(|&b| b == 0),
            "cut at {cut}"
        );

        wal.append(n, &[b"after recovery"]).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (wal, rec) = open(dir.path(), opts.clone());
        let mut want = entries[..n as usize - 1].to_vec();
        want.push((n, b"after recovery".to_vec()));
        assert_eq!(rec.entries, want);
        assert_eq!(rec.truncated, None);
        assert_eq!(wal.last_index(), n);
    }
}

#[test]
fn torn_tail_every_offset_single_segment() {
    torn_tail_at_every_offset(WalOptions::default(), 8, false);
}

#[test]
fn torn_tail_every_offset_in_a_later_segment() {
    torn_tail_at_every_offset(small_segments(), 12, true);
}

#[test]
fn repeated_tear_at_same_offset_keeps_both_copies() {
    let dir = tempfile::tempdir().unwrap();
    write_entries(dir.path(), WalOptions::default(), 3);
    let seg = seg_path(dir.path(), 1);
    let (start, end) = *record_spans(&seg).last().unwrap();
    set_len(&seg, end - 1);
    let first = open(dir.path(), WalOptions::default()).1.truncated.unwrap();
    append_bytes(&seg, b"junk");
    let (_, rec) = open(dir.path(), WalOptions::default());
    let second = rec.truncated.unwrap();
    assert_ne!(first, second);
    assert_eq!(rec.entries.len(), 2);
    assert_eq!(fs::read(&second).unwrap(), b"junk");
    assert!(first
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .contains(&format!("-{start}")));
}

/// Zeros after the last record are free space (a preallocated segment, or an append none of
/// whose bytes reached the disk): nothing is saved, and appends continue right after the
/// records.
#[test]
fn zero_filled_tail_is_free_space_and_all_records_kept() {
    for zeros in [1usize, 3, 8, 9, 4096] {
        let dir = tempfile::tempdir().unwrap();
        let entries = write_entries(dir.path(), small_segments(), 10);
        let last = seg_path(dir.path(), segment_count(dir.path()));
        let len = fs::metadata(&last).unwrap().len();
        append_bytes(&last, &vec![0u8; zeros]);

        let (mut wal, rec) = open(dir.path(), small_segments());
        assert_eq!(rec.entries, entries, "{zeros} zero bytes");
        assert_eq!(rec.truncated, None, "{zeros} zero bytes: nothing to save");
        wal.append(11, &[b"next"]).unwrap();
        wal.sync().unwrap();
        drop(wal);
        // The next record follows the last one (in this segment, or it was cut there).
        let (_, end) = *record_spans(&last).last().unwrap();
        assert!(end == len + 8 + 8 + 4 || end == len, "{zeros} zero bytes");
        assert_eq!(fs::metadata(&last).unwrap().len(), end);

        let (_, rec) = open(dir.path(), small_segments());
        let mut want = entries.clone();
        want.push((11, b"next".to_vec()));
        assert_eq!(rec.entries, want);
        assert_eq!(rec.truncated, None);
    }
}

/// A process that stops without closing its log leaves the last segment preallocated; it
/// recovers through the free space without calling it torn.
#[test]
fn a_log_left_open_recovers_through_its_free_space() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_bytes: 1 << 20,
        ..WalOptions::default()
    };
    let (mut wal, _) = open(dir.path(), opts.clone());
    let payloads: Vec<Vec<u8>> = (1..=5).map(payload).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    wal.append(1, &refs).unwrap();
    wal.sync().unwrap();
    let seg = seg_path(dir.path(), 1);
    #[cfg(target_os = "linux")]
    assert_eq!(
        fs::metadata(&seg).unwrap().len(),
        1 << 20,
        "the open segment is preallocated"
    );
    // As if the process were killed: no drop, so the preallocated space stays.
    std::mem::forget(wal);

    let (mut wal, rec) = open(dir.path(), opts.clone());
    assert_eq!(rec.entries.len(), 5);
    assert_eq!(rec.truncated, None);
    wal.append(6, &[b"six"]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, rec) = open(dir.path(), opts);
    assert_eq!(rec.entries.len(), 6);
    assert_eq!(rec.entries[5], (6, b"six".to_vec()));
    assert_eq!(rec.truncated, None);
    // Closed, the segment ends at its last record.
    assert_eq!(
        record_spans(&seg).last().unwrap().1,
        fs::metadata(&seg).unwrap().len()
    );
}

/// A finished segment is cut to its records before the next is created, so free space is only
/// ever in the last one (and zeros in any other are damage).
#[test]
fn finished_segments_end_at_their_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), small_segments());
    for i in 1..=12 {
        wal.append(i, &[&payload(i)]).unwrap();
        wal.sync().unwrap();
    }
    let count = segment_count(dir.path());
    assert!(count > 2);
    for seq in 1..count {
        let seg = seg_path(dir.path(), seq);
        assert_eq!(
            record_spans(&seg).last().unwrap().1,
            fs::metadata(&seg).unwrap().len(),
            "segment {seq}"
        );
    }
}

#[test]
fn zeroed_final_record_is_free_space() {
    let dir = tempfile::tempdir().unwrap();
    let entries = write_entries(dir.path(), WalOptions::default(), 5);
    let seg = seg_path(dir.path(), 1);
    let (start, end) = *record_spans(&seg).last().unwrap();
    let mut buf = fs::read(&seg).unwrap();
    buf[start as usize..end as usize].fill(0);
    fs::write(&seg, &buf).unwrap();

    let (_, rec) = open(dir.path(), WalOptions::default());
    assert_eq!(rec.entries, entries[..4]);
    assert_eq!(rec.truncated, None, "zeros hold nothing to save");
}

/// Writes entries 1..=5 where entry `big` carries 3000 bytes, then zeroes one aligned 512-byte
/// sector inside that entry's data.
fn zero_sector_in_entry(dir: &Path, big: u64) -> (Vec<(u64, Vec<u8>)>, u64) {
    let (mut wal, _) = open(dir, WalOptions::default());
    let entries: Vec<(u64, Vec<u8>)> = (1..=5)
        .map(|i| {
            (
                i,
                if i == big {
                    vec![0xAB; 3000]
                } else {
                    payload(i)
                },
            )
        })
        .collect();
    let refs: Vec<&[u8]> = entries.iter().map(|(_, p)| p.as_slice()).collect();
    wal.append(1, &refs).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let seg = seg_path(dir, 1);
    let (start, _) = record_spans(&seg)[big as usize - 1];
    let sector = (start + 16).div_ceil(512) * 512;
    let mut buf = fs::read(&seg).unwrap();
    buf[sector as usize..sector as usize + 512].fill(0);
    fs::write(&seg, &buf).unwrap();
    (entries, start)
}

#[test]
fn final_record_with_unwritten_sector_is_torn() {
    let dir = tempfile::tempdir().unwrap();
    let (entries, _) = zero_sector_in_entry(dir.path(), 5);
    let (_, rec) = open(dir.path(), WalOptions::default());
    assert_eq!(rec.entries, entries[..4]);
    assert!(rec.truncated.is_some());
}

/// Writes entry 1 (`b"zero"`) and an entry 2 of 0xCD bytes whose record ends at byte `end` of
/// the segment, closes the log, and returns the segment and where entry 2's record starts.
fn second_record_ending_at(dir: &Path, end: u64) -> (std::path::PathBuf, u64) {
    let (mut wal, _) = open(dir, WalOptions::default());
    // The segment header is 20 bytes and entry 1's record 20 more; entry 2's record has an
    // 8-byte header and an 8-byte index before its data.
    let second = vec![0xCDu8; end as usize - 40 - 16];
    wal.append(1, &[b"zero", &second]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let seg = seg_path(dir, 1);
    assert_eq!(*record_spans(&seg).last().unwrap(), (40, end));
    (seg, 40)
}

/// A crash while writing into preallocated space leaves the unfinished blocks reading as
/// zeros: here the final record runs 100 bytes into a 4 KiB block that never got written (the
/// record's second block, then its fourth). Less than a sector, but from the record's last
/// block boundary to its end: torn, not decay.
#[test]
fn final_record_with_its_last_block_unwritten_is_torn() {
    for blocks in [1, 3] {
        let dir = tempfile::tempdir().unwrap();
        let boundary = blocks * 4096;
        let (seg, _) = second_record_ending_at(dir.path(), boundary + 100);
        let mut buf = fs::read(&seg).unwrap();
        buf[boundary as usize..].fill(0);
        fs::write(&seg, &buf).unwrap();

        let (_, rec) = open(dir.path(), WalOptions::default());
        assert_eq!(rec.entries, vec![(1, b"zero".to_vec())], "{blocks} blocks");
        assert!(rec.truncated.is_some(), "{blocks} blocks");
    }
}

/// The same zeros in the middle of the record, not running to its end, are damage.
#[test]
fn zeros_from_a_block_boundary_short_of_the_record_end_are_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (seg, start) = second_record_ending_at(dir.path(), 4096 + 100);
    let mut buf = fs::read(&seg).unwrap();
    let last = buf.len() - 1;
    buf[4096..last].fill(0);
    fs::write(&seg, &buf).unwrap();
    expect_corrupt(dir.path(), WalOptions::default(), &seg, start);
}

#[test]
fn unwritten_sector_before_the_final_record_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (_, start) = zero_sector_in_entry(dir.path(), 4);
    expect_corrupt(
        dir.path(),
        WalOptions::default(),
        &seg_path(dir.path(), 1),
        start,
    );
}

#[test]
fn bit_flip_in_final_record_is_corrupt_not_torn() {
    let dir = tempfile::tempdir().unwrap();
    write_entries(dir.path(), WalOptions::default(), 5);
    let seg = seg_path(dir.path(), 1);
    let (start, end) = *record_spans(&seg).last().unwrap();
    flip_bit(&seg, end - 1, 0);
    let msg = expect_corrupt(dir.path(), WalOptions::default(), &seg, start);
    assert!(msg.contains("checksum"), "{msg}");
}

#[test]
fn bit_flip_in_earlier_record_is_corrupt() {
    // Flip a bit in the crc field, the index and the data of record 2 of 5.
    for delta in [5u64, 9, 17] {
        let dir = tempfile::tempdir().unwrap();
        write_entries(dir.path(), WalOptions::default(), 5);
        let seg = seg_path(dir.path(), 1);
        let (start, _) = record_spans(&seg)[1];
        flip_bit(&seg, start + delta, 3);
        let msg = expect_corrupt(dir.path(), WalOptions::default(), &seg, start);
        assert!(msg.contains("checksum mismatch"), "{msg}");
    }
}

#[test]
fn length_above_maximum_is_corrupt_even_in_final_record() {
    let dir = tempfile::tempdir().unwrap();
    write_entries(dir.path(), WalOptions::default(), 5);
    let seg = seg_path(dir.path(), 1);
    for (i, (start, _)) in record_spans(&seg).into_iter().enumerate().skip(3) {
        let dir2 = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), dir2.path());
        let seg2 = seg_path(dir2.path(), 1);
        flip_bit(&seg2, start + 3, 7); // top bit of the length: 2 GiB
        let msg = expect_corrupt(dir2.path(), WalOptions::default(), &seg2, start);
        assert!(msg.contains("max_record_bytes"), "record {i}: {msg}");
    }

    // A record longer than a configured maximum is also refused rather than read.
    let (mut wal, _) = open(dir.path(), WalOptions::default());
    wal.append(6, &[&[7u8; 100]]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (start, _) = *record_spans(&seg).last().unwrap();
    let opts = WalOptions {
        max_record_bytes: 64,
        ..WalOptions::default()
    };
    expect_corrupt(dir.path(), opts, &seg, start);
}

#[test]
fn zeroed_header_followed_by_data_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    write_entries(dir.path(), WalOptions::default(), 3);
    let seg = seg_path(dir.path(), 1);
    let (start, _) = *record_spans(&seg).last().unwrap();
    let mut buf = fs::read(&seg).unwrap();
    buf[start as usize..start as usize + 8].fill(0);
    fs::write(&seg, &buf).unwrap();
    expect_corrupt(dir.path(), WalOptions::default(), &seg, start);
}

fn multi_segment_log(dir: &Path) -> u64 {
    write_entries(dir, small_segments(), 20);
    let n = segment_count(dir);
    assert!(n >= 3, "need at least 3 segments, got {n}");
    n
}

#[test]
fn damage_in_a_non_last_segment_is_corrupt() {
    // Bit flip in the first record, then in the final record of segment 1.
    for which in [0usize, usize::MAX] {
        let dir = tempfile::tempdir().unwrap();
        multi_segment_log(dir.path());
        let seg = seg_path(dir.path(), 1);
        let spans = record_spans(&seg);
        let (start, end) = spans[which.min(spans.len() - 1)];
        flip_bit(&seg, end - 1, 6);
        let msg = expect_corrupt(dir.path(), small_segments(), &seg, start);
        assert!(msg.contains("not the last segment"), "{msg}");
    }

    // A torn-looking tail (cut short, or zero-filled) in a non-last segment.
    let dir = tempfile::tempdir().unwrap();
    multi_segment_log(dir.path());
    let seg = seg_path(dir.path(), 2);
    let (start, end) = *record_spans(&seg).last().unwrap();
    set_len(&seg, end - 3);
    expect_corrupt(dir.path(), small_segments(), &seg, start);

    let dir = tempfile::tempdir().unwrap();
    multi_segment_log(dir.path());
    let seg = seg_path(dir.path(), 1);
    let len = fs::metadata(&seg).unwrap().len();
    append_bytes(&seg, &[0; 64]);
    expect_corrupt(dir.path(), small_segments(), &seg, len);
}

#[test]
fn bad_segment_headers_are_corrupt() {
    // Damaged magic, damaged sequence number, and a header cut short, in a middle segment.
    for (at, cut) in [(0u64, None), (9, None), (0, Some(10u64))] {
        let dir = tempfile::tempdir().unwrap();
        multi_segment_log(dir.path());
        let seg = seg_path(dir.path(), 2);
        match cut {
            Some(len) => set_len(&seg, len),
            None => flip_bit(&seg, at, 1),
        }
        expect_corrupt(dir.path(), small_segments(), &seg, 0);
    }

    // A segment copied under another name (even as the last segment) is detected.
    let dir = tempfile::tempdir().unwrap();
    let n = multi_segment_log(dir.path());
    let last = seg_path(dir.path(), n);
    fs::copy(seg_path(dir.path(), n - 1), &last).unwrap();
    let msg = expect_corrupt(dir.path(), small_segments(), &last, 0);
    assert!(msg.contains("sequence number"), "{msg}");
}

#[test]
fn missing_segments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    multi_segment_log(dir.path());
    fs::remove_file(seg_path(dir.path(), 2)).unwrap();
    match Wal::open(dir.path(), small_segments()) {
        Err(e @ WalError::MissingSegment { seq: 2, .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&seg_path(dir.path(), 2).display().to_string()),
                "{msg}"
            );
        }
        other => panic!("expected MissingSegment 2, got {other:?}"),
    }

    // Without its first segment the log opens, starting later (as after compaction): only
    // the caller, holding the snapshot, can tell whether that start is early enough.
    let dir = tempfile::tempdir().unwrap();
    multi_segment_log(dir.path());
    let (_, full) = open(dir.path(), small_segments());
    fs::remove_file(seg_path(dir.path(), 1)).unwrap();
    let (_, rec) = open(dir.path(), small_segments());
    assert!(rec.first_index > 1);
    assert_eq!(rec.entries[0].0, rec.first_index);
    let tail: Vec<_> = full
        .entries
        .into_iter()
        .filter(|(i, _)| *i >= rec.first_index)
        .collect();
    assert_eq!(rec.entries, tail);

    // Every segment gone but the hard state is still there.
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), WalOptions::default());
    wal.save_hard_state(b"term 4").unwrap();
    drop(wal);
    fs::remove_file(seg_path(dir.path(), 1)).unwrap();
    assert!(matches!(
        Wal::open(dir.path(), WalOptions::default()),
        Err(WalError::MissingSegment { seq: 1, .. })
    ));
}

#[test]
fn index_gap_on_disk_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    write_entries(dir.path(), WalOptions::default(), 5);
    let seg = seg_path(dir.path(), 1);
    let len = fs::metadata(&seg).unwrap().len();
    append_bytes(&seg, &encode_record(7, b"skips 6"));
    let msg = expect_corrupt(dir.path(), WalOptions::default(), &seg, len);
    assert!(msg.contains("index 7"), "{msg}");

    let dir = tempfile::tempdir().unwrap();
    write_entries(dir.path(), WalOptions::default(), 2);
    let seg = seg_path(dir.path(), 1);
    let len = fs::metadata(&seg).unwrap().len();
    append_bytes(&seg, &encode_record(0, b"index zero"));
    expect_corrupt(dir.path(), WalOptions::default(), &seg, len);
}

#[test]
fn later_record_replaces_suffix_on_replay() {
    let dir = tempfile::tempdir().unwrap();
    let entries = write_entries(dir.path(), WalOptions::default(), 5);
    append_bytes(&seg_path(dir.path(), 1), &encode_record(3, b"new three"));
    let (wal, rec) = open(dir.path(), WalOptions::default());
    let mut want = entries[..2].to_vec();
    want.push((3, b"new three".to_vec()));
    assert_eq!(rec.entries, want);
    assert_eq!(wal.last_index(), 3);
}

#[test]
fn suffix_overwrite_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let entries = write_entries(dir.path(), small_segments(), 20);
    let (mut wal, rec) = open(dir.path(), small_segments());
    assert_eq!(rec.entries, entries);
    wal.append(2, &[b"two'", b"three'"]).unwrap();
    assert_eq!(wal.last_index(), 3);
    wal.sync().unwrap();
    drop(wal);
    let (wal, rec) = open(dir.path(), small_segments());
    assert_eq!(
        rec.entries,
        vec![
            entries[0].clone(),
            (2, b"two'".to_vec()),
            (3, b"three'".to_vec())
        ]
    );
    assert_eq!(wal.last_index(), 3);
}

#[test]
fn hard_state_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, rec) = open(dir.path(), WalOptions::default());
    assert_eq!(rec.hard_state, None);
    wal.save_hard_state(b"term=1 vote=none").unwrap();
    wal.save_hard_state(b"term=2 vote=3").unwrap();
    drop(wal);
    let (mut wal, rec) = open(dir.path(), WalOptions::default());
    assert_eq!(rec.hard_state.as_deref(), Some(&b"term=2 vote=3"[..]));
    wal.save_hard_state(b"").unwrap();
    drop(wal);
    let (_, rec) = open(dir.path(), WalOptions::default());
    assert_eq!(rec.hard_state, Some(Vec::new()));
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn leftover_hard_state_temp_file_is_ignored_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), WalOptions::default());
    wal.save_hard_state(b"committed").unwrap();
    drop(wal);
    let tmp = dir.path().join("hard_state.tmp");
    fs::write(&tmp, b"half-written gar").unwrap();
    let (mut wal, rec) = open(dir.path(), WalOptions::default());
    assert_eq!(rec.hard_state.as_deref(), Some(&b"committed"[..]));
    assert!(!tmp.exists());
    fs::write(&tmp, b"again").unwrap();
    wal.save_hard_state(b"next").unwrap();
    drop(wal);
    assert_eq!(
        open(dir.path(), WalOptions::default())
            .1
            .hard_state
            .as_deref(),
        Some(&b"next"[..])
    );
}

#[test]
fn corrupt_hard_state_is_refused() {
    let setup = || {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = open(dir.path(), WalOptions::default());
        wal.save_hard_state(b"term=9 vote=1").unwrap();
        dir
    };
    let check = |dir: &Path| match Wal::open(dir, WalOptions::default()) {
        Err(e @ WalError::CorruptHardState { .. }) => {
            let path = dir.join("hard_state");
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        }
        other => panic!("expected CorruptHardState, got {other:?}"),
    };

    let dir = setup();
    flip_bit(&dir.path().join("hard_state"), 20, 0);
    check(dir.path());

    let dir = setup();
    set_len(&dir.path().join("hard_state"), 18);
    check(dir.path());

    let dir = setup();
    set_len(&dir.path().join("hard_state"), 5);
    check(dir.path());
}

#[test]
fn append_contract_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        max_record_bytes: 40,
        ..WalOptions::default()
    };
    let (mut wal, _) = open(dir.path(), opts.clone());
    let invalid = |r: Result<(), WalError>| matches!(r, Err(WalError::InvalidAppend { .. }));
    assert!(invalid(wal.append(0, &[b"a"])));
    assert!(invalid(wal.append(2, &[b"a"])));
    wal.append(1, &[b"a", b"b"]).unwrap();
    assert!(invalid(wal.append(4, &[b"d"])));
    assert!(invalid(wal.append(2, &[])));
    wal.append(3, &[]).unwrap();
    // 8-byte index + 32 bytes is exactly the maximum; one more byte is not.
    wal.append(3, &[&[1u8; 32]]).unwrap();
    let err = wal.append(4, &[b"ok", &[1u8; 33]]).unwrap_err();
    assert!(err.to_string().contains("max_record_bytes"), "{err}");
    // A rejected append writes nothing and does not poison the log.
    assert_eq!(wal.last_index(), 3);
    wal.append(4, &[b"d"]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, rec) = open(dir.path(), opts);
    let want: Vec<(u64, Vec<u8>)> = vec![
        (1, b"a".to_vec()),
        (2, b"b".to_vec()),
        (3, vec![1u8; 32]),
        (4, b"d".to_vec()),
    ];
    assert_eq!(rec.entries, want);
}

#[test]
fn appends_are_buffered_until_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), WalOptions::default());
    let seg = seg_path(dir.path(), 1);
    let payloads: Vec<Vec<u8>> = (1..=1000).map(payload).collect();
    for (i, p) in payloads.iter().enumerate() {
        wal.append(i as u64 + 1, &[p]).unwrap();
    }
    // No write (let alone fsync) per append: the records are still in memory, and the
    // (preallocated) file holds zeros after its header.
    let written = |seg: &Path| {
        let bytes = fs::read(seg).unwrap();
        bytes[SEGMENT_HEADER_LEN as usize..]
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |at| at + 1)
    };
    assert_eq!(written(&seg), 0);
    wal.sync().unwrap();
    assert!(written(&seg) > 1000 * 16);
    drop(wal);
    let (_, rec) = open(dir.path(), WalOptions::default());
    assert_eq!(rec.entries.len(), 1000);
    assert_eq!(segment_count(dir.path()), 1);
}

#[test]
fn open_creates_missing_directories_and_ignores_foreign_files() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a/b/wal");
    let (mut wal, rec) = open(&dir, WalOptions::default());
    assert_eq!(rec, wal::Recovered::default());
    wal.append(1, &[b"x"]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    fs::write(dir.join("README"), b"not a segment").unwrap();
    fs::write(dir.join("7.wal"), b"not a segment name either").unwrap();
    let (_, rec) = open(&dir, WalOptions::default());
    assert_eq!(rec.entries, vec![(1, b"x".to_vec())]);
}
