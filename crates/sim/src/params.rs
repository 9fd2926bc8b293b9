//! Every parameter of a randomized run, drawn from its seed.
//!
//! One `u64` seed decides the cluster size, the raft configuration, the network's
//! loss, duplication and delays, how often partitions, crashes, disk faults, membership
//! changes, leader transfers and snapshots happen, and the client load. Many parameters
//! have a "none" choice (no loss, no crashes, ...) so that some runs isolate one kind of
//! fault and others pile them all up. The storage kind is not drawn: it is the run's
//! choice ([`StorageMode::Disk`] unless told otherwise), and the disk faults apply to
//! the durable log only.

use std::fmt;

use concord_group::ClientTableLimits;
use concord_raft::{Config, PlantedBug, ReadOnlyOption};

use crate::checkers::CheckerSet;
use crate::cluster::{ClusterOptions, Machine, SimFault};
use crate::network::{NetworkConfig, TICK_INSTANTS};
use crate::rng::{Rng, PPM};
use crate::storage::StorageMode;

/// Share of operations on the pair of keys written only together, in ppm, in runs of
/// the tree machine.
pub const PAIR_PPM: u32 = 150_000;

/// Shortest safety phase drawn, in ticks.
pub const SAFETY_TICKS_MIN: u64 = 300;
/// Longest safety phase drawn, in ticks.
pub const SAFETY_TICKS_MAX: u64 = 1500;
/// Most nodes in a group at the start.
pub const CLUSTER_SIZE_MAX: usize = 7;
/// Most spare node ids beyond the initial voters, for membership changes.
pub const SPARE_NODES_MAX: usize = 2;

/// The parameters of one run. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// The seed everything is drawn from.
    pub seed: u64,
    /// Voters at the start (ids `1..=cluster_size`).
    pub cluster_size: usize,
    /// Node ids `1..=pool_size` exist; the rest can be added by membership changes.
    pub pool_size: usize,
    /// Length of the safety phase (faults on), in ticks.
    pub safety_ticks: u64,
    /// Raft groups on every node, sharing each node's log (group commit across them).
    pub groups: usize,

    /// Raft: least election timeout, in ticks.
    pub election_timeout_ticks: u32,
    /// Raft: heartbeat interval, in ticks.
    pub heartbeat_interval_ticks: u32,
    /// Raft: pre-vote.
    pub pre_vote: bool,
    /// Raft: check-quorum.
    pub check_quorum: bool,
    /// Raft: how reads are confirmed.
    pub read_only: ReadOnlyOption,
    /// Raft: most entry bytes per append.
    pub append_bytes_max: u64,
    /// Raft: most appends in flight per follower.
    pub inflight_messages_max: usize,
    /// Raft: most entry bytes in flight per follower (0: no limit).
    pub inflight_bytes_max: u64,
    /// Raft: most uncommitted payload bytes on a leader (0: no limit).
    pub uncommitted_bytes_max: u64,
    /// Raft: most snapshot bytes per chunk.
    pub snapshot_chunk_bytes_max: u64,
    /// Raft: most committed entry bytes per Ready.
    pub apply_batch_bytes_max: u64,

    /// Network loss, duplication and delays during the safety phase.
    pub network: NetworkConfig,
    /// Most instants a disk write takes.
    pub persist_delay_max_instants: u64,
    /// The storage every node keeps its log in.
    pub storage: StorageMode,
    /// The state machine every group runs (not drawn: the run's choice).
    pub machine: Machine,
    /// Durable log: chance that a write hits a disk fault (power loss, torn or clean,
    /// or a failed fsync), stopping the node until it restarts, in ppm.
    pub disk_fault_ppm: u32,
    /// Durable log: chance that a crash is torn, in ppm.
    pub torn_crash_ppm: u32,

    /// Chance per tick that the partition changes, in ppm.
    pub partition_change_ppm: u32,
    /// Partitions may cut links one way only.
    pub one_way_partitions: bool,
    /// Chance per tick that a running node crashes, in ppm.
    pub crash_ppm: u32,
    /// Most ticks a crashed node stays down.
    pub down_ticks_max: u64,
    /// Chance of crashing at a crash point (after persisting a vote, or after a
    /// leader's commit advanced), in ppm.
    pub crash_point_ppm: u32,
    /// Chance per tick that the leader is asked for a membership change, in ppm.
    pub membership_change_ppm: u32,
    /// Chance per tick that the leader is asked to transfer leadership, in ppm.
    pub leader_transfer_ppm: u32,
    /// Chance per tick that a random node is told to campaign, in ppm.
    pub campaign_ppm: u32,
    /// A node snapshots once it applied this many entries past its last snapshot
    /// (0: never).
    pub snapshot_interval_entries: u64,
    /// Most entries kept in the log behind a snapshot when compacting.
    pub snapshot_keep_entries_max: u64,

    /// Number of clients, each with one operation in flight.
    pub clients: usize,
    /// Number of keys they work on.
    pub keys: usize,
    /// Share of operations that are reads, in ppm.
    pub read_ppm: u32,
    /// Share of reads sent to a random node rather than the believed leader, in ppm.
    pub follower_read_ppm: u32,
    /// Share of operations on the pair of keys written only together (see
    /// `ClientSettings::pair_ppm`), in ppm. Not drawn: [`PAIR_PPM`] with the tree
    /// machine, 0 with the key-value map (whose runs stay as they were).
    pub pair_ppm: u32,
    /// Most ticks a client waits between operations.
    pub client_think_ticks_max: u64,
    /// Ticks a client waits on one attempt before retrying elsewhere.
    pub client_attempt_timeout_ticks: u64,
    /// Ticks after which a client gives up on an operation (its outcome is unknown).
    pub client_timeout_ticks: u64,
    /// Most clients a group's exactly-once table keeps (fewer than the clients evicts
    /// them now and then).
    pub table_clients_max: u32,

    /// A bug planted in the core.
    pub planted_bug: Option<PlantedBug>,
    /// A fault planted in the simulator's driver.
    pub sim_fault: Option<SimFault>,
    /// Which checkers report.
    pub checkers: CheckerSet,
}

impl Params {
    /// Draws every parameter from `seed`.
    pub fn draw(seed: u64) -> Params {
        let mut rng = Rng::stream(seed, "params");
        let rng = &mut rng;
        let cluster_size = *rng
            .pick(&[1, 2, 3, 3, 3, 4, 5, 5, 5, 6, 7])
            .expect("non-empty");
        debug_assert!(cluster_size <= CLUSTER_SIZE_MAX);
        let pool_size = cluster_size + rng.between(0, SPARE_NODES_MAX as u64) as usize;
        let safety_ticks = rng.between(SAFETY_TICKS_MIN, SAFETY_TICKS_MAX);

        let election_timeout_ticks = rng.between(4, 20) as u32;
        let heartbeat_interval_ticks =
            rng.between(1, u64::from((election_timeout_ticks / 3).max(1))) as u32;
        let pre_vote = rng.coin();
        let check_quorum = rng.coin();
        let read_only = if check_quorum && rng.coin() {
            ReadOnlyOption::LeaseBased
        } else {
            ReadOnlyOption::Safe
        };
        let append_bytes_max = *rng.pick(&[1, 64, 256, 1024, 1 << 20]).expect("non-empty");
        let inflight_messages_max = *rng.pick(&[1, 2, 4, 256]).expect("non-empty");
        let inflight_bytes_max = if rng.coin() {
            0
        } else {
            append_bytes_max * rng.between(1, 8)
        };
        let uncommitted_bytes_max = if rng.chance(300_000) {
            rng.between(16, 4096)
        } else {
            0
        };
        let snapshot_chunk_bytes_max = *rng.pick(&[7, 64, 512, 1 << 20]).expect("non-empty");
        let apply_batch_bytes_max = *rng.pick(&[1, 256, 1 << 24]).expect("non-empty");

        let delay_min_instants = rng.between(1, 4);
        let election_timeout_instants = u64::from(election_timeout_ticks) * TICK_INSTANTS;
        let loss_ppm = *rng
            .pick(&[0, 0, 10_000, 50_000, 200_000])
            .expect("non-empty");
        let duplicate_ppm = *rng.pick(&[0, 0, 10_000, 50_000]).expect("non-empty");
        let delay_max_instants = delay_min_instants + *rng.pick(&[0, 4, 8, 16]).expect("non-empty");
        let network = NetworkConfig {
            loss_ppm,
            duplicate_ppm,
            delay_min_instants,
            delay_max_instants,
            slow_ppm: *rng.pick(&[0, 10_000, 50_000]).expect("non-empty"),
            slow_delay_max_instants: rng
                .between(election_timeout_instants / 2, 4 * election_timeout_instants)
                .max(delay_max_instants),
        };
        let persist_delay_max_instants = *rng.pick(&[0, 0, 4, 16, 40]).expect("non-empty");

        let partition_change_ppm = *rng.pick(&[0, 2_000, 10_000, 30_000]).expect("non-empty");
        let one_way_partitions = rng.coin();
        let crash_ppm = *rng.pick(&[0, 1_000, 5_000, 15_000]).expect("non-empty");
        let down_ticks_max = rng.between(5, 100);
        let crash_point_ppm = *rng.pick(&[0, 0, 20_000, 100_000]).expect("non-empty");
        let membership_change_ppm = if pool_size > 1 {
            *rng.pick(&[0, 0, 3_000, 10_000]).expect("non-empty")
        } else {
            0
        };
        let leader_transfer_ppm = *rng.pick(&[0, 2_000, 8_000]).expect("non-empty");
        let campaign_ppm = *rng.pick(&[0, 0, 2_000]).expect("non-empty");
        let snapshot_interval_entries = *rng.pick(&[0, 5, 20, 100]).expect("non-empty");
        let snapshot_keep_entries_max = *rng.pick(&[0, 3, 20]).expect("non-empty");

        let clients = rng.between(1, 5) as usize;
        let keys = rng.between(1, 4) as usize;
        let read_ppm = rng.between(100_000, 500_000) as u32;
        let follower_read_ppm = *rng.pick(&[0, 200_000, 500_000]).expect("non-empty");
        let client_think_ticks_max = rng.between(0, 10);
        let election_timeout = u64::from(election_timeout_ticks);
        let client_attempt_timeout_ticks = election_timeout * rng.between(2, 4);
        let client_timeout_ticks = election_timeout * rng.between(6, 20);
        // Drawn last, so that every earlier parameter of a seed stays what it was
        // before disk faults existed.
        let disk_fault_ppm = *rng.pick(&[0, 0, 500, 2_000, 5_000]).expect("non-empty");
        let torn_crash_ppm = *rng.pick(&[0, PPM / 2, PPM]).expect("non-empty");
        // Drawn after the disk faults, for the same reason.
        let groups = *rng.pick(&[1, 1, 2, 3]).expect("non-empty");
        let table_clients_max = *rng.pick(&[3, 8, 10_000]).expect("non-empty");

        Params {
            seed,
            cluster_size,
            pool_size,
            safety_ticks,
            groups,
            election_timeout_ticks,
            heartbeat_interval_ticks,
            pre_vote,
            check_quorum,
            read_only,
            append_bytes_max,
            inflight_messages_max,
            inflight_bytes_max,
            uncommitted_bytes_max,
            snapshot_chunk_bytes_max,
            apply_batch_bytes_max,
            network,
            persist_delay_max_instants,
            storage: StorageMode::default(),
            machine: Machine::default(),
            disk_fault_ppm,
            torn_crash_ppm,
            partition_change_ppm,
            one_way_partitions,
            crash_ppm,
            down_ticks_max,
            crash_point_ppm,
            membership_change_ppm,
            leader_transfer_ppm,
            campaign_ppm,
            snapshot_interval_entries,
            snapshot_keep_entries_max,
            clients,
            keys,
            read_ppm,
            follower_read_ppm,
            pair_ppm: 0,
            client_think_ticks_max,
            client_attempt_timeout_ticks,
            client_timeout_ticks,
            table_clients_max,
            planted_bug: None,
            sim_fault: None,
            checkers: CheckerSet::all(),
        }
    }

    /// The raft configuration every node starts from.
    pub fn raft_config(&self) -> Config {
        Config {
            election_timeout_ticks: self.election_timeout_ticks,
            heartbeat_interval_ticks: self.heartbeat_interval_ticks,
            append_bytes_max: self.append_bytes_max,
            inflight_messages_max: self.inflight_messages_max,
            inflight_bytes_max: self.inflight_bytes_max,
            uncommitted_bytes_max: self.uncommitted_bytes_max,
            snapshot_chunk_bytes_max: self.snapshot_chunk_bytes_max,
            apply_batch_bytes_max: self.apply_batch_bytes_max,
            pre_vote: self.pre_vote,
            check_quorum: self.check_quorum,
            read_only: self.read_only,
            planted_bug: self.planted_bug,
            ..Config::default()
        }
    }

    /// The cluster these parameters describe.
    pub fn cluster_options(&self) -> ClusterOptions {
        ClusterOptions {
            seed: self.seed,
            voters: self.cluster_size,
            pool_size: self.pool_size,
            groups: self.groups,
            config: self.raft_config(),
            network: self.network,
            persist_delay_max_instants: self.persist_delay_max_instants,
            checkers: self.checkers,
            sim_fault: self.sim_fault,
            check_core_invariants: true,
            collect_events: true,
            crash_point_ppm: self.crash_point_ppm,
            storage: self.storage,
            machine: self.machine,
            disk_fault_ppm: self.disk_fault_ppm,
            torn_crash_ppm: self.torn_crash_ppm,
            client_table: ClientTableLimits {
                clients_max: self.table_clients_max,
                unanswered_per_client_max: ClientTableLimits::default().unanswered_per_client_max,
            },
            // A client's attempt is never answered by the group's own timeout first.
            request_timeout_ticks: self.client_timeout_ticks,
        }
    }
}

/// Formats a ppm chance as a percentage.
struct Percent(u32);

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2}%", f64::from(self.0) * 100.0 / f64::from(PPM))
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {}", self.seed)?;
        writeln!(
            f,
            "  cluster: {} voters, node ids 1..={}, {} group(s), safety phase {} ticks ({} instants a tick)",
            self.cluster_size, self.pool_size, self.groups, self.safety_ticks, TICK_INSTANTS
        )?;
        writeln!(
            f,
            "  raft: election timeout {} ticks, heartbeat {} ticks, pre_vote {}, check_quorum {}, read_only {:?}",
            self.election_timeout_ticks,
            self.heartbeat_interval_ticks,
            self.pre_vote,
            self.check_quorum,
            self.read_only
        )?;
        writeln!(
            f,
            "  raft limits: append {} B, inflight {} msgs / {} B, uncommitted {} B, snapshot chunk {} B, apply batch {} B",
            self.append_bytes_max,
            self.inflight_messages_max,
            self.inflight_bytes_max,
            self.uncommitted_bytes_max,
            self.snapshot_chunk_bytes_max,
            self.apply_batch_bytes_max
        )?;
        writeln!(f, "  network: {}", self.network)?;
        if self.machine != Machine::Kv {
            writeln!(
                f,
                "  state machine: {}; {} of operations on a pair of keys written together",
                self.machine.name(),
                Percent(self.pair_ppm)
            )?;
        }
        match self.storage {
            StorageMode::Disk => writeln!(
                f,
                "  storage: disk (concord-storage on a simulated disk), writes take 0..={} instants, \
                 disk faults {} of writes, torn crashes {}",
                self.persist_delay_max_instants,
                Percent(self.disk_fault_ppm),
                Percent(self.torn_crash_ppm)
            )?,
            StorageMode::Mem => writeln!(
                f,
                "  storage: mem (in-memory MemStorage), writes take 0..={} instants",
                self.persist_delay_max_instants
            )?,
        }
        writeln!(
            f,
            "  faults per tick: partition change {} (one-way {}), crash {} (down up to {} ticks), \
             membership change {}, leader transfer {}, campaign {}; crash points {}",
            Percent(self.partition_change_ppm),
            self.one_way_partitions,
            Percent(self.crash_ppm),
            self.down_ticks_max,
            Percent(self.membership_change_ppm),
            Percent(self.leader_transfer_ppm),
            Percent(self.campaign_ppm),
            Percent(self.crash_point_ppm)
        )?;
        writeln!(
            f,
            "  snapshots: every {} applied entries (0: never), keeping up to {} entries",
            self.snapshot_interval_entries, self.snapshot_keep_entries_max
        )?;
        writeln!(
            f,
            "  clients: {} per group on {} keys, reads {} (on followers {}), think up to {} ticks, attempt timeout {} ticks, give up after {} ticks; exactly-once table of {} clients",
            self.clients,
            self.keys,
            Percent(self.read_ppm),
            Percent(self.follower_read_ppm),
            self.client_think_ticks_max,
            self.client_attempt_timeout_ticks,
            self.client_timeout_ticks,
            self.table_clients_max
        )?;
        write!(
            f,
            "  planted: core bug {:?}, simulator fault {:?}",
            self.planted_bug,
            self.sim_fault.map(SimFault::name)
        )?;
        if self.checkers != CheckerSet::all() {
            write!(f, "\n  checkers: {:?}", self.checkers)?;
        }
        Ok(())
    }
}

/// The name used on the command line for `bug`.
pub fn planted_bug_name(bug: PlantedBug) -> &'static str {
    match bug {
        PlantedBug::CommitOldTermByCount => "commit-old-term-by-count",
        PlantedBug::VoteWithoutLogCheck => "vote-without-log-check",
        PlantedBug::LeaseReadWithoutCheckQuorum => "lease-read-without-check-quorum",
        PlantedBug::ForgetVote => "forget-vote",
    }
}

/// Every planted core bug.
pub const PLANTED_BUGS: [PlantedBug; 4] = [
    PlantedBug::CommitOldTermByCount,
    PlantedBug::VoteWithoutLogCheck,
    PlantedBug::LeaseReadWithoutCheckQuorum,
    PlantedBug::ForgetVote,
];

/// The planted bug named `name` (kebab-case or the Rust variant name).
pub fn planted_bug_from_name(name: &str) -> Option<PlantedBug> {
    PLANTED_BUGS
        .into_iter()
        .find(|&bug| planted_bug_name(bug) == name || format!("{bug:?}") == name)
}
