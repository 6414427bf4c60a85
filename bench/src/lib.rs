//! slotgate-bench: a pipelined Redis load generator (standalone or direct-to-cluster) and a
//! side-by-side runner that compares slotgate against redis-server on the same machine.
//!
//! The binary (`src/main.rs`) is a thin CLI over these modules; integration tests drive the
//! binary itself.
pub mod cluster;
pub mod compare;
pub mod conn;
pub mod json;
pub mod keys;
pub mod loadgen;
pub mod stats;
pub mod workload;
