//! The record of every Clerk call, for the linearizability checker, in one strict order.
//!
//! The simulation runs on one thread, so its events happen one after another even when they
//! share a virtual instant (timers tick in whole milliseconds, and a client calls again the
//! instant its previous call returns). Each call and each return therefore takes the next
//! *position* from one counter, and the checker orders operations by position: an operation
//! that returned before another was called always comes first, never "concurrent" with it
//! because two timestamps tied. The virtual times are kept too, for reports and speed checks.

use kv::{OpKind, Value};
use std::sync::{Arc, Mutex, MutexGuard};

/// One completed Clerk call.
#[derive(Clone, Debug)]
pub struct Record {
    pub client: u64,
    pub kind: OpKind,
    /// What the call returned (`Value::Nil` for a write whose outcome is unknown).
    pub output: Value,
    /// Positions of the call and the return in the history's order of events; `ret` is
    /// `u64::MAX` for a write whose outcome is unknown (it may take effect at any point after
    /// its call).
    pub call: u64,
    pub ret: u64,
    /// Virtual nanoseconds since the cluster started.
    pub call_time: u64,
    pub ret_time: u64,
}

/// A call in progress: where it stands in the order of events.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    position: u64,
    time: u64,
}

#[derive(Clone, Default)]
pub struct History {
    inner: Arc<Mutex<HistoryState>>,
}

#[derive(Default)]
struct HistoryState {
    next_position: u64,
    records: Vec<Record>,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    fn state(&self) -> MutexGuard<'_, HistoryState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the start of a call at virtual time `time`; call this before sending anything.
    pub fn call(&self, time: u64) -> Call {
        let mut st = self.state();
        st.next_position += 1;
        Call {
            position: st.next_position,
            time,
        }
    }

    /// Records the return of `call` at virtual time `time`; call this once the reply is in.
    pub fn complete(&self, call: Call, client: u64, kind: OpKind, output: Value, time: u64) {
        let mut st = self.state();
        st.next_position += 1;
        let ret = st.next_position;
        st.records.push(Record {
            client,
            kind,
            output,
            call: call.position,
            ret,
            call_time: call.time,
            ret_time: time,
        });
    }

    /// Records a write whose outcome is unknown (it may or may not have taken effect). A read
    /// with no answer says nothing and is not recorded.
    pub fn complete_unknown(&self, call: Call, client: u64, kind: OpKind) {
        let mut st = self.state();
        st.records.push(Record {
            client,
            kind,
            output: Value::Nil,
            call: call.position,
            ret: u64::MAX,
            call_time: call.time,
            ret_time: u64::MAX,
        });
    }

    pub fn records(&self) -> Vec<Record> {
        self.state().records.clone()
    }

    pub fn len(&self) -> usize {
        self.state().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
