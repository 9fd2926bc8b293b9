//! concord-node integration tests: the gRPC transport over real loopback sockets,
//! the fault-injecting and in-memory transports, and the client service round trip.

mod faults;
mod garbage;
mod grpc_transport;
mod node_cluster;
mod node_membership;
mod node_misc;
mod node_restart;
mod node_support;
mod service;
mod state_machine_api;
mod support;
