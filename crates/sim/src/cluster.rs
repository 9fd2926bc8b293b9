//! The [`Cluster`] harness: simulated raft nodes over a simulated network and disks,
//! each driven exactly as the core's driver contract says, with every checker running.
//!
//! It is what the randomized runs ([`crate::run`]) are built on, and it is meant for
//! hand-written scenarios too: the MIT 6.824 Raft lab tests port almost line for line.
//!
//! | 6.824 `config`                     | `Cluster`                                        |
//! |------------------------------------|--------------------------------------------------|
//! | `make_config(t, n, unreliable, _)` | [`Cluster::new`]`(n, tweaks, seed)` + [`Cluster::set_unreliable`] |
//! | `cfg.disconnect(i)` / `connect(i)` | [`Cluster::disconnect`] / [`Cluster::connect`]   |
//! | `cfg.crash1(i)` / `start1(i)`      | [`Cluster::crash`] / [`Cluster::restart`]        |
//! | `cfg.setunreliable(b)`             | [`Cluster::set_unreliable`]                      |
//! | `time.Sleep(..)`                   | [`Cluster::run_ticks`] / [`Cluster::run_until`]  |
//! | `cfg.checkOneLeader()`             | [`Cluster::check_one_leader`] / [`Cluster::check_one_leader_among`] |
//! | `cfg.checkNoLeader()`              | [`Cluster::leader`]`().is_none()`                |
//! | `cfg.checkTerms()`                 | [`Cluster::term`] of each node                   |
//! | `cfg.nCommitted(index)`            | [`Cluster::committed_count`]                     |
//! | `cfg.one(cmd, n, retry)`           | [`Cluster::one`]                                 |
//! | `cfg.wait(index, n, term)`         | [`Cluster::wait_commit`]                         |
//! | `rf.Start(cmd)`                    | [`Cluster::propose_on`] / [`Cluster::propose`]   |
//! | `rf.Snapshot(index, ..)`           | [`Cluster::snapshot`]                            |
//!
//! As in the lab's `config`, a node is *connected* unless [`Cluster::disconnect`] cut it
//! off (or a [`Cluster::partition`] left it in no group); [`Cluster::connect`] restores
//! its links to the peers that are themselves connected. [`Cluster::leader`],
//! [`Cluster::check_one_leader`], [`Cluster::propose`] and [`Cluster::one`] consider
//! only connected running nodes: a disconnected old leader that still thinks it leads
//! is not the leader a client can reach.
//!
//! Beyond 6.824: [`Cluster::partition`] (groups), [`Cluster::cut_link`] (one-way),
//! [`Cluster::campaign`], [`Cluster::transfer_leader`], [`Cluster::propose_conf_change`],
//! [`Cluster::read_index`], disk faults ([`Cluster::arm_disk_fault`],
//! [`Cluster::flip_bit`]), and [`ClusterOptions`] for lossy networks, slow and faulty
//! disks, the storage kind, spare node ids for membership changes, and [`SimFault`]s in
//! the driver itself.
//!
//! ```
//! use bytes::Bytes;
//! use concord_sim::cluster::Cluster;
//!
//! // 6.824 TestBasicAgree: three nodes elect a leader and commit on all of them.
//! let mut cluster = Cluster::new(3, |_config| {}, 1);
//! let leader = cluster.check_one_leader().unwrap();
//! let index = cluster.one(Bytes::from_static(b"x"), 3, false).unwrap();
//! assert_eq!(cluster.committed_count(index), (3, Some(Bytes::from_static(b"x"))));
//! // 6.824 TestReElection: cut the leader off; the others elect a new one. The old
//! // one may still think it leads, but it is not connected, so it does not count.
//! cluster.disconnect(leader);
//! let new_leader = cluster.check_one_leader().unwrap();
//! assert_ne!(new_leader, leader);
//! // It rejoins, hears of the new term, and the group keeps one leader.
//! cluster.connect(leader);
//! let index = cluster.one(Bytes::from_static(b"y"), 3, true).unwrap();
//! assert_eq!(cluster.committed_count(index).0, 3);
//! ```
//!
//! # Time
//!
//! Time is counted in instants; a raft tick is [`TICK_INSTANTS`] instants, and each
//! node ticks at its own phase within them. In one instant the cluster delivers the
//! messages due, completes the disk writes due, then ticks the nodes due.
//!
//! # The driver
//!
//! After every input to a node (a message, a tick, a proposal) the cluster runs the
//! driver contract: take the `Ready`; send `messages` at once; persist hard state,
//! snapshot and entries (synchronously, or after a simulated disk delay during which
//! the node keeps taking inputs but no new `Ready`); then send `persisted_messages`,
//! install the snapshot, apply committed entries (membership changes through
//! `apply_conf_change`, recording the result in storage), serve reads whose index is
//! applied, and `advance`.
//!
//! # Crashes
//!
//! A crash keeps only the node's storage ([`crate::storage::NodeStorage`]); the state
//! machine, pending reads, and everything else in memory are lost. With memory storage
//! a write in progress is lost. With the durable log (the default) the disk loses power
//! in the middle of it: the crash is torn (with [`ClusterOptions::torn_crash_ppm`]) or
//! clean, keeping a random prefix of the unsynced bytes or none, and the log's own
//! recovery decides what survived; the recovered log is checked against every durable
//! log seen so far at once.
//!
//! A restart rebuilds the node from its storage alone: the key-value state from the
//! latest snapshot, raft with `applied` at the snapshot's index and the membership
//! recorded with that snapshot; committed entries after it are applied again. (The
//! membership recorded at each applied change is as volatile as the state machine it
//! goes with, so a restart takes the snapshot's.)
//!
//! # Disk faults
//!
//! With the durable log, any write the driver makes (a `Ready`, a snapshot, a
//! compaction) may hit a [`DiskFault`], with [`ClusterOptions::disk_fault_ppm`] or when
//! armed by [`Cluster::arm_disk_fault`]: power lost at one of its syncs, usually the
//! first (torn or clean), or a failed fsync. Either way the log stops and so does the
//! node: it crashes and restarts later through recovery, as a real node would. (A power
//! loss waiting for a later sync than the write makes misses it and is disarmed.) A
//! fault that does not stop the write, or storage that stops without a fault, fails the
//! run ([`CheckerKind::Storage`]), as does a recovery that refuses a disk only crashes
//! touched.
//!
//! [`Cluster::flip_bit`] damages a crashed node's disk. Recovery must then refuse to
//! start rather than serve wrong data: the node stays down for good
//! ([`Cluster::recovery_refusal`] says why), as a real node waits for an operator.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use concord_raft::{
    ConfChange, ConfState, Config, Entry, EntryKind, Index, LogPosition, Message, MessageKind,
    NodeId, ProposeError, RawNode, ReadState, Ready, Role, Storage, Term, NO_NODE,
};

use crate::checkers::{CheckerKind, CheckerSet, Checkers, Violation};
use crate::kv::{Applied, Kv};
use crate::network::{Network, NetworkConfig, SendOutcome, Time, TICK_INSTANTS};
use crate::rng::{hash_bytes, hash_words, mix64, Rng, PPM};
use crate::storage::{DiskFault, NodeStorage, SimStorage, StorageFailure, StorageMode};
use crate::trace::{Trace, TraceLevel};

/// Most messages in flight at once. Far above any healthy run (a few hundred); past it
/// the run is failing to converge, and is stopped as [`CheckerKind::Runaway`].
pub const MESSAGES_IN_FLIGHT_MAX: usize = 20_000;

/// How often, in ticks, every leader is checked to hold every committed entry.
pub const LEADER_CHECK_INTERVAL_TICKS: u64 = 16;

/// Most ticks [`Cluster::check_one_leader`] waits, in election timeouts.
pub const ELECTION_WAIT_ELECTION_TIMEOUTS: u64 = 10;

/// Deliberate faults in the simulator's own driver or disk, to show the checkers catch
/// a broken driver as well as a broken core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SimFault {
    /// Send `persisted_messages` before the Ready's writes are durable: a crash before
    /// the write lands loses a vote or entries the node already vouched for.
    SendBeforePersist,
    /// A crash also loses the node's last completed write, as if the disk acknowledged
    /// an fsync it had not done.
    CrashLosesLastWrite,
    /// Node 1's disk flips a byte of a command entry now and then as it writes it (no
    /// checksums).
    CorruptPersistedEntry,
    /// Serve a read as soon as its read index is known, without waiting for the state
    /// machine to apply up to it.
    ReadBeforeApply,
    /// The liveness phase leaves every node cut off from every other instead of
    /// healing the network.
    PartitionForever,
    /// The liveness phase heals the network but leaves one voter of the latest
    /// membership cut off: the others elect a leader and commit, but that voter never
    /// catches up.
    IsolateVoterForever,
}

impl SimFault {
    /// Every fault.
    pub const ALL: [SimFault; 6] = [
        SimFault::SendBeforePersist,
        SimFault::CrashLosesLastWrite,
        SimFault::CorruptPersistedEntry,
        SimFault::ReadBeforeApply,
        SimFault::PartitionForever,
        SimFault::IsolateVoterForever,
    ];

    /// The kebab-case name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SimFault::SendBeforePersist => "send-before-persist",
            SimFault::CrashLosesLastWrite => "crash-loses-last-write",
            SimFault::CorruptPersistedEntry => "corrupt-persisted-entry",
            SimFault::ReadBeforeApply => "read-before-apply",
            SimFault::PartitionForever => "partition-forever",
            SimFault::IsolateVoterForever => "isolate-voter-forever",
        }
    }

    /// The fault named `name`.
    pub fn from_name(name: &str) -> Option<SimFault> {
        SimFault::ALL.into_iter().find(|fault| fault.name() == name)
    }
}

/// Everything a [`Cluster`] is built from.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Seed of the network's, disks' and nodes' randomness.
    pub seed: u64,
    /// Nodes `1..=voters` start as the voters of the group.
    pub voters: usize,
    /// Nodes `1..=pool_size` exist; those above `voters` start outside the group,
    /// waiting to be added. At least `voters`.
    pub pool_size: usize,
    /// The raft configuration of every node (`id`, `seed` and `applied` are set per
    /// node).
    pub config: Config,
    /// How the network treats messages.
    pub network: NetworkConfig,
    /// Most instants a disk write takes; each write draws from `0..=` this. 0 persists
    /// every Ready in the instant it is taken.
    pub persist_delay_max_instants: u64,
    /// Which checkers report.
    pub checkers: CheckerSet,
    /// A deliberate fault in the driver, if any.
    pub sim_fault: Option<SimFault>,
    /// Run the core's `check_invariants` after every input, also in release builds.
    pub check_core_invariants: bool,
    /// Keep [`ClusterEvent`]s for [`Cluster::take_events`] (the client oracle's feed).
    pub collect_events: bool,
    /// Chance, in ppm, that a node crashes at a crash point: right after it persisted a
    /// vote, or, as leader, right after its commit index advanced. Uniformly random
    /// crashes rarely land at these moments, where durability and commitment rules
    /// matter most. Restarting is the caller's business.
    pub crash_point_ppm: u32,
    /// The storage every node keeps its log in.
    pub storage: StorageMode,
    /// With [`StorageMode::Disk`]: chance, in ppm, that a write to a node's storage (a
    /// `Ready`, a snapshot, a compaction) hits a [`DiskFault`], which stops the node.
    pub disk_fault_ppm: u32,
    /// With [`StorageMode::Disk`]: chance, in ppm, that a crash is torn (the disk keeps
    /// a random prefix of the unsynced writes, the last one cut short) rather than
    /// clean.
    pub torn_crash_ppm: u32,
}

impl ClusterOptions {
    /// `voters` nodes, default raft config, reliable network, instant disks holding
    /// the durable log (half the crashes torn, no other disk faults), every checker.
    pub fn new(voters: usize, seed: u64) -> ClusterOptions {
        ClusterOptions {
            seed,
            voters,
            pool_size: voters,
            config: Config::default(),
            network: NetworkConfig::reliable(),
            persist_delay_max_instants: 0,
            checkers: CheckerSet::all(),
            sim_fault: None,
            check_core_invariants: true,
            collect_events: false,
            crash_point_ppm: 0,
            storage: StorageMode::default(),
            disk_fault_ppm: 0,
            torn_crash_ppm: PPM / 2,
        }
    }
}

/// Something the client oracle needs to hear about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    /// `node` applied the entry at `index` (of `term`).
    Applied {
        /// The node.
        node: NodeId,
        /// Its incarnation (bumped by every crash).
        incarnation: u64,
        /// When.
        time: Time,
        /// The entry's index.
        index: Index,
        /// The entry's term.
        term: Term,
        /// What applying it did.
        applied: Applied,
    },
    /// `node` served the read registered with `tag` by [`Cluster::read_index`].
    ReadServed {
        /// The node.
        node: NodeId,
        /// Its incarnation.
        incarnation: u64,
        /// When.
        time: Time,
        /// The caller's tag.
        tag: u64,
        /// The read index it was served at.
        index: Index,
        /// The value read.
        value: Option<Bytes>,
    },
    /// `node` crashed: everything waiting on it is lost.
    Crashed {
        /// The node.
        node: NodeId,
        /// When.
        time: Time,
    },
}

/// A running node's volatile half: raft, state machine, and the driver's bookkeeping.
struct UpNode {
    raw: RawNode<NodeStorage>,
    kv: Kv,
    /// Membership as of `kv.applied_index()`.
    conf_state: ConfState,
    /// The Ready being persisted, if the disk is slow.
    in_flight: Option<Ready>,
    /// Reads confirmed by raft, waiting for the state machine to reach their index.
    pending_reads: Vec<ReadState>,
    /// The storage as it was before the last write ([`SimFault::CrashLosesLastWrite`]).
    before_last_write: Option<NodeStorage>,
    /// Index of the latest snapshot in storage (created, installed or started from).
    snapshot_index: Index,
}

enum NodeState {
    Up(Box<UpNode>),
    Down(Box<NodeStorage>),
    /// Momentarily out of the map while the driver works on it.
    Taken,
}

struct SimNode {
    incarnation: u64,
    /// The instant within each tick at which this node ticks.
    tick_phase: u64,
    state: NodeState,
    /// Last (role, term, leader) traced.
    last_seen: (Role, Term, NodeId),
    /// A fault the disk injects into the node's next write ([`Cluster::arm_disk_fault`]).
    armed_fault: Option<DiskFault>,
    /// Bits were flipped on the disk since the node crashed: recover again at restart.
    disk_damaged: bool,
    /// Recovery refused the node's disk: it never restarts.
    recovery_refusal: Option<String>,
}

/// Who applied one index, and what.
#[derive(Clone, Debug)]
struct AppliedAt {
    term: Term,
    data: Bytes,
    nodes: BTreeSet<NodeId>,
}

/// A node's state as the harness shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// The node.
    pub id: NodeId,
    /// Running (not crashed).
    pub up: bool,
    /// Role (a crashed node shows `Follower`).
    pub role: Role,
    /// Current term (durable term for a crashed node).
    pub term: Term,
    /// Known leader.
    pub leader: NodeId,
    /// Commit index (durable commit for a crashed node).
    pub commit: Index,
    /// Index applied by its state machine.
    pub applied: Index,
    /// Last log index.
    pub last_index: Index,
    /// Membership as the node's raft sees it.
    pub conf_state: ConfState,
    /// Bytes received of a snapshot the leader is streaming to it, if any.
    pub snapshot_received_bytes: Option<u64>,
}

impl fmt::Display for NodeView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node {}: {} {:?} term {} leader {} commit {} applied {} last {} voters {:?}",
            self.id,
            if self.up { "up" } else { "down" },
            self.role,
            self.term,
            self.leader,
            self.commit,
            self.applied,
            self.last_index,
            self.conf_state.voters
        )?;
        if !self.conf_state.voters_outgoing.is_empty() {
            write!(f, " outgoing {:?}", self.conf_state.voters_outgoing)?;
        }
        if !self.conf_state.learners.is_empty() {
            write!(f, " learners {:?}", self.conf_state.learners)?;
        }
        Ok(())
    }
}

/// Counts of what the cluster did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// Readies handled.
    pub readies: u64,
    /// Entries applied, over all nodes.
    pub entries_applied: u64,
    /// Snapshots created.
    pub snapshots_created: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Crashes.
    pub crashes: u64,
    /// Membership changes applied (first application of each index).
    pub conf_changes_applied: u64,
    /// Crashes that were torn (durable log only).
    pub torn_crashes: u64,
    /// Writes in progress that a crash interrupted (durable log only).
    pub writes_interrupted: u64,
    /// Disk faults that stopped a node (durable log only).
    pub disk_faults: u64,
}

/// A simulated raft group. See the module docs.
pub struct Cluster {
    options: ClusterOptions,
    now: Time,
    nodes: BTreeMap<NodeId, SimNode>,
    network: Network,
    /// Disk writes in progress: (done at, sequence) -> (node, incarnation).
    persists: BTreeMap<(Time, u64), (NodeId, u64)>,
    persist_sequence: u64,
    disk_rng: Rng,
    /// Draws disk faults and torn crashes (apart from `disk_rng`, so that memory
    /// storage runs draw the same write delays).
    disk_fault_rng: Rng,
    crash_point_rng: Rng,
    /// Nodes cut off by [`Cluster::disconnect`] (or left out of a partition).
    disconnected: BTreeSet<NodeId>,
    checkers: Checkers,
    trace: Trace,
    failure: Option<Violation>,
    events: Vec<ClusterEvent>,
    applied: BTreeMap<Index, AppliedAt>,
    /// The membership of the highest-index change applied anywhere.
    latest_conf: (Index, ConfState),
    stats: ClusterStats,
}

impl Cluster {
    /// `voters` nodes (ids `1..=voters`) with the default config changed by
    /// `config_tweaks`, a reliable network and instant disks, every checker on.
    pub fn new(voters: usize, config_tweaks: impl FnOnce(&mut Config), seed: u64) -> Cluster {
        let mut options = ClusterOptions::new(voters, seed);
        config_tweaks(&mut options.config);
        Cluster::with_options(options, Trace::quiet())
    }

    /// A cluster built from `options`, tracing into `trace`.
    pub fn with_options(options: ClusterOptions, trace: Trace) -> Cluster {
        assert!(options.voters >= 1, "a group needs at least one voter");
        assert!(
            options.pool_size >= options.voters,
            "pool_size must be at least voters"
        );
        let seed = options.seed;
        let bootstrap = ConfState::with_voters(1..=options.voters as NodeId);
        let mut phase_rng = Rng::stream(seed, "tick-phases");
        let mut cluster = Cluster {
            network: Network::new(options.network, Rng::stream(seed, "network")),
            now: 0,
            nodes: BTreeMap::new(),
            persists: BTreeMap::new(),
            persist_sequence: 0,
            disk_rng: Rng::stream(seed, "disks"),
            disk_fault_rng: Rng::stream(seed, "disk-faults"),
            crash_point_rng: Rng::stream(seed, "crash-points"),
            disconnected: BTreeSet::new(),
            checkers: Checkers::new(options.checkers),
            trace,
            failure: None,
            events: Vec::new(),
            applied: BTreeMap::new(),
            latest_conf: (0, bootstrap.clone()),
            stats: ClusterStats::default(),
            options,
        };
        let mut disk_seed_rng = Rng::stream(seed, "disk-seeds");
        let mode = cluster.options.storage;
        for id in 1..=cluster.options.pool_size as NodeId {
            let disk_seed = disk_seed_rng.next_u64();
            let storage = if id <= cluster.options.voters as NodeId {
                NodeStorage::bootstrap(mode, disk_seed, bootstrap.clone())
            } else {
                NodeStorage::empty(mode, disk_seed)
            };
            let storage = storage.unwrap_or_else(|error| {
                panic!("node {id}: creating {mode} storage on a blank disk: {error}")
            });
            cluster.nodes.insert(
                id,
                SimNode {
                    incarnation: 0,
                    tick_phase: phase_rng.below(TICK_INSTANTS),
                    state: NodeState::Down(Box::new(storage)),
                    last_seen: (Role::Follower, 0, NO_NODE),
                    armed_fault: None,
                    disk_damaged: false,
                    recovery_refusal: None,
                },
            );
        }
        for id in cluster.node_ids() {
            cluster.start(id);
        }
        cluster
    }

    // -------------------------------------------------------------------------------
    // Observing.

    /// The current instant.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Whole ticks elapsed.
    pub fn ticks(&self) -> u64 {
        self.now / TICK_INSTANTS
    }

    /// The options the cluster was built with.
    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// Every node id, in order.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// True when `id` is running.
    pub fn is_up(&self, id: NodeId) -> bool {
        matches!(
            self.nodes.get(&id).map(|node| &node.state),
            Some(NodeState::Up(_))
        )
    }

    /// The first violation found, if any. Once set, the cluster stops moving.
    pub fn failure(&self) -> Option<&Violation> {
        self.failure.as_ref()
    }

    /// The checkers' state.
    pub fn checkers(&self) -> &Checkers {
        &self.checkers
    }

    /// The trace.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// The trace, to add events to it.
    pub fn trace_mut(&mut self) -> &mut Trace {
        &mut self.trace
    }

    /// Counts so far.
    pub fn stats(&self) -> ClusterStats {
        self.stats
    }

    /// The network's counts so far.
    pub fn network_stats(&self) -> crate::network::NetworkStats {
        self.network.stats()
    }

    /// The raft node `id`, if running.
    pub fn raw_node(&self, id: NodeId) -> Option<&RawNode<NodeStorage>> {
        match &self.nodes.get(&id)?.state {
            NodeState::Up(up) => Some(&up.raw),
            _ => None,
        }
    }

    /// Node `id`'s state.
    pub fn view(&self, id: NodeId) -> Option<NodeView> {
        let node = self.nodes.get(&id)?;
        Some(match &node.state {
            NodeState::Up(up) => {
                let status = up.raw.status();
                NodeView {
                    id,
                    up: true,
                    role: status.role,
                    term: status.term,
                    leader: status.leader,
                    commit: status.commit,
                    applied: up.kv.applied_index(),
                    last_index: status.last_index,
                    conf_state: status.conf_state,
                    snapshot_received_bytes: status
                        .incoming_snapshot
                        .map(|incoming| incoming.received_bytes),
                }
            }
            NodeState::Down(storage) => {
                let hard_state = storage.hard_state();
                NodeView {
                    id,
                    up: false,
                    role: Role::Follower,
                    term: hard_state.term,
                    leader: NO_NODE,
                    commit: hard_state.commit,
                    applied: 0,
                    last_index: storage.last_index().unwrap_or(0),
                    conf_state: storage
                        .initial_state()
                        .map(|state| state.conf_state)
                        .unwrap_or_default(),
                    snapshot_received_bytes: None,
                }
            }
            NodeState::Taken => return None,
        })
    }

    /// Every node's state, one line each.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        for id in self.node_ids() {
            if let Some(view) = self.view(id) {
                text.push_str(&format!("  {view}\n"));
            }
        }
        text
    }

    /// Node `id`'s current term (durable term when crashed).
    pub fn term(&self, id: NodeId) -> Option<Term> {
        self.view(id).map(|view| view.term)
    }

    /// True unless `id` was cut off by [`Cluster::disconnect`] (or left out of a
    /// partition) and not connected since: the lab's `connected[id]`.
    pub fn is_connected(&self, id: NodeId) -> bool {
        self.nodes.contains_key(&id) && !self.disconnected.contains(&id)
    }

    /// Running nodes that think they are leader, with their terms, highest term first,
    /// connected or not (a disconnected node may lead a term long gone).
    pub fn leaders(&self) -> Vec<(NodeId, Term)> {
        let mut leaders: Vec<(NodeId, Term)> = self
            .nodes
            .iter()
            .filter_map(|(&id, node)| match &node.state {
                NodeState::Up(up) if up.raw.role() == Role::Leader => Some((id, up.raw.term())),
                _ => None,
            })
            .collect();
        leaders.sort_by_key(|&(id, term)| (std::cmp::Reverse(term), id));
        leaders
    }

    /// The connected running leader of the highest term, if any (the lab's
    /// `checkOneLeader` looks only at connected servers).
    pub fn leader(&self) -> Option<NodeId> {
        self.leaders()
            .into_iter()
            .find(|&(id, _)| self.is_connected(id))
            .map(|(id, _)| id)
    }

    /// The running leader of the highest term among `ids`, if any (6.824 tests that
    /// cut a node off ask who leads among the rest).
    pub fn leader_among(&self, ids: &[NodeId]) -> Option<NodeId> {
        self.leaders()
            .into_iter()
            .find(|(id, _)| ids.contains(id))
            .map(|(id, _)| id)
    }

    /// Node `id`'s state machine's applied index.
    pub fn applied_index(&self, id: NodeId) -> Option<Index> {
        match &self.nodes.get(&id)?.state {
            NodeState::Up(up) => Some(up.kv.applied_index()),
            _ => None,
        }
    }

    /// The value of `key` in node `id`'s state machine.
    pub fn kv_get(&self, id: NodeId, key: &[u8]) -> Option<Bytes> {
        match &self.nodes.get(&id)?.state {
            NodeState::Up(up) => up.kv.get(key),
            _ => None,
        }
    }

    /// The membership of the latest change applied anywhere, with its index (index 0:
    /// the bootstrap membership).
    pub fn latest_conf_state(&self) -> (Index, ConfState) {
        self.latest_conf.clone()
    }

    /// 6.824 `nCommitted`: how many nodes have applied the entry at `index` (in any
    /// incarnation), and its data. State machine safety guarantees they agree.
    pub fn committed_count(&self, index: Index) -> (usize, Option<Bytes>) {
        match self.applied.get(&index) {
            Some(at) => (at.nodes.len(), Some(at.data.clone())),
            None => (0, None),
        }
    }

    /// The term of the entry applied at `index`, if any node applied it.
    pub fn applied_term(&self, index: Index) -> Option<Term> {
        self.applied.get(&index).map(|at| at.term)
    }

    /// Events since the last call (only with [`ClusterOptions::collect_events`]).
    pub fn take_events(&mut self) -> Vec<ClusterEvent> {
        std::mem::take(&mut self.events)
    }

    // -------------------------------------------------------------------------------
    // Faults.

    /// Cuts every link to and from `id` and marks it disconnected (6.824
    /// `disconnect`).
    pub fn disconnect(&mut self, id: NodeId) {
        let all = self.node_ids();
        self.network.isolate(id, &all);
        self.disconnected.insert(id);
        self.trace_event(&[10, id], || format!("network: node {id} disconnected"));
    }

    /// Marks `id` connected and restores its links, both ways, to every peer that is
    /// connected (6.824 `connect`: a link works when both its ends are connected).
    /// Links to disconnected peers stay cut until those are connected in turn.
    pub fn connect(&mut self, id: NodeId) {
        self.disconnected.remove(&id);
        let peers: Vec<NodeId> = self
            .node_ids()
            .into_iter()
            .filter(|&peer| peer != id && self.is_connected(peer))
            .collect();
        self.network.reconnect(id, &peers);
        self.trace_event(&[11, id], || format!("network: node {id} connected"));
    }

    /// Only nodes in the same group can talk; nodes in no group are isolated, and
    /// count as disconnected until connected or healed.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        let all = self.node_ids();
        self.network.partition(groups, &all);
        self.disconnected = all
            .into_iter()
            .filter(|id| !groups.iter().any(|group| group.contains(id)))
            .collect();
        let mut words = vec![12];
        for group in groups {
            words.push(u64::MAX);
            words.extend(group);
        }
        self.trace_event(&words, || format!("network: partition {groups:?}"));
    }

    /// Drops messages from `from` to `to` (a one-way partition).
    pub fn cut_link(&mut self, from: NodeId, to: NodeId) {
        self.network.cut(from, to);
        self.trace_event(&[13, from, to], || {
            format!("network: link {from} -> {to} cut")
        });
    }

    /// Restores the link from `from` to `to`.
    pub fn restore_link(&mut self, from: NodeId, to: NodeId) {
        self.network.restore(from, to);
        self.trace_event(&[14, from, to], || {
            format!("network: link {from} -> {to} restored")
        });
    }

    /// Restores every link; every node is connected.
    pub fn heal(&mut self) {
        self.network.heal();
        self.disconnected.clear();
        self.trace_event(&[15], || "network: healed".to_string());
    }

    /// The cut links.
    pub fn cut_links(&self) -> Vec<(NodeId, NodeId)> {
        self.network.cut_links()
    }

    /// 6.824 `setunreliable`: [`NetworkConfig::unreliable`] or
    /// [`NetworkConfig::reliable`].
    pub fn set_unreliable(&mut self, unreliable: bool) {
        let config = if unreliable {
            NetworkConfig::unreliable()
        } else {
            NetworkConfig::reliable()
        };
        self.set_network(config);
    }

    /// How the network treats messages sent from now on.
    pub fn set_network(&mut self, config: NetworkConfig) {
        self.network.set_config(config);
        self.trace_event(
            &[
                16,
                u64::from(config.loss_ppm),
                u64::from(config.duplicate_ppm),
                config.delay_max_instants,
            ],
            || format!("network: {config}"),
        );
    }

    /// The chance of crashing at a crash point from now on, in ppm (see
    /// [`ClusterOptions::crash_point_ppm`]).
    pub fn set_crash_point_ppm(&mut self, ppm: u32) {
        self.options.crash_point_ppm = ppm;
    }

    /// The chance that a write hits a disk fault from now on, in ppm (see
    /// [`ClusterOptions::disk_fault_ppm`]).
    pub fn set_disk_fault_ppm(&mut self, ppm: u32) {
        self.options.disk_fault_ppm = ppm;
    }

    /// Most instants a disk write takes from now on (0: writes are instant).
    pub fn set_persist_delay_max(&mut self, instants: u64) {
        self.options.persist_delay_max_instants = instants;
        self.trace_event(&[17, instants], || {
            format!("disks: writes take 0..={instants} instants")
        });
    }

    /// How the network treats messages now.
    pub fn network_config(&self) -> NetworkConfig {
        self.network.config()
    }

    /// Crashes `id`: only its storage survives (see the module docs).
    pub fn crash(&mut self, id: NodeId) {
        let Some(up) = self.take_up(id) else {
            return;
        };
        let UpNode {
            raw,
            in_flight,
            before_last_write,
            ..
        } = *up;
        let mut storage = raw.into_storage();
        let disk = storage.mode() == StorageMode::Disk;
        let torn = disk && self.disk_fault_rng.chance(self.options.torn_crash_ppm);
        let mut problem: Option<(CheckerKind, String)> = None;
        if let (true, Some(ready)) = (disk, in_flight) {
            // Power fails in the middle of the write in progress: some of it may reach
            // the disk, and recovery decides what counts.
            self.stats.writes_interrupted += 1;
            storage.arm(DiskFault::PowerLoss {
                torn,
                syncs_before: 0,
            });
            match storage.persist_ready(ready.hard_state, ready.snapshot, &ready.entries) {
                Err(StorageFailure::Stopped(_)) => {}
                Ok(()) => {
                    problem = Some((
                        CheckerKind::Storage,
                        format!("node {id}: power failed during a write, but the write completed"),
                    ))
                }
                Err(error) => {
                    problem = Some((
                        CheckerKind::DriverContract,
                        format!("node {id}: writing the Ready in progress at a crash: {error}"),
                    ))
                }
            }
        }
        if self.options.sim_fault == Some(SimFault::CrashLosesLastWrite) {
            if let Some(before) = before_last_write {
                storage = before;
            }
        }
        let spare = storage.clone();
        let storage = match storage.crash(torn) {
            Ok(recovered) => recovered,
            Err(error) => {
                let how = if torn { "torn" } else { "clean" };
                problem = problem.or(Some((
                    CheckerKind::Storage,
                    format!("node {id}: recovery after a {how} crash failed: {error}"),
                )));
                spare
            }
        };
        let now = self.now;
        if problem.is_none() && disk {
            // What recovery kept must agree with every durable log seen so far.
            if let Err(violation) = self.checkers.on_persist(id, &storage, 0, now) {
                self.set_failure(violation);
            }
        }
        let node = self.nodes.get_mut(&id).expect("known node");
        node.state = NodeState::Down(Box::new(storage));
        node.incarnation += 1;
        node.last_seen = (Role::Follower, 0, NO_NODE);
        node.armed_fault = None;
        self.stats.crashes += 1;
        if torn {
            self.stats.torn_crashes += 1;
        }
        if self.options.collect_events {
            self.events.push(ClusterEvent::Crashed {
                node: id,
                time: now,
            });
        }
        self.trace_event(&[20, id, u64::from(torn)], || {
            if torn {
                format!("node {id}: crashed (torn)")
            } else {
                format!("node {id}: crashed")
            }
        });
        if let Some((checker, message)) = problem {
            self.fail(checker, message);
        }
    }

    /// Restarts crashed node `id` from its storage (unless recovery refused its disk).
    pub fn restart(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        if matches!(node.state, NodeState::Down(_)) && node.recovery_refusal.is_none() {
            self.start(id);
        }
    }

    /// Node `id`'s storage, running or crashed.
    pub fn storage(&self, id: NodeId) -> Option<&NodeStorage> {
        match &self.nodes.get(&id)?.state {
            NodeState::Up(up) => Some(up.raw.storage()),
            NodeState::Down(storage) => Some(storage),
            NodeState::Taken => None,
        }
    }

    /// Makes node `id`'s disk inject `fault` into the node's next write (a `Ready`, a
    /// snapshot or a compaction), which stops the node: it crashes, to be restarted
    /// later. Returns false, doing nothing, unless the node runs on the durable log.
    pub fn arm_disk_fault(&mut self, id: NodeId, fault: DiskFault) -> bool {
        let Some(node) = self.nodes.get_mut(&id) else {
            return false;
        };
        let NodeState::Up(up) = &node.state else {
            return false;
        };
        if up.raw.storage().mode() != StorageMode::Disk {
            return false;
        }
        node.armed_fault = Some(fault);
        self.trace_event(&[24, id], || {
            format!("node {id}: disk set to inject {fault} into the next write")
        });
        true
    }

    /// Flips bit `bit` of byte `offset` of file `path` on crashed node `id`'s disk
    /// ([`concord_storage::SimFs::flip_bit`]). Its restart recovers the disk again, and
    /// must refuse damage it cannot tell from a torn write: the node then stays down
    /// ([`Cluster::recovery_refusal`]).
    pub fn flip_bit(
        &mut self,
        id: NodeId,
        path: &std::path::Path,
        offset: u64,
        bit: u8,
    ) -> Result<(), String> {
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| format!("no node {id}"))?;
        let NodeState::Down(storage) = &node.state else {
            return Err(format!("node {id} is running: crash it first"));
        };
        let fs = storage
            .fs()
            .ok_or_else(|| format!("node {id} keeps its log in memory: there is no disk"))?;
        fs.flip_bit(path, offset, bit)
            .map_err(|error| format!("node {id}: {error}"))?;
        node.disk_damaged = true;
        let path = path.display().to_string();
        self.trace_event(&[25, id, offset, u64::from(bit)], || {
            format!("node {id}: disk damaged: bit {bit} of byte {offset} of {path} flipped")
        });
        Ok(())
    }

    /// Why recovery refused node `id`'s disk, if it did: the node stays down for good.
    pub fn recovery_refusal(&self, id: NodeId) -> Option<&str> {
        self.nodes.get(&id)?.recovery_refusal.as_deref()
    }

    fn start(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let NodeState::Down(storage) = std::mem::replace(&mut node.state, NodeState::Taken) else {
            panic!("node {id} started while not down");
        };
        let mut storage = *storage;
        let incarnation = node.incarnation;
        if std::mem::take(&mut node.disk_damaged) {
            // The disk changed while the node was down: recover from it again.
            let spare = storage.clone();
            storage = match storage.crash(false) {
                Ok(recovered) => recovered,
                Err(StorageFailure::Corrupt(why)) => {
                    node.state = NodeState::Down(Box::new(spare));
                    node.recovery_refusal = Some(why.clone());
                    self.trace_event(&[26, id], || format!("node {id}: refuses to start: {why}"));
                    return;
                }
                Err(error) => {
                    node.state = NodeState::Down(Box::new(spare));
                    return self.fail(
                        CheckerKind::Storage,
                        format!("node {id}: recovering its damaged disk: {error}"),
                    );
                }
            };
        }
        let snapshot = match storage.snapshot(0) {
            Ok(snapshot) => snapshot,
            Err(error) => {
                node.state = NodeState::Down(Box::new(storage));
                return self.fail(
                    CheckerKind::DriverContract,
                    format!("node {id}: reading its snapshot to restart: {error}"),
                );
            }
        };
        // The state machine restarts from the snapshot, so membership does too.
        if let Err(error) = storage.set_conf_state(snapshot.metadata.conf_state.clone()) {
            node.state = NodeState::Down(Box::new(storage));
            return self.fail(
                CheckerKind::DriverContract,
                format!("node {id}: recording its snapshot's membership to restart: {error}"),
            );
        }
        let kv = match Kv::restore(snapshot.metadata.index, &snapshot.data) {
            Ok(kv) => kv,
            Err(error) => {
                node.state = NodeState::Down(Box::new(storage));
                self.fail(
                    CheckerKind::DriverContract,
                    format!("node {id}: restarting: {error}"),
                );
                return;
            }
        };
        let mut config = self.options.config.clone();
        config.id = id;
        config.seed = mix64(self.options.seed ^ mix64(id ^ (incarnation << 32)));
        config.applied = snapshot.metadata.index;
        let spare = storage.clone();
        let raw = match RawNode::new(&config, storage) {
            Ok(raw) => raw,
            Err(error) => {
                node.state = NodeState::Down(Box::new(spare));
                return self.fail(
                    CheckerKind::DriverContract,
                    format!("node {id}: restart from its own storage failed: {error}"),
                );
            }
        };
        node.last_seen = (raw.role(), raw.term(), raw.leader());
        let snapshot_index = snapshot.metadata.index;
        node.state = NodeState::Up(Box::new(UpNode {
            raw,
            kv,
            conf_state: snapshot.metadata.conf_state.clone(),
            in_flight: None,
            pending_reads: Vec::new(),
            before_last_write: None,
            snapshot_index,
        }));
        self.trace_event(&[21, id, incarnation, snapshot_index], || {
            format!(
                "node {id}: started (incarnation {incarnation}, from snapshot at {snapshot_index})"
            )
        });
        self.after_input(id);
    }

    // -------------------------------------------------------------------------------
    // Inputs.

    /// Makes node `id` campaign now.
    pub fn campaign(&mut self, id: NodeId) {
        self.trace_event(&[30, id], || format!("node {id}: told to campaign"));
        self.with_raw(id, |raw| raw.campaign());
    }

    /// Asks node `id` to hand leadership to `target`.
    pub fn transfer_leader(&mut self, id: NodeId, target: NodeId) {
        self.trace_event(&[31, id, target], || {
            format!("node {id}: asked to transfer leadership to {target}")
        });
        self.with_raw(id, |raw| raw.transfer_leader(target));
    }

    /// Proposes `data` on node `id` (6.824 `Start`). A crashed node answers `NotLeader`.
    pub fn propose_on(&mut self, id: NodeId, data: Bytes) -> Result<LogPosition, ProposeError> {
        let words = [32, id, hash_bytes(&data)];
        let result = self
            .with_raw(id, |raw| raw.propose(data))
            .unwrap_or(Err(ProposeError::NotLeader { leader_hint: None }));
        let code = match &result {
            Ok(position) => position.index,
            Err(_) => u64::MAX,
        };
        self.trace.record(
            self.now,
            TraceLevel::Messages,
            &[words[0], words[1], words[2], code],
            || format!("node {id}: propose -> {result:?}"),
        );
        result
    }

    /// Proposes `data` on the current [`Cluster::leader`] (connected), returning the
    /// leader and the position, or `None` if there is no leader or it refused.
    pub fn propose(&mut self, data: Bytes) -> Option<(NodeId, LogPosition)> {
        let leader = self.leader()?;
        self.propose_on(leader, data)
            .ok()
            .map(|position| (leader, position))
    }

    /// Proposes a membership change on node `id`.
    pub fn propose_conf_change(
        &mut self,
        id: NodeId,
        change: &ConfChange,
    ) -> Result<LogPosition, ProposeError> {
        let result = self
            .with_raw(id, |raw| raw.propose_conf_change(change))
            .unwrap_or(Err(ProposeError::NotLeader { leader_hint: None }));
        let code = result
            .as_ref()
            .map(|position| position.index)
            .unwrap_or(u64::MAX);
        self.trace_event(&[33, id, code], || {
            format!("node {id}: propose {change:?} -> {result:?}")
        });
        result
    }

    /// Requests a linearizable read of `key` on node `id`; when it is served the cluster
    /// emits [`ClusterEvent::ReadServed`] with `tag` (tags should be unique).
    pub fn read_index(&mut self, id: NodeId, tag: u64, key: &[u8]) -> Result<(), ProposeError> {
        let context = encode_read_context(tag, key);
        let result = self
            .with_raw(id, |raw| raw.read_index(context))
            .unwrap_or(Err(ProposeError::NotLeader { leader_hint: None }));
        self.trace.record(
            self.now,
            TraceLevel::Messages,
            &[34, id, tag, u64::from(result.is_ok())],
            || format!("node {id}: read_index tag {tag} -> {result:?}"),
        );
        result
    }

    /// Node `id` snapshots its state machine at its applied index and compacts its log
    /// up to `keep_entries` entries before it. Returns true if it took a snapshot (it
    /// does not while a write is in progress or with nothing new applied, nor when a
    /// disk fault stops it).
    pub fn snapshot(&mut self, id: NodeId, keep_entries: u64) -> bool {
        if self.failure.is_some() {
            return false;
        }
        let Some(mut up) = self.take_up(id) else {
            return false;
        };
        let applied = up.kv.applied_index();
        if up.in_flight.is_some() || applied <= up.snapshot_index {
            self.put_up(id, up);
            return false;
        }
        let data = up.kv.encode_snapshot();
        let bytes = data.len();
        let conf_state = up.conf_state.clone();
        let written = self.storage_write(
            id,
            up.raw.storage_mut(),
            || format!("a snapshot at applied index {applied}"),
            |storage| storage.record_snapshot(applied, conf_state, data),
        );
        if !self.after_storage_write(id, up, written) {
            return false;
        }
        let Some(mut up) = self.take_up(id) else {
            return false;
        };
        up.snapshot_index = applied;
        self.stats.snapshots_created += 1;
        let compact_to = applied.saturating_sub(keep_entries);
        let compaction_point = up.raw.storage().first_index().unwrap_or(1) - 1;
        if compact_to > compaction_point {
            let written = self.storage_write(
                id,
                up.raw.storage_mut(),
                || format!("a compaction to {compact_to}"),
                |storage| storage.compact_log(compact_to),
            );
            if !self.after_storage_write(id, up, written) {
                return false;
            }
        } else {
            self.put_up(id, up);
        }
        self.trace_event(&[35, id, applied, compact_to], || {
            format!("node {id}: snapshot at {applied} ({bytes} bytes), compacted to {compact_to}")
        });
        self.after_input(id);
        true
    }

    fn with_raw<R>(
        &mut self,
        id: NodeId,
        input: impl FnOnce(&mut RawNode<NodeStorage>) -> R,
    ) -> Option<R> {
        if self.failure.is_some() {
            return None;
        }
        let Some(NodeState::Up(up)) = self.nodes.get_mut(&id).map(|node| &mut node.state) else {
            return None;
        };
        let result = input(&mut up.raw);
        self.after_input(id);
        Some(result)
    }

    // -------------------------------------------------------------------------------
    // Running.

    /// Runs `ticks` ticks. Stops early, returning the violation, once a check fails.
    pub fn run_ticks(&mut self, ticks: u64) -> Result<(), Violation> {
        for _ in 0..ticks * TICK_INSTANTS {
            self.run_instant();
            if let Some(failure) = &self.failure {
                return Err(failure.clone());
            }
        }
        Ok(())
    }

    /// Runs until `done` holds (checked after every instant) or `ticks_max` ticks pass.
    /// Returns whether `done` held.
    pub fn run_until(
        &mut self,
        ticks_max: u64,
        mut done: impl FnMut(&Cluster) -> bool,
    ) -> Result<bool, Violation> {
        if done(self) {
            return Ok(true);
        }
        for _ in 0..ticks_max * TICK_INSTANTS {
            self.run_instant();
            if let Some(failure) = &self.failure {
                return Err(failure.clone());
            }
            if done(self) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Runs one instant: deliveries due, disk writes due, ticks due.
    pub fn run_instant(&mut self) {
        if self.failure.is_some() {
            return;
        }
        self.now += 1;
        let now = self.now;
        while let Some(message) = self.network.pop_due(now) {
            self.deliver(message);
            if self.failure.is_some() {
                return;
            }
        }
        while let Some((&(at, _), _)) = self.persists.first_key_value() {
            if at > now {
                break;
            }
            let (_, (id, incarnation)) = self.persists.pop_first().expect("peeked");
            self.finish_write(id, incarnation);
            if self.failure.is_some() {
                return;
            }
        }
        let due: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, node)| (now + node.tick_phase).is_multiple_of(TICK_INSTANTS))
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            self.with_raw(id, |raw| raw.tick());
        }
        if now.is_multiple_of(LEADER_CHECK_INTERVAL_TICKS * TICK_INSTANTS) {
            self.check_leaders();
        }
    }

    /// Runs the periodic checks now: every leader holds every committed entry.
    pub fn check_leaders(&mut self) {
        let rafts = self.nodes.values().filter_map(|node| match &node.state {
            NodeState::Up(up) => Some(up.raw.raft()),
            _ => None,
        });
        if let Err(violation) = self.checkers.check_leaders(rafts, self.now) {
            self.set_failure(violation);
        }
    }

    /// Runs every check that looks at whole logs: each durable log against the
    /// log-matching table, and each leader against the committed record. Called at the
    /// end of a run.
    pub fn check_all_logs(&mut self) -> Result<(), Violation> {
        let now = self.now;
        let mut result = Ok(());
        for (&id, node) in &self.nodes {
            if node.recovery_refusal.is_some() {
                // Its disk is damaged and nothing reads it any more.
                continue;
            }
            result = match &node.state {
                NodeState::Up(up) => self.checkers.on_persist(id, up.raw.storage(), 0, now),
                NodeState::Down(storage) => self.checkers.on_persist(id, storage.as_ref(), 0, now),
                NodeState::Taken => Ok(()),
            };
            if result.is_err() {
                break;
            }
        }
        if let Err(violation) = result {
            self.set_failure(violation);
        }
        self.check_leaders();
        match &self.failure {
            Some(failure) => Err(failure.clone()),
            None => Ok(()),
        }
    }

    /// 6.824 `checkOneLeader`: runs up to [`ELECTION_WAIT_ELECTION_TIMEOUTS`] election
    /// timeouts until some connected running node leads, and returns it (the one of
    /// the highest term: [`Cluster::leader`]).
    pub fn check_one_leader(&mut self) -> Result<NodeId, String> {
        let ticks =
            ELECTION_WAIT_ELECTION_TIMEOUTS * u64::from(self.options.config.election_timeout_ticks);
        match self.run_until(ticks, |cluster| cluster.leader().is_some()) {
            Ok(true) => Ok(self.leader().expect("checked")),
            Ok(false) => Err(format!(
                "no leader after {ticks} ticks:\n{}",
                self.describe()
            )),
            Err(violation) => Err(violation.to_string()),
        }
    }

    /// [`Cluster::check_one_leader`] among `ids` only: a node cut off may still think it
    /// leads.
    pub fn check_one_leader_among(&mut self, ids: &[NodeId]) -> Result<NodeId, String> {
        let ticks =
            ELECTION_WAIT_ELECTION_TIMEOUTS * u64::from(self.options.config.election_timeout_ticks);
        match self.run_until(ticks, |cluster| cluster.leader_among(ids).is_some()) {
            Ok(true) => Ok(self.leader_among(ids).expect("checked")),
            Ok(false) => Err(format!(
                "no leader among {ids:?} after {ticks} ticks:\n{}",
                self.describe()
            )),
            Err(violation) => Err(violation.to_string()),
        }
    }

    /// 6.824 `wait`: runs until at least `count` nodes applied `index`, for up to
    /// `ticks_max` ticks. Returns the data there if they did.
    pub fn wait_commit(
        &mut self,
        index: Index,
        count: usize,
        ticks_max: u64,
    ) -> Result<Option<Bytes>, Violation> {
        self.run_until(ticks_max, |cluster| {
            cluster.committed_count(index).0 >= count
        })?;
        let (applied_by, data) = self.committed_count(index);
        Ok(if applied_by >= count { data } else { None })
    }

    /// 6.824 `one`: offers `data` to each connected running node in turn until one
    /// accepts it (as leader) and `expected_nodes` nodes applied it, trying for up to
    /// 10 election-timeout rounds, each waiting 2 election timeouts. With `retry`
    /// false, gives up after the first accepted proposal fails. Returns the index it
    /// was applied at.
    pub fn one(
        &mut self,
        data: Bytes,
        expected_nodes: usize,
        retry: bool,
    ) -> Result<Index, String> {
        let election_timeout = u64::from(self.options.config.election_timeout_ticks);
        for _ in 0..10 {
            if let Some(failure) = &self.failure {
                return Err(failure.to_string());
            }
            let connected: Vec<NodeId> = self
                .node_ids()
                .into_iter()
                .filter(|&id| self.is_connected(id))
                .collect();
            let proposed = connected.into_iter().find_map(|id| {
                let accepted = self.propose_on(id, data.clone()).ok()?;
                Some(accepted)
            });
            let Some(position) = proposed else {
                self.run_ticks(election_timeout)
                    .map_err(|violation| violation.to_string())?;
                continue;
            };
            let applied = self
                .wait_commit(position.index, expected_nodes, 2 * election_timeout)
                .map_err(|violation| violation.to_string())?;
            if applied.as_ref() == Some(&data) {
                return Ok(position.index);
            }
            if !retry {
                return Err(format!(
                    "one({:?}) failed to reach agreement on {expected_nodes} nodes at index {}:\n{}",
                    data,
                    position.index,
                    self.describe()
                ));
            }
        }
        Err(format!(
            "one({data:?}) failed to reach agreement on {expected_nodes} nodes:\n{}",
            self.describe()
        ))
    }

    // -------------------------------------------------------------------------------
    // The driver.

    fn deliver(&mut self, message: Message) {
        let (from, to) = (message.from, message.to);
        let up = self.is_up(to);
        let cut = self.network.is_cut(from, to);
        self.network.record_delivery(up && !cut);
        let words = message_words(40, &message, u64::from(up && !cut));
        self.trace
            .record(self.now, TraceLevel::Messages, &words, || {
                let fate = if !up {
                    "dropped (node down)"
                } else if cut {
                    "dropped (link cut)"
                } else {
                    "delivered"
                };
                format!("net: {fate}: {}", describe_message(&message))
            });
        if cut && message.kind == MessageKind::Append && self.is_up(from) {
            // A transport notices the link is down and tells the sender, which stops
            // pipelining to that follower until it answers again.
            self.with_raw(from, |raw| raw.report_unreachable(to));
        }
        if !up || cut {
            return;
        }
        if let Some(Err(error)) = self.with_raw(to, |raw| raw.step(message)) {
            self.fail(
                CheckerKind::DriverContract,
                format!("node {to} stopped: step failed: {error}"),
            );
        }
    }

    fn send(&mut self, message: Message) {
        let words = message_words(41, &message, 0);
        if !self.nodes.contains_key(&message.to) {
            self.trace
                .record(self.now, TraceLevel::Messages, &words, || {
                    format!(
                        "net: not sent (no such node): {}",
                        describe_message(&message)
                    )
                });
            return;
        }
        let description = self
            .trace
            .shows(TraceLevel::Messages)
            .then(|| describe_message(&message));
        if self.network.in_flight_count() >= MESSAGES_IN_FLIGHT_MAX {
            return self.fail(
                CheckerKind::Runaway,
                format!(
                    "{MESSAGES_IN_FLIGHT_MAX} messages in flight: a message storm (last sent: {})",
                    describe_message(&message)
                ),
            );
        }
        let outcome = self.network.send(self.now, message);
        let code = match outcome {
            SendOutcome::Lost => 0,
            SendOutcome::Queued(at, None) => at,
            SendOutcome::Queued(at, Some(again)) => at ^ (again << 20),
        };
        let mut words = words;
        words[11] = code;
        self.trace
            .record(self.now, TraceLevel::Messages, &words, || {
                let description = description.unwrap_or_default();
                match outcome {
                    SendOutcome::Lost => format!("net: lost: {description}"),
                    SendOutcome::Queued(at, None) => {
                        format!("net: sent (due t={at}): {description}")
                    }
                    SendOutcome::Queued(at, Some(again)) => {
                        format!("net: sent twice (due t={at} and t={again}): {description}")
                    }
                }
            });
    }

    /// After any input to `id`: check it, then run its driver loop.
    fn after_input(&mut self, id: NodeId) {
        self.observe(id);
        self.drive(id);
    }

    fn observe(&mut self, id: NodeId) {
        if self.failure.is_some() {
            return;
        }
        let now = self.now;
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let NodeState::Up(up) = &node.state else {
            return;
        };
        let raft = up.raw.raft();
        if self.options.check_core_invariants {
            raft.check_invariants();
        }
        let seen = (raft.role, raft.term, raft.leader);
        if seen != node.last_seen {
            let (role, term, leader) = seen;
            let (old_role, old_term, _) = node.last_seen;
            node.last_seen = seen;
            let words = [50, id, role_code(role), term, leader];
            self.trace.record(now, TraceLevel::Events, &words, || {
                if role == old_role && term == old_term {
                    format!("node {id}: {role:?} in term {term}, leader now {leader}")
                } else {
                    format!("node {id}: {old_role:?} (term {old_term}) -> {role:?} (term {term}), leader {leader}")
                }
            });
        }
        let NodeState::Up(up) = &node.state else {
            return;
        };
        if let Err(violation) = self.checkers.after_step(up.raw.raft(), now) {
            self.set_failure(violation);
        }
    }

    fn take_up(&mut self, id: NodeId) -> Option<Box<UpNode>> {
        let node = self.nodes.get_mut(&id)?;
        if !matches!(node.state, NodeState::Up(_)) {
            return None;
        }
        match std::mem::replace(&mut node.state, NodeState::Taken) {
            NodeState::Up(up) => Some(up),
            _ => unreachable!(),
        }
    }

    fn put_up(&mut self, id: NodeId, up: Box<UpNode>) {
        self.nodes.get_mut(&id).expect("known node").state = NodeState::Up(up);
    }

    /// Node `id`'s snapshot index (created or installed), if running.
    pub fn snapshot_index(&self, id: NodeId) -> Option<Index> {
        match &self.nodes.get(&id)?.state {
            NodeState::Up(up) => Some(up.snapshot_index),
            _ => None,
        }
    }

    /// How many times node `id` has crashed: work sent to an earlier incarnation is
    /// lost.
    pub fn incarnation(&self, id: NodeId) -> u64 {
        self.nodes
            .get(&id)
            .map(|node| node.incarnation)
            .unwrap_or(0)
    }

    /// The driver loop of node `id`: while it has a Ready and no write in progress,
    /// take it and work through it.
    fn drive(&mut self, id: NodeId) {
        loop {
            if self.failure.is_some() {
                return;
            }
            let Some(mut up) = self.take_up(id) else {
                return;
            };
            if up.in_flight.is_some() || !up.raw.has_ready() {
                self.put_up(id, up);
                return;
            }
            let mut ready = up.raw.ready();
            self.stats.readies += 1;
            let (entry_count, first_entry) = (
                ready.entries.len() as u64,
                ready.entries.first().map(|entry| entry.index).unwrap_or(0),
            );
            let hard_state = ready.hard_state;
            let committed_count = ready.committed_entries.len() as u64;
            let snapshot_index = ready
                .snapshot
                .as_ref()
                .map(|snapshot| snapshot.metadata.index)
                .unwrap_or(0);
            let hard_words = hard_state
                .map(|state| (state.term, state.vote, state.commit))
                .unwrap_or((0, 0, 0));
            self.trace.record(
                self.now,
                TraceLevel::Messages,
                &[60, id, entry_count, first_entry, hard_words.0, hard_words.1, hard_words.2, committed_count, snapshot_index],
                || {
                    format!(
                        "node {id}: ready: {entry_count} entries from {first_entry}, hard state {hard_state:?}, \
                         {committed_count} to apply, snapshot {snapshot_index}"
                    )
                },
            );
            // Step 4 of the contract, first half: these may go before the write.
            for message in std::mem::take(&mut ready.messages) {
                self.send(message);
            }
            if self.options.sim_fault == Some(SimFault::SendBeforePersist) {
                for message in std::mem::take(&mut ready.persisted_messages) {
                    self.send(message);
                }
            }
            let delay = if self.options.persist_delay_max_instants == 0 || !ready.must_persist() {
                0
            } else {
                self.disk_rng
                    .between(0, self.options.persist_delay_max_instants)
            };
            if delay == 0 {
                self.complete_ready(id, up, ready);
                continue;
            }
            up.in_flight = Some(ready);
            let incarnation = self.incarnation(id);
            self.persists
                .insert((self.now + delay, self.persist_sequence), (id, incarnation));
            self.persist_sequence += 1;
            self.put_up(id, up);
            return;
        }
    }

    fn finish_write(&mut self, id: NodeId, incarnation: u64) {
        if self.incarnation(id) != incarnation {
            // The node crashed while writing: the write is lost.
            return;
        }
        let Some(mut up) = self.take_up(id) else {
            return;
        };
        let Some(ready) = up.in_flight.take() else {
            self.put_up(id, up);
            return;
        };
        self.complete_ready(id, up, ready);
        self.drive(id);
    }

    /// Steps 3 to 6 of the driver contract for one Ready: persist, send what waited
    /// for it, apply, serve reads, advance. Puts `up` back.
    fn complete_ready(&mut self, id: NodeId, mut up: Box<UpNode>, mut ready: Ready) {
        let now = self.now;
        // Step 3: persist hard state, snapshot and entries, together.
        let written = self.persist(id, &mut up, &ready);
        if !matches!(written, Ok(true)) {
            self.after_storage_write(id, up, written);
            return;
        }
        // Step 4, second half: what promised durable state.
        for message in std::mem::take(&mut ready.persisted_messages) {
            self.send(message);
        }
        // Step 5: apply.
        if let Some(snapshot) = ready.snapshot.take() {
            let metadata = &snapshot.metadata;
            let kv = match Kv::restore(metadata.index, &snapshot.data) {
                Ok(kv) => kv,
                Err(error) => {
                    self.put_up(id, up);
                    return self.fail(
                        CheckerKind::DriverContract,
                        format!("node {id}: installing snapshot: {error}"),
                    );
                }
            };
            if let Err(violation) =
                self.checkers
                    .on_restore(id, metadata.index, metadata.term, kv.digest(), now)
            {
                self.put_up(id, up);
                return self.set_failure(violation);
            }
            up.kv = kv;
            up.conf_state = metadata.conf_state.clone();
            up.snapshot_index = metadata.index;
            self.stats.snapshots_installed += 1;
            let (index, term) = (metadata.index, metadata.term);
            self.trace_event(&[61, id, index, term], || {
                format!("node {id}: installed snapshot at {index} (term {term})")
            });
        }
        for entry in std::mem::take(&mut ready.committed_entries) {
            if let Err(message) = self.apply_entry(id, &mut up, &entry) {
                self.put_up(id, up);
                return self.fail(CheckerKind::DriverContract, message);
            }
            if self.failure.is_some() {
                self.put_up(id, up);
                return;
            }
        }
        up.pending_reads
            .extend(std::mem::take(&mut ready.read_states));
        self.serve_reads(id, &mut up);
        // Step 6.
        let commit_before = up.raw.raft().log.committed();
        up.raw.advance();
        let raft = up.raw.raft();
        let voted = ready
            .hard_state
            .is_some_and(|hard_state| hard_state.vote != NO_NODE);
        let leader_committed = raft.role == Role::Leader
            && (raft.log.committed() > commit_before
                || ready
                    .hard_state
                    .is_some_and(|hard_state| hard_state.commit > 0));
        self.put_up(id, up);
        self.observe(id);
        let crash_point = voted || leader_committed;
        if crash_point
            && self.failure.is_none()
            && self.crash_point_rng.chance(self.options.crash_point_ppm)
        {
            let what = if voted {
                "persisting a vote"
            } else {
                "committing as leader"
            };
            self.trace_event(&[22, id, u64::from(voted)], || {
                format!("node {id}: crash point after {what}")
            });
            self.crash(id);
        }
    }

    /// Step 3 of the driver contract: makes `ready`'s hard state, snapshot and entries
    /// durable together. See [`Cluster::storage_write`] for what it returns.
    fn persist(&mut self, id: NodeId, up: &mut UpNode, ready: &Ready) -> StorageWrite {
        let now = self.now;
        if !ready.must_persist() {
            return Ok(true);
        }
        if self.options.sim_fault == Some(SimFault::CrashLosesLastWrite) {
            let before = up.raw.storage().fork().map_err(|error| {
                (
                    CheckerKind::Storage,
                    format!("node {id}: copying its storage: {error}"),
                )
            })?;
            up.before_last_write = Some(before);
        }
        let corrupt = self.options.sim_fault == Some(SimFault::CorruptPersistedEntry)
            && id == 1
            && !ready.entries.is_empty()
            && self.disk_rng.chance(200_000);
        let corrupted = corrupt.then(|| {
            let mut entries = ready.entries.clone();
            if let Some(entry) = entries
                .iter_mut()
                .rev()
                .find(|entry| entry.kind == EntryKind::Normal && !entry.data.is_empty())
            {
                let mut data = BytesMut::from(&entry.data[..]);
                let last = data.len() - 1;
                data[last] ^= 0x01;
                entry.data = data.freeze();
            }
            entries
        });
        let entries: &[Entry] = corrupted.as_deref().unwrap_or(&ready.entries);
        let snapshot_index = ready
            .snapshot
            .as_ref()
            .map(|snapshot| snapshot.metadata.index);
        let written = self.storage_write(
            id,
            up.raw.storage_mut(),
            || describe_write(ready),
            |storage| storage.persist_ready(ready.hard_state, ready.snapshot.clone(), entries),
        )?;
        if !written {
            return Ok(false);
        }
        let entries_from = ready.entries.first().map(|entry| entry.index);
        let dirty_from = match (snapshot_index, entries_from) {
            (Some(snapshot), Some(first)) => Some((snapshot + 1).min(first)),
            (Some(snapshot), None) => Some(snapshot + 1),
            (None, first) => first,
        };
        if let Some(from) = dirty_from {
            if let Err(violation) = self.checkers.on_persist(id, up.raw.storage(), from, now) {
                self.set_failure(violation);
            }
        }
        Ok(true)
    }

    /// Runs `write` (described by `what`) on node `id`'s `storage`, with the disk fault
    /// armed for the node or drawn with [`ClusterOptions::disk_fault_ppm`] injected
    /// into it. See [`StorageWrite`].
    fn storage_write(
        &mut self,
        id: NodeId,
        storage: &mut NodeStorage,
        what: impl FnOnce() -> String,
        write: impl FnOnce(&mut NodeStorage) -> Result<(), StorageFailure>,
    ) -> StorageWrite {
        let fault = self.draw_disk_fault(id, storage.mode());
        if let Some(fault) = fault {
            storage.arm(fault);
        }
        match (write(storage), fault) {
            (Ok(()), None) => Ok(true),
            (Err(StorageFailure::Stopped(why)), Some(fault)) => {
                self.stats.disk_faults += 1;
                let code = match fault {
                    DiskFault::PowerLoss { torn, syncs_before } => {
                        u64::from(torn) | u64::from(syncs_before) << 1
                    }
                    DiskFault::SyncFailure => u64::MAX,
                };
                self.trace_event(&[23, id, code], || {
                    format!("node {id}: {fault} while writing {}: {why}; the node stops", what())
                });
                Ok(false)
            }
            (
                Ok(()),
                Some(
                    fault @ DiskFault::PowerLoss {
                        syncs_before: 1.., ..
                    },
                ),
            ) => {
                // The write synced fewer times than the fault waited for.
                storage.disarm_power_loss();
                self.trace_event(&[27, id], || {
                    format!("node {id}: {fault} missed the write of {}", what())
                });
                Ok(true)
            }
            (Ok(()), Some(fault)) => Err((
                CheckerKind::Storage,
                format!(
                    "node {id}: the disk injected {fault} into the write of {}, yet the write succeeded",
                    what()
                ),
            )),
            (Err(error @ StorageFailure::Stopped(_)), None) => Err((
                CheckerKind::Storage,
                format!("node {id}: writing {}: {error} (no fault was injected)", what()),
            )),
            (Err(error), _) => Err((
                CheckerKind::DriverContract,
                format!("node {id}: writing {}: {error}", what()),
            )),
        }
    }

    /// The disk fault to inject into node `id`'s next write, if any: the one armed,
    /// else one drawn.
    fn draw_disk_fault(&mut self, id: NodeId, mode: StorageMode) -> Option<DiskFault> {
        if mode != StorageMode::Disk {
            return None;
        }
        let armed = self
            .nodes
            .get_mut(&id)
            .and_then(|node| node.armed_fault.take());
        if armed.is_some() {
            return armed;
        }
        if !self.disk_fault_rng.chance(self.options.disk_fault_ppm) {
            return None;
        }
        if self.disk_fault_rng.below(3) == 0 {
            return Some(DiskFault::SyncFailure);
        }
        // Mostly at the write's first sync; now and then at a later one, which only
        // writes that start a segment, install a snapshot or delete segments reach.
        let syncs_before = if self.disk_fault_rng.chance(PPM / 4) {
            self.disk_fault_rng.between(1, 3) as u32
        } else {
            0
        };
        Some(DiskFault::PowerLoss {
            torn: self.disk_fault_rng.coin(),
            syncs_before,
        })
    }

    /// Puts `up` back after a storage write, then acts on what the write came to:
    /// returns true if it is durable; crashes the node if a disk fault stopped it;
    /// records the failure otherwise.
    fn after_storage_write(&mut self, id: NodeId, up: Box<UpNode>, written: StorageWrite) -> bool {
        self.put_up(id, up);
        match written {
            Ok(true) => true,
            Ok(false) => {
                self.crash(id);
                false
            }
            Err((checker, message)) => {
                self.fail(checker, message);
                false
            }
        }
    }

    /// Applies one committed entry on `id`. Errors are contract breaches.
    fn apply_entry(&mut self, id: NodeId, up: &mut UpNode, entry: &Entry) -> Result<(), String> {
        let now = self.now;
        if entry.index != up.kv.applied_index() + 1 {
            return Err(format!(
                "node {id} was handed entry {} (term {}) to apply, but its state machine is at {}",
                entry.index,
                entry.term,
                up.kv.applied_index()
            ));
        }
        let mut conf_outcome = 0;
        if entry.kind == EntryKind::ConfChange {
            let change = ConfChange::decode(&entry.data).map_err(|error| {
                format!(
                    "node {id}: entry {} (term {}): {error}",
                    entry.index, entry.term
                )
            })?;
            let result = up.raw.apply_conf_change(&change);
            if self.options.check_core_invariants {
                up.raw.raft().check_invariants();
            }
            conf_outcome = match &result {
                Ok(conf_state) => {
                    up.raw
                        .storage_mut()
                        .set_conf_state(conf_state.clone())
                        .map_err(|error| {
                            format!("node {id}: recording membership {conf_state:?}: {error}")
                        })?;
                    up.conf_state = conf_state.clone();
                    if entry.index > self.latest_conf.0 {
                        self.latest_conf = (entry.index, conf_state.clone());
                        self.stats.conf_changes_applied += 1;
                    }
                    conf_state_hash(conf_state)
                }
                Err(_) => 1,
            };
            let index = entry.index;
            self.trace_event(&[62, id, index, conf_outcome], || match &result {
                Ok(conf_state) => format!(
                    "node {id}: applied membership change {index} {change:?} -> {conf_state:?}"
                ),
                Err(why) => {
                    format!("node {id}: ignored membership change {index} {change:?}: {why}")
                }
            });
        }
        let applied = up.kv.apply(entry, conf_outcome);
        self.stats.entries_applied += 1;
        if let Err(violation) = self.checkers.on_apply(id, entry, up.kv.digest(), now) {
            self.set_failure(violation);
            return Ok(());
        }
        let at = self
            .applied
            .entry(entry.index)
            .or_insert_with(|| AppliedAt {
                term: entry.term,
                data: entry.data.clone(),
                nodes: BTreeSet::new(),
            });
        at.nodes.insert(id);
        if self.options.collect_events {
            self.events.push(ClusterEvent::Applied {
                node: id,
                incarnation: self.incarnation(id),
                time: now,
                index: entry.index,
                term: entry.term,
                applied,
            });
        }
        Ok(())
    }

    fn serve_reads(&mut self, id: NodeId, up: &mut UpNode) {
        let applied = up.kv.applied_index();
        let serve_early = self.options.sim_fault == Some(SimFault::ReadBeforeApply);
        let (ready, waiting): (Vec<ReadState>, Vec<ReadState>) =
            std::mem::take(&mut up.pending_reads)
                .into_iter()
                .partition(|read| serve_early || read.index <= applied);
        up.pending_reads = waiting;
        for read in ready {
            let Some((tag, key)) = decode_read_context(&read.context) else {
                continue;
            };
            let value = up.kv.get(&key);
            let index = read.index;
            self.trace.record(self.now, TraceLevel::Messages, &[63, id, tag, index, applied], || {
                format!("node {id}: served read tag {tag} at read index {index} (applied {applied}): {value:?}")
            });
            if self.options.collect_events {
                self.events.push(ClusterEvent::ReadServed {
                    node: id,
                    incarnation: self.incarnation(id),
                    time: self.now,
                    tag,
                    index,
                    value,
                });
            }
        }
    }

    // -------------------------------------------------------------------------------
    // Failures and tracing.

    fn fail(&mut self, checker: CheckerKind, message: String) {
        let now = self.now;
        self.fail_at(now, checker, message)
    }

    fn fail_at(&mut self, time: Time, checker: CheckerKind, message: String) {
        self.set_failure(Violation {
            checker,
            time,
            message,
        });
    }

    /// Records `violation` as the cluster's failure (the first one wins) and stops.
    pub fn set_failure(&mut self, violation: Violation) {
        if self.failure.is_none() {
            let line = violation.to_string();
            self.trace.record(
                self.now,
                TraceLevel::Events,
                &[99, violation.checker as u64],
                || format!("FAILED {line}"),
            );
            self.failure = Some(violation);
        }
    }

    fn trace_event(&mut self, words: &[u64], describe: impl FnOnce() -> String) {
        self.trace
            .record(self.now, TraceLevel::Events, words, describe);
    }
}

/// What a write to storage came to: `Ok(true)` durable; `Ok(false)` a disk fault
/// injected into it stopped the node's storage, so the node must crash; `Err` the run
/// failed (storage refused the write, or did not behave as the fault said it would).
type StorageWrite = Result<bool, (CheckerKind, String)>;

/// What a `Ready` asks to persist, for messages.
fn describe_write(ready: &Ready) -> String {
    let mut parts = Vec::new();
    if let Some(snapshot) = &ready.snapshot {
        parts.push(format!("snapshot at {}", snapshot.metadata.index));
    }
    if let (Some(first), Some(last)) = (ready.entries.first(), ready.entries.last()) {
        parts.push(format!("entries {}..={}", first.index, last.index));
    }
    if let Some(hard_state) = ready.hard_state {
        parts.push(format!("hard state {hard_state:?}"));
    }
    parts.join(", ")
}

/// Encodes a read's context: the caller's tag, then the key.
fn encode_read_context(tag: u64, key: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(8 + key.len());
    buf.put_u64(tag);
    buf.put_slice(key);
    buf.freeze()
}

fn decode_read_context(context: &Bytes) -> Option<(u64, Bytes)> {
    if context.len() < 8 {
        return None;
    }
    let tag = u64::from_be_bytes(context[..8].try_into().ok()?);
    Some((tag, context.slice(8..)))
}

fn conf_state_hash(conf_state: &ConfState) -> u64 {
    let mut hash = 2;
    for list in [
        &conf_state.voters,
        &conf_state.learners,
        &conf_state.voters_outgoing,
        &conf_state.learners_next,
    ] {
        hash = hash_words(hash, list);
        hash = hash_words(hash, &[u64::MAX]);
    }
    hash_words(hash, &[u64::from(conf_state.auto_leave)])
}

fn role_code(role: Role) -> u64 {
    match role {
        Role::Follower => 0,
        Role::PreCandidate => 1,
        Role::Candidate => 2,
        Role::Leader => 3,
    }
}

fn message_words(tag: u64, message: &Message, extra: u64) -> [u64; 12] {
    [
        tag,
        message.kind as u64,
        message.from,
        message.to,
        message.term,
        message.log_term,
        message.index,
        message.commit,
        message.entries.len() as u64,
        u64::from(message.reject),
        message
            .snapshot
            .as_ref()
            .map(|chunk| chunk.offset + 1)
            .unwrap_or(0),
        extra,
    ]
}

/// One line for a message: kind, route, term, and the fields its kind uses.
pub fn describe_message(message: &Message) -> String {
    let mut text = format!(
        "{:?} {}->{} term {}",
        message.kind, message.from, message.to, message.term
    );
    if message.index != 0 || message.log_term != 0 {
        text.push_str(&format!(
            " index {} log_term {}",
            message.index, message.log_term
        ));
    }
    if let (Some(first), Some(last)) = (message.entries.first(), message.entries.last()) {
        text.push_str(&format!(" entries {}..={}", first.index, last.index));
    }
    if message.commit != 0 {
        text.push_str(&format!(" commit {}", message.commit));
    }
    if message.reject {
        text.push_str(&format!(" REJECT hint {}", message.reject_hint));
    }
    if let Some(chunk) = &message.snapshot {
        text.push_str(&format!(
            " snapshot {}@{} bytes {}+{}/{}",
            chunk.metadata.index,
            chunk.metadata.term,
            chunk.offset,
            chunk.data.len(),
            chunk.total_bytes
        ));
    }
    text
}
