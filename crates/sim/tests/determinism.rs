//! One seed, one run: the same seed must reproduce the same trace (every message delivered,
//! with its virtual time, and every entry applied), and another seed a different one.

use sim::{cmd, RaftCluster};
use std::time::Duration;
use tokio::time::sleep;

/// A short churny workload under the unreliable network: elections, crashes, restarts.
async fn workload(seed: u64) -> (u64, u64) {
    let servers = 5;
    let cfg = RaftCluster::new(servers, true, seed);
    for round in 0..30u64 {
        for i in 0..servers {
            if let Some(node) = cfg.node(i) {
                let _ = node.start(cmd(round * 10 + i as u64));
            }
        }
        sleep(Duration::from_millis(cfg.rand(0..300))).await;
        let victim = cfg.rand(0..servers as u64) as usize;
        if cfg.node(victim).is_some() && cfg.rand(0..4) == 0 {
            cfg.crash1(victim);
        } else {
            if cfg.node(victim).is_none() {
                cfg.start1(victim);
            }
            cfg.connect(victim);
        }
    }
    for i in 0..servers {
        if cfg.node(i).is_none() {
            cfg.start1(i);
        }
        cfg.connect(i);
    }
    cfg.one(cmd(u64::MAX), servers, true).await;
    cfg.end();
    cfg.trace().digest()
}

#[test]
fn same_seed_same_trace() {
    for seed in sim::seed::seeds("same_seed_same_trace") {
        let first = sim::seed::run_one("same_seed_same_trace", seed, &workload);
        let second = sim::seed::run_one("same_seed_same_trace", seed, &workload);
        assert_eq!(first, second, "seed {seed} produced two different traces");
        assert!(
            first.1 > 100,
            "the trace saw too few events to mean much: {first:?}"
        );
        let other = sim::seed::run_one("same_seed_same_trace", seed + 1, &workload);
        assert_ne!(
            first.0,
            other.0,
            "seeds {seed} and {} gave one trace",
            seed + 1
        );
        eprintln!(
            "seed {seed}: trace {:016x} over {} events",
            first.0, first.1
        );
    }
}
