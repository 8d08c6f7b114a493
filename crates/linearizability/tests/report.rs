//! The HTML report: written where asked, self-contained, and showing what
//! the check found.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{simulate, Workload};
use linearizability::kv::{KvInput, KvModel, KvOp, KvOperation, KvOutput};
use linearizability::{check_operations_verbose, write_report, CheckResult, Operation};

const OPEN: u64 = u64::MAX;

fn op(client_id: u64, input: KvInput, output: &str, call: u64, return_time: u64) -> KvOperation {
    Operation {
        client_id,
        input,
        call,
        output: KvOutput::new(output),
        return_time,
    }
}

fn report_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// Key `x` has a stale read, and a read that could still be explained by a
/// later write; key `y` is fine and has a write without reply.
fn illegal_history() -> Vec<KvOperation> {
    vec![
        op(0, KvInput::put("x", "1"), "", 0, 10),
        op(1, KvInput::get("x"), "1", 5, 15),
        op(0, KvInput::put("x", "<2&>"), "", 20, 30),
        op(1, KvInput::get("x"), "1", 35, 40),
        op(2, KvInput::append("y", "a"), "", 0, OPEN),
        op(2, KvInput::append("y", "b"), "", 12, 14),
        op(3, KvInput::get("y"), "ab", 16, 18),
        op(3, KvInput::get("x"), "3", 36, 50),
        op(0, KvInput::put("x", "3"), "", 45, 60),
    ]
}

#[test]
fn report_of_an_illegal_history() {
    let history = illegal_history();
    let (result, info) = check_operations_verbose(&KvModel, &history, None);
    assert_eq!(result, CheckResult::Illegal);
    let x = &info.partitions[0];
    assert_eq!(x.result, CheckResult::Illegal);
    // put 1, get 1, put <2&> linearize; the second get of 1 cannot follow.
    let order: Vec<usize> = x.longest_prefix.iter().map(|s| s.op).collect();
    assert_eq!(order, vec![0, 1, 2]);
    assert_eq!(x.blocked, vec![3, 4]);
    // And with no put of 1 left, it never can be.
    assert_eq!(x.unsatisfiable, vec![3]);
    assert_eq!(info.partitions[1].result, CheckResult::Ok);

    let path = report_path("report_illegal.html");
    write_report(&KvModel, &info, &path).unwrap();
    let html = std::fs::read_to_string(&path).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<svg"));
    assert!(html.contains("NOT linearizable"));
    // Every label, escaped.
    for label in [
        "put(x, &quot;1&quot;)",
        "get(x) -&gt; &quot;1&quot;",
        "put(x, &quot;&lt;2&amp;&gt;&quot;)",
        "append(y, &quot;a&quot;) (no reply)",
        "append(y, &quot;b&quot;)",
        "get(y) -&gt; &quot;ab&quot;",
        "get(x) -&gt; &quot;3&quot;",
    ] {
        assert!(html.contains(label), "missing {label}");
    }
    assert!(!html.contains("<2&>"), "unescaped text");
    // The stuck read, the linearized ones and their order are marked.
    assert_eq!(html.matches("class=\"op doomed\"").count(), 1);
    assert_eq!(html.matches("class=\"op blocked\"").count(), 1);
    assert_eq!(html.matches("class=\"op rest\"").count(), 1);
    assert_eq!(html.matches("class=\"op lin\"").count(), 3);
    assert!(html.contains("class=\"step\""));
    assert!(html.contains("Cannot be linearized next"));
    assert!(html.contains("Can never become legal again"));
    assert!(html.contains("client 0") && html.contains("client 3"));
    // Self-contained: no scripts or external resources.
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("href=\"http"));
    println!("report written to {}", path.display());
}

#[test]
fn report_of_an_undecided_history() {
    let history = illegal_history();
    let (result, info) = check_operations_verbose(&KvModel, &history, Some(Duration::ZERO));
    assert_eq!(result, CheckResult::Unknown);
    let path = report_path("report_unknown.html");
    write_report(&KvModel, &info, &path).unwrap();
    let html = std::fs::read_to_string(&path).unwrap();
    assert!(html.contains("undecided"));
    assert!(html.contains("<svg"));
}

#[test]
fn report_of_a_large_history_with_one_bad_read() {
    let workload = Workload {
        clients: 8,
        keys: 10,
        ops: 3_000,
        get_percent: 50,
        lost_reply: 0.02,
        max_latency: 100,
        max_think: 20,
    };
    let mut history = simulate(5, workload);
    let i = (history.len() / 2..history.len())
        .find(|&i| history[i].input.op == KvOp::Get && !history[i].output.value.is_empty())
        .unwrap();
    history[i].output.value.push_str("!bad");
    let (result, info) =
        check_operations_verbose(&KvModel, &history, Some(Duration::from_secs(10)));
    assert_eq!(result, CheckResult::Illegal);
    assert_eq!(info.illegal_partitions().count(), 1);
    let path = report_path("report_large.html");
    write_report(&KvModel, &info, &path).unwrap();
    let html = std::fs::read_to_string(&path).unwrap();
    assert_eq!(html.matches("<details id=").count(), info.partitions.len());
    assert!(html.contains("Around where the search stopped"));
    assert!(html.contains("!bad"));
}

#[test]
fn report_to_an_unwritable_path_fails() {
    let (_, info) = check_operations_verbose(&KvModel, &illegal_history(), None);
    let path = report_path("no/such/directory/report.html");
    assert!(write_report(&KvModel, &info, &path).is_err());
}
