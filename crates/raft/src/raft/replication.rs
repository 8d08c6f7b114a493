//! Log replication (§5.3): the follower's consistency check, the leader's bookkeeping of each
//! follower's progress, commitment (§5.4.2), heartbeats, and sending a snapshot to a follower
//! whose next entries were compacted away (§7).

use super::{Raft, RaftFault, Role};
use crate::message::MessageBody;
use crate::progress::ProgressMode;
use crate::ready::SnapshotWrite;
use crate::types::{Entry, LogIndex, NodeId, SnapshotMeta, Term};

impl Raft {
    /// §5.3: the consistency check, then merge, then advance the commit index.
    pub(super) fn handle_append_entries(
        &mut self,
        from: NodeId,
        (prev_log_index, prev_log_term): (LogIndex, Term),
        entries: &[Entry],
        leader_commit: LogIndex,
        read_round: u64,
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
            read_round,
        };
        if self.log.is_compacted(prev_log_index) {
            // The check point is inside our snapshot, so committed here and, committed
            // entries being in every later leader's log (§5.4), consistent with the sender's.
            // What we hold is known to match up to our commit index; the leader goes on
            // from there.
            let committed = self.log.committed();
            self.send(
                from,
                MessageBody::AppendEntriesResponse {
                    success: true,
                    index: committed,
                    conflict_term: None,
                    conflict_index: LogIndex(0),
                    read_round,
                },
            );
            return;
        }
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
                        read_round,
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
        if let ProgressMode::Snapshot { meta, .. } = pr.mode {
            // While a snapshot is on its way, only an answer showing that the follower's log
            // already matches up to the snapshot changes anything: then it needs none.
            if success && index >= meta.index {
                pr.acknowledge(index);
                pr.become_replicate();
                self.maybe_commit();
                self.send_append(from);
            }
            return;
        }
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
    ///
    /// The leader counts itself only for what it has persisted (`stabled`): it sends new
    /// entries to its followers while it writes them itself (thesis §10.2.1), so an entry
    /// may be stored on a majority of followers first, and then commits without it.
    pub(super) fn maybe_commit(&mut self) {
        let mut matched: Vec<LogIndex> = self.progress.values().map(|p| p.match_index).collect();
        matched.push(self.log.stabled());
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matched[self.quorum() - 1];
        let current_term = self.log.term_at(candidate) == Some(self.term)
            || self.config.fault == RaftFault::CommitEarlierTerm;
        if candidate > self.log.committed() && current_term {
            self.log.commit_to(candidate);
        }
    }

    /// Sends `to` whatever its progress allows: one probe, as many streamed messages as the
    /// in-flight window takes, or snapshot chunks if the entries it needs are compacted.
    pub(super) fn send_append(&mut self, to: NodeId) {
        loop {
            let pr = &self.progress[&to];
            let last = self.log.last_index();
            let needs_snapshot = !matches!(pr.mode, ProgressMode::Snapshot { .. })
                && self.log.is_compacted(pr.next_index.prev());
            if needs_snapshot {
                let snapshot = self.log.snapshot();
                let pr = self.progress.get_mut(&to).expect("progress");
                pr.become_snapshot(snapshot);
            }
            let pr = &self.progress[&to];
            match pr.mode {
                ProgressMode::Snapshot { .. } => {
                    self.send_snapshot_chunks(to);
                    return;
                }
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
                    pr.inflight.push_back((sent_to.0, now));
                    pr.next_index = sent_to.next();
                }
            }
        }
    }

    /// §7: sends the next chunks of our snapshot to `to`, as many as the in-flight window
    /// (`max_inflight_chunks`) takes. The driver fills in each chunk's bytes from storage
    /// when it sends it.
    fn send_snapshot_chunks(&mut self, to: NodeId) {
        let chunk = self.config.max_snapshot_chunk.max(1);
        loop {
            let pr = &self.progress[&to];
            let ProgressMode::Snapshot {
                meta,
                acked,
                next_offset,
                probing,
            } = pr.mode
            else {
                return;
            };
            let window = if probing {
                1
            } else {
                self.config.max_inflight_chunks.max(1)
            };
            if next_offset >= meta.len || pr.inflight.len() >= window {
                return;
            }
            let len = chunk.min(meta.len - next_offset);
            let now = self.now;
            let pr = self.progress.get_mut(&to).expect("progress");
            pr.mode = ProgressMode::Snapshot {
                meta,
                acked,
                next_offset: next_offset + len,
                probing,
            };
            pr.inflight.push_back((next_offset + len, now));
            self.send(
                to,
                MessageBody::InstallSnapshot {
                    meta,
                    offset: next_offset,
                    len,
                    data: Vec::new(),
                },
            );
        }
    }

    /// The follower's answer to a snapshot chunk.
    pub(super) fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        index: LogIndex,
        received: u64,
        accepted: bool,
        done: bool,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        let ProgressMode::Snapshot {
            meta,
            acked,
            next_offset,
            probing,
        } = pr.mode
        else {
            return;
        };
        if meta.index != index {
            // About a snapshot we no longer send.
            return;
        }
        if done {
            // Installed (or the follower already had everything it covers): its log matches
            // ours up to the snapshot.
            pr.acknowledge(meta.index);
            pr.become_replicate();
            self.maybe_commit();
            self.send_append(from);
            return;
        }
        if accepted {
            // Stream on from what the follower holds.
            let acked = acked.max(received);
            while pr.inflight.front().is_some_and(|&(end, _)| end <= acked) {
                pr.inflight.pop_front();
            }
            pr.mode = ProgressMode::Snapshot {
                meta,
                acked,
                next_offset: next_offset.max(acked),
                probing: false,
            };
        } else if !(probing && received == acked) {
            // A chunk was refused: one before it was lost, or the follower lost what it had
            // received (a restart). Go back to what it holds now, one chunk at a time until
            // it accepts one. Refusals of the other chunks that were in flight report the
            // same offset and change nothing more.
            pr.inflight.clear();
            pr.mode = ProgressMode::Snapshot {
                meta,
                acked: received,
                next_offset: received,
                probing: true,
            };
        }
        self.send_snapshot_chunks(from);
    }

    /// §7, InstallSnapshot receiver: accept the chunks of the leader's snapshot in order,
    /// acknowledging what is durable (the acknowledgement leaves with the `Ready` that
    /// persists the chunk); once complete, install it. A snapshot that covers nothing newer
    /// than what we have committed is answered as installed and otherwise ignored.
    pub(super) fn handle_install_snapshot(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
    ) {
        // Same term: the sender is this term's leader.
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(from));
        }
        self.leader_id = Some(from);
        self.reset_election_timer();
        let respond = |raft: &mut Raft, received: u64, accepted: bool, done: bool| {
            raft.send(
                from,
                MessageBody::InstallSnapshotResponse {
                    index: meta.index,
                    received,
                    accepted,
                    done,
                },
            );
        };
        if meta.index <= self.log.committed() {
            respond(self, meta.len, true, true);
            return;
        }
        let received = match self.incoming_snapshot {
            Some((m, term, received)) if m == meta && term == self.term => received,
            _ => 0,
        };
        let end = offset.checked_add(data.len() as u64);
        if offset != received || end.is_none_or(|end| end > meta.len) {
            // Stale, duplicate, past a gap, or malformed: nothing changes.
            respond(self, received, false, false);
            return;
        }
        let received = offset + data.len() as u64;
        self.snapshot_writes
            .push(SnapshotWrite::Chunk { meta, offset, data });
        if received < meta.len {
            self.incoming_snapshot = Some((meta, self.term, received));
            respond(self, received, true, false);
            return;
        }
        self.incoming_snapshot = None;
        self.log.install_snapshot(meta);
        self.snapshot_writes.push(SnapshotWrite::Install(meta));
        self.pending_install = Some(meta);
        respond(self, meta.len, true, true);
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
        let prev_log_term = self
            .log
            .term_at(prev_log_index)
            .expect("prev within the log");
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
                read_round: self.read_round,
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
            let snapshot = self.log.snapshot();
            let pr = self.progress.get_mut(&to).expect("progress");
            let stalled = pr
                .inflight
                .front()
                .is_some_and(|&(_, sent)| now.saturating_sub(sent) >= stall_ticks);
            match pr.mode {
                ProgressMode::Probe { .. } => {
                    pr.mode = ProgressMode::Probe { paused: false };
                    self.send_append(to);
                }
                ProgressMode::Replicate if stalled => {
                    let next = pr.match_index.next();
                    pr.become_probe(next);
                    self.send_append(to);
                }
                ProgressMode::Replicate => {
                    // prev = match_index: known to be consistent, so never rejected. If we have
                    // compacted past it, check at our snapshot instead: a refusal sends the
                    // follower the snapshot.
                    let prev_log_index = pr.match_index.max(snapshot.index);
                    self.send_heartbeat(to, prev_log_index);
                }
                ProgressMode::Snapshot { meta, acked, .. } => {
                    if stalled || meta != snapshot {
                        // Resume from what the follower holds, one chunk at a time until it
                        // answers; start over if our snapshot changed meanwhile (the old one
                        // is gone from storage).
                        let acked = if meta == snapshot { acked } else { 0 };
                        pr.mode = ProgressMode::Snapshot {
                            meta: snapshot,
                            acked,
                            next_offset: acked,
                            probing: true,
                        };
                        pr.inflight.clear();
                        self.send_snapshot_chunks(to);
                    }
                    // Keeps the follower from an election, and ends the transfer early if its
                    // log turns out to match up to the snapshot.
                    self.send_heartbeat(to, snapshot.index);
                }
            }
        }
    }

    /// An AppendEntries without entries, checked at `prev_log_index` (whose term we know).
    pub(super) fn send_heartbeat(&mut self, to: NodeId, prev_log_index: LogIndex) {
        let prev_log_term = self.log.term_at(prev_log_index).expect("known term");
        let leader_commit = self.log.committed();
        self.send(
            to,
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries: Vec::new(),
                leader_commit,
                read_round: self.read_round,
            },
        );
    }
}
