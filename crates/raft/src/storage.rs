//! The log storage the core reads through, an in-memory implementation, and a
//! conformance suite every implementation must pass.

use bytes::Bytes;

use crate::errors::StorageError;
use crate::types::{ConfState, Entry, HardState, Index, Snapshot, Term};

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
/// The log holds a snapshot (possibly empty, index 0) followed by entries
/// `first_index()..=last_index()`. Invariant: `first_index() == snapshot.index + 1`
/// and `term(first_index() - 1)` is the snapshot's term.
pub trait Storage {
    /// The hard state and membership to start from.
    fn initial_state(&self) -> Result<RaftState, StorageError>;
    /// Entries in `[low, high)`, stopping once their total `size_bytes` would pass
    /// `max_bytes` — but always at least one entry when `low < high`.
    /// `Compacted` if `low < first_index()`, `Unavailable` if `high > last_index() + 1`.
    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError>;
    /// The term of the entry at `index`, for `first_index() - 1 <= index <= last_index()`.
    /// `Compacted` below that range, `Unavailable` above.
    fn term(&self, index: Index) -> Result<Term, StorageError>;
    /// The index of the first entry still in the log (snapshot index + 1).
    fn first_index(&self) -> Result<Index, StorageError>;
    /// The index of the last entry, or the snapshot index when there are no entries.
    fn last_index(&self) -> Result<Index, StorageError>;
    /// The latest snapshot. `request_index` is the index the leader needs a snapshot of
    /// at least; a storage may return `SnapshotTemporarilyUnavailable` while it builds one.
    fn snapshot(&self, request_index: Index) -> Result<Snapshot, StorageError>;
}

/// Write access a driver uses to persist a `Ready`. Kept apart from [`Storage`] so the
/// core cannot write on its own.
pub trait LogStore: Storage {
    /// Appends `entries` (consecutive indexes). Entries at or after `entries[0].index`
    /// already in the log are replaced (a follower's conflicting suffix is truncated).
    /// Errors if `entries[0].index` would leave a gap or is at or below the snapshot.
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;
    /// Records the hard state.
    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError>;
    /// Replaces the log with `snapshot`: entries up to its index are dropped; entries
    /// after it are dropped too unless their terms agree with the snapshot's
    /// position (etcd/raft-rs both drop them all; so do we, for simplicity).
    /// Errors with `Compacted`... if the snapshot is older than the current one.
    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError>;
    /// Records the application's snapshot at `index` (already applied) with `data`, and
    /// membership `conf_state`; entries are kept (compact separately).
    fn create_snapshot(
        &mut self,
        index: Index,
        conf_state: ConfState,
        data: Bytes,
    ) -> Result<Snapshot, StorageError>;
    /// Drops entries up to and including `compact_index` (which must be at or below the
    /// snapshot index... or at or below last_index; see MemStorage docs).
    fn compact(&mut self, compact_index: Index) -> Result<(), StorageError>;
}

/// A [`Storage`] that keeps everything in memory. Used by tests, the simulator and the
/// benchmark; it is not durable.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    // filled in by the implementation
}

impl MemStorage {
    /// An empty log with no members (a node waiting to be added by a snapshot).
    pub fn new() -> Self {
        todo!()
    }

    /// An empty log whose initial membership is `conf_state` (a bootstrap node).
    pub fn with_conf_state(conf_state: ConfState) -> Self {
        let _ = conf_state;
        todo!()
    }

    /// The last recorded hard state.
    pub fn hard_state(&self) -> HardState {
        todo!()
    }

    /// Records membership (used when the driver applies a conf change entry).
    pub fn set_conf_state(&mut self, conf_state: ConfState) {
        let _ = conf_state;
        todo!()
    }
}
