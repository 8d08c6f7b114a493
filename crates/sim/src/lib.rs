//! Deterministic simulation for raftkv's distributed tests.
//!
//! Everything runs on one tokio thread with a paused clock, and every random choice (network
//! faults, crash points, election timeouts, test schedules) comes from one seed, so a seed
//! replays a run exactly. See `docs/TESTING.md`.

pub mod commands_check;
pub mod commands_mix;
pub mod crash;
pub mod history;
pub mod incarnation;
pub mod kv_check;
pub mod kv_cluster;
pub mod mutants;
pub mod nemesis;
pub mod net;
pub mod persister;
pub mod raft_cluster;
pub mod seed;
pub mod stats;
pub mod trace;

pub use history::{History, Record};
pub use kv_cluster::{
    read_mode_for, ClientFault, KvCluster, KvOptions, SimClerk, KV_ELECTION_TIMEOUT,
};
pub use net::{NetFaults, Network};
pub use persister::MemPersister;
pub use raft_cluster::{cmd, RaftCluster, RAFT_ELECTION_TIMEOUT};
pub use seed::run;
pub use stats::Stats;
pub use trace::Trace;
