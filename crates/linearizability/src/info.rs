//! What a verbose check found, in a model-independent form: labels and
//! states are rendered through the model when the check runs, so the result
//! can be kept, printed or turned into a report without the model's types.

use crate::checker::CheckResult;

/// Everything a verbose check learnt about a history.
#[derive(Clone, Debug)]
pub struct CheckInfo {
    /// The overall verdict, as also returned by the check.
    pub result: CheckResult,
    /// One entry per part returned by [`crate::Model::partition`], in that order.
    pub partitions: Vec<PartitionInfo>,
}

impl CheckInfo {
    /// The partitions that are not linearizable.
    pub fn illegal_partitions(&self) -> impl Iterator<Item = &PartitionInfo> {
        self.partitions
            .iter()
            .filter(|p| p.result == CheckResult::Illegal)
    }
}

/// The outcome for one independently checked sub-history.
#[derive(Clone, Debug)]
pub struct PartitionInfo {
    /// [`crate::Model::describe_partition`] of its operations (may be empty).
    pub title: String,
    /// `Ok`, `Illegal`, or `Unknown` if the time budget ran out first.
    pub result: CheckResult,
    /// The partition's operations; other fields index into this.
    pub ops: Vec<OpInfo>,
    /// [`crate::Model::describe_state`] of the initial state.
    pub initial_state: String,
    /// The longest sequence of operations found to be a valid linearization
    /// of a prefix of the sub-history, in linearization order. It covers every
    /// operation when `result` is `Ok`.
    pub longest_prefix: Vec<LinearizedOp>,
    /// Operations that could come next after `longest_prefix` in real time
    /// but that the model rejects in the state it leads to.
    pub blocked: Vec<usize>,
    /// Operations that the model rejects after `longest_prefix` and, by its
    /// [`crate::Model::may_become_legal`] hint, can never accept again
    /// whatever comes in between: with the default hint, none. Together with
    /// `blocked`, this is usually why the search could go no further (it may
    /// also have been stopped by such an operation further ahead, or by time).
    pub unsatisfiable: Vec<usize>,
}

/// One operation as shown in reports.
#[derive(Clone, Debug)]
pub struct OpInfo {
    /// Its index in the history passed to the check.
    pub history_index: usize,
    pub client_id: u64,
    pub call: u64,
    /// `u64::MAX` if the client never got an answer.
    pub return_time: u64,
    /// [`crate::Model::describe`] of the operation.
    pub label: String,
}

/// One step of a linearization.
#[derive(Clone, Debug)]
pub struct LinearizedOp {
    /// Index into [`PartitionInfo::ops`].
    pub op: usize,
    /// [`crate::Model::describe_state`] of the state after it.
    pub state_after: String,
}
