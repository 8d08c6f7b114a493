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
