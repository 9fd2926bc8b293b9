//! concord's wire formats: the `.proto` files under `proto/` and the Rust code that
//! tonic and prost generate from them.
//!
//! - [`transport`] (`concord.transport.v1`): the peer transport. One bidirectional
//!   `PeerTransport.Stream` per node pair carries `MessageBatch`es of raft messages
//!   for all groups; the receiver answers with cumulative `StreamAck`s.
//! - [`api`] (`concord.api.v1`): the client and admin service `Raft` (propose, read,
//!   status, members, join, leave, learners, promotion, removal, leader transfer).
//!   Errors are gRPC statuses carrying an `ErrorDetail` in a google.rpc.Status-shaped
//!   `RpcStatus`.
//! - [`service`] (`concord.v1`): the coordination service — `Tree` (transactions,
//!   queries, client registration for exactly-once) and `Namespaces` (create, delete,
//!   list). A refusal the namespace decided on is a `ServiceError` in the reply; a
//!   call that reached no decision fails as `concord.api.v1` calls do.
//!
//! The code is built with protox (no `protoc` anywhere). [`convert`] turns the API's
//! messages into `concord-types` values and back, strictly (unknown enum values and
//! missing fields are errors); the peer transport's raft messages are converted by
//! `concord-node`.
#![deny(missing_docs)]

/// The peer transport: raft messages between nodes (`concord.transport.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod transport {
    tonic::include_proto!("concord.transport.v1");
}

/// The client and admin service (`concord.api.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod api {
    tonic::include_proto!("concord.api.v1");

    /// The type URL of an [`ErrorDetail`] packed in an [`RpcStatus`]'s details.
    pub const ERROR_DETAIL_TYPE_URL: &str = "type.googleapis.com/concord.api.v1.ErrorDetail";

    /// The path prost gives `concord.api.v1` from another concord package
    /// (`super::api::v1::RequestId` from [`crate::service`]).
    pub mod v1 {
        pub use super::*;
    }
}

/// The coordination service (`concord.v1`): namespaces and their trees.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod service {
    tonic::include_proto!("concord.v1");
}

pub mod convert;
pub mod service_convert;

/// The encoded `FileDescriptorSet` of every concord `.proto` file (with imports), for
/// gRPC reflection and tools.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/concord_descriptor_set.bin"));
