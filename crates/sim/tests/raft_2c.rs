//! The course's Raft part 2C suite (persistence), with its parameters.

use sim::{cmd, RaftCluster, RAFT_ELECTION_TIMEOUT};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::sleep;

#[test]
fn persist1_2c() {
    sim::run("persist1_2c", persist1);
}

async fn persist1(seed: u64) {
    let servers = 3;
    let cfg = RaftCluster::new(servers, false, seed);
    cfg.one(cmd(11), servers, true).await;
    // Crash and re-start all.
    for i in 0..servers {
        cfg.start1(i);
    }
    for i in 0..servers {
        cfg.disconnect(i);
        cfg.connect(i);
    }
    cfg.one(cmd(12), servers, true).await;

    let leader1 = cfg.check_one_leader().await;
    cfg.disconnect(leader1);
    cfg.start1(leader1);
    cfg.connect(leader1);
    cfg.one(cmd(13), servers, true).await;

    let leader2 = cfg.check_one_leader().await;
    cfg.disconnect(leader2);
    cfg.one(cmd(14), servers - 1, true).await;
    cfg.start1(leader2);
    cfg.connect(leader2);
    // Wait for leader2 to join before killing i3.
    cfg.wait(4, servers, None).await;

    let i3 = (cfg.check_one_leader().await + 1) % servers;
    cfg.disconnect(i3);
    cfg.one(cmd(15), servers - 1, true).await;
    cfg.start1(i3);
    cfg.connect(i3);
    cfg.one(cmd(16), servers, true).await;
    cfg.end();
}

#[test]
fn persist2_2c() {
    sim::run("persist2_2c", persist2);
}

async fn persist2(seed: u64) {
    let servers = 5;
    let cfg = RaftCluster::new(servers, false, seed);
    let mut index = 1;
    for _ in 0..5 {
        cfg.one(cmd(10 + index), servers, true).await;
        index += 1;
        let leader1 = cfg.check_one_leader().await;
        cfg.disconnect((leader1 + 1) % servers);
        cfg.disconnect((leader1 + 2) % servers);
        cfg.one(cmd(10 + index), servers - 2, true).await;
        index += 1;
        cfg.disconnect(leader1 % servers);
        cfg.disconnect((leader1 + 3) % servers);
        cfg.disconnect((leader1 + 4) % servers);
        cfg.start1((leader1 + 1) % servers);
        cfg.start1((leader1 + 2) % servers);
        cfg.connect((leader1 + 1) % servers);
        cfg.connect((leader1 + 2) % servers);
        sleep(RAFT_ELECTION_TIMEOUT).await;
        cfg.start1((leader1 + 3) % servers);
        cfg.connect((leader1 + 3) % servers);
        cfg.one(cmd(10 + index), servers - 2, true).await;
        index += 1;
        cfg.connect((leader1 + 4) % servers);
        cfg.connect(leader1 % servers);
    }
    cfg.one(cmd(1000), servers, true).await;
    cfg.end();
}

#[test]
fn persist3_2c() {
    sim::run("persist3_2c", persist3);
}

async fn persist3(seed: u64) {
    let servers = 3;
    let cfg = RaftCluster::new(servers, false, seed);
    cfg.one(cmd(101), 3, true).await;
    let leader = cfg.check_one_leader().await;
    cfg.disconnect((leader + 2) % servers);
    cfg.one(cmd(102), 2, true).await;
    cfg.crash1(leader % servers);
    cfg.crash1((leader + 1) % servers);
    cfg.connect((leader + 2) % servers);
    cfg.start1(leader % servers);
    cfg.connect(leader % servers);
    cfg.one(cmd(103), 2, true).await;
    cfg.start1((leader + 1) % servers);
    cfg.connect((leader + 1) % servers);
    cfg.one(cmd(104), servers, true).await;
    cfg.end();
}

/// The Figure 8 tests' pause between iterations: mostly up to 13 ms, one time in ten up to
/// half an election timeout.
async fn figure8_pause(cfg: &RaftCluster) {
    let ms = if cfg.rand(0..1000) < 100 {
        cfg.rand(0..RAFT_ELECTION_TIMEOUT.as_millis() as u64 / 2)
    } else {
        cfg.rand(0..13)
    };
    sleep(Duration::from_millis(ms)).await;
}

/// Test the scenarios described in Figure 8 of the extended Raft paper. Each iteration asks
/// a leader, if there is one, to insert a command in the Raft log. If there is a leader,
/// that leader will fail quickly with a high probability (perhaps without committing the
/// command), or crash after a while with low probability (most likely committing the
/// command). If the number of alive servers isn't enough to form a majority, perhaps start
/// a new server. The leader in a new term may try to finish replicating log entries that
/// haven't been committed yet.
#[test]
fn figure8_2c() {
    sim::run("figure8_2c", figure8);
}

async fn figure8(seed: u64) {
    let servers = 5;
    let cfg = RaftCluster::new(servers, false, seed);
    cfg.one(cmd(cfg.rand(0..1 << 31)), 1, true).await;
    let mut nup = servers;
    for _ in 0..1000 {
        let mut leader = None;
        for i in 0..servers {
            if let Some(node) = cfg.node(i) {
                if node.start(cmd(cfg.rand(0..1 << 31))).is_ok() {
                    leader = Some(i);
                }
            }
        }
        figure8_pause(&cfg).await;
        if let Some(leader) = leader {
            cfg.crash1(leader);
            nup -= 1;
        }
        if nup < 3 {
            let s = cfg.rand(0..servers as u64) as usize;
            if cfg.node(s).is_none() {
                cfg.start1(s);
                cfg.connect(s);
                nup += 1;
            }
        }
    }
    for i in 0..servers {
        if cfg.node(i).is_none() {
            cfg.start1(i);
            cfg.connect(i);
        }
    }
    cfg.one(cmd(cfg.rand(0..1 << 31)), servers, true).await;
    cfg.end();
}

#[test]
fn unreliable_agree_2c() {
    sim::run("unreliable_agree_2c", unreliable_agree);
}

async fn unreliable_agree(seed: u64) {
    let servers = 5;
    let cfg = RaftCluster::new(servers, true, seed);
    let mut background = Vec::new();
    for iters in 1..50u64 {
        for j in 0..4u64 {
            let cfg = cfg.clone();
            background.push(tokio::spawn(async move {
                cfg.one(cmd(100 * iters + j), 1, true).await;
            }));
        }
        cfg.one(cmd(iters), 1, true).await;
    }
    cfg.set_unreliable(false);
    for task in background {
        if let Err(e) = task.await {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    cfg.one(cmd(100), servers, true).await;
    cfg.end();
}

#[test]
fn figure8_unreliable_2c() {
    sim::run("figure8_unreliable_2c", figure8_unreliable);
}

async fn figure8_unreliable(seed: u64) {
    let servers = 5;
    let cfg = RaftCluster::new(servers, true, seed);
    cfg.one(cmd(cfg.rand(0..10_000)), 1, true).await;
    let mut nup = servers;
    for iters in 0..1000 {
        if iters == 200 {
            cfg.set_long_reordering(true);
        }
        let mut leader = None;
        for i in 0..servers {
            if let Some(node) = cfg.node(i) {
                if node.start(cmd(cfg.rand(0..10_000))).is_ok() && cfg.is_connected(i) {
                    leader = Some(i);
                }
            }
        }
        figure8_pause(&cfg).await;
        if let Some(leader) = leader {
            if cfg.rand(0..1000) < RAFT_ELECTION_TIMEOUT.as_millis() as u64 / 2 {
                cfg.disconnect(leader);
                nup -= 1;
            }
        }
        if nup < 3 {
            let s = cfg.rand(0..servers as u64) as usize;
            if !cfg.is_connected(s) {
                cfg.connect(s);
                nup += 1;
            }
        }
    }
    for i in 0..servers {
        if !cfg.is_connected(i) {
            cfg.connect(i);
        }
    }
    cfg.one(cmd(cfg.rand(0..10_000)), servers, true).await;
    cfg.end();
}

/// Three client loops submit values while nodes are disconnected, restarted and crashed at
/// random; every value a client saw committed must be in the final log.
async fn internal_churn(seed: u64, unreliable: bool) {
    let servers = 5;
    let cfg = RaftCluster::new(servers, unreliable, seed);
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for me in 0..3u64 {
        let (cfg, stop) = (cfg.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut values = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let x = cmd(cfg.rand(0..1 << 62));
                let mut index = None;
                for i in 0..servers {
                    // Try them all; maybe one of them is a leader.
                    if let Some(node) = cfg.node(i) {
                        if let Ok((i1, _)) = node.start(x.clone()) {
                            index = Some(i1.0);
                        }
                    }
                }
                if let Some(index) = index {
                    // Maybe the leader will commit our value, maybe not; don't wait forever.
                    for to in [10, 20, 50, 100, 200] {
                        let (nd, c) = cfg.n_committed(index);
                        if nd > 0 {
                            if c.as_ref() == Some(&x) {
                                values.push(x.clone());
                            }
                            break;
                        }
                        sleep(Duration::from_millis(to)).await;
                    }
                } else {
                    sleep(Duration::from_millis(79 + me * 17)).await;
                }
            }
            values
        }));
    }
    for _ in 0..20 {
        if cfg.rand(0..1000) < 200 {
            cfg.disconnect(cfg.rand(0..servers as u64) as usize);
        }
        if cfg.rand(0..1000) < 500 {
            let i = cfg.rand(0..servers as u64) as usize;
            if cfg.node(i).is_none() {
                cfg.start1(i);
            }
            cfg.connect(i);
        }
        if cfg.rand(0..1000) < 200 {
            let i = cfg.rand(0..servers as u64) as usize;
            if cfg.node(i).is_some() {
                cfg.crash1(i);
            }
        }
        // Often enough that peers rarely settle, rarely enough that they often keep up.
        sleep(RAFT_ELECTION_TIMEOUT * 7 / 10).await;
    }
    sleep(RAFT_ELECTION_TIMEOUT).await;
    cfg.set_unreliable(false);
    for i in 0..servers {
        if cfg.node(i).is_none() {
            cfg.start1(i);
        }
        cfg.connect(i);
    }
    stop.store(true, Ordering::SeqCst);
    let mut values = Vec::new();
    for c in clients {
        match c.await {
            Ok(v) => values.extend(v),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    sleep(RAFT_ELECTION_TIMEOUT).await;
    let last_index = cfg.one(cmd(cfg.rand(0..1 << 62)), servers, true).await;
    let mut really = std::collections::BTreeSet::new();
    for index in 1..=last_index {
        let v = cfg.wait(index, servers, None).await.expect("committed");
        really.insert(v);
    }
    for v in &values {
        assert!(really.contains(v), "didn't find a value: {v:?}");
    }
    eprintln!(
        "churn: {} acknowledged values, final log {last_index}; faults {:?}",
        values.len(),
        cfg.stats().snapshot()
    );
    cfg.end();
}

#[test]
fn reliable_churn_2c() {
    sim::run("reliable_churn_2c", reliable_churn);
}

async fn reliable_churn(seed: u64) {
    internal_churn(seed, false).await
}

#[test]
fn unreliable_churn_2c() {
    sim::run("unreliable_churn_2c", unreliable_churn);
}

async fn unreliable_churn(seed: u64) {
    internal_churn(seed, true).await
}

// ---------------------------------------------------------------- mutants
//
// Deliberately broken Raft (`sim::mutants`) that this suite must catch, each at the check
// meant for it, on the fresh seeds CI gives the suites.

use raft::RaftFault;
use sim::mutants::{assert_mutant_caught, Body, Mutant};

fn suite() -> Vec<(&'static str, Body)> {
    vec![
        ("persist1_2c", sim::body!(persist1)),
        ("persist2_2c", sim::body!(persist2)),
        ("persist3_2c", sim::body!(persist3)),
        ("figure8_2c", sim::body!(figure8)),
        ("unreliable_agree_2c", sim::body!(unreliable_agree)),
        ("figure8_unreliable_2c", sim::body!(figure8_unreliable)),
        ("reliable_churn_2c", sim::body!(reliable_churn)),
        ("unreliable_churn_2c", sim::body!(unreliable_churn)),
    ]
}

#[test]
fn mutant_commit_earlier_term_is_caught() {
    assert_mutant_caught(Mutant::Raft(RaftFault::CommitEarlierTerm), &suite());
}

#[test]
fn mutant_vote_without_log_check_is_caught() {
    assert_mutant_caught(Mutant::Raft(RaftFault::VoteWithoutLogCheck), &suite());
}

#[test]
fn mutant_send_before_persist_is_caught() {
    assert_mutant_caught(Mutant::Raft(RaftFault::SendBeforePersist), &suite());
}

#[test]
fn mutant_truncate_on_match_is_caught() {
    assert_mutant_caught(Mutant::Raft(RaftFault::TruncateOnMatch), &suite());
}
