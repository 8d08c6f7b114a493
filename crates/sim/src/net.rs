//! The simulated network between Raft peers, with the fault model of the course's `labrpc`
//! applied to each one-way message:
//!
//! - every message takes a small LAN latency (0.1–1 ms), so virtual time always moves;
//! - unreliable: a request is delayed a further 0–26 ms and dropped with probability 10%,
//!   a response is dropped with probability 10%;
//! - long reordering: about 2/3 of responses are delayed by 200 + rand(0..rand(0..2000)) ms;
//! - a message crosses only an enabled link, checked when it is sent and when it arrives (links
//!   are one-way: `enable(a, b)` says nothing of b to a);
//! - a crashed (removed) node sends nothing after its death, but what it sent before is still
//!   in flight and may arrive, as on a real network; a message addressed to an earlier
//!   incarnation of a node is lost.
//!
//! The nemesis simulation sets harsher [`NetFaults`]: any loss rate, duplicated messages, and
//! long delays (up to seconds) for either kind of message.
//!
//! The network also checks two of Raft's safety properties on every message it is given, since
//! it sees everything every node says (a violation panics in the sender's task, which fails
//! the run with that message first):
//!
//! - Election Safety (§5.2, Figure 3): AppendEntries of one term all come from one node, and
//!   that node was granted votes by a majority in that term (counting its own);
//! - Log Matching (§5.3): all entries carried with one index and term hold the same command.
//!
//! Counters follow the course: RPCs are request messages (total sent, and per server those
//! delivered); bytes are requests sent plus responses delivered.

use crate::stats::Stats;
use crate::trace::Trace;
use raft::{Message, MessageBody, NodeId, Term, Transport};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;

/// Capacity of a node's inbox. A full inbox drops messages, like a congested link.
const INBOX_CAPACITY: usize = 4096;

#[derive(Clone)]
pub struct Network {
    inner: Arc<Mutex<NetState>>,
}

/// What the network does to messages, each on its own. Rates are per mille.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetFaults {
    /// Requests lost.
    pub drop_requests: u32,
    /// Responses lost.
    pub drop_responses: u32,
    /// A request is delayed by a further uniform 0..=`request_jitter_ms`.
    pub request_jitter_ms: u64,
    /// Responses delayed by 200 + rand(0..rand(0..2000)) ms (the course's long reordering).
    pub long_reorder_responses: u32,
    /// Messages of either kind delivered twice (each copy with its own delay).
    pub duplicate: u32,
    /// Messages of either kind held back for 0.1–3 s.
    pub long_delay: u32,
}

impl NetFaults {
    /// The course's unreliable network: 10% of requests and of responses lost, requests
    /// delayed up to 26 ms.
    pub const UNRELIABLE: NetFaults = NetFaults {
        drop_requests: 100,
        drop_responses: 100,
        request_jitter_ms: 26,
        long_reorder_responses: 0,
        duplicate: 0,
        long_delay: 0,
    };
}

struct NetState {
    rng: ChaCha8Rng,
    faults: NetFaults,
    nodes: BTreeMap<NodeId, NodeSlot>,
    links: BTreeSet<(NodeId, NodeId)>,
    rpc_total: u64,
    rpc_per_node: BTreeMap<NodeId, u64>,
    bytes: u64,
    trace: Trace,
    stats: Stats,
    /// Election Safety: the node that sent AppendEntries in each term.
    leaders: BTreeMap<Term, NodeId>,
    /// Election Safety: the voters that granted each (term, candidate) a vote.
    votes: BTreeMap<(Term, NodeId), BTreeSet<NodeId>>,
    /// Log Matching: a digest of the command of every entry seen, by (index, term).
    ledger: HashMap<(u64, u64), u64>,
}

struct NodeSlot {
    /// Bumped on every crash and restart, so messages for or from an old incarnation are lost.
    generation: u64,
    inbox: Option<mpsc::Sender<Message>>,
}

impl Network {
    pub fn new(seed: u64, trace: Trace, stats: Stats) -> Network {
        Network {
            inner: Arc::new(Mutex::new(NetState {
                rng: ChaCha8Rng::seed_from_u64(seed),
                faults: NetFaults::default(),
                nodes: BTreeMap::new(),
                links: BTreeSet::new(),
                rpc_total: 0,
                rpc_per_node: BTreeMap::new(),
                bytes: 0,
                trace,
                stats,
                leaders: BTreeMap::new(),
                votes: BTreeMap::new(),
                ledger: HashMap::new(),
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, NetState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new incarnation of node `id`: returns its transport and its inbox.
    pub fn add_node(&self, id: NodeId) -> (SimTransport, mpsc::Receiver<Message>) {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        let mut st = self.state();
        let slot = st.nodes.entry(id).or_insert(NodeSlot {
            generation: 0,
            inbox: None,
        });
        slot.generation += 1;
        slot.inbox = Some(tx);
        let transport = SimTransport {
            net: self.clone(),
            from: id,
            generation: slot.generation,
        };
        (transport, rx)
    }

    /// Crashes node `id` in the network's eyes: nothing more goes to or from this incarnation.
    pub fn remove_node(&self, id: NodeId) {
        let mut st = self.state();
        if let Some(slot) = st.nodes.get_mut(&id) {
            slot.generation += 1;
            slot.inbox = None;
        }
    }

    pub fn enable(&self, from: NodeId, to: NodeId, enabled: bool) {
        let mut st = self.state();
        if enabled {
            st.links.insert((from, to));
        } else {
            st.links.remove(&(from, to));
        }
    }

    /// The course's reliable or unreliable network (see [`NetFaults::UNRELIABLE`]); leaves
    /// long reordering as it is.
    pub fn set_reliable(&self, reliable: bool) {
        let mut st = self.state();
        let long_reorder = st.faults.long_reorder_responses;
        st.faults = if reliable {
            NetFaults::default()
        } else {
            NetFaults::UNRELIABLE
        };
        st.faults.long_reorder_responses = long_reorder;
    }

    /// The course's long reordering: 2/3 of responses delayed by 200 ms to 2.2 s.
    pub fn set_long_reordering(&self, on: bool) {
        self.state().faults.long_reorder_responses = if on { 667 } else { 0 };
    }

    pub fn set_faults(&self, faults: NetFaults) {
        self.state().faults = faults;
    }

    pub fn faults(&self) -> NetFaults {
        self.state().faults
    }

    pub fn rpc_total(&self) -> u64 {
        self.state().rpc_total
    }

    pub fn rpc_count(&self, id: NodeId) -> u64 {
        self.state().rpc_per_node.get(&id).copied().unwrap_or(0)
    }

    pub fn bytes_total(&self) -> u64 {
        self.state().bytes
    }

    fn send(&self, from: NodeId, generation: u64, msg: Message) {
        let size = postcard::to_allocvec(&msg).map_or(0, |b| b.len()) as u64;
        let request = msg.is_request();
        let mut st = self.state();
        if st.nodes.get(&from).map(|s| s.generation) != Some(generation) {
            return;
        }
        st.check_safety(&msg);
        if let MessageBody::InstallSnapshot { .. } = msg.body {
            st.stats.add("snapshot chunks sent", 1);
        }
        if request {
            st.rpc_total += 1;
            st.bytes += size;
        }
        if !st.links.contains(&(from, msg.to)) {
            return;
        }
        let Some(target_generation) = st.nodes.get(&msg.to).map(|s| s.generation) else {
            return;
        };
        let faults = st.faults;
        let drop_rate = if request {
            faults.drop_requests
        } else {
            faults.drop_responses
        };
        if drop_rate > 0 && st.rng.gen_range(0..1000) < drop_rate {
            st.stats.add("messages lost", 1);
            return;
        }
        if !request {
            st.bytes += size;
        }
        let copies = if faults.duplicate > 0 && st.rng.gen_range(0..1000) < faults.duplicate {
            st.stats.add("messages duplicated", 1);
            2
        } else {
            1
        };
        let delays: Vec<Duration> = (0..copies)
            .map(|_| Self::delay(&mut st, request, faults))
            .collect();
        drop(st);
        let mut msg = Some(msg);
        for (copy, delay) in delays.into_iter().enumerate() {
            // The last copy takes the message itself.
            let msg = if copy + 1 < copies {
                msg.clone()
            } else {
                msg.take()
            }
            .expect("a message for every copy");
            let net = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                net.deliver(msg, target_generation);
            });
        }
    }

    /// How long one message takes: LAN latency, plus whatever `faults` add.
    fn delay(st: &mut NetState, request: bool, faults: NetFaults) -> Duration {
        let rng = &mut st.rng;
        let mut delay = Duration::from_micros(rng.gen_range(100..1000));
        if request && faults.request_jitter_ms > 0 {
            delay += Duration::from_millis(rng.gen_range(0..=faults.request_jitter_ms));
        }
        if !request
            && faults.long_reorder_responses > 0
            && rng.gen_range(0..1000) < faults.long_reorder_responses
        {
            let spread = rng.gen_range(0..2000);
            delay += Duration::from_millis(200 + rng.gen_range(0..1 + spread));
        }
        if faults.long_delay > 0 && rng.gen_range(0..1000) < faults.long_delay {
            delay += Duration::from_millis(rng.gen_range(100..3000));
            st.stats.add("messages delayed long", 1);
        }
        delay
    }

    fn deliver(&self, msg: Message, to_generation: u64) {
        let mut st = self.state();
        // The sender may have died meanwhile: what it sent before is delivered all the same.
        let target_alive = st.nodes.get(&msg.to).map(|s| s.generation) == Some(to_generation);
        if !target_alive || !st.links.contains(&(msg.from, msg.to)) {
            return;
        }
        if msg.is_request() {
            *st.rpc_per_node.entry(msg.to).or_insert(0) += 1;
        }
        st.trace.record_message(&msg);
        let inbox = st.nodes[&msg.to].inbox.clone();
        drop(st);
        if let Some(inbox) = inbox {
            let _ = inbox.try_send(msg);
        }
    }
}

impl NetState {
    /// Checks Election Safety and Log Matching on a message a node sends (see module docs).
    fn check_safety(&mut self, msg: &Message) {
        let entries = match &msg.body {
            MessageBody::RequestVoteResponse { vote_granted: true } => {
                let voters = self.votes.entry((msg.term, msg.to)).or_default();
                voters.insert(msg.from);
                return;
            }
            MessageBody::AppendEntries { entries, .. } => entries,
            _ => return,
        };
        let leader = *self.leaders.entry(msg.term).or_insert(msg.from);
        assert!(
            leader == msg.from,
            "election safety violated (§5.2): nodes {leader} and {} both lead term {}",
            msg.from,
            msg.term
        );
        let granted = 1 + self
            .votes
            .get(&(msg.term, msg.from))
            .map_or(0, |voters| voters.len());
        let quorum = self.nodes.len() / 2 + 1;
        assert!(
            granted >= quorum,
            "election safety violated (§5.2): node {} leads term {} with {granted} of the \
             {quorum} votes it needs",
            msg.from,
            msg.term
        );
        for e in entries {
            let digest = fnv(&e.command);
            let seen = *self.ledger.entry((e.index.0, e.term.0)).or_insert(digest);
            assert!(
                seen == digest,
                "log matching violated (§5.3): two different entries at index {} of term {} \
                 (sent by node {})",
                e.index,
                e.term,
                msg.from
            );
        }
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// One incarnation's way out to the network.
pub struct SimTransport {
    net: Network,
    from: NodeId,
    generation: u64,
}

impl Transport for SimTransport {
    fn send(&self, msg: Message) {
        debug_assert_eq!(msg.from, self.from);
        self.net.send(self.from, self.generation, msg);
    }
}
