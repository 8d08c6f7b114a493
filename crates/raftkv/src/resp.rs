//! The Redis-protocol front end: `redis-cli`, `redis-benchmark` and Redis client libraries
//! (redis-py, ioredis, ...) talk to raftkv as to a Redis server.
//!
//! Contract (the command table is `docs/REDIS.md`):
//!
//! - Requests are RESP arrays of bulk strings (what clients send) or inline commands (one line
//!   of whitespace-separated words, ended by `\n` or `\r\n`; a word may be quoted as in
//!   `redis-cli`). Every length is checked against [`RespLimits`] before any memory is set
//!   aside for it. A bulk string or request over its limit is answered with an error and
//!   dropped as it arrives, never buffered, and the connection goes on; input that breaks the
//!   protocol yields a [`RespError::Protocol`], never a panic.
//! - Replies are RESP2 until the client sends `HELLO 3`, then RESP3.
//! - Keys and values are bytes. A missing key reads as nil, an empty value as `""`.
//! - Every data command is one entry in the Raft log, applied at one position on every
//!   replica: each is linearizable, reads included. MULTI ... EXEC is one entry too, so a
//!   transaction is atomic; WATCH reads the keys' versions through the log, and EXEC is
//!   refused at apply time if one has changed, whichever node leads by then.
//! - Each connection runs its requests in order, one at a time, through its own Clerk, and
//!   answers in the same order; replies to pipelined requests are written together once no
//!   complete request is left in the input. After a protocol error the connection replies
//!   `-ERR Protocol error: ...` and closes, as Redis does; other connections are unaffected.

mod codec;
mod command;
mod server;

pub use codec::{Protocol, Reply, RespCodec, RespError};
pub use server::{serve, serve_connection, RespOptions};

use crate::wire::NodeStatus;
use std::sync::Arc;

/// What INFO reports about the node serving the connection.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub status: NodeStatus,
    /// Keys and sessions in this replica's applied state.
    pub keys: u64,
    pub sessions: u64,
    pub connected_clients: u64,
}

/// Reads the node's [`ServerInfo`] when a client asks.
pub type InfoSource = Arc<dyn Fn() -> ServerInfo + Send + Sync>;

/// Bounds on what one connection may send and how many connections are served at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RespLimits {
    /// The longest bulk string accepted in a request.
    pub max_bulk_bytes: usize,
    /// The most elements in one request array (and words in one inline command).
    pub max_array_len: usize,
    /// The longest inline command line, without its line ending.
    pub max_inline_bytes: usize,
    /// The most payload bytes (all bulk strings together) in one request, so that a long
    /// array of large strings cannot pile up in memory.
    pub max_request_bytes: usize,
    /// Connections served at once; one more is told `-ERR max number of clients reached`.
    pub max_clients: usize,
}

impl RespLimits {
    /// Limits that let through any value up to `max_value_bytes` and any request the service
    /// could accept (`max_request_bytes`): a larger bulk string or request is refused by the
    /// codec with a clear error, without being buffered, and the connection goes on.
    pub fn for_service(max_value_bytes: usize, max_request_bytes: usize) -> RespLimits {
        RespLimits {
            max_bulk_bytes: max_value_bytes,
            max_request_bytes,
            ..RespLimits::default()
        }
    }
}

impl Default for RespLimits {
    fn default() -> Self {
        let service = kv::Limits::default();
        RespLimits {
            max_bulk_bytes: service.max_value_bytes,
            max_array_len: 64 << 10,
            max_inline_bytes: 64 << 10,
            max_request_bytes: service.max_request_bytes,
            max_clients: 10_000,
        }
    }
}
