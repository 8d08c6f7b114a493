//! The consensus core: a plain state machine driven by `tick`, `step` and `propose`, whose
//! output is a [`Ready`]. It has no clock (time is a count of ticks), no I/O and no global
//! randomness (election timeouts come from a generator seeded through [`Config::seed`]).
//!
//! Section numbers refer to the extended Raft paper (Ongaro & Ousterhout, 2014).

use crate::log::RaftLog;
use crate::message::{Message, MessageBody};
use crate::progress::{Progress, ProgressMode};
use crate::ready::Ready;
use crate::types::{Entry, HardState, LogIndex, NodeId, Term};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Debug)]
pub struct Config {
    pub id: NodeId,
    /// Every member of the cluster, this node included.
    pub peers: Vec<NodeId>,
    /// The election timeout is drawn uniformly from `[election_ticks, 2 * election_ticks)`
    /// each time it is reset (§5.2), so that split votes resolve quickly.
    pub election_ticks: u64,
    /// An idle leader sends one heartbeat per follower every `heartbeat_ticks`.
    pub heartbeat_ticks: u64,
    /// At most this many unacknowledged AppendEntries per follower while streaming.
    pub max_inflight_msgs: usize,
    /// Soft limit on the command bytes carried by one AppendEntries (at least one entry goes).
    pub max_msg_bytes: usize,
    /// Run a pre-vote round before each election (thesis §9.6), so that a node that cannot
    /// win (its log is behind, or the others still hear from a leader) does not raise the
    /// term and depose a working leader.
    pub pre_vote: bool,
    /// A leader that has not heard from a majority for `election_ticks` steps down (thesis
    /// §6.2), so that a leader cut off in a minority stops accepting requests it cannot
    /// commit, and clients move on quickly.
    pub check_quorum: bool,
    /// Seeds the election-timeout generator.
    pub seed: u64,
}

impl Config {
    /// Defaults for a 10 ms tick: elections after 300–600 ms of silence, heartbeats every
    /// 100 ms (10 per second per follower when idle).
    pub fn new(id: NodeId, peers: Vec<NodeId>, seed: u64) -> Config {
        Config {
            id,
            peers,
            election_ticks: 30,
            heartbeat_ticks: 10,
            max_inflight_msgs: 64,
            max_msg_bytes: 1 << 20,
            pre_vote: true,
            check_quorum: true,
            seed,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Returned by [`Raft::propose`] on a node that is not the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotLeader {
    /// The leader this node last heard from in its current term, if any.
    pub leader_hint: Option<NodeId>,
}

impl fmt::Display for NotLeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.leader_hint {
            Some(id) => write!(f, "not the leader (try node {id})"),
            None => write!(f, "not the leader"),
        }
    }
}

impl std::error::Error for NotLeader {}

pub struct Raft {
    config: Config,
    // Persistent state (Figure 2).
    term: Term,
    vote: Option<NodeId>,
    log: RaftLog,
    // Volatile state.
    role: Role,
    leader_id: Option<NodeId>,
    /// Pre-candidate and candidate: the answers received in this (pre-)election.
    votes: BTreeMap<NodeId, bool>,
    /// Leader only: one entry per other peer.
    progress: BTreeMap<NodeId, Progress>,
    /// Ticks since the last reset of the election timer (follower, candidate).
    election_elapsed: u64,
    randomized_election_ticks: u64,
    /// Ticks since the last heartbeat (leader).
    heartbeat_elapsed: u64,
    /// Monotone tick counter, to age in-flight messages.
    now: u64,
    /// Leader: new entries await an AppendEntries, sent when the next `Ready` is taken so that
    /// proposals arriving together go out in one message per follower.
    pending_replication: bool,
    msgs: Vec<Message>,
    /// The hard state as of the last `advance`: what storage holds.
    stable_hard_state: HardState,
    rng: ChaCha8Rng,
}

impl Raft {
    /// A node starting from what storage holds (both empty for a new node).
    pub fn new(config: Config, hard_state: HardState, entries: Vec<Entry>) -> Raft {
        assert!(
            config.peers.contains(&config.id),
            "peers must include this node"
        );
        assert!(config.election_ticks > config.heartbeat_ticks);
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut raft = Raft {
            term: hard_state.term,
            vote: hard_state.vote,
            log: RaftLog::restore(entries),
            role: Role::Follower,
            leader_id: None,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            election_elapsed: 0,
            randomized_election_ticks: config.election_ticks,
            heartbeat_elapsed: 0,
            now: 0,
            pending_replication: false,
            msgs: Vec::new(),
            stable_hard_state: hard_state,
            rng,
            config,
        };
        raft.reset_election_timer();
        raft
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn term(&self) -> Term {
        self.term
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    pub fn leader_id(&self) -> Option<NodeId> {
        self.leader_id
    }

    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }

    pub fn log(&self) -> &RaftLog {
        &self.log
    }

    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
        }
    }

    /// The leader's view of a follower (for tests and diagnostics).
    pub fn progress(&self, id: NodeId) -> Option<&Progress> {
        self.progress.get(&id)
    }

    fn quorum(&self) -> usize {
        self.config.peers.len() / 2 + 1
    }

    fn others(&self) -> Vec<NodeId> {
        let me = self.config.id;
        self.config
            .peers
            .iter()
            .copied()
            .filter(|&p| p != me)
            .collect()
    }

    // ---------------------------------------------------------------- time

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.now += 1;
        match self.role {
            Role::Leader => {
                self.election_elapsed += 1;
                if self.election_elapsed >= self.config.election_ticks {
                    self.election_elapsed = 0;
                    if self.config.check_quorum && !self.quorum_active() {
                        self.become_follower(self.term, None);
                        return;
                    }
                }
                self.heartbeat_elapsed += 1;
                if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
                    self.heartbeat_elapsed = 0;
                    self.broadcast_heartbeat();
                }
            }
            Role::Follower | Role::PreCandidate | Role::Candidate => {
                self.election_elapsed += 1;
                if self.election_elapsed >= self.randomized_election_ticks {
                    if self.config.pre_vote {
                        self.pre_campaign();
                    } else {
                        self.campaign();
                    }
                }
            }
        }
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let base = self.config.election_ticks;
        self.randomized_election_ticks = base + self.rng.gen_range(0..base);
    }

    // ---------------------------------------------------------------- roles

    fn become_follower(&mut self, term: Term, leader_id: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        self.role = Role::Follower;
        self.leader_id = leader_id;
        self.progress.clear();
        self.votes.clear();
        self.pending_replication = false;
        self.reset_election_timer();
    }

    /// Thesis §9.6: ask for pre-votes for term + 1 without changing our own term.
    fn pre_campaign(&mut self) {
        self.role = Role::PreCandidate;
        self.leader_id = None;
        self.votes.clear();
        self.votes.insert(self.config.id, true);
        self.reset_election_timer();
        if self.votes.len() >= self.quorum() {
            self.campaign();
            return;
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        let term = Term(self.term.0 + 1);
        for to in self.others() {
            self.msgs.push(Message {
                from: self.config.id,
                to,
                term,
                body: MessageBody::PreVote {
                    last_log_index,
                    last_log_term,
                },
            });
        }
    }

    /// §5.2: a follower that hears nothing for an election timeout starts an election.
    fn campaign(&mut self) {
        self.term = Term(self.term.0 + 1);
        self.vote = Some(self.config.id);
        self.role = Role::Candidate;
        self.leader_id = None;
        self.votes.clear();
        self.votes.insert(self.config.id, true);
        self.reset_election_timer();
        if self.votes.len() >= self.quorum() {
            self.become_leader();
            return;
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for to in self.others() {
            self.send(
                to,
                MessageBody::RequestVote {
                    last_log_index,
                    last_log_term,
                },
            );
        }
    }

    /// Whether a majority (this node included) was heard from since the last check; resets
    /// the marks for the next period.
    fn quorum_active(&mut self) -> bool {
        let mut active = 1;
        for pr in self.progress.values_mut() {
            if std::mem::replace(&mut pr.recent_active, false) {
                active += 1;
            }
        }
        active >= self.quorum()
    }

    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader_id = Some(self.config.id);
        self.votes.clear();
        let next = self.log.last_index().next();
        self.progress = self
            .others()
            .into_iter()
            .map(|id| (id, Progress::new(next)))
            .collect();
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        // §5.2: announce leadership at once; the probes double as heartbeats.
        self.broadcast_heartbeat();
    }

    // ---------------------------------------------------------------- proposals

    /// Appends `command` to the leader's log. It is sent to the followers with the next
    /// [`Ready`], together with anything else proposed meanwhile.
    pub fn propose(&mut self, command: Vec<u8>) -> Result<(LogIndex, Term), NotLeader> {
        if self.role != Role::Leader {
            return Err(NotLeader {
                leader_hint: self.leader_id,
            });
        }
        let index = self.log.append(self.term, command);
        self.pending_replication = true;
        // A single-node cluster commits on its own (after persisting, see `Ready`).
        self.maybe_commit();
        Ok((index, self.term))
    }

    // ---------------------------------------------------------------- messages

    /// Handles one message from a peer.
    pub fn step(&mut self, msg: Message) {
        if msg.to != self.config.id || !self.config.peers.contains(&msg.from) {
            return;
        }
        // A pre-vote request or grant carries a prospective term: it must not move ours.
        if let MessageBody::PreVote { .. } | MessageBody::PreVoteResponse { vote_granted: true } =
            msg.body
        {
            self.step_pre_vote(msg);
            return;
        }
        // §5.1: a higher term makes us a follower of that term.
        if msg.term > self.term {
            let leader = match msg.body {
                MessageBody::AppendEntries { .. } => Some(msg.from),
                _ => None,
            };
            self.become_follower(msg.term, leader);
        }
        if msg.term < self.term {
            // §5.1: reject stale requests, telling the sender our term so it steps down.
            self.reject_stale(&msg);
            return;
        }
        match msg.body {
            MessageBody::RequestVote {
                last_log_index,
                last_log_term,
            } => self.handle_request_vote(msg.from, last_log_index, last_log_term),
            MessageBody::PreVote { .. } => unreachable!("handled by step_pre_vote"),
            MessageBody::PreVoteResponse { vote_granted } => {
                // A refusal in our own term (a higher one made us a follower above).
                if self.role == Role::PreCandidate {
                    self.tally(msg.from, vote_granted);
                }
            }
            MessageBody::RequestVoteResponse { vote_granted } => {
                self.handle_vote_response(msg.from, vote_granted)
            }
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => self.handle_append_entries(
                msg.from,
                prev_log_index,
                prev_log_term,
                &entries,
                leader_commit,
            ),
            MessageBody::AppendEntriesResponse {
                success,
                index,
                conflict_term,
                conflict_index,
            } => {
                self.handle_append_response(msg.from, success, index, conflict_term, conflict_index)
            }
        }
    }

    fn step_pre_vote(&mut self, msg: Message) {
        match msg.body {
            MessageBody::PreVote {
                last_log_index,
                last_log_term,
            } => {
                // Refuse while we still hear from a leader (its lease), so a node that merely
                // lost touch with the leader cannot depose it.
                let in_lease =
                    self.leader_id.is_some() && self.election_elapsed < self.config.election_ticks;
                let granted = msg.term > self.term
                    && !in_lease
                    && self.log.is_up_to_date(last_log_index, last_log_term);
                let term = if granted { msg.term } else { self.term };
                self.msgs.push(Message {
                    from: self.config.id,
                    to: msg.from,
                    term,
                    body: MessageBody::PreVoteResponse {
                        vote_granted: granted,
                    },
                });
            }
            MessageBody::PreVoteResponse { vote_granted: true } => {
                if self.role == Role::PreCandidate && msg.term == Term(self.term.0 + 1) {
                    self.tally(msg.from, true);
                }
            }
            _ => unreachable!("not a pre-vote message"),
        }
    }

    fn reject_stale(&mut self, msg: &Message) {
        match msg.body {
            MessageBody::RequestVote { .. } => self.send(
                msg.from,
                MessageBody::RequestVoteResponse {
                    vote_granted: false,
                },
            ),
            MessageBody::PreVote { .. } => self.send(
                msg.from,
                MessageBody::PreVoteResponse {
                    vote_granted: false,
                },
            ),
            MessageBody::AppendEntries { prev_log_index, .. } => self.send(
                msg.from,
                MessageBody::AppendEntriesResponse {
                    success: false,
                    index: prev_log_index,
                    conflict_term: None,
                    conflict_index: LogIndex(0),
                },
            ),
            _ => {}
        }
    }

    /// §5.2, §5.4.1: grant at most one vote per term, and only to a candidate whose log is at
    /// least as up to date as ours.
    fn handle_request_vote(&mut self, from: NodeId, last_log_index: LogIndex, last_log_term: Term) {
        let can_vote = self.vote.is_none_or(|v| v == from);
        let granted = can_vote && self.log.is_up_to_date(last_log_index, last_log_term);
        if granted {
            self.vote = Some(from);
            // Figure 2: granting a vote resets the election timer.
            self.reset_election_timer();
        }
        self.send(
            from,
            MessageBody::RequestVoteResponse {
                vote_granted: granted,
            },
        );
    }

    fn handle_vote_response(&mut self, from: NodeId, granted: bool) {
        if self.role == Role::Candidate {
            self.tally(from, granted);
        }
    }

    /// Counts a (pre-)vote; a majority moves a pre-candidate to candidate and a candidate to
    /// leader, a majority of refusals ends the attempt.
    fn tally(&mut self, from: NodeId, granted: bool) {
        self.votes.insert(from, granted);
        let yes = self.votes.values().filter(|&&g| g).count();
        let no = self.votes.len() - yes;
        if yes >= self.quorum() {
            match self.role {
                Role::PreCandidate => self.campaign(),
                Role::Candidate => self.become_leader(),
                _ => {}
            }
        } else if no >= self.quorum() {
            // Lost this election; wait for the timer (or a leader) as a follower.
            self.become_follower(self.term, None);
        }
    }

    /// §5.3: the consistency check, then merge, then advance the commit index.
    fn handle_append_entries(
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

    fn handle_append_response(
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
    fn maybe_commit(&mut self) {
        let mut matched: Vec<LogIndex> = self.progress.values().map(|p| p.match_index).collect();
        matched.push(self.log.last_index());
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matched[self.quorum() - 1];
        if candidate > self.log.committed() && self.log.term_at(candidate) == Some(self.term) {
            self.log.commit_to(candidate);
        }
    }

    // ---------------------------------------------------------------- replication

    /// Sends `to` whatever its progress allows: one probe, or as many streamed messages as
    /// the in-flight window takes.
    fn send_append(&mut self, to: NodeId) {
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
    fn send_entries(&mut self, to_node: NodeId, from: LogIndex, to: LogIndex) -> LogIndex {
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
    fn broadcast_heartbeat(&mut self) {
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

    fn send(&mut self, to: NodeId, body: MessageBody) {
        self.msgs.push(Message {
            from: self.config.id,
            to,
            term: self.term,
            body,
        });
    }

    // ---------------------------------------------------------------- output

    /// Whether [`Raft::ready`] has anything to hand out.
    pub fn has_ready(&self) -> bool {
        !self.msgs.is_empty()
            || self.hard_state() != self.stable_hard_state
            || !self.log.unstable().is_empty()
            || self.log.applied() < self.log.committed()
            || (self.pending_replication && self.role == Role::Leader)
    }

    /// Takes the pending output. See [`Ready`] for the order in which to carry it out; call
    /// [`Raft::advance`] afterwards. Between the two calls only `propose` may be called.
    pub fn ready(&mut self) -> Ready {
        if self.pending_replication && self.role == Role::Leader {
            for to in self.others() {
                self.send_append(to);
            }
        }
        self.pending_replication = false;
        let hs = self.hard_state();
        Ready {
            hard_state: (hs != self.stable_hard_state).then_some(hs),
            entries: self.log.unstable().to_vec(),
            messages: std::mem::take(&mut self.msgs),
            committed_entries: self.log.next_committed().to_vec(),
        }
    }

    /// Records that `rd` was carried out.
    pub fn advance(&mut self, rd: &Ready) {
        if let Some(hs) = rd.hard_state {
            self.stable_hard_state = hs;
        }
        if let Some(last) = rd.entries.last() {
            self.log.stable_to(last.index, last.term);
        }
        if let Some(last) = rd.committed_entries.last() {
            self.log.applied_to(last.index);
        }
    }

    /// Asserts the invariants declared on the fields; tests call it after every step.
    pub fn check_invariants(&self) {
        self.log.check_invariants();
        for pr in self.progress.values() {
            pr.check_invariants();
            assert!(pr.match_index <= self.log.last_index());
        }
        if self.role == Role::Leader {
            assert_eq!(self.vote, Some(self.config.id), "a leader voted for itself");
        }
    }
}
