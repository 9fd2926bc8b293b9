//! concord-sim: the deterministic simulator of concord, its invariant checkers, and the
//! linearizability checker of client histories.
#![deny(missing_docs)]

pub mod checkers;
pub mod client;
pub mod cluster;
pub mod faults;
pub mod history;
pub mod kv;
pub mod linearizability;
pub mod network;
pub mod params;
pub mod rng;
pub mod run;
pub mod storage;
pub mod trace;
pub mod tree_kv;
