//! Cross-checks the checker against a brute-force search over every order of
//! small random histories, with and without the pruning hint, partitioning
//! and unanswered operations.

use std::collections::HashMap;
use std::time::Duration;

use linearizability::kv::{KvInput, KvModel, KvOp, KvOperation, KvOutput};
use linearizability::{check_operations, check_operations_verbose, CheckResult, Model, Operation};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const OPEN: u64 = u64::MAX;

/// Whether some order of `history` respects real time and is accepted by
/// `legal`, which steps a whole-history state. Exponential; for tiny inputs.
fn brute_force<O, S: Clone>(
    history: &[O],
    interval: impl Fn(&O) -> (u64, u64) + Copy,
    state: S,
    legal: impl Fn(&S, &O) -> Option<S> + Copy,
) -> bool {
    fn go<O, S: Clone>(
        history: &[O],
        remaining: &mut Vec<usize>,
        state: S,
        interval: impl Fn(&O) -> (u64, u64) + Copy,
        legal: impl Fn(&S, &O) -> Option<S> + Copy,
    ) -> bool {
        if remaining.is_empty() {
            return true;
        }
        for k in 0..remaining.len() {
            let op = remaining[k];
            let (call, _) = interval(&history[op]);
            // Something that returned before `op` was called must come first.
            let blocked = remaining
                .iter()
                .any(|&r| r != op && interval(&history[r]).1 < call);
            if blocked {
                continue;
            }
            if let Some(next) = legal(&state, &history[op]) {
                remaining.remove(k);
                let found = go(history, remaining, next, interval, legal);
                remaining.insert(k, op);
                if found {
                    return true;
                }
            }
        }
        false
    }
    let mut remaining: Vec<usize> = (0..history.len()).collect();
    go(history, &mut remaining, state, interval, legal)
}

fn kv_interval(o: &KvOperation) -> (u64, u64) {
    (o.call, o.return_time)
}

fn kv_legal(state: &HashMap<String, String>, o: &KvOperation) -> Option<HashMap<String, String>> {
    let current = state.get(&o.input.key).cloned().unwrap_or_default();
    let next = KvModel.step(&current, &o.input, &o.output)?;
    let mut state = state.clone();
    state.insert(o.input.key.clone(), next);
    Some(state)
}

/// A random history of a few operations on one or two keys, with reads that
/// are right or wrong about equally often, short values that repeat (so
/// different orders can give equal states), empty writes that change nothing,
/// and some writes without a reply.
fn random_kv_history(rng: &mut ChaCha8Rng) -> Vec<KvOperation> {
    let n = rng.gen_range(1..=7);
    let keys = if rng.gen_bool(0.3) { 2 } else { 1 };
    let mut history: Vec<KvOperation> = Vec::new();
    for _ in 0..n {
        let key = format!("k{}", rng.gen_range(0..keys));
        let call = rng.gen_range(0..20);
        let mut return_time = call + rng.gen_range(0..8);
        let input = match rng.gen_range(0..3) {
            0 => KvInput::get(key),
            1 => KvInput::put(key, *["a", "b", ""].choose(rng).unwrap()),
            _ => KvInput::append(key, *["x", "y", "xy", ""].choose(rng).unwrap()),
        };
        if input.op != KvOp::Get && rng.gen_bool(0.2) {
            return_time = OPEN;
        }
        history.push(Operation {
            client_id: rng.gen_range(0..3),
            input,
            call,
            output: KvOutput::default(),
            return_time,
        });
    }
    // Make reads plausible by replaying some order, then perturb some.
    let mut order: Vec<usize> = (0..history.len()).collect();
    order.shuffle(rng);
    let mut values: HashMap<String, String> = HashMap::new();
    for &i in &order {
        let value = values.entry(history[i].input.key.clone()).or_default();
        match history[i].input.op {
            KvOp::Get => history[i].output.value = value.clone(),
            KvOp::Put => *value = history[i].input.value.clone(),
            KvOp::Append => value.push_str(&history[i].input.value),
        }
    }
    for o in &mut history {
        if o.input.op == KvOp::Get && rng.gen_bool(0.3) {
            o.output.value = (*["", "a", "x", "ax", "xy", "yx", "axy", "bx", "xx", "b"]
                .choose(rng)
                .unwrap())
            .to_string();
        }
    }
    history
}

#[test]
fn kv_checker_agrees_with_brute_force() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (mut ok, mut illegal) = (0, 0);
    for round in 0..20_000 {
        let history = random_kv_history(&mut rng);
        let expected = brute_force(&history, kv_interval, HashMap::new(), kv_legal);
        let got = check_operations(&KvModel, &history, Some(Duration::from_secs(10)));
        let expected = if expected {
            ok += 1;
            CheckResult::Ok
        } else {
            illegal += 1;
            CheckResult::Illegal
        };
        assert_eq!(got, expected, "round {round}: {history:#?}");
        let (verbose, info) = check_operations_verbose(&KvModel, &history, None);
        assert_eq!(verbose, expected, "round {round}");
        if expected == CheckResult::Illegal {
            assert!(info.illegal_partitions().count() > 0);
        }
    }
    // Both outcomes must be well represented for the comparison to mean much.
    assert!(ok > 5_000 && illegal > 5_000, "ok {ok}, illegal {illegal}");
}

/// A register with compare-and-set, using every default of the trait.
struct Register;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RegOp {
    Write(u8),
    Read,
    /// Compare-and-set from the first value to the second.
    Cas(u8, u8),
}

impl Model for Register {
    type State = u8;
    type Input = RegOp;
    /// The value read, or whether a compare-and-set succeeded (0 or 1).
    type Output = u8;

    fn init(&self) -> u8 {
        0
    }

    fn step(&self, state: &u8, input: &RegOp, output: &u8) -> Option<u8> {
        match *input {
            RegOp::Write(v) => Some(v),
            RegOp::Read => (output == state).then_some(*state),
            RegOp::Cas(from, to) => match (*state == from, *output) {
                (true, 1) => Some(to),
                (false, 0) => Some(*state),
                _ => None,
            },
        }
    }

    fn describe(&self, input: &RegOp, output: &u8) -> String {
        format!("{input:?} -> {output}")
    }

    fn describe_state(&self, state: &u8) -> String {
        state.to_string()
    }
}

#[test]
fn generic_checker_agrees_with_brute_force() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (mut ok, mut illegal) = (0, 0);
    for round in 0..20_000 {
        let n = rng.gen_range(1..=7);
        let history: Vec<Operation<RegOp, u8>> = (0..n)
            .map(|_| {
                let call = rng.gen_range(0..20);
                let input = match rng.gen_range(0..3) {
                    0 => RegOp::Write(rng.gen_range(0..3)),
                    1 => RegOp::Read,
                    _ => RegOp::Cas(rng.gen_range(0..3), rng.gen_range(0..3)),
                };
                // Only writes may be unanswered: they are legal in any state.
                let open = matches!(input, RegOp::Write(_)) && rng.gen_bool(0.2);
                Operation {
                    client_id: 0,
                    input,
                    call,
                    output: match input {
                        RegOp::Read => rng.gen_range(0..3),
                        RegOp::Cas(..) => rng.gen_range(0..2),
                        RegOp::Write(_) => 0,
                    },
                    return_time: if open {
                        OPEN
                    } else {
                        call + rng.gen_range(0..8)
                    },
                }
            })
            .collect();
        let expected = brute_force(
            &history,
            |o: &Operation<RegOp, u8>| (o.call, o.return_time),
            0u8,
            |s, o| Register.step(s, &o.input, &o.output),
        );
        if expected {
            ok += 1;
        } else {
            illegal += 1;
        }
        let expected = if expected {
            CheckResult::Ok
        } else {
            CheckResult::Illegal
        };
        assert_eq!(
            check_operations(&Register, &history, None),
            expected,
            "round {round}: {history:#?}"
        );
    }
    assert!(ok > 3_000 && illegal > 3_000, "ok {ok}, illegal {illegal}");
}
