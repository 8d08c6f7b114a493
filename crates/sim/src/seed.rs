//! One seed per run. Every simulated test goes through [`run`], which builds a single-threaded
//! tokio runtime with a paused clock (virtual time: idle means "jump to the next timer"), runs
//! the test body with a seed, and on failure prints the seed and how to replay it.
//!
//! - `RAFTKV_SEED=<n>` runs every test on seed n only (replay).
//! - `RAFTKV_SEEDS=<n>` runs every test on n seeds (the first is the test's default seed).

use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::Duration;

/// The course gives every test two minutes; ours are measured in virtual time.
pub const TEST_TIME_LIMIT: Duration = Duration::from_secs(120);

/// The seeds to run, from the environment.
pub fn seeds(name: &str) -> Vec<u64> {
    if let Some(seed) = env_u64("RAFTKV_SEED") {
        return vec![seed];
    }
    let count = env_u64("RAFTKV_SEEDS").unwrap_or(1).max(1);
    // A default seed per test name, so different tests explore different schedules.
    let base = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    (0..count)
        .map(|i| base.wrapping_add(i) % 1_000_000_007)
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

/// Runs `test` on one seed and returns what it returned (for determinism checks).
pub fn run_one<F, Fut, T>(name: &str, seed: u64, test: &F) -> T
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = T>,
{
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
    match result {
        Ok(value) => value,
        Err(panic) => {
            eprintln!("\n{name} FAILED with seed {seed}; replay with RAFTKV_SEED={seed}\n");
            resume_unwind(panic)
        }
    }
}
