//! Integration tests of the `concord` binary: `inspect` on what concord-storage wrote,
//! and `server` as real processes on loopback driven through concord-client.

mod bad_input;
mod cluster;
mod failover;
mod inspect;
mod repair;
mod server;
mod support;
