//! One seed per run. Every simulated test goes through [`run`], which builds a single-threaded
//! tokio runtime with a paused clock (virtual time: idle means "jump to the next timer"), runs
//! the test body with a seed, and on failure prints the seed and the command that replays it.
//!
//! - By default each run draws a fresh seed from the operating system, so every `cargo test`
//!   explores new schedules; the seeds listed in `regression-seeds.txt` (each once found a
//!   bug) run as well, every time.
//! - `RAFTKV_SEEDS=<n>` runs every test on n fresh seeds (plus its regression seeds).
//! - `RAFTKV_SEED=<n>` runs every selected test on seed n only: the replay of a failure.
//!
//! A run fails if its body panics, and also if any task of the simulation panicked (a Raft
//! driver tripping an assertion, say) even though the body went on: [`run_one_catching`]
//! records every panic on the simulation's thread, first one first.

use rand::RngCore;
use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Once;
use std::time::Duration;

/// The course gives every test two minutes; ours are measured in virtual time.
pub const TEST_TIME_LIMIT: Duration = Duration::from_secs(120);

/// Seeds that once made a test fail: `<test name> <seed>  # what it found`.
const REGRESSION_SEEDS: &str = include_str!("../regression-seeds.txt");

/// The seeds to run for test `name`: its regression seeds, then fresh ones; or only the one
/// in `RAFTKV_SEED`.
pub fn seeds(name: &str) -> Vec<u64> {
    if let Some(seed) = env_u64("RAFTKV_SEED") {
        return vec![seed];
    }
    let count = env_u64("RAFTKV_SEEDS").unwrap_or(1).max(1);
    let mut seeds = regression_seeds(name);
    seeds.extend((0..count).map(|_| fresh_seed()));
    seeds
}

/// A seed no earlier run used (with overwhelming probability), from the operating system.
pub fn fresh_seed() -> u64 {
    // Twelve digits: plenty of schedules, and short enough to paste into a replay command.
    rand::rngs::OsRng.next_u64() % 1_000_000_000_000
}

/// The checked-in regression seeds of test `name`.
pub fn regression_seeds(name: &str) -> Vec<u64> {
    REGRESSION_SEEDS
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty())
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (test, seed) = (words.next()?, words.next()?);
            let seed = seed
                .parse()
                .unwrap_or_else(|_| panic!("regression-seeds.txt: bad seed in {line:?}"));
            (test == name).then_some(seed)
        })
        .collect()
}

fn env_u64(var: &str) -> Option<u64> {
    let value = std::env::var(var).ok()?;
    match value.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{var} must be a non-negative integer, got {value:?}"),
    }
}

/// Runs `test` once per seed (see the module docs), each on a fresh virtual-time runtime.
pub fn run<F, Fut>(name: &str, test: F)
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = ()>,
{
    for seed in seeds(name) {
        run_one(name, seed, &test);
    }
}

/// Runs `test` on one seed and returns what it returned; on failure prints the seed and the
/// replay command, then fails with the first panic of the run.
pub fn run_one<F, Fut, T>(name: &str, seed: u64, test: &F) -> T
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = T>,
{
    match run_one_catching(name, seed, test) {
        Ok(value) => value,
        Err(failure) => {
            eprintln!(
                "\n{name} FAILED with seed {seed}; replay with:\n    {}\n",
                replay_command(name, seed)
            );
            if failure.panics.len() > 1 {
                eprintln!("first panic of the run: {}\n", failure.first_panic());
            }
            resume_unwind(failure.payload)
        }
    }
}

/// Why a simulated run failed.
pub struct Failure {
    pub seed: u64,
    /// Every panic of the run, in order: the first is usually the cause, later ones effects.
    pub panics: Vec<String>,
    payload: Box<dyn Any + Send>,
}

impl Failure {
    /// The message of the first panic of the run.
    pub fn first_panic(&self) -> &str {
        self.panics.first().map_or("(no message)", String::as_str)
    }
}

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seed {}: {}", self.seed, self.first_panic())
    }
}

/// Runs `test` on one seed without printing anything of its own. Any panic during the run,
/// in the body or in a task it spawned, makes it a failure.
pub fn run_one_catching<F, Fut, T>(name: &str, seed: u64, test: &F) -> Result<T, Failure>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = T>,
{
    install_panic_recorder();
    PANICS.with(|p| p.borrow_mut().clear());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("build runtime");
    let result = catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(async {
            match tokio::time::timeout(TEST_TIME_LIMIT, test(seed)).await {
                Ok(value) => value,
                Err(_) => panic!("{name} ran past its {TEST_TIME_LIMIT:?} limit (virtual time)"),
            }
        })
    }));
    // Dropping the runtime stops every task the test left behind.
    drop(runtime);
    let panics = PANICS.with(|p| std::mem::take(&mut *p.borrow_mut()));
    match result {
        Ok(value) if panics.is_empty() => Ok(value),
        Ok(_) => {
            let message = format!("a task panicked during the run: {}", panics[0]);
            Err(Failure {
                seed,
                panics,
                payload: Box::new(message),
            })
        }
        Err(payload) => Err(Failure {
            seed,
            panics,
            payload,
        }),
    }
}

/// The command that replays test `name` (of the running test binary) on `seed`.
pub fn replay_command(name: &str, seed: u64) -> String {
    let exe = std::env::current_exe().ok();
    let stem = exe
        .as_deref()
        .and_then(|p| p.file_stem())
        .and_then(|s| s.to_str())
        .unwrap_or("<test file>");
    // Test binaries are named `<file>-<hash>`.
    let target = stem.rsplit_once('-').map_or(stem, |(file, _)| file);
    format!("RAFTKV_SEED={seed} cargo test --release -p sim --test {target} -- {name} --exact")
}

thread_local! {
    /// The panics of the simulation running on this thread. Each simulation owns its thread
    /// (current-thread runtime), so this is exactly the run's panics.
    static PANICS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Chains a panic hook that also records each panic's message and place for
/// [`run_one_catching`]; the previous hook still prints it.
fn install_panic_recorder() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string panic)".into());
            let place = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let _ = PANICS.try_with(|p| p.borrow_mut().push(format!("{message}{place}")));
            previous(info);
        }));
    });
}
