//! The search for a linearization of one partition: Wing & Gong's
//! depth-first search over a doubly linked list of call/return events, with
//! Lowe's memoisation of explored configurations.

use std::time::Instant;

use crate::checker::CheckResult;
use crate::memo::{fingerprint, zobrist, Bitset, Memo};
use crate::model::{Model, Operation};

/// How often (in search steps) the deadline is consulted: reading the clock
/// on every step would dominate the cost of cheap models.
const DEADLINE_CHECK_INTERVAL: u64 = 1024; // a power of two

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
const COMMIT: bool = true;

/// The event list. Node 0 is a sentinel head; node `k + 1` is event `k` of
/// the sorted order. Linearizing an operation "lifts" its call and return out
/// of the list; backtracking puts them back (dancing links), so both are O(1).
struct EventList {
    next: Vec<u32>,
    prev: Vec<u32>,
    /// Operation of each node (unused for the head).
    op: Vec<u32>,
    is_call: Vec<bool>,
    /// For each operation, the node of its return.
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
            return_node: vec![0; ops],
        };
        list.next[nodes - 1] = NIL;
        list.prev[0] = NIL;
        for (k, ev) in events.iter().enumerate() {
            let node = k + 1;
            list.op[node] = ev.op as u32;
            list.is_call[node] = ev.is_call;
            if !ev.is_call {
                list.return_node[ev.op] = node as u32;
            }
        }
        list
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

    /// Removes a call and its matching return.
    fn lift(&mut self, call: u32) {
        let ret = self.return_node[self.op[call as usize] as usize];
        self.unlink(call);
        self.unlink(ret);
    }

    /// Exactly undoes `lift`; lifts must be undone in reverse order.
    fn unlift(&mut self, call: u32) {
        let ret = self.return_node[self.op[call as usize] as usize];
        self.relink(ret);
        self.relink(call);
    }
}

/// A linearized operation on the search stack, with what is needed to undo
/// it and to resume trying the other candidates of its level.
struct Frame<S> {
    op: u32,
    state_before: S,
    fingerprint_before: u128,
    candidates: Vec<u32>,
    next: usize,
    at_step: u64,
}

const KEY_MODE: u8 = 0;
const PRUNE: bool = true;
pub static DEBUG_DEPTH: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(usize::MAX);
const LOOK: usize = 8;

struct Available<'l> {
    list: &'l EventList,
    node: u32,
    stop: u32,
    skip: u32,
}
impl Iterator for Available<'_> {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        while self.node != self.stop && self.node != NIL {
            let n = self.node as usize;
            self.node = self.list.next[n];
            if self.list.is_call[n] && self.list.op[n] != self.skip {
                return Some(self.list.op[n]);
            }
        }
        None
    }
}

pub(crate) fn search<M: Model>(
    model: &M,
    ops: &[&Operation<M::Input, M::Output>],
    budget: Budget,
) -> SearchOutcome {
    let events = event_order(ops.iter().map(|o| (o.call, o.return_time)));
    let mut list = EventList::new(&events, ops.len());
    let mut call_node = vec![0u32; ops.len()];
    for node in 1..list.op.len() {
        if list.is_call[node] {
            call_node[list.op[node] as usize] = node as u32;
        }
    }
    let key: Vec<u128> = ops
        .iter()
        .map(|o| match KEY_MODE {
            0 => o.call as u128,
            1 => o.return_time as u128,
            _ => o.call as u128 + o.return_time as u128,
        })
        .collect();
    // 0 unknown, 1 reader, 2 writer
    let mut kind = vec![0u8; ops.len()];

    let mut linearized = Bitset::new(ops.len());
    let mut set_hash = 0u64;
    let mut state = model.init();
    let mut state_fp = fingerprint(&state);
    let mut memo = Memo::new(ops.len());
    let mut stack: Vec<Frame<M::State>> = Vec::new();

    let mut longest: Vec<usize> = Vec::new();
    let mut agree = 0usize;

    let collect = |list: &EventList, kind: &[u8]| {
        let mut c = Vec::new();
        let mut node = list.next[HEAD as usize];
        while node != NIL && list.is_call[node as usize] {
            c.push(list.op[node as usize]);
            node = list.next[node as usize];
        }
        c.sort_unstable_by_key(|&o| (kind[o as usize] == 2, key[o as usize], o));
        c
    };

    let mut hist: Vec<u64> = Vec::new();
    let mut steps = 0u64;
    let mut candidates = collect(&list, &kind);
    let mut next = 0usize;
    while list.next[HEAD as usize] != NIL {
        if steps & (DEADLINE_CHECK_INTERVAL - 1) == 0 && budget.exhausted() {
            let mut top: Vec<(u64, usize)> =
                hist.iter().enumerate().map(|(d, &c)| (c, d)).collect();
            top.sort();
            top.reverse();
            eprintln!("hist top {:?}", &top[..10.min(top.len())]);
            eprintln!(
                "timeout: steps {steps} memo {} longest {} of {}",
                memo.len(),
                longest.len(),
                ops.len()
            );
            return SearchOutcome {
                result: CheckResult::Unknown,
                longest_prefix: longest,
            };
        }
        steps += 1;

        if next < candidates.len() {
            let op = candidates[next] as usize;
            next += 1;
            let candidate = ops[op];
            let Some(next_state) = model.step(&state, &candidate.input, &candidate.output) else {
                if PRUNE {
                    let ret = list.return_node[op];
                    let available = Available {
                        list: &list,
                        node: list.next[HEAD as usize],
                        stop: ret,
                        skip: op as u32,
                    }
                    .map(|o| ops[o as usize]);
                    if !model.may_become_legal(
                        &state,
                        &candidate.input,
                        &candidate.output,
                        available,
                    ) {
                        next = candidates.len();
                    }
                }
                continue;
            };
            let next_fp = fingerprint(&next_state);
            let read_only = next_fp == state_fp && next_state == state;
            if kind[op] == 0 {
                kind[op] = if read_only { 1 } else { 2 };
            }
            linearized.set(op);
            let next_hash = set_hash ^ zobrist(op);
            if !memo.insert(next_hash, &linearized, next_fp) {
                linearized.clear(op);
                if read_only {
                    next = candidates.len();
                }
                continue;
            }
            if read_only {
                next = candidates.len();
            }
            set_hash = next_hash;
            list.lift(call_node[op]);
            stack.push(Frame {
                op: op as u32,
                state_before: std::mem::replace(&mut state, next_state),
                fingerprint_before: std::mem::replace(&mut state_fp, next_fp),
                candidates: std::mem::take(&mut candidates),
                next,
                at_step: steps,
            });
            if hist.len() <= stack.len() {
                hist.resize(stack.len() + 1, 0);
            }
            hist[stack.len()] += 1;
            if DEBUG_DEPTH.load(std::sync::atomic::Ordering::Relaxed) == stack.len() {
                let mut ids: Vec<usize> = stack.iter().map(|f| f.op as usize).collect();
                ids.sort();
                let st = format!("{:?}", state);
                let tail = &st[st.len().saturating_sub(80)..];
                eprintln!(
                    "cfg last {:?} {:?} state ..{}",
                    stack.last().map(|f| f.op),
                    &ids[ids.len().saturating_sub(12)..],
                    tail
                );
                let mut node = list.next[HEAD as usize];
                let mut k = 0;
                while node != NIL && k < 40 {
                    let n = node as usize;
                    node = list.next[n];
                    k += 1;
                    let o = list.op[n] as usize;
                    eprintln!(
                        "   {} op {} kind {} {:?} -> {:?} [{}, {}]",
                        if list.is_call[n] { "call" } else { "ret " },
                        o,
                        kind[o],
                        ops[o].input,
                        ops[o].output,
                        ops[o].call,
                        ops[o].return_time
                    );
                }
            }
            if stack.len() > longest.len() {
                longest.truncate(agree);
                longest.extend(stack[agree..].iter().map(|f| f.op as usize));
                agree = stack.len();
            }
            candidates = collect(&list, &kind);
            next = 0;
            if LOOK > 0 {
                let mut node = list.next[HEAD as usize];
                let mut seen = 0;
                let mut past_first_return = false;
                while node != NIL && seen < LOOK {
                    let n = node as usize;
                    node = list.next[n];
                    if !list.is_call[n] {
                        past_first_return = true;
                        continue;
                    }
                    if !past_first_return {
                        continue;
                    }
                    let o = list.op[n] as usize;
                    if kind[o] == 2 {
                        continue;
                    }
                    let g = ops[o];
                    let r = model.step(&state, &g.input, &g.output);
                    if let Some(ns) = &r {
                        if kind[o] == 0 {
                            kind[o] = if *ns == state { 1 } else { 2 };
                            if kind[o] == 2 {
                                continue;
                            }
                        }
                    }
                    seen += 1;
                    if r.is_none() {
                        let available = Available {
                            list: &list,
                            node: list.next[HEAD as usize],
                            stop: list.return_node[o],
                            skip: o as u32,
                        }
                        .map(|x| ops[x as usize]);
                        if !model.may_become_legal(&state, &g.input, &g.output, available) {
                            next = candidates.len();
                            break;
                        }
                    }
                }
            }
        } else {
            let Some(frame) = stack.pop() else {
                return SearchOutcome {
                    result: CheckResult::Illegal,
                    longest_prefix: longest,
                };
            };
            agree = agree.min(stack.len());
            if steps - frame.at_step > 200_000 {
                let o = ops[frame.op as usize];
                eprintln!(
                    "dead subtree {} steps at depth {} root op {} {:?} [{}, {}] state {:?}",
                    steps - frame.at_step,
                    stack.len(),
                    frame.op,
                    o.input,
                    o.call,
                    o.return_time,
                    frame.state_before
                );
            }
            state = frame.state_before;
            state_fp = frame.fingerprint_before;
            let undone = frame.op as usize;
            linearized.clear(undone);
            set_hash ^= zobrist(undone);
            list.unlift(call_node[undone]);
            candidates = frame.candidates;
            next = frame.next;
        }
    }
    if false {
        eprintln!("ok: steps {steps} memo {} of {}", memo.len(), ops.len());
    }
    SearchOutcome {
        result: CheckResult::Ok,
        longest_prefix: longest,
    }
}

/// The operations that could be linearized right after `prefix`: those not
/// in it whose call precedes the first return of an operation not in it.
pub(crate) fn next_candidates(events: &[Event], prefix: &[usize], ops: usize) -> Vec<usize> {
    let mut done = vec![false; ops];
    for &op in prefix {
        done[op] = true;
    }
    events
        .iter()
        .filter(|e| !done[e.op])
        .take_while(|e| e.is_call)
        .map(|e| e.op)
        .collect()
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
        let events = event_order([(0, 4), (1, 2), (3, 5)].into_iter());
        let mut list = EventList::new(&events, 3);
        let snapshot = (list.next.clone(), list.prev.clone());
        let first_call = list.next[HEAD as usize];
        list.lift(first_call);
        let second = list.next[HEAD as usize];
        list.lift(second);
        list.unlift(second);
        list.unlift(first_call);
        assert_eq!((list.next.clone(), list.prev.clone()), snapshot);
    }

    #[test]
    fn candidates_stop_at_the_first_pending_return() {
        // 0: [0, 2], 1: [1, 6], 2: [3, 4], 3: [5, 7]
        let events = event_order([(0, 2), (1, 6), (3, 4), (5, 7)].into_iter());
        assert_eq!(next_candidates(&events, &[], 4), vec![0, 1]);
        assert_eq!(next_candidates(&events, &[0], 4), vec![1, 2]);
        assert_eq!(next_candidates(&events, &[0, 2], 4), vec![1, 3]);
    }
}
