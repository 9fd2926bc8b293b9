//! The bounds of a namespace. They decide what applies, so every replica of a
//! namespace must use the same: they are part of the namespace's replicated state
//! (given when it is created, kept in its snapshots), not of a node's config.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ServiceError;

/// A namespace's limits. Each field's name is the name its error gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest blob value, set member or queue item, in bytes.
    pub value_bytes_max: u32,
    /// Longest path, in bytes.
    pub path_bytes_max: u32,
    /// Largest encoded command (a write request), in bytes.
    pub request_bytes_max: u32,
    /// Most children of one dir.
    pub children_per_dir_max: u32,
    /// Most guards and operations in a transaction (both branches together), or
    /// reads in a query.
    pub txn_ops_max: u32,
    /// Most entries one list page returns.
    pub list_page_entries_max: u32,
    /// Most members a set read or a set algebra result returns.
    pub members_max: u32,
    /// The namespace's size quota, in bytes (paths, values and a fixed overhead per
    /// node); past it, writes that grow the namespace are refused.
    pub namespace_bytes_max: u64,
    /// How many past revisions reads at a revision can go back (history kept).
    pub history_revisions_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            value_bytes_max: 1024 * 1024,
            path_bytes_max: 4096,
            request_bytes_max: 3 * 512 * 1024,
            children_per_dir_max: 100_000,
            txn_ops_max: 128,
            list_page_entries_max: 10_000,
            members_max: 100_000,
            namespace_bytes_max: 2 * 1024 * 1024 * 1024,
            history_revisions_max: 1000,
        }
    }
}

/// One of the [`Limits`], as an error names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Limit {
    /// [`Limits::value_bytes_max`].
    ValueBytes,
    /// [`Limits::path_bytes_max`].
    PathBytes,
    /// [`Limits::request_bytes_max`].
    RequestBytes,
    /// [`Limits::children_per_dir_max`].
    ChildrenPerDir,
    /// [`Limits::txn_ops_max`].
    TxnOps,
    /// [`Limits::list_page_entries_max`].
    ListPageEntries,
    /// [`Limits::members_max`].
    Members,
}

impl Limit {
    /// Every limit.
    pub const ALL: [Limit; 7] = [
        Limit::ValueBytes,
        Limit::PathBytes,
        Limit::RequestBytes,
        Limit::ChildrenPerDir,
        Limit::TxnOps,
        Limit::ListPageEntries,
        Limit::Members,
    ];

    /// The limit whose config field is `name`.
    pub fn from_name(name: &str) -> Option<Limit> {
        Limit::ALL
            .into_iter()
            .find(|limit| limit.to_string() == name)
    }

    /// `Ok` when `actual` is within `max`, else the error naming this limit.
    pub fn check(self, max: u64, actual: u64) -> Result<(), ServiceError> {
        if actual > max {
            return Err(ServiceError::LimitExceeded {
                limit: self,
                max,
                actual,
            });
        }
        Ok(())
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::ValueBytes => "value_bytes_max",
            Limit::PathBytes => "path_bytes_max",
            Limit::RequestBytes => "request_bytes_max",
            Limit::ChildrenPerDir => "children_per_dir_max",
            Limit::TxnOps => "txn_ops_max",
            Limit::ListPageEntries => "list_page_entries_max",
            Limit::Members => "members_max",
        })
    }
}
