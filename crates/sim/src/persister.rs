//! The in-memory persister of the course's tester: what a node has made durable. A crash hands
//! the restarted node a copy, so the dead incarnation cannot write into its successor's state.

use raft::{Entry, HardState, Storage};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Clone, Default)]
pub struct MemPersister {
    inner: Arc<Mutex<Persisted>>,
}

#[derive(Clone, Default, serde::Serialize)]
struct Persisted {
    hard_state: HardState,
    entries: Vec<Entry>,
}

impl MemPersister {
    pub fn new() -> MemPersister {
        MemPersister::default()
    }

    fn state(&self) -> MutexGuard<'_, Persisted> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An independent copy, for the next incarnation after a crash.
    pub fn copy(&self) -> MemPersister {
        MemPersister {
            inner: Arc::new(Mutex::new(self.state().clone())),
        }
    }

    /// The size of the Raft state as it would be serialized (the course's `RaftStateSize`).
    pub fn raft_state_size(&self) -> usize {
        postcard::to_allocvec(&*self.state()).map_or(0, |b| b.len())
    }

    pub fn hard_state(&self) -> HardState {
        self.state().hard_state
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.state().entries.clone()
    }

    /// The index of the last entry stored (0 for an empty log).
    pub fn last_index(&self) -> u64 {
        self.state().entries.len() as u64
    }
}

impl Storage for MemPersister {
    fn initial_state(&mut self) -> (HardState, Vec<Entry>) {
        let st = self.state();
        (st.hard_state, st.entries.clone())
    }

    fn persist(&mut self, hard_state: Option<&HardState>, entries: &[Entry]) {
        let mut st = self.state();
        if let Some(hs) = hard_state {
            st.hard_state = *hs;
        }
        if let Some(first) = entries.first() {
            let keep = first.index.0 as usize - 1;
            assert!(keep <= st.entries.len(), "persisted log would have a gap");
            st.entries.truncate(keep);
            st.entries.extend_from_slice(entries);
        }
    }
}
