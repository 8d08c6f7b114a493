//! The Redis-protocol (RESP2) front end: `redis-cli`, `redis-benchmark` and Redis client
//! libraries can talk to raftkv.
//!
//! Contract:
//!
//! - Requests are RESP arrays of bulk strings (what clients send) or inline commands (one line
//!   of whitespace-separated words, ended by `\n` or `\r\n`; a word may be quoted as in
//!   `redis-cli`). Every length is checked against [`RespLimits`] before any memory is set
//!   aside for it, and input that breaks the protocol yields a [`RespError::Protocol`], never
//!   a panic.
//! - Supported commands: `GET`, `SET key value`, `APPEND`, `PING`, `ECHO`, `SELECT 0`, `QUIT`,
//!   `INFO`, and the handshake commands clients send on connect (`COMMAND`, `CONFIG GET`,
//!   `CLIENT SETNAME`/`SETINFO`; `HELLO` is refused so that clients stay on RESP2). Names are
//!   case-insensitive. Anything else gets `-ERR unknown command '<name>'`.
//! - The service does not tell a missing key from an empty value: `GET` of a missing key
//!   replies with the empty bulk string `$0\r\n\r\n`, never the null bulk `$-1\r\n`.
//! - `APPEND` replies with the length of the value read back by a `GET` right after the
//!   append. The two are separate operations, so the length may include other clients' later
//!   writes.
//! - Keys and values are stored as UTF-8 strings; a request with a key or value that is not
//!   UTF-8 is refused with an error and changes nothing.
//! - Each connection runs its requests in order, one at a time, through its own Clerk, and
//!   answers in the same order; replies to pipelined requests are written together once no
//!   complete request is left in the input. After a protocol error the connection replies
//!   `-ERR Protocol error: ...` and closes, as Redis does; other connections are unaffected.

mod codec;
mod command;
mod server;

pub use codec::{Reply, RespCodec, RespError};
pub use server::{serve, serve_connection, RespOptions};

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

/// Room for a key and the protocol around a value that is exactly at the service's limit, so
/// that an oversized value is refused by the service with a clear error rather than by the
/// codec with a protocol error that closes the connection.
const BULK_SLACK: usize = 64 << 10;

impl RespLimits {
    /// Limits that let through any value up to `max_value_bytes`.
    pub fn for_values(max_value_bytes: usize) -> RespLimits {
        let max_bulk_bytes = max_value_bytes.saturating_add(BULK_SLACK);
        RespLimits {
            max_bulk_bytes,
            // A SET carries a key and a value, each at most one bulk.
            max_request_bytes: max_bulk_bytes.saturating_mul(2),
            ..RespLimits::default()
        }
    }
}

impl Default for RespLimits {
    fn default() -> Self {
        let max_bulk_bytes = (1 << 20) + BULK_SLACK;
        RespLimits {
            max_bulk_bytes,
            max_array_len: 1024,
            max_inline_bytes: 64 << 10,
            max_request_bytes: 2 * max_bulk_bytes,
            max_clients: 10_000,
        }
    }
}
