//! The replicated state: the key/value map and the client session table. Only the apply loop
//! touches it, one committed operation at a time, in log order, so every replica that applies
//! the same log holds the same state.

use crate::op::{KvError, KvReply, Limits, Op, OpKind};
use std::collections::HashMap;

/// Per client: the last sequence number applied and its reply (thesis §6.3). A request with
/// that sequence number again is a retry: it is answered from here, never applied twice.
/// The table changes only when an entry is applied, never when one is proposed.
#[derive(Clone, Debug)]
struct Session {
    last_seq: u64,
    reply: KvReply,
}

#[derive(Debug, Default)]
pub struct KvStateMachine {
    data: HashMap<String, String>,
    sessions: HashMap<u64, Session>,
    limits: Limits,
}

impl KvStateMachine {
    pub fn new(limits: Limits) -> KvStateMachine {
        KvStateMachine {
            limits,
            ..KvStateMachine::default()
        }
    }

    /// Applies one committed operation and returns its reply.
    pub fn apply(&mut self, op: &Op) -> KvReply {
        if let Some(session) = self.sessions.get(&op.client_id) {
            // A Clerk has one request outstanding, so an older sequence number is a stale
            // duplicate whose caller has moved on; it changes nothing either.
            if op.seq <= session.last_seq {
                return session.reply.clone();
            }
        }
        let reply = self.execute(&op.kind);
        self.sessions.insert(
            op.client_id,
            Session {
                last_seq: op.seq,
                reply: reply.clone(),
            },
        );
        reply
    }

    /// Marks `seq` as client `client_id`'s last applied request without applying anything:
    /// only the `Fault::SessionUpdatedOnPropose` mutant does this.
    #[doc(hidden)]
    pub fn record_session(&mut self, client_id: u64, seq: u64) {
        self.sessions.insert(
            client_id,
            Session {
                last_seq: seq,
                reply: Ok(String::new()),
            },
        );
    }

    fn execute(&mut self, kind: &OpKind) -> KvReply {
        match kind {
            OpKind::Get { key } => Ok(self.data.get(key).cloned().unwrap_or_default()),
            OpKind::Put { key, value } => {
                self.data.insert(key.clone(), value.clone());
                Ok(String::new())
            }
            OpKind::Append { key, value } => {
                let current = self.data.get(key).map_or(0, String::len);
                let len = current + value.len();
                if len > self.limits.max_value_bytes {
                    return Err(KvError::ValueTooLarge {
                        len,
                        max: self.limits.max_value_bytes,
                    });
                }
                self.data.entry(key.clone()).or_default().push_str(value);
                Ok(String::new())
            }
        }
    }

    /// Reads a key directly, for tests and diagnostics only: serving reads from here would
    /// bypass the log.
    pub fn peek(&self, key: &str) -> Option<&str> {
        self.data.get(key).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// A digest of the whole map, to compare replicas.
    pub fn digest(&self) -> u64 {
        let mut keys: Vec<&String> = self.data.keys().collect();
        keys.sort();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for k in keys {
            for b in k.bytes().chain([0]).chain(self.data[k].bytes()).chain([0]) {
                h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
            }
        }
        h
    }
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

    #[test]
    fn put_append_get() {
        let mut sm = KvStateMachine::new(Limits::default());
        let get = OpKind::Get { key: "k".into() };
        assert_eq!(sm.apply(&op(1, 1, get.clone())), Ok(String::new()));
        assert_eq!(sm.apply(&op(1, 2, append("k", "a"))), Ok(String::new()));
        assert_eq!(sm.apply(&op(1, 3, append("k", "b"))), Ok(String::new()));
        assert_eq!(sm.apply(&op(1, 4, get)), Ok("ab".into()));
    }

    #[test]
    fn a_retried_append_is_applied_once() {
        let mut sm = KvStateMachine::new(Limits::default());
        assert_eq!(sm.apply(&op(7, 1, append("k", "x"))), Ok(String::new()));
        assert_eq!(sm.apply(&op(7, 1, append("k", "x"))), Ok(String::new()));
        assert_eq!(sm.peek("k"), Some("x"));
        // A retried Get is answered with the value it first returned.
        assert_eq!(
            sm.apply(&op(7, 2, OpKind::Get { key: "k".into() })),
            Ok("x".into())
        );
        assert_eq!(sm.apply(&op(8, 1, append("k", "y"))), Ok(String::new()));
        assert_eq!(
            sm.apply(&op(7, 2, OpKind::Get { key: "k".into() })),
            Ok("x".into())
        );
    }

    #[test]
    fn an_append_past_the_value_limit_is_refused_and_changes_nothing() {
        let limits = Limits {
            max_key_bytes: 8,
            max_value_bytes: 4,
        };
        let mut sm = KvStateMachine::new(limits);
        assert_eq!(sm.apply(&op(1, 1, append("k", "abc"))), Ok(String::new()));
        let reply = sm.apply(&op(1, 2, append("k", "de")));
        assert_eq!(reply, Err(KvError::ValueTooLarge { len: 5, max: 4 }));
        assert_eq!(sm.peek("k"), Some("abc"));
        // The refusal is remembered like any reply.
        assert_eq!(sm.apply(&op(1, 2, append("k", "de"))), reply);
    }
}
