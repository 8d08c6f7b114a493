//! The course's key/value part 3A suite, with its parameters. Every test checks its whole
//! history with the linearizability checker; a checker timeout fails the test.

mod common;

use common::{check_concurrent_appends, generic, generic_test, speed_test, Generic};
use kv::Fault;
use sim::kv_check::check_linearizable;
use sim::{KvCluster, KV_ELECTION_TIMEOUT};
use std::time::Duration;
use tokio::time::{sleep, timeout};

#[test]
fn basic_3a() {
    sim::run("basic_3a", basic);
}

async fn basic(seed: u64) {
    generic_test("basic_3a", seed, generic(1, 5)).await;
}

#[test]
fn speed_3a() {
    sim::run("speed_3a", speed);
}

async fn speed(seed: u64) {
    speed_test("speed_3a", seed, None).await;
}

#[test]
fn concurrent_3a() {
    sim::run("concurrent_3a", concurrent);
}

async fn concurrent(seed: u64) {
    generic_test("concurrent_3a", seed, generic(5, 5)).await;
}

#[test]
fn unreliable_3a() {
    sim::run("unreliable_3a", unreliable);
}

async fn unreliable(seed: u64) {
    let p = Generic {
        unreliable: true,
        ..generic(5, 5)
    };
    generic_test("unreliable_3a", seed, p).await;
}

#[test]
fn unreliable_one_key_3a() {
    sim::run("unreliable_one_key_3a", unreliable_one_key);
}

async fn unreliable_one_key(seed: u64) {
    let cfg = KvCluster::new(3, true, seed);
    let mut ck = cfg.make_client(&cfg.all());
    cfg.put(&mut ck, "k", "", 100).await;
    let (nclient, upto) = (5u64, 10u64);
    let tasks: Vec<_> = (0..nclient)
        .map(|me| {
            let cfg = cfg.clone();
            tokio::spawn(async move {
                let mut myck = cfg.make_client(&cfg.all());
                for n in 0..upto {
                    cfg.append(&mut myck, "k", &format!("x {me} {n} y"), me)
                        .await;
                }
            })
        })
        .collect();
    for t in tasks {
        if let Err(e) = t.await {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    let v = cfg.get(&mut ck, "k", 100).await;
    check_concurrent_appends(&v, &vec![upto; nclient as usize]);
    check_linearizable(&cfg.history(), "unreliable_one_key_3a", seed);
}

/// Submit a request in the minority partition and check that the request doesn't go through
/// until the partition heals. The leader in the original network ends up in the minority.
#[test]
fn one_partition_3a() {
    sim::run("one_partition_3a", one_partition);
}

async fn one_partition(seed: u64) {
    let cfg = KvCluster::new(5, false, seed);
    let mut ck = cfg.make_client(&cfg.all());
    cfg.put(&mut ck, "1", "13", 0).await;

    // Progress in majority.
    let (p1, p2) = cfg.make_partition();
    cfg.partition(&p1, &p2);
    let mut ckp1 = cfg.make_client(&p1);
    let ckp2a = cfg.make_client(&p2);
    let ckp2b = cfg.make_client(&p2);
    let (ends2a, ends2b) = (ckp2a.ends(), ckp2b.ends());
    cfg.put(&mut ckp1, "1", "14", 1).await;
    assert_eq!(cfg.get(&mut ckp1, "1", 1).await, "14");

    // No progress in minority.
    let minority_put = {
        let (cfg, mut ck) = (cfg.clone(), ckp2a);
        tokio::spawn(async move {
            cfg.put(&mut ck, "1", "15", 2).await;
            ck
        })
    };
    let minority_get = {
        let (cfg, mut ck) = (cfg.clone(), ckp2b);
        tokio::spawn(async move {
            cfg.get(&mut ck, "1", 3).await;
            ck
        })
    };
    sleep(Duration::from_secs(1)).await;
    assert!(!minority_put.is_finished(), "Put in minority completed");
    assert!(!minority_get.is_finished(), "Get in minority completed");
    assert_eq!(cfg.get(&mut ckp1, "1", 1).await, "14");
    cfg.put(&mut ckp1, "1", "16", 1).await;
    assert_eq!(cfg.get(&mut ckp1, "1", 1).await, "16");

    // Completion after heal.
    cfg.connect_all();
    cfg.connect_client(&ends2a, &cfg.all());
    cfg.connect_client(&ends2b, &cfg.all());
    sleep(KV_ELECTION_TIMEOUT).await;
    let budget = Duration::from_millis(30 * 100);
    let put_done = timeout(budget, minority_put).await;
    assert!(put_done.is_ok(), "Put did not complete");
    let get_done = timeout(budget, minority_get).await;
    assert!(get_done.is_ok(), "Get did not complete");
    assert_eq!(cfg.get(&mut ck, "1", 0).await, "15");
    check_linearizable(&cfg.history(), "one_partition_3a", seed);
}

#[test]
fn many_partitions_one_client_3a() {
    sim::run("many_partitions_one_client_3a", many_partitions_one_client);
}

async fn many_partitions_one_client(seed: u64) {
    let p = Generic {
        partitions: true,
        ..generic(1, 5)
    };
    generic_test("many_partitions_one_client_3a", seed, p).await;
}

#[test]
fn many_partitions_many_clients_3a() {
    sim::run(
        "many_partitions_many_clients_3a",
        many_partitions_many_clients,
    );
}

async fn many_partitions_many_clients(seed: u64) {
    let p = Generic {
        partitions: true,
        ..generic(5, 5)
    };
    generic_test("many_partitions_many_clients_3a", seed, p).await;
}

#[test]
fn persist_one_client_3a() {
    sim::run("persist_one_client_3a", persist_one_client);
}

async fn persist_one_client(seed: u64) {
    let p = Generic {
        crash: true,
        ..generic(1, 5)
    };
    generic_test("persist_one_client_3a", seed, p).await;
}

#[test]
fn persist_concurrent_3a() {
    sim::run("persist_concurrent_3a", persist_concurrent);
}

async fn persist_concurrent(seed: u64) {
    let p = Generic {
        crash: true,
        ..generic(5, 5)
    };
    generic_test("persist_concurrent_3a", seed, p).await;
}

#[test]
fn persist_concurrent_unreliable_3a() {
    sim::run(
        "persist_concurrent_unreliable_3a",
        persist_concurrent_unreliable,
    );
}

async fn persist_concurrent_unreliable(seed: u64) {
    let p = Generic {
        unreliable: true,
        crash: true,
        ..generic(5, 5)
    };
    generic_test("persist_concurrent_unreliable_3a", seed, p).await;
}

#[test]
fn persist_partition_3a() {
    sim::run("persist_partition_3a", persist_partition);
}

async fn persist_partition(seed: u64) {
    let p = Generic {
        crash: true,
        partitions: true,
        ..generic(5, 5)
    };
    generic_test("persist_partition_3a", seed, p).await;
}

#[test]
fn persist_partition_unreliable_3a() {
    sim::run(
        "persist_partition_unreliable_3a",
        persist_partition_unreliable,
    );
}

async fn persist_partition_unreliable(seed: u64) {
    let p = Generic {
        unreliable: true,
        crash: true,
        partitions: true,
        ..generic(5, 5)
    };
    generic_test("persist_partition_unreliable_3a", seed, p).await;
}

#[test]
fn persist_partition_unreliable_linearizable_3a() {
    sim::run(
        "persist_partition_unreliable_linearizable_3a",
        persist_partition_unreliable_linearizable,
    );
}

async fn persist_partition_unreliable_linearizable(seed: u64) {
    let p = Generic {
        unreliable: true,
        crash: true,
        partitions: true,
        randomkeys: true,
        ..generic(15, 7)
    };
    generic_test("persist_partition_unreliable_linearizable_3a", seed, p).await;
}

// ---------------------------------------------------------------- negative controls
//
// Deliberately broken servers (`sim::mutants`) that the suite must catch, each at the check
// meant for it, on the fresh seeds CI gives the suites.

use sim::mutants::{assert_mutant_caught, Body, Mutant};

fn suite() -> Vec<(&'static str, Body)> {
    vec![
        ("one_partition_3a", sim::body!(one_partition)),
        ("unreliable_one_key_3a", sim::body!(unreliable_one_key)),
        ("basic_3a", sim::body!(basic)),
        ("concurrent_3a", sim::body!(concurrent)),
        ("unreliable_3a", sim::body!(unreliable)),
        (
            "many_partitions_many_clients_3a",
            sim::body!(many_partitions_many_clients),
        ),
        (
            "persist_concurrent_unreliable_3a",
            sim::body!(persist_concurrent_unreliable),
        ),
        (
            "persist_partition_unreliable_3a",
            sim::body!(persist_partition_unreliable),
        ),
    ]
}

/// A leader that answers `Get` from local state, without the log, serves stale reads once it
/// is cut off in a minority.
#[test]
fn mutant_local_reads_are_caught() {
    assert_mutant_caught(Mutant::Kv(Fault::LocalReads), &suite());
}

/// Without duplicate detection, a retried append is applied twice.
#[test]
fn mutant_no_duplicate_detection_is_caught() {
    assert_mutant_caught(Mutant::Kv(Fault::NoDuplicateDetection), &suite());
}

/// A write answered before it commits is lost when leadership changes.
#[test]
fn mutant_answer_before_commit_is_caught() {
    assert_mutant_caught(Mutant::Kv(Fault::AnswerBeforeCommit), &suite());
}

/// A session table changed when proposing makes the leader skip its own writes.
#[test]
fn mutant_session_updated_on_propose_is_caught() {
    assert_mutant_caught(Mutant::Kv(Fault::SessionUpdatedOnPropose), &suite());
}
