#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod apply;
pub mod client;
pub mod config;
mod framing;
pub mod metrics;
mod node;
mod raft_loop;
pub mod service;
pub mod state_machine;
pub mod storage;
pub mod transport;

pub use concord_raft::{Index, NodeId};
pub use config::{ConfigError, NodeConfig};
pub use node::{
    GroupHandle, Node, NodeBuilder, NodeError, NodeHandle, TransportMaker, TypedGroup,
    DEFAULT_GROUP,
};
pub use service::{
    ApiError, GroupStatus, JoinTicket, Member, MemberRole, ProposeResponse, ReadMode,
};
pub use state_machine::{
    DecodeError, LogEntry, StateMachine, StateMachineError, StateMachineFactory, Typed,
    TypedStateMachine,
};
pub use storage::StorageBackend;

/// A raft group's id.
pub type GroupId = u64;

/// Locks a mutex, ignoring poisoning: the data behind the node's mutexes stays
/// consistent even if a holder panicked.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}
