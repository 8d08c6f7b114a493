//! `raftkv bench`: a load generator speaking the Redis protocol, for raftkv or any Redis.
//!
//! `clients` clients share `connections` connections, as gRPC clients share channels: each
//! connection keeps as many requests in flight as it has clients, sending one more as each
//! reply comes back (a pipeline of fixed depth). A request's latency runs from the moment it
//! is written to the moment its reply is read. Latencies go into HDR histograms, one per
//! second of the run and one in all; a progress line shows the rate while it runs.

use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Latencies are recorded in microseconds, up to this (longer ones count as this).
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// What the clients send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// SET of a random key.
    Put,
    /// GET of a random key (the keys are written once first).
    Get,
    /// GET or SET, as --read-percent says (the keys are written once first).
    Mixed,
    /// APPEND to a random key.
    Append,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Mixed => "mixed",
            Workload::Append => "append",
        }
    }
}

#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// The Redis ports to connect to; connections go to them in turn.
    pub addrs: Vec<SocketAddr>,
    pub workload: Workload,
    pub clients: usize,
    pub connections: usize,
    pub key_size: usize,
    pub value_size: usize,
    /// How many distinct keys the requests pick from, uniformly.
    pub keys: u64,
    pub read_percent: u8,
    /// Stop after this many requests, or after `duration`, whichever comes first.
    pub requests: Option<u64>,
    pub duration: Option<Duration>,
    pub password: Option<String>,
    /// Show a progress line on standard error while it runs.
    pub progress: bool,
    pub plot: Option<PathBuf>,
}

/// What a run measured.
pub struct Report {
    pub workload: Workload,
    pub clients: usize,
    pub connections: usize,
    pub elapsed: Duration,
    pub ok: u64,
    pub errors: u64,
    /// The first error reply, to show what went wrong.
    pub first_error: Option<String>,
    pub latency: Histogram<u64>,
    /// One histogram per second of the run.
    pub per_second: Vec<Histogram<u64>>,
}

impl Report {
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    /// The final table, for a terminal.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} · {} clients over {} connections · {:.1} s",
            self.workload.name(),
            self.clients,
            self.connections,
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "{:>10} {:>8} {:>12} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "requests", "errors", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        let _ = writeln!(
            out,
            "{:>10} {:>8} {:>12.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            self.ok,
            self.errors,
            self.throughput(),
            self.quantile_ms(0.5),
            self.quantile_ms(0.9),
            self.quantile_ms(0.99),
            self.quantile_ms(0.999),
            self.latency.max() as f64 / 1000.0
        );
        if let Some(e) = &self.first_error {
            let _ = writeln!(out, "first error: {e}");
        }
        out
    }

    /// The same, as CSV with a header line.
    pub fn csv(&self) -> String {
        format!(
            "workload,clients,connections,seconds,requests,errors,throughput,p50_ms,p90_ms,\
             p99_ms,p999_ms,max_ms\n{},{},{},{:.3},{},{},{:.1},{:.3},{:.3},{:.3},{:.3},{:.3}\n",
            self.workload.name(),
            self.clients,
            self.connections,
            self.elapsed.as_secs_f64(),
            self.ok,
            self.errors,
            self.throughput(),
            self.quantile_ms(0.5),
            self.quantile_ms(0.9),
            self.quantile_ms(0.99),
            self.quantile_ms(0.999),
            self.latency.max() as f64 / 1000.0
        )
    }
}

/// A latency histogram as every report holds them: microseconds, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// What every connection shares: the request budget, the clock and the counters.
struct Shared {
    options: BenchOptions,
    started: Instant,
    /// Requests still to send (`u64::MAX`: until the deadline).
    budget: AtomicU64,
    deadline: Option<Instant>,
    ok: AtomicU64,
    errors: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Shared {
    /// Takes one request from the budget, if any is left and time remains.
    fn take(&self) -> bool {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        self.budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    fn second(&self, at: Instant) -> usize {
        at.duration_since(self.started).as_secs() as usize
    }
}

/// Runs the benchmark and reports what it measured.
pub async fn run(options: BenchOptions) -> anyhow::Result<Report> {
    anyhow::ensure!(!options.addrs.is_empty(), "no address to benchmark");
    anyhow::ensure!(options.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(
        options.clients >= options.connections,
        "--clients ({}) must be at least --connections ({}): every connection carries at \
         least one client",
        options.clients,
        options.connections
    );
    anyhow::ensure!(
        options.requests.is_some() || options.duration.is_some(),
        "give --requests or --duration"
    );
    anyhow::ensure!(options.keys > 0, "--keys must be at least 1");
    if matches!(options.workload, Workload::Get | Workload::Mixed) {
        prefill(&options).await?;
    }
    // Connect everything before the clock starts.
    let mut streams = Vec::with_capacity(options.connections);
    for i in 0..options.connections {
        let addr = options.addrs[i % options.addrs.len()];
        streams.push(connect(addr, options.password.as_deref()).await?);
    }
    let started = Instant::now();
    let shared = Arc::new(Shared {
        budget: AtomicU64::new(options.requests.unwrap_or(u64::MAX)),
        deadline: options.duration.map(|d| started + d),
        started,
        ok: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_error: std::sync::Mutex::new(None),
        options,
    });
    let (seconds_tx, mut seconds_rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    let connections = shared.options.connections;
    for (i, stream) in streams.into_iter().enumerate() {
        // The clients, spread as evenly as they go.
        let depth = shared.options.clients / connections
            + usize::from(i < shared.options.clients % connections);
        let (shared, seconds) = (shared.clone(), seconds_tx.clone());
        tasks.push(tokio::spawn(drive(
            stream, depth, i as u64, shared, seconds,
        )));
    }
    drop(seconds_tx);
    let progress = shared.options.progress.then(|| {
        let shared = shared.clone();
        tokio::spawn(show_progress(shared))
    });
    let mut per_second: Vec<Histogram<u64>> = Vec::new();
    let mut latency = histogram();
    while let Some((second, h)) = seconds_rx.recv().await {
        if per_second.len() <= second {
            per_second.resize_with(second + 1, histogram);
        }
        per_second[second].add(&h).expect("same bounds");
        latency.add(&h).expect("same bounds");
    }
    let elapsed = started.elapsed();
    for task in tasks {
        task.await??;
    }
    if let Some(progress) = progress {
        progress.abort();
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
    }
    let report = Report {
        workload: shared.options.workload,
        clients: shared.options.clients,
        connections,
        elapsed,
        ok: shared.ok.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        first_error: shared.first_error.lock().expect("not poisoned").clone(),
        latency,
        per_second,
    };
    if let Some(path) = &shared.options.plot {
        plot(&report, path)?;
    }
    Ok(report)
}

async fn connect(addr: SocketAddr, password: Option<&str>) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {addr}: {e}"))?;
    stream.set_nodelay(true)?;
    if let Some(password) = password {
        let mut out = BytesMut::new();
        encode(&mut out, &[b"AUTH", password.as_bytes()]);
        stream.write_all(&out).await?;
        let mut input = BytesMut::new();
        if let Some(e) = read_reply(&mut stream, &mut input).await? {
            anyhow::bail!("{addr}: AUTH failed: {e}");
        }
    }
    Ok(stream)
}

/// Writes every key once (in pipelines of 100), so that reads find values.
async fn prefill(options: &BenchOptions) -> anyhow::Result<()> {
    let mut stream = connect(options.addrs[0], options.password.as_deref()).await?;
    let value = vec![b'v'; options.value_size];
    let (mut out, mut input) = (BytesMut::new(), BytesMut::new());
    let mut next = 0;
    while next < options.keys {
        let batch = (options.keys - next).min(100);
        for n in next..next + batch {
            encode(&mut out, &[b"SET", &key(n, options.key_size), &value]);
        }
        stream.write_all(&out).await?;
        out.clear();
        for _ in 0..batch {
            if let Some(e) = read_reply(&mut stream, &mut input).await? {
                anyhow::bail!("writing the keys before the run failed: {e}");
            }
        }
        next += batch;
    }
    Ok(())
}

/// Key number `n`, zero-padded to `size` bytes (more if `n` needs them).
pub fn key(n: u64, size: usize) -> Vec<u8> {
    format!("{n:0size$}").into_bytes()
}

/// One connection: keeps `depth` requests in flight until the budget runs out, then waits
/// for the last replies. Sends each second's latencies on `seconds`.
async fn drive(
    mut stream: TcpStream,
    depth: usize,
    seed: u64,
    shared: Arc<Shared>,
    seconds: mpsc::UnboundedSender<(usize, Histogram<u64>)>,
) -> anyhow::Result<()> {
    let options = &shared.options;
    let mut rng = StdRng::seed_from_u64(rand::random::<u64>() ^ seed);
    let value = vec![b'v'; options.value_size];
    let (mut out, mut input) = (BytesMut::new(), BytesMut::with_capacity(64 << 10));
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(depth);
    let mut recorder = Recorder {
        shared: &shared,
        second: 0,
        current: histogram(),
        seconds,
    };
    loop {
        while sent.len() < depth && shared.take() {
            let k = key(rng.gen_range(0..options.keys), options.key_size);
            let read = match options.workload {
                Workload::Get => true,
                Workload::Mixed => rng.gen_range(0..100) < options.read_percent,
                Workload::Put | Workload::Append => false,
            };
            let command: &[u8] = match (read, options.workload) {
                (true, _) => b"GET",
                (false, Workload::Append) => b"APPEND",
                (false, _) => b"SET",
            };
            if read {
                encode(&mut out, &[command, &k]);
            } else {
                encode(&mut out, &[command, &k, &value]);
            }
            sent.push_back(Instant::now());
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if sent.is_empty() {
            break;
        }
        // One reply (waiting for it), then every other one already read, before sending
        // as many new requests in one write.
        let reply = read_reply(&mut stream, &mut input).await?;
        let now = Instant::now();
        recorder.record(now, sent.pop_front().expect("in flight"), reply);
        while !sent.is_empty() {
            let Some(reply) = take_reply(&mut input)? else {
                break;
            };
            recorder.record(now, sent.pop_front().expect("in flight"), reply);
        }
    }
    recorder.finish();
    Ok(())
}

/// Counts a connection's replies and records their latencies, a histogram per second.
struct Recorder<'a> {
    shared: &'a Shared,
    second: usize,
    current: Histogram<u64>,
    seconds: mpsc::UnboundedSender<(usize, Histogram<u64>)>,
}

impl Recorder<'_> {
    /// The reply, read at `now`, to a request written at `sent` (`Some`: an error reply).
    fn record(&mut self, now: Instant, sent: Instant, error: Option<String>) {
        if let Some(e) = error {
            self.shared.errors.fetch_add(1, Ordering::Relaxed);
            let mut first = self.shared.first_error.lock().expect("not poisoned");
            first.get_or_insert(e);
            return;
        }
        self.shared.ok.fetch_add(1, Ordering::Relaxed);
        let second = self.shared.second(now);
        if second != self.second {
            let done = std::mem::replace(&mut self.current, histogram());
            let _ = self.seconds.send((self.second, done));
            self.second = second;
        }
        let micros = now.duration_since(sent).as_micros() as u64;
        self.current
            .saturating_record(micros.clamp(1, MAX_LATENCY_US));
    }

    fn finish(self) {
        let _ = self.seconds.send((self.second, self.current));
    }
}

async fn show_progress(shared: Arc<Shared>) {
    let terminal = std::io::stderr().is_terminal();
    let mut last = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let ok = shared.ok.load(Ordering::Relaxed);
        let errors = shared.errors.load(Ordering::Relaxed);
        let line = format!(
            "{:>5.0} s  {:>10} done  {:>8} req/s  {} errors",
            shared.started.elapsed().as_secs_f64(),
            ok,
            ok - last,
            errors
        );
        last = ok;
        if terminal {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
    }
}

/// Appends a request as a RESP array of bulk strings.
fn encode(out: &mut BytesMut, args: &[&[u8]]) {
    let _ = write!(Fmt(out), "*{}\r\n", args.len());
    for arg in args {
        let _ = write!(Fmt(out), "${}\r\n", arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// `fmt::Write` into a `BytesMut`.
struct Fmt<'a>(&'a mut BytesMut);

impl std::fmt::Write for Fmt<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Reads one whole reply; returns the error's text if it is an error reply.
async fn read_reply(
    stream: &mut TcpStream,
    input: &mut BytesMut,
) -> anyhow::Result<Option<String>> {
    loop {
        if let Some(reply) = take_reply(input)? {
            return Ok(reply);
        }
        input.reserve(16 << 10);
        if stream.read_buf(input).await? == 0 {
            anyhow::bail!("the server closed the connection");
        }
    }
}

/// Takes one whole reply from `input` if it holds one: `Some(Some(text))` for an error.
fn take_reply(input: &mut BytesMut) -> anyhow::Result<Option<Option<String>>> {
    let Some((len, error)) = reply_len(input)? else {
        return Ok(None);
    };
    let error = error.then(|| String::from_utf8_lossy(&input[1..len - 2]).into_owned());
    input.advance(len);
    Ok(Some(error))
}

/// The length of the RESP2 reply at the start of `buf` and whether it is an error, or
/// `None` if it is not all there yet.
fn reply_len(buf: &[u8]) -> anyhow::Result<Option<(usize, bool)>> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let line = end + 2;
    let number = || -> anyhow::Result<i64> {
        std::str::from_utf8(&buf[1..end])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "malformed reply line {:?}",
                    String::from_utf8_lossy(&buf[..end])
                )
            })
    };
    match kind {
        b'+' | b':' => Ok(Some((line, false))),
        b'-' => Ok(Some((line, true))),
        b'$' => {
            let n = number()?;
            if n < 0 {
                return Ok(Some((line, false)));
            }
            let total = line + n as usize + 2;
            Ok((buf.len() >= total).then_some((total, false)))
        }
        b'*' => {
            let n = number()?;
            let mut at = line;
            for _ in 0..n.max(0) {
                match reply_len(&buf[at..])? {
                    Some((len, _)) => at += len,
                    None => return Ok(None),
                }
            }
            Ok(Some((at, false)))
        }
        other => anyhow::bail!("unexpected reply type {:?}", other as char),
    }
}

/// Draws throughput and latency (p50, p99) per second of the run into an SVG file.
fn plot(report: &Report, path: &std::path::Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let seconds = report.per_second.len().max(1) as u32;
    let rate: Vec<(u32, f64)> = (0..)
        .zip(&report.per_second)
        .map(|(s, h)| (s, h.len() as f64))
        .collect();
    let quantile = |q| -> Vec<(u32, f64)> {
        (0..)
            .zip(&report.per_second)
            .filter(|(_, h)| !h.is_empty())
            .map(|(s, h)| (s, h.value_at_quantile(q) as f64 / 1000.0))
            .collect()
    };
    let (p50, p99) = (quantile(0.5), quantile(0.99));
    let max_rate = rate.iter().map(|&(_, r)| r).fold(1.0, f64::max) * 1.1;
    let max_ms = p99.iter().map(|&(_, v)| v).fold(0.1, f64::max) * 1.1;
    let root = SVGBackend::new(path, (900, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(320);
    let title = format!(
        "{}, {} clients over {} connections",
        report.workload.name(),
        report.clients,
        report.connections
    );
    let mut chart = ChartBuilder::on(&top)
        .caption(format!("{title}: throughput"), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0..seconds, 0.0..max_rate)?;
    chart
        .configure_mesh()
        .x_desc("second")
        .y_desc("requests/s")
        .draw()?;
    chart.draw_series(LineSeries::new(rate, &BLUE))?;
    let mut chart = ChartBuilder::on(&bottom)
        .caption(format!("{title}: latency"), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0..seconds, 0.0..max_ms)?;
    chart
        .configure_mesh()
        .x_desc("second")
        .y_desc("ms")
        .draw()?;
    chart
        .draw_series(LineSeries::new(p50, &GREEN))?
        .label("p50")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], GREEN));
    chart
        .draw_series(LineSeries::new(p99, &RED))?
        .label("p99")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED));
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_measured_whole_or_not_at_all() {
        assert_eq!(reply_len(b"+OK\r\n").unwrap(), Some((5, false)));
        assert_eq!(reply_len(b"-ERR no\r\n").unwrap(), Some((9, true)));
        assert_eq!(reply_len(b":12\r\n+OK").unwrap(), Some((5, false)));
        assert_eq!(reply_len(b"$3\r\nabc\r\n").unwrap(), Some((9, false)));
        assert_eq!(reply_len(b"$3\r\nab").unwrap(), None);
        assert_eq!(reply_len(b"$-1\r\n").unwrap(), Some((5, false)));
        assert_eq!(
            reply_len(b"*2\r\n$1\r\na\r\n:1\r\n").unwrap(),
            Some((15, false))
        );
        assert_eq!(reply_len(b"*2\r\n$1\r\na\r\n").unwrap(), None);
        assert_eq!(reply_len(b"+OK").unwrap(), None);
        assert!(reply_len(b"$x\r\n").is_err());
        assert!(reply_len(b"?\r\n").is_err());
    }

    #[test]
    fn keys_have_the_asked_size() {
        assert_eq!(key(42, 8), b"00000042");
        assert_eq!(key(123_456_789, 4), b"123456789");
    }
}
