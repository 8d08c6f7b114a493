//! The Clerk: the client library. It opens a session (thesis §6.3) before its first call,
//! numbers each call, sends it to the server it believes leads, and retries elsewhere (with
//! the same sequence number) until some server answers. If its session expired (the service
//! evicted it), a call whose only attempt was refused is sent again in a new session (nothing
//! of it was applied); one that had been sent more than once fails with `SessionExpired`, its
//! outcome unknown, and the next call opens a new session.

use crate::op::{KvError, KvReply, Op, OpKind, Value};
use bytes::Bytes;
use std::future::Future;
use std::time::Duration;
use tokio::time::{sleep, timeout, Instant};

/// How a Clerk reaches the servers. The simulator and the TCP client implement it.
pub trait ClientTransport: Send + Sync + 'static {
    /// How many servers the Clerk may try; they are numbered `0..servers()`.
    fn servers(&self) -> usize;

    /// One RPC to server `server`. An error says nothing about whether the server ran it.
    fn call(&self, server: usize, op: Op)
        -> impl Future<Output = Result<KvReply, RpcError>> + Send;

    /// The server believed to lead, if the transport has an idea (a hint in a reply, or what
    /// a local Raft node knows). The Clerk tries it next after a failed attempt.
    fn leader_hint(&self) -> Option<usize> {
        None
    }

    /// Resolves when the transport learns of a new leader: the Clerk then abandons an attempt
    /// still waiting on the old one (it may be paused or cut off) and goes to the new one at
    /// once. Never resolves by default.
    fn leader_changed(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }
}

/// A failed RPC: no reply came back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RpcError(pub String);

#[derive(Clone, Debug)]
pub struct ClerkConfig {
    /// Every RPC gives up after this long (the server's own wait is shorter).
    pub rpc_timeout: Duration,
    /// If set, the first attempt of a call gives up after this long, and each attempt after a
    /// time-out waits twice as long as the one before, up to `rpc_timeout`: a leader that
    /// stopped answering costs little, and a slow one still gets time.
    pub first_attempt_timeout: Option<Duration>,
    /// After trying every server once without success, wait this long before the next round,
    /// so that an election in progress is not flooded.
    pub retry_pause: Duration,
    /// Give up on a call after this long; `None` retries forever, as the course's Clerk does.
    pub deadline: Option<Duration>,
}

impl Default for ClerkConfig {
    fn default() -> Self {
        ClerkConfig {
            rpc_timeout: Duration::from_secs(3),
            first_attempt_timeout: None,
            retry_pause: Duration::from_millis(20),
            deadline: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClerkError {
    /// The service refused the request for good (for example, a key over the size limit).
    #[error("{0}")]
    Rejected(KvError),
    /// The deadline passed with no answer; the operation may or may not have taken effect.
    #[error("no answer within {waited:?} (last error: {last})")]
    Deadline { waited: Duration, last: String },
}

pub struct Clerk<T> {
    transport: T,
    client_id: u64,
    /// The sequence number of the last call; the next call uses the next one.
    seq: u64,
    /// The server that answered last: most likely the leader.
    leader: usize,
    config: ClerkConfig,
    session_open: bool,
}

impl<T: ClientTransport> Clerk<T> {
    /// A Clerk with a client id that must be unique among all clients of the service.
    pub fn new(transport: T, client_id: u64, config: ClerkConfig) -> Clerk<T> {
        assert!(transport.servers() > 0, "a Clerk needs at least one server");
        Clerk {
            transport,
            client_id,
            seq: 0,
            leader: 0,
            config,
            session_open: false,
        }
    }

    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The current value of `key` ("" if it has none), as the course's Clerk reads it.
    pub async fn get(&mut self, key: &str) -> Result<String, ClerkError> {
        let key = Bytes::copy_from_slice(key.as_bytes());
        self.execute(OpKind::Get { key })
            .await
            .map(Value::into_text)
    }

    pub async fn put(&mut self, key: &str, value: &str) -> Result<(), ClerkError> {
        let kind = OpKind::Put {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        };
        self.execute(kind).await.map(drop)
    }

    pub async fn append(&mut self, key: &str, value: &str) -> Result<(), ClerkError> {
        let kind = OpKind::Append {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        };
        self.execute(kind).await.map(drop)
    }

    /// Runs one operation to completion: the same sequence number on every attempt, so the
    /// service applies it at most once however many times it is sent.
    pub async fn execute(&mut self, kind: OpKind) -> Result<Value, ClerkError> {
        let start = Instant::now();
        let mut reopened = false;
        loop {
            self.open_session(start).await?;
            self.seq += 1;
            let (result, attempts) = self
                .run(self.seq, std::slice::from_ref(&kind), start)
                .await
                .pop()
                .expect("one outcome");
            if result != Err(ClerkError::Rejected(KvError::SessionExpired)) {
                return result;
            }
            self.session_open = false;
            // The session was evicted. If the service refused the request's only copy, it
            // applied none of it: open a new session and go again (once). If an earlier
            // attempt went unanswered, it may have been applied before the eviction: the
            // outcome is unknown, and only the caller can decide what to do.
            if attempts > 1 || reopened {
                return result;
            }
            reopened = true;
        }
    }

    /// Runs a pipeline: every operation is sent at once, without waiting for the others'
    /// replies, and the service applies them in this order, each at most once. Returns each
    /// one's outcome, in order. If the session expires meanwhile, the operations not yet
    /// answered fail with `SessionExpired` (their outcome unknown), and the next call opens a
    /// new session.
    pub async fn execute_pipelined(&mut self, kinds: &[OpKind]) -> Vec<Result<Value, ClerkError>> {
        let start = Instant::now();
        if let Err(e) = self.open_session(start).await {
            return vec![Err(e); kinds.len()];
        }
        let first = self.seq + 1;
        self.seq += kinds.len() as u64;
        let outcomes: Vec<_> = self
            .run(first, kinds, start)
            .await
            .into_iter()
            .map(|(result, _)| result)
            .collect();
        if outcomes.contains(&Err(ClerkError::Rejected(KvError::SessionExpired))) {
            self.session_open = false;
        }
        outcomes
    }

    async fn open_session(&mut self, start: Instant) -> Result<(), ClerkError> {
        if !self.session_open {
            let open = [OpKind::OpenSession];
            self.run(self.seq + 1, &open, start)
                .await
                .pop()
                .expect("one outcome")
                .0?;
            self.session_open = true;
        }
        Ok(())
    }

    /// Closes the session, so that the service can forget it at once rather than when it
    /// needs the room.
    pub async fn close(&mut self) -> Result<(), ClerkError> {
        if !self.session_open {
            return Ok(());
        }
        self.session_open = false;
        // A number of its own, so that a session opened later starts above it and a delayed
        // copy of this close cannot end that one.
        self.seq += 1;
        let close = [OpKind::CloseSession];
        let (result, _) = self
            .run(self.seq, &close, Instant::now())
            .await
            .pop()
            .expect("one outcome");
        result.map(drop)
    }

    /// Sends `kinds`, numbered from `first_seq`, all at once to the server believed to lead,
    /// and sends again those not yet answered for good (elsewhere if that server failed)
    /// until each is, or the deadline passes. Returns each one's outcome and how many times
    /// it was sent.
    async fn run(
        &mut self,
        first_seq: u64,
        kinds: &[OpKind],
        start: Instant,
    ) -> Vec<(Result<Value, ClerkError>, usize)> {
        let servers = self.transport.servers();
        let mut outcomes: Vec<Option<Result<Value, ClerkError>>> = vec![None; kinds.len()];
        let mut attempts = vec![0usize; kinds.len()];
        let mut failures = 0usize;
        let mut patience = self
            .config
            .first_attempt_timeout
            .unwrap_or(self.config.rpc_timeout)
            .min(self.config.rpc_timeout);
        loop {
            let waiting: Vec<usize> = (0..kinds.len())
                .filter(|&i| outcomes[i].is_none())
                .collect();
            if waiting.is_empty() {
                break;
            }
            // The service applies each after the one before it, or at once when no write
            // before it is still waiting: everything before that has its outcome, and reads
            // need no order among themselves (a read with no write waiting before it is
            // also one the leader may serve without the log).
            let oldest_write = waiting.iter().copied().find(|&i| !kinds[i].is_read());
            let calls = waiting.iter().map(|&i| {
                attempts[i] += 1;
                let lowest_pending =
                    first_seq + oldest_write.filter(|&w| w < i).unwrap_or(i) as u64;
                let op = Op {
                    lowest_pending,
                    ..Op::new(self.client_id, first_seq + i as u64, kinds[i].clone())
                };
                timeout(patience, self.transport.call(self.leader, op))
            });
            let calls = futures::future::join_all(calls);
            tokio::pin!(calls);
            let replies = loop {
                tokio::select! {
                    biased;
                    replies = &mut calls => break Some(replies),
                    () = self.transport.leader_changed() => {
                        // Abandoned only for another server: the requests may still be
                        // applied where they went, and their retries are recognised by their
                        // sequence numbers.
                        if self.transport.leader_hint().is_some_and(|h| h != self.leader) {
                            break None;
                        }
                    }
                }
            };
            let mut last = None;
            let mut timed_out = false;
            match replies {
                None => last = Some("a new leader was seen".to_string()),
                Some(replies) => {
                    for (&i, reply) in waiting.iter().zip(replies) {
                        let failure = match reply {
                            Ok(Ok(Ok(value))) => {
                                outcomes[i] = Some(Ok(value));
                                continue;
                            }
                            // An earlier request is missing: it goes again with this one.
                            Ok(Ok(Err(KvError::OutOfOrder))) => continue,
                            Ok(Ok(Err(e))) if !e.is_retryable() => {
                                outcomes[i] = Some(Err(ClerkError::Rejected(e)));
                                continue;
                            }
                            Ok(Ok(Err(e))) => e.to_string(),
                            Ok(Err(e)) => e.to_string(),
                            Err(_) => {
                                timed_out = true;
                                format!("no reply within {patience:?}")
                            }
                        };
                        last.get_or_insert(failure);
                    }
                }
            }
            if timed_out {
                patience = (patience * 2).min(self.config.rpc_timeout);
            }
            // Only requests sent too early failed: the server is fine, send them again.
            let Some(last) = last else {
                continue;
            };
            let failed = self.leader;
            self.leader = match self.transport.leader_hint() {
                Some(hint) if hint != failed && hint < servers => hint,
                _ => (failed + 1) % servers,
            };
            failures += 1;
            if let Some(deadline) = self.config.deadline {
                if start.elapsed() >= deadline {
                    let waited = start.elapsed();
                    for outcome in outcomes.iter_mut().filter(|o| o.is_none()) {
                        let last = last.clone();
                        *outcome = Some(Err(ClerkError::Deadline { waited, last }));
                    }
                    break;
                }
            }
            if failures.is_multiple_of(servers) {
                sleep(self.config.retry_pause).await;
            }
        }
        outcomes
            .into_iter()
            .zip(attempts)
            .map(|(outcome, sent)| (outcome.expect("every request has an outcome"), sent))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::Limits;
    use crate::state_machine::KvStateMachine;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    /// One replica applied in call order, each call at the next log index; `lose` calls
    /// are applied but their replies lost.
    #[derive(Clone)]
    struct Local {
        sm: Arc<Mutex<KvStateMachine>>,
        index: Arc<AtomicU64>,
        lose: Arc<AtomicU64>,
    }

    impl Local {
        fn new(max_sessions: usize) -> Local {
            Local {
                sm: Arc::new(Mutex::new(KvStateMachine::new(
                    Limits::default(),
                    max_sessions,
                ))),
                index: Arc::default(),
                lose: Arc::default(),
            }
        }

        fn apply(&self, op: &Op) -> KvReply {
            let index = self.index.fetch_add(1, Ordering::SeqCst) + 1;
            self.sm.lock().unwrap().apply(index, op)
        }
    }

    impl ClientTransport for Local {
        fn servers(&self) -> usize {
            1
        }

        async fn call(&self, _server: usize, op: Op) -> Result<KvReply, RpcError> {
            let reply = self.apply(&op);
            if self.lose.load(Ordering::SeqCst) > 0 {
                self.lose.fetch_sub(1, Ordering::SeqCst);
                return Err(RpcError("reply lost".into()));
            }
            Ok(reply)
        }
    }

    fn value(local: &Local, key: &str) -> Option<String> {
        let value = local.sm.lock().unwrap().peek(key.as_bytes());
        value.map(|v| String::from_utf8(v.to_vec()).unwrap())
    }

    /// Opens sessions for two other clients, which evicts client 1's (the table holds two).
    fn evict_client_1(local: &Local) {
        for client in [2, 3] {
            assert_eq!(local.apply(&Op::open(client, 1)), Ok(Value::Ok));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_refused_on_its_only_attempt_goes_again_in_a_new_session() {
        let local = Local::new(2);
        let mut clerk = Clerk::new(local.clone(), 1, ClerkConfig::default());
        clerk.append("k", "a").await.expect("append");
        evict_client_1(&local);
        clerk
            .append("k", "b")
            .await
            .expect("append after the eviction");
        assert_eq!(value(&local, "k").as_deref(), Some("ab"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_sent_twice_whose_session_expired_has_an_unknown_outcome() {
        let local = Local::new(2);
        let mut clerk = Clerk::new(local.clone(), 1, ClerkConfig::default());
        clerk.append("k", "a").await.expect("append");
        // The next append is applied but its reply lost; before the retry arrives, the session
        // is evicted. Applying the retry would apply "b" twice; answering "done" would be a
        // guess: the Clerk must say it does not know.
        local.lose.store(1, Ordering::SeqCst);
        let retry = tokio::spawn(async move {
            let mut clerk = clerk;
            let result = clerk.append("k", "b").await;
            (clerk, result)
        });
        // The Clerk sends, loses the reply, and pauses before retrying.
        tokio::task::yield_now().await;
        evict_client_1(&local);
        let (mut clerk, result) = retry.await.expect("clerk task");
        assert_eq!(result, Err(ClerkError::Rejected(KvError::SessionExpired)));
        assert_eq!(value(&local, "k").as_deref(), Some("ab"));
        // The next call opens a new session and works.
        clerk
            .append("k", "c")
            .await
            .expect("append in a new session");
        assert_eq!(value(&local, "k").as_deref(), Some("abc"));
    }

    /// Delays the first copy of every even-numbered request, so that a pipeline reaches the
    /// state machine out of order.
    #[derive(Clone)]
    struct Reordering {
        local: Local,
        delayed: Arc<Mutex<std::collections::HashSet<u64>>>,
    }

    impl ClientTransport for Reordering {
        fn servers(&self) -> usize {
            1
        }

        async fn call(&self, server: usize, op: Op) -> Result<KvReply, RpcError> {
            if op.seq.is_multiple_of(2) && self.delayed.lock().unwrap().insert(op.seq) {
                sleep(Duration::from_millis(1)).await;
            }
            self.local.call(server, op).await
        }
    }

    fn appends(pieces: &[&str]) -> Vec<OpKind> {
        let kind = |piece: &&str| OpKind::Append {
            key: Bytes::from_static(b"k"),
            value: Bytes::copy_from_slice(piece.as_bytes()),
        };
        pieces.iter().map(kind).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_pipeline_takes_effect_once_in_order_when_replies_are_lost() {
        let local = Local::new(10);
        let mut clerk = Clerk::new(local.clone(), 1, ClerkConfig::default());
        clerk.append("k", "<").await.expect("append");
        // The first two requests are applied but their replies lost: they go again, and
        // their retries are answered from the session.
        local.lose.store(2, Ordering::SeqCst);
        let outcomes = clerk
            .execute_pipelined(&appends(&["a", "b", "c", "d", "e"]))
            .await;
        assert_eq!(outcomes, vec![Ok(Value::Ok); 5]);
        assert_eq!(value(&local, "k").as_deref(), Some("<abcde"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pipeline_that_arrives_out_of_order_is_applied_in_order() {
        let local = Local::new(10);
        let transport = Reordering {
            local: local.clone(),
            delayed: Arc::default(),
        };
        let mut clerk = Clerk::new(transport, 1, ClerkConfig::default());
        let outcomes = clerk
            .execute_pipelined(&appends(&["a", "b", "c", "d", "e"]))
            .await;
        assert_eq!(outcomes, vec![Ok(Value::Ok); 5]);
        assert_eq!(value(&local, "k").as_deref(), Some("abcde"));
        // The next call goes on from there.
        clerk.append("k", "f").await.expect("append");
        assert_eq!(value(&local, "k").as_deref(), Some("abcdef"));
    }
}
