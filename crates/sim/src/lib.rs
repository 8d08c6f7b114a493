//! Deterministic simulation for raftkv's distributed tests.
//!
//! Everything runs on one tokio thread with a paused clock, and every random choice (network
//! faults, election timeouts, test schedules) comes from one seed, so a seed replays a run
//! exactly. See `docs/TESTING.md`.

pub mod kv_check;
pub mod kv_cluster;
pub mod net;
pub mod persister;
pub mod raft_cluster;
pub mod seed;
pub mod trace;

pub use kv_cluster::{KvCluster, Record, SimClerk, KV_ELECTION_TIMEOUT};
pub use net::Network;
pub use persister::MemPersister;
pub use raft_cluster::{cmd, RaftCluster, RAFT_ELECTION_TIMEOUT};
pub use seed::run;
pub use trace::Trace;
