//! A running hash of everything that happened in a simulated run: each message delivered
//! (with the virtual time) and each entry applied. Two runs with one seed must end with the
//! same hash; that is how determinism is tested.

use raft::Message;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct Trace {
    inner: Arc<Mutex<TraceState>>,
}

struct TraceState {
    hash: u64,
    events: u64,
    start: tokio::time::Instant,
}

impl Default for Trace {
    fn default() -> Self {
        Trace::new()
    }
}

impl Trace {
    pub fn new() -> Trace {
        Trace {
            inner: Arc::new(Mutex::new(TraceState {
                hash: 0xcbf2_9ce4_8422_2325,
                events: 0,
                start: tokio::time::Instant::now(),
            })),
        }
    }

    fn mix(&self, bytes: &[u8]) {
        let mut st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = st.start.elapsed().as_nanos() as u64;
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let mut h = st.hash;
        for b in now.to_le_bytes().iter().chain(bytes) {
            h = (h ^ *b as u64).wrapping_mul(0x100_0000_01b3);
        }
        st.hash = h;
        st.events += 1;
    }

    pub fn record_message(&self, msg: &Message) {
        self.mix(&postcard::to_allocvec(msg).unwrap_or_default());
    }

    pub fn record_apply(&self, server: u64, index: u64, command: &[u8]) {
        let mut bytes = Vec::with_capacity(16 + command.len());
        bytes.extend_from_slice(&server.to_le_bytes());
        bytes.extend_from_slice(&index.to_le_bytes());
        bytes.extend_from_slice(command);
        self.mix(&bytes);
    }

    /// Any other event a fixture wants in the trace (client calls and their results).
    pub fn record(&self, bytes: &[u8]) {
        self.mix(bytes);
    }

    /// (hash, number of events).
    pub fn digest(&self) -> (u64, u64) {
        let st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (st.hash, st.events)
    }
}
