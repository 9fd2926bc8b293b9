//! An in-process transport over channels, for tests: every node of a test cluster
//! registers its inbox with one [`MemoryNetwork`] and sends through the
//! [`MemoryTransport`] it gets back.
//!
//! It behaves like the gRPC transport where a node could tell the difference: sending
//! never blocks, a peer must be made known with `set_peer` before messages reach it
//! (so a node that forgets to learn a peer's address fails here too), and a full inbox
//! drops and counts. It does not serialize messages.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use concord_raft::NodeId;
use tokio::sync::mpsc;

use super::{count, deliver, GroupMessage, Inbound, Transport, TransportMetrics};

/// The switchboard of an in-process cluster: node id to inbox. Cheap to clone.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    inboxes: Arc<Mutex<HashMap<NodeId, mpsc::Sender<Inbound>>>>,
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Connects node `id`, whose inbox is `inbox`, and returns its transport. A node
    /// registered again (a restart) replaces its old inbox.
    pub fn register(&self, id: NodeId, inbox: mpsc::Sender<Inbound>) -> MemoryTransport {
        self.lock().insert(id, inbox);
        MemoryTransport {
            id,
            network: self.clone(),
            peers: Mutex::new(HashSet::new()),
            metrics: Arc::new(TransportMetrics::default()),
        }
    }

    /// Disconnects node `id` (a crash): messages to it are dropped until it registers
    /// again.
    pub fn unregister(&self, id: NodeId) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<NodeId, mpsc::Sender<Inbound>>> {
        crate::lock(&self.inboxes)
    }
}

/// One node's view of a [`MemoryNetwork`].
pub struct MemoryTransport {
    id: NodeId,
    network: MemoryNetwork,
    peers: Mutex<HashSet<NodeId>>,
    metrics: Arc<TransportMetrics>,
}

impl MemoryTransport {
    /// This transport's counters. `sent` and `received` both count at the sender:
    /// delivery is immediate.
    pub fn metrics(&self) -> &Arc<TransportMetrics> {
        &self.metrics
    }

    fn lock_peers(&self) -> MutexGuard<'_, HashSet<NodeId>> {
        crate::lock(&self.peers)
    }
}

impl Transport for MemoryTransport {
    fn send(&self, to: NodeId, messages: Vec<GroupMessage>) {
        let inbox = if self.lock_peers().contains(&to) {
            self.network.lock().get(&to).cloned()
        } else {
            None
        };
        let Some(inbox) = inbox else {
            count(&self.metrics.dropped_no_peer, messages.len() as u64);
            return;
        };
        for (group, message) in messages {
            count(&self.metrics.sent, 1);
            let inbound = Inbound {
                from: self.id,
                group,
                message,
            };
            // Failures are counted by `deliver`; a closed inbox is a crashed node.
            let _ = deliver(&inbox, &self.metrics, inbound);
        }
    }

    fn set_peer(&self, id: NodeId, _address: String) {
        self.lock_peers().insert(id);
    }

    fn remove_peer(&self, id: NodeId) {
        self.lock_peers().remove(&id);
    }
}
