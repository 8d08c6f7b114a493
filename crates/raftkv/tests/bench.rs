//! `raftkv bench` against a real 3-node cluster: what it reports is what the cluster did.

mod common;

use common::{runtime, Cluster, TEST_LIMIT};
use std::collections::HashMap;
use std::process::Command;

/// Runs `raftkv bench` with `args` (CSV, no progress line) and returns the figures by name.
fn bench(cluster: &Cluster, args: &[&str]) -> HashMap<String, String> {
    let redis: Vec<String> = cluster.resp.iter().map(|a| a.to_string()).collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .args(["bench", "--csv", "-q", "--redis", &redis.join(",")])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run raftkv bench");
    let status = common::wait_with_limit(&mut child, TEST_LIMIT).expect("bench ends in time");
    let output = child.wait_with_output().expect("bench output");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(status.success(), "raftkv bench {args:?} failed: {output:?}");
    let mut lines = stdout.lines();
    let header = lines.next().expect("a CSV header");
    let values = lines.next().expect("a CSV line of figures");
    header
        .split(',')
        .map(String::from)
        .zip(values.split(',').map(String::from))
        .collect()
}

#[test]
fn bench_reports_the_requests_the_cluster_served() {
    let cluster = Cluster::start(3);
    let rt = runtime();
    rt.block_on(cluster.wait_for_leader());
    let put = bench(&cluster, &["-n", "3000", "--keys", "50", "--clients", "16"]);
    assert_eq!(put["workload"], "put");
    assert_eq!(put["requests"], "3000");
    assert_eq!(put["errors"], "0");
    let throughput: f64 = put["throughput"].parse().expect("a number");
    assert!(throughput > 0.0, "throughput {throughput}");
    let (p50, p99): (f64, f64) = (
        put["p50_ms"].parse().unwrap(),
        put["p99_ms"].parse().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99, "p50 {p50} ms, p99 {p99} ms");
    // The writes are there: 50 keys of 256 bytes.
    let mut clerk = cluster.clerk(1);
    let value = rt.block_on(clerk.get("00000049")).expect("read");
    assert_eq!(value, "v".repeat(256));

    // Appends grow the values by exactly what was sent.
    let args = "--workload append -n 400 --keys 1 --key-size 3 --value-size 2";
    let append = bench(&cluster, &args.split(' ').collect::<Vec<_>>());
    assert_eq!(
        (append["requests"].as_str(), append["errors"].as_str()),
        ("400", "0")
    );
    let value = rt.block_on(clerk.get("000")).expect("read");
    assert_eq!(value.len(), 800);

    // Reads, through every node, with a plot.
    let plot = cluster.dir.path().join("run.svg");
    let plot_arg = plot.to_str().expect("utf-8 path");
    let args = ["--workload", "get", "--duration", "1s", "--plot", plot_arg];
    let get = bench(&cluster, &args);
    assert_eq!(get["errors"], "0");
    assert!(get["requests"].parse::<u64>().unwrap() > 0);
    let svg = std::fs::read_to_string(&plot).expect("the plot was written");
    assert!(svg.starts_with("<svg") && svg.contains("throughput") && svg.contains("p99"));
}

#[test]
fn bench_counts_error_replies_as_errors() {
    let cluster = Cluster::start_with(3, &["--requirepass", "secret"]);
    runtime().block_on(cluster.wait_for_leader());
    // Without the password every request is refused: none may count as served.
    let refused = bench(
        &cluster,
        &["-n", "200", "--clients", "4", "--connections", "2"],
    );
    assert_eq!(
        (refused["requests"].as_str(), refused["errors"].as_str()),
        ("0", "200")
    );
    let served = bench(&cluster, &["-n", "200", "--password", "secret"]);
    assert_eq!(
        (served["requests"].as_str(), served["errors"].as_str()),
        ("200", "0")
    );
}
