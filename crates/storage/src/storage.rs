//! One group's view of the shared log, as concord-raft's `Storage` and `LogStore`.

use bytes::Bytes;
use concord_raft::{
    ConfState, Entry, HardState, Index, LogStore, RaftState, Snapshot, Storage, StorageError, Term,
};

use crate::batch::WriteBatch;
use crate::error::Result;
use crate::log::Log;
use crate::snapshot::SnapshotReader;
use crate::GroupId;

/// The durable storage of one raft group: a handle on the shared [`Log`]. Cheap to
/// clone; clones are the same group.
///
/// Every `LogStore` call is its own durable batch (it returns once fsynced, grouped
/// with whatever other groups write meanwhile). A runtime persisting many groups'
/// `Ready`s uses [`Log::write`] instead. One writer per group at a time: calls for the
/// same group from several threads at once are not ordered.
#[derive(Clone, Debug)]
pub struct GroupStorage {
    log: Log,
    group: GroupId,
}

impl GroupStorage {
    pub(crate) fn new(log: Log, group: GroupId) -> Self {
        GroupStorage { log, group }
    }

    /// The group's id.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The log the group lives in.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The last recorded hard state.
    pub fn hard_state(&self) -> HardState {
        self.log.with_group(self.group, |state| state.hard_state)
    }

    /// The membership a restart starts from.
    pub fn conf_state(&self) -> ConfState {
        self.log
            .with_group(self.group, |state| state.conf_state.clone())
    }

    /// Records membership durably (after the driver applies a conf change entry).
    pub fn set_conf_state(&mut self, conf_state: ConfState) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.group(self.group).conf_state = Some(conf_state);
        self.log.write(batch)
    }

    /// Persists a raft `Ready`'s hard state, snapshot and entries together, as one
    /// durable batch (driver contract step 3).
    pub fn persist_ready(
        &mut self,
        hard_state: Option<HardState>,
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
    ) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.persist_ready(self.group, hard_state, snapshot, entries);
        self.log.write(batch)
    }

    /// A reader of the latest snapshot file, for streaming it to a follower in chunks;
    /// None if there is no snapshot.
    pub fn snapshot_reader(&self) -> Result<Option<SnapshotReader>> {
        self.log.snapshot_reader(self.group)
    }

    /// Bytes of entries the group holds in memory (its cache).
    pub fn cached_bytes(&self) -> u64 {
        self.log.with_group(self.group, |state| state.cache_bytes())
    }
}

impl Storage for GroupStorage {
    fn initial_state(&self) -> Result<RaftState, StorageError> {
        Ok(self.log.with_group(self.group, |state| RaftState {
            hard_state: state.hard_state,
            conf_state: state.conf_state.clone(),
        }))
    }

    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        Ok(self.log.read_entries(self.group, low, high, max_bytes)?)
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        Ok(self.log.with_group(self.group, |state| state.term(index))?)
    }

    fn first_index(&self) -> Result<Index, StorageError> {
        Ok(self.log.with_group(self.group, |state| state.first_index()))
    }

    fn last_index(&self) -> Result<Index, StorageError> {
        Ok(self.log.with_group(self.group, |state| state.last_index()))
    }

    fn snapshot(&self, _request_index: Index) -> Result<Snapshot, StorageError> {
        Ok(self.log.read_snapshot(self.group)?)
    }
}

impl LogStore for GroupStorage {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        batch.group(self.group).entries = entries.to_vec();
        Ok(self.log.write(batch)?)
    }

    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        let mut batch = WriteBatch::new();
        batch.group(self.group).hard_state = Some(hard_state);
        Ok(self.log.write(batch)?)
    }

    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        let mut batch = WriteBatch::new();
        batch.group(self.group).snapshot = Some(snapshot);
        Ok(self.log.write(batch)?)
    }

    fn create_snapshot(
        &mut self,
        index: Index,
        conf_state: ConfState,
        data: Bytes,
    ) -> Result<Snapshot, StorageError> {
        Ok(self
            .log
            .create_snapshot(self.group, index, conf_state, data)?)
    }

    fn compact(&mut self, compact_index: Index) -> Result<(), StorageError> {
        let mut batch = WriteBatch::new();
        batch.group(self.group).compact = Some(compact_index);
        Ok(self.log.write(batch)?)
    }
}
