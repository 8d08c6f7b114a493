//! Starting and crashing one incarnation of a simulated node, shared by the fixtures.
//!
//! A fixture crashes a node in one of two ways, chosen by the seed: immediately (it stops
//! where it awaits), or at a crash point inside a `Ready` (see [`crate::crash`]) within a
//! short deadline. Either way the fixture treats the node as down at once; an armed node may
//! still run for up to the deadline, which to everyone else looks like a crash a few
//! milliseconds later.

use crate::crash::{Fuse, SimStorage};
use crate::net::{Network, SimTransport};
use crate::persister::MemPersister;
use crate::stats::Stats;
use raft::{
    ApplyMsg, Config, Handle, Message, MessageBody, NodeConfig, NodeId, RaftFault, Transport,
};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How a fixture crashes nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashPolicy {
    /// One crash in `immediate_one_in` is immediate; the others are armed.
    pub immediate_one_in: u32,
    /// An armed crash that has not found its crash point by then happens anyway, at most this
    /// long after the fixture declared it.
    pub armed_deadline: Duration,
}

impl CrashPolicy {
    /// For the course's suites: a crashed node lives on for at most 30 ms.
    pub const SUITES: CrashPolicy = CrashPolicy {
        immediate_one_in: 3,
        armed_deadline: Duration::from_millis(30),
    };
}

/// What a fixture needs to start a node.
pub struct NodeSpec {
    pub id: NodeId,
    pub peers: usize,
    /// The node's tick; 10 ms by default, other values model a clock running fast or slow.
    pub tick: Duration,
    pub fault: RaftFault,
    /// Whether a new leader appends a no-op (the course's Raft suites assume none).
    pub noop: bool,
    /// Seeds the node's election timeouts.
    pub seed: u64,
    /// Read leases (`Config::lease_reads`), measured on the simulator's clock.
    pub lease_reads: bool,
}

/// Snapshot chunks are small here, so that the course's small snapshots still travel in
/// several chunks and their loss, duplication and reordering are exercised.
const SNAPSHOT_CHUNK: u64 = 256;

/// The tick the nodes are configured with; the nemesis skews each node's by up to 20%.
const NOMINAL_TICK: Duration = Duration::from_millis(10);

pub struct Incarnation {
    pub handle: Handle,
    pub fuse: Arc<Fuse>,
}

/// Starts a node from `persister` (which the incarnation writes through its fuse).
pub fn start(
    spec: NodeSpec,
    persister: MemPersister,
    net: &Network,
    stats: &Stats,
) -> (Incarnation, mpsc::Receiver<ApplyMsg>) {
    let (transport, inbox) = net.add_node(spec.id);
    let fuse = Fuse::new(spec.id, net.clone(), stats.clone());
    let mut raft = Config::new(spec.id, (0..spec.peers as NodeId).collect(), spec.seed);
    raft.fault = spec.fault;
    let mut config = NodeConfig::new(raft);
    config.tick = spec.tick;
    config.crash_hook = Some(fuse.hook());
    config.check_invariants = true;
    config.raft.noop_on_election = spec.noop;
    config.raft.max_snapshot_chunk = SNAPSHOT_CHUNK;
    if spec.lease_reads {
        // The lease is the nominal tick's: a node's own tick here models its clock's rate,
        // while the leader times its lease on the simulator's clock.
        config.raft.lease_reads = true;
        config.lease = Some(raft::read_lease(&config.raft, NOMINAL_TICK));
    }
    let transport = ContractTransport {
        inner: transport,
        persister: persister.clone(),
    };
    let storage = SimStorage::new(persister, fuse.clone());
    let (handle, apply) = raft::spawn(config, storage, transport, inbox);
    (Incarnation { handle, fuse }, apply)
}

impl Incarnation {
    /// Crashes the node now or at a crash point soon, as `rng` decides; returns whether it is
    /// dead already.
    pub fn crash(&self, rng: &mut ChaCha8Rng, policy: CrashPolicy) -> bool {
        if rng.gen_ratio(1, policy.immediate_one_in) {
            self.kill_now();
            return true;
        }
        self.fuse.arm(rng.gen());
        let max = policy.armed_deadline.as_micros() as u64;
        let deadline = Duration::from_micros(rng.gen_range(1..=max.max(1)));
        let (fuse, handle) = (self.fuse.clone(), self.handle.clone());
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            fuse.kill_now();
            handle.kill();
        });
        false
    }

    /// Stops the node where it is, if it still runs.
    pub fn kill_now(&self) {
        self.fuse.kill_now();
        self.handle.kill();
    }
}

/// Holds a node to the durability contract written on `Ready` (thesis §3.8): a vote granted or
/// an append acknowledged may leave only once the state it vouches for is durable.
struct ContractTransport {
    inner: SimTransport,
    persister: MemPersister,
}

impl Transport for ContractTransport {
    fn send(&self, msg: Message) {
        let durable = self.persister.hard_state();
        // A later term in storage also vouches for the message: the node can no longer vote
        // again, or be asked to keep entries, in the message's term.
        let moved_on = durable.term > msg.term;
        match msg.body {
            MessageBody::RequestVoteResponse { vote_granted: true } => assert!(
                moved_on || (durable.term == msg.term && durable.vote == Some(msg.to)),
                "durability contract violated (§3.8): node {} granted its vote in term {} to {} \
                 before persisting it (stored: {durable:?})",
                msg.from,
                msg.term,
                msg.to
            ),
            MessageBody::AppendEntriesResponse {
                success: true,
                index,
                ..
            } => {
                let stored = self.persister.last_index();
                assert!(
                    moved_on || stored >= index.0,
                    "durability contract violated (§3.8): node {} acknowledged entries up to {} \
                     in term {} with only {stored} persisted",
                    msg.from,
                    index,
                    msg.term
                );
            }
            MessageBody::InstallSnapshotResponse {
                index, done: true, ..
            } => {
                // Installed, or covered by entries the node holds.
                let stored = self
                    .persister
                    .snapshot_index()
                    .max(self.persister.last_index());
                assert!(
                    moved_on || stored >= index.0,
                    "durability contract violated (§3.8): node {} reported snapshot {index} \
                     installed in term {} with its storage only up to {stored}",
                    msg.from,
                    msg.term
                );
            }
            _ => {}
        }
        self.inner.send(msg);
    }
}
