//! One randomized run from one seed: draw the [`Params`], run the safety phase with
//! faults on, then the liveness phase with faults healed, then check everything.
//!
//! 1. **Safety phase** (`safety_ticks`): clients run; the [`FaultScheduler`] partitions,
//!    crashes and restarts nodes, changes membership, transfers leadership, snapshots.
//!    Every checker runs as the cluster goes.
//! 2. **Liveness phase**: the network becomes reliable and whole, disks stop failing
//!    and writes take at most an eighth of an election timeout, every node runs, and nodes removed from
//!    the group are shut down once every voter has applied their removal (a member
//!    added back is restarted). Within [`LIVENESS_ELECTION_TIMEOUTS`] election
//!    timeouts, a leader must accept a new write, and then every voter of the latest
//!    membership must apply it. A voter far behind may take long to catch up when the
//!    run's limits allow one small append or snapshot chunk per round trip, so catching
//!    up is judged by progress: the phase fails ([`CheckerKind::Liveness`]) when no
//!    lagging voter receives, stores or applies anything for
//!    [`LIVENESS_ELECTION_TIMEOUTS`] election timeouts, or when the whole phase passes
//!    [`LIVENESS_ELECTION_TIMEOUTS_MAX`] election timeouts (up to
//!    [`LIVENESS_SNAPSHOT_EXTENSION`] times that while a voter keeps receiving a
//!    snapshot: a namespace's snapshot, history included, at 7 bytes a round trip).
//! 3. **Drain**: no new client operations; those in flight get up to the client
//!    timeout to finish.
//! 4. **Final checks**: every durable log against the log-matching table, every leader
//!    against the committed record, and the client history for linearizability.
//!
//! A panic anywhere (the core's own assertions and invariant checks included) is caught
//! and reported as a [`CheckerKind::Panic`] failure of the run.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use bytes::Bytes;
use concord_raft::{NodeId, PlantedBug, Role};
use concord_storage::GroupId;

use crate::checkers::{CheckerKind, CheckerSet, Violation};
use crate::client::{ClientOracle, ClientSettings, ClientStats};
use crate::cluster::{Cluster, ClusterStats, Machine, SimFault, PRIMARY_GROUP};
use crate::faults::FaultScheduler;
use crate::linearizability::{self, CheckError};
use crate::network::NetworkStats;
use crate::params::Params;
use crate::rng::Rng;
use crate::storage::StorageMode;
use crate::trace::{Trace, TraceLevel, TraceSink};

/// The liveness bound: after healing, a leader must accept a write within this many
/// (minimum) election timeouts, and voters catching up to it must never go this long
/// without progress.
pub const LIVENESS_ELECTION_TIMEOUTS: u64 = 50;

/// The longest the liveness phase may take, in election timeouts, however steadily its
/// lagging voters catch up.
pub const LIVENESS_ELECTION_TIMEOUTS_MAX: u64 = 1000;

/// How far past [`LIVENESS_ELECTION_TIMEOUTS_MAX`] the phase may run while a lagging
/// voter keeps receiving snapshot bytes (a large snapshot, such as a namespace with
/// its history, at a few bytes a round trip), as a multiple of it.
pub const LIVENESS_SNAPSHOT_EXTENSION: u64 = 10;

/// What to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The seed.
    pub seed: u64,
    /// Overrides the drawn safety phase length, in ticks.
    pub safety_ticks: Option<u64>,
    /// Plants a bug in the core.
    pub planted_bug: Option<PlantedBug>,
    /// Plants a fault in the simulator's driver.
    pub sim_fault: Option<SimFault>,
    /// Which checkers report.
    pub checkers: CheckerSet,
    /// The storage the nodes keep their logs in.
    pub storage: StorageMode,
    /// The state machine every group runs.
    pub machine: Machine,
    /// How much to trace.
    pub trace_level: TraceLevel,
    /// Print the trace on standard output (else keep it in the report).
    pub trace_to_stdout: bool,
    /// Changes the drawn parameters before the run (tests use it to force a setting).
    pub tweak: Option<fn(&mut Params)>,
}

impl RunOptions {
    /// A quiet run of `seed` with drawn parameters, every checker, and the durable log.
    pub fn new(seed: u64) -> RunOptions {
        RunOptions {
            seed,
            safety_ticks: None,
            planted_bug: None,
            sim_fault: None,
            checkers: CheckerSet::all(),
            storage: StorageMode::default(),
            machine: Machine::default(),
            trace_level: TraceLevel::Quiet,
            trace_to_stdout: false,
            tweak: None,
        }
    }

    /// The parameters this run uses.
    pub fn params(&self) -> Params {
        let mut params = Params::draw(self.seed);
        if let Some(ticks) = self.safety_ticks {
            params.safety_ticks = ticks;
        }
        params.planted_bug = self.planted_bug;
        params.sim_fault = self.sim_fault;
        params.checkers = self.checkers;
        params.storage = self.storage;
        params.machine = self.machine;
        params.pair_ppm = match self.machine {
            Machine::Kv => 0,
            Machine::Tree => crate::params::PAIR_PPM,
        };
        if let Some(tweak) = self.tweak {
            tweak(&mut params);
        }
        params
    }
}

/// What a run did and found.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The parameters used.
    pub params: Params,
    /// The first violation, if any.
    pub failure: Option<Violation>,
    /// The linearizability check gave up on some key (not a failure).
    pub linearizability_undecided: Option<String>,
    /// Hash of every traced event: equal for two runs of one seed.
    pub trace_hash: u64,
    /// Events traced.
    pub trace_events: u64,
    /// Ticks simulated.
    pub ticks: u64,
    /// Ticks the liveness phase took to converge (if it got there).
    pub liveness_ticks: Option<u64>,
    /// Client counts.
    pub clients: ClientStats,
    /// Operations given to the linearizability checker.
    pub operations_checked: u64,
    /// Cluster counts.
    pub cluster: ClusterStats,
    /// Network counts.
    pub network: NetworkStats,
    /// The trace lines, when not printed.
    pub trace_lines: Vec<String>,
}

impl RunReport {
    /// True when no check failed.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

/// Runs `options.seed` and reports. Never panics: a panic is a failure of the run.
pub fn run(options: &RunOptions) -> RunReport {
    let params = options.params();
    let sink = if options.trace_to_stdout {
        TraceSink::Stdout
    } else {
        TraceSink::Buffer(Vec::new())
    };
    let mut trace = Trace::new(options.trace_level, sink);
    trace.note(format!("concord-sim {params}"));
    let mut state = RunState {
        report: RunReport {
            params: params.clone(),
            failure: None,
            linearizability_undecided: None,
            trace_hash: 0,
            trace_events: 0,
            ticks: 0,
            liveness_ticks: None,
            clients: ClientStats::default(),
            operations_checked: 0,
            cluster: ClusterStats::default(),
            network: NetworkStats::default(),
            trace_lines: Vec::new(),
        },
        cluster: None,
    };
    install_panic_hook();
    CAPTURING.with(|capturing| *capturing.borrow_mut() = Some(String::new()));
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| run_phases(&params, trace, &mut state)));
    let panic_message = CAPTURING
        .with(|capturing| capturing.borrow_mut().take())
        .unwrap_or_default();
    let mut report = state.report;
    if let Some(cluster) = &state.cluster {
        report.trace_hash = cluster.trace().hash();
        report.trace_events = cluster.trace().event_count();
        report.ticks = cluster.ticks();
        report.cluster = cluster.stats();
        report.network = cluster.network_stats();
        report.trace_lines = cluster.trace().lines().to_vec();
    }
    if outcome.is_err() {
        let time = state.cluster.as_ref().map(Cluster::now).unwrap_or(0);
        let message = if panic_message.is_empty() {
            "panic".to_string()
        } else {
            panic_message
        };
        if let Some(cluster) = &state.cluster {
            report.trace_hash = cluster.trace().hash();
        }
        report.failure = Some(Violation {
            checker: CheckerKind::Panic,
            time,
            message,
        });
        if options.trace_to_stdout {
            if let Some(failure) = &report.failure {
                use std::io::Write as _;
                let _ = writeln!(std::io::stdout().lock(), "FAILED {failure}");
            }
        }
    }
    report
}

struct RunState {
    report: RunReport,
    cluster: Option<Cluster>,
}

/// Every group's clients, fed the cluster's events.
struct Oracles {
    oracles: Vec<ClientOracle>,
}

impl Oracles {
    fn new(params: &Params, cluster: &Cluster) -> Oracles {
        let oracles = cluster
            .group_ids()
            .into_iter()
            .map(|group| {
                let stream = if group == PRIMARY_GROUP {
                    "clients".to_string()
                } else {
                    format!("clients of group {group}")
                };
                ClientOracle::new(
                    group,
                    ClientSettings::from_params(params),
                    Rng::stream(params.seed, &stream),
                )
            })
            .collect();
        Oracles { oracles }
    }

    fn on_events(&mut self, cluster: &mut Cluster) {
        for event in cluster.take_events() {
            for oracle in &mut self.oracles {
                oracle.on_event(cluster.trace_mut(), &event);
            }
        }
    }

    fn tick(&mut self, cluster: &mut Cluster) {
        for oracle in &mut self.oracles {
            oracle.tick(cluster);
        }
    }

    fn stop_new_operations(&mut self) {
        for oracle in &mut self.oracles {
            oracle.stop_new_operations();
        }
    }

    fn has_operations_in_flight(&self) -> bool {
        self.oracles
            .iter()
            .any(ClientOracle::has_operations_in_flight)
    }

    fn stats(&self) -> ClientStats {
        let mut total = ClientStats::default();
        for oracle in &self.oracles {
            let stats = oracle.stats();
            total.invoked += stats.invoked;
            total.completed += stats.completed;
            total.unknown += stats.unknown;
            total.attempts += stats.attempts;
            total.refused += stats.refused;
            total.registrations += stats.registrations;
            total.retried_writes += stats.retried_writes;
        }
        total
    }
}

fn run_phases(params: &Params, trace: Trace, state: &mut RunState) {
    state.cluster = Some(Cluster::with_options(params.cluster_options(), trace));
    let cluster = state.cluster.as_mut().expect("just set");
    let mut faults = FaultScheduler::new(params, Rng::stream(params.seed, "faults"));
    let mut oracles = Oracles::new(params, cluster);
    let report = &mut state.report;
    let result = run_to_end(params, cluster, &mut faults, &mut oracles, report);
    report.clients = oracles.stats();
    if let Err(violation) = result {
        if cluster.failure().is_none() {
            cluster.set_failure(violation.clone());
        }
        report.failure = Some(violation);
        return;
    }
    if params.checkers.atomicity {
        if let Err(violation) = check_pair_atomicity(cluster) {
            cluster.set_failure(violation.clone());
            report.failure = Some(violation);
            return;
        }
    }
    // Linearizability of everything each group's clients saw.
    for oracle in &oracles.oracles {
        report.operations_checked += oracle
            .history()
            .operations()
            .iter()
            .filter(|operation| {
                !operation.op.is_read()
                    || matches!(operation.outcome, crate::history::Outcome::Completed { .. })
            })
            .count() as u64;
    }
    if !params.checkers.linearizability {
        return;
    }
    for oracle in &oracles.oracles {
        match linearizability::check(oracle.history()) {
            Ok(()) => {}
            Err(CheckError::Inconclusive(inconclusive)) => {
                report.linearizability_undecided =
                    Some(format!("group {}: {inconclusive}", oracle.group()));
            }
            Err(CheckError::Violation(violation)) => {
                let failure = Violation {
                    checker: CheckerKind::Linearizability,
                    time: cluster.now(),
                    message: format!(
                        "group {}: {violation}\nfull history:\n{}",
                        oracle.group(),
                        oracle.history()
                    ),
                };
                cluster.set_failure(failure.clone());
                report.failure = Some(failure);
                return;
            }
        }
    }
}

/// One group's liveness write: where it went, and how far catching up to it has come.
struct LivenessProbe {
    group: GroupId,
    proposal: Option<(NodeId, u64, concord_raft::LogPosition)>,
    /// Each voter's best progress towards the write at this index, and when any
    /// voter last made some.
    catch_up: (u64, CatchUp),
    /// While no leader accepts the write (one refuses new proposals until the
    /// entries it has are committed): each voter's best progress towards the
    /// leader's last entry, which is what must commit before it accepts again; kept
    /// per leader, whose last index only moves up while it leads.
    backlog: (NodeId, CatchUp),
    progress_at: u64,
    /// When a lagging voter last received more of a snapshot.
    snapshot_progress_at: Option<u64>,
    done: bool,
}

fn run_to_end(
    params: &Params,
    cluster: &mut Cluster,
    faults: &mut FaultScheduler,
    oracles: &mut Oracles,
    report: &mut RunReport,
) -> Result<(), Violation> {
    // 1. Safety phase.
    for _ in 0..params.safety_ticks {
        cluster.run_ticks(1)?;
        oracles.on_events(cluster);
        faults.tick(cluster);
        oracles.tick(cluster);
    }
    // 2. Liveness phase.
    let start = cluster.ticks();
    let now = cluster.now();
    cluster
        .trace_mut()
        .record(now, TraceLevel::Events, &[90], || {
            "=== liveness phase: faults healed ===".to_string()
        });
    faults.heal_all(cluster);
    if params.sim_fault == Some(SimFault::PartitionForever) {
        for id in cluster.node_ids() {
            cluster.disconnect(id);
        }
    }
    if params.sim_fault == Some(SimFault::IsolateVoterForever) {
        let (_, conf) = cluster.latest_conf_state();
        if let Some(&voter) = conf.voters.iter().max() {
            cluster.disconnect(voter);
        }
    }
    let bound_ticks = LIVENESS_ELECTION_TIMEOUTS * u64::from(params.election_timeout_ticks);
    let cap_ticks = LIVENESS_ELECTION_TIMEOUTS_MAX * u64::from(params.election_timeout_ticks);
    let data = Bytes::from(format!("liveness check of seed {}", params.seed));
    let mut probes: Vec<LivenessProbe> = cluster
        .group_ids()
        .into_iter()
        .map(|group| LivenessProbe {
            group,
            proposal: None,
            catch_up: (0, CatchUp::default()),
            backlog: (0, CatchUp::default()),
            progress_at: start,
            snapshot_progress_at: None,
            done: false,
        })
        .collect();
    loop {
        for probe in probes.iter_mut().filter(|probe| !probe.done) {
            let group = probe.group;
            if let Some((node, incarnation, position)) = probe.proposal {
                match cluster.applied_term_in(group, position.index) {
                    Some(term) if term == position.term => {
                        if voters_applied(cluster, group, position.index) {
                            probe.done = true;
                            continue;
                        }
                    }
                    // Another entry took the index: the write is lost.
                    Some(_) => probe.proposal = None,
                    None => {
                        // Not applied anywhere yet. If the node that took it crashed or
                        // no longer leads the term it was proposed in, it may never be:
                        // a deposed leader's longer log can be cut back for good.
                        let still_leads = cluster.incarnation(node) == incarnation
                            && cluster.view_in(group, node).is_some_and(|view| {
                                view.up && view.role == Role::Leader && view.term == position.term
                            });
                        if !still_leads {
                            probe.proposal = None;
                        }
                    }
                }
            }
            if probe.proposal.is_none() {
                if let Some(leader) = cluster.leader_in(group) {
                    match cluster.propose_on_in(group, leader, data.clone()) {
                        Ok(position) => {
                            probe.proposal = Some((leader, cluster.incarnation(leader), position));
                        }
                        // Refused (backpressure: too much uncommitted): the voters
                        // catching up to the leader's log is progress towards
                        // accepting it.
                        Err(_) => {
                            if probe.backlog.0 != leader {
                                probe.backlog = (leader, CatchUp::default());
                            }
                            let last = cluster
                                .view_in(group, leader)
                                .map_or(0, |view| view.last_index);
                            if probe.backlog.1.advanced(cluster, group, last) {
                                probe.progress_at = cluster.ticks();
                            }
                        }
                    }
                }
            }
            if let Some((_, _, position)) = probe.proposal {
                if probe.catch_up.0 != position.index {
                    // A new write (a leader accepted it): progress is measured towards
                    // it from here.
                    probe.catch_up = (position.index, CatchUp::default());
                    probe.catch_up.1.advanced(cluster, group, position.index);
                    probe.progress_at = cluster.ticks();
                } else if probe.catch_up.1.advanced(cluster, group, position.index) {
                    probe.progress_at = cluster.ticks();
                    if probe.catch_up.1.by_snapshot {
                        probe.snapshot_progress_at = Some(cluster.ticks());
                    }
                }
            }
        }
        if probes.iter().all(|probe| probe.done) {
            break;
        }
        for probe in probes.iter().filter(|probe| !probe.done) {
            let stalled = cluster.ticks() - probe.progress_at >= bound_ticks;
            // Past the cap, a snapshot still arriving steadily may finish (up to the
            // extension); anything else ends the phase.
            let receiving_snapshot = probe
                .snapshot_progress_at
                .is_some_and(|at| cluster.ticks() - at < bound_ticks);
            let elapsed = cluster.ticks() - start;
            let too_long = (elapsed >= cap_ticks && !receiving_snapshot)
                || elapsed >= cap_ticks * LIVENESS_SNAPSHOT_EXTENSION;
            if !stalled && !too_long {
                continue;
            }
            let group = probe.group;
            let (_, conf) = cluster.latest_conf_state_in(group);
            let what = match probe.proposal {
                None => format!(
                    "no leader of group {group} accepted a write within {bound_ticks} ticks \
                     ({LIVENESS_ELECTION_TIMEOUTS} election timeouts)"
                ),
                Some((node, _, position)) if stalled => format!(
                    "the write proposed to group {group} on node {node} at index {} (term {}) \
                     was not applied by every voter, and no voter lacking it made progress for \
                     {bound_ticks} ticks ({LIVENESS_ELECTION_TIMEOUTS} election timeouts)",
                    position.index, position.term
                ),
                Some((node, _, position)) => format!(
                    "the write proposed to group {group} on node {node} at index {} (term {}) \
                     was not applied by every voter within {cap_ticks} ticks \
                     ({LIVENESS_ELECTION_TIMEOUTS_MAX} election timeouts)",
                    position.index, position.term
                ),
            };
            return Err(Violation {
                checker: CheckerKind::Liveness,
                time: cluster.now(),
                message: format!(
                    "{what} after healing; latest membership {conf:?}; nodes:\n{}",
                    cluster.describe()
                ),
            });
        }
        cluster.run_ticks(1)?;
        oracles.on_events(cluster);
        oracles.tick(cluster);
        faults.retire_removed(cluster);
    }
    report.liveness_ticks = Some(cluster.ticks() - start);
    let now = cluster.now();
    cluster
        .trace_mut()
        .record(now, TraceLevel::Events, &[91], || {
            "=== liveness reached ===".to_string()
        });
    // 3. Drain.
    oracles.stop_new_operations();
    let drain_start = cluster.ticks();
    while oracles.has_operations_in_flight()
        && cluster.ticks() - drain_start <= params.client_timeout_ticks
    {
        cluster.run_ticks(1)?;
        oracles.on_events(cluster);
        oracles.tick(cluster);
    }
    // 4. Whole-log checks.
    cluster.check_all_logs()
}

/// How far each voter of the latest membership has come towards applying the
/// liveness write, kept per voter so that progress is judged voter by voter: a voter
/// leaving the membership, or a snapshot stream starting over, does not hide the
/// progress the others make.
#[derive(Clone, Debug, Default)]
struct CatchUp {
    /// Per voter: its best (entries stored and applied up to the write, bytes of the
    /// snapshot being received at that level); `None` once it applied the write.
    best: BTreeMap<NodeId, Option<(u64, u64)>>,
    /// The last progress seen was only more snapshot bytes at the same level.
    by_snapshot: bool,
}

impl CatchUp {
    /// Looks at every voter of `group`'s latest membership and answers whether any
    /// made progress towards applying `index` since the last look: it applied it, or
    /// stored or applied more up to it, or received more of a snapshot at the same
    /// level.
    fn advanced(&mut self, cluster: &Cluster, group: GroupId, index: u64) -> bool {
        let (_, conf) = cluster.latest_conf_state_in(group);
        let mut advanced = false;
        let mut by_level = false;
        for &id in conf.voters.iter().chain(&conf.voters_outgoing) {
            let Some(view) = cluster.view_in(group, id) else {
                continue;
            };
            if !view.up {
                continue;
            }
            let now = if view.applied >= index {
                None
            } else {
                let level = view.applied.min(index) + view.last_index.min(index);
                Some((level, view.snapshot_received_bytes.unwrap_or(0)))
            };
            match self.best.get(&id).copied() {
                // First look at this voter: where it stands is the baseline.
                None => {
                    self.best.insert(id, now);
                }
                Some(best) => {
                    let better = match (best, now) {
                        (None, _) => false,
                        (Some(_), None) => {
                            by_level = true;
                            true
                        }
                        (Some((level, bytes)), Some((now_level, now_bytes))) => {
                            by_level |= now_level > level;
                            now_level > level || (now_level == level && now_bytes > bytes)
                        }
                    };
                    // A snapshot transfer started over (a new leader sends it again
                    // from byte 0): its bytes are measured from the new start.
                    let restarted = matches!(
                        (best, now),
                        (Some((level, bytes)), Some((now_level, now_bytes)))
                            if now_level == level && now_bytes < bytes
                    );
                    if better {
                        self.best.insert(id, now);
                        advanced = true;
                    } else if restarted {
                        self.best.insert(id, now);
                    }
                }
            }
        }
        self.by_snapshot = advanced && !by_level;
        advanced
    }
}

/// Atomicity of multi-key transactions: the pair of keys only ever written together
/// (each write appending the same bytes to both in one transaction) must hold the
/// same value on every running node of every group. Linearizability checks each key
/// alone, where a transaction applied to one key and not the other, with its outcome
/// unknown to its client, looks fine.
fn check_pair_atomicity(cluster: &Cluster) -> Result<(), Violation> {
    for group in cluster.group_ids() {
        for id in cluster.node_ids() {
            let [first, second] =
                crate::client::PAIR_KEYS.map(|key| cluster.kv_get_in(group, id, key));
            if first != second {
                let show =
                    |value: &Option<Bytes>| crate::history::ShowValue(value.as_ref()).to_string();
                return Err(Violation {
                    checker: CheckerKind::Atomicity,
                    time: cluster.now(),
                    message: format!(
                        "node {id} group {group}: pair0 is {} but pair1 is {}: a transaction \
                         appending to both applied to one only",
                        show(&first),
                        show(&second)
                    ),
                });
            }
        }
    }
    Ok(())
}

/// True when every voter of `group`'s latest membership has applied `index`.
fn voters_applied(cluster: &Cluster, group: GroupId, index: u64) -> bool {
    let (_, conf) = cluster.latest_conf_state_in(group);
    conf.voters.iter().chain(&conf.voters_outgoing).all(|&id| {
        cluster
            .applied_index_in(group, id)
            .is_some_and(|applied| applied >= index)
    })
}

thread_local! {
    /// While a run is in progress on this thread: the message of the panic caught.
    static CAPTURING: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once per process) a panic hook that, on a thread running [`run`], keeps
/// the panic message for the report instead of printing it; elsewhere it defers to the
/// previous hook.
fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let captured = CAPTURING.with(|capturing| {
                let mut capturing = capturing.borrow_mut();
                match capturing.as_mut() {
                    Some(message) => {
                        let payload = info
                            .payload()
                            .downcast_ref::<&str>()
                            .map(|text| text.to_string())
                            .or_else(|| info.payload().downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "non-string panic payload".to_string());
                        let location = info
                            .location()
                            .map(|location| format!("{}:{}", location.file(), location.line()))
                            .unwrap_or_default();
                        *message = format!("panicked at {location}: {payload}");
                        true
                    }
                    None => false,
                }
            });
            if !captured {
                previous(info);
            }
        }));
    });
}
