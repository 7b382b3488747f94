//! Workflows, the layer above the node interface: the definition (what a YAML file or the
//! builder describes, [`def`](WorkflowDef)), the Rust builder, validation into a runnable
//! [`Workflow`] in named passes (`build`), pictures of it (`render`), and the YAML loader
//! ([`yaml`]).

mod build;
mod builder;
mod def;
mod render;
pub mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value, json};

pub use builder::WorkflowBuilder;
pub use def::{ConnectionDef, INPUT, InputDef, MAX_ATTEMPTS, NodeDef, Problem, Problems, RetryPolicy, WorkflowDef};
pub use render::GraphFormat;

use crate::node::NodeRef;
use crate::node::path::{FieldPath, kind};
use crate::node::schema::{Ty, did_you_mean};

/// A validated node instance of a [`Workflow`].
pub(crate) struct CompiledNode {
    pub name: String,
    pub node: NodeRef,
    /// The node type as a metrics label, shared instead of copied on every run.
    pub type_label: std::sync::Arc<str>,
    pub static_input: Value,
    /// The output schema as the static input narrows it, when it does.
    pub narrowed_output: Option<Value>,
    pub timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
}

impl CompiledNode {
    /// The schema of what this instance outputs: the node type's, or narrower where the static
    /// input makes it so.
    pub fn output_schema(&self) -> &Value {
        self.narrowed_output.as_ref().unwrap_or_else(|| self.node.output_schema())
    }
}

/// Where a connection takes its value from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A workflow input: the path starts with the input's name.
    Input(FieldPath),
    /// A node's output.
    Node(usize, FieldPath),
}

/// A validated connection (or an `after` ordering, with no `to` path).
#[derive(Debug, Clone)]
pub(crate) struct Edge {
    pub from: Source,
    pub to: usize,
    pub to_path: Option<FieldPath>,
}

impl Edge {
    /// Where the edge writes into its target's input; only edges that carry data (all but
    /// `after` ordering edges) ever deliver a value.
    pub fn data_path(&self) -> &FieldPath {
        self.to_path.as_ref().expect("only edges that carry data deliver values")
    }
}

/// A validated workflow, ready to run any number of times.
pub struct Workflow {
    pub(crate) def: WorkflowDef,
    pub(crate) nodes: Vec<CompiledNode>,
    pub(crate) edges: Vec<Edge>,
    pub(crate) outputs: Vec<(String, Source)>,
    /// What the scheduler needs of the edges, worked out once instead of on every run.
    pub(crate) wiring: Wiring,
}

/// The edges by node, for the scheduler: computed when the workflow is built, so a run
/// allocates no edge lists of its own.
pub(crate) struct Wiring {
    /// Per node, the edges leaving it (indices into `edges`).
    pub outgoing: Vec<Vec<usize>>,
    /// Per node, how many edges from other nodes it waits for.
    pub incoming: Vec<usize>,
    /// The edges from the workflow's inputs.
    pub from_inputs: Vec<usize>,
}

impl Wiring {
    fn of(nodes: usize, edges: &[Edge]) -> Wiring {
        let mut wiring = Wiring {
            outgoing: vec![Vec::new(); nodes],
            incoming: vec![0; nodes],
            from_inputs: Vec::new(),
        };
        for (k, e) in edges.iter().enumerate() {
            match e.from {
                Source::Node(from, _) => {
                    wiring.incoming[e.to] += 1;
                    wiring.outgoing[from].push(k);
                }
                Source::Input(_) => wiring.from_inputs.push(k),
            }
        }
        wiring
    }
}

impl fmt::Debug for Workflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workflow")
            .field("name", &self.def.name)
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl Workflow {
    /// The workflow's name.
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// The definition it was built from.
    pub fn def(&self) -> &WorkflowDef {
        &self.def
    }

    /// Declared inputs.
    pub fn inputs(&self) -> &BTreeMap<String, InputDef> {
        &self.def.inputs
    }

    /// Node names in definition order.
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|n| n.name.as_str())
    }

    /// The JSON schema of a run's input: an object of the declared inputs, each with its
    /// type, description and default, the required ones listed, nothing else admitted. What
    /// [`Workflow::check_inputs`] checks, for clients (an API's schema, an MCP tool's).
    pub fn input_schema(&self) -> Value {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for (name, def) in self.inputs() {
            let mut property = Map::new();
            if def.ty != "any" {
                property.insert("type".into(), Value::String(def.ty.clone()));
            }
            if !def.description.is_empty() {
                property.insert("description".into(), Value::String(def.description.clone()));
            }
            if let Some(default) = &def.default {
                property.insert("default".into(), default.clone());
            }
            properties.insert(name.clone(), Value::Object(property));
            if def.is_required() {
                required.push(Value::String(name.clone()));
            }
        }
        let mut schema = json!({"type": "object", "properties": properties, "additionalProperties": false});
        if !self.def.description.is_empty() {
            schema["description"] = Value::String(self.def.description.clone());
        }
        if !required.is_empty() {
            schema["required"] = Value::Array(required);
        }
        schema
    }

    /// Checks a run's inputs against the declarations: required ones present, types right,
    /// nothing undeclared; returns them with the defaults filled in, or every problem, each
    /// naming its input. A run checks its inputs this way before its first node; a service
    /// checks them before it accepts a run.
    pub fn check_inputs(&self, inputs: Value) -> Result<Value, Vec<InputProblem>> {
        let mut map = match inputs {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            other => {
                return Err(vec![InputProblem {
                    input: None,
                    message: format!("the run's input must be an object, got a {}", kind(&other)),
                }]);
            }
        };
        let mut problems = Vec::new();
        for key in map.keys() {
            if !self.inputs().contains_key(key) {
                let hint = did_you_mean(key, self.inputs().keys().map(String::as_str))
                    .map(|s| format!(" (did you mean '{s}'?)"))
                    .unwrap_or_default();
                problems.push(InputProblem {
                    input: Some(key.clone()),
                    message: format!("unknown input '{key}'{hint}"),
                });
            }
        }
        for (name, def) in self.inputs() {
            match map.get(name) {
                None | Some(Value::Null) => {
                    if let Some(default) = &def.default {
                        map.insert(name.clone(), default.clone());
                    } else if def.is_required() {
                        problems.push(InputProblem {
                            input: Some(name.clone()),
                            message: format!("input '{name}' ({}) is required", def.ty),
                        });
                    }
                }
                Some(value) => {
                    let expected = Ty::named(&def.ty).unwrap_or(Ty::Any);
                    if !Ty::one(kind(value)).fits(&expected) {
                        problems.push(InputProblem {
                            input: Some(name.clone()),
                            message: format!("input '{name}' must be {expected}, got a {}", kind(value)),
                        });
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(Value::Object(map))
        } else {
            Err(problems)
        }
    }
}

/// What is wrong with a run's input ([`Workflow::check_inputs`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InputProblem {
    /// The input it is about; `None` when the whole input is wrong (not an object).
    pub input: Option<String>,
    /// What is wrong, as one sentence naming the input.
    pub message: String,
}

impl fmt::Display for InputProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
