//! dataflow-runtime: the workflow runtime of dataflow-rs (builder, declarative loader,
//! validation, scheduler, policies, run reports, node registry).
//!
//! The runtime arrives with its own issue; until then nodes run directly through
//! [`dataflow_core::Node::run`].

#![warn(missing_docs)]

pub use dataflow_core;
