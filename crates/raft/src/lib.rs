#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod conf_change;
pub mod config;
pub mod errors;
pub mod log;
pub mod progress;
pub mod quorum;
pub mod raft;
pub mod raw_node;
pub mod read_only;
pub mod replica;
pub mod storage;
pub mod tracker;
pub mod types;

pub use conf_change::{ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition};
pub use config::{Config, PlantedBug, ReadOnlyOption};
pub use errors::{Error, ProposeError, StorageError};
pub use raft::LogPosition;
pub use raw_node::{IncomingSnapshotStatus, ProgressStatus, RawNode, Ready, Status};
pub use storage::{LogStore, MemStorage, RaftState, Storage};
pub use types::*;
