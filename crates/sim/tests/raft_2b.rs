//! The course's Raft part 2B suite (log agreement), with its parameters.

use sim::{cmd, RaftCluster, RAFT_ELECTION_TIMEOUT};
use std::time::Duration;
use tokio::time::sleep;

#[test]
fn basic_agree_2b() {
    sim::run("basic_agree_2b", basic_agree);
}

async fn basic_agree(seed: u64) {
    let servers = 3;
    let cfg = RaftCluster::new(servers, false, seed);
    for index in 1..=3u64 {
        let (nd, _) = cfg.n_committed(index);
        assert_eq!(nd, 0, "some have committed before Start()");
        let xindex = cfg.one(cmd(index * 100), servers, false).await;
        assert_eq!(xindex, index, "got index {xindex} but expected {index}");
    }
    cfg.end();
}

/// Check, based on counting bytes of RPCs, that each command is sent to each peer just once.
#[test]
fn rpc_bytes_2b() {
    sim::run("rpc_bytes_2b", rpc_bytes);
}

async fn rpc_bytes(seed: u64) {
    let servers = 3;
    let cfg = RaftCluster::new(servers, false, seed);
    cfg.one(cmd(99), servers, false).await;
    let bytes0 = cfg.bytes_total();
    let mut sent = 0u64;
    for index in 2..12u64 {
        let command: Vec<u8> = (0..5000).map(|_| b'a' + cfg.rand(0..26) as u8).collect();
        sent += command.len() as u64;
        let xindex = cfg.one(command, servers, false).await;
        assert_eq!(xindex, index, "got index {xindex} but expected {index}");
    }
    let got = cfg.bytes_total() - bytes0;
    let expected = servers as u64 * sent;
    assert!(
        got <= expected + 50_000,
        "too many RPC bytes; got {got}, expected {expected}"
    );
    eprintln!("rpc_bytes_2b: {got} bytes for {sent} bytes of commands");
    cfg.end();
}

#[test]
fn fail_agree_2b() {
    sim::run("fail_agree_2b", fail_agree);
}

async fn fail_agree(seed: u64) {
    let servers = 3;
    let cfg = RaftCluster::new(servers, false, seed);
    cfg.one(cmd(101), servers, false).await;
    // Disconnect one follower from the network.
    let leader = cfg.check_one_leader().await;
    cfg.disconnect((leader + 1) % servers);
    // The leader and remaining follower should be able to agree despite the
    // disconnected follower.
    cfg.one(cmd(102), servers - 1, false).await;
    cfg.one(cmd(103), servers - 1, false).await;
    sleep(RAFT_ELECTION_TIMEOUT).await;
    cfg.one(cmd(104), servers - 1, false).await;
    cfg.one(cmd(105), servers - 1, false).await;
    // Re-connect.
    cfg.connect((leader + 1) % servers);
    // The full set of servers should preserve previous agreements, and be able to agree
    // on new commands.
    cfg.one(cmd(106), servers, true).await;
    sleep(RAFT_ELECTION_TIMEOUT).await;
    cfg.one(cmd(107), servers, true).await;
    cfg.end();
}

#[test]
fn fail_no_agree_2b() {
    sim::run("fail_no_agree_2b", fail_no_agree);
}

async fn fail_no_agree(seed: u64) {
    let servers = 5;
    let cfg = RaftCluster::new(servers, false, seed);
    cfg.one(cmd(10), servers, false).await;
    // 3 of 5 followers disconnect.
    let leader = cfg.check_one_leader().await;
    cfg.disconnect((leader + 1) % servers);
    cfg.disconnect((leader + 2) % servers);
    cfg.disconnect((leader + 3) % servers);
    let node = cfg.node(leader).expect("leader is up");
    let (index, _) = node.start(cmd(20)).expect("leader rejected Start()");
    assert_eq!(index.0, 2, "expected index 2, got {index}");
    sleep(2 * RAFT_ELECTION_TIMEOUT).await;
    let (n, _) = cfg.n_committed(index.0);
    assert_eq!(n, 0, "{n} committed but no majority");
    // Repair.
    cfg.connect((leader + 1) % servers);
    cfg.connect((leader + 2) % servers);
    cfg.connect((leader + 3) % servers);
    // The disconnected majority may have chosen a leader from among their own ranks,
    // forgetting index 2.
    let leader2 = cfg.check_one_leader().await;
    let node2 = cfg.node(leader2).expect("leader is up");
    let (index2, _) = node2.start(cmd(30)).expect("leader2 rejected Start()");
    assert!((2..=3).contains(&index2.0), "unexpected index {index2}");
    cfg.one(cmd(1000), servers, true).await;
    cfg.end();
}

#[test]
fn concurrent_starts_2b() {
    sim::run("concurrent_starts_2b", concurrent_starts);
}

async fn concurrent_starts(seed: u64) {
    let servers = 3;
    let cfg = RaftCluster::new(servers, false, seed);
    let mut success = false;
    'attempt: for attempt in 0..5 {
        if attempt > 0 {
            // Give the solution some time to settle.
            sleep(Duration::from_secs(3)).await;
        }
        let leader = cfg.check_one_leader().await;
        let node = cfg.node(leader).expect("leader is up");
        let Ok((_, term)) = node.start(cmd(1)) else {
            // Leader moved on really quickly.
            continue;
        };
        let iters = 5u64;
        let mut tasks = Vec::new();
        for i in 0..iters {
            let node = node.clone();
            tasks.push(tokio::spawn(async move {
                match node.start(cmd(100 + i)) {
                    Ok((index, term1)) if term1 == term => Some(index.0),
                    _ => None,
                }
            }));
        }
        let mut indexes = Vec::new();
        for t in tasks {
            if let Some(i) = t.await.expect("start task") {
                indexes.push(i);
            }
        }
        for j in 0..servers {
            if let Some(n) = cfg.node(j) {
                if n.state().0 != term {
                    // Term changed: can't expect low RPC counts.
                    continue 'attempt;
                }
            }
        }
        let mut cmds = Vec::new();
        for index in indexes {
            match cfg.wait(index, servers, Some(term.0)).await {
                Some(c) => cmds.push(c),
                None => continue 'attempt,
            }
        }
        for i in 0..iters {
            let x = cmd(100 + i);
            assert!(cmds.contains(&x), "cmd {} missing in {cmds:?}", 100 + i);
        }
        success = true;
        break;
    }
    assert!(success, "term changed too often");
    cfg.end();
}

#[test]
fn rejoin_2b() {
    sim::run("rejoin_2b", rejoin);
}

async fn rejoin(seed: u64) {
    let servers = 3;
    let cfg = RaftCluster::new(servers, false, seed);
    cfg.one(cmd(101), servers, true).await;
    // Leader network failure.
    let leader1 = cfg.check_one_leader().await;
    cfg.disconnect(leader1);
    // Make the old leader try to agree on some entries.
    let old = cfg.node(leader1).expect("up");
    for c in [102, 103, 104] {
        let _ = old.start(cmd(c));
    }
    // New leader commits, also for index=2.
    cfg.one(cmd(103), 2, true).await;
    // New leader network failure.
    let leader2 = cfg.check_one_leader().await;
    cfg.disconnect(leader2);
    // Old leader connected again.
    cfg.connect(leader1);
    cfg.one(cmd(104), 2, true).await;
    // All together now.
    cfg.connect(leader2);
    cfg.one(cmd(105), servers, true).await;
    cfg.end();
}

#[test]
fn backup_2b() {
    sim::run("backup_2b", backup);
}

async fn backup(seed: u64) {
    let servers = 5;
    let cfg = RaftCluster::new(servers, false, seed);
    let rand_cmd = || cmd(cfg.rand(0..u32::MAX as u64));
    cfg.one(rand_cmd(), servers, true).await;
    // Put leader and one follower in a partition.
    let leader1 = cfg.check_one_leader().await;
    for k in 2..5 {
        cfg.disconnect((leader1 + k) % servers);
    }
    // Submit lots of commands that won't commit.
    let node1 = cfg.node(leader1).expect("up");
    for _ in 0..50 {
        let _ = node1.start(rand_cmd());
    }
    sleep(RAFT_ELECTION_TIMEOUT / 2).await;
    cfg.disconnect(leader1 % servers);
    cfg.disconnect((leader1 + 1) % servers);
    // Allow the other partition to recover.
    for k in 2..5 {
        cfg.connect((leader1 + k) % servers);
    }
    // Lots of successful commands to the new group.
    for _ in 0..50 {
        cfg.one(rand_cmd(), 3, true).await;
    }
    // Now another partitioned leader and one follower.
    let leader2 = cfg.check_one_leader().await;
    let mut other = (leader1 + 2) % servers;
    if leader2 == other {
        other = (leader2 + 1) % servers;
    }
    cfg.disconnect(other);
    // Lots more commands that won't commit.
    let node2 = cfg.node(leader2).expect("up");
    for _ in 0..50 {
        let _ = node2.start(rand_cmd());
    }
    sleep(RAFT_ELECTION_TIMEOUT / 2).await;
    // Bring the original leader back to life.
    for i in 0..servers {
        cfg.disconnect(i);
    }
    cfg.connect(leader1 % servers);
    cfg.connect((leader1 + 1) % servers);
    cfg.connect(other);
    // Lots of successful commands to the new group.
    for _ in 0..50 {
        cfg.one(rand_cmd(), 3, true).await;
    }
    // Now everyone.
    for i in 0..servers {
        cfg.connect(i);
    }
    cfg.one(rand_cmd(), servers, true).await;
    cfg.end();
}

#[test]
fn count_2b() {
    sim::run("count_2b", count);
}

async fn count(seed: u64) {
    let servers = 3;
    let cfg = RaftCluster::new(servers, false, seed);
    let rpcs = || (0..servers).map(|j| cfg.rpc_count(j)).sum::<u64>();
    let leader = cfg.check_one_leader().await;
    let total1 = rpcs();
    assert!(
        (1..=30).contains(&total1),
        "too many or few RPCs ({total1}) to elect initial leader"
    );
    eprintln!("count_2b: {total1} RPCs to elect the initial leader");
    let mut total2 = 0;
    let mut success = false;
    let _ = leader;
    'attempt: for attempt in 0..5 {
        if attempt > 0 {
            sleep(Duration::from_secs(3)).await;
        }
        let leader = cfg.check_one_leader().await;
        let total1 = rpcs();
        let iters = 10u64;
        let node = cfg.node(leader).expect("up");
        let Ok((starti, term)) = node.start(cmd(1)) else {
            continue;
        };
        let mut cmds = Vec::new();
        for i in 1..iters + 2 {
            let x = cmd(cfg.rand(0..i32::MAX as u64));
            cmds.push(x.clone());
            match node.start(x) {
                Ok((index1, term1)) if term1 == term => {
                    assert_eq!(starti.0 + i, index1.0, "Start() failed");
                }
                _ => continue 'attempt,
            }
        }
        for i in 1..iters + 1 {
            match cfg.wait(starti.0 + i, servers, Some(term.0)).await {
                None => continue 'attempt,
                Some(c) => assert_eq!(
                    c,
                    cmds[i as usize - 1],
                    "wrong value committed for index {}",
                    starti.0 + i
                ),
            }
        }
        for j in 0..servers {
            if cfg.node(j).is_some_and(|n| n.state().0 != term) {
                continue 'attempt;
            }
        }
        total2 = rpcs();
        let used = total2 - total1;
        assert!(
            used <= (iters + 1 + 3) * 3,
            "too many RPCs ({used}) for {iters} entries"
        );
        eprintln!("count_2b: {used} RPCs for {iters} agreements");
        success = true;
        break;
    }
    assert!(success, "term changed too often");
    sleep(RAFT_ELECTION_TIMEOUT).await;
    let total3 = rpcs();
    let idle = total3 - total2;
    assert!(
        idle <= 3 * 20,
        "too many RPCs ({idle}) for 1 second of idleness"
    );
    eprintln!("count_2b: {idle} RPCs in 1 second of idleness");
    cfg.end();
}
