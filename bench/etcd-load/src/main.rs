//! `etcd-load`: the load of `raftkv bench --workload put|get`, sent to an etcd cluster over
//! its gRPC API, with the same keys, values and clients-over-connections shape, and reported
//! by the same code (`raftkv::bench::Report`), so that the two tables compare like for like.
//!
//! Each connection is one etcd client (one gRPC channel, HTTP/2); its clients are tasks that
//! each send one request at a time over it, as etcd's own benchmark tool does. Reads are
//! linearizable (etcd's default).

use anyhow::Context;
use clap::Parser;
use etcd_client::Client;
use raftkv::bench::{histogram, key, Report, Workload, MAX_LATENCY_US};
use rand::Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "The load of `raftkv bench`, sent to etcd")]
struct Args {
    /// etcd client URLs, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    endpoints: Vec<String>,
    /// put or get (get writes every key once first).
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    workload: Workload,
    #[arg(long, default_value_t = 64)]
    clients: usize,
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// Print CSV (as `raftkv bench --csv`).
    #[arg(long)]
    csv: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        matches!(args.workload, Workload::Put | Workload::Get),
        "only put and get are supported"
    );
    anyhow::ensure!(args.clients >= args.connections && args.connections > 0);
    let mut clients = Vec::new();
    for _ in 0..args.connections {
        let client = Client::connect(&args.endpoints, None)
            .await
            .with_context(|| format!("connecting to {:?}", args.endpoints))?;
        clients.push(client);
    }
    let value = vec![b'v'; args.value_size];
    if args.workload == Workload::Get {
        let mut kv = clients[0].kv_client();
        for n in 0..args.keys {
            kv.put(key(n, args.key_size), value.clone(), None).await?;
        }
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let (ok, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let mut kv = clients[i % args.connections].kv_client();
        let (ok, errors, first_error) = (ok.clone(), errors.clone(), first_error.clone());
        let (value, workload, keys, key_size) =
            (value.clone(), args.workload, args.keys, args.key_size);
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
            while Instant::now() < deadline {
                let k = key(rand::thread_rng().gen_range(0..keys), key_size);
                let sent = Instant::now();
                let result = match workload {
                    Workload::Get => kv.get(k, None).await.map(drop),
                    _ => kv.put(k, value.clone(), None).await.map(drop),
                };
                match result {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        let micros = sent.elapsed().as_micros() as u64;
                        latency.saturating_record(micros.clamp(1, MAX_LATENCY_US));
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.lock().unwrap().get_or_insert(e.to_string());
                    }
                }
            }
            latency
        }));
    }
    let mut latency = histogram();
    for task in tasks {
        latency.add(task.await?)?;
    }
    let report = Report {
        workload: args.workload,
        clients: args.clients,
        connections: args.connections,
        elapsed: started.elapsed(),
        ok: ok.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        first_error: first_error.lock().unwrap().clone(),
        latency,
        per_second: Vec::new(),
    };
    print!(
        "{}",
        if args.csv {
            report.csv()
        } else {
            report.table()
        }
    );
    Ok(())
}
