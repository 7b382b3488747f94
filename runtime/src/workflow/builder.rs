//! [`WorkflowBuilder`]: a workflow definition written in Rust, typed nodes registered on the
//! way.

use std::collections::BTreeMap;
use std::time::Duration;

use dataflow_core::Node;
use serde_json::Value;

use super::{ConnectionDef, InputDef, NodeDef, Problems, RetryPolicy, Workflow, WorkflowDef};
use crate::node::registry::Registry;

/// Builds a [`WorkflowDef`] in Rust.
///
/// ```text
/// let mut b = WorkflowBuilder::new("classify");
/// b.input("product", "object");
/// b.add_node("similar", "ProductSearchNode", json!({"top_k": 10}));
/// b.connect("input", "product.name", "similar", "query");
/// let workflow = b.build(&registry)?;
/// ```
#[derive(Debug, Clone)]
pub struct WorkflowBuilder {
    def: WorkflowDef,
    extra: Vec<fn(&mut Registry)>,
}

impl WorkflowBuilder {
    /// An empty workflow called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        WorkflowBuilder {
            def: WorkflowDef {
                name: name.into(),
                description: String::new(),
                inputs: BTreeMap::new(),
                nodes: Vec::new(),
                connections: Vec::new(),
                outputs: BTreeMap::new(),
            },
            extra: Vec::new(),
        }
    }

    /// Sets the description.
    pub fn description(&mut self, text: impl Into<String>) -> &mut Self {
        self.def.description = text.into();
        self
    }

    /// Declares a required input of JSON type `ty` (`string`, `integer`, ..., `any`).
    pub fn input(&mut self, name: impl Into<String>, ty: &str) -> &mut Self {
        self.def.inputs.insert(name.into(), InputDef::of(ty));
        self
    }

    /// Adds a node of a registered type by name, with static parameters.
    pub fn add_node(&mut self, name: impl Into<String>, node_type: impl Into<String>, params: Value) -> &mut Self {
        self.def.nodes.push((
            name.into(),
            NodeDef {
                node_type: node_type.into(),
                params,
                timeout_ms: None,
                retry: None,
                after: Vec::new(),
            },
        ));
        self
    }

    /// Adds a node by its Rust type, with a typed input (connections then replace fields of
    /// it). The node type is registered for this workflow if the registry lacks it.
    pub fn node<N: Node + Default>(&mut self, name: impl Into<String>, node: N, input: N::Input) -> &mut Self {
        let params = serde_json::to_value(&input).unwrap_or(Value::Null);
        self.extra.push(|r: &mut Registry| {
            r.register(N::default());
        });
        self.add_node(name, node.descriptor().type_name, params)
    }

    /// Connects `from_node.from_path` to `to_node.to_path`; `from_node` may be `input`.
    pub fn connect(&mut self, from_node: &str, from_path: &str, to_node: &str, to_path: &str) -> &mut Self {
        self.def.connections.push(ConnectionDef {
            from: format!("{from_node}.{from_path}"),
            to: format!("{to_node}.{to_path}"),
        });
        self
    }

    /// Makes `node` wait for `before` without passing data.
    pub fn after(&mut self, node: &str, before: &str) -> &mut Self {
        if let Some((_, def)) = self.def.nodes.iter_mut().find(|(n, _)| n == node) {
            def.after.push(before.to_string());
        }
        self
    }

    /// Sets a node's retry policy.
    pub fn retry(&mut self, node: &str, policy: RetryPolicy) -> &mut Self {
        if let Some((_, def)) = self.def.nodes.iter_mut().find(|(n, _)| n == node) {
            def.retry = Some(policy);
        }
        self
    }

    /// Sets a node's time limit per attempt.
    pub fn timeout(&mut self, node: &str, limit: Duration) -> &mut Self {
        if let Some((_, def)) = self.def.nodes.iter_mut().find(|(n, _)| n == node) {
            def.timeout_ms = Some(limit.as_millis().max(1) as u64);
        }
        self
    }

    /// Declares workflow output `name` as `node.path`.
    pub fn output(&mut self, name: impl Into<String>, node: &str, path: &str) -> &mut Self {
        self.def.outputs.insert(name.into(), format!("{node}.{path}"));
        self
    }

    /// The definition so far.
    pub fn def(&self) -> &WorkflowDef {
        &self.def
    }

    /// Validates and compiles the workflow against `registry`.
    pub fn build(&self, registry: &Registry) -> Result<Workflow, Problems> {
        if self.extra.is_empty() {
            return Workflow::build(self.def.clone(), registry);
        }
        let mut registry = registry.clone();
        for add in &self.extra {
            add(&mut registry);
        }
        Workflow::build(self.def.clone(), &registry)
    }
}
