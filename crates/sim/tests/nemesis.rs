//! The nemesis simulation (see `sim::nemesis`) on fresh seeds, plus the regression seeds, in
//! both its variants.
//! `RAFTKV_SEEDS=<n>` runs n fresh seeds; the runner (`cargo run --release -p sim --bin
//! nemesis -- --seeds N`) runs thousands.

#[test]
fn nemesis() {
    sim::run("nemesis", nemesis_run);
}

async fn nemesis_run(seed: u64) {
    let outcome = sim::nemesis::run(seed).await;
    eprintln!("nemesis seed {seed}: {outcome:?}");
}

/// The nemesis with Clerks left reading at a leader cut off from the others.
#[test]
fn nemesis_deposed_readers() {
    sim::run("nemesis_deposed_readers", deposed_readers_run);
}

async fn deposed_readers_run(seed: u64) {
    let outcome = sim::nemesis::run_variant(seed, Variant::DeposedReaders).await;
    eprintln!("nemesis (deposed readers) seed {seed}: {outcome:?}");
}

// ---------------------------------------------------------------- negative controls
//
// Every check of the nemesis, and the invariant checks it runs under, must catch a
// deliberately broken Raft or server (`sim::mutants`) at the check meant for it.

use kv::Fault;
use raft::RaftFault;
use sim::mutants::{assert_mutant_caught, Body, Mutant};
use sim::nemesis::Variant;

fn caught(mutant: Mutant) {
    let tests: [(&str, Body); 1] = [("nemesis", sim::body!(nemesis_run))];
    assert_mutant_caught(mutant, &tests);
}

#[test]
fn mutant_commit_earlier_term_is_caught() {
    caught(Mutant::Raft(RaftFault::CommitEarlierTerm));
}

#[test]
fn mutant_vote_without_log_check_is_caught() {
    caught(Mutant::Raft(RaftFault::VoteWithoutLogCheck));
}

#[test]
fn mutant_send_before_persist_is_caught() {
    caught(Mutant::Raft(RaftFault::SendBeforePersist));
}

#[test]
fn mutant_truncate_on_match_is_caught() {
    caught(Mutant::Raft(RaftFault::TruncateOnMatch));
}

#[test]
fn mutant_leader_ignores_higher_term_is_caught() {
    caught(Mutant::Raft(RaftFault::LeaderIgnoresHigherTerm));
}

/// The liveness check.
#[test]
fn mutant_pre_vote_never_elects_is_caught() {
    caught(Mutant::Raft(RaftFault::PreVoteNeverElects));
}

/// The linearizability check, on reads that a leader cut off from the others answers without
/// their word: only the variant that leaves Clerks reading there makes them.
#[test]
fn mutant_read_without_quorum_is_caught() {
    let tests: [(&str, Body); 1] = [("nemesis_deposed_readers", sim::body!(deposed_readers_run))];
    assert_mutant_caught(Mutant::Raft(RaftFault::ReadWithoutQuorum), &tests);
}

/// The same, on reads served under a lease that outlives the election of the next leader.
#[test]
fn mutant_lease_outlives_election_is_caught() {
    let tests: [(&str, Body); 1] = [("nemesis_deposed_readers", sim::body!(deposed_readers_run))];
    assert_mutant_caught(Mutant::Raft(RaftFault::LeaseOutlivesElection), &tests);
}

/// The linearizability check.
#[test]
fn mutant_local_reads_are_caught() {
    caught(Mutant::Kv(Fault::LocalReads));
}

/// The duplicate-write check.
#[test]
fn mutant_no_duplicate_detection_is_caught() {
    caught(Mutant::Kv(Fault::NoDuplicateDetection));
}

/// The lost-write check.
#[test]
fn mutant_answer_before_commit_is_caught() {
    caught(Mutant::Kv(Fault::AnswerBeforeCommit));
}

/// The replica-convergence check.
#[test]
fn mutant_session_updated_on_propose_is_caught() {
    caught(Mutant::Kv(Fault::SessionUpdatedOnPropose));
}

/// The whole-map check of the commands.
#[test]
fn mutant_exec_as_separate_entries_is_caught() {
    caught(Mutant::Client(sim::ClientFault::ExecAsSeparateEntries));
}
