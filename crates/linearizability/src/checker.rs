//! Entry points: split a history into partitions, search each one within a
//! shared time budget, and combine the verdicts.

use std::time::{Duration, Instant};

use crate::info::{CheckInfo, LinearizedOp, OpInfo, PartitionInfo};
use crate::model::{Model, Operation};
use crate::search::{event_order, next_candidates, search, Budget, SearchOutcome};

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

    let blocked = if outcome.result == CheckResult::Ok {
        Vec::new()
    } else {
        let events = event_order(ops.iter().map(|o| (o.call, o.return_time)));
        next_candidates(&events, &outcome.longest_prefix, ops.len())
            .into_iter()
            .filter(|&op| {
                model
                    .step(&state, &ops[op].input, &ops[op].output)
                    .is_none()
            })
            .collect()
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

    /// `n` appends on `key` that all overlap, followed by a read of a value
    /// no order of them can produce. Every order yields a distinct state, so
    /// memoisation cannot help and refuting it takes about e * n! steps.
    fn hopeless(key: &str, n: u64) -> Vec<KvOperation> {
        let mut h: Vec<KvOperation> = (0..n)
            .map(|i| op(i, KvInput::append(key, format!("{i};")), "", 0, 100))
            .collect();
        h.push(op(n, KvInput::get(key), "impossible", 101, 102));
        h
    }

    /// A counter with no partitioning, to exercise the trait's defaults.
    struct Counter;

    impl Model for Counter {
        type State = i64;
        type Input = Option<i64>; // Some(delta) adds, None reads
        type Output = i64;

        fn init(&self) -> i64 {
            0
        }

        fn step(&self, state: &i64, input: &Option<i64>, output: &i64) -> Option<i64> {
            match input {
                Some(delta) => Some(state + delta),
                None => (output == state).then_some(*state),
            }
        }

        fn describe(&self, input: &Option<i64>, output: &i64) -> String {
            match input {
                Some(d) => format!("add({d})"),
                None => format!("read() -> {output}"),
            }
        }

        fn describe_state(&self, state: &i64) -> String {
            state.to_string()
        }
    }

    fn counter_op(
        input: Option<i64>,
        output: i64,
        call: u64,
        return_time: u64,
    ) -> Operation<Option<i64>, i64> {
        Operation {
            client_id: call,
            input,
            call,
            output,
            return_time,
        }
    }

    #[test]
    fn default_partition_checks_the_whole_history() {
        let ok = [
            counter_op(Some(2), 0, 0, 10),
            counter_op(Some(3), 0, 1, 10),
            counter_op(None, 3, 2, 4),
            counter_op(None, 5, 11, 12),
        ];
        assert_eq!(check_operations(&Counter, &ok, None), CheckResult::Ok);
        let mut bad = ok.to_vec();
        bad[3].output = 3;
        let (result, info) = check_operations_verbose(&Counter, &bad, None);
        assert_eq!(result, CheckResult::Illegal);
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
        let order: Vec<usize> = info.partitions[0]
            .longest_prefix
            .iter()
            .map(|s| s.op)
            .collect();
        assert_eq!(order, vec![1, 0, 2]);
        let states: Vec<&str> = info.partitions[0]
            .longest_prefix
            .iter()
            .map(|s| s.state_after.as_str())
            .collect();
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
    fn pathological_history_times_out() {
        let h = hopeless("x", 16);
        for timeout in [Duration::from_nanos(1), Duration::from_millis(50)] {
            let started = Instant::now();
            assert_eq!(
                check_operations(&KvModel, &h, Some(timeout)),
                CheckResult::Unknown
            );
            assert!(started.elapsed() < timeout + Duration::from_secs(2));
        }
        let (result, info) =
            check_operations_verbose(&KvModel, &h, Some(Duration::from_millis(20)));
        assert_eq!(result, CheckResult::Unknown);
        assert_eq!(info.partitions[0].result, CheckResult::Unknown);
        // It got as far as every append but not the read.
        assert_eq!(info.partitions[0].longest_prefix.len(), 16);
        assert_eq!(info.partitions[0].blocked, vec![16]);
    }

    #[test]
    fn illegal_partition_is_found_even_when_another_times_out() {
        let mut h = hopeless("slow", 16);
        h.push(op(0, KvInput::put("fast", "1"), "", 0, 1));
        h.push(op(1, KvInput::get("fast"), "2", 2, 3));
        let timeout = Some(Duration::from_millis(50));
        assert_eq!(
            check_operations(&KvModel, &h, timeout),
            CheckResult::Illegal
        );
        let (result, info) = check_operations_verbose(&KvModel, &h, timeout);
        assert_eq!(result, CheckResult::Illegal);
        assert_eq!(info.partitions[0].result, CheckResult::Unknown);
        assert_eq!(info.partitions[1].result, CheckResult::Illegal);
    }

    #[test]
    fn exhaustive_refutation_of_a_moderate_case_finishes() {
        // Every one of the 8! append orders is a distinct state, so refuting
        // the read means visiting about e * 8! (~110,000) configurations.
        let h = hopeless("x", 8);
        assert_eq!(
            check_operations(&KvModel, &h, Some(Duration::from_secs(30))),
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
