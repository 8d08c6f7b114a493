//! Raft peer traffic over TCP: one persistent outbound connection per peer, each fed by a
//! bounded queue. `send` never blocks the node: when a queue is full (a slow or dead peer)
//! the message is dropped, and Raft's retransmission covers it.

use crate::tls::{ClientTls, Stream};
use crate::wire::{self, Hello};
use futures::SinkExt;
use raft::{Message, NodeId, Transport};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::FramedWrite;

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
/// Messages written per flush: batches small messages into few syscalls.
const BATCH: usize = 256;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

pub struct TcpTransport {
    queues: BTreeMap<NodeId, mpsc::Sender<Message>>,
}

impl TcpTransport {
    /// Starts a sender task per peer (every entry of `peers` but `me`), over TLS if `tls`.
    pub fn start(
        me: NodeId,
        peers: &BTreeMap<NodeId, SocketAddr>,
        tls: Option<ClientTls>,
    ) -> TcpTransport {
        let mut queues = BTreeMap::new();
        for (&id, &addr) in peers {
            if id == me {
                continue;
            }
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            tokio::spawn(peer_sender(me, id, addr, tls.clone(), rx));
            queues.insert(id, tx);
        }
        TcpTransport { queues }
    }
}

impl Transport for TcpTransport {
    fn send(&self, msg: Message) {
        if let Some(queue) = self.queues.get(&msg.to) {
            let _ = queue.try_send(msg);
        }
    }
}

/// Connects to `addr`, with TLS if configured.
async fn connect(addr: SocketAddr, tls: &Option<ClientTls>) -> std::io::Result<Stream> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    match tls {
        None => Ok(Box::new(stream)),
        Some(tls) => tls.connect(addr, stream).await,
    }
}

async fn peer_sender(
    me: NodeId,
    peer: NodeId,
    addr: SocketAddr,
    tls: Option<ClientTls>,
    mut queue: mpsc::Receiver<Message>,
) {
    let mut backoff = BACKOFF_MIN;
    // Whether a failure to connect was logged since the last connection, so that each loss
    // and each recovery is logged once, not at every retry.
    let mut unreachable_logged = false;
    loop {
        let stream = match connect(addr, &tls).await {
            Ok(stream) => stream,
            Err(e) => {
                if !unreachable_logged {
                    tracing::info!(node = me, peer, %addr, "peer {peer} unreachable: {e}");
                    unreachable_logged = true;
                }
                tracing::debug!(node = me, peer, %addr, "connect failed: {e}");
                // What queued up meanwhile is stale; Raft resends what still matters.
                while queue.try_recv().is_ok() {}
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let mut framed = FramedWrite::new(stream, wire::codec());
        if framed
            .send(wire::encode(&Hello::Peer { from: me }))
            .await
            .is_err()
        {
            continue;
        }
        backoff = BACKOFF_MIN;
        tracing::info!(node = me, peer, %addr, "connected to peer {peer}");
        unreachable_logged = false;
        loop {
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut failed = framed.feed(wire::encode(&first)).await.is_err();
            for _ in 1..BATCH {
                let Ok(msg) = queue.try_recv() else { break };
                failed = failed || framed.feed(wire::encode(&msg)).await.is_err();
            }
            if failed || SinkExt::<bytes::Bytes>::flush(&mut framed).await.is_err() {
                tracing::info!(node = me, peer, %addr, "lost the connection to peer {peer}");
                break;
            }
        }
    }
}
