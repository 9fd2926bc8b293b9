//! concord's coordination service as pure state machines: no IO, no clocks, no
//! tokio. The server (the `concord` binary) runs them in `concord-node`'s groups;
//! the simulator runs the same code under its faults.
//!
//! - [`Tree`] — a namespace's tree of typed nodes (dir, blob, set, queue, counter),
//!   its revision and history, transactions.
//! - [`Namespace`] — the tree as a group's [`concord_group::StateMachine`], with the
//!   exactly-once table.
//! - [`command`] — what clients send and what they get back, and its encoding.
//! - [`Limits`] — a namespace's bounds, named as their errors name them.
//! - [`factory`] — the state machines a node makes from a group's spec.
//! - [`meta`] — the `meta` namespace's state: the cluster's nodes, where every
//!   namespace lives, placement and the replacement of lost members.
#![deny(missing_docs)]

pub mod command;
mod error;
pub mod factory;
mod limits;
pub mod meta;
mod namespace;
mod path;
mod tree;

pub use error::ServiceError;
pub use limits::{Limit, Limits};
pub use namespace::Namespace;
pub use path::Path;
pub use tree::{Node, NodeKind, NodeValue, Stat, Tree};
