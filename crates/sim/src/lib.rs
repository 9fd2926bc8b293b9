//! concord-sim: the deterministic simulator of concord, its invariant checkers, and the
//! linearizability checker of client histories.
#![deny(missing_docs)]

pub mod history;
pub mod linearizability;
