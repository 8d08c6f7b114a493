//! `raftkv cluster`: a local cluster of server processes on 127.0.0.1, for trying raftkv out.
//! Each node keeps its data in `<data-dir>/node<id>`, so running the command again restarts
//! the same cluster with its data.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

pub struct ClusterOptions {
    pub nodes: u64,
    pub data_dir: PathBuf,
    pub base_port: u16,
    pub resp_base_port: u16,
}

/// The endpoints of node `id` (numbered from 1): (peer/client RPC port, Redis port).
pub fn node_ports(opts: &ClusterOptions, id: u64) -> (u16, u16) {
    let offset = (id - 1) as u16;
    (opts.base_port + offset, opts.resp_base_port + offset)
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
    println!(
        "raftkv cluster: {} nodes on 127.0.0.1, data in {}",
        opts.nodes,
        opts.data_dir.display()
    );
    let mut children: Vec<(u64, Child)> = Vec::new();
    for id in 1..=opts.nodes {
        let (rpc, resp) = node_ports(&opts, id);
        let dir = opts.data_dir.join(format!("node{id}"));
        let child = Command::new(&exe)
            .args(["server", "--id", &id.to_string(), "--peers", &peers])
            .arg("--data-dir")
            .arg(&dir)
            .args(["--resp", &format!("127.0.0.1:{resp}")])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        println!(
            "  node {id}: raftkv 127.0.0.1:{rpc}  redis 127.0.0.1:{resp}  data {}",
            dir.display()
        );
        children.push((id, child));
    }
    let first_resp = node_ports(&opts, 1).1;
    println!("Try:  redis-cli -p {first_resp} SET k v   or   raftkv get k");
    println!("Ctrl-C stops the cluster; running the command again restarts it on the same data.");

    let outcome = wait_for_stop(&mut children).await;
    stop_all(&mut children).await;
    outcome
}

/// Waits for Ctrl-C (or SIGTERM), or for a node to exit on its own (which is reported).
async fn wait_for_stop(children: &mut [(u64, Child)]) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                for (id, child) in children.iter_mut() {
                    if let Some(status) = child.try_wait()? {
                        anyhow::bail!("node {id} exited ({status}); stopping the cluster");
                    }
                }
            }
        }
    }
}

async fn stop_all(children: &mut [(u64, Child)]) {
    for (_, child) in children.iter() {
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) with a pid we own and a valid signal has no memory effects.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    for (id, child) in children.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("node {id} did not stop within 5 s; killing it");
                let _ = child.kill().await;
            }
        }
    }
    println!("cluster stopped");
}
