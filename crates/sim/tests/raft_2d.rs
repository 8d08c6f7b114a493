//! The course's Raft part 2D suite (log compaction and snapshots), with its parameters: the
//! tester's applier snapshots every 10 entries (the index and every command so far), and
//! InstallSnapshot brings lagging or restarted followers up to date.

use sim::{cmd, RaftCluster};

/// The course's `MAXLOGSIZE`: the persisted Raft state must stay below it.
const MAX_LOG_SIZE: usize = 2000;

/// The largest persisted Raft state of the cluster (the course's `LogSize`).
fn log_size(cfg: &RaftCluster) -> usize {
    (0..cfg.n()).map(|i| cfg.log_size(i)).max().unwrap_or(0)
}

/// The course's `snapcommon`: 30 iterations on 3 servers. Each iteration optionally cuts off
/// or crashes a victim (the leader every third iteration), starts 5–14 commands on the sender
/// and commits one more; then the victim rejoins and must catch up, usually by snapshot.
async fn snapcommon(seed: u64, disconnect: bool, reliable: bool, crash: bool) {
    let iters = 30;
    let servers = 3;
    let cfg = RaftCluster::with_snapshots(servers, !reliable, seed);
    cfg.one(cmd(cfg.rand(0..1 << 62)), servers, true).await;
    let mut leader1 = cfg.check_one_leader().await;
    for i in 0..iters {
        let (mut victim, mut sender) = ((leader1 + 1) % servers, leader1);
        if i % 3 == 1 {
            sender = (leader1 + 1) % servers;
            victim = leader1;
        }
        if disconnect {
            cfg.disconnect(victim);
            cfg.one(cmd(cfg.rand(0..1 << 62)), servers - 1, true).await;
        }
        if crash {
            cfg.crash1(victim);
            cfg.one(cmd(cfg.rand(0..1 << 62)), servers - 1, true).await;
        }
        // Perhaps enough to get a snapshot.
        let nn = sim::raft_cluster::SNAPSHOT_INTERVAL / 2
            + cfg.rand(0..sim::raft_cluster::SNAPSHOT_INTERVAL);
        if let Some(node) = cfg.node(sender) {
            for _ in 0..nn {
                let _ = node.start(cmd(cfg.rand(0..1 << 62)));
            }
        }
        // Let the appliers catch up with the starts. Without a victim, every follower must
        // catch up too, so that Basic needs no InstallSnapshot.
        if !disconnect && !crash {
            cfg.one(cmd(cfg.rand(0..1 << 62)), servers, true).await;
        } else {
            cfg.one(cmd(cfg.rand(0..1 << 62)), servers - 1, true).await;
        }
        let size = log_size(&cfg);
        assert!(size < MAX_LOG_SIZE, "log size too large: {size} bytes");
        if disconnect {
            // Reconnect a follower, which may be behind and need a snapshot to catch up.
            cfg.connect(victim);
            cfg.one(cmd(cfg.rand(0..1 << 62)), servers, true).await;
            leader1 = cfg.check_one_leader().await;
        }
        if crash {
            cfg.start1(victim);
            cfg.connect(victim);
            cfg.one(cmd(cfg.rand(0..1 << 62)), servers, true).await;
            leader1 = cfg.check_one_leader().await;
        }
    }
    eprintln!("snapshots: faults {:?}", cfg.stats().snapshot());
    cfg.end();
}

#[test]
fn snapshot_basic_2d() {
    sim::run("snapshot_basic_2d", snapshot_basic);
}

async fn snapshot_basic(seed: u64) {
    snapcommon(seed, false, true, false).await
}

#[test]
fn snapshot_install_2d() {
    sim::run("snapshot_install_2d", snapshot_install);
}

async fn snapshot_install(seed: u64) {
    snapcommon(seed, true, true, false).await
}

#[test]
fn snapshot_install_unreliable_2d() {
    sim::run(
        "snapshot_install_unreliable_2d",
        snapshot_install_unreliable,
    );
}

async fn snapshot_install_unreliable(seed: u64) {
    snapcommon(seed, true, false, false).await
}

#[test]
fn snapshot_install_crash_2d() {
    sim::run("snapshot_install_crash_2d", snapshot_install_crash);
}

async fn snapshot_install_crash(seed: u64) {
    snapcommon(seed, false, true, true).await
}

#[test]
fn snapshot_install_uncrash_2d() {
    sim::run("snapshot_install_uncrash_2d", snapshot_install_uncrash);
}

async fn snapshot_install_uncrash(seed: u64) {
    snapcommon(seed, false, false, true).await
}

/// Crash and restart all servers at once, five times: each restarts from its snapshot and log
/// tail, and the next index is beyond everything committed before.
#[test]
fn snapshot_all_crash_2d() {
    sim::run("snapshot_all_crash_2d", snapshot_all_crash);
}

async fn snapshot_all_crash(seed: u64) {
    let servers = 3;
    let iters = 5;
    let cfg = RaftCluster::with_snapshots(servers, false, seed);
    cfg.one(cmd(cfg.rand(0..1 << 62)), servers, true).await;
    for _ in 0..iters {
        // Perhaps enough to get a snapshot.
        let nn = sim::raft_cluster::SNAPSHOT_INTERVAL / 2
            + cfg.rand(0..sim::raft_cluster::SNAPSHOT_INTERVAL);
        for _ in 0..nn {
            cfg.one(cmd(cfg.rand(0..1 << 62)), servers, true).await;
        }
        let index1 = cfg.one(cmd(cfg.rand(0..1 << 62)), servers, true).await;
        for i in 0..servers {
            cfg.crash1(i);
        }
        for i in 0..servers {
            cfg.start1(i);
            cfg.connect(i);
        }
        let index2 = cfg.one(cmd(cfg.rand(0..1 << 62)), servers, true).await;
        assert!(index2 > index1, "index decreased from {index1} to {index2}");
    }
    cfg.end();
}
