//! `KvServer`: RPC handlers that submit operations to Raft and wait, and the apply loop that
//! executes committed operations in log order and wakes the waiting handlers.
//!
//! ```text
//! handler: check limits ─ start(op) ─ register waiter at index ─ wait ──────────┐
//! apply loop: committed entry ─ state machine ─ waiter at that index? ─ wake ───┘
//! ```
//!
//! The apply loop is the only code that changes the key/value state. A read goes through the
//! log like any write ([`ReadMode::Log`]), or is served without it ([`ReadMode::ReadIndex`],
//! thesis §6.4): Raft checks with a majority that this node still leads, and the apply loop
//! runs the read on the state at exactly the index Raft named. Either way a deposed leader
//! never answers from stale state.

use crate::op::{KvError, KvReply, Limits, Op, OpKind, Value};
use crate::state_machine::{KvStateMachine, StateImage, DEFAULT_MAX_SESSIONS};
use raft::{ApplyMsg, Handle, LogIndex, ReadCheck, Term};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep, Instant};

#[derive(Clone, Debug)]
pub struct KvConfig {
    pub limits: Limits,
    /// Most client sessions kept; opening one more evicts the least recently used.
    pub max_sessions: usize,
    /// When to snapshot the state so that Raft can drop the log it covers.
    pub snapshots: SnapshotPolicy,
    /// Most handlers that may wait for their entry at once; more get `Busy` before proposing.
    pub max_waiting: usize,
    /// A handler gives up (answering `Timeout`) after waiting this long for its entry.
    pub max_wait: Duration,
    /// How often a waiting handler checks that its term and leadership still hold.
    pub leadership_poll: Duration,
    /// How the leader serves reads.
    pub reads: ReadMode,
    /// Deliberately broken behaviour for negative-control tests; `Fault::None` otherwise.
    #[doc(hidden)]
    pub fault: Fault,
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            limits: Limits::default(),
            max_sessions: DEFAULT_MAX_SESSIONS,
            snapshots: SnapshotPolicy::default(),
            max_waiting: 10_000,
            max_wait: Duration::from_secs(2),
            leadership_poll: Duration::from_millis(20),
            reads: ReadMode::default(),
            fault: Fault::None,
        }
    }
}

/// How a leader serves a linearizable read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadMode {
    /// A read is a log entry like a write: it costs an append and an fsync on a majority.
    Log,
    /// ReadIndex (thesis §6.4): no log entry. Raft names an index (its last) and confirms
    /// with one round of heartbeats that it still leads; the apply loop runs the read on the
    /// state after exactly that index. Only a read with no write of its client waiting before
    /// it (`lowest_pending == seq`) goes this way; a read pipelined behind a write goes
    /// through the log, which keeps it in order after it.
    #[default]
    ReadIndex,
    /// ReadIndex with a lease (thesis §6.4.1): for a while after a majority confirmed a
    /// round, the leader serves reads without one, trusting that no other leader can be
    /// elected before its lease ends. That rests on clocks: see `raft::read_lease`. Raft
    /// must be set up for it on every node (`Config::lease_reads`, `NodeConfig::lease`);
    /// without that this mode is ReadIndex.
    Lease,
}

/// When the apply loop snapshots the state (§7). A snapshot is taken after applying an entry
/// once the log (what Raft keeps in memory and storage beyond the last snapshot) passes
/// either limit, if it has also grown to `min_log_percent` of the last snapshot's size, and
/// only once Raft has taken up the previous snapshot, so that at most one is in flight. With
/// neither limit set the log is never compacted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// The log's size in bytes (the course's `maxraftstate`).
    pub max_log_bytes: Option<usize>,
    /// The number of entries in the log.
    pub max_log_entries: Option<usize>,
    /// Wait until the log's bytes reach this percentage of the last snapshot's size. Each
    /// snapshot writes the whole state, so without it a large state would be rewritten every
    /// few thousand small writes; with it, snapshots write at most 100 / `min_log_percent`
    /// bytes per byte of log.
    pub min_log_percent: Option<u64>,
}

impl SnapshotPolicy {
    /// Whether a log of `bytes` and `entries` after a snapshot of `snapshot_len` bytes calls
    /// for a new snapshot.
    pub fn due(&self, bytes: usize, entries: usize, snapshot_len: u64) -> bool {
        let over = self.max_log_bytes.is_some_and(|max| bytes >= max)
            || self.max_log_entries.is_some_and(|max| entries >= max);
        let worth = self
            .min_log_percent
            .is_none_or(|percent| bytes as u64 * 100 >= snapshot_len.saturating_mul(percent));
        over && worth
    }
}

/// Ways to break the server on purpose, so tests can show that they catch the bug.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// A leader answers `Get` from its local state without going through the log.
    LocalReads,
    /// The state machine applies every entry, retries included.
    NoDuplicateDetection,
    /// A leader answers `Put` and `Append` as soon as they are proposed, before they commit.
    AnswerBeforeCommit,
    /// The leader records a request in the session table when it proposes it, not when it is
    /// applied (against thesis §6.3): applying it later looks like a retry, so the leader's
    /// replica skips the write that every other replica applies.
    SessionUpdatedOnPropose,
}

struct Waiter {
    client_id: u64,
    seq: u64,
    done: oneshot::Sender<KvReply>,
}

struct Shared {
    config: KvConfig,
    /// Handlers waiting for the entry at an index. Bounded by `config.max_waiting`.
    waiters: Mutex<BTreeMap<u64, Waiter>>,
    /// ReadIndex reads waiting for the apply loop to reach their index, by (index, id).
    /// Changed only under the `state` lock (taken first). Bounded by `config.max_waiting`.
    reads: Mutex<BTreeMap<(u64, u64), PendingRead>>,
    next_read: AtomicU64,
    state: Mutex<KvStateMachine>,
    /// The last index the apply loop applied. Changed only under the `state` lock (taken
    /// first), so that the two are read consistently together.
    applied: Mutex<u64>,
    /// Proposals whose handler saw them applied, and those it gave up on (leadership lost,
    /// time-out): for metrics.
    proposals_committed: AtomicU64,
    proposals_failed: AtomicU64,
}

/// A proposed operation, in the log at a known index, and the channel its reply comes on.
struct Waiting {
    index: u64,
    term: Term,
    done: oneshot::Receiver<KvReply>,
}

/// A read for the apply loop to run once it has applied exactly up to the read's index.
struct PendingRead {
    kind: OpKind,
    done: oneshot::Sender<KvReply>,
}

/// A ReadIndex read: its leadership check, and the channel its reply comes on.
struct ReadWaiting {
    /// Its key in `Shared::reads` (None if it was run at once).
    key: Option<(u64, u64)>,
    term: Term,
    check: ReadCheck,
    done: oneshot::Receiver<KvReply>,
}

enum Submitted {
    Entry(Op, Waiting),
    Read(ReadWaiting),
}

/// An operation submitted by [`KvServer::propose`]: await [`Proposal::wait`] for its reply.
pub struct Proposal(Result<(KvServer, Submitted), KvReply>);

impl Proposal {
    pub async fn wait(self) -> KvReply {
        match self.0 {
            Ok((server, Submitted::Entry(op, waiting))) => server.wait(op, waiting).await,
            Ok((server, Submitted::Read(read))) => server.wait_read(read).await,
            Err(reply) => reply,
        }
    }
}

/// Counters of a server, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvStats {
    pub proposals_committed: u64,
    pub proposals_failed: u64,
    /// Handlers waiting for their entry now.
    pub proposals_pending: u64,
    pub sessions: u64,
    pub keys: u64,
}

#[derive(Clone)]
pub struct KvServer {
    raft: Handle,
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl KvServer {
    /// Starts the server's apply loop on a running Raft node; returns at once.
    pub fn start(raft: Handle, apply: mpsc::Receiver<ApplyMsg>, config: KvConfig) -> KvServer {
        let shared = Arc::new(Shared {
            state: Mutex::new(KvStateMachine::new(config.limits, config.max_sessions)),
            config,
            waiters: Mutex::new(BTreeMap::new()),
            reads: Mutex::new(BTreeMap::new()),
            next_read: AtomicU64::new(0),
            applied: Mutex::new(0),
            proposals_committed: AtomicU64::new(0),
            proposals_failed: AtomicU64::new(0),
        });
        tokio::spawn(apply_loop(apply, shared.clone(), raft.clone()));
        KvServer { raft, shared }
    }

    pub fn raft(&self) -> &Handle {
        &self.raft
    }

    /// Stops the server and its Raft peer. Waiting handlers answer `WrongLeader`.
    pub fn kill(&self) {
        self.raft.kill();
    }

    pub fn stats(&self) -> KvStats {
        let (sessions, keys) = {
            let state = lock(&self.shared.state);
            (state.sessions() as u64, state.len() as u64)
        };
        KvStats {
            proposals_committed: self.shared.proposals_committed.load(Ordering::Relaxed),
            proposals_failed: self.shared.proposals_failed.load(Ordering::Relaxed),
            proposals_pending: lock(&self.shared.waiters).len() as u64,
            sessions,
            keys,
        }
    }

    /// The last log index applied to the state machine.
    pub fn applied_index(&self) -> u64 {
        *lock(&self.shared.applied)
    }

    /// A digest of the replica's key/value map, to check that replicas converge. O(size),
    /// under the state lock: for the simulator; see [`KvServer::image`] otherwise.
    pub fn state_digest(&self) -> u64 {
        lock(&self.shared.state).digest()
    }

    /// The state and the index it was applied through, copied in O(1): for work on the whole
    /// state (a digest, say) that must not hold up the apply loop.
    pub fn image(&self) -> (u64, StateImage) {
        let state = lock(&self.shared.state);
        let applied = *lock(&self.shared.applied);
        (applied, state.image())
    }

    /// The `Get` RPC handler.
    pub async fn get(&self, client_id: u64, seq: u64, key: bytes::Bytes) -> KvReply {
        self.handle(Op::new(client_id, seq, OpKind::Get { key }))
            .await
    }

    /// The `PutAppend` RPC handler (`kind` is a `Put` or an `Append`).
    pub async fn put_append(&self, op: Op) -> KvReply {
        debug_assert!(!matches!(op.kind, OpKind::Get { .. }));
        self.handle(op).await
    }

    /// Submits `op` to the log and waits until it is applied, leadership is lost, or the wait
    /// times out.
    pub async fn handle(&self, op: Op) -> KvReply {
        self.propose(op).wait().await
    }

    /// Submits `op` to the log at once and returns what waits for its reply. Operations
    /// proposed one after another, from one task, take their places in the log in that
    /// order: a pipeline's requests are proposed in the order they arrived, so none has to
    /// wait for an earlier one to come along.
    ///
    /// A read with no write of its client waiting before it is served with ReadIndex in that
    /// mode; it still sees everything proposed before it here, and nothing proposed after.
    pub fn propose(&self, op: Op) -> Proposal {
        let config = &self.shared.config;
        let read_index = config.reads != ReadMode::Log
            && op.kind.is_read()
            && op.lowest_pending == op.seq
            && config.fault != Fault::LocalReads;
        let submitted = if read_index {
            self.start_read(op.kind).map(Submitted::Read)
        } else {
            self.start_waiting(&op).map(|w| Submitted::Entry(op, w))
        };
        Proposal(submitted.map(|s| (self.clone(), s)))
    }

    /// Starts a ReadIndex read: asks Raft for the index to read at and its check, and runs
    /// the read now if the state is at that index, or leaves it to the apply loop.
    fn start_read(&self, kind: OpKind) -> Result<ReadWaiting, KvReply> {
        let config = &self.shared.config;
        config.limits.check(&kind).map_err(Err)?;
        // Holding the state keeps the apply loop from moving past the index before the read
        // is registered (or run).
        let mut state = lock(&self.shared.state);
        let applied = *lock(&self.shared.applied);
        let mut reads = lock(&self.shared.reads);
        if reads.len() >= config.max_waiting {
            return Err(Err(KvError::Busy));
        }
        let (index, term, check) = self
            .raft
            .read_index()
            .map_err(|_| Err(KvError::WrongLeader))?;
        let (tx, done) = oneshot::channel();
        // Raft's last index is at least its commit index, so the state is never past it.
        debug_assert!(applied <= index.0);
        let key = if applied >= index.0 {
            let _ = tx.send(state.read_only(&kind));
            None
        } else {
            let key = (
                index.0,
                self.shared.next_read.fetch_add(1, Ordering::Relaxed),
            );
            reads.insert(key, PendingRead { kind, done: tx });
            Some(key)
        };
        Ok(ReadWaiting {
            key,
            term,
            check,
            done,
        })
    }

    /// Waits for a ReadIndex read's check and its reply, both needed; gives up as a
    /// proposal's handler does.
    async fn wait_read(&self, read: ReadWaiting) -> KvReply {
        let config = &self.shared.config;
        let ReadWaiting {
            key,
            term,
            check,
            mut done,
        } = read;
        let check = check.confirmed();
        tokio::pin!(check);
        let (mut confirmed, mut reply) = (false, None);
        let deadline = Instant::now() + config.max_wait;
        let error = loop {
            if confirmed {
                if let Some(reply) = reply.take() {
                    return reply;
                }
            }
            tokio::select! {
                biased;
                ok = &mut check, if !confirmed => {
                    if !ok {
                        break KvError::WrongLeader;
                    }
                    confirmed = true;
                }
                r = &mut done, if reply.is_none() => match r {
                    Ok(r) => reply = Some(r),
                    // Dropped: a snapshot took the state past the read's index.
                    Err(_) => break KvError::WrongLeader,
                },
                _ = sleep(config.leadership_poll) => {
                    let (now_term, is_leader) = self.raft.state();
                    if self.raft.is_killed() || now_term != term || !is_leader {
                        break KvError::WrongLeader;
                    } else if Instant::now() >= deadline {
                        break KvError::Timeout;
                    }
                }
            }
        };
        if let Some(key) = key {
            let _state = lock(&self.shared.state);
            lock(&self.shared.reads).remove(&key);
        }
        Err(error)
    }

    /// Proposes `op` and registers its waiter: `Err` is the reply if it need not wait.
    fn start_waiting(&self, op: &Op) -> Result<Waiting, KvReply> {
        let config = &self.shared.config;
        config.limits.check(&op.kind).map_err(Err)?;
        if let (Fault::LocalReads, OpKind::Get { key }) = (config.fault, &op.kind) {
            if self.raft.state().1 {
                let value = lock(&self.shared.state).peek(key);
                return Err(Ok(value.map_or(Value::Nil, Value::Bytes)));
            }
        }
        let (index, term, done) = {
            // The waiter is registered under the same lock as `start`, so the apply loop
            // cannot apply the entry before its waiter exists.
            let mut waiters = lock(&self.shared.waiters);
            if waiters.len() >= config.max_waiting {
                return Err(Err(KvError::Busy));
            }
            let (index, term) = self
                .raft
                .start(op.encode())
                .map_err(|_| Err(KvError::WrongLeader))?;
            match config.fault {
                Fault::AnswerBeforeCommit if !op.kind.is_read() => {
                    return Err(Ok(Value::Ok));
                }
                Fault::SessionUpdatedOnPropose => {
                    lock(&self.shared.state).record_session(op.client_id, op.seq);
                }
                _ => {}
            }
            let (tx, rx) = oneshot::channel();
            // The same index can come back after a leadership change: the older waiter's
            // entry is gone, and dropping its sender tells it so.
            waiters.insert(
                index.0,
                Waiter {
                    client_id: op.client_id,
                    seq: op.seq,
                    done: tx,
                },
            );
            (index.0, term, rx)
        };
        Ok(Waiting { index, term, done })
    }

    /// Waits for the reply of a proposed operation.
    async fn wait(&self, op: Op, waiting: Waiting) -> KvReply {
        let config = &self.shared.config;
        let Waiting {
            index,
            term,
            mut done,
        } = waiting;
        let deadline = Instant::now() + config.max_wait;
        loop {
            tokio::select! {
                biased;
                reply = &mut done => {
                    let counter = match reply {
                        Ok(_) => &self.shared.proposals_committed,
                        Err(_) => &self.shared.proposals_failed,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    return reply.unwrap_or(Err(KvError::WrongLeader));
                }
                _ = sleep(config.leadership_poll) => {
                    let (now_term, is_leader) = self.raft.state();
                    let error = if self.raft.is_killed() || now_term != term || !is_leader {
                        KvError::WrongLeader
                    } else if Instant::now() >= deadline {
                        KvError::Timeout
                    } else {
                        continue;
                    };
                    self.forget(index, &op);
                    self.shared.proposals_failed.fetch_add(1, Ordering::Relaxed);
                    return Err(error);
                }
            }
        }
    }

    /// Removes this handler's waiter (and only this handler's) at `index`.
    fn forget(&self, index: u64, op: &Op) {
        let mut waiters = lock(&self.shared.waiters);
        if waiters
            .get(&index)
            .is_some_and(|w| w.client_id == op.client_id && w.seq == op.seq)
        {
            waiters.remove(&index);
        }
    }
}

/// Applies committed entries in order, the only writer of the state machine, and wakes the
/// handler waiting at each index if it waits for this very operation; a different operation
/// at its index means its own was lost with a leadership change. Snapshots replace the state;
/// after an entry, it snapshots the state when the policy says so.
async fn apply_loop(mut apply: mpsc::Receiver<ApplyMsg>, shared: Arc<Shared>, raft: Handle) {
    // The index of the last snapshot handed to Raft; no new one until Raft has taken it.
    let mut snapshot_requested = 0;
    while let Some(msg) = apply.recv().await {
        let (index, command) = match msg {
            ApplyMsg::Snapshot { meta, data } => {
                restore_snapshot(&shared, meta.index.0, &data);
                snapshot_requested = snapshot_requested.max(meta.index.0);
                continue;
            }
            ApplyMsg::Entry { index, command, .. } => (index.0, command),
        };
        // An empty command is a leader's no-op; an undecodable one is skipped by every
        // replica alike, so they stay identical. Either way its index counts as applied.
        let op = if command.is_empty() {
            None
        } else {
            Op::decode(&command)
                .inspect_err(|e| tracing::error!(index, "skipping an undecodable log entry: {e}"))
                .ok()
        };
        let mut state = lock(&shared.state);
        {
            let mut applied = lock(&shared.applied);
            assert_eq!(index, *applied + 1, "entries must be applied in order");
            *applied = index;
        }
        let reply = op.as_ref().map(|op| {
            if shared.config.fault == Fault::NoDuplicateDetection {
                state.apply_without_dedup(index, op)
            } else {
                state.apply(index, op)
            }
        });
        run_reads(&shared, &mut state, index);
        drop(state);
        if let (Some(op), Some(reply)) = (op, reply) {
            let waiter = lock(&shared.waiters).remove(&index);
            if let Some(w) = waiter {
                if w.client_id == op.client_id && w.seq == op.seq {
                    let _ = w.done.send(reply);
                }
            }
        }
        maybe_snapshot(&shared, &raft, index, &mut snapshot_requested);
    }
    // The node stopped: every handler still waiting learns it from its dropped sender.
    lock(&shared.waiters).clear();
    let _state = lock(&shared.state);
    lock(&shared.reads).clear();
}

/// Runs the ReadIndex reads whose index the state has just reached (the caller holds the
/// state, at `applied`). Their checks may still be under way: a read that fails its check
/// is simply not answered with what it read.
fn run_reads(shared: &Shared, state: &mut KvStateMachine, applied: u64) {
    let mut reads = lock(&shared.reads);
    while let Some(entry) = reads.first_entry() {
        if entry.key().0 > applied {
            break;
        }
        let read = entry.remove();
        let _ = read.done.send(state.read_only(&read.kind));
    }
}

/// Replaces the state with a snapshot's (at startup, or one received from the leader).
fn restore_snapshot(shared: &Shared, index: u64, data: &[u8]) {
    let mut state = lock(&shared.state);
    let mut applied = lock(&shared.applied);
    assert!(
        index > *applied || index == 0,
        "a snapshot behind the applied state"
    );
    if let Err(e) = state.restore(data) {
        // Raft only hands out snapshots this service wrote; one it cannot read means the
        // replica cannot know its state.
        panic!("cannot read the snapshot at index {index}: {e}");
    }
    *applied = index;
    // Reads at or below the snapshot can no longer be run at their index: they fail, and
    // their clients retry.
    lock(&shared.reads).retain(|&(i, _), _| i > index);
    drop((applied, state));
    // Waiters at or below the snapshot cannot be answered from it: their entries were
    // applied elsewhere, so their clients retry and get the remembered reply.
    lock(&shared.waiters).retain(|&i, _| i > index);
}

/// Snapshots the state at `index` if the policy says so and Raft has taken the previous
/// snapshot. The apply loop only copies the state (O(1)); storage encodes the copy as it
/// writes it (in production on a thread of its own, straight into the snapshot file).
fn maybe_snapshot(shared: &Shared, raft: &Handle, index: u64, requested: &mut u64) {
    let policy = shared.config.snapshots;
    if policy.max_log_bytes.is_none() && policy.max_log_entries.is_none() {
        return;
    }
    let (bytes, entries, compacted) = raft.inspect(|r| {
        let log = r.log();
        (log.bytes(), log.len(), log.snapshot())
    });
    if compacted.index.0 < *requested || !policy.due(bytes, entries, compacted.len) {
        return;
    }
    let started = Instant::now();
    let image = lock(&shared.state).image();
    tracing::debug!(
        "snapshot at index {index}: the apply loop paused {:?} to copy the state",
        started.elapsed()
    );
    // Raft refuses it only if it already holds a snapshot at least as new, so the next one
    // can be taken once the log has grown again past that.
    *requested = index;
    raft.snapshot(LogIndex(index), image);
}

#[cfg(test)]
mod tests {
    use super::SnapshotPolicy;

    #[test]
    fn a_snapshot_is_due_past_a_limit_once_the_log_is_worth_it() {
        let entries = SnapshotPolicy {
            max_log_entries: Some(100),
            ..SnapshotPolicy::default()
        };
        assert!(!entries.due(1 << 20, 99, 0));
        assert!(entries.due(10, 100, 1 << 30));

        let bytes = SnapshotPolicy {
            max_log_bytes: Some(1000),
            ..SnapshotPolicy::default()
        };
        assert!(!bytes.due(999, 1 << 20, 0));
        assert!(bytes.due(1000, 1, 0));

        // Past the entry limit, but a 10 MB state is rewritten only once the log holds 5 MB.
        let worth = SnapshotPolicy {
            min_log_percent: Some(50),
            ..entries
        };
        assert!(!worth.due(4_999_999, 100, 10_000_000));
        assert!(worth.due(5_000_000, 100, 10_000_000));
        assert!(!worth.due(5_000_000, 99, 10_000_000));
        // No snapshot yet: the first is due at the limit.
        assert!(worth.due(1, 100, 0));

        assert!(!SnapshotPolicy::default().due(usize::MAX, usize::MAX, 0));
    }
}
