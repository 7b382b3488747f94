//! dataflow-workflows: the shipped declarative workflows and the `dataflow` command-line tool.
//!
//! Both arrive with the runtime's issue; this crate holds their place in the workspace.

#![warn(missing_docs)]

pub use dataflow_models;
