//! The Redis-protocol front end over in-memory connections, with a Clerk whose "cluster" is a
//! single local state machine.

use kv::{Clerk, ClerkConfig, ClientTransport, KvReply, KvStateMachine, Limits, Op, RpcError};
use raftkv::resp::{serve, serve_connection, RespLimits, RespOptions};
use std::future::Future;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// Applies every operation straight to a shared state machine, checking limits first as a
/// server does.
#[derive(Clone)]
struct Local {
    sm: Arc<Mutex<KvStateMachine>>,
    limits: Limits,
    applied: Arc<std::sync::atomic::AtomicU64>,
    /// Requests sent before an earlier one was answered.
    pipelined: Arc<std::sync::atomic::AtomicU64>,
    in_flight: Arc<std::sync::atomic::AtomicU64>,
}

impl ClientTransport for Local {
    fn servers(&self) -> usize {
        1
    }

    fn call(
        &self,
        _server: usize,
        op: Op,
    ) -> impl Future<Output = Result<KvReply, RpcError>> + Send {
        // Each call is answered one scheduling round later, so that a request sent before an
        // earlier one was answered finds it in flight. Calls started together are applied in
        // the order they started.
        if self.in_flight.fetch_add(1, SeqCst) > 0 {
            self.pipelined.fetch_add(1, SeqCst);
        }
        let local = self.clone();
        async move {
            tokio::task::yield_now().await;
            let reply = match local.limits.check(&op.kind) {
                Ok(()) => {
                    // The log index the entry would have: sessions age by it.
                    let index = local.applied.fetch_add(1, SeqCst) + 1;
                    local.sm.lock().unwrap().apply(index, &op)
                }
                Err(e) => Err(e),
            };
            local.in_flight.fetch_sub(1, SeqCst);
            Ok(reply)
        }
    }
}

/// A transport over which no call ever succeeds.
struct Unreachable;

impl ClientTransport for Unreachable {
    fn servers(&self) -> usize {
        3
    }

    fn call(
        &self,
        _server: usize,
        _op: Op,
    ) -> impl Future<Output = Result<KvReply, RpcError>> + Send {
        std::future::ready(Err(RpcError("connection refused".into())))
    }
}

struct Service {
    local: Local,
    next_client: u64,
}

impl Service {
    fn new(limits: Limits) -> Service {
        Service {
            local: Local {
                sm: Arc::new(Mutex::new(KvStateMachine::new(
                    limits,
                    kv::DEFAULT_MAX_SESSIONS,
                ))),
                limits,
                applied: Arc::default(),
                pipelined: Arc::default(),
                in_flight: Arc::default(),
            },
            next_client: 1,
        }
    }

    fn clerk(&mut self) -> Clerk<Local> {
        self.next_client += 1;
        Clerk::new(self.local.clone(), self.next_client, ClerkConfig::default())
    }

    fn connect(&mut self, limits: RespLimits) -> (DuplexStream, JoinHandle<()>) {
        self.connect_with_password(limits, None)
    }

    fn connect_with_password(
        &mut self,
        limits: RespLimits,
        password: Option<&str>,
    ) -> (DuplexStream, JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(64 << 10);
        let password = password.map(Arc::from);
        let task = tokio::spawn(serve_connection(
            server,
            self.clerk(),
            limits,
            password,
            None,
        ));
        (client, task)
    }

    /// A connection whose Clerk has the id `client_id`.
    fn connect_as(&mut self, client_id: u64) -> (DuplexStream, JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(64 << 10);
        let clerk = Clerk::new(self.local.clone(), client_id, ClerkConfig::default());
        let limits = RespLimits::default();
        let task = tokio::spawn(serve_connection(server, clerk, limits, None, None));
        (client, task)
    }

    fn peek(&self, key: &str) -> Option<String> {
        let value = self.local.sm.lock().unwrap().peek(key.as_bytes());
        value.map(|v| String::from_utf8(v.to_vec()).unwrap())
    }
}

fn request(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn cmd(args: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    request(&args)
}

fn bulk(value: &str) -> String {
    format!("${}\r\n{value}\r\n", value.len())
}

async fn read_line<R: AsyncRead + Unpin>(r: &mut R) -> Vec<u8> {
    let mut line = Vec::new();
    while !line.ends_with(b"\r\n") {
        line.push(r.read_u8().await.expect("the connection closed mid-reply"));
    }
    line
}

/// Reads one complete reply, in its wire form.
async fn read_reply<R: AsyncRead + Unpin>(r: &mut R) -> String {
    let mut raw = Vec::new();
    // Elements still to read, for nested arrays.
    let mut pending = 1usize;
    while pending > 0 {
        pending -= 1;
        let line = read_line(r).await;
        let n: i64 = std::str::from_utf8(&line[1..line.len() - 2])
            .unwrap_or("")
            .parse()
            .unwrap_or(-1);
        raw.extend_from_slice(&line);
        match line[0] {
            b'$' if n >= 0 => {
                let mut body = vec![0; n as usize + 2];
                r.read_exact(&mut body).await.unwrap();
                raw.extend_from_slice(&body);
            }
            b'*' if n > 0 => pending += n as usize,
            b'%' if n > 0 => pending += 2 * n as usize,
            _ => {}
        }
    }
    // Binary values come back as they are; tests compare them in this lossy form.
    String::from_utf8_lossy(&raw).into_owned()
}

/// Sends `input` and returns the next reply.
async fn call(client: &mut DuplexStream, input: &[u8]) -> String {
    client.write_all(input).await.unwrap();
    timeout(WAIT, read_reply(client)).await.expect("no reply")
}

async fn read_to_end(client: &mut DuplexStream) -> String {
    let mut out = Vec::new();
    timeout(WAIT, client.read_to_end(&mut out))
        .await
        .expect("the connection stayed open")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

async fn finished(task: JoinHandle<()>) {
    timeout(WAIT, task)
        .await
        .expect("the connection task kept running")
        .unwrap();
}

#[tokio::test]
async fn set_get_append_round_trip() {
    let mut service = Service::new(Limits::default());
    let (mut c, _task) = service.connect(RespLimits::default());
    assert_eq!(call(&mut c, &cmd(&["SET", "k", "hello"])).await, "+OK\r\n");
    assert_eq!(call(&mut c, &cmd(&["GET", "k"])).await, bulk("hello"));
    assert_eq!(
        call(&mut c, &cmd(&["APPEND", "k", " world"])).await,
        ":11\r\n"
    );
    assert_eq!(call(&mut c, &cmd(&["GET", "k"])).await, bulk("hello world"));
    assert_eq!(service.peek("k").as_deref(), Some("hello world"));
    // A missing key reads as null, an empty value as the empty string.
    assert_eq!(call(&mut c, &cmd(&["GET", "missing"])).await, "$-1\r\n");
    assert_eq!(call(&mut c, &cmd(&["SET", "empty", ""])).await, "+OK\r\n");
    assert_eq!(call(&mut c, &cmd(&["GET", "empty"])).await, "$0\r\n\r\n");
    assert_eq!(
        call(&mut c, &cmd(&["APPEND", "new", "abc"])).await,
        ":3\r\n"
    );
    // Names are case-insensitive; keys are not.
    assert_eq!(call(&mut c, &cmd(&["set", "K", "upper"])).await, "+OK\r\n");
    assert_eq!(call(&mut c, &cmd(&["gEt", "K"])).await, bulk("upper"));
    assert_eq!(call(&mut c, &cmd(&["GET", "k"])).await, bulk("hello world"));
    // Values are binary-safe on the wire, so CR LF inside one is kept.
    assert_eq!(
        call(&mut c, &cmd(&["SET", "crlf", "a\r\nb"])).await,
        "+OK\r\n"
    );
    assert_eq!(call(&mut c, &cmd(&["GET", "crlf"])).await, bulk("a\r\nb"));
}

#[tokio::test]
async fn inline_commands_work() {
    let mut service = Service::new(Limits::default());
    let (mut c, _task) = service.connect(RespLimits::default());
    assert_eq!(call(&mut c, b"PING\r\n").await, "+PONG\r\n");
    assert_eq!(
        call(&mut c, b"set greeting \"hi there\"\n").await,
        "+OK\r\n"
    );
    assert_eq!(call(&mut c, b"get greeting\r\n").await, bulk("hi there"));
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let mut service = Service::new(Limits::default());
    let (mut c, _task) = service.connect(RespLimits::default());
    let mut input = Vec::new();
    let mut expected = String::new();
    for i in 0..100 {
        let value = format!("value-{i}");
        input.extend(cmd(&["SET", &format!("key-{i}"), &value]));
        input.extend(cmd(&["GET", &format!("key-{i}")]));
        expected.push_str("+OK\r\n");
        expected.push_str(&bulk(&value));
    }
    c.write_all(&input).await.unwrap();
    let mut replies = String::new();
    for _ in 0..200 {
        replies.push_str(&timeout(WAIT, read_reply(&mut c)).await.unwrap());
    }
    assert_eq!(replies, expected);
}

#[tokio::test]
async fn pipelined_data_commands_are_sent_together_and_others_keep_their_place() {
    let mut service = Service::new(Limits::default());
    let (mut c, _task) = service.connect(RespLimits::default());
    let mut input = Vec::new();
    let mut expected = String::new();
    for i in 0..10 {
        input.extend(cmd(&["INCR", "n"]));
        expected.push_str(&format!(":{}\r\n", i + 1));
    }
    // A connection command and a transaction run on their own, between the pipelines.
    for (request, reply) in [
        (&["PING"][..], "+PONG\r\n"),
        (&["MULTI"], "+OK\r\n"),
        (&["INCR", "n"], "+QUEUED\r\n"),
        (&["EXEC"], "*1\r\n:11\r\n"),
    ] {
        input.extend(cmd(request));
        expected.push_str(reply);
    }
    for _ in 0..10 {
        input.extend(cmd(&["GET", "n"]));
        expected.push_str(&bulk("11"));
    }
    c.write_all(&input).await.unwrap();
    let mut replies = String::new();
    for _ in 0..24 {
        replies.push_str(&timeout(WAIT, read_reply(&mut c)).await.unwrap());
    }
    assert_eq!(replies, expected);
    // In each run of ten, all but the first went before the first was answered.
    let pipelined = service.local.pipelined.load(SeqCst);
    assert_eq!(
        pipelined, 18,
        "requests sent while an earlier one was in flight"
    );
}

#[tokio::test]
async fn a_long_pipeline_is_answered_while_it_is_still_being_sent() {
    let mut service = Service::new(Limits::default());
    let (c, _task) = service.connect(RespLimits::default());
    let (mut rd, mut wr) = tokio::io::split(c);
    let value = "v".repeat(100);
    let n = 5_000;
    let mut input = Vec::new();
    for i in 0..n {
        input.extend(cmd(&["APPEND", "log", "x"]));
        input.extend(cmd(&["SET", &format!("key-{i}"), &value]));
        input.extend(cmd(&["GET", &format!("key-{i}")]));
    }
    // Far more than the pipe holds: the writer can finish only if replies are read meanwhile.
    let writer = tokio::spawn(async move { wr.write_all(&input).await.unwrap() });
    for i in 0..n {
        assert_eq!(read_reply(&mut rd).await, format!(":{}\r\n", i + 1));
        assert_eq!(read_reply(&mut rd).await, "+OK\r\n");
        assert_eq!(read_reply(&mut rd).await, bulk(&value));
    }
    timeout(WAIT, writer).await.unwrap().unwrap();
}

#[tokio::test]
async fn unknown_commands_and_wrong_arity_are_errors_and_the_connection_goes_on() {
    let mut service = Service::new(Limits::default());
    let (mut c, _task) = service.connect(RespLimits::default());
    assert_eq!(
        call(&mut c, &cmd(&["LPUSH", "k", "v"])).await,
        "-ERR unknown command 'LPUSH', with args beginning with: 'k' 'v' \r\n"
    );
    assert_eq!(
        call(&mut c, &cmd(&["GET"])).await,
        "-ERR wrong number of arguments for 'get' command\r\n"
    );
    assert_eq!(
        call(&mut c, &cmd(&["get", "a", "b"])).await,
        "-ERR wrong number of arguments for 'get' command\r\n"
    );
    assert_eq!(
        call(&mut c, &cmd(&["SET", "k"])).await,
        "-ERR wrong number of arguments for 'set' command\r\n"
    );
    assert_eq!(
        call(&mut c, &cmd(&["APPEND", "k", "v", "w"])).await,
        "-ERR wrong number of arguments for 'append' command\r\n"
    );
    assert_eq!(
        call(&mut c, &cmd(&["SET", "k", "v", "EX", "10"])).await,
        "-ERR SET option 'EX' is not supported: keys do not expire\r\n"
    );
    assert_eq!(
        call(&mut c, &cmd(&["SET", "k", "v", "bogus"])).await,
        "-ERR syntax error\r\n"
    );
    assert_eq!(service.peek("k"), None);
    // A name that could break the reply line is quoted harmlessly.
    assert_eq!(
        call(&mut c, &request(&[b"BAD\r\nNAME"])).await,
        "-ERR unknown command 'BAD  NAME', with args beginning with: \r\n"
    );
    assert_eq!(call(&mut c, &cmd(&["PING"])).await, "+PONG\r\n");
}

#[tokio::test]
async fn handshake_and_housekeeping_commands() {
    let mut service = Service::new(Limits::default());
    let (mut c, _task) = service.connect(RespLimits::default());
    let cases: &[(&[&str], &str)] = &[
        (&["HELLO", "4"], "-NOPROTO unsupported protocol version\r\n"),
        (&["COMMAND", "DOCS"], "*0\r\n"),
        (&["COMMAND"], "*0\r\n"),
        (&["COMMAND", "COUNT"], ":44\r\n"),
        (&["CLIENT", "GETNAME"], "$-1\r\n"),
        (&["CONFIG", "GET", "save"], "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"),
        (
            &["CONFIG", "GET", "appendonly"],
            "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
        ),
        (&["CONFIG", "GET", "maxmemory"], "*0\r\n"),
        (
            &["config", "get", "appendonly"],
            "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
        ),
        (
            &["CONFIG", "SET", "save", ""],
            "-ERR unknown subcommand 'SET' for 'config'\r\n",
        ),
        (&["CLIENT", "SETNAME", "bench"], "+OK\r\n"),
        (&["CLIENT", "GETNAME"], "$5\r\nbench\r\n"),
        (
            &["CLIENT", "SETNAME", "two words"],
            "-ERR Client names cannot contain spaces, newlines or special characters.\r\n",
        ),
        (&["CLIENT", "SETINFO", "lib-name", "redis-py"], "+OK\r\n"),
        (
            &["CLIENT", "KILL", "x"],
            "-ERR unknown subcommand 'KILL' for 'client'\r\n",
        ),
        (&["SELECT", "0"], "+OK\r\n"),
        (&["SELECT", "1"], "-ERR DB index is out of range\r\n"),
        (
            &["SELECT", "x"],
            "-ERR value is not an integer or out of range\r\n",
        ),
        (&["PING", "hello"], "$5\r\nhello\r\n"),
        (&["ECHO", ""], "$0\r\n\r\n"),
    ];
    for (args, expected) in cases {
        assert_eq!(call(&mut c, &cmd(args)).await, *expected, "{args:?}");
    }
    let info = call(&mut c, &cmd(&["INFO"])).await;
    assert!(info.starts_with('$'), "{info}");
    assert!(info.contains("redis_version:"), "{info}");
}

#[tokio::test]
async fn a_protocol_error_is_answered_then_the_connection_closes() {
    let mut service = Service::new(Limits::default());
    let (mut c, task) = service.connect(RespLimits::default());
    // Requests before the bad one are still answered; those after it are never run.
    let mut input = cmd(&["SET", "before", "1"]);
    input.extend_from_slice(b"*1\r\n:5\r\n");
    input.extend(cmd(&["SET", "after", "1"]));
    c.write_all(&input).await.unwrap();
    assert_eq!(
        read_to_end(&mut c).await,
        "+OK\r\n-ERR Protocol error: expected '$', got ':'\r\n"
    );
    drop(c);
    finished(task).await;
    assert_eq!(service.peek("before").as_deref(), Some("1"));
    assert_eq!(service.peek("after"), None);
}

#[tokio::test]
async fn malformed_lengths_close_the_connection() {
    let mut service = Service::new(Limits::default());
    for (input, reason) in [
        (&b"*2\r\n$3\r\nGET\r\n$-5\r\n"[..], "invalid bulk length"),
        (b"*abc\r\n", "invalid multibulk length"),
        (b"*99999999\r\n", "invalid multibulk length"),
        (b"$999999999999\r\n", "expected '*', got '$'"),
        (b"*1\r\n$3\r\nGETxx", "expected CRLF after bulk string"),
    ] {
        let (mut c, task) = service.connect(RespLimits::default());
        c.write_all(input).await.unwrap();
        assert_eq!(
            read_to_end(&mut c).await,
            format!("-ERR Protocol error: {reason}\r\n")
        );
        drop(c);
        finished(task).await;
    }
}

#[tokio::test]
async fn an_oversized_bulk_is_refused_and_changes_nothing() {
    let mut service = Service::new(Limits::default());
    let limits = RespLimits {
        max_bulk_bytes: 1024,
        ..RespLimits::default()
    };
    let (mut c, _task) = service.connect(limits);
    let big = "x".repeat(2000);
    assert_eq!(
        call(&mut c, &cmd(&["SET", "k", &big])).await,
        "-ERR value of 2000 bytes exceeds the limit of 1024 bytes\r\n"
    );
    assert_eq!(service.peek("k"), None);
    // The connection goes on, in step: the next request is answered as itself.
    assert_eq!(call(&mut c, &cmd(&["SET", "k", "small"])).await, "+OK\r\n");
    assert_eq!(call(&mut c, &cmd(&["GET", "k"])).await, bulk("small"));
}

#[tokio::test]
async fn a_value_over_the_service_limit_is_refused_and_the_connection_goes_on() {
    let kv_limits = Limits {
        max_key_bytes: 16,
        max_value_bytes: 100,
        ..Limits::default()
    };
    let mut service = Service::new(kv_limits);
    let (mut c, _task) = service.connect(RespLimits::for_service(100, 1000));
    let big = "x".repeat(200);
    assert_eq!(
        call(&mut c, &cmd(&["SET", "k", &big])).await,
        "-ERR value of 200 bytes exceeds the limit of 100 bytes\r\n"
    );
    assert_eq!(service.peek("k"), None);
    let long_key = "k".repeat(17);
    assert_eq!(
        call(&mut c, &cmd(&["SET", &long_key, "v"])).await,
        "-ERR key of 17 bytes exceeds the limit of 16 bytes\r\n"
    );
    // An append refused at apply time leaves the value as it was.
    let most = "y".repeat(90);
    assert_eq!(call(&mut c, &cmd(&["SET", "k", &most])).await, "+OK\r\n");
    assert_eq!(
        call(&mut c, &cmd(&["APPEND", "k", &"z".repeat(20)])).await,
        "-ERR value of 110 bytes exceeds the limit of 100 bytes\r\n"
    );
    assert_eq!(service.peek("k"), Some(most));
    assert_eq!(call(&mut c, &cmd(&["PING"])).await, "+PONG\r\n");
}

#[tokio::test]
async fn keys_and_values_are_binary_safe() {
    let mut service = Service::new(Limits::default());
    let (mut c, _task) = service.connect(RespLimits::default());
    assert_eq!(
        call(&mut c, &request(&[b"SET", b"\xff\x00k", b"\xff\xfe"])).await,
        "+OK\r\n"
    );
    let reply = call(&mut c, &request(&[b"GET", b"\xff\x00k"])).await;
    assert_eq!(
        reply.as_bytes(),
        String::from_utf8_lossy(b"$2\r\n\xff\xfe\r\n").as_bytes()
    );
    assert_eq!(
        call(&mut c, &request(&[b"APPEND", b"\xff\x00k", b"\x00"])).await,
        ":3\r\n"
    );
    assert_eq!(
        call(&mut c, &request(&[b"STRLEN", b"\xff\x00k"])).await,
        ":3\r\n"
    );
}

#[tokio::test]
async fn quit_replies_then_closes() {
    let mut service = Service::new(Limits::default());
    let (mut c, task) = service.connect(RespLimits::default());
    let mut input = cmd(&["SET", "a", "1"]);
    input.extend(cmd(&["quit"]));
    input.extend(cmd(&["SET", "b", "1"]));
    c.write_all(&input).await.unwrap();
    assert_eq!(read_to_end(&mut c).await, "+OK\r\n+OK\r\n");
    drop(c);
    finished(task).await;
    assert_eq!(service.peek("a").as_deref(), Some("1"));
    assert_eq!(service.peek("b"), None);
}

#[tokio::test]
async fn the_connection_ends_when_the_client_goes_away_mid_request() {
    let mut service = Service::new(Limits::default());
    let (mut c, task) = service.connect(RespLimits::default());
    c.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk").await.unwrap();
    drop(c);
    finished(task).await;
    assert_eq!(service.peek("k"), None);
}

#[tokio::test]
async fn no_answer_in_time_is_reported_as_an_unknown_outcome() {
    let config = ClerkConfig {
        rpc_timeout: Duration::from_millis(10),
        first_attempt_timeout: None,
        retry_pause: Duration::from_millis(1),
        deadline: Some(Duration::from_millis(30)),
    };
    let clerk = Clerk::new(Unreachable, 1, config);
    let (mut c, server) = tokio::io::duplex(4096);
    tokio::spawn(serve_connection(
        server,
        clerk,
        RespLimits::default(),
        None,
        None,
    ));
    let reply = call(&mut c, &cmd(&["SET", "k", "v"])).await;
    assert!(
        reply.starts_with("-ERR timeout: no answer within "),
        "{reply}"
    );
    assert!(
        reply.ends_with("(the operation may or may not have taken effect)\r\n"),
        "{reply}"
    );
    assert!(reply.contains("connection refused"), "{reply}");
}

#[tokio::test]
async fn the_server_limits_clients_and_survives_bad_ones() {
    let service = Service::new(Limits::default());
    let local = service.local.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ids = std::sync::atomic::AtomicU64::new(1);
    let make_clerk = move || {
        let id = ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Clerk::new(local.clone(), id, ClerkConfig::default())
    };
    let limits = RespLimits {
        max_clients: 2,
        ..RespLimits::default()
    };
    let options = RespOptions {
        info: None,
        limits,
        tls: None,
        password: None,
        metrics: raftkv::metrics::Metrics::default(),
    };
    tokio::spawn(serve(listener, make_clerk, options));

    let connect = || async { tokio::net::TcpStream::connect(addr).await.unwrap() };
    let mut first = connect().await;
    first.write_all(&cmd(&["SET", "k", "v"])).await.unwrap();
    assert_eq!(read_reply(&mut first).await, "+OK\r\n");

    // A client that breaks the protocol is closed; the others are unaffected.
    let mut bad = connect().await;
    bad.write_all(b"*1\r\n+nope\r\n").await.unwrap();
    let mut out = Vec::new();
    timeout(WAIT, bad.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, b"-ERR Protocol error: expected '$', got '+'\r\n");
    drop(bad);

    // Two clients at most: the second slot frees once the bad client's task ends. A refused
    // client is told so at once; an accepted one hears nothing until it asks.
    let mut second = None;
    for _ in 0..100 {
        let mut c = connect().await;
        match timeout(Duration::from_millis(200), read_line(&mut c)).await {
            Ok(line) => assert_eq!(line, b"-ERR max number of clients reached\r\n"),
            Err(_) => {
                second = Some(c);
                break;
            }
        }
    }
    let mut second = second.expect("the slot of the closed client was never freed");
    second.write_all(&cmd(&["PING"])).await.unwrap();
    assert_eq!(read_reply(&mut second).await, "+PONG\r\n");

    let mut third = connect().await;
    let reply = timeout(WAIT, read_reply(&mut third)).await.unwrap();
    assert_eq!(reply, "-ERR max number of clients reached\r\n");

    first.write_all(&cmd(&["GET", "k"])).await.unwrap();
    assert_eq!(read_reply(&mut first).await, bulk("v"));
}

/// With a password, every command but AUTH (and QUIT) is refused until AUTH gives it, a wrong
/// one is refused, and nothing is applied meanwhile; without one, AUTH with no user is an
/// error.
#[tokio::test]
async fn a_password_is_required_before_any_command() {
    let mut service = Service::new(Limits::default());
    let (mut c, _task) = service.connect_with_password(RespLimits::default(), Some("pw"));
    assert_eq!(
        call(&mut c, &cmd(&["SET", "k", "v"])).await,
        "-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(
        call(&mut c, &cmd(&["GET", "k"])).await,
        "-NOAUTH Authentication required.\r\n"
    );
    assert!(call(&mut c, &cmd(&["AUTH", "nope"]))
        .await
        .starts_with("-WRONGPASS"));
    assert!(call(&mut c, &cmd(&["AUTH", "someone", "pw"]))
        .await
        .starts_with("-WRONGPASS"));
    assert_eq!(service.peek("k"), None);
    assert_eq!(
        call(&mut c, &cmd(&["AUTH", "default", "pw"])).await,
        "+OK\r\n"
    );
    assert_eq!(call(&mut c, &cmd(&["SET", "k", "v"])).await, "+OK\r\n");
    assert_eq!(service.peek("k").as_deref(), Some("v"));

    let (mut open, _task) = service.connect(RespLimits::default());
    assert!(call(&mut open, &cmd(&["AUTH", "pw"]))
        .await
        .starts_with("-ERR AUTH <password> called without any password configured"));
}

/// Without a password the default user takes any password, as Redis's `nopass` default user
/// does: redis-py 8 and ioredis configured with a password send it in `HELLO 3 AUTH default`,
/// and connect to Redis configured without one.
#[tokio::test]
async fn without_a_password_the_default_user_takes_any_password() {
    let mut service = Service::new(Limits::default());
    let (mut c, _task) = service.connect(RespLimits::default());
    let hello = call(&mut c, &cmd(&["HELLO", "3", "AUTH", "default", "anything"])).await;
    assert!(hello.starts_with("%7\r\n"), "{hello}");
    assert_eq!(
        call(&mut c, &cmd(&["AUTH", "default", "else"])).await,
        "+OK\r\n"
    );
    assert!(call(&mut c, &cmd(&["AUTH", "someone", "pw"]))
        .await
        .starts_with("-WRONGPASS"));
    assert!(
        call(&mut c, &cmd(&["HELLO", "2", "AUTH", "someone", "pw"]))
            .await
            .starts_with("-WRONGPASS"),
        "HELLO with a refused user changes nothing"
    );
    assert_eq!(call(&mut c, &cmd(&["GET", "missing"])).await, "_\r\n");

    let (mut locked, _task) = service.connect_with_password(RespLimits::default(), Some("pw"));
    assert!(
        call(
            &mut locked,
            &cmd(&["HELLO", "3", "AUTH", "default", "nope"])
        )
        .await
        .starts_with("-WRONGPASS"),
        "with a password, only that password"
    );
    assert_eq!(
        call(&mut locked, &cmd(&["GET", "k"])).await,
        "-NOAUTH Authentication required.\r\n"
    );
}

/// Connection ids are below 2^53, so that ioredis and node-redis, which read integers as
/// doubles, read them exactly (a Clerk's id is any 64-bit number); HELLO reports the same id.
#[tokio::test]
async fn connection_ids_are_exact_as_doubles() {
    let mut service = Service::new(Limits::default());
    for client_id in [u64::MAX, u64::MAX >> 1, 1 << 63, 0x9e37_79b9_7f4a_7c15, 1] {
        let (mut c, _task) = service.connect_as(client_id);
        let reply = call(&mut c, &cmd(&["CLIENT", "ID"])).await;
        let id: u64 = reply.trim_start_matches(':').trim_end().parse().unwrap();
        assert!(id < 1 << 53, "client {client_id:#x} got CLIENT ID {id}");
        let hello = call(&mut c, &cmd(&["HELLO"])).await;
        assert!(hello.contains(&format!("$2\r\nid\r\n:{id}\r\n")), "{hello}");
    }
    // Distinct Clerks keep distinct ids.
    let (mut a, _task) = service.connect_as(u64::MAX);
    let (mut b, _task2) = service.connect_as(u64::MAX - (1 << 11));
    assert_ne!(
        call(&mut a, &cmd(&["CLIENT", "ID"])).await,
        call(&mut b, &cmd(&["CLIENT", "ID"])).await
    );
}

/// A value refused by the codec while a transaction is queued must abort the transaction, as
/// any other refusal does: redis-py's `pipeline(transaction=True)` with one oversized value
/// reports that value's error, and the other commands must not have run.
#[tokio::test]
async fn a_value_refused_while_queuing_aborts_the_transaction() {
    let mut service = Service::new(Limits::default());
    let limits = RespLimits {
        max_bulk_bytes: 16,
        ..RespLimits::default()
    };
    let (mut c, _task) = service.connect(limits);
    assert_eq!(call(&mut c, &cmd(&["MULTI"])).await, "+OK\r\n");
    assert_eq!(call(&mut c, &cmd(&["SET", "a", "1"])).await, "+QUEUED\r\n");
    assert_eq!(
        call(&mut c, &cmd(&["SET", "b", &"x".repeat(17)])).await,
        "-ERR value of 17 bytes exceeds the limit of 16 bytes\r\n"
    );
    assert_eq!(call(&mut c, &cmd(&["GET", "a"])).await, "+QUEUED\r\n");
    assert_eq!(
        call(&mut c, &cmd(&["EXEC"])).await,
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    assert_eq!(service.peek("a"), None, "nothing of the transaction ran");
}

#[tokio::test]
async fn hello_3_switches_to_resp3_replies() {
    let mut service = Service::new(Limits::default());
    let (mut c, _task) = service.connect(RespLimits::default());
    assert_eq!(call(&mut c, &cmd(&["GET", "missing"])).await, "$-1\r\n");
    let hello = call(&mut c, &cmd(&["HELLO", "3", "SETNAME", "app"])).await;
    assert!(hello.starts_with("%7\r\n"), "{hello}");
    assert!(hello.contains("$5\r\nproto\r\n:3\r\n"), "{hello}");
    assert_eq!(call(&mut c, &cmd(&["GET", "missing"])).await, "_\r\n");
    assert_eq!(
        call(&mut c, &cmd(&["CLIENT", "GETNAME"])).await,
        bulk("app")
    );
    assert_eq!(call(&mut c, &cmd(&["RESET"])).await, "+RESET\r\n");
    assert_eq!(call(&mut c, &cmd(&["GET", "missing"])).await, "$-1\r\n");
}

#[tokio::test]
async fn string_and_multi_key_commands() {
    let mut service = Service::new(Limits::default());
    let (mut c, _task) = service.connect(RespLimits::default());
    let cases: &[(&[&str], &str)] = &[
        (&["SETNX", "a", "1"], ":1\r\n"),
        (&["SETNX", "a", "2"], ":0\r\n"),
        (&["SET", "a", "3", "XX", "GET"], "$1\r\n1\r\n"),
        (&["SET", "b", "x", "XX"], "$-1\r\n"),
        (&["INCR", "a"], ":4\r\n"),
        (&["DECRBY", "a", "10"], ":-6\r\n"),
        (
            &["INCRBY", "a", "x"],
            "-ERR value is not an integer or out of range\r\n",
        ),
        (&["SET", "s", "abc"], "+OK\r\n"),
        (
            &["INCR", "s"],
            "-ERR value is not an integer or out of range\r\n",
        ),
        (&["MSET", "m1", "v1", "m2", "v2"], "+OK\r\n"),
        (
            &["MSET", "m1", "v1", "m2"],
            "-ERR wrong number of arguments for 'mset' command\r\n",
        ),
        (
            &["MGET", "m1", "nope", "m2"],
            "*3\r\n$2\r\nv1\r\n$-1\r\n$2\r\nv2\r\n",
        ),
        (&["MSETNX", "m2", "x", "m3", "y"], ":0\r\n"),
        (&["EXISTS", "m1", "m3", "m1"], ":2\r\n"),
        (&["TYPE", "m1"], "+string\r\n"),
        (&["TYPE", "m3"], "+none\r\n"),
        (&["GETSET", "m1", "w"], "$2\r\nv1\r\n"),
        (&["GETDEL", "m1"], "$1\r\nw\r\n"),
        (&["STRLEN", "m2"], ":2\r\n"),
        (&["DEL", "m1", "m2", "nope"], ":1\r\n"),
        (&["DBSIZE"], ":2\r\n"),
        (&["KEYS", "[as]"], "*2\r\n"),
        (&["FLUSHALL"], "+OK\r\n"),
        (&["DBSIZE"], ":0\r\n"),
    ];
    for (args, expected) in cases {
        let reply = call(&mut c, &cmd(args)).await;
        assert!(reply.starts_with(expected), "{args:?}: {reply:?}");
    }
}

/// MULTI queues (checking each command), EXEC runs them as one entry; a queuing error aborts
/// the whole transaction; a watched key written by another client makes EXEC do nothing.
#[tokio::test]
async fn transactions_and_watch() {
    let mut service = Service::new(Limits::default());
    let (mut c, _task) = service.connect(RespLimits::default());
    let (mut other, _task2) = service.connect(RespLimits::default());
    assert_eq!(call(&mut c, &cmd(&["MULTI"])).await, "+OK\r\n");
    assert_eq!(call(&mut c, &cmd(&["SET", "k", "1"])).await, "+QUEUED\r\n");
    assert_eq!(call(&mut c, &cmd(&["INCR", "k"])).await, "+QUEUED\r\n");
    assert_eq!(
        call(&mut c, &cmd(&["SETNX", "k", "x"])).await,
        "+QUEUED\r\n"
    );
    assert_eq!(service.peek("k"), None, "nothing runs before EXEC");
    assert_eq!(
        call(&mut c, &cmd(&["EXEC"])).await,
        "*3\r\n+OK\r\n:2\r\n:0\r\n"
    );
    assert_eq!(
        call(&mut c, &cmd(&["EXEC"])).await,
        "-ERR EXEC without MULTI\r\n"
    );

    assert_eq!(call(&mut c, &cmd(&["MULTI"])).await, "+OK\r\n");
    assert_eq!(call(&mut c, &cmd(&["SET", "k", "9"])).await, "+QUEUED\r\n");
    assert!(call(&mut c, &cmd(&["GET"]))
        .await
        .starts_with("-ERR wrong number"));
    assert_eq!(
        call(&mut c, &cmd(&["EXEC"])).await,
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    assert_eq!(service.peek("k").as_deref(), Some("2"));

    // Check-and-set: the other client's write between WATCH and EXEC fails the EXEC.
    assert_eq!(call(&mut c, &cmd(&["WATCH", "k"])).await, "+OK\r\n");
    assert_eq!(call(&mut other, &cmd(&["SET", "k", "7"])).await, "+OK\r\n");
    assert_eq!(call(&mut c, &cmd(&["MULTI"])).await, "+OK\r\n");
    assert_eq!(call(&mut c, &cmd(&["SET", "k", "3"])).await, "+QUEUED\r\n");
    assert_eq!(call(&mut c, &cmd(&["EXEC"])).await, "*-1\r\n");
    assert_eq!(service.peek("k").as_deref(), Some("7"));
    // EXEC unwatches: the next transaction runs.
    assert_eq!(call(&mut c, &cmd(&["MULTI"])).await, "+OK\r\n");
    assert_eq!(call(&mut c, &cmd(&["SET", "k", "3"])).await, "+QUEUED\r\n");
    assert_eq!(call(&mut c, &cmd(&["EXEC"])).await, "*1\r\n+OK\r\n");
    // DISCARD drops the queue.
    assert_eq!(call(&mut c, &cmd(&["MULTI"])).await, "+OK\r\n");
    assert_eq!(call(&mut c, &cmd(&["DEL", "k"])).await, "+QUEUED\r\n");
    assert_eq!(call(&mut c, &cmd(&["DISCARD"])).await, "+OK\r\n");
    assert_eq!(service.peek("k").as_deref(), Some("3"));
}
