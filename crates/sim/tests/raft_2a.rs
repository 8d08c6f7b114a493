//! The course's Raft part 2A suite (leader election), with its parameters.

use sim::{RaftCluster, RAFT_ELECTION_TIMEOUT};
use std::time::Duration;
use tokio::time::{sleep, Instant};

#[test]
fn initial_election_2a() {
    sim::run("initial_election_2a", initial_election);
}

async fn initial_election(seed: u64) {
    let cfg = RaftCluster::new(3, false, seed);
    // Is a leader elected?
    cfg.check_one_leader().await;
    // Sleep a bit to avoid racing with followers learning of the election, then check
    // that all peers agree on the term.
    sleep(Duration::from_millis(50)).await;
    let term1 = cfg.check_terms();
    assert!(term1 >= 1, "term is {term1}, but should be at least 1");
    // Does the leader+term stay the same if there is no network failure?
    sleep(2 * RAFT_ELECTION_TIMEOUT).await;
    let term2 = cfg.check_terms();
    if term1 != term2 {
        eprintln!("warning: term changed even though there were no failures");
    }
    // There should still be a leader.
    cfg.check_one_leader().await;
    cfg.end();
}

#[test]
fn re_election_2a() {
    sim::run("re_election_2a", re_election);
}

async fn re_election(seed: u64) {
    let servers = 3;
    let cfg = RaftCluster::new(servers, false, seed);
    let leader1 = cfg.check_one_leader().await;
    // If the leader disconnects, a new one should be elected.
    cfg.disconnect(leader1);
    cfg.check_one_leader().await;
    // If the old leader rejoins, that shouldn't disturb the new leader.
    cfg.connect(leader1);
    let leader2 = cfg.check_one_leader().await;
    // If there's no quorum, no new leader should be elected.
    cfg.disconnect(leader2);
    cfg.disconnect((leader2 + 1) % servers);
    sleep(2 * RAFT_ELECTION_TIMEOUT).await;
    cfg.check_no_leader();
    // If a quorum arises, it should elect a leader.
    cfg.connect((leader2 + 1) % servers);
    cfg.check_one_leader().await;
    // Re-join of last node shouldn't prevent leader from existing.
    cfg.connect(leader2);
    cfg.check_one_leader().await;
    cfg.end();
}

/// §5.1: a leader that learns of a newer term steps down at once. Not in the course's suite:
/// the old leader is cut off only until the others elect a new one, and rejoins at once,
/// often while it still believes it leads (check-quorum has not deposed it yet). The first
/// message it gets with the newer term must make it a follower.
#[test]
fn stale_leader_steps_down_2a() {
    sim::run("stale_leader_steps_down_2a", stale_leader_steps_down);
}

async fn stale_leader_steps_down(seed: u64) {
    let servers = 5;
    let cfg = RaftCluster::new(servers, false, seed);
    let mut rejoined_as_leader = 0;
    for _ in 0..10 {
        let old = cfg.check_one_leader().await;
        let old_node = cfg.node(old).expect("the leader is up");
        let old_term = old_node.state().0;
        cfg.disconnect(old);
        let t0 = Instant::now();
        let new_term = loop {
            sleep(Duration::from_millis(5)).await;
            let successor = (0..servers)
                .filter(|&i| i != old)
                .filter_map(|i| cfg.node(i))
                .map(|n| n.state())
                .find(|&(term, leading)| leading && term > old_term);
            if let Some((term, _)) = successor {
                break term;
            }
            assert!(
                t0.elapsed() < RAFT_ELECTION_TIMEOUT * 5,
                "the majority elected no new leader"
            );
        };
        if old_node.state().1 {
            rejoined_as_leader += 1;
        }
        cfg.connect(old);
        // A heartbeat interval or two later, the old leader has heard of the newer term.
        sleep(Duration::from_millis(300)).await;
        let (term, leading) = old_node.state();
        assert!(
            term >= new_term && !leading,
            "the old leader of term {old_term} still leads (term {term}) after rejoining a \
             cluster at term {new_term}"
        );
        cfg.check_one_leader().await;
    }
    eprintln!("stale_leader_steps_down: rejoined while still leading {rejoined_as_leader}/10");
    cfg.end();
}

#[test]
fn many_elections_2a() {
    sim::run("many_elections_2a", many_elections);
}

async fn many_elections(seed: u64) {
    let servers = 7;
    let cfg = RaftCluster::new(servers, false, seed);
    cfg.check_one_leader().await;
    for _ in 1..10 {
        // Disconnect three nodes.
        let i1 = cfg.rand(0..servers as u64) as usize;
        let i2 = cfg.rand(0..servers as u64) as usize;
        let i3 = cfg.rand(0..servers as u64) as usize;
        cfg.disconnect(i1);
        cfg.disconnect(i2);
        cfg.disconnect(i3);
        // Either the current leader should still be alive, or the remaining four should
        // elect a new one.
        cfg.check_one_leader().await;
        cfg.connect(i1);
        cfg.connect(i2);
        cfg.connect(i3);
    }
    cfg.check_one_leader().await;
    cfg.end();
}

// ---------------------------------------------------------------- mutants
//
// Deliberately broken Raft (`sim::mutants`) that this suite must catch, each at the check
// meant for it, on the fresh seeds CI gives the suites.

use raft::RaftFault;
use sim::mutants::{assert_mutant_caught, Body, Mutant};

fn suite() -> Vec<(&'static str, Body)> {
    vec![
        ("initial_election_2a", sim::body!(initial_election)),
        ("re_election_2a", sim::body!(re_election)),
        (
            "stale_leader_steps_down_2a",
            sim::body!(stale_leader_steps_down),
        ),
        ("many_elections_2a", sim::body!(many_elections)),
    ]
}

#[test]
fn mutant_leader_ignores_higher_term_is_caught() {
    assert_mutant_caught(Mutant::Raft(RaftFault::LeaderIgnoresHigherTerm), &suite());
}

#[test]
fn mutant_pre_vote_never_elects_is_caught() {
    assert_mutant_caught(Mutant::Raft(RaftFault::PreVoteNeverElects), &suite());
}
