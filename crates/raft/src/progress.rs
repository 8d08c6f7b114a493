//! What a leader knows about one follower's log, and how it paces replication to it.

use crate::types::LogIndex;
use std::collections::VecDeque;

/// A follower is either being probed (we do not know where its log matches ours, so one
/// AppendEntries at a time) or replicated to (its log matches up to `match_index`, so entries
/// are streamed optimistically, several messages in flight).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// `paused` is set after sending a probe, until its answer or the next heartbeat.
    Probe {
        paused: bool,
    },
    Replicate,
}

#[derive(Clone, Debug)]
pub struct Progress {
    /// Invariant: match_index < next_index.
    pub match_index: LogIndex,
    pub next_index: LogIndex,
    pub mode: ProgressMode,
    /// The last index carried by each unacknowledged AppendEntries (Replicate mode), with the
    /// tick it was sent at, oldest first. Bounded by `Config::max_inflight_msgs`.
    pub inflight: VecDeque<(LogIndex, u64)>,
    /// Whether the follower answered anything since the last quorum check.
    pub recent_active: bool,
}

impl Progress {
    pub fn new(next_index: LogIndex) -> Progress {
        Progress {
            match_index: LogIndex(0),
            next_index,
            mode: ProgressMode::Probe { paused: false },
            inflight: VecDeque::new(),
            recent_active: true,
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

    /// Records an acknowledgement of everything up to `index`; returns whether `match_index` grew.
    pub fn acknowledge(&mut self, index: LogIndex) -> bool {
        while self
            .inflight
            .front()
            .is_some_and(|&(last, _)| last <= index)
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
    }
}
