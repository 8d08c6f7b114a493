//! Log replication (§5.3): the follower's consistency check, the leader's bookkeeping of each
//! follower's progress, commitment (§5.4.2), and heartbeats.

use super::{Raft, RaftFault, Role};
use crate::message::MessageBody;
use crate::progress::ProgressMode;
use crate::types::{Entry, LogIndex, NodeId, Term};

impl Raft {
    /// §5.3: the consistency check, then merge, then advance the commit index.
    pub(super) fn handle_append_entries(
        &mut self,
        from: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: &[Entry],
        leader_commit: LogIndex,
    ) {
        // Same term: the sender is this term's leader (§5.2, a candidate steps down).
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(from));
        }
        self.leader_id = Some(from);
        self.reset_election_timer();

        let reject = |conflict_term, conflict_index| MessageBody::AppendEntriesResponse {
            success: false,
            index: prev_log_index,
            conflict_term,
            conflict_index,
        };
        match self.log.term_at(prev_log_index) {
            None => {
                let hint = reject(None, self.log.last_index().next());
                self.send(from, hint);
            }
            Some(t) if t != prev_log_term => {
                let first = self.log.first_index_of_term(t, prev_log_index);
                self.send(from, reject(Some(t), first));
            }
            Some(_) => {
                if self.config.fault == RaftFault::TruncateOnMatch && !entries.is_empty() {
                    self.log.truncate_after(prev_log_index);
                }
                self.log.merge(entries);
                let last_new = LogIndex(prev_log_index.0 + entries.len() as u64);
                // Only what this message proved consistent may be committed: beyond
                // `last_new` our log may still hold entries the leader does not have.
                self.log.commit_to(leader_commit.min(last_new));
                self.send(
                    from,
                    MessageBody::AppendEntriesResponse {
                        success: true,
                        index: last_new,
                        conflict_term: None,
                        conflict_index: LogIndex(0),
                    },
                );
            }
        }
    }

    pub(super) fn handle_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        index: LogIndex,
        conflict_term: Option<Term>,
        conflict_index: LogIndex,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let last_index = self.log.last_index();
        let next_from_hint = match conflict_term {
            Some(t) => self
                .log
                .last_index_of_term(t)
                .map_or(conflict_index, |i| i.next()),
            None => conflict_index,
        };
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if success {
            let grew = pr.acknowledge(index);
            if matches!(pr.mode, ProgressMode::Probe { .. }) {
                pr.become_replicate();
            }
            if grew {
                self.maybe_commit();
            }
            self.send_append(from);
            return;
        }
        // A rejection of something at or below the match point, or of a probe other than the
        // outstanding one, is an old message overtaken by events. So is the answer to a request
        // from one of our earlier terms (conflict_index 0, see `reject_stale`): if it carried a
        // higher term we would have stepped down already.
        let stale = conflict_index == LogIndex(0)
            || index <= pr.match_index
            || matches!(pr.mode, ProgressMode::Probe { .. }) && index != pr.next_index.prev();
        if stale {
            return;
        }
        // §5.3 with the fast backtracking the paper sketches: skip a whole conflicting term
        // per round trip. The next probe must go below the rejected index.
        let next = next_from_hint
            .min(index)
            .min(last_index.next())
            .max(LogIndex(1));
        pr.become_probe(next);
        self.send_append(from);
    }

    /// §5.3, §5.4.2: commit the highest index stored on a majority, but only if it is from
    /// the current term; earlier entries are then committed indirectly.
    pub(super) fn maybe_commit(&mut self) {
        let mut matched: Vec<LogIndex> = self.progress.values().map(|p| p.match_index).collect();
        matched.push(self.log.last_index());
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matched[self.quorum() - 1];
        let current_term = self.log.term_at(candidate) == Some(self.term)
            || self.config.fault == RaftFault::CommitEarlierTerm;
        if candidate > self.log.committed() && current_term {
            self.log.commit_to(candidate);
        }
    }

    /// Sends `to` whatever its progress allows: one probe, or as many streamed messages as
    /// the in-flight window takes.
    pub(super) fn send_append(&mut self, to: NodeId) {
        loop {
            let pr = &self.progress[&to];
            let last = self.log.last_index();
            match pr.mode {
                ProgressMode::Probe { paused: true } => return,
                ProgressMode::Probe { paused: false } => {
                    self.send_entries(to, pr.next_index, last);
                    let pr = self.progress.get_mut(&to).expect("progress");
                    pr.mode = ProgressMode::Probe { paused: true };
                    return;
                }
                ProgressMode::Replicate => {
                    if pr.next_index > last || pr.inflight.len() >= self.config.max_inflight_msgs {
                        return;
                    }
                    let sent_to = self.send_entries(to, pr.next_index, last);
                    let now = self.now;
                    let pr = self.progress.get_mut(&to).expect("progress");
                    pr.inflight.push_back((sent_to, now));
                    pr.next_index = sent_to.next();
                }
            }
        }
    }

    /// Sends one AppendEntries with entries from `from` (up to `to` and the byte limit);
    /// returns the last index it carries.
    pub(super) fn send_entries(
        &mut self,
        to_node: NodeId,
        from: LogIndex,
        to: LogIndex,
    ) -> LogIndex {
        let prev_log_index = from.prev();
        let prev_log_term = self.log.term_at(prev_log_index).expect("prev within log");
        let entries = self.log.slice(from, to, self.config.max_msg_bytes);
        let last = LogIndex(prev_log_index.0 + entries.len() as u64);
        let leader_commit = self.log.committed();
        self.send(
            to_node,
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            },
        );
        last
    }

    /// Heartbeats keep followers from starting elections (§5.2) and carry the commit index.
    /// They are also the retransmission timer: a probe unanswered for a heartbeat is resent,
    /// and a stream with no acknowledgement for two heartbeats falls back to probing.
    pub(super) fn broadcast_heartbeat(&mut self) {
        let stall_ticks = 2 * self.config.heartbeat_ticks;
        for to in self.others() {
            let now = self.now;
            let pr = self.progress.get_mut(&to).expect("progress");
            match pr.mode {
                ProgressMode::Probe { .. } => {
                    pr.mode = ProgressMode::Probe { paused: false };
                    self.send_append(to);
                }
                ProgressMode::Replicate => {
                    let stalled = pr
                        .inflight
                        .front()
                        .is_some_and(|&(_, sent)| now.saturating_sub(sent) >= stall_ticks);
                    if stalled {
                        let next = pr.match_index.next();
                        pr.become_probe(next);
                        self.send_append(to);
                    } else {
                        // prev = match_index: known to be consistent, so never rejected.
                        let prev_log_index = pr.match_index;
                        let prev_log_term = self.log.term_at(prev_log_index).expect("match in log");
                        let leader_commit = self.log.committed();
                        self.send(
                            to,
                            MessageBody::AppendEntries {
                                prev_log_index,
                                prev_log_term,
                                entries: Vec::new(),
                                leader_commit,
                            },
                        );
                    }
                }
            }
        }
    }
}
