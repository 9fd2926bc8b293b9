#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod apply;
pub mod config;
pub mod data_dir;
pub mod metrics;
mod node;
mod raft_loop;
mod retry;
pub mod service;
pub mod storage;
pub mod transport;

/// The remote client (the `concord-client` crate).
pub use concord_client as client;
pub use concord_group::{
    framing::GroupSpec, ApplyContext, ClientTable, ClientTableLimits, DecodeError, ExactlyOnce,
    GroupEvent, LeaderNotice, LogEntry, StateMachine, StateMachineError, StateMachineFactory,
    Typed, TypedStateMachine,
};
pub use concord_raft::{Index, NodeId};
pub use concord_types::{
    ApiError, ClientId, GroupHealth, GroupId, GroupStatus, JoinTicket, Member, MemberRole,
    ProposeResponse, ReadMode, ReadResponse, RequestId,
};
pub use config::{ConfigError, NodeConfig};
pub use node::{
    FaultHooks, GroupHandle, MakeServices, Node, NodeBuilder, NodeError, NodeHandle,
    TransportMaker, TypedGroup, DEFAULT_GROUP,
};
pub use retry::retry_until;
pub use storage::StorageBackend;

pub(crate) use concord_types::sync::lock;
