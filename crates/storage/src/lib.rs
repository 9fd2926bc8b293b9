#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod batch;
mod config;
mod error;
mod fs;
mod group;
mod inspect;
mod log;
mod record;
mod replay;
mod segment;
mod sim_fs;
mod snapshot;
mod storage;
mod store;

pub use batch::{GroupWrite, WriteBatch};
pub use config::{CorruptionPolicy, LogConfig};
pub use error::{Error, Result};
pub use fs::{DirLock, File, FileSystem, StdFs, LOCK_FILE_NAME};
pub use inspect::{
    inspect, inspect_with, ConfStateReport, DataDirReport, EntryReport, GroupReport,
    HardStateReport, InspectOptions, SegmentReport, SnapshotReport,
};
pub use log::{Durable, Log, LogStats, ENTRY_DATA_BYTES_MAX};
pub use replay::{LogCut, RecoveryReport, TornTail};
pub use sim_fs::{SimFs, SimFsStats};
pub use snapshot::SnapshotReader;
pub use storage::GroupStorage;
pub use store::GroupStore;

/// A raft group's id. Every record in the shared log carries one.
pub type GroupId = u64;
