//! The benchmark's driver loop: three voters in one process, driven by one thread.
//!
//! Shared by the throughput benchmark (`benches/throughput/main.rs`) and by the test
//! that checks the loop applies every proposal exactly once, in the same order, on
//! every node (`tests/it/bench_loop.rs`), so the benchmark measures a loop that is
//! known to be correct.
//!
//! Each node is concord-group's [`GroupDriver`] (the per-group driver the runtime and
//! the simulator run) over a [`RawNode`] on a [`MemStorage`]; this loop does only the
//! driver's IO. Messages are delivered by calling `step` on the target node directly:
//! no channels, no threads, no copies beyond what the core hands out. The state
//! machine keeps nothing; an applied entry the leader's driver matched to its proposer
//! only tells that proposer the entry is done.
//!
//! A proposer keeps exactly one proposal outstanding: when the leader applies its
//! entry, it is free to propose its next. Each loop iteration queues the entries of
//! every free proposer with the leader's driver, which proposes them as one
//! `propose_batch` at its next Ready, then runs every node's Ready cycle (take the
//! Ready, persist, finish it, send, apply) until no node has anything left to do.

use bytes::Bytes;
use concord_group::framing::TAG_COMMAND;
use concord_group::{
    AdminOp, Answer, ApplyItem, Callers, DriverConfig, DriverOutput, DurableWrite, EntryPayload,
    GroupDriver,
};
use concord_raft::storage::BOOTSTRAP_INDEX;
use concord_raft::{
    ConfState, Config, Index, LogStore, MemStorage, NodeId, RawNode, Role, Storage,
};

/// Voters in the cluster; node ids are `1..=NODE_COUNT`.
pub const NODE_COUNT: usize = 3;

/// The node that campaigns at the start and leads for the whole run.
const LEADER_ID: NodeId = 1;

/// The group the three drivers run (any id: there is one group).
const GROUP: u64 = 1;

/// Bytes of every proposal's payload: the proposer (u64, little endian) then its
/// sequence number (u64, little endian).
pub const PAYLOAD_BYTES: usize = 16;

/// Bytes of every entry in the log: concord-group's command tag, then the payload.
pub const ENTRY_BYTES: usize = 1 + PAYLOAD_BYTES;

/// A node compacts its log once this many applied entries sit above the last
/// compaction point, so memory stays bounded however long a run is.
pub const COMPACT_INTERVAL_ENTRIES: u64 = 65_536;

/// Most Ready rounds over all nodes in one drive to quiescence. With messages
/// delivered at once a proposal commits within a handful of rounds; hitting the bound
/// means the loop is stuck.
const QUIESCE_ROUNDS_MAX: u32 = 1_000;

/// Who waits on the drivers: proposers, named by number. Nobody reads or changes
/// membership (the campaign at the start has nobody to tell).
struct Proposers;

impl Callers for Proposers {
    type Proposal = u64;
    type Read = ();
    type Admin = ();
}

type Driver = GroupDriver<MemStorage, Proposers>;
type Output = DriverOutput<Proposers>;

/// What one [`Cluster::run`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunStats {
    /// Proposals applied on the leader.
    pub proposals: u64,
    /// Loop iterations, each one batch of proposals followed by a drive to quiescence.
    pub iterations: u64,
}

/// Three nodes, their proposers and (optionally) a record of what each node applied.
pub struct Cluster {
    /// Node `id` is at position `id - 1`.
    nodes: Vec<Driver>,
    /// Proposers whose last entry has been applied on the leader, in the order they
    /// became free; they propose in the next iteration.
    // Invariant: every proposer is either here or has exactly one entry in flight.
    free_proposers: Vec<u64>,
    /// The sequence number each proposer puts in its next proposal.
    next_sequence: Vec<u64>,
    /// Proposals applied on the leader, since the cluster started.
    leader_applied_proposals: u64,
    /// Each node's compaction point.
    compacted_index: [u64; NODE_COUNT],
    /// When recording, the payloads each node applied, in order.
    applied_payloads: Option<[Vec<Bytes>; NODE_COUNT]>,
}

impl Cluster {
    /// Starts three voters, elects node 1 (by campaigning, no ticks) and readies
    /// `proposers` proposers. With `record_applied`, every applied payload is kept for
    /// [`Cluster::check_applied`].
    pub fn new(proposers: u64, record_applied: bool) -> Cluster {
        assert!(proposers > 0, "a run needs at least one proposer");
        let voters: Vec<NodeId> = (1..=NODE_COUNT as NodeId).collect();
        let nodes = voters
            .iter()
            .map(|&id| {
                let conf_state = ConfState::with_voters(voters.clone());
                let storage = MemStorage::with_conf_state(conf_state.clone());
                let config = Config::new(id);
                let raw = RawNode::new(&config, storage).expect("a valid config");
                let driver_config = DriverConfig::new(GROUP, config.election_timeout_ticks);
                // The state machine starts where the bootstrap snapshot is.
                GroupDriver::new(
                    driver_config,
                    raw,
                    BOOTSTRAP_INDEX,
                    conf_state,
                    Default::default(),
                )
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            free_proposers: (0..proposers).collect(),
            next_sequence: vec![0; proposers as usize],
            leader_applied_proposals: 0,
            compacted_index: [BOOTSTRAP_INDEX; NODE_COUNT],
            applied_payloads: record_applied.then(Default::default),
        };
        let mut out = Output::default();
        cluster
            .node_mut(LEADER_ID)
            .admin(AdminOp::Campaign, (), &mut out);
        assert!(
            matches!(out.answers.as_slice(), [Answer::Admin((), Ok(()))]),
            "campaigning is answered at once"
        );
        cluster.drive_until_quiescent();
        for node in &cluster.nodes {
            assert_eq!(
                node.raw().leader(),
                LEADER_ID,
                "node {} does not follow node {LEADER_ID}",
                node.raw().id()
            );
        }
        assert_eq!(cluster.node(LEADER_ID).raw().role(), Role::Leader);
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
                let mut entries = Vec::with_capacity(count * ENTRY_BYTES);
                for &proposer in &self.free_proposers[..count] {
                    let sequence = &mut self.next_sequence[proposer as usize];
                    entries.push(TAG_COMMAND);
                    entries.extend_from_slice(&proposer.to_le_bytes());
                    entries.extend_from_slice(&sequence.to_le_bytes());
                    *sequence += 1;
                }
                let entries = Bytes::from(entries);
                // The driver proposes what was queued as one batch at its next Ready.
                let leader = &mut self.nodes[(LEADER_ID - 1) as usize];
                for (position, proposer) in self.free_proposers.drain(..count).enumerate() {
                    let entry = entries.slice(position * ENTRY_BYTES..(position + 1) * ENTRY_BYTES);
                    leader.propose(entry, proposer);
                }
                proposed += count as u64;
            }
            self.drive_until_quiescent();
            if self.maybe_compact() {
                // The drivers compact with their next write: make it now.
                self.drive_until_quiescent();
            }
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
    /// same sequence; and each node's log starts right after its last compaction.
    /// Panics with the first difference. Returns each node's compaction point.
    pub fn check_applied(&self) -> [Index; NODE_COUNT] {
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
            let first_index = self.nodes[position].raw().storage().first_index();
            assert_eq!(
                first_index,
                Ok(self.compacted_index[position] + 1),
                "node {id}: the log's first index after compacting to {}",
                self.compacted_index[position]
            );
        }
        self.compacted_index
    }

    fn node(&self, id: NodeId) -> &Driver {
        &self.nodes[(id - 1) as usize]
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Driver {
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
        if !node.has_work() {
            return false;
        }
        let mut out = Output::default();
        // Persist: the log is in memory, so it is durable as soon as it is written,
        // and the messages that may leave before the write go with those after it.
        if let Some(write) = node.take_ready(&mut out) {
            persist(node.storage_mut(), &write);
            node.finish_ready(&mut out);
        }
        // Applied proposals are answered by the state machine; the driver answers only
        // those it drops, and none may be.
        match out.answers.first() {
            None => {}
            Some(Answer::Proposal(proposer, result)) => {
                panic!("proposer {proposer} was answered {result:?} by the driver")
            }
            Some(Answer::Read(..) | Answer::Admin(..)) => panic!("no reads or membership changes"),
        }
        // Send.
        for message in out.messages {
            let to = message.to;
            self.nodes[(to - 1) as usize]
                .step(message)
                .unwrap_or_else(|error| panic!("node {to} failed: {error}"));
        }
        // Apply.
        let is_leader = position as NodeId == LEADER_ID - 1;
        for item in out.apply {
            let entries = match item {
                ApplyItem::Entries(entries) => entries,
                ApplyItem::Notice(_) => continue, // Leadership notices: nobody listens.
                ApplyItem::Restore(_) => {
                    panic!("no node falls behind far enough to need a snapshot")
                }
                ApplyItem::Reads { .. } => panic!("no reads are asked"),
            };
            for entry in entries {
                let command = match entry.payload {
                    EntryPayload::Noop => continue, // A new leader's no-op.
                    EntryPayload::Command(command) => command,
                    other => panic!(
                        "entry {}: only commands are proposed, not {other:?}",
                        entry.index
                    ),
                };
                if is_leader {
                    let proposer = entry.proposer.unwrap_or_else(|| {
                        panic!(
                            "entry {}: the leader's driver matched no proposer",
                            entry.index
                        )
                    });
                    self.free_proposers.push(proposer);
                    self.leader_applied_proposals += 1;
                }
                if let Some(applied) = &mut self.applied_payloads {
                    applied[position].push(command);
                }
            }
        }
        true
    }

    /// Compacts each node's log up to its applied index once enough has piled up.
    /// Called between iterations, when every node holds and has applied the whole log,
    /// so no follower needs the dropped entries. As the runtime does: the snapshot is
    /// stored, then the driver compacts with its next write. Returns true if any node
    /// is to compact.
    fn maybe_compact(&mut self) -> bool {
        let mut compacting = false;
        for position in 0..NODE_COUNT {
            let node = &mut self.nodes[position];
            let applied = node.handed_index();
            if applied - self.compacted_index[position] < COMPACT_INTERVAL_ENTRIES {
                continue;
            }
            let voters = node.conf_state().clone();
            // The state machine keeps nothing, so its snapshot is empty.
            node.storage_mut()
                .create_snapshot(applied, voters, Bytes::new())
                .expect("snapshot at the applied index");
            node.compact(applied);
            self.compacted_index[position] = applied;
            compacting = true;
        }
        compacting
    }
}

/// Writes a Ready's durable part to memory, in the order the runtime's memory backend
/// writes it.
fn persist(storage: &mut MemStorage, write: &DurableWrite) {
    assert!(
        write.snapshot.is_none(),
        "no node falls behind far enough to need a snapshot"
    );
    storage
        .append(&write.entries)
        .expect("appended entries follow the log");
    if let Some(index) = write.compact {
        storage
            .compact(index)
            .expect("compact to the applied index");
    }
    if let Some(hard_state) = write.hard_state {
        storage
            .set_hard_state(hard_state)
            .expect("MemStorage never fails");
    }
}
