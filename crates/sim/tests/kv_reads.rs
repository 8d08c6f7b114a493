//! Reads against a leader that has lost its majority and does not know it yet. With
//! ReadIndex (thesis §6.4) such a leader must not answer: its round of heartbeats finds no
//! majority. It leads on until check-quorum makes it step down, while the majority may
//! already have elected a new leader and written: a read answered in between is stale.
//! With a lease (thesis §6.4.1) it may answer until the lease ends, which must come before
//! anyone else can be elected. Reads are in every mode by seed (`sim::read_mode_for`), like
//! every suite.

use sim::kv_check::check_linearizable;
use sim::mutants::{assert_mutant_caught, Body, Mutant};
use sim::KvCluster;
use std::time::Duration;
use tokio::time::{sleep, timeout, Instant};

#[test]
fn deposed_leader_reads() {
    sim::run("deposed_leader_reads", deposed_leader);
}

/// The leader is cut off alone; a client that reaches only it reads over and over, while a
/// client of the majority writes new values, for longer than an election and check-quorum
/// take, and at least until the majority has written twice (split votes can delay its
/// election past the window). Every read that completes must be linearizable with the
/// writes.
async fn deposed_leader(seed: u64) {
    let cfg = KvCluster::new(3, false, seed);
    let mut ck = cfg.make_client(&cfg.all());
    cfg.put(&mut ck, "k", "0", 0).await;
    let leader = loop {
        if let Some(leader) = cfg.leader() {
            break leader;
        }
        sleep(Duration::from_millis(10)).await;
    };
    let others: Vec<usize> = cfg.all().into_iter().filter(|&s| s != leader).collect();
    // The reader's session is open before the partition: opening it takes a log entry.
    let mut reader = cfg.make_client(&[leader]);
    assert_eq!(cfg.get(&mut reader, "k", 2).await, "0");
    cfg.partition(&[leader], &others);
    let end = Instant::now() + Duration::from_millis(1500);
    // Elections in a two-node majority split when both time out in one tick; a handful of
    // those in a row is unlucky but correct, ten seconds of them is not.
    let give_up = end + Duration::from_secs(10);

    let writer = {
        let cfg = cfg.clone();
        let mut ck = cfg.make_client(&others);
        tokio::spawn(async move {
            let mut written = 0;
            while (Instant::now() < end || written < 2) && Instant::now() < give_up {
                cfg.put(&mut ck, "k", &(written + 1).to_string(), 1).await;
                written += 1;
            }
            written
        })
    };
    while !writer.is_finished() {
        // A read the old leader cannot answer is abandoned, and the next one tried.
        let _ = timeout(Duration::from_millis(20), cfg.get(&mut reader, "k", 2)).await;
    }
    let written = writer.await.expect("the writer");
    assert!(
        written >= 2,
        "the majority wrote {written} values in 11.5 s"
    );
    check_linearizable(&cfg.history(), "deposed_leader_reads", seed);
}

/// A leader that confirms reads without a round of heartbeats answers them from the old
/// state.
#[test]
fn mutant_read_without_quorum_is_caught() {
    let tests: [(&str, Body); 1] = [("deposed_leader_reads", sim::body!(deposed_leader))];
    assert_mutant_caught(Mutant::Raft(raft::RaftFault::ReadWithoutQuorum), &tests);
}

/// A leader whose lease outlasts the election timeout answers reads from the old state after
/// the majority has elected a new leader and written.
#[test]
fn mutant_lease_outlives_election_is_caught() {
    let tests: [(&str, Body); 1] = [("deposed_leader_reads", sim::body!(deposed_leader))];
    assert_mutant_caught(Mutant::Raft(raft::RaftFault::LeaseOutlivesElection), &tests);
}
