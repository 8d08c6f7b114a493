//! The `raftkv` command: run a server, a local cluster, or talk to a cluster.

use anyhow::Context;
use clap::{Parser, Subcommand};
use kv::{Clerk, ClerkConfig, ClerkError, Limits};
use raftkv::client::TcpClient;
use raftkv::cluster::{self, ClusterOptions};
use raftkv::node::{self, ServerOptions};
use raftkv::storage::{OpenError, EXIT_CORRUPT_DATA};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use std::time::Duration;

/// The local cluster's endpoints, which the client commands use by default.
const DEFAULT_ENDPOINTS: &str = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";

#[derive(Parser)]
#[command(
    name = "raftkv",
    version,
    about = "A fault-tolerant, linearizable key/value service on Raft",
    long_about = "A fault-tolerant, linearizable key/value service on Raft.\n\n\
        Start a local 3-node cluster with `raftkv cluster`, then use `raftkv put k v`, \
        `raftkv get k`, or any Redis client (`redis-cli -p 6381 GET k`)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one server node.
    Server(ServerArgs),
    /// Run a local cluster of server processes on 127.0.0.1 (Ctrl-C stops it).
    Cluster(ClusterArgs),
    /// Print the value of KEY ("" if it has none).
    Get {
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set KEY to VALUE.
    Put {
        key: String,
        value: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Append VALUE to the value of KEY.
    Append {
        key: String,
        value: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show each node's role, term and log position.
    Status {
        /// Also show a digest of each node's state (equal at equal applied indexes when the
        /// replicas agree). Reads each node's whole state, on a thread of its own.
        #[arg(long)]
        digest: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(clap::Args)]
struct ServerArgs {
    /// This node's id (a key of --peers).
    #[arg(long)]
    id: u64,
    /// Every node of the cluster, this one included: id=host:port,...
    #[arg(long, value_parser = parse_peers)]
    peers: BTreeMap<u64, SocketAddr>,
    /// Directory for the write-ahead log and hard state (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// Address to listen on for peers and clients [default: this node's --peers address].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Also serve the Redis protocol (RESP) on this address.
    #[arg(long)]
    resp: Option<SocketAddr>,
    /// Largest key accepted, in bytes.
    #[arg(long, default_value_t = 4096)]
    max_key_bytes: usize,
    /// Largest value accepted (and largest value an APPEND may grow), in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_value_bytes: usize,
    /// Snapshot the state, and drop the log it covers, once the log holds this many entries
    /// beyond the last snapshot (and --snapshot-log-percent holds). The log is kept in memory
    /// and on disk, and replayed on restart, so memory, disk and restart time grow with it;
    /// each snapshot writes the whole state.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    snapshot_entries: u64,
    /// ... but only once the log's bytes have also reached this percentage of the last
    /// snapshot's size, so that a large state is not rewritten every few thousand small
    /// writes: snapshots then write at most 100/N bytes per byte of log. 0 turns it off.
    #[arg(long, default_value_t = 50)]
    snapshot_log_percent: u64,
    /// Most client sessions remembered (each RESP connection and CLI call is one); beyond it
    /// the least recently used is forgotten, and its retried request is refused rather than
    /// applied twice.
    #[arg(long, default_value_t = kv::DEFAULT_MAX_SESSIONS as u64, value_parser = clap::value_parser!(u64).range(1..))]
    max_sessions: u64,
    /// Size of a log segment file; compaction deletes whole segments.
    #[arg(long, default_value_t = raftkv::storage::DEFAULT_SEGMENT_BYTES, value_parser = clap::value_parser!(u64).range(1024..))]
    wal_segment_bytes: u64,
}

#[derive(clap::Args)]
struct ClusterArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Where the nodes keep their data (one subdirectory per node).
    #[arg(long, default_value = "./raftkv-data")]
    data_dir: PathBuf,
    /// Port of node 1 for peers and clients; node n uses base + n - 1.
    #[arg(long, default_value_t = 7001)]
    base_port: u16,
    /// Redis-protocol port of node 1; node n uses base + n - 1.
    #[arg(long, default_value_t = 6381)]
    resp_base_port: u16,
}

#[derive(clap::Args)]
struct ClientArgs {
    /// Nodes to try, host:port,... [default: $RAFTKV_ENDPOINTS, else the local cluster's]
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<SocketAddr>,
    /// Give up after this many seconds without an answer.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

fn parse_peers(s: &str) -> Result<BTreeMap<u64, SocketAddr>, String> {
    let mut peers = BTreeMap::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("expected id=host:port, got {part:?}"))?;
        let id: u64 = id.parse().map_err(|_| format!("bad node id {id:?}"))?;
        let addr: SocketAddr = addr.parse().map_err(|_| format!("bad address {addr:?}"))?;
        if peers.insert(id, addr).is_some() {
            return Err(format!("node id {id} appears twice"));
        }
    }
    if peers.is_empty() {
        return Err("no peers given".into());
    }
    Ok(peers)
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RAFTKV_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("start the tokio runtime");
    let code = runtime.block_on(async {
        match run(cli.command).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("raftkv: {e:#}");
                if e.downcast_ref::<OpenError>().is_some() {
                    eprintln!(
                        "raftkv: refusing to start on a damaged data directory; \
                         restore it from a replica or a backup"
                    );
                    EXIT_CORRUPT_DATA
                } else {
                    1
                }
            }
        }
    });
    // Leave at once: background tasks (peer connections) need no orderly shutdown.
    std::process::exit(code);
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Server(args) => run_server(args).await,
        Command::Cluster(args) => {
            cluster::run(ClusterOptions {
                nodes: args.nodes,
                data_dir: args.data_dir,
                base_port: args.base_port,
                resp_base_port: args.resp_base_port,
            })
            .await
        }
        Command::Get { key, client } => {
            let mut ck = clerk(&client)?;
            let value = ck.get(&key).await.map_err(explain(&client))?;
            println!("{value}");
            close_session(ck).await;
            Ok(())
        }
        Command::Put { key, value, client } => {
            let mut ck = clerk(&client)?;
            ck.put(&key, &value).await.map_err(explain(&client))?;
            println!("OK");
            close_session(ck).await;
            Ok(())
        }
        Command::Append { key, value, client } => {
            let mut ck = clerk(&client)?;
            ck.append(&key, &value).await.map_err(explain(&client))?;
            println!("OK");
            close_session(ck).await;
            Ok(())
        }
        Command::Status { digest, client } => status(&client, digest).await,
    }
}

async fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let opts = ServerOptions {
        id: args.id,
        peers: args.peers,
        data_dir: args.data_dir,
        listen: args.listen,
        resp: args.resp,
        limits: Limits {
            max_key_bytes: args.max_key_bytes,
            max_value_bytes: args.max_value_bytes,
        },
        snapshot_entries: args.snapshot_entries as usize,
        snapshot_log_percent: args.snapshot_log_percent,
        max_sessions: args.max_sessions as usize,
        segment_bytes: args.wal_segment_bytes,
    };
    let server = node::start(opts).await?;
    eprintln!(
        "raftkv: node {} serving on {}{}",
        args.id,
        server.listen,
        server
            .resp
            .map(|a| format!(", redis protocol on {a}"))
            .unwrap_or_default()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    server.kv.kill();
    Ok(())
}

fn endpoints(args: &ClientArgs) -> anyhow::Result<Vec<SocketAddr>> {
    if !args.endpoints.is_empty() {
        return Ok(args.endpoints.clone());
    }
    let list = std::env::var("RAFTKV_ENDPOINTS").unwrap_or_else(|_| DEFAULT_ENDPOINTS.into());
    list.split(',')
        .map(|a| {
            a.trim()
                .parse()
                .with_context(|| format!("bad endpoint {a:?}"))
        })
        .collect()
}

fn clerk(args: &ClientArgs) -> anyhow::Result<Clerk<TcpClient>> {
    let config = ClerkConfig {
        deadline: Some(Duration::from_secs(args.timeout)),
        rpc_timeout: Duration::from_secs(3),
        ..ClerkConfig::default()
    };
    let client = TcpClient::new(endpoints(args)?);
    Ok(Clerk::new(client, rand::random(), config))
}

/// Closes the call's session, so that the cluster forgets it now rather than when it needs the
/// room. Best effort and brief: the answer is already printed, and eviction would do it later.
async fn close_session(mut ck: Clerk<TcpClient>) {
    let _ = tokio::time::timeout(Duration::from_secs(1), ck.close()).await;
}

/// Turns a Clerk error into a message that says what to do.
fn explain(args: &ClientArgs) -> impl Fn(ClerkError) -> anyhow::Error + '_ {
    move |e| match e {
        ClerkError::Rejected(e) => anyhow::anyhow!("refused: {e}"),
        ClerkError::Deadline { waited, last } => {
            let eps = endpoints(args)
                .map(|v| {
                    v.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            if last.contains("cannot connect") || last.contains("timed out") {
                anyhow::anyhow!(
                    "cannot reach any node at {eps} (is a cluster running? `raftkv cluster` starts one)"
                )
            } else if last.contains("wrong leader") {
                anyhow::anyhow!(
                    "no leader after {waited:.1?}: is a majority of the nodes at {eps} up? \
                     (the operation may or may not have taken effect)"
                )
            } else {
                anyhow::anyhow!(
                    "no answer after {waited:.1?} ({last}); the operation may or may not have taken effect"
                )
            }
        }
    }
}

async fn status(args: &ClientArgs, digest: bool) -> anyhow::Result<()> {
    let client = TcpClient::new(endpoints(args)?);
    // A digest reads the whole state: give it longer.
    let patience = Duration::from_secs(if digest { 30 } else { 2 });
    for (i, addr) in client.addrs().iter().enumerate() {
        match tokio::time::timeout(patience, client.status(i, digest)).await {
            Ok(Ok(s)) => println!(
                "{addr}: node {} {} term {} commit {} applied {} last {}{}",
                s.id,
                if s.is_leader { "leader  " } else { "follower" },
                s.term,
                s.commit_index,
                s.applied_index,
                s.last_index,
                s.state_digest
                    .map_or(String::new(), |d| format!(" digest {d:016x}"))
            ),
            Ok(Err(e)) => println!("{addr}: unreachable ({e})"),
            Err(_) => println!("{addr}: no answer"),
        }
    }
    Ok(())
}
