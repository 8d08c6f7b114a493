//! `raftkv cluster`: a local cluster of server processes on 127.0.0.1, for trying raftkv out,
//! and the supervisor that keeps it running.
//!
//! Each node keeps its data in `<data-dir>/node<id>`, so running the command again restarts
//! the same cluster with its data. The supervisor:
//!
//! - restarts a node that dies (with a backoff of 1 s, doubling up to 30 s while it keeps
//!   dying), while the others go on serving; a node that refuses to start because its data
//!   directory is damaged, unusable or in use is reported and left down;
//! - leaves a node down that was stopped by hand (`raftkv cluster stop-node N`, which marks
//!   the node's directory `STOPPED` and stops the process) until `raftkv cluster start-node N`;
//! - stops every node on SIGINT, SIGTERM or SIGHUP, and the nodes die with it if it is killed
//!   (they are started with a parent-death signal).

use crate::storage::{
    lock_data_dir, OpenError, EXIT_CORRUPT_DATA, EXIT_DATA_DIR_IN_USE, EXIT_DATA_DIR_UNUSABLE,
    LOCK_FILE,
};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

pub struct ClusterOptions {
    pub nodes: u64,
    pub data_dir: PathBuf,
    pub base_port: u16,
    pub resp_base_port: u16,
    /// Metrics port of node 1 (node n: + n - 1); 0: no metrics.
    pub metrics_base_port: u16,
    /// TLS on every port, with a throwaway CA and certificates made in `<data-dir>/tls`.
    pub tls: bool,
    /// The password Redis clients must give, if any.
    pub requirepass: Option<String>,
    /// `raftkv server --reads` of every node.
    pub reads: String,
}

/// A node stopped by hand stays down while this file is in its data directory.
const STOPPED: &str = "STOPPED";
/// Asks the supervisor to start a node now (even one it gave up on).
const START: &str = "START";

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A node that ran this long before dying is restarted after the shortest backoff again.
const STABLE_RUN: Duration = Duration::from_secs(30);
/// How often the supervisor looks at its nodes and at the markers.
const POLL: Duration = Duration::from_millis(200);

/// The endpoints of node `id` (numbered from 1): (peer/client RPC port, Redis port).
pub fn node_ports(opts: &ClusterOptions, id: u64) -> (u16, u16) {
    let offset = (id - 1) as u16;
    (opts.base_port + offset, opts.resp_base_port + offset)
}

pub fn node_dir(data_dir: &Path, id: u64) -> PathBuf {
    data_dir.join(format!("node{id}"))
}

/// One supervised node.
struct Node {
    id: u64,
    dir: PathBuf,
    command: Command,
    child: Option<Child>,
    started: Instant,
    /// Consecutive quick deaths, for the backoff.
    deaths: u32,
    /// When to start it again after a death.
    restart_at: Option<Instant>,
    /// It refused to start for a reason a restart cannot fix.
    given_up: bool,
}

impl Node {
    fn start(&mut self) -> anyhow::Result<()> {
        let child = self.command.spawn()?;
        self.child = Some(child);
        self.started = Instant::now();
        self.restart_at = None;
        Ok(())
    }

    fn marked(&self, marker: &str) -> bool {
        self.dir.join(marker).exists()
    }

    /// The node died with `status`: report it, and decide when (if ever) to start it again.
    fn died(&mut self, status: ExitStatus) {
        let id = self.id;
        if self.marked(STOPPED) {
            println!("node {id} stopped by hand (`raftkv cluster start-node {id}` starts it)");
            return;
        }
        let reason = match status.code() {
            Some(EXIT_CORRUPT_DATA) => Some("its data directory is damaged"),
            Some(EXIT_DATA_DIR_UNUSABLE) => Some("its data directory cannot be used"),
            Some(EXIT_DATA_DIR_IN_USE) => Some("its data directory is in use by another process"),
            _ => None,
        };
        if let Some(reason) = reason {
            println!(
                "node {id} cannot start: {reason} (see its messages above); leaving it down \
                 (`raftkv cluster start-node {id}` tries again)"
            );
            self.given_up = true;
            return;
        }
        if self.started.elapsed() >= STABLE_RUN {
            self.deaths = 0;
        }
        let backoff = BACKOFF_MIN
            .saturating_mul(1 << self.deaths.min(5))
            .min(BACKOFF_MAX);
        self.deaths += 1;
        println!("node {id} exited ({status}); restarting it in {backoff:?}");
        self.restart_at = Some(Instant::now() + backoff);
    }

    /// One look at the node: notice a death, honour the markers, restart when due.
    fn poll(&mut self) -> anyhow::Result<()> {
        if let Some(child) = &mut self.child {
            match child.try_wait()? {
                None => return Ok(()),
                Some(status) => {
                    self.child = None;
                    self.died(status);
                }
            }
        }
        if self.marked(START) {
            let _ = std::fs::remove_file(self.dir.join(START));
            let _ = std::fs::remove_file(self.dir.join(STOPPED));
            self.given_up = false;
            self.deaths = 0;
            println!("node {}: starting it, as asked", self.id);
            return self.start();
        }
        if self.given_up || self.marked(STOPPED) {
            return Ok(());
        }
        if self.restart_at.is_some_and(|at| Instant::now() >= at) {
            println!("node {}: restarting", self.id);
            self.start()?;
        }
        Ok(())
    }
}

pub async fn run(opts: ClusterOptions) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=9).contains(&opts.nodes),
        "--nodes must be between 1 and 9"
    );
    let exe = std::env::current_exe()?;
    let peers: Vec<String> = (1..=opts.nodes)
        .map(|id| format!("{id}=127.0.0.1:{}", node_ports(&opts, id).0))
        .collect();
    let peers = peers.join(",");
    let tls = if opts.tls {
        let dir = opts.data_dir.join("tls");
        Some(crate::tls::generate_local(&dir, opts.nodes)?)
    } else {
        None
    };
    println!(
        "raftkv cluster: {} nodes on 127.0.0.1, data in {}",
        opts.nodes,
        opts.data_dir.display()
    );
    let mut nodes = Vec::new();
    for id in 1..=opts.nodes {
        let (rpc, resp) = node_ports(&opts, id);
        let dir = node_dir(&opts.data_dir, id);
        // Markers from an earlier run: a fresh `raftkv cluster` starts every node.
        let _ = std::fs::remove_file(dir.join(STOPPED));
        let _ = std::fs::remove_file(dir.join(START));
        let mut command = Command::new(&exe);
        command
            .args(["server", "--id", &id.to_string(), "--peers", &peers])
            .arg("--data-dir")
            .arg(&dir)
            .args(["--resp", &format!("127.0.0.1:{resp}")])
            .args(["--reads", &opts.reads])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(tls) = &tls {
            let i = (id - 1) as usize;
            command
                .arg("--tls-cert")
                .arg(&tls.node_cert[i])
                .arg("--tls-key")
                .arg(&tls.node_key[i])
                .arg("--tls-ca")
                .arg(&tls.ca);
        }
        if let Some(password) = &opts.requirepass {
            // Through the environment, so that it does not show in the process list.
            command.env("RAFTKV_REQUIREPASS", password);
        }
        let metrics = if opts.metrics_base_port == 0 {
            String::new()
        } else {
            let port = opts.metrics_base_port + (id - 1) as u16;
            command.args(["--metrics-addr", &format!("127.0.0.1:{port}")]);
            format!("  metrics http://127.0.0.1:{port}/metrics")
        };
        die_with_parent(&mut command);
        println!(
            "  node {id}: raftkv 127.0.0.1:{rpc}  redis 127.0.0.1:{resp}{metrics}  data {}",
            dir.display()
        );
        let mut node = Node {
            id,
            dir,
            command,
            child: None,
            started: Instant::now(),
            deaths: 0,
            restart_at: None,
            given_up: false,
        };
        node.start()?;
        nodes.push(node);
    }
    let first_resp = node_ports(&opts, 1).1;
    match &tls {
        None => println!("Try:  redis-cli -p {first_resp} SET k v   or   raftkv get k"),
        Some(tls) => {
            let ca = tls.ca.display();
            println!(
                "TLS on every port (CA {ca}). Try:  redis-cli --tls --cacert {ca} -p {first_resp} \
                 SET k v   or   raftkv get k --tls-ca {ca}"
            );
        }
    }
    println!(
        "Watch a failover: `raftkv cluster stop-node 1` (the others elect a leader and go on \
         serving), then `raftkv cluster start-node 1` (it catches up). A node that dies is \
         restarted."
    );
    println!("Ctrl-C stops the cluster; running the command again restarts it on the same data.");

    let outcome = supervise(&mut nodes).await;
    stop_all(&mut nodes).await;
    outcome
}

/// On Linux, the node gets SIGTERM when the supervisor dies, however it dies.
fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getpid, prctl and getppid are async-signal-safe, as `pre_exec` requires.
        let parent = unsafe { libc::getpid() };
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before the prctl: then nobody would stop us.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// Keeps the nodes running until SIGINT, SIGTERM or SIGHUP.
async fn supervise(nodes: &mut [Node]) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
            _ = hangup.recv() => return Ok(()),
            _ = tokio::time::sleep(POLL) => {
                for node in nodes.iter_mut() {
                    node.poll()?;
                }
            }
        }
    }
}

async fn stop_all(nodes: &mut [Node]) {
    for child in nodes.iter().filter_map(|n| n.child.as_ref()) {
        if let Some(pid) = child.id() {
            terminate(pid);
        }
    }
    for node in nodes.iter_mut() {
        let Some(child) = &mut node.child else {
            continue;
        };
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            eprintln!("node {} did not stop within 5 s; killing it", node.id);
            let _ = child.kill().await;
        }
    }
    println!("cluster stopped");
}

fn terminate(pid: u32) {
    // SAFETY: kill(2) with a valid signal has no memory effects.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

/// `raftkv cluster stop-node ID`: marks the node `STOPPED` (so the supervisor leaves it down)
/// and stops its process, found through the pid in its data directory's lock file.
pub fn stop_node(data_dir: &Path, id: u64) -> anyhow::Result<()> {
    let dir = node_dir(data_dir, id);
    anyhow::ensure!(
        dir.is_dir(),
        "no node {id} in {} (is that the cluster's --data-dir?)",
        data_dir.display()
    );
    std::fs::write(dir.join(STOPPED), b"")?;
    match lock_data_dir(&dir) {
        Err(OpenError::InUse { pid: Some(pid), .. }) => {
            terminate(pid);
            println!("stopping node {id} (pid {pid}); the supervisor leaves it down");
        }
        Err(e) => return Err(e.into()),
        // Nobody holds the lock: it is not running. (Our lock ends when the file closes.)
        Ok(_) => println!("node {id} is not running; the supervisor leaves it down"),
    }
    Ok(())
}

/// `raftkv cluster start-node ID`: asks the supervisor to start the node.
pub fn start_node(data_dir: &Path, id: u64) -> anyhow::Result<()> {
    let dir = node_dir(data_dir, id);
    anyhow::ensure!(
        dir.is_dir(),
        "no node {id} in {} (is that the cluster's --data-dir?)",
        data_dir.display()
    );
    let _ = std::fs::remove_file(dir.join(STOPPED));
    std::fs::write(dir.join(START), b"")?;
    println!(
        "asked the supervisor to start node {id} (its pid will be in {})",
        dir.join(LOCK_FILE).display()
    );
    Ok(())
}
