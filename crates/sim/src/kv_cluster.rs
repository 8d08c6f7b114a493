//! The key/value test fixture, a port of the course's `kvraft/config.go`: key/value servers on
//! the simulated network, Clerks whose endpoints are shuffled and only partly connected,
//! partitions, shutdown and restart of servers from a copied persister, and a record of every
//! Clerk call for the linearizability checker, in one strict order (see [`crate::history`]).
//!
//! Client RPCs follow `labrpc`: a call through a disabled endpoint fails after 0–100 ms; in
//! unreliable mode a request is delayed 0–26 ms and dropped with probability 10%, and a reply
//! dropped with probability 10%; a server that dies while handling a call never answers it.
//! A shut-down server may die at a crash point inside a `Ready` (see [`crate::incarnation`]).

use crate::history::{History, Record};
use crate::incarnation::{self, CrashPolicy, Incarnation, NodeSpec};
use crate::net::Network;
use crate::persister::MemPersister;
use crate::stats::Stats;
use crate::trace::Trace;
use bytes::Bytes;
use kv::{
    Clerk, ClerkConfig, ClerkError, ClientTransport, KvConfig, KvError, KvReply, KvServer, Op,
    OpKind, ReadMode, RpcError, Value,
};
use raft::{LogIndex, NodeId, RaftFault};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// The course's key/value tests wait this long for a new term.
pub const KV_ELECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// How to build a [`KvCluster`].
#[derive(Clone, Debug)]
pub struct KvOptions {
    pub servers: usize,
    /// The course's unreliable network, for Raft messages and client RPCs alike.
    pub unreliable: bool,
    pub kv: KvConfig,
    /// A deliberate bug in every Raft node (the mutant tests); `RaftFault::None` otherwise.
    pub raft_fault: RaftFault,
    /// Each server's tick (10 ms when missing): a clock running fast or slow.
    pub ticks: Vec<Duration>,
    /// How `shutdown_server` crashes a server.
    pub crashes: CrashPolicy,
    /// A new leader appends a no-op entry (thesis §6.4), as in production.
    pub noop_on_election: bool,
    /// A deliberate bug in the Clerks' calls (the mutant tests); `ClientFault::None` otherwise.
    pub client_fault: ClientFault,
}

/// Ways to break the simulated clients on purpose, so tests can show that they catch the bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientFault {
    None,
    /// A transaction is sent as separate operations, each with its own sequence number and so
    /// its own log entry: the watched versions checked by an empty transaction first, then
    /// each command on its own, their replies assembled into the transaction's. Other clients'
    /// writes can then land between its commands.
    ExecAsSeparateEntries,
}

impl KvOptions {
    pub fn new(servers: usize, unreliable: bool) -> KvOptions {
        KvOptions {
            servers,
            unreliable,
            kv: KvConfig::default(),
            raft_fault: RaftFault::None,
            ticks: Vec::new(),
            crashes: CrashPolicy::SUITES,
            noop_on_election: true,
            client_fault: ClientFault::None,
        }
    }
}

/// How the servers of a run serve reads: drawn from the seed, so that every suite runs in
/// every mode and a seed replays its own: through the log in half the runs, ReadIndex in a
/// quarter, ReadIndex with leases in a quarter. The draw does not consume the run's
/// generator, so the rest of a seed's schedule does not depend on it. The mutants that break
/// ReadIndex and leases need theirs.
pub fn read_mode_for(seed: u64, raft_fault: RaftFault) -> ReadMode {
    match raft_fault {
        RaftFault::ReadWithoutQuorum => return ReadMode::ReadIndex,
        RaftFault::LeaseOutlivesElection => return ReadMode::Lease,
        _ => {}
    }
    let mut draw = ChaCha8Rng::seed_from_u64(seed ^ 0x7265_6164_5f6d_6f64);
    if !draw.gen_bool(0.5) {
        ReadMode::Log
    } else if draw.gen_bool(0.5) {
        ReadMode::Lease
    } else {
        ReadMode::ReadIndex
    }
}

#[derive(Clone)]
pub struct KvCluster {
    n: usize,
    net: Network,
    trace: Trace,
    stats: Stats,
    state: Arc<Mutex<State>>,
    history: History,
    start: Instant,
}

struct State {
    rng: ChaCha8Rng,
    options: KvOptions,
    servers: Vec<Option<(KvServer, Incarnation)>>,
    /// Shut down at a crash point still to come: they may run on for a few milliseconds.
    dying: Vec<Option<Incarnation>>,
    /// Bumped on every start and shutdown, so a call in flight to a dead server never returns.
    generations: Vec<u64>,
    persisters: Vec<MemPersister>,
    /// Client endpoints: (server, enabled).
    ends: Vec<(usize, bool)>,
    reliable: bool,
    next_client: u64,
}

impl KvCluster {
    pub fn new(n: usize, unreliable: bool, seed: u64) -> KvCluster {
        KvCluster::with_options(KvOptions::new(n, unreliable), seed)
    }

    /// A cluster whose servers use `kv_config` (the negative controls use its faults).
    pub fn with_config(n: usize, unreliable: bool, seed: u64, kv_config: KvConfig) -> KvCluster {
        let options = KvOptions {
            kv: kv_config,
            ..KvOptions::new(n, unreliable)
        };
        KvCluster::with_options(options, seed)
    }

    /// A cluster built as `options` say; a mutant test may switch on a deliberate bug that
    /// the options leave out ([`crate::mutants`]).
    pub fn with_options(mut options: KvOptions, seed: u64) -> KvCluster {
        if options.raft_fault == RaftFault::None {
            options.raft_fault = crate::mutants::raft_fault();
        }
        if options.kv.fault == kv::Fault::None {
            options.kv.fault = crate::mutants::kv_fault();
        }
        if options.client_fault == ClientFault::None {
            options.client_fault = crate::mutants::client_fault();
        }
        options.kv.reads = read_mode_for(seed, options.raft_fault);
        let n = options.servers;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let trace = Trace::new();
        let stats = Stats::new();
        let net = Network::new(rng.gen(), trace.clone(), stats.clone());
        net.set_reliable(!options.unreliable);
        let cluster = KvCluster {
            n,
            net,
            trace,
            stats,
            state: Arc::new(Mutex::new(State {
                rng,
                reliable: !options.unreliable,
                options,
                servers: (0..n).map(|_| None).collect(),
                dying: (0..n).map(|_| None).collect(),
                generations: vec![0; n],
                persisters: (0..n).map(|_| MemPersister::new()).collect(),
                ends: Vec::new(),
                next_client: 0,
            })),
            history: History::new(),
            start: Instant::now(),
        };
        for i in 0..n {
            cluster.start_server(i);
        }
        cluster.connect_all();
        cluster
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn all(&self) -> Vec<usize> {
        (0..self.n).collect()
    }

    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// The faults injected so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The Raft network, for tests that shape it themselves (the nemesis).
    pub fn net(&self) -> &Network {
        &self.net
    }

    pub fn rand(&self, range: std::ops::Range<u64>) -> u64 {
        self.state().rng.gen_range(range)
    }

    /// Virtual nanoseconds since the cluster started.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// The course's unreliable network, for Raft messages and client RPCs alike.
    pub fn set_unreliable(&self, unreliable: bool) {
        self.state().reliable = !unreliable;
        self.net.set_reliable(!unreliable);
    }

    /// Client RPCs only: lose 10% of requests and replies (and delay requests) or not.
    pub fn set_client_links_unreliable(&self, unreliable: bool) {
        self.state().reliable = !unreliable;
    }

    pub fn server(&self, i: usize) -> Option<KvServer> {
        self.state().servers[i].as_ref().map(|(kv, _)| kv.clone())
    }

    /// Running servers, by index.
    pub fn running(&self) -> Vec<usize> {
        let st = self.state();
        (0..self.n).filter(|&i| st.servers[i].is_some()).collect()
    }

    /// The size of server `i`'s persisted Raft state (the course's `LogSize`).
    pub fn log_size(&self, i: usize) -> usize {
        self.state().persisters[i].raft_state_size()
    }

    /// The size of server `i`'s snapshot (the course's `SnapshotSize`).
    pub fn snapshot_size(&self, i: usize) -> usize {
        self.state().persisters[i].snapshot_size()
    }

    // ------------------------------------------------------------ servers

    /// Starts server `i` (a key/value server and its Raft peer) from its persisted state.
    /// Returns at once. Its Raft links are left as they were; call `connect_all` or
    /// `partition` to change them.
    pub fn start_server(&self, i: usize) {
        let mut st = self.state();
        assert!(st.servers[i].is_none(), "server {i} is already running");
        if let Some(dying) = st.dying[i].take() {
            dying.kill_now();
        }
        // The dead incarnation writes nothing more; the new one starts from a copy of what
        // it left, so nothing of the old one can reach it.
        let persister = st.persisters[i].copy();
        st.persisters[i] = persister.clone();
        let tick = st
            .options
            .ticks
            .get(i)
            .copied()
            .unwrap_or(Duration::from_millis(10));
        let spec = NodeSpec {
            id: i as NodeId,
            peers: self.n,
            tick,
            fault: st.options.raft_fault,
            noop: st.options.noop_on_election,
            seed: st.rng.gen(),
            lease_reads: st.options.kv.reads == ReadMode::Lease,
        };
        let (inc, apply) = incarnation::start(spec, persister, &self.net, &self.stats);
        let kv = KvServer::start(inc.handle.clone(), apply, st.options.kv.clone());
        st.servers[i] = Some((kv, inc));
        st.generations[i] += 1;
    }

    /// Shuts server `i` down like a crash: no reply to any call after this, even calls in
    /// flight; it keeps only what it persisted. It dies at once (and is cut off from the
    /// others), or, as the seed decides, at a crash point within a few milliseconds, with its
    /// links left as they were so that what it sends before dying can arrive.
    pub fn shutdown_server(&self, i: usize) {
        let mut st = self.state();
        st.generations[i] += 1;
        let Some((_, inc)) = st.servers[i].take() else {
            return;
        };
        let policy = st.options.crashes;
        let dead = inc.crash(&mut st.rng, policy);
        if dead {
            drop(st);
            self.disconnect(i, &self.all());
        } else {
            st.dying[i] = Some(inc);
        }
    }

    /// Whether server `i` was shut down but has not reached its crash point yet.
    pub fn is_dying(&self, i: usize) -> bool {
        self.state().dying[i]
            .as_ref()
            .is_some_and(|inc| !inc.fuse.is_dead())
    }

    /// Stops every server at once, for the end of a run.
    pub fn stop_all(&self) {
        let mut st = self.state();
        for i in 0..self.n {
            st.generations[i] += 1;
            if let Some((_, inc)) = st.servers[i].take() {
                inc.kill_now();
            }
            if let Some(inc) = st.dying[i].take() {
                inc.kill_now();
            }
        }
    }

    /// Enables Raft traffic between `i` and each server in `to`, both ways.
    pub fn connect(&self, i: usize, to: &[usize]) {
        for &j in to {
            self.net.enable(i as NodeId, j as NodeId, true);
            self.net.enable(j as NodeId, i as NodeId, true);
        }
    }

    pub fn disconnect(&self, i: usize, from: &[usize]) {
        for &j in from {
            self.net.enable(i as NodeId, j as NodeId, false);
            self.net.enable(j as NodeId, i as NodeId, false);
        }
    }

    pub fn connect_all(&self) {
        let all = self.all();
        for i in 0..self.n {
            self.connect(i, &all);
        }
    }

    /// Two partitions: servers talk only to servers of their own side.
    pub fn partition(&self, p1: &[usize], p2: &[usize]) {
        for &i in p1 {
            self.disconnect(i, p2);
            self.connect(i, p1);
        }
        for &i in p2 {
            self.disconnect(i, p1);
            self.connect(i, p2);
        }
    }

    /// A server that believes it leads, if any.
    pub fn leader(&self) -> Option<usize> {
        (0..self.n).find(|&i| self.server(i).is_some_and(|s| s.raft().state().1))
    }

    /// How the servers serve reads.
    pub fn read_mode(&self) -> ReadMode {
        self.state().options.kv.reads
    }

    /// Each server's Raft view, for failure messages.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for i in 0..self.n {
            let line = match self.server(i) {
                None => format!("server {i}: down\n"),
                Some(kv) => kv.raft().inspect(|r| {
                    let log = r.log();
                    let progress: Vec<String> = (0..self.n as NodeId)
                        .filter_map(|p| r.progress(p).map(|pr| format!("{p}:{pr:?}")))
                        .collect();
                    format!(
                        "server {i}: term={} role={:?} snapshot={} last={}@{} commit={} \
                         applied={} kv_applied={} {}\n",
                        r.term(),
                        r.role(),
                        log.snapshot().index,
                        log.last_index(),
                        log.last_term(),
                        log.committed(),
                        log.applied(),
                        kv.applied_index(),
                        progress.join(" ")
                    )
                }),
            };
            out.push_str(&line);
        }
        out
    }

    /// The course's `make_partition`: a majority without the leader, and a minority holding
    /// it (last).
    pub fn make_partition(&self) -> (Vec<usize>, Vec<usize>) {
        let leader = self.leader().unwrap_or(0);
        let others: Vec<usize> = (0..self.n).filter(|&i| i != leader).collect();
        let (p1, rest) = others.split_at(self.n / 2 + 1);
        let mut p2 = rest.to_vec();
        p2.push(leader);
        (p1.to_vec(), p2)
    }

    /// Waits until every running server has applied the same prefix of the log and checks
    /// that their states are identical (replicas converge after healing).
    pub async fn check_replicas_converge(&self) {
        if let Err(e) = self.replicas_converge(Duration::from_secs(10)).await {
            panic!("{e}");
        }
    }

    /// Waits up to `patience` until every running server has applied the same log prefix;
    /// then their states must be identical, and so must their logs up to that point.
    pub async fn replicas_converge(&self, patience: Duration) -> Result<(), String> {
        let t0 = Instant::now();
        loop {
            let servers: Vec<KvServer> = self
                .running()
                .iter()
                .filter_map(|&i| self.server(i))
                .collect();
            let applied: Vec<u64> = servers.iter().map(KvServer::applied_index).collect();
            if applied.iter().all(|&a| a == applied[0]) {
                let digests: Vec<u64> = servers.iter().map(KvServer::state_digest).collect();
                if digests.iter().any(|&d| d != digests[0]) {
                    return Err(format!(
                        "replicas applied the same log prefix ({}) but hold different states",
                        applied[0]
                    ));
                }
                // The logs from where every replica still holds entries (the rest is in their
                // snapshots, whose states were just compared).
                let from = servers
                    .iter()
                    .map(|s| s.raft().inspect(|r| r.log().first_index()))
                    .max()
                    .unwrap_or(LogIndex(1));
                let logs: Vec<u64> = servers
                    .iter()
                    .map(|s| log_digest(s, from, LogIndex(applied[0])))
                    .collect();
                if logs.iter().any(|&d| d != logs[0]) {
                    return Err(format!(
                        "replicas applied {} entries but their logs differ before that",
                        applied[0]
                    ));
                }
                return Ok(());
            }
            if t0.elapsed() >= patience {
                return Err(format!(
                    "replicas did not converge: applied indexes {applied:?}"
                ));
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    // ------------------------------------------------------------ clients

    /// A Clerk with endpoints to every server, in shuffled order, enabled only to `to`.
    pub fn make_client(&self, to: &[usize]) -> SimClerk {
        let mut st = self.state();
        let mut order: Vec<usize> = (0..self.n).collect();
        order.shuffle(&mut st.rng);
        let ends = order
            .into_iter()
            .map(|server| {
                st.ends.push((server, to.contains(&server)));
                st.ends.len() - 1
            })
            .collect();
        st.next_client += 1;
        let client_id = st.rng.gen::<u64>() ^ st.next_client;
        drop(st);
        let transport = SimClientTransport {
            cluster: self.clone(),
            ends,
        };
        let config = ClerkConfig::default();
        SimClerk {
            clerk: Clerk::new(transport, client_id, config),
        }
    }

    /// Enables exactly the client's endpoints (see [`SimClerk::ends`]) to the servers in `to`.
    pub fn connect_client(&self, ends: &[usize], to: &[usize]) {
        let mut st = self.state();
        for &end in ends {
            let server = st.ends[end].0;
            st.ends[end].1 = to.contains(&server);
        }
    }

    pub fn disconnect_client(&self, ends: &[usize], from: &[usize]) {
        let mut st = self.state();
        for &end in ends {
            if from.contains(&st.ends[end].0) {
                st.ends[end].1 = false;
            }
        }
    }

    // ------------------------------------------------------------ recorded calls

    /// `ck.get(key)`, recorded in the history under client number `client`.
    pub async fn get(&self, ck: &mut SimClerk, key: &str, client: u64) -> String {
        let kind = OpKind::Get {
            key: Bytes::copy_from_slice(key.as_bytes()),
        };
        self.recorded(ck, kind, client).await.into_text()
    }

    pub async fn put(&self, ck: &mut SimClerk, key: &str, value: &str, client: u64) {
        let kind = OpKind::Put {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        };
        self.recorded(ck, kind, client).await;
    }

    pub async fn append(&self, ck: &mut SimClerk, key: &str, value: &str, client: u64) {
        let kind = OpKind::Append {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        };
        self.recorded(ck, kind, client).await;
    }

    async fn recorded(&self, ck: &mut SimClerk, kind: OpKind, client: u64) -> Value {
        match self.try_recorded(ck, kind.clone(), client).await {
            Ok(v) => v,
            Err(e) => panic!("{kind:?} failed: {e}"),
        }
    }

    /// Like `get`, `put` and `append`, for a test that expects calls to fail: a call refused
    /// because its session expired has an unknown outcome, and so has a write applied whose
    /// reply was too large to keep for its retry (a write is recorded as such); a call refused
    /// for good (a limit) changed nothing and is not recorded.
    pub async fn try_recorded(
        &self,
        ck: &mut SimClerk,
        kind: OpKind,
        client: u64,
    ) -> Result<Value, ClerkError> {
        let call = self.history.call(self.now());
        let fault = self.state().options.client_fault;
        let result = match (&kind, fault) {
            (OpKind::Exec { watched, commands }, ClientFault::ExecAsSeparateEntries) => {
                exec_as_separate_entries(ck, watched, commands).await
            }
            _ => ck.clerk.execute(kind.clone()).await,
        };
        let ret = self.now();
        self.trace.record(&ret.to_le_bytes());
        match &result {
            Ok(output) => self
                .history
                .complete(call, client, kind, output.clone(), ret),
            Err(ClerkError::Rejected(KvError::SessionExpired | KvError::ReplyNotKept)) => {
                if !kind.is_read() {
                    self.history.complete_unknown(call, client, kind);
                }
            }
            Err(_) => {}
        }
        result
    }

    /// Every recorded call so far.
    pub fn history(&self) -> Vec<Record> {
        self.history.records()
    }

    /// One client RPC through endpoint `end`, with the course's semantics.
    async fn call(&self, end: usize, op: Op) -> Result<KvReply, RpcError> {
        let (server, enabled, reliable, latency) = {
            let mut st = self.state();
            let (server, enabled) = st.ends[end];
            let latency = Duration::from_micros(st.rng.gen_range(100..1000));
            (server, enabled, st.reliable, latency)
        };
        let target = {
            let st = self.state();
            st.servers[server]
                .as_ref()
                .map(|(kv, _)| (kv.clone(), st.generations[server]))
        };
        let (Some((kv, generation)), true) = (target, enabled) else {
            sleep(Duration::from_millis(self.rand(0..100))).await;
            return Err(RpcError(format!("server {server} unreachable")));
        };
        if !reliable {
            sleep(Duration::from_millis(self.rand(0..27))).await;
            if self.rand(0..1000) < 100 {
                return Err(RpcError("request lost".into()));
            }
        }
        sleep(latency).await;
        let alive = |c: &KvCluster| c.state().generations[server] == generation;
        if !alive(self) {
            return Err(RpcError(format!("server {server} died")));
        }
        let mut handler = tokio::spawn(async move { kv.handle(op).await });
        let reply = loop {
            tokio::select! {
                biased;
                r = &mut handler => break r.map_err(|e| RpcError(format!("handler failed: {e}")))?,
                _ = sleep(Duration::from_millis(100)) => {
                    if !alive(self) {
                        return Err(RpcError(format!("server {server} died")));
                    }
                }
            }
        };
        let delivered = {
            let mut st = self.state();
            let end_ok = st.ends[end].1;
            let lost = !st.reliable && st.rng.gen_range(0..1000) < 100;
            end_ok && st.generations[server] == generation && !lost
        };
        if !delivered {
            return Err(RpcError("reply lost".into()));
        }
        sleep(latency).await;
        Ok(reply)
    }
}

/// The `ClientFault::ExecAsSeparateEntries` mutant's transaction: the watch check, then every
/// command, each an operation (a log entry) of its own.
async fn exec_as_separate_entries(
    ck: &mut SimClerk,
    watched: &[(Bytes, u64)],
    commands: &[kv::Command],
) -> Result<Value, ClerkError> {
    if !watched.is_empty() {
        let check = OpKind::Exec {
            watched: watched.to_vec(),
            commands: Vec::new(),
        };
        if ck.clerk.execute(check).await? == Value::Nil {
            return Ok(Value::Nil);
        }
    }
    let mut replies = Vec::with_capacity(commands.len());
    for command in commands {
        let reply = match ck.clerk.execute(OpKind::Command(command.clone())).await {
            // Inside a transaction a failed command is an error reply, as the service gives.
            Err(ClerkError::Rejected(e)) if e != KvError::SessionExpired => {
                Value::Error(format!("ERR {e}"))
            }
            other => other?,
        };
        replies.push(reply);
    }
    Ok(Value::Array(replies))
}

/// A Clerk whose endpoints go through the simulated network.
pub struct SimClerk {
    pub clerk: Clerk<SimClientTransport>,
}

impl SimClerk {
    /// The client's endpoint ids, to connect or disconnect them later.
    pub fn ends(&self) -> Vec<usize> {
        self.clerk.transport().ends.clone()
    }
}

pub struct SimClientTransport {
    cluster: KvCluster,
    ends: Vec<usize>,
}

impl ClientTransport for SimClientTransport {
    fn servers(&self) -> usize {
        self.ends.len()
    }

    async fn call(&self, server: usize, op: Op) -> Result<KvReply, RpcError> {
        self.cluster.call(self.ends[server], op).await
    }
}

/// A digest of `server`'s log in `[from, upto]` (terms and commands).
fn log_digest(server: &KvServer, from: LogIndex, upto: LogIndex) -> u64 {
    server.raft().inspect(|r| {
        if from > upto {
            return 0;
        }
        let entries = r.log().slice(from, upto, usize::MAX);
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for e in &entries {
            let bytes = e
                .term
                .0
                .to_le_bytes()
                .into_iter()
                .chain(e.command.iter().copied());
            for b in bytes {
                h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
            }
        }
        h ^ entries.len() as u64
    })
}
