//! The [`Cluster`] harness: simulated concord nodes over a simulated network and
//! disks. Each node runs several raft groups over one log, each group through
//! concord-group's `GroupDriver` and `Applier` — the code the runtime runs — with every
//! checker watching.
//!
//! It is what the randomized runs ([`crate::run`]) are built on, and it is meant for
//! hand-written scenarios too: the MIT 6.824 Raft lab tests port almost line for line.
//! Calls without a group act on [`PRIMARY_GROUP`]; their `_in` forms take one.
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
//! clients with exactly-once requests and linearizable reads
//! ([`Cluster::register_client`], [`Cluster::propose_request`], [`Cluster::read`]),
//! disk faults ([`Cluster::arm_disk_fault`], [`Cluster::flip_bit`]), and
//! [`ClusterOptions`] for several groups, lossy networks, slow and faulty disks, the
//! storage kind, spare node ids for membership changes, and planted faults.
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
//! node ticks (all its groups) at its own phase within them. In one instant the
//! cluster delivers the messages due, completes the disk writes due, then ticks the
//! nodes due.
//!
//! # The driver
//!
//! After every input to a node (a message, a tick, a request) the node runs a turn as
//! the runtime's raft loop does (`driver.rs`): every group with work takes its Ready
//! through its `GroupDriver`; what may leave at once is sent; the durable parts of all
//! groups are written as one batch (group commit), at once or after a simulated disk
//! delay during which the node keeps taking inputs but takes no new Ready; then each
//! group finishes its Ready and what it hands out goes through its `Applier`, which
//! answers the callers.
//!
//! # Crashes
//!
//! A crash keeps only the node's storage ([`crate::storage::NodeDisk`]); state
//! machines, pending requests, and everything else in memory are lost. With memory
//! storage a write in progress is lost. With the durable log (the default) the disk
//! loses power in the middle of it: the crash is torn (with
//! [`ClusterOptions::torn_crash_ppm`]) or clean, keeping a random prefix of the
//! unsynced bytes or none, and the log's own recovery decides what survived; the
//! recovered log is checked against every durable log seen so far at once.
//!
//! A restart rebuilds each group from the storage alone, as the runtime does: the
//! state machine from the latest snapshot (of the kind its header names), raft with
//! `applied` at the snapshot's index and the membership of that snapshot; committed
//! entries after it are applied again.
//!
//! # Disk faults
//!
//! With the durable log, any write the node makes (a turn's batch, a snapshot) may hit
//! a [`DiskFault`], with [`ClusterOptions::disk_fault_ppm`] or when armed by
//! [`Cluster::arm_disk_fault`]: power lost at one of its syncs, usually the first (torn
//! or clean), or a failed fsync. Either way the log stops and so does the node: it
//! crashes and restarts later through recovery, as a real node would. (A power loss
//! waiting for a later sync than the write makes misses it and is disarmed.) A fault
//! that does not stop the write, or storage that stops without a fault, fails the run
//! ([`CheckerKind::Storage`]), as does a recovery that refuses a disk only crashes
//! touched.
//!
//! [`Cluster::flip_bit`] damages a crashed node's disk. Recovery must then refuse to
//! start rather than serve wrong data: the node stays down for good
//! ([`Cluster::recovery_refusal`] says why), as a real node waits for an operator.

mod driver;
mod faults;
mod inputs;
mod running;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use concord_group::{
    Applier, Callers, ClientTableLimits, GroupDriver, StateMachine, StateMachineError,
    StateMachineFactory,
};
use concord_raft::{ConfState, Config, Index, NodeId, RawNode, Role, Term, NO_NODE};
use concord_storage::{GroupId, GroupStore};
use concord_types::{ApiError, ProposeResponse, ReadResponse};

use crate::checkers::{CheckerSet, Checkers, Violation};
use crate::kv::Kv;
use crate::network::{Network, NetworkConfig, Time, TICK_INSTANTS};
use crate::rng::Rng;
use crate::storage::{DiskFault, NodeDisk, StorageMode};
use crate::trace::Trace;
use crate::tree_kv::TreeKv;

pub use crate::checkers::CheckerKind;

/// The group the calls without a group act on.
pub const PRIMARY_GROUP: GroupId = 1;

/// Most messages in flight at once. Far above any healthy run (a few hundred); past it
/// the run is failing to converge, and is stopped as [`CheckerKind::Runaway`].
pub const MESSAGES_IN_FLIGHT_MAX: usize = 20_000;

/// How often, in ticks, every leader is checked to hold every committed entry.
pub const LEADER_CHECK_INTERVAL_TICKS: u64 = 16;

/// Most ticks [`Cluster::check_one_leader`] waits, in election timeouts.
pub const ELECTION_WAIT_ELECTION_TIMEOUTS: u64 = 10;

/// The kind the simulator's groups are founded as.
pub const SIM_KIND: &str = "sim-kv";

/// Deliberate faults in the driver (concord-group's planted bugs) or in the
/// simulator's disk and network, to show the checkers catch them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SimFault {
    /// The driver sends `persisted_messages` before the Ready's writes are durable
    /// (concord-group's `DriverBug::SendPersistedEarly`): a crash before the write
    /// lands loses a vote or entries the node already vouched for.
    SendBeforePersist,
    /// A crash also loses the node's last completed write, as if the disk acknowledged
    /// an fsync it had not done.
    CrashLosesLastWrite,
    /// Node 1's disk flips a byte of a command entry now and then as it writes it (no
    /// checksums).
    CorruptPersistedEntry,
    /// The driver serves a read as soon as its read index is known, without waiting
    /// for the state machine to apply up to it (concord-group's
    /// `DriverBug::ServeReadsBeforeApply`).
    ReadBeforeApply,
    /// The liveness phase leaves every node cut off from every other instead of
    /// healing the network.
    PartitionForever,
    /// The liveness phase heals the network but leaves one voter of the primary
    /// group's latest membership cut off: the others elect a leader and commit, but
    /// that voter never catches up.
    IsolateVoterForever,
    /// The tree machine applies a transaction appending to two keys as an append to
    /// the first key alone, one time in five (by log index): a transaction applied
    /// in part. Only with `--machine tree`.
    HalfTransactions,
}

impl SimFault {
    /// Every fault.
    pub const ALL: [SimFault; 7] = [
        SimFault::SendBeforePersist,
        SimFault::CrashLosesLastWrite,
        SimFault::CorruptPersistedEntry,
        SimFault::ReadBeforeApply,
        SimFault::PartitionForever,
        SimFault::IsolateVoterForever,
        SimFault::HalfTransactions,
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
            SimFault::HalfTransactions => "half-transactions",
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
    /// Nodes `1..=voters` start as the voters of every group.
    pub voters: usize,
    /// Nodes `1..=pool_size` exist; those above `voters` start outside the groups,
    /// waiting to be added. At least `voters`.
    pub pool_size: usize,
    /// Raft groups on every node, ids `1..=groups`, sharing each node's log.
    pub groups: usize,
    /// The raft configuration of every node (`id`, `seed` and `applied` are set per
    /// node and group).
    pub config: Config,
    /// How the network treats messages.
    pub network: NetworkConfig,
    /// Most instants a disk write takes; each write draws from `0..=` this. 0 persists
    /// every turn's batch in the instant it is taken.
    pub persist_delay_max_instants: u64,
    /// Which checkers report.
    pub checkers: CheckerSet,
    /// A deliberate fault, if any.
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
    /// The storage every node keeps its logs in.
    pub storage: StorageMode,
    /// With [`StorageMode::Disk`]: chance, in ppm, that a write to a node's storage (a
    /// turn's batch, a snapshot) hits a [`DiskFault`], which stops the node.
    pub disk_fault_ppm: u32,
    /// With [`StorageMode::Disk`]: chance, in ppm, that a crash is torn (the disk keeps
    /// a random prefix of the unsynced writes, the last one cut short) rather than
    /// clean.
    pub torn_crash_ppm: u32,
    /// Bounds of every group's exactly-once table.
    pub client_table: ClientTableLimits,
    /// The state machine every group runs.
    pub machine: Machine,
    /// A group's proposal (and read) given up after this many ticks without its entry
    /// handed out answers `Timeout`.
    pub request_timeout_ticks: u64,
}

impl ClusterOptions {
    /// `voters` nodes, one group, default raft config, reliable network, instant disks
    /// holding the durable log (half the crashes torn, no other disk faults), every
    /// checker.
    pub fn new(voters: usize, seed: u64) -> ClusterOptions {
        ClusterOptions {
            seed,
            voters,
            pool_size: voters,
            groups: 1,
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
            torn_crash_ppm: crate::rng::PPM / 2,
            client_table: ClientTableLimits::default(),
            machine: Machine::default(),
            request_timeout_ticks: 200,
        }
    }
}

/// How the simulator names the callers waiting on a group: numbers the caller chose.
pub struct SimCallers;

impl Callers for SimCallers {
    type Proposal = u64;
    type Read = u64;
    type Admin = u64;
}

/// An answer a caller got from a group, as the runtime would have delivered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A proposal's outcome (a registration's response is the client id).
    Proposal(Result<ProposeResponse, ApiError>),
    /// A read's answer.
    Read(Result<ReadResponse, ApiError>),
    /// A membership change's outcome.
    Admin(Result<(), ApiError>),
}

/// Something the client oracle needs to hear about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    /// `node`'s group `group` answered the caller `tag`.
    Answered {
        /// The group.
        group: GroupId,
        /// The node.
        node: NodeId,
        /// Its incarnation (bumped by every crash).
        incarnation: u64,
        /// When.
        time: Time,
        /// The caller's tag.
        tag: u64,
        /// The answer.
        answer: Answer,
    },
    /// `node` crashed: everything waiting on it is lost.
    Crashed {
        /// The node.
        node: NodeId,
        /// When.
        time: Time,
    },
}

/// The state machine every group runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Machine {
    /// The simulator's own key-value map ([`Kv`]).
    #[default]
    Kv,
    /// The coordination service's namespace serving the same operations
    /// ([`TreeKv`]).
    Tree,
}

impl Machine {
    /// Every machine.
    pub const ALL: [Machine; 2] = [Machine::Kv, Machine::Tree];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Machine::Kv => "kv",
            Machine::Tree => "tree",
        }
    }

    /// The machine named `name`.
    pub fn from_name(name: &str) -> Option<Machine> {
        Machine::ALL
            .into_iter()
            .find(|machine| machine.name() == name)
    }
}

/// Makes every group's state machine, of [`SIM_KIND`].
struct KvFactory {
    machine: Machine,
    /// [`SimFault::HalfTransactions`].
    half_transactions: bool,
    limits: ClientTableLimits,
}

impl StateMachineFactory for KvFactory {
    fn create(
        &self,
        _group: GroupId,
        spec: &concord_group::GroupSpec,
    ) -> Result<Box<dyn StateMachine>, StateMachineError> {
        // A node added to a group starts empty, of no kind, until a snapshot comes.
        if !spec.kind.is_empty() && spec.kind != SIM_KIND {
            return Err(StateMachineError(format!(
                "unknown group kind {:?}",
                spec.kind
            )));
        }
        Ok(match self.machine {
            Machine::Kv => Box::new(Kv::new(self.limits)),
            Machine::Tree => Box::new(TreeKv::new(self.limits, self.half_transactions)),
        })
    }
}

/// One running group on a node: its driver and its state machine's applier.
struct UpGroup {
    driver: GroupDriver<GroupStore, SimCallers>,
    applier: Applier<SimCallers>,
    /// Index of the latest snapshot in storage (created, installed or started from).
    snapshot_index: Index,
    /// The state machine's digest after the last entry applied.
    digest: u64,
    /// Last (role, term, leader) traced.
    last_seen: (Role, Term, NodeId),
}

/// The writes of a turn, being made durable, by group.
type TurnWrites = Vec<(GroupId, concord_group::DurableWrite)>;

/// A running node's volatile half: its groups and the driver's bookkeeping.
struct UpNode {
    disk: NodeDisk,
    groups: BTreeMap<GroupId, UpGroup>,
    /// The turn's writes being made durable, if the disk is slow.
    in_flight: Option<TurnWrites>,
    /// The storage as it was before the last write ([`SimFault::CrashLosesLastWrite`]):
    /// a fork of the disk, or copies of the groups' memory logs.
    before_last_write: Option<BeforeWrite>,
}

enum BeforeWrite {
    Disk(NodeDisk),
    Mem(BTreeMap<GroupId, GroupStore>),
}

enum NodeState {
    Up(Box<UpNode>),
    Down(Box<NodeDisk>),
    /// Momentarily out of the map while the driver works on it.
    Taken,
}

struct SimNode {
    incarnation: u64,
    /// The instant within each tick at which this node ticks.
    tick_phase: u64,
    state: NodeState,
    /// Groups this node left for good (removed and shut down by the run): not loaded
    /// when it starts.
    retired: BTreeSet<GroupId>,
    /// A fault the disk injects into the node's next write ([`Cluster::arm_disk_fault`]).
    armed_fault: Option<DiskFault>,
    /// Bits were flipped on the disk since the node crashed: recover again at restart.
    disk_damaged: bool,
    /// Recovery refused the node's disk: it never restarts.
    recovery_refusal: Option<String>,
}

/// Who applied one index of a group, and what.
#[derive(Clone, Debug)]
struct AppliedAt {
    term: Term,
    /// A command's bytes (without the entry's framing), or the entry's data.
    data: Bytes,
    nodes: BTreeSet<NodeId>,
}

/// What the cluster keeps per group: its checkers and what was applied where.
struct GroupRecord {
    checkers: Checkers,
    applied: BTreeMap<Index, AppliedAt>,
    /// The membership of the highest-index change applied anywhere.
    latest_conf: (Index, ConfState),
}

/// A node's state in one group, as the harness shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// The node.
    pub id: NodeId,
    /// The group.
    pub group: GroupId,
    /// Running (not crashed) with the group loaded.
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
    /// Durable writes made (one per turn with something durable: group commit).
    pub writes: u64,
    /// Writes that carried more than one group's Ready.
    pub group_commits: u64,
    /// Entries applied, over all nodes and groups.
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

/// Simulated concord nodes running raft groups. See the module docs.
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
    groups: BTreeMap<GroupId, GroupRecord>,
    factory: Arc<dyn StateMachineFactory>,
    trace: Trace,
    failure: Option<Violation>,
    events: Vec<ClusterEvent>,
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
        assert!(options.groups >= 1, "a cluster runs at least one group");
        assert!(
            options.pool_size >= options.voters,
            "pool_size must be at least voters"
        );
        let seed = options.seed;
        let bootstrap = ConfState::with_voters(1..=options.voters as NodeId);
        let group_ids: Vec<GroupId> = (1..=options.groups as GroupId).collect();
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
            groups: group_ids
                .iter()
                .map(|&group| {
                    (
                        group,
                        GroupRecord {
                            checkers: Checkers::new(options.checkers),
                            applied: BTreeMap::new(),
                            latest_conf: (0, bootstrap.clone()),
                        },
                    )
                })
                .collect(),
            factory: Arc::new(KvFactory {
                machine: options.machine,
                half_transactions: options.sim_fault == Some(SimFault::HalfTransactions),
                limits: options.client_table,
            }),
            trace,
            failure: None,
            events: Vec::new(),
            stats: ClusterStats::default(),
            options,
        };
        let mut disk_seed_rng = Rng::stream(seed, "disk-seeds");
        let mode = cluster.options.storage;
        for id in 1..=cluster.options.pool_size as NodeId {
            let disk_seed = disk_seed_rng.next_u64();
            let founded: Vec<(GroupId, ConfState)> = if id <= cluster.options.voters as NodeId {
                group_ids
                    .iter()
                    .map(|&group| (group, bootstrap.clone()))
                    .collect()
            } else {
                Vec::new()
            };
            let disk = NodeDisk::new(mode, disk_seed, &founded, &[]).unwrap_or_else(|error| {
                panic!("node {id}: creating {mode} storage on a blank disk: {error}")
            });
            cluster.nodes.insert(
                id,
                SimNode {
                    incarnation: 0,
                    tick_phase: phase_rng.below(TICK_INSTANTS),
                    state: NodeState::Down(Box::new(disk)),
                    retired: BTreeSet::new(),
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

    /// Every group id, in order.
    pub fn group_ids(&self) -> Vec<GroupId> {
        self.groups.keys().copied().collect()
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

    /// The primary group's checkers' state.
    pub fn checkers(&self) -> &Checkers {
        &self.groups[&PRIMARY_GROUP].checkers
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

    fn up_group(&self, group: GroupId, id: NodeId) -> Option<&UpGroup> {
        match &self.nodes.get(&id)?.state {
            NodeState::Up(up) => up.groups.get(&group),
            _ => None,
        }
    }

    /// The primary group's raft node on `id`, if running.
    pub fn raw_node(&self, id: NodeId) -> Option<&RawNode<GroupStore>> {
        self.raw_node_in(PRIMARY_GROUP, id)
    }

    /// Group `group`'s raft node on `id`, if running.
    pub fn raw_node_in(&self, group: GroupId, id: NodeId) -> Option<&RawNode<GroupStore>> {
        self.up_group(group, id).map(|up| up.driver.raw())
    }

    /// Node `id`'s state in the primary group.
    pub fn view(&self, id: NodeId) -> Option<NodeView> {
        self.view_in(PRIMARY_GROUP, id)
    }

    /// Node `id`'s state in `group`.
    pub fn view_in(&self, group: GroupId, id: NodeId) -> Option<NodeView> {
        let node = self.nodes.get(&id)?;
        match &node.state {
            NodeState::Up(up) => match up.groups.get(&group) {
                Some(running) => {
                    let status = running.driver.status();
                    Some(NodeView {
                        id,
                        group,
                        up: true,
                        role: status.role,
                        term: status.term,
                        leader: status.leader,
                        commit: status.commit,
                        applied: running.applier.applied(),
                        last_index: status.last_index,
                        conf_state: status.conf_state,
                        snapshot_received_bytes: status
                            .incoming_snapshot
                            .map(|incoming| incoming.received_bytes),
                    })
                }
                None => Some(down_view(id, group, &up.disk)),
            },
            NodeState::Down(disk) => Some(down_view(id, group, disk)),
            NodeState::Taken => None,
        }
    }

    /// Every node's state in every group, one line each.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        let groups = self.group_ids();
        for &group in &groups {
            if groups.len() > 1 {
                text.push_str(&format!("  group {group}:\n"));
            }
            for id in self.node_ids() {
                if let Some(view) = self.view_in(group, id) {
                    text.push_str(&format!("  {view}\n"));
                }
            }
        }
        text
    }

    /// Node `id`'s current term in the primary group (durable term when crashed).
    pub fn term(&self, id: NodeId) -> Option<Term> {
        self.view(id).map(|view| view.term)
    }

    /// True unless `id` was cut off by [`Cluster::disconnect`] (or left out of a
    /// partition) and not connected since: the lab's `connected[id]`.
    pub fn is_connected(&self, id: NodeId) -> bool {
        self.nodes.contains_key(&id) && !self.disconnected.contains(&id)
    }

    /// Running nodes that think they lead `group`, with their terms, highest term
    /// first, connected or not (a disconnected node may lead a term long gone).
    pub fn leaders_in(&self, group: GroupId) -> Vec<(NodeId, Term)> {
        let mut leaders: Vec<(NodeId, Term)> = self
            .nodes
            .keys()
            .filter_map(|&id| {
                let raw = self.raw_node_in(group, id)?;
                (raw.role() == Role::Leader).then(|| (id, raw.term()))
            })
            .collect();
        leaders.sort_by_key(|&(id, term)| (std::cmp::Reverse(term), id));
        leaders
    }

    /// [`Cluster::leaders_in`] the primary group.
    pub fn leaders(&self) -> Vec<(NodeId, Term)> {
        self.leaders_in(PRIMARY_GROUP)
    }

    /// The connected running leader of the primary group of the highest term, if any
    /// (the lab's `checkOneLeader` looks only at connected servers).
    pub fn leader(&self) -> Option<NodeId> {
        self.leader_in(PRIMARY_GROUP)
    }

    /// The connected running leader of `group` of the highest term, if any.
    pub fn leader_in(&self, group: GroupId) -> Option<NodeId> {
        self.leaders_in(group)
            .into_iter()
            .find(|&(id, _)| self.is_connected(id))
            .map(|(id, _)| id)
    }

    /// The running leader of the primary group of the highest term among `ids`, if any
    /// (6.824 tests that cut a node off ask who leads among the rest).
    pub fn leader_among(&self, ids: &[NodeId]) -> Option<NodeId> {
        self.leaders()
            .into_iter()
            .find(|(id, _)| ids.contains(id))
            .map(|(id, _)| id)
    }

    /// Node `id`'s primary group state machine's applied index.
    pub fn applied_index(&self, id: NodeId) -> Option<Index> {
        self.applied_index_in(PRIMARY_GROUP, id)
    }

    /// Node `id`'s applied index in `group`.
    pub fn applied_index_in(&self, group: GroupId, id: NodeId) -> Option<Index> {
        self.up_group(group, id).map(|up| up.applier.applied())
    }

    /// The value of `key` in node `id`'s primary group state machine.
    pub fn kv_get(&self, id: NodeId, key: &[u8]) -> Option<Bytes> {
        self.kv_get_in(PRIMARY_GROUP, id, key)
    }

    /// The value of `key` in node `id`'s `group` state machine (`None` also when the
    /// node does not run the group).
    pub fn kv_get_in(&self, group: GroupId, id: NodeId, key: &[u8]) -> Option<Bytes> {
        let up = self.up_group(group, id)?;
        let answer = up
            .applier
            .state_machine()
            .query(crate::kv::get_query(key))
            .ok()?;
        match crate::kv::decode_response(&answer)? {
            crate::history::Response::Value(value) => value,
            _ => None,
        }
    }

    /// The membership of the latest change applied anywhere in the primary group, with
    /// its index (index 0: the bootstrap membership).
    pub fn latest_conf_state(&self) -> (Index, ConfState) {
        self.latest_conf_state_in(PRIMARY_GROUP)
    }

    /// [`Cluster::latest_conf_state`] of `group`.
    pub fn latest_conf_state_in(&self, group: GroupId) -> (Index, ConfState) {
        self.groups[&group].latest_conf.clone()
    }

    /// 6.824 `nCommitted`: how many nodes have applied the primary group's entry at
    /// `index` (in any incarnation), and its data (a command's bytes). State machine
    /// safety guarantees they agree.
    pub fn committed_count(&self, index: Index) -> (usize, Option<Bytes>) {
        match self.groups[&PRIMARY_GROUP].applied.get(&index) {
            Some(at) => (at.nodes.len(), Some(at.data.clone())),
            None => (0, None),
        }
    }

    /// The term of the primary group's entry applied at `index`, if any node applied it.
    pub fn applied_term(&self, index: Index) -> Option<Term> {
        self.applied_term_in(PRIMARY_GROUP, index)
    }

    /// The term of `group`'s entry applied at `index`, if any node applied it.
    pub fn applied_term_in(&self, group: GroupId, index: Index) -> Option<Term> {
        self.groups[&group].applied.get(&index).map(|at| at.term)
    }

    /// Events since the last call (only with [`ClusterOptions::collect_events`]).
    pub fn take_events(&mut self) -> Vec<ClusterEvent> {
        std::mem::take(&mut self.events)
    }

    /// Node `id`'s primary group snapshot index (created or installed), if running.
    pub fn snapshot_index(&self, id: NodeId) -> Option<Index> {
        self.snapshot_index_in(PRIMARY_GROUP, id)
    }

    /// Node `id`'s snapshot index in `group`, if running.
    pub fn snapshot_index_in(&self, group: GroupId, id: NodeId) -> Option<Index> {
        self.up_group(group, id).map(|up| up.snapshot_index)
    }

    /// How many times node `id` has crashed: work sent to an earlier incarnation is
    /// lost.
    pub fn incarnation(&self, id: NodeId) -> u64 {
        self.nodes
            .get(&id)
            .map(|node| node.incarnation)
            .unwrap_or(0)
    }

    /// Node `id`'s storage, running or crashed.
    pub fn storage(&self, id: NodeId) -> Option<&NodeDisk> {
        match &self.nodes.get(&id)?.state {
            NodeState::Up(up) => Some(&up.disk),
            NodeState::Down(disk) => Some(disk),
            NodeState::Taken => None,
        }
    }

    /// Why recovery refused node `id`'s disk, if it did: the node stays down for good.
    pub fn recovery_refusal(&self, id: NodeId) -> Option<&str> {
        self.nodes.get(&id)?.recovery_refusal.as_deref()
    }
}

/// A node's state in a group it does not run (crashed, or the group retired).
fn down_view(id: NodeId, group: GroupId, disk: &NodeDisk) -> NodeView {
    let hard_state = disk.hard_state(group);
    let store = disk.group_view(group);
    NodeView {
        id,
        group,
        up: false,
        role: Role::Follower,
        term: hard_state.term,
        leader: NO_NODE,
        commit: hard_state.commit,
        applied: 0,
        last_index: store
            .as_ref()
            .and_then(|store| concord_raft::Storage::last_index(store).ok())
            .unwrap_or(0),
        conf_state: store
            .and_then(|store| concord_raft::Storage::initial_state(&store).ok())
            .map(|state| state.conf_state)
            .unwrap_or_default(),
        snapshot_received_bytes: None,
    }
}
