//! The Redis-protocol front end of a real 3-node cluster, through a real `redis-cli` (Debian
//! package `redis-tools`) and through raw malformed input on a socket.

mod common;

use common::Cluster;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

fn redis_cli(addr: SocketAddr, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(args)
        .output()
        .expect("run redis-cli (install the redis-tools package)");
    assert!(
        output.status.success(),
        "redis-cli {args:?} failed: {output:?}"
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim_end()
        .to_string()
}

fn started_cluster() -> Cluster {
    let cluster = Cluster::start(3);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(cluster.wait_for_leader());
    cluster
}

#[test]
fn redis_cli_set_get_append_against_any_node() {
    let cluster = started_cluster();
    let [a, b, c] = [cluster.resp[0], cluster.resp[1], cluster.resp[2]];
    assert_eq!(redis_cli(a, &["PING"]), "PONG");
    assert_eq!(redis_cli(a, &["SET", "k", "v"]), "OK");
    assert_eq!(redis_cli(b, &["GET", "k"]), "v");
    assert_eq!(redis_cli(c, &["APPEND", "k", "x"]), "2");
    assert_eq!(redis_cli(a, &["GET", "k"]), "vx");
    assert_eq!(
        redis_cli(b, &["get", "k"]),
        "vx",
        "command names are case-insensitive"
    );
    assert!(redis_cli(c, &["LPUSH", "k", "v"]).contains("unknown command 'LPUSH'"));
    assert!(redis_cli(c, &["GET"]).contains("wrong number of arguments"));
    // The errors changed nothing, and the node still serves.
    assert_eq!(redis_cli(c, &["GET", "k"]), "vx");
}

#[test]
fn redis_cli_pipelined_requests_are_answered_in_order() {
    let cluster = started_cluster();
    let mut script = String::new();
    for i in 0..200 {
        script.push_str(&format!("SET key{i} value{i}\nGET key{i}\n"));
    }
    let mut child = Command::new("redis-cli")
        .args(["-p", &cluster.resp[1].port().to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run redis-cli");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write");
    let output = child.wait_with_output().expect("redis-cli output");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 400, "{text}");
    for i in 0..200 {
        assert_eq!(lines[2 * i], "OK");
        assert_eq!(lines[2 * i + 1], format!("value{i}"));
    }
}

/// Sends raw bytes on a fresh connection and returns whatever comes back before the server
/// closes the connection (or a short timeout).
fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(bytes).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn malformed_input_gets_an_error_and_changes_nothing() {
    let cluster = started_cluster();
    let addr = cluster.resp[0];
    assert_eq!(redis_cli(addr, &["SET", "k", "before"]), "OK");
    let cases: [&[u8]; 5] = [
        b"*2\r\n$3\r\nSET\r\n$-5\r\n",
        b"*1\r\n$99999999999\r\n",
        b"*abc\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n:5\r\n",
        b"*99999999\r\n",
    ];
    for case in cases {
        let reply = raw(addr, case);
        assert!(reply.starts_with("-ERR"), "{case:?} got {reply:?}");
    }
    // A 2 MiB value is refused with the limit's error, without being buffered or proposed,
    // and the same connection goes on serving.
    let big = "x".repeat(2 << 20);
    let request = format!(
        "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n{big}\r\n*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nQUIT\r\n",
        big.len()
    );
    let reply = raw(addr, request.as_bytes());
    assert_eq!(
        reply,
        "-ERR value of 2097152 bytes exceeds the limit of 1048576 bytes\r\n+PONG\r\n+OK\r\n"
    );
    // Nothing changed, and the server keeps serving other connections.
    assert_eq!(redis_cli(cluster.resp[2], &["GET", "k"]), "before");
}
