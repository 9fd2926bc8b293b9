//! The memstore binary as its users run it: real processes on loopback, ports chosen
//! by the OS, every process killed and reaped when a test ends however it ends.

mod cli;
mod exactly_once;
mod failover;
mod membership;
mod regressions;
mod support;
mod walkthrough;
