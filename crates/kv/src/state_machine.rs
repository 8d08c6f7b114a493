//! The replicated state: the key/value map and the client session table. Only the apply loop
//! touches it, one committed operation at a time, in log order, so every replica that applies
//! the same log holds the same state. A snapshot is this state, serialized.
//!
//! # Sessions (thesis §6.3)
//!
//! A client opens a session (an `OpenSession` entry) before its first request, and numbers
//! its requests from there. Per client the table keeps the last sequence number applied and
//! the reply of that write, so a retried request is answered from it and never applied twice.
//! The table changes only when an entry is applied, never when one is proposed.
//!
//! The table is bounded: opening a session when it is full evicts the session least recently
//! used, in log order (every replica evicts the same one at the same entry; no clock is
//! involved). A request of a closed or evicted session is refused with `SessionExpired` and
//! changes nothing: it may be the retry of a request applied before the eviction, so neither
//! applying it nor answering "done" would be safe.
//!
//! Per client only small things are kept: a read's reply is not cached, since a retried read
//! may simply read again (it is still within the client's call, so that is linearizable).

use crate::op::{KvError, KvReply, Limits, Op, OpKind};
use raft::SnapshotData;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::{self, Write};
use std::sync::Arc;

/// Most sessions kept by default. Each costs about 40 bytes in memory and in snapshots.
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;

/// The first byte of every snapshot: the version of the encoding that follows.
const SNAPSHOT_FORMAT: u8 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    /// The last sequence number applied (the first request of the session is this + 1).
    last_seq: u64,
    /// The reply of that request if it was a write (reads are not cached).
    last_write: Option<Result<(), KvError>>,
    /// The log index of the entry that last used the session, for eviction.
    last_used: u64,
}

/// What every replica holds identically, and what a snapshot is made of.
///
/// Both maps are persistent (copy-on-write) hash maps, and keys and values sit behind `Arc`s,
/// so a copy of the whole state costs O(1): a snapshot copies it on the apply loop and encodes
/// the copy elsewhere while writes go on, each write then copying only the few map nodes on
/// its path (pointers, not data).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Replicated {
    data: imbl::HashMap<Arc<str>, Arc<String>>,
    sessions: imbl::HashMap<u64, Session>,
}

/// The replicated state as of one log index, copied in O(1) (see [`KvStateMachine::image`]).
/// It is the snapshot's data: storage has it write itself out where it does not hold up the
/// apply loop, straight into the snapshot file, never whole in memory.
pub struct StateImage(Replicated);

impl StateImage {
    /// The snapshot bytes, in memory (for tests and small states).
    pub fn encode(self) -> Vec<u8> {
        let mut out = Vec::new();
        Box::new(self)
            .write_to(&mut out)
            .expect("writing to memory");
        out
    }
}

impl SnapshotData for StateImage {
    /// A format version, then the state in postcard.
    fn write_to(self: Box<Self>, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&[SNAPSHOT_FORMAT])?;
        // postcard reports a failed write without its cause; keep the cause.
        let mut writer = KeepError { out, error: None };
        match postcard::to_io(&self.0, &mut writer) {
            Ok(_) => Ok(()),
            Err(e) => Err(writer.error.unwrap_or_else(|| io::Error::other(e))),
        }
    }
}

/// A writer that remembers the first error of the writer it wraps.
struct KeepError<'a> {
    out: &'a mut dyn Write,
    error: Option<io::Error>,
}

impl Write for KeepError<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf).inspect_err(|e| {
            self.error
                .get_or_insert_with(|| io::Error::new(e.kind(), e.to_string()));
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("snapshot format version {0} is not supported (this build reads {SNAPSHOT_FORMAT})")]
    Version(u8),
    #[error("snapshot is empty")]
    Empty,
    #[error("cannot decode the snapshot: {0}")]
    Decode(#[from] postcard::Error),
}

#[derive(Debug, Default)]
pub struct KvStateMachine {
    state: Replicated,
    /// (last_used, client) of every session: the first is the least recently used. Derived
    /// from the sessions, so not in snapshots.
    lru: BTreeSet<(u64, u64)>,
    limits: Limits,
    max_sessions: usize,
}

impl KvStateMachine {
    pub fn new(limits: Limits, max_sessions: usize) -> KvStateMachine {
        KvStateMachine {
            limits,
            max_sessions: max_sessions.max(1),
            ..KvStateMachine::default()
        }
    }

    /// Applies the committed operation at log index `index` and returns its reply.
    pub fn apply(&mut self, index: u64, op: &Op) -> KvReply {
        match &op.kind {
            OpKind::OpenSession => {
                self.open_session(index, op.client_id, op.seq);
                return Ok(String::new());
            }
            OpKind::CloseSession => {
                // A stale copy (a session opened since starts above it) closes nothing.
                let current = self
                    .state
                    .sessions
                    .get(&op.client_id)
                    .is_some_and(|s| op.seq > s.last_seq);
                if current {
                    let s = self.state.sessions.remove(&op.client_id).expect("present");
                    self.lru.remove(&(s.last_used, op.client_id));
                }
                return Ok(String::new());
            }
            _ => {}
        }
        let Some(session) = self.state.sessions.get(&op.client_id) else {
            return Err(KvError::SessionExpired);
        };
        let (last_seq, last_write, last_used) = (
            session.last_seq,
            session.last_write.clone(),
            session.last_used,
        );
        if op.seq <= last_seq {
            // A retry. A write is answered as it was the first time; a read reads again.
            // An older sequence number is a stale duplicate whose caller has moved on.
            return match (&op.kind, last_write) {
                (OpKind::Get { key }, _) => Ok(self.read(key)),
                (_, Some(reply)) if op.seq == last_seq => reply.map(|()| String::new()),
                _ => Ok(String::new()),
            };
        }
        let reply = self.execute(&op.kind);
        self.lru.remove(&(last_used, op.client_id));
        self.lru.insert((index, op.client_id));
        let last_write = match &op.kind {
            OpKind::Get { .. } => None,
            _ => Some(reply.clone().map(drop)),
        };
        self.state.sessions.insert(
            op.client_id,
            Session {
                last_seq: op.seq,
                last_write,
                last_used: index,
            },
        );
        reply
    }

    fn open_session(&mut self, index: u64, client_id: u64, first_seq: u64) {
        if self.state.sessions.contains_key(&client_id) {
            return;
        }
        while self.state.sessions.len() >= self.max_sessions {
            let Some((_, oldest)) = self.lru.pop_first() else {
                break;
            };
            self.state.sessions.remove(&oldest);
        }
        self.state.sessions.insert(
            client_id,
            Session {
                last_seq: first_seq.saturating_sub(1),
                last_write: None,
                last_used: index,
            },
        );
        self.lru.insert((index, client_id));
    }

    fn read(&self, key: &str) -> String {
        self.state
            .data
            .get(key)
            .map_or_else(String::new, |v| v.as_str().to_owned())
    }

    fn execute(&mut self, kind: &OpKind) -> KvReply {
        match kind {
            OpKind::Get { key } => Ok(self.read(key)),
            OpKind::Put { key, value } => {
                self.state
                    .data
                    .insert(Arc::from(key.as_str()), Arc::new(value.clone()));
                Ok(String::new())
            }
            OpKind::Append { key, value } => {
                let current = self.state.data.get(key.as_str()).map_or(0, |v| v.len());
                let len = current + value.len();
                if len > self.limits.max_value_bytes {
                    return Err(KvError::ValueTooLarge {
                        len,
                        max: self.limits.max_value_bytes,
                    });
                }
                match self.state.data.get_mut(key.as_str()) {
                    // In place unless a snapshot still shares the value.
                    Some(v) => Arc::make_mut(v).push_str(value),
                    None => {
                        self.state
                            .data
                            .insert(Arc::from(key.as_str()), Arc::new(value.clone()));
                    }
                }
                Ok(String::new())
            }
            OpKind::OpenSession | OpKind::CloseSession => unreachable!("handled by apply"),
        }
    }

    /// Applies `op` even if it is a retry: only the `Fault::NoDuplicateDetection` mutant does
    /// this.
    #[doc(hidden)]
    pub fn apply_without_dedup(&mut self, index: u64, op: &Op) -> KvReply {
        if let Some(s) = self.state.sessions.get_mut(&op.client_id) {
            s.last_seq = s.last_seq.min(op.seq.saturating_sub(1));
        }
        self.apply(index, op)
    }

    /// Marks `seq` as client `client_id`'s last applied request without applying anything:
    /// only the `Fault::SessionUpdatedOnPropose` mutant does this.
    #[doc(hidden)]
    pub fn record_session(&mut self, client_id: u64, seq: u64) {
        if let Some(s) = self.state.sessions.get_mut(&client_id) {
            s.last_seq = s.last_seq.max(seq);
            s.last_write = Some(Ok(()));
        }
    }

    /// A copy of the replicated state, in O(1) whatever its size, to encode as a snapshot.
    pub fn image(&self) -> StateImage {
        StateImage(self.state.clone())
    }

    /// The whole state as snapshot bytes (`image().encode()`).
    pub fn snapshot(&self) -> Vec<u8> {
        self.image().encode()
    }

    /// Replaces the state with a snapshot's (keeping this replica's limits). The old state is
    /// dropped first, so that memory holds the snapshot's bytes and one state, not two; after
    /// an error the state is empty (the caller cannot go on from it anyway).
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), RestoreError> {
        let (&version, encoded) = bytes.split_first().ok_or(RestoreError::Empty)?;
        if version != SNAPSHOT_FORMAT {
            return Err(RestoreError::Version(version));
        }
        self.state = Replicated::default();
        self.lru.clear();
        self.state = postcard::from_bytes(encoded)?;
        self.lru = self
            .state
            .sessions
            .iter()
            .map(|(&client, s)| (s.last_used, client))
            .collect();
        Ok(())
    }

    /// Reads a key directly, for tests and diagnostics only: serving reads from here would
    /// bypass the log.
    pub fn peek(&self, key: &str) -> Option<&str> {
        self.state.data.get(key).map(|v| v.as_str())
    }

    pub fn len(&self) -> usize {
        self.state.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.state.data.is_empty()
    }

    /// Open sessions.
    pub fn sessions(&self) -> usize {
        self.state.sessions.len()
    }

    /// A digest of the map and the session table, to compare replicas (O(size): for tests
    /// and diagnostics; see [`StateImage::digest`] to compute one off the apply loop).
    pub fn digest(&self) -> u64 {
        self.state.digest()
    }
}

impl Replicated {
    /// The sum of a hash per key and per session: independent of iteration order, so no
    /// sorting, and equal for equal states whatever their history.
    fn digest(&self) -> u64 {
        let data = self.data.iter().fold(0u64, |d, (k, v)| {
            d.wrapping_add(mix(fnv(k.as_bytes()), fnv(v.as_bytes())))
        });
        let sessions = self.sessions.iter().fold(0u64, |d, (client, s)| {
            let write = match &s.last_write {
                None => 0,
                Some(Ok(())) => 1,
                Some(Err(e)) => fnv(e.to_string().as_bytes()),
            };
            d.wrapping_add(mix(*client, mix(s.last_seq, mix(s.last_used, write))))
        });
        mix(data, sessions)
    }
}

impl StateImage {
    /// The digest of the state this image holds ([`KvStateMachine::digest`]).
    pub fn digest(&self) -> u64 {
        self.0.digest()
    }
}

/// FNV-1a: fixed across builds and platforms, unlike the standard library's hasher.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Combines two hashes (splitmix64's finalizer), so that a sum of combined hashes does not
/// cancel out the way a sum of raw ones could.
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client_id: u64, seq: u64, kind: OpKind) -> Op {
        Op {
            client_id,
            seq,
            kind,
        }
    }

    fn append(key: &str, value: &str) -> OpKind {
        OpKind::Append {
            key: key.into(),
            value: value.into(),
        }
    }

    fn get(key: &str) -> OpKind {
        OpKind::Get { key: key.into() }
    }

    /// A state machine with sessions for `clients`, opened at indexes 1.., sequence numbers
    /// starting at 1; returns the next free index.
    fn with_sessions(sm: &mut KvStateMachine, clients: &[u64]) -> u64 {
        let mut index = 1;
        for &c in clients {
            assert_eq!(
                sm.apply(index, &op(c, 1, OpKind::OpenSession)),
                Ok("".into())
            );
            index += 1;
        }
        index
    }

    #[test]
    fn put_append_get() {
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        let i = with_sessions(&mut sm, &[1]);
        assert_eq!(sm.apply(i, &op(1, 1, get("k"))), Ok(String::new()));
        assert_eq!(
            sm.apply(i + 1, &op(1, 2, append("k", "a"))),
            Ok(String::new())
        );
        assert_eq!(
            sm.apply(i + 2, &op(1, 3, append("k", "b"))),
            Ok(String::new())
        );
        assert_eq!(sm.apply(i + 3, &op(1, 4, get("k"))), Ok("ab".into()));
    }

    #[test]
    fn a_retried_append_is_applied_once() {
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        let i = with_sessions(&mut sm, &[7, 8]);
        assert_eq!(sm.apply(i, &op(7, 1, append("k", "x"))), Ok(String::new()));
        assert_eq!(
            sm.apply(i + 1, &op(7, 1, append("k", "x"))),
            Ok(String::new())
        );
        assert_eq!(sm.peek("k"), Some("x"));
        assert_eq!(sm.apply(i + 2, &op(7, 2, get("k"))), Ok("x".into()));
        assert_eq!(
            sm.apply(i + 3, &op(8, 1, append("k", "y"))),
            Ok(String::new())
        );
        // A retried read reads again: it is still within the client's call.
        assert_eq!(sm.apply(i + 4, &op(7, 2, get("k"))), Ok("xy".into()));
        // A stale duplicate of an older write changes nothing.
        assert_eq!(
            sm.apply(i + 5, &op(7, 1, append("k", "x"))),
            Ok(String::new())
        );
        assert_eq!(sm.peek("k"), Some("xy"));
    }

    #[test]
    fn an_append_past_the_value_limit_is_refused_and_changes_nothing() {
        let limits = Limits {
            max_key_bytes: 8,
            max_value_bytes: 4,
        };
        let mut sm = KvStateMachine::new(limits, 10);
        let i = with_sessions(&mut sm, &[1]);
        assert_eq!(
            sm.apply(i, &op(1, 1, append("k", "abc"))),
            Ok(String::new())
        );
        let reply = sm.apply(i + 1, &op(1, 2, append("k", "de")));
        assert_eq!(reply, Err(KvError::ValueTooLarge { len: 5, max: 4 }));
        assert_eq!(sm.peek("k"), Some("abc"));
        // The refusal is remembered like any reply.
        assert_eq!(sm.apply(i + 2, &op(1, 2, append("k", "de"))), reply);
    }

    /// Thesis §6.3: the table is bounded; the session used least recently (in log order) is
    /// evicted, and its requests, retries included, are refused without being applied.
    #[test]
    fn the_least_recently_used_session_is_evicted_and_its_retries_refused() {
        let mut sm = KvStateMachine::new(Limits::default(), 2);
        let i = with_sessions(&mut sm, &[1, 2]);
        assert_eq!(sm.apply(i, &op(1, 1, append("k", "a"))), Ok("".into()));
        // Client 2 is now the least recently used; opening 3 evicts it.
        assert_eq!(
            sm.apply(i + 1, &op(3, 1, OpKind::OpenSession)),
            Ok("".into())
        );
        assert_eq!(sm.sessions(), 2);
        assert_eq!(
            sm.apply(i + 2, &op(2, 1, append("k", "b"))),
            Err(KvError::SessionExpired)
        );
        assert_eq!(sm.peek("k"), Some("a"));
        // Client 1 was used after client 2 and is still there: its retry is recognised.
        assert_eq!(sm.apply(i + 3, &op(1, 1, append("k", "a"))), Ok("".into()));
        assert_eq!(sm.peek("k"), Some("a"));
        // A reopened session refuses nothing newer than where the client says it starts,
        // and applies nothing older.
        assert_eq!(
            sm.apply(i + 4, &op(2, 5, OpKind::OpenSession)),
            Ok("".into())
        );
        assert_eq!(
            sm.apply(i + 5, &op(2, 3, append("k", "old"))),
            Ok("".into())
        );
        assert_eq!(sm.apply(i + 6, &op(2, 5, append("k", "b"))), Ok("".into()));
        assert_eq!(sm.peek("k"), Some("ab"));
    }

    #[test]
    fn a_closed_session_refuses_requests() {
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        let i = with_sessions(&mut sm, &[1]);
        assert_eq!(sm.apply(i, &op(1, 1, OpKind::CloseSession)), Ok("".into()));
        assert_eq!(sm.sessions(), 0);
        assert_eq!(
            sm.apply(i + 1, &op(1, 1, append("k", "a"))),
            Err(KvError::SessionExpired)
        );
        assert_eq!(sm.peek("k"), None);
    }

    /// A close carries a sequence number of its own; a delayed copy of it arriving after the
    /// client opened a new session (which starts above it) closes nothing.
    #[test]
    fn a_stale_close_does_not_end_a_newer_session() {
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        let i = with_sessions(&mut sm, &[1]);
        assert_eq!(sm.apply(i, &op(1, 1, append("k", "a"))), Ok("".into()));
        assert_eq!(
            sm.apply(i + 1, &op(1, 2, OpKind::CloseSession)),
            Ok("".into())
        );
        assert_eq!(
            sm.apply(i + 2, &op(1, 3, OpKind::OpenSession)),
            Ok("".into())
        );
        assert_eq!(
            sm.apply(i + 3, &op(1, 2, OpKind::CloseSession)),
            Ok("".into())
        );
        assert_eq!(sm.sessions(), 1);
        assert_eq!(sm.apply(i + 4, &op(1, 3, append("k", "b"))), Ok("".into()));
        assert_eq!(sm.peek("k"), Some("ab"));
    }

    #[test]
    fn a_snapshot_restores_data_sessions_and_eviction_order() {
        let mut sm = KvStateMachine::new(Limits::default(), 2);
        let i = with_sessions(&mut sm, &[1, 2]);
        assert_eq!(sm.apply(i, &op(1, 1, append("k", "a"))), Ok("".into()));
        let bytes = sm.snapshot();
        let mut copy = KvStateMachine::new(Limits::default(), 2);
        copy.restore(&bytes).expect("restore");
        assert_eq!(copy.digest(), sm.digest());
        // A retry after the snapshot is still recognised.
        assert_eq!(
            copy.apply(i + 1, &op(1, 1, append("k", "a"))),
            Ok("".into())
        );
        assert_eq!(copy.peek("k"), Some("a"));
        // The restored eviction order is the original's: client 2 goes first.
        assert_eq!(
            copy.apply(i + 2, &op(3, 1, OpKind::OpenSession)),
            Ok("".into())
        );
        assert_eq!(
            copy.apply(i + 3, &op(2, 1, get("k"))),
            Err(KvError::SessionExpired)
        );
    }

    /// The course's 3B size check: after 400 writes of one key by one client, a snapshot of a
    /// small state stays small (no per-request history).
    #[test]
    fn a_snapshot_stays_small_after_many_writes() {
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        let first = with_sessions(&mut sm, &[1]);
        for (index, seq) in (first..).zip(1..=400) {
            let value = (seq % 2).to_string();
            let put = OpKind::Put {
                key: "x".into(),
                value,
            };
            sm.apply(index, &op(1, seq, put)).expect("put");
        }
        let size = sm.snapshot().len();
        assert!(
            size <= 50,
            "snapshot of one key and one session is {size} bytes"
        );
    }

    /// A snapshot is the state as of the moment its image was taken, whatever is applied while
    /// it is encoded; the live state goes on unaffected.
    #[test]
    fn an_image_is_the_state_when_taken_and_writes_go_on() {
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        let i = with_sessions(&mut sm, &[1]);
        assert_eq!(sm.apply(i, &op(1, 1, append("k", "a"))), Ok("".into()));
        let image = sm.image();
        let before = sm.digest();
        assert_eq!(sm.apply(i + 1, &op(1, 2, append("k", "b"))), Ok("".into()));
        let put = OpKind::Put {
            key: "other".into(),
            value: "v".into(),
        };
        assert_eq!(sm.apply(i + 2, &op(1, 3, put)), Ok("".into()));
        let mut copy = KvStateMachine::new(Limits::default(), 10);
        copy.restore(&image.encode()).expect("restore");
        assert_eq!(copy.digest(), before);
        assert_eq!(copy.peek("k"), Some("a"));
        assert_eq!(copy.peek("other"), None);
        assert_eq!(sm.peek("k"), Some("ab"));
    }

    /// A snapshot names its format; one this build cannot read, or a damaged one, is refused
    /// with an error rather than misread.
    #[test]
    fn a_snapshot_of_another_format_or_damaged_is_refused() {
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        let i = with_sessions(&mut sm, &[1]);
        assert_eq!(sm.apply(i, &op(1, 1, append("k", "a"))), Ok("".into()));
        let mut bytes = sm.snapshot();
        let mut copy = KvStateMachine::new(Limits::default(), 10);
        bytes[0] = 9;
        assert!(matches!(
            copy.restore(&bytes),
            Err(RestoreError::Version(9))
        ));
        assert!(matches!(copy.restore(&[]), Err(RestoreError::Empty)));
        bytes[0] = SNAPSHOT_FORMAT;
        bytes.truncate(bytes.len() - 1);
        assert!(matches!(copy.restore(&bytes), Err(RestoreError::Decode(_))));
    }
}
