//! What travels between Clerk, server and log: operations, replies and errors.

use serde::{Deserialize, Serialize};

/// A client request. `(client_id, seq)` names it uniquely: a retry carries the same pair, so
/// the state machine can answer a repeat without applying it twice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub client_id: u64,
    pub seq: u64,
    pub kind: OpKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpKind {
    Get {
        key: String,
    },
    Put {
        key: String,
        value: String,
    },
    Append {
        key: String,
        value: String,
    },
    /// Opens the client's session (thesis §6.3); its requests then carry sequence numbers
    /// from this op's `seq` on. Opening an open session changes nothing.
    OpenSession,
    /// Closes the client's session: its later requests are refused.
    CloseSession,
}

impl OpKind {
    /// The key a data operation reads or writes ("" for session operations).
    pub fn key(&self) -> &str {
        match self {
            OpKind::Get { key } | OpKind::Put { key, .. } | OpKind::Append { key, .. } => key,
            OpKind::OpenSession | OpKind::CloseSession => "",
        }
    }

    pub fn value(&self) -> Option<&str> {
        match self {
            OpKind::Put { value, .. } | OpKind::Append { value, .. } => Some(value),
            OpKind::Get { .. } | OpKind::OpenSession | OpKind::CloseSession => None,
        }
    }

    /// Whether this opens or closes a session rather than reading or writing data.
    pub fn is_session_op(&self) -> bool {
        matches!(self, OpKind::OpenSession | OpKind::CloseSession)
    }
}

impl Op {
    /// Opens client `client_id`'s session; its requests will carry `first_seq` onwards.
    pub fn open(client_id: u64, first_seq: u64) -> Op {
        Op {
            client_id,
            seq: first_seq,
            kind: OpKind::OpenSession,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("an Op always serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Op, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// The answer to an operation: the value for a `Get` (empty for a missing key), empty for
/// `Put` and `Append`.
pub type KvReply = Result<String, KvError>;

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
}

impl KvError {
    /// Whether another attempt (elsewhere, or later) can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            KvError::WrongLeader | KvError::Timeout | KvError::Busy
        )
    }
}

/// Size limits, checked before proposing (and for `Append`, again when applying).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 4 << 10,
            max_value_bytes: 1 << 20,
        }
    }
}

impl Limits {
    /// Rejects an operation the state machine would never accept, before it reaches the log.
    pub fn check(&self, kind: &OpKind) -> Result<(), KvError> {
        let key = kind.key().len();
        if key > self.max_key_bytes {
            return Err(KvError::KeyTooLarge {
                len: key,
                max: self.max_key_bytes,
            });
        }
        let value = kind.value().map_or(0, str::len);
        if value > self.max_value_bytes {
            return Err(KvError::ValueTooLarge {
                len: value,
                max: self.max_value_bytes,
            });
        }
        Ok(())
    }
}
