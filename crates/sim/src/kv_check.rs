//! Checks a recorded key/value history with the linearizability checker. An illegal history
//! fails the test and leaves a visual report under `target/linearizability/`; so does a
//! history the checker cannot decide within its budget (the course lets that pass; we do not).

use crate::history::Record;
use kv::OpKind;
use linearizability::kv::{KvInput, KvModel, KvOutput};
use linearizability::{check_operations_verbose, write_report, CheckResult, Model, Operation};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The checker's budget for one history. Generous: a timeout fails the test.
pub const CHECK_BUDGET: Duration = Duration::from_secs(60);

pub fn to_operations(history: &[Record]) -> Vec<Operation<KvInput, KvOutput>> {
    history
        .iter()
        .filter_map(|r| {
            let input = match &r.kind {
                OpKind::Get { key } => KvInput::get(text(key)),
                OpKind::Put { key, value } => KvInput::put(text(key), text(value)),
                OpKind::Append { key, value } => KvInput::append(text(key), text(value)),
                // Sessions are the Clerk's business and never recorded; the Redis commands
                // are checked by their own model (`commands_check`).
                _ => return None,
            };
            Some(Operation {
                client_id: r.client,
                input,
                call: r.call,
                output: KvOutput::new(r.output.clone().into_text()),
                return_time: r.ret,
            })
        })
        .collect()
}

/// The course's operations carry text: the simulated clients write only UTF-8.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Where the report of test `name` on `seed` goes.
pub fn report_path(name: &str, seed: u64) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target
        .join("linearizability")
        .join(format!("{name}-seed{seed}.html"))
}

/// Panics unless the checker proves `history` linearizable within [`CHECK_BUDGET`].
pub fn check_linearizable(history: &[Record], name: &str, seed: u64) {
    let t0 = Instant::now();
    let result = check_history(history, name, seed);
    eprintln!(
        "{name}: checker decided {} on {} operations in {:?}",
        if result.is_ok() { "Ok" } else { "against" },
        history.len(),
        t0.elapsed()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Why a history was not accepted.
#[derive(Debug)]
pub enum CheckError {
    /// Proven not linearizable; the message names the report.
    Illegal(String),
    /// Not decided within the budget.
    Timeout(String),
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckError::Illegal(m) | CheckError::Timeout(m) => f.write_str(m),
        }
    }
}

/// Checks `history` within [`CHECK_BUDGET`]; unless it is proven linearizable, writes the
/// report under `target/linearizability/` and says why.
pub fn check_history(history: &[Record], name: &str, seed: u64) -> Result<(), CheckError> {
    check_operations_reported(&KvModel, &to_operations(history), name, seed, "history")
}

/// Checks `ops` against `model` within [`CHECK_BUDGET`]; unless they are proven linearizable,
/// writes the report of `name` on `seed` and says why, naming `what` was checked.
pub fn check_operations_reported<M: Model>(
    model: &M,
    ops: &[Operation<M::Input, M::Output>],
    name: &str,
    seed: u64,
    what: &str,
) -> Result<(), CheckError> {
    let t0 = Instant::now();
    let (result, info) = check_operations_verbose(model, ops, Some(CHECK_BUDGET));
    let took = t0.elapsed();
    if result == CheckResult::Ok {
        return Ok(());
    }
    let path = report_path(name, seed);
    let written = std::fs::create_dir_all(path.parent().expect("parent"))
        .and_then(|_| write_report(model, &info, &path));
    let report = match written {
        Ok(()) => format!("report: {}", path.display()),
        Err(e) => format!("could not write the report to {}: {e}", path.display()),
    };
    match result {
        CheckResult::Illegal => Err(CheckError::Illegal(format!(
            "{what} is not linearizable; {report}"
        ))),
        _ => Err(CheckError::Timeout(format!(
            "linearizability check of the {what} timed out after {took:?}; {report}"
        ))),
    }
}
