//! dataflow-tests: the live-service harness that integration tests and benchmarks run
//! against, and per-test fixtures on top of it.

#![warn(missing_docs)]

pub mod embedded;
pub mod fixture;
pub mod harness;
pub mod world;

pub use harness::{BoltEndpoint, Provider, ServiceKind, Services};
