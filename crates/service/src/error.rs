//! What a request to a namespace can fail with. Every replica reaches the same error
//! for the same command, so errors are part of the replicated result and travel in
//! responses.

use serde::{Deserialize, Serialize};

use crate::limits::Limit;
use crate::tree::NodeKind;

/// Why a request did not apply (a write changes nothing) or could not be answered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ServiceError {
    /// The path is malformed.
    #[error("invalid path {path:?}: {why}")]
    InvalidPath {
        /// The path as given (cut to 200 characters).
        path: String,
        /// What is wrong and what is allowed.
        why: String,
    },
    /// No node at the path.
    #[error("{path}: no such node")]
    NotFound {
        /// The path.
        path: String,
    },
    /// A node exists at the path already.
    #[error("{path}: a node exists there already")]
    AlreadyExists {
        /// The path.
        path: String,
    },
    /// The node is of another type than the operation needs.
    #[error("{path}: is a {actual}, the operation needs a {expected}")]
    WrongType {
        /// The path.
        path: String,
        /// What the operation works on.
        expected: NodeKind,
        /// What the node is.
        actual: NodeKind,
    },
    /// A node was to be created under a node that is not a directory.
    #[error("{path}: is a {actual}; only a dir has children")]
    NotADirectory {
        /// The parent.
        path: String,
        /// What the parent is.
        actual: NodeKind,
    },
    /// A directory with children was to be deleted without `recursive`.
    #[error(
        "{path}: the dir has {children} children; delete it with recursive to delete them too"
    )]
    NotEmpty {
        /// The directory.
        path: String,
        /// How many children it has.
        children: u64,
    },
    /// The root cannot be deleted or replaced.
    #[error("/: the root dir cannot be created or deleted")]
    Root,
    /// A size or count limit of the namespace's configuration.
    #[error("{limit} exceeded: {actual} is over the limit of {max}")]
    LimitExceeded {
        /// The limit (its `Display` is its config field's name).
        limit: Limit,
        /// The limit.
        max: u64,
        /// What the request asked for.
        actual: u64,
    },
    /// The namespace is at its size quota: writes that grow it are refused, deletes
    /// and writes that shrink it still apply.
    #[error(
        "namespace_bytes_max exceeded: the write would make the namespace {would_be} bytes, \
         over its quota of {max} bytes; delete data or raise the quota"
    )]
    QuotaExceeded {
        /// The quota, in bytes.
        max: u64,
        /// The namespace's size had the write applied.
        would_be: u64,
    },
    /// A counter would leave the range of a signed 64-bit integer.
    #[error("{path}: the counter {value} + {delta} overflows a signed 64-bit integer")]
    CounterOverflow {
        /// The counter.
        path: String,
        /// Its value.
        value: i64,
        /// What was to be added.
        delta: i64,
    },
    /// A read at a revision the namespace no longer keeps history for.
    #[error(
        "revision {requested} is compacted: the namespace keeps history from revision \
         {oldest} (history_revisions_max)"
    )]
    Compacted {
        /// The revision asked for.
        requested: u64,
        /// The oldest revision still readable.
        oldest: u64,
    },
    /// A read at a revision the namespace has not reached.
    #[error("revision {requested} is in the future: the namespace is at revision {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: u64,
        /// The namespace's revision.
        current: u64,
    },
    /// A transaction's operation failed: nothing of the transaction applied.
    #[error("operation {op} of the transaction: {error}")]
    InTransaction {
        /// The failed operation's position in the branch that ran (from 0).
        op: u32,
        /// Why it failed.
        error: Box<ServiceError>,
    },
    /// A command or query that is not well formed (bytes that do not decode, an
    /// list page of 0, another format version, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The namespace is being deleted (sealed): it takes no more requests.
    #[error("the namespace is deleted")]
    NamespaceDeleted,
}
