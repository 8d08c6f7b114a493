//! The course's key/value part 3B suite (snapshots), with its parameters: servers snapshot
//! once the log passes `maxraftstate` = 1000 bytes, the persisted Raft state must stay within
//! 8 times that, lagging servers catch up by InstallSnapshot, and a restarted server recovers
//! from its snapshot (sessions included: a retry after a snapshot is still not applied twice).
//! Every history is checked for linearizability.

mod common;

use common::{check_clnt_appends, cluster, generic, generic_test, speed_test, Generic};
use sim::kv_check::check_linearizable;
use sim::KV_ELECTION_TIMEOUT;
use tokio::time::sleep;

const MAXRAFTSTATE: usize = 1000;

fn snapshotting(nclients: u64, nservers: usize) -> Generic {
    Generic {
        maxraftstate: Some(MAXRAFTSTATE),
        ..generic(nclients, nservers)
    }
}

/// The largest persisted Raft state in the cluster (the course's `LogSize`).
fn log_size(cfg: &sim::KvCluster) -> usize {
    (0..cfg.n()).map(|i| cfg.log_size(i)).max().unwrap_or(0)
}

/// Puts into a majority that leaves one server behind; the log is trimmed; then a group that
/// needs the lagging server works, so it must have caught up by snapshot.
#[test]
fn snapshot_rpc_3b() {
    sim::run("snapshot_rpc_3b", snapshot_rpc);
}

async fn snapshot_rpc(seed: u64) {
    let cfg = cluster(3, false, seed, Some(MAXRAFTSTATE));
    let mut ck = cfg.make_client(&cfg.all());
    cfg.put(&mut ck, "a", "A", 0).await;
    assert_eq!(cfg.get(&mut ck, "a", 0).await, "A");

    // A bunch of puts into the majority partition.
    cfg.partition(&[0, 1], &[2]);
    let mut ck1 = cfg.make_client(&[0, 1]);
    for i in 0..50 {
        cfg.put(&mut ck1, &i.to_string(), &i.to_string(), 1).await;
    }
    sleep(KV_ELECTION_TIMEOUT).await;
    cfg.put(&mut ck1, "b", "B", 1).await;

    // The majority has thrown away most of its log.
    let size = log_size(&cfg);
    assert!(
        size <= 8 * MAXRAFTSTATE,
        "logs were not trimmed ({size} > 8 * {MAXRAFTSTATE})"
    );

    // A group that needs the lagging server, which must catch up.
    cfg.partition(&[0, 2], &[1]);
    let mut ck2 = cfg.make_client(&[0, 2]);
    cfg.put(&mut ck2, "c", "C", 2).await;
    cfg.put(&mut ck2, "d", "D", 2).await;
    assert_eq!(cfg.get(&mut ck2, "a", 2).await, "A");
    assert_eq!(cfg.get(&mut ck2, "b", 2).await, "B");
    assert_eq!(cfg.get(&mut ck2, "1", 2).await, "1");
    assert_eq!(cfg.get(&mut ck2, "49", 2).await, "49");

    // Now everybody.
    cfg.partition(&[0, 1, 2], &[]);
    cfg.put(&mut ck, "e", "E", 0).await;
    assert_eq!(cfg.get(&mut ck, "c", 0).await, "C");
    assert_eq!(cfg.get(&mut ck, "e", 0).await, "E");
    assert_eq!(cfg.get(&mut ck, "1", 0).await, "1");
    let chunks = cfg.stats().snapshot().get("snapshot chunks sent").copied();
    assert!(
        chunks.unwrap_or(0) > 0,
        "the lagging server caught up without a snapshot"
    );
    check_linearizable(&cfg.history(), "snapshot_rpc_3b", seed);
}

/// 400 puts of one key by one client: the log is trimmed and the snapshot stays small (the
/// session table keeps only what it must).
#[test]
fn snapshot_size_3b() {
    sim::run("snapshot_size_3b", snapshot_size);
}

async fn snapshot_size(seed: u64) {
    let maxsnapshotstate = 500;
    let cfg = cluster(3, false, seed, Some(MAXRAFTSTATE));
    let mut ck = cfg.make_client(&cfg.all());
    for _ in 0..200 {
        cfg.put(&mut ck, "x", "0", 0).await;
        assert_eq!(cfg.get(&mut ck, "x", 0).await, "0");
        cfg.put(&mut ck, "x", "1", 0).await;
        assert_eq!(cfg.get(&mut ck, "x", 0).await, "1");
    }
    let size = log_size(&cfg);
    assert!(
        size <= 8 * MAXRAFTSTATE,
        "logs were not trimmed ({size} > 8 * {MAXRAFTSTATE})"
    );
    for i in 0..cfg.n() {
        let snapshot = cfg.snapshot_size(i);
        assert!(snapshot > 0, "server {i} never snapshotted");
        assert!(
            snapshot <= maxsnapshotstate,
            "snapshot too large: {snapshot} > {maxsnapshotstate}"
        );
    }
    check_linearizable(&cfg.history(), "snapshot_size_3b", seed);
}

#[test]
fn speed_3b() {
    sim::run("speed_3b", speed);
}

async fn speed(seed: u64) {
    speed_test("speed_3b", seed, Some(MAXRAFTSTATE)).await;
}

#[test]
fn snapshot_recover_3b() {
    sim::run("snapshot_recover_3b", snapshot_recover);
}

async fn snapshot_recover(seed: u64) {
    let p = Generic {
        crash: true,
        ..snapshotting(1, 5)
    };
    generic_test("snapshot_recover_3b", seed, p).await;
}

#[test]
fn snapshot_recover_many_clients_3b() {
    sim::run(
        "snapshot_recover_many_clients_3b",
        snapshot_recover_many_clients,
    );
}

async fn snapshot_recover_many_clients(seed: u64) {
    let p = Generic {
        crash: true,
        ..snapshotting(20, 5)
    };
    generic_test("snapshot_recover_many_clients_3b", seed, p).await;
}

#[test]
fn snapshot_unreliable_3b() {
    sim::run("snapshot_unreliable_3b", snapshot_unreliable);
}

async fn snapshot_unreliable(seed: u64) {
    let p = Generic {
        unreliable: true,
        ..snapshotting(5, 5)
    };
    generic_test("snapshot_unreliable_3b", seed, p).await;
}

#[test]
fn snapshot_unreliable_recover_3b() {
    sim::run(
        "snapshot_unreliable_recover_3b",
        snapshot_unreliable_recover,
    );
}

async fn snapshot_unreliable_recover(seed: u64) {
    let p = Generic {
        unreliable: true,
        crash: true,
        ..snapshotting(5, 5)
    };
    generic_test("snapshot_unreliable_recover_3b", seed, p).await;
}

#[test]
fn snapshot_unreliable_recover_concurrent_partition_3b() {
    sim::run(
        "snapshot_unreliable_recover_concurrent_partition_3b",
        snapshot_unreliable_recover_concurrent_partition,
    );
}

async fn snapshot_unreliable_recover_concurrent_partition(seed: u64) {
    let p = Generic {
        unreliable: true,
        crash: true,
        partitions: true,
        ..snapshotting(5, 5)
    };
    let name = "snapshot_unreliable_recover_concurrent_partition_3b";
    generic_test(name, seed, p).await;
}

#[test]
fn snapshot_unreliable_recover_concurrent_partition_linearizable_3b() {
    sim::run(
        "snapshot_unreliable_recover_concurrent_partition_linearizable_3b",
        snapshot_unreliable_recover_concurrent_partition_linearizable,
    );
}

async fn snapshot_unreliable_recover_concurrent_partition_linearizable(seed: u64) {
    let p = Generic {
        unreliable: true,
        crash: true,
        partitions: true,
        randomkeys: true,
        ..snapshotting(15, 7)
    };
    let name = "snapshot_unreliable_recover_concurrent_partition_linearizable_3b";
    generic_test(name, seed, p).await;
}

/// A retried request after a snapshot is still recognised: the snapshot carries the session
/// table. One client's appends, each sent twice, across restarts from snapshots.
#[test]
fn snapshot_keeps_sessions_3b() {
    sim::run("snapshot_keeps_sessions_3b", snapshot_keeps_sessions);
}

async fn snapshot_keeps_sessions(seed: u64) {
    let cfg = cluster(3, true, seed, Some(MAXRAFTSTATE));
    let mut ck = cfg.make_client(&cfg.all());
    let rounds = 60;
    for j in 0..rounds {
        cfg.append(&mut ck, "k", &format!("x 0 {j} y"), 0).await;
        if j % 20 == 19 {
            for i in 0..cfg.n() {
                cfg.shutdown_server(i);
            }
            for i in 0..cfg.n() {
                cfg.start_server(i);
            }
            cfg.connect_all();
        }
    }
    let v = cfg.get(&mut ck, "k", 0).await;
    check_clnt_appends(0, &v, rounds);
    assert!(cfg.snapshot_size(0) > 0, "no snapshot was taken");
    check_linearizable(&cfg.history(), "snapshot_keeps_sessions_3b", seed);
}
