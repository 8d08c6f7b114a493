//! The commands: what each request does through the connection's Clerk, and its reply.
//!
//! Data commands become [`kv::Command`]s, each one log entry; a transaction (MULTI ... EXEC)
//! is one entry holding all its commands. Connection commands (HELLO, CLIENT, SELECT, ...)
//! are answered here without the log. `docs/REDIS.md` lists them all.

use super::codec::{Protocol, Reply};
use super::{InfoSource, RespLimits};
use bytes::{Bytes, BytesMut};
use kv::{Clerk, ClerkError, ClientTransport, Command, OpKind, SetWhen, Value};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// What the connection does once the reply is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum After {
    Continue,
    Close,
}

/// The Redis version reported to clients: the command set and replies follow Redis 7.2.
const REDIS_VERSION: &str = "7.2.0";

/// Most commands one transaction may queue.
const MAX_QUEUED: usize = 10_000;

/// Most keys one connection may watch at once.
const MAX_WATCHED: usize = 1_000;

/// Connection ids (`CLIENT ID`, HELLO's `id`) stay below 2^53: JavaScript clients (ioredis,
/// node-redis) read every integer reply as a double, which is exact only up to there, and a
/// rounded id names another connection.
const CLIENT_ID_BITS: u32 = 53;

/// The data commands, and the connection commands answered here: what COMMAND COUNT counts.
const COMMANDS: [&str; 44] = [
    "get",
    "set",
    "setnx",
    "getset",
    "getdel",
    "strlen",
    "append",
    "incr",
    "incrby",
    "decr",
    "decrby",
    "del",
    "unlink",
    "exists",
    "mget",
    "mset",
    "msetnx",
    "dbsize",
    "scan",
    "keys",
    "flushall",
    "flushdb",
    "type",
    "multi",
    "exec",
    "discard",
    "watch",
    "unwatch",
    "ping",
    "echo",
    "select",
    "quit",
    "reset",
    "hello",
    "auth",
    "client",
    "command",
    "config",
    "info",
    "lastsave",
    "time",
    "readonly",
    "readwrite",
    "wait",
];

/// A connection's authentication, as Redis's `requirepass`: with a password configured,
/// every command but `AUTH`, `HELLO ... AUTH`, `QUIT` and `RESET` is refused until it is
/// given.
pub(super) struct Auth {
    pub password: Option<Arc<str>>,
    pub done: bool,
}

impl Auth {
    pub fn new(password: Option<Arc<str>>) -> Auth {
        Auth {
            password,
            done: false,
        }
    }

    fn required(&self) -> bool {
        self.password.is_some() && !self.done
    }

    /// `AUTH [username] password`, the username (if any) being `default`.
    fn auth(&mut self, args: &[Bytes]) -> Reply {
        match args {
            // The old form, which names no user, is an error when there is no password, as
            // in Redis: the client surely meant a server that has one.
            [_, _] if self.password.is_none() => Reply::error(
                "AUTH <password> called without any password configured for the default user. \
                 Are you sure your configuration is correct?",
            ),
            [_, password] => self.check(b"default", password),
            [_, user, password] => self.check(user, password),
            _ => Reply::error("wrong number of arguments for 'auth' command"),
        }
    }

    /// A user and password, from `AUTH user password` or `HELLO ... AUTH`.
    fn check(&mut self, user: &[u8], given: &[u8]) -> Reply {
        if user != b"default" {
            return wrongpass();
        }
        let accepted = match &self.password {
            // Redis's default user without a password (`nopass`) takes any password, and
            // clients configured with one send it with HELLO 3 (redis-py, ioredis).
            None => true,
            Some(password) => bool::from(password.as_bytes().ct_eq(given)),
        };
        if accepted {
            self.done = true;
            Reply::ok()
        } else {
            wrongpass()
        }
    }
}

fn wrongpass() -> Reply {
    Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
}

/// A transaction being queued (after MULTI).
struct Transaction {
    commands: Vec<Queued>,
    bytes: usize,
    /// A command was refused while queuing: EXEC will fail with EXECABORT.
    failed: bool,
}

/// Most commands run together as one pipeline: below what a session keeps replies of
/// (`kv::state_machine::MAX_KEPT_REPLIES`), so that a failover in the middle of one loses
/// no reply.
const MAX_PIPELINE: usize = 128;

/// A pipeline with this many bytes of arguments runs before more is read into it.
const MAX_PIPELINE_BYTES: usize = 1 << 20;

/// Data commands read one after another from a connection's input, run together: proposed
/// at once, applied in order, answered in order.
#[derive(Default)]
pub(super) struct Pipeline {
    commands: Vec<Queued>,
    bytes: usize,
}

impl Pipeline {
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Whether it should run before another command joins it.
    pub fn is_full(&self) -> bool {
        self.commands.len() >= MAX_PIPELINE || self.bytes >= MAX_PIPELINE_BYTES
    }
}

/// A data command, and how its reply reads in Redis.
struct Queued {
    command: Command,
    shape: Shape,
}

/// How the state machine's reply of a command becomes a Redis reply.
#[derive(Clone, Copy)]
enum Shape {
    Plain,
    /// `OK` or nothing, as 1 or 0 (SETNX).
    Flag,
    /// Whether the key exists, as its type (TYPE).
    Type,
}

/// The state of one client connection.
pub(super) struct Connection {
    pub auth: Auth,
    pub protocol: Protocol,
    /// What `CLIENT ID` and `HELLO` report: the top bits of the Clerk's random id.
    id: i64,
    name: Option<Bytes>,
    multi: Option<Transaction>,
    /// Keys watched, with the versions WATCH read: EXEC hands them to the state machine.
    watched: Vec<(Bytes, u64)>,
    limits: RespLimits,
    info: Option<InfoSource>,
}

impl Connection {
    pub fn new(
        client_id: u64,
        password: Option<Arc<str>>,
        limits: RespLimits,
        info: Option<InfoSource>,
    ) -> Connection {
        Connection {
            auth: Auth::new(password),
            protocol: Protocol::Resp2,
            id: (client_id >> (u64::BITS - CLIENT_ID_BITS)) as i64,
            name: None,
            multi: None,
            watched: Vec::new(),
            limits,
            info,
        }
    }

    /// Runs one request (never empty) and returns its reply.
    pub async fn execute<T: ClientTransport>(
        &mut self,
        clerk: &mut Clerk<T>,
        args: Vec<Bytes>,
    ) -> (Reply, After) {
        let name = args[0].to_ascii_uppercase();
        match name.as_slice() {
            b"QUIT" => return (Reply::ok(), After::Close),
            b"AUTH" => return (self.auth.auth(&args), After::Continue),
            b"HELLO" => return (self.hello(&args), After::Continue),
            b"RESET" => {
                self.reset();
                return (Reply::Simple("RESET".into()), After::Continue);
            }
            _ => {}
        }
        if self.auth.required() {
            let reply = Reply::Error("NOAUTH Authentication required.".into());
            return (reply, After::Continue);
        }
        let reply = match self.dispatch(clerk, &name, &args).await {
            Ok(reply) | Err(reply) => reply,
        };
        (reply, After::Continue)
    }

    /// The reply to a request the codec refused (too large): inside MULTI it also fails the
    /// transaction, like any refusal while queuing.
    pub fn refused(&mut self, msg: String) -> Reply {
        if let Some(transaction) = &mut self.multi {
            transaction.failed = true;
        }
        Reply::Error(msg)
    }

    /// Adds request `args` to `pipeline` if it is a data command that can run there, with
    /// the commands before and after it; otherwise hands it back, to run on its own once the
    /// pipeline has. Inside MULTI, and before AUTH, nothing joins a pipeline.
    pub fn pipeline(&self, pipeline: &mut Pipeline, args: Vec<Bytes>) -> Option<Vec<Bytes>> {
        if self.multi.is_some() || self.auth.required() {
            return Some(args);
        }
        match parse(&args[0].to_ascii_uppercase(), &args) {
            Some(Ok(queued)) => {
                pipeline.bytes += args.iter().map(Bytes::len).sum::<usize>();
                pipeline.commands.push(queued);
                None
            }
            _ => Some(args),
        }
    }

    /// Runs the commands of `pipeline` (emptying it) and writes their replies, in order.
    pub async fn run_pipeline<T: ClientTransport>(
        &self,
        clerk: &mut Clerk<T>,
        pipeline: &mut Pipeline,
        out: &mut BytesMut,
    ) {
        let (kinds, shapes): (Vec<_>, Vec<_>) = std::mem::take(&mut pipeline.commands)
            .into_iter()
            .map(|q| (OpKind::Command(q.command), q.shape))
            .unzip();
        pipeline.bytes = 0;
        // One alone takes the path that reopens an evicted session for it.
        let outcomes = match <[OpKind; 1]>::try_from(kinds) {
            Ok([kind]) => vec![clerk.execute(kind).await],
            Err(kinds) => clerk.execute_pipelined(&kinds).await,
        };
        for (outcome, shape) in outcomes.into_iter().zip(shapes) {
            let reply = match outcome {
                Ok(value) => shape.reply(value),
                Err(e) => Reply::error(describe(&e)),
            };
            reply.encode_as(self.protocol, out);
        }
    }

    /// `Err` carries an error reply, so that checks can use `?`.
    async fn dispatch<T: ClientTransport>(
        &mut self,
        clerk: &mut Clerk<T>,
        name: &[u8],
        args: &[Bytes],
    ) -> Result<Reply, Reply> {
        if self.multi.is_some() {
            return self.queue(clerk, name, args).await;
        }
        if let Some(parsed) = parse(name, args) {
            let Queued { command, shape } = parsed?;
            let value = run(clerk, OpKind::Command(command)).await?;
            return Ok(shape.reply(value));
        }
        match name {
            b"MULTI" => {
                arity(args, 1, 1)?;
                self.multi = Some(Transaction {
                    commands: Vec::new(),
                    bytes: 0,
                    failed: false,
                });
                Ok(Reply::ok())
            }
            b"EXEC" => Err(Reply::error("EXEC without MULTI")),
            b"DISCARD" => Err(Reply::error("DISCARD without MULTI")),
            b"WATCH" => {
                arity(args, 2, usize::MAX)?;
                self.watch(clerk, &args[1..]).await
            }
            b"UNWATCH" => {
                arity(args, 1, 1)?;
                self.watched.clear();
                Ok(Reply::ok())
            }
            _ => self.connection_command(name, args),
        }
    }

    /// After MULTI: data commands are checked and queued, EXEC runs them as one entry.
    async fn queue<T: ClientTransport>(
        &mut self,
        clerk: &mut Clerk<T>,
        name: &[u8],
        args: &[Bytes],
    ) -> Result<Reply, Reply> {
        match name {
            b"EXEC" => {
                let transaction = self.multi.take().expect("in a transaction");
                let watched = std::mem::take(&mut self.watched);
                if transaction.failed {
                    return Err(Reply::Error(
                        "EXECABORT Transaction discarded because of previous errors.".into(),
                    ));
                }
                let (commands, shapes): (Vec<_>, Vec<_>) = transaction
                    .commands
                    .into_iter()
                    .map(|q| (q.command, q.shape))
                    .unzip();
                let value = run(clerk, OpKind::Exec { watched, commands }).await?;
                return Ok(match value {
                    Value::Array(replies) => Reply::Array(
                        replies
                            .into_iter()
                            .zip(shapes)
                            .map(|(value, shape)| shape.reply(value))
                            .collect(),
                    ),
                    // A watched key changed: nothing ran.
                    _ => Reply::NullArray,
                });
            }
            b"DISCARD" => {
                self.multi = None;
                self.watched.clear();
                return Ok(Reply::ok());
            }
            _ => {}
        }
        let max_bytes = self.limits.max_request_bytes;
        let transaction = self.multi.as_mut().expect("in a transaction");
        // Any refusal while queuing fails the whole transaction, as in Redis.
        let refusal = match name {
            b"MULTI" => Reply::error("MULTI calls can not be nested"),
            b"WATCH" => Reply::error("WATCH inside MULTI is not allowed"),
            _ => match parse(name, args) {
                Some(Ok(queued)) => {
                    let bytes = args.iter().map(Bytes::len).sum::<usize>();
                    if transaction.commands.len() >= MAX_QUEUED {
                        Reply::error(format!(
                            "a transaction may queue at most {MAX_QUEUED} commands"
                        ))
                    } else if transaction.bytes + bytes > max_bytes {
                        Reply::error(format!(
                            "transaction exceeds the limit of {max_bytes} bytes"
                        ))
                    } else {
                        transaction.bytes += bytes;
                        transaction.commands.push(queued);
                        return Ok(Reply::Simple("QUEUED".into()));
                    }
                }
                Some(Err(reply)) => reply,
                None => {
                    let lower = printable(&args[0]).to_ascii_lowercase();
                    if COMMANDS.contains(&lower.as_str()) {
                        Reply::error(format!("'{lower}' inside a transaction is not supported"))
                    } else {
                        unknown_command(args)
                    }
                }
            },
        };
        transaction.failed = true;
        Err(refusal)
    }

    /// WATCH: reads the keys' versions through the log, so that EXEC can be refused, at
    /// apply time, if any has changed since. A key watched twice keeps its first version.
    async fn watch<T: ClientTransport>(
        &mut self,
        clerk: &mut Clerk<T>,
        keys: &[Bytes],
    ) -> Result<Reply, Reply> {
        if self.watched.len() + keys.len() > MAX_WATCHED {
            return Err(Reply::error(format!(
                "a connection may watch at most {MAX_WATCHED} keys"
            )));
        }
        let value = run(clerk, OpKind::Command(Command::Versions(keys.to_vec()))).await?;
        let Value::Array(versions) = value else {
            return Err(Reply::error("WATCH read no versions"));
        };
        for (key, version) in keys.iter().zip(versions) {
            if self.watched.iter().any(|(k, _)| k == key) {
                continue;
            }
            let Value::Int(version) = version else {
                return Err(Reply::error("WATCH read no versions"));
            };
            self.watched.push((key.clone(), version as u64));
        }
        Ok(Reply::ok())
    }

    fn reset(&mut self) {
        self.multi = None;
        self.watched.clear();
        self.protocol = Protocol::Resp2;
        self.name = None;
        self.auth.done = false;
    }

    /// `HELLO [protover [AUTH user password] [SETNAME name]]`.
    fn hello(&mut self, args: &[Bytes]) -> Reply {
        let mut protocol = self.protocol;
        if let Some(version) = args.get(1) {
            protocol = match version.as_ref() {
                b"2" => Protocol::Resp2,
                b"3" => Protocol::Resp3,
                _ if std::str::from_utf8(version)
                    .ok()
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_none() =>
                {
                    return Reply::error("Protocol version is not an integer or out of range");
                }
                _ => {
                    return Reply::Error("NOPROTO unsupported protocol version".into());
                }
            };
        }
        let mut name = None;
        let mut i = 2;
        while i < args.len() {
            let option = args[i].to_ascii_uppercase();
            match option.as_slice() {
                b"AUTH" if i + 2 < args.len() => {
                    let reply = self.auth.check(&args[i + 1], &args[i + 2]);
                    if reply != Reply::ok() {
                        return reply;
                    }
                    i += 3;
                }
                b"SETNAME" if i + 1 < args.len() => {
                    if let Err(reply) = valid_name(&args[i + 1]) {
                        return reply;
                    }
                    name = Some(args[i + 1].clone());
                    i += 2;
                }
                _ => {
                    return Reply::error(format!(
                        "Syntax error in HELLO option '{}'",
                        printable(&args[i])
                    ))
                }
            }
        }
        if self.auth.required() {
            return Reply::Error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise \
                 the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the \
                 client and select the RESP protocol version at the same time"
                    .into(),
            );
        }
        self.protocol = protocol;
        if name.is_some() {
            self.name = name;
        }
        let version = match protocol {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        };
        Reply::Map(vec![
            (Reply::bulk("server"), Reply::bulk("redis")),
            (Reply::bulk("version"), Reply::bulk(REDIS_VERSION)),
            (Reply::bulk("proto"), Reply::Integer(version)),
            (Reply::bulk("id"), Reply::Integer(self.id)),
            (Reply::bulk("mode"), Reply::bulk("standalone")),
            (Reply::bulk("role"), Reply::bulk("master")),
            (Reply::bulk("modules"), Reply::Array(Vec::new())),
        ])
    }

    /// Commands about the connection or the server, answered without the log.
    fn connection_command(&mut self, name: &[u8], args: &[Bytes]) -> Result<Reply, Reply> {
        match name {
            b"PING" => {
                arity(args, 1, 2)?;
                Ok(match args.get(1) {
                    Some(msg) => Reply::Bulk(msg.clone()),
                    None => Reply::Simple("PONG".into()),
                })
            }
            b"ECHO" => {
                arity(args, 2, 2)?;
                Ok(Reply::Bulk(args[1].clone()))
            }
            b"SELECT" => {
                arity(args, 2, 2)?;
                match std::str::from_utf8(&args[1]).ok().map(str::parse::<i64>) {
                    Some(Ok(0)) => Ok(Reply::ok()),
                    Some(Ok(_)) => Err(Reply::error("DB index is out of range")),
                    _ => Err(Reply::error("value is not an integer or out of range")),
                }
            }
            // Every write is durable on a majority before it is acknowledged.
            b"WAIT" => {
                arity(args, 3, 3)?;
                Ok(Reply::Integer(0))
            }
            b"READONLY" | b"READWRITE" => Ok(Reply::ok()),
            b"INFO" => Ok(Reply::bulk(self.info(&args[1..]))),
            b"TIME" | b"LASTSAVE" => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                Ok(if name == b"TIME" {
                    Reply::Array(vec![
                        Reply::bulk(now.as_secs().to_string()),
                        Reply::bulk(now.subsec_micros().to_string()),
                    ])
                } else {
                    Reply::Integer(now.as_secs() as i64)
                })
            }
            b"COMMAND" => match subcommand(args).as_deref() {
                // Clients ask for the command table on connect and do without it when it is
                // empty.
                None | Some(b"INFO") | Some(b"LIST") => Ok(Reply::Array(Vec::new())),
                Some(b"COUNT") => Ok(Reply::Integer(COMMANDS.len() as i64)),
                Some(b"DOCS") => Ok(Reply::Map(Vec::new())),
                _ => Err(unknown_subcommand(args)),
            },
            b"CONFIG" => match subcommand(args).as_deref() {
                // redis-benchmark reads `save` and `appendonly` and warns unless both come
                // back as name/value pairs. Persistence here is the write-ahead log, not
                // Redis's snapshots or append-only file, so both read as off; nothing else is
                // exposed.
                Some(b"GET") => {
                    arity(args, 3, usize::MAX)?;
                    let mut pairs = Vec::new();
                    for pattern in &args[2..] {
                        let value = match pattern.to_ascii_lowercase().as_slice() {
                            b"save" => "",
                            b"appendonly" => "no",
                            _ => continue,
                        };
                        pairs.push((Reply::bulk(pattern.clone()), Reply::bulk(value)));
                    }
                    Ok(Reply::Map(pairs))
                }
                _ => Err(unknown_subcommand(args)),
            },
            b"CLIENT" => self.client(args),
            _ => Err(unknown_command(args)),
        }
    }

    fn client(&mut self, args: &[Bytes]) -> Result<Reply, Reply> {
        match subcommand(args).as_deref() {
            Some(b"SETNAME") => {
                arity(args, 3, 3)?;
                valid_name(&args[2])?;
                self.name = (!args[2].is_empty()).then(|| args[2].clone());
                Ok(Reply::ok())
            }
            Some(b"GETNAME") => {
                arity(args, 2, 2)?;
                Ok(self.name.clone().map_or(Reply::Null, Reply::Bulk))
            }
            Some(b"ID") => {
                arity(args, 2, 2)?;
                Ok(Reply::Integer(self.id))
            }
            // Clients label their connections with their library; nothing is kept.
            Some(b"SETINFO") => {
                arity(args, 4, 4)?;
                Ok(Reply::ok())
            }
            Some(b"INFO") | Some(b"LIST") => {
                let name = self
                    .name
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                let resp = match self.protocol {
                    Protocol::Resp2 => 2,
                    Protocol::Resp3 => 3,
                };
                let multi = self.multi.as_ref().map_or(-1, |t| t.commands.len() as i64);
                Ok(Reply::bulk(format!(
                    "id={} name={name} db=0 multi={multi} watch={} resp={resp}\n",
                    self.id,
                    self.watched.len()
                )))
            }
            Some(b"NO-EVICT") | Some(b"NO-TOUCH") => {
                arity(args, 3, 3)?;
                Ok(Reply::ok())
            }
            _ => Err(unknown_subcommand(args)),
        }
    }

    /// INFO's sections, each saying something true of this node. `keyspace` counts this
    /// replica's applied state (as any INFO, not linearizable).
    fn info(&self, sections: &[Bytes]) -> String {
        let wanted = |name: &str| {
            sections.is_empty()
                || sections.iter().any(|s| {
                    let s = s.to_ascii_lowercase();
                    s == name.as_bytes() || s == b"all" || s == b"default" || s == b"everything"
                })
        };
        let info = self.info.as_ref().map(|f| f());
        let mut out = String::new();
        if wanted("server") {
            out.push_str("# Server\r\n");
            out.push_str(&format!("redis_version:{REDIS_VERSION}\r\n"));
            out.push_str(&format!(
                "raftkv_version:{}\r\nredis_mode:standalone\r\nprocess_id:{}\r\n",
                env!("CARGO_PKG_VERSION"),
                std::process::id()
            ));
            if let Some(info) = &info {
                out.push_str(&format!("raftkv_node_id:{}\r\n", info.status.id));
            }
            out.push_str("\r\n");
        }
        if let Some(info) = &info {
            if wanted("clients") {
                out.push_str(&format!(
                    "# Clients\r\nconnected_clients:{}\r\nsessions:{}\r\n\r\n",
                    info.connected_clients, info.sessions
                ));
            }
            if wanted("replication") {
                let s = &info.status;
                // Every node takes writes (forwarding them to the leader), so clients that
                // look for a master find one in any node.
                out.push_str(&format!(
                    "# Replication\r\nrole:master\r\nraft_role:{}\r\nraft_leader:{}\r\n\
                     raft_term:{}\r\nraft_commit_index:{}\r\nraft_applied_index:{}\r\n\
                     raft_last_index:{}\r\nraft_nodes:{}\r\nconnected_slaves:0\r\n\r\n",
                    s.role,
                    s.leader_hint
                        .map_or_else(|| "none".to_string(), |l| l.to_string()),
                    s.term,
                    s.commit_index,
                    s.applied_index,
                    s.last_index,
                    s.peers.len(),
                ));
            }
            if wanted("keyspace") {
                out.push_str("# Keyspace\r\n");
                if info.keys > 0 {
                    out.push_str(&format!("db0:keys={},expires=0,avg_ttl=0\r\n", info.keys));
                }
                out.push_str("\r\n");
            }
        }
        out
    }
}

impl Shape {
    fn reply(self, value: Value) -> Reply {
        match (self, value) {
            (Shape::Flag, Value::Ok) => Reply::Integer(1),
            (Shape::Flag, Value::Nil) => Reply::Integer(0),
            (Shape::Type, Value::Int(1)) => Reply::Simple("string".into()),
            (Shape::Type, Value::Int(0)) => Reply::Simple("none".into()),
            (_, value) => to_reply(value),
        }
    }
}

fn to_reply(value: Value) -> Reply {
    match value {
        Value::Ok => Reply::ok(),
        Value::Nil => Reply::Null,
        Value::Int(n) => Reply::Integer(n),
        Value::Bytes(b) => Reply::Bulk(b),
        Value::Array(items) => Reply::Array(items.into_iter().map(to_reply).collect()),
        Value::Error(e) => Reply::Error(e),
    }
}

/// The data command `name` as the state machine runs it, or `None` if `name` is not one.
fn parse(name: &[u8], args: &[Bytes]) -> Option<Result<Queued, Reply>> {
    let plain = |command| {
        Ok(Queued {
            command,
            shape: Shape::Plain,
        })
    };
    let key = || args[1].clone();
    let keys = || args[1..].to_vec();
    let parsed = match name {
        b"GET" => arity(args, 2, 2).and_then(|()| plain(Command::Get(key()))),
        b"SET" => arity(args, 3, usize::MAX).and_then(|()| plain(parse_set(args)?)),
        b"SETNX" => arity(args, 3, 3).map(|()| Queued {
            command: Command::Set {
                key: key(),
                value: args[2].clone(),
                when: SetWhen::IfMissing,
                get: false,
            },
            shape: Shape::Flag,
        }),
        b"GETSET" => arity(args, 3, 3).and_then(|()| {
            plain(Command::Set {
                key: key(),
                value: args[2].clone(),
                when: SetWhen::Always,
                get: true,
            })
        }),
        b"GETDEL" => arity(args, 2, 2).and_then(|()| plain(Command::GetDel(key()))),
        b"STRLEN" => arity(args, 2, 2).and_then(|()| plain(Command::StrLen(key()))),
        b"APPEND" => arity(args, 3, 3).and_then(|()| {
            plain(Command::Append {
                key: key(),
                value: args[2].clone(),
            })
        }),
        b"INCR" | b"DECR" => arity(args, 2, 2).and_then(|()| {
            let by = if name == b"INCR" { 1 } else { -1 };
            plain(Command::IncrBy { key: key(), by })
        }),
        b"INCRBY" | b"DECRBY" => arity(args, 3, 3).and_then(|()| {
            let n = integer(&args[2])?;
            let by = if name == b"INCRBY" {
                n
            } else {
                n.checked_neg()
                    .ok_or_else(|| Reply::error("decrement would overflow"))?
            };
            plain(Command::IncrBy { key: key(), by })
        }),
        b"DEL" | b"UNLINK" => arity(args, 2, usize::MAX).and_then(|()| plain(Command::Del(keys()))),
        b"EXISTS" => arity(args, 2, usize::MAX).and_then(|()| plain(Command::Exists(keys()))),
        b"TYPE" => arity(args, 2, 2).map(|()| Queued {
            command: Command::Exists(vec![key()]),
            shape: Shape::Type,
        }),
        b"MGET" => arity(args, 2, usize::MAX).and_then(|()| plain(Command::MGet(keys()))),
        b"MSET" | b"MSETNX" => {
            if args.len() < 3 || args.len().is_multiple_of(2) {
                Err(wrong_arity(args))
            } else {
                let pairs = args[1..]
                    .chunks(2)
                    .map(|p| (p[0].clone(), p[1].clone()))
                    .collect();
                plain(if name == b"MSET" {
                    Command::MSet(pairs)
                } else {
                    Command::MSetNx(pairs)
                })
            }
        }
        b"DBSIZE" => arity(args, 1, 1).and_then(|()| plain(Command::DbSize)),
        b"SCAN" => arity(args, 2, usize::MAX).and_then(|()| plain(parse_scan(args)?)),
        b"KEYS" => arity(args, 2, 2).and_then(|()| plain(Command::Keys(key()))),
        b"FLUSHALL" | b"FLUSHDB" => arity(args, 1, 2).and_then(|()| {
            match args.get(1).map(|a| a.to_ascii_uppercase()).as_deref() {
                None | Some(b"SYNC") | Some(b"ASYNC") => plain(Command::FlushAll),
                Some(_) => Err(Reply::error("syntax error")),
            }
        }),
        _ => return None,
    };
    Some(parsed)
}

/// `SET key value [NX | XX] [GET]`; the expiry options are refused by name.
fn parse_set(args: &[Bytes]) -> Result<Command, Reply> {
    let mut when = SetWhen::Always;
    let mut get = false;
    for option in &args[3..] {
        let option = option.to_ascii_uppercase();
        match option.as_slice() {
            b"NX" if when == SetWhen::Always => when = SetWhen::IfMissing,
            b"XX" if when == SetWhen::Always => when = SetWhen::IfExists,
            b"GET" if !get => get = true,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" | b"KEEPTTL" => {
                return Err(Reply::error(format!(
                    "SET option '{}' is not supported: keys do not expire",
                    String::from_utf8_lossy(&option)
                )))
            }
            _ => return Err(Reply::error("syntax error")),
        }
    }
    Ok(Command::Set {
        key: args[1].clone(),
        value: args[2].clone(),
        when,
        get,
    })
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE string]`.
fn parse_scan(args: &[Bytes]) -> Result<Command, Reply> {
    let cursor = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
        .ok_or_else(|| Reply::error("invalid cursor"))?;
    let mut pattern = None;
    let mut count = 10;
    let mut options = args[2..].chunks(2);
    for option in options.by_ref() {
        let [name, value] = option else {
            return Err(Reply::error("syntax error"));
        };
        match name.to_ascii_uppercase().as_slice() {
            b"MATCH" => pattern = Some(value.clone()),
            b"COUNT" => {
                count = usize::try_from(integer(value)?)
                    .ok()
                    .filter(|&c| c >= 1)
                    .ok_or_else(|| Reply::error("syntax error"))?;
            }
            // Every value is a string.
            b"TYPE" if value.eq_ignore_ascii_case(b"string") => {}
            b"TYPE" => pattern = Some(Bytes::from_static(b"[]")),
            _ => return Err(Reply::error("syntax error")),
        }
    }
    Ok(Command::Scan {
        cursor,
        pattern,
        count,
    })
}

async fn run<T: ClientTransport>(clerk: &mut Clerk<T>, kind: OpKind) -> Result<Value, Reply> {
    clerk
        .execute(kind)
        .await
        .map_err(|e| Reply::error(describe(&e)))
}

fn describe(e: &ClerkError) -> String {
    match e {
        ClerkError::Rejected(e) => e.to_string(),
        ClerkError::Deadline { .. } => {
            format!("timeout: {e} (the operation may or may not have taken effect)")
        }
    }
}

/// A signed 64-bit integer argument, as Redis reads one.
fn integer(arg: &[u8]) -> Result<i64, Reply> {
    std::str::from_utf8(arg)
        .ok()
        .filter(|s| !s.starts_with('+') && !s.is_empty())
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| Reply::error("value is not an integer or out of range"))
}

fn valid_name(name: &[u8]) -> Result<(), Reply> {
    if name.iter().all(|&b| (b'!'..=b'~').contains(&b)) {
        Ok(())
    } else {
        Err(Reply::error(
            "Client names cannot contain spaces, newlines or special characters.",
        ))
    }
}

/// Checks that the request, command name included, has `min..=max` elements.
fn arity(args: &[Bytes], min: usize, max: usize) -> Result<(), Reply> {
    if (min..=max).contains(&args.len()) {
        Ok(())
    } else {
        Err(wrong_arity(args))
    }
}

fn wrong_arity(args: &[Bytes]) -> Reply {
    let name = printable(&args[0]).to_ascii_lowercase();
    Reply::error(format!("wrong number of arguments for '{name}' command"))
}

/// Redis's error for a command it does not know, naming it and its first arguments.
fn unknown_command(args: &[Bytes]) -> Reply {
    let shown: String = args[1..]
        .iter()
        .take(4)
        .map(|a| format!("'{}' ", printable(a)))
        .collect();
    Reply::error(format!(
        "unknown command '{}', with args beginning with: {shown}",
        printable(&args[0])
    ))
}

fn subcommand(args: &[Bytes]) -> Option<Vec<u8>> {
    args.get(1).map(|sub| sub.to_ascii_uppercase())
}

fn unknown_subcommand(args: &[Bytes]) -> Reply {
    let sub = args.get(1).map(|sub| printable(sub)).unwrap_or_default();
    let name = printable(&args[0]).to_ascii_lowercase();
    Reply::error(format!("unknown subcommand '{sub}' for '{name}'"))
}

/// A client-supplied name, shortened and made safe to quote in an error line.
fn printable(name: &[u8]) -> String {
    const MAX: usize = 128;
    let mut shown: String = String::from_utf8_lossy(&name[..name.len().min(MAX)])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if name.len() > MAX {
        shown.push_str("...");
    }
    shown
}
