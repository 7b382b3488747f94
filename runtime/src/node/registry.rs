//! The node registry: every node type a workflow may name, generated model nodes and the
//! runtime's built-in nodes, discoverable by name. The built-in nodes sit in a layer above
//! this one and register themselves: [`Registry::new`] is defined beside them, in
//! `builtin`, and [`Registry::empty`] here holds nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use dataflow_core::{ModelNodes, Node};
use serde_json::Value;

use super::{NodeInfo, NodeRef, TypedNode};

/// Builds a configured instance of a node type whose shape depends on its parameters
/// (the built-in nodes: a `Transform`'s outputs are the fields it selects).
pub trait NodeFactory: Send + Sync {
    /// What the node type is.
    fn info(&self) -> NodeInfo;
    /// Builds an instance from the node's `params`; returns it with the static input the
    /// parameters leave for the node (usually none). Errors say which parameter is wrong.
    fn build(&self, params: &Value, registry: &Registry) -> Result<(NodeRef, Value), String>;
}

#[derive(Clone)]
enum Entry {
    /// A node whose parameters are static input values (every generated node).
    Fixed(NodeRef),
    /// A node configured by its parameters.
    Factory(Arc<dyn NodeFactory>),
}

/// All node types a workflow may use, by registered name.
#[derive(Clone)]
pub struct Registry {
    entries: BTreeMap<String, Entry>,
}

impl Registry {
    /// A registry with no node types at all, not even the built-in ones ([`Registry::new`]
    /// has those).
    pub fn empty() -> Self {
        Registry { entries: BTreeMap::new() }
    }

    /// Registers a typed node under its descriptor's name, replacing one of the same name.
    pub fn register<N: Node>(&mut self, node: N) -> &mut Self {
        self.register_dyn(Arc::new(TypedNode::new(node)))
    }

    /// Registers a node instance under its info's name.
    pub fn register_dyn(&mut self, node: NodeRef) -> &mut Self {
        self.entries.insert(node.info().type_name.clone(), Entry::Fixed(node));
        self
    }

    /// Registers a configurable node type.
    pub fn register_factory(&mut self, factory: Arc<dyn NodeFactory>) -> &mut Self {
        self.entries.insert(factory.info().type_name, Entry::Factory(factory));
        self
    }

    /// Registers the nine generated nodes of model `M`.
    pub fn register_model<M: ModelNodes>(&mut self) -> &mut Self {
        self.register(M::Create::default())
            .register(M::Read::default())
            .register(M::Update::default())
            .register(M::Delete::default())
            .register(M::List::default())
            .register(M::BulkUpsert::default())
            .register(M::Search::default())
            .register(M::Graph::default())
            .register(M::Aggregate::default())
    }

    /// Registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Number of registered node types.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What the node type `name` is.
    pub fn info(&self, name: &str) -> Option<NodeInfo> {
        self.entries.get(name).map(|e| match e {
            Entry::Fixed(node) => node.info().clone(),
            Entry::Factory(f) => f.info(),
        })
    }

    /// Input and output schemas of `name` as registered (for configurable nodes, those of an
    /// instance with default parameters).
    pub fn schemas(&self, name: &str) -> Option<(Value, Value)> {
        match self.entries.get(name)? {
            Entry::Fixed(node) => Some((node.input_schema().clone(), node.output_schema().clone())),
            Entry::Factory(f) => {
                let (node, _) = f.build(&Value::Null, self).ok()?;
                Some((node.input_schema().clone(), node.output_schema().clone()))
            }
        }
    }

    /// Builds an instance of `name` with `params`: for fixed nodes the params are the static
    /// input; configurable nodes consume them.
    pub(crate) fn instantiate(&self, name: &str, params: &Value) -> Result<(NodeRef, Value), InstantiateError> {
        match self.entries.get(name) {
            None => Err(InstantiateError::Unknown {
                suggestion: super::schema::did_you_mean(name, self.names()).map(str::to_string),
            }),
            Some(Entry::Fixed(node)) => Ok((node.clone(), params.clone())),
            Some(Entry::Factory(f)) => f.build(params, self).map_err(InstantiateError::Params),
        }
    }

    /// The instance of a fixed node type, if `name` is one.
    pub fn fixed(&self, name: &str) -> Option<NodeRef> {
        match self.entries.get(name)? {
            Entry::Fixed(node) => Some(node.clone()),
            Entry::Factory(_) => None,
        }
    }
}

/// Why [`Registry::instantiate`] failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum InstantiateError {
    /// No node type of that name; a close name when there is one.
    #[error("unknown node type{}", suggestion.as_ref().map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default())]
    Unknown {
        /// A registered name close to the one asked for.
        suggestion: Option<String>,
    },
    /// The parameters do not configure the node.
    #[error("{0}")]
    Params(String),
}
