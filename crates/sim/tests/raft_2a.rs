//! The course's Raft part 2A suite (leader election), with its parameters.

use sim::{RaftCluster, RAFT_ELECTION_TIMEOUT};
use std::time::Duration;
use tokio::time::sleep;

#[test]
fn initial_election_2a() {
    sim::run("initial_election_2a", |seed| async move {
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
    });
}

#[test]
fn re_election_2a() {
    sim::run("re_election_2a", |seed| async move {
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
    });
}

#[test]
fn many_elections_2a() {
    sim::run("many_elections_2a", |seed| async move {
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
    });
}
