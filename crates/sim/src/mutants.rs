//! Mutants: deliberately broken variants of Raft, of the key/value server and of the
//! simulated clients, which the suites must catch, each at the check meant for that bug. A
//! test that no bug can fail proves nothing; these show that ours can.
//!
//! A mutant is switched on for the simulations of one thread (every simulation owns its
//! thread): the fixtures build their nodes with [`raft_fault`] and [`kv_fault`], and their
//! clients with [`client_fault`]. [`hunt`] runs suite bodies with a mutant on fresh seeds, as
//! CI runs the suites, until one fails; the failure counts as a catch only if the run's
//! *first* panic is one of the intended checks (a specific assertion), not any panic or a
//! time-out.

use crate::kv_cluster::ClientFault;
use crate::seed::{fresh_seed, run_one_catching};
use kv::Fault;
use raft::RaftFault;
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;

/// How many fresh seeds of each suite test a mutant test runs at most: fewer than CI runs each
/// simulated test on (see `.ci/run`), so what a hunt catches, CI's run of the suites would.
pub const CI_SEEDS: u64 = 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutant {
    Raft(RaftFault),
    Kv(Fault),
    /// The simulated clients' side ([`ClientFault`]).
    Client(ClientFault),
}

thread_local! {
    static MUTANT: Cell<Option<Mutant>> = const { Cell::new(None) };
}

/// Switches `mutant` on (or, with `None`, off) for the simulations run on this thread.
pub fn set_for_this_thread(mutant: Option<Mutant>) {
    MUTANT.with(|m| m.set(mutant));
}

/// Every mutant, by the name the nemesis runner's `--mutant` takes.
pub const ALL: [(&str, Mutant); 13] = [
    (
        "commit-earlier-term",
        Mutant::Raft(RaftFault::CommitEarlierTerm),
    ),
    (
        "vote-without-log-check",
        Mutant::Raft(RaftFault::VoteWithoutLogCheck),
    ),
    (
        "send-before-persist",
        Mutant::Raft(RaftFault::SendBeforePersist),
    ),
    (
        "truncate-on-match",
        Mutant::Raft(RaftFault::TruncateOnMatch),
    ),
    (
        "leader-ignores-higher-term",
        Mutant::Raft(RaftFault::LeaderIgnoresHigherTerm),
    ),
    (
        "pre-vote-never-elects",
        Mutant::Raft(RaftFault::PreVoteNeverElects),
    ),
    (
        "read-without-quorum",
        Mutant::Raft(RaftFault::ReadWithoutQuorum),
    ),
    (
        "lease-outlives-election",
        Mutant::Raft(RaftFault::LeaseOutlivesElection),
    ),
    ("local-reads", Mutant::Kv(Fault::LocalReads)),
    (
        "no-duplicate-detection",
        Mutant::Kv(Fault::NoDuplicateDetection),
    ),
    (
        "answer-before-commit",
        Mutant::Kv(Fault::AnswerBeforeCommit),
    ),
    (
        "session-updated-on-propose",
        Mutant::Kv(Fault::SessionUpdatedOnPropose),
    ),
    (
        "exec-as-separate-entries",
        Mutant::Client(ClientFault::ExecAsSeparateEntries),
    ),
];

/// The Raft mutant of the simulations on this thread (`RaftFault::None` normally).
pub fn raft_fault() -> RaftFault {
    match MUTANT.with(Cell::get) {
        Some(Mutant::Raft(f)) => f,
        _ => RaftFault::None,
    }
}

/// The key/value mutant of the simulations on this thread (`Fault::None` normally).
pub fn kv_fault() -> Fault {
    match MUTANT.with(Cell::get) {
        Some(Mutant::Kv(f)) => f,
        _ => Fault::None,
    }
}

/// The client mutant of the simulations on this thread (`ClientFault::None` normally).
pub fn client_fault() -> ClientFault {
    match MUTANT.with(Cell::get) {
        Some(Mutant::Client(f)) => f,
        _ => ClientFault::None,
    }
}

/// A suite test's body: the async function its `#[test]` runs on each seed.
pub type Body = fn(u64) -> Pin<Box<dyn Future<Output = ()>>>;

/// What a hunt found.
#[derive(Debug, Default)]
pub struct Hunt {
    /// The run that failed at an intended check: (test, seed, first panic).
    pub caught: Option<(String, u64, String)>,
    /// Runs that failed otherwise: (test, seed, first panic).
    pub other_failures: Vec<(String, u64, String)>,
    /// Simulated runs done.
    pub runs: u64,
}

/// Runs each of `tests` with `mutant` on up to `seeds` fresh seeds each (seed by seed, all
/// tests per seed), until a run's first panic contains one of `intended`.
pub fn hunt(mutant: Mutant, tests: &[(&str, Body)], seeds: u64, intended: &[&str]) -> Hunt {
    let mut hunt = Hunt::default();
    set_for_this_thread(Some(mutant));
    'seeds: for _ in 0..seeds {
        let seed = fresh_seed();
        for &(name, body) in tests {
            hunt.runs += 1;
            let Err(failure) = run_one_catching(name, seed, &body) else {
                continue;
            };
            let message = failure.first_panic().to_string();
            if intended.iter().any(|check| message.contains(check)) {
                hunt.caught = Some((name.to_string(), seed, message));
                break 'seeds;
            }
            hunt.other_failures.push((name.to_string(), seed, message));
        }
    }
    set_for_this_thread(None);
    hunt
}

/// Asserts that `mutant` is caught at one of the `intended` checks by `tests` run as CI runs
/// them ([`CI_SEEDS`] fresh seeds each).
///
/// `RAFTKV_MUTANT_RUNS=<k>` repeats the whole hunt k times on fresh seeds and reports the
/// catch rate (the hunt must then succeed in at least 95% of them): how the rates in
/// `docs/TESTING.md` are measured.
pub fn assert_caught(mutant: Mutant, tests: &[(&str, Body)], intended: &[&str]) {
    let repeats: u64 = std::env::var("RAFTKV_MUTANT_RUNS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1);
    let mut caught = 0;
    let mut runs = 0;
    for _ in 0..repeats {
        let hunt = hunt(mutant, tests, CI_SEEDS, intended);
        runs += hunt.runs;
        for (test, seed, message) in &hunt.other_failures {
            eprintln!("{mutant:?}: {test} seed {seed} failed elsewhere: {message}");
        }
        match &hunt.caught {
            Some((test, seed, message)) => {
                caught += 1;
                eprintln!(
                    "{mutant:?} caught by {test} (seed {seed}) after {} run(s): {message}",
                    hunt.runs
                );
            }
            None if repeats == 1 => panic!(
                "{mutant:?} was not caught at its intended check ({intended:?}) in {} runs; \
                 {} failed elsewhere",
                hunt.runs,
                hunt.other_failures.len()
            ),
            None => eprintln!("{mutant:?} NOT caught in {} runs", hunt.runs),
        }
    }
    if repeats > 1 {
        eprintln!(
            "{mutant:?}: caught in {caught}/{repeats} CI-sized hunts ({runs} simulated runs)"
        );
        assert!(
            caught * 100 >= repeats * 95,
            "{mutant:?} caught in only {caught} of {repeats} hunts"
        );
    }
}

/// The checks meant to catch each mutant: a run catches it only if its first panic is one
/// of these (each a substring of the check's message).
pub fn intended_checks(mutant: Mutant) -> &'static [&'static str] {
    match mutant {
        // State Machine Safety (Figure 3), and the rule itself as a leader invariant.
        Mutant::Raft(RaftFault::CommitEarlierTerm) => &[
            "invariant violated (§5.4.2)",
            "truncating committed entry",
            "apply error: commit index",
            "committed values do not match",
        ],
        // Leader Completeness (§5.4.1): a stale leader overwrites committed entries.
        Mutant::Raft(RaftFault::VoteWithoutLogCheck) => &[
            "truncating committed entry",
            "apply error: commit index",
            "committed values do not match",
            "[lost write]",
        ],
        Mutant::Raft(RaftFault::SendBeforePersist) => &["durability contract violated (§3.8)"],
        // Acknowledged, then committed, entries are dropped.
        Mutant::Raft(RaftFault::TruncateOnMatch) => &[
            "truncating committed entry",
            "apply error: commit index",
            "committed values do not match",
        ],
        // Election Safety (§5.2).
        Mutant::Raft(RaftFault::LeaderIgnoresHigherTerm) => &[
            "invariant violated (§5.2)",
            "election safety violated (§5.2)",
            "(>1) leaders",
        ],
        Mutant::Raft(RaftFault::PreVoteNeverElects) => {
            &["expected one leader, got none", "[liveness]"]
        }
        Mutant::Raft(RaftFault::None)
        | Mutant::Kv(Fault::None)
        | Mutant::Client(ClientFault::None) => &[],
        // Stale reads: a read in a minority, a client missing its own latest write, or any
        // read no order of the writes explains.
        Mutant::Kv(Fault::LocalReads)
        | Mutant::Raft(RaftFault::ReadWithoutQuorum)
        | Mutant::Raft(RaftFault::LeaseOutlivesElection) => &[
            "Get in minority completed",
            "get wrong value",
            "history is not linearizable",
        ],
        Mutant::Kv(Fault::NoDuplicateDetection) => &[
            "duplicate element",
            "[duplicate write]",
            "get wrong value",
            "history is not linearizable",
        ],
        // An acknowledged write that never commits.
        Mutant::Kv(Fault::AnswerBeforeCommit) => &[
            "[lost write]",
            "missing element",
            "get wrong value",
            "history is not linearizable",
        ],
        // The leader's replica skips writes the others apply.
        Mutant::Kv(Fault::SessionUpdatedOnPropose) => &[
            "[divergence]",
            "hold different states",
            "get wrong value",
            "history is not linearizable",
        ],
        // Another client's write lands between a transaction's commands: only the whole-map
        // check of the commands can see it (the course's ops are not in transactions).
        Mutant::Client(ClientFault::ExecAsSeparateEntries) => {
            &["commands history is not linearizable"]
        }
    }
}

/// Asserts that `mutant` is caught at one of its [`intended_checks`] by `tests`.
pub fn assert_mutant_caught(mutant: Mutant, tests: &[(&str, Body)]) {
    assert_caught(mutant, tests, intended_checks(mutant));
}

/// Wraps an async suite body as a [`Body`].
#[macro_export]
macro_rules! body {
    ($f:path) => {
        (|seed: u64| {
            Box::pin($f(seed)) as ::std::pin::Pin<Box<dyn ::std::future::Future<Output = ()>>>
        }) as $crate::mutants::Body
    };
}
