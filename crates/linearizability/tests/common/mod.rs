//! Generates key/value histories by simulating a store that really is
//! linearizable: every operation takes effect at a random instant inside its
//! [call, return] interval, and outputs are computed by applying operations
//! in the order of those instants.

use std::collections::HashMap;

use linearizability::kv::{KvInput, KvOp, KvOperation, KvOutput};
use linearizability::Operation;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Copy, Debug)]
pub struct Workload {
    pub clients: u64,
    pub keys: usize,
    pub ops: usize,
    /// Out of 100; the rest are split 30:70 between put and append.
    pub get_percent: u32,
    /// Probability that a write's reply is lost. Such a write took effect or
    /// not with equal probability, and is recorded with an open return.
    pub lost_reply: f64,
    /// Longest operation, in time units.
    pub max_latency: u64,
    /// Longest think time of a client between operations.
    pub max_think: u64,
}

/// Simulates `w` with a seeded generator and returns the recorded history.
pub fn simulate(seed: u64, w: Workload) -> Vec<KvOperation> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut free_at = vec![0u64; w.clients as usize];

    // (operation, linearization instant, whether it takes effect)
    let mut planned: Vec<(KvOperation, u64, bool)> = Vec::with_capacity(w.ops);
    for n in 0..w.ops {
        // Always advance the client that is idle earliest, so that all
        // clients keep overlapping for the whole run.
        let client = (0..free_at.len()).min_by_key(|&c| free_at[c]).unwrap();
        let call = free_at[client] + rng.gen_range(0..=w.max_think);
        let ret = call + rng.gen_range(1..=w.max_latency);
        let at = rng.gen_range(call..=ret);
        free_at[client] = ret;

        let key = format!("k{}", rng.gen_range(0..w.keys));
        let roll = rng.gen_range(0..100);
        let input = if roll < w.get_percent {
            KvInput::get(key)
        } else if rng.gen_bool(0.3) {
            KvInput::put(key, format!("p{n};"))
        } else {
            KvInput::append(key, format!("{client}.{n};"))
        };
        let lost = input.op != KvOp::Get && rng.gen_bool(w.lost_reply);
        let takes_effect = !lost || rng.gen_bool(0.5);
        let op = Operation {
            client_id: client as u64,
            input,
            call,
            output: KvOutput::default(),
            return_time: if lost { u64::MAX } else { ret },
        };
        planned.push((op, at, takes_effect));
    }

    let mut order: Vec<usize> = (0..planned.len()).collect();
    order.sort_by_key(|&i| (planned[i].1, i));
    let mut store: HashMap<String, String> = HashMap::new();
    for i in order {
        let (op, _, takes_effect) = &mut planned[i];
        if !*takes_effect {
            continue;
        }
        let value = store.entry(op.input.key.clone()).or_default();
        match op.input.op {
            KvOp::Get => op.output.value = value.clone(),
            KvOp::Put => *value = op.input.value.clone(),
            KvOp::Append => value.push_str(&op.input.value),
        }
    }
    planned.into_iter().map(|(op, _, _)| op).collect()
}
