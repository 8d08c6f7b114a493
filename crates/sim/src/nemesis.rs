//! The nemesis: one seed builds a key/value cluster, runs Clerks against it while a nemesis
//! injects faults for 30–60 virtual seconds, then heals everything and checks the outcome —
//! in the manner of TigerBeetle's VOPR and FoundationDB's simulator.
//!
//! The seed chooses everything: 3, 5 or 7 servers; 3–8 Clerks; clocks that tick up to 20%
//! fast or slow; and the faults, one step every 20–800 ms:
//!
//! - partitions of several shapes: random halves, the leader cut off, a bridge node that both
//!   halves see, random one-way links; and healing;
//! - crashes at any crash point (inside a `Ready`: during persist, after persist, after some
//!   messages, while applying; or between `Ready`s), with restarts after 0–3 s;
//! - message loss, duplication, jitter, long reordering and long delays (0.1–3 s), with rates
//!   that change during the run; lossy client links;
//! - in the [`Variant::DeposedReaders`] runs, Clerks left reading at a leader cut off from the
//!   others, while the rest reach only the majority.
//!
//! After healing, it checks (each failure names its kind in brackets):
//!
//! - `[liveness]`: every Clerk completes the call it was in, and then one more, in bounded time;
//! - `[not linearizable]`: the whole history, by the checker (`[checker timeout]` if undecided):
//!   the course's operations key by key, the Redis commands and transactions as one map;
//! - `[lost write]` / `[duplicate write]`: every acknowledged append is in the final value of
//!   its key exactly once, and no append appears twice;
//! - `[divergence]`: all replicas apply the same log prefix and hold the same state;
//! - and throughout the run, the network's Election Safety and Log Matching checks, the
//!   core's own assertions, and any other panic.

use crate::commands_check;
use crate::commands_mix::{CommandMix, Reach};
use crate::incarnation::CrashPolicy;
use crate::kv_check::{check_history, report_path, CheckError};
use crate::kv_cluster::{KvCluster, KvOptions, SimClerk};
use crate::net::NetFaults;
use bytes::Bytes;
use kv::{KvConfig, OpKind, SnapshotPolicy};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

/// How long each Clerk may take, after healing, to finish the call it was in.
const HEAL_PATIENCE: Duration = Duration::from_secs(15);
/// How long each Clerk may take, after that, for one more call.
const FRESH_CALL_PATIENCE: Duration = Duration::from_secs(5);

/// What one seed's run did.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub servers: usize,
    pub clients: usize,
    /// Virtual seconds of faults.
    pub fault_secs: u64,
    /// Operations in the checked history.
    pub operations: usize,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
}

/// The shape of a run, drawn from the seed.
struct Plan {
    servers: usize,
    clients: usize,
    /// Keys that only get appends (checked for lost and duplicated writes).
    append_keys: Vec<String>,
    /// Keys that also get puts.
    mixed_keys: Vec<String>,
    /// Keys of the Redis commands and transactions ([`CommandMix`]), checked as one map.
    command_keys: Vec<String>,
    fault_time: Duration,
    ticks: Vec<Duration>,
    kv: KvConfig,
    noop_on_election: bool,
}

impl Plan {
    fn draw(rng: &mut ChaCha8Rng) -> Plan {
        let servers = *[3, 5, 5, 7].choose(rng).expect("choices");
        let clients = rng.gen_range(3..=8);
        let append_keys = (0..rng.gen_range(2..=4)).map(|k| format!("a{k}")).collect();
        let mixed_keys = (0..rng.gen_range(1..=3)).map(|k| format!("m{k}")).collect();
        let command_keys = (0..rng.gen_range(2..=4)).map(|k| format!("c{k}")).collect();
        let fault_time = Duration::from_secs(rng.gen_range(30..=60));
        // Half the runs have clocks that drift apart by up to 20% either way.
        let skewed = rng.gen_bool(0.5);
        let ticks = (0..servers)
            .map(|_| {
                let factor = if skewed { rng.gen_range(0.8..1.2) } else { 1.0 };
                Duration::from_micros((10_000.0 * factor) as u64)
            })
            .collect();
        // Snapshots after a few entries, so that logs are compacted and InstallSnapshot sent
        // all the time (one run in eight without); a session table that can hold about as
        // many sessions as there are Clerks, so that sessions are evicted now and then.
        let snapshots = match rng.gen_range(0..8) {
            0 => SnapshotPolicy::default(),
            1..=3 => SnapshotPolicy {
                max_log_bytes: Some(rng.gen_range(300..5000)),
                ..SnapshotPolicy::default()
            },
            _ => SnapshotPolicy {
                max_log_entries: Some(rng.gen_range(5..200)),
                ..SnapshotPolicy::default()
            },
        };
        let kv = KvConfig {
            snapshots,
            max_sessions: clients + rng.gen_range(0..4),
            ..KvConfig::default()
        };
        // A quarter of the runs without the leader's no-op: entries of earlier terms then wait
        // for a client's entry to commit, the situation of the paper's Figure 8.
        let noop_on_election = !rng.gen_ratio(1, 4);
        Plan {
            servers,
            clients,
            append_keys,
            mixed_keys,
            command_keys,
            fault_time,
            ticks,
            kv,
            noop_on_election,
        }
    }
}

/// Which faults a run may inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Those of the module's description.
    Standard,
    /// Those, with the leader cut off four times as often, and each time about half the
    /// Clerks left reaching only it, reading, and the others only the majority, until the
    /// partition heals: a deposed leader that answers reads without the majority's word
    /// (thesis §6.4) is caught answering them stale. Its own variant so that the seeds of
    /// `Standard` replay as they always did.
    DeposedReaders,
}

/// One nemesis run on `seed`. Panics, with the kind of violation in brackets, if any check
/// fails.
pub async fn run(seed: u64) -> Outcome {
    run_variant(seed, Variant::Standard).await
}

/// [`run`] with the faults of `variant`.
pub async fn run_variant(seed: u64, variant: Variant) -> Outcome {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let plan = Plan::draw(&mut rng);
    let options = KvOptions {
        ticks: plan.ticks.clone(),
        // A crashed node may run on for a while, so that most crashes find a crash point
        // inside a `Ready` even on a lightly loaded node.
        crashes: CrashPolicy {
            immediate_one_in: 5,
            armed_deadline: Duration::from_millis(400),
        },
        kv: plan.kv.clone(),
        noop_on_election: plan.noop_on_election,
        ..KvOptions::new(plan.servers, false)
    };
    let cfg = KvCluster::with_options(options, rng.gen());
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let links = Arc::new(Mutex::new(ClerkLinks::default()));
    let clients: Vec<JoinHandle<SimClerk>> = (0..plan.clients as u64)
        .map(|id| {
            // The commands see only their own keys: DBSIZE, KEYS, SCAN and FLUSHALL would
            // see, or wipe, the keys the course's model checks one by one.
            let mix = CommandMix::new(&plan.command_keys, Reach::OwnKeys, id, rng.gen());
            let client = Client {
                cfg: cfg.clone(),
                id,
                rng: ChaCha8Rng::seed_from_u64(rng.gen()),
                mix,
                append_keys: plan.append_keys.clone(),
                mixed_keys: plan.mixed_keys.clone(),
                acked: acked.clone(),
                stop: stop.clone(),
                links: links.clone(),
            };
            tokio::spawn(client.run())
        })
        .collect();

    let mut nemesis = Nemesis {
        cfg: cfg.clone(),
        rng: ChaCha8Rng::seed_from_u64(rng.gen()),
        restarts: BTreeMap::new(),
        variant,
        links,
    };
    nemesis.run_for(plan.fault_time).await;
    nemesis.heal();

    // Liveness: every Clerk finishes the call it was in, then makes one more.
    stop.store(true, Ordering::SeqCst);
    let healed = Instant::now();
    let mut clerks = Vec::new();
    for (id, task) in clients.into_iter().enumerate() {
        let left = HEAL_PATIENCE.saturating_sub(healed.elapsed());
        match timeout(left, task).await {
            Ok(Ok(ck)) => clerks.push(ck),
            Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
            Err(_) => panic!(
                "[liveness] client {id} did not finish its call within {HEAL_PATIENCE:?} of \
                 healing (seed {seed}); reads {:?}\n{}",
                cfg.read_mode(),
                cfg.describe()
            ),
        }
    }
    let keys: Vec<String> = plan
        .append_keys
        .iter()
        .chain(&plan.mixed_keys)
        .cloned()
        .collect();
    for (id, ck) in clerks.iter_mut().enumerate() {
        let key = &keys[id % keys.len()];
        let kind = OpKind::Get {
            key: Bytes::from(key.clone()),
        };
        let call = cfg.try_recorded(ck, kind, id as u64);
        if timeout(FRESH_CALL_PATIENCE, call).await.is_err() {
            panic!(
                "[liveness] client {id} could not complete a call within {FRESH_CALL_PATIENCE:?} \
                 after the others finished (seed {seed})"
            );
        }
    }

    if let Err(e) = cfg.replicas_converge(Duration::from_secs(10)).await {
        panic!("[divergence] {e}\n{}", cfg.describe());
    }

    // The final value of every key, read through the log like any other call.
    let reader = plan.clients as u64;
    let mut finals = BTreeMap::new();
    let mut ck = cfg.make_client(&cfg.all());
    for key in &keys {
        // The reader's session is the newest: no other Clerk runs now to evict it.
        finals.insert(key.clone(), cfg.get(&mut ck, key, reader).await);
    }
    check_appends(
        &plan.append_keys,
        &finals,
        &acked.lock().unwrap_or_else(|e| e.into_inner()),
    );

    let history = cfg.history();
    let checks = [check_history, commands_check::check_history];
    for check in checks {
        match check(&history, "nemesis", seed) {
            Ok(()) => {}
            Err(CheckError::Illegal(e)) => panic!("[not linearizable] {e}"),
            Err(CheckError::Timeout(e)) => panic!("[checker timeout] {e}"),
        }
    }
    cfg.stop_all();
    Outcome {
        servers: plan.servers,
        clients: plan.clients,
        fault_secs: plan.fault_time.as_secs(),
        operations: history.len(),
        faults: cfg.stats().snapshot(),
    }
}

/// The kind of violation a failed run's first panic reports: the bracketed kind of the
/// nemesis's own checks, or the safety check that fired during the run.
pub fn violation_kind(message: &str) -> String {
    if let Some(rest) = message.strip_prefix('[') {
        if let Some((kind, _)) = rest.split_once(']') {
            return kind.to_string();
        }
    }
    let known = [
        ("election safety violated", "election safety"),
        ("log matching violated", "log matching"),
        ("durability contract violated", "durability contract"),
        ("invariant violated", "raft invariant"),
        ("truncating committed entry", "committed entry lost"),
        ("ran past its", "time limit"),
    ];
    known
        .iter()
        .find(|(needle, _)| message.contains(needle))
        .map_or("panic", |(_, kind)| kind)
        .to_string()
}

/// Where the checker's reports of a failed run on `seed` go: the course's operations, and
/// the commands.
pub fn checker_reports(seed: u64) -> [std::path::PathBuf; 2] {
    [
        report_path("nemesis", seed),
        report_path("nemesis-commands", seed),
    ]
}

/// Every acknowledged append must be in its key's final value exactly once, and no append
/// (acknowledged or not, each value is unique) may appear twice.
fn check_appends(
    append_keys: &[String],
    finals: &BTreeMap<String, String>,
    acked: &[(String, String)],
) {
    for key in append_keys {
        let value = &finals[key];
        let mut seen = BTreeSet::new();
        for item in value.split_terminator(';') {
            if !seen.insert(item) {
                panic!("[duplicate write] {item:?} appears twice in {key}");
            }
        }
    }
    for (key, value) in acked {
        let item = value.trim_end_matches(';');
        let present = finals[key].split_terminator(';').any(|x| x == item);
        if !present {
            panic!("[lost write] acknowledged append {item:?} is missing from {key}");
        }
    }
}

/// One Clerk's workload: appends of unique values, puts to the mixed keys, and gets; and a
/// quarter of the time a step of the Redis command mix.
struct Client {
    cfg: KvCluster,
    id: u64,
    rng: ChaCha8Rng,
    mix: CommandMix,
    append_keys: Vec<String>,
    mixed_keys: Vec<String>,
    acked: Arc<Mutex<Vec<(String, String)>>>,
    stop: Arc<AtomicBool>,
    links: Arc<Mutex<ClerkLinks>>,
}

/// Each Clerk's endpoints, by Clerk id, for the faults that cut Clerks off from servers; and
/// the Clerks left reaching only a leader cut off from the others, which only read.
#[derive(Default)]
struct ClerkLinks {
    ends: BTreeMap<u64, Vec<usize>>,
    readers: BTreeSet<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Client {
    async fn run(mut self) -> SimClerk {
        let mut ck = self.cfg.make_client(&self.cfg.all());
        lock(&self.links).ends.insert(self.id, ck.ends());
        let mut n = 0u64;
        while !self.stop.load(Ordering::SeqCst) {
            if lock(&self.links).readers.contains(&self.id) {
                let keys = [&self.append_keys[..], &self.mixed_keys[..]].concat();
                let key = keys.choose(&mut self.rng).expect("keys").clone();
                let kind = OpKind::Get {
                    key: Bytes::from(key),
                };
                let _ = self.cfg.try_recorded(&mut ck, kind, self.id).await;
                let pause = self.rng.gen_range(0..10);
                sleep(Duration::from_millis(pause)).await;
                continue;
            }
            if self.rng.gen_ratio(1, 4) {
                // An error is an expired session: the history has it as an unknown outcome.
                let _ = self.mix.step(&self.cfg, &mut ck).await;
                let pause = self.rng.gen_range(0..30);
                sleep(Duration::from_millis(pause)).await;
                continue;
            }
            let mixed = self.rng.gen_ratio(1, 3);
            let keys = if mixed {
                &self.mixed_keys
            } else {
                &self.append_keys
            };
            let key = keys.choose(&mut self.rng).expect("keys").clone();
            let roll = self.rng.gen_range(0..100);
            n += 1;
            let value = format!("{}.{n};", self.id);
            let kind = if roll < 55 {
                OpKind::Append {
                    key: Bytes::from(key.clone()),
                    value: Bytes::from(value.clone()),
                }
            } else if roll < 65 && mixed {
                OpKind::Put {
                    key: Bytes::from(key.clone()),
                    value: Bytes::from(value.clone()),
                }
            } else {
                OpKind::Get {
                    key: Bytes::from(key.clone()),
                }
            };
            let appended = matches!(kind, OpKind::Append { .. });
            // An error here is an expired session (the table is small): outcome unknown.
            let done = self.cfg.try_recorded(&mut ck, kind, self.id).await.is_ok();
            if done && appended && !mixed {
                let mut acked = self.acked.lock().unwrap_or_else(|e| e.into_inner());
                acked.push((key, value));
            }
            let pause = self.rng.gen_range(0..30);
            sleep(Duration::from_millis(pause)).await;
        }
        ck
    }
}

struct Nemesis {
    cfg: KvCluster,
    rng: ChaCha8Rng,
    /// Crashed servers and when to restart them.
    restarts: BTreeMap<usize, Instant>,
    variant: Variant,
    links: Arc<Mutex<ClerkLinks>>,
}

impl Nemesis {
    async fn run_for(&mut self, duration: Duration) {
        let start = Instant::now();
        while start.elapsed() < duration {
            self.restart_due();
            self.step();
            let pause = self.rng.gen_range(20..800);
            sleep(Duration::from_millis(pause)).await;
        }
    }

    fn count(&self, what: &'static str) {
        self.cfg.stats().add(what, 1);
    }

    /// One fault, chosen at random.
    fn step(&mut self) {
        let n = self.cfg.n();
        // The variant cuts the leader off four times as often: each time is a chance for a
        // deposed leader to be asked, and a stale answer needs the majority to have elected
        // and written before it steps down.
        if self.variant == Variant::DeposedReaders && self.rng.gen_ratio(1, 4) {
            self.isolate_leader();
            return;
        }
        match self.rng.gen_range(0..100) {
            0..=24 => self.crash(),
            25..=34 => self.partition_halves(),
            35..=42 => self.isolate_leader(),
            43..=49 => self.bridge(),
            50..=57 => self.one_way_links(),
            58..=69 => self.change_network(),
            70..=74 => {
                let lossy = self.rng.gen_bool(0.5);
                self.cfg.set_client_links_unreliable(lossy);
                self.count("client links changed");
            }
            75..=84 => {
                self.cfg.connect_all();
                self.release_readers();
                self.count("partitions healed");
            }
            _ => {
                // Restart one crashed server early.
                if let Some(&i) = self.restarts.keys().next() {
                    self.restarts.insert(i, Instant::now());
                    self.restart_due();
                } else if n > 0 {
                    self.crash();
                }
            }
        }
    }

    fn crash(&mut self) {
        let running = self.cfg.running();
        let Some(&i) = running.choose(&mut self.rng) else {
            return;
        };
        self.cfg.shutdown_server(i);
        // Often back at once (a process supervisor), sometimes down for a while.
        let down = if self.rng.gen_bool(0.5) {
            self.rng.gen_range(0..100)
        } else {
            self.rng.gen_range(100..3000)
        };
        self.restarts
            .insert(i, Instant::now() + Duration::from_millis(down));
        self.count("crashes");
    }

    fn restart_due(&mut self) {
        let now = Instant::now();
        let due: Vec<usize> = self
            .restarts
            .iter()
            // A restart waits for the old process to die at its crash point.
            .filter(|(&i, &at)| at <= now && !self.cfg.is_dying(i))
            .map(|(&i, _)| i)
            .collect();
        for i in due {
            self.restarts.remove(&i);
            self.cfg.start_server(i);
            self.count("restarts");
        }
    }

    /// Sets every directed link between servers to `linked(from, to)`.
    fn set_links(&self, linked: impl Fn(usize, usize) -> bool) {
        let n = self.cfg.n();
        for a in 0..n {
            for b in 0..n {
                if a != b {
                    self.cfg.net().enable(a as u64, b as u64, linked(a, b));
                }
            }
        }
    }

    fn partition_halves(&mut self) {
        let side: Vec<bool> = (0..self.cfg.n()).map(|_| self.rng.gen_bool(0.5)).collect();
        self.set_links(|a, b| side[a] == side[b]);
        self.count("partition: random halves");
    }

    fn isolate_leader(&mut self) {
        let Some(leader) = self.cfg.leader() else {
            return;
        };
        self.set_links(|a, b| a != leader && b != leader);
        self.count("partition: leader isolated");
        if self.variant == Variant::DeposedReaders {
            // The others reach only the majority, so that they find its new leader and
            // write there soon, while the readers still ask the old one.
            let others: Vec<usize> = self
                .cfg
                .all()
                .into_iter()
                .filter(|&s| s != leader)
                .collect();
            let mut links = lock(&self.links);
            let ClerkLinks { ends, readers } = &mut *links;
            readers.clear();
            for (&id, ends) in ends.iter() {
                if self.rng.gen_bool(0.5) {
                    self.cfg.connect_client(ends, &[leader]);
                    readers.insert(id);
                    self.cfg
                        .stats()
                        .add("clerks left reading at the isolated leader", 1);
                } else {
                    self.cfg.connect_client(ends, &others);
                }
            }
        }
    }

    /// Gives every Clerk every server again, after [`Variant::DeposedReaders`] split them.
    fn release_readers(&self) {
        if self.variant == Variant::Standard {
            return;
        }
        let links = lock(&self.links);
        for ends in links.ends.values() {
            self.cfg.connect_client(ends, &self.cfg.all());
        }
        drop(links);
        lock(&self.links).readers.clear();
    }

    /// Two halves that cannot talk to each other, and one node that talks to both.
    fn bridge(&mut self) {
        let n = self.cfg.n();
        let bridge = self.rng.gen_range(0..n);
        let side: Vec<bool> = (0..n).map(|_| self.rng.gen_bool(0.5)).collect();
        self.set_links(|a, b| a == bridge || b == bridge || side[a] == side[b]);
        self.count("partition: bridge");
    }

    fn one_way_links(&mut self) {
        let n = self.cfg.n();
        let cut: Vec<bool> = (0..n * n).map(|_| self.rng.gen_ratio(1, 4)).collect();
        self.set_links(|a, b| !cut[a * n + b]);
        self.count("partition: one-way links");
    }

    fn change_network(&mut self) {
        let rng = &mut self.rng;
        let faults = if rng.gen_ratio(1, 4) {
            NetFaults::default()
        } else {
            NetFaults {
                drop_requests: rng.gen_range(0..300),
                drop_responses: rng.gen_range(0..300),
                request_jitter_ms: rng.gen_range(0..30),
                long_reorder_responses: if rng.gen_bool(0.3) { 600 } else { 0 },
                duplicate: rng.gen_range(0..100),
                long_delay: rng.gen_range(0..50),
            }
        };
        self.cfg.net().set_faults(faults);
        self.count("network faults changed");
    }

    /// Ends every fault: all servers up, all links on, no message lost or delayed.
    fn heal(&mut self) {
        for i in std::mem::take(&mut self.restarts).into_keys() {
            self.cfg.start_server(i);
        }
        self.cfg.net().set_faults(NetFaults::default());
        self.cfg.set_client_links_unreliable(false);
        self.cfg.connect_all();
        self.release_readers();
    }
}
