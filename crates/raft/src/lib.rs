//! concord-raft: a sans-IO Raft consensus core.
#![deny(missing_docs)]

pub mod conf_change;
pub mod config;
pub mod errors;
pub mod log;
pub mod progress;
pub mod quorum;
pub mod storage;
pub mod tracker;
pub mod types;

pub use conf_change::{ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition};
pub use config::{Config, ReadOnlyOption};
#[cfg(feature = "planted-bugs")]
pub use config::PlantedBug;
pub use errors::{Error, ProposeError, StorageError};
pub use storage::{LogStore, MemStorage, RaftState, Storage};
pub use types::*;
