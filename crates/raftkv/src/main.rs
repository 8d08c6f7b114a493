//! The `raftkv` command: run a server, a local cluster, or talk to a cluster.

use anyhow::Context;
use clap::{Parser, Subcommand};
use kv::Limits;
use raftkv::cluster::{self, ClusterOptions};
use raftkv::node::{self, ServerOptions};
use raftkv::storage::OpenError;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod cli;

use cli::ClientArgs;

const HELP_EXIT_AND_ENV: &str = "Exit codes:\n  \
        0  success\n  \
        1  failure (a client command's error; `get`: no such key; `status`: a node\n     \
           unreachable or no leader)\n  \
        2  bad usage\n  \
        3  the data directory is damaged: restore the node from a replica or a backup\n  \
        4  a write or fsync failed while running: check the disk, then restart\n  \
        5  the data directory cannot be used (permissions, read-only, full, not a directory)\n  \
        6  the data directory is in use by another process\n\n\
        Environment:\n  \
        RAFTKV_LOG           what to log, as --log-level (default info)\n  \
        RAFTKV_ENDPOINTS     nodes for the client commands, host:port,...\n  \
        RAFTKV_REQUIREPASS   the Redis password (server, cluster)\n  \
        RAFTKV_TLS_CA, RAFTKV_TLS_CERT, RAFTKV_TLS_KEY, RAFTKV_TLS_SERVER_NAME\n                       \
        TLS for the client commands";

#[derive(Parser)]
#[command(
    name = "raftkv",
    version,
    about = "A fault-tolerant, linearizable key/value service on Raft",
    long_about = "A fault-tolerant, linearizable key/value service on Raft.\n\n\
        Start a local 3-node cluster with `raftkv cluster`, then use `raftkv put k v`, \
        `raftkv get k`, or any Redis client (`redis-cli -p 6381 GET k`).",
    after_long_help = HELP_EXIT_AND_ENV
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// What to log, as a level (error, warn, info, debug, trace) or per module
    /// (`info,raftkv::transport=debug`) [default: $RAFTKV_LOG, else info].
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// How to write log lines to standard error: plain text (coloured only on a terminal) or
    /// one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run one server node.
    #[command(after_long_help = HELP_EXIT_AND_ENV)]
    Server(ServerArgs),
    /// Run a local cluster of server processes on 127.0.0.1, restarting any that dies
    /// (Ctrl-C stops it); or stop and start one of its nodes.
    Cluster(ClusterArgs),
    /// Print the value of KEY. A key with no value prints nothing and exits with 1 (an empty
    /// value prints an empty line and exits with 0).
    Get {
        key: OsString,
        /// Print {"key": ..., "value": ...}: the value as text if it is UTF-8, otherwise as
        /// "value_hex"; null for a missing key.
        #[arg(long)]
        json: bool,
        /// Write the value's bytes exactly, without a line end (for binary values).
        #[arg(long, conflicts_with = "json")]
        raw: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set KEY to VALUE (`-`: read it from standard input).
    Put {
        key: OsString,
        value: OsString,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Append VALUE to the value of KEY (`-`: read it from standard input).
    Append {
        key: OsString,
        value: OsString,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show every node's role, term, leader, log position and lag behind the leader. Exits
    /// with 1 if a node is unreachable or no node leads.
    Status {
        /// Also show a digest of each node's state (equal at equal applied indexes when the
        /// replicas agree). Reads each node's whole state, on a thread of its own.
        #[arg(long)]
        digest: bool,
        /// Print a JSON array, one object per node.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Load a cluster (or any Redis) through its Redis port, and report throughput and
    /// latency: a progress line each second, then a table (p50 to max, from HDR histograms).
    #[command(after_long_help = BENCH_EXAMPLES)]
    Bench(BenchArgs),
}

const BENCH_EXAMPLES: &str = "Examples:\n  \
        raftkv bench --requests 100000                     SET, 64 clients over 8 connections\n  \
        raftkv bench --workload get --clients 1 --connections 1 --duration 10s\n  \
        raftkv bench --clients 1000 --connections 100 --duration 60s --plot run.svg\n  \
        raftkv bench --redis 127.0.0.1:6381,127.0.0.1:6382 --workload mixed --csv";

#[derive(clap::Args)]
struct BenchArgs {
    /// Redis ports to load, host:port,...: connections go to them in turn.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:6381", value_parser = parse_addr)]
    redis: Vec<SocketAddr>,
    #[arg(long, value_enum, default_value_t = raftkv::bench::Workload::Put)]
    workload: raftkv::bench::Workload,
    /// Clients, each with one request in flight at a time.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Connections the clients share: each carries clients/connections requests at once,
    /// pipelined.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Stop after this many requests in all.
    #[arg(long, short = 'n')]
    requests: Option<u64>,
    /// Stop after this long (for example 30s or 5m), if --requests has not stopped it
    /// first [default without --requests: 10s].
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Bytes per key (a zero-padded number).
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    /// Bytes per value written.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Distinct keys, picked uniformly at random.
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// For --workload mixed: the percentage of requests that are reads.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    read_percent: u8,
    /// The password of the Redis port (AUTH), if it has one.
    #[arg(long, env = "RAFTKV_REQUIREPASS", hide_env_values = true)]
    password: Option<String>,
    /// Print the result as CSV (a header line and a line of figures).
    #[arg(long)]
    csv: bool,
    /// Draw throughput and latency over the run into this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// No progress line.
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// `host:port`, the host a name or an address.
fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .map_err(|e| format!("{s}: {e}"))?
        .next()
        .ok_or_else(|| format!("{s}: no address"))
}

/// A duration as a number and a unit: `500ms`, `30s`, `5m`, `1h` (seconds without one).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{s}: expected a duration such as 30s or 5m"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(format!("{s}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s}: {e}"))
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
    /// Largest value accepted (and largest value an APPEND may grow), in bytes. At most 4 MiB:
    /// a request (all its keys and values, or a whole transaction) travels in one log entry,
    /// which is kept under 8 MiB.
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u32).range(1..=4 << 20), |v| v as usize))]
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
    /// Serve Prometheus metrics (OpenMetrics text) at http://ADDR/metrics.
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    #[command(flatten)]
    tls: TlsArgs,
    /// Redis clients must give this password with AUTH before any other command (Redis's
    /// requirepass). Prefer the environment variable: a command line is visible to others.
    #[arg(long, env = "RAFTKV_REQUIREPASS", hide_env_values = true)]
    requirepass: Option<String>,
    /// Size of a log segment file; compaction deletes whole segments.
    #[arg(long, default_value_t = raftkv::storage::DEFAULT_SEGMENT_BYTES, value_parser = clap::value_parser!(u64).range(1024..))]
    wal_segment_bytes: u64,
    /// How the leader serves linearizable reads. read-index: it confirms with one round of
    /// heartbeats (shared by the reads waiting at that moment) that it still leads, and
    /// reads its state once that has caught up, with nothing written to the log. log: a read
    /// is a log entry like a write, fsynced by a majority. lease: read-index, but for 217 ms
    /// after a round was confirmed reads need none; this trusts clocks (no node's running
    /// more than a third faster than another's, no leader stalled for tens of ms between its
    /// lease check and its reply) and must be set on every node of the cluster: a node takes
    /// no Raft message from a peer that differs from it in this.
    #[arg(long, value_enum, default_value_t = Reads::ReadIndex)]
    reads: Reads,
    /// Microseconds a runtime thread out of work stays awake (yielding its core to any
    /// thread that can run) before it sleeps, so that a message arriving meanwhile finds it
    /// awake. Waking a sleeping thread costs tens of microseconds where idle cores halt (a
    /// virtual machine), and a request at low load crosses several threads. It costs at most
    /// this much CPU per sleep; 0 sleeps at once.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=1000))]
    idle_spin_us: u64,
    /// A deliberate bug, for the tests that must catch it.
    #[arg(long, hide = true, value_enum, default_value_t = Fault::None)]
    fault: Fault,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Reads {
    ReadIndex,
    Log,
    Lease,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Fault {
    None,
    SlowFailover,
    MixedLeaseReads,
}

#[derive(clap::Args)]
struct ClusterArgs {
    #[command(subcommand)]
    action: Option<ClusterAction>,
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Where the nodes keep their data (one subdirectory per node).
    #[arg(long, default_value = "./raftkv-data", global = true)]
    data_dir: PathBuf,
    /// Port of node 1 for peers and clients; node n uses base + n - 1.
    #[arg(long, default_value_t = 7001)]
    base_port: u16,
    /// Redis-protocol port of node 1; node n uses base + n - 1.
    #[arg(long, default_value_t = 6381)]
    resp_base_port: u16,
    /// Prometheus metrics port of node 1; node n uses base + n - 1 (0: no metrics).
    #[arg(long, default_value_t = 9101)]
    metrics_base_port: u16,
    /// TLS on every port, with a throwaway CA and certificates made in <data-dir>/tls (kept
    /// for the next run).
    #[arg(long)]
    tls: bool,
    /// Redis clients must give this password with AUTH.
    #[arg(long, env = "RAFTKV_REQUIREPASS", hide_env_values = true)]
    requirepass: Option<String>,
    /// How the nodes serve reads (see `raftkv server --help`).
    #[arg(long, value_enum, default_value_t = Reads::ReadIndex)]
    reads: Reads,
}

/// A peer address: host:port, the host a name or an IP address.
fn resolve_peer(addr: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr:?} resolves to no address"))
}

/// TLS on every port of a node (see `raftkv::tls`).
#[derive(clap::Args)]
struct TlsArgs {
    /// This node's certificate chain (PEM). With --tls-key and --tls-ca, every port speaks
    /// TLS, and only holders of a certificate signed by the CA may act as peers.
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The certificate of the CA that signs the cluster's certificates (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// Check peers' certificates for this name rather than for the address they were
    /// reached at.
    #[arg(long)]
    tls_server_name: Option<String>,
}

impl TlsArgs {
    fn files(&self) -> Option<raftkv::tls::TlsFiles> {
        let ca = self.tls_ca.clone()?;
        Some(raftkv::tls::TlsFiles {
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            ca,
            server_name: self.tls_server_name.clone(),
        })
    }
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Stop node ID of a running local cluster and keep it down (to watch a failover).
    StopNode { id: u64 },
    /// Start node ID of a running local cluster again.
    StartNode { id: u64 },
}

fn parse_peers(s: &str) -> Result<BTreeMap<u64, SocketAddr>, String> {
    let mut peers = BTreeMap::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("expected id=host:port, got {part:?}"))?;
        let id: u64 = id.parse().map_err(|_| format!("bad node id {id:?}"))?;
        let addr = resolve_peer(addr)?;
        if peers.insert(id, addr).is_some() {
            return Err(format!("node id {id} appears twice"));
        }
    }
    if peers.is_empty() {
        return Err("no peers given".into());
    }
    Ok(peers)
}

/// Logs go to standard error. `--log-level` wins over `RAFTKV_LOG`; both take the same filter
/// syntax.
fn init_logging(cli: &Cli) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let spec = cli
        .log_level
        .clone()
        .or_else(|| std::env::var("RAFTKV_LOG").ok())
        .unwrap_or_else(|| "info".to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(&spec)
        .with_context(|| format!("bad log level {spec:?}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match cli.log_format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_current_span(false).init(),
    }
    Ok(())
}

/// Called by a runtime thread about to sleep for want of work: stays awake for `limit`
/// first. The thread then sleeps in `epoll_wait` or on its condition variable; whatever
/// arrived during the spin (a socket ready, a task woken) is found there at once, with no
/// sleep and no wake-up. Each round yields the core, so a thread with work to do on the same
/// core runs rather than waits for the spin to end.
fn spin_awake(limit: Duration) {
    if limit.is_zero() {
        return;
    }
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        for _ in 0..64 {
            std::hint::spin_loop();
        }
        std::thread::yield_now();
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli) {
        eprintln!("raftkv: {e:#}");
        std::process::exit(2);
    }
    // Only a server spins: a client's threads (the CLI, `raftkv bench`) sleep at once.
    let idle_spin = match &cli.command {
        Command::Server(args) => Duration::from_micros(args.idle_spin_us),
        _ => Duration::ZERO,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(move || spin_awake(idle_spin))
        .build()
        .expect("start the tokio runtime");
    let code = runtime.block_on(async {
        match run(cli.command).await {
            Ok(()) => 0,
            Err(e) => {
                // `{:#}` prints each cause once, after its context.
                eprintln!("raftkv: {e:#}");
                match e.downcast_ref::<OpenError>() {
                    Some(open) if open.is_damage() => {
                        eprintln!(
                            "raftkv: refusing to start on a damaged data directory; \
                             restore it from a replica or a backup"
                        );
                        open.exit_code()
                    }
                    Some(open) => open.exit_code(),
                    None => 1,
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
        Command::Cluster(args) => match args.action {
            Some(ClusterAction::StopNode { id }) => cluster::stop_node(&args.data_dir, id),
            Some(ClusterAction::StartNode { id }) => cluster::start_node(&args.data_dir, id),
            None => {
                cluster::run(ClusterOptions {
                    nodes: args.nodes,
                    data_dir: args.data_dir,
                    base_port: args.base_port,
                    resp_base_port: args.resp_base_port,
                    metrics_base_port: args.metrics_base_port,
                    tls: args.tls,
                    requirepass: args.requirepass,
                    reads: clap::ValueEnum::to_possible_value(&args.reads)
                        .expect("no skipped variants")
                        .get_name()
                        .to_string(),
                })
                .await
            }
        },
        Command::Get {
            key,
            json,
            raw,
            client,
        } => {
            let code = cli::get(key, json, raw, &client).await?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Command::Put { key, value, client } => cli::put(key, value, &client).await,
        Command::Append { key, value, client } => cli::append(key, value, &client).await,
        Command::Status {
            digest,
            json,
            client,
        } => {
            let code = cli::status(&client, digest, json).await?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Command::Bench(args) => bench(args).await,
    }
}

async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let duration = match (args.requests, args.duration) {
        (None, None) => Some(Duration::from_secs(10)),
        (_, duration) => duration,
    };
    let options = raftkv::bench::BenchOptions {
        addrs: args.redis,
        workload: args.workload,
        clients: args.clients,
        connections: args.connections,
        key_size: args.key_size,
        value_size: args.value_size,
        keys: args.keys,
        read_percent: args.read_percent,
        requests: args.requests,
        duration,
        password: args.password,
        progress: !args.quiet,
        plot: args.plot,
    };
    let report = raftkv::bench::run(options).await?;
    if args.csv {
        print!("{}", report.csv());
    } else {
        print!("{}", report.table());
    }
    Ok(())
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
            ..Limits::default()
        },
        snapshot_entries: args.snapshot_entries as usize,
        snapshot_log_percent: args.snapshot_log_percent,
        max_sessions: args.max_sessions as usize,
        segment_bytes: args.wal_segment_bytes,
        metrics: args.metrics_addr,
        tls: args.tls.files(),
        requirepass: args.requirepass,
        reads: match args.reads {
            Reads::ReadIndex => kv::ReadMode::ReadIndex,
            Reads::Log => kv::ReadMode::Log,
            Reads::Lease => kv::ReadMode::Lease,
        },
        fault: match args.fault {
            Fault::None => node::ServerFault::None,
            Fault::SlowFailover => node::ServerFault::SlowFailover,
            Fault::MixedLeaseReads => node::ServerFault::MixedLeaseReads,
        },
    };
    let server = node::start(opts).await?;
    tracing::info!(
        node = args.id,
        "serving on {}{}{}",
        server.listen,
        server
            .resp
            .map(|a| format!(", redis protocol on {a}"))
            .unwrap_or_default(),
        server
            .metrics
            .map(|a| format!(", metrics on http://{a}/metrics"))
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
