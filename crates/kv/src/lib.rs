//! The replicated key/value service: `Put`, `Append` and `Get` with linearizability, on our
//! Raft.
//!
//! - [`Op`]: an operation with the client id and sequence number that make retries safe.
//! - [`KvStateMachine`]: the map and the per-client session table (last sequence number and
//!   its reply), changed only by the apply loop.
//! - [`KvServer`]: RPC handlers that submit to Raft and wait, and the apply loop.
//! - [`Clerk`]: the client library, over any [`ClientTransport`].

pub mod clerk;
mod glob;
pub mod op;
pub mod server;
pub mod state_machine;

pub use clerk::{Clerk, ClerkConfig, ClerkError, ClientTransport, RpcError};
pub use op::{Command, KvError, KvReply, Limits, Op, OpKind, SetWhen, Value};
pub use server::{Fault, KvConfig, KvServer, KvStats, Proposal, ReadMode, SnapshotPolicy};
pub use state_machine::{
    KvStateMachine, RestoreError, StateImage, DEFAULT_MAX_SESSIONS, MAX_KEPT_REPLY, MAX_SCAN_COUNT,
};
