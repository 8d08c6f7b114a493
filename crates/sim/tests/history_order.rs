//! Recorded histories carry one strict order of calls and returns, so that the checker never
//! takes two operations for concurrent merely because their virtual timestamps tie.

use bytes::Bytes;
use kv::{OpKind, Value};
use linearizability::kv::KvModel;
use linearizability::{check_operations, CheckResult};
use sim::kv_check::to_operations;
use sim::{History, KvCluster, Record};
use std::collections::BTreeMap;

const MS: u64 = 1_000_000;

fn append(key: &str, value: &str) -> OpKind {
    OpKind::Append {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
    }
}

fn get(key: &str) -> OpKind {
    OpKind::Get {
        key: Bytes::copy_from_slice(key.as_bytes()),
    }
}

/// `append(k, "a")` over [0, 10 ms], then `get(k) -> ""` over [10 ms, 20 ms]: the get was
/// called after the append returned, so it must see "a". With millisecond timestamps the two
/// tie at 10 ms and the checker (which counts ties as concurrent) accepts the history; with
/// the recorder's positions it is rejected.
#[test]
fn a_read_after_a_write_at_the_same_instant_must_see_it() {
    let history = History::new();
    let write = history.call(0);
    history.complete(write, 0, append("k", "a"), Value::Ok, 10 * MS);
    let read = history.call(10 * MS);
    history.complete(read, 1, get("k"), Value::Nil, 20 * MS);
    let records = history.records();

    let by_position = to_operations(&records);
    assert!(by_position[0].return_time < by_position[1].call);
    assert_eq!(
        check_operations(&KvModel, &by_position, None),
        CheckResult::Illegal
    );

    // The same history judged by its virtual timestamps, which tie.
    let mut by_time = by_position.clone();
    for (op, r) in by_time.iter_mut().zip(&records) {
        op.call = r.call_time;
        op.return_time = r.ret_time;
    }
    assert_eq!(by_time[0].return_time, by_time[1].call);
    assert_eq!(check_operations(&KvModel, &by_time, None), CheckResult::Ok);
}

/// In a real simulated run, every call and return has its own position, positions follow
/// virtual time, and each client's calls are strictly ordered one after the other.
#[test]
fn simulated_histories_are_strictly_ordered() {
    sim::run(
        "simulated_histories_are_strictly_ordered",
        |seed| async move {
            let cfg = KvCluster::new(3, true, seed);
            let clients: Vec<_> = (0..4u64)
                .map(|c| {
                    let cfg = cfg.clone();
                    tokio::spawn(async move {
                        let mut ck = cfg.make_client(&cfg.all());
                        for i in 0..30 {
                            cfg.append(&mut ck, "k", &format!("{c}.{i};"), c).await;
                            cfg.get(&mut ck, "k", c).await;
                        }
                    })
                })
                .collect();
            for c in clients {
                c.await.expect("client");
            }
            check_strict_order(&cfg.history());
            cfg.stop_all();
        },
    );
}

fn check_strict_order(records: &[Record]) {
    let mut events: Vec<(u64, u64)> = Vec::new();
    for r in records {
        assert!(r.call < r.ret, "{r:?}");
        events.push((r.call, r.call_time));
        events.push((r.ret, r.ret_time));
    }
    events.sort();
    for w in events.windows(2) {
        assert!(w[0].0 < w[1].0, "two events share position {}", w[0].0);
        assert!(w[0].1 <= w[1].1, "positions run against virtual time");
    }
    let tied_times = events.windows(2).filter(|w| w[0].1 == w[1].1).count();
    let mut per_client: BTreeMap<u64, Vec<&Record>> = BTreeMap::new();
    for r in records {
        per_client.entry(r.client).or_default().push(r);
    }
    for ops in per_client.values_mut() {
        ops.sort_by_key(|r| r.call);
        for w in ops.windows(2) {
            assert!(w[0].ret < w[1].call, "a client's calls overlap: {w:?}");
        }
    }
    // Ties in virtual time are common (timers tick in whole milliseconds): exactly what the
    // positions are for.
    eprintln!(
        "{} events, {tied_times} adjacent pairs tied in virtual time",
        events.len()
    );
}
