//! Model-based test: random appends (including suffix overwrites), syncs, hard-state saves and
//! reopens, checked against an in-memory `Vec` of entries.

mod common;

use proptest::prelude::*;
use wal::{Wal, WalOptions};

#[derive(Clone, Debug)]
enum Op {
    /// Append at `last_index + 1 - back` (clamped to 1).
    Append {
        back: u64,
        payloads: Vec<Vec<u8>>,
    },
    Sync,
    SaveHardState(Vec<u8>),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let payloads = prop::collection::vec(prop::collection::vec(any::<u8>(), 0..60), 1..6);
    let back = prop_oneof![4 => Just(0u64), 1 => 1u64..8];
    prop_oneof![
        6 => (back, payloads).prop_map(|(back, payloads)| Op::Append { back, payloads }),
        2 => Just(Op::Sync),
        1 => prop::collection::vec(any::<u8>(), 0..24).prop_map(Op::SaveHardState),
        2 => Just(Op::Reopen),
    ]
}

fn opts() -> WalOptions {
    WalOptions {
        segment_bytes: 256,
        ..WalOptions::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn log_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, rec) = Wal::open(dir.path(), opts()).unwrap();
        prop_assert_eq!(&rec, &wal::Recovered::default());
        let mut model: Vec<Vec<u8>> = Vec::new();
        let mut hard_state: Option<Vec<u8>> = None;

        let check = |rec: &wal::Recovered, model: &[Vec<u8>], hs: &Option<Vec<u8>>| {
            let want: Vec<(u64, Vec<u8>)> =
                (1u64..).zip(model.iter().cloned()).collect();
            prop_assert_eq!(&rec.entries, &want);
            prop_assert_eq!(&rec.hard_state, hs);
            prop_assert_eq!(&rec.truncated, &None);
            Ok(())
        };

        for op in ops {
            match op {
                Op::Append { back, payloads } => {
                    let first = (model.len() as u64 + 1).saturating_sub(back).max(1);
                    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
                    wal.append(first, &refs).unwrap();
                    model.truncate(first as usize - 1);
                    model.extend(payloads);
                    prop_assert_eq!(wal.last_index(), model.len() as u64);
                }
                Op::Sync => wal.sync().unwrap(),
                Op::SaveHardState(bytes) => {
                    wal.save_hard_state(&bytes).unwrap();
                    hard_state = Some(bytes);
                }
                Op::Reopen => {
                    drop(wal);
                    let (w, rec) = Wal::open(dir.path(), opts()).unwrap();
                    check(&rec, &model, &hard_state)?;
                    prop_assert_eq!(w.last_index(), model.len() as u64);
                    wal = w;
                }
            }
        }

        // Unsynced appends reach the file when the Wal is dropped (no fsync, but no loss
        // without a crash).
        drop(wal);
        let (_, rec) = Wal::open(dir.path(), opts()).unwrap();
        check(&rec, &model, &hard_state)?;
    }
}

#[test]
fn small_segments_roll() {
    let dir = tempfile::tempdir().unwrap();
    let entries = common::write_entries(dir.path(), opts(), 100);
    assert!(common::segment_count(dir.path()) > 5);
    let (_, rec) = Wal::open(dir.path(), opts()).unwrap();
    assert_eq!(rec.entries, entries);
}
