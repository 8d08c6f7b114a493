//! Tests of the consensus core against the rules of the extended Raft paper (Ongaro &
//! Ousterhout, 2014), one test per rule, in the manner of etcd's `raft_paper_test.go`.
//!
//! Every test drives cores by hand: it ticks them, steps messages into them and asserts on
//! what comes out of `ready()` (messages, hard state, entries to persist, committed entries).
//! Nothing reads a clock, and every election timeout comes from a fixed seed.

use crate::message::{Message, MessageBody};
use crate::progress::ProgressMode;
use crate::raft::{Config, Raft, Role};
use crate::ready::Ready;
use crate::types::{Entry, HardState, LogIndex, NodeId, Term};
use std::collections::{BTreeMap, BTreeSet};

mod reads;
mod snapshot;

/// The default timing: a 10 ms tick, elections after 30–60 ticks, heartbeats every 10.
const ELECTION: u64 = 30;
const HEARTBEAT: u64 = 10;

// ------------------------------------------------------------------------------ fixtures

fn config(id: NodeId, n: u64) -> Config {
    seeded(id, n, 100 + id)
}

/// The defaults, with the thesis extensions (pre-vote and check-quorum) on.
fn extended(id: NodeId, n: u64) -> Config {
    let mut config = Config::new(id, (1..=n).collect(), 100 + id);
    assert!(config.pre_vote && config.check_quorum);
    // The no-op entry at election has tests of its own; the others count entries without it.
    config.noop_on_election = false;
    config
}

/// The basic algorithm of the paper: pre-vote and check-quorum (thesis extensions, tested at
/// the end) are off.
fn seeded(id: NodeId, n: u64, seed: u64) -> Config {
    let mut config = Config::new(id, (1..=n).collect(), seed);
    assert_eq!(
        (config.election_ticks, config.heartbeat_ticks),
        (ELECTION, HEARTBEAT)
    );
    config.pre_vote = false;
    config.check_quorum = false;
    config.noop_on_election = false;
    config
}

/// Node `id` of a cluster `1..=n` with nothing in storage.
fn new_node(id: NodeId, n: u64) -> Raft {
    restore(id, n, 0, &[])
}

/// Node `id` of a cluster `1..=n` restarted at `term` (no vote) with one entry per element
/// of `terms`, from index 1.
fn restore(id: NodeId, n: u64, term: u64, terms: &[u64]) -> Raft {
    let hard_state = HardState {
        term: Term(term),
        vote: None,
    };
    let r = Raft::new(config(id, n), hard_state, None, log_of(terms));
    r.check_invariants();
    r
}

/// An entry whose command names its place, so that equal logs hold equal commands.
fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        command: format!("{index}@{term}").into_bytes(),
    }
}

/// Entries with the given terms, from index `first`.
fn entries_from(first: u64, terms: &[u64]) -> Vec<Entry> {
    (first..).zip(terms).map(|(i, &t)| entry(i, t)).collect()
}

fn log_of(terms: &[u64]) -> Vec<Entry> {
    entries_from(1, terms)
}

/// The whole log of `r`.
fn entries(r: &Raft) -> Vec<Entry> {
    r.log().slice(LogIndex(1), r.log().last_index(), usize::MAX)
}

fn terms(r: &Raft) -> Vec<u64> {
    entries(r).iter().map(|e| e.term.0).collect()
}

// ------------------------------------------------------------------------------ driving

fn step(r: &mut Raft, m: Message) {
    r.step(m);
    r.check_invariants();
}

fn tick(r: &mut Raft, ticks: u64) {
    for _ in 0..ticks {
        r.tick();
        r.check_invariants();
    }
}

/// Takes the pending `Ready` and acknowledges it as carried out.
fn take(r: &mut Raft) -> Ready {
    let rd = r.ready();
    r.advance(&rd);
    r.check_invariants();
    rd
}

fn drain(r: &mut Raft) -> Vec<Message> {
    take(r).messages
}

/// Proposes `command` on the leader `r`; returns the entry it appended.
fn propose(r: &mut Raft, command: &str) -> Entry {
    let (index, term) = r.propose(command.as_bytes().to_vec()).expect("a leader");
    r.check_invariants();
    Entry {
        term,
        index,
        command: command.as_bytes().to_vec(),
    }
}

/// Ticks until `done` holds, at most 2 * election_ticks; returns how many ticks that took.
fn tick_until(r: &mut Raft, done: impl Fn(&Raft) -> bool) -> u64 {
    for n in 1..=2 * ELECTION {
        tick(r, 1);
        if done(r) {
            return n;
        }
    }
    panic!("nothing happened within 2 * election_ticks");
}

/// Ticks until `r` starts an election (its term grows); returns how many ticks that took.
fn tick_until_campaign(r: &mut Raft) -> u64 {
    let term = r.term();
    tick_until(r, |r| r.term() > term)
}

/// Makes `r` a candidate, dropping its RequestVotes.
fn campaign(r: &mut Raft) {
    tick_until_campaign(r);
    assert_eq!(r.role(), Role::Candidate);
    drain(r);
}

/// Makes `r` (a node of the cluster `1..=n`) leader with votes from the lowest other ids.
/// Its first heartbeats are left in its next `Ready`.
fn elect(r: &mut Raft, n: u64) {
    campaign(r);
    let me = r.id();
    for from in (1..=n).filter(|&p| p != me) {
        if r.role() == Role::Leader {
            break;
        }
        let term = r.term().0;
        step(r, vote_resp(from, me, term, true));
    }
    assert_eq!(r.role(), Role::Leader);
}

/// Node 1 as leader of `1..=n` with every follower acknowledging its first heartbeat, so
/// that all of them are in Replicate mode.
fn leader_replicating(n: u64) -> Raft {
    let mut r = new_node(1, n);
    elect(&mut r, n);
    for m in drain(&mut r) {
        step(&mut r, accept(&m));
    }
    assert!(drain(&mut r).is_empty());
    r
}

fn node_in_role(role: Role, term: u64) -> Raft {
    let mut r = restore(1, 3, term, &[]);
    match role {
        Role::Follower => {}
        Role::Candidate => campaign(&mut r),
        Role::Leader => {
            elect(&mut r, 3);
            drain(&mut r);
        }
        Role::PreCandidate => panic!("the basic algorithm has no pre-candidates"),
    }
    assert_eq!(r.role(), role);
    r
}

// ------------------------------------------------------------------------------ messages

fn msg(from: NodeId, to: NodeId, term: u64, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term: Term(term),
        body,
    }
}

fn vote_req(from: NodeId, to: NodeId, term: u64, last_index: u64, last_term: u64) -> Message {
    let body = MessageBody::RequestVote {
        last_log_index: LogIndex(last_index),
        last_log_term: Term(last_term),
    };
    msg(from, to, term, body)
}

fn vote_resp(from: NodeId, to: NodeId, term: u64, granted: bool) -> Message {
    let body = MessageBody::RequestVoteResponse {
        vote_granted: granted,
    };
    msg(from, to, term, body)
}

fn pre_vote(from: NodeId, to: NodeId, term: u64, last_index: u64, last_term: u64) -> Message {
    let body = MessageBody::PreVote {
        last_log_index: LogIndex(last_index),
        last_log_term: Term(last_term),
    };
    msg(from, to, term, body)
}

fn pre_vote_resp(from: NodeId, to: NodeId, term: u64, granted: bool) -> Message {
    let body = MessageBody::PreVoteResponse {
        vote_granted: granted,
    };
    msg(from, to, term, body)
}

/// An AppendEntries whose previous entry is `prev` = (index, term).
fn append(
    from: NodeId,
    to: NodeId,
    term: u64,
    prev: (u64, u64),
    entries: Vec<Entry>,
    commit: u64,
) -> Message {
    let body = MessageBody::AppendEntries {
        prev_log_index: LogIndex(prev.0),
        prev_log_term: Term(prev.1),
        entries,
        leader_commit: LogIndex(commit),
        read_round: 0,
    };
    msg(from, to, term, body)
}

fn append_ok(from: NodeId, to: NodeId, term: u64, index: u64) -> Message {
    append_resp(from, to, term, true, index, None, 0)
}

/// An AppendEntriesResponse: `index` is the last index acknowledged on success, the rejected
/// `prev_log_index` on failure (with the conflict hints).
fn append_resp(
    from: NodeId,
    to: NodeId,
    term: u64,
    success: bool,
    index: u64,
    conflict_term: Option<u64>,
    conflict_index: u64,
) -> Message {
    let body = MessageBody::AppendEntriesResponse {
        success,
        index: LogIndex(index),
        conflict_term: conflict_term.map(Term),
        conflict_index: LogIndex(conflict_index),
        read_round: 0,
    };
    msg(from, to, term, body)
}

/// The success answer a follower gives to the AppendEntries `m`, echoing its read round.
fn accept(m: &Message) -> Message {
    let MessageBody::AppendEntries {
        prev_log_index,
        entries,
        read_round,
        ..
    } = &m.body
    else {
        panic!("not an AppendEntries: {m:?}");
    };
    let mut answer = append_ok(
        m.to,
        m.from,
        m.term.0,
        prev_log_index.0 + entries.len() as u64,
    );
    if let MessageBody::AppendEntriesResponse { read_round: r, .. } = &mut answer.body {
        *r = *read_round;
    }
    answer
}

fn to(msgs: &[Message], id: NodeId) -> Vec<Message> {
    msgs.iter().filter(|m| m.to == id).cloned().collect()
}

fn is_append(m: &Message) -> bool {
    matches!(m.body, MessageBody::AppendEntries { .. })
}

// ------------------------------------------------------------------------------ network

/// Cores joined by a lossless network; messages to nodes outside it are dropped.
struct Net {
    nodes: BTreeMap<NodeId, Raft>,
    /// Every message delivered, in order.
    delivered: Vec<Message>,
    /// The committed entries each node handed out, in order.
    applied: BTreeMap<NodeId, Vec<Entry>>,
}

impl Net {
    fn new(nodes: Vec<Raft>) -> Net {
        Net {
            nodes: nodes.into_iter().map(|r| (r.id(), r)).collect(),
            delivered: Vec::new(),
            applied: BTreeMap::new(),
        }
    }

    fn node(&mut self, id: NodeId) -> &mut Raft {
        self.nodes.get_mut(&id).expect("node in the network")
    }

    /// Carries out every node's `Ready` and delivers its messages, until all are quiet.
    fn settle(&mut self) {
        for _ in 0..100 {
            let mut sent = Vec::new();
            for (&id, r) in &mut self.nodes {
                let rd = take(r);
                self.applied
                    .entry(id)
                    .or_default()
                    .extend(rd.committed_entries);
                sent.extend(rd.messages);
            }
            if sent.is_empty() {
                return;
            }
            for m in sent {
                if let Some(r) = self.nodes.get_mut(&m.to) {
                    self.delivered.push(m.clone());
                    step(r, m);
                }
            }
        }
        panic!("the network did not settle");
    }
}

// ------------------------------------------------------------------------------ §5.1

/// A server that sees a larger term in any message (request or response) updates its
/// current term and reverts to follower, whether it was a follower, a candidate or a leader.
/// The new term is persisted, and it no longer holds a vote for it (unless it grants one).
/// Reference: §5.1
#[test]
fn higher_term_in_any_message_makes_a_follower_of_that_term() {
    let bodies = [
        vote_req(2, 1, 0, 0, 0).body,
        vote_resp(2, 1, 0, false).body,
        append(2, 1, 0, (0, 0), vec![], 0).body,
        append_resp(2, 1, 0, false, 0, None, 0).body,
    ];
    for role in [Role::Follower, Role::Candidate, Role::Leader] {
        for body in bodies.clone() {
            let mut r = node_in_role(role, 1);
            let term = r.term().0 + 1;
            let from_leader = matches!(body, MessageBody::AppendEntries { .. });
            let from_candidate = matches!(body, MessageBody::RequestVote { .. });
            step(&mut r, msg(2, 1, term, body.clone()));

            let case = format!("{role:?} stepping {body:?}");
            assert_eq!(r.role(), Role::Follower, "{case}");
            assert_eq!(r.term(), Term(term), "{case}");
            assert_eq!(r.leader_id(), from_leader.then_some(2), "{case}");
            assert_eq!(r.vote(), from_candidate.then_some(2), "{case}");
            let rd = take(&mut r);
            assert_eq!(rd.hard_state.map(|hs| hs.term), Some(Term(term)), "{case}");
            assert!(rd.messages.iter().all(|m| m.term == Term(term)), "{case}");
        }
    }
}

/// A server rejects a request with a stale term, and the rejection carries its current term
/// (so that the stale sender updates itself). The request changes nothing else.
/// Reference: §5.1
#[test]
fn request_with_stale_term_is_rejected_with_current_term() {
    for role in [Role::Follower, Role::Candidate, Role::Leader] {
        let mut r = node_in_role(role, 2);
        let term = r.term().0;
        let before = (r.role(), r.vote(), r.leader_id());

        step(&mut r, vote_req(2, 1, 1, 9, 1));
        step(&mut r, append(3, 1, 1, (0, 0), vec![entry(1, 1)], 1));

        let expected = vec![
            vote_resp(1, 2, term, false),
            append_resp(1, 3, term, false, 0, None, 0),
        ];
        assert_eq!(drain(&mut r), expected, "{role:?}");
        assert_eq!((r.role(), r.vote(), r.leader_id()), before, "{role:?}");
        assert_eq!(r.term(), Term(term));
        assert_eq!(r.log().last_index(), LogIndex(0));
    }
}

/// Responses carrying a stale term are ignored: an old vote does not count towards an
/// election, and an old acknowledgement does not move a leader's view of a follower.
/// Reference: §5.1
#[test]
fn responses_with_stale_term_are_ignored() {
    let mut candidate = restore(1, 3, 1, &[]);
    campaign(&mut candidate);
    assert_eq!(candidate.term(), Term(2));
    step(&mut candidate, vote_resp(2, 1, 1, true));
    step(&mut candidate, vote_resp(3, 1, 1, true));
    assert_eq!(candidate.role(), Role::Candidate);
    assert!(!candidate.has_ready());
    step(&mut candidate, vote_resp(2, 1, 2, true));
    assert_eq!(candidate.role(), Role::Leader);

    let mut leader = restore(1, 3, 1, &[1]);
    elect(&mut leader, 3);
    drain(&mut leader);
    let e = propose(&mut leader, "x");
    drain(&mut leader);
    step(&mut leader, append_ok(2, 1, 1, e.index.0));
    step(&mut leader, append_ok(3, 1, 1, e.index.0));
    step(&mut leader, append_resp(2, 1, 1, false, 1, None, 1));
    for id in [2, 3] {
        let pr = leader.progress(id).unwrap();
        assert_eq!(pr.match_index, LogIndex(0));
        assert_eq!(pr.next_index, LogIndex(2));
        assert_eq!(pr.mode, ProgressMode::Probe { paused: true });
    }
    assert_eq!(leader.log().committed(), LogIndex(0));
    assert!(drain(&mut leader).is_empty());
}

// ------------------------------------------------------------------------------ §5.2

/// A follower that hears from no leader for an election timeout starts an election: it
/// increments its term, votes for itself (both persisted in the same Ready) and sends
/// RequestVote, with the index and term of its last entry, to every other server.
/// Reference: §5.2
#[test]
fn follower_starts_election_after_election_timeout() {
    let mut r = restore(1, 3, 2, &[1, 1, 2]);
    let ticks = tick_until_campaign(&mut r);
    assert!((ELECTION..2 * ELECTION).contains(&ticks), "{ticks}");
    assert_eq!(r.role(), Role::Candidate);
    assert_eq!(r.term(), Term(3));
    assert_eq!(r.vote(), Some(1));

    let rd = take(&mut r);
    let hard_state = HardState {
        term: Term(3),
        vote: Some(1),
    };
    assert_eq!(rd.hard_state, Some(hard_state));
    assert_eq!(
        rd.messages,
        vec![vote_req(1, 2, 3, 3, 2), vote_req(1, 3, 3, 3, 2)]
    );
}

/// Election timeouts are chosen randomly from a fixed interval, [election_ticks,
/// 2 * election_ticks) here, and drawn afresh for every election; different servers (seeds)
/// draw different timeouts, while the same seed replays the same ones.
/// Reference: §5.2
#[test]
fn election_timeouts_are_randomized_within_bounds() {
    let mut seen = BTreeSet::new();
    for seed in 0..40 {
        let node = || Raft::new(seeded(1, 3, seed), HardState::default(), None, vec![]);
        let (mut r, mut twin) = (node(), node());
        let first = tick_until_campaign(&mut r);
        let second = tick_until_campaign(&mut r);
        for timeout in [first, second] {
            assert!(
                (ELECTION..2 * ELECTION).contains(&timeout),
                "seed {seed}: {timeout}"
            );
        }
        assert_eq!(tick_until_campaign(&mut twin), first, "seed {seed} replays");
        seen.insert(first);
    }
    assert!(seen.len() >= 10, "too few distinct timeouts: {seen:?}");
}

/// A candidate that receives votes from a majority becomes leader, and at once sends
/// heartbeats (empty AppendEntries) to every other server to establish its authority.
/// Votes from a minority are not enough.
/// Reference: §5.2
#[test]
fn candidate_with_majority_becomes_leader_and_sends_heartbeats_at_once() {
    let mut r = new_node(1, 5);
    campaign(&mut r);
    step(&mut r, vote_resp(2, 1, 1, true));
    assert_eq!(r.role(), Role::Candidate, "2 of 5 is no majority");
    assert!(drain(&mut r).is_empty());

    step(&mut r, vote_resp(3, 1, 1, true));
    assert_eq!(r.role(), Role::Leader);
    assert_eq!(r.leader_id(), Some(1));
    let heartbeats: Vec<_> = (2..=5)
        .map(|to| append(1, to, 1, (0, 0), vec![], 0))
        .collect();
    assert_eq!(drain(&mut r), heartbeats);
}

/// A candidate that is refused by a majority cannot win this term and goes back to being a
/// follower, keeping its vote.
/// Reference: §5.2
#[test]
fn candidate_refused_by_majority_returns_to_follower() {
    let mut r = new_node(1, 3);
    campaign(&mut r);
    step(&mut r, vote_resp(2, 1, 1, false));
    assert_eq!(r.role(), Role::Candidate);
    step(&mut r, vote_resp(3, 1, 1, false));
    assert_eq!(
        (r.role(), r.term(), r.vote()),
        (Role::Follower, Term(1), Some(1))
    );
}

/// A candidate that receives AppendEntries from a leader whose term is as large as its own
/// recognizes that leader and returns to follower state, then answers the message.
/// Reference: §5.2
#[test]
fn candidate_steps_down_on_append_entries_from_leader_of_same_term() {
    let mut r = new_node(1, 3);
    campaign(&mut r);
    step(&mut r, append(2, 1, 1, (0, 0), vec![], 0));
    assert_eq!(r.role(), Role::Follower);
    assert_eq!(r.term(), Term(1));
    assert_eq!(r.leader_id(), Some(2));
    assert_eq!(r.vote(), Some(1));
    assert_eq!(drain(&mut r), vec![append_ok(1, 2, 1, 0)]);
}

/// A candidate that neither wins nor loses before its election timeout (a split vote)
/// starts a new election with a higher term and asks for votes again.
/// Reference: §5.2
#[test]
fn candidate_times_out_and_starts_new_election_with_higher_term() {
    let mut r = new_node(1, 3);
    campaign(&mut r);
    step(&mut r, vote_resp(2, 1, 1, false));
    let ticks = tick_until_campaign(&mut r);
    assert!((ELECTION..2 * ELECTION).contains(&ticks), "{ticks}");
    assert_eq!(
        (r.role(), r.term(), r.vote()),
        (Role::Candidate, Term(2), Some(1))
    );

    let rd = take(&mut r);
    let hard_state = HardState {
        term: Term(2),
        vote: Some(1),
    };
    assert_eq!(rd.hard_state, Some(hard_state));
    assert_eq!(
        rd.messages,
        vec![vote_req(1, 2, 2, 0, 0), vote_req(1, 3, 2, 0, 0)]
    );
}

/// Each server votes for at most one candidate in a term, first come first served; a
/// repeated request from the candidate it voted for gets the same answer.
/// Reference: §5.2
#[test]
fn node_votes_at_most_once_per_term() {
    let mut r = new_node(1, 3);
    step(&mut r, vote_req(2, 1, 1, 0, 0));
    step(&mut r, vote_req(3, 1, 1, 0, 0));
    step(&mut r, vote_req(2, 1, 1, 0, 0));
    let expected = vec![
        vote_resp(1, 2, 1, true),
        vote_resp(1, 3, 1, false),
        vote_resp(1, 2, 1, true),
    ];
    assert_eq!(drain(&mut r), expected);
    assert_eq!(r.vote(), Some(2));

    // A new term brings a new vote.
    step(&mut r, vote_req(3, 1, 2, 0, 0));
    assert_eq!(drain(&mut r), vec![vote_resp(1, 3, 2, true)]);
}

/// The vote is persistent state: it is in the hard state of the very Ready that carries the
/// granting response, so it is on disk before the candidate can count it (thesis §3.8), and
/// a restarted server remembers it.
/// Reference: §5.2
#[test]
fn vote_is_persisted_in_the_same_ready_as_the_vote_response() {
    let mut r = new_node(1, 3);
    step(&mut r, vote_req(2, 1, 1, 0, 0));
    let rd = take(&mut r);
    let voted = HardState {
        term: Term(1),
        vote: Some(2),
    };
    assert_eq!(rd.hard_state, Some(voted));
    assert_eq!(rd.messages, vec![vote_resp(1, 2, 1, true)]);

    let mut restarted = Raft::new(config(1, 3), voted, None, vec![]);
    step(&mut restarted, vote_req(3, 1, 1, 0, 0));
    step(&mut restarted, vote_req(2, 1, 1, 0, 0));
    let rd = take(&mut restarted);
    assert_eq!(rd.hard_state, None);
    assert_eq!(
        rd.messages,
        vec![vote_resp(1, 3, 1, false), vote_resp(1, 2, 1, true)]
    );
}

/// Granting a vote resets the election timer (Figure 2, rules for followers), so a server
/// that just voted does not start a competing election.
/// Reference: §5.2
#[test]
fn granting_a_vote_resets_the_election_timer() {
    // Already in term 1, so that only the grant (not a new term) can reset the timer.
    let timeout = tick_until_campaign(&mut restore(1, 3, 1, &[]));
    let mut r = restore(1, 3, 1, &[]); // the same seed: the same first timeout
    tick(&mut r, timeout - 1);
    step(&mut r, vote_req(2, 1, 1, 0, 0));
    assert_eq!(drain(&mut r), vec![vote_resp(1, 2, 1, true)]);
    let ticks = tick_until_campaign(&mut r);
    assert!(ticks >= ELECTION, "campaigned {ticks} ticks after voting");
}

/// A follower remains a follower as long as it receives valid AppendEntries from a leader:
/// each one resets its election timer.
/// Reference: §5.2
#[test]
fn heartbeats_from_leader_keep_follower_from_campaigning() {
    let mut r = new_node(2, 3);
    for _ in 0..10 {
        tick(&mut r, ELECTION - 1);
        step(&mut r, append(1, 2, 1, (0, 0), vec![], 0));
        assert_eq!(drain(&mut r), vec![append_ok(2, 1, 1, 0)]);
    }
    assert_eq!(
        (r.role(), r.term(), r.leader_id()),
        (Role::Follower, Term(1), Some(1))
    );
    assert!(tick_until_campaign(&mut r) >= ELECTION);
}

/// An idle leader sends periodic heartbeats to all followers to maintain its authority:
/// exactly one per follower every heartbeat_ticks, and nothing in between, even though
/// every heartbeat is answered. With the default 10 ms tick, that is 10 per second per
/// follower.
/// Reference: §5.2
#[test]
fn idle_leader_sends_one_heartbeat_per_follower_every_heartbeat_ticks() {
    let mut r = leader_replicating(3);
    let mut sent: BTreeMap<NodeId, u64> = BTreeMap::new();
    for t in 1..=100 {
        tick(&mut r, 1);
        let msgs = drain(&mut r);
        if t % HEARTBEAT != 0 {
            assert!(msgs.is_empty(), "tick {t}: {msgs:?}");
            continue;
        }
        let heartbeats = vec![
            append(1, 2, 1, (0, 0), vec![], 0),
            append(1, 3, 1, (0, 0), vec![], 0),
        ];
        assert_eq!(msgs, heartbeats, "tick {t}");
        for m in &msgs {
            *sent.entry(m.to).or_default() += 1;
            step(&mut r, accept(m));
        }
        assert!(
            drain(&mut r).is_empty(),
            "answers to heartbeats trigger nothing"
        );
    }
    assert_eq!(sent, BTreeMap::from([(2, 10), (3, 10)]));
}

// ------------------------------------------------------------------------------ §5.3

/// The leader appends a command to its log as a new entry and issues AppendEntries for it
/// in the very next Ready, without waiting for a heartbeat. The entry to persist and the
/// messages carrying it are in the same Ready, so no follower can acknowledge an entry the
/// leader might still lose (persist before send).
/// Reference: §5.3
#[test]
fn leader_appends_proposal_and_sends_it_in_the_next_ready() {
    let mut r = leader_replicating(3);
    assert!(!r.has_ready());
    let e = propose(&mut r, "x");
    assert_eq!((e.index, e.term), (LogIndex(1), Term(1)));
    assert_eq!(r.log().last_index(), LogIndex(1));
    assert!(r.has_ready());

    let rd = take(&mut r);
    assert_eq!(rd.entries, vec![e.clone()]);
    let expected = vec![
        append(1, 2, 1, (0, 0), vec![e.clone()], 0),
        append(1, 3, 1, (0, 0), vec![e.clone()], 0),
    ];
    assert_eq!(rd.messages, expected);
    assert!(rd.committed_entries.is_empty());
    assert_eq!(r.log().committed(), LogIndex(0));
}

/// An entry is committed once the leader has replicated it on a majority of servers; the
/// committed entry is then handed out for applying, and later AppendEntries (here the next
/// heartbeats) carry the new commit index.
/// Reference: §5.3
#[test]
fn leader_commits_entry_once_a_majority_acknowledges() {
    let mut r = leader_replicating(5);
    let e = propose(&mut r, "x");
    let msgs = drain(&mut r);

    step(&mut r, accept(&to(&msgs, 2)[0]));
    assert_eq!(r.log().committed(), LogIndex(0), "2 of 5 is no majority");
    assert!(take(&mut r).committed_entries.is_empty());

    step(&mut r, accept(&to(&msgs, 3)[0]));
    assert_eq!(r.log().committed(), LogIndex(1));
    assert_eq!(take(&mut r).committed_entries, vec![e]);

    tick(&mut r, HEARTBEAT);
    let heartbeats = drain(&mut r);
    assert_eq!(to(&heartbeats, 2), vec![append(1, 2, 1, (1, 1), vec![], 1)]);
    assert_eq!(to(&heartbeats, 4), vec![append(1, 4, 1, (0, 0), vec![], 1)]);
}

/// Once a follower learns that a log entry is committed (from the leader_commit of a later
/// AppendEntries), it applies the entry to its state machine, in log order.
/// Reference: §5.3
#[test]
fn follower_learns_commit_index_from_later_append_entries() {
    let mut r = new_node(2, 3);
    let sent = log_of(&[1, 1]);
    step(&mut r, append(1, 2, 1, (0, 0), sent.clone(), 0));
    let rd = take(&mut r);
    assert_eq!(rd.entries, sent);
    assert_eq!(rd.messages, vec![append_ok(2, 1, 1, 2)]);
    assert!(rd.committed_entries.is_empty());

    step(&mut r, append(1, 2, 1, (2, 1), vec![], 2));
    let rd = take(&mut r);
    assert_eq!(r.log().committed(), LogIndex(2));
    assert!(rd.entries.is_empty());
    assert_eq!(rd.committed_entries, sent);
}

/// A follower commits min(leader_commit, index of the last new entry): it never commits past
/// what the message proved consistent with the leader, since beyond that its log may still
/// hold entries of a deposed leader.
/// Reference: §5.3
#[test]
fn follower_never_commits_past_the_entries_the_message_proved_consistent() {
    // Entries 2 and 3 come from a deposed leader of term 1; the new leader of term 2 has
    // committed its own entries 2 and 3 (of term 2).
    let mut r = restore(2, 3, 1, &[1, 1, 1]);
    step(&mut r, append(1, 2, 2, (1, 1), vec![], 3));
    assert_eq!(r.log().committed(), LogIndex(1));
    assert_eq!(take(&mut r).committed_entries, vec![entry(1, 1)]);

    let sent = entries_from(2, &[2, 2]);
    step(&mut r, append(1, 2, 2, (1, 1), sent.clone(), 3));
    assert_eq!(terms(&r), vec![1, 2, 2]);
    assert_eq!(r.log().committed(), LogIndex(3));
    assert_eq!(take(&mut r).committed_entries, sent);
}

/// If a follower's log is too short to contain an entry at prev_log_index, it refuses the
/// AppendEntries, hinting its last index + 1 as the place to resume (conflict_index, with
/// no conflict_term); its log is unchanged.
/// Reference: §5.3
#[test]
fn follower_rejects_append_entries_beyond_its_log_with_next_index_hint() {
    let mut r = restore(2, 3, 1, &[1, 1]);
    step(&mut r, append(1, 2, 1, (5, 1), vec![entry(6, 1)], 5));
    assert_eq!(drain(&mut r), vec![append_resp(2, 1, 1, false, 5, None, 3)]);
    assert_eq!(terms(&r), vec![1, 1]);
    assert_eq!(r.log().committed(), LogIndex(0));
    assert_eq!(r.leader_id(), Some(1));
}

/// If a follower's entry at prev_log_index has another term than prev_log_term, it refuses
/// the AppendEntries, hinting the term it holds there and the first index it holds for that
/// term, so that the leader can skip the whole term; its log is unchanged.
/// Reference: §5.3
#[test]
fn follower_rejects_append_entries_on_term_mismatch_with_conflict_term_hint() {
    let mut r = restore(2, 3, 3, &[1, 1, 2, 2, 2]);
    step(&mut r, append(1, 2, 3, (4, 3), vec![entry(5, 3)], 5));
    assert_eq!(
        drain(&mut r),
        vec![append_resp(2, 1, 3, false, 4, Some(2), 3)]
    );
    assert_eq!(terms(&r), vec![1, 1, 2, 2, 2]);
    assert_eq!(r.log().committed(), LogIndex(0));
}

/// When the consistency check passes, the follower deletes an existing entry that conflicts
/// with a new one (same index, different term) and all that follow it, appends the new
/// entries not already in its log, and hands the changed suffix out for persisting.
/// Reference: §5.3
#[test]
fn follower_truncates_conflicting_entries_and_appends_new_ones() {
    // The follower's log terms are 1 2. (prev, terms of the entries sent after prev, its log
    // terms afterwards, first index it must persist again)
    let cases = [
        ((2, 2), vec![3], vec![1, 2, 3], 3),
        ((1, 1), vec![3, 4], vec![1, 3, 4], 2),
        ((0, 0), vec![1], vec![1, 2], 3),
        ((0, 0), vec![3], vec![3], 1),
        ((1, 1), vec![2, 4], vec![1, 2, 4], 3),
    ];
    for (prev, sent, after, first_changed) in cases {
        let mut r = restore(2, 3, 2, &[1, 2]);
        let last = prev.0 + sent.len() as u64;
        step(
            &mut r,
            append(1, 2, 4, prev, entries_from(prev.0 + 1, &sent), 0),
        );
        let rd = take(&mut r);
        assert_eq!(terms(&r), after, "{sent:?} after {prev:?}");
        let changed = log_of(&after)[first_changed as usize - 1..].to_vec();
        assert_eq!(rd.entries, changed, "{sent:?} after {prev:?}");
        assert_eq!(rd.messages, vec![append_ok(2, 1, 4, last)]);
    }
}

/// A delayed, shorter AppendEntries from the current leader, whose entries all match the
/// follower's log, must not truncate the entries a later message already delivered (only a
/// conflict truncates). The answer acknowledges what that message covered.
/// Reference: §5.3
#[test]
fn delayed_shorter_append_entries_does_not_truncate_matching_entries() {
    let mut r = new_node(2, 3);
    step(&mut r, append(1, 2, 1, (0, 0), log_of(&[1, 1, 1]), 0));
    take(&mut r);
    step(&mut r, append(1, 2, 1, (0, 0), log_of(&[1]), 0));
    let rd = take(&mut r);
    assert_eq!(terms(&r), vec![1, 1, 1]);
    assert!(rd.entries.is_empty());
    assert_eq!(rd.messages, vec![append_ok(2, 1, 1, 1)]);
}

/// The leader of term 8 in Figure 7 (log terms 1 1 1 4 4 5 5 6 6 6) brings each follower
/// a–f to its own log: missing entries (a, b), extraneous uncommitted ones (c, d), or both
/// (e, f). Rejections hint at the conflicting term, so the leader backs up over a whole term
/// per round trip instead of one entry: at most three AppendEntries per follower here, where
/// decrementing next_index one by one takes up to eight (f).
/// Reference: §5.3
#[test]
fn leader_brings_figure7_follower_logs_up_to_date_in_few_round_trips() {
    let leader_log = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let followers: [(&str, &[u64], usize); 6] = [
        ("a", &[1, 1, 1, 4, 4, 5, 5, 6, 6], 2),
        ("b", &[1, 1, 1, 4], 2),
        ("c", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6], 2),
        ("d", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], 2),
        ("e", &[1, 1, 1, 4, 4, 4, 4], 3),
        ("f", &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], 3),
    ];
    for (name, follower_log, round_trips) in followers {
        let mut leader = restore(1, 7, 7, &leader_log);
        elect(&mut leader, 7);
        assert_eq!(leader.term(), Term(8));
        // An entry of term 8 replaces what c and d hold beyond index 10.
        propose(&mut leader, "11@8");
        let follower = restore(2, 7, *follower_log.last().unwrap(), follower_log);

        let mut net = Net::new(vec![leader, follower]);
        net.settle();
        let appends = net
            .delivered
            .iter()
            .filter(|m| m.to == 2 && is_append(m))
            .count();
        assert_eq!(appends, round_trips, "follower ({name})");
        let (leader, follower) = (&net.nodes[&1], &net.nodes[&2]);
        assert_eq!(entries(follower), entries(leader), "follower ({name})");
        assert_eq!(leader.progress(2).unwrap().match_index, LogIndex(11));
    }
}

/// After backing up, the leader resumes replication from the first entry the follower
/// lacks: it answers a rejection at once with a probe below the rejected index.
/// Reference: §5.3
#[test]
fn leader_answers_rejection_with_probe_below_the_rejected_index() {
    let mut r = restore(1, 3, 2, &[1, 1, 2, 2]);
    elect(&mut r, 3);
    drain(&mut r);
    // Follower 2 holds only index 1: it hints index 2.
    step(&mut r, append_resp(2, 1, 3, false, 4, None, 2));
    let expected = vec![append(1, 2, 3, (1, 1), entries_from(2, &[1, 2, 2]), 0)];
    assert_eq!(drain(&mut r), expected);
    // A duplicate of that rejection is recognized as stale.
    step(&mut r, append_resp(2, 1, 3, false, 4, None, 2));
    assert!(drain(&mut r).is_empty());
}

// ------------------------------------------------------------------------------ §5.4

/// A server denies its vote to a candidate whose log is less up to date than its own: the
/// candidate's last entry has a lower term (however long its log), or the same last term
/// but a shorter log.
/// Reference: §5.4.1
#[test]
fn vote_denied_to_candidate_with_less_up_to_date_log() {
    // (candidate's last index, last term); the voter's log ends at index 4, term 2.
    for (last_index, last_term) in [(4, 1), (9, 1), (3, 2), (0, 0)] {
        let mut r = restore(1, 3, 2, &[1, 1, 2, 2]);
        step(&mut r, vote_req(2, 1, 3, last_index, last_term));
        assert_eq!(drain(&mut r), vec![vote_resp(1, 2, 3, false)]);
        assert_eq!((r.term(), r.vote()), (Term(3), None));
    }
}

/// A server grants its vote to a candidate whose log is at least as up to date as its own:
/// a higher last term (however short its log), or the same last term and a log at least as
/// long.
/// Reference: §5.4.1
#[test]
fn vote_granted_to_candidate_with_at_least_as_up_to_date_log() {
    for (last_index, last_term) in [(4, 2), (5, 2), (1, 3), (9, 3)] {
        let mut r = restore(1, 3, 2, &[1, 1, 2, 2]);
        step(&mut r, vote_req(2, 1, 3, last_index, last_term));
        assert_eq!(drain(&mut r), vec![vote_resp(1, 2, 3, true)]);
        assert_eq!((r.term(), r.vote()), (Term(3), Some(2)));
    }
}

/// Figure 8: a leader never commits an entry from a previous term by counting replicas, as
/// such an entry can still be overwritten by a future leader. S1, leader of term 4, replicates
/// index 2 (term 2) to S2 and S3, a majority of five, yet does not commit it: S5, whose last
/// entry is index 2 of term 3, could still win S3's vote. Only once an entry of term 4 is on a
/// majority are both committed, the older one indirectly (Log Matching), and then applied by
/// every server in order.
/// Reference: §5.4.2
#[test]
fn leader_commits_previous_term_entries_only_through_a_current_term_entry() {
    let mut s1 = restore(1, 5, 3, &[1, 2]);
    tick_until_campaign(&mut s1);
    let s2 = restore(2, 5, 3, &[1, 2]);
    let s3 = restore(3, 5, 3, &[1]);
    let mut net = Net::new(vec![s1, s2, s3]); // S4 and S5 are down
    net.settle();

    assert_eq!(
        (net.node(1).role(), net.node(1).term()),
        (Role::Leader, Term(4))
    );
    for id in [2, 3] {
        assert_eq!(terms(&net.nodes[&id]), vec![1, 2]);
        assert_eq!(net.node(1).progress(id).unwrap().match_index, LogIndex(2));
    }
    assert_eq!(net.node(1).log().committed(), LogIndex(0));
    assert!(net.applied.values().all(Vec::is_empty));
    assert!(net.node(3).log().is_up_to_date(LogIndex(2), Term(3)));

    let e = propose(net.node(1), "x");
    net.settle();
    let all = vec![entry(1, 1), entry(2, 2), e];
    assert_eq!(net.node(1).log().committed(), LogIndex(3));
    assert_eq!(net.applied[&1], all);

    tick(net.node(1), HEARTBEAT);
    net.settle();
    for id in [2, 3] {
        assert_eq!(net.applied[&id], all, "S{id}");
    }
}

// ------------------------------------------------------------------------------ Ready

/// Committed entries are handed out for applying exactly once each, in log order, however
/// many Ready they take.
/// Reference: §5.3
#[test]
fn committed_entries_are_handed_out_exactly_once_in_order() {
    let mut r = leader_replicating(3);
    let first = vec![propose(&mut r, "a"), propose(&mut r, "b")];
    let msgs = drain(&mut r);
    step(&mut r, accept(&to(&msgs, 2)[0]));
    assert_eq!(take(&mut r).committed_entries, first);
    step(&mut r, accept(&to(&msgs, 3)[0]));
    assert!(take(&mut r).committed_entries.is_empty());

    let third = propose(&mut r, "c");
    let msgs = drain(&mut r);
    step(&mut r, accept(&to(&msgs, 3)[0]));
    step(&mut r, accept(&to(&msgs, 2)[0]));
    assert_eq!(take(&mut r).committed_entries, vec![third]);
    assert!(take(&mut r).is_empty());
}

/// Once its Ready is carried out and acknowledged, an idle node has nothing more to hand out,
/// whatever its role, until something happens.
/// Reference: §5.3
#[test]
fn has_ready_is_false_after_advance_when_idle() {
    for role in [Role::Follower, Role::Candidate, Role::Leader] {
        let mut r = node_in_role(role, 0);
        take(&mut r);
        assert!(!r.has_ready(), "{role:?}");
        tick(&mut r, 1);
        assert!(!r.has_ready(), "{role:?} after a tick");
    }

    let mut follower = new_node(2, 3);
    step(&mut follower, append(1, 2, 1, (0, 0), log_of(&[1]), 1));
    assert!(follower.has_ready());
    take(&mut follower);
    assert!(!follower.has_ready());

    let mut leader = leader_replicating(3);
    propose(&mut leader, "x");
    let msgs = drain(&mut leader);
    step(&mut leader, accept(&msgs[0]));
    assert!(leader.has_ready());
    take(&mut leader);
    assert!(!leader.has_ready());
}

/// The hard state (term, vote) is in a Ready only when it changed since the last one, so
/// that storage writes it exactly when needed.
/// Reference: §5.2
#[test]
fn hard_state_is_in_ready_only_when_it_changed() {
    let mut r = new_node(1, 3);
    assert!(!r.has_ready());
    tick_until_campaign(&mut r);
    let candidate = HardState {
        term: Term(1),
        vote: Some(1),
    };
    assert_eq!(take(&mut r).hard_state, Some(candidate));

    step(&mut r, vote_resp(2, 1, 1, true));
    assert_eq!(r.role(), Role::Leader);
    assert_eq!(take(&mut r).hard_state, None);
    tick(&mut r, HEARTBEAT);
    assert_eq!(take(&mut r).hard_state, None);

    step(&mut r, append(2, 1, 2, (0, 0), vec![], 0));
    let deposed = HardState {
        term: Term(2),
        vote: None,
    };
    assert_eq!(take(&mut r).hard_state, Some(deposed));
}

// ------------------------------------------------------------------------------ flow control

/// Node 1 as leader of 1..=3 allowing `limit` AppendEntries in flight; only node 2 answers
/// the first heartbeat, so node 2 is streamed to and node 3 stays probed.
fn leader_with_inflight_limit(limit: usize) -> Raft {
    let mut config = config(1, 3);
    config.max_inflight_msgs = limit;
    let mut r = Raft::new(config, HardState::default(), None, vec![]);
    elect(&mut r, 3);
    for m in to(&drain(&mut r), 2) {
        step(&mut r, accept(&m));
    }
    assert_eq!(r.progress(2).unwrap().mode, ProgressMode::Replicate);
    r
}

/// The leader retries AppendEntries until followers store all entries. To a follower known
/// to match (Replicate mode) it streams new entries without waiting for acknowledgements,
/// but with at most max_inflight_msgs unacknowledged messages; each acknowledgement frees
/// room, and whatever waited goes out in one message.
/// Reference: §5.3
#[test]
fn leader_streams_up_to_max_inflight_msgs_without_waiting_for_acks() {
    let mut r = leader_with_inflight_limit(3);
    let mut proposed = Vec::new();
    let mut streamed = Vec::new();
    for i in 0..6 {
        proposed.push(propose(&mut r, &format!("c{i}")));
        streamed.extend(to(&drain(&mut r), 2));
    }
    let expected = vec![
        append(1, 2, 1, (0, 0), vec![proposed[0].clone()], 0),
        append(1, 2, 1, (1, 1), vec![proposed[1].clone()], 0),
        append(1, 2, 1, (2, 1), vec![proposed[2].clone()], 0),
    ];
    assert_eq!(streamed, expected);
    assert_eq!(r.progress(2).unwrap().inflight.len(), 3);

    step(&mut r, accept(&streamed[0]));
    let expected = vec![append(1, 2, 1, (3, 1), proposed[3..].to_vec(), 1)];
    assert_eq!(to(&drain(&mut r), 2), expected);
    assert_eq!(r.progress(2).unwrap().inflight.len(), 3);
}

/// The leader retries AppendEntries indefinitely if a follower's acknowledgements stop: a
/// stream unacknowledged for two heartbeat intervals falls back to probing from the
/// follower's match index, which resends everything it lacks; once answered, streaming
/// resumes. Before that, heartbeats only carry the match index.
/// Reference: §5.3
#[test]
fn stalled_stream_falls_back_to_probing_after_two_heartbeats() {
    let mut r = leader_with_inflight_limit(3);
    let proposed: Vec<Entry> = (0..4)
        .map(|i| {
            let e = propose(&mut r, &format!("c{i}"));
            drain(&mut r);
            e
        })
        .collect();

    tick(&mut r, HEARTBEAT);
    assert_eq!(
        to(&drain(&mut r), 2),
        vec![append(1, 2, 1, (0, 0), vec![], 0)]
    );
    assert_eq!(r.progress(2).unwrap().mode, ProgressMode::Replicate);

    tick(&mut r, HEARTBEAT);
    let probe = to(&drain(&mut r), 2);
    assert_eq!(probe, vec![append(1, 2, 1, (0, 0), proposed.clone(), 0)]);
    assert_eq!(
        r.progress(2).unwrap().mode,
        ProgressMode::Probe { paused: true }
    );

    step(&mut r, accept(&probe[0]));
    let pr = r.progress(2).unwrap();
    assert_eq!(
        (pr.mode, pr.match_index),
        (ProgressMode::Replicate, LogIndex(4))
    );
    assert_eq!(r.log().committed(), LogIndex(4));
}

/// A probe (one AppendEntries at a time, to a follower whose match point is unknown) that
/// gets no answer is sent again at the next heartbeat, and not before.
/// Reference: §5.3
#[test]
fn unanswered_probe_is_resent_at_the_next_heartbeat() {
    let mut r = restore(1, 3, 1, &[1]);
    elect(&mut r, 3);
    let probes = drain(&mut r);
    assert_eq!(
        probes,
        vec![
            append(1, 2, 2, (1, 1), vec![], 0),
            append(1, 3, 2, (1, 1), vec![], 0)
        ]
    );
    let e = propose(&mut r, "x");
    assert_eq!(
        take(&mut r).entries,
        vec![e.clone()],
        "paused: nothing sent"
    );
    tick(&mut r, HEARTBEAT - 1);
    assert!(!r.has_ready());
    tick(&mut r, 1);
    let expected = vec![
        append(1, 2, 2, (1, 1), vec![e.clone()], 0),
        append(1, 3, 2, (1, 1), vec![e.clone()], 0),
    ];
    assert_eq!(drain(&mut r), expected);
}

// ------------------------------------------------------------------------------ misc

/// A single-server cluster is its own majority: it elects itself at its first election
/// timeout and commits each proposal as soon as it has persisted it (a leader counts itself
/// toward a majority only for what it has written, thesis §10.2.1).
/// Reference: §5.2
#[test]
fn single_node_cluster_elects_itself_and_commits_on_propose() {
    let mut r = new_node(1, 1);
    tick_until_campaign(&mut r);
    assert_eq!(
        (r.role(), r.term(), r.leader_id()),
        (Role::Leader, Term(1), Some(1))
    );
    let rd = take(&mut r);
    let hard_state = HardState {
        term: Term(1),
        vote: Some(1),
    };
    assert_eq!(rd.hard_state, Some(hard_state));
    assert!(rd.messages.is_empty());

    for command in ["a", "b"] {
        let e = propose(&mut r, command);
        let rd = take(&mut r);
        assert_eq!(rd.entries, vec![e.clone()]);
        assert!(
            rd.committed_entries.is_empty(),
            "committed before it was written"
        );
        let rd = take(&mut r);
        assert_eq!(rd.committed_entries, vec![e]);
        assert!(rd.messages.is_empty());
        assert!(!r.has_ready());
    }
}

/// Only the leader accepts commands; others refuse them and name the leader they know of, so
/// that clients can be redirected.
/// Reference: §5.1
#[test]
fn proposal_on_follower_is_refused_with_leader_hint() {
    let mut r = new_node(2, 3);
    assert_eq!(r.propose(b"x".to_vec()).unwrap_err().leader_hint, None);
    step(&mut r, append(1, 2, 1, (0, 0), vec![], 0));
    assert_eq!(r.propose(b"x".to_vec()).unwrap_err().leader_hint, Some(1));
    assert_eq!(r.log().last_index(), LogIndex(0));
}

/// A rejection that answers a request of an older term (§5.1) says nothing about the
/// follower's log. A leader re-elected meanwhile receives it in its new term (the follower
/// answers with its own term); it must not take it for a failed consistency check and back
/// up its next index for that follower, let alone to the start of the log.
/// Reference: §5.3
#[test]
fn rejection_of_a_stale_term_request_does_not_make_the_leader_back_up() {
    let mut n1 = restore(1, 3, 1, &[1, 1, 1]);
    elect(&mut n1, 3);
    let delayed = to(&drain(&mut n1), 2); // term 2, prev (3, 1): held up in the network
    step(&mut n1, vote_req(3, 1, 3, 0, 0)); // deposed in term 3 (vote refused)
    elect(&mut n1, 3);
    assert_eq!(n1.term(), Term(4));
    let probe = to(&drain(&mut n1), 2);
    assert_eq!(probe, vec![append(1, 2, 4, (3, 1), vec![], 0)]);

    // Node 2 voted for node 1 in term 4; then the delayed request of term 2 reaches it.
    let voted = HardState {
        term: Term(4),
        vote: Some(1),
    };
    let mut n2 = Raft::new(config(2, 3), voted, None, log_of(&[1, 1, 1]));
    step(&mut n2, delayed[0].clone());
    let rejection = drain(&mut n2);
    assert_eq!(rejection, vec![append_resp(2, 1, 4, false, 3, None, 0)]);

    step(&mut n1, rejection[0].clone());
    assert_eq!(
        drain(&mut n1),
        vec![],
        "the probe of term 4 is still outstanding"
    );
    assert_eq!(n1.progress(2).unwrap().next_index, LogIndex(4));
}

// ------------------------------------------------------------------------------ extensions

/// Node 1 of `1..=n` with the extensions on, elected through a pre-vote round with grants
/// from the lowest other ids; its first heartbeats are taken.
fn extended_leader(n: u64) -> Raft {
    let mut r = Raft::new(extended(1, n), HardState::default(), None, vec![]);
    tick_until(&mut r, |r| r.role() == Role::PreCandidate);
    for from in 2..=n / 2 + 1 {
        step(&mut r, pre_vote_resp(from, 1, 1, true));
    }
    for from in 2..=n / 2 + 1 {
        step(&mut r, vote_resp(from, 1, 1, true));
    }
    assert_eq!((r.role(), r.term()), (Role::Leader, Term(1)));
    drain(&mut r);
    r
}

/// With pre-vote, a follower whose election timeout elapses first asks whether it could win:
/// PreVote for its term + 1, with its last log index and term. Its own term and vote do not
/// change (nothing to persist); a majority of grants starts the real election.
/// Reference: thesis §9.6
#[test]
fn pre_candidate_asks_for_pre_votes_without_changing_its_term() {
    let hard_state = HardState {
        term: Term(2),
        vote: None,
    };
    let mut r = Raft::new(extended(1, 3), hard_state, None, log_of(&[1, 1, 2]));
    let ticks = tick_until(&mut r, |r| r.role() == Role::PreCandidate);
    assert!((ELECTION..2 * ELECTION).contains(&ticks), "{ticks}");
    assert_eq!((r.term(), r.vote()), (Term(2), None));
    let rd = take(&mut r);
    assert_eq!(rd.hard_state, None);
    assert_eq!(
        rd.messages,
        vec![pre_vote(1, 2, 3, 3, 2), pre_vote(1, 3, 3, 3, 2)]
    );

    step(&mut r, pre_vote_resp(2, 1, 3, true));
    assert_eq!(
        (r.role(), r.term(), r.vote()),
        (Role::Candidate, Term(3), Some(1))
    );
    let rd = take(&mut r);
    let candidate = HardState {
        term: Term(3),
        vote: Some(1),
    };
    assert_eq!(rd.hard_state, Some(candidate));
    assert_eq!(
        rd.messages,
        vec![vote_req(1, 2, 3, 3, 2), vote_req(1, 3, 3, 3, 2)]
    );
}

/// A server that heard from a leader within the election timeout refuses pre-votes, with its
/// own term, so that a server that merely lost touch with the leader cannot force an election.
/// Once the leader has been silent that long it grants them, still without changing its term.
/// Reference: thesis §9.6
#[test]
fn pre_vote_is_refused_while_hearing_from_a_leader() {
    let mut r = Raft::new(extended(2, 3), HardState::default(), None, vec![]);
    step(&mut r, append(1, 2, 1, (0, 0), vec![], 0));
    drain(&mut r);
    step(&mut r, pre_vote(3, 2, 2, 0, 0));
    assert_eq!(drain(&mut r), vec![pre_vote_resp(2, 3, 1, false)]);
    assert_eq!((r.term(), r.leader_id()), (Term(1), Some(1)));

    tick(&mut r, ELECTION);
    step(&mut r, pre_vote(3, 2, 2, 0, 0));
    assert_eq!(to(&drain(&mut r), 3), vec![pre_vote_resp(2, 3, 2, true)]);
    assert_eq!((r.term(), r.vote()), (Term(1), None));
}

/// A server rejoining after a partition, whose election timer ran out meanwhile, does not
/// depose a working leader: its pre-vote is refused by the leader and by the followers that
/// still hear from it, so no term is raised anywhere and it goes back to following.
/// Reference: thesis §9.6
#[test]
fn rejoining_server_does_not_disrupt_the_leader_with_pre_vote() {
    let nodes = (1..=3).map(|id| Raft::new(extended(id, 3), HardState::default(), None, vec![]));
    let mut net = Net::new(nodes.collect());
    tick_until(net.node(1), |r| r.role() == Role::PreCandidate);
    net.settle();
    assert_eq!(net.node(1).role(), Role::Leader);

    tick_until(net.node(3), |r| r.role() == Role::PreCandidate);
    net.settle();
    for id in 1..=3 {
        assert_eq!(net.node(id).term(), Term(1), "node {id}");
    }
    assert_eq!(net.node(1).role(), Role::Leader);
    assert_eq!(net.node(3).role(), Role::Follower);
    tick(net.node(1), HEARTBEAT);
    net.settle();
    assert_eq!(net.node(3).leader_id(), Some(1));
}

/// With check-quorum, a leader that goes an election timeout without hearing from a majority
/// steps down (in its term), so that a leader cut off in a minority stops serving; it does so
/// within two election timeouts of its last contact (here the votes that elected it). A leader
/// that hears from a majority (here one follower of two) stays.
/// Reference: thesis §6.2
#[test]
fn leader_without_contact_with_a_majority_steps_down() {
    let mut r = extended_leader(3);
    for _ in 0..3 * ELECTION {
        tick(&mut r, 1);
        for m in to(&drain(&mut r), 2) {
            step(&mut r, accept(&m));
        }
    }
    assert_eq!(r.role(), Role::Leader);

    let mut r = extended_leader(3);
    let ticks = tick_until(&mut r, |r| r.role() != Role::Leader);
    assert!((ELECTION..=2 * ELECTION).contains(&ticks), "{ticks}");
    assert_eq!(
        (r.role(), r.term(), r.leader_id()),
        (Role::Follower, Term(1), None)
    );
    assert!(r.propose(b"x".to_vec()).is_err());
}
