//! The invariant checkers, one file per property of the Raft paper's Figure 3 (plus
//! committed entries never being lost), and the glue that runs them as the simulation
//! goes. Linearizability of client histories is in [`crate::linearizability`]; liveness
//! is checked by the run itself ([`crate::run`]).
//!
//! The simulator calls [`Checkers::after_step`] after every input to a node,
//! [`Checkers::on_persist`] after every write to a node's storage,
//! [`Checkers::on_apply`] / [`Checkers::on_restore`] for every entry applied and every
//! snapshot installed, and [`Checkers::check_leaders`] at intervals. The first
//! violation stops the run.
//!
//! A checker that never fails proves nothing: the tests switch on planted bugs in the
//! core (`PlantedBug`) and faults in the simulator's own driver (`SimFault`) and show
//! each checker catching the one it is meant to catch. [`CheckerSet`] switches checkers
//! off one by one so a test can show a later checker catching what an earlier one
//! would have caught first.

pub mod committed_never_lost;
pub mod election_safety;
pub mod leader_completeness;
pub mod log_matching;
pub mod state_machine_safety;

use std::fmt;

use concord_raft::log::RaftLog;
use concord_raft::raft::Raft;
use concord_raft::{Entry, Index, NodeId, Role, Storage, Term};

use crate::network::Time;
use crate::rng::hash_bytes;
use committed_never_lost::CommittedRecord;
use election_safety::ElectionSafety;
use log_matching::LogMatching;
use state_machine_safety::StateMachineSafety;

/// Which check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckerKind {
    /// At most one leader per term.
    ElectionSafety,
    /// Same (index, term) means same entry and same prefix.
    LogMatching,
    /// A new leader holds every entry committed before its term.
    LeaderCompleteness,
    /// No two nodes apply different entries at one index.
    StateMachineSafety,
    /// Committed entries stay in the leader's log and are what nodes apply.
    CommittedNeverLost,
    /// The client history has a linearization.
    Linearizability,
    /// The healed cluster elects a leader and commits within the bound.
    Liveness,
    /// A panic: one of the core's own assertions or invariants failed (or, if the
    /// location says so, the simulator's).
    Panic,
    /// The core broke the driver contract, or storage refused a write it was asked to
    /// make (applying out of order, a malformed entry, a snapshot older than the log).
    DriverContract,
    /// The simulation exceeded a bound on its own work (a message storm, say): the run
    /// would not finish.
    Runaway,
    /// A transaction applied in part: two keys that are only ever written together
    /// (one transaction appending the same bytes to both) hold different values on
    /// some node.
    Atomicity,
    /// The durable log misbehaved on its own: recovery refused a disk that only
    /// crashes, power loss and failed fsyncs touched, storage stopped with no fault
    /// injected, or a write survived the fault injected into it.
    Storage,
}

impl CheckerKind {
    /// Every kind, in report order.
    pub const ALL: [CheckerKind; 12] = [
        CheckerKind::ElectionSafety,
        CheckerKind::LogMatching,
        CheckerKind::LeaderCompleteness,
        CheckerKind::StateMachineSafety,
        CheckerKind::CommittedNeverLost,
        CheckerKind::Linearizability,
        CheckerKind::Atomicity,
        CheckerKind::Liveness,
        CheckerKind::Panic,
        CheckerKind::DriverContract,
        CheckerKind::Runaway,
        CheckerKind::Storage,
    ];

    /// The kebab-case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            CheckerKind::ElectionSafety => "election-safety",
            CheckerKind::LogMatching => "log-matching",
            CheckerKind::LeaderCompleteness => "leader-completeness",
            CheckerKind::StateMachineSafety => "state-machine-safety",
            CheckerKind::CommittedNeverLost => "committed-never-lost",
            CheckerKind::Linearizability => "linearizability",
            CheckerKind::Atomicity => "atomicity",
            CheckerKind::Liveness => "liveness",
            CheckerKind::Panic => "panic",
            CheckerKind::DriverContract => "driver-contract",
            CheckerKind::Runaway => "runaway",
            CheckerKind::Storage => "storage",
        }
    }
}

impl fmt::Display for CheckerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed check: which one, when, and what it saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The check that failed.
    pub checker: CheckerKind,
    /// When, in simulated instants.
    pub time: Time,
    /// What it saw, naming nodes, indexes and terms.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] at t={}: {}", self.checker, self.time, self.message)
    }
}

impl std::error::Error for Violation {}

/// Which checkers report violations. The bookkeeping behind them always runs (leader
/// completeness needs the committed record, say); a switched-off checker only stays
/// silent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckerSet {
    /// [`CheckerKind::ElectionSafety`].
    pub election_safety: bool,
    /// [`CheckerKind::LogMatching`].
    pub log_matching: bool,
    /// [`CheckerKind::LeaderCompleteness`].
    pub leader_completeness: bool,
    /// [`CheckerKind::StateMachineSafety`].
    pub state_machine_safety: bool,
    /// [`CheckerKind::CommittedNeverLost`].
    pub committed_never_lost: bool,
    /// [`CheckerKind::Linearizability`].
    pub linearizability: bool,
    /// [`CheckerKind::Atomicity`].
    pub atomicity: bool,
}

impl Default for CheckerSet {
    fn default() -> Self {
        CheckerSet::all()
    }
}

impl CheckerSet {
    /// Every checker on.
    pub fn all() -> CheckerSet {
        CheckerSet {
            election_safety: true,
            log_matching: true,
            leader_completeness: true,
            state_machine_safety: true,
            committed_never_lost: true,
            linearizability: true,
            atomicity: true,
        }
    }

    /// Every checker on except `kind`.
    pub fn without(mut self, kind: CheckerKind) -> CheckerSet {
        *self.flag(kind) = false;
        self
    }

    /// Only `kind` on.
    pub fn only(kind: CheckerKind) -> CheckerSet {
        let mut set = CheckerSet {
            election_safety: false,
            log_matching: false,
            leader_completeness: false,
            state_machine_safety: false,
            committed_never_lost: false,
            linearizability: false,
            atomicity: false,
        };
        *set.flag(kind) = true;
        set
    }

    /// True when `kind` reports. Liveness, panics, contract breaches, runaway runs and
    /// storage failures always do.
    pub fn contains(self, kind: CheckerKind) -> bool {
        match kind {
            CheckerKind::ElectionSafety => self.election_safety,
            CheckerKind::LogMatching => self.log_matching,
            CheckerKind::LeaderCompleteness => self.leader_completeness,
            CheckerKind::StateMachineSafety => self.state_machine_safety,
            CheckerKind::CommittedNeverLost => self.committed_never_lost,
            CheckerKind::Linearizability => self.linearizability,
            CheckerKind::Atomicity => self.atomicity,
            CheckerKind::Liveness
            | CheckerKind::Panic
            | CheckerKind::DriverContract
            | CheckerKind::Runaway
            | CheckerKind::Storage => true,
        }
    }

    fn flag(&mut self, kind: CheckerKind) -> &mut bool {
        match kind {
            CheckerKind::ElectionSafety => &mut self.election_safety,
            CheckerKind::LogMatching => &mut self.log_matching,
            CheckerKind::LeaderCompleteness => &mut self.leader_completeness,
            CheckerKind::StateMachineSafety => &mut self.state_machine_safety,
            CheckerKind::CommittedNeverLost => &mut self.committed_never_lost,
            CheckerKind::Linearizability => &mut self.linearizability,
            CheckerKind::Atomicity => &mut self.atomicity,
            other => panic!("{other} cannot be switched off"),
        }
    }
}

/// A read-only view of a node's whole log (durable and unstable), as the commit-based
/// checkers need it. Implemented for the core's [`RaftLog`]; tests implement it over a
/// plain vector.
pub trait LogView {
    /// The first index still in the log (compaction point + 1).
    fn first_index(&self) -> Index;
    /// The last index.
    fn last_index(&self) -> Index;
    /// The commit index.
    fn committed(&self) -> Index;
    /// The term at `index`, for `first_index() - 1 <= index <= last_index()`.
    fn term(&self, index: Index) -> Option<Term>;
    /// Entries in `[low, high)`, all of them; empty if any is unavailable.
    fn entries(&self, low: Index, high: Index) -> Vec<Entry>;
}

impl<S: Storage> LogView for RaftLog<S> {
    fn first_index(&self) -> Index {
        RaftLog::first_index(self)
    }
    fn last_index(&self) -> Index {
        RaftLog::last_index(self)
    }
    fn committed(&self) -> Index {
        RaftLog::committed(self)
    }
    fn term(&self, index: Index) -> Option<Term> {
        RaftLog::term(self, index).ok()
    }
    fn entries(&self, low: Index, high: Index) -> Vec<Entry> {
        if low >= high {
            return Vec::new();
        }
        self.slice(low, high, u64::MAX).unwrap_or_default()
    }
}

/// Every checker's state, fed by the simulator.
#[derive(Clone, Debug, Default)]
pub struct Checkers {
    enabled: CheckerSet,
    election_safety: ElectionSafety,
    log_matching: LogMatching,
    state_machine_safety: StateMachineSafety,
    committed: CommittedRecord,
}

impl Checkers {
    /// Checkers reporting what `enabled` says.
    pub fn new(enabled: CheckerSet) -> Checkers {
        Checkers {
            enabled,
            ..Checkers::default()
        }
    }

    /// Which checkers report.
    pub fn enabled(&self) -> CheckerSet {
        self.enabled
    }

    /// The record of committed entries.
    pub fn committed(&self) -> &CommittedRecord {
        &self.committed
    }

    /// The leader seen in each term.
    pub fn election_safety(&self) -> &ElectionSafety {
        &self.election_safety
    }

    fn report(
        &self,
        checker: CheckerKind,
        now: Time,
        result: Result<(), String>,
    ) -> Result<(), Violation> {
        match result {
            Err(message) if self.enabled.contains(checker) => Err(Violation {
                checker,
                time: now,
                message,
            }),
            _ => Ok(()),
        }
    }

    /// After any input to a node: records what it newly holds committed, checks that
    /// it is the only leader of its term, and if it has just won, that it holds every
    /// entry committed before.
    pub fn after_step<S: Storage>(&mut self, raft: &Raft<S>, now: Time) -> Result<(), Violation> {
        let observed = self.committed.observe(raft.id, raft.term, &raft.log, now);
        self.report(CheckerKind::CommittedNeverLost, now, observed)?;
        if raft.role != Role::Leader {
            return Ok(());
        }
        match self.election_safety.observe_leader(raft.id, raft.term, now) {
            Err(message) => self.report(CheckerKind::ElectionSafety, now, Err(message)),
            Ok(true) => {
                let result =
                    leader_completeness::check(raft.id, raft.term, &raft.log, &self.committed);
                self.report(CheckerKind::LeaderCompleteness, now, result)
            }
            Ok(false) => Ok(()),
        }
    }

    /// After a write to `node`'s storage that touched indexes from `from` on: checks
    /// the durable log there against every other durable log ever seen.
    pub fn on_persist<S: Storage>(
        &mut self,
        node: NodeId,
        storage: &S,
        from: Index,
        now: Time,
    ) -> Result<(), Violation> {
        let result = self.log_matching.check_storage(node, storage, from, now);
        self.report(CheckerKind::LogMatching, now, result)
    }

    /// After `node` applied `entry`, reaching state `digest`.
    pub fn on_apply(
        &mut self,
        node: NodeId,
        entry: &Entry,
        digest: u64,
        now: Time,
    ) -> Result<(), Violation> {
        let data_hash = hash_bytes(&entry.data);
        let result = self.state_machine_safety.on_apply(
            node,
            entry.index,
            entry.term,
            data_hash,
            digest,
            now,
        );
        self.report(CheckerKind::StateMachineSafety, now, result)?;
        let result = self
            .committed
            .check_applied(node, entry.index, entry.term, data_hash);
        self.report(CheckerKind::CommittedNeverLost, now, result)
    }

    /// After `node` restored a snapshot at `index` (of `term`) with state `digest`.
    pub fn on_restore(
        &mut self,
        node: NodeId,
        index: Index,
        term: Term,
        digest: u64,
        now: Time,
    ) -> Result<(), Violation> {
        let result = self
            .state_machine_safety
            .on_restore(node, index, term, digest, now);
        self.report(CheckerKind::StateMachineSafety, now, result)
    }

    /// At intervals and at the end: every node that is leader holds every entry
    /// committed in its term or before.
    pub fn check_leaders<'a, S: Storage + 'a>(
        &self,
        rafts: impl IntoIterator<Item = &'a Raft<S>>,
        now: Time,
    ) -> Result<(), Violation> {
        for raft in rafts {
            if raft.role == Role::Leader {
                let result = self.committed.check_leader(raft.id, raft.term, &raft.log);
                self.report(CheckerKind::CommittedNeverLost, now, result)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use concord_raft::EntryKind;

    /// A log as a plain vector, for checker unit tests.
    struct VecLog {
        /// Terms of entries 1..=n.
        terms: Vec<Term>,
        committed: Index,
    }

    impl LogView for VecLog {
        fn first_index(&self) -> Index {
            1
        }
        fn last_index(&self) -> Index {
            self.terms.len() as Index
        }
        fn committed(&self) -> Index {
            self.committed
        }
        fn term(&self, index: Index) -> Option<Term> {
            if index == 0 {
                return Some(0);
            }
            self.terms.get(index as usize - 1).copied()
        }
        fn entries(&self, low: Index, high: Index) -> Vec<Entry> {
            (low..high)
                .map(|index| Entry {
                    term: self.terms[index as usize - 1],
                    index,
                    kind: EntryKind::Normal,
                    data: Bytes::new(),
                })
                .collect()
        }
    }

    // Two nodes holding different entries committed at one index are caught.
    #[test]
    fn committed_record_catches_conflicting_commits() {
        let mut record = CommittedRecord::new();
        let a = VecLog {
            terms: vec![1, 1, 2],
            committed: 3,
        };
        record.observe(1, 2, &a, 10).unwrap();
        assert_eq!(record.highest_index(), 3);
        assert_eq!(record.get(3).unwrap().commit_term, 2);
        let b = VecLog {
            terms: vec![1, 1, 3],
            committed: 3,
        };
        let violation = record.observe(2, 3, &b, 11).unwrap_err();
        assert!(
            violation.starts_with("two different entries committed at index 3"),
            "{violation}"
        );
        record
            .check_applied(1, 3, 2, hash_bytes(b""))
            .unwrap_or_else(|error| panic!("{error}"));
        let violation = record.check_applied(1, 4, 2, 0).unwrap_err();
        assert!(
            violation.contains("that no node held committed"),
            "{violation}"
        );
    }

    // A leader of a later term missing a committed entry is caught, both at election
    // (leader completeness) and at any later check (committed never lost); a deposed
    // leader of an earlier term is not blamed for entries committed after it.
    #[test]
    fn leader_missing_committed_entry_is_caught() {
        let mut record = CommittedRecord::new();
        let committer = VecLog {
            terms: vec![1, 2, 2],
            committed: 3,
        };
        record.observe(1, 2, &committer, 10).unwrap();
        let stale = VecLog {
            terms: vec![1, 3],
            committed: 1,
        };
        let violation = leader_completeness::check(4, 3, &stale, &record).unwrap_err();
        assert!(
            violation.starts_with("node 4 won term 3 without committed entry 2"),
            "{violation}"
        );
        let violation = record.check_leader(4, 3, &stale).unwrap_err();
        assert!(
            violation.starts_with("committed entry lost: index 2"),
            "{violation}"
        );
        let deposed = VecLog {
            terms: vec![1],
            committed: 1,
        };
        record.check_leader(5, 1, &deposed).unwrap();
        leader_completeness::check(5, 2, &deposed, &record).unwrap();
    }
}
