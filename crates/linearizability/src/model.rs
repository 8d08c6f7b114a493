//! The sequential specification a history is checked against, and the
//! recorded operations that make up a history.

use std::fmt::Debug;
use std::hash::Hash;

/// One completed (or abandoned) client operation of a concurrent history.
///
/// `call` and `return_time` may be in any monotone unit shared by the whole
/// history (wall-clock or simulated nanoseconds, a logical counter, ...).
/// Only their relative order matters; see the crate docs for how equal
/// timestamps are ordered.
///
/// An operation whose outcome the client never learnt (the request timed out
/// or the connection dropped) must be recorded with `return_time: u64::MAX`:
/// it then stays concurrent with everything invoked after it and may be
/// linearized anywhere after its call. For a write that is exact, because a
/// write that never took effect is indistinguishable from one that took
/// effect after every other operation. The checker relies on that: an
/// operation without a return must be accepted by [`Model::step`] in every
/// state, so that it can always be linearized last. A read with an unknown
/// outcome carries no information and must be left out of the history (or of
/// every partition) altogether.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// The client that issued the operation. Used for the report only; the
    /// checker orders operations by their time stamps alone.
    pub client_id: u64,
    /// What was asked.
    pub input: I,
    /// Invocation time.
    pub call: u64,
    /// What was answered.
    pub output: O,
    /// Response time, or `u64::MAX` if no response was received.
    pub return_time: u64,
}

/// A sequential specification: the behaviour a linearizable object must be
/// indistinguishable from.
///
/// `step` must be a pure, deterministic function of its arguments: the checker
/// memoises on states and replays linearizations to build reports.
pub trait Model {
    /// The abstract state of the object (of one partition of it).
    type State: Clone + Eq + Hash + Debug;
    /// The arguments of an operation.
    type Input: Clone + Debug;
    /// The result of an operation.
    type Output: Clone + Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// Returns `Some(next_state)` iff `output` is a legal answer to `input`
    /// in `state`.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Option<Self::State>;

    /// Splits a history into independent sub-histories that are checked
    /// separately (P-compositionality: the whole history is linearizable iff
    /// every part is). Each inner vector lists indices into `ops`; every
    /// operation should appear in exactly one part. The default keeps the
    /// history whole.
    fn partition(&self, ops: &[Operation<Self::Input, Self::Output>]) -> Vec<Vec<usize>> {
        vec![(0..ops.len()).collect()]
    }

    /// A short label for an operation in reports, e.g. `put(k, "v")`.
    fn describe(&self, input: &Self::Input, output: &Self::Output) -> String;

    /// A label for a state in reports.
    fn describe_state(&self, state: &Self::State) -> String;

    /// Whether the operation leaves the state unchanged in every state that
    /// `step` accepts it in, like a read. The search linearizes such an
    /// operation as soon as it is legal without trying alternatives, which is
    /// always safe for a true read and can be a large saving. Saying `true`
    /// for anything else (e.g. a write that happens to rewrite the current
    /// value) makes the checker unsound; the default is `false`.
    fn is_read_only(&self, input: &Self::Input, output: &Self::Output) -> bool {
        let _ = (input, output);
        false
    }

    /// An optional pruning hint, consulted when `step` rejects an operation
    /// in `state`.
    ///
    /// The operation must still be linearized later, after some sequence of
    /// operations drawn from `available`: the other unlinearized operations
    /// that were called before it returned. Return `false` only if no such
    /// sequence can lead from `state` to a state in which `step` accepts it;
    /// the search then abandons `state` at once instead of trying every order
    /// of the pending operations. A model whose values only grow between
    /// overwrites (like [`crate::kv::KvModel`]) can usually tell cheaply, and
    /// that turns refuting a wrong guess from exponential into constant work.
    /// Returning `false` wrongly makes the checker unsound; the default,
    /// `true`, never prunes.
    fn may_become_legal<'a>(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
        available: impl Iterator<Item = &'a Operation<Self::Input, Self::Output>>,
    ) -> bool
    where
        Self::Input: 'a,
        Self::Output: 'a,
    {
        let _ = (state, input, output, available);
        true
    }

    /// A heading for one part returned by [`Model::partition`], given that
    /// part's operations (never empty), e.g. the key they share. The default
    /// is empty, in which case reports number the parts instead.
    fn describe_partition(&self, ops: &[&Operation<Self::Input, Self::Output>]) -> String {
        let _ = ops;
        String::new()
    }
}
