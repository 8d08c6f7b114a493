//! What travels between Clerk, server and log: operations, replies and errors.
//!
//! Keys and values are bytes, never required to be text. The course's three operations
//! (`Get`, `Put`, `Append`) keep their shape for its suites; the Redis front end's commands
//! are [`Command`]s, and a transaction (MULTI/EXEC) is one [`OpKind::Exec`]: several commands
//! in one log entry, so every replica applies them as one step.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A client request. `(client_id, seq)` names it uniquely: a retry carries the same pair, so
/// the state machine can answer a repeat without applying it twice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub client_id: u64,
    pub seq: u64,
    pub kind: OpKind,
    /// The client's oldest write still waiting for its answer before this request, or `seq`
    /// if there is none (at most `seq`). Every write numbered below it has been answered, or
    /// given up on: the session may forget their replies, and need not apply them before
    /// this one. Reads need no order among themselves and keep no reply, so they do not
    /// count. A client with one request at a time sends its own `seq`; a pipeline sends the
    /// oldest write in flight, and the state machine then applies `seq` only after `seq - 1`
    /// (thesis §6.3). A read with `lowest_pending == seq` waits for nothing of its client's,
    /// so the leader may serve it without the log (ReadIndex).
    pub lowest_pending: u64,
}

// New variants go at the end: the log holds operations encoded by earlier builds, and
// postcard names a variant by its position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpKind {
    /// The course's `Get`: the value, or nothing for a missing key (its Clerk reads "").
    Get {
        key: Bytes,
    },
    Put {
        key: Bytes,
        value: Bytes,
    },
    Append {
        key: Bytes,
        value: Bytes,
    },
    /// Opens the client's session (thesis §6.3); its requests then carry sequence numbers
    /// from this op's `seq` on. Opening an open session changes nothing.
    OpenSession,
    /// Closes the client's session: its later requests are refused.
    CloseSession,
    /// One command of the Redis front end.
    Command(Command),
    /// A transaction (MULTI/EXEC): the commands run one after another in one log entry, with
    /// nothing in between; the reply is the array of their replies. If a watched key's
    /// version is no longer the one given (see [`Command::Versions`]), none runs and the
    /// reply is [`Value::Nil`].
    Exec {
        watched: Vec<(Bytes, u64)>,
        commands: Vec<Command>,
    },
}

/// When a `SET` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetWhen {
    Always,
    /// `NX`: only if the key is missing.
    IfMissing,
    /// `XX`: only if the key exists.
    IfExists,
}

/// A command of the Redis front end, as the state machine runs it. Each reads or writes the
/// state at one log position. Their replies are documented in `docs/REDIS.md`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Get(Bytes),
    /// `SET` with its conditions; replies `Ok` (or the old value with `get`) when it wrote,
    /// `Nil` when the condition held it back.
    Set {
        key: Bytes,
        value: Bytes,
        when: SetWhen,
        get: bool,
    },
    GetDel(Bytes),
    StrLen(Bytes),
    /// Replies with the new length.
    Append {
        key: Bytes,
        value: Bytes,
    },
    /// Adds `by` to the value read as a signed 64-bit integer (a missing key reads as 0).
    IncrBy {
        key: Bytes,
        by: i64,
    },
    Del(Vec<Bytes>),
    Exists(Vec<Bytes>),
    MGet(Vec<Bytes>),
    MSet(Vec<(Bytes, Bytes)>),
    /// Writes every pair only if no key of them exists; replies 1 or 0.
    MSetNx(Vec<(Bytes, Bytes)>),
    DbSize,
    /// Keys in the map's fixed order from `cursor`, examining about `count` of them; replies
    /// `[next cursor, keys]`, the cursor 0 when done.
    Scan {
        cursor: u64,
        pattern: Option<Bytes>,
        count: usize,
    },
    /// Every key matching the pattern (bounded by the reply limit).
    Keys(Bytes),
    FlushAll,
    /// The version of each key: the log index that last changed it, 0 if it is missing.
    /// WATCH reads them, and EXEC hands them back.
    Versions(Vec<Bytes>),
}

impl Command {
    /// Whether the command only reads: its reply need not be kept for a retry, which may
    /// simply read again.
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            Command::Get(_)
                | Command::StrLen(_)
                | Command::Exists(_)
                | Command::MGet(_)
                | Command::DbSize
                | Command::Scan { .. }
                | Command::Keys(_)
                | Command::Versions(_)
        )
    }

    /// The name of the command, for metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Get(_) => "get",
            Command::Set { .. } => "set",
            Command::GetDel(_) => "getdel",
            Command::StrLen(_) => "strlen",
            Command::Append { .. } => "append",
            Command::IncrBy { .. } => "incrby",
            Command::Del(_) => "del",
            Command::Exists(_) => "exists",
            Command::MGet(_) => "mget",
            Command::MSet(_) => "mset",
            Command::MSetNx(_) => "msetnx",
            Command::DbSize => "dbsize",
            Command::Scan { .. } => "scan",
            Command::Keys(_) => "keys",
            Command::FlushAll => "flushall",
            Command::Versions(_) => "watch",
        }
    }

    /// Every key the command names (`f(true, key)`), and every value it would write or
    /// pattern it matches (`f(false, value)`).
    fn for_each_arg(&self, f: &mut impl FnMut(bool, &[u8])) {
        match self {
            Command::Get(k) | Command::GetDel(k) | Command::StrLen(k) => f(true, k),
            Command::Set {
                key: k, value: v, ..
            }
            | Command::Append { key: k, value: v } => {
                f(true, k);
                f(false, v);
            }
            Command::IncrBy { key: k, .. } => f(true, k),
            Command::Del(keys)
            | Command::Exists(keys)
            | Command::MGet(keys)
            | Command::Versions(keys) => keys.iter().for_each(|k| f(true, k)),
            Command::MSet(pairs) | Command::MSetNx(pairs) => {
                for (k, v) in pairs {
                    f(true, k);
                    f(false, v);
                }
            }
            Command::Keys(pattern) => f(false, pattern),
            Command::Scan { pattern, .. } => {
                if let Some(p) = pattern {
                    f(false, p);
                }
            }
            Command::DbSize | Command::FlushAll => {}
        }
    }
}

impl OpKind {
    /// Whether this opens or closes a session rather than reading or writing data.
    pub fn is_session_op(&self) -> bool {
        matches!(self, OpKind::OpenSession | OpKind::CloseSession)
    }

    /// Whether the operation only reads (see [`Command::is_read`]).
    pub fn is_read(&self) -> bool {
        match self {
            OpKind::Get { .. } => true,
            OpKind::Command(c) => c.is_read(),
            _ => false,
        }
    }

    /// The name of the operation, for metrics.
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Get { .. } => "get",
            OpKind::Put { .. } => "put",
            OpKind::Append { .. } => "append",
            OpKind::OpenSession => "open_session",
            OpKind::CloseSession => "close_session",
            OpKind::Command(c) => c.name(),
            OpKind::Exec { .. } => "exec",
        }
    }

    fn for_each_arg(&self, f: &mut impl FnMut(bool, &[u8])) {
        match self {
            OpKind::Get { key: k } => f(true, k),
            OpKind::Put { key: k, value: v } | OpKind::Append { key: k, value: v } => {
                f(true, k);
                f(false, v);
            }
            OpKind::OpenSession | OpKind::CloseSession => {}
            OpKind::Command(c) => c.for_each_arg(f),
            OpKind::Exec { watched, commands } => {
                watched.iter().for_each(|(k, _)| f(true, k));
                for c in commands {
                    c.for_each_arg(f);
                }
            }
        }
    }
}

impl Op {
    /// Request `seq` of a client that has no other request waiting.
    pub fn new(client_id: u64, seq: u64, kind: OpKind) -> Op {
        Op {
            client_id,
            seq,
            kind,
            lowest_pending: seq,
        }
    }

    /// Opens client `client_id`'s session; its requests will carry `first_seq` onwards.
    pub fn open(client_id: u64, first_seq: u64) -> Op {
        Op::new(client_id, first_seq, OpKind::OpenSession)
    }

    /// The operation as a log entry. `lowest_pending` follows the rest, and only when it is
    /// not `seq`: entries written before it existed end there, and still decode.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = postcard::to_allocvec(&(self.client_id, self.seq, &self.kind))
            .expect("an Op always serializes");
        if self.lowest_pending != self.seq {
            out.extend(postcard::to_allocvec(&self.lowest_pending).expect("a u64 serializes"));
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Op, postcard::Error> {
        let ((client_id, seq, kind), rest): ((u64, u64, OpKind), _) =
            postcard::take_from_bytes(bytes)?;
        let lowest_pending = if rest.is_empty() {
            seq
        } else {
            postcard::from_bytes(rest)?
        };
        Ok(Op {
            client_id,
            seq,
            kind,
            lowest_pending,
        })
    }
}

/// What an operation answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// Done (a write with nothing to report).
    Ok,
    /// Nothing: a missing key, or a write whose condition held it back.
    Nil,
    Int(i64),
    Bytes(Bytes),
    Array(Vec<Value>),
    /// The command ran and failed, changing nothing (a value that is not an integer, say):
    /// the Redis error line, code first (`ERR ...`). Inside a transaction the other commands
    /// still run, as in Redis.
    Error(String),
}

impl Value {
    /// The course's view of a reply: the value read, "" for a missing key or a write.
    pub fn into_text(self) -> String {
        match self {
            Value::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
            _ => String::new(),
        }
    }

    /// About how many bytes the value takes, to bound replies and what sessions keep.
    pub fn size(&self) -> usize {
        match self {
            Value::Bytes(b) => b.len() + 8,
            Value::Error(e) => e.len() + 8,
            Value::Array(items) => items.iter().map(Value::size).sum::<usize>() + 8,
            Value::Ok | Value::Nil | Value::Int(_) => 8,
        }
    }
}

/// The answer to an operation.
pub type KvReply = Result<Value, KvError>;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum KvError {
    /// This server cannot take the request (not the leader, or it lost leadership while the
    /// request waited). The request may or may not have been applied; retry elsewhere with
    /// the same sequence number.
    #[error("wrong leader")]
    WrongLeader,
    /// The server gave up waiting for the request to commit. Outcome unknown; retry.
    #[error("timed out waiting for the request to commit")]
    Timeout,
    /// Too many requests are waiting on this server. Nothing was proposed; retry later.
    #[error("server busy: too many requests waiting")]
    Busy,
    #[error("key of {len} bytes exceeds the limit of {max} bytes")]
    KeyTooLarge { len: usize, max: usize },
    /// Refused before proposing (a `Put`'s value), or at apply time (an `Append` whose result
    /// would pass the limit: every replica decides the same).
    #[error("value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge { len: usize, max: usize },
    /// The client's session is not open: it was never opened, it was closed, or it was
    /// evicted to make room for newer ones. Nothing was applied for this request, but an
    /// earlier attempt of it may have been: its outcome is unknown.
    #[error("session expired: the outcome of this request is unknown")]
    SessionExpired,
    /// The operation as a whole (all its keys and values, or a transaction's commands) is
    /// larger than one log entry may be. Nothing was proposed.
    #[error("request of {len} bytes exceeds the limit of {max} bytes")]
    RequestTooLarge { len: usize, max: usize },
    /// The reply would be larger than a reply may be (an MGET or KEYS of too much, say).
    /// Nothing was changed.
    #[error("reply of {len} bytes exceeds the limit of {max} bytes")]
    ReplyTooLarge { len: usize, max: usize },
    /// A retry of a request that was applied, whose reply was too large to keep for it (or
    /// was forgotten: the client said it had it).
    #[error("the request was applied, but its reply was not kept for a retry")]
    ReplyNotKept,
    /// A pipelined request arrived before an earlier request of its client was applied.
    /// Nothing was applied; send it again after the earlier one.
    #[error("an earlier request of this client has not been applied yet")]
    OutOfOrder,
}

impl KvError {
    /// Whether another attempt (elsewhere, or later) can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            KvError::WrongLeader | KvError::Timeout | KvError::Busy | KvError::OutOfOrder
        )
    }
}

/// Size limits, checked before proposing (and for growing values, again when applying).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// All keys and values of one operation together: one log entry, which must fit the
    /// peers' frames with room to spare.
    pub max_request_bytes: usize,
    /// The largest reply; a read that would answer more fails instead.
    pub max_reply_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 4 << 10,
            max_value_bytes: 1 << 20,
            max_request_bytes: 8 << 20,
            max_reply_bytes: 8 << 20,
        }
    }
}

impl Limits {
    /// Rejects an operation the state machine would never accept, before it reaches the log.
    pub fn check(&self, kind: &OpKind) -> Result<(), KvError> {
        let mut error = None;
        let mut total = 0usize;
        kind.for_each_arg(&mut |is_key, arg| {
            total += arg.len();
            let (max, too_large): (usize, fn(usize, usize) -> KvError) = if is_key {
                (self.max_key_bytes, |len, max| KvError::KeyTooLarge {
                    len,
                    max,
                })
            } else {
                (self.max_value_bytes, |len, max| KvError::ValueTooLarge {
                    len,
                    max,
                })
            };
            if arg.len() > max {
                error.get_or_insert(too_large(arg.len(), max));
            }
        });
        if let Some(e) = error {
            return Err(e);
        }
        if total > self.max_request_bytes {
            return Err(KvError::RequestTooLarge {
                len: total,
                max: self.max_request_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log keeps operations written by earlier builds, whose keys and values were
    /// strings: they must still decode.
    #[test]
    fn operations_of_the_string_format_still_decode() {
        #[derive(Serialize)]
        enum OldKind {
            #[allow(dead_code)]
            Get {
                key: String,
            },
            Put {
                key: String,
                value: String,
            },
        }
        #[derive(Serialize)]
        struct OldOp {
            client_id: u64,
            seq: u64,
            kind: OldKind,
        }
        let old = OldOp {
            client_id: 7,
            seq: 3,
            kind: OldKind::Put {
                key: "k".into(),
                value: "v".into(),
            },
        };
        let bytes = postcard::to_allocvec(&old).unwrap();
        let op = Op::decode(&bytes).unwrap();
        let put = OpKind::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
        };
        assert_eq!(op, Op::new(7, 3, put));
    }

    #[test]
    fn a_pipelined_operation_keeps_its_lowest_pending_through_the_log() {
        let get = OpKind::Get {
            key: Bytes::from_static(b"k"),
        };
        let alone = Op::new(7, 3, get.clone());
        assert_eq!(Op::decode(&alone.encode()), Ok(alone.clone()));
        let pipelined = Op {
            lowest_pending: 1,
            ..alone.clone()
        };
        assert_eq!(Op::decode(&pipelined.encode()), Ok(pipelined.clone()));
        // One request at a time costs nothing more in the log than before.
        assert!(pipelined.encode().len() > alone.encode().len());
    }

    #[test]
    fn limits_cover_every_key_and_value_of_an_operation() {
        let limits = Limits {
            max_key_bytes: 4,
            max_value_bytes: 8,
            max_request_bytes: 20,
            max_reply_bytes: 100,
        };
        let pair = |k: &'static str, v: &'static str| (Bytes::from(k), Bytes::from(v));
        let mset = |pairs| OpKind::Command(Command::MSet(pairs));
        assert_eq!(
            limits.check(&mset(vec![pair("a", "1"), pair("b", "2")])),
            Ok(())
        );
        assert_eq!(
            limits.check(&mset(vec![pair("a", "1"), pair("toolong", "2")])),
            Err(KvError::KeyTooLarge { len: 7, max: 4 })
        );
        assert_eq!(
            limits.check(&mset(vec![pair("a", "123456789")])),
            Err(KvError::ValueTooLarge { len: 9, max: 8 })
        );
        let exec = OpKind::Exec {
            watched: vec![],
            commands: vec![Command::MSet(vec![pair("a", "12345678"); 3])],
        };
        assert_eq!(
            limits.check(&exec),
            Err(KvError::RequestTooLarge { len: 27, max: 20 })
        );
    }
}
