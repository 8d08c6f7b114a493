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

/// One log entry: an opaque command and the term in which a leader created it. An empty
/// command is a leader's no-op (thesis §6.4), which the service skips.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: LogIndex,
    pub command: Vec<u8>,
}

impl Entry {
    pub fn is_noop(&self) -> bool {
        self.command.is_empty()
    }
}

/// A snapshot (§7): the service's state after applying every entry up to `index`, the last of
/// which has term `term`; `len` bytes of data, opaque to Raft.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub index: LogIndex,
    pub term: Term,
    pub len: u64,
}

/// A snapshot the service took, handed to storage as something that writes itself out, so
/// that a large state is never encoded into memory just to be copied to a file.
pub trait SnapshotData: Send + 'static {
    /// Writes the snapshot's bytes to `out`. At least one byte: a zero-length snapshot could
    /// not be sent to a follower.
    fn write_to(self: Box<Self>, out: &mut dyn std::io::Write) -> std::io::Result<()>;
}

/// Bytes already in memory (tests, small states).
impl SnapshotData for Vec<u8> {
    fn write_to(self: Box<Self>, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(&self)
    }
}

/// The state that must survive a crash besides the log (Figure 2, "persistent state").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
}

/// What the apply channel delivers, in log order: committed commands, and snapshots that
/// replace the service's state (at startup, or one received from the leader).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyMsg {
    /// A committed entry. An empty command is a no-op: skip it (but count its index).
    Entry {
        index: LogIndex,
        term: Term,
        command: Vec<u8>,
    },
    /// Replace the state with this snapshot; entries after `meta.index` follow.
    Snapshot { meta: SnapshotMeta, data: Vec<u8> },
}

impl ApplyMsg {
    /// The last index this message brings the service to.
    pub fn index(&self) -> LogIndex {
        match self {
            ApplyMsg::Entry { index, .. } => *index,
            ApplyMsg::Snapshot { meta, .. } => meta.index,
        }
    }
}
