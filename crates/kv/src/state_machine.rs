//! The replicated state: the key/value map and the client session table. Only the apply loop
//! touches it, one committed operation at a time, in log order, so every replica that applies
//! the same log holds the same state. A snapshot is this state, serialized.
//!
//! # Keys, values and versions
//!
//! Keys and values are bytes. Each key also has a version, the log index of the entry that
//! last changed it: WATCH reads versions and EXEC compares them, at apply time, so a
//! transaction's check holds whichever replica leads. The map is ordered by a fixed hash of
//! the key (then the key), which gives SCAN a cursor every replica understands alike and that
//! keys added or removed meanwhile do not disturb.
//!
//! # Sessions (thesis §6.3)
//!
//! A client opens a session (an `OpenSession` entry) before its first request, and numbers
//! its requests from there. Per client the table keeps the last sequence number applied and
//! the replies of the writes the client may still ask for again, so a retried request is
//! answered from there and never applied twice. The table changes only when an entry is
//! applied, never when one is proposed.
//!
//! A client may pipeline: send requests without waiting for the earlier ones' replies. Each
//! request says which of the client's writes before it is the oldest still waiting
//! (`Op::lowest_pending`; reads need no order among themselves); replies below it are
//! forgotten, and a request is applied only right after its predecessor (or when no write
//! before it is waiting), so a pipeline takes
//! effect in the order it was sent even when a failover makes its client send part of it
//! again. One that comes too early is refused with `OutOfOrder`, changing nothing.
//!
//! The table is bounded: opening a session when it is full evicts the session least recently
//! used, in log order (every replica evicts the same one at the same entry; no clock is
//! involved). A request of a closed or evicted session is refused with `SessionExpired` and
//! changes nothing: it may be the retry of a request applied before the eviction, so neither
//! applying it nor answering "done" would be safe.
//!
//! Per client only small things are kept: a read's reply is not cached, since a retried read
//! may simply read again (it is still within the client's call, so that is linearizable),
//! at most [`MAX_KEPT_REPLIES`] write replies, and of those only [`MAX_KEPT_REPLY`] bytes in
//! all; past that (the old value of a GETSET, say) a reply is kept as "applied, reply not
//! kept".

use crate::glob;
use crate::op::{Command, KvError, KvReply, Limits, Op, OpKind, SetWhen, Value};
use bytes::{Bytes, BytesMut};
use raft::SnapshotData;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeSet;
use std::io::{self, Write};

/// Most sessions kept by default. Each costs about 40 bytes in memory and in snapshots, plus
/// the write replies it keeps.
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;

/// Most bytes of write replies a session keeps for retries, all together.
pub const MAX_KEPT_REPLY: usize = 4 << 10;

/// Most write replies a session keeps: a pipeline deeper than this may find the replies of
/// its oldest requests forgotten if it has to send them again.
pub const MAX_KEPT_REPLIES: usize = 256;

/// Most keys a SCAN examines in one call, whatever COUNT asks.
pub const MAX_SCAN_COUNT: usize = 10_000;

/// The first byte of every snapshot: the version of the encoding that follows. Versions 1
/// (string keys and values, no versions) and 2 (one reply per session) are still read.
const SNAPSHOT_FORMAT: u8 = 3;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    /// The last sequence number applied (the first request of the session is this + 1).
    last_seq: u64,
    /// The replies of the writes numbered from the client's lowest pending request on, by
    /// sequence number, ascending (reads are not kept).
    kept: Vec<(u64, KvReply)>,
    /// The log index of the entry that last used the session, for eviction.
    last_used: u64,
}

impl Session {
    /// A session of an older snapshot format, which kept the reply of the last request.
    fn upgraded(last_seq: u64, last_reply: Option<KvReply>, last_used: u64) -> Session {
        Session {
            last_seq,
            kept: last_reply.map(|r| (last_seq, r)).into_iter().collect(),
            last_used,
        }
    }

    /// Forgets the replies below `lowest_pending`: their client has them.
    fn forget_below(&mut self, lowest_pending: u64) {
        let answered = self.kept.partition_point(|(seq, _)| *seq < lowest_pending);
        self.kept.drain(..answered);
    }

    /// The reply kept for request `seq`, if any.
    fn kept_reply(&self, seq: u64) -> Option<&KvReply> {
        let at = self.kept.binary_search_by_key(&seq, |(s, _)| *s).ok()?;
        Some(&self.kept[at].1)
    }

    /// Keeps the reply of write `seq` (the newest), within the bounds.
    fn keep(&mut self, seq: u64, reply: &KvReply) {
        if self.kept.len() >= MAX_KEPT_REPLIES {
            self.kept.drain(..1);
        }
        let used: usize = self.kept.iter().map(|(_, r)| kept_size(r)).sum();
        let reply = match reply {
            Ok(value) if used + value.size() > MAX_KEPT_REPLY => Err(KvError::ReplyNotKept),
            other => other.clone(),
        };
        self.kept.push((seq, reply));
    }
}

fn kept_size(reply: &KvReply) -> usize {
    reply.as_ref().map_or(0, Value::size)
}

/// A key in the map, ordered by a fixed hash of its bytes first. Serialized as the key alone.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct MapKey {
    hash: u64,
    key: Bytes,
}

impl MapKey {
    fn new(key: &Bytes) -> MapKey {
        MapKey {
            hash: scan_hash(key),
            key: key.clone(),
        }
    }

    /// The first position of hash `hash`, for ranges.
    fn first_at(hash: u64) -> MapKey {
        MapKey {
            hash,
            key: Bytes::new(),
        }
    }
}

/// The position of a key in the map and in SCAN: FNV-1a, fixed across builds and platforms,
/// in 63 bits so that `hash + 1` (a SCAN cursor) always fits.
fn scan_hash(key: &[u8]) -> u64 {
    fnv(key) >> 1
}

impl Serialize for MapKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.key.serialize(s)
    }
}

impl<'de> Deserialize<'de> for MapKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MapKey, D::Error> {
        Bytes::deserialize(d).map(|key| MapKey::new(&key))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    value: Bytes,
    /// The log index of the entry that last wrote the key.
    version: u64,
}

/// What every replica holds identically, and what a snapshot is made of.
///
/// Both maps are persistent (copy-on-write), and values are reference-counted bytes, so a
/// copy of the whole state costs O(1): a snapshot copies it on the apply loop and encodes the
/// copy elsewhere while writes go on, each write then copying only the few map nodes on its
/// path (pointers, not data).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Replicated {
    data: imbl::OrdMap<MapKey, Entry>,
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

/// The state as snapshot format 1 held it, read for upgrades.
mod format1 {
    use crate::op::KvError;
    use serde::Deserialize;
    use std::sync::Arc;

    #[derive(Clone, Deserialize)]
    pub struct Session {
        pub last_seq: u64,
        pub last_write: Option<Result<(), KvError>>,
        pub last_used: u64,
    }

    #[derive(Deserialize)]
    pub struct Replicated {
        pub data: imbl::HashMap<Arc<str>, Arc<String>>,
        pub sessions: imbl::HashMap<u64, Session>,
    }
}

/// The sessions as snapshot format 2 held them (the map was as now), read for upgrades.
mod format2 {
    use crate::op::KvReply;
    use serde::Deserialize;

    #[derive(Clone, Deserialize)]
    pub struct Session {
        pub last_seq: u64,
        pub last_reply: Option<KvReply>,
        pub last_used: u64,
    }

    #[derive(Deserialize)]
    pub struct Replicated {
        pub data: imbl::OrdMap<super::MapKey, super::Entry>,
        pub sessions: imbl::HashMap<u64, Session>,
    }
}

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "snapshot format version {0} is not supported (this build reads 1 to {SNAPSHOT_FORMAT})"
    )]
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
                return Ok(Value::Ok);
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
                return Ok(Value::Ok);
            }
            _ => {}
        }
        let Some(session) = self.state.sessions.get_mut(&op.client_id) else {
            return Err(KvError::SessionExpired);
        };
        session.forget_below(op.lowest_pending.min(op.seq));
        let (last_seq, last_used) = (session.last_seq, session.last_used);
        if op.seq <= last_seq {
            // A retry. A write is answered as it was the first time; a read reads again.
            // One whose reply is forgotten is a stale duplicate whose caller has moved on.
            if op.kind.is_read() {
                return self.execute(index, &op.kind);
            }
            return session
                .kept_reply(op.seq)
                .cloned()
                .unwrap_or(Err(KvError::ReplyNotKept));
        }
        // Pipelined requests take effect in the order they were sent: one whose predecessor
        // is still waiting, unapplied, must wait for it.
        if op.seq != last_seq + 1 && op.lowest_pending < op.seq {
            return Err(KvError::OutOfOrder);
        }
        let reply = self.execute(index, &op.kind);
        self.lru.remove(&(last_used, op.client_id));
        self.lru.insert((index, op.client_id));
        let session = self
            .state
            .sessions
            .get_mut(&op.client_id)
            .expect("commands do not close sessions");
        session.last_seq = op.seq;
        session.last_used = index;
        if !op.kind.is_read() {
            session.keep(op.seq, &reply);
        }
        reply
    }

    /// Runs a read-only operation on the state as it is, outside the log and the session
    /// table (a read served with ReadIndex): a read changes nothing, so it needs neither a
    /// place in the log nor protection against being run twice.
    pub fn read_only(&mut self, kind: &OpKind) -> KvReply {
        assert!(kind.is_read(), "only reads run outside the log");
        // Reads ignore the index (only writes stamp versions with it).
        self.execute(0, kind)
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
                kept: Vec::new(),
                last_used: index,
            },
        );
        self.lru.insert((index, client_id));
    }

    fn entry(&self, key: &Bytes) -> Option<&Entry> {
        self.state.data.get(&MapKey::new(key))
    }

    fn read(&self, key: &Bytes) -> Value {
        self.entry(key)
            .map_or(Value::Nil, |e| Value::Bytes(e.value.clone()))
    }

    fn write(&mut self, index: u64, key: &Bytes, value: Bytes) {
        self.state.data.insert(
            MapKey::new(key),
            Entry {
                value,
                version: index,
            },
        );
    }

    fn remove(&mut self, key: &Bytes) -> Option<Entry> {
        self.state.data.remove(&MapKey::new(key))
    }

    fn value_too_large(&self, len: usize) -> KvError {
        KvError::ValueTooLarge {
            len,
            max: self.limits.max_value_bytes,
        }
    }

    /// Appends in place unless a snapshot or a reply still shares the value; returns the new
    /// length, or refuses past the value limit (changing nothing).
    fn append(&mut self, index: u64, key: &Bytes, tail: &[u8]) -> Result<usize, KvError> {
        let map_key = MapKey::new(key);
        let current = self.state.data.get(&map_key).map_or(0, |e| e.value.len());
        let len = current + tail.len();
        if len > self.limits.max_value_bytes {
            return Err(self.value_too_large(len));
        }
        let old = self
            .state
            .data
            .remove(&map_key)
            .map_or_else(Bytes::new, |e| e.value);
        let mut grown = old.try_into_mut().unwrap_or_else(|shared| {
            // Room to grow, so that a run of appends copies the value only now and then.
            let room = (len + len / 2).min(self.limits.max_value_bytes).max(len);
            let mut fresh = BytesMut::with_capacity(room);
            fresh.extend_from_slice(&shared);
            fresh
        });
        grown.extend_from_slice(tail);
        self.state.data.insert(
            map_key,
            Entry {
                value: grown.freeze(),
                version: index,
            },
        );
        Ok(len)
    }

    fn execute(&mut self, index: u64, kind: &OpKind) -> KvReply {
        match kind {
            OpKind::Get { key } => Ok(self.read(key)),
            OpKind::Put { key, value } => {
                self.write(index, key, value.clone());
                Ok(Value::Ok)
            }
            OpKind::Append { key, value } => self.append(index, key, value).map(|_| Value::Ok),
            OpKind::Command(command) => {
                let reply = self.run(index, command)?;
                // A write replies with one value at most (bounded by the value limit); a read
                // that answers too much is refused, having changed nothing.
                if command.is_read() && reply.size() > self.limits.max_reply_bytes {
                    return Err(KvError::ReplyTooLarge {
                        len: reply.size(),
                        max: self.limits.max_reply_bytes,
                    });
                }
                Ok(reply)
            }
            OpKind::Exec { watched, commands } => {
                let changed = watched
                    .iter()
                    .any(|(key, version)| self.entry(key).map_or(0, |e| e.version) != *version);
                if changed {
                    return Ok(Value::Nil);
                }
                let mut budget = self.limits.max_reply_bytes;
                let replies = commands
                    .iter()
                    .map(|command| {
                        let reply = match self.run(index, command) {
                            Ok(reply) => reply,
                            Err(e) => Value::Error(format!("ERR {e}")),
                        };
                        // A write has run whatever its reply: keep it (one value at most,
                        // bounded by the value limit). A read past the budget is replaced.
                        if command.is_read() && reply.size() > budget {
                            return Value::Error(format!(
                                "ERR the transaction's replies exceed the limit of {} bytes",
                                self.limits.max_reply_bytes
                            ));
                        }
                        budget = budget.saturating_sub(reply.size());
                        reply
                    })
                    .collect();
                Ok(Value::Array(replies))
            }
            OpKind::OpenSession | OpKind::CloseSession => unreachable!("handled by apply"),
        }
    }

    /// Runs one command at log index `index`. An `Err` changed nothing.
    fn run(&mut self, index: u64, command: &Command) -> Result<Value, KvError> {
        let count = |n: usize| Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
        Ok(match command {
            Command::Get(key) => self.read(key),
            Command::Set {
                key,
                value,
                when,
                get,
            } => {
                let old = self.entry(key).map(|e| e.value.clone());
                let write = match when {
                    SetWhen::Always => true,
                    SetWhen::IfMissing => old.is_none(),
                    SetWhen::IfExists => old.is_some(),
                };
                if write {
                    self.write(index, key, value.clone());
                }
                match (get, write) {
                    (true, _) => old.map_or(Value::Nil, Value::Bytes),
                    (false, true) => Value::Ok,
                    (false, false) => Value::Nil,
                }
            }
            Command::GetDel(key) => self
                .remove(key)
                .map_or(Value::Nil, |e| Value::Bytes(e.value)),
            Command::StrLen(key) => count(self.entry(key).map_or(0, |e| e.value.len())),
            Command::Append { key, value } => count(self.append(index, key, value)?),
            Command::IncrBy { key, by } => {
                let current = match self.entry(key) {
                    None => 0,
                    Some(e) => match parse_integer(&e.value) {
                        Some(n) => n,
                        None => return Ok(not_an_integer()),
                    },
                };
                let Some(next) = current.checked_add(*by) else {
                    return Ok(Value::Error(
                        "ERR increment or decrement would overflow".into(),
                    ));
                };
                self.write(index, key, Bytes::from(next.to_string()));
                Value::Int(next)
            }
            Command::Del(keys) => count(keys.iter().filter(|k| self.remove(k).is_some()).count()),
            Command::Exists(keys) => count(keys.iter().filter(|k| self.entry(k).is_some()).count()),
            Command::MGet(keys) => {
                let mut size = 0;
                let mut values = Vec::with_capacity(keys.len());
                for key in keys {
                    let value = self.read(key);
                    size += value.size();
                    if size > self.limits.max_reply_bytes {
                        return Err(self.reply_too_large(size));
                    }
                    values.push(value);
                }
                Value::Array(values)
            }
            Command::MSet(pairs) => {
                for (key, value) in pairs {
                    self.write(index, key, value.clone());
                }
                Value::Ok
            }
            Command::MSetNx(pairs) => {
                if pairs.iter().any(|(key, _)| self.entry(key).is_some()) {
                    return Ok(Value::Int(0));
                }
                for (key, value) in pairs {
                    self.write(index, key, value.clone());
                }
                Value::Int(1)
            }
            Command::DbSize => count(self.state.data.len()),
            Command::Scan {
                cursor,
                pattern,
                count,
            } => self.scan(*cursor, pattern.as_deref(), *count)?,
            Command::Keys(pattern) => {
                let mut size = 0;
                let mut keys = Vec::new();
                for k in self.state.data.keys() {
                    if glob::matches(pattern, &k.key) {
                        size += k.key.len() + 8;
                        if size > self.limits.max_reply_bytes {
                            return Err(self.reply_too_large(size));
                        }
                        keys.push(Value::Bytes(k.key.clone()));
                    }
                }
                Value::Array(keys)
            }
            Command::FlushAll => {
                self.state.data = imbl::OrdMap::new();
                Value::Ok
            }
            Command::Versions(keys) => Value::Array(
                keys.iter()
                    .map(|k| Value::Int(self.entry(k).map_or(0, |e| e.version as i64)))
                    .collect(),
            ),
        })
    }

    fn reply_too_large(&self, len: usize) -> KvError {
        KvError::ReplyTooLarge {
            len,
            max: self.limits.max_reply_bytes,
        }
    }

    /// Examines up to `count` keys from the cursor's position (and the rest of the last key's
    /// hash, so that no cursor falls inside a group of equal hashes); replies
    /// `[next cursor, matching keys]`. The cursor is 1 + the hash of the next key, or 0 at the
    /// end, so keys present for the whole scan are all returned, whatever else changes.
    fn scan(&self, cursor: u64, pattern: Option<&[u8]>, count: usize) -> Result<Value, KvError> {
        let count = count.clamp(1, MAX_SCAN_COUNT);
        let start = MapKey::first_at(cursor.saturating_sub(1));
        let mut keys = Vec::new();
        let mut size = 0;
        let mut last_hash = None;
        let mut next = 0;
        for (examined, (k, _)) in self.state.data.range(start..).enumerate() {
            if examined >= count && last_hash != Some(k.hash) {
                next = k.hash + 1;
                break;
            }
            last_hash = Some(k.hash);
            if pattern.is_none_or(|p| glob::matches(p, &k.key)) {
                size += k.key.len() + 8;
                if size > self.limits.max_reply_bytes {
                    return Err(self.reply_too_large(size));
                }
                keys.push(Value::Bytes(k.key.clone()));
            }
        }
        Ok(Value::Array(vec![
            Value::Bytes(Bytes::from(next.to_string())),
            Value::Array(keys),
        ]))
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
            if seq > s.last_seq {
                s.last_seq = seq;
                s.keep(seq, &Ok(Value::Ok));
            }
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
        if !(1..=SNAPSHOT_FORMAT).contains(&version) {
            return Err(RestoreError::Version(version));
        }
        self.state = Replicated::default();
        self.lru.clear();
        self.state = match version {
            1 => Replicated::from_format1(postcard::from_bytes(encoded)?),
            2 => Replicated::from_format2(postcard::from_bytes(encoded)?),
            _ => postcard::from_bytes(encoded)?,
        };
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
    pub fn peek(&self, key: &[u8]) -> Option<Bytes> {
        self.entry(&Bytes::copy_from_slice(key))
            .map(|e| e.value.clone())
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

/// A value as Redis reads an integer: an optional `-` and decimal digits, no leading zeros,
/// no sign `+`, no spaces, within a signed 64-bit integer.
fn parse_integer(text: &[u8]) -> Option<i64> {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    let canonical = match digits {
        [] => false,
        [b'0'] => text.len() == 1,
        [first, ..] => *first != b'0' && digits.iter().all(u8::is_ascii_digit),
    };
    if !canonical {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

fn not_an_integer() -> Value {
    Value::Error("ERR value is not an integer or out of range".into())
}

impl Replicated {
    /// Format 1 had no versions: every key starts at version 0, as if missing, so a WATCH
    /// taken before the upgrade cannot be carried over it (none can: its client's session
    /// lives only as long as its connection).
    fn from_format1(old: format1::Replicated) -> Replicated {
        let data = old
            .data
            .iter()
            .map(|(k, v)| {
                let key = Bytes::copy_from_slice(k.as_bytes());
                let value = Bytes::copy_from_slice(v.as_bytes());
                (MapKey::new(&key), Entry { value, version: 0 })
            })
            .collect();
        let sessions = old
            .sessions
            .iter()
            .map(|(&client, s)| {
                let reply = s.last_write.clone().map(|r| r.map(|()| Value::Ok));
                (client, Session::upgraded(s.last_seq, reply, s.last_used))
            })
            .collect();
        Replicated { data, sessions }
    }

    fn from_format2(old: format2::Replicated) -> Replicated {
        let sessions = old
            .sessions
            .iter()
            .map(|(&client, s)| {
                let session = Session::upgraded(s.last_seq, s.last_reply.clone(), s.last_used);
                (client, session)
            })
            .collect();
        Replicated {
            data: old.data,
            sessions,
        }
    }

    /// The sum of a hash per key and per session: independent of iteration order, so no
    /// sorting, and equal for equal states whatever their history.
    fn digest(&self) -> u64 {
        let data = self.data.iter().fold(0u64, |d, (k, e)| {
            d.wrapping_add(mix(fnv(&k.key), mix(fnv(&e.value), e.version)))
        });
        let sessions = self.sessions.iter().fold(0u64, |d, (client, s)| {
            let replies = fnv(format!("{:?}", s.kept).as_bytes());
            d.wrapping_add(mix(*client, mix(s.last_seq, mix(s.last_used, replies))))
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
        Op::new(client_id, seq, kind)
    }

    fn append(key: &str, value: &str) -> OpKind {
        OpKind::Append {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        }
    }

    fn get(key: &str) -> OpKind {
        OpKind::Get {
            key: Bytes::copy_from_slice(key.as_bytes()),
        }
    }

    fn text(value: &str) -> KvReply {
        Ok(Value::Bytes(Bytes::copy_from_slice(value.as_bytes())))
    }

    fn peek(sm: &KvStateMachine, key: &str) -> Option<String> {
        sm.peek(key.as_bytes())
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    }

    /// A state machine with sessions for `clients`, opened at indexes 1.., sequence numbers
    /// starting at 1; returns the next free index.
    fn with_sessions(sm: &mut KvStateMachine, clients: &[u64]) -> u64 {
        let mut index = 1;
        for &c in clients {
            assert_eq!(
                sm.apply(index, &op(c, 1, OpKind::OpenSession)),
                Ok(Value::Ok)
            );
            index += 1;
        }
        index
    }

    #[test]
    fn put_append_get() {
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        let i = with_sessions(&mut sm, &[1]);
        assert_eq!(sm.apply(i, &op(1, 1, get("k"))), Ok(Value::Nil));
        assert_eq!(sm.apply(i + 1, &op(1, 2, append("k", "a"))), Ok(Value::Ok));
        assert_eq!(sm.apply(i + 2, &op(1, 3, append("k", "b"))), Ok(Value::Ok));
        assert_eq!(sm.apply(i + 3, &op(1, 4, get("k"))), text("ab"));
    }

    #[test]
    fn a_retried_append_is_applied_once() {
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        let i = with_sessions(&mut sm, &[7, 8]);
        assert_eq!(sm.apply(i, &op(7, 1, append("k", "x"))), Ok(Value::Ok));
        assert_eq!(sm.apply(i + 1, &op(7, 1, append("k", "x"))), Ok(Value::Ok));
        assert_eq!(peek(&sm, "k").as_deref(), Some("x"));
        assert_eq!(sm.apply(i + 2, &op(7, 2, get("k"))), text("x"));
        assert_eq!(sm.apply(i + 3, &op(8, 1, append("k", "y"))), Ok(Value::Ok));
        // A retried read reads again: it is still within the client's call.
        assert_eq!(sm.apply(i + 4, &op(7, 2, get("k"))), text("xy"));
        // A stale duplicate of an older write changes nothing; its reply is long forgotten
        // (request 2 said the client had it).
        assert_eq!(
            sm.apply(i + 5, &op(7, 1, append("k", "x"))),
            Err(KvError::ReplyNotKept)
        );
        assert_eq!(peek(&sm, "k").as_deref(), Some("xy"));
    }

    #[test]
    fn an_append_past_the_value_limit_is_refused_and_changes_nothing() {
        let limits = Limits {
            max_key_bytes: 8,
            max_value_bytes: 4,
            ..Limits::default()
        };
        let mut sm = KvStateMachine::new(limits, 10);
        let i = with_sessions(&mut sm, &[1]);
        assert_eq!(sm.apply(i, &op(1, 1, append("k", "abc"))), Ok(Value::Ok));
        let reply = sm.apply(i + 1, &op(1, 2, append("k", "de")));
        assert_eq!(reply, Err(KvError::ValueTooLarge { len: 5, max: 4 }));
        assert_eq!(peek(&sm, "k").as_deref(), Some("abc"));
        // The refusal is remembered like any reply.
        assert_eq!(sm.apply(i + 2, &op(1, 2, append("k", "de"))), reply);
    }

    /// Thesis §6.3: the table is bounded; the session used least recently (in log order) is
    /// evicted, and its requests, retries included, are refused without being applied.
    #[test]
    fn the_least_recently_used_session_is_evicted_and_its_retries_refused() {
        let mut sm = KvStateMachine::new(Limits::default(), 2);
        let i = with_sessions(&mut sm, &[1, 2]);
        assert_eq!(sm.apply(i, &op(1, 1, append("k", "a"))), Ok(Value::Ok));
        // Client 2 is now the least recently used; opening 3 evicts it.
        assert_eq!(
            sm.apply(i + 1, &op(3, 1, OpKind::OpenSession)),
            Ok(Value::Ok)
        );
        assert_eq!(sm.sessions(), 2);
        assert_eq!(
            sm.apply(i + 2, &op(2, 1, append("k", "b"))),
            Err(KvError::SessionExpired)
        );
        assert_eq!(peek(&sm, "k").as_deref(), Some("a"));
        // Client 1 was used after client 2 and is still there: its retry is recognised.
        assert_eq!(sm.apply(i + 3, &op(1, 1, append("k", "a"))), Ok(Value::Ok));
        assert_eq!(peek(&sm, "k").as_deref(), Some("a"));
        // A reopened session refuses nothing newer than where the client says it starts,
        // and applies nothing older.
        assert_eq!(
            sm.apply(i + 4, &op(2, 5, OpKind::OpenSession)),
            Ok(Value::Ok)
        );
        assert_eq!(
            sm.apply(i + 5, &op(2, 3, append("k", "old"))),
            Err(KvError::ReplyNotKept)
        );
        assert_eq!(sm.apply(i + 6, &op(2, 5, append("k", "b"))), Ok(Value::Ok));
        assert_eq!(peek(&sm, "k").as_deref(), Some("ab"));
    }

    #[test]
    fn a_closed_session_refuses_requests() {
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        let i = with_sessions(&mut sm, &[1]);
        assert_eq!(sm.apply(i, &op(1, 1, OpKind::CloseSession)), Ok(Value::Ok));
        assert_eq!(sm.sessions(), 0);
        assert_eq!(
            sm.apply(i + 1, &op(1, 1, append("k", "a"))),
            Err(KvError::SessionExpired)
        );
        assert_eq!(peek(&sm, "k"), None);
    }

    /// A close carries a sequence number of its own; a delayed copy of it arriving after the
    /// client opened a new session (which starts above it) closes nothing.
    #[test]
    fn a_stale_close_does_not_end_a_newer_session() {
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        let i = with_sessions(&mut sm, &[1]);
        assert_eq!(sm.apply(i, &op(1, 1, append("k", "a"))), Ok(Value::Ok));
        assert_eq!(
            sm.apply(i + 1, &op(1, 2, OpKind::CloseSession)),
            Ok(Value::Ok)
        );
        assert_eq!(
            sm.apply(i + 2, &op(1, 3, OpKind::OpenSession)),
            Ok(Value::Ok)
        );
        assert_eq!(
            sm.apply(i + 3, &op(1, 2, OpKind::CloseSession)),
            Ok(Value::Ok)
        );
        assert_eq!(sm.sessions(), 1);
        assert_eq!(sm.apply(i + 4, &op(1, 3, append("k", "b"))), Ok(Value::Ok));
        assert_eq!(peek(&sm, "k").as_deref(), Some("ab"));
    }

    #[test]
    fn a_snapshot_restores_data_sessions_and_eviction_order() {
        let mut sm = KvStateMachine::new(Limits::default(), 2);
        let i = with_sessions(&mut sm, &[1, 2]);
        assert_eq!(sm.apply(i, &op(1, 1, append("k", "a"))), Ok(Value::Ok));
        let bytes = sm.snapshot();
        let mut copy = KvStateMachine::new(Limits::default(), 2);
        copy.restore(&bytes).expect("restore");
        assert_eq!(copy.digest(), sm.digest());
        // A retry after the snapshot is still recognised.
        assert_eq!(
            copy.apply(i + 1, &op(1, 1, append("k", "a"))),
            Ok(Value::Ok)
        );
        assert_eq!(peek(&copy, "k").as_deref(), Some("a"));
        // The restored eviction order is the original's: client 2 goes first.
        assert_eq!(
            copy.apply(i + 2, &op(3, 1, OpKind::OpenSession)),
            Ok(Value::Ok)
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
                key: Bytes::from_static(b"x"),
                value: Bytes::from(value),
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
        assert_eq!(sm.apply(i, &op(1, 1, append("k", "a"))), Ok(Value::Ok));
        let image = sm.image();
        let before = sm.digest();
        assert_eq!(sm.apply(i + 1, &op(1, 2, append("k", "b"))), Ok(Value::Ok));
        let put = OpKind::Put {
            key: Bytes::from_static(b"other"),
            value: Bytes::from_static(b"v"),
        };
        assert_eq!(sm.apply(i + 2, &op(1, 3, put)), Ok(Value::Ok));
        let mut copy = KvStateMachine::new(Limits::default(), 10);
        copy.restore(&image.encode()).expect("restore");
        assert_eq!(copy.digest(), before);
        assert_eq!(peek(&copy, "k").as_deref(), Some("a"));
        assert_eq!(peek(&copy, "other"), None);
        assert_eq!(peek(&sm, "k").as_deref(), Some("ab"));
    }

    /// A snapshot names its format; one this build cannot read, or a damaged one, is refused
    /// with an error rather than misread.
    #[test]
    fn a_snapshot_of_another_format_or_damaged_is_refused() {
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        let i = with_sessions(&mut sm, &[1]);
        assert_eq!(sm.apply(i, &op(1, 1, append("k", "a"))), Ok(Value::Ok));
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

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn cmd(c: Command) -> OpKind {
        OpKind::Command(c)
    }

    fn set(key: &str, value: &[u8], when: SetWhen, get: bool) -> OpKind {
        cmd(Command::Set {
            key: b(key),
            value: Bytes::copy_from_slice(value),
            when,
            get,
        })
    }

    /// Applies a run of operations for client 1 (session opened at index 1), each at the next
    /// index, and returns their replies.
    fn run_all(sm: &mut KvStateMachine, kinds: Vec<OpKind>) -> Vec<KvReply> {
        let first = with_sessions(sm, &[1]);
        kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| sm.apply(first + i as u64, &op(1, i as u64 + 1, kind)))
            .collect()
    }

    #[test]
    fn values_are_bytes_and_a_missing_key_is_not_an_empty_one() {
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        let binary = [0xff, 0xfe, 0x00, b'\r', b'\n'];
        let replies = run_all(
            &mut sm,
            vec![
                set("bin", &binary, SetWhen::Always, false),
                cmd(Command::Get(b("bin"))),
                set("empty", b"", SetWhen::Always, false),
                cmd(Command::Get(b("empty"))),
                cmd(Command::Get(b("missing"))),
                cmd(Command::Exists(vec![b("empty"), b("missing"), b("bin")])),
            ],
        );
        assert_eq!(
            replies[1],
            Ok(Value::Bytes(Bytes::copy_from_slice(&binary)))
        );
        assert_eq!(replies[3], Ok(Value::Bytes(Bytes::new())));
        assert_eq!(replies[4], Ok(Value::Nil));
        assert_eq!(replies[5], Ok(Value::Int(2)));
    }

    #[test]
    fn set_conditions_and_get_behave_as_in_redis() {
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        let replies = run_all(
            &mut sm,
            vec![
                set("k", b"1", SetWhen::IfExists, false),
                set("k", b"1", SetWhen::IfMissing, false),
                set("k", b"2", SetWhen::IfMissing, false),
                set("k", b"3", SetWhen::IfExists, true),
                cmd(Command::GetDel(b("k"))),
                cmd(Command::GetDel(b("k"))),
                cmd(Command::StrLen(b("k"))),
            ],
        );
        assert_eq!(
            replies,
            vec![
                Ok(Value::Nil),
                Ok(Value::Ok),
                Ok(Value::Nil),
                text("1"),
                text("3"),
                Ok(Value::Nil),
                Ok(Value::Int(0)),
            ]
        );
    }

    #[test]
    fn incr_refuses_non_integers_and_overflow_and_changes_nothing() {
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        let incr = |key: &str, by| cmd(Command::IncrBy { key: b(key), by });
        let replies = run_all(
            &mut sm,
            vec![
                incr("n", 5),
                incr("n", -7),
                set("s", b"12a", SetWhen::Always, false),
                incr("s", 1),
                set("z", b"007", SetWhen::Always, false),
                incr("z", 1),
                set(
                    "max",
                    i64::MAX.to_string().as_bytes(),
                    SetWhen::Always,
                    false,
                ),
                incr("max", 1),
            ],
        );
        assert_eq!(replies[0], Ok(Value::Int(5)));
        assert_eq!(replies[1], Ok(Value::Int(-2)));
        assert_eq!(replies[3], Ok(not_an_integer()));
        assert_eq!(replies[5], Ok(not_an_integer()));
        assert_eq!(
            replies[7],
            Ok(Value::Error(
                "ERR increment or decrement would overflow".into()
            ))
        );
        assert_eq!(peek(&sm, "s").as_deref(), Some("12a"));
        assert_eq!(peek(&sm, "max"), Some(i64::MAX.to_string()));
    }

    #[test]
    fn multi_key_commands() {
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        let pairs = |p: &[(&str, &str)]| p.iter().map(|(k, v)| (b(k), b(v))).collect();
        let replies = run_all(
            &mut sm,
            vec![
                cmd(Command::MSet(pairs(&[("a", "1"), ("b", "2")]))),
                cmd(Command::MSetNx(pairs(&[("b", "x"), ("c", "3")]))),
                cmd(Command::MGet(vec![b("a"), b("c"), b("b")])),
                cmd(Command::MSetNx(pairs(&[("c", "3"), ("d", "4")]))),
                cmd(Command::DbSize),
                cmd(Command::Del(vec![b("a"), b("a"), b("zz"), b("d")])),
                cmd(Command::DbSize),
                cmd(Command::FlushAll),
                cmd(Command::DbSize),
            ],
        );
        assert_eq!(replies[1], Ok(Value::Int(0)));
        assert_eq!(
            replies[2],
            Ok(Value::Array(vec![
                Value::Bytes(b("1")),
                Value::Nil,
                Value::Bytes(b("2"))
            ]))
        );
        assert_eq!(replies[3], Ok(Value::Int(1)));
        assert_eq!(replies[4], Ok(Value::Int(4)));
        assert_eq!(replies[5], Ok(Value::Int(2)));
        assert_eq!(replies[6], Ok(Value::Int(2)));
        assert_eq!(replies[8], Ok(Value::Int(0)));
    }

    /// EXEC runs its commands in one step, unless a watched key changed since WATCH read its
    /// version; a command that fails does not stop the others (as in Redis).
    #[test]
    fn exec_checks_watched_versions_at_apply_time() {
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        let i = with_sessions(&mut sm, &[1, 2]);
        let apply = |sm: &mut KvStateMachine, at: u64, client, seq, kind| {
            sm.apply(at, &op(client, seq, kind))
        };
        apply(&mut sm, i, 1, 1, set("k", b"1", SetWhen::Always, false)).unwrap();
        let versions = apply(
            &mut sm,
            i + 1,
            1,
            2,
            cmd(Command::Versions(vec![b("k"), b("new")])),
        );
        assert_eq!(
            versions,
            Ok(Value::Array(vec![Value::Int(i as i64), Value::Int(0)]))
        );
        let exec = |version| OpKind::Exec {
            watched: vec![(b("k"), version), (b("new"), 0)],
            commands: vec![
                Command::IncrBy { key: b("k"), by: 1 },
                Command::IncrBy { key: b("x"), by: 1 },
                Command::Append {
                    key: b("x"),
                    value: b("a"),
                },
                Command::IncrBy { key: b("x"), by: 1 },
            ],
        };
        // Nothing changed since: it runs, the failing INCR included as an error.
        let reply = apply(&mut sm, i + 2, 1, 3, exec(i));
        assert_eq!(
            reply,
            Ok(Value::Array(vec![
                Value::Int(2),
                Value::Int(1),
                Value::Int(2),
                not_an_integer()
            ]))
        );
        // Another client writes the key: an EXEC still holding the old version does nothing.
        apply(&mut sm, i + 3, 2, 1, set("k", b"9", SetWhen::Always, false)).unwrap();
        assert_eq!(apply(&mut sm, i + 4, 1, 4, exec(i + 2)), Ok(Value::Nil));
        assert_eq!(peek(&sm, "k").as_deref(), Some("9"));
        // A watched key that was missing and is created fails the check too.
        apply(
            &mut sm,
            i + 5,
            2,
            2,
            set("new", b"", SetWhen::Always, false),
        )
        .unwrap();
        assert_eq!(apply(&mut sm, i + 6, 1, 5, exec(i + 3)), Ok(Value::Nil));
        assert_eq!(peek(&sm, "x").as_deref(), Some("1a"));
    }

    /// SCAN returns every key present for the whole scan, however keys come and go between
    /// its calls, and ends with cursor 0.
    #[test]
    fn scan_returns_every_key_present_throughout() {
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        let mut index = with_sessions(&mut sm, &[1]);
        let mut seq = 0;
        let mut apply = |sm: &mut KvStateMachine, kind| {
            index += 1;
            seq += 1;
            sm.apply(index, &op(1, seq, kind))
        };
        for n in 0..500 {
            apply(
                &mut sm,
                set(&format!("stay{n}"), b"v", SetWhen::Always, false),
            )
            .unwrap();
            apply(
                &mut sm,
                set(&format!("gone{n}"), b"v", SetWhen::Always, false),
            )
            .unwrap();
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut cursor = 0;
        let mut calls = 0;
        loop {
            let scan = cmd(Command::Scan {
                cursor,
                pattern: Some(b("stay*")),
                count: 37,
            });
            let Ok(Value::Array(reply)) = apply(&mut sm, scan) else {
                panic!("scan failed");
            };
            let [Value::Bytes(next), Value::Array(keys)] = &reply[..] else {
                panic!("bad scan reply {reply:?}");
            };
            for key in keys {
                let Value::Bytes(key) = key else { panic!() };
                assert!(key.starts_with(b"stay"));
                seen.insert(key.clone());
            }
            // Churn between calls: delete some keys, add others.
            calls += 1;
            apply(&mut sm, cmd(Command::Del(vec![b(&format!("gone{calls}"))]))).unwrap();
            apply(
                &mut sm,
                set(&format!("new{calls}"), b"v", SetWhen::Always, false),
            )
            .unwrap();
            cursor = std::str::from_utf8(next).unwrap().parse().unwrap();
            if cursor == 0 {
                break;
            }
            assert!(calls < 1000, "scan does not end");
        }
        assert_eq!(seen.len(), 500);
        assert!(calls >= 1000 / 37, "COUNT is respected: {calls} calls");
        let keys = apply(&mut sm, cmd(Command::Keys(b("stay1?")))).unwrap();
        let Value::Array(keys) = keys else { panic!() };
        assert_eq!(keys.len(), 10);
    }

    #[test]
    fn replies_past_the_limit_fail_and_large_replies_are_not_kept() {
        let limits = Limits {
            max_reply_bytes: 100,
            ..Limits::default()
        };
        let mut sm = KvStateMachine::new(limits, 10);
        let big = vec![b'x'; 60];
        let large = vec![b'y'; MAX_KEPT_REPLY + 1];
        let replies = run_all(
            &mut sm,
            vec![
                set("a", &big, SetWhen::Always, false),
                set("b", &big, SetWhen::Always, false),
                cmd(Command::MGet(vec![b("a"), b("b")])),
                set("c", &large, SetWhen::Always, false),
                set("c", b"small", SetWhen::Always, true),
            ],
        );
        assert!(matches!(
            replies[2],
            Err(KvError::ReplyTooLarge { max: 100, .. })
        ));
        assert_eq!(replies[4], Ok(Value::Bytes(Bytes::copy_from_slice(&large))));
        // Its retry learns that it was applied, not the old value.
        let retry = op(1, 5, set("c", b"small", SetWhen::Always, true));
        assert_eq!(sm.apply(20, &retry), Err(KvError::ReplyNotKept));
        assert_eq!(peek(&sm, "c").as_deref(), Some("small"));
    }

    /// Inside a transaction a read past the reply budget is replaced by an error, but a
    /// write's reply is kept: the write ran, and the client must be told what it returned.
    #[test]
    fn a_transaction_keeps_write_replies_past_the_reply_budget() {
        let limits = Limits {
            max_reply_bytes: 100,
            ..Limits::default()
        };
        let mut sm = KvStateMachine::new(limits, 10);
        let big = vec![b'x'; 80];
        let exec = OpKind::Exec {
            watched: vec![],
            commands: vec![
                Command::Get(b("a")),
                Command::Set {
                    key: b("b"),
                    value: b("new"),
                    when: SetWhen::Always,
                    get: true,
                },
                Command::Get(b("a")),
            ],
        };
        let replies = run_all(
            &mut sm,
            vec![
                set("a", &big, SetWhen::Always, false),
                set("b", &big, SetWhen::Always, false),
                exec,
            ],
        );
        let Ok(Value::Array(items)) = &replies[2] else {
            panic!("{:?}", replies[2]);
        };
        assert_eq!(items[0], Value::Bytes(Bytes::copy_from_slice(&big)));
        assert_eq!(items[1], Value::Bytes(Bytes::copy_from_slice(&big)));
        assert!(matches!(&items[2], Value::Error(e) if e.contains("exceed the limit")));
        assert_eq!(peek(&sm, "b").as_deref(), Some("new"));
    }

    /// Snapshots written by the build that stored strings (format 1) are read on upgrade.
    #[test]
    fn a_format_1_snapshot_is_read() {
        use std::sync::Arc;
        #[derive(Clone, Serialize)]
        struct OldSession {
            last_seq: u64,
            last_write: Option<Result<(), KvError>>,
            last_used: u64,
        }
        #[derive(Serialize)]
        struct Old {
            data: imbl::HashMap<Arc<str>, Arc<String>>,
            sessions: imbl::HashMap<u64, OldSession>,
        }
        let mut old = Old {
            data: imbl::HashMap::new(),
            sessions: imbl::HashMap::new(),
        };
        old.data.insert(Arc::from("k"), Arc::new("v".to_string()));
        old.sessions.insert(
            7,
            OldSession {
                last_seq: 3,
                last_write: Some(Ok(())),
                last_used: 9,
            },
        );
        let mut bytes = vec![1];
        bytes.extend(postcard::to_allocvec(&old).unwrap());
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        sm.restore(&bytes).expect("restore format 1");
        assert_eq!(peek(&sm, "k").as_deref(), Some("v"));
        // The session is there: a retry of its last write is recognised.
        let retry = Op::new(7, 3, append("k", "again"));
        assert_eq!(sm.apply(10, &retry), Ok(Value::Ok));
        assert_eq!(peek(&sm, "k").as_deref(), Some("v"));
    }

    #[test]
    fn appends_grow_in_place_and_stay_correct_when_shared() {
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        let mut index = with_sessions(&mut sm, &[1]);
        let mut expected = String::new();
        let mut seq = 0;
        for n in 0..200u64 {
            let piece = format!("{n},");
            expected.push_str(&piece);
            index += 1;
            seq += 1;
            sm.apply(index, &op(1, seq, append("k", &piece))).unwrap();
            if n % 50 == 0 {
                // A snapshot image shares the value; the next append must copy, not change it.
                let image = sm.image();
                let mut copy = KvStateMachine::new(Limits::default(), 10);
                index += 1;
                seq += 1;
                sm.apply(index, &op(1, seq, append("k", "!"))).unwrap();
                expected.push('!');
                copy.restore(&image.encode()).unwrap();
                assert_eq!(peek(&copy, "k").map(|v| v.len()), Some(expected.len() - 1));
            }
        }
        assert_eq!(peek(&sm, "k"), Some(expected));
    }

    fn pipelined(client_id: u64, seq: u64, lowest_pending: u64, kind: OpKind) -> Op {
        Op {
            lowest_pending,
            ..op(client_id, seq, kind)
        }
    }

    #[test]
    fn a_pipeline_is_applied_in_order_and_its_replies_kept_until_acknowledged() {
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        let mut i = with_sessions(&mut sm, &[1]);
        let mut next = |sm: &mut KvStateMachine, op: Op| {
            i += 1;
            sm.apply(i, &op)
        };
        // Requests 1 to 3 are in flight; 2 arrives first (a failover, say): it must wait.
        assert_eq!(
            next(&mut sm, pipelined(1, 2, 1, append("k", "b"))),
            Err(KvError::OutOfOrder)
        );
        assert_eq!(peek(&sm, "k"), None);
        for (seq, piece) in [(1, "a"), (2, "b"), (3, "c")] {
            assert_eq!(
                next(&mut sm, pipelined(1, seq, 1, append("k", piece))),
                Ok(Value::Ok)
            );
        }
        assert_eq!(peek(&sm, "k").as_deref(), Some("abc"));
        // Sent again, each gets its own reply, and nothing is applied twice.
        let incr = |by| {
            OpKind::Command(Command::IncrBy {
                key: Bytes::from_static(b"n"),
                by,
            })
        };
        assert_eq!(
            next(&mut sm, pipelined(1, 4, 4, incr(10))),
            Ok(Value::Int(10))
        );
        assert_eq!(
            next(&mut sm, pipelined(1, 5, 4, incr(1))),
            Ok(Value::Int(11))
        );
        assert_eq!(
            next(&mut sm, pipelined(1, 4, 4, incr(10))),
            Ok(Value::Int(10))
        );
        assert_eq!(
            next(&mut sm, pipelined(1, 5, 5, incr(1))),
            Ok(Value::Int(11))
        );
        assert_eq!(peek(&sm, "n").as_deref(), Some("11"));
        // Request 6 says the client has the reply of 5: it is forgotten.
        assert_eq!(next(&mut sm, pipelined(1, 6, 6, get("k"))), text("abc"));
        assert_eq!(
            next(&mut sm, pipelined(1, 5, 5, incr(1))),
            Err(KvError::ReplyNotKept)
        );
        assert_eq!(peek(&sm, "n").as_deref(), Some("11"));
    }

    #[test]
    fn a_request_given_up_on_does_not_hold_back_the_next() {
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        let i = with_sessions(&mut sm, &[1]);
        assert_eq!(sm.apply(i, &op(1, 1, append("k", "a"))), Ok(Value::Ok));
        // Request 2 never arrived, and its client gave up on it: 3 says nothing is pending.
        assert_eq!(sm.apply(i + 1, &op(1, 3, append("k", "c"))), Ok(Value::Ok));
        // A late copy of 2 must not be applied after 3.
        assert_eq!(
            sm.apply(i + 2, &op(1, 2, append("k", "b"))),
            Err(KvError::ReplyNotKept)
        );
        assert_eq!(peek(&sm, "k").as_deref(), Some("ac"));
    }

    #[test]
    fn a_session_keeps_a_bounded_number_of_replies() {
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        let i = with_sessions(&mut sm, &[1]);
        let last = MAX_KEPT_REPLIES as u64 + 10;
        for seq in 1..=last {
            let reply = sm.apply(i + seq, &pipelined(1, seq, 1, append("k", "x")));
            assert_eq!(reply, Ok(Value::Ok));
        }
        let session = sm.state.sessions.get(&1).expect("open");
        assert_eq!(session.kept.len(), MAX_KEPT_REPLIES);
        // The oldest replies went first; the newest are kept.
        assert_eq!(session.kept_reply(last), Some(&Ok(Value::Ok)));
        assert_eq!(session.kept_reply(1), None);
        // And their bytes are bounded: past the budget, a reply is kept as "not kept".
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        let i = with_sessions(&mut sm, &[1]);
        let big = Bytes::from(vec![b'v'; MAX_KEPT_REPLY / 2 + 1]);
        let getset = |value: &Bytes| {
            OpKind::Command(Command::Set {
                key: Bytes::from_static(b"g"),
                value: value.clone(),
                when: SetWhen::Always,
                get: true,
            })
        };
        for seq in 1..=3 {
            sm.apply(i + seq, &pipelined(1, seq, 1, getset(&big)))
                .unwrap();
        }
        let retry = |sm: &mut KvStateMachine, seq| {
            sm.apply(i + 10 + seq, &pipelined(1, seq, 1, getset(&big)))
        };
        assert_eq!(retry(&mut sm, 1), Ok(Value::Nil));
        assert_eq!(retry(&mut sm, 2), Ok(Value::Bytes(big.clone())));
        assert_eq!(retry(&mut sm, 3), Err(KvError::ReplyNotKept));
    }

    #[test]
    fn snapshots_of_format_2_are_still_read() {
        #[derive(Clone, Serialize)]
        struct OldSession {
            last_seq: u64,
            last_reply: Option<KvReply>,
            last_used: u64,
        }
        #[derive(Serialize)]
        struct Old {
            data: imbl::OrdMap<MapKey, Entry>,
            sessions: imbl::HashMap<u64, OldSession>,
        }
        let key = Bytes::from_static(b"k");
        let entry = Entry {
            value: Bytes::from_static(b"v"),
            version: 4,
        };
        let old = Old {
            data: [(MapKey::new(&key), entry)].into_iter().collect(),
            sessions: [(
                7,
                OldSession {
                    last_seq: 3,
                    last_reply: Some(Ok(Value::Int(5))),
                    last_used: 9,
                },
            )]
            .into_iter()
            .collect(),
        };
        let mut bytes = vec![2];
        bytes.extend(postcard::to_allocvec(&old).unwrap());
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        sm.restore(&bytes).expect("restore format 2");
        assert_eq!(peek(&sm, "k").as_deref(), Some("v"));
        // The session's last reply answers a retry of its last write.
        assert_eq!(sm.apply(10, &op(7, 3, append("k", "x"))), Ok(Value::Int(5)));
        let versions = OpKind::Command(Command::Versions(vec![key]));
        assert_eq!(
            sm.apply(11, &op(7, 4, versions)),
            Ok(Value::Array(vec![Value::Int(4)]))
        );
    }
}
