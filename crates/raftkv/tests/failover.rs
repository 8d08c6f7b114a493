//! Client failover with real processes on 127.0.0.1: while the leader is paused (SIGSTOP),
//! writes through the two healthy nodes' Redis ports resume once the others have elected a new
//! leader, rather than waiting out a client time-out toward the paused one. The test prints
//! the longest stretch without a successful write.

mod common;

use common::{runtime, Cluster, TEST_LIMIT};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const PAUSE: Duration = Duration::from_secs(5);

/// Before clients followed their node's view of the leader, every write through the healthy
/// nodes waited out a 3 s attempt toward the paused leader; an election takes 0.3–0.6 s.
/// Generous, so that a loaded machine does not fail the test, yet below 3 s.
const LONGEST_GAP_ALLOWED: Duration = Duration::from_millis(2500);

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a child we started, with a valid signal.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0, "kill");
}

/// Writes `SET` after `SET` on one Redis connection until `stop`, recording when each
/// succeeded.
async fn writer(
    port: std::net::SocketAddr,
    name: &'static str,
    stop: Arc<AtomicBool>,
    done: Arc<Mutex<Vec<Instant>>>,
) {
    let stream = TcpStream::connect(port).await.expect("connect");
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = String::new();
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let value = format!("{name}-{i}");
        let request = format!(
            "*3\r\n$3\r\nSET\r\n${}\r\n{name}\r\n${}\r\n{value}\r\n",
            name.len(),
            value.len()
        );
        write.write_all(request.as_bytes()).await.expect("write");
        line.clear();
        read.read_line(&mut line).await.expect("read");
        if line == "+OK\r\n" {
            done.lock().unwrap().push(Instant::now());
        }
    }
}

/// The longest stretch without a successful write through the healthy nodes while the
/// leader of a cluster started with `flags` is paused for [`PAUSE`].
async fn longest_gap_with_the_leader_paused(flags: &[&str]) -> Duration {
    let cluster = Cluster::start_with(3, flags);
    let leader = cluster.wait_for_leader().await;
    let healthy: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(Mutex::new(Vec::new()));
    let names = ["a", "b"];
    let writers: Vec<_> = healthy
        .iter()
        .zip(names)
        .map(|(&i, name)| tokio::spawn(writer(cluster.resp[i], name, stop.clone(), done.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = cluster.pid(leader).expect("the leader runs");
    let paused_at = Instant::now();
    signal(pid, libc::SIGSTOP);
    tokio::time::sleep(PAUSE).await;
    signal(pid, libc::SIGCONT);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.expect("writer");
    }
    let mut times = done.lock().unwrap().clone();
    times.sort();
    let during: Vec<Instant> = times
        .iter()
        .copied()
        .filter(|&t| t >= paused_at && t <= paused_at + PAUSE)
        .collect();
    assert!(
        !during.is_empty(),
        "no write succeeded while the leader was paused"
    );
    let longest = std::iter::once(paused_at)
        .chain(during.iter().copied())
        .chain(std::iter::once(paused_at + PAUSE))
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    eprintln!(
        "leader paused {PAUSE:?}: {} writes succeeded meanwhile; the longest stretch \
                 without one was {longest:?} (the first came {:?} after the pause)",
        during.len(),
        during[0] - paused_at
    );
    longest
}

#[test]
fn writes_through_healthy_nodes_resume_soon_after_the_leader_is_paused() {
    runtime().block_on(async {
        let longest = tokio::time::timeout(TEST_LIMIT, longest_gap_with_the_leader_paused(&[]))
            .await
            .expect("test ran past its limit");
        assert!(
            longest < LONGEST_GAP_ALLOWED,
            "writes stalled for {longest:?} with the leader paused"
        );
    });
}

/// Negative control: forwarding that ignores leader changes (the old behaviour) stalls longer
/// than the check allows.
#[test]
fn mutant_slow_failover_is_caught() {
    runtime().block_on(async {
        let flags = ["--fault", "slow-failover"];
        let longest = tokio::time::timeout(TEST_LIMIT, longest_gap_with_the_leader_paused(&flags))
            .await
            .expect("test ran past its limit");
        assert!(
            longest >= LONGEST_GAP_ALLOWED,
            "the slow-failover mutant stalled only {longest:?}: the check could not catch it"
        );
    });
}
