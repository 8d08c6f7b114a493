//! Real server processes on 127.0.0.1: crashes under load, whole-cluster restarts, and damaged
//! data directories. Every test bounds its run time and kills its processes when it ends.

mod common;

use common::{runtime, segment_files, wait_with_limit, Cluster, TEST_LIMIT};
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Checks that `value` holds each acknowledged append of `client` exactly once, in order, and
/// no append twice (unacknowledged ones may or may not be there: their outcome is unknown).
fn check_appends(client: usize, value: &str, acknowledged: &[u64]) {
    let mut seen: Vec<u64> = Vec::new();
    for item in value.split(';').filter(|s| !s.is_empty()) {
        let (c, i) = item.split_once('-').expect("item format");
        assert_eq!(
            c,
            format!("w{client}"),
            "foreign item {item} under client {client}'s key"
        );
        seen.push(i.parse().expect("number"));
    }
    let mut sorted = seen.clone();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        seen.len(),
        "an append appears twice: {seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "appends out of order: {seen:?}"
    );
    for i in acknowledged {
        assert!(
            seen.contains(i),
            "acknowledged append {i} of client {client} was lost"
        );
    }
}

#[test]
fn killing_the_leader_under_load_loses_no_acknowledged_write() {
    runtime().block_on(async {
        tokio::time::timeout(TEST_LIMIT, async {
            let mut cluster = Cluster::start(3);
            let leader = cluster.wait_for_leader().await;
            let stop = Arc::new(AtomicBool::new(false));
            let mut writers = Vec::new();
            for c in 0..4usize {
                let mut clerk = cluster.clerk(1000 + c as u64);
                let stop = stop.clone();
                writers.push(tokio::spawn(async move {
                    let mut acknowledged = Vec::new();
                    let mut i = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        let item = format!("w{c}-{i};");
                        match clerk.append(&format!("log-{c}"), &item).await {
                            Ok(()) => acknowledged.push(i),
                            Err(e) => panic!("append failed: {e}"),
                        }
                        i += 1;
                    }
                    acknowledged
                }));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            cluster.kill_node(leader);
            // The survivors elect a leader and keep serving.
            let new_leader = cluster.wait_for_leader().await;
            assert_ne!(new_leader, leader);
            tokio::time::sleep(Duration::from_secs(2)).await;
            cluster.start_node(leader);
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.store(true, Ordering::SeqCst);
            let mut acked = BTreeMap::new();
            for (c, w) in writers.into_iter().enumerate() {
                acked.insert(c, w.await.expect("writer"));
            }
            let mut reader = cluster.clerk(7);
            for (c, acknowledged) in &acked {
                assert!(
                    acknowledged.len() > 10,
                    "writer {c} made too little progress"
                );
                let value = reader.get(&format!("log-{c}")).await.expect("get");
                check_appends(*c, &value, acknowledged);
            }
            let total: usize = acked.values().map(Vec::len).sum();
            let applied = cluster.wait_for_convergence().await;
            eprintln!("{total} acknowledged appends; all 3 replicas converged at index {applied}");
        })
        .await
        .expect("test ran past its time limit");
    });
}

#[test]
fn restarting_every_node_keeps_all_data() {
    runtime().block_on(async {
        tokio::time::timeout(TEST_LIMIT, async {
            let mut cluster = Cluster::start(3);
            cluster.wait_for_leader().await;
            let mut clerk = cluster.clerk(1);
            for i in 0..50 {
                clerk
                    .put(&format!("k{i}"), &format!("v{i}"))
                    .await
                    .expect("put");
                clerk.append("all", &format!("{i},")).await.expect("append");
            }
            for i in 0..3 {
                cluster.kill_node(i);
            }
            for i in 0..3 {
                cluster.start_node(i);
            }
            cluster.wait_for_leader().await;
            let mut clerk = cluster.clerk(2);
            for i in 0..50 {
                assert_eq!(
                    clerk.get(&format!("k{i}")).await.expect("get"),
                    format!("v{i}")
                );
            }
            let all: String = (0..50).map(|i| format!("{i},")).collect();
            assert_eq!(clerk.get("all").await.expect("get"), all);
            cluster.wait_for_convergence().await;
        })
        .await
        .expect("test ran past its time limit");
    });
}

/// Writes a few keys on a one-node cluster and stops it.
fn single_node_with_data(keys: usize) -> Cluster {
    let mut cluster = Cluster::start(1);
    runtime().block_on(async {
        cluster.wait_for_leader().await;
        let mut clerk = cluster.clerk(1);
        for i in 0..keys {
            clerk
                .put(&format!("k{i}"), &"x".repeat(100))
                .await
                .expect("put");
        }
    });
    cluster.kill_node(0);
    cluster
}

#[test]
fn a_flipped_bit_in_an_earlier_record_makes_the_node_refuse_to_start() {
    let cluster = single_node_with_data(20);
    let segment = segment_files(&cluster.data_dir(0))[0].clone();
    let mut bytes = std::fs::read(&segment).expect("read segment");
    // Inside the first record's payload: past the 20-byte header and the 8-byte record header.
    bytes[20 + 8 + 4] ^= 0x10;
    std::fs::write(&segment, &bytes).expect("write segment");

    let mut child = cluster.command(0).spawn().expect("spawn");
    let status = wait_with_limit(&mut child, Duration::from_secs(10)).expect("node kept running");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert_eq!(
        status.code(),
        Some(3),
        "exit status {status}; stderr: {stderr}"
    );
    assert!(
        stderr.contains("checksum") || stderr.contains("corrupt"),
        "unclear error: {stderr}"
    );
    assert!(
        stderr.contains(&segment.display().to_string()),
        "error names no file: {stderr}"
    );
}

#[test]
fn a_torn_last_record_is_cut_and_the_node_starts_with_every_complete_record() {
    let mut cluster = single_node_with_data(20);
    let segment = segment_files(&cluster.data_dir(0))
        .pop()
        .expect("a segment");
    // The node was killed, so its segment is still preallocated: its records end at the
    // last byte that is not zero.
    let bytes = std::fs::read(&segment).expect("read the segment");
    let len = bytes.iter().rposition(|&b| b != 0).expect("records") as u64 + 1;
    // Cut the last record short, as a crash in the middle of a write would.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .expect("open");
    file.set_len(len - 7).expect("truncate");
    drop(file);

    cluster.start_node(0);
    runtime().block_on(async {
        cluster.wait_for_leader().await;
        let mut clerk = cluster.clerk(2);
        // The first 19 puts are complete records; the 20th may be the one cut.
        for i in 0..19 {
            assert_eq!(
                clerk.get(&format!("k{i}")).await.expect("get"),
                "x".repeat(100)
            );
        }
    });
    let torn: Vec<_> = std::fs::read_dir(cluster.data_dir(0))
        .expect("read dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("torn-"))
        .collect();
    assert_eq!(torn.len(), 1, "the cut bytes were not kept");
}
