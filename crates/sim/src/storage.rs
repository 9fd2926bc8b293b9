//! The seam between the simulator and a node's durable state.
//!
//! Every simulated node keeps the logs of all its raft groups in one [`NodeDisk`], as
//! a concord node keeps them in one log; while the node runs, each group's driver holds
//! its log as concord-storage's [`GroupStore`], exactly as the runtime does. There are
//! two kinds, chosen per cluster with [`StorageMode`]:
//!
//! - [`StorageMode::Disk`] (the default): concord's durable [`Log`] on a simulated disk
//!   ([`SimFs`]), shared by every group of the node, writes of several groups going in
//!   one batch (group commit). A crash drops whatever was not fsynced (or, torn, keeps
//!   a random prefix of it) and runs the real recovery code; the disk can lose power in
//!   the middle of a write or fail an fsync ([`DiskFault`]), and can have bits flipped
//!   while its node is down.
//! - [`StorageMode::Mem`]: the core's [`MemStorage`] per group, where every write is
//!   durable at once and a crash loses only what the driver had not yet written.
//!   Faster, and it isolates the core from the storage engine.

use std::fmt;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use concord_raft::{ConfState, HardState, MemStorage, Storage, StorageError};
use concord_storage::{GroupId, GroupStore, Log, LogConfig, SimFs};

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

/// The durable state of one simulated node: every group's log. See the module docs.
#[derive(Debug)]
pub enum NodeDisk {
    /// [`StorageMode::Mem`]: each group's [`MemStorage`] (while the node runs, inside
    /// its group's driver).
    Mem {
        /// The groups' logs not held by a running driver.
        groups: BTreeMap<GroupId, MemStorage>,
    },
    /// [`StorageMode::Disk`]: the node's log on its disk.
    Disk {
        /// The disk.
        fs: SimFs,
        /// The log, opened on it.
        log: Log,
    },
    /// [`StorageMode::Disk`] whose recovery failed: the disk as it was left.
    Unreadable {
        /// The disk.
        fs: SimFs,
    },
}

impl NodeDisk {
    /// A node's first storage: `founded` groups bootstrapped with their founding
    /// membership (as `MemStorage::with_conf_state`), `joining` groups empty (as
    /// `MemStorage::new`: the node waits to be added). A disk's random choices (torn
    /// writes) come from `seed`.
    pub fn new(
        mode: StorageMode,
        seed: u64,
        founded: &[(GroupId, ConfState)],
        joining: &[GroupId],
    ) -> Result<NodeDisk, StorageFailure> {
        match mode {
            StorageMode::Mem => {
                let mut groups = BTreeMap::new();
                for (group, conf_state) in founded {
                    groups.insert(*group, MemStorage::with_conf_state(conf_state.clone()));
                }
                for group in joining {
                    groups.insert(*group, MemStorage::new());
                }
                Ok(NodeDisk::Mem { groups })
            }
            StorageMode::Disk => {
                let fs = SimFs::new(seed);
                let log = open_log(&fs)?;
                for (group, conf_state) in founded {
                    log.bootstrap_group(*group, conf_state.clone())?;
                }
                Ok(NodeDisk::Disk { fs, log })
            }
        }
    }

    /// Which kind of storage this is.
    pub fn mode(&self) -> StorageMode {
        match self {
            NodeDisk::Mem { .. } => StorageMode::Mem,
            NodeDisk::Disk { .. } | NodeDisk::Unreadable { .. } => StorageMode::Disk,
        }
    }

    /// The simulated disk, for a `Disk` storage.
    pub fn fs(&self) -> Option<&SimFs> {
        match self {
            NodeDisk::Mem { .. } => None,
            NodeDisk::Disk { fs, .. } | NodeDisk::Unreadable { fs } => Some(fs),
        }
    }

    /// The durable log, for a `Disk` storage whose recovery succeeded.
    pub fn log(&self) -> Option<&Log> {
        match self {
            NodeDisk::Disk { log, .. } => Some(log),
            _ => None,
        }
    }

    fn unreadable() -> StorageFailure {
        StorageFailure::Refused("the disk's recovery failed: nothing can be read".into())
    }

    /// Hands `group`'s log to a driver starting up, restarting with the membership of
    /// the group's latest snapshot (the state machine restarts from that snapshot).
    pub fn open_group(&mut self, group: GroupId) -> Result<GroupStore, StorageFailure> {
        match self {
            NodeDisk::Mem { groups } => {
                let storage = groups.remove(&group).unwrap_or_default();
                let conf_state = storage.snapshot(0)?.metadata.conf_state;
                Ok(GroupStore::memory(storage, Some(conf_state)))
            }
            NodeDisk::Disk { log, .. } => {
                let storage = log.group(group);
                let conf_state = storage.snapshot(0)?.metadata.conf_state;
                Ok(GroupStore::durable(storage, Some(conf_state)))
            }
            NodeDisk::Unreadable { .. } => Err(Self::unreadable()),
        }
    }

    /// Takes `group`'s log back from a driver that stopped (a crash: a `Mem` log keeps
    /// everything written to it).
    pub fn close_group(&mut self, group: GroupId, store: GroupStore) {
        if let (NodeDisk::Mem { groups }, Some(storage)) = (self, store.into_memory()) {
            groups.insert(group, storage);
        }
    }

    /// The last recorded hard state of `group` (while no driver holds it).
    pub fn hard_state(&self, group: GroupId) -> HardState {
        match self {
            NodeDisk::Mem { groups } => groups
                .get(&group)
                .map(MemStorage::hard_state)
                .unwrap_or_default(),
            NodeDisk::Disk { log, .. } => log.group(group).hard_state(),
            NodeDisk::Unreadable { .. } => HardState::default(),
        }
    }

    /// `group`'s log as the raft traits read it (while no driver holds it).
    pub fn group_view(&self, group: GroupId) -> Option<GroupStore> {
        match self {
            NodeDisk::Mem { groups } => groups
                .get(&group)
                .map(|storage| GroupStore::memory(storage.clone(), None)),
            NodeDisk::Disk { log, .. } => Some(GroupStore::durable(log.group(group), None)),
            NodeDisk::Unreadable { .. } => None,
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

    /// Disarms a power loss that [`NodeDisk::arm`] set for a later sync than the write
    /// made.
    pub fn disarm_power_loss(&self) {
        if let Some(fs) = self.fs() {
            fs.crash_at_sync(u32::MAX, false);
        }
    }

    /// What survives a crash of the node (torn: unsynced writes may be partly kept),
    /// recovered as the node's restart would recover it. Every group's `Mem` log must
    /// have been handed back with [`NodeDisk::close_group`]. When recovery refuses the
    /// disk, the error comes with the disk as it was left ([`NodeDisk::Unreadable`]).
    pub fn crash(self, torn: bool) -> Result<NodeDisk, (NodeDisk, StorageFailure)> {
        match self {
            // Every write to a MemStorage is durable the moment it returns.
            NodeDisk::Mem { groups } => Ok(NodeDisk::Mem { groups }),
            NodeDisk::Disk { fs, log } => {
                drop(log);
                if torn {
                    fs.crash_torn();
                } else {
                    fs.crash();
                }
                Self::recover(fs)
            }
            NodeDisk::Unreadable { fs } => {
                fs.crash();
                Self::recover(fs)
            }
        }
    }

    /// Recovers the disk again (it was changed while the node was down).
    pub fn reopen(self) -> Result<NodeDisk, (NodeDisk, StorageFailure)> {
        match self {
            NodeDisk::Disk { fs, log } => {
                drop(log);
                Self::recover(fs)
            }
            NodeDisk::Unreadable { fs } => Self::recover(fs),
            mem => Ok(mem),
        }
    }

    fn recover(fs: SimFs) -> Result<NodeDisk, (NodeDisk, StorageFailure)> {
        match open_log(&fs) {
            Ok(log) => Ok(NodeDisk::Disk { fs, log }),
            Err(error) => Err((NodeDisk::Unreadable { fs }, error)),
        }
    }

    /// An independent copy of a `Disk` storage as it is now (unsynced data included,
    /// to be lost or kept by the copy's own crashes), for faults that need the storage
    /// as it was before a write. `None` for `Mem` (its groups live in their drivers).
    pub fn fork(&self) -> Result<Option<NodeDisk>, StorageFailure> {
        match self {
            NodeDisk::Disk { fs, .. } => {
                let fs = fs.fork();
                let log = open_log(&fs)?;
                Ok(Some(NodeDisk::Disk { fs, log }))
            }
            _ => Ok(None),
        }
    }
}

/// Where a simulated node keeps its log on its disk.
const SIM_DATA_DIR: &str = "/concord";

fn open_log(fs: &SimFs) -> Result<Log, StorageFailure> {
    Ok(Log::open_with(
        Arc::new(fs.clone()),
        Path::new(SIM_DATA_DIR),
        sim_log_config(),
    )?)
}
