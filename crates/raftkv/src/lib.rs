//! The production runtime of raftkv: the same Raft driver, `KvServer`, apply loop and Clerk
//! as in the simulator, over TCP and a write-ahead log.
//!
//! - [`wire`]: frames and message types on the wire.
//! - [`transport`]: Raft peer traffic.
//! - [`client`]: the Clerk's TCP transport.
//! - [`storage`]: Raft storage on the write-ahead log.
//! - [`node`]: one server process.
//! - [`cluster`]: a local cluster of server processes.
//! - [`resp`]: the Redis-protocol front end.
//! - [`metrics`]: Prometheus metrics.
//! - [`tls`]: TLS on every port.
//! - [`bench`]: the load generator behind `raftkv bench`.

pub mod bench;
pub mod client;
pub mod cluster;
pub mod metrics;
pub mod node;
pub mod resp;
pub mod storage;
pub mod tls;
pub mod transport;
pub mod wire;
