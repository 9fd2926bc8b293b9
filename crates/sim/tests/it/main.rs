//! Integration tests of concord-sim, in one binary.

mod disk;
mod harness;
mod history;
mod lab;
mod linearizability;
mod planted_bugs;
mod sim_faults;
mod sweep;
