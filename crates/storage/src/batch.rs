//! A batch of writes for many groups that becomes durable together: one write and one
//! fsync for all of it (and for other writers' batches that arrive meanwhile).

use std::collections::BTreeMap;

use concord_raft::{ConfState, Entry, HardState, Index, Snapshot};

use crate::GroupId;

/// What to persist for one group, applied in this order: install `snapshot`, append
/// `entries` (replacing any at the same indexes), compact to `compact`, record
/// `hard_state` and `conf_state`. This is a raft `Ready`'s step 3 plus compaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupWrite {
    /// An incoming snapshot to install: the group's log is replaced by it
    /// (`LogStore::apply_snapshot`). Its data is written to the group's snapshot file
    /// first.
    pub snapshot: Option<Snapshot>,
    /// Entries to append (consecutive indexes); entries already at those indexes and
    /// after are replaced (a follower's conflicting suffix).
    pub entries: Vec<Entry>,
    /// Drop entries up to this index (`LogStore::compact`).
    pub compact: Option<Index>,
    /// The hard state to record.
    pub hard_state: Option<HardState>,
    /// The membership to record (after applying a conf change entry).
    pub conf_state: Option<ConfState>,
}

impl GroupWrite {
    /// True if there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none()
            && self.entries.is_empty()
            && self.compact.is_none()
            && self.hard_state.is_none()
            && self.conf_state.is_none()
    }
}

/// Writes for any number of groups, made durable together by [`crate::Log::write`]:
/// after a crash either all of it is there or none of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub(crate) writes: BTreeMap<GroupId, GroupWrite>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        WriteBatch::default()
    }

    /// The writes for `group`, created empty on first use.
    pub fn group(&mut self, group: GroupId) -> &mut GroupWrite {
        self.writes.entry(group).or_default()
    }

    /// Adds what a raft `Ready` asks to persist for `group` (step 3 of the driver
    /// contract): its hard state, snapshot and entries.
    pub fn persist_ready(
        &mut self,
        group: GroupId,
        hard_state: Option<HardState>,
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
    ) {
        let write = self.group(group);
        write.hard_state = hard_state.or(write.hard_state);
        write.snapshot = snapshot.or(write.snapshot.take());
        if write.entries.is_empty() {
            write.entries = entries;
        } else {
            write.entries.extend(entries);
        }
    }

    /// True if there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.writes.values().all(GroupWrite::is_empty)
    }

    /// Entries in the batch, over all groups.
    pub fn entry_count(&self) -> usize {
        self.writes.values().map(|write| write.entries.len()).sum()
    }
}
