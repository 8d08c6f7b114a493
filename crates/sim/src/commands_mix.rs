//! A simulated client's random mix of Redis commands over a few keys, for the whole-map
//! checker ([`crate::commands_check`]): every command the state machine knows, transactions
//! (MULTI/EXEC) of several, and WATCH check-and-sets (read the versions, read the values,
//! then a transaction that holds only if nobody wrote the keys meanwhile).
//!
//! Keys are few, so that clients collide all the time (multi-key commands, aborted
//! transactions), and values short, so that the search's states stay small. Values are small
//! integers half of the time, so that INCRBY mostly succeeds, and unique tags otherwise.

use crate::kv_cluster::{KvCluster, SimClerk};
use bytes::Bytes;
use kv::{ClerkError, Command, OpKind, SetWhen, Value};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Which commands the mix may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Every command, those that see every key (DBSIZE, KEYS, SCAN, FLUSHALL) included.
    WholeMap,
    /// Only commands that name their keys: when other keys are in use, which the course's
    /// model checks key by key.
    OwnKeys,
}

/// One client's workload.
pub struct CommandMix {
    keys: Vec<Bytes>,
    reach: Reach,
    client: u64,
    rng: ChaCha8Rng,
    /// Values written so far, to make tags unique.
    written: u64,
}

impl CommandMix {
    pub fn new(keys: &[String], reach: Reach, client: u64, seed: u64) -> CommandMix {
        assert!(!keys.is_empty(), "a command mix needs keys");
        CommandMix {
            keys: keys.iter().map(|k| Bytes::from(k.clone())).collect(),
            reach,
            client,
            rng: ChaCha8Rng::seed_from_u64(seed),
            written: 0,
        }
    }

    /// One step, recorded under the client's number: a command (70%), a transaction (15%) or
    /// a WATCH check-and-set (15%). An error is a call the service refused (an expired
    /// session, say): the history has it as it should, and the step ends there.
    pub async fn step(&mut self, cfg: &KvCluster, ck: &mut SimClerk) -> Result<(), ClerkError> {
        match self.rng.gen_range(0..100) {
            0..70 => {
                let command = self.command();
                cfg.try_recorded(ck, OpKind::Command(command), self.client)
                    .await?;
            }
            70..85 => {
                let commands = (0..self.rng.gen_range(2..=4))
                    .map(|_| self.command())
                    .collect();
                let exec = OpKind::Exec {
                    watched: Vec::new(),
                    commands,
                };
                cfg.try_recorded(ck, exec, self.client).await?;
            }
            _ => self.check_and_set(cfg, ck).await?,
        }
        Ok(())
    }

    /// WATCH keys, read them, and write what was read, changed, in a transaction that runs
    /// only if none was written since the WATCH.
    async fn check_and_set(
        &mut self,
        cfg: &KvCluster,
        ck: &mut SimClerk,
    ) -> Result<(), ClerkError> {
        let keys = self.keys(2);
        let versions = cfg
            .try_recorded(
                ck,
                OpKind::Command(Command::Versions(keys.clone())),
                self.client,
            )
            .await?;
        // A reply of the wrong shape ends the step: it is in the history, for the checker to
        // judge.
        let Value::Array(versions) = versions else {
            return Ok(());
        };
        let watched: Option<Vec<(Bytes, u64)>> = keys
            .iter()
            .zip(versions)
            .map(|(key, version)| match version {
                Value::Int(v) => Some((key.clone(), v as u64)),
                _ => None,
            })
            .collect();
        let Some(watched) = watched else {
            return Ok(());
        };
        let values = cfg
            .try_recorded(
                ck,
                OpKind::Command(Command::MGet(keys.clone())),
                self.client,
            )
            .await?;
        let Value::Array(values) = values else {
            return Ok(());
        };
        let mut commands: Vec<Command> = keys
            .iter()
            .zip(values)
            .map(|(key, value)| self.rewrite(key.clone(), value))
            .collect();
        if self.rng.gen_bool(0.3) {
            commands.push(self.command());
        }
        let exec = OpKind::Exec { watched, commands };
        cfg.try_recorded(ck, exec, self.client).await?;
        Ok(())
    }

    /// What a check-and-set writes to a key it read: one more if it was a number, a fresh
    /// value otherwise.
    fn rewrite(&mut self, key: Bytes, read: Value) -> Command {
        let number = match &read {
            Value::Bytes(b) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse::<i64>().ok()),
            _ => None,
        };
        match number {
            Some(n) if n.abs() < 1_000_000 => Command::Set {
                key,
                value: Bytes::from((n + 1).to_string()),
                when: SetWhen::Always,
                get: false,
            },
            _ => Command::Set {
                key,
                value: self.value(),
                when: SetWhen::Always,
                get: true,
            },
        }
    }

    pub(crate) fn command(&mut self) -> Command {
        let roll = self.rng.gen_range(0..100);
        match roll {
            0..10 => Command::Get(self.key()),
            10..26 => {
                let when = *[
                    SetWhen::Always,
                    SetWhen::Always,
                    SetWhen::IfMissing,
                    SetWhen::IfExists,
                ]
                .choose(&mut self.rng)
                .expect("choices");
                Command::Set {
                    key: self.key(),
                    value: self.value(),
                    when,
                    get: self.rng.gen_bool(0.3),
                }
            }
            26..31 => Command::GetDel(self.key()),
            31..34 => Command::StrLen(self.key()),
            34..42 => Command::Append {
                key: self.key(),
                value: Bytes::from_static(
                    [&b"1"[..], b"0", b"x"]
                        .choose(&mut self.rng)
                        .expect("choices"),
                ),
            },
            42..54 => Command::IncrBy {
                key: self.key(),
                by: self.rng.gen_range(-3..=5),
            },
            54..59 => Command::Del(self.keys(3)),
            59..63 => Command::Exists(self.keys(3)),
            63..69 => Command::MGet(self.keys(3)),
            69..76 => Command::MSet(self.pairs()),
            76..81 => Command::MSetNx(self.pairs()),
            81.. if self.reach == Reach::OwnKeys => Command::Get(self.key()),
            81..87 => Command::DbSize,
            87..91 => Command::Keys(Bytes::from_static(b"*")),
            91..95 => Command::Scan {
                cursor: 0,
                pattern: None,
                // More than there are keys: one call goes through the whole map.
                count: 4 * self.keys.len(),
            },
            // Rare: it undoes everything the others did.
            95 => Command::FlushAll,
            _ => Command::Exists(self.keys(3)),
        }
    }

    fn key(&mut self) -> Bytes {
        self.keys.choose(&mut self.rng).expect("keys").clone()
    }

    /// One to `most` keys, possibly the same one twice (as a client may ask).
    fn keys(&mut self, most: usize) -> Vec<Bytes> {
        (0..self.rng.gen_range(1..=most))
            .map(|_| self.key())
            .collect()
    }

    fn pairs(&mut self) -> Vec<(Bytes, Bytes)> {
        (0..self.rng.gen_range(1..=3))
            .map(|_| (self.key(), self.value()))
            .collect()
    }

    fn value(&mut self) -> Bytes {
        self.written += 1;
        if self.rng.gen_bool(0.5) {
            Bytes::from(self.rng.gen_range(-20..100).to_string())
        } else {
            Bytes::from(format!("{}.{}", self.client, self.written))
        }
    }
}
