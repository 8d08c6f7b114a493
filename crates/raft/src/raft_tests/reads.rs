//! Reads without log entries (thesis §6.4): a leader answers a read once a majority has
//! confirmed, after the read was asked for, that it still leads.

use super::*;
use crate::raft::RaftFault;
use crate::ready::ReadState;

fn confirmed(id: u64) -> ReadState {
    ReadState {
        id,
        confirmed: true,
    }
}

fn round_of(m: &Message) -> u64 {
    match m.body {
        MessageBody::AppendEntries { read_round, .. } => read_round,
        _ => panic!("not an AppendEntries: {m:?}"),
    }
}

/// The index to read at is the leader's last index; the read is confirmed only once a
/// majority (the leader and one follower of three) has answered a heartbeat of a round
/// started after it was asked for. Every read asked before a `Ready` shares its round.
/// Reference: thesis §6.4
#[test]
fn a_read_is_confirmed_once_a_majority_echoes_its_round() {
    let mut r = leader_replicating(3);
    let e = propose(&mut r, "x");
    let before = drain(&mut r);
    assert_eq!(r.read_index(7), Ok(e.index));
    assert_eq!(r.read_index(8), Ok(e.index));
    let rd = take(&mut r);
    assert!(rd.read_states.is_empty());
    // One heartbeat, to one follower: with the leader, a majority.
    assert_eq!(rd.messages.len(), 1);
    assert_eq!(round_of(&rd.messages[0]), 1);

    // An answer to a message sent before the read confirms nothing.
    step(&mut r, accept(&to(&before, 3)[0]));
    assert!(take(&mut r).read_states.is_empty());

    step(&mut r, accept(&to(&rd.messages, 2)[0]));
    assert_eq!(take(&mut r).read_states, vec![confirmed(7), confirmed(8)]);
}

/// New entries sent in the same `Ready` as a new round carry it, so that no extra heartbeat
/// goes to their follower.
#[test]
fn entries_sent_with_a_new_round_carry_it() {
    let mut r = leader_replicating(3);
    propose(&mut r, "x");
    r.read_index(1).unwrap();
    let rd = take(&mut r);
    assert_eq!(rd.messages.len(), 2, "{:?}", rd.messages);
    for m in &rd.messages {
        assert_eq!(round_of(m), 1);
        assert!(
            matches!(&m.body, MessageBody::AppendEntries { entries, .. } if entries.len() == 1)
        );
    }
    step(&mut r, accept(&to(&rd.messages, 2)[0]));
    assert_eq!(take(&mut r).read_states, vec![confirmed(1)]);
}

/// A leader that steps down before the check ends fails its reads; a follower refuses to
/// start one.
#[test]
fn a_leader_that_steps_down_fails_its_reads() {
    let mut r = leader_replicating(3);
    r.read_index(1).unwrap();
    take(&mut r);
    step(&mut r, append(2, 1, 2, (0, 0), vec![], 0));
    assert_eq!(
        take(&mut r).read_states,
        vec![ReadState {
            id: 1,
            confirmed: false
        }]
    );
    assert!(r.read_index(2).is_err());
}

/// A single node is its own majority: its reads are confirmed at once.
#[test]
fn a_single_node_confirms_reads_at_once() {
    let mut r = new_node(1, 1);
    tick_until(&mut r, |r| r.is_leader());
    take(&mut r);
    // Its term has no entry yet: the read appends the no-op.
    assert_eq!(r.read_index(3), Ok(LogIndex(1)));
    let rd = take(&mut r);
    assert_eq!(rd.read_states, vec![confirmed(3)]);
    assert_eq!(r.log().committed(), LogIndex(1));
}

/// A leader with no entry of its own term in its log (no no-op on election) could never
/// commit the index of a read without a write coming: the read appends the no-op, and its
/// index is that of the no-op.
/// Reference: thesis §6.4, §5.4.2
#[test]
fn a_read_appends_the_no_op_its_term_lacks() {
    let mut r = restore(1, 3, 1, &[1, 1]);
    elect(&mut r, 3);
    for m in drain(&mut r) {
        step(&mut r, accept(&m));
    }
    take(&mut r);
    assert_eq!(r.term(), Term(2));
    assert_eq!(
        r.log().committed(),
        LogIndex(0),
        "no entry of term 2 to commit by"
    );
    assert_eq!(r.read_index(1), Ok(LogIndex(3)));
    assert_eq!(r.log().term_at(LogIndex(3)), Some(Term(2)));
    let rd = take(&mut r);
    assert_eq!(rd.entries.len(), 1);
    assert!(rd.entries[0].command.is_empty(), "a no-op");
    // A second read of the term appends nothing.
    assert_eq!(r.read_index(2), Ok(LogIndex(3)));
    for m in to(&rd.messages, 2) {
        step(&mut r, accept(&m));
    }
    assert_eq!(r.log().committed(), LogIndex(3));
    let states: Vec<u64> = take(&mut r).read_states.iter().map(|s| s.id).collect();
    assert_eq!(states, vec![1]);
}

/// The mutant the key/value suites must catch: reads confirmed without a round.
#[test]
fn the_read_without_quorum_mutant_confirms_at_once() {
    let mut config = config(1, 3);
    config.fault = RaftFault::ReadWithoutQuorum;
    let mut r = Raft::new(config, HardState::default(), None, vec![]);
    elect(&mut r, 3);
    take(&mut r);
    r.read_index(5).unwrap();
    assert_eq!(take(&mut r).read_states, vec![confirmed(5)]);
}

fn lease_node(id: NodeId) -> Raft {
    let mut config = extended(id, 3);
    config.lease_reads = true;
    Raft::new(config, HardState::default(), None, Vec::new())
}

fn granted_vote(msgs: &[Message]) -> Option<bool> {
    msgs.iter().find_map(|m| match m.body {
        MessageBody::RequestVoteResponse { vote_granted } => Some(vote_granted),
        _ => None,
    })
}

/// With leases, a follower that heard from its leader less than an election timeout ago
/// ignores a vote for a higher term (keeping its term), and grants it once that time has
/// passed.
/// Reference: thesis §6.4.1
#[test]
fn a_follower_in_a_leader_lease_ignores_votes_until_it_ends() {
    let mut r = lease_node(2);
    tick(&mut r, ELECTION);
    step(&mut r, append(1, 2, 1, (0, 0), vec![], 0));
    drain(&mut r);
    tick(&mut r, ELECTION - 1);
    step(&mut r, vote_req(3, 2, 2, 0, 0));
    assert_eq!(r.term(), Term(1), "the vote moved the term");
    assert_eq!(granted_vote(&drain(&mut r)), None);
    tick(&mut r, 1);
    drain(&mut r);
    step(&mut r, vote_req(3, 2, 2, 0, 0));
    assert_eq!(granted_vote(&drain(&mut r)), Some(true));
}

/// With leases, a node refuses votes in its first election timeout after starting, since it
/// may have answered a leader just before it crashed; without leases it grants them.
/// Reference: thesis §6.4.1
#[test]
fn a_restarted_node_with_leases_ignores_votes_at_first() {
    let mut r = lease_node(2);
    step(&mut r, vote_req(3, 2, 1, 0, 0));
    assert_eq!(granted_vote(&drain(&mut r)), None);
    assert_eq!(r.term(), Term(0));

    let mut plain = Raft::new(extended(2, 3), HardState::default(), None, Vec::new());
    step(&mut plain, vote_req(3, 2, 1, 0, 0));
    assert_eq!(granted_vote(&drain(&mut plain)), Some(true));
}

/// The confirmed round is the newest a majority echoed, the leader's own included.
/// Reference: thesis §6.4
#[test]
fn the_confirmed_round_is_the_majoritys() {
    let mut r = leader_replicating(3);
    drain(&mut r);
    r.read_index(1).unwrap();
    let rd = take(&mut r);
    assert_eq!((r.read_round(), r.confirmed_read_round()), (1, 0));
    step(&mut r, accept(&to(&rd.messages, 2)[0]));
    assert_eq!(r.confirmed_read_round(), 1);
}

/// A round is asked of just enough followers to make a majority (two of four in a cluster
/// of five), those that echoed the newest rounds first (the lowest ids among equals). A
/// round still unconfirmed a tick after it started is asked again of every follower that
/// has not echoed it, so a silent follower delays reads by a tick, not a heartbeat interval.
#[test]
fn a_round_asks_a_majority_then_everyone_a_tick_later() {
    let asked = |msgs: &[Message]| -> Vec<u64> { msgs.iter().map(|m| m.to).collect() };
    let mut r = leader_replicating(5);
    // An entry of the term, so that the read appends no no-op (whose AppendEntries would
    // carry the round to everyone).
    propose(&mut r, "x");
    drain(&mut r);
    r.read_index(1).unwrap();
    let rd = take(&mut r);
    assert_eq!(asked(&rd.messages), vec![2, 3]);
    step(&mut r, accept(&to(&rd.messages, 3)[0]));
    assert!(
        take(&mut r).read_states.is_empty(),
        "two of five is no majority"
    );
    step(&mut r, accept(&to(&rd.messages, 2)[0]));
    assert_eq!(take(&mut r).read_states, vec![confirmed(1)]);
    // Once a round is confirmed, a tick asks nobody.
    tick(&mut r, 1);
    assert!(!r.has_ready());

    // Followers 2 and 3 answered last, so round 2 goes to them; they stay silent.
    r.read_index(2).unwrap();
    let rd = take(&mut r);
    assert_eq!(asked(&rd.messages), vec![2, 3]);
    assert!(!r.has_ready(), "nothing more before a tick");
    tick(&mut r, 1);
    let rd = take(&mut r);
    assert_eq!(asked(&rd.messages), vec![2, 3, 4, 5]);
    assert!(rd.messages.iter().all(|m| round_of(m) == 2));
    tick(&mut r, 1);
    assert!(!r.has_ready(), "a round is widened once");
    step(&mut r, accept(&to(&rd.messages, 4)[0]));
    step(&mut r, accept(&to(&rd.messages, 5)[0]));
    assert_eq!(take(&mut r).read_states, vec![confirmed(2)]);

    // Now 4 and 5 echoed the newest round.
    r.read_index(3).unwrap();
    assert_eq!(asked(&take(&mut r).messages), vec![4, 5]);
}
