//! A fault-injecting wrapper around any [`Transport`], for fault tests of real nodes.
//!
//! Every node's transport is wrapped in a [`FaultyTransport`] sharing one [`Faults`]
//! handle; the test turns faults on and off through that handle while the cluster
//! runs:
//!
//! - **drop**: each message is lost with a probability, drawn from a seeded generator;
//! - **delay**: each message is held for a time drawn from a range (which also
//!   reorders messages);
//! - **partition**: links between chosen node pairs are cut, one way or both.
//!
//! Faults apply at send time: a message already delayed when a link is cut still
//! arrives, as on a real network. The generator is seeded, but nodes draw from it in
//! whatever order their tasks run, so a run is reproducible only as far as the
//! scheduling is.

use std::collections::HashSet;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use concord_raft::NodeId;

use super::{GroupMessage, Transport};

/// What the faults have done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Messages lost to the drop probability.
    pub dropped_random: u64,
    /// Messages lost to a cut link.
    pub dropped_partition: u64,
    /// Messages held back by a delay.
    pub delayed: u64,
    /// Messages passed on (at once or after a delay).
    pub passed: u64,
}

/// The fault settings of a whole test network, shared by every node's
/// [`FaultyTransport`]. Cheap to clone; clones control the same faults.
#[derive(Clone)]
pub struct Faults {
    state: Arc<Mutex<FaultState>>,
}

struct FaultState {
    random: SplitMix64,
    // Invariant: 0.0 <= drop_probability <= 1.0
    drop_probability: f64,
    // Invariant: when set, start <= end
    delay: Option<(Duration, Duration)>,
    /// Directed links (from, to) on which every message is lost.
    cut: HashSet<(NodeId, NodeId)>,
    stats: FaultStats,
}

/// What happens to one message.
enum Fate {
    Drop,
    Pass,
    Delay(Duration),
}

impl Faults {
    /// No faults yet; random draws come from `seed`.
    pub fn new(seed: u64) -> Self {
        Faults {
            state: Arc::new(Mutex::new(FaultState {
                random: SplitMix64(seed),
                drop_probability: 0.0,
                delay: None,
                cut: HashSet::new(),
                stats: FaultStats::default(),
            })),
        }
    }

    /// Loses each message with `probability` (clamped to `[0, 1]`; 0 turns drops off).
    pub fn set_drop_probability(&self, probability: f64) {
        let probability = if probability.is_nan() {
            0.0
        } else {
            probability.clamp(0.0, 1.0)
        };
        self.lock().drop_probability = probability;
    }

    /// Holds each message for a time drawn uniformly from `range`.
    pub fn set_delay(&self, range: RangeInclusive<Duration>) {
        let (start, end) = range.into_inner();
        self.lock().delay = Some((start.min(end), start.max(end)));
    }

    /// Stops delaying messages.
    pub fn clear_delay(&self) {
        self.lock().delay = None;
    }

    /// Cuts the link from `from` to `to` only: `to` still reaches `from`.
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.lock().cut.insert((from, to));
    }

    /// Cuts the links between `a` and `b` both ways.
    pub fn partition(&self, a: NodeId, b: NodeId) {
        let mut state = self.lock();
        state.cut.insert((a, b));
        state.cut.insert((b, a));
    }

    /// Cuts every link between a node of `side_a` and a node of `side_b`, both ways.
    pub fn partition_sides(&self, side_a: &[NodeId], side_b: &[NodeId]) {
        let mut state = self.lock();
        for &a in side_a {
            for &b in side_b {
                state.cut.insert((a, b));
                state.cut.insert((b, a));
            }
        }
    }

    /// Restores the links between `a` and `b`, both ways.
    pub fn heal(&self, a: NodeId, b: NodeId) {
        let mut state = self.lock();
        state.cut.remove(&(a, b));
        state.cut.remove(&(b, a));
    }

    /// Restores every link and turns drops and delays off.
    pub fn heal_all(&self) {
        let mut state = self.lock();
        state.cut.clear();
        state.drop_probability = 0.0;
        state.delay = None;
    }

    /// True when messages from `from` to `to` are being lost to a cut.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.lock().cut.contains(&(from, to))
    }

    /// What the faults have done so far.
    pub fn stats(&self) -> FaultStats {
        self.lock().stats
    }

    fn lock(&self) -> MutexGuard<'_, FaultState> {
        crate::lock(&self.state)
    }

    /// Decides the fate of one message on the link `from` to `to`.
    fn fate(&self, from: NodeId, to: NodeId) -> Fate {
        let mut state = self.lock();
        if state.cut.contains(&(from, to)) {
            state.stats.dropped_partition += 1;
            return Fate::Drop;
        }
        if state.drop_probability > 0.0 && state.random.next_f64() < state.drop_probability {
            state.stats.dropped_random += 1;
            return Fate::Drop;
        }
        state.stats.passed += 1;
        match state.delay {
            Some((start, end)) => {
                let spread = (end - start).as_micros() as u64;
                let extra = if spread == 0 {
                    0
                } else {
                    state.random.next_u64() % (spread + 1)
                };
                state.stats.delayed += 1;
                Fate::Delay(start + Duration::from_micros(extra))
            }
            None => Fate::Pass,
        }
    }
}

/// A [`Transport`] that sends through `inner` after applying the [`Faults`].
pub struct FaultyTransport<T> {
    node_id: NodeId,
    inner: Arc<T>,
    faults: Faults,
    runtime: tokio::runtime::Handle,
}

impl<T: Transport> FaultyTransport<T> {
    /// Wraps node `node_id`'s transport. Must be called within a tokio runtime:
    /// delayed messages are sent from tasks spawned on it.
    pub fn new(node_id: NodeId, inner: T, faults: Faults) -> Self {
        FaultyTransport {
            node_id,
            inner: Arc::new(inner),
            faults,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// The wrapped transport.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The faults this transport obeys.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }
}

impl<T: Transport> Transport for FaultyTransport<T> {
    fn send(&self, to: NodeId, messages: Vec<GroupMessage>) {
        let mut now = Vec::with_capacity(messages.len());
        for message in messages {
            match self.faults.fate(self.node_id, to) {
                Fate::Drop => {}
                Fate::Pass => now.push(message),
                Fate::Delay(delay) => {
                    let inner = self.inner.clone();
                    self.runtime.spawn(async move {
                        tokio::time::sleep(delay).await;
                        inner.send(to, vec![message]);
                    });
                }
            }
        }
        if !now.is_empty() {
            self.inner.send(to, now);
        }
    }

    fn set_peer(&self, id: NodeId, address: String) {
        self.inner.set_peer(id, address);
    }

    fn remove_peer(&self, id: NodeId) {
        self.inner.remove_peer(id);
    }
}

/// SplitMix64 (Steele, Lea and Flood, 2014): a tiny seeded generator, good enough to
/// decide which messages a test loses.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
