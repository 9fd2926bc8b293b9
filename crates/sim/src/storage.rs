//! The seam between the simulator and a node's durable state.
//!
//! Every simulated node keeps its raft log, hard state, membership and snapshot in a
//! [`NodeStorage`]; the rest of the simulator reaches it only through the raft traits
//! ([`concord_raft::Storage`], [`concord_raft::LogStore`]) and the few extra operations
//! of [`SimStorage`]. There are two kinds, chosen per cluster with [`StorageMode`]:
//!
//! - [`StorageMode::Disk`] (the default): concord's durable log (concord-storage's
//!   [`SimGroupStorage`]) on a simulated disk ([`SimFs`]). A crash drops whatever was
//!   not fsynced (or, torn, keeps a random prefix of it) and runs the real recovery
//!   code; the disk can lose power in the middle of a write or fail an fsync
//!   ([`DiskFault`]), and can have bits flipped while its node is down.
//! - [`StorageMode::Mem`]: the core's [`MemStorage`], where every write is durable at
//!   once and a crash loses only what the driver had not yet written. Faster, and it
//!   isolates the core from the storage engine.

use std::fmt;

use bytes::Bytes;
use concord_raft::{
    ConfState, Entry, HardState, Index, LogStore, MemStorage, RaftState, Snapshot, Storage,
    StorageError, Term,
};
use concord_storage::{GroupId, LogConfig, SimFs, SimGroupStorage, WriteBatch};

/// The raft group id every simulated node's log keeps its group under.
pub const SIM_GROUP: GroupId = 1;

/// The durable log's configuration in the simulator: segments small enough that runs
/// start new ones and delete old ones after compaction, and an entry cache small
/// enough that followers and lagging leaders read entries back from the disk.
pub fn sim_log_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 << 10,
        entry_cache_bytes_max: 4 << 10,
        // Several preallocation steps per segment, so crashes land among them.
        preallocate_bytes: 16 << 10,
        ..LogConfig::default()
    }
}

/// Which storage the nodes of a cluster use. See the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StorageMode {
    /// The core's in-memory storage.
    Mem,
    /// concord's durable log on a simulated disk.
    #[default]
    Disk,
}

impl StorageMode {
    /// Both modes.
    pub const ALL: [StorageMode; 2] = [StorageMode::Mem, StorageMode::Disk];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            StorageMode::Mem => "mem",
            StorageMode::Disk => "disk",
        }
    }

    /// The mode named `name`.
    pub fn from_name(name: &str) -> Option<StorageMode> {
        StorageMode::ALL
            .into_iter()
            .find(|mode| mode.name() == name)
    }
}

impl fmt::Display for StorageMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fault the simulated disk injects into the next write that syncs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DiskFault {
    /// Power is lost when one of the write's fsyncs starts: the node dies, and the disk
    /// keeps none (`torn: false`) or a random prefix (`torn: true`) of what was not yet
    /// synced.
    PowerLoss {
        /// Keep a random prefix of the unsynced writes, the last one cut short.
        torn: bool,
        /// Syncs (of files or directories) of the write that complete first: 0 loses
        /// power at its first. A write that starts a segment, installs a snapshot or
        /// deletes segments syncs several times; a write with no more syncs than this
        /// escapes the fault.
        syncs_before: u32,
    },
    /// The fsync fails (EIO). The log stops taking writes and the node must stop; the
    /// data it failed to sync never becomes durable.
    SyncFailure,
}

impl fmt::Display for DiskFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskFault::PowerLoss { torn, syncs_before } => {
                write!(f, "power loss at sync {}", syncs_before + 1)?;
                if *torn {
                    f.write_str(" (torn write)")?;
                }
                Ok(())
            }
            DiskFault::SyncFailure => f.write_str("fsync failure"),
        }
    }
}

/// Why a storage operation failed, as the driver must act on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageFailure {
    /// The storage stopped: a write or fsync failed, or power was lost. The node must
    /// stop and restart through recovery.
    Stopped(String),
    /// Recovery found damaged data (not a torn tail) and refused to start.
    Corrupt(String),
    /// The request was refused (a stale snapshot, a gap, a compacted index): the
    /// driver or the core asked for something it must not.
    Refused(String),
}

impl fmt::Display for StorageFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageFailure::Stopped(why) => write!(f, "storage stopped: {why}"),
            StorageFailure::Corrupt(why) => write!(f, "recovery refused: {why}"),
            StorageFailure::Refused(why) => write!(f, "storage refused: {why}"),
        }
    }
}

impl From<concord_storage::Error> for StorageFailure {
    fn from(error: concord_storage::Error) -> Self {
        use concord_storage::Error;
        let text = error.to_string();
        match error {
            Error::Corruption { .. } => StorageFailure::Corrupt(text),
            Error::Io { .. } => StorageFailure::Stopped(text),
            error if error.is_fatal() => StorageFailure::Stopped(text),
            _ => StorageFailure::Refused(text),
        }
    }
}

impl From<StorageError> for StorageFailure {
    fn from(error: StorageError) -> Self {
        StorageFailure::Refused(error.to_string())
    }
}

/// What the simulator needs from a node's storage beyond the raft traits.
pub trait SimStorage: LogStore + Sized {
    /// Records the membership a restart starts from.
    fn set_conf_state(&mut self, conf_state: ConfState) -> Result<(), StorageFailure>;
    /// The last recorded hard state.
    fn hard_state(&self) -> HardState;
    /// Makes a `Ready`'s hard state, snapshot and entries durable together (step 3 of
    /// the driver contract).
    fn persist_ready(
        &mut self,
        hard_state: Option<HardState>,
        snapshot: Option<Snapshot>,
        entries: &[Entry],
    ) -> Result<(), StorageFailure>;
    /// Records the state machine's snapshot at `index` (already applied), as
    /// [`LogStore::create_snapshot`].
    fn record_snapshot(
        &mut self,
        index: Index,
        conf_state: ConfState,
        data: Bytes,
    ) -> Result<(), StorageFailure>;
    /// Drops the log up to `index`, as [`LogStore::compact`].
    fn compact_log(&mut self, index: Index) -> Result<(), StorageFailure>;
    /// What survives a crash of the node that owns this storage (torn: unsynced writes
    /// may be partly kept), recovered as the node's restart would recover it.
    fn crash(self, torn: bool) -> Result<Self, StorageFailure>;
    /// An independent copy of the storage as it is now, for faults that need the
    /// storage as it was before a write.
    fn fork(&self) -> Result<Self, StorageFailure>;
}

impl SimStorage for MemStorage {
    fn set_conf_state(&mut self, conf_state: ConfState) -> Result<(), StorageFailure> {
        MemStorage::set_conf_state(self, conf_state);
        Ok(())
    }

    fn hard_state(&self) -> HardState {
        MemStorage::hard_state(self)
    }

    fn persist_ready(
        &mut self,
        hard_state: Option<HardState>,
        snapshot: Option<Snapshot>,
        entries: &[Entry],
    ) -> Result<(), StorageFailure> {
        // Nothing can crash between these calls: together is automatic.
        if let Some(snapshot) = snapshot {
            let index = snapshot.metadata.index;
            self.apply_snapshot(snapshot).map_err(|error| {
                StorageFailure::Refused(format!("snapshot at index {index}: {error}"))
            })?;
        }
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            self.append(entries).map_err(|error| {
                StorageFailure::Refused(format!(
                    "entries {}..={}: {error}",
                    first.index, last.index
                ))
            })?;
        }
        if let Some(hard_state) = hard_state {
            self.set_hard_state(hard_state).map_err(|error| {
                StorageFailure::Refused(format!("hard state {hard_state:?}: {error}"))
            })?;
        }
        Ok(())
    }

    fn record_snapshot(
        &mut self,
        index: Index,
        conf_state: ConfState,
        data: Bytes,
    ) -> Result<(), StorageFailure> {
        self.create_snapshot(index, conf_state, data)?;
        Ok(())
    }

    fn compact_log(&mut self, index: Index) -> Result<(), StorageFailure> {
        Ok(self.compact(index)?)
    }

    fn crash(self, _torn: bool) -> Result<Self, StorageFailure> {
        // Every write to a MemStorage is durable the moment it returns.
        Ok(self)
    }

    fn fork(&self) -> Result<Self, StorageFailure> {
        Ok(self.clone())
    }
}

impl SimStorage for SimGroupStorage {
    fn set_conf_state(&mut self, conf_state: ConfState) -> Result<(), StorageFailure> {
        Ok(SimGroupStorage::set_conf_state(self, conf_state)?)
    }

    fn hard_state(&self) -> HardState {
        SimGroupStorage::hard_state(self)
    }

    fn persist_ready(
        &mut self,
        hard_state: Option<HardState>,
        snapshot: Option<Snapshot>,
        entries: &[Entry],
    ) -> Result<(), StorageFailure> {
        // One batch: after a crash all of it is on disk or none of it.
        let mut batch = WriteBatch::new();
        batch.persist_ready(self.group().group(), hard_state, snapshot, entries.to_vec());
        Ok(self.group().log().write(batch)?)
    }

    fn record_snapshot(
        &mut self,
        index: Index,
        conf_state: ConfState,
        data: Bytes,
    ) -> Result<(), StorageFailure> {
        let group = self.group().group();
        self.group()
            .log()
            .create_snapshot(group, index, conf_state, data)?;
        Ok(())
    }

    fn compact_log(&mut self, index: Index) -> Result<(), StorageFailure> {
        let mut batch = WriteBatch::new();
        batch.group(self.group().group()).compact = Some(index);
        Ok(self.group().log().write(batch)?)
    }

    fn crash(self, torn: bool) -> Result<Self, StorageFailure> {
        let recovered = if torn {
            self.crash_torn()
        } else {
            SimGroupStorage::crash(self)
        };
        Ok(recovered?)
    }

    fn fork(&self) -> Result<Self, StorageFailure> {
        Ok(SimGroupStorage::fork(self)?)
    }
}

/// The storage of one simulated node: the core's [`MemStorage`] or concord's durable
/// log on a simulated disk. Clones share the disk (a `Disk` clone is another handle on
/// the same log, not a copy; see [`SimStorage::fork`]).
// A few hundred bytes per node, held behind a box wherever it is moved around.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum NodeStorage {
    /// [`StorageMode::Mem`].
    Mem(MemStorage),
    /// [`StorageMode::Disk`].
    Disk(SimGroupStorage),
}

/// Calls `$call` on whichever storage `$storage` holds.
macro_rules! dispatch {
    ($storage:expr, $inner:ident => $call:expr) => {
        match $storage {
            NodeStorage::Mem($inner) => $call,
            NodeStorage::Disk($inner) => $call,
        }
    };
}

impl NodeStorage {
    /// Storage for a node that starts as a member of `conf_state` (a bootstrap node);
    /// a disk's random choices (torn writes) come from `seed`.
    pub fn bootstrap(
        mode: StorageMode,
        seed: u64,
        conf_state: ConfState,
    ) -> Result<NodeStorage, StorageFailure> {
        Ok(match mode {
            StorageMode::Mem => NodeStorage::Mem(MemStorage::with_conf_state(conf_state)),
            StorageMode::Disk => NodeStorage::Disk(SimGroupStorage::bootstrap(
                seed,
                SIM_GROUP,
                conf_state,
                sim_log_config(),
            )?),
        })
    }

    /// Storage for a node that is not a member yet and waits to be added.
    pub fn empty(mode: StorageMode, seed: u64) -> Result<NodeStorage, StorageFailure> {
        Ok(match mode {
            StorageMode::Mem => NodeStorage::Mem(MemStorage::new()),
            StorageMode::Disk => {
                NodeStorage::Disk(SimGroupStorage::empty(seed, SIM_GROUP, sim_log_config())?)
            }
        })
    }

    /// Which kind of storage this is.
    pub fn mode(&self) -> StorageMode {
        match self {
            NodeStorage::Mem(_) => StorageMode::Mem,
            NodeStorage::Disk(_) => StorageMode::Disk,
        }
    }

    /// The simulated disk, for a `Disk` storage.
    pub fn fs(&self) -> Option<&SimFs> {
        match self {
            NodeStorage::Mem(_) => None,
            NodeStorage::Disk(storage) => Some(storage.fs()),
        }
    }

    /// Makes the disk inject `fault` into the next write that syncs. Returns false (and
    /// does nothing) for a `Mem` storage.
    pub fn arm(&self, fault: DiskFault) -> bool {
        let Some(fs) = self.fs() else {
            return false;
        };
        match fault {
            DiskFault::PowerLoss { torn, syncs_before } => fs.crash_at_sync(syncs_before, torn),
            DiskFault::SyncFailure => fs.fail_next_sync(),
        }
        true
    }

    /// Disarms a power loss that [`NodeStorage::arm`] set for a later sync than the
    /// write made. (By arming it past any sync a run makes: the next crash clears it.)
    pub fn disarm_power_loss(&self) {
        if let Some(fs) = self.fs() {
            fs.crash_at_sync(u32::MAX, false);
        }
    }
}

impl SimStorage for NodeStorage {
    fn set_conf_state(&mut self, conf_state: ConfState) -> Result<(), StorageFailure> {
        dispatch!(self, storage => SimStorage::set_conf_state(storage, conf_state))
    }

    fn hard_state(&self) -> HardState {
        dispatch!(self, storage => SimStorage::hard_state(storage))
    }

    fn persist_ready(
        &mut self,
        hard_state: Option<HardState>,
        snapshot: Option<Snapshot>,
        entries: &[Entry],
    ) -> Result<(), StorageFailure> {
        dispatch!(self, storage => storage.persist_ready(hard_state, snapshot, entries))
    }

    fn record_snapshot(
        &mut self,
        index: Index,
        conf_state: ConfState,
        data: Bytes,
    ) -> Result<(), StorageFailure> {
        dispatch!(self, storage => storage.record_snapshot(index, conf_state, data))
    }

    fn compact_log(&mut self, index: Index) -> Result<(), StorageFailure> {
        dispatch!(self, storage => storage.compact_log(index))
    }

    fn crash(self, torn: bool) -> Result<Self, StorageFailure> {
        Ok(match self {
            NodeStorage::Mem(storage) => NodeStorage::Mem(SimStorage::crash(storage, torn)?),
            NodeStorage::Disk(storage) => NodeStorage::Disk(SimStorage::crash(storage, torn)?),
        })
    }

    fn fork(&self) -> Result<Self, StorageFailure> {
        Ok(match self {
            NodeStorage::Mem(storage) => NodeStorage::Mem(SimStorage::fork(storage)?),
            NodeStorage::Disk(storage) => NodeStorage::Disk(SimStorage::fork(storage)?),
        })
    }
}

impl Storage for NodeStorage {
    fn initial_state(&self) -> Result<RaftState, StorageError> {
        dispatch!(self, storage => storage.initial_state())
    }

    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        dispatch!(self, storage => storage.entries(low, high, max_bytes))
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        dispatch!(self, storage => storage.term(index))
    }

    fn first_index(&self) -> Result<Index, StorageError> {
        dispatch!(self, storage => storage.first_index())
    }

    fn last_index(&self) -> Result<Index, StorageError> {
        dispatch!(self, storage => storage.last_index())
    }

    fn snapshot(&self, request_index: Index) -> Result<Snapshot, StorageError> {
        dispatch!(self, storage => storage.snapshot(request_index))
    }
}

impl LogStore for NodeStorage {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        dispatch!(self, storage => storage.append(entries))
    }

    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        dispatch!(self, storage => storage.set_hard_state(hard_state))
    }

    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        dispatch!(self, storage => storage.apply_snapshot(snapshot))
    }

    fn create_snapshot(
        &mut self,
        index: Index,
        conf_state: ConfState,
        data: Bytes,
    ) -> Result<Snapshot, StorageError> {
        dispatch!(self, storage => storage.create_snapshot(index, conf_state, data))
    }

    fn compact(&mut self, compact_index: Index) -> Result<(), StorageError> {
        dispatch!(self, storage => storage.compact(compact_index))
    }
}
