//! Our Raft: a sans-IO consensus core ([`Raft`]) and the async driver that runs it
//! ([`node::spawn`]).
//!
//! - The core is a plain state machine. Inputs: [`Raft::tick`], [`Raft::step`],
//!   [`Raft::propose`], [`Raft::read_index`]. Output: a [`Ready`] (state to persist, messages to send, committed
//!   entries to apply), acknowledged with [`Raft::advance`]. It never reads a clock, spawns,
//!   does I/O or draws unseeded randomness, so tests step it by hand and a seed replays a run.
//! - The driver owns the core inside a task and does the I/O through the [`Transport`] and
//!   [`Storage`] traits. Its [`Handle`] has the course's shape: `start`, `state`, `kill`, and
//!   an apply channel delivering committed commands in index order.

pub mod log;
pub mod message;
pub mod node;
pub mod progress;
pub mod raft;
pub mod ready;
pub mod types;

#[cfg(test)]
mod raft_tests;

pub use message::{Message, MessageBody};
pub use node::{
    read_lease, spawn, CrashHook, CrashPoint, Handle, InitialState, LeaderView, NodeConfig,
    ReadCheck, Storage, Transport,
};
pub use raft::{Config, NotLeader, Raft, RaftFault, Role};
pub use ready::{ReadState, Ready, SnapshotWrite};
pub use types::{ApplyMsg, Entry, HardState, LogIndex, NodeId, SnapshotData, SnapshotMeta, Term};
