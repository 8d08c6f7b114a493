//! A self-contained HTML report (inline SVG and CSS, no scripts) of a
//! verbose check, for looking at why a history is not linearizable.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use crate::checker::CheckResult;
use crate::info::{CheckInfo, PartitionInfo};
use crate::model::Model;
use crate::search::event_order;

/// Width of the client labels on the left of a timeline.
const GUTTER: f64 = 110.0;
/// Minimum horizontal distance between consecutive events.
const EVENT_GAP: f64 = 8.0;
/// Room after the last event, so that late bars still show their label.
const END_PAD: f64 = 150.0;
const ROW_HEIGHT: f64 = 34.0;
/// Offset of a bar within its row; the space above holds step numbers.
const BAR_TOP: f64 = 13.0;
const BAR_HEIGHT: f64 = 19.0;
const AXIS_HEIGHT: f64 = 8.0;
/// Approximate advance of one character of the 11px monospace label font.
const CHAR_WIDTH: f64 = 6.7;
/// Bars are widened to fit their label up to this width.
const MAX_LABEL_WIDTH: f64 = 260.0;
const MIN_BAR_WIDTH: f64 = 14.0;
/// Partitions with more operations than this that are not linearizable get
/// a close-up of where the search stopped before the full timeline.
const FOCUS_OPS: usize = 60;
/// How many of the last steps of the longest prefix the close-up includes.
const FOCUS_STEPS: usize = 8;
/// States and labels can be huge (a value grown by many appends); tooltips
/// and table cells show at most this many characters of them.
const MAX_TEXT: usize = 400;

/// Writes an HTML report of `info` to `path`.
///
/// Each partition gets a timeline with one row per client (more if a client
/// had overlapping operations, which happens after a request without reply)
/// and a bar per operation spanning its call to its return. Partitions that
/// are not linearizable, or were not decided in time, are expanded and show
/// the longest linearizable prefix found: its operations in green, numbered
/// in linearization order at a possible linearization point, the state after
/// each in the tooltip and in a table below, and in red the operations that
/// could not be linearized next (orange: can never become legal again).
/// `model` only names the specification in the title; everything else was
/// rendered when the check ran.
pub fn write_report<M: Model>(model: &M, info: &CheckInfo, path: &Path) -> io::Result<()> {
    std::fs::write(path, render(std::any::type_name_of_val(model), info))
}

fn render(model_name: &str, info: &CheckInfo) -> String {
    let mut out = String::new();
    let total_ops: usize = info.partitions.iter().map(|p| p.ops.len()).sum();
    let count = |r: CheckResult| info.partitions.iter().filter(|p| p.result == r).count();

    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    let _ = writeln!(
        out,
        "<title>Linearizability: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>",
        verdict(info.result)
    );
    let _ = writeln!(
        out,
        "<h1>Linearizability: <span class=\"{}\">{}</span></h1>",
        result_class(info.result),
        verdict(info.result)
    );
    let _ = writeln!(
        out,
        "<p>Model <code>{}</code>; {} operations in {} partitions: {} linearizable, {} not \
         linearizable, {} undecided (time budget exhausted).</p>",
        escape(model_name),
        total_ops,
        info.partitions.len(),
        count(CheckResult::Ok),
        count(CheckResult::Illegal),
        count(CheckResult::Unknown),
    );
    out.push_str(LEGEND);

    out.push_str("<table class=\"summary\">\n<tr><th>#</th><th>partition</th><th>operations</th><th>result</th><th>longest prefix</th></tr>\n");
    for (i, p) in info.partitions.iter().enumerate() {
        let _ = writeln!(
            out,
            "<tr><td><a href=\"#p{i}\">{i}</a></td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            escape(&p.title),
            p.ops.len(),
            result_class(p.result),
            verdict(p.result),
            p.longest_prefix.len()
        );
    }
    out.push_str("</table>\n");

    for (i, p) in info.partitions.iter().enumerate() {
        render_partition(&mut out, i, p);
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn render_partition(out: &mut String, index: usize, p: &PartitionInfo) {
    let expanded = p.result != CheckResult::Ok;
    let title = if p.title.is_empty() {
        format!("Partition {index}")
    } else {
        format!("Partition {index}: {}", p.title)
    };
    let _ = writeln!(
        out,
        "<details id=\"p{index}\"{}>\n<summary><h2>{} <span class=\"{}\">{}</span></h2></summary>",
        if expanded { " open" } else { "" },
        escape(&title),
        result_class(p.result),
        verdict(p.result)
    );

    let final_state = p
        .longest_prefix
        .last()
        .map_or(p.initial_state.as_str(), |s| s.state_after.as_str());
    match p.result {
        CheckResult::Ok => {
            let _ = writeln!(
                out,
                "<p>{} operations, linearizable. Hover over a bar for its position in one valid \
                 linearization.</p>",
                p.ops.len()
            );
        }
        CheckResult::Illegal | CheckResult::Unknown => {
            let _ = write!(
                out,
                "<p>{} The longest linearizable prefix found has {} of {} operations (green, \
                 numbered in linearization order) and leaves the state <code>{}</code>.",
                if p.result == CheckResult::Illegal {
                    "Not linearizable."
                } else {
                    "Undecided: the time budget ran out first."
                },
                p.longest_prefix.len(),
                p.ops.len(),
                escape(&clip(final_state, MAX_TEXT))
            );
            if !only_blocked(p).is_empty() {
                out.push_str(
                    " Operations in red could come next in real time but are not legal in that \
                     state.",
                );
            }
            if !p.unsatisfiable.is_empty() {
                out.push_str(
                    " Operations in orange are not legal in it and can never become legal \
                     again, whatever comes in between.",
                );
            }
            if p.result == CheckResult::Illegal
                && p.blocked.is_empty()
                && p.unsatisfiable.is_empty()
            {
                out.push_str(" Every way of continuing it fails further on.");
            }
            out.push_str("</p>\n");
        }
    }

    let everything = vec![true; p.ops.len()];
    match focus(p) {
        Some(around) => {
            let shown = around.iter().filter(|&&b| b).count();
            let _ = writeln!(
                out,
                "<p>Around where the search stopped ({shown} of {} operations; the full \
                 timeline follows):</p>",
                p.ops.len()
            );
            render_timeline(out, p, &around);
            out.push_str("<details><summary>Full timeline</summary>\n");
            render_timeline(out, p, &everything);
            out.push_str("</details>\n");
        }
        None => render_timeline(out, p, &everything),
    }
    if expanded {
        render_tables(out, p);
    }
    out.push_str("</details>\n");
}

/// Horizontal and vertical placement of a partition's operations.
///
/// The horizontal axis is event order rather than scaled time: every call
/// and return gets its own slot, in the order the checker uses, so the
/// picture shows exactly which operations the checker considered concurrent
/// however the time stamps are spread. Bars are widened to fit their labels.
struct Layout {
    x_call: Vec<f64>,
    x_return: Vec<f64>,
    open: Vec<bool>,
    lane: Vec<usize>,
    /// Client of each lane, and which of that client's lanes it is.
    lanes: Vec<(u64, usize)>,
    width: f64,
}

impl Layout {
    /// Places the operations marked in `shown`; the others get no slot.
    fn new(p: &PartitionInfo, shown: &[bool]) -> Self {
        let n = p.ops.len();
        let events = event_order(p.ops.iter().map(|o| (o.call, o.return_time)));
        let open: Vec<bool> = p.ops.iter().map(|o| o.return_time == u64::MAX).collect();
        let mut x_call = vec![0.0; n];
        let mut x_return = vec![0.0; n];
        let mut call_slot = vec![0usize; n];
        let mut return_slot = vec![0usize; n];
        let mut x = GUTTER;
        for (slot, e) in events.iter().filter(|e| shown[e.op]).enumerate() {
            x += EVENT_GAP;
            if e.is_call {
                x_call[e.op] = x;
                call_slot[e.op] = slot;
            } else {
                if !open[e.op] {
                    let label = p.ops[e.op].label.chars().count() as f64 * CHAR_WIDTH + 10.0;
                    x = x.max(x_call[e.op] + label.clamp(MIN_BAR_WIDTH, MAX_LABEL_WIDTH));
                }
                x_return[e.op] = x;
                return_slot[e.op] = slot;
            }
        }
        let width = x + END_PAD;
        for (op, &is_open) in open.iter().enumerate() {
            if is_open {
                x_return[op] = width - 8.0;
            }
        }

        // A client's operations normally never overlap; one whose request got
        // no reply does overlap the client's later ones, so it gets another lane.
        let mut by_client: Vec<usize> = (0..n).filter(|&op| shown[op]).collect();
        by_client.sort_by_key(|&op| (p.ops[op].client_id, call_slot[op]));
        let mut lane = vec![0; n];
        let mut lanes: Vec<(u64, usize)> = Vec::new();
        let mut client_lanes: Vec<(usize, usize)> = Vec::new(); // (lane, last return slot)
        let mut current_client = None;
        for op in by_client {
            let client = p.ops[op].client_id;
            if current_client != Some(client) {
                current_client = Some(client);
                client_lanes.clear();
            }
            let free = client_lanes
                .iter_mut()
                .find(|(_, last_return)| *last_return < call_slot[op]);
            let chosen = match free {
                Some(entry) => {
                    entry.1 = return_slot[op];
                    entry.0
                }
                None => {
                    lanes.push((client, client_lanes.len()));
                    client_lanes.push((lanes.len() - 1, return_slot[op]));
                    lanes.len() - 1
                }
            };
            lane[op] = chosen;
        }

        Self {
            x_call,
            x_return,
            open,
            lane,
            lanes,
            width,
        }
    }

    fn row_top(&self, lane: usize) -> f64 {
        AXIS_HEIGHT + lane as f64 * ROW_HEIGHT
    }

    fn height(&self) -> f64 {
        self.row_top(self.lanes.len()) + 6.0
    }
}

/// For a large partition that is not linearizable (or undecided), the
/// operations around where the search stopped: the last steps of the
/// longest prefix, the operations that could not follow them, and whatever
/// overlaps those in time. `None` if the whole partition is small enough to
/// show as it is.
fn focus(p: &PartitionInfo) -> Option<Vec<bool>> {
    if p.result == CheckResult::Ok || p.ops.len() <= FOCUS_OPS {
        return None;
    }
    let events = event_order(p.ops.iter().map(|o| (o.call, o.return_time)));
    let mut call_slot = vec![0; p.ops.len()];
    let mut return_slot = vec![usize::MAX; p.ops.len()];
    for (slot, e) in events.iter().enumerate() {
        if e.is_call {
            call_slot[e.op] = slot;
        } else if p.ops[e.op].return_time != u64::MAX {
            return_slot[e.op] = slot;
        }
    }
    let recent = p.longest_prefix.len().saturating_sub(FOCUS_STEPS);
    let mut anchors: Vec<usize> = p.longest_prefix[recent..].iter().map(|s| s.op).collect();
    anchors.extend(&p.blocked);
    anchors.extend(&p.unsatisfiable);
    if p.blocked.is_empty() && p.unsatisfiable.is_empty() {
        // Undecided: show what comes right after the prefix instead.
        let mut done = vec![false; p.ops.len()];
        p.longest_prefix.iter().for_each(|s| done[s.op] = true);
        let mut rest: Vec<usize> = (0..p.ops.len()).filter(|&op| !done[op]).collect();
        rest.sort_by_key(|&op| call_slot[op]);
        anchors.extend(rest.into_iter().take(FOCUS_STEPS));
    }
    // An unanswered operation may have been called long before; it would
    // stretch the close-up over the whole history, and is shown anyway.
    let start = anchors
        .iter()
        .filter(|&&op| return_slot[op] != usize::MAX)
        .map(|&op| call_slot[op])
        .min()?;
    let end = anchors
        .iter()
        .map(|&op| match return_slot[op] {
            usize::MAX => call_slot[op],
            slot => slot,
        })
        .max()?;
    Some(
        (0..p.ops.len())
            .map(|op| call_slot[op] <= end && return_slot[op] >= start)
            .collect(),
    )
}

fn render_timeline(out: &mut String, p: &PartitionInfo, shown: &[bool]) {
    let layout = Layout::new(p, shown);
    let n = p.ops.len();
    let expanded = p.result != CheckResult::Ok;

    let mut step_of = vec![None; n];
    for (k, s) in p.longest_prefix.iter().enumerate() {
        step_of[s.op] = Some(k);
    }
    let mut blocked = vec![false; n];
    for &op in &p.blocked {
        blocked[op] = true;
    }
    let mut unsatisfiable = vec![false; n];
    for &op in &p.unsatisfiable {
        unsatisfiable[op] = true;
    }
    let before_blocked = p
        .longest_prefix
        .last()
        .map_or(p.initial_state.as_str(), |s| s.state_after.as_str());

    let _ = writeln!(
        out,
        "<div class=\"scroll\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0}\" height=\"{:.0}\">",
        layout.width,
        layout.height()
    );

    for (lane, &(client, nth)) in layout.lanes.iter().enumerate() {
        let top = layout.row_top(lane);
        if lane % 2 == 0 {
            let _ = writeln!(
                out,
                "<rect class=\"stripe\" x=\"0\" y=\"{top:.1}\" width=\"{:.0}\" height=\"{ROW_HEIGHT}\"/>",
                layout.width
            );
        }
        let name = if nth == 0 {
            format!("client {client}")
        } else {
            format!("client {client} ({})", nth + 1)
        };
        let _ = writeln!(
            out,
            "<text class=\"client\" x=\"6\" y=\"{:.1}\">{}</text>",
            top + BAR_TOP + 14.0,
            escape(&name)
        );
    }

    for (op, info) in p.ops.iter().enumerate() {
        if !shown[op] {
            continue;
        }
        let class = if !expanded {
            "ok"
        } else if unsatisfiable[op] {
            "doomed"
        } else if blocked[op] {
            "blocked"
        } else if step_of[op].is_some() {
            "lin"
        } else {
            "rest"
        };
        let open = if layout.open[op] { " open" } else { "" };
        let x = layout.x_call[op];
        let w = (layout.x_return[op] - x).max(MIN_BAR_WIDTH);
        let y = layout.row_top(layout.lane[op]) + BAR_TOP;

        let mut tip = format!(
            "{}\nclient {}, call {}, return {}",
            clip(&info.label, MAX_TEXT),
            info.client_id,
            info.call,
            if layout.open[op] {
                "none (no reply)".to_string()
            } else {
                info.return_time.to_string()
            }
        );
        match step_of[op] {
            Some(k) => {
                let _ = write!(
                    tip,
                    "\nlinearized #{}; state after: {}",
                    k + 1,
                    clip(&p.longest_prefix[k].state_after, MAX_TEXT)
                );
            }
            None if unsatisfiable[op] => {
                let _ = write!(
                    tip,
                    "\nnot legal in state {} and can never become legal again",
                    clip(before_blocked, MAX_TEXT)
                );
            }
            None if blocked[op] => {
                let _ = write!(
                    tip,
                    "\ncannot be linearized next: not legal in state {}",
                    clip(before_blocked, MAX_TEXT)
                );
            }
            None => tip.push_str("\nnot reached by the longest linearizable prefix"),
        }
        let label = if layout.open[op] {
            format!("{} (no reply)", info.label)
        } else {
            info.label.clone()
        };
        let _ = writeln!(
            out,
            "<g class=\"op {class}{open}\"><title>{}</title><svg x=\"{x:.1}\" y=\"{y:.1}\" \
             width=\"{w:.1}\" height=\"{BAR_HEIGHT}\"><rect class=\"bar\" x=\"1\" y=\"1\" \
             width=\"{:.1}\" height=\"{}\" rx=\"3\"/><text x=\"5\" y=\"14\">{}</text></svg></g>",
            escape(&tip),
            w - 2.0,
            BAR_HEIGHT - 2.0,
            escape(&clip(&label, 200))
        );
    }

    if expanded && !p.longest_prefix.is_empty() {
        render_points(out, p, &layout, shown);
    }
    out.push_str("</svg></div>\n");
}

/// Marks a possible linearization point for each step of the longest prefix
/// and joins them in order. Points are placed left to right: a step never
/// needs to come before the previous one in time, because the checker only
/// linearizes an operation ahead of another if it was called before the
/// other returned.
fn render_points(out: &mut String, p: &PartitionInfo, layout: &Layout, shown: &[bool]) {
    let mut points = Vec::with_capacity(p.longest_prefix.len());
    let mut last = f64::MIN;
    for (k, step) in p.longest_prefix.iter().enumerate() {
        let op = step.op;
        if !shown[op] {
            continue;
        }
        let lo = layout.x_call[op] + 3.0;
        let hi = (layout.x_return[op] - 3.0).max(lo);
        let x = (last + 3.0).max(lo).min(hi);
        last = x;
        points.push((k, x, layout.row_top(layout.lane[op]) + BAR_TOP));
    }
    let path: Vec<String> = points
        .iter()
        .map(|(_, x, y)| format!("{x:.1},{:.1}", y + BAR_HEIGHT / 2.0))
        .collect();
    let _ = writeln!(
        out,
        "<polyline class=\"order\" points=\"{}\"/>",
        path.join(" ")
    );
    for (k, x, y) in points {
        let _ = writeln!(
            out,
            "<line class=\"point\" x1=\"{x:.1}\" y1=\"{y:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>\
             <text class=\"step\" x=\"{x:.1}\" y=\"{:.1}\">{}</text>",
            y + BAR_HEIGHT,
            y - 2.0,
            k + 1
        );
    }
}

fn render_tables(out: &mut String, p: &PartitionInfo) {
    let before_blocked = p
        .longest_prefix
        .last()
        .map_or(p.initial_state.as_str(), |s| s.state_after.as_str());
    for (ops, heading) in [
        (
            p.unsatisfiable.clone(),
            "Can never become legal again after state",
        ),
        (only_blocked(p), "Cannot be linearized next from state"),
    ] {
        if ops.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "<h3>{heading} <code>{}</code></h3>\n<table>\n\
             <tr><th>client</th><th>operation</th><th>call</th><th>return</th></tr>",
            escape(&clip(before_blocked, MAX_TEXT))
        );
        for op in ops {
            table_op_row(out, p, op, None);
        }
        out.push_str("</table>\n");
    }

    let _ = writeln!(
        out,
        "<h3>Longest linearizable prefix ({} of {} operations)</h3>\n<table>\n\
         <tr><th>#</th><th>client</th><th>operation</th><th>call</th><th>return</th>\
         <th>state after</th></tr>\n<tr><td>0</td><td></td><td><i>initial state</i></td>\
         <td></td><td></td><td><code>{}</code></td></tr>",
        p.longest_prefix.len(),
        p.ops.len(),
        escape(&clip(&p.initial_state, MAX_TEXT))
    );
    for (k, step) in p.longest_prefix.iter().enumerate() {
        table_op_row(out, p, step.op, Some((k + 1, &step.state_after)));
    }
    out.push_str("</table>\n");
}

fn table_op_row(out: &mut String, p: &PartitionInfo, op: usize, step: Option<(usize, &str)>) {
    let info = &p.ops[op];
    let ret = if info.return_time == u64::MAX {
        "none".to_string()
    } else {
        info.return_time.to_string()
    };
    out.push_str("<tr>");
    if let Some((k, _)) = step {
        let _ = write!(out, "<td>{k}</td>");
    }
    let _ = write!(
        out,
        "<td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td>",
        info.client_id,
        escape(&clip(&info.label, MAX_TEXT)),
        info.call,
        ret
    );
    if let Some((_, state)) = step {
        let _ = write!(
            out,
            "<td><code>{}</code></td>",
            escape(&clip(state, MAX_TEXT))
        );
    }
    out.push_str("</tr>\n");
}

/// The blocked operations not already shown as never becoming legal.
fn only_blocked(p: &PartitionInfo) -> Vec<usize> {
    let mut ops = p.blocked.clone();
    ops.retain(|op| !p.unsatisfiable.contains(op));
    ops
}

fn verdict(r: CheckResult) -> &'static str {
    match r {
        CheckResult::Ok => "linearizable",
        CheckResult::Illegal => "NOT linearizable",
        CheckResult::Unknown => "undecided (timed out)",
    }
}

fn result_class(r: CheckResult) -> &'static str {
    match r {
        CheckResult::Ok => "res-ok",
        CheckResult::Illegal => "res-illegal",
        CheckResult::Unknown => "res-unknown",
    }
}

/// Shortens `s` to at most `max` characters, saying how long it was.
fn clip(s: &str, max: usize) -> String {
    let len = s.chars().count();
    if len <= max {
        return s.to_string();
    }
    let head: String = s.chars().take(max).collect();
    format!("{head}\u{2026} ({len} chars)")
}

/// Escapes text for HTML and SVG content and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; word-break: break-all; }
h2 { display: inline; font-size: 1.15em; }
summary { cursor: pointer; margin: 1.2em 0 0.5em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: left; vertical-align: top; }
td code { display: inline-block; max-width: 60em; }
.res-ok { color: #2a7a3a; }
.res-illegal { color: #c01f1f; font-weight: bold; }
.res-unknown { color: #a86500; font-weight: bold; }
.scroll { overflow-x: auto; border: 1px solid #ddd; background: #fff; }
svg text { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 11px; }
.stripe { fill: #f6f7f9; }
.client { fill: #555; }
.op .bar { fill: #dce8f7; stroke: #5b8ccf; stroke-width: 1; }
.op.lin .bar { fill: #cdebd3; stroke: #3c9a50; }
.op.blocked .bar { fill: #f9cfcf; stroke: #d12b2b; stroke-width: 2.5; }
.op.doomed .bar { fill: #fde0b8; stroke: #c25400; stroke-width: 2.5; }
.op.rest .bar { fill: #ececec; stroke: #a8a8a8; }
.op.open .bar { stroke-dasharray: 5 3; }
.op text { fill: #222; }
.op:hover .bar { stroke-width: 2.5; }
.order { fill: none; stroke: #1b5e2a; stroke-width: 1; stroke-dasharray: 2 2; opacity: 0.7; }
.point { stroke: #1b5e2a; stroke-width: 2; }
.step { fill: #1b5e2a; font-size: 10px; text-anchor: middle; font-weight: bold; }
.legend { display: flex; flex-wrap: wrap; gap: 0.4em 1.5em; margin: 0.8em 0; font-size: 0.9em; }
.legend span { display: inline-flex; align-items: center; gap: 0.4em; }
";

const LEGEND: &str = "<div class=\"legend\">
<span><svg width=\"28\" height=\"14\"><rect x=\"1\" y=\"1\" width=\"26\" height=\"12\" rx=\"3\" fill=\"#dce8f7\" stroke=\"#5b8ccf\"/></svg>operation of a linearizable partition</span>
<span><svg width=\"28\" height=\"14\"><rect x=\"1\" y=\"1\" width=\"26\" height=\"12\" rx=\"3\" fill=\"#cdebd3\" stroke=\"#3c9a50\"/><line x1=\"9\" y1=\"0\" x2=\"9\" y2=\"14\" stroke=\"#1b5e2a\" stroke-width=\"2\"/></svg>in the longest linearizable prefix; the tick and number give its linearization point and order</span>
<span><svg width=\"28\" height=\"14\"><rect x=\"1.5\" y=\"1.5\" width=\"25\" height=\"11\" rx=\"3\" fill=\"#f9cfcf\" stroke=\"#d12b2b\" stroke-width=\"2.5\"/></svg>could come next but is not legal after the prefix</span>
<span><svg width=\"28\" height=\"14\"><rect x=\"1.5\" y=\"1.5\" width=\"25\" height=\"11\" rx=\"3\" fill=\"#fde0b8\" stroke=\"#c25400\" stroke-width=\"2.5\"/></svg>can never become legal after the prefix</span>
<span><svg width=\"28\" height=\"14\"><rect x=\"1\" y=\"1\" width=\"26\" height=\"12\" rx=\"3\" fill=\"#ececec\" stroke=\"#a8a8a8\"/></svg>not reached</span>
<span><svg width=\"28\" height=\"14\"><rect x=\"1\" y=\"1\" width=\"26\" height=\"12\" rx=\"3\" fill=\"#fff\" stroke=\"#777\" stroke-dasharray=\"5 3\"/></svg>no reply (open until the end)</span>
<span>Bars span call to return; the horizontal axis is the order of calls and returns, not scaled time. Hover for details.</span>
</div>
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_and_clip() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcdef", 2), "ab\u{2026} (6 chars)");
    }
}
