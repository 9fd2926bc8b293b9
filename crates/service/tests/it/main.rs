//! concord-service's integration tests, one binary.

mod model;
mod namespace;
mod tree;
