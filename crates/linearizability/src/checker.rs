//! Entry points: split a history into partitions, search each one within a
//! shared time budget, and combine the verdicts.

use std::time::{Duration, Instant};

use crate::info::{CheckInfo, LinearizedOp, OpInfo, PartitionInfo};
use crate::model::{Model, Operation};
use crate::search::{search, stuck_after, Budget, SearchOutcome};

/// The verdict on a history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckResult {
    /// Linearizable.
    Ok,
    /// Not linearizable: some partition has no linearization.
    Illegal,
    /// The time budget ran out before every partition was decided, and none
    /// of those decided was illegal.
    Unknown,
}

/// Checks whether `history` is linearizable with respect to `model`.
///
/// `timeout` bounds the whole check (all partitions together); `None` means
/// no limit. See the crate docs for what `Unknown` means.
///
/// # Panics
///
/// If an operation returns before it is called, or if the model's partition
/// refers to an operation that does not exist.
pub fn check_operations<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    timeout: Option<Duration>,
) -> CheckResult {
    check(model, history, timeout, false).0
}

/// Like [`check_operations`], but also returns what was found for each
/// partition, for [`crate::write_report`] or for printing.
///
/// Unlike [`check_operations`], which stops at the first illegal partition,
/// this checks every partition (within the budget) so the report is complete.
///
/// # Panics
///
/// As [`check_operations`]; also if the model's `step` is not deterministic.
pub fn check_operations_verbose<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    timeout: Option<Duration>,
) -> (CheckResult, CheckInfo) {
    let (result, partitions) = check(model, history, timeout, true);
    let info = CheckInfo {
        result,
        partitions: partitions.into_iter().flatten().collect(),
    };
    (result, info)
}

fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    timeout: Option<Duration>,
    verbose: bool,
) -> (CheckResult, Vec<Option<PartitionInfo>>) {
    for (i, op) in history.iter().enumerate() {
        assert!(
            op.call <= op.return_time,
            "operation {i} returns ({}) before it is called ({})",
            op.return_time,
            op.call
        );
    }
    // Saturate rather than overflow for absurdly long timeouts.
    let budget = Budget {
        deadline: timeout.and_then(|t| Instant::now().checked_add(t)),
    };
    let parts = model.partition(history);

    // With one budget for all partitions, deciding the small ones first
    // keeps a single expensive partition from starving the rest, so an
    // illegal small partition is still found when the big one times out.
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by_key(|&p| parts[p].len());

    let mut infos: Vec<Option<PartitionInfo>> = vec![None; parts.len()];
    let mut any_unknown = false;
    let mut any_illegal = false;
    for p in order {
        let ops: Vec<&Operation<M::Input, M::Output>> =
            parts[p].iter().map(|&i| &history[i]).collect();
        let outcome = search(model, &ops, budget);
        match outcome.result {
            CheckResult::Ok => {}
            CheckResult::Illegal => any_illegal = true,
            CheckResult::Unknown => any_unknown = true,
        }
        if verbose {
            infos[p] = Some(partition_info(model, &parts[p], &ops, &outcome));
        } else if any_illegal {
            break;
        }
    }

    let result = if any_illegal {
        CheckResult::Illegal
    } else if any_unknown {
        CheckResult::Unknown
    } else {
        CheckResult::Ok
    };
    (result, infos)
}

/// Renders a partition's outcome through the model, replaying the longest
/// prefix to recover the state after each step (the search keeps only the
/// order, not the states).
fn partition_info<M: Model>(
    model: &M,
    indices: &[usize],
    ops: &[&Operation<M::Input, M::Output>],
    outcome: &SearchOutcome,
) -> PartitionInfo {
    let mut state = model.init();
    let initial_state = model.describe_state(&state);
    let mut longest_prefix = Vec::with_capacity(outcome.longest_prefix.len());
    for &op in &outcome.longest_prefix {
        state = model
            .step(&state, &ops[op].input, &ops[op].output)
            .expect("Model::step must be deterministic: replaying a found linearization failed");
        longest_prefix.push(LinearizedOp {
            op,
            state_after: model.describe_state(&state),
        });
    }

    let (blocked, unsatisfiable) = if outcome.result == CheckResult::Ok {
        (Vec::new(), Vec::new())
    } else {
        stuck_after(model, ops, &outcome.longest_prefix, &state)
    };

    PartitionInfo {
        title: if ops.is_empty() {
            String::new()
        } else {
            model.describe_partition(ops)
        },
        result: outcome.result,
        ops: indices
            .iter()
            .zip(ops)
            .map(|(&history_index, op)| OpInfo {
                history_index,
                client_id: op.client_id,
                call: op.call,
                return_time: op.return_time,
                label: model.describe(&op.input, &op.output),
            })
            .collect(),
        initial_state,
        longest_prefix,
        blocked,
        unsatisfiable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{KvInput, KvModel, KvOperation, KvOutput};

    fn op(
        client_id: u64,
        input: KvInput,
        output: &str,
        call: u64,
        return_time: u64,
    ) -> KvOperation {
        Operation {
            client_id,
            input,
            call,
            output: KvOutput::new(output),
            return_time,
        }
    }

    /// Named counters that can be added to and read. Their states are sums,
    /// so unlike strings built by appends, orders of additions collapse; the
    /// trait's defaults are used for everything else, including the pruning
    /// hint, which never prunes.
    struct Counters;

    /// `(counter, Some(delta))` adds, `(counter, None)` reads.
    type CounterOp = Operation<(u8, Option<i64>), i64>;

    impl Model for Counters {
        type State = i64;
        type Input = (u8, Option<i64>);
        type Output = i64;

        fn init(&self) -> i64 {
            0
        }

        fn step(&self, state: &i64, input: &(u8, Option<i64>), output: &i64) -> Option<i64> {
            match input.1 {
                Some(delta) => Some(state + delta),
                None => (output == state).then_some(*state),
            }
        }

        fn partition(&self, ops: &[CounterOp]) -> Vec<Vec<usize>> {
            let mut parts: Vec<Vec<usize>> = vec![Vec::new(); 256];
            for (i, o) in ops.iter().enumerate() {
                parts[o.input.0 as usize].push(i);
            }
            parts.retain(|p| !p.is_empty());
            parts
        }

        fn describe(&self, input: &(u8, Option<i64>), output: &i64) -> String {
            match input.1 {
                Some(d) => format!("add(c{}, {d})", input.0),
                None => format!("read(c{}) -> {output}", input.0),
            }
        }

        fn describe_state(&self, state: &i64) -> String {
            state.to_string()
        }
    }

    fn add(counter: u8, delta: i64, call: u64, return_time: u64) -> CounterOp {
        Operation {
            client_id: call,
            input: (counter, Some(delta)),
            call,
            output: 0,
            return_time,
        }
    }

    fn read(counter: u8, value: i64, call: u64, return_time: u64) -> CounterOp {
        Operation {
            client_id: call,
            input: (counter, None),
            call,
            output: value,
            return_time,
        }
    }

    /// `n` concurrent additions of distinct powers of two to `counter`,
    /// then a read of a value no subset of them sums to. Every subset is a
    /// distinct configuration, so refuting it takes about 2^n steps.
    fn hopeless(counter: u8, n: u32) -> Vec<CounterOp> {
        let mut h: Vec<CounterOp> = (0..n).map(|i| add(counter, 1 << i, 0, 100)).collect();
        h.push(read(counter, -1, 101, 102));
        h
    }

    #[test]
    fn default_partition_checks_the_whole_history() {
        struct Whole;
        impl Model for Whole {
            type State = i64;
            type Input = (u8, Option<i64>);
            type Output = i64;
            fn init(&self) -> i64 {
                0
            }
            fn step(&self, s: &i64, i: &(u8, Option<i64>), o: &i64) -> Option<i64> {
                Counters.step(s, i, o)
            }
            fn describe(&self, i: &(u8, Option<i64>), o: &i64) -> String {
                Counters.describe(i, o)
            }
            fn describe_state(&self, s: &i64) -> String {
                s.to_string()
            }
        }
        // Counter 1's read only makes sense if all counters are one.
        let h = [add(0, 2, 0, 1), add(1, 3, 0, 1), read(1, 5, 2, 3)];
        assert_eq!(check_operations(&Whole, &h, None), CheckResult::Ok);
        assert_eq!(check_operations(&Counters, &h, None), CheckResult::Illegal);
        let (_, info) = check_operations_verbose(&Whole, &h, None);
        assert_eq!(info.partitions.len(), 1);
        assert_eq!(info.partitions[0].title, "");
    }

    #[test]
    fn verbose_info_explains_a_stale_read() {
        let h = [
            op(0, KvInput::put("x", "1"), "", 0, 1),
            op(1, KvInput::get("y"), "", 0, 1),
            op(1, KvInput::get("x"), "", 2, 3),
        ];
        let (result, info) = check_operations_verbose(&KvModel, &h, None);
        assert_eq!(result, CheckResult::Illegal);
        assert_eq!(info.result, CheckResult::Illegal);
        assert_eq!(info.partitions.len(), 2);

        let x = &info.partitions[0];
        assert_eq!(x.title, "key x");
        assert_eq!(x.result, CheckResult::Illegal);
        assert_eq!(x.initial_state, "\"\"");
        assert_eq!(x.ops.len(), 2);
        assert_eq!(x.ops[1].history_index, 2);
        assert_eq!(x.ops[1].label, "get(x) -> \"\"");
        assert_eq!(x.longest_prefix.len(), 1);
        assert_eq!(x.longest_prefix[0].op, 0);
        assert_eq!(x.longest_prefix[0].state_after, "\"1\"");
        assert_eq!(x.blocked, vec![1]);
        assert_eq!(x.unsatisfiable, vec![1]); // nothing writes "" again

        let y = &info.partitions[1];
        assert_eq!(y.result, CheckResult::Ok);
        assert_eq!(y.longest_prefix.len(), 1);
        assert!(y.blocked.is_empty());
        assert_eq!(info.illegal_partitions().count(), 1);
    }

    #[test]
    fn ok_partitions_report_a_full_linearization() {
        let h = [
            op(0, KvInput::append("x", "a"), "", 0, 10),
            op(1, KvInput::append("x", "b"), "", 1, 9),
            op(2, KvInput::get("x"), "ba", 11, 12),
        ];
        let (result, info) = check_operations_verbose(&KvModel, &h, None);
        assert_eq!(result, CheckResult::Ok);
        let steps = &info.partitions[0].longest_prefix;
        let order: Vec<usize> = steps.iter().map(|s| s.op).collect();
        assert_eq!(order, vec![1, 0, 2]);
        let states: Vec<&str> = steps.iter().map(|s| s.state_after.as_str()).collect();
        assert_eq!(states, vec!["\"b\"", "\"ba\"", "\"ba\""]);
    }

    #[test]
    fn zero_budget_is_unknown() {
        let h = [op(0, KvInput::get("x"), "", 0, 1)];
        assert_eq!(
            check_operations(&KvModel, &h, Some(Duration::ZERO)),
            CheckResult::Unknown
        );
        assert_eq!(
            check_operations(&KvModel, &[], Some(Duration::ZERO)),
            CheckResult::Ok
        );
        assert_eq!(check_operations(&KvModel, &h, None), CheckResult::Ok);
    }

    #[test]
    fn concurrent_appends_with_a_tiny_budget_are_unknown() {
        let h: Vec<KvOperation> = (0..20)
            .map(|i| op(i, KvInput::append("x", format!("{i};")), "", 0, 100))
            .chain([op(20, KvInput::get("x"), "0;", 101, 102)])
            .collect();
        assert_eq!(
            check_operations(&KvModel, &h, Some(Duration::from_nanos(1))),
            CheckResult::Unknown
        );
        assert_eq!(check_operations(&KvModel, &h, None), CheckResult::Illegal);
    }

    #[test]
    fn pathological_history_times_out() {
        let h = hopeless(0, 40);
        for timeout in [Duration::from_nanos(1), Duration::from_millis(50)] {
            let started = Instant::now();
            assert_eq!(
                check_operations(&Counters, &h, Some(timeout)),
                CheckResult::Unknown
            );
            assert!(started.elapsed() < timeout + Duration::from_secs(2));
        }
        let (result, info) =
            check_operations_verbose(&Counters, &h, Some(Duration::from_millis(20)));
        assert_eq!(result, CheckResult::Unknown);
        let p = &info.partitions[0];
        assert_eq!(p.result, CheckResult::Unknown);
        // It got as far as every addition but not the read.
        assert_eq!(p.longest_prefix.len(), 40);
        assert_eq!(p.blocked, vec![40]);
    }

    #[test]
    fn illegal_partition_is_found_even_when_another_times_out() {
        let mut h = hopeless(0, 40);
        h.push(add(1, 1, 0, 1));
        h.push(read(1, 2, 2, 3));
        let timeout = Some(Duration::from_millis(50));
        assert_eq!(
            check_operations(&Counters, &h, timeout),
            CheckResult::Illegal
        );
        let (result, info) = check_operations_verbose(&Counters, &h, timeout);
        assert_eq!(result, CheckResult::Illegal);
        assert_eq!(info.partitions[0].result, CheckResult::Unknown);
        assert_eq!(info.partitions[1].result, CheckResult::Illegal);
    }

    #[test]
    fn exhaustive_refutation_of_a_moderate_case_finishes() {
        // 2^12 subsets of additions, each a distinct configuration.
        let h = hopeless(0, 12);
        assert_eq!(
            check_operations(&Counters, &h, Some(Duration::from_secs(30))),
            CheckResult::Illegal
        );
    }

    #[test]
    #[should_panic(expected = "returns (1) before it is called (5)")]
    fn malformed_interval_panics() {
        let h = [op(0, KvInput::get("x"), "", 5, 1)];
        check_operations(&KvModel, &h, None);
    }
}
