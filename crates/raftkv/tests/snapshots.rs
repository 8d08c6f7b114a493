//! Snapshots and log compaction with real server processes on 127.0.0.1: a node that was down
//! while the others compacted their logs past it catches up by InstallSnapshot; the log on
//! disk stays bounded; a damaged snapshot makes a node refuse to start; a restarted cluster
//! commits and applies its log without waiting for a client.

mod common;

use common::{runtime, segment_files, wait_with_limit, Cluster, TEST_LIMIT};
use std::time::{Duration, Instant};

/// Snapshots every 50 entries, in 4 KiB log segments, so a short test compacts many times.
const SMALL: &[&str] = &["--snapshot-entries", "50", "--wal-segment-bytes", "4096"];

#[test]
fn a_node_behind_the_compaction_point_catches_up_by_snapshot() {
    runtime().block_on(async {
        tokio::time::timeout(TEST_LIMIT, async {
            let mut cluster = Cluster::start_with(3, SMALL);
            let leader = cluster.wait_for_leader().await;
            let lagging = (leader + 1) % 3;
            let mut clerk = cluster.clerk(7);
            clerk.put("before", "1").await.expect("put");
            cluster.wait_for_convergence().await;
            cluster.kill_node(lagging);
            for i in 0..600 {
                clerk
                    .put(&format!("k{}", i % 40), &format!("v{i}"))
                    .await
                    .expect("put");
            }
            // The others compacted well past where the lagging node stopped.
            let first_segment = |i: usize| {
                let segments = segment_files(&cluster.data_dir(i));
                segments.first().cloned().expect("a segment")
            };
            let live = (leader + 2) % 3;
            for i in [leader, live] {
                assert!(
                    cluster.data_dir(i).join("snapshot").exists(),
                    "node {i} took no snapshot"
                );
                assert!(
                    !first_segment(i).ends_with("00000000000000000001.wal"),
                    "node {i} still holds its first log segment"
                );
            }
            assert!(!cluster.data_dir(lagging).join("snapshot").exists());
            cluster.start_node(lagging);
            let applied = cluster.wait_for_convergence().await;
            assert!(applied > 600, "applied only {applied}");
            // It got there from the leader's snapshot: it has one it could not have taken
            // itself before restarting (it applied too little to reach 50 entries).
            assert!(
                cluster.data_dir(lagging).join("snapshot").exists(),
                "the lagging node caught up without a snapshot"
            );
            assert_eq!(clerk.get("k39").await.expect("get"), "v599");
            assert_eq!(clerk.get("before").await.expect("get"), "1");
        })
        .await
        .expect("test ran past its limit");
    });
}

#[test]
fn the_log_on_disk_stays_bounded() {
    runtime().block_on(async {
        tokio::time::timeout(TEST_LIMIT, async {
            let cluster = Cluster::start_with(3, SMALL);
            cluster.wait_for_leader().await;
            let mut clerk = cluster.clerk(8);
            let value = "x".repeat(200);
            for round in 0..4 {
                for i in 0..250 {
                    clerk
                        .put(&format!("k{}", i % 20), &value)
                        .await
                        .expect("put");
                }
                cluster.wait_for_convergence().await;
                for node in 0..3 {
                    let segments = segment_files(&cluster.data_dir(node));
                    let bytes: u64 = segments
                        .iter()
                        .map(|s| std::fs::metadata(s).map_or(0, |m| m.len()))
                        .sum();
                    // 50 entries of about 260 bytes since the last snapshot, plus the segment
                    // being written and one more: far below the 1,000 entries written.
                    assert!(
                        bytes < 40 * 1024,
                        "round {round}: node {node} keeps {bytes} bytes of log in {} segments",
                        segments.len()
                    );
                }
            }
        })
        .await
        .expect("test ran past its limit");
    });
}

#[test]
fn a_damaged_snapshot_makes_the_node_refuse_to_start() {
    runtime().block_on(async {
        let mut cluster = Cluster::start_with(3, SMALL);
        cluster.wait_for_leader().await;
        let mut clerk = cluster.clerk(9);
        for i in 0..200 {
            clerk.put("k", &format!("v{i}")).await.expect("put");
        }
        cluster.wait_for_convergence().await;
        cluster.kill_node(0);
        let snapshot = cluster.data_dir(0).join("snapshot");
        let mut bytes = std::fs::read(&snapshot).expect("node 1 has a snapshot");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x10;
        std::fs::write(&snapshot, bytes).expect("write");
        let mut child = cluster.command(0).spawn().expect("spawn");
        let status = wait_with_limit(&mut child, Duration::from_secs(20)).expect("exits");
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
            .expect("read stderr");
        assert_eq!(status.code(), Some(3), "stderr: {stderr}");
        assert!(
            stderr.contains(&snapshot.display().to_string()),
            "the message does not name the file: {stderr}"
        );
    });
}

/// After a restart of every node, a new leader's no-op commits the old log at once: every
/// node's commit and applied index catch up with no client request.
#[test]
fn a_restarted_cluster_catches_up_without_a_client() {
    runtime().block_on(async {
        tokio::time::timeout(TEST_LIMIT, async {
            let mut cluster = Cluster::start_with(3, SMALL);
            cluster.wait_for_leader().await;
            let mut clerk = cluster.clerk(10);
            for i in 0..120 {
                clerk.put("k", &format!("v{i}")).await.expect("put");
            }
            let before = cluster.wait_for_convergence().await;
            for i in 0..3 {
                cluster.kill_node(i);
            }
            let t0 = Instant::now();
            for i in 0..3 {
                cluster.start_node(i);
            }
            loop {
                let mut caught_up = 0;
                for i in 0..3 {
                    if let Some(s) = cluster.status(i).await {
                        if s.commit_index > before && s.applied_index == s.commit_index {
                            caught_up += 1;
                        }
                    }
                }
                if caught_up == 3 {
                    break;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(20),
                    "the restarted cluster did not commit its log by itself"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            eprintln!(
                "every node committed and applied past {before} {:?} after the restart",
                t0.elapsed()
            );
        })
        .await
        .expect("test ran past its limit");
    });
}
