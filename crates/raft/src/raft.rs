//! The consensus core: a plain state machine driven by `tick`, `step` and `propose`, whose
//! output is a [`Ready`]. It has no clock (time is a count of ticks), no I/O and no global
//! randomness (election timeouts come from a generator seeded through [`Config::seed`]).
//!
//! Section numbers refer to the extended Raft paper (Ongaro & Ousterhout, 2014).

use crate::log::RaftLog;
use crate::message::{Message, MessageBody};
use crate::progress::Progress;
use crate::ready::{ReadState, Ready, SnapshotWrite};
use crate::types::{Entry, HardState, LogIndex, NodeId, SnapshotMeta, Term};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

mod election;
mod replication;

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
    /// A new leader appends an empty entry of its term at once (thesis §6.4), so that
    /// everything before it commits without waiting for a client's request. The course's Raft
    /// suites turn it off: their index checks assume none.
    pub noop_on_election: bool,
    /// Keep the leader's lease (thesis §6.4.1): a node refuses votes and pre-votes for a
    /// higher term while it has heard from a leader within `election_ticks`, and in its
    /// first `election_ticks` after starting (it may have heard from one just before a
    /// crash). A leader then knows that no other can be elected for a while after a majority
    /// answered it, and may serve reads in that time without a round of heartbeats (the
    /// driver's lease, `NodeConfig::lease`). Every node of the cluster must set it alike.
    pub lease_reads: bool,
    /// Largest chunk of a snapshot in one InstallSnapshot message (§7).
    pub max_snapshot_chunk: u64,
    /// At most this many unacknowledged snapshot chunks per follower: enough to keep a LAN
    /// busy while the follower fsyncs each, without queueing a large snapshot in memory.
    pub max_inflight_chunks: usize,
    /// Seeds the election-timeout generator.
    pub seed: u64,
    /// A deliberate bug for the tests that must catch it; `RaftFault::None` otherwise.
    #[doc(hidden)]
    pub fault: RaftFault,
}

/// Deliberate bugs ("mutants"), each breaking one rule of the paper. The simulated suites run
/// with each of them and must fail at the check meant for that bug (`docs/TESTING.md`).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaftFault {
    None,
    /// §5.4.2 broken: a leader commits an entry of an earlier term once a majority stores it
    /// (the scenario of Figure 8).
    CommitEarlierTerm,
    /// §5.4.1 broken: (pre-)votes are granted without checking that the candidate's log is at
    /// least as up to date.
    VoteWithoutLogCheck,
    /// Thesis §3.8 broken: the driver sends a `Ready`'s messages (votes, acknowledgements)
    /// before persisting the state they vouch for.
    SendBeforePersist,
    /// §5.3 broken: a follower replaces everything after `prev_log_index` with the entries of
    /// an AppendEntries, even where its log already matches (only a conflict may truncate).
    TruncateOnMatch,
    /// §5.1 broken: a leader that sees a higher term adopts it but goes on leading.
    LeaderIgnoresHigherTerm,
    /// Liveness broken (thesis §9.6): a node that wins a pre-vote never starts the election.
    PreVoteNeverElects,
    /// Thesis §6.4 broken: a leader confirms a read at once, without hearing from a majority
    /// that it still leads, so a deposed leader that does not know it yet serves stale reads.
    ReadWithoutQuorum,
    /// Thesis §6.4.1 broken: the leader's read lease lasts ten election timeouts, long after
    /// the others may have elected a new leader (`NodeConfig::lease`).
    LeaseOutlivesElection,
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
            noop_on_election: true,
            lease_reads: false,
            max_snapshot_chunk: 1 << 20,
            max_inflight_chunks: 4,
            seed,
            fault: RaftFault::None,
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
    /// Leader only: the commit index it inherited when elected. Invariant (§5.4.2): beyond it,
    /// a leader commits only up to an entry of its own term.
    commit_at_election: LogIndex,
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
    /// Follower: the snapshot being received, the term of the leader sending it, and how many
    /// bytes of it are accepted (handed out in a `Ready` to persist). Two leaders' snapshots
    /// of one index hold the same state but need not be the same bytes, so a transfer is one
    /// leader's: chunks of another term start over.
    incoming_snapshot: Option<(SnapshotMeta, Term, u64)>,
    /// Received snapshot chunks and installations, for the next `Ready`.
    snapshot_writes: Vec<SnapshotWrite>,
    /// The last received snapshot installed, for the next `Ready` to hand to the service.
    pending_install: Option<SnapshotMeta>,
    /// The hard state as of the last `advance`: what storage holds.
    stable_hard_state: HardState,
    /// Leader: the last read round started (thesis §6.4). Every AppendEntries carries it and
    /// every answer echoes it (`Progress::read_round`). Never reset, so a round number names
    /// one moment of this node's life; answers of earlier terms are ignored anyway.
    read_round: u64,
    /// Leader: the tick the last read round started at. It starts with only as many
    /// followers as make a majority, and is asked of the others a tick later if need be.
    read_round_started: u64,
    /// Leader: reads waiting for a majority to echo their round, `(round, id)` in round order.
    /// Their round is `read_round + 1` when asked for: the next `Ready` starts it.
    pending_reads: VecDeque<(u64, u64)>,
    /// Outcomes of reads, for the next `Ready`.
    read_states: Vec<ReadState>,
    rng: ChaCha8Rng,
}

impl Raft {
    /// A node starting from what storage holds: its hard state, its snapshot if it has one,
    /// and the entries after it (all empty for a new node).
    pub fn new(
        config: Config,
        hard_state: HardState,
        snapshot: Option<SnapshotMeta>,
        entries: Vec<Entry>,
    ) -> Raft {
        assert!(
            config.peers.contains(&config.id),
            "peers must include this node"
        );
        assert!(config.election_ticks > config.heartbeat_ticks);
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut raft = Raft {
            term: hard_state.term,
            vote: hard_state.vote,
            log: RaftLog::restore(snapshot, entries),
            role: Role::Follower,
            leader_id: None,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            commit_at_election: LogIndex(0),
            election_elapsed: 0,
            randomized_election_ticks: config.election_ticks,
            heartbeat_elapsed: 0,
            now: 0,
            pending_replication: false,
            msgs: Vec::new(),
            incoming_snapshot: None,
            snapshot_writes: Vec::new(),
            pending_install: None,
            stable_hard_state: hard_state,
            read_round: 0,
            read_round_started: 0,
            pending_reads: VecDeque::new(),
            read_states: Vec::new(),
            rng,
            config,
        };
        raft.reset_election_timer();
        raft
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn config(&self) -> &Config {
        &self.config
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

    pub(super) fn quorum(&self) -> usize {
        self.config.peers.len() / 2 + 1
    }

    pub(super) fn others(&self) -> Vec<NodeId> {
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
                } else {
                    self.widen_read_round();
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

    /// Whether this node still honours a leader's lease: it heard from a leader (or is one)
    /// less than `election_ticks` ago, or, with `Config::lease_reads`, started less than that
    /// ago. Such a node grants no pre-vote, and with `lease_reads` no vote, for a higher term.
    pub(super) fn in_lease(&self) -> bool {
        let recently_started = self.config.lease_reads && self.now < self.config.election_ticks;
        self.election_elapsed < self.config.election_ticks
            && (self.leader_id.is_some() || recently_started)
    }

    pub(super) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let base = self.config.election_ticks;
        self.randomized_election_ticks = base + self.rng.gen_range(0..base);
    }

    // ---------------------------------------------------------------- roles

    pub(super) fn become_follower(&mut self, term: Term, leader_id: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        self.role = Role::Follower;
        self.leader_id = leader_id;
        self.progress.clear();
        self.votes.clear();
        self.pending_replication = false;
        // Reads waiting for a leadership check fail: this node no longer leads their term.
        let failed = self.pending_reads.drain(..).map(|(_, id)| ReadState {
            id,
            confirmed: false,
        });
        self.read_states.extend(failed);
        self.reset_election_timer();
    }

    // ---------------------------------------------------------------- proposals

    /// Appends `command` to the leader's log. It is sent to the followers with the next
    /// [`Ready`], together with anything else proposed meanwhile.
    ///
    /// Commands must not be empty: an empty entry is a leader's no-op.
    pub fn propose(&mut self, command: Vec<u8>) -> Result<(LogIndex, Term), NotLeader> {
        assert!(
            !command.is_empty(),
            "an empty command would read as a no-op"
        );
        if self.role != Role::Leader {
            return Err(NotLeader {
                leader_hint: self.leader_id,
            });
        }
        let index = self.log.append(self.term, command);
        self.pending_replication = true;
        Ok((index, self.term))
    }

    // ---------------------------------------------------------------- reads

    /// Thesis §6.4: a linearizable read without a log entry. Returns the index the service
    /// must read at: the state after applying exactly the log up to it (once committed), with
    /// nothing later, is what the read sees. That is the leader's last index, so that the
    /// read also sees every command this leader accepted before it (a client's own pipelined
    /// writes included). A later `Ready` says whether the read may be answered
    /// ([`ReadState`] `id`): once a majority has answered a heartbeat sent after the read was
    /// asked for, this node still led its term after that moment, so no other leader had
    /// committed anything it lacks. Every read waiting when a `Ready` is taken shares one
    /// round of heartbeats.
    ///
    /// The leader needs no entry of its own term committed first, as it would reading at its
    /// commit index: the index returned is at least its term's first entry, whose commitment
    /// brings everything committed before. But it needs one in its log, or nothing would
    /// ever commit that index (§5.4.2) unless a write came: without the no-op on election
    /// (`Config::noop_on_election`), the first read of a term appends it.
    pub fn read_index(&mut self, id: u64) -> Result<LogIndex, NotLeader> {
        let index = self.read_index_in_lease()?;
        if self.quorum() == 1 || self.config.fault == RaftFault::ReadWithoutQuorum {
            self.read_states.push(ReadState {
                id,
                confirmed: true,
            });
        } else {
            self.pending_reads.push_back((self.read_round + 1, id));
        }
        Ok(index)
    }

    /// The index to read at, as [`Raft::read_index`] names it, for a read that needs no
    /// round of its own: the caller knows this node still leads (its lease, thesis §6.4.1,
    /// which needs `Config::lease_reads` on every node).
    pub fn read_index_in_lease(&mut self) -> Result<LogIndex, NotLeader> {
        if self.role != Role::Leader {
            return Err(NotLeader {
                leader_hint: self.leader_id,
            });
        }
        if self.log.last_term() != self.term {
            self.log.append(self.term, Vec::new());
            self.pending_replication = true;
        }
        Ok(self.log.last_index())
    }

    /// The last read round started (0 before any).
    pub fn read_round(&self) -> u64 {
        self.read_round
    }

    /// Leader: the newest read round a majority (this node included) has echoed. Every
    /// follower that echoed it got a message sent after the round started, and reset its
    /// election timer then. 0 on other nodes.
    pub fn confirmed_read_round(&self) -> u64 {
        if self.role != Role::Leader {
            return 0;
        }
        let mut echoed: Vec<u64> = self.progress.values().map(|p| p.read_round).collect();
        echoed.push(self.read_round);
        echoed.sort_unstable_by(|a, b| b.cmp(a));
        echoed[self.quorum() - 1]
    }

    /// A follower's answer echoed `round`.
    fn note_read_round(&mut self, from: NodeId, round: u64) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(pr) = self.progress.get_mut(&from) {
            pr.read_round = pr.read_round.max(round);
            self.confirm_reads();
        }
    }

    /// Confirms the reads whose round a majority has echoed (this node echoes its own).
    fn confirm_reads(&mut self) {
        if self.pending_reads.is_empty() {
            return;
        }
        let confirmed = self.confirmed_read_round();
        while let Some(&(round, id)) = self.pending_reads.front() {
            if round > confirmed {
                break;
            }
            self.pending_reads.pop_front();
            self.read_states.push(ReadState {
                id,
                confirmed: true,
            });
        }
    }

    /// Whether reads wait for a round not started yet (only a leader has any).
    fn read_round_wanted(&self) -> bool {
        self.pending_reads
            .back()
            .is_some_and(|&(round, _)| round > self.read_round)
    }

    /// Sends the new read round, as heartbeats, to just enough followers that with those
    /// already sent an AppendEntries of it in this `Ready` they make a majority: a round
    /// needs no more echoes than that, and every further message costs both ends a wake-up.
    /// Those asked are the followers that echoed the newest rounds, the likeliest to answer
    /// soon. If one does not answer, [`Raft::widen_read_round`] asks the rest a tick later.
    fn send_read_heartbeats(&mut self) {
        let round = self.read_round;
        let (carried, mut rest): (Vec<NodeId>, Vec<NodeId>) =
            self.others().into_iter().partition(|&to| {
                self.msgs.iter().any(|m| {
                    m.to == to
                        && matches!(m.body, MessageBody::AppendEntries { read_round, .. } if read_round == round)
                })
            });
        let asked = (self.quorum() - 1)
            .saturating_sub(carried.len())
            .min(rest.len());
        rest.sort_by_key(|to| (std::cmp::Reverse(self.progress[to].read_round), *to));
        for &to in &rest[..asked] {
            self.send_read_heartbeat(to);
        }
        self.read_round_started = self.now;
    }

    /// The first tick after a read round started, if a majority has not echoed it yet, asks
    /// it again of every follower that has not: those first asked may be down or cut off.
    /// (A tick that broadcasts heartbeats instead carries the round to everyone anyway.)
    fn widen_read_round(&mut self) {
        if self.now != self.read_round_started + 1 || self.confirmed_read_round() >= self.read_round
        {
            return;
        }
        let round = self.read_round;
        for to in self.others() {
            if self.progress[&to].read_round < round {
                self.send_read_heartbeat(to);
            }
        }
    }

    fn send_read_heartbeat(&mut self, to: NodeId) {
        let pr = &self.progress[&to];
        let prev = pr.match_index.max(self.log.snapshot().index);
        self.send_heartbeat(to, prev);
    }

    // ---------------------------------------------------------------- snapshots

    /// §7: the service's snapshot through `meta.index` (an index it has applied) is durable;
    /// the entries it covers are dropped. Followers that need them get the snapshot instead.
    pub fn compact(&mut self, meta: SnapshotMeta) {
        self.log.compact(meta);
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
        // Thesis §6.4.1: while a leader's lease may run, a vote for a higher term is not even
        // looked at (before the term moves and the leader is forgotten).
        if self.config.lease_reads
            && msg.term > self.term
            && matches!(msg.body, MessageBody::RequestVote { .. })
            && self.in_lease()
        {
            return;
        }
        // §5.1: a higher term makes us a follower of that term.
        if msg.term > self.term
            && self.role == Role::Leader
            && self.config.fault == RaftFault::LeaderIgnoresHigherTerm
        {
            self.term = msg.term;
            self.vote = None;
        } else if msg.term > self.term {
            let leader = match msg.body {
                MessageBody::AppendEntries { .. } | MessageBody::InstallSnapshot { .. } => {
                    Some(msg.from)
                }
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
                read_round,
            } => self.handle_append_entries(
                msg.from,
                (prev_log_index, prev_log_term),
                &entries,
                leader_commit,
                read_round,
            ),
            MessageBody::AppendEntriesResponse {
                success,
                index,
                conflict_term,
                conflict_index,
                read_round,
            } => {
                self.note_read_round(msg.from, read_round);
                self.handle_append_response(msg.from, success, index, conflict_term, conflict_index)
            }
            MessageBody::InstallSnapshot {
                meta, offset, data, ..
            } => self.handle_install_snapshot(msg.from, meta, offset, data),
            MessageBody::InstallSnapshotResponse {
                index,
                received,
                accepted,
                done,
            } => self.handle_snapshot_response(msg.from, index, received, accepted, done),
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
            MessageBody::AppendEntries {
                prev_log_index,
                read_round,
                ..
            } => self.send(
                msg.from,
                MessageBody::AppendEntriesResponse {
                    success: false,
                    index: prev_log_index,
                    conflict_term: None,
                    conflict_index: LogIndex(0),
                    read_round,
                },
            ),
            MessageBody::InstallSnapshot { meta, .. } => self.send(
                msg.from,
                MessageBody::InstallSnapshotResponse {
                    index: meta.index,
                    received: 0,
                    accepted: false,
                    done: false,
                },
            ),
            _ => {}
        }
    }

    pub(super) fn send(&mut self, to: NodeId, body: MessageBody) {
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
            || !self.read_states.is_empty()
            || self.read_round_wanted()
            || !self.snapshot_writes.is_empty()
            || self.pending_install.is_some()
            || self.hard_state() != self.stable_hard_state
            || !self.log.unstable().is_empty()
            || self.log.applied() < self.log.committed()
            || (self.pending_replication && self.role == Role::Leader)
    }

    /// Takes the pending output. See [`Ready`] for the order in which to carry it out; call
    /// [`Raft::advance`] afterwards. Between the two calls only `propose` may be called.
    pub fn ready(&mut self) -> Ready {
        // A new read round starts before new entries go out, so that they carry it too.
        let new_round = self.read_round_wanted();
        if new_round {
            self.read_round += 1;
        }
        if self.pending_replication && self.role == Role::Leader {
            for to in self.others() {
                self.send_append(to);
            }
        }
        self.pending_replication = false;
        if new_round {
            self.send_read_heartbeats();
        }
        let hs = self.hard_state();
        Ready {
            hard_state: (hs != self.stable_hard_state).then_some(hs),
            entries: self.log.unstable().to_vec(),
            snapshot_writes: std::mem::take(&mut self.snapshot_writes),
            install_snapshot: self.pending_install.take(),
            messages: std::mem::take(&mut self.msgs),
            committed_entries: self.log.next_committed().to_vec(),
            read_states: std::mem::take(&mut self.read_states),
        }
    }

    /// Records that `rd` was carried out.
    pub fn advance(&mut self, rd: &Ready) {
        if let Some(hs) = rd.hard_state {
            self.stable_hard_state = hs;
        }
        if let Some(last) = rd.entries.last() {
            self.log.stable_to(last.index, last.term);
            // The leader's own copy now counts toward a majority (a single node's alone).
            if self.role == Role::Leader {
                self.maybe_commit();
            }
        }
        if let Some(last) = rd.committed_entries.last() {
            self.log.applied_to(last.index);
        }
    }

    /// Asserts the invariants declared on the fields. Cheap: unit tests call it after every
    /// step, and the simulator's nodes after every input (`NodeConfig::check_invariants`).
    pub fn check_invariants(&self) {
        self.log.check_invariants();
        for pr in self.progress.values() {
            pr.check_invariants();
            assert!(pr.match_index <= self.log.last_index());
        }
        if self.role == Role::Leader {
            assert_eq!(
                self.vote,
                Some(self.config.id),
                "invariant violated (§5.2): node {} leads term {} without having voted for itself \
                 in it",
                self.config.id,
                self.term
            );
            let committed = self.log.committed();
            assert!(
                committed <= self.commit_at_election
                    || self.log.term_at(committed) == Some(self.term),
                "invariant violated (§5.4.2): leader {} of term {} committed up to {} (term {:?}), \
                 past what it inherited ({}), without an entry of its own term",
                self.config.id,
                self.term,
                committed,
                self.log.term_at(committed),
                self.commit_at_election
            );
        }
    }
}
