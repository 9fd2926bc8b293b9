//! Property test against a simple model: a map from group to `MemStorage`, driven by
//! random sequences of appends (with conflicting suffixes), hard states, snapshots
//! created and installed, compactions, multi-group batches, group removal, crashes
//! (clean, torn, and in the middle of a write) and restarts.

use std::collections::BTreeMap;
use std::mem::discriminant;

use bytes::Bytes;
use concord_raft::{
    ConfState, HardState, Index, LogStore, MemStorage, Snapshot, SnapshotMetadata, Storage,
    StorageError,
};
use concord_storage::{GroupId, Log, SimFs, WriteBatch};
use proptest::prelude::*;

use crate::support::{assert_same_store, entries, open_sim, small_config};

const GROUPS: u64 = 3;

/// Segments deleted over all cases (checked once: deletion is exercised).
static DELETED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Clone, Debug)]
enum Op {
    /// Append `count` entries starting `back` before the next index (negative: a gap).
    Append {
        group: GroupId,
        back: i64,
        count: usize,
        payload: usize,
    },
    HardState {
        group: GroupId,
        term: u64,
    },
    ConfState {
        group: GroupId,
        voters: u64,
    },
    /// Snapshot at `back` before the last index.
    CreateSnapshot {
        group: GroupId,
        back: u64,
    },
    /// Compact to `back` before the snapshot's index (negative: past it).
    Compact {
        group: GroupId,
        back: i64,
    },
    /// Install a snapshot `ahead` past the current snapshot or compaction point.
    InstallSnapshot {
        group: GroupId,
        ahead: u64,
    },
    /// One batch appending to several groups and recording their hard states.
    Batch {
        counts: Vec<usize>,
    },
    Remove {
        group: GroupId,
    },
    /// Every group snapshots at its last index and compacts there (lets old segments go).
    CompactAll,
    Restart,
    Crash {
        torn: bool,
    },
    /// The power fails at the next fsync, during this append.
    CrashDuringAppend {
        group: GroupId,
        count: usize,
        torn: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let group = 1..=GROUPS;
    prop_oneof![
        8 => (group.clone(), -1i64..4, 1usize..5, 0usize..120)
            .prop_map(|(group, back, count, payload)| Op::Append { group, back, count, payload }),
        2 => (group.clone(), 1u64..10).prop_map(|(group, term)| Op::HardState { group, term }),
        1 => (group.clone(), 1u64..6).prop_map(|(group, voters)| Op::ConfState { group, voters }),
        2 => (group.clone(), 0u64..4).prop_map(|(group, back)| Op::CreateSnapshot { group, back }),
        2 => (group.clone(), -2i64..3).prop_map(|(group, back)| Op::Compact { group, back }),
        1 => (group.clone(), 0u64..6).prop_map(|(group, ahead)| Op::InstallSnapshot { group, ahead }),
        2 => proptest::collection::vec(1usize..4, 1..=GROUPS as usize)
            .prop_map(|counts| Op::Batch { counts }),
        1 => group.clone().prop_map(|group| Op::Remove { group }),
        1 => Just(Op::CompactAll),
        1 => Just(Op::Restart),
        1 => any::<bool>().prop_map(|torn| Op::Crash { torn }),
        1 => (group, 1usize..4, any::<bool>())
            .prop_map(|(group, count, torn)| Op::CrashDuringAppend { group, count, torn }),
    ]
}

/// The store under test and the model, side by side.
struct Harness {
    fs: SimFs,
    /// None only while reopening (the old log must let go of the directory lock).
    log: Option<Log>,
    model: BTreeMap<GroupId, MemStorage>,
    /// A term that only grows, for entries.
    term: u64,
}

fn same_outcome<T, U>(model: &Result<T, StorageError>, actual: &Result<U, StorageError>) -> bool {
    match (model, actual) {
        (Ok(_), Ok(_)) => true,
        (Err(expected), Err(found)) => discriminant(expected) == discriminant(found),
        _ => false,
    }
}

impl Harness {
    fn new(seed: u64) -> Self {
        let fs = SimFs::new(seed);
        let log = open_sim(&fs, small_config()).unwrap();
        let model = (1..=GROUPS)
            .map(|group| (group, MemStorage::new()))
            .collect();
        Harness {
            fs,
            log: Some(log),
            model,
            term: 1,
        }
    }

    fn reopen(&mut self) {
        self.log = None;
        self.log = Some(open_sim(&self.fs, small_config()).unwrap());
    }

    fn log(&self) -> &Log {
        self.log.as_ref().expect("open")
    }

    fn check(&self, context: &str) {
        for (group, model) in &self.model {
            assert_same_store(
                model,
                &self.log().group(*group),
                &format!("{context}, group {group}"),
            );
        }
    }

    fn matches(&self, models: &BTreeMap<GroupId, MemStorage>) -> bool {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for (group, model) in models {
                assert_same_store(model, &self.log().group(*group), "");
            }
        }));
        result.is_ok()
    }

    fn run(&mut self, op: &Op) {
        let context = format!("{op:?}");
        match op {
            Op::Append {
                group,
                back,
                count,
                payload,
            } => {
                let model = self.model.get_mut(group).unwrap();
                let next = model.last_index().unwrap() as i64 + 1 - back;
                let first = next.max(1) as Index;
                if *back > 0 {
                    self.term += 1;
                }
                let appended = entries(first, &vec![self.term; *count], *payload);
                let expected = model.append(&appended);
                let actual = self.log().group(*group).append(&appended);
                assert!(
                    same_outcome(&expected, &actual),
                    "{context}: {expected:?} vs {actual:?}"
                );
            }
            Op::HardState { group, term } => {
                let hard_state = HardState {
                    term: *term,
                    vote: *group,
                    commit: *term,
                };
                self.model
                    .get_mut(group)
                    .unwrap()
                    .set_hard_state(hard_state)
                    .unwrap();
                self.log().group(*group).set_hard_state(hard_state).unwrap();
            }
            Op::ConfState { group, voters } => {
                let conf_state = ConfState::with_voters(1..=*voters);
                self.model
                    .get_mut(group)
                    .unwrap()
                    .set_conf_state(conf_state.clone());
                self.log().group(*group).set_conf_state(conf_state).unwrap();
            }
            Op::CreateSnapshot { group, back } => {
                let model = self.model.get_mut(group).unwrap();
                let index = model.last_index().unwrap().saturating_sub(*back);
                let conf_state = ConfState::with_voters([index % 3 + 1]);
                let data = Bytes::from(format!("state of group {group} at {index}"));
                let expected = model.create_snapshot(index, conf_state.clone(), data.clone());
                let actual = self
                    .log()
                    .group(*group)
                    .create_snapshot(index, conf_state, data);
                assert!(
                    same_outcome(&expected, &actual),
                    "{context}: {expected:?} vs {actual:?}"
                );
                if let (Ok(expected), Ok(actual)) = (expected, actual) {
                    assert_eq!(expected, actual, "{context}");
                }
            }
            Op::Compact { group, back } => {
                let model = self.model.get_mut(group).unwrap();
                let snapshot_index = model.snapshot(0).unwrap().metadata.index as i64;
                let index = (snapshot_index - back).max(0) as Index;
                let expected = model.compact(index);
                let actual = self.log().group(*group).compact(index);
                assert!(
                    same_outcome(&expected, &actual),
                    "{context}: {expected:?} vs {actual:?}"
                );
            }
            Op::InstallSnapshot { group, ahead } => {
                let model = self.model.get_mut(group).unwrap();
                let current = model
                    .snapshot(0)
                    .unwrap()
                    .metadata
                    .index
                    .max(model.first_index().unwrap() - 1);
                // Sometimes the same index as now: refused.
                let index = if *ahead == 0 {
                    current
                } else {
                    current + ahead
                };
                self.term += 1;
                let snapshot = Snapshot {
                    metadata: SnapshotMetadata {
                        index,
                        term: self.term,
                        conf_state: ConfState::with_voters([1, 2, *group]),
                    },
                    data: Bytes::from(vec![*ahead as u8; 300]),
                };
                let expected = model.apply_snapshot(snapshot.clone());
                let actual = self.log().group(*group).apply_snapshot(snapshot);
                assert!(
                    same_outcome(&expected, &actual),
                    "{context}: {expected:?} vs {actual:?}"
                );
            }
            Op::Batch { counts } => {
                let mut batch = WriteBatch::new();
                for (position, count) in counts.iter().enumerate() {
                    let group = position as GroupId + 1;
                    let model = self.model.get_mut(&group).unwrap();
                    let appended = entries(
                        model.last_index().unwrap() + 1,
                        &vec![self.term; *count],
                        40,
                    );
                    let hard_state = HardState {
                        term: self.term,
                        vote: 0,
                        commit: *count as u64,
                    };
                    model.append(&appended).unwrap();
                    model.set_hard_state(hard_state).unwrap();
                    batch.persist_ready(group, Some(hard_state), None, appended);
                }
                self.log().write(batch).unwrap();
            }
            Op::Remove { group } => {
                self.model.insert(*group, MemStorage::new());
                self.log().remove_group(*group).unwrap();
            }
            Op::CompactAll => {
                let log = self.log.clone().expect("open");
                for group in 1..=GROUPS {
                    let model = self.model.get_mut(&group).unwrap();
                    let last = model.last_index().unwrap();
                    if last > model.snapshot(0).unwrap().metadata.index {
                        let data = Bytes::from(format!("all of group {group}"));
                        model
                            .create_snapshot(last, ConfState::default(), data.clone())
                            .unwrap();
                        log.group(group)
                            .create_snapshot(last, ConfState::default(), data)
                            .unwrap();
                    }
                    model.compact(last).unwrap();
                    log.group(group).compact(last).unwrap();
                }
                DELETED.fetch_add(
                    self.log().stats().segments_deleted,
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
            Op::Restart => self.reopen(),
            Op::Crash { torn } => {
                if *torn {
                    self.fs.crash_torn();
                } else {
                    self.fs.crash();
                }
                self.reopen();
            }
            Op::CrashDuringAppend { group, count, torn } => {
                let before = self.model.clone();
                let model = self.model.get_mut(group).unwrap();
                let appended = entries(
                    model.last_index().unwrap() + 1,
                    &vec![self.term; *count],
                    70,
                );
                model.append(&appended).unwrap();
                let after = self.model.clone();
                self.fs.crash_at_next_sync(*torn);
                let result = self.log().group(*group).append(&appended);
                assert!(
                    result.is_err(),
                    "{context}: the write cannot be acknowledged"
                );
                self.reopen();
                // The batch was never acknowledged: it may be there whole, or not at all.
                if self.matches(&before) {
                    self.model = before;
                } else {
                    assert!(
                        self.matches(&after),
                        "{context}: neither before nor after the batch"
                    );
                    self.model = after;
                }
            }
        }
        self.check(&context);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    // Any sequence of operations, crashes and restarts leaves every group exactly as the
    // model says, and acknowledged writes survive every crash.
    #[test]
    fn log_matches_model(seed in any::<u64>(), ops in proptest::collection::vec(op(), 1..60)) {
        let mut harness = Harness::new(seed);
        for op in &ops {
            harness.run(op);
        }
        harness.fs.crash_torn();
        harness.reopen();
        harness.check("final restart");
    }
}

// The property test above does delete segments (its CompactAll lets them go).
#[test]
fn model_test_deletes_segments() {
    let mut harness = Harness::new(77);
    for _ in 0..3 {
        for count in [4, 4, 4, 4, 4, 4, 4, 4] {
            harness.run(&Op::Batch {
                counts: vec![count; 3],
            });
        }
        harness.run(&Op::CompactAll);
        harness.run(&Op::Crash { torn: true });
    }
    assert!(DELETED.load(std::sync::atomic::Ordering::Relaxed) > 0);
}
