//! The boundary between the pure core and the code that does I/O.

use crate::message::Message;
use crate::types::{Entry, HardState, SnapshotMeta};

/// Everything the core wants done, in the order it must be done:
///
/// 1. **Persist**, durably: first the `snapshot_writes`, in order (chunks of a snapshot the
///    leader is sending, and the installation of one that is complete: the log then starts
///    after it); then `hard_state` (if any) and `entries` (which replace any stored entries
///    at indices >= `entries[0].index`).
/// 2. Only then **send** `messages`. A vote granted or an AppendEntries acknowledged tells the
///    peer that the state behind it survives a crash; sending before persisting could let a
///    node vote twice in a term or forget an entry it acknowledged (thesis §3.8).
///
///    The exception: a leader's AppendEntries and InstallSnapshot messages may be sent
///    before (or while) step 1 runs, when `hard_state` is `None` (thesis §10.2.1). They
///    vouch for nothing about the leader's own storage: the leader counts itself toward the
///    majority that commits an entry only once `advance` says its write is done, and
///    followers still persist before they acknowledge. An entry stored by a majority of
///    followers is committed even if the leader then loses its own copy in a crash.
/// 3. **Apply**: first the installed snapshot (`install_snapshot`), read back from storage;
///    then `committed_entries`, in order. They are always persisted already (by this `Ready`
///    or an earlier one).
///
/// `read_states` answer reads asked for with [`crate::Raft::read_index`]; they depend on
/// nothing above and may be handed out at once.
///
/// 4. Call [`crate::Raft::advance`] with this `Ready`. It reads only the hard state and the
///    indexes and terms of the entries, so messages and commands may be moved out first.
#[derive(Debug, Default)]
pub struct Ready {
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    /// What to write of snapshots received from the leader, in order.
    pub snapshot_writes: Vec<SnapshotWrite>,
    /// The last snapshot installed by `snapshot_writes`: hand it to the service before the
    /// committed entries.
    pub install_snapshot: Option<SnapshotMeta>,
    pub messages: Vec<Message>,
    pub committed_entries: Vec<Entry>,
    /// Reads whose leadership check ended since the last `Ready`.
    pub read_states: Vec<ReadState>,
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.entries.is_empty()
            && self.snapshot_writes.is_empty()
            && self.install_snapshot.is_none()
            && self.messages.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
    }
}

/// One write of a snapshot being received (§7).
#[derive(Debug)]
pub enum SnapshotWrite {
    /// `data` at `offset` of snapshot `meta`. Offset 0 starts the snapshot afresh, dropping any
    /// other one half-received.
    Chunk {
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
    },
    /// Snapshot `meta` is complete: make it the current snapshot.
    Install(SnapshotMeta),
}

/// How the leadership check of a read ended (thesis §6.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The id given to [`crate::Raft::read_index`].
    pub id: u64,
    /// True: a majority took this node for the leader of its term after the read was asked
    /// for. False: it stopped leading first, and the read must go elsewhere.
    pub confirmed: bool,
}
