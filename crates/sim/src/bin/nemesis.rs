//! Runs the nemesis simulation (`sim::nemesis`) on many fresh seeds, in parallel, with a
//! progress line and a summary: seeds run, violations by kind, time per seed, the clusters
//! and the fault mix. Every failing seed is printed with its replay command.
//!
//! ```sh
//! cargo run --release -p sim --bin nemesis -- --seeds 10000
//! cargo run --release -p sim --bin nemesis -- --seed 123456789    # replay one
//! cargo run --release -p sim --bin nemesis -- --seeds 100 --mutant local-reads
//! cargo run --release -p sim --bin nemesis -- --seeds 100 --deposed-readers --mutant read-without-quorum
//! ```

use clap::Parser;
use sim::mutants::{self, Mutant};
use sim::nemesis::{self, Outcome, Variant};
use sim::seed::{fresh_seed, run_one_catching};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Run the nemesis simulation on many seeds and summarize what it found")]
struct Args {
    /// How many fresh seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// Replay this one seed instead (prints its outcome or its violation).
    #[arg(long)]
    seed: Option<u64>,
    /// Worker threads [default: one per CPU].
    #[arg(long)]
    jobs: Option<usize>,
    /// Run with a deliberately broken Raft or server, to see what catches it: one of
    /// commit-earlier-term, vote-without-log-check, send-before-persist, truncate-on-match,
    /// leader-ignores-higher-term, pre-vote-never-elects, read-without-quorum,
    /// lease-outlives-election, local-reads, no-duplicate-detection, answer-before-commit,
    /// session-updated-on-propose, exec-as-separate-entries.
    #[arg(long)]
    mutant: Option<String>,
    /// Also leave Clerks reading at a leader cut off from the others, until the partition
    /// heals (`nemesis::Variant::DeposedReaders`).
    #[arg(long)]
    deposed_readers: bool,
}

struct Run {
    seed: u64,
    took: Duration,
    result: Result<Outcome, String>,
}

#[derive(Default)]
struct Summary {
    runs: Vec<Run>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mutant = match args.mutant.as_deref() {
        None => None,
        Some(name) => match mutants::ALL.iter().find(|(n, _)| *n == name) {
            Some(&(_, m)) => Some(m),
            None => {
                eprintln!("nemesis: unknown mutant {name:?} (see --help)");
                return ExitCode::from(2);
            }
        },
    };
    let variant = match args.deposed_readers {
        true => Variant::DeposedReaders,
        false => Variant::Standard,
    };
    if let Some(seed) = args.seed {
        return replay(seed, mutant, variant);
    }
    // Failures are reported below, once each; the default hook would print every panic.
    std::panic::set_hook(Box::new(|_| {}));
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let total = args.seeds;
    let next = Arc::new(AtomicU64::new(0));
    let summary = Arc::new(Mutex::new(Summary::default()));
    let started = Instant::now();
    let workers: Vec<_> = (0..jobs)
        .map(|_| {
            let (next, summary) = (next.clone(), summary.clone());
            std::thread::spawn(move || worker(total, mutant, variant, &next, &summary))
        })
        .collect();
    // A live line on a terminal; in a log, a line per tenth of the run.
    let live = std::io::stderr().is_terminal();
    let mut reported = 0;
    while workers.iter().any(|w| !w.is_finished()) {
        std::thread::sleep(Duration::from_millis(500));
        let done = lock(&summary).runs.len() as u64;
        if live || done * 10 / total.max(1) > reported {
            reported = done * 10 / total.max(1);
            progress(&summary, total, started, live);
        }
    }
    for w in workers {
        w.join().expect("worker");
    }
    if live {
        eprintln!();
    }
    let summary = lock(&summary);
    report(&summary, started.elapsed(), jobs, mutant, variant);
    if summary.runs.iter().any(|r| r.result.is_err()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn worker(
    total: u64,
    mutant: Option<Mutant>,
    variant: Variant,
    next: &AtomicU64,
    summary: &Mutex<Summary>,
) {
    mutants::set_for_this_thread(mutant);
    let run = |seed| nemesis::run_variant(seed, variant);
    while next.fetch_add(1, Ordering::SeqCst) < total {
        let seed = fresh_seed();
        let t0 = Instant::now();
        let result = run_one_catching("nemesis", seed, &run)
            .map_err(|failure| failure.first_panic().to_string());
        let run = Run {
            seed,
            took: t0.elapsed(),
            result,
        };
        lock(summary).runs.push(run);
    }
}

fn lock(summary: &Mutex<Summary>) -> std::sync::MutexGuard<'_, Summary> {
    summary.lock().unwrap_or_else(|e| e.into_inner())
}

fn progress(summary: &Mutex<Summary>, total: u64, started: Instant, live: bool) {
    let summary = lock(summary);
    let done = summary.runs.len() as u64;
    let violations = summary.runs.iter().filter(|r| r.result.is_err()).count();
    let elapsed = started.elapsed().as_secs_f64();
    let eta = if done > 0 {
        elapsed / done as f64 * (total - done) as f64
    } else {
        0.0
    };
    let line = format!(
        "{done}/{total} seeds, {violations} violation(s), {elapsed:.0} s elapsed, ~{eta:.0} s to go"
    );
    if live {
        eprint!("\r{line}   ");
        let _ = std::io::stderr().flush();
    } else {
        eprintln!("{line}");
    }
}

fn replay_command(seed: u64, mutant: Option<Mutant>, variant: Variant) -> String {
    let mutant = mutant
        .and_then(|m| mutants::ALL.iter().find(|(_, x)| *x == m))
        .map(|(name, _)| format!(" --mutant {name}"))
        .unwrap_or_default();
    let variant = match variant {
        Variant::Standard => "",
        Variant::DeposedReaders => " --deposed-readers",
    };
    format!("cargo run --release -p sim --bin nemesis -- --seed {seed}{variant}{mutant}")
}

fn report(
    summary: &Summary,
    elapsed: Duration,
    jobs: usize,
    mutant: Option<Mutant>,
    variant: Variant,
) {
    let runs = &summary.runs;
    let n = runs.len();
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
    let mut sizes: BTreeMap<usize, u64> = BTreeMap::new();
    let (mut ops, mut fault_secs) = (0usize, 0u64);
    let mut times: Vec<Duration> = runs.iter().map(|r| r.took).collect();
    times.sort();
    for r in runs {
        match &r.result {
            Ok(o) => {
                *sizes.entry(o.servers).or_insert(0) += 1;
                ops += o.operations;
                fault_secs += o.fault_secs;
                for (k, v) in &o.faults {
                    *faults.entry(k).or_insert(0) += v;
                }
            }
            Err(message) => *kinds.entry(nemesis::violation_kind(message)).or_insert(0) += 1,
        }
    }
    let violations: u64 = kinds.values().sum();
    println!(
        "nemesis: {n} seeds in {:.0} s on {jobs} worker(s){}: {violations} violation(s)",
        elapsed.as_secs_f64(),
        mutant
            .map(|m| format!(" with mutant {m:?}"))
            .unwrap_or_default()
    );
    if n > 0 {
        let mean = times.iter().sum::<Duration>() / n as u32;
        println!(
            "time per seed (one worker): mean {:.3} s, median {:.3} s, p99 {:.3} s, max {:.3} s",
            mean.as_secs_f64(),
            times[n / 2].as_secs_f64(),
            times[(n * 99 / 100).min(n - 1)].as_secs_f64(),
            times[n - 1].as_secs_f64()
        );
    }
    let passed = n - violations as usize;
    if passed > 0 {
        let sizes: Vec<String> = sizes
            .iter()
            .map(|(s, c)| format!("{s} nodes ×{c}"))
            .collect();
        println!(
            "passing runs: {}; {} virtual s of faults and {} checked operations per seed on average",
            sizes.join(", "),
            fault_secs / passed as u64,
            ops / passed
        );
        println!("fault mix (total over passing runs, and per seed):");
        for (k, v) in &faults {
            println!("  {k:<42} {v:>10} {:>10.1}", *v as f64 / passed as f64);
        }
    }
    if violations > 0 {
        println!("violations by kind:");
        for (k, v) in &kinds {
            println!("  {k:<42} {v:>10}");
        }
        println!("failing seeds:");
        for r in runs {
            if let Err(message) = &r.result {
                println!("  seed {}: {message}", r.seed);
                println!("    replay: {}", replay_command(r.seed, mutant, variant));
            }
        }
    }
}

fn replay(seed: u64, mutant: Option<Mutant>, variant: Variant) -> ExitCode {
    mutants::set_for_this_thread(mutant);
    match run_one_catching("nemesis", seed, &|seed| nemesis::run_variant(seed, variant)) {
        Ok(outcome) => {
            println!("seed {seed}: no violation; {outcome:?}");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            println!(
                "seed {seed}: [{}] {}",
                nemesis::violation_kind(failure.first_panic()),
                failure.first_panic()
            );
            for later in failure.panics.iter().skip(1) {
                println!("  then: {later}");
            }
            let [course, commands] = nemesis::checker_reports(seed);
            println!(
                "checker reports (if a history was found not linearizable): {} and {}",
                course.display(),
                commands.display()
            );
            ExitCode::FAILURE
        }
    }
}
