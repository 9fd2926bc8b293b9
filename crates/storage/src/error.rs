//! Errors in two levels, as in concord-raft: refusals a caller handles (an index
//! compacted or not yet written, a stale snapshot) and fatal errors after which the log
//! takes no more writes and the node must stop (a failed write or fsync, corruption).

use std::io;
use std::path::PathBuf;

use concord_raft::StorageError;

use crate::GroupId;

/// Everything the log and snapshot store can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file operation failed before anything was written (opening, reading, listing).
    #[error("{operation} {}: {source}", path.display())]
    Io {
        /// What was being done ("opening", "reading", ...).
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Stored data failed its checks: a checksum, a header, or a record that contradicts
    /// the log before it. Recovery refuses to start on it unless told to cut the log
    /// there ([`crate::CorruptionPolicy::CutLog`]).
    #[error("corrupt data in {} at byte {offset}: {reason}", path.display())]
    Corruption {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damaged record (or field) in the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A write or fsync failed. Nothing written since the last durable batch can be
    /// trusted (a failed fsync may have dropped the data), so the log stops taking
    /// writes: the node must stop and restart from what is on disk.
    #[error(
        "fatal: {operation} {} failed: {source}; the log is stopped and the node must restart",
        path.display()
    )]
    Fatal {
        /// What failed ("syncing", "writing", ...).
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// An earlier fatal error stopped the log.
    #[error("the log stopped after a fatal error ({0}); the node must restart")]
    Poisoned(String),
    /// Another process holds the data directory.
    #[error("data directory {} is in use by another process", path.display())]
    Locked {
        /// The data directory.
        path: PathBuf,
    },
    /// The requested index is at or below the group's compaction point.
    #[error("log index compacted")]
    Compacted,
    /// The requested index is beyond the group's last entry.
    #[error("log index unavailable")]
    Unavailable,
    /// The request contradicts the group's state (a stale snapshot, compacting past the
    /// snapshot); nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// A group that must be new already has state.
    #[error("group {0} already has state in this log")]
    GroupExists(GroupId),
    /// The configuration is invalid.
    #[error("invalid storage config: {0}")]
    Config(String),
}

impl Error {
    /// True if the node must stop: the log takes no more writes.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::Fatal { .. } | Error::Poisoned(_))
    }

    pub(crate) fn io(operation: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            operation,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corruption(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corruption {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}

impl From<Error> for StorageError {
    fn from(error: Error) -> Self {
        match error {
            Error::Compacted => StorageError::Compacted,
            Error::Unavailable => StorageError::Unavailable,
            other => StorageError::Failed(other.to_string()),
        }
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
