//! One raftkv server process: the Raft node on the write-ahead log, the key/value server,
//! the TCP listener for peers and clients, and the optional Redis-protocol listener.

use crate::client::TcpClient;
use crate::metrics::{Metrics, MetricsRegistry};
use crate::resp::RespOptions;
use crate::storage::WalStorage;
use crate::tls::{NodeTls, Stream, TlsFiles};
use crate::transport::TcpTransport;
use crate::wire::{self, ClientFrame, Hello, NodeStatus, ServerFrame};
use anyhow::Context;
use futures::{SinkExt, StreamExt};
use kv::{Clerk, ClerkConfig, KvConfig, KvServer, Limits, SnapshotPolicy};
use raft::{Config, Message, NodeConfig, NodeId, Role};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Framed;

/// Inbound Raft messages buffered before new ones are dropped.
const INBOX: usize = 4096;
/// Client requests one connection may have in flight; more wait to be read.
const CLIENT_INFLIGHT: usize = 1024;
/// Open peer and client connections; more are closed at once.
const MAX_CONNECTIONS: usize = 10_000;
/// A connection must say what it is within this long.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub id: NodeId,
    pub peers: BTreeMap<NodeId, SocketAddr>,
    pub data_dir: PathBuf,
    /// Where to listen for peers and clients; defaults to this node's entry in `peers`.
    pub listen: Option<SocketAddr>,
    /// Where to listen for the Redis protocol, if at all.
    pub resp: Option<SocketAddr>,
    pub limits: Limits,
    /// Snapshot once the log holds this many entries beyond the last snapshot.
    pub snapshot_entries: usize,
    /// ... and once the log's bytes reach this percentage of the last snapshot's size.
    pub snapshot_log_percent: u64,
    /// Most client sessions kept (the least recently used is evicted beyond).
    pub max_sessions: usize,
    /// Size of a log segment on disk.
    pub segment_bytes: u64,
    /// Where to serve Prometheus metrics, if at all.
    pub metrics: Option<SocketAddr>,
    /// TLS on every port (see [`crate::tls`]), if configured.
    pub tls: Option<TlsFiles>,
    /// The password Redis clients must give with `AUTH`, if any.
    pub requirepass: Option<String>,
    /// How the leader serves reads.
    pub reads: kv::ReadMode,
    /// A deliberate bug for the tests that must catch it.
    #[doc(hidden)]
    pub fault: ServerFault,
}

/// Ways to break a server on purpose, so that tests with real processes show they can fail.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServerFault {
    #[default]
    None,
    /// RESP forwarding ignores the local node's view of the leader and waits out each
    /// attempt's full time-out, as it did before it followed leader changes.
    SlowFailover,
    /// Raft messages are taken from a peer whatever its `--reads lease` setting, as before
    /// peers said what theirs was.
    MixedLeaseReads,
}

/// A running server.
pub struct Server {
    pub kv: KvServer,
    pub listen: SocketAddr,
    pub resp: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

/// Opens the storage and starts serving. Storage errors come back as
/// [`crate::storage::OpenError`] inside the `anyhow::Error`, so the caller can choose the exit
/// code.
pub async fn start(opts: ServerOptions) -> anyhow::Result<Server> {
    anyhow::ensure!(
        opts.peers.contains_key(&opts.id),
        "--peers must include this node's id {}",
        opts.id
    );
    // Checked before the data directory is touched: a bad certificate is a usage error.
    let tls = opts.tls.as_ref().map(NodeTls::load).transpose()?;
    let (mut storage, torn) = WalStorage::open(opts.id, &opts.data_dir, opts.segment_bytes)?;
    let metrics = Metrics::default();
    storage.set_metrics(metrics.clone());
    if let Some(path) = torn {
        tracing::warn!(
            "recovery cut an incomplete last record; its bytes are in {}",
            path.display()
        );
    }
    let listen = opts.listen.unwrap_or(opts.peers[&opts.id]);
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let listen = listener.local_addr()?;
    // Bound before the node starts, so that a port in use is an error at startup.
    let metrics_listener = match opts.metrics {
        Some(addr) => Some(crate::metrics::listen(addr).await?),
        None => None,
    };

    let (inbox_tx, inbox_rx) = mpsc::channel(INBOX);
    let lease_reads = opts.reads == kv::ReadMode::Lease;
    let transport = TcpTransport::start(
        opts.id,
        &opts.peers,
        tls.as_ref().map(|t| t.connector.clone()),
        lease_reads,
    );
    let peers: Vec<NodeId> = opts.peers.keys().copied().collect();
    let mut config = NodeConfig::new(Config::new(opts.id, peers, rand::random()));
    if lease_reads {
        config.raft.lease_reads = true;
        config.lease = Some(raft::read_lease(&config.raft, config.tick));
    }
    let (raft, apply) = raft::spawn(config, storage, transport, inbox_rx);
    let kv_config = KvConfig {
        limits: opts.limits,
        max_sessions: opts.max_sessions,
        reads: opts.reads,
        snapshots: SnapshotPolicy {
            max_log_bytes: None,
            max_log_entries: Some(opts.snapshot_entries),
            min_log_percent: Some(opts.snapshot_log_percent),
        },
        ..KvConfig::default()
    };
    let kv = KvServer::start(raft, apply, kv_config);
    let mut metrics_addr = None;
    if let Some(listener) = metrics_listener {
        metrics_addr = Some(listener.local_addr()?);
        let registry = Arc::new(MetricsRegistry::new(&metrics));
        registry.attach(kv.clone());
        tokio::spawn(crate::metrics::serve(listener, registry));
    }
    tokio::spawn(accept_loop(
        listener,
        Inbox {
            tx: inbox_tx,
            // The mutant takes every peer's messages, whatever it serves.
            lease_reads: (opts.fault != ServerFault::MixedLeaseReads).then_some(lease_reads),
        },
        kv.clone(),
        opts.peers.clone(),
        metrics.clone(),
        tls.as_ref().map(|t| t.rpc.clone()),
    ));

    let mut resp = None;
    if let Some(addr) = opts.resp {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for the Redis protocol"))?;
        resp = Some(listener.local_addr()?);
        // Every RESP connection is a Clerk of its own over connections shared by all of them;
        // ours first, so a request reaches the leader in one hop when we lead. They follow
        // this node's view of the leader, so they move to a new one as soon as it is elected.
        let mut nodes = vec![(opts.id, listen)];
        nodes.extend(
            opts.peers
                .iter()
                .filter(|(&id, _)| id != opts.id)
                .map(|(&id, &a)| (id, a)),
        );
        let (client, config) = match opts.fault {
            ServerFault::SlowFailover => (
                TcpClient::new(nodes.into_iter().map(|(_, a)| a).collect()),
                ClerkConfig {
                    deadline: Some(Duration::from_secs(10)),
                    ..ClerkConfig::default()
                },
            ),
            ServerFault::None | ServerFault::MixedLeaseReads => {
                let client = TcpClient::following(nodes, kv.raft().watch_leader());
                // Ours is server 0.
                let (kv, metrics) = (kv.clone(), metrics.clone());
                let local: crate::client::LocalCall =
                    Arc::new(move |op| Box::pin(serve_request(&kv, &metrics, op)));
                (client.with_local(0, local), forwarding_clerk())
            }
        };
        let client = client.with_tls(tls.as_ref().map(|t| t.connector.clone()));
        let make_clerk = move || Clerk::new(client.clone(), rand::random(), config.clone());
        let info: crate::resp::InfoSource = {
            let (kv, peers, metrics) = (kv.clone(), opts.peers.clone(), metrics.clone());
            Arc::new(move || {
                let stats = kv.stats();
                crate::resp::ServerInfo {
                    status: status(&kv, &peers),
                    keys: stats.keys,
                    sessions: stats.sessions,
                    connected_clients: metrics.connections_open("redis"),
                }
            })
        };
        let options = RespOptions {
            info: Some(info),
            limits: crate::resp::RespLimits::for_service(
                opts.limits.max_value_bytes,
                opts.limits.max_request_bytes,
            ),
            tls: tls.as_ref().map(|t| t.resp.clone()),
            password: opts.requirepass.as_deref().map(Arc::from),
            metrics,
        };
        tokio::spawn(crate::resp::serve(listener, make_clerk, options));
    }
    Ok(Server {
        kv,
        listen,
        resp,
        metrics: metrics_addr,
    })
}

/// How a node forwards a RESP client's requests. A first attempt that gets no answer in
/// 500 ms moves on (a request normally commits in about a millisecond; a busy leader gets
/// twice as long each time, up to 3 s); the whole call gives up after 10 s.
pub fn forwarding_clerk() -> ClerkConfig {
    ClerkConfig {
        first_attempt_timeout: Some(Duration::from_millis(500)),
        deadline: Some(Duration::from_secs(10)),
        ..ClerkConfig::default()
    }
}

/// Where a node's Raft messages from peers go.
#[derive(Clone)]
struct Inbox {
    tx: mpsc::Sender<Message>,
    /// Whether this node serves lease reads: messages of a peer that differs are dropped.
    /// None: taken whatever the peer serves (`ServerFault::MixedLeaseReads`).
    lease_reads: Option<bool>,
}

async fn accept_loop(
    listener: TcpListener,
    inbox: Inbox,
    kv: KvServer,
    peers: BTreeMap<NodeId, SocketAddr>,
    metrics: Metrics,
    tls: Option<TlsAcceptor>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors, say: back off rather than spin.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%addr, "refusing a connection: {MAX_CONNECTIONS} already open");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (inbox, kv, peers) = (inbox.clone(), kv.clone(), peers.clone());
        let (metrics, tls) = (metrics.clone(), tls.clone());
        tokio::spawn(async move {
            let result = match tls {
                None => serve_connection(Box::new(stream), true, inbox, kv, &peers, &metrics).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HELLO_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            // Verified against the cluster's CA if presented at all.
                            let certified = stream.get_ref().1.peer_certificates().is_some();
                            serve_connection(
                                Box::new(stream),
                                certified,
                                inbox,
                                kv,
                                &peers,
                                &metrics,
                            )
                            .await
                        }
                        Ok(Err(e)) => Err(anyhow::anyhow!("TLS handshake failed: {e}")),
                        Err(_) => Err(anyhow::anyhow!("no TLS handshake in time")),
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%addr, "connection closed: {e}");
            }
            drop(slot);
        });
    }
}

/// `may_be_peer`: the connection may carry Raft messages. Without TLS any may; with TLS only
/// one whose other side presented a certificate signed by the cluster's CA.
async fn serve_connection(
    stream: Stream,
    may_be_peer: bool,
    inbox: Inbox,
    kv: KvServer,
    peers: &BTreeMap<NodeId, SocketAddr>,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let mut framed = Framed::new(stream, wire::codec());
    let first = tokio::time::timeout(HELLO_TIMEOUT, framed.next())
        .await
        .context("no hello in time")?
        .context("closed before hello")??;
    match wire::decode::<Hello>(&first)? {
        Hello::Peer { from, lease_reads } => {
            anyhow::ensure!(peers.contains_key(&from), "unknown peer {from}");
            if !may_be_peer {
                tracing::warn!(
                    "refused a connection claiming to be peer {from}: it presented no \
                     certificate of the cluster's CA"
                );
                anyhow::bail!("peer {from} without a certificate");
            }
            let _open = metrics.connection("peer");
            if inbox.lease_reads.is_some_and(|ours| ours != lease_reads) {
                // Kept open and drained rather than closed: the peer would only reconnect
                // at once, and log each time.
                let (theirs, ours) = match lease_reads {
                    true => ("with", "without"),
                    false => ("without", "with"),
                };
                tracing::error!(
                    peer = from,
                    "ignoring peer {from}: it runs {theirs} --reads lease and this node \
                     {ours}; lease reads are safe only if every node of the cluster serves \
                     them, so start them all alike"
                );
                while let Some(frame) = framed.next().await {
                    frame?;
                }
                return Ok(());
            }
            while let Some(frame) = framed.next().await {
                let msg: Message = wire::decode(&frame?)?;
                anyhow::ensure!(
                    msg.from == from,
                    "peer {from} sent a message as {}",
                    msg.from
                );
                // A full inbox drops the message, like a lossy link; Raft retries.
                let _ = inbox.tx.try_send(msg);
            }
            Ok(())
        }
        Hello::Client => {
            let _open = metrics.connection("client");
            serve_client(framed, kv, peers, metrics).await
        }
    }
}

/// Client requests on one connection run concurrently (bounded); replies go back as they
/// complete, matched by id.
async fn serve_client(
    framed: Framed<Stream, tokio_util::codec::LengthDelimitedCodec>,
    kv: KvServer,
    peers: &BTreeMap<NodeId, SocketAddr>,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let (mut sink, mut stream) = framed.split();
    let (tx, mut rx) = mpsc::channel::<ServerFrame>(CLIENT_INFLIGHT);
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            sink.feed(wire::encode(&first)).await?;
            while let Ok(next) = rx.try_recv() {
                sink.feed(wire::encode(&next)).await?;
            }
            sink.flush().await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let inflight = Arc::new(Semaphore::new(CLIENT_INFLIGHT));
    while let Some(frame) = stream.next().await {
        match wire::decode::<ClientFrame>(&frame?)? {
            ClientFrame::Request { id, op } => {
                let permit = inflight.clone().acquire_owned().await?;
                let tx = tx.clone();
                // Proposed here, in the order requests arrive, so that a client's pipelined
                // requests take their places in the log in the order it sent them.
                let reply = serve_request(&kv, metrics, op);
                tokio::spawn(async move {
                    let (reply, leader) = reply.await;
                    let _ = tx.send(ServerFrame::Reply { id, reply, leader }).await;
                    drop(permit);
                });
            }
            ClientFrame::Status { id, digest } => {
                let status = if digest {
                    status_with_digest(&kv, peers).await
                } else {
                    status(&kv, peers)
                };
                let _ = tx.send(ServerFrame::Status { id, status }).await;
            }
        }
    }
    drop(tx);
    let _ = writer.await;
    Ok(())
}

/// Proposes a client's request now and returns what waits for its reply, with the leader
/// this node knows of then; the wait is measured for metrics. Requests from the network and
/// from this process's Redis port alike.
fn serve_request(
    kv: &KvServer,
    metrics: &Metrics,
    op: kv::Op,
) -> impl std::future::Future<Output = (kv::KvReply, Option<NodeId>)> + Send + 'static {
    let duration = metrics
        .requests
        .get_or_create(&Metrics::op_label(&op.kind))
        .clone();
    let started = std::time::Instant::now();
    let proposal = kv.propose(op);
    let kv = kv.clone();
    async move {
        let reply = proposal.wait().await;
        duration.observe(started.elapsed().as_secs_f64());
        (reply, kv.raft().inspect(|r| r.leader_id()))
    }
}

/// One digest at a time per process: each reads the whole state.
static DIGESTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// The status with a digest of the state. The digest is computed from an O(1) copy of the
/// state on a blocking thread, so that neither the apply loop nor Raft waits for it.
async fn status_with_digest(kv: &KvServer, peers: &BTreeMap<NodeId, SocketAddr>) -> NodeStatus {
    let _permit = DIGESTS.acquire().await.expect("never closed");
    let (applied, image) = kv.image();
    let digest = tokio::task::spawn_blocking(move || image.digest())
        .await
        .ok();
    NodeStatus {
        applied_index: applied,
        state_digest: digest,
        ..status(kv, peers)
    }
}

pub fn status(kv: &KvServer, peers: &BTreeMap<NodeId, SocketAddr>) -> NodeStatus {
    let (id, role, term, is_leader, leader_hint, commit_index, last_index) =
        kv.raft().inspect(|r| {
            (
                r.id(),
                r.role(),
                r.term().0,
                r.is_leader(),
                r.leader_id(),
                r.log().committed().0,
                r.log().last_index().0,
            )
        });
    let role = match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::PreCandidate => "pre-candidate",
    };
    NodeStatus {
        id,
        role: role.to_string(),
        peers: peers.iter().map(|(&id, &addr)| (id, addr)).collect(),
        term,
        is_leader,
        leader_hint,
        commit_index,
        last_index,
        applied_index: kv.applied_index(),
        state_digest: None,
    }
}
