//! The in-memory persister of the course's tester: what a node has made durable — its hard
//! state and log (the "raft state"), its snapshot, and the chunks of a snapshot it is
//! receiving. A restart starts from a copy, so the dead incarnation cannot write into its
//! successor's state. Raft state and snapshot are saved together: a snapshot replaces the log
//! entries it covers in one step.

use raft::{Entry, HardState, InitialState, LogIndex, SnapshotData, SnapshotMeta, Storage, Term};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Clone, Default)]
pub struct MemPersister {
    inner: Arc<Mutex<Persisted>>,
}

#[derive(Clone, Default)]
struct Persisted {
    hard_state: HardState,
    snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    /// The log after the snapshot.
    entries: Vec<Entry>,
    /// Serialized size of `entries`, kept as they change.
    entry_bytes: usize,
    /// A snapshot being received: what arrived so far. Not part of a copy: a restarted node
    /// has lost it, as a real one deletes a half-received snapshot file.
    incoming: Option<(SnapshotMeta, Vec<u8>)>,
    /// The latest snapshot saved since `snapshot_saved` last asked.
    saved: Option<SnapshotMeta>,
}

impl Persisted {
    fn snapshot_index(&self) -> LogIndex {
        self.snapshot.as_ref().map_or(LogIndex(0), |(m, _)| m.index)
    }

    /// Keeps the entries after `meta` if the log holds its last entry (§7), else none.
    fn start_log_after(&mut self, meta: SnapshotMeta) {
        let first = self.snapshot_index().next();
        let held = meta.index >= first
            && self
                .entries
                .get((meta.index.0 - first.0) as usize)
                .is_some_and(|e| e.term == meta.term);
        if held {
            self.entries.drain(..=(meta.index.0 - first.0) as usize);
        } else {
            self.entries.clear();
        }
        self.entry_bytes = self.entries.iter().map(serialized_len).sum();
    }
}

fn serialized_len(e: &Entry) -> usize {
    postcard::to_allocvec(e).map_or(0, |b| b.len())
}

impl MemPersister {
    pub fn new() -> MemPersister {
        MemPersister::default()
    }

    fn state(&self) -> MutexGuard<'_, Persisted> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An independent copy of what is durable, for the next incarnation after a crash.
    pub fn copy(&self) -> MemPersister {
        let mut copy = self.state().clone();
        copy.incoming = None;
        copy.saved = None;
        MemPersister {
            inner: Arc::new(Mutex::new(copy)),
        }
    }

    /// The size of the Raft state (hard state and log) as it would be serialized: the
    /// course's `RaftStateSize`.
    pub fn raft_state_size(&self) -> usize {
        let st = self.state();
        postcard::to_allocvec(&st.hard_state).map_or(0, |b| b.len()) + st.entry_bytes
    }

    /// The size of the snapshot: the course's `SnapshotSize`.
    pub fn snapshot_size(&self) -> usize {
        self.state().snapshot.as_ref().map_or(0, |(_, d)| d.len())
    }

    pub fn hard_state(&self) -> HardState {
        self.state().hard_state
    }

    /// The index of the last entry stored (the snapshot's if the log after it is empty).
    pub fn last_index(&self) -> u64 {
        let st = self.state();
        st.snapshot_index().0 + st.entries.len() as u64
    }

    /// The current snapshot's index (0 without one).
    pub fn snapshot_index(&self) -> u64 {
        self.state().snapshot_index().0
    }

    /// How much of the snapshot with last index `index` has been received and stored.
    pub fn incoming_received_at(&self, index: u64) -> u64 {
        match &self.state().incoming {
            Some((m, data)) if m.index.0 == index => data.len() as u64,
            _ => 0,
        }
    }
}

impl MemPersister {
    /// Stores `hard_state` and `entries` at once (memory is durable here).
    pub fn write(&mut self, hard_state: Option<&HardState>, entries: &[Entry]) {
        let mut st = self.state();
        if let Some(hs) = hard_state {
            st.hard_state = *hs;
        }
        if let Some(first) = entries.first() {
            let base = st.snapshot_index().0;
            assert!(
                first.index.0 > base,
                "persisting entries the snapshot covers"
            );
            let keep = (first.index.0 - base - 1) as usize;
            assert!(keep <= st.entries.len(), "persisted log would have a gap");
            let dropped: usize = st.entries[keep..].iter().map(serialized_len).sum();
            st.entries.truncate(keep);
            st.entry_bytes -= dropped;
            st.entry_bytes += entries.iter().map(serialized_len).sum::<usize>();
            st.entries.extend_from_slice(entries);
        }
    }
}

impl Storage for MemPersister {
    fn initial_state(&mut self) -> InitialState {
        let st = self.state();
        InitialState {
            hard_state: st.hard_state,
            snapshot: st.snapshot.as_ref().map(|(m, _)| *m),
            entries: st.entries.clone(),
        }
    }

    fn persist(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[Entry],
        _replicating: bool,
    ) -> impl std::future::Future<Output = ()> + Send {
        self.write(hard_state, entries);
        std::future::ready(())
    }

    fn save_snapshot(&mut self, index: LogIndex, term: Term, data: Box<dyn SnapshotData>) {
        let mut st = self.state();
        if index <= st.snapshot_index() {
            return;
        }
        let mut bytes = Vec::new();
        data.write_to(&mut bytes).expect("writing to memory");
        assert!(!bytes.is_empty(), "the service wrote an empty snapshot");
        let meta = SnapshotMeta {
            index,
            term,
            len: bytes.len() as u64,
        };
        let data = bytes;
        st.start_log_after(meta);
        st.snapshot = Some((meta, data));
        st.saved = Some(meta);
    }

    fn snapshot_saved(&mut self) -> Option<SnapshotMeta> {
        self.state().saved.take()
    }

    fn persist_snapshot_chunk(&mut self, meta: SnapshotMeta, offset: u64, data: &[u8]) {
        let mut st = self.state();
        if offset == 0 {
            st.incoming = Some((meta, Vec::new()));
        }
        match &mut st.incoming {
            Some((m, received)) if *m == meta && received.len() as u64 == offset => {
                received.extend_from_slice(data);
            }
            _ => panic!("snapshot chunk at {offset} out of order"),
        }
    }

    fn install_snapshot(&mut self, meta: SnapshotMeta) {
        let mut st = self.state();
        let Some((m, data)) = st.incoming.take() else {
            panic!("installing a snapshot that was not received");
        };
        assert!(
            m == meta && data.len() as u64 == meta.len,
            "incomplete snapshot"
        );
        st.start_log_after(meta);
        st.snapshot = Some((meta, data));
    }

    fn read_snapshot(&mut self) -> Option<(SnapshotMeta, Vec<u8>)> {
        self.state().snapshot.clone()
    }

    fn read_snapshot_chunk(
        &mut self,
        meta: SnapshotMeta,
        offset: u64,
        len: u64,
    ) -> Option<Vec<u8>> {
        let st = self.state();
        let (m, data) = st.snapshot.as_ref()?;
        if *m != meta {
            return None;
        }
        let start = (offset as usize).min(data.len());
        let end = (offset.saturating_add(len) as usize).min(data.len());
        Some(data[start..end].to_vec())
    }
}
