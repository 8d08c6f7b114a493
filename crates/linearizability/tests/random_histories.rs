//! Histories from simulated linearizable executions must be accepted, and
//! the same histories with one read corrupted must be rejected, within a
//! time budget.

mod common;

use std::time::{Duration, Instant};

use common::{simulate, Workload};
use linearizability::kv::{KvModel, KvOp, KvOperation};
use linearizability::{check_operations, check_operations_verbose, CheckResult};

const BUDGET: Option<Duration> = Some(Duration::from_secs(10));

const MANY_KEYS: Workload = Workload {
    clients: 10,
    keys: 20,
    ops: 10_000,
    get_percent: 50,
    lost_reply: 0.01,
    max_latency: 100,
    max_think: 20,
};

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

/// Index of a read in the middle of the history that saw a non-empty value.
fn middle_read(history: &[KvOperation]) -> usize {
    (history.len() / 2..history.len())
        .find(|&i| history[i].input.op == KvOp::Get && !history[i].output.value.is_empty())
        .expect("no non-empty read in the second half")
}

/// Makes a read return a value its key held earlier but had visibly lost:
/// finds reads r0 before r1 before r2 on one key, each returning before the
/// next is called, with r0 and r1 seeing different values, and makes r2 see
/// r0's value. Every written value is unique and puts never restore an old
/// value, so no linearization can explain it.
fn make_stale_read(history: &mut [KvOperation]) -> usize {
    let reads: Vec<usize> = (0..history.len())
        .filter(|&i| history[i].input.op == KvOp::Get)
        .collect();
    for &r1 in &reads[reads.len() / 2..] {
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
    assert_eq!(timed_check("many keys", &history), CheckResult::Ok);
}

#[test]
fn large_history_with_a_read_of_an_unwritten_value_is_illegal() {
    let mut history = simulate(1, MANY_KEYS);
    let i = middle_read(&history);
    history[i].output.value.push_str("#never-written");
    assert_eq!(
        timed_check("many keys, bogus read", &history),
        CheckResult::Illegal
    );
}

#[test]
fn large_history_with_a_stale_read_is_illegal() {
    let mut history = simulate(1, MANY_KEYS);
    let i = make_stale_read(&mut history);
    assert_eq!(
        timed_check("many keys, stale read", &history),
        CheckResult::Illegal
    );

    // The report points at the corrupted read.
    let (result, info) = check_operations_verbose(&KvModel, &history, BUDGET);
    assert_eq!(result, CheckResult::Illegal);
    let bad: Vec<_> = info.illegal_partitions().collect();
    assert_eq!(bad.len(), 1);
    assert!(bad[0].ops.iter().any(|o| o.history_index == i));
}

#[test]
fn many_clients_on_one_key_is_linearizable() {
    let history = simulate(2, ONE_KEY);
    assert_eq!(
        timed_check("one key, 15 clients", &history),
        CheckResult::Ok
    );
}

#[test]
fn many_clients_on_one_key_with_a_bogus_read_is_illegal() {
    let mut history = simulate(2, ONE_KEY);
    let i = middle_read(&history);
    history[i].output.value.push_str("#never-written");
    assert_eq!(
        timed_check("one key, 15 clients, bogus read", &history),
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
        let i = middle_read(&history);
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
