//! The search for a linearization of one partition: Wing & Gong's
//! depth-first search over a doubly linked list of call/return events, with
//! Lowe's memoisation of explored configurations, plus three prunings that
//! keep highly concurrent histories tractable:
//!
//! * an operation the model declares read-only ([`Model::is_read_only`]) is
//!   linearized as soon as it is legal, without trying alternatives;
//! * the model's [`Model::may_become_legal`] hint abandons a configuration
//!   as soon as some pending read can no longer be satisfied, looking a few
//!   reads beyond the ones that could be linearized next;
//! * configurations that only add unanswered operations to one already
//!   refuted are skipped (see `Memo`).

use std::time::Instant;

use crate::checker::CheckResult;
use crate::memo::{fingerprint, zobrist, Bitset, EntryId, Memo};
use crate::model::{Model, Operation};

/// How often (in search steps) the deadline is consulted: reading the clock
/// on every step would dominate the cost of cheap models.
const DEADLINE_CHECK_INTERVAL: u64 = 1024; // a power of two

/// How many reads beyond the next candidates are checked against the
/// pruning hint in each new configuration. A wrong guess is usually exposed
/// by one of the next few reads; looking further costs more per step than it
/// saves.
const LOOKAHEAD_READS: usize = 8;

/// How many pending calls the lookahead examines at most while searching
/// for those reads, so that a long stretch of writes does not make every
/// step cost time proportional to the rest of the history.
const LOOKAHEAD_CALLS: usize = 128;

/// One call or return, identified by the operation's index in its partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) op: usize,
    pub(crate) is_call: bool,
}

/// Orders the calls and returns of `intervals` (`(call, return)` pairs).
///
/// At equal time stamps calls come before returns, so operations whose
/// intervals merely touch are treated as concurrent. That is the conservative
/// choice: it can only allow more linearizations, never reject a history
/// because of time stamp granularity. Remaining ties are broken by operation
/// index so that the order, and hence every result, is deterministic.
pub(crate) fn event_order(intervals: impl Iterator<Item = (u64, u64)>) -> Vec<Event> {
    let mut keyed: Vec<(u64, bool, usize)> = Vec::new();
    for (op, (call, ret)) in intervals.enumerate() {
        keyed.push((call, false, op));
        keyed.push((ret, true, op));
    }
    // `false < true`, so calls sort first at equal times.
    keyed.sort_unstable();
    keyed
        .into_iter()
        .map(|(_, is_return, op)| Event {
            op,
            is_call: !is_return,
        })
        .collect()
}

/// The time budget shared by all partitions of one check.
#[derive(Clone, Copy)]
pub(crate) struct Budget {
    pub(crate) deadline: Option<Instant>,
}

impl Budget {
    fn exhausted(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// What the search of one partition found.
pub(crate) struct SearchOutcome {
    pub(crate) result: CheckResult,
    /// The longest sequence of operations (indices into the partition) that
    /// was found to be a valid linearization of a prefix of the history. For
    /// a linearizable partition it covers every operation.
    pub(crate) longest_prefix: Vec<usize>,
}

const NIL: u32 = u32::MAX;
const HEAD: u32 = 0;

/// The event list. Node 0 is a sentinel head; node `k + 1` is event `k` of
/// the sorted order. Linearizing an operation "lifts" its call and return out
/// of the list; backtracking puts them back (dancing links), so both are O(1).
struct EventList {
    next: Vec<u32>,
    prev: Vec<u32>,
    /// Operation of each node (unused for the head).
    op: Vec<u32>,
    is_call: Vec<bool>,
    call_node: Vec<u32>,
    return_node: Vec<u32>,
}

impl EventList {
    fn new(events: &[Event], ops: usize) -> Self {
        let nodes = events.len() + 1;
        let mut list = Self {
            next: (1..=nodes as u32).collect(),
            prev: (0..nodes as u32).map(|n| n.wrapping_sub(1)).collect(),
            op: vec![0; nodes],
            is_call: vec![false; nodes],
            call_node: vec![0; ops],
            return_node: vec![0; ops],
        };
        list.next[nodes - 1] = NIL;
        for (k, ev) in events.iter().enumerate() {
            let node = k + 1;
            list.op[node] = ev.op as u32;
            list.is_call[node] = ev.is_call;
            if ev.is_call {
                list.call_node[ev.op] = node as u32;
            } else {
                list.return_node[ev.op] = node as u32;
            }
        }
        list
    }

    fn first(&self) -> u32 {
        self.next[HEAD as usize]
    }

    fn unlink(&mut self, node: u32) {
        let (p, n) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = n;
        if n != NIL {
            self.prev[n as usize] = p;
        }
    }

    fn relink(&mut self, node: u32) {
        let (p, n) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = node;
        if n != NIL {
            self.prev[n as usize] = node;
        }
    }

    /// Removes an operation's call and return.
    fn lift(&mut self, op: usize) {
        self.unlink(self.call_node[op]);
        self.unlink(self.return_node[op]);
    }

    /// Exactly undoes `lift`; lifts must be undone in reverse order.
    fn unlift(&mut self, op: usize) {
        self.relink(self.return_node[op]);
        self.relink(self.call_node[op]);
    }

    /// Pending operations, in call order, from the first remaining event.
    fn pending_calls(&self) -> impl Iterator<Item = (usize, bool)> + '_ {
        // (operation, whether its call precedes the first remaining return)
        let mut node = self.first();
        let mut before_first_return = true;
        std::iter::from_fn(move || {
            while node != NIL {
                let n = node as usize;
                node = self.next[n];
                if self.is_call[n] {
                    return Some((self.op[n] as usize, before_first_return));
                }
                before_first_return = false;
            }
            None
        })
    }

    /// The pending operations other than `op` that were called before `op`
    /// returned: the ones that may still be linearized before it.
    fn may_precede(&self, op: usize) -> impl Iterator<Item = usize> + '_ {
        let stop = self.return_node[op];
        let mut node = self.first();
        std::iter::from_fn(move || {
            while node != stop && node != NIL {
                let n = node as usize;
                node = self.next[n];
                if self.is_call[n] && self.op[n] as usize != op {
                    return Some(self.op[n] as usize);
                }
            }
            None
        })
    }
}

/// What the search has learnt about an operation's effect, to try reads
/// before writes and to skip writes when looking ahead for reads.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// Not yet seen legal, so possibly a read.
    Unknown,
    /// Seen to leave the state unchanged.
    Read,
    /// Seen to change the state.
    Write,
}

/// A linearized operation on the search stack, with what is needed to undo
/// it and to go on with the other candidates of its level.
struct Frame<S> {
    op: usize,
    entry: EntryId,
    state_before: S,
    fingerprint_before: u128,
    candidates: Vec<usize>,
    next: usize,
}

/// Searches for a linearization of `ops`.
///
/// From the current configuration, the candidates for the next linearized
/// operation are the pending ones called before the first pending return (an
/// operation whose return has been reached must be linearized before anything
/// invoked later). Each candidate that the model accepts, and whose resulting
/// configuration is new, is pushed; a configuration with no candidate left is
/// backtracked from. The partition is linearizable iff every operation gets
/// linearized, and not iff backtracking runs out.
pub(crate) fn search<M: Model>(
    model: &M,
    ops: &[&Operation<M::Input, M::Output>],
    budget: Budget,
) -> SearchOutcome {
    let n = ops.len();
    let events = event_order(ops.iter().map(|o| (o.call, o.return_time)));
    let mut list = EventList::new(&events, n);

    // Unanswered operations are numbered separately (see `Memo`).
    let mut open_index = vec![usize::MAX; n];
    let mut closed_index = vec![usize::MAX; n];
    let (mut opens, mut closeds) = (0, 0);
    for (i, o) in ops.iter().enumerate() {
        if o.return_time == u64::MAX {
            open_index[i] = opens;
            opens += 1;
        } else {
            closed_index[i] = closeds;
            closeds += 1;
        }
    }
    let mut closed_set = Bitset::new(closeds);
    let mut open_set = Bitset::new(opens);
    let mut closed_hash = 0u64;
    let mut memo = Memo::new(closeds, opens);

    // Candidates are tried reads first (a legal read is committed to at
    // once, see below), then in call order, with unanswered operations last
    // because they may equally well take effect much later.
    let read_only: Vec<bool> = ops
        .iter()
        .map(|o| model.is_read_only(&o.input, &o.output))
        .collect();
    let mut kind: Vec<Kind> = read_only
        .iter()
        .map(|&r| if r { Kind::Read } else { Kind::Unknown })
        .collect();
    let mut call_rank = vec![0usize; n];
    for (rank, e) in events.iter().filter(|e| e.is_call).enumerate() {
        call_rank[e.op] = rank;
    }
    let order_candidates = |list: &EventList, kind: &[Kind]| {
        let mut c: Vec<usize> = list
            .pending_calls()
            .take_while(|&(_, candidate)| candidate)
            .map(|(op, _)| op)
            .collect();
        c.sort_unstable_by_key(|&op| {
            (
                kind[op] == Kind::Write,
                open_index[op] != usize::MAX,
                call_rank[op],
            )
        });
        c
    };

    let mut state = model.init();
    let mut state_fp = fingerprint(&state);
    let mut stack: Vec<Frame<M::State>> = Vec::new();

    // `longest` always equals the stack as it was when it last grew past the
    // previous record; `agree` is how much of the current stack still matches
    // it, so a new record only copies what changed.
    let mut longest: Vec<usize> = Vec::new();
    let mut agree = 0usize;

    let mut candidates = order_candidates(&list, &kind);
    let mut next = 0usize;
    if reads_ahead_are_unsatisfiable(model, ops, &list, &mut kind, &state) {
        next = candidates.len();
    }
    let mut steps = 0u64;
    while list.first() != NIL {
        if steps & (DEADLINE_CHECK_INTERVAL - 1) == 0 && budget.exhausted() {
            return SearchOutcome {
                result: CheckResult::Unknown,
                longest_prefix: longest,
            };
        }
        steps += 1;

        if next == candidates.len() {
            // Nothing (more) to try here: backtrack.
            let Some(frame) = stack.pop() else {
                return SearchOutcome {
                    result: CheckResult::Illegal,
                    longest_prefix: longest,
                };
            };
            agree = agree.min(stack.len());
            memo.finish(frame.entry);
            state = frame.state_before;
            state_fp = frame.fingerprint_before;
            let op = frame.op;
            if open_index[op] == usize::MAX {
                closed_set.clear(closed_index[op]);
                closed_hash ^= zobrist(op);
            } else {
                open_set.clear(open_index[op]);
            }
            list.unlift(op);
            candidates = frame.candidates;
            next = frame.next;
            continue;
        }

        let op = candidates[next];
        next += 1;
        let Some(next_state) = model.step(&state, &ops[op].input, &ops[op].output) else {
            if !may_become_legal(model, ops, &list, &state, op) {
                next = candidates.len();
            }
            continue;
        };
        let next_fp = fingerprint(&next_state);
        if kind[op] == Kind::Unknown {
            let unchanged = next_fp == state_fp && next_state == state;
            kind[op] = if unchanged { Kind::Read } else { Kind::Write };
        }
        // A legal read can be moved to the front of any linearization from
        // here: no pending operation returned before it was called, and the
        // states in between are unaffected. So if linearizing it now fails,
        // so does everything else at this level.
        if read_only[op] {
            next = candidates.len();
        }

        let next_closed_hash = if open_index[op] == usize::MAX {
            closed_set.set(closed_index[op]);
            closed_hash ^ zobrist(op)
        } else {
            open_set.set(open_index[op]);
            closed_hash
        };
        let Some(entry) = memo.insert(next_closed_hash, &closed_set, &open_set, next_fp) else {
            if open_index[op] == usize::MAX {
                closed_set.clear(closed_index[op]);
            } else {
                open_set.clear(open_index[op]);
            }
            continue;
        };
        closed_hash = next_closed_hash;
        list.lift(op);
        stack.push(Frame {
            op,
            entry,
            state_before: std::mem::replace(&mut state, next_state),
            fingerprint_before: std::mem::replace(&mut state_fp, next_fp),
            candidates: std::mem::take(&mut candidates),
            next,
        });
        if stack.len() > longest.len() {
            longest.truncate(agree);
            longest.extend(stack[agree..].iter().map(|f| f.op));
            agree = stack.len();
        }

        candidates = order_candidates(&list, &kind);
        next = 0;
        if reads_ahead_are_unsatisfiable(model, ops, &list, &mut kind, &state) {
            next = candidates.len();
        }
    }
    SearchOutcome {
        result: CheckResult::Ok,
        longest_prefix: longest,
    }
}

/// Asks the model whether `op`, rejected in `state`, can still be made legal
/// by the operations that may precede it.
fn may_become_legal<M: Model>(
    model: &M,
    ops: &[&Operation<M::Input, M::Output>],
    list: &EventList,
    state: &M::State,
    op: usize,
) -> bool {
    let available = list.may_precede(op).map(|o| ops[o]);
    model.may_become_legal(state, &ops[op].input, &ops[op].output, available)
}

/// Checks up to `LOOKAHEAD_READS` pending reads that cannot be linearized
/// next (they were called after the first pending return) and reports
/// whether one of them can never become legal from `state`. Operations
/// met here for the first time are classified on the way.
fn reads_ahead_are_unsatisfiable<M: Model>(
    model: &M,
    ops: &[&Operation<M::Input, M::Output>],
    list: &EventList,
    kind: &mut [Kind],
    state: &M::State,
) -> bool {
    let mut checked = 0;
    let ahead = list.pending_calls().filter(|&(_, candidate)| !candidate);
    for (op, _) in ahead.take(LOOKAHEAD_CALLS) {
        if checked == LOOKAHEAD_READS {
            break;
        }
        if kind[op] == Kind::Write {
            continue;
        }
        match model.step(state, &ops[op].input, &ops[op].output) {
            Some(next) => {
                if kind[op] == Kind::Unknown {
                    kind[op] = if next == *state {
                        Kind::Read
                    } else {
                        Kind::Write
                    };
                }
            }
            None => {
                if !may_become_legal(model, ops, list, state, op) {
                    return true;
                }
            }
        }
        if kind[op] != Kind::Write {
            checked += 1;
        }
    }
    false
}

/// How many pending returns `stuck_after` examines for operations that can
/// never become legal; it only serves reports, so it need not be exhaustive.
const STUCK_EXAMINED: usize = 256;

/// What stands in the way after `prefix`, which leads to `state`: the
/// operations that could come next in real time but that the model rejects,
/// and, among the next pending returns, operations that the model rejects
/// and says can never become legal again ([`Model::may_become_legal`]).
pub(crate) fn stuck_after<M: Model>(
    model: &M,
    ops: &[&Operation<M::Input, M::Output>],
    prefix: &[usize],
    state: &M::State,
) -> (Vec<usize>, Vec<usize>) {
    let rejects = |op: usize| model.step(state, &ops[op].input, &ops[op].output).is_none();
    let mut done = vec![false; ops.len()];
    for &op in prefix {
        done[op] = true;
    }
    let events = event_order(ops.iter().map(|o| (o.call, o.return_time)));
    let (mut blocked, mut unsatisfiable) = (Vec::new(), Vec::new());
    let mut called: Vec<usize> = Vec::new();
    let mut returns = 0;
    for e in events.iter().filter(|e| !done[e.op]) {
        if e.is_call {
            if returns == 0 && rejects(e.op) {
                blocked.push(e.op);
            }
            called.push(e.op);
            continue;
        }
        returns += 1;
        if returns > STUCK_EXAMINED {
            break;
        }
        let op = e.op;
        if rejects(op) {
            let available = called.iter().filter(|&&o| o != op).map(|&o| ops[o]);
            if !model.may_become_legal(state, &ops[op].input, &ops[op].output, available) {
                unsatisfiable.push(op);
            }
        }
    }
    (blocked, unsatisfiable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_sort_before_returns_at_equal_times() {
        // Op 0 is [0, 5], op 1 is [5, 9]: they touch at 5.
        let events = event_order([(0, 5), (5, 9)].into_iter());
        let ev = |op, is_call| Event { op, is_call };
        assert_eq!(
            events,
            vec![ev(0, true), ev(1, true), ev(0, false), ev(1, false)]
        );
    }

    #[test]
    fn zero_length_operations_are_ordered_call_first() {
        let events = event_order([(3, 3)].into_iter());
        assert!(events[0].is_call && !events[1].is_call);
    }

    #[test]
    fn lift_and_unlift_restore_the_list() {
        // 0: [0, 4], 1: [1, 2], 2: [3, 5]
        let events = event_order([(0, 4), (1, 2), (3, 5)].into_iter());
        let mut list = EventList::new(&events, 3);
        let snapshot = (list.next.clone(), list.prev.clone());
        list.lift(1);
        assert_eq!(
            list.pending_calls().collect::<Vec<_>>(),
            vec![(0, true), (2, true)]
        );
        list.lift(0);
        assert_eq!(list.pending_calls().collect::<Vec<_>>(), vec![(2, true)]);
        list.unlift(0);
        list.unlift(1);
        assert_eq!((list.next.clone(), list.prev.clone()), snapshot);
    }

    #[test]
    fn pending_calls_mark_the_candidates() {
        // 0: [0, 2], 1: [1, 6], 2: [3, 4], 3: [5, 7]
        let events = event_order([(0, 2), (1, 6), (3, 4), (5, 7)].into_iter());
        let mut list = EventList::new(&events, 4);
        let pending = |list: &EventList| list.pending_calls().collect::<Vec<_>>();
        assert_eq!(
            pending(&list),
            vec![(0, true), (1, true), (2, false), (3, false)]
        );
        list.lift(0);
        assert_eq!(pending(&list), vec![(1, true), (2, true), (3, false)]);
        assert_eq!(list.may_precede(2).collect::<Vec<_>>(), vec![1]);
        assert_eq!(list.may_precede(1).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn stuck_after_finds_rejected_and_hopeless_operations() {
        use crate::kv::{KvInput, KvModel, KvOperation, KvOutput};
        let op = |input: KvInput, output: &str, call, return_time| KvOperation {
            client_id: 0,
            input,
            call,
            output: KvOutput::new(output),
            return_time,
        };
        let history = [
            op(KvInput::put("x", "1"), "", 0, 2),
            op(KvInput::get("x"), "", 1, 6), // rejected next, but a put may follow
            op(KvInput::get("x"), "2", 3, 4), // rejected, and nothing writes 2
            op(KvInput::put("x", ""), "", 5, 7),
        ];
        let ops: Vec<&KvOperation> = history.iter().collect();
        let (blocked, unsatisfiable) = stuck_after(&KvModel, &ops, &[0], &"1".to_string());
        assert_eq!(blocked, vec![1, 2]);
        assert_eq!(unsatisfiable, vec![2]);
    }
}
