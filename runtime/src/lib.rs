//! dataflow-runtime: turns nodes into workflows. A workflow is a DAG of named node instances
//! with parameters and connections between their fields, built in Rust ([`WorkflowBuilder`])
//! or loaded from YAML ([`yaml::load_file`]), validated completely before anything runs, and
//! run by a [`Runtime`]: ready nodes at once under a concurrency limit, with timeouts,
//! retries, a circuit breaker per store and a [`RunReport`].
//!
//! The modules are layers, each importing only from the ones before it: [`node`] (the node
//! interface, field paths, schemas, the registry) → [`workflow`] (definitions, the builder,
//! validation in named passes, the YAML loader) → [`scheduler`] (runs, with its breaker, retry
//! and report modules) → [`builtin`] (the `Switch`, `Merge`, `Transform` and `Map` nodes).

#![warn(missing_docs)]

pub mod builtin;
pub mod node;
pub mod scheduler;
pub mod workflow;

pub use node::registry::{NodeFactory, Registry};
pub use node::{ComputeNode, DynNode, NodeEnv, NodeFailure, NodeInfo, NodeRef, SubRunError, SubRuns, SubWorkflow, TypedNode, decode_input};
pub use node::{path, path::FieldPath, registry, schema};
pub use scheduler::{NodeReport, NodeStatus, Progress, RunOptions, RunReport, RunStatus, Runtime};
pub use workflow::yaml::{self, Diagnostic, Diagnostics};
pub use workflow::{
    ConnectionDef, GraphFormat, InputDef, InputProblem, NodeDef, Problem, Problems, RetryPolicy, Workflow, WorkflowBuilder, WorkflowDef,
};
