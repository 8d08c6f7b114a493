//! Checks the Redis commands and transactions of a recorded history against the whole-map
//! model ([`linearizability::commands::CommandsModel`]), with the reports and failure
//! messages of [`crate::kv_check`]. The course's `Get`, `Put` and `Append` are left to
//! `kv_check`, key by key: a test that records both must keep them on keys of their own, and
//! must not send the commands that see every key (DBSIZE, KEYS, SCAN, FLUSHALL).

use crate::history::Record;
use crate::kv_check::{check_operations_reported, CheckError};
use kv::{Command as KvCommand, OpKind, Value};
use linearizability::commands::{
    Bytes, Command, CommandsModel, CommandsOperation, Reply, Request, SetWhen,
};
use linearizability::Operation;
use std::time::Instant;

/// The commands and transactions of `history`, as the model's operations.
pub fn to_operations(history: &[Record]) -> Vec<CommandsOperation> {
    history
        .iter()
        .filter_map(|r| {
            let output = (r.ret != u64::MAX).then(|| reply(&r.output));
            let (input, output) = match &r.kind {
                OpKind::Command(c) => {
                    let (command, output) = command(c, output)?;
                    (Request::Command(command), output)
                }
                OpKind::Exec { watched, commands } => exec(watched, commands, output),
                _ => return None,
            };
            Some(Operation {
                client_id: r.client,
                input,
                call: r.call,
                output,
                return_time: r.ret,
            })
        })
        .collect()
}

/// A transaction, without the reads the model does not follow (and their replies): reads
/// change nothing, so leaving them out keeps every other command's outcome.
fn exec(
    watched: &[(bytes::Bytes, u64)],
    commands: &[KvCommand],
    output: Option<Reply>,
) -> (Request, Option<Reply>) {
    let watched = watched.iter().map(|(k, v)| (bytes(k), *v)).collect();
    let replies: Vec<Option<Reply>> = match &output {
        Some(Reply::Array(items)) if items.len() == commands.len() => {
            items.iter().cloned().map(Some).collect()
        }
        // Aborted, unanswered, or malformed (which the model then refuses as it is).
        _ => {
            let commands = commands
                .iter()
                .filter_map(|c| command(c, None))
                .map(|(c, _)| c);
            let request = Request::Exec {
                watched,
                commands: commands.collect(),
            };
            return (request, output);
        }
    };
    let (kept, replies): (Vec<Command>, Vec<Reply>) = commands
        .iter()
        .zip(replies)
        .filter_map(|(c, r)| command(c, r))
        .map(|(c, r)| (c, r.expect("a reply for every command")))
        .unzip();
    let request = Request::Exec {
        watched,
        commands: kept,
    };
    (request, Some(Reply::Array(replies)))
}

/// A command as the model's, with its reply; `None` for a read the model does not follow:
/// a SCAN that did not go through in one call, or KEYS with a pattern other than `*`. A full
/// SCAN is the model's KEYS.
fn command(c: &KvCommand, output: Option<Reply>) -> Option<(Command, Option<Reply>)> {
    let keys = |keys: &[bytes::Bytes]| keys.iter().map(|k| bytes(k)).collect();
    let pairs = |pairs: &[(bytes::Bytes, bytes::Bytes)]| {
        pairs.iter().map(|(k, v)| (bytes(k), bytes(v))).collect()
    };
    let command = match c {
        KvCommand::Get(k) => Command::Get(bytes(k)),
        KvCommand::Set {
            key,
            value,
            when,
            get,
        } => Command::Set {
            key: bytes(key),
            value: bytes(value),
            when: match when {
                kv::SetWhen::Always => SetWhen::Always,
                kv::SetWhen::IfMissing => SetWhen::IfMissing,
                kv::SetWhen::IfExists => SetWhen::IfExists,
            },
            get: *get,
        },
        KvCommand::GetDel(k) => Command::GetDel(bytes(k)),
        KvCommand::StrLen(k) => Command::StrLen(bytes(k)),
        KvCommand::Append { key, value } => Command::Append {
            key: bytes(key),
            value: bytes(value),
        },
        KvCommand::IncrBy { key, by } => Command::IncrBy {
            key: bytes(key),
            by: *by,
        },
        KvCommand::Del(k) => Command::Del(keys(k)),
        KvCommand::Exists(k) => Command::Exists(keys(k)),
        KvCommand::MGet(k) => Command::MGet(keys(k)),
        KvCommand::MSet(p) => Command::MSet(pairs(p)),
        KvCommand::MSetNx(p) => Command::MSetNx(pairs(p)),
        KvCommand::DbSize => Command::DbSize,
        KvCommand::Keys(pattern) if &pattern[..] == b"*" => Command::Keys,
        KvCommand::Keys(_) => return None,
        KvCommand::Scan {
            cursor: 0,
            pattern: None,
            ..
        } => {
            let Some(Reply::Array(reply)) = &output else {
                return None;
            };
            return match &reply[..] {
                [Reply::Bytes(next), keys] if &next[..] == b"0" => {
                    Some((Command::Keys, Some(keys.clone())))
                }
                _ => None,
            };
        }
        KvCommand::Scan { .. } => return None,
        KvCommand::FlushAll => Command::FlushAll,
        KvCommand::Versions(k) => Command::Versions(keys(k)),
    };
    Some((command, output))
}

fn bytes(b: &[u8]) -> Bytes {
    Bytes::from(b)
}

fn reply(value: &Value) -> Reply {
    match value {
        Value::Ok => Reply::Ok,
        Value::Nil => Reply::Nil,
        Value::Int(n) => Reply::Int(*n),
        Value::Bytes(b) => Reply::Bytes(bytes(b)),
        Value::Array(items) => Reply::Array(items.iter().map(reply).collect()),
        Value::Error(e) => Reply::Error(e.clone()),
    }
}

/// Checks the commands of `history` within [`crate::kv_check::CHECK_BUDGET`]; unless they are
/// proven linearizable, writes the report under `target/linearizability/`
/// (`<name>-commands-seed<n>.html`) and says why.
pub fn check_history(history: &[Record], name: &str, seed: u64) -> Result<(), CheckError> {
    let ops = to_operations(history);
    let report = format!("{name}-commands");
    check_operations_reported(&CommandsModel, &ops, &report, seed, "commands history")
}

/// Panics unless the checker proves the commands of `history` linearizable.
pub fn check_commands_linearizable(history: &[Record], name: &str, seed: u64) {
    let t0 = Instant::now();
    let result = check_history(history, name, seed);
    eprintln!(
        "{name}: checker decided {} on {} commands in {:?}",
        if result.is_ok() { "Ok" } else { "against" },
        to_operations(history).len(),
        t0.elapsed()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands_mix::{CommandMix, Reach};
    use kv::{KvStateMachine, Limits, Op};
    use linearizability::{check_operations, CheckResult};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Applies `kinds` to a state machine one after another, as one client's calls at
    /// increasing (not always consecutive) log indexes, and records them.
    fn apply_in_sequence(rng: &mut ChaCha8Rng, kinds: Vec<OpKind>) -> Vec<Record> {
        let mut sm = KvStateMachine::new(Limits::default(), 10);
        sm.apply(1, &Op::open(1, 1)).expect("open");
        let mut index = 1;
        kinds
            .into_iter()
            .zip(1..)
            .map(|(kind, seq)| {
                index += rng.gen_range(1..3);
                let op = Op::new(1, seq, kind);
                let output = sm.apply(index, &op).expect("applied");
                Record {
                    client: 1,
                    kind: op.kind,
                    output,
                    call: 2 * seq,
                    ret: 2 * seq + 1,
                    call_time: 0,
                    ret_time: 0,
                }
            })
            .collect()
    }

    /// The model agrees with the state machine on every command of the mix, and on
    /// transactions watching current, stale and made-up versions: a sequential history of
    /// them is accepted, and with one transaction's outcome flipped, refused.
    #[test]
    fn the_model_agrees_with_the_state_machine() {
        let keys: Vec<String> = (0..4).map(|k| format!("k{k}")).collect();
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut mix = CommandMix::new(&keys, Reach::WholeMap, 1, seed);
            // Versions are learnt from a first pass; the second replays it with the
            // transactions watching what the first pass read.
            let mut kinds = Vec::new();
            for _ in 0..300 {
                let kind = match rng.gen_range(0..10) {
                    0..6 => OpKind::Command(mix.command()),
                    6..8 => OpKind::Exec {
                        watched: Vec::new(),
                        commands: (0..rng.gen_range(1..4)).map(|_| mix.command()).collect(),
                    },
                    _ => OpKind::Command(KvCommand::Versions(vec![
                        keys[rng.gen_range(0..4)].clone().into(),
                        keys[rng.gen_range(0..4)].clone().into(),
                    ])),
                };
                kinds.push(kind);
            }
            let first = apply_in_sequence(&mut ChaCha8Rng::seed_from_u64(seed), kinds.clone());
            let mut watched_kinds = Vec::new();
            let mut last_watch: Option<Vec<(bytes::Bytes, u64)>> = None;
            for (kind, record) in kinds.into_iter().zip(&first) {
                if let (OpKind::Command(KvCommand::Versions(keys)), Value::Array(versions)) =
                    (&kind, &record.output)
                {
                    let versions = versions.iter().map(|v| match v {
                        Value::Int(v) => *v as u64,
                        _ => panic!("version {v:?}"),
                    });
                    last_watch = Some(keys.iter().cloned().zip(versions).collect());
                }
                let watch = match (&kind, &last_watch) {
                    (OpKind::Exec { .. }, Some(w)) if rng.gen_bool(0.7) => {
                        let mut w = w.clone();
                        if rng.gen_bool(0.1) {
                            w[0].1 = rng.gen_range(0..1000);
                        }
                        w
                    }
                    _ => Vec::new(),
                };
                watched_kinds.push(match kind {
                    OpKind::Exec { commands, .. } => OpKind::Exec {
                        watched: watch,
                        commands,
                    },
                    other => other,
                });
            }
            // The same indexes, so the versions read match the first pass up to the first
            // transaction that aborts now; from there they differ, which is fine: the
            // history is whatever this pass did.
            let history = apply_in_sequence(&mut ChaCha8Rng::seed_from_u64(seed), watched_kinds);
            let aborted = history
                .iter()
                .filter(|r| matches!(r.kind, OpKind::Exec { .. }) && r.output == Value::Nil)
                .count();
            let ran_watching = history
                .iter()
                .filter(|r| {
                    matches!(&r.kind, OpKind::Exec { watched, .. } if !watched.is_empty())
                        && r.output != Value::Nil
                })
                .count();
            assert!(
                aborted > 0 && ran_watching > 0,
                "seed {seed}: {aborted} aborted, {ran_watching} ran"
            );
            let ops = to_operations(&history);
            assert_eq!(ops.len(), history.len());
            assert_eq!(
                check_operations(&CommandsModel, &ops, None),
                CheckResult::Ok,
                "seed {seed}"
            );
            // A watched transaction that ran, said to have aborted: refused.
            let flip = history
                .iter()
                .position(|r| {
                    matches!(&r.kind, OpKind::Exec { watched, .. } if !watched.is_empty())
                        && r.output != Value::Nil
                })
                .expect("one ran");
            let mut wrong = ops.clone();
            wrong[flip].output = Some(Reply::Nil);
            assert_eq!(
                check_operations(&CommandsModel, &wrong, None),
                CheckResult::Illegal,
                "seed {seed}: flipped {flip}"
            );
        }
    }
}
