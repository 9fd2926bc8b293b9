#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod client;
pub mod service;
pub mod transport;

pub use concord_raft::NodeId;
