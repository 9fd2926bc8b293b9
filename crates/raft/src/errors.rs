//! Errors in two levels: what a caller handles (a refused proposal) and what stops the
//! node (storage failed).

use crate::types::{Index, NodeId};

/// Why a proposal was refused. Returned at once; a refused proposal is never queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader. `leader_hint` is the leader if one is known.
    #[error("not the leader (leader: {})", leader_hint.map(|id| id.to_string()).unwrap_or_else(|| "unknown".into()))]
    NotLeader {
        /// The current leader, when known.
        leader_hint: Option<NodeId>,
    },
    /// Leadership is being handed to `target`; proposals wait for the new leader.
    #[error("leadership transfer to node {target} under way")]
    TransferInProgress {
        /// Where leadership is going.
        target: NodeId,
    },
    /// Appending would put more than `limit_bytes` of payload in the uncommitted tail.
    #[error("uncommitted log over its limit of {limit_bytes} bytes; retry once entries commit")]
    UncommittedBytesExceeded {
        /// The configured `uncommitted_bytes_max`.
        limit_bytes: u64,
    },
    /// A membership change is already in flight (not yet applied).
    #[error("a membership change is pending at index {pending_index}; wait for it to apply")]
    ConfChangePending {
        /// The index of the pending change.
        pending_index: Index,
    },
    /// The membership change is not allowed from the current configuration.
    #[error("invalid membership change: {0}")]
    InvalidConfChange(String),
    /// Too many reads are waiting for a heartbeat quorum.
    #[error("{limit} reads already pending; retry shortly")]
    TooManyPendingReads {
        /// The most reads that may wait at once.
        limit: usize,
    },
    /// The batch was empty.
    #[error("empty proposal batch")]
    EmptyBatch,
}

/// Errors reading the log through [`crate::Storage`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The requested index is below the first index (compacted into a snapshot).
    #[error("log index compacted")]
    Compacted,
    /// The requested index is above the last index.
    #[error("log index unavailable")]
    Unavailable,
    /// The snapshot is being built; ask again later.
    #[error("snapshot temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// The storage failed; the node must stop.
    #[error("storage failed: {0}")]
    Failed(String),
}

/// A fatal error: the node cannot go on safely and must stop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The storage failed under us.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The configuration is invalid.
    #[error("invalid raft config: {0}")]
    Config(String),
}
