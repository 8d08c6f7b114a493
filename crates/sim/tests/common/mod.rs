//! What the key/value suites (3A, 3B) share: the course's `GenericTest` and its clients and
//! partitioner, the speed test, and the size checks of the persisted state.

#![allow(dead_code)]

use kv::{KvConfig, SnapshotPolicy};
use sim::kv_check::check_linearizable;
use sim::{KvCluster, KvOptions, KV_ELECTION_TIMEOUT};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::sleep;

/// A cluster whose servers snapshot once the log passes `maxraftstate` bytes (never without).
pub fn cluster(
    servers: usize,
    unreliable: bool,
    seed: u64,
    maxraftstate: Option<usize>,
) -> KvCluster {
    let options = KvOptions {
        kv: KvConfig {
            snapshots: SnapshotPolicy {
                max_log_bytes: maxraftstate,
                ..SnapshotPolicy::default()
            },
            ..KvConfig::default()
        },
        ..KvOptions::new(servers, unreliable)
    };
    KvCluster::with_options(options, seed)
}

/// The course's size checks: with snapshots, the Raft state stays within 8 × `maxraftstate`;
/// without, no snapshot is ever taken.
pub fn check_sizes(cfg: &KvCluster, maxraftstate: Option<usize>) {
    for i in 0..cfg.n() {
        match maxraftstate {
            Some(max) => {
                let size = cfg.log_size(i);
                assert!(
                    size <= 8 * max,
                    "logs were not trimmed: server {i} holds {size} > 8 * {max} bytes"
                );
            }
            None => {
                let size = cfg.snapshot_size(i);
                assert_eq!(
                    size, 0,
                    "server {i} took a snapshot of {size} bytes without maxraftstate"
                );
                assert!(cfg.log_size(i) > 0, "server {i} persisted nothing");
            }
        }
    }
}

/// Checks that `v` holds each of `client`'s `count` appends exactly once, in order.
pub fn check_clnt_appends(client: u64, v: &str, count: u64) {
    let mut last: Option<usize> = None;
    for j in 0..count {
        let wanted = format!("x {client} {j} y");
        let off = v.find(&wanted).unwrap_or_else(|| {
            panic!("{client} missing element {wanted:?} in Append result {v:?}")
        });
        let off1 = v.rfind(&wanted).expect("found once");
        assert_eq!(off, off1, "duplicate element {wanted:?} in Append result");
        if let Some(last) = last {
            assert!(
                off > last,
                "wrong order for element {wanted:?} in Append result"
            );
        }
        last = Some(off);
    }
}

/// Checks that `v` holds each client's appends exactly once, in each client's order.
pub fn check_concurrent_appends(v: &str, counts: &[u64]) {
    for (client, &count) in counts.iter().enumerate() {
        check_clnt_appends(client as u64, v, count);
    }
}

/// The course's partitioner: a random two-way split of the servers every 1 s + 0–200 ms.
pub async fn partitioner(cfg: KvCluster, done: Arc<AtomicBool>) {
    while !done.load(Ordering::SeqCst) {
        let mut sides = (Vec::new(), Vec::new());
        for i in 0..cfg.n() {
            if cfg.rand(0..2) == 0 {
                sides.0.push(i);
            } else {
                sides.1.push(i);
            }
        }
        cfg.partition(&sides.0, &sides.1);
        let ms = cfg.rand(0..200);
        sleep(KV_ELECTION_TIMEOUT + Duration::from_millis(ms)).await;
    }
}

/// One client of the generic test: appends (50%), puts (10% of the rest, random keys only)
/// and gets until told to stop; returns how many appends/puts it did.
async fn client_loop(
    cfg: KvCluster,
    cli: u64,
    nclients: u64,
    randomkeys: bool,
    done: Arc<AtomicBool>,
) -> u64 {
    let mut ck = cfg.make_client(&cfg.all());
    let mut j = 0;
    let mut last = String::new();
    if !randomkeys {
        cfg.put(&mut ck, &cli.to_string(), &last, cli).await;
    }
    while !done.load(Ordering::SeqCst) {
        let key = if randomkeys {
            cfg.rand(0..nclients).to_string()
        } else {
            cli.to_string()
        };
        let nv = format!("x {cli} {j} y");
        if cfg.rand(0..1000) < 500 {
            cfg.append(&mut ck, &key, &nv, cli).await;
            if !randomkeys {
                last.push_str(&nv);
            }
            j += 1;
        } else if randomkeys && cfg.rand(0..1000) < 100 {
            cfg.put(&mut ck, &key, &nv, cli).await;
            j += 1;
        } else {
            let v = cfg.get(&mut ck, &key, cli).await;
            if !randomkeys {
                assert_eq!(v, last, "get wrong value, key {key}");
            }
        }
    }
    j
}

#[derive(Clone, Copy)]
pub struct Generic {
    pub nclients: u64,
    pub nservers: usize,
    pub unreliable: bool,
    pub crash: bool,
    pub partitions: bool,
    pub randomkeys: bool,
    /// The course's `maxraftstate`: snapshot when the Raft state passes this many bytes; at
    /// the end of each iteration it must be at most 8 times that. `None` (the course's -1):
    /// no snapshots at all.
    pub maxraftstate: Option<usize>,
}

/// The course's `GenericTest` (3 iterations of 5 s of client load with optional
/// unreliability, partitions and crashes; then each client's appends are checked, and the
/// whole history with the linearizability checker).
pub async fn generic_test(name: &str, seed: u64, p: Generic) {
    let cfg = cluster(p.nservers, p.unreliable, seed, p.maxraftstate);
    let mut ck = cfg.make_client(&cfg.all());
    for _ in 0..3 {
        let done_clients = Arc::new(AtomicBool::new(false));
        let done_partitioner = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..p.nclients)
            .map(|cli| {
                let fut = client_loop(
                    cfg.clone(),
                    cli,
                    p.nclients,
                    p.randomkeys,
                    done_clients.clone(),
                );
                tokio::spawn(fut)
            })
            .collect();
        let mut partitioner_task = None;
        if p.partitions {
            // Let the clients perform some operations without interruption.
            sleep(Duration::from_secs(1)).await;
            let task = partitioner(cfg.clone(), done_partitioner.clone());
            partitioner_task = Some(tokio::spawn(task));
        }
        sleep(Duration::from_secs(5)).await;
        done_clients.store(true, Ordering::SeqCst);
        done_partitioner.store(true, Ordering::SeqCst);
        if let Some(task) = partitioner_task {
            task.await.expect("partitioner");
            // A client may have submitted a request in a minority; it won't return until
            // that server discovers a new term has started.
            cfg.connect_all();
            sleep(KV_ELECTION_TIMEOUT).await;
        }
        if p.crash {
            for i in 0..p.nservers {
                cfg.shutdown_server(i);
            }
            sleep(KV_ELECTION_TIMEOUT).await;
            for i in 0..p.nservers {
                cfg.start_server(i);
            }
            cfg.connect_all();
        }
        for (cli, task) in clients.into_iter().enumerate() {
            let j = match task.await {
                Ok(j) => j,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            let v = cfg.get(&mut ck, &cli.to_string(), 0).await;
            if !p.randomkeys {
                check_clnt_appends(cli as u64, &v, j);
            }
        }
        check_sizes(&cfg, p.maxraftstate);
    }
    cfg.check_replicas_converge().await;
    check_linearizable(&cfg.history(), name, seed);
}

pub fn generic(nclients: u64, nservers: usize) -> Generic {
    Generic {
        nclients,
        nservers,
        unreliable: false,
        crash: false,
        partitions: false,
        randomkeys: false,
        maxraftstate: None,
    }
}

/// The course's `Speed` test: 1000 sequential appends by one client must take under a third
/// of a heartbeat interval each.
pub async fn speed_test(name: &str, seed: u64, maxraftstate: Option<usize>) {
    let cfg = cluster(3, false, seed, maxraftstate);
    let mut ck = cfg.make_client(&cfg.all());
    // Wait until the first op completes, so a leader is elected and servers are ready.
    cfg.get(&mut ck, "x", 0).await;
    let num_ops = 1000;
    let start = cfg.now();
    for i in 0..num_ops {
        cfg.append(&mut ck, "x", &format!("x 0 {i} y"), 0).await;
    }
    let per_op = Duration::from_nanos((cfg.now() - start) / num_ops);
    let v = cfg.get(&mut ck, "x", 0).await;
    check_clnt_appends(0, &v, num_ops);
    // Heartbeats are ~100 ms apart; the course requires at least 3 ops per interval.
    let time_per_op = Duration::from_millis(100) / 3;
    assert!(
        per_op <= time_per_op,
        "operations completed too slowly {per_op:?}/op > {time_per_op:?}/op"
    );
    eprintln!("{name}: {per_op:?} per operation (simulated time)");
    check_sizes(&cfg, maxraftstate);
    check_linearizable(&cfg.history(), name, seed);
}
