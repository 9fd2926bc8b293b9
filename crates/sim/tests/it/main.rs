//! Integration tests of concord-sim, in one binary.

mod history;
mod linearizability;
