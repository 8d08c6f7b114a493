//! A cluster of real `raftkv server` processes on 127.0.0.1 for integration tests: ephemeral
//! ports, a temporary data directory, and every process killed when the cluster is dropped.

#![allow(dead_code)]

use kv::{Clerk, ClerkConfig};
use raftkv::client::TcpClient;
use raftkv::wire::NodeStatus;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Every test with real processes ends within this long.
pub const TEST_LIMIT: Duration = Duration::from_secs(90);

/// The runtime of a test with real processes: two threads, like the machine.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub rpc: Vec<SocketAddr>,
    pub resp: Vec<SocketAddr>,
    procs: Vec<Option<Child>>,
    /// Extra flags for every server.
    args: Vec<String>,
    /// Extra flags for each server.
    node_args: Vec<Vec<String>>,
    /// TLS for the test's own connections to the nodes, if they speak it.
    pub client_tls: Option<raftkv::tls::ClientTls>,
}

/// A port that was free a moment ago (the OS picks it; we release it for the server).
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr")
}

impl Cluster {
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// A cluster whose servers all get the extra flags `args`.
    pub fn start_with(n: usize, args: &[&str]) -> Cluster {
        Cluster::start_per_node(n, args, |_| Vec::new())
    }

    /// A cluster whose servers get the flags `args`, and server `i` also `node_args(i)`.
    pub fn start_per_node(
        n: usize,
        args: &[&str],
        node_args: impl Fn(usize) -> Vec<String>,
    ) -> Cluster {
        let mut cluster = Cluster {
            dir: tempfile::tempdir().expect("temp dir"),
            rpc: (0..n).map(|_| free_port()).collect(),
            resp: (0..n).map(|_| free_port()).collect(),
            procs: (0..n).map(|_| None).collect(),
            args: args.iter().map(|a| a.to_string()).collect(),
            node_args: (0..n).map(node_args).collect(),
            client_tls: None,
        };
        for i in 0..n {
            cluster.start_node(i);
        }
        cluster
    }

    pub fn n(&self) -> usize {
        self.rpc.len()
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{}", i + 1))
    }

    fn peers(&self) -> String {
        let peers: Vec<String> = self
            .rpc
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect();
        peers.join(",")
    }

    /// The command that runs node `i` (ids start at 1).
    pub fn command(&self, i: usize) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_raftkv"));
        cmd.args([
            "server",
            "--id",
            &(i + 1).to_string(),
            "--peers",
            &self.peers(),
        ])
        .arg("--data-dir")
        .arg(self.data_dir(i))
        .args(["--resp", &self.resp[i].to_string()])
        .args(&self.args)
        .args(&self.node_args[i])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        cmd
    }

    /// Starts node `i`, its log lines appended to `log_path(i)` (a pipe nobody reads would
    /// fill up and stall the node).
    pub fn start_node(&mut self, i: usize) {
        assert!(self.procs[i].is_none(), "node {i} is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("open the node's log file");
        let child = self
            .command(i)
            .stderr(log)
            .spawn()
            .expect("spawn raftkv server");
        self.procs[i] = Some(child);
    }

    /// Where node `i` writes its log lines.
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{}.log", i + 1))
    }

    /// Node `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    /// The process id of node `i`, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs[i].as_ref().map(Child::id)
    }

    /// kill -9.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.procs[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.procs[i].is_some()
    }

    pub fn client(&self) -> TcpClient {
        TcpClient::new(self.rpc.clone()).with_tls(self.client_tls.clone())
    }

    pub fn clerk(&self, client_id: u64) -> Clerk<TcpClient> {
        let config = ClerkConfig {
            deadline: Some(Duration::from_secs(20)),
            rpc_timeout: Duration::from_secs(3),
            ..ClerkConfig::default()
        };
        Clerk::new(self.client(), client_id, config)
    }

    pub async fn status(&self, i: usize) -> Option<NodeStatus> {
        self.status_of(i, false).await
    }

    /// The status of node `i`, with a digest of its state if `digest`.
    pub async fn status_of(&self, i: usize, digest: bool) -> Option<NodeStatus> {
        let client = TcpClient::new(vec![self.rpc[i]]).with_tls(self.client_tls.clone());
        tokio::time::timeout(Duration::from_secs(5), client.status(0, digest))
            .await
            .ok()?
            .ok()
    }

    /// Waits (up to 20 s) for a node that says it leads; returns its index.
    pub async fn wait_for_leader(&self) -> usize {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            for i in 0..self.n() {
                if !self.is_running(i) {
                    continue;
                }
                if let Some(s) = self.status(i).await {
                    if s.is_leader {
                        return i;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no leader within 20 s");
    }

    /// Waits (up to 20 s) until every running node has applied the same index, and checks
    /// that their states are identical.
    pub async fn wait_for_convergence(&self) -> u64 {
        let t0 = Instant::now();
        loop {
            let mut statuses = Vec::new();
            for i in (0..self.n()).filter(|&i| self.is_running(i)) {
                statuses.extend(self.status_of(i, true).await);
            }
            let running = (0..self.n()).filter(|&i| self.is_running(i)).count();
            if statuses.len() == running
                && statuses
                    .iter()
                    .all(|s| s.applied_index == statuses[0].applied_index)
            {
                for s in &statuses {
                    assert!(s.state_digest.is_some(), "node {} gave no digest", s.id);
                    assert_eq!(
                        s.state_digest, statuses[0].state_digest,
                        "replicas at applied index {} hold different states",
                        s.applied_index
                    );
                }
                return statuses[0].applied_index;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "replicas did not converge: {statuses:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.n() {
            self.kill_node(i);
        }
    }
}

/// Waits for a process to exit, up to `limit`; kills it after that.
pub fn wait_with_limit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read data dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    segments
}
