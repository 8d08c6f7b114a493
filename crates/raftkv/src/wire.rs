//! The TCP wire format: length-delimited frames (a 4-byte big-endian length, then the body)
//! with an explicit maximum size, bodies encoded with postcard.
//!
//! A connection starts with a [`Hello`] frame saying what it carries: Raft messages from a
//! peer, or client requests. Client requests carry an id so that many can be in flight on one
//! connection; replies may come back in any order.

use bytes::Bytes;
use kv::{KvReply, Op};
use raft::NodeId;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::net::SocketAddr;
use tokio_util::codec::LengthDelimitedCodec;

/// The largest frame accepted or sent. An AppendEntries carries at most about 1 MiB of
/// commands plus one entry (a value is at most 1 MiB by default), so 16 MiB leaves room for
/// larger configured limits while bounding what a bad peer can make us buffer.
pub const MAX_FRAME_BYTES: usize = 16 << 20;

pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Hello {
    /// Raft messages from node `from`. `lease_reads`: whether it was started with `--reads
    /// lease`. In that mode a node refuses votes for a while after hearing from a leader, and
    /// a leader's lease reads are safe only if every node does; so a node takes no message
    /// from a peer that differs from it in this (`node::serve_connection`).
    Peer {
        from: NodeId,
        lease_reads: bool,
    },
    Client,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ClientFrame {
    Request {
        id: u64,
        op: Op,
    },
    /// `digest`: also compute a digest of the whole state (O(size), off the node's hot path).
    Status {
        id: u64,
        digest: bool,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ServerFrame {
    /// `leader`: who the answering node believes leads, so that a client sent away with
    /// `WrongLeader` knows where to go.
    Reply {
        id: u64,
        reply: KvReply,
        leader: Option<NodeId>,
    },
    Status {
        id: u64,
        status: NodeStatus,
    },
}

impl ServerFrame {
    pub fn id(&self) -> u64 {
        match self {
            ServerFrame::Reply { id, .. } | ServerFrame::Status { id, .. } => *id,
        }
    }
}

/// What a node reports about itself (`raftkv status`, and the integration tests).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: NodeId,
    /// "leader", "follower", "candidate" or "pre-candidate".
    pub role: String,
    pub term: u64,
    pub is_leader: bool,
    pub leader_hint: Option<NodeId>,
    /// Every node of the cluster and its address for peers and clients, this one included.
    pub peers: Vec<(NodeId, SocketAddr)>,
    pub commit_index: u64,
    pub last_index: u64,
    pub applied_index: u64,
    /// If asked for, a digest of the node's state as of `applied_index`: replicas at one
    /// applied index must agree.
    pub state_digest: Option<u64>,
}

pub fn encode<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(postcard::to_allocvec(value).expect("wire types always serialize"))
}

pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(frame)
}
