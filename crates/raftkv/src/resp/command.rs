//! The commands: what each request does through the connection's Clerk, and its reply.

use super::Reply;
use bytes::Bytes;
use kv::{Clerk, ClerkError, ClientTransport, OpKind};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// What the connection does once the reply is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum After {
    Continue,
    Close,
}

const INFO: &str = "# Server\r\nredis_version:7.0.0-raftkv\r\nredis_mode:standalone\r\n";

/// The options of Redis's SET, named in the error so that a client sees they are not
/// supported rather than misspelt.
const SET_OPTIONS: [&str; 9] = [
    "EX", "PX", "EXAT", "PXAT", "NX", "XX", "KEEPTTL", "GET", "IFEQ",
];

/// A connection's authentication, as Redis's `requirepass`: with a password configured,
/// every command but `AUTH`, `HELLO` and `QUIT` is refused until `AUTH` gives it.
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

    /// `AUTH [username] password`, the username (if any) being `default`.
    fn auth(&mut self, args: &[Bytes]) -> Reply {
        let given = match args {
            [_, password] => password,
            [_, user, password] if user.as_ref() == b"default" => password,
            [_, _, _] => return wrongpass(),
            _ => return Reply::error("wrong number of arguments for 'auth' command"),
        };
        let Some(password) = &self.password else {
            return Reply::error(
                "AUTH <password> called without any password configured for the default user. \
                 Are you sure your configuration is correct?",
            );
        };
        if bool::from(password.as_bytes().ct_eq(given.as_ref())) {
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

/// Runs one request (never empty) and returns its reply.
pub(super) async fn execute<T: ClientTransport>(
    clerk: &mut Clerk<T>,
    args: Vec<Bytes>,
    auth: &mut Auth,
) -> (Reply, After) {
    let name = args[0].to_ascii_uppercase();
    if name == b"QUIT" {
        return (Reply::ok(), After::Close);
    }
    if name == b"AUTH" {
        return (auth.auth(&args), After::Continue);
    }
    if auth.password.is_some() && !auth.done && name != b"HELLO" {
        let reply = Reply::Error("NOAUTH Authentication required.".into());
        return (reply, After::Continue);
    }
    let reply = match dispatch(clerk, &name, &args).await {
        Ok(reply) | Err(reply) => reply,
    };
    (reply, After::Continue)
}

/// `Err` carries an error reply, so that checks can use `?`.
async fn dispatch<T: ClientTransport>(
    clerk: &mut Clerk<T>,
    name: &[u8],
    args: &[Bytes],
) -> Result<Reply, Reply> {
    match name {
        b"GET" => {
            arity(args, 2, 2)?;
            let key = text(&args[1])?;
            let value = run(clerk, OpKind::Get { key }).await?;
            Ok(Reply::bulk(value))
        }
        b"SET" => {
            arity(args, 3, usize::MAX)?;
            if let Some(option) = args.get(3) {
                let option = String::from_utf8_lossy(option).to_ascii_uppercase();
                return Err(if SET_OPTIONS.contains(&option.as_str()) {
                    Reply::error(format!("SET option '{option}' is not supported"))
                } else {
                    Reply::error("syntax error")
                });
            }
            let (key, value) = (text(&args[1])?, text(&args[2])?);
            run(clerk, OpKind::Put { key, value }).await?;
            Ok(Reply::ok())
        }
        b"APPEND" => {
            arity(args, 3, 3)?;
            let (key, value) = (text(&args[1])?, text(&args[2])?);
            append(clerk, key, value).await
        }
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
        b"INFO" => Ok(Reply::bulk(INFO)),
        // Clients ask for the command table on connect and do without it when it is empty.
        b"COMMAND" => match subcommand(args).as_deref() {
            Some(b"COUNT") => Ok(Reply::Integer(0)),
            _ => Ok(Reply::Array(Vec::new())),
        },
        b"CONFIG" => match subcommand(args).as_deref() {
            // redis-benchmark reads `save` and `appendonly` and warns unless both come back
            // as name/value pairs. Persistence here is the write-ahead log, not Redis's
            // snapshots or append-only file, so both read as off; nothing else is exposed.
            Some(b"GET") => {
                arity(args, 3, usize::MAX)?;
                let mut pairs = Vec::new();
                for pattern in &args[2..] {
                    let value = match pattern.to_ascii_lowercase().as_slice() {
                        b"save" => "",
                        b"appendonly" => "no",
                        _ => continue,
                    };
                    pairs.push(Reply::bulk(pattern.clone()));
                    pairs.push(Reply::bulk(value));
                }
                Ok(Reply::Array(pairs))
            }
            _ => Err(unknown_subcommand(args)),
        },
        b"CLIENT" => match subcommand(args).as_deref() {
            // Clients label their connections; the labels are not kept.
            Some(b"SETNAME") => {
                arity(args, 3, 3)?;
                Ok(Reply::ok())
            }
            Some(b"SETINFO") => {
                arity(args, 4, 4)?;
                Ok(Reply::ok())
            }
            _ => Err(unknown_subcommand(args)),
        },
        // HELLO is how a client asks for RESP3; refusing it keeps the client on RESP2.
        _ => Err(Reply::error(format!(
            "unknown command '{}'",
            printable(&args[0])
        ))),
    }
}

/// Appends, then reads the value back for the length that Redis replies with. The read is a
/// separate operation, so the length may include appends made by others in between.
async fn append<T: ClientTransport>(
    clerk: &mut Clerk<T>,
    key: String,
    value: String,
) -> Result<Reply, Reply> {
    let kind = OpKind::Append {
        key: key.clone(),
        value,
    };
    run(clerk, kind).await?;
    match clerk.execute(OpKind::Get { key }).await {
        Ok(value) => Ok(Reply::Integer(
            i64::try_from(value.len()).unwrap_or(i64::MAX),
        )),
        // The append is done: saying only "failed" would invite a retry that appends twice.
        Err(e) => Err(Reply::error(format!(
            "the append took effect, but reading the new length failed: {}",
            describe(&e)
        ))),
    }
}

async fn run<T: ClientTransport>(clerk: &mut Clerk<T>, kind: OpKind) -> Result<String, Reply> {
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

/// Checks that the request, command name included, has `min..=max` elements.
fn arity(args: &[Bytes], min: usize, max: usize) -> Result<(), Reply> {
    if (min..=max).contains(&args.len()) {
        return Ok(());
    }
    let name = printable(&args[0]).to_ascii_lowercase();
    Err(Reply::error(format!(
        "wrong number of arguments for '{name}' command"
    )))
}

fn text(arg: &Bytes) -> Result<String, Reply> {
    String::from_utf8(arg.to_vec()).map_err(|_| Reply::error("keys and values must be valid UTF-8"))
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
