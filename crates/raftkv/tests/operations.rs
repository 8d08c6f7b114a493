//! What an operator relies on, with real processes on 127.0.0.1: the data directory lock,
//! exit codes that tell damage from I/O trouble, `raftkv status` and its exit code, the CLI
//! finding the leader from one endpoint, a node refused for differing from its peers in lease
//! reads, the metrics endpoint, and `raftkv cluster` supervising its nodes. Every test bounds
//! its run time and kills what it started.

mod common;

use common::{runtime, wait_with_limit, Cluster, TEST_LIMIT};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn raftkv() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_raftkv"));
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs a client command to completion (it must end within 30 s).
fn run(cmd: &mut Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn raftkv");
    let t0 = Instant::now();
    let out = child.wait_with_output().expect("raftkv output");
    assert!(t0.elapsed() < Duration::from_secs(30), "the command hung");
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// A server on its own, its stderr captured, that must exit within 20 s.
fn server_exit(data_dir: &Path) -> (Option<i32>, String) {
    let port = free_port();
    let mut child = raftkv()
        .args(["server", "--id", "1", "--peers", &format!("1={port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let status = wait_with_limit(&mut child, Duration::from_secs(20)).expect("it exits");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    (status.code(), stderr)
}

#[test]
fn a_second_process_on_a_data_directory_is_refused_and_changes_nothing() {
    runtime().block_on(async {
        tokio::time::timeout(TEST_LIMIT, async {
            let mut cluster = Cluster::start(3);
            cluster.wait_for_leader().await;
            let mut clerk = cluster.clerk(1);
            clerk.put("k", "before").await.expect("put");
            let applied = cluster.wait_for_convergence().await;
            let dir = cluster.data_dir(0);
            let files_before = listing(&dir);

            let (code, stderr) = server_exit(&dir);
            assert_eq!(code, Some(6), "stderr: {stderr}");
            let pid = cluster.pid(0).expect("node 1 runs");
            assert!(
                stderr.contains(&format!("is in use by pid {pid}")),
                "the message does not name the holder: {stderr}"
            );
            assert_eq!(
                listing(&dir),
                files_before,
                "the second process touched the data"
            );

            // The first goes on, and its data reads back after a restart.
            clerk.append("k", "+after").await.expect("append");
            assert!(cluster.wait_for_convergence().await > applied);
            cluster.kill_node(0);
            cluster.start_node(0);
            cluster.wait_for_convergence().await;
            assert_eq!(clerk.get("k").await.expect("get"), "before+after");
        })
        .await
        .expect("test ran past its limit");
    });
}

/// File names and sizes, except the lock file (whose content is its holder's pid).
fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry"))
        .map(|e| {
            let len = e.metadata().map_or(0, |m| m.len());
            (e.file_name().to_string_lossy().into_owned(), len)
        })
        .filter(|(name, _)| name != "LOCK")
        .collect();
    files.sort();
    files
}

#[test]
fn an_unusable_data_directory_is_an_io_error_reported_once() {
    let tmp = tempfile::tempdir().expect("tmp");
    let not_a_dir = tmp.path().join("file");
    std::fs::write(&not_a_dir, b"x").expect("write");
    let (code, stderr) = server_exit(&not_a_dir);
    assert_eq!(code, Some(5), "stderr: {stderr}");
    assert!(!stderr.contains("damaged"), "called damage: {stderr}");
    let mentions = stderr.matches("File exists").count();
    assert_eq!(mentions, 1, "the cause is not printed once: {stderr}");
}

#[test]
fn status_reports_every_node_and_fails_when_one_is_down() {
    runtime().block_on(async {
        tokio::time::timeout(TEST_LIMIT, async {
            let mut cluster = Cluster::start(3);
            let leader = cluster.wait_for_leader().await;
            // One endpoint is enough: it names the others.
            let one = cluster.rpc[(leader + 1) % 3].to_string();
            let out = run(raftkv().args(["status", "--json", "--endpoints", &one]));
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            let nodes = nodes.as_array().expect("an array");
            assert_eq!(nodes.len(), 3);
            let leader_id = leader as u64 + 1;
            for n in nodes {
                assert_eq!(n["reachable"], true, "{n}");
                assert_eq!(n["leader"], leader_id, "{n}");
                assert!(n["lag"].is_u64(), "{n}");
            }
            let leaders = nodes.iter().filter(|n| n["role"] == "leader").count();
            assert_eq!(leaders, 1);

            let down = (leader + 2) % 3;
            cluster.kill_node(down);
            let out = run(raftkv().args(["status", "--endpoints", &one]));
            assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
            assert!(
                text(&out.stderr).contains("unreachable"),
                "{}",
                text(&out.stderr)
            );
            assert!(text(&out.stdout).contains(&cluster.rpc[down].to_string()));
        })
        .await
        .expect("test ran past its limit");
    });
}

/// A cluster whose nodes 1 and 2 serve ReadIndex reads and node 3 lease reads, every node
/// also started with `args`: whether node 3 takes part, that is applies a write made through
/// the others within 2 s of its commit; and the cluster, for its logs.
async fn odd_lease_node_takes_part(args: &[&str]) -> (bool, Cluster) {
    let cluster = Cluster::start_per_node(3, args, |i| match i {
        2 => vec!["--reads".into(), "lease".into()],
        _ => Vec::new(),
    });
    let leader = cluster.wait_for_leader().await;
    cluster.clerk(1).put("k", "v").await.expect("a put");
    let committed = cluster.status(leader).await.expect("status").commit_index;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(2) {
        if cluster
            .status(2)
            .await
            .is_some_and(|s| s.applied_index >= committed)
        {
            return (true, cluster);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (false, cluster)
}

/// Lease reads are safe only if every node refuses votes as lease mode has it, so a node
/// started with another `--reads lease` setting than its peers takes no part, and says why.
#[test]
fn a_node_that_differs_from_its_peers_in_lease_reads_takes_no_part() {
    runtime().block_on(async {
        tokio::time::timeout(TEST_LIMIT, async {
            let (took_part, cluster) = odd_lease_node_takes_part(&[]).await;
            assert!(!took_part, "the node with lease reads joined the others");
            let status = cluster.status(2).await.expect("status");
            assert!(
                !status.is_leader && status.leader_hint.is_none(),
                "{status:?}"
            );
            let odd = cluster.log(2);
            assert!(
                odd.contains("ignoring peer 1: it runs without --reads lease"),
                "{odd}"
            );
            let other = cluster.log(0);
            assert!(
                other.contains("ignoring peer 3: it runs with --reads lease"),
                "{other}"
            );
        })
        .await
        .expect("test ran past its limit");
    });
}

/// Negative control: nodes that take every peer's messages (`--fault mixed-lease-reads`) let
/// the odd node join, which the check above must see.
#[test]
fn mutant_mixed_lease_reads_is_caught() {
    runtime().block_on(async {
        tokio::time::timeout(TEST_LIMIT, async {
            let (took_part, _cluster) =
                odd_lease_node_takes_part(&["--fault", "mixed-lease-reads"]).await;
            assert!(
                took_part,
                "the mutant kept the odd node out: the check cannot catch it"
            );
        })
        .await
        .expect("test ran past its limit");
    });
}

#[test]
fn the_cli_follows_the_leader_from_one_follower_and_fails_fast_when_nothing_answers() {
    runtime().block_on(async {
        tokio::time::timeout(TEST_LIMIT, async {
            let cluster = Cluster::start(3);
            let leader = cluster.wait_for_leader().await;
            let follower = format!("localhost:{}", cluster.rpc[(leader + 1) % 3].port());
            let out = run(raftkv().args(["put", "k", "v1", "--endpoints", &follower]));
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            let mut put = raftkv();
            put.args(["append", "k", "-", "--endpoints", &follower])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = put.spawn().expect("spawn");
            std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), b"+stdin")
                .expect("write stdin");
            let out = child.wait_with_output().expect("output");
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            let out = run(raftkv().args(["get", "k", "--json", "--endpoints", &follower]));
            let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            assert_eq!(got["value"], "v1+stdin");

            let nobody = free_port().to_string();
            let t0 = Instant::now();
            let out = run(raftkv().args(["get", "k", "--endpoints", &nobody]));
            assert_eq!(out.status.code(), Some(1));
            assert!(
                t0.elapsed() < Duration::from_secs(3),
                "took {:?}",
                t0.elapsed()
            );
            let stderr = text(&out.stderr);
            assert!(stderr.contains("cannot reach any node"), "{stderr}");
        })
        .await
        .expect("test ran past its limit");
    });
}

/// One sample line of the text exposition format: `name{labels} value`.
fn parse_sample(line: &str) -> Option<(String, f64)> {
    let (series, value) = line.rsplit_once(' ')?;
    let name = series.split('{').next()?.to_string();
    let ok_name = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    let labels_ok = !series.contains('{') || series.ends_with('}');
    (ok_name && labels_ok).then_some(())?;
    Some((name, value.parse().ok()?))
}

#[test]
fn the_metrics_endpoint_serves_the_listed_metrics() {
    runtime().block_on(async {
        tokio::time::timeout(TEST_LIMIT, async {
            let metrics: Vec<SocketAddr> = (0..3).map(|_| free_port()).collect();
            let cluster = Cluster::start_per_node(3, &[], |i| {
                vec!["--metrics-addr".into(), metrics[i].to_string()]
            });
            let leader = cluster.wait_for_leader().await;
            let mut clerk = cluster.clerk(3);
            for i in 0..20 {
                clerk.put(&format!("k{i}"), "v").await.expect("put");
            }
            let body = http_get(metrics[leader], "/metrics").await;
            let mut samples = std::collections::BTreeMap::new();
            for line in body.lines() {
                if line.starts_with('#') || line.is_empty() {
                    continue;
                }
                let (name, value) =
                    parse_sample(line).unwrap_or_else(|| panic!("bad sample line {line:?}"));
                samples.insert(name, value);
            }
            assert!(body.trim_end().ends_with("# EOF"), "not OpenMetrics text");
            for name in [
                "raftkv_server_has_leader",
                "raftkv_server_is_leader",
                "raftkv_server_leader_changes_seen_total",
                "raftkv_server_term",
                "raftkv_server_commit_index",
                "raftkv_server_applied_index",
                "raftkv_server_apply_lag_entries",
                "raftkv_server_proposals_committed_total",
                "raftkv_server_proposals_failed_total",
                "raftkv_server_proposals_pending",
                "raftkv_server_client_sessions",
                "raftkv_server_connections",
                "raftkv_disk_wal_fsync_duration_seconds_count",
                "raftkv_server_request_duration_seconds_count",
                "raftkv_snapshot_size_bytes",
                "raftkv_snapshot_save_duration_seconds_count",
            ] {
                assert!(samples.contains_key(name), "{name} missing from\n{body}");
            }
            assert_eq!(samples["raftkv_server_has_leader"], 1.0);
            assert_eq!(samples["raftkv_server_is_leader"], 1.0);
            assert!(samples["raftkv_server_proposals_committed_total"] >= 20.0);
            assert!(samples["raftkv_disk_wal_fsync_duration_seconds_count"] >= 1.0);
            assert!(body.contains("raftkv_server_request_duration_seconds_count{op=\"put\"}"));
            let missing = http_get(metrics[leader], "/nothing").await;
            assert!(missing.contains("try /metrics"));
        })
        .await
        .expect("test ran past its limit");
    });
}

/// A plain HTTP/1.1 GET; returns the body.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (_, body) = response.split_once("\r\n\r\n").expect("a response");
    body.to_string()
}

/// Three consecutive free ports (the local cluster numbers its nodes' ports from a base).
fn free_port_run() -> u16 {
    for _ in 0..100 {
        let base = free_port().port();
        if base > 65000 {
            continue;
        }
        let free = (0..3).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no run of three free ports");
}

fn pid_of(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("LOCK"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

#[test]
fn the_local_cluster_restarts_a_killed_node_and_stops_everything_on_sighup() {
    runtime().block_on(async {
        tokio::time::timeout(TEST_LIMIT, async {
            let data = tempfile::tempdir().expect("tmp");
            let (rpc, resp) = (free_port_run(), free_port_run());
            let mut supervisor = raftkv()
                .args(["cluster", "--metrics-base-port", "0"])
                .arg("--data-dir")
                .arg(data.path())
                .args(["--base-port", &rpc.to_string()])
                .args(["--resp-base-port", &resp.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn the cluster");
            let endpoints: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", rpc + i)).collect();
            let endpoints = endpoints.join(",");
            let healthy = || {
                let out = run(raftkv().args(["status", "--endpoints", &endpoints]));
                out.status.code() == Some(0)
            };
            wait_until(healthy, "the cluster to come up").await;
            let node2 = data.path().join("node2");
            let pid = pid_of(&node2).expect("node 2's pid");
            // SAFETY: kill(2) on a process of our cluster.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            // The others go on taking writes meanwhile.
            let out = run(raftkv().args(["put", "k", "during", "--endpoints", &endpoints]));
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            wait_until(
                || pid_of(&node2).is_some_and(|p| p != pid && alive(p)) && healthy(),
                "node 2 to be restarted",
            )
            .await;

            let pids: Vec<u32> = (1..=3)
                .map(|i| pid_of(&data.path().join(format!("node{i}"))).expect("pid"))
                .collect();
            // SAFETY: as above, on the supervisor.
            unsafe { libc::kill(supervisor.id() as libc::pid_t, libc::SIGHUP) };
            let status = wait_with_limit(&mut supervisor, Duration::from_secs(15));
            assert!(status.is_some(), "the supervisor did not stop on SIGHUP");
            wait_until(
                || pids.iter().all(|&p| !alive(p)),
                "every node to stop with the supervisor",
            )
            .await;
            let mut output = String::new();
            std::io::Read::read_to_string(&mut supervisor.stdout.take().expect("out"), &mut output)
                .expect("read");
            assert!(output.contains("node 2 exited"), "{output}");
            assert!(output.contains("cluster stopped"), "{output}");
        })
        .await
        .expect("test ran past its limit");
    });
}

async fn wait_until(mut done: impl FnMut() -> bool, what: &str) {
    let t0 = Instant::now();
    while !done() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "waited 30 s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
