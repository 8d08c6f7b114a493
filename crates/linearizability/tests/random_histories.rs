//! Histories from simulated linearizable executions must be accepted, and
//! the same histories with one read corrupted must be rejected, within a
//! time budget. Timings are printed (`--nocapture`) to watch for regressions.

mod common;

use std::time::{Duration, Instant};

use common::{simulate, Workload};
use linearizability::kv::{KvModel, KvOp, KvOperation};
use linearizability::{check_operations, check_operations_verbose, CheckResult};

const BUDGET: Option<Duration> = Some(Duration::from_secs(10));

/// Several clients spread over a few dozen keys.
const MANY_KEYS: Workload = Workload {
    clients: 10,
    keys: 20,
    ops: 10_000,
    get_percent: 50,
    lost_reply: 0.01,
    max_latency: 100,
    max_think: 20,
};

/// Every client on the same key: each operation overlaps about thirty others.
const ONE_KEY: Workload = Workload {
    clients: 15,
    keys: 1,
    ops: 2_000,
    get_percent: 50,
    lost_reply: 0.01,
    max_latency: 100,
    max_think: 20,
};

fn timed_check(what: &str, history: &[KvOperation]) -> CheckResult {
    let started = Instant::now();
    let result = check_operations(&KvModel, history, BUDGET);
    println!(
        "{what}: {} ops -> {result:?} in {:.1} ms",
        history.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    result
}

/// Index of the first read at or after `from` that saw a non-empty value.
fn read_after(history: &[KvOperation], from: usize) -> usize {
    (from..history.len())
        .find(|&i| history[i].input.op == KvOp::Get && !history[i].output.value.is_empty())
        .expect("no non-empty read")
}

/// Makes a read return a value its key held earlier but had visibly lost:
/// finds reads r0, r1, r2 of one key, each returning before the next is
/// called, with r1 (at or after `from`) seeing something other than r0, and
/// makes r2 see what r0 saw. Written values are unique and a key never
/// returns to an old value, so no linearization can explain it.
fn make_stale_read(history: &mut [KvOperation], from: usize) -> usize {
    let reads: Vec<usize> = (0..history.len())
        .filter(|&i| history[i].input.op == KvOp::Get)
        .collect();
    for &r1 in reads.iter().filter(|&&r| r >= from) {
        let key = &history[r1].input.key;
        let r0 = reads.iter().copied().find(|&r0| {
            history[r0].input.key == *key
                && history[r0].return_time < history[r1].call
                && history[r0].output != history[r1].output
        });
        let r2 = reads.iter().copied().find(|&r2| {
            history[r2].input.key == *key && history[r2].call > history[r1].return_time
        });
        if let (Some(r0), Some(r2)) = (r0, r2) {
            history[r2].output = history[r0].output.clone();
            return r2;
        }
    }
    panic!("no stale read could be planted");
}

#[test]
fn large_history_over_many_keys_is_linearizable() {
    let history = simulate(1, MANY_KEYS);
    assert!(history.iter().any(|o| o.return_time == u64::MAX));
    assert_eq!(timed_check("20 keys", &history), CheckResult::Ok);
}

#[test]
fn larger_history_over_many_keys_is_linearizable() {
    let workload = Workload {
        clients: 15,
        keys: 40,
        ops: 50_000,
        ..MANY_KEYS
    };
    let history = simulate(3, workload);
    assert_eq!(timed_check("40 keys", &history), CheckResult::Ok);
}

#[test]
fn large_history_with_a_read_of_an_unwritten_value_is_illegal() {
    let mut history = simulate(1, MANY_KEYS);
    let i = read_after(&history, history.len() / 2);
    history[i].output.value.push_str("#never-written");
    assert_eq!(
        timed_check("20 keys, unwritten value read", &history),
        CheckResult::Illegal
    );
}

#[test]
fn large_history_with_a_stale_read_is_illegal() {
    let mut history = simulate(1, MANY_KEYS);
    let middle = history.len() / 2;
    let i = make_stale_read(&mut history, middle);
    assert_eq!(
        timed_check("20 keys, stale read", &history),
        CheckResult::Illegal
    );

    // Only the corrupted read's key is illegal, and no linearizable prefix
    // gets past that read.
    let (result, info) = check_operations_verbose(&KvModel, &history, BUDGET);
    assert_eq!(result, CheckResult::Illegal);
    let bad: Vec<_> = info.illegal_partitions().collect();
    assert_eq!(bad.len(), 1);
    let position = bad[0].ops.iter().position(|o| o.history_index == i);
    let position = position.expect("the corrupted read is in the illegal partition");
    assert!(bad[0].longest_prefix.iter().all(|s| s.op != position));
    assert!(!bad[0].blocked.is_empty());
}

#[test]
fn many_clients_on_one_key_is_linearizable() {
    let history = simulate(2, ONE_KEY);
    assert_eq!(timed_check("1 key, 15 clients", &history), CheckResult::Ok);
}

#[test]
fn many_clients_appending_to_one_key_is_linearizable() {
    // Mostly appends, so the value grows to about 9 kB and reads are rare.
    let workload = Workload {
        get_percent: 20,
        ..ONE_KEY
    };
    let history = simulate(4, workload);
    assert_eq!(
        timed_check("1 key, 15 clients, 80% writes", &history),
        CheckResult::Ok
    );
}

#[test]
fn many_clients_on_one_key_with_a_stale_read_is_illegal() {
    // Refuting means ruling out every linearization of everything before
    // the bad read, which with this much concurrency is costly: plant it
    // early.
    let mut history = simulate(2, ONE_KEY);
    let early = history.len() / 10;
    make_stale_read(&mut history, early);
    assert_eq!(
        timed_check("1 key, 15 clients, stale read", &history),
        CheckResult::Illegal
    );
}

#[test]
fn many_small_random_histories() {
    let small = Workload {
        clients: 5,
        keys: 3,
        ops: 150,
        get_percent: 40,
        lost_reply: 0.05,
        max_latency: 30,
        max_think: 10,
    };
    let started = Instant::now();
    for seed in 0..200 {
        let mut history = simulate(1000 + seed, small);
        assert_eq!(
            check_operations(&KvModel, &history, BUDGET),
            CheckResult::Ok,
            "seed {seed}"
        );
        let i = read_after(&history, history.len() / 2);
        history[i].output.value.push('!');
        assert_eq!(
            check_operations(&KvModel, &history, BUDGET),
            CheckResult::Illegal,
            "seed {seed}"
        );
    }
    println!(
        "200 small histories, accepted and refuted, in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
}
