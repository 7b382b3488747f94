//! dataflow-runtime: turns nodes into workflows. A workflow is a DAG of named node instances
//! with parameters and connections between their fields, built in Rust ([`WorkflowBuilder`])
//! or loaded from YAML ([`yaml::load_file`]), validated completely before anything runs, and
//! run by a [`Runtime`]: ready nodes at once under a concurrency limit, with timeouts,
//! retries, a circuit breaker per store and a [`RunReport`].

#![warn(missing_docs)]

pub mod exec;
pub mod generic;
pub mod node;
pub mod path;
pub mod registry;
pub mod schema;
pub mod workflow;
pub mod yaml;

pub use exec::{NodeReport, NodeStatus, Progress, RunOptions, RunReport, RunStatus, Runtime};
pub use node::{ComputeNode, DynNode, NodeEnv, NodeFailure, NodeInfo, NodeRef, TypedNode};
pub use path::FieldPath;
pub use registry::{NodeFactory, Registry};
pub use workflow::{ConnectionDef, GraphFormat, InputDef, NodeDef, Problem, Problems, RetryPolicy, Workflow, WorkflowBuilder, WorkflowDef};
pub use yaml::{Diagnostic, Diagnostics};
