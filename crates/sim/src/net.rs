//! The simulated network between Raft peers, with the fault model of the course's `labrpc`
//! applied to each one-way message:
//!
//! - every message takes a small LAN latency (0.1–1 ms), so virtual time always moves;
//! - unreliable: a request is delayed a further 0–26 ms and dropped with probability 10%,
//!   a response is dropped with probability 10%;
//! - long reordering: about 2/3 of responses are delayed by 200 + rand(0..rand(0..2000)) ms;
//! - a message crosses only an enabled link, checked when it is sent and when it arrives;
//! - a crashed (removed) node sends nothing after its death, even what was already in flight,
//!   and a message addressed to an earlier incarnation of a node is lost.
//!
//! Counters follow the course: RPCs are request messages (total sent, and per server those
//! delivered); bytes are requests sent plus responses delivered.

use crate::trace::Trace;
use raft::{Message, NodeId, Transport};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;

/// Capacity of a node's inbox. A full inbox drops messages, like a congested link.
const INBOX_CAPACITY: usize = 4096;

#[derive(Clone)]
pub struct Network {
    inner: Arc<Mutex<NetState>>,
}

struct NetState {
    rng: ChaCha8Rng,
    reliable: bool,
    long_reordering: bool,
    nodes: BTreeMap<NodeId, NodeSlot>,
    links: BTreeSet<(NodeId, NodeId)>,
    rpc_total: u64,
    rpc_per_node: BTreeMap<NodeId, u64>,
    bytes: u64,
    trace: Trace,
}

struct NodeSlot {
    /// Bumped on every crash and restart, so messages for or from an old incarnation are lost.
    generation: u64,
    inbox: Option<mpsc::Sender<Message>>,
}

impl Network {
    pub fn new(seed: u64, trace: Trace) -> Network {
        Network {
            inner: Arc::new(Mutex::new(NetState {
                rng: ChaCha8Rng::seed_from_u64(seed),
                reliable: true,
                long_reordering: false,
                nodes: BTreeMap::new(),
                links: BTreeSet::new(),
                rpc_total: 0,
                rpc_per_node: BTreeMap::new(),
                bytes: 0,
                trace,
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

    pub fn set_reliable(&self, reliable: bool) {
        self.state().reliable = reliable;
    }

    pub fn set_long_reordering(&self, on: bool) {
        self.state().long_reordering = on;
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
        let reliable = st.reliable;
        let long_reordering = st.long_reordering;
        let rng = &mut st.rng;
        let mut delay = Duration::from_micros(rng.gen_range(100..1000));
        if request {
            if !reliable {
                if rng.gen_range(0..1000) < 100 {
                    return;
                }
                delay += Duration::from_millis(rng.gen_range(0..27));
            }
        } else {
            if !reliable && rng.gen_range(0..1000) < 100 {
                return;
            }
            if long_reordering && rng.gen_range(0..900) < 600 {
                let spread = rng.gen_range(0..2000);
                let extra = 200 + rng.gen_range(0..1 + spread);
                delay += Duration::from_millis(extra);
            }
            st.bytes += size;
        }
        drop(st);
        let net = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            net.deliver(msg, generation, target_generation);
        });
    }

    fn deliver(&self, msg: Message, from_generation: u64, to_generation: u64) {
        let mut st = self.state();
        let alive = |st: &NetState, id, generation| {
            st.nodes.get(&id).map(|s| s.generation) == Some(generation)
        };
        if !alive(&st, msg.from, from_generation)
            || !alive(&st, msg.to, to_generation)
            || !st.links.contains(&(msg.from, msg.to))
        {
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
