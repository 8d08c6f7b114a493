//! The Redis commands under the 3A/3B faults: clients send a random mix of every command,
//! transactions (MULTI/EXEC) and WATCH check-and-sets ([`sim::commands_mix`]) over a few
//! keys, while the network is unreliable, partitions come and go and every server crashes
//! and restarts between rounds; with snapshots in one variant. The whole history is checked
//! against the whole-map model ([`sim::commands_check`]); a checker timeout fails the test.

mod common;

use common::{check_sizes, cluster, partitioner};
use sim::commands_check::check_commands_linearizable;
use sim::commands_mix::{CommandMix, Reach};
use sim::KV_ELECTION_TIMEOUT;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::sleep;

const SERVERS: usize = 5;
const CLIENTS: u64 = 7;
const KEYS: usize = 5;
/// Rounds of client load, each followed by a crash and restart of every server.
const ROUNDS: usize = 3;
const ROUND_TIME: Duration = Duration::from_secs(5);

#[test]
fn commands_unreliable_partitions_crashes() {
    sim::run("commands_unreliable_partitions_crashes", without_snapshots);
}

async fn without_snapshots(seed: u64) {
    commands_test("commands_unreliable_partitions_crashes", seed, None).await;
}

/// The course's 3B `maxraftstate`: logs are compacted and servers catch up by snapshot, so
/// versions and sessions travel in snapshots.
#[test]
fn commands_snapshots_unreliable_partitions_crashes() {
    sim::run(
        "commands_snapshots_unreliable_partitions_crashes",
        with_snapshots,
    );
}

async fn with_snapshots(seed: u64) {
    commands_test(
        "commands_snapshots_unreliable_partitions_crashes",
        seed,
        Some(1000),
    )
    .await;
}

/// Like the course's `GenericTest` with every fault on: rounds of load by [`CLIENTS`]
/// clients under the partitioner, each ended by a crash of every server.
async fn commands_test(name: &str, seed: u64, maxraftstate: Option<usize>) {
    let cfg = cluster(SERVERS, true, seed, maxraftstate);
    let keys: Vec<String> = (0..KEYS).map(|k| format!("k{k}")).collect();
    for round in 0..ROUNDS {
        let done = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (cfg, done) = (cfg.clone(), done.clone());
                let mix_seed = cfg.rand(0..u64::MAX);
                let mut mix = CommandMix::new(&keys, Reach::WholeMap, client, mix_seed);
                tokio::spawn(async move {
                    let mut ck = cfg.make_client(&cfg.all());
                    while !done.load(Ordering::SeqCst) {
                        if let Err(e) = mix.step(&cfg, &mut ck).await {
                            panic!("client {client} in round {round}: a call failed: {e}");
                        }
                    }
                })
            })
            .collect();
        // Some load without interruption, then the partitioner.
        sleep(Duration::from_secs(1)).await;
        let stop_partitioner = Arc::new(AtomicBool::new(false));
        let partitions = tokio::spawn(partitioner(cfg.clone(), stop_partitioner.clone()));
        sleep(ROUND_TIME).await;
        done.store(true, Ordering::SeqCst);
        stop_partitioner.store(true, Ordering::SeqCst);
        partitions.await.expect("partitioner");
        // A client may be waiting in a minority; it goes on once the partition heals.
        cfg.connect_all();
        sleep(KV_ELECTION_TIMEOUT).await;
        for i in 0..SERVERS {
            cfg.shutdown_server(i);
        }
        sleep(KV_ELECTION_TIMEOUT).await;
        for i in 0..SERVERS {
            cfg.start_server(i);
        }
        cfg.connect_all();
        for task in clients {
            if let Err(e) = task.await {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        check_sizes(&cfg, maxraftstate);
    }
    cfg.check_replicas_converge().await;
    check_commands_linearizable(&cfg.history(), name, seed);
}

// ---------------------------------------------------------------- negative controls
//
// A deliberately broken client (`sim::mutants`) that the commands tests must catch at the
// whole-map check, on the fresh seeds CI gives the suites.

use sim::mutants::{assert_mutant_caught, Body, Mutant};
use sim::ClientFault;

/// A transaction sent as separate log entries is no longer atomic: other clients' writes
/// land between its commands, and its watched versions are checked before, not with, them.
#[test]
fn mutant_exec_as_separate_entries_is_caught() {
    let suite: [(&str, Body); 2] = [
        (
            "commands_unreliable_partitions_crashes",
            sim::body!(without_snapshots),
        ),
        (
            "commands_snapshots_unreliable_partitions_crashes",
            sim::body!(with_snapshots),
        ),
    ];
    assert_mutant_caught(Mutant::Client(ClientFault::ExecAsSeparateEntries), &suite);
}
