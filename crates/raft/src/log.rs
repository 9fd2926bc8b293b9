//! The raft log as the core sees it: durable entries in [`Storage`] plus an unstable
//! tail (and possibly an incoming snapshot) not yet persisted.
//!
//! Log pointers, always in this order (checked by `check_invariants`):
//!
//! ```text
//! first_index - 1 <= applied <= committed <= last_index
//! persisted <= last_index
//! ```
//!
//! `first_index - 1` is the snapshot's index: everything at or below it lives only in
//! the snapshot. `applied` is what the state machine has applied (it can trail
//! `committed`). `persisted` is the highest index the driver has made durable.

use crate::errors::StorageError;
use crate::storage::Storage;
use crate::types::{Entry, Index, Snapshot, Term};

/// The log: storage plus unstable tail.
pub struct RaftLog<S: Storage> {
    /// The durable part.
    pub store: S,
    // Invariant: applied <= committed <= last_index().
    // (other fields filled in by the implementation)
}

impl<S: Storage> RaftLog<S> {
    /// A log over `store`; `committed` and `applied` start at the snapshot index.
    pub fn new(store: S) -> Result<Self, StorageError> { let _ = store; todo!() }
    /// Index of the first entry available (snapshot index + 1).
    pub fn first_index(&self) -> Index { todo!() }
    /// Index of the last entry (unstable or durable), or the snapshot index.
    pub fn last_index(&self) -> Index { todo!() }
    /// Term of the last entry.
    pub fn last_term(&self) -> Term { todo!() }
    /// Term at `index`: `Ok(0)` for index 0 or beyond `last_index` is NOT returned —
    /// beyond last_index gives `Unavailable`, below first_index - 1 gives `Compacted`.
    pub fn term(&self, index: Index) -> Result<Term, StorageError> { let _ = index; todo!() }
    /// True when the entry at `index` has `term` (false when unknown).
    pub fn match_term(&self, index: Index, term: Term) -> bool { let _ = (index, term); todo!() }
    /// Raft §5.4.1: is a log ending at (`last_index`, `term`) at least as up to date as ours?
    pub fn is_up_to_date(&self, last_index: Index, term: Term) -> bool { let _ = (last_index, term); todo!() }
    /// The commit index.
    pub fn committed(&self) -> Index { todo!() }
    /// The applied index.
    pub fn applied(&self) -> Index { todo!() }
    /// The highest durable index.
    pub fn persisted(&self) -> Index { todo!() }
    /// Follower side of AppendEntries (§5.3): if our entry at `index` has `log_term`,
    /// append `entries` (dropping those we already have, truncating at the first
    /// conflict), advance commit to `min(committed, index + entries.len())`, and
    /// return the index of the last new entry. `None` if the terms do not match.
    /// Panics if a conflict is found at or below the commit index (a safety breach).
    pub fn maybe_append(&mut self, index: Index, log_term: Term, committed: Index, entries: Vec<Entry>) -> Option<Index> { let _ = (index, log_term, committed, entries); todo!() }
    /// Appends to the unstable tail, truncating any entries at or after
    /// `entries[0].index`. Returns the new last index. Panics if that would truncate
    /// committed entries.
    pub fn append(&mut self, entries: Vec<Entry>) -> Index { let _ = entries; todo!() }
    /// Fast backtracking: the largest index `<= index` whose term is `<= term`, with its
    /// term. Used by a follower to hint where a leader should retry, and by the leader
    /// to skip a whole term of the follower's log at once.
    pub fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) { let _ = (index, term); todo!() }
    /// Entries in `[low, high)` up to `max_bytes` (at least one), from storage and the
    /// unstable tail.
    pub fn slice(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> { let _ = (low, high, max_bytes); todo!() }
    /// Entries from `low` to the end, up to `max_bytes` (at least one if any).
    pub fn entries(&self, low: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> { let _ = (low, max_bytes); todo!() }
    /// Unstable entries not yet handed to the driver for persisting.
    pub fn unstable_entries(&self) -> &[Entry] { todo!() }
    /// The incoming snapshot not yet persisted, if any.
    pub fn unstable_snapshot(&self) -> Option<&Snapshot> { todo!() }
    /// True if there are committed entries not yet applied (and not already handed out).
    pub fn has_next_committed_entries(&self) -> bool { todo!() }
    /// Committed entries after `applied` (and after what was already handed out), up to
    /// `max_bytes` (at least one if any).
    pub fn next_committed_entries(&self, max_bytes: u64) -> Vec<Entry> { let _ = max_bytes; todo!() }
    /// Commits up to `index` if the entry there has `term` (§5.4.2: only entries of the
    /// current term are committed by counting replicas). Returns true if commit moved.
    pub fn maybe_commit(&mut self, index: Index, term: Term) -> bool { let _ = (index, term); todo!() }
    /// Raises the commit index to `index` (never lowers it). Panics past `last_index`.
    pub fn commit_to(&mut self, index: Index) { let _ = index; todo!() }
    /// Records that the state machine applied up to `index`.
    pub fn applied_to(&mut self, index: Index) { let _ = index; todo!() }
    /// Records that entries up to `index` (at `term`) are durable: drops them from the
    /// unstable tail if its entry at `index` still has `term`.
    pub fn stable_to(&mut self, index: Index, term: Term) { let _ = (index, term); todo!() }
    /// Records that the unstable snapshot at `index` is durable.
    pub fn stable_snapshot_to(&mut self, index: Index) { let _ = index; todo!() }
    /// Installs `snapshot` as the unstable snapshot: the log becomes empty after it,
    /// commit moves to its index.
    pub fn restore(&mut self, snapshot: Snapshot) { let _ = snapshot; todo!() }
    /// The snapshot to send a follower: the unstable one or the storage's.
    pub fn snapshot(&self, request_index: Index) -> Result<Snapshot, StorageError> { let _ = request_index; todo!() }
    /// Marks entries up to `index` as handed to the driver for applying (so the next
    /// `next_committed_entries` starts after them).
    pub fn applying_to(&mut self, index: Index) { let _ = index; todo!() }
    /// Marks unstable entries up to `index` as handed to the driver for persisting, so
    /// they are not handed out twice.
    pub fn persisting_to(&mut self, index: Index) { let _ = index; todo!() }
    /// Checks the log pointer invariants, panicking with the values on a breach.
    pub fn check_invariants(&self) { todo!() }
}
