//! The messages peers exchange. Every exchange is one-way: a response is just another message,
//! so the core never waits for a reply and a lost message is simply never answered.

use crate::types::{Entry, LogIndex, NodeId, SnapshotMeta, Term};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's current term; every message carries it (§5.1).
    pub term: Term,
    pub body: MessageBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// Thesis §9.6: before starting an election, ask whether one could be won. `term` of the
    /// message is the term the election would have; the receiver's term does not change.
    PreVote {
        last_log_index: LogIndex,
        last_log_term: Term,
    },
    /// Granted: `term` is the prospective term; refused: the responder's own term.
    PreVoteResponse {
        vote_granted: bool,
    },
    /// §5.2: a candidate asks for a vote, showing how up to date its log is (§5.4.1).
    RequestVote {
        last_log_index: LogIndex,
        last_log_term: Term,
    },
    RequestVoteResponse {
        vote_granted: bool,
    },
    /// §5.3: replicate entries after `prev_log_index`; with no entries it is a heartbeat.
    AppendEntries {
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
        /// The leader's latest read round (thesis §6.4), echoed in the answer: an answer to a
        /// message of round `r` or later shows that the follower still took the sender for
        /// this term's leader after every read of round `r` arrived.
        read_round: u64,
    },
    AppendEntriesResponse {
        success: bool,
        /// On success, the last index known to match the leader's log (prev + entries);
        /// on failure, the `prev_log_index` that was rejected, so stale rejections can be told apart.
        index: LogIndex,
        /// Fast backtracking hints (on failure): the term of the follower's entry at the rejected
        /// index (None if its log is shorter) and the first index it holds for that term, or its
        /// last index + 1 when the log is too short. `conflict_index` 0 marks the refusal of a
        /// request from an older term, which says nothing about the log.
        conflict_term: Option<Term>,
        conflict_index: LogIndex,
        /// The `read_round` of the AppendEntries answered.
        read_round: u64,
    },
    /// §7: part of the leader's snapshot, for a follower whose next entry the leader has
    /// compacted away. Chunks of one snapshot go in order; `offset` is where `data` starts.
    /// The core leaves `data` empty and asks for `len` bytes: the driver reads them from storage
    /// just before sending, so a snapshot is never held in memory to be sent.
    InstallSnapshot {
        meta: SnapshotMeta,
        offset: u64,
        len: u64,
        data: Vec<u8>,
    },
    /// How much of the snapshot `index` the follower holds durably: `received` bytes.
    /// `accepted` is false for a chunk it refused (stale, duplicate, or past a gap): the
    /// leader goes on from `received`. `done`: the snapshot is installed (or the follower
    /// already had everything it covers), so its log matches the leader's up to `index`. Only
    /// `done` vouches for anything; the rest paces the transfer.
    InstallSnapshotResponse {
        index: LogIndex,
        received: u64,
        accepted: bool,
        done: bool,
    },
}

impl Message {
    /// Requests are what the course's network calls an RPC: they are counted per server and
    /// suffer request-side faults; responses suffer reply-side faults.
    pub fn is_request(&self) -> bool {
        matches!(
            self.body,
            MessageBody::PreVote { .. }
                | MessageBody::RequestVote { .. }
                | MessageBody::AppendEntries { .. }
                | MessageBody::InstallSnapshot { .. }
        )
    }
}
