//! The client commands of the `raftkv` binary: `get`, `put`, `append`, `status`.
//!
//! Every command first asks the given endpoints for their status (all at once, briefly):
//! that tells it every node of the cluster and who leads, so one endpoint is enough and
//! requests go to the leader first; and if no endpoint answers, the command fails at once
//! with a message that says so, rather than retrying until its deadline.

use anyhow::Context;
use bytes::Bytes;
use kv::{Clerk, ClerkConfig, ClerkError, OpKind, Value};
use raftkv::client::TcpClient;
use raftkv::tls::{ClientTls, TlsFiles};
use raftkv::wire::NodeStatus;
use serde::Serialize;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The local cluster's endpoints, which the client commands use by default.
const DEFAULT_ENDPOINTS: &str = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";

/// How long a status question may take (a digest reads the whole state: longer).
const STATUS_PATIENCE: Duration = Duration::from_secs(2);
const DIGEST_PATIENCE: Duration = Duration::from_secs(30);

/// The largest value read from standard input.
const MAX_STDIN_VALUE: u64 = 64 << 20;

/// Exit code of `status` when a node is unreachable or the cluster has no leader.
pub const EXIT_UNHEALTHY: i32 = 1;

/// The exit code of `raftkv get` for a key that has no value.
pub const EXIT_MISSING: i32 = 1;

#[derive(clap::Args)]
pub struct ClientArgs {
    /// Nodes to ask, host:port,... (one is enough: it tells the others)
    /// [default: $RAFTKV_ENDPOINTS, else the local cluster's]
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Give up after this many seconds without an answer.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Speak TLS to the nodes, trusting this CA certificate (PEM).
    #[arg(long, env = "RAFTKV_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Present this certificate (PEM) to the nodes (optional for clients).
    #[arg(long, env = "RAFTKV_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "RAFTKV_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Check the nodes' certificates for this name rather than for their addresses.
    #[arg(long, env = "RAFTKV_TLS_SERVER_NAME")]
    tls_server_name: Option<String>,
}

impl ClientArgs {
    fn tls(&self) -> anyhow::Result<Option<ClientTls>> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let files = TlsFiles {
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            ca: ca.clone(),
            server_name: self.tls_server_name.clone(),
        };
        ClientTls::load(&files).map(Some)
    }
}

/// What the endpoints said about the cluster.
struct Discovery {
    /// Every answer, by the endpoint that gave it.
    answers: Vec<(String, Result<NodeStatus, String>)>,
    tls: Option<ClientTls>,
}

impl Discovery {
    /// The cluster's nodes by id, with an address for each: the one the user gave for that
    /// node if any (it is known to be reachable from here), else the one its peers use.
    fn nodes(&self) -> BTreeMap<u64, SocketAddr> {
        let mut nodes = BTreeMap::new();
        for (_, answer) in &self.answers {
            if let Ok(s) = answer {
                for &(id, addr) in &s.peers {
                    nodes.entry(id).or_insert(addr);
                }
            }
        }
        for (endpoint, answer) in &self.answers {
            if let (Ok(s), Ok(addr)) = (answer, endpoint.parse::<SocketAddr>()) {
                nodes.insert(s.id, addr);
            }
        }
        nodes
    }

    /// The leader of the highest term any node reported, if some node knows it.
    fn leader(&self) -> Option<u64> {
        self.answers
            .iter()
            .filter_map(|(_, a)| a.as_ref().ok())
            .max_by_key(|s| (s.term, s.is_leader))
            .and_then(|s| s.leader_hint)
    }

    /// A client of every node, the leader first.
    fn client(&self) -> TcpClient {
        let mut nodes: Vec<(u64, SocketAddr)> = self.nodes().into_iter().collect();
        if let Some(leader) = self.leader() {
            nodes.sort_by_key(|&(id, _)| id != leader);
        }
        TcpClient::for_cluster(nodes).with_tls(self.tls.clone())
    }
}

/// Resolves `endpoint` (host names allowed) to one address.
async fn resolve(endpoint: &str) -> Result<SocketAddr, String> {
    let mut addrs = tokio::net::lookup_host(endpoint)
        .await
        .map_err(|e| format!("cannot resolve {endpoint:?}: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{endpoint:?} resolves to no address"))
}

/// One endpoint's status, within `patience`.
async fn ask(
    endpoint: &str,
    digest: bool,
    patience: Duration,
    tls: &Option<ClientTls>,
) -> Result<NodeStatus, String> {
    let addr = resolve(endpoint).await?;
    let client = TcpClient::new(vec![addr]).with_tls(tls.clone());
    match tokio::time::timeout(patience, client.status(0, digest)).await {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer from {endpoint} within {patience:?}")),
    }
}

fn endpoints(args: &ClientArgs) -> Vec<String> {
    if !args.endpoints.is_empty() {
        return args.endpoints.clone();
    }
    std::env::var("RAFTKV_ENDPOINTS")
        .unwrap_or_else(|_| DEFAULT_ENDPOINTS.into())
        .split(',')
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect()
}

/// Asks every endpoint at once; fails if none answers.
async fn discover(args: &ClientArgs) -> anyhow::Result<Discovery> {
    let endpoints = endpoints(args);
    anyhow::ensure!(!endpoints.is_empty(), "no endpoints given");
    let tls = args.tls()?;
    let asks = endpoints.iter().map(|e| {
        let tls = &tls;
        async move { (e.clone(), ask(e, false, STATUS_PATIENCE, tls).await) }
    });
    let answers = futures::future::join_all(asks).await;
    if answers.iter().all(|(_, a)| a.is_err()) {
        let why: Vec<String> = answers
            .iter()
            .filter_map(|(_, a)| a.as_ref().err().cloned())
            .collect();
        let hint = if tls.is_none() && why.iter().any(|w| w.contains("lost")) {
            "; if the cluster speaks TLS, give --tls-ca"
        } else {
            "; is a cluster running? `raftkv cluster` starts one"
        };
        anyhow::bail!(
            "cannot reach any node at {} ({}){hint}",
            endpoints.join(","),
            why.join("; ")
        );
    }
    Ok(Discovery { answers, tls })
}

async fn clerk(args: &ClientArgs) -> anyhow::Result<Clerk<TcpClient>> {
    let discovery = discover(args).await?;
    let config = ClerkConfig {
        deadline: Some(Duration::from_secs(args.timeout)),
        first_attempt_timeout: Some(Duration::from_millis(500)),
        ..ClerkConfig::default()
    };
    Ok(Clerk::new(discovery.client(), rand::random(), config))
}

/// Closes the call's session, so that the cluster forgets it now rather than when it needs the
/// room. Best effort and brief: the answer is already printed, and eviction would do it later.
async fn close_session(mut ck: Clerk<TcpClient>) {
    let _ = tokio::time::timeout(Duration::from_secs(1), ck.close()).await;
}

/// Turns a Clerk error into a message that says what happened and what it means.
fn explain(e: ClerkError) -> anyhow::Error {
    match e {
        ClerkError::Rejected(e) => anyhow::anyhow!("refused: {e}"),
        ClerkError::Deadline { waited, last } if last.contains("wrong leader") => {
            anyhow::anyhow!(
                "no leader after {waited:.1?}: is a majority of the nodes up? \
                 (the operation may or may not have taken effect)"
            )
        }
        ClerkError::Deadline { waited, last } => anyhow::anyhow!(
            "no answer after {waited:.1?} ({last}); the operation may or may not have taken effect"
        ),
    }
}

/// A key or value given on the command line, as the bytes the shell passed (any bytes, not
/// only UTF-8).
fn arg_bytes(arg: OsString) -> Bytes {
    use std::os::unix::ffi::OsStringExt;
    Bytes::from(arg.into_vec())
}

/// A value given on the command line, or read from standard input for `-`.
fn value_arg(value: OsString) -> anyhow::Result<Bytes> {
    if value != "-" {
        return Ok(arg_bytes(value));
    }
    let mut bytes = Vec::new();
    std::io::stdin()
        .take(MAX_STDIN_VALUE + 1)
        .read_to_end(&mut bytes)
        .context("cannot read the value from standard input")?;
    anyhow::ensure!(
        bytes.len() as u64 <= MAX_STDIN_VALUE,
        "the value on standard input exceeds {MAX_STDIN_VALUE} bytes"
    );
    Ok(Bytes::from(bytes))
}

/// Prints the value of `key`. Returns the exit code: 0, or [`EXIT_MISSING`] if the key has no
/// value (which is not the same as an empty one).
pub async fn get(key: OsString, json: bool, raw: bool, args: &ClientArgs) -> anyhow::Result<i32> {
    let key = arg_bytes(key);
    let mut ck = clerk(args).await?;
    let value = ck
        .execute(OpKind::Command(kv::Command::Get(key.clone())))
        .await
        .map_err(explain)?;
    close_session(ck).await;
    let value = match value {
        Value::Bytes(value) => Some(value),
        _ => None,
    };
    let shown_key = String::from_utf8_lossy(&key);
    if json {
        let value = match &value {
            None => serde_json::json!({ "key": shown_key, "value": null }),
            Some(v) => match std::str::from_utf8(v) {
                Ok(text) => serde_json::json!({ "key": shown_key, "value": text }),
                Err(_) => serde_json::json!({ "key": shown_key, "value_hex": hex(v) }),
            },
        };
        println!("{value}");
    } else if let Some(value) = &value {
        let mut out = std::io::stdout().lock();
        out.write_all(value)?;
        if !raw {
            out.write_all(b"\n")?;
        }
        out.flush()?;
    } else {
        eprintln!("{shown_key}: no such key");
    }
    Ok(if value.is_some() { 0 } else { EXIT_MISSING })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub async fn put(key: OsString, value: OsString, args: &ClientArgs) -> anyhow::Result<()> {
    let value = value_arg(value)?;
    let mut ck = clerk(args).await?;
    let kind = OpKind::Put {
        key: arg_bytes(key),
        value,
    };
    ck.execute(kind).await.map_err(explain)?;
    println!("OK");
    close_session(ck).await;
    Ok(())
}

pub async fn append(key: OsString, value: OsString, args: &ClientArgs) -> anyhow::Result<()> {
    let value = value_arg(value)?;
    let mut ck = clerk(args).await?;
    let kind = OpKind::Append {
        key: arg_bytes(key),
        value,
    };
    ck.execute(kind).await.map_err(explain)?;
    println!("OK");
    close_session(ck).await;
    Ok(())
}

/// One node's line of `raftkv status`.
#[derive(Serialize)]
struct NodeReport {
    id: Option<u64>,
    endpoint: String,
    reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    term: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    leader: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    commit_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    applied_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_index: Option<u64>,
    /// How far its applied index is behind the leader's commit index.
    #[serde(skip_serializing_if = "Option::is_none")]
    lag: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
}

/// Prints every node's view and returns the exit code: 0 when every node answered and one
/// leader leads the highest term, [`EXIT_UNHEALTHY`] otherwise.
pub async fn status(args: &ClientArgs, digest: bool, json: bool) -> anyhow::Result<i32> {
    let discovery = discover(args).await?;
    let patience = if digest {
        DIGEST_PATIENCE
    } else {
        STATUS_PATIENCE
    };
    let nodes = discovery.nodes();
    let tls = &discovery.tls;
    let asks = nodes.iter().map(|(&id, addr)| async move {
        let endpoint = addr.to_string();
        (
            id,
            endpoint.clone(),
            ask(&endpoint, digest, patience, tls).await,
        )
    });
    let answers = futures::future::join_all(asks).await;
    let leader = answers
        .iter()
        .filter_map(|(_, _, a)| a.as_ref().ok())
        .filter(|s| s.is_leader)
        .max_by_key(|s| s.term);
    let leader_commit = leader.map(|s| s.commit_index);
    let reports: Vec<NodeReport> = answers
        .iter()
        .map(|(id, endpoint, answer)| match answer {
            Ok(s) => NodeReport {
                id: Some(s.id),
                endpoint: endpoint.clone(),
                reachable: true,
                error: None,
                role: Some(s.role.clone()),
                term: Some(s.term),
                leader: s.leader_hint,
                commit_index: Some(s.commit_index),
                applied_index: Some(s.applied_index),
                last_index: Some(s.last_index),
                lag: leader_commit.map(|c| c.saturating_sub(s.applied_index)),
                digest: s.state_digest.map(|d| format!("{d:016x}")),
            },
            Err(e) => NodeReport {
                id: Some(*id),
                endpoint: endpoint.clone(),
                reachable: false,
                error: Some(e.clone()),
                role: None,
                term: None,
                leader: None,
                commit_index: None,
                applied_index: None,
                last_index: None,
                lag: None,
                digest: None,
            },
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            print_report(r);
        }
    }
    let unreachable: Vec<String> = reports
        .iter()
        .filter(|r| !r.reachable)
        .map(|r| r.endpoint.clone())
        .collect();
    let mut problems = Vec::new();
    if !unreachable.is_empty() {
        problems.push(format!("unreachable: {}", unreachable.join(", ")));
    }
    if leader.is_none() {
        problems.push("no node says it leads".to_string());
    }
    if problems.is_empty() {
        Ok(0)
    } else {
        eprintln!("raftkv: {}", problems.join("; "));
        Ok(EXIT_UNHEALTHY)
    }
}

fn print_report(r: &NodeReport) {
    let id = r.id.map_or("?".to_string(), |id| id.to_string());
    let (Some(role), Some(term)) = (&r.role, r.term) else {
        println!(
            "node {id}  {}  unreachable ({})",
            r.endpoint,
            r.error.as_deref().unwrap_or("?")
        );
        return;
    };
    let or_dash = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    println!(
        "node {id}  {}  {role:<13} term {term}  leader {}  commit {}  applied {}  last {}  lag {}{}",
        r.endpoint,
        or_dash(r.leader),
        or_dash(r.commit_index),
        or_dash(r.applied_index),
        or_dash(r.last_index),
        or_dash(r.lag),
        r.digest
            .as_ref()
            .map_or(String::new(), |d| format!("  digest {d}"))
    );
}
