//! The log storage the core reads through, an in-memory implementation, and a
//! conformance suite every implementation must pass.
//!
//! A store holds, in index order:
//!
//! ```text
//! [compacted ... first_index - 1] [first_index ... last_index]
//!  only in a snapshot; the term    entries
//!  of first_index - 1 is kept
//! ```
//!
//! `first_index() - 1` is the compaction point. A snapshot created with
//! [`LogStore::create_snapshot`] does not move it: entries after a snapshot are kept
//! until the driver calls [`LogStore::compact`], so that followers a little behind can
//! still be sent entries instead of a whole snapshot. An installed snapshot
//! ([`LogStore::apply_snapshot`]) moves the compaction point to its index.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::errors::StorageError;
use crate::types::{ConfState, Entry, HardState, Index, Snapshot, SnapshotMetadata, Term};

/// What a node restarts from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftState {
    /// The last persisted hard state.
    pub hard_state: HardState,
    /// Membership as of the last persisted snapshot or applied conf change.
    pub conf_state: ConfState,
}

/// Read access to a node's durable log, as the core needs it.
///
/// The log holds entries `first_index()..=last_index()` after a compaction point
/// `first_index() - 1` (0 for a log never compacted), whose term is still answered.
/// Invariant: `first_index() <= last_index() + 1`. A log with no entries has
/// `last_index() == first_index() - 1`.
///
/// Invariant kept by the driver, not checked here: `snapshot().index >= first_index() - 1`,
/// so that a follower needing compacted entries can be sent a snapshot that covers them.
/// A driver keeps it by compacting only up to the index of a snapshot it created.
pub trait Storage {
    /// The hard state and membership to start from.
    fn initial_state(&self) -> Result<RaftState, StorageError>;
    /// Entries in `[low, high)`, stopping before the entry that would bring their total
    /// `size_bytes` over `max_bytes` — but always at least one entry when `low < high`.
    /// `Compacted` if `low < first_index()`, else `Unavailable` if
    /// `high > last_index() + 1`. An empty range (`low == high`) inside those bounds
    /// gives no entries. Panics if `low > high` (a caller bug).
    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError>;
    /// The term of the entry at `index`, for `first_index() - 1 <= index <= last_index()`.
    /// `Compacted` below that range, `Unavailable` above. A log never compacted answers
    /// `term(0) == 0`.
    fn term(&self, index: Index) -> Result<Term, StorageError>;
    /// The index of the first entry still in the log (compaction point + 1).
    fn first_index(&self) -> Result<Index, StorageError>;
    /// The index of the last entry, or the compaction point when there are no entries.
    fn last_index(&self) -> Result<Index, StorageError>;
    /// The latest snapshot (index 0 and empty data if there is none yet). `request_index`
    /// is the index the leader needs a snapshot of at least; a storage may return
    /// `SnapshotTemporarilyUnavailable` while it builds one.
    fn snapshot(&self, request_index: Index) -> Result<Snapshot, StorageError>;
}

/// Write access a driver uses to persist a `Ready`. Kept apart from [`Storage`] so the
/// core cannot write on its own.
pub trait LogStore: Storage {
    /// Appends `entries` (consecutive indexes). Entries at or after `entries[0].index`
    /// already in the log are replaced (a follower's conflicting suffix is truncated).
    /// An empty slice is a no-op. Errors with `Unavailable` if `entries[0].index >
    /// last_index() + 1` (a gap) and with `Compacted` if `entries[0].index <
    /// first_index()` (it would rewrite compacted entries); the log is unchanged then.
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;
    /// Records the hard state.
    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError>;
    /// Replaces the log with `snapshot` (an incoming InstallSnapshot, Raft paper §7):
    /// every entry is dropped, the compaction point becomes the snapshot's index (so
    /// `term(index)` answers the snapshot's term and `last_index() == index`), and the
    /// membership becomes the snapshot's `conf_state`. The hard state is left alone; the
    /// driver records the one from the same `Ready`.
    ///
    /// Errors with `Failed` ("snapshot at index X is not newer than ...") if the
    /// snapshot's index is not above both the current snapshot's index and the
    /// compaction point; the store is unchanged then.
    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError>;
    /// Records the application's snapshot at `index` (already applied) with `data`, and
    /// membership `conf_state`, and returns it; its term is `term(index)`. Entries are
    /// kept (compact separately) and the membership returned by `initial_state` is not
    /// changed (it is at least as new as the snapshot's).
    ///
    /// Errors, leaving the store unchanged: `Failed` if `index` is not above the current
    /// snapshot's index, else `Compacted` if `index < first_index() - 1` (its term is
    /// gone), else `Unavailable` if `index > last_index()`.
    fn create_snapshot(
        &mut self,
        index: Index,
        conf_state: ConfState,
        data: Bytes,
    ) -> Result<Snapshot, StorageError>;
    /// Drops entries up to and including `compact_index`, which becomes the compaction
    /// point: `first_index() == compact_index + 1` and `term(compact_index)` is still
    /// answered. Any `compact_index <= last_index()` is accepted (compacting everything
    /// leaves an empty log after the compaction point); compacting at or below the
    /// current compaction point is a no-op. `Unavailable` if `compact_index >
    /// last_index()`.
    ///
    /// Compacting past the latest snapshot's index is refused with `Failed`: entries no
    /// snapshot covers would be gone, and a lagging follower could never catch up. The
    /// driver compacts only entries it has applied and snapshotted.
    fn compact(&mut self, compact_index: Index) -> Result<(), StorageError>;
}

/// Appends clones of `entries` to `out` while the total `size_bytes` of `out` stays
/// within `max_bytes`, but always takes the first entry when `out` is empty. Returns
/// true if every entry was taken, false if the limit stopped it.
pub(crate) fn extend_within_bytes<'a>(
    out: &mut Vec<Entry>,
    entries: impl IntoIterator<Item = &'a Entry>,
    max_bytes: u64,
) -> bool {
    let mut total_bytes: u64 = out.iter().map(Entry::size_bytes).sum();
    for entry in entries {
        total_bytes = total_bytes.saturating_add(entry.size_bytes());
        if !out.is_empty() && total_bytes > max_bytes {
            return false;
        }
        out.push(entry.clone());
    }
    true
}

/// The index of the bootstrap snapshot that holds a new group's initial membership.
pub const BOOTSTRAP_INDEX: Index = 1;
/// The term of the bootstrap snapshot.
pub const BOOTSTRAP_TERM: Term = 1;

/// A [`Storage`] that keeps everything in memory. Used by tests, the simulator and the
/// benchmark; it is not durable.
///
/// Entries live in a ring buffer offset by the compaction point, so `term` and
/// appending at the end are O(1) and compacting is O(entries dropped).
/// [`Storage::snapshot`] always returns the latest snapshot at once (it never builds
/// one): the driver calls [`LogStore::create_snapshot`].
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    /// The last recorded hard state.
    hard_state: HardState,
    /// The membership `initial_state` reports.
    conf_state: ConfState,
    /// The latest snapshot, created or installed (index 0 if none).
    snapshot: Snapshot,
    /// Index of the last compacted entry (the one before `entries[0]`).
    // Invariant: compacted_index <= snapshot.metadata.index unless the driver compacted
    // past its snapshot (allowed, see `LogStore::compact`).
    compacted_index: Index,
    /// Term of the entry at `compacted_index` (0 for index 0).
    compacted_term: Term,
    /// The entries after the compaction point.
    // Invariant: entries[i].index == compacted_index + 1 + i.
    entries: VecDeque<Entry>,
}

impl MemStorage {
    /// An empty log with no members (a node waiting to be added by a snapshot).
    pub fn new() -> Self {
        MemStorage::default()
    }

    /// A bootstrapped log: the initial membership `conf_state` is recorded as a
    /// snapshot at index 1, term 1 (with empty data: the state machine's initial
    /// state), committed. Every founding member starts from the same one.
    ///
    /// Membership lives in the log (snapshot + conf change entries), never only beside
    /// it: a node added later starts empty (`MemStorage::new`), receives this snapshot
    /// or a newer one, and replays the changes after it, so it reaches the same
    /// configuration as everyone else.
    pub fn with_conf_state(conf_state: ConfState) -> Self {
        let mut storage = MemStorage::default();
        storage.snapshot.metadata = SnapshotMetadata {
            index: BOOTSTRAP_INDEX,
            term: BOOTSTRAP_TERM,
            conf_state: conf_state.clone(),
        };
        storage.compacted_index = BOOTSTRAP_INDEX;
        storage.compacted_term = BOOTSTRAP_TERM;
        storage.hard_state = HardState {
            term: BOOTSTRAP_TERM,
            vote: crate::types::NO_NODE,
            commit: BOOTSTRAP_INDEX,
        };
        storage.conf_state = conf_state;
        storage
    }

    /// The last recorded hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Records membership (used when the driver applies a conf change entry).
    pub fn set_conf_state(&mut self, conf_state: ConfState) {
        self.conf_state = conf_state;
    }

    fn first_index_value(&self) -> Index {
        self.compacted_index + 1
    }

    fn last_index_value(&self) -> Index {
        self.compacted_index + self.entries.len() as Index
    }

    /// Position in `entries` of the entry at `index`; `index` must be above the
    /// compaction point.
    fn position(&self, index: Index) -> usize {
        (index - self.compacted_index - 1) as usize
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<RaftState, StorageError> {
        Ok(RaftState {
            hard_state: self.hard_state,
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        assert!(low <= high, "invalid entries range [{low}, {high})");
        if low < self.first_index_value() {
            return Err(StorageError::Compacted);
        }
        if high > self.last_index_value() + 1 {
            return Err(StorageError::Unavailable);
        }
        let mut out = Vec::new();
        let range = self.position(low)..self.position(high);
        extend_within_bytes(&mut out, self.entries.range(range), max_bytes);
        Ok(out)
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        if index < self.compacted_index {
            return Err(StorageError::Compacted);
        }
        if index == self.compacted_index {
            return Ok(self.compacted_term);
        }
        match self.entries.get(self.position(index)) {
            Some(entry) => Ok(entry.term),
            None => Err(StorageError::Unavailable),
        }
    }

    fn first_index(&self) -> Result<Index, StorageError> {
        Ok(self.first_index_value())
    }

    fn last_index(&self) -> Result<Index, StorageError> {
        Ok(self.last_index_value())
    }

    fn snapshot(&self, _request_index: Index) -> Result<Snapshot, StorageError> {
        Ok(self.snapshot.clone())
    }
}

impl LogStore for MemStorage {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index > self.last_index_value() + 1 {
            return Err(StorageError::Unavailable);
        }
        if first.index < self.first_index_value() {
            return Err(StorageError::Compacted);
        }
        debug_assert!(
            entries
                .windows(2)
                .all(|pair| pair[1].index == pair[0].index + 1),
            "entries to append must have consecutive indexes"
        );
        self.entries.truncate(self.position(first.index));
        self.entries.extend(entries.iter().cloned());
        Ok(())
    }

    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.hard_state = hard_state;
        Ok(())
    }

    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        let index = snapshot.metadata.index;
        let current = self.snapshot.metadata.index.max(self.compacted_index);
        if index <= current {
            return Err(StorageError::Failed(format!(
                "snapshot at index {index} is not newer than the current snapshot or \
                 compaction point at index {current}"
            )));
        }
        self.entries.clear();
        self.compacted_index = index;
        self.compacted_term = snapshot.metadata.term;
        self.conf_state = snapshot.metadata.conf_state.clone();
        self.snapshot = snapshot;
        Ok(())
    }

    fn create_snapshot(
        &mut self,
        index: Index,
        conf_state: ConfState,
        data: Bytes,
    ) -> Result<Snapshot, StorageError> {
        let current = self.snapshot.metadata.index;
        if index <= current {
            return Err(StorageError::Failed(format!(
                "snapshot at index {index} is not newer than the current one at index {current}"
            )));
        }
        let term = self.term(index)?;
        self.snapshot = Snapshot {
            metadata: SnapshotMetadata {
                index,
                term,
                conf_state,
            },
            data,
        };
        Ok(self.snapshot.clone())
    }

    fn compact(&mut self, compact_index: Index) -> Result<(), StorageError> {
        if compact_index <= self.compacted_index {
            return Ok(());
        }
        if compact_index > self.last_index_value() {
            return Err(StorageError::Unavailable);
        }
        if compact_index > self.snapshot.metadata.index {
            return Err(StorageError::Failed(format!(
                "cannot compact to index {compact_index}, past the latest snapshot at index {}: \
                 entries no snapshot covers would be lost",
                self.snapshot.metadata.index
            )));
        }
        let term = self.term(compact_index)?;
        let dropped = self.position(compact_index) + 1;
        self.entries.drain(..dropped);
        self.compacted_index = compact_index;
        self.compacted_term = term;
        Ok(())
    }
}

/// A conformance suite every [`LogStore`] must pass. The durable log runs it too, so it
/// uses only the trait methods.
///
/// Each check takes a `make` closure returning a fresh, empty store whose initial
/// membership is empty (`ConfState::default()`), and panics with the failing
/// expectation.
pub mod conformance {
    use bytes::Bytes;

    use super::{LogStore, RaftState};
    use crate::errors::StorageError;
    use crate::types::{
        ConfState, Entry, EntryKind, HardState, Index, Snapshot, SnapshotMetadata, Term,
    };

    /// Runs every check, each on a fresh store.
    pub fn run_all<S: LogStore>(mut make: impl FnMut() -> S) {
        empty_log(make());
        append_and_read(make());
        entries_respect_max_bytes(make());
        append_overwrites_conflicting_suffix(make());
        append_rejects_gaps_and_compacted_indexes(make());
        compact_keeps_term_of_compaction_point(make());
        compact_everything(make());
        create_snapshot(make());
        apply_snapshot(make());
        initial_state_reflects_writes(make());
    }

    /// An entry at `index` of `term` whose payload is `payload_bytes` long.
    fn entry(index: Index, term: Term, payload_bytes: usize) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: Bytes::from(vec![index as u8; payload_bytes]),
        }
    }

    /// Entries `first..first + terms.len()` with the given terms and 10-byte payloads.
    fn entries_with_terms(first: Index, terms: &[Term]) -> Vec<Entry> {
        terms
            .iter()
            .enumerate()
            .map(|(offset, &term)| entry(first + offset as Index, term, 10))
            .collect()
    }

    fn all_entries<S: LogStore>(store: &S) -> Vec<Entry> {
        let low = store.first_index().unwrap();
        let high = store.last_index().unwrap() + 1;
        store.entries(low, high, u64::MAX).unwrap()
    }

    /// A new store is empty: first index 1, last index 0, `term(0) == 0`, no snapshot.
    pub fn empty_log<S: LogStore>(store: S) {
        assert_eq!(store.first_index(), Ok(1), "first_index of an empty log");
        assert_eq!(store.last_index(), Ok(0), "last_index of an empty log");
        assert_eq!(store.term(0), Ok(0), "term(0) of an empty log");
        assert_eq!(
            store.term(1),
            Err(StorageError::Unavailable),
            "term(1) of an empty log"
        );
        assert_eq!(
            store.entries(1, 1, u64::MAX),
            Ok(vec![]),
            "empty range of an empty log"
        );
        assert_eq!(
            store.entries(1, 2, u64::MAX),
            Err(StorageError::Unavailable)
        );
        assert_eq!(store.entries(0, 1, u64::MAX), Err(StorageError::Compacted));
        assert_eq!(store.initial_state(), Ok(RaftState::default()));
        let snapshot = store.snapshot(0).unwrap();
        assert_eq!(snapshot.metadata.index, 0, "snapshot index of an empty log");
        assert_eq!(snapshot.metadata.term, 0, "snapshot term of an empty log");
    }

    /// Appended entries are read back by index, with errors just outside the log.
    pub fn append_and_read<S: LogStore>(mut store: S) {
        let appended = entries_with_terms(1, &[1, 1, 2, 2, 3]);
        store.append(&appended).unwrap();
        assert_eq!(store.first_index(), Ok(1));
        assert_eq!(store.last_index(), Ok(5));
        for (index, term) in [(0, 0), (1, 1), (2, 1), (3, 2), (4, 2), (5, 3)] {
            assert_eq!(store.term(index), Ok(term), "term({index})");
        }
        assert_eq!(store.term(6), Err(StorageError::Unavailable));
        assert_eq!(store.entries(1, 6, u64::MAX), Ok(appended.clone()));
        assert_eq!(store.entries(2, 4, u64::MAX), Ok(appended[1..3].to_vec()));
        assert_eq!(store.entries(3, 3, u64::MAX), Ok(vec![]));
        assert_eq!(store.entries(0, 3, u64::MAX), Err(StorageError::Compacted));
        assert_eq!(
            store.entries(4, 7, u64::MAX),
            Err(StorageError::Unavailable)
        );

        // Appending right after the last entry extends the log.
        store.append(&entries_with_terms(6, &[3, 3])).unwrap();
        assert_eq!(store.last_index(), Ok(7));
        assert_eq!(store.term(7), Ok(3));
        // An empty append changes nothing.
        store.append(&[]).unwrap();
        assert_eq!(store.last_index(), Ok(7));
    }

    /// `entries` stops before the entry that would pass `max_bytes`, but always returns
    /// at least one entry.
    pub fn entries_respect_max_bytes<S: LogStore>(mut store: S) {
        let appended = entries_with_terms(1, &[1, 1, 1, 1]);
        store.append(&appended).unwrap();
        let entry_bytes = appended[0].size_bytes();
        let cases = [
            (0, 1),
            (entry_bytes - 1, 1),
            (entry_bytes, 1),
            (2 * entry_bytes - 1, 1),
            (2 * entry_bytes, 2),
            (3 * entry_bytes, 3),
            (4 * entry_bytes, 4),
            (u64::MAX, 4),
        ];
        for (max_bytes, expected_count) in cases {
            assert_eq!(
                store.entries(1, 5, max_bytes),
                Ok(appended[..expected_count].to_vec()),
                "entries(1, 5, {max_bytes}) with {entry_bytes}-byte entries"
            );
        }
        assert_eq!(store.entries(3, 5, 0), Ok(appended[2..3].to_vec()));
    }

    /// Appending at an index already in the log replaces that entry and everything
    /// after it (a follower's conflicting suffix, Raft paper §5.3).
    pub fn append_overwrites_conflicting_suffix<S: LogStore>(mut store: S) {
        store
            .append(&entries_with_terms(1, &[1, 1, 1, 1, 1]))
            .unwrap();
        let replacement = entries_with_terms(3, &[2, 2]);
        store.append(&replacement).unwrap();
        assert_eq!(store.last_index(), Ok(4));
        assert_eq!(store.term(2), Ok(1));
        assert_eq!(store.term(3), Ok(2));
        assert_eq!(store.term(4), Ok(2));
        assert_eq!(store.term(5), Err(StorageError::Unavailable));
        let mut expected = entries_with_terms(1, &[1, 1]);
        expected.extend(replacement);
        assert_eq!(all_entries(&store), expected);

        // Replacing from the first entry rewrites the whole log.
        let rewrite = entries_with_terms(1, &[3]);
        store.append(&rewrite).unwrap();
        assert_eq!(store.last_index(), Ok(1));
        assert_eq!(all_entries(&store), rewrite);
    }

    /// An append that would leave a gap or rewrite compacted entries is refused and
    /// leaves the log unchanged.
    pub fn append_rejects_gaps_and_compacted_indexes<S: LogStore>(mut store: S) {
        let appended = entries_with_terms(1, &[1, 1, 1, 1, 1]);
        store.append(&appended).unwrap();
        assert_eq!(
            store.append(&entries_with_terms(7, &[1])),
            Err(StorageError::Unavailable)
        );
        store
            .create_snapshot(2, ConfState::default(), Bytes::new())
            .unwrap();
        store.compact(2).unwrap();
        assert_eq!(
            store.append(&entries_with_terms(2, &[2])),
            Err(StorageError::Compacted)
        );
        assert_eq!(store.first_index(), Ok(3));
        assert_eq!(store.last_index(), Ok(5));
        assert_eq!(all_entries(&store), appended[2..].to_vec());
        // Appending right after the compaction point is allowed.
        store.append(&entries_with_terms(3, &[2])).unwrap();
        assert_eq!(store.last_index(), Ok(3));
        assert_eq!(store.term(3), Ok(2));
    }

    /// Compacting drops entries up to the compaction index and keeps its term; going
    /// back is a no-op and going past the last entry is refused.
    pub fn compact_keeps_term_of_compaction_point<S: LogStore>(mut store: S) {
        let appended = entries_with_terms(1, &[1, 2, 3, 4, 5]);
        store.append(&appended).unwrap();
        store
            .create_snapshot(3, ConfState::default(), Bytes::new())
            .unwrap();
        store.compact(3).unwrap();
        assert_eq!(store.first_index(), Ok(4));
        assert_eq!(store.last_index(), Ok(5));
        assert_eq!(store.term(3), Ok(3), "the compaction point's term is kept");
        assert_eq!(store.term(2), Err(StorageError::Compacted));
        assert_eq!(store.term(0), Err(StorageError::Compacted));
        assert_eq!(store.entries(3, 5, u64::MAX), Err(StorageError::Compacted));
        assert_eq!(store.entries(4, 6, u64::MAX), Ok(appended[3..].to_vec()));

        store.compact(2).unwrap();
        store.compact(3).unwrap();
        assert_eq!(
            store.first_index(),
            Ok(4),
            "compacting backwards is a no-op"
        );
        assert_eq!(store.compact(6), Err(StorageError::Unavailable));
        assert_eq!(store.first_index(), Ok(4));
        assert_eq!(store.last_index(), Ok(5));
    }

    /// Compacting up to the last index leaves an empty log that still answers the last
    /// term and accepts the next entry.
    pub fn compact_everything<S: LogStore>(mut store: S) {
        store.append(&entries_with_terms(1, &[1, 1, 2])).unwrap();
        store
            .create_snapshot(3, ConfState::default(), Bytes::new())
            .unwrap();
        store.compact(3).unwrap();
        assert_eq!(store.first_index(), Ok(4));
        assert_eq!(store.last_index(), Ok(3));
        assert_eq!(store.term(3), Ok(2));
        assert_eq!(store.entries(4, 4, u64::MAX), Ok(vec![]));
        assert_eq!(
            store.entries(4, 5, u64::MAX),
            Err(StorageError::Unavailable)
        );
        let next = entries_with_terms(4, &[2]);
        store.append(&next).unwrap();
        assert_eq!(all_entries(&store), next);
    }

    /// A created snapshot takes the term of its index and is returned by `snapshot`;
    /// entries stay until compacted, and an older snapshot is refused.
    pub fn create_snapshot<S: LogStore>(mut store: S) {
        let appended = entries_with_terms(1, &[1, 1, 2, 2, 3]);
        store.append(&appended).unwrap();
        let conf_state = ConfState::with_voters([1, 2, 3]);
        let data = Bytes::from_static(b"state at 3");
        let created = store
            .create_snapshot(3, conf_state.clone(), data.clone())
            .unwrap();
        let expected = Snapshot {
            metadata: SnapshotMetadata {
                index: 3,
                term: 2,
                conf_state: conf_state.clone(),
            },
            data,
        };
        assert_eq!(created, expected);
        assert_eq!(store.snapshot(3), Ok(expected.clone()));
        assert_eq!(
            store.first_index(),
            Ok(1),
            "creating a snapshot keeps the entries"
        );
        assert_eq!(all_entries(&store), appended);
        assert_eq!(
            store.initial_state().unwrap().conf_state,
            ConfState::default(),
            "creating a snapshot does not change the recorded membership"
        );

        let older = store.create_snapshot(2, conf_state.clone(), Bytes::new());
        assert!(
            matches!(older, Err(StorageError::Failed(_))),
            "older snapshot: {older:?}"
        );
        let same = store.create_snapshot(3, conf_state.clone(), Bytes::new());
        assert!(
            matches!(same, Err(StorageError::Failed(_))),
            "same snapshot: {same:?}"
        );
        assert_eq!(
            store.create_snapshot(6, conf_state.clone(), Bytes::new()),
            Err(StorageError::Unavailable)
        );
        assert_eq!(
            store.snapshot(0),
            Ok(expected),
            "failed creates change nothing"
        );

        // Compact to the snapshot, then snapshot the whole log.
        store.compact(3).unwrap();
        let latest = store.create_snapshot(5, conf_state, Bytes::new()).unwrap();
        assert_eq!((latest.metadata.index, latest.metadata.term), (5, 3));
        assert_eq!(store.first_index(), Ok(4));
    }

    /// An installed snapshot replaces the whole log and the membership; one not newer
    /// than the current snapshot or compaction point is refused.
    pub fn apply_snapshot<S: LogStore>(mut store: S) {
        store
            .append(&entries_with_terms(1, &[1, 1, 2, 2, 3, 3, 3]))
            .unwrap();
        let conf_state = ConfState::with_voters([4, 5, 6]);
        let snapshot = Snapshot {
            metadata: SnapshotMetadata {
                index: 5,
                term: 3,
                conf_state: conf_state.clone(),
            },
            data: Bytes::from_static(b"state at 5"),
        };
        store.apply_snapshot(snapshot.clone()).unwrap();
        assert_eq!(store.first_index(), Ok(6));
        assert_eq!(
            store.last_index(),
            Ok(5),
            "entries after the snapshot are dropped too"
        );
        assert_eq!(store.term(5), Ok(3));
        assert_eq!(store.term(4), Err(StorageError::Compacted));
        assert_eq!(store.term(6), Err(StorageError::Unavailable));
        assert_eq!(store.snapshot(5), Ok(snapshot.clone()));
        assert_eq!(store.initial_state().unwrap().conf_state, conf_state);

        for index in [3, 5] {
            let mut stale = snapshot.clone();
            stale.metadata.index = index;
            let refused = store.apply_snapshot(stale);
            assert!(
                matches!(refused, Err(StorageError::Failed(_))),
                "snapshot at {index}: {refused:?}"
            );
        }
        assert_eq!(
            store.snapshot(0),
            Ok(snapshot),
            "refused snapshots change nothing"
        );

        let next = entries_with_terms(6, &[4, 4]);
        store.append(&next).unwrap();
        assert_eq!(all_entries(&store), next);

        // A snapshot beyond the last entry is fine too (a follower far behind).
        let far = Snapshot {
            metadata: SnapshotMetadata {
                index: 20,
                term: 5,
                conf_state: ConfState::with_voters([7]),
            },
            data: Bytes::new(),
        };
        store.apply_snapshot(far.clone()).unwrap();
        assert_eq!(store.first_index(), Ok(21));
        assert_eq!(store.last_index(), Ok(20));
        assert_eq!(store.term(20), Ok(5));
        assert_eq!(
            store.initial_state().unwrap().conf_state,
            far.metadata.conf_state
        );
    }

    /// `initial_state` returns the last hard state recorded and the membership of the
    /// last installed snapshot.
    pub fn initial_state_reflects_writes<S: LogStore>(mut store: S) {
        let first = HardState {
            term: 2,
            vote: 3,
            commit: 0,
        };
        store.set_hard_state(first).unwrap();
        let second = HardState {
            term: 3,
            vote: 1,
            commit: 4,
        };
        store.set_hard_state(second).unwrap();
        assert_eq!(store.initial_state().unwrap().hard_state, second);

        let conf_state = ConfState {
            voters: vec![1, 2],
            learners: vec![3],
            ..ConfState::default()
        };
        let snapshot = Snapshot {
            metadata: SnapshotMetadata {
                index: 4,
                term: 3,
                conf_state: conf_state.clone(),
            },
            data: Bytes::new(),
        };
        store.apply_snapshot(snapshot).unwrap();
        assert_eq!(
            store.initial_state(),
            Ok(RaftState {
                hard_state: second,
                conf_state,
            }),
            "installing a snapshot keeps the hard state and takes its membership"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // MemStorage passes the suite every log store must pass.
    #[test]
    fn mem_storage_conforms() {
        conformance::run_all(MemStorage::new);
    }

    // A bootstrap store holds its membership in a committed snapshot at index 1, so
    // the log starts after it and a node added later can be sent that snapshot.
    #[test]
    fn with_conf_state_bootstraps_with_a_snapshot() {
        let conf_state = ConfState::with_voters([1, 2, 3]);
        let store = MemStorage::with_conf_state(conf_state.clone());
        assert_eq!(
            store.initial_state(),
            Ok(RaftState {
                hard_state: HardState {
                    term: 1,
                    vote: 0,
                    commit: 1
                },
                conf_state: conf_state.clone(),
            })
        );
        let snapshot = store.snapshot(0).unwrap();
        assert_eq!((snapshot.metadata.index, snapshot.metadata.term), (1, 1));
        assert_eq!(snapshot.metadata.conf_state, conf_state);
        assert!(snapshot.data.is_empty());
        assert_eq!(
            (store.first_index(), store.last_index(), store.term(1)),
            (Ok(2), Ok(1), Ok(1))
        );
    }

    // set_conf_state changes what a restart reads; hard_state returns the last one set.
    #[test]
    fn set_conf_state_and_hard_state() {
        let mut store = MemStorage::new();
        let conf_state = ConfState::with_voters([2]);
        store.set_conf_state(conf_state.clone());
        let hard_state = HardState {
            term: 5,
            vote: 2,
            commit: 0,
        };
        store.set_hard_state(hard_state).unwrap();
        assert_eq!(store.hard_state(), hard_state);
        assert_eq!(store.initial_state().unwrap().conf_state, conf_state);
    }

    // Compacting past the latest snapshot is allowed (documented), and a snapshot
    // installed afterwards must be newer than the compaction point.
    #[test]
    fn apply_snapshot_must_pass_compaction_point() {
        let mut store = MemStorage::new();
        let entries: Vec<Entry> = (1..=6)
            .map(|index| Entry {
                term: 1,
                index,
                kind: crate::types::EntryKind::Normal,
                data: Bytes::new(),
            })
            .collect();
        store.append(&entries).unwrap();
        store
            .create_snapshot(4, ConfState::default(), Bytes::new())
            .unwrap();
        store.compact(4).unwrap();
        let mut snapshot = Snapshot::default();
        snapshot.metadata.index = 4;
        snapshot.metadata.term = 1;
        assert_eq!(
            store.apply_snapshot(snapshot.clone()),
            Err(StorageError::Failed(
                "snapshot at index 4 is not newer than the current snapshot or compaction \
                 point at index 4"
                    .into()
            ))
        );
        snapshot.metadata.index = 5;
        store.apply_snapshot(snapshot).unwrap();
        assert_eq!(store.first_index(), Ok(6));
        assert_eq!(store.last_index(), Ok(5));
    }
}
