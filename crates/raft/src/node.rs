//! The node driver: one async task per node that owns the I/O around the core. It feeds the
//! core ticks, inbound messages and proposals, and carries out each [`Ready`] in order:
//! persist, send, apply, advance.
//!
//! The driver knows neither the network nor the disk: it talks to them through [`Transport`]
//! and [`Storage`], so the same code runs in the simulator and over TCP with a write-ahead log.

use crate::message::Message;
use crate::raft::{Config, NotLeader, Raft};
use crate::ready::Ready;
use crate::types::{ApplyMsg, Entry, HardState, LogIndex, Term};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;

/// Sends messages to peers. Delivery is best effort: a transport may drop, delay or reorder
/// messages (Raft retries), but `send` must never block the node.
pub trait Transport: Send + Sync + 'static {
    fn send(&self, msg: Message);
}

/// Durable storage of the hard state and the log.
pub trait Storage: Send + 'static {
    /// What was persisted before: the hard state and the log from index 1.
    fn initial_state(&mut self) -> (HardState, Vec<Entry>);

    /// Durably stores `hard_state` (if given) and `entries`, which replace every stored entry
    /// at an index >= `entries[0].index`. Returns only once both survive a crash.
    ///
    /// There is no error result on purpose: a node cannot go on without durable storage, so
    /// an implementation that fails to write or sync must stop the process (and never retry
    /// an fsync, whose failure may have dropped the dirty pages).
    fn persist(&mut self, hard_state: Option<&HardState>, entries: &[Entry]);
}

/// Timing of the driver. The core counts ticks; this says how long a tick is.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub raft: Config,
    pub tick: Duration,
    /// Capacity of the apply channel. When the state machine falls behind, the driver waits
    /// for room rather than buffering without bound.
    pub apply_capacity: usize,
}

impl NodeConfig {
    pub fn new(raft: Config) -> NodeConfig {
        NodeConfig {
            raft,
            tick: Duration::from_millis(10),
            apply_capacity: 4096,
        }
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
    /// Wakes the driver after a proposal or a kill. Capacity 1: one pending wake-up is enough.
    wake: mpsc::Sender<()>,
}

impl Shared {
    fn core(&self) -> MutexGuard<'_, Raft> {
        // A panic while holding the lock already fails the node; keep serving reads of state.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
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

    /// The current term and whether this node believes it is the leader.
    pub fn state(&self) -> (Term, bool) {
        let core = self.shared.core();
        (core.term(), core.is_leader())
    }

    /// Stops the driver. The node sends, persists and applies nothing more.
    pub fn kill(&self) {
        self.shared.killed.store(true, Ordering::SeqCst);
        let _ = self.shared.wake.try_send(());
    }

    pub fn is_killed(&self) -> bool {
        self.shared.killed.load(Ordering::SeqCst)
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
    let (hard_state, entries) = storage.initial_state();
    let core = Raft::new(config.raft.clone(), hard_state, entries);
    let (wake_tx, wake_rx) = mpsc::channel(1);
    let (apply_tx, apply_rx) = mpsc::channel(config.apply_capacity);
    let shared = Arc::new(Shared {
        core: Mutex::new(core),
        killed: AtomicBool::new(false),
        wake: wake_tx,
    });
    let driver = Driver {
        shared: shared.clone(),
        storage,
        transport,
        inbox,
        wake: wake_rx,
        apply: apply_tx,
        tick: config.tick,
    };
    tokio::spawn(driver.run());
    (Handle { shared }, apply_rx)
}

struct Driver<S, T> {
    shared: Arc<Shared>,
    storage: S,
    transport: T,
    inbox: mpsc::Receiver<Message>,
    wake: mpsc::Receiver<()>,
    apply: mpsc::Sender<ApplyMsg>,
    tick: Duration,
}

/// How many queued messages one wake-up steps before producing a `Ready`: batching them
/// gives one fsync for many appends, bounded so ticks are not starved.
const MAX_STEPS_PER_READY: usize = 256;

impl<S: Storage, T: Transport> Driver<S, T> {
    async fn run(mut self) {
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
            if !self.handle_ready().await {
                return;
            }
        }
    }

    fn killed(&self) -> bool {
        self.shared.killed.load(Ordering::SeqCst)
    }

    fn step_batch(&mut self, first: Message) {
        let mut core = self.shared.core();
        core.step(first);
        for _ in 1..MAX_STEPS_PER_READY {
            match self.inbox.try_recv() {
                Ok(msg) => core.step(msg),
                Err(_) => break,
            }
        }
    }

    /// Carries out every pending `Ready`. Returns false once the node must stop.
    async fn handle_ready(&mut self) -> bool {
        loop {
            let mut rd: Ready = {
                let mut core = self.shared.core();
                if !core.has_ready() {
                    return true;
                }
                core.ready()
            };
            if self.killed() {
                return false;
            }
            self.storage.persist(rd.hard_state.as_ref(), &rd.entries);
            // Messages and commands move out rather than being copied (an AppendEntries may
            // carry a megabyte); `advance` only reads the entries' indexes and terms.
            for msg in std::mem::take(&mut rd.messages) {
                self.transport.send(msg);
            }
            for e in &mut rd.committed_entries {
                let msg = ApplyMsg {
                    index: e.index,
                    term: e.term,
                    command: std::mem::take(&mut e.command),
                };
                if self.killed() || self.apply.send(msg).await.is_err() {
                    return false;
                }
            }
            self.shared.core().advance(&rd);
        }
    }
}
