//! Vocabulary types shared by the core, the driver and the storage layers.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies a peer in the cluster. Peers are numbered by the operator (or the test fixture).
pub type NodeId = u64;

/// A Raft term (§5.1). Terms only grow.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Term(pub u64);

/// The position of an entry in the log. The first entry has index 1; index 0 stands for
/// "before the first entry" (its term is `Term(0)`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogIndex(pub u64);

impl LogIndex {
    pub fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }

    /// The index before this one; `LogIndex(0).prev()` stays at 0.
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One log entry: an opaque command and the term in which a leader created it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: LogIndex,
    pub command: Vec<u8>,
}

/// The state that must survive a crash besides the log (Figure 2, "persistent state").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
}

/// A committed command handed to the state machine, in index order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyMsg {
    pub index: LogIndex,
    pub term: Term,
    pub command: Vec<u8>,
}
