//! Prometheus metrics of one node, served as OpenMetrics text on `--metrics-addr`
//! (`GET /metrics`). Names follow etcd's where one exists (`etcd_server_has_leader` is
//! `raftkv_server_has_leader` here); durations are in seconds, sizes in bytes.
//!
//! Two kinds: histograms and connection gauges that the code paths update as they go (WAL
//! fsyncs, requests, snapshots), and the Raft and key/value state, read from the node at each
//! scrape (term, indexes, leader, proposals, sessions).

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use kv::KvServer;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use tokio::net::TcpListener;

/// Labels of a request histogram: the operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: &'static str,
}

/// Labels of the connection gauge: what the connections carry.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// The metrics the code paths update. Cheap to clone (every handle shares the values).
#[derive(Clone, Debug)]
pub struct Metrics {
    /// `raftkv_disk_wal_fsync_duration_seconds`, etcd's `etcd_disk_wal_fsync_duration_seconds`.
    pub wal_fsync: Histogram,
    /// `raftkv_snapshot_save_duration_seconds`: writing a snapshot to its file, fsync included.
    pub snapshot_save: Histogram,
    /// `raftkv_snapshot_size_bytes`: the current snapshot.
    pub snapshot_size: Gauge,
    /// `raftkv_server_request_duration_seconds{op}`: a client request, from its arrival at
    /// this node to its reply (commit and apply included).
    pub requests: Family<OpLabel, Histogram>,
    /// `raftkv_server_connections{kind}`: open peer, client and Redis connections.
    pub connections: Family<KindLabel, Gauge>,
}

fn latency_buckets() -> Histogram {
    // 0.1 ms to about 13 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            wal_fsync: latency_buckets(),
            snapshot_save: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            snapshot_size: Gauge::default(),
            requests: Family::new_with_constructor(latency_buckets),
            connections: Family::default(),
        }
    }
}

impl Metrics {
    /// The operation's label for the request histogram.
    pub fn op_label(kind: &kv::OpKind) -> OpLabel {
        OpLabel { op: kind.name() }
    }

    /// Counts a connection of `kind` open until the returned guard is dropped.
    pub fn connection(&self, kind: &'static str) -> ConnectionGuard {
        let gauge = self.connections.get_or_create(&KindLabel { kind }).clone();
        gauge.inc();
        ConnectionGuard(gauge)
    }

    /// Connections of `kind` open now.
    pub fn connections_open(&self, kind: &'static str) -> u64 {
        let open = self.connections.get_or_create(&KindLabel { kind }).get();
        u64::try_from(open).unwrap_or(0)
    }
}

/// Decrements the connection gauge when the connection ends.
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What is read from the node at each scrape.
struct NodeCollector {
    kv: Arc<OnceLock<KvServer>>,
}

impl std::fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeCollector")
    }
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(kv) = self.kv.get() else {
            return Ok(());
        };
        let (term, is_leader, has_leader, commit, last) = kv.raft().inspect(|r| {
            (
                r.term().0,
                r.is_leader(),
                r.leader_id().is_some(),
                r.log().committed().0,
                r.log().last_index().0,
            )
        });
        let applied = kv.applied_index();
        let stats = kv.stats();
        let mut gauge = |name: &str, help: &str, value: i64| -> Result<(), std::fmt::Error> {
            let metric = ConstGauge::new(value);
            let e = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
            metric.encode(e)
        };
        let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        gauge(
            "server_has_leader",
            "Whether this node knows a leader (1) or not (0).",
            has_leader as i64,
        )?;
        gauge(
            "server_is_leader",
            "Whether this node is the leader.",
            is_leader as i64,
        )?;
        gauge("server_term", "The node's current Raft term.", i(term))?;
        gauge(
            "server_commit_index",
            "The highest log index known to be committed.",
            i(commit),
        )?;
        gauge(
            "server_applied_index",
            "The highest log index applied to the key/value state.",
            i(applied),
        )?;
        gauge(
            "server_last_index",
            "The index of the last entry in the node's log.",
            i(last),
        )?;
        gauge(
            "server_apply_lag_entries",
            "Committed entries not yet applied.",
            i(commit.saturating_sub(applied)),
        )?;
        gauge(
            "server_proposals_pending",
            "Client requests proposed here and waiting for their entry.",
            i(stats.proposals_pending),
        )?;
        gauge(
            "server_client_sessions",
            "Open client sessions in the replicated session table.",
            i(stats.sessions),
        )?;
        gauge("server_keys", "Keys in the key/value state.", i(stats.keys))?;
        let mut counter = |name: &str, help: &str, value: u64| -> Result<(), std::fmt::Error> {
            let metric = ConstCounter::new(value);
            let e = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
            metric.encode(e)
        };
        counter(
            "server_leader_changes_seen",
            "Times this node saw a new leader (itself included).",
            kv.raft().leader_changes(),
        )?;
        counter(
            "server_proposals_committed",
            "Client requests proposed here that were committed and applied.",
            stats.proposals_committed,
        )?;
        counter(
            "server_proposals_failed",
            "Client requests proposed here that were given up on (leadership lost, time-out).",
            stats.proposals_failed,
        )?;
        Ok(())
    }
}

/// A registry of every metric of the node, and the hook through which the node's state is
/// read once the node runs.
pub struct MetricsRegistry {
    registry: Registry,
    node: Arc<OnceLock<KvServer>>,
}

impl MetricsRegistry {
    pub fn new(metrics: &Metrics) -> MetricsRegistry {
        let mut registry = Registry::with_prefix("raftkv");
        registry.register_with_unit(
            "disk_wal_fsync_duration",
            "Time to fsync a batch of WAL records",
            Unit::Seconds,
            metrics.wal_fsync.clone(),
        );
        registry.register_with_unit(
            "snapshot_save_duration",
            "Time to write a snapshot to its file, fsync included",
            Unit::Seconds,
            metrics.snapshot_save.clone(),
        );
        registry.register_with_unit(
            "snapshot_size",
            "Size of the current snapshot",
            Unit::Bytes,
            metrics.snapshot_size.clone(),
        );
        registry.register_with_unit(
            "server_request_duration",
            "Client requests by operation, from arrival to reply",
            Unit::Seconds,
            metrics.requests.clone(),
        );
        registry.register(
            "server_connections",
            "Open connections by kind (peer, client, redis)",
            metrics.connections.clone(),
        );
        let node = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(NodeCollector { kv: node.clone() }));
        MetricsRegistry { registry, node }
    }

    /// From now on, scrapes read the state of `kv`.
    pub fn attach(&self, kv: KvServer) {
        let _ = self.node.set(kv);
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String");
        text
    }
}

/// Serves `GET /metrics` (and nothing else) on `listener` until the process ends.
pub async fn serve(listener: TcpListener, registry: Arc<MetricsRegistry>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("metrics accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let registry = registry.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&registry, &req)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(%peer, "metrics connection failed: {e}");
            }
        });
    }
}

fn respond(
    registry: &MetricsRegistry,
    req: &Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&hyper::Method::GET, "/metrics") => (
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            registry.render(),
        ),
        (&hyper::Method::GET, _) => (404, "text/plain", "try /metrics\n".to_string()),
        _ => (405, "text/plain", "only GET\n".to_string()),
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

/// Binds the metrics listener.
pub async fn listen(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics"))
}
