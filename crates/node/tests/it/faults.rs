//! The in-memory transport and the fault-injecting wrapper around it.

use std::time::{Duration, Instant};

use concord_node::transport::faults::{FaultStats, Faults, FaultyTransport};
use concord_node::transport::memory::{MemoryNetwork, MemoryTransport};
use concord_node::transport::{Inbound, Transport};
use concord_raft::NodeId;
use tokio::sync::mpsc;

use crate::support::{heartbeats, within};

/// A small in-memory cluster, every node behind one shared `Faults`.
struct Cluster {
    faults: Faults,
    transports: Vec<FaultyTransport<MemoryTransport>>,
    inboxes: Vec<mpsc::Receiver<Inbound>>,
}

impl Cluster {
    fn new(nodes: u64, seed: u64) -> Cluster {
        let network = MemoryNetwork::new();
        let faults = Faults::new(seed);
        let mut transports = Vec::new();
        let mut inboxes = Vec::new();
        for id in 1..=nodes {
            let (sender, receiver) = mpsc::channel(10_000);
            let transport = network.register(id, sender);
            for peer in 1..=nodes {
                transport.set_peer(peer, format!("memory:{peer}"));
            }
            transports.push(FaultyTransport::new(id, transport, faults.clone()));
            inboxes.push(receiver);
        }
        Cluster {
            faults,
            transports,
            inboxes,
        }
    }

    fn send(&self, from: NodeId, to: NodeId, count: u64) {
        self.transports[from as usize - 1].send(to, heartbeats(from, to, 1, 0..count));
    }

    /// Messages waiting in `node`'s inbox, by sender.
    fn drain(&mut self, node: NodeId) -> Vec<NodeId> {
        let mut senders = Vec::new();
        while let Ok(inbound) = self.inboxes[node as usize - 1].try_recv() {
            senders.push(inbound.from);
        }
        senders
    }
}

/// A two-way partition loses everything between the pair and nothing else; a
/// one-way cut loses only its direction; healing restores both.
#[tokio::test]
async fn partitions_cut_chosen_links() {
    let mut cluster = Cluster::new(3, 1);
    cluster.faults.partition(1, 2);
    cluster.send(1, 2, 5);
    cluster.send(2, 1, 5);
    cluster.send(1, 3, 5);
    cluster.send(3, 2, 5);
    assert_eq!(cluster.drain(2), vec![3; 5]);
    assert_eq!(cluster.drain(1), Vec::<NodeId>::new());
    assert_eq!(cluster.drain(3), vec![1; 5]);

    cluster.faults.heal_all();
    cluster.faults.cut(1, 3);
    assert!(cluster.faults.is_cut(1, 3) && !cluster.faults.is_cut(3, 1));
    cluster.send(1, 3, 4);
    cluster.send(3, 1, 4);
    assert_eq!(cluster.drain(3), Vec::<NodeId>::new());
    assert_eq!(cluster.drain(1), vec![3; 4]);

    cluster.faults.partition_sides(&[1], &[2, 3]);
    cluster.send(2, 1, 1);
    cluster.send(3, 1, 1);
    cluster.send(2, 3, 1);
    assert_eq!(cluster.drain(1), Vec::<NodeId>::new());
    assert_eq!(cluster.drain(3), vec![2]);

    cluster.faults.heal(1, 3);
    cluster.faults.heal(1, 2);
    cluster.send(1, 2, 1);
    cluster.send(1, 3, 1);
    assert_eq!(cluster.drain(2), vec![1]);
    assert_eq!(cluster.drain(3), vec![1]);
    let stats = cluster.faults.stats();
    assert_eq!(stats.dropped_partition, 5 + 5 + 4 + 2);
    assert_eq!(stats.dropped_random, 0);
}

/// Random drops follow the configured probability, and the same seed drops the same
/// messages.
#[tokio::test]
async fn drops_follow_probability_and_seed() {
    let run = |seed| {
        let mut cluster = Cluster::new(2, seed);
        cluster.faults.set_drop_probability(0.3);
        cluster.send(1, 2, 2_000);
        let delivered = cluster.drain(2).len() as u64;
        (delivered, cluster.faults.stats())
    };
    let (delivered, stats) = run(7);
    assert_eq!(delivered + stats.dropped_random, 2_000);
    assert!(
        (500..=700).contains(&stats.dropped_random),
        "about 30% of 2000 dropped: {stats:?}"
    );
    assert_eq!(run(7), (delivered, stats), "same seed, same drops");
    assert_ne!(run(8).1, stats, "another seed, other drops");

    let mut cluster = Cluster::new(2, 9);
    cluster.faults.set_drop_probability(1.0);
    cluster.send(1, 2, 10);
    cluster.faults.set_drop_probability(0.0);
    cluster.send(1, 2, 10);
    assert_eq!(cluster.drain(2).len(), 10);
}

/// Delayed messages are held for a time within the configured range, then delivered.
#[tokio::test]
async fn delays_hold_messages_within_the_range() {
    let mut cluster = Cluster::new(2, 3);
    cluster
        .faults
        .set_delay(Duration::from_millis(50)..=Duration::from_millis(100));
    let start = Instant::now();
    cluster.send(1, 2, 3);
    assert!(cluster.drain(2).is_empty(), "nothing arrives at once");
    for _ in 0..3 {
        within("delayed message", cluster.inboxes[1].recv())
            .await
            .expect("inbox open");
    }
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(50), "{elapsed:?}");
    assert_eq!(
        cluster.faults.stats(),
        FaultStats {
            delayed: 3,
            passed: 3,
            ..FaultStats::default()
        }
    );
    cluster.faults.clear_delay();
    cluster.send(1, 2, 1);
    assert_eq!(cluster.drain(2).len(), 1);
}

/// The in-memory transport behaves like the gRPC one where a node could tell: a peer
/// must be set before it is reachable, a removed or crashed peer drops, a full inbox
/// drops, all counted.
#[tokio::test]
async fn memory_transport_counts_what_it_drops() {
    let network = MemoryNetwork::new();
    let (sender_one, _inbox_one) = mpsc::channel(4);
    let (sender_two, mut inbox_two) = mpsc::channel(4);
    let one = network.register(1, sender_one);
    let _two = network.register(2, sender_two);

    one.send(2, heartbeats(1, 2, 1, 0..2));
    assert_eq!(one.metrics().snapshot().dropped_no_peer, 2);
    one.set_peer(2, "memory:2".into());
    one.send(2, heartbeats(1, 2, 1, 0..6));
    let counters = one.metrics().snapshot();
    assert_eq!((counters.received, counters.dropped_inbox_full), (4, 2));
    assert_eq!(inbox_two.try_recv().unwrap().from, 1);

    network.unregister(2);
    one.send(2, heartbeats(1, 2, 1, 0..1));
    one.remove_peer(2);
    one.send(2, heartbeats(1, 2, 1, 0..1));
    assert_eq!(one.metrics().snapshot().dropped_no_peer, 4);
}
