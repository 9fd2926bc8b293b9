//! The raft log as the core sees it: durable entries in [`Storage`] plus an unstable
//! tail (and possibly an incoming snapshot) not yet persisted.
//!
//! Log pointers, always in this order (checked by [`RaftLog::check_invariants`]):
//!
//! ```text
//! first_index - 1 <= applying <= committed <= last_index
//!         applied <= applying
//!       persisted <= persisting <= last_index
//! ```
//!
//! - `first_index - 1` is the snapshot's index (the compaction point): everything at or
//!   below it lives only in a snapshot, so nothing at or below it can still be waiting
//!   to be applied from the log. The driver keeps this by compacting storage only up to
//!   what it has applied and persisted.
//! - `committed` is known to be on a quorum (Raft paper §5.3); it never moves back, and
//!   entries at or below it are never truncated (§5.4, the Leader Completeness
//!   Property), which is why it is bounded by `last_index`.
//! - `applying` is the highest entry handed to the driver for applying, `applied` the
//!   highest the state machine has applied. Committed entries may be handed out before
//!   they are persisted locally: the driver persists a `Ready`'s entries before it
//!   applies that `Ready`'s committed entries, and a committed entry is already durable
//!   on a quorum.
//! - `applied` can be below `first_index - 1` in one window: after [`RaftLog::restore`]
//!   installs a snapshot and until the driver has applied it and called
//!   [`RaftLog::applied_to`] with its index. `restore` sets `applying` to the snapshot's
//!   index, so no entry the snapshot covers is handed out for applying.
//! - `persisting` is the highest unstable entry handed to the driver for persisting,
//!   `persisted` the highest index known durable. Both are lowered when an append
//!   truncates entries they cover, so the rewritten entries are handed out again.
//!   `persisted` can be below `first_index - 1` while an incoming snapshot is not yet
//!   durable.

use crate::errors::StorageError;
use crate::storage::{extend_within_bytes, Storage};
use crate::types::{Entry, Index, Snapshot, Term};

/// The log: storage plus unstable tail.
pub struct RaftLog<S: Storage> {
    /// The durable part.
    pub store: S,
    /// An incoming snapshot (InstallSnapshot, Raft paper §7) not yet durable.
    // Invariant: if set, unstable_offset == its index + 1 and persisted < its index.
    unstable_snapshot: Option<Snapshot>,
    /// Entries not yet known durable, at indexes `unstable_offset..`.
    // Invariant: unstable_entries[i].index == unstable_offset + i.
    unstable_entries: Vec<Entry>,
    /// Index of the first unstable entry. Every entry below it (and after the snapshot)
    /// is durable in `store`, and `store` is read only below it.
    // Invariant: unstable_offset - 1 <= persisting, and last_index() ==
    // unstable_offset + unstable_entries.len() - 1.
    unstable_offset: Index,
    /// Highest index handed to the driver for persisting; `unstable_entries()` returns
    /// the entries after it.
    // Invariant: persisted <= persisting <= last_index().
    persisting: Index,
    /// Highest index known durable.
    // Invariant: persisted == unstable_offset - 1 when no snapshot is unstable.
    persisted: Index,
    /// The commit index (Raft paper Figure 2, commitIndex).
    // Invariant: first_index() - 1 <= committed <= last_index().
    committed: Index,
    /// Highest index handed to the driver for applying.
    // Invariant: first_index() - 1 <= applying <= committed.
    applying: Index,
    /// Highest index the state machine has applied (Figure 2, lastApplied).
    // Invariant: applied <= applying. Below first_index() - 1 only while a restored
    // snapshot is being applied.
    applied: Index,
}

impl<S: Storage> RaftLog<S> {
    /// A log over `store`; `committed` and `applied` start at the snapshot index, and
    /// everything in `store` counts as persisted.
    pub fn new(store: S) -> Result<Self, StorageError> {
        let first_index = store.first_index()?;
        let last_index = store.last_index()?;
        Ok(RaftLog {
            store,
            unstable_snapshot: None,
            unstable_entries: Vec::new(),
            unstable_offset: last_index + 1,
            persisting: last_index,
            persisted: last_index,
            committed: first_index - 1,
            applying: first_index - 1,
            applied: first_index - 1,
        })
    }

    /// Index of the first entry available (snapshot index + 1), counting an unstable
    /// snapshot. Panics if the storage fails.
    pub fn first_index(&self) -> Index {
        match &self.unstable_snapshot {
            Some(snapshot) => snapshot.metadata.index + 1,
            None => expect_storage(self.store.first_index(), "reading first_index"),
        }
    }

    /// Index of the last entry (unstable or durable), or the snapshot index. Panics if
    /// the storage fails.
    pub fn last_index(&self) -> Index {
        if let Some(last) = self.unstable_entries.last() {
            return last.index;
        }
        match &self.unstable_snapshot {
            Some(snapshot) => snapshot.metadata.index,
            None => expect_storage(self.store.last_index(), "reading last_index"),
        }
    }

    /// Term of the last entry (the snapshot's term when the log has no entries). Panics
    /// if the storage fails.
    pub fn last_term(&self) -> Term {
        let last_index = self.last_index();
        expect_storage(self.term(last_index), "reading the term of the last entry")
    }

    /// Term at `index`, for `first_index() - 1 <= index <= last_index()` (the term at
    /// `first_index() - 1` is the snapshot's; index 0 of a log never compacted has term
    /// 0). Beyond `last_index` gives `Unavailable`, below `first_index - 1` gives
    /// `Compacted`.
    pub fn term(&self, index: Index) -> Result<Term, StorageError> {
        if index > self.last_index() {
            return Err(StorageError::Unavailable);
        }
        if index < self.first_index() - 1 {
            return Err(StorageError::Compacted);
        }
        if let Some(snapshot) = &self.unstable_snapshot {
            if index == snapshot.metadata.index {
                return Ok(snapshot.metadata.term);
            }
        }
        if index >= self.unstable_offset {
            return Ok(self.unstable_entries[(index - self.unstable_offset) as usize].term);
        }
        self.store.term(index)
    }

    /// True when the entry at `index` has `term` (false when unknown).
    pub fn match_term(&self, index: Index, term: Term) -> bool {
        self.term(index) == Ok(term)
    }

    /// Raft §5.4.1: is a log ending at (`last_index`, `term`) at least as up to date as ours?
    /// It is if its last term is higher, or equal with a last index at least ours.
    pub fn is_up_to_date(&self, last_index: Index, term: Term) -> bool {
        let our_last_term = self.last_term();
        term > our_last_term || (term == our_last_term && last_index >= self.last_index())
    }

    /// The commit index.
    pub fn committed(&self) -> Index {
        self.committed
    }

    /// The applied index.
    pub fn applied(&self) -> Index {
        self.applied
    }

    /// The highest durable index.
    pub fn persisted(&self) -> Index {
        self.persisted
    }

    /// Follower side of AppendEntries (§5.3): if our entry at `index` has `log_term`,
    /// append `entries` (dropping those we already have, truncating at the first
    /// conflict), advance commit to `min(committed, index + entries.len())`, and
    /// return the index of the last new entry. `None` if the terms do not match.
    /// Panics if a conflict is found at or below the commit index (a safety breach),
    /// or if `entries` do not follow on from `index`.
    pub fn maybe_append(
        &mut self,
        index: Index,
        log_term: Term,
        committed: Index,
        mut entries: Vec<Entry>,
    ) -> Option<Index> {
        if !self.match_term(index, log_term) {
            return None;
        }
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            assert!(
                first.index == index + 1 && last.index == index + entries.len() as Index,
                "entries {}..={} do not follow on from index {index}",
                first.index,
                last.index
            );
        }
        let last_new_index = index + entries.len() as Index;
        if let Some(conflict_index) = self.find_conflict(&entries) {
            assert!(
                conflict_index > self.committed,
                "entry {conflict_index} (term {}) conflicts with committed entry (term {:?}), \
                 committed {}",
                entries[(conflict_index - index - 1) as usize].term,
                self.term(conflict_index),
                self.committed
            );
            entries.drain(..(conflict_index - index - 1) as usize);
            self.append(entries);
        }
        self.commit_to(committed.min(last_new_index));
        Some(last_new_index)
    }

    /// The index of the first of `entries` that is not in our log with the same term
    /// (a conflict, or the first new entry), or `None` if we have them all.
    fn find_conflict(&self, entries: &[Entry]) -> Option<Index> {
        entries
            .iter()
            .find(|entry| !self.match_term(entry.index, entry.term))
            .map(|entry| entry.index)
    }

    /// Appends to the unstable tail, truncating any entries at or after
    /// `entries[0].index`; `persisting` and `persisted` drop to just before the
    /// truncation so the rewritten entries are persisted again. Returns the new last
    /// index (the current one for no entries). Panics if that would truncate committed
    /// entries or leave a gap after `last_index`.
    pub fn append(&mut self, entries: Vec<Entry>) -> Index {
        let Some(first) = entries.first() else {
            return self.last_index();
        };
        let after = first.index - 1;
        assert!(
            after >= self.committed,
            "appending at index {} would truncate committed entries (committed {})",
            first.index,
            self.committed
        );
        let last_index = self.last_index();
        assert!(
            after <= last_index,
            "appending at index {} would leave a gap after last index {last_index}",
            first.index
        );
        if after + 1 < self.unstable_offset {
            // Rewrites entries already in storage: the storage is read only below the
            // new offset, and the replaced durable entries are no longer ours.
            self.unstable_offset = after + 1;
            self.unstable_entries.clear();
        } else {
            let keep = (after + 1 - self.unstable_offset) as usize;
            self.unstable_entries.truncate(keep);
        }
        self.persisting = self.persisting.min(after);
        self.persisted = self.persisted.min(after);
        self.unstable_entries.extend(entries);
        self.last_index()
    }

    /// Fast backtracking: the largest index `<= index` whose term is `<= term`, with its
    /// term. Used by a follower to hint where a leader should retry, and by the leader
    /// to skip a whole term of the follower's log at once.
    ///
    /// Where our term is unknown the answer is that index with term 0: `(index, 0)` when
    /// `index > last_index()`, and the first compacted index reached when walking back
    /// into the snapshot. `(0, 0)` if every entry down to index 1 has a higher term.
    pub fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut index = index;
        while index > 0 {
            match self.term(index) {
                Err(_) => return (index, 0),
                Ok(our_term) if our_term <= term => return (index, our_term),
                Ok(_) => index -= 1,
            }
        }
        (0, 0)
    }

    /// Entries in `[low, high)` up to `max_bytes` (at least one), from storage and the
    /// unstable tail. `Compacted` if `low < first_index()`, `Unavailable` if
    /// `high > last_index() + 1`. Panics if `low > high`.
    pub fn slice(
        &self,
        low: Index,
        high: Index,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        assert!(low <= high, "invalid slice [{low}, {high})");
        if low < self.first_index() {
            return Err(StorageError::Compacted);
        }
        if high > self.last_index() + 1 {
            return Err(StorageError::Unavailable);
        }
        let mut out = Vec::new();
        if low < self.unstable_offset {
            let stored_high = high.min(self.unstable_offset);
            out = self.store.entries(low, stored_high, max_bytes)?;
            if (out.len() as Index) < stored_high - low {
                // The byte limit stopped the read.
                return Ok(out);
            }
        }
        if high > self.unstable_offset {
            let unstable_low = low.max(self.unstable_offset);
            let range = (unstable_low - self.unstable_offset) as usize
                ..(high - self.unstable_offset) as usize;
            extend_within_bytes(&mut out, &self.unstable_entries[range], max_bytes);
        }
        Ok(out)
    }

    /// Entries from `low` to the end, up to `max_bytes` (at least one if any). No
    /// entries if `low > last_index()`; `Compacted` if `low < first_index()`.
    pub fn entries(&self, low: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        let last_index = self.last_index();
        if low > last_index {
            return Ok(Vec::new());
        }
        self.slice(low, last_index + 1, max_bytes)
    }

    /// Unstable entries not yet handed to the driver for persisting.
    pub fn unstable_entries(&self) -> &[Entry] {
        let handed_out = (self.persisting + 1 - self.unstable_offset) as usize;
        &self.unstable_entries[handed_out..]
    }

    /// The incoming snapshot not yet persisted, if any. It is returned until
    /// [`RaftLog::stable_snapshot_to`] is called; the caller tracks whether it has
    /// already handed it out.
    pub fn unstable_snapshot(&self) -> Option<&Snapshot> {
        self.unstable_snapshot.as_ref()
    }

    /// The highest index handed to the driver for applying (at least `applied`).
    pub fn applying(&self) -> Index {
        self.applying.max(self.applied)
    }

    /// True if there are committed entries not yet applied (and not already handed out).
    pub fn has_next_committed_entries(&self) -> bool {
        self.applying.max(self.applied) < self.committed
    }

    /// Committed entries after `applied` (and after what was already handed out), up to
    /// `max_bytes` (at least one if any). They may not be persisted locally yet.
    /// Panics if the storage fails or no longer has them (it was compacted past what
    /// was applied).
    pub fn next_committed_entries(&self, max_bytes: u64) -> Vec<Entry> {
        if !self.has_next_committed_entries() {
            return Vec::new();
        }
        let low = self.applying.max(self.applied) + 1;
        expect_storage(
            self.slice(low, self.committed + 1, max_bytes),
            "reading committed entries to apply",
        )
    }

    /// Commits up to `index` if the entry there has `term` (§5.4.2: only entries of the
    /// current term are committed by counting replicas). Returns true if commit moved.
    pub fn maybe_commit(&mut self, index: Index, term: Term) -> bool {
        if index > self.committed && self.match_term(index, term) {
            self.commit_to(index);
            return true;
        }
        false
    }

    /// Raises the commit index to `index` (never lowers it). Panics past `last_index`.
    pub fn commit_to(&mut self, index: Index) {
        if index <= self.committed {
            return;
        }
        let last_index = self.last_index();
        assert!(
            index <= last_index,
            "commit index {index} is past the last index {last_index}; was the log \
             truncated or lost? (committed {})",
            self.committed
        );
        self.committed = index;
    }

    /// Records that the state machine applied up to `index` (the entries handed out, or
    /// a restored snapshot's index). Indexes at or below `applied` are ignored. Panics
    /// past the commit index.
    pub fn applied_to(&mut self, index: Index) {
        assert!(
            index <= self.committed,
            "applied index {index} is past the commit index {} (applied {})",
            self.committed,
            self.applied
        );
        if index > self.applied {
            self.applied = index;
            self.applying = self.applying.max(index);
        }
    }

    /// Records that entries up to `index` (at `term`) are durable: drops them from the
    /// unstable tail if its entry at `index` still has `term`. Ignored if that entry was
    /// overwritten since (a new leader's entries; they will be handed out again), or if
    /// `index` is not in the unstable tail.
    ///
    /// Also ignored while a restored snapshot is not yet durable: the acknowledgement
    /// may be for a write handed out before the restore, which the snapshot, written
    /// after it, wipes from storage — even when the entries match by index and term.
    /// So for a `Ready` holding both, call [`RaftLog::stable_snapshot_to`] first.
    /// Acknowledgements must come in the order the writes were handed out.
    pub fn stable_to(&mut self, index: Index, term: Term) {
        if index < self.unstable_offset || self.unstable_snapshot.is_some() {
            return;
        }
        let position = (index - self.unstable_offset) as usize;
        match self.unstable_entries.get(position) {
            Some(entry) if entry.term == term => {}
            _ => return,
        }
        self.unstable_entries.drain(..=position);
        self.unstable_offset = index + 1;
        self.persisting = self.persisting.max(index);
        self.persisted = self.persisted.max(index);
    }

    /// Records that the unstable snapshot at `index` is durable. Ignored if the unstable
    /// snapshot is not at `index`.
    pub fn stable_snapshot_to(&mut self, index: Index) {
        if self
            .unstable_snapshot
            .as_ref()
            .map(|snapshot| snapshot.metadata.index)
            != Some(index)
        {
            return;
        }
        self.unstable_snapshot = None;
        self.persisted = self.persisted.max(index);
    }

    /// Installs `snapshot` as the unstable snapshot: the log becomes empty after it,
    /// commit moves to its index, and so does `applying` (the snapshot is what will be
    /// applied; `applied` stays put until the driver applies it and calls
    /// [`RaftLog::applied_to`]). `persisted` drops below the snapshot's index until
    /// [`RaftLog::stable_snapshot_to`]. Panics unless the snapshot is above the commit
    /// index (one at or below it adds nothing, and would be refused by the storage).
    pub fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.metadata.index;
        assert!(
            index > self.committed,
            "cannot restore a snapshot at index {index} (term {}) with committed {}",
            snapshot.metadata.term,
            self.committed
        );
        self.unstable_snapshot = Some(snapshot);
        self.unstable_entries.clear();
        self.unstable_offset = index + 1;
        self.persisting = index;
        self.persisted = self.persisted.min(index - 1);
        self.committed = index;
        self.applying = index;
    }

    /// The snapshot to send a follower: the unstable one or the storage's.
    pub fn snapshot(&self, request_index: Index) -> Result<Snapshot, StorageError> {
        match &self.unstable_snapshot {
            Some(snapshot) => Ok(snapshot.clone()),
            None => self.store.snapshot(request_index),
        }
    }

    /// Marks entries up to `index` as handed to the driver for applying (so the next
    /// `next_committed_entries` starts after them). Panics past the commit index.
    pub fn applying_to(&mut self, index: Index) {
        assert!(
            index <= self.committed,
            "applying index {index} is past the commit index {} (applying {}, applied {})",
            self.committed,
            self.applying,
            self.applied
        );
        self.applying = self.applying.max(index);
    }

    /// Marks unstable entries up to `index` as handed to the driver for persisting, so
    /// they are not handed out twice. Panics past `last_index`.
    pub fn persisting_to(&mut self, index: Index) {
        let last_index = self.last_index();
        assert!(
            index <= last_index,
            "persisting index {index} is past the last index {last_index} (persisting {})",
            self.persisting
        );
        self.persisting = self.persisting.max(index);
    }

    /// Checks the log pointer invariants, panicking with the values on a breach.
    pub fn check_invariants(&self) {
        let first_index = self.first_index();
        let last_index = self.last_index();
        let snapshot_index = self
            .unstable_snapshot
            .as_ref()
            .map(|snapshot| snapshot.metadata.index);
        // Formatted only when an assertion fails.
        let pointers = || {
            format!(
                "first_index {first_index}, applied {}, applying {}, committed {}, persisted {}, \
             persisting {}, last_index {last_index}, unstable_offset {}, unstable entries {}, \
             unstable snapshot {snapshot_index:?}",
                self.applied,
                self.applying,
                self.committed,
                self.persisted,
                self.persisting,
                self.unstable_offset,
                self.unstable_entries.len(),
            )
        };
        assert!(
            first_index - 1 <= self.applying
                && self.applied <= self.applying
                && self.applying <= self.committed
                && self.committed <= last_index,
            "log pointers out of order (want first_index - 1 <= applying <= committed <= \
             last_index, applied <= applying): {}",
            pointers()
        );
        assert!(
            self.persisted <= self.persisting
                && self.persisting <= last_index
                && self.unstable_offset - 1 <= self.persisting,
            "persist pointers out of order (want persisted <= persisting <= last_index, \
             unstable_offset - 1 <= persisting): {}",
            pointers()
        );
        match snapshot_index {
            Some(index) => assert!(
                self.unstable_offset == index + 1 && self.persisted < index,
                "unstable snapshot out of place (want unstable_offset == snapshot index + 1, \
                 persisted < snapshot index): {}",
                pointers()
            ),
            None => assert!(
                self.persisted == self.unstable_offset - 1,
                "persisted is not just below the unstable tail: {}",
                pointers()
            ),
        }
        assert!(
            last_index == self.unstable_offset + self.unstable_entries.len() as Index - 1,
            "last_index is not the end of the unstable tail (was storage written past what \
             was acknowledged?): {}",
            pointers()
        );
        if let (Some(first), Some(last)) =
            (self.unstable_entries.first(), self.unstable_entries.last())
        {
            assert!(
                first.index == self.unstable_offset
                    && last.index
                        == self.unstable_offset + self.unstable_entries.len() as Index - 1,
                "unstable entries {}..={} are not contiguous from unstable_offset: {}",
                first.index,
                last.index,
                pointers()
            );
        }
    }
}

/// Unwraps a storage result the caller's signature cannot return, panicking with what
/// was being done.
fn expect_storage<T>(result: Result<T, StorageError>, doing: &str) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("storage error {doing}: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::storage::{LogStore, MemStorage};
    use crate::types::{ConfState, EntryKind, SnapshotMetadata};

    /// Bytes one test entry counts for: a 10-byte payload plus the fixed overhead.
    const ENTRY_BYTES: u64 = 10 + crate::types::ENTRY_OVERHEAD_BYTES;

    fn entry(index: Index, term: Term) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: Bytes::from_static(&[7; 10]),
        }
    }

    /// Entries `first..` with the given terms.
    fn entries(first: Index, terms: &[Term]) -> Vec<Entry> {
        terms
            .iter()
            .enumerate()
            .map(|(offset, &term)| entry(first + offset as Index, term))
            .collect()
    }

    /// A log over a storage durably holding `stored_terms` at indexes 1.., nothing
    /// committed.
    fn log_over(stored_terms: &[Term]) -> RaftLog<MemStorage> {
        let mut store = MemStorage::new();
        store.append(&entries(1, stored_terms)).unwrap();
        RaftLog::new(store).unwrap()
    }

    /// What a driver does with a `Ready`: hand out the unstable entries, write them,
    /// acknowledge them.
    fn persist_unstable(log: &mut RaftLog<MemStorage>) {
        let batch = log.unstable_entries().to_vec();
        let Some(last) = batch.last().cloned() else {
            return;
        };
        log.persisting_to(last.index);
        log.store.append(&batch).unwrap();
        log.stable_to(last.index, last.term);
    }

    fn terms(log: &RaftLog<MemStorage>, indexes: std::ops::RangeInclusive<Index>) -> Vec<Term> {
        indexes.map(|index| log.term(index).unwrap()).collect()
    }

    fn snapshot(index: Index, term: Term) -> Snapshot {
        Snapshot {
            metadata: SnapshotMetadata {
                index,
                term,
                conf_state: ConfState::with_voters([1, 2, 3]),
            },
            data: Bytes::from_static(b"state"),
        }
    }

    // A log over empty storage starts with every pointer at 0 and answers term 0 for
    // index 0 only.
    #[test]
    fn new_over_empty_storage() {
        let log = RaftLog::new(MemStorage::new()).unwrap();
        assert_eq!(log.first_index(), 1);
        assert_eq!(log.last_index(), 0);
        assert_eq!(log.last_term(), 0);
        assert_eq!((log.committed(), log.applied(), log.persisted()), (0, 0, 0));
        assert_eq!(log.term(0), Ok(0));
        assert_eq!(log.term(1), Err(StorageError::Unavailable));
        assert_eq!(log.unstable_entries(), &[] as &[Entry]);
        assert_eq!(log.unstable_snapshot(), None);
        assert!(!log.has_next_committed_entries());
        assert_eq!(log.entries(1, u64::MAX), Ok(vec![]));
        log.check_invariants();
    }

    // Over compacted storage, committed and applied start at the compaction point,
    // everything stored counts as persisted, and compacted terms are reported so.
    #[test]
    fn new_over_compacted_storage() {
        let mut store = MemStorage::new();
        store.append(&entries(1, &[1, 1, 2, 2, 3])).unwrap();
        store
            .create_snapshot(2, ConfState::default(), Bytes::new())
            .unwrap();
        store.compact(2).unwrap();
        let log = RaftLog::new(store).unwrap();
        assert_eq!(
            (log.first_index(), log.last_index(), log.last_term()),
            (3, 5, 3)
        );
        assert_eq!((log.committed(), log.applied(), log.persisted()), (2, 2, 5));
        assert_eq!(terms(&log, 2..=5), vec![1, 2, 2, 3]);
        assert_eq!(log.term(1), Err(StorageError::Compacted));
        assert_eq!(log.term(6), Err(StorageError::Unavailable));
        assert_eq!(log.slice(2, 4, u64::MAX), Err(StorageError::Compacted));
        log.check_invariants();
    }

    // Appending extends the unstable tail; reads join the durable and unstable parts.
    #[test]
    fn append_extends_unstable_tail() {
        let mut log = log_over(&[1, 1, 1]);
        assert_eq!(log.append(entries(4, &[2, 2])), 5);
        assert_eq!(
            (log.last_index(), log.last_term(), log.persisted()),
            (5, 2, 3)
        );
        assert_eq!(terms(&log, 0..=5), vec![0, 1, 1, 1, 2, 2]);
        assert_eq!(log.unstable_entries(), entries(4, &[2, 2]).as_slice());
        let mut all = entries(1, &[1, 1, 1]);
        all.extend(entries(4, &[2, 2]));
        assert_eq!(log.entries(1, u64::MAX), Ok(all));
        assert_eq!(log.append(vec![]), 5, "an empty append changes nothing");
        log.check_invariants();
    }

    // An append inside the unstable tail replaces its suffix (a follower adopting a new
    // leader's entries, Raft paper §5.3).
    #[test]
    fn append_truncates_unstable_suffix() {
        let mut log = log_over(&[1, 1, 1]);
        log.append(entries(4, &[2, 2, 2]));
        assert_eq!(log.append(entries(5, &[3])), 5);
        assert_eq!(terms(&log, 3..=5), vec![1, 2, 3]);
        assert_eq!(log.term(6), Err(StorageError::Unavailable));
        let mut expected = entries(4, &[2]);
        expected.extend(entries(5, &[3]));
        assert_eq!(log.unstable_entries(), expected.as_slice());
        log.check_invariants();
    }

    // An append below the durable end replaces durable entries: `persisted` drops to
    // just before it and the storage is no longer read from there.
    #[test]
    fn append_into_durable_entries_lowers_persisted() {
        let mut log = log_over(&[1, 1, 1, 1, 1]);
        log.commit_to(2);
        assert_eq!(log.append(entries(4, &[2])), 4);
        assert_eq!(log.persisted(), 3);
        assert_eq!(terms(&log, 1..=4), vec![1, 1, 1, 2]);
        assert_eq!(log.term(5), Err(StorageError::Unavailable));
        assert_eq!(log.unstable_entries(), entries(4, &[2]).as_slice());
        let mut expected = entries(1, &[1, 1, 1]);
        expected.extend(entries(4, &[2]));
        assert_eq!(log.slice(1, 5, u64::MAX), Ok(expected));
        log.check_invariants();

        persist_unstable(&mut log);
        assert_eq!(log.persisted(), 4);
        assert_eq!(log.store.last_index(), Ok(4));
        log.check_invariants();
    }

    // Entries handed out for persisting and then overwritten are handed out again,
    // and the stale acknowledgement for the old ones is ignored.
    #[test]
    fn truncation_below_persisting_hands_entries_out_again() {
        let mut log = log_over(&[]);
        log.append(entries(1, &[1, 1, 1, 1]));
        log.persisting_to(4);
        assert_eq!(log.unstable_entries(), &[] as &[Entry]);

        log.append(entries(3, &[2]));
        assert_eq!(log.unstable_entries(), entries(3, &[2]).as_slice());
        assert_eq!(log.persisted(), 0);
        // The old write finishes: entry 4 is gone and entry 3 has another term now.
        log.stable_to(4, 1);
        log.stable_to(3, 1);
        assert_eq!(log.persisted(), 0);
        assert_eq!(log.unstable_entries(), entries(3, &[2]).as_slice());
        // Entries 1 and 2 were not overwritten, so their acknowledgement counts.
        log.stable_to(2, 1);
        assert_eq!(log.persisted(), 2);
        assert_eq!(log.unstable_entries(), entries(3, &[2]).as_slice());
        log.check_invariants();
    }

    // Appending over committed entries would lose them (§5.4): it panics.
    #[test]
    #[should_panic(
        expected = "appending at index 2 would truncate committed entries (committed 2)"
    )]
    fn append_over_committed_panics() {
        let mut log = log_over(&[1, 1, 1]);
        log.commit_to(2);
        log.append(entries(2, &[2]));
    }

    // An append that leaves a gap after the last entry is a caller bug: it panics.
    #[test]
    #[should_panic(expected = "appending at index 5 would leave a gap after last index 3")]
    fn append_with_gap_panics() {
        let mut log = log_over(&[1, 1, 1]);
        log.append(entries(5, &[1]));
    }

    // maybe_append follows AppendEntries (Raft paper §5.3): refuse on a mismatch at the
    // previous index, skip entries we have, truncate at the first conflict, and commit
    // no further than the last new entry.
    #[test]
    fn maybe_append_cases() {
        // Each case runs on a log holding indexes 1..=3 with terms 1, 2, 3, committed 1.
        // Columns: previous index, its term, leader commit, terms of the new entries
        // (from previous index + 1); then the result, committed and terms afterwards.
        type Case = (
            Index,
            Term,
            Index,
            &'static [Term],
            Option<Index>,
            Index,
            &'static [Term],
        );
        #[rustfmt::skip]
        let cases: [Case; 12] = [
            // The previous entry's term does not match, or it is beyond our log.
            (3, 2, 3, &[4], None, 1, &[1, 2, 3]),
            (4, 3, 3, &[4], None, 1, &[1, 2, 3]),
            // No entries: commit follows the leader, up to the last new entry.
            (3, 3, 3, &[], Some(3), 3, &[1, 2, 3]),
            (3, 3, 4, &[], Some(3), 3, &[1, 2, 3]),
            (3, 3, 2, &[], Some(3), 2, &[1, 2, 3]),
            // Commit never moves back.
            (3, 3, 0, &[], Some(3), 1, &[1, 2, 3]),
            // New entries at the end.
            (3, 3, 3, &[4], Some(4), 3, &[1, 2, 3, 4]),
            (3, 3, 5, &[4], Some(4), 4, &[1, 2, 3, 4]),
            (3, 3, 5, &[4, 4], Some(5), 5, &[1, 2, 3, 4, 4]),
            // Entries we already have change nothing; later ones are kept, and commit
            // stops at the last entry the leader vouched for.
            (1, 1, 3, &[2], Some(2), 2, &[1, 2, 3]),
            // A conflict replaces our suffix from the conflicting entry.
            (2, 2, 3, &[4], Some(3), 3, &[1, 2, 4]),
            (1, 1, 1, &[2, 4, 4], Some(4), 1, &[1, 2, 4, 4]),
        ];
        for (index, log_term, leader_commit, new_terms, want_result, want_committed, want_terms) in
            cases
        {
            let mut log = log_over(&[1, 2, 3]);
            log.commit_to(1);
            let case =
                format!("maybe_append({index}, {log_term}, {leader_commit}, terms {new_terms:?})");
            let result = log.maybe_append(
                index,
                log_term,
                leader_commit,
                entries(index + 1, new_terms),
            );
            assert_eq!(result, want_result, "{case}: result");
            assert_eq!(log.committed(), want_committed, "{case}: committed");
            let last_index = want_terms.len() as Index;
            assert_eq!(log.last_index(), last_index, "{case}: last index");
            assert_eq!(terms(&log, 1..=last_index), want_terms, "{case}: terms");
            log.check_invariants();
        }
    }

    // Resending entries we already have durably does not make us persist them again.
    #[test]
    fn maybe_append_of_known_entries_keeps_them_durable() {
        let mut log = log_over(&[1, 1, 2]);
        assert_eq!(log.maybe_append(0, 0, 0, entries(1, &[1, 1, 2])), Some(3));
        assert_eq!(log.persisted(), 3);
        assert_eq!(log.unstable_entries(), &[] as &[Entry]);
    }

    // A leader whose entries conflict with our committed ones breaks Leader Completeness
    // (§5.4): maybe_append panics instead of truncating.
    #[test]
    #[should_panic(
        expected = "entry 2 (term 4) conflicts with committed entry (term Ok(1)), committed 2"
    )]
    fn maybe_append_conflicting_with_committed_panics() {
        let mut log = log_over(&[1, 1, 1]);
        log.commit_to(2);
        log.maybe_append(1, 1, 3, entries(2, &[4]));
    }

    // find_conflict_by_term walks back to the last entry whose term is at most the given
    // one (the §5.3 optimisation of skipping a term per round trip).
    #[test]
    fn find_conflict_by_term_cases() {
        let log = log_over(&[1, 1, 2, 2, 4, 4, 4]);
        assert_eq!(log.find_conflict_by_term(7, 5), (7, 4));
        assert_eq!(log.find_conflict_by_term(7, 4), (7, 4));
        assert_eq!(log.find_conflict_by_term(7, 3), (4, 2));
        assert_eq!(log.find_conflict_by_term(5, 2), (4, 2));
        assert_eq!(log.find_conflict_by_term(7, 1), (2, 1));
        assert_eq!(log.find_conflict_by_term(7, 0), (0, 0));
        assert_eq!(log.find_conflict_by_term(0, 0), (0, 0));
        assert_eq!(
            log.find_conflict_by_term(9, 2),
            (9, 0),
            "beyond the log: term unknown"
        );

        let mut store = MemStorage::new();
        store.append(&entries(1, &[1, 1, 2, 2, 4, 4, 4])).unwrap();
        store
            .create_snapshot(3, ConfState::default(), Bytes::new())
            .unwrap();
        store.compact(3).unwrap();
        let compacted = RaftLog::new(store).unwrap();
        assert_eq!(compacted.find_conflict_by_term(7, 2), (4, 2));
        assert_eq!(
            compacted.find_conflict_by_term(7, 1),
            (2, 0),
            "walked into the snapshot"
        );
    }

    // A log is at least as up to date as ours if its last term is higher, or equal with
    // a last index at least ours (Raft paper §5.4.1).
    #[test]
    fn is_up_to_date_compares_last_term_then_index() {
        let log = log_over(&[1, 2, 3]);
        assert!(log.is_up_to_date(2, 4), "higher last term, shorter log");
        assert!(!log.is_up_to_date(4, 2), "lower last term, longer log");
        assert!(!log.is_up_to_date(2, 3), "same term, shorter log");
        assert!(log.is_up_to_date(3, 3), "same term, same length");
        assert!(log.is_up_to_date(4, 3), "same term, longer log");
    }

    // maybe_commit moves commit only forward and only to an entry of the given term
    // (§5.4.2: a leader commits by counting replicas only entries of its own term).
    #[test]
    fn maybe_commit_requires_matching_term() {
        let mut log = log_over(&[1, 2, 3]);
        assert!(!log.maybe_commit(3, 2), "term mismatch");
        assert_eq!(log.committed(), 0);
        assert!(log.maybe_commit(2, 2));
        assert_eq!(log.committed(), 2);
        assert!(!log.maybe_commit(1, 1), "not above committed");
        assert!(!log.maybe_commit(4, 3), "beyond the log");
        assert_eq!(log.committed(), 2);
        assert!(log.maybe_commit(3, 3));
        assert_eq!(log.committed(), 3);
    }

    // commit_to never lowers the commit index.
    #[test]
    fn commit_to_never_lowers() {
        let mut log = log_over(&[1, 1, 1]);
        log.commit_to(3);
        log.commit_to(1);
        assert_eq!(log.committed(), 3);
    }

    // Committing past the last entry is a bug in the caller: it panics.
    #[test]
    #[should_panic(expected = "commit index 4 is past the last index 3")]
    fn commit_to_past_last_index_panics() {
        let mut log = log_over(&[1, 1, 1]);
        log.commit_to(4);
    }

    // slice joins storage and the unstable tail under one byte limit, returning at
    // least one entry, with Compacted/Unavailable just outside the log.
    #[test]
    fn slice_across_storage_and_unstable_tail() {
        let mut store = MemStorage::new();
        store.append(&entries(1, &[1, 1, 1])).unwrap();
        store
            .create_snapshot(1, ConfState::default(), Bytes::new())
            .unwrap();
        store.compact(1).unwrap();
        let mut log = RaftLog::new(store).unwrap();
        log.append(entries(4, &[2, 2, 2]));
        let all = log.entries(2, u64::MAX).unwrap();
        assert_eq!(
            all.iter().map(|entry| entry.index).collect::<Vec<_>>(),
            vec![2, 3, 4, 5, 6]
        );

        let cases = [
            (2, 7, u64::MAX, 2..7),
            (2, 7, 0, 2..3),
            (2, 7, 2 * ENTRY_BYTES, 2..4),
            (2, 7, 3 * ENTRY_BYTES - 1, 2..4),
            (2, 7, 3 * ENTRY_BYTES, 2..5),
            (4, 7, 0, 4..5),
            (4, 7, 2 * ENTRY_BYTES, 4..6),
            (3, 5, u64::MAX, 3..5),
            (5, 5, u64::MAX, 5..5),
        ];
        for (low, high, max_bytes, want) in cases {
            let got = log.slice(low, high, max_bytes).unwrap();
            let got: Vec<Index> = got.iter().map(|entry| entry.index).collect();
            assert_eq!(
                got,
                want.collect::<Vec<_>>(),
                "slice({low}, {high}, {max_bytes})"
            );
        }
        assert_eq!(log.slice(1, 3, u64::MAX), Err(StorageError::Compacted));
        assert_eq!(log.slice(5, 8, u64::MAX), Err(StorageError::Unavailable));
        assert_eq!(log.entries(7, u64::MAX), Ok(vec![]));
        assert_eq!(log.entries(5, 0), Ok(entries(5, &[2])));
    }

    // stable_to drops acknowledged entries from the unstable tail only while the entry
    // at that index still has the acknowledged term.
    #[test]
    fn stable_to_cases() {
        let mut log = log_over(&[1, 1, 1]);
        log.append(entries(4, &[2, 2, 2]));
        log.persisting_to(6);
        log.store.append(&entries(4, &[2, 2])).unwrap();

        log.stable_to(5, 1);
        assert_eq!(
            (log.persisted(), log.unstable_entries_all_len()),
            (3, 3),
            "term mismatch"
        );
        log.stable_to(2, 1);
        assert_eq!(
            (log.persisted(), log.unstable_entries_all_len()),
            (3, 3),
            "already durable"
        );
        log.stable_to(9, 2);
        assert_eq!(
            (log.persisted(), log.unstable_entries_all_len()),
            (3, 3),
            "beyond the log"
        );
        log.stable_to(5, 2);
        assert_eq!((log.persisted(), log.unstable_entries_all_len()), (5, 1));
        assert_eq!(log.term(5), Ok(2), "read back from storage");
        log.check_invariants();
    }

    // persisting_to hands entries out once; unstable_entries returns only later ones.
    #[test]
    fn persisting_to_hands_out_once() {
        let mut log = log_over(&[]);
        log.append(entries(1, &[1, 1, 1]));
        log.persisting_to(2);
        assert_eq!(log.unstable_entries(), entries(3, &[1]).as_slice());
        log.persisting_to(1);
        assert_eq!(
            log.unstable_entries(),
            entries(3, &[1]).as_slice(),
            "never moves back"
        );
        log.append(entries(4, &[1]));
        assert_eq!(log.unstable_entries(), entries(3, &[1, 1]).as_slice());
        log.check_invariants();
    }

    // Handing out entries past the end of the log is a caller bug: it panics.
    #[test]
    #[should_panic(expected = "persisting index 4 is past the last index 3")]
    fn persisting_to_past_last_index_panics() {
        let mut log = log_over(&[]);
        log.append(entries(1, &[1, 1, 1]));
        log.persisting_to(4);
    }

    // Committed entries are handed out for applying once each, under a byte limit,
    // even before they are persisted locally, and never past the commit index.
    #[test]
    fn next_committed_entries_hands_out_once() {
        let mut log = log_over(&[1, 1]);
        log.append(entries(3, &[2, 2, 2]));
        log.commit_to(4);
        assert!(log.has_next_committed_entries());
        assert_eq!(log.next_committed_entries(u64::MAX), {
            let mut want = entries(1, &[1, 1]);
            want.extend(entries(3, &[2, 2]));
            want
        });
        assert_eq!(
            log.next_committed_entries(2 * ENTRY_BYTES),
            entries(1, &[1, 1])
        );
        assert_eq!(log.next_committed_entries(0), entries(1, &[1]));

        log.applying_to(2);
        assert_eq!(
            log.next_committed_entries(u64::MAX),
            entries(3, &[2, 2]),
            "not yet persisted"
        );
        log.applying_to(4);
        assert!(!log.has_next_committed_entries());
        assert_eq!(log.next_committed_entries(u64::MAX), vec![]);

        log.applied_to(2);
        assert_eq!(log.applied(), 2);
        assert!(!log.has_next_committed_entries(), "applied below applying");
        log.commit_to(5);
        assert_eq!(log.next_committed_entries(u64::MAX), entries(5, &[2]));
        log.applied_to(5);
        assert_eq!(log.applied(), 5);
        assert!(!log.has_next_committed_entries());
        log.applied_to(3);
        assert_eq!(log.applied(), 5, "applied never moves back");
        log.check_invariants();
    }

    // applied_to beyond the commit index is a caller bug: it panics.
    #[test]
    #[should_panic(expected = "applied index 3 is past the commit index 2")]
    fn applied_to_past_committed_panics() {
        let mut log = log_over(&[1, 1, 1]);
        log.commit_to(2);
        log.applied_to(3);
    }

    // restore installs an incoming snapshot (Raft paper §7): the log empties after it,
    // commit jumps to it, applied waits for the driver, and the storage takes over once
    // the snapshot is durable.
    #[test]
    fn restore_then_persist_and_apply() {
        let mut log = log_over(&[1, 1, 1, 1, 1]);
        log.commit_to(3);
        log.applied_to(2);
        log.restore(snapshot(8, 4));
        assert_eq!(
            (log.first_index(), log.last_index(), log.last_term()),
            (9, 8, 4)
        );
        assert_eq!((log.committed(), log.applied(), log.persisted()), (8, 2, 5));
        assert_eq!(log.term(8), Ok(4));
        assert_eq!(log.term(7), Err(StorageError::Compacted));
        assert_eq!(log.unstable_snapshot(), Some(&snapshot(8, 4)));
        assert_eq!(log.snapshot(0), Ok(snapshot(8, 4)));
        assert_eq!(log.unstable_entries(), &[] as &[Entry]);
        assert!(
            !log.has_next_committed_entries(),
            "the snapshot covers what is committed"
        );
        log.check_invariants();

        log.append(entries(9, &[4]));
        assert_eq!(log.unstable_entries(), entries(9, &[4]).as_slice());
        assert_eq!(
            log.unstable_snapshot(),
            Some(&snapshot(8, 4)),
            "until durable"
        );

        // The driver writes the snapshot and the entry, then acknowledges both.
        log.persisting_to(9);
        log.store.apply_snapshot(snapshot(8, 4)).unwrap();
        log.store.append(&entries(9, &[4])).unwrap();
        log.stable_snapshot_to(7);
        assert_eq!(
            log.unstable_snapshot(),
            Some(&snapshot(8, 4)),
            "another index is ignored"
        );
        log.stable_snapshot_to(8);
        assert_eq!(log.unstable_snapshot(), None);
        assert_eq!(log.persisted(), 8);
        log.stable_to(9, 4);
        assert_eq!(log.persisted(), 9);
        log.applied_to(8);
        assert_eq!(log.applied(), 8);
        assert_eq!((log.first_index(), log.last_index()), (9, 9));
        assert_eq!(log.snapshot(0), Ok(snapshot(8, 4)), "now from storage");
        log.check_invariants();
    }

    // A restore below our durable end drops persisted below the snapshot, and a stale
    // acknowledgement from before the restore cannot mark entries durable that the
    // snapshot's write will wipe, even if they match by index and term.
    #[test]
    fn restore_ignores_stale_acknowledgements() {
        let mut log = log_over(&[1]);
        log.append(entries(2, &[2, 2, 2, 2]));
        log.persisting_to(5);
        log.restore(snapshot(3, 2));
        assert_eq!(log.persisted(), 1);
        // The same leader sends entries 4 and 5 again.
        assert_eq!(log.maybe_append(3, 2, 3, entries(4, &[2, 2])), Some(5));
        assert_eq!(log.unstable_entries(), entries(4, &[2, 2]).as_slice());
        // The write handed out before the restore finishes.
        log.store.append(&entries(2, &[2, 2, 2, 2])).unwrap();
        log.stable_to(5, 2);
        assert_eq!(log.unstable_entries(), entries(4, &[2, 2]).as_slice());
        assert_eq!(log.persisted(), 1);
        log.check_invariants();
    }

    // A snapshot at or below the commit index adds nothing: restoring one panics.
    #[test]
    #[should_panic(expected = "cannot restore a snapshot at index 2 (term 1) with committed 2")]
    fn restore_at_committed_panics() {
        let mut log = log_over(&[1, 1, 1]);
        log.commit_to(2);
        log.restore(snapshot(2, 1));
    }

    // check_invariants names every pointer when one is out of order.
    #[test]
    #[should_panic(expected = "log pointers out of order")]
    fn check_invariants_reports_breach() {
        let mut log = log_over(&[1, 1, 1]);
        log.committed = 9;
        log.check_invariants();
    }

    impl RaftLog<MemStorage> {
        /// All unstable entries, handed out or not.
        fn unstable_entries_all_len(&self) -> usize {
            self.unstable_entries.len()
        }
    }
}

/// RaftLog over MemStorage against a naive model of the log: a `Vec` of (index, term),
/// driven by a driver that hands out and writes entries in order, as a real one does.
#[cfg(test)]
mod model_tests {
    use std::collections::VecDeque;

    use bytes::Bytes;
    use proptest::prelude::*;
    use proptest::sample::Index as Pick;

    use super::*;
    use crate::storage::{LogStore, MemStorage};
    use crate::types::{ConfState, EntryKind, SnapshotMetadata};

    /// The entry the model means by (index, term); its payload size varies so byte
    /// limits cut batches at different places.
    fn entry(index: Index, term: Term) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: Bytes::from(vec![term as u8; ((index * 7 + term * 3) % 40) as usize]),
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// The leader appends `count` entries at the end, in a new term if `new_term`.
        Append { count: u64, new_term: bool },
        /// A new leader's entries overwrite our log after some uncommitted index
        /// (AppendEntries with a conflict, §5.3).
        TruncateAppend {
            at: Pick,
            count: u64,
            leader_commit: Pick,
        },
        /// The leader resends entries we have (AppendEntries with no conflict).
        Resend {
            from: Pick,
            count: u64,
            leader_commit: Pick,
        },
        /// The driver takes a Ready: the unstable snapshot and entries to write.
        HandOut,
        /// The driver finishes its oldest write and acknowledges it.
        CompleteWrite,
        /// Commit moves to some index, with that entry's term or a wrong one.
        Commit { to: Pick, wrong_term: bool },
        /// The driver takes committed entries to apply, up to `max_bytes`.
        Apply { max_bytes: u64 },
        /// The driver finishes applying what it took.
        FinishApply,
        /// The driver snapshots and compacts what is applied and durable.
        Compact,
        /// A snapshot from the leader arrives, `ahead` entries past our commit index,
        /// agreeing with our log there if `same_term`.
        Restore { ahead: u64, same_term: bool },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1..4u64, any::<bool>()).prop_map(|(count, new_term)| Op::Append { count, new_term }),
            2 => (any::<Pick>(), 1..4u64, any::<Pick>())
                .prop_map(|(at, count, leader_commit)| Op::TruncateAppend { at, count, leader_commit }),
            2 => (any::<Pick>(), 0..5u64, any::<Pick>())
                .prop_map(|(from, count, leader_commit)| Op::Resend { from, count, leader_commit }),
            4 => Just(Op::HandOut),
            4 => Just(Op::CompleteWrite),
            3 => (any::<Pick>(), any::<bool>()).prop_map(|(to, wrong_term)| Op::Commit { to, wrong_term }),
            3 => (0..200u64).prop_map(|max_bytes| Op::Apply { max_bytes }),
            2 => Just(Op::FinishApply),
            1 => Just(Op::Compact),
            1 => (1..6u64, any::<bool>()).prop_map(|(ahead, same_term)| Op::Restore { ahead, same_term }),
        ]
    }

    /// A write the driver has been handed and not yet finished.
    #[derive(Debug)]
    enum Write {
        Entries(Vec<Entry>),
        Snapshot(Snapshot),
    }

    /// The naive model: the whole log as (index, term) pairs, positions 0.. holding
    /// indexes 1..; those below `first_index - 1` are compacted and never compared.
    struct Model {
        log: Vec<(Index, Term)>,
        first_index: Index,
        max_term: Term,
        committed: Index,
        applying: Index,
        applied: Index,
        pending_snapshot: Option<Index>,
    }

    impl Model {
        fn last_index(&self) -> Index {
            self.log.len() as Index
        }

        fn term(&self, index: Index) -> Term {
            if index == 0 {
                0
            } else {
                self.log[index as usize - 1].1
            }
        }

        /// Entries `low..=high` as the model means them.
        fn entries(&self, low: Index, high: Index) -> Vec<Entry> {
            (low..=high)
                .map(|index| entry(index, self.term(index)))
                .collect()
        }

        fn truncate_and_append(&mut self, entries: &[Entry]) {
            self.log.truncate(entries[0].index as usize - 1);
            self.log
                .extend(entries.iter().map(|entry| (entry.index, entry.term)));
        }
    }

    /// The driver around the log under test.
    struct Driver {
        log: RaftLog<MemStorage>,
        writes: VecDeque<Write>,
        handed_snapshot: Option<Index>,
    }

    impl Driver {
        fn hand_out(&mut self) {
            if let Some(snapshot) = self.log.unstable_snapshot() {
                if self.handed_snapshot != Some(snapshot.metadata.index) {
                    self.handed_snapshot = Some(snapshot.metadata.index);
                    self.writes.push_back(Write::Snapshot(snapshot.clone()));
                }
            }
            let batch = self.log.unstable_entries().to_vec();
            if let Some(last) = batch.last() {
                self.log.persisting_to(last.index);
                self.writes.push_back(Write::Entries(batch));
            }
            assert!(self.log.unstable_entries().is_empty(), "handed out twice");
        }

        fn complete_write(&mut self) {
            match self.writes.pop_front() {
                Some(Write::Entries(batch)) => {
                    self.log.store.append(&batch).unwrap();
                    let last = batch.last().unwrap();
                    self.log.stable_to(last.index, last.term);
                }
                Some(Write::Snapshot(snapshot)) => {
                    let index = snapshot.metadata.index;
                    self.log.store.apply_snapshot(snapshot).unwrap();
                    self.log.stable_snapshot_to(index);
                }
                None => {}
            }
        }
    }

    fn apply(op: &Op, driver: &mut Driver, model: &mut Model) {
        let log = &mut driver.log;
        match *op {
            Op::Append { count, new_term } => {
                if new_term || model.max_term == 0 {
                    model.max_term += 1;
                }
                let first = model.last_index() + 1;
                let appended: Vec<Entry> = (first..first + count)
                    .map(|index| entry(index, model.max_term))
                    .collect();
                assert_eq!(log.append(appended.clone()), first + count - 1);
                model.truncate_and_append(&appended);
            }
            Op::TruncateAppend {
                at,
                count,
                leader_commit,
            } => {
                let first = model.committed
                    + 1
                    + at.index((model.last_index() - model.committed + 1) as usize) as Index;
                model.max_term += 1;
                let appended: Vec<Entry> = (first..first + count)
                    .map(|index| entry(index, model.max_term))
                    .collect();
                let last_new = first + count - 1;
                let leader_commit = leader_commit.index(last_new as usize + 1) as Index;
                let result = log.maybe_append(
                    first - 1,
                    model.term(first - 1),
                    leader_commit,
                    appended.clone(),
                );
                assert_eq!(result, Some(last_new));
                model.truncate_and_append(&appended);
                model.committed = model.committed.max(leader_commit.min(last_new));
            }
            Op::Resend {
                from,
                count,
                leader_commit,
            } => {
                let low = model.first_index - 1;
                let from = low + from.index((model.last_index() - low + 1) as usize) as Index;
                let last_new = (from + count).min(model.last_index());
                let leader_commit = leader_commit.index(last_new as usize + 1) as Index;
                let resent = model.entries(from + 1, last_new);
                assert_eq!(
                    log.maybe_append(from, model.term(from), leader_commit, resent),
                    Some(last_new)
                );
                model.committed = model.committed.max(leader_commit.min(last_new));
            }
            Op::HandOut => driver.hand_out(),
            Op::CompleteWrite => driver.complete_write(),
            Op::Commit { to, wrong_term } => {
                let to = model.committed
                    + to.index((model.last_index() - model.committed + 1) as usize) as Index;
                let term = model.term(to) + Term::from(wrong_term);
                let want = !wrong_term && to > model.committed;
                assert_eq!(
                    log.maybe_commit(to, term),
                    want,
                    "maybe_commit({to}, {term})"
                );
                if want {
                    model.committed = to;
                }
            }
            Op::Apply { max_bytes } => {
                let low = model.applying.max(model.applied) + 1;
                let mut want = Vec::new();
                let mut total_bytes = 0;
                for index in low..=model.committed {
                    let next = entry(index, model.term(index));
                    total_bytes += next.size_bytes();
                    if !want.is_empty() && total_bytes > max_bytes {
                        break;
                    }
                    want.push(next);
                }
                assert_eq!(log.has_next_committed_entries(), !want.is_empty());
                assert_eq!(
                    log.next_committed_entries(max_bytes),
                    want,
                    "next_committed_entries({max_bytes})"
                );
                if let Some(last) = want.last() {
                    log.applying_to(last.index);
                    model.applying = last.index;
                }
            }
            Op::FinishApply => {
                log.applied_to(model.applying);
                model.applied = model.applied.max(model.applying);
            }
            Op::Compact => {
                let target = model.applied.min(log.persisted());
                let store = &mut log.store;
                let snapshot_index = store.snapshot(0).unwrap().metadata.index;
                if target > snapshot_index && target >= store.first_index().unwrap() {
                    store
                        .create_snapshot(target, ConfState::default(), Bytes::new())
                        .unwrap();
                    store.compact(target).unwrap();
                    model.first_index = model.first_index.max(target + 1);
                }
            }
            Op::Restore { ahead, same_term } => {
                let index = model.committed + ahead;
                let term = if same_term && index <= model.last_index() {
                    model.term(index)
                } else {
                    model.max_term += 1;
                    model.max_term
                };
                log.restore(Snapshot {
                    metadata: SnapshotMetadata {
                        index,
                        term,
                        conf_state: ConfState::default(),
                    },
                    data: Bytes::new(),
                });
                // Entries below the snapshot are never compared again; keep any terms.
                model.log.resize(index as usize, (0, 0));
                model.log[index as usize - 1] = (index, term);
                model.first_index = index + 1;
                model.committed = index;
                model.applying = index;
                model.pending_snapshot = Some(index);
            }
        }
        if driver.log.unstable_snapshot().is_none() {
            model.pending_snapshot = None;
        }
    }

    /// Everything observable about the log agrees with the model, and finishing every
    /// write the driver holds plus the unhanded tail would leave storage equal to it.
    fn check(driver: &Driver, model: &Model) {
        let log = &driver.log;
        log.check_invariants();
        let (first, last) = (model.first_index, model.last_index());
        assert_eq!(
            (log.first_index(), log.last_index()),
            (first, last),
            "first and last index"
        );
        assert_eq!(log.last_term(), model.term(last));
        for index in first - 1..=last {
            assert_eq!(log.term(index), Ok(model.term(index)), "term({index})");
        }
        if first >= 2 {
            assert_eq!(log.term(first - 2), Err(StorageError::Compacted));
        }
        assert_eq!(log.term(last + 1), Err(StorageError::Unavailable));
        assert_eq!(log.entries(first, u64::MAX), Ok(model.entries(first, last)));
        assert_eq!(
            (log.committed(), log.applied()),
            (model.committed, model.applied)
        );
        assert_eq!(
            log.unstable_snapshot()
                .map(|snapshot| snapshot.metadata.index),
            model.pending_snapshot
        );
        let unstable = log.unstable_entries();
        if let Some(unstable_last) = unstable.last() {
            assert_eq!(
                unstable_last.index, last,
                "the unstable entries end the log"
            );
            assert_eq!(unstable, model.entries(unstable[0].index, last).as_slice());
        }

        // `persisted` never claims more than storage holds in agreement with the model.
        match model.pending_snapshot {
            Some(index) => assert!(
                log.persisted() < index,
                "persisted {} with a snapshot pending at {index}",
                log.persisted()
            ),
            None => {
                let store = &log.store;
                let mut durable = store.first_index().unwrap() - 1;
                assert_eq!(store.term(durable), Ok(model.term(durable)));
                while durable < last.min(store.last_index().unwrap())
                    && store.term(durable + 1) == Ok(model.term(durable + 1))
                {
                    durable += 1;
                }
                assert!(
                    log.persisted() <= durable,
                    "persisted {} but storage agrees only to {durable}",
                    log.persisted()
                );
            }
        }

        // Nothing is lost between the writes in flight and the tail not yet handed out.
        let mut flushed = log.store.clone();
        for write in &driver.writes {
            match write {
                Write::Entries(batch) => flushed.append(batch).unwrap(),
                Write::Snapshot(snapshot) => flushed.apply_snapshot(snapshot.clone()).unwrap(),
            }
        }
        if let Some(snapshot) = log.unstable_snapshot() {
            if driver.handed_snapshot != Some(snapshot.metadata.index) {
                flushed.apply_snapshot(snapshot.clone()).unwrap();
            }
        }
        flushed.append(unstable).unwrap();
        assert_eq!(flushed.last_index(), Ok(last), "storage after every write");
        let flushed_first = flushed.first_index().unwrap();
        assert!(
            flushed_first <= first,
            "storage compacted past the log: {flushed_first} > {first}"
        );
        assert_eq!(
            flushed.entries(first, last + 1, u64::MAX),
            Ok(model.entries(first, last))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        // Under any sequence of leader appends, conflicting appends, persisting,
        // committing, applying, compacting and snapshot restores, the log reads as the
        // model, hands out every entry to persist and to apply, and once all writes
        // finish, storage holds exactly the model's log and everything is persisted.
        #[test]
        fn raft_log_matches_model(ops in prop::collection::vec(op(), 1..80)) {
            let mut driver = Driver {
                log: RaftLog::new(MemStorage::new()).unwrap(),
                writes: VecDeque::new(),
                handed_snapshot: None,
            };
            let mut model = Model {
                log: Vec::new(),
                first_index: 1,
                max_term: 0,
                committed: 0,
                applying: 0,
                applied: 0,
                pending_snapshot: None,
            };
            for op in &ops {
                apply(op, &mut driver, &mut model);
                check(&driver, &model);
            }
            driver.hand_out();
            while !driver.writes.is_empty() {
                driver.complete_write();
            }
            if driver.log.unstable_snapshot().is_none() {
                model.pending_snapshot = None;
            }
            check(&driver, &model);
            prop_assert_eq!(driver.log.persisted(), model.last_index());
            prop_assert_eq!(driver.log.unstable_snapshot(), None);
            prop_assert_eq!(driver.log.store.last_index(), Ok(model.last_index()));
        }
    }
}
