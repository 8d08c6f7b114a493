//! raftkv's Redis commands, MULTI/EXEC and WATCH, checked against one map.
//!
//! # Why the whole map
//!
//! [`crate::kv::KvModel`] checks each key on its own, which is sound only because each of
//! its operations touches one key. Here MSET, MSETNX, and DEL, EXISTS or MGET of several
//! keys read or write several keys at one point; DBSIZE, KEYS and FLUSHALL the whole map; a
//! transaction any of these at once, and WATCH makes a transaction depend on other clients'
//! writes to its keys. Checked per key, an MSET seen half-applied by an MGET, or a
//! transaction whose commands interleave with another client's, would pass. So
//! [`CommandsModel`]'s state is the whole map, and a history is searched as one part.
//!
//! # Versions
//!
//! Each key has a version, the log index of the entry that last wrote it, 0 while it is
//! missing (a deleted key has none, so FLUSHALL resets every version to 0; a key created and
//! deleted again since a WATCH is back at 0 and does not fail the EXEC, a difference from
//! Redis that `docs/REDIS.md` lists). `Versions` (WATCH) reads them, and an `Exec` whose
//! watched versions are no longer current runs nothing and replies `Nil`. Log indexes are not something a sequential specification can
//! predict, so the model keeps, per key, only what the history has shown of its version,
//! [`Version`]: exactly `v`, learnt from a `Versions` reply (or from a transaction that ran
//! while watching the key at `v`); or merely above some bound, after a write the history has
//! not read the version of. Both are sound because the log order of the real execution is
//! one linearization, and along it:
//!
//! * every entry's index is larger than those of the entries before it, so a write comes
//!   after every version any earlier `Versions` returned: its key's version is above the
//!   largest version observed so far ([`Map::floor`]);
//! * a missing key reads 0, a present one at least 1;
//! * a `Versions` reply must agree with what is known and then makes it exact.
//!
//! A watched `(key, w)` is then certainly unchanged (the key is missing and `w` = 0, or its
//! version is exactly `w`), certainly changed (any other known version, or a version above a
//! bound `>= w`), or undecided (above a bound `< w`). An `Exec` with a certainly changed key
//! must reply `Nil` and change nothing; one whose keys are all certainly unchanged must
//! have run. An undecided one may do either: if it ran, its watched versions were exactly the
//! ones it gave, which the model learns. A transaction is one log entry, so the versions it
//! writes are all one index: inside it, writes are bounded by the floor as it was before the
//! transaction, and what its `Versions` read raises the floor only after it.
//!
//! The knowledge is deliberately weak where the exact rule would be costly: it keeps no order
//! between the unknown versions of different keys, so concurrent writes to different keys
//! still commute in the search (the same state whichever goes first) and memoisation stays
//! effective. Weaker knowledge can only accept more, never reject a correct history.
//!
//! # Replies
//!
//! A reply of `None` means none came (the outcome is unknown): the operation may have taken
//! effect at any point after its call, or never. The model accepts it in every state, as the
//! checker requires. A watched transaction that may have run is applied as if it ran; had it
//! aborted, it changed nothing, which is the same as never taking effect, and the search
//! can place it last. Errors are compared by kind only (any `ERR` message matches).
//!
//! Values stay far below the service's size limits in the histories checked, so the limits'
//! refusals are not modelled.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::model::{Model, Operation};

/// A key or a value: bytes, shared, so that states copy cheaply.
pub type Bytes = Arc<[u8]>;

/// When a `SET` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetWhen {
    Always,
    /// `NX`: only if the key is missing.
    IfMissing,
    /// `XX`: only if the key exists.
    IfExists,
}

/// One command, with the service's semantics (`docs/REDIS.md`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    Get(Bytes),
    /// Replies `Ok` when it wrote and `Nil` when its condition held it back; with `get`, the
    /// old value (or `Nil`) either way.
    Set {
        key: Bytes,
        value: Bytes,
        when: SetWhen,
        get: bool,
    },
    GetDel(Bytes),
    StrLen(Bytes),
    /// Replies the new length.
    Append {
        key: Bytes,
        value: Bytes,
    },
    /// A missing key counts as 0; a value that is not a canonical signed 64-bit integer, or
    /// a result that overflows, is an error and changes nothing.
    IncrBy {
        key: Bytes,
        by: i64,
    },
    Del(Vec<Bytes>),
    Exists(Vec<Bytes>),
    MGet(Vec<Bytes>),
    MSet(Vec<(Bytes, Bytes)>),
    /// Writes every pair only if none of the keys exists; replies 1 or 0.
    MSetNx(Vec<(Bytes, Bytes)>),
    DbSize,
    /// Every key, in any order (KEYS `*`, or a SCAN that went through in one call).
    Keys,
    FlushAll,
    /// The version of each key (WATCH).
    Versions(Vec<Bytes>),
}

/// An operation: one command, or a transaction (MULTI/EXEC) of several in one step.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Request {
    Command(Command),
    /// Runs `commands` at one point, unless a watched key's version is no longer the one
    /// given: then nothing runs and the reply is `Nil`.
    Exec {
        watched: Vec<(Bytes, u64)>,
        commands: Vec<Command>,
    },
}

/// A reply, as the service gives it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reply {
    Ok,
    Nil,
    Int(i64),
    Bytes(Bytes),
    Array(Vec<Reply>),
    /// A command that ran and failed; the message is for reports only.
    Error(String),
}

/// What the history has shown of a present key's version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    Exactly(u64),
    /// Strictly greater than this.
    Above(u64),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    pub value: Bytes,
    pub version: Version,
}

/// The model's state: the whole map.
///
/// Invariant: every version known exactly, and every bound, is at most `floor`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Map {
    /// The present keys.
    pub entries: BTreeMap<Bytes, Entry>,
    /// The largest version observed along this linearization: whatever is written from here
    /// on gets a larger one.
    pub floor: u64,
}

/// The sequential specification of the command mix over one map.
#[derive(Clone, Copy, Debug, Default)]
pub struct CommandsModel;

/// An operation of a command history; `None` output: no reply came.
pub type CommandsOperation = Operation<Request, Option<Reply>>;

impl Model for CommandsModel {
    type State = Map;
    type Input = Request;
    type Output = Option<Reply>;

    fn init(&self) -> Map {
        Map::default()
    }

    fn step(&self, state: &Map, input: &Request, output: &Option<Reply>) -> Option<Map> {
        let mut next = state.clone();
        let legal = match input {
            Request::Command(command) => {
                let mut run = Run::new(&mut next);
                let legal = run.command(command, output.as_ref());
                run.finish();
                legal
            }
            Request::Exec { watched, commands } => next.exec(watched, commands, output.as_ref()),
        };
        debug_assert!(next.floor_bounds_every_version(), "{next:?}");
        legal.then_some(next)
    }

    /// One part: see the module docs. An unanswered operation that can only read is left
    /// out: it says nothing, and the checker relies on unanswered operations being legal
    /// in every state.
    fn partition(&self, ops: &[CommandsOperation]) -> Vec<Vec<usize>> {
        let kept = (0..ops.len())
            .filter(|&i| ops[i].output.is_some() || !only_reads(&ops[i].input))
            .collect();
        vec![kept]
    }

    fn is_read_only(&self, input: &Request, output: &Option<Reply>) -> bool {
        let Some(reply) = output else {
            return false;
        };
        match (input, reply) {
            (Request::Command(command), reply) => leaves_unchanged(command, reply),
            // An aborted transaction changes nothing; one that ran learns its watched
            // versions.
            (Request::Exec { .. }, Reply::Nil) => true,
            (Request::Exec { watched, commands }, Reply::Array(replies)) => {
                watched.is_empty()
                    && commands.len() == replies.len()
                    && commands
                        .iter()
                        .zip(replies)
                        .all(|(c, r)| leaves_unchanged(c, r))
            }
            (Request::Exec { .. }, _) => false,
        }
    }

    fn describe(&self, input: &Request, output: &Option<Reply>) -> String {
        let request = match input {
            Request::Command(command) => describe_command(command),
            Request::Exec { watched, commands } => {
                let mut text = String::from("EXEC");
                if !watched.is_empty() {
                    let watched: Vec<String> = watched
                        .iter()
                        .map(|(k, v)| format!("{}@{v}", show(k)))
                        .collect();
                    let _ = write!(text, " watching {}", watched.join(" "));
                }
                let commands: Vec<String> = commands.iter().map(describe_command).collect();
                let _ = write!(text, " [{}]", commands.join("; "));
                text
            }
        };
        match output {
            Some(reply) => format!("{request} -> {}", describe_reply(reply)),
            None => format!("{request} -> ?"),
        }
    }

    fn describe_state(&self, state: &Map) -> String {
        let entries: Vec<String> = state
            .entries
            .iter()
            .map(|(k, e)| {
                let version = match e.version {
                    Version::Exactly(v) => format!("@{v}"),
                    Version::Above(v) => format!("@>{v}"),
                };
                format!("{}={:?}{version}", show(k), show(&e.value))
            })
            .collect();
        format!("{{{}}} seen up to @{}", entries.join(", "), state.floor)
    }

    fn describe_partition(&self, _ops: &[&CommandsOperation]) -> String {
        "the whole map".to_string()
    }
}

/// Whether the watched versions of a transaction certainly still hold, certainly do not, or
/// may either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Watch {
    Unchanged,
    Changed,
    Undecided,
}

impl Map {
    /// The invariant stated on [`Map`].
    fn floor_bounds_every_version(&self) -> bool {
        self.entries.values().all(|e| match e.version {
            Version::Exactly(v) | Version::Above(v) => v <= self.floor,
        })
    }

    fn watch(&self, key: &Bytes, given: u64) -> Watch {
        match self.entries.get(key).map(|e| e.version) {
            None if given == 0 => Watch::Unchanged,
            None => Watch::Changed,
            Some(Version::Exactly(v)) if v == given => Watch::Unchanged,
            Some(Version::Exactly(_)) => Watch::Changed,
            Some(Version::Above(bound)) if given <= bound => Watch::Changed,
            Some(Version::Above(_)) => Watch::Undecided,
        }
    }

    /// A transaction; changes `self` as it would and says whether `reply` is legal.
    fn exec(
        &mut self,
        watched: &[(Bytes, u64)],
        commands: &[Command],
        reply: Option<&Reply>,
    ) -> bool {
        let verdicts: Vec<Watch> = watched.iter().map(|(k, v)| self.watch(k, *v)).collect();
        if verdicts.contains(&Watch::Changed) {
            return matches!(reply, None | Some(Reply::Nil));
        }
        let replies = match reply {
            Some(Reply::Nil) => return verdicts.contains(&Watch::Undecided),
            Some(Reply::Array(replies)) if replies.len() == commands.len() => Some(replies),
            Some(_) => return false,
            None => None,
        };
        // It ran (or, without a reply, is taken to have run: see the module docs), so every
        // watched version was the one given.
        for ((key, given), verdict) in watched.iter().zip(verdicts) {
            if verdict == Watch::Undecided {
                self.entries.get_mut(key).expect("present").version = Version::Exactly(*given);
                self.floor = self.floor.max(*given);
            }
        }
        let mut run = Run::new(self);
        let legal = (commands.iter().enumerate())
            .all(|(i, command)| run.command(command, replies.map(|r| &r[i])));
        run.finish();
        legal
    }
}

/// One log entry being applied: a command, or a transaction's commands.
struct Run<'a> {
    map: &'a mut Map,
    /// What the entry writes is versioned above this: the floor before the entry.
    written_above: u64,
    /// The largest version the entry read, which raises the floor once it is done.
    seen: u64,
}

impl<'a> Run<'a> {
    fn new(map: &'a mut Map) -> Run<'a> {
        let floor = map.floor;
        Run {
            map,
            written_above: floor,
            seen: floor,
        }
    }

    fn finish(self) {
        self.map.floor = self.seen;
    }

    fn value(&self, key: &Bytes) -> Option<&Bytes> {
        self.map.entries.get(key).map(|e| &e.value)
    }

    fn read(&self, key: &Bytes) -> Reply {
        self.value(key)
            .map_or(Reply::Nil, |v| Reply::Bytes(v.clone()))
    }

    fn write(&mut self, key: &Bytes, value: Bytes) {
        let version = Version::Above(self.written_above);
        self.map
            .entries
            .insert(key.clone(), Entry { value, version });
    }

    /// Applies `command` and says whether `reply` (if one came) is what it answers.
    fn command(&mut self, command: &Command, reply: Option<&Reply>) -> bool {
        let expected = match command {
            Command::Versions(keys) => return self.versions(keys, reply),
            Command::Keys => {
                let keys: Vec<Bytes> = self.map.entries.keys().cloned().collect();
                return reply.is_none_or(|r| same_keys(&keys, r));
            }
            _ => self.run(command),
        };
        reply.is_none_or(|r| agrees(&expected, r))
    }

    /// Applies every command but `Versions` and `Keys`, whose replies are not one value.
    fn run(&mut self, command: &Command) -> Reply {
        let count = |n: usize| Reply::Int(n as i64);
        match command {
            Command::Get(key) => self.read(key),
            Command::Set {
                key,
                value,
                when,
                get,
            } => {
                let old = self.read(key);
                let write = match when {
                    SetWhen::Always => true,
                    SetWhen::IfMissing => old == Reply::Nil,
                    SetWhen::IfExists => old != Reply::Nil,
                };
                if write {
                    self.write(key, value.clone());
                }
                match (get, write) {
                    (true, _) => old,
                    (false, true) => Reply::Ok,
                    (false, false) => Reply::Nil,
                }
            }
            Command::GetDel(key) => self
                .map
                .entries
                .remove(key)
                .map_or(Reply::Nil, |e| Reply::Bytes(e.value)),
            Command::StrLen(key) => count(self.value(key).map_or(0, |v| v.len())),
            Command::Append { key, value } => {
                let mut grown = self.value(key).map_or_else(Vec::new, |v| v.to_vec());
                grown.extend_from_slice(value);
                let len = grown.len();
                self.write(key, grown.into());
                count(len)
            }
            Command::IncrBy { key, by } => {
                let current = match self.value(key) {
                    None => Some(0),
                    Some(v) => parse_integer(v),
                };
                match current.and_then(|n| n.checked_add(*by)) {
                    Some(next) => {
                        self.write(key, next.to_string().into_bytes().into());
                        Reply::Int(next)
                    }
                    None => Reply::Error("ERR not an integer, or overflow".into()),
                }
            }
            Command::Del(keys) => count(
                keys.iter()
                    .filter(|k| self.map.entries.remove(*k).is_some())
                    .count(),
            ),
            Command::Exists(keys) => count(
                keys.iter()
                    .filter(|k| self.map.entries.contains_key(*k))
                    .count(),
            ),
            Command::MGet(keys) => Reply::Array(keys.iter().map(|k| self.read(k)).collect()),
            Command::MSet(pairs) => {
                for (key, value) in pairs {
                    self.write(key, value.clone());
                }
                Reply::Ok
            }
            Command::MSetNx(pairs) => {
                if pairs.iter().any(|(k, _)| self.map.entries.contains_key(k)) {
                    return Reply::Int(0);
                }
                for (key, value) in pairs {
                    self.write(key, value.clone());
                }
                Reply::Int(1)
            }
            Command::DbSize => count(self.map.entries.len()),
            Command::FlushAll => {
                self.map.entries.clear();
                Reply::Ok
            }
            Command::Keys | Command::Versions(_) => unreachable!("handled by `command`"),
        }
    }

    /// A `Versions` reply must agree with what is known of each version, and makes it exact.
    fn versions(&mut self, keys: &[Bytes], reply: Option<&Reply>) -> bool {
        let Some(reply) = reply else {
            return true;
        };
        let Reply::Array(items) = reply else {
            return false;
        };
        if items.len() != keys.len() {
            return false;
        }
        for (key, item) in keys.iter().zip(items) {
            let Reply::Int(read) = *item else {
                return false;
            };
            let Ok(read) = u64::try_from(read) else {
                return false;
            };
            let Some(entry) = self.map.entries.get_mut(key) else {
                if read != 0 {
                    return false;
                }
                continue;
            };
            let legal = match entry.version {
                Version::Exactly(v) => read == v,
                Version::Above(bound) => read > bound,
            };
            if !legal {
                return false;
            }
            entry.version = Version::Exactly(read);
            self.seen = self.seen.max(read);
        }
        true
    }
}

/// Whether `got` is the reply `expected`; errors match by kind.
fn agrees(expected: &Reply, got: &Reply) -> bool {
    match (expected, got) {
        (Reply::Error(_), Reply::Error(_)) => true,
        (Reply::Array(a), Reply::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| agrees(x, y))
        }
        _ => expected == got,
    }
}

/// Whether `got` lists exactly `keys` (sorted, each once), in any order.
fn same_keys(keys: &[Bytes], got: &Reply) -> bool {
    let Reply::Array(items) = got else {
        return false;
    };
    let mut listed = Vec::with_capacity(items.len());
    for item in items {
        let Reply::Bytes(key) = item else {
            return false;
        };
        listed.push(key);
    }
    listed.sort();
    listed.len() == keys.len() && listed.iter().zip(keys).all(|(a, b)| *a == b)
}

/// Whether `command`, having replied `reply`, changed nothing in any state where that reply
/// is legal.
fn leaves_unchanged(command: &Command, reply: &Reply) -> bool {
    match command {
        Command::Get(_)
        | Command::StrLen(_)
        | Command::Exists(_)
        | Command::MGet(_)
        | Command::DbSize
        | Command::Keys => true,
        // Held back by its condition.
        Command::Set {
            when: SetWhen::IfMissing,
            get,
            ..
        } => matches!((get, reply), (false, Reply::Nil) | (true, Reply::Bytes(_))),
        Command::Set {
            when: SetWhen::IfExists,
            ..
        } => *reply == Reply::Nil,
        Command::GetDel(_) => *reply == Reply::Nil,
        Command::IncrBy { .. } => matches!(reply, Reply::Error(_)),
        Command::Del(_) | Command::MSetNx(_) => *reply == Reply::Int(0),
        // A `Versions` reply teaches the model versions: a change of its state.
        Command::Set { .. }
        | Command::Append { .. }
        | Command::MSet(_)
        | Command::FlushAll
        | Command::Versions(_) => false,
    }
}

/// Whether the request only reads, whatever the state.
fn only_reads(request: &Request) -> bool {
    let reads = |c: &Command| {
        matches!(
            c,
            Command::Get(_)
                | Command::StrLen(_)
                | Command::Exists(_)
                | Command::MGet(_)
                | Command::DbSize
                | Command::Keys
                | Command::Versions(_)
        )
    };
    match request {
        Request::Command(c) => reads(c),
        Request::Exec { commands, .. } => commands.iter().all(reads),
    }
}

/// A value as the service reads an integer: an optional `-` and decimal digits, no leading
/// zero (nor `-0`), no `+`, no spaces, within a signed 64-bit integer.
fn parse_integer(text: &[u8]) -> Option<i64> {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    let canonical = match digits {
        [] => false,
        [b'0'] => digits.len() == text.len(),
        [first, ..] => *first != b'0' && digits.iter().all(u8::is_ascii_digit),
    };
    if !canonical {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe_command(command: &Command) -> String {
    let keys = |keys: &[Bytes]| keys.iter().map(|k| show(k)).collect::<Vec<_>>().join(" ");
    let pairs = |pairs: &[(Bytes, Bytes)]| {
        pairs
            .iter()
            .map(|(k, v)| format!("{} {:?}", show(k), show(v)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    match command {
        Command::Get(k) => format!("GET {}", show(k)),
        Command::Set {
            key,
            value,
            when,
            get,
        } => {
            let when = match when {
                SetWhen::Always => "",
                SetWhen::IfMissing => " NX",
                SetWhen::IfExists => " XX",
            };
            let get = if *get { " GET" } else { "" };
            format!("SET {} {:?}{when}{get}", show(key), show(value))
        }
        Command::GetDel(k) => format!("GETDEL {}", show(k)),
        Command::StrLen(k) => format!("STRLEN {}", show(k)),
        Command::Append { key, value } => format!("APPEND {} {:?}", show(key), show(value)),
        Command::IncrBy { key, by } => format!("INCRBY {} {by}", show(key)),
        Command::Del(k) => format!("DEL {}", keys(k)),
        Command::Exists(k) => format!("EXISTS {}", keys(k)),
        Command::MGet(k) => format!("MGET {}", keys(k)),
        Command::MSet(p) => format!("MSET {}", pairs(p)),
        Command::MSetNx(p) => format!("MSETNX {}", pairs(p)),
        Command::DbSize => "DBSIZE".to_string(),
        Command::Keys => "KEYS *".to_string(),
        Command::FlushAll => "FLUSHALL".to_string(),
        Command::Versions(k) => format!("WATCH {}", keys(k)),
    }
}

fn describe_reply(reply: &Reply) -> String {
    match reply {
        Reply::Ok => "OK".to_string(),
        Reply::Nil => "nil".to_string(),
        Reply::Int(n) => n.to_string(),
        Reply::Bytes(b) => format!("{:?}", show(b)),
        Reply::Array(items) => {
            let items: Vec<String> = items.iter().map(describe_reply).collect();
            format!("[{}]", items.join(", "))
        }
        Reply::Error(e) => format!("({e})"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{check_operations, check_operations_verbose, CheckResult};

    const OPEN: u64 = u64::MAX;

    fn b(text: &str) -> Bytes {
        text.as_bytes().into()
    }

    fn op(
        client_id: u64,
        input: Request,
        output: Option<Reply>,
        call: u64,
        ret: u64,
    ) -> CommandsOperation {
        Operation {
            client_id,
            input,
            call,
            output,
            return_time: ret,
        }
    }

    /// A command called at `call` and answered `reply` at `ret`.
    fn cmd(client: u64, command: Command, reply: Reply, call: u64, ret: u64) -> CommandsOperation {
        op(client, Request::Command(command), Some(reply), call, ret)
    }

    fn exec(
        client: u64,
        watched: &[(&str, u64)],
        commands: Vec<Command>,
        reply: Option<Reply>,
        call: u64,
        ret: u64,
    ) -> CommandsOperation {
        let watched = watched.iter().map(|&(k, v)| (b(k), v)).collect();
        op(
            client,
            Request::Exec { watched, commands },
            reply,
            call,
            ret,
        )
    }

    fn set(key: &str, value: &str) -> Command {
        Command::Set {
            key: b(key),
            value: b(value),
            when: SetWhen::Always,
            get: false,
        }
    }

    fn get(key: &str) -> Command {
        Command::Get(b(key))
    }

    fn incr(key: &str, by: i64) -> Command {
        Command::IncrBy { key: b(key), by }
    }

    fn versions(keys: &[&str]) -> Command {
        Command::Versions(keys.iter().map(|k| b(k)).collect())
    }

    fn keys(keys: &[&str]) -> Vec<Bytes> {
        keys.iter().map(|k| b(k)).collect()
    }

    fn pairs(pairs: &[(&str, &str)]) -> Vec<(Bytes, Bytes)> {
        pairs.iter().map(|&(k, v)| (b(k), b(v))).collect()
    }

    fn text(value: &str) -> Reply {
        Reply::Bytes(b(value))
    }

    fn ints(values: &[i64]) -> Reply {
        Reply::Array(values.iter().map(|&v| Reply::Int(v)).collect())
    }

    fn check(history: &[CommandsOperation]) -> CheckResult {
        let budget = Some(Duration::from_secs(10));
        let result = check_operations(&CommandsModel, history, budget);
        let (verbose, _) = check_operations_verbose(&CommandsModel, history, budget);
        assert_eq!(result, verbose);
        result
    }

    /// `history` one operation after another: each returns before the next is called.
    fn sequential(steps: Vec<(Command, Reply)>) -> Vec<CommandsOperation> {
        steps
            .into_iter()
            .enumerate()
            .map(|(i, (c, r))| cmd(0, c, r, 2 * i as u64, 2 * i as u64 + 1))
            .collect()
    }

    #[test]
    fn every_command_in_sequence() {
        let h = sequential(vec![
            (get("a"), Reply::Nil),
            (set("a", "1"), Reply::Ok),
            (
                Command::Set {
                    key: b("a"),
                    value: b("2"),
                    when: SetWhen::IfMissing,
                    get: false,
                },
                Reply::Nil,
            ),
            (
                Command::Set {
                    key: b("b"),
                    value: b("x"),
                    when: SetWhen::IfExists,
                    get: true,
                },
                Reply::Nil,
            ),
            (
                Command::Set {
                    key: b("a"),
                    value: b("5"),
                    when: SetWhen::IfExists,
                    get: true,
                },
                text("1"),
            ),
            (incr("a", -7), Reply::Int(-2)),
            (
                Command::Append {
                    key: b("b"),
                    value: b("xy"),
                },
                Reply::Int(2),
            ),
            (
                incr("b", 1),
                Reply::Error("ERR value is not an integer".into()),
            ),
            (Command::StrLen(b("b")), Reply::Int(2)),
            (
                Command::MSetNx(pairs(&[("c", "3"), ("b", "q")])),
                Reply::Int(0),
            ),
            (
                Command::MSetNx(pairs(&[("c", "3"), ("d", "4")])),
                Reply::Int(1),
            ),
            (Command::DbSize, Reply::Int(4)),
            (
                Command::Keys,
                Reply::Array(vec![text("d"), text("b"), text("a"), text("c")]),
            ),
            (Command::Exists(keys(&["a", "zz", "a"])), Reply::Int(2)),
            (Command::Del(keys(&["a", "a", "zz", "d"])), Reply::Int(2)),
            (
                Command::MGet(keys(&["a", "b", "c"])),
                Reply::Array(vec![Reply::Nil, text("xy"), text("3")]),
            ),
            (Command::GetDel(b("b")), text("xy")),
            (Command::MSet(pairs(&[("a", "9"), ("a", "10")])), Reply::Ok),
            (get("a"), text("10")),
            (Command::FlushAll, Reply::Ok),
            (Command::DbSize, Reply::Int(0)),
        ]);
        assert_eq!(check(&h), CheckResult::Ok);
        // Each reply matters: change any one and the history is refused.
        for i in 0..h.len() {
            let mut wrong = h.clone();
            wrong[i].output = Some(match &h[i].output {
                Some(Reply::Int(n)) => Reply::Int(n + 1),
                Some(Reply::Nil) => text("?"),
                _ => Reply::Nil,
            });
            assert_eq!(check(&wrong), CheckResult::Illegal, "step {i} changed");
        }
    }

    #[test]
    fn incr_reads_integers_as_the_service_does() {
        for (value, ok) in [
            ("0", true),
            ("-12", true),
            ("007", false),
            ("-0", false),
            ("+1", false),
            ("", false),
            (" 1", false),
        ] {
            let h = sequential(vec![
                (set("n", value), Reply::Ok),
                (
                    incr("n", 1),
                    Reply::Int(value.parse::<i64>().unwrap_or(0) + 1),
                ),
            ]);
            let expected = if ok {
                CheckResult::Ok
            } else {
                CheckResult::Illegal
            };
            assert_eq!(check(&h), expected, "INCRBY of {value:?}");
        }
        let overflow = sequential(vec![
            (set("n", &i64::MAX.to_string()), Reply::Ok),
            (incr("n", 1), Reply::Error("ERR overflow".into())),
            (get("n"), text(&i64::MAX.to_string())),
        ]);
        assert_eq!(check(&overflow), CheckResult::Ok);
    }

    /// An MSET writes its keys at one point: an MGET cannot see half of it.
    #[test]
    fn a_multi_key_write_is_seen_whole_or_not_at_all() {
        for (seen, expected) in [
            (vec![text("1"), text("1")], CheckResult::Ok),
            (vec![Reply::Nil, Reply::Nil], CheckResult::Ok),
            (vec![text("1"), Reply::Nil], CheckResult::Illegal),
        ] {
            let h = [
                cmd(
                    0,
                    Command::MSet(pairs(&[("a", "1"), ("b", "1")])),
                    Reply::Ok,
                    0,
                    10,
                ),
                cmd(
                    1,
                    Command::MGet(keys(&["a", "b"])),
                    Reply::Array(seen.clone()),
                    1,
                    9,
                ),
            ];
            assert_eq!(check(&h), expected, "MGET saw {seen:?}");
        }
    }

    /// A transaction runs at one point; another client's write cannot land between two of its
    /// commands.
    #[test]
    fn a_transaction_interleaved_with_another_write_is_refused() {
        let incrs = vec![incr("k", 1), incr("k", 1)];
        let atomic = [
            exec(0, &[], incrs.clone(), Some(ints(&[1, 2])), 0, 10),
            cmd(1, incr("k", 1), Reply::Int(3), 1, 9),
        ];
        assert_eq!(check(&atomic), CheckResult::Ok);
        let split = [
            exec(0, &[], incrs, Some(ints(&[1, 3])), 0, 10),
            cmd(1, incr("k", 1), Reply::Int(2), 1, 9),
        ];
        assert_eq!(check(&split), CheckResult::Illegal);
        // Across keys too: the transaction moves a unit from a to b, and a reader sees it
        // in flight.
        let transfer = vec![incr("a", -1), incr("b", 1)];
        let torn = [
            exec(0, &[], transfer, Some(ints(&[-1, 1])), 0, 10),
            cmd(
                1,
                Command::MGet(keys(&["a", "b"])),
                Reply::Array(vec![text("-1"), Reply::Nil]),
                1,
                9,
            ),
        ];
        assert_eq!(check(&torn), CheckResult::Illegal);
    }

    /// WATCH: after another client's write, the transaction must abort; without one, it must
    /// run; concurrently with one, either.
    #[test]
    fn a_watched_transaction_aborts_exactly_when_its_key_changed() {
        let cas = |reply| exec(0, &[("k", 7)], vec![set("k", "3")], reply, 20, 30);
        let ran = || Some(Reply::Array(vec![Reply::Ok]));
        let before = |h: &mut Vec<CommandsOperation>| {
            h.push(cmd(0, set("k", "1"), Reply::Ok, 0, 1));
            h.push(cmd(0, versions(&["k"]), ints(&[7]), 2, 3));
        };
        let mut changed = Vec::new();
        before(&mut changed);
        changed.push(cmd(1, set("k", "2"), Reply::Ok, 4, 5));
        let mut aborted = changed.clone();
        aborted.push(cas(Some(Reply::Nil)));
        assert_eq!(check(&aborted), CheckResult::Ok);
        changed.push(cas(ran()));
        assert_eq!(check(&changed), CheckResult::Illegal);

        let mut quiet = Vec::new();
        before(&mut quiet);
        let mut runs = quiet.clone();
        runs.push(cas(ran()));
        runs.push(cmd(1, get("k"), text("3"), 31, 32));
        assert_eq!(check(&runs), CheckResult::Ok);
        quiet.push(cas(Some(Reply::Nil)));
        assert_eq!(check(&quiet), CheckResult::Illegal);

        for reply in [Some(Reply::Nil), ran(), None] {
            let mut concurrent = Vec::new();
            before(&mut concurrent);
            concurrent.push(cmd(1, set("k", "2"), Reply::Ok, 21, 29));
            concurrent.push(cas(reply.clone()));
            assert_eq!(check(&concurrent), CheckResult::Ok, "EXEC -> {reply:?}");
        }
    }

    /// A watched key that is missing has version 0: creating it fails the check, and so does
    /// watching a version that no longer holds after a FLUSHALL.
    #[test]
    fn missing_keys_have_version_zero() {
        let h = sequential(vec![
            (versions(&["k"]), ints(&[0])),
            (set("k", "1"), Reply::Ok),
            (versions(&["k"]), ints(&[0])),
        ]);
        assert_eq!(check(&h), CheckResult::Illegal);
        let mut h = sequential(vec![
            (set("k", "1"), Reply::Ok),
            (versions(&["k", "other"]), ints(&[4, 0])),
            (Command::FlushAll, Reply::Ok),
            (versions(&["k"]), ints(&[0])),
        ]);
        assert_eq!(check(&h), CheckResult::Ok);
        h.push(exec(
            0,
            &[("k", 4)],
            vec![get("k")],
            Some(Reply::Nil),
            10,
            11,
        ));
        assert_eq!(check(&h), CheckResult::Ok);
        h.pop();
        h.push(exec(
            0,
            &[("k", 0)],
            vec![get("k")],
            Some(Reply::Nil),
            10,
            11,
        ));
        assert_eq!(check(&h), CheckResult::Illegal);
    }

    #[test]
    fn versions_only_move_forward_and_only_on_writes() {
        let base = vec![(set("k", "1"), Reply::Ok), (versions(&["k"]), ints(&[7]))];
        let with = |more: Vec<(Command, Reply)>| {
            let mut steps = base.clone();
            steps.extend(more);
            check(&sequential(steps))
        };
        assert_eq!(with(vec![(versions(&["k"]), ints(&[7]))]), CheckResult::Ok);
        assert_eq!(
            with(vec![(versions(&["k"]), ints(&[8]))]),
            CheckResult::Illegal
        );
        // A write, even of the same value, makes it newer than anything seen before.
        let rewrite = (set("k", "1"), Reply::Ok);
        assert_eq!(
            with(vec![rewrite.clone(), (versions(&["k"]), ints(&[9]))]),
            CheckResult::Ok
        );
        assert_eq!(
            with(vec![rewrite.clone(), (versions(&["k"]), ints(&[7]))]),
            CheckResult::Illegal
        );
        // Newer than every version seen, of any key.
        assert_eq!(
            with(vec![
                (set("j", "1"), Reply::Ok),
                (versions(&["j"]), ints(&[12])),
                rewrite,
                (versions(&["k"]), ints(&[10])),
            ]),
            CheckResult::Illegal
        );
        // A condition that holds a write back, or a failed INCR, writes nothing.
        let held = Command::Set {
            key: b("k"),
            value: b("2"),
            when: SetWhen::IfMissing,
            get: false,
        };
        assert_eq!(
            with(vec![
                (held, Reply::Nil),
                (
                    Command::Append {
                        key: b("k"),
                        value: b("x")
                    },
                    Reply::Int(2)
                ),
                (incr("k", 1), Reply::Error("ERR".into())),
                (versions(&["k"]), ints(&[7])),
            ]),
            CheckResult::Illegal
        );
    }

    /// Everything a transaction writes has its one log index, so a version it reads does not
    /// bound the versions of its later writes: the floor is raised only after it.
    #[test]
    fn a_transaction_writes_at_one_index() {
        let write_two = |reads: &[i64]| {
            sequential(vec![
                (versions(&["a"]), ints(&[0])),
                (Command::MSet(pairs(&[("x", "1")])), Reply::Ok),
                (versions(&["x"]), ints(&[5])),
            ])
            .into_iter()
            .chain([
                exec(
                    0,
                    &[("x", 5)],
                    vec![set("a", "1"), versions(&["a"]), set("b", "1")],
                    Some(Reply::Array(vec![Reply::Ok, ints(&[9]), Reply::Ok])),
                    10,
                    11,
                ),
                cmd(0, versions(&["a", "b"]), ints(reads), 12, 13),
            ])
            .collect::<Vec<_>>()
        };
        assert_eq!(check(&write_two(&[9, 9])), CheckResult::Ok);
        assert_eq!(check(&write_two(&[9, 3])), CheckResult::Illegal);
    }

    /// An unanswered watched transaction may have run or not.
    #[test]
    fn an_unanswered_watched_transaction_may_go_either_way() {
        for seen in ["1", "3"] {
            let h = vec![
                cmd(0, set("k", "1"), Reply::Ok, 0, 1),
                cmd(0, versions(&["k"]), ints(&[7]), 2, 3),
                exec(0, &[("k", 7)], vec![set("k", "3")], None, 4, OPEN),
                cmd(1, get("k"), text(seen), 5, 6),
            ];
            assert_eq!(check(&h), CheckResult::Ok, "GET saw {seen:?}");
        }
        // But it cannot have run after another write changed the key.
        let h = vec![
            cmd(0, set("k", "1"), Reply::Ok, 0, 1),
            cmd(0, versions(&["k"]), ints(&[7]), 2, 3),
            cmd(1, set("k", "2"), Reply::Ok, 4, 5),
            exec(0, &[("k", 7)], vec![set("k", "3")], None, 6, OPEN),
            cmd(1, get("k"), text("3"), 7, 8),
        ];
        assert_eq!(check(&h), CheckResult::Illegal);
    }

    #[test]
    fn unanswered_reads_are_left_out() {
        let h = [
            exec(0, &[], vec![get("k")], None, 0, OPEN),
            cmd(1, set("k", "1"), Reply::Ok, 1, 2),
            exec(0, &[], vec![set("k", "2")], None, 3, OPEN),
        ];
        assert_eq!(CommandsModel.partition(&h), vec![vec![1, 2]]);
    }

    #[test]
    fn describe_labels() {
        let m = CommandsModel;
        let input = Request::Exec {
            watched: vec![(b("k"), 7)],
            commands: vec![incr("k", 2), Command::MGet(keys(&["a", "b"]))],
        };
        let reply = Some(Reply::Array(vec![
            Reply::Int(3),
            Reply::Array(vec![text("x"), Reply::Nil]),
        ]));
        assert_eq!(
            m.describe(&input, &reply),
            "EXEC watching k@7 [INCRBY k 2; MGET a b] -> [3, [\"x\", nil]]"
        );
        assert_eq!(
            m.describe(&Request::Command(set("k", "v")), &None),
            "SET k \"v\" -> ?"
        );
        let mut state = Map::default();
        state.entries.insert(
            b("k"),
            Entry {
                value: b("v"),
                version: Version::Above(3),
            },
        );
        state.floor = 3;
        assert_eq!(m.describe_state(&state), "{k=\"v\"@>3} seen up to @3");
    }
}
