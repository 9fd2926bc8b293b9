//! The benchmark's driver loop: three voters in one process, driven by one thread.
//!
//! Shared by the throughput benchmark (`benches/throughput/main.rs`) and by the test
//! that checks the loop applies every proposal exactly once, in the same order, on
//! every node (`tests/it/bench_loop.rs`), so the benchmark measures a loop that is
//! known to be correct.
//!
//! Each node is a [`RawNode`] over a [`MemStorage`]. Messages are delivered by calling
//! `step` on the target node directly: no channels, no threads, no copies beyond what
//! the core hands out. The state machine keeps nothing; applying an entry on the leader
//! only tells its proposer that the entry is done.
//!
//! A proposer keeps exactly one proposal outstanding: when the leader applies its
//! entry, it is free to propose its next. Each loop iteration proposes the entries of
//! every free proposer as one `propose_batch` (the batching the core offers), then
//! runs every node's Ready cycle (persist, send, apply, advance) until no node has
//! anything left to do.

use bytes::Bytes;
use concord_raft::{ConfState, Config, EntryKind, LogStore, MemStorage, NodeId, RawNode, Role};

/// Voters in the cluster; node ids are `1..=NODE_COUNT`.
pub const NODE_COUNT: usize = 3;

/// The node that campaigns at the start and leads for the whole run.
const LEADER_ID: NodeId = 1;

/// Bytes of every proposal's payload: the proposer (u64, little endian) then its
/// sequence number (u64, little endian).
pub const PAYLOAD_BYTES: usize = 16;

/// A node compacts its log once this many applied entries sit above the last
/// compaction point, so memory stays bounded however long a run is.
pub const COMPACT_INTERVAL_ENTRIES: u64 = 65_536;

/// Most Ready rounds over all nodes in one drive to quiescence. With messages
/// delivered at once a proposal commits within a handful of rounds; hitting the bound
/// means the loop is stuck.
const QUIESCE_ROUNDS_MAX: u32 = 1_000;

/// What one [`Cluster::run`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunStats {
    /// Proposals applied on the leader.
    pub proposals: u64,
    /// Loop iterations, each one `propose_batch` followed by a drive to quiescence.
    pub iterations: u64,
}

/// Three nodes, their proposers and (optionally) a record of what each node applied.
pub struct Cluster {
    /// Node `id` is at position `id - 1`.
    nodes: Vec<RawNode<MemStorage>>,
    /// Proposers whose last entry has been applied on the leader, in the order they
    /// became free; they propose in the next iteration.
    // Invariant: every proposer is either here or has exactly one entry in flight.
    free_proposers: Vec<u64>,
    /// The sequence number each proposer puts in its next proposal.
    next_sequence: Vec<u64>,
    /// Proposals applied on the leader, since the cluster started.
    leader_applied_proposals: u64,
    /// Index of the last entry each node applied.
    applied_index: [u64; NODE_COUNT],
    /// Each node's compaction point.
    compacted_index: [u64; NODE_COUNT],
    /// When recording, the payloads each node applied, in order.
    applied_payloads: Option<[Vec<Bytes>; NODE_COUNT]>,
}

impl Cluster {
    /// Starts three voters, elects node 1 (by `campaign`, no ticks) and readies
    /// `proposers` proposers. With `record_applied`, every applied payload is kept for
    /// [`Cluster::check_applied`].
    pub fn new(proposers: u64, record_applied: bool) -> Cluster {
        assert!(proposers > 0, "a run needs at least one proposer");
        let voters: Vec<NodeId> = (1..=NODE_COUNT as NodeId).collect();
        let nodes = voters
            .iter()
            .map(|&id| {
                let storage = MemStorage::with_conf_state(ConfState::with_voters(voters.clone()));
                RawNode::new(&Config::new(id), storage).expect("a valid config")
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            free_proposers: (0..proposers).collect(),
            next_sequence: vec![0; proposers as usize],
            leader_applied_proposals: 0,
            applied_index: [0; NODE_COUNT],
            compacted_index: [0; NODE_COUNT],
            applied_payloads: record_applied.then(Default::default),
        };
        cluster.node_mut(LEADER_ID).campaign();
        cluster.drive_until_quiescent();
        for node in &cluster.nodes {
            assert_eq!(
                node.leader(),
                LEADER_ID,
                "node {} does not follow node {LEADER_ID}",
                node.id()
            );
        }
        assert_eq!(cluster.node(LEADER_ID).role(), Role::Leader);
        cluster
    }

    /// Runs until `proposals` more proposals have been applied on the leader.
    pub fn run(&mut self, proposals: u64) -> RunStats {
        let target = self.leader_applied_proposals + proposals;
        let mut proposed = self.leader_applied_proposals;
        let mut iterations = 0;
        while self.leader_applied_proposals < target {
            let applied_before = self.leader_applied_proposals;
            let count = self.free_proposers.len().min((target - proposed) as usize);
            if count > 0 {
                // One buffer per batch, as a server reading many requests at once
                // would have; each entry is a view into it, not its own allocation.
                let mut payloads = Vec::with_capacity(count * PAYLOAD_BYTES);
                for &proposer in &self.free_proposers[..count] {
                    let sequence = &mut self.next_sequence[proposer as usize];
                    payloads.extend_from_slice(&proposer.to_le_bytes());
                    payloads.extend_from_slice(&sequence.to_le_bytes());
                    *sequence += 1;
                }
                self.free_proposers.drain(..count);
                let batch = Bytes::from(payloads);
                let entries =
                    (0..count).map(|k| batch.slice(k * PAYLOAD_BYTES..(k + 1) * PAYLOAD_BYTES));
                self.node_mut(LEADER_ID)
                    .propose_batch(entries)
                    .expect("the leader accepts proposals");
                proposed += count as u64;
            }
            self.drive_until_quiescent();
            self.maybe_compact();
            iterations += 1;
            assert!(
                self.leader_applied_proposals > applied_before,
                "iteration {iterations} applied nothing ({} of {target} applied)",
                self.leader_applied_proposals
            );
        }
        assert_eq!(self.leader_applied_proposals, target);
        RunStats {
            proposals,
            iterations,
        }
    }

    /// Checks the recorded payloads: every proposal was applied exactly once on every
    /// node, each proposer's in the order it proposed them, and all nodes applied the
    /// same sequence. Panics with the first difference.
    pub fn check_applied(&self) {
        let applied = self
            .applied_payloads
            .as_ref()
            .expect("a cluster started with record_applied");
        let leader = &applied[(LEADER_ID - 1) as usize];
        assert_eq!(
            leader.len() as u64,
            self.leader_applied_proposals,
            "leader's applied count"
        );
        let mut expected_sequence = vec![0u64; self.next_sequence.len()];
        for (position, payload) in leader.iter().enumerate() {
            assert_eq!(
                payload.len(),
                PAYLOAD_BYTES,
                "payload {position}: {payload:?}"
            );
            let proposer = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
            let sequence = u64::from_le_bytes(payload[8..].try_into().expect("8 bytes"));
            let expected = &mut expected_sequence[proposer as usize];
            assert_eq!(
                sequence, *expected,
                "payload {position}: proposer {proposer} applied sequence {sequence}, expected {expected} \
                 (a proposal lost, duplicated or reordered)"
            );
            *expected += 1;
        }
        assert_eq!(
            expected_sequence, self.next_sequence,
            "proposals applied vs proposed, per proposer"
        );
        for (position, node_applied) in applied.iter().enumerate() {
            let id = position + 1;
            assert_eq!(
                node_applied.len(),
                leader.len(),
                "node {id} applied a different number of entries"
            );
            if let Some(at) = node_applied.iter().zip(leader).position(|(a, b)| a != b) {
                panic!(
                    "node {id} applied {:?} at position {at}, the leader {:?}",
                    node_applied[at], leader[at]
                );
            }
        }
    }

    fn node(&self, id: NodeId) -> &RawNode<MemStorage> {
        &self.nodes[(id - 1) as usize]
    }

    fn node_mut(&mut self, id: NodeId) -> &mut RawNode<MemStorage> {
        &mut self.nodes[(id - 1) as usize]
    }

    /// Runs Ready cycles on every node, round-robin, until none has work left.
    fn drive_until_quiescent(&mut self) {
        for _ in 0..QUIESCE_ROUNDS_MAX {
            let mut worked = false;
            for position in 0..NODE_COUNT {
                worked |= self.handle_ready(position);
            }
            if !worked {
                return;
            }
        }
        panic!("the cluster did not quiesce within {QUIESCE_ROUNDS_MAX} rounds");
    }

    /// One Ready cycle of the node at `position`, in the order of the driver contract.
    /// Returns false if it had nothing to do.
    fn handle_ready(&mut self, position: usize) -> bool {
        let node = &mut self.nodes[position];
        if !node.has_ready() {
            return false;
        }
        let ready = node.ready();
        // Persist: the log is in memory, so it is durable as soon as it is written.
        assert!(
            ready.snapshot.is_none(),
            "no node falls behind far enough to need a snapshot"
        );
        if let Some(hard_state) = ready.hard_state {
            node.storage_mut()
                .set_hard_state(hard_state)
                .expect("MemStorage never fails");
        }
        node.storage_mut()
            .append(&ready.entries)
            .expect("appended entries follow the log");
        // Send: persisting is already done, so both lists may go at once.
        for message in ready.messages.into_iter().chain(ready.persisted_messages) {
            let to = message.to;
            self.nodes[(to - 1) as usize]
                .step(message)
                .unwrap_or_else(|error| panic!("node {to} failed: {error}"));
        }
        // Apply.
        let is_leader = position as NodeId == LEADER_ID - 1;
        if let Some(last) = ready.committed_entries.last() {
            self.applied_index[position] = last.index;
        }
        for entry in ready.committed_entries {
            assert_eq!(
                entry.kind,
                EntryKind::Normal,
                "no membership changes are proposed"
            );
            if entry.data.is_empty() {
                continue; // A new leader's no-op.
            }
            if is_leader {
                let proposer =
                    u64::from_le_bytes(entry.data[..8].try_into().expect("an 8-byte proposer"));
                self.free_proposers.push(proposer);
                self.leader_applied_proposals += 1;
            }
            if let Some(applied) = &mut self.applied_payloads {
                applied[position].push(entry.data);
            }
        }
        self.nodes[position].advance();
        true
    }

    /// Compacts each node's log up to its applied index once enough has piled up.
    /// Called between iterations, when every node holds and has applied the whole log,
    /// so no follower needs the dropped entries.
    fn maybe_compact(&mut self) {
        for position in 0..NODE_COUNT {
            let applied = self.applied_index[position];
            if applied - self.compacted_index[position] < COMPACT_INTERVAL_ENTRIES {
                continue;
            }
            let voters = ConfState::with_voters(1..=NODE_COUNT as NodeId);
            let storage = self.nodes[position].storage_mut();
            // The state machine keeps nothing, so its snapshot is empty.
            storage
                .create_snapshot(applied, voters, Bytes::new())
                .expect("snapshot at the applied index");
            storage
                .compact(applied)
                .expect("compact to the applied index");
            self.compacted_index[position] = applied;
        }
    }
}
