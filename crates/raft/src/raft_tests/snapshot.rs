//! Log compaction and InstallSnapshot (§7, thesis chapter 5), and the leader's no-op entry
//! (thesis §6.4), tested as the rest of the core is: by stepping messages into cores and
//! asserting on what comes out of `ready()`.

use super::*;
use crate::ready::SnapshotWrite;
use crate::types::SnapshotMeta;

/// Chunks of at most this many bytes in these tests, so that a small snapshot takes several.
const CHUNK: u64 = 10;

fn meta(index: u64, term: u64, len: u64) -> SnapshotMeta {
    SnapshotMeta {
        index: LogIndex(index),
        term: Term(term),
        len,
    }
}

/// An InstallSnapshot as the core sends it: the driver fills in the data.
fn chunk_req(from: NodeId, to: NodeId, term: u64, m: SnapshotMeta, offset: u64) -> Message {
    let len = CHUNK.min(m.len - offset);
    let body = MessageBody::InstallSnapshot {
        meta: m,
        offset,
        len,
        data: Vec::new(),
    };
    msg(from, to, term, body)
}

/// An InstallSnapshot as the follower receives it: with `len` bytes of data.
fn chunk(from: NodeId, to: NodeId, term: u64, m: SnapshotMeta, offset: u64) -> Message {
    let len = CHUNK.min(m.len - offset);
    let body = MessageBody::InstallSnapshot {
        meta: m,
        offset,
        len,
        data: vec![offset as u8; len as usize],
    };
    msg(from, to, term, body)
}

fn chunk_resp(
    from: NodeId,
    to: NodeId,
    term: u64,
    m: SnapshotMeta,
    received: u64,
    accepted: bool,
    done: bool,
) -> Message {
    let body = MessageBody::InstallSnapshotResponse {
        index: m.index,
        received,
        accepted,
        done,
    };
    msg(from, to, term, body)
}

fn is_chunk(m: &Message) -> bool {
    matches!(m.body, MessageBody::InstallSnapshot { .. })
}

/// The entries `r` still holds (after its snapshot).
fn held(r: &Raft) -> Vec<Entry> {
    let log = r.log();
    if log.is_empty() {
        return Vec::new();
    }
    log.slice(log.first_index(), log.last_index(), usize::MAX)
}

/// Node 2 of 1..=3, a follower in term `term` that was sent entries with `terms` by leader 1
/// with commit index `commit`, and applied them.
fn follower_with(term: u64, terms: &[u64], commit: u64) -> Raft {
    let mut r = restore(2, 3, term, &[]);
    step(&mut r, append(1, 2, term, (0, 0), log_of(terms), commit));
    take(&mut r);
    assert_eq!(r.log().applied(), LogIndex(commit));
    r
}

/// Node 1, leader of 1..=3 in term 1 with snapshot chunks of `CHUNK` bytes: entries 1..=5
/// committed through node 2 and applied, then compacted through 5 into a snapshot of `len`
/// bytes. Node 3 never answered: its progress is a paused probe from index 1.
fn leader_with_snapshot(len: u64) -> Raft {
    let mut config = config(1, 3);
    config.max_snapshot_chunk = CHUNK;
    let mut r = Raft::new(config, HardState::default(), None, vec![]);
    elect(&mut r, 3);
    for m in to(&drain(&mut r), 2) {
        step(&mut r, accept(&m));
    }
    for i in 1..=5 {
        propose(&mut r, &format!("c{i}"));
    }
    for m in to(&drain(&mut r), 2) {
        step(&mut r, accept(&m));
    }
    take(&mut r);
    assert_eq!(r.log().applied(), LogIndex(5));
    r.compact(meta(5, 1, len));
    r.check_invariants();
    r
}

/// Ticks the leader to its next heartbeat and returns what it sends to node 3.
fn heartbeat_to_3(r: &mut Raft) -> Vec<Message> {
    tick(r, HEARTBEAT);
    to(&drain(r), 3)
}

// ------------------------------------------------------------------------------ compaction

/// Once the service has a durable snapshot through an applied index, the log drops the
/// entries it covers and keeps only the index and term of the last of them, for the
/// consistency check of the entry after it. The rest of the log and its cursors stay; an
/// older snapshot changes nothing.
/// Reference: §7
#[test]
fn compaction_drops_the_entries_a_snapshot_covers() {
    let mut r = follower_with(2, &[1, 1, 2, 2, 2], 4);
    r.compact(meta(3, 2, 7));
    r.check_invariants();
    let log = r.log();
    assert_eq!(log.snapshot(), meta(3, 2, 7));
    assert_eq!(log.first_index(), LogIndex(4));
    assert_eq!((log.last_index(), log.last_term()), (LogIndex(5), Term(2)));
    assert_eq!((log.committed(), log.applied()), (LogIndex(4), LogIndex(4)));
    assert_eq!(log.term_at(LogIndex(3)), Some(Term(2)));
    assert_eq!(log.term_at(LogIndex(2)), None);
    assert_eq!(held(&r), entries_from(4, &[2, 2]));

    r.compact(meta(2, 1, 3));
    assert_eq!(r.log().snapshot(), meta(3, 2, 7));

    // The entry after the snapshot is still checked against the snapshot's last entry.
    step(
        &mut r,
        append(1, 2, 2, (3, 2), entries_from(4, &[2, 2, 2]), 6),
    );
    assert_eq!(drain(&mut r), vec![append_ok(2, 1, 2, 6)]);
    assert_eq!(r.log().committed(), LogIndex(6));
}

/// An AppendEntries whose previous entry lies inside the follower's snapshot cannot be
/// checked against the log, but needs no check: that entry is committed here, and committed
/// entries are in every later leader's log (Leader Completeness, §5.4), so the follower's log
/// matches the leader's up to its commit index. It says so, and the leader goes on from there.
/// Reference: §7
#[test]
fn append_entries_behind_the_snapshot_is_answered_with_the_commit_index() {
    let mut r = follower_with(2, &[1, 1, 2, 2, 2], 4);
    r.compact(meta(3, 2, 7));
    step(
        &mut r,
        append(1, 2, 2, (1, 1), entries_from(2, &[1, 2, 2]), 4),
    );
    assert_eq!(drain(&mut r), vec![append_ok(2, 1, 2, 4)]);
    assert_eq!(held(&r), entries_from(4, &[2, 2]));
}

// ------------------------------------------------------------------------------ the leader

/// A leader that has discarded the next entry a follower needs sends it the snapshot
/// instead, in chunks of at most `max_snapshot_chunk` bytes, as many at once as the in-flight
/// window allows (the driver reads each chunk's bytes from storage as it sends it, so the
/// core holds none). Heartbeats go on, checked at the snapshot's last entry.
/// Reference: §7
#[test]
fn leader_sends_its_snapshot_in_chunks_to_a_follower_that_needs_compacted_entries() {
    let s = meta(5, 1, 25);
    let mut r = leader_with_snapshot(s.len);
    let sent = heartbeat_to_3(&mut r);
    let expected = vec![
        chunk_req(1, 3, 1, s, 0),
        chunk_req(1, 3, 1, s, 10),
        chunk_req(1, 3, 1, s, 20),
    ];
    assert_eq!(sent, expected);
    assert!(matches!(
        r.progress(3).unwrap().mode,
        ProgressMode::Snapshot {
            next_offset: 25,
            ..
        }
    ));

    tick(&mut r, HEARTBEAT);
    let sent = to(&drain(&mut r), 3);
    assert_eq!(sent, vec![append(1, 3, 1, (5, 1), vec![], 5)]);
}

/// At most `max_inflight_chunks` chunks are unacknowledged at once, so that a large snapshot
/// is never queued whole; each acknowledgement lets the next ones go.
/// Reference: §7
#[test]
fn leader_keeps_at_most_max_inflight_chunks_unacknowledged() {
    let s = meta(5, 1, 65);
    let mut r = leader_with_snapshot(s.len);
    assert_eq!(r.config().max_inflight_chunks, 4);
    let offsets = |msgs: Vec<Message>| -> Vec<u64> {
        msgs.iter()
            .filter_map(|m| match m.body {
                MessageBody::InstallSnapshot { offset, .. } => Some(offset),
                _ => None,
            })
            .collect()
    };
    assert_eq!(offsets(heartbeat_to_3(&mut r)), vec![0, 10, 20, 30]);
    step(&mut r, chunk_resp(3, 1, 1, s, 20, true, false));
    assert_eq!(offsets(to(&drain(&mut r), 3)), vec![40, 50]);
    step(&mut r, chunk_resp(3, 1, 1, s, 30, true, false));
    assert_eq!(offsets(to(&drain(&mut r), 3)), vec![60]);
}

/// The transfer is resumable: when a chunk is lost, the follower refuses the ones after it
/// and says how much it holds; the leader goes back there and sends one chunk at a time until
/// the follower accepts one, then streams again. Once the follower has installed the
/// snapshot, its log matches the leader's up to the snapshot's index, and entries after it
/// are replicated as usual.
/// Reference: §7
#[test]
fn leader_resumes_a_transfer_from_what_the_follower_holds_after_a_lost_chunk() {
    let s = meta(5, 1, 25);
    let mut r = leader_with_snapshot(s.len);
    heartbeat_to_3(&mut r);
    // Chunk 10 was lost: chunk 0 is accepted, chunk 20 refused.
    step(&mut r, chunk_resp(3, 1, 1, s, 10, true, false));
    assert!(to(&drain(&mut r), 3).is_empty(), "everything was sent");
    step(&mut r, chunk_resp(3, 1, 1, s, 10, false, false));
    assert_eq!(to(&drain(&mut r), 3), vec![chunk_req(1, 3, 1, s, 10)]);
    step(&mut r, chunk_resp(3, 1, 1, s, 20, true, false));
    assert_eq!(to(&drain(&mut r), 3), vec![chunk_req(1, 3, 1, s, 20)]);
    step(&mut r, chunk_resp(3, 1, 1, s, 25, true, true));
    let pr = r.progress(3).unwrap();
    assert_eq!(
        (pr.mode, pr.match_index, pr.next_index),
        (ProgressMode::Replicate, LogIndex(5), LogIndex(6))
    );

    let e = propose(&mut r, "after");
    assert_eq!(
        to(&drain(&mut r), 3),
        vec![append(1, 3, 1, (5, 1), vec![e], 5)]
    );
}

/// A transfer that gets no answer for two heartbeat intervals (every chunk lost, or the
/// follower restarted) starts again from what the follower last acknowledged, one chunk at a
/// time until it answers.
/// Reference: §7
#[test]
fn stalled_snapshot_transfer_resumes_from_the_last_acknowledged_chunk() {
    let s = meta(5, 1, 25);
    let mut r = leader_with_snapshot(s.len);
    heartbeat_to_3(&mut r);
    step(&mut r, chunk_resp(3, 1, 1, s, 10, true, false));
    drain(&mut r);
    tick(&mut r, HEARTBEAT);
    let sent = to(&drain(&mut r), 3);
    assert!(!sent.iter().any(is_chunk), "not stalled yet: {sent:?}");
    tick(&mut r, HEARTBEAT);
    let sent = to(&drain(&mut r), 3);
    assert_eq!(
        sent,
        vec![
            chunk_req(1, 3, 1, s, 10),
            append(1, 3, 1, (5, 1), vec![], 5)
        ]
    );
}

/// A leader whose snapshot was replaced during a transfer (it compacted further, and the old
/// snapshot is gone from storage) starts the transfer over with the new one.
/// Reference: §7
#[test]
fn leader_starts_over_when_its_snapshot_changes_during_a_transfer() {
    let old = meta(5, 1, 25);
    let mut r = leader_with_snapshot(old.len);
    heartbeat_to_3(&mut r);
    for i in 6..=7 {
        propose(&mut r, &format!("c{i}"));
    }
    for m in to(&drain(&mut r), 2) {
        step(&mut r, accept(&m));
    }
    take(&mut r);
    let new = meta(7, 1, 12);
    r.compact(new);
    let sent = heartbeat_to_3(&mut r);
    assert_eq!(
        sent,
        vec![
            chunk_req(1, 3, 1, new, 0),
            append(1, 3, 1, (7, 1), vec![], 7)
        ]
    );
    // An answer about the old snapshot changes nothing.
    step(&mut r, chunk_resp(3, 1, 1, old, 25, true, true));
    assert!(matches!(
        r.progress(3).unwrap().mode,
        ProgressMode::Snapshot { meta, .. } if meta == new
    ));
}

/// A follower that answers a heartbeat with a log that already reaches the snapshot's last
/// entry needs no snapshot: the transfer ends and replication resumes from its log.
/// Reference: §7
#[test]
fn transfer_ends_early_when_the_follower_turns_out_to_match() {
    let s = meta(5, 1, 25);
    let mut r = leader_with_snapshot(s.len);
    heartbeat_to_3(&mut r);
    step(&mut r, append_ok(3, 1, 1, 5));
    let pr = r.progress(3).unwrap();
    assert_eq!(
        (pr.mode, pr.match_index),
        (ProgressMode::Replicate, LogIndex(5))
    );
}

// ------------------------------------------------------------------------------ the follower

/// A follower takes the chunks of the leader's snapshot in order. Each accepted chunk is in
/// the Ready that carries its acknowledgement (persist before sending, thesis §3.8); the last
/// one completes the snapshot, which the same Ready installs and hands to the service
/// (before any committed entry). The log then starts after the snapshot, whose entries all
/// count as committed and applied.
/// Reference: §7
#[test]
fn follower_persists_each_chunk_before_acknowledging_it_and_installs_the_last() {
    let s = meta(5, 1, 25);
    let mut r = restore(3, 3, 1, &[]);
    step(&mut r, chunk(1, 3, 1, s, 0));
    let rd = take(&mut r);
    assert!(matches!(
        rd.snapshot_writes.as_slice(),
        [SnapshotWrite::Chunk { offset: 0, data, .. }] if data.len() == 10
    ));
    assert_eq!(rd.messages, vec![chunk_resp(3, 1, 1, s, 10, true, false)]);
    assert_eq!(rd.install_snapshot, None);
    assert_eq!(r.log().last_index(), LogIndex(0));

    step(&mut r, chunk(1, 3, 1, s, 10));
    take(&mut r);
    step(&mut r, chunk(1, 3, 1, s, 20));
    let rd = take(&mut r);
    assert!(matches!(
        rd.snapshot_writes.as_slice(),
        [SnapshotWrite::Chunk { offset: 20, .. }, SnapshotWrite::Install(m)] if *m == s
    ));
    assert_eq!(rd.install_snapshot, Some(s));
    assert_eq!(rd.messages, vec![chunk_resp(3, 1, 1, s, 25, true, true)]);
    assert!(rd.committed_entries.is_empty());
    let log = r.log();
    assert_eq!(log.snapshot(), s);
    assert_eq!((log.last_index(), log.last_term()), (LogIndex(5), Term(1)));
    assert_eq!((log.committed(), log.applied()), (LogIndex(5), LogIndex(5)));
}

/// Duplicate chunks, chunks past a gap (one before them was lost) and malformed ones
/// (beyond the snapshot's length) change nothing: the follower refuses them, saying how much
/// it holds, so the leader can go on from there.
/// Reference: §7
#[test]
fn follower_refuses_duplicate_and_out_of_order_chunks() {
    let s = meta(5, 1, 25);
    let mut r = restore(3, 3, 1, &[]);
    step(&mut r, chunk(1, 3, 1, s, 0));
    take(&mut r);
    let mut too_long = chunk(1, 3, 1, s, 10);
    if let MessageBody::InstallSnapshot { data, .. } = &mut too_long.body {
        data.resize(40, 0);
    }
    for m in [chunk(1, 3, 1, s, 0), chunk(1, 3, 1, s, 20), too_long] {
        step(&mut r, m);
        let rd = take(&mut r);
        assert!(rd.snapshot_writes.is_empty());
        assert_eq!(rd.messages, vec![chunk_resp(3, 1, 1, s, 10, false, false)]);
    }
    step(&mut r, chunk(1, 3, 1, s, 10));
    let rd = take(&mut r);
    assert_eq!(rd.snapshot_writes.len(), 1);
    assert_eq!(rd.messages, vec![chunk_resp(3, 1, 1, s, 20, true, false)]);
}

/// A snapshot that covers nothing newer than what the follower has committed is answered as
/// installed (its log already matches the leader's that far) and otherwise ignored: nothing is
/// written, and no entry is dropped.
/// Reference: §7
#[test]
fn snapshot_no_newer_than_the_commit_index_is_ignored() {
    let mut r = follower_with(1, &[1, 1, 1, 1, 1, 1], 5);
    let s = meta(4, 1, 25);
    step(&mut r, chunk(1, 2, 1, s, 0));
    let rd = take(&mut r);
    assert!(rd.snapshot_writes.is_empty() && rd.install_snapshot.is_none());
    assert_eq!(rd.messages, vec![chunk_resp(2, 1, 1, s, 25, true, true)]);
    assert_eq!(held(&r), log_of(&[1, 1, 1, 1, 1, 1]));
}

/// Installing a snapshot, a follower keeps the entries after it if its log holds the
/// snapshot's last entry (same index and term): they may be needed, and they match the
/// leader's. Otherwise its whole log is discarded; the leader sends what follows.
/// Reference: §7
#[test]
fn installing_keeps_the_log_after_the_snapshot_only_if_it_holds_its_last_entry() {
    let s = meta(3, 1, 5);
    let mut r = follower_with(2, &[1, 1, 1, 2, 2], 0);
    step(&mut r, chunk(1, 2, 2, s, 0));
    take(&mut r);
    assert_eq!(held(&r), entries_from(4, &[2, 2]));
    assert_eq!(r.log().committed(), LogIndex(3));

    let mut r = follower_with(2, &[1, 1, 2, 2, 2], 0);
    step(&mut r, chunk(1, 2, 2, s, 0));
    take(&mut r);
    assert!(held(&r).is_empty());
    assert_eq!(
        (r.log().last_index(), r.log().last_term()),
        (LogIndex(3), Term(1))
    );
}

/// Two leaders' snapshots of one index hold the same state but need not be the same bytes
/// (each replica serializes its own), so a transfer belongs to one leader: a chunk from the
/// leader of a later term does not continue an earlier leader's transfer; it must start over.
/// Reference: §7
#[test]
fn chunks_from_a_new_leader_do_not_continue_an_old_leaders_transfer() {
    let s = meta(5, 1, 25);
    let mut r = restore(3, 3, 1, &[]);
    step(&mut r, chunk(1, 3, 1, s, 0));
    take(&mut r);
    step(&mut r, chunk(2, 3, 2, s, 10));
    let rd = take(&mut r);
    assert!(rd.snapshot_writes.is_empty());
    assert_eq!(rd.messages, vec![chunk_resp(3, 2, 2, s, 0, false, false)]);
    step(&mut r, chunk(2, 3, 2, s, 0));
    let rd = take(&mut r);
    assert_eq!(rd.messages, vec![chunk_resp(3, 2, 2, s, 10, true, false)]);
}

/// An InstallSnapshot from a stale term is refused with the current term, like any stale
/// request (so that its sender steps down); a current one from a candidate's rival makes the
/// candidate a follower of the sender, as an AppendEntries would.
/// Reference: §5.1, §7
#[test]
fn install_snapshot_follows_the_term_rules() {
    let s = meta(5, 1, 25);
    let mut r = restore(3, 3, 3, &[]);
    step(&mut r, chunk(1, 3, 2, s, 0));
    let rd = take(&mut r);
    assert!(rd.snapshot_writes.is_empty());
    assert_eq!(rd.messages, vec![chunk_resp(3, 1, 3, s, 0, false, false)]);

    let mut r = restore(3, 3, 1, &[]);
    campaign(&mut r);
    assert_eq!(r.term(), Term(2));
    step(&mut r, chunk(1, 3, 2, s, 0));
    assert_eq!((r.role(), r.leader_id()), (Role::Follower, Some(1)));
}

// ------------------------------------------------------------------------------ restart

/// A node restarts from its snapshot and the log after it: the snapshot's entries are
/// committed and applied (the service starts from the snapshot), its last entry takes part in
/// elections and in the consistency check of the entry after it, and as a leader the node
/// replicates from there.
/// Reference: §7
#[test]
fn node_restarts_from_its_snapshot_and_the_log_after_it() {
    let hard_state = HardState {
        term: Term(3),
        vote: None,
    };
    let s = meta(5, 2, 9);
    let tail = entries_from(6, &[3, 3]);
    let mut r = Raft::new(config(1, 3), hard_state, Some(s), tail.clone());
    r.check_invariants();
    let log = r.log();
    assert_eq!(log.snapshot(), s);
    assert_eq!((log.committed(), log.applied()), (LogIndex(5), LogIndex(5)));
    assert_eq!((log.last_index(), log.last_term()), (LogIndex(7), Term(3)));
    assert_eq!(held(&r), tail);
    assert!(!r.has_ready(), "nothing to persist or apply");

    campaign(&mut r);
    assert_eq!(r.term(), Term(4));
    step(&mut r, vote_resp(2, 1, 4, true));
    assert_eq!(r.role(), Role::Leader);
    let probes = to(&drain(&mut r), 2);
    assert_eq!(probes, vec![append(1, 2, 4, (7, 3), vec![], 5)]);
    // A follower whose log ends at the snapshot: the leader backs up to the snapshot's last
    // entry, which it can still check.
    step(&mut r, append_resp(2, 1, 4, false, 7, None, 6));
    assert_eq!(
        to(&drain(&mut r), 2),
        vec![append(1, 2, 4, (5, 2), tail, 5)]
    );
}

// ------------------------------------------------------------------------------ no-op

/// With `noop_on_election`, a new leader appends an empty entry of its own term at once and
/// sends it with its first probes, so that the entries of earlier terms it holds commit as
/// soon as a majority stores the no-op (§5.4.2 forbids committing them by counting replicas),
/// not whenever a client next writes. The no-op is handed out like any committed entry (the
/// service skips it).
/// Reference: thesis §6.4
#[test]
fn new_leader_commits_earlier_entries_through_a_noop_of_its_term() {
    let mut config = config(1, 3);
    config.noop_on_election = true;
    let hard_state = HardState {
        term: Term(1),
        vote: None,
    };
    let mut r = Raft::new(config, hard_state, None, log_of(&[1, 1]));
    elect(&mut r, 3);
    let noop = Entry {
        term: Term(2),
        index: LogIndex(3),
        command: Vec::new(),
    };
    assert!(noop.is_noop());
    let rd = take(&mut r);
    assert_eq!(rd.entries, vec![noop.clone()]);
    let probes = to(&rd.messages, 2);
    assert_eq!(probes, vec![append(1, 2, 2, (2, 1), vec![noop.clone()], 0)]);
    assert_eq!(r.log().committed(), LogIndex(0));

    step(&mut r, accept(&probes[0]));
    assert_eq!(r.log().committed(), LogIndex(3));
    assert_eq!(
        take(&mut r).committed_entries,
        vec![entry(1, 1), entry(2, 1), noop]
    );
}

/// A service's command is never empty: an empty entry reads as a no-op, so proposing one is
/// refused loudly rather than silently skipped by every replica.
/// Reference: thesis §6.4
#[test]
#[should_panic(expected = "no-op")]
fn an_empty_proposal_is_refused() {
    let mut r = leader_replicating(3);
    let _ = r.propose(Vec::new());
}
