//! What a leader knows about one follower's log, and how it paces replication to it.

use crate::types::{LogIndex, SnapshotMeta};
use std::collections::VecDeque;

/// A follower is either being probed (we do not know where its log matches ours, so one
/// AppendEntries at a time), replicated to (its log matches up to `match_index`, so entries
/// are streamed optimistically, several messages in flight), or sent our snapshot (the
/// entries it needs next were compacted away, §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// `paused` is set after sending a probe, until its answer or the next heartbeat.
    Probe {
        paused: bool,
    },
    Replicate,
    /// Sending snapshot `meta` in chunks: the follower holds `acked` bytes durably; bytes up
    /// to `next_offset` were sent. After a stall, `probing` sends one chunk at a time until
    /// the follower answers, as a probe does for entries.
    Snapshot {
        meta: SnapshotMeta,
        acked: u64,
        next_offset: u64,
        probing: bool,
    },
}

#[derive(Clone, Debug)]
pub struct Progress {
    /// Invariant: match_index < next_index.
    pub match_index: LogIndex,
    pub next_index: LogIndex,
    pub mode: ProgressMode,
    /// Unacknowledged messages, oldest first, each with the tick it was sent at: in Replicate
    /// mode the last index an AppendEntries carries, in Snapshot mode the end offset of a
    /// chunk. Bounded by `Config::max_inflight_msgs` (`max_inflight_chunks` for chunks).
    pub inflight: VecDeque<(u64, u64)>,
    /// Whether the follower answered anything since the last quorum check.
    pub recent_active: bool,
    /// The highest read round the follower's answers echoed (thesis §6.4).
    pub read_round: u64,
}

impl Progress {
    pub fn new(next_index: LogIndex) -> Progress {
        Progress {
            match_index: LogIndex(0),
            next_index,
            mode: ProgressMode::Probe { paused: false },
            inflight: VecDeque::new(),
            recent_active: true,
            read_round: 0,
        }
    }

    /// Falls back to probing from `next_index`, forgetting what was in flight.
    pub fn become_probe(&mut self, next_index: LogIndex) {
        self.mode = ProgressMode::Probe { paused: false };
        self.next_index = next_index.max(self.match_index.next());
        self.inflight.clear();
    }

    pub fn become_replicate(&mut self) {
        self.mode = ProgressMode::Replicate;
        self.next_index = self.match_index.next();
        self.inflight.clear();
    }

    /// Starts sending snapshot `meta` from its beginning.
    pub fn become_snapshot(&mut self, meta: SnapshotMeta) {
        self.mode = ProgressMode::Snapshot {
            meta,
            acked: 0,
            next_offset: 0,
            probing: false,
        };
        self.inflight.clear();
    }

    /// Records an acknowledgement of everything up to `index`; returns whether `match_index` grew.
    pub fn acknowledge(&mut self, index: LogIndex) -> bool {
        while self
            .inflight
            .front()
            .is_some_and(|&(last, _)| last <= index.0)
        {
            self.inflight.pop_front();
        }
        if index > self.match_index {
            self.match_index = index;
            self.next_index = self.next_index.max(index.next());
            true
        } else {
            false
        }
    }

    pub fn check_invariants(&self) {
        assert!(self.match_index < self.next_index, "{self:?}");
        if let ProgressMode::Snapshot {
            meta,
            acked,
            next_offset,
            ..
        } = self.mode
        {
            assert!(acked <= next_offset && next_offset <= meta.len, "{self:?}");
        }
    }
}
