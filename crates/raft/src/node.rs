//! The node driver: one async task per node that owns the I/O around the core. It feeds the
//! core ticks, inbound messages and proposals, and carries out each [`Ready`] in order:
//! persist, send, apply, advance. It also takes the service's snapshots to storage, compacts
//! the log once one is durable, and reads snapshot chunks from storage for followers.
//!
//! The driver knows neither the network nor the disk: it talks to them through [`Transport`]
//! and [`Storage`], so the same code runs in the simulator and over TCP with a write-ahead log.

use crate::message::Message;
use crate::message::MessageBody;
use crate::raft::{Config, NotLeader, Raft, RaftFault, Role};
use crate::ready::{ReadState, Ready, SnapshotWrite};
use crate::types::{
    ApplyMsg, Entry, HardState, LogIndex, NodeId, SnapshotData, SnapshotMeta, Term,
};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// Sends messages to peers. Delivery is best effort: a transport may drop, delay or reorder
/// messages (Raft retries), but `send` must never block the node.
pub trait Transport: Send + Sync + 'static {
    fn send(&self, msg: Message);
}

/// What a node finds in storage when it starts.
#[derive(Clone, Debug, Default)]
pub struct InitialState {
    pub hard_state: HardState,
    /// The current snapshot, if there is one.
    pub snapshot: Option<SnapshotMeta>,
    /// The log after the snapshot (from index 1 without one), consecutive.
    pub entries: Vec<Entry>,
}

/// Durable storage of the hard state, the log and the snapshot.
///
/// There are no error results on purpose: a node cannot go on without durable storage, so an
/// implementation that fails to write or sync must stop the process (and never retry an
/// fsync, whose failure may have dropped the dirty pages).
pub trait Storage: Send + 'static {
    /// What was persisted before. Entries the snapshot covers are left out; so is a stored
    /// suffix that does not continue the snapshot (§7: the log is kept after a snapshot only
    /// if it holds the snapshot's last entry, same index and term).
    fn initial_state(&mut self) -> InitialState;

    /// Durably stores `hard_state` (if given) and `entries`, which replace every stored entry
    /// at an index >= `entries[0].index`. The future resolves only once both survive a crash.
    /// The driver awaits it before calling anything else, so a storage may hand the write to
    /// a thread of its own (an fsync blocks for a while) and let the driver's thread run
    /// other tasks meanwhile. `replicating`: the driver has just queued AppendEntries meant
    /// to travel while this write happens (a leader's, thesis §10.2.1); a storage that
    /// writes on the calling thread must first let them go (yield to the runtime).
    fn persist(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[Entry],
        replicating: bool,
    ) -> impl std::future::Future<Output = ()> + Send;

    /// Stores a snapshot the service took of its state through `index` (of term `term`),
    /// letting `data` write itself out (so that it need not be encoded into memory first). It
    /// may return before the snapshot is durable; [`Storage::snapshot_saved`] reports when it
    /// is. Once durable, the stored log entries it covers may be discarded. A snapshot no
    /// newer than the current one is ignored.
    fn save_snapshot(&mut self, index: LogIndex, term: Term, data: Box<dyn SnapshotData>);

    /// The newest snapshot whose save completed since the last call, if any, with its length.
    /// The driver then drops the entries it covers from memory.
    fn snapshot_saved(&mut self) -> Option<SnapshotMeta>;

    /// Durably stores a chunk of a snapshot being received from the leader. Chunks come in
    /// order; offset 0 starts a new snapshot, dropping any other half-received one.
    fn persist_snapshot_chunk(&mut self, meta: SnapshotMeta, offset: u64, data: &[u8]);

    /// The received snapshot `meta` is complete: durably make it the current snapshot. The
    /// stored log now starts after it (entries after it are kept only if they continue it;
    /// see `initial_state`), and the next entries persisted may start at `meta.index + 1`.
    fn install_snapshot(&mut self, meta: SnapshotMeta);

    /// The current snapshot and its data, to hand to the service.
    fn read_snapshot(&mut self) -> Option<(SnapshotMeta, Vec<u8>)>;

    /// `len` bytes at `offset` of the current snapshot, if it is still `meta` (to send a
    /// follower a chunk without holding the whole snapshot in memory).
    fn read_snapshot_chunk(&mut self, meta: SnapshotMeta, offset: u64, len: u64)
        -> Option<Vec<u8>>;
}

/// Timing of the driver. The core counts ticks; this says how long a tick is.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub raft: Config,
    pub tick: Duration,
    /// Capacity of the apply channel. When the state machine falls behind, the driver waits
    /// for room rather than buffering without bound.
    pub apply_capacity: usize,
    /// Simulated crashes inside a `Ready` (tests only); `None` otherwise.
    #[doc(hidden)]
    pub crash_hook: Option<CrashHook>,
    /// Asserts the core's invariants after every input (the simulator turns it on).
    pub check_invariants: bool,
    /// Read leases (thesis §6.4.1): once a majority has echoed a read round, the leader
    /// serves reads without a round of their own for this long after the round started.
    /// Needs `Config::lease_reads` on every node; see [`read_lease`]. `None`: every read has
    /// its round.
    pub lease: Option<Duration>,
}

/// How long a read lease lasts with a tick of `tick`: three quarters of the whole ticks
/// (`election_ticks - 1`) that a follower which heard from the leader waits at least before
/// it grants a vote (`Config::lease_reads`). The rest allows for clocks whose rates differ:
/// the lease holds while no follower's clock runs more than a third faster than the
/// leader's, and while no process of the leader stalls between reading its clock and
/// answering for longer than the margin. The lease is timed from before the round's
/// messages leave.
pub fn read_lease(raft: &Config, tick: Duration) -> Duration {
    let lease = tick * (raft.election_ticks.saturating_sub(1) as u32) * 3 / 4;
    if raft.fault == RaftFault::LeaseOutlivesElection {
        return lease * 10;
    }
    lease
}

impl NodeConfig {
    pub fn new(raft: Config) -> NodeConfig {
        NodeConfig {
            raft,
            tick: Duration::from_millis(10),
            apply_capacity: 4096,
            crash_hook: None,
            check_invariants: false,
            lease: None,
        }
    }
}

/// A moment inside the carrying out of a [`Ready`] at which a real process could die. Tests
/// make a simulated node die at one of them (through [`CrashHook`]) and check that what it
/// left on disk and on the wire is still safe. A crash *during* a persist (a prefix of the
/// entries durable, the hard state written or not) is the simulated storage's to model.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// The `Ready` is taken; nothing of it is done yet.
    BeforePersist,
    /// Persisted; none of its messages sent yet.
    AfterPersist,
    /// This many of its messages sent.
    AfterSend(usize),
    /// This many of its committed entries handed to the apply channel.
    AfterApply(usize),
}

/// Asked at every [`CrashPoint`]; answering true kills the node right there.
#[doc(hidden)]
#[derive(Clone)]
pub struct CrashHook(pub Arc<dyn Fn(CrashPoint) -> bool + Send + Sync>);

impl fmt::Debug for CrashHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CrashHook")
    }
}

/// The application's view of a node, with the shape the course's tests use.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

struct Shared {
    core: Mutex<Raft>,
    killed: AtomicBool,
    /// Wakes the driver after a proposal, a snapshot or a kill. Capacity 1: one pending
    /// wake-up is enough.
    wake: mpsc::Sender<()>,
    /// The service's latest snapshot (index, term, data), waiting for the driver to take it
    /// to storage.
    snapshot: Mutex<Option<PendingSnapshot>>,
    /// Times this node saw a new leader (or became one).
    leader_changes: AtomicU64,
    /// The term and leader as the driver last saw them, for those who want to know when they
    /// change (a client forwarding requests to the leader, say).
    leader: watch::Sender<LeaderView>,
    /// Reads waiting for their leadership check ([`Handle::read_index`]), by id. Entries are
    /// added under the core's lock, so the driver cannot see a read's outcome first.
    reads: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    next_read: AtomicU64,
    /// The read lease, if one was won: the term it is of and when it ends.
    lease: Mutex<Option<(Term, Instant)>>,
}

/// The leadership check of a read ([`Handle::read_index`]).
pub struct ReadCheck(Check);

enum Check {
    /// Waiting for a round of heartbeats; the driver answers.
    Round(oneshot::Receiver<()>),
    /// Confirmed when asked, by the read lease.
    Lease,
}

impl ReadCheck {
    /// True once a majority has confirmed that this node still led its term after the read
    /// was asked for; false if it stopped leading (or was killed) first.
    pub async fn confirmed(self) -> bool {
        match self.0 {
            Check::Round(rx) => rx.await.is_ok(),
            Check::Lease => true,
        }
    }
}

/// Who leads, as far as this node knows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaderView {
    pub term: Term,
    pub leader: Option<NodeId>,
}

type PendingSnapshot = (LogIndex, Term, Box<dyn SnapshotData>);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn core(&self) -> MutexGuard<'_, Raft> {
        // A panic while holding the lock already fails the node; keep serving reads of state.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `core` leads under a lease that has not ended.
    fn in_lease(&self, core: &Raft) -> bool {
        core.is_leader()
            && lock(&self.lease)
                .is_some_and(|(term, until)| term == core.term() && Instant::now() < until)
    }
}

impl Handle {
    /// Proposes `command`. Returns at once with the index and term it will have if it is ever
    /// committed; there is no guarantee that it will be (leadership may be lost).
    pub fn start(&self, command: Vec<u8>) -> Result<(LogIndex, Term), NotLeader> {
        if self.is_killed() {
            return Err(NotLeader { leader_hint: None });
        }
        let result = self.shared.core().propose(command);
        if result.is_ok() {
            let _ = self.shared.wake.try_send(());
        }
        result
    }

    /// A linearizable read without a log entry (thesis §6.4; see [`Raft::read_index`]).
    /// Returns the index to read at, with the term it was asked in: read the state after
    /// applying exactly the entries up to that index, once the check confirms. Fails at once
    /// on a node that is not the leader. Under a read lease (`NodeConfig::lease`) the check
    /// is confirmed already.
    pub fn read_index(&self) -> Result<(LogIndex, Term, ReadCheck), NotLeader> {
        if self.is_killed() {
            return Err(NotLeader { leader_hint: None });
        }
        let mut core = self.shared.core();
        if self.shared.in_lease(&core) {
            let index = core.read_index_in_lease()?;
            // Only the term's first read has anything for the driver (the no-op).
            if core.has_ready() {
                let _ = self.shared.wake.try_send(());
            }
            return Ok((index, core.term(), ReadCheck(Check::Lease)));
        }
        let id = self.shared.next_read.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let index = core.read_index(id)?;
        lock(&self.shared.reads).insert(id, tx);
        let term = core.term();
        drop(core);
        let _ = self.shared.wake.try_send(());
        Ok((index, term, ReadCheck(Check::Round(rx))))
    }

    /// The current term and whether this node believes it is the leader.
    pub fn state(&self) -> (Term, bool) {
        let core = self.shared.core();
        (core.term(), core.is_leader())
    }

    /// Stops the driver. The node sends, persists and applies nothing more.
    pub fn kill(&self) {
        self.shared.killed.store(true, Ordering::SeqCst);
        lock(&self.shared.reads).clear();
        let _ = self.shared.wake.try_send(());
    }

    pub fn is_killed(&self) -> bool {
        self.shared.killed.load(Ordering::SeqCst)
    }

    /// How many times this node has seen a new leader (itself included) since it started.
    pub fn leader_changes(&self) -> u64 {
        self.shared.leader_changes.load(Ordering::Relaxed)
    }

    /// The term and leader, updated by the driver whenever either changes.
    pub fn watch_leader(&self) -> watch::Receiver<LeaderView> {
        self.shared.leader.subscribe()
    }

    /// §7: the service's state after applying every entry up to `index` (one it was handed on
    /// the apply channel) is `data`. The driver has storage write it out; once it is durable,
    /// the log entries it covers are dropped, here and in storage. Returns false, ignoring
    /// it, if it could replace nothing (the log's snapshot is at least as new) or its index is
    /// not committed (a broken contract).
    pub fn snapshot(&self, index: LogIndex, data: impl SnapshotData) -> bool {
        let term = {
            let core = self.shared.core();
            let log = core.log();
            // `committed`, not `applied`: the core counts an entry as applied only once the
            // driver has handed out the whole `Ready` holding it, which can be just after the
            // service applied it. The driver takes the snapshot to storage no earlier than
            // that (`take_snapshots`).
            let newer = index > log.snapshot().index && index <= log.committed();
            match log.term_at(index) {
                Some(term) if newer => term,
                _ => return false,
            }
        };
        *lock(&self.shared.snapshot) = Some((index, term, Box::new(data)));
        let _ = self.shared.wake.try_send(());
        true
    }

    /// Runs `f` on the core, for tests and diagnostics.
    pub fn inspect<T>(&self, f: impl FnOnce(&Raft) -> T) -> T {
        f(&self.shared.core())
    }
}

/// Starts a node on the current tokio runtime. `inbox` delivers messages from peers. Returns
/// the handle and the apply channel, which yields committed commands in index order.
pub fn spawn<S: Storage, T: Transport>(
    config: NodeConfig,
    mut storage: S,
    transport: T,
    inbox: mpsc::Receiver<Message>,
) -> (Handle, mpsc::Receiver<ApplyMsg>) {
    let initial = storage.initial_state();
    let core = Raft::new(
        config.raft.clone(),
        initial.hard_state,
        initial.snapshot,
        initial.entries,
    );
    let (wake_tx, wake_rx) = mpsc::channel(1);
    let (apply_tx, apply_rx) = mpsc::channel(config.apply_capacity);
    let shared = Arc::new(Shared {
        core: Mutex::new(core),
        killed: AtomicBool::new(false),
        wake: wake_tx,
        snapshot: Mutex::new(None),
        leader_changes: AtomicU64::new(0),
        leader: watch::Sender::new(LeaderView::default()),
        reads: Mutex::new(HashMap::new()),
        next_read: AtomicU64::new(0),
        lease: Mutex::new(None),
    });
    let seen = Seen::of(&shared.core());
    let driver = Driver {
        seen,
        shared: shared.clone(),
        storage,
        transport,
        inbox,
        wake: wake_rx,
        apply: apply_tx,
        tick: config.tick,
        crash_hook: config.crash_hook,
        check_invariants: config.check_invariants,
        send_before_persist: config.raft.fault == RaftFault::SendBeforePersist,
        leases: config.lease.map(|duration| LeaseClock {
            duration,
            rounds: VecDeque::new(),
            last_round: 0,
        }),
    };
    tokio::spawn(driver.run());
    (Handle { shared }, apply_rx)
}

struct Driver<S, T> {
    /// The role, term and leader at the end of the last input, to report changes.
    seen: Seen,
    shared: Arc<Shared>,
    storage: S,
    transport: T,
    inbox: mpsc::Receiver<Message>,
    wake: mpsc::Receiver<()>,
    apply: mpsc::Sender<ApplyMsg>,
    tick: Duration,
    crash_hook: Option<CrashHook>,
    check_invariants: bool,
    /// The `RaftFault::SendBeforePersist` mutant.
    send_before_persist: bool,
    /// Times read rounds for the lease, if leases are on.
    leases: Option<LeaseClock>,
}

/// The driver's side of read leases: when each read round started, so that a round a
/// majority echoes renews the lease from its start.
struct LeaseClock {
    /// How long a lease lasts ([`read_lease`]).
    duration: Duration,
    /// The read rounds started and not yet echoed by a majority, as (term, round, when it
    /// started), oldest first.
    rounds: VecDeque<(Term, u64, Instant)>,
    /// The last read round remembered: a round is timed once, when it starts.
    last_round: u64,
}

/// Read rounds remembered for the lease: enough for those a majority has not echoed yet,
/// which are few unless the majority is gone; forgetting one only loses a lease renewal.
const MAX_LEASE_ROUNDS: usize = 1024;

/// How many queued messages one wake-up steps before producing a `Ready`: batching them
/// gives one fsync for many appends, bounded so ticks are not starved.
const MAX_STEPS_PER_READY: usize = 256;

impl<S: Storage, T: Transport> Driver<S, T> {
    async fn run(mut self) {
        let shared = self.shared.clone();
        self.serve().await;
        // Reads still waiting for their check learn that it will never come.
        lock(&shared.reads).clear();
    }

    async fn serve(&mut self) {
        // A restarted node's service starts from the snapshot; entries after it follow.
        if self.shared.core().log().snapshot().index > LogIndex(0) && !self.apply_snapshot().await {
            return;
        }
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.killed() {
                return;
            }
            tokio::select! {
                biased;
                _ = self.wake.recv() => {}
                msg = self.inbox.recv() => match msg {
                    Some(msg) => self.step_batch(msg),
                    None => return,
                },
                _ = ticker.tick() => self.shared.core().tick(),
            }
            self.observe();
            self.take_snapshots();
            if self.check_invariants {
                self.shared.core().check_invariants();
            }
            if !self.handle_ready().await {
                return;
            }
        }
    }

    fn killed(&self) -> bool {
        self.shared.killed.load(Ordering::SeqCst)
    }

    /// Reports changes of role, term and leader: one log line each (an operator's view of
    /// elections), the leader-change count, and the leader watch.
    fn observe(&mut self) {
        let now = Seen::of(&self.shared.core());
        let was = std::mem::replace(&mut self.seen, now);
        if now == was {
            return;
        }
        let (node, term) = (now.id, now.term.0);
        match (was.role, now.role) {
            (Role::Leader, Role::Leader) => {}
            (_, Role::Leader) => tracing::info!(node, term, "became the leader of term {term}"),
            (Role::Leader, _) if now.term > was.term => tracing::info!(
                node,
                term,
                "stepped down as leader of term {}: saw term {term}",
                was.term
            ),
            (Role::Leader, _) => tracing::info!(
                node,
                term,
                "stepped down as leader of term {term}: no contact with a majority"
            ),
            (Role::Candidate, Role::Candidate) if now.term == was.term => {}
            (_, Role::Candidate) => {
                tracing::info!(node, term, "starting an election for term {term}")
            }
            _ => {}
        }
        if now.leader != was.leader {
            if let Some(leader) = now.leader {
                self.shared.leader_changes.fetch_add(1, Ordering::Relaxed);
                if leader != node {
                    tracing::info!(
                        node,
                        term,
                        leader,
                        "following leader {leader} in term {term}"
                    );
                }
            }
        }
        self.shared.leader.send_if_modified(|view| {
            let new = LeaderView {
                term: now.term,
                leader: now.leader,
            };
            std::mem::replace(view, new) != new
        });
    }

    fn step_batch(&mut self, first: Message) {
        let mut core = self.shared.core();
        core.step(first);
        for _ in 1..MAX_STEPS_PER_READY {
            if self.check_invariants {
                core.check_invariants();
            }
            match self.inbox.try_recv() {
                Ok(msg) => core.step(msg),
                Err(_) => break,
            }
        }
    }

    /// Takes the service's latest snapshot to storage, and compacts the log once storage has
    /// one durable.
    fn take_snapshots(&mut self) {
        let applied = self.shared.core().log().applied();
        let taken = {
            let mut pending = lock(&self.shared.snapshot);
            match &*pending {
                Some((index, _, _)) if *index <= applied => pending.take(),
                _ => None,
            }
        };
        if let Some((index, term, data)) = taken {
            self.storage.save_snapshot(index, term, data);
        }
        if let Some(meta) = self.storage.snapshot_saved() {
            self.shared.core().compact(meta);
        }
    }

    /// Hands the current snapshot from storage to the service. False once the node must stop.
    async fn apply_snapshot(&mut self) -> bool {
        let Some((meta, data)) = self.storage.read_snapshot() else {
            panic!("the log starts after a snapshot that storage does not have");
        };
        !self.killed()
            && self
                .apply
                .send(ApplyMsg::Snapshot { meta, data })
                .await
                .is_ok()
    }

    /// Carries out every pending `Ready`. Returns false once the node must stop.
    async fn handle_ready(&mut self) -> bool {
        loop {
            let mut rd: Ready = {
                let mut core = self.shared.core();
                if let Some(leases) = &mut self.leases {
                    leases.renew(&core, &self.shared.lease);
                }
                if !core.has_ready() {
                    return true;
                }
                let rd = core.ready();
                if let Some(leases) = &mut self.leases {
                    leases.note_round(&core);
                }
                rd
            };
            if self.killed() || self.crash_at(CrashPoint::BeforePersist) {
                return false;
            }
            // A read's check depends on nothing this `Ready` writes: answer it at once.
            self.resolve_reads(std::mem::take(&mut rd.read_states));
            // Messages and commands move out rather than being copied (an AppendEntries may
            // carry a megabyte); `advance` only reads the entries' indexes and terms.
            let mut messages = std::mem::take(&mut rd.messages);
            if self.send_before_persist {
                if !self.send_all(messages) {
                    return false;
                }
                self.persist(&mut rd, true).await;
                if self.crash_at(CrashPoint::AfterPersist) {
                    return false;
                }
            } else {
                // A leader's entries go to its followers while it writes them itself (thesis
                // §10.2.1): they vouch for nothing about the leader's storage, and it counts
                // itself toward a majority only once its write is done (`advance`). Not when
                // the hard state changes: what follows a new term or vote waits for it.
                let mut replicating = false;
                if rd.hard_state.is_none() {
                    let (early, late): (Vec<_>, _) = messages.into_iter().partition(is_replication);
                    messages = late;
                    replicating = !early.is_empty();
                    if !self.send_all(early) {
                        return false;
                    }
                }
                self.persist(&mut rd, replicating).await;
                if self.crash_at(CrashPoint::AfterPersist) || !self.send_all(messages) {
                    return false;
                }
            }
            let mut applied = 0;
            if rd.install_snapshot.is_some() {
                if !self.apply_snapshot().await {
                    return false;
                }
                applied += 1;
                if self.crash_at(CrashPoint::AfterApply(applied)) {
                    return false;
                }
            }
            for e in &mut rd.committed_entries {
                let msg = ApplyMsg::Entry {
                    index: e.index,
                    term: e.term,
                    command: std::mem::take(&mut e.command),
                };
                if self.killed() || self.apply.send(msg).await.is_err() {
                    return false;
                }
                applied += 1;
                if self.crash_at(CrashPoint::AfterApply(applied)) {
                    return false;
                }
            }
            self.shared.core().advance(&rd);
        }
    }

    /// Tells the reads waiting for their checks how they ended.
    fn resolve_reads(&self, states: Vec<ReadState>) {
        if states.is_empty() {
            return;
        }
        let mut reads = lock(&self.shared.reads);
        for state in states {
            if let Some(tx) = reads.remove(&state.id) {
                if state.confirmed {
                    let _ = tx.send(());
                }
            }
        }
    }

    /// Step 1 of a `Ready`: a received snapshot first (the entries that follow may start right
    /// after it), then the hard state and entries.
    async fn persist(&mut self, rd: &mut Ready, replicating: bool) {
        for write in std::mem::take(&mut rd.snapshot_writes) {
            match write {
                SnapshotWrite::Chunk { meta, offset, data } => {
                    self.storage.persist_snapshot_chunk(meta, offset, &data)
                }
                SnapshotWrite::Install(meta) => self.storage.install_snapshot(meta),
            }
        }
        // Nothing to write is common (a heartbeat's answer, a read's round): storage is not
        // even asked, since a real one may hand the call to another thread first.
        if rd.hard_state.is_some() || !rd.entries.is_empty() {
            self.storage
                .persist(rd.hard_state.as_ref(), &rd.entries, replicating)
                .await;
        }
    }

    /// Sends `messages` in order; false if the node died on the way. Snapshot chunks get
    /// their bytes from storage here; a chunk of a snapshot storage no longer has is dropped
    /// (the leader starts over with the new one).
    fn send_all(&mut self, messages: Vec<Message>) -> bool {
        for (sent, mut msg) in messages.into_iter().enumerate() {
            if let MessageBody::InstallSnapshot {
                meta,
                offset,
                len,
                data,
            } = &mut msg.body
            {
                match self.storage.read_snapshot_chunk(*meta, *offset, *len) {
                    Some(bytes) => *data = bytes,
                    None => continue,
                }
            }
            self.transport.send(msg);
            if self.crash_at(CrashPoint::AfterSend(sent + 1)) {
                return false;
            }
        }
        true
    }

    /// Whether the crash hook kills the node at `point`; if so the node is marked killed.
    fn crash_at(&self, point: CrashPoint) -> bool {
        let crash = self.crash_hook.as_ref().is_some_and(|hook| (hook.0)(point));
        if crash {
            self.shared.killed.store(true, Ordering::SeqCst);
        }
        crash
    }
}

impl LeaseClock {
    /// A round echoed by a majority extends the lease to `duration` after the round started.
    /// Rounds of other terms, or of a node no longer leading, are forgotten.
    fn renew(&mut self, core: &Raft, lease: &Mutex<Option<(Term, Instant)>>) {
        if !core.is_leader() {
            self.rounds.clear();
            return;
        }
        let (term, confirmed) = (core.term(), core.confirmed_read_round());
        let mut started = None;
        while let Some(&(t, round, at)) = self.rounds.front() {
            if t == term && round > confirmed {
                break;
            }
            if t == term {
                started = Some(at);
            }
            self.rounds.pop_front();
        }
        if let Some(at) = started {
            *lock(lease) = Some((term, at + self.duration));
        }
    }

    /// Remembers when the `Ready` just taken started a read round, before any of its
    /// messages leave.
    fn note_round(&mut self, core: &Raft) {
        let round = core.read_round();
        if round > self.last_round {
            self.last_round = round;
            if self.rounds.len() == MAX_LEASE_ROUNDS {
                self.rounds.pop_front();
            }
            self.rounds.push_back((core.term(), round, Instant::now()));
        }
    }
}

/// A leader's message carrying its log (or snapshot) to a follower, which may leave before
/// the leader's own write of the same entries.
fn is_replication(msg: &Message) -> bool {
    matches!(
        msg.body,
        MessageBody::AppendEntries { .. } | MessageBody::InstallSnapshot { .. }
    )
}

/// The part of a core's state that an operator watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    id: NodeId,
    role: Role,
    term: Term,
    leader: Option<NodeId>,
}

impl Seen {
    fn of(core: &Raft) -> Seen {
        Seen {
            id: core.id(),
            role: core.role(),
            term: core.term(),
            leader: core.leader_id(),
        }
    }
}
