//! Raft peer traffic over TCP: one persistent outbound connection per peer. `send` never
//! blocks the node. Over plain TCP, a message to a peer with nothing queued is written to
//! the socket at once, from the sending thread: handing it to another task first would cost
//! a thread wake-up on every message, and most messages (a heartbeat, its answer, one
//! AppendEntries) find the socket idle. Everything else, and every message over TLS, goes
//! through the peer's bounded queue to its sender task, which writes in batches; when the
//! queue is full (a slow or dead peer) the message is dropped, and Raft's retransmission
//! covers it.

use crate::tls::{ClientTls, Stream};
use crate::wire::{self, Hello};
use bytes::{Bytes, BytesMut};
use raft::{Message, NodeId, Transport};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::Encoder;

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
/// Messages written per write: batches small messages into few syscalls.
const BATCH: usize = 256;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

pub struct TcpTransport {
    peers: BTreeMap<NodeId, Arc<Peer>>,
}

struct Peer {
    queue: mpsc::Sender<Outgoing>,
    direct: Mutex<Direct>,
    /// Test only: a message is written at once even with others queued ahead of it.
    #[cfg(test)]
    fault_jumps_queue: bool,
}

/// What decides whether a message may be written at once: it may when the connection is
/// plain TCP and the sender task has written everything handed to it, so that frames reach
/// the socket in the order they were sent.
struct Direct {
    /// The connection's socket, while it is up and plain TCP.
    socket: Option<Arc<TcpStream>>,
    /// Counts connections, so that the rest of a frame is never written to a later one.
    connection: u64,
    /// Items in the queue or being written by the task.
    queued: usize,
}

enum Outgoing {
    Message(Message),
    /// The rest of a frame whose head was written at once, on connection `.0`: it must go
    /// before anything else.
    Rest(u64, Bytes),
}

impl TcpTransport {
    /// Starts a sender task per peer (every entry of `peers` but `me`), over TLS if `tls`.
    /// Each connection's hello says whether this node serves `lease_reads`.
    pub fn start(
        me: NodeId,
        peers: &BTreeMap<NodeId, SocketAddr>,
        tls: Option<ClientTls>,
        lease_reads: bool,
    ) -> TcpTransport {
        Self::start_with(me, peers, tls, lease_reads, false)
    }

    fn start_with(
        me: NodeId,
        peers: &BTreeMap<NodeId, SocketAddr>,
        tls: Option<ClientTls>,
        lease_reads: bool,
        #[cfg_attr(not(test), allow(unused_variables))] fault_jumps_queue: bool,
    ) -> TcpTransport {
        let mut started = BTreeMap::new();
        for (&id, &addr) in peers {
            if id == me {
                continue;
            }
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            let peer = Arc::new(Peer {
                queue: tx,
                direct: Mutex::new(Direct {
                    socket: None,
                    connection: 0,
                    queued: 0,
                }),
                #[cfg(test)]
                fault_jumps_queue,
            });
            let sender = PeerSender {
                me,
                peer: id,
                addr,
                tls: tls.clone(),
                lease_reads,
                shared: peer.clone(),
                queue: rx,
            };
            tokio::spawn(sender.run());
            started.insert(id, peer);
        }
        TcpTransport { peers: started }
    }
}

impl Transport for TcpTransport {
    fn send(&self, msg: Message) {
        if let Some(peer) = self.peers.get(&msg.to) {
            peer.send(msg);
        }
    }
}

impl Peer {
    fn direct(&self) -> MutexGuard<'_, Direct> {
        self.direct.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, msg: Message) {
        let mut direct = self.direct();
        let may_write = direct.queued == 0 || self.jumps_queue();
        if let (true, Some(socket)) = (may_write, &direct.socket) {
            let Some(frame) = frame(&msg) else { return };
            match write_now(socket, &frame) {
                Ok(written) if written == frame.len() => return,
                Ok(written) => {
                    let rest = Outgoing::Rest(direct.connection, frame.slice(written..));
                    if self.queue.try_send(rest).is_ok() {
                        direct.queued += 1;
                    }
                    return;
                }
                // The task finds out too, at its next write, and reconnects; until then
                // messages queue.
                Err(_) => direct.socket = None,
            }
        }
        if self.queue.try_send(Outgoing::Message(msg)).is_ok() {
            direct.queued += 1;
        }
    }

    fn jumps_queue(&self) -> bool {
        #[cfg(test)]
        return self.fault_jumps_queue;
        #[cfg(not(test))]
        false
    }
}

/// `msg` as a frame of the peer protocol; None (after logging) if it is too large for one.
fn frame(msg: &Message) -> Option<Bytes> {
    let mut frame = BytesMut::new();
    add_frame(&mut frame, msg).then(|| frame.freeze())
}

/// Adds `msg` as a frame to `buf`; false (after logging) if it is too large for one.
fn add_frame(buf: &mut BytesMut, msg: &Message) -> bool {
    match wire::codec().encode(wire::encode(msg), buf) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(to = msg.to, "message not sent: {e}");
            false
        }
    }
}

/// Writes as much of `bytes` as the socket takes without waiting; how much that was.
fn write_now(socket: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match socket.try_write(&bytes[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

enum Connection {
    Plain(Arc<TcpStream>),
    Tls(Stream),
}

impl Connection {
    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Connection::Plain(socket) => {
                let mut written = 0;
                while written < bytes.len() {
                    socket.writable().await?;
                    written += write_now(socket, &bytes[written..])?;
                }
                Ok(())
            }
            Connection::Tls(stream) => {
                stream.write_all(bytes).await?;
                stream.flush().await
            }
        }
    }
}

/// Keeps one peer's connection up and writes what is queued for it.
struct PeerSender {
    me: NodeId,
    peer: NodeId,
    addr: SocketAddr,
    tls: Option<ClientTls>,
    lease_reads: bool,
    shared: Arc<Peer>,
    queue: mpsc::Receiver<Outgoing>,
}

impl PeerSender {
    async fn run(mut self) {
        let (me, peer, addr) = (self.me, self.peer, self.addr);
        let mut backoff = BACKOFF_MIN;
        // Whether a failure to connect was logged since the last connection, so that each
        // loss and each recovery is logged once, not at every retry.
        let mut unreachable_logged = false;
        loop {
            let mut conn = match self.connect().await {
                Ok(conn) => conn,
                Err(e) => {
                    if !unreachable_logged {
                        tracing::info!(node = me, peer, %addr, "peer {peer} unreachable: {e}");
                        unreachable_logged = true;
                    }
                    tracing::debug!(node = me, peer, %addr, "connect failed: {e}");
                    // What queued up meanwhile is stale; Raft resends what still matters.
                    if !self.drop_queued() {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            let hello = wire::encode(&Hello::Peer {
                from: me,
                lease_reads: self.lease_reads,
            });
            let mut head = BytesMut::new();
            wire::codec()
                .encode(hello, &mut head)
                .expect("a hello fits a frame");
            if conn.write_all(&head).await.is_err() {
                continue;
            }
            backoff = BACKOFF_MIN;
            tracing::info!(node = me, peer, %addr, "connected to peer {peer}");
            unreachable_logged = false;
            let connection = {
                let mut direct = self.shared.direct();
                direct.connection += 1;
                if let Connection::Plain(socket) = &conn {
                    direct.socket = Some(socket.clone());
                }
                direct.connection
            };
            if !self.write_queued(&mut conn, connection).await {
                return;
            }
            tracing::info!(node = me, peer, %addr, "lost the connection to peer {peer}");
        }
    }

    async fn connect(&self) -> io::Result<Connection> {
        let socket = TcpStream::connect(self.addr).await?;
        let _ = socket.set_nodelay(true);
        match &self.tls {
            None => Ok(Connection::Plain(Arc::new(socket))),
            Some(tls) => Ok(Connection::Tls(tls.connect(self.addr, socket).await?)),
        }
    }

    /// Writes queued items to `conn` until a write fails (true, with direct writes stopped)
    /// or the transport is gone (false).
    async fn write_queued(&mut self, conn: &mut Connection, connection: u64) -> bool {
        let mut batch = BytesMut::new();
        loop {
            let Some(first) = self.queue.recv().await else {
                return false;
            };
            batch.clear();
            let mut items = 1;
            append(&mut batch, first, connection);
            while items < BATCH {
                let Ok(item) = self.queue.try_recv() else {
                    break;
                };
                append(&mut batch, item, connection);
                items += 1;
            }
            let result = conn.write_all(&batch).await;
            let mut direct = self.shared.direct();
            direct.queued -= items;
            if result.is_err() {
                direct.socket = None;
                return true;
            }
        }
    }

    /// Empties the queue, for a peer that cannot be reached; false if the transport is gone.
    fn drop_queued(&mut self) -> bool {
        loop {
            match self.queue.try_recv() {
                Ok(_) => self.shared.direct().queued -= 1,
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
    }
}

/// Adds `item`'s bytes for connection `connection` to `batch`: the rest of a frame begun
/// on an earlier connection is dropped, since its head never reached this one.
fn append(batch: &mut BytesMut, item: Outgoing, connection: u64) {
    match item {
        Outgoing::Message(msg) => {
            add_frame(batch, &msg);
        }
        Outgoing::Rest(on, rest) if on == connection => batch.extend_from_slice(&rest),
        Outgoing::Rest(..) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use raft::{Entry, LogIndex, MessageBody, Term};
    use tokio::net::TcpListener;
    use tokio_util::codec::FramedRead;

    /// Message `seq` of a stream: an AppendEntries with one 16 KiB entry, numbered by its
    /// `prev_log_index`.
    fn numbered(seq: u64) -> Message {
        Message {
            from: 1,
            to: 2,
            term: Term(1),
            body: MessageBody::AppendEntries {
                prev_log_index: LogIndex(seq),
                prev_log_term: Term(1),
                entries: vec![Entry {
                    term: Term(1),
                    index: LogIndex(seq + 1),
                    command: vec![seq as u8; 16 << 10],
                }],
                leader_commit: LogIndex(0),
                read_round: 0,
            },
        }
    }

    /// Sends 2,000 messages of 16 KiB (far more than a socket buffer holds) to a peer that
    /// reads them meanwhile, so that some are written at once, some in part and some queued;
    /// the peer must receive every one whole and in order. Returns the first thing wrong.
    async fn send_past_a_full_socket(jumps_queue: bool) -> Result<(), String> {
        const COUNT: u64 = 2000;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peers = BTreeMap::from([
            (1, "127.0.0.1:9".parse().unwrap()),
            (2, listener.local_addr().unwrap()),
        ]);
        let transport = TcpTransport::start_with(1, &peers, None, true, jumps_queue);
        let (socket, _) = listener.accept().await.unwrap();
        let mut frames = FramedRead::new(socket, wire::codec());
        let hello = frames.next().await.unwrap().unwrap();
        assert!(matches!(
            wire::decode::<Hello>(&hello),
            Ok(Hello::Peer {
                from: 1,
                lease_reads: true
            })
        ));
        // The sender task makes the socket available for direct writes after the hello.
        while transport.peers[&2].direct().socket.is_none() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let reader = tokio::spawn(async move {
            for seq in 0..COUNT {
                let frame = match frames.next().await {
                    Some(Ok(frame)) => frame,
                    other => return Err(format!("message {seq}: no frame but {other:?}")),
                };
                match wire::decode::<Message>(&frame) {
                    Ok(msg) if msg == numbered(seq) => {}
                    Ok(msg) => {
                        let got = match msg.body {
                            MessageBody::AppendEntries { prev_log_index, .. } => prev_log_index.0,
                            _ => u64::MAX,
                        };
                        return Err(format!("message {seq}: got message {got}"));
                    }
                    Err(e) => return Err(format!("message {seq}: not a message: {e}")),
                }
            }
            Ok(())
        });
        for seq in 0..COUNT {
            transport.send(numbered(seq));
            if seq % 8 == 0 {
                tokio::task::yield_now().await;
            }
        }
        reader.await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn messages_arrive_whole_and_in_order_past_a_full_socket() {
        let run = send_past_a_full_socket(false);
        let result = tokio::time::timeout(Duration::from_secs(30), run).await;
        assert_eq!(result, Ok(Ok(())));
    }

    /// Negative control: a message written at once while others wait in the queue arrives
    /// out of order (or cuts into a frame written in part).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jumping_the_queue_is_caught() {
        let run = send_past_a_full_socket(true);
        let result = tokio::time::timeout(Duration::from_secs(30), run).await;
        match result {
            Ok(Err(wrong)) => assert!(
                wrong.contains("got message") || wrong.contains("not a message"),
                "{wrong}"
            ),
            other => panic!("the broken transport was not caught: {other:?}"),
        }
    }
}
