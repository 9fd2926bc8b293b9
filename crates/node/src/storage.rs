//! Where a node keeps its groups' logs: the durable concord-storage [`Log`] (one per
//! node, shared by every group, group commit across groups), or memory (tests and
//! benchmarks; nothing survives a restart).

use bytes::Bytes;
use concord_group::DurableWrite;
use concord_raft::{
    ConfState, Entry, HardState, Index, LogStore, MemStorage, RaftState, Snapshot,
    SnapshotMetadata, Storage, StorageError, Term,
};
use concord_storage::{GroupStorage, Log};

/// The node's storage.
#[derive(Clone, Debug)]
pub enum StorageBackend {
    /// The durable log in the node's data directory (opened, and locked, by the node
    /// unless given here already open).
    Durable(Log),
    /// Memory only: fast, and gone when the node stops.
    Memory,
}

/// One group's log, as the raft core reads it and the raft loop writes it.
pub(crate) struct GroupStore {
    backend: GroupBackend,
    /// The membership a restart starts from. The durable log reports the membership
    /// of its last bootstrapped or installed snapshot; after a snapshot the node took
    /// itself, restart must use that snapshot's membership (crates/raft/README.md,
    /// "Restarting"), so the node passes it here.
    restart_conf_state: Option<ConfState>,
}

enum GroupBackend {
    Durable(GroupStorage),
    /// Boxed: a `MemStorage` is far larger than a `GroupStorage` handle.
    Memory(Box<MemStorage>),
}

impl GroupStore {
    pub(crate) fn durable(storage: GroupStorage, restart_conf_state: Option<ConfState>) -> Self {
        GroupStore {
            backend: GroupBackend::Durable(storage),
            restart_conf_state,
        }
    }

    pub(crate) fn memory(storage: MemStorage) -> Self {
        GroupStore {
            backend: GroupBackend::Memory(Box::new(storage)),
            restart_conf_state: None,
        }
    }

    /// The durable log, when this group is in one.
    pub(crate) fn log(&self) -> Option<&Log> {
        match &self.backend {
            GroupBackend::Durable(storage) => Some(storage.log()),
            GroupBackend::Memory(_) => None,
        }
    }

    /// The in-memory log, when this group is in memory.
    pub(crate) fn memory_mut(&mut self) -> Option<&mut MemStorage> {
        match &mut self.backend {
            GroupBackend::Durable(_) => None,
            GroupBackend::Memory(storage) => Some(storage),
        }
    }

    /// Applies a Ready's durable part to memory (the in-memory backend's "persist").
    pub(crate) fn persist_in_memory(
        storage: &mut MemStorage,
        write: &DurableWrite,
    ) -> Result<(), StorageError> {
        if let Some(snapshot) = &write.snapshot {
            storage.apply_snapshot(snapshot.clone())?;
        }
        storage.append(&write.entries)?;
        if let Some(index) = write.compact {
            storage.compact(index)?;
        }
        if let Some(hard_state) = write.hard_state {
            storage.set_hard_state(hard_state)?;
        }
        Ok(())
    }
}

impl Storage for GroupStore {
    fn initial_state(&self) -> Result<RaftState, StorageError> {
        let mut state = match &self.backend {
            GroupBackend::Durable(storage) => storage.initial_state()?,
            GroupBackend::Memory(storage) => storage.initial_state()?,
        };
        if let Some(conf_state) = &self.restart_conf_state {
            state.conf_state = conf_state.clone();
        }
        Ok(state)
    }

    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        match &self.backend {
            GroupBackend::Durable(storage) => storage.entries(low, high, max_bytes),
            GroupBackend::Memory(storage) => storage.entries(low, high, max_bytes),
        }
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        match &self.backend {
            GroupBackend::Durable(storage) => storage.term(index),
            GroupBackend::Memory(storage) => storage.term(index),
        }
    }

    fn first_index(&self) -> Result<Index, StorageError> {
        match &self.backend {
            GroupBackend::Durable(storage) => storage.first_index(),
            GroupBackend::Memory(storage) => storage.first_index(),
        }
    }

    fn last_index(&self) -> Result<Index, StorageError> {
        match &self.backend {
            GroupBackend::Durable(storage) => storage.last_index(),
            GroupBackend::Memory(storage) => storage.last_index(),
        }
    }

    fn snapshot(&self, request_index: Index) -> Result<Snapshot, StorageError> {
        match &self.backend {
            GroupBackend::Durable(storage) => storage.snapshot(request_index),
            GroupBackend::Memory(storage) => storage.snapshot(request_index),
        }
    }
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
