//! The seam between the simulator and a node's durable state.
//!
//! Every simulated node keeps its raft log, hard state, membership and snapshot in a
//! [`NodeStorage`]; the rest of the simulator reaches it only through the raft traits
//! ([`concord_raft::Storage`], [`concord_raft::LogStore`]) and the few extra operations
//! of [`SimStorage`]. Today `NodeStorage` is [`MemStorage`], where every write is
//! durable at once and a crash loses only what the driver had not yet written. Moving
//! to a disk log under a fault-injecting file system means implementing [`SimStorage`]
//! for it (its `crash` dropping unsynced writes) and changing the alias.

use concord_raft::{ConfState, HardState, LogStore, MemStorage};

/// The storage every simulated node uses.
pub type NodeStorage = MemStorage;

/// What the simulator needs from a node's storage beyond the raft traits.
pub trait SimStorage: LogStore + Clone + Sized {
    /// Storage for a node that starts as a member of `conf_state` (a bootstrap node).
    fn bootstrap(conf_state: ConfState) -> Self;
    /// Storage for a node that is not a member yet and waits to be added.
    fn empty() -> Self;
    /// Records the membership a restart starts from.
    fn set_conf_state(&mut self, conf_state: ConfState);
    /// The last recorded hard state.
    fn hard_state(&self) -> HardState;
    /// What survives a crash of the node that owns this storage.
    fn crash(self) -> Self;
}

impl SimStorage for MemStorage {
    fn bootstrap(conf_state: ConfState) -> Self {
        MemStorage::with_conf_state(conf_state)
    }

    fn empty() -> Self {
        MemStorage::new()
    }

    fn set_conf_state(&mut self, conf_state: ConfState) {
        MemStorage::set_conf_state(self, conf_state);
    }

    fn hard_state(&self) -> HardState {
        MemStorage::hard_state(self)
    }

    fn crash(self) -> Self {
        // Every write to a MemStorage is durable the moment it returns.
        self
    }
}
