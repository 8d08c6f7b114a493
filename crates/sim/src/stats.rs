//! Counters of the faults a simulated run injected (crashes by crash point, messages dropped,
//! duplicated, delayed, partitions by shape), so that a run can say what it exercised.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct Stats {
    inner: Arc<Mutex<BTreeMap<&'static str, u64>>>,
}

impl Stats {
    pub fn new() -> Stats {
        Stats::default()
    }

    pub fn add(&self, what: &'static str, n: u64) {
        let mut counters = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *counters.entry(what).or_insert(0) += n;
    }

    /// Every counter, in name order.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
