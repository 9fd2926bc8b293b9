//! [`GroupStore`]: one raft group's log as the group's driver holds it — a handle on
//! the node's durable [`Log`] or, for tests, benchmarks and the simulator's memory
//! mode, the core's [`MemStorage`]. The runtime (concord-node) and the simulator both
//! hold groups in it, so they restart groups the same way.

use bytes::Bytes;
use concord_raft::{
    ConfState, Entry, HardState, Index, LogStore, MemStorage, RaftState, Snapshot, Storage,
    StorageError, Term,
};

use crate::log::Log;
use crate::storage::GroupStorage;

/// One group's log. See the module docs.
#[derive(Clone, Debug)]
pub struct GroupStore {
    backend: Backend,
    /// The membership a restart starts from. The durable log reports the membership
    /// of its last bootstrapped or installed snapshot; after a snapshot the node took
    /// itself, restart must use that snapshot's membership (concord-raft's README,
    /// "Restarting"), so the node passes it here.
    restart_conf_state: Option<ConfState>,
}

#[derive(Clone, Debug)]
// A `MemStorage` is far larger than a `GroupStorage` handle; it is boxed.
enum Backend {
    Durable(GroupStorage),
    Memory(Box<MemStorage>),
}

impl GroupStore {
    /// A group in the durable log, restarting with `restart_conf_state` if given.
    pub fn durable(storage: GroupStorage, restart_conf_state: Option<ConfState>) -> Self {
        GroupStore {
            backend: Backend::Durable(storage),
            restart_conf_state,
        }
    }

    /// A group in memory, restarting with `restart_conf_state` if given.
    pub fn memory(storage: MemStorage, restart_conf_state: Option<ConfState>) -> Self {
        GroupStore {
            backend: Backend::Memory(Box::new(storage)),
            restart_conf_state,
        }
    }

    /// The durable log, when this group is in one.
    pub fn log(&self) -> Option<&Log> {
        match &self.backend {
            Backend::Durable(storage) => Some(storage.log()),
            Backend::Memory(_) => None,
        }
    }

    /// The group's handle on the durable log, when it is in one.
    pub fn durable_storage(&self) -> Option<&GroupStorage> {
        match &self.backend {
            Backend::Durable(storage) => Some(storage),
            Backend::Memory(_) => None,
        }
    }

    /// The in-memory log, when this group is in memory.
    pub fn memory_mut(&mut self) -> Option<&mut MemStorage> {
        match &mut self.backend {
            Backend::Durable(_) => None,
            Backend::Memory(storage) => Some(storage),
        }
    }

    /// The in-memory log, when this group is in memory.
    pub fn into_memory(self) -> Option<MemStorage> {
        match self.backend {
            Backend::Durable(_) => None,
            Backend::Memory(storage) => Some(*storage),
        }
    }

    /// The last recorded hard state.
    pub fn hard_state(&self) -> HardState {
        match &self.backend {
            Backend::Durable(storage) => storage.hard_state(),
            Backend::Memory(storage) => storage.hard_state(),
        }
    }

    /// Applies a Ready's durable part to memory, in the order a crash could not split:
    /// snapshot, entries, compaction, hard state (the in-memory backend's "persist").
    pub fn persist_in_memory(
        storage: &mut MemStorage,
        hard_state: Option<HardState>,
        snapshot: Option<Snapshot>,
        entries: &[Entry],
        compact: Option<Index>,
    ) -> Result<(), StorageError> {
        if let Some(snapshot) = snapshot {
            storage.apply_snapshot(snapshot)?;
        }
        storage.append(entries)?;
        if let Some(index) = compact {
            storage.compact(index)?;
        }
        if let Some(hard_state) = hard_state {
            storage.set_hard_state(hard_state)?;
        }
        Ok(())
    }

    /// Records a snapshot the state machine took at `index`: in memory at once, in the
    /// durable log as a file written, synced and renamed, then a record. A fatal
    /// error ([`crate::Error::is_fatal`]) means the log stopped.
    pub fn create_snapshot(
        &mut self,
        group: crate::GroupId,
        index: Index,
        conf_state: ConfState,
        data: Bytes,
    ) -> Result<(), crate::Error> {
        match &mut self.backend {
            Backend::Durable(storage) => storage
                .log()
                .create_snapshot(group, index, conf_state, data)
                .map(drop),
            Backend::Memory(storage) => storage
                .create_snapshot(index, conf_state, data)
                .map(drop)
                .map_err(|error| crate::Error::Refused(error.to_string())),
        }
    }
}

impl Storage for GroupStore {
    fn initial_state(&self) -> Result<RaftState, StorageError> {
        let mut state = match &self.backend {
            Backend::Durable(storage) => storage.initial_state()?,
            Backend::Memory(storage) => storage.initial_state()?,
        };
        if let Some(conf_state) = &self.restart_conf_state {
            state.conf_state = conf_state.clone();
        }
        Ok(state)
    }

    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        match &self.backend {
            Backend::Durable(storage) => storage.entries(low, high, max_bytes),
            Backend::Memory(storage) => storage.entries(low, high, max_bytes),
        }
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        match &self.backend {
            Backend::Durable(storage) => storage.term(index),
            Backend::Memory(storage) => storage.term(index),
        }
    }

    fn first_index(&self) -> Result<Index, StorageError> {
        match &self.backend {
            Backend::Durable(storage) => storage.first_index(),
            Backend::Memory(storage) => storage.first_index(),
        }
    }

    fn last_index(&self) -> Result<Index, StorageError> {
        match &self.backend {
            Backend::Durable(storage) => storage.last_index(),
            Backend::Memory(storage) => storage.last_index(),
        }
    }

    fn snapshot(&self, request_index: Index) -> Result<Snapshot, StorageError> {
        match &self.backend {
            Backend::Durable(storage) => storage.snapshot(request_index),
            Backend::Memory(storage) => storage.snapshot(request_index),
        }
    }
}
