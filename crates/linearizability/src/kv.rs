//! A key/value store with `get`, `put` and `append`, every key starting as
//! the empty string.
//!
//! Histories are partitioned by key, so [`KvModel`]'s state is the value of a
//! single key. Only a `get`'s output is checked; the output of `put` and
//! `append` is ignored, which is why a write whose reply was lost can be
//! recorded with `return_time: u64::MAX` and any output. A `get` whose reply
//! was lost says nothing; [`KvModel::partition`] leaves it out.
//!
//! The model implements both search hints: a `get` is read-only, and a `get`
//! of `v` can only become legal from a state `s` if `v` is `s` followed by
//! values of appends that may still come first, or the value of such a put
//! followed by them. Values that are unique per write (e.g. carrying the
//! client and a sequence number) make that check, and so the checker, most
//! effective.

use std::collections::HashMap;

use crate::model::{Model, Operation};

/// The kind of a key/value operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvOp {
    /// Read the value of `key`; `value` is unused.
    Get,
    /// Replace the value of `key` with `value`.
    Put,
    /// Concatenate `value` to the value of `key`.
    Append,
}

/// The arguments of a key/value operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KvInput {
    pub op: KvOp,
    pub key: String,
    pub value: String,
}

impl KvInput {
    pub fn get(key: impl Into<String>) -> Self {
        Self {
            op: KvOp::Get,
            key: key.into(),
            value: String::new(),
        }
    }

    pub fn put(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            op: KvOp::Put,
            key: key.into(),
            value: value.into(),
        }
    }

    pub fn append(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            op: KvOp::Append,
            key: key.into(),
            value: value.into(),
        }
    }
}

/// The result of a key/value operation: the value read by a `get`, ignored
/// for `put` and `append`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KvOutput {
    pub value: String,
}

impl KvOutput {
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
        }
    }
}

/// The sequential specification of the store, one key at a time.
#[derive(Clone, Copy, Debug, Default)]
pub struct KvModel;

/// A key/value operation as recorded in a history.
pub type KvOperation = Operation<KvInput, KvOutput>;

impl Model for KvModel {
    type State = String;
    type Input = KvInput;
    type Output = KvOutput;

    fn init(&self) -> String {
        String::new()
    }

    fn step(&self, state: &String, input: &KvInput, output: &KvOutput) -> Option<String> {
        match input.op {
            KvOp::Get => equal(&output.value, state).then(|| state.clone()),
            KvOp::Put => Some(input.value.clone()),
            KvOp::Append => {
                let mut next = String::with_capacity(state.len() + input.value.len());
                next.push_str(state);
                next.push_str(&input.value);
                Some(next)
            }
        }
    }

    fn is_read_only(&self, input: &KvInput, _output: &KvOutput) -> bool {
        input.op == KvOp::Get
    }

    /// A read of `v` can only become legal from `state` if `v` is `state`
    /// followed by values of available appends, or the value of an available
    /// put (the last one applied) followed by such values. Checking that the
    /// tail can be spelled with those values, each usable any number of
    /// times, is an over-approximation, so pruning stays sound.
    fn may_become_legal<'a>(
        &self,
        state: &String,
        input: &KvInput,
        output: &KvOutput,
        available: impl Iterator<Item = &'a KvOperation>,
    ) -> bool {
        if input.op != KvOp::Get {
            return true;
        }
        let mut appends: Vec<&[u8]> = Vec::new();
        let mut puts: Vec<&str> = Vec::new();
        for op in available {
            match op.input.op {
                KvOp::Append if !op.input.value.is_empty() => {
                    appends.push(op.input.value.as_bytes())
                }
                KvOp::Put => puts.push(&op.input.value),
                _ => {}
            }
        }
        let target = output.value.as_str();
        let reachable_from = |base: &str| {
            starts_with(target, base) && spelled_by(&target.as_bytes()[base.len()..], &appends)
        };
        reachable_from(state) || puts.into_iter().any(reachable_from)
    }

    /// One part per key, in order of first appearance. A `get` without a
    /// reply is left out: it constrains nothing, and the checker relies on
    /// unanswered operations being legal in every state.
    fn partition(&self, ops: &[KvOperation]) -> Vec<Vec<usize>> {
        let mut part_of_key: HashMap<&str, usize> = HashMap::new();
        let mut parts: Vec<Vec<usize>> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            if op.input.op == KvOp::Get && op.return_time == u64::MAX {
                continue;
            }
            let p = *part_of_key.entry(op.input.key.as_str()).or_insert_with(|| {
                parts.push(Vec::new());
                parts.len() - 1
            });
            parts[p].push(i);
        }
        parts
    }

    fn describe(&self, input: &KvInput, output: &KvOutput) -> String {
        match input.op {
            KvOp::Get => format!("get({}) -> {:?}", input.key, output.value),
            KvOp::Put => format!("put({}, {:?})", input.key, input.value),
            KvOp::Append => format!("append({}, {:?})", input.key, input.value),
        }
    }

    fn describe_state(&self, state: &String) -> String {
        format!("{state:?}")
    }

    fn describe_partition(&self, ops: &[&KvOperation]) -> String {
        ops.first()
            .map(|op| format!("key {}", op.input.key))
            .unwrap_or_default()
    }
}

/// How many trailing bytes are compared before the rest. Values grown by
/// appends share long prefixes and differ near the end, so this settles most
/// comparisons without scanning the whole value.
const TAIL: usize = 16;

fn equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.as_bytes()[a.len().saturating_sub(TAIL)..]
            == b.as_bytes()[b.len().saturating_sub(TAIL)..]
        && a == b
}

fn starts_with(text: &str, prefix: &str) -> bool {
    let (text, prefix) = (text.as_bytes(), prefix.as_bytes());
    prefix.len() <= text.len() && {
        let from = prefix.len().saturating_sub(TAIL);
        text[from..prefix.len()] == prefix[from..] && text[..from] == prefix[..from]
    }
}

/// Whether `text` is a concatenation of `pieces` (each any number of times).
fn spelled_by(text: &[u8], pieces: &[&[u8]]) -> bool {
    if text.is_empty() {
        return true;
    }
    // Pieces are matched on their first eight bytes before anything else,
    // which rejects nearly every mismatch with one comparison.
    let heads: Vec<(u64, u64)> = pieces.iter().map(|p| head(p)).collect();
    let mut reachable = vec![false; text.len() + 1];
    reachable[0] = true;
    for at in 0..text.len() {
        if !reachable[at] {
            continue;
        }
        let (word, _) = head(&text[at..]);
        for (piece, &(piece_word, mask)) in pieces.iter().zip(&heads) {
            if word & mask == piece_word && text[at..].starts_with(piece) {
                reachable[at + piece.len()] = true;
            }
        }
    }
    reachable[text.len()]
}

/// Up to the first eight bytes of `bytes` as a little-endian word, and a
/// mask of the bytes present.
fn head(bytes: &[u8]) -> (u64, u64) {
    let n = bytes.len().min(8);
    let mut buf = [0u8; 8];
    buf[..n].copy_from_slice(&bytes[..n]);
    let mask = if n == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * n)) - 1
    };
    (u64::from_le_bytes(buf), mask)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{check_operations, check_operations_verbose, CheckResult};

    const OPEN: u64 = u64::MAX;

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

    fn get(c: u64, k: &str, v: &str, call: u64, ret: u64) -> KvOperation {
        op(c, KvInput::get(k), v, call, ret)
    }

    fn put(c: u64, k: &str, v: &str, call: u64, ret: u64) -> KvOperation {
        op(c, KvInput::put(k, v), "", call, ret)
    }

    fn append(c: u64, k: &str, v: &str, call: u64, ret: u64) -> KvOperation {
        op(c, KvInput::append(k, v), "", call, ret)
    }

    fn check(history: &[KvOperation]) -> CheckResult {
        let result = check_operations(&KvModel, history, Some(Duration::from_secs(10)));
        // Both entry points must agree.
        let (verbose, _) =
            check_operations_verbose(&KvModel, history, Some(Duration::from_secs(10)));
        assert_eq!(result, verbose);
        result
    }

    #[test]
    fn empty_history_is_ok() {
        assert_eq!(check(&[]), CheckResult::Ok);
    }

    #[test]
    fn sequential_history_is_ok() {
        let h = [
            get(0, "x", "", 0, 1),
            put(0, "x", "a", 2, 3),
            get(1, "x", "a", 4, 5),
            append(1, "x", "b", 6, 7),
            get(0, "x", "ab", 8, 9),
            put(1, "x", "c", 10, 11),
            get(0, "x", "c", 12, 13),
        ];
        assert_eq!(check(&h), CheckResult::Ok);
    }

    #[test]
    fn overlapping_put_and_get_may_go_either_way() {
        for seen in ["", "1"] {
            let h = [put(0, "x", "1", 0, 10), get(1, "x", seen, 2, 8)];
            assert_eq!(check(&h), CheckResult::Ok, "get saw {seen:?}");
        }
    }

    #[test]
    fn concurrent_appends_may_land_in_either_order() {
        for seen in ["ab", "ba"] {
            let h = [
                append(0, "x", "a", 0, 10),
                append(1, "x", "b", 1, 9),
                get(2, "x", seen, 11, 12),
            ];
            assert_eq!(check(&h), CheckResult::Ok, "get saw {seen:?}");
        }
    }

    #[test]
    fn sequential_appends_concatenate_in_order() {
        let h = [
            append(0, "x", "a", 0, 1),
            append(1, "x", "b", 2, 3),
            get(2, "x", "ba", 4, 5),
        ];
        assert_eq!(check(&h), CheckResult::Illegal);
        let h = [
            append(0, "x", "a", 0, 1),
            append(1, "x", "b", 2, 3),
            get(2, "x", "ab", 4, 5),
        ];
        assert_eq!(check(&h), CheckResult::Ok);
    }

    #[test]
    fn touching_intervals_are_concurrent() {
        // The get returns at 5 and the put is called at 5: either order is fine.
        let h = [get(0, "x", "1", 0, 5), put(1, "x", "1", 5, 9)];
        assert_eq!(check(&h), CheckResult::Ok);
        // One tick apart, the get strictly precedes the put.
        let h = [get(0, "x", "1", 0, 4), put(1, "x", "1", 5, 9)];
        assert_eq!(check(&h), CheckResult::Illegal);
    }

    #[test]
    fn stale_read_after_completed_put_is_illegal() {
        let h = [
            put(0, "x", "1", 0, 1),
            put(0, "x", "2", 2, 3),
            get(1, "x", "1", 4, 5),
        ];
        assert_eq!(check(&h), CheckResult::Illegal);
    }

    #[test]
    fn reading_a_value_never_written_is_illegal() {
        let h = [put(0, "x", "1", 0, 10), get(1, "x", "7", 2, 8)];
        assert_eq!(check(&h), CheckResult::Illegal);
    }

    #[test]
    fn contradictory_append_orders_are_illegal() {
        let h = [
            append(0, "x", "a", 0, 10),
            append(1, "x", "b", 0, 10),
            get(2, "x", "ab", 11, 12),
            get(2, "x", "ba", 13, 14),
        ];
        assert_eq!(check(&h), CheckResult::Illegal);
    }

    #[test]
    fn keys_are_independent_but_all_checked() {
        let ok = [
            put(0, "x", "1", 0, 1),
            put(1, "y", "2", 0, 1),
            get(0, "y", "2", 2, 3),
            get(1, "x", "1", 2, 3),
        ];
        assert_eq!(check(&ok), CheckResult::Ok);
        let mut bad = ok.to_vec();
        bad[2].output.value = "1".into(); // y never held "1"
        assert_eq!(check(&bad), CheckResult::Illegal);
    }

    #[test]
    fn partition_is_by_key_in_first_appearance_order() {
        let h = [
            get(0, "b", "", 0, 1),
            get(0, "a", "", 2, 3),
            get(0, "b", "", 4, 5),
        ];
        assert_eq!(KvModel.partition(&h), vec![vec![0, 2], vec![1]]);
    }

    #[test]
    fn unanswered_reads_are_ignored() {
        let h = [
            put(0, "x", "1", 0, 1),
            get(1, "x", "never seen", 2, OPEN),
            get(1, "x", "1", 3, 4),
        ];
        assert_eq!(KvModel.partition(&h), vec![vec![0, 2]]);
        assert_eq!(check(&h), CheckResult::Ok);
    }

    #[test]
    fn unanswered_append_observed_later_is_ok() {
        let h = [
            append(0, "x", "a", 0, OPEN),
            append(1, "x", "b", 5, 6),
            get(1, "x", "ab", 7, 8),
            get(2, "x", "ab", 9, 10),
        ];
        assert_eq!(check(&h), CheckResult::Ok);
    }

    #[test]
    fn unanswered_append_taking_effect_late_is_ok() {
        // Not seen by the first get, seen by the second.
        let h = [
            append(0, "x", "a", 0, OPEN),
            get(1, "x", "", 5, 6),
            get(1, "x", "a", 7, 8),
        ];
        assert_eq!(check(&h), CheckResult::Ok);
    }

    #[test]
    fn unanswered_append_never_observed_is_ok() {
        let h = [
            put(0, "x", "1", 0, 1),
            append(0, "x", "a", 2, OPEN),
            get(1, "x", "1", 3, 4),
            put(1, "x", "2", 5, 6),
            get(1, "x", "2", 7, 8),
        ];
        assert_eq!(check(&h), CheckResult::Ok);
    }

    #[test]
    fn unanswered_append_cannot_act_before_its_call() {
        let h = [get(1, "x", "a", 0, 1), append(0, "x", "a", 2, OPEN)];
        assert_eq!(check(&h), CheckResult::Illegal);
    }

    #[test]
    fn reads_become_legal_only_from_extendable_states() {
        let m = KvModel;
        let read = KvInput::get("x");
        let seen = KvOutput::new("p;a;b;");
        let available = [
            append(0, "x", "a;", 0, 1),
            append(0, "x", "b;", 0, 1),
            put(0, "x", "p;", 0, 1),
            get(0, "x", "ignored", 0, 1),
        ];
        let may = |state: &str, ops: &[KvOperation]| {
            m.may_become_legal(&state.to_string(), &read, &seen, ops.iter())
        };
        assert!(may("p;", &available));
        assert!(may("p;a;", &available));
        assert!(may("", &available)); // via the put
        assert!(may("p;b;", &available)); // the put can still reset it
        assert!(!may("p;b;", &available[..2])); // b came too early
        assert!(!may("q;", &available[..2])); // no put to reset
        assert!(!may("p;", &available[1..])); // a is gone
        assert!(may("p;a;", &available[1..2]));
        // Writes are always legal, so never pruned.
        assert!(m.may_become_legal(
            &"zzz".to_string(),
            &KvInput::put("x", "1"),
            &KvOutput::default(),
            std::iter::empty()
        ));
    }

    #[test]
    fn spelling_and_comparisons() {
        let pieces: [&[u8]; 3] = [b"ab", b"abc", b"c"];
        assert!(spelled_by(b"", &pieces));
        assert!(spelled_by(b"abcab", &pieces));
        assert!(spelled_by(b"ababcc", &pieces));
        assert!(!spelled_by(b"abca", &pieces));
        assert!(!spelled_by(b"x", &[]));
        let long = "0123456789".repeat(5);
        assert!(equal(&long, &long.clone()));
        assert!(!equal(&long, &format!("{}x", &long[1..])));
        assert!(starts_with(&long, &long[..33]));
        assert!(!starts_with(&long[..33], &long));
        assert!(!starts_with(&long, &format!("x{}", &long[1..33])));
        assert!(starts_with("abc", ""));
    }

    #[test]
    fn describe_labels() {
        let m = KvModel;
        assert_eq!(
            m.describe(&KvInput::get("k"), &KvOutput::new("v")),
            "get(k) -> \"v\""
        );
        assert_eq!(
            m.describe(&KvInput::put("k", "v"), &KvOutput::default()),
            "put(k, \"v\")"
        );
        assert_eq!(
            m.describe(&KvInput::append("k", "v"), &KvOutput::default()),
            "append(k, \"v\")"
        );
        assert_eq!(m.describe_state(&"ab".to_string()), "\"ab\"");
    }
}
