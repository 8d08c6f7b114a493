//! A linearizability checker for histories of concurrent operations, in the
//! style of porcupine: Wing & Gong's backtracking search with Lowe's
//! memoisation, P-compositional partitioning, a time budget, and an HTML
//! report of what went wrong. [`kv::KvModel`] specifies a key/value store
//! with `get`, `put` and `append`, checked key by key; [`commands::CommandsModel`]
//! the Redis commands, transactions and WATCH of raftkv, checked as one map.
//!
//! # Contract
//!
//! A history is a slice of [`Operation`]s, each with the client that issued
//! it, its input and output, and the times it was called and returned. It is
//! *linearizable* with respect to a [`Model`] if the operations can be put in
//! one sequence that
//!
//! * respects real time: if `a` returned before `b` was called, `a` comes
//!   first; and
//! * is legal: starting from [`Model::init`], [`Model::step`] accepts every
//!   operation's output in turn.
//!
//! Time stamps only need to be monotone within the history. At equal time
//! stamps calls are ordered before returns, so operations whose intervals
//! merely touch count as concurrent; this errs on the side of accepting a
//! history rather than blaming a coarse clock.
//!
//! An operation whose reply never arrived has `return_time: u64::MAX`: it may
//! then be linearized anywhere after its call, which is exact for writes (one
//! that never took effect is indistinguishable from one that took effect
//! last). The checker assumes such an operation is legal in every state;
//! reads without a reply carry no information and must be left out.
//!
//! # Partitioning
//!
//! [`Model::partition`] may split a history into parts that are checked
//! independently, e.g. one per key for a key/value store. This is sound when
//! operations on different parts commute and never observe each other, and
//! it turns one exponential search into many small ones. The history is
//! linearizable iff every part is.
//!
//! # Search and memoisation
//!
//! Calls and returns are kept in a doubly linked list in time order. From a
//! given point, any pending operation called before the first pending return
//! may be linearized next; the search tries them in turn, removes the chosen
//! one's call and return from the list, and backtracks when none is left.
//! Each configuration reached (the set of linearized operations and the
//! resulting state) is remembered, and one seen before is not explored
//! again: its future is the same. States are remembered by a 128-bit
//! fingerprint rather than by value, since values can be large and there is
//! one entry per configuration, so `step` must be deterministic and `Hash`
//! consistent with `Eq`.
//!
//! Three refinements keep highly concurrent histories tractable, all of them
//! exact:
//!
//! * A configuration that only adds unanswered operations to one already
//!   refuted is skipped, since those operations could have gone last.
//! * An operation that [`Model::is_read_only`] is linearized as soon as it is
//!   legal, without trying alternatives first.
//! * When `step` rejects a read, [`Model::may_become_legal`] may say that no
//!   sequence of the operations that can still precede it would make it
//!   legal; the configuration is then abandoned at once. This is asked of the
//!   candidates and of a few reads further ahead. For a store whose values
//!   grow by appends it turns refuting a wrong guess about their order from
//!   factorial into constant work.
//!
//! Both hints default to doing nothing, so a model need only implement
//! `init`, `step` and the descriptions.
//!
//! # Time budget
//!
//! The optional timeout covers the whole check. Partitions are checked
//! smallest first, and the clock is read when each starts and then every
//! 1024 search steps. The result is [`CheckResult::Illegal`] if any
//! partition is found not to be linearizable (even if others ran out of
//! time), else [`CheckResult::Unknown`] if some partition was not decided in
//! time, else [`CheckResult::Ok`]. `Unknown` says nothing either way; a zero
//! timeout yields it for any non-empty history. Linearizable histories are
//! usually decided quickly; proving a history *not* linearizable means ruling
//! out every order of everything before the violation, which is the costly
//! case under heavy concurrency.
//!
//! # Reports
//!
//! [`check_operations_verbose`] also returns a [`CheckInfo`], with every
//! label and state already rendered through [`Model::describe`] and
//! [`Model::describe_state`], and [`write_report`] turns it into a single
//! HTML file with inline SVG that any browser opens offline. It has a
//! summary table and one section per partition. Each section shows a
//! timeline: one row per client (an extra row when a client went on after a
//! request without reply), one bar per operation from its call to its
//! return, labelled with its description; the horizontal axis is the order
//! of calls and returns, not scaled time. Linearizable partitions are
//! collapsed and drawn in blue. A partition that is not linearizable, or was
//! not decided in time, is expanded, with a close-up of where the search
//! stopped if it is large:
//!
//! * green bars are the operations of the longest linearizable prefix found,
//!   each with a tick at a possible linearization point numbered by its
//!   position in that linearization, joined in order by a dotted line;
//! * red bars could come next in real time but are not legal in the state
//!   that prefix leaves; orange bars are not legal in it and, by the model's
//!   hint, can never become legal again: usually the culprit;
//! * grey bars were not reached; dashed borders mark operations without a
//!   reply;
//! * hovering over a bar shows its times, its step and the state after it;
//!   tables below list the stuck operations and, step by step, the prefix
//!   with the state after each operation.
//!
//! # Example
//!
//! ```
//! use linearizability::kv::{KvInput, KvModel, KvOutput};
//! use linearizability::{check_operations, CheckResult, Operation};
//!
//! let history = vec![
//!     Operation { client_id: 0, input: KvInput::put("k", "1"), call: 0,
//!                 output: KvOutput::default(), return_time: 10 },
//!     Operation { client_id: 1, input: KvInput::get("k"), call: 5,
//!                 output: KvOutput::new("1"), return_time: 12 },
//!     // Called after the put returned, so it must see "1".
//!     Operation { client_id: 2, input: KvInput::get("k"), call: 11,
//!                 output: KvOutput::new(""), return_time: 13 },
//! ];
//! assert_eq!(check_operations(&KvModel, &history, None), CheckResult::Illegal);
//! assert_eq!(check_operations(&KvModel, &history[..2], None), CheckResult::Ok);
//! ```

mod checker;
pub mod commands;
mod info;
pub mod kv;
mod memo;
mod model;
mod report;
mod search;

pub use checker::{check_operations, check_operations_verbose, CheckResult};
pub use info::{CheckInfo, LinearizedOp, OpInfo, PartitionInfo};
pub use model::{Model, Operation};
pub use report::write_report;
