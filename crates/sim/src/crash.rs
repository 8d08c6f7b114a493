//! Crash points: a simulated node dies anywhere a real process could, not only where its task
//! happens to await.
//!
//! A real process can die half-way through writing a batch to disk, between persisting and
//! sending, after sending some of a `Ready`'s messages, or while handing committed entries to
//! the application. Each incarnation of a node has a [`Fuse`], consulted by the driver at every
//! [`CrashPoint`] (through [`raft::CrashHook`]) and by [`SimStorage`] on every persist. A
//! crash is either immediate (the node stops where it awaits, between two `Ready`s) or
//! *armed*: the fuse picks, from the seed, how many crash points the node still passes and, if
//! it lands on a persist, how much of it reaches the disk (a prefix of the entries; the hard
//! state or not). A fixture that arms a fuse also sets a short deadline after which the node
//! dies anyway, so that an idle node does not live on.
//!
//! Messages a node sent before it died stay in flight and may still arrive, as on a real
//! network; nothing it would send afterwards leaves it, and its storage ignores later writes.

use crate::net::Network;
use crate::persister::MemPersister;
use crate::stats::Stats;
use raft::{
    CrashHook, CrashPoint, Entry, HardState, InitialState, LogIndex, NodeId, SnapshotData,
    SnapshotMeta, Storage, Term,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::{Arc, Mutex, MutexGuard};

/// Armed crashes land within this many crash points (uniformly): a leader's `Ready` under
/// load has a persist, one message per follower and a few entries to apply.
const MAX_COUNTDOWN: u32 = 8;

/// One incarnation's life: alive, set to die at a crash point, or dead.
pub struct Fuse {
    id: NodeId,
    net: Network,
    stats: Stats,
    state: Mutex<FuseState>,
}

enum FuseState {
    Alive,
    /// Dies at the crash point after passing `countdown` more.
    Armed {
        countdown: u32,
        rng: ChaCha8Rng,
    },
    /// Dies inside the persist that comes next, leaving part of it on disk.
    TearNextPersist {
        rng: ChaCha8Rng,
    },
    Dead,
}

/// What the storage does with one persist.
enum Write {
    All,
    Nothing,
    /// The first `entries` entries, and the hard state if `hard_state`; then the node dies.
    Torn {
        entries: usize,
        hard_state: bool,
    },
}

impl Fuse {
    pub fn new(id: NodeId, net: Network, stats: Stats) -> Arc<Fuse> {
        Arc::new(Fuse {
            id,
            net,
            stats,
            state: Mutex::new(FuseState::Alive),
        })
    }

    fn state(&self) -> MutexGuard<'_, FuseState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The hook to put in the incarnation's `NodeConfig`.
    pub fn hook(self: &Arc<Self>) -> CrashHook {
        let fuse = self.clone();
        CrashHook(Arc::new(move |point| fuse.at(point)))
    }

    /// Plans a death at one of the next crash points, chosen by `seed`.
    pub fn arm(&self, seed: u64) {
        let mut st = self.state();
        if matches!(*st, FuseState::Alive) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let countdown = rng.gen_range(0..MAX_COUNTDOWN);
            *st = FuseState::Armed { countdown, rng };
        }
    }

    /// Dies now, wherever the node is (between two `Ready`s, or waiting to apply).
    pub fn kill_now(&self) {
        let mut st = self.state();
        if !matches!(*st, FuseState::Dead) {
            self.stats.add("crash: immediate", 1);
            self.die(&mut st);
        }
    }

    pub fn is_dead(&self) -> bool {
        matches!(*self.state(), FuseState::Dead)
    }

    fn die(&self, st: &mut FuseState) {
        *st = FuseState::Dead;
        // Nothing more goes to or from this incarnation; what it sent is still in flight.
        self.net.remove_node(self.id);
    }

    fn at(&self, point: CrashPoint) -> bool {
        let mut st = self.state();
        match &mut *st {
            FuseState::Alive | FuseState::TearNextPersist { .. } => false,
            FuseState::Dead => true,
            FuseState::Armed { countdown, .. } if *countdown > 0 => {
                *countdown -= 1;
                false
            }
            FuseState::Armed { rng, .. } => {
                if point == CrashPoint::BeforePersist && rng.gen_bool(0.5) {
                    let rng = rng.clone();
                    *st = FuseState::TearNextPersist { rng };
                    return false;
                }
                let kind = match point {
                    CrashPoint::BeforePersist => "crash: before persist",
                    CrashPoint::AfterPersist => "crash: after persist, before sending",
                    CrashPoint::AfterSend(_) => "crash: after sending some messages",
                    CrashPoint::AfterApply(_) => "crash: while applying",
                };
                self.stats.add(kind, 1);
                self.die(&mut st);
                true
            }
        }
    }

    /// Decides the fate of a persist of `entries` entries.
    fn persist_plan(&self, entries: usize, hard_state: bool) -> Write {
        let mut st = self.state();
        match &mut *st {
            FuseState::Dead => Write::Nothing,
            FuseState::TearNextPersist { rng } => {
                let kept = rng.gen_range(0..=entries);
                let hs = hard_state && rng.gen_bool(0.5);
                self.stats.add("crash: during persist", 1);
                self.die(&mut st);
                Write::Torn {
                    entries: kept,
                    hard_state: hs,
                }
            }
            _ => Write::All,
        }
    }
}

/// An incarnation's storage: the node's [`MemPersister`], written through its [`Fuse`].
pub struct SimStorage {
    persister: MemPersister,
    fuse: Arc<Fuse>,
}

impl SimStorage {
    pub fn new(persister: MemPersister, fuse: Arc<Fuse>) -> SimStorage {
        SimStorage { persister, fuse }
    }
}

impl Storage for SimStorage {
    fn initial_state(&mut self) -> InitialState {
        self.persister.initial_state()
    }

    fn persist(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[Entry],
        _replicating: bool,
    ) -> impl std::future::Future<Output = ()> + Send {
        match self.fuse.persist_plan(entries.len(), hard_state.is_some()) {
            Write::All => self.persister.write(hard_state, entries),
            Write::Nothing => {}
            Write::Torn {
                entries: kept,
                hard_state: hs,
            } => self
                .persister
                .write(hard_state.filter(|_| hs), &entries[..kept]),
        }
        std::future::ready(())
    }

    // Snapshot writes are atomic here (a real node writes a temporary file and renames it),
    // and a half-received snapshot is lost in a crash anyway; a dead node writes nothing.

    fn save_snapshot(&mut self, index: LogIndex, term: Term, data: Box<dyn SnapshotData>) {
        if !self.fuse.is_dead() {
            self.persister.save_snapshot(index, term, data);
        }
    }

    fn snapshot_saved(&mut self) -> Option<SnapshotMeta> {
        self.persister.snapshot_saved()
    }

    fn persist_snapshot_chunk(&mut self, meta: SnapshotMeta, offset: u64, data: &[u8]) {
        if !self.fuse.is_dead() {
            self.persister.persist_snapshot_chunk(meta, offset, data);
        }
    }

    fn install_snapshot(&mut self, meta: SnapshotMeta) {
        if !self.fuse.is_dead() {
            self.persister.install_snapshot(meta);
            self.fuse.stats.add("snapshots installed", 1);
        }
    }

    fn read_snapshot(&mut self) -> Option<(SnapshotMeta, Vec<u8>)> {
        self.persister.read_snapshot()
    }

    fn read_snapshot_chunk(
        &mut self,
        meta: SnapshotMeta,
        offset: u64,
        len: u64,
    ) -> Option<Vec<u8>> {
        self.persister.read_snapshot_chunk(meta, offset, len)
    }
}
