//! The Clerk's transport over TCP: one multiplexed connection per server, opened on first use
//! and reopened after a failure. Many Clerks (one per RESP connection, say) can share one
//! `TcpClient`.
//!
//! It tells the Clerk where the leader is when it can: from the leader id each reply carries
//! (if it knows the servers' node ids), or, inside a server process, from the local Raft
//! node, whose view of the leader changes as soon as an election ends: the Clerk then stops
//! waiting on a leader that was paused or cut off.

use crate::tls::{ClientTls, Stream};
use crate::wire::{self, ClientFrame, Hello, NodeStatus, ServerFrame};
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use kv::{ClientTransport, KvReply, Op, RpcError};
use raft::{LeaderView, NodeId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::codec::Framed;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Requests queued per connection before callers wait.
const CONN_QUEUE: usize = 1024;

/// A server running in this very process, called without the network: it proposes `op` at
/// once (so calls made one after another keep their order) and returns what waits for the
/// reply and the leader the server then knows of.
pub type LocalCall = Arc<dyn Fn(Op) -> BoxFuture<'static, (KvReply, Option<NodeId>)> + Send + Sync>;

/// Cheap to clone: clones share the connections.
#[derive(Clone)]
pub struct TcpClient {
    inner: Arc<Inner>,
}

struct Inner {
    addrs: Vec<SocketAddr>,
    /// The node id of each server, where known.
    ids: Vec<Option<NodeId>>,
    conns: Vec<tokio::sync::Mutex<Option<Arc<Conn>>>>,
    next_id: AtomicU64,
    /// The leader named by the latest reply (0: none).
    hinted: AtomicU64,
    /// A local Raft node's view of the leader, when this runs inside a server.
    local: Option<watch::Receiver<LeaderView>>,
    /// TLS toward the servers, if they speak it.
    tls: Option<ClientTls>,
    /// The server in this process, if any, by its index: called directly.
    local_server: Option<(usize, LocalCall)>,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<ServerFrame>>>>;

struct Conn {
    requests: mpsc::Sender<ClientFrame>,
    pending: Pending,
    alive: Arc<AtomicBool>,
}

/// Removes a call's pending slot however the call ends (reply, error, or the caller's timeout
/// dropping the future).
struct PendingGuard {
    pending: Pending,
    id: u64,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl TcpClient {
    /// A client of servers whose node ids are unknown (no leader hints).
    pub fn new(addrs: Vec<SocketAddr>) -> TcpClient {
        TcpClient::build(addrs.into_iter().map(|a| (None, a)).collect(), None)
    }

    /// A client of the cluster's nodes, by id: replies' leader hints are followed.
    pub fn for_cluster(nodes: Vec<(NodeId, SocketAddr)>) -> TcpClient {
        TcpClient::build(
            nodes.into_iter().map(|(id, a)| (Some(id), a)).collect(),
            None,
        )
    }

    /// Like [`TcpClient::for_cluster`], inside a server: the local node's view of the leader
    /// is followed too, as soon as it changes.
    pub fn following(
        nodes: Vec<(NodeId, SocketAddr)>,
        local: watch::Receiver<LeaderView>,
    ) -> TcpClient {
        TcpClient::build(
            nodes.into_iter().map(|(id, a)| (Some(id), a)).collect(),
            Some(local),
        )
    }

    fn build(
        servers: Vec<(Option<NodeId>, SocketAddr)>,
        local: Option<watch::Receiver<LeaderView>>,
    ) -> TcpClient {
        let conns = servers
            .iter()
            .map(|_| tokio::sync::Mutex::new(None))
            .collect();
        TcpClient {
            inner: Arc::new(Inner {
                ids: servers.iter().map(|&(id, _)| id).collect(),
                addrs: servers.into_iter().map(|(_, a)| a).collect(),
                conns,
                next_id: AtomicU64::new(1),
                hinted: AtomicU64::new(0),
                local,
                tls: None,
                local_server: None,
            }),
        }
    }

    /// Speaks TLS to the servers, if `tls`. Before the client is shared.
    pub fn with_tls(mut self, tls: Option<ClientTls>) -> TcpClient {
        Arc::get_mut(&mut self.inner)
            .expect("with_tls before the client is shared")
            .tls = tls;
        self
    }

    /// Calls server `server`, which runs in this process, through `call` instead of a
    /// loopback connection: a request from a Redis client of the leader then costs no extra
    /// round trip. Before the client is shared.
    pub fn with_local(mut self, server: usize, call: LocalCall) -> TcpClient {
        Arc::get_mut(&mut self.inner)
            .expect("with_local before the client is shared")
            .local_server = Some((server, call));
        self
    }

    /// The server with node id `id`, if it is one of ours.
    fn index_of(&self, id: NodeId) -> Option<usize> {
        self.inner.ids.iter().position(|&i| i == Some(id))
    }

    pub fn addrs(&self) -> &[SocketAddr] {
        &self.inner.addrs
    }

    async fn conn(&self, server: usize) -> Result<Arc<Conn>, RpcError> {
        let mut slot = self.inner.conns[server].lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| c.alive.load(Ordering::SeqCst)) {
            return Ok(conn.clone());
        }
        let addr = self.inner.addrs[server];
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| RpcError(format!("connecting to {addr} timed out")))?
            .map_err(|e| RpcError(format!("cannot connect to {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let stream: Stream = match &self.inner.tls {
            None => Box::new(stream),
            Some(tls) => tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(addr, stream))
                .await
                .map_err(|_| RpcError(format!("TLS handshake with {addr} timed out")))?
                .map_err(|e| RpcError(format!("TLS with {addr} failed: {e}")))?,
        };
        let mut framed = Framed::new(stream, wire::codec());
        framed
            .send(wire::encode(&Hello::Client))
            .await
            .map_err(|e| RpcError(format!("{addr}: {e}")))?;
        let conn = Arc::new(start_conn(framed));
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn round_trip(
        &self,
        server: usize,
        frame: impl FnOnce(u64) -> ClientFrame,
    ) -> Result<ServerFrame, RpcError> {
        let conn = self.conn(server).await?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        conn.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let _guard = PendingGuard {
            pending: conn.pending.clone(),
            id,
        };
        let addr = self.inner.addrs[server];
        conn.requests
            .send(frame(id))
            .await
            .map_err(|_| RpcError(format!("connection to {addr} closed")))?;
        rx.await
            .map_err(|_| RpcError(format!("connection to {addr} lost")))
    }

    /// Asks server `server` for its status, with a digest of its whole state if `digest`.
    pub async fn status(&self, server: usize, digest: bool) -> Result<NodeStatus, RpcError> {
        match self
            .round_trip(server, |id| ClientFrame::Status { id, digest })
            .await?
        {
            ServerFrame::Status { status, .. } => Ok(status),
            other => Err(RpcError(format!("unexpected reply {other:?}"))),
        }
    }
}

fn start_conn(framed: Framed<Stream, tokio_util::codec::LengthDelimitedCodec>) -> Conn {
    let (mut sink, mut stream) = framed.split();
    let (tx, mut rx) = mpsc::channel::<ClientFrame>(CONN_QUEUE);
    let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
    let alive = Arc::new(AtomicBool::new(true));
    let writer_alive = alive.clone();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut ok = sink.feed(wire::encode(&first)).await.is_ok();
            while let Ok(next) = rx.try_recv() {
                ok = ok && sink.feed(wire::encode(&next)).await.is_ok();
            }
            if !ok || sink.flush().await.is_err() {
                break;
            }
        }
        writer_alive.store(false, Ordering::SeqCst);
    });
    let (reader_pending, reader_alive) = (pending.clone(), alive.clone());
    tokio::spawn(async move {
        while let Some(Ok(frame)) = stream.next().await {
            let Ok(reply) = wire::decode::<ServerFrame>(&frame) else {
                break;
            };
            let waiter = reader_pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&reply.id());
            if let Some(waiter) = waiter {
                let _ = waiter.send(reply);
            }
        }
        reader_alive.store(false, Ordering::SeqCst);
        // Every call still waiting learns that its connection is gone.
        reader_pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    });
    Conn {
        requests: tx,
        pending,
        alive,
    }
}

impl ClientTransport for TcpClient {
    fn servers(&self) -> usize {
        self.inner.addrs.len()
    }

    fn leader_hint(&self) -> Option<usize> {
        let local = self.inner.local.as_ref().and_then(|rx| rx.borrow().leader);
        let hinted = Some(self.inner.hinted.load(Ordering::Relaxed)).filter(|&id| id != 0);
        local.or(hinted).and_then(|id| self.index_of(id))
    }

    async fn leader_changed(&self) {
        match &self.inner.local {
            Some(rx) => {
                let mut rx = rx.clone();
                rx.mark_unchanged();
                if rx.changed().await.is_err() {
                    // The node is gone: nothing will change any more.
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    }

    async fn call(&self, server: usize, op: Op) -> Result<KvReply, RpcError> {
        if let Some((local, call)) = &self.inner.local_server {
            if *local == server {
                let (reply, leader) = call(op).await;
                self.inner
                    .hinted
                    .store(leader.unwrap_or(0), Ordering::Relaxed);
                return Ok(reply);
            }
        }
        match self
            .round_trip(server, |id| ClientFrame::Request { id, op })
            .await?
        {
            ServerFrame::Reply { reply, leader, .. } => {
                self.inner
                    .hinted
                    .store(leader.unwrap_or(0), Ordering::Relaxed);
                Ok(reply)
            }
            other => Err(RpcError(format!("unexpected reply {other:?}"))),
        }
    }
}
