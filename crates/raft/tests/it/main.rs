//! Integration tests of concord-raft, compiled into one binary.

mod bench_loop;
