//! The Raft test fixture, a port of the course's `config.go`: a cluster of nodes on the
//! simulated network, crash and restart from a copied persister, the leader and term checks,
//! `one`, `n_committed`, `wait`, and an applier per node that fails the test when two nodes
//! apply different commands at one index or a node applies out of order.
//!
//! `crash1` may make a node die at a crash point inside a `Ready`, as the seed decides (see
//! [`crate::incarnation`]); `start1` of a running node crashes it at once.
//!
//! Commands are byte strings; [`cmd`] encodes the course's integer commands.

use crate::incarnation::{self, CrashPolicy, Incarnation, NodeSpec};
use crate::net::Network;
use crate::persister::MemPersister;
use crate::stats::Stats;
use crate::trace::Trace;
use raft::{ApplyMsg, Handle, LogIndex, NodeId, RaftFault};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{sleep, Instant};

/// The tester's election timeout: a leader must be elected well within this.
pub const RAFT_ELECTION_TIMEOUT: Duration = Duration::from_millis(1000);

/// With snapshots on (the 2D tests), each node's applier snapshots after every this many
/// entries (the course's `SnapShotInterval`).
pub const SNAPSHOT_INTERVAL: u64 = 10;

/// The course's integer commands, as bytes.
pub fn cmd(x: u64) -> Vec<u8> {
    x.to_le_bytes().to_vec()
}

/// What the appliers saw, shared with their tasks.
#[derive(Default)]
struct Applied {
    /// Per server: index -> command. Kept across restarts: a restarted node re-applies its
    /// log from the start and must apply the same commands.
    logs: Vec<BTreeMap<u64, Vec<u8>>>,
    error: Option<String>,
}

/// Cheap to clone: clones share one cluster, so concurrent client loops of a test can each
/// hold one while the main loop crashes and restarts nodes.
#[derive(Clone)]
pub struct RaftCluster {
    n: usize,
    net: Network,
    trace: Trace,
    stats: Stats,
    nodes: Arc<Mutex<Nodes>>,
    applied: Arc<Mutex<Applied>>,
}

struct Nodes {
    rng: ChaCha8Rng,
    fault: RaftFault,
    /// The 2D tests: appliers snapshot every `SNAPSHOT_INTERVAL` entries.
    snapshots: bool,
    running: Vec<Option<Incarnation>>,
    /// Crashed at a crash point still to come: they may run on for a few milliseconds.
    dying: Vec<Option<Incarnation>>,
    persisters: Vec<MemPersister>,
    connected: Vec<bool>,
}

impl RaftCluster {
    /// `n` nodes, all started and connected, on a reliable or unreliable network. Their
    /// Raft is correct unless a mutant test switched one on ([`crate::mutants`]).
    pub fn new(n: usize, unreliable: bool, seed: u64) -> RaftCluster {
        RaftCluster::with_fault(n, unreliable, seed, crate::mutants::raft_fault())
    }

    /// The course's 2D configuration: each node's applier snapshots every
    /// [`SNAPSHOT_INTERVAL`] entries, and checks the snapshots it is handed.
    pub fn with_snapshots(n: usize, unreliable: bool, seed: u64) -> RaftCluster {
        RaftCluster::build(n, unreliable, seed, crate::mutants::raft_fault(), true)
    }

    /// A cluster whose nodes all carry the deliberate bug `fault` (the mutant tests).
    pub fn with_fault(n: usize, unreliable: bool, seed: u64, fault: RaftFault) -> RaftCluster {
        RaftCluster::build(n, unreliable, seed, fault, false)
    }

    fn build(
        n: usize,
        unreliable: bool,
        seed: u64,
        fault: RaftFault,
        snapshots: bool,
    ) -> RaftCluster {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let trace = Trace::new();
        let stats = Stats::new();
        let net = Network::new(rng.gen(), trace.clone(), stats.clone());
        net.set_reliable(!unreliable);
        let cluster = RaftCluster {
            n,
            net,
            trace,
            stats,
            nodes: Arc::new(Mutex::new(Nodes {
                rng,
                fault,
                snapshots,
                running: (0..n).map(|_| None).collect(),
                dying: (0..n).map(|_| None).collect(),
                persisters: (0..n).map(|_| MemPersister::new()).collect(),
                connected: vec![false; n],
            })),
            applied: Arc::new(Mutex::new(Applied {
                logs: vec![BTreeMap::new(); n],
                ..Applied::default()
            })),
        };
        for i in 0..n {
            cluster.start1(i);
        }
        for i in 0..n {
            cluster.connect(i);
        }
        cluster
    }

    fn nodes(&self) -> MutexGuard<'_, Nodes> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn applied(&self) -> MutexGuard<'_, Applied> {
        self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn net(&self) -> &Network {
        &self.net
    }

    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// The faults injected so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// A random number in `range`, from the test's seeded generator.
    pub fn rand(&self, range: std::ops::Range<u64>) -> u64 {
        self.nodes().rng.gen_range(range)
    }

    /// The running incarnation of node `i`, if it is up.
    pub fn node(&self, i: usize) -> Option<Handle> {
        self.nodes().running[i]
            .as_ref()
            .map(|inc| inc.handle.clone())
    }

    pub fn is_connected(&self, i: usize) -> bool {
        self.nodes().connected[i]
    }

    /// Node `i` if it is up and connected.
    fn reachable(&self, i: usize) -> Option<Handle> {
        let nodes = self.nodes();
        let handle = nodes.running[i].as_ref().map(|inc| inc.handle.clone());
        handle.filter(|_| nodes.connected[i])
    }

    /// Fails the test if an applier found a problem.
    pub fn check_applier(&self) {
        if let Some(err) = &self.applied().error {
            panic!("apply error: {err}");
        }
    }

    // ------------------------------------------------------------ lifecycle

    /// Starts (or restarts) node `i` from its persisted state, disconnected (like the
    /// course's `start1`; tests call `connect` next). A running node is crashed first.
    pub fn start1(&self, i: usize) {
        self.disconnect(i);
        let mut nodes = self.nodes();
        for inc in [nodes.running[i].take(), nodes.dying[i].take()]
            .into_iter()
            .flatten()
        {
            inc.kill_now();
        }
        // The dead incarnations write nothing more; the new one starts from a copy of what
        // they left, so nothing of theirs can reach it.
        let persister = nodes.persisters[i].copy();
        nodes.persisters[i] = persister.clone();
        let spec = NodeSpec {
            id: i as NodeId,
            peers: self.n,
            tick: Duration::from_millis(10),
            fault: nodes.fault,
            noop: false,
            seed: nodes.rng.gen(),
            lease_reads: false,
        };
        let (inc, apply_rx) = incarnation::start(spec, persister, &self.net, &self.stats);
        let snapshots = nodes.snapshots.then(|| inc.handle.clone());
        tokio::spawn(applier(
            i,
            apply_rx,
            self.applied.clone(),
            self.trace.clone(),
            snapshots,
        ));
        nodes.running[i] = Some(inc);
    }

    /// Crashes node `i`: from now on the fixture treats it as down and disconnected. It dies
    /// at once, or (as the seed decides) at a crash point within a few milliseconds, with
    /// its links left as they were so that whatever it sends before dying can arrive.
    pub fn crash1(&self, i: usize) {
        let mut nodes = self.nodes();
        nodes.connected[i] = false;
        let Some(inc) = nodes.running[i].take() else {
            return;
        };
        let dead = inc.crash(&mut nodes.rng, CrashPolicy::SUITES);
        if dead {
            drop(nodes);
            self.disconnect(i);
        } else {
            nodes.dying[i] = Some(inc);
        }
    }

    pub fn connect(&self, i: usize) {
        let mut nodes = self.nodes();
        nodes.connected[i] = true;
        for j in 0..self.n {
            if nodes.connected[j] {
                self.net.enable(i as NodeId, j as NodeId, true);
                self.net.enable(j as NodeId, i as NodeId, true);
            }
        }
    }

    pub fn disconnect(&self, i: usize) {
        self.nodes().connected[i] = false;
        for j in 0..self.n {
            self.net.enable(i as NodeId, j as NodeId, false);
            self.net.enable(j as NodeId, i as NodeId, false);
        }
    }

    pub fn set_unreliable(&self, unreliable: bool) {
        self.net.set_reliable(!unreliable);
    }

    pub fn set_long_reordering(&self, on: bool) {
        self.net.set_long_reordering(on);
    }

    pub fn rpc_count(&self, i: usize) -> u64 {
        self.net.rpc_count(i as NodeId)
    }

    pub fn rpc_total(&self) -> u64 {
        self.net.rpc_total()
    }

    pub fn bytes_total(&self) -> u64 {
        self.net.bytes_total()
    }

    /// The size of node `i`'s persisted Raft state (the course's `LogSize`).
    pub fn log_size(&self, i: usize) -> usize {
        self.nodes().persisters[i].raft_state_size()
    }

    /// Stops every node (the course's `cleanup`), checking the appliers one last time.
    pub fn end(&self) {
        let mut nodes = self.nodes();
        for i in 0..self.n {
            nodes.connected[i] = false;
            for inc in [nodes.running[i].take(), nodes.dying[i].take()]
                .into_iter()
                .flatten()
            {
                inc.kill_now();
            }
        }
        drop(nodes);
        self.check_applier();
    }

    // ------------------------------------------------------------ checks

    /// Polls for a single leader among the connected nodes (about 5 s); fails if some term
    /// has two leaders or no leader shows up.
    pub async fn check_one_leader(&self) -> usize {
        for _ in 0..10 {
            let ms = 450 + self.rand(0..100);
            sleep(Duration::from_millis(ms)).await;
            self.check_applier();
            let mut leaders: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
            for i in 0..self.n {
                if let Some(node) = self.reachable(i) {
                    let (term, is_leader) = node.state();
                    if is_leader {
                        leaders.entry(term.0).or_default().push(i);
                    }
                }
            }
            for (term, ids) in &leaders {
                assert!(
                    ids.len() <= 1,
                    "term {term} has {} (>1) leaders: {ids:?}",
                    ids.len()
                );
            }
            if let Some((_, ids)) = leaders.last_key_value() {
                return ids[0];
            }
        }
        panic!("expected one leader, got none");
    }

    /// All connected nodes agree on the term; returns it.
    pub fn check_terms(&self) -> u64 {
        let mut term = None;
        for i in 0..self.n {
            if let Some(node) = self.reachable(i) {
                let t = node.state().0 .0;
                match term {
                    None => term = Some(t),
                    Some(x) => assert_eq!(x, t, "servers disagree on term"),
                }
            }
        }
        term.expect("no connected server")
    }

    /// No connected node thinks it is the leader.
    pub fn check_no_leader(&self) {
        for i in 0..self.n {
            if let Some(node) = self.reachable(i) {
                assert!(
                    !node.state().1,
                    "expected no leader among connected servers, but {i} claims to be leader"
                );
            }
        }
    }

    /// How many servers think the entry at `index` is committed, and its command; fails if
    /// they disagree.
    pub fn n_committed(&self, index: u64) -> (usize, Option<Vec<u8>>) {
        self.check_applier();
        let applied = self.applied();
        let mut count = 0;
        let mut command: Option<Vec<u8>> = None;
        for log in &applied.logs {
            if let Some(c) = log.get(&index) {
                if let Some(prev) = &command {
                    assert_eq!(prev, c, "committed values do not match: index {index}");
                }
                count += 1;
                command = Some(c.clone());
            }
        }
        (count, command)
    }

    /// Waits for at least `n` servers to commit `index`, giving up (None) if a term passes
    /// `start_term` meanwhile.
    pub async fn wait(&self, index: u64, n: usize, start_term: Option<u64>) -> Option<Vec<u8>> {
        let mut to = Duration::from_millis(10);
        for _ in 0..30 {
            let (nd, _) = self.n_committed(index);
            if nd >= n {
                break;
            }
            sleep(to).await;
            if to < Duration::from_secs(1) {
                to *= 2;
            }
            if let Some(start_term) = start_term {
                let handles: Vec<Handle> = (0..self.n).filter_map(|i| self.node(i)).collect();
                for node in &handles {
                    if node.state().0 .0 > start_term {
                        return None;
                    }
                }
            }
        }
        let (nd, command) = self.n_committed(index);
        assert!(nd >= n, "only {nd} decided for index {index}; wanted {n}");
        command
    }

    /// The course's `one`: submits `command` to whichever node takes it, and waits until
    /// `expected` servers commit it at the returned index. With `retry`, tries again after a
    /// failed attempt; gives up after 10 s.
    pub async fn one(&self, command: Vec<u8>, expected: usize, retry: bool) -> u64 {
        let t0 = Instant::now();
        let mut starts = 0;
        while t0.elapsed() < Duration::from_secs(10) {
            let mut index = None;
            for _ in 0..self.n {
                starts = (starts + 1) % self.n;
                if let Some(node) = self.reachable(starts) {
                    if let Ok((i, _)) = node.start(command.clone()) {
                        index = Some(i.0);
                        break;
                    }
                }
            }
            if let Some(index) = index {
                let t1 = Instant::now();
                while t1.elapsed() < Duration::from_secs(2) {
                    let (nd, c) = self.n_committed(index);
                    if nd > 0 && nd >= expected && c.as_ref() == Some(&command) {
                        return index;
                    }
                    sleep(Duration::from_millis(20)).await;
                }
                assert!(retry, "one({command:?}) failed to reach agreement");
            } else {
                sleep(Duration::from_millis(50)).await;
            }
        }
        panic!(
            "one({command:?}) failed to reach agreement\n{}",
            self.describe()
        );
    }

    /// Each node's view, for failure messages.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for i in 0..self.n {
            let line = match self.node(i) {
                None => format!("node {i}: down\n"),
                Some(node) => node.inspect(|r| {
                    let log = r.log();
                    let progress: Vec<String> = (0..self.n as NodeId)
                        .filter_map(|p| r.progress(p).map(|pr| format!("{p}:{pr:?}")))
                        .collect();
                    format!(
                        "node {i}: connected={} term={} role={:?} last={}@{} commit={} {}\n",
                        self.is_connected(i),
                        r.term(),
                        r.role(),
                        log.last_index(),
                        log.last_term(),
                        log.committed(),
                        progress.join(" ")
                    )
                }),
            };
            out.push_str(&line);
        }
        out
    }
}

/// Reads one incarnation's apply channel, checking every command against what other servers
/// applied at the same index, and that this incarnation applies in order. With `snapshots`
/// (the node's handle), it snapshots every [`SNAPSHOT_INTERVAL`] entries, as the course's 2D
/// tester does: the snapshot holds the last index and every command up to it. A snapshot on
/// the channel replaces what this server applied, after the same checks.
async fn applier(
    i: usize,
    mut rx: mpsc::Receiver<ApplyMsg>,
    applied: Arc<Mutex<Applied>>,
    trace: Trace,
    snapshots: Option<Handle>,
) {
    let mut last_applied = 0;
    while let Some(m) = rx.recv().await {
        let mut a = applied.lock().unwrap_or_else(|e| e.into_inner());
        match m {
            ApplyMsg::Entry { index, command, .. } => {
                let index = index.0;
                trace.record_apply(i as u64, index, &command);
                if index != last_applied + 1 && a.error.is_none() {
                    a.error = Some(format!(
                        "server {i} apply out of order: {index} after {last_applied}"
                    ));
                }
                check_against_others(&mut a, i, index, &command);
                last_applied = index;
                a.logs[i].insert(index, command);
                if let Some(node) = &snapshots {
                    if (index + 1) % SNAPSHOT_INTERVAL == 0 {
                        let log: Vec<Vec<u8>> = (1..=index)
                            .map(|j| a.logs[i].get(&j).cloned().unwrap_or_default())
                            .collect();
                        let data = postcard::to_allocvec(&(index, log)).expect("encode");
                        node.snapshot(LogIndex(index), data);
                    }
                }
            }
            ApplyMsg::Snapshot { meta, data } => {
                trace.record_apply(i as u64, meta.index.0, &data);
                let Ok((index, log)) = postcard::from_bytes::<(u64, Vec<Vec<u8>>)>(&data) else {
                    a.error
                        .get_or_insert(format!("server {i} got an unreadable snapshot"));
                    continue;
                };
                if index != meta.index.0 || index < last_applied {
                    let error = format!(
                        "server {i} got a snapshot for {index} (meta {}) after applying \
                         {last_applied}",
                        meta.index
                    );
                    a.error.get_or_insert(error);
                    continue;
                }
                a.logs[i].clear();
                for (j, command) in (1..).zip(log) {
                    check_against_others(&mut a, i, j, &command);
                    a.logs[i].insert(j, command);
                }
                last_applied = index;
            }
        }
    }
}

/// Fails the test (through `Applied::error`) if another server applied a different command at
/// `index`.
fn check_against_others(a: &mut Applied, i: usize, index: u64, command: &[u8]) {
    let conflict = a.logs.iter().enumerate().find_map(|(j, log)| {
        log.get(&index)
            .filter(|old| old.as_slice() != command)
            .map(|old| format!("commit index={index} server={i} {command:?} != server={j} {old:?}"))
    });
    if a.error.is_none() {
        a.error = conflict;
    }
}
