//! Integration tests of the `concord` binary: each builds what it needs on disk with
//! concord-storage, runs the real binary, and checks its output and exit code.

mod inspect;
mod support;
