//! Real Redis clients against a real 3-node cluster on 127.0.0.1: redis-py 8 (RESP3, its
//! default, then RESP2, then with a password), ioredis (RESP3, its default, then RESP2) and
//! redis-benchmark. The client programs are in `tests/clients/`; each asserts what it checks
//! and exits non-zero on a failure, and its output is printed when it fails.
//!
//! A client that is not installed is skipped, with a line saying how to install it, unless
//! `RAFTKV_REQUIRE_CLIENTS=1` (as in CI), which makes a missing client a failure.

mod common;

use common::{wait_with_limit, Cluster, TEST_LIMIT};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Each client program finishes within this long, or is killed and fails its test; and every
/// test, whatever it runs, within `TEST_LIMIT` of starting its cluster.
const CLIENT_LIMIT: Duration = Duration::from_secs(60);

/// The password of the cluster that requires one.
const PASSWORD: &str = "client-check-password";

/// One cluster at a time: three nodes and a client with ten threads already fill two cores,
/// and a client starved by another test's cluster would only measure the machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    // A test that failed while holding the lock leaves nothing behind that matters here.
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients")
}

/// Reports a client that cannot run: a skip, or a failure under `RAFTKV_REQUIRE_CLIENTS=1`.
fn missing(why: &str) {
    if std::env::var("RAFTKV_REQUIRE_CLIENTS").as_deref() == Ok("1") {
        panic!("{why}; RAFTKV_REQUIRE_CLIENTS=1 requires every client");
    }
    println!("skipped: {why}");
}

/// The trimmed standard output of `program args` if it runs and succeeds within a few
/// seconds.
fn probe(program: &str, args: &[&str]) -> Option<String> {
    let out = tempfile::NamedTempFile::new().expect("temp file");
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.reopen().expect("reopen the temp file"))
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let status = wait_with_limit(&mut child, Duration::from_secs(10));
    let _ = child.wait();
    let output = std::fs::read_to_string(out.path()).unwrap_or_default();
    status
        .filter(|s| s.success())
        .map(|_| output.trim().to_string())
}

/// The version of redis-py that `python3` imports, if it is 8.
fn redis_py() -> Option<String> {
    let script = "import redis, sys; print(redis.__version__); \
                  sys.exit(redis.__version__.split('.')[0] != '8')";
    let found = probe("python3", &["-c", script]);
    if found.is_none() {
        missing(
            "redis-py 8 is not importable by python3 \
             (install with `python3 -m pip install -r tests/clients/requirements.txt`)",
        );
    }
    found
}

/// The version of ioredis installed under `tests/clients/node`, if it is there and node runs.
fn ioredis() -> Option<String> {
    if probe("node", &["--version"]).is_none() {
        missing("node is not installed (install Node.js 20 or later)");
        return None;
    }
    let package = clients_dir().join("node/node_modules/ioredis/package.json");
    let Ok(text) = std::fs::read_to_string(&package) else {
        missing(
            "tests/clients/node/node_modules has no ioredis \
             (install with `npm ci --prefix tests/clients/node`)",
        );
        return None;
    };
    let version = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|p| p["version"].as_str().map(String::from))
        .unwrap_or_else(|| "of unknown version".into());
    Some(version)
}

/// A cluster with a leader, and the instant by which its test must be done.
struct Setup {
    cluster: Cluster,
    deadline: Instant,
}

fn started_cluster(args: &[&str]) -> Setup {
    let deadline = Instant::now() + TEST_LIMIT;
    let cluster = Cluster::start_with(3, args);
    common::runtime().block_on(cluster.wait_for_leader());
    Setup { cluster, deadline }
}

fn ports(cluster: &Cluster) -> String {
    let ports: Vec<String> = cluster.resp.iter().map(|a| a.port().to_string()).collect();
    ports.join(",")
}

/// Runs a client program to its end (killed past `CLIENT_LIMIT` or the test's deadline), its
/// standard output and error in one file of the cluster's directory; fails the test with that
/// output, and the end of each node's log, unless it exits 0. Returns the output.
fn run_client(setup: &Setup, name: &str, mut command: Command) -> String {
    let cluster = &setup.cluster;
    let limit = CLIENT_LIMIT.min(setup.deadline.saturating_duration_since(Instant::now()));
    let path = cluster.dir.path().join(format!("{name}.out"));
    let out = std::fs::File::create(&path).expect("create the client's output file");
    let err = out.try_clone().expect("clone the output file");
    let start = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Python would otherwise hold back what it printed before being killed.
        .env("PYTHONUNBUFFERED", "1")
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let status = wait_with_limit(&mut child, limit);
    let _ = child.wait();
    let took = start.elapsed();
    let output = std::fs::read_to_string(&path).unwrap_or_default();
    let failure = match status {
        Some(status) if status.success() => {
            println!("{output}{name}: passed in {:.1} s", took.as_secs_f64());
            return output;
        }
        Some(status) => format!("{name} failed ({status}) after {:.1} s", took.as_secs_f64()),
        None => format!("{name} did not finish within {limit:?} and was killed"),
    };
    let logs: String = (0..cluster.n())
        .map(|i| {
            let log = cluster.log(i);
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            format!("--- the end of node {}'s log:\n{tail}\n", i + 1)
        })
        .collect();
    panic!("{failure}. Its output:\n{output}\n{logs}");
}

/// After the clients' traffic every replica has applied the same log to the same state.
fn converged(cluster: &Cluster) {
    let index = common::runtime().block_on(cluster.wait_for_convergence());
    println!("the 3 replicas hold the same state at applied index {index}");
}

fn python_check(cluster: &Cluster, extra: &[&str]) -> Command {
    let mut command = Command::new("python3");
    command
        .arg(clients_dir().join("redis_py_check.py"))
        .args(["--ports", &ports(cluster)])
        .args(extra);
    command
}

#[test]
fn redis_py_with_its_default_resp3() {
    let _one = one_at_a_time();
    let Some(version) = redis_py() else { return };
    let setup = started_cluster(&[]);
    let cluster = &setup.cluster;
    let command = python_check(cluster, &[]);
    run_client(&setup, &format!("redis-py {version} (RESP3)"), command);
    converged(cluster);
}

#[test]
fn redis_py_with_resp2() {
    let _one = one_at_a_time();
    let Some(version) = redis_py() else { return };
    let setup = started_cluster(&[]);
    let cluster = &setup.cluster;
    let command = python_check(cluster, &["--protocol", "2"]);
    run_client(&setup, &format!("redis-py {version} (RESP2)"), command);
    converged(cluster);
}

/// redis-py gives the password with `HELLO 3 AUTH` (RESP3) or `AUTH` (RESP2).
#[test]
fn redis_py_with_a_password() {
    let _one = one_at_a_time();
    let Some(version) = redis_py() else { return };
    let setup = started_cluster(&["--requirepass", PASSWORD]);
    let cluster = &setup.cluster;
    for protocol in ["3", "2"] {
        let command = python_check(
            cluster,
            &[
                "--protocol",
                protocol,
                "--password",
                PASSWORD,
                "--increments",
                "5",
            ],
        );
        let name = format!("redis-py {version} (RESP{protocol}, password)");
        run_client(&setup, &name, command);
    }
    converged(cluster);
}

fn node_check(cluster: &Cluster, extra: &[&str]) -> Command {
    let mut command = Command::new("node");
    command
        .arg(clients_dir().join("node/ioredis_check.js"))
        .args(["--ports", &ports(cluster)])
        .args(extra);
    command
}

#[test]
fn ioredis_with_its_default_resp3() {
    let _one = one_at_a_time();
    let Some(version) = ioredis() else { return };
    let setup = started_cluster(&[]);
    let cluster = &setup.cluster;
    let command = node_check(cluster, &[]);
    run_client(&setup, &format!("ioredis {version} (RESP3)"), command);
    converged(cluster);
}

#[test]
fn ioredis_with_resp2() {
    let _one = one_at_a_time();
    let Some(version) = ioredis() else { return };
    let setup = started_cluster(&[]);
    let cluster = &setup.cluster;
    let command = node_check(cluster, &["--protocol", "2"]);
    run_client(&setup, &format!("ioredis {version} (RESP2)"), command);
    converged(cluster);
}

fn redis_cli(addr: SocketAddr, args: &[&str]) -> String {
    let host = ["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()].map(String::from);
    let all: Vec<&str> = host
        .iter()
        .map(String::as_str)
        .chain(args.iter().copied())
        .collect();
    probe("redis-cli", &all).unwrap_or_else(|| panic!("redis-cli {args:?} failed"))
}

/// Fails unless redis-benchmark's CSV output has a positive rate (requests per second) for
/// every test in `tests`, and no error reply.
fn check_rates(output: &str, tests: &[&str]) {
    assert!(
        !output.contains("Error from server"),
        "redis-benchmark got an error reply:\n{output}"
    );
    let rates: Vec<(String, f64)> = output
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').map(|f| f.trim_matches('"')).collect();
            let rate = fields.get(1)?.parse::<f64>().ok()?;
            Some((fields[0].to_string(), rate))
        })
        .collect();
    for test in tests {
        let rate = rates.iter().find(|(name, _)| name == test).map(|r| r.1);
        assert!(
            rate.is_some_and(|r| r.is_finite() && r > 0.0),
            "redis-benchmark reported no rate for {test}:\n{output}"
        );
    }
}

/// redis-benchmark, plain and pipelined, completes every test without an error reply, and
/// leaves exactly the data its requests wrote: every INCR of its counter counted once,
/// values of the size it sent, and the keys of a random key space.
#[test]
fn redis_benchmark_completes_and_leaves_its_data() {
    let _one = one_at_a_time();
    let tools = ["redis-benchmark", "redis-cli"];
    if tools.iter().any(|t| probe(t, &["--version"]).is_none()) {
        missing("redis-benchmark or redis-cli is not installed (install the redis-tools package)");
        return;
    }
    let setup = started_cluster(&[]);
    let cluster = &setup.cluster;
    let [a, b, c] = [cluster.resp[0], cluster.resp[1], cluster.resp[2]];
    let tests = ["SET", "GET", "INCR", "MSET (10 keys)"];
    let benchmark = |addr: SocketAddr, requests: u32, extra: &[&str]| {
        let mut command = Command::new("redis-benchmark");
        command
            .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
            .args(["-n", &requests.to_string(), "-d", "17", "--csv"])
            .args(extra);
        command
    };

    // Without -r every request names the same key: `key:__rand_int__` for SET, GET and MSET,
    // `counter:__rand_int__` for INCR.
    let output = run_client(
        &setup,
        "redis-benchmark",
        benchmark(a, 2000, &["-t", "set,get,incr,mset"]),
    );
    check_rates(&output, &tests);
    assert_eq!(redis_cli(b, &["GET", "counter:__rand_int__"]), "2000");
    assert_eq!(redis_cli(c, &["STRLEN", "key:__rand_int__"]), "17");

    let output = run_client(
        &setup,
        "redis-benchmark -P 16",
        benchmark(b, 2000, &["-t", "set,get,incr,mset", "-P", "16"]),
    );
    check_rates(&output, &tests);
    assert_eq!(
        redis_cli(c, &["GET", "counter:__rand_int__"]),
        "4000",
        "every pipelined INCR counted once"
    );

    // 3000 SETs over 100 random keys miss one of them with a probability near 1e-11.
    let output = run_client(
        &setup,
        "redis-benchmark -r 100",
        benchmark(c, 3000, &["-t", "set", "-r", "100"]),
    );
    check_rates(&output, &["SET"]);
    assert_eq!(
        redis_cli(a, &["DBSIZE"]),
        "102",
        "100 random keys and 2 fixed"
    );
    assert_eq!(redis_cli(a, &["STRLEN", "key:000000000042"]), "17");
    assert_eq!(redis_cli(b, &["EXISTS", "key:000000000100"]), "0");
    converged(cluster);
}
