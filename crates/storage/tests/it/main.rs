//! Integration tests of concord-storage, one binary.

mod conformance;
mod corruption;
mod crash;
mod fsync;
mod group_commit;
mod inspect;
mod model;
mod segments;
mod std_fs;
mod support;
