//! Integration tests of concord-storage, one binary.

mod conformance;
mod support;
