//! Where a node keeps its groups' logs: the durable concord-storage [`Log`] (one per
//! node, shared by every group, group commit across groups), or memory (tests and
//! benchmarks; nothing survives a restart).

use bytes::Bytes;
use concord_group::DurableWrite;
use concord_raft::{ConfState, HardState, MemStorage, Snapshot, SnapshotMetadata, StorageError};
pub(crate) use concord_storage::GroupStore;
use concord_storage::Log;

/// The node's storage.
#[derive(Clone, Debug)]
pub enum StorageBackend {
    /// The durable log in the node's data directory (opened, and locked, by the node
    /// unless given here already open).
    Durable(Log),
    /// Memory only: fast, and gone when the node stops.
    Memory,
}

/// A bootstrap snapshot at index 1 holding the founding membership and addresses.
pub(crate) fn bootstrap_snapshot(conf_state: ConfState, data: Bytes) -> Snapshot {
    Snapshot {
        metadata: SnapshotMetadata {
            index: concord_raft::storage::BOOTSTRAP_INDEX,
            term: concord_raft::storage::BOOTSTRAP_TERM,
            conf_state,
        },
        data,
    }
}

/// The hard state every founding member starts with.
pub(crate) fn bootstrap_hard_state() -> HardState {
    HardState {
        term: concord_raft::storage::BOOTSTRAP_TERM,
        vote: concord_raft::NO_NODE,
        commit: concord_raft::storage::BOOTSTRAP_INDEX,
    }
}

/// Applies a Ready's durable part to memory (the in-memory backend's "persist").
pub(crate) fn persist_in_memory(
    storage: &mut MemStorage,
    write: &DurableWrite,
) -> Result<(), StorageError> {
    GroupStore::persist_in_memory(
        storage,
        write.hard_state,
        write.snapshot.clone(),
        &write.entries,
        write.compact,
    )
}
