//! The boundary between the pure core and the code that does I/O.

use crate::message::Message;
use crate::types::{Entry, HardState};

/// Everything the core wants done, in the order it must be done:
///
/// 1. **Persist** `hard_state` (if any) and `entries` (which replace any stored entries at
///    indices >= `entries[0].index`), durably.
/// 2. Only then **send** `messages`. A vote granted or an AppendEntries acknowledged tells the
///    peer that the state behind it survives a crash; sending before persisting could let a
///    node vote twice in a term or forget an entry it acknowledged (thesis §3.8).
///    Likewise a leader's AppendEntries for a new entry is in the same `Ready` as the entry,
///    so no follower can acknowledge (and no majority can commit) what the leader itself
///    might still lose.
/// 3. **Apply** `committed_entries`, in order. They are always persisted already (by this
///    `Ready` or an earlier one).
/// 4. Call [`crate::Raft::advance`] with this `Ready`. It reads only the hard state and the
///    indexes and terms of the entries, so messages and commands may be moved out first.
#[derive(Debug, Default)]
pub struct Ready {
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    pub committed_entries: Vec<Entry>,
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.committed_entries.is_empty()
    }
}
